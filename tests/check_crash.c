/*
 * Fault injection: khost as a separate process (the real binary) against
 * a mock cluster that lives in its own process (tests/mockd), so that the
 * host can be killed, stopped and starved while the committed offsets
 * live on. After each scenario the checker (checker.h) compares what was
 * produced with the effects the fixture plugin made durable, the dedup
 * marks, the dead letters and the committed offsets. tests/README.md
 * lists every scenario with what it injects and what it asserts.
 *
 * Every record carries a unique event ID. The `effects` fixture writes one
 * line per call, in flush(): an effect exists once khost was about to
 * commit it, as with a real sink.
 */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "dedup.h"
#include "faultutil.h"
#include "host.h"
#include "log.h"
#include "khost/plugin.h"
#include "testutil.h"

/* Kafka request numbers (DESIGN.md) for push_errors. */
enum {
  API_OFFSET_COMMIT = 8,
  API_JOIN_GROUP = 11,
  API_HEARTBEAT = 12,
  API_SYNC_GROUP = 14
};

/* One world per test: Check runs each test in a process of its own. */
static fu_world_t w;

static void produce_n(int per_partition, const char *value) {
  for (int i = 0; i < per_partition; i++)
    for (int p = 0; p < w.partitions; p++)
      g_free(fu_produce(&w, p, value));
  fu_flush(&w);
}

/* SIGTERM a running host; it must stop cleanly. */
static void stop_host(fu_proc_t *p) {
  ck_assert_msg(!fu_reap(p, 0), "khost exited early: %s", p->err);
  kill(p->pid, SIGTERM);
  int status = fu_wait_exit(p, 30000);
  ck_assert_msg(status == 0, "khost exited with %d after SIGTERM (see %s)",
                status, p->err);
}

/* Run khost to the end offsets it finds at start; it must exit 0. */
static fu_proc_t *run_to_end(const char *tag, const char *cfg, int db) {
  fu_proc_t *p = fu_khost(&w, tag, cfg, db, FU_EXIT_AT_END);
  int status = fu_wait_exit(p, FU_RUN_MS);
  ck_assert_msg(status == 0, "%s exited with %d (see %s)", tag, status,
                p->err);
  return p;
}

/* ------------------------------------------------------------ kills */

/* The group cannot commit (OffsetCommit fails), so the batch is in SQLite
 * but not in Kafka when the host is killed: everything comes again and
 * everything is skipped. */
START_TEST(test_kill_between_dedup_and_commit) {
  uint64_t handled = 0, dups = 0;
  fu_start(&w, 3, 3);
  produce_n(10, "ok");
  fu_mockd(&w, "push_errors %d REQUEST_TIMED_OUT*200", API_OFFSET_COMMIT);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  TU_WAIT_UNTIL(fu_effects(&w) == 30, 30000, "30 effects");
  fu_wait_stderr(p, "offset commit failed", 1, 30000);
  fu_kill9(p);
  fu_verify_snapshot(&w, 0);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), RD_KAFKA_OFFSET_INVALID);
  fu_mockd(&w, "clear_errors %d", API_OFFSET_COMMIT);
  p = run_to_end("run2", cfg, 0);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 0);
  ck_assert_uint_eq(dups, 30);
  ck_assert_uint_eq(fu_effects(&w), 30);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Every 150th record asks for a retry (twice): kills also land between
 * the attempts of a record. */
static const char *mostly_ok(unsigned n) {
  return n % 150 == 7 ? "retry" : "ok";
}

/* KHOST_TEST_SEED picks other moments; the seed is printed. */
static guint32 kill_seed(void) {
  const char *env = getenv("KHOST_TEST_SEED");
  guint32 seed = env ? (guint32)strtoul(env, NULL, 10) : 20260601u;
  fprintf(stderr, "test_kill_at_random_moments: seed %" PRIu32 "\n", seed);
  return seed;
}

START_TEST(test_kill_at_random_moments) {
  enum { KILLS = 20 };
  GRand *rand = g_rand_new_with_seed(kill_seed());
  int mid_stream = 0;
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_feed_start(&w, 5, mostly_ok);
  for (int k = 0; k < KILLS; k++) {
    char tag[32];
    snprintf(tag, sizeof(tag), "run%d", k);
    fu_proc_t *p = fu_khost(&w, tag, cfg, 0, 0);
    fu_wait_stderr(p, "assigned", 1, 30000);
    size_t before = fu_effects(&w);
    /* The fault itself: a random moment of the consuming run. */
    usleep((useconds_t)g_rand_int_range(rand, 0, 1200) * 1000);
    fu_kill9(p);
    mid_stream += fu_effects(&w) > before;
    fu_verify_snapshot(&w, 0);
  }
  fu_feed_stop(&w);
  run_to_end("last", cfg, 0);
  chk_summary_t s;
  fu_verify(&w, FU_CHECK_AT_END, &s);
  fprintf(stderr, "%d of %d kills came while records were handled\n",
          mid_stream, KILLS);
  ck_assert_int_ge(mid_stream, KILLS / 2);
  g_rand_free(rand);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ group faults */

/* Commits refused in the ways a broker refuses them. librdkafka sends a
 * timed-out commit again by itself, so that one is pushed a few times. */
START_TEST(test_commit_errors) {
  static const char *const said[] = {
      "offset commit failed: Broker: Specified group generation id is not "
      "valid",
      "offset commit failed: Broker: Group rebalance in progress",
      "offset commit failed: Broker: Unknown member",
      "offset commit failed: Broker: Request timed out"};
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  fu_mockd(&w,
           "push_errors %d ILLEGAL_GENERATION REBALANCE_IN_PROGRESS "
           "UNKNOWN_MEMBER_ID REQUEST_TIMED_OUT*10",
           API_OFFSET_COMMIT);
  fu_feed_start(&w, 10, NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(said); i++)
    fu_wait_stderr(p, said[i], 1, 30000);
  fu_feed_stop(&w);
  fu_wait_all_committed(&w, 30000);
  stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* The group coordinator is unreachable for longer than the session
 * timeout while the partition leaders are not: the member handles what it
 * fetches but cannot commit, loses its assignment, and rejoins. What it
 * handled meanwhile comes again and is skipped. */
START_TEST(test_coordinator_down) {
  uint64_t handled = 0, dups = 0;
  fu_start(&w, 3, 3);
  fu_mockd(&w, "leader %s 0 1", FU_TOPIC);
  fu_mockd(&w, "leader %s 1 2", FU_TOPIC);
  fu_mockd(&w, "leader %s 2 1", FU_TOPIC);
  fu_mockd(&w, "coordinator %s 3", FU_GROUP);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  produce_n(10, "ok");
  fu_wait_all_committed(&w, 30000);
  fu_mockd(&w, "broker_down 3");
  produce_n(10, "ok");
  TU_WAIT_UNTIL(fu_effects(&w) == 60, 30000, "records handled meanwhile");
  fu_wait_stderr(p, "lost 3 partition(s)", 1, 30000);
  fu_mockd(&w, "broker_up 3");
  fu_wait_all_committed(&w, 60000);
  stop_host(p);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 60);
  ck_assert_uint_gt(dups, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Heartbeat, JoinGroup and SyncGroup answered with errors: the member
 * rejoins, and nothing is lost. */
START_TEST(test_group_request_errors) {
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  fu_feed_start(&w, 10, NULL);
  fu_mockd(&w, "push_errors %d NOT_COORDINATOR COORDINATOR_LOAD_IN_PROGRESS",
           API_JOIN_GROUP);
  fu_mockd(&w, "push_errors %d REBALANCE_IN_PROGRESS", API_SYNC_GROUP);
  fu_mockd(&w,
           "push_errors %d REBALANCE_IN_PROGRESS ILLEGAL_GENERATION "
           "UNKNOWN_MEMBER_ID",
           API_HEARTBEAT);
  fu_wait_stderr(p, "assigned", 2, 30000);
  fu_feed_stop(&w);
  fu_wait_all_committed(&w, 30000);
  stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Effect lines of one process. */
static size_t effects_of(pid_t pid) {
  char *path = fu_path(&w, "effects.log"), *text = tu_read_file(path);
  size_t n = 0;
  for (char *line = text; line && *line;) {
    n += strtol(line, NULL, 10) == (long)pid;
    char *nl = strchr(line, '\n');
    line = nl ? nl + 1 : NULL;
  }
  free(text);
  free(path);
  return n;
}

/* A second host joins the group mid-stream, then the first one leaves
 * (SIGTERM) mid-stream. Each host has its own dedup database, as
 * separate machines would. */
static void join_and_leave(const char *assignor) {
  char kafka[128];
  snprintf(kafka, sizeof(kafka), "partition_assignment_strategy = \"%s\";",
           assignor);
  fu_start(&w, 3, 3);
  char *cfg_a = fu_config(&w, "a.cfg", 0, 1, NULL, kafka, NULL, NULL);
  char *cfg_b = fu_config(&w, "b.cfg", 1, 1, NULL, kafka, NULL, NULL);
  fu_feed_start(&w, 5, NULL);
  fu_proc_t *a = fu_khost(&w, "a", cfg_a, 0, 0);
  fu_wait_stderr(a, "assigned 3 partition(s)", 1, 30000);
  fu_proc_t *b = fu_khost(&w, "b", cfg_b, 1, 0);
  fu_wait_stderr(b, "assigned", 1, 30000);
  /* The mock refuses commits during the rebalance; with cooperative-sticky
   * librdkafka 2.0.2 then takes the assignment as lost. */
  TU_WAIT_UNTIL(fu_stderr_count(a, "revoked") + fu_stderr_count(a, "lost") > 0,
                30000, "the first host gives partitions up");
  TU_WAIT_UNTIL(effects_of(b->pid) > 0, 30000, "the new member handles");
  stop_host(a);
  fu_wait_stderr(b, "assigned", 2, 30000);
  size_t handled_b = effects_of(b->pid);
  TU_WAIT_UNTIL(effects_of(b->pid) > handled_b + 50, 30000,
                "the remaining member handles every partition");
  fu_feed_stop(&w);
  fu_wait_all_committed(&w, 30000);
  stop_host(b);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg_a);
  free(cfg_b);
  fu_stop(&w);
}

START_TEST(test_join_and_leave_eager) {
  join_and_leave("range");
}
END_TEST

START_TEST(test_join_and_leave_cooperative) {
  join_and_leave("cooperative-sticky");
}
END_TEST

/* handle() outlasts max.poll.interval.ms: librdkafka takes the member out
 * of the group meanwhile. What the zombie handled is durable, but its
 * commit must not count: until the member has rejoined, nothing past the
 * slow record is committed; after it, the records come again and are
 * skipped. */
START_TEST(test_zombie_commits_nothing) {
  uint64_t handled = 0, dups = 0;
  fu_start(&w, 3, 1);
  produce_n(3, "ok");
  produce_n(1, "slow");
  produce_n(3, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL,
                        "max_poll_interval_ms = 3000;", "max_batch = 2;",
                        "slow_ms = 6000;");
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  while (fu_stderr_count(p, "lost 1 partition(s)") == 0) {
    int64_t c = fu_committed(&w, 0, 10000);
    ck_assert_msg(c <= 3, "the zombie committed %" PRId64, c);
    ck_assert_msg(!fu_reap(p, 0), "khost exited");
    usleep(50 * 1000);
  }
  fu_wait_all_committed(&w, 30000);
  stop_host(p);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 7);
  ck_assert_uint_gt(dups, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ outages */

/* The host is frozen past its session timeout; the group moves on
 * without it, and it rejoins when it wakes up. */
START_TEST(test_sigstop_past_session_timeout) {
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  fu_feed_start(&w, 5, NULL);
  TU_WAIT_UNTIL(fu_effects(&w) > 0, 30000, "records handled");
  kill(p->pid, SIGSTOP);
  /* The fault: frozen for the 3 s session timeout and then some. */
  usleep(5000 * 1000);
  kill(p->pid, SIGCONT);
  fu_wait_stderr(p, "assigned", 2, 30000);
  fu_feed_stop(&w);
  fu_wait_all_committed(&w, 30000);
  stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Every broker is down while records are produced. The issue asks for
 * 30 s; 6 s already outlasts the session timeout (3 s) and the host sees
 * exactly what it would see after 30: no coordinator, no leaders, its
 * assignment gone. */
START_TEST(test_all_brokers_down) {
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  fu_feed_start(&w, 10, NULL);
  TU_WAIT_UNTIL(fu_effects(&w) > 0, 30000, "records handled");
  for (int b = 1; b <= 3; b++)
    fu_mockd(&w, "broker_down %d", b);
  usleep(6000 * 1000); /* the outage */
  ck_assert_msg(!fu_reap(p, 0), "khost exited during the outage");
  for (int b = 1; b <= 3; b++)
    fu_mockd(&w, "broker_up %d", b);
  fu_feed_stop(&w);
  fu_wait_all_committed(&w, 60000);
  stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* 1 when partition p is committed up to its last produced record. */
static int committed_at_end(int32_t part) {
  int64_t end = 0;
  pthread_mutex_lock(&w.mu);
  for (guint i = 0; i < w.produced->len; i++) {
    const fu_rec_t *r = w.produced->pdata[i];
    if (r->partition == part && r->offset + 1 > end)
      end = r->offset + 1;
  }
  pthread_mutex_unlock(&w.mu);
  return fu_committed(&w, part, 10000) == end;
}

/* A partition has no leader: the others go on; it is consumed once it
 * has one again. (Nothing is produced while it has none: the idempotent
 * test producer would hold every partition back.) */
START_TEST(test_partition_without_leader) {
  fu_start(&w, 3, 3);
  produce_n(5, "ok");
  fu_mockd(&w, "leader %s 1 -1", FU_TOPIC);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  TU_WAIT_UNTIL(committed_at_end(0) && committed_at_end(2), 30000,
                "partitions 0 and 2 go on without partition 1");
  ck_assert_int_eq(fu_committed(&w, 1, 10000), RD_KAFKA_OFFSET_INVALID);
  fu_mockd(&w, "leader %s 1 2", FU_TOPIC);
  fu_wait_all_committed(&w, 30000);
  stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Commit `offset` for every partition as a member of FU_GROUP (the mock
 * refuses commits from outside the group). */
static void commit_as_member(int64_t offset) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", w.bootstraps, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", FU_GROUP, NULL, 0);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
  rd_kafka_conf_set(conf, "session.timeout.ms", "3000", NULL, 0);
  rd_kafka_conf_set(conf, "heartbeat.interval.ms", "300", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  ck_assert_msg(rk != NULL, "%s", errstr);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, FU_TOPIC, RD_KAFKA_PARTITION_UA);
  ck_assert_int_eq(rd_kafka_subscribe(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  int64_t deadline = tu_mono_ms() + 30000;
  for (int owned = 0; owned < w.partitions;) {
    ck_assert_msg(tu_mono_ms() < deadline, "no assignment");
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (m)
      rd_kafka_message_destroy(m);
    ck_assert_int_eq(rd_kafka_assignment(rk, &l), 0);
    owned = l->cnt;
    rd_kafka_topic_partition_list_destroy(l);
  }
  l = rd_kafka_topic_partition_list_new(w.partitions);
  for (int part = 0; part < w.partitions; part++)
    rd_kafka_topic_partition_list_add(l, FU_TOPIC, part)->offset = offset;
  ck_assert_int_eq(rd_kafka_commit(rk, l, 0), 0);
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

/* The committed offsets point past the end of the log: khost starts over
 * from the earliest offset, and dedup absorbs what was handled before. */
START_TEST(test_offset_out_of_range) {
  uint64_t handled = 0, dups = 0;
  fu_start(&w, 3, 3);
  produce_n(10, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  run_to_end("run1", cfg, 0);
  commit_as_member(100000);
  produce_n(5, "ok");
  fu_proc_t *p = run_to_end("run2", cfg, 0);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 15);
  ck_assert_uint_eq(dups, 30);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* The topic is unknown when khost starts, and disappears from the
 * metadata for a while later. (The mock cluster creates a topic that a
 * consumer asks for, so "unknown" is the error its metadata reports.)
 * librdkafka 2.0.2 then hangs in rd_kafka_destroy() (a partition count
 * that went to 0 and back leaks a reference), so the shutdown ends by its
 * deadline: exit status 1, nothing lost. */
START_TEST(test_unknown_topic) {
  fu_start(&w, 3, 3);
  fu_mockd(&w, "topic_error %s UNKNOWN_TOPIC_OR_PART", FU_TOPIC);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, "shutdown_timeout = \"3s\";",
                        NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "Subscribed topic not available: " FU_TOPIC, 1, 30000);
  ck_assert_int_eq(fu_stderr_count(p, "assigned"), 0);
  fu_mockd(&w, "topic_error %s NO_ERROR", FU_TOPIC);
  produce_n(5, "ok");
  fu_wait_all_committed(&w, 30000);
  fu_mockd(&w, "topic_error %s UNKNOWN_TOPIC_OR_PART", FU_TOPIC);
  fu_wait_stderr(p, "revoked", 1, 30000);
  fu_mockd(&w, "topic_error %s NO_ERROR", FU_TOPIC);
  fu_wait_stderr(p, "assigned", 2, 30000);
  produce_n(5, "ok");
  fu_wait_all_committed(&w, 30000);
  kill(p->pid, SIGTERM);
  int status = fu_wait_exit(p, 20000);
  ck_assert_msg(status == 0 || (status == 1 &&
                                fu_stderr_count(p, "shutdown did not finish "
                                                   "within 3000 ms") == 1),
                "exit status %d (see %s)", status, p->err);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

/* partition -> 1 + the highest offset the effects log has an OK call for
 * (RD_KAFKA_OFFSET_INVALID when none). */
static void handled_ends(int64_t *ends, int n) {
  char *path = fu_path(&w, "effects.log"), *text = tu_read_file(path);
  for (int i = 0; i < n; i++)
    ends[i] = RD_KAFKA_OFFSET_INVALID;
  for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL;
       line; line = strtok_r(NULL, "\n", &save)) {
    long pid, member, part, attempt;
    long long off;
    int result;
    char topic[64], id[64];
    ck_assert_int_eq(sscanf(line, "%ld %ld %63s %ld %lld %ld %63s %d", &pid,
                            &member, topic, &part, &off, &attempt, id, &result),
                     8);
    if (result == KHOST_OK && part < n && off + 1 > ends[part])
      ends[part] = off + 1;
  }
  free(text);
  free(path);
}

/* SIGTERM while a batch is being handled: the batch is finished and
 * exactly what was handled is committed. */
START_TEST(test_sigterm_mid_batch) {
  int64_t ends[3];
  fu_start(&w, 3, 3);
  produce_n(20, "slow");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, "max_batch = 10;",
                        "slow_ms = 50;");
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  TU_WAIT_UNTIL(fu_effects(&w) >= 10, 30000, "a first batch handled");
  stop_host(p);
  handled_ends(ends, 3);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), ends[part]);
  ck_assert_uint_lt(fu_effects(&w), 60);
  fu_verify(&w, 0, NULL);
  run_to_end("run2", cfg, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* SIGTERM while no broker answers: khost cannot commit nor leave the
 * group, and exits once shutdown_timeout has passed. Nothing is lost. */
START_TEST(test_shutdown_deadline_without_brokers) {
  enum { DEADLINE_MS = 3000 };
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, "shutdown_timeout = \"3s\";",
                        NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  produce_n(5, "ok");
  fu_wait_all_committed(&w, 30000);
  for (int b = 1; b <= 3; b++)
    fu_mockd(&w, "broker_down %d", b);
  int64_t sent = tu_mono_ms();
  kill(p->pid, SIGTERM);
  int status = fu_wait_exit(p, DEADLINE_MS + 10000);
  int64_t took = tu_mono_ms() - sent;
  ck_assert_msg(took < DEADLINE_MS + 5000, "shutdown took %" PRId64 " ms",
                took);
  ck_assert_msg(status == 0 || (status == 1 &&
                                fu_stderr_count(p, "shutdown did not finish "
                                                   "within 3000 ms") == 1),
                "exit status %d (see %s)", status, p->err);
  for (int b = 1; b <= 3; b++)
    fu_mockd(&w, "broker_up %d", b);
  produce_n(5, "ok");
  run_to_end("run2", cfg, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ plugins */

/* The first attempt process `pid` made for an event, 0 when none. */
static unsigned first_attempt(pid_t pid, const char *id) {
  char *path = fu_path(&w, "effects.log"), *text = tu_read_file(path);
  unsigned first = 0;
  for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL;
       line && !first; line = strtok_r(NULL, "\n", &save)) {
    long lpid, member, part;
    long long off;
    unsigned attempt;
    int result;
    char topic[64], lid[64];
    if (sscanf(line, "%ld %ld %63s %ld %lld %u %63s %d", &lpid, &member, topic,
               &part, &off, &attempt, lid, &result) == 8 &&
        lpid == (long)pid && strcmp(lid, id) == 0)
      first = attempt;
  }
  free(text);
  free(path);
  return first;
}

/* Any call with attempt 2 in the effects log? */
static int has_second_attempt(void) {
  char *path = fu_path(&w, "effects.log"), *text = tu_read_file(path);
  int has = text && strstr(text, " 2 ev-") != NULL;
  free(text);
  free(path);
  return has;
}

/* Records that ask for retries (three times each, with a backoff), fail,
 * or are fine, and a kill in the middle of the retries: the attempts
 * recorded before each call carry on in the next process, the failures
 * end on the dead-letter topic, and nothing is lost. */
START_TEST(test_retry_storm_fail_and_kill) {
  char *retrying[12];
  int carried = 0;
  fu_start(&w, 3, 3);
  fu_mockd(&w, "topic %s 1", FU_DLT);
  for (int i = 0; i < 12; i++)
    retrying[i] = fu_produce(&w, i % 3, "retry");
  produce_n(1, "fail");
  produce_n(5, "ok");
  fu_flush(&w);
  char *cfg = fu_config(
      &w, "khost.cfg", 0, 1, NULL, NULL,
      "dead_letter_topic = \"" FU_DLT "\";\n"
      "  retry = { max = 5; backoff = \"300ms\"; backoff_max = \"1s\"; };",
      "retry_times = 3;");
  fu_feed_start(&w, 20, NULL); /* records to flush with */
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  TU_WAIT_UNTIL(has_second_attempt(), 30000, "a second attempt");
  fu_kill9(p);
  fu_verify_snapshot(&w, 0);
  fu_feed_stop(&w);
  p = run_to_end("run2", cfg, 0);
  for (int i = 0; i < 12; i++) {
    carried += first_attempt(p->pid, retrying[i]) > 1;
    g_free(retrying[i]);
  }
  ck_assert_int_gt(carried, 0);
  chk_summary_t s;
  fu_verify(&w, FU_CHECK_AT_END | FU_CHECK_DEAD_LETTERS, &s);
  ck_assert_uint_ge(s.dead_letters, 3);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A FATAL record stops the host, every time: what precedes it is
 * committed, nothing past it, and nothing is handled twice. */
START_TEST(test_fatal_stops_every_run) {
  fu_start(&w, 3, 1);
  produce_n(3, "ok");
  produce_n(1, "fatal");
  produce_n(2, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  for (int run = 0; run < 2; run++) {
    fu_proc_t *p = fu_khost(&w, run ? "run2" : "run1", cfg, 0, FU_EXIT_AT_END);
    ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 1);
    ck_assert_int_eq(fu_stderr_count(p, "offset 3 eventId ev-00004: the "
                                        "plugin reported a fatal error"),
                     1);
    ck_assert_int_eq(fu_committed(&w, 0, 10000), 3);
  }
  chk_t *c = fu_checker(&w, 0);
  GString *why = g_string_new(NULL);
  chk_summary_t s;
  chk_summary(c, &s);
  ck_assert_uint_eq(s.effects, 3); /* the first three, once */
  ck_assert_msg(chk_no_duplicate_effect(c, why) + chk_in_order(c, why) +
                        chk_committed_covered(c, why) ==
                    0,
                "%s", why->str);
  g_string_free(why, TRUE);
  chk_free(c);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* The plugin crashes the host on one record. Restarted each time (as a
 * supervisor would), khost stops calling it after retry.max + 1 recorded
 * attempts and dead-letters it: no endless crash loop. */
START_TEST(test_crashing_record_is_dead_lettered) {
  enum { RETRY_MAX = 2 };
  int crashes = 0, status = -1;
  fu_start(&w, 3, 3);
  fu_mockd(&w, "topic %s 1", FU_DLT);
  produce_n(4, "ok");
  g_free(fu_produce(&w, 1, "crash"));
  produce_n(4, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL,
                        "dead_letter_topic = \"" FU_DLT "\";\n"
                        "  retry = { max = 2; backoff = \"20ms\"; };",
                        NULL);
  fu_proc_t *p = NULL;
  for (int run = 0; run < RETRY_MAX + 4 && status != 0; run++) {
    char tag[16];
    snprintf(tag, sizeof(tag), "run%d", run);
    p = fu_khost(&w, tag, cfg, 0, FU_EXIT_AT_END);
    status = fu_wait_exit(p, FU_RUN_MS);
    if (status == 0)
      break;
    /* Killed by SIGSEGV, or by the sanitizer that caught it. */
    ck_assert_msg(status == 128 + SIGSEGV ||
                      fu_stderr_count(p, "SEGV on unknown address") > 0,
                  "%s ended with %d (see %s)", tag, status, p->err);
    crashes++;
    fu_verify_snapshot(&w, 0);
  }
  ck_assert_int_eq(status, 0);
  ck_assert_int_ge(crashes, 1);
  ck_assert_int_le(crashes, RETRY_MAX + 2);
  ck_assert_int_eq(fu_stderr_count(p, "no outcome after 3 recorded attempts"),
                   1);
  chk_summary_t s;
  fu_verify(&w, FU_CHECK_AT_END | FU_CHECK_DEAD_LETTERS, &s);
  ck_assert_uint_eq(s.dead_letters, 1);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ SQLite */

/* Connections this process opens to g_capped get PRAGMA max_page_count =
 * g_max_pages (an automatic extension runs at every open). */
static char g_capped[PATH_MAX];
static volatile long g_max_pages;

static int cap_pages(sqlite3 *db, const char **err,
                     const struct sqlite3_api_routines *api) {
  const char *file = sqlite3_db_filename(db, "main");
  char sql[64];
  (void)err, (void)api;
  if (g_max_pages > 0 && file && strcmp(file, g_capped) == 0) {
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %ld", g_max_pages);
    sqlite3_exec(db, sql, NULL, NULL, NULL);
  }
  return SQLITE_OK;
}

static long sql_long(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  long v = (long)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void sql_exec(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s",
                sql, sqlite3_errmsg(db));
  sqlite3_close(db);
}

/* The dedup database exists with khost's tables and 400 KB of filler. */
static void prepare_full_db(const char *path) {
  dedup_opts_t o = {.path = path, .retention_ms = 3600 * 1000};
  dedup_store_t *st = NULL;
  char err[512];
  uint32_t scope;
  ck_assert_msg(dedup_open(&st, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(dedup_scope(st, FU_PIPELINE, &scope, err, sizeof(err)), 0);
  dedup_close(st);
  sql_exec(path, "CREATE TABLE filler(x BLOB);"
                 "INSERT INTO filler VALUES(zeroblob(400000))");
}

/* A khost running inside this test process (the page cap is set by an
 * extension registered in it). */
typedef struct inproc {
  cfg_t cfg;
  host_t *host;
  int log_fd;
  int64_t start_ms;
} inproc_t;

static void inproc_start(inproc_t *h, const char *cfg) {
  char err[4096];
  host_opts_t opts = {0};
  char *log = fu_path(&w, "khost.log");
  h->start_ms = fu_wall_ms();
  ck_assert_msg(cfg_load(&h->cfg, cfg, err, sizeof(err)) == 0, "%s", err);
  h->log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  ck_assert_int_ge(h->log_fd, 0);
  log_set_fd(h->log_fd);
  log_set_level(KHOST_LOG_INFO);
  ck_assert_msg(host_open(&h->host, &h->cfg, &opts, err, sizeof(err)) == 0,
                "%s", err);
  ck_assert_msg(host_start(h->host, err, sizeof(err)) == 0, "%s", err);
  free(log);
}

static int inproc_stop(inproc_t *h) {
  host_request_stop(h->host);
  ck_assert_msg(host_wait(h->host, 30000), "khost did not stop");
  int status = host_finish(h->host);
  host_close(h->host);
  cfg_free(&h->cfg);
  log_set_fd(2);
  close(h->log_fd);
  fu_add_run(&w, 0, h->start_ms, fu_wall_ms());
  return status;
}

static int log_has(const char *needle) {
  char *path = fu_path(&w, "khost.log"), *text = tu_read_file(path);
  int has = text && strstr(text, needle) != NULL;
  free(text);
  free(path);
  return has;
}

/* SQLITE_FULL: every connection of khost may not grow the database
 * (PRAGMA max_page_count). Records are handled, nothing is committed, the
 * member stays in the group; once pages are freed, everything is. */
START_TEST(test_sqlite_full) {
  inproc_t h;
  pipeline_stats_t st;
  fu_start(&w, 3, 3);
  char *db = fu_db_path(&w, 0);
  prepare_full_db(db);
  ck_assert_ptr_nonnull(realpath(db, g_capped));
  g_max_pages = sql_long(db, "PRAGMA page_count");
  ck_assert_int_eq(sqlite3_auto_extension((void (*)(void))cap_pages),
                   SQLITE_OK);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  inproc_start(&h, cfg);
  char id[400];
  for (int i = 0; i < 30; i++) {
    /* Long IDs: their marks need new pages. */
    snprintf(id, sizeof(id), "ev-%02d-%0300d", i, 0);
    fu_produce_raw(&w, FU_TOPIC, i % 3, id, NULL, "ok", 2, NULL);
  }
  fu_flush(&w);
  TU_WAIT_UNTIL(fu_effects(&w) == 30, 30000, "30 records handled");
  TU_WAIT_UNTIL(log_has("database or disk is full"), 30000,
                "SQLITE_FULL reported");
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), RD_KAFKA_OFFSET_INVALID);
  host_pipeline_stats(h.host, 0, &st);
  ck_assert_uint_eq(st.assigned, 3);
  g_max_pages = 0;
  sql_exec(db, "DELETE FROM filler");
  fu_wait_all_committed(&w, 60000);
  ck_assert_int_eq(inproc_stop(&h), 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  sqlite3_reset_auto_extension();
  free(cfg);
  free(db);
  fu_stop(&w);
}
END_TEST

/* SQLITE_IOERR: the process may not write past the size its write-ahead
 * log has (RLIMIT_FSIZE; SIGXFSZ ignored, so writes fail with EFBIG).
 * Nothing is committed until the limit is lifted. */
START_TEST(test_sqlite_file_size_limit) {
  struct stat st;
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, "log_level = \"notice\";",
                        NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, FU_IGNORE_XFSZ);
  produce_n(5, "ok");
  fu_wait_all_committed(&w, 30000);
  char *db = fu_db_path(&w, 0), *wal = NULL;
  ck_assert_int_ge(asprintf(&wal, "%s-wal", db), 0);
  ck_assert_int_eq(stat(wal, &st), 0);
  struct rlimit rl = {(rlim_t)st.st_size, RLIM_INFINITY};
  ck_assert_int_eq(prlimit(p->pid, RLIMIT_FSIZE, &rl, NULL), 0);
  produce_n(5, "ok");
  fu_wait_stderr(p, "disk I/O error", 1, 30000);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), 5);
  rl.rlim_cur = RLIM_INFINITY;
  ck_assert_int_eq(prlimit(p->pid, RLIMIT_FSIZE, &rl, NULL), 0);
  fu_wait_all_committed(&w, 60000);
  stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(wal);
  free(db);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A dedup database khost may not write (run unprivileged when the test
 * runs as root, whom file modes do not stop): it refuses to start, says
 * why, consumes nothing; it works once the file is writable. */
START_TEST(test_sqlite_read_only_file) {
  fu_start(&w, 3, 3);
  produce_n(5, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  run_to_end("run1", cfg, 0);
  char *db = fu_db_path(&w, 0), *log = fu_path(&w, "effects.log");
  chmod(log, 0666);
  chmod(db, 0444);
  produce_n(5, "ok");
  fu_proc_t *p = fu_khost(&w, "run2", cfg, 0, FU_EXIT_AT_END | FU_UNPRIVILEGED);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 1);
  ck_assert_msg(fu_stderr_count(p, db) > 0 &&
                    fu_stderr_count(p, "readonly database") > 0,
                "no clear message in %s", p->err);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), 5);
  ck_assert_uint_eq(fu_effects(&w), 15);
  /* The fix: the file and the companions SQLite created for it (with the
   * file's mode) become writable. */
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
    char *f = g_strconcat(db, suffixes[i], NULL);
    chmod(f, 0666);
    g_free(f);
  }
  p = fu_khost(&w, "run3", cfg, 0, FU_EXIT_AT_END | FU_UNPRIVILEGED);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(log);
  free(db);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A dedup database that is not one: a clear start error, nothing
 * consumed. */
START_TEST(test_sqlite_corrupt_file) {
  char junk[8192];
  fu_start(&w, 3, 3);
  produce_n(5, "ok");
  memset(junk, 'x', sizeof(junk) - 1);
  junk[sizeof(junk) - 1] = '\0';
  char *db = tu_write_file(w.dir, "dedup-0.db", junk);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, FU_EXIT_AT_END);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 1);
  char *want = NULL;
  ck_assert_int_ge(asprintf(&want, "%s: file is not a database", db), 0);
  ck_assert_msg(fu_stderr_count(p, want) == 1, "no \"%s\" in %s", want,
                p->err);
  ck_assert_int_eq(fu_committed(&w, 0, 10000), RD_KAFKA_OFFSET_INVALID);
  ck_assert_uint_eq(fu_effects(&w), 0);
  ck_assert_int_eq(unlink(db), 0);
  run_to_end("run2", cfg, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(want);
  free(cfg);
  free(db);
  fu_stop(&w);
}
END_TEST

static volatile int g_stop_writer;

/* Another program writing to the dedup database: short transactions that
 * hold the write lock for 20 ms each. */
static void *other_writer(void *arg) {
  sqlite3 *db = NULL;
  if (sqlite3_open(arg, &db) != SQLITE_OK)
    return NULL;
  sqlite3_busy_timeout(db, 10000);
  sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS other_writer(x)", NULL, NULL,
               NULL);
  while (!g_stop_writer) {
    sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    sqlite3_exec(db, "INSERT INTO other_writer VALUES(randomblob(100))", NULL,
                 NULL, NULL);
    usleep(20 * 1000); /* holding the lock, as a slow writer would */
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    usleep(5 * 1000);
  }
  sqlite3_close(db);
  return NULL;
}

/* Three members and another program write to one database at once: every
 * wait for the lock stays inside khost; no "busy" or "locked" reaches
 * the user. */
START_TEST(test_sqlite_concurrent_writers) {
  pthread_t writer;
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 3, NULL, NULL, NULL, NULL);
  char *db = fu_db_path(&w, 0);
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 3, 30000);
  g_stop_writer = 0;
  ck_assert_int_eq(pthread_create(&writer, NULL, other_writer, db), 0);
  fu_feed_start(&w, 2, NULL);
  TU_WAIT_UNTIL(fu_effects(&w) >= 600, 60000, "600 records handled");
  fu_feed_stop(&w);
  g_stop_writer = 1;
  pthread_join(writer, NULL);
  fu_wait_all_committed(&w, 30000);
  stop_host(p);
  ck_assert_int_gt(sql_long(db, "SELECT count(*) FROM other_writer"), 10);
  ck_assert_int_eq(fu_stderr_count(p, "locked"), 0);
  ck_assert_int_eq(fu_stderr_count(p, "busy"), 0);
  ck_assert_int_eq(fu_stderr_count(p, "cannot make the batch durable"), 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(db);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ unit: attempts */

static dedup_store_t *store_open(const char *path) {
  dedup_opts_t o = {.path = path, .retention_ms = 3600 * 1000};
  dedup_store_t *st = NULL;
  char err[512];
  ck_assert_msg(dedup_open(&st, &o, err, sizeof(err)) == 0, "%s", err);
  return st;
}

static void put_attempts(dedup_writer_t *wr, uint32_t scope, const char *id,
                         uint32_t n) {
  char err[512];
  dedup_attempt_t a = {.scope = scope,
                       .event_id = id,
                       .event_id_len = strlen(id),
                       .topic = "t",
                       .partition = 0,
                       .offset = 7,
                       .attempts = n};
  ck_assert_msg(dedup_attempts_put(wr, &a, err, sizeof(err)) == 0, "%s", err);
}

/* Recorded calls outlive the process until the record gets an outcome:
 * cleared when the call returns, or forgotten once it is marked. */
START_TEST(test_attempts_outlive_the_process) {
  char *dir = tu_tempdir(), *path = NULL, err[512];
  uint32_t scope;
  dedup_writer_t *wr;
  ck_assert_int_ge(asprintf(&path, "%s/dedup.db", dir), 0);
  dedup_store_t *st = store_open(path);
  ck_assert_int_eq(dedup_scope(st, "orders", &scope, err, sizeof(err)), 0);
  ck_assert_int_eq(dedup_unclean_start(st), 0);
  ck_assert_int_eq(dedup_writer_open(st, &wr, err, sizeof(err)), 0);
  ck_assert_uint_eq(dedup_attempts_get(st, scope, "x", 1), 0);
  put_attempts(wr, scope, "x", 2);
  put_attempts(wr, scope, "y", 1);
  ck_assert_uint_eq(dedup_attempts_get(st, scope, "x", 1), 2);
  ck_assert_int_eq(dedup_attempts_clear(wr, scope, "y", 1, err, sizeof(err)),
                   0);
  ck_assert_uint_eq(dedup_attempts_get(st, scope, "y", 1), 0);
  dedup_writer_close(wr);
  dedup_close(st);

  st = store_open(path);
  ck_assert_int_eq(dedup_unclean_start(st), 0);
  ck_assert_uint_eq(dedup_attempts_get(st, scope, "x", 1), 2);
  ck_assert_uint_eq(dedup_attempts_get(st, scope, "y", 1), 0);
  ck_assert_uint_eq(dedup_attempts_get(st, scope + 1, "x", 1), 0);
  ck_assert_int_eq(dedup_writer_open(st, &wr, err, sizeof(err)), 0);
  dedup_mark_t m = {.scope = scope,
                    .event_id = "x",
                    .event_id_len = 1,
                    .topic = "t",
                    .offset = 7,
                    .handled_at_ms = dedup_now_ms()};
  dedup_writer_add(wr, &m);
  ck_assert_int_eq(dedup_writer_commit(wr, NULL, err, sizeof(err)), 0);
  dedup_writer_close(wr);
  dedup_close(st);

  st = store_open(path);
  ck_assert_uint_eq(dedup_attempts_get(st, scope, "x", 1), 0);
  dedup_close(st);
  ck_assert_int_eq(sql_long(path, "SELECT count(*) FROM attempts"), 0);
  tu_rm_rf(dir);
  free(dir);
  free(path);
}
END_TEST

/* A process that did not close the database leaves its note: the next
 * one records the first `budget` calls of each partition. */
START_TEST(test_attempts_after_unclean_stop) {
  char *dir = tu_tempdir(), *path = NULL;
  int status;
  ck_assert_int_ge(asprintf(&path, "%s/dedup.db", dir), 0);
  fflush(NULL);
  pid_t child = fork();
  ck_assert_int_ge(child, 0);
  if (child == 0) {
    dedup_opts_t o = {.path = path, .retention_ms = 3600 * 1000};
    dedup_store_t *st = NULL;
    char err[512];
    _exit(dedup_open(&st, &o, err, sizeof(err)) == 0 ? 0 : 1); /* no close */
  }
  ck_assert_int_eq(waitpid(child, &status, 0), child);
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  dedup_store_t *st = store_open(path);
  ck_assert_int_eq(dedup_unclean_start(st), 1);
  ck_assert_int_eq(dedup_attempts_recovering(st, 1, "t", 0, 2), 1);
  ck_assert_int_eq(dedup_attempts_recovering(st, 1, "t", 0, 2), 1);
  ck_assert_int_eq(dedup_attempts_recovering(st, 1, "t", 0, 2), 0);
  ck_assert_int_eq(dedup_attempts_recovering(st, 1, "t", 1, 2), 1);
  ck_assert_int_eq(dedup_attempts_recovering(st, 2, "t", 0, 2), 1);
  dedup_close(st);
  st = store_open(path);
  ck_assert_int_eq(dedup_unclean_start(st), 0);
  ck_assert_int_eq(dedup_attempts_recovering(st, 1, "t", 0, 2), 0);
  dedup_close(st);
  tu_rm_rf(dir);
  free(dir);
  free(path);
}
END_TEST

/* ------------------------------------------------------------ unit: checker */

/* A history of two partitions, handled once by process 100. */
static chk_t *clean_history(void) {
  chk_t *c = chk_new();
  char err[256];
  static const char *const lines[] = {
      "100 0 t 0 0 1 a 0", "100 0 t 1 0 1 c 0", "100 0 t 0 1 1 b 1",
      "100 0 t 0 1 2 b 0"};
  chk_add_produced(c, "t", 0, 0, "a");
  chk_add_produced(c, "t", 0, 1, "b");
  chk_add_produced(c, "t", 1, 0, "c");
  chk_add_run(c, 100, 0, 1000, 2000);
  for (size_t i = 0; i < G_N_ELEMENTS(lines); i++)
    ck_assert_msg(chk_add_effect_line(c, lines[i], err, sizeof(err)) == 0,
                  "%s", err);
  chk_add_mark(c, 0, "a", "t", 0, 0, 1500, 0);
  chk_add_mark(c, 0, "b", "t", 0, 1, 1500, 0);
  chk_add_mark(c, 0, "c", "t", 1, 0, 1500, 0);
  chk_set_committed(c, "t", 0, 2);
  chk_set_committed(c, "t", 1, 1);
  return c;
}

START_TEST(test_checker_clean_history) {
  chk_t *c = clean_history();
  GString *why = g_string_new(NULL);
  chk_summary_t s;
  ck_assert_msg(chk_all(c, why) == 0, "%s", why->str);
  chk_summary(c, &s);
  ck_assert_uint_eq(s.produced, 3);
  ck_assert_uint_eq(s.calls, 4);
  ck_assert_uint_eq(s.effects, 3);
  ck_assert_uint_eq(s.marks, 3);
  g_string_free(why, TRUE);
  chk_free(c);
}
END_TEST

START_TEST(test_checker_effect_lines) {
  chk_t *c = chk_new();
  char err[256] = "";
  static const char *const bad[] = {"", "100 0 t 0 0 1 a", "x 0 t 0 0 1 a 0",
                                    "100 0 t 0 0 1 a 0 extra",
                                    "100 0 t 0 zero 1 a 0"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    ck_assert_int_eq(chk_add_effect_line(c, bad[i], err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "malformed effects line"));
  }
  chk_summary_t s;
  chk_summary(c, &s);
  ck_assert_uint_eq(s.calls, 0);
  chk_free(c);
}
END_TEST

/* A produced record nobody handled is lost, unless it was dead-lettered;
 * a call for a record never produced is a violation too. */
START_TEST(test_checker_loss) {
  chk_t *c = clean_history();
  GString *why = g_string_new(NULL);
  char err[256];
  chk_add_produced(c, "t", 1, 1, "d");
  ck_assert_uint_eq(chk_no_loss(c, why), 1);
  ck_assert_ptr_nonnull(strstr(why->str, "eventId d"));
  chk_add_dead_letter(c, "d", "t", 1, 1);
  ck_assert_uint_eq(chk_no_loss(c, NULL), 0);
  ck_assert_int_eq(chk_add_effect_line(c, "100 0 t 1 1 1 zz 0", err,
                                       sizeof(err)),
                   0);
  ck_assert_uint_eq(chk_no_loss(c, NULL), 1);
  g_string_free(why, TRUE);
  chk_free(c);
}
END_TEST

/* A second effect: allowed when the first process left no mark; not in
 * one process, not after a mark, not two marks on one database. */
START_TEST(test_checker_duplicates) {
  char err[256];
  chk_summary_t s;
  chk_t *c = clean_history();
  chk_add_run(c, 200, 0, 3000, 4000);
  ck_assert_int_eq(chk_add_effect_line(c, "200 0 t 1 0 1 c 0", err,
                                       sizeof(err)),
                   0);
  /* c was marked by process 100 (at 1500): 200 must have skipped it. */
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 1);
  chk_clear_marks(c);
  chk_add_mark(c, 0, "c", "t", 1, 0, 3500, 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 0);
  chk_summary(c, &s);
  ck_assert_uint_eq(s.redone, 1);
  chk_add_mark(c, 0, "c", "t", 1, 0, 3600, 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 1);
  chk_free(c);

  c = clean_history();
  ck_assert_int_eq(chk_add_effect_line(c, "100 0 t 1 0 1 c 0", err,
                                       sizeof(err)),
                   0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 1);
  chk_free(c);

  c = clean_history(); /* another host, with its own database */
  chk_add_run(c, 300, 1, 1200, 4000);
  ck_assert_int_eq(chk_add_effect_line(c, "300 0 t 1 0 1 c 0", err,
                                       sizeof(err)),
                   0);
  chk_add_mark(c, 1, "c", "t", 1, 0, 1600, 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 0);
  chk_summary(c, &s);
  ck_assert_uint_eq(s.redone_hosts, 1);
  chk_free(c);
}
END_TEST

START_TEST(test_checker_order) {
  char err[256];
  chk_t *c = clean_history();
  /* Member 1 of the same process has its own order. */
  ck_assert_int_eq(chk_add_effect_line(c, "100 1 t 0 0 1 a 1", err,
                                       sizeof(err)),
                   0);
  ck_assert_uint_eq(chk_in_order(c, NULL), 0);
  ck_assert_int_eq(chk_add_effect_line(c, "100 0 t 0 0 3 a 0", err,
                                       sizeof(err)),
                   0);
  ck_assert_uint_eq(chk_in_order(c, NULL), 1);
  chk_free(c);
  c = clean_history();
  ck_assert_int_eq(chk_add_effect_line(c, "100 0 t 0 1 2 b 0", err,
                                       sizeof(err)),
                   0);
  ck_assert_uint_eq(chk_in_order(c, NULL), 1);
  chk_free(c);
}
END_TEST

START_TEST(test_checker_committed) {
  chk_t *c = clean_history();
  GString *why = g_string_new(NULL);
  chk_clear_marks(c);
  chk_add_mark(c, 0, "a", "t", 0, 0, 1500, 0);
  chk_add_mark(c, 0, "c", "t", 1, 0, 1500, 0);
  ck_assert_uint_eq(chk_committed_covered(c, why), 1);
  ck_assert_ptr_nonnull(strstr(why->str, "eventId b"));
  chk_set_committed(c, "t", 0, 1);
  ck_assert_uint_eq(chk_committed_covered(c, NULL), 0);
  ck_assert_uint_eq(chk_committed_at_end(c, NULL), 1);
  chk_set_committed(c, "t", 1, 5);
  ck_assert_uint_eq(chk_committed_covered(c, NULL), 1);
  ck_assert_uint_eq(chk_committed_at_end(c, NULL), 2);
  g_string_free(why, TRUE);
  chk_free(c);
}
END_TEST

/* One test case per scenario, named after it without "test_", so that
 * CK_RUN_CASE=<name> runs one scenario. */
#define SCENARIO(suite, fn, seconds)                                           \
  do {                                                                         \
    TCase *tc_ = tcase_create(#fn + strlen("test_"));                          \
    tcase_add_unchecked_fixture(tc_, fu_case_setup, fu_case_teardown);        \
    tcase_set_timeout(tc_, seconds);                                           \
    tcase_add_test(tc_, fn);                                                   \
    suite_add_tcase(suite, tc_);                                               \
  } while (0)

Suite *crash_suite(void) {
  Suite *s = suite_create("crash");
  TCase *unit = tcase_create("checker");
  tcase_add_test(unit, test_checker_clean_history);
  tcase_add_test(unit, test_checker_effect_lines);
  tcase_add_test(unit, test_checker_loss);
  tcase_add_test(unit, test_checker_duplicates);
  tcase_add_test(unit, test_checker_order);
  tcase_add_test(unit, test_checker_committed);
  suite_add_tcase(s, unit);
  TCase *attempts = tcase_create("attempts");
  tcase_add_test(attempts, test_attempts_outlive_the_process);
  tcase_add_test(attempts, test_attempts_after_unclean_stop);
  suite_add_tcase(s, attempts);

  SCENARIO(s, test_kill_between_dedup_and_commit, 60);
  SCENARIO(s, test_kill_at_random_moments, 240);
  SCENARIO(s, test_commit_errors, 60);
  SCENARIO(s, test_coordinator_down, 90);
  SCENARIO(s, test_group_request_errors, 60);
  SCENARIO(s, test_join_and_leave_eager, 90);
  SCENARIO(s, test_join_and_leave_cooperative, 90);
  SCENARIO(s, test_zombie_commits_nothing, 60);
  SCENARIO(s, test_sigstop_past_session_timeout, 60);
  SCENARIO(s, test_all_brokers_down, 90);
  SCENARIO(s, test_partition_without_leader, 60);
  SCENARIO(s, test_offset_out_of_range, 60);
  SCENARIO(s, test_unknown_topic, 60);
  SCENARIO(s, test_sigterm_mid_batch, 60);
  SCENARIO(s, test_shutdown_deadline_without_brokers, 60);
  SCENARIO(s, test_retry_storm_fail_and_kill, 90);
  SCENARIO(s, test_fatal_stops_every_run, 60);
  SCENARIO(s, test_crashing_record_is_dead_lettered, 120);
  SCENARIO(s, test_sqlite_full, 90);
  SCENARIO(s, test_sqlite_file_size_limit, 90);
  SCENARIO(s, test_sqlite_read_only_file, 90);
  SCENARIO(s, test_sqlite_corrupt_file, 60);
  SCENARIO(s, test_sqlite_concurrent_writers, 90);
  return s;
}
