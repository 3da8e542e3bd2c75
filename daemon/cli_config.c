/* cli_config.c - `sgbd config`: print or check a configuration. */
#include <stdio.h>
#include <string.h>

#include "sgbd/cli.h"
#include "sgbd/config.h"
#include "sgbd/err.h"

int sgbd_cli_config(int argc, char **argv)
{
    struct sgbd_config cfg;

    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("usage: sgbd config [--check FILE]\n\n"
               "Print the reference configuration with every default, or "
               "check FILE\nand report the first problem.\n");
        return SGBD_CLI_HELP;
    }
    sgbd_config_defaults(&cfg);
    if (argc == 3 && strcmp(argv[1], "--check") == 0)
        return sgbd_config_load(&cfg, argv[2]);
    if (argc != 1)
        return sgbd_errf(SGBD_E_USAGE, "usage: sgbd config [--check FILE]");
    sgbd_config_write_reference(stdout);
    return 0;
}
