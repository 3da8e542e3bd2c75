/* test_store.c - the LMDB store: layout, validation, batches, map growth,
 * snapshots, dataset build, backup, check, import. */
/* ctest: labels=unit,integration,concurrency timeout=180 */
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/cli.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/store.h"

static char root[] = "/tmp/sgbd-test-store-XXXXXX";
static int case_no;

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh store path for each case. */
static const char *fresh(char *buf, size_t n)
{
    snprintf(buf, n, "%s/db%d", root, ++case_no);
    return buf;
}

static struct sgbd_store *open_at(const char *path, size_t map, size_t max)
{
    struct sgbd_store_opts o;
    struct sgbd_store *s = NULL;

    sgbd_store_opts_defaults(&o);
    if (map)
        o.map_size = map;
    if (max)
        o.map_max = max;
    if (sgbd_store_open(&s, path, &o) < 0) {
        fprintf(stderr, "  open %s: %s\n", path, sgbd_err_detail(-1));
        return NULL;
    }
    return s;
}

static void fill(float *v, size_t n, float base)
{
    for (size_t i = 0; i < n; i++)
        v[i] = base + 0.001f * (float)i;
}

/* Channels image (8) and text (4), and items a, b, c with both. */
static int seed_catalogue(struct sgbd_store *s)
{
    float img[3][8], txt[3][4];
    struct sgbd_store_feature f[3][2];
    struct sgbd_store_item it[3];
    const char *ids[3] = {"a", "b", "c"};
    int rc = sgbd_store_channel_define(s, "image", 8);

    if (rc == 0)
        rc = sgbd_store_channel_define(s, "text", 4);
    for (int i = 0; i < 3; i++) {
        fill(img[i], 8, (float)i);
        fill(txt[i], 4, 10.0f + (float)i);
        f[i][0] = (struct sgbd_store_feature){"image", img[i], 8};
        f[i][1] = (struct sgbd_store_feature){"text", txt[i], 4};
        it[i] = (struct sgbd_store_item){ids[i], 2, f[i], "{\"x\":1}", 7};
    }
    return rc ? rc : sgbd_store_items_upsert(s, it, 3, NULL);
}

static struct sgbd_store_event event(const char *u, const char *i,
                                     int64_t ts, uint8_t label)
{
    struct sgbd_store_event e = {u, i, ts, 1.0f, 0, label};
    return e;
}

static void test_store_open_creates_and_reopens(void)
{
    char path[256];
    struct sgbd_store_counts c;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.items + c.users + c.interactions + c.checkpoints, 0);
    CHECK_INT(seed_catalogue(s), 0);
    sgbd_store_close(s);
    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.items, 3);
    CHECK_INT(c.channels, 2);
    sgbd_store_close(s);
}

static void test_store_read_only_open_of_nothing_fails(void)
{
    char path[256];
    struct sgbd_store_opts o;
    struct sgbd_store *s = NULL;

    sgbd_store_opts_defaults(&o);
    o.read_only = 1;
    CHECK(sgbd_store_open(&s, fresh(path, sizeof(path)), &o) < 0);
    CHECK(s == NULL);
    CHECK(access(path, F_OK) != 0);   /* read-only created nothing */
}

static void test_store_id_check_rejects_bad_ids(void)
{
    char long_id[SGBD_STORE_ID_MAX + 2];

    CHECK_INT(sgbd_store_id_check("item-42", "id"), 0);
    CHECK_INT(sgbd_store_id_check("h\xc3\xa9llo \xf0\x9f\x98\x80", "id"), 0);
    CHECK_INT(sgbd_store_id_check("", "id"), SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "empty"));
    memset(long_id, 'x', SGBD_STORE_ID_MAX);
    long_id[SGBD_STORE_ID_MAX] = '\0';
    CHECK_INT(sgbd_store_id_check(long_id, "id"), 0);
    long_id[SGBD_STORE_ID_MAX] = 'x';
    long_id[SGBD_STORE_ID_MAX + 1] = '\0';
    CHECK_INT(sgbd_store_id_check(long_id, "id"), SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "longer than 256"));
    CHECK_INT(sgbd_store_id_check("a\xff", "id"), SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "UTF-8"));
    CHECK_INT(sgbd_store_id_check("\xc0\x80", "id"), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_id_check("\xed\xa0\x80", "id"), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_id_check("\xe2\x82", "id"), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_id_check("\xf4\x90\x80\x80", "id"), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_id_check("tab\there", "id"), SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "control"));
    CHECK_INT(sgbd_store_id_check("del\x7f", "id"), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_id_check("c1\xc2\x85", "id"), SGBD_E_FORMAT);
}

static void test_store_items_get_back_what_was_put(void)
{
    char path[256], id[SGBD_STORE_ID_MAX + 1];
    struct sgbd_store_item_rec rec;
    uint32_t index;
    float want[8];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_item_get(s, "b", &rec), 0);
    CHECK_INT(rec.index, 1);
    CHECK_INT(rec.hidden, 0);
    CHECK(rec.updated_at_ms > 1600000000000ULL);
    CHECK_INT(rec.n_features, 2);
    CHECK_STR(rec.f[0].channel, "image");
    CHECK_INT(rec.f[0].dim, 8);
    fill(want, 8, 1.0f);
    CHECK(memcmp(rec.f[0].v, want, sizeof(want)) == 0);
    CHECK_STR(rec.f[1].channel, "text");
    CHECK_INT(rec.attrs_len, 7);
    CHECK(memcmp(rec.attrs, "{\"x\":1}", 7) == 0);
    sgbd_store_item_rec_free(&rec);

    CHECK_INT(sgbd_store_item_index(s, "c", &index), 0);
    CHECK_INT(index, 2);
    CHECK_INT(sgbd_store_item_id(s, 2, id, sizeof(id)), 0);
    CHECK_STR(id, "c");
    CHECK_INT(sgbd_store_item_id(s, 3, id, sizeof(id)), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_store_item_get(s, "zz", &rec), SGBD_E_NOTFOUND);
    sgbd_store_close(s);
}

static void test_store_upsert_merges_channels_and_attributes(void)
{
    char path[256];
    struct sgbd_store_item_rec rec;
    float txt[4] = {9, 8, 7, 6}, img[8];
    struct sgbd_store_feature f = {"text", txt, 4};
    struct sgbd_store_item it = {"a", 1, &f, NULL, 0};
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_items_upsert(s, &it, 1, NULL), 0);
    CHECK_INT(sgbd_store_item_get(s, "a", &rec), 0);
    fill(img, 8, 0.0f);
    CHECK_INT(rec.n_features, 2);
    CHECK(memcmp(rec.f[0].v, img, sizeof(img)) == 0);   /* image kept */
    CHECK(memcmp(rec.f[1].v, txt, sizeof(txt)) == 0);   /* text replaced */
    CHECK_INT(rec.attrs_len, 7);                        /* NULL keeps */
    sgbd_store_item_rec_free(&rec);

    it.n_features = 0;
    it.attrs = "";
    it.attrs_len = 0;                                   /* clears */
    CHECK_INT(sgbd_store_items_upsert(s, &it, 1, NULL), 0);
    CHECK_INT(sgbd_store_item_get(s, "a", &rec), 0);
    CHECK_INT(rec.attrs_len, 0);
    CHECK(rec.attrs == NULL);
    CHECK_INT(rec.n_features, 2);
    sgbd_store_item_rec_free(&rec);
    sgbd_store_close(s);
}

static void test_store_unchanged_upsert_keeps_updated_at(void)
{
    char path[256];
    struct sgbd_store_item_rec r1, r2;
    struct timespec pause = {0, 5000000};
    float txt[4];
    struct sgbd_store_feature f = {"text", txt, 4};
    struct sgbd_store_item it = {"a", 1, &f, "{\"x\":1}", 7};
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_item_get(s, "a", &r1), 0);
    nanosleep(&pause, NULL);
    fill(txt, 4, 10.0f);   /* the same vector as seeded */
    CHECK_INT(sgbd_store_items_upsert(s, &it, 1, NULL), 0);
    CHECK_INT(sgbd_store_item_get(s, "a", &r2), 0);
    CHECK(r1.updated_at_ms == r2.updated_at_ms);
    sgbd_store_item_rec_free(&r2);
    txt[0] = 99.0f;
    CHECK_INT(sgbd_store_items_upsert(s, &it, 1, NULL), 0);
    CHECK_INT(sgbd_store_item_get(s, "a", &r2), 0);
    CHECK(r2.updated_at_ms > r1.updated_at_ms);
    sgbd_store_item_rec_free(&r1);
    sgbd_store_item_rec_free(&r2);
    sgbd_store_close(s);
}

/* Counts and item b's vector: what a failed call must not change. */
struct state {
    struct sgbd_store_counts c;
    float b_image[8];
    uint64_t b_updated;
};

static int state_of(struct sgbd_store *s, struct state *st)
{
    struct sgbd_store_item_rec rec;
    int rc = sgbd_store_counts(s, &st->c);

    if (rc == 0)
        rc = sgbd_store_item_get(s, "b", &rec);
    if (rc < 0)
        return rc;
    memcpy(st->b_image, rec.f[0].v, sizeof(st->b_image));
    st->b_updated = rec.updated_at_ms;
    sgbd_store_item_rec_free(&rec);
    return 0;
}

static int state_same(struct sgbd_store *s, const struct state *before)
{
    struct state now;

    return state_of(s, &now) == 0 &&
           memcmp(&now.c, &before->c, sizeof(now.c)) == 0 &&
           memcmp(now.b_image, before->b_image, sizeof(now.b_image)) == 0 &&
           now.b_updated == before->b_updated;
}

/* A batch of a good new item "n", a change to "b", then bad item. */
static int bad_batch(struct sgbd_store *s, struct sgbd_store_item *bad)
{
    static float img[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct sgbd_store_feature f = {"image", img, 8};
    struct sgbd_store_item it[3] = {
        {"n", 1, &f, NULL, 0}, {"b", 1, &f, NULL, 0}, *bad,
    };

    return sgbd_store_items_upsert(s, it, 3, NULL);
}

static void test_store_bad_item_batches_change_nothing(void)
{
    char path[256], long_id[300];
    float img[8] = {0}, short_v[7] = {0}, nan_v[8] = {0};
    struct sgbd_store_feature good = {"image", img, 8};
    struct sgbd_store_feature narrow = {"image", short_v, 7};
    struct sgbd_store_feature nowhere = {"audio", img, 8};
    struct sgbd_store_feature nanf = {"image", nan_v, 8};
    struct sgbd_store_feature twice[2] = {good, good};
    struct state st;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);
    static char big[SGBD_STORE_ATTRS_MAX + 1];

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(state_of(s, &st), 0);
    memset(long_id, 'q', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    nan_v[3] = NAN;

    struct {
        struct sgbd_store_item it;
        int rc;
        const char *says;
    } cases[] = {
        {{"n", 1, &good, NULL, 0}, SGBD_E_EXISTS, "twice"},
        {{long_id, 1, &good, NULL, 0}, SGBD_E_FORMAT, "longer"},
        {{"x\xfe", 1, &good, NULL, 0}, SGBD_E_FORMAT, "UTF-8"},
        {{"x\n", 1, &good, NULL, 0}, SGBD_E_FORMAT, "control"},
        {{"w", 1, &narrow, NULL, 0}, SGBD_E_SHAPE, "has 7 values, expected 8"},
        {{"w", 1, &nowhere, NULL, 0}, SGBD_E_NOTFOUND, "not defined"},
        {{"w", 1, &nanf, NULL, 0}, SGBD_E_FORMAT, "not finite"},
        {{"w", 2, twice, NULL, 0}, SGBD_E_EXISTS, "given twice"},
        {{"w", 0, NULL, big, sizeof(big)}, SGBD_E_FORMAT, "attributes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = bad_batch(s, &cases[i].it);

        if (rc != cases[i].rc || !strstr(sgbd_err_detail(rc),
                                         cases[i].says))
            fprintf(stderr, "  case %zu: rc %d detail \"%s\"\n", i, rc,
                    sgbd_err_detail(rc));
        CHECK_INT(rc, cases[i].rc);
        CHECK(strstr(sgbd_err_detail(rc), cases[i].says));
        CHECK(state_same(s, &st));
    }
    sgbd_store_close(s);
}

static void test_store_channel_definitions_are_checked(void)
{
    char path[256], name[16];
    struct sgbd_store_channel ch[SGBD_MAX_CHANNELS];
    int n;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(sgbd_store_channel_define(s, "image", 8), 0);
    CHECK_INT(sgbd_store_channel_define(s, "image", 8), 0);
    CHECK_INT(sgbd_store_channel_define(s, "image", 9), SGBD_E_SHAPE);
    CHECK_INT(sgbd_store_channel_define(s, "bad name", 9), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_channel_define(s, "zero", 0), SGBD_E_FORMAT);
    for (int i = 1; i < SGBD_MAX_CHANNELS; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        CHECK_INT(sgbd_store_channel_define(s, name, (uint32_t)i), 0);
    }
    CHECK_INT(sgbd_store_channel_define(s, "one_more", 3), SGBD_E_LIMIT);
    CHECK_INT(sgbd_store_channels(s, ch, &n), 0);
    CHECK_INT(n, SGBD_MAX_CHANNELS);
    CHECK_STR(ch[0].name, "image");
    CHECK_INT(ch[0].width, 8);
    CHECK_STR(ch[7].name, "c7");
    CHECK_INT(ch[7].id, 7);
    sgbd_store_close(s);
}

static void test_store_users_are_created_in_order_and_unique(void)
{
    char path[256], id[64];
    const char *ids[] = {"u2", "u0", "u1"}, *dup[] = {"u9", "u9"};
    uint32_t idx[3];
    struct sgbd_store_counts c;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(sgbd_store_users_ensure(s, ids, 3, idx), 0);
    CHECK_INT(idx[0], 0);
    CHECK_INT(idx[2], 2);
    CHECK_INT(sgbd_store_users_ensure(s, ids + 1, 2, idx), 0);
    CHECK_INT(idx[0], 1);   /* existing users keep their index */
    CHECK_INT(sgbd_store_users_ensure(s, dup, 2, idx), SGBD_E_EXISTS);
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.users, 3);
    CHECK_INT(sgbd_store_user_id(s, 1, id, sizeof(id)), 0);
    CHECK_STR(id, "u0");
    CHECK_INT(sgbd_store_user_id(s, 0, id, 2), SGBD_E_LIMIT);
    sgbd_store_close(s);
}

static void test_store_interactions_append_and_dedup(void)
{
    char path[256];
    struct sgbd_store_event ev[4] = {
        event("alice", "a", 100, 0), event("bob", "b", 100, 0),
        event("alice", "c", 101, 1), event("alice", "a", 100, 0),
    };
    struct sgbd_store_interaction got[8];
    uint64_t seq[4];
    size_t n_new, n;
    uint32_t idx;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_interactions_append(s, ev, 4, seq, &n_new), 0);
    CHECK_INT(n_new, 3);
    CHECK_INT(seq[0], 1);
    CHECK_INT(seq[1], 2);
    CHECK_INT(seq[2], 3);
    CHECK_INT(seq[3], 1);   /* same as event 0: not appended again */
    CHECK_INT(sgbd_store_user_index(s, "bob", &idx), 0);
    CHECK_INT(idx, 1);

    CHECK_INT(sgbd_store_interactions_append(s, ev, 3, seq, &n_new), 0);
    CHECK_INT(n_new, 0);    /* a retry of the same batch */
    CHECK_INT(seq[2], 3);
    ev[0].kind = 2;         /* another kind is another event */
    CHECK_INT(sgbd_store_interactions_append(s, ev, 1, seq, &n_new), 0);
    CHECK_INT(n_new, 1);
    CHECK_INT(seq[0], 4);

    CHECK_INT(sgbd_store_interactions_since(s, 0, got, 8, &n), 0);
    CHECK_INT(n, 4);
    CHECK_INT(got[2].user, 0);
    CHECK_INT(got[2].item, 2);
    CHECK_INT(got[2].timestamp, 101);
    CHECK_INT(got[2].label, 1);
    CHECK_NEAR(got[2].weight, 1.0, 0);
    CHECK_INT(got[3].kind, 2);
    CHECK_INT(sgbd_store_interactions_since(s, 2, got, 1, &n), 0);
    CHECK_INT(n, 1);
    CHECK_INT(got[0].seq, 3);
    CHECK_INT(sgbd_store_interactions_since(s, 4, got, 8, &n), 0);
    CHECK_INT(n, 0);
    sgbd_store_close(s);
}

static void test_store_bad_event_batches_change_nothing(void)
{
    char path[256];
    struct sgbd_store_event ev[2] = {
        event("carol", "a", 1, 0), event("carol", "nope", 2, 0),
    };
    struct sgbd_store_counts before, after;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_counts(s, &before), 0);
    CHECK_INT(sgbd_store_interactions_append(s, ev, 2, NULL, NULL),
              SGBD_E_NOTFOUND);
    CHECK(strstr(sgbd_err_detail(SGBD_E_NOTFOUND),
                 "interaction 1: unknown item \"nope\""));
    ev[1] = event("carol\x01", "a", 2, 0);
    CHECK_INT(sgbd_store_interactions_append(s, ev, 2, NULL, NULL),
              SGBD_E_FORMAT);
    ev[1] = event("carol", "a", 2, 3);
    CHECK_INT(sgbd_store_interactions_append(s, ev, 2, NULL, NULL),
              SGBD_E_FORMAT);
    ev[1] = event("carol", "a", 2, 0);
    ev[1].weight = INFINITY;
    CHECK_INT(sgbd_store_interactions_append(s, ev, 2, NULL, NULL),
              SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_counts(s, &after), 0);
    CHECK(memcmp(&before, &after, sizeof(before)) == 0);
    sgbd_store_close(s);
}

static void test_store_hide_and_show_again(void)
{
    char path[256];
    struct sgbd_store_item_rec rec;
    struct sgbd_store_read *r;
    struct sgbd_store_item it = {"b", 0, NULL, NULL, 0};
    uint8_t hidden[3];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_item_hide(s, "b", 1), 0);
    CHECK_INT(sgbd_store_item_hide(s, "nope", 1), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_store_item_get(s, "b", &rec), 0);
    CHECK_INT(rec.hidden, 1);
    CHECK_INT(rec.attrs_len, 7);   /* hiding keeps the data */
    CHECK_INT(rec.n_features, 2);
    sgbd_store_item_rec_free(&rec);
    CHECK_INT(sgbd_store_read_begin(s, &r), 0);
    CHECK_INT(sgbd_store_read_hidden(r, hidden, 3), 0);
    sgbd_store_read_end(r);
    CHECK(hidden[0] == 0 && hidden[1] == 1 && hidden[2] == 0);
    CHECK_INT(sgbd_store_items_upsert(s, &it, 1, NULL), 0);
    CHECK_INT(sgbd_store_item_get(s, "b", &rec), 0);
    CHECK_INT(rec.hidden, 0);
    sgbd_store_item_rec_free(&rec);
    sgbd_store_close(s);
}

/* Items "m<k>" with one 1024-float vector each (4 KiB). */
static int upsert_wide(struct sgbd_store *s, int first, int n)
{
    static float v[64][1024];
    struct sgbd_store_feature f[64];
    struct sgbd_store_item it[64];
    char ids[64][16];

    for (int i = 0; i < n; i++) {
        snprintf(ids[i], sizeof(ids[i]), "m%d", first + i);
        fill(v[i], 1024, (float)(first + i));
        f[i] = (struct sgbd_store_feature){"wide", v[i], 1024};
        it[i] = (struct sgbd_store_item){ids[i], 1, &f[i], NULL, 0};
    }
    return sgbd_store_items_upsert(s, it, (size_t)n, NULL);
}

static void test_store_full_map_fails_cleanly(void)
{
    char path[256];
    struct sgbd_store_counts before, after;
    int k = 0, rc = 0;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 1 << 20,
                                   1 << 20);

    CHECK(s);
    CHECK_INT(sgbd_store_channel_define(s, "wide", 1024), 0);
    while (k < 400 && (rc = upsert_wide(s, k, 16)) == 0)
        k += 16;
    CHECK_INT(rc, SGBD_E_MAPFULL);
    CHECK(strstr(sgbd_err_detail(rc), "maximum"));
    CHECK(k > 0);
    CHECK_INT(sgbd_store_counts(s, &before), 0);
    CHECK_INT(before.items, k);
    CHECK_INT(upsert_wide(s, k, 16), SGBD_E_MAPFULL);
    CHECK_INT(sgbd_store_counts(s, &after), 0);
    CHECK(memcmp(&before, &after, sizeof(before)) == 0);
    CHECK_INT(sgbd_store_map_size(s), 1 << 20);
    sgbd_store_close(s);

    /* Reopened with room to grow, the same batch goes in. */
    s = open_at(path, 1 << 20, 64 << 20);
    CHECK(s);
    CHECK_INT(upsert_wide(s, k, 16), 0);
    CHECK_INT(sgbd_store_counts(s, &after), 0);
    CHECK_INT(after.items, k + 16);
    sgbd_store_close(s);
}

static void test_store_map_grows_on_demand(void)
{
    char path[256];
    struct sgbd_store_counts c;
    struct sgbd_store_item_rec rec;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 1 << 20,
                                   256 << 20);

    CHECK(s);
    CHECK_INT(sgbd_store_channel_define(s, "wide", 1024), 0);
    for (int k = 0; k < 2048; k += 64)
        CHECK_INT(upsert_wide(s, k, 64), 0);   /* 8 MiB of vectors */
    CHECK(sgbd_store_map_size(s) >= (8u << 20));
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.items, 2048);
    CHECK_INT(sgbd_store_item_get(s, "m2000", &rec), 0);
    CHECK_NEAR(rec.f[0].v[1], 2000.001, 1e-3);
    sgbd_store_item_rec_free(&rec);
    sgbd_store_close(s);
}

static int count_event(void *ctx, const struct sgbd_store_interaction *e)
{
    (*(size_t *)ctx)++;
    return 0;
}

static void test_store_snapshot_does_not_see_later_writes(void)
{
    char path[256];
    struct sgbd_store_event ev = event("alice", "a", 1, 0);
    struct sgbd_store_counts c;
    struct sgbd_store_read *r;
    size_t seen = 0;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_interactions_append(s, &ev, 1, NULL, NULL), 0);
    CHECK_INT(sgbd_store_read_begin(s, &r), 0);
    ev.timestamp = 2;
    CHECK_INT(sgbd_store_interactions_append(s, &ev, 1, NULL, NULL), 0);
    CHECK_INT(sgbd_store_read_counts(r, &c), 0);
    CHECK_INT(c.interactions, 1);
    CHECK_INT(sgbd_store_read_interactions(r, 0, count_event, &seen), 0);
    CHECK_INT(seen, 1);
    sgbd_store_read_end(r);
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.interactions, 2);
    sgbd_store_close(s);
}

static void test_store_write_needing_growth_under_own_snapshot_is_busy(void)
{
    char path[256];
    struct sgbd_store_read *r;
    int rc = 0, k = 0;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 1 << 20,
                                   64 << 20);

    CHECK(s);
    CHECK_INT(sgbd_store_channel_define(s, "wide", 1024), 0);
    CHECK_INT(sgbd_store_read_begin(s, &r), 0);
    while (k < 1024 && (rc = upsert_wide(s, k, 16)) == 0)
        k += 16;
    sgbd_store_read_end(r);
    CHECK_INT(rc, SGBD_E_BUSY);   /* not a deadlock */
    CHECK_INT(upsert_wide(s, k, 16), 0);
    sgbd_store_close(s);
}

struct worker {
    struct sgbd_store *s;
    int id, rc;
};

/* 100 batches of 10 events of user "t<id>", all distinct. */
static void *append_worker(void *arg)
{
    struct worker *w = arg;
    char user[16];

    snprintf(user, sizeof(user), "t%d", w->id);
    for (int b = 0; b < 100 && w->rc == 0; b++) {
        struct sgbd_store_event ev[10];

        for (int k = 0; k < 10; k++)
            ev[k] = event(user, "a", b * 10 + k, 0);
        w->rc = sgbd_store_interactions_append(w->s, ev, 10, NULL, NULL);
    }
    return NULL;
}

/* Wide items until the map has grown several times, reading meanwhile. */
static void *grow_worker(void *arg)
{
    struct worker *w = arg;
    struct sgbd_store_counts c;

    for (int k = 0; k < 1024 && w->rc == 0; k += 64) {
        w->rc = upsert_wide(w->s, k, 64);
        if (w->rc == 0)
            w->rc = sgbd_store_counts(w->s, &c);
    }
    return NULL;
}

/* One round: a fresh 1 MiB map grown by one writer under four others,
 * whose commits meet MDB_MAP_FULL while it grows. */
static void write_while_the_map_grows(void)
{
    char path[256];
    struct sgbd_store_counts c;
    struct worker w[5];
    pthread_t t[5];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 1 << 20,
                                   256 << 20);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_channel_define(s, "wide", 1024), 0);
    for (int i = 0; i < 5; i++) {
        w[i] = (struct worker){s, i, 0};
        CHECK(pthread_create(&t[i], NULL, i ? append_worker : grow_worker,
                             &w[i]) == 0);
    }
    for (int i = 0; i < 5; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 5; i++)
        CHECK_INT(w[i].rc, 0);
    CHECK(sgbd_store_map_size(s) >= (4u << 20));
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.interactions, 4000);
    CHECK_INT(c.users, 4);
    CHECK_INT(c.items, 3 + 1024);
    sgbd_store_close(s);
}

/* Several rounds, so that ThreadSanitizer sees the failing commits of the
 * writers that lose the race with growth. */
static void test_store_threads_write_while_the_map_grows(void)
{
    for (int round = 0; round < 4; round++)
        write_while_the_map_grows();
}

static void test_store_read_channel_zero_fills_missing_rows(void)
{
    char path[256];
    struct sgbd_store_item bare = {"d", 0, NULL, NULL, 0};
    struct sgbd_store_read *r;
    float m[4][4], want[4];
    uint8_t present[4];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_items_upsert(s, &bare, 1, NULL), 0);
    CHECK_INT(sgbd_store_read_begin(s, &r), 0);
    CHECK_INT(sgbd_store_read_channel(r, "text", &m[0][0], 4, 4, present),
              0);
    CHECK_INT(sgbd_store_read_channel(r, "text", &m[0][0], 4, 5, NULL),
              SGBD_E_SHAPE);
    CHECK_INT(sgbd_store_read_channel(r, "audio", &m[0][0], 4, 4, NULL),
              SGBD_E_NOTFOUND);
    sgbd_store_read_end(r);
    fill(want, 4, 12.0f);
    CHECK(memcmp(m[2], want, sizeof(want)) == 0);
    CHECK(m[3][0] == 0 && m[3][3] == 0);
    CHECK(present[0] && present[2] && !present[3]);
    sgbd_store_close(s);
}

static void test_store_dataset_follows_stored_labels(void)
{
    char path[256];
    struct sgbd_store_event ev[6] = {
        event("u0", "a", 1, 0), event("u0", "b", 2, 0),
        event("u0", "c", 3, 1), event("u1", "b", 4, 0),
        event("u1", "a", 5, 2), event("u1", "a", 6, 0),
    };
    struct sgbd_store_item bare = {"d", 0, NULL, NULL, 0};
    const char *late_user = "u2";
    struct sgbd_dataset ds;
    struct sgbd_features f;
    uint64_t last;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(sgbd_store_load_dataset(s, &ds, NULL, NULL), SGBD_E_NOTFOUND);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_items_upsert(s, &bare, 1, NULL), 0);
    CHECK_INT(sgbd_store_interactions_append(s, ev, 6, NULL, NULL), 0);
    CHECK_INT(sgbd_store_users_ensure(s, &late_user, 1, NULL), 0);
    CHECK_INT(sgbd_store_load_dataset(s, &ds, &f, &last), 0);
    CHECK_INT(last, 6);
    CHECK_INT(ds.n_users, 3);    /* u2 has no events yet but a row */
    CHECK_INT(ds.n_items, 4);    /* d too */
    CHECK_INT(ds.n_train, 4);    /* duplicates kept, in log order */
    CHECK_INT(ds.train_users[3], 1);
    CHECK_INT(ds.train_items[3], 0);
    CHECK(sgbd_itemsets_has(&ds.valid, 0, 2));
    CHECK(sgbd_itemsets_has(&ds.test, 1, 0));
    CHECK(!sgbd_itemsets_has(&ds.train, 0, 2));
    CHECK_INT(ds.train.ptr[3] - ds.train.ptr[2], 0);
    CHECK_INT(f.n, 2);
    CHECK_STR(f.ch[0].name, "image");
    CHECK_INT(f.ch[0].m.rows, 4);
    CHECK_INT(f.ch[1].m.cols, 4);
    CHECK_NEAR(sgbd_mat_row(f.ch[1].m, 1)[0], 11.0, 0);
    CHECK_NEAR(sgbd_mat_row(f.ch[1].m, 3)[0], 0.0, 0);
    sgbd_dataset_free(&ds);
    sgbd_features_free(&f);
    sgbd_store_close(s);
}

/* Lines reported by a check, into a counter. */
static void count_line(void *ctx, const char *line)
{
    fprintf(stderr, "    reported: %s\n", line);
    (*(int *)ctx)++;
}

static void test_store_check_finds_broken_id_maps(void)
{
    char path[256];
    struct sgbd_store_event ev = event("alice", "a", 1, 0);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    unsigned char key[4] = {0, 0, 0, 1};
    size_t problems;
    int lines = 0;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    CHECK_INT(sgbd_store_interactions_append(s, &ev, 1, NULL, NULL), 0);
    CHECK_INT(sgbd_store_check(s, count_line, &lines, &problems), 0);
    CHECK_INT(problems, 0);
    sgbd_store_close(s);

    /* Item index 1 now maps back to "zz" instead of "b". */
    CHECK_INT(mdb_env_create(&env), 0);
    CHECK_INT(mdb_env_set_maxdbs(env, 16), 0);
    CHECK_INT(mdb_env_open(env, path, 0, 0640), 0);
    CHECK_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_INT(mdb_dbi_open(txn, "item_ids", 0, &dbi), 0);
    k.mv_size = 4;
    k.mv_data = key;
    v.mv_size = 2;
    v.mv_data = "zz";
    CHECK_INT(mdb_put(txn, dbi, &k, &v, 0), 0);
    CHECK_INT(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_store_check(s, count_line, &lines, &problems), 0);
    CHECK(problems >= 1);
    CHECK_INT((size_t)lines, problems);
    sgbd_store_close(s);
}

/* A child that keeps the store open and writes until told to stop. */
static pid_t start_writer(const char *path, int *stop_fd)
{
    int go[2], ready[2];
    pid_t pid;
    char c;

    if (pipe(go) < 0 || pipe(ready) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        struct sgbd_store *s = open_at(path, 0, 0);
        int64_t ts = 1000;

        struct sgbd_store_event first = event("w", "a", ts++, 0);

        close(go[1]);
        fcntl(go[0], F_SETFL, O_NONBLOCK);
        if (!s || sgbd_store_interactions_append(s, &first, 1, NULL,
                                                 NULL) < 0 ||
            write(ready[1], "r", 1) != 1)
            _exit(3);
        while (read(go[0], &c, 1) != 1) {
            struct sgbd_store_event ev = event("w", "a", ts++, 0);

            if (sgbd_store_interactions_append(s, &ev, 1, NULL, NULL) < 0)
                _exit(4);
        }
        sgbd_store_close(s);
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    if (read(ready[0], &c, 1) != 1)
        pid = -1;
    close(ready[0]);
    *stop_fd = go[1];
    return pid;
}

static void test_store_backup_while_another_process_writes(void)
{
    char path[256], out[300];
    struct sgbd_store_opts o;
    struct sgbd_store_counts c;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);
    size_t problems = 9;
    int stop, status;
    pid_t pid;

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    sgbd_store_close(s);
    pid = start_writer(path, &stop);
    CHECK(pid > 0);

    s = open_at(path, 0, 0);
    CHECK(s);
    snprintf(out, sizeof(out), "%s/backup.mdb", root);
    CHECK_INT(sgbd_store_backup(s, out), 0);
    CHECK_INT(sgbd_store_backup(s, out), SGBD_E_EXISTS);
    sgbd_store_close(s);
    CHECK(write(stop, "s", 1) == 1);
    close(stop);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    sgbd_store_opts_defaults(&o);
    o.read_only = 1;
    CHECK_INT(sgbd_store_open(&s, out, &o), 0);
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.items, 3);
    CHECK_INT(c.users, 1);
    CHECK(c.interactions >= 1);
    CHECK_INT(sgbd_store_check(s, NULL, NULL, &problems), 0);
    CHECK_INT(problems, 0);
    sgbd_store_close(s);
}

/* LMDB resets the reader table when the first process opens the file,
 * so a stale slot only survives while another process holds the store:
 * a writer child keeps it open while a reader child dies. */
static void test_store_stale_reader_is_cleared_at_open(void)
{
    char path[256], log[4096] = {0};
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);
    int fds[2], status, stop;
    pid_t pid, holder;

    CHECK(s);
    CHECK_INT(seed_catalogue(s), 0);
    sgbd_store_close(s);
    holder = start_writer(path, &stop);
    CHECK(holder > 0);
    pid = fork();
    if (pid == 0) {
        struct sgbd_store_read *r;

        s = open_at(path, 0, 0);
        if (!s || sgbd_store_read_begin(s, &r) < 0)
            _exit(3);
        raise(SIGKILL);   /* dies holding a reader slot */
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(pipe(fds) == 0);
    sgbd_log_set_fd(fds[1]);
    s = open_at(path, 0, 0);
    sgbd_log_set_fd(2);
    close(fds[1]);
    CHECK(read(fds[0], log, sizeof(log) - 1) > 0);
    close(fds[0]);
    CHECK(s);
    sgbd_store_close(s);
    CHECK(write(stop, "s", 1) == 1);
    close(stop);
    CHECK(waitpid(holder, &status, 0) == holder);
    CHECK(strstr(log, "ev=store_stale_readers cleared=1"));
}

static int run_cli(int (*fn)(int, char **), const char *a0, const char *a1,
                   const char *a2, const char *a3, const char *a4,
                   const char *a5)
{
    char *argv[8] = {(char *)a0, (char *)a1, (char *)a2, (char *)a3,
                     (char *)a4, (char *)a5, NULL, NULL};
    int argc = 0;

    while (argv[argc])
        argc++;
    return fn(argc, argv);
}

/* Datasets equal row for row and set for set. */
static int same_sets(const struct sgbd_itemsets *a,
                     const struct sgbd_itemsets *b, uint32_t users)
{
    return memcmp(a->ptr, b->ptr, ((size_t)users + 1) * 8) == 0 &&
           memcmp(a->items, b->items, a->ptr[users] * 4) == 0;
}

static void test_store_import_scientific_matches_the_files(void)
{
    char data[4096], path[256];
    struct sgbd_dataset want, got;
    struct sgbd_features wf, gf;
    struct sgbd_store_counts c1, c2;
    struct sgbd_store *s;
    const char *dir = harness_data_dir("scientific", data, sizeof(data));

    if (!dir)
        SKIP("no scientific dataset");
    fresh(path, sizeof(path));
    CHECK_INT(run_cli(sgbd_cli_import, "import", "--data", dir, "--db",
                      path, "--quiet"), 0);
    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_store_counts(s, &c1), 0);
    sgbd_store_close(s);
    CHECK_INT(c1.users, 2928);
    CHECK_INT(c1.items, 1585);
    CHECK_INT(c1.interactions, 19568);
    CHECK_INT(c1.channels, 2);

    CHECK_INT(run_cli(sgbd_cli_import, "import", "--data", dir, "--db",
                      path, "--quiet"), 0);
    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_store_counts(s, &c2), 0);
    CHECK(memcmp(&c1, &c2, sizeof(c1)) == 0);   /* idempotent */

    CHECK_INT(sgbd_store_load_dataset(s, &got, &gf, NULL), 0);
    sgbd_store_close(s);
    CHECK_INT(sgbd_dataset_load_dir(&want, dir, NULL), 0);
    CHECK_INT(sgbd_features_load_dir(&wf, dir, want.n_items, NULL), 0);
    CHECK_INT(got.n_users, want.n_users);
    CHECK_INT(got.n_items, want.n_items);
    CHECK_INT(got.n_train, 13716);
    CHECK_INT(got.n_train, want.n_train);
    CHECK(memcmp(got.train_users, want.train_users, got.n_train * 4) == 0);
    CHECK(memcmp(got.train_items, want.train_items, got.n_train * 4) == 0);
    CHECK(same_sets(&got.valid, &want.valid, got.n_users));
    CHECK(same_sets(&got.test, &want.test, got.n_users));
    CHECK_INT(got.n_neg_items, want.n_neg_items);
    CHECK_INT(gf.n, 2);
    for (int ch = 0; ch < 2; ch++) {
        CHECK_STR(gf.ch[ch].name, wf.ch[ch].name);
        CHECK_INT(gf.ch[ch].m.cols, 512);
        CHECK(memcmp(gf.ch[ch].m.data, wf.ch[ch].m.data,
                     (size_t)1585 * 512 * 4) == 0);
    }
    sgbd_dataset_free(&want);
    sgbd_dataset_free(&got);
    sgbd_features_free(&wf);
    sgbd_features_free(&gf);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    sgbd_log_level = SGBD_LOG_WARNING;
    RUN(test_store_open_creates_and_reopens);
    RUN(test_store_read_only_open_of_nothing_fails);
    RUN(test_store_id_check_rejects_bad_ids);
    RUN(test_store_items_get_back_what_was_put);
    RUN(test_store_upsert_merges_channels_and_attributes);
    RUN(test_store_unchanged_upsert_keeps_updated_at);
    RUN(test_store_bad_item_batches_change_nothing);
    RUN(test_store_channel_definitions_are_checked);
    RUN(test_store_users_are_created_in_order_and_unique);
    RUN(test_store_interactions_append_and_dedup);
    RUN(test_store_bad_event_batches_change_nothing);
    RUN(test_store_hide_and_show_again);
    RUN(test_store_full_map_fails_cleanly);
    RUN(test_store_map_grows_on_demand);
    RUN(test_store_snapshot_does_not_see_later_writes);
    RUN(test_store_write_needing_growth_under_own_snapshot_is_busy);
    RUN(test_store_threads_write_while_the_map_grows);
    RUN(test_store_read_channel_zero_fills_missing_rows);
    RUN(test_store_dataset_follows_stored_labels);
    RUN(test_store_check_finds_broken_id_maps);
    RUN(test_store_backup_while_another_process_writes);
    RUN(test_store_stale_reader_is_cleared_at_open);
    RUN(test_store_import_scientific_matches_the_files);
    rm_rf(root);
    return harness_finish();
}
