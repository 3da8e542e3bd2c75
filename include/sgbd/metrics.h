/*
 * metrics.h - full-ranking evaluation exactly as MMRec computes it
 * (reference/algorithms.md section 4).
 *
 * For every evaluated user (one with at least one item in the evaluated
 * split; the dataset has already dropped cold-start users), all I items
 * are scored, the user's TRAIN items are masked (set to -inf: they can
 * only fill ranks no other item can), the top Kmax = max(K) are taken
 * (higher score first, ties by lower item index), and with h_k = 1 when
 * the item at rank k is in the truth set T_u, m = |T_u|, H(K) = sum of
 * h_k for k <= K:
 *     Recall@K    = H(K) / m
 *     Precision@K = H(K) / K
 *     NDCG@K      = sum h_k / log2(k + 1), over IDCG of min(m, K) hits
 *     MAP@K       = (1 / min(m, K)) sum h_k H(k) / k
 * each averaged uniformly over evaluated users in double. Validation
 * items are not masked when evaluating test (MMRec does not).
 *
 * Users go in blocks through one sgemm (on the compute pool), then masking,
 * selection and metrics per user on the compute pool (parallel.h). Per
 * user values are summed in user order, so results do not depend on the
 * thread count. Call from a training or evaluation thread.
 */
#ifndef SGBD_METRICS_H
#define SGBD_METRICS_H

#include <stddef.h>

#include "sgbd/dataset.h"
#include "sgbd/mat.h"

#define SGBD_METRICS_MAX_K 8

struct sgbd_metrics {
    int n_k;                           /* how many cut-offs */
    int k[SGBD_METRICS_MAX_K];         /* the cut-offs, as given */
    double recall[SGBD_METRICS_MAX_K];
    double ndcg[SGBD_METRICS_MAX_K];
    double precision[SGBD_METRICS_MAX_K];
    double map[SGBD_METRICS_MAX_K];
    size_t n_users;                    /* evaluated users */
};

/*
 * Evaluate users (U, D) against items (I, D) on truth (valid or test
 * sets of U users), masking mask (train sets of U users; NULL for no
 * masking), at the n_k cut-offs ks (1..SGBD_METRICS_MAX_K values >= 1,
 * any order, each K > I allowed). With no evaluated user every metric
 * is 0. Returns 0, SGBD_E_SHAPE (widths differ), SGBD_E_LIMIT (n_k or
 * a K out of range, K above 65536, I >= 2^32) or -ENOMEM; *out is
 * written only on success.
 */
int sgbd_metrics_eval(struct sgbd_metrics *out, struct sgbd_mat users,
                      struct sgbd_mat items, const struct sgbd_itemsets *mask,
                      const struct sgbd_itemsets *truth, const int *ks,
                      int n_k);

/*
 * Valid and test in one pass: both mask only the train items, so the
 * ranking is the same and is computed once. valid or test may be NULL
 * (with its out) to skip it. Errors as sgbd_metrics_eval().
 */
int sgbd_metrics_eval2(struct sgbd_metrics *valid_out,
                       struct sgbd_metrics *test_out, struct sgbd_mat users,
                       struct sgbd_mat items,
                       const struct sgbd_itemsets *mask,
                       const struct sgbd_itemsets *valid,
                       const struct sgbd_itemsets *test, const int *ks,
                       int n_k);

/*
 * *out = the metric called name, "<recall|ndcg|precision|map>@K" (case
 * does not matter), e.g. "recall@20" for early stopping. Returns 0 or
 * SGBD_E_NOTFOUND (unknown name or K not evaluated).
 */
int sgbd_metrics_get(const struct sgbd_metrics *m, const char *name,
                     double *out);

/*
 * x rounded to 4 decimals the way Python's round(x, 4) does (the exact
 * binary value, ties to even), as MMRec compares rounded values.
 */
double sgbd_metrics_round4(double x);

/*
 * Parse a cut-off list such as "5,10,20,50" (config train.topk) into
 * ks[SGBD_METRICS_MAX_K]. Returns 0 or SGBD_E_FORMAT naming the problem.
 */
int sgbd_metrics_parse_ks(const char *list, int *ks, int *n_k);

#endif
