/*
 * lightgcn.c - LightGCN (reference/algorithms.md 6.1) on the flat arena.
 *
 * The propagation is lgn.h's: L SpMMs forward keeping the 3B batch rows,
 * L SpMMs backward by Horner's rule, the last one accumulating straight
 * into the gradient arena when the user and item tables are adjacent in
 * it. Nothing that depends on theta survives a call; the (N, D)
 * workspaces are allocated once.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lgn.h"
#include "sgbd/bpr.h"
#include "sgbd/csr.h"
#include "sgbd/err.h"
#include "sgbd/graph.h"
#include "sgbd/layers.h"
#include "sgbd/models.h"

#define LIGHTGCN_ADJ_EPS 1e-7 /* D_kk = deg_k + eps (5.1) */

struct lightgcn {
    struct sgbd_model base;
    size_t D, N;         /* width, nodes U + I */
    int L;               /* propagation layers */
    double reg;          /* EmbLoss weight */
    int t_user, t_item;  /* tensor indices in base.layout */
    int adjacent;        /* item rows follow user rows in the arena */
    struct sgbd_csr adj; /* A (N, N), symmetric normalised (5.1) */
    struct sgbd_lgn lgn;
    uint32_t *seen; /* distinct training items, ascending */
    size_t n_seen;
    float *e0;         /* (N, D) [E_u; E_i] copy, when !adjacent */
    size_t cap;        /* batch rows the buffers below hold */
    uint32_t *idx;     /* (3B) node of each scored row */
    float *fin, *dfin; /* (3B, D) final rows and their gradient */
    float *l0, *dl0;   /* (3B, D) layer-0 rows and their gradient */
    float *x, *dx;     /* (B) score differences */
};

static void lightgcn_free(struct sgbd_model *base)
{
    struct lightgcn *m = (struct lightgcn *)base;

    if (!m)
        return;
    free(m->x), free(m->dx);
    free(m->l0), free(m->dl0);
    free(m->fin), free(m->dfin);
    free(m->idx);
    free(m->e0);
    free(m->seen);
    sgbd_lgn_deinit(&m->lgn);
    sgbd_csr_free(&m->adj);
    free(m);
}

static int check_input(const struct sgbd_model_input *in)
{
    int rc = mdl_check_input("lightgcn", in);

    if (rc == 0 && in->hp->n_layers < 0)
        return sgbd_errf(SGBD_E_CONFIG, "lightgcn: n_layers %d must be >= 0",
                         in->hp->n_layers);
    return rc;
}

static int declare_layout(struct lightgcn *m)
{
    struct sgbd_params *p = &m->base.layout;

    m->t_user = sgbd_params_add(p, "user_embedding", m->base.n_users, m->D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    if (m->t_user < 0)
        return m->t_user;
    m->t_item = sgbd_params_add(p, "item_embedding", m->base.n_items, m->D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    if (m->t_item < 0)
        return m->t_item;
    m->adjacent = p->t[m->t_item].offset ==
                  p->t[m->t_user].offset + (size_t)m->base.n_users * m->D;
    return 0;
}

static int alloc_graph(struct lightgcn *m, const struct sgbd_dataset *ds)
{
    int rc =
        sgbd_graph_norm_adj(&m->adj, ds->n_users, ds->n_items, ds->n_train,
                            ds->train_users, ds->train_items, LIGHTGCN_ADJ_EPS);

    if (rc == 0)
        rc = sgbd_lgn_init(&m->lgn, m->N, m->D, m->L);
    if (rc < 0)
        return rc;
    m->seen = malloc(ds->n_neg_items * sizeof(*m->seen) + 1);
    if (!m->adjacent)
        m->e0 = malloc(m->N * m->D * sizeof(float));
    if (!m->seen || (!m->adjacent && !m->e0))
        return -ENOMEM;
    memcpy(m->seen, ds->neg_items, ds->n_neg_items * sizeof(*m->seen));
    m->n_seen = ds->n_neg_items;
    return 0;
}

static int lightgcn_create(struct sgbd_model **out,
                           const struct sgbd_model_input *in)
{
    struct lightgcn *m;
    int rc = check_input(in);

    *out = NULL;
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &sgbd_lightgcn_ops;
    m->base.n_users = in->ds->n_users;
    m->base.n_items = in->ds->n_items;
    m->base.dim = m->D = (size_t)in->hp->embedding_size;
    m->N = (size_t)m->base.n_users + m->base.n_items;
    m->L = in->hp->n_layers;
    m->reg = in->hp->reg_weight;

    rc = declare_layout(m);
    if (rc == 0)
        rc = alloc_graph(m, in->ds);
    if (rc < 0) {
        lightgcn_free(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}

/* Grow the per-batch buffers to hold B triples. */
static int reserve_batch(struct lightgcn *m, size_t B)
{
    size_t rows = 3 * B, D = m->D;

    if (B <= m->cap)
        return 0;
    free(m->x), free(m->dx), free(m->l0), free(m->dl0);
    free(m->fin), free(m->dfin), free(m->idx);
    m->idx = malloc(rows * sizeof(*m->idx));
    m->fin = malloc(rows * D * sizeof(float));
    m->dfin = malloc(rows * D * sizeof(float));
    m->l0 = malloc(rows * D * sizeof(float));
    m->dl0 = malloc(rows * D * sizeof(float));
    m->x = malloc(B * sizeof(float));
    m->dx = malloc(B * sizeof(float));
    m->cap = B;
    if (m->idx && m->fin && m->dfin && m->l0 && m->dl0 && m->x && m->dx)
        return 0;
    m->cap = 0;
    return sgbd_errf(-ENOMEM, "lightgcn: no memory for a batch of %zu", B);
}

/* [E_u; E_i] as one (N, D) matrix: in place when adjacent, else copied. */
static const float *node_matrix(struct lightgcn *m, const float *theta)
{
    const struct sgbd_params *p = &m->base.layout;
    const float *eu = theta + p->t[m->t_user].offset;
    size_t ud = (size_t)m->base.n_users * m->D;

    if (m->adjacent)
        return eu;
    memcpy(m->e0, eu, ud * sizeof(float));
    memcpy(m->e0 + ud, theta + p->t[m->t_item].offset,
           (size_t)m->base.n_items * m->D * sizeof(float));
    return m->e0;
}

static void batch_index(struct lightgcn *m, const struct sgbd_batch *b)
{
    uint32_t U = m->base.n_users;

    for (size_t k = 0; k < b->n; k++) {
        m->idx[k] = b->users[k];
        m->idx[b->n + k] = U + b->pos[k];
        m->idx[2 * b->n + k] = U + b->neg[k];
    }
}

/* BPR + reg * EmbLoss of the batch; fills dfin and dl0. */
static double batch_loss(struct lightgcn *m, size_t B)
{
    size_t D = m->D, bd = B * D;
    const float *u = m->fin, *p = m->fin + bd, *q = m->fin + 2 * bd;
    struct sgbd_mat e[3], de[3];
    double loss;

    memset(m->dx, 0, B * sizeof(float));
    memset(m->dfin, 0, 3 * bd * sizeof(float));
    memset(m->dl0, 0, 3 * bd * sizeof(float));
    sgbd_layer_bpr_diff_forward(m->x, u, p, q, B, D);
    loss = sgbd_bpr_loss_ln(B, m->x, m->dx, 1.0);
    sgbd_layer_bpr_diff_backward(m->dfin, m->dfin + bd, m->dfin + 2 * bd, m->dx,
                                 u, p, q, B, D);
    for (int j = 0; j < 3; j++) {
        e[j] = sgbd_mat_view(m->l0 + j * bd, B, D);
        de[j] = sgbd_mat_view(m->dl0 + j * bd, B, D);
    }
    return loss + sgbd_emb_loss(3, e, de, m->reg);
}

/* Through the propagation (and the EmbLoss rows) into the arena. */
static int backward(struct lightgcn *m, float *grad, size_t rows)
{
    const struct sgbd_params *p = &m->base.layout;
    size_t ud = (size_t)m->base.n_users * m->D;
    float *gu = grad + p->t[m->t_user].offset;
    float *gi = grad + p->t[m->t_item].offset;
    float *gnode = m->adjacent ? gu : m->e0; /* e0 is free after forward */
    int rc;

    if (!m->adjacent)
        memset(m->e0, 0, m->N * m->D * sizeof(float));
    rc = sgbd_lgn_backward_rows(&m->lgn, &m->adj, m->dfin, m->idx, rows, gnode);
    if (rc < 0)
        return rc;
    sgbd_layer_scatter_add_rows(gnode, m->dl0, m->idx, rows, m->D);
    if (m->adjacent)
        return 0;
    sgbd_mat_axpy_wide(ud, 1.0f, m->e0, gu);
    sgbd_mat_axpy_wide((size_t)m->base.n_items * m->D, 1.0f, m->e0 + ud, gi);
    return 0;
}

static double lightgcn_loss_grad(struct sgbd_model *base, const float *theta,
                                 float *grad, const struct sgbd_batch *b)
{
    struct lightgcn *m = (struct lightgcn *)base;
    size_t rows = 3 * b->n;
    double loss;
    int rc;

    if (b->n == 0)
        return 0.0;
    if ((rc = mdl_check_batch("lightgcn", base, b)) < 0 ||
        (rc = reserve_batch(m, b->n)) < 0)
        return mdl_fail(base, rc);
    batch_index(m, b);
    const float *e0 = node_matrix(m, theta);
    sgbd_layer_gather_rows(m->l0, e0, m->idx, rows, m->D);
    rc = sgbd_lgn_forward_rows(&m->lgn, &m->adj, e0, m->idx, rows, m->fin);
    if (rc < 0)
        return mdl_fail(base, rc);
    loss = batch_loss(m, b->n);
    if ((rc = backward(m, grad, rows)) < 0)
        return mdl_fail(base, rc);
    return loss;
}

/* out (N, D) = mean over layers 0..L of A^l E0. */
static int forward_all(struct lightgcn *m, const float *theta, float *out)
{
    return sgbd_lgn_forward_all(&m->lgn, &m->adj, node_matrix(m, theta), out);
}

static int lightgcn_embed(struct sgbd_model *base, const float *theta,
                          struct sgbd_mat users, struct sgbd_mat items)
{
    struct lightgcn *m = (struct lightgcn *)base;
    float *all = malloc(m->N * m->D * sizeof(float));
    uint32_t U = base->n_users;
    int rc;

    if (users.rows != U || items.rows != base->n_items || users.cols != m->D ||
        items.cols != m->D) {
        free(all);
        return sgbd_errf(SGBD_E_SHAPE,
                         "lightgcn: embed into (%zu, %zu) and "
                         "(%zu, %zu), expected (%u, %zu) and (%u, %zu)",
                         users.rows, users.cols, items.rows, items.cols, U,
                         m->D, base->n_items, m->D);
    }
    if (!all)
        return -ENOMEM;
    rc = forward_all(m, theta, all);
    for (size_t r = 0; rc == 0 && r < m->N; r++) {
        float *dst =
            r < U ? sgbd_mat_row(users, r) : sgbd_mat_row(items, r - U);
        memcpy(dst, all + r * m->D, m->D * sizeof(float));
    }
    free(all);
    return rc;
}

/* No feature path: the mean final vector of the items seen in training. */
static int lightgcn_embed_new_item(struct sgbd_model *base, const float *theta,
                                   const float *const *feats, float *out)
{
    struct lightgcn *m = (struct lightgcn *)base;
    float *all = malloc(m->N * m->D * sizeof(float));
    int rc = -ENOMEM;

    if (!all)
        goto out;
    rc = forward_all(m, theta, all);
    if (rc < 0)
        goto out;
    mdl_mean_rows(all + (size_t)base->n_users * m->D, m->D, m->seen, m->n_seen,
                  out);
out:
    free(all);
    return rc;
}

const struct sgbd_model_ops sgbd_lightgcn_ops = {
    .name = "lightgcn",
    .needs_features = 0,
    .create = lightgcn_create,
    .free = lightgcn_free,
    .pre_epoch = NULL,
    .loss_grad = lightgcn_loss_grad,
    .embed = lightgcn_embed,
    .embed_new_item = lightgcn_embed_new_item,
};
