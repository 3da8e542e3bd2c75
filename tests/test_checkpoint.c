/* test_checkpoint.c - chunked checkpoints: round trip, fallback on damage,
 * pruning and rollback, and a decoder that survives hostile bytes. */
/* ctest: labels=unit timeout=120 */
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/checkpoint.h"
#include "sgbd/cli.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"
#include "sgbd/store.h"

static char root[] = "/tmp/sgbd-test-ckpt-XXXXXX";
static int case_no;

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    return remove(path);
}

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
    if (sgbd_store_open(&s, path, &o) < 0)
        fprintf(stderr, "  open %s: %s\n", path, sgbd_err_detail(-1));
    return s;
}

/* Three tensors, 2.3 MiB: three chunks, the last one partial. */
static void make_layout(struct sgbd_params *l, size_t users)
{
    memset(l, 0, sizeof(*l));
    sgbd_params_add(l, "user_emb", users, 64, SGBD_INIT_XAVIER_UNIFORM, 0,
                    0);
    sgbd_params_add(l, "item_emb", 1000, 64, SGBD_INIT_XAVIER_UNIFORM, 0,
                    0);
    sgbd_params_add(l, "proj", 3, 5, SGBD_INIT_LINEAR, 0, 0);
}

/* An arena whose values depend on seed, so versions differ everywhere. */
static float *make_arena(const struct sgbd_params *l, uint64_t seed)
{
    float *a = sgbd_params_alloc_arena(l);
    struct sgbd_rng rng;

    if (a) {
        sgbd_rng_init(&rng, seed, 7);
        sgbd_params_init(l, a, &rng);
    }
    return a;
}

static void make_info(struct sgbd_checkpoint_info *in, uint64_t step)
{
    memset(in, 0, sizeof(*in));
    snprintf(in->model, sizeof(in->model), "lightgcn");
    snprintf(in->optimizer, sizeof(in->optimizer), "sgbd");
    in->step = step;
    in->epoch = (uint32_t)step / 10;
    in->n_users = 8000;
    in->n_items = 1000;
    in->data_seq = 4242;
    in->n_hparams = 2;
    snprintf(in->hparams[0].key, SGBD_CKPT_KEY, "rho");
    in->hparams[0].value = 0.05;
    snprintf(in->hparams[1].key, SGBD_CKPT_KEY, "embedding_size");
    in->hparams[1].value = 64;
    in->n_metrics = 1;
    snprintf(in->metrics[0].key, SGBD_CKPT_KEY, "recall@20");
    in->metrics[0].value = 0.0754;
}

/* Save versions 1..n with seeds 100 + version. */
static int save_n(struct sgbd_store *s, const struct sgbd_params *l, int n)
{
    struct sgbd_checkpoint_info in;
    uint64_t v, first = 0;
    int rc = 0;

    for (int i = 0; i < n && rc == 0; i++) {
        size_t k;
        float *a;

        sgbd_store_ckpt_versions(s, NULL, 0, &k);
        a = make_arena(l, 100 + (uint64_t)k + 1);
        make_info(&in, (uint64_t)(k + 1) * 100);
        rc = a ? sgbd_checkpoint_save(s, &in, l, a, &v) : -12;
        if (rc == 0 && !first)
            first = v;
        sgbd_params_free_arena(a);
    }
    return rc;
}

static int arena_is(const float *a, const struct sgbd_params *l,
                    uint64_t version)
{
    float *want = make_arena(l, 100 + version);
    int same = want && memcmp(a, want, l->n * sizeof(float)) == 0;

    sgbd_params_free_arena(want);
    return same;
}

/* Bit-at-a-time CRC32C, the definition. */
static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;

    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

static void test_checkpoint_crc32c_matches_the_definition(void)
{
    unsigned char zeros[32] = {0}, buf[1000];
    struct sgbd_rng rng;

    CHECK_INT(sgbd_crc32c(0, "123456789", 9), 0xe3069283u);
    CHECK_INT(sgbd_crc32c(0, zeros, 32), 0x8a9136aau);
    CHECK_INT(sgbd_crc32c(0, buf, 0), 0);
    sgbd_rng_init(&rng, 5, 1);
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)sgbd_rng_u64(&rng);
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n < 200; n += 13)
            CHECK_INT(sgbd_crc32c(0, buf + off, n), crc_ref(buf + off, n));
    /* Continuation: crc(a ++ b) from crc(a). */
    CHECK_INT(sgbd_crc32c(sgbd_crc32c(0, buf, 300), buf + 300, 700),
              sgbd_crc32c(0, buf, 1000));
}

static void test_checkpoint_round_trip_keeps_every_byte(void)
{
    char path[256];
    struct sgbd_params l, got_l;
    struct sgbd_checkpoint_info in, got;
    uint64_t v = 0, loaded = 0;
    float *a, *back = NULL;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 8000);
    CHECK(l.n * 4 > 2 * SGBD_CKPT_CHUNK_BYTES);
    a = make_arena(&l, 101);
    make_info(&in, 100);
    CHECK_INT(sgbd_checkpoint_save(s, &in, &l, a, &v), 0);
    CHECK_INT(v, 1);
    CHECK_INT(sgbd_checkpoint_load(s, 0, &got, &got_l, &back, &loaded), 0);
    CHECK_INT(loaded, 1);
    CHECK(memcmp(a, back, l.n * 4) == 0);
    CHECK(((uintptr_t)back & 63) == 0);
    CHECK_INT(got_l.n, l.n);
    CHECK_INT(got_l.n_tensors, 3);
    CHECK(memcmp(&got_l.t[2], &l.t[2], sizeof(l.t[2])) == 0);
    CHECK_STR(got.model, "lightgcn");
    CHECK_STR(got.optimizer, "sgbd");
    CHECK_INT(got.step, 100);
    CHECK_INT(got.n_users, 8000);
    CHECK_INT(got.data_seq, 4242);
    CHECK_INT(got.version, 1);
    CHECK_INT(got.payload_bytes, l.n * 4);
    CHECK(got.created_at_ms > 1600000000000ULL);
    CHECK_STR(got.hparams[1].key, "embedding_size");
    CHECK_NEAR(got.metrics[0].value, 0.0754, 0);
    sgbd_params_free_arena(a);
    sgbd_params_free_arena(back);
    sgbd_store_close(s);
}

static void test_checkpoint_save_moves_current_to_previous(void)
{
    char path[256];
    struct sgbd_params l;
    uint64_t cur, prev;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    CHECK_INT(sgbd_checkpoint_load(s, 0, NULL, NULL, NULL, NULL),
              SGBD_E_NOMODEL);
    make_layout(&l, 100);
    CHECK_INT(save_n(s, &l, 3), 0);
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, &prev), 0);
    CHECK_INT(cur, 3);
    CHECK_INT(prev, 2);
    CHECK_INT(sgbd_checkpoint_load(s, 7, NULL, NULL, NULL, NULL),
              SGBD_E_NOTFOUND);
    sgbd_store_close(s);
}

/* Raw LMDB access to the closed store, as damage from outside. */
struct raw {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
};

static int raw_open(struct raw *r, const char *path, const char *db)
{
    if (mdb_env_create(&r->env) || mdb_env_set_maxdbs(r->env, 16) ||
        mdb_env_open(r->env, path, 0, 0640) ||
        mdb_txn_begin(r->env, NULL, 0, &r->txn) ||
        mdb_dbi_open(r->txn, db, 0, &r->dbi))
        return -1;
    return 0;
}

static int raw_close(struct raw *r)
{
    int rc = mdb_txn_commit(r->txn);

    mdb_env_close(r->env);
    return rc;
}

static void chunk_key(unsigned char *k, uint64_t v, uint32_t c)
{
    for (int i = 0; i < 8; i++)
        k[i] = (unsigned char)(v >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        k[8 + i] = (unsigned char)(c >> (24 - 8 * i));
}

/* Flip one payload byte of chunk c of version v. */
static int flip_chunk_byte(const char *path, uint64_t v, uint32_t c,
                           size_t at)
{
    unsigned char key[12], *copy;
    MDB_val k = {12, key}, d;
    struct raw r;
    int rc;

    chunk_key(key, v, c);
    if (raw_open(&r, path, "chunks") || mdb_get(r.txn, r.dbi, &k, &d))
        return -1;
    copy = malloc(d.mv_size);
    memcpy(copy, d.mv_data, d.mv_size);
    copy[4 + at] ^= 0x10;
    d.mv_data = copy;
    rc = mdb_put(r.txn, r.dbi, &k, &d, 0);
    free(copy);
    return rc ? -1 : raw_close(&r);
}

static int capture_begin(int fds[2])
{
    if (pipe(fds) < 0)
        return -1;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    sgbd_log_set_fd(fds[1]);
    return 0;
}

static void capture_end(int fds[2], char *buf, size_t n)
{
    ssize_t got;

    sgbd_log_set_fd(2);
    close(fds[1]);
    got = read(fds[0], buf, n - 1);
    buf[got > 0 ? got : 0] = '\0';
    close(fds[0]);
}

static void report_line(void *ctx, const char *line)
{
    char *buf = ctx;

    strncat(buf, line, 1023 - strlen(buf));
    strncat(buf, "\n", 1023 - strlen(buf));
}

static void test_checkpoint_damaged_chunk_falls_back_to_previous(void)
{
    char path[256], log[4096], lines[1024] = "";
    struct sgbd_params l;
    uint64_t loaded = 0, cur;
    size_t problems = 0;
    float *a = NULL;
    int fds[2];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 8000);
    CHECK_INT(save_n(s, &l, 2), 0);
    sgbd_store_close(s);
    CHECK_INT(flip_chunk_byte(path, 2, 1, 12345), 0);

    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(capture_begin(fds), 0);
    CHECK_INT(sgbd_checkpoint_load(s, 0, NULL, NULL, &a, &loaded), 0);
    capture_end(fds, log, sizeof(log));
    CHECK_INT(loaded, 1);
    CHECK(arena_is(a, &l, 1));
    sgbd_params_free_arena(a);
    CHECK(strstr(log, "ev=checkpoint_corrupt version=2"));
    CHECK(strstr(log, "chunk 1: checksum mismatch"));
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, NULL), 0);
    CHECK_INT(cur, 2);   /* loading changes nothing */

    CHECK_INT(sgbd_checkpoint_load(s, 2, NULL, NULL, &a, NULL),
              SGBD_E_CORRUPT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_CORRUPT),
                 "checkpoint 2: chunk 1: checksum mismatch"));
    CHECK_INT(sgbd_checkpoint_check(s, report_line, lines, &problems), 0);
    CHECK_INT(problems, 1);
    CHECK(strstr(lines, "checkpoint 2"));
    CHECK_INT(sgbd_checkpoint_rollback(s, 2), SGBD_E_CORRUPT);
    CHECK_INT(sgbd_checkpoint_rollback(s, 1), 0);
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, NULL), 0);
    CHECK_INT(cur, 1);
    sgbd_store_close(s);
}

/* Damage to data.mdb itself, found by the bytes of the current arena. */
static void test_checkpoint_damage_in_the_file_is_detected(void)
{
    char path[256], file[300], *argv[4];
    struct sgbd_params l;
    uint64_t loaded = 0;
    float *want, *a = NULL;
    struct stat st;
    unsigned char *map, *hit;
    int fd, fds[2];
    char log[4096];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 8000);
    CHECK_INT(save_n(s, &l, 2), 0);
    sgbd_store_close(s);

    want = make_arena(&l, 102);
    snprintf(file, sizeof(file), "%s/data.mdb", path);
    fd = open(file, O_RDWR);
    CHECK(fd >= 0);
    CHECK(fstat(fd, &st) == 0);
    map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
               fd, 0);
    CHECK(map != MAP_FAILED);
    hit = memmem(map, (size_t)st.st_size, want + 70000, 64);
    sgbd_params_free_arena(want);
    CHECK(hit);
    hit[10] ^= 0x01;
    CHECK(msync(map, (size_t)st.st_size, MS_SYNC) == 0);
    munmap(map, (size_t)st.st_size);
    close(fd);

    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(capture_begin(fds), 0);
    CHECK_INT(sgbd_checkpoint_load(s, 0, NULL, NULL, &a, &loaded), 0);
    capture_end(fds, log, sizeof(log));
    sgbd_store_close(s);
    CHECK_INT(loaded, 1);
    CHECK(arena_is(a, &l, 1));
    sgbd_params_free_arena(a);
    CHECK(strstr(log, "ev=checkpoint_corrupt version=2"));

    argv[0] = "check";
    argv[1] = "--db";
    argv[2] = path;
    argv[3] = NULL;
    fflush(stdout);
    CHECK_INT(sgbd_cli_check(3, argv), SGBD_E_CORRUPT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_CORRUPT), "1 problems"));
}

static void test_checkpoint_damaged_header_or_missing_chunk(void)
{
    char path[256], log[4096];
    struct sgbd_params l;
    unsigned char key[12], hkey[8] = {0, 0, 0, 0, 0, 0, 0, 2}, *copy;
    MDB_val k = {12, key}, d;
    uint64_t loaded;
    struct raw r;
    int fds[2];
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 8000);
    CHECK_INT(save_n(s, &l, 3), 0);
    sgbd_store_close(s);

    /* Version 3 loses its last chunk; version 2 gets a bad header. */
    chunk_key(key, 3, 2);
    CHECK_INT(raw_open(&r, path, "chunks"), 0);
    CHECK_INT(mdb_del(r.txn, r.dbi, &k, NULL), 0);
    CHECK_INT(raw_close(&r), 0);
    CHECK_INT(raw_open(&r, path, "ckpts"), 0);
    k.mv_size = 8;
    k.mv_data = hkey;
    CHECK_INT(mdb_get(r.txn, r.dbi, &k, &d), 0);
    copy = malloc(d.mv_size);
    memcpy(copy, d.mv_data, d.mv_size);
    copy[30] ^= 0x40;   /* inside the model name */
    d.mv_data = copy;
    CHECK_INT(mdb_put(r.txn, r.dbi, &k, &d, 0), 0);
    free(copy);
    CHECK_INT(raw_close(&r), 0);

    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_checkpoint_verify(s, 3, NULL), SGBD_E_CORRUPT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_CORRUPT), "chunk 2 missing"));
    CHECK_INT(sgbd_checkpoint_verify(s, 2, NULL), SGBD_E_CORRUPT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_CORRUPT), "header checksum"));
    CHECK_INT(capture_begin(fds), 0);
    CHECK_INT(sgbd_checkpoint_load(s, 0, NULL, NULL, NULL, &loaded),
              SGBD_E_CORRUPT);
    capture_end(fds, log, sizeof(log));
    CHECK(strstr(sgbd_err_detail(SGBD_E_CORRUPT), "3 and 2 are both"));
    CHECK(strstr(log, "version=3"));
    CHECK_INT(sgbd_checkpoint_verify(s, 1, NULL), 0);
    sgbd_store_close(s);
}

static void test_checkpoint_prune_keeps_current_and_previous(void)
{
    char path[256];
    struct sgbd_params l;
    struct sgbd_checkpoint_entry *e;
    uint64_t cur, prev;
    size_t n, deleted;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 100);
    CHECK_INT(save_n(s, &l, 6), 0);
    CHECK_INT(sgbd_checkpoint_rollback(s, 2), 0);
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, &prev), 0);
    CHECK_INT(cur, 2);
    CHECK_INT(prev, 6);
    CHECK_INT(sgbd_checkpoint_delete(s, 2), SGBD_E_BUSY);
    CHECK_INT(sgbd_checkpoint_delete(s, 6), SGBD_E_BUSY);
    CHECK_INT(sgbd_checkpoint_delete(s, 9), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_checkpoint_prune(s, 0, &deleted), SGBD_E_USAGE);
    CHECK_INT(sgbd_checkpoint_prune(s, 2, &deleted), 0);
    CHECK_INT(deleted, 3);   /* 1, 3, 4: 5 and 6 newest, 2 current */
    CHECK_INT(sgbd_checkpoint_list(s, &e, &n), 0);
    CHECK_INT(n, 3);
    CHECK_INT(e[0].info.version, 2);
    CHECK(e[0].is_current && e[0].header_ok);
    CHECK_INT(e[1].info.version, 5);
    CHECK_INT(e[2].info.version, 6);
    CHECK(e[2].is_previous);
    CHECK_INT(e[1].info.step, 500);
    free(e);
    CHECK_INT(sgbd_checkpoint_verify(s, 5, NULL), 0);
    CHECK_INT(sgbd_checkpoint_verify(s, 3, NULL), SGBD_E_NOTFOUND);
    CHECK_INT(save_n(s, &l, 1), 0);   /* versions are never reused */
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, &prev), 0);
    CHECK_INT(cur, 7);
    CHECK_INT(prev, 2);
    sgbd_store_close(s);
}

static void test_checkpoint_save_refuses_bad_input(void)
{
    char path[256];
    struct sgbd_params l, bad_l;
    struct sgbd_checkpoint_info in;
    struct sgbd_store_counts c;
    float *a;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 100);
    a = make_arena(&l, 1);
    make_info(&in, 1);
    a[77] = NAN;
    CHECK_INT(sgbd_checkpoint_save(s, &in, &l, a, NULL), SGBD_E_DIVERGED);
    a[77] = 0;
    in.model[0] = '\0';
    CHECK_INT(sgbd_checkpoint_save(s, &in, &l, a, NULL), SGBD_E_FORMAT);
    make_info(&in, 1);
    in.n_metrics = SGBD_CKPT_KV_MAX + 1;
    CHECK_INT(sgbd_checkpoint_save(s, &in, &l, a, NULL), SGBD_E_FORMAT);
    make_info(&in, 1);
    snprintf(in.metrics[0].key, SGBD_CKPT_KEY, "has space");
    CHECK_INT(sgbd_checkpoint_save(s, &in, &l, a, NULL), SGBD_E_FORMAT);
    make_info(&in, 1);
    bad_l = l;
    bad_l.t[1].offset = 8;   /* overlaps tensor 0 */
    CHECK_INT(sgbd_checkpoint_save(s, &in, &bad_l, a, NULL), SGBD_E_FORMAT);
    CHECK_INT(sgbd_store_counts(s, &c), 0);
    CHECK_INT(c.checkpoints, 0);
    sgbd_params_free_arena(a);
    sgbd_store_close(s);
}

static void test_checkpoint_full_map_keeps_current(void)
{
    char path[256];
    struct sgbd_params small, big;
    struct sgbd_checkpoint_info in;
    uint64_t cur, loaded;
    float *a, *b, *back = NULL;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 4 << 20,
                                   4 << 20);

    CHECK(s);
    make_layout(&small, 100);
    make_layout(&big, 20000);   /* 5.4 MB: cannot fit in 4 MiB */
    a = make_arena(&small, 101);
    b = make_arena(&big, 5);
    make_info(&in, 1);
    CHECK_INT(sgbd_checkpoint_save(s, &in, &small, a, NULL), 0);
    CHECK_INT(sgbd_checkpoint_save(s, &in, &big, b, NULL), SGBD_E_MAPFULL);
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, NULL), 0);
    CHECK_INT(cur, 1);
    CHECK_INT(sgbd_checkpoint_load(s, 0, NULL, NULL, &back, &loaded), 0);
    CHECK_INT(loaded, 1);
    CHECK(memcmp(back, a, small.n * 4) == 0);
    sgbd_params_free_arena(a);
    sgbd_params_free_arena(b);
    sgbd_params_free_arena(back);
    sgbd_store_close(s);
}

static int count_chunk(void *ctx, uint32_t chunk, uint32_t crc,
                       const void *data, size_t len)
{
    (*(int *)ctx)++;
    return 0;
}

static void test_checkpoint_orphans_of_a_crashed_save_are_removed(void)
{
    char path[256];
    struct sgbd_params l;
    struct sgbd_store_chunk ch = {0, "abcd", 4};
    uint64_t v;
    int n = 0;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);

    CHECK(s);
    make_layout(&l, 100);
    CHECK_INT(sgbd_store_ckpt_reserve(s, &v), 0);
    CHECK_INT(v, 1);
    CHECK_INT(sgbd_store_ckpt_put_chunks(s, v, 0, 1, &ch), 0);
    CHECK_INT(save_n(s, &l, 1), 0);   /* version 2 */
    sgbd_store_close(s);
    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_store_ckpt_read_chunks(s, 1, count_chunk, &n), 0);
    CHECK_INT(n, 0);
    CHECK_INT(sgbd_store_ckpt_read_chunks(s, 2, count_chunk, &n), 0);
    CHECK(n > 0);
    CHECK_INT(sgbd_store_ckpt_publish(s, 2, "x", 1, 1), SGBD_E_EXISTS);
    CHECK_INT(sgbd_store_ckpt_reserve(s, &v), 0);
    CHECK_INT(sgbd_store_ckpt_publish(s, v, "x", 1, 1), SGBD_E_CORRUPT);
    sgbd_store_close(s);
}

/* Rewrite the header CRC (header of hlen bytes) after an edit. */
static void reseal(unsigned char *buf, size_t hlen)
{
    uint32_t crc;

    crc = sgbd_crc32c(0, buf, hlen - 4);
    memcpy(buf + hlen - 4, &crc, 4);
}

static void put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void put64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* A small encoded checkpoint: header of hlen bytes, then the arena. */
struct sample {
    struct sgbd_params l;
    float *a;
    unsigned char *buf;
    size_t len, hlen;
};

static int make_sample(struct sample *x)
{
    struct sgbd_checkpoint_info in;
    uint32_t h32;

    memset(x, 0, sizeof(*x));
    sgbd_params_add(&x->l, "w", 10, 3, SGBD_INIT_LINEAR, 0, 0);
    sgbd_params_add(&x->l, "b", 1, 3, SGBD_INIT_ZERO, 0, 0);
    x->a = make_arena(&x->l, 9);
    make_info(&in, 5);
    in.version = 77;
    x->len = sgbd_checkpoint_encoded_size(&in, &x->l);
    x->buf = malloc(x->len);
    if (!x->a || !x->buf ||
        sgbd_checkpoint_encode(&in, &x->l, x->a, x->buf, x->len - 1,
                               &x->len) != SGBD_E_LIMIT ||
        sgbd_checkpoint_encode(&in, &x->l, x->a, x->buf, x->len,
                               &x->len) != 0)
        return -1;
    memcpy(&h32, x->buf + 12, 4);
    x->hlen = h32;
    return 0;
}

static void free_sample(struct sample *x)
{
    sgbd_params_free_arena(x->a);
    free(x->buf);
}

static void test_checkpoint_encode_decode_round_trip(void)
{
    struct sgbd_checkpoint_info got;
    struct sgbd_params got_l;
    struct sample x;
    float *back = NULL;

    CHECK_INT(make_sample(&x), 0);
    CHECK_INT(x.hlen + x.l.n * 4, x.len);
    CHECK_INT(sgbd_checkpoint_decode(x.buf, x.len, &got, &got_l, &back), 0);
    CHECK_INT(got.version, 77);
    CHECK_INT(got.step, 5);
    CHECK(memcmp(back, x.a, x.l.n * 4) == 0);
    CHECK(memcmp(&got_l, &x.l, sizeof(x.l)) == 0);
    sgbd_params_free_arena(back);
    CHECK_INT(sgbd_checkpoint_decode(x.buf, x.len, NULL, NULL, NULL), 0);
    free_sample(&x);
}

static void test_checkpoint_decode_refuses_truncation_and_flips(void)
{
    struct sample x;
    unsigned char *bad;

    CHECK_INT(make_sample(&x), 0);
    bad = malloc(x.len);
    CHECK(bad);
    for (size_t n = 0; n < x.len; n++)
        CHECK(sgbd_checkpoint_decode(x.buf, n, NULL, NULL, NULL) < 0);
    for (size_t i = 0; i < x.len; i++) {
        memcpy(bad, x.buf, x.len);
        bad[i] ^= 0x04;
        CHECK(sgbd_checkpoint_decode(bad, x.len, NULL, NULL, NULL) < 0);
    }
    free(bad);
    free_sample(&x);
}

/* One field rewritten (width 1, 4 or 8 bytes) under a valid checksum. */
struct lie {
    size_t at;
    int width;
    uint64_t value;
    int rc;
};

static int tell(const struct sample *x, unsigned char *bad,
                const struct lie *lie)
{
    float *back = NULL;
    int rc;

    memcpy(bad, x->buf, x->len);
    if (lie->width == 8)
        put64(bad + lie->at, lie->value);
    else if (lie->width == 4)
        put32(bad + lie->at, (uint32_t)lie->value);
    else
        bad[lie->at] = (unsigned char)lie->value;
    reseal(bad, x->hlen);
    rc = sgbd_checkpoint_decode(bad, x->len, NULL, NULL, &back);
    if (rc == 0)
        sgbd_params_free_arena(back);
    return rc;
}

static void test_checkpoint_decode_refuses_lies_with_a_valid_checksum(void)
{
    const size_t t0 = 160 + 40 * 3;   /* first tensor record */
    const struct lie lies[] = {
        {8, 4, 2, SGBD_E_VERSION},             /* newer format */
        {8, 4, 0, SGBD_E_CORRUPT},             /* format 0 */
        {152, 4, 65, SGBD_E_CORRUPT},          /* 65 tensors */
        {152, 4, 1, SGBD_E_CORRUPT},           /* counts vs length */
        {108, 4, 100, SGBD_E_CORRUPT},         /* chunk size */
        {136, 4, 2, SGBD_E_CORRUPT},           /* chunk count */
        {128, 8, 1ull << 40, SGBD_E_CORRUPT},  /* arena too big */
        {128, 8, 16, SGBD_E_CORRUPT},          /* arena vs payload */
        {t0 + 32, 8, 3, SGBD_E_CORRUPT},       /* misaligned offset */
        {t0 + 40, 8, 1ull << 62, SGBD_E_CORRUPT}, /* rows overflow */
        {t0 + 80 + 32, 8, 0, SGBD_E_CORRUPT},  /* overlap */
        {t0 + 56, 4, 9, SGBD_E_CORRUPT},       /* initialiser */
        {t0 + 0, 1, 0, SGBD_E_CORRUPT},        /* empty name */
        {t0 + 31, 1, 'x', SGBD_E_CORRUPT},     /* bytes after the name */
        {24, 1, ' ', SGBD_E_CORRUPT},          /* model with a space */
        {160 + 31, 1, 'x', SGBD_E_CORRUPT},    /* bytes after a key */
    };
    struct sample x;
    unsigned char *bad;

    CHECK_INT(make_sample(&x), 0);
    bad = malloc(x.len);
    CHECK(bad);
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        int rc = tell(&x, bad, &lies[i]);

        if (rc != lies[i].rc)
            fprintf(stderr, "  lie %zu: rc %d (%s)\n", i, rc,
                    sgbd_err_detail(rc));
        CHECK_INT(rc, lies[i].rc);
    }
    free(bad);
    free_sample(&x);
}

static void test_checkpoint_decode_survives_random_bytes(void)
{
    struct sgbd_rng rng;
    struct sample x;
    unsigned char *bad;
    float *back;

    CHECK_INT(make_sample(&x), 0);
    bad = malloc(x.len);
    CHECK(bad);
    sgbd_rng_init(&rng, 3, 3);
    for (int it = 0; it < 3000; it++) {
        memcpy(bad, x.buf, x.len);
        for (int k = 0; k < 4; k++)
            bad[sgbd_rng_u64(&rng) % x.hlen] =
                (unsigned char)sgbd_rng_u64(&rng);
        if (it % 2)
            reseal(bad, x.hlen);
        back = NULL;
        if (sgbd_checkpoint_decode(bad, x.len, NULL, NULL, &back) == 0)
            sgbd_params_free_arena(back);
    }
    free(bad);
    free_sample(&x);
}

static void test_checkpoint_cli_lists_deletes_and_rolls_back(void)
{
    char path[256];
    struct sgbd_params l;
    uint64_t cur;
    struct sgbd_store *s = open_at(fresh(path, sizeof(path)), 0, 0);
    char *list[] = {"checkpoints", "--db", path, "--json", NULL};
    char *rollback[] = {"checkpoints", "rollback", "--db", path, "1", NULL};
    char *del[] = {"checkpoints", "delete", "--db", path, "--keep", "1",
                   NULL};
    char *bad[] = {"checkpoints", "frobnicate", "--db", path, NULL};
    char *nover[] = {"checkpoints", "rollback", "--db", path, NULL};

    CHECK(s);
    make_layout(&l, 100);
    CHECK_INT(save_n(s, &l, 3), 0);
    sgbd_store_close(s);
    CHECK_INT(sgbd_cli_checkpoints(4, list), 0);
    CHECK_INT(sgbd_cli_checkpoints(5, rollback), 0);
    CHECK_INT(sgbd_cli_checkpoints(6, del), 0);   /* 2 goes; 1 cur, 3 prev */
    CHECK_INT(sgbd_cli_checkpoints(4, bad), SGBD_E_USAGE);
    CHECK_INT(sgbd_cli_checkpoints(4, nover), SGBD_E_USAGE);
    fflush(stdout);
    s = open_at(path, 0, 0);
    CHECK(s);
    CHECK_INT(sgbd_store_ckpt_pointers(s, &cur, NULL), 0);
    CHECK_INT(cur, 1);
    CHECK_INT(sgbd_checkpoint_verify(s, 2, NULL), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_checkpoint_verify(s, 3, NULL), 0);
    sgbd_store_close(s);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    sgbd_log_level = SGBD_LOG_WARNING;
    RUN(test_checkpoint_crc32c_matches_the_definition);
    RUN(test_checkpoint_round_trip_keeps_every_byte);
    RUN(test_checkpoint_save_moves_current_to_previous);
    RUN(test_checkpoint_damaged_chunk_falls_back_to_previous);
    RUN(test_checkpoint_damage_in_the_file_is_detected);
    RUN(test_checkpoint_damaged_header_or_missing_chunk);
    RUN(test_checkpoint_prune_keeps_current_and_previous);
    RUN(test_checkpoint_save_refuses_bad_input);
    RUN(test_checkpoint_full_map_keeps_current);
    RUN(test_checkpoint_orphans_of_a_crashed_save_are_removed);
    RUN(test_checkpoint_encode_decode_round_trip);
    RUN(test_checkpoint_decode_refuses_truncation_and_flips);
    RUN(test_checkpoint_decode_refuses_lies_with_a_valid_checksum);
    RUN(test_checkpoint_decode_survives_random_bytes);
    RUN(test_checkpoint_cli_lists_deletes_and_rolls_back);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return harness_finish();
}
