/* test_params.c - tensor layout, alignment and torch initialisers. */
/* ctest: labels=unit timeout=60 */
#include <stdint.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/params.h"

/* Mean, variance, min and max of n floats, in double. */
struct stats {
    double mean, var, min, max;
};

static struct stats stats_of(const float *x, size_t n)
{
    struct stats s = {0, 0, x[0], x[0]};
    for (size_t i = 0; i < n; i++) {
        s.mean += x[i];
        s.min = x[i] < s.min ? x[i] : s.min;
        s.max = x[i] > s.max ? x[i] : s.max;
    }
    s.mean /= (double)n;
    for (size_t i = 0; i < n; i++)
        s.var += (x[i] - s.mean) * (x[i] - s.mean);
    s.var /= (double)(n - 1);
    return s;
}

static void test_params_tensors_are_64_byte_aligned(void)
{
    struct sgbd_params p = {0};
    CHECK_INT(sgbd_params_add(&p, "a", 3, 5, SGBD_INIT_ZERO, 0, 0), 0);
    CHECK_INT(sgbd_params_add(&p, "b", 1, 1, SGBD_INIT_ZERO, 0, 0), 1);
    CHECK_INT(sgbd_params_add(&p, "c", 7, 9, SGBD_INIT_ZERO, 0, 0), 2);
    CHECK_INT(p.t[0].offset, 0);
    CHECK_INT(p.t[1].offset, 16);   /* 15 floats round up to 16 */
    CHECK_INT(p.t[2].offset, 32);
    CHECK_INT(p.n, 32 + 64);        /* 63 floats round up to 64 */

    float *a = sgbd_params_alloc_arena(&p);
    CHECK(a != NULL);
    for (int i = 0; i < p.n_tensors; i++) {
        struct sgbd_mat v = sgbd_params_view(&p, a, i);
        CHECK_INT((uintptr_t)v.data % 64, 0);
    }
    for (size_t i = 0; i < p.n; i++)
        CHECK(a[i] == 0.0f);
    sgbd_params_free_arena(a);
    sgbd_params_free_arena(NULL);
}

static void test_params_find_and_view(void)
{
    struct sgbd_params p = {0};
    CHECK_INT(sgbd_params_add(&p, "user_emb", 10, 4, SGBD_INIT_ZERO, 0, 0),
              0);
    CHECK_INT(sgbd_params_add(&p, "item_emb", 6, 4, SGBD_INIT_ZERO, 0, 0), 1);
    CHECK_INT(sgbd_params_find(&p, "item_emb"), 1);
    CHECK_INT(sgbd_params_find(&p, "user_emb"), 0);
    CHECK_INT(sgbd_params_find(&p, "nope"), SGBD_E_NOTFOUND);

    float *a = sgbd_params_alloc_arena(&p);
    CHECK(a != NULL);
    struct sgbd_mat v = sgbd_params_view(&p, a, 1);
    CHECK(v.data == a + p.t[1].offset);
    CHECK_INT(v.rows, 6);
    CHECK_INT(v.cols, 4);
    CHECK_INT(v.stride, 4);
    sgbd_params_free_arena(a);
}

static void test_params_rejects_bad_tensors_unchanged(void)
{
    struct sgbd_params p = {0};
    char name[SGBD_TENSOR_NAME + 1];

    CHECK_INT(sgbd_params_add(&p, "w", 2, 2, SGBD_INIT_ZERO, 0, 0), 0);
    size_t n = p.n;
    CHECK_INT(sgbd_params_add(&p, "w", 3, 3, SGBD_INIT_ZERO, 0, 0),
              SGBD_E_EXISTS);
    CHECK(strstr(sgbd_err_detail(SGBD_E_EXISTS), "\"w\"") != NULL);
    CHECK_INT(sgbd_params_add(&p, "", 3, 3, SGBD_INIT_ZERO, 0, 0),
              SGBD_E_LIMIT);
    memset(name, 'x', SGBD_TENSOR_NAME);
    name[SGBD_TENSOR_NAME] = '\0';
    CHECK_INT(sgbd_params_add(&p, name, 3, 3, SGBD_INIT_ZERO, 0, 0),
              SGBD_E_LIMIT);
    CHECK_INT(sgbd_params_add(&p, "e", 0, 3, SGBD_INIT_ZERO, 0, 0),
              SGBD_E_SHAPE);
    CHECK_INT(sgbd_params_add(&p, "big", SIZE_MAX / 2, 4, SGBD_INIT_ZERO, 0,
                              0), SGBD_E_LIMIT);
    CHECK_INT(p.n_tensors, 1);
    CHECK_INT(p.n, n);
}

static void test_params_layout_full_is_an_error(void)
{
    struct sgbd_params p = {0};
    char name[16];

    for (int i = 0; i < SGBD_MAX_TENSORS; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        CHECK_INT(sgbd_params_add(&p, name, 1, 1, SGBD_INIT_ZERO, 0, 0), i);
    }
    CHECK_INT(sgbd_params_add(&p, "extra", 1, 1, SGBD_INIT_ZERO, 0, 0),
              SGBD_E_LIMIT);
}

static void test_params_default_fans_follow_torch(void)
{
    struct sgbd_params p = {0};
    /* torch weight (out, in) = (rows, cols): fan_in = cols, fan_out = rows */
    CHECK_INT(sgbd_params_add(&p, "w", 256, 4096, SGBD_INIT_LINEAR, 0, 0), 0);
    CHECK_INT(p.t[0].fan_in, 4096);
    CHECK_INT(p.t[0].fan_out, 256);
    CHECK_INT(sgbd_params_add(&p, "pref", 100, 2, SGBD_INIT_XAVIER_NORMAL,
                              2, 100), 1);
    CHECK_INT(p.t[1].fan_in, 2);
    CHECK_INT(p.t[1].fan_out, 100);
}

/* Fill one big tensor and compare its moments with the distribution's:
 * mean 0 and variance within 3% (n = 200k: the standard error of the
 * variance estimate is well under 1%). */
static int init_matches(enum sgbd_init init, size_t rows, size_t cols,
                       size_t fan_in, size_t fan_out, double want_var,
                       double bound)
{
    struct sgbd_params p = {0};
    struct sgbd_rng rng;

    if (sgbd_params_add(&p, "pad", 1, 3, SGBD_INIT_ZERO, 0, 0) != 0 ||
        sgbd_params_add(&p, "w", rows, cols, init, fan_in, fan_out) != 1)
        return 0;
    float *a = sgbd_params_alloc_arena(&p);
    if (!a)
        return 0;
    sgbd_rng_init(&rng, 42, SGBD_RNG_INIT);
    a[3] = 7.0f; /* padding after "pad" must stay as it was */
    sgbd_params_init(&p, a, &rng);
    struct stats s = stats_of(a + p.t[1].offset, rows * cols);
    int ok = fabs(s.mean) < 4 * sqrt(want_var / (double)(rows * cols)) &&
             fabs(s.var / want_var - 1) < 0.03 && a[3] == 7.0f &&
             a[0] == 0.0f;
    if (bound > 0)
        ok = ok && s.min >= -bound && s.max <= bound &&
             s.max > 0.999 * bound && s.min < -0.999 * bound;
    if (!ok)
        fprintf(stderr, "  init %d: mean %g var %g (want %g) min %g max %g "
                "bound %g\n", (int)init, s.mean, s.var, want_var, s.min,
                s.max, bound);
    sgbd_params_free_arena(a);
    return ok;
}

static void test_params_xavier_uniform_statistics(void)
{
    /* (rows, cols) = (400, 500): s = sqrt(6 / 900), var = s^2 / 3 */
    double s = sqrt(6.0 / 900.0);
    CHECK(init_matches(SGBD_INIT_XAVIER_UNIFORM, 400, 500, 0, 0, s * s / 3,
                       s));
}

static void test_params_xavier_normal_statistics(void)
{
    /* fans (2, 100) as for a (U, 2, 1) tensor: var = 2 / 102 */
    CHECK(init_matches(SGBD_INIT_XAVIER_NORMAL, 100000, 2, 2, 100,
                       2.0 / 102.0, 0));
}

static void test_params_linear_default_statistics(void)
{
    /* nn.Linear(384, 256).weight: U(-1/sqrt(384), 1/sqrt(384)) */
    double b = 1.0 / sqrt(384.0);
    CHECK(init_matches(SGBD_INIT_LINEAR, 256, 384, 0, 0, b * b / 3, b));
}

static void test_params_linear_bias_uses_given_fan_in(void)
{
    double b = 1.0 / sqrt(64.0);
    CHECK(init_matches(SGBD_INIT_LINEAR, 1, 200000, 64, 1, b * b / 3, b));
}

static void test_params_init_is_reproducible(void)
{
    struct sgbd_params p = {0};
    struct sgbd_rng r1, r2;

    CHECK_INT(sgbd_params_add(&p, "a", 5, 7, SGBD_INIT_XAVIER_UNIFORM, 0, 0),
              0);
    CHECK_INT(sgbd_params_add(&p, "z", 3, 3, SGBD_INIT_ZERO, 0, 0), 1);
    float *a = sgbd_params_alloc_arena(&p), *b = sgbd_params_alloc_arena(&p);
    CHECK(a && b);
    memset(a, 0xff, p.n * sizeof(float)); /* ZERO must overwrite */
    sgbd_rng_init(&r1, 7, SGBD_RNG_INIT);
    sgbd_rng_init(&r2, 7, SGBD_RNG_INIT);
    sgbd_params_init(&p, a, &r1);
    sgbd_params_init(&p, b, &r2);
    CHECK(memcmp(a + p.t[0].offset, b + p.t[0].offset, 35 * 4) == 0);
    for (int i = 0; i < 9; i++)
        CHECK(a[p.t[1].offset + i] == 0.0f);
    sgbd_params_free_arena(a);
    sgbd_params_free_arena(b);
}

int main(void)
{
    RUN(test_params_tensors_are_64_byte_aligned);
    RUN(test_params_find_and_view);
    RUN(test_params_rejects_bad_tensors_unchanged);
    RUN(test_params_layout_full_is_an_error);
    RUN(test_params_default_fans_follow_torch);
    RUN(test_params_xavier_uniform_statistics);
    RUN(test_params_xavier_normal_statistics);
    RUN(test_params_linear_default_statistics);
    RUN(test_params_linear_bias_uses_given_fan_in);
    RUN(test_params_init_is_reproducible);
    return harness_finish();
}
