/* test_sharpness.c - Adam, MG, SAM and SGBD step rules (algorithms.md 9.2). */
/* ctest: labels=unit timeout=60 */
#include <limits.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/sharpness.h"

/* L = 1/2 sum_i a_i theta_i^2, recording where it was evaluated. */
enum { MAXN = 8, MAXCALLS = 64 };

struct quad {
    size_t n;
    double a[MAXN];
    int calls;
    float at[MAXCALLS][MAXN];  /* theta at each call */
    int nan_at_call;           /* 1-based call that returns NaN; 0 never */
};

static double quad_loss_grad(void *ctx, const float *theta, float *grad)
{
    struct quad *q = ctx;
    double loss = 0;

    if (q->calls < MAXCALLS)
        memcpy(q->at[q->calls], theta, q->n * sizeof(float));
    q->calls++;
    for (size_t i = 0; i < q->n; i++) {
        loss += 0.5 * q->a[i] * theta[i] * theta[i];
        grad[i] += (float)(q->a[i] * theta[i]);
    }
    return q->calls == q->nan_at_call ? NAN : loss;
}

static struct quad quad_1d(void)
{
    struct quad q = {.n = 1, .a = {1.0}};
    return q;
}

static struct sgbd_step_opts opts(enum sgbd_optimizer kind,
                                  enum sgbd_base_optimizer base)
{
    struct sgbd_step_opts o;
    sgbd_step_opts_defaults(&o);
    o.kind = kind;
    o.base = base;
    o.adam.lr = 0.1;
    return o;
}

static void test_sharpness_defaults_are_the_reference(void)
{
    struct sgbd_step_opts o;
    sgbd_step_opts_defaults(&o);
    CHECK_INT(o.kind, SGBD_OPT_SGBD);
    CHECK_NEAR(o.alpha1, 1.0, 0);
    CHECK_NEAR(o.alpha2, 0.2, 0);
    CHECK_INT(o.beta, 3);
    CHECK_NEAR(o.rho, 0.05, 0);
    CHECK_NEAR(o.delta, 1e-12, 0);
    CHECK_INT(o.sam_on_normal_steps, 0);
    CHECK_INT(o.adaptive, 0);
    CHECK_NEAR(o.adam.beta1, 0.9, 0);
    CHECK_NEAR(o.adam.beta2, 0.999, 0);
    CHECK_NEAR(o.adam.eps, 1e-8, 0);
}

static void test_sharpness_sgd_vector(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_SGBD, SGBD_BASE_SGD);
    struct sgbd_stepper *s;
    struct quad q = quad_1d();
    float theta = 1.0f;

    CHECK_INT(sgbd_stepper_new(&s, &o, 1), 0);
    double loss = sgbd_stepper_step(s, &theta, 0, quad_loss_grad, &q);
    CHECK_NEAR(loss, 0.5, 1e-12);      /* pass-1 loss at theta0 */
    CHECK_INT(q.calls, 3);
    CHECK_NEAR(q.at[1][0], 1.05, 1e-7); /* theta + e */
    CHECK_NEAR(q.at[2][0], 0.895000, 1e-6);
    CHECK_NEAR(theta, 0.912900, 1e-6);
    sgbd_stepper_free(s);
}

static void test_sharpness_adam_vector(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    struct sgbd_stepper *s;
    struct quad q = quad_1d();
    float theta = 1.0f;

    CHECK_INT(sgbd_stepper_new(&s, &o, 1), 0);
    sgbd_stepper_step(s, &theta, 0, quad_loss_grad, &q);
    CHECK_NEAR(q.at[2][0], 0.900000, 1e-6);
    CHECK_NEAR(theta, 0.846538, 1e-6);
    struct sgbd_adam *a = sgbd_stepper_adam(s);
    CHECK_NEAR(a->m[0], 0.0765, 1e-7);
    CHECK_NEAR(a->v[0], 0.00113380, 1e-8);
    CHECK_INT(a->step, 2);

    sgbd_stepper_step(s, &theta, 1, quad_loss_grad, &q); /* normal batch */
    CHECK_INT(q.calls, 4);
    CHECK_NEAR(theta, 0.774429, 1e-6);
    CHECK_INT(a->step, 3);
    sgbd_stepper_free(s);
}

static void test_sharpness_mg_vector(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_MG, SGBD_BASE_ADAM);
    struct sgbd_stepper *s;
    struct quad q = quad_1d();
    float theta = 1.0f;

    CHECK_INT(sgbd_stepper_new(&s, &o, 1), 0);
    sgbd_stepper_step(s, &theta, 0, quad_loss_grad, &q);
    CHECK_INT(q.calls, 2);               /* no SAM pass at all */
    CHECK_NEAR(q.at[0][0], 1.0, 0);
    CHECK_NEAR(q.at[1][0], 0.900000, 1e-6);
    CHECK_NEAR(theta, 0.847244, 1e-6);
    sgbd_stepper_free(s);
}

/* Run `steps` batches with indices first..first+steps-1 on a 5-D
 * quadratic, starting from a fixed point; returns the final theta. */
static void run_rule(const struct sgbd_step_opts *o, size_t first,
                     int steps, float *theta, uint64_t *evals)
{
    struct sgbd_stepper *s;
    struct quad q = {.n = 5, .a = {1.0, 0.5, 3.0, 0.1, 2.0}};
    const float start[5] = {1.0f, -2.0f, 0.3f, 4.0f, -0.7f};

    memcpy(theta, start, sizeof(start));
    if (sgbd_stepper_new(&s, o, 5) != 0) {
        theta[0] = NAN;
        return;
    }
    for (int k = 0; k < steps; k++)
        sgbd_stepper_step(s, theta, first + (size_t)k, quad_loss_grad, &q);
    if (evals)
        *evals = sgbd_stepper_grad_evals(s);
    sgbd_stepper_free(s);
}

static void test_sharpness_sgbd_with_rho_zero_is_mg(void)
{
    struct sgbd_step_opts sg = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    struct sgbd_step_opts mg = opts(SGBD_OPT_MG, SGBD_BASE_ADAM);
    float a[5], b[5];

    sg.rho = 0.0;
    sg.adam.weight_decay = mg.adam.weight_decay = 0.01;
    run_rule(&sg, 0, 10, a, NULL);
    run_rule(&mg, 0, 10, b, NULL);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
}

static void test_sharpness_huge_beta_is_adam(void)
{
    struct sgbd_step_opts sg = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    struct sgbd_step_opts ad = opts(SGBD_OPT_ADAM, SGBD_BASE_ADAM);
    float a[5], b[5];

    sg.beta = INT_MAX; /* batches 1..10 are never multiples of beta */
    run_rule(&sg, 1, 10, a, NULL);
    run_rule(&ad, 1, 10, b, NULL);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    sg.beta = 0;       /* 0 = never mirror, batch 0 included */
    run_rule(&sg, 0, 10, a, NULL);
    run_rule(&ad, 0, 10, b, NULL);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
}

/* SAM's second pass sees theta + rho g / ||g|| with the global norm;
 * the base step then uses the gradient there, from the exact theta. */
static void test_sharpness_sam_perturbs_along_the_gradient(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_SAM, SGBD_BASE_SGD);
    struct sgbd_stepper *s;
    struct quad q = {.n = 4, .a = {1.0, 2.0, 0.5, 4.0}};
    float theta[4] = {0.3f, -1.0f, 2.0f, 0.1f}, t0[4];
    double g[4], norm = 0;

    memcpy(t0, theta, sizeof(theta));
    for (int i = 0; i < 4; i++) {
        g[i] = q.a[i] * t0[i];
        norm += g[i] * g[i];
    }
    norm = sqrt(norm);
    CHECK_INT(sgbd_stepper_new(&s, &o, 4), 0);
    sgbd_stepper_step(s, theta, 0, quad_loss_grad, &q);
    CHECK_INT(q.calls, 2);
    for (int i = 0; i < 4; i++) {
        double e = 0.05 * g[i] / (norm + 1e-12);
        CHECK_NEAR(q.at[1][i] - t0[i], e, 1e-6);
        double g1 = q.a[i] * (double)q.at[1][i];
        CHECK_NEAR(theta[i], t0[i] - 0.1 * g1, 1e-6);
    }
    sgbd_stepper_free(s);
}

/* With lr 0 a SAM step must leave theta bitwise as it was: it is copied
 * back, not recomputed as (theta + e) - e, which rounds. */
static void test_sharpness_restores_theta_exactly(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_SAM, SGBD_BASE_SGD);
    struct sgbd_stepper *s;
    struct quad q = {.n = 8, .a = {1, 3, 7, 0.3, 11, 0.01, 5, 2}};
    float theta[8], t0[8];
    int rounds = 0;

    o.adam.lr = 0.0;
    o.rho = 0.37;
    for (int i = 0; i < 8; i++)
        theta[i] = t0[i] = 1e-3f * (float)(i + 1) + 1e-7f * (float)(i * i);
    CHECK_INT(sgbd_stepper_new(&s, &o, 8), 0);
    sgbd_stepper_step(s, theta, 0, quad_loss_grad, &q);
    CHECK(memcmp(theta, t0, sizeof(t0)) == 0);
    for (int i = 0; i < 8; i++) { /* the naive undo would not have been */
        float e = q.at[1][i] - t0[i];
        rounds += q.at[1][i] - e != t0[i];
    }
    CHECK(rounds > 0);
    sgbd_stepper_free(s);
}

static void test_sharpness_asam_scales_by_theta(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_SAM, SGBD_BASE_SGD);
    struct sgbd_stepper *s;
    struct quad q = {.n = 3, .a = {1.0, 2.0, 0.5}};
    float theta[3] = {0.5f, -3.0f, 0.0f}, t0[3];
    double tg[3], norm = 0;

    o.adaptive = 1;
    o.rho = 2.0;
    memcpy(t0, theta, sizeof(theta));
    for (int i = 0; i < 3; i++) {
        tg[i] = fabs(t0[i]) * q.a[i] * t0[i];
        norm += tg[i] * tg[i];
    }
    norm = sqrt(norm);
    CHECK_INT(sgbd_stepper_new(&s, &o, 3), 0);
    sgbd_stepper_step(s, theta, 0, quad_loss_grad, &q);
    for (int i = 0; i < 3; i++) {
        double e = 2.0 * fabs(t0[i]) * tg[i] / (norm + 1e-12);
        CHECK_NEAR(q.at[1][i] - t0[i], e, 1e-5);
    }
    CHECK(q.at[1][2] == 0.0f); /* |theta| = 0: not perturbed */
    sgbd_stepper_free(s);
}

static void test_sharpness_counts_gradient_evaluations(void)
{
    float t[5];
    uint64_t ev;
    struct sgbd_step_opts o;

    /* 10 batches, beta 3: mirror batches 0, 3, 6, 9 */
    o = opts(SGBD_OPT_ADAM, SGBD_BASE_ADAM);
    run_rule(&o, 0, 10, t, &ev);
    CHECK_INT(ev, 10);
    o = opts(SGBD_OPT_MG, SGBD_BASE_ADAM);
    run_rule(&o, 0, 10, t, &ev);
    CHECK_INT(ev, 14);
    o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    run_rule(&o, 0, 10, t, &ev);
    CHECK_INT(ev, 18);
    o = opts(SGBD_OPT_SAM, SGBD_BASE_ADAM);
    run_rule(&o, 0, 10, t, &ev);
    CHECK_INT(ev, 20);
    o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    o.sam_on_normal_steps = 1;
    run_rule(&o, 0, 10, t, &ev);
    CHECK_INT(ev, 24);
}

/* Normal batches with sam_on_normal_steps are SAM steps: the same theta
 * as the sam rule when no batch mirrors. */
static void test_sharpness_sam_on_normal_steps(void)
{
    struct sgbd_step_opts sg = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    struct sgbd_step_opts sam = opts(SGBD_OPT_SAM, SGBD_BASE_ADAM);
    float a[5], b[5];

    sg.sam_on_normal_steps = 1;
    sg.beta = 100;
    run_rule(&sg, 1, 8, a, NULL);
    run_rule(&sam, 1, 8, b, NULL);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
}

static void test_sharpness_nan_stops_and_restores(void)
{
    struct sgbd_step_opts o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    struct sgbd_stepper *s;
    struct quad q = quad_1d();
    float theta = 1.0f;

    q.nan_at_call = 2; /* the perturbed pass fails */
    CHECK_INT(sgbd_stepper_new(&s, &o, 1), 0);
    double loss = sgbd_stepper_step(s, &theta, 0, quad_loss_grad, &q);
    CHECK(isnan(loss));
    CHECK(theta == 1.0f);        /* restored, no base step taken */
    CHECK_INT(sgbd_stepper_adam(s)->step, 0);
    sgbd_stepper_free(s);
}

static void test_sharpness_rejects_bad_options(void)
{
    struct sgbd_step_opts o;
    struct sgbd_stepper *s = (struct sgbd_stepper *)&o;
    enum sgbd_optimizer k;

    o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    o.rho = -0.1;
    CHECK_INT(sgbd_stepper_new(&s, &o, 4), SGBD_E_CONFIG);
    CHECK(s == NULL);
    CHECK(strstr(sgbd_err_detail(SGBD_E_CONFIG), "rho") != NULL);
    o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    o.beta = -1;
    CHECK_INT(sgbd_stepper_new(&s, &o, 4), SGBD_E_CONFIG);
    o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    o.alpha2 = INFINITY;
    CHECK_INT(sgbd_stepper_new(&s, &o, 4), SGBD_E_CONFIG);
    o = opts(SGBD_OPT_SGBD, SGBD_BASE_ADAM);
    o.adam.lr = -1;
    CHECK_INT(sgbd_stepper_new(&s, &o, 4), SGBD_E_CONFIG);

    CHECK_INT(sgbd_optimizer_parse("mg", &k), 0);
    CHECK_INT(k, SGBD_OPT_MG);
    CHECK_INT(sgbd_optimizer_parse("sgd", &k), SGBD_E_NOTFOUND);
    CHECK(strstr(sgbd_err_detail(SGBD_E_NOTFOUND), "sgbd") != NULL);
    CHECK_STR(sgbd_optimizer_name(SGBD_OPT_SAM), "sam");
    sgbd_stepper_free(NULL);
}

int main(void)
{
    RUN(test_sharpness_defaults_are_the_reference);
    RUN(test_sharpness_sgd_vector);
    RUN(test_sharpness_adam_vector);
    RUN(test_sharpness_mg_vector);
    RUN(test_sharpness_sgbd_with_rho_zero_is_mg);
    RUN(test_sharpness_huge_beta_is_adam);
    RUN(test_sharpness_sam_perturbs_along_the_gradient);
    RUN(test_sharpness_restores_theta_exactly);
    RUN(test_sharpness_asam_scales_by_theta);
    RUN(test_sharpness_counts_gradient_evaluations);
    RUN(test_sharpness_sam_on_normal_steps);
    RUN(test_sharpness_nan_stops_and_restores);
    RUN(test_sharpness_rejects_bad_options);
    return harness_finish();
}
