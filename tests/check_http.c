/*
 * The HTTP listener against a host on the mock cluster: /metrics (checked
 * by promtool and against a known run), /healthz, /readyz (ready, not yet
 * joined, breaker open), the listen address (in use, off).
 *
 * promtool (Debian prometheus) is needed for the format check: without it
 * that check is skipped with a note, unless KHOST_REQUIRE_PROMTOOL=1 (CI),
 * which makes its absence a failure.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "httputil.h"
#include "log.h"
#include "mockutil.h"
#include "testutil.h"

#define TOPIC HU_TOPIC
#define GROUP HU_GROUP

/* N records over 3 partitions, of which DUPS re-use an earlier event ID. */
enum { N_RECORDS = 300, N_DUPS = 30 };

static void produce_with_duplicates(mu_cluster_t *c) {
  char id[32], value[64];
  for (int i = 0; i < N_RECORDS; i++) {
    int original = i < N_RECORDS - N_DUPS;
    snprintf(id, sizeof(id), "evt-%04d",
             original ? i : (i * 7) % (N_RECORDS - N_DUPS));
    snprintf(value, sizeof(value), "order %d", i);
    mu_produce(c, TOPIC, i % 3, id, NULL, value);
  }
  mu_flush(c);
}

/* promtool's verdict on text: 1 valid, 0 invalid (its complaints printed),
 * -1 when promtool is not installed. */
static int promtool_check(const char *dir, const char *text) {
  char *file = tu_write_file(dir, "metrics.txt", text);
  char *cmd = g_strdup_printf("promtool check metrics < '%s' 2>&1", file);
  FILE *p = popen(cmd, "r");
  char out[4096] = "";
  size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
  out[n] = '\0';
  int st = p ? pclose(p) : -1;
  g_free(cmd);
  free(file);
  if (st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 127))
    return -1;
  if (st != 0)
    fprintf(stderr, "promtool check metrics:\n%s", out);
  return st == 0;
}

/* 300 records, 30 of them duplicates, one member: /metrics passes promtool
 * and counts 270 handled and 30 skipped, every partition committed to its
 * end with no lag, and 270 event IDs in the store. */
START_TEST(test_metrics_of_a_known_run) {
  mu_cluster_t c;
  mu_host_t h;
  int status = 0;
  char *body = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 3);
  produce_with_duplicates(&c);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL, NULL, NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  ck_assert_int_gt(port, 0);
  TU_WAIT_UNTIL(
      (free(body), body = hu_get(port, "/metrics", &status),
       body && hu_sum(body, "khost_partition_committed_offset") == N_RECORDS),
      60000, "every record committed");
  ck_assert_int_eq(status, 200);
  int valid = promtool_check(c.dir, body);
  if (valid < 0) {
    const char *req = getenv("KHOST_REQUIRE_PROMTOOL");
    ck_assert_msg(!req || strcmp(req, "1") != 0,
                  "promtool not found and KHOST_REQUIRE_PROMTOOL=1");
    fprintf(stderr, "check_http: promtool not found: format not checked\n");
  } else {
    ck_assert_msg(valid == 1, "promtool check metrics refused /metrics");
  }
  ck_assert_double_eq(
      hu_sample(body, "khost_records_handled_total{pipeline=\"orders\"}"),
      N_RECORDS - N_DUPS);
  ck_assert_double_eq(
      hu_sample(body,
                "khost_records_duplicates_skipped_total{pipeline=\"orders\"}"),
      N_DUPS);
  ck_assert_double_eq(
      hu_sample(body, "khost_records_failed_total{pipeline=\"orders\"}"), 0);
  ck_assert_double_eq(
      hu_sample(body,
                "khost_handle_duration_seconds_count{pipeline=\"orders\"}"),
      N_RECORDS - N_DUPS);
  ck_assert_double_eq(hu_sum(body, "khost_consumer_lag_records"), 0);
  ck_assert_double_eq(hu_sum(body, "khost_partition_end_offset"), N_RECORDS);
  ck_assert_double_eq(hu_sample(body, "khost_dedup_event_ids"),
                      N_RECORDS - N_DUPS);
  ck_assert_double_gt(
      hu_sample(body, "khost_offset_commits_total{pipeline=\"orders\","
                      "result=\"ok\"}"),
      0);
  ck_assert_ptr_nonnull(strstr(body, "\nprocess_resident_memory_bytes "));
  ck_assert_ptr_nonnull(strstr(body, "\nprocess_open_fds "));
  free(body);
  body = hu_get(port, "/healthz", &status);
  ck_assert_int_eq(status, 200);
  free(body);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A plugin that takes 600 ms a record, 6 records on one partition: the
 * records waiting behind the one being handled grow older, and
 * khost_consumer_lag_seconds (and lag_seconds in /status.json) says by how
 * much; once every record is handled it is 0. */
START_TEST(test_lag_seconds) {
  enum { RECORDS = 6 };
  mu_cluster_t c;
  mu_host_t h;
  int status = 0;
  char *body = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  for (int i = 0; i < RECORDS; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(&c, TOPIC, 0, id, NULL, "ok");
  }
  mu_flush(&c);
  char *cfg =
      hu_write_cfg(&c, "127.0.0.1:0", NULL, "max_batch = 1;", "slow_ms = 600;");
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  const char *series = "khost_consumer_lag_seconds{pipeline=\"orders\","
                       "member=\"0\",topic=\"" TOPIC "\",partition=\"0\"}";
  TU_WAIT_UNTIL(
      (free(body), body = hu_get(port, "/metrics", &status),
       body && strstr(body, series) && hu_sample(body, series) >= 1.0),
      30000, "a record waiting for a second or more");
  free(body);
  body = hu_get(port, "/status.json", &status);
  json_t *st = json_loads(body, 0, NULL);
  json_t *part = json_array_get(
      json_object_get(json_array_get(json_object_get(st, "pipelines"), 0),
                      "partitions"),
      0);
  ck_assert_msg(json_number_value(json_object_get(part, "lag_seconds")) >= 1.0,
                "%s", body);
  json_decref(st);
  body = (free(body), NULL);
  TU_WAIT_UNTIL(
      (free(body), body = hu_get(port, "/metrics", &status),
       body && hu_sum(body, "khost_partition_committed_offset") == RECORDS),
      30000, "every record committed");
  TU_WAIT_UNTIL((free(body), body = hu_get(port, "/metrics", &status),
                 body && hu_sample(body, series) == 0),
                5000, "no record waiting");
  free(body);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Records that fail go to the dead-letter topic: counted in /metrics as
 * failed and dead-lettered, listed newest first in /status.json. */
START_TEST(test_dead_letters_counted) {
  mu_cluster_t c;
  mu_host_t h;
  int status;
  char *body = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_topic(&c, "orders-dlt", 1);
  for (int i = 0; i < 5; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(&c, TOPIC, 0, id, NULL, i % 2 ? "order" : "fail: bad total");
  }
  mu_flush(&c);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL,
                           "dead_letter_topic = \"orders-dlt\";", NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  TU_WAIT_UNTIL((free(body), body = hu_get(port, "/metrics", &status),
                 hu_sum(body, "khost_partition_committed_offset") == 5),
                60000, "every record committed");
  ck_assert_double_eq(
      hu_sample(body, "khost_records_dead_lettered_total{pipeline=\"orders\"}"),
      3);
  ck_assert_double_eq(
      hu_sample(body, "khost_records_failed_total{pipeline=\"orders\"}"), 3);
  ck_assert_double_eq(
      hu_sample(body, "khost_records_handled_total{pipeline=\"orders\"}"), 2);
  free(body);
  body = hu_get(port, "/status.json", &status);
  ck_assert_ptr_nonnull(strstr(body, "\"offset\":4,\"dead_lettered\":true"));
  free(body);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* /readyz's verdict and its reasons (a JSON array as text). */
static int readyz(int port, char **reasons) {
  int status = 0;
  char *body = hu_get(port, "/readyz", &status);
  json_error_t je;
  json_t *j = body ? json_loads(body, 0, &je) : NULL;
  ck_assert_msg(j != NULL, "/readyz body is not JSON: %s", body);
  json_t *ready = json_object_get(j, "ready");
  ck_assert(json_is_boolean(ready));
  ck_assert_int_eq(status, json_is_true(ready) ? 200 : 503);
  if (reasons) {
    free(*reasons);
    *reasons = json_dumps(json_object_get(j, "reasons"), 0);
  }
  json_decref(j);
  free(body);
  return status == 200;
}

/* Not ready before the member has joined (the mock takes 3 s for the
 * first join), ready once it has its partitions. */
START_TEST(test_ready_once_joined) {
  mu_cluster_t c;
  mu_host_t h;
  char *why = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 3);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL, NULL, NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  ck_assert_int_eq(readyz(port, &why), 0);
  ck_assert_msg(strstr(why, "member 0 has not joined") != NULL, "%s", why);
  TU_WAIT_UNTIL(readyz(port, &why), 30000, "ready");
  ck_assert_str_eq(why, "[]");
  mu_host_stop(&h);
  mu_host_close(&h);
  free(why);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Every record fails: once the circuit breaker opens, /readyz says so
 * with 503, and the failures show in /metrics. */
START_TEST(test_not_ready_while_breaker_open) {
  mu_cluster_t c;
  mu_host_t h;
  int status;
  char *why = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  for (int i = 0; i < 30; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(&c, TOPIC, 0, id, NULL, "fail: inventory service down");
  }
  mu_flush(&c);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL,
                           "circuit_breaker = { window = 20; failure_ratio = "
                           "0.5; cooldown = \"60s\"; };",
                           NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  TU_WAIT_UNTIL((readyz(port, &why), strstr(why, "circuit breaker is open")),
                30000, "the breaker opens");
  ck_assert_int_eq(readyz(port, NULL), 0);
  char *body = hu_get(port, "/metrics", &status);
  ck_assert_double_eq(
      hu_sample(body, "khost_circuit_breaker_open{pipeline=\"orders\"}"), 1);
  ck_assert_double_eq(
      hu_sample(body, "khost_records_failed_total{pipeline=\"orders\"}"), 9);
  free(body);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(why);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Another connection holds the dedup database's write lock: the batch
 * cannot be made durable, /readyz says the store does not accept it;
 * once the lock goes, ready again. */
START_TEST(test_not_ready_while_store_held) {
  mu_cluster_t c;
  mu_host_t h;
  sqlite3 *db = NULL;
  char *why = NULL, *dbpath = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL, NULL, NULL);
  ck_assert_int_ge(asprintf(&dbpath, "%s/dedup.db", c.dir), 0);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  TU_WAIT_UNTIL(readyz(port, &why), 30000, "ready");
  ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  for (int i = 0; i < 10; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(&c, TOPIC, 0, id, NULL, "order");
  }
  mu_flush(&c);
  TU_WAIT_UNTIL((readyz(port, &why),
                 strstr(why, "the dedup store does not accept its batches")),
                40000, "not ready: the store is held");
  ck_assert_int_eq(readyz(port, NULL), 0);
  ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  TU_WAIT_UNTIL(readyz(port, &why), 40000, "ready once the lock is gone");
  mu_host_stop(&h);
  mu_host_close(&h);
  free(why);
  free(dbpath);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A plugin's FATAL with on_fatal = stop_pipeline: the pipeline stops and
 * /readyz says so (not a member that seems stuck). */
START_TEST(test_not_ready_once_pipeline_stopped) {
  mu_cluster_t c;
  mu_host_t h;
  char *why = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_produce(&c, TOPIC, 0, "evt-1", NULL, "fatal: schema unknown");
  mu_flush(&c);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", NULL,
                           "on_fatal = \"stop_pipeline\";", NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  TU_WAIT_UNTIL((readyz(port, &why), strstr(why, "orders has stopped")), 30000,
                "not ready: the pipeline has stopped");
  ck_assert_int_eq(readyz(port, NULL), 0);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(why);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A port someone else listens on: host_open() fails before anything
 * starts, as a config problem (exit 2), naming the address. */
START_TEST(test_port_in_use) {
  mu_cluster_t c;
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  char listen_at[64], err[1024];
  cfg_t cfg;
  host_t *h = NULL;
  host_opts_t opts = {0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%d", ntohs(sa.sin_port));
  mu_start(&c, 1);
  char *path = hu_write_cfg(&c, listen_at, NULL, NULL, NULL);
  ck_assert_int_eq(cfg_load(&cfg, path, err, sizeof(err)), 0);
  ck_assert_int_eq(host_open(&h, &cfg, &opts, err, sizeof(err)),
                   HOST_EXIT_CONFIG);
  ck_assert_msg(strstr(err, listen_at) && strstr(err, "in use"), "%s", err);
  cfg_free(&cfg);
  close(fd);
  free(path);
  mu_stop(&c);
}
END_TEST

/* listen = "": no listener. */
START_TEST(test_listen_off) {
  mu_cluster_t c;
  mu_host_t h;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  char *cfg = hu_write_cfg(&c, "", NULL, NULL, NULL);
  mu_host_start(&h, cfg, 0);
  ck_assert_int_eq(host_http_port(h.host), 0);
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* instance_id: each member joins with its own group.instance.id, and the
 * group takes them (librdkafka 2.0.2's mock cluster accepts static
 * members but does not give a restarted one its partitions back early, so
 * the restart itself is not tested here). */
START_TEST(test_static_membership_ids) {
  mu_cluster_t c;
  mu_host_t h;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 3);
  char *log_path = NULL;
  ck_assert_int_ge(asprintf(&log_path, "%s/khost.log", c.dir), 0);
  int fd = open(log_path, O_CREAT | O_WRONLY | O_APPEND, 0600);
  ck_assert_int_ge(fd, 0);
  char *cfg = hu_write_cfg(&c, "127.0.0.1:0", "instance_id = \"host-a\";",
                           "members = 2;", NULL);
  char err[4096];
  host_opts_t opts = {0};
  /* Started by hand: mu_host_start() logs warnings only. */
  memset(&h, 0, sizeof(h));
  ck_assert_int_eq(cfg_load(&h.cfg, cfg, err, sizeof(err)), 0);
  log_set_fd(fd);
  log_set_level(KHOST_LOG_INFO);
  ck_assert_int_eq(host_open(&h.host, &h.cfg, &opts, err, sizeof(err)), 0);
  ck_assert_int_eq(host_start(h.host, err, sizeof(err)), 0);
  TU_WAIT_UNTIL(readyz(host_http_port(h.host), NULL), 30000,
                "both static members joined");
  mu_host_stop(&h);
  mu_host_close(&h);
  log_set_fd(2);
  close(fd);
  char *log = tu_read_file(log_path);
  ck_assert_ptr_nonnull(strstr(
      log, "[orders/0] static membership: group.instance.id host-a-orders-0"));
  ck_assert_ptr_nonnull(strstr(
      log, "[orders/1] static membership: group.instance.id host-a-orders-1"));
  free(log);
  free(log_path);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Records evt-<from>.. evt-<to - 1> to partition 0. */
static void produce_range(mu_cluster_t *c, int from, int to) {
  for (int i = from; i < to; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(c, TOPIC, 0, id, NULL, "order");
  }
  mu_flush(c);
}

/* The metrics once their text says `handled` records were handled and
 * `durable` batches made durable (free() it). */
static char *await_durable(int port, double handled, double durable) {
  int status;
  char *body = NULL;
  TU_WAIT_UNTIL(
      (free(body), body = hu_get(port, "/metrics", &status),
       hu_sample(body, "khost_records_handled_total{pipeline=\"orders\"}") ==
               handled &&
           hu_sum(body, "khost_batch_durable_duration_seconds_count") >=
               durable),
      60000, "records handled and durable");
  return body;
}

/* commit_interval = "1h": the first durable batch is committed at once;
 * the next, durable too, is not committed while the host runs (watched
 * for a second: without the interval its commit follows within
 * milliseconds); stopping the host commits it. */
START_TEST(test_commit_interval_holds_commits) {
  mu_cluster_t c;
  mu_host_t h;
  int status;
  char *body = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  produce_range(&c, 0, 5);
  char *cfg =
      hu_write_cfg(&c, "127.0.0.1:0", NULL, "commit_interval = \"1h\";", NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  TU_WAIT_UNTIL((free(body), body = hu_get(port, "/metrics", &status),
                 hu_sum(body, "khost_partition_committed_offset") == 5),
                60000, "the first batch committed");
  free(body);
  produce_range(&c, 5, 10);
  free(await_durable(port, 10, 2));
  for (int64_t until = tu_mono_ms() + 1000; tu_mono_ms() < until;) {
    body = hu_get(port, "/metrics", &status);
    ck_assert_double_eq(hu_sum(body, "khost_partition_committed_offset"), 5);
    ck_assert_double_eq(
        hu_sample(body, "khost_offset_commits_total{pipeline=\"orders\","
                        "result=\"ok\"}"),
        1);
    free(body);
    usleep(50 * 1000);
  }
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 5);
  mu_host_stop(&h);
  mu_host_close(&h);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 10);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A commit held back by commit_interval goes once the interval has
 * passed, with no record polled after it. */
START_TEST(test_commit_interval_commits_when_idle) {
  mu_cluster_t c;
  mu_host_t h;
  int status;
  char *body = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  produce_range(&c, 0, 5);
  char *cfg =
      hu_write_cfg(&c, "127.0.0.1:0", NULL, "commit_interval = \"2s\";", NULL);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  TU_WAIT_UNTIL((free(body), body = hu_get(port, "/metrics", &status),
                 hu_sum(body, "khost_partition_committed_offset") == 5),
                60000, "the first batch committed");
  free(body);
  produce_range(&c, 5, 10);
  free(await_durable(port, 10, 2));
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 10, 30000,
                "the second batch committed after the interval");
  mu_host_stop(&h);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

Suite *http_suite(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("metrics");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_metrics_of_a_known_run);
  tcase_add_test(tc, test_dead_letters_counted);
  tcase_add_test(tc, test_lag_seconds);
  suite_add_tcase(s, tc);
  tc = tcase_create("commits");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_commit_interval_holds_commits);
  tcase_add_test(tc, test_commit_interval_commits_when_idle);
  suite_add_tcase(s, tc);
  tc = tcase_create("ready");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_ready_once_joined);
  tcase_add_test(tc, test_not_ready_while_breaker_open);
  tcase_add_test(tc, test_not_ready_while_store_held);
  tcase_add_test(tc, test_not_ready_once_pipeline_stopped);
  suite_add_tcase(s, tc);
  tc = tcase_create("static");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_static_membership_ids);
  suite_add_tcase(s, tc);
  tc = tcase_create("listen");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_port_in_use);
  tcase_add_test(tc, test_listen_off);
  suite_add_tcase(s, tc);
  return s;
}
