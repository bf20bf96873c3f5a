/*
 * khost store init|migrate -c FILE: create or upgrade the schema of the
 * shared PostgreSQL store the config names. `run` never does: a host
 * pointed at the wrong database must not create tables there. For the
 * SQLite file, which `run` creates and upgrades itself, the same done
 * ahead of a run: init creates it, migrate upgrades an existing one
 * (and folds its log of state writes).
 */
#include <getopt.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "dedup.h"
#include "dedup_admin.h"
#include "host.h"
#include "store_pg.h"
#include "store_state.h"

/* -c FILE, or a usage error (returned as >= 0). */
static int parse(int argc, char **argv, const char *action,
                 const char **config) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'}, {NULL, 0, NULL, 0}};
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "+:c:", longopts, NULL)) != -1) {
    if (opt == 'c')
      *config = optarg;
    else
      return cli_option_error("store", action, opt, argv[optind - 1]);
  }
  if (optind < argc)
    return cli_usage_error("store %s: unexpected argument '%s'", action,
                           argv[optind]);
  if (!*config)
    return cli_usage_error("store %s: -c FILE is required", action);
  return -1;
}

/* Both actions open the store with create set: the schema is created
 * when there is none and an older version is upgraded to this khost's
 * step by step (store_pg_schema.c), so init and migrate do the same and
 * each accepts a current schema as it is. */
static int init_schema(const cfg_t *cfg) {
  char err[1024];
  store_t *s = NULL;
  store_pg_opts_t o = {.conninfo = cfg->store_conninfo,
                       .lease_ms = cfg->store_lease_ms,
                       .create = 1};
  char *shown = store_pg_display(cfg->store_conninfo);
  int rc = HOST_EXIT_RUNTIME;
  if (store_pg_open(&s, &o, err, sizeof(err)) != 0) {
    fprintf(stderr, "khost: %s\n", err);
    goto out;
  }
  printf("postgresql store (%s): schema version %d\n", shown, STORE_PG_SCHEMA);
  rc = HOST_EXIT_OK;
out:
  store_close(s);
  g_free(shown);
  return rc;
}

/* The schema brought up to date (dadm_open()), the log of state writes
 * folded into the state table (sstate_open()). */
static int sqlite_schema(const cfg_t *cfg, int create) {
  char err[1024];
  dadm_t *a = NULL;
  sstate_t *st = NULL;
  if (dadm_open(&a, cfg->dedup_path, create, err, sizeof(err)) != 0 ||
      sstate_open(&st, cfg->dedup_path, 0, err, sizeof(err)) != 0) {
    fprintf(stderr, "khost: %s\n", err);
    dadm_close(a);
    return HOST_EXIT_RUNTIME;
  }
  sstate_close(st);
  dadm_close(a);
  printf("sqlite store (%s): schema version %d\n", cfg->dedup_path,
         DEDUP_SCHEMA_VERSION);
  return HOST_EXIT_OK;
}

int cmd_store(int argc, char **argv) {
  const char *action = argc > 1 ? argv[1] : NULL, *config = NULL;
  cfg_t cfg = {0};
  int rc;
  if (!action || (strcmp(action, "init") != 0 && strcmp(action, "migrate")))
    return cli_usage_error("store: init or migrate expected");
  rc = parse(argc - 1, argv + 1, action, &config);
  if (rc >= 0)
    return rc;
  rc = cli_load_config(&cfg, config);
  if (rc != 0)
    goto out;
  if (cfg.store_backend != CFG_STORE_POSTGRESQL)
    rc = sqlite_schema(&cfg, strcmp(action, "init") == 0);
  else
    rc = init_schema(&cfg);
out:
  cfg_free(&cfg);
  return rc;
}
