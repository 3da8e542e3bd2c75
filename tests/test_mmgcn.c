/* test_mmgcn.c - neighbour aggregation and fusion weights shared by
 * DualGNN and DRAGON. */
/* ctest: labels=unit,grad timeout=60 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "model_fixture.h"

#include "../daemon/models/mmgcn.h"
#include "sgbd/layers.h"

struct agg_ctx {
    uint32_t rows[5], nbr[6 * 3];
    float a[6 * 3], out[5 * 4], r[5 * 4];
};

static double agg_loss(void *vc, const float *th, float *g)
{
    struct agg_ctx *c = vc;
    double s = 0;

    sgbd_mmgcn_user_agg(c->out, th, c->rows, 5, 4, c->nbr, c->a, 3);
    if (g)
        sgbd_mmgcn_user_agg_backward(g, c->r, c->rows, 5, 4, c->nbr, c->a, 3);
    for (int k = 0; k < 20; k++)
        s += (double)c->r[k] * c->out[k];
    return s;
}

static void test_mmgcn_user_aggregation_gradient(void)
{
    struct agg_ctx c = {.rows = {0, 3, 3, 5, 1}};
    struct gradcheck_opts o = {.n_probe = 24, .h = 1e-2, .floor_rel = 1e-2};
    struct gradcheck_result res;
    float x[6 * 4];
    struct sgbd_rng r;

    sgbd_rng_init(&r, 2, 1);
    for (int k = 0; k < 18; k++) {
        c.nbr[k] = (uint32_t)sgbd_rng_below(&r, 6);
        c.a[k] = (float)sgbd_rng_uniform(&r);
    }
    sgbd_layer_softmax_rows(c.a, c.a, 6, 3);
    for (int k = 0; k < 20; k++)
        c.r[k] = (float)(2 * sgbd_rng_uniform(&r) - 1);
    for (int k = 0; k < 24; k++)
        x[k] = (float)(2 * sgbd_rng_uniform(&r) - 1);
    agg_loss(&c, x, NULL);
    double want = x[3 * 4 + 1];
    for (int s = 0; s < 3; s++)
        want += c.a[3 * 3 + s] * x[c.nbr[3 * 3 + s] * 4 + 1];
    CHECK_NEAR(c.out[1 * 4 + 1], want, 1e-6);
    CHECK(gradcheck_run(agg_loss, &c, x, 24, &o, &res) == 0);
    CHECK_GRAD(res, 1e-3);
}

static double fusion_loss(void *vc, const float *th, float *g)
{
    float scratch[5 * 3];
    return sgbd_mmgcn_fusion_reg(th, g ? g : scratch, 5, 3, 0.7);
}

static void test_mmgcn_fusion_weights(void)
{
    struct sgbd_params p = {0};
    struct gradcheck_opts o = {.n_probe = 15, .h = 1e-2, .floor_rel = 1e-2};
    struct gradcheck_result res;
    float t[5 * 3];
    double sq = 0;

    CHECK(sgbd_mmgcn_add_fusion(&p, "weight_u", 1000, 2) >= 0);
    /* spread of softmax(xavier) at init: var = 2 (C-1) / ((C+U) C^3) */
    CHECK_NEAR(2.0 / (p.t[0].fan_in + p.t[0].fan_out), 2.0 / (1002 * 8), 1e-9);
    for (int k = 0; k < 15; k++) {
        t[k] = 0.05f * (k - 7);
        double w = 1.0 / 3 + t[k];
        sq += w * w;
    }
    CHECK_NEAR(fusion_loss(NULL, t, NULL), 0.7 * sq / 15, 1e-6);
    CHECK_NEAR(sgbd_mmgcn_fusion_w(t, 3, 1, 2), 1.0 / 3 + t[5], 1e-7);
    CHECK(gradcheck_run(fusion_loss, NULL, t, 15, &o, &res) == 0);
    CHECK_GRAD(res, 1e-3);
}

int main(void)
{
    RUN(test_mmgcn_user_aggregation_gradient);
    RUN(test_mmgcn_fusion_weights);
    return harness_finish();
}
