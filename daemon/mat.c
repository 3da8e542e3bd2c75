/*
 * mat.c - owned dense matrices, the BLAS wrappers and vector helpers.
 *
 * The only file that includes cblas.h: every product pattern is wrapped
 * once here, with its shape check, so a wrong size is an error message
 * rather than a silent out-of-bounds read inside OpenBLAS.
 */
#include "sgbd/mat.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "simd.h"

#define MAT_ALIGN 64

int sgbd_mat_alloc(struct sgbd_mat *m, size_t rows, size_t cols)
{
    size_t n = rows * cols;
    void *p;

    if (cols && n / cols != rows)
        return -ENOMEM;
    if (n > SIZE_MAX / sizeof(float) - MAT_ALIGN)
        return -ENOMEM;
    size_t bytes = (n * sizeof(float) + MAT_ALIGN - 1) / MAT_ALIGN
                   * MAT_ALIGN;
    p = aligned_alloc(MAT_ALIGN, bytes ? bytes : MAT_ALIGN);
    if (!p)
        return -ENOMEM;
    memset(p, 0, bytes);
    m->data = p;
    m->rows = rows;
    m->cols = cols;
    m->stride = cols;
    return 0;
}

void sgbd_mat_release(struct sgbd_mat *m)
{
    if (!m)
        return;
    free(m->data);
    memset(m, 0, sizeof(*m));
}

int sgbd_mat_set_threads(int n)
{
    int rc = sgbd_parallel_set_threads(n);

    if (rc < 0)
        return rc;
    openblas_set_num_threads(sgbd_parallel_threads());
    return 0;
}

static int valid_view(struct sgbd_mat m)
{
    if (m.rows == 0 || m.cols == 0)
        return 1;
    return m.data != NULL && m.stride >= m.cols;
}

static int bad_views(const char *op, struct sgbd_mat c, struct sgbd_mat a,
                     struct sgbd_mat b)
{
    if (valid_view(c) && valid_view(a) && valid_view(b))
        return 0;
    return sgbd_errf(SGBD_E_SHAPE, "%s: a view has no data or a stride "
                     "below its width", op);
}

static int shape_error(const char *op, struct sgbd_mat c, struct sgbd_mat a,
                       struct sgbd_mat b)
{
    return sgbd_errf(SGBD_E_SHAPE, "%s: C (%zu, %zu), A (%zu, %zu), "
                     "B (%zu, %zu) do not fit", op, c.rows, c.cols, a.rows,
                     a.cols, b.rows, b.cols);
}

/* C = beta C, for products with an empty inner dimension. */
static void scale_mat(struct sgbd_mat c, float beta)
{
    for (size_t r = 0; r < c.rows; r++) {
        float *row = sgbd_mat_row(c, r);
        if (beta == 0.0f)
            memset(row, 0, c.cols * sizeof(float));
        else
            sgbd_mat_scale(c.cols, beta, row);
    }
}

static int ld(struct sgbd_mat m)
{
    return m.stride > 0 ? (int)m.stride : 1;
}

/* The one place that calls cblas_sgemm; m, n, k already checked. */
static int gemm(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                float beta)
{
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX ||
        a.stride > INT32_MAX || b.stride > INT32_MAX ||
        c.stride > INT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "gemm: dimension above 2^31");
    if (m == 0 || n == 0)
        return 0;
    if (k == 0) {
        scale_mat(c, beta);
        return 0;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
                alpha, a.data, ld(a), b.data, ld(b), beta, c.data, ld(c));
    return 0;
}

int sgbd_mat_gemm_nn(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta)
{
    if (a.cols != b.rows || c.rows != a.rows || c.cols != b.cols)
        return shape_error("gemm_nn", c, a, b);
    if (bad_views("gemm_nn", c, a, b))
        return SGBD_E_SHAPE;
    return gemm(c, a, b, 0, 0, a.rows, b.cols, a.cols, alpha, beta);
}

int sgbd_mat_gemm_nt(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta)
{
    if (a.cols != b.cols || c.rows != a.rows || c.cols != b.rows)
        return shape_error("gemm_nt", c, a, b);
    if (bad_views("gemm_nt", c, a, b))
        return SGBD_E_SHAPE;
    return gemm(c, a, b, 0, 1, a.rows, b.rows, a.cols, alpha, beta);
}

int sgbd_mat_gemm_tn(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta)
{
    if (a.rows != b.rows || c.rows != a.cols || c.cols != b.cols)
        return shape_error("gemm_tn", c, a, b);
    if (bad_views("gemm_tn", c, a, b))
        return SGBD_E_SHAPE;
    return gemm(c, a, b, 1, 0, a.cols, b.cols, a.rows, alpha, beta);
}

/* y = beta y over n entries, for an empty product. */
static void scale_vec(float *y, size_t n, float beta)
{
    if (beta == 0.0f)
        memset(y, 0, n * sizeof(float));
    else
        sgbd_mat_scale(n, beta, y);
}

int sgbd_mat_gemv_n(float *y, struct sgbd_mat a, const float *x, float alpha,
                    float beta)
{
    if (!valid_view(a) || a.rows > INT32_MAX || a.cols > INT32_MAX ||
        a.stride > INT32_MAX)
        return sgbd_errf(SGBD_E_SHAPE, "gemv_n: A (%zu, %zu) stride %zu",
                         a.rows, a.cols, a.stride);
    if (a.rows == 0)
        return 0;
    if (a.cols == 0) {
        scale_vec(y, a.rows, beta);
        return 0;
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)a.rows, (int)a.cols,
                alpha, a.data, ld(a), x, 1, beta, y, 1);
    return 0;
}

int sgbd_mat_gemv_t(float *y, struct sgbd_mat a, const float *x, float alpha,
                    float beta)
{
    if (!valid_view(a) || a.rows > INT32_MAX || a.cols > INT32_MAX ||
        a.stride > INT32_MAX)
        return sgbd_errf(SGBD_E_SHAPE, "gemv_t: A (%zu, %zu) stride %zu",
                         a.rows, a.cols, a.stride);
    if (a.cols == 0)
        return 0;
    if (a.rows == 0) {
        scale_vec(y, a.cols, beta);
        return 0;
    }
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)a.rows, (int)a.cols, alpha,
                a.data, ld(a), x, 1, beta, y, 1);
    return 0;
}

/* Element-wise loops over whole arenas: compiled per ISA (simd.h). */
KERNEL_CLONES void sgbd_mat_axpy(size_t n, float a, const float *restrict x,
                                 float *restrict y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* Below this many floats the pool costs more than it saves. */
#define WIDE_MIN_FLOATS ((size_t)1 << 16)
#define WIDE_GRAIN ((size_t)1 << 14)

struct axpy_args {
    float a;
    const float *x;
    float *y;
};

static void axpy_range(void *ctx, size_t begin, size_t end)
{
    const struct axpy_args *p = ctx;

    sgbd_mat_axpy(end - begin, p->a, p->x + begin, p->y + begin);
}

void sgbd_mat_axpy_wide(size_t n, float a, const float *x, float *y)
{
    struct axpy_args args = {a, x, y};

    if (n < WIDE_MIN_FLOATS)
        sgbd_mat_axpy(n, a, x, y);
    else
        sgbd_parallel_for(n, WIDE_GRAIN, axpy_range, &args);
}

KERNEL_CLONES void sgbd_mat_scale(size_t n, float a, float *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= a;
}

/* Four partial sums (so the loop pipelines), combined in a fixed order. */
double sgbd_mat_dot(size_t n, const float *x, const float *y)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;

    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * y[i];
        s1 += (double)x[i + 1] * y[i + 1];
        s2 += (double)x[i + 2] * y[i + 2];
        s3 += (double)x[i + 3] * y[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)x[i] * y[i];
    return (s0 + s1) + (s2 + s3);
}

void sgbd_mat_row_norms(struct sgbd_mat a, float *out)
{
    for (size_t r = 0; r < a.rows; r++) {
        const float *row = sgbd_mat_row(a, r);
        out[r] = (float)sqrt(sgbd_mat_dot(a.cols, row, row));
    }
}

void sgbd_mat_normalize_rows(struct sgbd_mat a, double eps)
{
    for (size_t r = 0; r < a.rows; r++) {
        float *row = sgbd_mat_row(a, r);
        double norm = sqrt(sgbd_mat_dot(a.cols, row, row));
        float den = (float)(norm > eps ? norm : eps);
        for (size_t c = 0; c < a.cols; c++)
            row[c] /= den;
    }
}
