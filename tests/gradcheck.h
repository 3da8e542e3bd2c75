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
 * slopes and the curvatures (second differences) at h and h/4: when
 * either pair disagrees the coordinate is counted as skipped rather than
 * compared. A bug makes the analytic value
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
    size_t n_probe;         /* coordinates to test (all when >= n) */
    const size_t *coords;   /* NULL, or exactly these n_probe coordinates */
    unsigned char *checked; /* NULL, or (n_probe): 1 where compared */
    double h;               /* perturbation (1e-2 .. 1e-3 for float losses) */
    double floor_rel;       /* denominator floor relative to max|grad| */
    uint64_t seed;          /* which coordinates */
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

/* One probe of coordinate i at step h: the central difference and the
 * second difference (L+ - 2 L0 + L-) / h^2; theta is restored. */
struct gradcheck_probe {
    double d1, d2;
};

static inline struct gradcheck_probe gradcheck_at(gradcheck_fn f, void *ctx,
                                                  float *theta, size_t i,
                                                  double h, double l0)
{
    float orig = theta[i];
    float up = (float)((double)orig + h), down = (float)((double)orig - h);
    double hu = (double)up - orig, hd = (double)orig - down;
    struct gradcheck_probe p;

    theta[i] = up;
    double lp = f(ctx, theta, NULL);
    theta[i] = down;
    double lm = f(ctx, theta, NULL);
    theta[i] = orig;
    p.d1 = (lp - lm) / (hu + hd);
    p.d2 = 2.0 * ((lp - l0) / hu - (l0 - lm) / hd) / (hu + hd);
    return p;
}

/* Central difference at step h of coordinate i; theta is restored. */
static inline double gradcheck_diff(gradcheck_fn f, void *ctx, float *theta,
                                    size_t i, double h)
{
    return gradcheck_at(f, ctx, theta, i, h, 0.0).d1;
}

/*
 * Smooth at scale h: the slopes at h and h/4 agree, and so do the
 * curvatures (a kink within h makes the second difference grow like
 * jump / h, so h (c(h) - c(h/4)) / 2 measures the jump in the slope).
 */
static inline int gradcheck_smooth(struct gradcheck_probe a,
                                   struct gradcheck_probe b, double h,
                                   double floor)
{
    double m = fmax(fmax(fabs(a.d1), fabs(b.d1)), floor);
    return fabs(a.d1 - b.d1) <= 0.05 * m &&
           fabs(a.d2 - b.d2) * h / 2 <= 0.02 * m;
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
    double l0 = f(ctx, theta, NULL);
    size_t probes = o->coords || o->n_probe < n ? o->n_probe : n;

    for (size_t k = 0; k < probes; k++) {
        size_t i = o->coords     ? o->coords[k]
                   : probes == n ? k
                                 : (size_t)(gradcheck_next(&s) % n);
        struct gradcheck_probe p = gradcheck_at(f, ctx, theta, i, o->h, l0);
        struct gradcheck_probe p4 =
            gradcheck_at(f, ctx, theta, i, o->h / 4, l0);
        double num = p.d1, num4 = p4.d1;
        if (o->checked)
            o->checked[k] = 0;
        if (!gradcheck_smooth(p, p4, o->h, floor)) {
            res->skipped++;
            continue;
        }
        if (o->checked)
            o->checked[k] = 1;
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
