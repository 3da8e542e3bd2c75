/*
 * topk_bench.c - the top-k engine alone, timed next to a plain sgemv on the
 * same embeddings (tests/bench/topk_faiss.py drives it and adds FAISS).
 *
 *     topk_bench ITEMS.npy QUERIES.npy SEEN.npy K BATCH ROUNDS THREADS OUT.npy
 *
 * ITEMS (I, D) and QUERIES (Q, D) are float matrices; SEEN (S, 2) holds
 * (query row, item) pairs, the items each query must not get. Per query
 * the timed work is what the daemon does: a zeroed exclusion bitset, its
 * seen bits set, then sgbd_topk_user (single), sgbd_topk_user_screened
 * (screened: from the 8-bit copy where the CPU has one; screened_bf16:
 * from the bfloat16 copy alone), or, per BATCH queries, one
 * sgbd_topk_users call (batch) or one sgbd_topk_users_screened call
 * (screened batch, and screened_batch_bf16 from the bfloat16 copy). The baseline is sgbd_mat_gemv_n (OpenBLAS sgemv) of
 * items x query into a score buffer, nothing else. ROUNDS passes
 * over all queries, interleaved (sgemv, single, batch in each round) so
 * all three see the same machine load; each figure is the best and the
 * median of the per-round means, in microseconds per query. OpenBLAS runs
 * THREADS threads (the batch product); sgemv and single queries are
 * serial. OUT gets the single-query results (Q, K) as float indices (-1
 * where a query has fewer than K) for the comparison with FAISS; the
 * batch results are checked to equal them here.
 *
 * Prints one JSON object on stdout.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/err.h"
#include "sgbd/mat.h"
#include "sgbd/npy.h"
#include "sgbd/topk.h"

struct seen {
    size_t *ptr;                /* (Q + 1) */
    uint32_t *items;            /* (S) grouped by query */
};

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int load(const char *path, struct sgbd_mat *m)
{
    int rc = sgbd_npy_read(path, m, NULL);

    if (rc != 0)
        fprintf(stderr, "topk_bench: %s: %s\n", path, sgbd_err_detail(rc));
    return rc;
}

/* Group the (query, item) pairs of pairs by query (counting sort). */
static int seen_build(struct sgbd_mat pairs, size_t q, struct seen *s)
{
    size_t *fill;

    s->ptr = calloc(q + 1, sizeof(size_t));
    s->items = malloc((pairs.rows + 1) * sizeof(uint32_t));
    fill = calloc(q + 1, sizeof(size_t));
    if (!s->ptr || !s->items || !fill || pairs.cols != 2) {
        free(fill);
        return -1;
    }
    for (size_t r = 0; r < pairs.rows; r++)
        s->ptr[(size_t)sgbd_mat_row(pairs, r)[0] + 1]++;
    for (size_t u = 0; u < q; u++)
        s->ptr[u + 1] += s->ptr[u];
    for (size_t r = 0; r < pairs.rows; r++) {
        size_t u = (size_t)sgbd_mat_row(pairs, r)[0];
        s->items[s->ptr[u] + fill[u]++] = (uint32_t)sgbd_mat_row(pairs, r)[1];
    }
    free(fill);
    return 0;
}

/* The daemon's per-request exclusion: zeroed bitset plus seen bits. */
static void fill_bits(uint64_t *bits, size_t words, const struct seen *s,
                      size_t u)
{
    memset(bits, 0, words * sizeof(uint64_t));
    for (size_t e = s->ptr[u]; e < s->ptr[u + 1]; e++)
        sgbd_bitset_set(bits, s->items[e]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct run {
    struct sgbd_mat items, queries;
    struct seen seen;
    size_t k, batch, words;
    uint64_t *bits;             /* (batch, words) */
    float *scores;              /* (I) sgemv output */
    uint32_t *idx, *bidx, *sidx, *qidx, *hidx, *hbidx; /* (Q, K) single,
                    batch, screened, screened batch, bfloat16 single, batch */
    float *sc, *bsc, *ssc, *qsc, *hsc, *hbsc; /* (Q, K) */
    struct sgbd_topk_screen screen, bf16; /* bf16: a view, no 8-bit copy */
    size_t *bn;                 /* (batch) */
    double sink;
};

static double time_sgemv(struct run *r)
{
    double t0 = now_us();

    for (size_t u = 0; u < r->queries.rows; u++) {
        sgbd_mat_gemv_n(r->scores, r->items, sgbd_mat_row(r->queries, u),
                        1.0f, 0.0f);
        r->sink += r->scores[u % r->items.rows];
    }
    return (now_us() - t0) / (double)r->queries.rows;
}

/* Single queries: plain (screen NULL) or screened. */
static double time_single(struct run *r, const struct sgbd_topk_screen *screen,
                          uint32_t *idx, float *sc)
{
    double t0 = now_us();

    for (size_t u = 0; u < r->queries.rows; u++) {
        const float *q = sgbd_mat_row(r->queries, u);
        int n;
        fill_bits(r->bits, r->words, &r->seen, u);
        n = screen ? sgbd_topk_user_screened(q, r->items, screen, r->k,
                                             r->bits, idx + u * r->k,
                                             sc + u * r->k)
                   : sgbd_topk_user(q, r->items, r->k, r->bits,
                                    idx + u * r->k, sc + u * r->k);
        for (int j = n < 0 ? 0 : n; j < (int)r->k; j++)
            idx[u * r->k + (size_t)j] = UINT32_MAX;
    }
    return (now_us() - t0) / (double)r->queries.rows;
}

/* Batches of BATCH queries: sgemm blocks (screen NULL), or screened. */
static double time_batch(struct run *r, const struct sgbd_topk_screen *screen,
                         uint32_t *idx, float *sc)
{
    const uint64_t *ex[4096];
    double t0 = now_us();

    for (size_t u0 = 0; u0 < r->queries.rows; u0 += r->batch) {
        size_t b = r->queries.rows - u0 < r->batch ? r->queries.rows - u0
                                                    : r->batch;
        for (size_t j = 0; j < b; j++) {
            fill_bits(r->bits + j * r->words, r->words, &r->seen, u0 + j);
            ex[j] = r->bits + j * r->words;
        }
        struct sgbd_mat q = sgbd_mat_rows(r->queries, u0, b);
        int rc = screen
                     ? sgbd_topk_users_screened(q, r->items, screen, r->k,
                                                ex, idx + u0 * r->k,
                                                sc + u0 * r->k, r->bn)
                     : sgbd_topk_users(q, r->items, r->k, ex,
                                       idx + u0 * r->k, sc + u0 * r->k,
                                       r->bn);
        if (rc != 0)
            return -1;
        for (size_t j = 0; j < b; j++)
            for (size_t c = r->bn[j]; c < r->k; c++)
                idx[(u0 + j) * r->k + c] = UINT32_MAX;
    }
    return (now_us() - t0) / (double)r->queries.rows;
}

static void summary(const char *name, double *t, int n, int last)
{
    double best = t[0];

    for (int j = 1; j < n; j++)
        best = t[j] < best ? t[j] : best;
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    printf("  \"%s_us\": {\"best\": %.2f, \"median\": %.2f}%s\n", name, best,
           t[n / 2], last ? "" : ",");
}

/* Fraction of single-query results (ids) another path matches. */
static double agreement(const struct run *r, const uint32_t *other)
{
    size_t same = 0, all = r->queries.rows * r->k;

    for (size_t j = 0; j < all; j++)
        same += r->idx[j] == other[j];
    return (double)same / (double)all;
}

static int write_out(const char *path, const struct run *r)
{
    struct sgbd_mat o;
    int rc = sgbd_mat_alloc(&o, r->queries.rows, r->k);

    if (rc != 0)
        return rc;
    for (size_t j = 0; j < r->queries.rows * r->k; j++)
        o.data[j] = r->idx[j] == UINT32_MAX ? -1.0f : (float)r->idx[j];
    rc = sgbd_npy_write(path, o);
    sgbd_mat_release(&o);
    return rc;
}

static int setup(struct run *r, char **argv)
{
    struct sgbd_mat pairs;
    size_t q;

    if (load(argv[1], &r->items) || load(argv[2], &r->queries) ||
        load(argv[3], &pairs))
        return -1;
    q = r->queries.rows;
    r->k = strtoul(argv[4], NULL, 10);
    r->batch = strtoul(argv[5], NULL, 10);
    r->words = sgbd_bitset_words(r->items.rows);
    if (r->k == 0 || r->batch == 0 || r->batch > 4096 ||
        r->queries.cols != r->items.cols || seen_build(pairs, q, &r->seen))
        return -1;
    free(pairs.data);
    r->bits = malloc(r->batch * r->words * sizeof(uint64_t));
    r->scores = malloc(r->items.rows * sizeof(float));
    r->idx = malloc(q * r->k * sizeof(uint32_t));
    r->bidx = malloc(q * r->k * sizeof(uint32_t));
    r->sc = malloc(q * r->k * sizeof(float));
    r->bsc = malloc(q * r->k * sizeof(float));
    r->bn = malloc(r->batch * sizeof(size_t));
    r->sidx = malloc(q * r->k * sizeof(uint32_t));
    r->ssc = malloc(q * r->k * sizeof(float));
    r->qidx = malloc(q * r->k * sizeof(uint32_t));
    r->qsc = malloc(q * r->k * sizeof(float));
    r->hidx = malloc(q * r->k * sizeof(uint32_t));
    r->hsc = malloc(q * r->k * sizeof(float));
    r->hbidx = malloc(q * r->k * sizeof(uint32_t));
    r->hbsc = malloc(q * r->k * sizeof(float));
    if (sgbd_topk_screen_init_copies(&r->screen, r->items,
                                     SGBD_SCREEN_BF16 | SGBD_SCREEN_8BIT))
        return -1;
    r->bf16 = r->screen;
    memset(&r->bf16.q8, 0, sizeof(r->bf16.q8));
    return r->bits && r->scores && r->idx && r->bidx && r->sc && r->bsc &&
                   r->bn && r->sidx && r->ssc && r->qidx && r->qsc &&
                   r->hidx && r->hsc && r->hbidx && r->hbsc ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct run r = {0};
    int rounds, threads;
    double *tg, *ts, *tb, *tq, *tbq, *th, *thb;

    if (argc != 9) {
        fprintf(stderr, "usage: topk_bench ITEMS.npy QUERIES.npy SEEN.npy "
                "K BATCH ROUNDS THREADS OUT.npy\n");
        return 2;
    }
    if (setup(&r, argv) != 0) {
        fprintf(stderr, "topk_bench: bad input or out of memory\n");
        return 1;
    }
    rounds = atoi(argv[6]);
    threads = atoi(argv[7]);
    rounds = rounds < 1 ? 1 : rounds;
    sgbd_mat_set_threads(threads);
    tg = calloc((size_t)rounds, sizeof(double));
    ts = calloc((size_t)rounds, sizeof(double));
    tb = calloc((size_t)rounds, sizeof(double));
    tq = calloc((size_t)rounds, sizeof(double));
    tbq = calloc((size_t)rounds, sizeof(double));
    th = calloc((size_t)rounds, sizeof(double));
    thb = calloc((size_t)rounds, sizeof(double));
    if (!tg || !ts || !tb || !tq || !tbq || !th || !thb)
        return 1;
    /* warm the caches and the clones' resolvers */
    time_single(&r, NULL, r.idx, r.sc);
    time_single(&r, &r.screen, r.sidx, r.ssc);
    time_single(&r, &r.bf16, r.hidx, r.hsc);
    for (int j = 0; j < rounds; j++) {
        tg[j] = time_sgemv(&r);
        ts[j] = time_single(&r, NULL, r.idx, r.sc);
        tq[j] = time_single(&r, &r.screen, r.sidx, r.ssc);
        th[j] = time_single(&r, &r.bf16, r.hidx, r.hsc);
        tb[j] = time_batch(&r, NULL, r.bidx, r.bsc);
        tbq[j] = time_batch(&r, &r.screen, r.qidx, r.qsc);
        thb[j] = time_batch(&r, &r.bf16, r.hbidx, r.hbsc);
        if (tb[j] < 0 || tbq[j] < 0 || thb[j] < 0)
            return 1;
    }
    printf("{\n  \"items\": %zu, \"dim\": %zu, \"queries\": %zu, \"k\": %zu,"
           " \"batch\": %zu, \"threads\": %d, \"rounds\": %d,\n",
           r.items.rows, r.items.cols, r.queries.rows, r.k, r.batch,
           threads, rounds);
    printf("  \"batch_matches_single\": %.6f,\n", agreement(&r, r.bidx));
    printf("  \"screened_matches_single\": %.6f,\n",
           agreement(&r, r.sidx));
    printf("  \"screened_batch_matches_single\": %.6f,\n",
           agreement(&r, r.qidx));
    printf("  \"screened_bf16_matches_single\": %.6f,\n",
           agreement(&r, r.hidx));
    printf("  \"screened_batch_bf16_matches_single\": %.6f,\n",
           agreement(&r, r.hbidx));
    printf("  \"screen8\": %s,\n", r.screen.q8.v ? "true" : "false");
    summary("sgemv", tg, rounds, 0);
    summary("single", ts, rounds, 0);
    summary("screened", tq, rounds, 0);
    summary("screened_bf16", th, rounds, 0);
    summary("batch", tb, rounds, 0);
    summary("screened_batch", tbq, rounds, 0);
    summary("screened_batch_bf16", thb, rounds, 1);
    printf("}\n");
    if (r.sink == 12345.678)
        fprintf(stderr, "\n");
    return write_out(argv[8], &r) == 0 ? 0 : 1;
}
