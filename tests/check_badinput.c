/*
 * Bad input, tried as a new user would: odd records (an empty value, a
 * 1 MB value, a 64 KB header, a 10 KB event ID, bytes that are not UTF-8
 * in a key, an event ID, a header value and a header name), a topic that
 * does not exist, a plugin file that is not a shared object or that others
 * may write, a config file with secrets that others may read; and what
 * the host's surroundings may do to it: SIGHUP, a stderr nobody reads.
 * Each must get a clear message, and none may crash the host or hold a
 * partition back.
 *
 * khost runs as a child process (the real binary) against a mock cluster
 * in its own process (tests/mockd), as in check_crash.
 */
#include <check.h>
#include <glib.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultutil.h"
#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define PLUGIN_DIR TOP_BUILDDIR "/plugins/.libs"

static fu_world_t w;

/* A config running jsonl_sink into <dir>/out.jsonl on FU_TOPIC (or
 * topic); extra goes into the kafka group. */
static char *sink_config(const char *name, const char *topic,
                         const char *kafka) {
  char *text = NULL, *db = fu_db_path(&w, 0);
  ck_assert_int_ge(
      asprintf(&text,
               "plugin_dir = \"" PLUGIN_DIR "\";\n"
               "shutdown_timeout = \"10s\";\n"
               "kafka = { bootstrap_servers = \"%s\";\n"
               "  session_timeout_ms = 3000; heartbeat_interval_ms = 300;\n"
               "  %s };\n"
               "dedup = { path = \"%s\"; };\n"
               "pipelines = ( {\n"
               "  name = \"" FU_PIPELINE "\"; group_id = \"" FU_GROUP "\";\n"
               "  topics = [ \"%s\" ]; plugin = \"jsonl_sink\";\n"
               "  config = { path = \"%s/out.jsonl\"; };\n"
               "} );\n",
               w.bootstraps, kafka ? kafka : "", db, topic ? topic : FU_TOPIC,
               w.dir),
      0);
  char *path = tu_write_file(w.dir, name, text);
  chmod(path, 0600);
  free(text);
  free(db);
  return path;
}

/* The lines of <dir>/out.jsonl, each parsed (fails on one that is not
 * JSON); *n gets the count. */
static json_t **sink_lines(size_t *n) {
  char *path = fu_path(&w, "out.jsonl"), *text = tu_read_file(path);
  ck_assert_msg(text != NULL, "no %s", path);
  json_t **v = NULL;
  *n = 0;
  for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
    json_error_t jerr;
    *nl = '\0';
    v = realloc(v, (*n + 1) * sizeof(*v));
    v[*n] = json_loads(line, 0, &jerr);
    ck_assert_msg(v[*n] != NULL, "line %zu is not JSON: %s", *n + 1, jerr.text);
    (*n)++;
  }
  free(text);
  free(path);
  return v;
}

static void lines_free(json_t **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    json_decref(v[i]);
  free(v);
}

/* The line whose event_id is id. */
static json_t *line_of(json_t **v, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++) {
    const char *got = json_string_value(json_object_get(v[i], "event_id"));
    if (got && strcmp(got, id) == 0)
      return v[i];
  }
  ck_abort_msg("no line for eventId %.40s", id);
  return NULL;
}

static size_t string_len(json_t *obj, const char *key) {
  json_t *s = json_object_get(obj, key);
  ck_assert_msg(json_is_string(s), "%s is not a string", key);
  return json_string_length(s);
}

/* A plain record after each odd one: none of them holds the partition. */
static void produce_plain(const char *id) {
  fu_produce_raw(&w, FU_TOPIC, 0, id, NULL, "{}", 2, NULL);
}

/* Not UTF-8, as an event ID and as a header name: bytes UTF-8 never uses
 * (0xff, 0xfe), a lead byte without its continuation (0xc3 0x28), a lone
 * continuation byte (0x80). */
#define BAD_ID "\xff\xfe-id-\xc3\x28"
#define BAD_NAME "\xfe\x80-name"

START_TEST(test_odd_records) {
  enum { VALUE = 1024 * 1024, HEADER = 64 * 1024 };
  char *big = g_malloc(VALUE), *hdr = g_malloc(HEADER);
  memset(big, 'v', VALUE);
  memset(hdr, 'h', HEADER);
  fu_start(&w, 1, 1);
  fu_produce_raw(&w, FU_TOPIC, 0, "empty-value", NULL, "", 0, NULL);
  produce_plain("after-empty");
  fu_produce_raw(&w, FU_TOPIC, 0, "big-value", NULL, big, VALUE, NULL);
  produce_plain("after-big-value");
  fu_produce_raw(&w, FU_TOPIC, 0, "big-header", NULL, "{}", 2, "trace", hdr,
                 (size_t)HEADER, NULL);
  produce_plain("after-big-header");
  fu_produce_raw(&w, FU_TOPIC, 0, "bad-utf8", "\xc3\x28", "{}", 2, "note",
                 "\xff\xfe not text", (size_t)11, NULL);
  produce_plain("after-bad-utf8");
  /* An event ID that is not UTF-8, published twice: deduplicated as
   * bytes. */
  fu_produce_raw(&w, FU_TOPIC, 0, BAD_ID, NULL, "{}", 2, NULL);
  fu_produce_raw(&w, FU_TOPIC, 0, BAD_ID, NULL, "{}", 2, NULL);
  produce_plain("after-bad-utf8-id");
  fu_produce_raw(&w, FU_TOPIC, 0, "bad-utf8-header-name", NULL, "{}", 2,
                 BAD_NAME, "named badly", (size_t)11, NULL);
  produce_plain("after-bad-utf8-header-name");
  fu_flush(&w);
  char *cfg = sink_config("khost.cfg", NULL, NULL);
  fu_proc_t *p = fu_run_to_end(&w, "run", cfg, 0);
  ck_assert(fu_all_committed(&w));
  uint64_t handled = 0, dups = 0;
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 12);
  ck_assert_uint_eq(dups, 1);
  size_t n;
  json_t **v = sink_lines(&n);
  ck_assert_uint_eq(n, 12);
  json_t *l = line_of(v, n, "empty-value");
  ck_assert_uint_eq(string_len(l, "value"), 0);
  ck_assert_uint_eq(string_len(line_of(v, n, "big-value"), "value"), VALUE);
  l = json_object_get(line_of(v, n, "big-header"), "headers");
  ck_assert_uint_eq(string_len(l, "trace"), HEADER);
  l = line_of(v, n, "bad-utf8");
  ck_assert_str_eq(json_string_value(json_object_get(l, "key_encoding")),
                   "base64");
  gsize len;
  guchar *note = g_base64_decode(
      json_string_value(json_object_get(
          json_object_get(json_object_get(l, "headers"), "note"), "base64")),
      &len);
  ck_assert_uint_eq(len, 11);
  ck_assert_int_eq(memcmp(note, "\xff\xfe not text", 11), 0);
  g_free(note);
  /* The event ID in base64, as event_id and as the eventId header. */
  gchar *id64 = g_base64_encode((const guchar *)BAD_ID, strlen(BAD_ID));
  l = line_of(v, n, id64);
  ck_assert_str_eq(json_string_value(json_object_get(l, "event_id_encoding")),
                   "base64");
  ck_assert_str_eq(
      json_string_value(json_object_get(
          json_object_get(json_object_get(l, "headers"), "eventId"), "base64")),
      id64);
  g_free(id64);
  /* A header name that is not UTF-8 cannot be a JSON key: keyed by its
   * base64 in headers_base64_names, and absent from headers. */
  gchar *name64 = g_base64_encode((const guchar *)BAD_NAME, strlen(BAD_NAME));
  l = line_of(v, n, "bad-utf8-header-name");
  ck_assert_str_eq(json_string_value(json_object_get(
                       json_object_get(l, "headers_base64_names"), name64)),
                   "named badly");
  ck_assert_ptr_null(json_object_get(json_object_get(l, "headers"), BAD_NAME));
  g_free(name64);
  lines_free(v, n);
  g_free(big);
  g_free(hdr);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A record with the eventId header twice: the last one is its event ID
 * (README, "Dedup store"), for the dedup and for the plugin. */
START_TEST(test_repeated_event_id_header) {
  uint64_t handled = 0, dups = 0;
  fu_start(&w, 1, 1);
  fu_produce_raw(&w, FU_TOPIC, 0, "first-1", NULL, "{}", 2, "eventId", "last-1",
                 (size_t)6, NULL);
  /* A duplicate only of the last header; the first one is new. */
  fu_produce_raw(&w, FU_TOPIC, 0, "last-1", NULL, "{}", 2, NULL);
  fu_produce_raw(&w, FU_TOPIC, 0, "first-1", NULL, "{}", 2, NULL);
  fu_flush(&w);
  char *cfg = sink_config("khost.cfg", NULL, NULL);
  fu_proc_t *p = fu_run_to_end(&w, "run", cfg, 0);
  ck_assert(fu_all_committed(&w));
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 2);
  ck_assert_uint_eq(dups, 1);
  size_t n;
  json_t **v = sink_lines(&n);
  ck_assert_uint_eq(n, 2);
  ck_assert_str_eq(json_string_value(json_object_get(v[0], "event_id")),
                   "last-1");
  ck_assert_int_eq(json_integer_value(json_object_get(v[0], "offset")), 0);
  ck_assert_str_eq(json_string_value(json_object_get(v[1], "event_id")),
                   "first-1");
  ck_assert_int_eq(json_integer_value(json_object_get(v[1], "offset")), 2);
  lines_free(v, n);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A 10 KB event ID: deduplicated in the run, and after a restart (read
 * back from SQLite). */
START_TEST(test_long_event_id) {
  enum { ID = 10 * 1024 };
  uint64_t handled = 0, dups = 0;
  char *id = g_malloc(ID + 1);
  memset(id, 'i', ID);
  id[ID] = '\0';
  fu_start(&w, 1, 1);
  fu_produce_raw(&w, FU_TOPIC, 0, id, NULL, "{}", 2, NULL);
  fu_produce_raw(&w, FU_TOPIC, 0, id, NULL, "{}", 2,
                 NULL); /* published again */
  produce_plain("after-long-id");
  fu_flush(&w);
  char *cfg = sink_config("khost.cfg", NULL, NULL);
  fu_proc_t *p = fu_run_to_end(&w, "run1", cfg, 0);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 2);
  ck_assert_uint_eq(dups, 1);
  fu_produce_raw(&w, FU_TOPIC, 0, id, NULL, "{}", 2, NULL);
  fu_flush(&w);
  p = fu_run_to_end(&w, "run2", cfg, 0);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 0);
  ck_assert_uint_eq(dups, 1);
  size_t n;
  json_t **v = sink_lines(&n);
  ck_assert_uint_eq(n, 2);
  ck_assert_uint_eq(string_len(line_of(v, n, id), "event_id"), ID);
  lines_free(v, n);
  g_free(id);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A topic the cluster does not have: --exit-at-end cannot know where the
 * end is and refuses to start, naming it; a long-running host says so
 * and keeps waiting for it. */
START_TEST(test_unknown_topic_in_config) {
  fu_start(&w, 1, 0);
  fu_mockd(&w, "topic_error no-such-topic UNKNOWN_TOPIC_OR_PART");
  char *cfg = sink_config("khost.cfg", "no-such-topic", NULL);
  fu_proc_t *p = fu_khost(&w, "once", cfg, 0, FU_EXIT_AT_END);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 2); /* nothing consumed */
  ck_assert_int_eq(fu_stderr_count(p, "orders: topic no-such-topic: cannot "
                                      "read metadata: Broker: Unknown topic "
                                      "or partition"),
                   1);
  p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p,
                 "Subscribed topic not available: no-such-topic: Broker: "
                 "Unknown topic or partition",
                 1, 30000);
  ck_assert_msg(!fu_reap(p, 0), "khost exited");
  kill(p->pid, SIGTERM);
  ck_assert_int_eq(fu_wait_exit(p, 30000), 0);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ files */

/* `khost check` of cfg: its exit status; stderr in *err. */
static int check_cfg(const char *tag, const char *cfg, char **err) {
  char *argv[] = {KHOST, "check", "-c", (char *)cfg, NULL};
  fu_proc_t *p = fu_spawn(&w, tag, argv, 0);
  int status = fu_wait_exit(p, 30000);
  *err = fu_stderr(p);
  return status;
}

/* A config whose plugin is path (with the effects fixture's settings). */
static char *plugin_config(const char *name, const char *plugin) {
  char *text = NULL;
  ck_assert_int_ge(asprintf(&text,
                            "mock = { brokers = 1; };\n"
                            "dedup = { path = \"%s/dedup.db\"; };\n"
                            "pipelines = ( {\n"
                            "  name = \"" FU_PIPELINE "\";\n"
                            "  group_id = \"" FU_GROUP "\";\n"
                            "  topics = [ \"" FU_TOPIC "\" ];\n"
                            "  plugin = \"%s\";\n"
                            "  config = { log_path = \"%s/effects.log\"; };\n"
                            "} );\n",
                            w.dir, plugin, w.dir),
                   0);
  char *path = tu_write_file(w.dir, name, text);
  free(text);
  return path;
}

START_TEST(test_plugin_not_elf) {
  fu_start(&w, 1, 0);
  /* A script where a shared object was expected. */
  char *so = tu_write_file(w.dir, "orders.so",
                           "#!/bin/sh\n"
                           "# Handles the orders of the e-commerce shop: an\n"
                           "# old version of the handler, before it became a\n"
                           "# khost plugin.\n"
                           "exec /usr/local/bin/orders-handler \"$@\"\n");
  chmod(so, 0755);
  char *cfg = plugin_config("khost.cfg", so), *err, *want = NULL;
  ck_assert_int_eq(check_cfg("check", cfg, &err), 2);
  ck_assert_int_ge(asprintf(&want,
                            "pipelines[0].plugin: %s: cannot load plugin: "
                            "invalid ELF header",
                            so),
                   0);
  ck_assert_msg(strncmp(err, cfg, strlen(cfg)) == 0 && strstr(err, want),
                "stderr:\n%s", err);
  free(want);
  free(err);
  free(cfg);
  free(so);
  fu_stop(&w);
}
END_TEST

/* Anyone who may write the plugin may run code as khost: refused, as sshd
 * refuses loose key files. */
START_TEST(test_plugin_writable_by_others) {
  fu_start(&w, 1, 0);
  char *fixture = tu_fixture("effects"), *so = fu_path(&w, "effects.so");
  gchar *bytes;
  gsize len;
  ck_assert(g_file_get_contents(fixture, &bytes, &len, NULL));
  ck_assert(g_file_set_contents(so, bytes, (gssize)len, NULL));
  g_free(bytes);
  chmod(so, 0666);
  char *cfg = plugin_config("khost.cfg", so), *err;
  ck_assert_int_eq(check_cfg("loose", cfg, &err), 2);
  char *want = g_strdup_printf("%s: refusing to load a plugin: %s: file is "
                               "writable by group and others (mode 0666); run "
                               "chmod go-w on it",
                               so, so);
  ck_assert_msg(strstr(err, want), "stderr:\n%s", err);
  g_free(want);
  free(err);
  chmod(so, 0644);
  ck_assert_int_eq(check_cfg("tight", cfg, &err), 0);
  ck_assert_msg(strstr(err, "refusing") == NULL, "stderr:\n%s", err);
  free(err);
  free(cfg);
  free(so);
  free(fixture);
  fu_stop(&w);
}
END_TEST

/* Every property khost treats as a secret (log_is_secret_property()),
 * as a user writes it, in the global kafka group or in a pipeline's. */
static const struct {
  int in_pipeline;
  const char *setting, *property;
} secrets[] = {
    {0, "sasl_password", "sasl.password"},
    {0, "ssl_key_password", "ssl.key.password"},
    {0, "ssl_keystore_password", "ssl.keystore.password"},
    {0, "sasl_oauthbearer_client_secret", "sasl.oauthbearer.client.secret"},
    {0, "sasl_oauthbearer_config", "sasl.oauthbearer.config"},
    {0, "ssl_key_pem", "ssl.key.pem"},
    {1, "ssl_key_password", "ssl.key.password"},
};

#define SECRET "s3cr3t-Pa55"

/* A config holding secrets[i] (and a user name, which is no secret). */
static char *secret_config(size_t i) {
  char *so = tu_fixture("effects"), *text = NULL, name[32], setting[128];
  snprintf(setting, sizeof(setting), "%s = \"" SECRET "\";",
           secrets[i].setting);
  ck_assert_int_ge(asprintf(&text,
                            "mock = { brokers = 1; };\n"
                            "kafka = { sasl_username = \"orders\"; %s };\n"
                            "dedup = { path = \"%s/dedup.db\"; };\n"
                            "pipelines = ( {\n"
                            "  name = \"" FU_PIPELINE "\";\n"
                            "  group_id = \"" FU_GROUP "\";\n"
                            "  topics = [ \"" FU_TOPIC "\" ];\n"
                            "  plugin = \"%s\";\n"
                            "  kafka = { %s };\n"
                            "  config = { log_path = \"%s/effects.log\"; };\n"
                            "} );\n",
                            secrets[i].in_pipeline ? "" : setting, w.dir, so,
                            secrets[i].in_pipeline ? setting : "", w.dir),
                   0);
  snprintf(name, sizeof(name), "khost-%zu.cfg", i);
  char *cfg = tu_write_file(w.dir, name, text);
  free(text);
  free(so);
  return cfg;
}

/* A config holding a secret that every user may read: a warning naming
 * the setting, never its value; none once the file is private. For each
 * secret property, also in a pipeline's kafka group. */
START_TEST(test_secrets_readable_by_others) {
  fu_start(&w, 1, 0);
  for (size_t i = 0; i < G_N_ELEMENTS(secrets); i++) {
    char tag[32], *err, *want = NULL;
    char *cfg = secret_config(i);
    ck_assert_int_ge(asprintf(&want,
                              "holds secrets (%s) and others can read it "
                              "(mode 0644): run chmod o-r on it",
                              secrets[i].property),
                     0);
    chmod(cfg, 0644);
    snprintf(tag, sizeof(tag), "open-%zu", i);
    int status = check_cfg(tag, cfg, &err);
    ck_assert_msg(strstr(err, SECRET) == NULL, "%s: the secret was printed",
                  secrets[i].setting);
    if (status == 2) {
      /* A librdkafka built without libcurl refuses the OIDC client secret
       * (Debian's 2.0.2): the refusal must not show it either. */
      ck_assert_msg(strstr(err, "invalid value (not shown: a secret)") &&
                        strstr(secrets[i].property, "oauthbearer.client"),
                    "%s: stderr:\n%s", secrets[i].setting, err);
      free(err);
      free(want);
      free(cfg);
      continue;
    }
    ck_assert_int_eq(status, 0);
    ck_assert_msg(strstr(err, want), "%s: stderr:\n%s", secrets[i].setting,
                  err);
    free(err);
    chmod(cfg, 0600);
    snprintf(tag, sizeof(tag), "private-%zu", i);
    ck_assert_int_eq(check_cfg(tag, cfg, &err), 0);
    ck_assert_msg(strstr(err, "holds secrets") == NULL, "%s: stderr:\n%s",
                  secrets[i].setting, err);
    free(err);
    free(want);
    free(cfg);
  }
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ signals */

/* SIGHUP (a closed terminal, a reload asked for) with the config
 * unchanged reloads it and changes nothing: the host keeps consuming,
 * and SIGTERM still stops it cleanly with its last commit. */
START_TEST(test_sighup_same_config) {
  fu_start(&w, 1, 3);
  fu_produce_n(&w, 10, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_all_committed(&w, FU_RUN_MS);
  ck_assert_int_eq(kill(p->pid, SIGHUP), 0);
  fu_wait_stderr(p, "] reloaded ", 1, 10000);
  ck_assert_int_eq(fu_stderr_count(p, "unchanged: keeps running"), 1);
  ck_assert_int_eq(fu_stderr_count(p, "by the reload"), 0);
  fu_produce_n(&w, 10, "ok");
  fu_wait_all_committed(&w, FU_RUN_MS);
  fu_stop_host(p);
  ck_assert_int_eq(fu_stderr_count(p, "finishing the current batches"), 1);
  ck_assert_uint_eq(fu_effects(&w), 60);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* stderr a pipe whose reader went away (a log shipper that died): every
 * log line fails with EPIPE, and khost consumes, commits, and stops
 * cleanly on SIGTERM all the same. */
START_TEST(test_stderr_pipe_without_reader) {
  fu_start(&w, 1, 3);
  fu_produce_n(&w, 10, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  char *fifo = fu_path(&w, "stderr.fifo");
  /* The reader opens the FIFO and exits at once; once it is gone the
   * shell becomes khost with stderr the pipe's writing end. */
  char *const argv[] = {"/bin/sh",
                        "-c",
                        "mkfifo \"$1\" && { : <\"$1\" & } && "
                        "exec 2>\"$1\" && wait && exec \"$0\" run -c \"$2\"",
                        KHOST,
                        fifo,
                        cfg,
                        NULL};
  fu_proc_t *p = fu_spawn(&w, "run", argv, 0);
  p->db = 0;
  fu_wait_all_committed(&w, FU_RUN_MS);
  ck_assert_msg(!fu_reap(p, 0), "khost exited with status 0x%x", p->status);
  fu_produce_n(&w, 10, "ok");
  fu_wait_all_committed(&w, FU_RUN_MS);
  fu_stop_host(p);
  ck_assert_uint_eq(fu_effects(&w), 60);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(fifo);
  free(cfg);
  fu_stop(&w);
}
END_TEST

Suite *badinput_suite(void) {
  Suite *s = suite_create("badinput");
  FU_SCENARIO(s, test_odd_records, 90);
  FU_SCENARIO(s, test_long_event_id, 90);
  FU_SCENARIO(s, test_repeated_event_id_header, 90);
  FU_SCENARIO(s, test_unknown_topic_in_config, 90);

  TCase *files = tcase_create("files");
  tcase_add_unchecked_fixture(files, fu_case_setup, fu_case_teardown);
  tcase_set_timeout(files, 30);
  tcase_add_test(files, test_plugin_not_elf);
  tcase_add_test(files, test_plugin_writable_by_others);
  tcase_add_test(files, test_secrets_readable_by_others);
  suite_add_tcase(s, files);

  FU_SCENARIO(s, test_sighup_same_config, 90);
  FU_SCENARIO(s, test_stderr_pipe_without_reader, 90);
  return s;
}
