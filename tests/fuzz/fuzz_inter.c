/*
 * fuzz_inter.c - the MMRec .inter reader (inter.h) and the dataset build
 * on top of it (dataset.h), on hostile text.
 *
 * The input is the file's text, exactly len bytes with no terminator (the
 * parser must not need one: libFuzzer's buffer ends where ASan can see).
 *
 * Invariants: an error leaves *out untouched and names "FILE:LINE:" in a
 * short one-line detail; a parse has one row per non-empty data line,
 * every label 0..2 and every id <= 2^31 - 1, and parses again to the same
 * rows from a canonical rewrite; sgbd_dataset_build fails exactly when
 * the contract says (no train rows, ids far from dense) and otherwise
 * gives U, I, train rows, sorted unique per-user sets (cold-start users
 * dropped from valid/test) and negatives that match the rows.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sgbd/dataset.h"
#include "sgbd/inter.h"

#define NAME "fuzz.inter"
#define MAX_ID 0x7fffffffu

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

/* Non-empty lines after the header (a lone "\r" is empty too). */
static size_t count_data_lines(const char *p, size_t len)
{
    const char *end = p + len;
    size_t n = 0;
    int header = 1;

    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t k = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (k > 0 && p[k - 1] == '\r')
            k--;
        if (!header && k > 0)
            n++;
        header = 0;
        p = nl ? nl + 1 : end;
    }
    return n;
}

/* The rows as a canonical file, parsed again: the same rows. */
static void check_rewrite(const struct sgbd_inter *r)
{
    size_t cap = 32 + r->n * 26, len;
    char *text = malloc(cap);
    struct sgbd_inter again;

    FUZZ_CHECK(text != NULL);
    len = (size_t)snprintf(text, cap, "itemID\tx_label\tuserID\n");
    for (size_t i = 0; i < r->n; i++)
        len += (size_t)snprintf(text + len, cap - len, "%u\t%u\t%u\r\n",
                                r->items[i], r->labels[i], r->users[i]);
    FUZZ_CHECK(len < cap);
    FUZZ_CHECK(sgbd_inter_parse(&again, text, len, "rewrite") == 0);
    FUZZ_CHECK(again.n == r->n);
    FUZZ_CHECK(r->n == 0 ||
               (memcmp(again.users, r->users, r->n * 4) == 0 &&
                memcmp(again.items, r->items, r->n * 4) == 0 &&
                memcmp(again.labels, r->labels, r->n) == 0));
    sgbd_inter_free(&again);
    free(text);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Distinct (user, item) pairs of the rows with this label whose user has
 * a train row (for train itself: all). */
static uint64_t distinct_pairs(const struct sgbd_inter *r, int label,
                               const uint8_t *has_train)
{
    uint64_t *keys = malloc((r->n ? r->n : 1) * sizeof(*keys));
    size_t k = 0;
    uint64_t distinct = 0;

    FUZZ_CHECK(keys != NULL);
    for (size_t i = 0; i < r->n; i++)
        if (r->labels[i] == label && has_train[r->users[i]])
            keys[k++] = (uint64_t)r->users[i] << 32 | r->items[i];
    qsort(keys, k, sizeof(*keys), cmp_u64);
    for (size_t i = 0; i < k; i++)
        distinct += i == 0 || keys[i] != keys[i - 1];
    free(keys);
    return distinct;
}

/* ptr monotonic from 0, items strictly ascending per user and < I, the
 * expected total, and every qualifying row present. */
static void check_set(const struct sgbd_dataset *ds,
                      const struct sgbd_itemsets *s,
                      const struct sgbd_inter *r, int label,
                      const uint8_t *has_train)
{
    FUZZ_CHECK(s->ptr != NULL && s->ptr[0] == 0);
    for (uint32_t u = 0; u < ds->n_users; u++) {
        FUZZ_CHECK(s->ptr[u] <= s->ptr[u + 1]);
        for (uint64_t j = s->ptr[u]; j < s->ptr[u + 1]; j++) {
            FUZZ_CHECK(s->items[j] < ds->n_items);
            FUZZ_CHECK(j == s->ptr[u] || s->items[j - 1] < s->items[j]);
        }
    }
    FUZZ_CHECK(s->ptr[ds->n_users] == distinct_pairs(r, label, has_train));
    for (size_t i = 0; i < r->n; i++)
        if (r->labels[i] == label && has_train[r->users[i]])
            FUZZ_CHECK(sgbd_itemsets_has(s, r->users[i], r->items[i]));
}

static void check_dataset(const struct sgbd_dataset *ds,
                          const struct sgbd_inter *r, uint32_t max_user,
                          uint32_t max_item)
{
    uint8_t *has_train = calloc(ds->n_users, 1);
    uint8_t *all = malloc(ds->n_users), *neg = calloc(ds->n_items, 1);
    size_t t = 0, n_neg = 0;

    FUZZ_CHECK(has_train && all && neg);
    FUZZ_CHECK(ds->n_users == max_user + 1 && ds->n_items == max_item + 1);
    memset(all, 1, ds->n_users);
    for (size_t i = 0; i < r->n; i++) {
        if (r->labels[i] != SGBD_SPLIT_TRAIN)
            continue;
        FUZZ_CHECK(t < ds->n_train);
        FUZZ_CHECK(ds->train_users[t] == r->users[i]);
        FUZZ_CHECK(ds->train_items[t] == r->items[i]);
        has_train[r->users[i]] = 1;
        n_neg += !neg[r->items[i]];
        neg[r->items[i]] = 1;
        t++;
    }
    FUZZ_CHECK(t == ds->n_train);
    check_set(ds, &ds->train, r, SGBD_SPLIT_TRAIN, all);
    check_set(ds, &ds->valid, r, SGBD_SPLIT_VALID, has_train);
    check_set(ds, &ds->test, r, SGBD_SPLIT_TEST, has_train);
    FUZZ_CHECK(ds->n_neg_items == n_neg);
    for (size_t j = 0; j < ds->n_neg_items; j++) {
        FUZZ_CHECK(ds->neg_items[j] < ds->n_items && neg[ds->neg_items[j]]);
        FUZZ_CHECK(j == 0 || ds->neg_items[j - 1] < ds->neg_items[j]);
    }
    free(neg);
    free(all);
    free(has_train);
}

/* Build fails exactly when the contract says; checks the result. */
static void build(const struct sgbd_inter *r)
{
    struct sgbd_dataset ds, sentinel;
    uint32_t max_user = 0, max_item = 0;
    size_t n_train = 0;
    int rc, must_fail;

    for (size_t i = 0; i < r->n; i++) {
        max_user = r->users[i] > max_user ? r->users[i] : max_user;
        max_item = r->items[i] > max_item ? r->items[i] : max_item;
        n_train += r->labels[i] == SGBD_SPLIT_TRAIN;
    }
    must_fail = n_train == 0 || max_user >= 4 * (uint64_t)r->n + 1024 ||
                max_item >= 4 * (uint64_t)r->n + 1024;

    memset(&ds, 0xa5, sizeof(ds));
    sentinel = ds;
    rc = sgbd_dataset_build(&ds, r);
    if (rc != 0) {
        FUZZ_CHECK(must_fail || rc == -ENOMEM);
        FUZZ_CHECK(rc == SGBD_E_FORMAT || rc == -ENOMEM);
        fuzz_check_detail(rc, NULL);
        FUZZ_CHECK(memcmp(&ds, &sentinel, sizeof(ds)) == 0);
        return;
    }
    FUZZ_CHECK(!must_fail);
    check_dataset(&ds, r, max_user, max_item);
    sgbd_dataset_free(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct sgbd_inter rows, sentinel;
    int rc;

    memset(&rows, 0xa5, sizeof(rows));
    sentinel = rows;
    rc = sgbd_inter_parse(&rows, text, size, NAME);
    if (rc != 0) {
        FUZZ_CHECK(rc == SGBD_E_FORMAT || rc == -ENOMEM);
        fuzz_check_detail(rc, NAME ":");
        FUZZ_CHECK(memcmp(&rows, &sentinel, sizeof(rows)) == 0);
        return 0;
    }
    FUZZ_CHECK(rows.n == count_data_lines(text, size));
    for (size_t i = 0; i < rows.n; i++)
        FUZZ_CHECK(rows.users[i] <= MAX_ID && rows.items[i] <= MAX_ID &&
                   rows.labels[i] <= SGBD_SPLIT_TEST);
    check_rewrite(&rows);
    build(&rows);
    sgbd_inter_free(&rows);
    return 0;
}
