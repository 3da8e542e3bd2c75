/* test_reco_cache.c - the answer cache: keys, stamps, memory, threads. */
/* ctest: labels=unit,concurrency timeout=120 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/reco_cache.h"

/* A key for user u at k under stamp (pub, items), user writes w. */
static struct sgbd_reco_key key_of(char *buf, size_t n, int u, uint32_t k,
                                   uint64_t pub, uint64_t items, uint64_t w)
{
    struct sgbd_reco_key key;

    snprintf(buf, n, "u%d", u);
    key.stamp = (struct sgbd_overlay_stamp){pub, items};
    key.user_writes = w;
    key.user = buf;
    key.user_len = strlen(buf);
    key.k = k;
    return key;
}

/* The body an answer for that key would have: it names every part. */
static size_t body_of(char *buf, size_t n, const struct sgbd_reco_key *key,
                      size_t pad)
{
    int len = snprintf(buf, n, "{\"user_id\":\"%.*s\",\"k\":%u,\"p\":%llu,"
                       "\"i\":%llu,\"w\":%llu,\"pad\":\"",
                       (int)key->user_len, key->user, key->k,
                       (unsigned long long)key->stamp.publications,
                       (unsigned long long)key->stamp.item_writes,
                       (unsigned long long)key->user_writes);
    while (pad-- > 0 && (size_t)len + 3 < n)
        buf[len++] = 'x';
    buf[len++] = '"';
    buf[len++] = '}';
    buf[len] = '\0';
    return (size_t)len;
}

/* get must give exactly want (wn bytes). */
static int hit_is(struct sgbd_reco_cache *c, const struct sgbd_reco_key *key,
                  const char *want, size_t wn)
{
    char *body = NULL;
    size_t len = 0;
    int ok;

    if (sgbd_reco_cache_get(c, key, &body, &len) != 0)
        return 0;
    ok = len == wn && memcmp(body, want, wn) == 0 && body[len] == '\0';
    free(body);
    return ok;
}

static int misses(struct sgbd_reco_cache *c, const struct sgbd_reco_key *key)
{
    char *body = NULL;
    size_t len;
    int rc = sgbd_reco_cache_get(c, key, &body, &len);

    free(body);
    return rc == SGBD_E_NOTFOUND;
}

static void test_reco_cache_disabled_keeps_nothing(void)
{
    struct sgbd_reco_cache *c = (struct sgbd_reco_cache *)1;
    struct sgbd_reco_cache_stats st;
    char id[16], body[256];
    struct sgbd_reco_key key = key_of(id, sizeof(id), 1, 20, 1, 0, 0);
    size_t n = body_of(body, sizeof(body), &key, 0);

    CHECK_INT(sgbd_reco_cache_new(&c, 0), 0);
    CHECK(c == NULL);
    sgbd_reco_cache_put(c, &key, body, n);
    CHECK(misses(c, &key));
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.max_bytes, 0);
    CHECK_INT(st.hits + st.misses + st.entries + st.bytes, 0);
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_hit_needs_every_part_of_the_key(void)
{
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16], id2[16], body[256];
    struct sgbd_reco_key key = key_of(id, sizeof(id), 7, 20, 3, 5, 2), other;
    size_t n = body_of(body, sizeof(body), &key, 10);

    CHECK_INT(sgbd_reco_cache_new(&c, 1 << 20), 0);
    CHECK(misses(c, &key));
    sgbd_reco_cache_put(c, &key, body, n);
    CHECK(hit_is(c, &key, body, n));
    CHECK(hit_is(c, &key, body, n));

    other = key_of(id2, sizeof(id2), 7, 10, 3, 5, 2);   /* another k */
    CHECK(misses(c, &other));
    other = key_of(id2, sizeof(id2), 70, 20, 3, 5, 2);  /* another user */
    CHECK(misses(c, &other));
    other = key_of(id2, sizeof(id2), 7, 20, 3, 5, 2);
    other.user_len = 1;                                 /* a prefix: "u" */
    CHECK(misses(c, &other));
    CHECK(hit_is(c, &key, body, n));                    /* still there */

    other = key_of(id2, sizeof(id2), 7, 20, 3, 5, 3);   /* the user wrote */
    CHECK(misses(c, &other));
    CHECK(misses(c, &key));     /* and the old answer is gone for good */
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.entries, 0);
    CHECK_INT(st.bytes, 0);
    CHECK_INT(st.hits, 3);
    CHECK_INT(st.misses, 6);
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_newer_stamp_retires_older_answers(void)
{
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16], body[256];
    struct sgbd_reco_key key;
    size_t n;

    CHECK_INT(sgbd_reco_cache_new(&c, 16 << 20), 0);
    for (int u = 0; u < 2000; u++) {
        key = key_of(id, sizeof(id), u, 20, 2, 9, 0);
        n = body_of(body, sizeof(body), &key, 0);
        sgbd_reco_cache_put(c, &key, body, n);
    }
    sgbd_reco_cache_stats(c, &st);
    CHECK(st.entries > 1900);       /* a few lost to full sets at most */

    /* One item edit later (9 -> 10), every shard a request reaches is
     * emptied; 2000 users reach all of them. */
    for (int u = 0; u < 2000; u++) {
        key = key_of(id, sizeof(id), u, 20, 2, 10, 0);
        CHECK(misses(c, &key));
    }
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.entries, 0);
    CHECK_INT(st.bytes, 0);

    /* A request still holding the older view neither reads nor writes. */
    key = key_of(id, sizeof(id), 1, 20, 2, 9, 0);
    n = body_of(body, sizeof(body), &key, 0);
    sgbd_reco_cache_put(c, &key, body, n);
    CHECK(misses(c, &key));
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.entries, 0);

    /* A publication outranks any count of item edits, as a rollback
     * (a lower model version, but a later publication) must. */
    key = key_of(id, sizeof(id), 1, 20, 3, 0, 0);
    n = body_of(body, sizeof(body), &key, 0);
    sgbd_reco_cache_put(c, &key, body, n);
    CHECK(hit_is(c, &key, body, n));
    key = key_of(id, sizeof(id), 1, 20, 2, 10, 0);
    CHECK(misses(c, &key));
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_stays_within_its_bytes(void)
{
    const size_t max = 4 << 20;     /* 64 KiB and 64 entries a shard */
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16], body[70000];
    struct sgbd_reco_key key;
    size_t n;
    int hot_hits = 0, hot_reads = 0;

    CHECK_INT(sgbd_reco_cache_new(&c, max), 0);
    /* Larger than a shard's share: never kept. */
    key = key_of(id, sizeof(id), 1, 20, 1, 0, 0);
    n = body_of(body, sizeof(body), &key, 66000);
    sgbd_reco_cache_put(c, &key, body, n);
    CHECK(misses(c, &key));

    /* 8 users read after every write stay while 20,000 others of 2-3 KB
     * (the entries alone would fill 2.5 times the budget) cycle through. */
    for (int u = 0; u < 8; u++) {
        key = key_of(id, sizeof(id), u, 20, 1, 0, 0);
        n = body_of(body, sizeof(body), &key, 400);
        sgbd_reco_cache_put(c, &key, body, n);
    }
    for (int u = 100; u < 20100; u++) {
        key = key_of(id, sizeof(id), u, 20, 1, 0, 0);
        n = body_of(body, sizeof(body), &key, 2000 + u % 1000);
        sgbd_reco_cache_put(c, &key, body, n);
        sgbd_reco_cache_stats(c, &st);
        CHECK(st.bytes <= max);
        for (int h = 0; h < 8; h++) {
            key = key_of(id, sizeof(id), h, 20, 1, 0, 0);
            n = body_of(body, sizeof(body), &key, 400);
            hot_hits += hit_is(c, &key, body, n);
            hot_reads++;
        }
    }
    sgbd_reco_cache_stats(c, &st);
    CHECK(st.bytes > max / 2);      /* the budget is used, not wasted */
    CHECK_INT(hot_hits, hot_reads);
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_similar_ids_never_mix(void)
{
    struct sgbd_reco_cache *c;
    char id[16], body[256];
    struct sgbd_reco_key key;
    size_t n;
    int hits = 0;

    CHECK_INT(sgbd_reco_cache_new(&c, 64 << 20), 0);
    for (int u = 0; u < 20000; u++) {
        key = key_of(id, sizeof(id), u, (uint32_t)(1 + u % 3), 1, 0, 0);
        n = body_of(body, sizeof(body), &key, 0);
        sgbd_reco_cache_put(c, &key, body, n);
    }
    for (int u = 0; u < 20000; u++) {
        char *got = NULL;
        size_t len;

        key = key_of(id, sizeof(id), u, (uint32_t)(1 + u % 3), 1, 0, 0);
        n = body_of(body, sizeof(body), &key, 0);
        if (sgbd_reco_cache_get(c, &key, &got, &len) == 0) {
            hits++;
            CHECK(len == n && memcmp(got, body, n) == 0);
        }
        free(got);
    }
    CHECK(hits > 19000);            /* 64 MiB holds them all, sets allowing */
    sgbd_reco_cache_free(c);
}

/* ---- threads ---- */

#define T_USERS 300

struct worker {
    struct sgbd_reco_cache *c;
    unsigned seed;
    int publisher;                  /* moves the stamp forward */
    int wrong, hits;
};

static atomic_int stamp_now;        /* moved by the publisher only */

static void *work(void *arg)
{
    struct worker *w = arg;
    char id[16], body[1024];

    for (int r = 0; r < 40000; r++) {
        int u = (int)(rand_r(&w->seed) % T_USERS);
        uint64_t pub = (uint64_t)atomic_load(&stamp_now);
        struct sgbd_reco_key key = key_of(id, sizeof(id), u, 20, pub, 0,
                                          (uint64_t)(u % 3));
        size_t n = body_of(body, sizeof(body), &key, (size_t)(u % 200));
        char *got = NULL;
        size_t len;

        if (w->publisher && r % 5000 == 4999)
            atomic_store(&stamp_now, (int)pub + 1);
        if (sgbd_reco_cache_get(w->c, &key, &got, &len) == 0) {
            w->hits++;
            w->wrong += len != n || memcmp(got, body, n) != 0;
            free(got);
        } else {
            sgbd_reco_cache_put(w->c, &key, body, n);
        }
    }
    return NULL;
}

static void test_reco_cache_threads_see_only_their_keys(void)
{
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    struct worker w[4];
    pthread_t th[4];
    int hits = 0;

    CHECK_INT(sgbd_reco_cache_new(&c, 8 << 20), 0);
    for (int t = 0; t < 4; t++) {
        w[t] = (struct worker){c, 11u + (unsigned)t, t == 0, 0, 0};
        CHECK_INT(pthread_create(&th[t], NULL, work, &w[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CHECK_INT(w[t].wrong, 0);
        hits += w[t].hits;
    }
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.hits, hits);
    CHECK(st.hits > 100000);
    CHECK(st.bytes <= st.max_bytes);
    sgbd_reco_cache_free(c);
}

int main(void)
{
    RUN(test_reco_cache_disabled_keeps_nothing);
    RUN(test_reco_cache_hit_needs_every_part_of_the_key);
    RUN(test_reco_cache_newer_stamp_retires_older_answers);
    RUN(test_reco_cache_stays_within_its_bytes);
    RUN(test_reco_cache_similar_ids_never_mix);
    RUN(test_reco_cache_threads_see_only_their_keys);
    return harness_finish();
}
