/*
 * gradcheck.h - finite-difference checks of hand-written backward passes.
 *
 * A check needs a loss callback of the loss_grad shape:
 *
 *     double f(void *ctx, const float *theta, float *grad);
 *
 * which returns the loss at theta and, when grad is not NULL, ADDS
 * dL/dtheta into grad (n floats). gradcheck_run() evaluates the analytic
 * gradient once, then for a random subset of coordinates the central
 * difference (L(theta + h e_i) - L(theta - h e_i)) / (t+ - t-), where t+
 * and t- are the perturbed float values actually stored (the step is
 * formed in double and the quotient uses the real float difference).
 *
 * Coordinates where the loss is not smooth at the scale h (a leaky ReLU
 * kink crossed by the perturbation) are recognised by comparing the
 * differences at h and h/4: when those two disagree the coordinate is
 * counted as skipped rather than compared. A bug makes the analytic value
 * disagree with two numeric estimates that agree with each other, so it
 * is still found. The analytic value is compared with both D(h) and the
 * Richardson extrapolation (16 D(h/4) - D(h)) / 15, which cancels the
 * O(h^2) truncation error but carries more float round-off; the better
 * of the two counts (a wrong gradient matches neither). The relative
 * error of a coordinate is |a - num| / max(|a|, |num|, floor) with
 * floor = floor_rel * max|a| over the whole gradient, so coordinates with
 * a negligible gradient compare absolutely.
 */
#ifndef SGBD_TEST_GRADCHECK_H
#define SGBD_TEST_GRADCHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef double (*gradcheck_fn)(void *ctx, const float *theta, float *grad);

struct gradcheck_opts {
    size_t n_probe;   /* coordinates to test (all when >= n) */
    double h;         /* perturbation (1e-2 .. 1e-3 for float losses) */
    double floor_rel; /* denominator floor relative to max|grad| */
    uint64_t seed;    /* which coordinates */
};

struct gradcheck_result {
    double worst_rel; /* worst relative error over checked coords */
    size_t worst_index;
    double worst_analytic, worst_numeric;
    size_t checked, skipped;
    double max_abs_grad;
};

static inline uint64_t gradcheck_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Central difference at step h of coordinate i; theta is restored. */
static inline double gradcheck_diff(gradcheck_fn f, void *ctx, float *theta,
                                    size_t i, double h)
{
    float orig = theta[i];
    float up = (float)((double)orig + h), down = (float)((double)orig - h);

    theta[i] = up;
    double lp = f(ctx, theta, NULL);
    theta[i] = down;
    double lm = f(ctx, theta, NULL);
    theta[i] = orig;
    return (lp - lm) / ((double)up - (double)down);
}

static inline int gradcheck_smooth(double a, double b, double floor)
{
    double m = fmax(fmax(fabs(a), fabs(b)), floor);
    return fabs(a - b) <= 0.05 * m;
}

/*
 * Compare the analytic gradient of f at theta (n floats) with central
 * differences; fills res. Returns 0, or -1 when memory ran out. theta is
 * left as it was.
 */
static inline int gradcheck_run(gradcheck_fn f, void *ctx, float *theta,
                                size_t n, const struct gradcheck_opts *o,
                                struct gradcheck_result *res)
{
    float *g = calloc(n ? n : 1, sizeof(float));
    uint64_t s = o->seed;

    memset(res, 0, sizeof(*res));
    if (!g)
        return -1;
    f(ctx, theta, g);
    for (size_t i = 0; i < n; i++)
        res->max_abs_grad = fmax(res->max_abs_grad, fabs((double)g[i]));
    double floor = fmax(o->floor_rel * res->max_abs_grad, 1e-12);
    size_t probes = o->n_probe < n ? o->n_probe : n;

    for (size_t k = 0; k < probes; k++) {
        size_t i = probes == n ? k : (size_t)(gradcheck_next(&s) % n);
        double num = gradcheck_diff(f, ctx, theta, i, o->h);
        double num4 = gradcheck_diff(f, ctx, theta, i, o->h / 4);
        if (!gradcheck_smooth(num, num4, floor)) {
            res->skipped++;
            continue;
        }
        double a = g[i];
        double rich = (16.0 * num4 - num) / 15.0;
        double rel = fabs(a - num) / fmax(fmax(fabs(a), fabs(num)), floor);
        double rel_r = fabs(a - rich) / fmax(fmax(fabs(a), fabs(rich)), floor);
        if (rel_r < rel)
            rel = rel_r, num = rich;
        res->checked++;
        if (rel > res->worst_rel || res->checked == 1) {
            res->worst_rel = rel;
            res->worst_index = i;
            res->worst_analytic = a;
            res->worst_numeric = num;
        }
    }
    free(g);
    return 0;
}

static inline void gradcheck_print(const char *what,
                                   const struct gradcheck_result *r)
{
    fprintf(stderr,
            "  gradcheck %s: worst_rel=%.3g at %zu (analytic %.6g numeric "
            "%.6g) checked=%zu skipped=%zu max|g|=%.3g\n",
            what, r->worst_rel, r->worst_index, r->worst_analytic,
            r->worst_numeric, r->checked, r->skipped, r->max_abs_grad);
}

/*
 * CHECK that a gradient check passed: worst error within tol, at least
 * 90% of the probed coordinates smooth enough to compare.
 */
#define CHECK_GRAD(res, tol)                                                   \
    do {                                                                       \
        CHECK((res).checked > 0);                                              \
        CHECK((res).skipped * 10 <= (res).checked + (res).skipped);            \
        CHECK_NEAR((res).worst_rel, 0.0, (tol));                               \
    } while (0)

#endif
