/*
 * csr.h - compressed sparse row matrices and the products the graph
 * models need.
 *
 * Row r holds columns col[ptr[r] .. ptr[r+1]) with values val[...],
 * columns ascending within a row. A CSR matrix owns its arrays.
 * SpMM runs rows in parallel on the compute pool (parallel.h); each output
 * row is written by one thread, so no atomics are needed, and the result
 * does not depend on the thread count.
 */
#ifndef SGBD_CSR_H
#define SGBD_CSR_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/mat.h"

struct sgbd_csr {
    size_t rows, cols;
    uint64_t *ptr;  /* (rows + 1) */
    uint32_t *col;  /* (nnz) */
    float *val;     /* (nnz) */
};

static inline uint64_t sgbd_csr_nnz(const struct sgbd_csr *a)
{
    return a->ptr[a->rows];
}

/*
 * Build from COO triplets (any order). Duplicate (row, col) entries are
 * summed when sum_duplicates, else kept as separate entries.
 */
int sgbd_csr_from_coo(struct sgbd_csr *out, size_t rows, size_t cols,
                      size_t nnz, const uint32_t *row, const uint32_t *col,
                      const float *val, int sum_duplicates);

/* out = a^T, as its own CSR matrix (for products with a^T). */
int sgbd_csr_transpose(struct sgbd_csr *out, const struct sgbd_csr *a);

void sgbd_csr_free(struct sgbd_csr *a);

/* Y = alpha A X + beta Y; X (A.cols, D), Y (A.rows, D) row-major. */
void sgbd_csr_spmm(struct sgbd_mat y, const struct sgbd_csr *a,
                   struct sgbd_mat x, float alpha, float beta);

/*
 * Y = alpha A^T X + beta Y without building A^T; X (A.rows, D),
 * Y (A.cols, D). Slower than spmm on a stored transpose; for one-off use.
 */
void sgbd_csr_spmm_t(struct sgbd_mat y, const struct sgbd_csr *a,
                     struct sgbd_mat x, float alpha, float beta);

#endif
