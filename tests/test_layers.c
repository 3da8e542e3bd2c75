/* test_layers.c - shared layer kernels: values and gradient checks. */
/* ctest: labels=unit,grad timeout=60 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "gradcheck.h"
#include "sgbd/layers.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"

static void fill_uniform(float *x, size_t n, float lo, float hi,
                         struct sgbd_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)sgbd_rng_uniform(r);
}

/* sum_j r_j y_j in double: a random linear read-out of a layer output. */
static double readout(const float *y, const float *r, size_t n)
{
    double s = 0.0;

    for (size_t j = 0; j < n; j++)
        s += (double)r[j] * y[j];
    return s;
}

static const struct gradcheck_opts opts = {
    .n_probe = 400, .h = 1e-2, .floor_rel = 1e-2, .seed = 11};

/* ---- linear ---------------------------------------------------------- */

struct lin_ctx {
    size_t B, in, out;
    float *y, *r;
};

/* theta = [x (B, in) | W (out, in) | b (out)] */
static double lin_loss(void *vc, const float *th, float *g)
{
    struct lin_ctx *c = vc;
    const float *x = th, *w = th + c->B * c->in, *b = w + c->out * c->in;

    sgbd_layer_linear_forward(c->y, x, w, b, c->B, c->in, c->out);
    if (g)
        sgbd_layer_linear_backward(g, g + c->B * c->in,
                                   g + c->B * c->in + c->out * c->in, c->r, x,
                                   w, c->B, c->in, c->out);
    return readout(c->y, c->r, c->B * c->out);
}

static void test_layers_linear_matches_loops(void)
{
    enum { B = 5, IN = 7, OUT = 3 };
    float x[B * IN], w[OUT * IN], b[OUT], y[B * OUT];
    struct sgbd_rng r;

    sgbd_rng_init(&r, 1, 1);
    fill_uniform(x, B * IN, -1, 1, &r);
    fill_uniform(w, OUT * IN, -1, 1, &r);
    fill_uniform(b, OUT, -1, 1, &r);
    sgbd_layer_linear_forward(y, x, w, b, B, IN, OUT);
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OUT; o++) {
            double s = b[o];
            for (int k = 0; k < IN; k++)
                s += (double)x[i * IN + k] * w[o * IN + k];
            CHECK_NEAR(y[i * OUT + o], s, 1e-5);
        }
    sgbd_layer_linear_forward(y, x, w, NULL, B, IN, OUT);
    double s = 0.0;
    for (int k = 0; k < IN; k++)
        s += (double)x[IN + k] * w[2 * IN + k];
    CHECK_NEAR(y[OUT + 2], s, 1e-5);
}

static void test_layers_linear_gradient(void)
{
    struct lin_ctx c = {.B = 6, .in = 9, .out = 4};
    size_t n = c.B * c.in + c.out * c.in + c.out;
    float th[6 * 9 + 4 * 9 + 4], y[6 * 4], rr[6 * 4];
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 2, 1);
    fill_uniform(th, n, -1, 1, &r);
    fill_uniform(rr, c.B * c.out, -1, 1, &r);
    c.y = y, c.r = rr;
    CHECK(gradcheck_run(lin_loss, &c, th, n, &opts, &res) == 0);
    gradcheck_print("linear", &res);
    CHECK_GRAD(res, 1e-3);
}

static void test_layers_linear_backward_adds(void)
{
    enum { B = 2, IN = 3, OUT = 2 };
    float x[B * IN] = {1, 2, 3, 4, 5, 6}, w[OUT * IN] = {1, 0, -1, 2, 1, 0};
    float dy[B * OUT] = {1, 0, 0, 1};
    float dx[B * IN], dw[OUT * IN], db[OUT] = {10, 20};

    for (int i = 0; i < B * IN; i++)
        dx[i] = 100.0f;
    for (int i = 0; i < OUT * IN; i++)
        dw[i] = 0.5f;
    sgbd_layer_linear_backward(dx, dw, db, dy, x, w, B, IN, OUT);
    /* dx = 100 + dy W: row 0 = W[0], row 1 = W[1] */
    CHECK_NEAR(dx[0], 101, 1e-6);
    CHECK_NEAR(dx[2], 99, 1e-6);
    CHECK_NEAR(dx[3], 102, 1e-6);
    /* dw = 0.5 + dy^T x: row 0 = x[0], row 1 = x[1] */
    CHECK_NEAR(dw[1], 2.5, 1e-6);
    CHECK_NEAR(dw[5], 6.5, 1e-6);
    CHECK_NEAR(db[0], 11, 1e-6);
    CHECK_NEAR(db[1], 21, 1e-6);
}

/* ---- leaky ReLU ------------------------------------------------------ */

struct ew_ctx {
    size_t n, rows, D;
    float *y, *r, *aux;
};

static double leaky_loss(void *vc, const float *th, float *g)
{
    struct ew_ctx *c = vc;

    sgbd_layer_leaky_forward(c->y, th, c->n);
    if (g)
        sgbd_layer_leaky_backward(g, c->r, c->y, c->n);
    return readout(c->y, c->r, c->n);
}

static void test_layers_leaky_values_and_gradient(void)
{
    float x[64], y[64], rr[64];
    struct ew_ctx c = {.n = 64, .y = y, .r = rr};
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 3, 1);
    fill_uniform(x, 64, -1, 1, &r);
    fill_uniform(rr, 64, -1, 1, &r);
    x[0] = -2.0f, x[1] = 3.0f, x[2] = 0.0f;
    sgbd_layer_leaky_forward(y, x, 3);
    CHECK_NEAR(y[0], -0.02, 1e-7);
    CHECK_NEAR(y[1], 3.0, 0);
    CHECK_NEAR(y[2], 0.0, 0);
    x[2] = 0.5f;
    CHECK(gradcheck_run(leaky_loss, &c, x, 64, &opts, &res) == 0);
    gradcheck_print("leaky", &res);
    CHECK_GRAD(res, 1e-3);
}

/* ---- row normalisation ----------------------------------------------- */

static double rownorm_loss(void *vc, const float *th, float *g)
{
    struct ew_ctx *c = vc;

    sgbd_layer_rownorm_forward(c->y, c->aux, th, c->rows, c->D);
    if (g)
        sgbd_layer_rownorm_backward(g, c->r, c->y, c->aux, c->rows, c->D);
    return readout(c->y, c->r, c->rows * c->D);
}

static void test_layers_rownorm_values_and_gradient(void)
{
    enum { R = 5, D = 6 };
    float x[R * D], y[R * D], rr[R * D], nrm[R];
    struct ew_ctx c = {.rows = R, .D = D, .y = y, .r = rr, .aux = nrm};
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 4, 1);
    fill_uniform(x, R * D, -2, 2, &r);
    fill_uniform(rr, R * D, -1, 1, &r);
    sgbd_layer_rownorm_forward(y, nrm, x, R, D);
    for (int i = 0; i < R; i++) {
        double s = 0;
        for (int k = 0; k < D; k++)
            s += (double)y[i * D + k] * y[i * D + k];
        CHECK_NEAR(s, 1.0, 1e-6);
    }
    CHECK(gradcheck_run(rownorm_loss, &c, x, R * D, &opts, &res) == 0);
    gradcheck_print("rownorm", &res);
    CHECK_GRAD(res, 1e-3);
}

static void test_layers_rownorm_zero_row_is_finite(void)
{
    float x[4] = {0, 0, 3, 4}, y[4], nrm[2], dx[4] = {0}, dy[4] = {1, 2, 0, 0};

    sgbd_layer_rownorm_forward(y, nrm, x, 2, 2);
    CHECK_NEAR(y[0], 0, 0);
    CHECK_NEAR(y[2], 0.6, 1e-7);
    CHECK_NEAR(y[3], 0.8, 1e-7);
    sgbd_layer_rownorm_backward(dx, dy, y, nrm, 2, 2);
    CHECK(isfinite(dx[0]) && isfinite(dx[1]));
    CHECK_NEAR(dx[1] * SGBD_NORM_EPS, 2.0, 1e-6);
    CHECK_NEAR(dx[2], 0, 0);
}

/* ---- gather / scatter ------------------------------------------------ */

struct gather_ctx {
    const uint32_t *idx;
    size_t n, D;
    float *y, *r;
};

static double gather_loss(void *vc, const float *th, float *g)
{
    struct gather_ctx *c = vc;

    sgbd_layer_gather_rows(c->y, th, c->idx, c->n, c->D);
    if (g)
        sgbd_layer_scatter_add_rows(g, c->r, c->idx, c->n, c->D);
    return readout(c->y, c->r, c->n * c->D);
}

static void test_layers_gather_scatter_duplicates_accumulate(void)
{
    static const uint32_t idx[6] = {3, 0, 3, 3, 1, 0};
    float x[5 * 4], y[6 * 4], rr[6 * 4], g[5 * 4] = {0};
    struct gather_ctx c = {.idx = idx, .n = 6, .D = 4, .y = y, .r = rr};
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 5, 1);
    fill_uniform(x, 20, -1, 1, &r);
    fill_uniform(rr, 24, -1, 1, &r);
    gather_loss(&c, x, g);
    CHECK_NEAR(y[2 * 4 + 1], x[3 * 4 + 1], 0);
    CHECK_NEAR(g[3 * 4 + 2], rr[0 * 4 + 2] + rr[2 * 4 + 2] + rr[3 * 4 + 2],
               1e-6);
    CHECK_NEAR(g[4 * 4], 0, 0); /* row 4 never gathered */
    CHECK(gradcheck_run(gather_loss, &c, x, 20, &opts, &res) == 0);
    CHECK_GRAD(res, 1e-3);
}

/* ---- BPR score differences ------------------------------------------- */

static double diff_loss(void *vc, const float *th, float *g)
{
    struct ew_ctx *c = vc;
    size_t B = c->rows, D = c->D;
    const float *u = th, *p = th + B * D, *q = th + 2 * B * D;

    sgbd_layer_bpr_diff_forward(c->y, u, p, q, B, D);
    if (g)
        sgbd_layer_bpr_diff_backward(g, g + B * D, g + 2 * B * D, c->r, u, p, q,
                                     B, D);
    return readout(c->y, c->r, B);
}

static void test_layers_bpr_diff_values_and_gradient(void)
{
    enum { B = 4, D = 5 };
    float th[3 * B * D], y[B], rr[B];
    struct ew_ctx c = {.rows = B, .D = D, .y = y, .r = rr};
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 6, 1);
    fill_uniform(th, 3 * B * D, -1, 1, &r);
    fill_uniform(rr, B, -1, 1, &r);
    sgbd_layer_bpr_diff_forward(y, th, th + B * D, th + 2 * B * D, B, D);
    double s = 0;
    for (int k = 0; k < D; k++)
        s += (double)th[D + k] * (th[B * D + D + k] - th[2 * B * D + D + k]);
    CHECK_NEAR(y[1], s, 1e-6);
    CHECK(gradcheck_run(diff_loss, &c, th, 3 * B * D, &opts, &res) == 0);
    CHECK_GRAD(res, 1e-3);
}

/* ---- InfoNCE --------------------------------------------------------- */

static double infonce_loss(void *vc, const float *th, float *g)
{
    struct ew_ctx *c = vc;

    return sgbd_layer_infonce(g, th, c->rows, 1.0);
}

static void test_layers_infonce_value_and_gradient(void)
{
    float l2[4] = {1.0f, 3.0f, -2.0f, 0.5f};
    double want = 0.5 * (log(exp(1.0) + exp(3.0)) - 1.0 +
                         log(exp(-2.0) + exp(0.5)) - 0.5);
    float big[4] = {1000.0f, 990.0f, 0.0f, 1000.0f};
    float lg[7 * 7], d[4] = {0};
    struct ew_ctx c = {.rows = 7};
    struct gradcheck_result res;
    struct sgbd_rng r;

    CHECK_NEAR(sgbd_layer_infonce(d, l2, 2, 2.0), want, 1e-6);
    /* d = 2 * (softmax - I) / 2: row sums are zero */
    CHECK_NEAR(d[0] + d[1], 0.0, 1e-6);
    CHECK_NEAR(d[1], exp(3.0) / (exp(1.0) + exp(3.0)), 1e-6);
    CHECK(isfinite(sgbd_layer_infonce(NULL, big, 2, 1.0)));
    sgbd_rng_init(&r, 7, 1);
    fill_uniform(lg, 49, -3, 3, &r);
    CHECK(gradcheck_run(infonce_loss, &c, lg, 49, &opts, &res) == 0);
    gradcheck_print("infonce", &res);
    CHECK_GRAD(res, 1e-3);
}

/* A batch large enough for the pool, off the 64-wide chunks: loss and
 * gradient against double, the same bits on one thread and two. */
static void test_layers_infonce_large_batch_on_any_thread_count(void)
{
    const size_t B = 300;
    float *lg = malloc(B * B * sizeof(float));
    float *d[2] = {calloc(B * B, sizeof(float)), calloc(B * B, sizeof(float))};
    double loss[2], want = 0.0, worst = 0.0;
    struct sgbd_rng r;

    CHECK(lg && d[0] && d[1]);
    sgbd_rng_init(&r, 11, 1);
    fill_uniform(lg, B * B, -8, 8, &r);
    for (int t = 0; t < 2; t++) {
        CHECK_INT(sgbd_parallel_set_threads(t + 1), 0);
        loss[t] = sgbd_layer_infonce(d[t], lg, B, 3.0);
    }
    sgbd_parallel_set_threads(0);
    CHECK(loss[0] == loss[1]);
    CHECK(memcmp(d[0], d[1], B * B * sizeof(float)) == 0);
    for (size_t b = 0; b < B; b++) {
        double z = 0.0;
        for (size_t c = 0; c < B; c++)
            z += exp((double)lg[b * B + c]);
        want += log(z) - lg[b * B + b];
        for (size_t c = 0; c < B; c++) {
            double g = 3.0 * (exp((double)lg[b * B + c]) / z - (b == c)) / B;
            double e = fabs(d[0][b * B + c] - g);
            worst = e > worst ? e : worst;
        }
    }
    CHECK_NEAR(loss[0], want / B, 1e-5);
    CHECK(worst < 1e-7);
    free(d[0]), free(d[1]), free(lg);
}

struct pair_ctx {
    size_t n, w;
    float *ws;
};

/* theta = [a (n, w) | b (n, w)] */
static double pair_loss(void *vc, const float *th, float *g)
{
    struct pair_ctx *c = vc;
    size_t nw = c->n * c->w;

    return 0.5 * sgbd_layer_infonce_pair(g, g ? g + nw : NULL, th, th + nw,
                                         c->ws, c->n, c->w, 0.2, 0.5);
}

static void test_layers_infonce_pair_value_and_gradient(void)
{
    enum { N = 5, W = 3 };
    float th[2 * N * W], ws[2 * N * N];
    struct pair_ctx c = {N, W, ws};
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 10, 1);
    fill_uniform(th, 2 * N * W, -0.5, 0.5, &r);
    double want = 0;
    for (int i = 0; i < N; i++) {
        double z = 0, lii = 0;
        for (int j = 0; j < N; j++) {
            double l = 0;
            for (int k = 0; k < W; k++)
                l += (double)th[i * W + k] * th[N * W + j * W + k] / 0.2;
            z += exp(l);
            if (j == i)
                lii = l;
        }
        want += (log(z) - lii) / N;
    }
    CHECK_NEAR(2 * pair_loss(&c, th, NULL), want, 1e-5);
    CHECK(gradcheck_run(pair_loss, &c, th, 2 * N * W, &opts, &res) == 0);
    gradcheck_print("infonce_pair", &res);
    CHECK_GRAD(res, 1e-3);
}

static void test_layers_softmax_rows_weights(void)
{
    float c[2 * 3] = {5, 1, 1, 0, 0, 0}, a[6];

    sgbd_layer_softmax_rows(a, c, 2, 3);
    CHECK_NEAR(a[0] + a[1] + a[2], 1.0, 1e-6);
    CHECK_NEAR(a[0] / a[1], exp(4.0), 1e-3);
    CHECK_NEAR(a[4], 1.0 / 3.0, 1e-7);
    sgbd_layer_softmax_rows(c, c, 2, 3); /* in place */
    CHECK_NEAR(c[0], a[0], 0);
}

/* ---- a composed MLP: linear -> leaky -> linear -> rownorm ------------ */

struct mlp_ctx {
    size_t B, in, hid, out;
    float *x, *h, *z, *y, *nrm, *dh, *dz, *r;
};

/* theta = [W1 (hid, in) | b1 (hid) | W2 (out, hid) | b2 (out)] */
static double mlp_loss(void *vc, const float *th, float *g)
{
    struct mlp_ctx *c = vc;
    const float *w1 = th, *b1 = w1 + c->hid * c->in;
    const float *w2 = b1 + c->hid, *b2 = w2 + c->out * c->hid;

    sgbd_layer_linear_forward(c->h, c->x, w1, b1, c->B, c->in, c->hid);
    sgbd_layer_leaky_forward(c->h, c->h, c->B * c->hid);
    sgbd_layer_linear_forward(c->z, c->h, w2, b2, c->B, c->hid, c->out);
    sgbd_layer_rownorm_forward(c->y, c->nrm, c->z, c->B, c->out);
    if (g) {
        float *gw1 = g, *gb1 = gw1 + c->hid * c->in;
        float *gw2 = gb1 + c->hid, *gb2 = gw2 + c->out * c->hid;
        memset(c->dz, 0, c->B * c->out * sizeof(float));
        memset(c->dh, 0, c->B * c->hid * sizeof(float));
        sgbd_layer_rownorm_backward(c->dz, c->r, c->y, c->nrm, c->B, c->out);
        sgbd_layer_linear_backward(c->dh, gw2, gb2, c->dz, c->h, w2, c->B,
                                   c->hid, c->out);
        sgbd_layer_leaky_backward_inplace(c->dh, c->h, c->B * c->hid);
        sgbd_layer_linear_backward(NULL, gw1, gb1, c->dh, c->x, w1, c->B, c->in,
                                   c->hid);
    }
    return readout(c->y, c->r, c->B * c->out);
}

static void test_layers_mlp_chain_gradient(void)
{
    enum { B = 6, IN = 10, HID = 12, OUT = 4 };
    float x[B * IN], h[B * HID], z[B * OUT], y[B * OUT], nrm[B];
    float dh[B * HID], dz[B * OUT], rr[B * OUT];
    float th[HID * IN + HID + OUT * HID + OUT];
    struct mlp_ctx c = {B, IN, HID, OUT, x, h, z, y, nrm, dh, dz, rr};
    struct gradcheck_result res;
    struct sgbd_rng r;

    sgbd_rng_init(&r, 9, 1);
    fill_uniform(x, B * IN, -1, 1, &r);
    fill_uniform(th, sizeof(th) / sizeof(th[0]), -0.5, 0.5, &r);
    fill_uniform(rr, B * OUT, -1, 1, &r);
    CHECK(gradcheck_run(mlp_loss, &c, th, sizeof(th) / sizeof(th[0]), &opts,
                        &res) == 0);
    gradcheck_print("mlp", &res);
    CHECK_GRAD(res, 1e-3);
}

/* Inputs past 64 Ki floats run on the compute pool: the same values as
 * the element-wise definition, on any number of threads. */
static void test_layers_wide_inputs_on_the_pool(void)
{
    size_t n = 300001, rows = 5000, D = 60; /* rows * D <= n */
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    float *d = malloc(n * sizeof(float)), *norm = malloc(rows * sizeof(float));
    struct sgbd_rng rng;

    CHECK(x && y && d && norm);
    sgbd_rng_init(&rng, 31, SGBD_RNG_SYNTH);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)sgbd_rng_normal(&rng);
    for (int t = 1; t <= 2; t++) {
        CHECK_INT(sgbd_parallel_set_threads(t), 0);
        sgbd_layer_leaky_forward(y, x, n);
        memcpy(d, x, n * sizeof(float));
        sgbd_layer_leaky_backward_inplace(d, y, n);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            float want = x[i] > 0 ? x[i] : SGBD_LEAKY_SLOPE * x[i];
            float want_d = x[i] > 0 ? x[i] : SGBD_LEAKY_SLOPE * x[i];
            bad += y[i] != want || d[i] != want_d;
        }
        CHECK_INT(bad, 0);
        sgbd_layer_rownorm_forward(y, norm, x, rows, D);
        bad = 0;
        for (size_t r = 0; r < rows; r++) {
            double sq = 0;
            for (size_t c = 0; c < D; c++)
                sq += (double)x[r * D + c] * x[r * D + c];
            bad += fabs(norm[r] - sqrt(sq)) > 1e-5 * sqrt(sq) ||
                   fabs(y[r * D + 7] - x[r * D + 7] / sqrt(sq)) > 1e-6;
        }
        CHECK_INT(bad, 0);
    }
    sgbd_parallel_set_threads(0);
    free(x), free(y), free(d), free(norm);
}

int main(void)
{
    RUN(test_layers_linear_matches_loops);
    RUN(test_layers_linear_gradient);
    RUN(test_layers_linear_backward_adds);
    RUN(test_layers_leaky_values_and_gradient);
    RUN(test_layers_wide_inputs_on_the_pool);
    RUN(test_layers_rownorm_values_and_gradient);
    RUN(test_layers_rownorm_zero_row_is_finite);
    RUN(test_layers_gather_scatter_duplicates_accumulate);
    RUN(test_layers_bpr_diff_values_and_gradient);
    RUN(test_layers_infonce_value_and_gradient);
    RUN(test_layers_infonce_large_batch_on_any_thread_count);
    RUN(test_layers_infonce_pair_value_and_gradient);
    RUN(test_layers_softmax_rows_weights);
    RUN(test_layers_mlp_chain_gradient);
    return harness_finish();
}
