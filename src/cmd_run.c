/*
 * khost run and khost check.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "commands.h"
#include "host.h"
#include "log.h"
#include "preflight.h"
#include "store_pg.h"

typedef struct run_opts {
  const char *config;
  int exit_at_end;
  int from_beginning;
} run_opts_t;

/* Options of run and check; check refuses what only run takes. Returns -1
 * to go on, or an exit status. */
static int parse(int argc, char **argv, int is_run, run_opts_t *o) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"exit-at-end", no_argument, NULL, 'e'},
      {"from-beginning", no_argument, NULL, 'b'},
      {NULL, 0, NULL, 0}};
  int c;
  optind = 1;
  opterr = 0; /* our own messages, naming the command */
  while ((c = getopt_long(argc, argv, "+:c:eb", longopts, NULL)) != -1) {
    switch (c) {
    case 'c':
      o->config = optarg;
      break;
    case 'e':
      if (!is_run)
        return cli_usage_error("--exit-at-end goes with run");
      o->exit_at_end = 1;
      break;
    case 'b':
      if (!is_run)
        return cli_usage_error("--from-beginning goes with run");
      o->from_beginning = 1;
      break;
    case ':':
      return cli_usage_error("%s: %s needs a value", argv[0], argv[optind - 1]);
    default:
      return cli_usage_error("%s: unknown option '%s'", argv[0],
                             argv[optind - 1]);
    }
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument '%s'", argv[optind]);
  if (!o->config)
    return cli_usage_error("-c FILE is required");
  return -1;
}

int cmd_check(int argc, char **argv) {
  run_opts_t o = {0};
  char err[8192];
  cfg_t cfg;
  int rc = parse(argc, argv, 0, &o);
  if (rc >= 0)
    return rc;
  rc = cli_load_config(&cfg, o.config);
  if (rc == 0) {
    /* Plugins first, then the machine: every problem in one report. */
    int bad = host_check(&cfg, err, sizeof(err)) != 0;
    bad |= preflight_check(&cfg, PREFLIGHT_RESOLVE | PREFLIGHT_DEDUP, err,
                           sizeof(err)) > 0;
    if (bad) {
      fprintf(stderr, "%s\n", err);
      rc = HOST_EXIT_CONFIG;
    }
  }
  if (rc == 0)
    printf("%s: OK (%zu pipeline%s)\n", cfg.path, cfg.n_pipelines,
           cfg.n_pipelines == 1 ? "" : "s");
  if (rc == 0 && cfg.store_backend == CFG_STORE_POSTGRESQL) {
    char *shown = store_pg_display(cfg.store_conninfo);
    printf("postgresql store (%s): reachable, schema version %d\n", shown,
           STORE_PG_SCHEMA);
    g_free(shown);
  }
  cfg_free(&cfg);
  return rc;
}

static int64_t mono_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* SIGHUP while running reloads the config (host_reload()); while
 * stopping it is said and ignored (by default it would end the process
 * at once, without the last commit). Returns 1 for a SIGHUP. */
static int hangup(host_t *h, const char *path, int sig) {
  if (sig != SIGHUP)
    return 0;
  if (!path)
    log_msg(KHOST_LOG_NOTICE, "khost",
            "SIGHUP ignored: khost is stopping (a second SIGINT/SIGTERM "
            "exits at once)");
  else
    host_reload(h, path);
  return 1;
}

/* Wait for the first SIGINT/SIGTERM or for the host to start stopping by
 * itself (--exit-at-end, a failure): the shutdown deadline applies from
 * then on either way. */
static void wait_for_stop(host_t *h, const char *path, const sigset_t *sigs) {
  struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
  while (!host_stopping(h)) {
    int sig = sigtimedwait(sigs, NULL, &tick);
    if (sig > 0 && !hangup(h, path, sig)) {
      log_msg(KHOST_LOG_NOTICE, "khost",
              "%s: finishing the current batches, committing, leaving the "
              "group (a second signal exits at once)",
              strsignal(sig));
      host_request_stop(h);
      return;
    }
  }
}

/* The shutdown deadline passed: say what held it up and end the process.
 * A plugin call that never returns keeps its member from finishing, and
 * only the record it is stuck on tells the user where to look; otherwise
 * it is most likely Kafka (the last commit, leaving the group). */
static void exit_at_deadline(host_t *h, int64_t ms) {
  char busy[2048];
  if (host_describe_busy(h, busy, sizeof(busy)) > 0)
    log_msg(KHOST_LOG_ERR, "khost",
            "shutdown did not finish within %" PRId64
            " ms: a plugin call has not returned: %s; exiting; uncommitted "
            "records will be delivered again",
            ms, busy);
  else
    log_msg(KHOST_LOG_ERR, "khost",
            "shutdown did not finish within %" PRId64
            " ms (Kafka unreachable?): exiting; uncommitted records will "
            "be delivered again",
            ms);
  _exit(HOST_EXIT_RUNTIME);
}

/* Wait for the members to finish, within the shutdown deadline. A second
 * signal, or the deadline, ends the process at once: offsets only trail
 * durable outcomes, so nothing is lost. */
static void wait_for_members(host_t *h, const sigset_t *sigs, int64_t ms) {
  struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
  int64_t deadline = mono_ms() + ms;
  while (!host_done(h)) {
    int sig = sigtimedwait(sigs, NULL, &tick);
    if (sig > 0 && !hangup(h, NULL, sig)) {
      log_msg(KHOST_LOG_WARNING, "khost", "%s again: exiting now",
              strsignal(sig));
      _exit(128 + sig);
    }
    if (mono_ms() > deadline)
      exit_at_deadline(h, ms);
  }
}

static int run_host(const cfg_t *cfg, const run_opts_t *o) {
  char err[4096];
  host_t *h = NULL;
  host_opts_t hopts = {.exit_at_end = o->exit_at_end,
                       .from_beginning = o->from_beginning};
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
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
  wait_for_stop(h, cfg->path, &sigs);
  /* The config in force: a reload may have changed it. */
  wait_for_members(h, &sigs, host_config(h)->shutdown_timeout_ms);
  rc = host_finish(h);
  if (host_report(h, stdout) > 0) {
    log_msg(KHOST_LOG_ERR, "khost",
            "the records handled and skipped do not add up to those produced "
            "(see the summary)");
    if (rc == HOST_EXIT_OK)
      rc = HOST_EXIT_RUNTIME;
  }
  host_close(h);
  return rc;
}

int cmd_run(int argc, char **argv) {
  run_opts_t o = {0};
  char err[4096] = "";
  cfg_t cfg;
  int rc = parse(argc, argv, 1, &o);
  if (rc >= 0)
    return rc;
  rc = cli_load_config(&cfg, o.config);
  /* A malformed host:port would be read by librdkafka as another port. */
  if (rc == 0 && preflight_check(&cfg, PREFLIGHT_SYNTAX, err, sizeof(err))) {
    fprintf(stderr, "%s\n", err);
    rc = HOST_EXIT_CONFIG;
  }
  if (rc == 0)
    rc = run_host(&cfg, &o);
  cfg_free(&cfg);
  return rc;
}
