/*
 * Failure handling against the mock cluster: retries that pause only their
 * partition, the dead-letter topic, the circuit breaker, FATAL policies,
 * failed offset commits, a locked dedup database, slow handlers.
 */
#include <check.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dead_letter.h"
#include "dedup_admin.h"
#include "dedup_log.h"
#include "log.h"
#include "mockutil.h"
#include "testutil.h"

#define TOPIC "order-completed"
#define DLT "order-completed.dlt"
#define GROUP "data-platform-consumer-group"

/* One or two pipelines using the scripted fixture; extra text goes into
 * the first pipeline, plugin_extra into its plugin config. */
static char *write_cfg(mu_cluster_t *c, const char *pipeline_extra,
                       const char *plugin_extra, const char *second) {
  mu_cfg_t o = {.group = GROUP,
                .pipeline = pipeline_extra,
                .plugin = plugin_extra,
                .more = second};
  return mu_write_cfg(c, &o);
}

/* n records evt-0 .. evt-<n-1> with value to partition part of TOPIC. */
static void produce_n(mu_cluster_t *c, int32_t part, int n, const char *value) {
  char id[32];
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(c, TOPIC, part, id, NULL, value);
  }
  mu_flush(c);
}

static char *dir_file(mu_cluster_t *c, const char *name) {
  return tu_path(c->dir, name);
}

static const mu_line_t *find_line(const mu_line_t *l, size_t n, int32_t part,
                                  int64_t off, unsigned attempt) {
  for (size_t i = 0; i < n; i++)
    if (l[i].partition == part && l[i].offset == off && l[i].attempt == attempt)
      return &l[i];
  return NULL;
}

static int file_count(mu_cluster_t *c, const char *name, const char *needle) {
  char *path = dir_file(c, name);
  int n = tu_file_count(path, needle);
  free(path);
  return n;
}

typedef struct count_id {
  const char *id;
  int n;
} count_id_t;

static int count_mark(void *arg, int64_t seq, uint32_t scope,
                      const dlog_mark_t *m) {
  count_id_t *c = arg;
  (void)seq;
  (void)scope;
  c->n += m->id_len == strlen(c->id) && memcmp(m->id, c->id, m->id_len) == 0;
  return 0;
}

/* Marks of event_id in the dedup database, in any pipeline (a reader
 * beside the host that writes). */
static int marks_of(mu_cluster_t *c, const char *event_id) {
  char *path = dir_file(c, "dedup.db"), err[512] = "";
  dadm_t *a = NULL;
  count_id_t count = {event_id, 0};
  ck_assert_msg(dadm_open(&a, path, 0, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(dadm_each_mark(a, -1, count_mark, &count, err, sizeof err) == 0,
                "%s", err);
  dadm_close(a);
  free(path);
  return count.n;
}

static pipeline_stats_t run_to_end(const char *cfg, int want_status) {
  return mu_run_to_end(cfg, want_status, 60000);
}

/* A record that asks to retry pauses its own partition only: the other
 * partition is handled while it waits, and its own order is kept. */
START_TEST(test_retry_pauses_only_its_partition) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 2);
  mu_produce(&c, TOPIC, 0, "evt-r", NULL, "retry please");
  mu_produce(&c, TOPIC, 0, "evt-a", NULL, "order");
  produce_n(&c, 1, 20, "order");
  char *cfg = write_cfg(
      &c, "retry = { max = 5; backoff = \"400ms\"; backoff_max = \"2s\"; };",
      "retry_times = 3;", NULL);
  pipeline_stats_t s = run_to_end(cfg, 0);
  char *log = dir_file(&c, "calls.log");
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 4 + 1 + 20);
  const mu_line_t *a2 = find_line(l, n, 0, 0, 2),
                  *a4 = find_line(l, n, 0, 0, 4),
                  *next = find_line(l, n, 0, 1, 1);
  ck_assert_ptr_nonnull(a2);
  ck_assert_ptr_nonnull(a4);
  ck_assert_ptr_nonnull(next);
  ck_assert_int_eq(a4->result, KHOST_OK);
  for (int off = 0; off < 20; off++) {
    const mu_line_t *p1 = find_line(l, n, 1, off, 1);
    ck_assert_ptr_nonnull(p1);
    /* partition 1 did not wait for partition 0's backoff */
    ck_assert_int_lt(p1->ms, a2->ms);
  }
  ck_assert_int_ge(next->ms, a4->ms); /* partition 0 stays in order */
  ck_assert_uint_eq(s.retries, 3);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 2);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 1), 20);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A record whose retries wait far longer in all than max.poll.interval.ms
 * (5 waits of 1 s against 3 s): the member keeps polling while it waits,
 * so it never leaves the group, and the record is handled in the end. */
START_TEST(test_retry_waits_longer_than_max_poll_interval_keep_the_member) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_produce(&c, TOPIC, 0, "evt-r", NULL, "retry please");
  mu_flush(&c);
  char *cfg = write_cfg(
      &c,
      "retry = { max = 6; backoff = \"1s\"; backoff_max = \"1s\"; };\n"
      "  kafka = { max_poll_interval_ms = " MU_SESSION_TIMEOUT "; };",
      "retry_times = 5;", NULL);
  /* Info: the assignments and a lost one are logged at that level. */
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_INFO);
  pipeline_stats_t s = run_to_end(cfg, 0);
  mu_log_restore(fd);
  ck_assert_uint_eq(s.retries, 5);
  ck_assert_uint_eq(s.handled, 1);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 1);
  /* Assigned once and never again: the member stayed in the group. */
  ck_assert_int_eq(
      file_count(&c, "khost.log", "assigned 1 partition(s): " TOPIC "[0]"), 1);
  ck_assert_msg(file_count(&c, "khost.log", "MAXPOLL") == 0,
                "max.poll.interval.ms exceeded");
  ck_assert_msg(file_count(&c, "khost.log", "lost 1 partition") == 0,
                "the assignment was lost");
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* The dead-lettered record: original key, value and headers plus the
 * failure's. */
static void check_dead_letter(rd_kafka_message_t *d, void *arg) {
  (void)arg;
  char buf[256];
  ck_assert_int_eq((int)d->len, (int)strlen("fail: bad amount"));
  ck_assert_int_eq(memcmp(d->payload, "fail: bad amount", d->len), 0);
  ck_assert_int_eq(memcmp(d->key, "k1", 2), 0);
  ck_assert_str_eq(mu_header(d, "eventId", buf, sizeof(buf)), "evt-1");
  ck_assert_str_eq(mu_header(d, DLT_H_TOPIC, buf, sizeof(buf)), TOPIC);
  ck_assert_str_eq(mu_header(d, DLT_H_PARTITION, buf, sizeof(buf)), "0");
  ck_assert_str_eq(mu_header(d, DLT_H_OFFSET, buf, sizeof(buf)), "1");
  ck_assert_str_eq(mu_header(d, DLT_H_ATTEMPTS, buf, sizeof(buf)), "1");
  ck_assert_str_eq(mu_header(d, DLT_H_PLUGIN, buf, sizeof(buf)), "scripted");
  ck_assert_str_eq(mu_header(d, DLT_H_PIPELINE, buf, sizeof(buf)), "orders");
  /* The plugin's reason (scripted: the text after "fail: "). */
  ck_assert_str_eq(mu_header(d, DLT_H_ERROR, buf, sizeof(buf)),
                   "the plugin failed the record: bad amount");
  ck_assert_ptr_nonnull(mu_header(d, DLT_H_FAILED_AT, buf, sizeof(buf)));
}

/* A cluster with TOPIC (one partition) and DLT; offset 1 of TOPIC, keyed
 * k1, is a record the scripted plugin fails (see check_dead_letter()). */
static void start_with_failing_record(mu_cluster_t *c) {
  mu_start(c, 1);
  mu_topic(c, TOPIC, 1);
  mu_topic(c, DLT, 1);
  mu_produce(c, TOPIC, 0, "evt-0", NULL, "order");
  mu_produce(c, TOPIC, 0, "evt-1", "k1", "fail: bad amount");
  mu_produce(c, TOPIC, 0, "evt-2", NULL, "order");
  mu_flush(c);
}

START_TEST(test_dead_letter_topic) {
  mu_cluster_t c;
  start_with_failing_record(&c);
  /* Consumer-only properties, globally (session and heartbeat) and for
   * the pipeline: the dead-letter producer leaves them out, so librdkafka
   * has nothing to warn about (CONFWARN). */
  char *cfg = write_cfg(&c,
                        "dead_letter_topic = \"" DLT "\";\n"
                        "  kafka = { max_poll_interval_ms = 60000;\n"
                        "            isolation_level = \"read_committed\"; };",
                        NULL, NULL);
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_WARNING);
  pipeline_stats_t s = run_to_end(cfg, 0);
  mu_log_restore(fd);
  /* The log was written: the record was dead-lettered, with its reason. */
  ck_assert_int_eq(file_count(&c, "khost.log",
                              "the plugin failed the record: bad amount; "
                              "sent to the dead-letter topic"),
                   1);
  ck_assert_msg(file_count(&c, "khost.log", "CONFWARN") == 0,
                "librdkafka warned");
  ck_assert_uint_eq(s.handled, 2);
  ck_assert_uint_eq(s.failed, 1);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 3);

  ck_assert_uint_eq(mu_consume(&c, DLT, 2, 3000, check_dead_letter, NULL), 1);

  /* The dead-lettered record is marked: delivered again, it is skipped and
   * not dead-lettered twice. */
  mu_commit(&c, GROUP, TOPIC, 0, 0);
  s = run_to_end(cfg, 0);
  ck_assert_uint_eq(s.duplicates, 3);
  ck_assert_uint_eq(mu_consume(&c, DLT, 2, 3000, NULL, NULL), 1);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* The parked row of (TOPIC, partition, offset): its columns joined with
 * '|' (key|value|event_id|reason|attempts), or "" when there is none. */
static char *parked_row(mu_cluster_t *c, int32_t partition, int64_t offset) {
  char *path = dir_file(c, "dedup.db");
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  char *row = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  ck_assert_msg(sqlite3_prepare_v2(
                    db,
                    "SELECT CAST(key AS TEXT) || '|' || CAST(value AS TEXT)"
                    " || '|' || CAST(event_id AS TEXT) || '|' || reason"
                    " || '|' || attempts FROM parked WHERE topic = ?1"
                    " AND partition = ?2 AND \"offset\" = ?3",
                    -1, &st, NULL) == SQLITE_OK,
                "%s", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, TOPIC, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, partition);
  sqlite3_bind_int64(st, 3, offset);
  if (sqlite3_step(st) == SQLITE_ROW)
    row = strdup((const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  free(path);
  return row ? row : strdup("");
}

/* Without a dead-letter topic a failed record is not dropped: it is
 * parked in the store with its key, value, event ID, reason and attempts,
 * the log line says where, and its offset is committed past it. */
START_TEST(test_failed_record_parked_without_dead_letter_topic) {
  mu_cluster_t c;
  start_with_failing_record(&c);
  char *cfg = write_cfg(&c, NULL, NULL, NULL);
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_WARNING);
  pipeline_stats_t s = run_to_end(cfg, 0);
  mu_log_restore(fd);
  ck_assert_uint_eq(s.handled, 2);
  ck_assert_uint_eq(s.failed, 1);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 3);
  ck_assert_int_eq(file_count(&c, "khost.log",
                              "the plugin failed the record: bad amount; "
                              "parked in the store: see `khost parked list "
                              "-c "),
                   1);
  char *row = parked_row(&c, 0, 1);
  ck_assert_str_eq(row, "k1|fail: bad amount|evt-1|the plugin failed the "
                        "record: bad amount|1");
  free(row);
  row = parked_row(&c, 0, 0);
  ck_assert_str_eq(row, "");
  free(row);
  /* Delivered again, it is a duplicate: still parked once. */
  mu_commit(&c, GROUP, TOPIC, 0, 0);
  s = run_to_end(cfg, 0);
  ck_assert_uint_eq(s.duplicates, 3);
  ck_assert_uint_eq(s.failed, 0);
  row = parked_row(&c, 0, 1);
  ck_assert_str_ne(row, "");
  free(row);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Produce requests the mock broker (id 1) has yet to refuse. */
static size_t refusals_left(mu_cluster_t *c) {
  size_t n = 0;
  ck_assert_int_eq(rd_kafka_mock_broker_error_stack_cnt(mock_cluster(c->mock),
                                                        1, 0 /* Produce */, &n),
                   0);
  return n;
}

/* The dead-letter write fails: the broker refuses the Produce request
 * (TOPIC_AUTHORIZATION_FAILED, which the producer does not retry by
 * itself) REFUSALS times. While it does, the failed record waits at the
 * head of its partition: not marked, its offset and those after it not
 * committed, not counted as failed. Once the write is accepted the record
 * is dead-lettered exactly once, marked, and everything is committed. */
START_TEST(test_dead_letter_write_fails) {
  enum { REFUSALS = 5 };
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  const char *refused = "cannot write to the dead-letter topic, the record "
                        "waits: dead-letter topic " DLT;
  start_with_failing_record(&c);
  /* On the broker's own error stack, whose depth can be asked for. */
  for (int i = 0; i < REFUSALS; i++)
    ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                         mock_cluster(c.mock), 1, 0 /* Produce */, 1,
                         RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 0),
                     0);
  char *cfg = write_cfg(&c,
                        "dead_letter_topic = \"" DLT "\";\n"
                        "  retry = { max = 3; backoff = \"100ms\"; "
                        "backoff_max = \"200ms\"; };",
                        NULL, NULL);
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_WARNING);
  mu_host_start(&h, cfg, 0);
  /* A sample taken while refusals are left was taken before the write
   * could have succeeded. */
  int samples = 0;
  int64_t deadline = tu_mono_ms() + 30000;
  for (;;) {
    int64_t committed = mu_committed(&c, GROUP, TOPIC, 0);
    mu_host_stats(&h, &s);
    int marked = marks_of(&c, "evt-1");
    size_t left = refusals_left(&c);
    if (left == 0)
      break;
    ck_assert_msg(committed <= 1,
                  "committed %" PRId64 " while the dead-letter write fails",
                  committed);
    ck_assert_uint_eq(s.failed, 0);
    ck_assert_int_eq(marked, 0);
    samples += left < REFUSALS; /* the record has met a refusal */
    ck_assert_msg(tu_mono_ms() < deadline, "%zu refusals left", left);
    usleep(20 * 1000);
  }
  ck_assert_int_gt(samples, 0);
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 3, 30000,
                "committed once the dead-letter write succeeds");
  mu_host_stop(&h);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  mu_log_restore(fd);
  /* More refusals logged than the broker made: after each, librdkafka
   * holds the topic in error until its next metadata refresh and refuses
   * the write itself. */
  ck_assert_int_ge(file_count(&c, "khost.log", refused), REFUSALS);
  ck_assert_int_eq(file_count(&c, "khost.log", "sent to the dead-letter topic"),
                   1);
  ck_assert_uint_eq(s.handled, 2);
  ck_assert_uint_eq(s.failed, 1);
  ck_assert_int_eq(marks_of(&c, "evt-1"), 1);
  ck_assert_uint_eq(mu_consume(&c, DLT, 2, 3000, check_dead_letter, NULL), 1);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A dead-letter write that gets no answer (the dead-letter partition has
 * no leader) does not hold up the member: while the failed record waits
 * at the head of partition 0, records produced to partition 1 meanwhile
 * are handled and committed. Once the partition has a leader again, the
 * record is dead-lettered once, marked and committed. */
START_TEST(test_dead_letter_write_in_flight_holds_its_partition_only) {
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  size_t n = 0;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 2);
  mu_topic(&c, DLT, 1);
  rd_kafka_mock_partition_set_leader(mock_cluster(c.mock), DLT, 0, -1);
  mu_produce(&c, TOPIC, 0, "evt-f", "k1", "fail: bad amount");
  mu_flush(&c);
  /* The write times out after a third of max.poll.interval.ms: 20 s. */
  char *cfg = write_cfg(&c,
                        "dead_letter_topic = \"" DLT "\";\n"
                        "  kafka = { max_poll_interval_ms = 60000; };",
                        NULL, NULL);
  char *calls = dir_file(&c, "calls.log");
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((free(mu_read_lines(calls, &n)), n == 1), 30000,
                "the plugin fails the record");
  produce_n(&c, 1, 20, "order");
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 1) == 20, 10000,
                "partition 1 goes on while the dead-letter write waits");
  mu_host_stats(&h, &s);
  ck_assert_uint_eq(s.failed, 0);
  ck_assert_int_eq(marks_of(&c, "evt-f"), 0);
  ck_assert_int_lt(mu_committed(&c, GROUP, TOPIC, 0), 1);

  rd_kafka_mock_partition_set_leader(mock_cluster(c.mock), DLT, 0, 1);
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 1, 30000,
                "committed once the dead-letter write is acknowledged");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  ck_assert_uint_eq(s.failed, 1);
  ck_assert_uint_eq(s.handled, 20);
  ck_assert_int_eq(marks_of(&c, "evt-f"), 1);
  ck_assert_uint_eq(mu_consume(&c, DLT, 2, 3000, NULL, NULL), 1);
  free(calls);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A dependency is down: every record fails. After the first 9 (of a
 * window of 20, opened at 10 outcomes) the breaker opens and the pipeline
 * stops dead-lettering. */
START_TEST(test_circuit_breaker_stops_dead_lettering) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_topic(&c, DLT, 1);
  produce_n(&c, 0, 30, "fail: inventory service down");
  char *cfg = write_cfg(&c,
                        "dead_letter_topic = \"" DLT "\";\n"
                        "  circuit_breaker = { window = 20; failure_ratio = "
                        "0.5; cooldown = \"30s\"; };",
                        NULL, NULL);
  mu_host_t h;
  pipeline_stats_t s;
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((mu_host_stats(&h, &s), s.breaker_trips == 1), 30000,
                "the breaker opens");
  ck_assert_uint_eq(s.failed, 9);
  /* While it is open nothing more is failed or dead-lettered. */
  int64_t until = tu_mono_ms() + 1500;
  while (tu_mono_ms() < until) {
    mu_host_stats(&h, &s);
    ck_assert_uint_eq(s.failed, 9);
    usleep(50 * 1000);
  }
  mu_host_stop(&h);
  mu_host_close(&h);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 9);
  ck_assert_uint_eq(mu_consume(&c, DLT, 10, 3000, NULL, NULL), 9);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* The dependency is down (the scripted fixture fails every record while
 * <dir>/down exists) until the breaker opens, and back during the
 * cooldown: once the cooldown is over the pipeline resumes, the record
 * that opened the breaker is called again and every record is handled and
 * committed. */
START_TEST(test_circuit_breaker_closes_after_cooldown) {
  enum { COOLDOWN_MS = 2000 };
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  char *plugin = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_topic(&c, DLT, 1);
  produce_n(&c, 0, 30, "order");
  char *down = dir_file(&c, "down"), *calls = dir_file(&c, "calls.log");
  free(tu_write_file(c.dir, "down", "inventory service down\n"));
  ck_assert_int_ge(asprintf(&plugin, "down_path = \"%s\";", down), 0);
  char *cfg = write_cfg(&c,
                        "dead_letter_topic = \"" DLT "\";\n"
                        "  circuit_breaker = { window = 20; failure_ratio = "
                        "0.5; cooldown = \"2s\"; };",
                        plugin, NULL);
  /* Notice: "circuit breaker closed". */
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_NOTICE);
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((mu_host_stats(&h, &s), s.breaker_trips == 1), 30000,
                "the breaker opens");
  ck_assert_uint_eq(s.failed, 9);
  ck_assert_int_eq(unlink(down), 0); /* the dependency is back */
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 30, 30000,
                "everything committed once the breaker closes");
  mu_host_stop(&h);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  mu_log_restore(fd);
  ck_assert_uint_eq(s.breaker_trips, 1);
  ck_assert_uint_eq(s.failed, 9);
  ck_assert_uint_eq(s.handled, 21);
  ck_assert_int_eq(file_count(&c, "khost.log",
                              "[orders] circuit breaker open: more than 50 % "
                              "of the last records failed"),
                   1);
  ck_assert_int_eq(file_count(&c, "khost.log",
                              "[orders/0] circuit breaker open: partitions "
                              "paused"),
                   1);
  ck_assert_int_eq(file_count(&c, "khost.log",
                              "[orders/0] circuit breaker closed: resuming"),
                   1);
  /* The record that opened it waited for the whole cooldown. */
  size_t n;
  mu_line_t *l = mu_read_lines(calls, &n);
  const mu_line_t *opened = find_line(l, n, 0, 9, 1),
                  *again = find_line(l, n, 0, 9, 2);
  ck_assert_ptr_nonnull(opened);
  ck_assert_ptr_nonnull(again);
  ck_assert_int_eq(opened->result, KHOST_FAIL);
  ck_assert_int_eq(again->result, KHOST_OK);
  ck_assert_int_ge(again->ms - opened->ms, COOLDOWN_MS);
  ck_assert_uint_eq(n, 31);
  ck_assert_uint_eq(mu_consume(&c, DLT, 10, 3000, NULL, NULL), 9);
  free(l);
  free(cfg);
  free(plugin);
  free(calls);
  free(down);
  mu_stop(&c);
}
END_TEST

/* The issue khost's default retry budget is for: a handler's database
 * down for 5 s, RETRY on every call meanwhile. With the default retry
 * settings (16 retries, 200 ms doubling to 5 s: 31 to 61 s) nothing fails
 * and nothing is parked; every record is handled once the database is
 * back. */
START_TEST(test_default_retry_rides_out_an_outage) {
  enum { OUTAGE_MS = 5000 };
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  char *plugin = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  produce_n(&c, 0, 5, "order");
  char *down = dir_file(&c, "down"), *calls = dir_file(&c, "calls.log");
  free(tu_write_file(c.dir, "down", "database locked\n"));
  ck_assert_int_ge(
      asprintf(&plugin, "down_path = \"%s\"; down_answer = \"retry\";", down),
      0);
  char *cfg = write_cfg(&c, NULL, plugin, NULL); /* no retry group */
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_WARNING);
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL(tu_file_count(calls, "\n") >= 1, 30000, "the first call");
  /* The outage: it lasts OUTAGE_MS from the first call. */
  int64_t back = tu_mono_ms() + OUTAGE_MS;
  while (tu_mono_ms() < back)
    usleep(50 * 1000);
  ck_assert_int_eq(unlink(down), 0);
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 5, 60000,
                "every record committed once the database is back");
  mu_host_stop(&h);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  mu_log_restore(fd);
  ck_assert_uint_eq(s.failed, 0);
  ck_assert_uint_eq(s.handled, 5);
  ck_assert_uint_ge(s.retries, 4); /* it did wait: 0.2+0.4+0.8+1.6 s < 5 s */
  ck_assert_int_eq(file_count(&c, "khost.log", "still failing"), 0);
  for (int64_t off = 0; off < 5; off++) {
    char *row = parked_row(&c, 0, off);
    ck_assert_str_eq(row, "");
    free(row);
  }
  free(cfg);
  free(plugin);
  free(calls);
  free(down);
  mu_stop(&c);
}
END_TEST

/* Two pipelines; the first meets a FATAL record. */
static char *two_pipelines(mu_cluster_t *c, const char *policy) {
  char *second = NULL, *plugin = tu_fixture("scripted"), extra[64];
  mu_topic(c, TOPIC, 1);
  mu_topic(c, "coupon-issue", 1);
  mu_produce(c, TOPIC, 0, "evt-0", NULL, "order");
  mu_produce(c, TOPIC, 0, "evt-1", NULL, "fatal: ledger unreachable");
  mu_produce(c, TOPIC, 0, "evt-2", NULL, "order");
  mu_produce(c, "coupon-issue", 0, "cpn-0", NULL, "issue");
  mu_flush(c);
  ck_assert_int_ge(
      asprintf(&second,
               ", {\n  name = \"coupons\"; group_id = "
               "\"coupon-issue-consumer-group\";\n"
               "  topics = [ \"coupon-issue\" ]; plugin = \"%s\";\n"
               "  config = { log_path = \"%s/coupons.log\"; };\n}",
               plugin, c->dir),
      0);
  snprintf(extra, sizeof(extra), "on_fatal = \"%s\";", policy);
  char *cfg = write_cfg(c, extra, NULL, second);
  free(second);
  free(plugin);
  return cfg;
}

START_TEST(test_fatal_stops_the_host) {
  mu_cluster_t c;
  mu_host_t h;
  mu_start(&c, 1);
  char *cfg = two_pipelines(&c, "stop_host");
  mu_host_start(&h, cfg, 0);
  /* Without --exit-at-end only the FATAL can stop it. */
  mu_host_wait(&h, 30000);
  ck_assert_int_eq(h.status, 1);
  mu_host_close(&h);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 1);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_fatal_stops_only_its_pipeline) {
  mu_cluster_t c;
  mu_host_t h;
  size_t n = 0;
  mu_start(&c, 1);
  char *cfg = two_pipelines(&c, "stop_pipeline");
  char *coupons = dir_file(&c, "coupons.log");
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((free(mu_read_lines(coupons, &n)), n == 1), 30000,
                "the coupons pipeline handles its record");
  /* The orders pipeline has stopped; coupons goes on with new records. */
  mu_produce(&c, "coupon-issue", 0, "cpn-1", NULL, "issue");
  mu_flush(&c);
  TU_WAIT_UNTIL((free(mu_read_lines(coupons, &n)), n == 2), 30000,
                "the coupons pipeline keeps running after the FATAL");
  ck_assert_msg(!host_done(h.host), "the host stopped");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 1); /* a pipeline failed */
  mu_host_close(&h);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 1);
  free(coupons);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* OffsetCommit fails a few times: the offsets are sent again and end up
 * committed. Sampled all along, the committed offset never goes back (a
 * resent older commit landing after a newer one would move it back). */
START_TEST(test_commit_errors_are_retried) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  produce_n(&c, 0, 50, "order");
  rd_kafka_mock_push_request_errors(mock_cluster(c.mock), 8 /* OffsetCommit */,
                                    3, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                    RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                                    RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
  char *cfg = write_cfg(&c, "max_batch = 10;", NULL, NULL);
  mu_host_t h;
  pipeline_stats_t s;
  int64_t last = RD_KAFKA_OFFSET_INVALID, deadline = tu_mono_ms() + 60000;
  int samples = 0;
  mu_host_start(&h, cfg, 1);
  while (!host_done(h.host)) {
    int64_t now = mu_committed(&c, GROUP, TOPIC, 0);
    ck_assert_msg(now >= last,
                  "the committed offset went back from %" PRId64 " to %" PRId64,
                  last, now);
    last = now;
    samples++;
    ck_assert_msg(tu_mono_ms() < deadline, "still running after 60 s");
    usleep(5 * 1000);
  }
  mu_host_wait(&h, 10000);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  ck_assert_int_gt(samples, 1);
  ck_assert_uint_eq(s.handled, 50);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 50);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Another connection holds the dedup database's write lock: records are
 * handled but nothing is committed; once the lock goes, everything is. */
START_TEST(test_locked_dedup_db_holds_commits) {
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  sqlite3 *db = NULL;
  size_t n = 0;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  char *cfg = write_cfg(&c, NULL, NULL, NULL);
  char *dbpath = dir_file(&c, "dedup.db"), *calls = dir_file(&c, "calls.log");
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((mu_host_stats(&h, &s), s.assigned == 1), 30000, "assigned");
  ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  produce_n(&c, 0, 10, "order");
  TU_WAIT_UNTIL((free(mu_read_lines(calls, &n)), n == 10), 30000,
                "records handled");
  /* Handled, but their marks cannot be written: nothing committed. */
  int64_t until = tu_mono_ms() + 1500;
  while (tu_mono_ms() < until) {
    ck_assert_int_lt(mu_committed(&c, GROUP, TOPIC, 0), 0);
    usleep(100 * 1000);
  }
  ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 10, 40000,
                "committed once the lock is gone");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_close(&h);
  free(calls);
  free(dbpath);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* shutdown_timeout of the host stopped while its offset commits wait for
 * an answer, and what the test allows on top of it (a busy machine under
 * the sanitizers: 4 s was once not enough); without the bound the stop
 * takes the delay of the answers below, 30 s or more. */
#define SLOW_COMMIT_SHUTDOWN_MS 4000
#define SLOW_COMMIT_MARGIN_MS 10000
/* The coordinator's delay of each OffsetCommit answer: far longer than
 * both. */
#define SLOW_COMMIT_RTT_MS 30000

/* The coordinator answers OffsetCommit only after 30 s while the host
 * stops: the whole shutdown (the commit in flight, the last commit,
 * leaving the group) ends within shutdown_timeout, and the host says
 * which offsets it leaves uncommitted. */
START_TEST(test_slow_commit_does_not_hold_the_shutdown) {
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_cfg_t o = {.group = GROUP,
                .top = "shutdown_timeout = \"4s\";\nhttp = { listen = \"\"; };",
                .pipeline = "max_batch = 10;"};
  char *cfg = mu_write_cfg(&c, &o);
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_WARNING);
  mu_host_start(&h, cfg, 0);
  produce_n(&c, 0, 10, "order");
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 10, 30000,
                "the first records committed");
  /* Every OffsetCommit from now on: answered after SLOW_COMMIT_RTT_MS. */
  ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                       mock_cluster(c.mock), 1, 8 /* OffsetCommit */, 4,
                       RD_KAFKA_RESP_ERR_NO_ERROR, SLOW_COMMIT_RTT_MS,
                       RD_KAFKA_RESP_ERR_NO_ERROR, SLOW_COMMIT_RTT_MS,
                       RD_KAFKA_RESP_ERR_NO_ERROR, SLOW_COMMIT_RTT_MS,
                       RD_KAFKA_RESP_ERR_NO_ERROR, SLOW_COMMIT_RTT_MS),
                   RD_KAFKA_RESP_ERR_NO_ERROR);
  for (int i = 10; i < 20; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(&c, TOPIC, 0, id, NULL, "order");
  }
  mu_flush(&c);
  TU_WAIT_UNTIL((mu_host_stats(&h, &s), s.handled == 20), 30000,
                "the later records handled");
  int64_t t0 = tu_mono_ms();
  host_request_stop(h.host);
  ck_assert_msg(
      host_wait(h.host, SLOW_COMMIT_SHUTDOWN_MS + SLOW_COMMIT_MARGIN_MS),
      "still stopping %d ms after the stop (shutdown_timeout %d ms)",
      SLOW_COMMIT_SHUTDOWN_MS + SLOW_COMMIT_MARGIN_MS, SLOW_COMMIT_SHUTDOWN_MS);
  int64_t took = tu_mono_ms() - t0;
  h.status = host_finish(h.host);
  mu_log_restore(fd);
  ck_assert_int_eq(h.status, 0);
  ck_assert_msg(took < SLOW_COMMIT_SHUTDOWN_MS + SLOW_COMMIT_MARGIN_MS,
                "the shutdown took %" PRId64 " ms", took);
  ck_assert_msg(file_count(&c, "khost.log",
                           "stopping without committing " TOPIC "[0]@20"),
                "the host does not say what it left uncommitted");
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_slow_handler_is_reported) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_produce(&c, TOPIC, 0, "evt-0", NULL, "order");
  mu_flush(&c);
  char *cfg =
      write_cfg(&c, "handler_timeout = \"300ms\";", "slow_ms = 1500;", NULL);
  int fd = mu_log_to(&c, "khost.log", KHOST_LOG_WARNING);
  run_to_end(cfg, 0);
  mu_log_restore(fd);
  ck_assert_msg(file_count(&c, "khost.log", "handle() has been running for"),
                "no slow-handler report");
  ck_assert_msg(file_count(&c, "khost.log", "order-completed [0] offset 0"),
                "the report does not name the record");
  free(cfg);
  mu_stop(&c);
}
END_TEST

Suite *faults_suite(void) {
  Suite *s = suite_create("faults");
  /* Each test a case of its own, run beside the others; the longest
   * first. */
  TU_CASE(s, test_dead_letter_topic, 120, "mock-cluster");
  TU_CASE(s, test_failed_record_parked_without_dead_letter_topic, 120,
          "mock-cluster");
  TU_CASE(s, test_dead_letter_write_fails, 120, "mock-cluster");
  TU_CASE(s, test_circuit_breaker_closes_after_cooldown, 120, "mock-cluster");
  TU_CASE(s, test_circuit_breaker_stops_dead_lettering, 120, "mock-cluster");
  TU_CASE(s, test_dead_letter_write_in_flight_holds_its_partition_only, 120,
          "mock-cluster");
  TU_CASE(s, test_retry_waits_longer_than_max_poll_interval_keep_the_member,
          120, "mock-cluster");
  TU_CASE(s, test_locked_dedup_db_holds_commits, 120, "mock-cluster");
  TU_CASE(s, test_retry_pauses_only_its_partition, 120, "mock-cluster");
  TU_CASE(s, test_default_retry_rides_out_an_outage, 120, "mock-cluster");
  TU_CASE(s, test_slow_handler_is_reported, 120, "mock-cluster");
  TU_CASE(s, test_commit_errors_are_retried, 120, "mock-cluster");
  TU_CASE(s, test_slow_commit_does_not_hold_the_shutdown, 120, "mock-cluster");
  TU_CASE(s, test_fatal_stops_the_host, 120, "mock-cluster");
  TU_CASE(s, test_fatal_stops_only_its_pipeline, 120, "mock-cluster");
  return s;
}
