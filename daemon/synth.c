/*
 * synth.c - synthetic catalogues with latent clusters (model in synth.h).
 *
 * Random streams: item latents (seed, SYNTH); users and interactions
 * (seed ^ H("users"), SYNTH); channel m's map W_m (seed ^ H("map:m"),
 * SYNTH) and noise E_m (seed ^ H("noise:m"), SYNTH); the split
 * (seed, SPLIT). Separate streams keep the features of a seed identical
 * whatever the user side asks for, and noise 0 vs sigma differ only by
 * sigma E_m.
 */
#include "sgbd/synth.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "sgbd/bulkio.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/mat.h"
#include "sgbd/npy.h"
#include "sgbd/rng.h"

#define MAX_ID 0x7fffffffu
#define MAX_DIM 65536u
#define MAX_LATENT 1024u
#define ITEM_SPREAD 0.5   /* within-cluster spread of item latents */
#define FOCUS 0.8         /* share of interactions from preferred clusters */
#define MAX_PREFS 3
#define PICK_TRIES 8
#define PATH_BYTES 4096

struct catalogue {
    uint32_t n_users, n_items, n_clusters, dim;   /* U, I, C, L */
    uint32_t *cluster;      /* (I) c_i */
    float *z;               /* (I, L) row-major item latents */
    uint32_t *members;      /* (I) items grouped by cluster */
    uint32_t *mptr;         /* (C + 1) cluster c: members[mptr[c]..) */
};

/* Interactions: generation order, then grouped by user. */
struct rows {
    size_t n, cap;
    uint32_t *user, *item;  /* (cap) */
    uint8_t *label;         /* (cap) x_label */
    uint64_t *uptr;         /* (U + 1) after grouping */
};

/* Users' preferred clusters: prefs[u * MAX_PREFS + k], k < n_prefs[u]. */
struct tastes {
    uint32_t *prefs;
    uint8_t *n_prefs;
};

void sgbd_synth_defaults(struct sgbd_synth_params *p)
{
    memset(p, 0, sizeof(*p));
    p->n_users = 500;
    p->n_items = 300;
    p->n_clusters = 10;
    p->dim_latent = 16;
    p->dim_image = 128;
    p->dim_text = 64;
    p->noise = 0.5;
    p->interactions_per_user = 10;
    p->seed = 999;
}

static int bad(const char *field, const char *why)
{
    return sgbd_errf(-EINVAL, "synth %s: %s", field, why);
}

static int check_name(const char *name)
{
    size_t n = strnlen(name, sizeof(((struct sgbd_synth_params *)0)->name));

    if (n == sizeof(((struct sgbd_synth_params *)0)->name))
        return bad("name", "too long");
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789_-.", name[i]))
            return bad("name", "may hold only letters, digits, '_', '-', "
                       "'.'");
    return 0;
}

int sgbd_synth_check(const struct sgbd_synth_params *p)
{
    if (p->n_items < 1 || p->n_items > MAX_ID)
        return bad("items", "must be in 1..2147483647");
    if (p->n_clusters < 1 || p->n_clusters > p->n_items)
        return bad("clusters", "must be in 1..items");
    if (p->dim_latent < 1 || p->dim_latent > MAX_LATENT)
        return bad("latent", "must be in 1..1024");
    if (p->dim_image > MAX_DIM)
        return bad("dim-image", "must be at most 65536");
    if (p->dim_text > MAX_DIM)
        return bad("dim-text", "must be at most 65536");
    if (!isfinite(p->noise) || p->noise < 0)
        return bad("noise", "must be finite and >= 0");
    if (p->features_only && !p->dim_image && !p->dim_text)
        return bad("dim-image", "and dim-text are 0: no features to write");
    if (p->features_only)
        return check_name(p->name);
    if (p->n_users < 1 || p->n_users > MAX_ID)
        return bad("users", "must be in 1..2147483647");
    if (p->interactions_per_user < 5)
        return bad("interactions-per-user", "must be at least 5 (5-core)");
    if (2 * (uint64_t)p->interactions_per_user - 5 > p->n_items)
        return bad("interactions-per-user", "N needs at least 2N - 5 items");
    return check_name(p->name);
}

static uint64_t hash_tag(const char *a, const char *b)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 0x100000001b3ULL;
    for (; b && *b; b++)
        h = (h ^ (uint8_t)*b) * 0x100000001b3ULL;
    return h;
}

static void catalogue_free(struct catalogue *c)
{
    free(c->cluster);
    free(c->z);
    free(c->members);
    free(c->mptr);
}

/* members / mptr: the items of each cluster, ascending. */
static int group_by_cluster(struct catalogue *c)
{
    uint32_t *pos = malloc((size_t)c->n_clusters * sizeof(uint32_t));

    if (!pos)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->n_items; i++)
        c->mptr[c->cluster[i] + 1]++;
    for (uint32_t k = 0; k < c->n_clusters; k++) {
        c->mptr[k + 1] += c->mptr[k];
        pos[k] = c->mptr[k];
    }
    for (uint32_t i = 0; i < c->n_items; i++)
        c->members[pos[c->cluster[i]]++] = i;
    free(pos);
    return 0;
}

/* Balanced clusters in shuffled order, latents around cluster centres. */
static int make_items(struct catalogue *c, const struct sgbd_synth_params *p)
{
    uint32_t I = p->n_items, C = p->n_clusters, L = p->dim_latent;
    float *mu = malloc((size_t)C * L * sizeof(float));
    struct sgbd_rng rng;

    c->n_items = I, c->n_clusters = C, c->dim = L;
    c->cluster = malloc((size_t)I * sizeof(uint32_t));
    c->z = malloc((size_t)I * L * sizeof(float));
    c->members = malloc((size_t)I * sizeof(uint32_t));
    c->mptr = calloc((size_t)C + 1, sizeof(uint32_t));
    if (!mu || !c->cluster || !c->z || !c->members || !c->mptr) {
        free(mu);
        return -ENOMEM;
    }
    sgbd_rng_init(&rng, p->seed, SGBD_RNG_SYNTH);
    for (size_t k = 0; k < (size_t)C * L; k++)
        mu[k] = (float)sgbd_rng_normal(&rng);
    for (uint32_t i = 0; i < I; i++)
        c->cluster[i] = i % C;
    sgbd_rng_shuffle_u32(&rng, c->cluster, I);
    for (uint32_t i = 0; i < I; i++)
        for (uint32_t l = 0; l < L; l++)
            c->z[(size_t)i * L + l] = mu[(size_t)c->cluster[i] * L + l] +
                (float)(ITEM_SPREAD * sgbd_rng_normal(&rng));
    free(mu);
    return group_by_cluster(c);
}

static void rows_free(struct rows *r)
{
    free(r->user);
    free(r->item);
    free(r->label);
    free(r->uptr);
}

static void tastes_free(struct tastes *t)
{
    free(t->prefs);
    free(t->n_prefs);
}

static int prefers(const struct tastes *t, uint32_t u, uint32_t cluster)
{
    for (int k = 0; k < t->n_prefs[u]; k++)
        if (t->prefs[(size_t)u * MAX_PREFS + k] == cluster)
            return 1;
    return 0;
}

/* An item of cluster k that user u (taken[i] == u + 1) does not have yet:
 * a few random draws, then a scan of the cluster, then of everything. The
 * caller guarantees the user has fewer than I items. */
static uint32_t pick_item(const struct catalogue *c, uint32_t k, uint32_t u,
                          const uint32_t *taken, struct sgbd_rng *rng)
{
    uint32_t first = c->mptr[k], n = c->mptr[k + 1] - first, i, start;

    for (int t = 0; t < PICK_TRIES; t++) {
        i = c->members[first + sgbd_rng_below(rng, n)];
        if (taken[i] != u + 1)
            return i;
    }
    start = (uint32_t)sgbd_rng_below(rng, n);
    for (uint32_t j = 0; j < n; j++) {
        i = c->members[first + (start + j) % n];
        if (taken[i] != u + 1)
            return i;
    }
    start = (uint32_t)sgbd_rng_below(rng, c->n_items);
    for (uint32_t j = 0; j < c->n_items; j++) {
        i = (start + j) % c->n_items;
        if (taken[i] != u + 1)
            break;
    }
    return i;
}

static void push_row(struct rows *r, uint32_t u, uint32_t i)
{
    r->user[r->n] = u;
    r->item[r->n++] = i;
}

/* One user: preferred clusters, then n_u distinct items. */
static void make_user(const struct catalogue *c, struct tastes *t,
                      uint32_t u, uint32_t n_mean, uint32_t *taken,
                      struct rows *r, struct sgbd_rng *rng)
{
    uint32_t n = 5 + (uint32_t)sgbd_rng_below(rng, 2 * (n_mean - 5) + 1);

    t->n_prefs[u] = (uint8_t)(1 + sgbd_rng_below(rng, MAX_PREFS));
    for (int k = 0; k < t->n_prefs[u]; k++)
        t->prefs[(size_t)u * MAX_PREFS + k] =
            (uint32_t)sgbd_rng_below(rng, c->n_clusters);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t k = sgbd_rng_uniform(rng) < FOCUS
            ? t->prefs[(size_t)u * MAX_PREFS +
                       sgbd_rng_below(rng, t->n_prefs[u])]
            : (uint32_t)sgbd_rng_below(rng, c->n_clusters);
        uint32_t i = pick_item(c, k, u, taken, rng);

        taken[i] = u + 1;
        push_row(r, u, i);
    }
}

/* Give every item nobody took to a user who prefers its cluster (or, after
 * a few tries, to any user): every item is referenced. */
static int cover_items(const struct catalogue *c, const struct tastes *t,
                       struct rows *r, struct sgbd_rng *rng)
{
    size_t n = r->n;
    uint8_t *used = calloc(c->n_items, 1);
    uint32_t u = 0;

    if (!used)
        return -ENOMEM;
    for (size_t k = 0; k < n; k++)
        used[r->item[k]] = 1;
    for (uint32_t i = 0; i < c->n_items; i++) {
        if (used[i])
            continue;
        for (int tries = 0; tries < 32; tries++) {
            u = (uint32_t)sgbd_rng_below(rng, c->n_users);
            if (prefers(t, u, c->cluster[i]))
                break;
        }
        push_row(r, u, i);
    }
    free(used);
    return 0;
}

static int make_interactions(const struct catalogue *c,
                             const struct sgbd_synth_params *p,
                             struct rows *r)
{
    struct tastes t = {0};
    struct sgbd_rng rng;
    uint32_t *taken = calloc(c->n_items, sizeof(uint32_t));
    int rc = 0;

    r->cap = (size_t)p->n_users * (2 * p->interactions_per_user - 5) +
             p->n_items;
    r->user = malloc(r->cap * sizeof(uint32_t));
    r->item = malloc(r->cap * sizeof(uint32_t));
    r->label = malloc(r->cap);
    t.prefs = malloc((size_t)p->n_users * MAX_PREFS * sizeof(uint32_t));
    t.n_prefs = malloc(p->n_users);
    if (!taken || !r->user || !r->item || !r->label || !t.prefs ||
        !t.n_prefs) {
        rc = -ENOMEM;
        goto out;
    }
    sgbd_rng_init(&rng, p->seed ^ hash_tag("users", NULL), SGBD_RNG_SYNTH);
    for (uint32_t u = 0; u < p->n_users; u++)
        make_user(c, &t, u, p->interactions_per_user, taken, r, &rng);
    rc = cover_items(c, &t, r, &rng);
out:
    tastes_free(&t);
    free(taken);
    return rc;
}

/* Stable counting sort of the rows by user; uptr[u] opens user u. */
static int group_by_user(struct rows *r, uint32_t n_users)
{
    uint32_t *user = malloc(r->n * sizeof(uint32_t) + 1);
    uint32_t *item = malloc(r->n * sizeof(uint32_t) + 1);
    uint64_t *pos = malloc((size_t)n_users * sizeof(uint64_t));

    r->uptr = calloc((size_t)n_users + 1, sizeof(uint64_t));
    if (!user || !item || !pos || !r->uptr) {
        free(user), free(item), free(pos);
        return -ENOMEM;
    }
    for (size_t k = 0; k < r->n; k++)
        r->uptr[r->user[k] + 1]++;
    for (uint32_t u = 0; u < n_users; u++) {
        r->uptr[u + 1] += r->uptr[u];
        pos[u] = r->uptr[u];
    }
    for (size_t k = 0; k < r->n; k++) {
        uint64_t at = pos[r->user[k]]++;
        user[at] = r->user[k];
        item[at] = r->item[k];
    }
    free(r->user), free(r->item), free(pos);
    r->user = user;
    r->item = item;
    return 0;
}

/* MMRec's random per-user split (1splitting.ipynb, algorithms.md 2.1):
 * the user's rows in a random order get train, then valid, then test. */
static int assign_split(struct rows *r, uint32_t n_users, uint64_t seed)
{
    uint64_t most = 0;
    uint32_t *perm;
    struct sgbd_rng rng;

    for (uint32_t u = 0; u < n_users; u++)
        if (r->uptr[u + 1] - r->uptr[u] > most)
            most = r->uptr[u + 1] - r->uptr[u];
    perm = malloc((size_t)most * sizeof(uint32_t) + 1);
    if (!perm)
        return -ENOMEM;
    sgbd_rng_init(&rng, seed, SGBD_RNG_SPLIT);
    for (uint32_t u = 0; u < n_users; u++) {
        uint64_t a = r->uptr[u], n = r->uptr[u + 1] - a;
        uint64_t k = n / 5, n_train = n < 10 ? n - 2 : n - k;
        uint64_t n_valid = n < 10 ? 1 : k / 2;

        for (uint32_t j = 0; j < n; j++)
            perm[j] = j;
        sgbd_rng_shuffle_u32(&rng, perm, n);
        for (uint32_t j = 0; j < n; j++)
            r->label[a + perm[j]] = j < n_train ? 0
                                  : j < n_train + n_valid ? 1 : 2;
    }
    free(perm);
    return 0;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* userID itemID rating timestamp x_label; timestamp = order in the user. */
static int write_inter(const char *path, const struct rows *r,
                       uint32_t n_users)
{
    static const char header[] = "userID\titemID\trating\ttimestamp\tx_label\n";
    char *buf = malloc(sizeof(header) + r->n * 48), *p;
    struct iovec iov;
    int rc;

    if (!buf)
        return sgbd_errf(-ENOMEM, "%s: out of memory", path);
    p = buf + sizeof(header) - 1;
    memcpy(buf, header, sizeof(header) - 1);
    for (uint32_t u = 0; u < n_users; u++) {
        for (uint64_t k = r->uptr[u]; k < r->uptr[u + 1]; k++) {
            p = put_u64(p, u);
            *p++ = '\t';
            p = put_u64(p, r->item[k]);
            memcpy(p, "\t1\t", 3);
            p = put_u64(p + 3, k - r->uptr[u]);
            *p++ = '\t';
            *p++ = (char)('0' + r->label[k]);
            *p++ = '\n';
        }
    }
    iov.iov_base = buf;
    iov.iov_len = (size_t)(p - buf);
    rc = sgbd_bulkio_write_file(path, &iov, 1);
    free(buf);
    return rc;
}

/* F = Z W + sigma E for one channel, written as <channel>_feat.npy. */
static int write_channel(const char *dir, const char *channel, uint32_t D,
                         const struct catalogue *c, double sigma,
                         uint64_t seed)
{
    size_t I = c->n_items, L = c->dim;
    float *w = malloc(L * D * sizeof(float));
    float *f = calloc(I * D > 0 ? I * D : 1, sizeof(float));
    char path[PATH_BYTES];
    struct sgbd_rng rng;
    int rc;

    if (!w || !f) {
        rc = sgbd_errf(-ENOMEM, "%s: out of memory for (%zu, %u) features",
                       dir, I, D);
        goto out;
    }
    sgbd_rng_init(&rng, seed ^ hash_tag("map:", channel), SGBD_RNG_SYNTH);
    for (size_t k = 0; k < L * D; k++)
        w[k] = (float)(sgbd_rng_normal(&rng) / sqrt((double)L));
    for (size_t i = 0; i < I; i++) {
        float *row = f + i * D;
        for (size_t l = 0; l < L; l++) {
            const float zl = c->z[i * L + l], *wl = w + l * D;
            for (size_t d = 0; d < D; d++)
                row[d] += zl * wl[d];
        }
    }
    if (sigma > 0) {
        sgbd_rng_init(&rng, seed ^ hash_tag("noise:", channel),
                      SGBD_RNG_SYNTH);
        for (size_t k = 0; k < I * D; k++)
            f[k] += (float)(sigma * sgbd_rng_normal(&rng));
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s_feat.npy", dir,
                         channel) >= sizeof(path)) {
        rc = sgbd_errf(-ENAMETOOLONG, "%s: path too long", dir);
        goto out;
    }
    rc = sgbd_npy_write(path, sgbd_mat_view(f, I, D));
out:
    free(f);
    free(w);
    return rc;
}

/* The last component of dir, or "synth" when it has none. */
static void default_name(const char *dir, char *name, size_t n)
{
    size_t len = strlen(dir), begin;

    while (len > 1 && dir[len - 1] == '/')
        len--;
    begin = len;
    while (begin > 0 && dir[begin - 1] != '/')
        begin--;
    snprintf(name, n, "%.*s", (int)(len - begin), dir + begin);
    if (name[0] == '\0' || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0 || strcmp(name, "/") == 0 ||
        check_name(name) != 0)
        snprintf(name, n, "synth");
}

/* Create dir when missing; a dataset folder holds only its own .inter. */
static int prepare_dir(const char *dir, const char *inter_name)
{
    struct dirent *e;
    struct stat sb;
    int rc = 0;
    DIR *d;

    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = -errno;
        return sgbd_errf(rc, "%s: cannot create: %s", dir, sgbd_strerror(rc));
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return sgbd_errf(-ENOTDIR, "%s: not a folder", dir);
    if (!inter_name)
        return 0;
    d = opendir(dir);
    if (!d) {
        rc = -errno;
        return sgbd_errf(rc, "%s: cannot list: %s", dir, sgbd_strerror(rc));
    }
    while (rc == 0 && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 6 && strcmp(e->d_name + n - 6, ".inter") == 0 &&
            strcmp(e->d_name, inter_name) != 0)
            rc = sgbd_errf(SGBD_E_EXISTS, "%s: already holds %s; a dataset "
                           "folder holds one .inter file", dir, e->d_name);
    }
    closedir(d);
    return rc;
}

/* Users, interactions and split into <name>.inter. */
static int write_dataset(const char *dir, const char *name,
                         const struct catalogue *c,
                         const struct sgbd_synth_params *p, size_t *n_rows)
{
    struct rows r = {0};
    char path[PATH_BYTES];
    int rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s.inter", dir, name) >=
        sizeof(path))
        return sgbd_errf(-ENAMETOOLONG, "%s: path too long", dir);
    rc = make_interactions(c, p, &r);
    if (rc == 0)
        rc = group_by_user(&r, p->n_users);
    if (rc == 0)
        rc = assign_split(&r, p->n_users, p->seed);
    if (rc != 0)
        rc = sgbd_errf(rc, "%s: out of memory for %u users", path,
                       p->n_users);
    else
        rc = write_inter(path, &r, p->n_users);
    *n_rows = r.n;
    rows_free(&r);
    return rc;
}

int sgbd_synth_write(const char *dir, const struct sgbd_synth_params *p)
{
    struct catalogue c = {0};
    char name[sizeof(p->name) + 8], q[256];
    size_t n_rows = 0;
    int rc;

    rc = sgbd_synth_check(p);
    if (rc != 0)
        return rc;
    if (p->name[0])
        snprintf(name, sizeof(name), "%s", p->name);
    else
        default_name(dir, name, sizeof(name));
    c.n_users = p->n_users;
    rc = make_items(&c, p);
    if (rc != 0) {
        rc = sgbd_errf(rc, "%s: out of memory for %u items", dir, p->n_items);
        goto out;
    }
    strcat(name, ".inter");
    rc = prepare_dir(dir, p->features_only ? NULL : name);
    name[strlen(name) - 6] = '\0';
    if (rc == 0 && !p->features_only)
        rc = write_dataset(dir, name, &c, p, &n_rows);
    if (rc == 0 && p->dim_image)
        rc = write_channel(dir, "image", p->dim_image, &c, p->noise, p->seed);
    if (rc == 0 && p->dim_text)
        rc = write_channel(dir, "text", p->dim_text, &c, p->noise, p->seed);
    if (rc == 0)
        SGBD_INFO("synth_written", "dir=%s name=%s users=%u items=%u rows=%zu "
                  "image=%u text=%u noise=%g seed=%llu",
                  sgbd_log_quote(dir, q, sizeof(q)), name,
                  p->features_only ? 0 : p->n_users, p->n_items, n_rows,
                  p->dim_image, p->dim_text, p->noise,
                  (unsigned long long)p->seed);
out:
    catalogue_free(&c);
    return rc;
}
