/*
 * adam.h - torch's Adam (and plain SGD) on flat parameter arenas.
 *
 * The optimiser sees one arena of n floats: parameters theta (n), the
 * gradient (n) and its own moments m, v (n each), all in the layout of
 * params.h, and knows nothing about models. Semantics are torch.optim.Adam
 * with amsgrad off (reference/algorithms.md 3, 7.3, 9.2):
 *
 *     g  = s * grad + wd * theta          (coupled L2, added after scaling)
 *     t += 1
 *     m  = lerp(m, g, 1 - beta1)          (= beta1 m + (1 - beta1) g)
 *     v  = beta2 v + (1 - beta2) g^2
 *     theta -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * s is the gradient scale of MG and SGBD (alpha1, -alpha2): it multiplies
 * the gradient only, so the weight decay keeps its + sign on the mirror
 * step exactly as torch does when the loss itself is scaled.
 *
 * The struct owns m and v; theta and grad belong to the caller. Large
 * arenas are stepped on the compute pool (parallel.h); the result is the
 * same bit for bit whatever the thread count.
 */
#ifndef SGBD_ADAM_H
#define SGBD_ADAM_H

#include <stddef.h>
#include <stdint.h>

struct sgbd_adam_opts {
    double lr;            /* learning rate eta (0.001) */
    double beta1, beta2;  /* (0.9, 0.999) */
    double eps;           /* 1e-8 */
    double weight_decay;  /* coupled L2 (0) */
};

struct sgbd_adam {
    struct sgbd_adam_opts o;
    size_t n;             /* arena length in floats */
    float *m, *v;         /* (n) first and second moments, 64-byte aligned */
    int64_t step;         /* t: Adam steps taken (bias correction) */
};

/* torch defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay. */
void sgbd_adam_opts_defaults(struct sgbd_adam_opts *o);

/*
 * Allocate zeroed moments for n floats; step = 0.
 * Returns 0, -ENOMEM, or SGBD_E_CONFIG (detail names the option) when lr,
 * eps or weight_decay is negative or not finite, or a beta is outside
 * [0, 1). On error *a is left empty (safe to deinit).
 */
int sgbd_adam_init(struct sgbd_adam *a, size_t n,
                   const struct sgbd_adam_opts *o);

/* Free the moments; accepts a zeroed or already deinit'ed struct. */
void sgbd_adam_deinit(struct sgbd_adam *a);

/* Zero the moments and the step counter (a fresh optimiser). */
void sgbd_adam_reset(struct sgbd_adam *a);

/*
 * One Adam step over theta[0..n) with gradient grad_scale * grad (see the
 * formula at the top). n must be at most a->n (callers pass the arena
 * length). theta and grad must not overlap; grad is not modified.
 */
void sgbd_adam_step(struct sgbd_adam *a, float *theta, const float *grad,
                    float grad_scale, size_t n);

/*
 * One plain SGD step, torch.optim.SGD without momentum:
 *     theta -= lr * (grad_scale * grad + weight_decay * theta).
 * Used as a base optimiser option and for the SGD test vectors of
 * algorithms.md 9.2. Stateless.
 */
void sgbd_sgd_step(double lr, double weight_decay, float *theta,
                   const float *grad, float grad_scale, size_t n);

#endif
