/*
 * graph.c - bipartite adjacencies, item kNN graphs, user co-occurrence
 * lists and their per-epoch sampling (algorithms.md 2.3, 5.1 - 5.4).
 *
 * Weights follow the reference's arithmetic: 5.1 in double (numpy) then
 * float, 5.2 and 5.3 in float (torch), so values match it to the bit
 * where the inputs do.
 */
#include "sgbd/graph.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "sgbd/topk.h"

#define KNN_ROWS 256      /* rows of a similarity tile */
#define KNN_COLS 4096     /* columns of a similarity tile */
#define NORM_EPS 1e-12    /* rownorm guard (algorithms.md section 1) */
#define COOC_PARTS 64     /* fixed user partition of the co-occurrence */

/* ---- 5.1 and 5.2: bipartite adjacencies ------------------------------ */

static int check_rows(size_t n_users, size_t n_items, size_t n,
                      const uint32_t *users, const uint32_t *items)
{
    if (n_users + n_items > UINT32_MAX)
        return sgbd_errf(SGBD_E_SHAPE, "graph: %zu users + %zu items is "
                         "above 2^32 nodes", n_users, n_items);
    for (size_t k = 0; k < n; k++)
        if (users[k] >= n_users || items[k] >= n_items)
            return sgbd_errf(SGBD_E_SHAPE, "graph: training row %zu (user "
                             "%u, item %u) is outside %zu users x %zu items",
                             k, users[k], items[k], n_users, n_items);
    return 0;
}

/* Both directions of every row: (u, U+i) and (U+i, u), as a CSR. */
static int bipartite_csr(struct sgbd_csr *out, size_t n_users,
                         size_t n_items, size_t n, const uint32_t *users,
                         const uint32_t *items, int sum_dups)
{
    size_t N = n_users + n_items;
    uint32_t *r = malloc((2 * n + 1) * sizeof(*r));
    uint32_t *c = malloc((2 * n + 1) * sizeof(*c));
    int rc = -ENOMEM;

    if (r && c) {
        for (size_t k = 0; k < n; k++) {
            uint32_t item = (uint32_t)n_users + items[k];
            r[2 * k] = users[k], c[2 * k] = item;
            r[2 * k + 1] = item, c[2 * k + 1] = users[k];
        }
        rc = sgbd_csr_from_coo(out, N, N, 2 * n, r, c, NULL, sum_dups);
    }
    free(c);
    free(r);
    return rc;
}

int sgbd_graph_norm_adj(struct sgbd_csr *out, size_t n_users, size_t n_items,
                        size_t n, const uint32_t *users,
                        const uint32_t *items, double eps)
{
    struct sgbd_csr a;
    double *dinv;
    int rc = check_rows(n_users, n_items, n, users, items);

    if (rc < 0)
        return rc;
    rc = bipartite_csr(&a, n_users, n_items, n, users, items, 1);
    if (rc < 0)
        return rc;
    dinv = malloc((a.rows + 1) * sizeof(*dinv));
    if (!dinv) {
        sgbd_csr_free(&a);
        return -ENOMEM;
    }
    /* Duplicates were summed into one entry each; A is binary. */
    for (size_t r = 0; r < a.rows; r++)
        dinv[r] = pow((double)(a.ptr[r + 1] - a.ptr[r]) + eps, -0.5);
    for (size_t r = 0; r < a.rows; r++)
        for (uint64_t j = a.ptr[r]; j < a.ptr[r + 1]; j++)
            a.val[j] = (float)(dinv[r] * dinv[a.col[j]]);
    free(dinv);
    *out = a;
    return 0;
}

int sgbd_graph_edge_adj(struct sgbd_csr *out, size_t n_users, size_t n_items,
                        size_t n, const uint32_t *users,
                        const uint32_t *items)
{
    struct sgbd_csr a;
    float *dinv;
    int rc = check_rows(n_users, n_items, n, users, items);

    if (rc < 0)
        return rc;
    rc = bipartite_csr(&a, n_users, n_items, n, users, items, 0);
    if (rc < 0)
        return rc;
    dinv = malloc((a.rows + 1) * sizeof(*dinv));
    if (!dinv) {
        sgbd_csr_free(&a);
        return -ENOMEM;
    }
    /* The edge list is symmetric: out-degree = in-degree = row length. */
    for (size_t r = 0; r < a.rows; r++)
        dinv[r] = powf((float)(a.ptr[r + 1] - a.ptr[r]), -0.5f);
    for (size_t r = 0; r < a.rows; r++)
        for (uint64_t j = a.ptr[r]; j < a.ptr[r + 1]; j++)
            a.val[j] = dinv[r] * dinv[a.col[j]];
    free(dinv);
    *out = a;
    return 0;
}

/* ---- 5.3: item kNN ------------------------------------------------------ */

struct knn_job {
    struct sgbd_mat tile;     /* (rows, cols) similarities */
    const float *inv;         /* (I) 1 / max(norm, eps) */
    size_t r0, c0;            /* tile origin */
    struct sgbd_topk *t;      /* (KNN_ROWS) per-row selections */
};

/* Cosine = dot * inv_i * inv_j; push each tile row into its selection. */
static void knn_rows(void *ctx, size_t b0, size_t b1)
{
    struct knn_job *j = ctx;

    for (size_t b = b0; b < b1; b++) {
        float *row = sgbd_mat_row(j->tile, b);
        float inv_r = j->inv[j->r0 + b];
        for (size_t c = 0; c < j->tile.cols; c++)
            row[c] = row[c] * inv_r * j->inv[j->c0 + c];
        sgbd_topk_push(&j->t[b], row, j->tile.cols, j->c0, NULL);
    }
}

/* inv[i] = 1 / max(||f_i||, eps), norms in double. */
static float *inverse_norms(struct sgbd_mat f)
{
    float *inv = malloc((f.rows + 1) * sizeof(*inv));

    if (!inv)
        return NULL;
    sgbd_mat_row_norms(f, inv);
    for (size_t i = 0; i < f.rows; i++)
        inv[i] = (float)(1.0 / (inv[i] > NORM_EPS ? inv[i] : NORM_EPS));
    return inv;
}

/* The k nearest rows of rows [r0, r0 + nr): nbr (nr, k), counts. */
static int knn_block(struct sgbd_mat f, const float *inv, size_t r0,
                     size_t nr, size_t k, struct sgbd_mat tile,
                     struct sgbd_topk *t, uint32_t *nbr, uint32_t *cnt)
{
    struct knn_job j = {tile, inv, r0, 0, t};
    int rc = 0;

    for (size_t b = 0; b < nr && rc == 0; b++)
        rc = sgbd_topk_init(&t[b], k);
    for (size_t c0 = 0; rc == 0 && c0 < f.rows; c0 += KNN_COLS) {
        size_t nc = f.rows - c0 < KNN_COLS ? f.rows - c0 : KNN_COLS;
        j.tile = (struct sgbd_mat){tile.data, nr, nc, KNN_COLS};
        j.c0 = c0;
        rc = sgbd_mat_gemm_nt(j.tile, sgbd_mat_rows(f, r0, nr),
                              sgbd_mat_rows(f, c0, nc), 1.0f, 0.0f);
        if (rc == 0)
            sgbd_parallel_for(nr, 16, knn_rows, &j);
    }
    for (size_t b = 0; b < nr; b++) {
        if (rc == 0)
            cnt[b] = (uint32_t)sgbd_topk_finish(&t[b], nbr + b * k, NULL);
        sgbd_topk_deinit(&t[b]);
    }
    return rc;
}

/*
 * One channel's kNN rows appended to the COO arrays at *n: entries
 * (i, nbr) with weight * r_i^-1/2 r_j^-1/2, r = 1e-7 + row count.
 */
static int knn_channel(struct sgbd_mat f, size_t k, float weight,
                       uint32_t *row, uint32_t *col, float *val, size_t *n)
{
    size_t I = f.rows;
    float *inv = inverse_norms(f);
    uint32_t *nbr = malloc((I * k + 1) * sizeof(*nbr));
    uint32_t *cnt = malloc((I + 1) * sizeof(*cnt));
    struct sgbd_topk *t = calloc(KNN_ROWS, sizeof(*t));
    struct sgbd_mat tile = {0};
    int rc = inv && nbr && cnt && t ? 0 : -ENOMEM;

    if (rc == 0)
        rc = sgbd_mat_alloc(&tile, KNN_ROWS, KNN_COLS);
    for (size_t r0 = 0; rc == 0 && r0 < I; r0 += KNN_ROWS) {
        size_t nr = I - r0 < KNN_ROWS ? I - r0 : KNN_ROWS;
        rc = knn_block(f, inv, r0, nr, k, tile, t, nbr + r0 * k, cnt + r0);
    }
    for (size_t i = 0; rc == 0 && i < I; i++)
        inv[i] = powf((float)cnt[i] + 1e-7f, -0.5f);   /* r_i^-1/2 */
    for (size_t i = 0; rc == 0 && i < I; i++)
        for (uint32_t s = 0; s < cnt[i]; s++) {
            uint32_t j = nbr[i * k + s];
            row[*n] = (uint32_t)i, col[*n] = j;
            val[(*n)++] = weight * (inv[i] * inv[j]);
        }
    sgbd_mat_release(&tile);
    free(t);
    free(cnt);
    free(nbr);
    free(inv);
    return rc;
}

static int check_knn(const struct sgbd_mat *feats, int n_channels, size_t k)
{
    if (n_channels < 1 || k == 0)
        return sgbd_errf(SGBD_E_SHAPE, "item kNN: %d channels, k = %zu",
                         n_channels, k);
    for (int c = 0; c < n_channels; c++)
        if (feats[c].rows != feats[0].rows ||
            feats[c].rows > UINT32_MAX || (feats[c].rows && !feats[c].data))
            return sgbd_errf(SGBD_E_SHAPE, "item kNN: channel %d has %zu "
                             "rows, channel 0 has %zu", c, feats[c].rows,
                             feats[0].rows);
    return 0;
}

int sgbd_graph_item_knn(struct sgbd_csr *out, struct sgbd_csr *out_t,
                        const struct sgbd_mat *feats, const double *weights,
                        int n_channels, size_t k)
{
    struct sgbd_csr g, gt;
    uint32_t *row = NULL, *col = NULL;
    float *val = NULL;
    size_t I, n = 0, cap;
    int rc = check_knn(feats, n_channels, k);

    if (rc < 0)
        return rc;
    I = feats[0].rows;
    k = k < I ? k : (I ? I : 1);
    cap = I * k * (size_t)n_channels + 1;
    row = malloc(cap * sizeof(*row));
    col = malloc(cap * sizeof(*col));
    val = malloc(cap * sizeof(*val));
    rc = row && col && val ? 0 : -ENOMEM;
    for (int c = 0; rc == 0 && c < n_channels; c++)
        rc = knn_channel(feats[c], k, (float)weights[c], row, col, val, &n);
    if (rc == 0)
        rc = sgbd_csr_from_coo(&g, I, I, n, row, col, val, 1);
    if (rc == 0) {
        rc = sgbd_csr_transpose(&gt, &g);
        if (rc < 0)
            sgbd_csr_free(&g);
    }
    if (rc == 0)
        *out = g, *out_t = gt;
    free(val);
    free(col);
    free(row);
    return rc;
}

/* ---- 2.3: user co-occurrence ------------------------------------------ */

struct postings {
    uint64_t *ptr;            /* (I + 1) */
    uint32_t *users;          /* users of item i, ascending */
};

static int build_postings(struct postings *p,
                          const struct sgbd_itemsets *train, size_t n_users,
                          size_t n_items)
{
    uint64_t total = train->ptr[n_users];
    uint64_t *next = NULL;

    for (uint64_t j = 0; j < total; j++)
        if (train->items[j] >= n_items)
            return sgbd_errf(SGBD_E_SHAPE, "co-occurrence: item %u is "
                             "outside %zu items", train->items[j], n_items);
    p->ptr = calloc(n_items + 1, sizeof(*p->ptr));
    p->users = malloc((total + 1) * sizeof(*p->users));
    next = malloc((n_items + 1) * sizeof(*next));
    if (!p->ptr || !p->users || !next) {
        free(next);
        return -ENOMEM;
    }
    for (uint64_t j = 0; j < total; j++)
        p->ptr[train->items[j] + 1]++;
    for (size_t i = 0; i < n_items; i++)
        p->ptr[i + 1] += p->ptr[i];
    memcpy(next, p->ptr, n_items * sizeof(*next));
    for (size_t u = 0; u < n_users; u++)
        for (uint64_t j = train->ptr[u]; j < train->ptr[u + 1]; j++)
            p->users[next[train->items[j]]++] = (uint32_t)u;
    free(next);
    return 0;
}

/* One part's lists: users [u0, u1), concatenated, with lengths. */
struct cooc_part {
    size_t u0, u1, n, cap;
    uint32_t *nbr;
    float *count;
    uint32_t *len;            /* (u1 - u0) */
};

struct cooc_job {
    const struct sgbd_itemsets *train;
    struct postings post;
    size_t n_users, max_nbr;
    struct cooc_part parts[COOC_PARTS];
    atomic_int rc;
};

static int part_reserve(struct cooc_part *p, size_t more)
{
    if (p->n + more <= p->cap)
        return 0;
    size_t cap = (p->n + more) * 2;
    uint32_t *nbr = realloc(p->nbr, cap * sizeof(*nbr));
    if (nbr)
        p->nbr = nbr;
    float *count = realloc(p->count, cap * sizeof(*count));
    if (count)
        p->count = count;
    if (!nbr || !count)
        return -ENOMEM;
    p->cap = cap;
    return 0;
}

/*
 * Neighbours of user u: count C[u, w] over u's items' posting lists in
 * cnt (all zero on entry and exit), then select and sort the best
 * max_nbr touched users by (count desc, id asc), packed in one key.
 */
static int user_lists(struct cooc_job *j, struct cooc_part *p, uint32_t u,
                      uint32_t *cnt, uint32_t *touched, uint64_t *keys)
{
    const struct sgbd_itemsets *tr = j->train;
    size_t nt = 0;

    for (uint64_t a = tr->ptr[u]; a < tr->ptr[u + 1]; a++) {
        uint32_t item = tr->items[a];
        for (uint64_t b = j->post.ptr[item]; b < j->post.ptr[item + 1]; b++) {
            uint32_t w = j->post.users[b];
            if (w != u && cnt[w]++ == 0)
                touched[nt++] = w;
        }
    }
    for (size_t t = 0; t < nt; t++) {
        keys[t] = (uint64_t)cnt[touched[t]] << 32 |
                  (UINT32_MAX - touched[t]);
        cnt[touched[t]] = 0;
    }
    size_t keep = nt < j->max_nbr ? nt : j->max_nbr;
    sgbd_topk_keys(keys, nt, keep);
    if (part_reserve(p, keep) < 0)
        return -ENOMEM;
    for (size_t t = 0; t < keep; t++) {
        p->nbr[p->n] = UINT32_MAX - (uint32_t)keys[t];
        p->count[p->n++] = (float)(keys[t] >> 32);
    }
    p->len[u - p->u0] = (uint32_t)keep;
    return 0;
}

static void cooc_parts(void *ctx, size_t p0, size_t p1)
{
    struct cooc_job *j = ctx;
    uint32_t *cnt = calloc(j->n_users + 1, sizeof(*cnt));
    uint32_t *touched = malloc((j->n_users + 1) * sizeof(*touched));
    uint64_t *keys = malloc((j->n_users + 1) * sizeof(*keys));
    int rc = cnt && touched && keys ? 0 : -ENOMEM;

    for (size_t q = p0; q < p1 && rc == 0; q++) {
        struct cooc_part *p = &j->parts[q];
        p->len = calloc(p->u1 - p->u0 + 1, sizeof(*p->len));
        rc = p->len ? 0 : -ENOMEM;
        for (size_t u = p->u0; u < p->u1 && rc == 0; u++)
            rc = user_lists(j, p, (uint32_t)u, cnt, touched, keys);
    }
    if (rc < 0)
        atomic_store(&j->rc, rc);
    free(keys);
    free(touched);
    free(cnt);
}

/* Concatenate the parts in user order into out. */
static int join_parts(struct cooc_job *j, struct sgbd_graph_cooc *out)
{
    size_t total = 0, at = 0;

    for (int q = 0; q < COOC_PARTS; q++)
        total += j->parts[q].n;
    out->n_users = j->n_users;
    out->ptr = malloc((j->n_users + 1) * sizeof(*out->ptr));
    out->nbr = malloc((total + 1) * sizeof(*out->nbr));
    out->count = malloc((total + 1) * sizeof(*out->count));
    if (!out->ptr || !out->nbr || !out->count) {
        sgbd_graph_cooc_free(out);
        return -ENOMEM;
    }
    out->ptr[0] = 0;
    for (int q = 0; q < COOC_PARTS; q++) {
        struct cooc_part *p = &j->parts[q];
        if (p->n) { /* an empty part may have no arrays at all */
            memcpy(out->nbr + at, p->nbr, p->n * sizeof(*p->nbr));
            memcpy(out->count + at, p->count, p->n * sizeof(*p->count));
        }
        at += p->n;
        for (size_t u = p->u0; u < p->u1; u++)
            out->ptr[u + 1] = out->ptr[u] + p->len[u - p->u0];
    }
    return 0;
}

int sgbd_graph_user_cooc(struct sgbd_graph_cooc *out,
                         const struct sgbd_itemsets *train, size_t n_users,
                         size_t n_items, size_t max_nbr)
{
    struct cooc_job *j = calloc(1, sizeof(*j));
    struct sgbd_graph_cooc c = {0};
    int rc;

    if (!j)
        return -ENOMEM;
    j->train = train;
    j->n_users = n_users;
    j->max_nbr = max_nbr;
    atomic_init(&j->rc, 0);
    rc = build_postings(&j->post, train, n_users, n_items);
    for (int q = 0; q < COOC_PARTS; q++) {
        j->parts[q].u0 = n_users * (size_t)q / COOC_PARTS;
        j->parts[q].u1 = n_users * (size_t)(q + 1) / COOC_PARTS;
    }
    if (rc == 0) {
        sgbd_parallel_for(COOC_PARTS, 1, cooc_parts, j);
        rc = atomic_load(&j->rc);
    }
    if (rc == 0)
        rc = join_parts(j, &c);
    if (rc == 0)
        *out = c;

    for (int q = 0; q < COOC_PARTS; q++) {
        free(j->parts[q].nbr);
        free(j->parts[q].count);
        free(j->parts[q].len);
    }
    free(j->post.ptr);
    free(j->post.users);
    free(j);
    return rc;
}

void sgbd_graph_cooc_free(struct sgbd_graph_cooc *c)
{
    if (!c)
        return;
    free(c->ptr);
    free(c->nbr);
    free(c->count);
    memset(c, 0, sizeof(*c));
}

/* ---- 5.4: per-epoch neighbour sample --------------------------------- */

/* w (k) = softmax(counts (k)), in double, max subtracted first. */
static void softmax_row(const float *counts, size_t k, float *w)
{
    double mx = -INFINITY, sum = 0;

    for (size_t s = 0; s < k; s++)
        mx = counts[s] > mx ? counts[s] : mx;
    for (size_t s = 0; s < k; s++)
        sum += exp((double)counts[s] - mx);
    for (size_t s = 0; s < k; s++)
        w[s] = (float)(exp((double)counts[s] - mx) / sum);
}

void sgbd_graph_cooc_sample(const struct sgbd_graph_cooc *c, size_t k,
                            struct sgbd_rng *rng, uint32_t *nbr,
                            float *weight)
{
    for (size_t u = 0; u < c->n_users; u++) {
        uint32_t *ids = nbr + u * k;
        float *w = weight + u * k;
        size_t have = (size_t)(c->ptr[u + 1] - c->ptr[u]);
        size_t take = have < k ? have : k;

        if (have == 0) {
            memset(ids, 0, k * sizeof(*ids));
            memset(w, 0, k * sizeof(*w));
            continue;
        }
        memcpy(ids, c->nbr + c->ptr[u], take * sizeof(*ids));
        memcpy(w, c->count + c->ptr[u], take * sizeof(*w));
        /* Pad from the growing list: earlier pads can be drawn again. */
        for (size_t s = take; s < k; s++) {
            size_t pick = (size_t)sgbd_rng_below(rng, s);
            ids[s] = ids[pick];
            w[s] = w[pick];
        }
        softmax_row(w, k, w);
    }
}
