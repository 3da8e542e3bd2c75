/*
 * sharpness.c - Adam, MG, SAM and SGBD step rules over one flat arena
 * (rules in sharpness.h; reference/algorithms.md 7.2, 8.1, 9.2).
 */
#include "sgbd/sharpness.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"

struct sgbd_stepper {
    struct sgbd_step_opts o;
    size_t n;
    struct sgbd_adam adam;   /* base state; zeros and unused under SGD */
    float *grad;             /* (n) gradient of the current pass */
    float *saved;            /* (n) theta before the SAM perturbation */
    uint64_t grad_evals;
};

static const char *const kind_names[] = {"adam", "mg", "sam", "sgbd"};

void sgbd_step_opts_defaults(struct sgbd_step_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->kind = SGBD_OPT_SGBD;
    o->base = SGBD_BASE_ADAM;
    sgbd_adam_opts_defaults(&o->adam);
    o->alpha1 = 1.0;
    o->alpha2 = 0.2;
    o->beta = 3;
    o->rho = 0.05;
    o->delta = 1e-12;
    o->sam_on_normal_steps = 0;
    o->adaptive = 0;
}

int sgbd_optimizer_parse(const char *name, enum sgbd_optimizer *out)
{
    for (int k = 0; k < 4; k++)
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (enum sgbd_optimizer)k;
            return 0;
        }
    return sgbd_errf(SGBD_E_NOTFOUND, "optimizer \"%s\" unknown; known: "
                     "adam, mg, sam, sgbd", name);
}

const char *sgbd_optimizer_name(enum sgbd_optimizer kind)
{
    return (unsigned)kind < 4 ? kind_names[kind] : "unknown";
}

static int bad_value(double x)
{
    return !isfinite(x) || x < 0;
}

static int check_opts(const struct sgbd_step_opts *o)
{
    if ((unsigned)o->kind > SGBD_OPT_SGBD)
        return sgbd_errf(SGBD_E_CONFIG, "optimizer: unknown kind %d",
                         (int)o->kind);
    if ((unsigned)o->base > SGBD_BASE_SGD)
        return sgbd_errf(SGBD_E_CONFIG, "optimizer: unknown base %d",
                         (int)o->base);
    if (bad_value(o->alpha1) || bad_value(o->alpha2))
        return sgbd_errf(SGBD_E_CONFIG, "optimizer: alpha1 %g, alpha2 %g "
                         "must be finite values >= 0", o->alpha1, o->alpha2);
    if (o->beta < 0)
        return sgbd_errf(SGBD_E_CONFIG, "optimizer: beta %d must be >= 0 "
                         "(0 = no mirror batch)", o->beta);
    if (bad_value(o->rho) || bad_value(o->delta))
        return sgbd_errf(SGBD_E_CONFIG, "optimizer: rho %g, delta %g must "
                         "be finite values >= 0", o->rho, o->delta);
    return 0;
}

static float *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;

    return aligned_alloc(64, bytes ? bytes : 64);
}

int sgbd_stepper_new(struct sgbd_stepper **out, const struct sgbd_step_opts *o,
                     size_t n)
{
    struct sgbd_stepper *s;
    int rc;

    *out = NULL;
    rc = check_opts(o);
    if (rc < 0)
        return rc;
    s = calloc(1, sizeof(*s));
    if (!s)
        return sgbd_errf(-ENOMEM, "optimizer: cannot allocate a stepper");
    s->o = *o;
    s->n = n;
    rc = sgbd_adam_init(&s->adam, n, &o->adam);
    if (rc < 0)
        goto out;
    s->grad = alloc_floats(n);
    s->saved = alloc_floats(n);
    if (!s->grad || !s->saved) {
        rc = sgbd_errf(-ENOMEM, "optimizer: cannot allocate workspaces for "
                       "%zu floats", n);
        goto out;
    }
    *out = s;
    return 0;

out:
    sgbd_stepper_free(s);
    return rc;
}

void sgbd_stepper_free(struct sgbd_stepper *s)
{
    if (!s)
        return;
    free(s->saved);
    free(s->grad);
    sgbd_adam_deinit(&s->adam);
    free(s);
}

/* One evaluation: zero the gradient, let fn add into it. */
static double eval_pass(struct sgbd_stepper *s, const float *theta,
                        sgbd_loss_grad_fn fn, void *ctx)
{
    memset(s->grad, 0, s->n * sizeof(float));
    s->grad_evals++;
    return fn(ctx, theta, s->grad);
}

static void base_step(struct sgbd_stepper *s, float *theta, float scale)
{
    if (s->o.base == SGBD_BASE_SGD)
        sgbd_sgd_step(s->o.adam.lr, s->o.adam.weight_decay, theta, s->grad,
                      scale, s->n);
    else
        sgbd_adam_step(&s->adam, theta, s->grad, scale, s->n);
}

/*
 * Global L2 norm of the (ASAM: |theta|-scaled) gradient, accumulated in
 * double. Eight partial sums keep the loop from being one long
 * dependency chain.
 */
static double grad_norm(const struct sgbd_stepper *s, const float *theta)
{
    const float *g = s->grad;
    double acc[8] = {0};
    size_t i = 0, n = s->n;

    if (s->o.adaptive) {
        for (; i < n; i++) {
            double tg = fabs((double)theta[i]) * g[i];
            acc[i & 7] += tg * tg;
        }
    } else {
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++)
                acc[k] += (double)g[i + k] * g[i + k];
        for (; i < n; i++)
            acc[0] += (double)g[i] * g[i];
    }
    return sqrt(((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

/*
 * SAM passes 1 and 2 (8.1): g0 at theta, e = rho g0 / (||g0|| + delta)
 * (ASAM: rho T^2 g0 / (||T g0|| + delta), T = |theta|), g1 at theta + e
 * left in s->grad, theta restored from the saved copy. Returns the pass-1
 * loss, or the first non-finite loss.
 */
static double sam_passes(struct sgbd_stepper *s, float *theta,
                         sgbd_loss_grad_fn fn, void *ctx)
{
    double loss = eval_pass(s, theta, fn, ctx), loss2;
    double scale;

    if (!isfinite(loss))
        return loss;
    scale = s->o.rho / (grad_norm(s, theta) + s->o.delta);
    memcpy(s->saved, theta, s->n * sizeof(float));
    for (size_t i = 0; i < s->n; i++) {
        double t2 = s->o.adaptive ? (double)theta[i] * theta[i] : 1.0;
        theta[i] = (float)(theta[i] + scale * t2 * s->grad[i]);
    }

    loss2 = eval_pass(s, theta, fn, ctx);
    memcpy(theta, s->saved, s->n * sizeof(float));
    return isfinite(loss2) ? loss : loss2;
}

static int is_mirror(const struct sgbd_stepper *s, size_t batch_index)
{
    if (s->o.kind != SGBD_OPT_MG && s->o.kind != SGBD_OPT_SGBD)
        return 0;
    return s->o.beta > 0 && batch_index % (size_t)s->o.beta == 0;
}

/* Mirror batch (7.2, 9.2 steps 1-6): the first gradient comes from SAM
 * under sgbd and from plain pass 1 under mg. */
static double mirror_step(struct sgbd_stepper *s, float *theta,
                          sgbd_loss_grad_fn fn, void *ctx)
{
    double loss, loss3;

    if (s->o.kind == SGBD_OPT_SGBD)
        loss = sam_passes(s, theta, fn, ctx);
    else
        loss = eval_pass(s, theta, fn, ctx);
    if (!isfinite(loss))
        return loss;
    base_step(s, theta, (float)s->o.alpha1);

    loss3 = eval_pass(s, theta, fn, ctx);
    if (!isfinite(loss3))
        return loss3;
    base_step(s, theta, (float)-s->o.alpha2);
    return loss;
}

double sgbd_stepper_step(struct sgbd_stepper *s, float *theta,
                         size_t batch_index, sgbd_loss_grad_fn fn, void *ctx)
{
    int sam = s->o.kind == SGBD_OPT_SAM ||
              (s->o.kind == SGBD_OPT_SGBD && s->o.sam_on_normal_steps);
    double loss;

    if (is_mirror(s, batch_index))
        return mirror_step(s, theta, fn, ctx);

    loss = sam ? sam_passes(s, theta, fn, ctx) : eval_pass(s, theta, fn, ctx);
    if (isfinite(loss))
        base_step(s, theta, 1.0f);
    return loss;
}

uint64_t sgbd_stepper_grad_evals(const struct sgbd_stepper *s)
{
    return s->grad_evals;
}

void sgbd_stepper_reset(struct sgbd_stepper *s)
{
    sgbd_adam_reset(&s->adam);
    s->grad_evals = 0;
}

struct sgbd_adam *sgbd_stepper_adam(struct sgbd_stepper *s)
{
    return &s->adam;
}

const float *sgbd_stepper_grad(const struct sgbd_stepper *s)
{
    return s->grad;
}
