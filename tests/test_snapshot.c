/* test_snapshot.c - snapshots, overlay and the publication slot. */
/* ctest: labels=unit,concurrency timeout=180 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "sgbd/api.h"
#include "sgbd/err.h"
#include "sgbd/overlay.h"
#include "sgbd/rng.h"
#include "sgbd/snapshot.h"
#include "sgbd/topk.h"

/* ---- a tiny model whose cold start is a fixed linear map ---- */

#define FAKE_DC 4

/* embed_new_item: out[d] = sum_c theta[d * FAKE_DC + c] * feat[c]. */
static int fake_embed_new_item(struct sgbd_model *m, const float *theta,
                               const float *const *feats, float *out)
{
    for (size_t d = 0; d < m->dim; d++) {
        double acc = 0;
        for (int c = 0; c < FAKE_DC && feats[0]; c++)
            acc += (double)theta[d * FAKE_DC + c] * feats[0][c];
        out[d] = (float)acc;
    }
    return 0;
}

static void fake_free(struct sgbd_model *m)
{
    free(m);
}

static const struct sgbd_model_ops fake_ops = {
    .name = "fake",
    .free = fake_free,
    .embed_new_item = fake_embed_new_item,
};

/* Give s a fake model whose map is scale * (identity-like pattern). */
static int give_fake_model(struct sgbd_snapshot *s, float scale)
{
    struct sgbd_model *m = calloc(1, sizeof(*m));
    struct sgbd_snapshot_channel ch = {"image", FAKE_DC};
    float *theta = calloc(s->dim * FAKE_DC, sizeof(float));
    int rc;

    m->ops = &fake_ops;
    m->dim = s->dim;
    m->layout.n = s->dim * FAKE_DC;
    for (size_t d = 0; d < s->dim; d++)
        theta[d * FAKE_DC + d % FAKE_DC] = scale;
    rc = sgbd_snapshot_set_model(s, m, theta, &ch, 1);
    free(theta);
    if (rc != 0)
        free(m);
    return rc;
}

/* Every entry of U and V encodes the version: consistency is checkable. */
static struct sgbd_snapshot *make_versioned(uint64_t version, uint32_t U,
                                            uint32_t I, size_t D)
{
    struct sgbd_snapshot *s;

    if (sgbd_snapshot_new(&s, version, U, I, D) != 0)
        return NULL;
    for (size_t k = 0; k < (size_t)U * D; k++)
        s->users[k] = (float)version;
    for (size_t k = 0; k < (size_t)I * D; k++)
        s->items[k] = (float)version + (float)(k / D) * 1e-3f;
    s->absorbed_seq = version * 1000;
    if (give_fake_model(s, (float)version) != 0 ||
        sgbd_snapshot_finish(s) != 0) {
        sgbd_snapshot_free(s);
        return NULL;
    }
    return s;
}

static void test_snapshot_ids_seen_and_popularity(void)
{
    const char *users[] = {"alice", "bob", "carol"};
    const char *items[] = {"a", "b", "c", "d"};
    uint64_t ptr[] = {0, 3, 5, 6};
    uint32_t seen[] = {2, 0, 2, 3, 2, 1};
    struct sgbd_snapshot *s;
    uint32_t idx;

    CHECK_INT(sgbd_snapshot_new(&s, 1, 3, 4, 2), 0);
    CHECK_INT(sgbd_snapshot_set_ids(s, users, items), 0);
    CHECK_INT(sgbd_snapshot_set_seen(s, ptr, seen), 0);
    CHECK_INT(sgbd_snapshot_hide(s, 3), 0);
    CHECK_INT(sgbd_snapshot_finish(s), 0);

    CHECK_INT(sgbd_snapshot_user_index(s, "bob", 3, &idx), 0);
    CHECK_INT(idx, 1);
    CHECK_INT(sgbd_snapshot_user_index(s, "bo", 2, &idx), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_snapshot_item_index(s, "d", 1, &idx), 0);
    CHECK_INT(idx, 3);
    CHECK_STR(sgbd_snapshot_item_id(s, 2), "c");
    CHECK(sgbd_snapshot_hidden(s, 3));
    CHECK(!sgbd_snapshot_hidden(s, 2));

    /* alice's {2, 0, 2} becomes {0, 2}: sorted and unique. */
    CHECK_INT(s->seen_ptr[1], 2);
    CHECK_INT(s->seen_items[0], 0);
    CHECK_INT(s->seen_items[1], 2);
    /* counts a=1 b=1 c=2 d=1: c first, then ties by lower index. */
    CHECK_INT(s->popular[0], 2);
    CHECK_INT(s->popular[1], 0);
    CHECK_INT(s->popular[2], 1);
    CHECK_INT(s->popular[3], 3);
    CHECK_INT(s->pop_count[2], 2);
    CHECK_INT(sgbd_snapshot_set_seen(s, ptr, seen), SGBD_E_BUSY);
    sgbd_snapshot_free(s);
}

static void test_snapshot_rejects_bad_input(void)
{
    const char *dup[] = {"x", "y", "x"};
    uint64_t bad_ptr[] = {0, 2, 1, 3};
    uint32_t bad_items[] = {0, 1, 9};
    struct sgbd_snapshot *s;

    CHECK_INT(sgbd_snapshot_new(&s, 0, 3, 3, 4), SGBD_E_SHAPE);
    CHECK_INT(sgbd_snapshot_new(&s, 1, 3, 3, 0), SGBD_E_SHAPE);
    CHECK_INT(sgbd_snapshot_new(&s, 1, 3, 3, 2), 0);
    CHECK_INT(sgbd_snapshot_set_ids(s, dup, NULL), SGBD_E_EXISTS);
    CHECK(strstr(sgbd_err_detail(SGBD_E_EXISTS), "'x'") != NULL);
    CHECK_INT(sgbd_snapshot_set_seen(s, bad_ptr, bad_items), SGBD_E_FORMAT);
    bad_ptr[2] = 2;
    CHECK_INT(sgbd_snapshot_set_seen(s, bad_ptr, bad_items), SGBD_E_FORMAT);
    CHECK_INT(sgbd_snapshot_hide(s, 3), SGBD_E_NOTFOUND);
    s->items[3] = NAN;
    CHECK_INT(sgbd_snapshot_finish(s), SGBD_E_DIVERGED);
    s->items[3] = 0;
    CHECK_INT(sgbd_snapshot_finish(s), 0);
    /* default ids after a failed set_ids */
    CHECK_STR(sgbd_snapshot_user_id(s, 2), "u2");
    sgbd_snapshot_free(s);
}

static void test_snapshot_publish_order_and_views(void)
{
    struct sgbd_snapshot_slot *slot;
    struct sgbd_view a, b;

    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    sgbd_snapshot_acquire(slot, &a);
    CHECK(a.snap == NULL);
    CHECK_INT(a.version, 0);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(2, 4, 4, 4), 0), 0);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(2, 4, 4, 4), 0),
              SGBD_E_VERSION);
    sgbd_snapshot_acquire(slot, &b);
    CHECK_INT(b.version, 2);
    CHECK(a.snap == NULL); /* the old pin still sees its own view */
    sgbd_snapshot_release(&a);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(1, 4, 4, 4), 1), 0);
    CHECK_INT(b.snap->users[0], 2); /* pinned snapshot stays intact */
    sgbd_snapshot_release(&b);
    sgbd_snapshot_acquire(slot, &a);
    CHECK_INT(a.version, 1);
    sgbd_snapshot_release(&a);
    CHECK(sgbd_snapshot_swaps(slot) == 2);
    sgbd_snapshot_slot_free(slot);
}

static void test_snapshot_overlay_immediate_effects(void)
{
    float f[FAKE_DC] = {1, 2, 3, 4};
    struct sgbd_item_features feat = {1, {{"image", FAKE_DC, f}}};
    struct sgbd_overlay_edit ed[] = {
        {SGBD_OVERLAY_PUT_ITEM, 2001, "new1", NULL, &feat},
        {SGBD_OVERLAY_DELETE_ITEM, 2002, "i1", NULL, NULL},
        {SGBD_OVERLAY_SEEN, 2003, "i2", "u0", NULL},
        {SGBD_OVERLAY_SEEN, 2004, "new1", "stranger", NULL},
        {SGBD_OVERLAY_SEEN, 5, "i3", "u0", NULL}, /* absorbed already */
    };
    struct sgbd_snapshot_slot *slot;
    const struct sgbd_overlay_item *e;
    struct sgbd_item_ref ref;
    const uint32_t *seen;
    uint64_t pi, pn;
    struct sgbd_view v;
    size_t n;

    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(2, 3, 4, 4), 0), 0);
    CHECK_INT(sgbd_snapshot_apply(slot, ed, 5), 0);
    sgbd_snapshot_acquire(slot, &v);

    CHECK_INT(sgbd_overlay_n_index(v.ov), 5);
    e = sgbd_overlay_find_item(v.ov, "new1", 4);
    CHECK(e && e->index == 4 && !e->hidden && e->vec);
    /* theta puts 2 on (d, d % 4): vec[d] = 2 * f[d % 4] */
    CHECK_NEAR(e->vec[0], 2, 1e-6);
    CHECK_NEAR(e->vec[3], 8, 1e-6);
    CHECK_STR(sgbd_overlay_item_id(v.snap, v.ov, 4), "new1");
    CHECK_INT(sgbd_overlay_resolve_item(v.snap, v.ov, "i1", 2, &ref), 0);
    CHECK(ref.hidden && ref.in_overlay && ref.index == 1);
    CHECK(sgbd_overlay_base_mask(v.ov) != NULL);
    CHECK(sgbd_overlay_base_mask(v.ov)[0] & 2);
    CHECK_INT(sgbd_overlay_user_seen(v.ov, "u0", 2, &seen, &n), 0);
    CHECK_INT(n, 1);
    CHECK_INT(seen[0], 2);
    CHECK_INT(sgbd_overlay_user_seen(v.ov, "stranger", 8, &seen, &n), 0);
    CHECK(n == 1 && seen[0] == 4);
    sgbd_overlay_pending(v.ov, &pi, &pn);
    CHECK_INT(pi, 2);
    CHECK_INT(pn, 2);
    sgbd_snapshot_release(&v);
    sgbd_snapshot_slot_free(slot);
}

static void test_snapshot_rebase_keeps_only_unabsorbed(void)
{
    float f[FAKE_DC] = {1, 1, 1, 1};
    struct sgbd_item_features feat = {1, {{"image", FAKE_DC, f}}};
    struct sgbd_overlay_edit ed[] = {
        {SGBD_OVERLAY_PUT_ITEM, 2500, "early", NULL, &feat},
        {SGBD_OVERLAY_PUT_ITEM, 3500, "late", NULL, &feat},
        {SGBD_OVERLAY_SEEN, 2600, "late", "u1", NULL},
        {SGBD_OVERLAY_SEEN, 3600, "late", "u2", NULL},
    };
    struct sgbd_snapshot_slot *slot;
    const struct sgbd_overlay_item *e;
    const uint32_t *seen;
    struct sgbd_view v;
    size_t n;

    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(2, 3, 4, 4), 0), 0);
    CHECK_INT(sgbd_snapshot_apply(slot, ed, 4), 0);
    /* version 3 absorbed writes up to 3000: "early" and u1's are in it. */
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(3, 3, 4, 4), 0), 0);
    sgbd_snapshot_acquire(slot, &v);
    CHECK(sgbd_overlay_find_item(v.ov, "early", 5) == NULL);
    e = sgbd_overlay_find_item(v.ov, "late", 4);
    CHECK(e != NULL);
    CHECK_INT(e->index, 4); /* first new index of the new base */
    CHECK_NEAR(e->vec[0], 3, 1e-6); /* re-embedded by the version-3 model */
    CHECK_INT(sgbd_overlay_user_seen(v.ov, "u1", 2, &seen, &n),
              SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_overlay_user_seen(v.ov, "u2", 2, &seen, &n), 0);
    CHECK(n == 1 && seen[0] == 4);
    sgbd_snapshot_release(&v);
    sgbd_snapshot_slot_free(slot);
}

/* The counters the answer cache keys on, and the index of edits. */
static void test_snapshot_overlay_counts_and_orders_edits(void)
{
    float f[FAKE_DC] = {1, 0, 0, 0};
    struct sgbd_item_features feat = {1, {{"image", FAKE_DC, f}}};
    struct sgbd_overlay_edit ed[] = {
        {SGBD_OVERLAY_PUT_ITEM, 2001, "i0", NULL, &feat},
        {SGBD_OVERLAY_PUT_ITEM, 2002, "new1", NULL, &feat},
        {SGBD_OVERLAY_DELETE_ITEM, 2003, "i0", NULL, NULL}, /* again */
        {SGBD_OVERLAY_SEEN, 2004, "i2", "u0", NULL},
        {SGBD_OVERLAY_SEEN, 2005, "i2", "u0", NULL},        /* repeated */
        {SGBD_OVERLAY_SEEN, 2006, "i3", "u1", NULL},
        {SGBD_OVERLAY_DELETE_ITEM, 2007, "i3", NULL, NULL},
    };
    const struct sgbd_overlay_item *const *edited;
    struct sgbd_overlay_stamp st, st0;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_view v;
    size_t n;

    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(2, 3, 4, 4), 0), 0);
    sgbd_snapshot_acquire(slot, &v);
    st0 = sgbd_overlay_stamp(v.ov);
    CHECK_INT(sgbd_overlay_edited_since(v.ov, 0, &edited), 0);
    sgbd_snapshot_release(&v);

    CHECK_INT(sgbd_snapshot_apply(slot, ed, 3), 0);     /* item edits */
    CHECK_INT(sgbd_snapshot_apply(slot, ed + 3, 3), 0); /* interactions */
    sgbd_snapshot_acquire(slot, &v);
    st = sgbd_overlay_stamp(v.ov);
    CHECK_INT(st.publications, st0.publications);
    CHECK_INT(st.item_writes, st0.item_writes + 3);
    CHECK_INT(sgbd_overlay_user_writes(v.ov, "u0", 2), 2);
    CHECK_INT(sgbd_overlay_user_writes(v.ov, "u1", 2), 1);
    CHECK_INT(sgbd_overlay_user_writes(v.ov, "u2", 2), 0);
    /* i0 edited twice counts once, at its latest edit: after new1 */
    n = sgbd_overlay_edited_since(v.ov, st0.item_writes, &edited);
    CHECK_INT(n, 2);
    CHECK_STR(edited[0]->id, "new1");
    CHECK_STR(edited[1]->id, "i0");
    CHECK(edited[1]->hidden);
    CHECK_INT(edited[1]->write_no, st.item_writes);
    CHECK_INT(sgbd_overlay_edited_since(v.ov, st.item_writes - 1, &edited),
              1);
    CHECK_INT(sgbd_overlay_edited_since(v.ov, st.item_writes, &edited), 0);
    sgbd_snapshot_release(&v);

    /* Interactions leave the index as it was; an item edit extends it. */
    CHECK_INT(sgbd_snapshot_apply(slot, ed + 6, 1), 0);
    sgbd_snapshot_acquire(slot, &v);
    n = sgbd_overlay_edited_since(v.ov, st.item_writes, &edited);
    CHECK_INT(n, 1);
    CHECK_STR(edited[0]->id, "i3");
    CHECK_INT(sgbd_overlay_edited_since(v.ov, st0.item_writes, &edited), 3);
    sgbd_snapshot_release(&v);

    /* A publication moves the stamp on and starts the index afresh, even
     * for a lower model version (a rollback). */
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(1, 3, 4, 4), 1), 0);
    sgbd_snapshot_acquire(slot, &v);
    CHECK_INT(sgbd_overlay_stamp(v.ov).publications, st.publications + 1);
    CHECK_INT(sgbd_overlay_edited_since(v.ov, 0, &edited), 0);
    sgbd_snapshot_release(&v);
    sgbd_snapshot_slot_free(slot);
}

/* ---- overlays of many users, against a model of what they hold ---- */

#define WALK_ITEMS 50              /* base items i0 .. i49 */
#define WALK_USERS 3000            /* far more than the overlay's buckets */
#define WALK_MAX_NEW 200           /* new items n0 .. */
#define WALK_MAX_PAIRS 20000
#define WALK_KEEP 4                /* older overlays held and re-read */
#define WALK_PROBES 24             /* users each held overlay is asked for */

struct walk_model {
    uint64_t new_seq[WALK_MAX_NEW]; /* latest write of n<k>, 0: not made */
    int new_pos[WALK_MAX_NEW];      /* its index - I, in creation order */
    char new_feat[WALK_MAX_NEW];    /* features written: a vector */
    char new_hidden[WALK_MAX_NEW];
    uint64_t new_edit[WALK_MAX_NEW]; /* the edit count after its last edit
                                       since the base, 0: none */
    uint64_t item_writes;           /* item edits, as the stamp counts */
    int n_made;
    int pair_user[WALK_MAX_PAIRS], pair_item[WALK_MAX_PAIRS]; /* item < 0:
                                      new item -item - 1 */
    uint64_t pair_seq[WALK_MAX_PAIRS];
    int n_pairs;
};

/* The view index pair p's item resolves to, or -1. */
static int walk_index(const struct walk_model *m, int p)
{
    int it = m->pair_item[p];

    if (it >= 0)
        return it;
    return m->new_seq[-it - 1] ? WALK_ITEMS + m->new_pos[-it - 1] : -1;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* What user u has seen since the base, sorted and unique, into out;
 * its count. *writes = its interactions, resolved or not. */
static size_t walk_expect(const struct walk_model *m, int u, int *out,
                          uint64_t *writes)
{
    size_t n = 0, w = 0;

    *writes = 0;
    for (int p = 0; p < m->n_pairs; p++) {
        int idx;
        if (m->pair_user[p] != u)
            continue;
        (*writes)++;
        if ((idx = walk_index(m, p)) >= 0)
            out[n++] = idx;
    }
    qsort(out, n, sizeof(int), cmp_int);
    for (size_t k = 0; k < n; k++)
        if (w == 0 || out[w - 1] != out[k])
            out[w++] = out[k];
    return w;
}

/* 1 when ov answers for user u as model m says. */
static int walk_agrees(const struct sgbd_overlay *ov,
                       const struct walk_model *m, int u)
{
    static int want[WALK_MAX_PAIRS];
    char id[16];
    const uint32_t *seen;
    uint64_t writes;
    size_t n = walk_expect(m, u, want, &writes), got;
    int rc;

    snprintf(id, sizeof(id), "user%d", u);
    if (sgbd_overlay_user_writes(ov, id, strlen(id)) != writes)
        return 0;
    rc = sgbd_overlay_user_seen(ov, id, strlen(id), &seen, &got);
    if (writes == 0)
        return rc == SGBD_E_NOTFOUND;
    if (rc != 0 || got != n)
        return 0;
    for (size_t k = 0; k < n; k++)
        if ((int)seen[k] != want[k])
            return 0;
    return 1;
}

/* 1 when ov's live items (what a scored request adds) are m's: the new
 * items with features that are not hidden. */
static int walk_live_agrees(const struct sgbd_overlay *ov,
                            const struct walk_model *m)
{
    const float *const *vecs;
    const uint32_t *index;
    size_t n = sgbd_overlay_live(ov, &vecs, &index), want = 0;
    char seen[WALK_MAX_NEW] = {0};

    for (int k = 0; k < WALK_MAX_NEW; k++)
        want += m->new_seq[k] && m->new_feat[k] && !m->new_hidden[k];
    if (n != want)
        return 0;
    for (size_t j = 0; j < n; j++) {
        int k = 0;
        while (k < WALK_MAX_NEW && !(m->new_seq[k] &&
                                     (uint32_t)(WALK_ITEMS + m->new_pos[k]) ==
                                         index[j]))
            k++;
        if (k == WALK_MAX_NEW || !m->new_feat[k] || m->new_hidden[k] ||
            seen[k]++ || !vecs[j])
            return 0;
    }
    return 1;
}

/* 1 when ov's index of edits is m's: each new item edited since the base
 * once, at its last edit, in the order of those edits. */
static int walk_edits_agree(const struct sgbd_overlay *ov,
                            const struct walk_model *m, uint64_t writes0)
{
    const struct sgbd_overlay_item *const *ed;
    size_t n = sgbd_overlay_edited_since(ov, 0, &ed), want = 0;
    char id[16];

    if (sgbd_overlay_stamp(ov).item_writes != writes0 + m->item_writes)
        return 0;
    for (int k = 0; k < WALK_MAX_NEW; k++)
        want += m->new_edit[k] > 0;
    if (n != want)
        return 0;
    for (size_t j = 0; j < n; j++) {
        int k = atoi(ed[j]->id + 1);
        snprintf(id, sizeof(id), "n%d", k);
        if (strcmp(id, ed[j]->id) != 0 || k >= WALK_MAX_NEW ||
            writes0 + m->new_edit[k] != ed[j]->write_no ||
            (j > 0 && ed[j - 1]->write_no >= ed[j]->write_no))
            return 0;
    }
    return 1;
}

/* Hold ov (as model m said) as the newest of the kept overlays. */
static void walk_keep(struct sgbd_overlay **kept, struct walk_model *kept_m,
                      struct sgbd_overlay *ov, const struct walk_model *m)
{
    sgbd_overlay_unref(kept[WALK_KEEP - 1]);
    memmove(kept + 1, kept, (WALK_KEEP - 1) * sizeof(*kept));
    memmove(kept_m + 1, kept_m, (WALK_KEEP - 1) * sizeof(*kept_m));
    kept[0] = ov;
    kept_m[0] = *m;
}

/* m after a retrain that absorbed every write up to absorbed: the items
 * whose latest write is later, in the order they were made, and the
 * later pairs. */
static void walk_absorb(struct walk_model *m, uint64_t absorbed)
{
    static struct walk_model left;

    memset(&left, 0, sizeof(left));
    for (int pos = 0; pos < m->n_made; pos++)
        for (int k = 0; k < WALK_MAX_NEW; k++)
            if (m->new_seq[k] > absorbed && m->new_pos[k] == pos) {
                left.new_seq[k] = m->new_seq[k];
                left.new_feat[k] = m->new_feat[k];
                left.new_hidden[k] = m->new_hidden[k];
                /* a rebased entry has no edit since its new base */
                left.new_pos[k] = left.n_made++;
            }
    for (int p = 0; p < m->n_pairs; p++)
        if (m->pair_seq[p] > absorbed) {
            left.pair_user[left.n_pairs] = m->pair_user[p];
            left.pair_item[left.n_pairs] = m->pair_item[p];
            left.pair_seq[left.n_pairs++] = m->pair_seq[p];
        }
    left.item_writes = m->item_writes;
    *m = left;
}

/*
 * A random walk of derives (interactions of thousands of users, some with
 * items nobody knows yet and made later; puts and deletes of new items)
 * and two rebases. After every step the newest overlay, and the last
 * WALK_KEEP ones, still held, answer as the model did when each was
 * made, for users, for the items a scored request adds and for the
 * index of edits the answer cache reads: a derive
 * shares the user buckets it does not touch, and a derive of
 * interactions only shares the items whole, and must change none of
 * them.
 */
static void test_snapshot_overlay_many_users_walk(void)
{
    static struct walk_model m, kept_m[WALK_KEEP];
    static struct sgbd_overlay_edit ed[2048];
    float f[FAKE_DC] = {1, 2, 3, 4};
    struct sgbd_item_features feat = {1, {{"image", FAKE_DC, f}}};
    static char item_ids[2048][16], user_ids[2048][16];
    struct sgbd_overlay *ov0, *ov, *next, *kept[WALK_KEEP] = {0};
    struct sgbd_snapshot *bases[3] = {make_versioned(2, 3, WALK_ITEMS, 4)};
    struct sgbd_rng r;
    uint64_t seq = bases[0]->absorbed_seq, pi, pn, writes0;
    int n_bases = 1, bad = 0;

    sgbd_rng_init(&r, 7, 0);
    CHECK_INT(sgbd_overlay_new_empty(&ov0), 0);
    CHECK_INT(sgbd_overlay_rebase(&ov, ov0, bases[0]), 0);
    sgbd_overlay_unref(ov0);
    writes0 = sgbd_overlay_stamp(ov).item_writes;
    for (int step = 0; step < 400 && !bad; step++) {
        /* the first derive alone fills buckets past their first size */
        int n = step == 0 ? 2000
                          : 1 + (int)(sgbd_rng_u64(&r) %
                                      (step % 50 ? 6 : 64));

        walk_keep(kept, kept_m, ov, &m);
        for (int e = 0; e < n; e++) {
            uint64_t x = sgbd_rng_u64(&r) % 100;
            int u = (int)(sgbd_rng_u64(&r) % WALK_USERS), it;

            memset(&ed[e], 0, sizeof(ed[e]));
            ed[e].seq = ++seq;
            ed[e].item_id = item_ids[e];
            if (x < 85 && m.n_pairs < WALK_MAX_PAIRS) {
                /* mostly base items; some new ones, made or not yet */
                it = x < 65 ? (int)(sgbd_rng_u64(&r) % WALK_ITEMS)
                            : -1 - (int)(sgbd_rng_u64(&r) % WALK_MAX_NEW);
                snprintf(item_ids[e], 16, it >= 0 ? "i%d" : "n%d",
                         it >= 0 ? it : -it - 1);
                snprintf(user_ids[e], 16, "user%d", u);
                ed[e].op = SGBD_OVERLAY_SEEN;
                ed[e].user_id = user_ids[e];
                m.pair_user[m.n_pairs] = u;
                m.pair_item[m.n_pairs] = it;
                m.pair_seq[m.n_pairs++] = seq;
            } else {
                /* a put with features, one without (the vector stays),
                 * or a delete; any of them makes an item not made yet */
                it = (int)(sgbd_rng_u64(&r) % WALK_MAX_NEW);
                snprintf(item_ids[e], 16, "n%d", it);
                ed[e].op = x % 3 == 2 ? SGBD_OVERLAY_DELETE_ITEM
                                      : SGBD_OVERLAY_PUT_ITEM;
                ed[e].feat = x % 3 == 0 ? &feat : NULL;
                if (!m.new_seq[it])
                    m.new_pos[it] = m.n_made++;
                m.new_seq[it] = seq;
                m.new_feat[it] |= x % 3 == 0;
                m.new_hidden[it] = x % 3 == 2;
                m.new_edit[it] = ++m.item_writes;
            }
        }
        if (sgbd_overlay_derive(&next, ov, bases[n_bases - 1], ed,
                                (size_t)n) != 0) {
            CHECK(0);
            break;
        }
        ov = next;
        if (step == 150 || step == 300) {
            /* a retrain absorbed the first half of what is pending */
            struct sgbd_snapshot *nb = make_versioned(3, 3, WALK_ITEMS, 4);
            uint64_t from = bases[n_bases - 1]->absorbed_seq;

            nb->absorbed_seq = from + (seq - from) / 2;
            walk_keep(kept, kept_m, ov, &m);
            walk_absorb(&m, nb->absorbed_seq);
            CHECK_INT(sgbd_overlay_rebase(&ov, kept[0], nb), 0);
            bases[n_bases++] = nb;  /* held overlays may point into bases */
        }
        /* the newest: every user now and then, a sample at each step */
        for (int u = 0; u < WALK_USERS && !bad; u += step % 40 ? 97 : 1)
            bad |= !walk_agrees(ov, &m, u);
        sgbd_overlay_pending(ov, &pi, &pn);
        bad |= pn != (uint64_t)m.n_pairs || pi != (uint64_t)m.n_made;
        bad |= !walk_live_agrees(ov, &m) || !walk_edits_agree(ov, &m, writes0);
        for (int k = 0; k < WALK_KEEP && kept[k] && !bad; k++) {
            bad |= !walk_live_agrees(kept[k], &kept_m[k]) ||
                   !walk_edits_agree(kept[k], &kept_m[k], writes0);
            for (int j = 0; j < WALK_PROBES && !bad; j++)
                bad |= !walk_agrees(kept[k], &kept_m[k],
                                    (j * 131 + step * 7) % WALK_USERS);
        }
        if (bad)
            fprintf(stderr, "  overlay walk: disagrees at step %d\n", step);
    }
    CHECK(!bad);
    for (int k = 0; k < WALK_KEEP; k++)
        sgbd_overlay_unref(kept[k]);
    sgbd_overlay_unref(ov);
    for (int b = 0; b < n_bases; b++)
        sgbd_snapshot_free(bases[b]);
}

static void test_snapshot_overlay_without_model_then_first_publish(void)
{
    float f[FAKE_DC] = {0, 0, 0, 5};
    struct sgbd_item_features feat = {1, {{"image", FAKE_DC, f}}};
    struct sgbd_overlay_edit ed = {SGBD_OVERLAY_PUT_ITEM, 4000, "fresh",
                                   NULL, &feat};
    struct sgbd_snapshot_slot *slot;
    const struct sgbd_overlay_item *e;
    struct sgbd_view v;

    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    CHECK_INT(sgbd_snapshot_apply(slot, &ed, 1), 0);
    sgbd_snapshot_acquire(slot, &v);
    e = sgbd_overlay_find_item(v.ov, "fresh", 5);
    CHECK(e && e->vec == NULL);
    sgbd_snapshot_release(&v);
    CHECK_INT(sgbd_snapshot_publish(slot, make_versioned(2, 3, 4, 4), 0), 0);
    sgbd_snapshot_acquire(slot, &v);
    e = sgbd_overlay_find_item(v.ov, "fresh", 5);
    CHECK(e && e->vec && e->index == 4);
    CHECK_NEAR(e->vec[3], 10, 1e-6);
    sgbd_snapshot_release(&v);
    sgbd_snapshot_slot_free(slot);
}

/* ---- the swap under continuous concurrent readers ---- */

#define SWAP_U 4000
#define SWAP_I 3000
#define SWAP_D 32
#define READERS 3

struct swap_ctx {
    struct sgbd_snapshot_slot *slot;
    atomic_int stop;
    atomic_long reads, failures, backwards;
};

/* One "request": every value this pin shows must encode one version. */
static int check_view(const struct sgbd_view *v, uint32_t salt)
{
    const struct sgbd_snapshot *s = v->snap;
    float want = (float)v->version;
    uint32_t u = salt % s->n_users, i = (salt / 7) % s->n_items;

    if (s->version != v->version || s->n_items != SWAP_I)
        return 0;
    for (size_t d = 0; d < s->dim; d++)
        if (s->users[(size_t)u * s->dim + d] != want ||
            fabsf(s->items[(size_t)i * s->dim + d] - want - i * 1e-3f) > 1e-3f)
            return 0;
    return s->absorbed_seq == v->version * 1000;
}

static void *swap_reader(void *arg)
{
    struct swap_ctx *c = arg;
    uint64_t last = 0;
    uint32_t salt = (uint32_t)(uintptr_t)&last;

    while (!atomic_load(&c->stop)) {
        struct sgbd_view v;
        sgbd_snapshot_acquire(c->slot, &v);
        salt = salt * 1664525u + 1013904223u;
        if (!v.snap || !check_view(&v, salt))
            atomic_fetch_add(&c->failures, 1);
        if (v.version < last)
            atomic_fetch_add(&c->backwards, 1);
        last = v.version;
        sgbd_snapshot_release(&v);
        atomic_fetch_add(&c->reads, 1);
    }
    return NULL;
}

static long rss_kb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_snapshot_swap_under_concurrent_readers(void)
{
    struct swap_ctx c = {0};
    pthread_t th[READERS];
    long before, after, snap_kb, live, live_bytes;
    int versions = 40;

    CHECK_INT(sgbd_snapshot_slot_new(&c.slot), 0);
    CHECK_INT(sgbd_snapshot_publish(c.slot, make_versioned(1, SWAP_U, SWAP_I,
                                                           SWAP_D), 0), 0);
    before = rss_kb();
    snap_kb = (long)((SWAP_U + 2L * SWAP_I) * SWAP_D * 4 / 1024);
    for (int t = 0; t < READERS; t++)
        CHECK(pthread_create(&th[t], NULL, swap_reader, &c) == 0);

    for (int ver = 2; ver <= versions + 1; ver++) {
        struct sgbd_snapshot *s = make_versioned((uint64_t)ver, SWAP_U,
                                                 SWAP_I, SWAP_D);
        char id[32];
        struct sgbd_overlay_edit ed = {SGBD_OVERLAY_SEEN,
                                       (uint64_t)ver * 1000 + 1, id, "u1",
                                       NULL};
        if (!s || sgbd_snapshot_publish(c.slot, s, 0) != 0)
            atomic_fetch_add(&c.failures, 1000000);
        snprintf(id, sizeof(id), "i%d", ver % SWAP_I);
        if (sgbd_snapshot_apply(c.slot, &ed, 1) != 0)
            atomic_fetch_add(&c.failures, 1000000);
        usleep(2000);
    }
    atomic_store(&c.stop, 1);
    for (int t = 0; t < READERS; t++)
        pthread_join(th[t], NULL);
    after = rss_kb();

    sgbd_snapshot_live(&live, &live_bytes);
    fprintf(stderr, "  %ld reads over %d swaps, rss %ld -> %ld kB "
            "(one snapshot %ld kB), %ld live\n", (long)c.reads, versions,
            before, after, snap_kb, live);
    CHECK_INT(c.failures, 0);
    CHECK_INT(c.backwards, 0);
    CHECK(c.reads > versions);
    CHECK_INT(live, 1); /* every replaced snapshot was freed */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    /* 40 leaked snapshots would be 40 x snap_kb; allow one in flight.
     * (Sanitizers keep freed memory in quarantine: counted above.) */
    CHECK(after - before < 2 * snap_kb);
#endif
    sgbd_snapshot_slot_free(c.slot);
    sgbd_snapshot_live(&live, &live_bytes);
    CHECK_INT(live, 0);
    CHECK_INT(live_bytes, 0);
}

/* ---- the same through the API: every response of one version ---- */

#define API_U 200
#define API_I 300
#define API_D 4

/* U rows are all v, V row i is all (1 + i / 1024): a score is
 * D v (1 + i / 1024), so each item of a response names its version. */
static struct sgbd_snapshot *make_api_versioned(uint64_t v)
{
    struct sgbd_snapshot *s;

    if (sgbd_snapshot_new(&s, v, API_U, API_I, API_D) != 0)
        return NULL;
    for (size_t k = 0; k < (size_t)API_U * API_D; k++)
        s->users[k] = (float)v;
    for (size_t k = 0; k < (size_t)API_I * API_D; k++)
        s->items[k] = 1.0f + (float)(k / API_D) / 1024.0f;
    if (sgbd_snapshot_finish(s) != 0) {
        sgbd_snapshot_free(s);
        return NULL;
    }
    return s;
}

struct api_ctx {
    struct sgbd_api *api;
    atomic_int stop;
    atomic_long reads, failures, backwards, mixed;
};

/* 0 when r is one version's response; -1 failed, -2 mixed versions. */
static int check_reply(const char *body, size_t len, uint64_t *ver)
{
    json_t *j = json_loadb(body, len, 0, NULL), *items, *it;
    size_t k;
    int rc = 0;

    if (!j)
        return -1;
    *ver = (uint64_t)json_integer_value(json_object_get(j, "model_version"));
    items = json_object_get(j, "items");
    if (!json_is_array(items) || json_array_size(items) != 10)
        rc = -1;
    json_array_foreach(items, k, it) {
        const char *id = json_string_value(json_object_get(it, "item_id"));
        double sc = json_number_value(json_object_get(it, "score"));
        double i = id ? atof(id + 1) : -1;
        double v = sc / (API_D * (1.0 + i / 1024.0));
        if (fabs(v - (double)*ver) > 1e-3 * (double)*ver)
            rc = -2;
    }
    json_decref(j);
    return rc;
}

static void *api_reader(void *arg)
{
    struct api_ctx *c = arg;
    uint64_t last = 0;
    unsigned u = 0;

    while (!atomic_load(&c->stop)) {
        struct sgbd_api_request req = {0};
        struct sgbd_api_response resp;
        char path[64];
        uint64_t ver = 0;
        int rc;

        snprintf(path, sizeof(path), "/v1/users/u%u/recommendations",
                 u++ % API_U);
        req.method = "GET";
        req.path = path;
        if (sgbd_api_begin(c->api, &req, &resp) == 0)
            sgbd_api_handle(c->api, &req, &resp);
        rc = resp.status == 200 ? check_reply(resp.body, resp.len, &ver) : -1;
        sgbd_api_finish(c->api, &req, &resp, 0);
        sgbd_api_response_clear(&resp);
        if (rc == -1)
            atomic_fetch_add(&c->failures, 1);
        if (rc == -2)
            atomic_fetch_add(&c->mixed, 1);
        if (ver < last)
            atomic_fetch_add(&c->backwards, 1);
        last = ver;
        atomic_fetch_add(&c->reads, 1);
    }
    return NULL;
}

static void test_snapshot_api_responses_consistent_under_swaps(void)
{
    struct sgbd_snapshot_slot *slot;
    struct sgbd_config cfg;
    struct api_ctx c = {0};
    struct sgbd_api_opts o;
    pthread_t th[READERS];
    long live, bytes;

    sgbd_config_defaults(&cfg);
    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    o = (struct sgbd_api_opts){&cfg, NULL, slot, NULL};
    CHECK_INT(sgbd_api_new(&c.api, &o), 0);
    CHECK_INT(sgbd_snapshot_publish(slot, make_api_versioned(1), 0), 0);
    for (int t = 0; t < READERS; t++)
        CHECK(pthread_create(&th[t], NULL, api_reader, &c) == 0);
    for (uint64_t v = 2; v <= 60; v++) {
        char uid[16], iid[16];
        struct sgbd_overlay_edit ed = {SGBD_OVERLAY_SEEN, 0, iid, uid, NULL};
        snprintf(uid, sizeof(uid), "u%u", (unsigned)(v % API_U));
        snprintf(iid, sizeof(iid), "i%u", (unsigned)(v % API_I));
        ed.seq = sgbd_snapshot_slot_next_seq(slot);
        if (sgbd_snapshot_apply(slot, &ed, 1) != 0 ||
            sgbd_snapshot_publish(slot, make_api_versioned(v), 0) != 0)
            atomic_fetch_add(&c.failures, 1000000);
        usleep(3000);
    }
    atomic_store(&c.stop, 1);
    for (int t = 0; t < READERS; t++)
        pthread_join(th[t], NULL);
    fprintf(stderr, "  %ld API responses over 59 swaps\n", (long)c.reads);
    CHECK_INT(c.failures, 0);
    CHECK_INT(c.mixed, 0);
    CHECK_INT(c.backwards, 0);
    CHECK(c.reads > 59);
    sgbd_api_free(c.api);
    sgbd_snapshot_slot_free(slot);
    sgbd_snapshot_live(&live, &bytes);
    CHECK_INT(live, 0);
}

/* One call through the API: the parsed body, NULL unless 200. */
static json_t *api_call(struct sgbd_api *api, struct sgbd_api_request *req,
                        const char *body)
{
    struct sgbd_api_response resp;
    json_t *j = NULL;

    if (body) {
        req->content_type = "application/json";
        req->content_length = (int64_t)strlen(body);
    }
    if (sgbd_api_begin(api, req, &resp) == 0) {
        req->body = body;
        req->body_len = body ? strlen(body) : 0;
        sgbd_api_handle(api, req, &resp);
    }
    if (resp.status == 200)
        j = json_loadb(resp.body, resp.len, 0, NULL);
    sgbd_api_finish(api, req, &resp, 0);
    sgbd_api_response_clear(&resp);
    return j;
}

/* GET path?k=25. */
static json_t *api_get_k25(struct sgbd_api *api, const char *path)
{
    struct sgbd_api_request req = {0};

    req.method = "GET";
    req.path = path;
    req.n_args = 1;
    req.args[0] = (struct sgbd_api_arg){"k", "25"};
    return api_call(api, &req, NULL);
}

/* POST /v1/recommendations for users u0 .. u0 + n, k 25. */
static json_t *api_batch_k25(struct sgbd_api *api, int u0, int n)
{
    struct sgbd_api_request req = {0};
    char body[1024];
    size_t len = 0;

    len += (size_t)snprintf(body, sizeof(body), "{\"k\": 25, \"user_ids\": [");
    for (int u = u0; u < u0 + n; u++)
        len += (size_t)snprintf(body + len, sizeof(body) - len, "%s\"u%d\"",
                                u > u0 ? ", " : "", u);
    snprintf(body + len, sizeof(body) - len, "]}");
    req.method = "POST";
    req.path = "/v1/recommendations";
    return api_call(api, &req, body);
}

/* The "items" of body j are item ids i<idx[0]> .. i<idx[n - 1]>. */
static void check_item_ids(json_t *j, const uint32_t *idx, size_t n)
{
    json_t *items = json_object_get(j, "items");
    char want[16];

    CHECK(j != NULL);
    CHECK_INT(json_array_size(items), n);
    for (size_t r = 0; r < n && r < json_array_size(items); r++) {
        snprintf(want, sizeof(want), "i%u", idx[r]);
        CHECK_STR(json_string_value(json_object_get(
                      json_array_get(items, r), "item_id")),
                  want);
    }
    json_decref(j);
}

/*
 * A catalogue large enough for the screens: the recommendations
 * (single and batched) and similar items the API serves are the plain
 * float scan's top k (over
 * the unseen items; over the unit rows but the item itself), in the same
 * order, and the snapshot counts the screens in its bytes.
 */
static void test_snapshot_served_top_k_is_the_plain_scan(void)
{
    enum { U = 30, I = 6000, D = 64, K = 25 };
    struct sgbd_snapshot_slot *slot;
    struct sgbd_snapshot *s;
    struct sgbd_config cfg;
    struct sgbd_api *api;
    struct sgbd_api_opts o;
    struct sgbd_rng rng;
    uint64_t ptr[U + 1];
    uint32_t seen[U], idx[K];
    float sc[K];
    char path[64];
    json_t *batch;

    sgbd_config_defaults(&cfg);
    CHECK_INT(sgbd_snapshot_slot_new(&slot), 0);
    o = (struct sgbd_api_opts){&cfg, NULL, slot, NULL};
    CHECK_INT(sgbd_api_new(&api, &o), 0);
    CHECK_INT(sgbd_snapshot_new(&s, 1, U, I, D), 0);
    sgbd_rng_init(&rng, 41, SGBD_RNG_SYNTH);
    for (size_t k = 0; k < (size_t)U * D; k++)
        s->users[k] = (float)sgbd_rng_normal(&rng);
    for (size_t k = 0; k < (size_t)I * D; k++)
        s->items[k] = (float)(0.1 * sgbd_rng_normal(&rng));
    ptr[0] = 0;
    for (int u = 0; u < U; u++) {
        ptr[u + 1] = ptr[u] + 1;
        seen[u] = (uint32_t)(u * 197 % I);
    }
    CHECK_INT(sgbd_snapshot_set_seen(s, ptr, seen), 0);
    CHECK_INT(sgbd_snapshot_finish(s), 0);
    if (sgbd_topk_screen_supported(D)) /* 2 screens, 1 or 2 bytes a value */
        CHECK(sgbd_snapshot_bytes(s) >=
              2 * (size_t)I * D * (s->items_screen.v ? 2 : 1) +
                  2 * (size_t)I * D * 4);
    CHECK_INT(sgbd_snapshot_publish(slot, s, 0), 0);
    batch = api_batch_k25(api, 0, U);
    CHECK(batch != NULL);
    CHECK_INT(json_array_size(json_object_get(batch, "results")), U);
    for (int u = 0; u < U; u++) {
        uint64_t *bits = sgbd_bitset_new(I);

        sgbd_bitset_set(bits, seen[u]);
        CHECK_INT(sgbd_topk_user(s->users + (size_t)u * D,
                                 sgbd_mat_view(s->items, I, D), K, bits, idx,
                                 sc),
                  K);
        snprintf(path, sizeof(path), "/v1/users/u%d/recommendations", u);
        check_item_ids(api_get_k25(api, path), idx, K);
        check_item_ids(json_incref(json_array_get(
                           json_object_get(batch, "results"), (size_t)u)),
                       idx, K);
        sgbd_bitset_free(bits);
    }
    json_decref(batch);
    for (int j = 0; j < I; j += 997) {   /* similar items, on unit rows */
        uint64_t *bits = sgbd_bitset_new(I);

        sgbd_bitset_set(bits, (size_t)j);
        CHECK_INT(sgbd_topk_user(s->items_unit + (size_t)j * D,
                                 sgbd_mat_view(s->items_unit, I, D), K, bits,
                                 idx, sc),
                  K);
        snprintf(path, sizeof(path), "/v1/items/i%d/similar", j);
        check_item_ids(api_get_k25(api, path), idx, K);
        sgbd_bitset_free(bits);
    }
    sgbd_api_free(api);
    sgbd_snapshot_slot_free(slot);
}

int main(void)
{
    RUN(test_snapshot_ids_seen_and_popularity);
    RUN(test_snapshot_rejects_bad_input);
    RUN(test_snapshot_publish_order_and_views);
    RUN(test_snapshot_overlay_immediate_effects);
    RUN(test_snapshot_rebase_keeps_only_unabsorbed);
    RUN(test_snapshot_overlay_counts_and_orders_edits);
    RUN(test_snapshot_overlay_many_users_walk);
    RUN(test_snapshot_overlay_without_model_then_first_publish);
    RUN(test_snapshot_swap_under_concurrent_readers);
    RUN(test_snapshot_api_responses_consistent_under_swaps);
    RUN(test_snapshot_served_top_k_is_the_plain_scan);
    return harness_finish();
}
