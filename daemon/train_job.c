/*
 * train_job.c - data -> model -> trainer -> metrics, for one offline job.
 */
#include "sgbd/train_job.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/bf16.h"
#include "sgbd/bpr.h"
#include "sgbd/bulkio.h"
#include "sgbd/checkpoint.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/mat.h"
#include "sgbd/metrics.h"
#include "sgbd/mmrec_rng.h"
#include "sgbd/model.h"
#include "sgbd/parallel.h"
#include "sgbd/store.h"

/* Everything one job holds while it runs. */
struct run {
    const struct sgbd_train_job *job;
    struct sgbd_dataset ds;
    struct sgbd_features feat;
    struct sgbd_hparams hp;
    const struct sgbd_model_ops *ops;
    struct sgbd_model *model;
    float *theta;                   /* (model->layout.n) */
    struct sgbd_mat users, items;   /* (U, D_out), (I, D_out) */
    int ks[SGBD_JOB_MAX_K];
    int n_k;
    double eval_seconds;            /* summed over evaluated splits */
    int eval_splits;
    struct sgbd_train_report *rep;  /* for the per-epoch history */
    int points_cap;
    struct sgbd_store *store;       /* with --db */
    uint64_t last_seq;              /* newest interaction trained on */
    int mmrec_streams;              /* draws from MMRec's generators */
};

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sgbd_train_job_defaults(struct sgbd_train_job *job)
{
    memset(job, 0, sizeof(*job));
    sgbd_config_defaults(&job->cfg);
    /* The offline engine reproduces MMRec: plain Adam unless told. */
    memcpy(job->cfg.optimizer, "adam", 5);
}

/* The valid metric must be one the job computes: "<name>@<K>". */
static int check_valid_metric(struct run *r)
{
    static const char *names[] = {"recall", "ndcg", "precision", "map"};
    const char *m = r->job->cfg.valid_metric;
    const char *at = strchr(m, '@');
    int k = at ? atoi(at + 1) : 0, known = 0;

    for (int i = 0; at && i < 4; i++)
        known |= strlen(names[i]) == (size_t)(at - m) &&
                 strncmp(m, names[i], (size_t)(at - m)) == 0;
    for (int i = 0; known && i < r->n_k; i++)
        if (r->ks[i] == k)
            return 0;
    return sgbd_errf(SGBD_E_CONFIG, "[train] valid_metric: '%s' is not "
                     "recall, ndcg, precision or map at one of the topk "
                     "cut-offs (%s)", m, r->job->cfg.topk);
}

void sgbd_train_job_hparams(struct sgbd_hparams *hp,
                            const struct sgbd_config *c)
{
    sgbd_hparams_defaults(hp);
    hp->embedding_size = c->embedding_size;
    hp->n_layers = c->n_layers;
    hp->reg_weight = c->reg_weight;
    hp->knn_k = c->knn_k;
    hp->mm_image_weight = c->mm_image_weight;
    hp->user_knn_k = c->user_knn_k;
    hp->dropout = c->dropout;
    hp->ssl_alpha = c->ssl_alpha;
    hp->ssl_temp = c->ssl_temp;
    hp->temp = c->temp;
    hp->dualgnn_inplace_bug = c->dualgnn_inplace_bug;
    hp->bf16_features = c->bf16_features && sgbd_bf16_supported();
    if (c->bf16_features && !hp->bf16_features)
        SGBD_WARN("bf16_features_unsupported", "msg=\"no AVX512-BF16 on "
                  "this CPU; features are projected in float32\"");
}

static int open_store(struct run *r);

static int load_from_store(struct run *r)
{
    int rc = open_store(r);

    if (rc)
        return rc;
    return sgbd_store_load_dataset(r->store, &r->ds,
                                   r->ops->needs_features ? &r->feat : NULL,
                                   &r->last_seq);
}

static int load_data(struct run *r)
{
    const struct sgbd_train_job *job = r->job;
    const char *feat_dir = job->features_dir ? job->features_dir
                                             : job->data_dir;
    int rc;

    if (job->db_path)
        rc = load_from_store(r);
    else
        rc = sgbd_dataset_load_dir(&r->ds, job->data_dir, &job->io);
    if (rc || !r->ops->needs_features)
        return rc;
    if (!job->db_path) {
        rc = sgbd_features_load_dir(&r->feat, feat_dir, r->ds.n_items,
                                    &job->io);
        if (rc)
            return rc;
    }
    if (r->feat.n == 0)
        return sgbd_errf(SGBD_E_NOTFOUND, "%s: model %s needs item features "
                         "(<name>_feat.npy files) and there are none",
                         job->db_path ? job->db_path : feat_dir,
                         r->ops->name);
    return 0;
}

static int open_store(struct run *r)
{
    struct sgbd_store_opts o;

    if (r->store)
        return 0;
    sgbd_store_opts_defaults(&o);
    o.map_size = (size_t)r->job->cfg.map_size_mb << 20;
    return sgbd_store_open(&r->store, r->job->db_path, &o);
}

/* Look up the model, check the settings, load the data. r must have been
 * zeroed with r->job set (and may hold an open store). */
static int setup(struct run *r, const char *model)
{
    const struct sgbd_train_job *job = r->job;
    int rc;

    r->ops = sgbd_model_find(model);
    if (!r->ops)
        return sgbd_errf(SGBD_E_USAGE, "unknown model '%s' (known: %s)",
                         model, sgbd_model_names());
    rc = sgbd_metrics_parse_ks(job->cfg.topk, r->ks, &r->n_k);
    if (rc)
        return sgbd_errf(SGBD_E_CONFIG, "[train] topk: %s",
                         sgbd_err_detail(rc));
    if (rc == 0)
        rc = check_valid_metric(r);
    if (rc == 0)
        rc = sgbd_mat_set_threads(job->cfg.threads);
    if (rc == 0)
        rc = load_data(r);
    if (rc)
        return rc;
    sgbd_train_job_hparams(&r->hp, &job->cfg);
    return 0;
}

/*
 * [train] streams: mmrec where asked, or under auto where every tensor
 * can be drawn as MMRec draws it and the seed is one NumPy takes.
 */
static int resolve_streams(struct run *r)
{
    const struct sgbd_config *c = &r->job->cfg;
    int drawable = sgbd_params_mmrec_drawable(&r->model->layout);
    int seed_ok = c->seed >= 0 && c->seed <= (int64_t)UINT32_MAX;

    r->mmrec_streams = 0;
    if (strcmp(c->streams, "sgbd") == 0)
        return 0;
    if (strcmp(c->streams, "auto") == 0) {
        r->mmrec_streams = drawable && seed_ok;
        return 0;
    }
    if (!seed_ok)
        return sgbd_errf(SGBD_E_CONFIG, "train: streams = mmrec takes a "
                         "seed from 0 to 2^32 - 1 (NumPy's range), not "
                         "%lld", (long long)c->seed);
    if (!drawable)
        return sgbd_errf(SGBD_E_CONFIG, "train: streams = mmrec follows "
                         "MMRec's draws only for models initialised "
                         "Xavier-uniform (lightgcn), not %s", c->model);
    r->mmrec_streams = 1;
    return 0;
}

/* The model of r->ops over the loaded data, with a fresh arena. */
static int create_model(struct run *r)
{
    struct sgbd_model_input in;
    struct sgbd_rng rng;
    int rc;

    in.ds = &r->ds;
    in.feat = r->feat.n ? &r->feat : NULL;
    in.hp = &r->hp;
    rc = r->ops->create(&r->model, &in);
    if (rc)
        return rc;
    r->theta = sgbd_params_alloc_arena(&r->model->layout);
    if (!r->theta)
        return -ENOMEM;
    rc = resolve_streams(r);
    if (rc < 0)
        return rc;
    if (r->mmrec_streams) {
        rc = sgbd_params_init_mmrec(&r->model->layout, r->theta,
                                    (uint32_t)r->job->cfg.seed);
        if (rc < 0)
            return rc;
    } else {
        sgbd_rng_init(&rng, (uint64_t)r->job->cfg.seed, SGBD_RNG_INIT);
        sgbd_params_init(&r->model->layout, r->theta, &rng);
    }
    rc = sgbd_mat_alloc(&r->users, r->ds.n_users, r->model->dim);
    if (rc == 0)
        rc = sgbd_mat_alloc(&r->items, r->ds.n_items, r->model->dim);
    return rc;
}

static void teardown(struct run *r)
{
    sgbd_mat_release(&r->items);
    sgbd_mat_release(&r->users);
    sgbd_params_free_arena(r->theta);
    if (r->model)
        r->ops->free(r->model);
    sgbd_features_free(&r->feat);
    sgbd_dataset_free(&r->ds);
    sgbd_store_close(r->store);
}

/* Copy m into the valid or test slot of out, named "recall@20", ... */
static void fill_eval(const struct run *r, const struct sgbd_metrics *m,
                      struct sgbd_epoch_eval *out, int test)
{
    static const char *names[] = {"recall", "ndcg", "precision", "map"};
    const double *vals[] = {m->recall, m->ndcg, m->precision, m->map};

    out->n = 0;
    for (int name = 0; name < 4; name++) {
        for (int i = 0; i < r->n_k; i++) {
            struct sgbd_eval_value *v = &out->v[out->n++];
            snprintf(v->name, sizeof(v->name), "%s@%d", names[name],
                     r->ks[i]);
            if (test)
                v->test = vals[name][i];
            else
                v->valid = vals[name][i];
        }
    }
}

/* Full ranking of users x items against valid and test (NULL to skip
 * valid), timed for the report. */
static int eval_splits(struct run *r, struct sgbd_epoch_eval *out,
                       int with_valid)
{
    struct sgbd_metrics valid, test;
    double t0 = now_seconds();
    int rc;

    rc = sgbd_metrics_eval2(with_valid ? &valid : NULL, &test, r->users,
                            r->items, &r->ds.train,
                            with_valid ? &r->ds.valid : NULL, &r->ds.test,
                            r->ks, r->n_k);
    if (rc)
        return rc;
    r->eval_seconds += now_seconds() - t0;
    r->eval_splits += with_valid ? 2 : 1;
    if (with_valid)
        fill_eval(r, &valid, out, 0);
    fill_eval(r, &test, out, 1);
    return 0;
}

static int find_value(const struct sgbd_epoch_eval *ev, const char *name)
{
    for (int i = 0; i < ev->n; i++)
        if (strcmp(ev->v[i].name, name) == 0)
            return i;
    return -1;
}

/* Trainer callback: embed at theta, then valid and test. MMRec evaluates
 * both after every epoch and reports the test metrics of the best valid
 * epoch (algorithms.md 3.2). */
static int evaluate(void *ctx, const float *theta, struct sgbd_epoch_eval *out)
{
    struct run *r = ctx;
    int rc, idx;

    rc = r->ops->embed(r->model, theta, r->users, r->items);
    if (rc == 0)
        rc = eval_splits(r, out, 1);
    if (rc)
        return rc;
    idx = find_value(out, r->job->cfg.valid_metric);
    out->score = idx >= 0 ? out->v[idx].valid : NAN;
    return 0;
}

static void record_point(struct run *r, const struct sgbd_epoch_info *e)
{
    struct sgbd_train_report *rep = r->rep;

    if (rep->n_points == r->points_cap) {
        int cap = r->points_cap ? 2 * r->points_cap : 64;
        void *p = realloc(rep->points, (size_t)cap * sizeof(*rep->points));
        if (!p)
            return; /* the history is a report, not a result */
        rep->points = p;
        r->points_cap = cap;
    }
    rep->points[rep->n_points].loss = e->loss;
    rep->points[rep->n_points].valid = e->valid;
    rep->points[rep->n_points].seconds = e->train_seconds;
    rep->n_points++;
}

static void on_epoch(void *ctx, const struct sgbd_epoch_info *e)
{
    struct run *r = ctx;

    record_point(r, e);
    if (r->job->progress)
        r->job->progress(r->job->progress_ctx, e);
}

int sgbd_train_job_step_opts(struct sgbd_step_opts *s,
                             const struct sgbd_config *c)
{
    int rc;

    sgbd_step_opts_defaults(s);
    rc = sgbd_optimizer_parse(c->optimizer, &s->kind);
    if (rc)
        return rc;
    s->adam.lr = c->learning_rate;
    s->adam.weight_decay = c->weight_decay;
    s->alpha1 = c->alpha1;
    s->alpha2 = c->alpha2;
    s->beta = c->beta;
    s->rho = c->rho;
    s->sam_on_normal_steps = c->sam_on_normal_steps;
    s->adaptive = c->adaptive;
    return 0;
}

/* Test metrics of theta with noise added to a copy of the features: a
 * second model instance over the noisy features, so whatever the model
 * derives from its inputs (projections, kNN graphs) sees the noise. */
static int eval_noisy(struct run *r, struct sgbd_epoch_eval *out)
{
    struct sgbd_features noisy = {0};
    struct sgbd_model_input in = {&r->ds, &noisy, &r->hp};
    struct sgbd_model *m = NULL;
    int rc = 0;

    noisy.n = r->feat.n;
    for (int c = 0; c < r->feat.n && rc == 0; c++) {
        const struct sgbd_mat *src = &r->feat.ch[c].m;
        noisy.ch[c] = r->feat.ch[c];
        rc = sgbd_mat_alloc(&noisy.ch[c].m, src->rows, src->cols);
        for (size_t i = 0; rc == 0 && i < src->rows; i++)
            memcpy(sgbd_mat_row(noisy.ch[c].m, i), sgbd_mat_row(*src, i),
                   src->cols * sizeof(float));
        if (rc)
            noisy.n = c; /* free only what was made */
    }
    if (rc == 0)
        rc = sgbd_features_add_noise(&noisy, r->job->feature_noise,
                                     (uint64_t)r->job->cfg.seed);
    if (rc == 0)
        rc = r->ops->create(&m, &in);
    if (rc == 0)
        rc = r->ops->embed(m, r->theta, r->users, r->items);
    if (rc == 0)
        rc = eval_splits(r, out, 0);
    if (m)
        r->ops->free(m);
    for (int c = 0; c < noisy.n; c++)
        sgbd_mat_release(&noisy.ch[c].m);
    return rc;
}

/* ---- Saved models -------------------------------------------------- */

void sgbd_train_job_kv_add(struct sgbd_ckpt_kv *kv, int *n, const char *key,
                           double value)
{
    if (*n == SGBD_CKPT_KV_MAX)
        return;
    snprintf(kv[*n].key, sizeof(kv[*n].key), "%s", key);
    kv[*n].value = value;
    (*n)++;
}

void sgbd_train_job_hparams_to_info(struct sgbd_checkpoint_info *info,
                                    const struct sgbd_hparams *hp)
{
    struct sgbd_ckpt_kv *kv = info->hparams;
    int *n = &info->n_hparams;

    sgbd_train_job_kv_add(kv, n, "embedding_size", hp->embedding_size);
    sgbd_train_job_kv_add(kv, n, "n_layers", hp->n_layers);
    sgbd_train_job_kv_add(kv, n, "reg_weight", hp->reg_weight);
    sgbd_train_job_kv_add(kv, n, "knn_k", hp->knn_k);
    sgbd_train_job_kv_add(kv, n, "mm_image_weight", hp->mm_image_weight);
    sgbd_train_job_kv_add(kv, n, "user_knn_k", hp->user_knn_k);
    sgbd_train_job_kv_add(kv, n, "dropout", hp->dropout);
    sgbd_train_job_kv_add(kv, n, "ssl_alpha", hp->ssl_alpha);
    sgbd_train_job_kv_add(kv, n, "ssl_temp", hp->ssl_temp);
    sgbd_train_job_kv_add(kv, n, "temp", hp->temp);
    sgbd_train_job_kv_add(kv, n, "dualgnn_inplace_bug",
                          hp->dualgnn_inplace_bug);
}

/* The hyper-parameters a model needs to be rebuilt, and its metrics. */
static void fill_info(const struct run *r, const struct sgbd_train_result *res,
                      struct sgbd_checkpoint_info *info)
{
    const struct sgbd_hparams *hp = &r->hp;
    const struct sgbd_epoch_eval *ev = &res->best;
    char key[SGBD_CKPT_KEY];

    memset(info, 0, sizeof(*info));
    snprintf(info->model, sizeof(info->model), "%s", r->ops->name);
    snprintf(info->optimizer, sizeof(info->optimizer), "%s",
             r->job->cfg.optimizer);
    info->epoch = res->best_epoch >= 0 ? (uint32_t)res->best_epoch : 0;
    info->n_users = r->ds.n_users;
    info->n_items = r->ds.n_items;
    info->data_seq = r->last_seq;
    sgbd_train_job_hparams_to_info(info, hp);
    for (int i = 0; i < ev->n; i++) {
        snprintf(key, sizeof(key), "valid_%s", ev->v[i].name);
        sgbd_train_job_kv_add(info->metrics, &info->n_metrics, key,
                              ev->v[i].valid);
        snprintf(key, sizeof(key), "test_%s", ev->v[i].name);
        sgbd_train_job_kv_add(info->metrics, &info->n_metrics, key,
                              ev->v[i].test);
    }
}

void sgbd_train_job_hparams_from_info(struct sgbd_hparams *hp,
                                      const struct sgbd_checkpoint_info *info)
{
    for (int i = 0; i < info->n_hparams; i++) {
        const char *k = info->hparams[i].key;
        double v = info->hparams[i].value;
        if (strcmp(k, "embedding_size") == 0) hp->embedding_size = (int)v;
        else if (strcmp(k, "n_layers") == 0) hp->n_layers = (int)v;
        else if (strcmp(k, "reg_weight") == 0) hp->reg_weight = v;
        else if (strcmp(k, "knn_k") == 0) hp->knn_k = (int)v;
        else if (strcmp(k, "mm_image_weight") == 0) hp->mm_image_weight = v;
        else if (strcmp(k, "user_knn_k") == 0) hp->user_knn_k = (int)v;
        else if (strcmp(k, "dropout") == 0) hp->dropout = v;
        else if (strcmp(k, "ssl_alpha") == 0) hp->ssl_alpha = v;
        else if (strcmp(k, "ssl_temp") == 0) hp->ssl_temp = v;
        else if (strcmp(k, "temp") == 0) hp->temp = v;
        else if (strcmp(k, "dualgnn_inplace_bug") == 0)
            hp->dualgnn_inplace_bug = (int)v;
    }
}

/* Write the model as one contiguous checkpoint file (checkpoint.h). */
static int save_file(const struct run *r, const char *path,
                     const struct sgbd_checkpoint_info *info)
{
    size_t cap = sgbd_checkpoint_encoded_size(info, &r->model->layout), len;
    struct iovec iov;
    void *buf;
    int rc;

    if (cap == 0)
        return sgbd_errf(SGBD_E_FORMAT, "%s: model is not encodable", path);
    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    rc = sgbd_checkpoint_encode(info, &r->model->layout, r->theta, buf, cap,
                                &len);
    if (rc == 0) {
        iov.iov_base = buf;
        iov.iov_len = len;
        rc = sgbd_bulkio_write_file(path, &iov, 1);
    }
    free(buf);
    return rc;
}

static int save_model(struct run *r, const struct sgbd_train_result *res)
{
    struct sgbd_checkpoint_info info;
    uint64_t version;
    int rc = 0;

    fill_info(r, res, &info);
    if (r->job->out_path)
        rc = save_file(r, r->job->out_path, &info);
    if (rc == 0 && r->store) {
        rc = sgbd_checkpoint_save(r->store, &info, &r->model->layout,
                                  r->theta, &version);
        if (rc == 0)
            rc = sgbd_checkpoint_prune(r->store, r->job->cfg.keep_checkpoints,
                                       NULL);
    }
    return rc;
}

/* The layout a model made must be the one the file describes. */
static int check_layout(const struct sgbd_params *want,
                        const struct sgbd_params *got, const char *what)
{
    if (want->n_tensors != got->n_tensors || want->n != got->n)
        return sgbd_errf(SGBD_E_SHAPE, "%s: %d tensors of %zu floats, the "
                         "model on this data has %d of %zu", what,
                         got->n_tensors, got->n, want->n_tensors, want->n);
    for (int i = 0; i < want->n_tensors; i++) {
        const struct sgbd_tensor *a = &want->t[i], *b = &got->t[i];
        if (strcmp(a->name, b->name) != 0 || a->rows != b->rows ||
            a->cols != b->cols || a->offset != b->offset)
            return sgbd_errf(SGBD_E_SHAPE, "%s: tensor %s is (%zu, %zu), the "
                             "model on this data has %s (%zu, %zu)", what,
                             b->name, b->rows, b->cols, a->name, a->rows,
                             a->cols);
    }
    return 0;
}

/* Read a saved model (file or store version) into info/layout/arena. */
static int read_saved(struct run *r, struct sgbd_checkpoint_info *info,
                      struct sgbd_params *layout, float **arena)
{
    const char *path = r->job->in_path;
    void *buf = NULL;
    size_t len = 0;
    int rc;

    if (!path)
        return sgbd_checkpoint_load(r->store, r->job->version, info, layout,
                                    arena, NULL);
    rc = sgbd_bulkio_read_file(path, &buf, &len, &r->job->io);
    if (rc == 0)
        rc = sgbd_checkpoint_decode(buf, len, info, layout, arena);
    free(buf);
    if (rc && rc != -ENOENT && rc != -EACCES)
        return sgbd_errf(rc, "%s: %s", path, sgbd_err_detail(rc));
    return rc;
}

int sgbd_train_job_run(struct sgbd_train_job *job,
                       struct sgbd_train_report *rep)
{
    struct sgbd_train_opts o;
    struct sgbd_trainer *t = NULL;
    struct run r;
    int rc;

    memset(rep, 0, sizeof(*rep));
    memset(&r, 0, sizeof(r));
    r.job = job;
    rc = setup(&r, job->cfg.model);
    if (rc == 0)
        rc = create_model(&r);
    if (rc)
        goto out;
    r.rep = rep;

    sgbd_train_opts_defaults(&o);
    o.max_epochs = job->cfg.epochs;
    o.stopping_step = job->cfg.stopping_step;
    o.batch_size = (size_t)job->cfg.batch_size;
    o.seed = (uint64_t)job->cfg.seed;
    o.mmrec_streams = r.mmrec_streams;
    rep->mmrec_streams = r.mmrec_streams;
    o.restore_best = 1;
    o.evaluate = evaluate;
    o.eval_ctx = &r;
    o.progress = on_epoch;
    o.progress_ctx = &r;
    rc = sgbd_train_job_step_opts(&o.step, &job->cfg);
    if (rc == 0)
        rc = sgbd_trainer_new(&t, r.model, &r.ds, &o);
    if (rc == 0)
        rc = sgbd_trainer_run(t, r.theta, &rep->result);
    if (rc)
        goto out;

    for (int i = 0; i < rep->n_points; i++)
        rep->train_seconds_per_epoch += rep->points[i].seconds;
    if (rep->n_points)
        rep->train_seconds_per_epoch /= rep->n_points;
    if (r.eval_splits)
        rep->eval_seconds_per_split = r.eval_seconds / r.eval_splits;
    if (job->feature_noise > 0 && r.feat.n > 0) {
        rc = eval_noisy(&r, &rep->noisy);
        rep->has_noisy = rc == 0;
    }
    if (rc == 0 && (job->out_path || r.store))
        rc = save_model(&r, &rep->result);
out:
    sgbd_trainer_free(t);
    teardown(&r);
    return rc;
}

/* Rebuild the saved model of job->in_path (or the store's checkpoint) on
 * job's data: r gets data, model and theta. The saved model, not the
 * command line, says which model this is and with which hyper-parameters. */
static int load_saved(struct run *r, struct sgbd_checkpoint_info *info)
{
    const struct sgbd_train_job *job = r->job;
    struct sgbd_params layout;
    float *saved = NULL;
    int rc = 0;

    if (job->db_path)
        rc = open_store(r);
    if (rc == 0)
        rc = read_saved(r, info, &layout, &saved);
    if (rc == 0)
        rc = setup(r, info->model);
    if (rc == 0) {
        sgbd_train_job_hparams_from_info(&r->hp, info);
        rc = create_model(r);
    }
    if (rc == 0)
        rc = check_layout(&r->model->layout, &layout,
                          job->in_path ? job->in_path : "checkpoint");
    if (rc == 0)
        memcpy(r->theta, saved, layout.n * sizeof(float));
    sgbd_params_free_arena(saved);
    return rc;
}

int sgbd_train_job_eval(struct sgbd_train_job *job,
                        struct sgbd_train_report *rep)
{
    struct sgbd_checkpoint_info info;
    struct run r;
    int rc;

    memset(rep, 0, sizeof(*rep));
    memset(&r, 0, sizeof(r));
    r.job = job;
    rc = load_saved(&r, &info);
    if (rc == 0)
        rc = r.ops->embed(r.model, r.theta, r.users, r.items);
    if (rc == 0)
        rc = eval_splits(&r, &rep->result.best, 1);
    rep->result.best_epoch = (int)info.epoch;
    if (r.eval_splits)
        rep->eval_seconds_per_split = r.eval_seconds / r.eval_splits;
    if (rc == 0 && job->feature_noise > 0 && r.feat.n > 0) {
        rc = eval_noisy(&r, &rep->noisy);
        rep->has_noisy = rc == 0;
    }
    teardown(&r);
    return rc;
}

/* ---- Loss landscape --------------------------------------------------- */

/* A fixed set of batches (negatives drawn once) to measure the loss on. */
struct probe_batches {
    int n;
    size_t rows[SGBD_LANDSCAPE_MAX_BATCHES];
    uint32_t *users, *pos, *neg;    /* (n * B) each */
    size_t B;
};

static int probe_batches_draw(struct probe_batches *pb, struct run *r,
                              int n_batches, uint64_t seed)
{
    struct sgbd_bpr_sampler *s = NULL;
    struct sgbd_batch b;
    size_t B = (size_t)r->job->cfg.batch_size;
    int rc;

    memset(pb, 0, sizeof(*pb));
    rc = sgbd_bpr_sampler_new(&s, &r->ds, B, seed);
    if (rc)
        return rc;
    pb->B = B;
    pb->users = malloc((size_t)n_batches * B * sizeof(uint32_t));
    pb->pos = malloc((size_t)n_batches * B * sizeof(uint32_t));
    pb->neg = malloc((size_t)n_batches * B * sizeof(uint32_t));
    if (!pb->users || !pb->pos || !pb->neg) {
        rc = -ENOMEM;
        goto out;
    }
    sgbd_bpr_epoch_begin(s);
    while (pb->n < n_batches && sgbd_bpr_next(s, &b)) {
        size_t off = (size_t)pb->n * B;
        memcpy(pb->users + off, b.users, b.n * sizeof(uint32_t));
        memcpy(pb->pos + off, b.pos, b.n * sizeof(uint32_t));
        memcpy(pb->neg + off, b.neg, b.n * sizeof(uint32_t));
        pb->rows[pb->n++] = b.n;
    }
out:
    sgbd_bpr_sampler_free(s);
    return rc;
}

static void probe_batches_free(struct probe_batches *pb)
{
    free(pb->users);
    free(pb->pos);
    free(pb->neg);
}

/* Mean loss over the probe batches at theta; grad (n floats) gets the
 * summed gradient when want_grad, else is scratch. */
static double probe_loss(struct run *r, const struct probe_batches *pb,
                         const float *theta, float *grad)
{
    double sum = 0;

    memset(grad, 0, r->model->layout.n * sizeof(float));
    for (int i = 0; i < pb->n; i++) {
        size_t off = (size_t)i * pb->B;
        struct sgbd_batch b = {pb->rows[i], pb->users + off, pb->pos + off,
                               pb->neg + off};
        sum += r->ops->loss_grad(r->model, theta, grad, &b);
    }
    return sum / pb->n;
}

/* Scale each tensor of d to the norm of the same tensor of theta (the
 * "filter normalisation" of Li et al., 2018), so a step t moves every
 * tensor by t times its own size and models of any scale compare. */
static void normalise_direction(const struct sgbd_params *p,
                                const float *theta, float *d)
{
    for (int k = 0; k < p->n_tensors; k++) {
        const struct sgbd_tensor *t = &p->t[k];
        size_t n = t->rows * t->cols;
        double nt = sqrt(sgbd_mat_dot(n, theta + t->offset,
                                      theta + t->offset));
        double nd = sqrt(sgbd_mat_dot(n, d + t->offset, d + t->offset));
        sgbd_mat_scale(n, nd > 0 ? (float)(nt / nd) : 0.0f, d + t->offset);
    }
}

static int landscape_curves(struct run *r, const struct probe_batches *pb,
                            const struct sgbd_landscape_opts *o,
                            struct sgbd_landscape_curve *out)
{
    size_t n = r->model->layout.n;
    float *dir = sgbd_params_alloc_arena(&r->model->layout);
    float *grad = sgbd_params_alloc_arena(&r->model->layout);
    float *point = sgbd_params_alloc_arena(&r->model->layout);
    struct sgbd_rng rng;
    int rc = 0;

    if (!dir || !grad || !point) {
        rc = -ENOMEM;
        goto out;
    }
    out->n = o->steps;
    out->center = probe_loss(r, pb, r->theta, grad);
    for (int which = 0; which < 2; which++) {
        double *curve = which == 0 ? out->random : out->gradient;
        double *sharp = which == 0 ? &out->sharpness_random
                                   : &out->sharpness_gradient;
        if (which == 0) {
            sgbd_rng_init(&rng, o->seed, SGBD_RNG_PROBE);
            for (size_t i = 0; i < n; i++)
                dir[i] = (float)sgbd_rng_normal(&rng);
        } else {
            probe_loss(r, pb, r->theta, dir); /* gradient direction */
        }
        normalise_direction(&r->model->layout, r->theta, dir);
        *sharp = 0;
        for (int s = 0; s < o->steps; s++) {
            double t = -o->radius + 2 * o->radius * s / (o->steps - 1);
            memcpy(point, r->theta, n * sizeof(float));
            sgbd_mat_axpy(n, (float)t, dir, point);
            out->t[s] = t;
            curve[s] = probe_loss(r, pb, point, grad);
            if (!isfinite(curve[s]))
                curve[s] = NAN;
            else if (curve[s] - out->center > *sharp)
                *sharp = curve[s] - out->center;
        }
    }
out:
    sgbd_params_free_arena(point);
    sgbd_params_free_arena(grad);
    sgbd_params_free_arena(dir);
    return rc;
}

void sgbd_landscape_opts_defaults(struct sgbd_landscape_opts *o)
{
    o->steps = 21;
    o->radius = 0.5;
    o->n_batches = 8;
    o->seed = 999;
}

int sgbd_train_job_landscape(struct sgbd_train_job *job,
                             const struct sgbd_landscape_opts *o,
                             struct sgbd_landscape_curve *out)
{
    struct sgbd_checkpoint_info info;
    struct probe_batches pb = {0};
    struct sgbd_rng rng;
    struct run r;
    int rc;

    if (o->steps < 3 || o->steps > SGBD_LANDSCAPE_MAX_STEPS ||
        o->n_batches < 1 || o->n_batches > SGBD_LANDSCAPE_MAX_BATCHES ||
        !(o->radius > 0))
        return sgbd_errf(SGBD_E_USAGE, "landscape: steps 3..%d, batches "
                         "1..%d, radius > 0", SGBD_LANDSCAPE_MAX_STEPS,
                         SGBD_LANDSCAPE_MAX_BATCHES);
    memset(out, 0, sizeof(*out));
    memset(&r, 0, sizeof(r));
    r.job = job;
    rc = load_saved(&r, &info);
    if (rc == 0 && r.ops->pre_epoch) {
        /* Per-epoch graphs (user neighbours, pruned edges), fixed once. */
        sgbd_rng_init(&rng, o->seed, SGBD_RNG_GRAPH);
        rc = r.ops->pre_epoch(r.model, r.theta, &rng);
    }
    if (rc == 0)
        rc = probe_batches_draw(&pb, &r, o->n_batches, o->seed);
    if (rc == 0)
        rc = landscape_curves(&r, &pb, o, out);
    snprintf(out->model, sizeof(out->model), "%s", info.model);
    snprintf(out->optimizer, sizeof(out->optimizer), "%s", info.optimizer);
    probe_batches_free(&pb);
    teardown(&r);
    return rc;
}

void sgbd_train_report_free(struct sgbd_train_report *rep)
{
    free(rep->points);
    rep->points = NULL;
    rep->n_points = 0;
}
