/*
 * parallel.c - the compute pool: persistent workers woken per job.
 *
 * One job runs at a time; `dispatch` is held by the thread that submitted
 * it. A job is published under `mu` by bumping `generation`; each worker
 * claims chunks from an atomic counter until none are left, then reports
 * in `finished`. The submitter claims chunks too and waits until every
 * worker has reported, so the job description is never overwritten while
 * a late worker still reads it.
 */
#include "sgbd/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/log.h"

#define MAX_THREADS 256
#define CHUNKS_PER_THREAD 4

struct job {
    sgbd_parallel_fn fn;
    void *ctx;
    size_t n, n_chunks;
    atomic_size_t next;
};

static pthread_mutex_t dispatch = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;

/* Guarded by dispatch. */
static int want_threads;          /* 0: not set yet, use online CPUs */
static pthread_t *workers;
static int n_workers;
static struct job job;

/* Guarded by mu. */
static uint64_t generation;
static int stopping;
static int finished;

/* Set while this thread runs chunks: nested calls run inline. */
static _Thread_local int in_chunk;

static int online_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (n > MAX_THREADS ? MAX_THREADS : (int)n) : 1;
}

static int resolved_threads(void)
{
    return want_threads > 0 ? want_threads : online_cpus();
}

/* Chunk c of n_chunks: sizes differ by at most one, larger ones first. */
static void chunk_bounds(size_t n, size_t n_chunks, size_t c, size_t *begin,
                         size_t *end)
{
    size_t q = n / n_chunks, r = n % n_chunks;

    *begin = c * q + (c < r ? c : r);
    *end = *begin + q + (c < r ? 1 : 0);
}

static void run_chunks(struct job *j)
{
    size_t c, begin, end;

    in_chunk = 1;
    while ((c = atomic_fetch_add(&j->next, 1)) < j->n_chunks) {
        chunk_bounds(j->n, j->n_chunks, c, &begin, &end);
        j->fn(j->ctx, begin, end);
    }
    in_chunk = 0;
}

static void *worker_main(void *arg)
{
    uint64_t seen = (uint64_t)(uintptr_t)arg;

    pthread_mutex_lock(&mu);
    for (;;) {
        while (generation == seen && !stopping)
            pthread_cond_wait(&wake, &mu);
        if (stopping)
            break;
        seen = generation;
        pthread_mutex_unlock(&mu);

        run_chunks(&job);

        pthread_mutex_lock(&mu);
        if (++finished == n_workers)
            pthread_cond_signal(&done);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Called with dispatch held. */
static void stop_workers(void)
{
    pthread_mutex_lock(&mu);
    stopping = 1;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    free(workers);
    workers = NULL;
    n_workers = 0;
    pthread_mutex_lock(&mu);
    stopping = 0;
    pthread_mutex_unlock(&mu);
}

/*
 * Called with dispatch held and no workers. Workers block every signal,
 * so the daemon's signal handling sees only its own threads. On a failed
 * pthread_create the pool keeps the workers it has.
 */
static void start_workers(void)
{
    int want = resolved_threads() - 1, rc = 0;
    sigset_t all, old;

    if (want <= 0)
        return;
    workers = calloc((size_t)want, sizeof(*workers));
    if (!workers)
        return;
    pthread_mutex_lock(&mu);
    uintptr_t gen = (uintptr_t)generation;
    pthread_mutex_unlock(&mu);

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (n_workers < want) {
        rc = pthread_create(&workers[n_workers], NULL, worker_main,
                            (void *)gen);
        if (rc != 0)
            break;
        n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        SGBD_WARN("parallel_start_failed", "started=%d wanted=%d rc=%d",
                  n_workers, want, rc);
}

int sgbd_parallel_set_threads(int n)
{
    if (n < 0 || n > MAX_THREADS)
        return sgbd_errf(SGBD_E_LIMIT, "threads: %d is outside 0..%d", n,
                         MAX_THREADS);
    if (in_chunk)
        return sgbd_errf(SGBD_E_BUSY,
                         "threads: cannot resize the pool from inside it");
    pthread_mutex_lock(&dispatch);
    stop_workers();
    want_threads = n;
    pthread_mutex_unlock(&dispatch);
    return 0;
}

int sgbd_parallel_threads(void)
{
    pthread_mutex_lock(&dispatch);
    int n = resolved_threads();
    pthread_mutex_unlock(&dispatch);
    return n;
}

/* As many chunks as keep every chunk at least grain long, capped. */
static size_t count_chunks(size_t n, size_t grain, int threads)
{
    size_t by_grain = n / grain;
    size_t cap = (size_t)threads * CHUNKS_PER_THREAD;

    if (by_grain < 1)
        by_grain = 1;
    return by_grain < cap ? by_grain : cap;
}

void sgbd_parallel_for(size_t n, size_t grain, sgbd_parallel_fn fn,
                       void *ctx)
{
    if (n == 0)
        return;
    if (grain == 0)
        grain = 1;
    if (n <= grain || in_chunk || pthread_mutex_trylock(&dispatch) != 0) {
        fn(ctx, 0, n);
        return;
    }
    if (!workers)
        start_workers();
    if (n_workers == 0) {
        pthread_mutex_unlock(&dispatch);
        fn(ctx, 0, n);
        return;
    }

    job.fn = fn;
    job.ctx = ctx;
    job.n = n;
    job.n_chunks = count_chunks(n, grain, n_workers + 1);
    atomic_store(&job.next, 0);
    pthread_mutex_lock(&mu);
    finished = 0;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);

    run_chunks(&job);

    pthread_mutex_lock(&mu);
    while (finished < n_workers)
        pthread_cond_wait(&done, &mu);
    pthread_mutex_unlock(&mu);
    pthread_mutex_unlock(&dispatch);
}

void sgbd_parallel_shutdown(void)
{
    if (in_chunk)
        return;
    pthread_mutex_lock(&dispatch);
    stop_workers();
    pthread_mutex_unlock(&dispatch);
}
