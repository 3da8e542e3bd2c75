/*
 * slmrec.c - SLMRec with the FAC task (reference/algorithms.md 6.4) on
 * the flat arena.
 *
 * Towers: Z^id = LGN(E_u, E_i) and, per feature channel c (dataset
 * order), Z^c = LGN(E_u, P_c(Fn_c)) with Fn_c = rownorm(F_c) (frozen) and
 * P_c a Linear(D_c -> D); LGN = mean over layers 0..3 of A^l (5.1, eps
 * 1e-8). The same E_u enters every tower. Fusion "concat": e_u =
 * Phi_u([Z^id_u; Z^c_u ...]), e_i = Phi_i([...]_i), Linear(D (C+1) -> D).
 * Main loss: InfoNCE of rownorm(e_u) against rownorm(e_p) over the batch,
 * temperature temp (negatives ignored, in-batch duplicates are negatives
 * of each other as in MMRec). FAC on the batch's positives, one level per
 * channel: level 0 contrasts g(Z^id_p) with h_0(Z^{c0}_p) (D wide);
 * level k >= 1 contrasts g2_k(g1_k(a_{k-1})) with h_k(Z^{ck}_p) (D/2
 * wide), a_{k-1} the previous level's id side. For image + text this is
 * MMRec's g_i_iv / g_v_iv, then g_iv_iva -> g_iva_ivat / g_t_ivat.
 * Total: L_main + ssl_alpha sum_k L_k. No explicit regulariser: MMRec
 * trains SLMRec with Adam weight_decay 1e-4, which is the optimiser's.
 *
 * Cost per call: 3 (C + 1) SpMMs forward (batch rows kept) and as many
 * backward, the projections P_c on all items (I x D_c x D forward and
 * again for dW), and O(B^2 D) for the InfoNCE logits.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lgn.h"
#include "sgbd/bf16.h"
#include "sgbd/err.h"
#include "sgbd/graph.h"
#include "sgbd/layers.h"
#include "sgbd/models.h"

#define SLMREC_LAYERS  3    /* layer_num */
#define SLMREC_ADJ_EPS 1e-8 /* adj_type "pre" */
#define SLMREC_TOWERS  (SGBD_MAX_CHANNELS + 1)

struct slm_level {
    size_t w;         /* contrast width: D at level 0, D/2 after */
    int t_g1w, t_g1b; /* level 0: g (D -> D); else g1 (w_prev -> D) */
    int t_g2w, t_g2b; /* level >= 1: g2 (D -> w); -1 at level 0 */
    int t_hw, t_hb;   /* h (D -> w) on the channel tower */
    float *a1, *da1;  /* (B, D) g1 output, level >= 1 */
    float *a, *da;    /* (B, w) id side */
    float *b, *db;    /* (B, w) channel side */
};

struct slmrec {
    struct sgbd_model base;
    size_t D, N, F; /* F = D (C + 1), the fused width */
    int C;
    double temp, ssl_temp, ssl_alpha;
    int t_user, t_item, adjacent;
    int t_pw[SGBD_MAX_CHANNELS], t_pb[SGBD_MAX_CHANNELS];
    int t_phu_w, t_phu_b, t_phi_w, t_phi_b;
    size_t dim[SGBD_MAX_CHANNELS];
    float *feat[SGBD_MAX_CHANNELS];      /* (I, D_c) rownorm(F_c) */
    struct sgbd_bf16_fixed feat_bf[SGBD_MAX_CHANNELS]; /* feat rounded */
    struct sgbd_bf16_fixed *fb[SGBD_MAX_CHANNELS]; /* with bf16_features */
    float *feat_mean[SGBD_MAX_CHANNELS]; /* (D_c) raw column means */
    struct slm_level lv[SGBD_MAX_CHANNELS];
    struct sgbd_csr adj;
    struct sgbd_lgn lgn;
    float *x0, *gx; /* (N, D) tower input and its gradient */
    uint32_t *seen;
    size_t n_seen;
    size_t cap;
    uint32_t *idx; /* (2B) users, then U + positives */
    float *z[SLMREC_TOWERS], *dz[SLMREC_TOWERS]; /* (2B, D) tower rows */
    float *cat_u, *cat_p, *dcat_u, *dcat_p;      /* (B, F) */
    float *e_u, *e_p, *de_u, *de_p;              /* (B, D) */
    float *n_u, *n_p;                            /* (B) norms */
    float *h_u, *h_p, *dh_u, *dh_p;              /* (B, D) normalised */
    float *ws;                                   /* (2 B^2) logits */
};

static void free_batch(struct slmrec *m)
{
    free(m->idx);
    for (int t = 0; t < SLMREC_TOWERS; t++)
        free(m->z[t]), free(m->dz[t]), m->z[t] = m->dz[t] = NULL;
    free(m->cat_u), free(m->cat_p), free(m->dcat_u), free(m->dcat_p);
    free(m->e_u), free(m->e_p), free(m->de_u), free(m->de_p);
    free(m->n_u), free(m->n_p);
    free(m->h_u), free(m->h_p), free(m->dh_u), free(m->dh_p);
    free(m->ws);
    for (int k = 0; k < SGBD_MAX_CHANNELS; k++) {
        struct slm_level *l = &m->lv[k];
        free(l->a1), free(l->da1), free(l->a), free(l->da);
        free(l->b), free(l->db);
        l->a1 = l->da1 = l->a = l->da = l->b = l->db = NULL;
    }
}

static void slmrec_free(struct sgbd_model *base)
{
    struct slmrec *m = (struct slmrec *)base;

    if (!m)
        return;
    free_batch(m);
    for (int c = 0; c < SGBD_MAX_CHANNELS; c++) {
        free(m->feat[c]), free(m->feat_mean[c]);
        sgbd_bf16_fixed_deinit(&m->feat_bf[c]);
    }
    free(m->seen), free(m->gx), free(m->x0);
    sgbd_lgn_deinit(&m->lgn);
    sgbd_csr_free(&m->adj);
    free(m);
}

/* A Linear(in -> out): xavier_uniform weight, nn.Linear default bias. */
static int add_linear(struct sgbd_params *p, const char *name, size_t in,
                      size_t out, int *tw, int *tb)
{
    *tw = mdl_add_tensor(p, name, ".", "weight", out, in,
                         SGBD_INIT_XAVIER_UNIFORM, 0);
    if (*tw < 0)
        return *tw;
    *tb = mdl_add_tensor(p, name, ".", "bias", 1, out, SGBD_INIT_LINEAR, in);
    return *tb < 0 ? *tb : 0;
}

static int declare_fac(struct slmrec *m)
{
    struct sgbd_params *p = &m->base.layout;
    size_t D = m->D;
    char name[SGBD_TENSOR_NAME];
    int rc = 0;

    for (int k = 0; k < m->C && rc == 0; k++) {
        struct slm_level *l = &m->lv[k];
        size_t prev = k == 0 ? D : m->lv[k - 1].w;
        l->w = k == 0 ? D : D / 2;
        l->t_g2w = l->t_g2b = -1;
        snprintf(name, sizeof(name), "fac%d.g1", k);
        rc = add_linear(p, name, prev, D, &l->t_g1w, &l->t_g1b);
        if (rc == 0 && k > 0) {
            snprintf(name, sizeof(name), "fac%d.g2", k);
            rc = add_linear(p, name, D, l->w, &l->t_g2w, &l->t_g2b);
        }
        snprintf(name, sizeof(name), "fac%d.h", k);
        if (rc == 0)
            rc = add_linear(p, name, D, l->w, &l->t_hw, &l->t_hb);
    }
    return rc;
}

static int declare_layout(struct slmrec *m, const struct sgbd_features *f)
{
    struct sgbd_params *p = &m->base.layout;
    size_t U = m->base.n_users, I = m->base.n_items, D = m->D;
    int rc;

    m->t_user = sgbd_params_add(p, "embedding_user", U, D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    m->t_item = sgbd_params_add(p, "embedding_item", I, D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    if (m->t_user < 0 || m->t_item < 0)
        return m->t_user < 0 ? m->t_user : m->t_item;
    m->adjacent = p->t[m->t_item].offset == p->t[m->t_user].offset + U * D;
    for (int c = 0; c < m->C; c++) {
        char name[SGBD_TENSOR_NAME + 8];
        snprintf(name, sizeof(name), "%s_dense", f->ch[c].name);
        rc = add_linear(p, name, m->dim[c], D, &m->t_pw[c], &m->t_pb[c]);
        if (rc < 0)
            return rc;
    }
    rc = add_linear(p, "phi_u", m->F, D, &m->t_phu_w, &m->t_phu_b);
    if (rc == 0)
        rc = add_linear(p, "phi_i", m->F, D, &m->t_phi_w, &m->t_phi_b);
    return rc < 0 ? rc : declare_fac(m);
}

/* Fn_c = rownorm(F_c) once (slmrec.py normalises the features at init);
 * the raw means stand in for a missing channel at cold start. */
static int copy_features(struct slmrec *m, const struct sgbd_features *f,
                         int bf16)
{
    size_t I = m->base.n_items;
    float *norms = malloc(I * sizeof(float));

    if (!norms)
        return -ENOMEM;
    for (int c = 0; c < m->C; c++) {
        m->dim[c] = f->ch[c].m.cols;
        m->feat[c] = mdl_copy_mat(f->ch[c].m);
        m->feat_mean[c] = malloc(m->dim[c] * sizeof(float));
        if (!m->feat[c] || !m->feat_mean[c]) {
            free(norms);
            return -ENOMEM;
        }
        mdl_col_means(f->ch[c].m, m->feat_mean[c]);
        sgbd_layer_rownorm_forward(m->feat[c], norms, m->feat[c], I, m->dim[c]);
        if (bf16) {
            int rc = sgbd_bf16_fixed_init(&m->feat_bf[c], m->feat[c], I,
                                          m->dim[c]);
            if (rc < 0) {
                free(norms);
                return rc;
            }
            m->fb[c] = &m->feat_bf[c];
        }
    }
    free(norms);
    return 0;
}

static int alloc_fixed(struct slmrec *m, const struct sgbd_dataset *ds)
{
    int rc =
        sgbd_graph_norm_adj(&m->adj, ds->n_users, ds->n_items, ds->n_train,
                            ds->train_users, ds->train_items, SLMREC_ADJ_EPS);

    if (rc == 0)
        rc = sgbd_lgn_init(&m->lgn, m->N, m->D, SLMREC_LAYERS);
    if (rc < 0)
        return rc;
    m->x0 = malloc(m->N * m->D * sizeof(float));
    m->gx = malloc(m->N * m->D * sizeof(float));
    m->seen = malloc(ds->n_neg_items * sizeof(uint32_t) + 1);
    if (!m->x0 || !m->gx || !m->seen)
        return -ENOMEM;
    memcpy(m->seen, ds->neg_items, ds->n_neg_items * sizeof(uint32_t));
    m->n_seen = ds->n_neg_items;
    return 0;
}

static int check_hparams(const struct sgbd_hparams *hp)
{
    if (!(hp->temp > 0.0) || !(hp->ssl_temp > 0.0) || !(hp->ssl_alpha >= 0.0))
        return sgbd_errf(SGBD_E_CONFIG,
                         "slmrec: temp %g and ssl_temp %g "
                         "must be > 0, ssl_alpha %g >= 0",
                         hp->temp, hp->ssl_temp, hp->ssl_alpha);
    if (hp->embedding_size < 2 || hp->embedding_size % 2)
        return sgbd_errf(SGBD_E_CONFIG,
                         "slmrec: embedding_size %d must be "
                         "even (the FAC heads are D/2 wide)",
                         hp->embedding_size);
    return 0;
}

static int slmrec_create(struct sgbd_model **out,
                         const struct sgbd_model_input *in)
{
    struct slmrec *m;
    int rc = mdl_check_input("slmrec", in);

    *out = NULL;
    if (rc == 0)
        rc = mdl_check_features("slmrec", in);
    if (rc == 0)
        rc = check_hparams(in->hp);
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &sgbd_slmrec_ops;
    m->base.n_users = in->ds->n_users;
    m->base.n_items = in->ds->n_items;
    m->base.dim = m->D = (size_t)in->hp->embedding_size;
    m->N = (size_t)m->base.n_users + m->base.n_items;
    m->C = in->feat->n;
    m->F = m->D * (size_t)(m->C + 1);
    m->temp = in->hp->temp;
    m->ssl_temp = in->hp->ssl_temp;
    m->ssl_alpha = in->hp->ssl_alpha;

    rc = copy_features(m, in->feat, in->hp->bf16_features);
    if (rc == 0)
        rc = declare_layout(m, in->feat);
    if (rc == 0)
        rc = alloc_fixed(m, in->ds);
    if (rc < 0) {
        slmrec_free(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}

/* ---- loss and gradient ------------------------------------------------ */

static int reserve_batch(struct slmrec *m, size_t B)
{
    size_t fl = sizeof(float), bd = B * m->D * fl, bf = B * m->F * fl;
    int ok;

    if (B <= m->cap)
        return 0;
    free_batch(m);
    m->idx = malloc(2 * B * sizeof(uint32_t));
    ok = m->idx != NULL;
    for (int t = 0; t <= m->C; t++) {
        m->z[t] = malloc(2 * bd), m->dz[t] = malloc(2 * bd);
        ok = ok && m->z[t] && m->dz[t];
    }
    m->cat_u = malloc(bf), m->cat_p = malloc(bf);
    m->dcat_u = malloc(bf), m->dcat_p = malloc(bf);
    m->e_u = malloc(bd), m->e_p = malloc(bd);
    m->de_u = malloc(bd), m->de_p = malloc(bd);
    m->n_u = malloc(B * fl), m->n_p = malloc(B * fl);
    m->h_u = malloc(bd), m->h_p = malloc(bd);
    m->dh_u = malloc(bd), m->dh_p = malloc(bd);
    m->ws = malloc(2 * B * B * fl);
    ok = ok && m->cat_u && m->cat_p && m->dcat_u && m->dcat_p && m->e_u &&
         m->e_p && m->de_u && m->de_p && m->n_u && m->n_p && m->h_u && m->h_p &&
         m->dh_u && m->dh_p && m->ws;
    for (int k = 0; k < m->C; k++) {
        struct slm_level *l = &m->lv[k];
        size_t bw = B * l->w * fl;
        l->a1 = malloc(bd), l->da1 = malloc(bd);
        l->a = malloc(bw), l->da = malloc(bw);
        l->b = malloc(bw), l->db = malloc(bw);
        ok = ok && l->a1 && l->da1 && l->a && l->da && l->b && l->db;
    }
    m->cap = ok ? B : 0;
    return ok ? 0
              : sgbd_errf(-ENOMEM, "slmrec: no memory for a batch of %zu", B);
}

static const float *tens(const struct slmrec *m, const float *theta, int t)
{
    return theta + m->base.layout.t[t].offset;
}

static float *gtens(const struct slmrec *m, float *grad, int t)
{
    return grad + m->base.layout.t[t].offset;
}

/* The input of tower t into x0 (or theta itself for an adjacent id
 * tower): [E_u; E_i] for t = 0, [E_u; P_c(Fn_c)] for t = c + 1. NULL
 * with *rc set when the projection fails. */
static const float *tower_input(struct slmrec *m, const float *theta, int t,
                                int *rc)
{
    size_t ud = (size_t)m->base.n_users * m->D, I = m->base.n_items;

    if (t == 0 && m->adjacent)
        return tens(m, theta, m->t_user);
    memcpy(m->x0, tens(m, theta, m->t_user), ud * sizeof(float));
    if (t == 0) {
        memcpy(m->x0 + ud, tens(m, theta, m->t_item), I * m->D * sizeof(float));
        return m->x0;
    }
    int c = t - 1;
    *rc = sgbd_layer_fixed_linear_forward(
        m->x0 + ud, m->feat[c], m->fb[c], tens(m, theta, m->t_pw[c]),
        tens(m, theta, m->t_pb[c]), I, m->dim[c], m->D);
    if (*rc < 0)
        return NULL;
    return m->x0;
}

/* z[t] (2B, D): tower rows of the batch users and positives. */
static int towers_forward(struct slmrec *m, const float *theta, size_t B)
{
    for (int t = 0; t <= m->C; t++) {
        int rc = 0;
        const float *x0 = tower_input(m, theta, t, &rc);
        if (!x0)
            return rc;
        rc = sgbd_lgn_forward_rows(&m->lgn, &m->adj, x0, m->idx, 2 * B,
                                   m->z[t]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* cat (B, F) = [z[t] rows r0 .. r0 + B)]_t, and its reverse. */
static void concat_rows(const struct slmrec *m, float *cat, size_t r0, size_t B)
{
    size_t D = m->D;

    for (size_t b = 0; b < B; b++)
        for (int t = 0; t <= m->C; t++)
            memcpy(cat + b * m->F + (size_t)t * D, m->z[t] + (r0 + b) * D,
                   D * sizeof(float));
}

static void split_rows(const struct slmrec *m, const float *dcat, size_t r0,
                       size_t B)
{
    size_t D = m->D;

    for (size_t b = 0; b < B; b++)
        for (int t = 0; t <= m->C; t++)
            sgbd_mat_axpy(D, 1.0f, dcat + b * m->F + (size_t)t * D,
                          m->dz[t] + (r0 + b) * D);
}

/* L_main: InfoNCE of rownorm(Phi_u(cat_u)) vs rownorm(Phi_i(cat_p)). */
static double main_loss(struct slmrec *m, const float *theta, float *grad,
                        size_t B)
{
    size_t D = m->D, bd = B * D * sizeof(float);
    double loss;
    int rc;

    concat_rows(m, m->cat_u, 0, B);
    concat_rows(m, m->cat_p, B, B);
    rc = sgbd_layer_linear_forward(m->e_u, m->cat_u, tens(m, theta, m->t_phu_w),
                                   tens(m, theta, m->t_phu_b), B, m->F, D);
    if (rc == 0)
        rc = sgbd_layer_linear_forward(m->e_p, m->cat_p,
                                       tens(m, theta, m->t_phi_w),
                                       tens(m, theta, m->t_phi_b), B, m->F, D);
    if (rc < 0)
        return mdl_fail(&m->base, rc);
    sgbd_layer_rownorm_forward(m->h_u, m->n_u, m->e_u, B, D);
    sgbd_layer_rownorm_forward(m->h_p, m->n_p, m->e_p, B, D);
    memset(m->dh_u, 0, bd), memset(m->dh_p, 0, bd);
    loss = sgbd_layer_infonce_pair(m->dh_u, m->dh_p, m->h_u, m->h_p, m->ws, B,
                                   D, m->temp, 1.0);
    memset(m->de_u, 0, bd), memset(m->de_p, 0, bd);
    sgbd_layer_rownorm_backward(m->de_u, m->dh_u, m->h_u, m->n_u, B, D);
    sgbd_layer_rownorm_backward(m->de_p, m->dh_p, m->h_p, m->n_p, B, D);
    memset(m->dcat_u, 0, B * m->F * sizeof(float));
    memset(m->dcat_p, 0, B * m->F * sizeof(float));
    rc = sgbd_layer_linear_backward(
        m->dcat_u, gtens(m, grad, m->t_phu_w), gtens(m, grad, m->t_phu_b),
        m->de_u, m->cat_u, tens(m, theta, m->t_phu_w), B, m->F, D);
    if (rc == 0)
        rc = sgbd_layer_linear_backward(
            m->dcat_p, gtens(m, grad, m->t_phi_w), gtens(m, grad, m->t_phi_b),
            m->de_p, m->cat_p, tens(m, theta, m->t_phi_w), B, m->F, D);
    if (rc < 0)
        return mdl_fail(&m->base, rc);
    split_rows(m, m->dcat_u, 0, B);
    split_rows(m, m->dcat_p, B, B);
    return loss;
}

static int lin(const struct slmrec *m, const float *theta, float *y,
               const float *x, int tw, int tb, size_t B, size_t in, size_t out)
{
    return sgbd_layer_linear_forward(y, x, tens(m, theta, tw),
                                     tens(m, theta, tb), B, in, out);
}

static int lin_back(const struct slmrec *m, const float *theta, float *grad,
                    float *dx, const float *dy, const float *x, int tw, int tb,
                    size_t B, size_t in, size_t out)
{
    return sgbd_layer_linear_backward(dx, gtens(m, grad, tw),
                                      gtens(m, grad, tb), dy, x,
                                      tens(m, theta, tw), B, in, out);
}

/* FAC forward: every level's a and b on the positives, and the losses
 * (their gradients wrt a and b added, scaled by ssl_alpha). */
static double fac_forward(struct slmrec *m, const float *theta, size_t B)
{
    size_t D = m->D, off = B * D;
    double loss = 0.0;

    for (int k = 0; k < m->C; k++) {
        struct slm_level *l = &m->lv[k];
        const float *prev = k == 0 ? m->z[0] + off : m->lv[k - 1].a;
        size_t pw = k == 0 ? D : m->lv[k - 1].w;
        float *g1 = k == 0 ? l->a : l->a1;
        int rc = lin(m, theta, g1, prev, l->t_g1w, l->t_g1b, B, pw, D);
        if (rc == 0 && k > 0)
            rc = lin(m, theta, l->a, l->a1, l->t_g2w, l->t_g2b, B, D, l->w);
        if (rc == 0)
            rc = lin(m, theta, l->b, m->z[k + 1] + off, l->t_hw, l->t_hb, B, D,
                     l->w);
        if (rc < 0)
            return mdl_fail(&m->base, rc);
        memset(l->da, 0, B * l->w * sizeof(float));
        memset(l->db, 0, B * l->w * sizeof(float));
        loss += sgbd_layer_infonce_pair(l->da, l->db, l->a, l->b, m->ws, B,
                                        l->w, m->ssl_temp, m->ssl_alpha);
    }
    return m->ssl_alpha * loss;
}

/* FAC backward, last level first: each level's id side feeds the one
 * before it. */
static int fac_backward(struct slmrec *m, const float *theta, float *grad,
                        size_t B)
{
    size_t D = m->D, off = B * D;
    int rc = 0;

    for (int k = m->C - 1; k >= 0 && rc == 0; k--) {
        struct slm_level *l = &m->lv[k];
        const float *prev = k == 0 ? m->z[0] + off : m->lv[k - 1].a;
        float *dprev = k == 0 ? m->dz[0] + off : m->lv[k - 1].da;
        size_t pw = k == 0 ? D : m->lv[k - 1].w;
        rc = lin_back(m, theta, grad, m->dz[k + 1] + off, l->db,
                      m->z[k + 1] + off, l->t_hw, l->t_hb, B, D, l->w);
        if (rc < 0)
            break;
        if (k == 0) {
            rc = lin_back(m, theta, grad, dprev, l->da, prev, l->t_g1w,
                          l->t_g1b, B, pw, D);
            break;
        }
        memset(l->da1, 0, B * D * sizeof(float));
        rc = lin_back(m, theta, grad, l->da1, l->da, l->a1, l->t_g2w, l->t_g2b,
                      B, D, l->w);
        if (rc == 0)
            rc = lin_back(m, theta, grad, dprev, l->da1, prev, l->t_g1w,
                          l->t_g1b, B, pw, D);
    }
    return rc;
}

/* Through each tower's propagation into E_u, E_i and the projections. */
static int towers_backward(struct slmrec *m, const float *theta, float *grad,
                           size_t B)
{
    size_t U = m->base.n_users, I = m->base.n_items, D = m->D, ud = U * D;
    float *gu = gtens(m, grad, m->t_user);

    for (int t = 0; t <= m->C; t++) {
        float *gnode = t == 0 && m->adjacent ? gu : m->gx;
        if (gnode == m->gx)
            memset(m->gx, 0, m->N * D * sizeof(float));
        int rc = sgbd_lgn_backward_rows(&m->lgn, &m->adj, m->dz[t], m->idx,
                                        2 * B, gnode);
        if (rc < 0)
            return rc;
        if (gnode == gu)
            continue;
        sgbd_mat_axpy_wide(ud, 1.0f, m->gx, gu);
        if (t == 0) {
            sgbd_mat_axpy_wide(I * D, 1.0f, m->gx + ud, gtens(m, grad, m->t_item));
            continue;
        }
        rc = sgbd_layer_fixed_linear_backward(
            gtens(m, grad, m->t_pw[t - 1]), gtens(m, grad, m->t_pb[t - 1]),
            m->gx + ud, m->feat[t - 1], m->fb[t - 1], I, m->dim[t - 1], D);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static double slmrec_loss_grad(struct sgbd_model *base, const float *theta,
                               float *grad, const struct sgbd_batch *b)
{
    struct slmrec *m = (struct slmrec *)base;
    size_t B = b->n;
    double loss;
    int rc;

    if (B == 0)
        return 0.0;
    if ((rc = mdl_check_batch("slmrec", base, b)) < 0 ||
        (rc = reserve_batch(m, B)) < 0)
        return mdl_fail(base, rc);
    for (size_t k = 0; k < B; k++) {
        m->idx[k] = b->users[k];
        m->idx[B + k] = base->n_users + b->pos[k];
    }
    if ((rc = towers_forward(m, theta, B)) < 0)
        return mdl_fail(base, rc);
    for (int t = 0; t <= m->C; t++)
        memset(m->dz[t], 0, 2 * B * m->D * sizeof(float));
    loss = main_loss(m, theta, grad, B);
    loss += fac_forward(m, theta, B);
    if (!isfinite(loss))
        return NAN;
    if ((rc = fac_backward(m, theta, grad, B)) < 0 ||
        (rc = towers_backward(m, theta, grad, B)) < 0)
        return mdl_fail(base, rc);
    return loss;
}

/* ---- embeddings --------------------------------------------------------- */

/* out (n, D) = Phi(concat of zall[t] rows r0 .. r0 + n), in blocks. */
static int fuse_all(struct slmrec *m, const float *theta, float *const *zall,
                    size_t r0, size_t n, int tw, int tb, struct sgbd_mat out)
{
    size_t D = m->D, blk = 1024;
    float *cat = malloc(blk * m->F * sizeof(float));
    float *e = malloc(blk * D * sizeof(float));
    int rc = cat && e ? 0 : -ENOMEM;

    for (size_t s = 0; rc == 0 && s < n; s += blk) {
        size_t k = n - s < blk ? n - s : blk;
        for (size_t r = 0; r < k; r++)
            for (int t = 0; t <= m->C; t++)
                memcpy(cat + r * m->F + (size_t)t * D,
                       zall[t] + (r0 + s + r) * D, D * sizeof(float));
        rc = lin(m, theta, e, cat, tw, tb, k, m->F, D);
        for (size_t r = 0; rc == 0 && r < k; r++)
            memcpy(sgbd_mat_row(out, s + r), e + r * D, D * sizeof(float));
    }
    free(e), free(cat);
    return rc;
}

static int slmrec_embed(struct sgbd_model *base, const float *theta,
                        struct sgbd_mat users, struct sgbd_mat items)
{
    struct slmrec *m = (struct slmrec *)base;
    size_t U = base->n_users, I = base->n_items, D = m->D;
    float *zall[SLMREC_TOWERS] = {0};
    int rc = 0;

    if (users.rows != U || items.rows != I || users.cols != D ||
        items.cols != D)
        return sgbd_errf(SGBD_E_SHAPE,
                         "slmrec: embed into (%zu, %zu) and "
                         "(%zu, %zu), expected (%zu, %zu) and (%zu, %zu)",
                         users.rows, users.cols, items.rows, items.cols, U, D,
                         I, D);
    for (int t = 0; t <= m->C && rc == 0; t++) {
        const float *x0 = tower_input(m, theta, t, &rc);
        zall[t] = malloc(m->N * D * sizeof(float));
        rc = !zall[t] ? -ENOMEM : rc;
        if (rc == 0)
            rc = sgbd_lgn_forward_all(&m->lgn, &m->adj, x0, zall[t]);
    }
    if (rc == 0)
        rc = fuse_all(m, theta, zall, 0, U, m->t_phu_w, m->t_phu_b, users);
    if (rc == 0)
        rc = fuse_all(m, theta, zall, U, I, m->t_phi_w, m->t_phi_b, items);
    for (int t = 0; t <= m->C; t++)
        free(zall[t]);
    return rc;
}

/*
 * A new item has no edges, so each tower's LGN output is its layer-0 row
 * divided by L + 1: the ID tower gets the mean ID embedding of the items
 * seen in training, channel c gets P_c(rownorm(f_c)) (a missing channel
 * takes its raw mean vector). e_i = Phi_i of their concatenation.
 */
static int slmrec_embed_new_item(struct sgbd_model *base, const float *theta,
                                 const float *const *feats, float *out)
{
    struct slmrec *m = (struct slmrec *)base;
    size_t D = m->D, maxd = 0;
    float *cat = malloc(m->F * sizeof(float)), norm;
    float inv = 1.0f / (SLMREC_LAYERS + 1);
    int rc = 0;

    for (int c = 0; c < m->C; c++)
        maxd = m->dim[c] > maxd ? m->dim[c] : maxd;
    float *f = malloc(maxd * sizeof(float));
    if (!cat || !f)
        rc = -ENOMEM;
    if (rc == 0)
        mdl_mean_rows(tens(m, theta, m->t_item), D, m->seen, m->n_seen, cat);
    for (int c = 0; c < m->C && rc == 0; c++) {
        const float *src = feats && feats[c] ? feats[c] : m->feat_mean[c];
        sgbd_layer_rownorm_forward(f, &norm, src, 1, m->dim[c]);
        rc = lin(m, theta, cat + (size_t)(c + 1) * D, f, m->t_pw[c], m->t_pb[c],
                 1, m->dim[c], D);
    }
    if (rc == 0) {
        sgbd_mat_scale(m->F, inv, cat);
        rc = lin(m, theta, out, cat, m->t_phi_w, m->t_phi_b, 1, m->F, D);
    }
    free(f), free(cat);
    return rc;
}

const struct sgbd_model_ops sgbd_slmrec_ops = {
    .name = "slmrec",
    .needs_features = 1,
    .create = slmrec_create,
    .free = slmrec_free,
    .pre_epoch = NULL,
    .loss_grad = slmrec_loss_grad,
    .embed = slmrec_embed,
    .embed_new_item = slmrec_embed_new_item,
};
