/*
 * api_write.c - item upserts, reads and deletes, and interactions.
 *
 * Order of every write: validate everything (nothing changes on a bad
 * request), commit to the store (durable), take a write sequence number,
 * apply the overlay edit (visible to the next request), tell the
 * retrainer, answer. A crash after the commit loses only the immediate
 * effect, which start-up rebuilds from the store.
 */
#include "api_impl.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/overlay.h"

/* Features of one request, parsed. */
struct req_features {
    int n;
    char name[SGBD_MAX_CHANNELS][SGBD_CHANNEL_NAME];
    float *v[SGBD_MAX_CHANNELS];
    size_t width[SGBD_MAX_CHANNELS];
};

static void req_features_free(struct req_features *f)
{
    for (int c = 0; c < f->n; c++)
        free(f->v[c]);
    f->n = 0;
}

static int need_store(struct call *c)
{
    if (c->api->store)
        return 0;
    api_fail(c, 503, "no_store", "this daemon runs without a store");
    return -1;
}

/* One channel's array of numbers into a float vector; -1 when answered. */
static int parse_channel(struct call *c, const char *name, json_t *arr,
                         struct req_features *f)
{
    size_t n, j;
    json_t *x;
    float *v;

    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        api_fail(c, 400, "bad_feature", "features.%.31s must be a non-empty "
                 "array of numbers", name);
        return -1;
    }
    n = json_array_size(arr);
    if (!(v = malloc(n * sizeof(float)))) {
        api_fail(c, 500, "internal", "out of memory");
        return -1;
    }
    f->v[f->n] = v;
    snprintf(f->name[f->n], SGBD_CHANNEL_NAME, "%s", name);
    f->width[f->n++] = n;
    json_array_foreach(arr, j, x) {
        double d;
        if (!json_is_number(x)) {
            api_fail(c, 400, "bad_feature", "features.%.31s[%zu] is not a "
                     "number", name, j);
            return -1;
        }
        d = json_number_value(x);
        if (!isfinite(d) || fabs(d) > FLT_MAX) {
            api_fail(c, 400, "bad_feature", "features.%.31s[%zu] is not a "
                     "finite float32", name, j);
            return -1;
        }
        v[j] = (float)d;
    }
    return 0;
}

/* Width of each channel against the served model's; -1 when answered. */
static int check_model_widths(struct call *c, const struct req_features *f)
{
    const struct sgbd_snapshot *s = c->view.snap;

    for (int k = 0; s && k < f->n; k++)
        for (int m = 0; m < s->n_channels; m++)
            if (strcmp(s->channels[m].name, f->name[k]) == 0 &&
                s->channels[m].width != f->width[k]) {
                api_fail(c, 422, "feature_width", "features.%s has %zu "
                         "values; the model takes %zu", f->name[k],
                         f->width[k], s->channels[m].width);
                return -1;
            }
    return 0;
}

/* Channels the store does not know yet are defined on first sight. */
static int ensure_channels(struct call *c, const struct req_features *f)
{
    struct sgbd_store_channel ch[SGBD_MAX_CHANNELS];
    int n = 0, rc = 0;

    pthread_mutex_lock(&c->api->channel_lock);
    rc = sgbd_store_channels(c->api->store, ch, &n);
    for (int k = 0; rc == 0 && k < f->n; k++) {
        int found = 0;
        for (int m = 0; m < n; m++)
            if (strcmp(ch[m].name, f->name[k]) == 0) {
                found = 1;
                if (ch[m].width != f->width[k])
                    rc = sgbd_errf(SGBD_E_SHAPE, "features.%s has %zu values;"
                                   " the channel holds %u", f->name[k],
                                   f->width[k], ch[m].width);
            }
        if (!found && rc == 0) {
            rc = sgbd_store_channel_define(c->api->store, f->name[k],
                                           (uint32_t)f->width[k]);
            if (rc == 0)
                SGBD_INFO("channel_defined", "name=%s width=%zu", f->name[k],
                          f->width[k]);
        }
    }
    pthread_mutex_unlock(&c->api->channel_lock);
    if (rc == SGBD_E_LIMIT)
        api_fail(c, 422, "too_many_channels", "%s", sgbd_err_detail(rc));
    else if (rc == SGBD_E_FORMAT)
        api_fail(c, 400, "bad_feature", "%s", sgbd_err_detail(rc));
    else if (rc != 0)
        api_fail_rc(c, rc);
    return rc ? -1 : 0;
}

static int parse_features(struct call *c, json_t *obj, struct req_features *f)
{
    const char *name;
    json_t *arr;

    if (!json_is_object(obj)) {
        api_fail(c, 400, "bad_feature", "'features' must be an object of "
                 "named channels");
        return -1;
    }
    if (json_object_size(obj) > SGBD_MAX_CHANNELS) {
        api_fail(c, 422, "too_many_channels", "%zu feature channels, at "
                 "most %d", json_object_size(obj), SGBD_MAX_CHANNELS);
        return -1;
    }
    json_object_foreach(obj, name, arr) {
        if (strlen(name) == 0 || strlen(name) >= SGBD_CHANNEL_NAME) {
            api_fail(c, 400, "bad_feature", "channel names have 1 to %d "
                     "bytes", SGBD_CHANNEL_NAME - 1);
            return -1;
        }
        if (parse_channel(c, name, arr, f) != 0)
            return -1;
    }
    return check_model_widths(c, f);
}

/* attributes: a JSON object, stored as compact JSON bytes. */
static int parse_attributes(struct call *c, json_t *obj, char **out,
                            size_t *len)
{
    if (!json_is_object(obj)) {
        api_fail(c, 400, "bad_request", "'attributes' must be an object");
        return -1;
    }
    *out = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!*out) {
        api_fail(c, 500, "internal", "out of memory");
        return -1;
    }
    *len = strlen(*out);
    if (*len > SGBD_STORE_ATTRS_MAX) {
        api_fail(c, 413, "attributes_too_large", "attributes take %zu bytes,"
                 " at most %d", *len, SGBD_STORE_ATTRS_MAX);
        return -1;
    }
    return 0;
}

/* The overlay edit of a stored item: all of its stored channels. */
static int apply_item(struct call *c, int with_features)
{
    struct sgbd_store_item_rec rec;
    struct sgbd_item_features feat = {0};
    struct sgbd_overlay_edit ed = {SGBD_OVERLAY_PUT_ITEM, 0, c->id, NULL,
                                   NULL};
    int rc = 0;

    memset(&rec, 0, sizeof(rec));
    if (with_features) {
        rc = sgbd_store_item_get(c->api->store, c->id, &rec);
        for (int k = 0; rc == 0 && k < rec.n_features; k++) {
            snprintf(feat.ch[k].name, SGBD_CHANNEL_NAME, "%s",
                     rec.f[k].channel);
            feat.ch[k].width = rec.f[k].dim;
            feat.ch[k].v = rec.f[k].v;
            feat.n = k + 1;
        }
        ed.feat = &feat;
    }
    ed.seq = sgbd_snapshot_slot_next_seq(c->api->slot);
    if (rc == 0)
        rc = sgbd_snapshot_apply(c->api->slot, &ed, 1);
    sgbd_store_item_rec_free(&rec);
    if (rc == 0 && c->api->hooks.notify)
        c->api->hooks.notify(c->api->hooks.ctx, 1, 0, ed.seq);
    return rc;
}

/* Whether the current view can recommend item id. */
static int recommendable(struct call *c)
{
    struct sgbd_item_ref ref;
    struct sgbd_view v;
    int ok;

    sgbd_snapshot_acquire(c->api->slot, &v);
    ok = v.snap && sgbd_overlay_resolve_item(v.snap, v.ov, c->id, c->id_len,
                                             &ref) == 0 &&
         !ref.hidden && ref.vec;
    sgbd_snapshot_release(&v);
    return ok;
}

static void reply_item_written(struct call *c, int created)
{
    struct sgbd_json w;

    api_begin_body(c, &w);
    sgbd_json_key(&w, "item_id");
    sgbd_json_strn(&w, c->id, c->id_len);
    sgbd_json_key(&w, "created");
    sgbd_json_bool(&w, created);
    sgbd_json_key(&w, "recommendable");
    sgbd_json_bool(&w, recommendable(c));
    sgbd_json_end(&w);
    api_reply(c, created ? 201 : 200, &w);
}

/* Store the item (features, attributes as parsed), then apply it. */
static void store_item(struct call *c, const struct req_features *f,
                       int has_features, const char *attrs, size_t attrs_len)
{
    struct sgbd_store_feature sf[SGBD_MAX_CHANNELS];
    struct sgbd_store_item it = {c->id, f->n, sf, attrs, attrs_len};
    uint32_t idx;
    int created, rc;

    for (int k = 0; k < f->n; k++) {
        sf[k].channel = f->name[k];
        sf[k].v = f->v[k];
        sf[k].dim = (uint32_t)f->width[k];
    }
    created = sgbd_store_item_index(c->api->store, c->id, &idx) != 0;
    rc = sgbd_store_items_upsert(c->api->store, &it, 1, NULL);
    if (rc == SGBD_E_NOTFOUND || rc == SGBD_E_SHAPE) {
        api_fail(c, 422, rc == SGBD_E_SHAPE ? "feature_width"
                                            : "unknown_channel",
                 "%s", sgbd_err_detail(rc));
        return;
    }
    if (rc != 0) {
        api_fail_rc(c, rc);
        return;
    }
    rc = apply_item(c, has_features);
    if (rc != 0)
        SGBD_WARN("overlay_apply_failed", "route=item why=\"%s\"",
                  sgbd_strerror(rc));
    reply_item_written(c, created);
}

void api_h_item_put(struct call *c)
{
    static const char *const allowed[] = {"features", "attributes", NULL};
    struct req_features f = {0};
    char *attrs = NULL;
    size_t attrs_len = 0;
    json_t *body, *feat, *at;

    if (need_store(c) != 0 || !(body = api_body_object(c)))
        return;
    if (api_only_members(c, body, allowed, "item") != 0)
        goto out;
    feat = json_object_get(body, "features");
    at = json_object_get(body, "attributes");
    if (feat && parse_features(c, feat, &f) != 0)
        goto out;
    if (at && parse_attributes(c, at, &attrs, &attrs_len) != 0)
        goto out;
    if (f.n && ensure_channels(c, &f) != 0)
        goto out;
    store_item(c, &f, f.n > 0, attrs, attrs_len);
out:
    free(attrs);
    req_features_free(&f);
    json_decref(body);
}

static void write_features(struct sgbd_json *w,
                           const struct sgbd_store_item_rec *rec)
{
    sgbd_json_key(w, "features");
    sgbd_json_begin_object(w);
    for (int k = 0; k < rec->n_features; k++) {
        sgbd_json_key(w, rec->f[k].channel);
        sgbd_json_begin_array(w);
        for (uint32_t d = 0; d < rec->f[k].dim; d++)
            sgbd_json_float(w, rec->f[k].v[d]);
        sgbd_json_end(w);
    }
    sgbd_json_end(w);
}

void api_h_item_get(struct call *c)
{
    struct sgbd_store_item_rec rec;
    struct sgbd_json w;
    int rc;

    if (need_store(c) != 0)
        return;
    rc = sgbd_store_item_get(c->api->store, c->id, &rec);
    if (rc == SGBD_E_NOTFOUND) {
        api_fail(c, 404, "item_not_found", "no item '%.64s'", c->id);
        return;
    }
    if (rc != 0) {
        api_fail_rc(c, rc);
        return;
    }
    api_begin_body(c, &w);
    sgbd_json_key(&w, "item_id");
    sgbd_json_strn(&w, c->id, c->id_len);
    sgbd_json_key(&w, "hidden");
    sgbd_json_bool(&w, rec.hidden);
    sgbd_json_key(&w, "recommendable");
    sgbd_json_bool(&w, !rec.hidden && recommendable(c));
    sgbd_json_key(&w, "updated_at");
    sgbd_json_num(&w, (double)rec.updated_at_ms / 1000.0);
    write_features(&w, &rec);
    sgbd_json_key(&w, "attributes");
    if (rec.attrs && rec.attrs_len)
        sgbd_json_raw(&w, rec.attrs, rec.attrs_len);
    else
        sgbd_json_raw(&w, "{}", 2);
    sgbd_json_end(&w);
    sgbd_store_item_rec_free(&rec);
    api_reply(c, 200, &w);
}

void api_h_item_delete(struct call *c)
{
    struct sgbd_overlay_edit ed = {SGBD_OVERLAY_DELETE_ITEM, 0, c->id, NULL,
                                   NULL};
    struct sgbd_json w;
    int rc;

    if (need_store(c) != 0)
        return;
    rc = sgbd_store_item_hide(c->api->store, c->id, 1);
    if (rc == SGBD_E_NOTFOUND) {
        api_fail(c, 404, "item_not_found", "no item '%.64s'", c->id);
        return;
    }
    if (rc != 0) {
        api_fail_rc(c, rc);
        return;
    }
    ed.seq = sgbd_snapshot_slot_next_seq(c->api->slot);
    rc = sgbd_snapshot_apply(c->api->slot, &ed, 1);
    if (rc != 0)
        SGBD_WARN("overlay_apply_failed", "route=item_delete why=\"%s\"",
                  sgbd_strerror(rc));
    if (c->api->hooks.notify)
        c->api->hooks.notify(c->api->hooks.ctx, 1, 0, ed.seq);
    api_begin_body(c, &w);
    sgbd_json_key(&w, "item_id");
    sgbd_json_strn(&w, c->id, c->id_len);
    sgbd_json_key(&w, "deleted");
    sgbd_json_bool(&w, 1);
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
}

/* ---- interactions ---- */

static int parse_event(struct call *c, json_t *e, size_t j,
                       struct sgbd_store_event *ev)
{
    static const char *const allowed[] = {"user_id", "item_id", "timestamp",
                                          NULL};
    json_t *ts;

    if (!json_is_object(e)) {
        api_fail(c, 400, "bad_request", "interactions[%zu] must be an "
                 "object", j);
        return -1;
    }
    if (api_only_members(c, e, allowed, "interaction") != 0)
        return -1;
    memset(ev, 0, sizeof(*ev));
    ev->user_id = api_member_id(c, e, "user_id", "user id", 1);
    if (!ev->user_id)
        return -1;
    ev->item_id = api_member_id(c, e, "item_id", "item id", 1);
    if (!ev->item_id)
        return -1;
    ev->weight = 1.0f;
    ev->label = SGBD_LABEL_TRAIN;
    ev->timestamp = (int64_t)time(NULL);
    ts = json_object_get(e, "timestamp");
    if (ts && (!json_is_integer(ts) || json_integer_value(ts) < 0)) {
        api_fail(c, 400, "bad_request", "interactions[%zu].timestamp must "
                 "be whole unix seconds >= 0", j);
        return -1;
    }
    if (ts)
        ev->timestamp = json_integer_value(ts);
    return 0;
}

static void reply_interactions(struct call *c, size_t n, size_t n_new)
{
    struct sgbd_json w;

    api_begin_body(c, &w);
    sgbd_json_key(&w, "accepted");
    sgbd_json_u64(&w, n);
    sgbd_json_key(&w, "new");
    sgbd_json_u64(&w, n_new);
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
}

/* Store the events, then exclude each user's new items at once. */
static void store_events(struct call *c, const struct sgbd_store_event *ev,
                         size_t n)
{
    struct sgbd_overlay_edit *ed = malloc(n * sizeof(*ed));
    uint64_t *seqs = malloc(n * sizeof(uint64_t));
    struct sgbd_store_counts before;
    size_t n_new = 0, n_ed = 0;
    uint64_t seq;
    int rc;

    if (!ed || !seqs) {
        api_fail(c, 500, "internal", "out of memory");
        goto out;
    }
    /* Events logged before keep their old sequence numbers: only those
     * above the log's end before this append are new, and only they need
     * an overlay edit (the others took effect when first posted). */
    rc = sgbd_store_counts(c->api->store, &before);
    if (rc == 0)
        rc = sgbd_store_interactions_append(c->api->store, ev, n, seqs,
                                            &n_new);
    if (rc == SGBD_E_NOTFOUND) {
        api_fail(c, 422, "unknown_item", "%s", sgbd_err_detail(rc));
        goto out;
    }
    if (rc != 0) {
        api_fail_rc(c, rc);
        goto out;
    }
    seq = sgbd_snapshot_slot_next_seq(c->api->slot);
    for (size_t j = 0; j < n; j++)
        if (seqs[j] > before.last_seq)
            ed[n_ed++] = (struct sgbd_overlay_edit){
                SGBD_OVERLAY_SEEN, seq, ev[j].item_id, ev[j].user_id, NULL};
    rc = n_ed ? sgbd_snapshot_apply(c->api->slot, ed, n_ed) : 0;
    if (rc != 0)
        SGBD_WARN("overlay_apply_failed", "route=interactions why=\"%s\"",
                  sgbd_strerror(rc));
    if (c->api->hooks.notify)
        c->api->hooks.notify(c->api->hooks.ctx, 0, n_new, seq);
    reply_interactions(c, n, n_new);
out:
    free(seqs);
    free(ed);
}

void api_h_interactions(struct call *c)
{
    static const char *const allowed[] = {"interactions", NULL};
    struct sgbd_store_event *ev = NULL;
    json_t *body, *arr, *e;
    size_t n, j;

    if (need_store(c) != 0 || !(body = api_body_object(c)))
        return;
    if (api_only_members(c, body, allowed, "body") != 0)
        goto out;
    arr = json_object_get(body, "interactions");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        api_fail(c, 400, "bad_request", "'interactions' must be a non-empty "
                 "array");
        goto out;
    }
    n = json_array_size(arr);
    if (n > SGBD_STORE_BATCH_MAX) {
        api_fail(c, 400, "too_many_interactions", "%zu interactions in one "
                 "request, at most %d", n, SGBD_STORE_BATCH_MAX);
        goto out;
    }
    if (!(ev = malloc(n * sizeof(*ev)))) {
        api_fail(c, 500, "internal", "out of memory");
        goto out;
    }
    json_array_foreach(arr, j, e)
        if (parse_event(c, e, j, &ev[j]) != 0)
            goto out;
    store_events(c, ev, n);
out:
    free(ev);
    json_decref(body);
}
