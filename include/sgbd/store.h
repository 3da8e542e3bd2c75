/*
 * store.h - the durable state of SGBD: an LMDB environment with the item
 * catalogue, users, the interaction log and checkpoint chunks.
 *
 * This module is the only one that sees LMDB (DESIGN.md section 8;
 * reference/serving.md section 5). Every function below opens and ends its
 * own transaction, so no caller ever holds one for long; a retrainer that
 * needs one consistent view of the whole store takes an explicit read
 * snapshot (sgbd_store_read_begin) for the duration of one copy.
 *
 * Named databases of the environment (keys big-endian where they are
 * numbers, so they sort naturally; values little-endian):
 *
 *   items       external item id -> {index u32, hidden, updated-at ms,
 *               channel mask, attributes (opaque JSON bytes)}
 *   item_ids    index BE32 -> external item id        (reverse map)
 *   features    (channel id BE16, item index BE32) -> float32[width]
 *   channels    channel name -> {channel id u16, width u32}
 *   users       external user id -> index u32
 *   user_ids    index BE32 -> external user id        (reverse map)
 *   inter       sequence BE64 -> {user u32, item u32, timestamp i64,
 *               weight f32, kind u8, label u8}        (append-only log)
 *   inter_keys  (user BE32, item BE32, timestamp BE64, kind u8) -> seq:
 *               an event already in the log is not appended again, which
 *               makes re-imports and client retries idempotent
 *   ckpts       checkpoint version BE64 -> encoded header (checkpoint.h)
 *   chunks      (version BE64, chunk BE32) -> {crc32c u32, payload bytes}
 *   meta        "schema", "current", "previous", "next_version"
 *
 * Dense indices are assigned in order of first sight (0, 1, 2, ...) and
 * never reused: items are hidden, never deleted, so an index is stable for
 * the life of the store and can index model rows directly.
 *
 * Durability: every write function returns only after its transaction is
 * committed with LMDB's default synchronous flags, so an acknowledged write
 * survives a crash of the process (and, the disk permitting, of the
 * machine). A failed call changes nothing.
 *
 * Map size: the environment starts at opts.map_size bytes and doubles on
 * MDB_MAP_FULL (abort, grow, retry) up to opts.map_max; past it writes fail
 * with SGBD_E_MAPFULL and change nothing. Growing waits until no
 * transaction of this process is active: read snapshots must stay short,
 * and a thread holding one must not write (it gets SGBD_E_BUSY if its
 * write needed to grow the map).
 *
 * Threads: a struct sgbd_store may be used from many threads at once
 * (MDB_NOTLS); LMDB serialises write transactions. One process must open
 * a given store once (LMDB caveat); several processes may open it together.
 * Do not use a store across fork(): open it again in the child.
 */
#ifndef SGBD_STORE_H
#define SGBD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"

#define SGBD_STORE_SCHEMA 1          /* meta "schema" of this code */
#define SGBD_STORE_ID_MAX 256        /* bytes of an external id */
#define SGBD_STORE_ATTRS_MAX 65536   /* bytes of an item's attributes */
#define SGBD_STORE_BATCH_MAX 100000  /* records in one batch call */

/* Split labels of interactions, as MMRec's x_label column. Interactions
 * posted live are SGBD_LABEL_TRAIN; a retrain holds out its own
 * validation set from them (retrain.h), the store does not relabel. */
enum sgbd_label {
    SGBD_LABEL_TRAIN = 0,
    SGBD_LABEL_VALID = 1,
    SGBD_LABEL_TEST = 2,
};

struct sgbd_store;

struct sgbd_store_opts {
    size_t map_size;      /* initial map size in bytes (default 1 GiB) */
    size_t map_max;       /* growth stops here (default 256 GiB); a value
                             <= map_size disables growth */
    unsigned max_readers; /* LMDB reader slots (default 126) */
    int read_only;        /* open without writing anything (check) */
};

/* Fill o with the defaults above. */
void sgbd_store_opts_defaults(struct sgbd_store_opts *o);

/*
 * Open (creating when absent and not read-only) the store at path: a
 * directory holding data.mdb and lock.mdb, or an existing single file such
 * as a backup made by sgbd_store_backup(). o may be NULL for defaults.
 * At open, reader slots left by dead processes are cleared, a new store
 * gets the schema version, and chunks of checkpoints whose save never
 * finished are removed (not read-only).
 *
 * Errors: -errno (path cannot be created or opened), SGBD_E_VERSION (the
 * store's schema or LMDB format is not this code's), SGBD_E_FORMAT (a
 * read-only open of something that is not an SGBD store), SGBD_E_STORE.
 * *out is set only on success; free with sgbd_store_close().
 */
int sgbd_store_open(struct sgbd_store **out, const char *path,
                    const struct sgbd_store_opts *o);

/* Close the environment. No transaction or snapshot may be active. NULL
 * is accepted. */
void sgbd_store_close(struct sgbd_store *s);

/* The path given to sgbd_store_open(); valid until close. */
const char *sgbd_store_path(const struct sgbd_store *s);

/* Current map size in bytes. */
size_t sgbd_store_map_size(struct sgbd_store *s);

/*
 * Check an external id: 1..SGBD_STORE_ID_MAX bytes, valid UTF-8 (no
 * overlong forms, surrogates or code points past U+10FFFF), no control
 * characters (U+0000-U+001F, U+007F-U+009F). Returns 0 or SGBD_E_FORMAT
 * with a detail naming what (e.g. "item id") and the problem.
 */
int sgbd_store_id_check(const char *id, const char *what);

/* ---- Feature channels ------------------------------------------------ */

struct sgbd_store_channel {
    char name[SGBD_CHANNEL_NAME];
    uint32_t width;                 /* D_c floats per item */
    uint16_t id;                    /* key prefix in "features" */
};

/*
 * Define channel name (1..31 bytes of [A-Za-z0-9_.-]) with width floats
 * per item. Defining an existing channel with the same width does nothing.
 * Errors: SGBD_E_FORMAT (bad name, width 0 or > 1<<20), SGBD_E_SHAPE (it
 * exists with another width), SGBD_E_LIMIT (SGBD_MAX_CHANNELS defined),
 * SGBD_E_MAPFULL, SGBD_E_STORE.
 */
int sgbd_store_channel_define(struct sgbd_store *s, const char *name,
                              uint32_t width);

/* The defined channels in id order (at most SGBD_MAX_CHANNELS) into
 * out[], their number into *n. */
int sgbd_store_channels(struct sgbd_store *s,
                        struct sgbd_store_channel out[SGBD_MAX_CHANNELS],
                        int *n);

/* ---- Items ----------------------------------------------------------- */

/* One feature vector of an item upsert; the caller owns v. */
struct sgbd_store_feature {
    const char *channel;
    const float *v;                 /* (dim) */
    uint32_t dim;                   /* must equal the channel's width */
};

/* One item of an upsert batch; the caller owns every pointer. */
struct sgbd_store_item {
    const char *id;
    int n_features;
    const struct sgbd_store_feature *features;  /* (n_features) */
    const void *attrs;      /* validated JSON bytes; NULL keeps the stored
                               attributes, attrs_len 0 clears them */
    size_t attrs_len;
};

/*
 * Insert or update n items in one transaction. A new item gets the next
 * dense index, in batch order. Channels given replace the stored vector of
 * that channel; channels not given keep theirs. An upsert makes a hidden
 * item visible again. An item whose record, features and visibility would
 * not change is not rewritten (its updated-at stays), so re-imports are
 * idempotent. out_index (n entries, may be NULL) receives each index.
 *
 * Everything is checked before anything is written; on any error nothing
 * changes. Errors: SGBD_E_FORMAT (bad id, bad channel name, non-finite
 * feature value, attributes over SGBD_STORE_ATTRS_MAX), SGBD_E_EXISTS (the
 * same id twice in the batch, or a channel twice in one item),
 * SGBD_E_NOTFOUND (undefined channel), SGBD_E_SHAPE (a vector's dim is not
 * the channel width), SGBD_E_LIMIT (n over SGBD_STORE_BATCH_MAX),
 * SGBD_E_MAPFULL, SGBD_E_STORE.
 */
int sgbd_store_items_upsert(struct sgbd_store *s,
                            const struct sgbd_store_item *items, size_t n,
                            uint32_t *out_index);

/* Set or clear the hidden flag of item id. A hidden item keeps its index
 * and data; serving stops recommending it. Errors: SGBD_E_FORMAT,
 * SGBD_E_NOTFOUND, SGBD_E_MAPFULL, SGBD_E_STORE. */
int sgbd_store_item_hide(struct sgbd_store *s, const char *id, int hidden);

/* An item as stored; every pointer is owned by the record. */
struct sgbd_store_item_rec {
    uint32_t index;
    int hidden;
    uint64_t updated_at_ms;         /* unix time of the last change */
    int n_features;
    struct {
        char channel[SGBD_CHANNEL_NAME];
        uint32_t dim;
        float *v;                   /* (dim) */
    } f[SGBD_MAX_CHANNELS];
    void *attrs;                    /* NULL when none */
    size_t attrs_len;
};

/* Read item id into *rec (zeroed first; free with _item_rec_free).
 * Errors: SGBD_E_FORMAT, SGBD_E_NOTFOUND, SGBD_E_CORRUPT, -ENOMEM. */
int sgbd_store_item_get(struct sgbd_store *s, const char *id,
                        struct sgbd_store_item_rec *rec);
void sgbd_store_item_rec_free(struct sgbd_store_item_rec *rec);

/* Index of item id or user id. Errors: SGBD_E_FORMAT, SGBD_E_NOTFOUND. */
int sgbd_store_item_index(struct sgbd_store *s, const char *id,
                          uint32_t *index);
int sgbd_store_user_index(struct sgbd_store *s, const char *id,
                          uint32_t *index);

/* External id of item or user index into buf (size n, NUL-terminated;
 * SGBD_STORE_ID_MAX + 1 always fits). Errors: SGBD_E_NOTFOUND,
 * SGBD_E_LIMIT (buf too small). */
int sgbd_store_item_id(struct sgbd_store *s, uint32_t index, char *buf,
                       size_t n);
int sgbd_store_user_id(struct sgbd_store *s, uint32_t index, char *buf,
                       size_t n);

/* ---- Users and interactions ------------------------------------------ */

/*
 * Create the users of ids[] that do not exist yet, in order (import uses
 * it so that user "k" of an MMRec file gets index k in an empty store).
 * Same validation and failure rules as the item upsert; out_index (n, may
 * be NULL) receives each user's index.
 */
int sgbd_store_users_ensure(struct sgbd_store *s, const char *const *ids,
                            size_t n, uint32_t *out_index);

/* One event to append; the caller owns the strings. */
struct sgbd_store_event {
    const char *user_id;            /* created on first sight */
    const char *item_id;            /* must exist */
    int64_t timestamp;              /* seconds, or MMRec's order index */
    float weight;                   /* 1 for implicit feedback */
    uint8_t kind;                   /* application-defined, 0 = default */
    uint8_t label;                  /* enum sgbd_label */
};

/* One event of the log, with dense indices. */
struct sgbd_store_interaction {
    uint64_t seq;                   /* 1, 2, 3, ... in append order */
    uint32_t user, item;
    int64_t timestamp;
    float weight;
    uint8_t kind, label;
};

/*
 * Append n events in one transaction. Unknown users are created (next
 * index, in batch order); every item must exist. An event equal in (user,
 * item, timestamp, kind) to one already logged, or earlier in the same
 * batch, is not appended again: its existing sequence number is reported.
 * seqs (n entries, may be NULL) receives each event's sequence number;
 * *n_new (may be NULL) how many were appended.
 *
 * On any error nothing changes. Errors: SGBD_E_FORMAT (bad id, label > 2,
 * non-finite weight), SGBD_E_NOTFOUND (unknown item; the detail names the
 * event and the id), SGBD_E_LIMIT, SGBD_E_MAPFULL, SGBD_E_STORE.
 */
int sgbd_store_interactions_append(struct sgbd_store *s,
                                   const struct sgbd_store_event *ev,
                                   size_t n, uint64_t *seqs, size_t *n_new);

/*
 * Copy up to max events with seq > after into out[], in sequence order;
 * *n receives how many. Read in one short transaction; page with
 * after = out[*n - 1].seq.
 */
int sgbd_store_interactions_since(struct sgbd_store *s, uint64_t after,
                                  struct sgbd_store_interaction *out,
                                  size_t max, size_t *n);

struct sgbd_store_counts {
    uint64_t items, users, interactions, channels, checkpoints;
    uint64_t last_seq;              /* 0 when the log is empty */
};

/* Sizes of the store, read in one transaction. */
int sgbd_store_counts(struct sgbd_store *s, struct sgbd_store_counts *c);

/* ---- Read snapshots -------------------------------------------------- */

/*
 * A consistent read-only view of the whole store, for copying it out
 * (retrain, serving snapshot build, check). It pins LMDB pages and the map
 * size: keep it for one copy, then end it. Not for use by two threads at
 * once. Errors of _begin: SGBD_E_STORE, -ENOMEM.
 */
struct sgbd_store_read;

int sgbd_store_read_begin(struct sgbd_store *s, struct sgbd_store_read **out);
void sgbd_store_read_end(struct sgbd_store_read *r);   /* NULL accepted */

int sgbd_store_read_counts(struct sgbd_store_read *r,
                           struct sgbd_store_counts *c);

/* Callbacks return 0 to go on; any other value stops the walk and is
 * returned by it. Pointers passed to a callback are valid only during the
 * call. */
typedef int (*sgbd_store_inter_fn)(void *ctx,
                                   const struct sgbd_store_interaction *ev);
typedef int (*sgbd_store_id_fn)(void *ctx, uint32_t index, const char *id,
                                size_t id_len);

/* Every event with seq > after, in sequence order. */
int sgbd_store_read_interactions(struct sgbd_store_read *r, uint64_t after,
                                 sgbd_store_inter_fn fn, void *ctx);

/* Every item, or user, in index order 0, 1, 2, ... */
int sgbd_store_read_item_ids(struct sgbd_store_read *r, sgbd_store_id_fn fn,
                             void *ctx);
int sgbd_store_read_user_ids(struct sgbd_store_read *r, sgbd_store_id_fn fn,
                             void *ctx);

/* hidden[i] = 1 for each hidden item i < n_items (caller's array, n_items
 * entries, zeroed first). */
int sgbd_store_read_hidden(struct sgbd_store_read *r, uint8_t *hidden,
                           size_t n_items);

/*
 * Copy channel name into out, an (n_items, width) row-major matrix the
 * caller owns: row i gets item i's vector, or zeros when item i has none;
 * present (n_items, may be NULL) gets 1 where a vector was stored.
 * Errors: SGBD_E_NOTFOUND (no such channel), SGBD_E_SHAPE (width is not
 * the channel's), SGBD_E_CORRUPT.
 */
int sgbd_store_read_channel(struct sgbd_store_read *r, const char *name,
                            float *out, size_t n_items, uint32_t width,
                            uint8_t *present);

/* ---- From the store to the offline engine ---------------------------- */

/*
 * Build the training dataset and the feature channels from one snapshot:
 * users and items are the store's dense indices (U = users, I = items in
 * the store, including items nobody interacted with), train/valid/test
 * come from each event's stored label (imports keep MMRec's x_label; live
 * events are train), and each defined channel becomes an (I, D_c) matrix
 * with zero rows for items without a vector. feat may be NULL. On success
 * the caller frees with sgbd_dataset_free() / sgbd_features_free().
 * *last_seq (may be NULL) receives the newest sequence number included,
 * for the checkpoint's data_seq.
 * Errors: SGBD_E_NOTFOUND (no interactions), -ENOMEM, store errors.
 */
int sgbd_store_load_dataset(struct sgbd_store *s, struct sgbd_dataset *ds,
                            struct sgbd_features *feat, uint64_t *last_seq);

/* ---- Maintenance ----------------------------------------------------- */

/*
 * Write a compacted copy of the environment to the single file out_path
 * (through out_path.tmp, fsync, rename), while other threads and
 * processes keep using the store. Open the copy with sgbd_store_open() on
 * the file, or restore it as DIR/data.mdb. Errors: -errno, SGBD_E_EXISTS
 * (out_path exists), SGBD_E_STORE.
 */
int sgbd_store_backup(struct sgbd_store *s, const char *out_path);

/* One problem found by a check; the line names the record and the
 * problem. */
typedef void (*sgbd_store_report_fn)(void *ctx, const char *line);

/*
 * Verify, in one snapshot and without writing: every item and user id
 * maps to an index that maps back to it and indices are 0..n-1; every
 * feature vector belongs to an existing item and a defined channel and
 * has its width; every event refers to existing users and items and is in
 * the dedup index. Each problem is reported through fn; *problems gets the
 * count. Returns 0 when the walk finished (problems or not) or a store
 * error.
 */
int sgbd_store_check(struct sgbd_store *s, sgbd_store_report_fn fn,
                     void *ctx, size_t *problems);

/* ---- Checkpoint chunks (used by checkpoint.c; see checkpoint.h) ------ */

/* One chunk of a checkpoint payload. */
struct sgbd_store_chunk {
    uint32_t crc;                   /* checksum the caller computed */
    const void *data;
    size_t len;                     /* <= 1 << 30 */
};

/* Take the next checkpoint version (1, 2, ...); never handed out twice,
 * even across crashes. */
int sgbd_store_ckpt_reserve(struct sgbd_store *s, uint64_t *version);

/* Write chunks first .. first + n - 1 of version in one transaction.
 * Errors: SGBD_E_MAPFULL, SGBD_E_STORE, SGBD_E_LIMIT. */
int sgbd_store_ckpt_put_chunks(struct sgbd_store *s, uint64_t version,
                               uint32_t first, uint32_t n,
                               const struct sgbd_store_chunk *chunks);

/*
 * The linearisation point of a save (serving.md 5.3): in one transaction,
 * check that chunks 0 .. n_chunks - 1 of version are all stored, store
 * the header, set meta previous = current and current = version.
 * Errors: SGBD_E_CORRUPT (chunks missing), SGBD_E_EXISTS (version already
 * published), SGBD_E_MAPFULL, SGBD_E_STORE.
 */
int sgbd_store_ckpt_publish(struct sgbd_store *s, uint64_t version,
                            const void *header, size_t header_len,
                            uint32_t n_chunks);

/* meta current and previous (0 when unset). */
int sgbd_store_ckpt_pointers(struct sgbd_store *s, uint64_t *current,
                             uint64_t *previous);

/* Set current = version (which must be published) and previous = the old
 * current, unless they are equal. Errors: SGBD_E_NOTFOUND. */
int sgbd_store_ckpt_set_current(struct sgbd_store *s, uint64_t version);

/* Copy of the stored header of version (malloc'd into *buf; the caller
 * frees). Errors: SGBD_E_NOTFOUND, -ENOMEM. */
int sgbd_store_ckpt_header(struct sgbd_store *s, uint64_t version,
                           void **buf, size_t *len);

/* Published versions in ascending order: up to max into out[], the total
 * into *n (which may exceed max). */
int sgbd_store_ckpt_versions(struct sgbd_store *s, uint64_t *out,
                             size_t max, size_t *n);

/* Callback for each stored chunk: data (len bytes) and the stored crc. */
typedef int (*sgbd_store_chunk_fn)(void *ctx, uint32_t chunk, uint32_t crc,
                                   const void *data, size_t len);

/* Call fn for every stored chunk of version in ascending order, in one
 * read transaction. A malformed stored value gives SGBD_E_CORRUPT. */
int sgbd_store_ckpt_read_chunks(struct sgbd_store *s, uint64_t version,
                                sgbd_store_chunk_fn fn, void *ctx);

/* Delete version: its header first (it disappears from lists at once),
 * then its chunks in bounded transactions. Refuses current and previous
 * (SGBD_E_BUSY). Errors: SGBD_E_NOTFOUND, SGBD_E_MAPFULL, SGBD_E_STORE. */
int sgbd_store_ckpt_delete(struct sgbd_store *s, uint64_t version);

/* Remove chunks of versions that were never published and are older than
 * the newest published one (crashed saves); *n_versions (may be NULL)
 * gets how many versions were removed. */
int sgbd_store_ckpt_gc(struct sgbd_store *s, size_t *n_versions);

#endif
