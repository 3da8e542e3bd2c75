/*
 * cold_start.c - time of DRAGON's cold start (embed_new_item), the first
 * call after a model is built and the ones after it.
 *
 *     cc -O2 -Iinclude -o /tmp/cold_start tests/bench/cold_start.c \
 *         build/libsgbd.a -lopenblas -luring -lm -lpthread
 *     /tmp/cold_start DATA_DIR [FEATURES_DIR] [THREADS]
 *
 * Loads DATA_DIR (an MMRec folder) with the features of FEATURES_DIR
 * (default DATA_DIR), builds DRAGON with default hyper-parameters and
 * seeded parameters, and places one new item (the features of items 5
 * and 9) four times, printing milliseconds for each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sgbd/bulkio.h"
#include "sgbd/dataset.h"
#include "sgbd/mat.h"
#include "sgbd/model.h"
#include "sgbd/models.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"

static double now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

int main(int argc, char **argv)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_bulkio_opts io = {0};
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {&ds, &f, &hp};
    struct sgbd_model *m;
    struct sgbd_rng rng;

    if (argc < 2) {
        fprintf(stderr, "usage: cold_start DATA_DIR [FEATURES_DIR] "
                "[THREADS]\n");
        return 2;
    }
    if (sgbd_dataset_load_dir(&ds, argv[1], &io) != 0 ||
        sgbd_features_load_dir(&f, argc > 2 ? argv[2] : argv[1], ds.n_items,
                               &io) != 0 || f.n < 1 || ds.n_items < 10)
        return 1;
    sgbd_mat_set_threads(argc > 3 ? atoi(argv[3]) : 2);
    sgbd_hparams_defaults(&hp);
    if (sgbd_dragon_ops.create(&m, &in) != 0)
        return 1;
    float *theta = sgbd_params_alloc_arena(&m->layout);
    float *out = malloc(m->dim * sizeof(float));
    const float *feats[SGBD_MAX_CHANNELS] = {0};
    if (!theta || !out)
        return 1;
    sgbd_rng_init(&rng, 1, SGBD_RNG_SYNTH);
    sgbd_params_init(&m->layout, theta, &rng);
    for (int c = 0; c < f.n; c++)
        feats[c] = sgbd_mat_row(f.ch[c].m, c % 2 ? 9 : 5);
    for (int r = 0; r < 4; r++) {
        double t0 = now_ms();
        if (m->ops->embed_new_item(m, theta, feats, out) != 0)
            return 1;
        printf("cold start %d: %.2f ms\n", r, now_ms() - t0);
    }
    return 0;
}
