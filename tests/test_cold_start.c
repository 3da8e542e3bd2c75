/* test_cold_start.c - cold-start item vectors of every model, measured. */
/* ctest: labels=integration timeout=900 */
/*
 * Issue #3, deliverable 3: embed_new_item(features) must give a usable
 * vector for an item that has features and no interactions. The method:
 *
 * 1. Catalogue: interactions and feature channels of I items (a
 *    sgbd_synth_write catalogue whose features carry the cluster signal,
 *    or a real MMRec folder with --scientific).
 * 2. Hold out a seeded 10% of the items that occur in the interactions
 *    (stream SGBD_RNG_SPLIT). They leave the model's catalogue entirely:
 *    no training edge, never a BPR negative, no row in the feature
 *    matrices the model is created with, so nothing the model builds
 *    (interaction graphs, user co-occurrence, item kNN graphs of
 *    DRAGON/FREEDOM, feature means) has seen them. The other items are
 *    renumbered 0..Iw-1 and keep all their rows and splits. This is the
 *    serving situation of DESIGN.md section 5: an item added after
 *    training, embedded by the trained model from its features alone.
 * 3. Truth: every interaction of a held-out item, whatever its split,
 *    for users that still have a training row (the others have no
 *    trained vector). An item that is new has all its interactions in
 *    its future; using the train rows too triples the truth of the
 *    leave-one-out scientific split.
 * 4. Train the model on the warm catalogue (Adam; synthetic: a fixed
 *    short run; scientific: early stopping on the warm valid Recall@20).
 * 5. Item matrix (Iw + Ic, D_out): the model's embed() rows for the warm
 *    items, then for held-out item j one of
 *      cold    embed_new_item(the item's features);
 *      random  a Gaussian direction with the norm of its cold row
 *              (stream SGBD_RNG_PROBE), so only the direction differs;
 *      and both again multiplied by mean |warm item| / mean |cold row|,
 *      one global factor from the warm catalogue ("at warm norm").
 * 6. Scores of each variant, means over users with held-out truth:
 *    held-out AUC  the probability that a held-out item of the user
 *                  scores above a held-out item he did not take (ties
 *                  one half): the direction of the cold vectors alone;
 *    all-items AUC the same against every item but the user's train
 *                  items, warm ones included;
 *    R@20, N@20    Recall and NDCG at 20 of the held-out truth in the
 *                  full ranking of all Iw + Ic items, train items masked
 *                  (metrics.h): cold items must beat the trained warm
 *                  items, so scale matters as much as direction;
 *    and, for context, the warm test Recall@20 of the same model and
 *    the mean time of one embed_new_item call.
 *
 * Asserted for each feature model (VBPR, DualGNN, DRAGON, SLMRec,
 * FREEDOM) on the synthetic catalogue: held-out AUC >= 0.65 while random
 * is 0.5 +- 0.1; all-items AUC at least 0.1 above random's; at warm norm,
 * Recall@20 >= 0.2 and at least twice random's. Recall@20 at the models'
 * own scale is reported, not asserted: the cold vectors of DualGNN,
 * SLMRec and FREEDOM are much shorter than trained item vectors (an item
 * without edges gets no propagated layers; the norm column), so they
 * point the right way yet rarely enter a top 20 of warm items.
 * LightGCN has no feature path: its documented fallback (the mean item
 * vector) gives every held-out item the same vector, so its held-out AUC
 * is exactly 0.5; it has its own table. A control on features of pure
 * noise shows that the measurement finds nothing where there is nothing.
 *
 * The tables are printed as Markdown (--seed S changes the split and
 * training seed). Real data (CLIP image and text features, every model,
 * Adam with MMRec's lr 1e-3 and batch 2048, early stopping on the warm
 * valid Recall@20):
 *     build/tests/test_cold_start --scientific [--epochs N]
 *                                 [--patience P] [--seed S]
 * reads $SGBD_DATA/scientific (default ../shared/data) and exits 77 when
 * it is absent.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/log.h"
#include "sgbd/mat.h"
#include "sgbd/metrics.h"
#include "sgbd/model.h"
#include "sgbd/rng.h"
#include "sgbd/synth.h"
#include "sgbd/trainer.h"

#define COLD_FRACTION 0.10
#define COLD_K 20

/* ---- Catalogue and held-out split ---------------------------------- */

/* Rows and features of a whole catalogue, before the split. */
struct catalogue {
    struct sgbd_inter rows;
    struct sgbd_features feat;  /* (I, D_c) each */
    uint32_t n_items;           /* I = max item id + 1 */
};

static void catalogue_free(struct catalogue *c)
{
    sgbd_inter_free(&c->rows);
    sgbd_features_free(&c->feat);
}

/* The .inter file and every <name>_feat.npy of dir. */
static int catalogue_load(struct catalogue *c, const char *dir)
{
    char path[4096];
    int rc;

    memset(c, 0, sizeof(*c));
    rc = sgbd_dataset_find_inter(dir, path, sizeof(path));
    if (rc == 0)
        rc = sgbd_inter_read(&c->rows, path, NULL);
    for (size_t k = 0; rc == 0 && k < c->rows.n; k++)
        if (c->rows.items[k] >= c->n_items)
            c->n_items = c->rows.items[k] + 1;
    if (rc == 0)
        rc = sgbd_features_load_dir(&c->feat, dir, c->n_items, NULL);
    return rc;
}

/* The model's (warm) catalogue and the held-out (cold) items. */
struct cold_split {
    struct sgbd_dataset ds;     /* warm items only, ids 0..Iw-1 */
    struct sgbd_features feat;  /* (Iw, D_c): the warm items' rows */
    struct sgbd_features cold;  /* (Ic, D_c): the held-out items' rows */
    uint32_t n_warm, n_cold;    /* Iw, Ic */
    uint32_t *cold_ids;         /* (Ic) catalogue id of held-out item j */
    struct sgbd_itemsets truth; /* (U) held-out items per user, as Iw + j */
    size_t n_truth;             /* (user, held-out item) pairs */
};

static void split_free(struct cold_split *s)
{
    sgbd_dataset_free(&s->ds);
    sgbd_features_free(&s->feat);
    sgbd_features_free(&s->cold);
    free(s->cold_ids);
    free(s->truth.ptr);
    free(s->truth.items);
    memset(s, 0, sizeof(*s));
}

/*
 * map (I) = the new index of each catalogue item: warm items 0..Iw-1 in
 * catalogue order, held-out item j at Iw + j, UINT32_MAX for an id that
 * no row uses. The held-out items are the first 10% of a seeded shuffle
 * of the used ids.
 */
static int split_choose(struct cold_split *s, const struct catalogue *c,
                        uint64_t seed, uint32_t *map)
{
    uint32_t *used = malloc((c->n_items + 1) * sizeof(*used)), n_used = 0;
    uint8_t *cold = calloc(c->n_items + 1, 1);
    struct sgbd_rng rng;
    int rc = used && cold ? 0 : -ENOMEM;

    for (uint32_t i = 0; i < c->n_items; i++)
        map[i] = UINT32_MAX;
    for (size_t k = 0; rc == 0 && k < c->rows.n; k++)
        map[c->rows.items[k]] = 0;
    for (uint32_t i = 0; rc == 0 && i < c->n_items; i++)
        if (map[i] == 0)
            used[n_used++] = i;
    sgbd_rng_init(&rng, seed, SGBD_RNG_SPLIT);
    if (rc == 0)
        sgbd_rng_shuffle_u32(&rng, used, n_used);
    s->n_cold = (uint32_t)(COLD_FRACTION * n_used + 0.5);
    s->n_cold = s->n_cold ? s->n_cold : 1;
    for (uint32_t k = 0; rc == 0 && k < s->n_cold; k++)
        cold[used[k]] = 1;
    s->n_warm = 0;
    for (uint32_t i = 0; rc == 0 && i < c->n_items; i++)
        if (map[i] == 0 && !cold[i])
            map[i] = s->n_warm++;
    s->cold_ids = rc == 0 ? malloc(s->n_cold * sizeof(uint32_t)) : NULL;
    rc = rc == 0 && !s->cold_ids ? -ENOMEM : rc;
    for (uint32_t i = 0, j = 0; rc == 0 && i < c->n_items; i++)
        if (cold[i]) {
            s->cold_ids[j] = i;
            map[i] = s->n_warm + j++;
        }
    free(cold);
    free(used);
    return rc;
}

/* The rows of the warm items, renumbered, as a dataset. */
static int split_dataset(struct cold_split *s, const struct catalogue *c,
                         const uint32_t *map)
{
    struct sgbd_inter w = {0};
    size_t n = c->rows.n;
    int rc;

    w.users = malloc((n + 1) * sizeof(uint32_t));
    w.items = malloc((n + 1) * sizeof(uint32_t));
    w.labels = malloc(n + 1);
    rc = w.users && w.items && w.labels ? 0 : -ENOMEM;
    for (size_t k = 0; rc == 0 && k < n; k++) {
        uint32_t i = map[c->rows.items[k]];
        if (i >= s->n_warm)
            continue;
        w.users[w.n] = c->rows.users[k];
        w.items[w.n] = i;
        w.labels[w.n++] = c->rows.labels[k];
    }
    if (rc == 0)
        rc = sgbd_dataset_build(&s->ds, &w);
    if (rc == 0 && s->ds.n_items != s->n_warm)
        rc = sgbd_errf(SGBD_E_SHAPE, "warm catalogue has %u items, not %u",
                       s->ds.n_items, s->n_warm);
    sgbd_inter_free(&w);
    return rc;
}

/* dst gets the rows of src whose map is in [lo, lo + n), at map - lo. */
static int split_features(struct sgbd_features *dst,
                          const struct sgbd_features *src,
                          const uint32_t *map, uint32_t I, uint32_t lo,
                          uint32_t n)
{
    int rc = 0;

    memset(dst, 0, sizeof(*dst));
    for (int c = 0; c < src->n && rc == 0; c++) {
        const struct sgbd_mat *m = &src->ch[c].m;
        memcpy(dst->ch[c].name, src->ch[c].name, SGBD_CHANNEL_NAME);
        rc = sgbd_mat_alloc(&dst->ch[c].m, n, m->cols);
        if (rc)
            break;
        dst->n = c + 1;
        for (uint32_t i = 0; i < I; i++)
            if (map[i] != UINT32_MAX && map[i] >= lo && map[i] - lo < n)
                memcpy(sgbd_mat_row(dst->ch[c].m, map[i] - lo),
                       sgbd_mat_row(*m, i), m->cols * sizeof(float));
    }
    return rc;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/* truth: per user with a training row, the held-out items he took. */
static int split_truth(struct cold_split *s, const struct catalogue *c,
                       const uint32_t *map)
{
    uint32_t U = s->ds.n_users;
    uint64_t *ptr = calloc((size_t)U + 1, sizeof(*ptr)), *fill = NULL;
    uint32_t *items = malloc((c->rows.n + 1) * sizeof(*items));
    const struct sgbd_itemsets *tr = &s->ds.train;

    fill = calloc((size_t)U + 1, sizeof(*fill));
    if (!ptr || !items || !fill) {
        free(fill), free(items), free(ptr);
        return -ENOMEM;
    }
    for (size_t k = 0; k < c->rows.n; k++) {
        uint32_t u = c->rows.users[k], i = map[c->rows.items[k]];
        if (u < U && i >= s->n_warm && tr->ptr[u + 1] > tr->ptr[u])
            ptr[u + 1]++;
    }
    for (uint32_t u = 0; u < U; u++)
        ptr[u + 1] += ptr[u], fill[u] = ptr[u];
    for (size_t k = 0; k < c->rows.n; k++) {
        uint32_t u = c->rows.users[k], i = map[c->rows.items[k]];
        if (u < U && i >= s->n_warm && tr->ptr[u + 1] > tr->ptr[u])
            items[fill[u]++] = i;
    }
    s->n_truth = 0;
    for (uint32_t u = 0; u < U; u++) { /* sort, drop duplicates, compact */
        uint64_t b = ptr[u], e = ptr[u + 1], w = s->n_truth;
        qsort(items + b, e - b, sizeof(*items), cmp_u32);
        for (uint64_t j = b; j < e; j++)
            if (j == b || items[j] != items[j - 1])
                items[s->n_truth++] = items[j];
        ptr[u] = w;
    }
    ptr[U] = s->n_truth;
    free(fill);
    s->truth.ptr = ptr;
    s->truth.items = items;
    return 0;
}

static int split_make(struct cold_split *s, const struct catalogue *c,
                      uint64_t seed)
{
    uint32_t *map = malloc((c->n_items + 1) * sizeof(*map));
    int rc = map ? 0 : -ENOMEM;

    memset(s, 0, sizeof(*s));
    if (rc == 0)
        rc = split_choose(s, c, seed, map);
    if (rc == 0)
        rc = split_dataset(s, c, map);
    if (rc == 0)
        rc = split_features(&s->feat, &c->feat, map, c->n_items, 0,
                            s->n_warm);
    if (rc == 0)
        rc = split_features(&s->cold, &c->feat, map, c->n_items, s->n_warm,
                            s->n_cold);
    if (rc == 0)
        rc = split_truth(s, c, map);
    free(map);
    if (rc)
        split_free(s);
    return rc;
}

/* ---- Training -------------------------------------------------------- */

struct cold_opts {
    int epochs;         /* max epochs */
    int patience;       /* < 0: fixed epochs, no evaluation */
    size_t batch;
    double lr;
    uint64_t seed;
};


/* A model trained on the warm catalogue, and its final vectors. */
struct trained {
    const struct sgbd_model_ops *ops;
    const struct sgbd_dataset *ds;
    struct sgbd_model *m;
    float *theta;                   /* (m->layout.n) */
    struct sgbd_mat users, items;   /* (U, D_out), (Iw, D_out) */
    int epochs;
    double seconds;
};

static void trained_free(struct trained *t)
{
    sgbd_mat_release(&t->items);
    sgbd_mat_release(&t->users);
    sgbd_params_free_arena(t->theta);
    if (t->m)
        t->ops->free(t->m);
    memset(t, 0, sizeof(*t));
}

/* Early-stopping score: Recall@20 on the warm valid split at theta. */
static int eval_warm_valid(void *ctx, const float *theta,
                           struct sgbd_epoch_eval *out)
{
    struct trained *t = ctx;
    struct sgbd_metrics mv;
    int k = COLD_K;
    int rc = t->ops->embed(t->m, theta, t->users, t->items);

    if (rc == 0)
        rc = sgbd_metrics_eval(&mv, t->users, t->items, &t->ds->train,
                               &t->ds->valid, &k, 1);
    if (rc == 0)
        out->score = mv.recall[0];
    return rc;
}

static int train_run(struct trained *t, const struct cold_opts *co)
{
    struct sgbd_train_opts o;
    struct sgbd_train_result res;
    struct sgbd_trainer *tr = NULL;
    int rc;

    sgbd_train_opts_defaults(&o);
    o.max_epochs = co->epochs;
    o.stopping_step = co->patience < 0 ? 0 : co->patience;
    o.batch_size = co->batch;
    o.seed = co->seed;
    o.step.kind = SGBD_OPT_ADAM;
    o.step.adam.lr = co->lr;
    o.evaluate = co->patience < 0 ? NULL : eval_warm_valid;
    o.eval_ctx = t;
    rc = sgbd_trainer_new(&tr, t->m, t->ds, &o);
    if (rc == 0)
        rc = sgbd_trainer_run(tr, t->theta, &res);
    if (rc == 0) {
        t->epochs = res.epochs;
        t->seconds = res.seconds;
    }
    sgbd_trainer_free(tr);
    return rc;
}

/* Create model `name` over the warm catalogue, train it, embed it. */
static int train_model(struct trained *t, const char *name,
                       const struct cold_split *s, const struct cold_opts *co)
{
    struct sgbd_hparams hp;
    struct sgbd_model_input in;
    struct sgbd_rng rng;
    int rc;

    memset(t, 0, sizeof(*t));
    t->ops = sgbd_model_find(name);
    if (!t->ops)
        return SGBD_E_NOTFOUND;
    t->ds = &s->ds;
    sgbd_hparams_defaults(&hp);
    in.ds = &s->ds;
    in.feat = t->ops->needs_features ? &s->feat : NULL;
    in.hp = &hp;
    rc = t->ops->create(&t->m, &in);
    t->theta = rc == 0 ? sgbd_params_alloc_arena(&t->m->layout) : NULL;
    if (rc == 0 && !t->theta)
        rc = -ENOMEM;
    if (rc == 0) {
        sgbd_rng_init(&rng, co->seed, SGBD_RNG_INIT);
        sgbd_params_init(&t->m->layout, t->theta, &rng);
        rc = sgbd_mat_alloc(&t->users, s->ds.n_users, t->m->dim);
    }
    if (rc == 0)
        rc = sgbd_mat_alloc(&t->items, s->n_warm, t->m->dim);
    if (rc == 0)
        rc = train_run(t, co);
    if (rc == 0)
        rc = t->ops->embed(t->m, t->theta, t->users, t->items);
    return rc;
}

/* ---- Scoring --------------------------------------------------------- */

/* The held-out items' rows in the scored item matrix. */
enum variant {
    V_COLD,          /* embed_new_item of the item's features */
    V_RANDOM,        /* Gaussian direction, the norm of V_COLD's row */
    V_COLD_SCALED,   /* V_COLD times mean |warm item| / mean |V_COLD| */
    V_RANDOM_SCALED, /* V_RANDOM times the same factor */
    N_VARIANTS
};

struct cold_result {
    const char *model;
    int epochs;
    double seconds;
    double warm_recall;             /* warm test Recall@20 */
    double norm_ratio;              /* mean |V_COLD row| / mean |warm item| */
    double new_item_ms;             /* mean time of one embed_new_item */
    double auc_held[N_VARIANTS];    /* among the held-out items only */
    double auc_all[N_VARIANTS];     /* among all unmasked items */
    double recall[N_VARIANTS];      /* @20, all Iw + Ic items ranked */
    double ndcg[N_VARIANTS];
    size_t users;                   /* users with held-out truth */
};

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* out (Ic, D_out): embed_new_item of each held-out item's features;
 * *ms the mean time of one call. */
static int cold_vectors(const struct trained *t, const struct cold_split *s,
                        struct sgbd_mat out, double *ms)
{
    const float *feats[SGBD_MAX_CHANNELS];
    double t0 = now_ms();

    for (uint32_t j = 0; j < s->n_cold; j++) {
        for (int c = 0; c < s->cold.n; c++)
            feats[c] = sgbd_mat_row(s->cold.ch[c].m, j);
        int rc = t->ops->embed_new_item(t->m, t->theta, feats,
                                        sgbd_mat_row(out, j));
        if (rc)
            return rc;
    }
    *ms = (now_ms() - t0) / s->n_cold;
    return 0;
}

/* out = a Gaussian direction per row, scaled to the norm of ref's row. */
static void random_vectors(struct sgbd_mat ref, struct sgbd_mat out,
                           uint64_t seed)
{
    struct sgbd_rng rng;

    sgbd_rng_init(&rng, seed, SGBD_RNG_PROBE);
    for (size_t j = 0; j < ref.rows; j++) {
        float *o = sgbd_mat_row(out, j);
        const float *r = sgbd_mat_row(ref, j);
        for (size_t d = 0; d < ref.cols; d++)
            o[d] = (float)sgbd_rng_normal(&rng);
        double nr = sqrt(sgbd_mat_dot(ref.cols, r, r));
        double no = sqrt(sgbd_mat_dot(ref.cols, o, o));
        sgbd_mat_scale(ref.cols, no > 0 ? (float)(nr / no) : 0.0f, o);
    }
}

struct scored {
    float s;
    uint8_t pos;
};

static int cmp_scored(const void *a, const void *b)
{
    float x = ((const struct scored *)a)->s, y = ((const struct scored *)b)->s;

    return (x > y) - (x < y);
}

/* AUC of one user from n scored candidates: the rank-sum formula with
 * mean ranks over ties; NaN when all or none are positive. */
static double user_auc(struct scored *v, size_t n)
{
    double rank_sum = 0, P = 0;

    qsort(v, n, sizeof(*v), cmp_scored);
    for (size_t a = 0, b; a < n; a = b) {
        size_t pos = 0;
        for (b = a; b < n && v[b].s == v[a].s; b++)
            pos += v[b].pos;
        rank_sum += (double)pos * (double)(a + 1 + b) / 2.0; /* a+1..b */
        P += (double)pos;
    }
    if (P == 0 || P == (double)n)
        return NAN;
    return (rank_sum - P * (P + 1) / 2) / (P * ((double)n - P));
}

/*
 * Mean over users with held-out truth of the AUC of the truth among the
 * candidates: items first..rows-1 of all (N, D_out) minus the user's
 * mask items (mask may be NULL).
 */
static int mean_auc(const struct trained *t, const struct cold_split *s,
                    struct sgbd_mat all, size_t first,
                    const struct sgbd_itemsets *mask, double *out)
{
    size_t U = s->ds.n_users, N = all.rows, n_users = 0;
    struct sgbd_mat sc = {0};
    struct scored *v = malloc(N * sizeof(*v));
    double sum = 0;
    int rc = v ? sgbd_mat_alloc(&sc, U, N) : -ENOMEM;

    if (rc == 0)
        rc = sgbd_mat_gemm_nt(sc, t->users, all, 1.0f, 0.0f);
    for (uint32_t u = 0; rc == 0 && u < U; u++) {
        size_t n = 0;
        if (s->truth.ptr[u + 1] == s->truth.ptr[u])
            continue;
        for (uint32_t i = (uint32_t)first; i < N; i++) {
            if (mask && sgbd_itemsets_has(mask, u, i))
                continue;
            v[n].s = sgbd_mat_row(sc, u)[i];
            v[n++].pos = (uint8_t)sgbd_itemsets_has(&s->truth, u, i);
        }
        double a = user_auc(v, n);
        if (!isnan(a))
            sum += a, n_users++;
    }
    *out = n_users ? sum / (double)n_users : NAN;
    sgbd_mat_release(&sc);
    free(v);
    return rc;
}

/* Scores of variant v: vecs (Ic, D_out) as the held-out items' rows. */
static int score_variant(const struct trained *t, const struct cold_split *s,
                         struct sgbd_mat vecs, struct cold_result *r, int v)
{
    struct sgbd_mat all = {0};
    struct sgbd_metrics m;
    size_t D = t->m->dim, Iw = s->n_warm;
    int k = COLD_K;
    int rc = sgbd_mat_alloc(&all, Iw + s->n_cold, D);

    for (size_t i = 0; rc == 0 && i < Iw + s->n_cold; i++)
        memcpy(sgbd_mat_row(all, i),
               i < Iw ? sgbd_mat_row(t->items, i) : sgbd_mat_row(vecs, i - Iw),
               D * sizeof(float));
    if (rc == 0)
        rc = sgbd_metrics_eval(&m, t->users, all, &s->ds.train, &s->truth,
                               &k, 1);
    if (rc == 0) {
        r->recall[v] = m.recall[0];
        r->ndcg[v] = m.ndcg[0];
        r->users = m.n_users;
        rc = mean_auc(t, s, all, Iw, NULL, &r->auc_held[v]);
    }
    if (rc == 0)
        rc = mean_auc(t, s, all, 0, &s->ds.train, &r->auc_all[v]);
    sgbd_mat_release(&all);
    return rc;
}

static double mean_norm(struct sgbd_mat a)
{
    double sum = 0;

    for (size_t i = 0; i < a.rows; i++)
        sum += sqrt(sgbd_mat_dot(a.cols, sgbd_mat_row(a, i),
                                 sgbd_mat_row(a, i)));
    return a.rows ? sum / (double)a.rows : 0;
}

/* The held-out rows of every variant into vec[N_VARIANTS] (Ic, D_out). */
static int make_variants(const struct trained *t, const struct cold_split *s,
                         uint64_t seed, struct sgbd_mat *vec,
                         struct cold_result *r)
{
    double *ratio = &r->norm_ratio;
    size_t n = s->n_cold * t->m->dim;
    int rc = 0;

    for (int v = 0; v < N_VARIANTS && rc == 0; v++)
        rc = sgbd_mat_alloc(&vec[v], s->n_cold, t->m->dim);
    if (rc == 0)
        rc = cold_vectors(t, s, vec[V_COLD], &r->new_item_ms);
    if (rc)
        return rc;
    random_vectors(vec[V_COLD], vec[V_RANDOM], seed);
    *ratio = mean_norm(vec[V_COLD]) / mean_norm(t->items);
    float scale = *ratio > 0 ? (float)(1.0 / *ratio) : 1.0f;
    memcpy(vec[V_COLD_SCALED].data, vec[V_COLD].data, n * sizeof(float));
    memcpy(vec[V_RANDOM_SCALED].data, vec[V_RANDOM].data, n * sizeof(float));
    sgbd_mat_scale(n, scale, vec[V_COLD_SCALED].data);
    sgbd_mat_scale(n, scale, vec[V_RANDOM_SCALED].data);
    return 0;
}

/* Every number of one result row; cold receives the V_COLD vectors
 * (Ic, D_out), owned by the caller. */
static int score_model(const struct trained *t, const struct cold_split *s,
                       uint64_t seed, struct cold_result *r,
                       struct sgbd_mat *cold)
{
    struct sgbd_mat vec[N_VARIANTS] = {{0}};
    struct sgbd_metrics m;
    int k = COLD_K;
    int rc = make_variants(t, s, seed, vec, r);

    r->model = t->ops->name;
    r->epochs = t->epochs;
    r->seconds = t->seconds;
    for (int v = 0; v < N_VARIANTS && rc == 0; v++)
        rc = score_variant(t, s, vec[v], r, v);
    if (rc == 0)
        rc = sgbd_metrics_eval(&m, t->users, t->items, &s->ds.train,
                               &s->ds.test, &k, 1);
    if (rc == 0)
        r->warm_recall = m.recall[0];
    *cold = vec[V_COLD];
    for (int v = V_RANDOM; v < N_VARIANTS; v++)
        sgbd_mat_release(&vec[v]);
    return rc;
}

static void print_header(const char *title, const struct cold_split *s)
{
    printf("\n%s: %u warm items, %u held out, %zu held-out pairs\n\n", title,
           s->n_warm, s->n_cold, s->n_truth);
    printf("| model | epochs | train s | warm test R@20 | norm cold/warm | "
           "held-out AUC cold / random | all-items AUC cold / random | "
           "R@20 cold / random | N@20 cold / random | "
           "R@20 at warm norm cold / random | users | new item ms |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
}

static void print_row(const struct cold_result *r)
{
    printf("| %s | %d | %.1f | %.4f | %.2f | %.4f / %.4f | %.4f / %.4f | "
           "%.4f / %.4f | %.4f / %.4f | %.4f / %.4f | %zu | %.2f |\n",
           r->model,
           r->epochs, r->seconds, r->warm_recall, r->norm_ratio,
           r->auc_held[V_COLD], r->auc_held[V_RANDOM], r->auc_all[V_COLD],
           r->auc_all[V_RANDOM], r->recall[V_COLD], r->recall[V_RANDOM],
           r->ndcg[V_COLD], r->ndcg[V_RANDOM], r->recall[V_COLD_SCALED],
           r->recall[V_RANDOM_SCALED], r->users, r->new_item_ms);
    fflush(stdout);
}

/* Train, score and print one model; cold gets its cold-start vectors. */
static int measure(const char *name, const struct cold_split *s,
                   const struct cold_opts *co, struct cold_result *r,
                   struct sgbd_mat *cold)
{
    struct trained t;
    int rc = train_model(&t, name, s, co);

    memset(r, 0, sizeof(*r));
    if (rc == 0)
        rc = score_model(&t, s, co->seed, r, cold);
    if (rc == 0)
        print_row(r);
    else
        fprintf(stderr, "  %s: %s: %s\n", name, sgbd_strerror(rc),
                sgbd_err_detail(rc));
    trained_free(&t);
    return rc;
}

/* ---- Synthetic catalogues ------------------------------------------- */

/* Write a catalogue of p into a fresh /tmp folder, load it, remove it. */
static int synth_catalogue(struct catalogue *c,
                           const struct sgbd_synth_params *p)
{
    static const char *files[] = {"synth.inter", "image_feat.npy",
                                  "text_feat.npy"};
    char dir[] = "/tmp/sgbd_cold_XXXXXX", path[256];
    int rc;

    memset(c, 0, sizeof(*c));
    if (!mkdtemp(dir))
        return -errno;
    rc = sgbd_synth_write(dir, p);
    if (rc == 0)
        rc = catalogue_load(c, dir);
    for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[k]);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}

/* The test catalogue: 10 clusters the features reveal (noise sigma). */
static void synth_params(struct sgbd_synth_params *p, double noise)
{
    sgbd_synth_defaults(p);
    snprintf(p->name, sizeof(p->name), "synth");
    p->n_users = 600;
    p->n_items = 400;
    p->noise = noise;
    p->interactions_per_user = 12;
}

/* Split and training seed of the synthetic cases (--seed). */
static uint64_t case_seed = 999;

static void synth_opts(struct cold_opts *co)
{
    co->epochs = 30;
    co->patience = -1;
    co->batch = 256;
    co->lr = 0.005;
    co->seed = case_seed;
}

static struct catalogue synth;
static int synth_rc = -1;

static const char *const feature_models[] = {"vbpr", "dualgnn", "dragon",
                                             "slmrec", "freedom"};
#define N_FEATURE_MODELS 5

/* ---- Cases ------------------------------------------------------------ */

/* The held-out items vanish from the model's catalogue and keep every
 * interaction as truth; the features follow their items. */
static void test_cold_start_split_hides_items(void)
{
    struct cold_split s;
    uint32_t used = 0, w = 0;

    CHECK_INT(synth_rc, 0);
    CHECK_INT(split_make(&s, &synth, case_seed), 0);
    uint8_t *seen = calloc(synth.n_items, 1);
    CHECK(seen);
    for (size_t k = 0; k < synth.rows.n; k++)
        used += !seen[synth.rows.items[k]], seen[synth.rows.items[k]] = 1;
    free(seen);
    CHECK_INT(s.n_cold, (uint32_t)(0.1 * used + 0.5));
    CHECK_INT(s.n_warm + s.n_cold, used);
    CHECK_INT(s.ds.n_items, s.n_warm);
    CHECK(s.n_truth > 0);
    for (size_t k = 0; k < s.ds.n_neg_items; k++)
        CHECK(s.ds.neg_items[k] < s.n_warm);
    for (size_t k = 0; k < synth.rows.n; k++) { /* every cold pair is truth */
        uint32_t u = synth.rows.users[k], i = synth.rows.items[k], j;
        for (j = 0; j < s.n_cold && s.cold_ids[j] != i; j++)
            ;
        if (j == s.n_cold || u >= s.ds.n_users)
            continue;
        int trained = s.ds.train.ptr[u + 1] > s.ds.train.ptr[u];
        CHECK_INT(sgbd_itemsets_has(&s.truth, u, s.n_warm + j), trained);
    }
    for (uint32_t i = 0, j = 0; i < synth.n_items; i++) { /* feature rows */
        const struct sgbd_mat *src = &synth.feat.ch[0].m;
        int cold = j < s.n_cold && s.cold_ids[j] == i;
        const float *dst = cold ? sgbd_mat_row(s.cold.ch[0].m, j++)
                                : sgbd_mat_row(s.feat.ch[0].m, w++);
        CHECK(memcmp(dst, sgbd_mat_row(*src, i), src->cols * 4) == 0);
    }
    CHECK_INT(w, s.n_warm);
    split_free(&s);
}

/* Every feature model's cold-start vectors rank an item's future users
 * far above chance, and far above a random vector of the same norm. */
static void test_cold_start_features_beat_random(void)
{
    struct cold_split s;
    struct cold_opts co;
    struct cold_result r[N_FEATURE_MODELS];
    int failed = 0;

    CHECK_INT(synth_rc, 0);
    CHECK_INT(split_make(&s, &synth, case_seed), 0);
    synth_opts(&co);
    print_header("synthetic (600 users, 400 items, noise 0.5)", &s);
    for (int k = 0; k < N_FEATURE_MODELS; k++) {
        struct sgbd_mat cold = {0};
        failed |= measure(feature_models[k], &s, &co, &r[k], &cold) != 0;
        sgbd_mat_release(&cold);
    }
    split_free(&s);
    CHECK(!failed);
    for (int k = 0; k < N_FEATURE_MODELS; k++) {
        fprintf(stderr, "  checking %s\n", r[k].model);
        CHECK(r[k].auc_held[V_COLD] >= 0.65);
        CHECK_NEAR(r[k].auc_held[V_RANDOM], 0.5, 0.1);
        CHECK(r[k].auc_all[V_COLD] >= r[k].auc_all[V_RANDOM] + 0.1);
        CHECK(r[k].recall[V_COLD_SCALED] >= 0.2);
        CHECK(r[k].recall[V_COLD_SCALED] >=
              2 * r[k].recall[V_RANDOM_SCALED]);
    }
}

/* LightGCN has no feature path: every new item gets the same documented
 * fallback vector, which cannot tell items apart (AUC exactly 0.5). */
static void test_cold_start_lightgcn_fallback(void)
{
    struct cold_split s;
    struct cold_opts co;
    struct cold_result r;
    struct sgbd_mat cold = {0};
    int rc;

    CHECK_INT(synth_rc, 0);
    CHECK_INT(split_make(&s, &synth, case_seed), 0);
    synth_opts(&co);
    print_header("synthetic, model without features", &s);
    rc = measure("lightgcn", &s, &co, &r, &cold);
    int same = rc == 0;
    for (size_t j = 1; same && j < cold.rows; j++)
        same = memcmp(sgbd_mat_row(cold, j), sgbd_mat_row(cold, 0),
                      cold.cols * sizeof(float)) == 0;
    sgbd_mat_release(&cold);
    split_free(&s);
    CHECK_INT(rc, 0);
    CHECK(same);
    CHECK(r.auc_held[V_COLD] == 0.5);
    CHECK_NEAR(r.auc_held[V_RANDOM], 0.5, 0.1);
}

/* Control: on features that are pure noise the same measurement finds
 * nothing, so a pass above is the features' doing. */
static void test_cold_start_noise_features_give_chance(void)
{
    struct sgbd_synth_params p;
    struct catalogue noisy;
    struct cold_split s;
    struct cold_opts co;
    struct cold_result r;
    struct sgbd_mat cold = {0};
    int rc;

    synth_params(&p, 1000.0);
    CHECK_INT(synth_catalogue(&noisy, &p), 0);
    rc = split_make(&s, &noisy, case_seed);
    catalogue_free(&noisy);
    CHECK_INT(rc, 0);
    synth_opts(&co);
    print_header("synthetic, features of pure noise (sigma 1000)", &s);
    rc = measure("vbpr", &s, &co, &r, &cold);
    sgbd_mat_release(&cold);
    split_free(&s);
    CHECK_INT(rc, 0);
    CHECK_NEAR(r.auc_held[V_COLD], 0.5, 0.1);
}

/* ---- Real data --------------------------------------------------------- */

/* Every model on dir's features, early stopping on warm valid. */
static int run_real(const char *name, int epochs, int patience,
                    uint64_t seed)
{
    static const char *const all[] = {"lightgcn", "vbpr", "dualgnn",
                                      "dragon", "slmrec", "freedom"};
    struct cold_opts co = {epochs, patience, 2048, 1e-3, seed};
    struct catalogue c;
    struct cold_split s;
    struct cold_result r;
    char buf[4096], title[256];
    const char *dir = harness_data_dir(name, buf, sizeof(buf));
    int rc, failed = 0;

    if (!dir) {
        fprintf(stderr, "skipped: no %s dataset under $SGBD_DATA\n", name);
        return 77;
    }
    rc = catalogue_load(&c, dir);
    if (rc == 0)
        rc = split_make(&s, &c, seed);
    catalogue_free(&c);
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", dir, sgbd_strerror(rc),
                sgbd_err_detail(rc));
        return 1;
    }
    snprintf(title, sizeof(title), "%s (Adam lr 1e-3, batch 2048, at most "
             "%d epochs, patience %d on warm valid Recall@20, seed %llu)",
             name, epochs, patience, (unsigned long long)seed);
    print_header(title, &s);
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        struct sgbd_mat cold = {0};
        failed |= measure(all[k], &s, &co, &r, &cold) != 0;
        sgbd_mat_release(&cold);
    }
    split_free(&s);
    return failed;
}

int main(int argc, char **argv)
{
    int epochs = 1000, patience = 20;
    uint64_t seed = 999;

    sgbd_log_level = SGBD_LOG_WARNING;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--epochs") == 0 && a + 1 < argc)
            epochs = atoi(argv[++a]);
        else if (strcmp(argv[a], "--patience") == 0 && a + 1 < argc)
            patience = atoi(argv[++a]);
        else if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc)
            seed = strtoull(argv[++a], NULL, 10);
    }
    for (int a = 1; a < argc; a++)
        if (strcmp(argv[a], "--scientific") == 0)
            return run_real("scientific", epochs, patience, seed);

    struct sgbd_synth_params p;
    case_seed = seed;
    synth_params(&p, 0.5);
    synth_rc = synth_catalogue(&synth, &p);
    RUN(test_cold_start_split_hides_items);
    RUN(test_cold_start_features_beat_random);
    RUN(test_cold_start_lightgcn_fallback);
    RUN(test_cold_start_noise_features_give_chance);
    catalogue_free(&synth);
    return harness_finish();
}
