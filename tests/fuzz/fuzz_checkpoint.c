/*
 * fuzz_checkpoint.c - the checkpoint decoder (checkpoint.h) on hostile
 * bytes, as they would come from a damaged store or a replication peer.
 *
 * Input: one mode byte, then the encoded checkpoint. With bit 0 of the
 * mode set, the harness first writes the right payload and header CRC32Cs
 * (where the length field allows), so the fuzzer gets past the checksums
 * into the header fields; with it clear the bytes are decoded as given.
 *
 * Invariants: an error is SGBD_E_CORRUPT, SGBD_E_VERSION or -ENOMEM with
 * a short one-line detail and leaves info, layout and arena untouched;
 * the outcome does not depend on which out-parameters are NULL; a decoded
 * checkpoint has len == header + payload, an arena equal to the payload
 * bytes, encodes to the same bytes (except the chunk-size fields and
 * reserved bytes, which the decoder does not pin down) and decodes again
 * to the same info, layout and arena.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sgbd/checkpoint.h"

/* Offsets of the encoded header (checkpoint.c). */
#define H_LEN 12
#define H_CHUNK 108
#define H_NCHUNKS 136
#define H_PCRC 140
#define H_NHP 144
#define H_NMET 148
#define H_NT 152
#define H_FIXED 160
#define KV_BYTES 40
#define T_BYTES 80
#define T_INIT 56

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Payload CRC, then the header CRC over it, where the length fits. */
static void fix_crcs(uint8_t *p, size_t len)
{
    uint32_t hlen;

    if (len < H_FIXED + 4)
        return;
    hlen = get_u32(p + H_LEN);
    if (hlen < H_FIXED + 4 || hlen > len)
        return;
    put_u32(p + H_PCRC, sgbd_crc32c(0, p + hlen, len - hlen));
    put_u32(p + hlen - 4, sgbd_crc32c(0, p, hlen - 4));
}

static int same_kvs(const struct sgbd_ckpt_kv *a, const struct sgbd_ckpt_kv *b,
                    int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(a[i].key, b[i].key) != 0 ||
            memcmp(&a[i].value, &b[i].value, sizeof(double)) != 0)
            return 0;
    return 1;
}

static int same_info(const struct sgbd_checkpoint_info *a,
                     const struct sgbd_checkpoint_info *b)
{
    return strcmp(a->model, b->model) == 0 &&
           strcmp(a->optimizer, b->optimizer) == 0 && a->step == b->step &&
           a->epoch == b->epoch && a->n_users == b->n_users &&
           a->n_items == b->n_items && a->data_seq == b->data_seq &&
           a->created_at_ms == b->created_at_ms &&
           a->version == b->version && a->payload_bytes == b->payload_bytes &&
           a->n_hparams == b->n_hparams && a->n_metrics == b->n_metrics &&
           same_kvs(a->hparams, b->hparams, a->n_hparams) &&
           same_kvs(a->metrics, b->metrics, a->n_metrics);
}

static int same_layout(const struct sgbd_params *a, const struct sgbd_params *b)
{
    if (a->n != b->n || a->n_tensors != b->n_tensors)
        return 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const struct sgbd_tensor *s = &a->t[i], *t = &b->t[i];
        if (strcmp(s->name, t->name) != 0 || s->offset != t->offset ||
            s->rows != t->rows || s->cols != t->cols || s->init != t->init ||
            s->fan_in != t->fan_in || s->fan_out != t->fan_out)
            return 0;
    }
    return 1;
}

/* Bytes the encoder writes but the decoder leaves free: the chunk size
 * and count, reserved padding, and the header CRC that covers them. */
static int free_byte(size_t i, const struct sgbd_checkpoint_info *info,
                     const struct sgbd_params *l, size_t hlen)
{
    size_t tensors = H_FIXED + (size_t)KV_BYTES *
                     (size_t)(info->n_hparams + info->n_metrics);

    if ((i >= H_CHUNK && i < H_CHUNK + 4) ||
        (i >= H_NCHUNKS && i < H_NCHUNKS + 4) ||
        (i >= H_NT + 4 && i < H_FIXED) || (i >= hlen - 4 && i < hlen))
        return 1;
    if (i >= tensors && i < tensors + (size_t)T_BYTES * l->n_tensors) {
        size_t k = (i - tensors) % T_BYTES;
        return k >= T_INIT + 4 && k < T_INIT + 8;
    }
    return 0;
}

/* encode(decode(x)) is x up to the free bytes; decode of it is the same. */
static void check_round_trip(const uint8_t *p, size_t len,
                             const struct sgbd_checkpoint_info *info,
                             const struct sgbd_params *l, const float *arena,
                             size_t hlen)
{
    struct sgbd_checkpoint_info info2;
    struct sgbd_params *l2 = malloc(sizeof(*l2));
    uint8_t *buf = malloc(len);
    float *arena2 = NULL;
    size_t len2 = 0;

    FUZZ_CHECK(l2 && buf);
    FUZZ_CHECK(sgbd_checkpoint_encoded_size(info, l) == len);
    FUZZ_CHECK(sgbd_checkpoint_encode(info, l, arena, buf, len, &len2) == 0);
    FUZZ_CHECK(len2 == len);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != p[i])
            FUZZ_CHECK(free_byte(i, info, l, hlen));
    FUZZ_CHECK(sgbd_checkpoint_decode(buf, len, &info2, l2, &arena2) == 0);
    FUZZ_CHECK(same_info(info, &info2) && same_layout(l, l2));
    FUZZ_CHECK(memcmp(arena, arena2, l->n * sizeof(float)) == 0);
    sgbd_params_free_arena(arena2);
    free(buf);
    free(l2);
}

static void check_decoded(const uint8_t *p, size_t len,
                          const struct sgbd_checkpoint_info *info,
                          const struct sgbd_params *l, const float *arena)
{
    size_t hlen = H_FIXED + (size_t)KV_BYTES *
                  (size_t)(info->n_hparams + info->n_metrics) +
                  (size_t)T_BYTES * (size_t)l->n_tensors + 4;

    FUZZ_CHECK(get_u32(p + H_LEN) == hlen);
    FUZZ_CHECK(get_u32(p + H_NHP) == (uint32_t)info->n_hparams &&
               get_u32(p + H_NMET) == (uint32_t)info->n_metrics &&
               get_u32(p + H_NT) == (uint32_t)l->n_tensors);
    FUZZ_CHECK(info->payload_bytes == (uint64_t)l->n * 4);
    FUZZ_CHECK(len == hlen + info->payload_bytes);
    FUZZ_CHECK(((uintptr_t)arena & 63) == 0);
    FUZZ_CHECK(memcmp(arena, p + hlen, l->n * sizeof(float)) == 0);
    for (int i = 0; i < l->n_tensors; i++)
        FUZZ_CHECK(l->t[i].rows * l->t[i].cols <= l->n - l->t[i].offset);
    check_round_trip(p, len, info, l, arena, hlen);
}

static void decode(const uint8_t *p, size_t len)
{
    struct sgbd_checkpoint_info info, info0;
    struct sgbd_params *l = malloc(sizeof(*l)), *l0 = malloc(sizeof(*l0));
    float *arena = (float *)&info0, *arena0 = arena;
    int rc, rc_null;

    FUZZ_CHECK(l && l0);
    memset(&info, 0xa5, sizeof(info));
    memset(l, 0xa5, sizeof(*l));
    info0 = info;
    *l0 = *l;
    rc = sgbd_checkpoint_decode(p, len, &info, l, &arena);
    rc_null = sgbd_checkpoint_decode(p, len, NULL, NULL, NULL);
    FUZZ_CHECK(rc == rc_null || rc == -ENOMEM || rc_null == -ENOMEM);
    if (rc != 0) {
        FUZZ_CHECK(rc == SGBD_E_CORRUPT || rc == SGBD_E_VERSION ||
                   rc == -ENOMEM);
        fuzz_check_detail(rc, "checkpoint");
        FUZZ_CHECK(arena == arena0);
        FUZZ_CHECK(memcmp(&info, &info0, sizeof(info)) == 0);
        FUZZ_CHECK(memcmp(l, l0, sizeof(*l)) == 0);
    } else {
        check_decoded(p, len, &info, l, arena);
        sgbd_params_free_arena(arena);
    }
    free(l0);
    free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;

    if (size < 1)
        return 0;
    copy = malloc(size - 1 ? size - 1 : 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data + 1, size - 1);
    if (data[0] & 1)
        fix_crcs(copy, size - 1);
    decode(copy, size - 1);
    free(copy);
    return 0;
}
