/*
 * reco_cache.h - finished recommendation bodies, kept for repeat requests.
 *
 * A storefront asks for the same user's recommendations on every page
 * view, and the answer only changes when a write or a publication can
 * change it. The cache keeps the bytes of each personalised answer under
 * the user id and k, stamped with the counters that move when it could
 * change (overlay.h: publications and item edits, shared by all users;
 * the user's own interactions). A lookup under other counters misses, so
 * an answer from the cache is always the one scoring would give.
 *
 * Memory is bounded: the cache is split into shards, each with a share of
 * the byte budget, a direct-mapped table of entries and a clock hand that
 * evicts entries not read since it last passed. A shard that sees a newer
 * stamp than its own frees everything first (those entries can never hit
 * again); a request holding an older view than the shard's neither reads
 * nor writes it. Every call is thread-safe.
 */
#ifndef SGBD_RECO_CACHE_H
#define SGBD_RECO_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/overlay.h"

struct sgbd_reco_cache;

struct sgbd_reco_key {
    struct sgbd_overlay_stamp stamp;
    uint64_t user_writes;           /* sgbd_overlay_user_writes */
    const char *user;               /* external id, user_len bytes */
    size_t user_len;
    uint32_t k;
};

struct sgbd_reco_cache_stats {
    uint64_t hits, misses;
    uint64_t entries;               /* held now */
    uint64_t bytes;                 /* held now, entry headers included */
    uint64_t max_bytes;
};

/*
 * A cache of at most max_bytes (0: *out = NULL, a disabled cache that
 * every call below accepts). Errors: -ENOMEM.
 */
int sgbd_reco_cache_new(struct sgbd_reco_cache **out, size_t max_bytes);
void sgbd_reco_cache_free(struct sgbd_reco_cache *c);

/*
 * The body cached for key: 0 and *body (malloc'd copy, len bytes, for the
 * caller to free), SGBD_E_NOTFOUND, or -ENOMEM.
 */
int sgbd_reco_cache_get(struct sgbd_reco_cache *c,
                        const struct sgbd_reco_key *key, char **body,
                        size_t *len);

/* Keep a copy of body for key. Silently skipped when it cannot be kept:
 * too large for a shard, out of memory, or a key older than the shard. */
void sgbd_reco_cache_put(struct sgbd_reco_cache *c,
                         const struct sgbd_reco_key *key, const char *body,
                         size_t len);

void sgbd_reco_cache_stats(struct sgbd_reco_cache *c,
                           struct sgbd_reco_cache_stats *out);

#endif
