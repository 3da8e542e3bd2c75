/* test_parallel.c - the compute pool: partition, nesting, concurrency. */
/* ctest: labels=unit,concurrency timeout=60 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/parallel.h"

struct cover {
    size_t n, grain;
    unsigned char *seen;      /* (n) times each index was visited */
    atomic_int chunks, short_chunks;
};

static void mark(void *ctx, size_t begin, size_t end)
{
    struct cover *c = ctx;

    atomic_fetch_add(&c->chunks, 1);
    if (end - begin < c->grain && !(begin == 0 && end == c->n))
        atomic_fetch_add(&c->short_chunks, 1);
    for (size_t i = begin; i < end; i++)
        c->seen[i]++;
}

/* Every index exactly once, chunks at least grain long, at most 4T. */
static int covers_once(size_t n, size_t grain, int threads)
{
    struct cover c = {n, grain, calloc(n ? n : 1, 1), 0, 0};
    int ok = c.seen != NULL;

    sgbd_parallel_for(n, grain, mark, &c);
    for (size_t i = 0; ok && i < n; i++)
        ok = c.seen[i] == 1;
    ok = ok && atomic_load(&c.short_chunks) == 0;
    ok = ok && atomic_load(&c.chunks) <= 4 * threads;
    free(c.seen);
    return ok;
}

static void test_parallel_covers_range_once(void)
{
    const size_t sizes[] = {0, 1, 7, 64, 1000, 100003};
    const int threads[] = {1, 2, 3, 8};

    for (int t = 0; t < 4; t++) {
        CHECK_INT(sgbd_parallel_set_threads(threads[t]), 0);
        CHECK_INT(sgbd_parallel_threads(), threads[t]);
        for (int s = 0; s < 6; s++) {
            CHECK(covers_once(sizes[s], 1, threads[t]));
            CHECK(covers_once(sizes[s], 10, threads[t]));
        }
    }
}

struct sum_job {
    const uint32_t *x;
    uint64_t *partial;       /* (n) per index, summed serially after */
};

static void square(void *ctx, size_t begin, size_t end)
{
    struct sum_job *j = ctx;
    for (size_t i = begin; i < end; i++)
        j->partial[i] = (uint64_t)j->x[i] * j->x[i];
}

static void test_parallel_sum_equals_serial(void)
{
    size_t n = 50000;
    uint32_t *x = malloc(n * sizeof(*x));
    uint64_t *p = malloc(n * sizeof(*p)), serial = 0, par = 0;
    struct sum_job j = {x, p};

    CHECK(x && p);
    for (size_t i = 0; i < n; i++) {
        x[i] = (uint32_t)(i * 2654435761u);
        serial += (uint64_t)x[i] * x[i];
    }
    CHECK_INT(sgbd_parallel_set_threads(2), 0);
    sgbd_parallel_for(n, 100, square, &j);
    for (size_t i = 0; i < n; i++)
        par += p[i];
    CHECK(par == serial);
    free(x);
    free(p);
}

static void inner(void *ctx, size_t begin, size_t end)
{
    atomic_size_t *count = ctx;
    atomic_fetch_add(count, end - begin);
}

static void outer(void *ctx, size_t begin, size_t end)
{
    atomic_size_t *count = ctx;

    for (size_t i = begin; i < end; i++)
        sgbd_parallel_for(100, 1, inner, count);
    /* Resizing from inside a chunk is refused, not deadlocked. */
    if (sgbd_parallel_set_threads(1) != SGBD_E_BUSY)
        atomic_fetch_add(count, 1000000);
}

static void test_parallel_nested_call_runs_inline(void)
{
    atomic_size_t count;

    atomic_init(&count, 0);
    CHECK_INT(sgbd_parallel_set_threads(2), 0);
    sgbd_parallel_for(40, 1, outer, &count);
    CHECK_INT(atomic_load(&count), 40 * 100);
}

static void *hammer(void *arg)
{
    atomic_size_t *count = arg;

    for (int r = 0; r < 300; r++)
        sgbd_parallel_for(1000, 10, inner, count);
    return NULL;
}

static void test_parallel_concurrent_callers_finish(void)
{
    pthread_t th[3];
    atomic_size_t count;

    atomic_init(&count, 0);
    CHECK_INT(sgbd_parallel_set_threads(2), 0);
    for (int i = 0; i < 3; i++)
        CHECK(pthread_create(&th[i], NULL, hammer, &count) == 0);
    hammer(&count);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    CHECK_INT(atomic_load(&count), 4 * 300 * 1000);
}

static void test_parallel_rejects_bad_thread_counts(void)
{
    CHECK_INT(sgbd_parallel_set_threads(-1), SGBD_E_LIMIT);
    CHECK_INT(sgbd_parallel_set_threads(100000), SGBD_E_LIMIT);
    CHECK_INT(sgbd_parallel_set_threads(0), 0);
    CHECK(sgbd_parallel_threads() >= 1);
}

static void test_parallel_restarts_after_shutdown(void)
{
    CHECK_INT(sgbd_parallel_set_threads(2), 0);
    CHECK(covers_once(5000, 1, 2));
    sgbd_parallel_shutdown();
    sgbd_parallel_shutdown(); /* twice is fine */
    CHECK(covers_once(5000, 1, 2));
}

int main(void)
{
    RUN(test_parallel_covers_range_once);
    RUN(test_parallel_sum_equals_serial);
    RUN(test_parallel_nested_call_runs_inline);
    RUN(test_parallel_concurrent_callers_finish);
    RUN(test_parallel_rejects_bad_thread_counts);
    RUN(test_parallel_restarts_after_shutdown);
    sgbd_parallel_shutdown();
    return harness_finish();
}
