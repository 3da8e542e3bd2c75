/*
 * trainer.h - the MMRec training loop for any model of model.h
 * (reference/algorithms.md 3.1, 3.2).
 *
 * Per epoch: the model's pre_epoch hook, a new permutation of the
 * training rows, then for each batch one stepper step (Adam, MG, SAM or
 * SGBD, sharpness.h); after the epoch the caller's evaluate callback
 * scores valid (and test) at the current parameters, and early stopping
 * decides whether to go on:
 *
 *     best = -1, bad = 0
 *     after each epoch: s = round(valid_score, 4 decimals)
 *         s > best  -> best = s, bad = 0, keep this epoch's metrics and
 *                      a copy of theta
 *         otherwise -> bad += 1; stop when bad > stopping_step
 *
 * so at patience 20 training stops after the 21st epoch in a row without
 * improvement. The trainer borrows the model and the dataset; the caller
 * owns theta (an arena of model->layout.n floats, already initialised).
 * With a fixed seed and deterministic model and callback, a run is
 * reproducible bit for bit.
 */
#ifndef SGBD_TRAINER_H
#define SGBD_TRAINER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"
#include "sgbd/model.h"
#include "sgbd/sharpness.h"

#define SGBD_EVAL_MAX 32
#define SGBD_EVAL_NAME 24

/* One metric of one epoch, on both held-out splits. */
struct sgbd_eval_value {
    char name[SGBD_EVAL_NAME];  /* "recall@20", ... */
    double valid, test;
};

/* What the evaluate callback reports for one epoch. */
struct sgbd_epoch_eval {
    double score;               /* the valid metric for early stopping */
    int n;                      /* entries of v in use */
    struct sgbd_eval_value v[SGBD_EVAL_MAX]; /* for the report; optional */
};

/*
 * Score the parameters theta (model->layout.n floats) after an epoch:
 * fill out->score (and out->v, out->n if wanted; *out arrives zeroed).
 * Returns 0, or a negative error that stops training with that code.
 */
typedef int (*sgbd_eval_fn)(void *ctx, const float *theta,
                            struct sgbd_epoch_eval *out);

/* The facts of one finished epoch, for a live progress line. */
struct sgbd_epoch_info {
    int epoch;                  /* 0-based */
    int max_epochs;
    double loss;                /* sum of the batches' pass-1 losses */
    double train_seconds;       /* sampling and steps */
    double seconds;             /* the whole epoch, evaluation included */
    int evaluated;              /* 0 when there is no evaluate callback */
    double valid;               /* rounded valid score; NaN if not evaluated */
    double best;                /* best rounded valid score (-1: none yet) */
    int best_epoch;             /* -1: none yet */
    int bad_epochs;             /* epochs in a row without improvement */
    int improved;               /* this epoch became the best */
    double eta_seconds;         /* until the stop, if valid never improves
                                   again (mean epoch time so far) */
    uint64_t grad_evals;        /* since the run began */
};

typedef void (*sgbd_progress_fn)(void *ctx, const struct sgbd_epoch_info *e);

struct sgbd_train_opts {
    int max_epochs;             /* 1000 */
    int stopping_step;          /* patience 20 */
    size_t batch_size;          /* B 2048 */
    uint64_t seed;              /* 999; sampler and pre_epoch streams */
    int mmrec_streams;          /* sampler draws as MMRec (mmrec_rng.h);
                                   seed below 2^32 */
    int restore_best;           /* 1: theta ends as the best epoch's copy */
    struct sgbd_step_opts step; /* step rule and base optimiser */
    sgbd_eval_fn evaluate;      /* NULL: no evaluation, no early stop */
    void *eval_ctx;
    sgbd_progress_fn progress;  /* NULL: silent */
    void *progress_ctx;
    const atomic_int *cancel;   /* NULL, or stop between batches when != 0 */
};

struct sgbd_train_result {
    int epochs;                 /* epochs completed */
    int best_epoch;             /* -1 when none was evaluated */
    double best_score;          /* rounded valid score of best_epoch */
    struct sgbd_epoch_eval best;/* unrounded metrics of best_epoch */
    double last_loss;           /* loss of the last completed epoch */
    double seconds;
    uint64_t grad_evals;
    int stopped_early;          /* early stopping ended the run */
};

struct sgbd_trainer;

/* MMRec defaults (algorithms.md 3) with the step defaults of 9.2. */
void sgbd_train_opts_defaults(struct sgbd_train_opts *o);

/*
 * A trainer for model m on ds's training rows. It allocates the sampler,
 * the stepper and the best-parameter copy once. Returns 0, -ENOMEM,
 * SGBD_E_CONFIG (max_epochs < 1, stopping_step < 0, and the checks of
 * sgbd_stepper_new and sgbd_bpr_sampler_new), SGBD_E_FORMAT from the
 * sampler's dataset checks, or SGBD_E_SHAPE when the model's user/item
 * counts differ from the dataset's or it has no loss_grad. *out is NULL
 * on error.
 */
int sgbd_trainer_new(struct sgbd_trainer **out, struct sgbd_model *m,
                     const struct sgbd_dataset *ds,
                     const struct sgbd_train_opts *o);
void sgbd_trainer_free(struct sgbd_trainer *t);

/*
 * Train theta (m->layout.n floats) from a fresh optimiser state until
 * early stopping, max_epochs, an error or a cancel. *res is filled in
 * every case with what was done. With restore_best and a best epoch,
 * theta holds that epoch's parameters on return, whatever the result.
 * Returns 0; SGBD_E_DIVERGED when a loss is NaN or Inf (detail: epoch,
 * batch, value); SGBD_E_CANCELLED when *cancel was set; or the error of
 * pre_epoch or evaluate.
 */
int sgbd_trainer_run(struct sgbd_trainer *t, float *theta,
                     struct sgbd_train_result *res);

/*
 * One training epoch without evaluation (pre_epoch, shuffle, batches),
 * continuing the optimiser state; *loss is the summed pass-1 loss.
 * Same errors as sgbd_trainer_run apart from evaluate's. For benchmarks
 * and bounded retraining.
 */
int sgbd_trainer_epoch(struct sgbd_trainer *t, float *theta, int epoch,
                       double *loss);

/* The best epoch's parameters of the last run (m->layout.n floats),
 * owned by the trainer; NULL before any epoch was best. */
const float *sgbd_trainer_best_theta(const struct sgbd_trainer *t);

/* The trainer's stepper (optimiser state, gradient evaluation count). */
struct sgbd_stepper *sgbd_trainer_stepper(struct sgbd_trainer *t);

/* round(x, 4) as Python does it (exact binary value, ties to even):
 * the rounding MMRec applies to metrics before comparing them. */
double sgbd_trainer_round4(double x);

#endif
