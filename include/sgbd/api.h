/*
 * api.h - the HTTP/JSON API of DESIGN.md section 7, without HTTP.
 *
 * The http module (the only one that sees libmicrohttpd) turns each
 * request into a struct sgbd_api_request and sends back the struct
 * sgbd_api_response this module fills; so every route can be tested by
 * calling sgbd_api_begin and sgbd_api_handle directly. The contract of
 * every body lives in proto/openapi.yaml.
 *
 * A request goes through two calls:
 *   sgbd_api_begin   with the request line and headers only: route, method
 *                    (405), bearer token (401/403), Content-Type (415) and
 *                    Content-Length against the body limit (413), so a bad
 *                    upload is refused before a byte of it is read;
 *   sgbd_api_handle  with the whole body: parse, act, answer.
 * Reads pin one serving view (snapshot.h) for the whole request, so every
 * part of a response comes from one model version; writes are committed to
 * the store before the response is made (durable before 2xx), then applied
 * to the overlay so their effects are visible at once.
 *
 * Errors are {"error": {"code", "message"}, "model_version"} with a stable
 * code (listed in proto/openapi.yaml); every response carries
 * model_version in its body and in the X-Model-Version header.
 *
 * Threads: all calls but _new, _free may run on many threads at once.
 */
#ifndef SGBD_API_H
#define SGBD_API_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/config.h"
#include "sgbd/snapshot.h"

struct sgbd_store;
struct sgbd_api;

/* ---- the online retrainer's side (issue #6) ---- */

#define SGBD_RETRAIN_MESSAGE 256

/* What GET /v1/model shows of the retrainer. */
struct sgbd_retrain_status {
    const char *state;              /* "idle" or "training" (static) */
    double progress;                /* 0..1 of the running job */
    const char *last_outcome;       /* "none", "published", "rejected",
                                       "failed" (static) */
    double last_started_at;         /* unix seconds, 0: never */
    double last_duration_s;
    uint64_t last_version;          /* published or candidate version */
    uint64_t retrains_total, rejected_total, failed_total;
    uint64_t pending_item_updates;  /* what counts toward the trigger */
    uint64_t pending_interactions;
    int n_candidate_metrics;        /* of the last candidate */
    struct sgbd_snapshot_metric candidate_metrics[SGBD_SNAPSHOT_MAX_METRICS];
    char message[SGBD_RETRAIN_MESSAGE]; /* last error or gate verdict */
};

/*
 * Filled by the retrainer and given to the API (and to serve, which calls
 * restore at start-up and stop at shutdown). Any pointer may be NULL: the
 * route then answers 501 not_implemented. Each runs on the calling HTTP
 * thread and must return quickly (queue the work, never train there).
 */
struct sgbd_retrain_hooks {
    void *ctx;
    /* After a durable write and its overlay edit: counts toward the
     * triggers. last_seq is the write's sequence number (snapshot.h). */
    void (*notify)(void *ctx, uint64_t item_updates, uint64_t interactions,
                   uint64_t last_seq);
    /* POST /v1/model/retrain: 0 queued, SGBD_E_BUSY (409: one is running),
     * SGBD_E_NOMODEL / SGBD_E_NOTFOUND (409: nothing to train on). */
    int (*trigger)(void *ctx, const char *reason);
    /* POST /v1/model/rollback: publish a kept version; 0, SGBD_E_NOTFOUND
     * (404), SGBD_E_CORRUPT (409), SGBD_E_BUSY (409). */
    int (*rollback)(void *ctx, uint64_t version);
    /* GET /v1/model and /metrics. */
    void (*status)(void *ctx, struct sgbd_retrain_status *out);
    /* SIGHUP, after the API took the new options: the retrain policy. */
    void (*reload)(void *ctx, const struct sgbd_config *cfg);
    /* Start-up: publish the latest valid checkpoint into the slot. 0 (a
     * model is published), SGBD_E_NOMODEL (none yet: start not ready). */
    int (*restore)(void *ctx);
    /* Shutdown: finish or cancel the running job, join the thread. */
    void (*stop)(void *ctx);
};

/* ---- requests and responses ---- */

/* A query argument as received: value still percent-encoded. */
struct sgbd_api_arg {
    const char *key;
    const char *value;              /* "" when given without '=' */
};

#define SGBD_API_MAX_ARGS 32

struct sgbd_api_request {
    const char *method;             /* "GET", "HEAD", "POST", ... */
    const char *path;               /* raw, percent-encoded, no query */
    int n_args;
    struct sgbd_api_arg args[SGBD_API_MAX_ARGS];
    const char *authorization;      /* header value or NULL */
    const char *content_type;       /* header value or NULL */
    int64_t content_length;         /* -1: none given (chunked or empty) */
    const char *body;               /* whole body for _handle */
    size_t body_len;
    int route;                      /* set by sgbd_api_begin */
};

struct sgbd_api_response {
    int status;
    char *body;                     /* malloc'd; sgbd_api_response_clear */
    size_t len;
    const char *content_type;       /* static string */
    uint64_t model_version;
    const char *allow;              /* 405: the Allow header (static) */
    int challenge;                  /* 401: send WWW-Authenticate */
    int close;                      /* ask the client to close */
};

struct sgbd_api_opts {
    const struct sgbd_config *cfg;  /* copied */
    struct sgbd_store *store;       /* borrowed; NULL: writes get 503 */
    struct sgbd_snapshot_slot *slot;/* borrowed */
    const struct sgbd_retrain_hooks *hooks; /* copied; NULL: none */
};

/*
 * An API over slot and store. Reads the token files of cfg.
 * Errors: those of sgbd_auth_load (naming the file), -ENOMEM.
 */
int sgbd_api_new(struct sgbd_api **out, const struct sgbd_api_opts *o);
void sgbd_api_free(struct sgbd_api *api);

/*
 * Take the options SIGHUP may change (limits, tokens) from cfg, then call
 * the retrain hook's reload. On error (a token file) the old options stay.
 * Counts reloads and failures for /metrics.
 */
int sgbd_api_reload(struct sgbd_api *api, const struct sgbd_config *cfg);

/* Count a reload that failed before reaching the API (bad config file). */
void sgbd_api_reload_failed(struct sgbd_api *api);

/* Draining: /readyz answers 503 and responses ask clients to close. */
void sgbd_api_set_draining(struct sgbd_api *api, int on);

/* Whether a model is served and the API is not draining. */
int sgbd_api_ready(struct sgbd_api *api);

/* Requests between sgbd_api_begin and sgbd_api_finish right now. */
long sgbd_api_in_flight(struct sgbd_api *api);

/*
 * Early checks of a request whose body has not been read yet. Returns 1
 * when resp holds the final answer (send it and discard any body), 0 when
 * the body should be read and sgbd_api_handle called. Either way call
 * sgbd_api_finish exactly once afterwards.
 */
int sgbd_api_begin(struct sgbd_api *api, struct sgbd_api_request *req,
                   struct sgbd_api_response *resp);

/* Answer a request that passed sgbd_api_begin; req->body is complete. */
void sgbd_api_handle(struct sgbd_api *api, struct sgbd_api_request *req,
                     struct sgbd_api_response *resp);

/* Count a finished request (seconds since it arrived) in the metrics. */
void sgbd_api_finish(struct sgbd_api *api, const struct sgbd_api_request *req,
                     const struct sgbd_api_response *resp, double seconds);

/* Fill resp with the error envelope: status, stable code, message. */
void sgbd_api_error(struct sgbd_api *api, struct sgbd_api_response *resp,
                    int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Free resp->body and reset resp. */
void sgbd_api_response_clear(struct sgbd_api_response *resp);

/* The body limit (bytes) the http module enforces while streaming. */
int64_t sgbd_api_max_body(const struct sgbd_api *api);

#endif
