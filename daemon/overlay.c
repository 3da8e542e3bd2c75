/*
 * overlay.c - copy-on-write overlay of item and interaction writes.
 *
 * An overlay holds refcounted entries: items in one table by id, users in
 * USER_BUCKETS buckets by the first byte of their id's hash, each bucket a
 * table of its own. Deriving a new overlay copies the item table and the
 * bucket array, shares every untouched entry and bucket, and copies the
 * buckets and entries an edit touches first ("fresh" ones, private to the
 * derive in progress, are changed in place). The finish step resolves the
 * touched users' interactions to view indices and recomputes the base
 * mask.
 */
#include "sgbd/overlay.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/log.h"

#define EMPTY UINT32_MAX

/* One item's features, copied once and shared by every version. */
struct feat_blob {
    atomic_int refs;
    int n;
    char name[SGBD_MAX_CHANNELS][SGBD_CHANNEL_NAME];
    size_t width[SGBD_MAX_CHANNELS];
    float *v[SGBD_MAX_CHANNELS];
};

struct ov_item {
    atomic_int refs;
    int fresh;                      /* private to the derive in progress */
    char *id;
    size_t id_len;
    uint64_t seq;
    uint64_t write_no;              /* ov->item_writes after its last edit */
    uint32_t index;
    int hidden;
    struct feat_blob *feat;         /* NULL: no features written */
    float *vec;                     /* (D) cold-start vector, owned */
    struct sgbd_overlay_item pub;   /* filled by finish */
    uint64_t hash;                  /* of id, under the slot's one seed */
};

struct ov_user {
    atomic_int refs;
    int fresh;
    char *id;
    size_t id_len;
    size_t n, cap;                  /* interactions since the base */
    uint64_t *seq;                  /* (n) */
    char **item;                    /* (n) item ids, owned */
    uint32_t *idx;                  /* (n_idx) sorted unique view indices */
    size_t n_idx;
    size_t n_unresolved;            /* items neither side knew */
    uint64_t hash;                  /* of id, under the slot's one seed */
};

/* Open addressing: slot holds a position in the entry array. */
struct table {
    size_t mask;
    uint32_t *slot;
};

/*
 * The items written since the base and what is derived from them. A
 * derive that edits no item (interactions only, the common write) shares
 * its overlay's part whole; one that does copies it.
 */
struct item_part {
    atomic_int refs;
    size_t n_items, cap_items;
    struct ov_item **items;
    struct table item_tab;
    uint32_t *new_pos;              /* (n_index - base_items) positions */
    uint64_t *base_mask;            /* ((I + 63) / 64) or NULL */
    /* Entries edited since the base, by write_no ascending: readers find
     * the edits after a given count without a pass over every entry. */
    const struct sgbd_overlay_item **by_edit;
    size_t n_edited;
    /* The items a scored request must score (a vector, not hidden), in
     * two flat arrays: one pass with no pointer chase through entries. */
    size_t n_live;
    const float **live_vec;         /* (n_live) */
    uint32_t *live_index;           /* (n_live) */
};

/*
 * The users whose id hash starts with one byte value, and their table. A
 * bucket is shared by every overlay until a write touches one of its
 * users; that overlay then copies it, so an interaction costs a copy of
 * the bucket array and of one bucket, not of every user waiting for a
 * retrain (tens of thousands of them, on a busy storefront).
 */
#define USER_BUCKETS 256

struct user_bucket {
    atomic_int refs;
    int fresh;                      /* private to the derive in progress */
    size_t n, cap;
    struct ov_user **users;         /* (cap) */
    struct table tab;               /* positions in users, load <= 1/2 */
};

struct sgbd_overlay {
    atomic_int refs;
    uint64_t seed;
    uint32_t base_items;            /* I of the base snapshot, 0: none */
    uint32_t n_index;               /* I + items new since the base */
    size_t dim;                     /* D of the base, 0: none */

    struct item_part *ip;

    size_t n_users;                 /* users with interactions since it */
    size_t n_unresolved_users;      /* of them, with an item nobody knew */
    struct user_bucket *bucket[USER_BUCKETS];

    uint64_t n_pairs;
    uint64_t last_seq;
    uint64_t publications;          /* rebases since the empty overlay */
    uint64_t item_writes;           /* item edits since then */
    struct edit_log *log;           /* while a derive runs, else NULL */
};

/* What a derive did to the item entries, for index_edits. */
struct edit_log {
    struct ov_item **made;          /* (n_made) fresh entries, edited */
    uint64_t *replaced;             /* (n_replaced) write_no of the entries
                                       they replaced, where above 0 */
    size_t n_made, n_replaced;
};

/* ---- entries ---- */

static void feat_unref(struct feat_blob *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) != 1)
        return;
    for (int c = 0; c < f->n; c++)
        free(f->v[c]);
    free(f);
}

static int feat_copy(struct feat_blob **out,
                     const struct sgbd_item_features *src)
{
    struct feat_blob *f = calloc(1, sizeof(*f));

    if (!f)
        return -ENOMEM;
    atomic_init(&f->refs, 1);
    for (int c = 0; c < src->n && c < SGBD_MAX_CHANNELS; c++) {
        f->v[c] = malloc(src->ch[c].width * sizeof(float) + 1);
        if (!f->v[c]) {
            feat_unref(f);
            return -ENOMEM;
        }
        memcpy(f->v[c], src->ch[c].v, src->ch[c].width * sizeof(float));
        memcpy(f->name[c], src->ch[c].name, SGBD_CHANNEL_NAME);
        f->name[c][SGBD_CHANNEL_NAME - 1] = '\0';
        f->width[c] = src->ch[c].width;
        f->n = c + 1;
    }
    *out = f;
    return 0;
}

static void item_unref(struct ov_item *e)
{
    if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    feat_unref(e->feat);
    free(e->vec);
    free(e->id);
    free(e);
}

static struct ov_item *item_new(const char *id, size_t len, uint64_t hash)
{
    struct ov_item *e = calloc(1, sizeof(*e));

    if (!e || !(e->id = malloc(len + 1))) {
        free(e);
        return NULL;
    }
    memcpy(e->id, id, len);
    e->id[len] = '\0';
    e->id_len = len;
    e->hash = hash;
    atomic_init(&e->refs, 1);
    e->fresh = 1;
    return e;
}

static void user_unref(struct ov_user *u)
{
    if (!u || atomic_fetch_sub(&u->refs, 1) != 1)
        return;
    for (size_t k = 0; k < u->n; k++)
        free(u->item[k]);
    free(u->item);
    free(u->seq);
    free(u->idx);
    free(u->id);
    free(u);
}

static struct ov_user *user_new(const char *id, size_t len, uint64_t hash)
{
    struct ov_user *u = calloc(1, sizeof(*u));

    if (!u || !(u->id = malloc(len + 1))) {
        free(u);
        return NULL;
    }
    memcpy(u->id, id, len);
    u->id[len] = '\0';
    u->id_len = len;
    u->hash = hash;
    atomic_init(&u->refs, 1);
    u->fresh = 1;
    return u;
}

static int user_add(struct ov_user *u, const char *item, uint64_t seq)
{
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 8;
        uint64_t *s = realloc(u->seq, cap * sizeof(*s));
        char **it;
        if (!s)
            return -ENOMEM;
        u->seq = s;
        it = realloc(u->item, cap * sizeof(*it));
        if (!it)
            return -ENOMEM;
        u->item = it;
        u->cap = cap;
    }
    if (!(u->item[u->n] = strdup(item)))
        return -ENOMEM;
    u->seq[u->n++] = seq;
    return 0;
}

/* A private copy of u keeping only interactions with seq > min_seq. */
static struct ov_user *user_copy(const struct ov_user *u, uint64_t min_seq)
{
    struct ov_user *c = user_new(u->id, u->id_len, u->hash);

    if (!c)
        return NULL;
    for (size_t k = 0; k < u->n; k++)
        if (u->seq[k] > min_seq && user_add(c, u->item[k], u->seq[k])) {
            user_unref(c);
            return NULL;
        }
    return c;
}

/* ---- tables ---- */

/* Every overlay of a slot descends from one empty overlay and keeps its
 * seed, so an entry's hash, taken once, holds in every table it enters:
 * copying a table costs no rehash of the ids. */
static uint64_t id_hash(const struct sgbd_overlay *ov, const char *id,
                        size_t len)
{
    return sgbd_snapshot_hash_id(id, len, ov->seed);
}

/* Slot of id (hash h) in the item table: its entry's position, or the
 * empty slot where it would go. */
static size_t item_slot(const struct sgbd_overlay *ov, uint64_t h,
                        const char *id, size_t len)
{
    const struct table *t = &ov->ip->item_tab;

    for (size_t at = h & t->mask;; at = (at + 1) & t->mask) {
        uint32_t pos = t->slot[at];
        const struct ov_item *e;

        if (pos == EMPTY)
            return at;
        e = ov->ip->items[pos];
        if (e->id_len == len && memcmp(e->id, id, len) == 0)
            return at;
    }
}

/* Size t for at least n entries at load <= 1/2, rehashing what is there. */
static int tab_build(struct table *t, size_t n)
{
    size_t cap = 16;

    while (cap < n * 2 + 2)
        cap <<= 1;
    t->slot = malloc(cap * sizeof(uint32_t));
    if (!t->slot)
        return -ENOMEM;
    memset(t->slot, 0xff, cap * sizeof(uint32_t));
    t->mask = cap - 1;
    return 0;
}

/* Put pos (hash h) in t, for an entry whose id t cannot hold already:
 * copies and rebuilds of a table need no id compared. */
static void tab_put_new(struct table *t, uint64_t h, uint32_t pos)
{
    size_t at = h & t->mask;

    while (t->slot[at] != EMPTY)
        at = (at + 1) & t->mask;
    t->slot[at] = pos;
}

/* ---- user buckets ---- */

static void bucket_unref(struct user_bucket *b)
{
    if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    for (size_t k = 0; k < b->n; k++)
        user_unref(b->users[k]);
    free(b->users);
    free(b->tab.slot);
    free(b);
}

/* Slot of id (hash h) in b: its user's position, or the empty slot. The
 * table takes the hash's low bits, the bucket array its top byte. */
static size_t bucket_slot(const struct user_bucket *b, uint64_t h,
                          const char *id, size_t len)
{
    for (size_t at = h & b->tab.mask;; at = (at + 1) & b->tab.mask) {
        uint32_t pos = b->tab.slot[at];
        const struct ov_user *u;

        if (pos == EMPTY)
            return at;
        u = b->users[pos];
        if (u->id_len == len && memcmp(u->id, id, len) == 0)
            return at;
    }
}

static const struct ov_user *find_user(const struct sgbd_overlay *ov,
                                       const char *id, size_t len)
{
    uint64_t h = id_hash(ov, id, len);
    const struct user_bucket *b = ov->bucket[h >> 56];
    uint32_t pos;

    if (!b)
        return NULL;
    pos = b->tab.slot[bucket_slot(b, h, id, len)];
    return pos == EMPTY ? NULL : b->users[pos];
}

/* A fresh bucket with room for cap users, sharing old's (NULL: none). */
static struct user_bucket *bucket_new(const struct sgbd_overlay *ov,
                                      const struct user_bucket *old,
                                      size_t cap)
{
    struct user_bucket *b = calloc(1, sizeof(*b));
    size_t n = old ? old->n : 0;

    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->fresh = 1;
    b->cap = cap > n ? cap : n + 1;
    b->users = malloc(b->cap * sizeof(*b->users));
    if (!b->users || tab_build(&b->tab, b->cap) != 0) {
        free(b->users);
        free(b);
        return NULL;
    }
    for (size_t k = 0; k < n; k++) {
        struct ov_user *u = old->users[k];

        atomic_fetch_add(&u->refs, 1);
        b->users[k] = u;
        tab_put_new(&b->tab, u->hash, (uint32_t)k);
    }
    b->n = n;
    return b;
}

/* *out = ov's bucket for hash h, fresh, with room for one more user. */
static int bucket_for_write(struct sgbd_overlay *ov, uint64_t h,
                            struct user_bucket **out)
{
    struct user_bucket **slot = &ov->bucket[h >> 56], *b = *slot;

    if (b && b->fresh && b->n < b->cap)
        return *out = b, 0;
    /* a shared bucket is copied at its size (a derive adds a user or
     * two to it); a fresh one that is full doubles */
    b = bucket_new(ov, b, !b ? 4 : b->fresh ? 2 * b->cap : b->n + 4);
    if (!b)
        return -ENOMEM;
    bucket_unref(*slot);
    *out = *slot = b;
    return 0;
}

/* ---- overlay lifetime ---- */

static void item_part_unref(struct item_part *ip)
{
    if (!ip || atomic_fetch_sub(&ip->refs, 1) != 1)
        return;
    for (size_t k = 0; k < ip->n_items; k++)
        item_unref(ip->items[k]);
    free(ip->items);
    free(ip->item_tab.slot);
    free(ip->new_pos);
    free(ip->base_mask);
    free(ip->by_edit);
    free(ip->live_vec);
    free(ip->live_index);
    free(ip);
}

void sgbd_overlay_unref(struct sgbd_overlay *ov)
{
    if (!ov || atomic_fetch_sub(&ov->refs, 1) != 1)
        return;
    item_part_unref(ov->ip);
    for (size_t b = 0; b < USER_BUCKETS; b++)
        bucket_unref(ov->bucket[b]);
    free(ov);
}

/* What a new overlay takes of the one it is made from. */
enum share {
    SHARE_NOTHING,                  /* a rebase: it re-adds what is left */
    SHARE_ENTRIES,                  /* a derive that edits items */
    SHARE_ITEMS,                    /* a derive of interactions only */
};

/* ov->ip, a private item part with room for cap items, empty. */
static int item_part_alloc(struct sgbd_overlay *ov, size_t cap)
{
    struct item_part *ip = calloc(1, sizeof(*ip));

    if (!ip)
        return -ENOMEM;
    atomic_init(&ip->refs, 1);
    ov->ip = ip;
    ip->cap_items = cap ? cap : 1;
    ip->items = malloc(ip->cap_items * sizeof(*ip->items));
    ip->new_pos = malloc(ip->cap_items * sizeof(uint32_t));
    if (!ip->items || !ip->new_pos ||
        tab_build(&ip->item_tab, ip->cap_items) != 0)
        return -ENOMEM;             /* the caller frees ov, and ip */
    return 0;
}

/*
 * An unpublished overlay for base made from old (NULL: none), with room
 * for extra more items and what share says of old's: for a derive, old's
 * users' buckets, and its item part either whole or as a copy sharing
 * the entries.
 */
static int overlay_alloc(struct sgbd_overlay **out,
                         const struct sgbd_overlay *old,
                         const struct sgbd_snapshot *base, size_t extra,
                         enum share share)
{
    struct sgbd_overlay *ov = calloc(1, sizeof(*ov));
    int rc = -ENOMEM;

    if (!old)
        share = SHARE_NOTHING;
    if (!ov)
        return -ENOMEM;
    atomic_init(&ov->refs, 1);
    ov->seed = old ? old->seed : sgbd_snapshot_hash_id("ov", 2,
                                                       (uintptr_t)ov);
    ov->base_items = base ? base->n_items : 0;
    ov->n_index = ov->base_items;
    ov->dim = base ? base->dim : 0;
    if (share == SHARE_ITEMS) {
        ov->ip = old->ip;
        atomic_fetch_add(&old->ip->refs, 1);
    } else if (item_part_alloc(ov, (old ? old->ip->n_items : 0) + extra) !=
               0) {
        goto out;                   /* a rebase re-adds at most old's */
    }
    rc = 0;
    if (old) {
        ov->publications = old->publications;
        ov->item_writes = old->item_writes;
    }
    if (share == SHARE_NOTHING)
        goto out;

    ov->n_index = old->n_index;
    ov->n_pairs = old->n_pairs;
    ov->last_seq = old->last_seq;
    if (share == SHARE_ENTRIES) {
        struct item_part *ip = ov->ip;

        memcpy(ip->new_pos, old->ip->new_pos,
               (old->n_index - old->base_items) * sizeof(uint32_t));
        for (size_t k = 0; k < old->ip->n_items; k++) {
            ip->items[ip->n_items] = old->ip->items[k];
            atomic_fetch_add(&old->ip->items[k]->refs, 1);
            const struct ov_item *e = old->ip->items[k];

            tab_put_new(&ip->item_tab, e->hash, (uint32_t)ip->n_items++);
        }
    }
    ov->n_users = old->n_users;
    ov->n_unresolved_users = old->n_unresolved_users;
    for (size_t b = 0; b < USER_BUCKETS; b++)
        if ((ov->bucket[b] = old->bucket[b]))
            atomic_fetch_add(&old->bucket[b]->refs, 1);
out:
    if (rc != 0)
        sgbd_overlay_unref(ov);
    else
        *out = ov;
    return rc;
}

int sgbd_overlay_new_empty(struct sgbd_overlay **out)
{
    return overlay_alloc(out, NULL, NULL, 0, SHARE_NOTHING);
}

/* ---- cold-start embedding ---- */

/*
 * out (D) = the base model's cold-start vector for features f. Returns 1
 * with a vector, 0 when the base cannot make one (no model, ID-only), or
 * an error.
 */
static int embed(const struct sgbd_snapshot *base, const struct feat_blob *f,
                 float *out)
{
    const float *feats[SGBD_MAX_CHANNELS] = {0};
    int rc;

    if (!base || !base->model || !base->model->ops->embed_new_item || !f)
        return 0;
    for (int c = 0; c < base->n_channels; c++)
        for (int k = 0; k < f->n; k++) {
            if (strcmp(base->channels[c].name, f->name[k]) != 0)
                continue;
            if (f->width[k] != base->channels[c].width)
                return sgbd_errf(SGBD_E_SHAPE, "channel '%s': %zu values, "
                                 "the model takes %zu", f->name[k],
                                 f->width[k], base->channels[c].width);
            feats[c] = f->v[k];
        }
    rc = base->model->ops->embed_new_item(base->model, base->theta, feats,
                                          out);
    if (rc != 0)
        return rc;
    for (size_t d = 0; d < base->dim; d++)
        if (!isfinite(out[d]))
            return sgbd_errf(SGBD_E_DIVERGED, "cold-start vector has a NaN "
                             "or Inf");
    return 1;
}

/*
 * Give fresh entry e its vector from its features under base. A model
 * that fails on these features leaves the item without a vector (logged):
 * the write is durable already and a retrain will place it.
 */
static int embed_item(const struct sgbd_snapshot *base, struct ov_item *e)
{
    char qid[96];
    float *v;
    int rc;

    free(e->vec);
    e->vec = NULL;
    if (!base || !e->feat)
        return 0;
    v = malloc(base->dim * sizeof(float));
    if (!v)
        return -ENOMEM;
    rc = embed(base, e->feat, v);
    if (rc < 0 && rc != -ENOMEM) {
        SGBD_WARN("cold_start_failed", "item=%s why=%s",
                  sgbd_log_quote(e->id, qid, sizeof(qid)),
                  sgbd_err_detail(rc));
        rc = 0;
    }
    if (rc <= 0) {
        free(v);
        return rc;
    }
    e->vec = v;
    return 0;
}

/* ---- deriving ---- */

/* The position of a private (fresh) entry for item id, made on demand. */
static int item_for_write(struct sgbd_overlay *ov,
                          const struct sgbd_snapshot *base, const char *id,
                          struct ov_item **out)
{
    size_t len = strlen(id);
    uint64_t h = id_hash(ov, id, len);
    size_t at = item_slot(ov, h, id, len);
    uint32_t pos = ov->ip->item_tab.slot[at], idx;
    struct ov_item *e, *old = pos == EMPTY ? NULL : ov->ip->items[pos];

    if (old && old->fresh)
        return *out = old, 0;
    if (!(e = item_new(id, len, h)))
        return -ENOMEM;
    if (old) {
        e->index = old->index;
        e->hidden = old->hidden;
        e->seq = old->seq;
        e->write_no = old->write_no;
        e->feat = old->feat;
        if (e->feat)
            atomic_fetch_add(&e->feat->refs, 1);
        if (old->vec && !(e->vec = malloc(ov->dim * sizeof(float)))) {
            item_unref(e);
            return -ENOMEM;
        }
        if (old->vec)
            memcpy(e->vec, old->vec, ov->dim * sizeof(float));
        if (ov->log && old->write_no > 0)
            ov->log->replaced[ov->log->n_replaced++] = old->write_no;
        ov->ip->items[pos] = e;
        item_unref(old);
    } else {
        if (base && sgbd_snapshot_item_index(base, id, len, &idx) == 0) {
            e->index = idx;
            e->hidden = sgbd_snapshot_hidden(base, idx);
        } else {
            e->index = ov->n_index++;
            ov->ip->new_pos[e->index - ov->base_items] = (uint32_t)ov->ip->n_items;
        }
        pos = (uint32_t)ov->ip->n_items++;
        ov->ip->items[pos] = e;
        ov->ip->item_tab.slot[at] = pos;
    }
    if (ov->log)
        ov->log->made[ov->log->n_made++] = e;
    *out = e;
    return 0;
}

/* The private (fresh) entry for user id, made on demand. */
static int user_for_write(struct sgbd_overlay *ov, const char *id,
                          struct ov_user **out)
{
    size_t len = strlen(id), at;
    uint64_t h = id_hash(ov, id, len);
    struct user_bucket *b;
    struct ov_user *u, *old;
    uint32_t pos;
    int rc;

    if ((rc = bucket_for_write(ov, h, &b)) != 0)
        return rc;
    at = bucket_slot(b, h, id, len);
    pos = b->tab.slot[at];
    old = pos == EMPTY ? NULL : b->users[pos];
    if (old && old->fresh)          /* written by this derive already */
        return *out = old, 0;
    u = old ? user_copy(old, 0) : user_new(id, len, h);
    if (!u)
        return -ENOMEM;
    if (old) {
        if (old->n_unresolved)
            ov->n_unresolved_users--; /* finish counts the copy again */
        b->users[pos] = u;
        user_unref(old);
    } else {
        pos = (uint32_t)b->n++;
        b->users[pos] = u;
        b->tab.slot[at] = pos;
        ov->n_users++;
    }
    *out = u;
    return 0;
}

static int apply_edit(struct sgbd_overlay *ov,
                      const struct sgbd_snapshot *base,
                      const struct sgbd_overlay_edit *ed)
{
    struct ov_item *e;
    struct ov_user *u;
    int rc;

    if (ed->op == SGBD_OVERLAY_SEEN) {
        rc = user_for_write(ov, ed->user_id, &u);
        if (rc == 0)
            rc = user_add(u, ed->item_id, ed->seq);
        if (rc == 0)
            ov->n_pairs++;
        return rc;
    }
    rc = item_for_write(ov, base, ed->item_id, &e);
    if (rc != 0)
        return rc;
    e->write_no = ++ov->item_writes;
    e->seq = ed->seq;
    if (ed->op == SGBD_OVERLAY_DELETE_ITEM) {
        e->hidden = 1;
        return 0;
    }
    e->hidden = 0;
    if (!ed->feat)
        return 0;
    feat_unref(e->feat);
    e->feat = NULL;
    rc = feat_copy(&e->feat, ed->feat);
    if (rc == 0)
        rc = embed_item(base, e);
    return rc;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Resolve an item id to a view index; EMPTY when neither side knows it. */
static uint32_t resolve_index(const struct sgbd_overlay *ov,
                              const struct sgbd_snapshot *base,
                              const char *id)
{
    size_t len = strlen(id);
    size_t at = item_slot(ov, id_hash(ov, id, len), id, len);
    uint32_t idx;

    if (ov->ip->item_tab.slot[at] != EMPTY)
        return ov->ip->items[ov->ip->item_tab.slot[at]]->index;
    if (base && sgbd_snapshot_item_index(base, id, len, &idx) == 0)
        return idx;
    return EMPTY;
}

static int finish_user(struct sgbd_overlay *ov,
                       const struct sgbd_snapshot *base, struct ov_user *u)
{
    size_t n = 0;

    u->n_unresolved = 0;
    free(u->idx);
    u->idx = malloc(u->n * sizeof(uint32_t) + 1);
    if (!u->idx)
        return -ENOMEM;
    for (size_t k = 0; k < u->n; k++) {
        uint32_t idx = resolve_index(ov, base, u->item[k]);
        if (idx != EMPTY)
            u->idx[n++] = idx;
        else
            u->n_unresolved++;
    }
    qsort(u->idx, n, sizeof(uint32_t), cmp_u32);
    u->n_idx = 0;
    for (size_t k = 0; k < n; k++)
        if (u->n_idx == 0 || u->idx[u->n_idx - 1] != u->idx[k])
            u->idx[u->n_idx++] = u->idx[k];
    u->fresh = 0;
    return 0;
}

static void finish_item(const struct sgbd_snapshot *base, struct ov_item *e)
{
    e->pub.id = e->id;
    e->pub.seq = e->seq;
    e->pub.write_no = e->write_no;
    e->pub.index = e->index;
    e->pub.hidden = e->hidden;
    e->pub.vec = e->vec;
    if (!e->vec && base && e->index < base->n_items)
        e->pub.vec = base->items + (size_t)e->index * base->dim;
    e->fresh = 0;
}

/*
 * The users of bucket b finished: the fresh ones resolved; with rescan
 * (items were created) the shared ones with an interaction nobody knew
 * copied first and resolved again. A shared bucket with none of those
 * is left shared.
 */
static int finish_bucket(struct sgbd_overlay *ov,
                         const struct sgbd_snapshot *base, size_t b,
                         int rescan)
{
    struct user_bucket *ub = ov->bucket[b];
    size_t k = 0;
    int rc;

    if (!ub || (!ub->fresh && !rescan))
        return 0;
    if (!ub->fresh) {
        while (k < ub->n && !ub->users[k]->n_unresolved)
            k++;
        if (k == ub->n)
            return 0;
        if (!(ub = bucket_new(ov, ub, ub->n)))
            return -ENOMEM;
        bucket_unref(ov->bucket[b]);
        ov->bucket[b] = ub;
    }
    for (k = 0; k < ub->n; k++) {
        struct ov_user *u = ub->users[k];

        if (!u->fresh && !(rescan && u->n_unresolved))
            continue;
        if (!u->fresh) {
            struct ov_user *c = user_copy(u, 0);
            if (!c)
                return -ENOMEM;
            ov->n_unresolved_users--;
            ub->users[k] = c;
            user_unref(u);
            u = c;
        }
        if ((rc = finish_user(ov, base, u)) != 0)
            return rc;
        ov->n_unresolved_users += u->n_unresolved > 0;
    }
    ub->fresh = 0;
    return 0;
}

/* A private item part's public views set, live items gathered and base
 * mask computed. */
static int finish_items(struct sgbd_overlay *ov,
                        const struct sgbd_snapshot *base)
{
    size_t words = ((size_t)ov->base_items + 63) / 64;
    struct item_part *ip = ov->ip;
    int touches_base = 0;

    ip->live_vec = malloc((ip->n_items + 1) * sizeof(*ip->live_vec));
    ip->live_index = malloc((ip->n_items + 1) * sizeof(*ip->live_index));
    if (!ip->live_vec || !ip->live_index)
        return -ENOMEM;
    for (size_t k = 0; k < ip->n_items; k++) {
        const struct sgbd_overlay_item *it = &ip->items[k]->pub;

        if (ip->items[k]->fresh)
            finish_item(base, ip->items[k]);
        touches_base |= it->index < ov->base_items;
        if (it->vec && !it->hidden) {
            ip->live_vec[ip->n_live] = it->vec;
            ip->live_index[ip->n_live++] = it->index;
        }
    }
    if (!touches_base || !base)
        return 0;
    ip->base_mask = malloc(words * sizeof(uint64_t) + 8);
    if (!ip->base_mask)
        return -ENOMEM;
    memcpy(ip->base_mask, base->hidden, words * sizeof(uint64_t));
    for (size_t k = 0; k < ip->n_items; k++) {
        uint32_t i = ip->items[k]->index;
        if (i < ov->base_items)
            ip->base_mask[i >> 6] |= 1ULL << (i & 63);
    }
    return 0;
}

/*
 * Users resolved and, unless the item part is shared, items finished.
 * Shared users are left alone unless an item created now can resolve one
 * of their older interactions; then they are copied first.
 */
static int overlay_finish(struct sgbd_overlay *ov,
                          const struct sgbd_snapshot *base,
                          uint32_t old_n_index, int items_shared)
{
    int rescan = ov->n_index != old_n_index && ov->n_unresolved_users > 0;
    int rc = items_shared ? 0 : finish_items(ov, base);

    for (size_t b = 0; rc == 0 && b < USER_BUCKETS; b++)
        rc = finish_bucket(ov, base, b, rescan);
    return rc;
}

static int cmp_write_no(const void *a, const void *b)
{
    uint64_t x = (*(const struct sgbd_overlay_item *const *)a)->write_no;
    uint64_t y = (*(const struct sgbd_overlay_item *const *)b)->write_no;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The first position of by (n, by write_no ascending) whose write_no is
 * at least w, searching from lo. */
static size_t first_from(const struct sgbd_overlay_item *const *by,
                         size_t lo, size_t n, uint64_t w)
{
    size_t hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (by[mid]->write_no < w)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * ov's by_edit from old's, without a sort of it: old's entries less the
 * ones this derive replaced (log->replaced), then the entries it made,
 * whose write_no are above all of old's, in their order.
 */
static int index_edits(struct sgbd_overlay *ov,
                       const struct sgbd_overlay *old,
                       struct edit_log *log)
{
    const struct item_part *op = old->ip;
    struct item_part *ip = ov->ip;
    size_t n = 0, from = 0, made;

    ip->by_edit = malloc((op->n_edited + log->n_made + 1) *
                         sizeof(*ip->by_edit));
    if (!ip->by_edit)
        return -ENOMEM;
    qsort(log->replaced, log->n_replaced, sizeof(uint64_t), cmp_u64);
    for (size_t j = 0; j < log->n_replaced; j++) {
        size_t at = first_from(op->by_edit, from, op->n_edited,
                               log->replaced[j]);

        if (at > from)
            memcpy(ip->by_edit + n, op->by_edit + from,
                   (at - from) * sizeof(*ip->by_edit));
        n += at - from;
        from = at + (at < op->n_edited &&
                     op->by_edit[at]->write_no == log->replaced[j]);
    }
    if (op->n_edited > from)        /* by_edit is NULL while none is */
        memcpy(ip->by_edit + n, op->by_edit + from,
               (op->n_edited - from) * sizeof(*ip->by_edit));
    n += op->n_edited - from;
    made = n;
    for (size_t k = 0; k < log->n_made; k++)
        if (log->made[k]->pub.write_no > 0)
            ip->by_edit[n++] = &log->made[k]->pub;
    qsort(ip->by_edit + made, n - made, sizeof(*ip->by_edit), cmp_write_no);
    ip->n_edited = n;
    return 0;
}

int sgbd_overlay_derive(struct sgbd_overlay **out,
                        const struct sgbd_overlay *old,
                        const struct sgbd_snapshot *base,
                        const struct sgbd_overlay_edit *edits, size_t n)
{
    uint64_t absorbed = base ? base->absorbed_seq : 0;
    enum share share = SHARE_ITEMS;
    struct edit_log log = {0};
    struct sgbd_overlay *ov = NULL;
    int rc;

    for (size_t k = 0; k < n; k++) {
        if (!edits[k].item_id || !edits[k].item_id[0] ||
            (edits[k].op == SGBD_OVERLAY_SEEN &&
             (!edits[k].user_id || !edits[k].user_id[0])))
            return sgbd_errf(SGBD_E_FORMAT, "overlay edit %zu has no id", k);
        if (edits[k].op != SGBD_OVERLAY_SEEN && edits[k].seq > absorbed)
            share = SHARE_ENTRIES;
    }
    log.made = malloc((n + 1) * sizeof(*log.made));
    log.replaced = malloc((n + 1) * sizeof(*log.replaced));
    rc = log.made && log.replaced ? overlay_alloc(&ov, old, base, n, share)
                                  : -ENOMEM;
    if (rc != 0) {
        free(log.made);
        free(log.replaced);
        return rc;
    }
    ov->log = &log;
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (edits[k].seq <= absorbed)
            continue; /* trained into the model already */
        rc = apply_edit(ov, base, &edits[k]);
        if (edits[k].seq > ov->last_seq)
            ov->last_seq = edits[k].seq;
    }
    if (rc == 0)
        rc = overlay_finish(ov, base, old->n_index, share == SHARE_ITEMS);
    if (rc == 0 && share == SHARE_ENTRIES)
        rc = index_edits(ov, old, &log);
    ov->log = NULL;
    free(log.made);
    free(log.replaced);
    if (rc != 0) {
        sgbd_overlay_unref(ov);
        return rc;
    }
    *out = ov;
    return 0;
}

/* Re-add old item entry e under the new base, as a fresh entry. */
static int rebase_item(struct sgbd_overlay *ov,
                       const struct sgbd_snapshot *base,
                       const struct ov_item *old)
{
    struct ov_item *e;
    int rc = item_for_write(ov, base, old->id, &e);

    if (rc != 0)
        return rc;
    e->seq = old->seq;
    e->hidden = old->hidden;
    e->feat = old->feat;
    if (e->feat)
        atomic_fetch_add(&e->feat->refs, 1);
    return embed_item(base, e);
}

/* Old user entry u under the new base, without the interactions it
 * absorbed, as a fresh entry; none when nothing is left. */
static int rebase_user(struct sgbd_overlay *ov, const struct ov_user *u,
                       uint64_t absorbed)
{
    struct ov_user *c = user_copy(u, absorbed);
    struct user_bucket *b;
    uint64_t h;
    int rc;

    if (!c)
        return -ENOMEM;
    if (c->n == 0) {
        user_unref(c);
        return 0;
    }
    h = c->hash;
    if ((rc = bucket_for_write(ov, h, &b)) != 0) {
        user_unref(c);
        return rc;
    }
    tab_put_new(&b->tab, h, (uint32_t)b->n); /* old's users are distinct */
    b->users[b->n++] = c;
    ov->n_users++;
    ov->n_pairs += c->n;
    return 0;
}

int sgbd_overlay_rebase(struct sgbd_overlay **out,
                        const struct sgbd_overlay *old,
                        const struct sgbd_snapshot *base)
{
    struct sgbd_overlay *ov = NULL;
    int rc = overlay_alloc(&ov, old, base, 0, SHARE_NOTHING);

    if (rc == 0)
        ov->publications++;
    for (size_t k = 0; rc == 0 && k < old->ip->n_items; k++)
        if (old->ip->items[k]->seq > base->absorbed_seq)
            rc = rebase_item(ov, base, old->ip->items[k]);
    for (size_t b = 0; rc == 0 && b < USER_BUCKETS; b++)
        for (size_t k = 0; rc == 0 && old->bucket[b] &&
                           k < old->bucket[b]->n; k++)
            rc = rebase_user(ov, old->bucket[b]->users[k],
                             base->absorbed_seq);
    if (rc == 0) {
        ov->last_seq = old->last_seq;
        rc = overlay_finish(ov, base, 0, 0);
    }
    if (rc != 0) {
        if (ov)
            sgbd_overlay_unref(ov);
        return rc;
    }
    *out = ov;
    return 0;
}

/* ---- reading ---- */

uint32_t sgbd_overlay_n_index(const struct sgbd_overlay *ov)
{
    return ov->n_index;
}

const uint64_t *sgbd_overlay_base_mask(const struct sgbd_overlay *ov)
{
    return ov->ip->base_mask;
}

size_t sgbd_overlay_live(const struct sgbd_overlay *ov,
                         const float *const **vecs, const uint32_t **index)
{
    *vecs = ov->ip->live_vec;
    *index = ov->ip->live_index;
    return ov->ip->n_live;
}

size_t sgbd_overlay_n_items(const struct sgbd_overlay *ov)
{
    return ov->ip->n_items;
}

const struct sgbd_overlay_item *sgbd_overlay_find_item(
    const struct sgbd_overlay *ov, const char *id, size_t len)
{
    size_t at = item_slot(ov, id_hash(ov, id, len), id, len);
    uint32_t pos = ov->ip->item_tab.slot[at];

    return pos == EMPTY ? NULL : &ov->ip->items[pos]->pub;
}

int sgbd_overlay_user_seen(const struct sgbd_overlay *ov, const char *id,
                           size_t len, const uint32_t **items, size_t *n)
{
    const struct ov_user *u = find_user(ov, id, len);

    if (!u)
        return SGBD_E_NOTFOUND;
    *items = u->idx;
    *n = u->n_idx;
    return 0;
}

void sgbd_overlay_pending(const struct sgbd_overlay *ov, uint64_t *items,
                          uint64_t *interactions)
{
    *items = ov->ip->n_items;
    *interactions = ov->n_pairs;
}

uint64_t sgbd_overlay_last_seq(const struct sgbd_overlay *ov)
{
    return ov->last_seq;
}

struct sgbd_overlay_stamp sgbd_overlay_stamp(const struct sgbd_overlay *ov)
{
    return (struct sgbd_overlay_stamp){ov->publications, ov->item_writes};
}

size_t sgbd_overlay_edited_since(const struct sgbd_overlay *ov, uint64_t n,
                                 const struct sgbd_overlay_item *const **out)
{
    size_t lo = 0, hi = ov->ip->n_edited;

    *out = NULL;
    if (hi == 0)
        return 0;                   /* none since the base (by_edit NULL) */
    while (lo < hi) {               /* the first entry edited after n */
        size_t mid = lo + (hi - lo) / 2;
        if (ov->ip->by_edit[mid]->write_no <= n)
            lo = mid + 1;
        else
            hi = mid;
    }
    *out = ov->ip->by_edit + lo;
    return ov->ip->n_edited - lo;
}

uint64_t sgbd_overlay_user_writes(const struct sgbd_overlay *ov,
                                  const char *id, size_t len)
{
    const struct ov_user *u = find_user(ov, id, len);

    return u ? u->n : 0;
}

int sgbd_overlay_resolve_item(const struct sgbd_snapshot *snap,
                              const struct sgbd_overlay *ov, const char *id,
                              size_t len, struct sgbd_item_ref *ref)
{
    const struct sgbd_overlay_item *e = sgbd_overlay_find_item(ov, id, len);
    uint32_t idx;

    if (e) {
        ref->index = e->index;
        ref->hidden = e->hidden;
        ref->vec = e->vec;
        ref->in_overlay = 1;
        return 0;
    }
    if (!snap || sgbd_snapshot_item_index(snap, id, len, &idx) != 0)
        return SGBD_E_NOTFOUND;
    ref->index = idx;
    ref->hidden = sgbd_snapshot_hidden(snap, idx);
    ref->vec = snap->items + (size_t)idx * snap->dim;
    ref->in_overlay = 0;
    return 0;
}

const char *sgbd_overlay_item_id(const struct sgbd_snapshot *snap,
                                 const struct sgbd_overlay *ov, uint32_t idx)
{
    if (idx < ov->base_items)
        return snap ? sgbd_snapshot_item_id(snap, idx) : NULL;
    if (idx >= ov->n_index)
        return NULL;
    return ov->ip->items[ov->ip->new_pos[idx - ov->base_items]]->id;
}
