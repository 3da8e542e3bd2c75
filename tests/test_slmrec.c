/* test_slmrec.c - SLMRec (FAC): dense reference of towers, fusion and
 * losses, gradients, cold start. */
/* ctest: labels=unit,grad timeout=300 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "model_fixture.h"
#include "sgbd/bf16.h"
#include "sgbd/err.h"
#include "sgbd/models.h"

#define TU 7
#define TI 9
#define TN (TU + TI)
#define TD 8
#define NT 3 /* towers: id, image, text */

static const char *const names2[2] = {"image", "text"};
static const size_t dims2[2] = {5, 3};
static const char *const names1[1] = {"text"};
static const size_t dims1[1] = {4};

static int make_with(struct sgbd_model **m, const struct sgbd_dataset *ds,
                     const struct sgbd_features *f, int D, int bf16)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {ds, f, &hp};

    sgbd_hparams_defaults(&hp);
    hp.embedding_size = D;
    hp.temp = 0.5;
    hp.ssl_temp = 0.7;
    hp.ssl_alpha = 0.3;
    hp.bf16_features = bf16;
    return sgbd_slmrec_ops.create(m, &in);
}

static int make(struct sgbd_model **m, const struct sgbd_dataset *ds,
                const struct sgbd_features *f, int D)
{
    return make_with(m, ds, f, D, 0);
}

static const float *T(const struct sgbd_model *m, const float *theta,
                      const char *name)
{
    int t = sgbd_params_find(&m->layout, name);
    return t < 0 ? NULL : theta + m->layout.t[t].offset;
}

/* y (out) = W x + b for the tensors "<name>.weight", "<name>.bias". */
static void ref_linear(double *y, const struct sgbd_model *m,
                       const float *theta, const char *name, const double *x,
                       int in, int out)
{
    char wn[64], bn[64];
    snprintf(wn, sizeof(wn), "%s.weight", name);
    snprintf(bn, sizeof(bn), "%s.bias", name);
    const float *w = T(m, theta, wn), *b = T(m, theta, bn);
    for (int o = 0; o < out; o++) {
        double s = b[o];
        for (int k = 0; k < in; k++)
            s += (double)w[o * in + k] * x[k];
        y[o] = s;
    }
}

/* z[t] (N, D) for every tower, densely, from the formulas of 6.4. */
static void ref_towers(double z[NT][TN * TD], const struct sgbd_model *m,
                       const float *theta, const struct sgbd_dataset *ds,
                       const struct sgbd_features *f)
{
    static double a[TN * TN], cur[TN * TD], nxt[TN * TD];
    double deg[TN] = {0};

    memset(a, 0, sizeof(a));
    for (size_t k = 0; k < ds->n_train; k++) {
        int u = ds->train_users[k], i = TU + ds->train_items[k];
        a[u * TN + i] = a[i * TN + u] = 1.0;
    }
    for (int r = 0; r < TN; r++)
        for (int c = 0; c < TN; c++)
            deg[r] += a[r * TN + c];
    for (int r = 0; r < TN; r++)
        for (int c = 0; c < TN; c++)
            a[r * TN + c] /= sqrt((deg[r] + 1e-8) * (deg[c] + 1e-8));
    const float *eu = T(m, theta, "embedding_user");
    const float *ei = T(m, theta, "embedding_item");
    for (int t = 0; t <= f->n; t++) {
        for (int u = 0; u < TU; u++)
            for (int d = 0; d < TD; d++)
                cur[u * TD + d] = eu[u * TD + d];
        for (int i = 0; i < TI; i++) {
            if (t == 0) {
                for (int d = 0; d < TD; d++)
                    cur[(TU + i) * TD + d] = ei[i * TD + d];
                continue;
            }
            const struct sgbd_mat fm = f->ch[t - 1].m;
            double x[8], n = 0;
            char name[64];
            for (size_t k = 0; k < fm.cols; k++)
                n += (double)sgbd_mat_row(fm, i)[k] * sgbd_mat_row(fm, i)[k];
            for (size_t k = 0; k < fm.cols; k++)
                x[k] = sgbd_mat_row(fm, i)[k] / sqrt(n);
            snprintf(name, sizeof(name), "%s_dense", f->ch[t - 1].name);
            ref_linear(cur + (TU + i) * TD, m, theta, name, x, (int)fm.cols,
                       TD);
        }
        memcpy(z[t], cur, sizeof(cur));
        for (int l = 0; l < 3; l++) {
            for (int r = 0; r < TN; r++)
                for (int d = 0; d < TD; d++) {
                    nxt[r * TD + d] = 0;
                    for (int c = 0; c < TN; c++)
                        nxt[r * TD + d] += a[r * TN + c] * cur[c * TD + d];
                }
            memcpy(cur, nxt, sizeof(cur));
            for (int e = 0; e < TN * TD; e++)
                z[t][e] += cur[e];
        }
        for (int e = 0; e < TN * TD; e++)
            z[t][e] /= 4;
    }
}

static void ref_fuse(double *e, const struct sgbd_model *m, const float *theta,
                     double z[NT][TN * TD], int n_t, int row, const char *phi)
{
    double cat[NT * TD];
    for (int t = 0; t < n_t; t++)
        for (int d = 0; d < TD; d++)
            cat[t * TD + d] = z[t][row * TD + d];
    ref_linear(e, m, theta, phi, cat, n_t * TD, TD);
}

static void test_slmrec_embed_matches_dense_reference(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    static double z[NT][TN * TD];
    float users[TU * TD], items[TI * TD];
    double e[TD];

    fixture_dataset(&ds, TU, TI, 30, 1);
    fixture_features(&f, TI, 2, names2, dims2, 2);
    CHECK_INT(make(&m, &ds, &f, TD), 0);
    float *theta = fixture_theta(m, 3, 1.0f);
    ref_towers(z, m, theta, &ds, &f);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, TD),
                            sgbd_mat_view(items, TI, TD)),
              0);
    for (int u = 0; u < TU; u++) {
        ref_fuse(e, m, theta, z, NT, u, "phi_u");
        for (int d = 0; d < TD; d++)
            CHECK_NEAR(users[u * TD + d], e[d], 1e-5);
    }
    for (int i = 0; i < TI; i++) {
        ref_fuse(e, m, theta, z, NT, TU + i, "phi_i");
        for (int d = 0; d < TD; d++)
            CHECK_NEAR(items[i * TD + d], e[d], 1e-5);
    }
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

/* Mean over rows of CE(a b^T / tau, diag); a, b (n, w). */
static double ref_infonce(const double *a, const double *b, int n, int w,
                          double tau)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        double z = 0, lii = 0;
        for (int j = 0; j < n; j++) {
            double l = 0;
            for (int k = 0; k < w; k++)
                l += a[i * w + k] * b[j * w + k];
            l /= tau;
            z += exp(l);
            lii = j == i ? l : lii;
        }
        loss += log(z) - lii;
    }
    return loss / n;
}

static void normalise(double *x, int w)
{
    double n = 0;
    for (int k = 0; k < w; k++)
        n += x[k] * x[k];
    for (int k = 0; k < w; k++)
        x[k] /= sqrt(n);
}

static void test_slmrec_loss_matches_reference(void)
{
    enum { B = 6 };
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    static double z[NT][TN * TD];
    double hu[B * TD], hp[B * TD], a0[B * TD], b0[B * TD];
    double a1[B * TD], a2[B * TD / 2], b1[B * TD / 2];

    fixture_dataset(&ds, TU, TI, 30, 4);
    fixture_features(&f, TI, 2, names2, dims2, 5);
    fixture_batch(&fb, &ds, B, 6);
    CHECK_INT(make(&m, &ds, &f, TD), 0);
    float *theta = fixture_theta(m, 7, 1.0f);
    ref_towers(z, m, theta, &ds, &f);
    for (int b = 0; b < B; b++) {
        int u = fb.u[b], p = TU + fb.p[b];
        ref_fuse(hu + b * TD, m, theta, z, NT, u, "phi_u");
        ref_fuse(hp + b * TD, m, theta, z, NT, p, "phi_i");
        normalise(hu + b * TD, TD);
        normalise(hp + b * TD, TD);
        ref_linear(a0 + b * TD, m, theta, "fac0.g1", z[0] + p * TD, TD, TD);
        ref_linear(b0 + b * TD, m, theta, "fac0.h", z[1] + p * TD, TD, TD);
        ref_linear(a1 + b * TD, m, theta, "fac1.g1", a0 + b * TD, TD, TD);
        ref_linear(a2 + b * TD / 2, m, theta, "fac1.g2", a1 + b * TD, TD,
                   TD / 2);
        ref_linear(b1 + b * TD / 2, m, theta, "fac1.h", z[2] + p * TD, TD,
                   TD / 2);
    }
    double want = ref_infonce(hu, hp, B, TD, 0.5) +
                  0.3 * (ref_infonce(a0, b0, B, TD, 0.7) +
                         ref_infonce(a2, b1, B, TD / 2, 0.7));
    float *g = calloc(m->layout.n, sizeof(float));
    CHECK_NEAR(m->ops->loss_grad(m, theta, g, &fb.b), want, 1e-5);
    free(g);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void check_gradient(int n_ch)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    struct gradcheck_result res;

    fixture_dataset(&ds, TU, TI, 30, 8);
    fixture_features(&f, TI, n_ch, n_ch == 1 ? names1 : names2,
                     n_ch == 1 ? dims1 : dims2, 9);
    fixture_batch(&fb, &ds, 6, 10);
    CHECK_INT(make(&m, &ds, &f, TD), 0);
    float *theta = fixture_theta(m, 11, 2.0f);
    CHECK(fixture_gradcheck(m, theta, &fb.b, 60, &res) == 0);
    gradcheck_print("slmrec", &res);
    CHECK_GRAD(res, 2e-3);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_slmrec_loss_gradient(void)
{
    check_gradient(2);
    check_gradient(1);
}

static void test_slmrec_loss_is_deterministic_and_adds(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;

    fixture_dataset(&ds, TU, TI, 30, 12);
    fixture_features(&f, TI, 2, names2, dims2, 13);
    fixture_batch(&fb, &ds, 8, 14);
    CHECK_INT(make(&m, &ds, &f, TD), 0);
    size_t n = m->layout.n;
    float *theta = fixture_theta(m, 15, 1.0f);
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    float *g3 = malloc(n * sizeof(float));
    for (size_t k = 0; k < n; k++)
        g3[k] = -0.25f;
    double l1 = m->ops->loss_grad(m, theta, g1, &fb.b);
    double l2 = m->ops->loss_grad(m, theta, g2, &fb.b);
    double l3 = m->ops->loss_grad(m, theta, g3, &fb.b);
    CHECK(isfinite(l1) && l1 == l2 && l1 == l3);
    CHECK(memcmp(g1, g2, n * sizeof(float)) == 0);
    for (size_t k = 0; k < n; k++)
        CHECK_NEAR(g3[k], g1[k] - 0.25f, 1e-6);
    fb.q[0] = (fb.q[0] + 1) % TI; /* negatives are not used */
    CHECK(m->ops->loss_grad(m, theta, g2, &fb.b) == l1);
    free(g3), free(g2), free(g1);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

/* The feature projections in bfloat16 move the loss and gradient by
 * about the rounding, and do move them. */
static int make_bf16(struct sgbd_model **m, const struct sgbd_dataset *ds,
                     const struct sgbd_features *f, int bf16)
{
    return make_with(m, ds, f, TD, bf16);
}

static void test_slmrec_bf16_features_keep_the_gradient(void)
{
    if (!sgbd_bf16_supported())
        SKIP("no AVX512-BF16 on this CPU");
    CHECK_INT(fixture_bf16_close(make_bf16, TU, TI, 2, names2, dims2, 6, 31),
              1);
}

static void test_slmrec_new_item_from_features(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    float v[TD], q[2][5];
    double cat[NT * TD], x[5], e[TD];

    fixture_dataset(&ds, TU, TI, 30, 16);
    fixture_features(&f, TI, 2, names2, dims2, 17);
    CHECK_INT(make(&m, &ds, &f, TD), 0);
    float *theta = fixture_theta(m, 18, 1.0f);
    for (int k = 0; k < 5; k++)
        q[0][k] = 0.3f * k - 0.5f;
    for (int k = 0; k < 3; k++)
        q[1][k] = 0.2f - 0.4f * k;
    const float *feats[2] = {q[0], q[1]};
    CHECK_INT(m->ops->embed_new_item(m, theta, feats, v), 0);
    const float *ei = T(m, theta, "embedding_item");
    for (int d = 0; d < TD; d++) {
        double s = 0;
        for (size_t k = 0; k < ds.n_neg_items; k++)
            s += ei[ds.neg_items[k] * TD + d];
        cat[d] = s / ds.n_neg_items / 4;
    }
    for (int c = 0; c < 2; c++) {
        for (size_t k = 0; k < dims2[c]; k++)
            x[k] = q[c][k];
        normalise(x, (int)dims2[c]);
        ref_linear(cat + (c + 1) * TD, m, theta,
                   c == 0 ? "image_dense" : "text_dense", x, (int)dims2[c], TD);
        for (int d = 0; d < TD; d++)
            cat[(c + 1) * TD + d] /= 4;
    }
    ref_linear(e, m, theta, "phi_i", cat, NT * TD, TD);
    for (int d = 0; d < TD; d++)
        CHECK_NEAR(v[d], e[d], 1e-5);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_slmrec_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;

    fixture_dataset(&ds, TU, TI, 30, 19);
    CHECK_INT(make(&m, &ds, NULL, TD), SGBD_E_CONFIG);
    fixture_features(&f, TI, 2, names2, dims2, 20);
    CHECK_INT(make(&m, &ds, &f, 7), SGBD_E_CONFIG); /* odd width */
    CHECK(m == NULL);
    CHECK(sgbd_model_find("slmrec") == &sgbd_slmrec_ops);
    sgbd_slmrec_ops.free(NULL);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

int main(void)
{
    RUN(test_slmrec_embed_matches_dense_reference);
    RUN(test_slmrec_loss_matches_reference);
    RUN(test_slmrec_loss_gradient);
    RUN(test_slmrec_loss_is_deterministic_and_adds);
    RUN(test_slmrec_bf16_features_keep_the_gradient);
    RUN(test_slmrec_new_item_from_features);
    RUN(test_slmrec_rejects_bad_input);
    return harness_finish();
}
