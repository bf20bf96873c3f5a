/*
 * khost test-plugin: run a handler plugin over records written as JSON
 * lines (test_records.h), without Kafka and without a dedup store, through
 * the same loader and instance calls as `khost run`, and print what the
 * plugin answered for each record.
 *
 * What it does as the host would: init(), create(), assigned() with every
 * partition of the file, handle(), flush(), revoked(), destroy() and
 * fini(); the plugin's settings are checked the same way (a setting the
 * plugin does not declare or look up is an error), the event ID
 * comes from the pipeline's event_id source, RETRY is answered by calling
 * handle() again with the next attempt number up to the retry limit (at
 * once: no backoff here), and flush() runs after every max_batch records
 * and at the end. Host state (khost_api_t.state_*) is kept in memory for
 * the run, as a member keeps it: a record's writes join the batch with an
 * outcome (OK, FAIL), a RETRY's are dropped, and the batch is committed
 * after its flush(); so a stateful plugin reads back what it wrote. What it
 * does not: no dedup (a repeated event ID is handed to the plugin again),
 * no dead letters, no commits to Kafka, nothing kept after the run.
 */
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "host.h"
#include "plugin_loader.h"
#include "state.h"
#include "store.h"
#include "test_records.h"

#ifndef KHOST_PLUGIN_DIR
#define KHOST_PLUGIN_DIR "/usr/local/lib/khost/plugins"
#endif

/* The retry limit and batch size of a pipeline without those settings. */
enum { TP_DEFAULT_RETRIES = CFG_DEFAULT_RETRY_MAX, TP_DEFAULT_BATCH = 500 };

typedef struct tp_opts {
  const char *plugin;  /* name or path; NULL: the pipeline's */
  const char *records; /* the JSON lines file */
  const char *config;  /* -c FILE */
  const char *pipeline;
  const char **settings; /* --config KEY=VALUE, in order */
  int n_settings;
  int retries; /* -1: the pipeline's (or the default) */
} tp_opts_t;

typedef struct tp_run {
  plugin_instance_t *inst;
  store_t *store; /* in memory, for the plugin's state */
  state_t *state;
  store_batch_t *sb;      /* the writes of the records since the last flush */
  const char *eid_header; /* NULL: the event ID is the key */
  int retries;
  int batch;
  uint64_t ok, failed, exhausted, fatal, retried, flushes;
} tp_run_t;

static int parse_retries(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < 0 || v > 1000)
    return cli_usage_error("test-plugin: --retries takes 0..1000 (got '%s')",
                           s);
  *out = (int)v;
  return -1;
}

static int parse(int argc, char **argv, tp_opts_t *o) {
  static const struct option longopts[] = {
      {"records", required_argument, NULL, 'r'},
      {"config", required_argument, NULL, 'C'},
      {"pipeline", required_argument, NULL, 'p'},
      {"retries", required_argument, NULL, 'R'},
      {NULL, 0, NULL, 0}};
  int c, rc = -1;
  optind = 1;
  opterr = 0;
  /* -c is the config file as in every command; --config KEY=VALUE is a
   * plugin setting, as on the synopsis line. */
  while (rc < 0 && (c = getopt_long(argc, argv, ":c:p:", longopts, NULL)) != -1)
    if (c == 'r')
      o->records = optarg;
    else if (c == 'c')
      o->config = optarg;
    else if (c == 'C')
      o->settings[o->n_settings++] = optarg;
    else if (c == 'p')
      o->pipeline = optarg;
    else if (c == 'R')
      rc = parse_retries(optarg, &o->retries);
    else if (c == ':')
      rc = cli_usage_error("test-plugin: %s needs a value", argv[optind - 1]);
    else
      rc =
          cli_usage_error("test-plugin: unknown option '%s'", argv[optind - 1]);
  if (rc >= 0)
    return rc;
  if (optind < argc)
    o->plugin = argv[optind++];
  if (optind < argc)
    return cli_usage_error("test-plugin: unexpected argument '%s'",
                           argv[optind]);
  if (!o->records)
    return cli_usage_error("test-plugin: --records FILE is required");
  if (!o->plugin && !o->pipeline)
    return cli_usage_error("test-plugin: name a PLUGIN, or a pipeline with "
                           "-c FILE -p PIPELINE");
  if (!o->config != !o->pipeline)
    return cli_usage_error("test-plugin: -c FILE and -p PIPELINE go together");
  return -1;
}

/* ------------------------------------------------------------ settings */

/* VALUE of --config KEY=VALUE: true/false, an integer, a number, or a
 * string ("quoted" to keep a string that looks like one of the others). */
static int set_value(config_setting_t *group, const char *key, const char *v) {
  char *end;
  size_t n = strlen(v);
  config_setting_t *s;
  if (config_setting_get_member(group, key))
    config_setting_remove(group, key);
  if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
    s = config_setting_add(group, key, CONFIG_TYPE_BOOL);
    return s ? config_setting_set_bool(s, v[0] == 't') : CONFIG_FALSE;
  }
  long long i = strtoll(v, &end, 10);
  if (n && !*end) {
    s = config_setting_add(group, key, CONFIG_TYPE_INT64);
    return s ? config_setting_set_int64(s, i) : CONFIG_FALSE;
  }
  double d = strtod(v, &end);
  if (n && !*end) {
    s = config_setting_add(group, key, CONFIG_TYPE_FLOAT);
    return s ? config_setting_set_float(s, d) : CONFIG_FALSE;
  }
  s = config_setting_add(group, key, CONFIG_TYPE_STRING);
  if (!s)
    return CONFIG_FALSE;
  if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
    char *inner = g_strndup(v + 1, n - 2);
    int rc = config_setting_set_string(s, inner);
    g_free(inner);
    return rc;
  }
  return config_setting_set_string(s, v);
}

static int apply_settings(config_setting_t *group, const tp_opts_t *o) {
  for (int i = 0; i < o->n_settings; i++) {
    const char *eq = strchr(o->settings[i], '=');
    if (!eq || eq == o->settings[i])
      return cli_usage_error("test-plugin: --config takes KEY=VALUE (got "
                             "'%s')",
                             o->settings[i]);
    char *key = g_strndup(o->settings[i], (gsize)(eq - o->settings[i]));
    int ok = set_value(group, key, eq + 1) == CONFIG_TRUE;
    g_free(key);
    if (!ok)
      return cli_usage_error("test-plugin: --config %s: not a setting name "
                             "libconfig accepts (letters, digits, '_', '-'; "
                             "a letter first)",
                             o->settings[i]);
  }
  return -1;
}

/* ------------------------------------------------------------ records */

/* The event ID as printed: printable ASCII, the rest as '?'. */
static void print_id(const void *id, size_t len) {
  const unsigned char *s = id;
  if (!id) {
    fputs("-", stdout);
    return;
  }
  for (size_t i = 0; i < len && i < 80; i++)
    putchar(s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?');
  if (len > 80)
    fputs("...", stdout);
}

static void print_result(const khost_record_t *rec, const char *what,
                         const char *note) {
  printf("%s [%" PRId32 "] @%" PRId64 " event ", rec->topic, rec->partition,
         rec->offset);
  print_id(rec->event_id, rec->event_id_len);
  printf(": %s", what);
  if (rec->attempt > 1 || strcmp(what, "RETRY") == 0)
    printf(" (attempt %" PRIu32 ")", rec->attempt);
  printf("%s%s\n", note ? ": " : "", note ? note : "");
}

static void record_view(const tp_run_t *run, const trec_t *t,
                        khost_record_t *rec) {
  const void *id = NULL;
  size_t len = 0;
  if (!run->eid_header) {
    id = t->key;
    len = t->key_len;
  } else if (!t->headers ||
             rd_kafka_header_get_last(t->headers, run->eid_header, &id, &len)) {
    id = NULL;
  }
  *rec = (khost_record_t){.struct_size = sizeof(*rec),
                          .topic = t->topic,
                          .partition = t->partition,
                          .offset = t->offset,
                          .timestamp = t->timestamp,
                          .key = t->key,
                          .key_len = t->key_len,
                          .value = t->value,
                          .value_len = t->value_len,
                          .event_id = len ? id : NULL,
                          .event_id_len = len ? len : 0,
                          .host_priv = t->headers};
}

/* One record, with its retries; returns its final result. */
static khost_result_t handle_one(tp_run_t *run, const trec_t *t) {
  khost_record_t rec;
  khost_result_t r;
  record_view(run, t, &rec);
  for (rec.attempt = 1;; rec.attempt++) {
    state_record_drop(run->state); /* a RETRY's writes leave nothing */
    r = plugin_instance_handle(run->inst, &rec);
    if (r != KHOST_RETRY)
      break;
    print_result(&rec, "RETRY", plugin_instance_reason(run->inst));
    run->retried++;
    if (rec.attempt > (uint32_t)run->retries) {
      print_result(&rec, "FAIL", "retries exhausted");
      run->exhausted++;
      return KHOST_FAIL;
    }
  }
  print_result(&rec,
               r == KHOST_OK     ? "OK"
               : r == KHOST_FAIL ? "FAIL"
                                 : "FATAL",
               r == KHOST_FATAL  ? "the plugin is unusable; no record after "
                                   "this one is handled"
               : r == KHOST_FAIL ? plugin_instance_reason(run->inst)
                                 : NULL);
  if (r == KHOST_OK || r == KHOST_FAIL)
    state_record_join(run->state, run->sb);
  run->ok += r == KHOST_OK;
  run->failed += r == KHOST_FAIL;
  run->fatal += r == KHOST_FATAL;
  return r;
}

static int flush_batch(tp_run_t *run, size_t done) {
  char err[1024];
  run->flushes++;
  if (plugin_instance_flush(run->inst, err, sizeof(err)) == 0 &&
      store_batch_commit(run->sb, NULL, err, sizeof(err)) == 0) {
    state_batch_end(run->state, run->sb);
    printf("flush after %zu records: OK\n", done);
    return 0;
  }
  printf("flush after %zu records: FAILED: %s\n", done, err);
  return -1;
}

/* Every partition the records name, in the order they first appear. */
static rd_kafka_topic_partition_list_t *partitions_of(const trec_list_t *l) {
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(4);
  for (size_t i = 0; i < l->n; i++)
    if (!rd_kafka_topic_partition_list_find(parts, l->recs[i].topic,
                                            l->recs[i].partition))
      rd_kafka_topic_partition_list_add(parts, l->recs[i].topic,
                                        l->recs[i].partition);
  return parts;
}

/* Every record in file order, flush() after each batch; the exit status.
 * As a member that is given every partition of the file and then leaves
 * cleanly: assigned() first, revoked() after the last flush (not after a
 * FATAL or a failed flush, which stop the member where it is). */
static int run_records(tp_run_t *run, const trec_list_t *l) {
  size_t i = 0;
  int rc = HOST_EXIT_OK;
  rd_kafka_topic_partition_list_t *parts = partitions_of(l);
  plugin_instance_assigned(run->inst, parts);
  while (i < l->n && rc == HOST_EXIT_OK) {
    if (handle_one(run, &l->recs[i++]) == KHOST_FATAL)
      rc = HOST_EXIT_RUNTIME;
    else if ((i % (size_t)run->batch == 0 || i == l->n) &&
             flush_batch(run, i) != 0)
      rc = HOST_EXIT_RUNTIME;
  }
  printf("%zu of %zu records handled: %" PRIu64 " OK, %" PRIu64
         " FAIL (%" PRIu64 " after retries), %" PRIu64 " FATAL; %" PRIu64
         " RETRY answers; %" PRIu64 " flush%s\n",
         i, l->n, run->ok, run->failed + run->exhausted, run->exhausted,
         run->fatal, run->retried, run->flushes, run->flushes == 1 ? "" : "es");
  if (rc == HOST_EXIT_OK)
    plugin_instance_revoked(run->inst, parts, 0);
  rd_kafka_topic_partition_list_destroy(parts);
  return rc;
}

/* ------------------------------------------------------------ command */

typedef struct tp_ctx {
  tp_opts_t o;
  cfg_t cfg;
  int has_cfg;
  config_t own; /* the plugin's settings when no config file is given */
  const cfg_pipeline_t *pc;
  config_setting_t *group;
  char *path;
} tp_ctx_t;

/* -c FILE -p PIPELINE: that pipeline's plugin, settings and event ID. */
static int use_pipeline(tp_ctx_t *x) {
  int rc = cli_load_config(&x->cfg, x->o.config);
  x->has_cfg = rc == 0;
  for (size_t i = 0; rc == 0 && i < x->cfg.n_pipelines; i++) {
    if (strcmp(x->cfg.pipelines[i].name, x->o.pipeline) != 0)
      continue;
    x->pc = &x->cfg.pipelines[i];
    x->group = x->pc->plugin_config;
    if (!x->group)
      x->group = config_setting_add(
          config_setting_get_elem(config_lookup(&x->cfg.lc, "pipelines"),
                                  (unsigned)i),
          "config", CONFIG_TYPE_GROUP);
  }
  if (rc == 0 && !x->pc) {
    fprintf(stderr, "%s: no pipeline named \"%s\"\n", x->o.config,
            x->o.pipeline);
    rc = HOST_EXIT_CONFIG;
  }
  return rc;
}

static char *plugin_file(const tp_ctx_t *x) {
  const char *name = x->o.plugin ? x->o.plugin : x->pc->plugin;
  const char *env = getenv("KHOST_PLUGIN_DIR");
  const char *dir = x->has_cfg      ? x->cfg.plugin_dir
                    : env && env[0] ? env
                                    : KHOST_PLUGIN_DIR;
  if (!x->o.plugin)
    return g_strdup(x->pc->plugin_path);
  if (strchr(name, '/'))
    return g_strdup(name);
  return g_strdup_printf("%s/%s%s", dir, name,
                         g_str_has_suffix(name, ".so") ? "" : ".so");
}

/* The in-memory store and state of the run; an exit status on failure. */
static int open_state(tp_run_t *run, const char *pipeline) {
  char err[512];
  uint32_t scope;
  run->store = store_mem_new();
  if (store_scope(run->store, pipeline, &scope, err, sizeof(err)) != 0 ||
      store_batch_open(run->store, &run->sb, err, sizeof(err)) != 0) {
    fprintf(stderr, "test-plugin: state: %s\n", err);
    return HOST_EXIT_RUNTIME;
  }
  run->state = state_new(run->store, scope);
  return -1;
}

static void close_state(tp_run_t *run) {
  state_free(run->state);
  if (run->sb)
    store_batch_close(run->sb);
  if (run->store)
    store_close(run->store);
}

/* Load the plugin and create its instance; an exit status on failure. */
static int open_instance(tp_ctx_t *x, plugin_t **plugin, tp_run_t *run) {
  char err[8192];
  plugin_instance_opts_t io = {
      .pipeline = x->pc ? x->pc->name : "test-plugin",
      .config = x->group,
      .config_file = x->has_cfg ? x->cfg.path : "--config",
  };
  int rc = open_state(run, io.pipeline);
  if (rc >= 0)
    return rc;
  io.state = run->state;
  if (plugin_load(plugin, x->path, err, sizeof(err)) != 0 ||
      plugin_start(*plugin, err, sizeof(err)) != 0 ||
      plugin_instance_create(&run->inst, *plugin, &io, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return HOST_EXIT_CONFIG;
  }
  return -1;
}

static int test_plugin(tp_ctx_t *x) {
  char err[8192];
  trec_list_t recs = {0};
  plugin_t *plugin = NULL;
  tp_run_t run = {.eid_header = "eventId",
                  .retries = TP_DEFAULT_RETRIES,
                  .batch = TP_DEFAULT_BATCH};
  int rc = apply_settings(x->group, &x->o);
  if (rc >= 0)
    goto out;
  if (x->pc) {
    run.eid_header =
        x->pc->eid_source == CFG_EID_KEY ? NULL : x->pc->eid_header;
    run.retries = x->pc->retry_max;
    run.batch = x->pc->max_batch;
  }
  if (x->o.retries >= 0)
    run.retries = x->o.retries;
  const char *topic =
      x->pc && x->pc->topics[0][0] != '^' ? x->pc->topics[0] : NULL;
  if (trec_read_file(&recs, x->o.records, topic, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    rc = HOST_EXIT_CONFIG;
    goto out;
  }
  x->path = plugin_file(x);
  rc = open_instance(x, &plugin, &run);
  if (rc < 0)
    rc = run_records(&run, &recs);
out:
  fflush(stdout);
  plugin_instance_destroy(run.inst); /* may read the state: before it goes */
  close_state(&run);
  plugin_unload(plugin);
  trec_list_free(&recs);
  return rc;
}

int cmd_test_plugin(int argc, char **argv) {
  tp_ctx_t x = {.o = {.retries = -1}};
  x.o.settings = g_new0(const char *, (gsize)argc + 1);
  config_init(&x.own);
  int rc = parse(argc, argv, &x.o);
  if (rc < 0 && x.o.pipeline)
    rc = use_pipeline(&x);
  else if (rc < 0)
    x.group = config_setting_add(config_root_setting(&x.own), "config",
                                 CONFIG_TYPE_GROUP);
  if (rc <= 0)
    rc = test_plugin(&x);
  cfg_free(&x.cfg);
  config_destroy(&x.own);
  g_free(x.path);
  g_free(x.o.settings);
  return rc;
}
