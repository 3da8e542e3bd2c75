/*
 * retrain_impl.h - what retrain.c (thread, triggers, hooks) and
 * retrain_job.c (the job, restore, rollback) share. Private.
 */
#ifndef SGBD_RETRAIN_IMPL_H
#define SGBD_RETRAIN_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "sgbd/retrain.h"

struct sgbd_retrain {
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    sgbd_retrain_point_fn point;
    void *point_ctx;
    int free_on_stop;               /* attached to the daemon */

    pthread_mutex_t mu;             /* everything below */
    pthread_cond_t wake;            /* the thread: work or stop */
    pthread_cond_t ended;           /* waiters: a job ended */
    pthread_t thread;
    int started, stopping;
    atomic_int cancel;              /* read by the trainer between batches */

    struct sgbd_config cfg;
    struct sgbd_retrain_policy pol;
    struct sgbd_retrain_pending pend;
    char reason[32];                /* of the queued manual trigger */
    int running;                    /* a job or restore owns the model */
    uint64_t running_absorbed;      /* its absorbed_seq */
    int fail_streak;                /* jobs in a row that did not publish */
    uint64_t jobs_done;

    int rb_queued, rb_done;         /* rollback hand-over */
    uint64_t rb_version;
    int rb_rc;
    char rb_detail[512];

    struct sgbd_retrain_status st;
};

/* What one job produced. */
enum sgbd_retrain_outcome {
    SGBD_RETRAIN_PUBLISHED,
    SGBD_RETRAIN_REJECTED,
    SGBD_RETRAIN_FAILED,
};

struct sgbd_retrain_result {
    enum sgbd_retrain_outcome outcome;
    uint64_t version;               /* published version, else 0 */
    int warm;                       /* warm-started */
    int n_metrics;                  /* candidate, on the whole holdout */
    struct sgbd_snapshot_metric metrics[SGBD_SNAPSHOT_MAX_METRICS];
    char message[SGBD_RETRAIN_MESSAGE];
};

/* What a restore or rollback found in the store beyond its checkpoint. */
struct sgbd_retrain_restored {
    uint64_t version;
    uint64_t new_items;             /* items added after the checkpoint */
    uint64_t new_interactions;      /* events after its data_seq */
};

/* One retrain with cfg (a copy the job may keep), absorbed read before
 * its store read. Never fails: the outcome and message say what
 * happened. Runs on the retrainer thread without rt->mu. */
void sgbd_retrain_job(struct sgbd_retrain *rt, const struct sgbd_config *cfg,
                      uint64_t absorbed, struct sgbd_retrain_result *res);

/*
 * Build checkpoint version (0: the current one, with fallback) into a
 * snapshot over the current store and publish it; with rollback, first
 * make it the store's current checkpoint and allow an older version.
 * Errors: those of sgbd_checkpoint_load, SGBD_E_NOTFOUND (model unknown
 * to this build), SGBD_E_SHAPE (layout differs from the model's on that
 * data), SGBD_E_CORRUPT (the checkpoint covers more than the store),
 * store errors, -ENOMEM.
 */
int sgbd_retrain_publish_checkpoint(struct sgbd_retrain *rt,
                                    const struct sgbd_config *cfg,
                                    uint64_t version, int rollback,
                                    struct sgbd_retrain_restored *out);

/* The job's progress 0..1, for the status. */
void sgbd_retrain_progress(struct sgbd_retrain *rt, double progress);

/* The monotonic clock of the policy, seconds. */
double sgbd_retrain_now(void);

#endif
