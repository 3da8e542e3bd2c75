/*
 * store.c - the LMDB environment behind store.h: layout, transactions with
 * map growth, items, users, the interaction log, snapshots, backup, check
 * and the raw checkpoint chunks. LMDB is included nowhere else.
 *
 * Transactions of this process pass a gate (a reader-preferring rwlock):
 * each holds it shared for its life; growing or adopting the map size
 * takes it exclusive, which is how "no transaction active in the process"
 * (mdb_env_set_mapsize's precondition, serving.md 5.1) is guaranteed.
 */
#include "sgbd/store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/log.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "store values are little-endian host floats");

#define MIB ((size_t)1 << 20)
#define ITEM_HDR 20             /* item record bytes before the attributes */
#define INTER_REC 24            /* interaction record bytes */
#define IKEY_LEN 17             /* inter_keys key bytes */
#define CHUNK_KEY 12            /* (version BE64, chunk BE32) */
#define FEAT_KEY 6              /* (channel BE16, item BE32) */
#define MAX_WIDTH (1u << 20)
#define DELETE_BATCH 64         /* chunks deleted per transaction */

struct sgbd_store {
    MDB_env *env;
    MDB_dbi items, item_ids, features, channels, users, user_ids;
    MDB_dbi inter, inter_keys, ckpts, chunks, meta;
    pthread_rwlock_t gate;
    size_t map_cur, map_max;   /* written with the gate exclusive, read
                                  * with it held (mdb_fail reads map_cur) */
    int read_only;
    char *path;
};

struct sgbd_store_read {
    struct sgbd_store *s;
    MDB_txn *txn;
};

/* Shared holds of the gate by this thread, over every store: a thread
 * that holds one cannot wait for the gate exclusively. */
static _Thread_local int gate_held;

/* ---- Little helpers -------------------------------------------------- */

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const unsigned char *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static MDB_val val_of(const void *p, size_t n)
{
    MDB_val v = {n, (void *)p};
    return v;
}

static MDB_val val_str(const char *s)
{
    return val_of(s, strlen(s));
}

/* Translate an LMDB result into err.h, naming the store and the step. */
static int mdb_fail(const struct sgbd_store *s, int mrc, const char *what)
{
    const char *p = s->path;

    switch (mrc) {
    case MDB_MAP_FULL:
        return sgbd_errf(SGBD_E_MAPFULL, "%s: %s: map full at %zu MiB", p,
                         what, s->map_cur / MIB);
    case MDB_TXN_FULL:
        return sgbd_errf(SGBD_E_LIMIT, "%s: %s: transaction too large", p,
                         what);
    case MDB_READERS_FULL:
        return sgbd_errf(SGBD_E_LIMIT, "%s: %s: no free reader slot", p,
                         what);
    case MDB_NOTFOUND:
        return sgbd_errf(SGBD_E_NOTFOUND, "%s: %s: not found", p, what);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return sgbd_errf(SGBD_E_CORRUPT, "%s: %s: %s", p, what,
                         mdb_strerror(mrc));
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return sgbd_errf(SGBD_E_VERSION, "%s: %s: %s", p, what,
                         mdb_strerror(mrc));
    }
    if (mrc > 0)
        return sgbd_errf(-mrc, "%s: %s: %s", p, what, strerror(mrc));
    return sgbd_errf(SGBD_E_STORE, "%s: %s: %s", p, what, mdb_strerror(mrc));
}

static int corrupt(const struct sgbd_store *s, const char *db, size_t len)
{
    return sgbd_errf(SGBD_E_CORRUPT, "%s: %s: malformed record of %zu "
                     "bytes", s->path, db, len);
}

/* ---- The gate, transactions, map growth ------------------------------ */

static void gate_enter(struct sgbd_store *s)
{
    /* Only EAGAIN (read-lock count overflow) or EDEADLK can fail here,
     * neither reachable with the bounded nesting of this module. */
    while (pthread_rwlock_rdlock(&s->gate) == EAGAIN)
        sched_yield();
    gate_held++;
}

static void gate_leave(struct sgbd_store *s)
{
    gate_held--;
    pthread_rwlock_unlock(&s->gate);
}

static int gate_lock_exclusive(struct sgbd_store *s, const char *why)
{
    if (gate_held > 0)
        return sgbd_errf(SGBD_E_BUSY, "%s: cannot %s while this thread "
                         "holds a read snapshot", s->path, why);
    pthread_rwlock_wrlock(&s->gate);
    return 0;
}

/* Take the map size another process committed (MDB_MAP_RESIZED). */
static int adopt_map_size(struct sgbd_store *s)
{
    MDB_envinfo info;
    int rc = gate_lock_exclusive(s, "adopt the map size");
    int mrc;

    if (rc < 0)
        return rc;
    mrc = mdb_env_set_mapsize(s->env, 0);
    if (mrc == 0 && mdb_env_info(s->env, &info) == 0 &&
        info.me_mapsize > s->map_cur)
        s->map_cur = info.me_mapsize;
    rc = mrc ? mdb_fail(s, mrc, "adopt map size") : 0;
    pthread_rwlock_unlock(&s->gate);
    return rc;
}

/* Double the map (up to map_max) unless someone grew it since `seen`. */
static int grow_map(struct sgbd_store *s, size_t seen)
{
    size_t from, to;
    int rc = gate_lock_exclusive(s, "grow the map");
    int mrc = 0;

    if (rc < 0)
        return rc;
    from = s->map_cur;
    to = from;
    if (from == seen && from < s->map_max) {
        to = from > s->map_max / 2 ? s->map_max : from * 2;
        to = (to + MIB - 1) / MIB * MIB;
        mrc = mdb_env_set_mapsize(s->env, to);
        if (mrc == 0)
            s->map_cur = to;
    }
    if (mrc)
        rc = mdb_fail(s, mrc, "grow map");
    pthread_rwlock_unlock(&s->gate);
    if (rc < 0)
        return rc;
    if (from == seen && to == from)
        return sgbd_errf(SGBD_E_MAPFULL, "%s: map full at %zu MiB, the "
                         "configured maximum", s->path, from / MIB);
    if (to != from)
        SGBD_INFO("store_map_grown", "from_mb=%zu to_mb=%zu", from / MIB,
                  to / MIB);
    return 0;
}

static int txn_begin(struct sgbd_store *s, unsigned flags, MDB_txn **txn)
{
    for (int tries = 0;; tries++) {
        int mrc, rc;

        gate_enter(s);
        mrc = mdb_txn_begin(s->env, NULL, flags, txn);
        if (mrc == 0)
            return 0;
        if (mrc != MDB_MAP_RESIZED || tries >= 3) {
            rc = mdb_fail(s, mrc, "begin transaction");
            gate_leave(s);
            return rc;
        }
        gate_leave(s);
        rc = adopt_map_size(s);
        if (rc < 0)
            return rc;
    }
}

static void txn_abort(struct sgbd_store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    gate_leave(s);
}

static int txn_commit(struct sgbd_store *s, MDB_txn *txn)
{
    int mrc = mdb_txn_commit(txn);
    int rc = mrc ? mdb_fail(s, mrc, "commit") : 0;

    gate_leave(s);
    return rc;
}

typedef int (*txn_fn)(struct sgbd_store *s, MDB_txn *txn, void *ctx);

/*
 * Run fn in a write transaction and commit it. fn must only change the
 * store through txn and its out-parameters, because a full map aborts the
 * transaction, grows the map and runs fn again from the start.
 */
static int store_write(struct sgbd_store *s, txn_fn fn, void *ctx)
{
    if (s->read_only)
        return sgbd_errf(-EROFS, "%s: store opened read-only", s->path);
    for (;;) {
        MDB_txn *txn;
        size_t seen;
        int rc = txn_begin(s, 0, &txn);

        if (rc < 0)
            return rc;
        seen = s->map_cur;
        rc = fn(s, txn, ctx);
        if (rc == 0)
            rc = txn_commit(s, txn);
        else
            txn_abort(s, txn);
        if (rc != SGBD_E_MAPFULL)
            return rc;
        rc = grow_map(s, seen);
        if (rc < 0)
            return rc;
    }
}

/* Run fn in a short read transaction. */
static int store_read(struct sgbd_store *s, txn_fn fn, void *ctx)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);

    if (rc < 0)
        return rc;
    rc = fn(s, txn, ctx);
    txn_abort(s, txn);
    return rc;
}

/* mdb_put with translation; flags as LMDB's. */
static int put(struct sgbd_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k,
               MDB_val *v, unsigned flags, const char *what)
{
    int mrc = mdb_put(txn, dbi, k, v, flags);

    return mrc ? mdb_fail(s, mrc, what) : 0;
}

/* mdb_get: 0 found, 1 absent, < 0 error. */
static int get(struct sgbd_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k,
               MDB_val *v, const char *what)
{
    int mrc = mdb_get(txn, dbi, k, v);

    if (mrc == MDB_NOTFOUND)
        return 1;
    return mrc ? mdb_fail(s, mrc, what) : 0;
}

static int entries(struct sgbd_store *s, MDB_txn *txn, MDB_dbi dbi,
                   uint64_t *n)
{
    MDB_stat st;
    int mrc = mdb_stat(txn, dbi, &st);

    *n = 0;
    if (mrc)
        return mdb_fail(s, mrc, "stat");
    *n = st.ms_entries;
    return 0;
}

/* ---- Open and close -------------------------------------------------- */

void sgbd_store_opts_defaults(struct sgbd_store_opts *o)
{
    o->map_size = (size_t)1 << 30;
    o->map_max = (size_t)256 << 30;
    o->max_readers = 126;
    o->read_only = 0;
}

/* Directory or single file; create the directory when allowed. */
static int prepare_path(struct sgbd_store *s, unsigned *flags,
                        size_t *data_size)
{
    char data[4096];
    struct stat st;

    *data_size = 0;
    if (stat(s->path, &st) == 0 && S_ISREG(st.st_mode)) {
        *flags |= MDB_NOSUBDIR;
        *data_size = (size_t)st.st_size;
        return 0;
    }
    if (errno == ENOENT && !s->read_only && mkdir(s->path, 0750) < 0 &&
        errno != EEXIST)
        return sgbd_errf(-errno, "%s: cannot create: %s", s->path,
                         strerror(errno));
    if (snprintf(data, sizeof(data), "%s/data.mdb", s->path) >=
        (int)sizeof(data))
        return sgbd_errf(-ENAMETOOLONG, "%s: path too long", s->path);
    if (stat(data, &st) == 0)
        *data_size = (size_t)st.st_size;
    else if (s->read_only)
        return sgbd_errf(-ENOENT, "%s: no store here (no data.mdb)",
                         s->path);
    return 0;
}

static int env_open(struct sgbd_store *s, const struct sgbd_store_opts *o)
{
    unsigned flags = MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0);
    size_t data_size, map;
    int dead = 0, mrc, rc;

    rc = prepare_path(s, &flags, &data_size);
    if (rc < 0)
        return rc;
    map = o->map_size > data_size ? o->map_size : data_size;
    map = (map + MIB - 1) / MIB * MIB;
    s->map_cur = map;
    s->map_max = o->map_max > map ? o->map_max : map;

    mrc = mdb_env_create(&s->env);
    if (mrc == 0)
        mrc = mdb_env_set_maxdbs(s->env, 16);
    if (mrc == 0)
        mrc = mdb_env_set_maxreaders(s->env, o->max_readers ?
                                     o->max_readers : 126);
    if (mrc == 0)
        mrc = mdb_env_set_mapsize(s->env, map);
    if (mrc == 0)
        mrc = mdb_env_open(s->env, s->path, flags, 0640);
    if (mrc)
        return mdb_fail(s, mrc, "open");

    mrc = mdb_reader_check(s->env, &dead);
    if (mrc)
        return mdb_fail(s, mrc, "reader check");
    if (dead > 0)
        SGBD_WARN("store_stale_readers", "cleared=%d", dead);
    return 0;
}

static const struct {
    const char *name;
    size_t off;
} db_table[] = {
    {"items", offsetof(struct sgbd_store, items)},
    {"item_ids", offsetof(struct sgbd_store, item_ids)},
    {"features", offsetof(struct sgbd_store, features)},
    {"channels", offsetof(struct sgbd_store, channels)},
    {"users", offsetof(struct sgbd_store, users)},
    {"user_ids", offsetof(struct sgbd_store, user_ids)},
    {"inter", offsetof(struct sgbd_store, inter)},
    {"inter_keys", offsetof(struct sgbd_store, inter_keys)},
    {"ckpts", offsetof(struct sgbd_store, ckpts)},
    {"chunks", offsetof(struct sgbd_store, chunks)},
    {"meta", offsetof(struct sgbd_store, meta)},
};

#define N_DBS (sizeof(db_table) / sizeof(db_table[0]))

static int check_schema(struct sgbd_store *s, MDB_txn *txn)
{
    unsigned char buf[4];
    MDB_val k = val_str("schema"), v;
    int rc = get(s, txn, s->meta, &k, &v, "read schema");

    if (rc < 0)
        return rc;
    if (rc == 1 && s->read_only)
        return sgbd_errf(SGBD_E_FORMAT, "%s: not an SGBD store (no "
                         "schema)", s->path);
    if (rc == 1) {
        put_u32(buf, SGBD_STORE_SCHEMA);
        v = val_of(buf, 4);
        return put(s, txn, s->meta, &k, &v, 0, "write schema");
    }
    if (v.mv_size != 4)
        return corrupt(s, "meta schema", v.mv_size);
    if (get_u32(v.mv_data) != SGBD_STORE_SCHEMA)
        return sgbd_errf(SGBD_E_VERSION, "%s: store schema %u, this sgbd "
                         "reads schema %d", s->path, get_u32(v.mv_data),
                         SGBD_STORE_SCHEMA);
    return 0;
}

static int open_dbs(struct sgbd_store *s, MDB_txn *txn, void *ctx)
{
    unsigned flags = s->read_only ? 0 : MDB_CREATE;

    for (size_t i = 0; i < N_DBS; i++) {
        MDB_dbi *dbi = (MDB_dbi *)((char *)s + db_table[i].off);
        int mrc = mdb_dbi_open(txn, db_table[i].name, flags, dbi);

        if (mrc == MDB_NOTFOUND)
            return sgbd_errf(SGBD_E_FORMAT, "%s: not an SGBD store (no "
                             "\"%s\" database)", s->path, db_table[i].name);
        if (mrc)
            return mdb_fail(s, mrc, db_table[i].name);
    }
    return check_schema(s, txn);
}

/* DBI handles must outlive the transaction that opened them, so this
 * commits (read-only too) instead of going through store_read(). */
static int open_layout(struct sgbd_store *s)
{
    MDB_txn *txn;
    int rc;

    if (!s->read_only)
        return store_write(s, open_dbs, NULL);
    rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc < 0)
        return rc;
    rc = open_dbs(s, txn, NULL);
    if (rc == 0)
        return txn_commit(s, txn);
    txn_abort(s, txn);
    return rc;
}

int sgbd_store_open(struct sgbd_store **out, const char *path,
                    const struct sgbd_store_opts *o)
{
    struct sgbd_store_opts def;
    struct sgbd_store *s;
    size_t gc = 0;
    int rc;

    if (!o) {
        sgbd_store_opts_defaults(&def);
        o = &def;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return sgbd_errf(-ENOMEM, "%s: out of memory", path);
    }
    s->read_only = o->read_only;
    pthread_rwlock_init(&s->gate, NULL);

    rc = env_open(s, o);
    if (rc == 0)
        rc = open_layout(s);
    if (rc == 0 && !s->read_only)
        rc = sgbd_store_ckpt_gc(s, &gc);
    if (rc < 0) {
        sgbd_store_close(s);
        return rc;
    }
    SGBD_DEBUG("store_opened", "map_mb=%zu read_only=%d", s->map_cur / MIB,
               s->read_only);
    *out = s;
    return 0;
}

void sgbd_store_close(struct sgbd_store *s)
{
    if (!s)
        return;
    if (s->env)
        mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->gate);
    free(s->path);
    free(s);
}

const char *sgbd_store_path(const struct sgbd_store *s)
{
    return s->path;
}

size_t sgbd_store_map_size(struct sgbd_store *s)
{
    size_t n;

    gate_enter(s);
    n = s->map_cur;
    gate_leave(s);
    return n;
}

/* ---- Validation ------------------------------------------------------ */

/* Length of the UTF-8 sequence at p (n bytes left) and its code point;
 * 0 when malformed, overlong, a surrogate or past U+10FFFF. */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len;
    uint32_t c;

    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2;
        c = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3;
        c = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4;
        c = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min_cp[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

int sgbd_store_id_check(const char *id, const char *what)
{
    const unsigned char *p = (const unsigned char *)id;
    size_t n;

    if (!id || !id[0])
        return sgbd_errf(SGBD_E_FORMAT, "%s: empty", what);
    n = strnlen(id, SGBD_STORE_ID_MAX + 1);
    if (n > SGBD_STORE_ID_MAX)
        return sgbd_errf(SGBD_E_FORMAT, "%s: longer than %d bytes", what,
                         SGBD_STORE_ID_MAX);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(p + i, n - i, &cp);

        if (len == 0)
            return sgbd_errf(SGBD_E_FORMAT, "%s: invalid UTF-8 at byte %zu",
                             what, i);
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return sgbd_errf(SGBD_E_FORMAT, "%s: control character U+%04X "
                             "at byte %zu", what, (unsigned)cp, i);
        i += len;
    }
    return 0;
}

static int channel_name_check(const char *name)
{
    size_t n = name ? strnlen(name, SGBD_CHANNEL_NAME) : 0;

    if (n == 0 || n >= SGBD_CHANNEL_NAME)
        return sgbd_errf(SGBD_E_FORMAT, "channel name: length not in "
                         "1..%d", SGBD_CHANNEL_NAME - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return sgbd_errf(SGBD_E_FORMAT, "channel \"%.*s\": character "
                             "%zu is not one of [A-Za-z0-9_.-]", (int)n,
                             name, i);
    }
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Check ids[] (n, already valid) for a repeat; SGBD_E_EXISTS names it. */
static int check_unique(const char **ids, size_t n, const char *what)
{
    int rc = 0;

    qsort(ids, n, sizeof(*ids), cmp_str_ptr);
    for (size_t i = 1; i < n && rc == 0; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            rc = sgbd_errf(SGBD_E_EXISTS, "%s \"%s\" appears twice in the "
                           "batch", what, ids[i]);
    return rc;
}

static int check_batch_size(size_t n, const char *what)
{
    if (n > SGBD_STORE_BATCH_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "%s: batch of %zu, at most %d", what,
                         n, SGBD_STORE_BATCH_MAX);
    return 0;
}

/* Valid ids, none repeated: the checks every id batch gets first. */
static int check_id_batch(const char *const *ids, size_t n, const char *what)
{
    const char **sorted;
    char label[64];
    int rc = check_batch_size(n, what);

    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(label, sizeof(label), "%s %zu", what, i);
        rc = sgbd_store_id_check(ids[i], label);
    }
    if (rc < 0 || n < 2)
        return rc;
    sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return sgbd_errf(-ENOMEM, "%s: out of memory", what);
    memcpy(sorted, ids, n * sizeof(*sorted));
    rc = check_unique(sorted, n, what);
    free(sorted);
    return rc;
}

/* ---- Channels -------------------------------------------------------- */

struct chan_table {
    int n;
    struct sgbd_store_channel ch[SGBD_MAX_CHANNELS];   /* by id */
};

static int load_channels(struct sgbd_store *s, MDB_txn *txn,
                         struct chan_table *t)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->channels, &cur);
    int rc = 0;

    memset(t, 0, sizeof(*t));
    if (mrc)
        return mdb_fail(s, mrc, "channels");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint16_t id;

        if (v.mv_size != 8 || k.mv_size == 0 ||
            k.mv_size >= SGBD_CHANNEL_NAME) {
            rc = corrupt(s, "channels", v.mv_size);
            break;
        }
        id = get_u16(v.mv_data);
        if (id >= SGBD_MAX_CHANNELS || t->ch[id].width) {
            rc = corrupt(s, "channels", v.mv_size);
            break;
        }
        memcpy(t->ch[id].name, k.mv_data, k.mv_size);
        t->ch[id].width = get_u32((unsigned char *)v.mv_data + 4);
        t->ch[id].id = id;
        t->n++;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "channels");
    return rc;
}

static const struct sgbd_store_channel *find_channel(
    const struct chan_table *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->ch[i].name, name) == 0)
            return &t->ch[i];
    return NULL;
}

struct define_ctx {
    const char *name;
    uint32_t width;
};

static int define_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct define_ctx *c = arg;
    const struct sgbd_store_channel *old;
    struct chan_table t;
    unsigned char buf[8];
    MDB_val k, v;
    int rc = load_channels(s, txn, &t);

    if (rc < 0)
        return rc;
    old = find_channel(&t, c->name);
    if (old && old->width == c->width)
        return 0;
    if (old)
        return sgbd_errf(SGBD_E_SHAPE, "channel \"%s\" has width %u, not "
                         "%u", c->name, old->width, c->width);
    if (t.n >= SGBD_MAX_CHANNELS)
        return sgbd_errf(SGBD_E_LIMIT, "channel \"%s\": %d channels "
                         "defined already", c->name, SGBD_MAX_CHANNELS);
    put_u16(buf, (uint16_t)t.n);
    put_u16(buf + 2, 0);
    put_u32(buf + 4, c->width);
    k = val_str(c->name);
    v = val_of(buf, sizeof(buf));
    return put(s, txn, s->channels, &k, &v, 0, "define channel");
}

int sgbd_store_channel_define(struct sgbd_store *s, const char *name,
                              uint32_t width)
{
    struct define_ctx c = {name, width};
    int rc = channel_name_check(name);

    if (rc < 0)
        return rc;
    if (width == 0 || width > MAX_WIDTH)
        return sgbd_errf(SGBD_E_FORMAT, "channel \"%s\": width %u not in "
                         "1..%u", name, width, MAX_WIDTH);
    return store_write(s, define_fn, &c);
}

struct channels_ctx {
    struct sgbd_store_channel *out;
    int *n;
};

static int channels_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct channels_ctx *c = arg;
    struct chan_table t;
    int rc = load_channels(s, txn, &t);

    if (rc < 0)
        return rc;
    memcpy(c->out, t.ch, sizeof(t.ch[0]) * (size_t)t.n);
    *c->n = t.n;
    return 0;
}

int sgbd_store_channels(struct sgbd_store *s,
                        struct sgbd_store_channel out[SGBD_MAX_CHANNELS],
                        int *n)
{
    struct channels_ctx c = {out, n};

    return store_read(s, channels_fn, &c);
}

/* ---- Item records ---------------------------------------------------- */

/* The fixed part of an item record (ITEM_HDR bytes):
 * index u32, hidden u8, reserved u8, channel mask u16, updated-at u64 ms,
 * attrs_len u32; then attrs_len bytes of attributes. */
struct item_hdr {
    uint32_t index;
    int hidden;
    uint16_t mask;
    uint64_t updated;
    uint32_t attrs_len;
};

static int item_decode(const struct sgbd_store *s, const MDB_val *v,
                       struct item_hdr *h)
{
    const unsigned char *p = v->mv_data;

    memset(h, 0, sizeof(*h));
    if (v->mv_size < ITEM_HDR)
        return corrupt(s, "items", v->mv_size);
    h->index = get_u32(p);
    h->hidden = p[4] != 0;
    h->mask = get_u16(p + 6);
    h->updated = get_u64(p + 8);
    h->attrs_len = get_u32(p + 16);
    if ((size_t)h->attrs_len != v->mv_size - ITEM_HDR)
        return corrupt(s, "items", v->mv_size);
    return 0;
}

static void item_encode(unsigned char *p, const struct item_hdr *h,
                        const void *attrs)
{
    put_u32(p, h->index);
    p[4] = (unsigned char)(h->hidden != 0);
    p[5] = 0;
    put_u16(p + 6, h->mask);
    put_u64(p + 8, h->updated);
    put_u32(p + 16, h->attrs_len);
    if (h->attrs_len)
        memcpy(p + ITEM_HDR, attrs, h->attrs_len);
}

static int item_put(struct sgbd_store *s, MDB_txn *txn, const char *id,
                    const struct item_hdr *h, const void *attrs)
{
    MDB_val k = val_str(id);
    MDB_val v = val_of(NULL, ITEM_HDR + (size_t)h->attrs_len);
    int rc = put(s, txn, s->items, &k, &v, MDB_RESERVE, "write item");

    if (rc == 0)
        item_encode(v.mv_data, h, attrs);
    return rc;
}

static void feat_key(unsigned char *k, uint16_t ch, uint32_t index)
{
    k[0] = (unsigned char)(ch >> 8);
    k[1] = (unsigned char)ch;
    put_be32(k + 2, index);
}

/* ---- Item upsert ----------------------------------------------------- */

static int check_item(const struct sgbd_store_item *it, size_t i)
{
    char label[64];
    int rc;

    snprintf(label, sizeof(label), "item %zu", i);
    if ((rc = sgbd_store_id_check(it->id, label)) < 0)
        return rc;
    if (it->n_features < 0 || it->n_features > SGBD_MAX_CHANNELS ||
        (it->n_features > 0 && !it->features))
        return sgbd_errf(SGBD_E_FORMAT, "item \"%s\": %d feature vectors",
                         it->id, it->n_features);
    if (it->attrs_len > SGBD_STORE_ATTRS_MAX || (!it->attrs && it->attrs_len))
        return sgbd_errf(SGBD_E_FORMAT, "item \"%s\": attributes of %zu "
                         "bytes, at most %d", it->id, it->attrs_len,
                         SGBD_STORE_ATTRS_MAX);
    for (int f = 0; f < it->n_features; f++) {
        const struct sgbd_store_feature *ft = &it->features[f];

        if ((rc = channel_name_check(ft->channel)) < 0)
            return rc;
        for (int g = 0; g < f; g++)
            if (strcmp(it->features[g].channel, ft->channel) == 0)
                return sgbd_errf(SGBD_E_EXISTS, "item \"%s\": channel "
                                 "\"%s\" given twice", it->id, ft->channel);
        if (ft->dim == 0 || !ft->v)
            return sgbd_errf(SGBD_E_SHAPE, "item \"%s\": channel \"%s\": "
                             "empty vector", it->id, ft->channel);
        for (uint32_t j = 0; j < ft->dim; j++)
            if (!isfinite(ft->v[j]))
                return sgbd_errf(SGBD_E_FORMAT, "item \"%s\": channel "
                                 "\"%s\": value %u is not finite", it->id,
                                 ft->channel, j);
    }
    return 0;
}

static int check_items(const struct sgbd_store_item *items, size_t n)
{
    const char **ids;
    int rc = check_batch_size(n, "items");

    for (size_t i = 0; i < n && rc == 0; i++)
        rc = check_item(&items[i], i);
    if (rc < 0 || n < 2)
        return rc;
    ids = malloc(n * sizeof(*ids));
    if (!ids)
        return sgbd_errf(-ENOMEM, "items: out of memory");
    for (size_t i = 0; i < n; i++)
        ids[i] = items[i].id;
    rc = check_unique(ids, n, "item id");
    free(ids);
    return rc;
}

struct upsert_ctx {
    const struct sgbd_store_item *items;
    size_t n;
    uint32_t *out_index;
    uint64_t now;
};

/* Every channel defined and of the right width, before any write. */
static int check_item_shapes(const struct upsert_ctx *c,
                             const struct chan_table *t)
{
    for (size_t i = 0; i < c->n; i++) {
        const struct sgbd_store_item *it = &c->items[i];

        for (int f = 0; f < it->n_features; f++) {
            const struct sgbd_store_feature *ft = &it->features[f];
            const struct sgbd_store_channel *ch =
                find_channel(t, ft->channel);

            if (!ch)
                return sgbd_errf(SGBD_E_NOTFOUND, "item \"%s\": channel "
                                 "\"%s\" is not defined", it->id,
                                 ft->channel);
            if (ch->width != ft->dim)
                return sgbd_errf(SGBD_E_SHAPE, "item \"%s\": channel \"%s\" "
                                 "has %u values, expected %u", it->id,
                                 ft->channel, ft->dim, ch->width);
        }
    }
    return 0;
}

/* Whether the stored vector of (ch, index) equals v. */
static int feature_same(struct sgbd_store *s, MDB_txn *txn, uint16_t ch,
                        uint32_t index, const float *v, uint32_t dim)
{
    unsigned char key[FEAT_KEY];
    MDB_val k, d;
    int rc;

    feat_key(key, ch, index);
    k = val_of(key, sizeof(key));
    rc = get(s, txn, s->features, &k, &d, "read feature");
    if (rc != 0)
        return rc < 0 ? rc : 0;
    return d.mv_size == (size_t)dim * 4 && memcmp(d.mv_data, v, d.mv_size)
           == 0;
}

static int feature_put(struct sgbd_store *s, MDB_txn *txn, uint16_t ch,
                       uint32_t index, const float *v, uint32_t dim)
{
    unsigned char key[FEAT_KEY];
    MDB_val k, d = val_of(v, (size_t)dim * 4);

    feat_key(key, ch, index);
    k = val_of(key, sizeof(key));
    return put(s, txn, s->features, &k, &d, 0, "write feature");
}

/* Which of the item's vectors differ from the store (bit f of *todo). */
static int diff_features(struct sgbd_store *s, MDB_txn *txn,
                         const struct chan_table *t,
                         const struct sgbd_store_item *it,
                         const struct item_hdr *old, unsigned *todo)
{
    *todo = 0;
    for (int f = 0; f < it->n_features; f++) {
        const struct sgbd_store_feature *ft = &it->features[f];
        const struct sgbd_store_channel *ch = find_channel(t, ft->channel);
        int same = 0;

        if (old && (old->mask & (1u << ch->id)))
            same = feature_same(s, txn, ch->id, old->index, ft->v, ft->dim);
        if (same < 0)
            return same;
        if (!same)
            *todo |= 1u << f;
    }
    return 0;
}

/* Attributes of the new record: the item's, or a copy of the old ones
 * (the old value's page may move once the record is rewritten). */
static int new_attrs(const struct sgbd_store_item *it, const MDB_val *oldv,
                     const struct item_hdr *old, void **copy,
                     const void **attrs, uint32_t *len)
{
    *copy = NULL;
    if (it->attrs || !old) {
        *attrs = it->attrs;
        *len = (uint32_t)it->attrs_len;
        return 0;
    }
    *len = old->attrs_len;
    *attrs = NULL;
    if (*len == 0)
        return 0;
    *copy = malloc(*len);
    if (!*copy)
        return sgbd_errf(-ENOMEM, "item \"%s\": out of memory", it->id);
    memcpy(*copy, (const unsigned char *)oldv->mv_data + ITEM_HDR, *len);
    *attrs = *copy;
    return 0;
}

static int attrs_same(const struct sgbd_store_item *it, const MDB_val *oldv,
                      const struct item_hdr *old)
{
    if (!it->attrs)
        return 1;
    return old->attrs_len == it->attrs_len &&
           memcmp((const unsigned char *)oldv->mv_data + ITEM_HDR, it->attrs,
                  it->attrs_len) == 0;
}

static int write_item(struct sgbd_store *s, MDB_txn *txn,
                      const struct chan_table *t,
                      const struct sgbd_store_item *it, struct item_hdr *h,
                      const void *attrs, unsigned todo, int is_new)
{
    int rc = item_put(s, txn, it->id, h, attrs);
    unsigned char key[4];
    MDB_val k, v;

    for (int f = 0; f < it->n_features && rc == 0; f++) {
        const struct sgbd_store_feature *ft = &it->features[f];

        if (todo & (1u << f))
            rc = feature_put(s, txn, find_channel(t, ft->channel)->id,
                             h->index, ft->v, ft->dim);
    }
    if (rc < 0 || !is_new)
        return rc;
    put_be32(key, h->index);
    k = val_of(key, 4);
    v = val_str(it->id);
    return put(s, txn, s->item_ids, &k, &v, MDB_APPEND, "write item id");
}

static int upsert_one(struct sgbd_store *s, MDB_txn *txn,
                      const struct chan_table *t,
                      const struct sgbd_store_item *it, uint64_t now,
                      uint32_t *next, uint32_t *index)
{
    struct item_hdr old, h;
    MDB_val k = val_str(it->id), v;
    const void *attrs;
    void *copy = NULL;
    unsigned todo;
    int rc = get(s, txn, s->items, &k, &v, "read item");
    int is_new = rc == 1;

    if (rc == 0)
        rc = item_decode(s, &v, &old);
    if (rc < 0)
        return rc;
    rc = diff_features(s, txn, t, it, is_new ? NULL : &old, &todo);
    if (rc < 0)
        return rc;
    if (!is_new) {
        *index = old.index;
        rc = get(s, txn, s->items, &k, &v, "read item"); /* fresh page */
        if (rc != 0)
            return rc < 0 ? rc : corrupt(s, "items", 0);
        if (!todo && !old.hidden && attrs_same(it, &v, &old))
            return 0;   /* unchanged: keep updated-at */
    } else {
        *index = (*next)++;
    }

    rc = new_attrs(it, &v, is_new ? NULL : &old, &copy, &attrs,
                   &h.attrs_len);
    if (rc < 0)
        return rc;
    h.index = *index;
    h.hidden = 0;
    h.updated = now;
    h.mask = is_new ? 0 : old.mask;
    for (int f = 0; f < it->n_features; f++)
        h.mask |= (uint16_t)(1u << find_channel(t, it->features[f].channel)
                             ->id);
    rc = write_item(s, txn, t, it, &h, attrs, todo, is_new);
    free(copy);
    return rc;
}

static int upsert_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct upsert_ctx *c = arg;
    struct chan_table t;
    uint64_t count = 0;
    uint32_t next, index = 0;
    int rc = load_channels(s, txn, &t);

    if (rc == 0)
        rc = check_item_shapes(c, &t);
    if (rc == 0)
        rc = entries(s, txn, s->item_ids, &count);
    if (rc < 0)
        return rc;
    if (count + c->n > UINT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "items: more than 2^32 - 1");
    next = (uint32_t)count;
    for (size_t i = 0; i < c->n && rc == 0; i++) {
        rc = upsert_one(s, txn, &t, &c->items[i], c->now, &next, &index);
        if (rc == 0 && c->out_index)
            c->out_index[i] = index;
    }
    return rc;
}

int sgbd_store_items_upsert(struct sgbd_store *s,
                            const struct sgbd_store_item *items, size_t n,
                            uint32_t *out_index)
{
    struct upsert_ctx c = {items, n, out_index, now_ms()};
    int rc = check_items(items, n);

    if (rc < 0 || n == 0)
        return rc;
    return store_write(s, upsert_fn, &c);
}

struct hide_ctx {
    const char *id;
    int hidden;
};

static int hide_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct hide_ctx *c = arg;
    MDB_val k = val_str(c->id), v;
    struct item_hdr h = {0};
    void *attrs = NULL;
    int rc = get(s, txn, s->items, &k, &v, "read item");

    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "item \"%s\" not found", c->id);
    if (rc == 0)
        rc = item_decode(s, &v, &h);
    if (rc < 0 || h.hidden == (c->hidden != 0))
        return rc;
    if (h.attrs_len && !(attrs = malloc(h.attrs_len)))
        return sgbd_errf(-ENOMEM, "item \"%s\": out of memory", c->id);
    if (attrs)
        memcpy(attrs, (unsigned char *)v.mv_data + ITEM_HDR, h.attrs_len);
    h.hidden = c->hidden != 0;
    h.updated = now_ms();
    rc = item_put(s, txn, c->id, &h, attrs);
    free(attrs);
    return rc;
}

int sgbd_store_item_hide(struct sgbd_store *s, const char *id, int hidden)
{
    struct hide_ctx c = {id, hidden};
    int rc = sgbd_store_id_check(id, "item id");

    return rc < 0 ? rc : store_write(s, hide_fn, &c);
}

/* ---- Item and user reads --------------------------------------------- */

struct get_ctx {
    const char *id;
    struct sgbd_store_item_rec *rec;
};

static int copy_features(struct sgbd_store *s, MDB_txn *txn,
                         const struct item_hdr *h,
                         struct sgbd_store_item_rec *rec)
{
    struct chan_table t;
    int rc = load_channels(s, txn, &t);

    for (int c = 0; c < t.n && rc == 0; c++) {
        unsigned char key[FEAT_KEY];
        MDB_val k, v;
        int f = rec->n_features;

        if (!(h->mask & (1u << c)))
            continue;
        feat_key(key, (uint16_t)c, h->index);
        k = val_of(key, sizeof(key));
        rc = get(s, txn, s->features, &k, &v, "read feature");
        if (rc == 1 || (rc == 0 && v.mv_size != (size_t)t.ch[c].width * 4))
            return corrupt(s, "features", rc == 1 ? 0 : v.mv_size);
        if (rc < 0)
            return rc;
        rec->f[f].v = malloc(v.mv_size);
        if (!rec->f[f].v)
            return sgbd_errf(-ENOMEM, "item: out of memory");
        memcpy(rec->f[f].v, v.mv_data, v.mv_size);
        memcpy(rec->f[f].channel, t.ch[c].name, SGBD_CHANNEL_NAME);
        rec->f[f].dim = t.ch[c].width;
        rec->n_features++;
    }
    return rc;
}

static int item_get_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct get_ctx *c = arg;
    struct sgbd_store_item_rec *rec = c->rec;
    MDB_val k = val_str(c->id), v;
    struct item_hdr h;
    int rc = get(s, txn, s->items, &k, &v, "read item");

    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "item \"%s\" not found", c->id);
    if (rc == 0)
        rc = item_decode(s, &v, &h);
    if (rc < 0)
        return rc;
    rec->index = h.index;
    rec->hidden = h.hidden;
    rec->updated_at_ms = h.updated;
    rec->attrs_len = h.attrs_len;
    if (h.attrs_len) {
        rec->attrs = malloc(h.attrs_len);
        if (!rec->attrs)
            return sgbd_errf(-ENOMEM, "item: out of memory");
        memcpy(rec->attrs, (unsigned char *)v.mv_data + ITEM_HDR,
               h.attrs_len);
    }
    return copy_features(s, txn, &h, rec);
}

int sgbd_store_item_get(struct sgbd_store *s, const char *id,
                        struct sgbd_store_item_rec *rec)
{
    struct get_ctx c = {id, rec};
    int rc = sgbd_store_id_check(id, "item id");

    memset(rec, 0, sizeof(*rec));
    if (rc == 0)
        rc = store_read(s, item_get_fn, &c);
    if (rc < 0)
        sgbd_store_item_rec_free(rec);
    return rc;
}

void sgbd_store_item_rec_free(struct sgbd_store_item_rec *rec)
{
    if (!rec)
        return;
    for (int f = 0; f < rec->n_features; f++)
        free(rec->f[f].v);
    free(rec->attrs);
    memset(rec, 0, sizeof(*rec));
}

struct index_ctx {
    const char *id;
    uint32_t *index;
    int user;
};

static int index_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct index_ctx *c = arg;
    MDB_val k = val_str(c->id), v;
    struct item_hdr h;
    int rc = get(s, txn, c->user ? s->users : s->items, &k, &v, "read id");

    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "%s \"%s\" not found",
                         c->user ? "user" : "item", c->id);
    if (rc < 0)
        return rc;
    if (c->user) {
        if (v.mv_size != 4)
            return corrupt(s, "users", v.mv_size);
        *c->index = get_u32(v.mv_data);
        return 0;
    }
    rc = item_decode(s, &v, &h);
    if (rc == 0)
        *c->index = h.index;
    return rc;
}

int sgbd_store_item_index(struct sgbd_store *s, const char *id,
                          uint32_t *index)
{
    struct index_ctx c = {id, index, 0};
    int rc = sgbd_store_id_check(id, "item id");

    return rc < 0 ? rc : store_read(s, index_fn, &c);
}

int sgbd_store_user_index(struct sgbd_store *s, const char *id,
                          uint32_t *index)
{
    struct index_ctx c = {id, index, 1};
    int rc = sgbd_store_id_check(id, "user id");

    return rc < 0 ? rc : store_read(s, index_fn, &c);
}

struct rid_ctx {
    uint32_t index;
    char *buf;
    size_t n;
    int user;
};

static int rid_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct rid_ctx *c = arg;
    unsigned char key[4];
    MDB_val k, v;
    int rc;

    put_be32(key, c->index);
    k = val_of(key, 4);
    rc = get(s, txn, c->user ? s->user_ids : s->item_ids, &k, &v, "read id");
    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "%s index %u not found",
                         c->user ? "user" : "item", c->index);
    if (rc < 0)
        return rc;
    if (v.mv_size + 1 > c->n)
        return sgbd_errf(SGBD_E_LIMIT, "id of %zu bytes does not fit",
                         v.mv_size);
    memcpy(c->buf, v.mv_data, v.mv_size);
    c->buf[v.mv_size] = '\0';
    return 0;
}

int sgbd_store_item_id(struct sgbd_store *s, uint32_t index, char *buf,
                       size_t n)
{
    struct rid_ctx c = {index, buf, n, 0};

    return store_read(s, rid_fn, &c);
}

int sgbd_store_user_id(struct sgbd_store *s, uint32_t index, char *buf,
                       size_t n)
{
    struct rid_ctx c = {index, buf, n, 1};

    return store_read(s, rid_fn, &c);
}

/* ---- Users ----------------------------------------------------------- */

/* Index of user id, created as *next (then incremented) when new. */
static int user_index(struct sgbd_store *s, MDB_txn *txn, const char *id,
                      uint32_t *next, uint32_t *index)
{
    unsigned char buf[4], key[4];
    MDB_val k = val_str(id), v;
    int rc = get(s, txn, s->users, &k, &v, "read user");

    if (rc == 0 && v.mv_size != 4)
        return corrupt(s, "users", v.mv_size);
    if (rc == 0)
        *index = get_u32(v.mv_data);
    if (rc != 1)
        return rc;
    if (*next == UINT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "users: more than 2^32 - 1");
    *index = (*next)++;
    put_u32(buf, *index);
    v = val_of(buf, 4);
    rc = put(s, txn, s->users, &k, &v, 0, "write user");
    if (rc < 0)
        return rc;
    put_be32(key, *index);
    k = val_of(key, 4);
    v = val_str(id);
    return put(s, txn, s->user_ids, &k, &v, MDB_APPEND, "write user id");
}

static int user_count(struct sgbd_store *s, MDB_txn *txn, uint32_t *next)
{
    uint64_t n = 0;
    int rc = entries(s, txn, s->user_ids, &n);

    if (rc == 0 && n >= UINT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "users: more than 2^32 - 1");
    *next = (uint32_t)n;
    return rc;
}

struct ensure_ctx {
    const char *const *ids;
    size_t n;
    uint32_t *out;
};

static int ensure_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct ensure_ctx *c = arg;
    uint32_t next = 0, index = 0;
    int rc = user_count(s, txn, &next);

    for (size_t i = 0; i < c->n && rc == 0; i++) {
        rc = user_index(s, txn, c->ids[i], &next, &index);
        if (rc == 0 && c->out)
            c->out[i] = index;
    }
    return rc;
}

int sgbd_store_users_ensure(struct sgbd_store *s, const char *const *ids,
                            size_t n, uint32_t *out_index)
{
    struct ensure_ctx c = {ids, n, out_index};
    int rc = check_id_batch(ids, n, "user id");

    if (rc < 0 || n == 0)
        return rc;
    return store_write(s, ensure_fn, &c);
}

/* ---- Interactions ---------------------------------------------------- */

static void inter_encode(unsigned char *p,
                         const struct sgbd_store_interaction *e)
{
    uint32_t w;

    memcpy(&w, &e->weight, 4);
    put_u32(p, e->user);
    put_u32(p + 4, e->item);
    put_u64(p + 8, (uint64_t)e->timestamp);
    put_u32(p + 16, w);
    p[20] = e->kind;
    p[21] = e->label;
    p[22] = p[23] = 0;
}

static int inter_decode(const struct sgbd_store *s, const MDB_val *k,
                        const MDB_val *v, struct sgbd_store_interaction *e)
{
    const unsigned char *p = v->mv_data;
    uint32_t w;

    memset(e, 0, sizeof(*e));
    if (k->mv_size != 8 || v->mv_size != INTER_REC)
        return corrupt(s, "inter", v->mv_size);
    e->seq = get_be64(k->mv_data);
    e->user = get_u32(p);
    e->item = get_u32(p + 4);
    e->timestamp = (int64_t)get_u64(p + 8);
    w = get_u32(p + 16);
    memcpy(&e->weight, &w, 4);
    e->kind = p[20];
    e->label = p[21];
    return 0;
}

/* Dedup key: sorts by user, item, then timestamp (sign bit flipped so
 * negative times sort first), then kind. */
static void ikey(unsigned char *k, const struct sgbd_store_interaction *e)
{
    put_be32(k, e->user);
    put_be32(k + 4, e->item);
    put_be64(k + 8, (uint64_t)e->timestamp ^ ((uint64_t)1 << 63));
    k[16] = e->kind;
}

static int check_events(const struct sgbd_store_event *ev, size_t n)
{
    char label[64];
    int rc = check_batch_size(n, "interactions");

    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(label, sizeof(label), "interaction %zu: user id", i);
        rc = sgbd_store_id_check(ev[i].user_id, label);
        snprintf(label, sizeof(label), "interaction %zu: item id", i);
        if (rc == 0)
            rc = sgbd_store_id_check(ev[i].item_id, label);
        if (rc == 0 && ev[i].label > SGBD_LABEL_TEST)
            rc = sgbd_errf(SGBD_E_FORMAT, "interaction %zu: label %u not "
                           "in 0..2", i, ev[i].label);
        if (rc == 0 && !isfinite(ev[i].weight))
            rc = sgbd_errf(SGBD_E_FORMAT, "interaction %zu: weight is not "
                           "finite", i);
    }
    return rc;
}

static int last_seq(struct sgbd_store *s, MDB_txn *txn, uint64_t *seq)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->inter, &cur);

    if (mrc)
        return mdb_fail(s, mrc, "inter");
    mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    *seq = 0;
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return mdb_fail(s, mrc, "inter");
    if (k.mv_size != 8)
        return corrupt(s, "inter key", k.mv_size);
    *seq = get_be64(k.mv_data);
    return 0;
}

struct append_ctx {
    const struct sgbd_store_event *ev;
    size_t n;
    uint64_t *seqs;
    size_t n_new;
};

static int event_item(struct sgbd_store *s, MDB_txn *txn,
                      const struct sgbd_store_event *ev, size_t i,
                      uint32_t *index)
{
    MDB_val k = val_str(ev->item_id), v;
    struct item_hdr h;
    int rc = get(s, txn, s->items, &k, &v, "read item");

    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "interaction %zu: unknown item "
                         "\"%s\"", i, ev->item_id);
    if (rc == 0)
        rc = item_decode(s, &v, &h);
    if (rc == 0)
        *index = h.index;
    return rc;
}

static int append_one(struct sgbd_store *s, MDB_txn *txn,
                      const struct sgbd_store_event *ev, size_t i,
                      uint32_t *next_user, uint64_t *seq)
{
    struct sgbd_store_interaction e = {0};
    unsigned char key[IKEY_LEN], sk[8], rec[INTER_REC], sv[8];
    MDB_val k, v;
    int rc = event_item(s, txn, ev, i, &e.item);

    if (rc == 0)
        rc = user_index(s, txn, ev->user_id, next_user, &e.user);
    if (rc < 0)
        return rc;
    e.timestamp = ev->timestamp;
    e.weight = ev->weight;
    e.kind = ev->kind;
    e.label = ev->label;
    ikey(key, &e);
    k = val_of(key, sizeof(key));
    rc = get(s, txn, s->inter_keys, &k, &v, "read interaction key");
    if (rc == 0 && v.mv_size != 8)
        return corrupt(s, "inter_keys", v.mv_size);
    if (rc == 0)
        *seq = get_u64(v.mv_data);
    if (rc != 1)
        return rc;

    put_u64(sv, *seq);
    v = val_of(sv, 8);
    rc = put(s, txn, s->inter_keys, &k, &v, 0, "write interaction key");
    put_be64(sk, *seq);
    inter_encode(rec, &e);
    k = val_of(sk, 8);
    v = val_of(rec, sizeof(rec));
    if (rc == 0)
        rc = put(s, txn, s->inter, &k, &v, MDB_APPEND, "write interaction");
    return rc < 0 ? rc : 2;  /* 2: appended */
}

static int append_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct append_ctx *c = arg;
    uint64_t next = 0;
    uint32_t next_user = 0;
    int rc = last_seq(s, txn, &next);

    if (rc == 0)
        rc = user_count(s, txn, &next_user);
    next++;
    c->n_new = 0;
    for (size_t i = 0; i < c->n && rc >= 0; i++) {
        uint64_t seq = next;

        rc = append_one(s, txn, &c->ev[i], i, &next_user, &seq);
        if (rc == 2) {
            next++;
            c->n_new++;
        }
        if (rc >= 0 && c->seqs)
            c->seqs[i] = seq;
    }
    return rc < 0 ? rc : 0;
}

int sgbd_store_interactions_append(struct sgbd_store *s,
                                   const struct sgbd_store_event *ev,
                                   size_t n, uint64_t *seqs, size_t *n_new)
{
    struct append_ctx c = {ev, n, seqs, 0};
    int rc = check_events(ev, n);

    if (rc == 0 && n > 0)
        rc = store_write(s, append_fn, &c);
    if (rc == 0 && n_new)
        *n_new = c.n_new;
    return rc;
}

/* Walk the log from seq > after; fn as the snapshot callback. */
static int walk_inter(struct sgbd_store *s, MDB_txn *txn, uint64_t after,
                      sgbd_store_inter_fn fn, void *ctx)
{
    unsigned char key[8];
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->inter, &cur);
    int rc = 0;

    if (mrc)
        return mdb_fail(s, mrc, "inter");
    if (after == UINT64_MAX) {
        mdb_cursor_close(cur);
        return 0;
    }
    put_be64(key, after + 1);
    k = val_of(key, 8);
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct sgbd_store_interaction e;

        rc = inter_decode(s, &k, &v, &e);
        if (rc == 0)
            rc = fn(ctx, &e);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "inter");
    return rc;
}

struct since_ctx {
    uint64_t after;
    struct sgbd_store_interaction *out;
    size_t max, n;
};

#define SINCE_FULL 1

static int since_add(void *arg, const struct sgbd_store_interaction *e)
{
    struct since_ctx *c = arg;

    if (c->n == c->max)
        return SINCE_FULL;
    c->out[c->n++] = *e;
    return 0;
}

static int since_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct since_ctx *c = arg;
    int rc = walk_inter(s, txn, c->after, since_add, c);

    return rc == SINCE_FULL ? 0 : rc;
}

int sgbd_store_interactions_since(struct sgbd_store *s, uint64_t after,
                                  struct sgbd_store_interaction *out,
                                  size_t max, size_t *n)
{
    struct since_ctx c = {after, out, max, 0};
    int rc = max ? store_read(s, since_fn, &c) : 0;

    *n = c.n;
    return rc;
}

static int counts_txn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct sgbd_store_counts *c = arg;
    int rc = entries(s, txn, s->item_ids, &c->items);

    if (rc == 0)
        rc = entries(s, txn, s->user_ids, &c->users);
    if (rc == 0)
        rc = entries(s, txn, s->inter, &c->interactions);
    if (rc == 0)
        rc = entries(s, txn, s->channels, &c->channels);
    if (rc == 0)
        rc = entries(s, txn, s->ckpts, &c->checkpoints);
    if (rc == 0)
        rc = last_seq(s, txn, &c->last_seq);
    return rc;
}

int sgbd_store_counts(struct sgbd_store *s, struct sgbd_store_counts *c)
{
    memset(c, 0, sizeof(*c));
    return store_read(s, counts_txn, c);
}

/* ---- Read snapshots -------------------------------------------------- */

int sgbd_store_read_begin(struct sgbd_store *s, struct sgbd_store_read **out)
{
    struct sgbd_store_read *r = malloc(sizeof(*r));
    int rc;

    if (!r)
        return sgbd_errf(-ENOMEM, "%s: out of memory", s->path);
    r->s = s;
    rc = txn_begin(s, MDB_RDONLY, &r->txn);
    if (rc < 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void sgbd_store_read_end(struct sgbd_store_read *r)
{
    if (!r)
        return;
    txn_abort(r->s, r->txn);
    free(r);
}

int sgbd_store_read_counts(struct sgbd_store_read *r,
                           struct sgbd_store_counts *c)
{
    memset(c, 0, sizeof(*c));
    return counts_txn(r->s, r->txn, c);
}

int sgbd_store_read_interactions(struct sgbd_store_read *r, uint64_t after,
                                 sgbd_store_inter_fn fn, void *ctx)
{
    return walk_inter(r->s, r->txn, after, fn, ctx);
}

static int walk_ids(struct sgbd_store *s, MDB_txn *txn, MDB_dbi dbi,
                    sgbd_store_id_fn fn, void *ctx)
{
    char id[SGBD_STORE_ID_MAX + 1];
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, dbi, &cur);
    int rc = 0;

    if (mrc)
        return mdb_fail(s, mrc, "ids");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4 || v.mv_size == 0 ||
            v.mv_size > SGBD_STORE_ID_MAX) {
            rc = corrupt(s, "ids", v.mv_size);
            break;
        }
        memcpy(id, v.mv_data, v.mv_size);
        id[v.mv_size] = '\0';
        rc = fn(ctx, get_be32(k.mv_data), id, v.mv_size);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "ids");
    return rc;
}

int sgbd_store_read_item_ids(struct sgbd_store_read *r, sgbd_store_id_fn fn,
                             void *ctx)
{
    return walk_ids(r->s, r->txn, r->s->item_ids, fn, ctx);
}

int sgbd_store_read_user_ids(struct sgbd_store_read *r, sgbd_store_id_fn fn,
                             void *ctx)
{
    return walk_ids(r->s, r->txn, r->s->user_ids, fn, ctx);
}

int sgbd_store_read_hidden(struct sgbd_store_read *r, uint8_t *hidden,
                           size_t n_items)
{
    struct sgbd_store *s = r->s;
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(r->txn, s->items, &cur);
    int rc = 0;

    if (mrc)
        return mdb_fail(s, mrc, "items");
    memset(hidden, 0, n_items);
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct item_hdr h;

        if ((rc = item_decode(s, &v, &h)) < 0)
            break;
        if (h.index < n_items)
            hidden[h.index] = (uint8_t)h.hidden;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "items");
    return rc;
}

static int read_channel_rows(struct sgbd_store *s, MDB_txn *txn,
                             const struct sgbd_store_channel *ch, float *out,
                             size_t n_items, uint8_t *present)
{
    unsigned char key[FEAT_KEY];
    MDB_cursor *cur;
    MDB_val k, v;
    size_t row = (size_t)ch->width * 4;
    int mrc = mdb_cursor_open(txn, s->features, &cur);
    int rc = 0;

    if (mrc)
        return mdb_fail(s, mrc, "features");
    feat_key(key, ch->id, 0);
    k = val_of(key, sizeof(key));
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *kp = k.mv_data;
        uint32_t index;

        if (k.mv_size != FEAT_KEY || (kp[0] << 8 | kp[1]) != ch->id)
            break;
        index = get_be32(kp + 2);
        if (index >= n_items)
            break;   /* keys sort by index: the rest are beyond too */
        if (v.mv_size != row) {
            rc = corrupt(s, "features", v.mv_size);
            break;
        }
        memcpy(out + (size_t)index * ch->width, v.mv_data, row);
        if (present)
            present[index] = 1;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "features");
    return rc;
}

int sgbd_store_read_channel(struct sgbd_store_read *r, const char *name,
                            float *out, size_t n_items, uint32_t width,
                            uint8_t *present)
{
    const struct sgbd_store_channel *ch;
    struct chan_table t;
    int rc = load_channels(r->s, r->txn, &t);

    if (rc < 0)
        return rc;
    ch = find_channel(&t, name);
    if (!ch)
        return sgbd_errf(SGBD_E_NOTFOUND, "channel \"%s\" is not defined",
                         name);
    if (ch->width != width)
        return sgbd_errf(SGBD_E_SHAPE, "channel \"%s\" has width %u, not "
                         "%u", name, ch->width, width);
    memset(out, 0, n_items * (size_t)width * sizeof(float));
    if (present)
        memset(present, 0, n_items);
    return read_channel_rows(r->s, r->txn, ch, out, n_items, present);
}

/* ---- From the store to the offline engine ---------------------------- */

struct rows_ctx {
    struct sgbd_inter rows;
    size_t cap;
    uint64_t last;
};

static int rows_add(void *arg, const struct sgbd_store_interaction *e)
{
    struct rows_ctx *c = arg;

    if (c->rows.n == c->cap)
        return SGBD_E_CORRUPT;   /* more events than the count said */
    c->rows.users[c->rows.n] = e->user;
    c->rows.items[c->rows.n] = e->item;
    c->rows.labels[c->rows.n] = e->label;
    c->rows.n++;
    c->last = e->seq;
    return 0;
}

static int read_rows(struct sgbd_store_read *r, uint64_t n,
                     struct rows_ctx *c)
{
    int rc;

    memset(c, 0, sizeof(*c));
    if (n > SIZE_MAX / 8)
        return sgbd_errf(SGBD_E_LIMIT, "store: %llu interactions",
                         (unsigned long long)n);
    c->cap = (size_t)n;
    c->rows.users = malloc(c->cap * sizeof(uint32_t) + 1);
    c->rows.items = malloc(c->cap * sizeof(uint32_t) + 1);
    c->rows.labels = malloc(c->cap + 1);
    if (!c->rows.users || !c->rows.items || !c->rows.labels)
        return sgbd_errf(-ENOMEM, "store: out of memory for %zu "
                         "interactions", c->cap);
    rc = sgbd_store_read_interactions(r, 0, rows_add, c);
    if (rc == SGBD_E_CORRUPT)
        return sgbd_errf(rc, "%s: interaction count changed inside a "
                         "snapshot", r->s->path);
    return rc;
}

static int read_features(struct sgbd_store_read *r, uint32_t n_items,
                         struct sgbd_features *f)
{
    struct sgbd_store_channel ch[SGBD_MAX_CHANNELS];
    struct chan_table t;
    int rc = load_channels(r->s, r->txn, &t);

    memset(f, 0, sizeof(*f));
    memcpy(ch, t.ch, sizeof(ch));
    for (int c = 0; c < t.n && rc == 0; c++) {
        size_t bytes = (size_t)n_items * ch[c].width * sizeof(float);
        float *m = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);

        if (!m)
            return sgbd_errf(-ENOMEM, "channel \"%s\": out of memory",
                             ch[c].name);
        f->ch[c].m = sgbd_mat_view(m, n_items, ch[c].width);
        memcpy(f->ch[c].name, ch[c].name, SGBD_CHANNEL_NAME);
        f->n = c + 1;
        rc = sgbd_store_read_channel(r, ch[c].name, m, n_items, ch[c].width,
                                     NULL);
    }
    return rc;
}

/* Grow per-user sets to U users (new users have empty sets). */
static int widen_sets(struct sgbd_itemsets *set, uint32_t from, uint32_t to)
{
    uint64_t *p = realloc(set->ptr, ((size_t)to + 1) * sizeof(*p));

    if (!p)
        return -ENOMEM;
    for (size_t u = (size_t)from + 1; u <= to; u++)
        p[u] = p[from];
    set->ptr = p;
    return 0;
}

/* The dataset module sizes U and I by the largest ids seen; the store
 * knows users and items that have no events yet, and they need rows. */
static int widen_dataset(struct sgbd_dataset *ds, uint64_t users,
                         uint64_t items)
{
    uint32_t from = ds->n_users;
    int rc = 0;

    if (users > from) {
        rc = widen_sets(&ds->train, from, (uint32_t)users);
        if (rc == 0)
            rc = widen_sets(&ds->valid, from, (uint32_t)users);
        if (rc == 0)
            rc = widen_sets(&ds->test, from, (uint32_t)users);
        if (rc < 0)
            return sgbd_errf(rc, "store: out of memory for %llu users",
                             (unsigned long long)users);
        ds->n_users = (uint32_t)users;
    }
    if (items > ds->n_items)
        ds->n_items = (uint32_t)items;
    return 0;
}

static int load_snapshot(struct sgbd_store_read *r, struct rows_ctx *rows,
                         struct sgbd_features *feat,
                         struct sgbd_store_counts *c)
{
    int rc = sgbd_store_read_counts(r, c);

    if (rc == 0 && c->interactions == 0)
        rc = sgbd_errf(SGBD_E_NOTFOUND, "%s: no interactions in the store",
                       r->s->path);
    if (rc == 0)
        rc = read_rows(r, c->interactions, rows);
    if (rc == 0 && feat)
        rc = read_features(r, (uint32_t)c->items, feat);
    return rc;
}

int sgbd_store_load_dataset(struct sgbd_store *s, struct sgbd_dataset *ds,
                            struct sgbd_features *feat, uint64_t *last_seq)
{
    struct sgbd_features f = {0};
    struct sgbd_dataset d = {0};
    struct sgbd_store_counts c = {0};
    struct sgbd_store_read *r = NULL;
    struct rows_ctx rows = {0};
    int rc = sgbd_store_read_begin(s, &r);

    if (rc < 0)
        return rc;
    rc = load_snapshot(r, &rows, feat ? &f : NULL, &c);
    sgbd_store_read_end(r);   /* the copy is ours: end the snapshot now */
    if (rc == 0)
        rc = sgbd_dataset_build(&d, &rows.rows);
    if (rc == 0)
        rc = widen_dataset(&d, c.users, c.items);
    sgbd_inter_free(&rows.rows);
    if (rc < 0) {
        sgbd_dataset_free(&d);
        sgbd_features_free(&f);
        return rc;
    }
    *ds = d;
    if (feat)
        *feat = f;
    if (last_seq)
        *last_seq = rows.last;
    return 0;
}

/* ---- Backup ---------------------------------------------------------- */

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    int fd, rc = 0;

    if (n >= sizeof(dir))
        return -ENAMETOOLONG;
    memcpy(dir, slash ? path : ".", n);
    dir[n] = '\0';
    if (n == 0)
        strcpy(dir, "/");
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* mdb_env_copyfd2 opens a read transaction of its own: it passes the
 * gate like any other, and adopts a map another process grew. */
static int copy_to_fd(struct sgbd_store *s, int fd)
{
    for (int tries = 0;; tries++) {
        int mrc, rc;

        if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
            return sgbd_errf(-errno, "backup: %s", strerror(errno));
        gate_enter(s);
        mrc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
        rc = mrc ? mdb_fail(s, mrc, "backup copy") : 0;
        gate_leave(s);
        if (mrc != MDB_MAP_RESIZED || tries >= 3)
            return rc;
        if ((rc = adopt_map_size(s)) < 0)
            return rc;
    }
}

int sgbd_store_backup(struct sgbd_store *s, const char *out_path)
{
    char tmp[4096];
    struct stat st;
    int fd, rc;

    if (stat(out_path, &st) == 0)
        return sgbd_errf(SGBD_E_EXISTS, "%s: exists; backups never "
                         "overwrite", out_path);
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", out_path) >= (int)sizeof(tmp))
        return sgbd_errf(-ENAMETOOLONG, "%s: path too long", out_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return sgbd_errf(-errno, "%s: %s", tmp, strerror(errno));
    rc = copy_to_fd(s, fd);
    if (rc == 0 && fsync(fd) < 0)
        rc = sgbd_errf(-errno, "%s: fsync: %s", tmp, strerror(errno));
    if (close(fd) < 0 && rc == 0)
        rc = sgbd_errf(-errno, "%s: close: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, out_path) < 0)
        rc = sgbd_errf(-errno, "%s: rename: %s", out_path, strerror(errno));
    if (rc == 0 && (rc = fsync_dir_of(out_path)) < 0)
        rc = sgbd_errf(rc, "%s: fsync directory: %s", out_path,
                       strerror(-rc));
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* ---- Check ----------------------------------------------------------- */

#define REPORT_MAX 200   /* lines reported; problems beyond are counted */

struct check_ctx {
    struct sgbd_store *s;
    MDB_txn *txn;
    sgbd_store_report_fn fn;
    void *arg;
    size_t problems;
    struct chan_table t;
    uint64_t n_items, n_users;
};

static void problem(struct check_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(struct check_ctx *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (c->problems++ >= REPORT_MAX || !c->fn)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    c->fn(c->arg, line);
}

/* Forward entry (id -> record) agrees with the reverse map. */
static void check_forward(struct check_ctx *c, const char *what,
                          MDB_dbi rev, const MDB_val *k, uint32_t index,
                          uint64_t n)
{
    unsigned char key[4];
    MDB_val rk, rv;
    int rc;

    if (index >= n) {
        problem(c, "%s \"%.*s\": index %u beyond %llu %ss", what,
                (int)k->mv_size, (char *)k->mv_data, index,
                (unsigned long long)n, what);
        return;
    }
    put_be32(key, index);
    rk = val_of(key, 4);
    rc = get(c->s, c->txn, rev, &rk, &rv, "reverse map");
    if (rc != 0 || rv.mv_size != k->mv_size ||
        memcmp(rv.mv_data, k->mv_data, k->mv_size) != 0)
        problem(c, "%s \"%.*s\": index %u maps back to %s", what,
                (int)k->mv_size, (char *)k->mv_data, index,
                rc == 0 ? "another id" : "nothing");
}

static int check_items_map(struct check_ctx *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t n = 0;
    int mrc = mdb_cursor_open(c->txn, c->s->items, &cur);

    if (mrc)
        return mdb_fail(c->s, mrc, "items");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        struct item_hdr h;

        if (item_decode(c->s, &v, &h) < 0) {
            problem(c, "item \"%.*s\": malformed record of %zu bytes",
                    (int)k.mv_size, (char *)k.mv_data, v.mv_size);
            continue;
        }
        check_forward(c, "item", c->s->item_ids, &k, h.index, c->n_items);
        if (h.mask >> c->t.n)
            problem(c, "item \"%.*s\": features of undefined channels",
                    (int)k.mv_size, (char *)k.mv_data);
    }
    mdb_cursor_close(cur);
    if (n != c->n_items)
        problem(c, "items: %llu ids but %llu indices",
                (unsigned long long)n, (unsigned long long)c->n_items);
    return mrc == MDB_NOTFOUND ? 0 : mdb_fail(c->s, mrc, "items");
}

static int check_users_map(struct check_ctx *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t n = 0;
    int mrc = mdb_cursor_open(c->txn, c->s->users, &cur);

    if (mrc)
        return mdb_fail(c->s, mrc, "users");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        if (v.mv_size != 4) {
            problem(c, "user \"%.*s\": malformed record of %zu bytes",
                    (int)k.mv_size, (char *)k.mv_data, v.mv_size);
            continue;
        }
        check_forward(c, "user", c->s->user_ids, &k, get_u32(v.mv_data),
                      c->n_users);
    }
    mdb_cursor_close(cur);
    if (n != c->n_users)
        problem(c, "users: %llu ids but %llu indices",
                (unsigned long long)n, (unsigned long long)c->n_users);
    return mrc == MDB_NOTFOUND ? 0 : mdb_fail(c->s, mrc, "users");
}

/* Reverse keys are exactly 0..n-1 and each id is a valid one. */
static int check_reverse(struct check_ctx *c, MDB_dbi dbi, const char *what)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t expect = 0;
    int mrc = mdb_cursor_open(c->txn, dbi, &cur);

    if (mrc)
        return mdb_fail(c->s, mrc, what);
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), expect++) {
        char id[SGBD_STORE_ID_MAX + 1];

        if (k.mv_size != 4 || get_be32(k.mv_data) != expect) {
            problem(c, "%s index %llu: missing from the reverse map", what,
                    (unsigned long long)expect);
            break;
        }
        if (v.mv_size == 0 || v.mv_size > SGBD_STORE_ID_MAX) {
            problem(c, "%s index %llu: id of %zu bytes", what,
                    (unsigned long long)expect, v.mv_size);
            continue;
        }
        memcpy(id, v.mv_data, v.mv_size);
        id[v.mv_size] = '\0';
        if (sgbd_store_id_check(id, what) < 0)
            problem(c, "%s index %llu: invalid id", what,
                    (unsigned long long)expect);
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND || mrc == 0 ? 0 : mdb_fail(c->s, mrc, what);
}

static int check_features(struct check_ctx *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(c->txn, c->s->features, &cur);

    if (mrc)
        return mdb_fail(c->s, mrc, "features");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *p = k.mv_data;
        unsigned ch;
        uint32_t index;

        if (k.mv_size != FEAT_KEY) {
            problem(c, "features: key of %zu bytes", k.mv_size);
            continue;
        }
        ch = (unsigned)(p[0] << 8 | p[1]);
        index = get_be32(p + 2);
        if (ch >= (unsigned)c->t.n)
            problem(c, "features: item %u: undefined channel %u", index, ch);
        else if (v.mv_size != (size_t)c->t.ch[ch].width * 4)
            problem(c, "features: item %u: channel %s: %zu bytes, expected "
                    "%u", index, c->t.ch[ch].name, v.mv_size,
                    c->t.ch[ch].width * 4);
        if (index >= c->n_items)
            problem(c, "features: item index %u does not exist", index);
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND ? 0 : mdb_fail(c->s, mrc, "features");
}

static int check_event(void *arg, const struct sgbd_store_interaction *e)
{
    struct check_ctx *c = arg;
    unsigned char key[IKEY_LEN];
    MDB_val k, v;
    int rc;

    if (e->user >= c->n_users || e->item >= c->n_items)
        problem(c, "interaction %llu: user %u or item %u does not exist",
                (unsigned long long)e->seq, e->user, e->item);
    if (e->label > SGBD_LABEL_TEST)
        problem(c, "interaction %llu: label %u", (unsigned long long)e->seq,
                e->label);
    ikey(key, e);
    k = val_of(key, sizeof(key));
    rc = get(c->s, c->txn, c->s->inter_keys, &k, &v, "inter_keys");
    if (rc < 0)
        return rc;
    if (rc == 1 || v.mv_size != 8 || get_u64(v.mv_data) != e->seq)
        problem(c, "interaction %llu: missing from the dedup index",
                (unsigned long long)e->seq);
    return 0;
}

static int check_log(struct check_ctx *c)
{
    uint64_t n_inter = 0, n_keys = 0;
    int rc = walk_inter(c->s, c->txn, 0, check_event, c);

    if (rc == SGBD_E_CORRUPT) {
        problem(c, "interactions: %s", sgbd_err_detail(rc));
        rc = 0;
    }
    if (rc == 0)
        rc = entries(c->s, c->txn, c->s->inter, &n_inter);
    if (rc == 0)
        rc = entries(c->s, c->txn, c->s->inter_keys, &n_keys);
    if (rc == 0 && n_inter != n_keys)
        problem(c, "interactions: %llu events but %llu dedup keys",
                (unsigned long long)n_inter, (unsigned long long)n_keys);
    return rc;
}

static int check_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct check_ctx *c = arg;
    int rc = load_channels(s, txn, &c->t);

    c->txn = txn;
    if (rc == SGBD_E_CORRUPT) {
        problem(c, "channels: %s", sgbd_err_detail(rc));
        rc = 0;
    }
    if (rc == 0)
        rc = entries(s, txn, s->item_ids, &c->n_items);
    if (rc == 0)
        rc = entries(s, txn, s->user_ids, &c->n_users);
    if (rc == 0)
        rc = check_reverse(c, s->item_ids, "item");
    if (rc == 0)
        rc = check_reverse(c, s->user_ids, "user");
    if (rc == 0)
        rc = check_items_map(c);
    if (rc == 0)
        rc = check_users_map(c);
    if (rc == 0)
        rc = check_features(c);
    if (rc == 0)
        rc = check_log(c);
    return rc;
}

int sgbd_store_check(struct sgbd_store *s, sgbd_store_report_fn fn,
                     void *ctx, size_t *problems)
{
    struct check_ctx c = {.s = s, .fn = fn, .arg = ctx};
    int rc = store_read(s, check_fn, &c);

    if (c.problems > REPORT_MAX && fn) {
        char line[96];

        snprintf(line, sizeof(line), "... %zu more problems not shown",
                 c.problems - REPORT_MAX);
        fn(ctx, line);
    }
    *problems = c.problems;
    return rc;
}

/* ---- Checkpoint chunks ----------------------------------------------- */

static void chunk_key(unsigned char *k, uint64_t version, uint32_t chunk)
{
    put_be64(k, version);
    put_be32(k + 8, chunk);
}

static int meta_u64(struct sgbd_store *s, MDB_txn *txn, const char *name,
                    uint64_t *out)
{
    MDB_val k = val_str(name), v;
    int rc = get(s, txn, s->meta, &k, &v, name);

    *out = 0;
    if (rc == 1)
        return 0;
    if (rc == 0 && v.mv_size != 8)
        return corrupt(s, "meta", v.mv_size);
    if (rc == 0)
        *out = get_u64(v.mv_data);
    return rc;
}

static int meta_put_u64(struct sgbd_store *s, MDB_txn *txn,
                        const char *name, uint64_t value)
{
    unsigned char buf[8];
    MDB_val k = val_str(name), v;

    put_u64(buf, value);
    v = val_of(buf, 8);
    return put(s, txn, s->meta, &k, &v, 0, name);
}

/* Last key of dbi as a BE64 prefix (0 when empty). */
static int last_version(struct sgbd_store *s, MDB_txn *txn, MDB_dbi dbi,
                        uint64_t *v)
{
    MDB_cursor *cur;
    MDB_val k, d;
    int mrc = mdb_cursor_open(txn, dbi, &cur);

    *v = 0;
    if (mrc)
        return mdb_fail(s, mrc, "checkpoints");
    mrc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
    mdb_cursor_close(cur);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return mdb_fail(s, mrc, "checkpoints");
    if (k.mv_size < 8)
        return corrupt(s, "checkpoint key", k.mv_size);
    *v = get_be64(k.mv_data);
    return 0;
}

static int reserve_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    uint64_t *version = arg, next, a, b;
    int rc = meta_u64(s, txn, "next_version", &next);

    if (rc == 0)
        rc = last_version(s, txn, s->ckpts, &a);
    if (rc == 0)
        rc = last_version(s, txn, s->chunks, &b);
    if (rc < 0)
        return rc;
    next = next > a + 1 ? next : a + 1;
    next = next > b + 1 ? next : b + 1;
    *version = next;
    return meta_put_u64(s, txn, "next_version", next + 1);
}

int sgbd_store_ckpt_reserve(struct sgbd_store *s, uint64_t *version)
{
    return store_write(s, reserve_fn, version);
}

struct chunks_ctx {
    uint64_t version;
    uint32_t first, n;
    const struct sgbd_store_chunk *chunks;
};

static int put_chunks_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct chunks_ctx *c = arg;
    int rc = 0;

    for (uint32_t i = 0; i < c->n && rc == 0; i++) {
        const struct sgbd_store_chunk *ch = &c->chunks[i];
        unsigned char key[CHUNK_KEY];
        MDB_val k, v = val_of(NULL, 4 + ch->len);

        chunk_key(key, c->version, c->first + i);
        k = val_of(key, sizeof(key));
        rc = put(s, txn, s->chunks, &k, &v, MDB_RESERVE, "write chunk");
        if (rc == 0) {
            put_u32(v.mv_data, ch->crc);
            memcpy((unsigned char *)v.mv_data + 4, ch->data, ch->len);
        }
    }
    return rc;
}

int sgbd_store_ckpt_put_chunks(struct sgbd_store *s, uint64_t version,
                               uint32_t first, uint32_t n,
                               const struct sgbd_store_chunk *chunks)
{
    struct chunks_ctx c = {version, first, n, chunks};

    for (uint32_t i = 0; i < n; i++)
        if (chunks[i].len > ((size_t)1 << 30))
            return sgbd_errf(SGBD_E_LIMIT, "checkpoint %llu: chunk of %zu "
                             "bytes", (unsigned long long)version,
                             chunks[i].len);
    if ((uint64_t)first + n > UINT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "checkpoint: too many chunks");
    return n ? store_write(s, put_chunks_fn, &c) : 0;
}

/* Stored chunk indices of version are exactly 0 .. n - 1. */
static int count_chunks(struct sgbd_store *s, MDB_txn *txn, uint64_t version,
                        uint32_t *n)
{
    unsigned char key[CHUNK_KEY];
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->chunks, &cur);

    *n = 0;
    if (mrc)
        return mdb_fail(s, mrc, "chunks");
    chunk_key(key, version, 0);
    k = val_of(key, sizeof(key));
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != CHUNK_KEY || get_be64(k.mv_data) != version ||
            get_be32((unsigned char *)k.mv_data + 8) != *n)
            break;
        (*n)++;
    }
    mdb_cursor_close(cur);
    return mrc == 0 || mrc == MDB_NOTFOUND ? 0 : mdb_fail(s, mrc, "chunks");
}

struct publish_ctx {
    uint64_t version;
    const void *header;
    size_t len;
    uint32_t n_chunks;
};

static int set_pointers(struct sgbd_store *s, MDB_txn *txn,
                        uint64_t version)
{
    uint64_t cur;
    int rc = meta_u64(s, txn, "current", &cur);

    if (rc < 0 || cur == version)
        return rc;
    if (cur)
        rc = meta_put_u64(s, txn, "previous", cur);
    return rc < 0 ? rc : meta_put_u64(s, txn, "current", version);
}

static int publish_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct publish_ctx *c = arg;
    unsigned char key[8];
    MDB_val k, v;
    uint32_t have;
    int rc;

    put_be64(key, c->version);
    k = val_of(key, 8);
    rc = get(s, txn, s->ckpts, &k, &v, "read checkpoint");
    if (rc == 0)
        return sgbd_errf(SGBD_E_EXISTS, "checkpoint %llu already published",
                         (unsigned long long)c->version);
    if (rc < 0 || (rc = count_chunks(s, txn, c->version, &have)) < 0)
        return rc;
    if (have != c->n_chunks)
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint %llu: %u of %u chunks "
                         "stored", (unsigned long long)c->version, have,
                         c->n_chunks);
    v = val_of(c->header, c->len);
    rc = put(s, txn, s->ckpts, &k, &v, 0, "write checkpoint header");
    return rc < 0 ? rc : set_pointers(s, txn, c->version);
}

int sgbd_store_ckpt_publish(struct sgbd_store *s, uint64_t version,
                            const void *header, size_t header_len,
                            uint32_t n_chunks)
{
    struct publish_ctx c = {version, header, header_len, n_chunks};

    return store_write(s, publish_fn, &c);
}

struct pointers_ctx {
    uint64_t *current, *previous;
};

static int pointers_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct pointers_ctx *c = arg;
    int rc = meta_u64(s, txn, "current", c->current);

    return rc < 0 ? rc : meta_u64(s, txn, "previous", c->previous);
}

int sgbd_store_ckpt_pointers(struct sgbd_store *s, uint64_t *current,
                             uint64_t *previous)
{
    uint64_t cur = 0, prev = 0;
    struct pointers_ctx c = {&cur, &prev};
    int rc = store_read(s, pointers_fn, &c);

    if (current)
        *current = cur;
    if (previous)
        *previous = prev;
    return rc;
}

static int published(struct sgbd_store *s, MDB_txn *txn, uint64_t version)
{
    unsigned char key[8];
    MDB_val k, v;
    int rc;

    put_be64(key, version);
    k = val_of(key, 8);
    rc = get(s, txn, s->ckpts, &k, &v, "read checkpoint");
    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "checkpoint %llu not found",
                         (unsigned long long)version);
    return rc;
}

static int set_current_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    uint64_t version = *(uint64_t *)arg;
    int rc = published(s, txn, version);

    return rc < 0 ? rc : set_pointers(s, txn, version);
}

int sgbd_store_ckpt_set_current(struct sgbd_store *s, uint64_t version)
{
    return store_write(s, set_current_fn, &version);
}

struct header_ctx {
    uint64_t version;
    void **buf;
    size_t *len;
};

static int header_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct header_ctx *c = arg;
    unsigned char key[8];
    MDB_val k, v;
    int rc;

    put_be64(key, c->version);
    k = val_of(key, 8);
    rc = get(s, txn, s->ckpts, &k, &v, "read checkpoint");
    if (rc == 1)
        return sgbd_errf(SGBD_E_NOTFOUND, "checkpoint %llu not found",
                         (unsigned long long)c->version);
    if (rc < 0)
        return rc;
    *c->buf = malloc(v.mv_size ? v.mv_size : 1);
    if (!*c->buf)
        return sgbd_errf(-ENOMEM, "checkpoint header: out of memory");
    memcpy(*c->buf, v.mv_data, v.mv_size);
    *c->len = v.mv_size;
    return 0;
}

int sgbd_store_ckpt_header(struct sgbd_store *s, uint64_t version,
                           void **buf, size_t *len)
{
    struct header_ctx c = {version, buf, len};

    return store_read(s, header_fn, &c);
}

struct versions_ctx {
    uint64_t *out;
    size_t max, n;
};

static int versions_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct versions_ctx *c = arg;
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->ckpts, &cur);
    int rc = 0;

    if (mrc)
        return mdb_fail(s, mrc, "ckpts");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            rc = corrupt(s, "checkpoint key", k.mv_size);
            break;
        }
        if (c->n < c->max)
            c->out[c->n] = get_be64(k.mv_data);
        c->n++;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "ckpts");
    return rc;
}

int sgbd_store_ckpt_versions(struct sgbd_store *s, uint64_t *out,
                             size_t max, size_t *n)
{
    struct versions_ctx c = {out, max, 0};
    int rc = store_read(s, versions_fn, &c);

    *n = c.n;
    return rc;
}

struct read_chunks_ctx {
    uint64_t version;
    sgbd_store_chunk_fn fn;
    void *arg;
};

static int read_chunks_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct read_chunks_ctx *c = arg;
    unsigned char key[CHUNK_KEY];
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->chunks, &cur);
    int rc = 0;

    if (mrc)
        return mdb_fail(s, mrc, "chunks");
    chunk_key(key, c->version, 0);
    k = val_of(key, sizeof(key));
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *p = v.mv_data;

        if (k.mv_size != CHUNK_KEY || get_be64(k.mv_data) != c->version)
            break;
        if (v.mv_size < 4) {
            rc = corrupt(s, "chunks", v.mv_size);
            break;
        }
        rc = c->fn(c->arg, get_be32((unsigned char *)k.mv_data + 8),
                   get_u32(p), p + 4, v.mv_size - 4);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "chunks");
    return rc;
}

int sgbd_store_ckpt_read_chunks(struct sgbd_store *s, uint64_t version,
                                sgbd_store_chunk_fn fn, void *ctx)
{
    struct read_chunks_ctx c = {version, fn, ctx};

    return store_read(s, read_chunks_fn, &c);
}

struct del_ctx {
    uint64_t version;
    size_t deleted;
};

static int unpublish_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct del_ctx *c = arg;
    uint64_t cur, prev;
    unsigned char key[8];
    MDB_val k;
    int rc = meta_u64(s, txn, "current", &cur);

    if (rc == 0)
        rc = meta_u64(s, txn, "previous", &prev);
    if (rc == 0)
        rc = published(s, txn, c->version);
    if (rc < 0)
        return rc;
    if (c->version == cur || c->version == prev)
        return sgbd_errf(SGBD_E_BUSY, "checkpoint %llu is the %s one; roll "
                         "back first", (unsigned long long)c->version,
                         c->version == cur ? "current" : "previous");
    put_be64(key, c->version);
    k = val_of(key, 8);
    rc = mdb_del(txn, s->ckpts, &k, NULL);
    return rc ? mdb_fail(s, rc, "delete checkpoint") : 0;
}

/* Delete up to DELETE_BATCH chunks of the version; c->deleted counts. */
static int del_chunks_fn(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct del_ctx *c = arg;
    unsigned char key[CHUNK_KEY];
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, s->chunks, &cur);

    c->deleted = 0;
    if (mrc)
        return mdb_fail(s, mrc, "chunks");
    chunk_key(key, c->version, 0);
    for (;;) {
        /* Seek afresh each time: a deleted key's page may be gone. */
        k = val_of(key, sizeof(key));
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc || c->deleted >= DELETE_BATCH || k.mv_size != CHUNK_KEY ||
            get_be64(k.mv_data) != c->version)
            break;
        if ((mrc = mdb_cursor_del(cur, 0)) != 0)
            break;
        c->deleted++;
    }
    mdb_cursor_close(cur);
    return mrc == 0 || mrc == MDB_NOTFOUND ? 0 :
           mdb_fail(s, mrc, "delete chunks");
}

static int delete_chunks(struct sgbd_store *s, uint64_t version)
{
    struct del_ctx c = {version, 0};
    int rc;

    do {
        rc = store_write(s, del_chunks_fn, &c);
    } while (rc == 0 && c.deleted == DELETE_BATCH);
    return rc;
}

int sgbd_store_ckpt_delete(struct sgbd_store *s, uint64_t version)
{
    struct del_ctx c = {version, 0};
    int rc = store_write(s, unpublish_fn, &c);

    return rc < 0 ? rc : delete_chunks(s, version);
}

#define GC_MAX 256   /* orphan versions collected per pass */

struct gc_ctx {
    uint64_t orphans[GC_MAX];
    size_t n;
};

/* Versions that have chunks, no header, and are older than the newest
 * header: their save crashed (a newer save finished after them). */
static int find_orphans(struct sgbd_store *s, MDB_txn *txn, void *arg)
{
    struct gc_ctx *c = arg;
    unsigned char key[CHUNK_KEY];
    uint64_t newest;
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc, rc = last_version(s, txn, s->ckpts, &newest);

    c->n = 0;
    if (rc < 0 || (mrc = mdb_cursor_open(txn, s->chunks, &cur)))
        return rc < 0 ? rc : mdb_fail(s, mrc, "chunks");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         mrc == 0 && c->n < GC_MAX;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) {
        uint64_t ver;

        if (k.mv_size != CHUNK_KEY || (ver = get_be64(k.mv_data)) >= newest)
            break;
        if ((rc = published(s, txn, ver)) == SGBD_E_NOTFOUND)
            c->orphans[c->n++] = ver;
        else if (rc < 0)
            break;
        rc = 0;
        chunk_key(key, ver + 1, 0);
        k = val_of(key, sizeof(key));
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = mdb_fail(s, mrc, "chunks");
    return rc;
}

int sgbd_store_ckpt_gc(struct sgbd_store *s, size_t *n_versions)
{
    struct gc_ctx *c = malloc(sizeof(*c));
    size_t total = 0;
    int rc;

    if (!c)
        return sgbd_errf(-ENOMEM, "gc: out of memory");
    do {
        rc = store_read(s, find_orphans, c);
        for (size_t i = 0; i < c->n && rc == 0; i++)
            rc = delete_chunks(s, c->orphans[i]);
        if (rc == 0)
            total += c->n;
    } while (rc == 0 && c->n == GC_MAX);
    free(c);
    if (total)
        SGBD_INFO("checkpoint_gc", "orphans=%zu", total);
    if (n_versions)
        *n_versions = total;
    return rc;
}
