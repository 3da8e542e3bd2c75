/*
 * graph.h - the frozen graphs the models propagate over
 * (reference/algorithms.md sections 2.3, 5.1 - 5.4).
 *
 * Nodes of the bipartite graphs: users 0..U-1 first, then item i as node
 * U + i (N = U + I). Every builder writes into caller structs that then
 * own their arrays (free with sgbd_csr_free / sgbd_graph_cooc_free); on
 * error nothing is written. The builders run on the compute pool: call
 * them from training or retraining threads.
 * Results do not depend on the thread count; ties go to the lower index.
 */
#ifndef SGBD_GRAPH_H
#define SGBD_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/csr.h"
#include "sgbd/dataset.h"
#include "sgbd/mat.h"
#include "sgbd/rng.h"

/*
 * 5.1: A_hat = D^-1/2 A D^-1/2 (N, N), symmetric, from n training rows
 * (users[k], items[k]): A[u, U+i] = A[U+i, u] = 1, duplicates collapse,
 * D_kk = deg_k + eps (1e-7 LightGCN/FREEDOM/BM3, 1e-8 SLMRec), no self
 * loops. Weights computed in double, stored as float. Returns 0,
 * SGBD_E_SHAPE (an id out of range, N above 2^32) or -ENOMEM.
 */
int sgbd_graph_norm_adj(struct sgbd_csr *out, size_t n_users, size_t n_items,
                        size_t n, const uint32_t *users,
                        const uint32_t *items, double eps);

/*
 * 5.2, DualGNN/DRAGON "Base_gcn": the edge list of every training row in
 * both directions with duplicates kept (kept as separate CSR entries),
 * entry (dst, src) weighted 1/sqrt(deg(src) deg(dst)) in float, degrees
 * counting edge-list entries. Y = A X is the reference's add-aggregated
 * propagation. Equals sgbd_graph_norm_adj (eps 0) when no row repeats.
 * Errors as sgbd_graph_norm_adj.
 */
int sgbd_graph_edge_adj(struct sgbd_csr *out, size_t n_users, size_t n_items,
                        size_t n, const uint32_t *users,
                        const uint32_t *items);

/*
 * 5.3: item-item kNN graph. For each channel c, cosine similarity of the
 * raw feature rows (zero rows guarded: norms below 1e-12 count as 1e-12),
 * the top k per row (usually including the item itself), weights
 * r_i^-1/2 r_j^-1/2 with r = 1e-7 + row count (so 1/k, in float as the
 * reference); then G = sum_c weights[c] G_c (0.1 image + 0.9 text), an
 * (I, I) CSR, and out_t = G^T for the backward pass. Similarities are
 * computed in blocks of 256 rows x 4096 columns with sgemm, so a 63k x
 * 4096 channel needs no I x I buffer and no normalised copy. Returns 0,
 * SGBD_E_SHAPE (channels of different I, no channel, k = 0) or -ENOMEM.
 */
int sgbd_graph_item_knn(struct sgbd_csr *out, struct sgbd_csr *out_t,
                        const struct sgbd_mat *feats /* (I, D_c) each */,
                        const double *weights, int n_channels, size_t k);

/*
 * 2.3: user co-occurrence lists. For user u, the users w != u with
 * C[u, w] = |I_u ∩ I_w| > 0 on the train sets, sorted by C descending
 * then w ascending, at most max_nbr (200) of them; counts kept as
 * floats. Accumulated through item posting lists, never a dense U x U.
 */
struct sgbd_graph_cooc {
    size_t n_users;     /* U */
    uint64_t *ptr;      /* (U + 1): user u's list is [ptr[u], ptr[u+1]) */
    uint32_t *nbr;      /* (ptr[U]) neighbour ids */
    float *count;       /* (ptr[U]) C[u, nbr] */
};

/*
 * Build the lists from train (sorted unique item sets of n_users users,
 * items < n_items). Returns 0, SGBD_E_SHAPE (an item out of range) or
 * -ENOMEM.
 */
int sgbd_graph_user_cooc(struct sgbd_graph_cooc *out,
                         const struct sgbd_itemsets *train, size_t n_users,
                         size_t n_items, size_t max_nbr);

/* Free the arrays and zero the struct; NULL is fine. */
void sgbd_graph_cooc_free(struct sgbd_graph_cooc *c);

/*
 * 5.4, once per epoch: k (40) neighbour slots per user. A user with >= k
 * neighbours takes the first k; one with 1..k-1 takes all of them, then
 * pads by appending a uniformly random element (id and count) of the
 * growing list, drawing from rng in user order; one with none gets ids 0
 * and weights 0. weight[u] = softmax over the k slots of the counts.
 * nbr, weight are (U, k) row-major. Serial and deterministic for a given
 * rng state.
 */
void sgbd_graph_cooc_sample(const struct sgbd_graph_cooc *c, size_t k,
                            struct sgbd_rng *rng, uint32_t *nbr,
                            float *weight);

#endif
