/* metrics_http.c - counters, histograms and the text exposition. */
#include "sgbd/metrics_http.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sgbd/err.h"

/* Status codes the API gives; anything else counts as "other". */
static const int codes[] = {200, 201, 202, 400, 401, 403, 404, 405, 409, 413,
                            415, 422, 500, 501, 503, 507};
#define N_CODES (sizeof(codes) / sizeof(codes[0]))
#define CODE_OTHER N_CODES

/* Upper bounds in seconds (0.1 ms ... 2.5 s), then +Inf. */
static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                0.005,  0.01,    0.025,  0.05,  0.1,
                                0.25,   0.5,     1,      2.5};
#define N_BOUNDS (sizeof(bounds) / sizeof(bounds[0]))

static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256,
                                      512, 1024};
#define N_BATCH (sizeof(batch_bounds) / sizeof(batch_bounds[0]))

struct route_stats {
    char name[64];
    atomic_uint_fast64_t count[N_CODES + 1];
    atomic_uint_fast64_t bucket[N_BOUNDS + 1];   /* not cumulative */
    atomic_uint_fast64_t sum_ns;
};

struct sgbd_metrics_http {
    int n_routes;
    struct route_stats r[SGBD_METRICS_MAX_ROUTES];
    atomic_uint_fast64_t batch[N_BATCH + 1];
    atomic_uint_fast64_t batch_sum, batch_n;
    double started;
};

static double now_unix(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int sgbd_metrics_http_new(struct sgbd_metrics_http **out, const char *const *routes,
                     int n)
{
    struct sgbd_metrics_http *m;

    if (n < 0 || n > SGBD_METRICS_MAX_ROUTES - 1)
        return sgbd_errf(SGBD_E_LIMIT, "metrics: %d routes, at most %d", n,
                         SGBD_METRICS_MAX_ROUTES - 1);
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    for (int k = 0; k < n; k++)
        snprintf(m->r[k].name, sizeof(m->r[k].name), "%s", routes[k]);
    snprintf(m->r[n].name, sizeof(m->r[n].name), "other");
    m->n_routes = n + 1;
    m->started = now_unix();
    *out = m;
    return 0;
}

void sgbd_metrics_http_free(struct sgbd_metrics_http *m)
{
    free(m);
}

void sgbd_metrics_http_observe(struct sgbd_metrics_http *m, int route, int status,
                          double seconds)
{
    struct route_stats *r;
    size_t c = CODE_OTHER, b = 0;

    if (route < 0 || route >= m->n_routes)
        route = m->n_routes - 1;
    r = &m->r[route];
    for (size_t k = 0; k < N_CODES; k++)
        if (codes[k] == status)
            c = k;
    while (b < N_BOUNDS && seconds > bounds[b])
        b++;
    atomic_fetch_add_explicit(&r->count[c], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->sum_ns,
                              (uint64_t)(seconds > 0 ? seconds * 1e9 : 0),
                              memory_order_relaxed);
}

void sgbd_metrics_http_batch(struct sgbd_metrics_http *m, size_t users)
{
    size_t b = 0;

    while (b < N_BATCH && (double)users > batch_bounds[b])
        b++;
    atomic_fetch_add_explicit(&m->batch[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batch_sum, users, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->batch_n, 1, memory_order_relaxed);
}

/* ---- text ---- */

struct text {
    char *buf;
    size_t len, cap;
    int failed;
};

static void add(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len)
            break;
        char *p = realloc(t->buf, t->cap * 2 + (size_t)n);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->buf = p;
        t->cap = t->cap * 2 + (size_t)n;
    }
    t->len += (size_t)n;
}

static void gauge(struct text *t, const char *name, const char *help,
                  double v)
{
    add(t, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name,
        name, v);
}

static void counter(struct text *t, const char *name, const char *help,
                    double v)
{
    add(t, "# HELP %s %s\n# TYPE %s counter\n%s %.17g\n", name, help, name,
        name, v);
}

static void render_requests(struct text *t, struct sgbd_metrics_http *m)
{
    add(t, "# HELP sgbd_http_requests_total HTTP requests by route "
           "template and status.\n# TYPE sgbd_http_requests_total "
           "counter\n");
    for (int r = 0; r < m->n_routes; r++)
        for (size_t c = 0; c <= N_CODES; c++) {
            uint64_t v = atomic_load(&m->r[r].count[c]);
            if (!v)
                continue;
            if (c == CODE_OTHER)
                add(t, "sgbd_http_requests_total{route=\"%s\",code=\"other\"}"
                    " %llu\n", m->r[r].name, (unsigned long long)v);
            else
                add(t, "sgbd_http_requests_total{route=\"%s\",code=\"%d\"} "
                    "%llu\n", m->r[r].name, codes[c], (unsigned long long)v);
        }
}

static void render_latency(struct text *t, struct sgbd_metrics_http *m)
{
    add(t, "# HELP sgbd_http_request_duration_seconds Time from the "
           "request's arrival to its response being queued.\n# TYPE "
           "sgbd_http_request_duration_seconds histogram\n");
    for (int r = 0; r < m->n_routes; r++) {
        uint64_t cum = 0;
        for (size_t b = 0; b <= N_BOUNDS; b++) {
            cum += atomic_load(&m->r[r].bucket[b]);
            if (b < N_BOUNDS)
                add(t, "sgbd_http_request_duration_seconds_bucket{route=\"%s"
                    "\",le=\"%g\"} %llu\n", m->r[r].name, bounds[b],
                    (unsigned long long)cum);
            else
                add(t, "sgbd_http_request_duration_seconds_bucket{route=\"%s"
                    "\",le=\"+Inf\"} %llu\n", m->r[r].name,
                    (unsigned long long)cum);
        }
        add(t, "sgbd_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n"
            "sgbd_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
            m->r[r].name, atomic_load(&m->r[r].sum_ns) * 1e-9, m->r[r].name,
            (unsigned long long)cum);
    }
}

static void render_batch(struct text *t, struct sgbd_metrics_http *m)
{
    uint64_t cum = 0;

    add(t, "# HELP sgbd_score_batch_size Users scored per recommendation "
           "request.\n# TYPE sgbd_score_batch_size histogram\n");
    for (size_t b = 0; b <= N_BATCH; b++) {
        cum += atomic_load(&m->batch[b]);
        if (b < N_BATCH)
            add(t, "sgbd_score_batch_size_bucket{le=\"%g\"} %llu\n",
                batch_bounds[b], (unsigned long long)cum);
        else
            add(t, "sgbd_score_batch_size_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)cum);
    }
    add(t, "sgbd_score_batch_size_sum %llu\nsgbd_score_batch_size_count "
        "%llu\n", (unsigned long long)atomic_load(&m->batch_sum),
        (unsigned long long)atomic_load(&m->batch_n));
}

static void render_model(struct text *t, const struct sgbd_metrics_http_gauges *g)
{
    double now = now_unix();

    gauge(t, "sgbd_model_version", "Version of the model being served (0: "
          "none).", (double)g->model_version);
    gauge(t, "sgbd_snapshot_age_seconds", "Seconds since the served "
          "snapshot was published (0: none).",
          g->snapshot_published_at > 0 ? now - g->snapshot_published_at : 0);
    gauge(t, "sgbd_model_last_swap_timestamp_seconds", "Unix time of the "
          "last model swap.", g->snapshot_published_at);
    gauge(t, "sgbd_users", "Users in the served snapshot.",
          (double)g->snapshot_users);
    gauge(t, "sgbd_items", "Items in the served snapshot.",
          (double)g->snapshot_items);
    gauge(t, "sgbd_overlay_items", "Items written since the snapshot.",
          (double)g->overlay_items);
    gauge(t, "sgbd_pending_item_updates", "Item writes waiting for a "
          "retrain.", (double)g->pending_item_updates);
    gauge(t, "sgbd_pending_interactions", "Interactions waiting for a "
          "retrain.", (double)g->pending_interactions);
    gauge(t, "sgbd_snapshots_live", "Snapshots in memory (2 while an old "
          "one is still read).", (double)g->snapshots_live);
    gauge(t, "sgbd_snapshot_bytes", "Bytes of the snapshots in memory.",
          (double)g->snapshot_bytes);
    counter(t, "sgbd_model_swaps_total", "Model snapshots published.",
            (double)g->model_swaps);
    counter(t, "sgbd_view_swaps_total", "Serving views published (model "
            "swaps and overlay edits).", (double)g->view_swaps);
    gauge(t, "sgbd_ready", "1 when a model is served and not draining.",
          g->ready);
    gauge(t, "sgbd_draining", "1 after SIGTERM.", g->draining);
    gauge(t, "sgbd_http_requests_in_flight", "Requests being handled.",
          (double)g->requests_in_flight);
}

static void render_retrain(struct text *t,
                           const struct sgbd_metrics_http_gauges *g)
{
    counter(t, "sgbd_config_reloads_total", "SIGHUP reloads applied.",
            (double)g->reloads_total);
    counter(t, "sgbd_config_reload_failures_total", "SIGHUP reloads "
            "rejected (old settings kept).", (double)g->reload_failures_total);
    if (g->cache_max_bytes) {
        counter(t, "sgbd_reco_cache_hits_total", "Recommendations and "
                "similar items answered from the answer cache.",
                (double)g->cache_hits);
        counter(t, "sgbd_reco_cache_misses_total", "Cacheable "
                "requests that were scored.", (double)g->cache_misses);
        gauge(t, "sgbd_reco_cache_entries", "Answers held in the cache.",
              (double)g->cache_entries);
        gauge(t, "sgbd_reco_cache_bytes", "Bytes the cache holds (limit: "
              "[server] result_cache_mb).", (double)g->cache_bytes);
    }
    if (!g->retrain_attached)
        return;
    gauge(t, "sgbd_retrain_running", "1 while a retrain runs.", g->training);
    counter(t, "sgbd_retrains_total", "Retrains finished.",
            (double)g->retrains_total);
    counter(t, "sgbd_retrain_rejected_total", "Retrains the gate rejected.",
            (double)g->retrain_rejected_total);
    counter(t, "sgbd_retrain_failures_total", "Retrains that failed.",
            (double)g->retrain_failed_total);
    gauge(t, "sgbd_train_duration_seconds", "Duration of the last retrain.",
          g->last_retrain_seconds);
}

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

static void render_process(struct text *t, struct sgbd_metrics_http *m)
{
    struct rusage ru;
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    getrusage(RUSAGE_SELF, &ru);
    counter(t, "process_cpu_seconds_total", "User and system CPU time.",
            (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
            (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6);
    gauge(t, "process_resident_memory_bytes", "Resident memory.",
          (double)resident * (double)sysconf(_SC_PAGESIZE));
    gauge(t, "process_virtual_memory_bytes", "Virtual memory.",
          (double)pages * (double)sysconf(_SC_PAGESIZE));
    gauge(t, "process_open_fds", "Open file descriptors.",
          (double)count_fds());
    gauge(t, "process_start_time_seconds", "Unix time the process started.",
          m->started);
    add(t, "# HELP sgbd_build_info Build facts.\n# TYPE sgbd_build_info "
           "gauge\nsgbd_build_info{version=\"%s\"} 1\n", SGBD_VERSION);
}

int sgbd_metrics_http_render(struct sgbd_metrics_http *m,
                        const struct sgbd_metrics_http_gauges *g, char **out,
                        size_t *len)
{
    struct text t = {malloc(16384), 0, 16384, 0};

    if (!t.buf)
        return -ENOMEM;
    t.buf[0] = '\0';
    render_requests(&t, m);
    render_latency(&t, m);
    render_batch(&t, m);
    render_model(&t, g);
    render_retrain(&t, g);
    render_process(&t, m);
    if (t.failed) {
        free(t.buf);
        return -ENOMEM;
    }
    *out = t.buf;
    *len = t.len;
    return 0;
}
