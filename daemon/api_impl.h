/*
 * api_impl.h - what the API's source files share (api.c: routing,
 * errors, status routes; api_reco.c: scoring routes; api_write.c: item and
 * interaction writes). Not a public header.
 */
#ifndef SGBD_API_IMPL_H
#define SGBD_API_IMPL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "sgbd/api.h"
#include "sgbd/auth.h"
#include "sgbd/json.h"
#include "sgbd/metrics_http.h"
#include "sgbd/reco_cache.h"
#include "sgbd/snapshot.h"
#include "sgbd/store.h"

enum api_route {
    R_RECO,         /* /v1/users/{id}/recommendations */
    R_BATCH,        /* /v1/recommendations */
    R_SIMILAR,      /* /v1/items/{id}/similar */
    R_ITEM,         /* /v1/items/{id} */
    R_INTER,        /* /v1/interactions */
    R_MODEL,        /* /v1/model */
    R_CKPTS,        /* /v1/model/checkpoints */
    R_RETRAIN,      /* /v1/model/retrain */
    R_ROLLBACK,     /* /v1/model/rollback */
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    N_ROUTES,
    R_NONE = N_ROUTES,
};

/* Options SIGHUP may change, swapped whole under rt_lock. */
struct api_runtime {
    int max_k, max_batch;
    struct sgbd_auth *auth;
};

struct sgbd_api {
    struct sgbd_config cfg;
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_retrain_hooks hooks;
    struct sgbd_metrics_http *metrics;
    struct sgbd_reco_cache *cache;  /* NULL: off */

    pthread_rwlock_t rt_lock;
    struct api_runtime *rt;

    pthread_mutex_t batch_lock;     /* one sgbd_topk_users at a time */
    pthread_mutex_t channel_lock;   /* defining store channels */
    atomic_int draining;
    atomic_long in_flight;
    atomic_uint_fast64_t reloads, reload_failures;
};

/* One request being answered; every handler takes one. */
struct call {
    struct sgbd_api *api;
    struct sgbd_api_request *req;
    struct sgbd_api_response *resp;
    struct sgbd_view view;          /* pinned for the whole request */
    char id[SGBD_STORE_ID_MAX + 1]; /* the {id} of the path, decoded */
    size_t id_len;
    int max_k, max_batch;
};

/* ---- api.c ---- */

/* Percent-decode in (n bytes) into out (cap, NUL-terminated); *len gets
 * the decoded length (the text may hold NULs). -1: bad escape, too long. */
int api_decode(const char *in, size_t n, char *out, size_t cap, size_t *len);

/* Error envelope with the view's model version. */
void api_fail(struct call *c, int status, const char *code, const char *fmt,
              ...) __attribute__((format(printf, 4, 5)));

/* Map an error code of a lower module (its detail as message). */
void api_fail_rc(struct call *c, int rc);

/* Finish w as the response body (200 unless status set), or 500. */
void api_reply(struct call *c, int status, struct sgbd_json *w);

/* The same with a finished JSON body (malloc'd, len bytes), taken. */
void api_reply_json(struct call *c, int status, char *body, size_t len);

/* Begin a response object with model_version written first. */
void api_begin_body(struct call *c, struct sgbd_json *w);

/*
 * The value of query argument key, percent-decoded into buf (size n):
 * 1 found, 0 absent, -1 malformed (error already sent).
 */
int api_arg(struct call *c, const char *key, char *buf, size_t n);

/* k from the query (default 10) or a JSON member; 0 ok, -1 sent 400. */
int api_query_k(struct call *c, size_t *k);
int api_json_k(struct call *c, json_t *v, size_t *k);

/*
 * Check an id (len bytes, may hold NULs) named what ("item id"): 0, or
 * -1 with a 400 bad_id sent.
 */
int api_check_id(struct call *c, const char *id, size_t len,
                 const char *what);

/* Parse the body as a JSON object; NULL with a 400 sent. */
json_t *api_body_object(struct call *c);

/* A string member of obj that is a valid id, or NULL with 400 sent. */
const char *api_member_id(struct call *c, json_t *obj, const char *key,
                          const char *what, int required);

/* Reject members of obj other than allowed (NULL-terminated): -1 sent. */
int api_only_members(struct call *c, json_t *obj, const char *const *allowed,
                     const char *where);

/* ---- api_reco.c ---- */

void api_h_recommend(struct call *c);
void api_h_batch(struct call *c);
void api_h_similar(struct call *c);

/* ---- api_write.c ---- */

void api_h_item_put(struct call *c);
void api_h_item_get(struct call *c);
void api_h_item_delete(struct call *c);
void api_h_interactions(struct call *c);

#endif
