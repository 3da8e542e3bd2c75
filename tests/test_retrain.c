/* test_retrain.c - the online retrainer: holdout, triggers, jobs, gate,
 * overlay re-application, rollback, restore and crashes. */
/* ctest: labels=integration,concurrency timeout=600 */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/checkpoint.h"
#include "sgbd/config.h"
#include "sgbd/err.h"
#include "sgbd/holdout.h"
#include "sgbd/log.h"
#include "sgbd/overlay.h"
#include "sgbd/retrain.h"
#include "sgbd/rng.h"
#include "sgbd/snapshot.h"
#include "sgbd/store.h"

#define N_USERS 240
#define N_ITEMS 100
#define PER_USER 12
#define CLUSTERS 5
#define WAIT_S 120.0

static char root[] = "/tmp/sgbd-test-retrain-XXXXXX";
static int db_counter;

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

/* ---- a small clustered catalogue written through the store API ---- */

static void item_name(char *buf, uint32_t i)
{
    snprintf(buf, 16, "i%u", i);
}

static void user_name(char *buf, uint32_t u)
{
    snprintf(buf, 16, "u%u", u);
}

/* Items of cluster i % CLUSTERS, features "image": a noisy one-hot. */
static int add_items(struct sgbd_store *s, uint32_t first, uint32_t n,
                     int with_features, uint64_t seed)
{
    struct sgbd_store_item *it = calloc(n, sizeof(*it));
    struct sgbd_store_feature *f = calloc(n, sizeof(*f));
    float *v = calloc((size_t)n * 8, sizeof(float));
    char (*ids)[16] = calloc(n, 16);
    struct sgbd_rng rng;
    int rc = -ENOMEM;

    if (!it || !f || !v || !ids)
        goto out;
    sgbd_rng_init(&rng, seed, SGBD_RNG_SYNTH);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = first + k;
        float *x = v + (size_t)k * 8;
        for (int d = 0; d < 8; d++)
            x[d] = (float)(0.1 * sgbd_rng_normal(&rng));
        x[i % CLUSTERS] += 1.0f;
        item_name(ids[k], i);
        it[k].id = ids[k];
        f[k] = (struct sgbd_store_feature){"image", x, 8};
        it[k].n_features = with_features ? 1 : 0;
        it[k].features = &f[k];
    }
    rc = with_features ? sgbd_store_channel_define(s, "image", 8) : 0;
    if (rc == 0)
        rc = sgbd_store_items_upsert(s, it, n, NULL);
out:
    free(ids), free(v), free(f), free(it);
    return rc;
}

/* per interactions of each user in [u0, u0 + n): 85% from the user's
 * cluster, timestamps t0, t0 + 1, ...; all live (train). */
static int add_events(struct sgbd_store *s, uint32_t u0, uint32_t n,
                      int per, int64_t t0, uint64_t seed)
{
    size_t m = (size_t)n * per;
    struct sgbd_store_event *ev = calloc(m, sizeof(*ev));
    char (*names)[2][16] = calloc(m, sizeof(*names));
    struct sgbd_rng rng;
    int rc = -ENOMEM;

    if (!ev || !names)
        goto out;
    sgbd_rng_init(&rng, seed, SGBD_RNG_SYNTH);
    for (size_t k = 0; k < m; k++) {
        uint32_t u = u0 + (uint32_t)(k / per);
        uint32_t c = sgbd_rng_uniform(&rng) < 0.85 ? u % CLUSTERS
                         : (uint32_t)sgbd_rng_below(&rng, CLUSTERS);
        uint32_t i = c + CLUSTERS * (uint32_t)sgbd_rng_below(&rng,
                                                     N_ITEMS / CLUSTERS);
        user_name(names[k][0], u);
        item_name(names[k][1], i);
        ev[k] = (struct sgbd_store_event){names[k][0], names[k][1],
                                          t0 + (int64_t)(k % per), 1.0f, 0,
                                          SGBD_LABEL_TRAIN};
    }
    rc = sgbd_store_interactions_append(s, ev, m, NULL, NULL);
out:
    free(names), free(ev);
    return rc;
}

/* ---- fixture: store, slot, retrainer ---- */

struct fx {
    char db[400];
    struct sgbd_config cfg;
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_retrain *rt;
    sgbd_retrain_point_fn point;
    void *point_ctx;
};

static void fx_config(struct sgbd_config *c)
{
    sgbd_config_defaults(c);
    snprintf(c->model, sizeof(c->model), "lightgcn");
    c->embedding_size = 16;
    c->batch_size = 256;
    c->learning_rate = 0.01;
    c->retrain_epochs = 5;
    c->retrain_initial_epochs = 40;
    c->stopping_step = 5;
    c->retrain_min_interactions = 10;
    c->retrain_min_item_updates = 5;
    c->retrain_debounce_s = 0;
    c->retrain_min_interval_s = 0;
    /* One held-out item per user over a few hundred users: two equally
     * good models differ by about 0.03 in recall@20, so only the gate
     * test uses a tight tolerance. */
    c->retrain_tolerance = 0.2;
    c->retrain_threads = 1;
    c->retrain_nice = 0;
    c->keep_checkpoints = 10;
    snprintf(c->topk, sizeof(c->topk), "10,20");
}

static int fx_open_store(struct fx *f)
{
    struct sgbd_store_opts o;

    sgbd_store_opts_defaults(&o);
    o.map_size = 64 << 20;
    return sgbd_store_open(&f->store, f->db, &o);
}

static int fx_start(struct fx *f)
{
    struct sgbd_retrain_opts o = {&f->cfg, f->store, NULL, f->point,
                                  f->point_ctx};
    int rc = sgbd_snapshot_slot_new(&f->slot);

    o.slot = f->slot;
    return rc ? rc : sgbd_retrain_new(&f->rt, &o);
}

/* A fresh store (with the catalogue and events when populated). */
static int fx_init(struct fx *f, int populated, int with_features)
{
    int rc;

    memset(f, 0, sizeof(*f));
    fx_config(&f->cfg);
    snprintf(f->db, sizeof(f->db), "%s/db%d", root, db_counter++);
    rc = fx_open_store(f);
    if (rc == 0 && populated)
        rc = add_items(f->store, 0, N_ITEMS, with_features, 7);
    if (rc == 0 && populated)
        rc = add_events(f->store, 0, N_USERS, PER_USER, 0, 11);
    return rc;
}

static void fx_stop(struct fx *f)
{
    sgbd_retrain_free(f->rt);
    sgbd_snapshot_slot_free(f->slot);
    f->rt = NULL;
    f->slot = NULL;
}

static void fx_free(struct fx *f)
{
    fx_stop(f);
    sgbd_store_close(f->store);
    f->store = NULL;
}

static uint64_t served_version(struct sgbd_snapshot_slot *slot)
{
    struct sgbd_view v;
    uint64_t ver;

    sgbd_snapshot_acquire(slot, &v);
    ver = v.version;
    sgbd_snapshot_release(&v);
    return ver;
}

/* Trigger one job and wait for it; returns its outcome. */
static const char *run_one(struct fx *f)
{
    static struct sgbd_retrain_status st;
    uint64_t done = sgbd_retrain_jobs(f->rt);

    if (sgbd_retrain_trigger(f->rt, "test") != 0)
        return "trigger-failed";
    if (sgbd_retrain_wait(f->rt, done + 1, WAIT_S) != 0)
        return "timeout";
    sgbd_retrain_status(f->rt, &st);
    if (strcmp(st.last_outcome, "published") != 0)
        fprintf(stderr, "  job: %s: %s\n", st.last_outcome, st.message);
    return st.last_outcome;
}

/* ---- holdout ---- */

static void test_retrain_holdout_latest_per_user(void)
{
    /* u0: three live events, latest (ts 9) item 2 held out;
     * u1: two events, below min_train 3: kept;
     * u2: stored valid -> no live holdout; a stored test too;
     * u3: latest item repeats an earlier one: both rows held out. */
    struct sgbd_holdout_event ev[] = {
        {1, 0, 0, 5, 0}, {2, 0, 2, 9, 0}, {3, 0, 1, 7, 0},
        {4, 1, 0, 1, 0}, {5, 1, 1, 2, 0},
        {6, 2, 0, 1, 0}, {7, 2, 1, 2, 0}, {8, 2, 2, 3, 0},
        {9, 2, 3, 4, 1}, {10, 2, 1, 5, 2},
        {11, 3, 3, 1, 0}, {12, 3, 0, 2, 0}, {13, 3, 3, 3, 0},
        {14, 3, 1, 0, 0},
    };
    struct sgbd_holdout_opts o = {4, 4, UINT64_MAX, 3};
    struct sgbd_dataset ds;
    size_t held = 0;

    CHECK_INT(sgbd_holdout_build(&ds, ev, 14, &o, &held), 0);
    CHECK_INT(held, 2);
    CHECK_INT(ds.n_users, 4);
    CHECK_INT(ds.n_items, 4);
    CHECK(sgbd_itemsets_has(&ds.valid, 0, 2));
    CHECK(!sgbd_itemsets_has(&ds.train, 0, 2));
    CHECK_INT(ds.valid.ptr[2] - ds.valid.ptr[1], 0);
    CHECK(sgbd_itemsets_has(&ds.valid, 2, 3));
    CHECK_INT(ds.valid.ptr[3] - ds.valid.ptr[2], 1);
    CHECK(sgbd_itemsets_has(&ds.test, 2, 1));
    CHECK(sgbd_itemsets_has(&ds.valid, 3, 3));
    CHECK(!sgbd_itemsets_has(&ds.train, 3, 3));
    /* 14 events: 1 stored valid, 1 stored test, 1 + 2 rows held out. */
    CHECK_INT(ds.n_train, 9);
    CHECK_INT(ds.train_users[0], 0);
    CHECK_INT(ds.train_items[1], 1);    /* sequence order kept */
    CHECK_INT(ds.n_neg_items, 3);       /* item 3 is only held out */
    sgbd_dataset_free(&ds);

    /* min_train 0: stored labels only, nothing held out. */
    o.min_train = 0;
    CHECK_INT(sgbd_holdout_build(&ds, ev, 14, &o, &held), 0);
    CHECK_INT(held, 0);
    CHECK_INT(ds.n_train, 12);
    sgbd_dataset_free(&ds);
}

static void test_retrain_holdout_prefix_and_cold_users(void)
{
    /* u1 has only a stored valid event: dropped (cold-start filter);
     * events past max_seq, users or items past the prefix are ignored. */
    struct sgbd_holdout_event ev[] = {
        {1, 0, 0, 1, 0}, {2, 1, 1, 1, 1}, {3, 0, 1, 2, 0},
        {4, 2, 0, 1, 0}, {5, 0, 3, 3, 0}, {6, 0, 2, 4, 0},
    };
    struct sgbd_holdout_opts o = {2, 3, 5, 0};
    struct sgbd_dataset ds;
    uint64_t *ptr;
    uint32_t *items;

    CHECK_INT(sgbd_holdout_build(&ds, ev, 6, &o, NULL), 0);
    CHECK_INT(ds.n_train, 2);          /* seq 6 and item 3, user 2 out */
    CHECK_INT(ds.valid.ptr[2], 0);
    CHECK_INT(ds.n_neg_items, 2);
    sgbd_dataset_free(&ds);

    o.max_seq = 0;
    CHECK_INT(sgbd_holdout_build(&ds, ev, 6, &o, NULL), SGBD_E_NOTFOUND);
    o.n_users = 0;
    CHECK_INT(sgbd_holdout_build(&ds, ev, 6, &o, NULL), SGBD_E_SHAPE);

    /* Serving seen sets: every label and sequence number of u < 2. */
    CHECK_INT(sgbd_holdout_seen(ev, 6, 2, 4, &ptr, &items), 0);
    CHECK_INT(ptr[1], 4);               /* u0: 0, 1, 2, 3 */
    CHECK_INT(items[3], 3);
    CHECK_INT(ptr[2], 5);               /* u1: 1 */
    free(ptr);
    free(items);
}

/* ---- policy ---- */

static void test_retrain_policy_thresholds_debounce_intervals(void)
{
    struct sgbd_retrain_policy p = {1, 100, 1000, 5, 60, 0};
    struct sgbd_retrain_pending s = {0};

    CHECK(isinf(sgbd_retrain_due_in(&p, &s, 10)));
    s.item_updates = 99, s.first_at = 10, s.last_at = 20;
    CHECK(isinf(sgbd_retrain_due_in(&p, &s, 30)));   /* below threshold */
    s.item_updates = 100;
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 21), 4, 1e-9); /* debounce */
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 25), 0, 1e-9);
    /* a stream of updates: at most 10 debounce periods after the first */
    s.last_at = 58;
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 59), 1, 1e-9);
    /* min_interval after the previous start */
    s.last_start = 30;
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 80), 10, 1e-9);
    /* backoff after failures */
    s.not_before = 200;
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 100), 100, 1e-9);
    /* manual: at once, whatever the rest says */
    s.manual = 1;
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 100), 0, 1e-9);
    s.manual = 0, s.not_before = 0;
    /* interactions threshold; 0 turns a threshold off */
    s = (struct sgbd_retrain_pending){0, 999, 10, 10, 0, 0, 0};
    CHECK(isinf(sgbd_retrain_due_in(&p, &s, 100)));
    p.max_interval_s = 300;                         /* periodic */
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 100), 210, 1e-9);
    p.min_interactions = 0;
    s.interactions = 1000000;
    CHECK_NEAR(sgbd_retrain_due_in(&p, &s, 100), 210, 1e-9);
    p.enabled = 0;
    CHECK(isinf(sgbd_retrain_due_in(&p, &s, 1000)));
}

/* ---- jobs ---- */

static void test_retrain_first_model_when_data_arrives(void)
{
    struct sgbd_retrain_status st;
    struct fx f;
    struct sgbd_store_counts c;
    uint64_t s1, s2;

    CHECK_INT(fx_init(&f, 0, 0), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_INT(sgbd_retrain_restore(f.rt), SGBD_E_NOMODEL);
    CHECK_INT(served_version(f.slot), 0);
    CHECK_INT(sgbd_retrain_trigger(f.rt, "test"), SGBD_E_NOTFOUND);

    /* Data arrives through the write path: durable, numbered, then
     * notified (both written before the first notify can start a job). */
    CHECK_INT(add_items(f.store, 0, N_ITEMS, 0, 7), 0);
    s1 = sgbd_snapshot_slot_next_seq(f.slot);
    CHECK_INT(add_events(f.store, 0, N_USERS, PER_USER, 0, 11), 0);
    s2 = sgbd_snapshot_slot_next_seq(f.slot);
    sgbd_retrain_notify(f.rt, N_ITEMS, 0, s1);
    sgbd_retrain_notify(f.rt, 0, N_USERS * PER_USER, s2);
    CHECK_INT(sgbd_retrain_wait(f.rt, 1, WAIT_S), 0);
    sgbd_retrain_status(f.rt, &st);
    CHECK_STR(st.last_outcome, "published");
    CHECK(served_version(f.slot) >= 1);
    CHECK_INT(st.last_version, served_version(f.slot));
    CHECK(st.n_candidate_metrics > 0);
    CHECK_INT(sgbd_store_counts(f.store, &c), 0);
    CHECK_INT(c.checkpoints, 1);
    fx_free(&f);
}

/* Readers that pin views as requests do, checking each one. */
struct readers {
    struct sgbd_snapshot_slot *slot;
    atomic_int stop;
    atomic_long reads, bad;
    atomic_ulong max_version;
};

static void *reader_main(void *arg)
{
    struct readers *r = arg;
    uint64_t last = 0;

    while (!atomic_load(&r->stop)) {
        struct sgbd_view v;
        sgbd_snapshot_acquire(r->slot, &v);
        if (!v.snap || v.version < last || v.snap->version != v.version ||
            !isfinite(v.snap->users[0]) || v.snap->n_items < N_ITEMS)
            atomic_fetch_add(&r->bad, 1);
        else
            last = v.version;
        sgbd_snapshot_release(&v);
        atomic_fetch_add(&r->reads, 1);
    }
    for (unsigned long m = atomic_load(&r->max_version); m < last;)
        if (atomic_compare_exchange_weak(&r->max_version, &m, last))
            break;
    return NULL;
}

static void test_retrain_publishes_while_readers_read(void)
{
    struct readers r = {0};
    pthread_t th[2];
    struct sgbd_view v;
    struct fx f;
    uint64_t v1, s1, s2;
    uint32_t idx;
    long reads;

    CHECK_INT(fx_init(&f, 1, 0), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    v1 = served_version(f.slot);
    r.slot = f.slot;
    for (int k = 0; k < 2; k++)
        CHECK_INT(pthread_create(&th[k], NULL, reader_main, &r), 0);

    /* New items and more interactions: a warm retrain publishes. */
    CHECK_INT(add_items(f.store, N_ITEMS, 10, 0, 8), 0);
    s1 = sgbd_snapshot_slot_next_seq(f.slot);
    CHECK_INT(add_events(f.store, 0, N_USERS, 2, 100, 12), 0);
    s2 = sgbd_snapshot_slot_next_seq(f.slot);
    sgbd_retrain_notify(f.rt, 10, 0, s1);
    sgbd_retrain_notify(f.rt, 0, 2 * N_USERS, s2);
    CHECK_INT(sgbd_retrain_wait(f.rt, 2, WAIT_S), 0);
    /* Let both readers read the new version, however loaded the host. */
    reads = atomic_load(&r.reads);
    for (int k = 0; k < 1000 && atomic_load(&r.reads) < reads + 1000; k++)
        usleep(10000);
    atomic_store(&r.stop, 1);
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);

    CHECK_INT(atomic_load(&r.bad), 0);
    CHECK(atomic_load(&r.reads) > 0);
    CHECK(served_version(f.slot) > v1);
    CHECK_INT(atomic_load(&r.max_version), served_version(f.slot));
    sgbd_snapshot_acquire(f.slot, &v);
    CHECK(v.snap->n_items == N_ITEMS + 10);
    CHECK_INT(sgbd_snapshot_item_index(v.snap, "i105", 4, &idx), 0);
    CHECK(v.snap->absorbed_seq == sgbd_snapshot_slot_seq(f.slot));
    CHECK(v.snap->model != NULL);
    sgbd_snapshot_release(&v);
    fx_free(&f);
}

/* Writes made while the job trains, by the test at the READ point. */
struct during {
    struct fx *f;
    int armed;
    uint64_t absorbed, seq_item, seq_hide;
    int rc;
};

static void write_during(void *ctx, enum sgbd_retrain_point p, uint64_t v)
{
    struct during *d = ctx;
    float x[8] = {0, 0, 1, 0, 0, 0, 0, 0};
    struct sgbd_item_features feat = {1, {{"image", 8, x}}};
    struct sgbd_overlay_edit ed[2];
    struct sgbd_store_feature sf = {"image", x, 8};
    struct sgbd_store_item it = {"late", 1, &sf, NULL, 0};

    (void)v;
    if (p != SGBD_RETRAIN_POINT_READ || !d->armed)
        return;
    d->armed = 0;
    d->absorbed = sgbd_snapshot_slot_seq(d->f->slot);
    /* A new item and a deletion: durable, numbered, applied, notified
     * (the order of api_write.c). */
    d->rc = sgbd_store_items_upsert(d->f->store, &it, 1, NULL);
    d->seq_item = sgbd_snapshot_slot_next_seq(d->f->slot);
    ed[0] = (struct sgbd_overlay_edit){SGBD_OVERLAY_PUT_ITEM, d->seq_item,
                                       "late", NULL, &feat};
    if (d->rc == 0)
        d->rc = sgbd_snapshot_apply(d->f->slot, &ed[0], 1);
    sgbd_retrain_notify(d->f->rt, 1, 0, d->seq_item);
    if (d->rc == 0)
        d->rc = sgbd_store_item_hide(d->f->store, "i3", 1);
    d->seq_hide = sgbd_snapshot_slot_next_seq(d->f->slot);
    ed[1] = (struct sgbd_overlay_edit){SGBD_OVERLAY_DELETE_ITEM, d->seq_hide,
                                       "i3", NULL, NULL};
    if (d->rc == 0)
        d->rc = sgbd_snapshot_apply(d->f->slot, &ed[1], 1);
    sgbd_retrain_notify(d->f->rt, 1, 0, d->seq_hide);
    /* A late notify of a write the job's read already holds. */
    sgbd_retrain_notify(d->f->rt, 0, 5, d->absorbed);
}

static void test_retrain_overlay_reapplied_after_publish(void)
{
    struct during d = {0};
    struct sgbd_overlay_edit seen;
    struct sgbd_retrain_status st;
    struct sgbd_item_ref ref;
    struct sgbd_view v;
    struct fx f;
    uint64_t s0;

    CHECK_INT(fx_init(&f, 1, 1), 0);
    snprintf(f.cfg.model, sizeof(f.cfg.model), "vbpr");
    f.point = write_during;
    f.point_ctx = &d;
    d.f = &f;
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");

    /* Before the next job: a new interaction, durable and applied. */
    CHECK_INT(add_events(f.store, 0, 1, 1, 500, 13), 0);
    s0 = sgbd_snapshot_slot_next_seq(f.slot);
    seen = (struct sgbd_overlay_edit){SGBD_OVERLAY_SEEN, s0, "i4", "u0",
                                      NULL};
    CHECK_INT(sgbd_snapshot_apply(f.slot, &seen, 1), 0);

    d.armed = 1;
    CHECK_STR(run_one(&f), "published");
    CHECK_INT(d.rc, 0);
    CHECK(d.absorbed >= s0);
    CHECK(d.seq_item > d.absorbed && d.seq_hide > d.seq_item);

    sgbd_snapshot_acquire(f.slot, &v);
    CHECK_INT(v.snap->absorbed_seq, d.absorbed);
    /* The absorbed interaction is in the model's seen sets now, and no
     * longer an overlay entry; the later writes are re-applied. */
    CHECK(sgbd_overlay_user_seen(v.ov, "u0", 2, &(const uint32_t *){0},
                                 &(size_t){0}) == SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_overlay_resolve_item(v.snap, v.ov, "late", 4, &ref), 0);
    CHECK(ref.in_overlay && ref.vec != NULL && !ref.hidden);
    CHECK_INT(sgbd_overlay_resolve_item(v.snap, v.ov, "i3", 2, &ref), 0);
    CHECK(ref.hidden);
    sgbd_snapshot_release(&v);
    /* Counted toward the next job: the two writes after absorbed only. */
    sgbd_retrain_status(f.rt, &st);
    CHECK_INT(st.pending_item_updates, 2);
    CHECK_INT(st.pending_interactions, 0);
    fx_free(&f);
}

static void test_retrain_diverging_learning_rate_rejected(void)
{
    struct sgbd_retrain_status st;
    struct sgbd_config bad;
    struct sgbd_view v;
    struct fx f;
    uint64_t v1;

    CHECK_INT(fx_init(&f, 1, 0), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    v1 = served_version(f.slot);

    bad = f.cfg;
    CHECK_INT(sgbd_config_set(&bad, "model.learning_rate", "1000"), 0);
    bad.retrain_tolerance = 0.002;
    sgbd_retrain_reload(f.rt, &bad);
    CHECK_INT(add_events(f.store, 0, N_USERS, 1, 200, 14), 0);
    sgbd_retrain_notify(f.rt, 0, N_USERS, sgbd_snapshot_slot_next_seq(f.slot));
    CHECK_INT(sgbd_retrain_wait(f.rt, 2, WAIT_S), 0);

    sgbd_retrain_status(f.rt, &st);
    CHECK_STR(st.last_outcome, "rejected");
    CHECK_INT(st.rejected_total, 1);
    CHECK_INT(st.failed_total, 0);
    CHECK_INT(served_version(f.slot), v1);
    /* The interactions still wait for a retrain that can publish. */
    CHECK_INT(st.pending_interactions, N_USERS);
    sgbd_snapshot_acquire(f.slot, &v);
    CHECK(v.snap && v.snap->version == v1);
    sgbd_snapshot_release(&v);

    /* Back to a sane rate: the kept counts start a job at once. */
    sgbd_retrain_reload(f.rt, &f.cfg);
    CHECK_INT(sgbd_retrain_wait(f.rt, 3, WAIT_S), 0);
    sgbd_retrain_status(f.rt, &st);
    CHECK_STR(st.last_outcome, "published");
    CHECK(served_version(f.slot) > v1);
    fx_free(&f);
}

struct started {
    atomic_int n;
};

static void mark_started(void *ctx, enum sgbd_retrain_point p, uint64_t v)
{
    struct started *s = ctx;

    (void)v;
    if (p == SGBD_RETRAIN_POINT_READ)
        atomic_fetch_add(&s->n, 1);
}

static void test_retrain_stop_cancels_running_job(void)
{
    struct started s = {0};
    struct sgbd_store_counts c;
    struct fx f;
    double t0;

    CHECK_INT(fx_init(&f, 1, 0), 0);
    f.cfg.retrain_initial_epochs = 100000;
    f.cfg.stopping_step = 100000;
    f.point = mark_started;
    f.point_ctx = &s;
    CHECK_INT(fx_start(&f), 0);
    CHECK_INT(sgbd_retrain_trigger(f.rt, "test"), 0);
    for (int k = 0; k < 2000 && atomic_load(&s.n) == 0; k++)
        usleep(5000);
    CHECK_INT(atomic_load(&s.n), 1);
    usleep(100000);
    CHECK_INT(sgbd_retrain_trigger(f.rt, "test"), SGBD_E_BUSY);
    CHECK_INT(sgbd_retrain_rollback(f.rt, 1), SGBD_E_BUSY);

    t0 = now_s();
    sgbd_retrain_stop(f.rt);
    CHECK(now_s() - t0 < 5.0);
    sgbd_retrain_stop(f.rt);            /* idempotent */
    CHECK_INT(served_version(f.slot), 0);
    CHECK_INT(sgbd_store_counts(f.store, &c), 0);
    CHECK_INT(c.checkpoints, 0);
    fx_free(&f);
}

static void test_retrain_rollback_to_kept_version(void)
{
    uint64_t cur, prev, v1, v2;
    struct fx f;

    CHECK_INT(fx_init(&f, 1, 0), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    v1 = served_version(f.slot);
    CHECK_INT(add_events(f.store, 0, N_USERS, 1, 300, 15), 0);
    CHECK_STR(run_one(&f), "published");
    v2 = served_version(f.slot);
    CHECK(v2 > v1);

    CHECK_INT(sgbd_retrain_rollback(f.rt, v1), 0);
    CHECK_INT(served_version(f.slot), v1);
    CHECK_INT(sgbd_store_ckpt_pointers(f.store, &cur, &prev), 0);
    CHECK_INT(cur, v1);
    CHECK_INT(sgbd_retrain_rollback(f.rt, 999), SGBD_E_NOTFOUND);
    CHECK_INT(served_version(f.slot), v1);

    /* The next retrain warm-starts from v1 and gets a new version. */
    CHECK_STR(run_one(&f), "published");
    CHECK(served_version(f.slot) > v2);
    fx_free(&f);
}

/* Copy U and V of the served snapshot, for comparing restores. */
static float *copy_uv(struct sgbd_snapshot_slot *slot, size_t *n,
                      uint64_t *version)
{
    struct sgbd_view v;
    float *out;

    sgbd_snapshot_acquire(slot, &v);
    *n = ((size_t)v.snap->n_users + v.snap->n_items) * v.snap->dim;
    *version = v.version;
    out = malloc(*n * sizeof(float));
    if (out) {
        memcpy(out, v.snap->users,
               (size_t)v.snap->n_users * v.snap->dim * sizeof(float));
        memcpy(out + (size_t)v.snap->n_users * v.snap->dim, v.snap->items,
               (size_t)v.snap->n_items * v.snap->dim * sizeof(float));
    }
    sgbd_snapshot_release(&v);
    return out;
}

static void test_retrain_restore_rebuilds_published_model(void)
{
    struct sgbd_retrain_status st;
    struct sgbd_view v;
    struct fx f;
    float *a = NULL, *b = NULL;
    size_t na, nb;
    uint64_t va, vb;
    uint32_t idx;
    double diff = 0;

    CHECK_INT(fx_init(&f, 1, 0), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    a = copy_uv(f.slot, &na, &va);
    CHECK(a != NULL);
    fx_stop(&f);

    /* A restart: a new slot and retrainer on the same store. */
    CHECK_INT(fx_start(&f), 0);
    CHECK_INT(sgbd_retrain_restore(f.rt), 0);
    b = copy_uv(f.slot, &nb, &vb);
    CHECK(b != NULL);
    CHECK_INT(vb, va);
    CHECK_INT(nb, na);
    for (size_t k = 0; k < na; k++)
        diff = fmax(diff, fabs((double)a[k] - b[k]));
    CHECK_NEAR(diff, 0, 1e-5);
    fx_stop(&f);

    /* Items added after the checkpoint are served by cold start and
     * count toward the next retrain. */
    CHECK_INT(add_items(f.store, N_ITEMS, 3, 0, 9), 0);
    f.cfg.retrain_enabled = 0;
    CHECK_INT(fx_start(&f), 0);
    CHECK_INT(sgbd_retrain_restore(f.rt), 0);
    sgbd_snapshot_acquire(f.slot, &v);
    CHECK_INT(v.snap->n_items, N_ITEMS + 3);
    CHECK_INT(sgbd_snapshot_item_index(v.snap, "i102", 4, &idx), 0);
    CHECK(isfinite(v.snap->items[(size_t)idx * v.snap->dim]));
    CHECK_STR(v.snap->meta.model, "lightgcn");
    CHECK(v.snap->meta.n_metrics > 0);
    sgbd_snapshot_release(&v);
    sgbd_retrain_status(f.rt, &st);
    CHECK_INT(st.pending_item_updates, 3);
    free(a);
    free(b);
    fx_free(&f);
}

static void test_retrain_restore_feature_model_after_new_channel(void)
{
    struct sgbd_view v;
    struct fx f;
    float *a = NULL, *b = NULL;
    size_t na, nb;
    uint64_t va, vb;
    double diff = 0;

    CHECK_INT(fx_init(&f, 1, 1), 0);
    snprintf(f.cfg.model, sizeof(f.cfg.model), "vbpr");
    f.cfg.retrain_enabled = 0;
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    a = copy_uv(f.slot, &na, &va);
    CHECK(a != NULL);
    fx_stop(&f);

    /* A channel defined after the checkpoint: the restore builds the
     * model on the channels the checkpoint lists, not on the store's. */
    CHECK_INT(sgbd_store_channel_define(f.store, "text", 4), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_INT(sgbd_retrain_restore(f.rt), 0);
    b = copy_uv(f.slot, &nb, &vb);
    CHECK(b != NULL);
    CHECK_INT(vb, va);
    CHECK_INT(nb, na);
    for (size_t k = 0; k < na; k++)
        diff = fmax(diff, fabs((double)a[k] - b[k]));
    CHECK_NEAR(diff, 0, 1e-5);
    sgbd_snapshot_acquire(f.slot, &v);
    CHECK_INT(v.snap->n_channels, 1);
    CHECK_STR(v.snap->channels[0].name, "image");
    sgbd_snapshot_release(&v);
    free(a);
    free(b);
    fx_free(&f);
}

static void test_retrain_restore_falls_back_on_damaged_current(void)
{
    static const char junk[64] = "not a checkpoint chunk";
    struct sgbd_store_chunk bad = {0x1234, junk, sizeof(junk)};
    uint64_t cur, prev;
    struct fx f;

    CHECK_INT(fx_init(&f, 1, 0), 0);
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    CHECK_INT(add_events(f.store, 0, N_USERS, 1, 400, 16), 0);
    CHECK_STR(run_one(&f), "published");
    fx_stop(&f);
    CHECK_INT(sgbd_store_ckpt_pointers(f.store, &cur, &prev), 0);
    CHECK(prev > 0 && cur > prev);
    CHECK_INT(sgbd_store_ckpt_put_chunks(f.store, cur, 0, 1, &bad), 0);

    f.cfg.retrain_enabled = 0;           /* no job in the way */
    CHECK_INT(fx_start(&f), 0);
    CHECK_INT(sgbd_retrain_restore(f.rt), 0);
    CHECK_INT(served_version(f.slot), prev);
    CHECK_INT(sgbd_retrain_rollback(f.rt, cur), SGBD_E_CORRUPT);
    CHECK_INT(served_version(f.slot), prev);
    fx_free(&f);
}

/* ---- crash: SIGKILL a child that retrains ---- */

struct crash_ctx {
    int fd;
};

static void crash_point(void *ctx, enum sgbd_retrain_point p, uint64_t v)
{
    struct crash_ctx *c = ctx;
    char b = p == SGBD_RETRAIN_POINT_READ ? 'R'
             : p == SGBD_RETRAIN_POINT_CHECKPOINT ? 'C'
             : p == SGBD_RETRAIN_POINT_PUBLISH ? 'P' : 'T';

    (void)v;
    if (write(c->fd, &b, 1) != 1)
        _exit(3);
}

/* The child: restore, retrain once, report each point, then idle. */
static void crash_child(struct fx *f, int fd)
{
    struct crash_ctx c = {fd};
    char b = 'D';

    f->point = crash_point;
    f->point_ctx = &c;
    if (fx_open_store(f) != 0 || fx_start(f) != 0)
        _exit(2);
    /* The new events are pending after the restore: a job starts. */
    if (sgbd_retrain_restore(f->rt) != 0 ||
        sgbd_retrain_wait(f->rt, 1, WAIT_S) != 0)
        _exit(4);
    if (write(fd, &b, 1) != 1)
        _exit(3);
    for (;;)
        pause();
}

/* Read bytes from fd until want arrives; 0 or -1 (timeout, EOF). */
static int wait_byte(int fd, char want)
{
    char b;

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(WAIT_S * 1000)) <= 0 || read(fd, &b, 1) != 1)
            return -1;
        if (b == want)
            return 0;
    }
}

/* Kill the child at point `at` plus delay_us, then restart in-process:
 * the store's current checkpoint is served, and a retrain runs again. */
static void crash_round(struct fx *f, char at, int delay_us, int *ok)
{
    struct sgbd_retrain_status st;
    uint64_t before, cur, prev;
    static int round;
    size_t problems = 1;
    int fds[2], status, got;
    pid_t pid;

    *ok = 0;
    round++;
    CHECK_INT(sgbd_store_ckpt_pointers(f->store, &before, &prev), 0);
    CHECK_INT(add_events(f->store, 0, N_USERS, 1, 1000 + round,
                         17 + (uint64_t)round), 0);
    sgbd_store_close(f->store);          /* never across fork */
    f->store = NULL;
    CHECK_INT(pipe(fds), 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(f, fds[1]);
    }
    close(fds[1]);
    got = wait_byte(fds[0], at);
    if (got == 0 && delay_us)
        usleep((useconds_t)delay_us);
    kill(pid, SIGKILL);                 /* on every path: no orphan */
    waitpid(pid, &status, 0);
    close(fds[0]);
    CHECK_INT(got, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    CHECK_INT(fx_open_store(f), 0);
    CHECK_INT(sgbd_checkpoint_check(f->store, NULL, NULL, &problems), 0);
    CHECK_INT(problems, 0);
    CHECK_INT(sgbd_store_ckpt_pointers(f->store, &cur, &prev), 0);
    CHECK(cur == before || cur > before);
    f->cfg.retrain_enabled = 0;          /* look before a job starts */
    CHECK_INT(fx_start(f), 0);
    f->cfg.retrain_enabled = 1;
    CHECK_INT(sgbd_retrain_restore(f->rt), 0);
    CHECK_INT(served_version(f->slot), cur);
    /* The interrupted job's data is pending again unless it was
     * committed: then nothing is pending. */
    sgbd_retrain_status(f->rt, &st);
    CHECK_INT(st.pending_interactions, cur > before ? 0 : N_USERS);
    sgbd_retrain_reload(f->rt, &f->cfg);
    if (cur == before) {
        CHECK_INT(sgbd_retrain_wait(f->rt, 1, WAIT_S), 0);
        sgbd_retrain_status(f->rt, &st);
        CHECK_STR(st.last_outcome, "published");
        CHECK(served_version(f->slot) > cur);
    }
    fx_stop(f);
    *ok = 1;
}

static void test_retrain_crash_during_retrain_and_checkpoint(void)
{
    static const int delays[] = {0, 200, 1000, 3000, 10000};
    struct fx f;
    int ok;

#if defined(__SANITIZE_THREAD__)
    SKIP("fork of a threaded process under ThreadSanitizer");
#endif
    CHECK_INT(fx_init(&f, 1, 0), 0);
    f.cfg.embedding_size = 256;          /* a few chunks to write */
    CHECK_INT(fx_start(&f), 0);
    CHECK_STR(run_one(&f), "published");
    fx_stop(&f);

    crash_round(&f, 'R', 20000, &ok);    /* during training */
    CHECK(ok);
    for (size_t k = 0; k < sizeof(delays) / sizeof(delays[0]); k++) {
        crash_round(&f, 'C', delays[k], &ok);   /* during the save */
        CHECK(ok);
    }
    crash_round(&f, 'P', 0, &ok);        /* committed, not yet published */
    CHECK(ok);
    fx_free(&f);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    sgbd_log_level = getenv("SGBD_TEST_LOG") ? SGBD_LOG_INFO
                                              : SGBD_LOG_WARNING;
    RUN(test_retrain_holdout_latest_per_user);
    RUN(test_retrain_holdout_prefix_and_cold_users);
    RUN(test_retrain_policy_thresholds_debounce_intervals);
    RUN(test_retrain_crash_during_retrain_and_checkpoint);
    RUN(test_retrain_first_model_when_data_arrives);
    RUN(test_retrain_publishes_while_readers_read);
    RUN(test_retrain_overlay_reapplied_after_publish);
    RUN(test_retrain_diverging_learning_rate_rejected);
    RUN(test_retrain_stop_cancels_running_job);
    RUN(test_retrain_rollback_to_kept_version);
    RUN(test_retrain_restore_rebuilds_published_model);
    RUN(test_retrain_restore_feature_model_after_new_channel);
    RUN(test_retrain_restore_falls_back_on_damaged_current);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return harness_finish();
}
