/*
 * trainer.c - the MMRec epoch loop with early stopping (trainer.h;
 * reference/algorithms.md 3.1, 3.2).
 */
#include "sgbd/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/log.h"

struct sgbd_trainer {
    struct sgbd_model *m;
    const struct sgbd_dataset *ds;
    struct sgbd_train_opts o;
    size_t n;                      /* arena length in floats */
    struct sgbd_bpr_sampler *sampler;
    struct sgbd_stepper *stepper;
    struct sgbd_rng graph_rng;     /* pre_epoch stream */
    float *best_theta;             /* (n) parameters of the best epoch */
    int have_best;
};

/* The loss callback of the stepper: the model on the current batch. */
struct batch_ctx {
    struct sgbd_model *m;
    const struct sgbd_batch *b;
};

/* Early-stopping state of one run (3.2). */
struct stopper {
    double best;                   /* rounded; -1 before the first epoch */
    int best_epoch, bad;
};

void sgbd_train_opts_defaults(struct sgbd_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_epochs = 1000;
    o->stopping_step = 20;
    o->batch_size = 2048;
    o->seed = 999;
    o->restore_best = 1;
    sgbd_step_opts_defaults(&o->step);
}

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* printf rounds the exact binary value with ties to even, as Python's
 * round(x, 4) does; x * 1e4 would round twice. */
double sgbd_trainer_round4(double x)
{
    char buf[64];

    if (!isfinite(x))
        return x;
    snprintf(buf, sizeof(buf), "%.4f", x);
    return strtod(buf, NULL);
}

static int check_setup(const struct sgbd_model *m,
                       const struct sgbd_dataset *ds,
                       const struct sgbd_train_opts *o)
{
    if (o->max_epochs < 1)
        return sgbd_errf(SGBD_E_CONFIG, "train: epochs %d must be >= 1",
                         o->max_epochs);
    if (o->stopping_step < 0)
        return sgbd_errf(SGBD_E_CONFIG, "train: stopping_step %d must be "
                         ">= 0", o->stopping_step);
    if (!m->ops || !m->ops->loss_grad)
        return sgbd_errf(SGBD_E_SHAPE, "train: model has no loss_grad");
    if (m->n_users != ds->n_users || m->n_items != ds->n_items)
        return sgbd_errf(SGBD_E_SHAPE, "train: model has %u users, %u "
                         "items; dataset %u users, %u items", m->n_users,
                         m->n_items, ds->n_users, ds->n_items);
    return 0;
}

int sgbd_trainer_new(struct sgbd_trainer **out, struct sgbd_model *m,
                     const struct sgbd_dataset *ds,
                     const struct sgbd_train_opts *o)
{
    struct sgbd_trainer *t;
    int rc;

    *out = NULL;
    rc = check_setup(m, ds, o);
    if (rc < 0)
        return rc;
    t = calloc(1, sizeof(*t));
    if (!t)
        return sgbd_errf(-ENOMEM, "train: cannot allocate a trainer");
    t->m = m;
    t->ds = ds;
    t->o = *o;
    t->n = m->layout.n;
    sgbd_rng_init(&t->graph_rng, o->seed, SGBD_RNG_GRAPH);

    if (o->mmrec_streams && o->seed > UINT32_MAX)
        rc = sgbd_errf(SGBD_E_CONFIG, "train: MMRec's streams take a seed "
                       "below 2^32, not %llu", (unsigned long long)o->seed);
    else if (o->mmrec_streams)
        rc = sgbd_bpr_sampler_new_mmrec(&t->sampler, ds, o->batch_size,
                                        (uint32_t)o->seed);
    else
        rc = sgbd_bpr_sampler_new(&t->sampler, ds, o->batch_size, o->seed);
    if (rc < 0)
        goto out;
    rc = sgbd_stepper_new(&t->stepper, &o->step, t->n);
    if (rc < 0)
        goto out;
    t->best_theta = malloc((t->n ? t->n : 1) * sizeof(float));
    if (!t->best_theta) {
        rc = sgbd_errf(-ENOMEM, "train: cannot allocate %zu floats for the "
                       "best parameters", t->n);
        goto out;
    }
    *out = t;
    return 0;

out:
    sgbd_trainer_free(t);
    return rc;
}

void sgbd_trainer_free(struct sgbd_trainer *t)
{
    if (!t)
        return;
    free(t->best_theta);
    sgbd_stepper_free(t->stepper);
    sgbd_bpr_sampler_free(t->sampler);
    free(t);
}

static double batch_loss_grad(void *ctx, const float *theta, float *grad)
{
    struct batch_ctx *c = ctx;

    return c->m->ops->loss_grad(c->m, theta, grad, c->b);
}

static int cancelled(const struct sgbd_trainer *t)
{
    return t->o.cancel && atomic_load_explicit(t->o.cancel,
                                               memory_order_relaxed);
}

int sgbd_trainer_epoch(struct sgbd_trainer *t, float *theta, int epoch,
                       double *loss)
{
    struct sgbd_batch b;
    struct batch_ctx ctx = {t->m, &b};
    double sum = 0.0;
    size_t k = 0;
    int rc;

    *loss = NAN;
    if (t->m->ops->pre_epoch) {
        rc = t->m->ops->pre_epoch(t->m, theta, &t->graph_rng);
        if (rc < 0)
            return rc;
    }
    sgbd_bpr_epoch_begin(t->sampler);
    for (; !cancelled(t) && sgbd_bpr_next(t->sampler, &b); k++) {
        double l;

        t->m->error = 0;
        l = sgbd_stepper_step(t->stepper, theta, k, batch_loss_grad, &ctx);
        if (t->m->error < 0)
            return t->m->error;
        if (!isfinite(l))
            return sgbd_errf(SGBD_E_DIVERGED, "train: epoch %d batch %zu: "
                             "loss %g", epoch, k, l);
        sum += l;
    }
    if (cancelled(t))
        return sgbd_errf(SGBD_E_CANCELLED, "train: cancelled in epoch %d "
                         "after %zu batches", epoch, k);
    *loss = sum;
    return 0;
}

/* 3.2: strict improvement of the rounded score resets the counter. */
static int stopper_update(struct stopper *st, double score, int epoch)
{
    if (score > st->best) {
        st->best = score;
        st->best_epoch = epoch;
        st->bad = 0;
        return 1;
    }
    st->bad++;
    return 0;
}

/* Seconds until the run ends if the valid score never improves again. */
static double eta_seconds(const struct sgbd_trainer *t,
                          const struct stopper *st, int done, double spent)
{
    int left = t->o.max_epochs - done;
    int patience = t->o.stopping_step + 1 - st->bad;

    if (t->o.evaluate && patience < left)
        left = patience;
    return left > 0 ? spent / done * left : 0.0;
}

/* Evaluate after an epoch and update the stopper, the best metrics and
 * the best parameters; fills the evaluation fields of *info. */
static int evaluate_epoch(struct sgbd_trainer *t, const float *theta,
                          struct stopper *st, struct sgbd_train_result *res,
                          struct sgbd_epoch_info *info)
{
    struct sgbd_epoch_eval ev;
    int rc;

    info->valid = NAN;
    if (!t->o.evaluate) { /* no early stop: the last epoch is the best */
        info->improved = stopper_update(st, (double)info->epoch, info->epoch);
        memset(&res->best, 0, sizeof(res->best));
    } else {
        memset(&ev, 0, sizeof(ev));
        rc = t->o.evaluate(t->o.eval_ctx, theta, &ev);
        if (rc < 0)
            return rc;
        info->evaluated = 1;
        info->valid = sgbd_trainer_round4(ev.score);
        info->improved = stopper_update(st, info->valid, info->epoch);
        if (info->improved) {
            res->best = ev;
            res->best_score = info->valid;
        }
    }
    if (info->improved) {
        memcpy(t->best_theta, theta, t->n * sizeof(float));
        t->have_best = 1;
        res->best_epoch = info->epoch;
    }
    info->best = t->o.evaluate ? st->best : -1.0;
    info->best_epoch = st->best_epoch;
    info->bad_epochs = st->bad;
    return 0;
}

static void log_run(const struct sgbd_trainer *t,
                    const struct sgbd_train_result *res, int rc)
{
    SGBD_INFO("train_done", "model=%s optimizer=%s epochs=%d best_epoch=%d "
              "best=%.4f stopped_early=%d grad_evals=%llu seconds=%.3f "
              "rc=%d", t->m->ops->name, sgbd_optimizer_name(t->o.step.kind),
              res->epochs, res->best_epoch, res->best_score,
              res->stopped_early, (unsigned long long)res->grad_evals,
              res->seconds, rc);
}

static void finish_run(struct sgbd_trainer *t, float *theta,
                       struct sgbd_train_result *res, double t0, int rc)
{
    if (t->o.restore_best && t->have_best)
        memcpy(theta, t->best_theta, t->n * sizeof(float));
    res->grad_evals = sgbd_stepper_grad_evals(t->stepper);
    res->seconds = now_seconds() - t0;
    log_run(t, res, rc);
}

int sgbd_trainer_run(struct sgbd_trainer *t, float *theta,
                     struct sgbd_train_result *res)
{
    struct stopper st = {-1.0, -1, 0};
    double t0 = now_seconds();
    int rc = 0;

    memset(res, 0, sizeof(*res));
    res->best_epoch = -1;
    res->best_score = -1.0;
    t->have_best = 0;
    sgbd_stepper_reset(t->stepper);
    SGBD_INFO("train_start", "model=%s optimizer=%s params=%zu batches=%zu "
              "max_epochs=%d", t->m->ops->name,
              sgbd_optimizer_name(t->o.step.kind), t->n,
              sgbd_bpr_n_batches(t->sampler), t->o.max_epochs);

    for (int epoch = 0; epoch < t->o.max_epochs; epoch++) {
        struct sgbd_epoch_info info = {.epoch = epoch,
                                       .max_epochs = t->o.max_epochs};
        double e0 = now_seconds();

        rc = sgbd_trainer_epoch(t, theta, epoch, &info.loss);
        if (rc < 0)
            break;
        info.train_seconds = now_seconds() - e0;
        res->epochs = epoch + 1;
        res->last_loss = info.loss;

        rc = evaluate_epoch(t, theta, &st, res, &info);
        if (rc < 0)
            break;
        info.seconds = now_seconds() - e0;
        info.grad_evals = sgbd_stepper_grad_evals(t->stepper);
        info.eta_seconds = eta_seconds(t, &st, epoch + 1, now_seconds() - t0);
        SGBD_DEBUG("train_epoch", "epoch=%d loss=%.6f valid=%.4f best=%.4f "
                   "bad=%d seconds=%.3f", epoch, info.loss, info.valid,
                   info.best, info.bad_epochs, info.seconds);
        if (t->o.progress)
            t->o.progress(t->o.progress_ctx, &info);
        if (t->o.evaluate && st.bad > t->o.stopping_step) {
            res->stopped_early = 1;
            break;
        }
    }
    finish_run(t, theta, res, t0, rc);
    return rc;
}

const float *sgbd_trainer_best_theta(const struct sgbd_trainer *t)
{
    return t->have_best ? t->best_theta : NULL;
}

struct sgbd_stepper *sgbd_trainer_stepper(struct sgbd_trainer *t)
{
    return t->stepper;
}
