/*
 * retrain_job.c - one online retrain (read, warm start, train, gate,
 * checkpoint, publish), and the rebuild of a kept checkpoint into a
 * serving snapshot (restore, rollback). retrain.h states the contract.
 */
#include "retrain_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/checkpoint.h"
#include "sgbd/err.h"
#include "sgbd/holdout.h"
#include "sgbd/log.h"
#include "sgbd/mat.h"
#include "sgbd/metrics.h"
#include "sgbd/model.h"
#include "sgbd/overlay.h"
#include "sgbd/store.h"
#include "sgbd/trainer.h"
#include "sgbd/train_job.h"

#define HP_HOLDOUT "holdout_min"    /* checkpoint hparam of the holdout */
#define HP_CHANNEL "ch_"            /* hparams ch_<name> = width: the
                                       model's channels, in its order */

/* ---- configuration to engine settings (train_job.c's conventions) ---- */

/* The checkpoint's hyper-parameters over the defaults; *holdout gets
 * the holdout it was trained with (0 when it does not say). */
static void hparams_from_info(struct sgbd_hparams *hp, int *holdout,
                              const struct sgbd_checkpoint_info *info)
{
    sgbd_hparams_defaults(hp);
    sgbd_train_job_hparams_from_info(hp, info);
    *holdout = 0;
    for (int i = 0; i < info->n_hparams; i++)
        if (strcmp(info->hparams[i].key, HP_HOLDOUT) == 0)
            *holdout = (int)info->hparams[i].value;
}

static void hparams_to_info(struct sgbd_checkpoint_info *info,
                            const struct sgbd_hparams *hp, int holdout)
{
    sgbd_train_job_hparams_to_info(info, hp);
    sgbd_train_job_kv_add(info->hparams, &info->n_hparams, HP_HOLDOUT,
                          holdout);
}

/* ---- the serving snapshot of a trained model ---- */

/* The model's feature channels: indices into the read's channels, in
 * the order the model takes them. */
struct chan_map {
    int n;
    int idx[SGBD_MAX_CHANNELS];
};

/* What a snapshot is built from; the model is taken on success. */
struct snap_src {
    uint64_t version, absorbed;
    const struct sgbd_holdout_data *d;  /* the store at the read */
    const struct sgbd_dataset *ds;      /* what the model trained on */
    struct sgbd_model *model;
    const float *theta;                 /* (model->layout.n) */
    const struct sgbd_snapshot_meta *meta;
    const struct chan_map *ch;
};

/* Every channel of the read, in store order. */
static void chan_map_all(const struct sgbd_holdout_data *d,
                         struct chan_map *m)
{
    m->n = d->n_channels;
    for (int c = 0; c < m->n; c++)
        m->idx[c] = c;
}

/* The channels of m as model features: views of the read's matrices,
 * rows cut to n_items. Owns nothing. */
static void features_of(const struct sgbd_holdout_data *d,
                        const struct chan_map *m, uint32_t n_items,
                        struct sgbd_features *out)
{
    memset(out, 0, sizeof(*out));
    if (d->feat.n == 0)
        return;
    for (int c = 0; c < m->n; c++) {
        out->ch[c] = d->feat.ch[m->idx[c]];
        if (out->ch[c].m.rows > n_items)
            out->ch[c].m.rows = n_items;
    }
    out->n = m->n;
}

/* Item i's stored features, channel by channel (NULL where absent). */
static void item_feats(const struct snap_src *src, uint32_t i,
                       const float **f)
{
    const struct sgbd_holdout_data *d = src->d;

    for (int c = 0; c < src->ch->n && d->feat.n; c++) {
        int k = src->ch->idx[c];
        f[c] = d->present[k] && d->present[k][i]
                   ? sgbd_mat_row(d->feat.ch[k].m, i) : NULL;
    }
}

/*
 * Rows of V that serving scores: the model's own row for items it
 * trained on; for items without a train interaction (an untrained row)
 * and items past the model, the model's cold-start vector from the
 * stored features. An ID-only model's cold-start vector cannot depend on
 * features, so it is computed once.
 */
static int fill_items(const struct snap_src *src, struct sgbd_snapshot *s,
                      const float *own)
{
    const struct sgbd_model *m = src->model;
    uint8_t *trained = calloc(s->n_items ? s->n_items : 1, 1);
    const float *f[SGBD_MAX_CHANNELS] = {0};
    int have_shared = 0, rc = 0;
    float *shared = malloc(s->dim * sizeof(float));

    if (!trained || !shared) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t k = 0; k < src->ds->n_neg_items; k++)
        trained[src->ds->neg_items[k]] = 1;
    for (uint32_t i = 0; i < s->n_items && rc == 0; i++) {
        float *row = s->items + (size_t)i * s->dim;
        if (i < m->n_items && (trained[i] || !m->ops->embed_new_item)) {
            memcpy(row, own + (size_t)i * s->dim, s->dim * sizeof(float));
        } else if (!m->ops->embed_new_item) {
            memset(row, 0, s->dim * sizeof(float));
        } else if (!m->ops->needs_features) {
            if (!have_shared)
                rc = m->ops->embed_new_item(src->model, src->theta, f,
                                            shared);
            have_shared = 1;
            memcpy(row, shared, s->dim * sizeof(float));
        } else {
            item_feats(src, i, f);
            rc = m->ops->embed_new_item(src->model, src->theta, f, row);
        }
    }
out:
    free(shared);
    free(trained);
    return rc;
}

static int fill_vectors(const struct snap_src *src, struct sgbd_snapshot *s)
{
    struct sgbd_model *m = src->model;
    struct sgbd_mat own;
    int rc = sgbd_mat_alloc(&own, m->n_items, m->dim);

    if (rc < 0)
        return rc;
    rc = m->ops->embed(m, src->theta, sgbd_mat_view(s->users, s->n_users,
                                                    s->dim), own);
    if (rc == 0)
        rc = fill_items(src, s, own.data);
    sgbd_mat_release(&own);
    return rc;
}

static int fill_sets(const struct snap_src *src, struct sgbd_snapshot *s)
{
    const struct sgbd_holdout_data *d = src->d;
    uint64_t *ptr = NULL;
    uint32_t *items = NULL;
    int rc;

    rc = sgbd_snapshot_set_ids(s, d->user_ids, d->item_ids);
    if (rc == 0)
        rc = sgbd_holdout_seen(d->events, d->n_events, s->n_users,
                               s->n_items, &ptr, &items);
    if (rc == 0)
        rc = sgbd_snapshot_set_seen(s, ptr, items);
    for (uint32_t i = 0; rc == 0 && i < s->n_items; i++)
        if (d->hidden[i])
            rc = sgbd_snapshot_hide(s, i);
    free(ptr);
    free(items);
    return rc;
}

/*
 * An unfinished snapshot of src over the whole store read: the model's
 * users (ids of the store's first U users), every store item, seen sets
 * and hidden flags from the read. On success the model belongs to *out.
 */
static int build_snapshot(struct sgbd_snapshot **out,
                          const struct snap_src *src)
{
    const struct sgbd_holdout_data *d = src->d;
    struct sgbd_snapshot_channel ch[SGBD_MAX_CHANNELS];
    struct sgbd_snapshot *s = NULL;
    int rc;

    /* The user id array is the store's: the snapshot takes its prefix,
     * which set_ids reads through n_users entries only. */
    rc = sgbd_snapshot_new(&s, src->version, src->model->n_users,
                           d->n_items, src->model->dim);
    if (rc < 0)
        return rc;
    s->absorbed_seq = src->absorbed;
    s->meta = *src->meta;
    rc = fill_vectors(src, s);
    if (rc == 0)
        rc = fill_sets(src, s);
    for (int c = 0; c < src->ch->n; c++) {
        memcpy(ch[c].name, d->channel_names[src->ch->idx[c]],
               SGBD_CHANNEL_NAME);
        ch[c].width = d->channel_widths[src->ch->idx[c]];
    }
    if (rc == 0)
        rc = sgbd_snapshot_set_model(s, src->model, src->theta, ch,
                                     src->ch->n);
    if (rc < 0) {
        sgbd_snapshot_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- one retrain ---- */

struct job {
    struct sgbd_retrain *rt;
    const struct sgbd_config *cfg;
    struct sgbd_retrain_result *res;
    uint64_t absorbed;
    double t0;

    struct sgbd_holdout_data data;
    struct chan_map chans;          /* the model's: every channel */
    struct sgbd_dataset ds;
    size_t n_held;
    struct sgbd_hparams hp;
    const struct sgbd_model_ops *ops;
    struct sgbd_model *model;       /* until the snapshot takes it */
    float *theta;                   /* (model->layout.n) */
    struct sgbd_snapshot *snap;     /* the candidate, unpublished */
    int ks[SGBD_METRICS_MAX_K], n_k;
    struct sgbd_train_result tres;
    uint64_t steps;

    struct sgbd_view view;          /* the served model, pinned */
    int pinned;

    double lap_at;                  /* end of the previous phase */
    double phase_s[6];              /* read, model, train, eval, save,
                                       publish: seconds each */

    struct sgbd_metrics cand_all;   /* candidate on the whole holdout */
    double cand, cur;               /* gate metric on the shared users */
    size_t n_gate;
    int has_current;
};

static void job_free(struct job *j)
{
    if (j->pinned)
        sgbd_snapshot_release(&j->view);
    sgbd_snapshot_free(j->snap);
    if (j->model)
        j->model->ops->free(j->model);
    sgbd_params_free_arena(j->theta);
    sgbd_dataset_free(&j->ds);
    sgbd_holdout_data_free(&j->data);
}

enum { PH_READ, PH_MODEL, PH_TRAIN, PH_EVAL, PH_SAVE, PH_PUBLISH };

/* Seconds since the previous phase ended go to phase ph. */
static void lap(struct job *j, int ph)
{
    double t = sgbd_retrain_now();

    j->phase_s[ph] += t - j->lap_at;
    j->lap_at = t;
}

static void point(struct job *j, enum sgbd_retrain_point p, uint64_t v)
{
    if (j->rt->point)
        j->rt->point(j->rt->point_ctx, p, v);
}

static int check_settings(struct job *j)
{
    const struct sgbd_config *c = j->cfg;
    struct sgbd_metrics probe = {0};
    double x;
    int rc;

    j->ops = sgbd_model_find(c->model);
    if (!j->ops)
        return sgbd_errf(SGBD_E_CONFIG, "[model] name: unknown model '%s' "
                         "(known: %s)", c->model, sgbd_model_names());
    rc = sgbd_metrics_parse_ks(c->topk, j->ks, &j->n_k);
    if (rc < 0)
        return sgbd_errf(SGBD_E_CONFIG, "[train] topk: %s",
                         sgbd_err_detail(rc));
    probe.n_k = j->n_k;
    memcpy(probe.k, j->ks, sizeof(j->ks));
    if (sgbd_metrics_get(&probe, c->valid_metric, &x) < 0)
        return sgbd_errf(SGBD_E_CONFIG, "[train] valid_metric: '%s' is not "
                         "recall, ndcg, precision or map at one of the topk "
                         "cut-offs (%s)", c->valid_metric, c->topk);
    return 0;
}

static int load_data(struct job *j)
{
    struct sgbd_holdout_opts ho;
    int rc;

    rc = sgbd_holdout_read(j->rt->store, j->ops->needs_features, &j->data);
    if (rc < 0)
        return rc;
    if (j->ops->needs_features && j->data.feat.n == 0)
        return sgbd_errf(SGBD_E_NOTFOUND, "model %s needs item features and "
                         "the store defines no channel", j->ops->name);
    chan_map_all(&j->data, &j->chans);
    ho = (struct sgbd_holdout_opts){j->data.n_users, j->data.n_items,
                                    UINT64_MAX, j->cfg->retrain_holdout_min};
    return sgbd_holdout_build(&j->ds, j->data.events, j->data.n_events, &ho,
                              &j->n_held);
}

/* Whether the served snapshot's rows are the store's first rows: its
 * first and last ids agree with the read (snapshots of this module). */
static int same_prefix(const struct job *j, const struct sgbd_snapshot *s)
{
    const struct sgbd_holdout_data *d = &j->data;
    uint32_t U = s->model->n_users, I = s->model->n_items;

    if (U == 0 || I == 0 || U > d->n_users || I > d->n_items ||
        U > s->n_users || I > s->n_items)
        return 0;
    return strcmp(sgbd_snapshot_user_id(s, 0), d->user_ids[0]) == 0 &&
           strcmp(sgbd_snapshot_user_id(s, U - 1), d->user_ids[U - 1]) == 0 &&
           strcmp(sgbd_snapshot_item_id(s, 0), d->item_ids[0]) == 0 &&
           strcmp(sgbd_snapshot_item_id(s, I - 1), d->item_ids[I - 1]) == 0;
}

/* Copy the rows each new tensor shares with the served one of the same
 * name and width (retrain.h, step 3). */
static void warm_copy(struct job *j, const struct sgbd_snapshot *s)
{
    const struct sgbd_params *old = &s->model->layout;
    const struct sgbd_params *new = &j->model->layout;

    for (int t = 0; t < new->n_tensors; t++) {
        const struct sgbd_tensor *b = &new->t[t];
        int k = sgbd_params_find(old, b->name);
        const struct sgbd_tensor *a = k >= 0 ? &old->t[k] : NULL;
        size_t rows;

        if (!a || a->cols != b->cols) {
            SGBD_INFO("retrain_fresh_tensor", "tensor=%s", b->name);
            continue;
        }
        rows = a->rows < b->rows ? a->rows : b->rows;
        memcpy(j->theta + b->offset, s->theta + a->offset,
               rows * b->cols * sizeof(float));
    }
}

static int create_model(struct job *j)
{
    const struct sgbd_snapshot *s = j->view.snap;
    struct sgbd_model_input in = {&j->ds, j->data.feat.n ? &j->data.feat
                                                          : NULL, &j->hp};
    struct sgbd_rng rng;
    int rc;

    sgbd_train_job_hparams(&j->hp, j->cfg);
    rc = j->ops->create(&j->model, &in);
    if (rc < 0)
        return rc;
    j->theta = sgbd_params_alloc_arena(&j->model->layout);
    if (!j->theta)
        return -ENOMEM;
    sgbd_rng_init(&rng, (uint64_t)j->cfg->seed, SGBD_RNG_INIT);
    sgbd_params_init(&j->model->layout, j->theta, &rng);
    j->res->warm = j->cfg->retrain_warm_start && s && s->model && s->theta &&
                   strcmp(s->model->ops->name, j->ops->name) == 0 &&
                   same_prefix(j, s);
    if (j->res->warm)
        warm_copy(j, s);
    return 0;
}

/* ---- evaluation ---- */

/* Candidate's score during a cold run's early stopping. */
static int eval_epoch(void *ctx, const float *theta,
                      struct sgbd_epoch_eval *out)
{
    struct job *j = ctx;
    struct sgbd_mat u, i;
    struct sgbd_metrics m;
    int rc;

    rc = sgbd_mat_alloc(&u, j->ds.n_users, j->model->dim);
    if (rc == 0)
        rc = sgbd_mat_alloc(&i, j->ds.n_items, j->model->dim);
    if (rc == 0)
        rc = j->ops->embed(j->model, theta, u, i);
    if (rc == 0)
        rc = sgbd_metrics_eval(&m, u, i, &j->ds.train, &j->ds.valid, j->ks,
                               j->n_k);
    if (rc == 0)
        rc = sgbd_metrics_get(&m, j->cfg->valid_metric, &out->score);
    sgbd_mat_release(&i);
    sgbd_mat_release(&u);
    return rc;
}

static void on_epoch(void *ctx, const struct sgbd_epoch_info *e)
{
    struct job *j = ctx;

    sgbd_retrain_progress(j->rt, 0.1 + 0.7 * (e->epoch + 1) /
                                           (double)e->max_epochs);
}

static int train(struct job *j)
{
    struct sgbd_train_opts o;
    struct sgbd_trainer *t = NULL;
    int rc;

    sgbd_train_opts_defaults(&o);
    o.max_epochs = j->res->warm ? j->cfg->retrain_epochs
                                : j->cfg->retrain_initial_epochs;
    o.stopping_step = j->cfg->stopping_step;
    o.batch_size = (size_t)j->cfg->batch_size;
    o.seed = (uint64_t)j->cfg->seed + j->data.last_seq;
    o.restore_best = 1;
    o.evaluate = eval_epoch;
    o.eval_ctx = j;
    o.progress = on_epoch;
    o.progress_ctx = j;
    o.cancel = &j->rt->cancel;
    rc = sgbd_train_job_step_opts(&o.step, j->cfg);
    if (rc == 0)
        rc = sgbd_trainer_new(&t, j->model, &j->ds, &o);
    if (rc == 0)
        rc = sgbd_trainer_run(t, j->theta, &j->tres);
    if (t)
        j->steps = (uint64_t)sgbd_stepper_adam(sgbd_trainer_stepper(t))->step;
    sgbd_trainer_free(t);
    return rc;
}

/* Users the served snapshot knows, with their row there and their
 * holdout and mask sets, gathered. */
struct gate_set {
    size_t n;
    uint32_t *user;                 /* (n) dataset index */
    uint32_t *row;                  /* (n) row in the served snapshot */
    struct sgbd_itemsets mask, truth;   /* (n) users */
};

static void gate_set_free(struct gate_set *g)
{
    free(g->user);
    free(g->row);
    free(g->mask.ptr), free(g->mask.items);
    free(g->truth.ptr), free(g->truth.items);
}

static int gather_sets(struct sgbd_itemsets *out,
                       const struct sgbd_itemsets *in, const uint32_t *user,
                       size_t n)
{
    uint64_t total = 0;

    out->ptr = malloc((n + 1) * sizeof(*out->ptr));
    if (!out->ptr)
        return -ENOMEM;
    out->ptr[0] = 0;
    for (size_t g = 0; g < n; g++) {
        total += in->ptr[user[g] + 1] - in->ptr[user[g]];
        out->ptr[g + 1] = total;
    }
    out->items = malloc((total ? total : 1) * sizeof(uint32_t));
    if (!out->items)
        return -ENOMEM;
    for (size_t g = 0; g < n; g++)
        memcpy(out->items + out->ptr[g], in->items + in->ptr[user[g]],
               (out->ptr[g + 1] - out->ptr[g]) * sizeof(uint32_t));
    return 0;
}

static int gate_users(const struct job *j, struct gate_set *g)
{
    const struct sgbd_snapshot *s = j->view.snap;
    const struct sgbd_dataset *ds = &j->ds;
    int rc;

    memset(g, 0, sizeof(*g));
    g->user = malloc(((size_t)ds->n_users + 1) * sizeof(uint32_t));
    g->row = malloc(((size_t)ds->n_users + 1) * sizeof(uint32_t));
    if (!g->user || !g->row)
        return -ENOMEM;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        const char *id = j->data.user_ids[u];
        uint32_t r;
        if (ds->valid.ptr[u + 1] == ds->valid.ptr[u] ||
            sgbd_snapshot_user_index(s, id, strlen(id), &r) < 0)
            continue;
        g->user[g->n] = u;
        g->row[g->n++] = r;
    }
    rc = gather_sets(&g->mask, &ds->train, g->user, g->n);
    if (rc == 0)
        rc = gather_sets(&g->truth, &ds->valid, g->user, g->n);
    return rc;
}

/* Item vectors of the served model as serving scores them now, over
 * the read's items: overlay vector, else snapshot row, else the mean
 * snapshot row (an item neither knows). */
static int served_items(const struct job *j, struct sgbd_mat *out)
{
    const struct sgbd_snapshot *s = j->view.snap;
    size_t D = s->dim;
    double *mean = calloc(D, sizeof(double));
    int rc = mean ? sgbd_mat_alloc(out, j->data.n_items, D) : -ENOMEM;

    for (uint32_t i = 0; rc == 0 && i < s->n_items; i++)
        for (size_t d = 0; d < D; d++)
            mean[d] += s->items[(size_t)i * D + d] / (double)s->n_items;
    for (uint32_t i = 0; rc == 0 && i < j->data.n_items; i++) {
        const char *id = j->data.item_ids[i];
        size_t len = strlen(id);
        const struct sgbd_overlay_item *e =
            sgbd_overlay_find_item(j->view.ov, id, len);
        float *row = sgbd_mat_row(*out, i);
        uint32_t r;
        if (e && e->vec)
            memcpy(row, e->vec, D * sizeof(float));
        else if (sgbd_snapshot_item_index(s, id, len, &r) == 0)
            memcpy(row, s->items + (size_t)r * D, D * sizeof(float));
        else
            for (size_t d = 0; d < D; d++)
                row[d] = (float)mean[d];
    }
    free(mean);
    return rc;
}

static int gather_rows(struct sgbd_mat *out, const float *src, size_t D,
                       const uint32_t *rows, size_t n)
{
    int rc = sgbd_mat_alloc(out, n ? n : 1, D);

    if (rc < 0)
        return rc;
    out->rows = n;
    for (size_t g = 0; g < n; g++)
        memcpy(sgbd_mat_row(*out, g), src + (size_t)rows[g] * D,
               D * sizeof(float));
    return 0;
}

/* The gate metric of users (n, D) x items on g. */
static int gate_score(const struct job *j, const struct gate_set *g,
                      struct sgbd_mat users, struct sgbd_mat items,
                      double *out)
{
    struct sgbd_metrics m;
    int rc = sgbd_metrics_eval(&m, users, items, &g->mask, &g->truth, j->ks,
                               j->n_k);

    return rc < 0 ? rc : sgbd_metrics_get(&m, j->cfg->valid_metric, out);
}

static int gate_current(struct job *j, const struct gate_set *g)
{
    const struct sgbd_snapshot *s = j->view.snap;
    const struct sgbd_snapshot *c = j->snap;
    struct sgbd_mat cu = {0}, su = {0}, si = {0};
    struct sgbd_mat ci = sgbd_mat_view(c->items, c->n_items, c->dim);
    int rc;

    rc = gather_rows(&cu, c->users, c->dim, g->user, g->n);
    if (rc == 0)
        rc = gate_score(j, g, cu, ci, &j->cand);
    if (rc == 0)
        rc = gather_rows(&su, s->users, s->dim, g->row, g->n);
    if (rc == 0)
        rc = served_items(j, &si);
    if (rc == 0)
        rc = gate_score(j, g, su, si, &j->cur);
    sgbd_mat_release(&si);
    sgbd_mat_release(&su);
    sgbd_mat_release(&cu);
    return rc;
}

/* Candidate on the whole holdout, and both models on the shared users. */
static int evaluate(struct job *j)
{
    const struct sgbd_snapshot *c = j->snap;
    struct sgbd_mat cu = sgbd_mat_view(c->users, c->n_users, c->dim);
    struct sgbd_mat ci = sgbd_mat_view(c->items, c->n_items, c->dim);
    struct gate_set g;
    int rc;

    rc = sgbd_metrics_eval(&j->cand_all, cu, ci, &j->ds.train, &j->ds.valid,
                           j->ks, j->n_k);
    if (rc == 0)
        rc = sgbd_metrics_get(&j->cand_all, j->cfg->valid_metric, &j->cand);
    j->has_current = j->view.snap != NULL;
    if (rc < 0 || !j->has_current)
        return rc;
    rc = gate_users(j, &g);
    j->n_gate = g.n;
    if (rc == 0 && g.n > 0)
        rc = gate_current(j, &g);
    gate_set_free(&g);
    return rc;
}

/* The candidate's metrics on the whole holdout, named "recall@20". */
static void fill_metrics(const struct sgbd_metrics *m,
                         struct sgbd_snapshot_metric *out, int *n)
{
    static const char *names[] = {"recall", "ndcg", "precision", "map"};
    const double *vals[] = {m->recall, m->ndcg, m->precision, m->map};

    *n = 0;
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < m->n_k && *n < SGBD_SNAPSHOT_MAX_METRICS; c++) {
            snprintf(out[*n].name, SGBD_METRIC_NAME, "%s@%d", names[k],
                     m->k[c]);
            out[(*n)++].value = vals[k][c];
        }
}

/* ---- publication ---- */

static void fill_info(const struct job *j, struct sgbd_checkpoint_info *info)
{
    const struct sgbd_snapshot_meta *meta = &j->snap->meta;
    char key[SGBD_CKPT_KEY];

    memset(info, 0, sizeof(*info));
    snprintf(info->model, sizeof(info->model), "%s", j->ops->name);
    snprintf(info->optimizer, sizeof(info->optimizer), "%s",
             j->cfg->optimizer);
    info->step = j->steps;
    info->epoch = j->tres.best_epoch >= 0 ? (uint32_t)j->tres.best_epoch : 0;
    info->n_users = j->ds.n_users;
    info->n_items = j->ds.n_items;
    info->data_seq = j->data.last_seq;
    hparams_to_info(info, &j->hp, j->cfg->retrain_holdout_min);
    for (int c = 0; c < j->chans.n && j->ops->needs_features; c++) {
        int k = j->chans.idx[c];
        snprintf(key, sizeof(key), HP_CHANNEL "%.28s",
                 j->data.channel_names[k]);
        sgbd_train_job_kv_add(info->hparams, &info->n_hparams, key,
                              j->data.channel_widths[k]);
    }
    for (int i = 0; i < meta->n_metrics; i++) {
        snprintf(key, sizeof(key), "valid_%.25s", meta->metrics[i].name);
        sgbd_train_job_kv_add(info->metrics, &info->n_metrics, key,
                              meta->metrics[i].value);
    }
    sgbd_train_job_kv_add(info->metrics, &info->n_metrics, "gate_candidate",
                          j->cand);
    if (j->has_current && j->n_gate)
        sgbd_train_job_kv_add(info->metrics, &info->n_metrics,
                              "gate_current", j->cur);
}

static int build_candidate(struct job *j)
{
    struct sgbd_snapshot_meta meta = {0};
    struct snap_src src;
    int rc;

    snprintf(meta.model, sizeof(meta.model), "%s", j->ops->name);
    snprintf(meta.optimizer, sizeof(meta.optimizer), "%s", j->cfg->optimizer);
    meta.trained_at = (int64_t)time(NULL);
    src = (struct snap_src){1, j->absorbed, &j->data, &j->ds, j->model,
                            j->theta, &meta, &j->chans};
    rc = build_snapshot(&j->snap, &src);
    if (rc == 0)
        j->model = NULL;            /* the snapshot owns it now */
    return rc;
}

static int publish(struct job *j)
{
    struct sgbd_checkpoint_info info;
    uint64_t version;
    int rc;

    point(j, SGBD_RETRAIN_POINT_CHECKPOINT, 0);
    if (atomic_load(&j->rt->cancel))
        return sgbd_errf(SGBD_E_CANCELLED, "retrain: stopped before the "
                         "checkpoint");
    fill_info(j, &info);
    rc = sgbd_checkpoint_save(j->rt->store, &info, &j->snap->model->layout,
                              j->snap->theta, &version);
    if (rc < 0)
        return rc;
    rc = sgbd_checkpoint_prune(j->rt->store, j->cfg->keep_checkpoints, NULL);
    if (rc < 0)
        SGBD_WARN("checkpoint_prune_failed", "why=\"%s\"",
                  sgbd_err_detail(rc));
    lap(j, PH_SAVE);
    point(j, SGBD_RETRAIN_POINT_PUBLISH, version);
    j->snap->version = version;
    j->res->version = version;
    rc = sgbd_snapshot_finish(j->snap);
    if (rc == 0) {
        rc = sgbd_snapshot_publish(j->rt->slot, j->snap, 0);
        j->snap = NULL;             /* publish takes it in every case */
    }
    lap(j, PH_PUBLISH);
    return rc;
}

/* ---- the verdict ---- */

static void verdict(struct job *j, int rc)
{
    struct sgbd_retrain_result *res = j->res;
    double secs = sgbd_retrain_now() - j->t0;
    const char *metric = j->cfg->valid_metric;

    if (rc == 0) {
        res->outcome = SGBD_RETRAIN_PUBLISHED;
        snprintf(res->message, sizeof(res->message), "published version "
                 "%llu: %s %.4f%s", (unsigned long long)res->version, metric,
                 j->cand, j->n_gate ? " (gate passed)" : "");
        SGBD_INFO("retrain_published", "version=%llu seconds=%.2f warm=%d "
                  "epochs=%d best_epoch=%d metric=%s candidate=%.4f "
                  "current=%.4f gate_users=%zu users=%u items=%u "
                  "held_out=%zu read_s=%.2f model_s=%.2f train_s=%.2f "
                  "eval_s=%.2f save_s=%.2f publish_s=%.2f",
                  (unsigned long long)res->version, secs, res->warm,
                  j->tres.epochs, j->tres.best_epoch, metric, j->cand,
                  j->cur, j->n_gate, j->ds.n_users, j->ds.n_items, j->n_held,
                  j->phase_s[PH_READ], j->phase_s[PH_MODEL],
                  j->phase_s[PH_TRAIN], j->phase_s[PH_EVAL],
                  j->phase_s[PH_SAVE], j->phase_s[PH_PUBLISH]);
    } else if (rc == SGBD_E_REJECTED || rc == SGBD_E_DIVERGED) {
        res->outcome = SGBD_RETRAIN_REJECTED;
        snprintf(res->message, sizeof(res->message), "%s",
                 sgbd_err_detail(rc));
        SGBD_WARN("retrain_rejected", "seconds=%.2f metric=%s "
                  "candidate=%.4f current=%.4f tolerance=%g why=\"%s\"",
                  secs, metric, j->cand, j->cur, j->cfg->retrain_tolerance,
                  res->message);
    } else {
        res->outcome = SGBD_RETRAIN_FAILED;
        snprintf(res->message, sizeof(res->message), "%s",
                 sgbd_err_detail(rc));
        if (rc == SGBD_E_CANCELLED)
            SGBD_INFO("retrain_cancelled", "seconds=%.2f why=\"%s\"", secs,
                      res->message);
        else
            SGBD_ERR("retrain_failed", "seconds=%.2f why=\"%s\"", secs,
                     res->message);
    }
}

/* Whether the candidate may replace the served model (retrain.h, 5). */
static int gate(struct job *j)
{
    double tol = j->cfg->retrain_tolerance;

    if (!isfinite(j->cand))
        return sgbd_errf(SGBD_E_DIVERGED, "candidate %s is not finite",
                         j->cfg->valid_metric);
    if (j->has_current && j->n_gate > 0 && j->cand < j->cur - tol)
        return sgbd_errf(SGBD_E_REJECTED, "candidate %s %.4f is below the "
                         "served model's %.4f by more than %g on %zu users",
                         j->cfg->valid_metric, j->cand, j->cur, tol,
                         j->n_gate);
    return 0;
}

static void pin(struct job *j)
{
    sgbd_snapshot_acquire(j->rt->slot, &j->view);
    j->pinned = 1;
}

static void unpin(struct job *j)
{
    if (j->pinned)
        sgbd_snapshot_release(&j->view);
    j->pinned = 0;
}

static int run(struct job *j)
{
    int rc = check_settings(j);

    if (rc == 0)
        rc = sgbd_mat_set_threads(j->cfg->retrain_threads);
    if (rc == 0)
        rc = load_data(j);
    lap(j, PH_READ);
    if (rc < 0)
        return rc;
    point(j, SGBD_RETRAIN_POINT_READ, 0);
    sgbd_retrain_progress(j->rt, 0.1);
    pin(j);
    rc = create_model(j);
    unpin(j);   /* no pin held while training: nothing to keep alive */
    lap(j, PH_MODEL);
    if (rc == 0)
        rc = train(j);
    lap(j, PH_TRAIN);
    if (rc < 0)
        return rc;
    point(j, SGBD_RETRAIN_POINT_TRAINED, 0);
    sgbd_retrain_progress(j->rt, 0.85);
    rc = build_candidate(j);
    pin(j);     /* the view now: its overlay vectors are what is served */
    if (rc == 0)
        rc = evaluate(j);
    fill_metrics(&j->cand_all, j->res->metrics, &j->res->n_metrics);
    if (rc == 0) {
        j->snap->meta.n_metrics = j->res->n_metrics;
        memcpy(j->snap->meta.metrics, j->res->metrics,
               sizeof(j->res->metrics));
        rc = gate(j);
    }
    unpin(j);
    lap(j, PH_EVAL);
    sgbd_retrain_progress(j->rt, 0.95);
    return rc == 0 ? publish(j) : rc;
}

void sgbd_retrain_job(struct sgbd_retrain *rt, const struct sgbd_config *cfg,
                      uint64_t absorbed, struct sgbd_retrain_result *res)
{
    struct job j;
    int rc;

    memset(res, 0, sizeof(*res));
    memset(&j, 0, sizeof(j));
    j.rt = rt;
    j.cfg = cfg;
    j.res = res;
    j.absorbed = absorbed;
    j.t0 = sgbd_retrain_now();
    j.lap_at = j.t0;
    j.cur = NAN;
    j.cand = NAN;
    sgbd_err_clear();
    rc = run(&j);
    verdict(&j, rc);
    job_free(&j);
}

/* ---- restore and rollback ---- */

/* The layout a model made on the checkpoint's data must be the saved
 * one, tensor for tensor. */
static int check_layout(const struct sgbd_params *want,
                        const struct sgbd_params *got, uint64_t version)
{
    if (want->n_tensors != got->n_tensors || want->n != got->n)
        return sgbd_errf(SGBD_E_SHAPE, "checkpoint %llu: %d tensors of %zu "
                         "floats, the model on its data has %d of %zu",
                         (unsigned long long)version, got->n_tensors, got->n,
                         want->n_tensors, want->n);
    for (int i = 0; i < want->n_tensors; i++) {
        const struct sgbd_tensor *a = &want->t[i], *b = &got->t[i];
        if (strcmp(a->name, b->name) != 0 || a->rows != b->rows ||
            a->cols != b->cols || a->offset != b->offset)
            return sgbd_errf(SGBD_E_SHAPE, "checkpoint %llu: tensor %s is "
                             "(%zu, %zu), the model on its data has %s "
                             "(%zu, %zu)", (unsigned long long)version,
                             b->name, b->rows, b->cols, a->name, a->rows,
                             a->cols);
    }
    return 0;
}

/* Everything a restore holds. */
struct restore {
    struct sgbd_checkpoint_info info;
    struct sgbd_params layout;
    float *arena;
    uint64_t version;
    const struct sgbd_model_ops *ops;
    struct sgbd_holdout_data data;
    struct chan_map chans;          /* the checkpoint's channels */
    struct sgbd_dataset ds;
    struct sgbd_model *model;
    struct sgbd_snapshot *snap;
};

/* The channels a checkpoint lists (hparams ch_<name>, in order), found
 * by name in the read; a checkpoint that lists none takes them all, as
 * `sgbd train` saw them. */
static int checkpoint_channels(struct restore *r)
{
    const struct sgbd_checkpoint_info *info = &r->info;
    struct chan_map *m = &r->chans;
    size_t pre = strlen(HP_CHANNEL);

    m->n = 0;
    for (int i = 0; i < info->n_hparams; i++) {
        const char *name = info->hparams[i].key + pre;
        int k;
        if (strncmp(info->hparams[i].key, HP_CHANNEL, pre) != 0)
            continue;
        for (k = 0; k < r->data.n_channels; k++)
            if (strcmp(r->data.channel_names[k], name) == 0)
                break;
        if (k == r->data.n_channels ||
            r->data.channel_widths[k] != (uint32_t)info->hparams[i].value ||
            m->n == SGBD_MAX_CHANNELS)
            return sgbd_errf(SGBD_E_SHAPE, "checkpoint %llu: channel '%s' of "
                             "width %g is not in the store as it was",
                             (unsigned long long)r->version, name,
                             info->hparams[i].value);
        m->idx[m->n++] = k;
    }
    if (m->n == 0)
        chan_map_all(&r->data, m);
    return 0;
}

static void restore_free(struct restore *r)
{
    sgbd_snapshot_free(r->snap);
    if (r->model)
        r->model->ops->free(r->model);
    sgbd_dataset_free(&r->ds);
    sgbd_holdout_data_free(&r->data);
    sgbd_params_free_arena(r->arena);
}

/* The model of the checkpoint over its prefix of the current store. */
static int rebuild_model(struct restore *r)
{
    struct sgbd_holdout_opts ho;
    struct sgbd_features feat;
    struct sgbd_hparams hp;
    struct sgbd_model_input in = {&r->ds, NULL, &hp};
    int holdout, rc;

    if (r->info.n_users > r->data.n_users ||
        r->info.n_items > r->data.n_items)
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint %llu covers %u users "
                         "and %u items, the store has %u and %u",
                         (unsigned long long)r->version, r->info.n_users,
                         r->info.n_items, r->data.n_users, r->data.n_items);
    hparams_from_info(&hp, &holdout, &r->info);
    ho = (struct sgbd_holdout_opts){r->info.n_users, r->info.n_items,
                                    r->info.data_seq, holdout};
    rc = sgbd_holdout_build(&r->ds, r->data.events, r->data.n_events, &ho,
                            NULL);
    if (rc == 0)
        rc = checkpoint_channels(r);
    if (rc < 0)
        return rc;
    features_of(&r->data, &r->chans, r->info.n_items, &feat);
    in.feat = feat.n ? &feat : NULL;
    rc = r->ops->create(&r->model, &in);
    if (rc == 0)
        rc = check_layout(&r->model->layout, &r->layout, r->version);
    return rc;
}

static void restored_meta(const struct sgbd_checkpoint_info *info,
                          struct sgbd_snapshot_meta *meta)
{
    memset(meta, 0, sizeof(*meta));
    snprintf(meta->model, sizeof(meta->model), "%s", info->model);
    snprintf(meta->optimizer, sizeof(meta->optimizer), "%.15s",
             info->optimizer);
    meta->trained_at = (int64_t)(info->created_at_ms / 1000);
    for (int i = 0; i < info->n_metrics; i++) {
        const char *k = info->metrics[i].key;
        struct sgbd_snapshot_metric *m = &meta->metrics[meta->n_metrics];
        if (strncmp(k, "valid_", 6) != 0 ||
            meta->n_metrics == SGBD_SNAPSHOT_MAX_METRICS)
            continue;
        snprintf(m->name, sizeof(m->name), "%s", k + 6);
        m->value = info->metrics[i].value;
        meta->n_metrics++;
    }
}

static void restored_counts(const struct restore *r,
                            struct sgbd_retrain_restored *out)
{
    out->version = r->version;
    out->new_items = r->data.n_items - r->info.n_items;
    out->new_interactions = 0;
    for (size_t k = 0; k < r->data.n_events; k++)
        out->new_interactions += r->data.events[k].seq > r->info.data_seq;
}

static int load_checkpoint(struct sgbd_retrain *rt, uint64_t version,
                           struct restore *r)
{
    int rc = sgbd_checkpoint_load(rt->store, version, &r->info, &r->layout,
                                  &r->arena, &r->version);

    if (rc < 0)
        return rc;
    r->ops = sgbd_model_find(r->info.model);
    if (!r->ops)
        return sgbd_errf(SGBD_E_NOTFOUND, "checkpoint %llu: model '%s' is "
                         "not in this build (known: %s)",
                         (unsigned long long)r->version, r->info.model,
                         sgbd_model_names());
    return sgbd_holdout_read(rt->store, r->ops->needs_features, &r->data);
}

int sgbd_retrain_publish_checkpoint(struct sgbd_retrain *rt,
                                    const struct sgbd_config *cfg,
                                    uint64_t version, int rollback,
                                    struct sgbd_retrain_restored *out)
{
    struct restore r;
    struct sgbd_snapshot_meta meta;
    struct snap_src src;
    double t0 = sgbd_retrain_now();
    uint64_t absorbed = sgbd_snapshot_slot_seq(rt->slot);
    int rc;

    memset(&r, 0, sizeof(r));
    rc = sgbd_mat_set_threads(cfg->retrain_threads);
    if (rc == 0)
        rc = load_checkpoint(rt, version, &r);
    if (rc == 0)
        rc = rebuild_model(&r);
    if (rc < 0)
        goto out;
    restored_meta(&r.info, &meta);
    src = (struct snap_src){r.version, absorbed, &r.data, &r.ds, r.model,
                            r.arena, &meta, &r.chans};
    rc = build_snapshot(&r.snap, &src);
    if (rc < 0)
        goto out;
    r.model = NULL;
    rc = sgbd_snapshot_finish(r.snap);
    if (rc == 0 && rollback)
        rc = sgbd_checkpoint_rollback(rt->store, r.version);
    if (rc < 0)
        goto out;
    rc = sgbd_snapshot_publish(rt->slot, r.snap, rollback);
    r.snap = NULL;
    if (rc < 0)
        goto out;
    restored_counts(&r, out);
    SGBD_INFO(rollback ? "model_rolled_back" : "model_restored",
              "version=%llu model=%s users=%u items=%u new_items=%llu "
              "new_interactions=%llu seconds=%.2f",
              (unsigned long long)r.version, r.info.model, r.info.n_users,
              r.data.n_items, (unsigned long long)out->new_items,
              (unsigned long long)out->new_interactions,
              sgbd_retrain_now() - t0);
out:
    restore_free(&r);
    return rc;
}
