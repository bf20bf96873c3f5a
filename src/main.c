/*
 * khost command line: run, check, --version, --help.
 */
#include "config.h"

#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "log.h"

static const char usage_text[] =
    "Usage: khost run -c FILE [--exit-at-end]\n"
    "       khost check -c FILE\n"
    "       khost --version | --help\n"
    "\n"
    "Commands:\n"
    "  run     consume with every pipeline of FILE until SIGINT/SIGTERM\n"
    "  check   validate FILE and load its plugins; consume nothing\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE  the libconfig file (see examples/khost.cfg)\n"
    "  -e, --exit-at-end  run: stop cleanly once every partition is consumed\n"
    "                     up to the end offset it had at start\n"
    "  -h, --help         this text\n"
    "  -V, --version      print versions and exit\n"
    "\n"
    "Exit status: 0 clean stop, 1 runtime failure, 2 usage, config or\n"
    "plugin error, 128+N when a second signal N forced the exit.\n";

typedef struct options {
  const char *command;
  const char *config;
  int exit_at_end;
} options_t;

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "khost: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'khost --help'.\n");
  return HOST_EXIT_CONFIG;
}

static void print_version(void) {
  printf("khost %s (plugin ABI %d.%d; librdkafka %s, SQLite %s)\n",
         PACKAGE_VERSION, KHOST_ABI_MAJOR, KHOST_ABI_MINOR,
         rd_kafka_version_str(), sqlite3_libversion());
}

/* Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv, options_t *o) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"exit-at-end", no_argument, NULL, 'e'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "c:ehV", longopts, NULL)) != -1) {
    switch (c) {
    case 'c':
      o->config = optarg;
      break;
    case 'e':
      o->exit_at_end = 1;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    case 'V':
      print_version();
      return 0;
    default:
      fprintf(stderr, "Try 'khost --help'.\n");
      return HOST_EXIT_CONFIG;
    }
  }
  if (optind >= argc)
    return usage_error("%s", "a command is required (run or check)");
  o->command = argv[optind++];
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (strcmp(o->command, "run") != 0 && strcmp(o->command, "check") != 0)
    return usage_error("unknown command '%s'", o->command);
  if (!o->config)
    return usage_error("%s", "-c FILE is required");
  if (o->exit_at_end && strcmp(o->command, "run") != 0)
    return usage_error("%s", "--exit-at-end goes with run");
  return -1;
}

static int cmd_check(const cfg_t *cfg) {
  char err[8192];
  if (host_check(cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return HOST_EXIT_CONFIG;
  }
  printf("%s: OK (%zu pipeline%s)\n", cfg->path, cfg->n_pipelines,
         cfg->n_pipelines == 1 ? "" : "s");
  return HOST_EXIT_OK;
}

/* Wait for the first SIGINT/SIGTERM or for the host to stop by itself. */
static void wait_for_stop(host_t *h, const sigset_t *sigs) {
  struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
  while (!host_done(h)) {
    int sig = sigtimedwait(sigs, NULL, &tick);
    if (sig > 0) {
      log_msg(KHOST_LOG_NOTICE, "khost",
              "%s: finishing the current batches, committing, leaving the "
              "group (a second signal exits at once)",
              strsignal(sig));
      host_request_stop(h);
      return;
    }
  }
}

/* Wait for the members to finish, within the shutdown deadline. A second
 * signal, or the deadline, ends the process at once: offsets only trail
 * durable outcomes, so nothing is lost. */
static int wait_for_members(host_t *h, const sigset_t *sigs, int64_t ms) {
  struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t deadline = now.tv_sec * 1000 + now.tv_nsec / 1000000 + ms;
  while (!host_done(h)) {
    int sig = sigtimedwait(sigs, NULL, &tick);
    if (sig > 0) {
      log_msg(KHOST_LOG_WARNING, "khost", "%s again: exiting now",
              strsignal(sig));
      _exit(128 + sig);
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec * 1000 + now.tv_nsec / 1000000 > deadline) {
      log_msg(KHOST_LOG_ERR, "khost",
              "shutdown did not finish within %" PRId64 " ms (Kafka "
              "unreachable?): exiting; uncommitted records will be "
              "delivered again",
              ms);
      _exit(HOST_EXIT_RUNTIME);
    }
  }
  return 0;
}

static int cmd_run(const cfg_t *cfg, const options_t *o) {
  char err[4096];
  host_t *h = NULL;
  host_opts_t hopts = {.exit_at_end = o->exit_at_end};
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  /* Every thread started from here on inherits the mask: signals are
   * taken by sigtimedwait() on this thread only. */
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  int rc = host_open(&h, cfg, &hopts, err, sizeof(err));
  if (rc == 0)
    rc = host_start(h, err, sizeof(err));
  if (rc != 0) {
    log_msg(KHOST_LOG_ERR, "khost", "%s", err);
    host_close(h);
    return rc;
  }
  wait_for_stop(h, &sigs);
  wait_for_members(h, &sigs, cfg->shutdown_timeout_ms);
  rc = host_finish(h);
  host_close(h);
  return rc;
}

int main(int argc, char **argv) {
  options_t o = {0};
  int rc = parse_args(argc, argv, &o);
  if (rc >= 0)
    return rc;
  cfg_t cfg;
  char err[8192];
  if (cfg_load(&cfg, o.config, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    cfg_free(&cfg);
    return HOST_EXIT_CONFIG;
  }
  log_set_level(cfg.log_level);
  rc = strcmp(o.command, "check") == 0 ? cmd_check(&cfg) : cmd_run(&cfg, &o);
  cfg_free(&cfg);
  return rc;
}
