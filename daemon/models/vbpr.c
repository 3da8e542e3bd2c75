/*
 * vbpr.c - VBPR (reference/algorithms.md 6.7) on the flat arena.
 *
 * Item i is [E_i ; W f_i + b] with f_i the item's feature channels
 * concatenated text first (models.h), user u is E_u (2D). A batch
 * projects only its distinct items: the M <= 2B feature rows are gathered
 * into one (M, F) block, so the forward and dW are one sgemm each of
 * M x F x D instead of I x F x D. The model keeps its own (I, F) copy of
 * the features (frozen data), in concatenation order. With bf16_features
 * the copy is also rounded to bfloat16 once, and both products read the
 * batch's rows from it in place (bf16.h): nothing is gathered.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "sgbd/bf16.h"
#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/layers.h"
#include "sgbd/models.h"

struct vbpr {
    struct sgbd_model base;
    size_t D, F; /* ID width (users 2D), feature width */
    double reg;
    int t_user, t_item, t_w, t_b;
    int n_ch;
    int order[SGBD_MAX_CHANNELS];  /* dataset index of k-th block of f */
    size_t col[SGBD_MAX_CHANNELS]; /* column of dataset channel c in f */
    size_t width[SGBD_MAX_CHANNELS];
    float *feat;      /* (I, F) concatenated features; NULL once rounded */
    float *feat_mean; /* (F) column means, for missing channels */
    struct sgbd_bf16_fixed feat_bf; /* feat rounded, with bf16_features */
    struct sgbd_bf16_fixed *fb;     /* &feat_bf, or NULL in float32 */
    uint32_t *seen;   /* distinct training items */
    size_t n_seen;
    int32_t *slot_of;                 /* (I) -1, or slot in the batch's uniq */
    size_t cap;                       /* batch rows the buffers below hold */
    uint32_t *uniq, *slot_p, *slot_n; /* (2B), (B), (B) */
    float *fg;                        /* (2B, F) gathered, float32 only */
    float *proj, *dproj;              /* (2B, D) W f + b and its gradient */
    float *vu, *vp, *vn;              /* (B, 2D) final vectors */
    float *du, *dp, *dn;              /* (B, 2D) their gradients */
    float *x, *dx;                    /* (B) */
};

static void free_batch(struct vbpr *m)
{
    free(m->uniq), free(m->slot_p), free(m->slot_n);
    free(m->fg), free(m->proj), free(m->dproj);
    free(m->vu), free(m->vp), free(m->vn);
    free(m->du), free(m->dp), free(m->dn);
    free(m->x), free(m->dx);
}

static void vbpr_free(struct sgbd_model *base)
{
    struct vbpr *m = (struct vbpr *)base;

    if (!m)
        return;
    free_batch(m);
    free(m->slot_of);
    free(m->seen);
    sgbd_bf16_fixed_deinit(&m->feat_bf);
    free(m->feat_mean);
    free(m->feat);
    free(m);
}

static int declare_layout(struct vbpr *m)
{
    struct sgbd_params *p = &m->base.layout;
    size_t D = m->D;

    m->t_user = sgbd_params_add(p, "user_embedding", m->base.n_users, 2 * D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    m->t_item = sgbd_params_add(p, "item_embedding", m->base.n_items, D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    m->t_w = sgbd_params_add(p, "item_linear.weight", D, m->F,
                             SGBD_INIT_XAVIER_NORMAL, 0, 0);
    m->t_b =
        sgbd_params_add(p, "item_linear.bias", 1, D, SGBD_INIT_ZERO, m->F, 0);
    if (m->t_user < 0 || m->t_item < 0 || m->t_w < 0)
        return m->t_user < 0 ? m->t_user : m->t_item < 0 ? m->t_item : m->t_w;
    return m->t_b < 0 ? m->t_b : 0;
}

/* Concatenate the channels text first into feat (I, F); column means;
 * the bfloat16 copy when asked for. */
static int copy_features(struct vbpr *m, const struct sgbd_features *f,
                         int bf16)
{
    size_t I = m->base.n_items, F = 0;

    m->n_ch = f->n;
    mdl_text_first(f, m->order);
    for (int k = 0; k < f->n; k++) {
        int c = m->order[k];
        m->col[c] = F;
        m->width[c] = f->ch[c].m.cols;
        F += m->width[c];
    }
    m->F = F;
    m->feat = malloc(I * F * sizeof(float));
    m->feat_mean = malloc(F * sizeof(float));
    if (!m->feat || !m->feat_mean)
        return -ENOMEM;
    for (int c = 0; c < f->n; c++) {
        struct sgbd_mat src = f->ch[c].m;
        for (size_t i = 0; i < I; i++)
            memcpy(m->feat + i * F + m->col[c], sgbd_mat_row(src, i),
                   m->width[c] * sizeof(float));
    }
    mdl_col_means(sgbd_mat_view(m->feat, I, F), m->feat_mean);
    if (!bf16)
        return 0;
    int rc = sgbd_bf16_fixed_init_rows(&m->feat_bf, m->feat, I, F);
    if (rc < 0)
        return rc;
    m->fb = &m->feat_bf;
    free(m->feat); /* every product now reads the rounded copy */
    m->feat = NULL;
    return 0;
}

static int copy_seen(struct vbpr *m, const struct sgbd_dataset *ds)
{
    m->seen = malloc(ds->n_neg_items * sizeof(*m->seen) + 1);
    m->slot_of = malloc((size_t)ds->n_items * sizeof(*m->slot_of));
    if (!m->seen || !m->slot_of)
        return -ENOMEM;
    memcpy(m->seen, ds->neg_items, ds->n_neg_items * sizeof(*m->seen));
    m->n_seen = ds->n_neg_items;
    for (uint32_t i = 0; i < ds->n_items; i++)
        m->slot_of[i] = -1;
    return 0;
}

static int vbpr_create(struct sgbd_model **out,
                       const struct sgbd_model_input *in)
{
    struct vbpr *m;
    int rc = mdl_check_input("vbpr", in);

    *out = NULL;
    if (rc == 0)
        rc = mdl_check_features("vbpr", in);
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &sgbd_vbpr_ops;
    m->base.n_users = in->ds->n_users;
    m->base.n_items = in->ds->n_items;
    m->D = (size_t)in->hp->embedding_size;
    m->base.dim = 2 * m->D;
    m->reg = in->hp->reg_weight;

    rc = copy_features(m, in->feat, in->hp->bf16_features);
    if (rc == 0)
        rc = declare_layout(m);
    if (rc == 0)
        rc = copy_seen(m, in->ds);
    if (rc < 0) {
        vbpr_free(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}

static int reserve_batch(struct vbpr *m, size_t B)
{
    size_t D2 = 2 * m->D, fl = sizeof(float);

    if (B <= m->cap)
        return 0;
    free_batch(m);
    m->uniq = malloc(2 * B * sizeof(uint32_t));
    m->slot_p = malloc(B * sizeof(uint32_t));
    m->slot_n = malloc(B * sizeof(uint32_t));
    m->fg = m->fb ? NULL : malloc(2 * B * m->F * fl);
    m->proj = malloc(2 * B * m->D * fl);
    m->dproj = malloc(2 * B * m->D * fl);
    m->vu = malloc(B * D2 * fl), m->du = malloc(B * D2 * fl);
    m->vp = malloc(B * D2 * fl), m->dp = malloc(B * D2 * fl);
    m->vn = malloc(B * D2 * fl), m->dn = malloc(B * D2 * fl);
    m->x = malloc(B * fl), m->dx = malloc(B * fl);
    m->cap = B;
    if (m->uniq && m->slot_p && m->slot_n && (m->fg || m->fb) && m->proj &&
        m->dproj &&
        m->vu && m->du && m->vp && m->dp && m->vn && m->dn && m->x && m->dx)
        return 0;
    m->cap = 0;
    return sgbd_errf(-ENOMEM, "vbpr: no memory for a batch of %zu", B);
}

/* v (2D) = [E_i row ; projection row]. */
static void item_vector(float *v, const float *ei, const float *proj, size_t D)
{
    memcpy(v, ei, D * sizeof(float));
    memcpy(v + D, proj, D * sizeof(float));
}

/* proj (M, D) = W f + b of the batch's distinct items m->uniq. */
static int project(struct vbpr *m, const float *theta, size_t M)
{
    const struct sgbd_params *p = &m->base.layout;
    const float *w = theta + p->t[m->t_w].offset;
    const float *bias = theta + p->t[m->t_b].offset;
    size_t D = m->D;

    if (!m->fb) {
        sgbd_layer_gather_rows(m->fg, m->feat, m->uniq, M, m->F);
        return sgbd_layer_linear_forward(m->proj, m->fg, w, bias, M, m->F, D);
    }
    for (size_t r = 0; r < M; r++)
        memcpy(m->proj + r * D, bias, D * sizeof(float));
    return sgbd_bf16_gemm_nt_rows(m->proj, w, D, m->uniq, M, m->fb);
}

/* dW (D, F) += dproj^T f, db += column sums of dproj (M, D). */
static int project_backward(struct vbpr *m, const float *theta, float *grad,
                            size_t M)
{
    const struct sgbd_params *p = &m->base.layout;
    float *dw = grad + p->t[m->t_w].offset, *db = grad + p->t[m->t_b].offset;
    size_t D = m->D;

    if (!m->fb)
        return sgbd_layer_linear_backward(NULL, dw, db, m->dproj, m->fg,
                                          theta + p->t[m->t_w].offset, M,
                                          m->F, D);
    for (size_t r = 0; r < M; r++)
        sgbd_mat_axpy(D, 1.0f, m->dproj + r * D, db);
    return sgbd_bf16_gemm_tn_rows(dw, m->dproj, D, m->uniq, M, m->fb);
}

/* Project the batch's distinct items and assemble the final vectors. */
static int forward_batch(struct vbpr *m, const float *theta,
                         const struct sgbd_batch *b, size_t *n_uniq)
{
    const struct sgbd_params *p = &m->base.layout;
    const float *eu = theta + p->t[m->t_user].offset;
    const float *ei = theta + p->t[m->t_item].offset;
    size_t D = m->D, M;
    int rc;

    mdl_unique_items(b, m->slot_of, m->uniq, &M, m->slot_p, m->slot_n);
    rc = project(m, theta, M);
    if (rc < 0)
        return rc;
    sgbd_layer_gather_rows(m->vu, eu, b->users, b->n, 2 * D);
    for (size_t k = 0; k < b->n; k++) {
        item_vector(m->vp + k * 2 * D, ei + (size_t)b->pos[k] * D,
                    m->proj + (size_t)m->slot_p[k] * D, D);
        item_vector(m->vn + k * 2 * D, ei + (size_t)b->neg[k] * D,
                    m->proj + (size_t)m->slot_n[k] * D, D);
    }
    *n_uniq = M;
    return 0;
}

/* BPR + reg * EmbLoss on the final vectors; fills du, dp, dn. */
static double batch_loss(struct vbpr *m, size_t B)
{
    size_t D2 = 2 * m->D, bytes = B * D2 * sizeof(float);
    struct sgbd_mat e[3], de[3];
    double loss;

    memset(m->dx, 0, B * sizeof(float));
    memset(m->du, 0, bytes);
    memset(m->dp, 0, bytes);
    memset(m->dn, 0, bytes);
    sgbd_layer_bpr_diff_forward(m->x, m->vu, m->vp, m->vn, B, D2);
    loss = sgbd_bpr_loss_ln(B, m->x, m->dx, 1.0);
    e[0] = sgbd_mat_view(m->vu, B, D2), de[0] = sgbd_mat_view(m->du, B, D2);
    e[1] = sgbd_mat_view(m->vp, B, D2), de[1] = sgbd_mat_view(m->dp, B, D2);
    e[2] = sgbd_mat_view(m->vn, B, D2), de[2] = sgbd_mat_view(m->dn, B, D2);
    loss += sgbd_emb_loss(3, e, de, m->reg);
    sgbd_layer_bpr_diff_backward(m->du, m->dp, m->dn, m->dx, m->vu, m->vp,
                                 m->vn, B, D2);
    return loss;
}

/* Scatter the final-vector gradients into the arena and through W. */
static int backward_batch(struct vbpr *m, const float *theta, float *grad,
                          const struct sgbd_batch *b, size_t M)
{
    const struct sgbd_params *p = &m->base.layout;
    float *gi = grad + p->t[m->t_item].offset;
    size_t D = m->D, D2 = 2 * D;

    sgbd_layer_scatter_add_rows(grad + p->t[m->t_user].offset, m->du, b->users,
                                b->n, D2);
    memset(m->dproj, 0, M * D * sizeof(float));
    for (size_t k = 0; k < b->n; k++) {
        const float *dp = m->dp + k * D2, *dn = m->dn + k * D2;
        sgbd_mat_axpy(D, 1.0f, dp, gi + (size_t)b->pos[k] * D);
        sgbd_mat_axpy(D, 1.0f, dn, gi + (size_t)b->neg[k] * D);
        sgbd_mat_axpy(D, 1.0f, dp + D, m->dproj + (size_t)m->slot_p[k] * D);
        sgbd_mat_axpy(D, 1.0f, dn + D, m->dproj + (size_t)m->slot_n[k] * D);
    }
    return project_backward(m, theta, grad, M);
}

static double vbpr_loss_grad(struct sgbd_model *base, const float *theta,
                             float *grad, const struct sgbd_batch *b)
{
    struct vbpr *m = (struct vbpr *)base;
    size_t M;
    double loss;
    int rc;

    if (b->n == 0)
        return 0.0;
    if ((rc = mdl_check_batch("vbpr", base, b)) < 0 ||
        (rc = reserve_batch(m, b->n)) < 0 ||
        (rc = forward_batch(m, theta, b, &M)) < 0)
        return mdl_fail(base, rc);
    loss = batch_loss(m, b->n);
    if ((rc = backward_batch(m, theta, grad, b, M)) < 0)
        return mdl_fail(base, rc);
    return loss;
}

/* The right halves of items (I, 2D), which hold b, += W f of every item
 * in bfloat16, as training saw them. */
static int embed_projection_bf16(struct vbpr *m, const float *theta,
                                 struct sgbd_mat items)
{
    const struct sgbd_params *p = &m->base.layout;
    size_t D = m->D, I = m->base.n_items;
    float *proj = calloc(I * D, sizeof(float));
    int rc;

    if (!proj)
        return sgbd_errf(-ENOMEM, "vbpr: no memory to project %zu items", I);
    rc = sgbd_bf16_gemm_nt(proj, theta + p->t[m->t_w].offset, D, m->fb);
    for (size_t i = 0; rc == 0 && i < I; i++)
        sgbd_mat_axpy(D, 1.0f, proj + i * D, sgbd_mat_row(items, i) + D);
    free(proj);
    return rc;
}

static int vbpr_embed(struct sgbd_model *base, const float *theta,
                      struct sgbd_mat users, struct sgbd_mat items)
{
    struct vbpr *m = (struct vbpr *)base;
    const struct sgbd_params *p = &m->base.layout;
    const float *eu = theta + p->t[m->t_user].offset;
    const float *ei = theta + p->t[m->t_item].offset;
    const float *bias = theta + p->t[m->t_b].offset;
    size_t D = m->D, I = base->n_items;

    if (users.rows != base->n_users || users.cols != 2 * D || items.rows != I ||
        items.cols != 2 * D)
        return sgbd_errf(SGBD_E_SHAPE,
                         "vbpr: embed into (%zu, %zu) and "
                         "(%zu, %zu), expected (%u, %zu) and (%zu, %zu)",
                         users.rows, users.cols, items.rows, items.cols,
                         base->n_users, 2 * D, I, 2 * D);
    for (size_t u = 0; u < users.rows; u++)
        memcpy(sgbd_mat_row(users, u), eu + u * 2 * D, 2 * D * sizeof(float));
    for (size_t i = 0; i < I; i++) {
        float *row = sgbd_mat_row(items, i);
        memcpy(row, ei + i * D, D * sizeof(float));
        memcpy(row + D, bias, D * sizeof(float));
    }
    if (m->fb)
        return embed_projection_bf16(m, theta, items);
    struct sgbd_mat right = {items.data + D, I, D, items.stride};
    return sgbd_mat_gemm_nt(
        right, sgbd_mat_view(m->feat, I, m->F),
        sgbd_mat_view((float *)theta + p->t[m->t_w].offset, D, m->F), 1.0f,
        1.0f);
}

/* [mean ID vector of seen items ; W f + b], missing channels -> means. */
static int vbpr_embed_new_item(struct sgbd_model *base, const float *theta,
                               const float *const *feats, float *out)
{
    struct vbpr *m = (struct vbpr *)base;
    const struct sgbd_params *p = &m->base.layout;
    float *f = malloc(m->F * sizeof(float));
    size_t D = m->D;

    if (!f)
        return -ENOMEM;
    for (int c = 0; c < m->n_ch; c++) {
        const float *src =
            feats && feats[c] ? feats[c] : m->feat_mean + m->col[c];
        memcpy(f + m->col[c], src, m->width[c] * sizeof(float));
    }
    mdl_mean_rows(theta + p->t[m->t_item].offset, D, m->seen, m->n_seen, out);
    memcpy(out + D, theta + p->t[m->t_b].offset, D * sizeof(float));
    int rc = sgbd_mat_gemv_n(
        out + D, sgbd_mat_view((float *)theta + p->t[m->t_w].offset, D, m->F),
        f, 1.0f, 1.0f);
    free(f);
    return rc;
}

const struct sgbd_model_ops sgbd_vbpr_ops = {
    .name = "vbpr",
    .needs_features = 1,
    .create = vbpr_create,
    .free = vbpr_free,
    .pre_epoch = NULL,
    .loss_grad = vbpr_loss_grad,
    .embed = vbpr_embed,
    .embed_new_item = vbpr_embed_new_item,
};
