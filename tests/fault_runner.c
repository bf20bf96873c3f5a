/*
 * Test program main of the fault-injection suites (check_crash,
 * check_outage): runs the one suite named by -DKH_SUITE=<name>_suite in
 * FU_LANES processes at once. A scenario spends nearly all its time
 * waiting for the mock coordinator's timers (a first join takes 3 s, a
 * rebalance after a kill the dead member's session timeout and more) and
 * shares nothing with the others (a cluster, a group, directories of its
 * own), so lanes shorten the wall time without touching what a scenario
 * does. FU_SCENARIO() puts a scenario in a lane (the tag "laneN"); lane 0
 * also runs every test case without a lane tag.
 *
 * Each lane prints Check's own output and closing summary line; the
 * program fails when a lane fails. With CK_FORK=no (gdb, valgrind), or when
 * CK_RUN_SUITE, CK_RUN_CASE, CK_INCLUDE_TAGS or CK_EXCLUDE_TAGS picks the
 * tests, or with KHOST_TEST_LANES=1, it runs as one process, as
 * tests/runner.c does. With CK_XML_LOG_FILE_NAME set, lane N writes
 * <name>.laneN.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultutil.h"

Suite *KH_SUITE(void);

static int one_process(void) {
  const char *env[] = {"CK_RUN_SUITE", "CK_RUN_CASE", "CK_INCLUDE_TAGS",
                       "CK_EXCLUDE_TAGS"};
  const char *fork_mode = getenv("CK_FORK"),
             *lanes = getenv("KHOST_TEST_LANES");
  for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
    if (getenv(env[i]))
      return 1;
  return (fork_mode && strcmp(fork_mode, "no") == 0) ||
         (lanes && strcmp(lanes, "1") == 0);
}

/* Run lane `lane` (-1: every test case) and return the failures. */
static int run_lane(int lane) {
  char tag[16], others[16 * FU_LANES] = "", xml[4096];
  SRunner *sr = srunner_create(KH_SUITE());
  const char *xml_env = getenv("CK_XML_LOG_FILE_NAME");
  if (lane < 0) {
    srunner_run_all(sr, CK_ENV);
  } else {
    if (xml_env && *xml_env) {
      snprintf(xml, sizeof(xml), "%s.lane%d", xml_env, lane);
      srunner_set_xml(sr, xml);
    }
    snprintf(tag, sizeof(tag), "lane%d", lane);
    for (int l = 1; l < FU_LANES; l++)
      snprintf(others + strlen(others), sizeof(others) - strlen(others),
               "%slane%d", l > 1 ? " " : "", l);
    /* Lane 0: every case not tagged for another lane. */
    srunner_run_tagged(sr, NULL, NULL, lane ? tag : NULL, lane ? NULL : others,
                       CK_ENV);
  }
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed;
}

int main(void) {
  pid_t pids[FU_LANES];
  int failed = 0;
  if (one_process())
    return run_lane(-1) ? EXIT_FAILURE : EXIT_SUCCESS;
  fflush(NULL);
  for (int lane = 0; lane < FU_LANES; lane++) {
    pids[lane] = fork();
    if (pids[lane] < 0) {
      perror("fork");
      return EXIT_FAILURE;
    }
    if (pids[lane] == 0) {
      int f = run_lane(lane);
      fflush(NULL);
      _exit(f ? EXIT_FAILURE : EXIT_SUCCESS);
    }
  }
  for (int lane = 0; lane < FU_LANES; lane++) {
    int status = 0;
    if (waitpid(pids[lane], &status, 0) != pids[lane] || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      fprintf(stderr, "lane %d of %d failed\n", lane, FU_LANES);
      failed = 1;
    }
  }
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
