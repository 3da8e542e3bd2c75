/*
 * cli_store.c - the store subcommands: `sgbd import`, `sgbd backup`,
 * `sgbd check` and `sgbd checkpoints` (list, delete, prune, rollback).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sgbd/bulkio.h"
#include "sgbd/checkpoint.h"
#include "sgbd/cli.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/log.h"
#include "sgbd/progress.h"
#include "sgbd/store.h"

#define ID_SLOT 12                 /* "4294967295" and a NUL */
#define EVENT_BATCH 50000          /* events per transaction */
#define ITEM_BATCH_BYTES (64u << 20)

/* ---- Option parsing -------------------------------------------------- */

struct opt {
    const char *name;              /* "--db" */
    const char **value;            /* takes a value, or NULL */
    int *flag;                     /* set to 1, or NULL */
};

/* Options of opts[] anywhere; other words go to pos[] (max_pos). */
static int parse_opts(int argc, char **argv, const struct opt *opts,
                      const char **pos, int max_pos, int *n_pos)
{
    *n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const struct opt *o = opts;

        while (o->name && strcmp(o->name, argv[i]) != 0)
            o++;
        if (o->name && o->value) {
            if (i + 1 >= argc)
                return sgbd_errf(SGBD_E_USAGE, "%s needs a value", o->name);
            *o->value = argv[++i];
        } else if (o->name) {
            *o->flag = 1;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return sgbd_errf(SGBD_E_USAGE, "unknown option '%s'", argv[i]);
        } else if (*n_pos < max_pos) {
            pos[(*n_pos)++] = argv[i];
        } else {
            return sgbd_errf(SGBD_E_USAGE, "unexpected argument '%s'",
                             argv[i]);
        }
    }
    return 0;
}

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

static int parse_u64(const char *opt, const char *v, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end || errno == ERANGE || x < min ||
        x > max)
        return sgbd_errf(SGBD_E_USAGE, "%s: '%s' is not a whole number in "
                         "%llu..%llu", opt, v, (unsigned long long)min,
                         (unsigned long long)max);
    *out = x;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Open the store of --db with the map options (MiB strings, may be
 * NULL). */
static int open_store(struct sgbd_store **s, const char *db,
                      const char *map_mb, const char *max_mb, int read_only)
{
    struct sgbd_store_opts o;
    uint64_t mb = 0;
    int rc;

    if (!db)
        return sgbd_errf(SGBD_E_USAGE, "--db PATH is required");
    sgbd_store_opts_defaults(&o);
    o.read_only = read_only;
    if (map_mb) {
        if ((rc = parse_u64("--map-size-mb", map_mb, 1, 1u << 24, &mb)) < 0)
            return rc;
        o.map_size = (size_t)mb << 20;
    }
    if (max_mb) {
        if ((rc = parse_u64("--map-max-mb", max_mb, 1, 1u << 24, &mb)) < 0)
            return rc;
        o.map_max = (size_t)mb << 20;
    }
    return sgbd_store_open(s, db, &o);
}

/* ---- sgbd import ----------------------------------------------------- */

struct import {
    const char *dir, *db;
    struct sgbd_store *s;
    struct sgbd_bulkio_opts io;
    struct sgbd_bulkio_stats stats;
    struct sgbd_inter rows;
    struct sgbd_features feat;
    uint32_t n_users, n_items;
    char *ids;                     /* "0", "1", ...: ID_SLOT bytes each */
    struct sgbd_progress prog;
    size_t new_events;
    uint64_t read_bytes;           /* of the files read */
    double t_read, t_write;
    int json;
};

static const char *id_str(const struct import *im, uint32_t i)
{
    return im->ids + (size_t)i * ID_SLOT;
}

static void show(struct import *im, const char *phase, size_t done,
                 size_t total)
{
    char bar[33];
    int fill = total ? (int)(32 * done / total) : 32;

    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '-', (size_t)(32 - fill));
    bar[32] = '\0';
    sgbd_progress_update(&im->prog, "import [%s] %3d%% %s %zu/%zu", bar,
                         total ? (int)(100 * done / total) : 100, phase,
                         done, total);
}

static uint64_t file_bytes(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Bytes of the .inter file and of each channel's file. */
static void count_read(struct import *im, const char *inter)
{
    char path[4096];

    im->read_bytes = file_bytes(inter);
    for (int c = 0; c < im->feat.n; c++) {
        snprintf(path, sizeof(path), "%s/%s_feat.npy", im->dir,
                 im->feat.ch[c].name);
        im->read_bytes += file_bytes(path);
    }
}

/* MMRec: U and I are the largest ids + 1; ids as decimal strings. */
static int import_read(struct import *im)
{
    char path[4096];
    double t0 = now_s();
    uint32_t n = 0;
    int rc = sgbd_dataset_find_inter(im->dir, path, sizeof(path));

    if (rc == 0)
        rc = sgbd_inter_read(&im->rows, path, &im->io);
    if (rc < 0)
        return rc;
    for (size_t r = 0; r < im->rows.n; r++) {
        if (im->rows.users[r] >= im->n_users)
            im->n_users = im->rows.users[r] + 1;
        if (im->rows.items[r] >= im->n_items)
            im->n_items = im->rows.items[r] + 1;
    }
    rc = sgbd_features_load_dir(&im->feat, im->dir, im->n_items, &im->io);
    if (rc < 0)
        return rc;
    im->t_read = now_s() - t0;
    count_read(im, path);

    n = im->n_users > im->n_items ? im->n_users : im->n_items;
    im->ids = malloc((size_t)n * ID_SLOT + 1);
    if (!im->ids)
        return sgbd_errf(-ENOMEM, "import: out of memory");
    for (uint32_t i = 0; i < n; i++)
        snprintf(im->ids + (size_t)i * ID_SLOT, ID_SLOT, "%" PRIu32, i);
    return 0;
}

static int import_channels(struct import *im)
{
    int rc = 0;

    for (int c = 0; c < im->feat.n && rc == 0; c++)
        rc = sgbd_store_channel_define(im->s, im->feat.ch[c].name,
                                       (uint32_t)im->feat.ch[c].m.cols);
    return rc;
}

/* Items in batches of at most ITEM_BATCH_BYTES of features. */
static int import_items(struct import *im)
{
    size_t row_bytes = 4, batch, nf = (size_t)im->feat.n;
    struct sgbd_store_item *items;
    struct sgbd_store_feature *fs;
    int rc = 0;

    for (int c = 0; c < im->feat.n; c++)
        row_bytes += im->feat.ch[c].m.cols * sizeof(float);
    batch = ITEM_BATCH_BYTES / row_bytes;
    batch = batch < 1 ? 1 : batch > 4096 ? 4096 : batch;
    items = calloc(batch, sizeof(*items));
    fs = calloc(batch * (nf ? nf : 1), sizeof(*fs));
    if (!items || !fs)
        rc = sgbd_errf(-ENOMEM, "import: out of memory");
    for (uint32_t i0 = 0; i0 < im->n_items && rc == 0; i0 += batch) {
        size_t n = im->n_items - i0 < batch ? im->n_items - i0 : batch;

        for (size_t j = 0; j < n; j++) {
            for (size_t c = 0; c < nf; c++) {
                const struct sgbd_channel *ch = &im->feat.ch[c];

                fs[j * nf + c].channel = ch->name;
                fs[j * nf + c].v = sgbd_mat_row(ch->m, i0 + j);
                fs[j * nf + c].dim = (uint32_t)ch->m.cols;
            }
            items[j].id = id_str(im, i0 + (uint32_t)j);
            items[j].n_features = (int)nf;
            items[j].features = &fs[j * nf];
        }
        rc = sgbd_store_items_upsert(im->s, items, n, NULL);
        show(im, "items", i0 + n, im->n_items);
    }
    free(fs);
    free(items);
    return rc;
}

static int import_users(struct import *im)
{
    const char **ids = malloc(EVENT_BATCH * sizeof(*ids));
    int rc = ids ? 0 : sgbd_errf(-ENOMEM, "import: out of memory");

    for (uint32_t u0 = 0; u0 < im->n_users && rc == 0; u0 += EVENT_BATCH) {
        size_t n = im->n_users - u0 < EVENT_BATCH ? im->n_users - u0 :
                   EVENT_BATCH;

        for (size_t j = 0; j < n; j++)
            ids[j] = id_str(im, u0 + (uint32_t)j);
        rc = sgbd_store_users_ensure(im->s, ids, n, NULL);
        show(im, "users", u0 + n, im->n_users);
    }
    free(ids);
    return rc;
}

/* Each row becomes an event whose timestamp is its 0-based row in the
 * file: MMRec's own timestamps only order a user's rows, the row keeps
 * that order, and a re-import of the same file maps every row to the
 * event already logged (store.h dedup), so nothing is doubled. */
static int import_events(struct import *im)
{
    struct sgbd_store_event *ev = malloc(EVENT_BATCH * sizeof(*ev));
    size_t total = im->rows.n;
    int rc = ev ? 0 : sgbd_errf(-ENOMEM, "import: out of memory");

    for (size_t r0 = 0; r0 < total && rc == 0; r0 += EVENT_BATCH) {
        size_t n = total - r0 < EVENT_BATCH ? total - r0 : EVENT_BATCH;
        size_t fresh = 0;

        for (size_t j = 0; j < n; j++) {
            ev[j].user_id = id_str(im, im->rows.users[r0 + j]);
            ev[j].item_id = id_str(im, im->rows.items[r0 + j]);
            ev[j].timestamp = (int64_t)(r0 + j);
            ev[j].weight = 1.0f;
            ev[j].kind = 0;
            ev[j].label = im->rows.labels[r0 + j];
        }
        rc = sgbd_store_interactions_append(im->s, ev, n, NULL, &fresh);
        im->new_events += fresh;
        show(im, "interactions", r0 + n, total);
    }
    free(ev);
    return rc;
}

static void import_summary(struct import *im)
{
    struct sgbd_store_counts c = {0};
    char chans[256] = "";
    size_t off = 0;
    double mb = im->read_bytes / 1e6;
    const char *backend = sgbd_bulkio_backend_name(im->stats.backend);

    sgbd_store_counts(im->s, &c);
    for (int i = 0; i < im->feat.n && off < sizeof(chans); i++)
        off += (size_t)snprintf(chans + off, sizeof(chans) - off, "%s%s:%zu",
                                i ? "," : "", im->feat.ch[i].name,
                                im->feat.ch[i].m.cols);
    sgbd_progress_finish(&im->prog);
    sgbd_progress_line(&im->prog, "users=%" PRIu64 " items=%" PRIu64
                       " interactions=%" PRIu64 " new=%zu channels=%s "
                       "backend=%s read_mb=%.1f read_s=%.3f write_s=%.3f",
                       c.users, c.items, c.interactions, im->new_events,
                       chans[0] ? chans : "none", backend, mb, im->t_read,
                       im->t_write);
    if (im->json) {
        printf("{\"users\": %" PRIu64 ", \"items\": %" PRIu64 ", "
               "\"interactions\": %" PRIu64 ", \"new_interactions\": %zu, "
               "\"channels\": \"%s\", \"backend\": \"%s\", \"read_mb\": %.3f, "
               "\"read_s\": %.4f, \"write_s\": %.4f}\n", c.users, c.items,
               c.interactions, im->new_events, chans, backend, mb,
               im->t_read, im->t_write);
        return;
    }
    printf("imported %s: %" PRIu64 " users, %" PRIu64 " items, %" PRIu64
           " interactions (%zu new), channels %s; read %.1f MB via %s in "
           "%.2f s, wrote in %.2f s\n", im->dir, c.users, c.items,
           c.interactions, im->new_events, chans[0] ? chans : "none", mb,
           backend, im->t_read, im->t_write);
}

static int import_run(struct import *im)
{
    double t0;
    int rc = import_read(im);

    if (rc < 0)
        return rc;
    t0 = now_s();
    rc = import_channels(im);
    if (rc == 0)
        rc = import_items(im);
    if (rc == 0)
        rc = import_users(im);
    if (rc == 0)
        rc = import_events(im);
    im->t_write = now_s() - t0;
    if (rc == 0)
        import_summary(im);
    sgbd_progress_finish(&im->prog);
    return rc;
}

static const char import_usage[] =
    "usage: sgbd import --data DIR --db PATH [--map-size-mb N] "
    "[--map-max-mb N] [--force-pread] [--quiet] [--json]";

static void import_help(void)
{
    printf("%s\n\n"
           "Import an MMRec dataset folder (one *.inter file and any "
           "<name>_feat.npy)\ninto the store at PATH (created if missing). "
           "Users and items get the\nMMRec ids as external ids (\"0\", "
           "\"1\", ...), channels are named after\ntheir files "
           "(image_feat.npy -> image), interactions keep their split\n"
           "label. Importing the same folder again changes nothing.\n\n"
           "  --data DIR        the dataset folder\n"
           "  --db PATH         the store\n"
           "  --map-size-mb N   initial LMDB map size (1024)\n"
           "  --map-max-mb N    the map grows up to this (262144)\n"
           "  --force-pread     read files with pread instead of io_uring\n"
           "  --quiet           no progress\n"
           "  --json            print the summary as one JSON object\n",
           import_usage);
}

int sgbd_cli_import(int argc, char **argv)
{
    struct import im = {0};
    const char *map_mb = NULL, *max_mb = NULL, *pos[1];
    int force = 0, quiet = 0, npos, rc;
    const struct opt opts[] = {
        {"--data", &im.dir, NULL}, {"--db", &im.db, NULL},
        {"--map-size-mb", &map_mb, NULL}, {"--map-max-mb", &max_mb, NULL},
        {"--force-pread", NULL, &force}, {"--quiet", NULL, &quiet},
        {"--json", NULL, &im.json}, {NULL, NULL, NULL},
    };

    if (wants_help(argc, argv)) {
        import_help();
        return SGBD_CLI_HELP;
    }
    rc = parse_opts(argc, argv, opts, pos, 0, &npos);
    if (rc == 0 && !im.dir)
        rc = sgbd_errf(SGBD_E_USAGE, "--data DIR is required; %s",
                       import_usage);
    if (rc < 0)
        return rc;
    im.io.force_pread = force;
    im.io.stats = &im.stats;
    sgbd_progress_init(&im.prog, "import", quiet);
    rc = open_store(&im.s, im.db, map_mb, max_mb, 0);
    if (rc == 0)
        rc = import_run(&im);
    sgbd_store_close(im.s);
    sgbd_inter_free(&im.rows);
    sgbd_features_free(&im.feat);
    free(im.ids);
    return rc;
}

/* ---- sgbd backup ----------------------------------------------------- */

int sgbd_cli_backup(int argc, char **argv)
{
    const char *db = NULL, *out = NULL, *pos[1];
    struct sgbd_store *s = NULL;
    double t0 = now_s();
    int npos, rc;
    const struct opt opts[] = {
        {"--db", &db, NULL}, {"--out", &out, NULL}, {NULL, NULL, NULL},
    };

    if (wants_help(argc, argv)) {
        printf("usage: sgbd backup --db PATH --out FILE\n\n"
               "Write a compacted copy of the store to FILE (a single LMDB "
               "file; never\noverwritten). Safe while the daemon runs. "
               "Check it with\n'sgbd check --db FILE'; restore it as "
               "DIR/data.mdb.\n");
        return SGBD_CLI_HELP;
    }
    rc = parse_opts(argc, argv, opts, pos, 0, &npos);
    if (rc == 0 && !out)
        rc = sgbd_errf(SGBD_E_USAGE, "--out FILE is required");
    if (rc == 0)
        rc = open_store(&s, db, NULL, NULL, 1);
    if (rc == 0)
        rc = sgbd_store_backup(s, out);
    sgbd_store_close(s);
    if (rc == 0)
        printf("backup of %s written to %s in %.2f s\n", db, out,
               now_s() - t0);
    return rc;
}

/* ---- sgbd check ------------------------------------------------------ */

static void print_problem(void *ctx, const char *line)
{
    printf("damaged: %s\n", line);
}

int sgbd_cli_check(int argc, char **argv)
{
    const char *db = NULL, *pos[1];
    struct sgbd_store *s = NULL;
    struct sgbd_store_counts c = {0};
    size_t maps = 0, ckpts = 0;
    int npos, rc;
    const struct opt opts[] = {{"--db", &db, NULL}, {NULL, NULL, NULL}};

    if (wants_help(argc, argv)) {
        printf("usage: sgbd check --db PATH\n\n"
               "Verify the store without changing it: every checkpoint's "
               "checksums, the\nid maps (forward and reverse agree), feature "
               "widths and the interaction\nlog. Prints each problem; exits 1 "
               "when anything is damaged.\n");
        return SGBD_CLI_HELP;
    }
    rc = parse_opts(argc, argv, opts, pos, 0, &npos);
    if (rc == 0)
        rc = open_store(&s, db, NULL, NULL, 1);
    if (rc == 0)
        rc = sgbd_store_check(s, print_problem, NULL, &maps);
    if (rc == 0)
        rc = sgbd_checkpoint_check(s, print_problem, NULL, &ckpts);
    if (rc == 0)
        rc = sgbd_store_counts(s, &c);
    sgbd_store_close(s);
    if (rc < 0)
        return rc;
    if (maps + ckpts)
        return sgbd_errf(SGBD_E_CORRUPT, "%s: %zu problems (%zu in the "
                         "catalogue and log, %zu in checkpoints)", db,
                         maps + ckpts, maps, ckpts);
    printf("ok: %" PRIu64 " items, %" PRIu64 " users, %" PRIu64
           " interactions, %" PRIu64 " checkpoints verified\n", c.items,
           c.users, c.interactions, c.checkpoints);
    return 0;
}

/* ---- sgbd checkpoints ------------------------------------------------ */

static void print_metrics(const struct sgbd_checkpoint_info *in, int json)
{
    for (int m = 0; m < in->n_metrics; m++)
        printf(json ? "%s\"%s\": %.6g" : "%s%s=%.4f", m ? (json ? ", " : " ")
               : "", in->metrics[m].key, in->metrics[m].value);
}

static void list_text(const struct sgbd_checkpoint_entry *e, size_t n)
{
    printf("%-8s %-4s %-20s %-10s %-8s %-6s %-8s %-8s %-9s %s\n", "version",
           "ptr", "created", "model", "step", "epoch", "users", "items",
           "MB", "metrics");
    for (size_t i = 0; i < n; i++) {
        const struct sgbd_checkpoint_info *in = &e[i].info;
        time_t t = (time_t)(in->created_at_ms / 1000);
        char when[32] = "?";
        struct tm tm;

        if (gmtime_r(&t, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("%-8" PRIu64 " %-4s ", in->version, e[i].is_current ? "cur" :
               e[i].is_previous ? "prev" : "");
        if (!e[i].header_ok) {
            printf("(damaged header)\n");
            continue;
        }
        printf("%-20s %-10s %-8" PRIu64 " %-6u %-8u %-8u %-9.2f ", when,
               in->model, in->step, in->epoch, in->n_users, in->n_items,
               in->payload_bytes / 1e6);
        print_metrics(in, 0);
        printf("\n");
    }
}

static void list_json(const struct sgbd_checkpoint_entry *e, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        const struct sgbd_checkpoint_info *in = &e[i].info;

        printf("%s{\"version\": %" PRIu64 ", \"current\": %s, \"previous\": "
               "%s, \"header_ok\": %s", i ? ", " : "", in->version,
               e[i].is_current ? "true" : "false",
               e[i].is_previous ? "true" : "false",
               e[i].header_ok ? "true" : "false");
        if (e[i].header_ok) {
            printf(", \"model\": \"%s\", \"optimizer\": \"%s\", \"step\": %"
                   PRIu64 ", \"epoch\": %u, \"n_users\": %u, \"n_items\": %u, "
                   "\"bytes\": %" PRIu64 ", \"created_at_ms\": %" PRIu64
                   ", \"metrics\": {", in->model, in->optimizer, in->step,
                   in->epoch, in->n_users, in->n_items, in->payload_bytes,
                   in->created_at_ms);
            print_metrics(in, 1);
            printf("}");
        }
        printf("}");
    }
    printf("]\n");
}

static int ckpt_list(struct sgbd_store *s, int json)
{
    struct sgbd_checkpoint_entry *e;
    size_t n;
    int rc = sgbd_checkpoint_list(s, &e, &n);

    if (rc < 0)
        return rc;
    if (json)
        list_json(e, n);
    else
        list_text(e, n);
    free(e);
    return 0;
}

static const char ckpt_usage[] =
    "usage: sgbd checkpoints [list] --db PATH [--json]\n"
    "       sgbd checkpoints delete --db PATH (VERSION | --keep N)\n"
    "       sgbd checkpoints rollback --db PATH VERSION";

static int ckpt_action(struct sgbd_store *s, const char *verb,
                       const char *arg, const char *keep)
{
    uint64_t v = 0;
    size_t n = 0;
    int rc = 0;

    if (strcmp(verb, "delete") == 0 && keep) {
        rc = parse_u64("--keep", keep, 1, 1000000, &v);
        if (rc == 0)
            rc = sgbd_checkpoint_prune(s, (int)v, &n);
        if (rc == 0)
            printf("deleted %zu checkpoints\n", n);
        return rc;
    }
    if (!arg)
        return sgbd_errf(SGBD_E_USAGE, "%s needs a VERSION (see --help)",
                         verb);
    rc = parse_u64("VERSION", arg, 1, UINT64_MAX, &v);
    if (rc == 0 && strcmp(verb, "delete") == 0)
        rc = sgbd_checkpoint_delete(s, v);
    else if (rc == 0)
        rc = sgbd_checkpoint_rollback(s, v);
    if (rc == 0)
        printf("%s checkpoint %" PRIu64 "\n", strcmp(verb, "delete") == 0 ?
               "deleted" : "current is now", v);
    return rc;
}

int sgbd_cli_checkpoints(int argc, char **argv)
{
    const char *db = NULL, *keep = NULL, *pos[2], *verb = "list";
    struct sgbd_store *s = NULL;
    int json = 0, npos, rc;
    const struct opt opts[] = {
        {"--db", &db, NULL}, {"--keep", &keep, NULL},
        {"--json", NULL, &json}, {NULL, NULL, NULL},
    };

    if (wants_help(argc, argv)) {
        printf("%s\n\nList the checkpoints of the store; delete one, or all "
               "but the N newest\n(never the current or previous one); make "
               "a verified one current.\n", ckpt_usage);
        return SGBD_CLI_HELP;
    }
    rc = parse_opts(argc, argv, opts, pos, 2, &npos);
    if (rc < 0)
        return rc;
    if (npos > 0)
        verb = pos[0];
    if (strcmp(verb, "list") && strcmp(verb, "delete") &&
        strcmp(verb, "rollback"))
        return sgbd_errf(SGBD_E_USAGE, "unknown action '%s' (list, delete, "
                         "rollback)", verb);
    rc = open_store(&s, db, NULL, NULL, strcmp(verb, "list") == 0);
    if (rc == 0 && strcmp(verb, "list") == 0)
        rc = ckpt_list(s, json);
    else if (rc == 0)
        rc = ckpt_action(s, verb, npos > 1 ? pos[1] : NULL, keep);
    sgbd_store_close(s);
    return rc;
}
