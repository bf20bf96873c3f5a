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
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dead_letter.h"
#include "dedup.h"
#include "kafkautil.h"
#include "pgutil.h"
#include "readmeutil.h"
#include "shoputil.h"
#include "store.h"
#include "store_pg.h"
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
  return tu_path(s->c.dir, name);
}

/* A config for one pipeline on the scenario's topic with the `scripted`
 * fixture plugin logging to <dir>/<log>. */
static char *write_cfg(scenario_t *s, const char *file, int members,
                       const char *log, const char *db,
                       const char *pipeline_extra, const char *plugin_extra) {
  char *topics = NULL;
  ck_assert_int_ge(asprintf(&topics, "\"%s\"", s->topic), 0);
  mu_cfg_t o = {.file = file,
                .top = "shutdown_timeout = \"30s\";",
                .kafka = "session_timeout_ms = " KU_SESSION_TIMEOUT
                         "; heartbeat_interval_ms = " KU_HEARTBEAT
                         "; topic_metadata_refresh_interval_ms = 1000;",
                .db = db,
                .group = s->group,
                .topics = topics,
                .members = members,
                .pipeline = pipeline_extra,
                .log = log,
                .plugin = plugin_extra};
  char *path = mu_write_cfg(&s->c, &o);
  free(topics);
  return path;
}

/* Run a host in this process until it reaches the end offsets. */
static pipeline_stats_t run_to_end(const char *cfg) {
  return mu_run_to_end(cfg, 0, RUN_TIMEOUT_MS);
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
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(lines, n), N_RECORDS - N_DUPS);
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

/* "[pipeline] handled N, duplicates skipped M" of a khost's stderr. */
static void parse_summary(const char *err, const char *pipeline,
                          uint64_t *handled, uint64_t *duplicates) {
  char key[160];
  snprintf(key, sizeof(key), "[%s] handled ", pipeline);
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
  parse_summary(err, "orders", handled, duplicates);
  free(err);
  ku_proc_free(&p);
}

enum { KILL_RECORDS = 1500, KILL_MEMBERS = 2, KILL_BATCH = 50 };

/* khost (the binary) is SIGKILLed mid-stream and started again: no record is
 * lost; a record is handled a second time only when its batch had not reached
 * SQLite before the kill; the offsets committed at the kill never passed a
 * record without a durable mark; the restart skips exactly the durable records
 * Kafka delivers again. extra goes into the pipeline, plugin into the plugin's
 * config; again_max bounds the records handled both before the kill and after
 * the restart (0: no bound). With concurrent, one member (a second one joining
 * would make the first one's revoke wait for every call out), and the records
 * at offset 10 (evt-00030 .. 32) take 8 s and hold their partitions' committed
 * offsets while the records after them finish: calls of a partition must have
 * come out of offset order before the kill, and records beyond a committed
 * offset must have been durable at the kill (skipped after the restart).
 * Otherwise KILL_MEMBERS members. */
static void sigkill_midstream(const char *name, const char *extra,
                              const char *plugin, int again_max,
                              int concurrent) {
  enum { RECORDS = KILL_RECORDS };
  int members = concurrent ? 1 : KILL_MEMBERS;
  scenario_t s;
  kill_run_t k = {0};
  char durable[RECORDS];
  int pre[RECORDS] = {0}, post[RECORDS] = {0};
  scenario_open(&s, name, 3);
  for (int i = 0; concurrent && i < RECORDS; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%05d", i);
    mu_produce_at(&s.c, s.topic, i % 3, id, NULL,
                  i / 3 == 10 ? "sleep 8000" : "order", 0);
  }
  if (concurrent)
    ku_flush(&s.c);
  else
    produce_range(&s, 0, RECORDS);
  char pipeline[160];
  snprintf(pipeline, sizeof(pipeline), "max_batch = %d; %s", KILL_BATCH, extra);
  k.cfg = write_cfg(&s, "k.cfg", members, "calls.log", "dedup.db", pipeline,
                    plugin);
  k.db = dir_file(&s, "dedup.db");
  k.log = dir_file(&s, "calls.log");
  run_and_kill(&s, &k, 300);
  ck_assert_uint_lt(k.lines_at_kill, RECORDS);
  int n_durable = durable_ids(k.db, RECORDS, durable);
  uint64_t handled, duplicates;
  restart(&s, &k, &handled, &duplicates);

  size_t n;
  mu_line_t *l = mu_read_lines(k.log, &n);
  int64_t last[3] = {-1, -1, -1};
  int out_of_order = 0;
  for (size_t j = 0; j < n; j++) {
    ck_assert_int_eq(l[j].result, KHOST_OK);
    int i = line_index(&s, &l[j], RECORDS);
    (j < k.lines_at_kill ? pre : post)[i]++;
    if (j < k.lines_at_kill) {
      out_of_order += l[j].offset < last[l[j].partition];
      last[l[j].partition] = l[j].offset;
    }
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
  fprintf(stderr,
          "%s: %zu handled before the kill (%d out of offset order), %d "
          "durable, %" PRId64 " below the committed offsets, %d handled "
          "again\n",
          name, k.lines_at_kill, out_of_order, n_durable, k.committed_at_kill,
          again);
  if (again_max > 0)
    ck_assert_int_le(again, again_max);
  if (concurrent) {
    ck_assert_int_gt(out_of_order, 0);
    ck_assert_int_gt(n_durable, k.committed_at_kill);
  }
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

/* Only the batches in flight at the kill are handled again: one per
 * member at most. */
START_TEST(test_sigkill_host_midstream) {
  sigkill_midstream("sigkill", "", "slow_ms = 3;", KILL_MEMBERS * KILL_BATCH,
                    0);
}
END_TEST

/* ------------------------------------------------- the demo under kill -9 */

static void shop_produce(void *ctx, const shop_event_t *e, const char *topic) {
  mu_produce(ctx, topic, -1, e->id, e->key[0] ? e->key : NULL, e->value);
}

/* Wait until p's stderr says needle n times; fails if p exits first. */
static void wait_stderr(ku_proc_t *p, const char *needle, int n,
                        int64_t timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  for (;;) {
    char *err = tu_read_file(p->err);
    int seen = 0;
    for (const char *at = err; at && (at = strstr(at, needle)); at++)
      seen++;
    if (seen < n) {
      ck_assert_msg(!ku_reap(p, 0), "khost exited waiting for \"%s\":\n%s",
                    needle, ku_tail(err));
      ck_assert_msg(tu_mono_ms() < deadline, "no \"%s\" %d times in %s:\n%s",
                    needle, n, p->err, ku_tail(err));
    }
    free(err);
    if (seen >= n)
      return;
    usleep(50 * 1000);
  }
}

/* The demo's three plugins (order_analytics, coupon_issuer, balance_ledger;
 * their state in khost, no idempotency code of their own) while the shop's
 * events are published (tests/shoputil.h) and the khost binary is killed
 * at random moments (KHOST_STATE_KILLS, default 10; one in four while it
 * joins, the others 0.5 to 3 s after its three pipelines are assigned)
 * and started again; then it runs to the end. Every coupon's
 * issued and refused counts, every user's balance, seq and entries and
 * every hour's orders and revenue must equal what the produced events say,
 * exactly; at least half of the kills must land while records are in
 * flight (the run made records durable and left some to handle). */
START_TEST(test_demo_state_kill9) {
  const char *env = getenv("KHOST_STATE_KILLS");
  int kills = env ? atoi(env) : 10, in_flight = 0;
  GRand *rand = g_rand_new_with_seed(20261207u);
  mu_cluster_t c;
  shop_t shop;
  char topics[3][64], suffix[32];
  const char *t[3] = {topics[0], topics[1], topics[2]};
  ku_connect(&c);
  snprintf(topics[0], sizeof(topics[0]), "shop-orders-%d", (int)getpid());
  snprintf(topics[1], sizeof(topics[1]), "shop-requests-%d", (int)getpid());
  snprintf(topics[2], sizeof(topics[2]), "shop-changes-%d", (int)getpid());
  snprintf(suffix, sizeof(suffix), "-%d", (int)getpid());
  for (int i = 0; i < 3; i++)
    ku_topic(&c, topics[i], 3);
  char *db = tu_path(c.dir, "dedup.db");
  char *cfg = shop_config(c.dir, "shop.cfg", c.bootstraps, db,
                          "session_timeout_ms = " KU_SESSION_TIMEOUT
                          "; heartbeat_interval_ms = " KU_HEARTBEAT
                          "; topic_metadata_refresh_interval_ms = 1000;",
                          t, suffix);
  char *const argv[] = {KHOST, "run", "-c", cfg, NULL};
  shop_feed_start(&shop, shop_produce, &c, 2000, t);
  for (int k = 0; k < kills; k++) {
    char tag[32];
    ku_proc_t p;
    snprintf(tag, sizeof(tag), "shop%d", k);
    shop_state_t was = shop_stored(db);
    int64_t before = shop_applied(&was);
    ku_spawn(&p, c.dir, tag, argv);
    int consuming = k % 4 != 0;
    if (consuming)
      wait_stderr(&p, "assigned", 3, RUN_TIMEOUT_MS);
    /* A real broker's first fetch takes longer than the mock's: the
     * consuming kills come 0.5 to 3 s after the assignment. */
    usleep((useconds_t)g_rand_int_range(rand, consuming ? 500 : 0,
                                        consuming ? 3000 : 4000) *
           1000);
    int64_t produced = shop_events(&shop);
    kill(p.pid, SIGKILL);
    ck_assert(ku_reap(&p, 10000));
    ku_proc_free(&p);
    shop_state_t after = shop_stored(db);
    in_flight +=
        shop_applied(&after) > before && shop_applied(&after) < produced;
  }
  shop_feed_stop(&shop);
  ku_flush(&c);
  ku_proc_t last;
  char *const to_end[] = {KHOST, "run", "-c", cfg, "--exit-at-end", NULL};
  ku_spawn(&last, c.dir, "last", to_end);
  ck_assert_int_eq(ku_exit_status(&last, 4 * RUN_TIMEOUT_MS), 0);
  ku_proc_free(&last);
  shop_state_t got = shop_stored(db);
  fprintf(stderr,
          "test_demo_state_kill9: %d kills, %d of them while records were in "
          "flight; %" PRId64 " events (and their re-published copies), "
          "%" PRId64 " applied\n",
          kills, in_flight, shop.ref.events, shop_applied(&got));
  shop_compare(&got, &shop.ref);
  ck_assert_int_ge(in_flight, kills / 2);
  g_rand_free(rand);
  free(cfg);
  free(db);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------- replay */

/* `khost replay -c cfg -p orders --from from --dedup mode --execute`:
 * exit 0. */
static void khost_replay(scenario_t *s, const char *cfg, const char *from,
                         const char *mode) {
  ku_proc_t p;
  char *const argv[] = {KHOST,     "replay",     "-c",        (char *)cfg,
                        "-p",      "orders",     "--from",    (char *)from,
                        "--dedup", (char *)mode, "--execute", NULL};
  ku_spawn(&p, s->c.dir, "replay", argv);
  int status = ku_exit_status(&p, RUN_TIMEOUT_MS);
  char *err = tu_read_file(p.err);
  ck_assert_msg(status == 0, "khost replay --from %s exited %d:\n%s", from,
                status, ku_tail(err));
  /* A real broker takes the new offsets through the admin API: the
   * replay never joins the group. */
  ck_assert_msg(strstr(err, "joining the group") == NULL,
                "khost replay joined the group:\n%s", ku_tail(err));
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
  return mu_assert_ok_ids_distinct(l + from, n - from);
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

/* ------------------------------------------------- commands */

/* A finished child: its exit status, stdout and stderr. */
typedef struct cmd_result {
  int status;
  char *out, *err;
} cmd_result_t;

/* Run argv (argv[0] a path) to its end, its output in s's directory as
 * <tag>.out/.err; fails when it is killed or does not end in time, or on
 * a sanitizer report (UBSan keeps the exit status). */
static void run_cmd(scenario_t *s, const char *tag, char *const argv[],
                    cmd_result_t *r) {
  ku_proc_t p;
  ku_spawn(&p, s->c.dir, tag, argv);
  r->status = ku_exit_status(&p, RUN_TIMEOUT_MS);
  r->out = tu_read_file(p.out);
  r->err = tu_read_file(p.err);
  ck_assert_msg(r->out && r->err, "%s: no output files", tag);
  ck_assert_msg(!strstr(r->err, "runtime error:") &&
                    !strstr(r->err, "Sanitizer"),
                "%s: sanitizer report:\n%s", tag, ku_tail(r->err));
  ku_proc_free(&p);
}

static void cmd_result_free(cmd_result_t *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

/* The committed offset of every partition of s's group, as librdkafka
 * reads it (-1001 where nothing is committed). */
static void committed_offsets(scenario_t *s, int64_t *out) {
  for (int p = 0; p < s->partitions; p++)
    out[p] = mu_committed(&s->c, s->group, s->topic, p);
}

/* One partition of s's topic as `khost offsets --json` reports it: -1 for
 * a null offset, "" for a null member. */
typedef struct offsets_row {
  int64_t committed, start, end, lag;
  char member[256];
} offsets_row_t;

static int64_t json_offset(json_t *v) {
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* `khost offsets -c cfg --json`: the rows of s's topic in out[partition];
 * fails unless it exits 0 with one row of s's group per partition. */
static void khost_offsets(scenario_t *s, const char *cfg, offsets_row_t *out) {
  char *const argv[] = {KHOST, "offsets", "-c", (char *)cfg, "--json", NULL};
  cmd_result_t r;
  json_error_t jerr;
  size_t i;
  json_t *row;
  int found = 0;
  run_cmd(s, "offsets", argv, &r);
  ck_assert_msg(r.status == 0, "khost offsets exited %d:\n%s", r.status,
                ku_tail(r.err));
  json_t *rows = json_loads(r.out, 0, &jerr);
  ck_assert_msg(json_is_array(rows), "khost offsets --json: %s:\n%s", jerr.text,
                ku_tail(r.out));
  json_array_foreach(rows, i, row) {
    const char *topic = json_string_value(json_object_get(row, "topic"));
    const char *group = json_string_value(json_object_get(row, "group"));
    const char *member = json_string_value(json_object_get(row, "member"));
    json_int_t p = json_integer_value(json_object_get(row, "partition"));
    if (!topic || strcmp(topic, s->topic) != 0)
      continue;
    ck_assert_msg(group && strcmp(group, s->group) == 0 && p >= 0 &&
                      p < s->partitions && found < s->partitions,
                  "khost offsets --json: unexpected row %zu:\n%s", i, r.out);
    out[p].committed = json_offset(json_object_get(row, "committed"));
    out[p].start = json_offset(json_object_get(row, "start"));
    out[p].end = json_offset(json_object_get(row, "end"));
    out[p].lag = json_offset(json_object_get(row, "lag"));
    snprintf(out[p].member, sizeof(out[p].member), "%s", member ? member : "");
    found++;
  }
  ck_assert_msg(found == s->partitions,
                "khost offsets --json: %d rows of %s for %d partitions:\n%s",
                found, s->topic, s->partitions, r.out);
  json_decref(rows);
  cmd_result_free(&r);
}

/* ------------------------------------------------- README's replay example */

#define README_EXAMPLE                                                         \
  "### Worked example: rebuild a JSONL file from the whole topic\n"
/* The letters of example_step() of the example's commands, others left
 * out: start the broker, publish twice, run, offsets, dry run, replay,
 * run, stop the broker. */
#define README_STEPS "spprodxrt"
/* `--partitions 3` */
#define EXAMPLE_PARTS 3
#define WHAT "worked replay example"

/* text with every `from` replaced by `to` (g_free()); fails when from does
 * not occur. */
static char *replace_all(const char *text, const char *from, const char *to) {
  gchar **parts = g_strsplit(text, from, -1);
  ck_assert_msg(g_strv_length(parts) > 1,
                "README.md's worked replay example has no \"%s\"", from);
  char *out = g_strjoinv(to, parts);
  g_strfreev(parts);
  return out;
}

/* What a command of the example does, as a letter of README_STEPS ('.'
 * for anything else). */
static char example_step(const char *cmd) {
  if (g_str_has_prefix(cmd, "tests/kafka/broker start"))
    return 's';
  if (g_str_has_prefix(cmd, "tests/kafka/broker stop"))
    return 't';
  if (strstr(cmd, "| kcat -P "))
    return 'p';
  if (g_str_has_prefix(cmd, "./src/khost run "))
    return 'r';
  if (g_str_has_prefix(cmd, "./src/khost offsets "))
    return 'o';
  if (g_str_has_prefix(cmd, "./src/khost replay "))
    return strstr(cmd, " --execute") ? 'x' : 'd';
  return '.';
}

/* A shell variable assignment (name=...) on one line. */
static int is_assignment(const char *cmd) {
  size_t n = strspn(cmd, "abcdefghijklmnopqrstuvwxyz_");
  return n > 0 && cmd[n] == '=' && !strchr(cmd, '\n');
}

/* A directory standing for the top of the built tree: src and plugins of
 * the build, tests/kafka of the broker script in use. */
static char *example_tree(scenario_t *s) {
  char *tree = dir_file(s, "tree");
  gchar *tests = g_build_filename(tree, "tests", NULL);
  gchar *src = g_build_filename(tree, "src", NULL);
  gchar *plugins = g_build_filename(tree, "plugins", NULL);
  gchar *kafka = g_build_filename(tests, "kafka", NULL);
  gchar *scripts = g_path_get_dirname(ku_broker_script());
  ck_assert_int_eq(g_mkdir_with_parents(tests, 0755), 0);
  ck_assert_int_eq(symlink(TOP_BUILDDIR "/src", src), 0);
  ck_assert_int_eq(symlink(TOP_BUILDDIR "/plugins", plugins), 0);
  ck_assert_int_eq(symlink(scripts, kafka), 0);
  g_free(scripts);
  g_free(kafka);
  g_free(plugins);
  g_free(src);
  g_free(tests);
  return tree;
}

/* The JSONL file holds one line per order of the example: 6 objects of
 * s's topic with the event IDs order-1 .. order-6. */
static void assert_six_orders(scenario_t *s, const char *path) {
  char *text = tu_read_file(path);
  ck_assert_msg(text != NULL, "cannot read %s", path);
  gchar **lines = g_strsplit(text, "\n", -1);
  unsigned seen = 0, n = 0;
  for (; lines[n] && lines[n][0]; n++) {
    json_t *o = json_loads(lines[n], 0, NULL);
    const char *topic = json_string_value(json_object_get(o, "topic"));
    const char *id = json_string_value(json_object_get(o, "event_id"));
    int k = id && strncmp(id, "order-", 6) == 0 ? atoi(id + 6) : 0;
    ck_assert_msg(topic && strcmp(topic, s->topic) == 0 && k >= 1 && k <= 6 &&
                      !(seen & (1u << k)),
                  "%s: line %u: %s", path, n + 1, lines[n]);
    seen |= 1u << k;
    json_decref(o);
  }
  ck_assert_msg(n == 6 && !lines[n + 1], "%s: %u lines, not 6:\n%s", path, n,
                text);
  g_strfreev(lines);
  free(text);
}

/* Partition p's committed offset is `at`; on a partition the records of
 * the example left empty (kcat spreads them at random), nothing committed
 * at all counts as well. */
static int committed_at(scenario_t *s, int p, int64_t committed, int64_t at) {
  return committed == at ||
         (committed < 0 && mu_end_offset(&s->c, s->topic, p) == 0);
}

/* What the example's `khost offsets` printed: a row per partition of s's
 * topic, committed at the end offset (or nothing on an empty one), lag 0,
 * no member (the run has ended). */
static void assert_example_offsets(scenario_t *s, const char *out) {
  gchar **lines = g_strsplit(out, "\n", -1);
  int rows = 0;
  for (size_t i = 0; lines[i]; i++) {
    char group[128], topic[128], committed[32], start[32], end[32], lag[32],
        member[256];
    int part;
    if (sscanf(lines[i], "%127s %127s %d %31s %31s %31s %31s %255s", group,
               topic, &part, committed, start, end, lag, member) != 8 ||
        strcmp(group, s->group) != 0)
      continue;
    ck_assert_msg(
        strcmp(topic, s->topic) == 0 &&
            (strcmp(committed, end) == 0 ||
             (strcmp(committed, "-") == 0 && strcmp(end, "0") == 0)) &&
            strcmp(lag, "0") == 0 && strcmp(member, "-") == 0,
        "khost offsets: %s", lines[i]);
    rows++;
  }
  ck_assert_msg(rows == s->partitions, "khost offsets: %d rows:\n%s", rows,
                out);
  g_strfreev(lines);
}

/* A run of the example, checked step by step. */
typedef struct example_run {
  scenario_t *s;
  char *jsonl;
  int runs;
  int64_t committed[EXAMPLE_PARTS]; /* after the last step checked */
} example_run_t;

/* What the example's step printed and changed, as README says. */
static void check_example_step(example_run_t *e, char step,
                               const cmd_result_t *r) {
  static const char plan[] = "7 record(s) in front of the pipeline, 7 of "
                             "them consumed before (replayed)";
  scenario_t *s = e->s;
  int64_t now[EXAMPLE_PARTS], total = 0;
  uint64_t handled, duplicates;
  if (!strchr("rodx", step))
    return; /* before the topic exists, or nothing to check */
  committed_offsets(s, now);
  switch (step) {
  case 'r': /* handled 6, duplicates skipped 1; one line per order */
    parse_summary(r->err, "order-analytics", &handled, &duplicates);
    ck_assert_msg(handled == 6 && duplicates == 1,
                  "run %d: handled %" PRIu64 ", duplicates skipped %" PRIu64,
                  e->runs + 1, handled, duplicates);
    assert_six_orders(s, e->jsonl);
    for (int p = 0; p < s->partitions; p++) {
      int64_t end = mu_end_offset(&s->c, s->topic, p);
      ck_assert_msg(committed_at(s, p, now[p], end),
                    "run %d: [%d] committed %" PRId64 " of %" PRId64,
                    e->runs + 1, p, now[p], end);
      total += end;
    }
    ck_assert_int_eq(total, 7);
    e->runs++;
    break;
  case 'o':
    assert_example_offsets(s, r->out);
    break;
  case 'd': /* the plan, and nothing changed */
    ck_assert_msg(strstr(r->out, plan) &&
                      g_str_has_suffix(r->out,
                                       "preview only, nothing changed: add "
                                       "--execute to move the offsets\n"),
                  "khost replay without --execute printed:\n%s", r->out);
    for (int p = 0; p < s->partitions; p++)
      ck_assert_msg(now[p] == e->committed[p],
                    "the preview moved [%d] from %" PRId64 " to %" PRId64, p,
                    e->committed[p], now[p]);
    break;
  case 'x': /* the plan, and the group back at the start */
    ck_assert_msg(strstr(r->out, plan) != NULL, "khost replay printed:\n%s",
                  r->out);
    for (int p = 0; p < s->partitions; p++)
      ck_assert_msg(committed_at(s, p, now[p], 0),
                    "after the replay [%d] is at %" PRId64, p, now[p]);
    break;
  }
  memcpy(e->committed, now, sizeof(now));
}

/* The example's steps come in the order README_STEPS, the broker's stop
 * last. */
static void check_example_plan(GPtrArray *cmds) {
  GString *steps = g_string_new(NULL);
  for (guint i = 0; i < cmds->len; i++)
    if (example_step(cmds->pdata[i]) != '.')
      g_string_append_c(steps, example_step(cmds->pdata[i]));
  ck_assert_msg(strcmp(steps->str, README_STEPS) == 0 &&
                    example_step(cmds->pdata[cmds->len - 1]) == 't',
                "README.md's replay example: steps %s, not " README_STEPS
                " ending with the broker's stop (s start, p publish, r run, "
                "o offsets, d dry run, x replay, t stop)",
                steps->str);
  g_string_free(steps, TRUE);
}

/* README.md's worked replay example, every command as README writes it,
 * each run by /bin/sh -e in a directory standing for the top of the built
 * tree after the example's variable assignments before it (as in one
 * shell). It runs on this test run's cluster: its `tests/kafka/broker
 * start` and `stop` are left out, /tmp/ is the test's directory, and the
 * topic and group get this process's id. Each step prints and changes what
 * README says, and README says what the test asserts. */
START_TEST(test_readme_replay) {
  scenario_t s;
  char *kcat = g_find_program_in_path("kcat");
  const char *require = getenv("KHOST_REQUIRE_KAFKA");
  if (!kcat) {
    ck_assert_msg(!require || strcmp(require, "1") != 0,
                  "kcat not found: README's replay example publishes with it");
    fprintf(stderr, "test_readme_replay: SKIPPED: no kcat on PATH\n");
    return;
  }
  g_free(kcat);
  ku_connect(&s.c);
  snprintf(s.topic, sizeof(s.topic), "order-completed-%d", (int)getpid());
  snprintf(s.group, sizeof(s.group), "data-platform-consumer-group-%d",
           (int)getpid());
  s.partitions = EXAMPLE_PARTS;
  char *section = ru_section(README_EXAMPLE);
  ru_assert_says(section, WHAT, "handled 6, duplicates skipped 1, ...");
  ru_assert_says(section, WHAT,
                 "7 record(s) in front of the pipeline, 7 of "
                 "them consumed before (replayed)");
  ru_assert_says(section, WHAT,
                 "preview only, nothing changed: add --execute "
                 "to move the offsets");
  ru_assert_says(section, WHAT, "`/tmp/orders.jsonl` holds one line per order");
  gchar *dir = g_strdup_printf("%s/", s.c.dir);
  char *a = replace_all(section, "/tmp/", dir);
  char *b = replace_all(a, "order-completed", s.topic);
  char *text = replace_all(b, "data-platform-consumer-group", s.group);
  GPtrArray *cmds = ru_sh_commands(text);
  check_example_plan(cmds);

  char *tree = example_tree(&s);
  gchar *cfg = g_build_filename(tree, "orders.cfg", NULL);
  gchar *bootstrap =
      g_strdup_printf("bootstrap_servers = \"%s\";", s.c.bootstraps);
  example_run_t e = {.s = &s, .jsonl = g_strconcat(dir, "orders.jsonl", NULL)};
  GString *vars = g_string_new(NULL);
  int published = 0;
  for (guint i = 0; i < cmds->len; i++) {
    const char *cmd = cmds->pdata[i];
    char step = example_step(cmd), tag[32];
    if (step == 's' || step == 't')
      continue; /* run-tests starts and stops the cluster */
    if (step == 'p' && !published++) {
      char *written = tu_read_file(cfg);
      ck_assert_msg(written && strstr(written, bootstrap),
                    "orders.cfg does not hold %s:\n%s", bootstrap,
                    written ? written : "(no file)");
      free(written);
      ku_wait_topic(&s.c, s.topic, s.partitions);
    }
    snprintf(tag, sizeof(tag), "example-%u", i);
    gchar *script = g_strdup_printf("cd \"$0\"\n%s%s\n", vars->str, cmd);
    char *const argv[] = {"/bin/sh", "-ec", script, tree, NULL};
    cmd_result_t r;
    run_cmd(&s, tag, argv, &r);
    ck_assert_msg(r.status == 0,
                  "README.md's replay example: `%s` exited %d:\n%s\n%s", cmd,
                  r.status, ku_tail(r.out), ku_tail(r.err));
    check_example_step(&e, step, &r);
    if (is_assignment(cmd))
      g_string_append_printf(vars, "%s\n", cmd);
    cmd_result_free(&r);
    g_free(script);
  }
  ck_assert_int_eq(e.runs, 2);
  /* The first run's file, moved aside before the second, has the same. */
  gchar *old = g_strconcat(e.jsonl, ".old", NULL);
  assert_six_orders(&s, old);
  g_free(old);
  g_string_free(vars, TRUE);
  g_free(e.jsonl);
  g_free(bootstrap);
  g_free(cfg);
  free(tree);
  g_ptr_array_free(cmds, TRUE);
  g_free(text);
  g_free(b);
  g_free(a);
  g_free(dir);
  g_free(section);
  mu_stop(&s.c);
}
END_TEST

/* ------------------------------------------------- offsets and members */

/* `khost offsets` once the host of two members has settled: every
 * partition committed at its end and assigned, both members owning some. */
static int group_settled(const offsets_row_t *rows, int n) {
  int zero = 0, one = 0;
  for (int p = 0; p < n; p++) {
    if (rows[p].end <= 0 || rows[p].committed != rows[p].end)
      return 0;
    zero |= strcmp(rows[p].member, "khost-orders-0@127.0.0.1") == 0;
    one |= strcmp(rows[p].member, "khost-orders-1@127.0.0.1") == 0;
    if (!rows[p].member[0])
      return 0;
  }
  return zero && one;
}

static char *rows_text(const offsets_row_t *rows, int n) {
  GString *s = g_string_new(NULL);
  for (int p = 0; p < n; p++)
    g_string_append_printf(
        s, "[%d] committed %" PRId64 " end %" PRId64 " member %s\n", p,
        rows[p].committed, rows[p].end,
        rows[p].member[0] ? rows[p].member : "null");
  return g_string_free(s, FALSE);
}

/* A host of two members (client.id khost-orders-0 and -1) consumes and
 * keeps running. `khost offsets --json` names the member of every
 * partition (client.id@host), as Kafka's ConsumerGroupCommand shows it:
 * only a real broker answers the DescribeGroups this needs. Then `khost
 * replay` is refused (exit 1) naming the members, and changes nothing: the
 * committed offsets, read back with librdkafka and with Kafka's tool, and
 * the host's assignment are those of before. */
START_TEST(test_offsets_and_replay_while_running) {
  enum { PARTS = 3, RECORDS = 90 };
  scenario_t s;
  mu_host_t h;
  pipeline_stats_t st;
  offsets_row_t rows[PARTS], after[PARTS];
  ku_group_offsets_t tool[PARTS];
  int64_t before[PARTS], now[PARTS];
  scenario_open(&s, "running", PARTS);
  produce_range(&s, 0, RECORDS);
  char *cfg = write_cfg(&s, "r.cfg", 2, "calls.log", "dedup.db", NULL, NULL);
  mu_host_start(&h, cfg, 0);
  int64_t deadline = tu_mono_ms() + 60000;
  for (khost_offsets(&s, cfg, rows); !group_settled(rows, PARTS);
       khost_offsets(&s, cfg, rows)) {
    if (tu_mono_ms() >= deadline) {
      char *text = rows_text(rows, PARTS);
      ck_abort_msg("timed out waiting for both members to own partitions "
                   "committed at their end:\n%s",
                   text);
    }
    usleep(100 * 1000);
  }
  ku_describe_group(&s.c, s.group, s.topic, tool, PARTS);
  for (int p = 0; p < PARTS; p++)
    ck_assert_msg(strcmp(rows[p].member, tool[p].member) == 0,
                  "[%d]: khost offsets says member %s, kafka-consumer-groups "
                  "%s",
                  p, rows[p].member, tool[p].member);

  committed_offsets(&s, before);
  char *const argv[] = {KHOST,    "replay", "-c",       cfg,         "-p",
                        "orders", "--from", "earliest", "--execute", NULL};
  cmd_result_t r;
  run_cmd(&s, "replay", argv, &r);
  ck_assert_msg(r.status == 1, "khost replay exited %d:\n%s", r.status,
                ku_tail(r.err));
  ck_assert_msg(strstr(r.err, "has 2 active member(s)") &&
                    strstr(r.err, "khost-orders-0@127.0.0.1") &&
                    strstr(r.err, "khost-orders-1@127.0.0.1"),
                "khost replay does not name the members:\n%s", r.err);
  cmd_result_free(&r);
  committed_offsets(&s, now);
  ku_describe_group(&s.c, s.group, s.topic, tool, PARTS);
  khost_offsets(&s, cfg, after);
  for (int p = 0; p < PARTS; p++) {
    ck_assert_msg(now[p] == before[p] && tool[p].current == before[p],
                  "[%d] committed %" PRId64 " before the replay; after it "
                  "%" PRId64 ", kafka-consumer-groups %" PRId64,
                  p, before[p], now[p], tool[p].current);
    ck_assert_str_eq(after[p].member, rows[p].member);
  }
  mu_host_stats(&h, &st);
  ck_assert_uint_eq(st.assigned, PARTS);
  ck_assert_msg(!host_done(h.host), "the host stopped");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_close(&h);
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* Partitions of unequal length are consumed to their end, then more
 * records arrive on two of them. For every partition, the committed
 * offset, end and lag `khost offsets --json` reports equal what Kafka's
 * ConsumerGroupCommand reports, and no member is named by either. */
START_TEST(test_offsets_match_kafka_tool) {
  enum { PARTS = 4 };
  static const int first[PARTS] = {3, 10, 17, 24}, more[PARTS] = {0, 5, 0, 9};
  scenario_t s;
  offsets_row_t rows[PARTS];
  ku_group_offsets_t tool[PARTS];
  char id[32];
  int n = 0, total = 0;
  scenario_open(&s, "offsets", PARTS);
  for (int p = 0; p < PARTS; p++)
    for (int i = 0; i < first[p]; i++, total++) {
      snprintf(id, sizeof(id), "evt-%05d", n++);
      mu_produce(&s.c, s.topic, p, id, NULL, "order");
    }
  ku_flush(&s.c);
  char *cfg = write_cfg(&s, "o.cfg", 1, "calls.log", "dedup.db", NULL, NULL);
  ck_assert_uint_eq(run_to_end(cfg).handled, (uint64_t)total);
  for (int p = 0; p < PARTS; p++)
    for (int i = 0; i < more[p]; i++) {
      snprintf(id, sizeof(id), "evt-%05d", n++);
      mu_produce(&s.c, s.topic, p, id, NULL, "order");
    }
  ku_flush(&s.c);

  khost_offsets(&s, cfg, rows);
  ku_describe_group(&s.c, s.group, s.topic, tool, PARTS);
  for (int p = 0; p < PARTS; p++) {
    ck_assert_msg(
        rows[p].committed == tool[p].current &&
            rows[p].end == tool[p].log_end && rows[p].lag == tool[p].lag &&
            strcmp(rows[p].member, tool[p].member) == 0,
        "[%d]: khost offsets: committed %" PRId64 ", end %" PRId64
        ", lag %" PRId64 ", member '%s'; kafka-consumer-groups: "
        "%" PRId64 ", %" PRId64 ", %" PRId64 ", '%s'",
        p, rows[p].committed, rows[p].end, rows[p].lag, rows[p].member,
        tool[p].current, tool[p].log_end, tool[p].lag, tool[p].member);
    /* And both are right. */
    ck_assert_int_eq(rows[p].committed, first[p]);
    ck_assert_int_eq(rows[p].end, first[p] + more[p]);
    ck_assert_int_eq(rows[p].lag, more[p]);
    ck_assert_int_eq(rows[p].start, 0);
    ck_assert_str_eq(rows[p].member, "");
  }
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* ------------------------------------------------- dead-letter topic */

typedef struct dead_letters {
  const scenario_t *s;
  int records;
  char *seen; /* seen[i]: evt-<i> is on the dead-letter topic */
  int resent; /* copies of a dead letter sent again */
} dead_letters_t;

/* One dead-lettered record: the original key, value and eventId, and the
 * failure's headers naming where it came from. */
static void check_dead_letter(rd_kafka_message_t *d, void *arg) {
  dead_letters_t *dl = arg;
  char id[64], buf[256], want[96];
  ck_assert_ptr_nonnull(mu_header(d, "eventId", id, sizeof(id)));
  int i = atoi(id + 4);
  ck_assert_msg(strncmp(id, "evt-", 4) == 0 && i >= 0 && i < dl->records,
                "unexpected dead letter %s", id);
  ck_assert_ptr_nonnull(mu_header(d, DLT_H_FAILED_AT, buf, sizeof(buf)));
  /* While the leader is killed, a write whose outcome the producer could
   * not learn is sent again (dead letters are at-least-once): a copy is
   * counted, and checked as fully as the first. */
  dl->resent += dl->seen[i];
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
  /* Back before any assertion, so that a failure here leaves the next
   * test a whole cluster. */
  if (down >= 0)
    ku_start_node(down);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &st);
  mu_host_close(&h);
  ck_assert_uint_eq(st.handled, RECORDS - FAILS);
  ck_assert_uint_eq(st.failed, FAILS);
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);

  dead_letters_t dl = {&s, RECORDS, calloc(RECORDS, 1), 0};
  size_t n = mu_consume(&s.c, dlt, 2 * FAILS, 5000, check_dead_letter, &dl);
  ck_assert_uint_eq(n - (size_t)dl.resent, FAILS);
  /* With every broker up, each failed record is written exactly once. */
  if (down < 0)
    ck_assert_int_eq(dl.resent, 0);
  for (int i = 0; i < RECORDS; i += FAIL_EVERY)
    ck_assert_msg(dl.seen[i], "evt-%05d is not on the dead-letter topic", i);
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

/* ------------------------------------------------- static membership */

/* A config of one member for s, with top-level settings top. */
static char *write_cfg_top(scenario_t *s, const char *file, const char *top) {
  char *topics = NULL;
  ck_assert_int_ge(asprintf(&topics, "\"%s\"", s->topic), 0);
  mu_cfg_t o = {.file = file,
                .top = top,
                .kafka = "session_timeout_ms = " KU_SESSION_TIMEOUT
                         "; heartbeat_interval_ms = " KU_HEARTBEAT ";",
                .db = "dedup.db",
                .group = s->group,
                .topics = topics,
                .members = 1,
                .log = "calls.log"};
  char *path = mu_write_cfg(&s->c, &o);
  free(topics);
  return path;
}

/* Start khost run on cfg and wait for its member's first assignment;
 * returns the ms that took. */
static int64_t start_until_assigned(scenario_t *s, ku_proc_t *p,
                                    const char *cfg, const char *tag) {
  char *const argv[] = {KHOST, "run", "-c", (char *)cfg, NULL};
  int64_t t0 = tu_mono_ms();
  char *err = NULL;
  ku_spawn(p, s->c.dir, tag, argv);
  TU_WAIT_UNTIL((free(err), err = tu_read_file(p->err),
                 (err && strstr(err, "] assigned ")) || ku_reap(p, 0)),
                RUN_TIMEOUT_MS, "the member's first assignment");
  ck_assert_msg(!p->exited, "khost exited:\n%s", ku_tail(err));
  free(err);
  return tu_mono_ms() - t0;
}

/* kill -9 a host, then start it again: how long the new one waits for its
 * partitions. Without instance_id the group waits for the dead member's
 * session to time out (6 s here) before it rebalances; with it the
 * restarted member takes the dead one's place and its partitions at once. */
static int64_t wait_after_kill(const char *name, const char *top) {
  scenario_t s;
  ku_proc_t first, second;
  scenario_open(&s, name, 3);
  char *cfg = write_cfg_top(&s, "k.cfg", top);
  start_until_assigned(&s, &first, cfg, "first");
  ck_assert_int_eq(kill(first.pid, SIGKILL), 0);
  ck_assert(ku_reap(&first, RUN_TIMEOUT_MS));
  int64_t waited = start_until_assigned(&s, &second, cfg, "second");
  ck_assert_int_eq(kill(second.pid, SIGTERM), 0);
  ck_assert_int_eq(ku_exit_status(&second, RUN_TIMEOUT_MS), 0);
  fprintf(stderr,
          "static membership: %s: the restarted host waited %" PRId64
          " ms for its partitions\n",
          name, waited);
  ku_proc_free(&first);
  ku_proc_free(&second);
  free(cfg);
  scenario_close(&s);
  return waited;
}

START_TEST(test_static_membership_restart) {
  int64_t session = atoll(KU_SESSION_TIMEOUT);
  int64_t dynamic = wait_after_kill("dynamic", "shutdown_timeout = \"30s\";");
  int64_t fixed = wait_after_kill(
      "static", "shutdown_timeout = \"30s\"; instance_id = \"host-a\";");
  ck_assert_msg(dynamic >= session * 2 / 3,
                "without instance_id the restart waited only %" PRId64 " ms",
                dynamic);
  ck_assert_msg(fixed < session / 2,
                "with instance_id the restart waited %" PRId64 " ms", fixed);
}
END_TEST

/* ------------------------------------------------- two hosts, one store */

enum { PG_EVENTS = 200, PG_PARTS = 6 };

/* A host of the scenario's group on the shared PostgreSQL store, the
 * scripted plugin logging to <dir>/<name>.log. */
static void pg_host_start(scenario_t *s, member_host_t *m, char name,
                          const char *conninfo) {
  char file[16], log[16];
  char *so = tu_fixture("scripted");
  snprintf(file, sizeof(file), "%c.cfg", name);
  snprintf(log, sizeof(log), "%c.log", name);
  m->log = dir_file(s, log);
  m->cfg = tu_write_filef(
      s->c.dir, file,
      "shutdown_timeout = \"30s\";\n"
      "kafka = { bootstrap_servers = \"%s\";\n"
      "  session_timeout_ms = " KU_SESSION_TIMEOUT
      "; heartbeat_interval_ms = " KU_HEARTBEAT "; };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\"; };\n"
      "pipelines = ( {\n"
      "  name = \"orders\"; group_id = \"%s\"; topics = [ \"%s\" ];\n"
      "  plugin = \"%s\"; max_batch = 20;\n"
      "  config = { log_path = \"%s\"; slow_ms = 2; };\n"
      "} );\n",
      s->c.bootstraps, conninfo, s->group, s->topic, so, m->log);
  free(so);
  mu_host_start(&m->h, m->cfg, 0);
}

/* Records both hosts found handled already (the copies). */
static uint64_t pg_seen(member_host_t *a, member_host_t *b) {
  mu_host_stats(&a->h, &a->st);
  mu_host_stats(&b->h, &b->st);
  return a->st.duplicates + b->st.duplicates;
}

/* `khost store init`: the schema on the fresh server. */
static void pg_schema_init(const char *conninfo) {
  store_pg_opts_t o = {.conninfo = conninfo, .create = 1};
  store_t *st = NULL;
  char err[512] = "";
  ck_assert_msg(store_pg_open(&st, &o, err, sizeof(err)) == 0, "%s", err);
  store_close(st);
}

/* Every event three times, on partitions i, i+1 and i+3 (mod 6), with
 * one eventId. Partitions p and p+1 hold copies of one event for every
 * p, so however the group splits the six partitions between two hosts,
 * some pair p, p+1 is split and a third of the events have copies on
 * both hosts: without one shared store those would be handled twice. */
static void produce_copies(scenario_t *s) {
  static const int step[3] = {0, 1, 3};
  char id[32];
  for (int i = 0; i < PG_EVENTS; i++) {
    snprintf(id, sizeof(id), "pg-%04d", i);
    for (int k = 0; k < 3; k++)
      mu_produce(&s->c, s->topic, (i + step[k]) % PG_PARTS, id, NULL, "order");
  }
  ku_flush(&s->c);
}

/* Handled (OK) lines per event ID over both logs: each exactly once. */
static void assert_each_once(const char *const *logs, size_t n_logs) {
  GHashTable *times =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (size_t f = 0; f < n_logs; f++) {
    size_t n;
    mu_line_t *l = mu_read_lines(logs[f], &n);
    for (size_t i = 0; i < n; i++) {
      if (l[i].result != KHOST_OK)
        continue;
      guint k = GPOINTER_TO_UINT(g_hash_table_lookup(times, l[i].event_id));
      ck_assert_msg(k == 0, "event %s handled twice across the two hosts",
                    l[i].event_id);
      g_hash_table_insert(times, g_strdup(l[i].event_id), GUINT_TO_POINTER(1));
    }
    free(l);
  }
  ck_assert_uint_eq(g_hash_table_size(times), PG_EVENTS);
  g_hash_table_destroy(times);
}

/* Two hosts of one group (6 partitions) sharing a PostgreSQL store (a
 * throwaway server), each event published three times with one eventId
 * to partitions the two hosts share out: every event handled exactly
 * once across both hosts, everything committed. Skipped, saying so,
 * without PostgreSQL's server binaries unless KHOST_REQUIRE_POSTGRES=1. */
START_TEST(test_pg_two_hosts_once) {
  scenario_t s;
  member_host_t a, b;
  if (!pgu_available("kafka: pg-group"))
    return;
  /* The server runs as nobody when the tests run as root: it must reach
   * its directory under the case's own (mkdtemp's 0700). */
  ck_assert_int_eq(chmod(g_root, 0711), 0);
  pgu_t *pg = pgu_start();
  ck_assert_msg(pg != NULL, "cannot start a PostgreSQL server");
  pg_schema_init(pg->conninfo);
  scenario_open(&s, "pg-group", PG_PARTS);
  pg_host_start(&s, &a, 'a', pg->conninfo);
  pg_host_start(&s, &b, 'b', pg->conninfo);
  TU_WAIT_UNTIL(assigned(&a) > 0 && assigned(&b) > 0 &&
                    a.st.assigned + b.st.assigned == PG_PARTS,
                60000, "A and B own every partition");
  produce_copies(&s);
  const char *logs[] = {a.log, b.log};
  TU_WAIT_UNTIL(distinct_ok(logs, 2) == PG_EVENTS &&
                    pg_seen(&a, &b) == 2 * PG_EVENTS,
                90000, "every event handled, every copy found seen");
  member_host_stop(&a);
  member_host_stop(&b);
  /* Which host handles an event first is a race (one host may win all
   * of them); either way each event is handled once across both. */
  assert_each_once(logs, 2);
  ck_assert_int_eq(assert_committed_at_end(&s), 3 * PG_EVENTS);
  member_host_free(&a);
  member_host_free(&b);
  scenario_close(&s);
  pgu_free(pg);
}
END_TEST

/* A test case of s on the cluster the suite runs against. */
static TCase *cluster_case(Suite *s, const char *name, int timeout_s) {
  TCase *tc = tcase_create(name);
  tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
  tcase_set_timeout(tc, timeout_s);
  suite_add_tcase(s, tc);
  return tc;
}

/* ------------------------------------------------------------ concurrency */

/* Key k001's first record asks for retries; the others are handled. */
static const char *retry_first_of_k001(int key, int seq) {
  return key == 1 && seq == 0 ? "retry" : "order";
}

/* kill -9 while many records are in flight: the SIGKILL scenario above
 * with concurrency = 32 and every record a lane of its own (order_by =
 * "none"), 50 ms per call, so that the kill finds up to 32 records out,
 * finishing out of order. The same assertions hold: nothing lost, no
 * committed offset past a record without a mark, every durable record
 * skipped after the restart and every other one handled. */
START_TEST(test_concurrency_sigkill) {
  sigkill_midstream("sigkill-workers", "concurrency = 32; order_by = \"none\";",
                    "slow_ms = 50;", 0, 1);
}
END_TEST

/* Key k000's first two records take 1.5 s each; the other keys' none. */
static const char *slow_first_key(int key, int seq) {
  return key == 0 && seq < 2 ? "sleep 1500" : "order";
}

/* A slow key does not slow the others, on a real broker: with
 * concurrency = 8 every other record of k000's partition has returned
 * before k000's first call does. */
START_TEST(test_concurrency_slow_key) {
  enum { RECORDS = 300, KEYS = 30 };
  scenario_t s;
  int seq[KEYS] = {0};
  char id[32], key[16];
  scenario_open(&s, "slowkey", 3);
  for (int i = 0; i < RECORDS; i++) {
    int k = (i * 7919) % KEYS;
    snprintf(key, sizeof(key), "k%03d", k);
    snprintf(id, sizeof(id), "k%03d-%05d", k, seq[k]);
    mu_produce(&s.c, s.topic, k % 3, id, key, slow_first_key(k, seq[k]));
    seq[k]++;
  }
  ku_flush(&s.c);
  char *cfg = write_cfg(&s, "s.cfg", 1, "calls.log", "dedup.db",
                        "concurrency = 8; max_batch = 50;", NULL);
  pipeline_stats_t st = run_to_end(cfg);
  char *log = dir_file(&s, "calls.log");
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  int64_t slow_first = -1, fast_last = -1;
  int slow_seen = 0;
  for (size_t i = 0; i < n; i++) {
    if (strncmp(l[i].event_id, "k000-", 5) == 0) {
      if (++slow_seen == 1)
        slow_first = l[i].ms;
    } else if (l[i].partition == 0 && l[i].ms > fast_last) {
      fast_last = l[i].ms;
    }
  }
  ck_assert_int_eq(slow_seen, RECORDS / KEYS);
  ck_assert_msg(fast_last < slow_first,
                "the last other key of partition 0 returned at %lld ms, "
                "k000's first call at %lld ms",
                (long long)fast_last, (long long)slow_first);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, n), RECORDS);
  ck_assert_uint_eq(st.handled, RECORDS);
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);
  free(l);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

/* concurrency = 64 on a real broker: two members (cooperative-sticky), 40
 * keys each on one partition, one key retrying: every record handled
 * once, each key in order (event IDs "kKEY-SEQ"), the retrying key's later
 * records after it, everything committed as Kafka's tool shows it. */
START_TEST(test_concurrency_key_order) {
  enum { RECORDS = 600, KEYS = 40 };
  scenario_t s;
  int seq[KEYS] = {0};
  char id[32], key[16];
  scenario_open(&s, "keys", 3);
  for (int i = 0; i < RECORDS; i++) {
    int k = (i * 7919) % KEYS;
    snprintf(key, sizeof(key), "k%03d", k);
    snprintf(id, sizeof(id), "k%03d-%05d", k, seq[k]);
    mu_produce(&s.c, s.topic, k % 3, id, key, retry_first_of_k001(k, seq[k]));
    seq[k]++;
  }
  ku_flush(&s.c);
  char *cfg = write_cfg(&s, "k.cfg", 2, "calls.log", "dedup.db",
                        "concurrency = 64; max_batch = 50; kafka = { "
                        "partition_assignment_strategy = "
                        "\"cooperative-sticky\"; }; retry = { max = 5; "
                        "backoff = \"300ms\"; backoff_max = \"300ms\"; };",
                        "slow_ms = 1;");
  pipeline_stats_t st = run_to_end(cfg);
  char *log = dir_file(&s, "calls.log");
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  GString *why = g_string_new(NULL);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(l, n), RECORDS);
  ck_assert_msg(mu_key_order_violations(l, n, why) == 0, "%s", why->str);
  ck_assert_uint_eq(mu_count_result(l, n, KHOST_RETRY), 2);
  ck_assert_uint_eq(st.handled, RECORDS);
  ck_assert_int_eq(assert_committed_at_end(&s), RECORDS);
  g_string_free(why, TRUE);
  free(l);
  free(log);
  free(cfg);
  scenario_close(&s);
}
END_TEST

Suite *kafka_suite(void) {
  Suite *s = suite_create("kafka");
  TCase *tc = cluster_case(s, "cluster", 240);
  tcase_add_test(tc, test_dedup_commit_restart);
  tcase_add_test(tc, test_members_join_and_leave_eager);
  tcase_add_test(tc, test_members_join_and_leave_cooperative);
  tcase_add_test(tc, test_sigkill_host_midstream);
  tc = cluster_case(s, "replay", 240);
  tcase_add_test(tc, test_replay_from_earliest);
  tcase_add_test(tc, test_replay_from_time);
  tc = cluster_case(s, "readme", 240);
  tcase_add_test(tc, test_readme_replay);
  tc = cluster_case(s, "demo-state-kill9", 900);
  tcase_add_test(tc, test_demo_state_kill9);
  tc = cluster_case(s, "offsets", 240);
  tcase_add_test(tc, test_offsets_and_replay_while_running);
  tcase_add_test(tc, test_offsets_match_kafka_tool);
  tc = cluster_case(s, "static-membership", 240);
  tcase_add_test(tc, test_static_membership_restart);
  tc = cluster_case(s, "dead-letter", 240);
  tcase_add_test(tc, test_dead_letter_topic);
  tc = cluster_case(s, "concurrency", 360);
  tcase_add_test(tc, test_concurrency_key_order);
  tcase_add_test(tc, test_concurrency_slow_key);
  tcase_add_test(tc, test_concurrency_sigkill);
  tc = cluster_case(s, "pg-group", 240);
  tcase_add_test(tc, test_pg_two_hosts_once);
  if (ku_nodes() >= 3) {
    tc = cluster_case(s, "three-nodes", 300);
    tcase_add_test(tc, test_partition_leader_killed);
  }
  return s;
}
