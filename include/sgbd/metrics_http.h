/*
 * metrics_http.h - Prometheus text exposition of the serving metrics.
 *
 * Counters and latency histograms by route template and status code
 * (never by user or item id), plus gauges the caller samples at scrape
 * time (model version, snapshot age, pending updates, retrain facts) and
 * the standard process_* metrics [serving.md section 6.5]. Recording is a
 * few relaxed atomic additions, safe from any number of threads.
 */
#ifndef SGBD_METRICS_HTTP_H
#define SGBD_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define SGBD_METRICS_MAX_ROUTES 24

struct sgbd_metrics_http;

/* Facts sampled when /metrics is scraped. */
struct sgbd_metrics_http_gauges {
    uint64_t model_version;          /* 0: no model */
    double snapshot_published_at;    /* unix seconds, 0: none */
    uint64_t snapshot_users, snapshot_items;
    uint64_t overlay_items;          /* items written since the snapshot */
    uint64_t pending_item_updates, pending_interactions;
    long snapshots_live, snapshot_bytes;
    uint64_t view_swaps;             /* model swaps and overlay edits */
    uint64_t model_swaps;
    int ready, draining;
    long requests_in_flight;
    /* From the retrainer, when one is attached. */
    int retrain_attached, training;
    uint64_t retrains_total, retrain_rejected_total, retrain_failed_total;
    double last_retrain_seconds;
    /* SIGHUP reloads. */
    uint64_t reloads_total, reload_failures_total;
    /* The answer cache (reco_cache.h); max_bytes 0: disabled. */
    uint64_t cache_hits, cache_misses, cache_entries, cache_bytes;
    uint64_t cache_max_bytes;
};

/*
 * Metrics for n route templates (names copied, e.g.
 * "/v1/users/{id}/recommendations"); route n is added as "other".
 * Errors: SGBD_E_LIMIT (n > SGBD_METRICS_MAX_ROUTES - 1), -ENOMEM.
 */
int sgbd_metrics_http_new(struct sgbd_metrics_http **out, const char *const *routes,
                     int n);
void sgbd_metrics_http_free(struct sgbd_metrics_http *m);

/* Count one finished request of route (out of range: "other"). */
void sgbd_metrics_http_observe(struct sgbd_metrics_http *m, int route, int status,
                          double seconds);

/* Count one request in the scoring batch-size histogram. */
void sgbd_metrics_http_batch(struct sgbd_metrics_http *m, size_t users);

/*
 * The exposition text (malloc'd, the caller frees; *len bytes): the
 * counters, histograms, gauges g, sgbd_build_info and process_*.
 * Errors: -ENOMEM.
 */
int sgbd_metrics_http_render(struct sgbd_metrics_http *m,
                        const struct sgbd_metrics_http_gauges *g, char **out,
                        size_t *len);

#endif
