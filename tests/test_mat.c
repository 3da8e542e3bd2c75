/* test_mat.c - owned matrices, BLAS wrappers, vector helpers. */
/* ctest: labels=unit timeout=60 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/mat.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"

/* A (rows, cols) view with stride cols + pad over fresh random data. */
static struct sgbd_mat random_view(size_t rows, size_t cols, size_t pad,
                                   struct sgbd_rng *rng)
{
    size_t stride = cols + pad;
    float *d = malloc((rows * stride + 1) * sizeof(float));
    struct sgbd_mat m = {d, rows, cols, stride};

    for (size_t i = 0; d && i < rows * stride; i++)
        d[i] = (float)(sgbd_rng_uniform(rng) * 2 - 1);
    return m;
}

static double at(struct sgbd_mat m, size_t r, size_t c)
{
    return sgbd_mat_row(m, r)[c];
}

/* max |C - (alpha op(A) op(B) + beta C0)| with the naive triple loop. */
static double gemm_error(struct sgbd_mat c, struct sgbd_mat c0,
                         struct sgbd_mat a, struct sgbd_mat b, int ta,
                         int tb, float alpha, float beta)
{
    size_t k_len = ta ? a.rows : a.cols;
    double worst = 0;

    for (size_t i = 0; i < c.rows; i++)
        for (size_t j = 0; j < c.cols; j++) {
            double s = 0;
            for (size_t k = 0; k < k_len; k++)
                s += (ta ? at(a, k, i) : at(a, i, k)) *
                     (tb ? at(b, j, k) : at(b, k, j));
            double want = alpha * s + beta * at(c0, i, j);
            double e = fabs(at(c, i, j) - want);
            worst = e > worst ? e : worst;
        }
    return worst;
}

static struct sgbd_mat copy_of(struct sgbd_mat m)
{
    struct sgbd_mat c = m;
    c.data = malloc((m.rows * m.stride + 1) * sizeof(float));
    if (c.data)
        memcpy(c.data, m.data, m.rows * m.stride * sizeof(float));
    return c;
}

static void test_mat_gemm_patterns_match_naive(void)
{
    struct sgbd_rng rng;
    size_t M = 13, N = 9, K = 21;

    sgbd_rng_init(&rng, 1, SGBD_RNG_INIT);
    for (int pattern = 0; pattern < 3; pattern++) {
        int ta = pattern == 2, tb = pattern == 1;
        struct sgbd_mat a = ta ? random_view(K, M, 3, &rng)
                               : random_view(M, K, 3, &rng);
        struct sgbd_mat b = tb ? random_view(N, K, 1, &rng)
                               : random_view(K, N, 1, &rng);
        struct sgbd_mat c = random_view(M, N, 2, &rng);
        struct sgbd_mat c0 = copy_of(c);
        int rc = pattern == 0 ? sgbd_mat_gemm_nn(c, a, b, 0.5f, -2.0f)
                 : pattern == 1 ? sgbd_mat_gemm_nt(c, a, b, 0.5f, -2.0f)
                                : sgbd_mat_gemm_tn(c, a, b, 0.5f, -2.0f);
        CHECK_INT(rc, 0);
        CHECK(gemm_error(c, c0, a, b, ta, tb, 0.5f, -2.0f) < 1e-5);
        /* The padding between rows is never written. */
        CHECK(c.data[N] == c0.data[N] && c.data[N + 1] == c0.data[N + 1]);
        free(a.data), free(b.data), free(c.data), free(c0.data);
    }
}

static void test_mat_gemm_rejects_wrong_shapes(void)
{
    struct sgbd_mat a, b, c;

    CHECK_INT(sgbd_mat_alloc(&a, 4, 3), 0);
    CHECK_INT(sgbd_mat_alloc(&b, 5, 3), 0);
    CHECK_INT(sgbd_mat_alloc(&c, 4, 5), 0);
    c.data[0] = 7;
    CHECK_INT(sgbd_mat_gemm_nn(c, a, b, 1, 0), SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_SHAPE), "gemm_nn") != NULL);
    CHECK_INT(sgbd_mat_gemm_tn(c, a, b, 1, 0), SGBD_E_SHAPE);
    CHECK_INT(sgbd_mat_gemm_nt(sgbd_mat_rows(c, 0, 3), a, b, 1, 0),
              SGBD_E_SHAPE);
    struct sgbd_mat bad = a;
    bad.stride = 2;
    CHECK_INT(sgbd_mat_gemm_nt(c, bad, b, 1, 0), SGBD_E_SHAPE);
    CHECK(c.data[0] == 7); /* untouched */
    CHECK_INT(sgbd_mat_gemm_nt(c, a, b, 1, 0), 0);
    sgbd_mat_release(&a), sgbd_mat_release(&b), sgbd_mat_release(&c);
}

static void test_mat_gemm_empty_inner_scales_c(void)
{
    float cdata[6] = {1, 2, 3, 4, 5, 6};
    struct sgbd_mat c = sgbd_mat_view(cdata, 2, 3);
    struct sgbd_mat a = {NULL, 2, 0, 0}, b = {NULL, 0, 3, 3};

    CHECK_INT(sgbd_mat_gemm_nn(c, a, b, 1, 2), 0);
    CHECK(cdata[0] == 2 && cdata[5] == 12);
    CHECK_INT(sgbd_mat_gemm_nn(c, a, b, 1, 0), 0);
    CHECK(cdata[0] == 0 && cdata[5] == 0);
}

static void test_mat_gemv_matches_naive(void)
{
    struct sgbd_rng rng;
    sgbd_rng_init(&rng, 2, SGBD_RNG_INIT);
    struct sgbd_mat a = random_view(7, 11, 5, &rng);
    float x[11], y[11], y0[11];

    for (int i = 0; i < 11; i++)
        x[i] = (float)i - 5, y[i] = y0[i] = (float)(i % 3);
    CHECK_INT(sgbd_mat_gemv_n(y, a, x, 2.0f, 0.5f), 0);
    for (size_t r = 0; r < 7; r++) {
        double s = 0;
        for (size_t c = 0; c < 11; c++)
            s += at(a, r, c) * x[c];
        CHECK_NEAR(y[r], 2 * s + 0.5 * y0[r], 1e-5);
    }
    for (int i = 0; i < 11; i++)
        y[i] = y0[i];
    CHECK_INT(sgbd_mat_gemv_t(y, a, x, -1.0f, 1.0f), 0);
    for (size_t c = 0; c < 11; c++) {
        double s = 0;
        for (size_t r = 0; r < 7; r++)
            s += at(a, r, c) * x[r];
        CHECK_NEAR(y[c], -s + y0[c], 1e-5);
    }
    free(a.data);
}

static void test_mat_alloc_is_aligned_zeroed_and_released(void)
{
    struct sgbd_mat m;

    CHECK_INT(sgbd_mat_alloc(&m, 3, 5), 0);
    CHECK(((uintptr_t)m.data % 64) == 0);
    CHECK(m.rows == 3 && m.cols == 5 && m.stride == 5);
    for (int i = 0; i < 15; i++)
        CHECK(m.data[i] == 0.0f);
    sgbd_mat_release(&m);
    CHECK(m.data == NULL && m.rows == 0);
    sgbd_mat_release(&m);
    sgbd_mat_release(NULL);
    CHECK_INT(sgbd_mat_alloc(&m, SIZE_MAX / 2, 4), -ENOMEM);
}

static void test_mat_vector_helpers(void)
{
    float x[5] = {1, 2, 3, 4, 5}, y[5] = {1, 1, 1, 1, 1};

    sgbd_mat_axpy(5, 2.0f, x, y);
    CHECK(y[0] == 3 && y[4] == 11);
    sgbd_mat_scale(5, 0.5f, y);
    CHECK(y[0] == 1.5f && y[4] == 5.5f);
    CHECK_NEAR(sgbd_mat_dot(5, x, x), 55, 0);

    /* Double accumulation keeps what float accumulation drops. */
    size_t n = 1 << 20;
    float *big = malloc(n * sizeof(float)), *one = malloc(n * sizeof(float));
    CHECK(big && one);
    for (size_t i = 0; i < n; i++)
        big[i] = 1.0f, one[i] = 1.0f;
    big[0] = 1e8f;
    CHECK_NEAR(sgbd_mat_dot(n, big, one), 1e8 + (double)(n - 1), 0);
    free(big), free(one);
}

static void test_mat_row_norms_and_normalize(void)
{
    float d[6] = {3, 4, 0, 0, 0, 0};
    float norms[3];
    struct sgbd_mat m = sgbd_mat_view(d, 3, 2);

    sgbd_mat_row_norms(m, norms);
    CHECK(norms[0] == 5.0f && norms[1] == 0.0f);
    sgbd_mat_normalize_rows(m, 1e-12);
    CHECK_NEAR(d[0], 0.6, 1e-7);
    CHECK_NEAR(d[1], 0.8, 1e-7);
    CHECK(d[2] == 0.0f && d[3] == 0.0f); /* zero row stays zero, no NaN */
}

static void test_mat_set_threads(void)
{
    CHECK_INT(sgbd_mat_set_threads(2), 0);
    CHECK_INT(sgbd_parallel_threads(), 2);
    CHECK_INT(sgbd_mat_set_threads(-3), SGBD_E_LIMIT);
    CHECK_INT(sgbd_mat_set_threads(1), 0);
}

/* Products large enough to be cut across the pool give the same bits on
 * one thread and on three, whichever dimension is cut. */
static void test_mat_gemm_same_bits_on_any_thread_count(void)
{
    const size_t shapes[][3] = {{300, 200, 120}, {40, 900, 300}};
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, 21, SGBD_RNG_SYNTH);
    for (int s = 0; s < 2; s++) {
        size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        struct sgbd_mat a, at, b, bt, c1, c3;

        CHECK_INT(sgbd_mat_alloc(&a, m, k), 0);
        CHECK_INT(sgbd_mat_alloc(&at, k, m), 0);
        CHECK_INT(sgbd_mat_alloc(&b, k, n), 0);
        CHECK_INT(sgbd_mat_alloc(&bt, n, k), 0);
        CHECK_INT(sgbd_mat_alloc(&c1, m, n), 0);
        CHECK_INT(sgbd_mat_alloc(&c3, m, n), 0);
        for (size_t i = 0; i < m * k; i++)
            a.data[i] = at.data[i] = (float)sgbd_rng_normal(&rng);
        for (size_t i = 0; i < k * n; i++)
            b.data[i] = bt.data[i] = (float)sgbd_rng_normal(&rng);
        for (int op = 0; op < 3; op++) {
            for (int t = 1; t <= 3; t += 2) {
                struct sgbd_mat c = t == 1 ? c1 : c3;
                CHECK_INT(sgbd_mat_set_threads(t), 0);
                for (size_t i = 0; i < m * n; i++)
                    c.data[i] = 0.5f;
                CHECK_INT(op == 0   ? sgbd_mat_gemm_nn(c, a, b, 1.5f, 1.0f)
                          : op == 1 ? sgbd_mat_gemm_nt(c, a, bt, 1.5f, 1.0f)
                                    : sgbd_mat_gemm_tn(c, at, b, 1.5f, 1.0f),
                          0);
            }
            CHECK(memcmp(c1.data, c3.data, m * n * sizeof(float)) == 0);
        }
        sgbd_mat_release(&a), sgbd_mat_release(&at);
        sgbd_mat_release(&b), sgbd_mat_release(&bt);
        sgbd_mat_release(&c1), sgbd_mat_release(&c3);
    }
    sgbd_mat_set_threads(0);
}

int main(void)
{
    RUN(test_mat_gemm_patterns_match_naive);
    RUN(test_mat_gemm_rejects_wrong_shapes);
    RUN(test_mat_gemm_empty_inner_scales_c);
    RUN(test_mat_gemv_matches_naive);
    RUN(test_mat_alloc_is_aligned_zeroed_and_released);
    RUN(test_mat_vector_helpers);
    RUN(test_mat_row_norms_and_normalize);
    RUN(test_mat_set_threads);
    RUN(test_mat_gemm_same_bits_on_any_thread_count);
    sgbd_parallel_shutdown();
    return harness_finish();
}
