/*
 * bf16.c - bfloat16 products with a fixed matrix (see bf16.h).
 *
 * Both products are C (m, n) += A B with A a layout of the fixed X and B
 * the per-call float factor rounded into pairs: element 2p of a row in
 * the low half of a 32-bit lane, 2p + 1 in the high half, which is how
 * VDPBF16PS reads them. A tile of MR rows and NR columns keeps its sums
 * in 16 registers: per pair, one broadcast of A per row and two loads of
 * B feed 16 VDPBF16PS.
 *
 *   forward   Y (rows, n)  += X W^T:  A = by_row (rows, cols / 2),
 *                                     B[p][j] = (W[j][2p], W[j][2p+1])
 *   backward  T (cols, n)   = X^T dY: A = by_col (cols, rows / 2),
 *                                     B[q][j] = (dY[2q][j], dY[2q+1][j])
 *             dW (n, cols) += T^T
 *
 * The backward goes through X^T so that the fixed matrix is always the
 * broadcast side and the per-call factor needs only rows interleaved in
 * pairs, not a transpose.
 *
 * Products over gathered rows X[idx] (m of them, a batch's items) read
 * by_row only:
 *
 *   forward   Y (m, n)     += X[idx] W^T: A = by_row through idx
 *   backward  dW (n, cols) += dY^T X[idx]: A[k][q] = (dY[2q][k], dY[2q+1][k]),
 *                                     B[q][c] = (X[idx 2q][c], X[idx 2q+1][c])
 *
 * Here B is the wide factor (cols columns), so it is built in panels of
 * NR columns, each contiguous, and the product runs panel by panel: a
 * panel's block of PC pairs stays in L1 while every tile of dW reads it.
 */
#include "sgbd/bf16.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "simd.h"

#define MR 8     /* output rows per tile */
#define NR 32    /* output columns per tile: two vectors */
#define PC 512   /* pairs per block of the summed dimension: B's block of
                  * PC x n pairs stays in L2 while every tile reads it */
#define GRAIN_MACS ((size_t)1 << 21) /* least work of one pool chunk */

static size_t round_up(size_t n, size_t m)
{
    return (n + m - 1) / m * m;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* x rounded to the nearest bfloat16, ties to even; NaN stays NaN. */
static uint32_t to_bf16(float x)
{
    uint32_t b;

    memcpy(&b, &x, sizeof(b));
    return (b & 0x7fffffffu) > 0x7f800000u ? (b >> 16) | 0x40u
                                           : bf16_nearest(x);
}

static uint32_t pair(float lo, float hi)
{
    return to_bf16(lo) | to_bf16(hi) << 16;
}

/* One product C (m, n) += A (m, p pairs) B (p, ldb pairs). A has at
 * least round_up(m, MR) rows; B's columns past n are zero. */
struct gemm_job {
    float *c;
    size_t ldc;
    const uint32_t *a;
    size_t lda;
    const uint32_t *b;
    size_t ldb;
    size_t m, n, p;
    const uint32_t *idx; /* row r of A is row idx[r] of a, or NULL */
};

/* Row r of A, from its pair p0. */
static const uint32_t *a_row(const struct gemm_job *j, size_t r, size_t p0)
{
    return j->a + (j->idx ? j->idx[r] : r) * j->lda + p0;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

int sgbd_bf16_supported(void)
{
    return __builtin_cpu_supports("avx512bf16") &&
           __builtin_cpu_supports("avx512bw");
}

/* C[r0 .. r0 + MR, c0 .. c0 + NR] += the pairs [p0, p0 + np) of A B,
 * clipped to (m, n). */
BF16_TARGET static void tile(const struct gemm_job *j, size_t r0, size_t c0,
                             size_t p0, size_t np)
{
    const uint32_t *b = j->b + p0 * j->ldb + c0;
    size_t mr = min_size(MR, j->m - r0), nr = min_size(NR, j->n - c0);
    const uint32_t *a[MR];
    __m512 acc[MR][2];

    /* Rows past m repeat the last one; their sums are not stored. */
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        a[r] = a_row(j, r0 + min_size((size_t)r, mr - 1), p0);
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    }
    for (size_t p = 0; p < np; p++) {
        const uint32_t *bp = b + p * j->ldb;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)bp);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(bp + 16));
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[r][p]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            float *c = j->c + (r0 + r) * j->ldc + c0;
            _mm512_storeu_ps(c, _mm512_add_ps(_mm512_loadu_ps(c), acc[r][0]));
            _mm512_storeu_ps(c + 16,
                             _mm512_add_ps(_mm512_loadu_ps(c + 16), acc[r][1]));
        }
        return;
    }
    float t[MR][NR];
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_ps(t[r], acc[r][0]);
        _mm512_storeu_ps(t[r] + 16, acc[r][1]);
    }
    for (size_t r = 0; r < mr; r++)
        for (size_t k = 0; k < nr; k++)
            j->c[(r0 + r) * j->ldc + c0 + k] += t[r][k];
}

/* B[q][k] = (dY[2q][k], dY[2q+1][k]) for 16 columns: both rows rounded
 * into one vector, then their halves interleaved. */
BF16_TARGET static void interleave16(uint32_t *out, const float *r0,
                                     const float *r1)
{
    const __m512i idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(r1), _mm512_loadu_ps(r0));

    _mm512_storeu_si512((void *)out, _mm512_permutexvar_epi16(idx, (__m512i)h));
}

/* out[c] = (a[c], b[c]) for 32 columns of two by_row rows (16 pairs
 * each): their 16-bit halves interleaved. */
BF16_TARGET static void interleave_rows32(uint32_t *out, const uint32_t *a,
                                          const uint32_t *b)
{
    const __m512i lo = _mm512_set_epi16(
        47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
        39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_set_epi16(
        63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24,
        55, 23, 54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
    __m512i va = _mm512_loadu_si512((const void *)a);
    __m512i vb = _mm512_loadu_si512((const void *)b);

    _mm512_storeu_si512((void *)out, _mm512_permutex2var_epi16(va, lo, vb));
    _mm512_storeu_si512((void *)(out + 16),
                        _mm512_permutex2var_epi16(va, hi, vb));
}
#else
int sgbd_bf16_supported(void)
{
    return 0;
}

static void tile(const struct gemm_job *j, size_t r0, size_t c0, size_t p0,
                 size_t np)
{
}

static void interleave16(uint32_t *out, const float *r0, const float *r1)
{
}

static void interleave_rows32(uint32_t *out, const uint32_t *a,
                              const uint32_t *b)
{
}
#endif

/* Row tiles [t0, t1): for each block of pairs, every tile, every column
 * block. Each C element is summed over the blocks in order, whatever the
 * cut into chunks. */
static void gemm_rows(void *ctx, size_t t0, size_t t1)
{
    const struct gemm_job *j = ctx;

    for (size_t p0 = 0; p0 < j->p; p0 += PC)
        for (size_t t = t0; t < t1; t++)
            for (size_t c0 = 0; c0 < j->n; c0 += NR)
                tile(j, t * MR, c0, p0, min_size(PC, j->p - p0));
}

static void gemm(const struct gemm_job *j)
{
    size_t tiles = round_up(j->m, MR) / MR;
    size_t per_tile = MR * j->n * j->p * 2;

    sgbd_parallel_for(tiles, GRAIN_MACS / (per_tile ? per_tile : 1) + 1,
                      gemm_rows, (void *)j);
}

/* *buf at least `want` 4-byte elements (its capacity in *cap). */
static int grow(void **buf, size_t *cap, size_t want, const char *what)
{
    void *p;

    if (want <= *cap)
        return 0;
    p = aligned_alloc(64, round_up(want * 4, 64));
    if (!p)
        return sgbd_errf(-ENOMEM, "bf16: no memory for %zu MiB of %s",
                         (want * 4) >> 20, what);
    free(*buf);
    *buf = p, *cap = want;
    return 0;
}

static int reserve(struct sgbd_bf16_fixed *x, size_t pairs, size_t floats)
{
    int rc = grow((void **)&x->pack, &x->pack_cap, pairs, "packed factor");

    return rc < 0 ? rc : grow((void **)&x->tmp, &x->tmp_cap, floats,
                              "product");
}

static int fixed_init(struct sgbd_bf16_fixed *x, const float *data,
                      size_t rows, size_t cols, int by_col)
{
    memset(x, 0, sizeof(*x));
    if (!sgbd_bf16_supported())
        return sgbd_errf(SGBD_E_UNSUPPORTED, "bf16: this CPU has no "
                         "AVX512-BF16");
    if (rows == 0 || cols == 0)
        return sgbd_errf(SGBD_E_SHAPE, "bf16: empty (%zu, %zu) matrix",
                         rows, cols);
    x->rows = rows, x->cols = cols;
    x->pairs_c = (cols + 1) / 2, x->pairs_r = (rows + 1) / 2;
    x->by_row = calloc(round_up(rows, MR) * x->pairs_c, sizeof(uint32_t));
    if (by_col)
        x->by_col = calloc(round_up(cols, MR) * x->pairs_r, sizeof(uint32_t));
    if (!x->by_row || (by_col && !x->by_col)) {
        sgbd_bf16_fixed_deinit(x);
        return sgbd_errf(-ENOMEM, "bf16: no memory for a (%zu, %zu) "
                         "matrix", rows, cols);
    }
    for (size_t r = 0; r < rows; r++) {
        const float *row = data + r * cols;
        for (size_t p = 0; p < x->pairs_c; p++)
            x->by_row[r * x->pairs_c + p] =
                pair(row[2 * p], 2 * p + 1 < cols ? row[2 * p + 1] : 0.0f);
    }
    for (size_t q = 0; by_col && q < x->pairs_r; q++) {
        const float *r0 = data + 2 * q * cols;
        const float *r1 = 2 * q + 1 < rows ? r0 + cols : NULL;
        for (size_t c = 0; c < cols; c++)
            x->by_col[c * x->pairs_r + q] = pair(r0[c], r1 ? r1[c] : 0.0f);
    }
    return 0;
}

int sgbd_bf16_fixed_init(struct sgbd_bf16_fixed *x, const float *data,
                         size_t rows, size_t cols)
{
    return fixed_init(x, data, rows, cols, 1);
}

int sgbd_bf16_fixed_init_rows(struct sgbd_bf16_fixed *x, const float *data,
                              size_t rows, size_t cols)
{
    return fixed_init(x, data, rows, cols, 0);
}

void sgbd_bf16_fixed_deinit(struct sgbd_bf16_fixed *x)
{
    if (!x)
        return;
    free(x->left), free(x->tmp), free(x->pack), free(x->by_col),
        free(x->by_row);
    memset(x, 0, sizeof(*x));
}

/* x->pack[p][k] = (W[k][2p], W[k][2p + 1]), rows ldb apart. */
static void pack_w(struct sgbd_bf16_fixed *x, const float *w, size_t n,
                   size_t ldb)
{
    size_t F = x->cols;

    for (size_t p = 0; p < x->pairs_c; p++) {
        uint32_t *b = x->pack + p * ldb;
        for (size_t k = 0; k < n; k++)
            b[k] = pair(w[k * F + 2 * p],
                        2 * p + 1 < F ? w[k * F + 2 * p + 1] : 0.0f);
        memset(b + n, 0, (ldb - n) * sizeof(uint32_t));
    }
}

/* Y (m, n) += A W^T with A the rows idx of X, or its first m rows when
 * idx is NULL; the index already checked. */
static int forward(float *y, const float *w, size_t n, const uint32_t *idx,
                   size_t m, struct sgbd_bf16_fixed *x)
{
    size_t ldb = round_up(n, NR), P = x->pairs_c;
    int rc = x->by_row ? reserve(x, P * ldb, 0) : SGBD_E_UNSUPPORTED;

    if (rc < 0 || m == 0)
        return rc;
    pack_w(x, w, n, ldb);
    gemm(&(struct gemm_job){y, n, x->by_row, P, x->pack, ldb, m, n, P, idx});
    return 0;
}

int sgbd_bf16_gemm_nt(float *y, const float *w, size_t n,
                      struct sgbd_bf16_fixed *x)
{
    return forward(y, w, n, NULL, x->rows, x);
}

struct pack_job {
    uint32_t *b;
    const float *dy;
    size_t ldb, n, rows;
};

/* Pairs of rows [2 q0, 2 q1) of dY into B. */
static void pack_rows(void *ctx, size_t q0, size_t q1)
{
    const struct pack_job *j = ctx;
    size_t n = j->n, n16 = n / 16 * 16;

    for (size_t q = q0; q < q1; q++) {
        uint32_t *b = j->b + q * j->ldb;
        const float *r0 = j->dy + 2 * q * n;
        int odd = 2 * q + 1 == j->rows;
        size_t k = 0;

        if (!odd)
            for (; k < n16; k += 16)
                interleave16(b + k, r0 + k, r0 + n + k);
        for (; k < n; k++)
            b[k] = pair(r0[k], odd ? 0.0f : r0[n + k]);
        memset(b + n, 0, (j->ldb - n) * sizeof(uint32_t));
    }
}

/* dW (n, F) += T^T, T (F, n), in 32 x 32 blocks: a row of T and a
 * column of dW are 4 n and 4 F bytes apart. */
static void add_transposed(float *dw, const float *t, size_t F, size_t n)
{
    for (size_t c0 = 0; c0 < F; c0 += 32)
        for (size_t k0 = 0; k0 < n; k0 += 32)
            for (size_t k = k0; k < min_size(k0 + 32, n); k++)
                for (size_t c = c0; c < min_size(c0 + 32, F); c++)
                    dw[k * F + c] += t[c * n + k];
}

int sgbd_bf16_gemm_tn(float *dw, const float *dy, size_t n,
                      struct sgbd_bf16_fixed *x)
{
    size_t ldb = round_up(n, NR), Q = x->pairs_r, F = x->cols;
    int rc = x->by_col ? reserve(x, Q * ldb, F * n) : SGBD_E_UNSUPPORTED;

    if (rc < 0)
        return rc;
    sgbd_parallel_for(Q, 1024, pack_rows,
                      &(struct pack_job){x->pack, dy, ldb, n, x->rows});
    memset(x->tmp, 0, F * n * sizeof(float));
    gemm(&(struct gemm_job){x->tmp, n, x->by_col, Q, x->pack, ldb, F, n, Q,
                            NULL});
    add_transposed(dw, x->tmp, F, n);
    return 0;
}

/* Every idx below x->rows. */
static int check_rows(const struct sgbd_bf16_fixed *x, const uint32_t *idx,
                      size_t m)
{
    if (!x->by_row)
        return SGBD_E_UNSUPPORTED;
    for (size_t r = 0; r < m; r++)
        if (idx[r] >= x->rows)
            return sgbd_errf(SGBD_E_SHAPE, "bf16: row %u of a (%zu, %zu) "
                             "matrix", idx[r], x->rows, x->cols);
    return 0;
}

int sgbd_bf16_gemm_nt_rows(float *y, const float *w, size_t n,
                           const uint32_t *idx, size_t m,
                           struct sgbd_bf16_fixed *x)
{
    int rc = check_rows(x, idx, m);

    return rc < 0 ? rc : forward(y, w, n, idx, m, x);
}

struct panel_pack_job {
    uint32_t *b;
    const struct sgbd_bf16_fixed *x;
    const uint32_t *idx;
    size_t m, q_count;
};

/* Column c of a by_row row, as bfloat16 bits. */
static uint32_t bf16_at(const uint32_t *row, size_t c)
{
    return row[c / 2] >> (c % 2 * 16) & 0xffffu;
}

/* Pairs [q0, q1) of gathered rows into the panels of B: panel t holds
 * columns [t NR, t NR + NR) of every pair, NR apart, zero past cols. */
static void pack_panels(void *ctx, size_t q0, size_t q1)
{
    const struct panel_pack_job *j = ctx;
    const struct sgbd_bf16_fixed *x = j->x;
    size_t F = x->cols, full = F / NR, panels = round_up(F, NR) / NR;

    for (size_t q = q0; q < q1; q++) {
        const uint32_t *ra = x->by_row + j->idx[2 * q] * x->pairs_c;
        const uint32_t *rb = 2 * q + 1 < j->m
                                 ? x->by_row + j->idx[2 * q + 1] * x->pairs_c
                                 : NULL;
        for (size_t t = 0; t < panels; t++) {
            uint32_t *out = j->b + (t * j->q_count + q) * NR;
            if (t < full && rb) {
                interleave_rows32(out, ra + t * NR / 2, rb + t * NR / 2);
                continue;
            }
            for (size_t c = 0; c < NR; c++) {
                size_t col = t * NR + c;
                uint32_t lo = col < F ? bf16_at(ra, col) : 0;
                uint32_t hi = col < F && rb ? bf16_at(rb, col) : 0;
                out[c] = lo | hi << 16;
            }
        }
    }
}

/* Panels [t0, t1) of dW: each panel's pairs in blocks of PC, every row
 * tile of dW per block, summed in that order whatever the cut. */
static void gemm_panels(void *ctx, size_t t0, size_t t1)
{
    const struct gemm_job *j = ctx;

    for (size_t t = t0; t < t1; t++) {
        struct gemm_job panel = {j->c + t * NR, j->ldc, j->a, j->lda,
                                 j->b + t * j->p * NR, NR, j->m,
                                 min_size(NR, j->n - t * NR), j->p, NULL};
        for (size_t p0 = 0; p0 < j->p; p0 += PC)
            for (size_t r0 = 0; r0 < j->m; r0 += MR)
                tile(&panel, r0, 0, p0, min_size(PC, j->p - p0));
    }
}

int sgbd_bf16_gemm_tn_rows(float *dw, const float *dy, size_t n,
                           const uint32_t *idx, size_t m,
                           struct sgbd_bf16_fixed *x)
{
    size_t Q = (m + 1) / 2, F = x->cols, panels = round_up(F, NR) / NR;
    size_t per_panel = round_up(n, MR) * NR * Q * 2;
    int rc = check_rows(x, idx, m);

    if (rc == 0)
        rc = grow((void **)&x->pack, &x->pack_cap, panels * Q * NR,
                  "gathered rows");
    if (rc == 0)
        rc = grow((void **)&x->left, &x->left_cap, n * Q, "packed factor");
    if (rc < 0 || m == 0 || n == 0)
        return rc;
    for (size_t k = 0; k < n; k++)
        for (size_t q = 0; q < Q; q++)
            x->left[k * Q + q] = pair(dy[2 * q * n + k],
                                      2 * q + 1 < m ? dy[(2 * q + 1) * n + k]
                                                    : 0.0f);
    sgbd_parallel_for(Q, 256, pack_panels,
                      &(struct panel_pack_job){x->pack, x, idx, m, Q});
    sgbd_parallel_for(panels, GRAIN_MACS / (per_panel ? per_panel : 1) + 1,
                      gemm_panels,
                      &(struct gemm_job){dw, F, x->left, Q, x->pack, NR, n, F,
                                         Q, NULL});
    return 0;
}
