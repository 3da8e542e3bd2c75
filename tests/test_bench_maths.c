/* test_bench_topk.c - serving top-k timings on random data (issue #5). */
/* ctest: labels=bench timeout=300 */
/*
 * Not a correctness test: reports, for I x 64 random items (I = 7,050 and
 * 63,000) and K = 50,
 *   - one sgemv over all items (the memory-bound floor for one query),
 *   - sgbd_topk_user (score + mask + select, one thread),
 *   - sgbd_topk_users for batches of 64 (per query),
 * as one "bench ..." line each on stdout. Run it alone:
 *     ctest -L bench -R bench_topk --output-on-failure -V
 * Environment: SGBD_BENCH_THREADS (OpenBLAS threads for the batched run,
 * default 1).
 */
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "sgbd/mat.h"
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
    const char *env = getenv("SGBD_BENCH_THREADS");

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
    double gemv, one, batch;
    TIME_US(gemv, reps, sgbd_mat_gemv_n(scores, items, users.data, 1, 0));
    TIME_US(one, reps, sgbd_topk_user(users.data, items, K, seen, idx,
                                      score));
    sgbd_mat_set_threads(env ? atoi(env) : 1);
    TIME_US(batch, reps / 20 + 1, sgbd_topk_users(users, items, K, excl,
                                                  idx, score, counts));
    batch /= BATCH;
    printf("bench topk items=%zu d=%d k=%d sgemv_us=%.2f topk_user_us=%.2f "
           "ratio=%.2f batch%d_us_per_query=%.2f blas_threads=%s\n", n_items,
           D, K, gemv, one, one / gemv, BATCH, batch, env ? env : "1");
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

int main(void)
{
    RUN(test_bench_topk_baby_size);
    RUN(test_bench_topk_electronics_size);
    return harness_finish();
}
