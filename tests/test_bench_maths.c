/* test_bench_maths.c - timings of the maths layer on Baby-size data. */
/* ctest: labels=bench timeout=600 */
/*
 * Not a correctness test (label bench, not run by default); each case
 * prints one "bench ..." line on stdout:
 *   - topk: for I x 64 random items (I = 7,050 and 63,000), K = 50: one
 *     sgemv over all items (the memory-bound floor of one query),
 *     sgbd_topk_user (score + mask + select, one thread), and
 *     sgbd_topk_users on batches of 64 (per query);
 *   - metrics: sgbd_metrics_eval and _eval2 on random embeddings
 *     (U 19,445, I 7,050, D 64) and Baby-like random item sets, K 5, 10,
 *     20, 50 (issue #2 target: <= 0.4 s per split on 2 cores);
 *   - spmm: Y = A X on a random bipartite graph of Baby's size (N 26,495,
 *     about 239k nonzeros, D 64), the LightGCN propagation.
 * Run it alone, on a quiet machine:
 *     ctest -L bench -R bench_maths --output-on-failure -V
 * Environment: SGBD_BENCH_THREADS, threads for the pool and OpenBLAS in
 * the multi-threaded parts (default 2).
 */
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "sgbd/csr.h"
#include "sgbd/mat.h"
#include "sgbd/metrics.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"
#include "sgbd/topk.h"

#define D 64
#define K 50
#define BATCH 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_threads(void)
{
    const char *env = getenv("SGBD_BENCH_THREADS");
    return env ? atoi(env) : 2;
}

static void fill_random(struct sgbd_mat m, struct sgbd_rng *rng)
{
    for (size_t r = 0; r < m.rows; r++)
        for (size_t c = 0; c < m.cols; c++)
            sgbd_mat_row(m, r)[c] = (float)sgbd_rng_normal(rng);
}

/* out = best of 5 rounds of reps runs of stmt, microseconds per run. */
#define TIME_US(out, reps, stmt)                                            \
    do {                                                                    \
        (out) = 1e30;                                                       \
        for (int round_ = 0; round_ < 5; round_++) {                        \
            double t0_ = now_s();                                           \
            for (int rep_ = 0; rep_ < (reps); rep_++) {                     \
                stmt;                                                       \
            }                                                               \
            double us_ = (now_s() - t0_) * 1e6 / (reps);                    \
            (out) = us_ < (out) ? us_ : (out);                              \
        }                                                                   \
    } while (0)

static void bench_items(size_t n_items)
{
    struct sgbd_mat items, users;
    struct sgbd_rng rng;
    uint32_t idx[BATCH * K];
    float score[BATCH * K];
    size_t counts[BATCH];
    float *scores = malloc(n_items * sizeof(float));
    uint64_t *seen = sgbd_bitset_new(n_items);
    const uint64_t *excl[BATCH];
    int threads = bench_threads();

    CHECK(scores && seen);
    CHECK(sgbd_mat_alloc(&items, n_items, D) == 0);
    CHECK(sgbd_mat_alloc(&users, BATCH, D) == 0);
    sgbd_rng_init(&rng, 42, SGBD_RNG_SYNTH);
    fill_random(items, &rng);
    fill_random(users, &rng);
    for (int s = 0; s < 30; s++)
        sgbd_bitset_set(seen, sgbd_rng_below(&rng, n_items));
    for (int b = 0; b < BATCH; b++)
        excl[b] = seen;
    int reps = n_items > 10000 ? 200 : 2000;

    sgbd_mat_set_threads(1);
    double gemv, one;
    TIME_US(gemv, reps, sgbd_mat_gemv_n(scores, items, users.data, 1, 0));
    TIME_US(one, reps, sgbd_topk_user(users.data, items, K, seen, idx,
                                      score));
    double batch1, batch;
    TIME_US(batch1, reps / 20 + 1, sgbd_topk_users(users, items, K, excl,
                                                   idx, score, counts));
    sgbd_mat_set_threads(threads);
    TIME_US(batch, reps / 20 + 1, sgbd_topk_users(users, items, K, excl,
                                                  idx, score, counts));
    batch1 /= BATCH, batch /= BATCH;
    printf("bench topk items=%zu d=%d k=%d sgemv_us=%.2f topk_user_us=%.2f "
           "ratio=%.2f batch%d_us_per_query_1t=%.2f "
           "batch%d_us_per_query_%dt=%.2f\n", n_items, D, K, gemv, one,
           one / gemv, BATCH, batch1, BATCH, threads, batch);
    sgbd_mat_release(&users);
    sgbd_mat_release(&items);
    sgbd_bitset_free(seen);
    free(scores);
}

static void test_bench_topk_baby_size(void)
{
    bench_items(7050);
}

static void test_bench_topk_electronics_size(void)
{
    bench_items(63000);
}

/* Sorted unique sets of lo..hi random items per user. */
static int random_sets(struct sgbd_itemsets *s, size_t U, size_t I, int lo,
                       int hi, struct sgbd_rng *rng)
{
    s->ptr = malloc((U + 1) * sizeof(uint64_t));
    s->items = malloc(U * (size_t)hi * sizeof(uint32_t));
    if (!s->ptr || !s->items)
        return -1;
    s->ptr[0] = 0;
    for (size_t u = 0; u < U; u++) {
        uint64_t n = s->ptr[u];
        int want = lo + (int)sgbd_rng_below(rng, (uint64_t)(hi - lo + 1));
        /* Distinct ascending picks: one per stride-sized slice. */
        size_t stride = I / (size_t)want;
        for (int k = 0; k < want; k++)
            s->items[n++] = (uint32_t)(k * stride +
                                       sgbd_rng_below(rng, stride));
        s->ptr[u + 1] = n;
    }
    return 0;
}

static void test_bench_metrics_baby_size(void)
{
    size_t U = 19445, I = 7050;
    struct sgbd_mat users, items;
    struct sgbd_itemsets train, valid, test;
    struct sgbd_metrics mv, mt;
    struct sgbd_rng rng;
    const int ks[4] = {5, 10, 20, 50};
    int threads = bench_threads();
    double one = 1e30, two = 1e30;

    sgbd_rng_init(&rng, 7, SGBD_RNG_SYNTH);
    CHECK(sgbd_mat_alloc(&users, U, D) == 0);
    CHECK(sgbd_mat_alloc(&items, I, D) == 0);
    fill_random(users, &rng), fill_random(items, &rng);
    /* Baby: about 6 train, 1 valid, 1-2 test items per user. */
    CHECK(random_sets(&train, U, I, 3, 9, &rng) == 0);
    CHECK(random_sets(&valid, U, I, 1, 1, &rng) == 0);
    CHECK(random_sets(&test, U, I, 1, 2, &rng) == 0);
    sgbd_mat_set_threads(threads);
    for (int round = 0; round < 3; round++) {
        double t0 = now_s();
        CHECK(sgbd_metrics_eval(&mt, users, items, &train, &test, ks, 4) ==
              0);
        double t1 = now_s();
        CHECK(sgbd_metrics_eval2(&mv, &mt, users, items, &train, &valid,
                                 &test, ks, 4) == 0);
        double t2 = now_s();
        one = t1 - t0 < one ? t1 - t0 : one;
        two = t2 - t1 < two ? t2 - t1 : two;
    }
    printf("bench metrics users=%zu items=%zu d=%d ks=5,10,20,50 threads=%d "
           "eval_s=%.3f eval2_valid_and_test_s=%.3f\n", U, I, D, threads,
           one, two);
    sgbd_mat_release(&users), sgbd_mat_release(&items);
    free(train.ptr), free(train.items), free(valid.ptr), free(valid.items);
    free(test.ptr), free(test.items);
}

static void test_bench_spmm_baby_size(void)
{
    size_t U = 19445, I = 7050, N = U + I, rows = 119674;
    uint32_t *r = malloc(2 * rows * sizeof(uint32_t));
    uint32_t *c = malloc(2 * rows * sizeof(uint32_t));
    struct sgbd_csr a;
    struct sgbd_mat x, y;
    struct sgbd_rng rng;
    double best[2] = {1e30, 1e30};
    int threads = bench_threads();

    CHECK(r && c);
    sgbd_rng_init(&rng, 8, SGBD_RNG_SYNTH);
    for (size_t k = 0; k < rows; k++) {
        uint32_t u = (uint32_t)sgbd_rng_below(&rng, U);
        uint32_t i = (uint32_t)(U + sgbd_rng_below(&rng, I));
        r[2 * k] = u, c[2 * k] = i, r[2 * k + 1] = i, c[2 * k + 1] = u;
    }
    CHECK(sgbd_csr_from_coo(&a, N, N, 2 * rows, r, c, NULL, 1) == 0);
    CHECK(sgbd_mat_alloc(&x, N, D) == 0 && sgbd_mat_alloc(&y, N, D) == 0);
    fill_random(x, &rng);
    for (int t = 0; t < 2; t++) {
        sgbd_parallel_set_threads(t == 0 ? 1 : threads);
        for (int round = 0; round < 5; round++) {
            double t0 = now_s();
            for (int rep = 0; rep < 20; rep++)
                sgbd_csr_spmm(y, &a, x, 1.0f, 0.0f);
            double ms = (now_s() - t0) * 1e3 / 20;
            best[t] = ms < best[t] ? ms : best[t];
        }
    }
    printf("bench spmm n=%zu nnz=%llu d=%d ms_1t=%.3f ms_%dt=%.3f "
           "lightgcn_epoch_spmm_s=%.3f (4 per batch, 59 batches)\n", N,
           (unsigned long long)sgbd_csr_nnz(&a), D, best[0], threads,
           best[1], best[1] * 4 * 59 / 1e3);
    sgbd_mat_release(&x), sgbd_mat_release(&y);
    sgbd_csr_free(&a);
    free(r), free(c);
}

int main(void)
{
    RUN(test_bench_topk_baby_size);
    RUN(test_bench_topk_electronics_size);
    RUN(test_bench_metrics_baby_size);
    RUN(test_bench_spmm_baby_size);
    sgbd_parallel_shutdown();
    return harness_finish();
}
