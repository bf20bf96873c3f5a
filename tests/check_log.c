/*
 * The logger when its output fails: a pipe whose reader went away (EPIPE),
 * a full disk (ENOSPC, /dev/full), a closed descriptor (EBADF). The lines
 * are lost, the caller goes on, and the first line written afterwards is
 * preceded by one saying how many were lost and why.
 */
#include <check.h>
#include <fcntl.h>
#include <glib.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "testutil.h"

static char *tmpdir, *log_path;
static int log_fd = -1;

static void setup(void) {
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  log_path = g_build_filename(tmpdir, "khost.log", NULL);
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  ck_assert_int_ge(log_fd, 0);
  log_set_level(KHOST_LOG_INFO);
  /* As main() does: a write to a pipe without reader fails with EPIPE. */
  signal(SIGPIPE, SIG_IGN);
}

static void teardown(void) {
  log_set_fd(2);
  close(log_fd);
  tu_rm_rf(tmpdir);
  free(tmpdir);
  g_free(log_path);
}

/* Log `lost` lines to fd (each of which fails), then one to the file:
 * the file holds the note on the lost lines naming reason, then that
 * line, and nothing else. */
static void expect_lost(int fd, int lost, const char *reason) {
  char *text, *want;
  log_set_fd(fd);
  for (int i = 0; i < lost; i++)
    log_msg(KHOST_LOG_INFO, "orders/0", "line %d", i);
  log_set_fd(log_fd);
  log_msg(KHOST_LOG_NOTICE, "orders/0", "written");
  text = tu_read_file(log_path);
  ck_assert_ptr_nonnull(text);
  want = g_strdup_printf("[khost] %d log line(s) lost: writing the log "
                         "failed: %s\n",
                         lost, reason);
  ck_assert_msg(strstr(text, want) != NULL, "no \"%s\" in:\n%s", want, text);
  ck_assert_msg(strstr(text, want) < strstr(text, "[orders/0] written\n"),
                "the note does not come first:\n%s", text);
  ck_assert_msg(strstr(text, "line ") == NULL, "a lost line was written:\n%s",
                text);
  g_free(want);
  free(text);
}

START_TEST(test_pipe_without_reader) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  close(p[0]);
  expect_lost(p[1], 3, "Broken pipe");
  close(p[1]);
}
END_TEST

START_TEST(test_full_disk) {
  int fd = open("/dev/full", O_WRONLY);
  ck_assert_int_ge(fd, 0);
  expect_lost(fd, 2, "No space left on device");
  close(fd);
}
END_TEST

/* As stderr closed by whoever started khost (2>&-). */
START_TEST(test_closed_descriptor) {
  expect_lost(-1, 1, "Bad file descriptor");
}
END_TEST

/* Nothing lost, nothing said. */
START_TEST(test_no_note_without_loss) {
  char *text;
  log_set_fd(log_fd);
  log_msg(KHOST_LOG_NOTICE, "orders/0", "written");
  text = tu_read_file(log_path);
  ck_assert_ptr_nonnull(text);
  ck_assert_msg(strstr(text, "lost") == NULL, "%s", text);
  ck_assert_msg(strstr(text, "[orders/0] written\n") != NULL, "%s", text);
  free(text);
}
END_TEST

/* The text line about a record reads as it always has. */
START_TEST(test_text_record_line) {
  char *text;
  log_record_t rec = {"orders-topic", 2, 41, "e-7"};
  log_set_fd(log_fd);
  log_rec(KHOST_LOG_WARNING, "orders/0", &rec, "handle() failed");
  rec.event_id = NULL;
  log_rec(KHOST_LOG_WARNING, "orders/0", &rec, "no id");
  text = tu_read_file(log_path);
  ck_assert_ptr_nonnull(text);
  ck_assert_msg(strstr(text, "[orders/0] orders-topic [2] offset 41 eventId "
                             "e-7: handle() failed\n") != NULL,
                "%s", text);
  ck_assert_msg(strstr(text, "offset 41 eventId -: no id\n") != NULL, "%s",
                text);
  free(text);
}
END_TEST

/* Line n (0-based) of text as a JSON object; fails unless it is one. */
static json_t *json_line(char **lines, int n) {
  json_error_t e;
  ck_assert_ptr_nonnull(lines[n]);
  json_t *o = json_loads(lines[n], 0, &e);
  ck_assert_msg(o != NULL && json_is_object(o),
                "line %d is no JSON object "
                "(%s): %s",
                n + 1, e.text, lines[n]);
  return o;
}

static void assert_str_field(json_t *o, const char *key, const char *want) {
  const char *got = json_string_value(json_object_get(o, key));
  ck_assert_msg(got && strcmp(got, want) == 0, "\"%s\" is \"%s\", not \"%s\"",
                key, got ? got : "(absent)", want);
}

static void assert_int_field(json_t *o, const char *key, json_int_t want) {
  json_t *v = json_object_get(o, key);
  ck_assert_msg(json_is_integer(v), "\"%s\" is no integer", key);
  ck_assert_int_eq(json_integer_value(v), want);
}

/* log_format = "json": one object per line, the record's coordinates and
 * the member's names as fields of their own, whatever the message holds. */
START_TEST(test_json_lines) {
  log_record_t rec = {"orders-topic", 2, 41, "e-7"};
  log_set_fd(log_fd);
  log_set_json(1);
  log_msg(KHOST_LOG_NOTICE, NULL, "starting \"quoted\"\nnext");
  log_rec(KHOST_LOG_ERR, "orders/3", &rec, "handle() failed");
  log_msg(KHOST_LOG_INFO, "orders/1/jsonl_sink", "bad \xff byte");
  log_msg(KHOST_LOG_DEBUG, "orders/1", "below the level: not written");
  log_set_json(0);
  char *text = tu_read_file(log_path);
  ck_assert_ptr_nonnull(text);
  char **lines = g_strsplit(text, "\n", -1);
  ck_assert_int_eq(g_strv_length(lines), 4); /* 3 lines and "" */
  ck_assert_str_eq(lines[3], "");

  json_t *o = json_line(lines, 0);
  assert_str_field(o, "level", "notice");
  assert_str_field(o, "who", "khost");
  assert_str_field(o, "message", "starting \"quoted\"\nnext");
  ck_assert_ptr_null(json_object_get(o, "pipeline"));
  ck_assert_ptr_null(json_object_get(o, "topic"));
  const char *t = json_string_value(json_object_get(o, "time"));
  ck_assert_msg(t && strlen(t) == 24 && t[10] == 'T' && t[23] == 'Z', "%s",
                lines[0]);
  json_decref(o);

  o = json_line(lines, 1);
  assert_str_field(o, "level", "err");
  assert_str_field(o, "pipeline", "orders");
  assert_int_field(o, "member", 3);
  assert_str_field(o, "topic", "orders-topic");
  assert_int_field(o, "partition", 2);
  assert_int_field(o, "offset", 41);
  assert_str_field(o, "event_id", "e-7");
  assert_str_field(o, "message", "handle() failed");
  json_decref(o);

  o = json_line(lines, 2);
  assert_str_field(o, "plugin", "jsonl_sink");
  assert_int_field(o, "member", 1);
  assert_str_field(o, "message", "bad \\377 byte");
  json_decref(o);
  g_strfreev(lines);
  free(text);
}
END_TEST

/* ------------------------------------------------------------ repeats */

static int64_t fake_now;
static int64_t fake_clock(void) {
  return fake_now;
}

static int count_in(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}

/* The same warning 1,811 times in 2 s: the first is written, the others
 * are counted in one line once the 5 s window is over; meanwhile other
 * lines, and lines about a record, go through. */
START_TEST(test_repeated_warning_counted) {
  const char *w = "offset commit failed: Broker: Group rebalance in "
                  "progress: t[0]@5 (sent again in 200 ms)";
  char *text;
  log_record_t rec = {"t", 0, 5, "e-1"};
  log_set_fd(log_fd);
  log_set_clock(fake_clock);
  fake_now = 1000;
  for (int i = 0; i < 1811; i++, fake_now += 1)
    log_msg(KHOST_LOG_WARNING, "orders/0", "%s", w);
  log_msg(KHOST_LOG_WARNING, "orders/1", "%s", w); /* another member's */
  log_rec(KHOST_LOG_WARNING, "orders/0", &rec, "same record");
  log_rec(KHOST_LOG_WARNING, "orders/0", &rec, "same record");
  log_msg(KHOST_LOG_INFO, "orders/0", "tick");
  log_msg(KHOST_LOG_INFO, "orders/0", "tick");
  text = tu_read_file(log_path);
  ck_assert_int_eq(count_in(text, w), 2);
  ck_assert_int_eq(count_in(text, "same record"), 2);
  ck_assert_int_eq(count_in(text, "tick"), 2);
  ck_assert_int_eq(count_in(text, "repeated"), 0);
  free(text);
  /* The window is over: the next line comes after the count. */
  fake_now = 6000;
  log_msg(KHOST_LOG_INFO, "orders/0", "later");
  text = tu_read_file(log_path);
  char *want = g_strdup_printf("[orders/0] %s (repeated 1810 more times in the "
                               "last 2 s)\n",
                               w);
  ck_assert_msg(strstr(text, want) != NULL, "no \"%s\" in:\n%s", want, text);
  ck_assert_msg(strstr(text, want) < strstr(text, "later"), "%s", text);
  ck_assert_int_eq(count_in(text, "repeated"), 1);
  g_free(want);
  free(text);
  /* Still going on: counted again, said again after the next window. */
  fake_now = 6500;
  log_msg(KHOST_LOG_WARNING, "orders/0", "%s", w);
  fake_now = 11000;
  log_msg(KHOST_LOG_INFO, "orders/0", "later");
  text = tu_read_file(log_path);
  ck_assert_int_eq(count_in(text, "(repeated 1 more time in the last 1 s)"), 1);
  free(text);
  /* A window without repeats forgets it: the next one is written. */
  fake_now = 17000;
  log_msg(KHOST_LOG_INFO, "orders/0", "quiet");
  log_msg(KHOST_LOG_WARNING, "orders/0", "%s", w);
  text = tu_read_file(log_path);
  ck_assert_int_eq(count_in(text, w), 5);
  ck_assert_int_eq(count_in(text, "repeated"), 2);
  free(text);
  log_set_clock(NULL);
}
END_TEST

/* At exit the window may never end: the held count is said at once, and
 * only once. */
START_TEST(test_repeats_flushed_at_exit) {
  char *text;
  log_set_fd(log_fd);
  log_set_clock(fake_clock);
  fake_now = 1000;
  for (int i = 0; i < 4; i++, fake_now += 100)
    log_msg(KHOST_LOG_WARNING, "orders/0", "rebalance in progress");
  log_repeats_flush();
  log_repeats_flush();
  text = tu_read_file(log_path);
  ck_assert_int_eq(count_in(text, "rebalance in progress"), 2);
  ck_assert_int_eq(count_in(text,
                            "rebalance in progress (repeated 3 more times in "
                            "the last 1 s)\n"),
                   1);
  free(text);
  log_msg(KHOST_LOG_WARNING, "orders/0", "rebalance in progress");
  text = tu_read_file(log_path);
  ck_assert_int_eq(count_in(text, "rebalance in progress"), 3);
  free(text);
  log_set_clock(NULL);
}
END_TEST

Suite *log_suite(void) {
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("write-failures");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_pipe_without_reader);
  tcase_add_test(tc, test_full_disk);
  tcase_add_test(tc, test_closed_descriptor);
  tcase_add_test(tc, test_no_note_without_loss);
  suite_add_tcase(s, tc);
  tc = tcase_create("format");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_text_record_line);
  tcase_add_test(tc, test_json_lines);
  suite_add_tcase(s, tc);
  tc = tcase_create("repeats");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_repeated_warning_counted);
  tcase_add_test(tc, test_repeats_flushed_at_exit);
  suite_add_tcase(s, tc);
  return s;
}
