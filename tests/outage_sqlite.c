/*
 * check_outage, SQLite part: faults of the dedup database under a running
 * host (a full database, a file-size limit, a read-only or corrupt file,
 * other writers), and the recorded attempts of the dedup store on their
 * own. See tests/README.md ("Fault injection").
 */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
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
#include "faultcases.h"
#include "faultutil.h"
#include "host.h"
#include "log.h"
#include "testutil.h"

/* One world per test: Check runs each test in a process of its own. */
static fu_world_t w;

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
 * (PRAGMA max_page_count). A batch is handled, nothing is committed, the
 * member stays in the group; once pages are freed, everything is handled
 * and committed. */
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
  char id[5100];
  for (int i = 0; i < 30; i++) {
    /* IDs longer than a page: even a single mark needs new (overflow)
     * pages, so no batch fits, however the records are batched. With
     * shorter IDs a first small batch could fit into the free room of
     * the marks table's page and be committed. */
    snprintf(id, sizeof(id), "ev-%02d-%05000d", i, 0);
    fu_produce_raw(&w, FU_TOPIC, i % 3, id, NULL, "ok", 2, NULL);
  }
  fu_flush(&w);
  /* The first batch is handled and flushed (its effects written), its
   * marks do not fit; khost then holds every partition and handles
   * nothing more until they do. How many of the 30 that first batch holds
   * depends on how the fetches came in. */
  TU_WAIT_UNTIL(log_has("database or disk is full"), 30000,
                "SQLITE_FULL reported");
  ck_assert_uint_gt(fu_effects(&w), 0);
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

/* A khost of one member that committed 5 records per partition, then may
 * not write past the size its write-ahead log has (RLIMIT_FSIZE; SIGXFSZ
 * ignored, so writes fail with EFBIG: SQLITE_IOERR), with 5 more records
 * per partition in front of it. */
static fu_proc_t *start_size_limited(const char *cfg) {
  struct stat st;
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, FU_IGNORE_XFSZ);
  fu_produce_n(&w, 5, "ok");
  fu_wait_all_committed(&w, 30000);
  char *db = fu_db_path(&w, 0), *wal = NULL;
  ck_assert_int_ge(asprintf(&wal, "%s-wal", db), 0);
  ck_assert_int_eq(stat(wal, &st), 0);
  struct rlimit rl = {(rlim_t)st.st_size, RLIM_INFINITY};
  ck_assert_int_eq(prlimit(p->pid, RLIMIT_FSIZE, &rl, NULL), 0);
  fu_produce_n(&w, 5, "ok");
  free(wal);
  free(db);
  return p;
}

static void lift_size_limit(fu_proc_t *p) {
  struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
  ck_assert_int_eq(prlimit(p->pid, RLIMIT_FSIZE, &rl, NULL), 0);
}

/* SQLITE_IOERR: nothing is committed until the file-size limit is
 * lifted. */
START_TEST(test_sqlite_file_size_limit) {
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, "log_level = \"notice\";", NULL,
                        NULL, NULL);
  fu_proc_t *p = start_size_limited(cfg);
  fu_wait_stderr(p, "disk I/O error", 1, 30000);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), 5);
  lift_size_limit(p);
  fu_wait_all_committed(&w, 60000);
  fu_stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* The wait between two tries of a held batch doubles up to 2 s (it grew to
 * 25.6 s): after the sixth failed try (6.4 s to the next one before), the
 * hold ends within about 2 s of the fault clearing. */
START_TEST(test_sqlite_hold_ends_promptly) {
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = start_size_limited(cfg);
  fu_wait_stderr(p, "cannot make the batch durable (attempt 6)", 1, 30000);
  lift_size_limit(p);
  int64_t cleared = tu_mono_ms();
  fu_wait_all_committed(&w, 30000);
  int64_t took = tu_mono_ms() - cleared;
  ck_assert_msg(took < 4000, "committed %" PRId64 " ms after the fault cleared",
                took);
  fu_stop_host(p);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* SIGTERM while a batch is held, right after the fault cleared (before
 * the next try is due): the last try lands it and its offsets are
 * committed, so the next run handles nothing again. Every record has
 * exactly one effect: before, the held batch was abandoned at the stop
 * and handled again by the next run. */
START_TEST(test_sqlite_hold_then_sigterm) {
  fu_start(&w, 3, 3);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = start_size_limited(cfg);
  fu_wait_stderr(p, "cannot make the batch durable (attempt 3)", 1, 30000);
  lift_size_limit(p);
  fu_stop_host(p);
  ck_assert_msg(fu_stderr_count(p, "not made durable") == 0,
                "a batch was abandoned at the stop (see %s)", p->err);
  fu_run_to_end(&w, "run2", cfg, 0);
  ck_assert_uint_eq(fu_effects(&w), 30);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* The dedup database deleted under a running host (rm dedup.db*): the
 * next batch is not committed, and khost stops with status 1 naming the
 * path (before, it went on committing into the deleted file). The next
 * start creates an empty database and warns that the group has
 * committed offsets it has no history for; the first start, on a new
 * group, did not. */
START_TEST(test_sqlite_file_deleted) {
  fu_start(&w, 3, 3);
  const char *created = "was created empty at this start, but group " FU_GROUP
                        " has committed offsets";
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  char *db = fu_db_path(&w, 0), *want = NULL;
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, 0);
  fu_produce_n(&w, 5, "ok");
  fu_wait_all_committed(&w, 30000);
  ck_assert_int_eq(fu_stderr_count(p, created), 0);
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
    char *f = g_strconcat(db, suffixes[i], NULL);
    unlink(f);
    g_free(f);
  }
  fu_produce_n(&w, 5, "ok");
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 1);
  ck_assert_int_ge(
      asprintf(&want, "%s: the dedup database was deleted or moved away", db),
      0);
  ck_assert_msg(fu_stderr_count(p, want) > 0, "no \"%s\" in %s", want, p->err);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), 5);
  p = fu_run_to_end(&w, "run2", cfg, 0);
  ck_assert_msg(fu_stderr_count(p, created) == 1, "no \"%s\" in %s", created,
                p->err);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), 10);
  free(want);
  free(db);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* A dedup database khost may not write (run unprivileged when the test
 * runs as root, whom file modes do not stop): it refuses to start, names
 * the file and its mode, consumes nothing and leaves no -wal or -shm file
 * behind (SQLite made a -shm with the database's mode 0444, which kept
 * blocking the start once the database was writable again). It works once
 * the database file alone is writable. */
START_TEST(test_sqlite_read_only_file) {
  fu_start(&w, 3, 3);
  fu_produce_n(&w, 5, "ok");
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_run_to_end(&w, "run1", cfg, 0);
  char *db = fu_db_path(&w, 0), *log = fu_path(&w, "effects.log"), *want = NULL;
  chmod(log, 0666);
  chmod(db, 0444);
  fu_produce_n(&w, 5, "ok");
  fu_proc_t *p = fu_khost(&w, "run2", cfg, 0, FU_EXIT_AT_END | FU_UNPRIVILEGED);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 1);
  ck_assert_int_ge(
      asprintf(&want, "%s: the dedup database is not writable", db), 0);
  ck_assert_msg(fu_stderr_count(p, want) > 0 &&
                    fu_stderr_count(p, "(mode 0444, owner uid") > 0,
                "no clear message in %s", p->err);
  for (int part = 0; part < 3; part++)
    ck_assert_int_eq(fu_committed(&w, part, 10000), 5);
  ck_assert_uint_eq(fu_effects(&w), 15);
  static const char *const suffixes[] = {"-wal", "-shm"};
  for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
    char *f = g_strconcat(db, suffixes[i], NULL);
    ck_assert_msg(access(f, F_OK) != 0, "%s left behind", f);
    g_free(f);
  }
  chmod(db, 0666);
  p = fu_khost(&w, "run3", cfg, 0, FU_EXIT_AT_END | FU_UNPRIVILEGED);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 0);
  fu_verify(&w, FU_CHECK_AT_END, NULL);
  free(want);
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
  fu_produce_n(&w, 5, "ok");
  memset(junk, 'x', sizeof(junk) - 1);
  junk[sizeof(junk) - 1] = '\0';
  char *db = tu_write_file(w.dir, "dedup-0.db", junk);
  char *cfg = fu_config(&w, "khost.cfg", 0, 1, NULL, NULL, NULL, NULL);
  fu_proc_t *p = fu_khost(&w, "run1", cfg, 0, FU_EXIT_AT_END);
  ck_assert_int_eq(fu_wait_exit(p, FU_RUN_MS), 1);
  char *want = NULL;
  ck_assert_int_ge(asprintf(&want, "%s: file is not a database", db), 0);
  ck_assert_msg(fu_stderr_count(p, want) == 1, "no \"%s\" in %s", want, p->err);
  ck_assert_int_eq(fu_committed(&w, 0, 10000), RD_KAFKA_OFFSET_INVALID);
  ck_assert_uint_eq(fu_effects(&w), 0);
  ck_assert_int_eq(unlink(db), 0);
  fu_run_to_end(&w, "run2", cfg, 0);
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
  fu_stop_host(p);
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

/* ------------------------------------------------------------ unit: attempts
 */

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
    if (dedup_open(&st, &o, err, sizeof(err)) != 0)
      _exit(1);
    raise(SIGKILL); /* killed with the database open */
  }
  ck_assert_int_eq(waitpid(child, &status, 0), child);
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                "the child did not open the database (status %d)", status);
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

void outage_sqlite_cases(Suite *s) {
  FU_SCENARIO(s, test_sqlite_full, 90);
  FU_SCENARIO(s, test_sqlite_file_size_limit, 90);
  FU_SCENARIO(s, test_sqlite_hold_ends_promptly, 90);
  FU_SCENARIO(s, test_sqlite_hold_then_sigterm, 90);
  FU_SCENARIO(s, test_sqlite_file_deleted, 90);
  FU_SCENARIO(s, test_sqlite_read_only_file, 90);
  FU_SCENARIO(s, test_sqlite_corrupt_file, 60);
  FU_SCENARIO(s, test_sqlite_concurrent_writers, 90);
  TCase *attempts = tcase_create("attempts");
  tcase_add_test(attempts, test_attempts_outlive_the_process);
  tcase_add_test(attempts, test_attempts_after_unclean_stop);
  suite_add_tcase(s, attempts);
}
