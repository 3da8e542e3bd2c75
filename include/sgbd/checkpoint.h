/*
 * checkpoint.h - model checkpoints: a parameter arena with its layout and
 * training facts, checksummed, stored in chunks (serving.md 5.3).
 *
 * Encoded form (all integers little-endian), used in the store and as a
 * contiguous byte string (replication, files, fuzzing):
 *
 *   header   magic "SGBDCKPT", format version, header length, version,
 *            model, optimizer, step, epoch, n_users, n_items, chunk size,
 *            data_seq, created-at, arena floats, chunk count, payload
 *            CRC32C, hyper-parameters and metrics (key, double) pairs,
 *            tensor layout (name, offset, rows, cols, init, fans), and a
 *            CRC32C of all the header bytes before it
 *   payload  the arena, layout.n float32 values
 *
 * In the store the header is one record and the payload is cut into
 * SGBD_CKPT_CHUNK_BYTES chunks, each with a CRC32C of (version, chunk
 * index, bytes) so that a chunk moved under another key is caught too.
 * Saving commits every chunk first and then, in one final small
 * transaction, the header and the meta pointers (current, and previous =
 * the old current): a crash at any moment leaves the old checkpoint
 * current, or the new one complete. Loading verifies every checksum.
 *
 * Every decoder here treats its bytes as hostile: each length, count and
 * offset is bounds-checked before use, and a failure is SGBD_E_CORRUPT
 * (or SGBD_E_VERSION for a newer format) with a detail naming the field.
 *
 * This module reaches LMDB only through store.h.
 */
#ifndef SGBD_CHECKPOINT_H
#define SGBD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/params.h"
#include "sgbd/store.h"

#define SGBD_CKPT_FORMAT 1
#define SGBD_CKPT_CHUNK_BYTES ((size_t)1 << 20)
#define SGBD_CKPT_KV_MAX 32      /* hyper-parameters, and metrics */
#define SGBD_CKPT_KEY 32         /* bytes of a key, NUL included */
#define SGBD_CKPT_NAME 32        /* bytes of model / optimizer names */
#define SGBD_CKPT_MAX_FLOATS ((uint64_t)1 << 34)  /* 64 GiB arenas */

struct sgbd_ckpt_kv {
    char key[SGBD_CKPT_KEY];     /* printable ASCII, no spaces or '=' */
    double value;
};

/* What a checkpoint says about itself, besides the arena. */
struct sgbd_checkpoint_info {
    char model[SGBD_CKPT_NAME];      /* "lightgcn", "dragon", ... */
    char optimizer[SGBD_CKPT_NAME];  /* "adam", "sgbd", ... (may be "") */
    uint64_t step;                   /* optimiser steps taken */
    uint32_t epoch;
    uint32_t n_users, n_items;       /* id-map prefix the arena covers:
                                        indices 0..n-1 of the store */
    uint64_t data_seq;               /* newest interaction trained on */
    uint64_t created_at_ms;          /* unix ms; 0 on save: now */
    int n_hparams;
    struct sgbd_ckpt_kv hparams[SGBD_CKPT_KV_MAX];
    int n_metrics;
    struct sgbd_ckpt_kv metrics[SGBD_CKPT_KV_MAX];  /* "recall@20", ... */

    /* Set by load, list and decode; ignored by save and encode. */
    uint64_t version;
    uint64_t payload_bytes;          /* arena bytes */
};

/*
 * Save arena (layout->n floats, all finite) with its layout and info as
 * the next version and make it current (previous = the old current).
 * *out_version (may be NULL) gets the version. Chunks go in transactions
 * of at most 64 MiB. Logs ev=checkpoint_saved version= ms= bytes=.
 * Errors: SGBD_E_FORMAT (bad info strings or counts, bad layout),
 * SGBD_E_DIVERGED (a NaN or Inf in the arena), SGBD_E_LIMIT (over
 * SGBD_CKPT_MAX_FLOATS), SGBD_E_MAPFULL, SGBD_E_STORE, -ENOMEM. On error
 * the current checkpoint is unchanged (orphan chunks are removed later).
 */
int sgbd_checkpoint_save(struct sgbd_store *s,
                         const struct sgbd_checkpoint_info *info,
                         const struct sgbd_params *layout,
                         const float *arena, uint64_t *out_version);

/*
 * Load version (0: the current one) into info, layout and a new arena
 * (*arena, layout->n floats, 64-byte aligned; free with
 * sgbd_params_free_arena()). Every chunk checksum, the payload checksum
 * and the header are verified. With version 0, a damaged current logs
 * ev=checkpoint_corrupt version=N and previous is loaded instead;
 * *loaded_version (may be NULL) says which. info and layout may be NULL.
 * Errors: SGBD_E_NOMODEL (no checkpoint yet), SGBD_E_NOTFOUND (no such
 * version), SGBD_E_CORRUPT (damaged, and no undamaged fallback),
 * SGBD_E_VERSION (a newer format), -ENOMEM, store errors.
 */
int sgbd_checkpoint_load(struct sgbd_store *s, uint64_t version,
                         struct sgbd_checkpoint_info *info,
                         struct sgbd_params *layout, float **arena,
                         uint64_t *loaded_version);

/* Verify version completely without keeping the arena; info (may be
 * NULL) gets its header. Errors as sgbd_checkpoint_load (no fallback). */
int sgbd_checkpoint_verify(struct sgbd_store *s, uint64_t version,
                           struct sgbd_checkpoint_info *info);

struct sgbd_checkpoint_entry {
    struct sgbd_checkpoint_info info;   /* from the header only */
    int header_ok;                      /* 0: the header itself is bad */
    int is_current, is_previous;
};

/* Every published checkpoint, ascending by version, from the headers
 * (chunks are not read): *out is malloc'd (free() it), *n entries. */
int sgbd_checkpoint_list(struct sgbd_store *s,
                         struct sgbd_checkpoint_entry **out, size_t *n);

/* Delete version. Refuses the current and previous ones (SGBD_E_BUSY).
 * Errors: SGBD_E_NOTFOUND, store errors. */
int sgbd_checkpoint_delete(struct sgbd_store *s, uint64_t version);

/* Delete all but the keep newest versions (keep >= 1), never current or
 * previous; *n_deleted (may be NULL) gets the count. */
int sgbd_checkpoint_prune(struct sgbd_store *s, int keep, size_t *n_deleted);

/* Make version current after verifying it completely (previous = the old
 * current). Errors: SGBD_E_NOTFOUND, SGBD_E_CORRUPT, store errors. */
int sgbd_checkpoint_rollback(struct sgbd_store *s, uint64_t version);

/* Verify every checkpoint and the current/previous pointers; report each
 * damaged one through fn ("checkpoint 3: chunk 2: checksum mismatch").
 * *problems gets the count. Returns 0 or a store error. */
int sgbd_checkpoint_check(struct sgbd_store *s, sgbd_store_report_fn fn,
                          void *ctx, size_t *problems);

/* Bytes of the contiguous encoding of (info, layout). Returns 0 when the
 * layout or info is not encodable (see _encode). */
size_t sgbd_checkpoint_encoded_size(const struct sgbd_checkpoint_info *info,
                                    const struct sgbd_params *layout);

/*
 * Encode header and arena contiguously into buf (cap bytes); *len gets
 * the bytes written. info->version is written as given. Errors:
 * SGBD_E_FORMAT (bad info or layout), SGBD_E_LIMIT (cap too small).
 */
int sgbd_checkpoint_encode(const struct sgbd_checkpoint_info *info,
                           const struct sgbd_params *layout,
                           const float *arena, void *buf, size_t cap,
                           size_t *len);

/*
 * Decode a contiguous checkpoint of len bytes from hostile input: header,
 * layout, checksums, and that len is exactly header + payload. info and
 * layout may be NULL; with arena NULL the payload is verified but not
 * copied, else *arena is a new arena as from _load. Errors:
 * SGBD_E_CORRUPT (the detail names the field), SGBD_E_VERSION, -ENOMEM.
 */
int sgbd_checkpoint_decode(const void *buf, size_t len,
                           struct sgbd_checkpoint_info *info,
                           struct sgbd_params *layout, float **arena);

/* CRC32C (Castagnoli), continuing from crc (0 to start): hardware
 * instructions where the CPU has them, else tables. */
uint32_t sgbd_crc32c(uint32_t crc, const void *buf, size_t n);

#endif
