/* test_lightgcn.c - LightGCN: dense reference, gradients, contract. */
/* ctest: labels=unit,grad timeout=120 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "model_fixture.h"
#include "sgbd/err.h"
#include "sgbd/models.h"

#define TU 7
#define TI 9
#define TN (TU + TI)

static int make(struct sgbd_model **m, const struct sgbd_dataset *ds, int D,
                int L, double reg)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {ds, NULL, &hp};

    sgbd_hparams_defaults(&hp);
    hp.embedding_size = D;
    hp.n_layers = L;
    hp.reg_weight = reg;
    return sgbd_lightgcn_ops.create(m, &in);
}

/* ref (N, D) = mean_l A^l E0 with A built densely from the rows (5.1). */
static void dense_reference(double *ref, const struct sgbd_dataset *ds,
                            const float *eu, const float *ei, int D, int L)
{
    static double a[TN][TN], cur[TN][64], nxt[TN][64];
    double deg[TN] = {0};

    memset(a, 0, sizeof(a));
    for (size_t k = 0; k < ds->n_train; k++) {
        int u = ds->train_users[k], i = TU + ds->train_items[k];
        a[u][i] = a[i][u] = 1.0;
    }
    for (int r = 0; r < TN; r++)
        for (int c = 0; c < TN; c++)
            deg[r] += a[r][c];
    for (int r = 0; r < TN; r++)
        for (int c = 0; c < TN; c++)
            a[r][c] /= sqrt((deg[r] + 1e-7) * (deg[c] + 1e-7));
    for (int r = 0; r < TN; r++)
        for (int d = 0; d < D; d++)
            cur[r][d] = r < TU ? eu[r * D + d] : ei[(r - TU) * D + d];
    for (int r = 0; r < TN; r++)
        for (int d = 0; d < D; d++)
            ref[r * D + d] = cur[r][d];
    for (int l = 1; l <= L; l++) {
        for (int r = 0; r < TN; r++)
            for (int d = 0; d < D; d++) {
                nxt[r][d] = 0;
                for (int c = 0; c < TN; c++)
                    nxt[r][d] += a[r][c] * cur[c][d];
            }
        memcpy(cur, nxt, sizeof(cur));
        for (int r = 0; r < TN; r++)
            for (int d = 0; d < D; d++)
                ref[r * D + d] += cur[r][d];
    }
    for (int r = 0; r < TN * D; r++)
        ref[r] /= (L + 1);
}

static void check_forward(int D, int L)
{
    struct sgbd_dataset ds;
    struct sgbd_model *m = NULL;
    static double ref[TN * 64];
    static float users[TU * 64], items[TI * 64];

    fixture_dataset(&ds, TU, TI, 30, 1);
    CHECK_INT(make(&m, &ds, D, L, 1e-4), 0);
    CHECK_INT(m->dim, D);
    float *theta = fixture_theta(m, 3, 1.0f);
    const float *eu = theta + m->layout.t[0].offset;
    const float *ei = theta + m->layout.t[1].offset;
    dense_reference(ref, &ds, eu, ei, D, L);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, D),
                            sgbd_mat_view(items, TI, D)),
              0);
    for (int r = 0; r < TN; r++)
        for (int d = 0; d < D; d++) {
            float got = r < TU ? users[r * D + d] : items[(r - TU) * D + d];
            CHECK_NEAR(got, ref[r * D + d], 1e-6);
        }
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_dataset_free(&ds);
}

static void test_lightgcn_forward_matches_dense_reference(void)
{
    check_forward(8, 2);  /* item rows padded away from user rows */
    check_forward(16, 2); /* user and item rows adjacent in the arena */
    check_forward(8, 0);
    check_forward(8, 3);
}

static void check_gradient(int D, int L, double reg)
{
    struct sgbd_dataset ds;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    struct gradcheck_result res;

    fixture_dataset(&ds, TU, TI, 30, 2);
    fixture_batch(&fb, &ds, 6, 7);
    CHECK_INT(make(&m, &ds, D, L, reg), 0);
    float *theta = fixture_theta(m, 4, 4.0f);
    CHECK(fixture_gradcheck(m, theta, &fb.b, 150, &res) == 0);
    gradcheck_print("lightgcn", &res);
    CHECK_GRAD(res, 1e-3);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_dataset_free(&ds);
}

static void test_lightgcn_loss_gradient(void)
{
    check_gradient(8, 2, 0.1);
    check_gradient(16, 2, 0.1);
    check_gradient(8, 1, 0.0);
    check_gradient(8, 3, 0.5);
    check_gradient(8, 0, 0.1);
}

static void test_lightgcn_loss_is_deterministic_and_adds(void)
{
    struct sgbd_dataset ds;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;

    fixture_dataset(&ds, TU, TI, 30, 3);
    fixture_batch(&fb, &ds, 8, 8);
    CHECK_INT(make(&m, &ds, 8, 2, 1e-2), 0);
    size_t n = m->layout.n;
    float *theta = fixture_theta(m, 5, 1.0f);
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    float *g3 = malloc(n * sizeof(float));
    for (size_t k = 0; k < n; k++)
        g3[k] = 0.25f;
    double l1 = m->ops->loss_grad(m, theta, g1, &fb.b);
    double l2 = m->ops->loss_grad(m, theta, g2, &fb.b);
    double l3 = m->ops->loss_grad(m, theta, g3, &fb.b);
    CHECK(isfinite(l1) && l1 > 0);
    CHECK(l1 == l2 && l1 == l3);
    CHECK(memcmp(g1, g2, n * sizeof(float)) == 0);
    size_t nonzero = 0;
    for (size_t k = 0; k < n; k++) {
        CHECK_NEAR(g3[k], g1[k] + 0.25f, 1e-6);
        nonzero += g1[k] != 0.0f;
    }
    CHECK(nonzero > n / 2); /* propagation spreads the gradient */
    /* BPR of a random model is near ln 2 */
    CHECK(l1 > 0.5 && l1 < 1.0);
    free(g3), free(g2), free(g1);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_dataset_free(&ds);
}

static void test_lightgcn_new_item_is_mean_of_seen_items(void)
{
    struct sgbd_dataset ds;
    struct sgbd_model *m = NULL;
    float users[TU * 8], items[TI * 8], v[8];

    fixture_dataset(&ds, TU, TI, 30, 4);
    CHECK_INT(make(&m, &ds, 8, 2, 1e-4), 0);
    float *theta = fixture_theta(m, 6, 1.0f);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, 8),
                            sgbd_mat_view(items, TI, 8)),
              0);
    CHECK_INT(m->ops->embed_new_item(m, theta, NULL, v), 0);
    for (int d = 0; d < 8; d++) {
        double s = 0;
        for (size_t k = 0; k < ds.n_neg_items; k++)
            s += items[ds.neg_items[k] * 8 + d];
        CHECK_NEAR(v[d], s / ds.n_neg_items, 1e-6);
    }
    CHECK(ds.n_neg_items < TI); /* the unseen item is left out */
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_dataset_free(&ds);
}

static void test_lightgcn_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    float users[TU * 8], items[TI * 8];

    fixture_dataset(&ds, TU, TI, 30, 5);
    CHECK_INT(make(&m, &ds, 0, 2, 1e-4), SGBD_E_CONFIG);
    CHECK(m == NULL);
    CHECK_INT(make(&m, &ds, 8, -1, 1e-4), SGBD_E_CONFIG);
    CHECK_INT(make(&m, &ds, 8, 2, 1e-4), 0);
    float *theta = fixture_theta(m, 6, 1.0f);
    float *g = calloc(m->layout.n, sizeof(float));
    fixture_batch(&fb, &ds, 4, 9);
    fb.q[2] = TI; /* out of range */
    CHECK(isnan(m->ops->loss_grad(m, theta, g, &fb.b)));
    for (size_t k = 0; k < m->layout.n; k++)
        CHECK(g[k] == 0.0f);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, 8),
                            sgbd_mat_view(items, TI - 1, 8)),
              SGBD_E_SHAPE);
    free(g);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    sgbd_lightgcn_ops.free(NULL);
    fixture_dataset_free(&ds);
}

static void test_lightgcn_is_registered(void)
{
    CHECK(sgbd_model_find("lightgcn") == &sgbd_lightgcn_ops);
}

int main(void)
{
    RUN(test_lightgcn_forward_matches_dense_reference);
    RUN(test_lightgcn_loss_gradient);
    RUN(test_lightgcn_loss_is_deterministic_and_adds);
    RUN(test_lightgcn_new_item_is_mean_of_seen_items);
    RUN(test_lightgcn_rejects_bad_input);
    RUN(test_lightgcn_is_registered);
    return harness_finish();
}
