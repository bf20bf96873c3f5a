/*
 * Concurrency inside a partition (concurrency = N, order_by) end to end
 * against the mock cluster, with the `scripted` fixture plugin logging
 * every call. Each record's event ID names its key and its sequence
 * number within the key ("k007-00012"), so that the log alone shows the
 * per-key order: the sequence numbers of one key's OK calls must come
 * strictly increasing (mu_key_order_violations()).
 */
#include <check.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "httputil.h"
#include "mockutil.h"
#include "replay.h"
#include "testutil.h"

#define TOPIC "order-completed"
#define GROUP "data-platform-consumer-group"
#define DLT "order-completed.dlt"

enum { PARTS = 3 };

static char *cfg_for(mu_cluster_t *c, const char *file, int members,
                     const char *log, const char *pipeline,
                     const char *plugin) {
  mu_cfg_t o = {.file = file,
                .members = members,
                .log = log,
                .pipeline = pipeline,
                .plugin = plugin};
  return mu_write_cfg(c, &o);
}

/* records records of keys keys, each key on one partition (as a producer's
 * partitioner puts it), its sequence numbers from 0 in production order.
 * value(key, seq) may script a record (NULL: "order"). */
static void produce_keyed(mu_cluster_t *c, int records, int keys,
                          const char *(*value)(int key, int seq)) {
  int *seq = calloc((size_t)keys, sizeof(*seq));
  char id[32], key[16];
  for (int i = 0; i < records; i++) {
    int k = (i * 7919) % keys;
    snprintf(key, sizeof(key), "k%03d", k);
    snprintf(id, sizeof(id), "k%03d-%05d", k, seq[k]);
    mu_produce(c, TOPIC, k % PARTS, id, key,
               value ? value(k, seq[k]) : "order");
    seq[k]++;
  }
  mu_flush(c);
  free(seq);
}

static void assert_committed_at_end(mu_cluster_t *c) {
  for (int p = 0; p < PARTS; p++) {
    int64_t end = mu_end_offset(c, TOPIC, p);
    ck_assert_int_gt(end, 0);
    ck_assert_int_eq(mu_committed(c, GROUP, TOPIC, p), end);
  }
}

/* ------------------------------------------------------------ key order */

/* Two members, concurrency n, 600 records of 40 keys: every record handled
 * once, each key in order, committed to the end. */
static void key_order(int n, const char *assignor) {
  enum { RECORDS = 600, KEYS = 40 };
  mu_cluster_t c;
  char pipeline[256];
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, RECORDS, KEYS, NULL);
  snprintf(pipeline, sizeof(pipeline),
           "concurrency = %d; order_by = \"key\"; max_batch = 50; "
           "kafka = { partition_assignment_strategy = \"%s\"; };",
           n, assignor);
  char *cfg = cfg_for(&c, "k.cfg", 2, "calls.log", pipeline, "slow_ms = 1;");
  pipeline_stats_t s = mu_run_to_end(cfg, 0, 90000);
  char *log = tu_path(c.dir, "calls.log");
  size_t nl;
  mu_line_t *lines = mu_read_lines(log, &nl);
  GString *why = g_string_new(NULL);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(lines, nl), RECORDS);
  ck_assert_msg(mu_key_order_violations(lines, nl, why) == 0, "%s", why->str);
  for (size_t i = 0; i < nl; i++) {
    ck_assert_int_ge(lines[i].worker, 0);
    ck_assert_int_lt(lines[i].worker, n);
    ck_assert_int_eq(lines[i].overlap, 0);
  }
  ck_assert_uint_eq(s.handled, RECORDS);
  assert_committed_at_end(&c);
  g_string_free(why, TRUE);
  free(lines);
  free(log);
  free(cfg);
  mu_stop(&c);
}

START_TEST(test_key_order_1_eager) {
  key_order(1, "range");
}
END_TEST

START_TEST(test_key_order_8_eager) {
  key_order(8, "range");
}
END_TEST

START_TEST(test_key_order_64_eager) {
  key_order(64, "range");
}
END_TEST

START_TEST(test_key_order_1_cooperative) {
  key_order(1, "cooperative-sticky");
}
END_TEST

START_TEST(test_key_order_8_cooperative) {
  key_order(8, "cooperative-sticky");
}
END_TEST

START_TEST(test_key_order_64_cooperative) {
  key_order(64, "cooperative-sticky");
}
END_TEST

/* ------------------------------------------------------------ instances */

/* concurrency = 4: the member runs four plugin instances, create() of each
 * learns its own worker index (0..3, each once), every one of them
 * handles records, and no instance is ever called while it is still in a
 * call (the scripted plugin flags a call that begins inside another). */
START_TEST(test_worker_instances) {
  enum { RECORDS = 200, N = 4 };
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, RECORDS, 40, NULL);
  char *cfg = cfg_for(&c, "w.cfg", 1, "calls.log",
                      "concurrency = 4; max_batch = 50;", "slow_ms = 10;");
  pipeline_stats_t s = mu_run_to_end(cfg, 0, 90000);
  char *log = tu_path(c.dir, "calls.log");
  size_t nl;
  mu_line_t *l = mu_read_lines(log, &nl);
  int calls[N] = {0};
  for (size_t i = 0; i < nl; i++) {
    ck_assert_msg(l[i].worker >= 0 && l[i].worker < N, "worker %d",
                  l[i].worker);
    ck_assert_msg(!l[i].overlap, "two calls of worker %d's instance at once",
                  l[i].worker);
    calls[l[i].worker]++;
  }
  for (int w = 0; w < N; w++)
    ck_assert_msg(calls[w] > 0, "worker %d handled nothing", w);
  ck_assert_uint_eq(s.handled, RECORDS);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, nl), RECORDS);
  assert_committed_at_end(&c);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------------ memory */

/* Every call takes 1.5 s and the member's two workers stay busy: its queue
 * holds max(max_batch, 16 x concurrency) = 32 records and may not grow
 * while it waits, however long the calls take (records/s of the gauge
 * khost_records_queued, sampled through /metrics for 4 s). The member
 * keeps its partitions meanwhile, and a second run finishes the rest. */
START_TEST(test_queue_bounded_while_workers_busy) {
  enum { QUEUE_MAX = 32 };
  mu_cluster_t c;
  mu_host_t h;
  char *body = NULL;
  int status = 0;
  double most = 0;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, 300, 30, NULL);
  mu_cfg_t o = {.file = "q.cfg",
                .top = "http = { listen = \"127.0.0.1:0\"; };",
                .pipeline = "concurrency = 2; max_batch = 10;",
                .plugin = "slow_ms = 1500;"};
  char *cfg = mu_write_cfg(&c, &o);
  mu_host_start(&h, cfg, 0);
  int port = host_http_port(h.host);
  ck_assert_int_gt(port, 0);
  TU_WAIT_UNTIL((free(body), body = hu_get(port, "/metrics", &status),
                 body && hu_sum(body, "khost_records_queued") >= QUEUE_MAX),
                30000, "the queue full");
  for (int64_t end = tu_mono_ms() + 4000; tu_mono_ms() < end;) {
    free(body);
    body = hu_get(port, "/metrics", &status);
    ck_assert_ptr_nonnull(body);
    double q = hu_sum(body, "khost_records_queued");
    most = q > most ? q : most;
    usleep(50 * 1000);
  }
  fprintf(stderr, "queue_bounded: at most %.0f records queued\n", most);
  ck_assert_msg(most <= QUEUE_MAX + PARTS,
                "%.0f records queued, the bound is %d", most, QUEUE_MAX);
  free(body);
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------------ dedup */

/* Two copies of one event ID under two keys of one partition, each call
 * taking 500 ms, with concurrency = 8: both copies are ready at once, but
 * only one is handled; the other waits on its claim and is counted as a
 * duplicate. */
START_TEST(test_copies_in_flight_handled_once) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  mu_produce(&c, TOPIC, 0, "same-id", "ka", "sleep 500");
  mu_produce(&c, TOPIC, 0, "same-id", "kb", "sleep 500");
  for (int i = 0; i < 10; i++) {
    char id[32], key[16];
    snprintf(id, sizeof(id), "other-%d", i);
    snprintf(key, sizeof(key), "k%d", i);
    mu_produce(&c, TOPIC, i % PARTS, id, key, "order");
  }
  mu_flush(&c);
  char *cfg = cfg_for(&c, "d.cfg", 1, "calls.log",
                      "concurrency = 8; max_batch = 50;", NULL);
  pipeline_stats_t s = mu_run_to_end(cfg, 0, 90000);
  char *log = tu_path(c.dir, "calls.log");
  size_t nl;
  mu_line_t *l = mu_read_lines(log, &nl);
  ck_assert_uint_eq(nl, 11);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, nl), 11);
  ck_assert_uint_eq(s.handled, 11);
  ck_assert_uint_eq(s.duplicates, 1);
  assert_committed_at_end(&c);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------------ slow keys */

/* Key k000's first two records take 1.5 s each; the other keys' none. */
static const char *slow_first_key(int key, int seq) {
  return key == 0 && seq < 2 ? "sleep 1500" : "order";
}

/* The other keys of k000's partition (k000 is at its offset 0) are all
 * handled before k000's first call has returned: a slow key holds only
 * itself. */
START_TEST(test_slow_key_does_not_slow_others) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, 300, 30, slow_first_key);
  char *cfg = cfg_for(&c, "s.cfg", 1, "calls.log",
                      "concurrency = 8; max_batch = 50;", NULL);
  mu_run_to_end(cfg, 0, 90000);
  char *log = tu_path(c.dir, "calls.log");
  size_t nl;
  mu_line_t *l = mu_read_lines(log, &nl);
  int64_t slow_first = -1, fast_last = -1;
  int slow_seen = 0;
  for (size_t i = 0; i < nl; i++) {
    if (strncmp(l[i].event_id, "k000-", 5) == 0) {
      if (++slow_seen == 1)
        slow_first = l[i].ms;
    } else if (l[i].partition == 0 && l[i].ms > fast_last) {
      fast_last = l[i].ms;
    }
  }
  ck_assert_int_eq(slow_seen, 10);
  ck_assert_msg(fast_last < slow_first,
                "the last other key of partition 0 returned at %lld ms, "
                "k000's first call at %lld ms",
                (long long)fast_last, (long long)slow_first);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, nl), 300);
  assert_committed_at_end(&c);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Key k001's first record asks for two retries (300 ms apart at least). */
static const char *retry_key(int key, int seq) {
  return key == 1 && seq == 0 ? "retry" : "order";
}

/* A RETRYing key holds only itself: its later records wait for it, the
 * other keys of its partition do not. */
START_TEST(test_retry_holds_only_its_key) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, 300, 30, retry_key);
  char *cfg = cfg_for(&c, "r.cfg", 1, "calls.log",
                      "concurrency = 8; max_batch = 50; retry = { max = 5; "
                      "backoff = \"600ms\"; backoff_max = \"600ms\"; };",
                      NULL);
  mu_run_to_end(cfg, 0, 90000);
  char *log = tu_path(c.dir, "calls.log");
  size_t nl;
  mu_line_t *l = mu_read_lines(log, &nl);
  GString *why = g_string_new(NULL);
  int64_t retried_ok = -1, others_last = -1;
  for (size_t i = 0; i < nl; i++) {
    if (strcmp(l[i].event_id, "k001-00000") == 0 && l[i].result == 0)
      retried_ok = l[i].ms;
    else if (l[i].partition == 1 && strncmp(l[i].event_id, "k001-", 5) != 0 &&
             l[i].ms > others_last)
      others_last = l[i].ms;
  }
  ck_assert_uint_eq(mu_count_result(l, nl, 1), 2); /* two RETRY answers */
  ck_assert_int_gt(retried_ok, 0);
  ck_assert_msg(others_last < retried_ok,
                "other keys of partition 1 waited for the retrying key");
  ck_assert_msg(mu_key_order_violations(l, nl, why) == 0, "%s", why->str);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, nl), 300);
  assert_committed_at_end(&c);
  g_string_free(why, TRUE);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------------ smoke */

/* SIGTERM-like stop mid-stream with records out: the host stops cleanly,
 * every committed offset is covered by records handled, and a second run
 * handles the rest, each record once. */
START_TEST(test_stop_mid_stream) {
  enum { RECORDS = 900 };
  mu_cluster_t c;
  mu_host_t h;
  size_t nl = 0;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, RECORDS, 60, NULL);
  char *cfg = cfg_for(&c, "t.cfg", 1, "calls.log",
                      "concurrency = 16; max_batch = 50;", "slow_ms = 5;");
  char *log = tu_path(c.dir, "calls.log");
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((free(mu_read_lines(log, &nl)), nl >= 100), 60000,
                "100 records handled");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_close(&h);
  mu_line_t *l = mu_read_lines(log, &nl);
  ck_assert_uint_lt(nl, RECORDS); /* stopped mid-stream */
  GHashTable *done =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (size_t i = 0; i < nl; i++)
    if (l[i].result == 0) {
      char *k = g_strdup_printf("%d/%lld", (int)l[i].partition,
                                (long long)l[i].offset);
      g_hash_table_add(done, k);
    }
  for (int p = 0; p < PARTS; p++) {
    int64_t committed = mu_committed(&c, GROUP, TOPIC, p);
    for (int64_t o = 0; o < committed; o++) {
      char k[48];
      snprintf(k, sizeof(k), "%d/%lld", p, (long long)o);
      ck_assert_msg(g_hash_table_contains(done, k),
                    "partition %d committed at %lld past offset %lld, "
                    "never handled",
                    p, (long long)committed, (long long)o);
    }
  }
  g_hash_table_destroy(done);
  free(l);
  mu_run_to_end(cfg, 0, 90000);
  l = mu_read_lines(log, &nl);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, nl), RECORDS);
  assert_committed_at_end(&c);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Half the keys fail every record. */
static const char *half_fail(int key, int seq) {
  (void)seq;
  return key % 2 ? "fail" : "order";
}

/* The circuit breaker with records out on several workers: it opens, the
 * failing records are failed in the end, the others handled. */
START_TEST(test_breaker_with_concurrency) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, 120, 12, half_fail);
  char *cfg = cfg_for(&c, "b.cfg", 1, "calls.log",
                      "concurrency = 8; max_batch = 20; circuit_breaker = { "
                      "window = 10; failure_ratio = 0.5; cooldown = "
                      "\"300ms\"; };",
                      NULL);
  pipeline_stats_t s = mu_run_to_end(cfg, 0, 90000);
  ck_assert_uint_ge(s.breaker_trips, 1);
  ck_assert_uint_eq(s.handled, 60);
  ck_assert_uint_eq(s.failed, 60);
  assert_committed_at_end(&c);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Failed records of several keys out at once go to the dead-letter topic:
 * each write in flight holds only its key, and every one lands. */
START_TEST(test_dead_letters_with_concurrency) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  mu_topic(&c, DLT, 1);
  produce_keyed(&c, 120, 12, half_fail);
  char *cfg = cfg_for(&c, "d.cfg", 1, "calls.log",
                      "concurrency = 8; max_batch = 20; "
                      "dead_letter_topic = \"" DLT "\";",
                      NULL);
  pipeline_stats_t s = mu_run_to_end(cfg, 0, 90000);
  ck_assert_uint_eq(s.handled, 60);
  ck_assert_uint_eq(s.failed, 60);
  ck_assert_uint_eq(mu_consume(&c, DLT, 61, 3000, NULL, NULL), 60);
  assert_committed_at_end(&c);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* khost replay --dedup reprocess, then a run with concurrency: every
 * record handled again, flagged as replayed, each key in order. */
START_TEST(test_replay_with_concurrency) {
  enum { RECORDS = 300 };
  mu_cluster_t c;
  char err[4096] = "";
  cfg_t cfg;
  replay_plan_t *plan = NULL;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce_keyed(&c, RECORDS, 30, NULL);
  char *path = cfg_for(&c, "r.cfg", 1, "calls.log",
                       "concurrency = 8; max_batch = 50;", NULL);
  mu_run_to_end(path, 0, 90000);
  replay_opts_t o = {.pipeline = "orders",
                     .from = "earliest",
                     .partition = -1,
                     .dedup_mode = DEDUP_REPLAY_REPROCESS};
  ck_assert_msg(cfg_load(&cfg, path, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(replay_plan(&plan, &cfg, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(replay_apply(plan, NULL, err, sizeof(err)) == 0, "%s", err);
  replay_free(plan);
  cfg_free(&cfg);
  pipeline_stats_t s = mu_run_to_end(path, 0, 90000);
  ck_assert_uint_eq(s.handled, RECORDS);
  char *log = tu_path(c.dir, "calls.log");
  size_t nl;
  mu_line_t *l = mu_read_lines(log, &nl);
  GString *why = g_string_new(NULL);
  ck_assert_uint_eq(nl, 2 * RECORDS);
  for (size_t i = RECORDS; i < nl; i++)
    ck_assert_uint_eq(l[i].flags & KHOST_RECORD_REPLAY, KHOST_RECORD_REPLAY);
  ck_assert_msg(mu_key_order_violations(l + RECORDS, RECORDS, why) == 0, "%s",
                why->str);
  assert_committed_at_end(&c);
  g_string_free(why, TRUE);
  free(l);
  free(log);
  free(path);
  mu_stop(&c);
}
END_TEST

/* examples/demo.cfg with concurrency = 8 in every pipeline, its
 * databases in dir and the plugins of the build tree, run by the khost
 * program with --exit-at-end: every pipeline reconciled (produced =
 * handled + duplicates skipped), no coupon over its stock. */
START_TEST(test_demo_with_concurrency) {
  char *dir = tu_tempdir(),
       *text = tu_read_file(TOP_SRCDIR "/examples/demo.cfg");
  char *out = NULL, *err = NULL, *dbs = g_strdup_printf("%s/khost-demo", dir);
  GError *e = NULL;
  int status = -1;
  ck_assert_ptr_nonnull(text);
  GString *cfg = g_string_new(text);
  g_string_replace(cfg, "/tmp/khost-demo", dbs, 0);
  g_string_replace(cfg, "\"plugins/.libs\"",
                   "\"" TOP_BUILDDIR "/plugins/.libs\"", 0);
  ck_assert_uint_eq(
      g_string_replace(cfg, "members = 1;", "members = 1; concurrency = 8;", 0),
      3);
  char *path = tu_write_file(dir, "demo8.cfg", cfg->str);
  char *argv[] = {TOP_BUILDDIR "/src/khost", "run", "-c", path,
                  "--exit-at-end",           NULL};
  ck_assert_msg(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                             &out, &err, &status, &e),
                "%s", e ? e->message : "spawn");
  ck_assert_msg(g_spawn_check_wait_status(status, NULL), "exit %d: %s", status,
                err);
  ck_assert_msg(strstr(out, "Every pipeline reconciled."), "%s", out);
  ck_assert_msg(strstr(out, "0 coupon(s) over stock"), "%s", out);
  g_string_free(cfg, TRUE);
  g_free(dbs);
  g_free(out);
  g_free(err);
  free(path);
  free(text);
  tu_rm_rf(dir);
  free(dir);
}
END_TEST

Suite *concurrency_suite(void) {
  Suite *s = suite_create("concurrency");
  TU_CASE(s, test_key_order_64_cooperative, 120, "mock-cluster");
  TU_CASE(s, test_key_order_64_eager, 120, "mock-cluster");
  TU_CASE(s, test_key_order_8_cooperative, 120, "mock-cluster");
  TU_CASE(s, test_key_order_8_eager, 120, "mock-cluster");
  TU_CASE(s, test_key_order_1_cooperative, 120, "mock-cluster");
  TU_CASE(s, test_key_order_1_eager, 120, "mock-cluster");
  TU_CASE(s, test_worker_instances, 120, "mock-cluster");
  TU_CASE(s, test_queue_bounded_while_workers_busy, 120, "mock-cluster");
  TU_CASE(s, test_copies_in_flight_handled_once, 120, "mock-cluster");
  TU_CASE(s, test_slow_key_does_not_slow_others, 120, "mock-cluster");
  TU_CASE(s, test_retry_holds_only_its_key, 120, "mock-cluster");
  TU_CASE(s, test_stop_mid_stream, 120, "mock-cluster");
  TU_CASE(s, test_breaker_with_concurrency, 120, "mock-cluster");
  TU_CASE(s, test_dead_letters_with_concurrency, 120, "mock-cluster");
  TU_CASE(s, test_replay_with_concurrency, 120, "mock-cluster");
  TU_CASE(s, test_demo_with_concurrency, 120, "mock-cluster");
  return s;
}
