/*
 * Tests of the jsonl_sink example plugin, loaded from the build tree as a
 * real shared object and driven through the plugin loader.
 */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <libconfig.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "plugin_loader.h"
#include "testutil.h"

#define SINK_SO TOP_BUILDDIR "/plugins/.libs/jsonl_sink.so"

static char *tmpdir;
static char *out_path;
static char *log_path;
static int log_fd = -1;
static config_t cfg;
static plugin_t *sink;

static void setup(void) {
  char err[512] = "";
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  ck_assert_int_ge(asprintf(&out_path, "%s/out.jsonl", tmpdir), 0);
  ck_assert_int_ge(asprintf(&log_path, "%s/khost.log", tmpdir), 0);
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  ck_assert_int_ge(log_fd, 0);
  log_set_fd(log_fd);
  config_init(&cfg);
  ck_assert_msg(plugin_load(&sink, SINK_SO, err, sizeof(err)) == 0, "%s", err);
}

static void teardown(void) {
  plugin_unload(sink);
  config_destroy(&cfg);
  log_set_fd(2);
  close(log_fd);
  tu_rm_rf(tmpdir);
  free(tmpdir);
  free(out_path);
  free(log_path);
}

/* ------------------------------------------------------------- helpers */

/* Create an instance whose config group holds `settings`. */
static int try_sink(plugin_instance_t **pi, int member, const char *settings,
                    char *err, size_t errlen) {
  char *text = NULL;
  ck_assert_int_ge(
      asprintf(&text, "pipelines = ({ config = { %s }; });", settings), 0);
  config_destroy(&cfg);
  config_init(&cfg);
  ck_assert_msg(config_read_string(&cfg, text) == CONFIG_TRUE, "%s",
                config_error_text(&cfg));
  free(text);
  config_setting_t *group = config_setting_get_member(
      config_setting_get_elem(config_lookup(&cfg, "pipelines"), 0), "config");
  plugin_instance_opts_t opts = {.pipeline = "orders",
                                 .member = member,
                                 .config = group,
                                 .config_file = "test.cfg"};
  return plugin_instance_create(pi, sink, &opts, err, errlen);
}

/* An instance appending to path. */
static plugin_instance_t *new_sink(const char *path, int member,
                                   const char *more) {
  char *settings = NULL, err[512] = "";
  plugin_instance_t *pi = NULL;
  ck_assert_int_ge(asprintf(&settings, "path = \"%s\"; %s", path, more), 0);
  ck_assert_msg(try_sink(&pi, member, settings, err, sizeof(err)) == 0, "%s",
                err);
  free(settings);
  return pi;
}

static khost_record_t make_rec(const char *topic, int64_t offset,
                               const void *key, size_t key_len,
                               const void *value, size_t value_len) {
  return (khost_record_t){.struct_size = sizeof(khost_record_t),
                          .topic = topic,
                          .partition = 0,
                          .offset = offset,
                          .timestamp = -1,
                          .key = key,
                          .key_len = key_len,
                          .value = value,
                          .value_len = value_len,
                          .attempt = 1};
}

static void handle_ok(plugin_instance_t *pi, const khost_record_t *rec) {
  ck_assert_int_eq(plugin_instance_handle(pi, rec), KHOST_OK);
}

static void flush_ok(plugin_instance_t *pi) {
  char err[512] = "";
  ck_assert_msg(plugin_instance_flush(pi, err, sizeof(err)) == 0, "%s", err);
}

static off_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Every line of the output file, parsed; fails on a partial or bad line. */
static json_t *read_lines(void) {
  char *text = tu_read_file(out_path), *save = NULL;
  ck_assert_ptr_nonnull(text);
  size_t len = strlen(text);
  ck_assert_msg(len == 0 || text[len - 1] == '\n', "last line is partial");
  json_t *lines = json_array();
  for (char *l = strtok_r(text, "\n", &save); l;
       l = strtok_r(NULL, "\n", &save)) {
    json_error_t jerr;
    json_t *obj = json_loads(l, 0, &jerr);
    ck_assert_msg(obj != NULL, "bad line (%s): %.80s", jerr.text, l);
    json_array_append_new(lines, obj);
  }
  free(text);
  return lines;
}

static void expect_str(json_t *obj, const char *field, const char *want) {
  json_t *v = json_object_get(obj, field);
  ck_assert_msg(json_is_string(v), "%s is not a string", field);
  ck_assert_str_eq(json_string_value(v), want);
}

static void expect_null(json_t *obj, const char *field) {
  json_t *v = json_object_get(obj, field);
  ck_assert_msg(v && json_is_null(v), "%s is not null", field);
}

static void expect_int(json_t *obj, const char *field, json_int_t want) {
  json_t *v = json_object_get(obj, field);
  ck_assert_msg(json_is_integer(v), "%s is not an integer", field);
  ck_assert_int_eq(json_integer_value(v), want);
}

/* --------------------------------------------------------------- tests */

START_TEST(test_fields) {
  plugin_instance_t *pi = new_sink(out_path, 0, "fsync = true;");
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
  rd_kafka_header_add(hdrs, "eventId", -1, "e-1", 3);
  rd_kafka_header_add(hdrs, "dup", -1, "a", 1);
  rd_kafka_header_add(hdrs, "nul", -1, NULL, 0);
  rd_kafka_header_add(hdrs, "dup", -1, "b", 1);
  rd_kafka_header_add(hdrs, "bin", -1, "\xff\x00\x01", 3);
  rd_kafka_header_add(hdrs, "dup", -1, "c", 1);
  rd_kafka_header_add(hdrs, "text", -1, "Zo\xc3\xab", 4);
  const char *v1 = "{\"id\":7,\"name\":\"Zo\xc3\xab\"}";
  khost_record_t r1 = make_rec("orders", 41, "k1", 2, v1, strlen(v1));
  r1.partition = 2;
  r1.timestamp = 1700000000123LL;
  r1.event_id = "e-1";
  r1.event_id_len = 3;
  r1.host_priv = hdrs;
  khost_record_t r2 = make_rec("orders", 42, NULL, 0, "\xff\xfe", 2);
  khost_record_t r3 = make_rec("orders", 43, "\xc3\x28", 2, NULL, 0);
  khost_record_t r4 = make_rec("orders", 44, "", 0, "a\0b", 3);
  handle_ok(pi, &r1);
  handle_ok(pi, &r2);
  handle_ok(pi, &r3);
  handle_ok(pi, &r4);
  rd_kafka_headers_destroy(hdrs); /* the sink must have copied */
  flush_ok(pi);
  plugin_instance_destroy(pi);

  const char *start = "{\"topic\":\"orders\",\"partition\":2,\"offset\":41,"
                      "\"timestamp\":1700000000123,\"key\":\"k1\","
                      "\"event_id\":\"e-1\",\"headers\":{";
  char *text = tu_read_file(out_path);
  ck_assert_msg(strncmp(text, start, strlen(start)) == 0,
                "compact, in order: %.120s", text);
  free(text);
  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 4);

  json_t *o = json_array_get(lines, 0);
  ck_assert_uint_eq(json_object_size(o), 8);
  expect_str(o, "topic", "orders");
  expect_int(o, "partition", 2);
  expect_int(o, "offset", 41);
  expect_int(o, "timestamp", 1700000000123LL);
  expect_str(o, "key", "k1");
  expect_str(o, "event_id", "e-1");
  expect_str(o, "value", v1);
  json_t *h = json_object_get(o, "headers");
  ck_assert_uint_eq(json_object_size(h), 5);
  expect_str(h, "eventId", "e-1");
  expect_null(h, "nul");
  expect_str(h, "text", "Zo\xc3\xab");
  expect_str(json_object_get(h, "bin"), "base64", "/wAB");
  json_t *dup = json_object_get(h, "dup");
  ck_assert_msg(json_is_array(dup), "a repeated header is an array");
  ck_assert_uint_eq(json_array_size(dup), 3);
  ck_assert_str_eq(json_string_value(json_array_get(dup, 0)), "a");
  ck_assert_str_eq(json_string_value(json_array_get(dup, 1)), "b");
  ck_assert_str_eq(json_string_value(json_array_get(dup, 2)), "c");

  o = json_array_get(lines, 1);
  ck_assert_uint_eq(json_object_size(o), 9);
  expect_null(o, "timestamp");
  expect_null(o, "key");
  expect_null(o, "event_id");
  ck_assert_uint_eq(json_object_size(json_object_get(o, "headers")), 0);
  expect_str(o, "value", "//4=");
  expect_str(o, "value_encoding", "base64");

  o = json_array_get(lines, 2);
  ck_assert_uint_eq(json_object_size(o), 9);
  expect_str(o, "key", "wyg=");
  expect_str(o, "key_encoding", "base64");
  expect_null(o, "value");

  o = json_array_get(lines, 3);
  ck_assert_uint_eq(json_object_size(o), 9);
  expect_str(o, "key", ""); /* empty, not absent */
  expect_str(o, "value", "YQBi");
  expect_str(o, "value_encoding", "base64");
  json_decref(lines);
}
END_TEST

/* Header names that are not UTF-8 (JSON object keys must be) go into
 * "headers_base64_names", keyed by the base64 of the name, with values
 * encoded as in "headers"; nothing is dropped. Without such a name the
 * field is absent (test_fields: 8 and 9 fields). */
START_TEST(test_binary_header_names) {
  plugin_instance_t *pi = new_sink(out_path, 0, "");
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
  rd_kafka_header_add(hdrs, "eventId", -1, "e-1", 3);
  rd_kafka_header_add(hdrs, "\xff\xfe", -1, "a", 1);
  rd_kafka_header_add(hdrs, "bad\xc3\x28", -1, "\xff", 1);
  rd_kafka_header_add(hdrs, "\xff\xfe", -1, NULL, 0);
  khost_record_t r = make_rec("orders", 7, NULL, 0, "v", 1);
  r.host_priv = hdrs;
  handle_ok(pi, &r);
  rd_kafka_headers_destroy(hdrs);
  flush_ok(pi);
  plugin_instance_destroy(pi);

  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 1);
  json_t *o = json_array_get(lines, 0);
  ck_assert_uint_eq(json_object_size(o), 9);
  json_t *h = json_object_get(o, "headers");
  ck_assert_uint_eq(json_object_size(h), 1);
  expect_str(h, "eventId", "e-1");
  json_t *b = json_object_get(o, "headers_base64_names");
  ck_assert_msg(json_is_object(b), "headers_base64_names is not an object");
  ck_assert_uint_eq(json_object_size(b), 2);
  json_t *ff = json_object_get(b, "//4="); /* "\xff\xfe", twice */
  ck_assert_msg(json_is_array(ff) && json_array_size(ff) == 2,
                "a repeated name is an array");
  ck_assert_str_eq(json_string_value(json_array_get(ff, 0)), "a");
  ck_assert(json_is_null(json_array_get(ff, 1)));
  expect_str(json_object_get(b, "YmFkwyg="), "base64", "/w==");
  json_decref(lines);
}
END_TEST

START_TEST(test_nothing_before_flush) {
  plugin_instance_t *pi = new_sink(out_path, 0, "");
  for (int i = 0; i < 3; i++) {
    khost_record_t r = make_rec("t", i, "k", 1, "v", 1);
    handle_ok(pi, &r);
  }
  /* Not even created: the file is opened at the first write. */
  ck_assert_int_eq(file_size(out_path), -1);
  flush_ok(pi);
  off_t size = file_size(out_path);
  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 3);
  json_decref(lines);
  flush_ok(pi); /* nothing new: nothing written twice */
  ck_assert_int_eq(file_size(out_path), size);
  plugin_instance_destroy(pi);
}
END_TEST

START_TEST(test_destroy_writes_the_rest) {
  plugin_instance_t *pi = new_sink(out_path, 0, "");
  khost_record_t r = make_rec("t", 5, NULL, 0, "v", 1);
  handle_ok(pi, &r);
  plugin_instance_destroy(pi);
  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 1);
  expect_int(json_array_get(lines, 0), "offset", 5);
  json_decref(lines);
}
END_TEST

/* The file holds whole record values: created 0600 whatever the umask
 * allows; a file that exists keeps its mode. */
START_TEST(test_file_created_0600) {
  struct stat st;
  mode_t old = umask(0);
  plugin_instance_t *pi = new_sink(out_path, 0, "");
  khost_record_t r = make_rec("t", 0, NULL, 0, "v", 1);
  handle_ok(pi, &r);
  flush_ok(pi);
  plugin_instance_destroy(pi);
  ck_assert_int_eq(stat(out_path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 07777, 0600);
  ck_assert_int_eq(chmod(out_path, 0640), 0);
  pi = new_sink(out_path, 0, "");
  handle_ok(pi, &r);
  flush_ok(pi);
  plugin_instance_destroy(pi);
  ck_assert_int_eq(stat(out_path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 07777, 0640);
  umask(old);
}
END_TEST

START_TEST(test_missing_path) {
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_int_eq(try_sink(&pi, 0, "fsync = true;", err, sizeof(err)), -1);
  ck_assert_ptr_null(pi);
  ck_assert_str_eq(err, "orders/0/jsonl_sink: the setting path (the file to "
                        "append to) is required");
}
END_TEST

START_TEST(test_bad_settings) {
  plugin_instance_t *pi = NULL;
  char err[512] = "";
  ck_assert_int_eq(try_sink(&pi, 0, "path = 5;", err, sizeof(err)), -1);
  ck_assert_msg(strstr(err, "test.cfg:1: pipelines[0].config.path: expected a "
                            "string"),
                "%s", err);
  ck_assert_int_eq(
      try_sink(&pi, 0, "path = \"/x\"; fsnyc = true;", err, sizeof(err)), -1);
  ck_assert_str_eq(err, "test.cfg:1: pipelines[0].config.fsnyc: unknown "
                        "setting for plugin jsonl_sink");
  char *dir_as_file = NULL;
  ck_assert_int_ge(asprintf(&dir_as_file, "path = \"%s\";", tmpdir), 0);
  ck_assert_int_eq(try_sink(&pi, 0, dir_as_file, err, sizeof(err)), -1);
  ck_assert_msg(strstr(err, "Is a directory"), "%s", err);
  free(dir_as_file);
}
END_TEST

START_TEST(test_high_water) {
  enum { VALUE = 64 * 1024 };
  char *value = malloc(VALUE);
  memset(value, 'x', VALUE);
  plugin_instance_t *pi = new_sink(out_path, 0, "");
  /* 15 lines of ~64 KiB stay below 1 MiB; the 16th crosses it. */
  for (int i = 0; i < 15; i++) {
    khost_record_t r = make_rec("t", i, NULL, 0, value, VALUE);
    handle_ok(pi, &r);
  }
  ck_assert_int_eq(file_size(out_path), -1);
  khost_record_t r = make_rec("t", 15, NULL, 0, value, VALUE);
  handle_ok(pi, &r);
  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 16);
  json_decref(lines);
  off_t size = file_size(out_path);
  flush_ok(pi);
  ck_assert_int_eq(file_size(out_path), size);
  plugin_instance_destroy(pi);
  free(value);
}
END_TEST

START_TEST(test_flush_error_keeps_lines) {
  plugin_instance_t *pi = new_sink("/dev/full", 3, "");
  char err[512] = "";
  khost_record_t r = make_rec("t", 1, NULL, 0, "v", 1);
  handle_ok(pi, &r);
  ck_assert_int_eq(plugin_instance_flush(pi, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "/dev/full: No space left on device");
  err[0] = '\0';
  /* The line is still there, so the next flush tries (and fails) again. */
  ck_assert_int_eq(plugin_instance_flush(pi, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "/dev/full: No space left on device");
  plugin_instance_destroy(pi);
  char *text = tu_read_file(log_path);
  ck_assert_msg(strstr(text, "[orders/3/jsonl_sink] ") &&
                    strstr(text, "not written: /dev/full: No space left"),
                "log: %s", text);
  free(text);
}
END_TEST

/* A write cut short by the file size limit: the rest follows on the next
 * flush, with nothing lost or written twice. */
START_TEST(test_short_write) {
  plugin_instance_t *pi = new_sink(out_path, 0, "");
  char err[512] = "";
  for (int i = 0; i < 3; i++) {
    khost_record_t r = make_rec("t", i, "k", 1, "some value", 10);
    handle_ok(pi, &r);
  }
  struct rlimit old, lim;
  ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 70; /* inside the first line */
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  /* No assertion while the limit holds: Check writes files too. */
  int rc_limited = setrlimit(RLIMIT_FSIZE, &lim);
  int rc = plugin_instance_flush(pi, err, sizeof(err));
  int rc_restored = setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  ck_assert_int_eq(rc_limited, 0);
  ck_assert_int_eq(rc_restored, 0);
  ck_assert_int_eq(rc, -1);
  ck_assert_msg(strstr(err, "File too large"), "%s", err);
  ck_assert_int_eq(file_size(out_path), 70);
  flush_ok(pi);
  plugin_instance_destroy(pi);
  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 3);
  for (size_t i = 0; i < 3; i++)
    expect_int(json_array_get(lines, i), "offset", (json_int_t)i);
  json_decref(lines);
}
END_TEST

enum { WRITER_RECORDS = 3000 };

typedef struct writer_arg {
  plugin_instance_t *pi;
  const char *topic;
} writer_arg_t;

/* Handle records (topic wa->topic, offsets 0, 1, ...) with values of
 * varying length, flushing every 10. */
static void *writer(void *arg) {
  const writer_arg_t *wa = arg;
  plugin_instance_t *pi = wa->pi;
  const char *topic = wa->topic;
  char value[800];
  for (int i = 0; i < WRITER_RECORDS; i++) {
    int len = snprintf(value, sizeof(value), "%s-%d-", topic, i);
    memset(value + len, 'a' + i % 26, (size_t)(i % 7) * 100);
    khost_record_t r =
        make_rec(topic, i, NULL, 0, value, (size_t)len + (size_t)(i % 7) * 100);
    char err[256];
    if (plugin_instance_handle(pi, &r) != KHOST_OK ||
        (i % 10 == 9 && plugin_instance_flush(pi, err, sizeof(err)) < 0))
      return (void *)1;
  }
  return NULL;
}

START_TEST(test_two_instances_one_file) {
  writer_arg_t wa = {new_sink(out_path, 0, ""), "A"};
  writer_arg_t wb = {new_sink(out_path, 1, ""), "B"};
  pthread_t ta, tb;
  void *ra, *rb;
  ck_assert_int_eq(pthread_create(&ta, NULL, writer, &wa), 0);
  ck_assert_int_eq(pthread_create(&tb, NULL, writer, &wb), 0);
  pthread_join(ta, &ra);
  pthread_join(tb, &rb);
  ck_assert_ptr_null(ra);
  ck_assert_ptr_null(rb);
  plugin_instance_destroy(wa.pi);
  plugin_instance_destroy(wb.pi);

  json_t *lines = read_lines();
  ck_assert_uint_eq(json_array_size(lines), 2 * WRITER_RECORDS);
  json_int_t next[2] = {0, 0};
  size_t i;
  json_t *o;
  json_array_foreach(lines, i, o) {
    const char *topic = json_string_value(json_object_get(o, "topic"));
    ck_assert_ptr_nonnull(topic);
    int w = topic[0] == 'B';
    expect_int(o, "offset", next[w]);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "%s-%lld-", topic, (long long)next[w]);
    const char *value = json_string_value(json_object_get(o, "value"));
    ck_assert_ptr_nonnull(value);
    ck_assert_int_eq(strncmp(value, prefix, strlen(prefix)), 0);
    ck_assert_uint_eq(strlen(value),
                      strlen(prefix) + (size_t)(next[w] % 7) * 100);
    next[w]++;
  }
  ck_assert_int_eq(next[0], WRITER_RECORDS);
  ck_assert_int_eq(next[1], WRITER_RECORDS);
  json_decref(lines);
}
END_TEST

Suite *jsonl_sink_suite(void) {
  Suite *s = suite_create("jsonl_sink");
  TCase *tc = tcase_create("sink");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_fields);
  tcase_add_test(tc, test_binary_header_names);
  tcase_add_test(tc, test_nothing_before_flush);
  tcase_add_test(tc, test_destroy_writes_the_rest);
  tcase_add_test(tc, test_file_created_0600);
  tcase_add_test(tc, test_missing_path);
  tcase_add_test(tc, test_bad_settings);
  tcase_add_test(tc, test_high_water);
  tcase_add_test(tc, test_flush_error_keeps_lines);
  tcase_add_test(tc, test_short_write);
  tcase_add_test(tc, test_two_instances_one_file);
  suite_add_tcase(s, tc);
  return s;
}
