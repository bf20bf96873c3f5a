/*
 * A batch's buffer of plugin state writes (src/store_state.c) written on
 * an SQLite connection of the test's own: what its row of the log holds,
 * what a fold of the log writes into the state table and in which order,
 * each partition's last offset, the statements it keeps on the
 * connection. Then the log and its fold
 * through an sstate_t (src/store_state_log.c): reads of writes not
 * folded yet, scans over both, a fold after a crash, the fold thread,
 * a reset.
 */
#include <check.h>
#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_state.h"
#include "store_state_log.h"
#include "testutil.h"

static char *dir;
static sqlite3 *db;
static GString *trace; /* the state statements run, with their values */

/* Every state statement the connection runs, one line each. */
static int on_stmt(unsigned type, void *arg, void *p, void *x) {
  (void)type, (void)arg, (void)x;
  char *sql = sqlite3_expanded_sql(p);
  if (sql && strstr(sql, " state") && !strstr(sql, "CREATE") &&
      !strstr(sql, "state_log")) {
    g_string_append(trace, sql);
    g_string_append_c(trace, '\n');
  }
  sqlite3_free(sql);
  return 0;
}

static sqlite3 *open_db(const char *name) {
  sqlite3 *d = NULL;
  char *path = tu_path(dir, name);
  ck_assert_int_eq(sqlite3_open(path, &d), SQLITE_OK);
  sqlite3_trace_v2(d, SQLITE_TRACE_STMT, on_stmt, NULL);
  sqlite3_busy_timeout(d, 10000); /* beside the fold thread */
  free(path);
  return d;
}

static void setup(void) {
  dir = tu_tempdir();
  trace = g_string_new(NULL);
  db = open_db("state.db");
}

static void teardown(void) {
  ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
  g_string_free(trace, TRUE);
  tu_rm_rf(dir);
  free(dir);
}

static void put(sstate_buf_t *b, uint32_t scope, const char *k, const char *v) {
  sstate_buf_put(b, scope, k, strlen(k), v, v ? strlen(v) : 0, v == NULL);
}

/* The buffer written in a transaction of its own on d. */
static void write_on(sqlite3 *d, sstate_buf_t *b) {
  ck_assert_int_eq(sqlite3_exec(d, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  int rc = sstate_buf_write(d, b);
  ck_assert_msg(rc == SQLITE_OK, "%s", sqlite3_errmsg(d));
  ck_assert_int_eq(sqlite3_exec(d, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

/* The log folded on d. */
static void fold(sqlite3 *d) {
  int64_t upto = 0;
  int rc = slog_fold(d, &upto);
  ck_assert_msg(rc == SQLITE_OK, "%s", sqlite3_errmsg(d));
}

static int sql_int(sqlite3 *d, const char *sql) {
  sqlite3_stmt *q = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(d, sql, -1, &q, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
  int v = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  return v;
}

/* "scope key=value;" (a delete: "scope key-;") for every write of every
 * row of the log, rows by seq, each row's as packed. */
static char *log_rows(sqlite3 *d) {
  sqlite3_stmt *q = NULL;
  GString *g = g_string_new(NULL);
  ck_assert_int_eq(sqlite3_prepare_v2(d,
                                      "SELECT data FROM state_log"
                                      " ORDER BY seq",
                                      -1, &q, NULL),
                   SQLITE_OK);
  while (sqlite3_step(q) == SQLITE_ROW) {
    const guint8 *p = sqlite3_column_blob(q, 0);
    size_t n = (size_t)sqlite3_column_bytes(q, 0), at = 0;
    slog_write_t w;
    int u;
    while ((u = slog_unpack(p, n, &at, &w)) == 1) {
      g_string_append_printf(g, "%u %.*s", w.scope, (int)w.klen,
                             (const char *)w.key);
      if (w.del)
        g_string_append(g, "-;");
      else
        g_string_append_printf(g, "=%.*s;", (int)w.vlen, (const char *)w.val);
    }
    ck_assert_int_eq(u, 0);
    g_string_append_c(g, '|');
  }
  sqlite3_finalize(q);
  return g_string_free(g, FALSE);
}

/* "scope key=value;" for every row of the state table, by key. */
static char *rows(sqlite3 *d) {
  sqlite3_stmt *q = NULL;
  GString *g = g_string_new(NULL);
  ck_assert_int_eq(sqlite3_prepare_v2(d,
                                      "SELECT scope, key, value FROM state"
                                      " ORDER BY scope, key",
                                      -1, &q, NULL),
                   SQLITE_OK);
  while (sqlite3_step(q) == SQLITE_ROW)
    g_string_append_printf(
        g, "%d %.*s=%.*s;", sqlite3_column_int(q, 0),
        sqlite3_column_bytes(q, 1), (const char *)sqlite3_column_blob(q, 1),
        sqlite3_column_bytes(q, 2), (const char *)sqlite3_column_blob(q, 2));
  sqlite3_finalize(q);
  return g_string_free(g, FALSE);
}

/* SQLite's text of a blob. */
static void hex(GString *g, const char *s, size_t n) {
  g_string_append(g, "x'");
  for (size_t i = 0; i < n; i++)
    g_string_append_printf(g, "%02x", (unsigned char)s[i]);
  g_string_append_c(g, '\'');
}

/* The statements a put and a delete run, as traced. */
static void expect_put_n(GString *g, uint32_t scope, const char *k, size_t klen,
                         const char *v) {
  g_string_append_printf(
      g, "INSERT OR REPLACE INTO state(scope, key, value) VALUES(%u, ", scope);
  hex(g, k, klen);
  g_string_append(g, ", ");
  hex(g, v, strlen(v));
  g_string_append(g, ")\n");
}

static void expect_put(GString *g, uint32_t scope, const char *k,
                       const char *v) {
  expect_put_n(g, scope, k, strlen(k), v);
}

static void expect_del(GString *g, uint32_t scope, const char *k) {
  g_string_append_printf(
      g, "DELETE FROM state WHERE scope = %u AND key = ", scope);
  hex(g, k, strlen(k));
  g_string_append_c(g, '\n');
}

/* Of several writes of one key only the last one reaches the batch's row
 * of the log, in key order (scope first), whatever order the records
 * made them in; the fold writes them so into the table and empties the
 * log. */
START_TEST(test_last_write_of_each_key_in_key_order) {
  sstate_buf_t *b = sstate_buf_new();
  put(b, 1, "user:2", "a");
  put(b, 1, "user:10", "b");
  put(b, 2, "user:1", "c");
  put(b, 1, "user:2", NULL); /* deleted, then written again */
  put(b, 1, "user:1", "d");
  put(b, 1, "user:2", "e");
  put(b, 1, "user:10", "f");
  put(b, 1, "gone", "g");
  put(b, 1, "gone", NULL);
  sstate_buf_offset(b, 1, "t", 0, 42);
  write_on(db, b);
  ck_assert_str_eq(trace->str, ""); /* no row of the table yet */
  char *logged = log_rows(db);
  ck_assert_str_eq(logged, "1 gone-;1 user:1=d;1 user:10=f;1 user:2=e;"
                           "2 user:1=c;|");
  g_free(logged);
  ck_assert_int_eq(sql_int(db, "SELECT next FROM offsets"), 42);
  fold(db);
  ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM state_log"), 0);
  GString *want = g_string_new(NULL);
  expect_del(want, 1, "gone");
  expect_put(want, 1, "user:1", "d");
  expect_put(want, 1, "user:10", "f");
  expect_put(want, 1, "user:2", "e");
  expect_put(want, 2, "user:1", "c");
  ck_assert_str_eq(trace->str, want->str);
  g_string_free(want, TRUE);
  char *got = rows(db);
  ck_assert_str_eq(got, "1 user:1=d;1 user:10=f;1 user:2=e;2 user:1=c;");
  g_free(got);
  sstate_buf_free(b);
}
END_TEST

/* Keys longer than 8 bytes that share them, and keys that differ only
 * past their end (a NUL byte), keep byte order and meet their later
 * writes. */
START_TEST(test_long_and_binary_keys) {
  sstate_buf_t *b = sstate_buf_new();
  put(b, 1, "account:0002", "a");
  put(b, 1, "account:0001", "b");
  sstate_buf_put(b, 1, "ab\0", 3, "c", 1, 0);
  put(b, 1, "ab", "d");
  put(b, 1, "account:0002", "e");
  sstate_buf_put(b, 1, "ab\0", 3, "f", 1, 0);
  write_on(db, b);
  fold(db);
  GString *want = g_string_new(NULL);
  expect_put(want, 1, "ab", "d");
  expect_put_n(want, 1, "ab\0", 3, "f");
  expect_put(want, 1, "account:0001", "b");
  expect_put(want, 1, "account:0002", "e");
  ck_assert_str_eq(trace->str, want->str);
  g_string_free(want, TRUE);
  sstate_buf_free(b);
}
END_TEST

/* "scope topic/partition=next;" for every row of the offsets table. */
static char *offset_rows(sqlite3 *d) {
  sqlite3_stmt *q = NULL;
  GString *g = g_string_new(NULL);
  ck_assert_int_eq(sqlite3_prepare_v2(d,
                                      "SELECT scope, topic, partition, next"
                                      " FROM offsets ORDER BY 1, 2, 3",
                                      -1, &q, NULL),
                   SQLITE_OK);
  while (sqlite3_step(q) == SQLITE_ROW)
    g_string_append_printf(g, "%d %s/%d=%lld;", sqlite3_column_int(q, 0),
                           (const char *)sqlite3_column_text(q, 1),
                           sqlite3_column_int(q, 2),
                           (long long)sqlite3_column_int64(q, 3));
  sqlite3_finalize(q);
  return g_string_free(g, FALSE);
}

/* Each partition's last offset of a batch is written, whatever partitions
 * share a slot of the buffer's shortcut (0 and 8), and whatever other
 * partition, topic (one the prefix of another) or scope came between;
 * a cleared buffer starts again. */
START_TEST(test_last_offset_of_each_partition) {
  sstate_buf_t *b = sstate_buf_new();
  sstate_buf_offset(b, 1, "t", 0, 10);
  sstate_buf_offset(b, 1, "t", 0, 11);
  sstate_buf_offset(b, 1, "t", 8, 20);
  sstate_buf_offset(b, 1, "t", 0, 12);
  sstate_buf_offset(b, 1, "tt", 0, 30);
  sstate_buf_offset(b, 1, "t", 0, 13);
  sstate_buf_offset(b, 2, "t", 0, 40);
  sstate_buf_offset(b, 1, "t", 0, 14);
  sstate_buf_offset(b, 1, "t", 8, 21);
  sstate_buf_offset(b, 1, "tt", 0, 31);
  sstate_buf_offset(b, 1, "", 0, 50);
  sstate_buf_offset(b, 1, "t", 0, 15);
  ck_assert_uint_eq(sstate_buf_len(b), 5);
  write_on(db, b);
  char *got = offset_rows(db);
  ck_assert_str_eq(got, "1 /0=50;1 t/0=15;1 t/8=21;1 tt/0=31;2 t/0=40;");
  g_free(got);
  sstate_buf_clear(b);
  sstate_buf_offset(b, 1, "tt", 0, 32);
  sstate_buf_offset(b, 1, "t", 0, 16);
  ck_assert_uint_eq(sstate_buf_len(b), 2);
  write_on(db, b);
  got = offset_rows(db);
  ck_assert_str_eq(got, "1 /0=50;1 t/0=16;1 t/8=21;1 tt/0=32;2 t/0=40;");
  g_free(got);
  sstate_buf_free(b);
}
END_TEST

/* The statements are made once per connection and kept for the next
 * batch; freeing the buffer finalizes them, so the connection closes. */
START_TEST(test_statements_kept_per_connection) {
  sstate_buf_t *b = sstate_buf_new();
  sqlite3 *other = open_db("other.db");
  put(b, 1, "k", "1");
  write_on(db, b);
  sqlite3_stmt *kept = sqlite3_next_stmt(db, NULL);
  ck_assert_ptr_nonnull(kept);
  sstate_buf_clear(b);
  put(b, 1, "k", "2");
  write_on(db, b);
  ck_assert_ptr_eq(sqlite3_next_stmt(db, NULL), kept);
  /* Another connection: the first one's statements go, the new one's
   * tables are made. */
  write_on(other, b);
  ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
  ck_assert_ptr_nonnull(sqlite3_next_stmt(other, NULL));
  fold(other);
  char *got = rows(other);
  ck_assert_str_eq(got, "1 k=2;");
  g_free(got);
  sstate_buf_free(b);
  ck_assert_ptr_null(sqlite3_next_stmt(other, NULL));
  ck_assert_int_eq(sqlite3_close(other), SQLITE_OK);
}
END_TEST

/* ------------------------------------------------------------------------
 * Through an sstate_t on the file of db (state.db). */

static sstate_t *open_st(void) {
  char err[512] = "";
  char *path = tu_path(dir, "state.db");
  sstate_t *st = NULL;
  ck_assert_msg(sstate_open(&st, path, 1000, err, sizeof(err)) == 0, "%s", err);
  free(path);
  return st;
}

/* A batch's buffer committed on db, as the store's commit does, and
 * applied to st (NULL: a crash before the commit's answer came). */
static void commit(sstate_t *st, sstate_buf_t *b) {
  write_on(db, b);
  if (st)
    sstate_buf_applied(st, b);
  sstate_buf_clear(b);
}

/* The value st reads for k, "-" when absent. */
static char *get(sstate_t *st, uint32_t scope, const char *k) {
  char err[512] = "";
  void *v = NULL;
  size_t n = 0;
  int rc = sstate_get(st, scope, k, strlen(k), &v, &n, err, sizeof(err));
  ck_assert_msg(rc >= 0, "%s", err);
  char *s = rc ? g_strndup(v ? v : "", n) : g_strdup("-");
  g_free(v);
  return s;
}

#define ck_get(st, scope, k, want)                                             \
  do {                                                                         \
    char *got_ = get(st, scope, k);                                            \
    ck_assert_str_eq(got_, want);                                              \
    g_free(got_);                                                              \
  } while (0)

static int add_row(void *arg, const void *k, size_t kl, const void *v,
                   size_t vl) {
  g_string_append_printf(arg, "%.*s=%.*s;", (int)kl, (const char *)k, (int)vl,
                         (const char *)v);
  return 0;
}

static char *scan(sstate_t *st, uint32_t scope, const char *prefix) {
  char err[512] = "";
  GString *g = g_string_new(NULL);
  int rc = sstate_scan(st, scope, prefix, strlen(prefix), add_row, g, err,
                       sizeof(err));
  ck_assert_msg(rc == 0, "%s", err);
  return g_string_free(g, FALSE);
}

/* Committed writes are read before any fold (the table is still empty):
 * a later batch's write wins, a delete hides the table's row, an empty
 * value is a value. Closing folds them. */
START_TEST(test_overlay_reads) {
  sstate_buf_t *b = sstate_buf_new();
  sstate_t *st = open_st();
  put(b, 1, "gone", "in the table");
  commit(NULL, b);
  fold(db);
  put(b, 1, "k", "1");
  put(b, 1, "empty", "");
  commit(st, b);
  put(b, 1, "k", "2");
  put(b, 1, "gone", NULL);
  commit(st, b);
  char *got = rows(db);
  ck_assert_str_eq(got, "1 gone=in the table;");
  g_free(got);
  ck_get(st, 1, "k", "2");
  ck_get(st, 1, "empty", "");
  ck_get(st, 1, "gone", "-");
  ck_get(st, 2, "k", "-");
  sstate_close(st);
  got = rows(db);
  ck_assert_str_eq(got, "1 empty=;1 k=2;");
  g_free(got);
  ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM state_log"), 0);
  sstate_buf_free(b);
}
END_TEST

/* A scan merges the table's rows and the writes not folded: changed,
 * deleted and new keys, across the chunks a scan reads the table in
 * (256 rows), within the prefix only. */
START_TEST(test_scan_merges_overlay_and_table) {
  sstate_buf_t *b = sstate_buf_new();
  GString *want = g_string_new(NULL), *want5 = g_string_new(NULL);
  char k[32], v[32];
  for (int i = 0; i < 600; i++) {
    snprintf(k, sizeof k, "k%03d", i);
    put(b, 1, k, "t");
  }
  put(b, 1, "l", "outside");
  commit(NULL, b);
  fold(db);
  sstate_t *st = open_st();
  for (int i = 0; i < 600; i++) {
    snprintf(k, sizeof k, "k%03d", i);
    snprintf(v, sizeof v, "o%d", i);
    if (i % 3 == 0)
      put(b, 1, k, NULL);
    else if (i % 3 == 1)
      put(b, 1, k, v);
    snprintf(k, sizeof k, "k%03d+", i);
    if (i % 7 == 0)
      put(b, 1, k, "new");
  }
  put(b, 1, "k999", "last");
  put(b, 2, "k000", "other scope");
  commit(st, b);
  for (int i = 0; i < 600; i++) {
    GString *gs[2] = {want, i >= 500 ? want5 : NULL};
    for (int j = 0; j < 2 && gs[j]; j++) {
      GString *g = gs[j];
      if (i % 3 == 1)
        g_string_append_printf(g, "k%03d=o%d;", i, i);
      else if (i % 3 == 2)
        g_string_append_printf(g, "k%03d=t;", i);
      if (i % 7 == 0)
        g_string_append_printf(g, "k%03d+=new;", i);
    }
  }
  g_string_append(want, "k999=last;");
  ck_assert_int_gt(sql_int(db, "SELECT count(*) FROM state_log"), 0);
  char *got = scan(st, 1, "k");
  ck_assert_str_eq(got, want->str);
  g_free(got);
  got = scan(st, 1, "k5");
  ck_assert_str_eq(got, want5->str);
  g_free(got);
  /* A key new after a scan ordered the overlay joins the order. */
  put(b, 1, "k250x", "late");
  commit(st, b);
  got = scan(st, 1, "k250");
  ck_assert_str_eq(got, "k250=o250;k250x=late;");
  g_free(got);
  const char *at = strstr(want->str, "k250=o250;");
  ck_assert_ptr_nonnull(at);
  g_string_insert(want, at - want->str + strlen("k250=o250;"), "k250x=late;");
  /* The same once folded. */
  sstate_close(st);
  st = open_st();
  got = scan(st, 1, "k");
  ck_assert_str_eq(got, want->str);
  g_free(got);
  sstate_close(st);
  g_string_free(want, TRUE);
  g_string_free(want5, TRUE);
  sstate_buf_free(b);
}
END_TEST

/* A crash after batches committed leaves their rows in the log: the
 * next open folds them, the newest write of each key winning, deletes
 * deleting, once. A fold that did not commit (its transaction rolled
 * back, as a kill leaves it) changed nothing. */
START_TEST(test_fold_after_crash) {
  sstate_buf_t *b = sstate_buf_new();
  int64_t upto = 0;
  put(b, 1, "j", "x");
  commit(NULL, b);
  fold(db);
  put(b, 1, "k", "a");
  put(b, 1, "m", "1");
  commit(NULL, b);
  put(b, 1, "k", "b");
  put(b, 1, "j", NULL);
  commit(NULL, b);
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(slog_fold_in(db, &upto), SQLITE_OK);
  ck_assert_int_eq(upto, 3);
  ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  char *got = rows(db);
  ck_assert_str_eq(got, "1 j=x;");
  g_free(got);
  ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM state_log"), 2);
  sstate_t *st = open_st();
  got = rows(db);
  ck_assert_str_eq(got, "1 k=b;1 m=1;");
  g_free(got);
  ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM state_log"), 0);
  ck_get(st, 1, "k", "b");
  ck_get(st, 1, "j", "-");
  sstate_close(st);
  /* Seqs go on after the folded rows (AUTOINCREMENT). */
  put(b, 1, "k", "c");
  commit(NULL, b);
  ck_assert_int_eq(sql_int(db, "SELECT seq FROM state_log"), 4);
  sstate_buf_free(b);
}
END_TEST

/* A batch applied starts the fold thread, which folds within its 5 s
 * with nothing else asking; reads answer the same before and
 * after. A batch whose row a fold took before it was applied (its
 * answer came late) adds nothing to the overlay. */
START_TEST(test_fold_thread) {
  sstate_buf_t *b = sstate_buf_new();
  sstate_t *st = open_st();
  put(b, 1, "k", "1");
  commit(st, b);
  ck_get(st, 1, "k", "1");
  TU_WAIT_UNTIL(sql_int(db, "SELECT count(*) FROM state_log") == 0, 15000,
                "the fold thread folds the log");
  char *got = rows(db);
  ck_assert_str_eq(got, "1 k=1;");
  g_free(got);
  ck_get(st, 1, "k", "1");
  put(b, 1, "k", "2");
  write_on(db, b);
  fold(db); /* another process's fold */
  ck_assert_int_eq(
      sqlite3_exec(db, "UPDATE state SET value = x'33'", NULL, NULL, NULL),
      SQLITE_OK);
  sstate_close(st); /* stops the thread; nothing left to fold */
  st = open_st();
  /* Late: the fold at open knows seq 2 is folded. */
  sstate_buf_applied(st, b);
  sstate_buf_clear(b);
  ck_get(st, 1, "k", "3");
  sstate_close(st);
  sstate_buf_free(b);
}
END_TEST

/* A reset folds the log in its transaction: the scope's writes not
 * folded yet go with its table rows, other scopes' stay; stats count
 * the table after a fold. */
START_TEST(test_reset_and_stats_fold_first) {
  char err[512] = "";
  int64_t removed = -1, keys = -1, bytes = -1;
  sstate_buf_t *b = sstate_buf_new();
  put(b, 1, "a", "1");
  commit(NULL, b);
  fold(db);
  sstate_t *st = open_st();
  put(b, 1, "b", "2");
  put(b, 2, "c", "33");
  commit(st, b);
  ck_assert_int_eq(sstate_stats(st, 2, &keys, &bytes, err, sizeof(err)), 0);
  ck_assert_int_eq(keys, 1);
  ck_assert_int_eq(bytes, 3);
  put(b, 1, "d", "4");
  commit(st, b);
  ck_assert_msg(sstate_reset(st, 1, &removed, err, sizeof(err)) == 0, "%s",
                err);
  ck_assert_int_eq(removed, 3);
  ck_get(st, 1, "a", "-");
  ck_get(st, 1, "d", "-");
  ck_get(st, 2, "c", "33");
  ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM state_log"), 0);
  sstate_close(st);
  char *got = rows(db);
  ck_assert_str_eq(got, "2 c=33;");
  g_free(got);
  sstate_buf_free(b);
}
END_TEST

Suite *store_state_suite(void) {
  Suite *su = suite_create("store_state");
  TCase *tc = tcase_create("buffer");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_last_write_of_each_key_in_key_order);
  tcase_add_test(tc, test_long_and_binary_keys);
  tcase_add_test(tc, test_last_offset_of_each_partition);
  tcase_add_test(tc, test_statements_kept_per_connection);
  suite_add_tcase(su, tc);
  tc = tcase_create("log");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 30); /* the fold thread's 5 s */
  tcase_add_test(tc, test_overlay_reads);
  tcase_add_test(tc, test_scan_merges_overlay_and_table);
  tcase_add_test(tc, test_fold_after_crash);
  tcase_add_test(tc, test_fold_thread);
  tcase_add_test(tc, test_reset_and_stats_fold_first);
  suite_add_tcase(su, tc);
  return su;
}
