/*
 * mmgcn.h - the pieces DualGNN and DRAGON share (private to
 * daemon/models/): the per-channel GCN block, the user co-occurrence
 * lists and their per-epoch 40-neighbour sample.
 *
 * GCN block of channel c (reference/algorithms.md 6.2, 6.3):
 *     F~_c = W2_c leaky(W1_c F_c + b1_c) + b2_c      (I, D), hidden H = 4D
 *     X_c  = rownorm([P_c ; F~_c])                   (N, D)
 *     R_c  = X_c + A X_c + A^2 X_c                   (N, D)
 * with A the symmetric GCN normalisation of 5.2 (duplicate training rows
 * kept, weights 1/sqrt(deg deg)). Layout per channel, named after the
 * channel: "<name>.pref" (U, D) xavier_normal, "<name>.mlp.w" (H, D_c),
 * "<name>.mlp.b" (1, H), "<name>.mlp1.w" (D, H), "<name>.mlp1.b" (1, D),
 * torch nn.Linear default init (MMRec does not re-initialise them).
 */
#ifndef SGBD_MODELS_MMGCN_H
#define SGBD_MODELS_MMGCN_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/bf16.h"
#include "sgbd/csr.h"
#include "sgbd/graph.h"
#include "sgbd/model.h"
#include "sgbd/params.h"

struct sgbd_mmgcn_channel {
    size_t dim;       /* D_c */
    float *feat;      /* (I, D_c) owned copy of the features */
    struct sgbd_bf16_fixed feat_bf; /* feat rounded, with bf16_features */
    struct sgbd_bf16_fixed *fb;     /* &feat_bf, or NULL in float32 */
    float *feat_mean; /* (D_c) column means, for a missing channel */
    int t_pref, t_w1, t_b1, t_w2, t_b2;
    float *h1;   /* (I, H) leaky activations of the forward */
    float *x;    /* (N, D) X_c */
    float *norm; /* (N) row norms before rownorm */
    float *r;    /* (N, D) R_c */
    float *dr;   /* (N, D) dL/dR_c; zero after backward */
};

struct sgbd_mmgcn {
    size_t U, I, N, D, H;
    int C;
    const struct sgbd_params *layout; /* the model's, for tensor offsets */
    struct sgbd_mmgcn_channel ch[SGBD_MAX_CHANNELS];
    struct sgbd_csr adj; /* A (N, N) of 5.2 */
    float *ta, *tb;      /* (N, D) propagation temporaries */
    float *dft;          /* (I, D) */
    float *dh;           /* (I, H) */
};

/*
 * Copy the features, build A, declare the channel tensors in layout and
 * allocate the workspaces. D is the latent width (64 in MMRec); layout
 * must outlive g (it is the owning model's). Errors:
 * -ENOMEM, SGBD_E_LIMIT (a channel name too long for its tensor names),
 * those of sgbd_csr_from_coo. Deinit on error too.
 */
int sgbd_mmgcn_init(struct sgbd_mmgcn *g, const struct sgbd_model_input *in,
                    size_t D, struct sgbd_params *layout);
void sgbd_mmgcn_deinit(struct sgbd_mmgcn *g);

/* R_c for every channel at theta (two SpMMs and the MLPs per channel). */
int sgbd_mmgcn_forward(struct sgbd_mmgcn *g, const float *theta);

/*
 * From dr (filled by the caller after a forward at the same theta) back
 * to the channel tensors: ADDS into grad; leaves every dr zero.
 */
int sgbd_mmgcn_backward(struct sgbd_mmgcn *g, const float *theta, float *grad);

/* lambda * sum_c mean(P_c[users]^2), gradient added into grad (6.2). */
double sgbd_mmgcn_pref_reg(const struct sgbd_mmgcn *g, const float *theta,
                           float *grad, const uint32_t *users, size_t B,
                           double lambda);

/*
 * X_c row of an item with features f (D_c) and no interactions: it has
 * no edges, so its R_c row is its X_c row: rownorm(MLP_c(f)). out (D).
 */
int sgbd_mmgcn_new_item(const struct sgbd_mmgcn *g, const float *theta, int c,
                        const float *f, float *out);

/*
 * Fusion weights weight_u / weight_i (6.2): MMRec draws xavier_normal on
 * (rows, C, 1) and takes a softmax over C once, so they start near 1/C
 * and train unconstrained. The arena holds the offset theta = w - 1/C
 * (an exact reparametrisation: same gradients, same Adam steps) drawn
 * xavier_normal with fans chosen so its spread matches the softmax's to
 * first order, var = 2 (C - 1) / ((C + rows) C^3). (rows, C).
 */
int sgbd_mmgcn_add_fusion(struct sgbd_params *p, const char *name, size_t rows,
                          int C);

/* The effective weight of row r, slot c: 1/C + theta. */
static inline float sgbd_mmgcn_fusion_w(const float *t, int C, size_t r, int c)
{
    return 1.0f / (float)C + t[r * (size_t)C + (size_t)c];
}

/* lambda * mean over (rows, C) of w^2; gradient added into g (rows, C). */
double sgbd_mmgcn_fusion_reg(const float *t, float *g, size_t rows, int C,
                             double lambda);

/*
 * User-graph aggregation of 5.4 on selected rows: out[r] = x[rows[r]] +
 * sum_s a[u, s] x[nbr[u, s]] with u = rows[r]; x (U, W), out (n, W),
 * nbr and a (U, k).
 */
void sgbd_mmgcn_user_agg(float *out, const float *x, const uint32_t *rows,
                         size_t n, size_t W, const uint32_t *nbr,
                         const float *a, size_t k);

/* The user co-occurrence graph of 5.4: up to max_nbr neighbours per user
 * kept once, and k of them sampled with softmax weights every epoch. */
struct sgbd_mmgcn_users {
    struct sgbd_graph_cooc cooc;
    size_t k;
    uint32_t *nbr;                 /* (U, k) sampled neighbours */
    float *aw;                     /* (U, k) their softmax weights */
};

/* Build from the train sets of ds and draw a first sample (seed 0), so a
 * model works before any pre_epoch. -ENOMEM or graph errors. */
int sgbd_mmgcn_users_init(struct sgbd_mmgcn_users *g,
                          const struct sgbd_dataset *ds, size_t k,
                          size_t max_nbr);
/* A new sample for the epoch (pre_epoch). */
void sgbd_mmgcn_users_sample(struct sgbd_mmgcn_users *g, struct sgbd_rng *rng);
void sgbd_mmgcn_users_free(struct sgbd_mmgcn_users *g);

/* Per-batch buffers of a BPR model over W-wide final vectors, kept
 * between calls and grown on demand. */
struct sgbd_mmgcn_batch {
    size_t cap, W;                 /* batch rows held; width */
    float *fu, *fp, *fn;           /* (B, W) user, positive, negative */
    float *du, *dp, *dn;           /* (B, W) their gradients */
    float *x, *dx;                 /* (B) score differences, gradient */
};

/* Room for B rows of width W; -ENOMEM (detail names who) on failure. */
int sgbd_mmgcn_batch_reserve(struct sgbd_mmgcn_batch *b, size_t B, size_t W,
                             const char *who);
void sgbd_mmgcn_batch_free(struct sgbd_mmgcn_batch *b);

/* Its backward: dx[u] += d[r], dx[nbr[u, s]] += a[u, s] d[r]. */
void sgbd_mmgcn_user_agg_backward(float *dx, const float *d,
                                  const uint32_t *rows, size_t n, size_t W,
                                  const uint32_t *nbr, const float *a,
                                  size_t k);

#endif
