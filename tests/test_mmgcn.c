/* test_mmgcn.c - user co-occurrence, its 40-slot sample, neighbour
 * aggregation and fusion weights shared by DualGNN and DRAGON. */
/* ctest: labels=unit,grad timeout=60 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "model_fixture.h"

#include "../daemon/models/mmgcn.h"

#define CU 30
#define CI 20

/* |I_u intersect I_w| by brute force over the sorted train sets. */
static uint32_t brute_count(const struct sgbd_dataset *ds, uint32_t u,
                            uint32_t w)
{
    uint32_t n = 0;

    for (uint64_t a = ds->train.ptr[u]; a < ds->train.ptr[u + 1]; a++)
        n += sgbd_itemsets_has(&ds->train, w, ds->train.items[a]) ? 1 : 0;
    return n;
}

static void check_cooc(const struct sgbd_dataset *ds, size_t max_n)
{
    struct sgbd_mmgcn_cooc c;

    CHECK_INT(sgbd_mmgcn_cooc_build(&c, ds, max_n), 0);
    for (uint32_t u = 0; u < CU; u++) {
        size_t want = 0;
        for (uint32_t w = 0; w < CU; w++)
            want += w != u && brute_count(ds, u, w) > 0;
        want = want < max_n ? want : max_n;
        CHECK_INT(c.ptr[u + 1] - c.ptr[u], want);
        for (uint64_t k = c.ptr[u]; k < c.ptr[u + 1]; k++) {
            CHECK(c.nbr[k] != u);
            CHECK_NEAR(c.cnt[k], brute_count(ds, u, c.nbr[k]), 0);
            if (k > c.ptr[u]) { /* count descending, then lower id */
                CHECK(c.cnt[k] <= c.cnt[k - 1]);
                if (c.cnt[k] == c.cnt[k - 1])
                    CHECK(c.nbr[k] > c.nbr[k - 1]);
            }
        }
        /* the kept ones are the best: nobody left out counts more */
        if (c.ptr[u + 1] > c.ptr[u] && want == max_n) {
            float last = c.cnt[c.ptr[u + 1] - 1];
            for (uint32_t w = 0; w < CU; w++) {
                int kept = 0;
                for (uint64_t k = c.ptr[u]; k < c.ptr[u + 1]; k++)
                    kept |= c.nbr[k] == w;
                if (!kept && w != u)
                    CHECK(brute_count(ds, u, w) <= last);
            }
        }
    }
    sgbd_mmgcn_cooc_free(&c);
}

static void test_mmgcn_cooc_matches_brute_force(void)
{
    struct sgbd_dataset ds;

    fixture_dataset(&ds, CU, CI, 150, 1);
    check_cooc(&ds, 200);
    check_cooc(&ds, 5);
    fixture_dataset_free(&ds);
}

static void test_mmgcn_sample_pads_and_weights(void)
{
    enum { K = 4 };
    /* user 0: 6 neighbours; user 1: 2; user 2: none */
    uint64_t ptr[4] = {0, 6, 8, 8};
    uint32_t nbr[8] = {5, 3, 9, 1, 2, 7, 4, 6};
    float cnt[8] = {6, 5, 5, 3, 2, 1, 3, 1};
    struct sgbd_mmgcn_cooc c = {3, ptr, nbr, cnt};
    uint32_t ids[3 * K];
    float w[3 * K];
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, 1, SGBD_RNG_GRAPH);
    sgbd_mmgcn_cooc_sample(&c, K, ids, w, &rng);
    double z = exp(6) + 2 * exp(5) + exp(3);
    for (int s = 0; s < K; s++) {
        CHECK_INT(ids[s], nbr[s]);
        CHECK_NEAR(w[s], exp(cnt[s]) / z, 1e-6);
    }
    CHECK_INT(ids[K], 4);
    CHECK_INT(ids[K + 1], 6);
    double sum = 0, zz = 0;
    for (int s = 0; s < K; s++) {
        CHECK(ids[K + s] == 4 || ids[K + s] == 6);
        zz += exp(ids[K + s] == 4 ? 3.0 : 1.0);
    }
    for (int s = 0; s < K; s++) {
        double want = exp(ids[K + s] == 4 ? 3.0 : 1.0) / zz;
        CHECK_NEAR(w[K + s], want, 1e-6);
        sum += w[K + s];
    }
    CHECK_NEAR(sum, 1.0, 1e-6);
    for (int s = 0; s < K; s++) {
        CHECK_INT(ids[2 * K + s], 0);
        CHECK_NEAR(w[2 * K + s], 0, 0);
    }
}

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
    RUN(test_mmgcn_cooc_matches_brute_force);
    RUN(test_mmgcn_sample_pads_and_weights);
    RUN(test_mmgcn_user_aggregation_gradient);
    RUN(test_mmgcn_fusion_weights);
    return harness_finish();
}
