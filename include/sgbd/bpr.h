/*
 * bpr.h - MMRec's BPR batch sampler and the loss kernels models share.
 *
 * Sampler (reference/algorithms.md 3.1): each epoch is a uniform
 * permutation of the training rows (stream SGBD_RNG_SHUFFLE) cut into
 * consecutive batches of B rows, the last one smaller, ceil(n_train / B)
 * batches. Each row (u, p) gets one negative drawn uniformly from
 * ds->neg_items and re-drawn while it is in u's training set (stream
 * SGBD_RNG_NEGATIVE); negatives are drawn when the batch is produced.
 * The sampler borrows the dataset, which must outlive it.
 *
 * Loss kernels: each returns w * L and ADDS w * dL/dx into the gradient
 * buffer when that is not NULL, so a model writes
 *     loss  = sgbd_bpr_loss_ln(B, x, dx, 1.0);
 *     loss += sgbd_emb_loss(3, e, de, reg_weight);
 * Values are accumulated in double.
 */
#ifndef SGBD_BPR_H
#define SGBD_BPR_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"
#include "sgbd/mat.h"
#include "sgbd/model.h"
#include "sgbd/rng.h"

struct sgbd_bpr_sampler;

/*
 * A sampler over ds's training rows with batches of batch_size rows,
 * seeded with seed (streams SGBD_RNG_SHUFFLE and SGBD_RNG_NEGATIVE).
 * Returns 0, -ENOMEM, SGBD_E_CONFIG when batch_size is 0, or SGBD_E_FORMAT
 * when the dataset has no training rows or no negative items, a training
 * row is out of range, or a user's training set holds every negative item
 * (no negative could ever be drawn); the detail names the user or row.
 * *out is NULL on error.
 */
int sgbd_bpr_sampler_new(struct sgbd_bpr_sampler **out,
                         const struct sgbd_dataset *ds, size_t batch_size,
                         uint64_t seed);
/*
 * The same sampler drawing what MMRec's TrainDataLoader draws from its
 * own generators seeded with seed (mmrec_rng.h): NumPy's permutation of
 * the last epoch's rows, and negatives from Python's shuffle of the
 * sorted negative items, indexed by random.sample's draw.
 */
int sgbd_bpr_sampler_new_mmrec(struct sgbd_bpr_sampler **out,
                               const struct sgbd_dataset *ds,
                               size_t batch_size, uint32_t seed);
void sgbd_bpr_sampler_free(struct sgbd_bpr_sampler *s);

/* Batches per epoch: ceil(n_train / batch_size). */
size_t sgbd_bpr_n_batches(const struct sgbd_bpr_sampler *s);

/* Start an epoch: draw a new permutation of the training rows and rewind
 * to the first batch. */
void sgbd_bpr_epoch_begin(struct sgbd_bpr_sampler *s);

/*
 * The next batch of the epoch with fresh negatives. Returns 1 and fills
 * *b (arrays owned by the sampler, valid until the next call), or 0 at
 * the end of the epoch (b untouched).
 */
int sgbd_bpr_next(struct sgbd_bpr_sampler *s, struct sgbd_batch *b);

/* The permutation of the current epoch: (n_train) row indices. */
const uint32_t *sgbd_bpr_order(const struct sgbd_bpr_sampler *s);

/*
 * BPR loss of LightGCN and VBPR (algorithms.md 5.5):
 *     L = -(1/B) sum_b ln(1e-10 + sigmoid(x_b)),  x_b = s+_b - s-_b.
 * x (B); dx (B) or NULL.
 */
double sgbd_bpr_loss_ln(size_t n, const float *x, float *dx, double w);

/*
 * BPR loss of DRAGON and DualGNN: L = -(1/B) sum_b log2 sigmoid(x_b),
 * computed as softplus(-x_b) / ln 2. x (B); dx (B) or NULL.
 */
double sgbd_bpr_loss_log2(size_t n, const float *x, float *dx, double w);

/* BPR loss of FREEDOM: L = -(1/B) sum_b logsigmoid(x_b). */
double sgbd_bpr_loss_logsig(size_t n, const float *x, float *dx, double w);

/*
 * MMRec EmbLoss (5.5): L = (sum_j ||E_j||_F) / rows(E_{k-1}); Frobenius
 * norms, not squared. e[k] are the matrices; de[k] their gradients (same
 * shapes) or de == NULL. A zero matrix contributes a zero gradient.
 */
double sgbd_emb_loss(int k, const struct sgbd_mat *e, struct sgbd_mat *de,
                     double w);

/* Mean-of-squares regulariser of DRAGON and DualGNN:
 * L = mean over all elements of x^2. dx (same shape as x) or NULL. */
double sgbd_mean_sq_loss(struct sgbd_mat x, struct sgbd_mat *dx, double w);

#endif
