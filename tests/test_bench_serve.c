/* test_bench_serve.c - the serving hot path: float text, selection, route. */
/* ctest: labels=bench timeout=600 */
/*
 * Label bench (not run by default). Each case checks that an optimised
 * piece of the request path gives exactly what its plain version gives,
 * then prints one "bench ..." line with its cost:
 *   - json_float: sgbd_json_float's text equals snprintf "%.9g" on random
 *     bit patterns, decimal ties and the ends of the fast path;
 *   - topk_select: the streaming selection (span skipping, counted
 *     estimates) equals a full sort under random push sizes, exclusions,
 *     NaN and ascending scores (thresholds that keep rising);
 *   - route: GET /v1/users/{id}/recommendations through sgbd_api_handle on
 *     a synthetic Baby-size snapshot (19,445 x 7,050 x 64, k = 20): every
 *     answer 200, the ranking that of sgbd_topk_user with the seen items
 *     excluded; cost per request next to the engine alone.
 * Run it alone, on a quiet machine:
 *     ctest -L bench -R bench_serve --output-on-failure -V
 * The HTTP-level benchmarks are tests/bench/serve.sh and
 * tests/bench/topk_faiss.py (docs/benchmarks.md).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "sgbd/api.h"
#include "sgbd/config.h"
#include "sgbd/json.h"
#include "sgbd/rng.h"
#include "sgbd/serve.h"
#include "sgbd/snapshot.h"
#include "sgbd/topk.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- json_float ---- */

/* Mismatches of n floats written in one array against snprintf. */
static long float_batch(const float *v, size_t n)
{
    struct sgbd_json w;
    char *text, *p, want[48];
    size_t len;
    long bad = 0;

    sgbd_json_init(&w);
    sgbd_json_begin_array(&w);
    for (size_t i = 0; i < n; i++)
        sgbd_json_float(&w, v[i]);
    sgbd_json_end(&w);
    text = sgbd_json_take(&w, &len);
    if (!text)
        return (long)n;
    p = text + 1;
    for (size_t i = 0; i < n; i++) {
        char *end = p + strcspn(p, ",]");
        *end = '\0';
        if (isfinite(v[i]))
            snprintf(want, sizeof(want), "%.9g", (double)v[i]);
        else
            snprintf(want, sizeof(want), "null");
        if (strcmp(p, want) != 0 && bad++ < 5)
            fprintf(stderr, "  %a: wrote %s, printf %s\n", v[i], p, want);
        p = end + 1;
    }
    free(text);
    return bad;
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof(f));
    return f;
}

static void test_bench_serve_json_float_matches_printf(void)
{
    enum { BATCH = 1000 };
    static float v[BATCH];
    struct sgbd_rng rng;
    long bad = 0, total = 0;
    size_t n = 0;
    uint32_t tie_base;
    double t0, t_ours, t_printf;
    char buf[48];

#define PUSH(x)                                                             \
    do {                                                                    \
        v[n++] = (x);                                                       \
        if (n == BATCH) {                                                   \
            bad += float_batch(v, n);                                       \
            total += (long)n;                                               \
            n = 0;                                                          \
        }                                                                   \
    } while (0)

    sgbd_rng_init(&rng, 5, SGBD_RNG_SYNTH);
    for (int i = 0; i < 2000000; i++)
        PUSH(from_bits((uint32_t)sgbd_rng_below(&rng, 1ull << 32)));
    /* Around every power of ten (where the exponent estimate turns). */
    for (int x = -45; x <= 38; x++) {
        float c = (float)pow(10, x);
        uint32_t b;
        memcpy(&b, &c, sizeof(b));
        for (int d = -50; d <= 50; d++)
            PUSH(from_bits(b + (uint32_t)d));
    }
    /* [2^20, 2^21): multiples of 1/8, ten digits, ties to even. */
    tie_base = 0x49800000u;
    for (uint32_t b = tie_base; b < tie_base + (1u << 23); b += 5)
        PUSH(from_bits(b));
    {
        const float edges[] = {0.0f, -0.0f, NAN, INFINITY, 1e-20f, 1e-19f,
                               3.4e38f, 2e37f, 1.4e-45f, 0.5f, -123456.789f};
        for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
            PUSH(edges[i]);
    }
    bad += float_batch(v, n);
    total += (long)n;
    CHECK_INT(bad, 0);

    for (int i = 0; i < BATCH; i++)
        v[i] = (float)(sgbd_rng_uniform(&rng) * 0.8 - 0.1);
    t0 = now_s();
    for (int r = 0; r < 200; r++) {
        struct sgbd_json w;
        size_t len;
        sgbd_json_init(&w);
        sgbd_json_begin_array(&w);
        for (int i = 0; i < BATCH; i++)
            sgbd_json_float(&w, v[i]);
        sgbd_json_end(&w);
        free(sgbd_json_take(&w, &len));
    }
    t_ours = (now_s() - t0) / (200.0 * BATCH);
    t0 = now_s();
    for (int r = 0; r < 200; r++)
        for (int i = 0; i < BATCH; i++)
            if (snprintf(buf, sizeof(buf), "%.9g", (double)v[i]) <= 0)
                bad++;
    t_printf = (now_s() - t0) / (200.0 * BATCH);
    printf("bench json_float values_checked=%ld ns_per_float=%.1f "
           "snprintf_ns=%.1f\n", total, t_ours * 1e9, t_printf * 1e9);
#undef PUSH
}

/* ---- topk_select ---- */

struct ranked {
    float s;
    uint32_t i;
};

static int cmp_ranked(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;

    if (x->s != y->s)
        return x->s < y->s ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

/* The k best eligible (not excluded, not NaN) of s by a full sort. */
static size_t reference(const float *s, size_t n, size_t k,
                        const uint64_t *ex, struct ranked *out)
{
    struct ranked *all = malloc((n + 1) * sizeof(*all));
    size_t m = 0;

    for (size_t i = 0; all && i < n; i++)
        if (!isnan(s[i]) && !(ex && sgbd_bitset_test(ex, i)))
            all[m++] = (struct ranked){s[i] + 0.0f, (uint32_t)i};
    qsort(all, m, sizeof(*all), cmp_ranked);
    m = m < k ? m : k;
    if (all)
        memcpy(out, all, m * sizeof(*out));
    free(all);
    return m;
}

static float score_of(struct sgbd_rng *rng, int mode, size_t i, size_t n)
{
    switch (mode) {
    case 0:
        return (float)sgbd_rng_normal(rng);
    case 1:                                   /* many ties */
        return (float)sgbd_rng_below(rng, 40);
    case 2:                                   /* ascending */
        return (float)i / (float)n;
    default:                                  /* NaN here and there */
        return sgbd_rng_below(rng, 30) == 0 ? NAN
                                            : (float)sgbd_rng_uniform(rng);
    }
}

/* One case: push s in random blocks (or all at once), compare. */
static int select_case(struct sgbd_rng *rng, const float *s, size_t n,
                       size_t k, const uint64_t *ex, int streamed)
{
    struct ranked *want = malloc((k + 1) * sizeof(*want));
    uint32_t *idx = malloc((k + 1) * sizeof(uint32_t));
    float *sc = malloc((k + 1) * sizeof(float));
    struct sgbd_topk t;
    size_t m, got;
    int same = want && idx && sc && sgbd_topk_init(&t, k) == 0;

    for (size_t i0 = 0; same && i0 < n;) {
        size_t len = streamed ? 1 + sgbd_rng_below(rng, 6000) : n;
        len = len < n - i0 ? len : n - i0;
        sgbd_topk_push(&t, s + i0, len, i0, ex);
        i0 += len;
    }
    if (same) {
        got = sgbd_topk_finish(&t, idx, sc);
        m = reference(s, n, k, ex, want);
        same = got == m;
        for (size_t r = 0; same && r < m; r++)
            same = idx[r] == want[r].i && sc[r] == want[r].s;
        sgbd_topk_deinit(&t);
    }
    free(want);
    free(idx);
    free(sc);
    return same;
}

static void test_bench_serve_topk_select_matches_sort(void)
{
    const size_t ks[] = {1, 5, 20, 50, 300};
    struct sgbd_rng rng;
    int cases = 0, bad = 0;
    double t0, per;
    uint32_t idx[20];
    float sc[20];

    sgbd_rng_init(&rng, 17, SGBD_RNG_SYNTH);
    for (int mode = 0; mode < 4; mode++)
        for (size_t n = 1; n < 70000; n = n * 4 + 13)
            for (int ki = 0; ki < 5; ki++) {
                float *s = malloc(n * sizeof(float));
                uint64_t *ex = sgbd_bitset_new(n);
                CHECK(s && ex);
                if (!s || !ex)
                    return;
                for (size_t i = 0; i < n; i++)
                    s[i] = score_of(&rng, mode, i, n);
                for (size_t r = 0; r < n / 9; r++)
                    sgbd_bitset_set(ex, sgbd_rng_below(&rng, n));
                for (int e = 0; e < 4; e++, cases++)
                    bad += !select_case(&rng, s, n, ks[ki],
                                        e & 1 ? ex : NULL, e >> 1);
                free(s);
                sgbd_bitset_free(ex);
            }
    CHECK_INT(bad, 0);

    float *s = malloc(63000 * sizeof(float));
    CHECK(s);
    if (!s)
        return;
    for (size_t i = 0; i < 63000; i++)
        s[i] = (float)sgbd_rng_normal(&rng);
    t0 = now_s();
    for (int r = 0; r < 300; r++)
        CHECK(sgbd_topk_select(s, 63000, 20, NULL, idx, sc) == 20);
    per = (now_s() - t0) / (300.0 * 63000);
    printf("bench topk_select cases=%d n=63000 k=20 ns_per_score=%.3f\n",
           cases, per * 1e9);
    free(s);
}

/* ---- route ---- */

static int request(struct sgbd_api *api, const char *path,
                   struct sgbd_api_response *resp)
{
    struct sgbd_api_request req = {0};

    req.method = "GET";
    req.path = path;
    req.n_args = 1;
    req.args[0].key = "k";
    req.args[0].value = "20";
    if (!sgbd_api_begin(api, &req, resp))
        sgbd_api_handle(api, &req, resp);
    sgbd_api_finish(api, &req, resp, 1e-4);
    return resp->status;
}

/* Whether body ranks the items of the engine's answer for user u. */
static int same_ranking(const struct sgbd_snapshot *s, uint32_t u,
                        const char *body, size_t len)
{
    struct sgbd_mat items = sgbd_mat_view(s->items, s->n_items, s->dim);
    uint64_t *bits = sgbd_bitset_new(s->n_items);
    json_t *j = json_loadb(body, len, 0, NULL), *arr;
    uint32_t idx[20];
    float sc[20];
    int n, same;

    for (uint64_t e = s->seen_ptr[u]; bits && e < s->seen_ptr[u + 1]; e++)
        sgbd_bitset_set(bits, s->seen_items[e]);
    n = bits ? sgbd_topk_user(s->users + (size_t)u * s->dim, items, 20,
                              bits, idx, sc)
             : -1;
    arr = json_object_get(j, "items");
    same = n > 0 && json_array_size(arr) == (size_t)n;
    for (int r = 0; same && r < n; r++) {
        json_t *it = json_array_get(arr, (size_t)r);
        const char *id = json_string_value(json_object_get(it, "item_id"));
        float got = (float)json_number_value(json_object_get(it, "score"));
        same = id && strcmp(id, sgbd_snapshot_item_id(s, idx[r])) == 0 &&
               got == sc[r];
    }
    json_decref(j);
    sgbd_bitset_free(bits);
    return same;
}

static void test_bench_serve_route_cost(void)
{
    struct sgbd_snapshot_slot *slot = NULL;
    struct sgbd_snapshot *s = NULL;
    struct sgbd_api *api = NULL;
    struct sgbd_config cfg;
    struct sgbd_api_opts o;
    struct sgbd_rng rng;
    int bad = 0, n = 3000;
    double t0, route, engine;

    sgbd_config_defaults(&cfg);
    cfg.result_cache_mb = 0;    /* every request scored */
    CHECK_INT(sgbd_serve_synthetic(&s, "19445,7050,64,3"), 0);
    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    o = (struct sgbd_api_opts){&cfg, NULL, slot, NULL};
    CHECK_INT(sgbd_api_new(&api, &o), 0);
    if (!s || !slot || !api)
        return;
    CHECK_INT(sgbd_snapshot_publish(slot, s, 0), 0);
    sgbd_rng_init(&rng, 3, SGBD_RNG_SYNTH);
    for (int r = 0; r < 200; r++) {
        struct sgbd_api_response resp = {0};
        uint32_t u = (uint32_t)sgbd_rng_below(&rng, s->n_users);
        char path[64];
        snprintf(path, sizeof(path), "/v1/users/u%u/recommendations", u);
        bad += request(api, path, &resp) != 200 ||
               !same_ranking(s, u, resp.body, resp.len);
        sgbd_api_response_clear(&resp);
    }
    CHECK_INT(bad, 0);

    t0 = now_s();
    for (int r = 0; r < n; r++) {
        struct sgbd_api_response resp = {0};
        char path[64];
        snprintf(path, sizeof(path), "/v1/users/u%u/recommendations",
                 (unsigned)sgbd_rng_below(&rng, s->n_users));
        bad += request(api, path, &resp) != 200;
        sgbd_api_response_clear(&resp);
    }
    route = (now_s() - t0) / n;
    t0 = now_s();
    for (int r = 0; r < n; r++) {
        struct sgbd_mat items = sgbd_mat_view(s->items, s->n_items, s->dim);
        uint32_t idx[20];
        float sc[20];
        size_t u = sgbd_rng_below(&rng, s->n_users);
        bad += sgbd_topk_user(s->users + u * s->dim, items, 20, s->hidden,
                              idx, sc) != 20;
    }
    engine = (now_s() - t0) / n;
    CHECK_INT(bad, 0);
    printf("bench route items=7050 d=64 k=20 route_us=%.1f engine_us=%.1f "
           "rest_us=%.1f\n", route * 1e6, engine * 1e6,
           (route - engine) * 1e6);
    sgbd_api_free(api);
    sgbd_snapshot_slot_free(slot);
}

int main(void)
{
    RUN(test_bench_serve_json_float_matches_printf);
    RUN(test_bench_serve_topk_select_matches_sort);
    RUN(test_bench_serve_route_cost);
    return harness_finish();
}
