/*
 * mat.h - dense row-major float matrices and the BLAS patterns we use.
 *
 * A struct sgbd_mat is a view: it never owns its data unless made by
 * sgbd_mat_alloc(), and then sgbd_mat_release() frees it. Element (r, c)
 * is data[r * stride + c]; stride >= cols.
 *
 * Every BLAS call of the project goes through a wrapper here, one per
 * pattern, with the transposes in the name: sgbd_mat_gemm_nt(C, A, B) is
 * C = alpha A B^T + beta C. OpenBLAS is included nowhere else.
 */
#ifndef SGBD_MAT_H
#define SGBD_MAT_H

#include <stddef.h>

struct sgbd_mat {
    float *data;
    size_t rows, cols, stride;
};

/* View of rows [r0, r0 + n) of m. */
static inline struct sgbd_mat sgbd_mat_rows(struct sgbd_mat m, size_t r0,
                                            size_t n)
{
    struct sgbd_mat v = {m.data + r0 * m.stride, n, m.cols, m.stride};
    return v;
}

static inline float *sgbd_mat_row(struct sgbd_mat m, size_t r)
{
    return m.data + r * m.stride;
}

static inline struct sgbd_mat sgbd_mat_view(float *data, size_t rows,
                                            size_t cols)
{
    struct sgbd_mat v = {data, rows, cols, cols};
    return v;
}

#endif
