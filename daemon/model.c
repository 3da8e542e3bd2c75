/* model.c - the registry of models and shared hyper-parameter defaults. */
#include "sgbd/model.h"

#include <string.h>

#include "sgbd/models.h"

static const struct sgbd_model_ops *const registry[] = {
    &sgbd_lightgcn_ops,
    &sgbd_vbpr_ops,
    &sgbd_dualgnn_ops,
    &sgbd_dragon_ops,
    &sgbd_freedom_ops,
    &sgbd_slmrec_ops,
};

#define N_MODELS (sizeof(registry) / sizeof(registry[0]))

void sgbd_hparams_defaults(struct sgbd_hparams *hp)
{
    memset(hp, 0, sizeof(*hp));
    hp->embedding_size = 64;
    hp->n_layers = 2;
    hp->reg_weight = 1e-4;
    hp->knn_k = 10;
    hp->mm_image_weight = 0.1;
    hp->user_knn_k = 40;
    hp->dropout = 0.8;
    hp->ssl_alpha = 0.1;
    hp->ssl_temp = 0.2;
    hp->temp = 0.2;
    hp->dualgnn_inplace_bug = 1;
}

const struct sgbd_model_ops *sgbd_model_find(const char *name)
{
    for (size_t i = 0; i < N_MODELS; i++)
        if (registry[i] && strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

const char *sgbd_model_names(void)
{
    static char names[256];
    size_t o = 0;

    names[0] = '\0';
    for (size_t i = 0; i < N_MODELS && registry[i]; i++) {
        size_t len = strlen(registry[i]->name);
        if (o + len + 3 > sizeof(names))
            break;
        if (o)
            names[o++] = ',', names[o++] = ' ';
        memcpy(names + o, registry[i]->name, len + 1);
        o += len;
    }
    return names;
}
