/*
 * The harness of the process-level suites (check_crash, check_outage,
 * check_badinput): a mock cluster in its own process (tests/mockd), the
 * real khost binary as child processes that the test kills, stops and
 * restarts, a producer that remembers where every event landed, and the
 * checker (checker.h) fed with everything a scenario left behind.
 *
 * Nothing outlives a test: children die with the test process
 * (PR_SET_PDEATHSIG), and every test directory lies inside one per test
 * case that fu_case_teardown() (an unchecked fixture, run by the runner
 * process) removes, also after a failure or a timeout.
 *
 * Threads: a world belongs to the test's thread; only fu_feed_*() runs a
 * producer thread of its own.
 */
#ifndef KHOST_FAULTUTIL_H
#define KHOST_FAULTUTIL_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "checker.h"
#include "testutil.h"

#define FU_TOPIC "order-completed"
#define FU_DLT "order-completed.dlt"
#define FU_GROUP "data-platform-consumer-group"
#define FU_PIPELINE "orders"

/* Kafka request numbers (DESIGN.md) for mockd's push_errors. */
enum {
  FU_API_OFFSET_COMMIT = 8,
  FU_API_JOIN_GROUP = 11,
  FU_API_HEARTBEAT = 12,
  FU_API_SYNC_GROUP = 14
};

/* A khost run ends within this when nothing is wrong (a first group join
 * alone takes the mock coordinator's 3 s). */
#define FU_RUN_MS 60000
/* fu_run_to_end(): a run not assigned after FU_JOIN_STALL_MS is taken
 * for a stalled join and started again, FU_JOIN_TRIES starts at most. */
#define FU_JOIN_STALL_MS 20000
#define FU_JOIN_TRIES 3
/* khost's default shutdown_timeout: a SIGTERMed khost whose members have
 * not finished by then exits by itself, with status 1. */
#define FU_SHUTDOWN_MS 30000
/* What a khost does after its members finished, at most at the deadline:
 * threads joined, the store closed (its claims given back), the plugins
 * unloaded, and under ASan the leak check at exit. */
#define FU_AFTER_DEADLINE_MS 10000

/* One child process. */
typedef struct fu_proc {
  pid_t pid;
  int status; /* waitpid() status, once exited */
  int exited;
  char *out, *err;          /* files holding its stdout and stderr */
  int db;                   /* the dedup database (khost) */
  int64_t start_ms, end_ms; /* wall clock, ms since the epoch */
} fu_proc_t;

/* How a khost child is started (fu_khost()). */
enum {
  FU_EXIT_AT_END = 1 << 0, /* run --exit-at-end */
  FU_IGNORE_XFSZ = 1 << 1, /* ignore SIGXFSZ: writes past RLIMIT_FSIZE fail
                              with EFBIG instead of killing it */
  FU_UNPRIVILEGED = 1 << 2 /* when root: run as nobody, so that file modes
                              apply */
};

typedef struct fu_world {
  char *dir;       /* the test's directory */
  int partitions;  /* of FU_TOPIC */
  fu_proc_t mockd; /* the cluster */
  FILE *to_mockd, *from_mockd;
  char *bootstraps;
  rd_kafka_t *producer;
  rd_kafka_t *probe;   /* reads the group's committed offsets */
  pthread_mutex_t mu;  /* produced, produce_errors */
  GPtrArray *produced; /* fu_rec_t *, as delivered */
  int produce_errors;
  unsigned next_id;
  GPtrArray *runs; /* fu_proc_t *: the khost processes, in start order */
  pthread_t feeder;
  int feeding;
  /* fu_watch_commits_*() */
  pthread_t watcher;
  int watching;
  volatile int stop_watching;
  rd_kafka_t *watch_rk;
  size_t watch_samples;
  char *went_back; /* the first committed offset that went back, or NULL */
  volatile int stop_feeding;
  int feed_every_ms;
  const char *(*feed_value)(unsigned n); /* value of the n-th fed record */
} fu_world_t;

/* A record the producer had acknowledged. */
typedef struct fu_rec {
  char *topic;
  int32_t partition;
  int64_t offset;
  char *id;
} fu_rec_t;

/* Unchecked fixture of a test case: its directory (every test's lies in
 * it), removed at the end also when a test failed. */
void fu_case_setup(void);
void fu_case_teardown(void);

/* Start the cluster (brokers) with FU_TOPIC of `partitions` (0: create
 * no topic), the producer and the probe. */
void fu_start(fu_world_t *w, int brokers, int partitions);
/* Kill what still runs, stop the cluster, free everything. */
void fu_stop(fu_world_t *w);
/* A mockd command (see tests/mockd.c); fails the test unless "ok". */
void fu_mockd(fu_world_t *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* A mockd question answered with a number ("ok N"), e.g. errors_left. */
long fu_mockd_number(fu_world_t *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* <dir>/<name>; free() it. */
char *fu_path(const fu_world_t *w, const char *name);
/* The path of dedup database number db. */
char *fu_db_path(const fu_world_t *w, int db);

/* A config for one pipeline "orders" of FU_TOPIC in group FU_GROUP with
 * the effects fixture writing <dir>/effects.log, on dedup database db;
 * the extra texts go into the top level, the kafka group, the pipeline
 * and the plugin's config group. log_level is info and retries are quick
 * (max 3, from 20 ms) unless the extras set them. Returns the path. */
char *fu_config(fu_world_t *w, const char *name, int db, int members,
                const char *top, const char *kafka, const char *pipeline,
                const char *plugin);

/* Produce one record with a new event ID ("ev-NNNNN") to FU_TOPIC; a
 * partition of -1 lets the partitioner choose. Returns the event ID
 * (owned by the caller). */
char *fu_produce(fu_world_t *w, int32_t partition, const char *value);
/* Produce with a given event ID, key (may be NULL), value (len bytes) and
 * extra headers (name, value, length triples ending in NULL). */
void fu_produce_raw(fu_world_t *w, const char *topic, int32_t partition,
                    const char *id, const char *key, const void *value,
                    size_t len, ...);
/* Wait until every record produced so far is acknowledged. */
void fu_flush(fu_world_t *w);
/* Produce in the background, one record every every_ms (value(n) gives
 * its value; NULL: "ok"), until fu_feed_stop() (which also flushes). */
void fu_feed_start(fu_world_t *w, int every_ms,
                   const char *(*value)(unsigned n));
void fu_feed_stop(fu_world_t *w);
size_t fu_produced(fu_world_t *w);

/* Start `khost run -c cfg` on dedup database db; tag names its output
 * files. The process is remembered in w->runs. */
fu_proc_t *fu_khost(fu_world_t *w, const char *tag, const char *cfg, int db,
                    int flags);
/* Run another program (argv[0] a path), output to <dir>/<tag>.out/.err. */
fu_proc_t *fu_spawn(fu_world_t *w, const char *tag, char *const argv[],
                    int flags);
/* A khost that ran inside the test process (pid getpid()), for the
 * checker. */
void fu_add_run(fu_world_t *w, int db, int64_t start_ms, int64_t end_ms);
/* Wall clock, ms since the epoch (the time base of dedup marks). */
int64_t fu_wall_ms(void);
/* 1 once p has exited (within timeout_ms), 0 if it still runs. */
int fu_reap(fu_proc_t *p, int64_t timeout_ms);
/* Wait for p to exit (fails the test after timeout_ms); its exit status,
 * or 128 + the signal that killed it. */
int fu_wait_exit(fu_proc_t *p, int64_t timeout_ms);
/* SIGKILL and reap. */
void fu_kill9(fu_proc_t *p);
/* Wait until p's stderr holds needle at least `times` times; fails if p
 * exits first or timeout_ms passes. */
void fu_wait_stderr(fu_proc_t *p, const char *needle, int times,
                    int64_t timeout_ms);
/* The same, but 0 when timeout_ms passes first (1 when found); still
 * fails if p exits first. */
int fu_await_stderr(fu_proc_t *p, const char *needle, int times,
                    int64_t timeout_ms);
/* How often needle appears in p's stderr. */
int fu_stderr_count(const fu_proc_t *p, const char *needle);
/* p's stderr (free() it). */
char *fu_stderr(const fu_proc_t *p);
/* The first line of p's stderr holding needle, without its newline, or
 * NULL (free() it). */
char *fu_stderr_line(const fu_proc_t *p, const char *needle);
/* "handled N, duplicates skipped M" of p's summary line; 0 when absent. */
int fu_summary(const fu_proc_t *p, uint64_t *handled, uint64_t *duplicates);

/* The group's committed offset of FU_TOPIC [partition]; -1001 when none,
 * -1 when the cluster does not answer within timeout_ms. */
int64_t fu_committed(fu_world_t *w, int32_t partition, int timeout_ms);
/* 1 when every partition is committed up to the last produced record. */
int fu_all_committed(fu_world_t *w);
/* Wait (deadline) until fu_all_committed(). */
void fu_wait_all_committed(fu_world_t *w, int64_t timeout_ms);
/* Lines in the effects log. */
size_t fu_effects(const fu_world_t *w);

/* Read the group's committed offsets of every partition over and over, in
 * a thread of its own, while the scenario runs (queries that time out, a
 * coordinator being down, are skipped). */
void fu_watch_commits_start(fu_world_t *w);
/* Stop watching; fails the test if a committed offset ever went back
 * (a stale commit landing after a newer one). Returns the number of
 * rounds that read every partition. */
size_t fu_watch_commits_stop(fu_world_t *w);

/* Produce per_partition records of value to every partition of FU_TOPIC
 * and wait for their acknowledgements. */
void fu_produce_n(fu_world_t *w, int per_partition, const char *value);
/* SIGTERM a running khost; it must stop cleanly (exit 0), within its
 * default shutdown_timeout (FU_SHUTDOWN_MS). */
void fu_stop_host(fu_proc_t *p);
/* Run khost --exit-at-end on database db; it must exit 0. A run whose
 * group join stalls is started again (FU_JOIN_STALL_MS). */
fu_proc_t *fu_run_to_end(fu_world_t *w, const char *tag, const char *cfg,
                         int db);

/* Register a scenario as a test case of its own, named after its test
 * without "test_" (so that CK_RUN_CASE=<name> runs one scenario), with
 * the case fixture and a timeout; tests/runner.c runs it beside the
 * others. */
#define FU_SCENARIO(suite, fn, seconds)                                        \
  tu_case_test((suite), (fn), (seconds), NULL, fu_case_setup, fu_case_teardown)

/* What fu_verify() checks beyond "no duplicate effect", "in order" and
 * "committed covered by marks". */
enum {
  FU_CHECK_AT_END = 1 << 0,       /* the scenario is over: nothing lost, and
                                     every partition committed to its end */
  FU_CHECK_DEAD_LETTERS = 1 << 1, /* read FU_DLT for dead letters */
  /* concurrency > 1 with records of a partition in several lanes: calls
   * of a partition need not come in offset order */
  FU_CHECK_ANY_ORDER = 1 << 2
};
/* A checker loaded with the produced records, the runs, the effects log,
 * the marks of every database the runs used and the committed offsets
 * (and the dead letters with FU_CHECK_DEAD_LETTERS). chk_free() it. */
chk_t *fu_checker(fu_world_t *w, int flags);
/* Every invariant (see checker.h); fails the test listing violations. */
void fu_verify(fu_world_t *w, int flags, chk_summary_t *out);
/* Right after a kill: the committed offsets are covered by the marks of
 * database db. */
void fu_verify_snapshot(fu_world_t *w, int db);

#endif
