/*
 * overlay.h - the effects of writes that must not wait for a retrain.
 *
 * DESIGN.md section 5: a new item with features is recommendable at once
 * (its vector comes from the model's embed_new_item), an updated item's
 * vector changes at once, a deleted item vanishes at once, and a new
 * interaction is excluded from that user's results at once. The trained
 * snapshot stays immutable; these effects live in an overlay beside it.
 *
 * An overlay is immutable too. The write path derives a new one from the
 * current one (sgbd_snapshot_apply in snapshot.h): entries are refcounted
 * and shared, so a write copies a table of pointers, never vectors. When a
 * retrain publishes a snapshot, the overlay is rebased onto it: entries
 * whose write sequence number is <= the snapshot's absorbed_seq are in the
 * model already and are dropped; the others are resolved again by external
 * id against the new snapshot and re-embedded with its model, so a vector
 * always lives in the space of the model it is scored with.
 *
 * Index space of a view: base items 0..I-1 are rows of the snapshot's V;
 * items new since the snapshot get I, I+1, ... (sgbd_overlay_n_index).
 *
 * Readers get everything through a pinned struct sgbd_view (snapshot.h);
 * pointers returned here live as long as that pin.
 */
#ifndef SGBD_OVERLAY_H
#define SGBD_OVERLAY_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"
#include "sgbd/snapshot.h"

/* One item's features by named channel; borrowed by an edit. */
struct sgbd_item_channel {
    char name[SGBD_CHANNEL_NAME];
    size_t width;                   /* D_c */
    const float *v;                 /* (D_c), finite */
};

struct sgbd_item_features {
    int n;
    struct sgbd_item_channel ch[SGBD_MAX_CHANNELS];
};

enum sgbd_overlay_op {
    SGBD_OVERLAY_PUT_ITEM,          /* create, update or un-delete */
    SGBD_OVERLAY_DELETE_ITEM,       /* hide */
    SGBD_OVERLAY_SEEN,              /* user interacted with item */
};

/* One durable write, described for the overlay; every pointer borrowed. */
struct sgbd_overlay_edit {
    enum sgbd_overlay_op op;
    uint64_t seq;                   /* write sequence number (snapshot.h) */
    const char *item_id;            /* every op */
    const char *user_id;            /* SEEN */
    const struct sgbd_item_features *feat; /* PUT: new features, or NULL
                                               to keep the item's vector */
};

/* An item as the overlay sees it. */
struct sgbd_overlay_item {
    const char *id;
    uint64_t seq;                   /* latest write */
    uint64_t write_no;              /* the stamp's item_writes after it */
    uint32_t index;                 /* in the view's index space */
    int hidden;
    const float *vec;               /* (D) vector to score, NULL: none */
};

/* An item as a view sees it: snapshot and overlay together. */
struct sgbd_item_ref {
    uint32_t index;                 /* in the view's index space */
    int hidden;
    const float *vec;               /* (D), NULL when not recommendable */
    int in_overlay;                 /* written since the snapshot */
};

/* The empty overlay (no writes yet); -ENOMEM. Free with _unref. */
int sgbd_overlay_new_empty(struct sgbd_overlay **out);

/* Drop one reference; the last one frees it. NULL is fine. */
void sgbd_overlay_unref(struct sgbd_overlay *ov);

/*
 * A new overlay: old plus edits (applied in order), for base snapshot
 * base (NULL while no model exists: entries are kept without vectors).
 * Vectors come from base->model's embed_new_item with the edit's
 * features matched to base->channels by name (a missing channel is
 * passed as NULL); edits with seq <= base->absorbed_seq are skipped.
 * Not thread-safe with itself (the slot's writer lock serialises it).
 * Errors: SGBD_E_FORMAT (missing id), SGBD_E_SHAPE (a channel of the
 * wrong width), the model's error, -ENOMEM; *out untouched on error.
 */
int sgbd_overlay_derive(struct sgbd_overlay **out,
                        const struct sgbd_overlay *old,
                        const struct sgbd_snapshot *base,
                        const struct sgbd_overlay_edit *edits, size_t n);

/*
 * old rebased onto a newly published snapshot base: entries with
 * seq <= base->absorbed_seq dropped, the rest resolved by id again and
 * re-embedded. Errors: -ENOMEM or the model's error.
 */
int sgbd_overlay_rebase(struct sgbd_overlay **out,
                        const struct sgbd_overlay *old,
                        const struct sgbd_snapshot *base);

/* Size of the view's item index space: I + items new since the base. */
uint32_t sgbd_overlay_n_index(const struct sgbd_overlay *ov);

/*
 * Bitset over the base items (I bits) the base scoring pass must skip:
 * hidden in the snapshot, or written since (then the overlay decides).
 * NULL when the overlay touches no base item: use snap->hidden.
 */
const uint64_t *sgbd_overlay_base_mask(const struct sgbd_overlay *ov);

/* Items written since the base (entries, hidden ones included). */
size_t sgbd_overlay_n_items(const struct sgbd_overlay *ov);

/*
 * The items a scored request must consider besides the base pass: those
 * with a vector that are not hidden, as (*vecs)[j] (D) for view index
 * (*index)[j], j below the count returned, in no particular order.
 */
size_t sgbd_overlay_live(const struct sgbd_overlay *ov,
                         const float *const **vecs, const uint32_t **index);

/* The overlay entry of item id (len bytes), or NULL. */
const struct sgbd_overlay_item *sgbd_overlay_find_item(
    const struct sgbd_overlay *ov, const char *id, size_t len);

/*
 * Items user id (len bytes) interacted with since the base, as sorted
 * unique view indices: *items (n). Returns 0, or SGBD_E_NOTFOUND (none).
 */
int sgbd_overlay_user_seen(const struct sgbd_overlay *ov, const char *id,
                           size_t len, const uint32_t **items, size_t *n);

/* Writes waiting for a retrain: distinct items, interactions. */
void sgbd_overlay_pending(const struct sgbd_overlay *ov, uint64_t *items,
                          uint64_t *interactions);

/* Highest write sequence number the overlay has seen (0: none). */
uint64_t sgbd_overlay_last_seq(const struct sgbd_overlay *ov);

/*
 * What a user's results depend on besides the request, as counters that
 * only move forward along one slot's overlays: a view whose stamp and
 * user writes equal another's gives that user the same answers. Every
 * publication (rebase) and every item edit moves the stamp; a user's
 * interactions move only that user's count. Rollbacks are publications
 * too, so the stamp moves forward even when the model version goes back.
 * Within one publication, the items edited after a view with item_writes
 * n are the entries whose write_no is above n (sgbd_overlay_edited_since).
 */
struct sgbd_overlay_stamp {
    uint64_t publications;          /* rebases since the empty overlay */
    uint64_t item_writes;           /* item edits since then */
};

struct sgbd_overlay_stamp sgbd_overlay_stamp(const struct sgbd_overlay *ov);

/*
 * The entries edited after item edit number n of this publication (the
 * stamp's item_writes of an earlier view), oldest edit first: *out
 * (the count returned), in time proportional to their number.
 */
size_t sgbd_overlay_edited_since(const struct sgbd_overlay *ov, uint64_t n,
                                 const struct sgbd_overlay_item *const **out);

/* Interactions of user id (len bytes) since the base (0: none). */
uint64_t sgbd_overlay_user_writes(const struct sgbd_overlay *ov,
                                  const char *id, size_t len);

/*
 * Resolve an item id against a view (snapshot, overlay): 0 and *ref, or
 * SGBD_E_NOTFOUND when neither knows it. snap may be NULL.
 */
int sgbd_overlay_resolve_item(const struct sgbd_snapshot *snap,
                              const struct sgbd_overlay *ov, const char *id,
                              size_t len, struct sgbd_item_ref *ref);

/* External id of view index idx, or NULL when out of range. */
const char *sgbd_overlay_item_id(const struct sgbd_snapshot *snap,
                                 const struct sgbd_overlay *ov, uint32_t idx);

#endif
