/* test_vbpr.c - VBPR: reference values, gradients, cold start, contract. */
/* ctest: labels=unit,grad timeout=120 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "model_fixture.h"
#include "sgbd/bf16.h"
#include "sgbd/err.h"
#include "sgbd/models.h"

#define TU 7
#define TI 9
#define TD 4

static const char *const two_names[2] = {"image", "text"};
static const size_t two_dims[2] = {5, 3};

static int make_with(struct sgbd_model **m, const struct sgbd_dataset *ds,
                     const struct sgbd_features *f, double reg, int bf16)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {ds, f, &hp};

    sgbd_hparams_defaults(&hp);
    hp.embedding_size = TD;
    hp.reg_weight = reg;
    hp.bf16_features = bf16;
    return sgbd_vbpr_ops.create(m, &in);
}

static int make(struct sgbd_model **m, const struct sgbd_dataset *ds,
                const struct sgbd_features *f, double reg)
{
    return make_with(m, ds, f, reg, 0);
}

static const float *tensor(const struct sgbd_model *m, const float *theta,
                           const char *name)
{
    int t = sgbd_params_find(&m->layout, name);
    return t < 0 ? NULL : theta + m->layout.t[t].offset;
}

/* Item i's vector by hand: [E_i ; W [text ; image] + b], in double. */
static void ref_item(double *v, const struct sgbd_model *m, const float *theta,
                     const struct sgbd_features *f, uint32_t i)
{
    const float *ei = tensor(m, theta, "item_embedding");
    const float *w = tensor(m, theta, "item_linear.weight");
    const float *b = tensor(m, theta, "item_linear.bias");
    const struct sgbd_mat img = f->ch[0].m, txt = f->ch[1].m;
    size_t F = img.cols + txt.cols;

    for (int d = 0; d < TD; d++) {
        double s = b[d];
        for (size_t k = 0; k < txt.cols; k++)
            s += (double)w[d * F + k] * sgbd_mat_row(txt, i)[k];
        for (size_t k = 0; k < img.cols; k++)
            s += (double)w[d * F + txt.cols + k] * sgbd_mat_row(img, i)[k];
        v[d] = ei[i * TD + d];
        v[TD + d] = s;
    }
}

static void test_vbpr_embed_concatenates_text_first(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    float users[TU * 2 * TD], items[TI * 2 * TD];
    double v[2 * TD];

    fixture_dataset(&ds, TU, TI, 30, 1);
    fixture_features(&f, TI, 2, two_names, two_dims, 2);
    CHECK_INT(make(&m, &ds, &f, 1e-4), 0);
    CHECK_INT(m->dim, 2 * TD);
    float *theta = fixture_theta(m, 3, 1.0f);
    float *bias = (float *)tensor(m, theta, "item_linear.bias");
    for (int d = 0; d < TD; d++)
        bias[d] = 0.1f * (d + 1); /* zero at init; make it count */
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, 2 * TD),
                            sgbd_mat_view(items, TI, 2 * TD)),
              0);
    for (uint32_t i = 0; i < TI; i++) {
        ref_item(v, m, theta, &f, i);
        for (int d = 0; d < 2 * TD; d++)
            CHECK_NEAR(items[i * 2 * TD + d], v[d], 1e-5);
    }
    const float *eu = tensor(m, theta, "user_embedding");
    CHECK(memcmp(users, eu, sizeof(users)) == 0);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

/* BPR (ln, 1e-10) + reg * EmbLoss of the final vectors, by hand. */
static double ref_loss(const struct sgbd_model *m, const float *theta,
                       const struct sgbd_features *f,
                       const struct sgbd_batch *b, double reg)
{
    const float *eu = tensor(m, theta, "user_embedding");
    double bpr = 0, nu = 0, np = 0, nn = 0, vp[2 * TD], vn[2 * TD];

    for (size_t k = 0; k < b->n; k++) {
        const float *u = eu + b->users[k] * 2 * TD;
        double x = 0;
        ref_item(vp, m, theta, f, b->pos[k]);
        ref_item(vn, m, theta, f, b->neg[k]);
        for (int d = 0; d < 2 * TD; d++) {
            x += u[d] * (vp[d] - vn[d]);
            nu += (double)u[d] * u[d];
            np += vp[d] * vp[d];
            nn += vn[d] * vn[d];
        }
        bpr -= log(1e-10 + 1.0 / (1.0 + exp(-x)));
    }
    return bpr / b->n + reg * (sqrt(nu) + sqrt(np) + sqrt(nn)) / b->n;
}

static void test_vbpr_loss_matches_reference(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;

    fixture_dataset(&ds, TU, TI, 30, 2);
    fixture_features(&f, TI, 2, two_names, two_dims, 3);
    fixture_batch(&fb, &ds, 8, 4);
    CHECK_INT(make(&m, &ds, &f, 0.3), 0);
    float *theta = fixture_theta(m, 5, 3.0f);
    float *g = calloc(m->layout.n, sizeof(float));
    double got = m->ops->loss_grad(m, theta, g, &fb.b);
    CHECK_NEAR(got, ref_loss(m, theta, &f, &fb.b, 0.3), 1e-5);
    free(g);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void check_gradient(int n_ch, double reg)
{
    static const char *const one_name[1] = {"image"};
    static const size_t one_dim[1] = {6};
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    struct gradcheck_result res;

    fixture_dataset(&ds, TU, TI, 30, 6);
    fixture_features(&f, TI, n_ch, n_ch == 1 ? one_name : two_names,
                     n_ch == 1 ? one_dim : two_dims, 7);
    fixture_batch(&fb, &ds, 6, 8);
    CHECK_INT(make(&m, &ds, &f, reg), 0);
    float *theta = fixture_theta(m, 9, 3.0f);
    CHECK(fixture_gradcheck(m, theta, &fb.b, 100, &res) == 0);
    gradcheck_print("vbpr", &res);
    CHECK_GRAD(res, 1e-3);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_vbpr_loss_gradient(void)
{
    check_gradient(2, 0.1);
    check_gradient(1, 0.1);
    check_gradient(2, 0.0);
}

static void test_vbpr_loss_is_deterministic_and_adds(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;

    fixture_dataset(&ds, TU, TI, 30, 10);
    fixture_features(&f, TI, 2, two_names, two_dims, 11);
    fixture_batch(&fb, &ds, 8, 12);
    CHECK_INT(make(&m, &ds, &f, 1e-2), 0);
    size_t n = m->layout.n;
    float *theta = fixture_theta(m, 13, 1.0f);
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    float *g3 = malloc(n * sizeof(float));
    for (size_t k = 0; k < n; k++)
        g3[k] = -0.5f;
    double l1 = m->ops->loss_grad(m, theta, g1, &fb.b);
    double l2 = m->ops->loss_grad(m, theta, g2, &fb.b);
    double l3 = m->ops->loss_grad(m, theta, g3, &fb.b);
    CHECK(isfinite(l1) && l1 == l2 && l1 == l3);
    CHECK(memcmp(g1, g2, n * sizeof(float)) == 0);
    for (size_t k = 0; k < n; k++)
        CHECK_NEAR(g3[k], g1[k] - 0.5f, 1e-6);
    /* the projection gets a gradient, including the bias */
    const float *gb = tensor(m, g1, "item_linear.bias");
    CHECK(gb[0] != 0.0f);
    free(g3), free(g2), free(g1);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_vbpr_new_item_from_features(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    float users[TU * 2 * TD], items[TI * 2 * TD], v[2 * TD], w[2 * TD];

    fixture_dataset(&ds, TU, TI, 30, 14);
    fixture_features(&f, TI, 2, two_names, two_dims, 15);
    CHECK_INT(make(&m, &ds, &f, 1e-4), 0);
    float *theta = fixture_theta(m, 16, 1.0f);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, 2 * TD),
                            sgbd_mat_view(items, TI, 2 * TD)),
              0);
    const float *feats[2] = {sgbd_mat_row(f.ch[0].m, 4),
                             sgbd_mat_row(f.ch[1].m, 4)};
    CHECK_INT(m->ops->embed_new_item(m, theta, feats, v), 0);
    const float *ei = tensor(m, theta, "item_embedding");
    for (int d = 0; d < TD; d++) {
        double s = 0;
        for (size_t k = 0; k < ds.n_neg_items; k++)
            s += ei[ds.neg_items[k] * TD + d];
        CHECK_NEAR(v[d], s / ds.n_neg_items, 1e-6);
        /* same features, same projection as item 4 */
        CHECK_NEAR(v[TD + d], items[4 * 2 * TD + TD + d], 1e-5);
    }
    /* a missing image is replaced by the mean image: the projection is
     * then the mean over items of the image part plus the text part */
    const float *half[2] = {NULL, feats[1]};
    CHECK_INT(m->ops->embed_new_item(m, theta, half, w), 0);
    double mean_img[5] = {0};
    for (int i = 0; i < TI; i++)
        for (int k = 0; k < 5; k++)
            mean_img[k] += sgbd_mat_row(f.ch[0].m, i)[k] / TI;
    const float *wt = tensor(m, theta, "item_linear.weight");
    for (int d = 0; d < TD; d++) {
        double delta = 0;
        for (int k = 0; k < 5; k++)
            delta += wt[d * 8 + 3 + k] * (feats[0][k] - mean_img[k]);
        CHECK_NEAR(v[TD + d] - w[TD + d], delta, 1e-5);
    }
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_vbpr_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;

    fixture_dataset(&ds, TU, TI, 30, 17);
    CHECK_INT(make(&m, &ds, NULL, 1e-4), SGBD_E_CONFIG);
    CHECK(m == NULL);
    fixture_features(&f, TI, 2, two_names, two_dims, 18);
    f.ch[1].m.rows = TI - 1;
    CHECK_INT(make(&m, &ds, &f, 1e-4), SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_SHAPE), "text") != NULL);
    f.ch[1].m.rows = TI;
    CHECK_INT(make(&m, &ds, &f, 1e-4), 0);
    float *theta = fixture_theta(m, 19, 1.0f);
    float *g = calloc(m->layout.n, sizeof(float));
    struct fixture_batch fb;
    fixture_batch(&fb, &ds, 4, 20);
    fb.u[1] = TU;
    CHECK(isnan(m->ops->loss_grad(m, theta, g, &fb.b)));
    for (size_t k = 0; k < m->layout.n; k++)
        CHECK(g[k] == 0.0f);
    free(g);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    sgbd_vbpr_ops.free(NULL);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

/* With the features in bfloat16 the loss and gradient move by about the
 * rounding, and do move; the served vectors are the ones training saw,
 * close to the float32 ones. */
static void test_vbpr_bf16_features_keep_the_gradient(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m32 = NULL, *m16 = NULL;
    struct fixture_batch fb;
    struct fixture_pair r;
    float users[TU * 2 * TD], items[2][TI * 2 * TD];

    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    fixture_dataset(&ds, TU, TI, 30, 41);
    fixture_features(&f, TI, 2, two_names, two_dims, 42);
    fixture_batch(&fb, &ds, 6, 43);
    CHECK_INT(make_with(&m32, &ds, &f, 1e-2, 0), 0);
    CHECK_INT(make_with(&m16, &ds, &f, 1e-2, 1), 0);
    float *theta = fixture_theta(m32, 44, 1.0f);
    float *bias = (float *)tensor(m32, theta, "item_linear.bias");
    for (int d = 0; d < TD; d++)
        bias[d] = 0.1f * (d + 1);
    CHECK_INT(fixture_compare_grads(m32, m16, theta, &fb.b, &r), 0);
    CHECK(fixture_pair_close(&r));
    struct sgbd_model *m[2] = {m32, m16};
    for (int k = 0; k < 2; k++)
        CHECK_INT(m[k]->ops->embed(m[k], theta,
                                   sgbd_mat_view(users, TU, 2 * TD),
                                   sgbd_mat_view(items[k], TI, 2 * TD)),
                  0);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < TI * 2 * TD; i++) {
        diff += fabs(items[1][i] - items[0][i]);
        norm += fabs(items[0][i]);
    }
    CHECK(diff > 0 && diff < 1e-2 * norm);
    sgbd_params_free_arena(theta);
    m16->ops->free(m16), m32->ops->free(m32);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_vbpr_is_registered(void)
{
    CHECK(sgbd_model_find("vbpr") == &sgbd_vbpr_ops);
    CHECK(sgbd_vbpr_ops.needs_features);
}

int main(void)
{
    RUN(test_vbpr_embed_concatenates_text_first);
    RUN(test_vbpr_loss_matches_reference);
    RUN(test_vbpr_loss_gradient);
    RUN(test_vbpr_loss_is_deterministic_and_adds);
    RUN(test_vbpr_new_item_from_features);
    RUN(test_vbpr_rejects_bad_input);
    RUN(test_vbpr_bf16_features_keep_the_gradient);
    RUN(test_vbpr_is_registered);
    return harness_finish();
}
