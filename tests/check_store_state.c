/*
 * A batch's buffer of plugin state writes (src/store_state.c) written on
 * an SQLite connection of the test's own: what reaches the state table,
 * in which order, each partition's last offset, and the statements it
 * keeps on the connection.
 */
#include <check.h>
#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_state.h"
#include "testutil.h"

static char *dir;
static sqlite3 *db;
static GString *trace; /* the state statements run, with their values */

/* Every state statement the connection runs, one line each. */
static int on_stmt(unsigned type, void *arg, void *p, void *x) {
  (void)type, (void)arg, (void)x;
  char *sql = sqlite3_expanded_sql(p);
  if (sql && strstr(sql, " state") && !strstr(sql, "CREATE")) {
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

/* Of several writes of one key only the last one reaches the table, and
 * the rows are written in key order (scope first), whatever order the
 * records made them in. */
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
  char *got = rows(other);
  ck_assert_str_eq(got, "1 k=2;");
  g_free(got);
  sstate_buf_free(b);
  ck_assert_ptr_null(sqlite3_next_stmt(other, NULL));
  ck_assert_int_eq(sqlite3_close(other), SQLITE_OK);
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
  return su;
}
