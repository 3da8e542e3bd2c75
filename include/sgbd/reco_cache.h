/*
 * reco_cache.h - finished recommendation answers, kept for repeat requests.
 *
 * A storefront asks for the same user's recommendations, and the same
 * product's similar items, on every page view, and the answer only
 * changes when a write or a publication can change it. The cache keeps
 * each answer (its body and its ranked items) under the id it was asked
 * for and k, with the counters of the view it
 * was scored on (overlay.h: publications, item edits, the user's
 * interactions). A lookup misses unless the publication and the user's
 * interactions are the same; item edits since the answer are the caller's
 * to check (an edit changes a user's answer only when it touches one of
 * its items or scores above its last), and a checked answer is renewed to
 * the newer count. So an answer from the cache is the one scoring would
 * give, and catalogue edits retire only the answers they reach.
 *
 * Memory is bounded: the cache is split into shards, each with a share of
 * the byte budget, a table of 4-way sets and a clock hand that evicts
 * entries not read since it last passed. A shard that sees a newer
 * publication than its own frees everything first (those entries can
 * never hit again); a request holding an older one neither reads nor
 * writes it. The tables add about 1 % to the budget. Every call is
 * thread-safe.
 */
#ifndef SGBD_RECO_CACHE_H
#define SGBD_RECO_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct sgbd_reco_cache;

struct sgbd_reco_key {
    uint64_t publication;           /* the view's stamp.publications */
    uint64_t item_writes;           /* the view's stamp.item_writes */
    uint64_t user_writes;           /* sgbd_overlay_user_writes, or 0 */
    const char *user;               /* external id, user_len bytes */
    size_t user_len;
    uint32_t k;
    uint32_t space;                 /* what the id names (a user, an item
                                       for similar items): keys of two
                                       spaces never meet */
};

/* One answer: the response body and the items it ranks. */
struct sgbd_reco_answer {
    char *body;                     /* len bytes, then a NUL */
    size_t len;
    uint32_t *idx;                  /* (n) view indices, best first */
    float *score;                   /* (n) */
    size_t n;
    uint64_t item_writes;           /* of the view it was scored on */
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
 * The answer cached for key: same user, k, publication and user writes,
 * scored at item_writes <= key->item_writes. 0 and *out (a copy in one
 * block: free it with sgbd_reco_answer_free, or take out->body, which
 * free() releases with the rest), SGBD_E_NOTFOUND, or -ENOMEM. Counts a hit;
 * a caller that finds the answer overtaken by item edits calls
 * sgbd_reco_cache_overtaken, which counts it as a miss instead.
 */
int sgbd_reco_cache_get(struct sgbd_reco_cache *c,
                        const struct sgbd_reco_key *key,
                        struct sgbd_reco_answer *out);
void sgbd_reco_answer_free(struct sgbd_reco_answer *a);

/*
 * The answer got for key (scored at got->item_writes) still stands at
 * key->item_writes: later lookups need not check those edits again.
 */
void sgbd_reco_cache_renew(struct sgbd_reco_cache *c,
                           const struct sgbd_reco_key *key,
                           const struct sgbd_reco_answer *got);

/* The answer got was overtaken by item edits: a miss, not a hit. */
void sgbd_reco_cache_overtaken(struct sgbd_reco_cache *c,
                               const struct sgbd_reco_key *key);

/*
 * Keep a copy of a, scored on the view of key (a->item_writes is taken
 * from the key). Silently skipped when it cannot be kept: too large for
 * a shard, out of memory, or a publication older than the shard's.
 */
void sgbd_reco_cache_put(struct sgbd_reco_cache *c,
                         const struct sgbd_reco_key *key,
                         const struct sgbd_reco_answer *a);

void sgbd_reco_cache_stats(struct sgbd_reco_cache *c,
                           struct sgbd_reco_cache_stats *out);

#endif
