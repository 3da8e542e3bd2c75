/* test_bench_retrain.c - online retraining figures (issue #6). */
/* ctest: labels=bench timeout=3600 */
/*
 * Not a correctness test: reports "bench ..." lines on stdout.
 *
 * 1. Retrain duration at Baby size: baby.inter with two synthetic 512-d
 *    channels (image, text; synth --features-only) imported into a
 *    store; a first model (one cold epoch, only so that there is a model
 *    to warm-start from), then 1% more interactions and 20 new items,
 *    and one warm retrain of SGBD_BENCH_EPOCHS (5) epochs of sgbd with
 *    SGBD_BENCH_MODEL (dragon) on SGBD_BENCH_THREADS (1) maths threads,
 *    feature projections in bfloat16 with SGBD_BENCH_BF16=1 (0):
 *    the whole job (read, model, epochs, gate, checkpoint, publish) and
 *    the process's peak RSS.
 *
 * 2. The information-adjustment experiment on scientific: for each of
 *    adam, mg and sgbd, a first model trained from the imported store
 *    (stored MMRec split, early stopping on valid, patience 20, up to
 *    SGBD_BENCH_IA_EPOCHS (300) epochs); then the features of 10% of the
 *    items are replaced - "noise": x + N(0, s^2) with s the channel's
 *    standard deviation; "swap": another random item's vectors - and
 *    posted as item updates (store upsert, overlay edit, notify) as the
 *    write path does; then one online retrain with the same optimiser.
 *    Reported: test recall@20 / ndcg@20 of the first model, of the served
 *    view after the updates (overlay cold-start vectors, no retrain), and
 *    of the retrained model, with the gate's verdict; SGBD_BENCH_SEEDS
 *    (1) seeds of model.seed and of the perturbation, with means and
 *    standard deviations over them.
 *
 * Skips without ../shared/data/baby (or scientific). Run alone:
 *     ctest -L bench -R bench_retrain --output-on-failure -V
 */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/cli.h"
#include "sgbd/config.h"
#include "sgbd/err.h"
#include "sgbd/holdout.h"
#include "sgbd/inter.h"
#include "sgbd/log.h"
#include "sgbd/metrics.h"
#include "sgbd/overlay.h"
#include "sgbd/retrain.h"
#include "sgbd/rng.h"
#include "sgbd/snapshot.h"
#include "sgbd/store.h"
#include "sgbd/synth.h"

static char root[] = "/tmp/sgbd-bench-retrain-XXXXXX";

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);

    return v && *v ? atoi(v) : def;
}

static const char *env_str(const char *name, const char *def)
{
    const char *v = getenv(name);

    return v && *v ? v : def;
}

static double rss_mb(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int import_dir(const char *dir, const char *db)
{
    char *argv[] = {"import", "--data", (char *)dir, "--db", (char *)db,
                    "--quiet", "--json", NULL};
    int rc;

    rc = sgbd_cli_import(7, argv);
    fflush(stdout);
    return rc;
}

static int open_store(const char *db, struct sgbd_store **s)
{
    struct sgbd_store_opts o;

    sgbd_store_opts_defaults(&o);
    o.map_size = (size_t)2 << 30;
    return sgbd_store_open(s, db, &o);
}

/* One trigger, one job; the status of it. */
static int run_job(struct sgbd_retrain *rt, struct sgbd_retrain_status *st)
{
    uint64_t done = sgbd_retrain_jobs(rt);
    int rc = sgbd_retrain_trigger(rt, "bench");

    if (rc == 0)
        rc = sgbd_retrain_wait(rt, done + 1, 3000);
    sgbd_retrain_status(rt, st);
    return rc;
}

/* ---- 1. Baby-size duration ---- */

static int baby_dir(const char *baby, char *dir, size_t n, uint32_t *items)
{
    struct sgbd_synth_params p;
    struct sgbd_inter rows = {0};
    char inter[4096], link[4200];
    int rc;

    snprintf(inter, sizeof(inter), "%s/baby.inter", baby);
    rc = sgbd_inter_read(&rows, inter, NULL);
    if (rc < 0)
        return rc;
    *items = 0;
    for (size_t r = 0; r < rows.n; r++)
        if (rows.items[r] >= *items)
            *items = rows.items[r] + 1;
    sgbd_inter_free(&rows);
    snprintf(dir, n, "%s/baby", root);
    sgbd_synth_defaults(&p);
    p.features_only = 1;
    p.n_items = *items;
    p.dim_image = 512;
    p.dim_text = 512;
    rc = sgbd_synth_write(dir, &p);
    snprintf(link, sizeof(link), "%s/baby.inter", dir);
    if (rc == 0 && symlink(inter, link) < 0)
        rc = -errno;
    return rc;
}

/* 1% more interactions and 20 new items with features, written as the
 * write path would, then notified. */
static int add_updates(struct sgbd_store *s, struct sgbd_retrain *rt,
                       struct sgbd_snapshot_slot *slot, uint32_t users,
                       uint32_t items, size_t n_events)
{
    struct sgbd_store_event *ev = calloc(n_events, sizeof(*ev));
    char (*names)[2][16] = calloc(n_events, sizeof(*names));
    float *v = calloc(2 * 512, sizeof(float));
    struct sgbd_store_feature f[2] = {{"image", v, 512},
                                      {"text", v + 512, 512}};
    struct sgbd_store_item it[20];
    char ids[20][16];
    struct sgbd_rng rng;
    int rc = -ENOMEM;

    if (!ev || !names || !v)
        goto out;
    sgbd_rng_init(&rng, 5, SGBD_RNG_SYNTH);
    for (int k = 0; k < 1024; k++)
        v[k] = (float)sgbd_rng_normal(&rng);
    for (int k = 0; k < 20; k++) {
        snprintf(ids[k], sizeof(ids[k]), "new%d", k);
        it[k] = (struct sgbd_store_item){ids[k], 2, f, NULL, 0};
    }
    for (size_t k = 0; k < n_events; k++) {
        snprintf(names[k][0], 16, "%u", (uint32_t)sgbd_rng_below(&rng, users));
        snprintf(names[k][1], 16, "%u", (uint32_t)sgbd_rng_below(&rng, items));
        ev[k] = (struct sgbd_store_event){names[k][0], names[k][1],
                                          1000000 + (int64_t)k, 1.0f, 0,
                                          SGBD_LABEL_TRAIN};
    }
    rc = sgbd_store_items_upsert(s, it, 20, NULL);
    if (rc == 0)
        rc = sgbd_store_interactions_append(s, ev, n_events, NULL, NULL);
    if (rc == 0)
        sgbd_retrain_notify(rt, 20, n_events,
                            sgbd_snapshot_slot_next_seq(slot));
out:
    free(v), free(names), free(ev);
    return rc;
}

static void test_retrain_bench_baby_duration(void)
{
    char buf[4096], dir[4096], db[4200];
    const char *baby = harness_data_dir("baby", buf, sizeof(buf));
    struct sgbd_snapshot_slot *slot = NULL;
    struct sgbd_retrain *rt = NULL;
    struct sgbd_retrain_status st;
    struct sgbd_store_counts c;
    struct sgbd_store *s = NULL;
    struct sgbd_config cfg;
    struct sgbd_retrain_opts o;
    uint32_t items;
    double t0, first_s;
    long live, bytes;

    if (!baby)
        SKIP("no ../shared/data/baby");
    CHECK_INT(baby_dir(baby, dir, sizeof(dir), &items), 0);
    snprintf(db, sizeof(db), "%s/baby-db", root);
    t0 = now_s();
    CHECK_INT(import_dir(dir, db), 0);
    printf("bench retrain_import baby items=%u s=%.1f\n", items,
           now_s() - t0);

    sgbd_config_defaults(&cfg);
    snprintf(cfg.model, sizeof(cfg.model), "%s",
             env_str("SGBD_BENCH_MODEL", "dragon"));
    cfg.retrain_enabled = 0;
    cfg.retrain_epochs = env_int("SGBD_BENCH_EPOCHS", 5);
    cfg.retrain_initial_epochs = 1;
    cfg.retrain_threads = env_int("SGBD_BENCH_THREADS", 1);
    cfg.bf16_features = env_int("SGBD_BENCH_BF16", 0);
    cfg.retrain_tolerance = 1.0;         /* time the whole path */
    CHECK_INT(open_store(db, &s), 0);
    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    o = (struct sgbd_retrain_opts){&cfg, s, slot, NULL, NULL};
    CHECK_INT(sgbd_retrain_new(&rt, &o), 0);

    t0 = now_s();
    CHECK_INT(run_job(rt, &st), 0);
    first_s = now_s() - t0;
    CHECK_STR(st.last_outcome, "published");
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(add_updates(s, rt, slot, (uint32_t)c.users, items,
                          (size_t)c.interactions / 100), 0);
    t0 = now_s();
    CHECK_INT(run_job(rt, &st), 0);
    CHECK_STR(st.last_outcome, "published");
    sgbd_snapshot_live(&live, &bytes);
    printf("bench retrain_warm baby model=%s optimizer=sgbd epochs=%d "
           "threads=%d bf16_features=%d users=%llu items=%llu s=%.1f job_s=%.1f "
           "first_model_s=%.1f peak_rss_mb=%.0f snapshots=%ld "
           "snapshot_mb=%.1f\n", cfg.model, cfg.retrain_epochs,
           cfg.retrain_threads, cfg.bf16_features, (unsigned long long)c.users,
           (unsigned long long)c.items + 20, now_s() - t0, st.last_duration_s,
           first_s, rss_mb(), live, (double)bytes / 1e6);
    fflush(stdout);
    sgbd_retrain_free(rt);
    sgbd_snapshot_slot_free(slot);
    sgbd_store_close(s);
}

/* ---- 2. information adjustment on scientific ---- */

struct ia {
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_retrain *rt;
    struct sgbd_dataset ds;         /* stored split: train mask, test */
    struct sgbd_holdout_data data;  /* the imported store, features */
};

/* Test recall@20, ndcg@20 of what the slot serves now: snapshot users,
 * and for items the overlay vector when there is one (as serving does). */
static int served_quality(struct ia *x, double *recall, double *ndcg)
{
    static const int ks[] = {20};
    struct sgbd_metrics m;
    struct sgbd_mat items;
    struct sgbd_view v;
    int rc;

    sgbd_snapshot_acquire(x->slot, &v);
    rc = sgbd_mat_alloc(&items, v.snap->n_items, v.snap->dim);
    for (uint32_t i = 0; rc == 0 && i < v.snap->n_items; i++) {
        const char *id = sgbd_snapshot_item_id(v.snap, i);
        const struct sgbd_overlay_item *e =
            sgbd_overlay_find_item(v.ov, id, strlen(id));
        memcpy(sgbd_mat_row(items, i),
               e && e->vec ? e->vec : v.snap->items + (size_t)i * v.snap->dim,
               v.snap->dim * sizeof(float));
    }
    if (rc == 0)
        rc = sgbd_metrics_eval(&m, sgbd_mat_view(v.snap->users,
                                                 v.snap->n_users,
                                                 v.snap->dim),
                               items, &x->ds.train, &x->ds.test, ks, 1);
    if (rc == 0) {
        *recall = m.recall[0];
        *ndcg = m.ndcg[0];
    }
    sgbd_mat_release(&items);
    sgbd_snapshot_release(&v);
    return rc;
}

/* Channel standard deviation over all values. */
static double channel_std(const struct sgbd_mat *m)
{
    double s = 0, s2 = 0, n = (double)m->rows * (double)m->cols;

    for (size_t r = 0; r < m->rows; r++)
        for (size_t c = 0; c < m->cols; c++) {
            double x = sgbd_mat_row(*m, r)[c];
            s += x, s2 += x * x;
        }
    return sqrt(fmax(s2 / n - (s / n) * (s / n), 0));
}

/* Replace the features of 10% of the items and post them as updates. */
static int perturb(struct ia *x, const char *kind, uint64_t seed)
{
    const struct sgbd_features *f = &x->data.feat;
    uint32_t I = x->data.n_items, n = I / 10;
    uint32_t *perm = malloc(I * sizeof(uint32_t));
    float *buf = NULL;
    struct sgbd_rng rng;
    size_t width = 0;
    int rc = perm ? 0 : -ENOMEM;

    for (int c = 0; c < f->n; c++)
        width += f->ch[c].m.cols;
    buf = malloc(width * sizeof(float));
    if (!buf)
        rc = -ENOMEM;
    sgbd_rng_init(&rng, seed, SGBD_RNG_NOISE);
    for (uint32_t i = 0; rc == 0 && i < I; i++)
        perm[i] = i;
    if (rc == 0)
        sgbd_rng_shuffle_u32(&rng, perm, I);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        uint32_t i = perm[k], other = perm[n + (k * 7919u) % (I - n)];
        struct sgbd_store_feature sf[SGBD_MAX_CHANNELS];
        struct sgbd_item_features of;
        struct sgbd_store_item it = {x->data.item_ids[i], f->n, sf, NULL, 0};
        struct sgbd_overlay_edit ed;
        float *p = buf;

        memset(&of, 0, sizeof(of));
        of.n = f->n;
        for (int c = 0; c < f->n; c++) {
            const struct sgbd_mat *m = &f->ch[c].m;
            double sd = channel_std(m);
            for (size_t d = 0; d < m->cols; d++)
                p[d] = strcmp(kind, "swap") == 0
                           ? sgbd_mat_row(*m, other)[d]
                           : sgbd_mat_row(*m, i)[d] +
                                 (float)(sd * sgbd_rng_normal(&rng));
            sf[c] = (struct sgbd_store_feature){f->ch[c].name, p,
                                                (uint32_t)m->cols};
            of.ch[c] = (struct sgbd_item_channel){"", m->cols, p};
            snprintf(of.ch[c].name, SGBD_CHANNEL_NAME, "%s", f->ch[c].name);
            p += m->cols;
        }
        rc = sgbd_store_items_upsert(x->store, &it, 1, NULL);
        ed = (struct sgbd_overlay_edit){SGBD_OVERLAY_PUT_ITEM,
                                        sgbd_snapshot_slot_next_seq(x->slot),
                                        x->data.item_ids[i], NULL, &of};
        if (rc == 0)
            rc = sgbd_snapshot_apply(x->slot, &ed, 1);
        sgbd_retrain_notify(x->rt, 1, 0, ed.seq);
    }
    free(buf);
    free(perm);
    return rc;
}

static int ia_open(struct ia *x, const char *sci, const char *opt,
                   const char *kind, struct sgbd_config *cfg)
{
    struct sgbd_retrain_opts o;
    struct sgbd_holdout_opts ho;
    char db[4200];
    int rc;

    memset(x, 0, sizeof(*x));
    snprintf(db, sizeof(db), "%s/sci-%s-%s", root, opt, kind);
    rc = import_dir(sci, db);
    if (rc == 0)
        rc = open_store(db, &x->store);
    if (rc == 0)
        rc = sgbd_holdout_read(x->store, 1, &x->data);
    ho = (struct sgbd_holdout_opts){x->data.n_users, x->data.n_items,
                                    UINT64_MAX, 0};
    if (rc == 0)
        rc = sgbd_holdout_build(&x->ds, x->data.events, x->data.n_events,
                                &ho, NULL);
    if (rc == 0)
        rc = sgbd_snapshot_slot_new(&x->slot);
    o = (struct sgbd_retrain_opts){cfg, x->store, x->slot, NULL, NULL};
    if (rc == 0)
        rc = sgbd_retrain_new(&x->rt, &o);
    return rc;
}

static void ia_close(struct ia *x)
{
    sgbd_retrain_free(x->rt);
    sgbd_snapshot_slot_free(x->slot);
    sgbd_dataset_free(&x->ds);
    sgbd_holdout_data_free(&x->data);
    sgbd_store_close(x->store);
}

/* One (optimiser, perturbation, seed) run: q gets test recall@20 and
 * ndcg@20 of the first model, after the updates, after the retrain. */
static int ia_run(const char *sci, const char *model, const char *opt,
                  const char *kind, int seed, double q[6])
{
    struct sgbd_retrain_status st;
    struct sgbd_config cfg;
    char name[64];
    struct ia x;
    double t0, first_s;
    int rc;

    sgbd_config_defaults(&cfg);
    snprintf(cfg.model, sizeof(cfg.model), "%s", model);
    snprintf(cfg.optimizer, sizeof(cfg.optimizer), "%s", opt);
    cfg.seed = 999 + seed;
    cfg.retrain_enabled = 0;
    cfg.retrain_initial_epochs = env_int("SGBD_BENCH_IA_EPOCHS", 300);
    cfg.retrain_threads = env_int("SGBD_BENCH_THREADS", 1);
    cfg.bf16_features = env_int("SGBD_BENCH_BF16", 0);
    snprintf(name, sizeof(name), "%s-%d", kind, seed);
    rc = ia_open(&x, sci, opt, name, &cfg);
    t0 = now_s();
    if (rc == 0)
        rc = run_job(x.rt, &st);
    first_s = now_s() - t0;
    if (rc == 0 && strcmp(st.last_outcome, "published") != 0)
        rc = sgbd_errf(SGBD_E_REJECTED, "first model: %s", st.message);
    if (rc == 0)
        rc = served_quality(&x, &q[0], &q[1]);
    if (rc == 0)
        rc = perturb(&x, kind, 42 + (uint64_t)seed);
    if (rc == 0)
        rc = served_quality(&x, &q[2], &q[3]);
    t0 = now_s();
    if (rc == 0)
        rc = run_job(x.rt, &st);
    if (rc == 0)
        rc = served_quality(&x, &q[4], &q[5]);
    if (rc == 0)
        printf("bench retrain_info_adjust model=%s optimizer=%s perturb=%s "
               "seed=%d items=%u first: recall@20=%.4f ndcg@20=%.4f (%.0f s) "
               "updated, no retrain: recall@20=%.4f ndcg@20=%.4f retrained "
               "(%s, %.1f s): recall@20=%.4f ndcg@20=%.4f\n", model, opt,
               kind, seed, x.data.n_items / 10, q[0], q[1], first_s, q[2],
               q[3], st.last_outcome, now_s() - t0, q[4], q[5]);
    fflush(stdout);
    ia_close(&x);
    return rc;
}

static void test_retrain_bench_information_adjustment(void)
{
    static const char *opts[] = {"adam", "mg", "sgbd"};
    static const char *kinds[] = {"noise", "swap"};
    static const char *stage[] = {"first", "updated", "retrained"};
    char buf[4096];
    const char *sci = harness_data_dir("scientific", buf, sizeof(buf));
    const char *model = env_str("SGBD_BENCH_IA_MODEL", "vbpr");
    int seeds = env_int("SGBD_BENCH_SEEDS", 1);

    if (!sci)
        SKIP("no ../shared/data/scientific");
    for (int k = 0; k < 2; k++) {
        for (int o = 0; o < 3; o++) {
            double sum[6] = {0}, sq[6] = {0}, q[6];
            for (int seed = 0; seed < seeds; seed++) {
                CHECK_INT(ia_run(sci, model, opts[o], kinds[k], seed, q), 0);
                for (int m = 0; m < 6; m++)
                    sum[m] += q[m], sq[m] += q[m] * q[m];
            }
            for (int st = 0; st < 3; st++) {
                double mr = sum[2 * st] / seeds, mn = sum[2 * st + 1] / seeds;
                printf("bench retrain_info_adjust_mean model=%s optimizer=%s "
                       "perturb=%s seeds=%d stage=%s recall@20=%.4f "
                       "(sd %.4f) ndcg@20=%.4f (sd %.4f)\n", model, opts[o],
                       kinds[k], seeds, stage[st], mr,
                       sqrt(fmax(sq[2 * st] / seeds - mr * mr, 0)), mn,
                       sqrt(fmax(sq[2 * st + 1] / seeds - mn * mn, 0)));
            }
            fflush(stdout);
        }
    }
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    sgbd_log_level = getenv("SGBD_TEST_LOG") ? SGBD_LOG_INFO
                                              : SGBD_LOG_WARNING;
    if (!getenv("SGBD_BENCH_ONLY") || strcmp(getenv("SGBD_BENCH_ONLY"),
                                             "ia") != 0)
        RUN(test_retrain_bench_baby_duration);
    if (!getenv("SGBD_BENCH_ONLY") || strcmp(getenv("SGBD_BENCH_ONLY"),
                                             "baby") != 0)
        RUN(test_retrain_bench_information_adjustment);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return harness_finish();
}
