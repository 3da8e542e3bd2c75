/*
 * dataset.c - train/valid/test splits from .inter rows, exactly as MMRec's
 * loader builds them (algorithms.md 2.1 and 3.1), and the feature
 * channels of an MMRec folder (algorithms.md 2.2).
 */
#include "sgbd/dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/bulkio.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/log.h"
#include "sgbd/npy.h"
#include "sgbd/rng.h"

#define FEAT_SUFFIX "_feat.npy"
#define PATH_BYTES 4096

int sgbd_itemsets_has(const struct sgbd_itemsets *s, uint32_t u, uint32_t i)
{
    uint64_t lo = s->ptr[u], hi = s->ptr[u + 1];

    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (s->items[mid] < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->ptr[u + 1] && s->items[lo] == i;
}

static void itemsets_free(struct sgbd_itemsets *s)
{
    free(s->ptr);
    free(s->items);
    s->ptr = NULL;
    s->items = NULL;
}

void sgbd_dataset_free(struct sgbd_dataset *ds)
{
    if (!ds)
        return;
    free(ds->train_users);
    free(ds->train_items);
    itemsets_free(&ds->train);
    itemsets_free(&ds->valid);
    itemsets_free(&ds->test);
    free(ds->neg_items);
    memset(ds, 0, sizeof(*ds));
}

void sgbd_features_free(struct sgbd_features *f)
{
    if (!f)
        return;
    for (int c = 0; c < f->n; c++)
        free(f->ch[c].m.data);
    memset(f, 0, sizeof(*f));
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

void sgbd_itemsets_sort_unique(struct sgbd_itemsets *s, uint32_t n_users)
{
    uint64_t w = 0, begin = 0;

    for (uint32_t u = 0; u < n_users; u++) {
        uint64_t end = s->ptr[u + 1];

        qsort(s->items + begin, (size_t)(end - begin), sizeof(uint32_t),
              cmp_u32);
        s->ptr[u] = w;
        for (uint64_t k = begin; k < end; k++)
            if (w == s->ptr[u] || s->items[w - 1] != s->items[k])
                s->items[w++] = s->items[k];
        begin = end;
    }
    s->ptr[n_users] = w;
}

/* Per-user sets of the rows with label; keep (U) drops users with 0 when
 * not NULL (the cold-start filter). Counting sort by user, then unique. */
static int build_itemsets(struct sgbd_itemsets *s, uint32_t n_users,
                          const struct sgbd_inter *rows, int label,
                          const uint8_t *keep)
{
    uint64_t *fill = NULL;

    s->ptr = calloc((size_t)n_users + 1, sizeof(*s->ptr));
    if (!s->ptr)
        return -ENOMEM;
    for (size_t r = 0; r < rows->n; r++)
        if (rows->labels[r] == label && (!keep || keep[rows->users[r]]))
            s->ptr[rows->users[r] + 1]++;
    for (uint32_t u = 0; u < n_users; u++)
        s->ptr[u + 1] += s->ptr[u];
    s->items = malloc((size_t)(s->ptr[n_users] ? s->ptr[n_users] : 1) *
                      sizeof(*s->items));
    fill = malloc(((size_t)n_users + 1) * sizeof(*fill));
    if (!s->items || !fill) {
        free(fill);
        itemsets_free(s);
        return -ENOMEM;
    }
    memcpy(fill, s->ptr, ((size_t)n_users + 1) * sizeof(*fill));
    for (size_t r = 0; r < rows->n; r++)
        if (rows->labels[r] == label && (!keep || keep[rows->users[r]]))
            s->items[fill[rows->users[r]]++] = rows->items[r];
    free(fill);
    sgbd_itemsets_sort_unique(s, n_users);
    return 0;
}

/* Train rows in file order, duplicates kept; marks users that have one. */
static int copy_train(struct sgbd_dataset *d, const struct sgbd_inter *rows,
                      uint8_t *has_train)
{
    size_t k = 0;

    d->train_users = malloc(d->n_train * sizeof(uint32_t));
    d->train_items = malloc(d->n_train * sizeof(uint32_t));
    if (!d->train_users || !d->train_items)
        return -ENOMEM;
    for (size_t r = 0; r < rows->n; r++) {
        if (rows->labels[r] != SGBD_SPLIT_TRAIN)
            continue;
        d->train_users[k] = rows->users[r];
        d->train_items[k++] = rows->items[r];
        has_train[rows->users[r]] = 1;
    }
    return 0;
}

/* Distinct items of the train split, ascending (MMRec's negative pool). */
static int collect_negatives(struct sgbd_dataset *d)
{
    uint8_t *seen = calloc(d->n_items ? d->n_items : 1, 1);
    size_t n = 0;

    if (!seen)
        return -ENOMEM;
    for (size_t r = 0; r < d->n_train; r++)
        seen[d->train_items[r]] = 1;
    for (uint32_t i = 0; i < d->n_items; i++)
        n += seen[i];
    d->neg_items = malloc((n ? n : 1) * sizeof(uint32_t));
    if (!d->neg_items) {
        free(seen);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < d->n_items; i++)
        if (seen[i])
            d->neg_items[d->n_neg_items++] = i;
    free(seen);
    return 0;
}

static int build_parts(struct sgbd_dataset *d, const struct sgbd_inter *rows,
                       uint8_t *has_train)
{
    int rc;

    rc = copy_train(d, rows, has_train);
    if (rc == 0)
        rc = build_itemsets(&d->train, d->n_users, rows, SGBD_SPLIT_TRAIN,
                            NULL);
    if (rc == 0)
        rc = build_itemsets(&d->valid, d->n_users, rows, SGBD_SPLIT_VALID,
                            has_train);
    if (rc == 0)
        rc = build_itemsets(&d->test, d->n_users, rows, SGBD_SPLIT_TEST,
                            has_train);
    if (rc == 0)
        rc = collect_negatives(d);
    return rc;
}

int sgbd_dataset_build(struct sgbd_dataset *ds, const struct sgbd_inter *rows)
{
    struct sgbd_dataset d;
    uint8_t *has_train = NULL;
    uint64_t max_user = 0, max_item = 0;
    int rc;

    memset(&d, 0, sizeof(d));
    for (size_t r = 0; r < rows->n; r++) {
        max_user = rows->users[r] > max_user ? rows->users[r] : max_user;
        max_item = rows->items[r] > max_item ? rows->items[r] : max_item;
        d.n_train += rows->labels[r] == SGBD_SPLIT_TRAIN;
    }
    if (d.n_train == 0)
        return sgbd_errf(SGBD_E_FORMAT, "no training rows (x_label 0)");
    if (max_user >= 4 * (uint64_t)rows->n + 1024 ||
        max_item >= 4 * (uint64_t)rows->n + 1024)
        return sgbd_errf(SGBD_E_FORMAT, "largest userID %llu / itemID %llu "
                         "for only %zu rows: ids must be dense (0-based, "
                         "contiguous)", (unsigned long long)max_user,
                         (unsigned long long)max_item, rows->n);
    d.n_users = (uint32_t)(max_user + 1);
    d.n_items = (uint32_t)(max_item + 1);
    has_train = calloc(d.n_users, 1);
    rc = has_train ? build_parts(&d, rows, has_train) : -ENOMEM;
    free(has_train);
    if (rc != 0) {
        sgbd_dataset_free(&d);
        return sgbd_errf(rc, "out of memory for a dataset of %u users and "
                         "%u items", d.n_users, d.n_items);
    }
    *ds = d;
    return 0;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n > k && strcmp(s + n - k, suffix) == 0;
}

static int list_error(const char *dir)
{
    int rc = -errno;

    return sgbd_errf(rc, "%s: cannot list the folder: %s", dir,
                     sgbd_strerror(rc));
}

int sgbd_dataset_find_inter(const char *dir, char *path, size_t n)
{
    char first[256] = "", second[256] = "";
    struct dirent *e;
    int count = 0;
    DIR *d = opendir(dir);

    if (!d)
        return list_error(dir);
    while ((e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, ".inter"))
            continue;
        snprintf(count == 0 ? first : second, sizeof(first), "%s", e->d_name);
        count++;
    }
    closedir(d);
    if (count == 0)
        return sgbd_errf(SGBD_E_NOTFOUND, "%s: no .inter file in the folder",
                         dir);
    if (count > 1)
        return sgbd_errf(SGBD_E_FORMAT, "%s: %d .inter files (%s, %s, ...); "
                         "a dataset folder holds one", dir, count, first,
                         second);
    if ((size_t)snprintf(path, n, "%s/%s", dir, first) >= n)
        return sgbd_errf(-ENAMETOOLONG, "%s/%s: path too long", dir, first);
    return 0;
}

/* Re-issue the current detail with the path in front. */
static int prefix_detail(int rc, const char *path)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "%s", sgbd_err_detail(rc));
    return sgbd_errf(rc, "%s: %s", path, msg);
}

int sgbd_dataset_load_dir(struct sgbd_dataset *ds, const char *dir,
                          const struct sgbd_bulkio_opts *io)
{
    struct sgbd_inter rows = {0};
    char path[PATH_BYTES], q[256];
    int rc;

    rc = sgbd_dataset_find_inter(dir, path, sizeof(path));
    if (rc != 0)
        return rc;
    rc = sgbd_inter_read(&rows, path, io);
    if (rc != 0)
        return rc;
    rc = sgbd_dataset_build(ds, &rows);
    sgbd_inter_free(&rows);
    if (rc != 0)
        return prefix_detail(rc, path);
    SGBD_INFO("dataset_loaded", "path=%s users=%u items=%u train_rows=%zu "
              "valid=%llu test=%llu", sgbd_log_quote(path, q, sizeof(q)),
              ds->n_users, ds->n_items, ds->n_train,
              (unsigned long long)sgbd_itemsets_total(&ds->valid,
                                                      ds->n_users),
              (unsigned long long)sgbd_itemsets_total(&ds->test,
                                                      ds->n_users));
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Channel names of dir's "<name>_feat.npy" files, sorted. */
static int list_channels(const char *dir,
                         char names[][SGBD_CHANNEL_NAME], int *n)
{
    size_t k = strlen(FEAT_SUFFIX), len;
    struct dirent *e;
    int rc = 0;
    DIR *d = opendir(dir);

    *n = 0;
    if (!d)
        return list_error(dir);
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, FEAT_SUFFIX))
            continue;
        len = strlen(e->d_name) - k;
        if (len >= SGBD_CHANNEL_NAME)
            rc = sgbd_errf(SGBD_E_LIMIT, "%s/%s: channel name longer than "
                           "%d bytes", dir, e->d_name, SGBD_CHANNEL_NAME - 1);
        else if (*n == SGBD_MAX_CHANNELS)
            rc = sgbd_errf(SGBD_E_LIMIT, "%s: more than %d feature files",
                           dir, SGBD_MAX_CHANNELS);
        else
            snprintf(names[(*n)++], SGBD_CHANNEL_NAME, "%.*s", (int)len,
                     e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)*n, SGBD_CHANNEL_NAME, cmp_names);
    return rc;
}

static int check_channel(const struct sgbd_mat *m, const char *path,
                         uint32_t n_items)
{
    if (m->rows != n_items)
        return sgbd_errf(SGBD_E_SHAPE, "%s: %zu rows, the dataset has %u "
                         "items", path, m->rows, n_items);
    for (size_t r = 0; r < m->rows; r++)
        for (size_t c = 0; c < m->cols; c++)
            if (!isfinite(m->data[r * m->stride + c]))
                return sgbd_errf(SGBD_E_FORMAT, "%s: value at row %zu column"
                                 " %zu is not finite", path, r, c);
    return 0;
}

static int load_channel(struct sgbd_channel *ch, const char *dir,
                        uint32_t n_items, const struct sgbd_bulkio_opts *io)
{
    char path[PATH_BYTES], q[256];
    int rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s" FEAT_SUFFIX, dir,
                         ch->name) >= sizeof(path))
        return sgbd_errf(-ENAMETOOLONG, "%s: path too long", dir);
    rc = sgbd_npy_read(path, &ch->m, io);
    if (rc != 0)
        return rc;
    rc = check_channel(&ch->m, path, n_items);
    if (rc != 0) {
        free(ch->m.data);
        ch->m.data = NULL;
        return rc;
    }
    SGBD_INFO("features_loaded", "path=%s channel=%s rows=%zu cols=%zu "
              "backend=%s", sgbd_log_quote(path, q, sizeof(q)), ch->name,
              ch->m.rows, ch->m.cols,
              sgbd_bulkio_backend_name(io->stats->backend));
    return 0;
}

int sgbd_features_load_dir(struct sgbd_features *f, const char *dir,
                           uint32_t n_items,
                           const struct sgbd_bulkio_opts *io)
{
    char names[SGBD_MAX_CHANNELS][SGBD_CHANNEL_NAME];
    struct sgbd_bulkio_opts o = {0};
    struct sgbd_bulkio_stats st;
    struct sgbd_features tmp;
    int n, rc;

    memset(&tmp, 0, sizeof(tmp));
    rc = list_channels(dir, names, &n);
    if (rc != 0)
        return rc;
    if (io)
        o = *io;
    if (!o.stats)
        o.stats = &st;
    for (int c = 0; c < n && rc == 0; c++) {
        memcpy(tmp.ch[c].name, names[c], SGBD_CHANNEL_NAME);
        rc = load_channel(&tmp.ch[c], dir, n_items, &o);
        if (rc == 0)
            tmp.n++;
    }
    if (rc != 0) {
        sgbd_features_free(&tmp);
        return rc;
    }
    *f = tmp;
    return 0;
}

const struct sgbd_channel *sgbd_features_find(const struct sgbd_features *f,
                                              const char *name)
{
    for (int c = 0; c < f->n; c++)
        if (strcmp(f->ch[c].name, name) == 0)
            return &f->ch[c];
    return NULL;
}

/* FNV-1a: a channel's own noise seed from its name. */
static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    while (*s)
        h = (h ^ (uint8_t)*s++) * 0x100000001b3ULL;
    return h;
}

int sgbd_features_add_noise(struct sgbd_features *f, double sigma,
                            uint64_t seed)
{
    struct sgbd_rng rng;

    if (!isfinite(sigma) || sigma < 0)
        return sgbd_errf(-EINVAL, "feature noise %g: must be finite and "
                         ">= 0", sigma);
    if (sigma == 0)
        return 0;
    for (int c = 0; c < f->n; c++) {
        struct sgbd_mat m = f->ch[c].m;

        sgbd_rng_init(&rng, seed ^ hash_name(f->ch[c].name), SGBD_RNG_NOISE);
        for (size_t r = 0; r < m.rows; r++) {
            float *row = sgbd_mat_row(m, r);
            for (size_t k = 0; k < m.cols; k++)
                row[k] += (float)(sigma * sgbd_rng_normal(&rng));
        }
    }
    return 0;
}
