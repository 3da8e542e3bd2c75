/*
 * config.c - the option table and everything derived from it.
 */
#include "sgbd/config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/log.h"

enum opt_type { OPT_INT, OPT_INT64, OPT_DOUBLE, OPT_BOOL, OPT_STRING };

struct opt {
    const char *section;
    const char *key;
    enum opt_type type;
    size_t offset;
    size_t size;         /* buffer size for OPT_STRING */
    const char *defval;
    double min, max;     /* inclusive range for numbers */
    int reloadable;      /* SIGHUP may change it */
    const char *help;
};

#define F(field) offsetof(struct sgbd_config, field), \
                 sizeof(((struct sgbd_config *)0)->field)

static const struct opt options[] = {
    {"server", "listen", OPT_STRING, F(listen), "127.0.0.1:8080", 0, 0, 0,
     "address and port to listen on; 0.0.0.0 exposes it to the network"},
    {"server", "http_threads", OPT_INT, F(http_threads), "2", 1, 256, 0,
     "HTTP worker threads"},
    {"server", "max_body_bytes", OPT_INT64, F(max_body_bytes), "8388608",
     1024, 1073741824, 0, "request bodies larger than this get 413"},
    {"server", "max_connections", OPT_INT, F(max_connections), "1024", 1,
     65536, 0, "concurrent connections"},
    {"server", "connection_timeout_s", OPT_INT, F(connection_timeout_s), "10",
     1, 3600, 0, "idle or slow connections are closed after this"},
    {"server", "max_k", OPT_INT, F(max_k), "1000", 1, 100000, 1,
     "largest k a request may ask for"},
    {"server", "max_batch_users", OPT_INT, F(max_batch_users), "1000", 1,
     100000, 1, "users in one batch recommendation request"},
    {"server", "write_token_file", OPT_STRING, F(write_token_file), "", 0, 0,
     1, "file of bearer tokens (one a line) for write routes; empty: none"},
    {"server", "admin_token_file", OPT_STRING, F(admin_token_file), "", 0, 0,
     1, "file of bearer tokens for admin routes; empty: write tokens"},
    {"server", "request_timeout_s", OPT_INT, F(request_timeout_s), "30", 1,
     3600, 0, "a whole request (headers and body) must arrive within this"},
    {"server", "result_cache_mb", OPT_INT64, F(result_cache_mb), "64", 0,
     65536, 0, "memory for finished recommendations kept for repeat "
     "requests (exact: any write that could change one retires it); 0: off"},
    {"server", "drain_timeout_s", OPT_INT, F(drain_timeout_s), "10", 0, 3600,
     1, "on SIGTERM, wait this long for requests in flight to finish"},

    {"store", "path", OPT_STRING, F(db_path), "/var/lib/sgbd/db", 0, 0, 0,
     "LMDB store directory"},
    {"store", "map_size_mb", OPT_INT64, F(map_size_mb), "1024", 1,
     16777216, 0, "initial map size; grown automatically when full"},
    {"store", "keep_checkpoints", OPT_INT, F(keep_checkpoints), "5", 1, 1000,
     1, "checkpoints kept; older ones are deleted"},

    {"model", "name", OPT_STRING, F(model), "lightgcn", 0, 0, 0,
     "lightgcn, vbpr, dualgnn, dragon, slmrec or freedom"},
    {"model", "embedding_size", OPT_INT, F(embedding_size), "64", 1, 4096, 0,
     "embedding width D"},
    {"model", "n_layers", OPT_INT, F(n_layers), "2", 0, 8, 0,
     "graph propagation layers"},
    {"model", "reg_weight", OPT_DOUBLE, F(reg_weight), "0.0001", 0, 1e3, 1,
     "regulariser weight lambda"},
    {"model", "learning_rate", OPT_DOUBLE, F(learning_rate), "0.001", 0, 1e3,
     1, "Adam learning rate"},
    {"model", "batch_size", OPT_INT, F(batch_size), "2048", 1, 1 << 24, 1,
     "interactions per training step"},
    {"model", "seed", OPT_INT64, F(seed), "999", 0, 9.2e18, 1,
     "random seed of initialisation, shuffling and sampling"},
    {"model", "knn_k", OPT_INT, F(knn_k), "10", 1, 1000, 0,
     "neighbours per item in the feature kNN graph (DRAGON, FREEDOM)"},
    {"model", "mm_image_weight", OPT_DOUBLE, F(mm_image_weight), "0.1", 0, 1,
     0, "weight of the image channel's kNN graph; the rest is text"},
    {"model", "user_knn_k", OPT_INT, F(user_knn_k), "40", 1, 1000, 0,
     "co-occurring users aggregated per user (DualGNN, DRAGON)"},
    {"model", "dropout", OPT_DOUBLE, F(dropout), "0.8", 0, 0.99, 0,
     "share of training edges FREEDOM prunes each epoch"},
    {"model", "ssl_alpha", OPT_DOUBLE, F(ssl_alpha), "0.1", 0, 100, 0,
     "SLMRec: weight of the self-supervised losses"},
    {"model", "ssl_temp", OPT_DOUBLE, F(ssl_temp), "0.2", 0.001, 100, 0,
     "SLMRec: temperature of the self-supervised losses"},
    {"model", "temp", OPT_DOUBLE, F(temp), "0.2", 0.001, 100, 0,
     "SLMRec: temperature of the main InfoNCE loss"},
    {"model", "dualgnn_inplace_bug", OPT_BOOL, F(dualgnn_inplace_bug), "true",
     0, 1, 0, "DualGNN: fuse users as MMRec does, w0 (v + t) + w1 t"},

    {"optimizer", "name", OPT_STRING, F(optimizer), "sgbd", 0, 0, 1,
     "adam, mg, sam or sgbd"},
    {"optimizer", "weight_decay", OPT_DOUBLE, F(weight_decay), "0", 0, 1, 1,
     "coupled L2 weight decay inside Adam"},
    {"optimizer", "alpha1", OPT_DOUBLE, F(alpha1), "1.0", 0, 100, 1,
     "MG factor of the first (descent) step"},
    {"optimizer", "alpha2", OPT_DOUBLE, F(alpha2), "0.2", 0, 100, 1,
     "MG factor of the mirror (ascent) step"},
    {"optimizer", "beta", OPT_INT, F(beta), "3", 1, 1000000, 1,
     "MG interval: batches 0, beta, 2 beta, ... of an epoch mirror"},
    {"optimizer", "rho", OPT_DOUBLE, F(rho), "0.05", 0, 100, 1,
     "SAM neighbourhood radius"},
    {"optimizer", "sam_on_normal_steps", OPT_BOOL, F(sam_on_normal_steps),
     "false", 0, 1, 1, "SGBD: also use the SAM gradient on normal batches"},
    {"optimizer", "adaptive", OPT_BOOL, F(adaptive), "false", 0, 1, 1,
     "adaptive SAM (ASAM): scale the perturbation by |theta|"},

    {"train", "epochs", OPT_INT, F(epochs), "1000", 1, 1000000, 1,
     "maximum epochs of an offline training run"},
    {"train", "stopping_step", OPT_INT, F(stopping_step), "20", 1, 1000000, 1,
     "stop after this many epochs without a better valid metric"},
    {"train", "valid_metric", OPT_STRING, F(valid_metric), "recall@20", 0, 0,
     1, "metric that selects the best epoch, e.g. recall@20, ndcg@10"},
    {"train", "topk", OPT_STRING, F(topk), "5,10,20", 0, 0, 1,
     "cut-offs K at which metrics are reported"},
    {"train", "threads", OPT_INT, F(threads), "0", 0, 256, 1,
     "threads for training maths; 0: all cores"},
    {"train", "streams", OPT_STRING, F(streams), "auto", 0, 0, 1,
     "random draws of offline runs: mmrec draws initialisation, epoch "
     "order and negatives from MMRec's own generators (Python, NumPy, "
     "torch) seeded as MMRec seeds them, so that a run follows MMRec's "
     "run of the same seed (LightGCN, seeds below 2^32); sgbd draws from "
     "SGBD's streams; auto is mmrec where it applies"},
    {"train", "bf16_features", OPT_BOOL, F(bf16_features), "false", 0, 1, 1,
     "multiply the item features by their projections in bfloat16 "
     "(features and weights rounded to 8 bits; about twice as fast on "
     "CPUs with AVX512-BF16, float32 elsewhere)"},

    {"retrain", "enabled", OPT_BOOL, F(retrain_enabled), "true", 0, 1, 1,
     "retrain in the background when updates arrive"},
    {"retrain", "min_item_updates", OPT_INT, F(retrain_min_item_updates),
     "100", 0, 100000000, 1, "pending item updates that trigger a retrain"},
    {"retrain", "min_interactions", OPT_INT, F(retrain_min_interactions),
     "1000", 0, 100000000, 1, "pending interactions that trigger a retrain"},
    {"retrain", "debounce_s", OPT_DOUBLE, F(retrain_debounce_s), "5", 0,
     86400, 1, "wait this long after the last update before starting"},
    {"retrain", "min_interval_s", OPT_DOUBLE, F(retrain_min_interval_s), "60",
     0, 864000, 1, "never start retrains closer together than this"},
    {"retrain", "max_interval_s", OPT_DOUBLE, F(retrain_max_interval_s), "0",
     0, 8640000, 1, "retrain at least this often when anything is pending; 0: off"},
    {"retrain", "epochs", OPT_INT, F(retrain_epochs), "5", 1, 100000, 1,
     "epochs of a warm retrain; the best on the holdout is kept"},
    {"retrain", "warm_start", OPT_BOOL, F(retrain_warm_start), "true", 0, 1,
     1, "start from the current parameters"},
    {"retrain", "tolerance", OPT_DOUBLE, F(retrain_tolerance), "0.002", 0, 1,
     1, "publish unless the candidate's valid metric is lower by more"},
    {"retrain", "initial_epochs", OPT_INT, F(retrain_initial_epochs), "100", 1,
     100000, 1, "maximum epochs of a first or cold retrain (early stopping)"},
    {"retrain", "holdout_min", OPT_INT, F(retrain_holdout_min), "3", 0, 1000,
     1, "users with this many live interactions lose the latest to "
     "validation; 0: none"},
    {"retrain", "threads", OPT_INT, F(retrain_threads), "1", 0, 256, 1,
     "maths threads of a retrain (the compute pool); 0: all cores"},
    {"retrain", "nice", OPT_INT, F(retrain_nice), "10", 0, 19, 0,
     "niceness of the retrain threads: they get what serving leaves"},

    {"log", "level", OPT_STRING, F(log_level), "info", 0, 0, 1,
     "err, warning, notice, info or debug"},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const struct opt *find_opt(const char *section, const char *key)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].section, section) == 0 &&
            strcmp(options[i].key, key) == 0)
            return &options[i];
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"};
    static const char *no[] = {"false", "no", "off", "0"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0)
            return *out = 1, 0;
        if (strcmp(v, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* Validate and store one value; on failure fill why (size n). */
static int apply(struct sgbd_config *cfg, const struct opt *o,
                 const char *value, char *why, size_t n)
{
    char *field = (char *)cfg + o->offset;
    char *end;
    double d;

    switch (o->type) {
    case OPT_STRING:
        if (strlen(value) >= o->size)
            return snprintf(why, n, "longer than %zu bytes", o->size - 1), -1;
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case OPT_BOOL:
        if (parse_bool(value, (int *)field) != 0)
            return snprintf(why, n, "'%s' is not a boolean (true/false)",
                            value), -1;
        return 0;
    case OPT_INT:
    case OPT_INT64:
    case OPT_DOUBLE:
        break;
    }

    errno = 0;
    if (o->type == OPT_DOUBLE) {
        d = strtod(value, &end);
    } else {
        long long ll = strtoll(value, &end, 10);
        d = (double)ll;
        if (o->type == OPT_INT)
            *(int *)field = (int)ll;
        else
            *(int64_t *)field = ll;
    }
    if (end == value || *end != '\0' || errno == ERANGE || !isfinite(d))
        return snprintf(why, n, "'%s' is not a %s", value,
                        o->type == OPT_DOUBLE ? "number" : "whole number"),
               -1;
    if (d < o->min || d > o->max)
        return snprintf(why, n, "%s is outside [%g, %g]", value, o->min,
                        o->max), -1;
    if (o->type == OPT_DOUBLE)
        *(double *)field = d;
    return 0;
}

/* Cross-option checks that a table row cannot express. */
static int check_values(const struct sgbd_config *cfg, char *why, size_t n)
{
    static const char *optimizers[] = {"adam", "mg", "sam", "sgbd"};
    int ok = 0;

    for (int i = 0; i < 4; i++)
        ok |= strcmp(cfg->optimizer, optimizers[i]) == 0;
    if (!ok)
        return snprintf(why, n, "[optimizer] name: '%s' is not one of adam, "
                        "mg, sam, sgbd", cfg->optimizer), -1;
    if (strcmp(cfg->streams, "auto") != 0 &&
        strcmp(cfg->streams, "mmrec") != 0 && strcmp(cfg->streams, "sgbd") != 0)
        return snprintf(why, n, "[train] streams: '%s' is not one of auto, "
                        "mmrec, sgbd", cfg->streams), -1;
    if (sgbd_log_level_parse(cfg->log_level) < 0)
        return snprintf(why, n, "[log] level: '%s' is not one of err, "
                        "warning, notice, info, debug", cfg->log_level), -1;
    if (strchr(cfg->listen, ':') == NULL)
        return snprintf(why, n, "[server] listen: '%s' is not ADDR:PORT",
                        cfg->listen), -1;
    return 0;
}

void sgbd_config_defaults(struct sgbd_config *cfg)
{
    char why[128];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_OPTIONS; i++)
        apply(cfg, &options[i], options[i].defval, why, sizeof(why));
}

struct load_ctx {
    struct sgbd_config *cfg;
    const char *path;
    FILE *f;
    int line;   /* of the last line read: inih calls back after reading it */
    int rc;
};

/* Line reader for inih that counts lines, since Debian's inih is built
 * without line numbers in the callback. */
static char *read_line(char *buf, int size, void *stream)
{
    struct load_ctx *ctx = stream;
    char *s = fgets(buf, size, ctx->f);

    if (s)
        ctx->line++;
    return s;
}

/* inih callback: nonzero to go on, zero to stop at this line. */
static int on_value(void *user, const char *section, const char *key,
                    const char *value)
{
    struct load_ctx *ctx = user;
    const struct opt *o = find_opt(section, key);
    int line = ctx->line;
    char why[256];

    if (ctx->rc != 0)
        return 0; /* report the first problem only */
    if (!o) {
        ctx->rc = sgbd_errf(SGBD_E_CONFIG, "%s:%d: [%s] %s: unknown option",
                            ctx->path, line, section, key);
        return 0;
    }
    if (apply(ctx->cfg, o, value, why, sizeof(why)) != 0) {
        ctx->rc = sgbd_errf(SGBD_E_CONFIG, "%s:%d: [%s] %s: %s", ctx->path,
                            line, section, key, why);
        return 0;
    }
    return 1;
}

int sgbd_config_load(struct sgbd_config *cfg, const char *path)
{
    struct sgbd_config tmp = *cfg;
    struct load_ctx ctx = {&tmp, path, NULL, 0, 0};
    char why[256];
    FILE *f;
    int line;

    f = fopen(path, "r");
    if (!f) {
        int rc = -errno;
        return sgbd_errf(rc, "%s: %s", path, sgbd_strerror(rc));
    }
    ctx.f = f;
    line = ini_parse_stream(read_line, &ctx, on_value, &ctx);
    fclose(f);
    if (ctx.rc != 0)
        return ctx.rc;
    if (line != 0)
        return sgbd_errf(SGBD_E_CONFIG, "%s:%d: syntax error", path, line);
    if (check_values(&tmp, why, sizeof(why)) != 0)
        return sgbd_errf(SGBD_E_CONFIG, "%s: %s", path, why);
    *cfg = tmp; /* all or nothing */
    return 0;
}

int sgbd_config_set(struct sgbd_config *cfg, const char *name,
                    const char *value)
{
    struct sgbd_config tmp = *cfg;
    char section[64], why[256];
    const char *dot = strchr(name, '.');
    const struct opt *o;
    size_t len;

    if (!dot || (len = (size_t)(dot - name)) >= sizeof(section))
        return sgbd_errf(SGBD_E_CONFIG, "option '%s': expected section.key",
                         name);
    memcpy(section, name, len);
    section[len] = '\0';
    o = find_opt(section, dot + 1);
    if (!o)
        return sgbd_errf(SGBD_E_CONFIG, "option '%s': unknown option", name);
    if (apply(&tmp, o, value, why, sizeof(why)) != 0)
        return sgbd_errf(SGBD_E_CONFIG, "option '%s': %s", name, why);
    if (check_values(&tmp, why, sizeof(why)) != 0)
        return sgbd_errf(SGBD_E_CONFIG, "%s", why);
    *cfg = tmp;
    return 0;
}

int sgbd_config_fixed_differs(const struct sgbd_config *a,
                              const struct sgbd_config *b, const char **name)
{
    static char buf[96];

    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt *o = &options[i];
        if (o->reloadable)
            continue;
        if (memcmp((const char *)a + o->offset, (const char *)b + o->offset,
                   o->size) != 0) {
            snprintf(buf, sizeof(buf), "%s.%s", o->section, o->key);
            if (name)
                *name = buf;
            return 1;
        }
    }
    return 0;
}

/* "# text suffix" wrapped at word boundaries into lines of at most
 * COMMENT_WIDTH columns: people read the file, and inih refuses lines
 * longer than its buffer. */
#define COMMENT_WIDTH 78

static void write_comment(FILE *f, const char *text, const char *suffix)
{
    char buf[1024];
    size_t col = 0;

    snprintf(buf, sizeof(buf), "%s%s", text, suffix);
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
        size_t n = strlen(w);
        if (col > 0 && col + 1 + n > COMMENT_WIDTH) {
            fputc('\n', f);
            col = 0;
        }
        col += (size_t)fprintf(f, col ? " %s" : "# %s", w);
    }
    fputc('\n', f);
}

void sgbd_config_write_reference(FILE *f)
{
    const char *section = "";

    fprintf(f, "# sgbd.conf - configuration of the SGBD recommendation "
               "daemon.\n# Every option with its default value. Options "
               "marked (reload) change on\n# SIGHUP; the others need a "
               "restart.\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt *o = &options[i];
        if (strcmp(section, o->section) != 0) {
            section = o->section;
            fprintf(f, "\n[%s]\n", section);
        }
        write_comment(f, o->help, o->reloadable ? " (reload)" : "");
        fprintf(f, "%s =%s%s\n", o->key, o->defval[0] ? " " : "",
                o->defval);
    }
}
