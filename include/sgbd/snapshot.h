/*
 * snapshot.h - what serving reads: an immutable trained model, and the
 * publication point that swaps it atomically under running requests.
 *
 * A struct sgbd_snapshot holds U, V, the model and its parameter arena
 * (for cold-start items), the id maps, per-user seen sets, the hidden
 * bitset, the popularity order, the version and the training metadata
 * (DESIGN.md section 5). It is built with sgbd_snapshot_new() and the
 * sgbd_snapshot_set_*() calls, frozen by sgbd_snapshot_finish(), and from
 * then on never changes: every field may be read without locks.
 *
 * A struct sgbd_snapshot_slot is the publication point. It holds the
 * current view: one snapshot plus one overlay (overlay.h, the effects of
 * writes that did not wait for a retrain). A request pins one view with
 * sgbd_snapshot_acquire() and releases it at the end, so everything it
 * reads belongs to one version. Readers never take a lock and never wait
 * for a publisher: acquire is three atomic operations (a guard counter
 * announces the few instructions between loading the pointer and taking a
 * reference; a publisher waits only for that window, not for requests).
 * A view, and its snapshot when no other view uses it, is freed by its
 * last reader; the big matrices are mmap'ed so memory returns to the
 * system at once [serving.md section 2.4].
 *
 * Ownership: a snapshot belongs to its builder until sgbd_snapshot_publish
 * takes it (on success and on failure alike). A pinned view borrows the
 * snapshot and overlay until sgbd_snapshot_release.
 *
 * Write sequence numbers: the slot numbers the durable writes of this
 * process. The write path commits to the store, then takes the next
 * number (sgbd_snapshot_slot_next_seq) for its overlay edits. A retrainer
 * reads sgbd_snapshot_slot_seq() BEFORE it begins its store read, and
 * stores that value as the new snapshot's absorbed_seq: every write
 * numbered at or below it was committed before the read began, so it is
 * in the training data; its overlay edits are dropped when the snapshot is
 * published. Writes numbered above it are re-applied on top of the new
 * snapshot (re-resolved and re-embedded with its model): nothing is lost,
 * and a write the read happened to see as well is only re-applied, which
 * is harmless. The numbers restart at 0 with the process; a snapshot
 * restored at start-up has absorbed_seq 0.
 */
#ifndef SGBD_SNAPSHOT_H
#define SGBD_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"
#include "sgbd/model.h"
#include "sgbd/topk.h"

#define SGBD_SNAPSHOT_MAX_METRICS 16
#define SGBD_METRIC_NAME 32

struct sgbd_idmap;
struct sgbd_overlay;
struct sgbd_snapshot_slot;

/* A feature channel the model's cold-start path reads. */
struct sgbd_snapshot_channel {
    char name[SGBD_CHANNEL_NAME];
    size_t width;                   /* D_c */
};

struct sgbd_snapshot_metric {
    char name[SGBD_METRIC_NAME];    /* "recall@20" */
    double value;
};

/* Training metadata, shown by GET /v1/model. */
struct sgbd_snapshot_meta {
    char model[32];                 /* "lightgcn" */
    char optimizer[16];             /* "sgbd" */
    int64_t trained_at;             /* unix seconds */
    int n_metrics;
    struct sgbd_snapshot_metric metrics[SGBD_SNAPSHOT_MAX_METRICS];
};

struct sgbd_snapshot {
    uint64_t version;               /* checkpoint version, >= 1 */
    uint64_t absorbed_seq;          /* writes numbered <= this trained in */
    uint32_t n_users, n_items;      /* U, I */
    size_t dim;                     /* D */

    /* Written by the builder between new() and finish(). */
    float *users;                   /* (U, D) row-major */
    float *items;                   /* (I, D) row-major */
    struct sgbd_snapshot_meta meta;

    /* Derived or copied by the set_*() calls and finish(). */
    float *items_unit;              /* (I, D) rows of items / ||row||_2 */
    struct sgbd_topk_screen items_screen; /* 8-bit or bfloat16 copies */
    struct sgbd_topk_screen unit_screen;  /* and of items_unit, for the
                                             screened top-k; empty where
                                             the CPU cannot use them */
    uint64_t *seen_ptr;             /* (U + 1) seen items of user u are */
    uint32_t *seen_items;           /* seen_items[seen_ptr[u] ..], sorted */
    uint64_t *hidden;               /* ((I + 63) / 64) bit i: item i hidden */
    uint32_t *popular;              /* (I) items, most interactions first */
    uint32_t *pop_count;            /* (I) interactions of item i */
    int n_channels;
    struct sgbd_snapshot_channel channels[SGBD_MAX_CHANNELS];
    struct sgbd_model *model;       /* cold start; NULL: none */
    float *theta;                   /* (model->layout.n) its arena, owned */
    double published_at;            /* unix seconds, set by publish */

    /* Private. */
    struct sgbd_idmap *user_map, *item_map;
    atomic_long refs;
    int frozen, counted;
    size_t counted_bytes;
};

/*
 * A new snapshot of U users, I items, width D: users and items are
 * zero-filled (U, D) and (I, D) matrices for the builder to fill, ids
 * default to "u<index>" / "i<index>" until set, seen sets are empty, no
 * item is hidden. version must be >= 1.
 * Errors: SGBD_E_SHAPE (D == 0, version 0), -ENOMEM.
 */
int sgbd_snapshot_new(struct sgbd_snapshot **out, uint64_t version,
                      uint32_t n_users, uint32_t n_items, size_t dim);

/*
 * Set the external ids: user_ids (U) and item_ids (I) NUL-terminated
 * strings, copied; either may be NULL to keep the defaults. Ids must be
 * non-empty and unique within their kind.
 * Errors: SGBD_E_EXISTS (duplicate, detail names it), SGBD_E_FORMAT (an
 * empty id), SGBD_E_BUSY (already finished), -ENOMEM. On error the
 * previous ids stay.
 */
int sgbd_snapshot_set_ids(struct sgbd_snapshot *s,
                          const char *const *user_ids,
                          const char *const *item_ids);

/*
 * Copy the per-user seen sets (training interactions; excluded from the
 * user's recommendations and counted for popularity): items of user u are
 * items[ptr[u] .. ptr[u + 1]), each < I; ptr is (U + 1). They need not be
 * sorted or unique: the copy is sorted and deduplicated.
 * Errors: SGBD_E_FORMAT (ptr not monotonic or an item >= I), SGBD_E_BUSY,
 * -ENOMEM.
 */
int sgbd_snapshot_set_seen(struct sgbd_snapshot *s, const uint64_t *ptr,
                           const uint32_t *items);

/* Hide item i (deleted in the store). SGBD_E_NOTFOUND when i >= I. */
int sgbd_snapshot_hide(struct sgbd_snapshot *s, uint32_t item);

/*
 * Give the snapshot its cold-start model: model (created for this
 * training run, ownership taken: freed with the snapshot by
 * model->ops->free) and theta (model->layout.n floats, copied). channels
 * (n) are the feature channels, in the order embed_new_item takes them.
 * model->dim must equal D.
 * Errors: SGBD_E_SHAPE (dim or n out of range), SGBD_E_BUSY, -ENOMEM; on
 * error the model is not taken.
 */
int sgbd_snapshot_set_model(struct sgbd_snapshot *s, struct sgbd_model *model,
                            const float *theta,
                            const struct sgbd_snapshot_channel *channels,
                            int n);

/*
 * Declare the feature channels without a model (a model whose vectors come
 * from elsewhere, or tests). Same checks as in set_model.
 */
int sgbd_snapshot_set_channels(struct sgbd_snapshot *s,
                               const struct sgbd_snapshot_channel *channels,
                               int n);

/*
 * Freeze: compute the unit item rows and the popularity order (counts
 * from the seen sets, ties by lower index), check that U and V are finite.
 * Errors: SGBD_E_DIVERGED (a NaN or Inf in U or V), SGBD_E_BUSY (twice).
 */
int sgbd_snapshot_finish(struct sgbd_snapshot *s);

/* Free an unpublished snapshot; NULL is fine. */
void sgbd_snapshot_free(struct sgbd_snapshot *s);

/*
 * Dense index of an external id (len bytes, need not be NUL-terminated).
 * Returns 0 and *idx, or SGBD_E_NOTFOUND. Lock-free on a frozen snapshot.
 */
int sgbd_snapshot_user_index(const struct sgbd_snapshot *s, const char *id,
                             size_t len, uint32_t *idx);
int sgbd_snapshot_item_index(const struct sgbd_snapshot *s, const char *id,
                             size_t len, uint32_t *idx);

/* External id of a dense index (< U or < I), NUL-terminated. */
const char *sgbd_snapshot_user_id(const struct sgbd_snapshot *s, uint32_t u);
const char *sgbd_snapshot_item_id(const struct sgbd_snapshot *s, uint32_t i);

/* Whether item i is hidden in the snapshot itself (overlay aside). */
static inline int sgbd_snapshot_hidden(const struct sgbd_snapshot *s,
                                       uint32_t i)
{
    return (int)((s->hidden[i >> 6] >> (i & 63)) & 1);
}

/*
 * Seeded 64-bit hash of an id (len bytes), shared by the id maps here and
 * in overlay.c. Not cryptographic; the seed keeps tables unpredictable.
 */
uint64_t sgbd_snapshot_hash_id(const char *id, size_t len, uint64_t seed);

/* Bytes the snapshot holds (matrices, maps, sets), for metrics. */
size_t sgbd_snapshot_bytes(const struct sgbd_snapshot *s);

/*
 * Snapshots allocated and not yet freed in this process, and their bytes
 * (published, pinned by a reader, or being built): normally 1, 2 during a
 * swap or while a slow request holds the old one.
 */
void sgbd_snapshot_live(long *count, long *bytes);

/* ---- publication ---- */

/* A pinned, consistent pair. snap is NULL while no model exists. */
struct sgbd_view {
    const struct sgbd_snapshot *snap;
    const struct sgbd_overlay *ov;
    uint64_t version;               /* snap->version, 0 without a model */
    void *pin;                      /* private */
};

/*
 * An empty slot: no snapshot, an empty overlay. Errors: -ENOMEM.
 * sgbd_snapshot_slot_free() needs every view released; NULL is fine.
 */
int sgbd_snapshot_slot_new(struct sgbd_snapshot_slot **out);
void sgbd_snapshot_slot_free(struct sgbd_snapshot_slot *slot);

/*
 * Pin the current view for one request. Never fails, never blocks: a
 * slot without a model gives a view whose snap is NULL. Release each pin
 * exactly once.
 */
void sgbd_snapshot_acquire(struct sgbd_snapshot_slot *slot,
                           struct sgbd_view *view);
void sgbd_snapshot_release(struct sgbd_view *view);

/*
 * Publish a finished snapshot: rebase the current overlay onto it (edits
 * with seq <= s->absorbed_seq dropped, the rest re-resolved and
 * re-embedded), then swap the view pointer once. Requests that pinned the
 * old view finish on it; its last reader frees it. Takes s in every case.
 * Errors: SGBD_E_BUSY (s not finished), SGBD_E_VERSION (s->version not
 * above the current one unless allow_older, for rollback), -ENOMEM.
 */
int sgbd_snapshot_publish(struct sgbd_snapshot_slot *slot,
                          struct sgbd_snapshot *s, int allow_older);

/*
 * Apply n write-path edits (overlay.h) at once: derive a new overlay from
 * the current one copy-on-write (cold-start vectors computed here with the
 * snapshot's model), then swap the view. Writers are serialised; readers
 * are not disturbed. Edits whose seq is <= the current snapshot's
 * absorbed_seq are already in the model and are skipped.
 * Errors: SGBD_E_FORMAT (an edit without ids), -ENOMEM; on error nothing
 * changes.
 */
struct sgbd_overlay_edit;
int sgbd_snapshot_apply(struct sgbd_snapshot_slot *slot,
                        const struct sgbd_overlay_edit *edits, size_t n);

/*
 * The next write sequence number (1, 2, ...): call after the write is
 * durable, before applying its edits. Thread-safe, lock-free.
 */
uint64_t sgbd_snapshot_slot_next_seq(struct sgbd_snapshot_slot *slot);

/* The last number handed out (0: none): a retrain's absorbed_seq. */
uint64_t sgbd_snapshot_slot_seq(const struct sgbd_snapshot_slot *slot);

/* Views published so far (model swaps plus overlay edits), for metrics. */
uint64_t sgbd_snapshot_swaps(const struct sgbd_snapshot_slot *slot);

/* Snapshots published so far (model swaps only). */
uint64_t sgbd_snapshot_model_swaps(const struct sgbd_snapshot_slot *slot);

#endif
