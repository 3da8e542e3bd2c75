/* test_dualgnn.c - DualGNN: dense reference, fusion flag, gradients. */
/* ctest: labels=unit,grad timeout=300 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "mmgcn_ref.h"
#include "model_fixture.h"
#include "sgbd/err.h"
#include "sgbd/models.h"

#define TU 7
#define TI 9
#define TN (TU + TI)
#define LD 64 /* DualGNN's fixed latent width */

static const char *const names2[2] = {"image", "text"};
static const size_t dims2[2] = {5, 3};
static const char *const names1[1] = {"text"};
static const size_t dims1[1] = {4};

static int make(struct sgbd_model **m, const struct sgbd_dataset *ds,
                const struct sgbd_features *f, double reg, int bug)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {ds, f, &hp};

    sgbd_hparams_defaults(&hp);
    hp.reg_weight = reg;
    hp.dualgnn_inplace_bug = bug;
    return sgbd_dualgnn_ops.create(m, &in);
}

/* Rows of user 0 all go to item TI - 1, which nobody else has: user 0
 * then has no co-occurring user and z'_0 = z_0. */
static void isolated_user_dataset(struct sgbd_dataset *ds, uint64_t seed)
{
    fixture_dataset(ds, TU, TI, 30, seed);
    for (size_t k = 0; k < ds->n_train; k++)
        if (ds->train_users[k] == 0)
            ds->train_items[k] = TI - 1;
    fixture_dataset_rebuild(ds);
}

static void check_reference(int bug)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    static double rv[TN * LD], rt[TN * LD];
    static float users[TU * LD], items[TI * LD];

    isolated_user_dataset(&ds, 1);
    fixture_features(&f, TI, 2, names2, dims2, 2);
    CHECK_INT(make(&m, &ds, &f, 1e-3, bug), 0);
    CHECK_INT(m->dim, LD);
    float *theta = fixture_theta(m, 3, 1.0f);
    float *wu = (float *)ref_tensor(m, theta, "", "weight_u");
    CHECK(wu != NULL);
    wu[0] += 0.2f, wu[1] -= 0.1f; /* make the two weights differ */
    ref_gcn_channel(rv, m, theta, &ds, &f.ch[0], LD);
    ref_gcn_channel(rt, m, theta, &ds, &f.ch[1], LD);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, LD),
                            sgbd_mat_view(items, TI, LD)),
              0);
    for (int i = 0; i < TI; i++)
        for (int d = 0; d < LD; d++)
            CHECK_NEAR(items[i * LD + d],
                       rv[(TU + i) * LD + d] + rt[(TU + i) * LD + d], 1e-5);
    double w0 = 0.5 + wu[0], w1 = 0.5 + wu[1];
    for (int d = 0; d < LD; d++) {
        double v = rv[d], t = rt[d];
        double want = bug ? w0 * (v + t) + w1 * t : w0 * v + w1 * t;
        CHECK_NEAR(users[d], want, 1e-5);
    }
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_dualgnn_forward_matches_dense_reference(void)
{
    check_reference(1); /* MMRec's in-place fusion */
    check_reference(0); /* the paper's fusion */
}

static void test_dualgnn_user_graph_changes_users(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    static double rv[TN * LD], rt[TN * LD];
    static float users[TU * LD], items[TI * LD];

    isolated_user_dataset(&ds, 4);
    fixture_features(&f, TI, 2, names2, dims2, 5);
    CHECK_INT(make(&m, &ds, &f, 1e-3, 1), 0);
    float *theta = fixture_theta(m, 6, 1.0f);
    ref_gcn_channel(rv, m, theta, &ds, &f.ch[0], LD);
    ref_gcn_channel(rt, m, theta, &ds, &f.ch[1], LD);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, LD),
                            sgbd_mat_view(items, TI, LD)),
              0);
    const float *wu = ref_tensor(m, theta, "", "weight_u");
    double diff = 0;
    for (int d = 0; d < LD; d++) {
        double z = (0.5 + wu[2]) * (rv[LD + d] + rt[LD + d]) +
                   (0.5 + wu[3]) * rt[LD + d];
        diff += fabs(users[LD + d] - z);
    }
    CHECK(diff > 1e-2); /* user 1 has neighbours: z'_1 != z_1 */
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void check_gradient(int n_ch, int bug, double reg)
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
    CHECK_INT(make(&m, &ds, &f, reg, bug), 0);
    float *theta = fixture_theta(m, 10, 1.0f);
    CHECK(fixture_gradcheck_cover(m, theta, &fb.b, 60, 3e-2, &res, &frac) == 0);
    gradcheck_print("dualgnn", &res);
    CHECK_MODEL_GRAD(res, frac, 1e-2);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_dualgnn_loss_gradient(void)
{
    check_gradient(2, 1, 0.1);
    check_gradient(2, 0, 0.1);
    check_gradient(1, 1, 0.1);
}

static void test_dualgnn_loss_is_deterministic_and_adds(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;

    fixture_dataset(&ds, TU, TI, 30, 11);
    fixture_features(&f, TI, 2, names2, dims2, 12);
    fixture_batch(&fb, &ds, 8, 13);
    CHECK_INT(make(&m, &ds, &f, 1e-2, 1), 0);
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

static void test_dualgnn_new_item_from_features(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    float v[LD], w[LD];
    double xv[LD], xt[LD], mean[5] = {0};

    fixture_dataset(&ds, TU, TI, 30, 15);
    fixture_features(&f, TI, 2, names2, dims2, 16);
    CHECK_INT(make(&m, &ds, &f, 1e-3, 1), 0);
    float *theta = fixture_theta(m, 17, 1.0f);
    const float *fv = sgbd_mat_row(f.ch[0].m, 2),
                *ft = sgbd_mat_row(f.ch[1].m, 5);
    const float *feats[2] = {fv, ft};
    CHECK_INT(m->ops->embed_new_item(m, theta, feats, v), 0);
    ref_mlp_row(xv, m, theta, "image", fv, 5, LD);
    ref_mlp_row(xt, m, theta, "text", ft, 3, LD);
    for (int d = 0; d < LD; d++)
        CHECK_NEAR(v[d], xv[d] + xt[d], 1e-5);
    /* a missing image takes the mean image vector */
    const float *half[2] = {NULL, ft};
    CHECK_INT(m->ops->embed_new_item(m, theta, half, w), 0);
    float meanf[5];
    for (int i = 0; i < TI; i++)
        for (int k = 0; k < 5; k++)
            mean[k] += sgbd_mat_row(f.ch[0].m, i)[k] / TI;
    for (int k = 0; k < 5; k++)
        meanf[k] = (float)mean[k];
    ref_mlp_row(xv, m, theta, "image", meanf, 5, LD);
    for (int d = 0; d < LD; d++)
        CHECK_NEAR(w[d], xv[d] + xt[d], 1e-5);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_dualgnn_pre_epoch_resamples_padded_users(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct sgbd_rng rng;
    static float u1[TU * LD], u2[TU * LD], items[TI * LD];

    fixture_dataset(&ds, TU, TI, 30, 18);
    fixture_features(&f, TI, 2, names2, dims2, 19);
    CHECK_INT(make(&m, &ds, &f, 1e-3, 1), 0);
    float *theta = fixture_theta(m, 20, 1.0f);
    CHECK(m->ops->pre_epoch != NULL);
    sgbd_rng_init(&rng, 1, SGBD_RNG_GRAPH);
    CHECK_INT(m->ops->pre_epoch(m, theta, &rng), 0);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(u1, TU, LD),
                            sgbd_mat_view(items, TI, LD)),
              0);
    int changed = 0;
    for (int e = 0; e < 5 && !changed; e++) { /* < 40 neighbours: padded */
        CHECK_INT(m->ops->pre_epoch(m, theta, &rng), 0);
        CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(u2, TU, LD),
                                sgbd_mat_view(items, TI, LD)),
                  0);
        changed = memcmp(u1, u2, sizeof(u1)) != 0;
    }
    CHECK(changed);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_dualgnn_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;

    fixture_dataset(&ds, TU, TI, 30, 21);
    CHECK_INT(make(&m, &ds, NULL, 1e-3, 1), SGBD_E_CONFIG);
    fixture_features(&f, TI, 2, names2, dims2, 22);
    f.ch[0].m.rows = TI + 1;
    CHECK_INT(make(&m, &ds, &f, 1e-3, 1), SGBD_E_SHAPE);
    f.ch[0].m.rows = TI;
    snprintf(f.ch[0].name, sizeof(f.ch[0].name), "%s",
             "a_very_long_channel_name_xyz");
    CHECK_INT(make(&m, &ds, &f, 1e-3, 1), SGBD_E_LIMIT);
    CHECK(m == NULL);
    sgbd_dualgnn_ops.free(NULL);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

int main(void)
{
    RUN(test_dualgnn_forward_matches_dense_reference);
    RUN(test_dualgnn_user_graph_changes_users);
    RUN(test_dualgnn_loss_gradient);
    RUN(test_dualgnn_loss_is_deterministic_and_adds);
    RUN(test_dualgnn_new_item_from_features);
    RUN(test_dualgnn_pre_epoch_resamples_padded_users);
    RUN(test_dualgnn_rejects_bad_input);
    return harness_finish();
}
