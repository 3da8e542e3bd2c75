/* test_trainer.c - the MMRec epoch loop and early stopping, on a toy
 * matrix-factorisation model that implements model.h. */
/* ctest: labels=unit timeout=120 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "harness.h"
#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/trainer.h"

/* ---- toy dataset: 3 taste groups, users like items of their group ---- */

enum { U = 30, I = 36, D = 8, ROWS_PER_USER = 6 };

struct toy_data {
    struct sgbd_dataset ds;
    uint32_t users[U * ROWS_PER_USER], items[U * ROWS_PER_USER];
    uint64_t ptr[U + 1];
    uint32_t set[U * ROWS_PER_USER];
    uint32_t neg[I];
};

/* User u takes items u%3, u%3 + 3, ... (rows_per_user of its group's 12
 * items, starting at an offset), so BPR can learn the groups. */
static void toy_data_init(struct toy_data *t)
{
    size_t r = 0;

    memset(t, 0, sizeof(*t));
    for (uint32_t u = 0; u < U; u++) {
        t->ptr[u] = r;
        for (uint32_t k = 0; k < ROWS_PER_USER; k++, r++) {
            t->users[r] = u;
            t->items[r] = u % 3 + 3 * ((u / 3 + k) % 12);
            t->set[r] = t->items[r];
        }
        /* sort the user's set (rows are distinct within a user) */
        for (size_t a = t->ptr[u]; a < r; a++)
            for (size_t b = a + 1; b < r; b++)
                if (t->set[b] < t->set[a]) {
                    uint32_t x = t->set[a];
                    t->set[a] = t->set[b];
                    t->set[b] = x;
                }
    }
    t->ptr[U] = r;
    for (uint32_t i = 0; i < I; i++)
        t->neg[i] = i;
    t->ds.n_users = U;
    t->ds.n_items = I;
    t->ds.n_train = r;
    t->ds.train_users = t->users;
    t->ds.train_items = t->items;
    t->ds.train.ptr = t->ptr;
    t->ds.train.items = t->set;
    t->ds.neg_items = t->neg;
    t->ds.n_neg_items = I;
}

/* ---- toy model: dot-product MF with the LightGCN-style BPR loss ------ */

struct mf {
    struct sgbd_model base;
    int pre_epochs;             /* pre_epoch calls */
    int nan_after;              /* loss_grad calls before NaN; 0 never */
    int fail_rc;                /* the error that NaN reports; 0 none */
    int calls;
};

static int mf_pre_epoch(struct sgbd_model *m, const float *theta,
                        struct sgbd_rng *rng)
{
    ((struct mf *)m)->pre_epochs++;
    return 0;
}

static double mf_loss_grad(struct sgbd_model *m, const float *theta,
                           float *grad, const struct sgbd_batch *b)
{
    struct mf *mf = (struct mf *)m;
    const struct sgbd_params *p = &m->layout;
    const float *ue = theta + p->t[0].offset, *ie = theta + p->t[1].offset;
    float *gu = grad + p->t[0].offset, *gi = grad + p->t[1].offset;
    float x[64], dx[64] = {0};

    if (mf->nan_after && ++mf->calls > mf->nan_after) {
        m->error = mf->fail_rc;
        return NAN;
    }
    if (b->n > 64)
        return NAN;
    for (size_t k = 0; k < b->n; k++) {
        const float *u = ue + b->users[k] * D, *pi = ie + b->pos[k] * D;
        const float *ni = ie + b->neg[k] * D;
        double s = 0;
        for (int d = 0; d < D; d++)
            s += (double)u[d] * (pi[d] - ni[d]);
        x[k] = (float)s;
    }
    double loss = sgbd_bpr_loss_ln(b->n, x, dx, 1.0);
    for (size_t k = 0; k < b->n; k++) {
        const float *u = ue + b->users[k] * D, *pi = ie + b->pos[k] * D;
        const float *ni = ie + b->neg[k] * D;
        for (int d = 0; d < D; d++) {
            gu[b->users[k] * D + d] += dx[k] * (pi[d] - ni[d]);
            gi[b->pos[k] * D + d] += dx[k] * u[d];
            gi[b->neg[k] * D + d] -= dx[k] * u[d];
        }
    }
    return loss;
}

static const struct sgbd_model_ops mf_ops = {
    .name = "toy_mf",
    .pre_epoch = mf_pre_epoch,
    .loss_grad = mf_loss_grad,
};

static float *mf_init(struct mf *mf, uint64_t seed)
{
    struct sgbd_rng rng;

    memset(mf, 0, sizeof(*mf));
    mf->base.ops = &mf_ops;
    mf->base.n_users = U;
    mf->base.n_items = I;
    mf->base.dim = D;
    if (sgbd_params_add(&mf->base.layout, "user_emb", U, D,
                        SGBD_INIT_XAVIER_UNIFORM, 0, 0) != 0 ||
        sgbd_params_add(&mf->base.layout, "item_emb", I, D,
                        SGBD_INIT_XAVIER_UNIFORM, 0, 0) != 1)
        return NULL;
    float *theta = sgbd_params_alloc_arena(&mf->base.layout);
    if (!theta)
        return NULL;
    sgbd_rng_init(&rng, seed, SGBD_RNG_INIT);
    sgbd_params_init(&mf->base.layout, theta, &rng);
    return theta;
}

/* ---- evaluation callbacks -------------------------------------------- */

enum { MAX_EPOCHS = 64 };

/* Returns scripted valid scores and keeps a copy of theta per epoch. */
struct script {
    const double *scores;
    int n_scores;
    int epoch;
    size_t n;
    float *snap[MAX_EPOCHS];
};

static int script_eval(void *ctx, const float *theta,
                       struct sgbd_epoch_eval *out)
{
    struct script *s = ctx;
    int e = s->epoch++;

    if (e >= MAX_EPOCHS)
        return SGBD_E_LIMIT;
    s->snap[e] = malloc(s->n * sizeof(float));
    if (!s->snap[e])
        return -12;
    memcpy(s->snap[e], theta, s->n * sizeof(float));
    out->score = e < s->n_scores ? s->scores[e] : s->scores[s->n_scores - 1];
    out->n = 1;
    strcpy(out->v[0].name, "recall@20");
    out->v[0].valid = out->score;
    out->v[0].test = 1000 + e; /* tells which epoch was recorded */
    return 0;
}

static void script_free(struct script *s)
{
    for (int e = 0; e < MAX_EPOCHS; e++)
        free(s->snap[e]);
}

/* Pairwise ranking accuracy on training pairs: does the model rank each
 * user's positives over the items of other groups? */
static int auc_eval(void *ctx, const float *theta,
                    struct sgbd_epoch_eval *out)
{
    const struct mf *mf = ctx;
    const float *ue = theta + mf->base.layout.t[0].offset;
    const float *ie = theta + mf->base.layout.t[1].offset;
    long good = 0, all = 0;

    for (uint32_t u = 0; u < U; u++)
        for (uint32_t i = 0; i < I; i++)
            for (uint32_t j = 0; j < I; j++) {
                if (i % 3 != u % 3 || j % 3 == u % 3)
                    continue;
                double si = 0, sj = 0;
                for (int d = 0; d < D; d++) {
                    si += ue[u * D + d] * ie[i * D + d];
                    sj += ue[u * D + d] * ie[j * D + d];
                }
                good += si > sj;
                all++;
            }
    out->score = (double)good / (double)all;
    return 0;
}

/* Progress: records each epoch's facts, can set the cancel flag. */
struct progress {
    int calls;
    struct sgbd_epoch_info last, first;
    double losses[MAX_EPOCHS];
    atomic_int *cancel;
    int cancel_after;
};

static void progress_cb(void *ctx, const struct sgbd_epoch_info *e)
{
    struct progress *p = ctx;

    if (p->calls == 0)
        p->first = *e;
    if (e->epoch < MAX_EPOCHS)
        p->losses[e->epoch] = e->loss;
    p->last = *e;
    p->calls++;
    if (p->cancel && p->calls == p->cancel_after)
        atomic_store(p->cancel, 1);
}

static struct sgbd_train_opts toy_opts(void)
{
    struct sgbd_train_opts o;
    sgbd_train_opts_defaults(&o);
    o.batch_size = 64; /* 180 rows: 3 batches, the last 52 */
    o.seed = 7;
    o.step.adam.lr = 0.05;
    return o;
}

/* Train with scripted scores; fills res, returns the rc. */
static int run_script(const double *scores, int n, int patience,
                      int max_epochs, int restore, struct script *sc,
                      struct sgbd_train_result *res, float **theta_out,
                      struct mf *mf, struct toy_data *td)
{
    struct sgbd_trainer *t;
    struct sgbd_train_opts o = toy_opts();
    float *theta = mf_init(mf, 1);
    int rc;

    toy_data_init(td);
    memset(sc, 0, sizeof(*sc));
    sc->scores = scores;
    sc->n_scores = n;
    sc->n = mf->base.layout.n;
    o.stopping_step = patience;
    o.max_epochs = max_epochs;
    o.restore_best = restore;
    o.evaluate = script_eval;
    o.eval_ctx = sc;
    *theta_out = theta;
    if (!theta)
        return -12;
    rc = sgbd_trainer_new(&t, &mf->base, &td->ds, &o);
    if (rc < 0)
        return rc;
    rc = sgbd_trainer_run(t, theta, res);
    sgbd_trainer_free(t);
    return rc;
}

/* ---- cases ----------------------------------------------------------- */

static void test_trainer_round4_matches_python(void)
{
    /* values and results from Python 3's round(x, 4) */
    CHECK(sgbd_trainer_round4(0.00015) == 0.0001);
    CHECK(sgbd_trainer_round4(0.00025) == 0.0003);
    CHECK(sgbd_trainer_round4(0.12345) == 0.1235);
    CHECK(sgbd_trainer_round4(0.10005) == 0.1001);
    CHECK(sgbd_trainer_round4(0.33335) == 0.3333); /* x*1e4 = 3333.5 */
    CHECK(sgbd_trainer_round4(0.99995) == 1.0);
    CHECK(sgbd_trainer_round4(0.10004999) == 0.1);
}

static void test_trainer_loss_decreases_and_model_learns(void)
{
    struct toy_data td;
    struct mf mf;
    struct sgbd_trainer *t;
    struct sgbd_train_result res;
    struct progress pr = {0};
    struct sgbd_train_opts o = toy_opts();
    struct sgbd_epoch_eval before = {0};
    float *theta = mf_init(&mf, 1);

    CHECK(theta != NULL);
    toy_data_init(&td);
    o.max_epochs = 30;
    o.progress = progress_cb;
    o.progress_ctx = &pr;
    o.evaluate = auc_eval;
    o.eval_ctx = &mf;
    auc_eval(&mf, theta, &before);
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), 0);
    CHECK_INT(sgbd_trainer_run(t, theta, &res), 0);
    CHECK_INT(res.epochs, pr.calls);
    CHECK_INT(mf.pre_epochs, res.epochs);
    CHECK(pr.losses[res.epochs - 1] < 0.5 * pr.losses[0]);
    CHECK(res.best_score > 0.9);
    CHECK(before.score < 0.8);
    /* sgbd at beta 3 with 3 batches: 3 + 2 * 1 evaluations per epoch */
    CHECK_INT(res.grad_evals, 5 * res.epochs);
    sgbd_trainer_free(t);
    sgbd_params_free_arena(theta);
}

static void test_trainer_stops_after_patience_plus_one_bad_epochs(void)
{
    struct toy_data td;
    struct mf mf;
    struct script sc;
    struct sgbd_train_result res;
    float *theta;
    const double s[] = {0.1, 0.2, 0.2, 0.15, 0.19, 0.3};

    CHECK_INT(run_script(s, 6, 2, 50, 1, &sc, &res, &theta, &mf, &td), 0);
    /* best at epoch 1; epochs 2, 3, 4 do not improve; 3 > 2 stops */
    CHECK_INT(res.epochs, 5);
    CHECK_INT(res.best_epoch, 1);
    CHECK(res.stopped_early);
    CHECK_NEAR(res.best_score, 0.2, 0);
    CHECK_NEAR(res.best.v[0].test, 1001, 0);
    CHECK_INT(sc.epoch, 5);
    script_free(&sc);
    sgbd_params_free_arena(theta);
}

static void test_trainer_default_patience_is_21_epochs(void)
{
    struct toy_data td;
    struct mf mf;
    struct script sc;
    struct sgbd_train_result res;
    float *theta;
    const double s[] = {0.5};

    CHECK_INT(run_script(s, 1, 20, 1000, 1, &sc, &res, &theta, &mf, &td), 0);
    CHECK_INT(res.best_epoch, 0);
    CHECK_INT(res.epochs, 22); /* epoch 0, then 21 without improvement */
    script_free(&sc);
    sgbd_params_free_arena(theta);
}

/* 0.10004 rounds to 0.1000: no improvement; 0.10006 rounds to 0.1001. */
static void test_trainer_compares_rounded_scores(void)
{
    struct toy_data td;
    struct mf mf;
    struct script sc;
    struct sgbd_train_result res;
    float *theta;
    const double s[] = {0.1, 0.10004, 0.10006, 0.1, 0.10009};

    CHECK_INT(run_script(s, 5, 1, 50, 1, &sc, &res, &theta, &mf, &td), 0);
    /* e1 bad (1), e2 best, e3 bad (1), e4 0.1001 ties: bad (2) > 1 */
    CHECK_INT(res.best_epoch, 2);
    CHECK_INT(res.epochs, 5);
    CHECK(res.best_score == 0.1001);
    CHECK_NEAR(res.best.v[0].valid, 0.10006, 0); /* kept unrounded */
    script_free(&sc);
    sgbd_params_free_arena(theta);
}

static void test_trainer_keeps_best_parameters(void)
{
    struct toy_data td;
    struct mf mf;
    struct script sc;
    struct sgbd_train_result res;
    float *theta;
    const double s[] = {0.1, 0.3, 0.2, 0.2, 0.2};
    size_t bytes;

    CHECK_INT(run_script(s, 5, 2, 50, 1, &sc, &res, &theta, &mf, &td), 0);
    bytes = mf.base.layout.n * sizeof(float);
    CHECK_INT(res.best_epoch, 1);
    CHECK_INT(res.epochs, 5);
    CHECK(memcmp(theta, sc.snap[1], bytes) == 0);
    CHECK(memcmp(sc.snap[1], sc.snap[4], bytes) != 0);
    script_free(&sc);
    sgbd_params_free_arena(theta);

    /* restore_best off: theta ends at the last epoch; max_epochs bound */
    CHECK_INT(run_script(s, 5, 20, 4, 0, &sc, &res, &theta, &mf, &td), 0);
    CHECK_INT(res.epochs, 4);
    CHECK(!res.stopped_early);
    CHECK(memcmp(theta, sc.snap[3], bytes) == 0);
    script_free(&sc);
    sgbd_params_free_arena(theta);
}

static void test_trainer_is_deterministic(void)
{
    struct toy_data td;
    struct mf m1, m2;
    struct sgbd_trainer *t;
    struct sgbd_train_result r1, r2;
    struct sgbd_train_opts o = toy_opts();
    float *a = mf_init(&m1, 3), *b = mf_init(&m2, 3);

    CHECK(a && b);
    toy_data_init(&td);
    o.max_epochs = 6;
    CHECK_INT(sgbd_trainer_new(&t, &m1.base, &td.ds, &o), 0);
    CHECK_INT(sgbd_trainer_run(t, a, &r1), 0);
    sgbd_trainer_free(t);
    CHECK_INT(sgbd_trainer_new(&t, &m2.base, &td.ds, &o), 0);
    CHECK_INT(sgbd_trainer_run(t, b, &r2), 0);
    sgbd_trainer_free(t);
    CHECK(memcmp(a, b, m1.base.layout.n * sizeof(float)) == 0);
    CHECK(r1.last_loss == r2.last_loss);
    CHECK_INT(r1.best_epoch, 5); /* no evaluate: the last epoch */
    CHECK_INT(r1.epochs, 6);
    sgbd_params_free_arena(a);
    sgbd_params_free_arena(b);
}

/* A run whose loss_grad returns NaN from call nan_after + 1 on, saying
 * fail_rc: the run's code into *rc, res filled, theta checked finite
 * (the best epoch restored). */
static void run_failing(int nan_after, int fail_rc, int *rc,
                        struct sgbd_train_result *res)
{
    struct toy_data td;
    struct mf mf;
    struct sgbd_trainer *t;
    struct sgbd_train_opts o = toy_opts();
    float *theta = mf_init(&mf, 1);

    *rc = 1;
    CHECK(theta != NULL);
    toy_data_init(&td);
    mf.nan_after = nan_after;
    mf.fail_rc = fail_rc;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), 0);
    *rc = sgbd_trainer_run(t, theta, res);
    for (size_t i = 0; i < mf.base.layout.n; i++)
        CHECK(isfinite(theta[i]));
    sgbd_trainer_free(t);
    sgbd_params_free_arena(theta);
}

static void test_trainer_nan_loss_is_diverged(void)
{
    struct sgbd_train_result res;
    int rc;

    run_failing(12, 0, &rc, &res); /* 5 evaluations an epoch: epoch 2 */
    CHECK_INT(rc, SGBD_E_DIVERGED);
    CHECK(strstr(sgbd_err_detail(SGBD_E_DIVERGED), "epoch 2") != NULL);
    CHECK_INT(res.epochs, 2);
    CHECK_INT(res.best_epoch, 1);
}

/* A step that fails (an allocation, say) is that error, not divergence:
 * the retrainer counts the two differently. */
static void test_trainer_failed_step_is_its_error_not_divergence(void)
{
    struct sgbd_train_result res;
    int rc;

    run_failing(7, -ENOMEM, &rc, &res); /* epoch 1, after a whole one */
    CHECK_INT(rc, -ENOMEM);
    CHECK_INT(res.epochs, 1);
}

static void test_trainer_cancel_stops_between_batches(void)
{
    struct toy_data td;
    struct mf mf;
    struct sgbd_trainer *t;
    struct sgbd_train_result res;
    struct sgbd_train_opts o = toy_opts();
    atomic_int cancel = 0;
    struct progress pr = {.cancel = &cancel, .cancel_after = 2};
    float *theta = mf_init(&mf, 1);

    CHECK(theta != NULL);
    toy_data_init(&td);
    o.cancel = &cancel;
    o.progress = progress_cb;
    o.progress_ctx = &pr;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), 0);
    CHECK_INT(sgbd_trainer_run(t, theta, &res), SGBD_E_CANCELLED);
    CHECK_INT(res.epochs, 2);
    CHECK_INT(res.grad_evals, 10); /* not one batch of epoch 2 ran */
    sgbd_trainer_free(t);
    sgbd_params_free_arena(theta);
}

static void test_trainer_progress_reports_the_epoch(void)
{
    struct toy_data td;
    struct mf mf;
    struct script sc = {0};
    struct sgbd_trainer *t;
    struct sgbd_train_result res;
    struct sgbd_train_opts o = toy_opts();
    struct progress pr = {0};
    const double s[] = {0.25, 0.2};
    float *theta = mf_init(&mf, 1);

    CHECK(theta != NULL);
    toy_data_init(&td);
    sc.scores = s;
    sc.n_scores = 2;
    sc.n = mf.base.layout.n;
    o.max_epochs = 10;
    o.stopping_step = 3;
    o.evaluate = script_eval;
    o.eval_ctx = &sc;
    o.progress = progress_cb;
    o.progress_ctx = &pr;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), 0);
    CHECK_INT(sgbd_trainer_run(t, theta, &res), 0);
    CHECK_INT(pr.calls, 5);
    CHECK_INT(pr.first.epoch, 0);
    CHECK(pr.first.improved && pr.first.evaluated);
    CHECK_NEAR(pr.first.valid, 0.25, 0);
    CHECK_INT(pr.first.max_epochs, 10);
    CHECK(pr.first.seconds >= pr.first.train_seconds);
    CHECK(pr.first.eta_seconds > 0);
    CHECK_INT(pr.last.epoch, 4);
    CHECK_INT(pr.last.bad_epochs, 4);
    CHECK_INT(pr.last.best_epoch, 0);
    CHECK_NEAR(pr.last.best, 0.25, 0);
    CHECK(!pr.last.improved);
    CHECK_NEAR(pr.last.eta_seconds, 0, 0); /* patience spent: stops now */
    CHECK_INT(pr.last.grad_evals, 25);
    sgbd_trainer_free(t);
    script_free(&sc);
    sgbd_params_free_arena(theta);
}

static int failing_eval(void *ctx, const float *theta,
                        struct sgbd_epoch_eval *out)
{
    int *calls = ctx;
    return ++*calls == 2 ? sgbd_errf(SGBD_E_SHAPE, "eval: broken") : 0;
}

static void test_trainer_evaluate_error_stops_the_run(void)
{
    struct toy_data td;
    struct mf mf;
    struct sgbd_trainer *t;
    struct sgbd_train_result res;
    struct sgbd_train_opts o = toy_opts();
    float *theta = mf_init(&mf, 1);
    int calls = 0;

    CHECK(theta != NULL);
    toy_data_init(&td);
    o.evaluate = failing_eval;
    o.eval_ctx = &calls;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), 0);
    CHECK_INT(sgbd_trainer_run(t, theta, &res), SGBD_E_SHAPE);
    CHECK_STR(sgbd_err_detail(SGBD_E_SHAPE), "eval: broken");
    CHECK_INT(res.epochs, 2);   /* trained, then failed to evaluate */
    CHECK_INT(res.best_epoch, 0);
    CHECK(sgbd_trainer_best_theta(t) != NULL);
    sgbd_trainer_free(t);
    sgbd_params_free_arena(theta);
}

static void test_trainer_rejects_bad_setup(void)
{
    struct toy_data td;
    struct mf mf;
    struct sgbd_trainer *t = (struct sgbd_trainer *)&td;
    struct sgbd_train_opts o = toy_opts();
    float *theta = mf_init(&mf, 1);

    CHECK(theta != NULL);
    toy_data_init(&td);
    o.max_epochs = 0;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), SGBD_E_CONFIG);
    CHECK(t == NULL);
    o = toy_opts();
    o.batch_size = 0;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), SGBD_E_CONFIG);
    o = toy_opts();
    o.step.rho = -1;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), SGBD_E_CONFIG);
    o = toy_opts();
    mf.base.n_items = I + 1;
    CHECK_INT(sgbd_trainer_new(&t, &mf.base, &td.ds, &o), SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_SHAPE), "items") != NULL);
    sgbd_trainer_free(NULL);
    sgbd_params_free_arena(theta);
}

int main(void)
{
    sgbd_log_level = SGBD_LOG_WARNING; /* no train_start/done lines */
    RUN(test_trainer_round4_matches_python);
    RUN(test_trainer_loss_decreases_and_model_learns);
    RUN(test_trainer_stops_after_patience_plus_one_bad_epochs);
    RUN(test_trainer_default_patience_is_21_epochs);
    RUN(test_trainer_compares_rounded_scores);
    RUN(test_trainer_keeps_best_parameters);
    RUN(test_trainer_is_deterministic);
    RUN(test_trainer_nan_loss_is_diverged);
    RUN(test_trainer_failed_step_is_its_error_not_divergence);
    RUN(test_trainer_cancel_stops_between_batches);
    RUN(test_trainer_progress_reports_the_epoch);
    RUN(test_trainer_evaluate_error_stops_the_run);
    RUN(test_trainer_rejects_bad_setup);
    return harness_finish();
}
