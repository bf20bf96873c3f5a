/*
 * khost dedup stats|lookup|forget|prune: the command line of
 * dedup_admin.h, or of store_pg_admin.h with `store.backend =
 * "postgresql"`. Safe beside a running host; what it deletes from a
 * SQLite file, a running host keeps remembering in memory until it
 * restarts (it says so); hosts on PostgreSQL forget it at once.
 *
 * forget previews by default, as replay does: it removes only with
 * --execute (--yes, its old name, still works, with a note).
 *
 * Exit status: 0 done (or previewed); 1 lookup found nothing, or SQLite
 * failed; 2 usage, config, unknown pipeline.
 */
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "dedup.h"
#include "dedup_admin.h"
#include "host.h"
#include "store_pg.h"
#include "store_pg_admin.h"
#include "timefmt.h"

static const char running_note[] =
    "a running khost keeps remembering these event IDs in memory until it "
    "restarts";

typedef struct dedup_cli {
  const char *action; /* stats, lookup, forget, prune */
  const char *config;
  const char *pipeline;
  const char *event_id;
  const char *older_than;
  int all, execute, old_yes;
  json_t *json; /* --json: the rows of stats or lookup, printed at the end */
  cfg_t cfg;
  dadm_t *adm;      /* the SQLite file, or */
  store_t *pg;      /* the PostgreSQL store */
  char *where;      /* the file, or the server without its password */
  const char *note; /* after a delete: what running hosts still know */
  char err[4096];
} dedup_cli_t;

/* ------------------------------------------------------------- options */

static int parse(int argc, char **argv, dedup_cli_t *c) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"pipeline", required_argument, NULL, 'p'},
      {"event-id", required_argument, NULL, 'i'},
      {"all", no_argument, NULL, 'a'},
      {"execute", no_argument, NULL, 'x'},
      {"yes", no_argument, NULL, 'y'},
      {"older-than", required_argument, NULL, 'o'},
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
    case 'i':
      c->event_id = optarg;
      break;
    case 'a':
      c->all = 1;
      break;
    case 'x':
      c->execute = 1;
      break;
    case 'y':
      c->execute = c->old_yes = 1;
      break;
    case 'o':
      c->older_than = optarg;
      break;
    case 'j':
      if (!c->json)
        c->json = json_array();
      break;
    default:
      return cli_option_error("dedup", c->action, opt, argv[optind - 1]);
    }
  }
  if (optind < argc)
    return cli_usage_error("dedup %s: unexpected argument '%s'", c->action,
                           argv[optind]);
  if (!c->config)
    return cli_usage_error("dedup %s: -c FILE is required", c->action);
  return -1;
}

/* What each action takes. Returns -1 to go on, or an exit status. */
static int check_options(const dedup_cli_t *c) {
  int is_lookup = strcmp(c->action, "lookup") == 0;
  int is_forget = strcmp(c->action, "forget") == 0;
  int is_prune = strcmp(c->action, "prune") == 0;
  if ((is_lookup || is_forget) && !c->pipeline)
    return cli_usage_error("dedup %s: -p PIPELINE is required", c->action);
  if (is_lookup && !c->event_id)
    return cli_usage_error("dedup lookup: --event-id ID is required");
  if (is_forget && !c->event_id == !c->all)
    return cli_usage_error("dedup forget: give --event-id ID or --all");
  if (!is_lookup && !is_forget && c->event_id)
    return cli_usage_error("dedup %s: --event-id goes with lookup or forget",
                           c->action);
  if (!is_forget && (c->all || c->execute))
    return cli_usage_error("dedup %s: --all and --execute go with forget",
                           c->action);
  if (!is_prune && c->older_than)
    return cli_usage_error("dedup %s: --older-than goes with prune", c->action);
  if (c->json && !is_lookup && strcmp(c->action, "stats") != 0)
    return cli_usage_error("dedup %s: --json goes with stats or lookup",
                           c->action);
  if (is_prune && c->pipeline)
    return cli_usage_error("dedup prune: prunes every pipeline; no -p");
  return -1;
}

/* ------------------------------------------------------------- helpers */

static int fail(dedup_cli_t *c) {
  fprintf(stderr, "khost: dedup %s: %s\n", c->action, c->err);
  return HOST_EXIT_RUNTIME;
}

/* The scope of -p; *found = 0 when the database has no marks of it. */
static int scope_of(dedup_cli_t *c, uint32_t *scope, int *found) {
  if ((c->pg ? store_pg_find_scope(c->pg, c->pipeline, scope, found, c->err,
                                   sizeof(c->err))
             : dadm_scope(c->adm, c->pipeline, 0, scope, found, c->err,
                          sizeof(c->err))) < 0)
    return fail(c);
  return HOST_EXIT_OK;
}

/* --------------------------------------------------------------- stats */

static void print_stats_row(json_t *json, const char *name,
                            const dadm_stats_t *e) {
  char oldest[40] = "-", newest[40] = "-";
  int any = e && e->marks > 0;
  if (any) {
    timefmt_utc_ms(e->oldest_ms, oldest, sizeof(oldest));
    timefmt_utc_ms(e->newest_ms, newest, sizeof(newest));
  }
  if (json) {
    json_array_append_new(
        json, json_pack("{s:s, s:I, s:o, s:o, s:I}", "pipeline", name, "marks",
                        (json_int_t)(e ? e->marks : 0), "oldest",
                        any ? json_string(oldest) : json_null(), "newest",
                        any ? json_string(newest) : json_null(), "replays",
                        (json_int_t)(e ? e->replays : 0)));
    return;
  }
  printf("%-24s  %-10" PRId64 "  %-24s  %-24s  %" PRId64 "\n", name,
         e ? e->marks : 0, oldest, newest, e ? e->replays : 0);
}

static int do_stats(dedup_cli_t *c) {
  dadm_stats_t *v = NULL;
  size_t n = 0;
  int64_t db = 0, wal = 0;
  if ((c->pg ? store_pg_dedup_stats(c->pg, &v, &n, c->err, sizeof(c->err))
             : dadm_stats(c->adm, &v, &n, c->err, sizeof(c->err))) < 0)
    return fail(c);
  if (!c->pg)
    dadm_file_sizes(c->cfg.dedup_path, &db, &wal);
  if (!c->json && c->pg)
    printf("database %s\n", c->where);
  else if (!c->json)
    printf("database %s: %" PRId64 " bytes (+ %" PRId64 " bytes of WAL)\n",
           c->cfg.dedup_path, db, wal);
  if (!c->json) {
    printf("%-24s  %-10s  %-24s  %-24s  %s\n", "PIPELINE", "MARKS", "OLDEST",
           "NEWEST", "REPLAYS");
  }
  /* The config's pipelines first (also those without marks yet), then
   * pipelines only the database still knows. */
  for (size_t i = 0; i < c->cfg.n_pipelines; i++) {
    const char *name = c->cfg.pipelines[i].name;
    const dadm_stats_t *e = NULL;
    for (size_t k = 0; k < n && !e; k++)
      e = strcmp(v[k].pipeline, name) == 0 ? &v[k] : NULL;
    if (!c->pipeline || strcmp(c->pipeline, name) == 0)
      print_stats_row(c->json, name, e);
  }
  for (size_t k = 0; k < n; k++)
    if (!cli_find_pipeline(&c->cfg, v[k].pipeline) && !c->pipeline)
      print_stats_row(c->json, v[k].pipeline, &v[k]);
  dadm_stats_free(v, n);
  if (c->json && c->pg)
    c->json =
        json_pack("{s:s, s:o}", "database", c->where, "pipelines", c->json);
  else if (c->json)
    c->json = json_pack("{s:s, s:I, s:I, s:o}", "database", c->cfg.dedup_path,
                        "bytes", (json_int_t)db, "wal_bytes", (json_int_t)wal,
                        "pipelines", c->json);
  return HOST_EXIT_OK;
}

/* -------------------------------------------------------------- lookup */

static int do_lookup(dedup_cli_t *c) {
  uint32_t scope;
  int found = 0;
  dadm_mark_t *v = NULL;
  size_t n = 0;
  int rc = scope_of(c, &scope, &found);
  if (rc == HOST_EXIT_OK && found &&
      (c->pg ? store_pg_lookup(c->pg, scope, c->event_id, strlen(c->event_id),
                               &v, &n, c->err, sizeof(c->err))
             : dadm_lookup(c->adm, scope, c->event_id, strlen(c->event_id), &v,
                           &n, c->err, sizeof(c->err))) < 0)
    rc = fail(c);
  if (rc != HOST_EXIT_OK)
    return rc;
  if (n == 0) {
    fprintf(stderr,
            "khost: dedup lookup: event ID %s: not found in pipeline "
            "%s\n",
            c->event_id, c->pipeline);
    dadm_marks_free(v, n);
    return HOST_EXIT_RUNTIME;
  }
  if (!c->json)
    printf("%-20s  %-24s  %-9s  %-12s  %-24s  %s\n", "PIPELINE", "TOPIC",
           "PARTITION", "OFFSET", "HANDLED_AT", "OUTCOME");
  for (size_t i = 0; i < n; i++) {
    char at[40];
    const char *outcome = v[i].outcome == DEDUP_OUTCOME_OK ? "ok" : "failed";
    timefmt_utc_ms(v[i].handled_at_ms, at, sizeof(at));
    if (c->json) {
      json_array_append_new(
          c->json, json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "pipeline",
                             c->pipeline, "topic", v[i].topic, "partition",
                             (json_int_t)v[i].partition, "offset",
                             (json_int_t)v[i].offset, "handled_at", at,
                             "outcome", outcome));
      continue;
    }
    printf("%-20s  %-24s  %-9" PRId32 "  %-12" PRId64 "  %-24s  %s\n",
           c->pipeline, v[i].topic, v[i].partition, v[i].offset, at, outcome);
  }
  dadm_marks_free(v, n);
  return HOST_EXIT_OK;
}

/* -------------------------------------------------------------- forget */

static int forget(dedup_cli_t *c, uint32_t scope, int64_t *count) {
  const void *id = c->event_id;
  size_t len = id ? strlen(c->event_id) : 0;
  char *e = c->err;
  size_t el = sizeof(c->err);
  if (c->pg)
    return c->all
               ? store_pg_forget_scope(c->pg, scope, !c->execute, count, e, el)
               : store_pg_forget_id(c->pg, scope, id, len, !c->execute, count,
                                    e, el);
  return c->all ? dadm_forget_scope(c->adm, scope, !c->execute, count, e, el)
                : dadm_forget_id(c->adm, scope, id, len, !c->execute, count, e,
                                 el);
}

static int do_forget(dedup_cli_t *c) {
  uint32_t scope;
  int found = 0;
  int64_t count = 0;
  int rc = scope_of(c, &scope, &found);
  char *what = c->all
                   ? g_strdup_printf("every mark of pipeline %s", c->pipeline)
                   : g_strdup_printf("the marks of event ID %s in "
                                     "pipeline %s",
                                     c->event_id, c->pipeline);
  if (rc == HOST_EXIT_OK && found && forget(c, scope, &count) < 0)
    rc = fail(c);
  if (rc != HOST_EXIT_OK)
    goto out;
  if (c->old_yes)
    fprintf(stderr, "khost: dedup forget: --yes is deprecated: use "
                    "--execute\n");
  if (!c->execute) {
    printf("would remove %s from %s: %" PRId64 " mark(s)%s\n"
           "preview only, nothing changed: add --execute to remove them\n",
           what, c->where, count, c->all ? " and the replay ranges" : "");
  } else {
    printf("removed %s from %s: %" PRId64 " mark(s)\n%s\n", what, c->where,
           count, c->note);
  }
out:
  g_free(what);
  return rc;
}

/* --------------------------------------------------------------- prune */

static int do_prune(dedup_cli_t *c) {
  int64_t age = c->cfg.retention_ms, removed = 0;
  char cutoff[40];
  if (c->older_than &&
      (cfg_parse_duration(c->older_than, &age) != 0 || age <= 0))
    return cli_usage_error("dedup prune: --older-than %s: not a duration "
                           "(e.g. 12h, 7d)",
                           c->older_than);
  if (age <= 0)
    return cli_usage_error("dedup prune: %s keeps marks forever (no "
                           "dedup.retention): give --older-than DURATION",
                           c->cfg.path);
  int64_t at = dedup_now_ms() - age;
  if ((c->pg
           ? store_pg_prune_before(c->pg, at, &removed, c->err, sizeof(c->err))
           : dadm_prune(c->adm, at, &removed, c->err, sizeof(c->err))) < 0)
    return fail(c);
  timefmt_utc_ms(at, cutoff, sizeof(cutoff));
  printf("removed %" PRId64 " mark(s) handled before %s from %s\n%s\n", removed,
         cutoff, c->where, c->note);
  return HOST_EXIT_OK;
}

/* ---------------------------------------------------------------- main */

/* The SQLite file, or the PostgreSQL store the config names (its schema
 * as run wants it: these commands create nothing). */
static int open_store(dedup_cli_t *c) {
  if (c->cfg.store_backend != CFG_STORE_POSTGRESQL) {
    c->where = g_strdup(c->cfg.dedup_path);
    c->note = running_note;
    return dadm_open(&c->adm, c->cfg.dedup_path, 0, c->err, sizeof(c->err));
  }
  store_pg_opts_t o = {.conninfo = c->cfg.store_conninfo,
                       .lease_ms = c->cfg.store_lease_ms};
  char *shown = store_pg_display(c->cfg.store_conninfo);
  c->where = g_strdup_printf("postgresql store (%s)", shown);
  c->note = "every host on this store forgets them at once";
  g_free(shown);
  return store_pg_open(&c->pg, &o, c->err, sizeof(c->err));
}

static const struct {
  const char *name;
  int (*run)(dedup_cli_t *c);
} actions[] = {
    {"stats", do_stats},
    {"lookup", do_lookup},
    {"forget", do_forget},
    {"prune", do_prune},
};

int cmd_dedup(int argc, char **argv) {
  dedup_cli_t c = {0};
  int (*run)(dedup_cli_t *) = NULL;
  if (argc < 2)
    return cli_usage_error("dedup: an action is required (stats, lookup, "
                           "forget or prune)");
  for (size_t i = 0; i < G_N_ELEMENTS(actions); i++)
    if (strcmp(argv[1], actions[i].name) == 0)
      run = actions[i].run;
  if (!run)
    return cli_usage_error("dedup: unknown action '%s'", argv[1]);
  c.action = argv[1];
  int rc = parse(argc - 1, argv + 1, &c);
  if (rc < 0)
    rc = check_options(&c);
  if (rc >= 0) {
    json_decref(c.json);
    return rc;
  }
  rc = cli_load_config(&c.cfg, c.config);
  if (rc == 0 && c.pipeline && !cli_find_pipeline(&c.cfg, c.pipeline))
    rc = cli_usage_error("dedup %s: %s has no pipeline named \"%s\"", c.action,
                         c.cfg.path, c.pipeline);
  if (rc == 0 && open_store(&c) < 0)
    rc = fail(&c);
  if (rc == 0)
    rc = run(&c);
  if (rc == 0 && c.json) {
    json_dumpf(c.json, stdout, JSON_INDENT(2));
    putchar('\n');
  }
  json_decref(c.json);
  dadm_close(c.adm);
  store_close(c.pg);
  g_free(c.where);
  cfg_free(&c.cfg);
  return rc;
}
