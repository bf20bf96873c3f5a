/*
 * khost state get|scan|stats|reset: the plugin state a pipeline keeps in
 * the dedup database (store_state.h), or in the PostgreSQL store with
 * `store.backend = "postgresql"` (store.h, store_pg_admin.h), read and
 * reset from the command line, with a connection of its own.
 *
 * reset previews by default, as replay and dedup forget do: it removes
 * only with --execute. It is meant for a stopped pipeline (a running
 * member may hold writes not yet durable, and writes them after the
 * reset): reset, then replay from earliest with --dedup reprocess to
 * rebuild the state from the topic (README.md, "Replay").
 *
 * Keys and values print as text, bytes outside printable ASCII (and the
 * backslash) as \xNN; with --json (get, scan, stats) as a JSON document
 * whose keys and values are text when printable UTF-8, else base64, as
 * their *_encoding member says.
 *
 * Exit status: 0 done (or previewed); 1 get found nothing, or the
 * database failed; 2 usage, config, unknown pipeline.
 */
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "host.h"
#include "store_pg.h"
#include "store_pg_admin.h"
#include "store_state.h"

typedef struct state_cli {
  const char *action; /* get, scan, stats, reset */
  const char *config, *pipeline, *key, *prefix;
  int execute;
  json_t *json; /* --json: scan's rows, printed at the end */
  cfg_t cfg;
  sstate_t *st; /* the SQLite file, or */
  store_t *pg;  /* the PostgreSQL store */
  uint32_t scope;
  char err[1024];
} state_cli_t;

static int parse(int argc, char **argv, state_cli_t *c) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"pipeline", required_argument, NULL, 'p'},
      {"key", required_argument, NULL, 'k'},
      {"prefix", required_argument, NULL, 'x'},
      {"execute", no_argument, NULL, 'e'},
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0}};
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "+:c:p:", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      c->config = optarg;
      break;
    case 'p':
      c->pipeline = optarg;
      break;
    case 'k':
      c->key = optarg;
      break;
    case 'x':
      c->prefix = optarg;
      break;
    case 'e':
      c->execute = 1;
      break;
    case 'j':
      if (!c->json)
        c->json = json_array();
      break;
    default:
      return cli_option_error("state", c->action, opt, argv[optind - 1]);
    }
  }
  if (optind < argc)
    return cli_usage_error("state %s: unexpected argument '%s'", c->action,
                           argv[optind]);
  if (!c->config || !c->pipeline)
    return cli_usage_error("state %s: -c FILE and -p PIPELINE are required",
                           c->action);
  if ((strcmp(c->action, "get") == 0) != (c->key != NULL))
    return cli_usage_error("state %s: --key KEY goes with get, which needs it",
                           c->action);
  if (c->prefix && strcmp(c->action, "scan") != 0)
    return cli_usage_error("state %s: --prefix goes with scan", c->action);
  if (c->json && strcmp(c->action, "reset") == 0)
    return cli_usage_error("state reset: --json goes with get, scan or stats");
  if (c->execute && strcmp(c->action, "reset") != 0)
    return cli_usage_error("state %s: --execute goes with reset", c->action);
  return -1;
}

static void print_bytes(const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
      putchar(p[i]);
    else
      printf("\\x%02x", p[i]);
  }
}

/* NAME and NAME_encoding members of o for data. */
static void json_bytes(json_t *o, const char *name, const void *data,
                       size_t len) {
  int text;
  char *s = cli_shown(data ? data : "", len, &text);
  char *enc = g_strconcat(name, "_encoding", NULL);
  json_object_set_new(o, name, json_string(s));
  json_object_set_new(o, enc, json_string(text ? "text" : "base64"));
  g_free(enc);
  g_free(s);
}

static json_t *json_row(const void *k, size_t kl, const void *v, size_t vl) {
  json_t *o = json_object();
  json_bytes(o, "key", k, kl);
  json_bytes(o, "value", v, vl);
  return o;
}

static void print_json(json_t *o) {
  json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  putchar('\n');
}

static int print_row(void *arg, const void *k, size_t kl, const void *v,
                     size_t vl) {
  json_t *rows = arg;
  if (rows) {
    json_array_append_new(rows, json_row(k, kl, v, vl));
    return 0;
  }
  print_bytes(k, kl);
  putchar('\t');
  print_bytes(v, vl);
  putchar('\n');
  return 0;
}

static int fail(state_cli_t *c) {
  fprintf(stderr, "khost: state %s: %s\n", c->action, c->err);
  return HOST_EXIT_RUNTIME;
}

static int do_get(state_cli_t *c) {
  void *v = NULL;
  size_t n = 0;
  int r = c->pg ? store_state_get(c->pg, c->scope, c->key, strlen(c->key), &v,
                                  &n, c->err, sizeof(c->err))
                : sstate_get(c->st, c->scope, c->key, strlen(c->key), &v, &n,
                             c->err, sizeof(c->err));
  if (r < 0)
    return fail(c);
  if (r == 0) {
    fprintf(stderr, "khost: state get: key %s: not found in pipeline %s\n",
            c->key, c->pipeline);
    return HOST_EXIT_RUNTIME;
  }
  if (c->json) {
    json_t *o = json_row(c->key, strlen(c->key), v, n);
    print_json(o);
    json_decref(o);
  } else {
    print_bytes(v, n);
    putchar('\n');
  }
  if (c->pg)
    free(v); /* store.h: malloc'd */
  else
    g_free(v);
  return HOST_EXIT_OK;
}

static int do_scan(state_cli_t *c) {
  const char *p = c->prefix ? c->prefix : "";
  if ((c->pg ? store_state_scan(c->pg, c->scope, p, strlen(p), print_row,
                                c->json, c->err, sizeof(c->err))
             : sstate_scan(c->st, c->scope, p, strlen(p), print_row, c->json,
                           c->err, sizeof(c->err))) < 0)
    return fail(c);
  if (c->json)
    print_json(c->json);
  return HOST_EXIT_OK;
}

static int stats(state_cli_t *c, int64_t *keys, int64_t *bytes) {
  if (c->pg)
    return store_pg_state_stats(c->pg, c->scope, keys, bytes, c->err,
                                sizeof(c->err));
  return sstate_stats(c->st, c->scope, keys, bytes, c->err, sizeof(c->err));
}

static int do_stats(state_cli_t *c) {
  int64_t keys = 0, bytes = 0;
  if (stats(c, &keys, &bytes) < 0)
    return fail(c);
  if (c->json) {
    json_t *o = json_pack("{s:s, s:I, s:I}", "pipeline", c->pipeline, "keys",
                          (json_int_t)keys, "bytes", (json_int_t)bytes);
    print_json(o);
    json_decref(o);
    return HOST_EXIT_OK;
  }
  printf("pipeline %s: %" PRId64 " keys, %" PRId64 " bytes\n", c->pipeline,
         keys, bytes);
  return HOST_EXIT_OK;
}

static int do_reset(state_cli_t *c) {
  int64_t keys = 0, bytes = 0;
  if (!c->execute) {
    if (stats(c, &keys, &bytes) < 0)
      return fail(c);
    printf("would remove %" PRId64 " keys of pipeline %s\n"
           "preview only, nothing changed: add --execute to remove them\n",
           keys, c->pipeline);
    return HOST_EXIT_OK;
  }
  if ((c->pg
           ? store_state_reset(c->pg, c->scope, &keys, c->err, sizeof(c->err))
           : sstate_reset(c->st, c->scope, &keys, c->err, sizeof(c->err))) < 0)
    return fail(c);
  printf("removed %" PRId64 " keys of pipeline %s\n", keys, c->pipeline);
  return HOST_EXIT_OK;
}

/* The PostgreSQL store and the pipeline's scope. Returns -1 to go on. */
static int open_pg(state_cli_t *c) {
  int found = 0;
  store_pg_opts_t o = {.conninfo = c->cfg.store_conninfo,
                       .lease_ms = c->cfg.store_lease_ms};
  if (store_pg_open(&c->pg, &o, c->err, sizeof(c->err)) < 0 ||
      store_pg_find_scope(c->pg, c->pipeline, &c->scope, &found, c->err,
                          sizeof(c->err)) < 0)
    return fail(c);
  if (!found)
    c->scope = UINT32_MAX; /* never handled a record: no keys */
  return -1;
}

/* The database and the pipeline's scope. Returns -1 to go on. */
static int open_state(state_cli_t *c) {
  int found = 0;
  if (c->cfg.store_backend == CFG_STORE_POSTGRESQL)
    return open_pg(c);
  if (!g_file_test(c->cfg.dedup_path, G_FILE_TEST_EXISTS)) {
    /* Nothing to show: a pipeline that never ran keeps no state. */
    snprintf(c->err, sizeof(c->err), "%s: no such database", c->cfg.dedup_path);
    return fail(c);
  }
  if (sstate_open(&c->st, c->cfg.dedup_path, 0, c->err, sizeof(c->err)) < 0 ||
      (found = sstate_scope(c->st, c->pipeline, &c->scope, c->err,
                            sizeof(c->err))) < 0)
    return fail(c);
  if (!found)
    c->scope = UINT32_MAX; /* never handled a record: no keys */
  return -1;
}

int cmd_state(int argc, char **argv) {
  state_cli_t c = {.action = argc > 1 ? argv[1] : ""};
  static const char *const actions[] = {"get", "scan", "stats", "reset"};
  static int (*const run[])(state_cli_t *) = {do_get, do_scan, do_stats,
                                              do_reset};
  int rc, which = -1;
  for (int i = 0; i < 4; i++)
    if (strcmp(c.action, actions[i]) == 0)
      which = i;
  if (which < 0)
    return cli_usage_error("state: give get, scan, stats or reset");
  if ((rc = parse(argc - 1, argv + 1, &c)) >= 0 ||
      (rc = cli_load_config(&c.cfg, c.config)) != 0) {
    if (c.json)
      json_decref(c.json);
    return rc;
  }
  if (!cli_find_pipeline(&c.cfg, c.pipeline))
    rc = cli_usage_error("state %s: no pipeline named %s in %s", c.action,
                         c.pipeline, c.config);
  else if ((rc = open_state(&c)) < 0)
    rc = run[which](&c);
  sstate_close(c.st);
  store_close(c.pg);
  if (c.json)
    json_decref(c.json);
  cfg_free(&c.cfg);
  return rc;
}
