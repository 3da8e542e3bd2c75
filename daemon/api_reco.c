/*
 * api_reco.c - the scoring routes: personalised top-k, batches, similar
 * items, and the popular-items fallback.
 *
 * One request reads one pinned view. Base items (rows of the snapshot's
 * V) are scored by the top-k engine with an exclusion bitset = the
 * overlay's base mask (hidden, or rewritten since the snapshot) | the
 * user's seen items | the request's exclude list. Items the overlay holds
 * vectors for (new or rewritten) are scored here and merged into the same
 * selection, so the tie rule (equal scores: lower index first) holds
 * across both.
 */
#include "api_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/overlay.h"
#include "sgbd/reco_cache.h"
#include "sgbd/topk.h"

/* Items a request excludes on top of seen and hidden ones: view indices. */
struct excl_list {
    uint32_t *idx;                  /* sorted unique */
    size_t n, cap;
};

/* Everything one user must not get. */
struct user_excl {
    uint64_t *bits;                 /* (I bits) for the base pass, owned */
    const uint32_t *snap_seen;      /* sorted base indices */
    size_t n_snap_seen;
    const uint32_t *ov_seen;        /* sorted view indices */
    size_t n_ov_seen;
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int has(const uint32_t *sorted, size_t n, uint32_t v)
{
    return n && bsearch(&v, sorted, n, sizeof(v), cmp_u32) != NULL;
}

static int list_add(struct excl_list *l, uint32_t idx)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint32_t *p = realloc(l->idx, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        l->idx = p;
        l->cap = cap;
    }
    l->idx[l->n++] = idx;
    return 0;
}

static void list_sort(struct excl_list *l)
{
    size_t o = 0;

    if (!l->n)
        return;
    qsort(l->idx, l->n, sizeof(uint32_t), cmp_u32);
    for (size_t k = 0; k < l->n; k++)
        if (o == 0 || l->idx[o - 1] != l->idx[k])
            l->idx[o++] = l->idx[k];
    l->n = o;
}

/* Add item id (len bytes, decoded) to l when the view knows it. */
static int list_add_id(struct call *c, struct excl_list *l, const char *id,
                       size_t len)
{
    struct sgbd_item_ref ref;

    if (api_check_id(c, id, len, "excluded item id") != 0)
        return -1;
    if (sgbd_overlay_resolve_item(c->view.snap, c->view.ov, id, len,
                                  &ref) != 0)
        return 0; /* unknown: nothing to exclude */
    if (list_add(l, ref.index) != 0) {
        api_fail(c, 500, "internal", "out of memory");
        return -1;
    }
    return 0;
}

/* exclude=a,b&exclude=c: raw commas separate, %2C is part of an id. */
static int parse_exclude_query(struct call *c, struct excl_list *l)
{
    char id[SGBD_STORE_ID_MAX + 1];

    for (int a = 0; a < c->req->n_args; a++) {
        const char *v = c->req->args[a].value;
        if (strcmp(c->req->args[a].key, "exclude") != 0)
            continue;
        while (*v) {
            const char *e = strchr(v, ',');
            size_t n = e ? (size_t)(e - v) : strlen(v), len;

            if (n > 0 && api_decode(v, n, id, sizeof(id), &len) != 0) {
                api_fail(c, 400, "bad_id", "an excluded item id is "
                         "malformed or longer than %d bytes",
                         SGBD_STORE_ID_MAX);
                return -1;
            }
            if (n > 0 && list_add_id(c, l, id, len) != 0)
                return -1;
            v = e ? e + 1 : v + n;
        }
    }
    list_sort(l);
    return 0;
}

static int parse_exclude_json(struct call *c, json_t *arr,
                              struct excl_list *l)
{
    size_t k;
    json_t *v;

    if (!arr)
        return 0;
    if (!json_is_array(arr)) {
        api_fail(c, 400, "bad_request", "'exclude' must be an array of ids");
        return -1;
    }
    json_array_foreach(arr, k, v) {
        if (!json_is_string(v)) {
            api_fail(c, 400, "bad_request", "exclude[%zu] must be a string",
                     k);
            return -1;
        }
        if (list_add_id(c, l, json_string_value(v),
                        json_string_length(v)) != 0)
            return -1;
    }
    list_sort(l);
    return 0;
}

/* ---- exclusion of one user ---- */

static size_t base_words(const struct sgbd_view *v)
{
    return sgbd_bitset_words(v->snap->n_items);
}

/*
 * Fill ex for user uid (len bytes; *known: index in the snapshot or -1),
 * with bits in caller storage (base_words words).
 */
static void user_excl_fill(const struct sgbd_view *v, const char *uid,
                           size_t len, long known, const struct excl_list *l,
                           uint64_t *bits, struct user_excl *ex)
{
    const struct sgbd_snapshot *s = v->snap;
    const uint64_t *mask = sgbd_overlay_base_mask(v->ov);

    memcpy(bits, mask ? mask : s->hidden, base_words(v) * sizeof(uint64_t));
    memset(ex, 0, sizeof(*ex));
    ex->bits = bits;
    if (known >= 0) {
        ex->snap_seen = s->seen_items + s->seen_ptr[known];
        ex->n_snap_seen = s->seen_ptr[known + 1] - s->seen_ptr[known];
    }
    if (sgbd_overlay_user_seen(v->ov, uid, len, &ex->ov_seen,
                               &ex->n_ov_seen) != 0)
        ex->n_ov_seen = 0;
    for (size_t k = 0; k < ex->n_snap_seen; k++)
        sgbd_bitset_set(bits, ex->snap_seen[k]);
    for (size_t k = 0; k < ex->n_ov_seen; k++)
        if (ex->ov_seen[k] < s->n_items)
            sgbd_bitset_set(bits, ex->ov_seen[k]);
    for (size_t k = 0; k < l->n; k++)
        if (l->idx[k] < s->n_items)
            sgbd_bitset_set(bits, l->idx[k]);
}

/* Whether the user must not get item idx (ignoring hidden state). */
static int user_excludes(const struct user_excl *ex,
                         const struct excl_list *l, uint32_t idx)
{
    return has(ex->snap_seen, ex->n_snap_seen, idx) ||
           has(ex->ov_seen, ex->n_ov_seen, idx) || has(l->idx, l->n, idx);
}

/* ---- overlay candidates ---- */

/*
 * Inner product in double, summed in 8 independent lanes (d mod 8) and
 * then lane by lane: one chain of D dependent adds would cost four
 * cycles each, and every scored request takes one per overlay item.
 * The order is fixed, so an item's score is the same wherever it is
 * computed (merge_overlay, answer_stands).
 */
static double dot(const float *a, const float *b, size_t n)
{
    double lane[8] = {0}, acc = 0;
    size_t d = 0;

    for (; d + 8 <= n; d += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += (double)a[d + j] * b[d + j];
    for (; d < n; d++)
        lane[d % 8] += (double)a[d] * b[d];
    for (int j = 0; j < 8; j++)
        acc += lane[j];
    return acc;
}

/* An overlay item's score for query q: the inner product, or with
 * cosine set (q of unit length) the cosine. */
static float overlay_score(const float *q, const float *vec, size_t dim,
                           int cosine)
{
    double norm;

    if (!cosine)
        return (float)dot(q, vec, dim);
    norm = sqrt(dot(vec, vec, dim));
    return norm > 0 ? (float)(dot(q, vec, dim) / norm) : 0.0f;
}

/*
 * Merge the overlay's recommendable items into the selection idx/score
 * (n of k, best first). cosine: score by cosine with q (unit) instead of
 * the inner product. skip: a view index never to return (UINT32_MAX:
 * none). Returns the new count, or -ENOMEM.
 */
static long merge_overlay(const struct sgbd_view *v, const float *q,
                          size_t k, const struct user_excl *ex,
                          const struct excl_list *l, int cosine,
                          uint32_t skip, uint32_t *idx, float *score,
                          size_t n)
{
    const float *const *vecs;
    const uint32_t *index;
    size_t n_live = sgbd_overlay_live(v->ov, &vecs, &index);
    size_t dim = v->snap->dim;
    struct sgbd_topk t;

    if (n_live == 0)
        return (long)n;
    if (sgbd_topk_init(&t, k) != 0)
        return -ENOMEM;
    for (size_t j = 0; j < n; j++)
        sgbd_topk_push(&t, &score[j], 1, idx[j], NULL);
    for (size_t e = 0; e < n_live; e++) {
        uint32_t i = index[e];
        float sc;

        if (e + 4 < n_live)         /* the vectors are apart in memory */
            __builtin_prefetch(vecs[e + 4]);
        if (i == skip)
            continue;
        sc = overlay_score(q, vecs[e], dim, cosine);
        if (sc < t.thr_score)
            continue;               /* the selection would refuse it */
        if ((ex && user_excludes(ex, l, i)) || (!ex && has(l->idx, l->n, i)))
            continue;
        sgbd_topk_push(&t, &sc, 1, i, NULL);
    }
    n = sgbd_topk_finish(&t, idx, score);
    sgbd_topk_deinit(&t);
    return (long)n;
}

/* ---- the popular fallback ---- */

static int hidden_now(const struct sgbd_view *v, uint32_t i)
{
    const uint64_t *mask = sgbd_overlay_base_mask(v->ov);
    const struct sgbd_overlay_item *e;
    const char *id;

    if (!mask || !sgbd_bitset_test(mask, i))
        return sgbd_snapshot_hidden(v->snap, i);
    id = sgbd_snapshot_item_id(v->snap, i);
    e = sgbd_overlay_find_item(v->ov, id, strlen(id));
    return e ? e->hidden : sgbd_snapshot_hidden(v->snap, i);
}

/* The k most popular items the (unknown) user may get; score = count. */
static size_t popular(const struct sgbd_view *v, size_t k,
                      const struct user_excl *ex, const struct excl_list *l,
                      uint32_t *idx, float *score)
{
    const struct sgbd_snapshot *s = v->snap;
    size_t n = 0;

    for (uint32_t p = 0; p < s->n_items && n < k; p++) {
        uint32_t i = s->popular[p];
        if (hidden_now(v, i) || user_excludes(ex, l, i))
            continue;
        idx[n] = i;
        score[n++] = (float)s->pop_count[i];
    }
    return n;
}

/* ---- writing results ---- */

static void write_items(struct sgbd_json *w, const struct sgbd_view *v,
                        const uint32_t *idx, const float *score, size_t n)
{
    sgbd_json_key(w, "items");
    sgbd_json_begin_array(w);
    for (size_t j = 0; j < n; j++) {
        const char *id = sgbd_overlay_item_id(v->snap, v->ov, idx[j]);
        sgbd_json_begin_object(w);
        sgbd_json_key(w, "item_id");
        sgbd_json_str(w, id ? id : "");
        sgbd_json_key(w, "score");
        sgbd_json_float(w, score[j]);
        sgbd_json_end(w);
    }
    sgbd_json_end(w);
}

/* One recommendation object: user_id, model_version, items, fallback. */
static void write_reco(struct sgbd_json *w, const struct sgbd_view *v,
                       const char *uid, size_t uid_len, const uint32_t *idx,
                       const float *score, size_t n, int fallback)
{
    sgbd_json_begin_object(w);
    sgbd_json_key(w, "user_id");
    sgbd_json_strn(w, uid, uid_len);
    sgbd_json_key(w, "model_version");
    sgbd_json_u64(w, v->version);
    write_items(w, v, idx, score, n);
    if (fallback) {
        sgbd_json_key(w, "fallback");
        sgbd_json_str(w, "popular");
    }
    sgbd_json_end(w);
}

/* ---- one user ---- */

struct reco_out {
    uint32_t *idx;                  /* (k) */
    float *score;                   /* (k) */
    size_t n;
    int fallback;
};

/*
 * Top-k for user uid: personalised when the snapshot knows the user,
 * popular items otherwise. bits: caller scratch of base_words words.
 */
static int recommend_one(const struct sgbd_view *v, const char *uid,
                         size_t len, size_t k, const struct excl_list *l,
                         uint64_t *bits, struct reco_out *out)
{
    const struct sgbd_snapshot *s = v->snap;
    struct sgbd_mat items = sgbd_mat_view(s->items, s->n_items, s->dim);
    struct user_excl ex;
    uint32_t u;
    long n;
    int known = sgbd_snapshot_user_index(s, uid, len, &u) == 0;

    user_excl_fill(v, uid, len, known ? (long)u : -1, l, bits, &ex);
    out->fallback = !known;
    if (!known) {
        out->n = popular(v, k, &ex, l, out->idx, out->score);
        return 0;
    }
    n = s->items_screen.cols
            ? sgbd_topk_user_screened(s->users + (size_t)u * s->dim, items,
                                      &s->items_screen, k, bits, out->idx,
                                      out->score)
            : sgbd_topk_user(s->users + (size_t)u * s->dim, items, k, bits,
                             out->idx, out->score);
    if (n >= 0)
        n = merge_overlay(v, s->users + (size_t)u * s->dim, k, &ex, l, 0,
                          UINT32_MAX, out->idx, out->score, (size_t)n);
    if (n < 0)
        return (int)n;
    out->n = (size_t)n;
    return 0;
}

static int reco_alloc(struct reco_out *o, size_t k)
{
    o->idx = malloc(k * sizeof(uint32_t));
    o->score = malloc(k * sizeof(float));
    o->n = 0;
    return o->idx && o->score ? 0 : -ENOMEM;
}

static void reco_free(struct reco_out *o)
{
    free(o->idx);
    free(o->score);
}

/*
 * The answer cache (reco_cache.h) serves repeats of requests that exclude
 * nothing beyond the defaults: a user's recommendations, fixed by the
 * user, k and the view's counters, and an item's similar items, fixed by
 * the item, k and the counters shared by all users.
 */
enum { SPACE_USER, SPACE_ITEM };

/* What a cached answer ranks against, for the check of item edits. */
struct asked {
    const float *q;                 /* (D) query; NULL: the user's row */
    uint32_t self;                  /* the asked item, or UINT32_MAX */
    int cosine;                     /* similar items */
};

static const struct asked by_user = {NULL, UINT32_MAX, 0};

/* The key of id's answer at k on the call's view. */
static void cache_key(const struct call *c, const char *id, size_t len,
                      size_t k, uint32_t space, struct sgbd_reco_key *key)
{
    struct sgbd_overlay_stamp st = sgbd_overlay_stamp(c->view.ov);

    key->publication = st.publications;
    key->item_writes = st.item_writes;
    key->user_writes = space == SPACE_USER
                           ? sgbd_overlay_user_writes(c->view.ov, id, len)
                           : 0;
    key->user = id;
    key->user_len = len;
    key->k = (uint32_t)k;
    key->space = space;
}

static int cacheable(const struct call *c, const struct excl_list *l,
                     size_t k, uint32_t space, struct sgbd_reco_key *key)
{
    if (!c->api->cache || l->n > 0)
        return 0;
    cache_key(c, c->id, c->id_len, k, space, key);
    return 1;
}

/*
 * Whether the item edits made since answer a was scored leave it as it is.
 * An edit can change it only by touching the asked item or one of the
 * answer's items, or by making an item visible that ranks above its last
 * (ties: lower index first), or any visible item when a is short of k.
 * The user's exclusions are not consulted: a seen item may retire an
 * answer it would not have changed, which costs a scoring, never a wrong
 * answer.
 */
static int answer_stands(const struct sgbd_view *v, const struct asked *ask,
                         size_t k, const struct sgbd_reco_answer *a)
{
    const struct sgbd_overlay_item *const *edited;
    size_t n = sgbd_overlay_edited_since(v->ov, a->item_writes, &edited);
    size_t dim = v->snap->dim;

    for (size_t e = 0; e < n; e++) {
        const struct sgbd_overlay_item *it = edited[e];
        float sc, last;

        if (it->index == ask->self)
            return 0;
        for (size_t j = 0; j < a->n; j++)
            if (a->idx[j] == it->index)
                return 0;
        if (!it->vec || it->hidden)
            continue;
        if (a->n < k)
            return 0;
        sc = overlay_score(ask->q, it->vec, dim, ask->cosine);
        last = a->score[a->n - 1];
        if (!(sc < last) && !(sc == last && it->index > a->idx[a->n - 1]))
            return 0;               /* it would rank in (NaN: assume so) */
    }
    return 1;
}

/* The cached answer for key if it still stands (renewed then): 0 and *a,
 * or -1 (a miss, or overtaken by item edits) to score the request. */
static int cached_answer(struct call *c, const struct sgbd_reco_key *key,
                         size_t k, const struct asked *ask,
                         struct sgbd_reco_answer *a)
{
    const struct sgbd_snapshot *s = c->view.snap;
    struct asked use = *ask;
    uint32_t u;

    if (sgbd_reco_cache_get(c->api->cache, key, a) != 0)
        return -1;
    if (a->item_writes < key->item_writes) {
        if (!use.q && sgbd_snapshot_user_index(s, key->user, key->user_len,
                                               &u) == 0)
            use.q = s->users + (size_t)u * s->dim;
        if (!use.q || !answer_stands(&c->view, &use, k, a)) {
            sgbd_reco_cache_overtaken(c->api->cache, key);
            sgbd_reco_answer_free(a);
            return -1;
        }
        sgbd_reco_cache_renew(c->api->cache, key, a);
    }
    return 0;
}

/* Answer from the cache: 0, or -1 to score the request. */
static int reply_cached(struct call *c, const struct sgbd_reco_key *key,
                        size_t k, const struct asked *ask)
{
    struct sgbd_reco_answer a;

    if (cached_answer(c, key, k, ask, &a) != 0)
        return -1;
    if (key->space == SPACE_USER)
        sgbd_metrics_http_batch(c->api->metrics, 1);
    api_reply_json(c, 200, a.body, a.len);  /* the block goes with it */
    return 0;
}

/* Keep the answer just sent for key. */
static void keep_reply(struct call *c, const struct sgbd_reco_key *key,
                       uint32_t *idx, float *score, size_t n)
{
    struct sgbd_reco_answer a = {c->resp->body, c->resp->len, idx, score, n,
                                 0};

    if (c->resp->status == 200)
        sgbd_reco_cache_put(c->api->cache, key, &a);
}

void api_h_recommend(struct call *c)
{
    struct excl_list l = {0};
    struct reco_out out = {0};
    struct sgbd_reco_key key;
    uint64_t *bits = NULL;
    struct sgbd_json w;
    size_t k;
    int rc, cache;

    if (!c->view.snap) {
        api_fail(c, 503, "no_model", "no model has been published yet");
        return;
    }
    if (api_query_k(c, &k) != 0 || parse_exclude_query(c, &l) != 0)
        goto out;
    cache = cacheable(c, &l, k, SPACE_USER, &key);
    if (cache && reply_cached(c, &key, k, &by_user) == 0)
        goto out;
    bits = malloc(base_words(&c->view) * sizeof(uint64_t) + 8);
    if (!bits || reco_alloc(&out, k) != 0) {
        api_fail(c, 500, "internal", "out of memory");
        goto out;
    }
    rc = recommend_one(&c->view, c->id, c->id_len, k, &l, bits, &out);
    if (rc != 0) {
        api_fail_rc(c, rc);
        goto out;
    }
    sgbd_metrics_http_batch(c->api->metrics, 1);
    sgbd_json_init(&w);
    write_reco(&w, &c->view, c->id, c->id_len, out.idx, out.score, out.n,
               out.fallback);
    api_reply(c, 200, &w);
    /* Unknown users are not kept: their popular items cost less to find
     * than to cache, and made-up ids would crowd real users out. */
    if (cache && !out.fallback)
        keep_reply(c, &key, out.idx, out.score, out.n);
out:
    reco_free(&out);
    free(bits);
    free(l.idx);
}

/* ---- batches ---- */

struct batch {
    size_t n, k, words;
    const char **uid;               /* (n) borrowed from the JSON body */
    size_t *uid_len;                /* (n) */
    long *known;                    /* (n) snapshot index or -1 */
    uint64_t *bits;                 /* (n, words) */
    struct user_excl *ex;           /* (n) */
    uint32_t *idx;                  /* (n, k) */
    float *score;                   /* (n, k) */
    size_t *count;                  /* (n) */
    struct sgbd_reco_answer *hit;   /* (n) from the cache; body NULL: none */
    struct sgbd_reco_key *key;      /* (n) cache keys, NULL: no cache */
};

#define ANSWERED (-2)               /* known[j]: the cache answered user j */

static void batch_free(struct batch *b)
{
    for (size_t j = 0; b->hit && j < b->n; j++)
        sgbd_reco_answer_free(&b->hit[j]);
    free(b->hit);
    free(b->key);
    free(b->uid);
    free(b->uid_len);
    free(b->known);
    free(b->bits);
    free(b->ex);
    free(b->idx);
    free(b->score);
    free(b->count);
}

static int batch_alloc(struct batch *b, size_t n, size_t k, size_t words)
{
    b->n = n;
    b->k = k;
    b->words = words;
    b->uid = calloc(n, sizeof(*b->uid));
    b->uid_len = calloc(n, sizeof(*b->uid_len));
    b->known = calloc(n, sizeof(*b->known));
    b->bits = malloc(n * words * sizeof(uint64_t) + 8);
    b->ex = calloc(n, sizeof(*b->ex));
    b->idx = malloc(n * k * sizeof(uint32_t));
    b->score = malloc(n * k * sizeof(float));
    b->count = calloc(n, sizeof(*b->count));
    b->hit = calloc(n, sizeof(*b->hit));
    return b->uid && b->uid_len && b->known && b->bits && b->ex && b->idx &&
                   b->score && b->count && b->hit
               ? 0
               : -ENOMEM;
}

/* Read user_ids into b (allocated for them); -1 when answered. */
static int batch_parse(struct call *c, json_t *body, size_t k,
                       struct batch *b)
{
    json_t *ids = json_object_get(body, "user_ids"), *v;
    size_t n, j;

    if (!json_is_array(ids) || json_array_size(ids) == 0) {
        api_fail(c, 400, "bad_request", "'user_ids' must be a non-empty "
                 "array of ids");
        return -1;
    }
    n = json_array_size(ids);
    if (n > (size_t)c->max_batch) {
        api_fail(c, 400, "too_many_users", "%zu users in one batch, at most "
                 "%d", n, c->max_batch);
        return -1;
    }
    if (batch_alloc(b, n, k, base_words(&c->view)) != 0) {
        api_fail(c, 500, "internal", "out of memory");
        return -1;
    }
    json_array_foreach(ids, j, v) {
        if (!json_is_string(v)) {
            api_fail(c, 400, "bad_request", "user_ids[%zu] must be a string",
                     j);
            return -1;
        }
        if (api_check_id(c, json_string_value(v), json_string_length(v),
                         "user id") != 0)
            return -1;
        b->uid[j] = json_string_value(v);
        b->uid_len[j] = json_string_length(v);
    }
    return 0;
}

/*
 * Score the known users of b together: their rows of U gathered into
 * (B, D), then one pass of the screen over the catalogue for the whole
 * batch (serial, on this thread; the same answers as single requests,
 * bit for bit), or, where the snapshot has no screen, one
 * sgemm per item block on the compute pool, one batch at a time.
 */
static int batch_score(struct call *c, struct batch *b)
{
    const struct sgbd_snapshot *s = c->view.snap;
    size_t nk = 0, j, r = 0;
    const uint64_t **ex_bits = NULL;
    float *rows = NULL;
    uint32_t *idx = NULL;
    float *score = NULL;
    size_t *cnt = NULL;
    int rc = -ENOMEM;

    for (j = 0; j < b->n; j++)
        nk += b->known[j] >= 0;
    if (nk == 0)
        return 0;
    rows = malloc(nk * s->dim * sizeof(float));
    ex_bits = malloc(nk * sizeof(*ex_bits));
    idx = malloc(nk * b->k * sizeof(uint32_t));
    score = malloc(nk * b->k * sizeof(float));
    cnt = malloc(nk * sizeof(size_t));
    if (!rows || !ex_bits || !idx || !score || !cnt)
        goto out;
    for (j = 0; j < b->n; j++) {
        if (b->known[j] < 0)
            continue;
        memcpy(rows + r * s->dim, s->users + (size_t)b->known[j] * s->dim,
               s->dim * sizeof(float));
        ex_bits[r++] = b->ex[j].bits;
    }
    if (s->items_screen.cols) {
        rc = sgbd_topk_users_screened(
            sgbd_mat_view(rows, nk, s->dim),
            sgbd_mat_view(s->items, s->n_items, s->dim), &s->items_screen,
            b->k, ex_bits, idx, score, cnt);
    } else {
        pthread_mutex_lock(&c->api->batch_lock);
        rc = sgbd_topk_users(sgbd_mat_view(rows, nk, s->dim),
                             sgbd_mat_view(s->items, s->n_items, s->dim),
                             b->k, ex_bits, idx, score, cnt);
        pthread_mutex_unlock(&c->api->batch_lock);
    }
    for (j = 0, r = 0; rc == 0 && j < b->n; j++) {
        if (b->known[j] < 0)
            continue;
        memcpy(b->idx + j * b->k, idx + r * b->k, cnt[r] * sizeof(uint32_t));
        memcpy(b->score + j * b->k, score + r * b->k, cnt[r] * sizeof(float));
        b->count[j] = cnt[r++];
    }
out:
    free(rows);
    free(ex_bits);
    free(idx);
    free(score);
    free(cnt);
    return rc;
}

/* Everything but the product: exclusions, fallback, overlay merge. */
static int batch_run(struct call *c, struct batch *b,
                     const struct excl_list *l)
{
    const struct sgbd_snapshot *s = c->view.snap;
    size_t j;
    int rc;

    for (j = 0; j < b->n; j++) {
        uint32_t u;

        if (b->hit[j].body) {
            b->known[j] = ANSWERED;
            continue;
        }
        b->known[j] = sgbd_snapshot_user_index(s, b->uid[j], b->uid_len[j],
                                               &u) == 0 ? (long)u : -1;
        user_excl_fill(&c->view, b->uid[j], b->uid_len[j], b->known[j], l,
                       b->bits + j * b->words, &b->ex[j]);
    }
    rc = batch_score(c, b);
    for (j = 0; rc == 0 && j < b->n; j++) {
        uint32_t *idx = b->idx + j * b->k;
        float *score = b->score + j * b->k;
        long n;

        if (b->known[j] == ANSWERED)
            continue;
        if (b->known[j] < 0) {
            b->count[j] = popular(&c->view, b->k, &b->ex[j], l, idx, score);
            continue;
        }
        n = merge_overlay(&c->view, s->users + (size_t)b->known[j] * s->dim,
                          b->k, &b->ex[j], l, 0, UINT32_MAX, idx, score,
                          b->count[j]);
        if (n < 0)
            return (int)n;
        b->count[j] = (size_t)n;
    }
    return rc;
}

/*
 * Write scored user j of b into w as the single route writes it (so that
 * bodies from the cache and from scoring read alike) and keep that body
 * for the single route's repeats.
 */
static void write_kept(struct call *c, struct sgbd_json *w,
                       const struct batch *b, size_t j)
{
    struct sgbd_reco_answer a = {0};
    struct sgbd_json one;

    sgbd_json_init(&one);
    write_reco(&one, &c->view, b->uid[j], b->uid_len[j], b->idx + j * b->k,
               b->score + j * b->k, b->count[j], 0);
    a.body = sgbd_json_take(&one, &a.len);
    if (!a.body) {                  /* out of memory: w will fail too */
        w->failed = 1;
        return;
    }
    sgbd_json_raw(w, a.body, a.len);
    a.idx = b->idx + j * b->k;
    a.score = b->score + j * b->k;
    a.n = b->count[j];
    sgbd_reco_cache_put(c->api->cache, &b->key[j], &a);
    free(a.body);
}

void api_h_batch(struct call *c)
{
    static const char *const allowed[] = {"user_ids", "k", "exclude", NULL};
    struct batch b = {0};
    struct excl_list l = {0};
    struct sgbd_json w;
    json_t *body;
    size_t k;
    int rc, cache;

    if (!c->view.snap) {
        api_fail(c, 503, "no_model", "no model has been published yet");
        return;
    }
    if (!(body = api_body_object(c)))
        return;
    if (api_only_members(c, body, allowed, "body") != 0 ||
        api_json_k(c, json_object_get(body, "k"), &k) != 0 ||
        parse_exclude_json(c, json_object_get(body, "exclude"), &l) != 0 ||
        batch_parse(c, body, k, &b) != 0)
        goto out;
    cache = c->api->cache && l.n == 0;
    if (cache && !(b.key = malloc(b.n * sizeof(*b.key)))) {
        api_fail(c, 500, "internal", "out of memory");
        goto out;
    }
    for (size_t j = 0; cache && j < b.n; j++) {
        cache_key(c, b.uid[j], b.uid_len[j], k, SPACE_USER, &b.key[j]);
        cached_answer(c, &b.key[j], k, &by_user, &b.hit[j]);
    }
    rc = batch_run(c, &b, &l);
    if (rc != 0) {
        api_fail_rc(c, rc);
        goto out;
    }
    sgbd_metrics_http_batch(c->api->metrics, b.n);
    api_begin_body(c, &w);
    sgbd_json_key(&w, "results");
    sgbd_json_begin_array(&w);
    for (size_t j = 0; j < b.n; j++) {
        if (b.hit[j].body)          /* a single request's body, as it is */
            sgbd_json_raw(&w, b.hit[j].body, b.hit[j].len);
        else if (cache && b.known[j] >= 0)
            write_kept(c, &w, &b, j);
        else
            write_reco(&w, &c->view, b.uid[j], b.uid_len[j], b.idx + j * k,
                       b.score + j * k, b.count[j], b.known[j] < 0);
    }
    sgbd_json_end(&w);
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
out:
    batch_free(&b);
    free(l.idx);
    json_decref(body);
}

/* ---- similar items ---- */

/* q (D) = vec / ||vec|| (0 for a zero vector). */
static void unit_query(const float *vec, size_t dim, float *q)
{
    double norm = sqrt(dot(vec, vec, dim));

    for (size_t d = 0; d < dim; d++)
        q[d] = norm > 0 ? (float)(vec[d] / norm) : 0.0f;
}

/* bits = base mask | exclude list | the item. */
static void similar_inputs(const struct sgbd_view *v, uint32_t self,
                           const struct excl_list *l, uint64_t *bits)
{
    const struct sgbd_snapshot *s = v->snap;
    const uint64_t *mask = sgbd_overlay_base_mask(v->ov);

    memcpy(bits, mask ? mask : s->hidden, base_words(v) * sizeof(uint64_t));
    for (size_t j = 0; j < l->n; j++)
        if (l->idx[j] < s->n_items)
            sgbd_bitset_set(bits, l->idx[j]);
    if (self < s->n_items)
        sgbd_bitset_set(bits, self);
}

/* The item of the path, resolved; -1 when answered (404, 409). */
static int similar_item(struct call *c, struct sgbd_item_ref *ref)
{
    if (sgbd_overlay_resolve_item(c->view.snap, c->view.ov, c->id,
                                  c->id_len, ref) != 0 || ref->hidden) {
        api_fail(c, 404, "item_not_found", "no item '%.64s'", c->id);
        return -1;
    }
    if (!ref->vec) {
        api_fail(c, 409, "not_recommendable", "item '%.64s' has no vector "
                 "yet (no features, or an ID-only model): it gets one at the "
                 "next retrain", c->id);
        return -1;
    }
    return 0;
}

void api_h_similar(struct call *c)
{
    const struct sgbd_snapshot *s = c->view.snap;
    struct excl_list l = {0};
    struct sgbd_item_ref ref;
    struct reco_out out = {0};
    uint64_t *bits = NULL;
    float *q = NULL;
    struct sgbd_reco_key key;
    struct sgbd_mat items;
    struct sgbd_json w;
    size_t k;
    long n;
    int cache;

    if (!s) {
        api_fail(c, 503, "no_model", "no model has been published yet");
        return;
    }
    if (api_query_k(c, &k) != 0 || parse_exclude_query(c, &l) != 0 ||
        similar_item(c, &ref) != 0)
        goto out;
    q = malloc(s->dim * sizeof(float));
    if (!q) {
        api_fail(c, 500, "internal", "out of memory");
        goto out;
    }
    unit_query(ref.vec, s->dim, q);
    cache = cacheable(c, &l, k, SPACE_ITEM, &key);
    if (cache && reply_cached(c, &key, k,
                              &(struct asked){q, ref.index, 1}) == 0)
        goto out;
    bits = malloc(base_words(&c->view) * sizeof(uint64_t) + 8);
    if (!bits || reco_alloc(&out, k) != 0) {
        api_fail(c, 500, "internal", "out of memory");
        goto out;
    }
    similar_inputs(&c->view, ref.index, &l, bits);
    items = sgbd_mat_view(s->items_unit, s->n_items, s->dim);
    n = s->unit_screen.cols
            ? sgbd_topk_user_screened(q, items, &s->unit_screen, k, bits,
                                      out.idx, out.score)
            : sgbd_topk_user(q, items, k, bits, out.idx, out.score);
    if (n >= 0)
        n = merge_overlay(&c->view, q, k, NULL, &l, 1, ref.index, out.idx,
                          out.score, (size_t)n);
    if (n < 0) {
        api_fail_rc(c, (int)n);
        goto out;
    }
    api_begin_body(c, &w);
    sgbd_json_key(&w, "item_id");
    sgbd_json_strn(&w, c->id, c->id_len);
    write_items(&w, &c->view, out.idx, out.score, (size_t)n);
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
    if (cache)
        keep_reply(c, &key, out.idx, out.score, (size_t)n);
out:
    reco_free(&out);
    free(bits);
    free(q);
    free(l.idx);
}
