/*
 * Tests of the plugin loader: loading real .so fixtures with dlopen, ABI
 * checks, instance creation with config lookups, the host service table and
 * the mapping of handle() results.
 */
#include <check.h>
#include <fcntl.h>
#include <glib.h>
#include <libconfig.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "plugin_loader.h"
#include "testutil.h"

static char *tmpdir;
static char *log_path;
static int log_fd = -1;
static config_t cfg;

/* Log lines of the tests go to a file they can read back. */
static void setup(void) {
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  ck_assert_int_ge(asprintf(&log_path, "%s/khost.log", tmpdir), 0);
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  ck_assert_int_ge(log_fd, 0);
  log_set_fd(log_fd);
  log_set_level(KHOST_LOG_INFO);
  config_init(&cfg);
}

static void teardown(void) {
  config_destroy(&cfg);
  log_set_fd(2);
  close(log_fd);
  tu_rm_rf(tmpdir);
  free(tmpdir);
  free(log_path);
}

/* ------------------------------------------------------------- helpers */

static plugin_t *load_fixture(const char *name) {
  char err[512] = "";
  plugin_t *p = NULL;
  char *path = tu_fixture(name);
  ck_assert_msg(plugin_load(&p, path, err, sizeof(err)) == 0, "%s", err);
  ck_assert_ptr_nonnull(p);
  free(path);
  return p;
}

/* Loading path fails, and the message names the path and holds reason. */
static void expect_load_error(const char *path, const char *reason) {
  char err[512] = "";
  plugin_t *p = (plugin_t *)&p; /* must be reset to NULL */
  ck_assert_int_eq(plugin_load(&p, path, err, sizeof(err)), -1);
  ck_assert_ptr_null(p);
  ck_assert_msg(strncmp(err, path, strlen(path)) == 0,
                "error does not start with the path: %s", err);
  ck_assert_msg(strstr(err, reason), "error lacks \"%s\": %s", reason, err);
}

/* The config group of pipelines[idx], parsed from text. */
static config_setting_t *plugin_group(const char *text, int idx) {
  ck_assert_msg(config_read_string(&cfg, text) == CONFIG_TRUE, "%s:%d: %s",
                "text", config_error_line(&cfg), config_error_text(&cfg));
  config_setting_t *list = config_lookup(&cfg, "pipelines");
  ck_assert_ptr_nonnull(list);
  config_setting_t *pipeline = config_setting_get_elem(list, (unsigned)idx);
  ck_assert_ptr_nonnull(pipeline);
  return config_setting_get_member(pipeline, "config");
}

static int create(plugin_instance_t **pi, plugin_t *p, config_setting_t *group,
                  char *err, size_t errlen) {
  plugin_instance_opts_t opts = {.pipeline = "orders",
                                 .member = 1,
                                 .config = group,
                                 .config_file = "test.cfg"};
  return plugin_instance_create(pi, p, &opts, err, errlen);
}

static char *read_log(void) {
  char *text = tu_read_file(log_path);
  ck_assert_ptr_nonnull(text);
  return text;
}

static int count_substr(const char *text, const char *needle) {
  int n = 0;
  for (const char *s = text; (s = strstr(s, needle)); s += strlen(needle))
    n++;
  return n;
}

/* -------------------------------------------------------------- loading */

START_TEST(test_load_good) {
  char *path = tu_fixture("good");
  plugin_t *p = load_fixture("good");
  const khost_plugin_t *d = plugin_descriptor(p);
  ck_assert_str_eq(d->name, "good");
  ck_assert_str_eq(d->version, "1.0");
  ck_assert_uint_eq(d->abi_major, KHOST_ABI_MAJOR);
  ck_assert_str_eq(plugin_path(p), path);
  plugin_unload(p);
  free(path);
}
END_TEST

START_TEST(test_load_wrong_major) {
  char *path = tu_fixture("wrong_major");
  char reason[128];
  snprintf(reason, sizeof(reason),
           "built for khost plugin ABI %d.0, this khost provides %d.%d",
           KHOST_ABI_MAJOR + 1, KHOST_ABI_MAJOR, KHOST_ABI_MINOR);
  expect_load_error(path, reason);
  free(path);
}
END_TEST

/* A plugin built for a newer minor loads: the host reads the fields it
 * knows, and the plugin probes the host's table. */
START_TEST(test_load_newer_minor) {
  plugin_t *p = load_fixture("newer_minor");
  const khost_plugin_t *d = plugin_descriptor(p);
  plugin_instance_t *pi = NULL;
  char err[512] = "", want[128];
  ck_assert_uint_eq(d->abi_minor, KHOST_ABI_MINOR + 1);
  ck_assert_uint_gt(d->struct_size, sizeof(khost_plugin_t));
  ck_assert_ptr_null(d->settings);
  ck_assert_msg(plugin_start(p, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(create(&pi, p, NULL, err, sizeof(err)) == 0, "%s", err);
  khost_record_t rec = {.struct_size = sizeof(rec), .topic = "t"};
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_OK);
  char *text = read_log();
  snprintf(want, sizeof(want),
           "[orders/1/newer_minor] host ABI %d.%d, member_index present\n",
           KHOST_ABI_MAJOR, KHOST_ABI_MINOR);
  ck_assert_msg(strstr(text, want), "log: %s", text);
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

START_TEST(test_load_no_entry) {
  char *path = tu_fixture("no_entry");
  expect_load_error(path, "does not export khost_plugin_entry()");
  free(path);
}
END_TEST

START_TEST(test_load_missing_file) {
  char *path = NULL;
  ck_assert_int_ge(asprintf(&path, "%s/absent.so", tmpdir), 0);
  expect_load_error(path, "No such file or directory");
  free(path);
}
END_TEST

START_TEST(test_load_not_elf) {
  char *path = tu_write_file(tmpdir, "x.so",
                             "This is a text file, not a shared object at "
                             "all, and long enough to hold an ELF header.\n");
  expect_load_error(path, "invalid ELF header");
  free(path);
}
END_TEST

/* A plugin file group or others can write is refused; the same file with
 * tight permissions loads. */
START_TEST(test_load_loose_permissions) {
  char *good = tu_fixture("good"), *copy = NULL, *text;
  gsize len;
  plugin_t *p = NULL;
  char err[512];
  ck_assert(g_file_get_contents(good, &text, &len, NULL));
  ck_assert_int_ge(asprintf(&copy, "%s/loose.so", tmpdir), 0);
  ck_assert(g_file_set_contents(copy, text, (gssize)len, NULL));
  ck_assert_int_eq(chmod(copy, 0666), 0);
  expect_load_error(copy, "file is writable by group and others (mode 0666); "
                          "run chmod go-w on it");
  ck_assert_int_eq(chmod(copy, 0755), 0);
  ck_assert_msg(plugin_load(&p, copy, err, sizeof(err)) == 0, "%s", err);
  plugin_unload(p);
  g_free(text);
  free(copy);
  free(good);
}
END_TEST

static int noop_create(const khost_api_t *api, khost_host_t *host,
                       void **instance, char *err, size_t errlen) {
  *instance = NULL;
  return 0;
}

static khost_result_t noop_handle(void *instance, const khost_record_t *rec) {
  return KHOST_OK;
}

/* Descriptor checks that no fixture .so exercises. */
START_TEST(test_builtin_validation) {
  static const struct {
    khost_plugin_t desc;
    const char *reason;
  } cases[] = {
      {{KHOST_PLUGIN_INIT, .name = "a", .handle = noop_handle},
       "plugin a has no create() callback"},
      {{KHOST_PLUGIN_INIT, .name = "b", .create = noop_create},
       "plugin b has no handle() callback"},
      {{KHOST_PLUGIN_INIT, .create = noop_create, .handle = noop_handle},
       "plugin descriptor has no name"},
      {{.abi_major = KHOST_ABI_MAJOR,
        .struct_size = offsetof(khost_plugin_t, destroy),
        .name = "d",
        .create = noop_create,
        .handle = noop_handle},
       "needs at least"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    char err[512] = "";
    plugin_t *p = NULL;
    ck_assert_int_eq(
        plugin_load_builtin(&p, "builtin:x", &cases[i].desc, err, sizeof(err)),
        -1);
    ck_assert_ptr_null(p);
    ck_assert_msg(strncmp(err, "builtin:x: ", 11) == 0, "%s", err);
    ck_assert_msg(strstr(err, cases[i].reason), "case %zu: %s", i, err);
  }
  static const khost_plugin_t ok = {KHOST_PLUGIN_INIT, .name = "ok",
                                    .create = noop_create,
                                    .handle = noop_handle};
  plugin_t *p = NULL;
  char err[512] = "";
  ck_assert_int_eq(plugin_load_builtin(&p, "builtin:ok", &ok, err, sizeof(err)),
                   0);
  ck_assert_str_eq(plugin_descriptor(p)->name, "ok");
  ck_assert_ptr_eq(plugin_descriptor(p)->handle, noop_handle);
  plugin_unload(p);
}
END_TEST

/* ------------------------------------------------------------ instances */

START_TEST(test_init_fail) {
  plugin_t *p = load_fixture("init_fail");
  plugin_instance_t *pi = (plugin_instance_t *)&pi;
  char err[512] = "";
  ck_assert_int_eq(create(&pi, p, NULL, err, sizeof(err)), -1);
  ck_assert_ptr_null(pi);
  ck_assert_str_eq(err, "orders/1/init_fail: cannot reach the inventory "
                        "service");
  plugin_unload(p);
}
END_TEST

START_TEST(test_config_read) {
  config_setting_t *group = plugin_group(
      "pipelines = ({ config = { greeting = \"hi\"; limit = 3; }; });", 0);
  plugin_t *p = load_fixture("good");
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_msg(create(&pi, p, group, err, sizeof(err)) == 0, "%s", err);
  ck_assert_str_eq(plugin_instance_who(pi), "orders/1/good");
  char *text = read_log();
  ck_assert_msg(strstr(text, " [orders/1/good] greeting \"hi\", limit 3, "
                             "pipeline orders, member 1\n"),
                "log: %s", text);
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

START_TEST(test_config_absent_group) {
  plugin_t *p = load_fixture("good");
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_msg(create(&pi, p, NULL, err, sizeof(err)) == 0, "%s", err);
  char *text = read_log();
  ck_assert_msg(strstr(text, "greeting \"hello\", limit 10,"), "log: %s", text);
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

START_TEST(test_config_unknown_key) {
  config_setting_t *group = plugin_group("pipelines = (\n"
                                         "  { config = { }; },\n"
                                         "  { config = {\n"
                                         "      greeting = \"hi\";\n"
                                         "      gretting = \"hi\";\n"
                                         "  }; }\n"
                                         ");\n",
                                         1);
  plugin_t *p = load_fixture("good");
  plugin_instance_t *pi = (plugin_instance_t *)&pi;
  char err[512] = "";
  ck_assert_int_eq(create(&pi, p, group, err, sizeof(err)), -1);
  ck_assert_ptr_null(pi);
  ck_assert_str_eq(
      err, "test.cfg:5: pipelines[1].config.gretting: unknown setting for "
           "plugin good");
  plugin_unload(p);
}
END_TEST

START_TEST(test_config_wrong_type) {
  config_setting_t *group = plugin_group("pipelines = ({ config = {\n"
                                         "  greeting = \"hi\";\n"
                                         "  limit = \"x\";\n"
                                         "}; });\n",
                                         0);
  plugin_t *p = load_fixture("good");
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_int_eq(create(&pi, p, group, err, sizeof(err)), -1);
  const char *want =
      "test.cfg:3: pipelines[0].config.limit: expected an integer\n";
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
  /* The plugin's own message follows, naming the instance. */
  ck_assert_msg(strstr(err, "\norders/1/good: "), "%s", err);
  plugin_unload(p);
}
END_TEST

/* A built-in plugin that records what its lookups returned. */
static struct {
  int rc_str, rc_int, rc_big, rc_dbl, rc_int_dbl, rc_bool, rc_absent;
  const char *str;
  int64_t i, big;
  double dbl, int_dbl;
  int b;
  int64_t absent;
  int create_rc, destroys;
  khost_result_t result;
  const char *flush_msg;
} bt;

static int bt_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  bt.rc_str = api->config_string(host, "name", &bt.str);
  bt.rc_int = api->config_int(host, "count", &bt.i);
  bt.rc_big = api->config_int(host, "big", &bt.big);
  bt.rc_dbl = api->config_double(host, "ratio", &bt.dbl);
  bt.rc_int_dbl = api->config_double(host, "count", &bt.int_dbl);
  bt.rc_bool = api->config_bool(host, "on", &bt.b);
  bt.rc_absent = api->config_int(host, "absent", &bt.absent);
  *instance = &bt;
  if (bt.create_rc)
    snprintf(err, errlen, "told to fail");
  return bt.create_rc;
}

static khost_result_t bt_handle(void *instance, const khost_record_t *rec) {
  return bt.result;
}

static int bt_flush(void *instance, char *err, size_t errlen) {
  if (!bt.flush_msg)
    return 0;
  snprintf(err, errlen, "%s", bt.flush_msg);
  return -1;
}

static void bt_destroy(void *instance) {
  bt.destroys++;
}

static const khost_plugin_t bt_desc = {
    KHOST_PLUGIN_INIT,     .name = "bt",        .version = "0",
    .create = bt_create,   .handle = bt_handle, .flush = bt_flush,
    .destroy = bt_destroy,
};

static plugin_t *load_bt(void) {
  plugin_t *p = NULL;
  char err[256] = "";
  memset(&bt, 0, sizeof(bt));
  bt.absent = 42;
  ck_assert_msg(
      plugin_load_builtin(&p, "builtin:bt", &bt_desc, err, sizeof(err)) == 0,
      "%s", err);
  return p;
}

START_TEST(test_config_types) {
  config_setting_t *group = plugin_group(
      "pipelines = ({ config = { name = \"n\"; count = 3; big = 5000000000L;"
      " ratio = 0.25; on = true; }; });",
      0);
  plugin_t *p = load_bt();
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_msg(create(&pi, p, group, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(bt.rc_int, 1);
  ck_assert_int_eq(bt.i, 3);
  ck_assert_int_eq(bt.rc_big, 1);
  ck_assert_int_eq(bt.big, 5000000000LL);
  ck_assert_int_eq(bt.rc_dbl, 1);
  ck_assert_double_eq(bt.dbl, 0.25);
  ck_assert_int_eq(bt.rc_int_dbl, 1);
  ck_assert_double_eq(bt.int_dbl, 3.0);
  ck_assert_int_eq(bt.rc_bool, 1);
  ck_assert_int_eq(bt.b, 1);
  ck_assert_int_eq(bt.rc_absent, 0);
  ck_assert_int_eq(bt.absent, 42); /* untouched: the default survives */
  ck_assert_int_eq(bt.rc_str, 1);
  /* Strings stay valid until destroy(), even past the libconfig tree. */
  config_destroy(&cfg);
  config_init(&cfg);
  ck_assert_str_eq(bt.str, "n");
  plugin_instance_destroy(pi);
  ck_assert_int_eq(bt.destroys, 1);
  plugin_unload(p);
}
END_TEST

START_TEST(test_config_wrong_types_all_reported) {
  config_setting_t *group = plugin_group("pipelines = ({ config = {\n"
                                         "  name = 1;\n"
                                         "  count = 1.5;\n"
                                         "  ratio = \"x\";\n"
                                         "  on = 1;\n"
                                         "}; });\n",
                                         0);
  plugin_t *p = load_bt();
  plugin_instance_t *pi = (plugin_instance_t *)&pi;
  char err[1024] = "";
  ck_assert_int_eq(create(&pi, p, group, err, sizeof(err)), -1);
  ck_assert_ptr_null(pi);
  ck_assert_int_eq(bt.rc_str, -1);
  ck_assert_int_eq(bt.rc_int, -1);
  ck_assert_int_eq(bt.rc_dbl, -1);
  ck_assert_int_eq(bt.rc_bool, -1);
  ck_assert_msg(strstr(err, "test.cfg:2: pipelines[0].config.name: expected "
                            "a string\n"),
                "%s", err);
  ck_assert_msg(strstr(err, "test.cfg:3: pipelines[0].config.count: expected "
                            "an integer\n"),
                "%s", err);
  ck_assert_msg(strstr(err, "test.cfg:4: pipelines[0].config.ratio: expected "
                            "a number\n"),
                "%s", err);
  ck_assert_msg(strstr(err, "test.cfg:5: pipelines[0].config.on: expected a "
                            "boolean"),
                "%s", err);
  /* create() succeeded, so the host must destroy what it made. */
  ck_assert_int_eq(bt.destroys, 1);
  plugin_unload(p);
}
END_TEST

START_TEST(test_create_failure_no_destroy) {
  plugin_t *p = load_bt();
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  bt.create_rc = -1;
  ck_assert_int_eq(create(&pi, p, NULL, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "orders/1/bt: told to fail");
  ck_assert_int_eq(bt.destroys, 0);
  plugin_unload(p);
}
END_TEST

START_TEST(test_unknown_key_destroys) {
  config_setting_t *group =
      plugin_group("pipelines = ({ config = { nmae = \"n\"; }; });", 0);
  plugin_t *p = load_bt();
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_int_eq(create(&pi, p, group, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "test.cfg:1: pipelines[0].config.nmae: unknown "
                        "setting for plugin bt");
  ck_assert_int_eq(bt.destroys, 1);
  plugin_unload(p);
}
END_TEST

START_TEST(test_config_not_a_group) {
  config_setting_t *group = plugin_group("pipelines = ({ config = 7; });", 0);
  plugin_t *p = load_bt();
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_int_eq(create(&pi, p, group, err, sizeof(err)), -1);
  ck_assert_msg(strstr(err, "test.cfg:1: pipelines[0].config: expected a "
                            "group"),
                "%s", err);
  ck_assert_int_eq(bt.destroys, 0);
  plugin_unload(p);
}
END_TEST

/* -------------------------------------------------------- host services */

START_TEST(test_api_table) {
  const khost_api_t *api = plugin_host_api();
  ck_assert_uint_eq(api->struct_size, sizeof(khost_api_t));
  ck_assert_uint_eq(api->abi_major, KHOST_ABI_MAJOR);
  ck_assert_uint_eq(api->abi_minor, KHOST_ABI_MINOR);
}
END_TEST

static void expect_header_at(const khost_record_t *rec, size_t idx,
                             const char *name, const char *value) {
  const khost_api_t *api = plugin_host_api();
  const char *n = NULL;
  const void *v = (void *)&n;
  size_t len = 99;
  ck_assert_int_eq(api->header_at(rec, idx, &n, &v, &len), 1);
  ck_assert_str_eq(n, name);
  if (!value) {
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(len, 0);
    return;
  }
  ck_assert_uint_eq(len, strlen(value));
  ck_assert_int_eq(memcmp(v, value, len), 0);
}

START_TEST(test_headers) {
  const khost_api_t *api = plugin_host_api();
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(5);
  rd_kafka_header_add(hdrs, "eventId", -1, "e-1", 3);
  rd_kafka_header_add(hdrs, "dup", -1, "a", 1);
  rd_kafka_header_add(hdrs, "nul", -1, NULL, 0);
  rd_kafka_header_add(hdrs, "dup", -1, "b", 1);
  khost_record_t rec = {.struct_size = sizeof(rec), .host_priv = hdrs};
  const void *v = NULL;
  size_t len = 0;

  ck_assert_int_eq(api->header_get(&rec, "dup", &v, &len), 1);
  ck_assert_uint_eq(len, 1);
  ck_assert_int_eq(memcmp(v, "b", 1), 0); /* the last one */
  ck_assert_int_eq(api->header_get(&rec, "nul", &v, &len), 1);
  ck_assert_ptr_null(v);
  ck_assert_int_eq(api->header_get(&rec, "missing", &v, &len), 0);
  ck_assert_uint_eq(api->header_count(&rec), 4);
  expect_header_at(&rec, 0, "eventId", "e-1");
  expect_header_at(&rec, 1, "dup", "a");
  expect_header_at(&rec, 2, "nul", NULL);
  expect_header_at(&rec, 3, "dup", "b");
  ck_assert_int_eq(api->header_at(&rec, 4, NULL, NULL, NULL), 0);

  rec.host_priv = NULL; /* a record without headers */
  ck_assert_uint_eq(api->header_count(&rec), 0);
  ck_assert_int_eq(api->header_get(&rec, "dup", &v, &len), 0);
  ck_assert_int_eq(api->header_at(&rec, 0, NULL, NULL, NULL), 0);
  rd_kafka_headers_destroy(hdrs);
}
END_TEST

/* ------------------------------------------------------ handle and flush */

static khost_record_t scripted_rec(int64_t offset, const char *value,
                                   uint32_t attempt, const char *event_id) {
  return (khost_record_t){.struct_size = sizeof(khost_record_t),
                          .topic = "t",
                          .partition = 3,
                          .offset = offset,
                          .timestamp = -1,
                          .value = value,
                          .value_len = strlen(value),
                          .event_id = event_id,
                          .event_id_len = event_id ? strlen(event_id) : 0,
                          .attempt = attempt};
}

START_TEST(test_handle_results) {
  char *out = NULL, text[512];
  ck_assert_int_ge(asprintf(&out, "%s/scripted.log", tmpdir), 0);
  snprintf(text, sizeof(text),
           "pipelines = ({ config = { log_path = \"%s\"; retry_times = 1; "
           "}; });",
           out);
  plugin_t *p = load_fixture("scripted");
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_msg(create(&pi, p, plugin_group(text, 0), err, sizeof(err)) == 0,
                "%s", err);
  static const struct {
    const char *value;
    uint32_t attempt;
    khost_result_t want;
  } calls[] = {{"hello", 1, KHOST_OK},
               {"fail: bad", 1, KHOST_FAIL},
               {"fatal!", 1, KHOST_FATAL},
               {"retry", 1, KHOST_RETRY},
               {"retry", 2, KHOST_OK}};
  for (size_t i = 0; i < 5; i++) {
    khost_record_t rec = scripted_rec(10 + (int64_t)i, calls[i].value,
                                      calls[i].attempt, i == 1 ? "e-7" : NULL);
    ck_assert_int_eq(plugin_instance_handle(pi, &rec), calls[i].want);
  }
  plugin_instance_destroy(pi);

  char *lines = tu_read_file(out), *save = NULL, *line;
  ck_assert_ptr_nonnull(lines);
  size_t i = 0;
  for (line = strtok_r(lines, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save), i++) {
    char topic[16], eid[16];
    int part, result;
    long long off, ms;
    unsigned attempt;
    ck_assert_int_lt(i, 5);
    ck_assert_int_eq(sscanf(line, "%15s %d %lld %u %15s %d %lld", topic, &part,
                            &off, &attempt, eid, &result, &ms),
                     7);
    ck_assert_str_eq(topic, "t");
    ck_assert_int_eq(part, 3);
    ck_assert_int_eq(off, 10 + (long long)i);
    ck_assert_uint_eq(attempt, calls[i].attempt);
    ck_assert_str_eq(eid, i == 1 ? "e-7" : "-");
    ck_assert_int_eq(result, calls[i].want);
    ck_assert_int_gt(ms, 0);
  }
  ck_assert_int_eq(i, 5);
  free(lines);
  free(out);
  plugin_unload(p);
}
END_TEST

START_TEST(test_scripted_needs_log_path) {
  plugin_t *p = load_fixture("scripted");
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_int_eq(create(&pi, p, NULL, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "orders/1/scripted: the setting log_path is required");
  plugin_unload(p);
}
END_TEST

START_TEST(test_handle_out_of_range) {
  plugin_t *p = load_bt();
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_msg(create(&pi, p, NULL, err, sizeof(err)) == 0, "%s", err);
  khost_record_t rec = scripted_rec(1, "x", 1, NULL);
  bt.result = (khost_result_t)42;
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_FAIL);
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_FAIL);
  bt.result = (khost_result_t)-1;
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_FAIL);
  bt.result = KHOST_RETRY;
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_RETRY);
  char *text = read_log();
  ck_assert_int_eq(count_substr(text, "returned 42"), 1);
  ck_assert_int_eq(count_substr(text, "[orders/1/bt] "), 1);
  ck_assert_int_eq(count_substr(text, "returned -1"), 0); /* once only */
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

START_TEST(test_flush) {
  plugin_t *p = load_bt(), *good = load_fixture("good");
  plugin_instance_t *pi = NULL, *gi = NULL;
  char err[512] = "";
  ck_assert_msg(create(&pi, p, NULL, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(plugin_instance_flush(pi, err, sizeof(err)), 0);
  bt.flush_msg = "disk on fire";
  ck_assert_int_eq(plugin_instance_flush(pi, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "disk on fire");
  bt.flush_msg = "";
  ck_assert_int_eq(plugin_instance_flush(pi, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "flush() failed without a message");
  /* good has no flush(): nothing to do is success. */
  ck_assert_msg(create(&gi, good, NULL, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(plugin_instance_flush(gi, err, sizeof(err)), 0);
  plugin_instance_destroy(gi);
  plugin_instance_destroy(pi);
  plugin_unload(good);
  plugin_unload(p);
}
END_TEST

/* ------------------------------------------------------------- logging */

START_TEST(test_log_through_api) {
  plugin_t *p = load_fixture("good");
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  plugin_instance_opts_t opts = {.pipeline = "payments", .member = 4};
  ck_assert_msg(plugin_instance_create(&pi, p, &opts, err, sizeof(err)) == 0,
                "%s", err);
  log_set_level(KHOST_LOG_WARNING); /* the create() line is info */
  plugin_instance_destroy(pi);
  pi = NULL;
  ck_assert_msg(plugin_instance_create(&pi, p, &opts, err, sizeof(err)) == 0,
                "%s", err);
  char *text = read_log();
  ck_assert_int_eq(count_substr(text, " [payments/4/good] greeting"), 1);
  ck_assert_ptr_nonnull(strstr(text, "pipeline payments, member 4\n"));
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

/* ------------------------------------------- the log example plugin */

static plugin_instance_t *log_plugin(plugin_t **p, const char *settings,
                                     char *err, size_t errlen) {
  char *text = NULL;
  plugin_instance_t *pi = NULL;
  ck_assert_msg(
      plugin_load(p, TOP_BUILDDIR "/plugins/.libs/log.so", err, errlen) == 0,
      "%s", err);
  ck_assert_int_ge(
      asprintf(&text, "pipelines = ({ config = { %s }; });", settings), 0);
  if (create(&pi, *p, plugin_group(text, 0), err, errlen) < 0)
    pi = NULL;
  free(text);
  return pi;
}

START_TEST(test_log_plugin_lines) {
  plugin_t *p = NULL;
  char err[512] = "";
  plugin_instance_t *pi =
      log_plugin(&p, "level = \"notice\"; max_value = 12;", err, sizeof(err));
  ck_assert_msg(pi != NULL, "%s", err);
  const char *value = "h\xc3\xa9llo\x01\"w\\orld, and more";
  khost_record_t rec = scripted_rec(7, value, 1, "e-1");
  rec.topic = "orders";
  rec.partition = 2;
  rec.key = "k\xff";
  rec.key_len = 2;
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_OK);
  rec.value = NULL;
  rec.value_len = 0;
  rec.key = NULL;
  rec.event_id = NULL;
  rec.attempt = 3;
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_OK);
  char *text = read_log();
  ck_assert_msg(strstr(text,
                       "[orders/1/log] orders[2]@7 event_id=\"e-1\" "
                       "key=\"k\\xff\" value=\"h\xc3\xa9llo\\x01\\\"w\\\\or"
                       "...\" (24 bytes)\n"),
                "log: %s", text);
  ck_assert_msg(strstr(text, "[orders/1/log] orders[2]@7 event_id=null "
                             "key=null value=null attempt=3\n"),
                "log: %s", text);
  ck_assert_ptr_nonnull(strstr(text, "notice "));
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

START_TEST(test_log_plugin_level) {
  plugin_t *p = NULL;
  char err[512] = "";
  plugin_instance_t *pi =
      log_plugin(&p, "level = \"debug\";", err, sizeof(err));
  ck_assert_msg(pi != NULL, "%s", err);
  khost_record_t rec = scripted_rec(7, "v", 1, NULL);
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_OK);
  char *text = read_log();
  ck_assert_str_eq(text, ""); /* debug lines are below the host's level */
  free(text);
  plugin_instance_destroy(pi);
  plugin_unload(p);
}
END_TEST

START_TEST(test_log_plugin_bad_settings) {
  plugin_t *p = NULL;
  char err[512] = "";
  ck_assert_ptr_null(log_plugin(&p, "level = \"loud\";", err, sizeof(err)));
  ck_assert_str_eq(err, "orders/1/log: level \"loud\" is not one of err, "
                        "warning, notice, info, debug");
  plugin_unload(p);
  ck_assert_ptr_null(log_plugin(&p, "max_value = -1;", err, sizeof(err)));
  ck_assert_msg(strstr(err, "max_value must be between 0 and"), "%s", err);
  plugin_unload(p);
}
END_TEST

/* ---------------------------------------------------------- ABI 1.1 */

START_TEST(test_api_has) {
  khost_api_t api = *plugin_host_api();
  ck_assert(KHOST_API_HAS(&api, log));
  ck_assert(KHOST_API_HAS(&api, member_index));
  /* An older host's table ends before the entry. */
  api.struct_size = offsetof(khost_api_t, pipeline_name);
  ck_assert(KHOST_API_HAS(&api, header_at));
  ck_assert(!KHOST_API_HAS(&api, pipeline_name));
  ck_assert(!KHOST_API_HAS(&api, member_index));
  api.header_at = NULL; /* covered but not offered */
  ck_assert(!KHOST_API_HAS(&api, header_at));
}
END_TEST

/* A plugin built against the 1.0 header: a shorter descriptor whose
 * missing fields read as NULL, and the lookup-based unknown-key check. */
START_TEST(test_v1_0_plugin) {
  config_setting_t *group = plugin_group(
      "pipelines = ({ config = { greeting = \"hi\"; limit = 2; }; });", 0);
  plugin_t *p = load_fixture("v1_0");
  const khost_plugin_t *d = plugin_descriptor(p);
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_uint_eq(d->abi_minor, 0);
  ck_assert_uint_eq(d->struct_size, offsetof(khost_plugin_t, destroy) +
                                        sizeof(void (*)(void *)));
  ck_assert_ptr_null(d->init);
  ck_assert_ptr_null(d->fini);
  ck_assert_ptr_null(d->assigned);
  ck_assert_ptr_null(d->revoked);
  ck_assert_ptr_null(d->settings);
  ck_assert_ptr_null(plugin_schema(p));
  ck_assert_msg(plugin_start(p, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(create(&pi, p, group, err, sizeof(err)) == 0, "%s", err);
  khost_record_t rec = scripted_rec(1, "x", 1, NULL);
  ck_assert_int_eq(plugin_instance_handle(pi, &rec), KHOST_FAIL);
  ck_assert_int_eq(plugin_instance_flush(pi, err, sizeof(err)), 0);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, "t", 0);
  plugin_instance_assigned(pi, parts); /* 1.0: nothing to call */
  plugin_instance_revoked(pi, parts, 0);
  rd_kafka_topic_partition_list_destroy(parts);
  plugin_instance_destroy(pi);
  char *text = read_log();
  ck_assert_msg(strstr(text, "[orders/1/v1_0] v1.0 hi, limit 2\n"), "%s", text);
  ck_assert_msg(strstr(text, "[orders/1/v1_0] flush 1\n"), "%s", text);
  free(text);
  config_destroy(&cfg);
  config_init(&cfg);
  group = plugin_group("pipelines = ({ config = { greting = \"hi\"; }; });", 0);
  ck_assert_int_eq(create(&pi, p, group, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "test.cfg:1: pipelines[0].config.greting: unknown "
                        "setting for plugin v1_0");
  plugin_unload(p);
}
END_TEST

/* The lifecycle fixture's lines (LIFECYCLE_LOG), "" when none. */
static char *lifecycle_log(void) {
  char *path = NULL, *text = NULL;
  ck_assert_int_ge(asprintf(&path, "%s/lifecycle.log", tmpdir), 0);
  text =
      g_file_test(path, G_FILE_TEST_EXISTS) ? tu_read_file(path) : strdup("");
  ck_assert_ptr_nonnull(text);
  free(path);
  return text;
}

static plugin_t *load_lifecycle(const char *path) {
  char *log = NULL, err[512] = "";
  plugin_t *p = NULL;
  ck_assert_int_ge(asprintf(&log, "%s/lifecycle.log", tmpdir), 0);
  ck_assert_int_eq(setenv("LIFECYCLE_LOG", log, 1), 0);
  ck_assert_msg(plugin_load(&p, path, err, sizeof(err)) == 0, "%s", err);
  free(log);
  return p;
}

/* init() once per loaded object, before the first create(); fini() once,
 * after the last destroy() and the last unload, even when two paths name
 * the same file. */
START_TEST(test_init_fini_order) {
  char *path = tu_fixture("lifecycle"), *other = NULL;
  char *dir = g_path_get_dirname(path), *base = g_path_get_basename(path);
  ck_assert_int_ge(asprintf(&other, "%s/./%s", dir, base), 0);
  config_setting_t *group =
      plugin_group("pipelines = ({ config = { label = \"lc\"; }; });", 0);
  plugin_t *a = load_lifecycle(path), *b = load_lifecycle(other);
  plugin_instance_t *i0 = NULL, *i1 = NULL;
  plugin_instance_opts_t opts = {.pipeline = "orders", .config = group};
  char err[512] = "";
  ck_assert_msg(plugin_start(a, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(plugin_start(b, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(plugin_instance_create(&i0, a, &opts, err, sizeof(err)) == 0,
                "%s", err);
  opts.member = 1;
  ck_assert_msg(plugin_instance_create(&i1, b, &opts, err, sizeof(err)) == 0,
                "%s", err);
  plugin_instance_destroy(i0);
  plugin_instance_destroy(i1);
  plugin_unload(a);
  char *text = lifecycle_log();
  ck_assert_int_eq(count_substr(text, "fini"), 0); /* b still loaded */
  free(text);
  plugin_unload(b);
  text = lifecycle_log();
  ck_assert_str_eq(text, "init\n"
                         "create lc orders/0 limit=7 ratio=0.5 verbose=0\n"
                         "create lc orders/1 limit=7 ratio=0.5 verbose=0\n"
                         "destroy lc/0\n"
                         "destroy lc/1\n"
                         "fini\n");
  free(text);
  text = read_log(); /* init() and fini() log under the plugin's name */
  ck_assert_msg(strstr(text, " [lifecycle] init\n"), "%s", text);
  ck_assert_msg(strstr(text, " [lifecycle] fini\n"), "%s", text);
  free(text);
  g_free(dir);
  g_free(base);
  free(other);
  free(path);
}
END_TEST

START_TEST(test_init_failure) {
  char *path = tu_fixture("lifecycle"), want[1024];
  plugin_t *p = load_lifecycle(path);
  plugin_instance_t *pi = (plugin_instance_t *)&pi;
  char err[512] = "";
  ck_assert_int_eq(setenv("LIFECYCLE_INIT_ERROR", "no licence server", 1), 0);
  ck_assert_int_eq(plugin_start(p, err, sizeof(err)), -1);
  snprintf(want, sizeof(want),
           "%s: plugin lifecycle: init() failed: no licence server", path);
  ck_assert_str_eq(err, want);
  /* No instance without init(), and no fini() after a failed init(). */
  ck_assert_int_eq(create(&pi, p, NULL, err, sizeof(err)), -1);
  ck_assert_ptr_null(pi);
  ck_assert_str_eq(err, "orders/1/lifecycle: plugin lifecycle was not "
                        "started");
  plugin_unload(p);
  char *text = lifecycle_log();
  ck_assert_str_eq(text, "");
  free(text);
  unsetenv("LIFECYCLE_INIT_ERROR");
  free(path);
}
END_TEST

/* An instance of the lifecycle fixture with the settings text; NULL with
 * err set when the host refuses them. */
static plugin_instance_t *lifecycle_instance(plugin_t **p, const char *settings,
                                             char *err, size_t errlen) {
  char *path = tu_fixture("lifecycle"), *text = NULL;
  plugin_instance_t *pi = NULL;
  *p = load_lifecycle(path);
  ck_assert_msg(plugin_start(*p, err, errlen) == 0, "%s", err);
  ck_assert_int_ge(
      asprintf(&text, "pipelines = ({ config = {\n%s}; });", settings), 0);
  if (create(&pi, *p, plugin_group(text, 0), err, errlen) != 0)
    pi = NULL;
  free(text);
  free(path);
  return pi;
}

START_TEST(test_schema_defaults) {
  plugin_t *p = NULL;
  char err[512] = "";
  plugin_instance_t *pi =
      lifecycle_instance(&p, "label = \"x\";\n", err, sizeof(err));
  ck_assert_msg(pi != NULL, "%s", err);
  plugin_instance_destroy(pi);
  plugin_unload(p);
  pi = lifecycle_instance(
      &p, "label = \"y\"; limit = 3; ratio = 2; verbose = true;\n", err,
      sizeof(err));
  ck_assert_msg(pi != NULL, "%s", err);
  plugin_instance_destroy(pi);
  plugin_unload(p);
  char *text = lifecycle_log();
  ck_assert_msg(strstr(text, "create x orders/1 limit=7 ratio=0.5 verbose=0\n"),
                "%s", text);
  ck_assert_msg(strstr(text, "create y orders/1 limit=3 ratio=2 verbose=1\n"),
                "%s", text);
  free(text);
}
END_TEST

/* Unknown keys and wrong types are found before create(), which is not
 * called; each names file, line and key. */
START_TEST(test_schema_errors) {
  plugin_t *p = NULL;
  char err[1024] = "";
  plugin_instance_t *pi = lifecycle_instance(&p,
                                             "label = 1;\n"
                                             "limit = \"3\";\n"
                                             "ratio = true;\n"
                                             "colour = \"red\";\n"
                                             "verbose = 0;\n",
                                             err, sizeof(err));
  ck_assert_ptr_null(pi);
  ck_assert_str_eq(err,
                   "test.cfg:2: pipelines[0].config.label: expected a string\n"
                   "test.cfg:3: pipelines[0].config.limit: expected an "
                   "integer\n"
                   "test.cfg:4: pipelines[0].config.ratio: expected a number\n"
                   "test.cfg:5: pipelines[0].config.colour: unknown setting "
                   "for plugin lifecycle\n"
                   "test.cfg:6: pipelines[0].config.verbose: expected a "
                   "boolean (true or false)");
  plugin_unload(p);
  char *text = lifecycle_log();
  ck_assert_str_eq(text, "init\nfini\n"); /* no create() */
  free(text);
}
END_TEST

START_TEST(test_schema_required) {
  plugin_t *p = NULL;
  char err[1024] = "";
  ck_assert_ptr_null(lifecycle_instance(&p, "limit = 1;\n", err, sizeof(err)));
  ck_assert_str_eq(err, "test.cfg:1: pipelines[0].config: missing setting "
                        "label (a string), required by plugin lifecycle");
  /* Without any config group. */
  plugin_instance_t *pi = (plugin_instance_t *)&pi;
  ck_assert_int_eq(create(&pi, p, NULL, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "test.cfg: pipeline orders: config: missing setting "
                        "label (a string), required by plugin lifecycle");
  plugin_unload(p);
}
END_TEST

/* A schema that cannot be right is refused when the plugin is loaded. */
START_TEST(test_schema_bad_declaration) {
  static const khost_setting_t twice[] = {{"a", KHOST_SETTING_INT, NULL, "", 0},
                                          {"a", KHOST_SETTING_INT, NULL, "", 0},
                                          {NULL, 0, NULL, NULL, 0}};
  static const khost_setting_t bad_int[] = {
      {"n", KHOST_SETTING_INT, "12x", "", 0}, {NULL, 0, NULL, NULL, 0}};
  static const khost_setting_t bad_bool[] = {
      {"b", KHOST_SETTING_BOOL, "yes", "", 0}, {NULL, 0, NULL, NULL, 0}};
  static const khost_setting_t bad_type[] = {
      {"t", (khost_setting_type_t)9, NULL, "", 0}, {NULL, 0, NULL, NULL, 0}};
  static const khost_setting_t empty[] = {{"", KHOST_SETTING_INT, NULL, "", 0},
                                          {NULL, 0, NULL, NULL, 0}};
  static const struct {
    const khost_setting_t *settings;
    const char *reason;
  } cases[] = {
      {twice, "setting a: declared twice"},
      {bad_int, "setting n: default \"12x\" is not an integer"},
      {bad_bool, "setting b: default \"yes\" is not a boolean (true or false)"},
      {bad_type, "setting t: unknown type 9"},
      {empty, "setting #1: empty name"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    khost_plugin_t d = {KHOST_PLUGIN_INIT, .name = "s", .create = noop_create,
                        .handle = noop_handle, .settings = cases[i].settings};
    char err[512] = "", want[512];
    plugin_t *p = NULL;
    ck_assert_int_eq(plugin_load_builtin(&p, "builtin:s", &d, err, sizeof(err)),
                     -1);
    ck_assert_ptr_null(p);
    snprintf(want, sizeof(want),
             "builtin:s: plugin s declares a bad config schema: %s",
             cases[i].reason);
    ck_assert_str_eq(err, want);
  }
}
END_TEST

/* assigned() and revoked() get the partitions and the lost flag; an empty
 * list calls nothing. */
START_TEST(test_assigned_revoked_calls) {
  plugin_t *p = NULL;
  char err[512] = "";
  plugin_instance_t *pi =
      lifecycle_instance(&p, "label = \"r\";\n", err, sizeof(err));
  ck_assert_msg(pi != NULL, "%s", err);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(2);
  rd_kafka_topic_partition_list_t *none = rd_kafka_topic_partition_list_new(0);
  rd_kafka_topic_partition_list_add(parts, "orders", 0);
  rd_kafka_topic_partition_list_add(parts, "refunds", 2);
  plugin_instance_assigned(pi, parts);
  plugin_instance_assigned(pi, none);
  plugin_instance_revoked(pi, parts, 0);
  plugin_instance_revoked(pi, none, 1);
  plugin_instance_revoked(pi, parts, 1);
  plugin_instance_destroy(pi);
  plugin_unload(p);
  char *text = lifecycle_log();
  ck_assert_str_eq(text, "init\n"
                         "create r orders/1 limit=7 ratio=0.5 verbose=0\n"
                         "assigned r/1 orders[0] refunds[2]\n"
                         "revoked r/1 lost=0 orders[0] refunds[2]\n"
                         "revoked r/1 lost=1 orders[0] refunds[2]\n"
                         "destroy r/1\n"
                         "fini\n");
  free(text);
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_topic_partition_list_destroy(none);
}
END_TEST

Suite *plugin_loader_suite(void) {
  Suite *s = suite_create("plugin_loader");
  TCase *tc = tcase_create("load");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_load_good);
  tcase_add_test(tc, test_load_wrong_major);
  tcase_add_test(tc, test_load_newer_minor);
  tcase_add_test(tc, test_load_no_entry);
  tcase_add_test(tc, test_load_missing_file);
  tcase_add_test(tc, test_load_not_elf);
  tcase_add_test(tc, test_load_loose_permissions);
  tcase_add_test(tc, test_builtin_validation);
  suite_add_tcase(s, tc);

  tc = tcase_create("instance");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_init_fail);
  tcase_add_test(tc, test_config_read);
  tcase_add_test(tc, test_config_absent_group);
  tcase_add_test(tc, test_config_unknown_key);
  tcase_add_test(tc, test_config_wrong_type);
  tcase_add_test(tc, test_config_types);
  tcase_add_test(tc, test_config_wrong_types_all_reported);
  tcase_add_test(tc, test_create_failure_no_destroy);
  tcase_add_test(tc, test_unknown_key_destroys);
  tcase_add_test(tc, test_config_not_a_group);
  suite_add_tcase(s, tc);

  tc = tcase_create("api");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_api_table);
  tcase_add_test(tc, test_headers);
  tcase_add_test(tc, test_handle_results);
  tcase_add_test(tc, test_scripted_needs_log_path);
  tcase_add_test(tc, test_handle_out_of_range);
  tcase_add_test(tc, test_flush);
  tcase_add_test(tc, test_log_through_api);
  suite_add_tcase(s, tc);

  tc = tcase_create("log_plugin");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_log_plugin_lines);
  tcase_add_test(tc, test_log_plugin_level);
  tcase_add_test(tc, test_log_plugin_bad_settings);
  suite_add_tcase(s, tc);

  tc = tcase_create("abi_1_1");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_api_has);
  tcase_add_test(tc, test_v1_0_plugin);
  tcase_add_test(tc, test_init_fini_order);
  tcase_add_test(tc, test_init_failure);
  tcase_add_test(tc, test_schema_defaults);
  tcase_add_test(tc, test_schema_errors);
  tcase_add_test(tc, test_schema_required);
  tcase_add_test(tc, test_schema_bad_declaration);
  tcase_add_test(tc, test_assigned_revoked_calls);
  suite_add_tcase(s, tc);
  return s;
}
