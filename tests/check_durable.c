/*
 * The durability thread (src/durable.h) with the in-memory store: batches
 * committed in the order sent, several in the air, and none tried after
 * one that failed (a later batch durable before an earlier one could
 * store offsets past records whose marks are not).
 */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "durable.h"
#include "store.h"
#include "testutil.h"

static store_t *store;
static uint32_t scope;

static void setup(void) {
  store = store_mem_new();
  ck_assert_int_eq(store_scope(store, "orders", &scope, NULL, 0), 0);
}

static void teardown(void) {
  store_close(store);
}

/* A batch with one mark for id. */
static store_batch_t *batch_of(const char *id) {
  store_batch_t *b = NULL;
  char err[256];
  ck_assert_int_eq(store_batch_open(store, &b, err, sizeof(err)), 0);
  store_mark_t m = {.scope = scope,
                    .event_id = id,
                    .event_id_len = strlen(id),
                    .topic = "t",
                    .offset = 1,
                    .handled_at_ms = 1000};
  ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  return b;
}

static int lookup(const char *id) {
  store_key_t k = store_key(scope, id, strlen(id));
  return store_claim(store, scope, &k, STORE_LOOKUP, 0);
}

/* Take back the oldest batch, which must be b, with result rc. */
static void expect_landed(durable_t *d, store_batch_t *b, int rc) {
  store_batch_t *got = NULL;
  int r = 99, transient = 0;
  char err[256] = "";
  ck_assert_int_eq(durable_land(d, 1, &got, &r, &transient, err, sizeof(err)),
                   0);
  ck_assert_ptr_eq(got, b);
  ck_assert_msg(r == rc, "rc %d, expected %d (%s)", r, rc, err);
  if (rc)
    ck_assert_int_eq(transient, 1);
}

START_TEST(test_several_in_the_air_land_in_order) {
  durable_t *d = NULL;
  char err[256];
  store_batch_t *b[DURABLE_MAX];
  ck_assert_int_eq(durable_start(&d, "orders/0", NULL, err, sizeof(err)), 0);
  for (int i = 0; i < DURABLE_MAX; i++) {
    char id[16];
    snprintf(id, sizeof(id), "id%d", i);
    durable_send(d, b[i] = batch_of(id));
  }
  for (int i = 0; i < DURABLE_MAX; i++)
    expect_landed(d, b[i], 0);
  store_batch_t *none = b[0];
  int rc, transient;
  ck_assert_int_eq(durable_land(d, 1, &none, &rc, &transient, err, 1), 0);
  ck_assert_ptr_null(none);
  ck_assert_int_eq(lookup("id0"), STORE_SEEN);
  ck_assert_int_eq(lookup("id3"), STORE_SEEN);
  durable_stop(d);
  for (int i = 0; i < DURABLE_MAX; i++)
    store_batch_close(b[i]);
}
END_TEST

/* The first commit fails: the two sent after it come back untried, and
 * nothing of them is durable; once all are back, commits go on. */
START_TEST(test_nothing_tried_after_a_failure) {
  durable_t *d = NULL;
  char err[256];
  ck_assert_int_eq(durable_start(&d, "orders/0", NULL, err, sizeof(err)), 0);
  store_batch_t *a = batch_of("a"), *b = batch_of("b"), *c = batch_of("c");
  store_mem_fail_commits(store, 1, 1);
  durable_send(d, a);
  durable_send(d, b);
  durable_send(d, c);
  expect_landed(d, a, -1);
  expect_landed(d, b, DURABLE_NOT_TRIED);
  expect_landed(d, c, DURABLE_NOT_TRIED);
  ck_assert_int_eq(lookup("b"), STORE_NEW); /* absent */
  ck_assert_int_eq(lookup("c"), STORE_NEW);
  durable_send(d, c); /* every batch is back: a fresh start */
  expect_landed(d, c, 0);
  ck_assert_int_eq(lookup("c"), STORE_SEEN);
  durable_stop(d);
  store_batch_close(a);
  store_batch_close(b);
  store_batch_close(c);
}
END_TEST

/* Without blocking, the member is told at once that nothing is in the
 * air (0, no batch) or that batches are still flying (1, no batch), and
 * takes back each landed batch once, in the order sent. */
START_TEST(test_land_without_blocking) {
  durable_t *d = NULL;
  char err[256];
  char not_a_batch;
  store_batch_t *b[DURABLE_MAX], *got = (store_batch_t *)(void *)&not_a_batch;
  int rc = 99, transient = 0, taken = 0, r;
  ck_assert_int_eq(durable_start(&d, "orders/0", NULL, err, sizeof(err)), 0);
  ck_assert_int_eq(durable_land(d, 0, &got, &rc, &transient, err, 1), 0);
  ck_assert_ptr_null(got);
  for (int i = 0; i < DURABLE_MAX; i++) {
    char id[16];
    snprintf(id, sizeof(id), "nb%d", i);
    durable_send(d, b[i] = batch_of(id));
  }
  int64_t deadline = tu_mono_ms() + 10000;
  while (taken < DURABLE_MAX) {
    ck_assert_msg(tu_mono_ms() < deadline, "only %d of %d landed", taken,
                  DURABLE_MAX);
    r = durable_land(d, 0, &got, &rc, &transient, err, sizeof(err));
    if (r == 1) {
      ck_assert_ptr_null(got);
      usleep(1000);
      continue;
    }
    ck_assert_int_eq(r, 0);
    ck_assert_ptr_eq(got, b[taken]);
    ck_assert_int_eq(rc, 0);
    char id[16];
    snprintf(id, sizeof(id), "nb%d", taken++);
    ck_assert_int_eq(lookup(id), STORE_SEEN);
  }
  ck_assert_int_eq(durable_land(d, 0, &got, &rc, &transient, err, 1), 0);
  ck_assert_ptr_null(got);
  durable_stop(d);
  for (int i = 0; i < DURABLE_MAX; i++)
    store_batch_close(b[i]);
}
END_TEST

Suite *durable_suite(void) {
  Suite *s = suite_create("durable");
  TCase *tc = tcase_create("queue");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 10);
  tcase_add_test(tc, test_several_in_the_air_land_in_order);
  tcase_add_test(tc, test_nothing_tried_after_a_failure);
  tcase_add_test(tc, test_land_without_blocking);
  suite_add_tcase(s, tc);
  return s;
}
