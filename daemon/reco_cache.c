/*
 * reco_cache.c - the answer cache of reco_cache.h.
 *
 * Layout: SHARDS shards, each a mutex, its publication, and a table of
 * n_sets sets of WAYS entry pointers. A key hashes to one shard (top
 * bits) and one set (low bits). Entries are malloc'd: header, ranked
 * items (indices, scores), user id, body. One clock per shard keeps
 * memory in bounds: when the shard's bytes would pass its budget, its
 * hand walks the table, clearing read marks and freeing entries not read
 * since it last passed them. A full set gives up its first unread entry
 * the same way.
 */
#include "sgbd/reco_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"

#define SHARD_BITS 6
#define SHARDS (1 << SHARD_BITS)    /* HTTP threads rarely meet on a lock */
#define WAYS 4
#define ENTRY_GUESS 1024            /* bytes of one k = 20 answer: sizes
                                       the tables from the budget */

struct entry {
    uint64_t hash;
    uint64_t user_writes, item_writes;
    uint32_t k, space, user_len, n;
    int read;                       /* since the hand last passed */
    size_t len;                     /* body bytes */
    uint32_t idx[];                 /* (n), then score (n), user id, body */
};

struct shard {
    pthread_mutex_t lock;
    uint64_t publication;
    struct entry **slot;            /* (n_sets * WAYS) */
    size_t hand;
    uint64_t bytes, entries, hits, misses;
};

struct sgbd_reco_cache {
    size_t n_sets;                  /* per shard, a power of two */
    uint64_t budget;                /* bytes per shard */
    uint64_t max_bytes;
    struct shard shard[SHARDS];
};

static uint64_t key_hash(const struct sgbd_reco_key *key)
{
    const unsigned char *p = (const unsigned char *)key->user;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a 64-bit finaliser
                                           so the top bits mix too */

    for (size_t i = 0; i < key->user_len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    h ^= ((uint64_t)key->space << 32 | key->k) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static float *entry_score(struct entry *e)
{
    return (float *)(e->idx + e->n);
}

static char *entry_user(struct entry *e)
{
    return (char *)(e->idx + 2 * (size_t)e->n);
}

static size_t entry_bytes(const struct entry *e)
{
    return sizeof(*e) + 8 * (size_t)e->n + e->user_len + e->len;
}

static void drop(struct shard *s, size_t at)
{
    struct entry *e = s->slot[at];

    if (!e)
        return;
    s->bytes -= entry_bytes(e);
    s->entries--;
    free(e);
    s->slot[at] = NULL;
}

static void shard_clear(struct sgbd_reco_cache *c, struct shard *s)
{
    for (size_t at = 0; at < c->n_sets * WAYS; at++)
        drop(s, at);
}

/* Lock the shard of key (*h: its hash) and bring it up to the key's
 * publication. Returns the shard, or NULL (nothing locked) when the
 * cache is off or the key's publication is older than the shard's. */
static struct shard *enter(struct sgbd_reco_cache *c,
                           const struct sgbd_reco_key *key, uint64_t *h)
{
    struct shard *s;

    if (!c)
        return NULL;
    *h = key_hash(key);
    s = &c->shard[*h >> (64 - SHARD_BITS)];

    pthread_mutex_lock(&s->lock);
    if (key->publication < s->publication) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    if (key->publication > s->publication) {
        shard_clear(c, s);
        s->publication = key->publication;
    }
    return s;
}

static int same_request(struct entry *e, uint64_t h,
                        const struct sgbd_reco_key *key)
{
    return e->hash == h && e->k == key->k && e->space == key->space &&
           e->user_len == key->user_len &&
           memcmp(entry_user(e), key->user, key->user_len) == 0;
}

/* The entry of key in s, or NULL; a stale one (the user wrote since) is
 * freed on the way, as it can never hit again. */
static struct entry *find(struct sgbd_reco_cache *c, struct shard *s,
                          const struct sgbd_reco_key *key, uint64_t h)
{
    size_t set = (h & (c->n_sets - 1)) * WAYS;

    for (size_t w = 0; w < WAYS; w++) {
        struct entry *e = s->slot[set + w];

        if (!e || !same_request(e, h, key))
            continue;
        if (e->user_writes != key->user_writes) {
            drop(s, set + w);
            return NULL;
        }
        return e;
    }
    return NULL;
}

int sgbd_reco_cache_get(struct sgbd_reco_cache *c,
                        const struct sgbd_reco_key *key,
                        struct sgbd_reco_answer *out)
{
    uint64_t h;
    struct shard *s;
    struct entry *e;
    int rc = SGBD_E_NOTFOUND;

    memset(out, 0, sizeof(*out));
    if (!(s = enter(c, key, &h)))
        return SGBD_E_NOTFOUND;
    e = find(c, s, key, h);
    if (e && e->item_writes <= key->item_writes) {
        /* One block, the body first so that it can be freed (or handed
         * on as a response) by itself: body, NUL, padding, idx, score. */
        size_t at = (e->len + 1 + 3) & ~(size_t)3;
        char *block = malloc(at + 8 * (size_t)e->n);

        rc = -ENOMEM;
        if (block) {
            memcpy(block, entry_user(e) + e->user_len, e->len);
            block[e->len] = '\0';
            memcpy(block + at, e->idx, 8 * (size_t)e->n);
            out->body = block;
            out->len = e->len;
            out->idx = (uint32_t *)(block + at);
            out->score = (float *)(block + at) + e->n;
            out->n = e->n;
            out->item_writes = e->item_writes;
            e->read = 1;
            rc = 0;
        }
    }
    if (rc == 0)
        s->hits++;
    else
        s->misses++;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void sgbd_reco_answer_free(struct sgbd_reco_answer *a)
{
    free(a->body);                  /* the one block get made */
    memset(a, 0, sizeof(*a));
}

void sgbd_reco_cache_renew(struct sgbd_reco_cache *c,
                           const struct sgbd_reco_key *key,
                           const struct sgbd_reco_answer *got)
{
    uint64_t h;
    struct shard *s;
    struct entry *e;

    if (!(s = enter(c, key, &h)))
        return;
    e = find(c, s, key, h);
    if (e && e->item_writes == got->item_writes &&
        key->item_writes > e->item_writes)
        e->item_writes = key->item_writes;
    pthread_mutex_unlock(&s->lock);
}

void sgbd_reco_cache_overtaken(struct sgbd_reco_cache *c,
                               const struct sgbd_reco_key *key)
{
    uint64_t h;
    struct shard *s;

    if (!(s = enter(c, key, &h)))
        return;
    if (s->hits > 0)
        s->hits--;
    s->misses++;
    pthread_mutex_unlock(&s->lock);
}

/*
 * The way of set for key: its old entry, else a free way, else the first
 * entry not read since the hand last passed it, else the first. Only the
 * hand clears read marks, so an entry read between two of its turns
 * stays however its set fills.
 */
static size_t victim(struct shard *s, size_t set, uint64_t h,
                     const struct sgbd_reco_key *key)
{
    size_t free_way = WAYS, w;

    for (w = 0; w < WAYS; w++) {
        struct entry *e = s->slot[set + w];

        if (e && same_request(e, h, key))
            return w;
        if (!e && free_way == WAYS)
            free_way = w;
    }
    if (free_way < WAYS)
        return free_way;
    for (w = 0; w < WAYS && s->slot[set + w]->read; w++)
        ;
    return w < WAYS ? w : 0;
}

/* Free entries the hand finds unread until need more bytes fit. */
static void make_room(struct sgbd_reco_cache *c, struct shard *s,
                      size_t need)
{
    size_t n = c->n_sets * WAYS;

    /* Two turns: the first clears every read mark, the second frees. */
    for (size_t step = 0; step < 2 * n && s->bytes + need > c->budget;
         step++) {
        struct entry *e = s->slot[s->hand];

        if (e && e->read)
            e->read = 0;
        else if (e)
            drop(s, s->hand);
        s->hand = (s->hand + 1) & (n - 1);
    }
}

void sgbd_reco_cache_put(struct sgbd_reco_cache *c,
                         const struct sgbd_reco_key *key,
                         const struct sgbd_reco_answer *a)
{
    size_t need, at;
    struct entry *e;
    struct shard *s;
    uint64_t h;

    if (!c || key->user_len > UINT32_MAX || a->n > UINT32_MAX)
        return;
    need = sizeof(struct entry) + 8 * a->n + key->user_len + a->len;
    if (need > c->budget || !(s = enter(c, key, &h)))
        return;
    at = (h & (c->n_sets - 1)) * WAYS;
    at += victim(s, at, h, key);
    drop(s, at);
    make_room(c, s, need);
    e = malloc(need);
    if (e) {
        e->hash = h;
        e->user_writes = key->user_writes;
        e->item_writes = key->item_writes;
        e->k = key->k;
        e->space = key->space;
        e->user_len = (uint32_t)key->user_len;
        e->n = (uint32_t)a->n;
        e->read = 0;
        e->len = a->len;
        memcpy(e->idx, a->idx, 4 * a->n);
        memcpy(entry_score(e), a->score, 4 * a->n);
        memcpy(entry_user(e), key->user, key->user_len);
        memcpy(entry_user(e) + key->user_len, a->body, a->len);
        s->slot[at] = e;
        s->bytes += need;
        s->entries++;
    }
    pthread_mutex_unlock(&s->lock);
}

int sgbd_reco_cache_new(struct sgbd_reco_cache **out, size_t max_bytes)
{
    struct sgbd_reco_cache *c;
    size_t sets = 1;
    int k;

    *out = NULL;
    if (max_bytes == 0)
        return 0;
    if (!(c = calloc(1, sizeof(*c))))
        return -ENOMEM;
    c->max_bytes = max_bytes;
    c->budget = max_bytes / SHARDS;
    while (sets * WAYS * ENTRY_GUESS < c->budget)
        sets *= 2;
    c->n_sets = sets;
    for (k = 0; k < SHARDS; k++) {
        c->shard[k].slot = calloc(sets * WAYS, sizeof(struct entry *));
        if (!c->shard[k].slot ||
            pthread_mutex_init(&c->shard[k].lock, NULL) != 0) {
            free(c->shard[k].slot);
            break;
        }
    }
    if (k < SHARDS) {
        while (k-- > 0) {
            pthread_mutex_destroy(&c->shard[k].lock);
            free(c->shard[k].slot);
        }
        free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

void sgbd_reco_cache_free(struct sgbd_reco_cache *c)
{
    if (!c)
        return;
    for (int k = 0; k < SHARDS; k++) {
        shard_clear(c, &c->shard[k]);
        pthread_mutex_destroy(&c->shard[k].lock);
        free(c->shard[k].slot);
    }
    free(c);
}

void sgbd_reco_cache_stats(struct sgbd_reco_cache *c,
                           struct sgbd_reco_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    out->max_bytes = c->max_bytes;
    for (int k = 0; k < SHARDS; k++) {
        struct shard *s = &c->shard[k];

        pthread_mutex_lock(&s->lock);
        out->hits += s->hits;
        out->misses += s->misses;
        out->entries += s->entries;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->lock);
    }
}
