/* test_topk.c - selection against a full sort, ties, exclusion, scoring. */
/* ctest: labels=unit timeout=60 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/mat.h"
#include "sgbd/rng.h"
#include "sgbd/topk.h"

struct ranked {
    double score;
    uint32_t idx;
};

/* Reference order: higher score first, then lower index. */
static int by_rank(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;

    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Full sort of the eligible scores (not excluded, not NaN). */
static size_t reference_topk(const float *s, size_t n, size_t k,
                             const uint64_t *excl, struct ranked *out)
{
    struct ranked *all = malloc((n ? n : 1) * sizeof(*all));
    size_t m = 0;

    for (size_t i = 0; all && i < n; i++)
        if (s[i] == s[i] && !(excl && sgbd_bitset_test(excl, i)))
            all[m].score = s[i], all[m++].idx = (uint32_t)i;
    qsort(all, m, sizeof(*all), by_rank);
    m = m < k ? m : k;
    memcpy(out, all, m * sizeof(*out));
    free(all);
    return m;
}

/* Scores from few distinct values, so ties are everywhere. */
static void coarse_scores(float *s, size_t n, int levels,
                          struct sgbd_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        s[i] = (float)sgbd_rng_below(rng, (uint64_t)levels) - levels / 2;
}

static int same_as_reference(const float *s, size_t n, size_t k,
                             const uint64_t *excl)
{
    uint32_t *idx = malloc((k + 1) * sizeof(*idx));
    float *sc = malloc((k + 1) * sizeof(*sc));
    struct ranked *want = malloc((k + 1) * sizeof(*want));
    int got = sgbd_topk_select(s, n, k, excl, idx, sc), ok = 1;
    size_t m = reference_topk(s, n, k, excl, want);

    ok = got == (int)m;
    for (size_t r = 0; ok && r < m; r++)
        ok = idx[r] == want[r].idx && sc[r] == (float)want[r].score;
    free(idx), free(sc), free(want);
    return ok;
}

static void test_topk_matches_full_sort(void)
{
    struct sgbd_rng rng;
    const size_t sizes[] = {1, 15, 16, 17, 255, 1000, 7050, 20000};
    const size_t ks[] = {1, 5, 10, 50, 100, 300, 1000};

    sgbd_rng_init(&rng, 11, SGBD_RNG_SYNTH);
    for (int a = 0; a < 8; a++) {
        float *s = malloc(sizes[a] * sizeof(float));
        for (int b = 0; b < 7; b++) {
            for (size_t i = 0; i < sizes[a]; i++)
                s[i] = (float)sgbd_rng_normal(&rng);
            CHECK(same_as_reference(s, sizes[a], ks[b], NULL));
            coarse_scores(s, sizes[a], 7, &rng);
            CHECK(same_as_reference(s, sizes[a], ks[b], NULL));
        }
        free(s);
    }
}

static void test_topk_ties_go_to_lower_index(void)
{
    float s[6] = {1, 3, 3, 2, 3, -0.0f};
    uint32_t idx[6];
    float sc[6];

    CHECK_INT(sgbd_topk_select(s, 6, 3, NULL, idx, sc), 3);
    CHECK(idx[0] == 1 && idx[1] == 2 && idx[2] == 4);
    /* -0 ties with +0: the lower index wins. */
    float z[3] = {-0.0f, 0.0f, -1};
    CHECK_INT(sgbd_topk_select(z, 3, 1, NULL, idx, sc), 1);
    CHECK(idx[0] == 0);
    float z2[3] = {0.0f, -0.0f, -1};
    CHECK_INT(sgbd_topk_select(z2, 3, 1, NULL, idx, sc), 1);
    CHECK(idx[0] == 0);
}

static void test_topk_excludes_items_and_nan(void)
{
    struct sgbd_rng rng;
    size_t n = 5000;
    float *s = malloc(n * sizeof(float));
    uint64_t *ex = sgbd_bitset_new(n);

    CHECK(s && ex);
    sgbd_rng_init(&rng, 12, SGBD_RNG_SYNTH);
    for (size_t i = 0; i < n; i++)
        s[i] = (float)sgbd_rng_normal(&rng);
    /* Exclude the 30 best and a random spread; NaN a few others. */
    uint32_t idx[30];
    float sc[30];
    CHECK_INT(sgbd_topk_select(s, n, 30, NULL, idx, sc), 30);
    for (int r = 0; r < 30; r++)
        sgbd_bitset_set(ex, idx[r]);
    for (int r = 0; r < 200; r++)
        sgbd_bitset_set(ex, sgbd_rng_below(&rng, n));
    for (int r = 0; r < 20; r++)
        s[sgbd_rng_below(&rng, n)] = NAN;
    CHECK(same_as_reference(s, n, 50, ex));
    CHECK(same_as_reference(s, n, 10, ex));
    free(s);
    sgbd_bitset_free(ex);
}

static void test_topk_k_above_available(void)
{
    float s[5] = {1, NAN, 3, 2, 0};
    uint64_t ex[1] = {1u << 3};
    uint32_t idx[600];
    float sc[600];

    CHECK_INT(sgbd_topk_select(s, 5, 10, ex, idx, sc), 3);
    CHECK(idx[0] == 2 && idx[1] == 0 && idx[2] == 4);
    CHECK_INT(sgbd_topk_select(s, 5, 0, NULL, idx, sc), 0);
    CHECK_INT(sgbd_topk_select(s, 0, 3, NULL, idx, sc), 0);
    /* Above the inline buffer: allocated path, same answer. */
    CHECK_INT(sgbd_topk_select(s, 5, 600, ex, idx, sc), 3);
    CHECK(idx[0] == 2 && idx[2] == 4);
}

static void test_topk_streaming_blocks_in_any_order(void)
{
    struct sgbd_rng rng;
    size_t n = 3000, k = 40;
    float *s = malloc(n * sizeof(float));
    uint64_t *ex = sgbd_bitset_new(n);
    uint32_t idx[40], want_idx[40];
    float sc[40], want_sc[40];
    struct sgbd_topk t;

    CHECK(s && ex);
    sgbd_rng_init(&rng, 13, SGBD_RNG_SYNTH);
    coarse_scores(s, n, 50, &rng);
    for (int r = 0; r < 100; r++)
        sgbd_bitset_set(ex, sgbd_rng_below(&rng, n));
    CHECK_INT(sgbd_topk_select(s, n, k, ex, want_idx, want_sc), 40);
    CHECK_INT(sgbd_topk_init(&t, k), 0);
    /* Back to front, in uneven blocks. */
    for (size_t end = n; end > 0;) {
        size_t len = end < 333 ? end : 333;
        sgbd_topk_push(&t, s + end - len, len, end - len, ex);
        end -= len;
    }
    CHECK_INT(sgbd_topk_finish(&t, idx, sc), 40);
    sgbd_topk_deinit(&t);
    sgbd_topk_deinit(&t);
    CHECK(memcmp(idx, want_idx, sizeof(idx)) == 0);
    CHECK(memcmp(sc, want_sc, sizeof(sc)) == 0);
    free(s);
    sgbd_bitset_free(ex);
}

static int by_u64_desc(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? 1 : a > b ? -1 : 0;
}

static void test_topk_keys_selects_and_sorts(void)
{
    struct sgbd_rng rng;
    uint64_t keys[1000], ref[1000];

    sgbd_rng_init(&rng, 16, SGBD_RNG_SYNTH);
    for (int n = 0; n <= 1000; n += 111) {
        for (int i = 0; i < n; i++)
            keys[i] = ref[i] = sgbd_rng_u64(&rng) >> 8 << 8 | (uint64_t)i;
        qsort(ref, (size_t)n, sizeof(*ref), by_u64_desc);
        size_t k = (size_t)n / 3 + 1;
        sgbd_topk_keys(keys, (size_t)n, k);
        CHECK(memcmp(keys, ref, (k < (size_t)n ? k : (size_t)n) * 8) == 0);
    }
}

static void test_topk_bitset_helpers(void)
{
    uint64_t *b = sgbd_bitset_new(130), *c = sgbd_bitset_new(130);

    CHECK(b && c);
    CHECK_INT(sgbd_bitset_words(130), 3);
    sgbd_bitset_set(b, 0), sgbd_bitset_set(b, 64), sgbd_bitset_set(b, 129);
    sgbd_bitset_set(c, 5), sgbd_bitset_set(c, 64);
    CHECK(sgbd_bitset_test(b, 129) && !sgbd_bitset_test(b, 128));
    CHECK_INT(sgbd_bitset_count(b, 130), 3);
    CHECK_INT(sgbd_bitset_count(b, 129), 2);
    sgbd_bitset_or(b, c, 130);
    CHECK_INT(sgbd_bitset_count(b, 130), 4);
    sgbd_bitset_clear(b, 64);
    CHECK(!sgbd_bitset_test(b, 64));
    sgbd_bitset_free(b), sgbd_bitset_free(c);
    sgbd_bitset_free(NULL);
}

/* Small integer embeddings: every dot product is exact in float. */
static void integer_fill(struct sgbd_mat m, struct sgbd_rng *rng)
{
    for (size_t r = 0; r < m.rows; r++)
        for (size_t c = 0; c < m.cols; c++)
            sgbd_mat_row(m, r)[c] = (float)sgbd_rng_below(rng, 7) - 3;
}

static void exact_scores(const float *u, struct sgbd_mat items, float *out)
{
    for (size_t i = 0; i < items.rows; i++) {
        double s = 0;
        for (size_t c = 0; c < items.cols; c++)
            s += (double)u[c] * sgbd_mat_row(items, i)[c];
        out[i] = (float)s;
    }
}

static void test_topk_user_matches_reference(void)
{
    const size_t widths[] = {64, 1, 20, 100};
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, 14, SGBD_RNG_SYNTH);
    for (int w = 0; w < 4; w++) {
        size_t n = 5000 + 17 * w, d = widths[w];
        struct sgbd_mat items, users;
        float *s = malloc(n * sizeof(float));
        uint64_t *ex = sgbd_bitset_new(n);
        uint32_t idx[50];
        float sc[50];
        struct ranked want[50];

        CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
        CHECK_INT(sgbd_mat_alloc(&users, 2, d), 0);
        integer_fill(items, &rng), integer_fill(users, &rng);
        for (int r = 0; r < 40; r++)
            sgbd_bitset_set(ex, sgbd_rng_below(&rng, n));
        exact_scores(users.data, items, s);
        size_t m = reference_topk(s, n, 50, ex, want);
        CHECK_INT(sgbd_topk_user(users.data, items, 50, ex, idx, sc),
                  (int)m);
        for (size_t r = 0; r < m; r++) {
            CHECK_INT(idx[r], want[r].idx);
            CHECK(sc[r] == (float)want[r].score);
        }
        sgbd_mat_release(&items), sgbd_mat_release(&users);
        free(s);
        sgbd_bitset_free(ex);
    }
}

static void test_topk_users_batch_equals_single(void)
{
    struct sgbd_rng rng;
    size_t n = 3000, d = 64, b = 9, k = 20;
    struct sgbd_mat items, users;
    uint32_t idx[9 * 20], one_idx[20];
    float sc[9 * 20], one_sc[20];
    size_t counts[9];
    uint64_t *ex = sgbd_bitset_new(n);
    const uint64_t *excl[9] = {NULL};

    CHECK(ex);
    sgbd_rng_init(&rng, 15, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    CHECK_INT(sgbd_mat_alloc(&users, b, d), 0);
    integer_fill(items, &rng), integer_fill(users, &rng);
    for (int r = 0; r < 100; r++)
        sgbd_bitset_set(ex, sgbd_rng_below(&rng, n));
    excl[3] = excl[4] = ex;
    CHECK_INT(sgbd_topk_users(users, items, k, excl, idx, sc, counts), 0);
    for (size_t u = 0; u < b; u++) {
        int got = sgbd_topk_user(sgbd_mat_row(users, u), items, k, excl[u],
                                 one_idx, one_sc);
        CHECK_INT(counts[u], got);
        CHECK(memcmp(idx + u * k, one_idx, k * sizeof(uint32_t)) == 0);
        CHECK(memcmp(sc + u * k, one_sc, k * sizeof(float)) == 0);
    }
    struct sgbd_mat narrow = {users.data, b, d - 1, d};
    CHECK_INT(sgbd_topk_users(narrow, items, k, NULL, idx, sc, counts),
              SGBD_E_SHAPE);
    sgbd_mat_release(&items), sgbd_mat_release(&users);
    sgbd_bitset_free(ex);
}

/* ---- screened scoring: bit for bit the plain scan ---------------------- */

/* The screen as a CPU with only one of its copies would have it:
 * which = 8 keeps the 8-bit copy, 16 the bfloat16 one (a view: the
 * original owns both). */
static struct sgbd_topk_screen screen_only(struct sgbd_topk_screen sc,
                                           int which)
{
    if (which == 8)
        sc.v = NULL;
    else
        memset(&sc.q8, 0, sizeof(sc.q8));
    return sc;
}

/* One user against items, screened and plain: the same count, ids and
 * score bits, from each copy of the screen on its own. */
static void check_screened(const float *u, struct sgbd_mat items, size_t k,
                           const uint64_t *ex)
{
    struct sgbd_topk_screen sc, part;
    uint32_t *want_idx = malloc(k * sizeof(uint32_t));
    uint32_t *got_idx = malloc(k * sizeof(uint32_t));
    float *want_sc = malloc(k * sizeof(float));
    float *got_sc = malloc(k * sizeof(float));

    CHECK_INT(sgbd_topk_screen_init_copies(&sc, items, SGBD_SCREEN_BF16 |
                                                        SGBD_SCREEN_8BIT),
              0);
    int want = sgbd_topk_user(u, items, k, ex, want_idx, want_sc);
    for (int which = 8; which <= 16; which += 8) {
        part = screen_only(sc, which);
        int got = sgbd_topk_user_screened(u, items, &part, k, ex, got_idx,
                                          got_sc);
        CHECK_INT(got, want);
        if (got == want && want > 0) {
            CHECK(memcmp(got_idx, want_idx, (size_t)want * 4) == 0);
            CHECK(memcmp(got_sc, want_sc, (size_t)want * 4) == 0);
        }
    }
    sgbd_topk_screen_deinit(&sc);
    free(want_idx), free(got_idx), free(want_sc), free(got_sc);
}

static void normal_fill(struct sgbd_mat m, struct sgbd_rng *rng, double sd)
{
    for (size_t r = 0; r < m.rows; r++)
        for (size_t c = 0; c < m.cols; c++)
            sgbd_mat_row(m, r)[c] = (float)(sd * sgbd_rng_normal(rng));
}

static void test_topk_screened_equals_plain_scan(void)
{
    const size_t sizes[] = {3000, 20000, 63000};
    const size_t widths[] = {64, 100, 32}; /* 100: 25 quads of bytes */
    const size_t ks[] = {1, 20, 100, 300};
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, 16, SGBD_RNG_SYNTH);
    for (int a = 0; a < 3; a++) {
        size_t n = sizes[a], d = widths[a];
        struct sgbd_mat items, users;
        uint64_t *ex = sgbd_bitset_new(n);

        CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
        CHECK_INT(sgbd_mat_alloc(&users, 4, d), 0);
        normal_fill(items, &rng, 0.1), normal_fill(users, &rng, 1.0);
        for (size_t r = 0; r < n / 50; r++)
            sgbd_bitset_set(ex, sgbd_rng_below(&rng, n));
        for (int j = 0; j < 4; j++)
            for (size_t u = 0; u < users.rows; u++)
                check_screened(sgbd_mat_row(users, u), items, ks[j],
                               u % 2 ? ex : NULL);
        sgbd_mat_release(&items), sgbd_mat_release(&users);
        sgbd_bitset_free(ex);
    }
}

/*
 * Items that differ by far less than bfloat16 resolves: copies of one
 * vector scaled by 1 + j 1e-6, a tenth of them exact duplicates (ties go
 * to the lower index), shuffled by a little noise in one coordinate. The
 * screened scores tie or cross where the exact ones do not.
 */
static void test_topk_screened_near_ties(void)
{
    size_t n = 12000, d = 64, k = 50;
    struct sgbd_mat items;
    struct sgbd_rng rng;
    float base[64], u[64];

    sgbd_rng_init(&rng, 17, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    for (size_t c = 0; c < d; c++) {
        base[c] = (float)sgbd_rng_normal(&rng);
        u[c] = base[c] + 0.01f * (float)sgbd_rng_normal(&rng);
    }
    for (size_t i = 0; i < n; i++) {
        float *row = sgbd_mat_row(items, i);
        size_t j = i % 10 == 0 && i > 0 ? i - 1 : i;
        for (size_t c = 0; c < d; c++)
            row[c] = base[c] * (float)(1.0 + (double)j * 1e-6);
        row[j % d] += (float)(1e-4 * sgbd_rng_normal(&rng));
        if (i % 10 == 0 && i > 0)
            memcpy(row, sgbd_mat_row(items, i - 1), d * sizeof(float));
    }
    check_screened(u, items, k, NULL);
    check_screened(u, items, 1, NULL);
    for (size_t c = 0; c < d; c++)
        u[c] = -u[c]; /* the other end of the catalogue */
    check_screened(u, items, k, NULL);
    sgbd_mat_release(&items);
}

/* Values whose rounding would overflow are truncated, and the bound
 * widens to match. */
static void test_topk_screened_huge_and_tiny_values(void)
{
    size_t n = 4100, d = 32;
    struct sgbd_mat items;
    struct sgbd_rng rng;
    float u[32];

    sgbd_rng_init(&rng, 18, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < d; c++)
            sgbd_mat_row(items, i)[c] =
                (float)(3.0e38 * sgbd_rng_uniform(&rng)) +
                (c == 0 ? 3.4e38f - 3.0e38f : 0.0f);
    for (size_t c = 0; c < d; c++)
        u[c] = (float)(1e-39 * sgbd_rng_uniform(&rng));
    check_screened(u, items, 30, NULL);
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < d; c++)
            sgbd_mat_row(items, i)[c] = (float)(1e-40 * sgbd_rng_normal(&rng));
    for (size_t c = 0; c < d; c++)
        u[c] = (float)(1e30 * sgbd_rng_normal(&rng));
    check_screened(u, items, 30, NULL);
    sgbd_mat_release(&items);
}

/*
 * Columns the 8-bit copy scales apart: magnitudes from 1e-30 to 1e3, one
 * column all zero, one of subnormals, one whose single outlier leaves
 * the others a step or two of its scale, and items that differ by far
 * less than a step. The bound must hold for each, per column.
 */
static void test_topk_screened_column_scales(void)
{
    size_t n = 9000, d = 64;
    struct sgbd_mat items;
    struct sgbd_rng rng;
    float u[64];

    sgbd_rng_init(&rng, 20, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    for (size_t i = 0; i < n; i++) {
        float *row = sgbd_mat_row(items, i);
        for (size_t c = 0; c < d; c++)
            row[c] = (float)(sgbd_rng_normal(&rng) *
                             pow(10.0, (double)(c % 12) * 3.0 - 30.0));
        row[5] = 0.0f;
        row[6] = (float)(1e-41 * sgbd_rng_normal(&rng));
        row[7] = i == 4321 ? 1000.0f : (float)(0.1 * sgbd_rng_normal(&rng));
        if (i % 7 == 1) /* near twins of the item before */
            for (size_t c = 0; c < d; c++)
                row[c] = sgbd_mat_row(items, i - 1)[c] *
                         (1.0f + 1e-6f * (float)(c % 3));
    }
    for (size_t c = 0; c < d; c++)
        u[c] = (float)(sgbd_rng_normal(&rng) *
                       pow(10.0, 30.0 - (double)(c % 12) * 3.0));
    u[6] = 1e30f;
    check_screened(u, items, 20, NULL);
    check_screened(u, items, 1, NULL);
    for (size_t c = 0; c < d; c++)
        u[c] = c == 7 ? 1.0f : 1e-3f * u[c]; /* the outlier column leads */
    check_screened(u, items, 20, NULL);
    u[7] = 0.0f;
    check_screened(u, items, 50, NULL);
    sgbd_mat_release(&items);
}

/* A heavy-tailed value: Cauchy, capped well inside the float range. */
static double cauchy(struct sgbd_rng *rng)
{
    double x = tan(3.14159265358979 * (sgbd_rng_uniform(rng) - 0.5));

    return x > 1e6 ? 1e6 : x < -1e6 ? -1e6 : x;
}

/*
 * Random catalogues of the shapes that strain a per-column 8-bit scale:
 * each column a random magnitude over 30 orders, heavy tails, columns
 * rounded to a few levels (ties), duplicated items, random exclusions,
 * queries of random magnitudes; every answer must be the plain scan's.
 */
static void test_topk_screened_random_catalogues(void)
{
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, 21, SGBD_RNG_SYNTH);
    for (int trial = 0; trial < 24 && !harness_case_failed; trial++) {
        size_t n = 2048 + sgbd_rng_below(&rng, 3000);
        size_t d = trial % 3 == 0 ? 32 : 64, k = 1 + sgbd_rng_below(&rng, 60);
        struct sgbd_mat items;
        uint64_t *ex = sgbd_bitset_new(n);
        double scale[64];
        float u[64];

        CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
        for (size_t c = 0; c < d; c++)
            scale[c] = pow(10.0, 30.0 * sgbd_rng_uniform(&rng) - 15.0);
        for (size_t i = 0; i < n; i++) {
            float *row = sgbd_mat_row(items, i);
            for (size_t c = 0; c < d; c++) {
                double x = trial % 2 ? cauchy(&rng) : sgbd_rng_normal(&rng);
                if (c % 5 == (size_t)trial % 5)
                    x = round(x * 2.0) / 2.0; /* few levels: many ties */
                row[c] = (float)(x * scale[c] / 1e3);
            }
            if (i > 0 && sgbd_rng_below(&rng, 8) == 0)
                memcpy(row, sgbd_mat_row(items, i - 1), d * sizeof(float));
            if (sgbd_rng_below(&rng, 20) == 0)
                sgbd_bitset_set(ex, i);
        }
        for (size_t c = 0; c < d; c++)
            u[c] = (float)(sgbd_rng_normal(&rng) /
                           (scale[c] * pow(10.0, 4.0 * sgbd_rng_uniform(&rng))));
        check_screened(u, items, k, trial % 4 ? ex : NULL);
        sgbd_mat_release(&items);
        sgbd_bitset_free(ex);
    }
}

/*
 * The 8-bit bound at its tightest: every column's scale is 1 (an item of
 * -127s), the query all ones, and each rounding error lines up with it.
 * Twenty items of 1.5s (q = 2, half a step above) set the screen's K-th
 * score at 128; one item of 2.4999, then 1.4999s (q = 2, then 1s) scores
 * 0.99 more than them exactly but 63 less screened, as far below as the
 * bound allows. A bound short by a few percent loses it.
 */
static void test_topk_screened_worst_case_rounding(void)
{
    size_t n = 4096, d = 64, k = 20;
    struct sgbd_mat items;
    float u[64];

    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    for (size_t c = 0; c < d; c++) {
        u[c] = 1.0f;
        for (size_t j = 0; j < k; j++)
            sgbd_mat_row(items, 16 * j)[c] = 1.5f;
        sgbd_mat_row(items, 16 * k)[c] = c == 0 ? 2.4999f : 1.4999f;
        sgbd_mat_row(items, n - 1)[c] = -127.0f;
    }
    check_screened(u, items, k, NULL);
    sgbd_mat_release(&items);
}

/*
 * A batch screened at once: each user's result is the plain scan's, bit
 * for bit, across several groups of users (63,000 items: 16 a group),
 * with exclusions on some users and, mid-batch, a user with no finite
 * bound that the plain scan answers.
 */
static void check_users_screened(size_t n, size_t d, size_t B, size_t k,
                                 struct sgbd_rng *rng)
{
    struct sgbd_mat items, users;
    struct sgbd_topk_screen sc;
    uint64_t *ex = sgbd_bitset_new(n);
    const uint64_t **exs = calloc(B, sizeof(*exs));
    uint32_t *idx = malloc(B * k * sizeof(uint32_t)), want_idx[300];
    float *score = malloc(B * k * sizeof(float)), want_sc[300];
    size_t *cnt = malloc(B * sizeof(size_t));

    CHECK(k <= 300 && ex && exs && idx && score && cnt);
    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    CHECK_INT(sgbd_mat_alloc(&users, B, d), 0);
    normal_fill(items, rng, 0.1), normal_fill(users, rng, 1.0);
    sgbd_mat_row(users, B / 2)[1] = NAN;
    for (size_t r = 0; r < n / 50; r++)
        sgbd_bitset_set(ex, sgbd_rng_below(rng, n));
    for (size_t b = 0; b < B; b++)
        exs[b] = b % 3 ? ex : NULL;
    CHECK_INT(sgbd_topk_screen_init_copies(&sc, items, SGBD_SCREEN_BF16 |
                                                        SGBD_SCREEN_8BIT),
              0);
    for (int which = 0; which <= 16; which += 8) {
        /* both copies, then each alone */
        struct sgbd_topk_screen part = which ? screen_only(sc, which) : sc;

        CHECK_INT(sgbd_topk_users_screened(users, items, &part, k, exs, idx,
                                           score, cnt), 0);
        for (size_t b = 0; b < B; b++) {
            int want = sgbd_topk_user(sgbd_mat_row(users, b), items, k,
                                      exs[b], want_idx, want_sc);
            CHECK_INT(cnt[b], want);
            CHECK(memcmp(idx + b * k, want_idx, (size_t)want * 4) == 0);
            CHECK(memcmp(score + b * k, want_sc, (size_t)want * 4) == 0);
        }
    }
    sgbd_topk_screen_deinit(&sc);
    sgbd_mat_release(&items), sgbd_mat_release(&users);
    free(cnt), free(score), free(idx), free(exs);
    sgbd_bitset_free(ex);
}

static void test_topk_users_screened_equal_plain_scans(void)
{
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, 19, SGBD_RNG_SYNTH);
    check_users_screened(3000, 64, 70, 20, &rng);
    if (!harness_case_failed)
        check_users_screened(3000, 96, 5, 300, &rng);
    if (!harness_case_failed)
        check_users_screened(63000, 64, 40, 20, &rng);
    if (!harness_case_failed) /* k above I / 8: every user scanned */
        check_users_screened(2100, 32, 4, 280, &rng);
}

/* All but a few items excluded: fewer groups than k have an item left,
 * and the screened calls still give the plain scan's (short) answer. */
static void test_topk_screened_with_few_items_left(void)
{
    size_t n = 4000, d = 64, k = 20;
    struct sgbd_mat items, users;
    struct sgbd_topk_screen sc;
    struct sgbd_rng rng;
    uint64_t *ex = sgbd_bitset_new(n);
    const uint64_t *exs[2] = {ex, ex};
    uint32_t idx[2 * 20], want_idx[20];
    float score[2 * 20], want_sc[20];
    size_t cnt[2];

    sgbd_rng_init(&rng, 20, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&items, n, d), 0);
    CHECK_INT(sgbd_mat_alloc(&users, 2, d), 0);
    normal_fill(items, &rng, 0.1), normal_fill(users, &rng, 1.0);
    for (size_t i = 0; i < n; i++)
        if (i % 500 != 7)
            sgbd_bitset_set(ex, i);
    CHECK_INT(sgbd_topk_screen_init(&sc, items), 0);
    CHECK_INT(sgbd_topk_users_screened(users, items, &sc, k, exs, idx, score,
                                       cnt), 0);
    for (size_t b = 0; b < 2; b++) {
        int want = sgbd_topk_user(sgbd_mat_row(users, b), items, k, ex,
                                  want_idx, want_sc);
        CHECK_INT(want, 8);
        CHECK_INT(cnt[b], 8);
        CHECK(memcmp(idx + b * k, want_idx, 8 * 4) == 0);
        CHECK(memcmp(score + b * k, want_sc, 8 * 4) == 0);
        CHECK_INT(sgbd_topk_user_screened(sgbd_mat_row(users, b), items, &sc,
                                          k, ex, want_idx, want_sc), 8);
        CHECK(memcmp(idx + b * k, want_idx, 8 * 4) == 0);
    }
    sgbd_topk_screen_deinit(&sc);
    sgbd_mat_release(&items), sgbd_mat_release(&users);
    sgbd_bitset_free(ex);
}

static void test_topk_screen_rejects_bad_input(void)
{
    struct sgbd_mat items, other;
    struct sgbd_topk_screen sc;
    uint32_t idx[4];
    float s[4], u[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t n;

    CHECK_INT(sgbd_mat_alloc(&items, 3000, 8), 0);
    CHECK_INT(sgbd_mat_alloc(&other, 3001, 8), 0);
    sgbd_mat_row(items, 2999)[7] = INFINITY;
    CHECK_INT(sgbd_topk_screen_init(&sc, items), SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_SHAPE), "item 2999") != NULL);
    CHECK(sc.v == NULL);
    sgbd_topk_screen_deinit(&sc);
    sgbd_mat_row(items, 2999)[7] = 0.0f;
    CHECK_INT(sgbd_topk_screen_init(&sc, items), 0);
    /* 16-row blocks, in the copies this CPU screens with */
    CHECK(sgbd_topk_screen_bytes(&sc) >= (sc.v ? 3008 * 8 * 2u : 0) +
                                         (sc.q8.v ? 3008 * 8u : 0));
    CHECK_INT(sgbd_topk_user_screened(u, other, &sc, 4, NULL, idx, s),
              SGBD_E_SHAPE);
    CHECK_INT(sgbd_topk_user_screened(u, items, NULL, 4, NULL, idx, s),
              SGBD_E_SHAPE);
    CHECK_INT(sgbd_topk_users_screened(sgbd_mat_view(u, 1, 8), other, &sc,
                                       4, NULL, idx, s, &n), SGBD_E_SHAPE);
    CHECK_INT(sgbd_topk_users_screened(sgbd_mat_view(u, 1, 8), items, NULL,
                                       4, NULL, idx, s, &n), SGBD_E_SHAPE);
    u[3] = NAN; /* no finite bound: the plain scan answers */
    CHECK_INT(sgbd_topk_user_screened(u, items, &sc, 4, NULL, idx, s),
              sgbd_topk_user(u, items, 4, NULL, idx, s));
    sgbd_topk_screen_deinit(&sc);
    sgbd_topk_screen_deinit(NULL);
    sgbd_mat_release(&items), sgbd_mat_release(&other);
}

int main(void)
{
    RUN(test_topk_matches_full_sort);
    RUN(test_topk_ties_go_to_lower_index);
    RUN(test_topk_excludes_items_and_nan);
    RUN(test_topk_k_above_available);
    RUN(test_topk_streaming_blocks_in_any_order);
    RUN(test_topk_keys_selects_and_sorts);
    RUN(test_topk_bitset_helpers);
    RUN(test_topk_user_matches_reference);
    RUN(test_topk_users_batch_equals_single);
    RUN(test_topk_screened_equals_plain_scan);
    RUN(test_topk_screened_near_ties);
    RUN(test_topk_screened_huge_and_tiny_values);
    RUN(test_topk_screened_column_scales);
    RUN(test_topk_screened_worst_case_rounding);
    RUN(test_topk_screened_random_catalogues);
    RUN(test_topk_users_screened_equal_plain_scans);
    RUN(test_topk_screened_with_few_items_left);
    RUN(test_topk_screen_rejects_bad_input);
    return harness_finish();
}
