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
 * Build from COO triplets (any order) into out, which owns the result.
 * Entries come out sorted by row, then column; entries with the same
 * (row, col) keep their input order. They are summed (in input order)
 * when sum_duplicates, else kept as separate entries. val NULL means
 * every value is 1. Returns 0, -ENOMEM, or SGBD_E_SHAPE when an index is
 * out of range or rows / cols exceed 2^32; out is untouched on error.
 */
int sgbd_csr_from_coo(struct sgbd_csr *out, size_t rows, size_t cols,
                      size_t nnz, const uint32_t *row, const uint32_t *col,
                      const float *val, int sum_duplicates);

/*
 * out = a^T, as its own CSR matrix (for products with a^T). Rows of out
 * list the rows of a in ascending order. Returns 0 or -ENOMEM (out
 * untouched).
 */
int sgbd_csr_transpose(struct sgbd_csr *out, const struct sgbd_csr *a);

/* Free the arrays and zero the struct; NULL and zeroed structs are fine. */
void sgbd_csr_free(struct sgbd_csr *a);

/*
 * Y = alpha A X + beta Y; X (A.cols, D), Y (A.rows, D) row-major, Y not
 * overlapping X. beta 0 ignores what Y held (NaN included). Rows run on
 * the compute pool in pieces of about equal nonzeros; each output row is
 * summed over its nonzeros in column order by one thread, so the result
 * is bitwise the same for any thread count. Returns 0, or SGBD_E_SHAPE
 * when the shapes do not fit (Y untouched).
 */
int sgbd_csr_spmm(struct sgbd_mat y, const struct sgbd_csr *a,
                  struct sgbd_mat x, float alpha, float beta);

/*
 * Y = alpha A^T X + beta Y without building A^T; X (A.rows, D),
 * Y (A.cols, D), no overlap. Y is first scaled by beta, then each
 * nonzero adds (alpha a_rc) x_r to y_c, rows of A in ascending order; the
 * compute pool splits the D columns (16-float slices), so every element
 * sees the same additions in the same order for any thread count. Each
 * thread reads all of A, so it is slower than spmm on a stored transpose,
 * and rounds differently from it (alpha applied per nonzero); for one-off
 * use. Returns 0 or SGBD_E_SHAPE (Y untouched).
 */
int sgbd_csr_spmm_t(struct sgbd_mat y, const struct sgbd_csr *a,
                    struct sgbd_mat x, float alpha, float beta);

#endif
