/*
 * parallel.h - a small persistent compute pool for the offline kernels.
 *
 * sgbd_parallel_for(n, grain, fn, ctx) splits [0, n) into contiguous
 * chunks, runs fn(ctx, begin, end) on each, and returns when every chunk
 * is done. The partition depends only on n, grain and the pool size, and
 * the chunks run on whichever thread claims them first; so fn must give
 * the same result however [0, n) is cut (each output written by exactly
 * one index, no reduction whose order depends on the cut). Then results
 * never depend on the thread count.
 *
 * The pool is for training and evaluation (SpMM, metric evaluation, graph
 * building), which run one at a time. Serving threads must not use it:
 * a request would wait behind a training kernel, and the pool gives no
 * latency bound. A call made while the pool is busy (from another thread,
 * or nested inside fn) does not wait and never deadlocks: it runs the
 * whole range inline, serially, on the calling thread.
 *
 * Threads start on the first parallel call; sgbd_parallel_shutdown() joins
 * them (for tests and clean exits); a later call starts them again.
 */
#ifndef SGBD_PARALLEL_H
#define SGBD_PARALLEL_H

#include <stddef.h>

/* One chunk of work: indices [begin, end) of the range. */
typedef void (*sgbd_parallel_fn)(void *ctx, size_t begin, size_t end);

/*
 * Set the number of threads that run chunks, the caller included; 0 means
 * the number of online CPUs. Takes effect at the next parallel call (the
 * old workers are joined now). Returns 0, SGBD_E_LIMIT when n is negative
 * or above 256, or SGBD_E_BUSY when called from inside a chunk.
 */
int sgbd_parallel_set_threads(int n);

/* The pool size set by sgbd_parallel_set_threads (online CPUs before). */
int sgbd_parallel_threads(void);

/*
 * Run fn over [0, n) in at most 4 * threads chunks of at least grain
 * indices each (grain 0 counts as 1). Runs inline when n <= grain, when
 * the pool has one thread, when the pool is busy, or when the workers
 * cannot be started. Returns when all of [0, n) is done.
 */
void sgbd_parallel_for(size_t n, size_t grain, sgbd_parallel_fn fn,
                       void *ctx);

/* Join the worker threads and free the pool. Not from inside a chunk. */
void sgbd_parallel_shutdown(void);

#endif
