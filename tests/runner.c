/*
 * Test program main: runs the one suite named by -DKH_SUITE=<name>_suite.
 *
 * The test cases made with tu_case() (tests/testutil.h) run side by side,
 * each in a process of its own, up to KHOST_TEST_LANES (default
 * RUNNER_LANES) at once, the next one started as soon as one ends: a test
 * against the mock cluster spends nearly all its time waiting for the
 * mock coordinator's timers (a first group join takes 3 s, a rebalance
 * session.timeout.ms - 1 s) and shares nothing with the others (a cluster,
 * a group, directories of its own), so this shortens the wall time without
 * touching what a test does. The other cases run one after the other in
 * one more process. Each process prints Check's own output and closing
 * summary line; the program fails when one of them fails.
 *
 * With CK_FORK=no (gdb, valgrind), or when CK_RUN_SUITE, CK_RUN_CASE,
 * CK_INCLUDE_TAGS or CK_EXCLUDE_TAGS picks the tests, or with
 * KHOST_TEST_LANES=1, everything runs in one process, one case after the
 * other. With CK_XML_LOG_FILE_NAME, CK_LOG_FILE_NAME or
 * CK_TAP_LOG_FILE_NAME set, a case run on its own writes <name>.<case>.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define RUNNER_LANES 6

static int lanes(void) {
  const char *env[] = {"CK_RUN_SUITE", "CK_RUN_CASE", "CK_INCLUDE_TAGS",
                       "CK_EXCLUDE_TAGS"};
  const char *fork_mode = getenv("CK_FORK"), *n = getenv("KHOST_TEST_LANES");
  for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
    if (getenv(env[i]))
      return 1;
  if (fork_mode && strcmp(fork_mode, "no") == 0)
    return 1;
  int want = n ? atoi(n) : RUNNER_LANES;
  return want > 0 ? want : 1;
}

/* Check's log files, one per case run on its own. */
static void log_files_of(SRunner *sr, const char *tcase) {
  char path[4096];
  const char *v;
  if ((v = getenv("CK_XML_LOG_FILE_NAME")) && *v &&
      snprintf(path, sizeof(path), "%s.%s", v, tcase) < (int)sizeof(path))
    srunner_set_xml(sr, path);
  if ((v = getenv("CK_LOG_FILE_NAME")) && *v &&
      snprintf(path, sizeof(path), "%s.%s", v, tcase) < (int)sizeof(path))
    srunner_set_log(sr, path);
  if ((v = getenv("CK_TAP_LOG_FILE_NAME")) && *v &&
      snprintf(path, sizeof(path), "%s.%s", v, tcase) < (int)sizeof(path))
    srunner_set_tap(sr, path);
}

/* Run the case named tcase, or (NULL) every case not run on its own, and
 * return the failures. */
static int run_part(SRunner *sr, const char *tcase) {
  if (tcase) {
    log_files_of(sr, tcase);
    srunner_run(sr, NULL, tcase, CK_ENV);
  } else {
    /* Silent, then printed: no summary line when there was nothing. */
    srunner_run_tagged(sr, NULL, NULL, NULL, TU_LANE_TAG, CK_SILENT);
    if (srunner_ntests_run(sr) > 0)
      srunner_print(sr, CK_ENV);
  }
  return srunner_ntests_failed(sr);
}

static pid_t start_part(SRunner *sr, const char *tcase) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int failed = run_part(sr, tcase);
    fflush(NULL);
    _exit(failed ? EXIT_FAILURE : EXIT_SUCCESS);
  }
  if (pid < 0)
    perror("fork");
  return pid;
}

/* Wait for one part; returns 1 when it failed. */
static int reap_part(int *running) {
  int status = 0;
  pid_t pid = wait(&status);
  if (pid < 0) {
    perror("wait");
    *running = 0;
    return 1;
  }
  (*running)--;
  return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

int main(void) {
  SRunner *sr = srunner_create(KH_SUITE());
  const char **cases;
  size_t ncases = tu_cases(&cases);
  int max = lanes(), running = 0, failed = 0;
  if (max == 1 || ncases == 0) {
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    goto out;
  }
  /* First the cases that are not run on their own, in one lane. */
  for (size_t i = 0; i <= ncases; i++) {
    if (running == max)
      failed += reap_part(&running);
    if (start_part(sr, i > 0 ? cases[i - 1] : NULL) < 0)
      failed++;
    else
      running++;
  }
  while (running > 0)
    failed += reap_part(&running);
  if (failed)
    fprintf(stderr, "%d of %zu test processes failed\n", failed, ncases + 1);
out:
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
