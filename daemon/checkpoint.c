/*
 * checkpoint.c - encode, checksum, save in chunks, verify and load model
 * checkpoints (checkpoint.h; serving.md 5.3). Storage goes through the
 * chunk primitives of store.h; LMDB is not seen here.
 */
#include "sgbd/checkpoint.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/err.h"
#include "sgbd/log.h"

/* ---- CRC32C ---------------------------------------------------------- */

/* Reflected Castagnoli polynomial 0x1EDC6F41. */
#define CRC32C_POLY 0x82f63b78u

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                              crc_table[0][crc_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

/* Slicing by 8: eight table lookups per 8 input bytes. */
static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                           (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][p[4]] ^ crc_table[2][p[5]] ^
            crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_x86(uint32_t c, const unsigned char *p, size_t n)
{
    uint64_t c64 = c;

    while (n >= 8) {
        uint64_t w;

        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t sgbd_crc32c(uint32_t crc, const void *buf, size_t n)
{
    uint32_t c = ~crc;

    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_hw)
        return ~crc_x86(c, buf, n);
#endif
    return ~crc_sw(c, buf, n);
}

/* ---- Header layout --------------------------------------------------- */

static const char ckpt_magic[8] = {'S', 'G', 'B', 'D', 'C', 'K', 'P', 'T'};

enum {
    H_MAGIC = 0, H_FORMAT = 8, H_LEN = 12, H_VERSION = 16, H_MODEL = 24,
    H_OPT = 56, H_STEP = 88, H_EPOCH = 96, H_USERS = 100, H_ITEMS = 104,
    H_CHUNK = 108, H_SEQ = 112, H_CREATED = 120, H_FLOATS = 128,
    H_NCHUNKS = 136, H_PCRC = 140, H_NHP = 144, H_NMET = 148, H_NT = 152,
    H_FIXED = 160,
    KV_BYTES = SGBD_CKPT_KEY + 8,
    T_NAME = 0, T_OFFSET = 32, T_ROWS = 40, T_COLS = 48, T_INIT = 56,
    T_FANIN = 64, T_FANOUT = 72, T_BYTES = 80,
};

#define ALIGN_FLOATS 16   /* params.h: tensors start on 64 bytes */
#define TXN_CHUNKS 64     /* chunks per write transaction: 64 MiB */

/* Decoded fixed fields that are not in info or layout. */
struct hdr_facts {
    uint32_t header_len;
    uint32_t chunk_bytes;
    uint32_t n_chunks;
    uint32_t payload_crc;
    uint64_t n_floats;
};

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
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_f64(unsigned char *p, double d)
{
    uint64_t v;

    memcpy(&v, &d, 8);
    put_u64(p, v);
}

static double get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;

    memcpy(&d, &v, 8);
    return d;
}

static size_t header_bytes(int n_hp, int n_met, int n_t)
{
    return H_FIXED + (size_t)KV_BYTES * (size_t)(n_hp + n_met) +
           (size_t)T_BYTES * (size_t)n_t + 4;
}

/* ---- Validation (shared by encode and decode) ------------------------ */

/* A name field of cap bytes: NUL-terminated, printable ASCII without
 * spaces or '=', at least min_len characters. */
static int check_name(const char *s, size_t cap, size_t min_len,
                      const char *what)
{
    size_t n = strnlen(s, cap);

    if (n == cap)
        return sgbd_errf(SGBD_E_FORMAT, "checkpoint: %s: not terminated",
                         what);
    if (n < min_len)
        return sgbd_errf(SGBD_E_FORMAT, "checkpoint: %s: empty", what);
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '=')
            return sgbd_errf(SGBD_E_FORMAT, "checkpoint: %s: byte %zu is "
                             "not printable ASCII", what, i);
    for (size_t i = n; i < cap; i++)
        if (s[i])
            return sgbd_errf(SGBD_E_FORMAT, "checkpoint: %s: bytes after "
                             "the end", what);
    return 0;
}

static int check_kvs(const struct sgbd_ckpt_kv *kv, int n, const char *what)
{
    char label[48];
    int rc = 0;

    if (n < 0 || n > SGBD_CKPT_KV_MAX)
        return sgbd_errf(SGBD_E_FORMAT, "checkpoint: %d %s, at most %d", n,
                         what, SGBD_CKPT_KV_MAX);
    for (int i = 0; i < n && rc == 0; i++) {
        snprintf(label, sizeof(label), "%s %d", what, i);
        rc = check_name(kv[i].key, SGBD_CKPT_KEY, 1, label);
    }
    return rc;
}

static int check_info(const struct sgbd_checkpoint_info *info)
{
    int rc = check_name(info->model, SGBD_CKPT_NAME, 1, "model");

    if (rc == 0)
        rc = check_name(info->optimizer, SGBD_CKPT_NAME, 0, "optimizer");
    if (rc == 0)
        rc = check_kvs(info->hparams, info->n_hparams, "hyper-parameters");
    if (rc == 0)
        rc = check_kvs(info->metrics, info->n_metrics, "metrics");
    return rc;
}

/* The layout invariants of params.c, checked on any layout: tensors in
 * ascending, non-overlapping, aligned ranges inside n floats. */
static int check_layout(const struct sgbd_params *l)
{
    uint64_t end = 0;
    int rc;

    if (l->n_tensors < 0 || l->n_tensors > SGBD_MAX_TENSORS)
        return sgbd_errf(SGBD_E_FORMAT, "checkpoint: %d tensors",
                         l->n_tensors);
    if ((uint64_t)l->n > SGBD_CKPT_MAX_FLOATS || l->n % ALIGN_FLOATS)
        return sgbd_errf(SGBD_E_FORMAT, "checkpoint: arena of %zu floats",
                         l->n);
    for (int i = 0; i < l->n_tensors; i++) {
        const struct sgbd_tensor *t = &l->t[i];

        rc = check_name(t->name, SGBD_TENSOR_NAME, 1, "tensor name");
        if (rc < 0)
            return rc;
        for (int j = 0; j < i; j++)
            if (strcmp(l->t[j].name, t->name) == 0)
                return sgbd_errf(SGBD_E_FORMAT, "checkpoint: tensor \"%s\" "
                                 "twice", t->name);
        if (t->rows == 0 || t->cols == 0 ||
            t->rows > SGBD_CKPT_MAX_FLOATS / t->cols ||
            t->offset % ALIGN_FLOATS || t->offset < end ||
            t->offset > l->n || t->rows * t->cols > l->n - t->offset ||
            (unsigned)t->init > SGBD_INIT_LINEAR)
            return sgbd_errf(SGBD_E_FORMAT, "checkpoint: tensor \"%s\": "
                             "shape (%zu, %zu) at %zu does not fit an arena "
                             "of %zu", t->name, t->rows, t->cols, t->offset,
                             l->n);
        end = t->offset + t->rows * t->cols;
    }
    return 0;
}

/* ---- Encoding -------------------------------------------------------- */

static unsigned char *put_kvs(unsigned char *p, const struct sgbd_ckpt_kv *kv,
                              int n)
{
    for (int i = 0; i < n; i++, p += KV_BYTES) {
        memset(p, 0, SGBD_CKPT_KEY);
        memcpy(p, kv[i].key, strlen(kv[i].key));
        put_f64(p + SGBD_CKPT_KEY, kv[i].value);
    }
    return p;
}

static unsigned char *put_tensors(unsigned char *p,
                                  const struct sgbd_params *l)
{
    for (int i = 0; i < l->n_tensors; i++, p += T_BYTES) {
        const struct sgbd_tensor *t = &l->t[i];

        memset(p, 0, T_BYTES);
        memcpy(p + T_NAME, t->name, strlen(t->name));
        put_u64(p + T_OFFSET, t->offset);
        put_u64(p + T_ROWS, t->rows);
        put_u64(p + T_COLS, t->cols);
        put_u32(p + T_INIT, (uint32_t)t->init);
        put_u64(p + T_FANIN, t->fan_in);
        put_u64(p + T_FANOUT, t->fan_out);
    }
    return p;
}

static uint32_t chunks_for(uint64_t bytes, uint32_t chunk)
{
    return (uint32_t)((bytes + chunk - 1) / chunk);
}

/* Write the header (header_bytes() long) into p; info and layout were
 * checked. */
static void encode_header(unsigned char *p,
                          const struct sgbd_checkpoint_info *info,
                          const struct sgbd_params *l, uint64_t version,
                          uint64_t created, uint32_t payload_crc)
{
    size_t len = header_bytes(info->n_hparams, info->n_metrics,
                              l->n_tensors);
    uint32_t chunk = (uint32_t)SGBD_CKPT_CHUNK_BYTES;
    unsigned char *q;

    memset(p, 0, H_FIXED);
    memcpy(p + H_MAGIC, ckpt_magic, 8);
    put_u32(p + H_FORMAT, SGBD_CKPT_FORMAT);
    put_u32(p + H_LEN, (uint32_t)len);
    put_u64(p + H_VERSION, version);
    memcpy(p + H_MODEL, info->model, strlen(info->model));
    memcpy(p + H_OPT, info->optimizer, strlen(info->optimizer));
    put_u64(p + H_STEP, info->step);
    put_u32(p + H_EPOCH, info->epoch);
    put_u32(p + H_USERS, info->n_users);
    put_u32(p + H_ITEMS, info->n_items);
    put_u32(p + H_CHUNK, chunk);
    put_u64(p + H_SEQ, info->data_seq);
    put_u64(p + H_CREATED, created);
    put_u64(p + H_FLOATS, l->n);
    put_u32(p + H_NCHUNKS, chunks_for((uint64_t)l->n * 4, chunk));
    put_u32(p + H_PCRC, payload_crc);
    put_u32(p + H_NHP, (uint32_t)info->n_hparams);
    put_u32(p + H_NMET, (uint32_t)info->n_metrics);
    put_u32(p + H_NT, (uint32_t)l->n_tensors);
    q = put_kvs(p + H_FIXED, info->hparams, info->n_hparams);
    q = put_kvs(q, info->metrics, info->n_metrics);
    q = put_tensors(q, l);
    put_u32(q, sgbd_crc32c(0, p, len - 4));
}

size_t sgbd_checkpoint_encoded_size(const struct sgbd_checkpoint_info *info,
                                    const struct sgbd_params *layout)
{
    if (check_info(info) < 0 || check_layout(layout) < 0)
        return 0;
    return header_bytes(info->n_hparams, info->n_metrics,
                        layout->n_tensors) + layout->n * sizeof(float);
}

int sgbd_checkpoint_encode(const struct sgbd_checkpoint_info *info,
                           const struct sgbd_params *layout,
                           const float *arena, void *buf, size_t cap,
                           size_t *len)
{
    size_t hlen, need;
    int rc = check_info(info);

    if (rc == 0)
        rc = check_layout(layout);
    if (rc < 0)
        return rc;
    hlen = header_bytes(info->n_hparams, info->n_metrics,
                        layout->n_tensors);
    need = hlen + layout->n * sizeof(float);
    if (cap < need)
        return sgbd_errf(SGBD_E_LIMIT, "checkpoint: needs %zu bytes, buffer "
                         "has %zu", need, cap);
    encode_header(buf, info, layout, info->version, info->created_at_ms,
                  sgbd_crc32c(0, arena, layout->n * sizeof(float)));
    memcpy((unsigned char *)buf + hlen, arena, layout->n * sizeof(float));
    *len = need;
    return 0;
}

/* ---- Decoding -------------------------------------------------------- */

static int bad(const char *fmt, uint64_t a, uint64_t b)
{
    return sgbd_errf(SGBD_E_CORRUPT, fmt, (unsigned long long)a,
                     (unsigned long long)b);
}

/* The counts and length of the fixed part, before anything is trusted. */
static int decode_frame(const unsigned char *p, size_t len,
                        struct hdr_facts *f, int *n_hp, int *n_met,
                        int *n_t)
{
    uint32_t format;

    if (len < H_FIXED + 4)
        return bad("checkpoint: header truncated: %llu of at least %llu "
                   "bytes", len, H_FIXED + 4);
    if (memcmp(p + H_MAGIC, ckpt_magic, 8) != 0)
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint: bad magic");
    format = get_u32(p + H_FORMAT);
    if (format > SGBD_CKPT_FORMAT)
        return sgbd_errf(SGBD_E_VERSION, "checkpoint: format %u, this sgbd "
                         "reads up to %d", format, SGBD_CKPT_FORMAT);
    if (format == 0)
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint: format 0");
    if (get_u32(p + H_NHP) > SGBD_CKPT_KV_MAX ||
        get_u32(p + H_NMET) > SGBD_CKPT_KV_MAX ||
        get_u32(p + H_NT) > SGBD_MAX_TENSORS)
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint: too many entries");
    *n_hp = (int)get_u32(p + H_NHP);
    *n_met = (int)get_u32(p + H_NMET);
    *n_t = (int)get_u32(p + H_NT);
    f->header_len = get_u32(p + H_LEN);
    if (f->header_len != header_bytes(*n_hp, *n_met, *n_t))
        return bad("checkpoint: header length %llu, its counts say %llu",
                   f->header_len, header_bytes(*n_hp, *n_met, *n_t));
    if (f->header_len > len)
        return bad("checkpoint: header truncated: %llu of %llu bytes", len,
                   f->header_len);
    if (get_u32(p + f->header_len - 4) !=
        sgbd_crc32c(0, p, f->header_len - 4))
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint: header checksum "
                         "mismatch");
    return 0;
}

/*
 * The detail of rc again with a prefix ("checkpoint 7: ...") under code
 * new_rc. The detail is copied first: sgbd_errf writes the buffer that
 * sgbd_err_detail returns.
 */
static int rewrap(int new_rc, int rc, const char *prefix, uint64_t version)
{
    const char *old = sgbd_err_detail(rc);
    char d[512];

    if (prefix[0] && strncmp(old, "checkpoint: ", 12) == 0)
        old += 12;
    snprintf(d, sizeof(d), "%s", old);
    if (!prefix[0])
        return sgbd_errf(new_rc, "%s", d);
    return sgbd_errf(new_rc, "%s %llu: %s", prefix,
                     (unsigned long long)version, d);
}

/* Chunking facts of the payload. */
static int decode_sizes(const unsigned char *p, struct hdr_facts *f)
{
    uint64_t bytes;

    f->chunk_bytes = get_u32(p + H_CHUNK);
    f->n_chunks = get_u32(p + H_NCHUNKS);
    f->payload_crc = get_u32(p + H_PCRC);
    f->n_floats = get_u64(p + H_FLOATS);
    if (f->n_floats > SGBD_CKPT_MAX_FLOATS)
        return bad("checkpoint: arena of %llu floats, at most %llu",
                   f->n_floats, SGBD_CKPT_MAX_FLOATS);
    if (f->chunk_bytes < 4096 || f->chunk_bytes > (1u << 30) ||
        f->chunk_bytes % 4)
        return sgbd_errf(SGBD_E_CORRUPT, "checkpoint: chunk size %u",
                         f->chunk_bytes);
    bytes = f->n_floats * 4;
    if (f->n_chunks != chunks_for(bytes, f->chunk_bytes))
        return bad("checkpoint: %llu chunks for %llu bytes", f->n_chunks,
                   bytes);
    return 0;
}

static int decode_kvs(const unsigned char *p, struct sgbd_ckpt_kv *kv, int n,
                      const char *what)
{
    for (int i = 0; i < n; i++, p += KV_BYTES) {
        memcpy(kv[i].key, p, SGBD_CKPT_KEY);
        kv[i].value = get_f64(p + SGBD_CKPT_KEY);
    }
    return check_kvs(kv, n, what);
}

static int decode_tensors(const unsigned char *p, struct sgbd_params *l,
                          int n, uint64_t n_floats)
{
    memset(l, 0, sizeof(*l));
    l->n_tensors = n;
    l->n = (size_t)n_floats;
    for (int i = 0; i < n; i++, p += T_BYTES) {
        struct sgbd_tensor *t = &l->t[i];
        uint32_t init = get_u32(p + T_INIT);

        memcpy(t->name, p + T_NAME, SGBD_TENSOR_NAME);
        t->offset = (size_t)get_u64(p + T_OFFSET);
        t->rows = (size_t)get_u64(p + T_ROWS);
        t->cols = (size_t)get_u64(p + T_COLS);
        t->init = init <= SGBD_INIT_LINEAR ? (enum sgbd_init)init :
                  SGBD_INIT_ZERO;
        t->fan_in = (size_t)get_u64(p + T_FANIN);
        t->fan_out = (size_t)get_u64(p + T_FANOUT);
        if (init > SGBD_INIT_LINEAR)
            return sgbd_errf(SGBD_E_CORRUPT, "checkpoint: tensor %d: "
                             "initialiser %u", i, init);
    }
    return check_layout(l);
}

static int decode_strings(const unsigned char *p,
                          struct sgbd_checkpoint_info *info)
{
    int rc;

    memcpy(info->model, p + H_MODEL, SGBD_CKPT_NAME);
    memcpy(info->optimizer, p + H_OPT, SGBD_CKPT_NAME);
    rc = check_name(info->model, SGBD_CKPT_NAME, 1, "model");
    if (rc == 0)
        rc = check_name(info->optimizer, SGBD_CKPT_NAME, 0, "optimizer");
    return rc;
}

/* Decode and check a header of len bytes (hostile). Validation failures
 * of the FORMAT kind become CORRUPT: stored bytes that do not parse are
 * damage. */
static int decode_header(const void *buf, size_t len,
                         struct sgbd_checkpoint_info *info,
                         struct sgbd_params *l, struct hdr_facts *f)
{
    const unsigned char *p = buf;
    int n_hp = 0, n_met = 0, n_t = 0;
    int rc = decode_frame(p, len, f, &n_hp, &n_met, &n_t);

    if (rc == 0)
        rc = decode_sizes(p, f);
    if (rc < 0)
        return rc;
    memset(info, 0, sizeof(*info));
    rc = decode_strings(p, info);
    info->version = get_u64(p + H_VERSION);
    info->step = get_u64(p + H_STEP);
    info->epoch = get_u32(p + H_EPOCH);
    info->n_users = get_u32(p + H_USERS);
    info->n_items = get_u32(p + H_ITEMS);
    info->data_seq = get_u64(p + H_SEQ);
    info->created_at_ms = get_u64(p + H_CREATED);
    info->payload_bytes = f->n_floats * 4;
    info->n_hparams = n_hp;
    info->n_metrics = n_met;
    p += H_FIXED;
    if (rc == 0)
        rc = decode_kvs(p, info->hparams, n_hp, "hyper-parameters");
    p += (size_t)KV_BYTES * (size_t)n_hp;
    if (rc == 0)
        rc = decode_kvs(p, info->metrics, n_met, "metrics");
    p += (size_t)KV_BYTES * (size_t)n_met;
    if (rc == 0)
        rc = decode_tensors(p, l, n_t, f->n_floats);
    return rc == SGBD_E_FORMAT ? rewrap(SGBD_E_CORRUPT, rc, "", 0) : rc;
}

/* An uninitialised 64-byte aligned arena of n floats (every byte is about
 * to be overwritten; untouched pages of a lying header cost nothing). */
static float *arena_alloc(uint64_t n)
{
    size_t bytes = (size_t)(n ? n : ALIGN_FLOATS) * sizeof(float);

    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

int sgbd_checkpoint_decode(const void *buf, size_t len,
                           struct sgbd_checkpoint_info *info,
                           struct sgbd_params *layout, float **arena)
{
    struct sgbd_checkpoint_info in;
    struct sgbd_params *l = malloc(sizeof(*l));
    struct hdr_facts f;
    const unsigned char *payload;
    int rc;

    if (!l)
        return sgbd_errf(-ENOMEM, "checkpoint: out of memory");
    rc = decode_header(buf, len, &in, l, &f);
    if (rc == 0 && len - f.header_len != f.n_floats * 4)
        rc = bad("checkpoint: payload of %llu bytes, header says %llu",
                 len - f.header_len, f.n_floats * 4);
    payload = rc == 0 ? (const unsigned char *)buf + f.header_len : NULL;
    if (rc == 0 && sgbd_crc32c(0, payload, f.n_floats * 4) != f.payload_crc)
        rc = sgbd_errf(SGBD_E_CORRUPT, "checkpoint: payload checksum "
                       "mismatch");
    if (rc == 0 && arena) {
        *arena = arena_alloc(f.n_floats);
        if (!*arena)
            rc = sgbd_errf(-ENOMEM, "checkpoint: out of memory");
        else
            memcpy(*arena, payload, f.n_floats * 4);
    }
    if (rc == 0 && info)
        *info = in;
    if (rc == 0 && layout)
        *layout = *l;
    free(l);
    return rc;
}

/* ---- Save ------------------------------------------------------------ */

static uint32_t chunk_crc(uint64_t version, uint32_t chunk, const void *data,
                          size_t len)
{
    unsigned char key[12];

    for (int i = 0; i < 8; i++)
        key[i] = (unsigned char)(version >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        key[8 + i] = (unsigned char)(chunk >> (24 - 8 * i));
    return sgbd_crc32c(sgbd_crc32c(0, key, sizeof(key)), data, len);
}

static int write_chunks(struct sgbd_store *s, uint64_t version,
                        const unsigned char *payload, uint64_t bytes)
{
    struct sgbd_store_chunk batch[TXN_CHUNKS];
    uint32_t n_chunks = chunks_for(bytes, (uint32_t)SGBD_CKPT_CHUNK_BYTES);
    int rc = 0;

    for (uint32_t first = 0; first < n_chunks && rc == 0;
         first += TXN_CHUNKS) {
        uint32_t n = n_chunks - first < TXN_CHUNKS ? n_chunks - first :
                     TXN_CHUNKS;

        for (uint32_t i = 0; i < n; i++) {
            uint64_t off = (uint64_t)(first + i) * SGBD_CKPT_CHUNK_BYTES;
            size_t len = bytes - off < SGBD_CKPT_CHUNK_BYTES ?
                         (size_t)(bytes - off) : SGBD_CKPT_CHUNK_BYTES;

            batch[i].data = payload + off;
            batch[i].len = len;
            batch[i].crc = chunk_crc(version, first + i, payload + off, len);
        }
        rc = sgbd_store_ckpt_put_chunks(s, version, first, n, batch);
    }
    return rc;
}

static int check_finite(const float *arena, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(arena[i]))
            return sgbd_errf(SGBD_E_DIVERGED, "checkpoint: arena value %zu "
                             "is not finite", i);
    return 0;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int sgbd_checkpoint_save(struct sgbd_store *s,
                         const struct sgbd_checkpoint_info *info,
                         const struct sgbd_params *layout,
                         const float *arena, uint64_t *out_version)
{
    double t0 = mono_ms();
    uint64_t bytes = (uint64_t)layout->n * 4, version = 0;
    unsigned char *hdr = NULL;
    size_t hlen;
    int rc = check_info(info);

    if (rc == 0)
        rc = check_layout(layout);
    if (rc == 0)
        rc = check_finite(arena, layout->n);
    if (rc < 0)
        return rc;
    hlen = header_bytes(info->n_hparams, info->n_metrics,
                        layout->n_tensors);
    hdr = malloc(hlen);
    if (!hdr)
        return sgbd_errf(-ENOMEM, "checkpoint: out of memory");

    rc = sgbd_store_ckpt_reserve(s, &version);
    if (rc == 0)
        rc = write_chunks(s, version, (const unsigned char *)arena, bytes);
    if (rc == 0) {
        encode_header(hdr, info, layout, version, info->created_at_ms ?
                      info->created_at_ms : wall_ms(),
                      sgbd_crc32c(0, arena, bytes));
        rc = sgbd_store_ckpt_publish(s, version, hdr, hlen,
                                     chunks_for(bytes,
                                                SGBD_CKPT_CHUNK_BYTES));
    }
    free(hdr);
    if (rc < 0)
        return rc;
    SGBD_INFO("checkpoint_saved", "version=%llu ms=%.0f bytes=%llu",
              (unsigned long long)version, mono_ms() - t0,
              (unsigned long long)bytes);
    if (out_version)
        *out_version = version;
    return 0;
}

/* ---- Load and verify ------------------------------------------------- */

struct load_ctx {
    uint64_t version;
    struct hdr_facts f;
    unsigned char *dst;       /* NULL: verify only */
    uint32_t next;            /* chunk expected next */
    uint32_t payload_crc;     /* running CRC of the payload so far */
};

static int load_chunk(void *arg, uint32_t chunk, uint32_t crc,
                      const void *data, size_t len)
{
    struct load_ctx *c = arg;
    uint64_t off = (uint64_t)chunk * c->f.chunk_bytes;
    uint64_t total = c->f.n_floats * 4;
    uint64_t want;

    if (chunk != c->next)
        return sgbd_errf(SGBD_E_CORRUPT, "chunk %u missing", c->next);
    if (chunk >= c->f.n_chunks)
        return sgbd_errf(SGBD_E_CORRUPT, "chunk %u beyond the %u of the "
                         "header", chunk, c->f.n_chunks);
    want = total - off < c->f.chunk_bytes ? total - off : c->f.chunk_bytes;
    if (len != want)
        return sgbd_errf(SGBD_E_CORRUPT, "chunk %u: %zu bytes, expected "
                         "%llu", chunk, len, (unsigned long long)want);
    if (chunk_crc(c->version, chunk, data, len) != crc)
        return sgbd_errf(SGBD_E_CORRUPT, "chunk %u: checksum mismatch",
                         chunk);
    c->payload_crc = sgbd_crc32c(c->payload_crc, data, len);
    if (c->dst)
        memcpy(c->dst + off, data, len);
    c->next++;
    return 0;
}

static int read_header(struct sgbd_store *s, uint64_t version,
                       struct sgbd_checkpoint_info *info,
                       struct sgbd_params *l, struct hdr_facts *f)
{
    void *buf;
    size_t len;
    int rc = sgbd_store_ckpt_header(s, version, &buf, &len);

    if (rc < 0)
        return rc;
    rc = decode_header(buf, len, info, l, f);
    free(buf);
    if (rc == 0 && f->header_len != len)
        rc = bad("header of %llu bytes, stored %llu", f->header_len, len);
    if (rc == 0 && info->version != version)
        rc = bad("header says version %llu, stored as %llu", info->version,
                 version);
    return rc;
}

static int read_payload(struct sgbd_store *s, struct load_ctx *c)
{
    int rc = sgbd_store_ckpt_read_chunks(s, c->version, load_chunk, c);

    if (rc == 0 && c->next != c->f.n_chunks)
        rc = sgbd_errf(SGBD_E_CORRUPT, "chunk %u missing", c->next);
    if (rc == 0 && c->payload_crc != c->f.payload_crc)
        rc = sgbd_errf(SGBD_E_CORRUPT, "payload checksum mismatch");
    return rc;
}

/* Load (want_arena) or verify one version, no fallback. */
static int load_one(struct sgbd_store *s, uint64_t version,
                    struct sgbd_checkpoint_info *info, struct sgbd_params *l,
                    float **arena)
{
    struct load_ctx c = {.version = version};
    int rc = read_header(s, version, info, l, &c.f);

    if (rc == 0 && arena) {
        c.dst = (unsigned char *)arena_alloc(c.f.n_floats);
        if (!c.dst)
            rc = sgbd_errf(-ENOMEM, "checkpoint %llu: out of memory for "
                           "%llu floats", (unsigned long long)version,
                           (unsigned long long)c.f.n_floats);
    }
    if (rc == 0)
        rc = read_payload(s, &c);
    if (rc == SGBD_E_CORRUPT || rc == SGBD_E_VERSION)
        rc = rewrap(rc, rc, "checkpoint", version);
    if (rc < 0) {
        free(c.dst);
        return rc;
    }
    if (arena)
        *arena = (float *)c.dst;
    return 0;
}

static int is_damage(int rc)
{
    return rc == SGBD_E_CORRUPT || rc == SGBD_E_VERSION ||
           rc == SGBD_E_NOTFOUND;
}

static void warn_corrupt(uint64_t version, int rc)
{
    char detail[256];

    SGBD_WARN("checkpoint_corrupt", "version=%llu detail=%s",
              (unsigned long long)version,
              sgbd_log_quote(sgbd_err_detail(rc), detail, sizeof(detail)));
}

int sgbd_checkpoint_load(struct sgbd_store *s, uint64_t version,
                         struct sgbd_checkpoint_info *info,
                         struct sgbd_params *layout, float **arena,
                         uint64_t *loaded_version)
{
    struct sgbd_checkpoint_info in;
    struct sgbd_params *l = malloc(sizeof(*l));
    uint64_t cur = version, prev = 0;
    int rc = l ? 0 : sgbd_errf(-ENOMEM, "checkpoint: out of memory");

    if (rc == 0 && version == 0)
        rc = sgbd_store_ckpt_pointers(s, &cur, &prev);
    if (rc == 0 && cur == 0)
        rc = sgbd_errf(SGBD_E_NOMODEL, "%s: no checkpoint saved yet",
                       sgbd_store_path(s));
    if (rc == 0)
        rc = load_one(s, cur, &in, l, arena);
    if (version == 0 && is_damage(rc)) {
        warn_corrupt(cur, rc);
        if (prev == 0)
            rc = sgbd_errf(SGBD_E_CORRUPT, "checkpoint %llu is damaged and "
                           "there is no previous one",
                           (unsigned long long)cur);
        else if ((rc = load_one(s, prev, &in, l, arena)) == 0)
            cur = prev;
        else if (is_damage(rc))
            rc = sgbd_errf(SGBD_E_CORRUPT, "checkpoints %llu and %llu are "
                           "both damaged", (unsigned long long)cur,
                           (unsigned long long)prev);
    }
    if (rc == 0 && info)
        *info = in;
    if (rc == 0 && layout)
        *layout = *l;
    if (rc == 0 && loaded_version)
        *loaded_version = cur;
    free(l);
    return rc;
}

int sgbd_checkpoint_verify(struct sgbd_store *s, uint64_t version,
                           struct sgbd_checkpoint_info *info)
{
    struct sgbd_checkpoint_info in;
    struct sgbd_params *l = malloc(sizeof(*l));
    int rc;

    if (!l)
        return sgbd_errf(-ENOMEM, "checkpoint: out of memory");
    rc = load_one(s, version, &in, l, NULL);
    if (rc == 0 && info)
        *info = in;
    free(l);
    return rc;
}

/* ---- List, delete, prune, rollback, check ---------------------------- */

static int versions(struct sgbd_store *s, uint64_t **out, size_t *n)
{
    size_t cap = 0;
    int rc;

    *out = NULL;
    for (;;) {
        rc = sgbd_store_ckpt_versions(s, *out, cap, n);
        if (rc < 0 || *n <= cap)
            return rc;
        free(*out);
        cap = *n + 16;   /* another process may publish in between */
        *out = malloc(cap * sizeof(**out));
        if (!*out)
            return sgbd_errf(-ENOMEM, "checkpoints: out of memory");
    }
}

static void list_entry(struct sgbd_store *s, uint64_t v, uint64_t cur,
                       uint64_t prev, struct sgbd_params *l,
                       struct sgbd_checkpoint_entry *e)
{
    struct hdr_facts f;

    memset(e, 0, sizeof(*e));
    e->header_ok = read_header(s, v, &e->info, l, &f) == 0;
    e->info.version = v;
    e->is_current = v == cur;
    e->is_previous = v == prev;
}

int sgbd_checkpoint_list(struct sgbd_store *s,
                         struct sgbd_checkpoint_entry **out, size_t *n)
{
    uint64_t *v = NULL, cur, prev;
    struct sgbd_params *l = malloc(sizeof(*l));
    struct sgbd_checkpoint_entry *e = NULL;
    size_t count = 0;
    int rc = l ? versions(s, &v, &count) :
             sgbd_errf(-ENOMEM, "checkpoints: out of memory");

    if (rc == 0)
        rc = sgbd_store_ckpt_pointers(s, &cur, &prev);
    if (rc == 0 && !(e = calloc(count ? count : 1, sizeof(*e))))
        rc = sgbd_errf(-ENOMEM, "checkpoints: out of memory");
    for (size_t i = 0; i < count && rc == 0; i++)
        list_entry(s, v[i], cur, prev, l, &e[i]);
    free(v);
    free(l);
    if (rc < 0) {
        free(e);
        return rc;
    }
    *out = e;
    *n = count;
    return 0;
}

int sgbd_checkpoint_delete(struct sgbd_store *s, uint64_t version)
{
    int rc = sgbd_store_ckpt_delete(s, version);

    if (rc == 0)
        SGBD_INFO("checkpoint_deleted", "version=%llu",
                  (unsigned long long)version);
    return rc;
}

int sgbd_checkpoint_prune(struct sgbd_store *s, int keep, size_t *n_deleted)
{
    uint64_t *v, cur, prev;
    size_t n, done = 0;
    int rc;

    if (keep < 1)
        return sgbd_errf(SGBD_E_USAGE, "checkpoints: keep %d, at least 1",
                         keep);
    rc = versions(s, &v, &n);
    if (rc == 0)
        rc = sgbd_store_ckpt_pointers(s, &cur, &prev);
    for (size_t i = 0; rc == 0 && i + (size_t)keep < n; i++) {
        if (v[i] == cur || v[i] == prev)
            continue;
        rc = sgbd_checkpoint_delete(s, v[i]);
        if (rc == SGBD_E_NOTFOUND || rc == SGBD_E_BUSY)
            rc = 0;   /* another process got there first, or rolled back */
        else if (rc == 0)
            done++;
    }
    free(v);
    if (n_deleted)
        *n_deleted = done;
    return rc;
}

int sgbd_checkpoint_rollback(struct sgbd_store *s, uint64_t version)
{
    int rc = sgbd_checkpoint_verify(s, version, NULL);

    if (rc == 0)
        rc = sgbd_store_ckpt_set_current(s, version);
    if (rc == 0)
        SGBD_INFO("checkpoint_rollback", "version=%llu",
                  (unsigned long long)version);
    return rc;
}

static void report(sgbd_store_report_fn fn, void *ctx, size_t *problems,
                   const char *line)
{
    (*problems)++;
    if (fn)
        fn(ctx, line);
}

static void check_pointer(struct sgbd_store *s, const char *name,
                          uint64_t v, sgbd_store_report_fn fn, void *ctx,
                          size_t *problems)
{
    char line[128];
    void *buf;
    size_t len;
    int rc;

    if (v == 0)
        return;
    rc = sgbd_store_ckpt_header(s, v, &buf, &len);
    if (rc == 0) {
        free(buf);
        return;
    }
    snprintf(line, sizeof(line), "meta %s: checkpoint %llu does not exist",
             name, (unsigned long long)v);
    report(fn, ctx, problems, line);
}

int sgbd_checkpoint_check(struct sgbd_store *s, sgbd_store_report_fn fn,
                          void *ctx, size_t *problems)
{
    uint64_t *v, cur, prev;
    size_t n;
    int rc = versions(s, &v, &n);

    *problems = 0;
    if (rc == 0)
        rc = sgbd_store_ckpt_pointers(s, &cur, &prev);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = sgbd_checkpoint_verify(s, v[i], NULL);
        if (rc == SGBD_E_NOTFOUND)
            rc = 0;   /* deleted since the listing: not damage */
        if (is_damage(rc)) {
            report(fn, ctx, problems, sgbd_err_detail(rc));
            rc = 0;
        }
    }
    free(v);
    if (rc == 0) {
        check_pointer(s, "current", cur, fn, ctx, problems);
        check_pointer(s, "previous", prev, fn, ctx, problems);
    }
    return rc;
}
