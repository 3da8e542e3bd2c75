/*
 * sharpness.h - the step rules: Adam, MG, SAM and SGBD (SAM + MG) on one
 * flat parameter arena (reference/algorithms.md 7, 8, 9.2).
 *
 * A stepper owns the base optimiser state (Adam moments and step counter),
 * one gradient buffer and one saved copy of theta, all allocated once for
 * n floats at creation; a step allocates nothing. It evaluates the batch
 * through a callback, as often as the rule needs, always on the same
 * batch:
 *
 *     mirror batch (batch_index % beta == 0), sgbd:
 *         g0 = grad L(theta)                       pass 1
 *         e  = rho g0 / (||g0|| + delta)           (ASAM: rho T^2 g0 /
 *         g1 = grad L(theta + e), restore theta     (||T g0|| + delta))
 *         theta~ = Base(theta, alpha1 g1)
 *         g2 = grad L(theta~)                      pass 3
 *         theta  = Base(theta~, -alpha2 g2)
 *     normal batch: theta = Base(theta, grad L(theta))
 *                   (SAM passes first when sam_on_normal_steps)
 *
 *     adam: every batch normal, no SAM.       mg:  sgbd without any SAM
 *     sam:  every batch SAM + Base, no mirror.     pass (rho ignored).
 *
 * Gradient evaluations per epoch of n_b batches: adam n_b, mg
 * n_b + ceil(n_b/beta), sgbd n_b + 2 ceil(n_b/beta), sam 2 n_b.
 *
 * A stepper is not thread-safe; one per training job.
 */
#ifndef SGBD_SHARPNESS_H
#define SGBD_SHARPNESS_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/adam.h"

enum sgbd_optimizer {
    SGBD_OPT_ADAM, /* plain base steps (vanilla MMRec) */
    SGBD_OPT_MG,   /* Mirror Gradient (7.2) */
    SGBD_OPT_SAM,  /* SAM on every batch (8.1) */
    SGBD_OPT_SGBD, /* SAM on mirror batches + MG (9.2) */
};

enum sgbd_base_optimizer {
    SGBD_BASE_ADAM, /* torch Adam (adam.h) */
    SGBD_BASE_SGD,  /* torch SGD without momentum: the SGD form of 9.2 */
};

struct sgbd_step_opts {
    enum sgbd_optimizer kind;      /* SGBD_OPT_SGBD */
    enum sgbd_base_optimizer base; /* SGBD_BASE_ADAM */
    struct sgbd_adam_opts adam;    /* lr, betas, eps, weight_decay; lr and
                                      weight_decay also drive SGD */
    double alpha1, alpha2;         /* MG gradient scales (1.0, 0.2) */
    int beta;                      /* mirror interval (3); 0 = never */
    double rho;                    /* SAM radius (0.05) */
    double delta;                  /* norm stabiliser (1e-12) */
    int sam_on_normal_steps;       /* sgbd: SAM on normal batches (0) */
    int adaptive;                  /* ASAM perturbation (0) */
};

/*
 * The loss of the stepper's batch at theta; ADDS dL/dtheta into grad
 * (n floats, zeroed by the stepper before each call). Returns the loss,
 * or NaN when the evaluation failed.
 */
typedef double (*sgbd_loss_grad_fn)(void *ctx, const float *theta,
                                    float *grad);

struct sgbd_stepper;

/* Defaults of algorithms.md 9.2 with torch Adam defaults. */
void sgbd_step_opts_defaults(struct sgbd_step_opts *o);

/* "adam", "mg", "sam", "sgbd" -> kind; SGBD_E_NOTFOUND with a detail
 * listing the known names otherwise. */
int sgbd_optimizer_parse(const char *name, enum sgbd_optimizer *out);
const char *sgbd_optimizer_name(enum sgbd_optimizer kind);

/*
 * Create a stepper for arenas of n floats. Returns 0, -ENOMEM, or
 * SGBD_E_CONFIG naming the option when a hyper-parameter is out of range
 * (negative or non-finite alpha, rho, delta; beta < 0; unknown kind or
 * base; the Adam checks of sgbd_adam_init). *out is NULL on error.
 */
int sgbd_stepper_new(struct sgbd_stepper **out, const struct sgbd_step_opts *o,
                     size_t n);
void sgbd_stepper_free(struct sgbd_stepper *s);

/*
 * One training step on one batch, following the rule of the stepper's
 * kind. batch_index is the index of the batch inside its epoch (from 0,
 * restarting each epoch); it decides mirror batches. fn(ctx, ...) is
 * called 1 to 3 times on the same batch. Returns the pass-1 loss (the
 * one an epoch loss sums). When any pass returns NaN or Inf the step
 * stops there and that value is returned: theta is restored if it was
 * perturbed, but base steps already taken in this call are kept.
 */
double sgbd_stepper_step(struct sgbd_stepper *s, float *theta,
                         size_t batch_index, sgbd_loss_grad_fn fn, void *ctx);

/* Gradient evaluations (calls of fn) since creation or the last reset. */
uint64_t sgbd_stepper_grad_evals(const struct sgbd_stepper *s);

/* Zero the base optimiser state and the evaluation counter. */
void sgbd_stepper_reset(struct sgbd_stepper *s);

/* The Adam state (moments, step counter) for checkpoints and warm starts;
 * its m, v hold zeros under SGBD_BASE_SGD. */
struct sgbd_adam *sgbd_stepper_adam(struct sgbd_stepper *s);

/* The gradient buffer (n floats): after a step it holds the gradient of
 * the last pass. For diagnostics and tests. */
const float *sgbd_stepper_grad(const struct sgbd_stepper *s);

#endif
