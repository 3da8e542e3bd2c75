/*
 * adam.c - torch Adam and SGD over flat arenas (formula in adam.h).
 *
 * The Adam loop is memory-bound when vectorised, but GCC will not
 * vectorise sqrtf while -fmath-errno is on (the default, and the
 * optimize attribute cannot turn it off), which costs 5x on a 1.7M-float
 * arena. So on x86-64 the loop is written with SSE2 intrinsics, the
 * baseline of that architecture; elsewhere the scalar loop runs.
 */
#include "sgbd/adam.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "sgbd/err.h"
#include "sgbd/parallel.h"

/* Floats per parallel chunk at least: 256 KiB of each of the 4 arrays,
 * so a small arena runs inline and a large one is worth the wake-up. */
#define PARALLEL_GRAIN (1u << 16)

/* Per-step constants, computed in double once and used as floats. */
struct adam_consts {
    float scale, wd, one_minus_b1, b2, one_minus_b2;
    float step_size, bc2_sqrt, eps;
};

void sgbd_adam_opts_defaults(struct sgbd_adam_opts *o)
{
    o->lr = 1e-3;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->weight_decay = 0.0;
}

static int check_opts(const struct sgbd_adam_opts *o)
{
    if (!isfinite(o->lr) || o->lr < 0)
        return sgbd_errf(SGBD_E_CONFIG, "adam: learning_rate %g must be a "
                         "finite value >= 0", o->lr);
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
        return sgbd_errf(SGBD_E_CONFIG, "adam: betas (%g, %g) must lie in "
                         "[0, 1)", o->beta1, o->beta2);
    if (!isfinite(o->eps) || o->eps < 0)
        return sgbd_errf(SGBD_E_CONFIG, "adam: eps %g must be a finite "
                         "value >= 0", o->eps);
    if (!isfinite(o->weight_decay) || o->weight_decay < 0)
        return sgbd_errf(SGBD_E_CONFIG, "adam: weight_decay %g must be a "
                         "finite value >= 0", o->weight_decay);
    return 0;
}

static float *alloc_zeroed(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);

    if (p)
        memset(p, 0, bytes);
    return p;
}

int sgbd_adam_init(struct sgbd_adam *a, size_t n,
                   const struct sgbd_adam_opts *o)
{
    int rc = check_opts(o);

    memset(a, 0, sizeof(*a));
    if (rc < 0)
        return rc;
    a->m = alloc_zeroed(n);
    a->v = alloc_zeroed(n);
    if (!a->m || !a->v) {
        sgbd_adam_deinit(a);
        return sgbd_errf(-ENOMEM, "adam: cannot allocate moments for %zu "
                         "floats", n);
    }
    a->o = *o;
    a->n = n;
    return 0;
}

void sgbd_adam_deinit(struct sgbd_adam *a)
{
    if (!a)
        return;
    free(a->m);
    free(a->v);
    memset(a, 0, sizeof(*a));
}

void sgbd_adam_reset(struct sgbd_adam *a)
{
    memset(a->m, 0, a->n * sizeof(float));
    memset(a->v, 0, a->n * sizeof(float));
    a->step = 0;
}

static void adam_scalar(const struct adam_consts *c, float *restrict theta,
                        const float *restrict grad, float *restrict m,
                        float *restrict v, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++) {
        float g = c->scale * grad[i] + c->wd * theta[i];
        float mi = m[i] + c->one_minus_b1 * (g - m[i]);
        float vi = c->b2 * v[i] + c->one_minus_b2 * (g * g);
        float denom = sqrtf(vi) / c->bc2_sqrt + c->eps;

        m[i] = mi;
        v[i] = vi;
        theta[i] -= c->step_size * (mi / denom);
    }
}

#ifdef __SSE2__
/* The same arithmetic four floats at a time, in the same order, so the
 * result is bitwise equal to adam_scalar (no FMA contraction here). */
static void adam_range(const struct adam_consts *c, float *restrict theta,
                       const float *restrict grad, float *restrict m,
                       float *restrict v, size_t lo, size_t hi)
{
    const __m128 scale = _mm_set1_ps(c->scale), wd = _mm_set1_ps(c->wd);
    const __m128 w1 = _mm_set1_ps(c->one_minus_b1), b2 = _mm_set1_ps(c->b2);
    const __m128 w2 = _mm_set1_ps(c->one_minus_b2);
    const __m128 eps = _mm_set1_ps(c->eps);
    const __m128 step = _mm_set1_ps(c->step_size);
    const __m128 bc2 = _mm_set1_ps(c->bc2_sqrt);
    size_t i = lo;

    for (; i + 4 <= hi; i += 4) {
        __m128 th = _mm_loadu_ps(theta + i), mi = _mm_loadu_ps(m + i);
        __m128 g = _mm_add_ps(_mm_mul_ps(scale, _mm_loadu_ps(grad + i)),
                              _mm_mul_ps(wd, th));
        __m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)),
                               _mm_mul_ps(w2, _mm_mul_ps(g, g)));
        __m128 denom;

        mi = _mm_add_ps(mi, _mm_mul_ps(w1, _mm_sub_ps(g, mi)));
        denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), bc2), eps);
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        th = _mm_sub_ps(th, _mm_mul_ps(step, _mm_div_ps(mi, denom)));
        _mm_storeu_ps(theta + i, th);
    }
    adam_scalar(c, theta, grad, m, v, i, hi);
}
#else
#define adam_range adam_scalar
#endif

/* Each element is independent and the SSE and scalar paths agree bit for
 * bit, so any cut of [0, n) gives the same result. */
struct adam_job {
    const struct adam_consts *c;
    float *theta;
    const float *grad;
    float *m, *v;
};

static void adam_chunk(void *ctx, size_t begin, size_t end)
{
    const struct adam_job *j = ctx;

    adam_range(j->c, j->theta, j->grad, j->m, j->v, begin, end);
}

void sgbd_adam_step(struct sgbd_adam *a, float *theta, const float *grad,
                    float grad_scale, size_t n)
{
    struct adam_consts c;
    double t;

    if (n > a->n)
        n = a->n; /* contract: n <= a->n; never write past the moments */
    t = (double)++a->step;
    c.scale = grad_scale;
    c.wd = (float)a->o.weight_decay;
    c.one_minus_b1 = (float)(1.0 - a->o.beta1);
    c.b2 = (float)a->o.beta2;
    c.one_minus_b2 = (float)(1.0 - a->o.beta2);
    c.eps = (float)a->o.eps;
    c.step_size = (float)(a->o.lr / (1.0 - pow(a->o.beta1, t)));
    c.bc2_sqrt = (float)sqrt(1.0 - pow(a->o.beta2, t));

    struct adam_job job = {&c, theta, grad, a->m, a->v};
    sgbd_parallel_for(n, PARALLEL_GRAIN, adam_chunk, &job);
}

void sgbd_sgd_step(double lr, double weight_decay, float *restrict theta,
                   const float *restrict grad, float grad_scale, size_t n)
{
    const float s = grad_scale, wd = (float)weight_decay, eta = (float)lr;

    for (size_t i = 0; i < n; i++)
        theta[i] -= eta * (s * grad[i] + wd * theta[i]);
}
