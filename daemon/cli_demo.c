/*
 * cli_demo.c - `sgbd demo`: from nothing to a serving daemon in one
 * command, on a small synthetic catalogue generated on the spot.
 *
 * Phases: catalogue (sgbd synth) -> store (sgbd import) -> model (sgbd
 * train --db, VBPR: it has a feature path, so items PUT later are
 * recommendable at once) -> serve, after printing a few calls to try.
 * Everything lives under one folder (--dir, default ./sgbd-demo), and a
 * second run reuses what the first one made.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sgbd/checkpoint.h"
#include "sgbd/cli.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/serve.h"
#include "sgbd/store.h"
#include "sgbd/synth.h"
#include "sgbd/train_job.h"

struct demo {
    const char *dir;
    const char *listen;
    char data[SGBD_PATH_MAX];       /* DIR/catalogue */
    char db[SGBD_PATH_MAX];         /* DIR/db */
    int no_serve;                   /* prepare only (tests, make) */
};

static int path_join(char *out, size_t n, const char *dir, const char *name)
{
    int len = snprintf(out, n, "%s/%s", dir, name);

    if (len < 0 || (size_t)len >= n)
        return sgbd_errf(-ENAMETOOLONG, "%s/%s: path too long", dir, name);
    return 0;
}

static int exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

static int make_catalogue(struct demo *d)
{
    struct sgbd_synth_params p;
    char inter[SGBD_PATH_MAX];
    int rc = path_join(inter, sizeof(inter), d->data, "catalogue.inter");

    if (rc || exists(inter))
        return rc;
    sgbd_synth_defaults(&p);
    snprintf(p.name, sizeof(p.name), "catalogue");
    return sgbd_synth_write(d->data, &p);
}

static int make_store(struct demo *d)
{
    char *argv[] = {"import", "--data", d->data, "--db", d->db, NULL};

    return sgbd_cli_import(5, argv);
}

/* Train once; a store that already has a checkpoint keeps it. */
static int make_model(struct demo *d)
{
    struct sgbd_train_job job;
    struct sgbd_train_report rep;
    struct sgbd_store *s;
    struct sgbd_checkpoint_info info;
    int rc;

    rc = sgbd_store_open(&s, d->db, NULL);
    if (rc)
        return rc;
    rc = sgbd_checkpoint_verify(s, 0, &info);
    sgbd_store_close(s);
    if (rc == 0)
        return 0;

    sgbd_train_job_defaults(&job);
    job.db_path = d->db;
    job.quiet = 1;
    rc = sgbd_config_set(&job.cfg, "model.name", "vbpr");
    if (rc == 0)
        rc = sgbd_config_set(&job.cfg, "optimizer.name", "sgbd");
    if (rc == 0)
        rc = sgbd_config_set(&job.cfg, "train.epochs", "30");
    if (rc == 0)
        rc = sgbd_config_set(&job.cfg, "model.learning_rate", "0.01");
    if (rc)
        return rc;
    printf("training VBPR with SGBD on the sample catalogue ...\n");
    rc = sgbd_train_job_run(&job, &rep);
    if (rc == 0)
        printf("trained: %d epochs, best epoch %d\n", rep.result.epochs,
               rep.result.best_epoch);
    sgbd_train_report_free(&rep);
    return rc;
}

static void print_tour(const struct demo *d)
{
    const char *url = d->listen;

    printf("\nSGBD is serving the sample catalogue at http://%s\n"
           "Try, from another terminal:\n\n"
           "  curl -s http://%s/readyz\n"
           "  curl -s 'http://%s/v1/users/0/recommendations?k=5'\n"
           "  curl -s 'http://%s/v1/items/0/similar?k=5'\n"
           "  curl -s http://%s/v1/model\n"
           "  curl -s -X POST http://%s/v1/interactions "
           "-H 'Content-Type: application/json' -d "
           "'{\"interactions\": [{\"user_id\": \"0\", \"item_id\": \"1\", "
           "\"timestamp\": 1}]}'\n"
           "  curl -s http://%s/metrics | head\n\n"
           "Ctrl-C stops it; `sgbd demo` again restarts on the same data "
           "(%s).\n\n", url, url, url, url, url, url, url, d->dir);
    fflush(stdout);
}

static int parse(struct demo *d, int argc, char **argv, int *help)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'},
        {"no-serve", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(d, 0, sizeof(*d));
    d->dir = "sgbd-demo";
    d->listen = "127.0.0.1:8080";
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': d->dir = optarg; break;
        case 'l': d->listen = optarg; break;
        case 'n': d->no_serve = 1; break;
        case 'h': *help = 1; return 0;
        default:
            return sgbd_errf(SGBD_E_USAGE, "unknown or incomplete option "
                             "'%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return sgbd_errf(SGBD_E_USAGE, "unexpected argument '%s'",
                         argv[optind]);
    return 0;
}

int sgbd_cli_demo(int argc, char **argv)
{
    struct sgbd_serve_opts so;
    struct demo d;
    int help = 0, rc;

    rc = parse(&d, argc, argv, &help);
    if (rc)
        return rc;
    if (help) {
        printf("usage: sgbd demo [--dir DIR] [--listen ADDR:PORT] "
               "[--no-serve]\n\n"
               "Generate a sample catalogue, import it, train a model and "
               "serve it.\nDIR (default ./sgbd-demo) keeps the catalogue "
               "and the store.\n");
        return SGBD_CLI_HELP;
    }
    if (mkdir(d.dir, 0755) != 0 && errno != EEXIST)
        return sgbd_errf(-errno, "%s: %s", d.dir, strerror(errno));
    rc = path_join(d.data, sizeof(d.data), d.dir, "catalogue");
    if (rc == 0)
        rc = path_join(d.db, sizeof(d.db), d.dir, "db");
    if (rc == 0)
        rc = make_catalogue(&d);
    if (rc == 0)
        rc = make_store(&d);
    if (rc == 0)
        rc = make_model(&d);
    if (rc || d.no_serve)
        return rc;

    print_tour(&d);
    memset(&so, 0, sizeof(so));
    so.db_path = d.db;
    so.listen = d.listen;
    return sgbd_serve_run(&so);
}
