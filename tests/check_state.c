/*
 * Host-managed plugin state of a member (src/state.c) over the in-memory
 * store: a record's writes join the batch of its outcome or are dropped,
 * reads see every write not yet durable (read-your-writes), a batch that
 * ends drops its overlay, scans merge the store with what is pending.
 */
#include <check.h>
#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow.h"
#include "state.h"
#include "state_buf.h"
#include "store.h"
#include "testutil.h"

static store_t *s;
static state_t *st;
static uint32_t scope;
static store_batch_t *b1, *b2;

static void setup(void) {
  char err[256];
  s = store_mem_new();
  ck_assert_int_eq(store_scope(s, "p", &scope, err, sizeof(err)), 0);
  st = state_new(s, scope);
  ck_assert_int_eq(store_batch_open(s, &b1, err, sizeof(err)), 0);
  ck_assert_int_eq(store_batch_open(s, &b2, err, sizeof(err)), 0);
}

static void teardown(void) {
  state_free(st);
  store_batch_close(b1);
  store_batch_close(b2);
  store_close(s);
}

static void put(const char *k, const char *v) {
  state_put(st, k, strlen(k), v, strlen(v));
}

/* The value of k as a string ("-" when absent). */
static const char *get_in(state_t *in, const char *k) {
  static __thread char buf[64];
  char err[256];
  const void *v;
  size_t n;
  int r = state_read(in, k, strlen(k), &v, &n, err, sizeof(err));
  ck_assert_msg(r >= 0, "%s", err);
  if (r == 0)
    return "-";
  ck_assert_uint_lt(n, sizeof(buf));
  memcpy(buf, v, n);
  buf[n] = '\0';
  return buf;
}

static const char *get(const char *k) {
  return get_in(st, k);
}

static void commit(store_batch_t *b) {
  char err[256];
  ck_assert_int_eq(store_batch_commit(b, NULL, err, sizeof(err)), 0);
  state_batch_end(st, b);
}

START_TEST(test_read_your_writes) {
  put("a", "1");
  ck_assert_str_eq(get("a"), "1"); /* the record's own write */
  state_record_join(st, b1);
  ck_assert_str_eq(get("a"), "1"); /* a handled record's, batch filling */
  put("a", "2");
  state_record_join(st, b2); /* b1 in the air, b2 filling */
  ck_assert_str_eq(get("a"), "2");
  commit(b1);
  ck_assert_str_eq(get("a"), "2"); /* the newer batch still answers */
  commit(b2);
  ck_assert_str_eq(get("a"), "2"); /* the store now */
  state_del(st, "a", 1);
  ck_assert_str_eq(get("a"), "-");
  state_record_join(st, b1);
  ck_assert_str_eq(get("a"), "-");
  commit(b1);
  ck_assert_str_eq(get("a"), "-");
}
END_TEST

/* A counter kept across every batch the flow can have at once (the one
 * filling and FLOW_AIR_MAX in the air): each increment reads the one
 * before it, whichever batch holds it, and nothing is lost when the
 * batches become durable oldest first. */
START_TEST(test_read_your_writes_every_batch_in_the_air) {
  char err[256], val[16];
  store_batch_t *b[1 + FLOW_AIR_MAX];
  for (int i = 0; i < 1 + FLOW_AIR_MAX; i++) {
    ck_assert_int_eq(store_batch_open(s, &b[i], err, sizeof(err)), 0);
    for (int r = 0; r < 3; r++) {
      int n = atoi(get("count")[0] == '-' ? "0" : get("count"));
      snprintf(val, sizeof(val), "%d", n + 1);
      put("count", val);
      state_record_join(st, b[i]);
    }
    snprintf(val, sizeof(val), "%d", 3 * (i + 1));
    ck_assert_str_eq(get("count"), val);
  }
  /* Every write joined a batch: nothing is left with the record. */
  state_record_drop(st);
  for (int i = 0; i < 1 + FLOW_AIR_MAX; i++) {
    ck_assert_uint_eq(store_batch_pending(b[i]), 3);
    commit(b[i]);
    ck_assert_str_eq(get("count"), val);
    store_batch_close(b[i]);
  }
  void *v = NULL;
  size_t n = 0;
  ck_assert_int_eq(
      store_state_get(s, scope, "count", 5, &v, &n, err, sizeof err), 1);
  ck_assert_int_eq((int)n, (int)strlen(val));
  ck_assert_int_eq(memcmp(v, val, n), 0);
  free(v);
}
END_TEST

START_TEST(test_retry_leaves_nothing) {
  put("a", "1");
  state_record_drop(st); /* the record asked for a retry */
  ck_assert_str_eq(get("a"), "-");
  state_record_join(st, b1);
  ck_assert_uint_eq(store_batch_pending(b1), 0);
  commit(b1);
  ck_assert_str_eq(get("a"), "-");
}
END_TEST

START_TEST(test_abandoned_batch_leaves_nothing) {
  char err[256];
  void *v = NULL;
  size_t n;
  put("a", "1");
  state_record_join(st, b1);
  ck_assert_uint_eq(store_batch_pending(b1), 1);
  store_batch_discard(b1); /* what flow_batch_abandon() does */
  state_batch_end(st, b1);
  ck_assert_str_eq(get("a"), "-");
  commit(b1);
  ck_assert_int_eq(store_state_get(s, scope, "a", 1, &v, &n, err, sizeof err),
                   0);
}
END_TEST

/* A FAIL whose mark waits for the dead-letter topic: its writes stay out of
 * the batches made durable meanwhile and join the batch of its mark. */
START_TEST(test_failed_record_writes_wait_for_its_mark) {
  put("a", "1");
  state_record_hold(st, "t", 0, 7); /* failed: its dead letter flies */
  ck_assert_str_eq(get("a"), "-");
  put("b", "1"); /* another partition's record, handled meanwhile */
  state_record_join(st, b1);
  ck_assert_uint_eq(store_batch_pending(b1), 1);
  commit(b1); /* durable without the failed record's write */
  ck_assert_str_eq(get("a"), "-");
  state_held_join(st, "t", 1, 7, b2); /* another partition's mark */
  ck_assert_uint_eq(store_batch_pending(b2), 0);
  state_held_join(st, "t", 0, 7, b2); /* its mark goes to b2 */
  ck_assert_uint_eq(store_batch_pending(b2), 1);
  ck_assert_str_eq(get("a"), "1");
  commit(b2);
  ck_assert_str_eq(get("a"), "1");
  ck_assert_str_eq(get("b"), "1");
}
END_TEST

/* A held write of a record handled again (a circuit breaker held its
 * failure), or of a partition that is gone, leaves nothing. */
START_TEST(test_held_writes_dropped) {
  put("a", "1");
  state_record_hold(st, "t", 0, 7);
  state_held_drop(st, "t", 0, 7); /* handled again */
  put("a", "5");
  state_record_hold(st, "t", 3, 9);
  state_record_hold(st, "t", 3, 9); /* failed again, without a write */
  put("b", "1");
  state_record_hold(st, "t", 4, 2);
  state_held_drop_partition(st, "t", 4); /* its partition is gone */
  state_held_join(st, "t", 0, 7, b1);
  state_held_join(st, "t", 3, 9, b1);
  state_held_join(st, "t", 4, 2, b1);
  ck_assert_uint_eq(store_batch_pending(b1), 0);
  commit(b1);
  ck_assert_str_eq(get("a"), "-");
  ck_assert_str_eq(get("b"), "-");
}
END_TEST

static int collect(void *arg, const void *k, size_t kl, const void *v,
                   size_t vl) {
  GString *g = arg;
  g_string_append_printf(g, "%.*s=%.*s;", (int)kl, (const char *)k, (int)vl,
                         (const char *)v);
  return 0;
}

START_TEST(test_scan_merges_pending) {
  char err[256];
  GString *g = g_string_new(NULL);
  put("k:a", "1");
  put("k:b", "2");
  put("x", "9");
  state_record_join(st, b1);
  commit(b1); /* durable: k:a, k:b, x */
  state_del(st, "k:a", 3);
  put("k:c", "3");
  state_record_join(st, b1); /* in the air */
  put("k:b", "4");
  state_record_join(st, b2); /* filling */
  put("k:d", "5");           /* the record's own */
  ck_assert_int_eq(state_read_prefix(st, "k:", 2, collect, g, err, sizeof err),
                   0);
  ck_assert_str_eq(g->str, "k:b=4;k:c=3;k:d=5;");
  g_string_free(g, TRUE);
}
END_TEST

/* ------------------------------------------------------------ workers */

static void put_in(state_t *in, const char *k, const char *v) {
  state_put(in, k, strlen(k), v, strlen(v));
}

/* Workers' views (concurrency > 1): a record's writes are its worker's
 * until they join; they join in completion order (the later wins), and
 * then every worker reads them (the next record of a lane starts only
 * after the one before joined: read-your-writes within a lane). */
START_TEST(test_views_join_in_completion_order) {
  state_t *v1 = state_view(st), *v2 = state_view(st);
  put_in(v1, "k", "1");
  put_in(v2, "k", "2");
  ck_assert_str_eq(get_in(v1, "k"), "1");
  ck_assert_str_eq(get_in(v2, "k"), "2");
  ck_assert_str_eq(get("k"), "-"); /* nothing joined yet */
  state_record_join(v2, b1);
  ck_assert_str_eq(get_in(v1, "k"), "1"); /* its own record's still */
  state_record_join(v1, b1);              /* completed last: wins */
  ck_assert_str_eq(get_in(v2, "k"), "1");
  commit(b1);
  ck_assert_str_eq(get_in(v2, "k"), "1");
  state_free(v1);
  state_free(v2);
}
END_TEST

typedef struct reader {
  state_t *view;
  _Atomic int stop;
  int went_back; /* a read older than one before it */
  _Atomic int reads;
} reader_t;

static void *read_loop(void *arg) {
  reader_t *r = arg;
  long last = 0;
  while (!r->stop) {
    const char *v = get_in(r->view, "n");
    long now = strcmp(v, "-") == 0 ? 0 : strtol(v, NULL, 10);
    if (now < last)
      r->went_back = 1;
    last = now;
    r->reads++;
  }
  return NULL;
}

/* A worker reads through its view while the member joins writes and
 * batches land (the overlays shared under a lock): it never sees a value
 * older than one it saw. */
START_TEST(test_view_reads_beside_landing_batches) {
  reader_t r = {.view = state_view(st)};
  state_t *w = state_view(st);
  pthread_t t;
  char num[16];
  ck_assert_int_eq(pthread_create(&t, NULL, read_loop, &r), 0);
  /* The reader runs before the writes start, so that they overlap. */
  TU_WAIT_UNTIL(r.reads > 0, 10000, "the reader reading");
  for (int i = 1; i <= 2000; i++) {
    snprintf(num, sizeof(num), "%d", i);
    put_in(w, "n", num);
    state_record_join(w, i % 2 ? b1 : b2);
    if (i % 2 == 0) {
      commit(b1);
      commit(b2);
    }
  }
  r.stop = 1;
  pthread_join(t, NULL);
  ck_assert_msg(!r.went_back, "a read went back in time");
  ck_assert_str_eq(get("n"), "2000");
  state_free(w);
  state_free(r.view);
}
END_TEST

/* ---------------------------------------------- the buffer of writes */

static int buf_get(sbuf_t *b, const char *k, sbuf_write_t *w) {
  return sbuf_get(b, sbuf_hash(k, strlen(k)), k, strlen(k), w);
}

static void buf_put(sbuf_t *b, const char *k, const char *v) {
  sbuf_write(b, sbuf_hash(k, strlen(k)), k, strlen(k), v, v ? strlen(v) : 0,
             v == NULL);
}

static int count_each(void *arg, uint32_t hash, const sbuf_write_t *w) {
  (void)hash;
  (void)w;
  ++*(int *)arg;
  return 0;
}

/* A later write of a key hides the earlier one, a delete included, and
 * an empty value is a put, not a delete. */
START_TEST(test_buf_later_write_wins) {
  sbuf_t *b = sbuf_new();
  sbuf_write_t w;
  int n = 0;
  ck_assert_int_eq(buf_get(b, "a", &w), 0);
  buf_put(b, "a", "1");
  buf_put(b, "a", NULL);
  ck_assert_int_eq(buf_get(b, "a", &w), 1);
  ck_assert_ptr_null(w.val);
  buf_put(b, "a", "22");
  ck_assert_int_eq(buf_get(b, "a", &w), 1);
  ck_assert_uint_eq(w.vlen, 2);
  ck_assert_int_eq(memcmp(w.val, "22", 2), 0);
  buf_put(b, "e", "");
  ck_assert_int_eq(buf_get(b, "e", &w), 1);
  ck_assert_ptr_nonnull(w.val);
  ck_assert_uint_eq(w.vlen, 0);
  /* "a" and "ab" are different keys (lengths differ, bytes agree) */
  ck_assert_int_eq(buf_get(b, "ab", &w), 0);
  ck_assert_uint_eq(sbuf_keys(b), 2);
  sbuf_each(b, count_each, &n);
  ck_assert_int_eq(n, 2); /* the latest write of each key only */
  sbuf_clear(b);
  ck_assert_uint_eq(sbuf_keys(b), 0);
  ck_assert_int_eq(buf_get(b, "a", &w), 0);
  ck_assert_int_eq(buf_get(b, "e", &w), 0);
  sbuf_free(b);
}
END_TEST

/* Enough keys to grow the index several times, and a clear by zeroing
 * the slots of few entries in a large index as well as by zeroing all
 * of it: after either, no key of before is found. */
START_TEST(test_buf_many_keys) {
  sbuf_t *b = sbuf_new();
  sbuf_write_t w;
  char k[32], v[32];
  for (int round = 0; round < 3; round++) {
    int keys = round == 1 ? 3 : 20000; /* round 2 clears few of many slots */
    for (int i = 0; i < keys; i++) {
      snprintf(k, sizeof k, "k%d", i);
      snprintf(v, sizeof v, "%d.%d", round, i);
      buf_put(b, k, v);
    }
    ck_assert_uint_eq(sbuf_keys(b), (size_t)keys);
    for (int i = 0; i < 20000; i++) {
      snprintf(k, sizeof k, "k%d", i);
      snprintf(v, sizeof v, "%d.%d", round, i);
      int in = buf_get(b, k, &w);
      ck_assert_int_eq(in, i < keys);
      if (in) {
        ck_assert_uint_eq(w.vlen, strlen(v));
        ck_assert_int_eq(memcmp(w.val, v, w.vlen), 0);
      }
    }
    sbuf_clear(b);
    for (int i = 0; i < 20000; i += 97) {
      snprintf(k, sizeof k, "k%d", i);
      ck_assert_int_eq(buf_get(b, k, &w), 0);
    }
  }
  sbuf_free(b);
}
END_TEST

/* Values larger than what a cleared buffer keeps, and keys past 8 bytes
 * (hashed a word at a time) that differ only in their last byte. */
START_TEST(test_buf_large_values) {
  sbuf_t *b = sbuf_new();
  sbuf_write_t w;
  size_t big = (size_t)3 << 20;
  char *v = g_malloc(big);
  for (size_t i = 0; i < big; i++)
    v[i] = (char)(i * 31 + 7);
  for (int round = 0; round < 2; round++) {
    sbuf_write(b, sbuf_hash("long-key-0001", 13), "long-key-0001", 13, v, big,
               0);
    buf_put(b, "long-key-0002", "small");
    ck_assert_int_eq(buf_get(b, "long-key-0001", &w), 1);
    ck_assert_uint_eq(w.vlen, big);
    ck_assert_int_eq(memcmp(w.val, v, big), 0);
    ck_assert_int_eq(buf_get(b, "long-key-0002", &w), 1);
    ck_assert_int_eq(memcmp(w.val, "small", 5), 0);
    ck_assert_int_eq(buf_get(b, "long-key-0003", &w), 0);
    sbuf_clear(b); /* gives the arena back: it grew past what it keeps */
  }
  sbuf_free(b);
  g_free(v);
}
END_TEST

/* Through the state: a large value read back from the record, the batch
 * and the store, whole. */
START_TEST(test_large_value_read_your_writes) {
  size_t big = (size_t)2 << 20;
  char *v = g_malloc(big), err[256];
  const void *got;
  size_t n;
  for (size_t i = 0; i < big; i++)
    v[i] = (char)(i * 13 + 1);
  state_put(st, "big", 3, v, big);
  for (int where = 0; where < 3; where++) {
    if (where == 1)
      state_record_join(st, b1);
    if (where == 2)
      commit(b1);
    ck_assert_int_eq(state_read(st, "big", 3, &got, &n, err, sizeof err), 1);
    ck_assert_uint_eq(n, big);
    ck_assert_int_eq(memcmp(got, v, big), 0);
  }
  g_free(v);
}
END_TEST

/* Deletes then puts of one key in one record, across records of one
 * batch and across batches: the last write joined answers, before and
 * after the batches are durable, and a RETRY's delete leaves the put of
 * the record before it standing. */
START_TEST(test_deletes_then_puts) {
  put("a", "1");
  state_del(st, "a", 1);
  put("a", "2");
  state_del(st, "a", 1);
  ck_assert_str_eq(get("a"), "-");
  put("a", "3");
  ck_assert_str_eq(get("a"), "3");
  state_record_join(st, b1);
  ck_assert_uint_eq(store_batch_pending(b1), 1); /* the last write only */
  state_del(st, "a", 1);
  state_record_drop(st); /* a RETRY */
  ck_assert_str_eq(get("a"), "3");
  state_del(st, "a", 1);
  state_record_join(st, b1);
  ck_assert_str_eq(get("a"), "-");
  put("a", "4");
  state_record_join(st, b2);
  ck_assert_str_eq(get("a"), "4");
  commit(b1);
  ck_assert_str_eq(get("a"), "4");
  commit(b2);
  ck_assert_str_eq(get("a"), "4");
  state_del(st, "a", 1);
  state_record_join(st, b1);
  commit(b1);
  ck_assert_str_eq(get("a"), "-");
}
END_TEST

/* Many keys in a record and its batch; a RETRY of a record that wrote
 * many keys leaves none of them, an abandoned batch none of its own, and
 * a batch's overlay slot reused after it ended answers nothing of it. */
START_TEST(test_many_keys_retry_and_abandon) {
  char k[32], v[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof k, "r%d", i);
    put(k, "x");
  }
  state_record_drop(st); /* RETRY */
  ck_assert_str_eq(get("r0"), "-");
  ck_assert_str_eq(get("r4999"), "-");
  state_record_join(st, b1);
  ck_assert_uint_eq(store_batch_pending(b1), 0);
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof k, "k%d", i);
    snprintf(v, sizeof v, "%d", i);
    put(k, v);
    if (i % 10 == 9)
      state_record_join(st, b1);
  }
  ck_assert_uint_eq(store_batch_pending(b1), 5000);
  ck_assert_str_eq(get("k4321"), "4321");
  store_batch_discard(b1); /* abandoned */
  state_batch_end(st, b1);
  for (int i = 0; i < 5000; i += 7) {
    snprintf(k, sizeof k, "k%d", i);
    ck_assert_str_eq(get(k), "-");
  }
  put("k1", "again");
  state_record_join(st, b1); /* the slot b1 had, empty again */
  ck_assert_str_eq(get("k1"), "again");
  ck_assert_str_eq(get("k2"), "-");
  commit(b1);
  ck_assert_str_eq(get("k1"), "again");
  ck_assert_str_eq(get("k2"), "-");
}
END_TEST

Suite *state_suite(void) {
  Suite *su = suite_create("state");
  TCase *tc = tcase_create("member");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_read_your_writes);
  tcase_add_test(tc, test_read_your_writes_every_batch_in_the_air);
  tcase_add_test(tc, test_retry_leaves_nothing);
  tcase_add_test(tc, test_abandoned_batch_leaves_nothing);
  tcase_add_test(tc, test_scan_merges_pending);
  tcase_add_test(tc, test_views_join_in_completion_order);
  tcase_add_test(tc, test_view_reads_beside_landing_batches);
  tcase_add_test(tc, test_failed_record_writes_wait_for_its_mark);
  tcase_add_test(tc, test_held_writes_dropped);
  tcase_add_test(tc, test_large_value_read_your_writes);
  tcase_add_test(tc, test_deletes_then_puts);
  tcase_add_test(tc, test_many_keys_retry_and_abandon);
  suite_add_tcase(su, tc);
  TCase *tb = tcase_create("buffer");
  tcase_add_test(tb, test_buf_later_write_wins);
  tcase_add_test(tb, test_buf_many_keys);
  tcase_add_test(tb, test_buf_large_values);
  suite_add_tcase(su, tb);
  return su;
}
