/*
 * khost subcommands. Each takes argv as the command sees it (argv[0] is
 * the command name), parses its own options and returns the process exit
 * status (HOST_EXIT_* in host.h).
 */
#ifndef KHOST_COMMANDS_H
#define KHOST_COMMANDS_H

#include "config.h"

int cmd_run(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_replay(int argc, char **argv);      /* cmd_replay.c */
int cmd_offsets(int argc, char **argv);     /* cmd_offsets.c */
int cmd_dedup(int argc, char **argv);       /* cmd_dedup.c */
int cmd_store(int argc, char **argv);       /* cmd_store.c */
int cmd_state(int argc, char **argv);       /* cmd_state.c */
int cmd_parked(int argc, char **argv);      /* cmd_parked.c */
int cmd_plugin_info(int argc, char **argv); /* cmd_plugin_info.c */
int cmd_test_plugin(int argc, char **argv); /* cmd_test_plugin.c */

/* Print the help of command on stdout (cli_help.c); -1 when it has none. */
int cli_help(const char *command);

/* Print "khost: <message>" and the --help hint on stderr; returns the usage
 * exit status (2). */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Load and validate the config at path, printing every problem on stderr.
 * Returns 0, or the config exit status (2). cfg must be cfg_free()d. */
int cli_load_config(cfg_t *cfg, const char *path);
/* getopt's opt for the option arg of "<command> <action>": a missing
 * value (':') or else an unknown option, as cli_usage_error() says it. */
int cli_option_error(const char *command, const char *action, int opt,
                     const char *arg);
/* Bytes for a person or a JSON document: as text when they are printable
 * UTF-8 (tabs and newlines allowed; *is_text = 1), else base64 (*is_text =
 * 0). g_free() it; NULL for data NULL. */
char *cli_shown(const void *data, size_t len, int *is_text);
/* The pipeline of cfg named name, or NULL. */
const cfg_pipeline_t *cli_find_pipeline(const cfg_t *cfg, const char *name);

#endif
