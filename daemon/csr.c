/*
 * csr.c - CSR construction (two stable counting sorts), transpose, and the
 * two sparse-dense products.
 *
 * The product kernels are compiled for several x86 ISAs (target_clones)
 * and picked at load time, since the default build targets baseline
 * x86-64. They only multiply and add element-wise in a fixed order (no
 * reassociation, no contraction under -std=c11), so every clone gives
 * bitwise the same result.
 */
#include "sgbd/csr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "simd.h"

#define TILE 64          /* output floats accumulated in registers */
#define SLICE 16         /* spmm_t column slice: one cache line */
#define SPMM_PIECES 64   /* row pieces of about equal work */

static void csr_init_empty(struct sgbd_csr *a)
{
    memset(a, 0, sizeof(*a));
}

static int csr_alloc(struct sgbd_csr *a, size_t rows, size_t cols,
                     size_t nnz)
{
    csr_init_empty(a);
    a->rows = rows;
    a->cols = cols;
    a->ptr = calloc(rows + 1, sizeof(*a->ptr));
    a->col = malloc((nnz ? nnz : 1) * sizeof(*a->col));
    a->val = malloc((nnz ? nnz : 1) * sizeof(*a->val));
    if (!a->ptr || !a->col || !a->val) {
        sgbd_csr_free(a);
        return -ENOMEM;
    }
    return 0;
}

void sgbd_csr_free(struct sgbd_csr *a)
{
    if (!a)
        return;
    free(a->ptr);
    free(a->col);
    free(a->val);
    csr_init_empty(a);
}

static int check_coo(size_t rows, size_t cols, size_t nnz,
                     const uint32_t *row, const uint32_t *col)
{
    if (rows > (size_t)UINT32_MAX + 1 || cols > (size_t)UINT32_MAX + 1)
        return sgbd_errf(SGBD_E_SHAPE, "csr: %zu x %zu is above 2^32",
                         rows, cols);
    for (size_t k = 0; k < nnz; k++)
        if (row[k] >= rows || col[k] >= cols)
            return sgbd_errf(SGBD_E_SHAPE, "csr: entry %zu at (%u, %u) is "
                             "outside %zu x %zu", k, row[k], col[k], rows,
                             cols);
    return 0;
}

/* perm = entry indices stably sorted by col (first pass of the LSD sort). */
static int sort_by_col(size_t cols, size_t nnz, const uint32_t *col,
                       size_t *perm)
{
    size_t *next = calloc(cols + 1, sizeof(*next));

    if (!next)
        return -ENOMEM;
    for (size_t k = 0; k < nnz; k++)
        next[col[k] + 1]++;
    for (size_t c = 0; c < cols; c++)
        next[c + 1] += next[c];
    for (size_t k = 0; k < nnz; k++)
        perm[next[col[k]]++] = k;
    free(next);
    return 0;
}

/* Second pass: scatter entries in perm order into their rows. */
static void fill_rows(struct sgbd_csr *a, size_t nnz, const uint32_t *row,
                      const uint32_t *col, const float *val,
                      const size_t *perm, uint64_t *next)
{
    for (size_t k = 0; k < nnz; k++)
        a->ptr[row[k] + 1]++;
    for (size_t r = 0; r < a->rows; r++)
        a->ptr[r + 1] += a->ptr[r];
    memcpy(next, a->ptr, a->rows * sizeof(*next));
    for (size_t t = 0; t < nnz; t++) {
        size_t k = perm[t];
        uint64_t at = next[row[k]]++;
        a->col[at] = col[k];
        a->val[at] = val ? val[k] : 1.0f;
    }
}

/* Merge runs of equal (row, col) in place, summing in stored order. */
static void sum_duplicates(struct sgbd_csr *a)
{
    uint64_t w = 0, start = 0;

    for (size_t r = 0; r < a->rows; r++) {
        uint64_t end = a->ptr[r + 1];
        for (uint64_t j = start; j < end; j++) {
            if (j > start && a->col[j] == a->col[w - 1]) {
                a->val[w - 1] += a->val[j];
                continue;
            }
            a->col[w] = a->col[j];
            a->val[w++] = a->val[j];
        }
        start = end;
        a->ptr[r + 1] = w;
    }
}

int sgbd_csr_from_coo(struct sgbd_csr *out, size_t rows, size_t cols,
                      size_t nnz, const uint32_t *row, const uint32_t *col,
                      const float *val, int sum_dups)
{
    struct sgbd_csr a;
    size_t *perm = NULL;
    uint64_t *next = NULL;
    int rc = check_coo(rows, cols, nnz, row, col);

    if (rc < 0)
        return rc;
    rc = csr_alloc(&a, rows, cols, nnz);
    if (rc < 0)
        return rc;
    perm = malloc((nnz ? nnz : 1) * sizeof(*perm));
    next = malloc((rows ? rows : 1) * sizeof(*next));
    if (!perm || !next) {
        rc = -ENOMEM;
        goto out;
    }
    rc = sort_by_col(cols, nnz, col, perm);
    if (rc < 0)
        goto out;
    fill_rows(&a, nnz, row, col, val, perm, next);
    if (sum_dups)
        sum_duplicates(&a);
    *out = a;

out:
    free(next);
    free(perm);
    if (rc < 0)
        sgbd_csr_free(&a);
    return rc;
}

int sgbd_csr_transpose(struct sgbd_csr *out, const struct sgbd_csr *a)
{
    struct sgbd_csr t;
    uint64_t nnz = sgbd_csr_nnz(a);
    uint64_t *next;
    int rc = csr_alloc(&t, a->cols, a->rows, nnz);

    if (rc < 0)
        return rc;
    next = malloc((a->cols ? a->cols : 1) * sizeof(*next));
    if (!next) {
        sgbd_csr_free(&t);
        return -ENOMEM;
    }
    for (uint64_t j = 0; j < nnz; j++)
        t.ptr[a->col[j] + 1]++;
    for (size_t c = 0; c < a->cols; c++)
        t.ptr[c + 1] += t.ptr[c];
    memcpy(next, t.ptr, a->cols * sizeof(*next));
    for (size_t r = 0; r < a->rows; r++)
        for (uint64_t j = a->ptr[r]; j < a->ptr[r + 1]; j++) {
            uint64_t at = next[a->col[j]]++;
            t.col[at] = (uint32_t)r;
            t.val[at] = a->val[j];
        }
    free(next);
    *out = t;
    return 0;
}

static int check_spmm(const char *op, struct sgbd_mat y,
                      const struct sgbd_csr *a, struct sgbd_mat x,
                      size_t x_rows, size_t y_rows)
{
    if (x.rows != x_rows || y.rows != y_rows || x.cols != y.cols)
        return sgbd_errf(SGBD_E_SHAPE, "%s: A (%zu, %zu), X (%zu, %zu), "
                         "Y (%zu, %zu) do not fit", op, a->rows, a->cols,
                         x.rows, x.cols, y.rows, y.cols);
    if (y.cols && ((x.rows && (!x.data || x.stride < x.cols)) ||
                   (y.rows && (!y.data || y.stride < y.cols))))
        return sgbd_errf(SGBD_E_SHAPE, "%s: a view has no data or a "
                         "stride below its width", op);
    return 0;
}

/* ---- Y = alpha A X + beta Y ------------------------------------------ */

struct spmm_job {
    const struct sgbd_csr *a;
    struct sgbd_mat x, y;
    float alpha, beta;
    size_t pieces;
};

/* y (w) = alpha acc + beta y; beta 0 never reads y. */
INLINE void store_row(float *restrict y, const float *restrict acc,
                      size_t w, float alpha, float beta)
{
    if (beta == 0.0f)
        for (size_t t = 0; t < w; t++)
            y[t] = alpha * acc[t];
    else
        for (size_t t = 0; t < w; t++)
            y[t] = alpha * acc[t] + beta * y[t];
}

/*
 * One output row, columns [d0, d0 + w) with w <= TILE: the sum over the
 * row's nonzeros in stored order. For w == TILE (D = 64, the default)
 * the four 16-float accumulators stay in vector registers; other widths
 * go through a buffer with the same per-element operations, so the
 * result is the same either way.
 */
KERNEL_CLONES
static void spmm_row(const struct spmm_job *j, size_t r, size_t d0, size_t w)
{
    const uint32_t *restrict col = j->a->col;
    const float *restrict val = j->a->val;
    const float *restrict x = j->x.data + d0;
    float *y = sgbd_mat_row(j->y, r) + d0;
    size_t xs = j->x.stride;
    uint64_t b = j->a->ptr[r], e = j->a->ptr[r + 1];

    if (w == TILE) {
        vf16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (uint64_t k = b; k < e; k++) {
            const float *xr = x + (size_t)col[k] * xs;
            vf16 v = splat(val[k]);
            a0 += v * load16(xr);
            a1 += v * load16(xr + 16);
            a2 += v * load16(xr + 32);
            a3 += v * load16(xr + 48);
        }
        vf16 al = splat(j->alpha), be = splat(j->beta);
        if (j->beta == 0.0f) {
            a0 = al * a0, a1 = al * a1, a2 = al * a2, a3 = al * a3;
        } else {
            a0 = al * a0 + be * load16(y);
            a1 = al * a1 + be * load16(y + 16);
            a2 = al * a2 + be * load16(y + 32);
            a3 = al * a3 + be * load16(y + 48);
        }
        STORE16(y, a0), STORE16(y + 16, a1);
        STORE16(y + 32, a2), STORE16(y + 48, a3);
        return;
    }
    float acc[TILE];
    memset(acc, 0, sizeof(acc));
    for (uint64_t k = b; k < e; k++) {
        const float *xr = x + (size_t)col[k] * xs;
        float v = val[k];
        for (size_t t = 0; t < w; t++)
            acc[t] += v * xr[t];
    }
    store_row(y, acc, w, j->alpha, j->beta);
}

/* First row whose work (nonzeros + one per row) reaches target. */
static size_t row_at_work(const struct sgbd_csr *a, uint64_t target)
{
    size_t lo = 0, hi = a->rows;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->ptr[mid] + mid < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t piece_start(const struct spmm_job *j, size_t p)
{
    const struct sgbd_csr *a = j->a;
    uint64_t work = sgbd_csr_nnz(a) + a->rows;

    if (p >= j->pieces)
        return a->rows;
    return row_at_work(a, (uint64_t)((unsigned __int128)work * p /
                                     j->pieces));
}

static void spmm_pieces(void *ctx, size_t p0, size_t p1)
{
    const struct spmm_job *j = ctx;
    size_t r0 = piece_start(j, p0), r1 = piece_start(j, p1);
    size_t d = j->y.cols;

    for (size_t r = r0; r < r1; r++)
        for (size_t d0 = 0; d0 < d; d0 += TILE)
            spmm_row(j, r, d0, d - d0 < TILE ? d - d0 : TILE);
}

int sgbd_csr_spmm(struct sgbd_mat y, const struct sgbd_csr *a,
                  struct sgbd_mat x, float alpha, float beta)
{
    struct spmm_job j = {a, x, y, alpha, beta, SPMM_PIECES};
    int rc = check_spmm("spmm", y, a, x, a->cols, a->rows);

    if (rc < 0)
        return rc;
    if (y.rows == 0 || y.cols == 0)
        return 0;
    if (j.pieces > a->rows)
        j.pieces = a->rows;
    sgbd_parallel_for(j.pieces, 1, spmm_pieces, &j);
    return 0;
}

/* ---- Y = alpha A^T X + beta Y ---------------------------------------- */

/* y (w) += v x (w): whole 16-float slices as vectors, then the rest. */
INLINE void scatter_add(float *y, const float *x, float v, size_t w)
{
    vf16 vv = splat(v);
    size_t t = 0;

    for (; t + SLICE <= w; t += SLICE) {
        vf16 r = load16(y + t) + vv * load16(x + t);
        STORE16(y + t, r);
    }
    for (; t < w; t++)
        y[t] += v * x[t];
}

/* Columns [c0, c0 + w) of every row of Y, w <= SLICE * 4. */
KERNEL_CLONES
static void spmm_t_columns(const struct spmm_job *j, size_t c0, size_t w)
{
    const struct sgbd_csr *a = j->a;
    size_t xs = j->x.stride, ys = j->y.stride;
    float *y = j->y.data + c0;

    for (size_t r = 0; r < j->y.rows; r++) {
        float *yr = y + r * ys;
        for (size_t t = 0; t < w; t++)
            yr[t] = j->beta == 0.0f ? 0.0f : j->beta * yr[t];
    }
    for (size_t r = 0; r < a->rows; r++) {
        const float *xr = j->x.data + r * xs + c0;
        for (uint64_t k = a->ptr[r]; k < a->ptr[r + 1]; k++)
            scatter_add(y + (size_t)a->col[k] * ys, xr,
                        j->alpha * a->val[k], w);
    }
}

static void spmm_t_slices(void *ctx, size_t s0, size_t s1)
{
    const struct spmm_job *j = ctx;
    size_t c0 = s0 * SLICE, c1 = s1 * SLICE;

    if (c1 > j->y.cols)
        c1 = j->y.cols;
    for (size_t c = c0; c < c1; c += 4 * SLICE)
        spmm_t_columns(j, c, c1 - c < 4 * SLICE ? c1 - c : 4 * SLICE);
}

int sgbd_csr_spmm_t(struct sgbd_mat y, const struct sgbd_csr *a,
                    struct sgbd_mat x, float alpha, float beta)
{
    struct spmm_job j = {a, x, y, alpha, beta, 0};
    int rc = check_spmm("spmm_t", y, a, x, a->rows, a->cols);

    if (rc < 0)
        return rc;
    if (y.rows == 0 || y.cols == 0)
        return 0;
    size_t slices = (y.cols + SLICE - 1) / SLICE;
    sgbd_parallel_for(slices, 2, spmm_t_slices, &j);
    return 0;
}
