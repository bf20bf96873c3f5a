/* Tests of the config module: parsing, defaults, and error reports. */
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* By path: "config.h" alone would find autoconf's header in the build dir. */
#include "../src/config.h"
#include "log.h"
#include "preflight.h"
#include "testutil.h"

static char *tmpdir;

static void setup(void) {
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  unsetenv("KHOST_PLUGIN_DIR");
  unsetenv("KHOST_HTTP_LISTEN");
}

static void teardown(void) {
  tu_rm_rf(tmpdir);
  free(tmpdir);
  tmpdir = NULL;
}

/* Writes text as <tmpdir>/khost.cfg and loads it; *path is freed by the
 * caller. */
static int load_text(cfg_t *cfg, const char *text, char *err, size_t errlen,
                     char **path) {
  *path = tu_write_file(tmpdir, "khost.cfg", text);
  return cfg_load(cfg, *path, err, errlen);
}

static int count_lines(const char *s) {
  int n = s[0] != '\0';

  for (; *s; s++)
    n += *s == '\n';
  return n;
}

static void assert_prop(const cfg_prop_t *props, size_t n, const char *name,
                        const char *value) {
  const cfg_prop_t *p = cfg_prop_find(props, n, name);

  ck_assert_msg(p != NULL, "property %s missing", name);
  ck_assert_str_eq(p->value, value);
}

/* ------------------------------------------------------------ good files */

static const char full_text[] =
    "plugin_dir = \"/opt/khost/plugins\";\n"                     /* 1 */
    "log_level = \"debug\";\n"                                   /* 2 */
    "shutdown_timeout = 15;\n"                                   /* 3 */
    "kafka = {\n"                                                /* 4 */
    "  bootstrap_servers = \"b1:9092,b2:9092\";\n"               /* 5 */
    "  fetch_max_bytes = 1048576;\n"                             /* 6 */
    "  socket_keepalive_enable = true;\n"                        /* 7 */
    "  linger_ms = 0.5;\n"                                       /* 8 */
    "};\n"                                                       /* 9 */
    "dedup = { path = \"/var/tmp/d.db\"; retention = \"12h\";\n" /* 10 */
    "  durability = \"full\"; memory = \"64M\"; };\n"            /* 11 */
    "mock = { brokers = 1; partitions = 4; sample_records = 100;\n"
    "  sample_duplicates = 10; };\n"
    "pipelines = (\n"
    "  { name = \"orders\"; group_id = \"g-orders\";\n" /* 15 */
    "    topics = [ \"order-completed\" ]; members = 3;\n"
    "    plugin = \"jsonl_sink\"; event_id = \"key\";\n"
    "    on_missing_id = \"fail\"; max_batch = 1000; dedup = false;\n"
    "    dead_letter_topic = \"orders.dlt\"; concurrency = 16;"
    " order_by = \"header:aggregateId\";\n"
    "    retry = { max = 7; backoff = \"250ms\"; backoff_max = \"1m\"; };\n"
    "    kafka = { auto_offset_reset = \"latest\"; };\n"
    "    config = { path = \"/tmp/orders.jsonl\"; };\n"
    "  },\n"
    "  { name = \"audit.v2\"; group_id = \"g-audit\";\n"
    "    topics = [ \"a\", \"b\" ]; plugin = \"./build/audit.so\";\n"
    "    event_id = \"header:id\"; }\n"
    ");\n";

START_TEST(test_full_file) {
  cfg_t cfg;
  char err[4096], *path;
  const char *s = NULL;

  ck_assert_int_eq(load_text(&cfg, full_text, err, sizeof(err), &path), 0);
  ck_assert_str_eq(err, "");
  ck_assert_str_eq(cfg.path, path);
  ck_assert_str_eq(cfg.plugin_dir, "/opt/khost/plugins");
  ck_assert_int_eq(cfg.log_level, KHOST_LOG_DEBUG);
  ck_assert_int_eq(cfg.shutdown_timeout_ms, 15000);
  ck_assert_uint_eq(cfg.n_kafka, 4);
  assert_prop(cfg.kafka, cfg.n_kafka, "bootstrap.servers", "b1:9092,b2:9092");
  assert_prop(cfg.kafka, cfg.n_kafka, "fetch.max.bytes", "1048576");
  assert_prop(cfg.kafka, cfg.n_kafka, "socket.keepalive.enable", "true");
  assert_prop(cfg.kafka, cfg.n_kafka, "linger.ms", "0.5");
  ck_assert_int_eq(
      cfg_prop_find(cfg.kafka, cfg.n_kafka, "fetch.max.bytes")->line, 6);
  ck_assert_ptr_null(cfg_prop_find(cfg.kafka, cfg.n_kafka, "fetch_max_bytes"));
  ck_assert_str_eq(cfg.dedup_path, "/var/tmp/d.db");
  ck_assert_int_eq(cfg.retention_ms, 12LL * 3600 * 1000);
  ck_assert_uint_eq(cfg.dedup_memory, (uint64_t)64 << 20);
  ck_assert_int_eq(cfg.durability, CFG_DURABILITY_FULL);
  ck_assert_int_eq(cfg.mock_brokers, 1);
  ck_assert_int_eq(cfg.mock_partitions, 4);
  ck_assert_int_eq(cfg.mock_sample_records, 100);
  ck_assert_int_eq(cfg.mock_sample_duplicates, 10);
  ck_assert_uint_eq(cfg.n_pipelines, 2);

  const cfg_pipeline_t *p = &cfg.pipelines[0];
  ck_assert_str_eq(p->name, "orders");
  ck_assert_str_eq(p->group_id, "g-orders");
  ck_assert_uint_eq(p->n_topics, 1);
  ck_assert_str_eq(p->topics[0], "order-completed");
  ck_assert_int_eq(p->members, 3);
  ck_assert_str_eq(p->plugin, "jsonl_sink");
  ck_assert_str_eq(p->plugin_path, "/opt/khost/plugins/jsonl_sink.so");
  ck_assert_int_eq(p->eid_source, CFG_EID_KEY);
  ck_assert_int_eq(p->on_missing_id, CFG_MISSING_FAIL);
  ck_assert_int_eq(p->max_batch, 1000);
  ck_assert_int_eq(p->concurrency, 16);
  ck_assert_int_eq(p->order_by, CFG_ORDER_HEADER);
  ck_assert_str_eq(p->order_header, "aggregateId");
  ck_assert_int_eq(p->dedup, 0);
  ck_assert_str_eq(p->dead_letter_topic, "orders.dlt");
  ck_assert_int_eq(p->retry_max, 7);
  ck_assert_int_eq(p->retry_backoff_ms, 250);
  ck_assert_int_eq(p->retry_backoff_max_ms, 60000);
  ck_assert_uint_eq(p->n_kafka, 1);
  assert_prop(p->kafka, p->n_kafka, "auto.offset.reset", "latest");
  ck_assert_int_eq(p->line, 15);
  ck_assert_ptr_nonnull(p->plugin_config);
  ck_assert_int_eq(config_setting_lookup_string(p->plugin_config, "path", &s),
                   CONFIG_TRUE);
  ck_assert_str_eq(s, "/tmp/orders.jsonl");
  ck_assert_str_eq(cfg_setting_file(p->plugin_config, &cfg), path);

  p = &cfg.pipelines[1];
  ck_assert_str_eq(p->name, "audit.v2");
  ck_assert_uint_eq(p->n_topics, 2);
  ck_assert_str_eq(p->topics[0], "a");
  ck_assert_str_eq(p->topics[1], "b");
  ck_assert_str_eq(p->plugin_path, "./build/audit.so");
  ck_assert_int_eq(p->eid_source, CFG_EID_HEADER);
  ck_assert_str_eq(p->eid_header, "id");
  ck_assert_uint_eq(p->n_kafka, 0);
  ck_assert_ptr_null(p->plugin_config);
  ck_assert_ptr_null(p->dead_letter_topic);
  cfg_free(&cfg);
  free(path);
}
END_TEST

static const char minimal_text[] =
    "kafka = { bootstrap_servers = \"127.0.0.1:9092\"; };\n"
    "pipelines = ( { name = \"p\"; group_id = \"g\"; topics = [ \"t\" ];\n"
    "                plugin = \"jsonl_sink\"; } );\n";

START_TEST(test_defaults) {
  cfg_t cfg;
  char err[1024], *path;

  ck_assert_int_eq(load_text(&cfg, minimal_text, err, sizeof(err), &path), 0);
  ck_assert_str_eq(cfg.plugin_dir, KHOST_PLUGIN_DIR);
  ck_assert_int_eq(cfg.log_level, KHOST_LOG_INFO);
  ck_assert_int_eq(cfg.shutdown_timeout_ms, 30000);
  ck_assert_int_eq(cfg.memory_limit, 1LL << 30);
  ck_assert_str_eq(cfg.dedup_path, "khost-dedup.db");
  ck_assert_int_eq(cfg.retention_ms, 7LL * 86400 * 1000);
  ck_assert_int_eq(cfg.durability, CFG_DURABILITY_NORMAL);
  ck_assert_uint_eq(cfg.dedup_memory, (uint64_t)256 << 20);
  ck_assert_int_eq(cfg.mock_brokers, 0);
  ck_assert_uint_eq(cfg.n_pipelines, 1);

  const cfg_pipeline_t *p = &cfg.pipelines[0];
  ck_assert_int_eq(p->members, 1);
  ck_assert_int_eq(p->max_batch, 500);
  ck_assert_int_eq(p->concurrency, 1);
  ck_assert_int_eq(p->order_by, CFG_ORDER_KEY);
  ck_assert_int_eq(p->dedup, 1);
  ck_assert_int_eq(p->eid_source, CFG_EID_HEADER);
  ck_assert_str_eq(p->eid_header, "eventId");
  ck_assert_int_eq(p->on_missing_id, CFG_MISSING_PROCESS);
  ck_assert_int_eq(p->retry_max, 16);
  ck_assert_int_eq(p->retry_backoff_ms, 200);
  ck_assert_int_eq(p->retry_backoff_max_ms, 5000);
  ck_assert_str_eq(p->plugin_path, KHOST_PLUGIN_DIR "/jsonl_sink.so");
  ck_assert_ptr_null(p->dead_letter_topic);
  ck_assert_ptr_null(p->plugin_config);
  ck_assert_uint_eq(p->n_kafka, 0);
  ck_assert_int_eq(p->on_fatal, CFG_FATAL_STOP_HOST);
  ck_assert_int_eq(p->handler_timeout_ms, 60000);
  ck_assert_int_eq(p->commit_interval_ms, CFG_DEFAULT_COMMIT_INTERVAL_MS);
  ck_assert_int_eq(p->breaker_window, 0); /* off without the group */
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_failure_settings) {
  cfg_t cfg;
  char err[1024], *path;
  const char *text =
      "kafka = { bootstrap_servers = \"127.0.0.1:9092\"; };\n"
      "pipelines = ({ name = \"p\"; group_id = \"g\";\n"
      "  topics = [ \"t\" ]; plugin = \"x\";\n"
      "  on_fatal = \"stop_pipeline\"; handler_timeout = \"5s\";\n"
      "  commit_interval = \"0\";\n"
      "  circuit_breaker = { failure_ratio = 0.25; cooldown = \"2s\"; };\n"
      "});\n";
  ck_assert_int_eq(load_text(&cfg, text, err, sizeof(err), &path), 0);
  const cfg_pipeline_t *p = &cfg.pipelines[0];
  ck_assert_int_eq(p->on_fatal, CFG_FATAL_STOP_PIPELINE);
  ck_assert_int_eq(p->handler_timeout_ms, 5000);
  ck_assert_int_eq(p->commit_interval_ms, 0); /* after every batch */
  ck_assert_int_eq(p->breaker_window, 1000);  /* the group turns it on */
  ck_assert_double_eq_tol(p->breaker_ratio, 0.25, 1e-9);
  ck_assert_int_eq(p->breaker_cooldown_ms, 2000);
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_plugin_dir_from_env) {
  cfg_t cfg;
  char err[1024], *path;

  setenv("KHOST_PLUGIN_DIR", "/env/plugins", 1);
  ck_assert_int_eq(load_text(&cfg, minimal_text, err, sizeof(err), &path), 0);
  unsetenv("KHOST_PLUGIN_DIR");
  ck_assert_str_eq(cfg.plugin_dir, "/env/plugins");
  ck_assert_str_eq(cfg.pipelines[0].plugin_path, "/env/plugins/jsonl_sink.so");
  cfg_free(&cfg);
  free(path);
}
END_TEST

/* http.listen: loopback by default, "" turns it off; instance_id gives
 * every member of every pipeline a group.instance.id of its own. */
START_TEST(test_http_and_instance_id) {
  static const char text[] =
      "kafka = { bootstrap_servers = \"b:9092\"; };\n"
      "http = { listen = \"\"; };\n"
      "instance_id = \"host-a\";\n"
      "pipelines = (\n"
      "  { name = \"orders\"; group_id = \"g\"; topics = [ \"t\" ];\n"
      "    plugin = \"x\"; members = 2; },\n"
      "  { name = \"coupons\"; group_id = \"h\"; topics = [ \"u\" ];\n"
      "    plugin = \"x\"; } );\n";
  cfg_t cfg;
  char err[1024], id[128], *path;

  ck_assert_int_eq(load_text(&cfg, minimal_text, err, sizeof(err), &path), 0);
  ck_assert_str_eq(cfg.http_listen, "127.0.0.1:9464");
  ck_assert_ptr_null(cfg.instance_id);
  ck_assert_int_eq(
      cfg_member_instance_id(&cfg, &cfg.pipelines[0], 0, id, sizeof(id)), 0);
  cfg_free(&cfg);
  free(path);
  ck_assert_int_eq(load_text(&cfg, text, err, sizeof(err), &path), 0);
  ck_assert_str_eq(cfg.http_listen, "");
  ck_assert_int_eq(
      cfg_member_instance_id(&cfg, &cfg.pipelines[0], 1, id, sizeof(id)), 1);
  ck_assert_str_eq(id, "host-a-orders-1");
  ck_assert_int_eq(
      cfg_member_instance_id(&cfg, &cfg.pipelines[1], 0, id, sizeof(id)), 1);
  ck_assert_str_eq(id, "host-a-coupons-0");
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_mock_defaults_without_bootstrap) {
  static const char text[] =
      "mock = { };\n"
      "pipelines = ( { name = \"p\"; group_id = \"g\"; topics = [ \"t\" ];\n"
      "                plugin = \"x.so\"; retry = { backoff = \"30s\"; }; } "
      ");\n";
  cfg_t cfg;
  char err[1024], *path;

  ck_assert_int_eq(load_text(&cfg, text, err, sizeof(err), &path), 0);
  ck_assert_int_eq(cfg.mock_brokers, 3);
  ck_assert_int_eq(cfg.mock_partitions, 3);
  ck_assert_int_eq(cfg.mock_sample_records, 0);
  ck_assert_int_eq(cfg.mock_sample_duplicates, 0);
  ck_assert_uint_eq(cfg.n_kafka, 0);
  ck_assert_str_eq(cfg.pipelines[0].plugin_path, KHOST_PLUGIN_DIR "/x.so");
  /* A backoff above the default cap raises the cap. */
  ck_assert_int_eq(cfg.pipelines[0].retry_backoff_ms, 30000);
  ck_assert_int_eq(cfg.pipelines[0].retry_backoff_max_ms, 30000);
  ck_assert_int_eq(cfg.mock_gen.enabled, 0);
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_mock_generate) {
  static const char given[] =
      "mock = { generate = { count = 600; duplicates = 0.05; seed = 42;\n"
      "                      users = 20; coupons = 3; }; };\n"
      "pipelines = ( { name = \"p\"; group_id = \"g\"; topics = [ \"t\" ];\n"
      "                plugin = \"x\"; } );\n";
  static const char defaults[] =
      "mock = { partitions = 2; generate = { duplicates = 1; }; };\n"
      "pipelines = ( { name = \"p\"; group_id = \"g\"; topics = [ \"t\" ];\n"
      "                plugin = \"x\"; } );\n";
  cfg_t cfg;
  char err[1024], *path;

  ck_assert_msg(load_text(&cfg, given, err, sizeof(err), &path) == 0, "%s",
                err);
  ck_assert_int_eq(cfg.mock_gen.enabled, 1);
  ck_assert_int_eq(cfg.mock_gen.count, 600);
  ck_assert_double_eq_tol(cfg.mock_gen.duplicates, 0.05, 1e-12);
  ck_assert_int_eq(cfg.mock_gen.seed_set, 1);
  ck_assert_uint_eq(cfg.mock_gen.seed, 42);
  ck_assert_int_eq(cfg.mock_gen.users, 20);
  ck_assert_int_eq(cfg.mock_gen.coupons, 3);
  cfg_free(&cfg);
  free(path);

  /* An integer share is a share too; the rest takes its defaults. */
  ck_assert_msg(load_text(&cfg, defaults, err, sizeof(err), &path) == 0, "%s",
                err);
  ck_assert_int_eq(cfg.mock_gen.enabled, 1);
  ck_assert_int_eq(cfg.mock_gen.count, 1000);
  ck_assert_double_eq_tol(cfg.mock_gen.duplicates, 1.0, 1e-12);
  ck_assert_int_eq(cfg.mock_gen.seed_set, 0);
  ck_assert_int_eq(cfg.mock_gen.users, 100);
  ck_assert_int_eq(cfg.mock_gen.coupons, 10);
  ck_assert_int_eq(cfg.mock_partitions, 2);
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_example_loads) {
  cfg_t cfg;
  char err[4096];
  const char *s = NULL;

  ck_assert_msg(
      cfg_load(&cfg, TOP_SRCDIR "/examples/khost.cfg", err, sizeof(err)) == 0,
      "examples/khost.cfg: %s", err);
  ck_assert_uint_eq(cfg.n_pipelines, 1);
  ck_assert_str_eq(cfg.pipelines[0].name, "order-analytics");
  ck_assert_str_eq(cfg.pipelines[0].group_id, "data-platform-consumer-group");
  ck_assert_str_eq(cfg.pipelines[0].topics[0], "order-completed");
  ck_assert_str_eq(cfg.pipelines[0].plugin, "jsonl_sink");
  ck_assert_int_eq(
      config_setting_lookup_string(cfg.pipelines[0].plugin_config, "path", &s),
      CONFIG_TRUE);
  ck_assert_str_eq(s, "/tmp/orders.jsonl");
  assert_prop(cfg.kafka, cfg.n_kafka, "bootstrap.servers", "127.0.0.1:9092");

  /* The example writes each of these settings with its default (its
   * comments say so): the values read from it are those of a file that
   * leaves them out. */
  cfg_t def;
  char *path;
  ck_assert_int_eq(load_text(&def, minimal_text, err, sizeof(err), &path), 0);
  const cfg_pipeline_t *p = &cfg.pipelines[0], *d = &def.pipelines[0];
  ck_assert_int_eq(cfg.log_level, def.log_level);
  ck_assert_int_eq(cfg.log_json, def.log_json);
  ck_assert_int_eq(cfg.shutdown_timeout_ms, def.shutdown_timeout_ms);
  ck_assert_int_eq(cfg.memory_limit, def.memory_limit);
  ck_assert_int_eq(cfg.retention_ms, def.retention_ms);
  ck_assert_int_eq(cfg.durability, def.durability);
  ck_assert_uint_eq(cfg.dedup_memory, def.dedup_memory);
  ck_assert_int_eq(p->eid_source, d->eid_source);
  ck_assert_str_eq(p->eid_header, d->eid_header);
  ck_assert_int_eq(p->on_missing_id, d->on_missing_id);
  ck_assert_int_eq(p->max_batch, d->max_batch);
  ck_assert_int_eq(p->concurrency, d->concurrency);
  ck_assert_int_eq(p->order_by, d->order_by);
  ck_assert_int_eq(p->dedup, d->dedup);
  ck_assert_int_eq(p->retry_max, d->retry_max);
  ck_assert_int_eq(p->retry_backoff_ms, d->retry_backoff_ms);
  ck_assert_int_eq(p->retry_backoff_max_ms, d->retry_backoff_max_ms);
  ck_assert_int_eq(p->on_fatal, d->on_fatal);
  ck_assert_int_eq(p->handler_timeout_ms, d->handler_timeout_ms);
  ck_assert_int_eq(p->commit_interval_ms, d->commit_interval_ms);
  ck_assert_ptr_null(p->dead_letter_topic);
  cfg_free(&def);
  free(path);
  cfg_free(&cfg);
}
END_TEST

START_TEST(test_include_relative_to_file) {
  cfg_t cfg;
  char err[1024], *path;
  char *sub = tu_write_file(tmpdir, "pipes.cfg",
                            "pipelines = ( { name = \"p\"; group_id = \"g\";\n"
                            "  topics = [ \"t\" ]; plugin = \"x\";\n"
                            "  members = 0; } );\n");

  char *cwd = getcwd(NULL, 0);

  /* Loaded from another directory: the include is found next to the file. */
  ck_assert_int_eq(chdir("/"), 0);
  ck_assert_int_eq(load_text(&cfg,
                             "kafka = { bootstrap_servers = \"h:1\"; };\n"
                             "@include \"pipes.cfg\"\n",
                             err, sizeof(err), &path),
                   -1);
  ck_assert_msg(strstr(err, "pipes.cfg:3: pipelines[0].members: must be "
                            "between 1 and 256 (got 0)") != NULL,
                "got: %s", err);
  ck_assert_int_eq(count_lines(err), 1);
  ck_assert_int_eq(chdir(cwd), 0);
  cfg_free(&cfg);
  free(cwd);
  free(path);
  free(sub);
}
END_TEST

/* ------------------------------------------------------------ durations */

START_TEST(test_duration_good) {
  static const struct {
    const char *text;
    int64_t ms;
  } cases[] = {{"250ms", 250},    {"30s", 30000},
               {"15m", 900000},   {"12h", 43200000},
               {"7d", 604800000}, {"0s", 0},
               {"45", 45000},     {"0", 0},
               {"1000ms", 1000},  {"106751991167d", 106751991167LL * 86400000}};

  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    int64_t ms = -1;
    ck_assert_msg(cfg_parse_duration(cases[i].text, &ms) == 0, "%s",
                  cases[i].text);
    ck_assert_int_eq(ms, cases[i].ms);
  }
}
END_TEST

START_TEST(test_duration_bad) {
  static const char *const cases[] = {
      "",    "s",    "-1s",  "+1s",           " 1s",
      "1 s", "1.5s", "1S",   "10x",           "5sec",
      "ms",  "1s ",  "1d2h", "106751991168d", "99999999999999999999"};

  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    int64_t ms = 42;
    ck_assert_msg(cfg_parse_duration(cases[i], &ms) == -1, "\"%s\" accepted",
                  cases[i]);
    ck_assert_int_eq(ms, 42);
  }
  ck_assert_int_eq(cfg_parse_duration(NULL, &(int64_t){0}), -1);
}
END_TEST

START_TEST(test_size_good) {
  static const struct {
    const char *text;
    int64_t bytes;
  } cases[] = {{"0", 0},          {"4096", 4096},
               {"64K", 64 << 10}, {"512M", 512LL << 20},
               {"1G", 1LL << 30}, {"1GB", 1LL << 30},
               {"2T", 2LL << 40}, {"8388607T", 8388607LL << 40}};

  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    int64_t bytes = -1;
    ck_assert_msg(cfg_parse_size(cases[i].text, &bytes) == 0, "%s",
                  cases[i].text);
    ck_assert_int_eq(bytes, cases[i].bytes);
  }
}
END_TEST

START_TEST(test_size_bad) {
  static const char *const cases[] = {
      "",   "G",    "-1G", " 1G", "1 G",      "1.5G",
      "1g", "1GiB", "1Gx", "1P",  "8388608T", "99999999999999999999"};

  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    int64_t bytes = 42;
    ck_assert_msg(cfg_parse_size(cases[i], &bytes) == -1, "\"%s\" accepted",
                  cases[i]);
    ck_assert_int_eq(bytes, 42);
  }
  ck_assert_int_eq(cfg_parse_size(NULL, &(int64_t){0}), -1);
}
END_TEST

START_TEST(test_memory_limit) {
  cfg_t cfg;
  char err[1024], *path;
  char text[sizeof(minimal_text) + 64];

  snprintf(text, sizeof(text), "memory_limit = \"3G\";\n%s", minimal_text);
  ck_assert_msg(load_text(&cfg, text, err, sizeof(err), &path) == 0, "%s", err);
  ck_assert_int_eq(cfg.memory_limit, 3LL << 30);
  cfg_free(&cfg);
  free(path);
}
END_TEST

/* ------------------------------------------------------------ bad files */

/* Pieces of the bad files below: KAFKA is one line, PIPE_OPEN three (the
 * pipeline's '{' on its second), so line numbers can be counted. */
#define KAFKA "kafka = { bootstrap_servers = \"127.0.0.1:9092\"; };\n"
#define PIPE_OPEN                                                              \
  "pipelines = (\n"                                                            \
  "  {\n"                                                                      \
  "    name = \"p\"; group_id = \"g\"; topics = [ \"t\" ]; plugin = \"x\";\n"
#define PIPE_CLOSE "  }\n);\n"

/* Every word order_by takes, with the ordering it names. */
START_TEST(test_order_by_words) {
  static const struct {
    const char *word;
    cfg_order_t order;
    const char *header;
  } cases[] = {{"key", CFG_ORDER_KEY, NULL},
               {"header:aggregateId", CFG_ORDER_HEADER, "aggregateId"},
               {"event_id", CFG_ORDER_EVENT_ID, NULL},
               {"partition", CFG_ORDER_PARTITION, NULL},
               {"none", CFG_ORDER_NONE, NULL}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    cfg_t cfg;
    char err[1024], text[512], *path;
    snprintf(text, sizeof(text),
             KAFKA PIPE_OPEN
             "    concurrency = 8; order_by = \"%s\";\n" PIPE_CLOSE,
             cases[i].word);
    ck_assert_msg(load_text(&cfg, text, err, sizeof(err), &path) == 0, "%s: %s",
                  cases[i].word, err);
    ck_assert_int_eq(cfg.pipelines[0].concurrency, 8);
    ck_assert_int_eq(cfg.pipelines[0].order_by, cases[i].order);
    if (cases[i].header)
      ck_assert_str_eq(cfg.pipelines[0].order_header, cases[i].header);
    cfg_free(&cfg);
    free(path);
  }
}
END_TEST

static const struct bad_case {
  const char *what;
  const char *text;
  const char *expect; /* after "<path>"; the only problem reported */
} bad_cases[] = {
    {"unknown top-level key", KAFKA "colour = \"blue\";\n" PIPE_OPEN PIPE_CLOSE,
     ":2: colour: unknown setting (known: plugin_dir, log_level,"},
    {"unknown pipeline key", KAFKA PIPE_OPEN "    member = 3;\n" PIPE_CLOSE,
     ":5: pipelines[0].member: unknown setting"},
    {"http listen without a port",
     KAFKA "http = {\n  listen = \"localhost\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: http.listen: \"localhost\": expected HOST:PORT (e.g. "
     "127.0.0.1:9464)"},
    {"http listen port out of range",
     KAFKA "http = { listen = \"127.0.0.1:70000\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: http.listen: \"127.0.0.1:70000\": the port must be a number "
     "0..65535"},
    {"unknown http key",
     KAFKA "http = { port = 9464; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: http.port: unknown setting (known: listen)"},
    {"instance_id with a space",
     KAFKA "instance_id = \"host a\";\n" PIPE_OPEN PIPE_CLOSE,
     ":2: instance_id: must be 1..64 characters of A-Z a-z 0-9 . _ - (got "
     "\"host a\")"},
    {"instance_id and a group.instance.id of the user's",
     "kafka = { bootstrap_servers = \"b:9092\";\n"
     "  group_instance_id = \"mine\"; };\n"
     "instance_id = \"host-a\";\n" PIPE_OPEN PIPE_CLOSE,
     ":3: instance_id: cannot be combined with kafka group_instance_id (line "
     "2): instance_id gives each member its own group.instance.id "
     "(host-a-PIPELINE-MEMBER); remove one of them"},
    {"unknown retry key",
     KAFKA PIPE_OPEN "    retry = {\n max = 1; delay = 2; };\n" PIPE_CLOSE,
     ":6: pipelines[0].retry.delay: unknown setting"},
    {"members out of range", KAFKA PIPE_OPEN "    members = 0;\n" PIPE_CLOSE,
     ":5: pipelines[0].members: must be between 1 and 256 (got 0)"},
    {"members wrong type", KAFKA PIPE_OPEN "    members = \"3\";\n" PIPE_CLOSE,
     ":5: pipelines[0].members: must be an integer (got a string)"},
    {"max_batch out of range",
     KAFKA PIPE_OPEN "    max_batch = 100001;\n" PIPE_CLOSE,
     ":5: pipelines[0].max_batch: must be between 1 and 100000 (got 100001)"},
    {"memory_limit with an unknown unit",
     "memory_limit = \"1Q\";\n" KAFKA PIPE_OPEN PIPE_CLOSE,
     ":1: memory_limit: must be a size such as \"512M\" or \"2G\" (K, M, G, "
     "T; got \"1Q\")"},
    {"memory_limit too small",
     "memory_limit = 1024;\n" KAFKA PIPE_OPEN PIPE_CLOSE,
     ":1: memory_limit: must be at least 16M (got 1024 bytes)"},
    {"bad duration",
     "shutdown_timeout = \"30 s\";\n" KAFKA PIPE_OPEN PIPE_CLOSE,
     ":1: shutdown_timeout: must be a duration"},
    {"negative duration", KAFKA "shutdown_timeout = -5;\n" PIPE_OPEN PIPE_CLOSE,
     ":2: shutdown_timeout: must be between 1ms and 24d (got -5)"},
    {"retention too short",
     KAFKA "dedup = {\n  retention = \"0s\";\n};\n" PIPE_OPEN PIPE_CLOSE,
     ":3: dedup.retention: must be at least 1s (got \"0s\")"},
    {"bad dedup memory",
     KAFKA "dedup = { memory = \"256 MB\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: dedup.memory: must be a size such as \"512M\" or \"2G\" (K, M, G, "
     "T; got \"256 MB\")"},
    {"dedup memory too small",
     KAFKA "dedup = { memory = 4096; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: dedup.memory: must be at least 1M (got 4096 bytes)"},
    {"bad durability word",
     KAFKA "dedup = { durability = \"fsync\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: dedup.durability: must be normal or full (got \"fsync\")"},
    {"bad log level", "log_level = \"loud\";\n" KAFKA PIPE_OPEN PIPE_CLOSE,
     ":1: log_level: must be err, warning, notice, info or debug (got "
     "\"loud\")"},
    {"bad event_id form",
     KAFKA PIPE_OPEN "    event_id = \"header:\";\n" PIPE_CLOSE,
     ":5: pipelines[0].event_id: must be \"key\" or \"header:<name>\" (got "
     "\"header:\")"},
    {"bad order_by", KAFKA PIPE_OPEN "    order_by = \"header:\";\n" PIPE_CLOSE,
     ":5: pipelines[0].order_by: must be \"key\", \"header:<name>\", "
     "\"event_id\", \"partition\" or \"none\" (got \"header:\")"},
    {"concurrency out of range",
     KAFKA PIPE_OPEN "    concurrency = 0;\n" PIPE_CLOSE,
     ":5: pipelines[0].concurrency: must be between 1 and 4096 (got 0)"},
    {"bad on_missing_id",
     KAFKA PIPE_OPEN "    on_missing_id = \"skip\";\n" PIPE_CLOSE,
     ":5: pipelines[0].on_missing_id: must be process or fail (got \"skip\")"},
    {"missing group_id",
     KAFKA "pipelines = (\n  {\n    name = \"p\"; topics = [ \"t\" ];\n"
           "    plugin = \"x\"; }\n);\n",
     ":3: pipelines[0].group_id: required"},
    {"topic pattern that is not a regex",
     KAFKA "pipelines = ( { name = \"p\"; group_id = \"g\";\n"
           "  plugin = \"x\";\n  topics = [ \"^orders-(eu\" ]; } );\n",
     ":4: pipelines[0].topics[0]: topic pattern ^orders-(eu: not a valid "
     "regular expression: "},
    {"empty topics",
     KAFKA "pipelines = ( { name = \"p\"; group_id = \"g\";\n"
           "  plugin = \"x\";\n  topics = [ ]; } );\n",
     ":4: pipelines[0].topics: must list at least one topic"},
    {"duplicate topic",
     KAFKA "pipelines = ( { name = \"p\"; group_id = \"g\"; plugin = \"x\";\n"
           "  topics = [ \"a\", \"b\",\n  \"a\" ]; } );\n",
     ":4: pipelines[0].topics[2]: duplicate topic \"a\""},
    {"bad pipeline name",
     KAFKA "pipelines = ( { group_id = \"g\"; plugin = \"x\"; topics = "
           "[\"t\"];\n  name = \"order analytics\"; } );\n",
     ":3: pipelines[0].name: must be at most 64 characters of "
     "[A-Za-z0-9._-] (got \"order analytics\")"},
    {"duplicate pipeline names",
     KAFKA PIPE_OPEN "  },\n  { name = \"p\"; group_id = \"g2\";\n"
                     "    topics = [ \"t\" ]; plugin = \"x\";\n" PIPE_CLOSE,
     ":6: pipelines[1].name: \"p\" is already the name of pipelines[0] "
     "(line 3)"},
    {"shared group_id",
     KAFKA PIPE_OPEN "  },\n  { name = \"q\";\n    group_id = \"g\";\n"
                     "    topics = [ \"t\" ]; plugin = \"x\";\n" PIPE_CLOSE,
     ":7: pipelines[1].group_id: \"g\" is already the group of "
     "pipelines[0] (line 3)"},
    {"no pipelines", KAFKA, ":1: pipelines: required: at least one pipeline"},
    {"unknown librdkafka property",
     "kafka = {\n  bootstrap_servers = \"h:1\";\n  no_such_thing = "
     "1;\n};\n" PIPE_OPEN PIPE_CLOSE,
     ":3: kafka.no_such_thing: No such configuration property: "
     "\"no.such.thing\""},
    {"bad librdkafka value",
     KAFKA PIPE_OPEN
     "    kafka = {\n  fetch_wait_max_ms = \"soon\"; };\n" PIPE_CLOSE,
     ":6: pipelines[0].kafka.fetch_wait_max_ms: Invalid value for "
     "configuration property \"fetch.wait.max.ms\" (got \"soon\")"},
    {"librdkafka property not a scalar",
     KAFKA PIPE_OPEN "    kafka = { debug = [ \"all\" ]; };\n" PIPE_CLOSE,
     ":5: pipelines[0].kafka.debug: must be a string, number or boolean (got "
     "an array)"},
    {"enable_auto_commit refused",
     "kafka = { bootstrap_servers = \"h:1\";\n  enable_auto_commit = true; "
     "};\n" PIPE_OPEN PIPE_CLOSE,
     ":2: kafka.enable_auto_commit: set by khost: khost commits offsets "
     "itself"},
    {"group.id refused",
     KAFKA PIPE_OPEN "    kafka = { group_id = \"other\"; };\n" PIPE_CLOSE,
     ":5: pipelines[0].kafka.group_id: set by khost: use the pipeline's "
     "group_id"},
    {"no bootstrap servers",
     "plugin_dir = \"/p\";\nkafka = {\n  client_id = \"k\";\n};\n" PIPE_OPEN
         PIPE_CLOSE,
     ":2: kafka.bootstrap_servers: required (or a mock group"},
    {"bootstrap servers missing in one pipeline",
     PIPE_OPEN "    kafka = { bootstrap_servers = \"h:1\"; };\n  },\n"
               "  { name = \"q\"; group_id = \"g2\";\n"
               "    topics = [ \"t\" ]; plugin = \"x\";\n" PIPE_CLOSE,
     ":6: pipelines[1].kafka.bootstrap_servers: required: there is no "
     "global kafka.bootstrap_servers"},
    {"mock duplicates above records",
     KAFKA
     "mock = { sample_records = 5;\n  sample_duplicates = 6; };\n" PIPE_OPEN
         PIPE_CLOSE,
     ":3: mock.sample_duplicates: must be between 0 and 5 (got 6)"},
    {"generated duplicates out of range",
     KAFKA
     "mock = { generate = {\n  duplicates = 1.5; }; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: mock.generate.duplicates: must be between 0 and 1 (got 1.5)"},
    {"generated count out of range",
     KAFKA "mock = {\n  generate = { count = 0; }; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: mock.generate.count: must be between 1 and 10000000 (got 0)"},
    {"generated seed not an integer",
     KAFKA "mock = { generate = { seed = \"42\"; }; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: mock.generate.seed: must be an integer (got a string)"},
    {"unknown generate key",
     KAFKA "mock = { generate = {\n  rate = 100; }; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: mock.generate.rate: unknown setting (known: count, duplicates, "
     "seed, users or coupons)"},
    {"generate with sample records",
     KAFKA "mock = { sample_records = 10;\n  generate = { }; };\n" PIPE_OPEN
         PIPE_CLOSE,
     ":3: mock.generate: cannot be combined with sample_records (both fill "
     "the topics)"},
    {"backoff_max below backoff",
     KAFKA PIPE_OPEN "    retry = { backoff = \"1s\";\n"
                     "      backoff_max = \"500ms\"; };\n" PIPE_CLOSE,
     ":6: pipelines[0].retry.backoff_max: must be between 1s and 24d (got "
     "\"500ms\")"},
    {"dead-letter topic read by the pipeline",
     KAFKA PIPE_OPEN "    dead_letter_topic = \"t\";\n" PIPE_CLOSE,
     ":5: pipelines[0].dead_letter_topic: \"t\" is also one of the "
     "pipeline's topics"},
    {"bad on_fatal word",
     KAFKA PIPE_OPEN "    on_fatal = \"ignore\";\n" PIPE_CLOSE,
     ":5: pipelines[0].on_fatal: must be stop_host or stop_pipeline (got "
     "\"ignore\")"},
    {"breaker ratio out of range",
     KAFKA PIPE_OPEN
     "    circuit_breaker = {\n failure_ratio = 1.5; };\n" PIPE_CLOSE,
     ":6: pipelines[0].circuit_breaker.failure_ratio: must be between 0.01 "
     "and 1 (got 1.5)"},
    {"unknown breaker key",
     KAFKA PIPE_OPEN "    circuit_breaker = { size = 5; };\n" PIPE_CLOSE,
     ":5: pipelines[0].circuit_breaker.size: unknown setting"},
    {"config not a group",
     KAFKA PIPE_OPEN "    config = \"/tmp/x\";\n" PIPE_CLOSE,
     ":5: pipelines[0].config: must be a group { ... } (got a string)"},
    {"syntax error with line",
     KAFKA "dedup = {\n  path = \"x\"\n  retention = ;\n};\n",
     ":4: syntax error"},
    {"dotted librdkafka name",
     "kafka = {\n  bootstrap.servers = \"h:1\";\n};\n" PIPE_OPEN PIPE_CLOSE,
     ":2: syntax error: libconfig names cannot contain dots: write "
     "bootstrap_servers"},
    {"dotted name inside a group on one line",
     KAFKA PIPE_OPEN "    kafka = { fetch.max.bytes = 5; };\n" PIPE_CLOSE,
     ":5: syntax error: libconfig names cannot contain dots: write "
     "fetch_max_bytes"},
    {"pipelines as a group",
     KAFKA "pipelines = {\n  name = \"p\"; group_id = \"g\";\n};\n",
     ":2: pipelines: must be a list of groups: pipelines = ( { ... } ) (got a "
     "group)"},
    {"missing comma between pipelines",
     KAFKA PIPE_OPEN "  }\n"
                     "  # the next one\n"
                     "  {\n"
                     "    name = \"q\"; group_id = \"h\"; topics = [ \"t\" ];\n"
                     "    plugin = \"x\";\n" PIPE_CLOSE,
     ":5: syntax error: missing ',' at the end of this line"},
    {"string not closed",
     KAFKA "log_level = \"info;\nplugin_dir = \"/x\";\n" PIPE_OPEN PIPE_CLOSE,
     ":2: syntax error: the string opened on this line goes on past its end"},
    {"group never closed", KAFKA "mock = {\n  brokers = 1;\n",
     ":2: syntax error: the '{' opened on this line is never closed with '}'"},
    {"store and dedup both given",
     KAFKA
     "dedup = { path = \"a.db\"; };\nstore = { path = \"b.db\"; };\n" PIPE_OPEN
         PIPE_CLOSE,
     ":3: store: store = { ... } and dedup = { ... } both given: keep one"},
    {"unknown store backend",
     KAFKA "store = {\n backend = \"mysql\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: store.backend: must be sqlite or postgresql"},
    {"postgresql store without conninfo",
     KAFKA "store = {\n backend = \"postgresql\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":2: store.conninfo: required"},
    {"a file path given to the postgresql store",
     KAFKA "store = { backend = \"postgresql\"; conninfo = \"host=h\";\n"
           "  path = \"x.db\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: store.path: not a setting of backend = \"postgresql\""},
    {"a lease given to the sqlite store",
     KAFKA "store = {\n lease = \"5s\"; };\n" PIPE_OPEN PIPE_CLOSE,
     ":3: store.lease: not a setting of backend = \"sqlite\""},
    {"text without quotes", KAFKA "log_level = info;\n" PIPE_OPEN PIPE_CLOSE,
     ":2: syntax error: text needs double quotes: log_level = \"info\";"},
    {"a host:port without quotes, in a group on one line",
     "kafka = { bootstrap_servers = 127.0.0.1:9092; };\n" PIPE_OPEN PIPE_CLOSE,
     ":1: syntax error: text needs double quotes: bootstrap_servers = "
     "\"127.0.0.1:9092\";"},
    {"a path without quotes",
     KAFKA
     "dedup = {\n  path = /var/lib/khost/d.db;\n};\n" PIPE_OPEN PIPE_CLOSE,
     ":3: syntax error: text needs double quotes: path = "
     "\"/var/lib/khost/d.db\";"},
};

/* store = { backend = "postgresql"; ... } parsed; store = { path } is
 * dedup = { path }. */
START_TEST(test_store_group) {
  cfg_t cfg;
  char err[4096], *path;

  ck_assert_msg(
      load_text(
          &cfg,
          KAFKA
          "store = { backend = \"postgresql\";\n"
          "  conninfo = \"host=db dbname=k\";\n"
          "  lease = \"7s\"; retention = \"2d\"; };\n" PIPE_OPEN PIPE_CLOSE,
          err, sizeof(err), &path) == 0,
      "%s", err);
  ck_assert_int_eq(cfg.store_backend, CFG_STORE_POSTGRESQL);
  ck_assert_str_eq(cfg.store_conninfo, "host=db dbname=k");
  ck_assert_int_eq(cfg.store_lease_ms, 7000);
  ck_assert_int_eq(cfg.retention_ms, 2 * 86400000LL);
  cfg_free(&cfg);
  free(path);
  ck_assert_msg(load_text(&cfg,
                          KAFKA "store = { backend = \"sqlite\"; path = "
                                "\"s.db\"; };\n" PIPE_OPEN PIPE_CLOSE,
                          err, sizeof(err), &path) == 0,
                "%s", err);
  ck_assert_int_eq(cfg.store_backend, CFG_STORE_SQLITE);
  ck_assert_str_eq(cfg.dedup_path, "s.db");
  ck_assert_ptr_null(cfg.store_conninfo);
  cfg_free(&cfg);
  free(path);
}
END_TEST

/* A conninfo libpq cannot parse is named, its password never shown. */
START_TEST(test_conninfo_bad_password_hidden) {
  cfg_t cfg;
  char err[4096], *path;

  ck_assert_int_eq(
      load_text(
          &cfg,
          KAFKA
          "store = { backend = \"postgresql\";\n"
          "  conninfo = \"host=db password=Sesame42 junk\"; };\n" PIPE_OPEN
              PIPE_CLOSE,
          err, sizeof(err), &path),
      -1);
  ck_assert_msg(strstr(err, ":3: store.conninfo: not a libpq connection "
                            "string") != NULL,
                "%s", err);
  ck_assert_msg(strstr(err, "Sesame42") == NULL, "%s", err);
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_bad_file) {
  const struct bad_case *c = &bad_cases[_i];
  cfg_t cfg;
  char err[4096], *path, *expect = NULL;

  ck_assert_int_eq(load_text(&cfg, c->text, err, sizeof(err), &path), -1);
  ck_assert_int_ge(asprintf(&expect, "%s%s", path, c->expect), 0);
  ck_assert_msg(strstr(err, expect) != NULL, "%s: want \"%s\", got \"%s\"",
                c->what, c->expect, err);
  ck_assert_msg(count_lines(err) == 1, "%s: %d problems: %s", c->what,
                count_lines(err), err);
  cfg_free(&cfg);
  free(expect);
  free(path);
}
END_TEST

START_TEST(test_missing_file) {
  cfg_t cfg;
  char err[1024], *path = NULL;

  ck_assert_int_ge(asprintf(&path, "%s/nope.cfg", tmpdir), 0);
  ck_assert_int_eq(cfg_load(&cfg, path, err, sizeof(err)), -1);
  ck_assert_str_eq(err + strlen(path),
                   ": cannot read: No such file or directory");
  ck_assert_int_eq(strncmp(err, path, strlen(path)), 0);
  cfg_free(&cfg);
  ck_assert_int_eq(cfg_load(&cfg, tmpdir, err, sizeof(err)), -1);
  ck_assert_msg(strstr(err, ": cannot read: Is a directory") != NULL, "%s",
                err);
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_all_problems_reported) {
  static const char text[] =
      "log_level = \"chatty\";\n"                               /* 1 */
      "kafka = { bootstrap_servers = \"h:1\"; };\n"             /* 2 */
      "dedup = { retention = \"forever\"; };\n"                 /* 3 */
      "pipelines = (\n"                                         /* 4 */
      "  { name = \"p\"; topics = [ \"t\" ]; plugin = \"x\";\n" /* 5 */
      "    members = 300;\n"                                    /* 6 */
      "    retry = { max = -1; };\n"                            /* 7 */
      "    kafka = { enable_auto_offset_store = false; }; }\n"  /* 8 */
      ");\n";
  static const char *const want[] = {
      ":1: log_level: must be",
      ":3: dedup.retention: must be a duration",
      ":5: pipelines[0].group_id: required",
      ":6: pipelines[0].members: must be between 1 and 256 (got 300)",
      ":7: pipelines[0].retry.max: must be between 0 and 1000 (got -1)",
      ":8: pipelines[0].kafka.enable_auto_offset_store: set by khost"};
  cfg_t cfg;
  char err[4096], *path;

  ck_assert_int_eq(load_text(&cfg, text, err, sizeof(err), &path), -1);
  for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
    char *line = NULL;
    ck_assert_int_ge(asprintf(&line, "%s%s", path, want[i]), 0);
    ck_assert_msg(strstr(err, line) != NULL, "want \"%s\" in: %s", want[i],
                  err);
    free(line);
  }
  ck_assert_int_eq(count_lines(err), 6);
  cfg_free(&cfg);
  free(path);
}
END_TEST

START_TEST(test_error_truncated) {
  cfg_t cfg;
  char err[12], *path;

  ck_assert_int_eq(load_text(&cfg, "bogus = 1;\n", err, sizeof(err), &path),
                   -1);
  ck_assert_uint_eq(strlen(err), sizeof(err) - 1);
  ck_assert_int_eq(strncmp(err, path, sizeof(err) - 1), 0);
  cfg_free(&cfg);
  free(path);
}
END_TEST

/* A config with a password that others can read loads, with a warning
 * naming the file, the property and the mode; at 0600 it loads silently. */
START_TEST(test_loose_secrets_warned) {
  static const char text[] =
      "kafka = { bootstrap_servers = \"h:1\"; sasl_mechanism = \"PLAIN\";\n"
      "  sasl_username = \"u\"; sasl_password = \"hunter2\"; };\n" PIPE_OPEN
          PIPE_CLOSE;
  cfg_t cfg;
  char err[4096], *path, *logpath = NULL, *logged;

  ck_assert_int_ge(asprintf(&logpath, "%s/khost.log", tmpdir), 0);
  int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  log_set_fd(fd);
  ck_assert_int_eq(load_text(&cfg, text, err, sizeof(err), &path), 0);
  cfg_free(&cfg);
  ck_assert_int_eq(chmod(path, 0644), 0);
  ck_assert_int_eq(cfg_load(&cfg, path, err, sizeof(err)), 0);
  cfg_free(&cfg);
  logged = tu_read_file(logpath);
  ck_assert_msg(strstr(logged, "holds secrets (sasl.password) and others can "
                               "read it (mode 0644)") != NULL,
                "log: %s", logged);
  ck_assert_msg(strstr(logged, "hunter2") == NULL, "secret shown: %s", logged);
  free(logged);
  ck_assert_int_eq(ftruncate(fd, 0), 0);
  ck_assert_int_eq(chmod(path, 0600), 0);
  ck_assert_int_eq(cfg_load(&cfg, path, err, sizeof(err)), 0);
  cfg_free(&cfg);
  logged = tu_read_file(logpath);
  ck_assert_str_eq(logged, "");
  log_set_fd(2);
  close(fd);
  free(logged);
  free(logpath);
  free(path);
}
END_TEST

START_TEST(test_secret_value_not_shown) {
  static const char text[] =
      "kafka = { bootstrap_servers = \"h:1\";\n"
      "  sasl_passwords = \"hunter2\"; };\n" PIPE_OPEN PIPE_CLOSE;
  cfg_t cfg;
  char err[4096], *path, *expect = NULL;

  ck_assert_int_eq(load_text(&cfg, text, err, sizeof(err), &path), -1);
  ck_assert_int_ge(asprintf(&expect,
                            "%s:2: kafka.sasl_passwords: No such "
                            "configuration property",
                            path),
                   0);
  ck_assert_msg(strstr(err, expect) != NULL, "got: %s", err);
  ck_assert_msg(strstr(err, "hunter2") == NULL, "secret shown: %s", err);
  cfg_free(&cfg);
  free(expect);
  free(path);
}
END_TEST

/* ------------------------------------------------------------ preflight */

/* Loads text (which must be valid) and runs preflight_check(what). */
static int preflight_text(const char *text, int what, char *err, size_t errlen,
                          char **path) {
  cfg_t cfg;
  char lerr[4096];
  int rc = load_text(&cfg, text, lerr, sizeof(lerr), path);
  ck_assert_msg(rc == 0, "config does not load: %s", lerr);
  err[0] = '\0';
  int n = preflight_check(&cfg, what, err, errlen);
  cfg_free(&cfg);
  return n;
}

static void assert_has_text(const char *text, const char *needle) {
  ck_assert_msg(strstr(text, needle) != NULL, "want \"%s\" in:\n%s", needle,
                text);
}

static void assert_problem(const char *err, const char *path,
                           const char *expect) {
  char *want = NULL;
  ck_assert_int_ge(asprintf(&want, "%s%s", path, expect), 0);
  ck_assert_msg(strstr(err, want) != NULL, "want \"%s\" in:\n%s", want, err);
  free(want);
}

/* librdkafka would read "127.0.0.1:90x2" as port 90: each malformed server
 * is a problem with file, line and key; good forms pass. */
START_TEST(test_preflight_host_port) {
  static const char text[] =
      "kafka = {\n"
      "  bootstrap_servers = \"127.0.0.1:90x2,h1:9092, SSL://h2:9093,"
      "[::1]:9094,h3,:9092\";\n"
      "};\n" PIPE_OPEN "    kafka = { bootstrap_servers = \"h:0,[::1\"; };\n"
      "    dedup = false;\n" PIPE_CLOSE;
  char err[4096], *path;
  int n = preflight_text(text, PREFLIGHT_SYNTAX, err, sizeof(err), &path);
  ck_assert_msg(n == 4, "%d problems, not 4:\n%s", n, err);
  assert_problem(err, path,
                 ":2: kafka.bootstrap_servers: \"127.0.0.1:90x2\": the port "
                 "\"90x2\" is not a number from 1 to 65535");
  assert_problem(err, path,
                 ":2: kafka.bootstrap_servers: \":9092\": no host name");
  assert_problem(err, path,
                 ":7: pipelines[0].kafka.bootstrap_servers: \"h:0\": the "
                 "port \"0\" is not");
  assert_problem(err, path,
                 ":7: pipelines[0].kafka.bootstrap_servers: \"[::1\": an "
                 "IPv6 address is written [address]:port");
  free(path);
}
END_TEST

/* A host that does not resolve (.invalid never does, RFC 6761); numeric
 * addresses and localhost do. Only with PREFLIGHT_RESOLVE. */
START_TEST(test_preflight_resolve) {
  static const char text[] =
      "kafka = { bootstrap_servers = \"127.0.0.1:9092,localhost:9092,"
      "[::1]:9092,broker.invalid:9092\"; };\n" PIPE_OPEN
      "    dedup = false;\n" PIPE_CLOSE;
  char err[4096], *path;
  ck_assert_int_eq(
      preflight_text(text, PREFLIGHT_SYNTAX, err, sizeof(err), &path), 0);
  free(path);
  int n = preflight_text(text, PREFLIGHT_RESOLVE, err, sizeof(err), &path);
  ck_assert_msg(n == 1, "%d problems, not 1:\n%s", n, err);
  assert_problem(err, path,
                 ":1: kafka.bootstrap_servers: \"broker.invalid:9092\": "
                 "cannot resolve host broker.invalid: ");
  free(path);
}
END_TEST

/* The dedup database's directory: missing, or a file; a good one passes,
 * and nothing is created either way. */
START_TEST(test_preflight_dedup_dir) {
  char *text = NULL, *path, *file = tu_write_file(tmpdir, "plain", "x");
  char err[4096];
  static const char *const dirs[] = {"missing/sub", "plain", "."};
  for (size_t i = 0; i < sizeof(dirs) / sizeof(*dirs); i++) {
    free(text);
    ck_assert_int_ge(
        asprintf(&text,
                 KAFKA
                 "\ndedup = { path = \"%s/%s/d.db\"; };\n" PIPE_OPEN PIPE_CLOSE,
                 tmpdir, dirs[i]),
        0);
    int n = preflight_text(text, PREFLIGHT_DEDUP, err, sizeof(err), &path);
    if (i == 2) {
      ck_assert_msg(n == 0, "a writable directory refused:\n%s", err);
    } else {
      ck_assert_msg(n == 1, "%s: %d problems:\n%s", dirs[i], n, err);
      assert_problem(err, path, ":3: dedup.path: ");
      assert_has_text(err, i == 0 ? "No such file or directory"
                                  : "is not a directory");
    }
    free(path);
  }
  char *db = NULL;
  ck_assert_int_ge(asprintf(&db, "%s/./d.db", tmpdir), 0);
  ck_assert_msg(access(db, F_OK) != 0, "preflight created %s", db);
  free(db);
  free(text);
  free(file);
}
END_TEST

/* preflight_check(PREFLIGHT_DEDUP) of text in a child that the file
 * modes apply to (nobody when the test runs as root); its problems in
 * err, their count returned. */
static int preflight_as_other(const char *text, char *err, size_t errlen,
                              char **path) {
  enum { NOBODY = 65534 };
  cfg_t cfg;
  char lerr[4096];
  int fds[2], status;
  ck_assert_msg(load_text(&cfg, text, lerr, sizeof(lerr), path) == 0,
                "config does not load: %s", lerr);
  ck_assert_int_eq(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    char why[4096] = "";
    close(fds[0]);
    if (geteuid() == 0 &&
        (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0))
      _exit(100);
    int n = preflight_check(&cfg, PREFLIGHT_DEDUP, why, sizeof(why));
    if (write(fds[1], why, strlen(why)) < 0)
      _exit(101);
    _exit(n);
  }
  close(fds[1]);
  ssize_t got = read(fds[0], err, errlen - 1);
  err[got > 0 ? got : 0] = '\0';
  close(fds[0]);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) < 100,
                "child status %d", status);
  cfg_free(&cfg);
  return WEXITSTATUS(status);
}

/* A directory this user cannot create files in, and a database it cannot
 * write: each a problem naming file, line and key (the checks of
 * test_preflight_dedup_dir, as a user the modes apply to). */
START_TEST(test_preflight_dedup_not_writable) {
  char *ro = NULL, *rw = NULL, *text = NULL, *db = NULL, *path, err[4096];
  ck_assert_int_ge(asprintf(&ro, "%s/ro", tmpdir), 0);
  ck_assert_int_ge(asprintf(&rw, "%s/rw", tmpdir), 0);
  ck_assert_int_eq(chmod(tmpdir, 0711), 0); /* others may pass through */
  ck_assert_int_eq(mkdir(ro, 0755), 0);
  ck_assert_int_eq(chmod(ro, geteuid() == 0 ? 0755 : 0555), 0);
  ck_assert_int_eq(mkdir(rw, 0777), 0);
  ck_assert_int_eq(chmod(rw, 0777), 0); /* whatever the umask */

  ck_assert_int_ge(asprintf(&text,
                            KAFKA "\ndedup = { path = \"%s/d.db\"; "
                                  "};\n" PIPE_OPEN PIPE_CLOSE,
                            ro),
                   0);
  int n = preflight_as_other(text, err, sizeof(err), &path);
  ck_assert_msg(n == 1, "%d problems:\n%s", n, err);
  assert_problem(err, path,
                 ":3: dedup.path: this user cannot create files in ");
  assert_has_text(err, ro);
  free(path);

  /* A writable directory with a database of another user, mode 0644. */
  ck_assert_int_ge(asprintf(&db, "%s/d.db", rw), 0);
  free(text);
  ck_assert_int_ge(asprintf(&text,
                            KAFKA "\ndedup = { path = \"%s\"; "
                                  "};\n" PIPE_OPEN PIPE_CLOSE,
                            db),
                   0);
  int fd = open(db, O_CREAT | O_WRONLY, 0644);
  ck_assert_int_ge(fd, 0);
  close(fd);
  ck_assert_int_eq(chmod(db, geteuid() == 0 ? 0644 : 0444), 0);
  n = preflight_as_other(text, err, sizeof(err), &path);
  ck_assert_msg(n == 1, "%d problems:\n%s", n, err);
  assert_problem(err, path, ":3: dedup.path: ");
  assert_has_text(err, "d.db: Permission denied");
  free(path);

  /* The same directory and database, once this user may write them. */
  ck_assert_int_eq(chmod(db, 0666), 0);
  n = preflight_as_other(text, err, sizeof(err), &path);
  ck_assert_msg(n == 0, "a writable database refused:\n%s", err);
  free(path);
  ck_assert_int_eq(chmod(tmpdir, 0700), 0);
  free(db);
  free(text);
  free(rw);
  free(ro);
}
END_TEST

/* With the mock cluster, bootstrap.servers is not used: not checked. */
START_TEST(test_preflight_mock_skips_bootstrap) {
  static const char text[] =
      "mock = { brokers = 1; };\n"
      "kafka = { bootstrap_servers = \"x.invalid:1x\"; };\n" PIPE_OPEN
      "    dedup = false;\n" PIPE_CLOSE;
  char err[4096], *path;
  ck_assert_int_eq(
      preflight_text(text, PREFLIGHT_RESOLVE, err, sizeof(err), &path), 0);
  free(path);
}
END_TEST

Suite *config_suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("good");

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_full_file);
  tcase_add_test(tc, test_defaults);
  tcase_add_test(tc, test_order_by_words);
  tcase_add_test(tc, test_memory_limit);
  tcase_add_test(tc, test_failure_settings);
  tcase_add_test(tc, test_plugin_dir_from_env);
  tcase_add_test(tc, test_http_and_instance_id);
  tcase_add_test(tc, test_mock_defaults_without_bootstrap);
  tcase_add_test(tc, test_mock_generate);
  tcase_add_test(tc, test_example_loads);
  tcase_add_test(tc, test_include_relative_to_file);
  tcase_add_test(tc, test_store_group);
  suite_add_tcase(s, tc);

  tc = tcase_create("duration");
  tcase_add_test(tc, test_duration_good);
  tcase_add_test(tc, test_duration_bad);
  tcase_add_test(tc, test_size_good);
  tcase_add_test(tc, test_size_bad);
  suite_add_tcase(s, tc);

  tc = tcase_create("bad");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, test_bad_file, 0,
                      (int)(sizeof(bad_cases) / sizeof(*bad_cases)));
  tcase_add_test(tc, test_missing_file);
  tcase_add_test(tc, test_all_problems_reported);
  tcase_add_test(tc, test_error_truncated);
  tcase_add_test(tc, test_secret_value_not_shown);
  tcase_add_test(tc, test_conninfo_bad_password_hidden);
  tcase_add_test(tc, test_loose_secrets_warned);
  suite_add_tcase(s, tc);

  tc = tcase_create("preflight");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_preflight_host_port);
  tcase_add_test(tc, test_preflight_resolve);
  tcase_add_test(tc, test_preflight_dedup_dir);
  tcase_add_test(tc, test_preflight_dedup_not_writable);
  tcase_add_test(tc, test_preflight_mock_skips_bootstrap);
  suite_add_tcase(s, tc);
  return s;
}
