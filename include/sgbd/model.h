/*
 * model.h - the contract every recommendation model implements.
 *
 * Dimension letters, used in shape comments everywhere:
 *     U  users            I  items          N  graph nodes (U + I)
 *     D  embedding width  D_c width of feature channel c
 *     B  batch rows       K  top-k length   E  graph edges (nnz)
 *
 * A model owns its frozen data (graphs, features, per-epoch samples) but
 * never its parameters: those live in an arena laid out by base.layout and
 * owned by the caller (trainer, checkpoint, snapshot). Everything a model
 * computes is a function of (arena, batch, per-epoch state), so the step
 * rules can evaluate the same batch at several points (SAM, MG).
 */
#ifndef SGBD_MODEL_H
#define SGBD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"
#include "sgbd/mat.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"

/* B training triples (user, positive, negative). */
struct sgbd_batch {
    size_t n;
    const uint32_t *users, *pos, *neg;  /* (B) each */
};

/* Hyper-parameters; each model reads the ones it uses. */
struct sgbd_hparams {
    int embedding_size;      /* D (64) */
    int n_layers;            /* propagation layers (LightGCN 2) */
    double reg_weight;       /* lambda */
    int knn_k;               /* item kNN neighbours (10) */
    double mm_image_weight;  /* weight of the image kNN graph (0.1) */
    int user_knn_k;          /* user co-occurrence neighbours (40) */
    double dropout;          /* FREEDOM edge dropout */
    double ssl_alpha, ssl_temp, temp; /* SLMRec */
    int dualgnn_inplace_bug; /* reproduce MMRec's fusion (on) */
    int bf16_features;       /* feature projections in bfloat16 where the
                              * CPU can (bf16.h; off) */
};

void sgbd_hparams_defaults(struct sgbd_hparams *hp);

struct sgbd_model_input {
    const struct sgbd_dataset *ds;
    const struct sgbd_features *feat;  /* may be NULL for ID-only models */
    const struct sgbd_hparams *hp;
};

struct sgbd_model;

struct sgbd_model_ops {
    const char *name;
    int needs_features;

    int (*create)(struct sgbd_model **out, const struct sgbd_model_input *in);
    void (*free)(struct sgbd_model *m);

    /* Per-epoch resampling (user graph, edge pruning); may be NULL. */
    int (*pre_epoch)(struct sgbd_model *m, const float *theta,
                     struct sgbd_rng *rng);

    /*
     * Loss of batch b at parameters theta; ADDS dL/dtheta into grad (same
     * layout). Deterministic for given (theta, b, epoch state). Returns the
     * loss, or NaN when it could not be computed: then m->error holds why
     * (a negative code, detail in sgbd_errf) if a step failed, such as an
     * allocation, and stays 0 if the loss itself is not finite (diverged).
     * The caller clears m->error before the call.
     */
    double (*loss_grad)(struct sgbd_model *m, const float *theta,
                        float *grad, const struct sgbd_batch *b);

    /* Final representations: users (U, D_out), items (I, D_out). */
    int (*embed)(struct sgbd_model *m, const float *theta,
                 struct sgbd_mat users, struct sgbd_mat items);

    /*
     * Cold start: item vector (D_out) for an item with features and no
     * interactions. feats[c] is (D_c) for channel c of the model's input,
     * or NULL when that channel is missing. NULL for ID-only models.
     */
    int (*embed_new_item)(struct sgbd_model *m, const float *theta,
                          const float *const *feats, float *out);
};

/* Common head of every model; a model's own struct begins with it. */
struct sgbd_model {
    const struct sgbd_model_ops *ops;
    struct sgbd_params layout;
    uint32_t n_users, n_items;  /* U, I */
    size_t dim;                 /* D_out of embed() */
    int error;                  /* why loss_grad returned NaN, or 0 */
};

/* The ops of a model by name ("lightgcn", ...), or NULL when unknown. */
const struct sgbd_model_ops *sgbd_model_find(const char *name);

/* Comma-separated list of known model names, for messages. */
const char *sgbd_model_names(void);

#endif
