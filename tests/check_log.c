/*
 * The logger when its output fails: a pipe whose reader went away (EPIPE),
 * a full disk (ENOSPC, /dev/full), a closed descriptor (EBADF). The lines
 * are lost, the caller goes on, and the first line written afterwards is
 * preceded by one saying how many were lost and why.
 */
#include <check.h>
#include <fcntl.h>
#include <glib.h>
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

Suite *log_suite(void) {
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("write-failures");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_pipe_without_reader);
  tcase_add_test(tc, test_full_disk);
  tcase_add_test(tc, test_closed_descriptor);
  tcase_add_test(tc, test_no_note_without_loss);
  suite_add_tcase(s, tc);
  return s;
}
