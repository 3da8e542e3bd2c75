/*
 * serve.h - the daemon: `sgbd serve` as a list of named phases.
 *
 *   config   defaults, the file (-c), command-line overrides, log level
 *   signals  SIGTERM, SIGINT, SIGHUP caught by a handler that writes to a
 *            self-pipe the main loop reads; SIGPIPE ignored
 *   store    open (create) the LMDB store
 *   api      the publication slot, the retrainer's hooks, the API
 *   model    the latest valid checkpoint (the retrainer's restore hook),
 *            or a synthetic snapshot (--synthetic), or none: not ready
 *   listen   the HTTP server
 *   ready    READY=1 to systemd
 *   loop     SIGHUP: RELOADING=1, reload the options that may change,
 *            READY=1; a watchdog tick: probe /healthz through the socket,
 *            then WATCHDOG=1; SIGTERM: drain
 *   drain    STOPPING=1, /readyz 503, stop accepting, wait for requests in
 *            flight (up to drain_timeout_s), stop HTTP, stop the
 *            retrainer, close the store; exit 0
 *
 * The retrainer (issue #6) plugs in through one registration point in
 * serve.c: a function of type sgbd_retrain_attach_fn that fills the hooks
 * of api.h for the daemon's store and slot.
 */
#ifndef SGBD_SERVE_H
#define SGBD_SERVE_H

#include "sgbd/api.h"
#include "sgbd/config.h"
#include "sgbd/snapshot.h"

struct sgbd_store;

#define SGBD_SERVE_MAX_SETS 32

struct sgbd_serve_opts {
    const char *config_path;        /* -c FILE, or NULL for defaults */
    const char *db_path;            /* --db: overrides [store] path */
    const char *listen;             /* --listen: overrides [server] listen */
    const char *synthetic;          /* --synthetic U,I,D[,SEED] or NULL */
    int no_store;                   /* --no-store: serve without a store */
    int n_sets;                     /* --set section.key=value */
    const char *sets[SGBD_SERVE_MAX_SETS];
};

/* What a retrainer is attached to. All borrowed for the daemon's life. */
struct sgbd_serve_env {
    const struct sgbd_config *cfg;  /* the start-up configuration */
    struct sgbd_store *store;       /* NULL with --no-store */
    struct sgbd_snapshot_slot *slot;
};

/*
 * Fill hooks (zeroed by the caller) for env: start the retrain thread,
 * keep whatever it needs. Returns 0 or an error that stops start-up.
 */
typedef int (*sgbd_retrain_attach_fn)(const struct sgbd_serve_env *env,
                                      struct sgbd_retrain_hooks *hooks);

/*
 * Run the daemon until SIGTERM or SIGINT. Returns 0 after a clean drain,
 * or the error of the phase that failed (its detail names it).
 */
int sgbd_serve_run(const struct sgbd_serve_opts *o);

/*
 * Read the configuration as serve does: defaults, then the file (when
 * given), then the overrides of o. Errors: those of sgbd_config_load and
 * sgbd_config_set.
 */
int sgbd_serve_config(struct sgbd_config *cfg, const struct sgbd_serve_opts *o);

/*
 * A synthetic snapshot for benchmarks and tests, from spec
 * "USERS,ITEMS,DIM[,SEED]": Gaussian U and V (scaled 1/sqrt(D)), ids
 * "u<k>" and "i<k>", 5..15 seen items per user drawn with a popularity
 * skew, and a cold-start model that maps channels "image" (64 floats) and
 * "text" (32 floats) linearly to D. Version 1, absorbed_seq 0.
 * Errors: SGBD_E_USAGE (bad spec), -ENOMEM.
 */
int sgbd_serve_synthetic(struct sgbd_snapshot **out, const char *spec);

#endif
