/*
 * topk_impl.h - what the screened scoring (screen.c) takes from the
 * selection and the plain scan of topk.c (internal to daemon/).
 */
#ifndef SGBD_TOPK_IMPL_H
#define SGBD_TOPK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/mat.h"
#include "sgbd/topk.h"

#define LANES 16           /* floats per vector; scores per scan test */
#define CHUNK 4096         /* scores per threshold estimate */

/* The exact scores of the n <= 16 listed rows of items against u, into
 * the selection t: the scan's own kernel and test, so an item scores the
 * same bits wherever it is scored. */
void topk_push_rows(struct sgbd_topk *t, const float *u,
                    struct sgbd_mat items, const size_t *list, size_t n);

/* s[i - base] = NaN for every set bit i of bits in [base, base + n);
 * bits may be NULL. */
void topk_mask_nan(float *s, size_t n, size_t base, const uint64_t *bits);

/* The checks both batch calls make of their arguments: 0, SGBD_E_SHAPE
 * for users and items of other widths, SGBD_E_LIMIT for k above INT_MAX. */
int topk_check_batch(struct sgbd_mat users, struct sgbd_mat items, size_t k);

#endif
