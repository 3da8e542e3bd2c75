/*
 * main.c - the sgbd command line: parse, call, report. Only main exits.
 */
#include <stdio.h>
#include <string.h>

#include "sgbd/cli.h"
#include "sgbd/err.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"demo", sgbd_cli_demo, "serve a sample catalogue in one command"},
    {"train", sgbd_cli_train, "train a model on a dataset"},
    {"eval", sgbd_cli_eval, "evaluate a saved model"},
    {"landscape", sgbd_cli_landscape, "plot the loss around saved models"},
    {"config", sgbd_cli_config, "print the reference configuration"},
    {"synth", sgbd_cli_synth, "write a synthetic multimodal catalogue"},
    {"import", sgbd_cli_import, "import an MMRec dataset into the store"},
    {"backup", sgbd_cli_backup, "write a compacted copy of the store"},
    {"check", sgbd_cli_check, "verify checkpoints and id maps"},
    {"checkpoints", sgbd_cli_checkpoints, "list, delete, roll back"},
    {"serve", sgbd_cli_serve, "run the recommendation daemon"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: sgbd COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'sgbd COMMAND --help' describes each command.\n");
}

int main(int argc, char **argv)
{
    int rc;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("sgbd %s\n", SGBD_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        sgbd_err_clear();
        rc = commands[i].run(argc - 1, argv + 1);
        if (rc == SGBD_CLI_HELP)
            return 0;
        if (rc != 0) {
            fprintf(stderr, "sgbd %s: %s\n", commands[i].name,
                    sgbd_err_detail(rc));
            return rc == SGBD_E_USAGE ? 2 : 1;
        }
        return 0;
    }
    fprintf(stderr, "sgbd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
