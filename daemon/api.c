/*
 * api.c - routing, the early checks, errors, and the status routes.
 *
 * Every route is one row of routes[]; every handler has the same shape
 * (struct call in, a response out), so a deviation stands out.
 */
#include "api_impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sgbd/checkpoint.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/overlay.h"

#define M_GET 1
#define M_POST 2
#define M_PUT 4
#define M_DELETE 8

struct route {
    const char *tmpl;               /* metrics label */
    unsigned methods;
    const char *allow;
    enum sgbd_auth_level write_level; /* for POST, PUT, DELETE */
    int body;                       /* POST/PUT carry a JSON body */
};

static const struct route routes[N_ROUTES] = {
    [R_RECO] = {"/v1/users/{id}/recommendations", M_GET, "GET, HEAD",
                SGBD_AUTH_READ, 0},
    [R_BATCH] = {"/v1/recommendations", M_POST, "POST", SGBD_AUTH_READ, 1},
    [R_SIMILAR] = {"/v1/items/{id}/similar", M_GET, "GET, HEAD",
                   SGBD_AUTH_READ, 0},
    [R_ITEM] = {"/v1/items/{id}", M_GET | M_PUT | M_DELETE,
                "GET, HEAD, PUT, DELETE", SGBD_AUTH_WRITE, 1},
    [R_INTER] = {"/v1/interactions", M_POST, "POST", SGBD_AUTH_WRITE, 1},
    [R_MODEL] = {"/v1/model", M_GET, "GET, HEAD", SGBD_AUTH_READ, 0},
    [R_CKPTS] = {"/v1/model/checkpoints", M_GET, "GET, HEAD",
                 SGBD_AUTH_READ, 0},
    [R_RETRAIN] = {"/v1/model/retrain", M_POST, "POST", SGBD_AUTH_ADMIN, 1},
    [R_ROLLBACK] = {"/v1/model/rollback", M_POST, "POST", SGBD_AUTH_ADMIN,
                    1},
    [R_HEALTHZ] = {"/healthz", M_GET, "GET, HEAD", SGBD_AUTH_READ, 0},
    [R_READYZ] = {"/readyz", M_GET, "GET, HEAD", SGBD_AUTH_READ, 0},
    [R_METRICS] = {"/metrics", M_GET, "GET, HEAD", SGBD_AUTH_READ, 0},
};

/* ---- decoding and routing ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int api_decode(const char *in, size_t n, char *out, size_t cap, size_t *len)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%') {
            int hi, lo;
            hi = i + 1 < n ? hexval(in[i + 1]) : -1;
            lo = i + 2 < n ? hexval(in[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    *len = o;
    return 0;
}

static int seg_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

/*
 * Route of a raw path; the {id} segment (still encoded) into *id, *id_n.
 * Segments split on the raw '/', so an id may hold an encoded %2F.
 */
static enum api_route match(const char *path, const char **id, size_t *id_n)
{
    const char *seg[6];
    size_t len[6];
    int n = 0;
    const char *p = path;

    if (*p != '/')
        return R_NONE;
    while (*p == '/' && n < 6) {
        const char *e = strchr(p + 1, '/');
        seg[n] = p + 1;
        len[n] = e ? (size_t)(e - p - 1) : strlen(p + 1);
        if (len[n] == 0)
            return R_NONE;
        n++;
        p = e ? e : p + 1 + len[n - 1];
    }
    if (*p)
        return R_NONE;
    *id = NULL;
    *id_n = 0;
    if (n == 1 && seg_is(seg[0], len[0], "healthz"))
        return R_HEALTHZ;
    if (n == 1 && seg_is(seg[0], len[0], "readyz"))
        return R_READYZ;
    if (n == 1 && seg_is(seg[0], len[0], "metrics"))
        return R_METRICS;
    if (n < 2 || !seg_is(seg[0], len[0], "v1"))
        return R_NONE;
    if (n == 2 && seg_is(seg[1], len[1], "recommendations"))
        return R_BATCH;
    if (n == 2 && seg_is(seg[1], len[1], "interactions"))
        return R_INTER;
    if (n == 2 && seg_is(seg[1], len[1], "model"))
        return R_MODEL;
    if (n == 3 && seg_is(seg[1], len[1], "model")) {
        if (seg_is(seg[2], len[2], "checkpoints"))
            return R_CKPTS;
        if (seg_is(seg[2], len[2], "retrain"))
            return R_RETRAIN;
        if (seg_is(seg[2], len[2], "rollback"))
            return R_ROLLBACK;
        return R_NONE;
    }
    if (n < 3)
        return R_NONE;
    *id = seg[2];
    *id_n = len[2];
    if (n == 4 && seg_is(seg[1], len[1], "users") &&
        seg_is(seg[3], len[3], "recommendations"))
        return R_RECO;
    if (n == 3 && seg_is(seg[1], len[1], "items"))
        return R_ITEM;
    if (n == 4 && seg_is(seg[1], len[1], "items") &&
        seg_is(seg[3], len[3], "similar"))
        return R_SIMILAR;
    return R_NONE;
}

static unsigned method_bit(const char *m)
{
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
        return M_GET;
    if (strcmp(m, "POST") == 0)
        return M_POST;
    if (strcmp(m, "PUT") == 0)
        return M_PUT;
    if (strcmp(m, "DELETE") == 0)
        return M_DELETE;
    return 0;
}

/* ---- runtime options ---- */

static int runtime_new(struct api_runtime **out, const struct sgbd_config *cfg)
{
    struct api_runtime *rt = calloc(1, sizeof(*rt));
    int rc;

    if (!rt)
        return -ENOMEM;
    rc = sgbd_auth_load(&rt->auth, cfg->write_token_file,
                        cfg->admin_token_file);
    if (rc != 0) {
        free(rt);
        return rc;
    }
    rt->max_k = cfg->max_k;
    rt->max_batch = cfg->max_batch_users;
    *out = rt;
    return 0;
}

static void runtime_free(struct api_runtime *rt)
{
    if (!rt)
        return;
    sgbd_auth_free(rt->auth);
    free(rt);
}

int sgbd_api_new(struct sgbd_api **out, const struct sgbd_api_opts *o)
{
    const char *names[N_ROUTES];
    struct sgbd_api *api = calloc(1, sizeof(*api));
    int rc;

    if (!api)
        return -ENOMEM;
    api->cfg = *o->cfg;
    api->store = o->store;
    api->slot = o->slot;
    if (o->hooks)
        api->hooks = *o->hooks;
    for (int r = 0; r < N_ROUTES; r++)
        names[r] = routes[r].tmpl;
    rc = sgbd_metrics_http_new(&api->metrics, names, N_ROUTES);
    if (rc == 0)
        rc = runtime_new(&api->rt, o->cfg);
    if (rc == 0)
        rc = sgbd_reco_cache_new(&api->cache,
                                 (size_t)o->cfg->result_cache_mb << 20);
    if (rc != 0) {
        runtime_free(api->rt);
        sgbd_metrics_http_free(api->metrics);
        free(api);
        return rc;
    }
    pthread_rwlock_init(&api->rt_lock, NULL);
    pthread_mutex_init(&api->batch_lock, NULL);
    pthread_mutex_init(&api->channel_lock, NULL);
    *out = api;
    return 0;
}

void sgbd_api_free(struct sgbd_api *api)
{
    if (!api)
        return;
    runtime_free(api->rt);
    sgbd_reco_cache_free(api->cache);
    sgbd_metrics_http_free(api->metrics);
    pthread_rwlock_destroy(&api->rt_lock);
    pthread_mutex_destroy(&api->batch_lock);
    pthread_mutex_destroy(&api->channel_lock);
    free(api);
}

int sgbd_api_reload(struct sgbd_api *api, const struct sgbd_config *cfg)
{
    struct api_runtime *rt = NULL, *old;
    int rc = runtime_new(&rt, cfg);

    if (rc != 0) {
        atomic_fetch_add(&api->reload_failures, 1);
        return rc;
    }
    pthread_rwlock_wrlock(&api->rt_lock);
    old = api->rt;
    api->rt = rt;
    pthread_rwlock_unlock(&api->rt_lock);
    runtime_free(old);
    if (api->hooks.reload)
        api->hooks.reload(api->hooks.ctx, cfg);
    atomic_fetch_add(&api->reloads, 1);
    return 0;
}

void sgbd_api_reload_failed(struct sgbd_api *api)
{
    atomic_fetch_add(&api->reload_failures, 1);
}

void sgbd_api_set_draining(struct sgbd_api *api, int on)
{
    atomic_store(&api->draining, on);
}

int sgbd_api_ready(struct sgbd_api *api)
{
    struct sgbd_view v;
    int ready;

    sgbd_snapshot_acquire(api->slot, &v);
    ready = v.snap != NULL && !atomic_load(&api->draining);
    sgbd_snapshot_release(&v);
    return ready;
}

long sgbd_api_in_flight(struct sgbd_api *api)
{
    return atomic_load(&api->in_flight);
}

int64_t sgbd_api_max_body(const struct sgbd_api *api)
{
    return api->cfg.max_body_bytes;
}

/* ---- responses ---- */

void sgbd_api_response_clear(struct sgbd_api_response *resp)
{
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

static void error_body(struct sgbd_api_response *resp, int status,
                       const char *code, const char *msg, uint64_t version)
{
    struct sgbd_json w;

    sgbd_json_init(&w);
    sgbd_json_begin_object(&w);
    sgbd_json_key(&w, "error");
    sgbd_json_begin_object(&w);
    sgbd_json_key(&w, "code");
    sgbd_json_str(&w, code);
    sgbd_json_key(&w, "message");
    sgbd_json_str(&w, msg);
    sgbd_json_end(&w);
    sgbd_json_key(&w, "model_version");
    sgbd_json_u64(&w, version);
    sgbd_json_end(&w);
    free(resp->body);
    resp->body = sgbd_json_take(&w, &resp->len);
    if (!resp->body)
        resp->len = 0;
    resp->status = status;
    resp->content_type = "application/json";
    resp->model_version = version;
}

static uint64_t current_version(struct sgbd_api *api)
{
    struct sgbd_view v;
    uint64_t ver;

    sgbd_snapshot_acquire(api->slot, &v);
    ver = v.version;
    sgbd_snapshot_release(&v);
    return ver;
}

void sgbd_api_error(struct sgbd_api *api, struct sgbd_api_response *resp,
                    int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    error_body(resp, status, code, msg, current_version(api));
}

void api_fail(struct call *c, int status, const char *code, const char *fmt,
              ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    error_body(c->resp, status, code, msg, c->view.version);
}

void api_fail_rc(struct call *c, int rc)
{
    const char *msg = sgbd_err_detail(rc);

    switch (rc) {
    case SGBD_E_FORMAT:
        api_fail(c, 400, "bad_request", "%s", msg);
        break;
    case SGBD_E_SHAPE:
        api_fail(c, 422, "feature_width", "%s", msg);
        break;
    case SGBD_E_LIMIT:
        api_fail(c, 422, "over_limit", "%s", msg);
        break;
    case SGBD_E_NOTFOUND:
        api_fail(c, 404, "not_found", "%s", msg);
        break;
    case SGBD_E_MAPFULL:
        api_fail(c, 507, "storage_full", "%s", msg);
        break;
    case -ENOSPC:
    case -EDQUOT:
        /* The disk under the store is full: as much a full store as a
         * map that cannot grow, and as little the client's fault. */
        SGBD_WARN("storage_full", "route=%s why=\"%s\"",
                  routes[c->req->route].tmpl, sgbd_strerror(rc));
        api_fail(c, 507, "storage_full", "%s", msg);
        break;
    case SGBD_E_BUSY:
        api_fail(c, 409, "busy", "%s", msg);
        break;
    case SGBD_E_NOMODEL:
        api_fail(c, 503, "no_model", "no model has been published yet");
        break;
    default:
        SGBD_ERR("api_internal_error", "route=%s rc=%d why=\"%s\"",
                 routes[c->req->route].tmpl, rc, sgbd_strerror(rc));
        api_fail(c, 500, "internal", "%s", msg);
    }
}

void api_begin_body(struct call *c, struct sgbd_json *w)
{
    sgbd_json_init(w);
    sgbd_json_begin_object(w);
    sgbd_json_key(w, "model_version");
    sgbd_json_u64(w, c->view.version);
}

void api_reply(struct call *c, int status, struct sgbd_json *w)
{
    size_t len;
    char *body = sgbd_json_take(w, &len);

    if (!body) {
        api_fail(c, 500, "internal", "out of memory writing the response");
        return;
    }
    api_reply_json(c, status, body, len);
}

void api_reply_json(struct call *c, int status, char *body, size_t len)
{
    struct sgbd_api_response *r = c->resp;

    free(r->body);
    r->body = body;
    r->len = len;
    r->status = status;
    r->content_type = "application/json";
    r->model_version = c->view.version;
}

/* ---- request helpers ---- */

int api_arg(struct call *c, const char *key, char *buf, size_t n)
{
    const struct sgbd_api_request *req = c->req;
    size_t len;

    for (int a = 0; a < req->n_args; a++) {
        if (strcmp(req->args[a].key, key) != 0)
            continue;
        if (api_decode(req->args[a].value, strlen(req->args[a].value), buf,
                       n, &len) != 0 || strlen(buf) != len) {
            api_fail(c, 400, "bad_query", "query argument '%s' is malformed "
                     "or longer than %zu bytes", key, n - 1);
            return -1;
        }
        return 1;
    }
    return 0;
}

static int k_in_range(struct call *c, long long k)
{
    if (k < 1 || k > c->max_k) {
        api_fail(c, 400, "bad_k", "k must be between 1 and %d, got %lld",
                 c->max_k, k);
        return -1;
    }
    return 0;
}

int api_query_k(struct call *c, size_t *k)
{
    char buf[32], *end;
    long long v;
    int got = api_arg(c, "k", buf, sizeof(buf));

    if (got < 0)
        return -1;
    if (got == 0) {
        *k = c->max_k < 10 ? (size_t)c->max_k : 10;
        return 0;
    }
    errno = 0;
    v = strtoll(buf, &end, 10);
    if (!buf[0] || *end || errno || buf[0] == '+' || buf[0] == ' ') {
        api_fail(c, 400, "bad_k", "k must be a whole number, got '%.20s'",
                 buf);
        return -1;
    }
    if (k_in_range(c, v) != 0)
        return -1;
    *k = (size_t)v;
    return 0;
}

int api_json_k(struct call *c, json_t *v, size_t *k)
{
    if (!v) {
        *k = c->max_k < 10 ? (size_t)c->max_k : 10;
        return 0;
    }
    if (!json_is_integer(v)) {
        api_fail(c, 400, "bad_k", "k must be a whole number");
        return -1;
    }
    if (k_in_range(c, json_integer_value(v)) != 0)
        return -1;
    *k = (size_t)json_integer_value(v);
    return 0;
}

int api_check_id(struct call *c, const char *id, size_t len,
                 const char *what)
{
    int rc;

    if (memchr(id, '\0', len)) {
        api_fail(c, 400, "bad_id", "%s has a NUL character", what);
        return -1;
    }
    if (len > SGBD_STORE_ID_MAX) {
        api_fail(c, 400, "bad_id", "%s is longer than %d bytes", what,
                 SGBD_STORE_ID_MAX);
        return -1;
    }
    rc = sgbd_store_id_check(id, what);
    if (rc != 0) {
        api_fail(c, 400, "bad_id", "%s", sgbd_err_detail(rc));
        return -1;
    }
    return 0;
}

json_t *api_body_object(struct call *c)
{
    char why[200];
    json_t *v;

    if (c->req->body_len == 0) {
        api_fail(c, 400, "bad_json", "the request needs a JSON body");
        return NULL;
    }
    v = sgbd_json_parse(c->req->body, c->req->body_len, why, sizeof(why));
    if (!v) {
        api_fail(c, 400, "bad_json", "malformed JSON: %s", why);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        api_fail(c, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return v;
}

const char *api_member_id(struct call *c, json_t *obj, const char *key,
                          const char *what, int required)
{
    json_t *v = json_object_get(obj, key);

    if (!v) {
        if (required)
            api_fail(c, 400, "bad_request", "'%s' is required", key);
        return NULL;
    }
    if (!json_is_string(v)) {
        api_fail(c, 400, "bad_request", "'%s' must be a string", key);
        return NULL;
    }
    if (api_check_id(c, json_string_value(v), json_string_length(v),
                     what) != 0)
        return NULL;
    return json_string_value(v);
}

int api_only_members(struct call *c, json_t *obj, const char *const *allowed,
                     const char *where)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, key) == 0;
        if (!ok) {
            api_fail(c, 400, "bad_request", "%s: unknown member '%.64s'",
                     where, key);
            return -1;
        }
    }
    return 0;
}

/* ---- status routes ---- */

static void h_healthz(struct call *c)
{
    struct sgbd_json w;

    api_begin_body(c, &w);
    sgbd_json_key(&w, "status");
    sgbd_json_str(&w, "ok");
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
}

static void h_readyz(struct call *c)
{
    struct sgbd_json w;

    if (atomic_load(&c->api->draining)) {
        api_fail(c, 503, "draining", "the daemon is shutting down");
        return;
    }
    if (!c->view.snap) {
        api_fail(c, 503, "no_model", "no model has been published yet");
        return;
    }
    api_begin_body(c, &w);
    sgbd_json_key(&w, "ready");
    sgbd_json_bool(&w, 1);
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
}

static void retrain_status(struct sgbd_api *api, struct sgbd_retrain_status *s)
{
    memset(s, 0, sizeof(*s));
    s->state = "idle";
    s->last_outcome = "none";
    if (api->hooks.status)
        api->hooks.status(api->hooks.ctx, s);
    if (!s->state)
        s->state = "idle";
    if (!s->last_outcome)
        s->last_outcome = "none";
}

static void write_metrics_obj(struct sgbd_json *w,
                              const struct sgbd_snapshot_metric *m, int n)
{
    sgbd_json_begin_object(w);
    for (int k = 0; k < n; k++) {
        sgbd_json_key(w, m[k].name);
        sgbd_json_num(w, m[k].value);
    }
    sgbd_json_end(w);
}

static void write_retrain(struct sgbd_json *w,
                          const struct sgbd_retrain_status *s, int attached)
{
    sgbd_json_key(w, "retrain");
    sgbd_json_begin_object(w);
    sgbd_json_key(w, "attached");
    sgbd_json_bool(w, attached);
    sgbd_json_key(w, "state");
    sgbd_json_str(w, s->state);
    sgbd_json_key(w, "progress");
    sgbd_json_num(w, s->progress);
    sgbd_json_key(w, "last_outcome");
    sgbd_json_str(w, s->last_outcome);
    sgbd_json_key(w, "last_started_at");
    sgbd_json_num(w, s->last_started_at);
    sgbd_json_key(w, "last_duration_s");
    sgbd_json_num(w, s->last_duration_s);
    sgbd_json_key(w, "last_version");
    sgbd_json_u64(w, s->last_version);
    sgbd_json_key(w, "retrains_total");
    sgbd_json_u64(w, s->retrains_total);
    sgbd_json_key(w, "rejected_total");
    sgbd_json_u64(w, s->rejected_total);
    sgbd_json_key(w, "failed_total");
    sgbd_json_u64(w, s->failed_total);
    sgbd_json_key(w, "candidate_metrics");
    write_metrics_obj(w, s->candidate_metrics, s->n_candidate_metrics);
    sgbd_json_key(w, "message");
    sgbd_json_str(w, s->message);
    sgbd_json_end(w);
}

static void h_model(struct call *c)
{
    const struct sgbd_snapshot *s = c->view.snap;
    struct sgbd_retrain_status rs;
    uint64_t pi, pn;
    struct sgbd_json w;

    retrain_status(c->api, &rs);
    sgbd_overlay_pending(c->view.ov, &pi, &pn);
    if (c->api->hooks.status)
        pi = rs.pending_item_updates, pn = rs.pending_interactions;
    api_begin_body(c, &w);
    sgbd_json_key(&w, "version");
    sgbd_json_u64(&w, c->view.version);
    sgbd_json_key(&w, "state");
    sgbd_json_str(&w, rs.state);
    sgbd_json_key(&w, "model");
    s ? sgbd_json_str(&w, s->meta.model) : sgbd_json_null(&w);
    sgbd_json_key(&w, "optimizer");
    s ? sgbd_json_str(&w, s->meta.optimizer) : sgbd_json_null(&w);
    sgbd_json_key(&w, "trained_at");
    s ? sgbd_json_i64(&w, s->meta.trained_at) : sgbd_json_null(&w);
    sgbd_json_key(&w, "published_at");
    s ? sgbd_json_num(&w, s->published_at) : sgbd_json_null(&w);
    sgbd_json_key(&w, "metrics");
    write_metrics_obj(&w, s ? s->meta.metrics : NULL,
                      s ? s->meta.n_metrics : 0);
    sgbd_json_key(&w, "pending_updates");
    sgbd_json_u64(&w, pi + pn);
    sgbd_json_key(&w, "pending_item_updates");
    sgbd_json_u64(&w, pi);
    sgbd_json_key(&w, "pending_interactions");
    sgbd_json_u64(&w, pn);
    sgbd_json_key(&w, "users");
    sgbd_json_u64(&w, s ? s->n_users : 0);
    sgbd_json_key(&w, "items");
    sgbd_json_u64(&w, sgbd_overlay_n_index(c->view.ov));
    sgbd_json_key(&w, "dim");
    sgbd_json_u64(&w, s ? s->dim : 0);
    sgbd_json_key(&w, "ready");
    sgbd_json_bool(&w, s && !atomic_load(&c->api->draining));
    write_retrain(&w, &rs, c->api->hooks.status != NULL);
    sgbd_json_end(&w);
    api_reply(c, 200, &w);
}

static void write_checkpoint(struct sgbd_json *w,
                             const struct sgbd_checkpoint_entry *e)
{
    sgbd_json_begin_object(w);
    sgbd_json_key(w, "version");
    sgbd_json_u64(w, e->info.version);
    sgbd_json_key(w, "model");
    sgbd_json_str(w, e->info.model);
    sgbd_json_key(w, "optimizer");
    sgbd_json_str(w, e->info.optimizer);
    sgbd_json_key(w, "created_at");
    sgbd_json_num(w, (double)e->info.created_at_ms / 1000.0);
    sgbd_json_key(w, "step");
    sgbd_json_u64(w, e->info.step);
    sgbd_json_key(w, "epoch");
    sgbd_json_u64(w, e->info.epoch);
    sgbd_json_key(w, "users");
    sgbd_json_u64(w, e->info.n_users);
    sgbd_json_key(w, "items");
    sgbd_json_u64(w, e->info.n_items);
    sgbd_json_key(w, "metrics");
    sgbd_json_begin_object(w);
    for (int k = 0; k < e->info.n_metrics; k++) {
        sgbd_json_key(w, e->info.metrics[k].key);
        sgbd_json_num(w, e->info.metrics[k].value);
    }
    sgbd_json_end(w);
    sgbd_json_key(w, "current");
    sgbd_json_bool(w, e->is_current);
    sgbd_json_key(w, "previous");
    sgbd_json_bool(w, e->is_previous);
    sgbd_json_key(w, "header_ok");
    sgbd_json_bool(w, e->header_ok);
    sgbd_json_end(w);
}

static void h_checkpoints(struct call *c)
{
    struct sgbd_checkpoint_entry *list = NULL;
    struct sgbd_json w;
    size_t n = 0;
    int rc;

    if (!c->api->store) {
        api_fail(c, 503, "no_store", "this daemon runs without a store");
        return;
    }
    rc = sgbd_checkpoint_list(c->api->store, &list, &n);
    if (rc != 0) {
        api_fail_rc(c, rc);
        return;
    }
    api_begin_body(c, &w);
    sgbd_json_key(&w, "checkpoints");
    sgbd_json_begin_array(&w);
    for (size_t k = 0; k < n; k++)
        write_checkpoint(&w, &list[k]);
    sgbd_json_end(&w);
    sgbd_json_end(&w);
    free(list);
    api_reply(c, 200, &w);
}

static void h_retrain(struct call *c)
{
    struct sgbd_json w;
    int rc;

    if (c->req->body_len) {
        json_t *body = api_body_object(c);
        static const char *const allowed[] = {"reason", NULL};
        int bad;
        if (!body)
            return;
        bad = api_only_members(c, body, allowed, "retrain");
        json_decref(body);
        if (bad)
            return;
    }
    if (!c->api->hooks.trigger) {
        api_fail(c, 501, "not_implemented", "online retraining is not "
                 "available in this daemon");
        return;
    }
    rc = c->api->hooks.trigger(c->api->hooks.ctx, "api");
    if (rc == SGBD_E_BUSY) {
        api_fail(c, 409, "retrain_running", "a retrain is already running");
        return;
    }
    if (rc == SGBD_E_NOMODEL || rc == SGBD_E_NOTFOUND) {
        api_fail(c, 409, "nothing_to_train", "%s", sgbd_err_detail(rc));
        return;
    }
    if (rc != 0) {
        api_fail_rc(c, rc);
        return;
    }
    api_begin_body(c, &w);
    sgbd_json_key(&w, "accepted");
    sgbd_json_bool(&w, 1);
    sgbd_json_end(&w);
    api_reply(c, 202, &w);
}

static void h_rollback(struct call *c)
{
    static const char *const allowed[] = {"version", NULL};
    json_t *body = api_body_object(c), *v;
    struct sgbd_json w;
    json_int_t version;
    int rc;

    if (!body)
        return;
    if (api_only_members(c, body, allowed, "rollback") != 0)
        goto out;
    v = json_object_get(body, "version");
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        api_fail(c, 400, "bad_request", "'version' must be a whole number "
                 ">= 1");
        goto out;
    }
    version = json_integer_value(v);
    if (!c->api->hooks.rollback) {
        api_fail(c, 501, "not_implemented", "rollback is not available in "
                 "this daemon");
        goto out;
    }
    rc = c->api->hooks.rollback(c->api->hooks.ctx, (uint64_t)version);
    if (rc == SGBD_E_NOTFOUND) {
        api_fail(c, 404, "checkpoint_not_found", "no checkpoint %lld is "
                 "kept", (long long)version);
    } else if (rc == SGBD_E_BUSY || rc == SGBD_E_CORRUPT) {
        api_fail(c, 409, rc == SGBD_E_BUSY ? "retrain_running" : "corrupt",
                 "%s", sgbd_err_detail(rc));
    } else if (rc != 0) {
        api_fail_rc(c, rc);
    } else {
        c->view.version = current_version(c->api);
        api_begin_body(c, &w);
        sgbd_json_key(&w, "version");
        sgbd_json_i64(&w, version);
        sgbd_json_end(&w);
        api_reply(c, 200, &w);
    }
out:
    json_decref(body);
}

static void sample_gauges(struct call *c, struct sgbd_metrics_http_gauges *g)
{
    const struct sgbd_snapshot *s = c->view.snap;
    struct sgbd_reco_cache_stats cs;
    struct sgbd_retrain_status rs;

    memset(g, 0, sizeof(*g));
    g->model_version = c->view.version;
    if (s) {
        g->snapshot_published_at = s->published_at;
        g->snapshot_users = s->n_users;
        g->snapshot_items = s->n_items;
    }
    g->overlay_items = sgbd_overlay_n_items(c->view.ov);
    sgbd_overlay_pending(c->view.ov, &g->pending_item_updates,
                         &g->pending_interactions);
    sgbd_snapshot_live(&g->snapshots_live, &g->snapshot_bytes);
    g->view_swaps = sgbd_snapshot_swaps(c->api->slot);
    g->model_swaps = sgbd_snapshot_model_swaps(c->api->slot);
    g->draining = atomic_load(&c->api->draining);
    g->ready = s && !g->draining;
    g->requests_in_flight = atomic_load(&c->api->in_flight);
    g->reloads_total = atomic_load(&c->api->reloads);
    g->reload_failures_total = atomic_load(&c->api->reload_failures);
    sgbd_reco_cache_stats(c->api->cache, &cs);
    g->cache_hits = cs.hits;
    g->cache_misses = cs.misses;
    g->cache_entries = cs.entries;
    g->cache_bytes = cs.bytes;
    g->cache_max_bytes = cs.max_bytes;
    if (!c->api->hooks.status)
        return;
    retrain_status(c->api, &rs);
    g->retrain_attached = 1;
    g->training = strcmp(rs.state, "training") == 0;
    g->retrains_total = rs.retrains_total;
    g->retrain_rejected_total = rs.rejected_total;
    g->retrain_failed_total = rs.failed_total;
    g->last_retrain_seconds = rs.last_duration_s;
    g->pending_item_updates = rs.pending_item_updates;
    g->pending_interactions = rs.pending_interactions;
}

static void h_metrics(struct call *c)
{
    struct sgbd_metrics_http_gauges g;
    char *text;
    size_t len;

    sample_gauges(c, &g);
    if (sgbd_metrics_http_render(c->api->metrics, &g, &text, &len) != 0) {
        api_fail(c, 500, "internal", "out of memory");
        return;
    }
    free(c->resp->body);
    c->resp->body = text;
    c->resp->len = len;
    c->resp->status = 200;
    c->resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    c->resp->model_version = c->view.version;
}

/* ---- the two entry points ---- */

static int json_content_type(const char *ct)
{
    size_t n = strlen("application/json");

    if (!ct || strncasecmp(ct, "application/json", n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static void take_runtime(struct call *c, enum sgbd_auth_level level,
                         enum sgbd_auth_result *auth)
{
    pthread_rwlock_rdlock(&c->api->rt_lock);
    c->max_k = c->api->rt->max_k;
    c->max_batch = c->api->rt->max_batch;
    if (auth)
        *auth = sgbd_auth_check(c->api->rt->auth, level,
                                c->req->authorization);
    pthread_rwlock_unlock(&c->api->rt_lock);
}

/* Route, method, auth, media type, declared length. 1 when answered. */
static int early_checks(struct call *c)
{
    struct sgbd_api_request *req = c->req;
    const struct route *rt;
    enum sgbd_auth_result auth;
    unsigned m = method_bit(req->method);
    const char *id;
    size_t id_n;

    req->route = match(req->path, &id, &id_n);
    if (req->route == R_NONE) {
        api_fail(c, 404, "not_found", "no route for this path");
        return 1;
    }
    rt = &routes[req->route];
    if (!(rt->methods & m)) {
        api_fail(c, 405, "method_not_allowed", "%s is not allowed here; "
                 "use %s", req->method, rt->allow);
        c->resp->allow = rt->allow;
        return 1;
    }
    take_runtime(c, m == M_GET ? SGBD_AUTH_READ : rt->write_level, &auth);
    if (auth == SGBD_AUTH_MISSING) {
        api_fail(c, 401, "unauthorized", "this route needs a bearer token");
        c->resp->challenge = 1;
        return 1;
    }
    if (auth == SGBD_AUTH_DENIED) {
        api_fail(c, 403, "forbidden", "the token does not open this route");
        return 1;
    }
    if (req->content_length > c->api->cfg.max_body_bytes) {
        api_fail(c, 413, "body_too_large", "the body is larger than %lld "
                 "bytes", (long long)c->api->cfg.max_body_bytes);
        c->resp->close = 1;
        return 1;
    }
    /* A declared type must be JSON even on an empty body: browsers send
     * form types cross-site without a preflight, and an empty form POST
     * must not start a retrain on a daemon without tokens. */
    if (rt->body && (m == M_POST || m == M_PUT) &&
        (req->content_length != 0 || req->content_type) &&
        !json_content_type(req->content_type)) {
        api_fail(c, 415, "unsupported_media_type", "the body must be "
                 "application/json");
        return 1;
    }
    return 0;
}

int sgbd_api_begin(struct sgbd_api *api, struct sgbd_api_request *req,
                   struct sgbd_api_response *resp)
{
    struct call c = {.api = api, .req = req, .resp = resp};
    int done;

    atomic_fetch_add(&api->in_flight, 1);
    memset(resp, 0, sizeof(*resp));
    sgbd_snapshot_acquire(api->slot, &c.view);
    done = early_checks(&c);
    sgbd_snapshot_release(&c.view);
    return done;
}

/* Decode and check the {id} of the path into c->id. -1 when answered. */
static int path_id(struct call *c)
{
    const char *id;
    size_t n;
    const char *what = c->req->route == R_RECO ? "user id" : "item id";

    match(c->req->path, &id, &n);
    if (api_decode(id, n, c->id, sizeof(c->id), &c->id_len) != 0) {
        api_fail(c, 400, "bad_id", "%s is malformed or longer than %d bytes",
                 what, SGBD_STORE_ID_MAX);
        return -1;
    }
    return api_check_id(c, c->id, c->id_len, what);
}

static void dispatch(struct call *c)
{
    unsigned m = method_bit(c->req->method);

    switch (c->req->route) {
    case R_RECO: api_h_recommend(c); break;
    case R_BATCH: api_h_batch(c); break;
    case R_SIMILAR: api_h_similar(c); break;
    case R_ITEM:
        if (m == M_PUT)
            api_h_item_put(c);
        else if (m == M_DELETE)
            api_h_item_delete(c);
        else
            api_h_item_get(c);
        break;
    case R_INTER: api_h_interactions(c); break;
    case R_MODEL: h_model(c); break;
    case R_CKPTS: h_checkpoints(c); break;
    case R_RETRAIN: h_retrain(c); break;
    case R_ROLLBACK: h_rollback(c); break;
    case R_HEALTHZ: h_healthz(c); break;
    case R_READYZ: h_readyz(c); break;
    case R_METRICS: h_metrics(c); break;
    default: api_fail(c, 404, "not_found", "no route for this path");
    }
}

void sgbd_api_handle(struct sgbd_api *api, struct sgbd_api_request *req,
                     struct sgbd_api_response *resp)
{
    struct call c = {.api = api, .req = req, .resp = resp};

    sgbd_err_clear();
    sgbd_snapshot_acquire(api->slot, &c.view);
    take_runtime(&c, SGBD_AUTH_READ, NULL);
    if (req->route == R_RECO || req->route == R_SIMILAR ||
        req->route == R_ITEM) {
        if (path_id(&c) == 0)
            dispatch(&c);
    } else {
        dispatch(&c);
    }
    if (atomic_load(&api->draining))
        resp->close = 1;
    sgbd_snapshot_release(&c.view);
}

void sgbd_api_finish(struct sgbd_api *api, const struct sgbd_api_request *req,
                     const struct sgbd_api_response *resp, double seconds)
{
    sgbd_metrics_http_observe(api->metrics, req->route, resp->status, seconds);
    atomic_fetch_sub(&api->in_flight, 1);
}
