/* test_bf16.c - bfloat16 products with a fixed matrix. */
/* ctest: labels=unit timeout=120 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "sgbd/bf16.h"
#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"

/* x rounded to bfloat16 (nearest, ties to even), as a float. */
static double bf(float x)
{
    uint32_t b;
    float r;

    memcpy(&b, &x, sizeof(b));
    b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
    memcpy(&r, &b, sizeof(r));
    return r;
}

static float *randn(size_t n, struct sgbd_rng *rng)
{
    float *v = malloc((n ? n : 1) * sizeof(float));

    for (size_t i = 0; v && i < n; i++)
        v[i] = (float)sgbd_rng_normal(rng);
    return v;
}

/*
 * Y (rows, n) = 0.25 + X W^T against the sum in double of the rounded
 * inputs: float32 sums of exact products may differ from it by about
 * cols * 2^-24 * sum |x w|; anything larger is a wrong element.
 */
static void check_nt(size_t rows, size_t cols, size_t n, struct sgbd_rng *rng)
{
    struct sgbd_bf16_fixed fx;
    float *x = randn(rows * cols, rng), *w = randn(n * cols, rng);
    float *y = malloc(rows * n * sizeof(float));

    CHECK(x && w && y);
    CHECK_INT(sgbd_bf16_fixed_init(&fx, x, rows, cols), 0);
    for (size_t i = 0; i < rows * n; i++)
        y[i] = 0.25f;
    CHECK_INT(sgbd_bf16_gemm_nt(y, w, n, &fx), 0);
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < n; k++) {
            double s = 0.25, mag = 0.25;
            for (size_t c = 0; c < cols; c++) {
                double t = bf(x[r * cols + c]) * bf(w[k * cols + c]);
                s += t, mag += fabs(t);
            }
            CHECK_NEAR(y[r * n + k], s, 4.0 * cols * 0x1p-24 * mag);
        }
    sgbd_bf16_fixed_deinit(&fx);
    free(y), free(w), free(x);
}

/* dW (n, cols) = 0.5 + dY^T X, the same way. */
static void check_tn(size_t rows, size_t cols, size_t n, struct sgbd_rng *rng)
{
    struct sgbd_bf16_fixed fx;
    float *x = randn(rows * cols, rng), *dy = randn(rows * n, rng);
    float *dw = malloc(n * cols * sizeof(float));

    CHECK(x && dy && dw);
    CHECK_INT(sgbd_bf16_fixed_init(&fx, x, rows, cols), 0);
    for (size_t i = 0; i < n * cols; i++)
        dw[i] = 0.5f;
    CHECK_INT(sgbd_bf16_gemm_tn(dw, dy, n, &fx), 0);
    for (size_t k = 0; k < n; k++)
        for (size_t c = 0; c < cols; c++) {
            double s = 0.0, mag = 0.0;
            for (size_t r = 0; r < rows; r++) {
                double t = bf(dy[r * n + k]) * bf(x[r * cols + c]);
                s += t, mag += fabs(t);
            }
            /* T = X^T dY is summed first, then added to the 0.5 */
            CHECK_NEAR(dw[k * cols + c], 0.5 + s,
                       4.0 * rows * 0x1p-24 * mag + 0x1p-23);
        }
    sgbd_bf16_fixed_deinit(&fx);
    free(dw), free(dy), free(x);
}

/*
 * Both products over gathered rows: idx draws 2 rows - 1 rows of X with
 * repeats (an odd count: the last pair is padded), checked like the two
 * above against the rows it names.
 */
static void check_rows(size_t rows, size_t cols, size_t n,
                       struct sgbd_rng *rng)
{
    struct sgbd_bf16_fixed fx;
    size_t m = 2 * rows - 1;
    float *x = randn(rows * cols, rng), *w = randn(n * cols, rng);
    float *dy = randn(m * n, rng), *y = malloc(m * n * sizeof(float));
    float *dw = malloc(n * cols * sizeof(float));
    uint32_t *idx = malloc(m * sizeof(uint32_t));

    CHECK(x && w && dy && y && dw && idx);
    for (size_t r = 0; r < m; r++)
        idx[r] = (uint32_t)sgbd_rng_below(rng, rows);
    CHECK_INT(sgbd_bf16_fixed_init_rows(&fx, x, rows, cols), 0);
    CHECK(fx.by_col == NULL);
    for (size_t i = 0; i < m * n; i++)
        y[i] = 0.25f;
    for (size_t i = 0; i < n * cols; i++)
        dw[i] = 0.5f;
    CHECK_INT(sgbd_bf16_gemm_nt_rows(y, w, n, idx, m, &fx), 0);
    CHECK_INT(sgbd_bf16_gemm_tn_rows(dw, dy, n, idx, m, &fx), 0);
    for (size_t r = 0; r < m; r++)
        for (size_t k = 0; k < n; k++) {
            const float *xr = x + idx[r] * cols;
            double s = 0.25, mag = 0.25;
            for (size_t c = 0; c < cols; c++) {
                double t = bf(xr[c]) * bf(w[k * cols + c]);
                s += t, mag += fabs(t);
            }
            CHECK_NEAR(y[r * n + k], s, 4.0 * cols * 0x1p-24 * mag);
        }
    for (size_t k = 0; k < n; k++)
        for (size_t c = 0; c < cols; c++) {
            double s = 0.5, mag = 0.5;
            for (size_t r = 0; r < m; r++) {
                double t = bf(dy[r * n + k]) * bf(x[idx[r] * cols + c]);
                s += t, mag += fabs(t);
            }
            CHECK_NEAR(dw[k * cols + c], s, 4.0 * m * 0x1p-24 * mag);
        }
    sgbd_bf16_fixed_deinit(&fx);
    free(idx), free(dw), free(y), free(dy), free(w), free(x);
}

/* Shapes off every tile edge (8 rows, 32 columns, 256 pairs), odd widths
 * and heights (a pair padded with zero), one element. */
static const size_t shapes[][3] = {
    {1, 1, 1},     {8, 2, 32},    {37, 13, 45},  {9, 64, 33},
    {70, 517, 64}, {613, 31, 70}, {16, 600, 256},
};

/* check (one of the two above) on every shape; the failing one named. */
static void check_shapes(void (*check)(size_t, size_t, size_t,
                                       struct sgbd_rng *),
                         uint64_t seed)
{
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, seed, SGBD_RNG_SYNTH);
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        check(shapes[s][0], shapes[s][1], shapes[s][2], &rng);
        if (harness_case_failed) {
            fprintf(stderr, "  shape %zu x %zu, n %zu\n", shapes[s][0],
                    shapes[s][1], shapes[s][2]);
            return;
        }
    }
}

static void test_bf16_forward_matches_the_rounded_product(void)
{
    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    check_shapes(check_nt, 3);
}

static void test_bf16_backward_matches_the_rounded_product(void)
{
    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    check_shapes(check_tn, 4);
}

static void test_bf16_gathered_rows_match_the_rounded_product(void)
{
    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    check_shapes(check_rows, 6);
}

/* An index past X is refused before anything is written; the rows-only
 * layout cannot serve the whole-matrix backward. */
static void test_bf16_gathered_rows_refuse_an_index_past_the_matrix(void)
{
    struct sgbd_bf16_fixed fx;
    float x[6] = {1, 2, 3, 4, 5, 6}, w[3] = {1, 1, 1}, y[2] = {7, 7};
    float dw[3] = {9, 9, 9};
    uint32_t idx[2] = {1, 2};

    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    CHECK_INT(sgbd_bf16_fixed_init_rows(&fx, x, 2, 3), 0);
    CHECK_INT(sgbd_bf16_gemm_nt_rows(y, w, 1, idx, 2, &fx), SGBD_E_SHAPE);
    CHECK_INT(sgbd_bf16_gemm_tn_rows(dw, y, 3, idx, 2, &fx), SGBD_E_SHAPE);
    CHECK(y[0] == 7 && y[1] == 7 && dw[0] == 9 && dw[2] == 9);
    CHECK_INT(sgbd_bf16_gemm_tn(dw, y, 1, &fx), SGBD_E_UNSUPPORTED);
    idx[1] = 0;
    CHECK_INT(sgbd_bf16_gemm_nt_rows(y, w, 1, idx, 2, &fx), 0);
    CHECK_NEAR(y[0], 7 + 15, 1e-6);
    CHECK_NEAR(y[1], 7 + 6, 1e-6);
    sgbd_bf16_fixed_deinit(&fx);
}

/* 1 + 2^-8 lies half-way between bfloat16 1 and 1 + 2^-7 and goes to the
 * even 1; 1 + 3 2^-8 to the even 1 + 2^-6. */
static void test_bf16_rounds_ties_to_even(void)
{
    struct sgbd_bf16_fixed fx;
    float x[2] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, w = 1.0f, y[2] = {0};

    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    CHECK_INT(sgbd_bf16_fixed_init(&fx, x, 2, 1), 0);
    CHECK_INT(sgbd_bf16_gemm_nt(y, &w, 1, &fx), 0);
    CHECK(y[0] == 1.0f);
    CHECK(y[1] == 1.0f + 0x1p-6f);
    sgbd_bf16_fixed_deinit(&fx);
}

/* Both products give the same bits on 1 and 2 pool threads. */
static void test_bf16_same_bits_on_any_thread_count(void)
{
    const size_t rows = 1500, cols = 520, n = 96;
    struct sgbd_bf16_fixed fx;
    struct sgbd_rng rng;
    float *x, *w, *dy, *y[2], *dw[2], *yg[2], *dwg[2];
    uint32_t *idx = malloc(rows * sizeof(uint32_t));

    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    sgbd_rng_init(&rng, 5, SGBD_RNG_SYNTH);
    x = randn(rows * cols, &rng), w = randn(n * cols, &rng);
    dy = randn(rows * n, &rng);
    CHECK(idx);
    for (size_t r = 0; r < rows; r++)
        idx[r] = (uint32_t)sgbd_rng_below(&rng, rows);
    for (int t = 0; t < 2; t++) {
        y[t] = calloc(rows * n, sizeof(float));
        dw[t] = calloc(n * cols, sizeof(float));
        yg[t] = calloc(rows * n, sizeof(float));
        dwg[t] = calloc(n * cols, sizeof(float));
        CHECK(y[t] && dw[t] && yg[t] && dwg[t]);
    }
    CHECK(x && w && dy);
    CHECK_INT(sgbd_bf16_fixed_init(&fx, x, rows, cols), 0);
    for (int t = 0; t < 2; t++) {
        CHECK_INT(sgbd_parallel_set_threads(t + 1), 0);
        CHECK_INT(sgbd_bf16_gemm_nt(y[t], w, n, &fx), 0);
        CHECK_INT(sgbd_bf16_gemm_tn(dw[t], dy, n, &fx), 0);
        CHECK_INT(sgbd_bf16_gemm_nt_rows(yg[t], w, n, idx, rows, &fx), 0);
        CHECK_INT(sgbd_bf16_gemm_tn_rows(dwg[t], dy, n, idx, rows, &fx), 0);
    }
    CHECK(memcmp(y[0], y[1], rows * n * sizeof(float)) == 0);
    CHECK(memcmp(dw[0], dw[1], n * cols * sizeof(float)) == 0);
    CHECK(memcmp(yg[0], yg[1], rows * n * sizeof(float)) == 0);
    CHECK(memcmp(dwg[0], dwg[1], n * cols * sizeof(float)) == 0);
    sgbd_parallel_set_threads(0);
    sgbd_bf16_fixed_deinit(&fx);
    for (int t = 0; t < 2; t++)
        free(y[t]), free(dw[t]), free(yg[t]), free(dwg[t]);
    free(idx), free(dy), free(w), free(x);
}

static void test_bf16_rejects_an_empty_matrix(void)
{
    struct sgbd_bf16_fixed fx;
    float x = 1.0f;

    if (!sgbd_bf16_supported()) {
        CHECK_INT(sgbd_bf16_fixed_init(&fx, &x, 1, 1), SGBD_E_UNSUPPORTED);
        return;
    }
    CHECK_INT(sgbd_bf16_fixed_init(&fx, &x, 0, 1), SGBD_E_SHAPE);
    CHECK(fx.by_row == NULL && fx.by_col == NULL);
    CHECK_INT(sgbd_bf16_fixed_init(&fx, &x, 1, 0), SGBD_E_SHAPE);
    sgbd_bf16_fixed_deinit(&fx);
}

int main(void)
{
    RUN(test_bf16_forward_matches_the_rounded_product);
    RUN(test_bf16_backward_matches_the_rounded_product);
    RUN(test_bf16_gathered_rows_match_the_rounded_product);
    RUN(test_bf16_gathered_rows_refuse_an_index_past_the_matrix);
    RUN(test_bf16_rounds_ties_to_even);
    RUN(test_bf16_same_bits_on_any_thread_count);
    RUN(test_bf16_rejects_an_empty_matrix);
    sgbd_parallel_shutdown();
    return harness_finish();
}
