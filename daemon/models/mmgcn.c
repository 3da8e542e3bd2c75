/*
 * mmgcn.c - the GCN block and user graph shared by DualGNN and DRAGON
 * (see mmgcn.h; reference/algorithms.md 5.2, 5.4, 6.2, 6.3).
 */
#include "mmgcn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/graph.h"
#include "sgbd/layers.h"
#include "sgbd/mat.h"

static int declare_channel(struct sgbd_mmgcn *g, int c, const char *name,
                           struct sgbd_params *p)
{
    struct sgbd_mmgcn_channel *ch = &g->ch[c];
    size_t D = g->D, H = g->H;

    ch->t_pref = mdl_add_tensor(p, name, ".", "pref", g->U, D,
                                SGBD_INIT_XAVIER_NORMAL, 0);
    ch->t_w1 =
        mdl_add_tensor(p, name, ".", "mlp.w", H, ch->dim, SGBD_INIT_LINEAR, 0);
    ch->t_b1 =
        mdl_add_tensor(p, name, ".", "mlp.b", 1, H, SGBD_INIT_LINEAR, ch->dim);
    ch->t_w2 =
        mdl_add_tensor(p, name, ".", "mlp1.w", D, H, SGBD_INIT_LINEAR, 0);
    ch->t_b2 =
        mdl_add_tensor(p, name, ".", "mlp1.b", 1, D, SGBD_INIT_LINEAR, H);
    if (ch->t_pref < 0)
        return ch->t_pref;
    if (ch->t_w1 < 0)
        return ch->t_w1;
    if (ch->t_b1 < 0)
        return ch->t_b1;
    return ch->t_w2 < 0 ? ch->t_w2 : ch->t_b2 < 0 ? ch->t_b2 : 0;
}

static int alloc_channel(struct sgbd_mmgcn *g, int c, struct sgbd_mat f,
                         int bf16)
{
    struct sgbd_mmgcn_channel *ch = &g->ch[c];
    size_t ND = g->N * g->D;
    int rc;

    ch->dim = f.cols;
    ch->feat = mdl_copy_mat(f);
    ch->feat_mean = malloc(f.cols * sizeof(float));
    ch->h1 = malloc(g->I * g->H * sizeof(float));
    ch->x = malloc(ND * sizeof(float));
    ch->norm = malloc(g->N * sizeof(float));
    ch->r = malloc(ND * sizeof(float));
    ch->dr = calloc(ND, sizeof(float));
    if (!ch->feat || !ch->feat_mean || !ch->h1 || !ch->x || !ch->norm ||
        !ch->r || !ch->dr)
        return -ENOMEM;
    mdl_col_means(f, ch->feat_mean);
    if (!bf16)
        return 0;
    rc = sgbd_bf16_fixed_init(&ch->feat_bf, ch->feat, g->I, ch->dim);
    ch->fb = rc == 0 ? &ch->feat_bf : NULL;
    return rc;
}

int sgbd_mmgcn_init(struct sgbd_mmgcn *g, const struct sgbd_model_input *in,
                    size_t D, struct sgbd_params *layout)
{
    const struct sgbd_features *f = in->feat;
    int rc;

    memset(g, 0, sizeof(*g));
    g->U = in->ds->n_users;
    g->I = in->ds->n_items;
    g->N = g->U + g->I;
    g->D = D;
    g->H = 4 * D;
    g->C = f->n;
    g->layout = layout;
    for (int c = 0; c < g->C; c++) {
        rc = alloc_channel(g, c, f->ch[c].m, in->hp->bf16_features);
        if (rc == 0)
            rc = declare_channel(g, c, f->ch[c].name, layout);
        if (rc < 0)
            goto fail;
    }
    g->ta = malloc(g->N * D * sizeof(float));
    g->tb = malloc(g->N * D * sizeof(float));
    g->dft = malloc(g->I * D * sizeof(float));
    g->dh = malloc(g->I * g->H * sizeof(float));
    rc = -ENOMEM;
    if (!g->ta || !g->tb || !g->dft || !g->dh)
        goto fail;
    rc = sgbd_graph_edge_adj(&g->adj, g->U, g->I, in->ds->n_train,
                             in->ds->train_users, in->ds->train_items);
    if (rc == 0)
        return 0;
fail:
    sgbd_mmgcn_deinit(g);
    return rc;
}

void sgbd_mmgcn_deinit(struct sgbd_mmgcn *g)
{
    if (!g)
        return;
    for (int c = 0; c < SGBD_MAX_CHANNELS; c++) {
        struct sgbd_mmgcn_channel *ch = &g->ch[c];
        free(ch->dr), free(ch->r), free(ch->norm), free(ch->x);
        free(ch->h1), free(ch->feat_mean), free(ch->feat);
        sgbd_bf16_fixed_deinit(&ch->feat_bf);
    }
    free(g->dh), free(g->dft), free(g->tb), free(g->ta);
    sgbd_csr_free(&g->adj);
    memset(g, 0, sizeof(*g));
}

static const float *tens(const float *theta, const struct sgbd_params *p, int t)
{
    return theta + p->t[t].offset;
}

static int spmm(struct sgbd_mmgcn *g, float *y, const float *x)
{
    return sgbd_csr_spmm(sgbd_mat_view(y, g->N, g->D), &g->adj,
                         sgbd_mat_view((float *)x, g->N, g->D), 1.0f, 0.0f);
}

/* X_c = rownorm([P ; W2 leaky(W1 F + b1) + b2]). */
static int channel_input(struct sgbd_mmgcn *g, const struct sgbd_params *p,
                         const float *theta, struct sgbd_mmgcn_channel *ch)
{
    size_t D = g->D, UD = g->U * D;
    int rc;

    rc = sgbd_layer_fixed_linear_forward(ch->h1, ch->feat, ch->fb,
                                         tens(theta, p, ch->t_w1),
                                         tens(theta, p, ch->t_b1), g->I,
                                         ch->dim, g->H);
    if (rc < 0)
        return rc;
    sgbd_layer_leaky_forward(ch->h1, ch->h1, g->I * g->H);
    rc = sgbd_layer_linear_forward(ch->x + UD, ch->h1, tens(theta, p, ch->t_w2),
                                   tens(theta, p, ch->t_b2), g->I, g->H, D);
    if (rc < 0)
        return rc;
    memcpy(ch->x, tens(theta, p, ch->t_pref), UD * sizeof(float));
    sgbd_layer_rownorm_forward(ch->x, ch->norm, ch->x, g->N, D);
    return 0;
}

int sgbd_mmgcn_forward(struct sgbd_mmgcn *g, const float *theta)
{
    size_t ND = g->N * g->D;

    for (int c = 0; c < g->C; c++) {
        struct sgbd_mmgcn_channel *ch = &g->ch[c];
        int rc = channel_input(g, g->layout, theta, ch);
        if (rc == 0)
            rc = spmm(g, g->ta, ch->x);
        if (rc == 0)
            rc = spmm(g, ch->r, g->ta);
        if (rc < 0)
            return rc;
        sgbd_mat_axpy_wide(ND, 1.0f, ch->x, ch->r);
        sgbd_mat_axpy_wide(ND, 1.0f, g->ta, ch->r);
    }
    return 0;
}

/* dX = dR + A (dR + A dR) (5.7, A symmetric), into tb. */
static int propagate_back(struct sgbd_mmgcn *g, const float *dr)
{
    size_t ND = g->N * g->D;
    int rc = spmm(g, g->ta, dr);

    if (rc < 0)
        return rc;
    sgbd_mat_axpy_wide(ND, 1.0f, dr, g->ta);
    rc = spmm(g, g->tb, g->ta);
    if (rc < 0)
        return rc;
    sgbd_mat_axpy_wide(ND, 1.0f, dr, g->tb);
    return 0;
}

/* From dX (in tb) through rownorm and the MLP into the arena. */
static int channel_backward(struct sgbd_mmgcn *g, const float *theta,
                            float *grad, struct sgbd_mmgcn_channel *ch)
{
    const struct sgbd_params *p = g->layout;
    size_t D = g->D, UD = g->U * D;
    float *gw2 = grad + p->t[ch->t_w2].offset;
    int rc;

    sgbd_layer_rownorm_backward(grad + p->t[ch->t_pref].offset, g->tb, ch->x,
                                ch->norm, g->U, D);
    memset(g->dft, 0, g->I * D * sizeof(float));
    sgbd_layer_rownorm_backward(g->dft, g->tb + UD, ch->x + UD, ch->norm + g->U,
                                g->I, D);
    memset(g->dh, 0, g->I * g->H * sizeof(float));
    rc = sgbd_layer_linear_backward(g->dh, gw2, grad + p->t[ch->t_b2].offset,
                                    g->dft, ch->h1, tens(theta, p, ch->t_w2),
                                    g->I, g->H, D);
    if (rc < 0)
        return rc;
    sgbd_layer_leaky_backward_inplace(g->dh, ch->h1, g->I * g->H);
    return sgbd_layer_fixed_linear_backward(
        grad + p->t[ch->t_w1].offset, grad + p->t[ch->t_b1].offset, g->dh,
        ch->feat, ch->fb, g->I, ch->dim, g->H);
}

int sgbd_mmgcn_backward(struct sgbd_mmgcn *g, const float *theta, float *grad)
{
    int rc = 0;

    for (int c = 0; c < g->C; c++) {
        struct sgbd_mmgcn_channel *ch = &g->ch[c];
        if (rc == 0)
            rc = propagate_back(g, ch->dr);
        if (rc == 0)
            rc = channel_backward(g, theta, grad, ch);
        memset(ch->dr, 0, g->N * g->D * sizeof(float));
    }
    return rc;
}

double sgbd_mmgcn_pref_reg(const struct sgbd_mmgcn *g, const float *theta,
                           float *grad, const uint32_t *users, size_t B,
                           double lambda)
{
    const struct sgbd_params *p = g->layout;
    double loss = 0.0;
    double k = 2.0 * lambda / ((double)B * (double)g->D);

    for (int c = 0; c < g->C; c++) {
        const float *pref = tens(theta, p, g->ch[c].t_pref);
        float *gp = grad + p->t[g->ch[c].t_pref].offset;
        double s = 0.0;
        for (size_t b = 0; b < B; b++) {
            const float *row = pref + (size_t)users[b] * g->D;
            s += sgbd_mat_dot(g->D, row, row);
            sgbd_mat_axpy(g->D, (float)k, row, gp + (size_t)users[b] * g->D);
        }
        loss += lambda * s / ((double)B * (double)g->D);
    }
    return loss;
}

int sgbd_mmgcn_new_item(const struct sgbd_mmgcn *g, const float *theta, int c,
                        const float *f, float *out)
{
    const struct sgbd_params *p = g->layout;
    const struct sgbd_mmgcn_channel *ch = &g->ch[c];
    float *h = malloc(g->H * sizeof(float)), norm;
    int rc;

    if (!h)
        return -ENOMEM;
    rc = sgbd_layer_linear_forward(h, f, tens(theta, p, ch->t_w1),
                                   tens(theta, p, ch->t_b1), 1, ch->dim, g->H);
    if (rc == 0) {
        sgbd_layer_leaky_forward(h, h, g->H);
        rc = sgbd_layer_linear_forward(out, h, tens(theta, p, ch->t_w2),
                                       tens(theta, p, ch->t_b2), 1, g->H, g->D);
    }
    if (rc == 0)
        sgbd_layer_rownorm_forward(out, &norm, out, 1, g->D);
    free(h);
    return rc;
}

/* ---- fusion weights and user aggregation ---------------------------- */

int sgbd_mmgcn_add_fusion(struct sgbd_params *p, const char *name, size_t rows,
                          int C)
{
    double fans = ((double)C + (double)rows) * C * C * C / (C - 1.0);
    size_t fan_out = (size_t)llround(fans) - (size_t)C;

    return sgbd_params_add(p, name, rows, (size_t)C, SGBD_INIT_XAVIER_NORMAL,
                           (size_t)C, fan_out ? fan_out : 1);
}

double sgbd_mmgcn_fusion_reg(const float *t, float *g, size_t rows, int C,
                             double lambda)
{
    size_t n = rows * (size_t)C;
    float k = (float)(2.0 * lambda / (double)n);
    double s = 0.0;

    for (size_t e = 0; e < n; e++) {
        float w = 1.0f / (float)C + t[e];
        s += (double)w * w;
        g[e] += k * w;
    }
    return lambda * s / (double)n;
}

void sgbd_mmgcn_user_agg(float *out, const float *x, const uint32_t *rows,
                         size_t n, size_t W, const uint32_t *nbr,
                         const float *a, size_t k)
{
    for (size_t r = 0; r < n; r++) {
        size_t u = rows[r];
        float *o = out + r * W;
        memcpy(o, x + u * W, W * sizeof(float));
        for (size_t s = 0; s < k; s++)
            sgbd_mat_axpy(W, a[u * k + s], x + (size_t)nbr[u * k + s] * W, o);
    }
}

void sgbd_mmgcn_user_agg_backward(float *dx, const float *d,
                                  const uint32_t *rows, size_t n, size_t W,
                                  const uint32_t *nbr, const float *a, size_t k)
{
    for (size_t r = 0; r < n; r++) {
        size_t u = rows[r];
        const float *dr = d + r * W;
        sgbd_mat_axpy(W, 1.0f, dr, dx + u * W);
        for (size_t s = 0; s < k; s++)
            sgbd_mat_axpy(W, a[u * k + s], dr, dx + (size_t)nbr[u * k + s] * W);
    }
}

void sgbd_mmgcn_batch_free(struct sgbd_mmgcn_batch *b)
{
    free(b->fu), free(b->fp), free(b->fn);
    free(b->du), free(b->dp), free(b->dn);
    free(b->x), free(b->dx);
    memset(b, 0, sizeof(*b));
}

int sgbd_mmgcn_batch_reserve(struct sgbd_mmgcn_batch *b, size_t B, size_t W,
                             const char *who)
{
    size_t bytes = B * W * sizeof(float);

    if (B <= b->cap && W == b->W)
        return 0;
    sgbd_mmgcn_batch_free(b);
    b->fu = malloc(bytes), b->fp = malloc(bytes), b->fn = malloc(bytes);
    b->du = malloc(bytes), b->dp = malloc(bytes), b->dn = malloc(bytes);
    b->x = malloc(B * sizeof(float)), b->dx = malloc(B * sizeof(float));
    if (b->fu && b->fp && b->fn && b->du && b->dp && b->dn && b->x && b->dx) {
        b->cap = B, b->W = W;
        return 0;
    }
    sgbd_mmgcn_batch_free(b);
    return sgbd_errf(-ENOMEM, "%s: no memory for a batch of %zu", who, B);
}

int sgbd_mmgcn_users_init(struct sgbd_mmgcn_users *g,
                          const struct sgbd_dataset *ds, size_t k,
                          size_t max_nbr)
{
    size_t U = ds->n_users;
    struct sgbd_rng rng;
    int rc = sgbd_graph_user_cooc(&g->cooc, &ds->train, ds->n_users,
                                  ds->n_items, max_nbr);

    if (rc < 0)
        return rc;
    g->k = k;
    g->nbr = malloc(U * k * sizeof(*g->nbr));
    g->aw = malloc(U * k * sizeof(*g->aw));
    if (!g->nbr || !g->aw)
        return -ENOMEM;
    sgbd_rng_init(&rng, 0, SGBD_RNG_GRAPH);
    sgbd_mmgcn_users_sample(g, &rng);
    return 0;
}

void sgbd_mmgcn_users_sample(struct sgbd_mmgcn_users *g, struct sgbd_rng *rng)
{
    sgbd_graph_cooc_sample(&g->cooc, g->k, rng, g->nbr, g->aw);
}

void sgbd_mmgcn_users_free(struct sgbd_mmgcn_users *g)
{
    free(g->aw), free(g->nbr);
    sgbd_graph_cooc_free(&g->cooc);
    memset(g, 0, sizeof(*g));
}
