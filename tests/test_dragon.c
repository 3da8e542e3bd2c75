/* test_dragon.c - DRAGON: dense reference, gradients, cold start. */
/* ctest: labels=unit,grad timeout=300 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "knn_ref.h"
#include "mmgcn_ref.h"
#include "model_fixture.h"
#include "sgbd/bf16.h"
#include "sgbd/err.h"
#include "sgbd/models.h"

#define TU  7
#define TI  9
#define TN  (TU + TI)
#define LD  64 /* DRAGON's fixed latent width */
#define KNN 3

static const char *const names2[2] = {"image", "text"};
static const size_t dims2[2] = {5, 3};
static const char *const names1[1] = {"image"};
static const size_t dims1[1] = {6};

static int make_with(struct sgbd_model **m, const struct sgbd_dataset *ds,
                     const struct sgbd_features *f, double reg, int bf16)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {ds, f, &hp};

    sgbd_hparams_defaults(&hp);
    hp.reg_weight = reg;
    hp.knn_k = KNN;
    hp.bf16_features = bf16;
    return sgbd_dragon_ops.create(m, &in);
}

static int make(struct sgbd_model **m, const struct sgbd_dataset *ds,
                const struct sgbd_features *f, double reg)
{
    return make_with(m, ds, f, reg, 0);
}

static void isolated_user_dataset(struct sgbd_dataset *ds, uint64_t seed)
{
    fixture_dataset(ds, TU, TI, 30, seed);
    for (size_t k = 0; k < ds->n_train; k++)
        if (ds->train_users[k] == 0)
            ds->train_items[k] = TI - 1;
    fixture_dataset_rebuild(ds);
}

static void test_dragon_forward_matches_dense_reference(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    static double rv[TN * LD], rt[TN * LD], G[TI * TI];
    static float users[TU * 2 * LD], items[TI * 2 * LD];
    const size_t W = 2 * LD;

    isolated_user_dataset(&ds, 1);
    fixture_features(&f, TI, 2, names2, dims2, 2);
    CHECK_INT(make(&m, &ds, &f, 1e-3), 0);
    CHECK_INT(m->dim, W);
    float *theta = fixture_theta(m, 3, 1.0f);
    float *wu = (float *)ref_tensor(m, theta, "", "weight_u");
    wu[0] += 0.2f, wu[1] -= 0.1f;
    ref_gcn_channel(rv, m, theta, &ds, &f.ch[0], LD);
    ref_gcn_channel(rt, m, theta, &ds, &f.ch[1], LD);
    knn_dense(G, &f, TI, KNN);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, W),
                            sgbd_mat_view(items, TI, W)),
              0);
    for (int i = 0; i < TI; i++)
        for (int d = 0; d < LD; d++) {
            double v = rv[(TU + i) * LD + d], t = rt[(TU + i) * LD + d];
            for (int j = 0; j < TI; j++) {
                v += G[i * TI + j] * rv[(TU + j) * LD + d];
                t += G[i * TI + j] * rt[(TU + j) * LD + d];
            }
            CHECK_NEAR(items[i * W + d], v, 1e-5);
            CHECK_NEAR(items[i * W + LD + d], t, 1e-5);
        }
    for (int d = 0; d < LD; d++) { /* user 0 has no co-occurring user */
        CHECK_NEAR(users[d], (0.5 + wu[0]) * rv[d], 1e-5);
        CHECK_NEAR(users[LD + d], (0.5 + wu[1]) * rt[d], 1e-5);
    }
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void check_gradient(int n_ch, double reg)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    struct gradcheck_result res;
    double frac;

    fixture_dataset(&ds, TU, TI, 30, 7);
    fixture_features(&f, TI, n_ch, n_ch == 1 ? names1 : names2,
                     n_ch == 1 ? dims1 : dims2, 8);
    fixture_batch(&fb, &ds, 6, 9);
    CHECK_INT(make(&m, &ds, &f, reg), 0);
    float *theta = fixture_theta(m, 10, 1.0f);
    CHECK(fixture_gradcheck_cover(m, theta, &fb.b, 60, 3e-2, &res, &frac) == 0);
    gradcheck_print("dragon", &res);
    CHECK_MODEL_GRAD(res, frac, 1e-2);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_dragon_loss_gradient(void)
{
    check_gradient(2, 0.1);
    check_gradient(1, 0.1);
}

static void test_dragon_loss_is_deterministic_and_adds(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;

    fixture_dataset(&ds, TU, TI, 30, 11);
    fixture_features(&f, TI, 2, names2, dims2, 12);
    fixture_batch(&fb, &ds, 8, 13);
    CHECK_INT(make(&m, &ds, &f, 1e-2), 0);
    size_t n = m->layout.n;
    float *theta = fixture_theta(m, 14, 1.0f);
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    float *g3 = malloc(n * sizeof(float));
    for (size_t k = 0; k < n; k++)
        g3[k] = 0.125f;
    double l1 = m->ops->loss_grad(m, theta, g1, &fb.b);
    double l2 = m->ops->loss_grad(m, theta, g2, &fb.b);
    double l3 = m->ops->loss_grad(m, theta, g3, &fb.b);
    CHECK(isfinite(l1) && l1 == l2 && l1 == l3);
    CHECK(memcmp(g1, g2, n * sizeof(float)) == 0);
    for (size_t k = 0; k < n; k++)
        CHECK_NEAR(g3[k], g1[k] + 0.125f, 1e-6);
    free(g3), free(g2), free(g1);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

/*
 * With bf16_features the feature projections multiply rounded inputs:
 * the loss and gradient move by about the rounding (2^-9 relative), and
 * no more. They must move at all, or the bfloat16 path was not taken.
 */
static int make_bf16(struct sgbd_model **m, const struct sgbd_dataset *ds,
                     const struct sgbd_features *f, int bf16)
{
    return make_with(m, ds, f, 1e-2, bf16);
}

static void test_dragon_bf16_features_keep_the_gradient(void)
{
    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    CHECK_INT(fixture_bf16_close(make_bf16, TU, TI, 2, names2, dims2, 8, 21),
              1);
}

static void test_dragon_new_item_from_features(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    static double rv[TN * LD], rt[TN * LD];
    double xv[LD], xt[LD];
    float v[2 * LD], q[2][5];

    fixture_dataset(&ds, TU, TI, 30, 15);
    fixture_features(&f, TI, 2, names2, dims2, 16);
    CHECK_INT(make(&m, &ds, &f, 1e-3), 0);
    float *theta = fixture_theta(m, 17, 1.0f);
    for (int k = 0; k < 5; k++) /* a new image near item 2's */
        q[0][k] = sgbd_mat_row(f.ch[0].m, 2)[k] + 0.1f * (k - 2);
    for (int k = 0; k < 3; k++)
        q[1][k] = sgbd_mat_row(f.ch[1].m, 6)[k] * 0.5f + 0.2f;
    const float *feats[2] = {q[0], q[1]};
    CHECK_INT(m->ops->embed_new_item(m, theta, feats, v), 0);

    ref_gcn_channel(rv, m, theta, &ds, &f.ch[0], LD);
    ref_gcn_channel(rt, m, theta, &ds, &f.ch[1], LD);
    ref_mlp_row(xv, m, theta, "image", q[0], 5, LD);
    ref_mlp_row(xt, m, theta, "text", q[1], 3, LD);
    double want[2 * LD];
    for (int d = 0; d < LD; d++)
        want[d] = xv[d], want[LD + d] = xt[d];
    for (int c = 0; c < 2; c++) {
        const float *cand[TI + 1];
        int nb[KNN];
        for (int j = 0; j < TI; j++)
            cand[j] = sgbd_mat_row(f.ch[c].m, j);
        cand[TI] = q[c]; /* the new item is in its own list */
        knn_top(cand, TI + 1, q[c], c == 0 ? 5 : 3, KNN, nb);
        double w = (c == 0 ? 0.1 : 0.9) / KNN;
        for (int k = 0; k < KNN; k++)
            for (int d = 0; d < LD; d++) {
                double yv = nb[k] == TI ? xv[d] : rv[(TU + nb[k]) * LD + d];
                double yt = nb[k] == TI ? xt[d] : rt[(TU + nb[k]) * LD + d];
                want[d] += w * yv;
                want[LD + d] += w * yt;
            }
    }
    for (int d = 0; d < 2 * LD; d++)
        CHECK_NEAR(v[d], want[d], 1e-5);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

/*
 * The cold start keeps the forward pass of the parameters it last saw:
 * asked again at the same theta it answers as a fresh model does, and
 * after theta changes in place (the same pointer) it answers for the new
 * contents, not the old.
 */
static void test_dragon_new_item_follows_theta(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL, *fresh = NULL;
    float v[2][2 * LD], want[2 * LD], q[2][5] = {{0.3f, -0.2f, 0.1f, 0.5f,
                                                  -0.4f},
                                                 {0.2f, 0.7f, -0.1f}};
    const float *feats[2] = {q[0], q[1]};

    fixture_dataset(&ds, TU, TI, 30, 41);
    fixture_features(&f, TI, 2, names2, dims2, 42);
    CHECK_INT(make(&m, &ds, &f, 1e-3), 0);
    float *theta = fixture_theta(m, 43, 1.0f);
    for (int r = 0; r < 2; r++) {
        CHECK_INT(m->ops->embed_new_item(m, theta, feats, v[r]), 0);
        CHECK_INT(make(&fresh, &ds, &f, 1e-3), 0);
        CHECK_INT(fresh->ops->embed_new_item(fresh, theta, feats, want), 0);
        fresh->ops->free(fresh);
        CHECK(memcmp(v[r], want, sizeof(want)) == 0);
        for (size_t k = 0; k < m->layout.n; k += 7) /* every tensor moves */
            theta[k] += 0.05f;
    }
    CHECK(memcmp(v[0], v[1], sizeof(v[0])) != 0);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_dragon_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {&ds, &f, &hp};

    fixture_dataset(&ds, TU, TI, 30, 21);
    CHECK_INT(make(&m, &ds, NULL, 1e-3), SGBD_E_CONFIG);
    fixture_features(&f, TI, 2, names2, dims2, 22);
    sgbd_hparams_defaults(&hp);
    hp.knn_k = 0;
    CHECK_INT(sgbd_dragon_ops.create(&m, &in), SGBD_E_CONFIG);
    CHECK(m == NULL);
    CHECK(sgbd_model_find("dragon") == &sgbd_dragon_ops);
    sgbd_dragon_ops.free(NULL);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

int main(void)
{
    RUN(test_dragon_forward_matches_dense_reference);
    RUN(test_dragon_loss_gradient);
    RUN(test_dragon_loss_is_deterministic_and_adds);
    RUN(test_dragon_bf16_features_keep_the_gradient);
    RUN(test_dragon_new_item_from_features);
    RUN(test_dragon_new_item_follows_theta);
    RUN(test_dragon_rejects_bad_input);
    return harness_finish();
}
