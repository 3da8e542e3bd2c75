/*
 * holdout.c - one consistent store read for a retrain, and the dataset
 * with its live validation holdout (holdout.h states the rule).
 */
#include "sgbd/holdout.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/store.h"

/* ---- the store read ---- */

struct id_buf {
    char *buf;
    size_t len, cap;
    size_t *off;                    /* (n) start of each id */
    size_t n, want, base;           /* base: n when this walk began */
};

static int id_add(void *ctx, uint32_t index, const char *id, size_t id_len)
{
    struct id_buf *b = ctx;

    if (index != b->n - b->base || b->n >= b->want)
        return sgbd_errf(SGBD_E_CORRUPT, "store: id index %u out of order "
                         "(expected %zu of %zu)", index, b->n - b->base,
                         b->want - b->base);
    if (b->len + id_len + 1 > b->cap) {
        size_t cap = (b->cap ? 2 * b->cap : 4096) + id_len + 1;
        char *p = realloc(b->buf, cap);
        if (!p)
            return -ENOMEM;
        b->buf = p;
        b->cap = cap;
    }
    b->off[b->n++] = b->len;
    memcpy(b->buf + b->len, id, id_len);
    b->buf[b->len + id_len] = '\0';
    b->len += id_len + 1;
    return 0;
}

struct ev_buf {
    struct sgbd_holdout_event *ev;
    size_t n, cap;
};

static int ev_add(void *ctx, const struct sgbd_store_interaction *in)
{
    struct ev_buf *b = ctx;

    if (b->n == b->cap)
        return sgbd_errf(SGBD_E_CORRUPT, "store: more interactions than "
                         "counted in one snapshot");
    b->ev[b->n++] = (struct sgbd_holdout_event){in->seq, in->user, in->item,
                                                in->timestamp, in->label};
    return 0;
}

/* Users' and items' ids into one packed buffer with pointer arrays. */
static int read_ids(struct sgbd_store_read *r, struct sgbd_holdout_data *d)
{
    struct id_buf b = {0};
    size_t n = (size_t)d->n_users + d->n_items;
    int rc;

    b.off = malloc((n ? n : 1) * sizeof(*b.off));
    d->user_ids = malloc((d->n_users ? d->n_users : 1) * sizeof(char *));
    d->item_ids = malloc((d->n_items ? d->n_items : 1) * sizeof(char *));
    rc = b.off && d->user_ids && d->item_ids ? 0 : -ENOMEM;
    b.want = d->n_users;
    if (rc == 0)
        rc = sgbd_store_read_user_ids(r, id_add, &b);
    b.want = n;
    b.base = b.n;
    if (rc == 0 && b.n == d->n_users)
        rc = sgbd_store_read_item_ids(r, id_add, &b);
    if (rc == 0 && b.n != n)
        rc = sgbd_errf(SGBD_E_CORRUPT, "store: %zu ids for %u users and %u "
                       "items", b.n, d->n_users, d->n_items);
    d->ids = b.buf;
    for (size_t k = 0; rc == 0 && k < n; k++) {
        if (k < d->n_users)
            d->user_ids[k] = b.buf + b.off[k];
        else
            d->item_ids[k - d->n_users] = b.buf + b.off[k];
    }
    free(b.off);
    return rc;
}

static int read_features(struct sgbd_store_read *r,
                         struct sgbd_holdout_data *d)
{
    int rc = 0;

    for (int c = 0; c < d->n_channels && rc == 0; c++) {
        struct sgbd_channel *ch = &d->feat.ch[c];

        rc = sgbd_mat_alloc(&ch->m, d->n_items ? d->n_items : 1,
                            d->channel_widths[c]);
        if (rc < 0)
            break;
        ch->m.rows = d->n_items;
        memcpy(ch->name, d->channel_names[c], SGBD_CHANNEL_NAME);
        d->feat.n = c + 1;
        d->present[c] = calloc(d->n_items ? d->n_items : 1, 1);
        if (!d->present[c])
            return -ENOMEM;
        rc = sgbd_store_read_channel(r, ch->name, ch->m.data, d->n_items,
                                     d->channel_widths[c], d->present[c]);
    }
    return rc;
}

static int read_snapshot(struct sgbd_store_read *r, int with_features,
                         struct sgbd_holdout_data *d)
{
    struct sgbd_store_counts c;
    struct ev_buf eb = {0};
    int rc = sgbd_store_read_counts(r, &c);

    if (rc < 0)
        return rc;
    if (c.users > UINT32_MAX || c.items > UINT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "store: %llu users, %llu items: "
                         "over 2^32", (unsigned long long)c.users,
                         (unsigned long long)c.items);
    d->n_users = (uint32_t)c.users;
    d->n_items = (uint32_t)c.items;
    d->last_seq = c.last_seq;
    rc = read_ids(r, d);
    d->hidden = calloc(d->n_items ? d->n_items : 1, 1);
    if (rc == 0 && !d->hidden)
        rc = -ENOMEM;
    if (rc == 0)
        rc = sgbd_store_read_hidden(r, d->hidden, d->n_items);
    eb.cap = (size_t)c.interactions;
    eb.ev = malloc((eb.cap ? eb.cap : 1) * sizeof(*eb.ev));
    if (rc == 0 && !eb.ev)
        rc = -ENOMEM;
    if (rc == 0)
        rc = sgbd_store_read_interactions(r, 0, ev_add, &eb);
    d->events = eb.ev;
    d->n_events = eb.n;
    if (rc == 0 && with_features)
        rc = read_features(r, d);
    return rc;
}

int sgbd_holdout_read(struct sgbd_store *s, int with_features,
                      struct sgbd_holdout_data *d)
{
    struct sgbd_store_channel ch[SGBD_MAX_CHANNELS];
    struct sgbd_store_read *r = NULL;
    int n = 0, rc;

    memset(d, 0, sizeof(*d));
    rc = sgbd_store_channels(s, ch, &n);
    for (int c = 0; rc == 0 && c < n; c++) {
        memcpy(d->channel_names[c], ch[c].name, SGBD_CHANNEL_NAME);
        d->channel_widths[c] = ch[c].width;
    }
    d->n_channels = rc == 0 ? n : 0;
    if (rc == 0)
        rc = sgbd_store_read_begin(s, &r);
    if (rc == 0)
        rc = read_snapshot(r, with_features, d);
    sgbd_store_read_end(r);   /* the copy is ours: end the snapshot now */
    if (rc < 0)
        sgbd_holdout_data_free(d);
    return rc;
}

void sgbd_holdout_data_free(struct sgbd_holdout_data *d)
{
    if (!d)
        return;
    free(d->events);
    free(d->user_ids);
    free(d->item_ids);
    free(d->ids);
    free(d->hidden);
    for (int c = 0; c < SGBD_MAX_CHANNELS; c++)
        free(d->present[c]);
    sgbd_features_free(&d->feat);
    memset(d, 0, sizeof(*d));
}

/* ---- per-user sets ---- */

/* Sets of the events k with cls[k] == want (counting sort by user). */
static int build_sets(struct sgbd_itemsets *s, uint32_t n_users,
                      const struct sgbd_holdout_event *ev, size_t n,
                      const uint8_t *cls, uint8_t want)
{
    uint64_t *fill;

    s->ptr = calloc((size_t)n_users + 1, sizeof(*s->ptr));
    if (!s->ptr)
        return -ENOMEM;
    for (size_t k = 0; k < n; k++)
        if (cls[k] == want)
            s->ptr[ev[k].user + 1]++;
    for (uint32_t u = 0; u < n_users; u++)
        s->ptr[u + 1] += s->ptr[u];
    s->items = malloc((s->ptr[n_users] ? s->ptr[n_users] : 1) *
                      sizeof(*s->items));
    fill = malloc(((size_t)n_users + 1) * sizeof(*fill));
    if (!s->items || !fill) {
        free(fill);
        return -ENOMEM;
    }
    memcpy(fill, s->ptr, ((size_t)n_users + 1) * sizeof(*fill));
    for (size_t k = 0; k < n; k++)
        if (cls[k] == want)
            s->items[fill[ev[k].user]++] = ev[k].item;
    free(fill);
    sgbd_itemsets_sort_unique(s, n_users);
    return 0;
}

/* ---- the holdout rule ---- */

#define CLS_SKIP 255                /* outside the prefix */

struct user_stat {
    uint32_t n_train;
    int has_valid;
    size_t latest;                  /* event index of the latest train */
};

static int later(const struct sgbd_holdout_event *a,
                 const struct sgbd_holdout_event *b)
{
    if (a->timestamp != b->timestamp)
        return a->timestamp > b->timestamp;
    return a->seq > b->seq;
}

/* cls[k]: the split of event k after the rule, CLS_SKIP outside. */
static void classify(const struct sgbd_holdout_event *ev, size_t n,
                     const struct sgbd_holdout_opts *o, struct user_stat *st,
                     uint8_t *cls)
{
    for (size_t k = 0; k < n; k++) {
        const struct sgbd_holdout_event *e = &ev[k];
        struct user_stat *u;

        cls[k] = CLS_SKIP;
        if (e->seq > o->max_seq || e->user >= o->n_users ||
            e->item >= o->n_items || e->label > SGBD_LABEL_TEST)
            continue;
        u = &st[e->user];
        cls[k] = e->label;
        if (e->label == SGBD_LABEL_VALID)
            u->has_valid = 1;
        if (e->label != SGBD_LABEL_TRAIN)
            continue;
        if (u->n_train == 0 || later(e, &ev[u->latest]))
            u->latest = k;
        u->n_train++;
    }
}

/* Move every train row of each qualifying user's latest item to valid. */
static size_t hold_out(const struct sgbd_holdout_event *ev, size_t n,
                       const struct sgbd_holdout_opts *o,
                       const struct user_stat *st, uint8_t *cls)
{
    uint32_t *others = calloc((size_t)o->n_users + 1, sizeof(*others));
    size_t held = 0;

    if (!others)
        return (size_t)-1;
    for (size_t k = 0; k < n; k++)
        if (cls[k] == SGBD_LABEL_TRAIN &&
            ev[k].item != ev[st[ev[k].user].latest].item)
            others[ev[k].user]++;
    for (size_t k = 0; k < n; k++) {
        uint32_t user = ev[k].user;
        const struct user_stat *u;

        if (cls[k] != SGBD_LABEL_TRAIN)
            continue;
        u = &st[user];
        if (o->min_train <= 0 || u->has_valid ||
            u->n_train < (uint32_t)o->min_train || others[user] == 0 ||
            ev[k].item != ev[u->latest].item)
            continue;
        cls[k] = SGBD_LABEL_VALID;
        held += k == u->latest;
    }
    free(others);
    return held;
}

/* Train rows, the cold-start filter on valid/test, negatives. */
static int build_parts(struct sgbd_dataset *d,
                       const struct sgbd_holdout_event *ev, size_t n,
                       uint8_t *cls)
{
    uint8_t *has_train = calloc(d->n_users, 1), *seen = NULL;
    size_t t = 0, m = 0;
    int rc = 0;

    d->train_users = malloc((d->n_train ? d->n_train : 1) * sizeof(uint32_t));
    d->train_items = malloc((d->n_train ? d->n_train : 1) * sizeof(uint32_t));
    seen = calloc(d->n_items, 1);
    if (!has_train || !seen || !d->train_users || !d->train_items) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        if (cls[k] != SGBD_LABEL_TRAIN)
            continue;
        d->train_users[t] = ev[k].user;
        d->train_items[t++] = ev[k].item;
        has_train[ev[k].user] = 1;
        seen[ev[k].item] = 1;
    }
    for (size_t k = 0; k < n; k++)
        if (cls[k] != CLS_SKIP && cls[k] != SGBD_LABEL_TRAIN &&
            !has_train[ev[k].user])
            cls[k] = CLS_SKIP;
    rc = build_sets(&d->train, d->n_users, ev, n, cls, SGBD_LABEL_TRAIN);
    if (rc == 0)
        rc = build_sets(&d->valid, d->n_users, ev, n, cls, SGBD_LABEL_VALID);
    if (rc == 0)
        rc = build_sets(&d->test, d->n_users, ev, n, cls, SGBD_LABEL_TEST);
    for (uint32_t i = 0; i < d->n_items; i++)
        m += seen[i];
    d->neg_items = rc == 0 ? malloc((m ? m : 1) * sizeof(uint32_t)) : NULL;
    if (rc == 0 && !d->neg_items)
        rc = -ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < d->n_items; i++)
        if (seen[i])
            d->neg_items[d->n_neg_items++] = i;
out:
    free(seen);
    free(has_train);
    return rc;
}

int sgbd_holdout_build(struct sgbd_dataset *ds,
                       const struct sgbd_holdout_event *ev, size_t n,
                       const struct sgbd_holdout_opts *o, size_t *n_held)
{
    struct sgbd_dataset d;
    struct user_stat *st;
    uint8_t *cls;
    size_t held;
    int rc = 0;

    if (o->n_users == 0 || o->n_items == 0)
        return sgbd_errf(SGBD_E_SHAPE, "retrain: %u users and %u items: "
                         "nothing to train", o->n_users, o->n_items);
    memset(&d, 0, sizeof(d));
    d.n_users = o->n_users;
    d.n_items = o->n_items;
    st = calloc((size_t)o->n_users + 1, sizeof(*st));
    cls = malloc(n ? n : 1);
    if (!st || !cls) {
        rc = -ENOMEM;
        goto out;
    }
    classify(ev, n, o, st, cls);
    held = hold_out(ev, n, o, st, cls);
    if (held == (size_t)-1) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t k = 0; k < n; k++)
        d.n_train += cls[k] == SGBD_LABEL_TRAIN;
    if (d.n_train == 0) {
        rc = sgbd_errf(SGBD_E_NOTFOUND, "retrain: no train interactions "
                       "among %u users and %u items", o->n_users, o->n_items);
        goto out;
    }
    rc = build_parts(&d, ev, n, cls);
    if (rc == 0 && n_held)
        *n_held = held;
out:
    free(cls);
    free(st);
    if (rc < 0) {
        sgbd_dataset_free(&d);
        return rc == -ENOMEM ? sgbd_errf(rc, "retrain: out of memory for a "
                                         "dataset of %u users and %u items",
                                         o->n_users, o->n_items) : rc;
    }
    *ds = d;
    return 0;
}

int sgbd_holdout_seen(const struct sgbd_holdout_event *ev, size_t n,
                      uint32_t n_users, uint32_t n_items, uint64_t **ptr,
                      uint32_t **items)
{
    struct sgbd_itemsets s = {0};
    uint8_t *cls = malloc(n ? n : 1);
    int rc;

    if (!cls)
        return -ENOMEM;
    for (size_t k = 0; k < n; k++)
        cls[k] = ev[k].user < n_users && ev[k].item < n_items;
    rc = build_sets(&s, n_users, ev, n, cls, 1);
    free(cls);
    if (rc < 0) {
        free(s.ptr);
        free(s.items);
        return rc;
    }
    *ptr = s.ptr;
    *items = s.items;
    return 0;
}
