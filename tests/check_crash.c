/*
 * Fault injection: khost as a separate process (the real binary) against
 * a mock cluster that lives in its own process (tests/mockd), so that the
 * host can be killed, stopped and starved while the committed offsets
 * live on. After each scenario the checker (checker.h) compares what was
 * produced with the effects the fixture plugin made durable, the dedup
 * marks, the dead letters and the committed offsets. tests/README.md
 * lists every scenario with what it injects and what it asserts.
 *
 * This program: the host killed (at chosen and at random moments),
 * frozen, taken out of its group while busy, stopped with or without
 * brokers, and plugins that retry, fail, give up or crash; the checker's
 * own tests are in crash_checker.c. check_outage covers the failures of
 * the cluster and of SQLite around a running host.
 *
 * Every record carries a unique event ID. The `effects` fixture writes one
 * line per call, in flush(): an effect exists once khost was about to
 * commit it, as with a real sink.
 */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultcases.h"
#include "faultutil.h"
#include "khost/plugin.h"
#include "testutil.h"

/* One world per test: Check runs each test in a process of its own. */
static fu_world_t w;

/* ------------------------------------------------------------ kills */

/* The group cannot commit (OffsetCommit fails), so the batch is in SQLite
 * but not in Kafka when the host is killed: everything comes again and
 * everything is skipped. */
START_TEST(test_kill_between_dedup_and_commit) {
  uint64_t handled = 0, dups = 0;
  fu_start(&w, 3, 3);
  fu_produce_n(&w, 10, "ok");
  fu_mockd(&w, "push_errors %d REQUEST_TIMED_OUT*200", FU_API_OFFSET_COMMIT);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  TU_WAIT_UNTIL(fu_effects(&w) == 30, 30000, "30 effects");
  fu_wait_stderr(p, "offset commit failed", 1, 30000);
  fu_kill9(p);
  fu_verify_snapshot(&w, 0);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), RD_KAFKA_OFFSET_INVALID);
  fu_mockd(&w, "clear_errors %d", FU_API_OFFSET_COMMIT);
  p = fu_run_to_end(&w, "run2", cfg, 0);
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
  fu_feed_start(&w, 10, mostly_ok);
  for (int k = 0; k < KILLS; k++) {
    char tag[32];
    snprintf(tag, sizeof(tag), "run%d", k);
    size_t before = fu_effects(&w);
    fu_proc_t *p = fu_khost(&w, tag, cfg, 0, 0);
    /* The fault itself: a random moment of the run, half of them while
     * it starts, joins the group and gets its partitions, half while it
     * consumes. */
    int consuming = k % 2 == 0;
    if (consuming)
      fu_wait_stderr(p, "assigned", 1, 30000);
    usleep((useconds_t)g_rand_int_range(rand, 0, consuming ? 1000 : 5000) *
           1000);
    fu_kill9(p);
    mid_stream += fu_effects(&w) > before;
    fu_verify_snapshot(&w, 0);
  }
  fu_feed_stop(&w);
  fu_run_to_end(&w, "last", cfg, 0);
  chk_summary_t s;
  fu_verify(&w, FU_CHECK_AT_END, &s);
  fprintf(stderr, "%d of %d kills came while records were handled\n",
          mid_stream, KILLS);
  ck_assert_int_ge(mid_stream, KILLS / 4);
  g_rand_free(rand);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Most records take 20 ms; one in 150 asks for a retry (twice). */
static const char *slow_mostly(unsigned n) {
  return n % 150 == 7 ? "retry" : "slow";
}

/* concurrency = 32 with every record a lane of its own: the kills land
 * while many records of a partition are out at once and finish out of
 * order. After every kill no offset is committed past a record without a
 * durable outcome; at the end nothing is lost. */
START_TEST(test_kill_with_records_in_flight) {
  enum { KILLS = 10 };
  GRand *rand = g_rand_new_with_seed(kill_seed());
  fu_start(&w, 3, 3);
  char *cfg =
      fu_config(&w, "khost.cfg", 0, 1, NULL, NULL,
                "concurrency = 32; order_by = \"none\";", "slow_ms = 20;");
  fu_feed_start(&w, 4, slow_mostly);
  for (int k = 0; k < KILLS; k++) {
    char tag[32];
    snprintf(tag, sizeof(tag), "run%d", k);
    fu_proc_t *p = fu_khost(&w, tag, cfg, 0, 0);
    fu_wait_stderr(p, "assigned", 1, 30000);
    usleep((useconds_t)g_rand_int_range(rand, 200, 1500) * 1000);
    fu_kill9(p);
    fu_verify_snapshot(&w, 0);
  }
  fu_feed_stop(&w);
  fu_run_to_end(&w, "last", cfg, 0);
  fu_verify(&w, FU_CHECK_AT_END | FU_CHECK_ANY_ORDER, NULL);
  /* The records did run side by side: calls of a partition out of
   * offset order. */
  chk_t *c = fu_checker(&w, 0);
  ck_assert_uint_gt(chk_in_order(c, NULL), 0);
  chk_free(c);
  g_rand_free(rand);
  free(cfg);
  fu_stop(&w);
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
  fu_produce_n(&w, 3, "ok");
  fu_produce_n(&w, 1, "slow");
  fu_produce_n(&w, 3, "ok");
  char *cfg =
      fu_config(&w, "khost.cfg", 0, 1, NULL, "max_poll_interval_ms = 3000;",
                "max_batch = 2;", "slow_ms = 6000;");
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  while (fu_stderr_count(p, "lost 1 partition(s)") == 0) {
    int64_t c = fu_committed(&w, 0, 10000);
    ck_assert_msg(c <= 3, "the zombie committed %" PRId64, c);
    ck_assert_msg(!fu_reap(p, 0), "khost exited");
    usleep(50 * 1000);
  }
  fu_wait_all_committed(&w, 30000);
  fu_stop_host(p);
  ck_assert(fu_summary(p, &handled, &dups));
  ck_assert_uint_eq(handled, 7);
  ck_assert_uint_gt(dups, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* Two members in one host; the one handling X (a slow record) outlasts
 * max.poll.interval.ms, so its assignment is lost while X's event ID is
 * claimed and X has no mark yet, and the other member gets the partition
 * and X again. It must not take the claim for a durable outcome: skipping
 * X would commit past it, and a host killed before the first member's
 * mark is written would have lost X. It waits for the claim instead; the
 * host is killed while it waits. */
START_TEST(test_claim_in_flight_when_assignment_lost) {
  fu_start(&w, 3, 1);
  fu_produce_n(&w, 2, "ok");
  fu_produce_n(&w, 1, "slow"); /* offset 2 */
  fu_produce_n(&w, 3, "ok");
  char *cfg =
      fu_config(&w, "khost.cfg", 0, 2, NULL, "max_poll_interval_ms = 3000;",
                "max_batch = 1;", "slow_ms = 30000;");
  /* One member: the mock refuses the commits of a run that reaches the
   * end while a second member's join rebalances the group. */
  char *quick =
      fu_config(&w, "quick.cfg", 0, 1, NULL, NULL, NULL, "slow_ms = 1;");
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  int64_t deadline = tu_mono_ms() + 40000;
  while (fu_stderr_count(p, "in flight elsewhere") == 0) {
    int64_t c = fu_committed(&w, 0, 10000);
    ck_assert_msg(c <= 2,
                  "committed %" PRId64 " past the record whose outcome is in "
                  "flight in the other member",
                  c);
    ck_assert_msg(!fu_reap(p, 0), "khost exited");
    ck_assert_msg(tu_mono_ms() < deadline,
                  "the second member never reached the in-flight record");
    usleep(50 * 1000);
  }
  ck_assert_int_le(fu_committed(&w, 0, 10000), 2);
  fu_kill9(p);
  fu_verify_snapshot(&w, 0);
  fu_run_to_end(&w, "run2", quick, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(quick);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------------------ frozen hosts */

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
  fu_stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A plugin whose create() takes longer than the start's patience: the
 * start says what it waits for while it does, and goes on once create()
 * returns. */
START_TEST(test_slow_create_is_said) {
  fu_start(&w, 1, 1);
  char *cfg =
      fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, "create_ms = 12000;");
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "] started: group", 1, 60000);
  char *err = fu_stderr(p);
  const char *said = strstr(err, "still setting up 1 of 1 member(s) after ");
  ck_assert_msg(said != NULL, "nothing said while create() ran:\n%s", err);
  ck_assert_msg(said < strstr(err, "] started: group"),
                "said after the start:\n%s", err);
  ck_assert_ptr_nonnull(strstr(said, "waiting for the plugin's create()"));
  free(err);
  fu_stop_host(p);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A host whose group does not answer (its only broker down at start)
 * says that it waits for it, and is assigned once the broker is back. */
START_TEST(test_unanswered_group_is_said) {
  fu_start(&w, 1, 1);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_mockd(&w, "broker_down 1");
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "no partitions from group " FU_GROUP " yet", 1, 60000);
  ck_assert_int_eq(fu_stderr_count(p, "assigned"), 0);
  fu_mockd(&w, "broker_up 1");
  fu_wait_stderr(p, "assigned", 1, 60000);
  fu_stop_host(p);
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
  fu_produce_n(&w, 20, "slow");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, "max_batch = 10;",
                        "slow_ms = 50;");
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  TU_WAIT_UNTIL(fu_effects(&w) >= 10, 30000, "a first batch handled");
  fu_stop_host(p);
  handled_ends(ends, 3);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), ends[part]);
  ck_assert_uint_lt(fu_effects(&w), 60);
  fu_verify(&w, 0, NULL);
  fu_run_to_end(&w, "run2", cfg, 0);
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
  fu_produce_n(&w, 5, "ok");
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
  fu_produce_n(&w, 5, "ok");
  fu_run_to_end(&w, "run2", cfg, 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A plugin call that never returns (a handler stuck on a dependency that
 * does not answer): SIGTERM still ends khost once shutdown_timeout has
 * passed, and the line at the deadline names the record the call is stuck
 * on instead of blaming Kafka. Nothing past that record is committed, and
 * the next run (with a handler that returns) loses nothing. effects_before:
 * the effects flushed when the first run is gone. */
static void stuck_handler_sigterm(const char *pipeline, int flags,
                                  size_t effects_before) {
  enum { DEADLINE_MS = 3000, MARGIN_MS = 2000 };
  fu_start(&w, 3, 1);
  fu_produce_n(&w, 3, "ok");
  fu_produce_n(&w, 1, "slow"); /* offset 3 */
  fu_produce_n(&w, 2, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, "shutdown_timeout = \"3s\";",
                        NULL, pipeline, "slow_ms = 3600000;");
  char *quick =
      fu_config(&w, "quick.cfg", 0, 1, NULL, NULL, NULL, "slow_ms = 1;");
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  fu_wait_stderr(p, "handle() has been running for", 1, 30000);
  int64_t sent = tu_mono_ms();
  kill(p->pid, SIGTERM);
  int status = fu_wait_exit(p, DEADLINE_MS + 10000);
  int64_t took = tu_mono_ms() - sent;
  ck_assert_msg(took < DEADLINE_MS + MARGIN_MS,
                "shutdown took %" PRId64 " ms (see %s)", took, p->err);
  ck_assert_msg(took >= DEADLINE_MS, "gone after %" PRId64 " ms", took);
  ck_assert_int_eq(status, 1);
  char *line = fu_stderr_line(p, "shutdown did not finish within 3000 ms");
  ck_assert_msg(line != NULL, "no deadline line (see %s)", p->err);
  ck_assert_msg(strstr(line, FU_PIPELINE "/0 in handle() for ") &&
                    strstr(line, FU_TOPIC " [0] offset 3"),
                "the deadline line does not name the stuck record: %s", line);
  ck_assert_msg(strstr(line, "Kafka") == NULL, "blames Kafka: %s", line);
  ck_assert_int_le(fu_committed(&w, 0, 10000), 3);
  ck_assert_uint_eq(fu_effects(&w), effects_before);
  fu_verify_snapshot(&w, 0);
  fu_run_to_end(&w, "run2", quick, 0);
  fu_verify(&w, FU_CHECK_AT_END | flags, NULL);
  free(line);
  free(quick);
  free(cfg);
  fu_stop(&w);
}

START_TEST(test_stuck_handler_sigterm) {
  /* The member's own thread is stuck: the batch of offsets 0..2 never
   * reaches flush(), so none of their effects is durable. */
  stuck_handler_sigterm("handler_timeout = \"500ms\";", 0, 0);
}
END_TEST

/* The same with concurrency = 4 and every record a lane of its own: the
 * records after the stuck one are handled (durably) on the other workers
 * meanwhile, and still nothing past it is committed; the deadline ends
 * khost, and the next run handles the stuck record only. */
START_TEST(test_stuck_worker_sigterm) {
  stuck_handler_sigterm("handler_timeout = \"500ms\"; concurrency = 4; "
                        "order_by = \"none\";",
                        FU_CHECK_ANY_ORDER, 5);
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
 * end on the dead-letter topic, and nothing is lost.
 * The retrying and failing records hold partitions 0 to 2; partition 3
 * has only fine ones, so that the feeder's records there are handled
 * while the others wait and their batches flush the plugin's lines. Without it
 * nothing was flushed before the first retrying record's outcome, so the kill
 * came once a record had gone through all its attempts; when the three heads
 * ended in the same batch, none had recorded attempts left to carry on. */
START_TEST(test_retry_storm_fail_and_kill) {
  char *retrying[12];
  int carried = 0;
  fu_start(&w, 3, 4);
  fu_mockd(&w, "topic %s 1", FU_DLT);
  for (int i = 0; i < 12; i++)
    retrying[i] = fu_produce(&w, i % 3, "retry");
  for (int p = 0; p < 3; p++)
    g_free(fu_produce(&w, p, "fail"));
  fu_produce_n(&w, 5, "ok");
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
  p = fu_run_to_end(&w, "run2", cfg, 0);
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
  fu_produce_n(&w, 3, "ok");
  fu_produce_n(&w, 1, "fatal");
  fu_produce_n(&w, 2, "ok");
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
  fu_produce_n(&w, 4, "ok");
  g_free(fu_produce(&w, 1, "crash"));
  fu_produce_n(&w, 4, "ok");
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
    /* Killed by SIGSEGV, or by the sanitizer that caught the write. */
    ck_assert_msg(status == 128 + SIGSEGV ||
                      fu_stderr_count(p, "SEGV on unknown address") > 0 ||
                      fu_stderr_count(p, "store to null pointer") > 0,
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

Suite *crash_suite(void) {
  Suite *s = suite_create("crash");
  crash_checker_cases(s);
  /* The longest first: the others share the other lanes meanwhile. */
  FU_SCENARIO(s, test_kill_at_random_moments, 240);
  FU_SCENARIO(s, test_kill_with_records_in_flight, 180);
  FU_SCENARIO(s, test_kill_between_dedup_and_commit, 120);
  FU_SCENARIO(s, test_zombie_commits_nothing, 60);
  FU_SCENARIO(s, test_claim_in_flight_when_assignment_lost, 150);
  FU_SCENARIO(s, test_sigstop_past_session_timeout, 60);
  FU_SCENARIO(s, test_slow_create_is_said, 90);
  FU_SCENARIO(s, test_unanswered_group_is_said, 150);
  FU_SCENARIO(s, test_sigterm_mid_batch, 60);
  FU_SCENARIO(s, test_shutdown_deadline_without_brokers, 60);
  FU_SCENARIO(s, test_stuck_handler_sigterm, 60);
  FU_SCENARIO(s, test_stuck_worker_sigterm, 60);
  FU_SCENARIO(s, test_retry_storm_fail_and_kill, 150);
  FU_SCENARIO(s, test_fatal_stops_every_run, 60);
  FU_SCENARIO(s, test_crashing_record_is_dead_lettered, 120);
  return s;
}
