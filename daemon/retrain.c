/*
 * retrain.c - the retrainer thread, its trigger policy and the hooks the
 * API calls (retrain.h). The job itself is retrain_job.c.
 */
#include "retrain_impl.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/serve.h"
#include "sgbd/store.h"

#define DEBOUNCE_CAP 10.0           /* debounce waits at most 10 periods */
#define BACKOFF_MAX_S 3600.0

double sgbd_retrain_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double unix_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the policy ---- */

void sgbd_retrain_policy_from_config(struct sgbd_retrain_policy *p,
                                     const struct sgbd_config *cfg)
{
    p->enabled = cfg->retrain_enabled;
    p->min_item_updates = (uint64_t)cfg->retrain_min_item_updates;
    p->min_interactions = (uint64_t)cfg->retrain_min_interactions;
    p->debounce_s = cfg->retrain_debounce_s;
    p->min_interval_s = cfg->retrain_min_interval_s;
    p->max_interval_s = cfg->retrain_max_interval_s;
}

static double max2(double a, double b)
{
    return a > b ? a : b;
}

static double min2(double a, double b)
{
    return a < b ? a : b;
}

/* When the thresholds would start a job: debounced, capped. */
static double threshold_time(const struct sgbd_retrain_policy *p,
                             const struct sgbd_retrain_pending *s)
{
    int met = (p->min_item_updates && s->item_updates >= p->min_item_updates)
              || (p->min_interactions &&
                  s->interactions >= p->min_interactions);

    if (!met)
        return INFINITY;
    return min2(s->last_at + p->debounce_s,
                s->first_at + DEBOUNCE_CAP * p->debounce_s);
}

double sgbd_retrain_due_in(const struct sgbd_retrain_policy *p,
                           const struct sgbd_retrain_pending *s, double now)
{
    double t;

    if (s->manual)
        return 0.0;
    if (!p->enabled || (s->item_updates == 0 && s->interactions == 0))
        return INFINITY;
    t = threshold_time(p, s);
    if (p->max_interval_s > 0)
        t = min2(t, (s->last_start > 0 ? s->last_start : s->first_at) +
                        p->max_interval_s);
    if (isinf(t))
        return INFINITY;
    if (s->last_start > 0)
        t = max2(t, s->last_start + p->min_interval_s);
    t = max2(t, s->not_before);
    return t <= now ? 0.0 : t - now;
}

/* ---- status ---- */

void sgbd_retrain_progress(struct sgbd_retrain *rt, double progress)
{
    pthread_mutex_lock(&rt->mu);
    rt->st.progress = progress < 0 ? 0 : progress > 1 ? 1 : progress;
    pthread_mutex_unlock(&rt->mu);
}

void sgbd_retrain_status(struct sgbd_retrain *rt,
                         struct sgbd_retrain_status *out)
{
    pthread_mutex_lock(&rt->mu);
    *out = rt->st;
    out->pending_item_updates = rt->pend.item_updates;
    out->pending_interactions = rt->pend.interactions;
    pthread_mutex_unlock(&rt->mu);
}

/* ---- one job on the thread ---- */

/* Under mu: the counts a job takes, so a failure can give them back. */
struct taken {
    uint64_t item_updates, interactions;
    double first_at;
};

static const char *start_reason(struct sgbd_retrain *rt, double now)
{
    const struct sgbd_retrain_pending *s = &rt->pend;

    if (s->manual)
        return rt->reason;
    if (!isinf(threshold_time(&rt->pol, s)) &&
        threshold_time(&rt->pol, s) <= now)
        return "threshold";
    return "periodic";
}

static struct taken take_pending(struct sgbd_retrain *rt, double now)
{
    struct taken t = {rt->pend.item_updates, rt->pend.interactions,
                      rt->pend.first_at};

    rt->pend.item_updates = rt->pend.interactions = 0;
    rt->pend.first_at = 0;
    rt->pend.manual = 0;
    rt->pend.last_start = now;
    return t;
}

static void give_back(struct sgbd_retrain *rt, const struct taken *t)
{
    struct sgbd_retrain_pending *s = &rt->pend;

    if (t->item_updates + t->interactions == 0)
        return;
    s->item_updates += t->item_updates;
    s->interactions += t->interactions;
    s->first_at = s->first_at > 0 ? min2(s->first_at, t->first_at)
                                  : t->first_at;
    if (s->last_at < t->first_at)
        s->last_at = t->first_at;
}

/* Under mu: record the end of a job in the status and the backoff. */
static void record_end(struct sgbd_retrain *rt,
                       const struct sgbd_retrain_result *res,
                       const struct taken *t, double t0)
{
    struct sgbd_retrain_status *st = &rt->st;
    double now = sgbd_retrain_now(), base;

    st->state = "idle";
    st->progress = res->outcome == SGBD_RETRAIN_PUBLISHED ? 1.0 : 0.0;
    st->last_duration_s = now - t0;
    st->n_candidate_metrics = res->n_metrics;
    memcpy(st->candidate_metrics, res->metrics, sizeof(res->metrics));
    snprintf(st->message, sizeof(st->message), "%s", res->message);
    if (res->outcome == SGBD_RETRAIN_PUBLISHED) {
        st->last_outcome = "published";
        st->last_version = res->version;
        rt->fail_streak = 0;
        rt->pend.not_before = 0;
        return;
    }
    if (res->outcome == SGBD_RETRAIN_REJECTED) {
        st->last_outcome = "rejected";
        st->rejected_total++;
    } else {
        st->last_outcome = "failed";
        st->failed_total++;
    }
    give_back(rt, t);
    rt->fail_streak++;
    base = max2(max2(rt->pol.min_interval_s, rt->pol.debounce_s), 1.0);
    rt->pend.not_before = now + min2(BACKOFF_MAX_S,
                                     base * ldexp(1.0, rt->fail_streak - 1));
}

/* Called with mu held; returns with mu held. */
/*
 * A job frees tens of MB at its end (dataset, graphs, arenas, batch
 * buffers). glibc keeps freed heap pages for the next allocation unless
 * told otherwise, so without this the daemon's RSS would climb to that of
 * its largest retrain and stay there.
 */
static void return_freed_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void run_job(struct sgbd_retrain *rt, double now)
{
    struct sgbd_retrain_result res;
    struct sgbd_config cfg = rt->cfg;
    const char *reason = start_reason(rt, now);
    struct taken t;
    uint64_t absorbed;

    absorbed = sgbd_snapshot_slot_seq(rt->slot);
    SGBD_INFO("retrain_started", "reason=%s pending_items=%llu "
              "pending_interactions=%llu absorbed_seq=%llu", reason,
              (unsigned long long)rt->pend.item_updates,
              (unsigned long long)rt->pend.interactions,
              (unsigned long long)absorbed);
    t = take_pending(rt, now);
    rt->running = 1;
    rt->running_absorbed = absorbed;
    rt->st.state = "training";
    rt->st.progress = 0;
    rt->st.last_started_at = unix_now();
    rt->st.retrains_total++;
    pthread_mutex_unlock(&rt->mu);

    sgbd_retrain_job(rt, &cfg, absorbed, &res);
    return_freed_memory();

    pthread_mutex_lock(&rt->mu);
    record_end(rt, &res, &t, now);
    rt->running = 0;
    rt->jobs_done++;
    pthread_cond_broadcast(&rt->ended);
}

/* Called with mu held; returns with mu held. */
static void run_rollback(struct sgbd_retrain *rt)
{
    struct sgbd_retrain_restored r;
    struct sgbd_config cfg = rt->cfg;
    uint64_t version = rt->rb_version;
    int rc;

    rt->rb_queued = 0;
    rt->running = 1;
    rt->st.state = "training";
    pthread_mutex_unlock(&rt->mu);

    sgbd_err_clear();
    rc = sgbd_retrain_publish_checkpoint(rt, &cfg, version, 1, &r);

    pthread_mutex_lock(&rt->mu);
    rt->rb_rc = rc;
    snprintf(rt->rb_detail, sizeof(rt->rb_detail), "%s",
             sgbd_err_detail(rc));
    if (rc == 0) {
        rt->st.last_version = version;
        snprintf(rt->st.message, sizeof(rt->st.message), "rolled back to "
                 "version %llu", (unsigned long long)version);
    }
    rt->rb_done = 1;
    rt->running = 0;
    rt->st.state = "idle";
    rt->jobs_done++;
    pthread_cond_broadcast(&rt->ended);
}

static void set_niceness(int nice)
{
    /* Linux: the nice value is per thread, and threads this one starts
     * (the compute pool, when it starts it) inherit it. */
    pid_t tid = (pid_t)syscall(SYS_gettid);

    if (nice > 0 && setpriority(PRIO_PROCESS, (id_t)tid, nice) != 0)
        SGBD_WARN("retrain_nice_failed", "nice=%d why=\"%s\"", nice,
                  strerror(errno));
}

static void wait_for_work(struct sgbd_retrain *rt, double in)
{
    struct timespec ts;
    double until;

    if (isinf(in)) {
        pthread_cond_wait(&rt->wake, &rt->mu);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    until = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + in + 1e-3;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&rt->wake, &rt->mu, &ts);
}

static void *thread_main(void *arg)
{
    struct sgbd_retrain *rt = arg;

    pthread_mutex_lock(&rt->mu);
    set_niceness(rt->cfg.retrain_nice);
    while (!rt->stopping) {
        double now = sgbd_retrain_now(), in;

        if (rt->running) {          /* a restore on another thread */
            pthread_cond_wait(&rt->wake, &rt->mu);
            continue;
        }
        if (rt->rb_queued) {
            run_rollback(rt);
            continue;
        }
        in = sgbd_retrain_due_in(&rt->pol, &rt->pend, now);
        if (in <= 0) {
            run_job(rt, now);
            continue;
        }
        wait_for_work(rt, in);
    }
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}

/* ---- life cycle ---- */

static int init_sync(struct sgbd_retrain *rt)
{
    pthread_condattr_t ca;
    int rc;

    rc = pthread_mutex_init(&rt->mu, NULL);
    if (rc)
        return -rc;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&rt->wake, &ca);
    if (rc == 0 && (rc = pthread_cond_init(&rt->ended, &ca)) != 0)
        pthread_cond_destroy(&rt->wake);
    pthread_condattr_destroy(&ca);
    if (rc)
        pthread_mutex_destroy(&rt->mu);
    return -rc;
}

int sgbd_retrain_new(struct sgbd_retrain **out,
                     const struct sgbd_retrain_opts *o)
{
    struct sgbd_retrain *rt;
    int rc;

    *out = NULL;
    if (!o->store || !o->slot || !o->cfg)
        return sgbd_errf(SGBD_E_CONFIG, "retrain: needs a store, a slot "
                         "and a configuration");
    rt = calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    rt->store = o->store;
    rt->slot = o->slot;
    rt->point = o->point;
    rt->point_ctx = o->point_ctx;
    rt->cfg = *o->cfg;
    sgbd_retrain_policy_from_config(&rt->pol, o->cfg);
    rt->st.state = "idle";
    rt->st.last_outcome = "none";
    atomic_init(&rt->cancel, 0);
    rc = init_sync(rt);
    if (rc < 0) {
        free(rt);
        return rc;
    }
    rc = -pthread_create(&rt->thread, NULL, thread_main, rt);
    if (rc < 0) {
        sgbd_retrain_free(rt);
        return sgbd_errf(rc, "retrain: cannot start the thread: %s",
                         strerror(-rc));
    }
    rt->started = 1;
    *out = rt;
    return 0;
}

void sgbd_retrain_stop(struct sgbd_retrain *rt)
{
    int join;

    pthread_mutex_lock(&rt->mu);
    rt->stopping = 1;
    atomic_store(&rt->cancel, 1);
    join = rt->started;
    rt->started = 0;
    pthread_cond_broadcast(&rt->wake);
    pthread_cond_broadcast(&rt->ended);
    pthread_mutex_unlock(&rt->mu);
    if (join)
        pthread_join(rt->thread, NULL);
}

void sgbd_retrain_free(struct sgbd_retrain *rt)
{
    if (!rt)
        return;
    sgbd_retrain_stop(rt);
    pthread_cond_destroy(&rt->ended);
    pthread_cond_destroy(&rt->wake);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

/* ---- what the API calls ---- */

void sgbd_retrain_notify(struct sgbd_retrain *rt, uint64_t item_updates,
                         uint64_t interactions, uint64_t last_seq)
{
    double now = sgbd_retrain_now();

    pthread_mutex_lock(&rt->mu);
    if (!(rt->running && last_seq && last_seq <= rt->running_absorbed) &&
        item_updates + interactions > 0) {
        rt->pend.item_updates += item_updates;
        rt->pend.interactions += interactions;
        if (rt->pend.first_at == 0)
            rt->pend.first_at = now;
        rt->pend.last_at = now;
        pthread_cond_signal(&rt->wake);
    }
    pthread_mutex_unlock(&rt->mu);
}

int sgbd_retrain_trigger(struct sgbd_retrain *rt, const char *reason)
{
    struct sgbd_store_counts c;
    int rc = sgbd_store_counts(rt->store, &c);

    if (rc < 0)
        return rc;
    if (c.interactions == 0)
        return sgbd_errf(SGBD_E_NOTFOUND, "the store has no interactions "
                         "to train on yet");
    pthread_mutex_lock(&rt->mu);
    if (rt->running || rt->stopping) {
        rc = sgbd_errf(SGBD_E_BUSY, "a retrain is already running");
    } else {
        rt->pend.manual = 1;
        snprintf(rt->reason, sizeof(rt->reason), "%s",
                 reason && *reason ? reason : "manual");
        pthread_cond_signal(&rt->wake);
    }
    pthread_mutex_unlock(&rt->mu);
    return rc;
}

int sgbd_retrain_rollback(struct sgbd_retrain *rt, uint64_t version)
{
    char detail[512];
    int rc;

    pthread_mutex_lock(&rt->mu);
    if (rt->running || rt->rb_queued || rt->stopping) {
        pthread_mutex_unlock(&rt->mu);
        return sgbd_errf(SGBD_E_BUSY, "a retrain or rollback is running");
    }
    rt->rb_version = version;
    rt->rb_queued = 1;
    rt->rb_done = 0;
    pthread_cond_signal(&rt->wake);
    while (!rt->rb_done && !rt->stopping)
        pthread_cond_wait(&rt->ended, &rt->mu);
    rc = rt->rb_done ? rt->rb_rc : SGBD_E_CANCELLED;
    snprintf(detail, sizeof(detail), "%s", rt->rb_done ? rt->rb_detail
                                                       : "stopping");
    rt->rb_done = 0;
    pthread_mutex_unlock(&rt->mu);
    return rc ? sgbd_errf(rc, "%s", detail) : 0;
}

void sgbd_retrain_reload(struct sgbd_retrain *rt,
                         const struct sgbd_config *cfg)
{
    pthread_mutex_lock(&rt->mu);
    rt->cfg = *cfg;
    sgbd_retrain_policy_from_config(&rt->pol, cfg);
    rt->fail_streak = 0;
    rt->pend.not_before = 0;
    pthread_cond_signal(&rt->wake);
    pthread_mutex_unlock(&rt->mu);
}

/* Pending counts from what the store holds beyond the restored model. */
static void set_restored_pending(struct sgbd_retrain *rt, uint64_t items,
                                 uint64_t interactions)
{
    double now = sgbd_retrain_now();

    pthread_mutex_lock(&rt->mu);
    rt->pend.item_updates += items;
    rt->pend.interactions += interactions;
    if (items + interactions > 0) {
        rt->pend.first_at = rt->pend.first_at ? rt->pend.first_at : now;
        rt->pend.last_at = now;
    }
    pthread_cond_signal(&rt->wake);
    pthread_mutex_unlock(&rt->mu);
}

int sgbd_retrain_restore(struct sgbd_retrain *rt)
{
    struct sgbd_retrain_restored r = {0};
    struct sgbd_store_counts c;
    struct sgbd_config cfg;
    int rc;

    pthread_mutex_lock(&rt->mu);
    if (rt->running) {
        pthread_mutex_unlock(&rt->mu);
        return sgbd_errf(SGBD_E_BUSY, "a retrain is running");
    }
    rt->running = 1;
    cfg = rt->cfg;
    pthread_mutex_unlock(&rt->mu);

    rc = sgbd_retrain_publish_checkpoint(rt, &cfg, 0, 0, &r);
    if (rc == SGBD_E_NOMODEL && sgbd_store_counts(rt->store, &c) == 0) {
        r.new_items = c.items;
        r.new_interactions = c.interactions;
    }

    pthread_mutex_lock(&rt->mu);
    rt->running = 0;
    if (rc == 0)
        rt->st.last_version = r.version;
    pthread_cond_broadcast(&rt->wake);
    pthread_mutex_unlock(&rt->mu);
    if (rc == 0 || rc == SGBD_E_NOMODEL)
        set_restored_pending(rt, r.new_items, r.new_interactions);
    return rc;
}

int sgbd_retrain_wait(struct sgbd_retrain *rt, uint64_t jobs,
                      double timeout_s)
{
    struct timespec ts;
    double until;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    until = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + timeout_s;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&rt->mu);
    while (rt->jobs_done < jobs && rc == 0)
        rc = pthread_cond_timedwait(&rt->ended, &rt->mu, &ts);
    rc = rt->jobs_done >= jobs ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&rt->mu);
    return rc;
}

uint64_t sgbd_retrain_jobs(struct sgbd_retrain *rt)
{
    uint64_t n;

    pthread_mutex_lock(&rt->mu);
    n = rt->jobs_done;
    pthread_mutex_unlock(&rt->mu);
    return n;
}

/* ---- hooks ---- */

static void hook_notify(void *ctx, uint64_t items, uint64_t inter,
                        uint64_t last_seq)
{
    sgbd_retrain_notify(ctx, items, inter, last_seq);
}

static int hook_trigger(void *ctx, const char *reason)
{
    return sgbd_retrain_trigger(ctx, reason);
}

static int hook_rollback(void *ctx, uint64_t version)
{
    return sgbd_retrain_rollback(ctx, version);
}

static void hook_status(void *ctx, struct sgbd_retrain_status *out)
{
    sgbd_retrain_status(ctx, out);
}

static void hook_reload(void *ctx, const struct sgbd_config *cfg)
{
    sgbd_retrain_reload(ctx, cfg);
}

static int hook_restore(void *ctx)
{
    return sgbd_retrain_restore(ctx);
}

static void hook_stop(void *ctx)
{
    struct sgbd_retrain *rt = ctx;

    if (rt->free_on_stop)
        sgbd_retrain_free(rt);
    else
        sgbd_retrain_stop(rt);
}

void sgbd_retrain_hooks(struct sgbd_retrain *rt, struct sgbd_retrain_hooks *h)
{
    h->ctx = rt;
    h->notify = hook_notify;
    h->trigger = hook_trigger;
    h->rollback = hook_rollback;
    h->status = hook_status;
    h->reload = hook_reload;
    h->restore = hook_restore;
    h->stop = hook_stop;
}

int sgbd_retrain_attach(const struct sgbd_serve_env *env,
                        struct sgbd_retrain_hooks *h)
{
    struct sgbd_retrain_opts o = {env->cfg, env->store, env->slot, NULL,
                                  NULL};
    struct sgbd_retrain *rt;
    int rc;

    if (!env->store)
        return 0;
    rc = sgbd_retrain_new(&rt, &o);
    if (rc < 0)
        return rc;
    rt->free_on_stop = 1;
    sgbd_retrain_hooks(rt, h);
    return 0;
}
