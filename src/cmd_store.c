/*
 * khost store init|migrate -c FILE: create or upgrade the schema of the
 * shared PostgreSQL store the config names. `run` never does: a host
 * pointed at the wrong database must not create tables there.
 */
#include <getopt.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "host.h"
#include "store_pg.h"

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
    printf("%s: the SQLite store needs no init: khost run creates %s\n", config,
           cfg.dedup_path);
  else
    rc = init_schema(&cfg);
out:
  cfg_free(&cfg);
  return rc;
}
