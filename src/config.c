/*
 * khost configuration: reads the libconfig file and checks it whole.
 *
 * Every problem is collected (not just the first) so that a user fixes a
 * file in one round: each is one line "FILE:LINE: KEY: message", KEY being
 * the path as written in the file (pipelines[0].retry.max,
 * kafka.bootstrap_servers). A missing key is reported at the line of the
 * group that should hold it.
 */
#include "config.h"
#include "config_hint.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "file_trust.h"
#include "listen_addr.h"
#include "log.h"
#include "topics.h"

#ifndef KHOST_PLUGIN_DIR
#define KHOST_PLUGIN_DIR "/usr/local/lib/khost/plugins"
#endif

#define MS_PER_S INT64_C(1000)
#define MS_PER_DAY (INT64_C(86400) * MS_PER_S)
#define NAME_MAX_LEN 64
#define TOPIC_MAX_LEN 249

typedef struct loader {
  cfg_t *cfg;
  GString *err;             /* problems found so far, one per line */
  rd_kafka_conf_t *scratch; /* only for validating librdkafka properties */
} loader_t;

/* Where settings are looked up, and how their keys are spelled. */
typedef struct scope {
  const config_setting_t *group; /* NULL when the group is absent */
  const char *path;              /* "" at top level, "pipelines[1].retry" */
} scope_t;

static const char *const top_keys[] = {
    "plugin_dir",  "log_level",    "log_format", "shutdown_timeout", "kafka",
    "dedup",       "store",        "mock",       "pipelines",        "http",
    "instance_id", "memory_limit", NULL};
static const char *const http_keys[] = {"listen", NULL};
static const char *const dedup_keys[] = {"path", "retention", "durability",
                                         "memory", NULL};
static const char *const store_keys[] = {"backend", "path",      "conninfo",
                                         "lease",   "retention", "durability",
                                         "memory",  NULL};
static const char *const backend_words[] = {"sqlite", "postgresql", NULL};
static const char *const mock_keys[] = {"brokers",        "partitions",
                                        "sample_records", "sample_duplicates",
                                        "generate",       NULL};
static const char *const generate_keys[] = {"count", "duplicates", "seed",
                                            "users", "coupons",    NULL};
static const char *const pipeline_keys[] = {"name",
                                            "group_id",
                                            "topics",
                                            "members",
                                            "plugin",
                                            "event_id",
                                            "on_missing_id",
                                            "max_batch",
                                            "dedup",
                                            "retry",
                                            "kafka",
                                            "config",
                                            "dead_letter_topic",
                                            "on_fatal",
                                            "handler_timeout",
                                            "commit_interval",
                                            "circuit_breaker",
                                            "concurrency",
                                            "order_by",
                                            NULL};
static const char *const retry_keys[] = {"max", "backoff", "backoff_max", NULL};
static const char *const breaker_keys[] = {"window", "failure_ratio",
                                           "cooldown", NULL};
static const char *const fatal_words[] = {"stop_host", "stop_pipeline", NULL};
static const char *const durability_words[] = {"normal", "full", NULL};
static const char *const missing_words[] = {"process", "fail", NULL};

/* ------------------------------------------------------------ reporting */

static void problem(loader_t *ld, const scope_t *sc, const char *name,
                    const config_setting_t *at, const char *fmt, ...)
    KHOST_PRINTF(5, 6);

/* at is the offending setting; NULL reports at the enclosing group. */
static void problem(loader_t *ld, const scope_t *sc, const char *name,
                    const config_setting_t *at, const char *fmt, ...) {
  const config_setting_t *where = at ? at : sc->group;
  /* The root group has no line of its own: it starts at line 1. */
  unsigned line = where ? config_setting_source_line(where) : 0;
  va_list ap;

  if (ld->err->len > 0)
    g_string_append_c(ld->err, '\n');
  g_string_append_printf(
      ld->err, "%s:%u: %s%s%s: ", cfg_setting_file(where, ld->cfg),
      line ? line : 1, sc->path, sc->path[0] && name[0] ? "." : "", name);
  va_start(ap, fmt);
  g_string_append_vprintf(ld->err, fmt, ap);
  va_end(ap);
}

static const char *type_name(const config_setting_t *s) {
  switch (config_setting_type(s)) {
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64:
    return "an integer";
  case CONFIG_TYPE_FLOAT:
    return "a float";
  case CONFIG_TYPE_STRING:
    return "a string";
  case CONFIG_TYPE_BOOL:
    return "a boolean";
  case CONFIG_TYPE_GROUP:
    return "a group";
  case CONFIG_TYPE_ARRAY:
    return "an array";
  case CONFIG_TYPE_LIST:
    return "a list";
  default:
    return "an unknown type";
  }
}

/* "a, b or c" */
static char *words_text(const char *const words[]) {
  GString *s = g_string_new(NULL);

  for (size_t i = 0; words[i]; i++) {
    if (i > 0)
      g_string_append(s, words[i + 1] ? ", " : " or ");
    g_string_append(s, words[i]);
  }
  return g_string_free(s, FALSE);
}

/* A duration in its largest exact unit: 1000 -> "1s". */
static void duration_text(int64_t ms, char *buf, size_t len) {
  static const struct {
    int64_t ms;
    const char *unit;
  } units[] = {{MS_PER_DAY, "d"},
               {3600 * MS_PER_S, "h"},
               {60 * MS_PER_S, "m"},
               {MS_PER_S, "s"}};

  for (size_t i = 0; i < G_N_ELEMENTS(units); i++) {
    if (ms != 0 && ms % units[i].ms == 0) {
      snprintf(buf, len, "%lld%s", (long long)(ms / units[i].ms),
               units[i].unit);
      return;
    }
  }
  snprintf(buf, len, "%lldms", (long long)ms);
}

/* ------------------------------------------------------- typed settings */

static void check_keys(loader_t *ld, const scope_t *sc,
                       const char *const known[]) {
  int n = sc->group ? config_setting_length(sc->group) : 0;
  char *list = NULL;

  for (int i = 0; i < n; i++) {
    const config_setting_t *s = config_setting_get_elem(sc->group, i);
    const char *name = config_setting_name(s);
    size_t k = 0;

    while (known[k] && strcmp(known[k], name) != 0)
      k++;
    if (known[k])
      continue;
    if (!list)
      list = words_text(known);
    problem(ld, sc, name, s, "unknown setting (known: %s)", list);
  }
  g_free(list);
}

/* Returns the setting when present and of one of the types of mask (bits
 * 1 << CONFIG_TYPE_*), else NULL; a wrong type is reported as not `want`. */
static config_setting_t *lookup_typed(loader_t *ld, const scope_t *sc,
                                      const char *name, unsigned mask,
                                      const char *want) {
  config_setting_t *s = NULL;

  if (!sc->group)
    goto out;
  s = config_setting_get_member(sc->group, name);
  if (s && !(mask & (1u << config_setting_type(s)))) {
    problem(ld, sc, name, s, "must be %s (got %s)", want, type_name(s));
    s = NULL;
  }
out:
  return s;
}

#define INT_MASK ((1u << CONFIG_TYPE_INT) | (1u << CONFIG_TYPE_INT64))

static config_setting_t *get_group(loader_t *ld, const scope_t *sc,
                                   const char *name) {
  return lookup_typed(ld, sc, name, 1u << CONFIG_TYPE_GROUP, "a group { ... }");
}

/* A non-empty string into *out (borrowed from the tree); 0 when absent or
 * wrong, reporting "required" when required is set. */
static int get_string(loader_t *ld, const scope_t *sc, const char *name,
                      int required, const char **out) {
  config_setting_t *s =
      lookup_typed(ld, sc, name, 1u << CONFIG_TYPE_STRING, "a string");
  const char *v = s ? config_setting_get_string(s) : NULL;
  int ok = 0;

  if (!s) {
    if (required && sc->group && !config_setting_get_member(sc->group, name))
      problem(ld, sc, name, NULL, "required");
    goto out;
  }
  if (v[0] == '\0') {
    problem(ld, sc, name, s, "must not be empty");
    goto out;
  }
  *out = v;
  ok = 1;
out:
  return ok;
}

/* The typed getters below set *out only to a valid value, and return 0
 * when the setting is present but wrong (reported), else 1. */
static int get_int(loader_t *ld, const scope_t *sc, const char *name, int min,
                   int max, int *out) {
  config_setting_t *s = lookup_typed(ld, sc, name, INT_MASK, "an integer");
  long long v;

  if (!s)
    return !(sc->group && config_setting_get_member(sc->group, name));
  v = config_setting_get_int64(s);
  if (v < min || v > max) {
    problem(ld, sc, name, s, "must be between %d and %d (got %lld)", min, max,
            v);
    return 0;
  }
  *out = (int)v;
  return 1;
}

static void get_bool(loader_t *ld, const scope_t *sc, const char *name,
                     int *out) {
  config_setting_t *s = lookup_typed(ld, sc, name, 1u << CONFIG_TYPE_BOOL,
                                     "a boolean (true or false)");
  if (s)
    *out = config_setting_get_bool(s);
}

/* One of words; *out becomes its index. */
static void get_word(loader_t *ld, const scope_t *sc, const char *name,
                     const char *const words[], int *out) {
  const char *v = NULL;
  char *list = NULL;

  if (!get_string(ld, sc, name, 0, &v))
    goto out;
  for (int i = 0; words[i]; i++) {
    if (strcmp(words[i], v) == 0) {
      *out = i;
      goto out;
    }
  }
  list = words_text(words);
  problem(ld, sc, name, config_setting_get_member(sc->group, name),
          "must be %s (got \"%s\")", list, v);
out:
  g_free(list);
}

/* A duration between min_ms and max_ms (INT64_MAX: no bound), written as
 * "250ms".."7d" or as an integer number of seconds. */
static int get_duration(loader_t *ld, const scope_t *sc, const char *name,
                        int64_t min_ms, int64_t max_ms, int64_t *out) {
  config_setting_t *s =
      lookup_typed(ld, sc, name, INT_MASK | (1u << CONFIG_TYPE_STRING),
                   "a duration such as \"30s\"");
  char got[64], lo[32], hi[32];
  int64_t ms = -1;
  int ok = 0;

  if (!s) {
    ok = !(sc->group && config_setting_get_member(sc->group, name));
    goto out;
  }
  if (config_setting_type(s) == CONFIG_TYPE_STRING) {
    snprintf(got, sizeof(got), "\"%s\"", config_setting_get_string(s));
    if (cfg_parse_duration(config_setting_get_string(s), &ms) < 0) {
      problem(ld, sc, name, s,
              "must be a duration: a number with ms, s, m, h or d, or an "
              "integer of seconds (got %s)",
              got);
      goto out;
    }
  } else {
    long long secs = config_setting_get_int64(s);
    snprintf(got, sizeof(got), "%lld", secs);
    ms = secs >= 0 && secs <= INT64_MAX / MS_PER_S ? secs * MS_PER_S : -1;
  }
  if (ms < min_ms || ms > max_ms) {
    duration_text(min_ms, lo, sizeof(lo));
    duration_text(max_ms, hi, sizeof(hi));
    if (max_ms == INT64_MAX)
      problem(ld, sc, name, s, "must be at least %s (got %s)", lo, got);
    else
      problem(ld, sc, name, s, "must be between %s and %s (got %s)", lo, hi,
              got);
    goto out;
  }
  *out = ms;
  ok = 1;
out:
  return ok;
}

/* Durations kept in an int of milliseconds. */
#define INT_MS_MAX ((int64_t)(INT_MAX / MS_PER_DAY) * MS_PER_DAY)

static int get_duration_int(loader_t *ld, const scope_t *sc, const char *name,
                            int64_t min_ms, int *out) {
  int64_t ms = *out;
  int ok = get_duration(ld, sc, name, min_ms, INT_MS_MAX, &ms);

  *out = (int)ms;
  return ok;
}

/* A size of at least min bytes, written as "512M", "1G" (powers of 1024)
 * or as an integer number of bytes. */
static void get_size(loader_t *ld, const scope_t *sc, const char *name,
                     int64_t min, int64_t *out) {
  config_setting_t *s =
      lookup_typed(ld, sc, name, INT_MASK | (1u << CONFIG_TYPE_STRING),
                   "a size such as \"1G\"");
  int64_t v = -1;

  if (!s)
    return;
  if (config_setting_type(s) == CONFIG_TYPE_STRING) {
    if (cfg_parse_size(config_setting_get_string(s), &v) < 0) {
      problem(ld, sc, name, s,
              "must be a size such as \"512M\" or \"2G\" (K, M, G, T; "
              "got \"%s\")",
              config_setting_get_string(s));
      return;
    }
  } else {
    v = config_setting_get_int64(s);
  }
  if (v < min) {
    problem(ld, sc, name, s, "must be at least %lldM (got %lld bytes)",
            (long long)(min >> 20), (long long)v);
    return;
  }
  *out = v;
}

/* ------------------------------------------------------------ kafka */

/* The text librdkafka gets for a scalar setting; NULL for aggregates. */
static char *prop_value(const config_setting_t *s) {
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  switch (config_setting_type(s)) {
  case CONFIG_TYPE_STRING:
    return g_strdup(config_setting_get_string(s));
  case CONFIG_TYPE_INT:
  case CONFIG_TYPE_INT64:
    return g_strdup_printf("%lld", config_setting_get_int64(s));
  case CONFIG_TYPE_FLOAT:
    return g_strdup(
        g_ascii_formatd(buf, sizeof(buf), "%g", config_setting_get_float(s)));
  case CONFIG_TYPE_BOOL:
    return g_strdup(config_setting_get_bool(s) ? "true" : "false");
  default:
    return NULL;
  }
}

/* Why khost refuses a property it sets itself; NULL when the user may. */
static const char *owned_reason(const char *name) {
  if (strcmp(name, "group.id") == 0)
    return "set by khost: use the pipeline's group_id";
  if (strcmp(name, "enable.auto.commit") == 0 ||
      strcmp(name, "enable.auto.offset.store") == 0)
    return "set by khost: khost commits offsets itself, only once a "
           "record's outcome is durable";
  return NULL;
}

/* Validates one property; 0 and *prop filled when librdkafka accepts it. */
static int load_prop(loader_t *ld, const scope_t *sc, config_setting_t *s,
                     cfg_prop_t *prop) {
  const char *written = config_setting_name(s);
  char *name = g_strdelimit(g_strdup(written), "_", '.');
  char *value = prop_value(s);
  char errstr[512];
  rd_kafka_conf_res_t res;
  int rc = -1;

  if (!value) {
    problem(ld, sc, written, s, "must be a string, number or boolean (got %s)",
            type_name(s));
    goto out;
  }
  if (owned_reason(name)) {
    problem(ld, sc, written, s, "%s", owned_reason(name));
    goto out;
  }
  res = rd_kafka_conf_set(ld->scratch, name, value, errstr, sizeof(errstr));
  if (res != RD_KAFKA_CONF_OK) {
    g_strchomp(errstr); /* some of its messages end in a newline */
    /* librdkafka may quote the value: keep secrets out of the message. */
    if (res == RD_KAFKA_CONF_INVALID && log_is_secret_property(name))
      problem(ld, sc, written, s, "invalid value (not shown: a secret)");
    else if (res == RD_KAFKA_CONF_INVALID && !strstr(errstr, value))
      problem(ld, sc, written, s, "%s (got \"%s\")", errstr, value);
    else
      problem(ld, sc, written, s, "%s", errstr);
    goto out;
  }
  prop->name = g_steal_pointer(&name);
  prop->value = g_steal_pointer(&value);
  prop->line = (int)config_setting_source_line(s);
  rc = 0;
out:
  g_free(name);
  g_free(value);
  return rc;
}

/* The `kafka` group of parent, if any, into *props. */
static void load_kafka(loader_t *ld, const scope_t *parent, cfg_prop_t **props,
                       size_t *n) {
  char path[64];
  scope_t sc = {get_group(ld, parent, "kafka"), path};
  int len = sc.group ? config_setting_length(sc.group) : 0;

  snprintf(path, sizeof(path), "%s%skafka", parent->path,
           parent->path[0] ? "." : "");
  *props = len > 0 ? g_new0(cfg_prop_t, len) : NULL;
  for (int i = 0; i < len; i++) {
    config_setting_t *s = config_setting_get_elem(sc.group, i);
    if (load_prop(ld, &sc, s, &(*props)[*n]) == 0)
      (*n)++;
  }
}

/* bootstrap.servers: globally, or in every pipeline, unless mocked. */
static void check_bootstrap(loader_t *ld, const scope_t *top) {
  cfg_t *cfg = ld->cfg;
  const char *key = "bootstrap.servers";
  size_t missing = 0;

  if (cfg->mock_brokers > 0 || cfg_prop_find(cfg->kafka, cfg->n_kafka, key) ||
      cfg->n_pipelines == 0)
    return;
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    missing +=
        !cfg_prop_find(cfg->pipelines[i].kafka, cfg->pipelines[i].n_kafka, key);
  if (missing == cfg->n_pipelines) {
    scope_t sc = {config_setting_get_member(top->group, "kafka"), "kafka"};
    if (!sc.group)
      sc.group = top->group;
    problem(ld, &sc, "bootstrap_servers", NULL,
            "required (or a mock group for the in-process mock cluster)");
    return;
  }
  for (size_t i = 0; i < cfg->n_pipelines; i++) {
    const cfg_pipeline_t *p = &cfg->pipelines[i];
    config_setting_t *s = config_setting_get_elem(
        config_setting_get_member(top->group, "pipelines"), (unsigned)i);
    char path[48];
    scope_t sc = {config_setting_get_member(s, "kafka"), path};

    if (config_setting_type(s) != CONFIG_TYPE_GROUP ||
        cfg_prop_find(p->kafka, p->n_kafka, key))
      continue;
    if (!sc.group)
      sc.group = s;
    snprintf(path, sizeof(path), "pipelines[%zu].kafka", i);
    problem(ld, &sc, "bootstrap_servers", NULL,
            "required: there is no global kafka.bootstrap_servers");
  }
}

/* ------------------------------------------------------------- groups */

static void load_top_scalars(loader_t *ld, const scope_t *top) {
  cfg_t *cfg = ld->cfg;
  const char *v = NULL;

  if (get_string(ld, top, "plugin_dir", 0, &v)) {
    g_free(cfg->plugin_dir);
    cfg->plugin_dir = g_strdup(v);
  }
  if (get_string(ld, top, "log_level", 0, &v)) {
    int level = log_level_parse(v);
    if (level < 0)
      problem(ld, top, "log_level",
              config_setting_get_member(top->group, "log_level"),
              "must be err, warning, notice, info or debug (got \"%s\")", v);
    else
      cfg->log_level = level;
  }
  if (get_string(ld, top, "log_format", 0, &v)) {
    int json = log_format_parse(v);
    if (json < 0)
      problem(ld, top, "log_format",
              config_setting_get_member(top->group, "log_format"),
              "must be text or json (got \"%s\")", v);
    else
      cfg->log_json = json;
  }
  get_duration_int(ld, top, "shutdown_timeout", 1, &cfg->shutdown_timeout_ms);
  get_size(ld, top, "memory_limit", CFG_MEMORY_LIMIT_MIN, &cfg->memory_limit);
}

/* What dedup = { ... } and store = { ... } share. */
static void load_store_file(loader_t *ld, const scope_t *sc) {
  cfg_t *cfg = ld->cfg;
  const char *path = NULL;
  int durability = (int)cfg->durability;

  if (get_string(ld, sc, "path", 0, &path)) {
    g_free(cfg->dedup_path);
    cfg->dedup_path = g_strdup(path);
  }
  get_duration(ld, sc, "retention", MS_PER_S, INT64_MAX, &cfg->retention_ms);
  get_word(ld, sc, "durability", durability_words, &durability);
  cfg->durability = (cfg_durab_t)durability;
  int64_t memory = (int64_t)cfg->dedup_memory;
  get_size(ld, sc, "memory", (int64_t)CFG_DEDUP_MEMORY_MIN, &memory);
  cfg->dedup_memory = (uint64_t)memory;
}

static void load_dedup(loader_t *ld, const scope_t *top) {
  scope_t sc = {get_group(ld, top, "dedup"), "dedup"};

  check_keys(ld, &sc, dedup_keys);
  load_store_file(ld, &sc);
}

/* store.conninfo: parsed as libpq would. libpq's own message is not
 * repeated: it may quote the string, password included. */
static void check_conninfo(loader_t *ld, const scope_t *sc, const char *ci) {
  char *perr = NULL;
  PQconninfoOption *o = PQconninfoParse(ci, &perr);

  if (!o)
    problem(ld, sc, "conninfo",
            config_setting_get_member(sc->group, "conninfo"),
            "not a libpq connection string (key=value pairs or a "
            "postgresql:// URI)");
  PQconninfoFree(o);
  PQfreemem(perr);
}

/* Settings of one backend given to the other. */
static void check_backend_keys(loader_t *ld, const scope_t *sc, int backend) {
  static const char *const sqlite_only[] = {"path", "durability", "memory",
                                            NULL};
  static const char *const pg_only[] = {"conninfo", "lease", NULL};
  const char *const *wrong =
      backend == CFG_STORE_SQLITE ? pg_only : sqlite_only;

  for (size_t i = 0; wrong[i]; i++) {
    config_setting_t *s = config_setting_get_member(sc->group, wrong[i]);
    if (s)
      problem(ld, sc, wrong[i], s, "not a setting of backend = \"%s\"",
              backend_words[backend]);
  }
}

/* store = { backend = "sqlite" | "postgresql"; ... }: dedup = { ... }
 * is the older spelling of the SQLite one. */
static void load_store(loader_t *ld, const scope_t *top) {
  cfg_t *cfg = ld->cfg;
  scope_t sc = {get_group(ld, top, "store"), "store"};
  const char *conninfo = NULL;
  int backend = CFG_STORE_SQLITE;

  if (!sc.group)
    return;
  if (config_setting_get_member(top->group, "dedup"))
    problem(ld, &sc, "", sc.group,
            "store = { ... } and dedup = { ... } both given: keep one");
  check_keys(ld, &sc, store_keys);
  get_word(ld, &sc, "backend", backend_words, &backend);
  cfg->store_backend = (cfg_store_t)backend;
  check_backend_keys(ld, &sc, backend);
  load_store_file(ld, &sc);
  get_duration(ld, &sc, "lease", MS_PER_S, 3600 * MS_PER_S,
               &cfg->store_lease_ms);
  if (backend != CFG_STORE_POSTGRESQL)
    return;
  if (!get_string(ld, &sc, "conninfo", 1, &conninfo))
    return;
  check_conninfo(ld, &sc, conninfo);
  cfg->store_conninfo = g_strdup(conninfo);
}

static void get_ratio(loader_t *ld, const scope_t *sc, const char *name,
                      double min, double max, double *out);

/* mock.generate: the event generator fills the document's topics. */
static void load_mock_generate(loader_t *ld, const scope_t *mock) {
  cfg_t *cfg = ld->cfg;
  scope_t sc = {get_group(ld, mock, "generate"), "mock.generate"};
  int seed = 0;

  if (!sc.group)
    return;
  cfg->mock_gen.enabled = 1;
  check_keys(ld, &sc, generate_keys);
  get_int(ld, &sc, "count", 1, 10000000, &cfg->mock_gen.count);
  get_ratio(ld, &sc, "duplicates", 0, 1, &cfg->mock_gen.duplicates);
  if (get_int(ld, &sc, "seed", 0, INT_MAX, &seed) &&
      config_setting_get_member(sc.group, "seed")) {
    cfg->mock_gen.seed_set = 1;
    cfg->mock_gen.seed = (uint32_t)seed;
  }
  get_int(ld, &sc, "users", 1, 1000000, &cfg->mock_gen.users);
  get_int(ld, &sc, "coupons", 1, 1000000, &cfg->mock_gen.coupons);
  /* Both would fill the same topics: which events a run sees must be
   * plain from the file. */
  if (cfg->mock_sample_records > 0)
    problem(ld, mock, "generate", sc.group,
            "cannot be combined with sample_records (both fill the "
            "topics)");
}

static void load_mock(loader_t *ld, const scope_t *top) {
  cfg_t *cfg = ld->cfg;
  scope_t sc = {get_group(ld, top, "mock"), "mock"};

  if (!sc.group)
    return;
  check_keys(ld, &sc, mock_keys);
  cfg->mock_brokers = 3;
  get_int(ld, &sc, "brokers", 1, 9, &cfg->mock_brokers);
  get_int(ld, &sc, "partitions", 1, 256, &cfg->mock_partitions);
  /* The bound of sample_duplicates is sample_records: check it only when
   * that one is valid. */
  if (get_int(ld, &sc, "sample_records", 0, 10000000,
              &cfg->mock_sample_records))
    get_int(ld, &sc, "sample_duplicates", 0, cfg->mock_sample_records,
            &cfg->mock_sample_duplicates);
  load_mock_generate(ld, &sc);
}

static int valid_chars(const char *s, size_t max_len);

/* http.listen: "" turns the listener off; otherwise HOST:PORT. */
static void load_http(loader_t *ld, const scope_t *top) {
  cfg_t *cfg = ld->cfg;
  scope_t sc = {get_group(ld, top, "http"), "http"};
  config_setting_t *s;
  char host[256], why[256];
  int port;

  check_keys(ld, &sc, http_keys);
  s = lookup_typed(ld, &sc, "listen", 1u << CONFIG_TYPE_STRING, "a string");
  if (!s)
    return;
  const char *v = config_setting_get_string(s);
  if (v[0] &&
      listen_addr_parse(v, host, sizeof(host), &port, why, sizeof(why)) != 0) {
    problem(ld, &sc, "listen", s, "%s", why);
    return;
  }
  g_free(cfg->http_listen);
  cfg->http_listen = g_strdup(v);
}

/* instance_id: static group membership, one group.instance.id per member
 * derived from it (cfg_member_instance_id()). */
static void load_instance_id(loader_t *ld, const scope_t *top) {
  const char *v = NULL;

  if (!get_string(ld, top, "instance_id", 0, &v))
    return;
  if (!valid_chars(v, NAME_MAX_LEN)) {
    problem(ld, top, "instance_id",
            config_setting_get_member(top->group, "instance_id"),
            "must be 1..%d characters of A-Z a-z 0-9 . _ - (got \"%s\")",
            NAME_MAX_LEN, v);
    return;
  }
  ld->cfg->instance_id = g_strdup(v);
}

/* With instance_id, khost gives each member its own group.instance.id: a
 * user's own one would be shared by every member of every pipeline, and
 * members sharing one fence each other out of the group. */
static void check_instance_id(loader_t *ld, const scope_t *top) {
  const cfg_t *cfg = ld->cfg;
  const char *key = "group.instance.id";
  const cfg_prop_t *p = cfg_prop_find(cfg->kafka, cfg->n_kafka, key);

  if (!cfg->instance_id)
    return;
  for (size_t i = 0; !p && i < cfg->n_pipelines; i++)
    p = cfg_prop_find(cfg->pipelines[i].kafka, cfg->pipelines[i].n_kafka, key);
  if (p)
    problem(ld, top, "instance_id",
            config_setting_get_member(top->group, "instance_id"),
            "cannot be combined with kafka group_instance_id (line %d): "
            "instance_id gives each member its own group.instance.id "
            "(%s-PIPELINE-MEMBER); remove one of them",
            p->line, cfg->instance_id);
}

/* ---------------------------------------------------------- pipelines */

static int valid_chars(const char *s, size_t max_len) {
  size_t len = strlen(s);

  return len > 0 && len <= max_len &&
         strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-") == len;
}

/* A topic name Kafka accepts, or a "^regex" subscription. */
static int valid_topic(const char *t) {
  return t[0] == '^' || valid_chars(t, TOPIC_MAX_LEN);
}

static void load_topics(loader_t *ld, const scope_t *sc, cfg_pipeline_t *p) {
  config_setting_t *list = lookup_typed(
      ld, sc, "topics", (1u << CONFIG_TYPE_ARRAY) | (1u << CONFIG_TYPE_LIST),
      "a list of topic names [ \"a\", \"b\" ]");
  int n = list ? config_setting_length(list) : 0;

  if (!list) {
    if (!config_setting_get_member(sc->group, "topics"))
      problem(ld, sc, "topics", NULL, "required");
    return;
  }
  if (n == 0)
    problem(ld, sc, "topics", list, "must list at least one topic");
  p->topics = g_new0(char *, n + 1);
  for (int i = 0; i < n; i++) {
    config_setting_t *s = config_setting_get_elem(list, i);
    const char *t = config_setting_get_string(s);
    char key[32], why[512];

    snprintf(key, sizeof(key), "topics[%d]", i);
    if (!t || !valid_topic(t)) {
      problem(ld, sc, key, s,
              "must be a topic name of [A-Za-z0-9._-], at most %d "
              "characters, or a ^regex (got %s%s%s)",
              TOPIC_MAX_LEN, t ? "\"" : "", t ? t : type_name(s),
              t ? "\"" : "");
      continue;
    }
    if (t[0] == '^' && topics_check_pattern(t, why, sizeof(why)) != 0)
      problem(ld, sc, key, s, "%s", why);
    for (size_t j = 0; j < p->n_topics; j++)
      if (strcmp(p->topics[j], t) == 0)
        problem(ld, sc, key, s, "duplicate topic \"%s\"", t);
    p->topics[p->n_topics++] = g_strdup(t);
  }
}

static void load_event_id(loader_t *ld, const scope_t *sc, cfg_pipeline_t *p) {
  const char *v = NULL;

  if (!get_string(ld, sc, "event_id", 0, &v))
    return;
  if (strcmp(v, "key") == 0) {
    p->eid_source = CFG_EID_KEY;
    g_clear_pointer(&p->eid_header, g_free);
  } else if (g_str_has_prefix(v, "header:") && v[strlen("header:")]) {
    p->eid_source = CFG_EID_HEADER;
    g_free(p->eid_header);
    p->eid_header = g_strdup(v + strlen("header:"));
  } else {
    problem(ld, sc, "event_id",
            config_setting_get_member(sc->group, "event_id"),
            "must be \"key\" or \"header:<name>\" (got \"%s\")", v);
  }
}

static void load_order_by(loader_t *ld, const scope_t *sc, cfg_pipeline_t *p) {
  static const char *const words[] = {"key", "", "event_id", "partition",
                                      "none"};
  const char *v = NULL;

  if (!get_string(ld, sc, "order_by", 0, &v))
    return;
  if (g_str_has_prefix(v, "header:") && v[strlen("header:")]) {
    p->order_by = CFG_ORDER_HEADER;
    p->order_header = g_strdup(v + strlen("header:"));
    return;
  }
  for (size_t i = 0; i < G_N_ELEMENTS(words); i++) {
    if (words[i][0] && strcmp(v, words[i]) == 0) {
      p->order_by = (cfg_order_t)i;
      return;
    }
  }
  problem(ld, sc, "order_by", config_setting_get_member(sc->group, "order_by"),
          "must be \"key\", \"header:<name>\", \"event_id\", \"partition\" "
          "or \"none\" (got \"%s\")",
          v);
}

static void load_retry(loader_t *ld, const scope_t *parent, cfg_pipeline_t *p) {
  char path[48];
  scope_t sc = {get_group(ld, parent, "retry"), path};

  snprintf(path, sizeof(path), "%s.retry", parent->path);
  check_keys(ld, &sc, retry_keys);
  get_int(ld, &sc, "max", 0, 1000, &p->retry_max);
  /* backoff bounds backoff_max: check that one only when backoff is valid.
   * A backoff above the default cap raises the cap with it. */
  if (!get_duration_int(ld, &sc, "backoff", 1, &p->retry_backoff_ms))
    return;
  if (p->retry_backoff_max_ms < p->retry_backoff_ms)
    p->retry_backoff_max_ms = p->retry_backoff_ms;
  get_duration_int(ld, &sc, "backoff_max", p->retry_backoff_ms,
                   &p->retry_backoff_max_ms);
}

/* A value with a '/' is a path; else a name in plugin_dir ("x" or
 * "x.so"). Existence is the loader's to report. */
/* A float (or integer) setting in [min, max]. */
static void get_ratio(loader_t *ld, const scope_t *sc, const char *name,
                      double min, double max, double *out) {
  config_setting_t *s = lookup_typed(
      ld, sc, name, INT_MASK | (1u << CONFIG_TYPE_FLOAT), "a number");
  if (!s)
    return;
  double v = config_setting_type(s) == CONFIG_TYPE_FLOAT
                 ? config_setting_get_float(s)
                 : (double)config_setting_get_int64(s);
  if (v < min || v > max)
    problem(ld, sc, name, s, "must be between %g and %g (got %g)", min, max, v);
  else
    *out = v;
}

static void load_breaker(loader_t *ld, const scope_t *parent,
                         cfg_pipeline_t *p) {
  char path[48];
  scope_t sc = {get_group(ld, parent, "circuit_breaker"), path};

  snprintf(path, sizeof(path), "%s.circuit_breaker", parent->path);
  if (!sc.group)
    return;
  /* Present means on: a window of the last 1000 outcomes by default. */
  p->breaker_window = 1000;
  check_keys(ld, &sc, breaker_keys);
  get_int(ld, &sc, "window", 10, 1000000, &p->breaker_window);
  get_ratio(ld, &sc, "failure_ratio", 0.01, 1.0, &p->breaker_ratio);
  get_duration_int(ld, &sc, "cooldown", 1, &p->breaker_cooldown_ms);
}

static void resolve_plugin(cfg_t *cfg, cfg_pipeline_t *p, const char *v) {
  p->plugin = g_strdup(v);
  if (strchr(v, '/'))
    p->plugin_path = g_strdup(v);
  else
    p->plugin_path = g_strdup_printf("%s/%s%s", cfg->plugin_dir, v,
                                     g_str_has_suffix(v, ".so") ? "" : ".so");
}

static void load_pipeline_strings(loader_t *ld, const scope_t *sc,
                                  cfg_pipeline_t *p) {
  const char *v = NULL;

  if (get_string(ld, sc, "name", 1, &v)) {
    if (!valid_chars(v, NAME_MAX_LEN))
      problem(ld, sc, "name", config_setting_get_member(sc->group, "name"),
              "must be at most %d characters of [A-Za-z0-9._-] (got \"%s\")",
              NAME_MAX_LEN, v);
    else
      p->name = g_strdup(v);
  }
  if (get_string(ld, sc, "group_id", 1, &v))
    p->group_id = g_strdup(v);
  if (get_string(ld, sc, "plugin", 1, &v)) {
    resolve_plugin(ld->cfg, p, v);
    p->plugin_line = (int)config_setting_source_line(
        config_setting_get_member(sc->group, "plugin"));
  }
}

/* After the topics: a dead-letter topic the pipeline reads would feed its
 * failures back to it forever. */
static void load_dead_letter(loader_t *ld, const scope_t *sc,
                             cfg_pipeline_t *p) {
  const char *name = "dead_letter_topic", *v = NULL;
  config_setting_t *s = NULL;

  if (!get_string(ld, sc, name, 0, &v))
    return;
  s = config_setting_get_member(sc->group, name);
  if (!valid_chars(v, TOPIC_MAX_LEN)) {
    problem(ld, sc, name, s,
            "must be a topic name of [A-Za-z0-9._-] (got \"%s\")", v);
    return;
  }
  for (size_t i = 0; i < p->n_topics; i++) {
    if (strcmp(p->topics[i], v) == 0) {
      problem(ld, sc, name, s, "\"%s\" is also one of the pipeline's topics",
              v);
      return;
    }
  }
  p->dead_letter_topic = g_strdup(v);
}

static void load_pipeline(loader_t *ld, config_setting_t *s, size_t i,
                          cfg_pipeline_t *p) {
  char path[32];
  scope_t sc = {s, path};
  int missing = (int)p->on_missing_id;

  snprintf(path, sizeof(path), "pipelines[%zu]", i);
  p->line = (int)config_setting_source_line(s);
  p->members = 1;
  p->max_batch = 500;
  p->dedup = 1;
  p->eid_source = CFG_EID_HEADER;
  p->eid_header = g_strdup("eventId");
  p->retry_max = CFG_DEFAULT_RETRY_MAX;
  p->retry_backoff_ms = CFG_DEFAULT_RETRY_BACKOFF_MS;
  p->retry_backoff_max_ms = CFG_DEFAULT_RETRY_BACKOFF_MAX_MS;
  p->handler_timeout_ms = 60000;
  p->breaker_ratio = 0.5;
  p->breaker_cooldown_ms = 30000;
  check_keys(ld, &sc, pipeline_keys);
  load_pipeline_strings(ld, &sc, p);
  load_topics(ld, &sc, p);
  load_dead_letter(ld, &sc, p);
  get_int(ld, &sc, "members", 1, 256, &p->members);
  get_int(ld, &sc, "max_batch", 1, 100000, &p->max_batch);
  p->concurrency = 1;
  get_int(ld, &sc, "concurrency", 1, 4096, &p->concurrency);
  load_order_by(ld, &sc, p);
  get_bool(ld, &sc, "dedup", &p->dedup);
  load_event_id(ld, &sc, p);
  get_word(ld, &sc, "on_missing_id", missing_words, &missing);
  p->on_missing_id = (cfg_missing_t)missing;
  load_retry(ld, &sc, p);
  load_breaker(ld, &sc, p);
  int fatal = (int)p->on_fatal;
  get_word(ld, &sc, "on_fatal", fatal_words, &fatal);
  p->on_fatal = (cfg_fatal_t)fatal;
  get_duration_int(ld, &sc, "handler_timeout", 0, &p->handler_timeout_ms);
  p->commit_interval_ms = CFG_DEFAULT_COMMIT_INTERVAL_MS;
  get_duration_int(ld, &sc, "commit_interval", 0, &p->commit_interval_ms);
  load_kafka(ld, &sc, &p->kafka, &p->n_kafka);
  p->plugin_config = get_group(ld, &sc, "config");
}

/* Names identify pipelines (logs, dedup scope); two pipelines in one
 * consumer group would split its partitions between them. */
static void check_unique(loader_t *ld, config_setting_t *list) {
  const cfg_t *cfg = ld->cfg;

  for (size_t i = 0; i < cfg->n_pipelines; i++) {
    const cfg_pipeline_t *p = &cfg->pipelines[i];
    config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
    char path[32];
    scope_t sc = {s, path};

    snprintf(path, sizeof(path), "pipelines[%zu]", i);
    for (size_t j = 0; j < i; j++) {
      const cfg_pipeline_t *q = &cfg->pipelines[j];
      if (p->name && q->name && strcmp(p->name, q->name) == 0)
        problem(ld, &sc, "name", config_setting_get_member(s, "name"),
                "\"%s\" is already the name of pipelines[%zu] (line %d)",
                p->name, j, q->line);
      if (p->group_id && q->group_id && strcmp(p->group_id, q->group_id) == 0)
        problem(ld, &sc, "group_id", config_setting_get_member(s, "group_id"),
                "\"%s\" is already the group of pipelines[%zu] (line %d): "
                "they would split its partitions",
                p->group_id, j, q->line);
    }
  }
}

static void load_pipelines(loader_t *ld, const scope_t *top) {
  config_setting_t *list =
      lookup_typed(ld, top, "pipelines", 1u << CONFIG_TYPE_LIST,
                   "a list of groups: pipelines = ( { ... } )");
  size_t n = list ? (size_t)config_setting_length(list) : 0;

  if (!list) {
    if (!config_setting_get_member(top->group, "pipelines"))
      problem(ld, top, "pipelines", NULL, "required: at least one pipeline");
    return;
  }
  if (n == 0) {
    problem(ld, top, "pipelines", list, "must hold at least one pipeline");
    return;
  }
  ld->cfg->pipelines = g_new0(cfg_pipeline_t, n);
  ld->cfg->n_pipelines = n;
  for (size_t i = 0; i < n; i++) {
    config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
    char key[32];

    if (config_setting_type(s) == CONFIG_TYPE_GROUP) {
      load_pipeline(ld, s, i, &ld->cfg->pipelines[i]);
      continue;
    }
    snprintf(key, sizeof(key), "pipelines[%zu]", i);
    problem(ld, &(scope_t){top->group, ""}, key, s,
            "must be a group { ... } (got %s)", type_name(s));
  }
  check_unique(ld, list);
}

/* ------------------------------------------------------------ loading */

static void set_defaults(cfg_t *cfg, const char *path) {
  const char *dir = getenv("KHOST_PLUGIN_DIR"), *addr;

  cfg->path = g_strdup(path);
  cfg->plugin_dir = g_strdup(dir && dir[0] ? dir : KHOST_PLUGIN_DIR);
  cfg->log_level = KHOST_LOG_INFO;
  cfg->shutdown_timeout_ms = 30000;
  cfg->memory_limit = CFG_MEMORY_LIMIT;
  cfg->dedup_path = g_strdup("khost-dedup.db");
  cfg->store_lease_ms = 20 * MS_PER_S;
  /* The test suite sets port 0 here, so that hosts started side by side
   * do not compete for one port. */
  addr = getenv("KHOST_HTTP_LISTEN");
  cfg->http_listen = g_strdup(addr ? addr : CFG_HTTP_LISTEN);
  cfg->retention_ms = 7 * MS_PER_DAY;
  cfg->durability = CFG_DURABILITY_NORMAL;
  cfg->dedup_memory = CFG_DEDUP_MEMORY_DEFAULT;
  cfg->mock_partitions = 3;
  cfg->mock_gen.count = 1000;
  cfg->mock_gen.users = 100;
  cfg->mock_gen.coupons = 10;
}

/* libconfig's text ("syntax error", "duplicate setting name", ...), at
 * the line of the mistake with a hint when config_hint.c sees one. */
static void parse_error(loader_t *ld) {
  const char *file = config_error_file(&ld->cfg->lc);
  const char *text = config_error_text(&ld->cfg->lc);
  int line = config_error_line(&ld->cfg->lc), at = 0;
  GString *hint = g_string_new(NULL);
  if (!file)
    file = ld->cfg->path;
  if (strcmp(text, "syntax error") == 0)
    at = cfg_syntax_hint(file, line, hint);
  g_string_append_printf(ld->err, "%s:%d: %s%s%s", file, at ? at : line, text,
                         at ? ": " : "", hint->str);
  g_string_free(hint, TRUE);
}

/* Reads the file into cfg->lc; 0, or -1 with the reason in ld->err. */
static int read_file(loader_t *ld) {
  cfg_t *cfg = ld->cfg;
  FILE *f = fopen(cfg->path, "r");
  char *dir = g_path_get_dirname(cfg->path);
  struct stat st;
  int rc = -1, e = 0;

  /* libconfig only says "file I/O error": find the reason first. */
  if (!f)
    e = errno;
  else if (fstat(fileno(f), &st) < 0)
    e = errno;
  else if (S_ISDIR(st.st_mode))
    e = EISDIR;
  if (e) {
    g_string_append_printf(ld->err, "%s: cannot read: %s", cfg->path,
                           g_strerror(e));
    goto out;
  }
  config_set_include_dir(&cfg->lc, dir);
  if (config_read_file(&cfg->lc, cfg->path) == CONFIG_TRUE) {
    rc = 0;
  } else if (config_error_type(&cfg->lc) == CONFIG_ERR_FILE_IO) {
    g_string_append_printf(ld->err, "%s: cannot read: %s", cfg->path,
                           config_error_text(&cfg->lc));
  } else {
    parse_error(ld);
  }
out:
  if (f)
    fclose(f);
  g_free(dir);
  return rc;
}

/* The config names the plugins khost loads and where it writes: a file
 * that someone else could change is refused as a plugin is (the rule:
 * file_trust.h). */
static int check_trust(loader_t *ld) {
  char why[1536];

  if (file_trust_check(ld->cfg->path, why, sizeof(why)) == 0)
    return 0;
  g_string_append_printf(ld->err, "%s: refusing to read the config: %s",
                         ld->cfg->path, why);
  return -1;
}

/* Every file a setting of the tree under s comes from. */
static void collect_sources(const config_setting_t *s, GHashTable *files) {
  const char *file = config_setting_source_file(s);
  int n = config_setting_length(s);

  if (file)
    g_hash_table_add(files, (gpointer)file);
  for (int i = 0; i < n; i++)
    collect_sources(config_setting_get_elem(s, (unsigned)i), files);
}

/* A file pulled in with @include decides as much as the config itself;
 * libconfig has read it, but nothing of it is used before this check. */
static int check_included_trust(loader_t *ld) {
  GHashTable *files = g_hash_table_new(g_str_hash, g_str_equal);
  GHashTableIter it;
  gpointer file;
  char why[1536];
  int rc = 0;

  collect_sources(config_root_setting(&ld->cfg->lc), files);
  g_hash_table_iter_init(&it, files);
  while (rc == 0 && g_hash_table_iter_next(&it, &file, NULL)) {
    /* libconfig keeps an included name as written, relative to the
     * include directory (the config's own). */
    const char *dir = config_get_include_dir(&ld->cfg->lc);
    char *path = g_path_is_absolute(file) || !dir
                     ? g_strdup(file)
                     : g_build_filename(dir, (const char *)file, NULL);

    if (strcmp(file, ld->cfg->path) != 0 &&
        file_trust_check(path, why, sizeof(why)) != 0) {
      g_string_append_printf(ld->err,
                             "%s: refusing to read the config (included by "
                             "%s): %s",
                             path, ld->cfg->path, why);
      rc = -1;
    }
    g_free(path);
  }
  g_hash_table_destroy(files);
  return rc;
}

/* The first secret property of a list, or NULL. */
static const char *first_secret(const cfg_prop_t *props, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (log_is_secret_property(props[i].name))
      return props[i].name;
  return NULL;
}

/* A file holding secrets that anyone on the machine can read: a warning,
 * as ssh warns about loose key files (the host still starts). */
static void warn_loose_secrets(const cfg_t *cfg) {
  struct stat st;
  const char *secret = first_secret(cfg->kafka, cfg->n_kafka);
  for (size_t i = 0; !secret && i < cfg->n_pipelines; i++)
    secret = first_secret(cfg->pipelines[i].kafka, cfg->pipelines[i].n_kafka);
  if (!secret || stat(cfg->path, &st) != 0 || !(st.st_mode & S_IROTH))
    return;
  log_msg(KHOST_LOG_WARNING, "config",
          "%s holds secrets (%s) and others can read it (mode %04o): run "
          "chmod o-r on it",
          cfg->path, secret, (unsigned)(st.st_mode & 07777));
}

int cfg_load(cfg_t *cfg, const char *path, char *err, size_t errlen) {
  loader_t ld = {cfg, g_string_new(NULL), NULL};
  scope_t top;
  int rc = -1;

  memset(cfg, 0, sizeof(*cfg));
  config_init(&cfg->lc);
  set_defaults(cfg, path);
  if (check_trust(&ld) < 0 || read_file(&ld) < 0 ||
      check_included_trust(&ld) < 0)
    goto out;
  top = (scope_t){config_root_setting(&cfg->lc), ""};
  ld.scratch = rd_kafka_conf_new();
  check_keys(&ld, &top, top_keys);
  load_top_scalars(&ld, &top);
  load_kafka(&ld, &top, &cfg->kafka, &cfg->n_kafka);
  load_dedup(&ld, &top);
  load_store(&ld, &top);
  load_mock(&ld, &top);
  load_http(&ld, &top);
  load_instance_id(&ld, &top);
  load_pipelines(&ld, &top);
  check_bootstrap(&ld, &top);
  check_instance_id(&ld, &top);
  rc = ld.err->len > 0 ? -1 : 0;
  if (rc == 0)
    warn_loose_secrets(cfg);
out:
  if (errlen > 0)
    g_strlcpy(err, ld.err->str, errlen);
  if (ld.scratch)
    rd_kafka_conf_destroy(ld.scratch);
  g_string_free(ld.err, TRUE);
  return rc;
}

static void free_props(cfg_prop_t *props, size_t n) {
  for (size_t i = 0; i < n; i++) {
    g_free(props[i].name);
    g_free(props[i].value);
  }
  g_free(props);
}

static void free_pipeline(cfg_pipeline_t *p) {
  g_free(p->name);
  g_free(p->group_id);
  for (size_t i = 0; i < p->n_topics; i++)
    g_free(p->topics[i]);
  g_free(p->topics);
  g_free(p->plugin);
  g_free(p->plugin_path);
  g_free(p->eid_header);
  g_free(p->order_header);
  g_free(p->dead_letter_topic);
  free_props(p->kafka, p->n_kafka);
}

void cfg_free(cfg_t *cfg) {
  /* cfg->path is set by every cfg_load(): without it, nothing to free. */
  if (!cfg || !cfg->path)
    return;
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    free_pipeline(&cfg->pipelines[i]);
  g_free(cfg->pipelines);
  free_props(cfg->kafka, cfg->n_kafka);
  g_free(cfg->dedup_path);
  g_free(cfg->store_conninfo);
  g_free(cfg->http_listen);
  g_free(cfg->instance_id);
  g_free(cfg->plugin_dir);
  g_free(cfg->path);
  config_destroy(&cfg->lc);
  memset(cfg, 0, sizeof(*cfg));
}

int cfg_parse_duration(const char *s, int64_t *ms) {
  static const struct {
    const char *suffix;
    int64_t ms;
  } units[] = {{"", MS_PER_S},         {"ms", 1},
               {"s", MS_PER_S},        {"m", 60 * MS_PER_S},
               {"h", 3600 * MS_PER_S}, {"d", MS_PER_DAY}};
  char *end = NULL;
  unsigned long long v;

  /* strtoull would accept leading blanks and a sign: digits come first. */
  if (!s || !g_ascii_isdigit(s[0]))
    return -1;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0)
    return -1;
  for (size_t i = 0; i < G_N_ELEMENTS(units); i++) {
    if (strcmp(end, units[i].suffix) != 0)
      continue;
    if (v > (unsigned long long)(INT64_MAX / units[i].ms))
      return -1;
    *ms = (int64_t)v * units[i].ms;
    return 0;
  }
  return -1;
}

int cfg_parse_size(const char *s, int64_t *bytes) {
  static const char units[] = "KMGT";
  char *end = NULL;
  unsigned long long v;
  int shift = 0;

  if (!s || !g_ascii_isdigit(s[0]))
    return -1;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0)
    return -1;
  if (*end) {
    const char *u = strchr(units, *end);
    if (!u || !*u || (end[1] && strcmp(end + 1, "B") != 0))
      return -1;
    shift = 10 * (int)(u - units + 1);
  }
  if (v > (unsigned long long)(INT64_MAX >> shift))
    return -1;
  *bytes = (int64_t)(v << shift);
  return 0;
}

const cfg_prop_t *cfg_prop_find(const cfg_prop_t *props, size_t n,
                                const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(props[i].name, name) == 0)
      return &props[i];
  return NULL;
}

int cfg_member_instance_id(const cfg_t *cfg, const cfg_pipeline_t *pc,
                           int member, char *buf, size_t len) {
  if (!cfg->instance_id)
    return 0;
  snprintf(buf, len, "%s-%s-%d", cfg->instance_id, pc->name, member);
  return 1;
}

const char *cfg_setting_file(const config_setting_t *s, const cfg_t *cfg) {
  const char *file = s ? config_setting_source_file(s) : NULL;

  return file ? file : cfg->path;
}
