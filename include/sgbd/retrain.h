/*
 * retrain.h - the online retrainer: a background thread that retrains
 * the served model when updates arrive, checks it, stores it and swaps it
 * in while serving goes on (DESIGN.md section 6, issue #6).
 *
 * Triggers (the [retrain] section of config.h). The write path reports
 * every durable write through sgbd_retrain_notify(); a job starts when
 *
 *     pending item updates >= min_item_updates (0 turns this off), or
 *     pending interactions >= min_interactions (0 turns this off),
 *         and no update came for debounce_s (a burst makes one job),
 *         but a stream of updates cannot delay it past 10 debounce_s
 *         after the first pending update;
 *     or anything is pending and max_interval_s (> 0) has passed since
 *         the last job started (or since the first pending update);
 *     never sooner than min_interval_s after the last job started, nor,
 *         after k jobs in a row that did not publish, sooner than
 *         min(3600, b 2^(k-1)) seconds after the last one ended, with
 *         b = max(min_interval_s, debounce_s, 1);
 *     or at once on a manual trigger (POST /v1/model/retrain), which
 *         ignores all of the above. enabled = false leaves only that.
 *
 * The job (sgbd_retrain_job in retrain_job.c), in this order:
 *   1. absorbed = sgbd_snapshot_slot_seq(), read BEFORE the store read,
 *      then one consistent store read (holdout.h): ids, hidden flags,
 *      features, the interaction log; new users and items included.
 *   2. The dataset with the live validation holdout of holdout.h
 *      (retrain.holdout_min).
 *   3. Warm start (retrain.warm_start, and the served model is of the
 *      configured kind): every tensor of the new layout copies the rows
 *      it shares with the served model's tensor of the same name and
 *      width; rows for new users and items, and tensors that changed
 *      width, keep the model's own initialiser (seeded by model.seed).
 *      Feature-driven parts (projections, kNN graphs) are shared weights
 *      or rebuilt from the current features, so new items get their
 *      representation through the model's feature path. Cold start
 *      (first model, warm_start off, another model): a fresh arena.
 *   4. Training with the configured step rule ([optimizer], default
 *      sgbd), a fresh optimiser state: retrain.epochs epochs when warm,
 *      up to retrain.initial_epochs with MMRec early stopping when cold;
 *      the holdout is scored after every epoch and the best epoch kept
 *      (warm epochs past the optimum would otherwise drift the model
 *      down one tolerance at a time).
 *   5. The gate: candidate and served model are ranked on the same
 *      holdout (train.valid_metric, e.g. recall@20, train items masked),
 *      over the users both know; the served model scores items as
 *      serving does (snapshot rows, overlay vectors for items written
 *      since). Publish when candidate >= served - retrain.tolerance and
 *      the candidate is finite; a NaN/Inf loss or embedding is a
 *      rejection too. Without a served model the candidate publishes.
 *   6. sgbd_checkpoint_save (chunks, then the pointer), prune to
 *      store.keep_checkpoints, then the snapshot (absorbed_seq =
 *      absorbed) is built and published: writes numbered above absorbed
 *      are re-applied on top of it by the slot (snapshot.h).
 *   A rejected or failed job keeps the served model, logs
 *   ev=retrain_rejected or ev=retrain_failed, and is counted in the
 *   status; its pending counts are kept for the next attempt.
 *
 * Updates during a job: a notify whose write number is at or below the
 * running job's absorbed is in that job's read and is not counted again;
 * every later one counts toward the next job.
 *
 * Cores: a job runs on the retrainer's own thread at niceness
 * retrain.nice (default 10), with retrain.threads maths threads
 * (sgbd_mat_set_threads: OpenBLAS and the compute pool; default 1, so on
 * a 2-core machine one core trains and the HTTP workers keep the other
 * and win the shared one). Serving threads never call multi-threaded
 * BLAS or the compute pool on the retrainer's behalf: the retrainer
 * never calls into a published snapshot's model either (the served
 * model's cold-start vectors come from the overlay).
 *
 * Restore (start-up): the latest valid checkpoint (falling back to the
 * previous when damaged) is rebuilt into a snapshot over the current
 * store: the model over the checkpoint's prefix of users, items and
 * interactions with the holdout it was trained with (hparam
 * holdout_min, 0 for checkpoints of `sgbd train`), so embeddings are the
 * ones that were validated; items added after it get cold-start rows;
 * seen sets, hidden flags and ids come from the current store. Items
 * and interactions newer than the checkpoint count as pending, so a job
 * that a crash interrupted runs again. Rollback builds a kept version
 * the same way, moves the store's current pointer to it, then publishes.
 *
 * Threads: every function may be called from any thread; hook calls
 * return at once except rollback, which waits for the retrainer thread
 * to publish the version (the HTTP thread sleeps, it does not compute).
 */
#ifndef SGBD_RETRAIN_H
#define SGBD_RETRAIN_H

#include <stdint.h>

#include "sgbd/api.h"
#include "sgbd/config.h"
#include "sgbd/snapshot.h"

struct sgbd_store;
struct sgbd_serve_env;
struct sgbd_retrain;

/* Moments of a job where a test may look, block or kill the process. */
enum sgbd_retrain_point {
    SGBD_RETRAIN_POINT_READ,        /* store read done, before training */
    SGBD_RETRAIN_POINT_TRAINED,     /* candidate trained, before the gate */
    SGBD_RETRAIN_POINT_CHECKPOINT,  /* gate passed, before checkpoint_save */
    SGBD_RETRAIN_POINT_PUBLISH,     /* checkpoint committed, before publish */
};

/* Called on the retrainer thread; version is the new checkpoint's at
 * PUBLISH, 0 before. */
typedef void (*sgbd_retrain_point_fn)(void *ctx, enum sgbd_retrain_point p,
                                      uint64_t version);

struct sgbd_retrain_opts {
    const struct sgbd_config *cfg;  /* copied */
    struct sgbd_store *store;       /* borrowed, must outlive the retrainer */
    struct sgbd_snapshot_slot *slot;/* borrowed, likewise */
    sgbd_retrain_point_fn point;    /* tests; NULL */
    void *point_ctx;
};

/* The trigger rules above, as numbers. */
struct sgbd_retrain_policy {
    int enabled;
    uint64_t min_item_updates, min_interactions;    /* 0: trigger off */
    double debounce_s, min_interval_s, max_interval_s; /* 0: no periodic */
};

/* What the policy looks at; times in seconds on one monotonic clock. */
struct sgbd_retrain_pending {
    uint64_t item_updates, interactions;
    double first_at;                /* first pending update, 0: none */
    double last_at;                 /* latest update */
    double last_start;              /* previous job start, 0: never */
    double not_before;              /* backoff after failures, 0: none */
    int manual;                     /* a manual trigger waits */
};

void sgbd_retrain_policy_from_config(struct sgbd_retrain_policy *p,
                                     const struct sgbd_config *cfg);

/* Seconds from now until a job should start: 0 for now, INFINITY when
 * nothing will start it until something changes. Pure. */
double sgbd_retrain_due_in(const struct sgbd_retrain_policy *p,
                           const struct sgbd_retrain_pending *s, double now);

/*
 * A retrainer over o->store and o->slot, its thread started (idle until
 * a trigger). Nothing is published until sgbd_retrain_restore() or a
 * job. Errors: SGBD_E_CONFIG (no store), -ENOMEM, -errno of
 * pthread_create.
 */
int sgbd_retrain_new(struct sgbd_retrain **out,
                     const struct sgbd_retrain_opts *o);

/* Stop (as sgbd_retrain_stop) and free. NULL is fine. */
void sgbd_retrain_free(struct sgbd_retrain *rt);

/* Fill h with hooks calling the functions below (ctx = rt). */
void sgbd_retrain_hooks(struct sgbd_retrain *rt,
                        struct sgbd_retrain_hooks *h);

/*
 * The registration function of serve.h (sgbd_retrain_attach_fn): a new
 * retrainer for env and its hooks; the stop hook also frees it, as the
 * daemon calls nothing of it afterwards. Without a store (--no-store)
 * it attaches nothing and returns 0. Errors of sgbd_retrain_new.
 */
int sgbd_retrain_attach(const struct sgbd_serve_env *env,
                        struct sgbd_retrain_hooks *h);

/* A durable write: item_updates and interactions count toward the
 * triggers unless last_seq is already in the running job. */
void sgbd_retrain_notify(struct sgbd_retrain *rt, uint64_t item_updates,
                         uint64_t interactions, uint64_t last_seq);

/*
 * Start a job as soon as the thread is free (reason is logged). Returns
 * 0 (queued, or already queued), SGBD_E_BUSY (a job runs, or stopping),
 * SGBD_E_NOTFOUND (the store has no interactions yet).
 */
int sgbd_retrain_trigger(struct sgbd_retrain *rt, const char *reason);

/*
 * Publish kept checkpoint version (verified completely), making it the
 * store's current one; waits until done. Returns 0, SGBD_E_NOTFOUND (no
 * such version), SGBD_E_CORRUPT (damaged), SGBD_E_BUSY (a job runs),
 * or the error of building it (detail set on the calling thread).
 */
int sgbd_retrain_rollback(struct sgbd_retrain *rt, uint64_t version);

/* The status of GET /v1/model. */
void sgbd_retrain_status(struct sgbd_retrain *rt,
                         struct sgbd_retrain_status *out);

/* Take the reloadable [retrain], [model], [optimizer], [train] options
 * of cfg for the next job; resets the failure backoff. */
void sgbd_retrain_reload(struct sgbd_retrain *rt,
                         const struct sgbd_config *cfg);

/*
 * Publish the store's latest valid checkpoint (previous when current is
 * damaged) on the calling thread and set the pending counts from what
 * the store holds beyond it. Returns 0, SGBD_E_NOMODEL (no checkpoint:
 * pending = everything in the store, so a first model trains when the
 * thresholds are met), SGBD_E_BUSY (a job runs), or the error (corrupt
 * with no fallback, unknown model, a layout that does not match).
 */
int sgbd_retrain_restore(struct sgbd_retrain *rt);

/* Cancel a running job (it stops between batches and publishes nothing),
 * wake and join the thread. Idempotent. */
void sgbd_retrain_stop(struct sgbd_retrain *rt);

/* Wait until at least jobs jobs (retrains and rollbacks) have ended
 * since creation, up to timeout_s. 0 or -ETIMEDOUT. For tests and
 * benchmarks. */
int sgbd_retrain_wait(struct sgbd_retrain *rt, uint64_t jobs,
                      double timeout_s);

/* Jobs ended since creation. */
uint64_t sgbd_retrain_jobs(struct sgbd_retrain *rt);

#endif
