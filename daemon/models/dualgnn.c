/*
 * dualgnn.c - DualGNN (reference/algorithms.md 6.2) on the flat arena.
 *
 * Per channel the GCN block of mmgcn.h gives R_c (N, D). Items sum the
 * channels, z_i = sum_c R_c[U+i]. Users fuse with weight_u: MMRec's
 * in-place add makes slot 0 hold the sum of every channel, so with the
 * flag dualgnn_inplace_bug (default on) z_u = w_0 sum_c R_c[u] +
 * sum_{c>=1} w_c R_c[u] (for image + text: w_0 (v + t) + w_1 t); with the
 * flag off, the paper's z_u = sum_c w_c R_c[u]. One channel: z_u = R_0[u]
 * and no fusion weights. Then the user graph: z'_u = z_u + sum_s a_s
 * z_{n_s} over the 40 sampled co-occurring users (5.4), resampled by
 * pre_epoch. Score <z'_u, z_i>; loss: log2 BPR + lambda [sum_c
 * mean(P_c[u_b]^2) + mean(weight_u^2) + mean(weight_i^2)] (weight_i is
 * unused by the forward but regularised, as in MMRec).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mmgcn.h"
#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/graph.h"
#include "sgbd/layers.h"
#include "sgbd/models.h"

#define DUALGNN_LATENT   64 /* dim_latent, hard-coded in MMRec */
#define DUALGNN_K        40 /* user-graph neighbours, self.k = 40 */
#define DUALGNN_COOC_MAX 200

struct dualgnn {
    struct sgbd_model base;
    struct sgbd_mmgcn g;
    size_t D;
    int C, bug;
    double reg;
    int t_wu, t_wi; /* (U, C), (I, C); -1 with one channel */
    struct sgbd_mmgcn_users ug; /* user graph, K sampled each epoch */
    float *zu, *dzu; /* (U, D) fused users and gradient */
    struct sgbd_mmgcn_batch bb; /* (B, D) final rows and gradients */
};

static void dualgnn_free(struct sgbd_model *base)
{
    struct dualgnn *m = (struct dualgnn *)base;

    if (!m)
        return;
    sgbd_mmgcn_batch_free(&m->bb);
    free(m->dzu), free(m->zu);
    sgbd_mmgcn_users_free(&m->ug);
    sgbd_mmgcn_deinit(&m->g);
    free(m);
}

static int declare_fusion(struct dualgnn *m)
{
    struct sgbd_params *p = &m->base.layout;

    m->t_wu = m->t_wi = -1;
    if (m->C < 2)
        return 0;
    m->t_wu = sgbd_mmgcn_add_fusion(p, "weight_u", m->base.n_users, m->C);
    if (m->t_wu < 0)
        return m->t_wu;
    m->t_wi = sgbd_mmgcn_add_fusion(p, "weight_i", m->base.n_items, m->C);
    return m->t_wi < 0 ? m->t_wi : 0;
}

static int alloc_user_graph(struct dualgnn *m, const struct sgbd_dataset *ds)
{
    size_t U = m->base.n_users;
    int rc = sgbd_mmgcn_users_init(&m->ug, ds, DUALGNN_K, DUALGNN_COOC_MAX);

    if (rc < 0)
        return rc;
    m->zu = malloc(U * m->D * sizeof(float));
    m->dzu = malloc(U * m->D * sizeof(float));
    return m->zu && m->dzu ? 0 : -ENOMEM;
}

static int dualgnn_create(struct sgbd_model **out,
                          const struct sgbd_model_input *in)
{
    struct dualgnn *m;
    int rc = mdl_check_input("dualgnn", in);

    *out = NULL;
    if (rc == 0)
        rc = mdl_check_features("dualgnn", in);
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &sgbd_dualgnn_ops;
    m->base.n_users = in->ds->n_users;
    m->base.n_items = in->ds->n_items;
    m->base.dim = m->D = DUALGNN_LATENT;
    m->C = in->feat->n;
    m->bug = in->hp->dualgnn_inplace_bug;
    m->reg = in->hp->reg_weight;

    rc = sgbd_mmgcn_init(&m->g, in, m->D, &m->base.layout);
    if (rc == 0)
        rc = declare_fusion(m);
    if (rc == 0)
        rc = alloc_user_graph(m, in->ds);
    if (rc < 0) {
        dualgnn_free(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}

static int dualgnn_pre_epoch(struct sgbd_model *base, const float *theta,
                             struct sgbd_rng *rng)
{
    struct dualgnn *m = (struct dualgnn *)base;

    sgbd_mmgcn_users_sample(&m->ug, rng);
    return 0;
}

static int reserve_batch(struct dualgnn *m, size_t B)
{
    return sgbd_mmgcn_batch_reserve(&m->bb, B, m->D, "dualgnn");
}

/* Fusion coefficient of channel c in z_u, and of the channel sum. */
static void user_coefs(const struct dualgnn *m, const float *wu, size_t u,
                       float *own, float *sum)
{
    for (int c = 0; c < m->C; c++)
        own[c] = m->C == 1 ? 1.0f : sgbd_mmgcn_fusion_w(wu, m->C, u, c);
    *sum = 0.0f;
    if (m->bug && m->C > 1) { /* slot 0 holds the channel sum */
        *sum = own[0];
        own[0] = 0.0f;
    }
}

/* zu (U, D) = fused user vectors at the current R_c. */
static void fuse_users(struct dualgnn *m, const float *theta)
{
    const float *wu =
        m->t_wu < 0 ? NULL : theta + m->base.layout.t[m->t_wu].offset;
    size_t D = m->D;
    float own[SGBD_MAX_CHANNELS], sum;

    for (size_t u = 0; u < m->base.n_users; u++) {
        float *z = m->zu + u * D;
        user_coefs(m, wu, u, own, &sum);
        memset(z, 0, D * sizeof(float));
        for (int c = 0; c < m->C; c++)
            sgbd_mat_axpy(D, own[c] + sum, m->g.ch[c].r + u * D, z);
    }
}

/* z_i = sum_c R_c[U + i] for the given items. */
static void item_rows(const struct dualgnn *m, float *out,
                      const uint32_t *items, size_t n)
{
    size_t D = m->D, U = m->base.n_users;

    memset(out, 0, n * D * sizeof(float));
    for (size_t k = 0; k < n; k++)
        for (int c = 0; c < m->C; c++)
            sgbd_mat_axpy(D, 1.0f, m->g.ch[c].r + (U + items[k]) * D,
                          out + k * D);
}

static double batch_loss(struct dualgnn *m, const float *theta, float *grad,
                         const struct sgbd_batch *b)
{
    const struct sgbd_params *p = &m->base.layout;
    size_t B = b->n, bytes = B * m->D * sizeof(float);
    double loss;

    sgbd_mmgcn_user_agg(m->bb.fu, m->zu, b->users, B, m->D, m->ug.nbr, m->ug.aw,
                        DUALGNN_K);
    item_rows(m, m->bb.fp, b->pos, B);
    item_rows(m, m->bb.fn, b->neg, B);
    sgbd_layer_bpr_diff_forward(m->bb.x, m->bb.fu, m->bb.fp, m->bb.fn, B, m->D);
    memset(m->bb.dx, 0, B * sizeof(float));
    loss = sgbd_bpr_loss_log2(B, m->bb.x, m->bb.dx, 1.0);
    memset(m->bb.du, 0, bytes), memset(m->bb.dp, 0, bytes), memset(m->bb.dn, 0, bytes);
    sgbd_layer_bpr_diff_backward(m->bb.du, m->bb.dp, m->bb.dn, m->bb.dx, m->bb.fu, m->bb.fp,
                                 m->bb.fn, B, m->D);
    loss += sgbd_mmgcn_pref_reg(&m->g, theta, grad, b->users, B, m->reg);
    if (m->C > 1) {
        size_t U = m->base.n_users, I = m->base.n_items;
        loss +=
            sgbd_mmgcn_fusion_reg(theta + p->t[m->t_wu].offset,
                                  grad + p->t[m->t_wu].offset, U, m->C, m->reg);
        loss +=
            sgbd_mmgcn_fusion_reg(theta + p->t[m->t_wi].offset,
                                  grad + p->t[m->t_wi].offset, I, m->C, m->reg);
    }
    return loss;
}

/* dzu -> dR_c of the users and d weight_u. */
static void users_backward(struct dualgnn *m, const float *theta, float *grad)
{
    const struct sgbd_params *p = &m->base.layout;
    const float *wu = m->t_wu < 0 ? NULL : theta + p->t[m->t_wu].offset;
    float *gw = m->t_wu < 0 ? NULL : grad + p->t[m->t_wu].offset;
    size_t D = m->D;
    float own[SGBD_MAX_CHANNELS], sum;

    for (size_t u = 0; u < m->base.n_users; u++) {
        const float *dz = m->dzu + u * D;
        user_coefs(m, wu, u, own, &sum);
        for (int c = 0; c < m->C; c++)
            sgbd_mat_axpy(D, own[c] + sum, dz, m->g.ch[c].dr + u * D);
        if (!gw)
            continue;
        for (int c = 0; c < m->C; c++) {
            float s = (float)sgbd_mat_dot(D, dz, m->g.ch[c].r + u * D);
            if (m->bug) /* slot 0 multiplies the sum of all channels */
                gw[u * m->C] += s;
            if (!m->bug || c > 0)
                gw[u * m->C + c] += s;
        }
    }
}

static int backward(struct dualgnn *m, const float *theta, float *grad,
                    const struct sgbd_batch *b)
{
    size_t B = b->n, D = m->D, U = m->base.n_users;

    memset(m->dzu, 0, U * D * sizeof(float));
    sgbd_mmgcn_user_agg_backward(m->dzu, m->bb.du, b->users, B, D, m->ug.nbr, m->ug.aw,
                                 DUALGNN_K);
    users_backward(m, theta, grad);
    for (size_t k = 0; k < B; k++)
        for (int c = 0; c < m->C; c++) {
            float *dr = m->g.ch[c].dr + U * D;
            sgbd_mat_axpy(D, 1.0f, m->bb.dp + k * D, dr + b->pos[k] * D);
            sgbd_mat_axpy(D, 1.0f, m->bb.dn + k * D, dr + b->neg[k] * D);
        }
    return sgbd_mmgcn_backward(&m->g, theta, grad);
}

static double dualgnn_loss_grad(struct sgbd_model *base, const float *theta,
                                float *grad, const struct sgbd_batch *b)
{
    struct dualgnn *m = (struct dualgnn *)base;
    double loss;
    int rc;

    if (b->n == 0)
        return 0.0;
    if ((rc = mdl_check_batch("dualgnn", base, b)) < 0 ||
        (rc = reserve_batch(m, b->n)) < 0 ||
        (rc = sgbd_mmgcn_forward(&m->g, theta)) < 0)
        return mdl_fail(base, rc);
    fuse_users(m, theta);
    loss = batch_loss(m, theta, grad, b);
    if ((rc = backward(m, theta, grad, b)) < 0)
        return mdl_fail(base, rc);
    return loss;
}

static int dualgnn_embed(struct sgbd_model *base, const float *theta,
                         struct sgbd_mat users, struct sgbd_mat items)
{
    struct dualgnn *m = (struct dualgnn *)base;
    size_t U = base->n_users, I = base->n_items, D = m->D;
    uint32_t *ids = malloc((U > I ? U : I) * sizeof(*ids));
    float *tmp = malloc((U > I ? U : I) * D * sizeof(float));
    int rc = -ENOMEM;

    if (users.rows != U || items.rows != I || users.cols != D ||
        items.cols != D) {
        rc = sgbd_errf(SGBD_E_SHAPE,
                       "dualgnn: embed into (%zu, %zu) and "
                       "(%zu, %zu), expected (%zu, %zu) and (%zu, %zu)",
                       users.rows, users.cols, items.rows, items.cols, U, D, I,
                       D);
        goto out;
    }
    if (!ids || !tmp)
        goto out;
    rc = sgbd_mmgcn_forward(&m->g, theta);
    if (rc < 0)
        goto out;
    fuse_users(m, theta);
    for (size_t k = 0; k < (U > I ? U : I); k++)
        ids[k] = (uint32_t)k;
    sgbd_mmgcn_user_agg(tmp, m->zu, ids, U, D, m->ug.nbr, m->ug.aw, DUALGNN_K);
    for (size_t u = 0; u < U; u++)
        memcpy(sgbd_mat_row(users, u), tmp + u * D, D * sizeof(float));
    item_rows(m, tmp, ids, I);
    for (size_t i = 0; i < I; i++)
        memcpy(sgbd_mat_row(items, i), tmp + i * D, D * sizeof(float));
out:
    free(tmp);
    free(ids);
    return rc;
}

/* z = sum_c rownorm(MLP_c(f_c)): an item without edges has R_c = X_c. */
static int dualgnn_embed_new_item(struct sgbd_model *base, const float *theta,
                                  const float *const *feats, float *out)
{
    struct dualgnn *m = (struct dualgnn *)base;
    float x[DUALGNN_LATENT];

    memset(out, 0, m->D * sizeof(float));
    for (int c = 0; c < m->C; c++) {
        const float *f = feats && feats[c] ? feats[c] : m->g.ch[c].feat_mean;
        int rc = sgbd_mmgcn_new_item(&m->g, theta, c, f, x);
        if (rc < 0)
            return rc;
        sgbd_mat_axpy(m->D, 1.0f, x, out);
    }
    return 0;
}

const struct sgbd_model_ops sgbd_dualgnn_ops = {
    .name = "dualgnn",
    .needs_features = 1,
    .create = dualgnn_create,
    .free = dualgnn_free,
    .pre_epoch = dualgnn_pre_epoch,
    .loss_grad = dualgnn_loss_grad,
    .embed = dualgnn_embed,
    .embed_new_item = dualgnn_embed_new_item,
};
