/*
 * khost command line: dispatch to the subcommands of commands.h.
 */
#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "host.h"
#include "log.h"

static const char usage_text[] =
    "Usage: khost COMMAND [OPTIONS]\n"
    "       khost --version | --help\n"
    "\n"
    "Commands:\n"
    "  run -c FILE [--exit-at-end] [--from-beginning]\n"
    "          consume with every pipeline of FILE until SIGINT/SIGTERM;\n"
    "          --exit-at-end: stop cleanly once every partition is consumed\n"
    "          up to the end offset it had at start;\n"
    "          --from-beginning: start every partition at its earliest\n"
    "          offset, whatever the group committed (dedup still skips\n"
    "          events already handled)\n"
    "  check -c FILE\n"
    "          validate FILE and load its plugins; consume nothing\n"
    "  plugin-info NAME|PATH [-c FILE] [--json]\n"
    "          a plugin's name, version, ABI version and declared settings\n"
    "          (NAME is looked up in FILE's plugin_dir, else the default)\n"
    "  replay -c FILE -p PIPELINE --from earliest|latest|TIME|-1h|OFFSET\n"
    "         (or --shift-by N) [--topic T [--partition N]] [--group NEW]\n"
    "         [--dedup skip|reprocess] [--execute] [--json]\n"
    "          move the pipeline's committed offsets so that the next run\n"
    "          processes from there (TIME: ISO-8601 with a timezone; -1h,\n"
    "          -30m, -2d: that long ago; --shift-by -100: 100 records back);\n"
    "          prints the plan, changes nothing without --execute;\n"
    "          refused while the group has active members\n"
    "  offsets -c FILE [-p PIPELINE] [--json]\n"
    "          committed, log start and end offsets, lag and member of\n"
    "          every partition of the pipelines' groups\n"
    "  dedup stats  -c FILE [-p PIPELINE] [--json]\n"
    "  dedup lookup -c FILE -p PIPELINE --event-id ID [--json]\n"
    "  dedup forget -c FILE -p PIPELINE (--event-id ID | --all) [--execute]\n"
    "  dedup prune  -c FILE [--older-than DURATION]\n"
    "          inspect and edit the dedup database (also while khost runs)\n"
    "  store init|migrate -c FILE\n"
    "          create or upgrade the shared PostgreSQL store's schema\n"
    "  state get   -c FILE -p PIPELINE --key KEY\n"
    "  state scan  -c FILE -p PIPELINE [--prefix KEY]\n"
    "  state stats -c FILE -p PIPELINE\n"
    "  state reset -c FILE -p PIPELINE [--execute]\n"
    "          the plugin state a pipeline keeps (reset: pipeline stopped)\n"
    "  parked list   -c FILE -p PIPELINE [--topic T [--partition N]] [--json]\n"
    "  parked show   -c FILE -p PIPELINE --topic T --partition N --offset O\n"
    "  parked replay -c FILE -p PIPELINE [--topic T ...] [--execute]\n"
    "  parked skip   -c FILE -p PIPELINE (--topic T ... --offset O | --all)\n"
    "                [--execute]\n"
    "          records that failed without a dead-letter topic: inspect,\n"
    "          send through the plugin again (khost stopped), drop\n"
    "  test-plugin PLUGIN --records FILE.jsonl [--config KEY=VALUE ...]\n"
    "              [-c FILE -p PIPELINE] [--retries N]\n"
    "          run a plugin over records written as JSON lines, without\n"
    "          Kafka, and print each result (exit 1 on KHOST_FATAL)\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE  the libconfig file (see examples/khost.cfg)\n"
    "  -h, --help         this text (khost COMMAND --help: that command)\n"
    "  -V, --version      print versions and exit\n"
    "\n"
    "Exit status: 0 clean stop, 1 runtime failure, 2 usage, config or\n"
    "plugin error, 128+N when a second signal N forced the exit.\n";

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
} commands[] = {
    {"run", cmd_run},
    {"check", cmd_check},
    {"replay", cmd_replay},
    {"offsets", cmd_offsets},
    {"dedup", cmd_dedup},
    {"store", cmd_store},
    {"state", cmd_state},
    {"parked", cmd_parked},
    {"plugin-info", cmd_plugin_info},
    {"test-plugin", cmd_test_plugin},
};

int cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("khost: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\nTry 'khost --help'.\n", stderr);
  va_end(ap);
  return HOST_EXIT_CONFIG;
}

int cli_load_config(cfg_t *cfg, const char *path) {
  char err[8192];
  if (cfg_load(cfg, path, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return HOST_EXIT_CONFIG;
  }
  log_set_level(cfg->log_level);
  log_set_json(cfg->log_json);
  return 0;
}

int cli_option_error(const char *command, const char *action, int opt,
                     const char *arg) {
  if (opt == ':')
    return cli_usage_error("%s %s: %s needs a value", command, action, arg);
  return cli_usage_error("%s %s: unknown option '%s'", command, action, arg);
}

const cfg_pipeline_t *cli_find_pipeline(const cfg_t *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    if (strcmp(cfg->pipelines[i].name, name) == 0)
      return &cfg->pipelines[i];
  return NULL;
}

/* Printable UTF-8 (tabs and newlines allowed) shows as text. */
static int printable(const void *data, size_t len) {
  const unsigned char *s = data;
  if (!g_utf8_validate(data, (gssize)len, NULL))
    return 0;
  for (size_t i = 0; i < len; i++)
    if ((s[i] < 0x20 && s[i] != '\t' && s[i] != '\n') || s[i] == 0x7f)
      return 0;
  return 1;
}

char *cli_shown(const void *data, size_t len, int *is_text) {
  *is_text = 1;
  if (!data)
    return NULL;
  if (printable(data, len))
    return g_strndup(data, len);
  *is_text = 0;
  return g_base64_encode(data, len);
}

static void print_version(void) {
  printf("khost %s (plugin ABI %d.%d; librdkafka %s, SQLite %s)\n",
         PACKAGE_VERSION, KHOST_ABI_MAJOR, KHOST_ABI_MINOR,
         rd_kafka_version_str(), sqlite3_libversion());
}

int main(int argc, char **argv) {
  /* A write past RLIMIT_FSIZE would kill the host with SIGXFSZ, in the
   * middle of a batch; ignored, it fails with EFBIG and SQLite reports an
   * I/O error that khost handles like any other (nothing is committed past
   * it). */
  signal(SIGXFSZ, SIG_IGN);
  /* Likewise a write to a pipe whose reader went away (stderr piped into a
   * logger that died): EPIPE, a lost log line, and the host goes on. */
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2)
    return cli_usage_error(
        "a command is required (run, check, plugin-info, replay, offsets, "
        "dedup, store, state, parked or test-plugin)");
  const char *first = argv[1];
  /* `khost --help`: every command; `khost COMMAND --help`: that one. */
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      if (first[0] == '-' || cli_help(first) != 0)
        fputs(usage_text, stdout);
      return HOST_EXIT_OK;
    }
  if (strcmp(first, "-V") == 0 || strcmp(first, "--version") == 0) {
    print_version();
    return HOST_EXIT_OK;
  }
  if (first[0] == '-')
    return cli_usage_error("unknown option '%s' (a command comes first)",
                           first);
  for (size_t i = 0; i < sizeof(commands) / sizeof(*commands); i++)
    if (strcmp(first, commands[i].name) == 0) {
      int rc = commands[i].run(argc - 1, argv + 1);
      log_repeats_flush(); /* counts of warnings held back, not yet said */
      return rc;
    }
  return cli_usage_error("unknown command '%s'", first);
}
