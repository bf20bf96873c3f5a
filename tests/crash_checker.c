/*
 * check_crash, part three: the checker (checker.h) on synthetic
 * histories, so that each invariant is known to catch what it names.
 */
#include <check.h>
#include <string.h>

#include "checker.h"
#include "faultcases.h"

/* ------------------------------------------------------------ unit: checker */

/* A history of two partitions, handled once by process 100. */
static chk_t *clean_history(void) {
  chk_t *c = chk_new();
  char err[256];
  static const char *const lines[] = {"100 0 t 0 0 1 a 0", "100 0 t 1 0 1 c 0",
                                      "100 0 t 0 1 1 b 1", "100 0 t 0 1 2 b 0"};
  chk_add_produced(c, "t", 0, 0, "a");
  chk_add_produced(c, "t", 0, 1, "b");
  chk_add_produced(c, "t", 1, 0, "c");
  chk_add_run(c, 100, 0, 1000, 2000);
  for (size_t i = 0; i < G_N_ELEMENTS(lines); i++)
    ck_assert_msg(chk_add_effect_line(c, lines[i], err, sizeof(err)) == 0, "%s",
                  err);
  chk_add_mark(c, 0, "a", "t", 0, 0, 1500, 0);
  chk_add_mark(c, 0, "b", "t", 0, 1, 1500, 0);
  chk_add_mark(c, 0, "c", "t", 1, 0, 1500, 0);
  chk_set_committed(c, "t", 0, 2);
  chk_set_committed(c, "t", 1, 1);
  return c;
}

START_TEST(test_checker_clean_history) {
  chk_t *c = clean_history();
  GString *why = g_string_new(NULL);
  chk_summary_t s;
  ck_assert_msg(chk_all(c, why) == 0, "%s", why->str);
  chk_summary(c, &s);
  ck_assert_uint_eq(s.produced, 3);
  ck_assert_uint_eq(s.calls, 4);
  ck_assert_uint_eq(s.effects, 3);
  ck_assert_uint_eq(s.marks, 3);
  g_string_free(why, TRUE);
  chk_free(c);
}
END_TEST

START_TEST(test_checker_effect_lines) {
  chk_t *c = chk_new();
  char err[256] = "";
  static const char *const bad[] = {"", "100 0 t 0 0 1 a", "x 0 t 0 0 1 a 0",
                                    "100 0 t 0 0 1 a 0 extra",
                                    "100 0 t 0 zero 1 a 0"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    ck_assert_int_eq(chk_add_effect_line(c, bad[i], err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "malformed effects line"));
  }
  chk_summary_t s;
  chk_summary(c, &s);
  ck_assert_uint_eq(s.calls, 0);
  chk_free(c);
}
END_TEST

/* A produced record nobody handled is lost, unless it was dead-lettered;
 * a call for a record never produced is a violation too. */
START_TEST(test_checker_loss) {
  chk_t *c = clean_history();
  GString *why = g_string_new(NULL);
  char err[256];
  chk_add_produced(c, "t", 1, 1, "d");
  ck_assert_uint_eq(chk_no_loss(c, why), 1);
  ck_assert_ptr_nonnull(strstr(why->str, "eventId d"));
  chk_add_dead_letter(c, "d", "t", 1, 1);
  ck_assert_uint_eq(chk_no_loss(c, NULL), 0);
  ck_assert_int_eq(
      chk_add_effect_line(c, "100 0 t 1 1 1 zz 0", err, sizeof(err)), 0);
  ck_assert_uint_eq(chk_no_loss(c, NULL), 1);
  g_string_free(why, TRUE);
  chk_free(c);
}
END_TEST

/* A second effect: allowed when the first process left no mark; not in
 * one process, not after a mark, not two marks on one database. */
START_TEST(test_checker_duplicates) {
  char err[256];
  chk_summary_t s;
  chk_t *c = clean_history();
  chk_add_run(c, 200, 0, 3000, 4000);
  ck_assert_int_eq(
      chk_add_effect_line(c, "200 0 t 1 0 1 c 0", err, sizeof(err)), 0);
  /* c was marked by process 100 (at 1500): 200 must have skipped it. */
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 1);
  chk_clear_marks(c);
  chk_add_mark(c, 0, "c", "t", 1, 0, 3500, 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 0);
  chk_summary(c, &s);
  ck_assert_uint_eq(s.redone, 1);
  chk_add_mark(c, 0, "c", "t", 1, 0, 3600, 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 1);
  chk_free(c);

  c = clean_history();
  ck_assert_int_eq(
      chk_add_effect_line(c, "100 0 t 1 0 1 c 0", err, sizeof(err)), 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 1);
  chk_free(c);

  c = clean_history(); /* another host, with its own database */
  chk_add_run(c, 300, 1, 1200, 4000);
  ck_assert_int_eq(
      chk_add_effect_line(c, "300 0 t 1 0 1 c 0", err, sizeof(err)), 0);
  chk_add_mark(c, 1, "c", "t", 1, 0, 1600, 0);
  ck_assert_uint_eq(chk_no_duplicate_effect(c, NULL), 0);
  chk_summary(c, &s);
  ck_assert_uint_eq(s.redone_hosts, 1);
  chk_free(c);
}
END_TEST

START_TEST(test_checker_order) {
  char err[256];
  chk_t *c = clean_history();
  /* Member 1 of the same process has its own order. */
  ck_assert_int_eq(
      chk_add_effect_line(c, "100 1 t 0 0 1 a 1", err, sizeof(err)), 0);
  ck_assert_uint_eq(chk_in_order(c, NULL), 0);
  ck_assert_int_eq(
      chk_add_effect_line(c, "100 0 t 0 0 3 a 0", err, sizeof(err)), 0);
  ck_assert_uint_eq(chk_in_order(c, NULL), 1);
  chk_free(c);
  c = clean_history();
  ck_assert_int_eq(
      chk_add_effect_line(c, "100 0 t 0 1 2 b 0", err, sizeof(err)), 0);
  ck_assert_uint_eq(chk_in_order(c, NULL), 1);
  chk_free(c);
}
END_TEST

START_TEST(test_checker_committed) {
  chk_t *c = clean_history();
  GString *why = g_string_new(NULL);
  chk_clear_marks(c);
  chk_add_mark(c, 0, "a", "t", 0, 0, 1500, 0);
  chk_add_mark(c, 0, "c", "t", 1, 0, 1500, 0);
  ck_assert_uint_eq(chk_committed_covered(c, why), 1);
  ck_assert_ptr_nonnull(strstr(why->str, "eventId b"));
  chk_set_committed(c, "t", 0, 1);
  ck_assert_uint_eq(chk_committed_covered(c, NULL), 0);
  ck_assert_uint_eq(chk_committed_at_end(c, NULL), 1);
  chk_set_committed(c, "t", 1, 5);
  ck_assert_uint_eq(chk_committed_covered(c, NULL), 1);
  ck_assert_uint_eq(chk_committed_at_end(c, NULL), 2);
  g_string_free(why, TRUE);
  chk_free(c);
}
END_TEST

void crash_checker_cases(Suite *s) {
  TCase *unit = tcase_create("checker");
  tcase_add_test(unit, test_checker_clean_history);
  tcase_add_test(unit, test_checker_effect_lines);
  tcase_add_test(unit, test_checker_loss);
  tcase_add_test(unit, test_checker_duplicates);
  tcase_add_test(unit, test_checker_order);
  tcase_add_test(unit, test_checker_committed);
  suite_add_tcase(s, unit);
}
