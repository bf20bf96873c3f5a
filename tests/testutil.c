/* Helpers shared by the test programs that are more than a few lines:
 * test cases run side by side by tests/runner.c. */
#include "testutil.h"

/* Names of the test cases registered with tu_case(), in order. */
static const char **g_cases;
static size_t g_ncases;

TCase *tu_case(Suite *s, const char *name, int timeout_s, const char *tags) {
  char *all = NULL;
  TCase *tc = tcase_create(name);
  const char **grown = realloc(g_cases, (g_ncases + 1) * sizeof(*g_cases));
  /* Called while the suite is built, before any test runs: no ck_assert. */
  if (!grown)
    abort();
  g_cases = grown;
  g_cases[g_ncases++] = name;
  if (asprintf(&all, "%s%s" TU_LANE_TAG, tags ? tags : "", tags ? " " : "") < 0)
    abort();
  tcase_set_tags(tc, all);
  free(all);
  tcase_set_timeout(tc, timeout_s);
  suite_add_tcase(s, tc);
  return tc;
}

void tu_case_test(Suite *s, const TTest *t, int timeout_s, const char *tags,
                  SFun setup, SFun teardown) {
  /* Test functions are named test_<what>: the case is <what>. */
  const char *name = strncmp(t->name, "test_", 5) == 0 ? t->name + 5 : t->name;
  TCase *tc = tu_case(s, name, timeout_s, tags);
  if (setup || teardown)
    tcase_add_unchecked_fixture(tc, setup, teardown);
  tcase_add_test(tc, t);
}

size_t tu_cases(const char ***names) {
  *names = g_cases;
  return g_ncases;
}
