/*
 * Test cases kept out of their program's main file: each function adds
 * its cases to the suite.
 */
#ifndef KHOST_FAULTCASES_H
#define KHOST_FAULTCASES_H

#include <check.h>

/* check_crash: the checker on synthetic histories (crash_checker.c). */
void crash_checker_cases(Suite *s);
/* check_outage: SQLite faults and the recorded attempts
 * (outage_sqlite.c). */
void outage_sqlite_cases(Suite *s);

#endif
