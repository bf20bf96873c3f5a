/*
 * End-to-end tests against a real Apache Kafka cluster (KRaft), the one
 * tests/kafka/broker starts. `make check-kafka` (tests/kafka/run-tests)
 * runs this program twice: on a single broker, then on three nodes where
 * topics have replication factor 3 and min.insync.replicas 2 and the
 * "three-nodes" case also kills a partition leader mid-stream.
 *
 * Hosts run in this process (mockutil's mu_host_*) unless the test kills
 * khost itself: that one runs the real binary as a child process. Every
 * test has its own topic and group, so the tests share one cluster. What
 * khost committed is read back with librdkafka and, independently of it,
 * with Kafka's own ConsumerGroupCommand.
 *
 * Each test case works under its own temporary directory (TMPDIR points
 * there), which the unchecked teardown removes even after a failed test.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dead_letter.h"
#include "dedup.h"
#include "kafkautil.h"
#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define RUN_TIMEOUT_MS 90000

/* ------------------------------------------------------------ fixtures */

static char *g_root; /* the test case's directory */

static void case_setup(void) {
  g_root = tu_tempdir();
  ck_assert_msg(g_root != NULL, "cannot create a temporary directory");
  setenv("TMPDIR", g_root, 1);
}

static void case_teardown(void) {
  unsetenv("TMPDIR");
  tu_rm_rf(g_root);
  free(g_root);
  g_root = NULL;
}

/* One scenario: the cluster, and a topic and group of its own. */
typedef struct scenario {
  mu_cluster_t c;
  char topic[96];
  char group[96];
  int partitions;
} scenario_t;

static void scenario_open(scenario_t *s, const char *name, int partitions) {
  ku_connect(&s->c);
  snprintf(s->topic, sizeof(s->topic), "%s-%d", name, (int)getpid());
  snprintf(s->group, sizeof(s->group), "khost-%s-%d", name, (int)getpid());
  s->partitions = partitions;
  ku_topic(&s->c, s->topic, partitions);
}

static void scenario_close(scenario_t *s) {
  mu_stop(&s->c);
}

static char *dir_file(scenario_t *s, const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", s->c.dir, name), 0);
  return p;
}

/* A config for one pipeline on the scenario's topic with the `scripted`
 * fixture plugin logging to <dir>/<log>. */
static char *write_cfg(scenario_t *s, const char *file, int members,
                       const char *log, const char *db,
                       const char *pipeline_extra, const char *plugin_extra) {
  char *text = NULL, *plugin = tu_fixture("scripted");
  ck_assert_int_ge(
      asprintf(&text,
               "shutdown_timeout = \"30s\";\n"
               "kafka = { bootstrap_servers = \"%s\";\n"
               "          session_timeout_ms = " KU_SESSION_TIMEOUT ";\n"
               "          heartbeat_interval_ms = " KU_HEARTBEAT ";\n"
               "          topic_metadata_refresh_interval_ms = 1000; };\n"
               "dedup = { path = \"%s/%s\"; };\n"
               "pipelines = ( {\n"
               "  name = \"orders\"; group_id = \"%s\";\n"
               "  topics = [ \"%s\" ]; members = %d;\n"
               "  plugin = \"%s\";\n"
               "  %s\n"
               "  config = { log_path = \"%s/%s\"; %s };\n"
               "} );\n",
               s->c.bootstraps, s->c.dir, db, s->group, s->topic, members,
               plugin, pipeline_extra ? pipeline_extra : "", s->c.dir, log,
               plugin_extra ? plugin_extra : ""),
      0);
  char *path = tu_write_file(s->c.dir, file, text);
  free(text);
  free(plugin);
  return path;
}

/* Run a host in this process until it reaches the end offsets. */
static pipeline_stats_t run_to_end(const char *cfg) {
  mu_host_t h;
  pipeline_stats_t st;
  mu_host_start(&h, cfg, 1);
  mu_host_wait(&h, RUN_TIMEOUT_MS);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &st);
  mu_host_close(&h);
  return st;
}

/* The group's committed offsets equal the end offsets of every partition,
 * as librdkafka reads them and as Kafka's ConsumerGroupCommand shows them.
 * Returns the sum of the end offsets. */
static int64_t assert_committed_at_end(scenario_t *s) {
  ku_group_offsets_t *rows = calloc((size_t)s->partitions, sizeof(*rows));
  int64_t total = 0;
  ku_describe_group(&s->c, s->group, s->topic, rows, s->partitions);
  for (int p = 0; p < s->partitions; p++) {
    int64_t end = mu_end_offset(&s->c, s->topic, p);
    ck_assert_int_gt(end, 0);
    ck_assert_int_eq(mu_committed(&s->c, s->group, s->topic, p), end);
    ck_assert_msg(
        rows[p].current == end && rows[p].log_end == end && rows[p].lag == 0,
        "%s [%d]: kafka-consumer-groups shows committed %" PRId64
        ", log end %" PRId64 ", lag %" PRId64 "; end offset %" PRId64,
        s->topic, p, rows[p].current, rows[p].log_end, rows[p].lag, end);
    total += end;
  }
  free(rows);
  return total;
}

/* Every OK line has a distinct event ID; returns how many there are. */
static size_t assert_ok_ids_distinct(const mu_line_t *l, size_t n) {
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
  size_t ok = 0;
  for (size_t i = 0; i < n; i++) {
    if (l[i].result != KHOST_OK)
      continue;
    ck_assert_msg(!g_hash_table_contains(seen, l[i].event_id),
                  "event %s handled twice", l[i].event_id);
    g_hash_table_add(seen, (gpointer)l[i].event_id);
    ok++;
  }
  g_hash_table_destroy(seen);
  return ok;
}

static size_t count_lines(const char *path) {
  size_t n;
  free(mu_read_lines(path, &n));
  return n;
}

/* Distinct event IDs handled (OK) in the n plugin logs. */
static size_t distinct_ok(const char *const *logs, size_t n_logs) {
  GHashTable *ids =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (size_t f = 0; f < n_logs; f++) {
    size_t n;
    mu_line_t *l = mu_read_lines(logs[f], &n);
    for (size_t i = 0; i < n; i++)
      if (l[i].result == KHOST_OK)
        g_hash_table_add(ids, g_strdup(l[i].event_id));
    free(l);
  }
  size_t count = g_hash_table_size(ids);
  g_hash_table_destroy(ids);
  return count;
}

/* `records` records round-robin over the partitions, record i with
 * eventId evt-<first + i>: record i lands at offset (first + i) / parts
 * of partition (first + i) % parts when the topic held `first` before.
 * With ts_base > 0 a record is stamped ts_base + its offset in seconds;
 * with fail_every > 0 every fail_every-th record (i % fail_every == 0) has
 * the key key-<i> and the value "fail: evt-<i>", which the scripted
 * plugin fails. */
static void produce_records(scenario_t *s, int first, int records,
                            int64_t ts_base, int fail_every) {
  char id[32], key[32], value[48];
  for (int i = first; i < first + records; i++) {
    int fail = fail_every > 0 && i % fail_every == 0;
    int64_t offset = i / s->partitions;
    snprintf(id, sizeof(id), "evt-%05d", i);
    snprintf(key, sizeof(key), "key-%05d", i);
    snprintf(value, sizeof(value), "fail: %s", id);
    mu_produce_at(&s->c, s->topic, i % s->partitions, id, fail ? key : NULL,
                  fail ? value : "order",
                  ts_base > 0 ? ts_base + offset * 1000 : 0);
  }
  ku_flush(&s->c);
}

static void produce_range(scenario_t *s, int first, int records) {
  produce_records(s, first, records, 0, 0);
}

/* ------------------------------------------------- dedup, commit, restart */

enum { N_RECORDS = 300, N_DUPS = 30 };

/* N_RECORDS over 3 partitions, of which N_DUPS re-use an earlier event ID
 * (some on another partition). */
static void produce_with_duplicates(scenario_t *s) {
  char id[32], value[64];
  for (int i = 0; i < N_RECORDS; i++) {
    int original = i < N_RECORDS - N_DUPS;
    int n = original ? i : (i * 7) % (N_RECORDS - N_DUPS);
    snprintf(id, sizeof(id), "evt-%04d", n);
    snprintf(value, sizeof(value), "order %d", i);
    mu_produce(&s->c, s->topic, i % 3, id, NULL, value);
  }
  ku_flush(&s->c);
}

START_TEST(test_dedup_commit_restart) {
  scenario_t s;
  scenario_open(&s, "dedup", 3);
  produce_with_duplicates(&s);
  char *cfg = write_cfg(&s, "a.cfg", 2, "calls.log", "dedup.db", NULL, NULL);
  char *log = dir_file(&s, "calls.log");
  pipeline_stats_t st = run_to_end(cfg);
  size_t n;
  mu_line_t *lines = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, N_RECORDS - N_DUPS);
  ck_assert_uint_eq(assert_ok_ids_distinct(lines, n), N_RECORDS - N_DUPS);
  ck_assert_uint_eq(st.handled, N_RECORDS - N_DUPS);
  /* Exactly the re-published ones: a real broker accepts the synchronous
   * commit made when the second member's join revokes partitions, so
   * nothing is delivered twice. */
  ck_assert_uint_eq(st.duplicates, N_DUPS);
  /* The committed offsets Kafka's tool shows account for exactly the
   * records khost reports as handled or skipped. */
  ck_assert_int_eq(assert_committed_at_end(&s), st.handled + st.duplicates);

  /* Same group: its committed offsets are at the end; nothing comes. */
  st = run_to_end(cfg);
  ck_assert_uint_eq(st.handled + st.duplicates, 0);

  /* As after a crash between the SQLite and the Kafka commit: Kafka's own
   * tool puts the offsets back to the start, every record comes again and
   * the dedup marks make the plugin skip all of them. */
  ku_reset_to_earliest(&s.c, s.group, s.topic, s.partitions);
  st = run_to_end(cfg);
  ck_assert_uint_eq(st.handled, 0);
  ck_assert_uint_eq(st.duplicates, N_RECORDS);
  ck_assert_uint_eq(count_lines(log), N_RECORDS - N_DUPS);
  assert_committed_at_end(&s);
  free(lines);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* ------------------------------------------------- members join and leave */

typedef struct member_host {
  char *cfg, *log;
  mu_host_t h;
  pipeline_stats_t st;
} member_host_t;

static void member_host_start(scenario_t *s, member_host_t *m, char name,
                              const char *extra) {
  char file[16], log[16], db[16];
  snprintf(file, sizeof(file), "%c.cfg", name);
  snprintf(log, sizeof(log), "%c.log", name);
  snprintf(db, sizeof(db), "%c.db", name);
  m->cfg = write_cfg(s, file, 1, log, db, extra, "slow_ms = 15;");
  m->log = dir_file(s, log);
  mu_host_start(&m->h, m->cfg, 0);
}

static uint64_t assigned(member_host_t *m) {
  mu_host_stats(&m->h, &m->st);
  return m->st.assigned;
}

static void member_host_stop(member_host_t *m) {
  mu_host_stop(&m->h);
  ck_assert_int_eq(m->h.status, 0);
}

static void member_host_free(member_host_t *m) {
  mu_host_close(&m->h);
  free(m->cfg);
  free(m->log);
}

/* How many of the event IDs of lines l were handled (OK) twice; fails when
 * one was handled more often, or when fewer than `records` were handled. */
static size_t count_handled_twice(const mu_line_t *l, size_t n,
                                  size_t records) {
  GHashTable *times = g_hash_table_new(g_str_hash, g_str_equal);
  size_t twice = 0;
  for (size_t i = 0; i < n; i++) {
    if (l[i].result != KHOST_OK)
      continue;
    guint k = GPOINTER_TO_UINT(g_hash_table_lookup(times, l[i].event_id)) + 1;
    ck_assert_msg(k <= 2, "event %s handled %u times", l[i].event_id, k);
    twice += k == 2;
    g_hash_table_insert(times, (gpointer)l[i].event_id, GUINT_TO_POINTER(k));
  }
  ck_assert_uint_eq(g_hash_table_size(times), records);
  g_hash_table_destroy(times);
  return twice;
}

/* Three hosts of one member each, each with its own dedup store, in one
 * group: A and B consume, C joins mid-stream, then B leaves mid-stream.
 * No record is lost, the committed offsets end at the end offsets, and
 * every record is handled exactly once overall: the partitions that move
 * are committed synchronously before they go.
 *
 * Except with cooperative-sticky before librdkafka 2.10: there, an offset
 * commit made while an incremental rebalance is under way fails with
 * ILLEGAL_GENERATION and librdkafka then declares the assignment lost
 * (librdkafka issue #4059), so the new owner (another host, another dedup
 * store) handles the uncommitted records once more. For that case the test
 * asserts at-least-once delivery: each record handled once or twice. */
static void members_join_and_leave(const char *assignor) {
  enum { PARTS = 6, RECORDS = 1200 };
  scenario_t s;
  char extra[256];
  member_host_t a, b, c;
  int exact = strcmp(assignor, "cooperative-sticky") != 0 ||
              rd_kafka_version() >= 0x020a0000;
  scenario_open(
      &s, strcmp(assignor, "range") ? "join-leave-coop" : "join-leave", PARTS);
  snprintf(
      extra, sizeof(extra),
      "max_batch = 10; kafka = { partition_assignment_strategy = \"%s\"; };",
      assignor);
  member_host_start(&s, &a, 'a', extra);
  member_host_start(&s, &b, 'b', extra);
  TU_WAIT_UNTIL(assigned(&a) > 0 && assigned(&b) > 0 &&
                    a.st.assigned + b.st.assigned == PARTS,
                60000, "A and B own every partition");
  produce_range(&s, 0, RECORDS);
  TU_WAIT_UNTIL(count_lines(a.log) >= 30 && count_lines(b.log) >= 30, 60000,
                "A and B handling records");

  member_host_start(&s, &c, 'c', extra);
  TU_WAIT_UNTIL(assigned(&c) > 0 && assigned(&a) > 0 && assigned(&b) > 0 &&
                    a.st.assigned + b.st.assigned + c.st.assigned == PARTS,
                60000, "A, B and C share the partitions");
  TU_WAIT_UNTIL(count_lines(c.log) >= 20, 60000, "C handling records");

  member_host_stop(&b);
  size_t left_at = count_lines(a.log) + count_lines(b.log) + count_lines(c.log);
  ck_assert_msg(left_at < RECORDS, "B left after the end of the stream");
  TU_WAIT_UNTIL(assigned(&a) + assigned(&c) == PARTS, 60000,
                "A and C own every partition");
  const char *logs[] = {a.log, b.log, c.log};
  TU_WAIT_UNTIL(distinct_ok(logs, 3) == RECORDS, 90000, "every record handled");
  member_host_stop(&a);
  member_host_stop(&c);

  size_t na, nb, nc;
  mu_line_t *la = mu_read_lines(a.log, &na), *lb = mu_read_lines(b.log, &nb),
            *lc = mu_read_lines(c.log, &nc);
  mu_line_t *all = calloc(na + nb + nc, sizeof(*all));
  memcpy(all, la, na * sizeof(*la));
  memcpy(all + na, lb, nb * sizeof(*lb));
  memcpy(all + na + nb, lc, nc * sizeof(*lc));
  size_t twice = count_handled_twice(all, na + nb + nc, RECORDS);
  if (exact)
    ck_assert_msg(twice == 0, "%zu records handled by two hosts", twice);
  else
    printf("%s: %zu of %d records handled by two hosts (librdkafka %s)\n",
           assignor, twice, RECORDS, rd_kafka_version_str());
  ck_assert_uint_gt(na, 0);
  ck_assert_uint_gt(nc, 0);
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);
  free(all);
  free(la);
  free(lb);
  free(lc);
  member_host_free(&a);
  member_host_free(&b);
  member_host_free(&c);
  scenario_close(&s);
}

START_TEST(test_members_join_and_leave_eager) {
  members_join_and_leave("range");
}
END_TEST

START_TEST(test_members_join_and_leave_cooperative) {
  members_join_and_leave("cooperative-sticky");
}
END_TEST

/* ------------------------------------------------- SIGKILL of khost */

/* "[orders] handled N, duplicates skipped M" of a khost's stderr. */
static void parse_summary(const char *err, uint64_t *handled,
                          uint64_t *duplicates) {
  static const char key[] = "[orders] handled ";
  const char *at = err ? strstr(err, key) : NULL;
  ck_assert_msg(at != NULL, "no summary line in stderr:\n%s", ku_tail(err));
  ck_assert_msg(sscanf(at + strlen(key),
                       "%" SCNu64 ", duplicates skipped %" SCNu64, handled,
                       duplicates) == 2,
                "unreadable summary line:\n%s", ku_tail(err));
}

/* Which of the event IDs evt-00000 .. evt-<n-1> have a mark in the dedup
 * database at db (durable[i] = 1), as khost will see it at its next
 * start. Returns how many. */
static int durable_ids(const char *db, int n, char *durable) {
  char err[512], id[32];
  dedup_store_t *store;
  uint32_t scope;
  dedup_opts_t o = {.path = db, .retention_ms = 0};
  ck_assert_msg(dedup_open(&store, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(dedup_scope(store, "orders", &scope, err, sizeof(err)) == 0,
                "%s", err);
  int count = 0;
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof(id), "evt-%05d", i);
    durable[i] = dedup_claim(store, scope, id, strlen(id)) == DEDUP_SEEN;
    count += durable[i];
  }
  dedup_close(store);
  return count;
}

/* The index i of a line's event ID evt-<i>, checked against where
 * produce_range() put it. */
static int line_index(const scenario_t *s, const mu_line_t *l, int n) {
  int i = atoi(l->event_id + 4);
  ck_assert_msg(strncmp(l->event_id, "evt-", 4) == 0 && i >= 0 && i < n,
                "unexpected event ID %s", l->event_id);
  ck_assert_msg(l->partition == i % s->partitions &&
                    l->offset == i / s->partitions,
                "%s delivered as [%d] offset %" PRId64, l->event_id,
                (int)l->partition, l->offset);
  return i;
}

typedef struct kill_run {
  char *cfg, *db, *log;
  size_t lines_at_kill;
  int64_t committed_at_kill; /* sum over the partitions */
  int64_t *committed;        /* per partition, after the kill */
} kill_run_t;

/* Start `khost run` and SIGKILL it once `after` records were handled. */
static void run_and_kill(scenario_t *s, kill_run_t *k, size_t after) {
  ku_proc_t p;
  char *const argv[] = {KHOST, "run", "-c", k->cfg, NULL};
  ku_spawn(&p, s->c.dir, "killed", argv);
  TU_WAIT_UNTIL(count_lines(k->log) >= after || ku_reap(&p, 0), 60000,
                "khost handling records");
  ck_assert_msg(!p.exited, "khost exited before it was killed (0x%x)",
                p.status);
  ck_assert_int_eq(kill(p.pid, SIGKILL), 0);
  ck_assert(ku_reap(&p, 10000));
  ck_assert(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL);
  ku_proc_free(&p);
  k->lines_at_kill = count_lines(k->log);
  k->committed = calloc((size_t)s->partitions, sizeof(*k->committed));
  for (int part = 0; part < s->partitions; part++) {
    int64_t off = mu_committed(&s->c, s->group, s->topic, part);
    k->committed[part] = off < 0 ? 0 : off;
    k->committed_at_kill += k->committed[part];
  }
}

/* `khost run --exit-at-end` on the same group and dedup store. */
static void restart(scenario_t *s, kill_run_t *k, uint64_t *handled,
                    uint64_t *duplicates) {
  ku_proc_t p;
  char *const argv[] = {KHOST, "run", "-c", k->cfg, "--exit-at-end", NULL};
  ku_spawn(&p, s->c.dir, "restarted", argv);
  int status = ku_exit_status(&p, RUN_TIMEOUT_MS);
  char *err = tu_read_file(p.err);
  ck_assert_msg(status == 0 && err, "restart exited %d:\n%s", status,
                ku_tail(err));
  /* A sanitized build reports in stderr; UBSan keeps the exit status. */
  ck_assert_msg(!strstr(err, "runtime error:") && !strstr(err, "Sanitizer"),
                "sanitizer report:\n%s", ku_tail(err));
  parse_summary(err, handled, duplicates);
  free(err);
  ku_proc_free(&p);
}

/* khost (the binary, 2 members) is SIGKILLed mid-stream and started
 * again: no record is lost; a record is handled a second time only when
 * its batch had not reached SQLite before the kill; the offsets committed
 * at the kill never passed a record without a durable mark; the restart
 * skips exactly the durable records Kafka delivers again. */
START_TEST(test_sigkill_host_midstream) {
  enum { RECORDS = 1500, MEMBERS = 2, BATCH = 50 };
  scenario_t s;
  kill_run_t k = {0};
  char durable[RECORDS];
  int pre[RECORDS] = {0}, post[RECORDS] = {0};
  scenario_open(&s, "sigkill", 3);
  produce_range(&s, 0, RECORDS);
  char batch[32];
  snprintf(batch, sizeof(batch), "max_batch = %d;", BATCH);
  k.cfg = write_cfg(&s, "k.cfg", MEMBERS, "calls.log", "dedup.db", batch,
                    "slow_ms = 3;");
  k.db = dir_file(&s, "dedup.db");
  k.log = dir_file(&s, "calls.log");
  run_and_kill(&s, &k, 300);
  ck_assert_uint_lt(k.lines_at_kill, RECORDS);
  int n_durable = durable_ids(k.db, RECORDS, durable);
  uint64_t handled, duplicates;
  restart(&s, &k, &handled, &duplicates);

  size_t n;
  mu_line_t *l = mu_read_lines(k.log, &n);
  for (size_t j = 0; j < n; j++) {
    ck_assert_int_eq(l[j].result, KHOST_OK);
    int i = line_index(&s, &l[j], RECORDS);
    (j < k.lines_at_kill ? pre : post)[i]++;
  }
  int again = 0;
  for (int i = 0; i < RECORDS; i++) {
    ck_assert_msg(pre[i] <= 1, "evt-%05d handled twice before the kill", i);
    ck_assert_msg(!durable[i] || pre[i] == 1,
                  "evt-%05d marked but never handled", i);
    /* Durable: skipped after the restart. Not durable: handled (again). */
    ck_assert_msg(post[i] == !durable[i],
                  "evt-%05d (%s) handled %d time(s) after the restart", i,
                  durable[i] ? "durable" : "not durable", post[i]);
    again += pre[i] && post[i];
  }
  /* Only the batches in flight at the kill: one per member at most. */
  ck_assert_int_le(again, MEMBERS * BATCH);
  /* The committed offsets never passed a record without a durable mark. */
  for (int i = 0; i < RECORDS; i++)
    ck_assert_msg(durable[i] ||
                      i / s.partitions >= k.committed[i % s.partitions],
                  "evt-%05d committed without a mark", i);
  ck_assert_uint_eq(handled, (uint64_t)(RECORDS - n_durable));
  ck_assert_uint_eq(duplicates, (uint64_t)(n_durable - k.committed_at_kill));
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);
  free(l);
  free(k.committed);
  free(k.cfg);
  free(k.db);
  free(k.log);
  scenario_close(&s);
}
END_TEST

/* ------------------------------------------------- replay */

/* `khost replay -c cfg -p orders --from from --dedup mode`: exit 0. */
static void khost_replay(scenario_t *s, const char *cfg, const char *from,
                         const char *mode) {
  ku_proc_t p;
  char *const argv[] = {KHOST,     "replay",     "-c",     (char *)cfg,
                        "-p",      "orders",     "--from", (char *)from,
                        "--dedup", (char *)mode, NULL};
  ku_spawn(&p, s->c.dir, "replay", argv);
  int status = ku_exit_status(&p, RUN_TIMEOUT_MS);
  char *err = tu_read_file(p.err);
  ck_assert_msg(status == 0, "khost replay --from %s exited %d:\n%s", from,
                status, ku_tail(err));
  free(err);
  ku_proc_free(&p);
}

/* What Kafka's ConsumerGroupCommand shows after a replay: every partition
 * committed at `at`, with its end offset and the lag between them. */
static void assert_described_at(scenario_t *s, int64_t at) {
  ku_group_offsets_t *rows = calloc((size_t)s->partitions, sizeof(*rows));
  ku_describe_group(&s->c, s->group, s->topic, rows, s->partitions);
  for (int p = 0; p < s->partitions; p++) {
    int64_t end = mu_end_offset(&s->c, s->topic, p);
    ck_assert_int_eq(mu_committed(&s->c, s->group, s->topic, p), at);
    ck_assert_msg(
        rows[p].current == at && rows[p].log_end == end &&
            rows[p].lag == end - at,
        "%s [%d]: kafka-consumer-groups shows committed %" PRId64
        ", log end %" PRId64 ", lag %" PRId64 "; want %" PRId64 " of %" PRId64,
        s->topic, p, rows[p].current, rows[p].log_end, rows[p].lag, at, end);
  }
  free(rows);
}

/* Lines from `from` on: each an OK call of a record at offset >= min_offset
 * carrying KHOST_RECORD_REPLAY, each event once; returns how many. */
static size_t assert_replayed(const mu_line_t *l, size_t from, size_t n,
                              int64_t min_offset) {
  for (size_t i = from; i < n; i++)
    ck_assert_msg(l[i].offset >= min_offset &&
                      (l[i].flags & KHOST_RECORD_REPLAY),
                  "%s [%d] offset %" PRId64 " handled with flags %u",
                  l[i].event_id, (int)l[i].partition, l[i].offset, l[i].flags);
  return assert_ok_ids_distinct(l + from, n - from);
}

/* A pipeline runs to the end; `khost replay --from earliest` moves its
 * group back to 0 (Kafka's tool shows it). With --dedup skip the next run
 * skips every record; with --dedup reprocess it handles every one again,
 * flagged as a replay. Committed offsets at the end each time. */
START_TEST(test_replay_from_earliest) {
  enum { RECORDS = 300 };
  scenario_t s;
  scenario_open(&s, "replay", 3);
  produce_range(&s, 0, RECORDS);
  char *cfg = write_cfg(&s, "r.cfg", 1, "calls.log", "dedup.db", NULL, NULL);
  char *log = dir_file(&s, "calls.log");
  ck_assert_uint_eq(run_to_end(cfg).handled, RECORDS);

  khost_replay(&s, cfg, "earliest", "skip");
  assert_described_at(&s, 0);
  pipeline_stats_t st = run_to_end(cfg);
  ck_assert_uint_eq(st.handled, 0);
  ck_assert_uint_eq(st.duplicates, RECORDS);
  ck_assert_uint_eq(count_lines(log), RECORDS);
  assert_committed_at_end(&s);

  khost_replay(&s, cfg, "earliest", "reprocess");
  st = run_to_end(cfg);
  ck_assert_uint_eq(st.handled, RECORDS);
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 2 * RECORDS);
  ck_assert_uint_eq(assert_replayed(l, RECORDS, n, 0), RECORDS);
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);
  free(l);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* ms since the epoch as ISO-8601 UTC with milliseconds. */
static void iso_utc(int64_t ms, char *buf, size_t size) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char date[32];
  gmtime_r(&t, &tm);
  strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, size, "%s.%03dZ", date, (int)(ms % 1000));
}

/* Records stamped an hour ago + their offset in seconds. `khost replay
 * --from` the time of offset AT (plus 500 ms: between two records) puts
 * every partition at the first record at or after it, as Kafka's
 * offsets-for-times finds it; --dedup reprocess then handles exactly the
 * records from there on, flagged as a replay. */
START_TEST(test_replay_from_time) {
  enum { PARTS = 3, PER_PART = 40, AT = 25 };
  scenario_t s;
  char when[64];
  int64_t base = ((int64_t)time(NULL) - 3600) * 1000;
  scenario_open(&s, "replay-time", PARTS);
  produce_records(&s, 0, PARTS * PER_PART, base, 0);
  char *cfg = write_cfg(&s, "t.cfg", 1, "calls.log", "dedup.db", NULL, NULL);
  char *log = dir_file(&s, "calls.log");
  ck_assert_uint_eq(run_to_end(cfg).handled, PARTS * PER_PART);

  iso_utc(base + (AT - 1) * 1000 + 500, when, sizeof(when));
  khost_replay(&s, cfg, when, "reprocess");
  assert_described_at(&s, AT);
  pipeline_stats_t st = run_to_end(cfg);
  ck_assert_uint_eq(st.handled, PARTS * (PER_PART - AT));
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, PARTS * (2 * PER_PART - AT));
  ck_assert_uint_eq(assert_replayed(l, PARTS * PER_PART, n, AT),
                    PARTS * (PER_PART - AT));
  assert_committed_at_end(&s);
  free(l);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* ------------------------------------------------- dead-letter topic */

typedef struct dead_letters {
  const scenario_t *s;
  int records;
  char *seen; /* seen[i]: evt-<i> is on the dead-letter topic */
} dead_letters_t;

/* One dead-lettered record: the original key, value and eventId, and the
 * failure's headers naming where it came from. */
static void check_dead_letter(rd_kafka_message_t *d, void *arg) {
  dead_letters_t *dl = arg;
  char id[64], buf[256], want[96];
  ck_assert_ptr_nonnull(mu_header(d, "eventId", id, sizeof(id)));
  int i = atoi(id + 4);
  ck_assert_msg(strncmp(id, "evt-", 4) == 0 && i >= 0 && i < dl->records &&
                    !dl->seen[i],
                "unexpected or repeated dead letter %s", id);
  dl->seen[i] = 1;
  snprintf(want, sizeof(want), "fail: %s", id);
  ck_assert_msg(d->len == strlen(want) && !memcmp(d->payload, want, d->len),
                "%s: value %.*s", id, (int)d->len, (const char *)d->payload);
  snprintf(want, sizeof(want), "key-%05d", i);
  ck_assert_msg(d->key_len == strlen(want) && !memcmp(d->key, want, d->key_len),
                "%s: key %.*s", id, (int)d->key_len, (const char *)d->key);
  ck_assert_str_eq(mu_header(d, DLT_H_TOPIC, buf, sizeof(buf)), dl->s->topic);
  snprintf(want, sizeof(want), "%d", i % dl->s->partitions);
  ck_assert_str_eq(mu_header(d, DLT_H_PARTITION, buf, sizeof(buf)), want);
  snprintf(want, sizeof(want), "%d", i / dl->s->partitions);
  ck_assert_str_eq(mu_header(d, DLT_H_OFFSET, buf, sizeof(buf)), want);
  ck_assert_str_eq(mu_header(d, DLT_H_ATTEMPTS, buf, sizeof(buf)), "1");
  ck_assert_str_eq(mu_header(d, DLT_H_PIPELINE, buf, sizeof(buf)), "orders");
  ck_assert_ptr_nonnull(mu_header(d, DLT_H_FAILED_AT, buf, sizeof(buf)));
  ck_assert_ptr_nonnull(strstr(mu_header(d, DLT_H_ERROR, buf, sizeof(buf)),
                               "the plugin failed the record"));
}

/* Every 10th of 600 records fails: each is on the dead-letter topic once,
 * with its key, value and headers, and every offset is committed once the
 * dead-letter writes were acknowledged. On three nodes the leader of the
 * dead-letter topic is killed mid-stream: the writes go on with the other
 * two (acks=all, min.insync.replicas 2). */
START_TEST(test_dead_letter_topic) {
  enum { RECORDS = 600, FAIL_EVERY = 10, FAILS = RECORDS / FAIL_EVERY };
  scenario_t s;
  mu_host_t h;
  pipeline_stats_t st;
  char dlt[128], extra[192];
  int32_t down = -1;
  scenario_open(&s, "dlt", 3);
  snprintf(dlt, sizeof(dlt), "%s.dlt", s.topic);
  ku_topic(&s.c, dlt, 1);
  produce_records(&s, 0, RECORDS, 0, FAIL_EVERY);
  snprintf(extra, sizeof(extra), "dead_letter_topic = \"%s\"; max_batch = 20;",
           dlt);
  char *cfg = write_cfg(&s, "d.cfg", 2, "calls.log", "dedup.db", extra,
                        "slow_ms = 15;");
  char *log = dir_file(&s, "calls.log");
  mu_host_start(&h, cfg, 1);
  if (ku_nodes() >= 3) {
    TU_WAIT_UNTIL(count_lines(log) >= 100, 60000, "khost handling records");
    down = ku_leader(&s.c, dlt, 0);
    ku_kill_node(down);
    ck_assert_uint_lt(count_lines(log), RECORDS); /* mid-stream */
  }
  mu_host_wait(&h, RUN_TIMEOUT_MS);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &st);
  mu_host_close(&h);
  ck_assert_uint_eq(st.handled, RECORDS - FAILS);
  ck_assert_uint_eq(st.failed, FAILS);
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);

  dead_letters_t dl = {&s, RECORDS, calloc(RECORDS, 1)};
  ck_assert_uint_eq(
      mu_consume(&s.c, dlt, FAILS + 1, 5000, check_dead_letter, &dl), FAILS);
  for (int i = 0; i < RECORDS; i += FAIL_EVERY)
    ck_assert_msg(dl.seen[i], "evt-%05d is not on the dead-letter topic", i);
  if (down >= 0)
    ku_start_node(down);
  free(dl.seen);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* ------------------------------------------------- a broker dies */

/* Three nodes, replication 3, min.insync.replicas 2: the leader of
 * partition 0 is SIGKILLed while khost consumes, and more records are
 * produced while it is down. khost goes on from the new leaders: every
 * record is handled exactly once and the committed offsets reach the end.
 * The node is started again at the end. */
START_TEST(test_partition_leader_killed) {
  enum { PARTS = 6, HALF = 1000 };
  scenario_t s;
  mu_host_t h;
  pipeline_stats_t st;
  scenario_open(&s, "leader", PARTS);
  produce_range(&s, 0, HALF);
  char *cfg = write_cfg(&s, "l.cfg", 2, "calls.log", "dedup.db",
                        "max_batch = 20;", "slow_ms = 8;");
  char *log = dir_file(&s, "calls.log");
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL(count_lines(log) >= 200, 60000, "khost handling records");
  int32_t leader = ku_leader(&s.c, s.topic, 0);
  ku_kill_node(leader);
  ck_assert_uint_lt(count_lines(log), HALF); /* mid-stream */
  produce_range(&s, HALF, HALF);
  const char *logs[] = {log};
  TU_WAIT_UNTIL(distinct_ok(logs, 1) == 2 * HALF || host_done(h.host), 120000,
                "every record handled after the leader died");
  ck_assert_msg(!host_done(h.host), "khost stopped after the leader died");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &st);
  ck_assert_uint_eq(st.handled, 2 * HALF);
  ck_assert_uint_eq(distinct_ok(logs, 1), 2 * HALF);
  ck_assert_int_eq(assert_committed_at_end(&s), st.handled);
  mu_host_close(&h);
  ku_start_node(leader);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

Suite *kafka_suite(void) {
  Suite *s = suite_create("kafka");
  TCase *tc = tcase_create("cluster");
  tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, test_dedup_commit_restart);
  tcase_add_test(tc, test_members_join_and_leave_eager);
  tcase_add_test(tc, test_members_join_and_leave_cooperative);
  tcase_add_test(tc, test_sigkill_host_midstream);
  suite_add_tcase(s, tc);
  TCase *replay = tcase_create("replay");
  tcase_add_unchecked_fixture(replay, case_setup, case_teardown);
  tcase_set_timeout(replay, 240);
  tcase_add_test(replay, test_replay_from_earliest);
  tcase_add_test(replay, test_replay_from_time);
  suite_add_tcase(s, replay);
  TCase *dead = tcase_create("dead-letter");
  tcase_add_unchecked_fixture(dead, case_setup, case_teardown);
  tcase_set_timeout(dead, 240);
  tcase_add_test(dead, test_dead_letter_topic);
  suite_add_tcase(s, dead);
  if (ku_nodes() >= 3) {
    TCase *three = tcase_create("three-nodes");
    tcase_add_unchecked_fixture(three, case_setup, case_teardown);
    tcase_set_timeout(three, 300);
    tcase_add_test(three, test_partition_leader_killed);
    suite_add_tcase(s, three);
  }
  return s;
}
