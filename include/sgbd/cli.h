/*
 * cli.h - the subcommands of the sgbd binary.
 *
 * Each takes (argc, argv) with argv[0] the subcommand name, and returns 0,
 * SGBD_CLI_HELP after printing --help, or an error code whose detail
 * (err.h) main prints as the one line on stderr. SGBD_E_USAGE exits 2.
 * They live in the library (daemon/cli_*.c) so tests can call them.
 */
#ifndef SGBD_CLI_H
#define SGBD_CLI_H

#define SGBD_CLI_HELP 1

int sgbd_cli_demo(int argc, char **argv);
int sgbd_cli_train(int argc, char **argv);
int sgbd_cli_eval(int argc, char **argv);
int sgbd_cli_landscape(int argc, char **argv);
int sgbd_cli_config(int argc, char **argv);
int sgbd_cli_synth(int argc, char **argv);
int sgbd_cli_import(int argc, char **argv);
int sgbd_cli_backup(int argc, char **argv);
int sgbd_cli_check(int argc, char **argv);
int sgbd_cli_checkpoints(int argc, char **argv);
int sgbd_cli_serve(int argc, char **argv);

#endif
