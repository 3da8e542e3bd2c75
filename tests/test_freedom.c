/* test_freedom.c - FREEDOM: dense reference, degree-sensitive pruning,
 * gradients, cold start. */
/* ctest: labels=unit,grad timeout=300 */
#include <math.h>
#include <stdint.h>

#include "harness.h"
#include "knn_ref.h"
#include "model_fixture.h"
#include "sgbd/err.h"
#include "sgbd/models.h"

#include "../daemon/models/prune.h"

#define TU  7
#define TI  9
#define TN  (TU + TI)
#define TD  8
#define KNN 3

static const char *const names2[2] = {"image", "text"};
static const size_t dims2[2] = {5, 3};
static const char *const names1[1] = {"text"};
static const size_t dims1[1] = {4};

static int make(struct sgbd_model **m, const struct sgbd_dataset *ds,
                const struct sgbd_features *f, double reg, double dropout)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {ds, f, &hp};

    sgbd_hparams_defaults(&hp);
    hp.embedding_size = TD;
    hp.reg_weight = reg;
    hp.dropout = dropout;
    hp.knn_k = KNN;
    return sgbd_freedom_ops.create(m, &in);
}

static const float *tensor(const struct sgbd_model *m, const float *theta,
                           const char *name)
{
    int t = sgbd_params_find(&m->layout, name);
    return t < 0 ? NULL : theta + m->layout.t[t].offset;
}

static void test_freedom_forward_matches_dense_reference(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    static double a[TN * TN], G[TI * TI], cur[TN * TD], nxt[TN * TD];
    static double ref[TN * TD];
    float users[TU * TD], items[TI * TD];

    fixture_dataset(&ds, TU, TI, 30, 1);
    fixture_features(&f, TI, 2, names2, dims2, 2);
    CHECK_INT(make(&m, &ds, &f, 1e-3, 0.8), 0);
    float *theta = fixture_theta(m, 3, 1.0f);
    const float *eu = tensor(m, theta, "user_embedding");
    const float *ei = tensor(m, theta, "item_id_embedding");
    double deg[TN] = {0};
    memset(a, 0, sizeof(a));
    for (size_t k = 0; k < ds.n_train; k++) {
        int u = ds.train_users[k], i = TU + ds.train_items[k];
        a[u * TN + i] = a[i * TN + u] = 1.0; /* duplicates collapse */
    }
    for (int r = 0; r < TN; r++)
        for (int c = 0; c < TN; c++)
            deg[r] += a[r * TN + c];
    for (int r = 0; r < TN; r++)
        for (int c = 0; c < TN; c++)
            a[r * TN + c] /= sqrt((deg[r] + 1e-7) * (deg[c] + 1e-7));
    for (int r = 0; r < TN; r++)
        for (int d = 0; d < TD; d++)
            ref[r * TD + d] = cur[r * TD + d] =
                r < TU ? eu[r * TD + d] : ei[(r - TU) * TD + d];
    for (int l = 0; l < 2; l++) {
        for (int r = 0; r < TN; r++)
            for (int d = 0; d < TD; d++) {
                nxt[r * TD + d] = 0;
                for (int c = 0; c < TN; c++)
                    nxt[r * TD + d] += a[r * TN + c] * cur[c * TD + d];
            }
        memcpy(cur, nxt, sizeof(cur));
        for (int e = 0; e < TN * TD; e++)
            ref[e] += cur[e];
    }
    knn_dense(G, &f, TI, KNN);
    CHECK_INT(m->ops->embed(m, theta, sgbd_mat_view(users, TU, TD),
                            sgbd_mat_view(items, TI, TD)),
              0);
    for (int u = 0; u < TU; u++)
        for (int d = 0; d < TD; d++)
            CHECK_NEAR(users[u * TD + d], ref[u * TD + d] / 3, 1e-6);
    for (int i = 0; i < TI; i++)
        for (int d = 0; d < TD; d++) {
            double h = 0;
            for (int j = 0; j < TI; j++)
                h += G[i * TI + j] * ei[j * TD + d];
            CHECK_NEAR(items[i * TD + d], ref[(TU + i) * TD + d] / 3 + h, 1e-6);
        }
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static double dense_at(const struct sgbd_csr *a, uint32_t r, uint32_t c)
{
    double s = 0;
    for (uint64_t e = a->ptr[r]; e < a->ptr[r + 1]; e++)
        if (a->col[e] == c)
            s += a->val[e];
    return s;
}

static void test_freedom_pruned_adjacency_renormalises_kept_rows(void)
{
    struct sgbd_dataset ds;
    struct sgbd_prune p;
    struct sgbd_csr a;
    struct sgbd_rng rng;
    const size_t keep = 12;

    fixture_dataset(&ds, TU, TI, 30, 4);
    CHECK_INT(
        sgbd_prune_init(&p, TU, TI, ds.n_train, ds.train_users, ds.train_items),
        0);
    sgbd_rng_init(&rng, 5, SGBD_RNG_GRAPH);
    CHECK_INT(sgbd_prune_draw(&a, &p, keep, &rng), 0);
    double du[TU] = {0}, di[TI] = {0}, mult[TU][TI];
    memset(mult, 0, sizeof(mult));
    for (size_t k = 0; k < keep; k++) {
        uint32_t e = p.order[k];
        du[ds.train_users[e]]++, di[ds.train_items[e]]++;
        mult[ds.train_users[e]][ds.train_items[e]]++;
    }
    double total = 0;
    for (int u = 0; u < TU; u++)
        for (int i = 0; i < TI; i++) {
            double want = mult[u][i] / sqrt((du[u] + 1e-7) * (di[i] + 1e-7));
            CHECK_NEAR(dense_at(&a, u, TU + i), want, 1e-6);
            CHECK_NEAR(dense_at(&a, TU + i, u), want, 1e-6);
            total += mult[u][i];
        }
    CHECK_NEAR(total, keep, 0);
    CHECK_INT(sgbd_csr_nnz(&a) <= 2 * keep, 1);
    sgbd_csr_free(&a);
    CHECK_INT(sgbd_prune_draw(&a, &p, ds.n_train + 1, &rng), SGBD_E_SHAPE);
    sgbd_prune_deinit(&p);
    fixture_dataset_free(&ds);
}

/* Keep one of three rows: it must be row e with probability w_e / sum w
 * (the first of torch.multinomial's draws). Row weights: user 0 has
 * degree 2 and user 1 degree 1; item 0 degree 2, item 1 degree 1. */
static void test_freedom_pruning_is_degree_sensitive(void)
{
    const uint32_t users[3] = {0, 0, 1}, items[3] = {0, 1, 0};
    struct sgbd_prune p;
    struct sgbd_rng rng;
    int hits[3] = {0};
    const int draws = 20000;

    CHECK_INT(sgbd_prune_init(&p, 2, 2, 3, users, items), 0);
    sgbd_rng_init(&rng, 6, SGBD_RNG_GRAPH);
    for (int t = 0; t < draws; t++) {
        struct sgbd_csr a;
        CHECK_INT(sgbd_prune_draw(&a, &p, 1, &rng), 0);
        hits[p.order[0]]++;
        sgbd_csr_free(&a);
    }
    double w[3] = {1 / sqrt(2.0 * 2.0), 1 / sqrt(2.0 * 1.0),
                   1 / sqrt(1.0 * 2.0)};
    double sum = w[0] + w[1] + w[2];
    for (int e = 0; e < 3; e++)
        CHECK_NEAR((double)hits[e] / draws, w[e] / sum, 0.015);
    CHECK(hits[0] < hits[1]); /* the row between two busy nodes: rarest */
    sgbd_prune_deinit(&p);
}

static void check_gradient(int n_ch, double reg, double dropout)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    struct gradcheck_result res;
    struct sgbd_rng rng;

    fixture_dataset(&ds, TU, TI, 30, 7);
    fixture_features(&f, TI, n_ch, n_ch == 1 ? names1 : names2,
                     n_ch == 1 ? dims1 : dims2, 8);
    fixture_batch(&fb, &ds, 6, 9);
    CHECK_INT(make(&m, &ds, &f, reg, dropout), 0);
    float *theta = fixture_theta(m, 10, 3.0f);
    sgbd_rng_init(&rng, 11, SGBD_RNG_GRAPH);
    CHECK_INT(m->ops->pre_epoch(m, theta, &rng), 0);
    CHECK(fixture_gradcheck(m, theta, &fb.b, 60, &res) == 0);
    gradcheck_print("freedom", &res);
    CHECK_GRAD(res, 2e-3);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_freedom_loss_gradient(void)
{
    check_gradient(2, 0.5, 0.5); /* pruned propagation */
    check_gradient(2, 0.5, 0.0); /* dropout 0: the full adjacency */
    check_gradient(1, 0.5, 0.8);
}

static void test_freedom_loss_is_deterministic_and_adds(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    struct fixture_batch fb;
    struct sgbd_rng rng;

    fixture_dataset(&ds, TU, TI, 30, 12);
    fixture_features(&f, TI, 2, names2, dims2, 13);
    fixture_batch(&fb, &ds, 8, 14);
    CHECK_INT(make(&m, &ds, &f, 1e-2, 0.5), 0);
    size_t n = m->layout.n;
    float *theta = fixture_theta(m, 15, 1.0f);
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    float *g3 = malloc(n * sizeof(float));
    for (size_t k = 0; k < n; k++)
        g3[k] = 0.25f;
    sgbd_rng_init(&rng, 16, SGBD_RNG_GRAPH);
    CHECK_INT(m->ops->pre_epoch(m, theta, &rng), 0);
    double l1 = m->ops->loss_grad(m, theta, g1, &fb.b);
    double l2 = m->ops->loss_grad(m, theta, g2, &fb.b);
    double l3 = m->ops->loss_grad(m, theta, g3, &fb.b);
    CHECK(isfinite(l1) && l1 == l2 && l1 == l3);
    CHECK(memcmp(g1, g2, n * sizeof(float)) == 0);
    for (size_t k = 0; k < n; k++)
        CHECK_NEAR(g3[k], g1[k] + 0.25f, 1e-6);
    /* the trainable feature copy gets a gradient */
    const float *gd = tensor(m, g1, "image_embedding.delta");
    double s = 0;
    for (size_t k = 0; k < TI * 5; k++)
        s += fabs(gd[k]);
    CHECK(s > 0);
    free(g3), free(g2), free(g1);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_freedom_new_item_from_features(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;
    float v[TD], q[2][5];
    double want[TD] = {0};

    fixture_dataset(&ds, TU, TI, 30, 17);
    fixture_features(&f, TI, 2, names2, dims2, 18);
    CHECK_INT(make(&m, &ds, &f, 1e-3, 0.8), 0);
    float *theta = fixture_theta(m, 19, 1.0f);
    for (int k = 0; k < 5; k++)
        q[0][k] = sgbd_mat_row(f.ch[0].m, 3)[k] - 0.05f * k;
    for (int k = 0; k < 3; k++)
        q[1][k] = sgbd_mat_row(f.ch[1].m, 7)[k] + 0.1f;
    const float *feats[2] = {q[0], q[1]};
    CHECK_INT(m->ops->embed_new_item(m, theta, feats, v), 0);
    const float *ei = tensor(m, theta, "item_id_embedding");
    for (int c = 0; c < 2; c++) {
        const float *cand[TI + 1];
        int nb[KNN];
        for (int j = 0; j < TI; j++)
            cand[j] = sgbd_mat_row(f.ch[c].m, j);
        cand[TI] = q[c];
        knn_top(cand, TI + 1, q[c], dims2[c], KNN, nb);
        for (int r = 0; r < KNN; r++)
            for (int d = 0; nb[r] < TI && d < TD; d++)
                want[d] += knn_channel_weight(&f, c) / KNN * ei[nb[r] * TD + d];
    }
    for (int d = 0; d < TD; d++)
        CHECK_NEAR(v[d], want[d], 1e-6);
    sgbd_params_free_arena(theta);
    m->ops->free(m);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

static void test_freedom_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m = NULL;

    fixture_dataset(&ds, TU, TI, 30, 20);
    CHECK_INT(make(&m, &ds, NULL, 1e-3, 0.8), SGBD_E_CONFIG);
    fixture_features(&f, TI, 2, names2, dims2, 21);
    CHECK_INT(make(&m, &ds, &f, 1e-3, 1.0), SGBD_E_CONFIG);
    CHECK(m == NULL);
    CHECK(sgbd_model_find("freedom") == &sgbd_freedom_ops);
    sgbd_freedom_ops.free(NULL);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
}

int main(void)
{
    RUN(test_freedom_forward_matches_dense_reference);
    RUN(test_freedom_pruned_adjacency_renormalises_kept_rows);
    RUN(test_freedom_pruning_is_degree_sensitive);
    RUN(test_freedom_loss_gradient);
    RUN(test_freedom_loss_is_deterministic_and_adds);
    RUN(test_freedom_new_item_from_features);
    RUN(test_freedom_rejects_bad_input);
    return harness_finish();
}
