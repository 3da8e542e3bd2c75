/*
 * snapshot.c - immutable serving snapshots, their id maps, and the slot
 * that publishes (snapshot, overlay) views with one atomic pointer swap.
 */
#include "sgbd/snapshot.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "sgbd/err.h"
#include "sgbd/overlay.h"

/* ---- big buffers: mmap, so a freed snapshot returns its pages ---- */

static void *big_alloc(size_t bytes)
{
    void *p;

    if (bytes == 0)
        bytes = 1;
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    /* Batches stream the whole item matrix: huge pages keep the
     * prefetcher going across what would be 4 KiB page boundaries. */
    if (bytes >= ((size_t)2 << 20))
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void big_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 1);
}

static size_t mat_bytes(size_t rows, size_t cols)
{
    return rows * cols * sizeof(float);
}

/* ---- hashing ---- */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint64_t sgbd_snapshot_hash_id(const char *id, size_t len, uint64_t seed)
{
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, id + i, 8);
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
    }
    if (i < len) {
        uint64_t w = 0;
        memcpy(&w, id + i, len - i);
        h = mix64(h ^ w ^ 0xa5a5a5a5ULL);
    }
    return mix64(h);
}

static uint64_t fresh_seed(void)
{
    struct timespec ts;
    static atomic_uint_fast64_t counter;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                 atomic_fetch_add(&counter, 1));
}

/* ---- id maps: external string <-> dense index ---- */

struct sgbd_idmap {
    uint32_t n;
    char *arena;        /* ids, each NUL-terminated */
    uint64_t *off;      /* (n + 1) start of id k in arena */
    uint32_t *table;    /* (mask + 1) dense index, UINT32_MAX empty */
    size_t mask;
    uint64_t seed;
};

static void idmap_free(struct sgbd_idmap *m)
{
    if (!m)
        return;
    free(m->arena);
    free(m->off);
    free(m->table);
    free(m);
}

static size_t idmap_bytes(const struct sgbd_idmap *m)
{
    if (!m)
        return 0;
    return m->off[m->n] + (m->n + 1) * sizeof(uint64_t) +
           (m->mask + 1) * sizeof(uint32_t);
}

static int idmap_find(const struct sgbd_idmap *m, const char *id, size_t len,
                      uint32_t *idx)
{
    size_t at = sgbd_snapshot_hash_id(id, len, m->seed) & m->mask;

    for (;; at = (at + 1) & m->mask) {
        uint32_t k = m->table[at];
        if (k == UINT32_MAX)
            return SGBD_E_NOTFOUND;
        if (m->off[k + 1] - m->off[k] - 1 == len &&
            memcmp(m->arena + m->off[k], id, len) == 0) {
            *idx = k;
            return 0;
        }
    }
}

/* Insert every id into the table; SGBD_E_EXISTS on a duplicate. */
static int idmap_index(struct sgbd_idmap *m, const char *kind)
{
    size_t cap = 16;

    while (cap < (size_t)m->n * 2 + 2)
        cap <<= 1;
    m->table = malloc(cap * sizeof(uint32_t));
    if (!m->table)
        return -ENOMEM;
    memset(m->table, 0xff, cap * sizeof(uint32_t));
    m->mask = cap - 1;
    m->seed = fresh_seed();

    for (uint32_t k = 0; k < m->n; k++) {
        const char *id = m->arena + m->off[k];
        size_t len = m->off[k + 1] - m->off[k] - 1;
        size_t at = sgbd_snapshot_hash_id(id, len, m->seed) & m->mask;
        uint32_t dup;

        if (idmap_find(m, id, len, &dup) == 0)
            return sgbd_errf(SGBD_E_EXISTS, "%s id '%.64s' appears twice "
                             "(indices %u and %u)", kind, id, dup, k);
        while (m->table[at] != UINT32_MAX)
            at = (at + 1) & m->mask;
        m->table[at] = k;
    }
    return 0;
}

/* A map of n ids: ids[k], or "<prefix><k>" when ids is NULL. */
static int idmap_build(struct sgbd_idmap **out, uint32_t n,
                       const char *const *ids, char prefix,
                       const char *kind)
{
    struct sgbd_idmap *m = calloc(1, sizeof(*m));
    size_t total = 0;
    int rc = -ENOMEM;

    if (!m)
        return -ENOMEM;
    m->n = n;
    m->off = malloc(((size_t)n + 1) * sizeof(uint64_t));
    if (!m->off)
        goto out;
    for (uint32_t k = 0; k < n; k++) {
        size_t len = ids ? strlen(ids[k]) : 12;
        if (ids && len == 0) {
            rc = sgbd_errf(SGBD_E_FORMAT, "%s id %u is empty", kind, k);
            goto out;
        }
        total += len + 1;
    }
    m->arena = malloc(total ? total : 1);
    if (!m->arena)
        goto out;
    total = 0;
    for (uint32_t k = 0; k < n; k++) {
        int len;
        m->off[k] = total;
        if (ids)
            len = (int)strlen(ids[k]), memcpy(m->arena + total, ids[k],
                                              (size_t)len + 1);
        else
            len = snprintf(m->arena + total, 13, "%c%u", prefix, k);
        total += (size_t)len + 1;
    }
    m->off[n] = total;
    rc = idmap_index(m, kind);
out:
    if (rc != 0)
        idmap_free(m);
    else
        *out = m;
    return rc;
}

/* ---- building ---- */

static atomic_long live_count, live_bytes;

void sgbd_snapshot_live(long *count, long *bytes)
{
    *count = atomic_load(&live_count);
    *bytes = atomic_load(&live_bytes);
}

int sgbd_snapshot_new(struct sgbd_snapshot **out, uint64_t version,
                      uint32_t n_users, uint32_t n_items, size_t dim)
{
    struct sgbd_snapshot *s;
    size_t words = ((size_t)n_items + 63) / 64;

    if (dim == 0 || dim > 65536 || version == 0)
        return sgbd_errf(SGBD_E_SHAPE, "snapshot: version %llu, width %zu: "
                         "need version >= 1 and 1 <= D <= 65536",
                         (unsigned long long)version, dim);
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->version = version;
    s->n_users = n_users;
    s->n_items = n_items;
    s->dim = dim;
    s->users = big_alloc(mat_bytes(n_users, dim));
    s->items = big_alloc(mat_bytes(n_items, dim));
    s->seen_ptr = calloc((size_t)n_users + 1, sizeof(uint64_t));
    s->seen_items = malloc(1);
    s->hidden = calloc(words ? words : 1, sizeof(uint64_t));
    if (!s->users || !s->items || !s->seen_ptr || !s->seen_items ||
        !s->hidden) {
        sgbd_snapshot_free(s);
        return sgbd_errf(-ENOMEM, "snapshot: no memory for %u users and %u "
                         "items of width %zu (%zu MiB)", n_users, n_items,
                         dim, (mat_bytes(n_users, dim) +
                               mat_bytes(n_items, dim)) >> 20);
    }
    atomic_fetch_add(&live_count, 1);
    s->counted = 1;
    *out = s;
    return 0;
}

int sgbd_snapshot_set_ids(struct sgbd_snapshot *s,
                          const char *const *user_ids,
                          const char *const *item_ids)
{
    struct sgbd_idmap *um = NULL, *im = NULL;
    int rc;

    if (s->frozen)
        return sgbd_errf(SGBD_E_BUSY, "snapshot: set_ids after finish");
    if (user_ids) {
        rc = idmap_build(&um, s->n_users, user_ids, 'u', "user");
        if (rc != 0)
            return rc;
    }
    if (item_ids) {
        rc = idmap_build(&im, s->n_items, item_ids, 'i', "item");
        if (rc != 0) {
            idmap_free(um);
            return rc;
        }
    }
    if (um) {
        idmap_free(s->user_map);
        s->user_map = um;
    }
    if (im) {
        idmap_free(s->item_map);
        s->item_map = im;
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int sgbd_snapshot_set_seen(struct sgbd_snapshot *s, const uint64_t *ptr,
                           const uint32_t *items)
{
    uint64_t total = ptr[s->n_users], o = 0;
    uint64_t *nptr;
    uint32_t *nitems;

    if (s->frozen)
        return sgbd_errf(SGBD_E_BUSY, "snapshot: set_seen after finish");
    for (uint32_t u = 0; u < s->n_users; u++)
        if (ptr[u + 1] < ptr[u])
            return sgbd_errf(SGBD_E_FORMAT, "seen sets: ptr[%u] > ptr[%u]",
                             u, u + 1);
    for (uint64_t e = ptr[0]; e < total; e++)
        if (items[e] >= s->n_items)
            return sgbd_errf(SGBD_E_FORMAT, "seen sets: item %u >= %u items",
                             items[e], s->n_items);

    nptr = calloc((size_t)s->n_users + 1, sizeof(uint64_t));
    nitems = malloc((size_t)(total - ptr[0]) * sizeof(uint32_t) + 1);
    if (!nptr || !nitems) {
        free(nptr);
        free(nitems);
        return -ENOMEM;
    }
    for (uint32_t u = 0; u < s->n_users; u++) {
        uint64_t start = o, len = ptr[u + 1] - ptr[u];
        memcpy(nitems + o, items + ptr[u], (size_t)len * sizeof(uint32_t));
        qsort(nitems + o, (size_t)len, sizeof(uint32_t), cmp_u32);
        for (uint64_t e = 0; e < len; e++)
            if (o == start || nitems[o - 1] != nitems[start + e])
                nitems[o++] = nitems[start + e];
        nptr[u + 1] = o;
    }
    free(s->seen_ptr);
    free(s->seen_items);
    s->seen_ptr = nptr;
    s->seen_items = nitems;
    return 0;
}

int sgbd_snapshot_hide(struct sgbd_snapshot *s, uint32_t item)
{
    if (s->frozen)
        return sgbd_errf(SGBD_E_BUSY, "snapshot: hide after finish");
    if (item >= s->n_items)
        return sgbd_errf(SGBD_E_NOTFOUND, "snapshot: item %u >= %u items",
                         item, s->n_items);
    s->hidden[item >> 6] |= 1ULL << (item & 63);
    return 0;
}

int sgbd_snapshot_set_channels(struct sgbd_snapshot *s,
                               const struct sgbd_snapshot_channel *channels,
                               int n)
{
    if (s->frozen)
        return sgbd_errf(SGBD_E_BUSY, "snapshot: channels after finish");
    if (n < 0 || n > SGBD_MAX_CHANNELS)
        return sgbd_errf(SGBD_E_SHAPE, "snapshot: %d feature channels, at "
                         "most %d", n, SGBD_MAX_CHANNELS);
    for (int c = 0; c < n; c++)
        if (channels[c].width == 0 || !channels[c].name[0])
            return sgbd_errf(SGBD_E_SHAPE, "snapshot: channel %d has no "
                             "name or width 0", c);
    memcpy(s->channels, channels, (size_t)n * sizeof(*channels));
    s->n_channels = n;
    return 0;
}

int sgbd_snapshot_set_model(struct sgbd_snapshot *s, struct sgbd_model *model,
                            const float *theta,
                            const struct sgbd_snapshot_channel *channels,
                            int n)
{
    size_t bytes = model->layout.n * sizeof(float);
    float *copy;
    int rc;

    if (s->frozen)
        return sgbd_errf(SGBD_E_BUSY, "snapshot: set_model after finish");
    if (model->dim != s->dim)
        return sgbd_errf(SGBD_E_SHAPE, "snapshot: model width %zu, snapshot "
                         "width %zu", model->dim, s->dim);
    copy = big_alloc(bytes);
    if (!copy)
        return -ENOMEM;
    rc = sgbd_snapshot_set_channels(s, channels, n);
    if (rc != 0) {
        big_free(copy, bytes);
        return rc;
    }
    if (bytes)
        memcpy(copy, theta, bytes);
    if (s->model) {
        big_free(s->theta, s->model->layout.n * sizeof(float));
        s->model->ops->free(s->model);
    }
    s->model = model;
    s->theta = copy;
    return 0;
}

/* Sort context for the popularity order. */
static int cmp_popular(const void *a, const void *b, void *ctx)
{
    const uint32_t *count = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    if (count[x] != count[y])
        return count[x] > count[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int build_popularity(struct sgbd_snapshot *s)
{
    uint64_t total = s->seen_ptr[s->n_users];

    s->pop_count = calloc((size_t)s->n_items + 1, sizeof(uint32_t));
    s->popular = malloc(((size_t)s->n_items + 1) * sizeof(uint32_t));
    if (!s->pop_count || !s->popular)
        return -ENOMEM;
    for (uint64_t e = 0; e < total; e++)
        s->pop_count[s->seen_items[e]]++;
    for (uint32_t i = 0; i < s->n_items; i++)
        s->popular[i] = i;
    qsort_r(s->popular, s->n_items, sizeof(uint32_t), cmp_popular,
            s->pop_count);
    return 0;
}

/* Unit rows for cosine similarity; zero rows stay zero. */
static int build_unit_rows(struct sgbd_snapshot *s)
{
    s->items_unit = big_alloc(mat_bytes(s->n_items, s->dim));
    if (!s->items_unit)
        return -ENOMEM;
    for (size_t i = 0; i < s->n_items; i++) {
        const float *v = s->items + i * s->dim;
        float *w = s->items_unit + i * s->dim;
        double sq = 0;

        for (size_t d = 0; d < s->dim; d++)
            sq += (double)v[d] * v[d];
        if (sq <= 0)
            continue;
        for (size_t d = 0; d < s->dim; d++)
            w[d] = (float)(v[d] / sqrt(sq));
    }
    return 0;
}

static int check_finite(const float *x, size_t n, const char *what)
{
    for (size_t k = 0; k < n; k++)
        if (!isfinite(x[k]))
            return sgbd_errf(SGBD_E_DIVERGED, "snapshot: %s has a NaN or Inf "
                             "at element %zu", what, k);
    return 0;
}

int sgbd_snapshot_finish(struct sgbd_snapshot *s)
{
    int rc;

    if (s->frozen)
        return sgbd_errf(SGBD_E_BUSY, "snapshot: finished twice");
    rc = check_finite(s->users, (size_t)s->n_users * s->dim, "U");
    if (rc == 0)
        rc = check_finite(s->items, (size_t)s->n_items * s->dim, "V");
    if (rc == 0 && !s->user_map)
        rc = idmap_build(&s->user_map, s->n_users, NULL, 'u', "user");
    if (rc == 0 && !s->item_map)
        rc = idmap_build(&s->item_map, s->n_items, NULL, 'i', "item");
    if (rc == 0)
        rc = build_popularity(s);
    if (rc == 0)
        rc = build_unit_rows(s);
    if (rc == 0 && sgbd_topk_screen_supported(s->dim))
        rc = sgbd_topk_screen_init(&s->items_screen,
                                   sgbd_mat_view(s->items, s->n_items,
                                                 s->dim));
    if (rc == 0 && sgbd_topk_screen_supported(s->dim))
        rc = sgbd_topk_screen_init(&s->unit_screen,
                                   sgbd_mat_view(s->items_unit, s->n_items,
                                                 s->dim));
    if (rc != 0)
        return rc;
    s->frozen = 1;
    s->counted_bytes = sgbd_snapshot_bytes(s);
    atomic_fetch_add(&live_bytes, (long)s->counted_bytes);
    return 0;
}

void sgbd_snapshot_free(struct sgbd_snapshot *s)
{
    if (!s)
        return;
    if (s->counted)
        atomic_fetch_sub(&live_count, 1);
    atomic_fetch_sub(&live_bytes, (long)s->counted_bytes);
    big_free(s->users, mat_bytes(s->n_users, s->dim));
    big_free(s->items, mat_bytes(s->n_items, s->dim));
    big_free(s->items_unit, s->items_unit ? mat_bytes(s->n_items, s->dim)
                                          : 0);
    sgbd_topk_screen_deinit(&s->items_screen);
    sgbd_topk_screen_deinit(&s->unit_screen);
    free(s->seen_ptr);
    free(s->seen_items);
    free(s->hidden);
    free(s->popular);
    free(s->pop_count);
    if (s->model) {
        big_free(s->theta, s->model->layout.n * sizeof(float));
        s->model->ops->free(s->model);
    }
    idmap_free(s->user_map);
    idmap_free(s->item_map);
    free(s);
}

static void snapshot_unref(struct sgbd_snapshot *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        sgbd_snapshot_free(s);
}

int sgbd_snapshot_user_index(const struct sgbd_snapshot *s, const char *id,
                             size_t len, uint32_t *idx)
{
    return idmap_find(s->user_map, id, len, idx);
}

int sgbd_snapshot_item_index(const struct sgbd_snapshot *s, const char *id,
                             size_t len, uint32_t *idx)
{
    return idmap_find(s->item_map, id, len, idx);
}

const char *sgbd_snapshot_user_id(const struct sgbd_snapshot *s, uint32_t u)
{
    return u < s->n_users ? s->user_map->arena + s->user_map->off[u] : NULL;
}

const char *sgbd_snapshot_item_id(const struct sgbd_snapshot *s, uint32_t i)
{
    return i < s->n_items ? s->item_map->arena + s->item_map->off[i] : NULL;
}

size_t sgbd_snapshot_bytes(const struct sgbd_snapshot *s)
{
    size_t b = sizeof(*s);

    b += mat_bytes(s->n_users, s->dim) + 2 * mat_bytes(s->n_items, s->dim);
    b += ((size_t)s->n_users + 1) * sizeof(uint64_t);
    b += s->seen_ptr[s->n_users] * sizeof(uint32_t);
    b += ((size_t)s->n_items + 63) / 64 * 8 + (size_t)s->n_items * 8;
    b += idmap_bytes(s->user_map) + idmap_bytes(s->item_map);
    b += sgbd_topk_screen_bytes(&s->items_screen);
    b += sgbd_topk_screen_bytes(&s->unit_screen);
    if (s->model)
        b += s->model->layout.n * sizeof(float);
    return b;
}

/* ---- publication ---- */

/* What the slot points to: one snapshot and one overlay. */
struct view_node {
    atomic_long refs;               /* the slot's + one per pin */
    struct sgbd_snapshot *snap;     /* holds one snapshot reference */
    struct sgbd_overlay *ov;        /* holds one overlay reference */
};

struct sgbd_snapshot_slot {
    _Atomic(struct view_node *) cur;
    atomic_long guard;              /* readers between load and ref */
    atomic_uint_fast64_t swaps, model_swaps;
    atomic_uint_fast64_t write_seq; /* last write sequence number */
    pthread_mutex_t writer;         /* serialises publish and apply */
};

static struct view_node *node_new(struct sgbd_snapshot *snap,
                                  struct sgbd_overlay *ov)
{
    struct view_node *v = malloc(sizeof(*v));

    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    v->snap = snap;
    v->ov = ov;
    if (snap)
        atomic_fetch_add(&snap->refs, 1);
    return v;
}

static void node_unref(struct view_node *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    snapshot_unref(v->snap);
    sgbd_overlay_unref(v->ov);
    free(v);
}

int sgbd_snapshot_slot_new(struct sgbd_snapshot_slot **out)
{
    struct sgbd_snapshot_slot *slot = calloc(1, sizeof(*slot));
    struct sgbd_overlay *ov = NULL;
    struct view_node *v;
    int rc;

    if (!slot)
        return -ENOMEM;
    rc = sgbd_overlay_new_empty(&ov);
    if (rc != 0 || !(v = node_new(NULL, ov))) {
        sgbd_overlay_unref(ov);
        free(slot);
        return rc ? rc : -ENOMEM;
    }
    atomic_init(&slot->cur, v);
    atomic_init(&slot->guard, 0);
    atomic_init(&slot->swaps, 0);
    atomic_init(&slot->model_swaps, 0);
    atomic_init(&slot->write_seq, 0);
    pthread_mutex_init(&slot->writer, NULL);
    *out = slot;
    return 0;
}

void sgbd_snapshot_slot_free(struct sgbd_snapshot_slot *slot)
{
    if (!slot)
        return;
    node_unref(atomic_load(&slot->cur));
    pthread_mutex_destroy(&slot->writer);
    free(slot);
}

void sgbd_snapshot_acquire(struct sgbd_snapshot_slot *slot,
                           struct sgbd_view *view)
{
    struct view_node *v;

    /* The guard covers the load and the increment: a publisher that
     * swapped v out waits for the guard to drain before dropping the
     * slot's reference, so v cannot be freed in between. */
    atomic_fetch_add(&slot->guard, 1);
    v = atomic_load(&slot->cur);
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    atomic_fetch_sub(&slot->guard, 1);

    view->snap = v->snap;
    view->ov = v->ov;
    view->version = v->snap ? v->snap->version : 0;
    view->pin = v;
}

void sgbd_snapshot_release(struct sgbd_view *view)
{
    node_unref(view->pin);
    view->pin = NULL;
    view->snap = NULL;
    view->ov = NULL;
}

/* Swap in v and drop the old node once no reader is mid-acquire. */
static void swap_node(struct sgbd_snapshot_slot *slot, struct view_node *v)
{
    struct view_node *old = atomic_exchange(&slot->cur, v);
    unsigned spins = 0;

    while (atomic_load(&slot->guard) != 0)
        if (++spins % 64 == 0)
            sched_yield();
    atomic_fetch_add(&slot->swaps, 1);
    node_unref(old);
}

static double now_unix(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int sgbd_snapshot_publish(struct sgbd_snapshot_slot *slot,
                          struct sgbd_snapshot *s, int allow_older)
{
    struct sgbd_overlay *ov = NULL;
    struct view_node *cur, *v;
    int rc = 0;

    if (!s->frozen) {
        sgbd_snapshot_free(s);
        return sgbd_errf(SGBD_E_BUSY, "publish: snapshot not finished");
    }
    pthread_mutex_lock(&slot->writer);
    cur = atomic_load(&slot->cur);
    if (!allow_older && cur->snap && s->version <= cur->snap->version) {
        rc = sgbd_errf(SGBD_E_VERSION, "publish: version %llu is not above "
                       "the current %llu", (unsigned long long)s->version,
                       (unsigned long long)cur->snap->version);
        goto out;
    }
    rc = sgbd_overlay_rebase(&ov, cur->ov, s);
    if (rc != 0)
        goto out;
    s->published_at = now_unix();
    v = node_new(s, ov);
    if (!v) {
        sgbd_overlay_unref(ov);
        rc = -ENOMEM;
        goto out;
    }
    swap_node(slot, v);
    atomic_fetch_add(&slot->model_swaps, 1);
    s = NULL; /* the node holds it now */
out:
    pthread_mutex_unlock(&slot->writer);
    if (s)
        sgbd_snapshot_free(s);
    return rc;
}

int sgbd_snapshot_apply(struct sgbd_snapshot_slot *slot,
                        const struct sgbd_overlay_edit *edits, size_t n)
{
    struct sgbd_overlay *ov = NULL;
    struct view_node *cur, *v;
    int rc;

    pthread_mutex_lock(&slot->writer);
    cur = atomic_load(&slot->cur);
    rc = sgbd_overlay_derive(&ov, cur->ov, cur->snap, edits, n);
    if (rc == 0) {
        v = node_new(cur->snap, ov);
        if (v)
            swap_node(slot, v);
        else
            sgbd_overlay_unref(ov), rc = -ENOMEM;
    }
    pthread_mutex_unlock(&slot->writer);
    return rc;
}

uint64_t sgbd_snapshot_swaps(const struct sgbd_snapshot_slot *slot)
{
    return atomic_load(&((struct sgbd_snapshot_slot *)slot)->swaps);
}

uint64_t sgbd_snapshot_slot_next_seq(struct sgbd_snapshot_slot *slot)
{
    return atomic_fetch_add(&slot->write_seq, 1) + 1;
}

uint64_t sgbd_snapshot_slot_seq(const struct sgbd_snapshot_slot *slot)
{
    return atomic_load(&((struct sgbd_snapshot_slot *)slot)->write_seq);
}

uint64_t sgbd_snapshot_model_swaps(const struct sgbd_snapshot_slot *slot)
{
    return atomic_load(&((struct sgbd_snapshot_slot *)slot)->model_swaps);
}
