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

/*
 * Ownership: sgbd_mat_alloc() makes an owned matrix (64-byte aligned,
 * zero-filled, stride == cols); only such a matrix may be passed to
 * sgbd_mat_release(). Every other struct sgbd_mat is a borrowed view.
 *
 * The product wrappers check shapes and return SGBD_E_SHAPE (with a
 * detail naming the operands) instead of calling BLAS with wrong sizes;
 * C must not overlap A or B. They run on OpenBLAS's own threads, so call
 * them from training or evaluation, not from serving threads, and not
 * from inside a sgbd_parallel_for chunk.
 */

/* m = zeroed (rows, cols), 64-byte aligned. 0 or -ENOMEM (m untouched). */
int sgbd_mat_alloc(struct sgbd_mat *m, size_t rows, size_t cols);

/* Free an owned matrix and zero the struct; NULL and empty are fine. */
void sgbd_mat_release(struct sgbd_mat *m);

/*
 * Threads of the compute pool (parallel.h); 0 means the number of online
 * CPUs. The pool also runs the large matrix products below, one slice of
 * the output per thread, each a single-threaded OpenBLAS call: OpenBLAS
 * starts no threads of its own, and a product gives the same bits on any
 * number of threads. Returns 0 or the error of sgbd_parallel_set_threads().
 */
int sgbd_mat_set_threads(int n);

/*
 * Map, before serving, every OpenBLAS work buffer the process will need,
 * so that no BLAS call maps one later (issue #8). OpenBLAS maps a 128 MiB
 * buffer the first time more callers are inside it at once than ever
 * before, and each of its worker threads holds one; when that mapping is
 * refused (an address-space limit, strict overcommit) it retries for
 * ever and the call never returns. This starts the workers that
 * `threads` (0: online CPUs; the most any later sgbd_mat_set_threads()
 * will ask for) needs, waits until each holds its buffer, then maps
 * buffers for `callers` threads calling BLAS at the same time, and leaves
 * them free for them. OpenBLAS's own thread setting is left as it was.
 *
 * Call it once, at start-up, while no other thread calls BLAS. Cost: 128
 * MiB of address space (and of commit charge) per buffer not mapped yet,
 * no resident memory. Returns 0 (also when the BLAS library has no such
 * table: nothing is done); -ENOMEM when a buffer cannot be mapped, with
 * a detail naming the limit (checked before each mapping, so this fails
 * instead of hanging); SGBD_E_LIMIT when workers and callers need more
 * slots than OpenBLAS's table has; SGBD_E_USAGE for threads < 0 or
 * callers < 1.
 */
int sgbd_mat_reserve_blas(int threads, int callers);

/* C (M, N) = alpha A (M, K) B (K, N) + beta C. */
int sgbd_mat_gemm_nn(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta);

/* C (M, N) = alpha A (M, K) B^T, B (N, K), + beta C. */
int sgbd_mat_gemm_nt(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta);

/* C (M, N) = alpha A^T B + beta C, A (K, M), B (K, N). */
int sgbd_mat_gemm_tn(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta);

/*
 * y (A.rows) = alpha A x + beta y, x (A.cols). Returns 0, or SGBD_E_SHAPE
 * for a view with no data or a stride below its width (y untouched).
 */
int sgbd_mat_gemv_n(float *y, struct sgbd_mat a, const float *x, float alpha,
                    float beta);

/* y (A.cols) = alpha A^T x + beta y, x (A.rows). Errors as gemv_n. */
int sgbd_mat_gemv_t(float *y, struct sgbd_mat a, const float *x, float alpha,
                    float beta);

/* Vector helpers, serial (safe on any thread), plain loops. */

/* y (n) += a x (n). */
void sgbd_mat_axpy(size_t n, float a, const float *x, float *y);

/* x (n) *= a. */
void sgbd_mat_scale(size_t n, float a, float *x);

/*
 * sgbd_mat_axpy for whole arenas in training: long vectors are cut into
 * pieces that run on the compute pool (parallel.h); the result is the
 * same as the serial loop's, bit for bit.
 */
void sgbd_mat_axpy_wide(size_t n, float a, const float *x, float *y);

/* sum x[i] y[i] accumulated in double, in a fixed order. */
double sgbd_mat_dot(size_t n, const float *x, const float *y);

/* out (A.rows) = L2 norm of each row of A, accumulated in double. */
void sgbd_mat_row_norms(struct sgbd_mat a, float *out);

/*
 * Divide every row of A by max(||row||_2, eps) in place (torch
 * F.normalize; algorithms.md section 1 rownorm, eps 1e-12).
 */
void sgbd_mat_normalize_rows(struct sgbd_mat a, double eps);

#endif
