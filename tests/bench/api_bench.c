/*
 * api_bench.c - the cost of one recommendation request inside the daemon,
 * without HTTP: sgbd_api_begin + handle + finish on a synthetic snapshot,
 * next to the top-k engine alone on the same users.
 *
 *     api_bench [U,I,D[,SEED]] [REQUESTS] [K] [THREADS]
 *
 * Defaults: 19445,7050,64 (the Baby size), 20000 requests, k = 20, one
 * thread. The route is scored (the answer cache off); a last line times
 * repeats, every user asked for once first, answered by the cache. Users are drawn at random. Rounds alternate the two
 * measurements (engine, route, engine, route, ...) so both see the same
 * machine load; the figures are the best and median per-round means in
 * microseconds, and the route's share that is not the engine. With
 * THREADS > 1 the route is also driven from that many threads at once
 * (as HTTP workers would call it, so concurrent requests share scoring
 * passes): requests per second of wall time and CPU microseconds per
 * request.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/api.h"
#include "sgbd/config.h"
#include "sgbd/serve.h"
#include "sgbd/snapshot.h"
#include "sgbd/topk.h"

#define ROUNDS 7

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned long next_user(unsigned long long *rng, unsigned long n)
{
    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned long)((*rng >> 33) % n);
}

/* One GET /v1/users/u<user>/recommendations?k=K through the API. */
static int one_request(struct sgbd_api *api, unsigned long user,
                       const char *k)
{
    struct sgbd_api_request req = {0};
    struct sgbd_api_response resp = {0};
    char path[64];
    int status;

    snprintf(path, sizeof(path), "/v1/users/u%lu/recommendations", user);
    req.method = "GET";
    req.path = path;
    req.n_args = 1;
    req.args[0].key = "k";
    req.args[0].value = k;
    req.content_length = 0;
    if (!sgbd_api_begin(api, &req, &resp))
        sgbd_api_handle(api, &req, &resp);
    status = resp.status;
    sgbd_api_finish(api, &req, &resp, 1e-4);
    sgbd_api_response_clear(&resp);
    return status;
}

static double time_route(struct sgbd_api *api, unsigned long users, int n,
                         const char *k, unsigned long long *rng)
{
    double t0 = now_us();

    for (int r = 0; r < n; r++)
        if (one_request(api, next_user(rng, users), k) != 200)
            return -1;
    return (now_us() - t0) / n;
}

static double time_engine(const struct sgbd_snapshot *s, int n, size_t k,
                          unsigned long long *rng)
{
    struct sgbd_mat items = sgbd_mat_view(s->items, s->n_items, s->dim);
    size_t words = sgbd_bitset_words(s->n_items);
    uint64_t *bits = malloc(words * sizeof(uint64_t));
    uint32_t idx[1024];
    float score[1024];
    double t0 = now_us();

    for (int r = 0; r < n && bits; r++) {
        unsigned long u = next_user(rng, s->n_users);
        memcpy(bits, s->hidden, words * sizeof(uint64_t));
        for (uint64_t e = s->seen_ptr[u]; e < s->seen_ptr[u + 1]; e++)
            sgbd_bitset_set(bits, s->seen_items[e]);
        sgbd_topk_user_screened(s->users + u * s->dim, items,
                                &s->items_screen, k, bits, idx, score);
    }
    free(bits);
    return (now_us() - t0) / n;
}

struct driver {
    struct sgbd_api *api;
    unsigned long users;
    const char *k;
    int n;
    unsigned long long rng;
    int failed;
};

static void *drive(void *arg)
{
    struct driver *d = arg;

    for (int r = 0; r < d->n; r++)
        if (one_request(d->api, next_user(&d->rng, d->users), d->k) != 200)
            d->failed = 1;
    return NULL;
}

static double cpu_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

/* n requests spread over t threads: prints req/s and CPU us/request. */
static int concurrent(struct sgbd_api *api, unsigned long users, int n,
                      const char *k, int t)
{
    struct driver d[64];
    pthread_t th[64];
    double w0 = now_us(), c0 = cpu_us(), wall;
    int failed = 0;

    for (int j = 0; j < t; j++) {
        d[j] = (struct driver){api, users, k, n / t + 1, 1000 + (unsigned)j,
                               0};
        if (pthread_create(&th[j], NULL, drive, &d[j]) != 0)
            return -1;
    }
    for (int j = 0; j < t; j++) {
        pthread_join(th[j], NULL);
        failed |= d[j].failed;
    }
    wall = now_us() - w0;
    printf("%d threads: %.0f requests/s, %.1f CPU us per request\n", t,
           (double)t * (n / t + 1) / wall * 1e6,
           (cpu_us() - c0) / ((double)t * (n / t + 1)));
    return failed ? -1 : 0;
}

/* The same route for users asked for before: the answer cache at the
 * default size, every user requested once, then n random repeats. */
static int repeats(struct sgbd_snapshot_slot *slot, unsigned long users,
                   int n, const char *k)
{
    struct sgbd_config cfg;
    struct sgbd_api *api;
    struct sgbd_api_opts o = {&cfg, NULL, slot, NULL};
    unsigned long long rng = 7;
    double t;

    sgbd_config_defaults(&cfg);
    if (sgbd_api_new(&api, &o) != 0)
        return -1;
    for (unsigned long u = 0; u < users; u++)
        if (one_request(api, u, k) != 200)
            return -1;
    t = time_route(api, users, n, k, &rng);
    sgbd_api_free(api);
    if (t < 0)
        return -1;
    printf("repeats answered by the cache (%d MB): %.1f us\n",
           (int)cfg.result_cache_mb, t);
    return 0;
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "19445,7050,64";
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    const char *k = argc > 3 ? argv[3] : "20";
    int threads = argc > 4 ? atoi(argv[4]) : 1;
    struct sgbd_snapshot_slot *slot = NULL;
    struct sgbd_snapshot *s = NULL;
    struct sgbd_api *api = NULL;
    struct sgbd_config cfg;
    struct sgbd_api_opts o;
    unsigned long long rng = 42;
    double te[ROUNDS], tr[ROUNDS];

    if (n < 1 || atoi(k) < 1 || atoi(k) > 1024 || threads < 1 ||
        threads > 64) {
        fprintf(stderr, "usage: api_bench [U,I,D[,SEED]] [REQUESTS] [K] "
                "[THREADS]\n");
        return 2;
    }
    sgbd_config_defaults(&cfg);
    cfg.result_cache_mb = 0;    /* the scored route: no answer from cache */
    if (sgbd_serve_synthetic(&s, spec) != 0 ||
        sgbd_snapshot_slot_new(&slot) != 0)
        return 1;
    o = (struct sgbd_api_opts){&cfg, NULL, slot, NULL};
    if (sgbd_api_new(&api, &o) != 0)
        return 1;
    sgbd_snapshot_publish(slot, s, 0);
    time_route(api, s->n_users, n / 10 + 1, k, &rng);      /* warm up */
    for (int r = 0; r < ROUNDS; r++) {
        te[r] = time_engine(s, n / ROUNDS + 1, (size_t)atoi(k), &rng);
        tr[r] = time_route(api, s->n_users, n / ROUNDS + 1, k, &rng);
        if (tr[r] < 0) {
            fprintf(stderr, "api_bench: a request did not get 200\n");
            return 1;
        }
    }
    qsort(te, ROUNDS, sizeof(double), cmp_double);
    qsort(tr, ROUNDS, sizeof(double), cmp_double);
    printf("%s, k=%s: engine %.1f us (median %.1f), route %.1f us "
           "(median %.1f), route minus engine %.1f us\n", spec, k, te[0],
           te[ROUNDS / 2], tr[0], tr[ROUNDS / 2],
           tr[ROUNDS / 2] - te[ROUNDS / 2]);
    if (threads > 1 && (concurrent(api, s->n_users, n, k, 1) != 0 ||
                        concurrent(api, s->n_users, n, k, threads) != 0)) {
        fprintf(stderr, "api_bench: a request did not get 200\n");
        return 1;
    }
    if (repeats(slot, s->n_users, n, k) != 0)
        return 1;
    sgbd_api_free(api);
    sgbd_snapshot_slot_free(slot);
    return 0;
}
