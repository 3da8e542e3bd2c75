/*
 * serve.c - `sgbd serve`: the daemon's phases and its main loop
 * (serve.h lists them). Signals reach the main loop through a self-pipe,
 * whichever thread they interrupt.
 */
#include "sgbd/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/http.h"
#include "sgbd/log.h"
#include "sgbd/mat.h"
#include "sgbd/notify.h"
#include "sgbd/retrain.h"
#include "sgbd/store.h"

/*
 * Registration point of the online retrainer (retrain.h): it restores the
 * latest valid checkpoint at start-up and retrains in the background.
 * Without a store it attaches nothing, and /v1/model/retrain and rollback
 * answer 501.
 */
static const sgbd_retrain_attach_fn retrain_attach = sgbd_retrain_attach;

/* MHD's pool per connection: request line, headers and its read buffer
 * (bodies go to buffers of our own). MHD zeroes it for every request, so
 * it stays at MHD's own default. */
#define CONNECTION_MEMORY (32 * 1024)
#define PROBE_TIMEOUT_MS 2000
#define CATALOGUE_BATCH 10000

struct daemon {
    const struct sgbd_serve_opts *opts;
    struct sgbd_config cfg;
    int sigfd;
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_retrain_hooks hooks;
    struct sgbd_api *api;
    struct sgbd_http *http;
    uint64_t watchdog_ms;           /* ping interval, 0: none */
    int64_t next_watchdog_ms;
    uint64_t announced_version;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- config ---- */

int sgbd_serve_config(struct sgbd_config *cfg, const struct sgbd_serve_opts *o)
{
    struct sgbd_config tmp;
    int rc = 0;

    sgbd_config_defaults(&tmp);
    if (o->config_path)
        rc = sgbd_config_load(&tmp, o->config_path);
    for (int k = 0; rc == 0 && k < o->n_sets; k++) {
        char name[96];
        const char *eq = strchr(o->sets[k], '=');
        size_t n = eq ? (size_t)(eq - o->sets[k]) : 0;
        if (!eq || n >= sizeof(name))
            return sgbd_errf(SGBD_E_USAGE, "--set '%s': expected "
                             "section.key=value", o->sets[k]);
        memcpy(name, o->sets[k], n);
        name[n] = '\0';
        rc = sgbd_config_set(&tmp, name, eq + 1);
    }
    if (rc == 0 && o->db_path)
        rc = sgbd_config_set(&tmp, "store.path", o->db_path);
    if (rc == 0 && o->listen)
        rc = sgbd_config_set(&tmp, "server.listen", o->listen);
    if (rc == 0 && sgbd_log_level_parse(tmp.log_level) < 0)
        rc = sgbd_errf(SGBD_E_CONFIG, "[log] level: '%s' is not one of err, "
                       "warning, notice, info, debug", tmp.log_level);
    if (rc == 0)
        *cfg = tmp;
    return rc;
}

static int phase_config(struct daemon *d)
{
    int rc = sgbd_serve_config(&d->cfg, d->opts);

    if (rc != 0)
        return rc;
    sgbd_log_level = sgbd_log_level_parse(d->cfg.log_level);
    SGBD_INFO("serve_starting", "version=%s config=%s listen=%s db=%s",
              SGBD_VERSION, d->opts->config_path ? d->opts->config_path
                                                 : "(defaults)",
              d->cfg.listen, d->opts->no_store ? "(none)" : d->cfg.db_path);
    return 0;
}

/* ---- signals ---- */

/*
 * A self-pipe, not signalfd: libraries start threads before main (the
 * OpenBLAS pool does, in its constructor), and a signal blocked only in
 * some threads would be delivered to another with its default action.
 * A handler runs in whichever thread gets the signal and only writes the
 * signal number to the pipe, which the main loop reads.
 */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;

    if (write(sig_pipe[1], &b, 1) < 0) {
        /* the pipe is full: a signal is pending already */
    }
    errno = saved;
}

static int phase_signals(struct daemon *d)
{
    struct sigaction sa;
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};

    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return sgbd_errf(-errno, "signal pipe: %s", sgbd_strerror(-errno));
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++)
        if (sigaction(sigs[k], &sa, NULL) != 0)
            return sgbd_errf(-errno, "sigaction: %s", sgbd_strerror(-errno));
    d->sigfd = sig_pipe[0];
    return 0;
}

static void restore_signals(void)
{
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};

    for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++)
        signal(sigs[k], SIG_DFL);
    if (sig_pipe[1] >= 0)
        close(sig_pipe[1]);
    sig_pipe[0] = sig_pipe[1] = -1;
}

/* ---- store ---- */

static int phase_store(struct daemon *d)
{
    struct sgbd_store_opts so;
    struct sgbd_store_counts c;
    int rc;

    if (d->opts->no_store)
        return 0;
    sgbd_store_opts_defaults(&so);
    so.map_size = (size_t)d->cfg.map_size_mb << 20;
    rc = sgbd_store_open(&d->store, d->cfg.db_path, &so);
    if (rc != 0)
        return rc;
    rc = sgbd_store_counts(d->store, &c);
    if (rc != 0)
        return rc;
    SGBD_INFO("store_opened", "path=%s items=%llu users=%llu "
              "interactions=%llu checkpoints=%llu", d->cfg.db_path,
              (unsigned long long)c.items, (unsigned long long)c.users,
              (unsigned long long)c.interactions,
              (unsigned long long)c.checkpoints);
    return 0;
}

/* ---- api and retrainer ---- */

static int phase_api(struct daemon *d)
{
    struct sgbd_serve_env env;
    struct sgbd_api_opts ao;
    int rc = sgbd_snapshot_slot_new(&d->slot);

    if (rc != 0)
        return rc;
    env = (struct sgbd_serve_env){&d->cfg, d->store, d->slot};
    if (retrain_attach) {
        rc = retrain_attach(&env, &d->hooks);
        if (rc != 0)
            return rc;
    }
    ao = (struct sgbd_api_opts){&d->cfg, d->store, d->slot, &d->hooks};
    return sgbd_api_new(&d->api, &ao);
}

/* ---- model ---- */

/* Make the synthetic items exist in the store, so writes can name them. */
static int ensure_catalogue(struct sgbd_store *st,
                            const struct sgbd_snapshot *s)
{
    struct sgbd_store_item *batch;
    struct sgbd_store_counts c;
    int rc = sgbd_store_counts(st, &c);

    for (int k = 0; rc == 0 && k < s->n_channels; k++)
        rc = sgbd_store_channel_define(st, s->channels[k].name,
                                       (uint32_t)s->channels[k].width);
    if (rc != 0 || c.items >= s->n_items)
        return rc;
    if (!(batch = calloc(CATALOGUE_BATCH, sizeof(*batch))))
        return -ENOMEM;
    for (uint32_t i0 = 0; rc == 0 && i0 < s->n_items; i0 += CATALOGUE_BATCH) {
        uint32_t n = s->n_items - i0 < CATALOGUE_BATCH ? s->n_items - i0
                                                       : CATALOGUE_BATCH;
        for (uint32_t j = 0; j < n; j++)
            batch[j].id = sgbd_snapshot_item_id(s, i0 + j);
        rc = sgbd_store_items_upsert(st, batch, n, NULL);
    }
    free(batch);
    return rc;
}

static int phase_model(struct daemon *d)
{
    struct sgbd_snapshot *s = NULL;
    int rc;

    if (d->opts->synthetic) {
        rc = sgbd_serve_synthetic(&s, d->opts->synthetic);
        if (rc == 0 && d->store)
            rc = ensure_catalogue(d->store, s);
        if (rc != 0) {
            sgbd_snapshot_free(s);
            return rc;
        }
        SGBD_INFO("snapshot_synthetic", "users=%u items=%u dim=%zu bytes=%zu",
                  s->n_users, s->n_items, s->dim, sgbd_snapshot_bytes(s));
        return sgbd_snapshot_publish(d->slot, s, 0);
    }
    if (!d->hooks.restore) {
        SGBD_LOG(SGBD_LOG_NOTICE, "no_model", "reason=no_retrainer ready=0");
        return 0;
    }
    rc = d->hooks.restore(d->hooks.ctx);
    if (rc == SGBD_E_NOMODEL)
        SGBD_INFO("no_model", "reason=no_checkpoint ready=0");
    else if (rc != 0)
        SGBD_ERR("restore_failed", "why=\"%s\" ready=0", sgbd_err_detail(rc));
    return 0; /* serve not-ready rather than crash-loop under systemd */
}

/* ---- listen ---- */

static int phase_listen(struct daemon *d)
{
    struct sgbd_http_opts ho = {
        .listen = d->cfg.listen,
        .threads = d->cfg.http_threads,
        .max_connections = d->cfg.max_connections,
        .idle_timeout_s = d->cfg.connection_timeout_s,
        .request_timeout_s = d->cfg.request_timeout_s,
        .connection_memory = CONNECTION_MEMORY,
    };

    return sgbd_http_start(&d->http, &ho, d->api);
}

static uint64_t served_version(struct daemon *d)
{
    struct sgbd_view v;
    uint64_t ver;

    sgbd_snapshot_acquire(d->slot, &v);
    ver = v.version;
    sgbd_snapshot_release(&v);
    return ver;
}

static void phase_ready(struct daemon *d)
{
    char status[128];
    uint64_t usec = sgbd_notify_watchdog_usec();

    d->announced_version = served_version(d);
    if (d->announced_version)
        snprintf(status, sizeof(status), "serving model version %llu on "
                 "port %u", (unsigned long long)d->announced_version,
                 sgbd_http_port(d->http));
    else
        snprintf(status, sizeof(status), "listening on port %u, waiting for "
                 "a first model", sgbd_http_port(d->http));
    sgbd_notify_ready(status);
    d->watchdog_ms = usec / 2000;   /* ping at half the interval */
    d->next_watchdog_ms = mono_ms();
    SGBD_INFO("serve_ready", "port=%u model_version=%llu watchdog_ms=%llu",
              sgbd_http_port(d->http),
              (unsigned long long)d->announced_version,
              (unsigned long long)d->watchdog_ms);
}

/* ---- the loop ---- */

static void reload(struct daemon *d)
{
    struct sgbd_config cfg;
    const char *fixed = NULL;
    int rc;

    sgbd_notify_reloading();
    rc = sgbd_serve_config(&cfg, d->opts);
    if (rc == 0 && sgbd_config_fixed_differs(&d->cfg, &cfg, &fixed))
        SGBD_WARN("reload_needs_restart", "option=%s", fixed);
    if (rc == 0)
        rc = sgbd_api_reload(d->api, &cfg);
    else
        sgbd_api_reload_failed(d->api);
    if (rc != 0) {
        SGBD_ERR("reload_failed", "why=\"%s\" kept=old", sgbd_err_detail(rc));
    } else {
        sgbd_log_level = sgbd_log_level_parse(cfg.log_level);
        SGBD_INFO("reloaded", "log_level=%s max_k=%d max_batch_users=%d",
                  cfg.log_level, cfg.max_k, cfg.max_batch_users);
    }
    sgbd_notify_ready(rc == 0 ? "reloaded" : "reload failed; old settings");
}

static void tick(struct daemon *d)
{
    uint64_t ver = served_version(d);

    if (ver != d->announced_version) {
        sgbd_notify_status("serving model version %llu",
                           (unsigned long long)ver);
        d->announced_version = ver;
    }
    if (!d->watchdog_ms || mono_ms() < d->next_watchdog_ms)
        return;
    if (sgbd_http_probe(d->http, PROBE_TIMEOUT_MS) == 0)
        sgbd_notify_watchdog();
    else
        SGBD_WARN("watchdog_probe_failed", "port=%u",
                  sgbd_http_port(d->http));
    d->next_watchdog_ms = mono_ms() + (int64_t)d->watchdog_ms;
}

/* Serve until SIGTERM or SIGINT; returns the signal. */
static int loop(struct daemon *d)
{
    for (;;) {
        struct pollfd p = {d->sigfd, POLLIN, 0};
        int timeout = 1000;
        unsigned char sig;

        if (d->watchdog_ms && (int64_t)d->watchdog_ms < timeout)
            timeout = (int)d->watchdog_ms;
        if (poll(&p, 1, timeout) < 0 && errno != EINTR)
            return SIGTERM;
        while (read(d->sigfd, &sig, 1) == 1) {
            if (sig == SIGHUP)
                reload(d);
            else
                return sig;
        }
        tick(d);
    }
}

/* ---- drain ---- */

static void drain(struct daemon *d, int sig)
{
    int64_t deadline = mono_ms() + (int64_t)d->cfg.drain_timeout_s * 1000;
    long left;

    sgbd_notify_stopping("draining");
    sgbd_api_set_draining(d->api, 1);
    SGBD_INFO("draining", "signal=%s in_flight=%ld",
              sig == SIGINT ? "INT" : "TERM", sgbd_api_in_flight(d->api));
    sgbd_http_quiesce(d->http);
    while ((left = sgbd_api_in_flight(d->api)) > 0 && mono_ms() < deadline)
        usleep(10000);
    if (left > 0)
        SGBD_WARN("drain_timeout", "in_flight=%ld", left);
}

static void teardown(struct daemon *d)
{
    sgbd_http_stop(d->http);
    d->http = NULL;
    if (d->hooks.stop)
        d->hooks.stop(d->hooks.ctx);
    sgbd_api_free(d->api);
    sgbd_snapshot_slot_free(d->slot);
    sgbd_store_close(d->store);
    if (d->sigfd >= 0)
        close(d->sigfd);
    restore_signals();
}

/* Threads of the retrainer that may be inside sgemm at once. */
static int retrain_blas_callers(const struct sgbd_config *cfg)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (cfg->retrain_threads > 0)
        return cfg->retrain_threads;
    return cpus > 0 ? (int)cpus : 1;
}

int sgbd_serve_run(const struct sgbd_serve_opts *o)
{
    struct daemon d = {.opts = o, .sigfd = -1};
    int rc, sig;

    rc = phase_config(&d);
    if (rc == 0)
        rc = phase_signals(&d);
    if (rc == 0)   /* BLAS callers: the HTTP threads and the retrainer's
                      pool (its thread and workers; OpenBLAS runs none) */
        rc = sgbd_mat_reserve_blas(1, d.cfg.http_threads +
                                          retrain_blas_callers(&d.cfg));
    if (rc == 0)
        rc = phase_store(&d);
    if (rc == 0)
        rc = phase_api(&d);
    if (rc == 0)
        rc = phase_model(&d);
    if (rc == 0)
        rc = phase_listen(&d);
    if (rc == 0) {
        phase_ready(&d);
        sig = loop(&d);
        drain(&d, sig);
    }
    teardown(&d);
    if (rc == 0)
        SGBD_INFO("stopped", "rc=0");
    return rc;
}
