/*
 * dragon.c - DRAGON (reference/algorithms.md 6.3) on the flat arena.
 *
 * Per channel the GCN block of mmgcn.h gives R_c (N, 64). Fusion "cat":
 * items Y_i = [R_c[U+i]]_c, users Y_u = [w_uc R_c[u]]_c (W = 64 C wide;
 * one channel: Y_u = R_0[u], no weights). Homogeneous graphs: items
 * Y'_i = Y_i + sum_k G[i,k] Y_k over the frozen item kNN graph (5.3, one
 * hop), users Y'_u = Y_u + sum_s a_s Y_{n_s} over the 40 sampled
 * co-occurring users (5.4). Score <Y'_u, Y'_i>; loss: log2 BPR + lambda
 * [sum_c mean(P_c[u_b]^2) + mean(weight_u^2)].
 *
 * Cost: the MLPs and two SpMMs per channel run on the whole graph in
 * every call (they depend on theta); both homogeneous graphs are needed
 * on the batch rows only, so they are gathered forward and scattered
 * backward for those rows (B x 40 and 2B x 20 rows of width W) instead
 * of being propagated over all users and items.
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

#define DRAGON_LATENT   64 /* dim_latent, hard-coded in MMRec */
#define DRAGON_K        40 /* user-graph neighbours, self.k = 40 */
#define DRAGON_COOC_MAX 200

struct dragon {
    struct sgbd_model base;
    struct sgbd_mmgcn g;
    size_t D, W; /* latent 64, fused width 64 C */
    int C;
    size_t knn_k;
    double reg;
    int t_wu;            /* (U, C); -1 with one channel */
    struct sgbd_csr knn; /* G (I, I), 5.3 */
    double knn_w[SGBD_MAX_CHANNELS];
    float *fnorm[SGBD_MAX_CHANNELS]; /* (I) feature row norms (cold start) */
    struct sgbd_mmgcn_users ug; /* user graph, K sampled each epoch */
    float *yu, *dyu; /* (U, W) fused users and gradient */
    struct sgbd_mmgcn_batch bb; /* (B, W) final rows and gradients */
    /* The GCN block's R_c hold the forward of the theta whose contents
     * hash to fwd_hash (fwd_valid): cold starts at one theta reuse it. */
    int fwd_valid;
    uint64_t fwd_hash;
};

static void dragon_free(struct sgbd_model *base)
{
    struct dragon *m = (struct dragon *)base;

    if (!m)
        return;
    sgbd_mmgcn_batch_free(&m->bb);
    free(m->dyu), free(m->yu);
    sgbd_mmgcn_users_free(&m->ug);
    for (int c = 0; c < SGBD_MAX_CHANNELS; c++)
        free(m->fnorm[c]);
    sgbd_csr_free(&m->knn);
    sgbd_mmgcn_deinit(&m->g);
    free(m);
}

/* The item kNN graph G of the raw features, and the row norms that the
 * cold-start path needs to place a new item in it. */
static int build_item_graph(struct dragon *m, const struct sgbd_model_input *in)
{
    struct sgbd_mat feats[SGBD_MAX_CHANNELS];
    struct sgbd_csr gt = {0};
    size_t I = m->base.n_items;

    mdl_knn_weights(in->feat, in->hp->mm_image_weight, m->knn_w);
    for (int c = 0; c < m->C; c++) {
        feats[c] = sgbd_mat_view(m->g.ch[c].feat, I, m->g.ch[c].dim);
        m->fnorm[c] = malloc(I * sizeof(float));
        if (!m->fnorm[c])
            return -ENOMEM;
        mdl_row_norms(m->g.ch[c].feat, I, m->g.ch[c].dim, m->fnorm[c]);
    }
    int rc = sgbd_graph_item_knn(&m->knn, &gt, feats, m->knn_w, m->C, m->knn_k);
    sgbd_csr_free(&gt); /* the backward scatters along G's rows */
    return rc;
}

static int alloc_user_graph(struct dragon *m, const struct sgbd_dataset *ds)
{
    size_t U = m->base.n_users;
    int rc = sgbd_mmgcn_users_init(&m->ug, ds, DRAGON_K, DRAGON_COOC_MAX);

    if (rc < 0)
        return rc;
    m->yu = malloc(U * m->W * sizeof(float));
    m->dyu = malloc(U * m->W * sizeof(float));
    return m->yu && m->dyu ? 0 : -ENOMEM;
}

static int check_hparams(const struct sgbd_hparams *hp)
{
    if (hp->knn_k <= 0)
        return sgbd_errf(SGBD_E_CONFIG, "dragon: knn_k %d must be > 0",
                         hp->knn_k);
    if (!(hp->mm_image_weight >= 0.0 && hp->mm_image_weight <= 1.0))
        return sgbd_errf(SGBD_E_CONFIG,
                         "dragon: mm_image_weight %g not in "
                         "[0, 1]",
                         hp->mm_image_weight);
    return 0;
}

static int dragon_create(struct sgbd_model **out,
                         const struct sgbd_model_input *in)
{
    struct dragon *m;
    int rc = mdl_check_input("dragon", in);

    *out = NULL;
    if (rc == 0)
        rc = mdl_check_features("dragon", in);
    if (rc == 0)
        rc = check_hparams(in->hp);
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &sgbd_dragon_ops;
    m->base.n_users = in->ds->n_users;
    m->base.n_items = in->ds->n_items;
    m->D = DRAGON_LATENT;
    m->C = in->feat->n;
    m->base.dim = m->W = m->D * (size_t)m->C;
    m->knn_k = (size_t)in->hp->knn_k;
    m->reg = in->hp->reg_weight;
    m->t_wu = -1;

    rc = sgbd_mmgcn_init(&m->g, in, m->D, &m->base.layout);
    if (rc == 0 && m->C > 1)
        rc = m->t_wu = sgbd_mmgcn_add_fusion(&m->base.layout, "weight_u",
                                             m->base.n_users, m->C);
    if (rc >= 0)
        rc = build_item_graph(m, in);
    if (rc == 0)
        rc = alloc_user_graph(m, in->ds);
    if (rc < 0) {
        dragon_free(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}

/* A hash of theta's contents, 4 lanes of multiply-xorshift over its
 * bits: the published theta of a snapshot is tested in about a
 * millisecond, where a forward pass takes tens. */
static uint64_t theta_hash(const float *theta, size_t n)
{
    uint64_t h[4] = {1, 2, 3, 4};
    size_t i = 0;

    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) {
            uint32_t b;
            memcpy(&b, &theta[i + (size_t)l], sizeof(b));
            h[l] = (h[l] ^ b) * 0x9e3779b97f4a7c15u;
            h[l] ^= h[l] >> 29;
        }
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, &theta[i], sizeof(b));
        h[0] = (h[0] ^ b) * 0x9e3779b97f4a7c15u;
    }
    return h[0] ^ (h[1] * 3) ^ (h[2] * 5) ^ (h[3] * 7) ^ n;
}

/* R_c for theta: the forward pass, unless the last one was at the same
 * parameters and nothing has overwritten it since. */
static int forward_at(struct dragon *m, const float *theta)
{
    uint64_t h = theta_hash(theta, m->base.layout.n);
    int rc;

    if (m->fwd_valid && m->fwd_hash == h)
        return 0;
    m->fwd_valid = 0;
    rc = sgbd_mmgcn_forward(&m->g, theta);
    if (rc == 0)
        m->fwd_valid = 1, m->fwd_hash = h;
    return rc;
}

static int dragon_pre_epoch(struct sgbd_model *base, const float *theta,
                            struct sgbd_rng *rng)
{
    struct dragon *m = (struct dragon *)base;

    sgbd_mmgcn_users_sample(&m->ug, rng);
    return 0;
}

static int reserve_batch(struct dragon *m, size_t B)
{
    return sgbd_mmgcn_batch_reserve(&m->bb, B, m->W, "dragon");
}

static float user_weight(const struct dragon *m, const float *wu, size_t u,
                         int c)
{
    return wu ? sgbd_mmgcn_fusion_w(wu, m->C, u, c) : 1.0f;
}

/* yu (U, W): Y_u = [w_uc R_c[u]]_c for every user. */
static void fuse_users(struct dragon *m, const float *theta)
{
    const float *wu =
        m->t_wu < 0 ? NULL : theta + m->base.layout.t[m->t_wu].offset;
    size_t D = m->D;

    for (size_t u = 0; u < m->base.n_users; u++)
        for (int c = 0; c < m->C; c++) {
            float *y = m->yu + u * m->W + (size_t)c * D;
            const float *r = m->g.ch[c].r + u * D;
            float w = user_weight(m, wu, u, c);
            for (size_t d = 0; d < D; d++)
                y[d] = w * r[d];
        }
}

/* out (W) += s * Y_j = s [R_c[U+j]]_c. */
static void add_item(const struct dragon *m, float *out, uint32_t j, float s)
{
    size_t D = m->D, row = (size_t)m->base.n_users + j;

    for (int c = 0; c < m->C; c++)
        sgbd_mat_axpy(D, s, m->g.ch[c].r + row * D, out + (size_t)c * D);
}

/* out (n, W) = Y'_i = Y_i + sum_k G[i,k] Y_k for the given items. */
static void item_rows(const struct dragon *m, float *out, const uint32_t *items,
                      size_t n)
{
    const struct sgbd_csr *G = &m->knn;

    memset(out, 0, n * m->W * sizeof(float));
    for (size_t r = 0; r < n; r++) {
        float *o = out + r * m->W;
        add_item(m, o, items[r], 1.0f);
        for (uint64_t e = G->ptr[items[r]]; e < G->ptr[items[r] + 1]; e++)
            add_item(m, o, G->col[e], G->val[e]);
    }
}

/* dR_c[U+j] += s * d (W) sliced per channel. */
static void item_back(struct dragon *m, const float *d, uint32_t j, float s)
{
    size_t D = m->D, row = (size_t)m->base.n_users + j;

    for (int c = 0; c < m->C; c++)
        sgbd_mat_axpy(D, s, d + (size_t)c * D, m->g.ch[c].dr + row * D);
}

static void items_backward(struct dragon *m, const float *d,
                           const uint32_t *items, size_t n)
{
    const struct sgbd_csr *G = &m->knn;

    for (size_t r = 0; r < n; r++) {
        const float *dr = d + r * m->W;
        item_back(m, dr, items[r], 1.0f);
        for (uint64_t e = G->ptr[items[r]]; e < G->ptr[items[r] + 1]; e++)
            item_back(m, dr, G->col[e], G->val[e]);
    }
}

/* dyu -> dR_c of the users and d weight_u. */
static void users_backward(struct dragon *m, const float *theta, float *grad)
{
    const struct sgbd_params *p = &m->base.layout;
    const float *wu = m->t_wu < 0 ? NULL : theta + p->t[m->t_wu].offset;
    float *gw = m->t_wu < 0 ? NULL : grad + p->t[m->t_wu].offset;
    size_t D = m->D;

    for (size_t u = 0; u < m->base.n_users; u++)
        for (int c = 0; c < m->C; c++) {
            const float *dy = m->dyu + u * m->W + (size_t)c * D;
            float *dr = m->g.ch[c].dr + u * D;
            sgbd_mat_axpy(D, user_weight(m, wu, u, c), dy, dr);
            if (gw)
                gw[u * m->C + c] +=
                    (float)sgbd_mat_dot(D, dy, m->g.ch[c].r + u * D);
        }
}

static double batch_loss(struct dragon *m, const float *theta, float *grad,
                         const struct sgbd_batch *b)
{
    const struct sgbd_params *p = &m->base.layout;
    size_t B = b->n, W = m->W, bytes = B * W * sizeof(float);
    double loss;

    sgbd_mmgcn_user_agg(m->bb.fu, m->yu, b->users, B, W, m->ug.nbr, m->ug.aw, DRAGON_K);
    item_rows(m, m->bb.fp, b->pos, B);
    item_rows(m, m->bb.fn, b->neg, B);
    sgbd_layer_bpr_diff_forward(m->bb.x, m->bb.fu, m->bb.fp, m->bb.fn, B, W);
    memset(m->bb.dx, 0, B * sizeof(float));
    loss = sgbd_bpr_loss_log2(B, m->bb.x, m->bb.dx, 1.0);
    memset(m->bb.du, 0, bytes), memset(m->bb.dp, 0, bytes), memset(m->bb.dn, 0, bytes);
    sgbd_layer_bpr_diff_backward(m->bb.du, m->bb.dp, m->bb.dn, m->bb.dx, m->bb.fu, m->bb.fp,
                                 m->bb.fn, B, W);
    loss += sgbd_mmgcn_pref_reg(&m->g, theta, grad, b->users, B, m->reg);
    if (m->t_wu >= 0)
        loss += sgbd_mmgcn_fusion_reg(theta + p->t[m->t_wu].offset,
                                      grad + p->t[m->t_wu].offset,
                                      m->base.n_users, m->C, m->reg);
    return loss;
}

static int backward(struct dragon *m, const float *theta, float *grad,
                    const struct sgbd_batch *b)
{
    size_t B = b->n, U = m->base.n_users;

    memset(m->dyu, 0, U * m->W * sizeof(float));
    sgbd_mmgcn_user_agg_backward(m->dyu, m->bb.du, b->users, B, m->W, m->ug.nbr,
                                 m->ug.aw, DRAGON_K);
    users_backward(m, theta, grad);
    items_backward(m, m->bb.dp, b->pos, B);
    items_backward(m, m->bb.dn, b->neg, B);
    return sgbd_mmgcn_backward(&m->g, theta, grad);
}

static double dragon_loss_grad(struct sgbd_model *base, const float *theta,
                               float *grad, const struct sgbd_batch *b)
{
    struct dragon *m = (struct dragon *)base;
    double loss;
    int rc;

    if (b->n == 0)
        return 0.0;
    m->fwd_valid = 0; /* training parameters change under R_c */
    if ((rc = mdl_check_batch("dragon", base, b)) < 0 ||
        (rc = reserve_batch(m, b->n)) < 0 ||
        (rc = sgbd_mmgcn_forward(&m->g, theta)) < 0)
        return mdl_fail(base, rc);
    fuse_users(m, theta);
    loss = batch_loss(m, theta, grad, b);
    if ((rc = backward(m, theta, grad, b)) < 0)
        return mdl_fail(base, rc);
    return loss;
}

static int check_embed_shape(const struct dragon *m, struct sgbd_mat users,
                             struct sgbd_mat items)
{
    size_t U = m->base.n_users, I = m->base.n_items, W = m->W;

    if (users.rows == U && items.rows == I && users.cols == W &&
        items.cols == W)
        return 0;
    return sgbd_errf(SGBD_E_SHAPE,
                     "dragon: embed into (%zu, %zu) and (%zu, "
                     "%zu), expected (%zu, %zu) and (%zu, %zu)",
                     users.rows, users.cols, items.rows, items.cols, U, W, I,
                     W);
}

static int dragon_embed(struct sgbd_model *base, const float *theta,
                        struct sgbd_mat users, struct sgbd_mat items)
{
    struct dragon *m = (struct dragon *)base;
    size_t U = base->n_users, I = base->n_items, n = U > I ? U : I;
    uint32_t *ids = malloc(n * sizeof(*ids));
    float *tmp = malloc(n * m->W * sizeof(float));
    int rc = check_embed_shape(m, users, items);

    if (rc == 0 && (!ids || !tmp))
        rc = -ENOMEM;
    if (rc == 0)
        rc = forward_at(m, theta);
    if (rc < 0)
        goto out;
    fuse_users(m, theta);
    for (size_t k = 0; k < n; k++)
        ids[k] = (uint32_t)k;
    sgbd_mmgcn_user_agg(tmp, m->yu, ids, U, m->W, m->ug.nbr, m->ug.aw, DRAGON_K);
    for (size_t u = 0; u < U; u++)
        memcpy(sgbd_mat_row(users, u), tmp + u * m->W, m->W * sizeof(float));
    item_rows(m, tmp, ids, I);
    for (size_t i = 0; i < I; i++)
        memcpy(sgbd_mat_row(items, i), tmp + i * m->W, m->W * sizeof(float));
out:
    free(tmp);
    free(ids);
    return rc;
}

/*
 * out (W) = Y_new + sum_c (w_c / k) sum over the new item's kNN list of
 * channel c: the item's own Y (its R_c rows are its X_c rows, it has no
 * edges) or an existing item's Y, from a forward at theta (one pass per
 * theta, kept for the next new item).
 */
static int new_item_graph(struct dragon *m, const float *const *f,
                          const float *y_new, float *out)
{
    size_t k = m->knn_k, I = m->base.n_items;
    uint32_t *ids = malloc(k * sizeof(*ids));
    float *sim = malloc(k * sizeof(float));

    if (!ids || !sim) {
        free(sim), free(ids);
        return -ENOMEM;
    }
    memcpy(out, y_new, m->W * sizeof(float));
    for (int c = 0; c < m->C; c++) {
        size_t n = mdl_knn_query(m->g.ch[c].feat, m->fnorm[c], I,
                                 m->g.ch[c].dim, f[c], k, ids, sim);
        float r = 1e-7f + (float)k; /* 5.3: r^-1/2 r^-1/2, r = k */
        float s = (float)m->knn_w[c] * (1.0f / sqrtf(r)) * (1.0f / sqrtf(r));
        for (size_t j = 0; j < n; j++) {
            if (ids[j] == I)
                sgbd_mat_axpy(m->W, s, y_new, out);
            else
                add_item(m, out, ids[j], s);
        }
    }
    free(sim), free(ids);
    return 0;
}

static int dragon_embed_new_item(struct sgbd_model *base, const float *theta,
                                 const float *const *feats, float *out)
{
    struct dragon *m = (struct dragon *)base;
    const float *f[SGBD_MAX_CHANNELS];
    float *y = malloc(m->W * sizeof(float));
    int rc = y ? 0 : -ENOMEM;

    for (int c = 0; c < m->C && rc == 0; c++) {
        f[c] = feats && feats[c] ? feats[c] : m->g.ch[c].feat_mean;
        rc = sgbd_mmgcn_new_item(&m->g, theta, c, f[c], y + (size_t)c * m->D);
    }
    if (rc == 0)
        rc = forward_at(m, theta);
    if (rc == 0)
        rc = new_item_graph(m, f, y, out);
    free(y);
    return rc;
}

const struct sgbd_model_ops sgbd_dragon_ops = {
    .name = "dragon",
    .needs_features = 1,
    .create = dragon_create,
    .free = dragon_free,
    .pre_epoch = dragon_pre_epoch,
    .loss_grad = dragon_loss_grad,
    .embed = dragon_embed,
    .embed_new_item = dragon_embed_new_item,
};
