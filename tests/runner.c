/* Test program main: runs the one suite named by -DKH_SUITE=<name>_suite.
 * CK_VERBOSITY, CK_RUN_CASE, CK_FORK work as Check documents. */
#include <check.h>
#include <stdlib.h>

Suite *KH_SUITE(void);

int main(void) {
  SRunner *sr = srunner_create(KH_SUITE());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
