/*
 * lgn.h - LightGCN propagation (reference/algorithms.md 5.1, 5.7) as a
 * reusable piece (private to daemon/models/): LightGCN, FREEDOM and
 * SLMRec's three towers.
 *
 *     Z = (1/(L+1)) sum_{l=0..L} A^l X0,   X0, Z (N, D), A symmetric.
 *
 * A training step needs Z only on the batch rows, so the forward keeps
 * just those rows of each layer (L SpMMs), and the backward evaluates
 * dX0 = (1/(L+1)) sum_l A^l G, G the scatter of dZ on those rows, by
 * Horner's rule G + A (G + A (...)) in L more SpMMs. The adjacency is
 * passed per call (FREEDOM swaps in a pruned one every epoch).
 */
#ifndef SGBD_MODELS_LGN_H
#define SGBD_MODELS_LGN_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/csr.h"

struct sgbd_lgn {
    size_t N, D;
    int L;
    float *xa, *xb; /* (N, D) layer buffers */
    float *g;       /* (N, D) scattered row gradients; zero between calls */
};

/* Workspaces for (N, D) and L layers. 0 or -ENOMEM (deinit is safe). */
int sgbd_lgn_init(struct sgbd_lgn *p, size_t N, size_t D, int L);
void sgbd_lgn_deinit(struct sgbd_lgn *p);

/* out (n, D) = rows idx[0..n) of Z for X0 = x0 (N, D). */
int sgbd_lgn_forward_rows(struct sgbd_lgn *p, const struct sgbd_csr *adj,
                          const float *x0, const uint32_t *idx, size_t n,
                          float *out);

/*
 * gx0 (N, D) += dZ/dX0 applied to dout (n, D), the gradient wrt the
 * rows idx of Z (duplicates accumulate). gx0 must not be one of p's
 * buffers. Returns 0 or SGBD_E_SHAPE from the SpMM.
 */
int sgbd_lgn_backward_rows(struct sgbd_lgn *p, const struct sgbd_csr *adj,
                           const float *dout, const uint32_t *idx, size_t n,
                           float *gx0);

/* out (N, D) = Z for X0 = x0; out must not be x0 or one of p's buffers. */
int sgbd_lgn_forward_all(struct sgbd_lgn *p, const struct sgbd_csr *adj,
                         const float *x0, float *out);

#endif
