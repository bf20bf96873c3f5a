/*
 * khost parked list|show|replay|skip: the records a pipeline parked in
 * its store (store_parked.h) because they failed for good while no
 * dead-letter topic was set. list and show read beside a running host;
 * skip removes records on purpose; replay sends them through the
 * pipeline's plugin again (parked_replay.h) and is refused while a host
 * has the SQLite file open. On the PostgreSQL store every action works
 * beside running hosts: they share one lot.
 *
 * replay and skip preview by default, as replay and dedup forget do: they
 * act only with --execute.
 *
 * Keys, values and headers print as text when they are printable UTF-8,
 * else as base64 (said so).
 *
 * Exit status: 0 done (or previewed); 1 show found nothing, the store failed,
 * or the plugin answered FATAL; 2 usage, config, unknown pipeline, a
 * store in use (replay).
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
#include "parked_admin.h"
#include "parked_hdr.h"
#include "parked_replay.h"
#include "store_parked.h"
#include "store_pg.h"
#include "timefmt.h"

typedef struct parked_cli {
  const char *action; /* list, show, replay, skip */
  const char *config, *pipeline;
  padm_filter_t f;
  int all, execute;
  json_t *json; /* --json: what list or show print, at the end */
  cfg_t cfg;
  const cfg_pipeline_t *pc;
  padm_t *adm;
  store_t *pg; /* the PostgreSQL store, when the config names one */
  uint32_t scope;
  int found; /* the store knows the pipeline */
  char err[4096];
} parked_cli_t;

/* ------------------------------------------------------------- options */

static int number(const char *s, int64_t min, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || v < min)
    return -1;
  *out = v;
  return 0;
}

static int parse_opt(parked_cli_t *c, int opt, char **argv) {
  int64_t v;
  switch (opt) {
  case 'c':
    c->config = optarg;
    return -1;
  case 'p':
    c->pipeline = optarg;
    return -1;
  case 't':
    c->f.topic = optarg;
    return -1;
  case 'P':
    if (number(optarg, 0, &v) < 0 || v > INT32_MAX)
      return cli_usage_error("parked %s: --partition %s: not a partition",
                             c->action, optarg);
    c->f.partition = (int32_t)v;
    return -1;
  case 'o':
    if (number(optarg, 0, &v) < 0)
      return cli_usage_error("parked %s: --offset %s: not an offset", c->action,
                             optarg);
    c->f.offset = v;
    return -1;
  case 'a':
    c->all = 1;
    return -1;
  case 'x':
    c->execute = 1;
    return -1;
  case 'j':
    if (!c->json)
      c->json = json_array();
    return -1;
  default:
    return cli_option_error("parked", c->action, opt, argv[optind - 1]);
  }
}

static int parse(int argc, char **argv, parked_cli_t *c) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"pipeline", required_argument, NULL, 'p'},
      {"topic", required_argument, NULL, 't'},
      {"partition", required_argument, NULL, 'P'},
      {"offset", required_argument, NULL, 'o'},
      {"all", no_argument, NULL, 'a'},
      {"execute", no_argument, NULL, 'x'},
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0}};
  int opt, rc = -1;
  optind = 1;
  opterr = 0;
  while (rc < 0 &&
         (opt = getopt_long(argc, argv, "+:c:p:", longopts, NULL)) != -1)
    rc = parse_opt(c, opt, argv);
  if (rc >= 0)
    return rc;
  if (optind < argc)
    return cli_usage_error("parked %s: unexpected argument '%s'", c->action,
                           argv[optind]);
  if (!c->config || !c->pipeline)
    return cli_usage_error("parked %s: -c FILE and -p PIPELINE are required",
                           c->action);
  return -1;
}

/* What each action takes. Returns -1 to go on, or an exit status. */
static int check_options(const parked_cli_t *c) {
  int is_show = strcmp(c->action, "show") == 0;
  int is_skip = strcmp(c->action, "skip") == 0;
  int one = c->f.offset >= 0;
  if (c->f.partition >= 0 && !c->f.topic)
    return cli_usage_error("parked %s: --partition goes with --topic",
                           c->action);
  if (one && c->f.partition < 0)
    return cli_usage_error("parked %s: --offset goes with --topic and "
                           "--partition",
                           c->action);
  if (is_show && !one)
    return cli_usage_error("parked show: give --topic T --partition N "
                           "--offset O");
  if (is_skip && !one == !c->all)
    return cli_usage_error("parked skip: give --topic T --partition N "
                           "--offset O, or --all");
  if (!is_skip && c->all)
    return cli_usage_error("parked %s: --all goes with skip", c->action);
  if (c->execute && !is_skip && strcmp(c->action, "replay") != 0)
    return cli_usage_error("parked %s: --execute goes with replay or skip",
                           c->action);
  if (c->json && !is_show && strcmp(c->action, "list") != 0)
    return cli_usage_error("parked %s: --json goes with list or show",
                           c->action);
  return -1;
}

/* ------------------------------------------------------------- helpers */

/* "-" for a time the record or the store does not have. */
static void format_time(int64_t ms, char *buf, size_t size) {
  if (ms < 0)
    snprintf(buf, size, "-");
  else
    timefmt_utc_ms(ms, buf, size);
}

static int fail(parked_cli_t *c) {
  fprintf(stderr, "khost: parked %s: %s\n", c->action, c->err);
  return HOST_EXIT_RUNTIME;
}

static char *event_id_text(const store_parked_t *p) {
  int text;
  char *s = cli_shown(p->event_id, p->event_id_len, &text);
  if (s && !text) {
    char *b = g_strconcat("base64:", s, NULL);
    g_free(s);
    return b;
  }
  return s ? s : g_strdup("-");
}

/* ---------------------------------------------------------------- list */

static void list_row(parked_cli_t *c, const store_parked_t *p) {
  char at[40];
  char *id = event_id_text(p);
  format_time(p->parked_at_ms, at, sizeof(at));
  if (c->json)
    json_array_append_new(
        c->json, json_pack("{s:s, s:I, s:I, s:s, s:I, s:s, s:s}", "topic",
                           p->topic, "partition", (json_int_t)p->partition,
                           "offset", (json_int_t)p->offset, "event_id", id,
                           "attempts", (json_int_t)p->attempts, "parked_at", at,
                           "reason", p->reason));
  else
    printf("%-24s  %-9" PRId32 "  %-12" PRId64 "  %-36s  %-8" PRIu32
           "  %-24s  %s\n",
           p->topic, p->partition, p->offset, id, p->attempts, at, p->reason);
  g_free(id);
}

static void list_header(const parked_cli_t *c) {
  if (!c->json)
    printf("%-24s  %-9s  %-12s  %-36s  %-8s  %-24s  %s\n", "TOPIC", "PARTITION",
           "OFFSET", "EVENT_ID", "ATTEMPTS", "PARKED_AT", "REASON");
}

/* The records -p and the filters select (none when the store has never
 * seen the pipeline). */
static int select_recs(parked_cli_t *c, store_parked_t ***v, size_t *n) {
  *v = NULL;
  *n = 0;
  if (!c->found)
    return 0;
  return padm_list(c->adm, c->scope, &c->f, v, n, c->err, sizeof(c->err));
}

static int do_list(parked_cli_t *c) {
  store_parked_t **v;
  size_t n;
  if (select_recs(c, &v, &n) < 0)
    return fail(c);
  list_header(c);
  for (size_t i = 0; i < n; i++)
    list_row(c, v[i]);
  padm_list_free(v, n);
  return HOST_EXIT_OK;
}

/* ---------------------------------------------------------------- show */

/* One field as "NAME  text" or "NAME  base64:..." (or JSON members
 * NAME and NAME_encoding). */
static void show_bytes(json_t *o, const char *name, const void *data,
                       size_t len) {
  int text;
  char *s = cli_shown(data, len, &text);
  if (o) {
    char *enc = g_strconcat(name, "_encoding", NULL);
    json_object_set_new(o, name, s ? json_string(s) : json_null());
    if (s)
      json_object_set_new(o, enc, json_string(text ? "text" : "base64"));
    g_free(enc);
  } else {
    printf("%-10s %s%s\n", name, s && !text ? "base64:" : "", s ? s : "-");
  }
  g_free(s);
}

static int show_header(void *arg, const char *name, size_t nlen,
                       const void *value, size_t vlen) {
  json_t *arr = arg;
  char *n = g_strndup(name, nlen);
  if (arr) {
    json_t *h = json_pack("{s:s}", "name", n);
    show_bytes(h, "value", value, vlen);
    json_array_append_new(arr, h);
  } else {
    int text;
    char *v = cli_shown(value, vlen, &text);
    printf("%-10s %s: %s%s\n", "header", n, v && !text ? "base64:" : "",
           v ? v : "-");
    g_free(v);
  }
  g_free(n);
  return 0;
}

static void show_text(const parked_cli_t *c, const store_parked_t *p) {
  char ts[40], at[40];
  format_time(p->timestamp_ms, ts, sizeof(ts));
  format_time(p->parked_at_ms, at, sizeof(at));
  printf("%-10s %s\n%-10s %s\n%-10s %" PRId32 "\n%-10s %" PRId64 "\n%-10s %s\n",
         "pipeline", c->pipeline, "topic", p->topic, "partition", p->partition,
         "offset", p->offset, "timestamp", ts);
  show_bytes(NULL, "event_id", p->event_id, p->event_id_len);
  show_bytes(NULL, "key", p->key, p->key_len);
  show_bytes(NULL, "value", p->value, p->value_len);
  parked_hdr_each(p->headers, p->headers_len, show_header, NULL);
  printf("%-10s %s\n%-10s %" PRIu32 "\n%-10s %s\n", "reason", p->reason,
         "attempts", p->attempts, "parked_at", at);
}

static json_t *show_json(const parked_cli_t *c, const store_parked_t *p) {
  char ts[40], at[40];
  json_t *hdrs = json_array();
  format_time(p->timestamp_ms, ts, sizeof(ts));
  format_time(p->parked_at_ms, at, sizeof(at));
  json_t *o = json_pack(
      "{s:s, s:s, s:I, s:I, s:o}", "pipeline", c->pipeline, "topic", p->topic,
      "partition", (json_int_t)p->partition, "offset", (json_int_t)p->offset,
      "timestamp", p->timestamp_ms >= 0 ? json_string(ts) : json_null());
  show_bytes(o, "event_id", p->event_id, p->event_id_len);
  show_bytes(o, "key", p->key, p->key_len);
  show_bytes(o, "value", p->value, p->value_len);
  parked_hdr_each(p->headers, p->headers_len, show_header, hdrs);
  json_object_set_new(o, "headers", hdrs);
  json_object_set_new(o, "reason", json_string(p->reason));
  json_object_set_new(o, "attempts", json_integer(p->attempts));
  json_object_set_new(o, "parked_at", json_string(at));
  return o;
}

static int do_show(parked_cli_t *c) {
  store_parked_t **v;
  size_t n;
  if (select_recs(c, &v, &n) < 0)
    return fail(c);
  if (n == 0) {
    fprintf(stderr,
            "khost: parked show: nothing parked at %s [%" PRId32
            "] offset %" PRId64 " in pipeline %s\n",
            c->f.topic, c->f.partition, c->f.offset, c->pipeline);
    return HOST_EXIT_RUNTIME;
  }
  if (c->json) {
    json_decref(c->json);
    c->json = show_json(c, v[0]);
  } else {
    show_text(c, v[0]);
  }
  padm_list_free(v, n);
  return HOST_EXIT_OK;
}

/* ---------------------------------------------------- replay and skip */

static int do_skip(parked_cli_t *c) {
  store_parked_t **v;
  size_t n, removed = 0;
  if (select_recs(c, &v, &n) < 0)
    return fail(c);
  list_header(c);
  for (size_t i = 0; i < n; i++) {
    int gone = 0;
    list_row(c, v[i]);
    if (c->execute &&
        padm_remove(c->adm, v[i], &gone, c->err, sizeof(c->err)) < 0) {
      padm_list_free(v, n);
      return fail(c);
    }
    removed += (size_t)gone;
  }
  if (c->execute)
    printf("dropped %zu parked record(s) of pipeline %s on purpose\n", removed,
           c->pipeline);
  else
    printf("would drop %zu parked record(s) of pipeline %s\npreview only, "
           "nothing changed: add --execute to drop them\n",
           n, c->pipeline);
  padm_list_free(v, n);
  return HOST_EXIT_OK;
}

static int do_replay(parked_cli_t *c) {
  store_parked_t **v;
  size_t n;
  int rc = HOST_EXIT_OK;
  if (select_recs(c, &v, &n) < 0)
    return fail(c);
  if (!c->execute) {
    list_header(c);
    for (size_t i = 0; i < n; i++)
      list_row(c, v[i]);
    printf("would replay %zu parked record(s) of pipeline %s through %s, in "
           "offset order per partition (a record handled since it was "
           "parked is not called again)\npreview only, nothing changed: add "
           "--execute to replay them (with khost stopped)\n",
           n, c->pipeline, c->pc->plugin_path);
  } else if (n == 0) {
    printf("nothing parked to replay in pipeline %s\n", c->pipeline);
  } else {
    rc = parked_replay(&c->cfg, c->pc, c->adm, v, n, c->err, sizeof(c->err));
    if (rc != HOST_EXIT_OK)
      fail(c);
  }
  padm_list_free(v, n);
  return rc;
}

/* ---------------------------------------------------------------- main */

static const struct {
  const char *name;
  int (*run)(parked_cli_t *c);
} actions[] = {
    {"list", do_list},
    {"show", do_show},
    {"replay", do_replay},
    {"skip", do_skip},
};

/* The PostgreSQL store the config names (its schema as run wants it:
 * nothing is created here). */
static int open_pg(parked_cli_t *c) {
  store_pg_opts_t o = {.conninfo = c->cfg.store_conninfo,
                       .lease_ms = c->cfg.store_lease_ms};
  if (store_pg_open(&c->pg, &o, c->err, sizeof(c->err)) < 0)
    return fail(c);
  c->adm = padm_of_pg(c->pg);
  if (padm_scope(c->adm, c->pipeline, &c->scope, &c->found, c->err,
                 sizeof(c->err)) < 0)
    return fail(c);
  return -1;
}

/* Config, pipeline and store; -1 to go on, or an exit status. */
static int open_store(parked_cli_t *c) {
  int rc = cli_load_config(&c->cfg, c->config);
  if (rc != 0)
    return rc;
  c->pc = cli_find_pipeline(&c->cfg, c->pipeline);
  if (!c->pc)
    return cli_usage_error("parked %s: %s has no pipeline named \"%s\"",
                           c->action, c->cfg.path, c->pipeline);
  if (c->cfg.store_backend == CFG_STORE_POSTGRESQL)
    return open_pg(c);
  /* Before this process opens the file itself. */
  if (strcmp(c->action, "replay") == 0 && c->execute &&
      padm_check_unused(c->cfg.dedup_path, c->err, sizeof(c->err)) < 0) {
    fprintf(stderr, "khost: parked replay: %s\n", c->err);
    return HOST_EXIT_CONFIG;
  }
  if (padm_open(&c->adm, c->cfg.dedup_path, c->err, sizeof(c->err)) < 0 ||
      padm_scope(c->adm, c->pipeline, &c->scope, &c->found, c->err,
                 sizeof(c->err)) < 0)
    return fail(c);
  return -1;
}

int cmd_parked(int argc, char **argv) {
  parked_cli_t c = {.f = {.partition = -1, .offset = -1}};
  int (*run)(parked_cli_t *) = NULL;
  if (argc < 2)
    return cli_usage_error("parked: an action is required (list, show, "
                           "replay or skip)");
  for (size_t i = 0; i < G_N_ELEMENTS(actions); i++)
    if (strcmp(argv[1], actions[i].name) == 0)
      run = actions[i].run;
  if (!run)
    return cli_usage_error("parked: unknown action '%s'", argv[1]);
  c.action = argv[1];
  int rc = parse(argc - 1, argv + 1, &c);
  if (rc < 0)
    rc = check_options(&c);
  if (rc < 0)
    rc = open_store(&c);
  if (rc < 0)
    rc = run(&c);
  if (rc == 0 && c.json) {
    json_dumpf(c.json, stdout, JSON_INDENT(2));
    putchar('\n');
  }
  json_decref(c.json);
  padm_close(c.adm);
  store_close(c.pg);
  cfg_free(&c.cfg);
  return rc;
}
