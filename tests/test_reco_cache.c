/* test_reco_cache.c - the answer cache: keys, counters, memory, threads. */
/* ctest: labels=unit,concurrency timeout=120 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/reco_cache.h"

/* A key for user u at k on a view (publication pub, item edits items),
 * the user having written w times. */
static struct sgbd_reco_key key_of(char *buf, size_t n, int u, uint32_t k,
                                   uint64_t pub, uint64_t items, uint64_t w)
{
    struct sgbd_reco_key key;

    snprintf(buf, n, "u%d", u);
    key.publication = pub;
    key.item_writes = items;
    key.user_writes = w;
    key.user = buf;
    key.user_len = strlen(buf);
    key.k = k;
    key.space = 0;
    return key;
}

/* An answer naming every part of its key in its body, with pad bytes
 * more, and three ranked items derived from it. */
struct answer_buf {
    char body[70000];
    uint32_t idx[3];
    float score[3];
    struct sgbd_reco_answer a;
};

static const struct sgbd_reco_answer *answer_of(struct answer_buf *b,
                                                const struct sgbd_reco_key *key,
                                                size_t pad)
{
    int len = snprintf(b->body, sizeof(b->body),
                       "{\"user_id\":\"%.*s\",\"k\":%u,\"p\":%llu,"
                       "\"i\":%llu,\"w\":%llu,\"pad\":\"",
                       (int)key->user_len, key->user, key->k,
                       (unsigned long long)key->publication,
                       (unsigned long long)key->item_writes,
                       (unsigned long long)key->user_writes);

    while (pad-- > 0 && (size_t)len + 3 < sizeof(b->body))
        b->body[len++] = 'x';
    b->body[len++] = '"';
    b->body[len++] = '}';
    b->body[len] = '\0';
    for (int j = 0; j < 3; j++) {
        b->idx[j] = (uint32_t)(key->user_len * 7 + key->k + (size_t)j);
        b->score[j] = 1.0f / (float)(j + 1) + (float)key->k;
    }
    b->a = (struct sgbd_reco_answer){b->body, (size_t)len, b->idx, b->score,
                                     3, 0};
    return &b->a;
}

/* get must give exactly want, scored at item_writes at. */
static int hit_is(struct sgbd_reco_cache *c, const struct sgbd_reco_key *key,
                  const struct sgbd_reco_answer *want, uint64_t at)
{
    struct sgbd_reco_answer got;
    int ok;

    if (sgbd_reco_cache_get(c, key, &got) != 0)
        return 0;
    ok = got.len == want->len &&
         memcmp(got.body, want->body, want->len) == 0 &&
         got.body[got.len] == '\0' && got.n == want->n &&
         memcmp(got.idx, want->idx, 4 * want->n) == 0 &&
         memcmp(got.score, want->score, 4 * want->n) == 0 &&
         got.item_writes == at;
    sgbd_reco_answer_free(&got);
    return ok;
}

static int misses(struct sgbd_reco_cache *c, const struct sgbd_reco_key *key)
{
    struct sgbd_reco_answer got;
    int rc = sgbd_reco_cache_get(c, key, &got);

    sgbd_reco_answer_free(&got);
    return rc == SGBD_E_NOTFOUND;
}

static struct answer_buf B, B2;

static void test_reco_cache_disabled_keeps_nothing(void)
{
    struct sgbd_reco_cache *c = (struct sgbd_reco_cache *)1;
    struct sgbd_reco_cache_stats st;
    char id[16];
    struct sgbd_reco_key key = key_of(id, sizeof(id), 1, 20, 1, 0, 0);

    CHECK_INT(sgbd_reco_cache_new(&c, 0), 0);
    CHECK(c == NULL);
    sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 0));
    CHECK(misses(c, &key));
    sgbd_reco_cache_renew(c, &key, &B.a);
    sgbd_reco_cache_overtaken(c, &key);
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.max_bytes, 0);
    CHECK_INT(st.hits + st.misses + st.entries + st.bytes, 0);
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_hit_needs_every_part_of_the_key(void)
{
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16], id2[16];
    struct sgbd_reco_key key = key_of(id, sizeof(id), 7, 20, 3, 5, 2), other;
    const struct sgbd_reco_answer *a = answer_of(&B, &key, 10);

    CHECK_INT(sgbd_reco_cache_new(&c, 1 << 20), 0);
    CHECK(misses(c, &key));
    sgbd_reco_cache_put(c, &key, a);
    CHECK(hit_is(c, &key, a, 5));
    CHECK(hit_is(c, &key, a, 5));

    other = key_of(id2, sizeof(id2), 7, 10, 3, 5, 2);   /* another k */
    CHECK(misses(c, &other));
    other = key_of(id2, sizeof(id2), 70, 20, 3, 5, 2);  /* another user */
    CHECK(misses(c, &other));
    other = key_of(id2, sizeof(id2), 7, 20, 3, 5, 2);
    other.user_len = 1;                                 /* a prefix: "u" */
    CHECK(misses(c, &other));
    other = key_of(id2, sizeof(id2), 7, 20, 3, 5, 2);
    other.space = 1;                        /* an item of the same name */
    CHECK(misses(c, &other));
    other = key_of(id2, sizeof(id2), 7, 20, 3, 4, 2);   /* an older view */
    CHECK(misses(c, &other));
    CHECK(hit_is(c, &key, a, 5));                       /* still there */

    other = key_of(id2, sizeof(id2), 7, 20, 3, 5, 3);   /* the user wrote */
    CHECK(misses(c, &other));
    CHECK(misses(c, &key));     /* and the old answer is gone for good */
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.entries, 0);
    CHECK_INT(st.bytes, 0);
    CHECK_INT(st.hits, 3);
    CHECK_INT(st.misses, 8);
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_item_edits_are_the_callers_to_check(void)
{
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16];
    struct sgbd_reco_key at5 = key_of(id, sizeof(id), 1, 20, 1, 5, 0), at9;
    const struct sgbd_reco_answer *a = answer_of(&B, &at5, 0);

    CHECK_INT(sgbd_reco_cache_new(&c, 1 << 20), 0);
    sgbd_reco_cache_put(c, &at5, a);
    /* A view four item edits later gets the answer, with its count. */
    at9 = at5;
    at9.item_writes = 9;
    CHECK(hit_is(c, &at9, a, 5));
    /* The caller checked those edits: the answer now counts from 9. */
    sgbd_reco_cache_renew(c, &at9, &(struct sgbd_reco_answer){
                                        .item_writes = 5});
    CHECK(hit_is(c, &at9, a, 9));
    CHECK(misses(c, &at5));     /* older than the answer now */
    /* A renewal from a count the entry no longer has changes nothing. */
    at5.item_writes = 12;
    sgbd_reco_cache_renew(c, &at5, &(struct sgbd_reco_answer){
                                        .item_writes = 5});
    CHECK(hit_is(c, &at9, a, 9));
    /* An overtaken answer is counted as a miss. */
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.hits, 3);
    sgbd_reco_cache_overtaken(c, &at9);
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.hits, 2);
    CHECK_INT(st.misses, 2);
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_new_publication_retires_older_answers(void)
{
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16];
    struct sgbd_reco_key key;

    CHECK_INT(sgbd_reco_cache_new(&c, 16 << 20), 0);
    for (int u = 0; u < 2000; u++) {
        key = key_of(id, sizeof(id), u, 20, 2, 9, 0);
        sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 0));
    }
    sgbd_reco_cache_stats(c, &st);
    CHECK(st.entries > 1900);       /* a few lost to full sets at most */

    /* One publication later, every shard a request reaches is emptied;
     * 2000 users reach all of them. */
    for (int u = 0; u < 2000; u++) {
        key = key_of(id, sizeof(id), u, 20, 3, 0, 0);
        CHECK(misses(c, &key));
    }
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.entries, 0);
    CHECK_INT(st.bytes, 0);

    /* A request still holding the older view neither reads nor writes:
     * its item count is no help, publications are compared first (a
     * rollback is a later publication of a lower model version). */
    key = key_of(id, sizeof(id), 1, 20, 2, 99, 0);
    sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 0));
    CHECK(misses(c, &key));
    sgbd_reco_cache_stats(c, &st);
    CHECK_INT(st.entries, 0);
    key = key_of(id, sizeof(id), 1, 20, 3, 0, 0);
    sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 0));
    CHECK(hit_is(c, &key, &B.a, 0));
    sgbd_reco_cache_free(c);
}

static void test_reco_cache_stays_within_its_bytes(void)
{
    const size_t max = 4 << 20;     /* 64 KiB and 64 entries a shard */
    struct sgbd_reco_cache *c;
    struct sgbd_reco_cache_stats st;
    char id[16];
    struct sgbd_reco_key key;
    int hot_hits = 0, hot_reads = 0;

    CHECK_INT(sgbd_reco_cache_new(&c, max), 0);
    /* Larger than a shard's share: never kept. */
    key = key_of(id, sizeof(id), 1, 20, 1, 0, 0);
    sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 66000));
    CHECK(misses(c, &key));

    /* 8 users read after every write stay while 20,000 others of 2-3 KB
     * (the entries alone would fill 2.5 times the budget) cycle through. */
    for (int u = 0; u < 8; u++) {
        key = key_of(id, sizeof(id), u, 20, 1, 0, 0);
        sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 400));
    }
    for (int u = 100; u < 20100; u++) {
        key = key_of(id, sizeof(id), u, 20, 1, 0, 0);
        sgbd_reco_cache_put(c, &key,
                            answer_of(&B, &key, 2000 + (size_t)u % 1000));
        sgbd_reco_cache_stats(c, &st);
        CHECK(st.bytes <= max);
        for (int h = 0; h < 8; h++) {
            key = key_of(id, sizeof(id), h, 20, 1, 0, 0);
            hot_hits += hit_is(c, &key, answer_of(&B2, &key, 400), 0);
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
    char id[16];
    struct sgbd_reco_key key;
    int hits = 0;

    CHECK_INT(sgbd_reco_cache_new(&c, 64 << 20), 0);
    for (int u = 0; u < 20000; u++) {
        key = key_of(id, sizeof(id), u, (uint32_t)(1 + u % 3), 1, 0, 0);
        sgbd_reco_cache_put(c, &key, answer_of(&B, &key, 0));
    }
    for (int u = 0; u < 20000; u++) {
        key = key_of(id, sizeof(id), u, (uint32_t)(1 + u % 3), 1, 0, 0);
        answer_of(&B, &key, 0);
        if (misses(c, &key))
            continue;
        CHECK(hit_is(c, &key, &B.a, 0));
        hits++;
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
    struct answer_buf *b = malloc(sizeof(*b));
    char id[16];

    for (int r = 0; b && r < 40000; r++) {
        int u = (int)(rand_r(&w->seed) % T_USERS);
        uint64_t pub = (uint64_t)atomic_load(&stamp_now);
        struct sgbd_reco_key key = key_of(id, sizeof(id), u, 20, pub, 0,
                                          (uint64_t)(u % 3));
        const struct sgbd_reco_answer *want =
            answer_of(b, &key, (size_t)(u % 200));
        struct sgbd_reco_answer got;

        if (w->publisher && r % 5000 == 4999)
            atomic_store(&stamp_now, (int)pub + 1);
        if (sgbd_reco_cache_get(w->c, &key, &got) == 0) {
            w->hits++;
            w->wrong += got.len != want->len ||
                        memcmp(got.body, want->body, want->len) != 0 ||
                        got.n != 3 || memcmp(got.idx, want->idx, 12) != 0;
            sgbd_reco_answer_free(&got);
        } else {
            sgbd_reco_cache_put(w->c, &key, want);
        }
    }
    w->wrong += b == NULL;
    free(b);
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
    RUN(test_reco_cache_item_edits_are_the_callers_to_check);
    RUN(test_reco_cache_new_publication_retires_older_answers);
    RUN(test_reco_cache_stays_within_its_bytes);
    RUN(test_reco_cache_similar_ids_never_mix);
    RUN(test_reco_cache_threads_see_only_their_keys);
    return harness_finish();
}
