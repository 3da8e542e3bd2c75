/*
 * freedom.c - FREEDOM (reference/algorithms.md 6.5) on the flat arena.
 *
 * Items: h = G E_i over the frozen item kNN graph (5.3, one hop, ID
 * embeddings), [U~; I~] = mean over layers 0..2 of A_m^l [E_u; E_i]
 * (lgn.h), item vector I~ + h. Training uses A_m, the degree-sensitively
 * pruned adjacency that pre_epoch redraws; evaluation the full A (5.1).
 * Loss: BPR(U~, I~ + h) + lambda sum_c BPR(U~, T_c(F_c)) with logsigmoid
 * BPR on the same (u, p, n), where F_c is a trainable copy of channel c.
 * The copy is held as F_c (frozen, owned by the model) + Delta_c (in the
 * arena, zero at init): an exact reparametrisation of MMRec's fine-tuned
 * nn.Embedding, whose initial value the arena's initialisers cannot
 * express.
 *
 * Cost per call: 2 + 2 SpMMs over the pruned graph, the item-graph hop on
 * the 2B batch items only (gathered forward, scattered backward), and the
 * feature towers on the batch's M <= 2B distinct items (M x D_c x D three
 * times: forward, dW, dF).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lgn.h"
#include "prune.h"
#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/graph.h"
#include "sgbd/layers.h"
#include "sgbd/models.h"

#define FREEDOM_ADJ_EPS 1e-7

struct freedom_channel {
    size_t dim;  /* D_c */
    float *feat; /* (I, D_c) frozen F_c */
    float *norm; /* (I) row norms, for the cold-start kNN */
    int t_delta, t_w, t_b;
    float *fg, *dfg; /* (2B, D_c) gathered F_c + Delta_c, gradient */
    float *t, *dt;   /* (2B, D) T_c rows and gradient */
};

struct freedom {
    struct sgbd_model base;
    size_t D, N;
    int C;
    double reg, dropout;
    size_t knn_k;
    int t_user, t_item, adjacent;
    struct freedom_channel ch[SGBD_MAX_CHANNELS];
    double knn_w[SGBD_MAX_CHANNELS];
    struct sgbd_csr full, pruned, knn; /* A, A_m (N, N); G (I, I) */
    size_t n_rows;                     /* training rows, duplicates kept */
    struct sgbd_prune prune;
    int use_full; /* dropout 0: train on A itself */
    struct sgbd_lgn lgn;
    float *e0;        /* (N, D) copy of [E_u; E_i] when not adjacent */
    int32_t *slot_of; /* (I) -1, or slot in uniq */
    size_t cap;
    uint32_t *idx, *uniq, *slot_p, *slot_n; /* (3B), (2B), (B), (B) */
    float *fin, *dfin; /* (3B, D) U~_u, I~_p, I~_n and gradients */
    float *vp, *vn;    /* (B, D) I~ + h for p, n */
    float *x, *dx;     /* (B) */
    float *du;         /* (B, D) gradient wrt U~_u from the feature BPRs */
    float *dtp, *dtn;  /* (B, D) */
};

static void free_batch(struct freedom *m)
{
    free(m->idx), free(m->uniq), free(m->slot_p), free(m->slot_n);
    free(m->fin), free(m->dfin), free(m->vp), free(m->vn);
    free(m->x), free(m->dx), free(m->du), free(m->dtp), free(m->dtn);
    for (int c = 0; c < SGBD_MAX_CHANNELS; c++) {
        struct freedom_channel *ch = &m->ch[c];
        free(ch->fg), free(ch->dfg), free(ch->t), free(ch->dt);
        ch->fg = ch->dfg = ch->t = ch->dt = NULL;
    }
}

static void freedom_free(struct sgbd_model *base)
{
    struct freedom *m = (struct freedom *)base;

    if (!m)
        return;
    free_batch(m);
    for (int c = 0; c < SGBD_MAX_CHANNELS; c++)
        free(m->ch[c].norm), free(m->ch[c].feat);
    free(m->slot_of), free(m->e0);
    sgbd_prune_deinit(&m->prune);
    sgbd_lgn_deinit(&m->lgn);
    sgbd_csr_free(&m->knn);
    sgbd_csr_free(&m->pruned);
    sgbd_csr_free(&m->full);
    free(m);
}

static int declare_layout(struct freedom *m, const struct sgbd_features *f)
{
    struct sgbd_params *p = &m->base.layout;
    size_t U = m->base.n_users, I = m->base.n_items, D = m->D;

    m->t_user = sgbd_params_add(p, "user_embedding", U, D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    m->t_item = sgbd_params_add(p, "item_id_embedding", I, D,
                                SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    if (m->t_user < 0 || m->t_item < 0)
        return m->t_user < 0 ? m->t_user : m->t_item;
    m->adjacent = p->t[m->t_item].offset == p->t[m->t_user].offset + U * D;
    for (int c = 0; c < m->C; c++) {
        struct freedom_channel *ch = &m->ch[c];
        const char *name = f->ch[c].name;
        ch->t_delta = mdl_add_tensor(p, name, "_", "embedding.delta", I,
                                     ch->dim, SGBD_INIT_ZERO, 0);
        ch->t_w = mdl_add_tensor(p, name, "_", "trs.weight", D, ch->dim,
                                 SGBD_INIT_LINEAR, 0);
        ch->t_b = mdl_add_tensor(p, name, "_", "trs.bias", 1, D,
                                 SGBD_INIT_LINEAR, ch->dim);
        if (ch->t_delta < 0 || ch->t_w < 0 || ch->t_b < 0)
            return ch->t_delta < 0 ? ch->t_delta
                   : ch->t_w < 0   ? ch->t_w
                                   : ch->t_b;
    }
    return 0;
}

static int copy_features(struct freedom *m, const struct sgbd_features *f)
{
    size_t I = m->base.n_items;

    for (int c = 0; c < m->C; c++) {
        struct freedom_channel *ch = &m->ch[c];
        ch->dim = f->ch[c].m.cols;
        ch->feat = mdl_copy_mat(f->ch[c].m);
        ch->norm = malloc(I * sizeof(float));
        if (!ch->feat || !ch->norm)
            return -ENOMEM;
        mdl_row_norms(ch->feat, I, ch->dim, ch->norm);
    }
    return 0;
}

static int build_graphs(struct freedom *m, const struct sgbd_model_input *in)
{
    const struct sgbd_dataset *ds = in->ds;
    struct sgbd_mat feats[SGBD_MAX_CHANNELS];
    struct sgbd_csr gt = {0};
    size_t U = ds->n_users, I = ds->n_items;
    int rc;

    m->n_rows = ds->n_train;
    rc = sgbd_prune_init(&m->prune, U, I, ds->n_train, ds->train_users,
                         ds->train_items);
    if (rc == 0)
        rc = sgbd_graph_norm_adj(&m->full, U, I, ds->n_train, ds->train_users,
                                 ds->train_items, FREEDOM_ADJ_EPS);
    if (rc < 0)
        return rc;
    mdl_knn_weights(in->feat, in->hp->mm_image_weight, m->knn_w);
    for (int c = 0; c < m->C; c++)
        feats[c] = sgbd_mat_view(m->ch[c].feat, I, m->ch[c].dim);
    rc = sgbd_graph_item_knn(&m->knn, &gt, feats, m->knn_w, m->C, m->knn_k);
    sgbd_csr_free(&gt); /* the backward scatters along G's rows */
    return rc;
}

/* Degree-sensitive pruning (freedom.py pre_epoch_processing). */
static int freedom_pre_epoch(struct sgbd_model *base, const float *theta,
                             struct sgbd_rng *rng)
{
    struct freedom *m = (struct freedom *)base;
    struct sgbd_csr a;
    size_t keep = (size_t)((double)m->n_rows * (1.0 - m->dropout));
    int rc;

    m->use_full = !(m->dropout > 0.0);
    if (m->use_full)
        return 0;
    rc = sgbd_prune_draw(&a, &m->prune, keep, rng);
    if (rc < 0)
        return rc;
    sgbd_csr_free(&m->pruned);
    m->pruned = a;
    return 0;
}

/* ---- create ----------------------------------------------------------- */

static int check_hparams(const struct sgbd_hparams *hp)
{
    if (hp->knn_k <= 0 || hp->n_layers < 0)
        return sgbd_errf(SGBD_E_CONFIG,
                         "freedom: knn_k %d must be > 0 and "
                         "n_layers %d >= 0",
                         hp->knn_k, hp->n_layers);
    if (!(hp->dropout >= 0.0 && hp->dropout < 1.0))
        return sgbd_errf(SGBD_E_CONFIG, "freedom: dropout %g not in [0, 1)",
                         hp->dropout);
    if (!(hp->mm_image_weight >= 0.0 && hp->mm_image_weight <= 1.0))
        return sgbd_errf(SGBD_E_CONFIG,
                         "freedom: mm_image_weight %g not in "
                         "[0, 1]",
                         hp->mm_image_weight);
    return 0;
}

static int alloc_fixed(struct freedom *m)
{
    size_t I = m->base.n_items;

    m->slot_of = malloc(I * sizeof(*m->slot_of));
    if (!m->adjacent)
        m->e0 = malloc(m->N * m->D * sizeof(float));
    if (!m->slot_of || (!m->adjacent && !m->e0))
        return -ENOMEM;
    for (size_t i = 0; i < I; i++)
        m->slot_of[i] = -1;
    return sgbd_lgn_init(&m->lgn, m->N, m->D, m->lgn.L);
}

static int freedom_create(struct sgbd_model **out,
                          const struct sgbd_model_input *in)
{
    struct freedom *m;
    struct sgbd_rng rng;
    int rc = mdl_check_input("freedom", in);

    *out = NULL;
    if (rc == 0)
        rc = mdl_check_features("freedom", in);
    if (rc == 0)
        rc = check_hparams(in->hp);
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base.ops = &sgbd_freedom_ops;
    m->base.n_users = in->ds->n_users;
    m->base.n_items = in->ds->n_items;
    m->base.dim = m->D = (size_t)in->hp->embedding_size;
    m->N = (size_t)m->base.n_users + m->base.n_items;
    m->C = in->feat->n;
    m->reg = in->hp->reg_weight;
    m->dropout = in->hp->dropout;
    m->knn_k = (size_t)in->hp->knn_k;
    m->lgn.L = in->hp->n_layers;

    rc = copy_features(m, in->feat);
    if (rc == 0)
        rc = declare_layout(m, in->feat);
    if (rc == 0)
        rc = build_graphs(m, in);
    if (rc == 0)
        rc = alloc_fixed(m);
    sgbd_rng_init(&rng, 0, SGBD_RNG_GRAPH); /* usable before pre_epoch */
    if (rc == 0)
        rc = freedom_pre_epoch(&m->base, NULL, &rng);
    if (rc < 0) {
        freedom_free(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}

/* ---- loss and gradient ------------------------------------------------ */

static int reserve_batch(struct freedom *m, size_t B)
{
    size_t bd = B * m->D * sizeof(float);
    int ok;

    if (B <= m->cap)
        return 0;
    free_batch(m);
    m->idx = malloc(3 * B * sizeof(uint32_t));
    m->uniq = malloc(2 * B * sizeof(uint32_t));
    m->slot_p = malloc(B * sizeof(uint32_t));
    m->slot_n = malloc(B * sizeof(uint32_t));
    m->fin = malloc(3 * bd), m->dfin = malloc(3 * bd);
    m->vp = malloc(bd), m->vn = malloc(bd);
    m->x = malloc(B * sizeof(float)), m->dx = malloc(B * sizeof(float));
    m->du = malloc(bd), m->dtp = malloc(bd), m->dtn = malloc(bd);
    ok = m->idx && m->uniq && m->slot_p && m->slot_n && m->fin && m->dfin &&
         m->vp && m->vn && m->x && m->dx && m->du && m->dtp && m->dtn;
    for (int c = 0; c < m->C; c++) {
        struct freedom_channel *ch = &m->ch[c];
        ch->fg = malloc(2 * B * ch->dim * sizeof(float));
        ch->dfg = malloc(2 * B * ch->dim * sizeof(float));
        ch->t = malloc(2 * bd), ch->dt = malloc(2 * bd);
        ok = ok && ch->fg && ch->dfg && ch->t && ch->dt;
    }
    m->cap = ok ? B : 0;
    return ok ? 0
              : sgbd_errf(-ENOMEM, "freedom: no memory for a batch of %zu", B);
}

static const float *tens(const struct freedom *m, const float *theta, int t)
{
    return theta + m->base.layout.t[t].offset;
}

/* [E_u; E_i] as one (N, D) matrix: in place when adjacent, else copied. */
static const float *node_matrix(struct freedom *m, const float *theta)
{
    size_t ud = (size_t)m->base.n_users * m->D;

    if (m->adjacent)
        return tens(m, theta, m->t_user);
    memcpy(m->e0, tens(m, theta, m->t_user), ud * sizeof(float));
    memcpy(m->e0 + ud, tens(m, theta, m->t_item),
           (size_t)m->base.n_items * m->D * sizeof(float));
    return m->e0;
}

/* out (D) += sum_k G[i, k] E_i[k]: the item-graph hop h of item i. */
static void add_hop(const struct freedom *m, const float *ei, uint32_t i,
                    float *out)
{
    const struct sgbd_csr *G = &m->knn;

    for (uint64_t e = G->ptr[i]; e < G->ptr[i + 1]; e++)
        sgbd_mat_axpy(m->D, G->val[e], ei + (size_t)G->col[e] * m->D, out);
}

static void hop_backward(const struct freedom *m, float *gei, uint32_t i,
                         const float *d)
{
    const struct sgbd_csr *G = &m->knn;

    for (uint64_t e = G->ptr[i]; e < G->ptr[i + 1]; e++)
        sgbd_mat_axpy(m->D, G->val[e], d, gei + (size_t)G->col[e] * m->D);
}

/* BPR(U~, I~ + h): fills fin-based vp, vn, dfin; the hop's gradient goes
 * straight into the item-embedding gradient. */
static double main_bpr(struct freedom *m, const float *theta, float *grad,
                       const struct sgbd_batch *b)
{
    size_t B = b->n, D = m->D, bd = B * D;
    const float *ei = tens(m, theta, m->t_item);
    float *gei = grad + m->base.layout.t[m->t_item].offset;
    const float *u = m->fin;
    double loss;

    memcpy(m->vp, m->fin + bd, bd * sizeof(float));
    memcpy(m->vn, m->fin + 2 * bd, bd * sizeof(float));
    for (size_t k = 0; k < B; k++) {
        add_hop(m, ei, b->pos[k], m->vp + k * D);
        add_hop(m, ei, b->neg[k], m->vn + k * D);
    }
    sgbd_layer_bpr_diff_forward(m->x, u, m->vp, m->vn, B, D);
    memset(m->dx, 0, B * sizeof(float));
    loss = sgbd_bpr_loss_logsig(B, m->x, m->dx, 1.0);
    memset(m->dfin, 0, 3 * bd * sizeof(float));
    sgbd_layer_bpr_diff_backward(m->dfin, m->dfin + bd, m->dfin + 2 * bd, m->dx,
                                 u, m->vp, m->vn, B, D);
    for (size_t k = 0; k < B; k++) {
        hop_backward(m, gei, b->pos[k], m->dfin + bd + k * D);
        hop_backward(m, gei, b->neg[k], m->dfin + 2 * bd + k * D);
    }
    return loss;
}

/* lambda BPR(U~, T_c(F_c + Delta_c)) for channel c, on the M distinct
 * items; adds into dfin's user rows and the channel's tensors. */
static double feature_bpr(struct freedom *m, const float *theta, float *grad,
                          const struct sgbd_batch *b, size_t M,
                          struct freedom_channel *ch)
{
    const struct sgbd_params *p = &m->base.layout;
    size_t B = b->n, D = m->D, bd = B * D, dc = ch->dim;
    const float *delta = tens(m, theta, ch->t_delta);
    double loss;
    int rc;

    for (size_t k = 0; k < M; k++) {
        const float *f = ch->feat + (size_t)m->uniq[k] * dc;
        const float *dl = delta + (size_t)m->uniq[k] * dc;
        float *o = ch->fg + k * dc;
        for (size_t c = 0; c < dc; c++)
            o[c] = f[c] + dl[c];
    }
    rc = sgbd_layer_linear_forward(ch->t, ch->fg, tens(m, theta, ch->t_w),
                                   tens(m, theta, ch->t_b), M, dc, D);
    if (rc < 0)
        return mdl_fail(&m->base, rc);
    sgbd_layer_gather_rows(m->vp, ch->t, m->slot_p, B, D);
    sgbd_layer_gather_rows(m->vn, ch->t, m->slot_n, B, D);
    sgbd_layer_bpr_diff_forward(m->x, m->fin, m->vp, m->vn, B, D);
    memset(m->dx, 0, B * sizeof(float));
    loss = sgbd_bpr_loss_logsig(B, m->x, m->dx, m->reg);
    memset(m->dtp, 0, bd * sizeof(float));
    memset(m->dtn, 0, bd * sizeof(float));
    sgbd_layer_bpr_diff_backward(m->dfin, m->dtp, m->dtn, m->dx, m->fin, m->vp,
                                 m->vn, B, D);
    memset(ch->dt, 0, M * D * sizeof(float));
    sgbd_layer_scatter_add_rows(ch->dt, m->dtp, m->slot_p, B, D);
    sgbd_layer_scatter_add_rows(ch->dt, m->dtn, m->slot_n, B, D);
    memset(ch->dfg, 0, M * dc * sizeof(float));
    rc = sgbd_layer_linear_backward(ch->dfg, grad + p->t[ch->t_w].offset,
                                    grad + p->t[ch->t_b].offset, ch->dt, ch->fg,
                                    tens(m, theta, ch->t_w), M, dc, D);
    if (rc < 0)
        return mdl_fail(&m->base, rc);
    sgbd_layer_scatter_add_rows(grad + p->t[ch->t_delta].offset, ch->dfg,
                                m->uniq, M, dc);
    return loss;
}

static int backward_nodes(struct freedom *m, const struct sgbd_csr *adj,
                          float *grad, size_t rows)
{
    const struct sgbd_params *p = &m->base.layout;
    size_t ud = (size_t)m->base.n_users * m->D;
    float *gu = grad + p->t[m->t_user].offset;
    float *gnode = m->adjacent ? gu : m->e0; /* e0 is free after forward */
    int rc;

    if (!m->adjacent)
        memset(m->e0, 0, m->N * m->D * sizeof(float));
    rc = sgbd_lgn_backward_rows(&m->lgn, adj, m->dfin, m->idx, rows, gnode);
    if (rc < 0 || m->adjacent)
        return rc;
    sgbd_mat_axpy_wide(ud, 1.0f, m->e0, gu);
    sgbd_mat_axpy_wide((size_t)m->base.n_items * m->D, 1.0f, m->e0 + ud,
                  grad + p->t[m->t_item].offset);
    return 0;
}

static double freedom_loss_grad(struct sgbd_model *base, const float *theta,
                                float *grad, const struct sgbd_batch *b)
{
    struct freedom *m = (struct freedom *)base;
    const struct sgbd_csr *adj = m->use_full ? &m->full : &m->pruned;
    size_t B = b->n, M;
    double loss;
    int rc;

    if (B == 0)
        return 0.0;
    if ((rc = mdl_check_batch("freedom", base, b)) < 0 ||
        (rc = reserve_batch(m, B)) < 0)
        return mdl_fail(base, rc);
    for (size_t k = 0; k < B; k++) {
        m->idx[k] = b->users[k];
        m->idx[B + k] = base->n_users + b->pos[k];
        m->idx[2 * B + k] = base->n_users + b->neg[k];
    }
    rc = sgbd_lgn_forward_rows(&m->lgn, adj, node_matrix(m, theta), m->idx,
                               3 * B, m->fin);
    if (rc < 0)
        return mdl_fail(base, rc);
    loss = main_bpr(m, theta, grad, b);
    mdl_unique_items(b, m->slot_of, m->uniq, &M, m->slot_p, m->slot_n);
    for (int c = 0; c < m->C; c++)
        loss += feature_bpr(m, theta, grad, b, M, &m->ch[c]);
    if (!isfinite(loss))
        return NAN;
    if ((rc = backward_nodes(m, adj, grad, 3 * B)) < 0)
        return mdl_fail(base, rc);
    return loss;
}

/* ---- embeddings --------------------------------------------------------- */

static int freedom_embed(struct sgbd_model *base, const float *theta,
                         struct sgbd_mat users, struct sgbd_mat items)
{
    struct freedom *m = (struct freedom *)base;
    size_t U = base->n_users, I = base->n_items, D = m->D;
    float *all = NULL;
    int rc = 0;

    if (users.rows != U || items.rows != I || users.cols != D ||
        items.cols != D)
        return sgbd_errf(SGBD_E_SHAPE,
                         "freedom: embed into (%zu, %zu) and "
                         "(%zu, %zu), expected (%zu, %zu) and (%zu, %zu)",
                         users.rows, users.cols, items.rows, items.cols, U, D,
                         I, D);
    all = malloc(m->N * D * sizeof(float));
    if (!all)
        return -ENOMEM;
    rc = sgbd_lgn_forward_all(&m->lgn, &m->full, node_matrix(m, theta), all);
    const float *ei = tens(m, theta, m->t_item);
    for (size_t r = 0; rc == 0 && r < m->N; r++) {
        float *dst =
            r < U ? sgbd_mat_row(users, r) : sgbd_mat_row(items, r - U);
        memcpy(dst, all + r * D, D * sizeof(float));
        if (r >= U)
            add_hop(m, ei, (uint32_t)(r - U), dst);
    }
    free(all);
    return rc;
}

/* ID part 0 (no interactions, nothing propagated), so the vector is the
 * item-graph hop over the new item's kNN lists: sum_c (w_c / k) sum of the
 * neighbours' ID embeddings (its own entry contributes its zero ID). */
static int freedom_embed_new_item(struct sgbd_model *base, const float *theta,
                                  const float *const *feats, float *out)
{
    struct freedom *m = (struct freedom *)base;
    size_t k = m->knn_k, I = base->n_items;
    uint32_t *ids = malloc(k * sizeof(*ids));
    float *sim = malloc(k * sizeof(float));
    const float *ei = tens(m, theta, m->t_item);

    if (!ids || !sim) {
        free(sim), free(ids);
        return -ENOMEM;
    }
    memset(out, 0, m->D * sizeof(float));
    for (int c = 0; c < m->C; c++) {
        struct freedom_channel *ch = &m->ch[c];
        float *mean = NULL;
        const float *f = feats ? feats[c] : NULL;
        if (!f) { /* a missing channel takes its mean feature vector */
            mean = malloc(ch->dim * sizeof(float));
            if (!mean) {
                free(sim), free(ids);
                return -ENOMEM;
            }
            mdl_col_means(sgbd_mat_view(ch->feat, I, ch->dim), mean);
            f = mean;
        }
        size_t n =
            mdl_knn_query(ch->feat, ch->norm, I, ch->dim, f, k, ids, sim);
        float r = 1e-7f + (float)k;
        float s = (float)m->knn_w[c] * (1.0f / sqrtf(r)) * (1.0f / sqrtf(r));
        for (size_t j = 0; j < n; j++)
            if (ids[j] < I)
                sgbd_mat_axpy(m->D, s, ei + (size_t)ids[j] * m->D, out);
        free(mean);
    }
    free(sim), free(ids);
    return 0;
}

const struct sgbd_model_ops sgbd_freedom_ops = {
    .name = "freedom",
    .needs_features = 1,
    .create = freedom_create,
    .free = freedom_free,
    .pre_epoch = freedom_pre_epoch,
    .loss_grad = freedom_loss_grad,
    .embed = freedom_embed,
    .embed_new_item = freedom_embed_new_item,
};
