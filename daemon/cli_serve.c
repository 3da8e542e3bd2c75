/* cli_serve.c - `sgbd serve`: parse the command line, run the daemon. */
#include <stdio.h>
#include <string.h>

#include "sgbd/cli.h"
#include "sgbd/err.h"
#include "sgbd/serve.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sgbd serve [-c FILE] [--db PATH] [--listen ADDR:PORT]\n"
            "                  [--set SECTION.KEY=VALUE]... [--synthetic "
            "U,I,D[,SEED]]\n"
            "                  [--no-store]\n\n"
            "Run the recommendation daemon: HTTP/JSON top-k serving from the\n"
            "store's latest valid checkpoint (see proto/openapi.yaml).\n\n"
            "  -c FILE            configuration file (sgbd config prints the "
            "reference)\n"
            "  --db PATH          the LMDB store, overriding [store] path\n"
            "  --listen ADDR:PORT overriding [server] listen (port 0: any "
            "free port)\n"
            "  --set S.K=V        override one option (repeatable)\n"
            "  --synthetic U,I,D[,SEED]\n"
            "                     serve random embeddings of U users, I "
            "items, width D\n"
            "                     (benchmarks and tests; their item ids are "
            "added to\n"
            "                     the store so that writes can name them)\n"
            "  --no-store         run without a store: writes answer 503\n\n"
            "Signals: SIGHUP reloads the options marked (reload); SIGTERM "
            "drains\nrequests in flight and exits 0.\n");
}

static int takes_value(const char *a)
{
    static const char *const opts[] = {"-c", "--config", "--db", "--listen",
                                       "--synthetic", "--set", NULL};

    for (const char *const *o = opts; *o; o++)
        if (strcmp(a, *o) == 0)
            return 1;
    return 0;
}

int sgbd_cli_serve(int argc, char **argv)
{
    struct sgbd_serve_opts o = {0};

    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        const char *v = k + 1 < argc ? argv[k + 1] : NULL;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return SGBD_CLI_HELP;
        }
        if (strcmp(a, "--no-store") == 0) {
            o.no_store = 1;
            continue;
        }
        if (!takes_value(a))
            return sgbd_errf(SGBD_E_USAGE, "unknown option '%s' (see sgbd "
                             "serve --help)", a);
        if (!v)
            return sgbd_errf(SGBD_E_USAGE, "%s needs a value (see sgbd serve "
                             "--help)", a);
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
            o.config_path = v;
        else if (strcmp(a, "--db") == 0)
            o.db_path = v;
        else if (strcmp(a, "--listen") == 0)
            o.listen = v;
        else if (strcmp(a, "--synthetic") == 0)
            o.synthetic = v;
        else if (o.n_sets < SGBD_SERVE_MAX_SETS)
            o.sets[o.n_sets++] = v;
        else
            return sgbd_errf(SGBD_E_USAGE, "more than %d --set options",
                             SGBD_SERVE_MAX_SETS);
        k++;
    }
    return sgbd_serve_run(&o);
}
