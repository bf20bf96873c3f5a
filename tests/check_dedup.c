/* Tests for the dedup store: claims, durability across reopen, retention
 * pruning (foreground and background), concurrent writers, ID encodings,
 * commit failures and open errors; replays (claims again, replay ranges);
 * the administration functions (dedup_admin.h); and the in-memory set
 * (dset_) on its own, without SQLite. */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dedup.h"
#include "dedup_admin.h"
#include "dedup_filter.h"
#include "dedup_log.h"
#include "dedup_set.h"
#include "id_hash.h"
#include "log.h"
#include "store_state.h"
#include "testutil.h"

#define HOUR_MS (INT64_C(3600) * 1000)

typedef struct fx {
  char *dir;
  char *path;
  dedup_store_t *s;
  uint32_t scope;
} fx_t;

static dedup_store_t *store_open(const char *path, int64_t retention_ms,
                                 int64_t prune_interval_ms, int busy_ms) {
  dedup_opts_t o = {.path = path,
                    .retention_ms = retention_ms,
                    .prune_interval_ms = prune_interval_ms,
                    .busy_timeout_ms = busy_ms};
  dedup_store_t *s = NULL;
  char err[512] = "";
  int rc = dedup_open(&s, &o, err, sizeof err);
  ck_assert_msg(rc == 0 && s != NULL, "dedup_open: %s", err);
  return s;
}

static uint32_t scope_of(dedup_store_t *s, const char *name) {
  uint32_t id = 0;
  char err[512] = "";
  ck_assert_msg(dedup_scope(s, name, &id, err, sizeof err) == 0,
                "dedup_scope: %s", err);
  return id;
}

static void fx_open(fx_t *f, int64_t retention_ms, int64_t interval_ms) {
  f->s = store_open(f->path, retention_ms, interval_ms, 0);
  f->scope = scope_of(f->s, "orders");
}

static void fx_init(fx_t *f, int64_t retention_ms, int64_t interval_ms) {
  f->dir = tu_tempdir();
  ck_assert_ptr_nonnull(f->dir);
  ck_assert_int_ge(asprintf(&f->path, "%s/dedup.db", f->dir), 0);
  fx_open(f, retention_ms, interval_ms);
}

static void fx_reopen(fx_t *f, int64_t retention_ms, int64_t interval_ms) {
  dedup_close(f->s);
  fx_open(f, retention_ms, interval_ms);
}

static void fx_done(fx_t *f) {
  dedup_close(f->s);
  tu_rm_rf(f->dir);
  free(f->path);
  free(f->dir);
}

static dedup_writer_t *writer_open(dedup_store_t *s) {
  dedup_writer_t *w = NULL;
  char err[512] = "";
  ck_assert_msg(dedup_writer_open(s, &w, err, sizeof err) == 0,
                "dedup_writer_open: %s", err);
  return w;
}

static void add_mark(dedup_writer_t *w, uint32_t scope, const void *id,
                     size_t len, int64_t at_ms) {
  dedup_mark_t m = {.scope = scope,
                    .event_id = id,
                    .event_id_len = len,
                    .topic = "order-completed",
                    .partition = 3,
                    .offset = 42,
                    .handled_at_ms = at_ms,
                    .outcome = DEDUP_OUTCOME_OK};
  ck_assert_int_eq(dedup_writer_add(w, &m), 0);
}

static void commit_ok(dedup_writer_t *w) {
  char err[512] = "";
  int transient = -1;
  ck_assert_msg(dedup_writer_commit(w, &transient, err, sizeof err) == 0,
                "commit: %s", err);
  ck_assert_int_eq(transient, 0);
  ck_assert_uint_eq(dedup_writer_pending(w), 0);
}

/* A canonical lowercase UUID text that differs for every n. */
static void uuid_of(char out[37], uint64_t n) {
  snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012llx",
           (unsigned)(n * 2654435761u), (unsigned)(n >> 7) & 0xffff,
           (unsigned)n & 0xfff, (unsigned)(n >> 12) & 0xfff,
           (unsigned long long)(n * 0x9e3779b97f4a7c15ull) & 0xffffffffffffull);
}

static int claim_str(dedup_store_t *s, uint32_t scope, const char *id) {
  return dedup_claim(s, scope, id, strlen(id));
}

static int64_t sql_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
                "%s: %s", sql, sqlite3_errmsg(db));
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static dadm_t *adm_open(const char *path, int create);

/* Marks in the log. */
static int64_t disk_rows(const char *path) {
  return sql_int(path, "SELECT coalesce(sum(n), 0) FROM batches");
}

/* -------------------------------------------------------------- claims */

START_TEST(test_claim_new_then_in_flight) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_IN_FLIGHT);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_NEW);
  ck_assert_uint_eq(dedup_size(f.s), 2);
  fx_done(&f);
}
END_TEST

/* A claim whose mark is not durable yet is not "seen": the claimant may
 * still give it back (its batch abandoned, its assignment lost), and an
 * owner that skipped the ID meanwhile would commit past a record that
 * nobody made durable. Only a committed mark answers DEDUP_SEEN. */
START_TEST(test_claimed_is_not_seen_until_committed) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  add_mark(w, f.scope, "evt-1", 5, dedup_now_ms());
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_IN_FLIGHT);
  commit_ok(w);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_IN_FLIGHT);
  dedup_release(f.s, f.scope, "evt-2", 5); /* abandoned: new again */
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_NEW);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_release_makes_new_again) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  dedup_release(f.s, f.scope, "evt-1", 5);
  ck_assert_uint_eq(dedup_size(f.s), 0);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_IN_FLIGHT);
  fx_done(&f);
}
END_TEST

START_TEST(test_release_after_commit_keeps_seen) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  add_mark(w, f.scope, "evt-1", 5, dedup_now_ms());
  commit_ok(w);
  dedup_release(f.s, f.scope, "evt-1", 5);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_unclaimed_mark_seen_after_commit) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "evt-9", 5, dedup_now_ms());
  commit_ok(w);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-9"), DEDUP_SEEN);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_mark_without_topic_or_id_bytes) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  dedup_mark_t m = {.scope = f.scope, .handled_at_ms = dedup_now_ms()};
  ck_assert_int_eq(dedup_writer_add(w, &m), 0); /* empty ID, no topic */
  commit_ok(w);
  ck_assert_int_eq(dedup_claim(f.s, f.scope, NULL, 0), DEDUP_SEEN);
  dadm_t *a = adm_open(f.path, 0);
  dadm_mark_t *v = NULL;
  size_t n = 0;
  char err[512] = "";
  ck_assert_msg(dadm_lookup(a, f.scope, "", 0, &v, &n, err, sizeof err) == 0,
                "%s", err);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(v[0].topic, "");
  dadm_marks_free(v, n);
  dadm_close(a);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_scopes_are_separate) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  uint32_t other = scope_of(f.s, "payments");
  ck_assert_uint_ne(other, f.scope);
  ck_assert_uint_eq(scope_of(f.s, "orders"), f.scope);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, other, "evt-1"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, other, "evt-1"), DEDUP_IN_FLIGHT);
  uint32_t orders = f.scope;
  fx_reopen(&f, HOUR_MS, 0);
  ck_assert_uint_eq(f.scope, orders);
  ck_assert_uint_eq(scope_of(f.s, "payments"), other);
  fx_done(&f);
}
END_TEST

typedef struct claimer {
  dedup_store_t *s;
  uint32_t scope;
  int n;
  int news;
} claimer_t;

static void *claim_all(void *arg) {
  claimer_t *c = arg;
  char id[37];
  for (int i = 0; i < c->n; i++) {
    uuid_of(id, (uint64_t)i);
    c->news += claim_str(c->s, c->scope, id) == DEDUP_NEW;
  }
  return NULL;
}

START_TEST(test_concurrent_claims_exactly_one_wins) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  claimer_t a = {f.s, f.scope, 20000, 0}, b = a;
  pthread_t ta, tb;
  pthread_create(&ta, NULL, claim_all, &a);
  pthread_create(&tb, NULL, claim_all, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  ck_assert_int_eq(a.news + b.news, 20000);
  ck_assert_uint_eq(dedup_size(f.s), 20000);
  fx_done(&f);
}
END_TEST

/* --------------------------------------------------------- durability */

START_TEST(test_commit_survives_reopen) {
  fx_t f = {0};
  char id[37];
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  for (int i = 0; i < 1000; i++) {
    uuid_of(id, (uint64_t)i);
    ck_assert_int_eq(claim_str(f.s, f.scope, id), DEDUP_NEW);
    add_mark(w, f.scope, id, 36, dedup_now_ms());
  }
  ck_assert_uint_eq(dedup_writer_pending(w), 1000);
  commit_ok(w);
  dedup_writer_close(w);
  fx_reopen(&f, HOUR_MS, 0);
  ck_assert_uint_eq(dedup_size(f.s), 1000);
  for (int i = 0; i < 1000; i++) {
    uuid_of(id, (uint64_t)i);
    ck_assert_int_eq(claim_str(f.s, f.scope, id), DEDUP_SEEN);
  }
  uuid_of(id, 1000);
  ck_assert_int_eq(claim_str(f.s, f.scope, id), DEDUP_NEW);
  ck_assert_int_eq(disk_rows(f.path), 1000);
  fx_done(&f);
}
END_TEST

START_TEST(test_uncommitted_marks_not_seen_after_reopen) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  ck_assert_int_eq(claim_str(f.s, f.scope, "discarded"), DEDUP_NEW);
  add_mark(w, f.scope, "discarded", 9, dedup_now_ms());
  dedup_writer_discard(w);
  ck_assert_uint_eq(dedup_writer_pending(w), 0);
  dedup_release(f.s, f.scope, "discarded", 9);
  commit_ok(w); /* nothing left to write */
  ck_assert_int_eq(claim_str(f.s, f.scope, "left-pending"), DEDUP_NEW);
  add_mark(w, f.scope, "left-pending", 12, dedup_now_ms());
  dedup_writer_close(w); /* closing drops what was never committed */
  fx_reopen(&f, HOUR_MS, 0);
  ck_assert_int_eq(disk_rows(f.path), 0);
  ck_assert_int_eq(claim_str(f.s, f.scope, "discarded"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope, "left-pending"), DEDUP_NEW);
  fx_done(&f);
}
END_TEST

START_TEST(test_reopen_loads_only_marks_inside_retention) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "old", 3, now - 2 * HOUR_MS);
  add_mark(w, f.scope, "recent", 6, now - HOUR_MS / 2);
  commit_ok(w);
  dedup_writer_close(w);
  fx_reopen(&f, HOUR_MS, 0);
  ck_assert_uint_eq(dedup_size(f.s), 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "recent"), DEDUP_SEEN);
  ck_assert_int_eq(claim_str(f.s, f.scope, "old"), DEDUP_NEW);
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------------------ pruning */

START_TEST(test_prune_removes_old_keeps_new) {
  fx_t f = {0};
  char id[37];
  const int64_t t0 = 1700000000000, retention = 1000;
  fx_init(&f, retention, 0);
  dedup_writer_t *w = writer_open(f.s);
  for (int i = 0; i < 12000; i++) { /* more than one prune transaction */
    uuid_of(id, (uint64_t)i);
    ck_assert_int_eq(claim_str(f.s, f.scope, id), DEDUP_NEW);
    add_mark(w, f.scope, id, 36, i < 11000 ? t0 : t0 + 900);
    if (i == 10999) /* a batch goes whole: the old ones in their own */
      commit_ok(w);
  }
  commit_ok(w);
  int64_t removed = -1;
  char err[512] = "";
  ck_assert_msg(dedup_prune(f.s, t0 + 1500, &removed, err, sizeof err) == 0,
                "prune: %s", err);
  ck_assert_int_eq(removed, 11000);
  ck_assert_uint_eq(dedup_size(f.s), 1000);
  ck_assert_int_eq(disk_rows(f.path), 1000);
  ck_assert_int_eq(sql_int(f.path, "SELECT min(first_at) FROM batches"),
                   t0 + 900);
  uuid_of(id, 0);
  ck_assert_int_eq(claim_str(f.s, f.scope, id), DEDUP_NEW);
  uuid_of(id, 11000);
  ck_assert_int_eq(claim_str(f.s, f.scope, id), DEDUP_SEEN);
  dedup_stats_t st;
  dedup_stats(f.s, &st);
  ck_assert_int_eq(st.pruned, 11000);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_prune_keeps_id_marked_again) {
  fx_t f = {0};
  const int64_t t0 = 1700000000000, retention = 1000;
  fx_init(&f, retention, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "again", 5, t0);
  commit_ok(w);
  add_mark(w, f.scope, "again", 5, t0 + 900); /* handled a second time */
  commit_ok(w);
  int64_t removed = -1;
  char err[512] = "";
  ck_assert_int_eq(dedup_prune(f.s, t0 + 1500, &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "again"), DEDUP_SEEN);
  ck_assert_int_eq(dedup_prune(f.s, t0 + 2000, &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "again"), DEDUP_NEW);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_prune_keeps_live_claim) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "x", 1, now - 2 * HOUR_MS);
  commit_ok(w);
  dedup_writer_close(w);
  fx_reopen(&f, HOUR_MS, 0); /* the old mark is on disk, not in memory */
  ck_assert_int_eq(claim_str(f.s, f.scope, "x"), DEDUP_NEW);
  int64_t removed = -1;
  char err[512] = "";
  ck_assert_int_eq(dedup_prune(f.s, now, &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "x"), DEDUP_IN_FLIGHT);
  dedup_release(f.s, f.scope, "x", 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "x"), DEDUP_NEW);
  fx_done(&f);
}
END_TEST

START_TEST(test_prune_frees_memory) {
  fx_t f = {0};
  const int64_t t0 = 1700000000000, retention = 1000;
  const size_t len = 4096, n = 8192; /* 32 MiB of IDs */
  char *id = malloc(len);
  dedup_stats_t before, after;
  fx_init(&f, retention, 0);
  dedup_writer_t *w = writer_open(f.s);
  for (size_t i = 0; i < n; i++) {
    memset(id, 'a' + (int)(i % 26), len);
    memcpy(id, &i, sizeof i);
    ck_assert_int_eq(dedup_claim(f.s, f.scope, id, len), DEDUP_NEW);
    add_mark(w, f.scope, id, len, t0);
    if (i % 500 == 499)
      commit_ok(w);
  }
  commit_ok(w);
  dedup_stats(f.s, &before);
  ck_assert_uint_ge(before.arena_bytes, n * len);
  char err[512] = "";
  ck_assert_int_eq(dedup_prune(f.s, t0 + 2000, NULL, err, sizeof err), 0);
  dedup_stats(f.s, &after);
  ck_assert_uint_eq(after.ids, 0);
  ck_assert_msg(after.arena_bytes <= before.arena_bytes / 4,
                "arena kept %zu of %zu bytes", after.arena_bytes,
                before.arena_bytes);
  dedup_writer_close(w);
  free(id);
  fx_done(&f);
}
END_TEST

START_TEST(test_huge_id_memory_returned_on_release) {
  fx_t f = {0};
  const size_t len = 512 * 1024;
  char *id = calloc(1, len);
  dedup_stats_t base, held, back;
  fx_init(&f, HOUR_MS, 0);
  dedup_stats(f.s, &base);
  ck_assert_int_eq(dedup_claim(f.s, f.scope, id, len), DEDUP_NEW);
  dedup_stats(f.s, &held);
  ck_assert_uint_ge(held.arena_bytes, base.arena_bytes + len);
  dedup_release(f.s, f.scope, id, len);
  dedup_stats(f.s, &back);
  ck_assert_uint_eq(back.arena_bytes, base.arena_bytes);
  ck_assert_uint_eq(back.arena_chunks, base.arena_chunks);
  free(id);
  fx_done(&f);
}
END_TEST

typedef struct loop_writer {
  dedup_store_t *s;
  uint32_t scope;
  int64_t at_offset_ms; /* handled_at relative to now */
  int batches, batch;
  int stop; /* atomic */
  int commits, failures;
  char err[512];
} loop_writer_t;

static void *write_loop(void *arg) {
  loop_writer_t *lw = arg;
  dedup_writer_t *w = NULL;
  char id[37];
  uint64_t next = (uint64_t)lw->scope << 40;
  if (dedup_writer_open(lw->s, &w, lw->err, sizeof lw->err) < 0) {
    __atomic_add_fetch(&lw->failures, 1, __ATOMIC_SEQ_CST);
    return NULL;
  }
  for (int b = 0; !__atomic_load_n(&lw->stop, __ATOMIC_SEQ_CST) &&
                  (lw->batches == 0 || b < lw->batches);
       b++) {
    for (int i = 0; i < lw->batch; i++) {
      uuid_of(id, next++);
      if (dedup_claim(lw->s, lw->scope, id, 36) != DEDUP_NEW)
        __atomic_add_fetch(&lw->failures, 1, __ATOMIC_SEQ_CST);
      dedup_mark_t m = {.scope = lw->scope,
                        .event_id = id,
                        .event_id_len = 36,
                        .topic = "t",
                        .handled_at_ms = dedup_now_ms() + lw->at_offset_ms};
      dedup_writer_add(w, &m);
    }
    if (dedup_writer_commit(w, NULL, lw->err, sizeof lw->err) < 0)
      __atomic_add_fetch(&lw->failures, 1, __ATOMIC_SEQ_CST);
    else
      __atomic_add_fetch(&lw->commits, 1, __ATOMIC_SEQ_CST);
  }
  dedup_writer_close(w);
  return NULL;
}

static int commits_of(loop_writer_t *lw) {
  return __atomic_load_n(&lw->commits, __ATOMIC_SEQ_CST);
}

static int64_t pruned_of(dedup_store_t *s) {
  dedup_stats_t st;
  dedup_stats(s, &st);
  return st.pruned;
}

START_TEST(test_pruner_thread_runs_beside_writer) {
  fx_t f = {0};
  pthread_t t;
  fx_init(&f, 1000, 10);
  /* Every mark is already past retention, so the pruner always has work
   * while the writer keeps committing. */
  loop_writer_t lw = {
      .s = f.s, .scope = f.scope, .at_offset_ms = -5000, .batch = 100};
  pthread_create(&t, NULL, write_loop, &lw);
  TU_WAIT_UNTIL(pruned_of(f.s) >= 1000, 30000, "the pruner to start");
  int64_t pruned = pruned_of(f.s);
  int commits = commits_of(&lw);
  TU_WAIT_UNTIL(pruned_of(f.s) >= pruned + 2000 &&
                    commits_of(&lw) >= commits + 20,
                30000, "pruner and writer both to progress");
  __atomic_store_n(&lw.stop, 1, __ATOMIC_SEQ_CST);
  pthread_join(t, NULL);
  ck_assert_msg(lw.failures == 0, "writer failed: %s", lw.err);
  TU_WAIT_UNTIL(dedup_size(f.s) == 0, 30000, "the pruner to catch up");
  ck_assert_int_eq(disk_rows(f.path), 0);
  ck_assert_int_eq(pruned_of(f.s), (int64_t)lw.commits * lw.batch);
  fx_done(&f);
}
END_TEST

static int64_t prune_runs_of(dedup_store_t *s) {
  dedup_stats_t st;
  dedup_stats(s, &st);
  return st.prune_runs;
}

START_TEST(test_close_stops_idle_pruner_promptly) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, HOUR_MS);
  /* The pruner runs once at start, then waits an hour for its next run. */
  TU_WAIT_UNTIL(prune_runs_of(f.s) == 1, 10000, "the first prune");
  int64_t t0 = tu_mono_ms();
  dedup_close(f.s);
  f.s = NULL;
  ck_assert_int_lt(tu_mono_ms() - t0, 1000);
  fx_done(&f);
}
END_TEST

START_TEST(test_two_writers_never_busy) {
  fx_t f = {0};
  pthread_t ta, tb;
  fx_init(&f, HOUR_MS, 0);
  loop_writer_t a = {.s = f.s, .scope = f.scope, .batches = 60, .batch = 200};
  loop_writer_t b = a;
  b.scope = scope_of(f.s, "payments");
  pthread_create(&ta, NULL, write_loop, &a);
  pthread_create(&tb, NULL, write_loop, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  ck_assert_msg(a.failures == 0, "writer a: %s", a.err);
  ck_assert_msg(b.failures == 0, "writer b: %s", b.err);
  ck_assert_int_eq(a.commits + b.commits, 120);
  ck_assert_int_eq(disk_rows(f.path), 120 * 200);
  ck_assert_uint_eq(dedup_size(f.s), 120 * 200);
  fx_done(&f);
}
END_TEST

/* --------------------------------------------------------- ID encodings */

START_TEST(test_id_forms_are_exact) {
  fx_t f = {0};
  static const char lower[] = "00112233-4455-6677-8899-aabbccddeeff";
  static const char upper[] = "00112233-4455-6677-8899-AABBCCDDEEFF";
  static const char mixed[] = "00112233-4455-6677-8899-AABBccddeeff";
  static const char notuuid[] = "00112233-4455-6677-8899+aabbccddeeff";
  /* not hex: must not pack as the UUID ending in 0 */
  static const char nothex[] = "00112233-4455-6677-8899-aabbccddeefg";
  static const char zero[] = "00112233-4455-6677-8899-aabbccddeef0";
  static const unsigned char packed[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                                           0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb,
                                           0xcc, 0xdd, 0xee, 0xff};
  static const char bin[] = {'a', 0, 'b', 0, (char)0xff};
  const size_t big = 64 * 1024;
  char *huge = malloc(big);
  for (size_t i = 0; i < big; i++)
    huge[i] = (char)(i * 31);
  struct {
    const void *id;
    size_t len;
  } ids[] = {{lower, 36},  {upper, 36},    {mixed, 36},  {notuuid, 36},
             {nothex, 36}, {zero, 36},     {packed, 16}, {bin, 5},
             {bin, 4},     {"abc", 3},     {"abc", 4},   {"", 0},
             {huge, big},  {huge, big - 1}};
  const size_t n = sizeof ids / sizeof ids[0];
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  for (size_t i = 0; i < n; i++) {
    ck_assert_msg(dedup_claim(f.s, f.scope, ids[i].id, ids[i].len) == DEDUP_NEW,
                  "id %zu collided", i);
    add_mark(w, f.scope, ids[i].id, ids[i].len, dedup_now_ms());
  }
  commit_ok(w);
  dedup_writer_close(w);
  fx_reopen(&f, HOUR_MS, 0);
  ck_assert_uint_eq(dedup_size(f.s), n);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(dedup_claim(f.s, f.scope, ids[i].id, ids[i].len) ==
                      DEDUP_SEEN,
                  "id %zu lost", i);
  huge[big - 1] ^= 1;
  ck_assert_int_eq(dedup_claim(f.s, f.scope, huge, big), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope,
                             "00112233-4455-6677-8899-"
                             "aabbccddeefe"),
                   DEDUP_NEW);
  free(huge);
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------------------- failures */

static sqlite3 *hold_write_lock(const char *path) {
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  return db;
}

START_TEST(test_busy_commit_keeps_marks) {
  fx_t f = {0};
  char err[512] = "";
  int transient = -1;
  fx_init(&f, HOUR_MS, 0);
  dedup_close(f.s);
  f.s = store_open(f.path, HOUR_MS, 0, 50);
  dedup_writer_t *w = writer_open(f.s);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  add_mark(w, f.scope, "evt-1", 5, dedup_now_ms());
  add_mark(w, f.scope, "evt-2", 5, dedup_now_ms());
  sqlite3 *locker = hold_write_lock(f.path);
  ck_assert_int_eq(dedup_writer_commit(w, &transient, err, sizeof err), -1);
  ck_assert_int_eq(transient, 1);
  ck_assert_msg(strstr(err, f.path) && strstr(err, "locked"), "err: %s", err);
  ck_assert_uint_eq(dedup_writer_pending(w), 2);
  /* Not committed, so not published: evt-2 was never claimed. */
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_NEW);
  dedup_release(f.s, f.scope, "evt-2", 5);
  ck_assert_int_eq(sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(locker);
  commit_ok(w);
  ck_assert_int_eq(disk_rows(f.path), 2);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_SEEN);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_permanent_commit_failure) {
  fx_t f = {0};
  char err[512] = "";
  int transient = -1;
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "evt-1", 5, dedup_now_ms());
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "DROP TABLE batches", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  ck_assert_int_eq(dedup_writer_commit(w, &transient, err, sizeof err), -1);
  ck_assert_int_eq(transient, 0);
  ck_assert_msg(strstr(err, f.path) && strstr(err, "batches"), "err: %s", err);
  ck_assert_uint_eq(dedup_writer_pending(w), 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

static void assert_open_fails(const char *path, const char *what) {
  dedup_opts_t o = {.path = path, .retention_ms = HOUR_MS};
  dedup_store_t *s = (dedup_store_t *)&o; /* must be reset to NULL */
  char err[512] = "";
  ck_assert_int_eq(dedup_open(&s, &o, err, sizeof err), -1);
  ck_assert_ptr_null(s);
  ck_assert_msg(strncmp(err, path, strlen(path)) == 0 && strstr(err, what),
                "err: %s", err);
}

START_TEST(test_open_corrupt_file) {
  char *dir = tu_tempdir();
  char junk[8192];
  ck_assert_ptr_nonnull(dir);
  memset(junk, 'x', sizeof junk - 1);
  junk[sizeof junk - 1] = '\0';
  char *path = tu_write_file(dir, "dedup.db", junk);
  assert_open_fails(path, "not a database");
  free(path);
  tu_rm_rf(dir);
  free(dir);
}
END_TEST

START_TEST(test_open_missing_directory) {
  char *dir = tu_tempdir();
  char *path = NULL;
  ck_assert_ptr_nonnull(dir);
  ck_assert_int_ge(asprintf(&path, "%s/absent/dedup.db", dir), 0);
  assert_open_fails(path, "No such file or directory");
  free(path);
  tu_rm_rf(dir);
  free(dir);
}
END_TEST

/* A start on a database whose lock another process keeps (a second
 * connection stands for it: SQLite locks the connections of one process
 * against each other alike) says what it waits for, then gives up after
 * the busy timeout with an error naming the file; once the lock is gone
 * the open goes through. */
START_TEST(test_open_locked_database_says_and_gives_up) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_close(f.s);
  f.s = NULL;
  char *log_path = NULL, *log = NULL, err[1024] = "";
  ck_assert_int_ge(asprintf(&log_path, "%s/khost.log", f.dir), 0);
  int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  ck_assert_int_ge(fd, 0);
  sqlite3 *other = NULL;
  ck_assert_int_eq(sqlite3_open(f.path, &other), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL),
                   SQLITE_OK);
  dedup_opts_t o = {.path = f.path, .busy_timeout_ms = 1500};
  dedup_store_t *s = NULL;
  log_set_fd(fd);
  int64_t t0 = tu_mono_ms();
  int rc = dedup_open(&s, &o, err, sizeof err);
  int64_t took = tu_mono_ms() - t0;
  log_set_fd(2);
  ck_assert_int_eq(rc, -1);
  ck_assert_ptr_null(s);
  ck_assert_msg(strstr(err, f.path) &&
                    strstr(err, "stayed locked by another process for 2 s"),
                "%s", err);
  ck_assert_int_ge(took, 1500);
  log = tu_read_file(log_path);
  ck_assert_msg(log && strstr(log, "waiting for a lock that another process "
                                   "holds on the dedup database"),
                "log: %s", log ? log : "(none)");
  ck_assert_int_eq(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(other);
  ck_assert_msg(dedup_open(&s, &o, err, sizeof err) == 0, "%s", err);
  f.s = s;
  close(fd);
  free(log);
  free(log_path);
  fx_done(&f);
}
END_TEST

START_TEST(test_open_newer_schema) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_close(f.s);
  f.s = NULL;
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  assert_open_fails(f.path, "version 99");
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------ in-memory set alone */

/* The hash a caller carries (id_hash()) and the one the set computes
 * when none comes are the same, for every form a key takes (packed UUIDs
 * of either case, raw bytes): an ID claimed with its carried hash is
 * found by calls without one, and the other way round. */
START_TEST(test_set_carried_hash_finds_the_same_id) {
  static const char *ids[] = {"3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                              "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
                              "order-17", "x"};
  dset_t *set = dset_new();
  dset_keys_t *k = dset_keys_new();
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
    size_t n = strlen(ids[i]);
    uint64_t h = id_hash(3, ids[i], n);
    ck_assert_uint_ne(h, ID_HASH_NONE);
    ck_assert_int_eq(dset_claim_h(set, 3, ids[i], n, h), DSET_NEW);
    ck_assert_int_eq(dset_claim(set, 3, ids[i], n), DSET_IN_FLIGHT);
    dset_release(set, 3, ids[i], n);
    ck_assert_int_eq(dset_claim(set, 3, ids[i], n), DSET_NEW);
    ck_assert_int_eq(dset_claim_h(set, 3, ids[i], n, h), DSET_IN_FLIGHT);
    dset_keys_add_h(k, 3, ids[i], n, 1000, i % 2 ? h : ID_HASH_NONE);
  }
  dset_mark_committed_batch(set, k);
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
    size_t n = strlen(ids[i]);
    ck_assert_int_eq(dset_claim_h(set, 3, ids[i], n, id_hash(3, ids[i], n)),
                     DSET_SEEN);
    ck_assert_int_eq(dset_claim(set, 3, ids[i], n), DSET_SEEN);
  }
  ck_assert_uint_eq(dset_size(set), 4);
  dset_keys_free(k);
  dset_free(set);
}
END_TEST

/* A batch of marks spread over every stripe (more keys than the batch
 * sorts on the stack), taken one stripe at a time: each claimed ID is
 * seen after, each unclaimed one is added, and a re-claim of one settles. */
START_TEST(test_set_batch_marks_every_stripe) {
  dset_t *set = dset_new();
  dset_keys_t *k = dset_keys_new();
  char id[32];
  for (int i = 0; i < 2000; i++) {
    snprintf(id, sizeof(id), "ev-%d", i);
    if (i % 2 == 0)
      ck_assert_int_eq(dset_claim(set, 1, id, strlen(id)), DSET_NEW);
    dset_keys_add(k, 1, id, strlen(id), 1000 + i);
  }
  dset_mark_committed(set, 1, "ev-7", 4, 10);
  ck_assert_int_eq(dset_claim_again(set, 1, "ev-7", 4, 500), DSET_NEW);
  dset_mark_committed_batch(set, k);
  ck_assert_uint_eq(dset_size(set), 2000);
  for (int i = 0; i < 2000; i++) {
    snprintf(id, sizeof(id), "ev-%d", i);
    ck_assert_int_eq(dset_claim(set, 1, id, strlen(id)), DSET_SEEN);
  }
  /* ev-7's re-claim ended with its mark: a second re-claim before the
   * mark's time finds it seen. */
  ck_assert_int_eq(dset_claim_again(set, 1, "ev-7", 4, 1006), DSET_SEEN);
  dset_keys_free(k);
  dset_free(set);
}
END_TEST

START_TEST(test_set_claim_release_commit) {
  dset_t *set = dset_new();
  ck_assert_int_eq(dset_claim(set, 1, "a", 1), DSET_NEW);
  ck_assert_int_eq(dset_claim(set, 1, "a", 1), DSET_IN_FLIGHT);
  ck_assert_int_eq(dset_claim(set, 2, "a", 1), DSET_NEW); /* other scope */
  dset_release(set, 1, "a", 1);
  ck_assert_int_eq(dset_claim(set, 1, "a", 1), DSET_NEW);
  dset_mark_committed(set, 1, "a", 1, 1000); /* the claim is now backed */
  ck_assert_int_eq(dset_claim(set, 1, "a", 1), DSET_SEEN);
  dset_release(set, 1, "a", 1);
  ck_assert_int_eq(dset_claim(set, 1, "a", 1), DSET_SEEN);
  /* The one time value that equals "claimed" must still mean committed. */
  dset_mark_committed(set, 1, "b", 1, INT64_MIN);
  dset_release(set, 1, "b", 1);
  ck_assert_int_eq(dset_claim(set, 1, "b", 1), DSET_SEEN);
  ck_assert_uint_eq(dset_size(set), 3);
  dset_free(set);
}
END_TEST

START_TEST(test_set_forget_keeps_claims_and_newer_marks) {
  const int64_t t0 = 1700000000000;
  dset_t *set = dset_new();
  dset_keys_t *k = dset_keys_new();
  dset_mark_committed(set, 1, "old", 3, t0);
  dset_mark_committed(set, 1, "again", 5, t0);
  dset_mark_committed(set, 1, "again", 5, t0 + 10);
  dset_mark_committed(set, 1, "late", 4, t0 + 10);
  dset_mark_committed(set, 1, "late", 4, t0); /* does not move it back */
  ck_assert_int_eq(dset_claim(set, 1, "claimed", 7), DSET_NEW);
  dset_keys_add(k, 1, "old", 3, 0);
  dset_keys_add(k, 1, "again", 5, 0);
  dset_keys_add(k, 1, "late", 4, 0);
  dset_keys_add(k, 1, "claimed", 7, 0);
  dset_keys_add(k, 1, "absent", 6, 0);
  ck_assert_uint_eq(dset_keys_count(k), 5);
  dset_forget_if_older(set, k, t0 + 5);
  ck_assert_int_eq(dset_claim(set, 1, "old", 3), DSET_NEW);
  ck_assert_int_eq(dset_claim(set, 1, "again", 5), DSET_SEEN);
  ck_assert_int_eq(dset_claim(set, 1, "late", 4), DSET_SEEN);
  ck_assert_int_eq(dset_claim(set, 1, "claimed", 7), DSET_IN_FLIGHT);
  ck_assert_int_eq(dset_claim(set, 1, "absent", 6), DSET_NEW);
  dset_keys_free(k);
  dset_free(set);
}
END_TEST

/* A claim given by reference is marked through it: the mark's time is
 * the record's, and the claim is the claimer's alone (the same ID again,
 * as a second record of one batch would ask, is in flight, no reference). */
START_TEST(test_set_held_claim_marked_by_reference) {
  const int64_t t0 = 1700000000000;
  dset_t *set = dset_new();
  dset_keys_t *k = dset_keys_new();
  dset_ref_t *ref = NULL, *again = NULL;
  uint64_t h = id_hash(1, "x", 1);
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, h, &ref), DSET_NEW);
  ck_assert_ptr_nonnull(ref);
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, h, &again), DSET_IN_FLIGHT);
  ck_assert_ptr_null(again);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_IN_FLIGHT);
  dset_keys_add(k, 1, "x", 1, 0); /* pruning skips a held claim */
  dset_forget_if_older(set, k, INT64_MAX);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_IN_FLIGHT);
  dset_keys_clear(k);
  dset_keys_add_ref(k, ref, t0);
  dset_mark_committed_batch(set, k);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, h, &again), DSET_SEEN);
  ck_assert_ptr_null(again);
  /* Marked at t0: kept by a cutoff at t0, forgotten by one after it. */
  dset_keys_clear(k);
  dset_keys_add(k, 1, "x", 1, 0);
  dset_forget_if_older(set, k, t0);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  dset_forget_if_older(set, k, t0 + 1);
  ck_assert_uint_eq(dset_size(set), 0);
  /* Released: gone, and claimed anew with a reference of its own. */
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, h, &ref), DSET_NEW);
  dset_release_h(set, 1, "x", 1, h);
  ck_assert_uint_eq(dset_size(set), 0);
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, h, &ref), DSET_NEW);
  ck_assert_ptr_nonnull(ref);
  dset_keys_clear(k);
  dset_keys_add_ref(k, ref, t0 + 7);
  dset_mark_committed_batch(set, k);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  dset_keys_free(k);
  dset_free(set);
}
END_TEST

/* An ID of scope 1 other than "x" whose hash puts it in the stripe of
 * "x" (the top four bits pick the stripe), written into out. */
static void same_stripe_id(char out[16], const char *avoid) {
  uint64_t want = id_hash(1, "x", 1) >> 60;
  for (unsigned i = 0;; i++) {
    snprintf(out, 16, "y%u", i);
    if (strcmp(out, avoid) != 0 && id_hash(1, out, strlen(out)) >> 60 == want)
      return;
  }
}

/* A held claim that a mark without its reference (another writer's)
 * commits stays where it is until the holder marks or releases it:
 * pruning does not free it meanwhile. Were it freed, its stripe's
 * emptied chunk would be reused for the next key of that stripe, and the
 * holder's mark would write that other key's record (a claim in flight
 * would turn seen). */
START_TEST(test_set_held_claim_outlives_other_marks) {
  const int64_t t0 = 1700000000000;
  dset_t *set = dset_new();
  dset_keys_t *k = dset_keys_new();
  dset_keys_t *forget = dset_keys_new();
  dset_ref_t *ref = NULL;
  char y[16], z[16];
  same_stripe_id(y, "");
  same_stripe_id(z, y);
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, ID_HASH_NONE, &ref),
                   DSET_NEW);
  dset_mark_committed(set, 1, "x", 1, t0); /* not through ref */
  dset_mark_committed(set, 1, "x", 1, t0); /* twice */
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  dset_keys_add(forget, 1, "x", 1, 0);
  dset_forget_if_older(set, forget, INT64_MAX);
  ck_assert_uint_eq(dset_size(set), 1);
  ck_assert_int_eq(dset_claim(set, 1, y, strlen(y)), DSET_NEW);
  dset_keys_add_ref(k, ref, t0 + 100);
  dset_mark_committed_batch(set, k);
  ck_assert_int_eq(dset_claim(set, 1, y, strlen(y)), DSET_IN_FLIGHT);
  /* The holder's mark moved the record's time: kept by a cutoff before
   * it, forgotten after it. */
  dset_forget_if_older(set, forget, t0 + 100);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  dset_forget_if_older(set, forget, t0 + 101);
  ck_assert_uint_eq(dset_size(set), 1); /* y */
  /* The same with a release: the ID stays committed by the other mark
   * and can be forgotten once the holder let go. */
  ck_assert_int_eq(dset_claim_ref_h(set, 1, "x", 1, ID_HASH_NONE, &ref),
                   DSET_NEW);
  dset_mark_committed(set, 1, "x", 1, t0);
  dset_forget_if_older(set, forget, INT64_MAX);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  dset_release(set, 1, "x", 1);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_SEEN);
  dset_forget_if_older(set, forget, INT64_MAX);
  ck_assert_int_eq(dset_claim(set, 1, "x", 1), DSET_NEW);
  ck_assert_int_eq(dset_claim(set, 1, z, strlen(z)), DSET_NEW);
  ck_assert_uint_eq(dset_size(set), 3);
  dset_keys_free(forget);
  dset_keys_free(k);
  dset_free(set);
}
END_TEST

/* The store's claim by reference: its mark commits through the writer
 * like any other, and an ID the set does not hold but a commit made seen
 * gives no reference. */
START_TEST(test_claim_ref_mark_commits) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  void *ref = NULL;
  ck_assert_int_eq(
      dedup_claim_ref(f.s, f.scope, "evt-1", 5, ID_HASH_NONE, &ref), DEDUP_NEW);
  ck_assert_ptr_nonnull(ref);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_IN_FLIGHT);
  dedup_mark_t m = {.scope = f.scope,
                    .event_id = "evt-1",
                    .event_id_len = 5,
                    .topic = "order-completed",
                    .partition = 3,
                    .offset = 42,
                    .handled_at_ms = dedup_now_ms(),
                    .outcome = DEDUP_OUTCOME_OK,
                    .claim_ref = ref};
  ck_assert_int_eq(dedup_writer_add(w, &m), 0);
  commit_ok(w);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  ck_assert_int_eq(
      dedup_claim_ref(f.s, f.scope, "evt-1", 5, ID_HASH_NONE, &ref),
      DEDUP_SEEN);
  ck_assert_ptr_null(ref);
  ck_assert_int_eq(sql_int(f.path, "SELECT sum(n) FROM batches"), 1);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

/* A batch of n distinct IDs of len bytes, the i-th handled at
 * t0 + i / 100. */
static void fill_keys(dset_keys_t *k, char *id, size_t len, size_t n,
                      int64_t t0) {
  dset_keys_clear(k);
  for (size_t i = 0; i < n; i++) {
    memset(id, 'a' + (int)(i % 26), len);
    memcpy(id, &i, sizeof i);
    dset_keys_add(k, 7, id, len, t0 + (int64_t)(i / 100));
  }
}

START_TEST(test_set_chunks_freed_when_keys_forgotten) {
  const int64_t t0 = 1700000000000;
  const size_t len = 1000, n = 20000; /* several chunks per stripe */
  char *id = malloc(len);
  dset_t *set = dset_new();
  dset_keys_t *k = dset_keys_new();
  dset_stats_t full, kept, churn;
  fill_keys(k, id, len, n, t0);
  dset_mark_committed_batch(set, k);
  dset_stats(set, &full);
  ck_assert_uint_eq(full.ids, n);
  ck_assert_uint_ge(full.bytes, n * len);
  dset_forget_if_older(set, k, t0 + 1); /* the first 100 */
  ck_assert_uint_eq(dset_size(set), n - 100);
  dset_forget_if_older(set, k, INT64_MAX);
  dset_stats(set, &kept);
  ck_assert_uint_eq(kept.ids, 0);
  /* Only the chunks being filled stay mapped. */
  ck_assert_msg(kept.bytes <= full.bytes / 4, "arena kept %zu of %zu bytes",
                kept.bytes, full.bytes);
  for (int round = 0; round < 3; round++) { /* claim/release churn */
    for (size_t i = 0; i < 1000; i++)
      ck_assert_int_eq(dset_claim(set, 9, &i, sizeof i), 1);
    for (size_t i = 0; i < 1000; i++)
      dset_release(set, 9, &i, sizeof i);
  }
  dset_stats(set, &churn);
  ck_assert_uint_eq(churn.ids, 0); /* reused the emptied chunks */
  ck_assert_uint_eq(churn.chunks, kept.chunks);
  ck_assert_uint_eq(churn.bytes, kept.bytes);
  dset_keys_trim(k, 0);
  ck_assert_uint_eq(dset_keys_count(k), 0);
  dset_keys_free(k);
  dset_free(set);
  free(id);
}
END_TEST

/* ------------------------------------------------------------ replays */

static int claim_again_str(dedup_store_t *s, uint32_t scope, const char *id) {
  return dedup_claim_again(s, scope, id, strlen(id));
}

/* An ID handled in an earlier run is claimed again, once: marked again in
 * this run (the replay handled it), it is seen. */
START_TEST(test_claim_again_seen_id) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "evt-1", 5, dedup_now_ms() - 60000);
  commit_ok(w);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  /* In flight: a second re-claim and a plain claim both see it. */
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  /* Released: still seen, and may be claimed again. */
  dedup_release(f.s, f.scope, "evt-1", 5);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  /* Marked again and committed: handled again once, now seen. */
  add_mark(w, f.scope, "evt-1", 5, dedup_now_ms());
  commit_ok(w);
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  ck_assert_uint_eq(dedup_size(f.s), 1);
  ck_assert_int_eq(disk_rows(f.path), 2);
  /* With an explicit limit: again when the newest mark predates it. */
  ck_assert_int_eq(dedup_claim_again_before(f.s, f.scope, "evt-1", 5,
                                            dedup_now_ms() - 30000),
                   DEDUP_SEEN);
  ck_assert_int_eq(
      dedup_claim_again_before(f.s, f.scope, "evt-1", 5, dedup_now_ms() + 1000),
      DEDUP_NEW);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

START_TEST(test_claim_again_new_or_claimed_id) {
  fx_t f = {0};
  fx_init(&f, HOUR_MS, 0);
  /* Never seen: an ordinary claim, given back by a release. */
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-2"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-2"), DEDUP_IN_FLIGHT);
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-2"), DEDUP_IN_FLIGHT);
  dedup_release(f.s, f.scope, "evt-2", 5);
  ck_assert_uint_eq(dedup_size(f.s), 0);
  /* Claimed by another member (no mark yet): not claimable again. */
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-3"), DEDUP_NEW);
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "evt-3"), DEDUP_IN_FLIGHT);
  fx_done(&f);
}
END_TEST

/* An old mark whose ID is being replayed is not forgotten by a prune. */
START_TEST(test_prune_keeps_reclaimed_id) {
  fx_t f = {0};
  const int64_t t0 = 1700000000000, retention = 1000;
  char err[512];
  int64_t removed = -1;
  fx_init(&f, retention, 0);
  dedup_writer_t *w = writer_open(f.s);
  add_mark(w, f.scope, "old", 3, t0);
  commit_ok(w);
  ck_assert_int_eq(claim_again_str(f.s, f.scope, "old"), DEDUP_NEW);
  ck_assert_int_eq(dedup_prune(f.s, t0 + 1500, &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "old"), DEDUP_SEEN);
  add_mark(w, f.scope, "old", 3, t0 + 1400); /* the replay's mark */
  commit_ok(w);
  ck_assert_int_eq(dedup_prune(f.s, t0 + 3000, &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(claim_str(f.s, f.scope, "old"), DEDUP_NEW);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

static dedup_range_t *ranges(fx_t *f, uint32_t scope, const char *topic,
                             int32_t part, size_t *n) {
  dedup_range_t *v = (dedup_range_t *)f; /* must be replaced */
  char err[512] = "";
  ck_assert_msg(dedup_replay_ranges(f->s, scope, topic, part, &v, n, err,
                                    sizeof err) == 0,
                "ranges: %s", err);
  ck_assert(*n > 0 || v == NULL);
  return v;
}

static void replay_add(fx_t *f, int32_t part, int64_t from, int64_t to,
                       int mode) {
  char err[512] = "";
  ck_assert_msg(dedup_replay_add(f->s, f->scope, "order-completed", part, from,
                                 to, mode, err, sizeof err) == 0,
                "replay_add: %s", err);
}

START_TEST(test_replay_ranges_newest_first) {
  fx_t f = {0};
  size_t n;
  char err[512] = "";
  fx_init(&f, HOUR_MS, 0);
  replay_add(&f, 0, 0, 100, DEDUP_REPLAY_SKIP);
  replay_add(&f, 0, 50, 80, DEDUP_REPLAY_REPROCESS);
  replay_add(&f, 0, 0, 30, DEDUP_REPLAY_REPROCESS);
  replay_add(&f, 1, 7, 9, DEDUP_REPLAY_SKIP);
  dedup_range_t *r = ranges(&f, f.scope, "order-completed", 0, &n);
  ck_assert_uint_eq(n, 3);
  ck_assert(r[0].from == 0 && r[0].to == 30 &&
            r[0].mode == DEDUP_REPLAY_REPROCESS);
  ck_assert_int_le(r[0].recorded_ms, dedup_now_ms());
  ck_assert_int_gt(r[0].recorded_ms, dedup_now_ms() - 60000);
  ck_assert(r[1].from == 50 && r[1].to == 80);
  ck_assert(r[2].from == 0 && r[2].to == 100 && r[2].mode == DEDUP_REPLAY_SKIP);
  free(r);
  /* One that covers them all replaces them. */
  replay_add(&f, 0, 0, 100, DEDUP_REPLAY_SKIP);
  r = ranges(&f, f.scope, "order-completed", 0, &n);
  ck_assert_uint_eq(n, 1);
  free(r);
  /* Other partitions, topics and scopes are apart; survives a reopen. */
  fx_reopen(&f, HOUR_MS, 0);
  r = ranges(&f, f.scope, "order-completed", 1, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert(r[0].from == 7 && r[0].to == 9);
  free(r);
  ck_assert_ptr_null(ranges(&f, f.scope, "coupon-issue", 0, &n));
  ck_assert_uint_eq(n, 0);
  ck_assert_ptr_null(
      ranges(&f, scope_of(f.s, "payments"), "order-completed", 0, &n));
  ck_assert_uint_eq(n, 0);
  /* Empty or backwards ranges are refused. */
  ck_assert_int_eq(dedup_replay_add(f.s, f.scope, "order-completed", 0, 5, 5,
                                    DEDUP_REPLAY_SKIP, err, sizeof err),
                   -1);
  ck_assert_msg(strstr(err, "invalid replay range [5, 5)") != NULL, "%s", err);
  fx_done(&f);
}
END_TEST

/* Ranges recorded before the retention window are not returned, and go
 * with the marks when pruning. */
START_TEST(test_replay_ranges_pruned_with_marks) {
  fx_t f = {0};
  char err[512] = "";
  int64_t now = dedup_now_ms(), removed;
  size_t n;
  sqlite3 *db = NULL;
  fx_init(&f, HOUR_MS, 0);
  replay_add(&f, 0, 0, 10, DEDUP_REPLAY_SKIP);
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(dedup_db_replay_add(db, f.path, f.scope, "order-completed",
                                       0, 20, 30, DEDUP_REPLAY_REPROCESS,
                                       now - 2 * HOUR_MS, err, sizeof err),
                   0);
  sqlite3_close(db);
  dedup_range_t *r = ranges(&f, f.scope, "order-completed", 0, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_int_eq(r[0].to, 10);
  free(r);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM replays"), 2);
  ck_assert_int_eq(dedup_prune(f.s, now, &removed, err, sizeof err), 0);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM replays"), 1);
  fx_done(&f);
}
END_TEST

/* A database of the first schema (no replays table) is upgraded. */
START_TEST(test_open_upgrades_schema_1) {
  fx_t f = {0};
  size_t n;
  fx_init(&f, HOUR_MS, 0);
  dedup_close(f.s);
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "DROP TABLE replays; PRAGMA user_version=1",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  fx_open(&f, HOUR_MS, 0);
  ck_assert_int_eq(sql_int(f.path, "PRAGMA user_version"),
                   DEDUP_SCHEMA_VERSION);
  replay_add(&f, 0, 0, 10, DEDUP_REPLAY_SKIP);
  free(ranges(&f, f.scope, "order-completed", 0, &n));
  ck_assert_uint_eq(n, 1);
  fx_done(&f);
}
END_TEST

/* A database of schema 6 (state rows in their table, no log of state
 * writes) is upgraded at open: the log is added, the version moves, the
 * state rows are read as they were; a later version is refused. */
START_TEST(test_open_upgrades_schema_6) {
  fx_t f = {0};
  char err[512] = "";
  void *v = NULL;
  size_t n = 0;
  sstate_t *st = NULL;
  fx_init(&f, HOUR_MS, 0);
  dedup_close(f.s);
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(
      sqlite3_exec(db,
                   "DROP TABLE state_log; DELETE FROM sqlite_sequence"
                   " WHERE name = 'state_log';"
                   "INSERT INTO state VALUES(1, x'6b', x'7631');"
                   "PRAGMA user_version=6",
                   NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(db);
  fx_open(&f, HOUR_MS, 0);
  ck_assert_int_eq(sql_int(f.path, "PRAGMA user_version"), 7);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM sqlite_master"
                                   " WHERE name = 'state_log'"),
                   1);
  ck_assert_msg(sstate_open(&st, f.path, 1000, err, sizeof err) == 0, "%s",
                err);
  ck_assert_int_eq(sstate_get(st, 1, "k", 1, &v, &n, err, sizeof err), 1);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(memcmp(v, "v1", 2), 0);
  g_free(v);
  sstate_close(st);
  dedup_close(f.s);
  f.s = NULL;
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version=8", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  dedup_opts_t o = {.path = f.path};
  dedup_store_t *d = NULL;
  ck_assert_int_eq(dedup_open(&d, &o, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "version 8 is newer") != NULL, "%s", err);
  fx_done(&f);
}
END_TEST

/* -------------------------------------------------------- administration */

static dadm_t *adm_open(const char *path, int create) {
  dadm_t *a = NULL;
  char err[512] = "";
  ck_assert_msg(dadm_open(&a, path, create, err, sizeof err) == 0,
                "dadm_open: %s", err);
  return a;
}

START_TEST(test_admin_open) {
  char *dir = tu_tempdir(), *path = NULL, err[512] = "";
  dadm_t *a = (dadm_t *)dir; /* must be reset to NULL */
  ck_assert_int_ge(asprintf(&path, "%s/dedup.db", dir), 0);
  ck_assert_int_eq(dadm_open(&a, path, 0, err, sizeof err), -1);
  ck_assert_ptr_null(a);
  ck_assert_msg(strstr(err, "no dedup database") != NULL, "%s", err);
  a = adm_open(path, 1); /* created, with the current schema */
  dadm_close(a);
  ck_assert_int_eq(sql_int(path, "PRAGMA user_version"), DEDUP_SCHEMA_VERSION);
  ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM replays"), 0);
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  ck_assert_int_eq(dadm_open(&a, path, 0, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "version 99") != NULL, "%s", err);
  free(path);
  tu_rm_rf(dir);
  free(dir);
}
END_TEST

/* orders: 12000 marks in batches of 1000 (more than one deletion
 * batch), the oldest at t0; evt-1 twice; payments: evt-1 once. */
static void admin_fixture(fx_t *f, int64_t t0, uint32_t *payments) {
  char id[37];
  fx_init(f, 0, 0);
  *payments = scope_of(f->s, "payments");
  dedup_writer_t *w = writer_open(f->s);
  for (int i = 0; i < 12000; i++) {
    uuid_of(id, (uint64_t)i);
    add_mark(w, f->scope, id, 36, t0 + i);
    if (i % 1000 == 999)
      commit_ok(w);
  }
  add_mark(w, f->scope, "evt-1", 5, t0 + 20000);
  add_mark(w, f->scope, "evt-1", 5, t0 + 30000);
  add_mark(w, *payments, "evt-1", 5, t0 + 40000);
  commit_ok(w);
  dedup_writer_close(w);
}

START_TEST(test_admin_stats_and_lookup) {
  fx_t f = {0};
  const int64_t t0 = 1700000000000;
  uint32_t payments, scope;
  int found = -1;
  char err[512] = "";
  dadm_stats_t *v = NULL;
  dadm_mark_t *m = NULL;
  size_t n;
  admin_fixture(&f, t0, &payments);
  replay_add(&f, 0, 0, 10, DEDUP_REPLAY_SKIP);
  dadm_t *a = adm_open(f.path, 0);
  ck_assert_int_eq(dadm_stats(a, &v, &n, err, sizeof err), 0);
  ck_assert_uint_eq(n, 2); /* by name: orders, payments */
  ck_assert_str_eq(v[0].pipeline, "orders");
  ck_assert_int_eq(v[0].marks, 12002);
  ck_assert_int_eq(v[0].oldest_ms, t0);
  ck_assert_int_eq(v[0].newest_ms, t0 + 30000);
  ck_assert_int_eq(v[0].replays, 1);
  ck_assert_str_eq(v[1].pipeline, "payments");
  ck_assert_int_eq(v[1].marks, 1);
  dadm_stats_free(v, n);
  ck_assert_int_eq(dadm_scope(a, "orders", 0, &scope, &found, err, 512), 0);
  ck_assert_int_eq(found, 1);
  ck_assert_uint_eq(scope, f.scope);
  ck_assert_int_eq(dadm_scope(a, "absent", 0, &scope, &found, err, 512), 0);
  ck_assert_int_eq(found, 0);
  ck_assert_int_eq(dadm_lookup(a, f.scope, "evt-1", 5, &m, &n, err, 512), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_str_eq(m[0].topic, "order-completed");
  ck_assert_int_eq(m[0].partition, 3);
  ck_assert_int_eq(m[0].offset, 42);
  ck_assert_int_eq(m[0].handled_at_ms, t0 + 20000);
  ck_assert_int_eq(m[1].handled_at_ms, t0 + 30000);
  ck_assert_int_eq(m[0].outcome, DEDUP_OUTCOME_OK);
  dadm_marks_free(m, n);
  ck_assert_int_eq(dadm_lookup(a, f.scope, "evt-9", 5, &m, &n, err, 512), 0);
  ck_assert_uint_eq(n, 0);
  ck_assert_ptr_null(m);
  dadm_close(a);
  fx_done(&f);
}
END_TEST

START_TEST(test_admin_forget_and_prune) {
  fx_t f = {0};
  const int64_t t0 = 1700000000000;
  uint32_t payments;
  int64_t removed = -1;
  char err[512] = "";
  admin_fixture(&f, t0, &payments);
  replay_add(&f, 0, 0, 10, DEDUP_REPLAY_SKIP);
  dadm_t *a = adm_open(f.path, 0);
  /* A dry run counts, deletes nothing. */
  ck_assert_int_eq(
      dadm_forget_id(a, f.scope, "evt-1", 5, 1, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 2);
  ck_assert_int_eq(disk_rows(f.path), 12003);
  ck_assert_int_eq(
      dadm_forget_id(a, f.scope, "evt-1", 5, 0, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 2);
  ck_assert_int_eq(disk_rows(f.path), 12001);
  /* Older than t0 + 6000: the first 6000 of orders, in batches. */
  ck_assert_int_eq(dadm_prune(a, t0 + 6000, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 6000);
  ck_assert_int_eq(sql_int(f.path, "SELECT min(first_at) FROM batches"),
                   t0 + 6000);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM replays"), 1);
  ck_assert_int_eq(dadm_forget_scope(a, f.scope, 1, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 6000);
  ck_assert_int_eq(dadm_forget_scope(a, f.scope, 0, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 6000);
  ck_assert_int_eq(disk_rows(f.path), 1); /* payments' evt-1 */
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM replays"), 0);
  dadm_close(a);
  /* The host's in-memory set remembers until it reopens. */
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_SEEN);
  fx_reopen(&f, 0, 0);
  ck_assert_int_eq(claim_str(f.s, f.scope, "evt-1"), DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, payments, "evt-1"), DEDUP_SEEN);
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------------------- segments */

/* Commit IDs [first, first + n) (UUIDs) handled at at_ms. */
static void commit_uuids(dedup_store_t *s, uint32_t scope, uint64_t first,
                         uint64_t n, int64_t at_ms) {
  dedup_writer_t *w = writer_open(s);
  char id[37];
  for (uint64_t i = first; i < first + n; i++) {
    uuid_of(id, i);
    add_mark(w, scope, id, 36, at_ms);
  }
  commit_ok(w);
  dedup_writer_close(w);
}

static size_t segment_now(dedup_store_t *s) {
  size_t moved = 0;
  char err[512] = "";
  ck_assert_msg(dedup_segment_now(s, &moved, err, sizeof err) == 0,
                "dedup_segment_now: %s", err);
  return moved;
}

/* Each ID of [first, first + n): DEDUP_SEEN or, released at once,
 * DEDUP_NEW, as want says. */
static void expect_uuids(dedup_store_t *s, uint32_t scope, uint64_t first,
                         uint64_t n, int want) {
  char id[37];
  for (uint64_t i = first; i < first + n; i++) {
    uuid_of(id, i);
    int r = dedup_claim(s, scope, id, 36);
    ck_assert_msg(r == want, "ID %llu: %d, want %d", (unsigned long long)i, r,
                  want);
    if (r == DEDUP_NEW)
      dedup_release(s, scope, id, 36);
  }
}

static void expect_stats(dedup_store_t *s, size_t ids, size_t recent,
                         size_t segments) {
  dedup_stats_t st;
  dedup_stats(s, &st);
  ck_assert_uint_eq(st.ids, ids);
  ck_assert_uint_eq(st.recent_ids, recent);
  ck_assert_uint_eq(st.segments, segments);
}

/* One store writes segments of 1000, then 3000, then 200 IDs: each
 * segment holds exactly its own IDs, and none of an earlier, bigger
 * one's, before and after reopening. */
START_TEST(test_segments_growing_and_shrinking_exactly) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  fx_init(&f, HOUR_MS, 0);
  commit_uuids(f.s, f.scope, 0, 1000, now);
  ck_assert_uint_eq(segment_now(f.s), 1000);
  commit_uuids(f.s, f.scope, 1000, 3000, now);
  ck_assert_uint_eq(segment_now(f.s), 3000);
  commit_uuids(f.s, f.scope, 4000, 200, now);
  ck_assert_uint_eq(segment_now(f.s), 200);
  ck_assert_int_eq(disk_rows(f.path), 0);
  expect_stats(f.s, 4200, 0, 3);
  expect_uuids(f.s, f.scope, 0, 4200, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 4200, 2000, DEDUP_NEW);
  fx_reopen(&f, HOUR_MS, 0);
  expect_stats(f.s, 4200, 0, 3);
  expect_uuids(f.s, f.scope, 0, 4200, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 4200, 2000, DEDUP_NEW);
  fx_done(&f);
}
END_TEST

/* Two segments and the set: exact answers from all three; a reopened
 * store gives the same answers and loads only the marks no segment holds
 * into memory. */
START_TEST(test_segments_exact_and_reopen) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  fx_init(&f, HOUR_MS, 0);
  commit_uuids(f.s, f.scope, 0, 1000, now);
  ck_assert_uint_eq(segment_now(f.s), 1000);
  commit_uuids(f.s, f.scope, 1000, 1000, now);
  ck_assert_uint_eq(segment_now(f.s), 1000);
  ck_assert_uint_eq(segment_now(f.s), 0);
  ck_assert_int_eq(disk_rows(f.path), 0); /* each mark once: in a segment */
  commit_uuids(f.s, f.scope, 2000, 500, now);
  ck_assert_int_eq(disk_rows(f.path), 500);
  expect_stats(f.s, 2500, 500, 2);
  expect_uuids(f.s, f.scope, 0, 2500, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 2500, 1000, DEDUP_NEW);
  expect_uuids(f.s, scope_of(f.s, "other"), 0, 100, DEDUP_NEW);
  fx_reopen(&f, HOUR_MS, 0);
  expect_stats(f.s, 2500, 500, 2);
  expect_uuids(f.s, f.scope, 0, 2500, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 2500, 1000, DEDUP_NEW);
  fx_done(&f);
}
END_TEST

/* A segment whose newest mark is past retention goes whole; a newer one
 * stays; the marks log is pruned as before. */
START_TEST(test_segments_pruned_whole) {
  fx_t f = {0};
  int64_t now = dedup_now_ms(), removed = 0;
  char err[512] = "";
  fx_init(&f, HOUR_MS, 0);
  commit_uuids(f.s, f.scope, 0, 300, now - 2 * HOUR_MS);
  segment_now(f.s);
  commit_uuids(f.s, f.scope, 300, 300, now);
  segment_now(f.s);
  expect_stats(f.s, 600, 0, 2);
  ck_assert_msg(dedup_prune(f.s, now, &removed, err, sizeof err) == 0, "%s",
                err);
  expect_stats(f.s, 300, 0, 1);
  expect_uuids(f.s, f.scope, 0, 300, DEDUP_NEW);
  expect_uuids(f.s, f.scope, 300, 300, DEDUP_SEEN);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM segments"), 1);
  fx_done(&f);
}
END_TEST

/* Replays over segmented IDs: claimed again when handled before the
 * limit (and seen again once released), seen when handled at or after. */
START_TEST(test_segments_claim_again) {
  fx_t f = {0};
  int64_t t0 = dedup_now_ms() - 1000;
  char id[37];
  fx_init(&f, HOUR_MS, 0);
  commit_uuids(f.s, f.scope, 0, 10, t0);
  segment_now(f.s);
  uuid_of(id, 3);
  ck_assert_int_eq(dedup_claim_again_before(f.s, f.scope, id, 36, t0),
                   DEDUP_SEEN);
  ck_assert_int_eq(dedup_claim_again_before(f.s, f.scope, id, 36, t0 + 1),
                   DEDUP_NEW);
  dedup_release(f.s, f.scope, id, 36);
  ck_assert_int_eq(dedup_claim(f.s, f.scope, id, 36), DEDUP_SEEN);
  fx_done(&f);
}
END_TEST

static void add_mark_ref(dedup_writer_t *w, uint32_t scope, const char *id,
                         int64_t at_ms, void *ref) {
  dedup_mark_t m = {.scope = scope,
                    .event_id = id,
                    .event_id_len = strlen(id),
                    .topic = "order-completed",
                    .partition = 3,
                    .offset = 42,
                    .handled_at_ms = at_ms,
                    .outcome = DEDUP_OUTCOME_OK,
                    .claim_ref = ref};
  ck_assert_int_eq(dedup_writer_add(w, &m), 0);
}

/* Claims by reference beside segments: an ID a segment holds is seen,
 * with no reference and nothing left claimed in the set; a held claim
 * that another writer's mark committed stays in the set when the segment
 * thread writes that mark out and forgets its IDs, until the holder's
 * mark, and then goes with the next segment. */
START_TEST(test_segments_claim_ref) {
  fx_t f = {0};
  int64_t t0 = dedup_now_ms() - 1000;
  char id[37], held[37];
  void *ref = NULL, *ref2 = NULL;
  fx_init(&f, HOUR_MS, 0);
  commit_uuids(f.s, f.scope, 0, 10, t0);
  ck_assert_uint_eq(segment_now(f.s), 10);
  expect_stats(f.s, 10, 0, 1);
  uuid_of(id, 3);
  ck_assert_int_eq(dedup_claim_ref(f.s, f.scope, id, 36, ID_HASH_NONE, &ref),
                   DEDUP_SEEN);
  ck_assert_ptr_null(ref);
  expect_stats(f.s, 10, 0, 1);
  uuid_of(held, 30);
  ck_assert_int_eq(dedup_claim_ref(f.s, f.scope, held, 36, ID_HASH_NONE, &ref),
                   DEDUP_NEW);
  ck_assert_ptr_nonnull(ref);
  ck_assert_int_eq(dedup_claim_ref(f.s, f.scope, held, 36, ID_HASH_NONE, &ref2),
                   DEDUP_IN_FLIGHT);
  ck_assert_ptr_null(ref2);
  dedup_writer_t *other = writer_open(f.s), *w = writer_open(f.s);
  add_mark(other, f.scope, held, 36, t0);
  commit_ok(other);
  ck_assert_uint_eq(segment_now(f.s), 1);
  expect_stats(f.s, 12, 1, 2); /* in a segment and still in the set */
  add_mark_ref(w, f.scope, held, t0 + 500, ref);
  commit_ok(w);
  ck_assert_int_eq(claim_str(f.s, f.scope, held), DEDUP_SEEN);
  ck_assert_uint_eq(segment_now(f.s), 1);
  expect_stats(f.s, 12, 0, 3);
  ck_assert_int_eq(claim_str(f.s, f.scope, held), DEDUP_SEEN);
  dedup_writer_close(other);
  dedup_writer_close(w);
  fx_done(&f);
}
END_TEST

/* With a memory budget, the background thread moves committed IDs to
 * segments once the set is over it; every ID stays seen. */
START_TEST(test_segments_memory_budget) {
  fx_t f = {0};
  dedup_opts_t o = {.retention_ms = HOUR_MS, .memory_ids = 200};
  dedup_stats_t st = {0};
  char err[512] = "";
  int64_t now = dedup_now_ms();
  f.dir = tu_tempdir();
  ck_assert_int_ge(asprintf(&f.path, "%s/dedup.db", f.dir), 0);
  o.path = f.path;
  ck_assert_msg(dedup_open(&f.s, &o, err, sizeof err) == 0, "%s", err);
  f.scope = scope_of(f.s, "orders");
  for (uint64_t i = 0; i < 10; i++)
    commit_uuids(f.s, f.scope, i * 100, 100, now);
  /* Until the segment thread has forgotten the IDs of a segment it
   * wrote, they count twice (in the set and in the segment): the set can
   * be under its budget already while it goes on. */
  TU_WAIT_UNTIL((dedup_stats(f.s, &st), st.recent_ids <= 200 && st.ids == 1000),
                10000, "the set back under its budget, every ID once");
  ck_assert_uint_ge(st.segments, 1);
  expect_uuids(f.s, f.scope, 0, 1000, DEDUP_SEEN);
  fx_done(&f);
}
END_TEST

/* `khost dedup forget` and `prune` (dadm_) reach segmented IDs: after a
 * reopen a forgotten ID (and a forgotten scope) is new, an ID marked again
 * after the forget is seen again, and a segment older than the admin's
 * cutoff is dropped. */
START_TEST(test_segments_admin_forget_and_prune) {
  fx_t f = {0};
  int64_t now = dedup_now_ms(), removed = 0;
  uint32_t other;
  char err[512] = "", id[37];
  fx_init(&f, 0, 0);
  other = scope_of(f.s, "payments");
  commit_uuids(f.s, f.scope, 0, 100, now - 3 * HOUR_MS);
  segment_now(f.s);
  commit_uuids(f.s, f.scope, 100, 100, now);
  commit_uuids(f.s, other, 0, 100, now);
  segment_now(f.s);
  dadm_t *a = adm_open(f.path, 0);
  dadm_mark_t *m = NULL;
  size_t n = 0;
  uuid_of(id, 120); /* in a segment alone */
  ck_assert_int_eq(disk_rows(f.path), 0);
  ck_assert_msg(dadm_lookup(a, f.scope, id, 36, &m, &n, err, 512) == 0, "%s",
                err);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(m[0].topic, "order-completed");
  ck_assert_int_eq(m[0].partition, 3);
  ck_assert_int_eq(m[0].offset, 42);
  ck_assert_int_eq(m[0].handled_at_ms, now);
  ck_assert_int_eq(m[0].outcome, DEDUP_OUTCOME_OK);
  dadm_marks_free(m, n);
  uuid_of(id, 150);
  ck_assert_int_eq(dadm_forget_id(a, f.scope, id, 36, 1, &removed, err, 512),
                   0);
  ck_assert_int_eq(removed, 1); /* a dry run finds it */
  ck_assert_int_eq(dadm_forget_id(a, f.scope, id, 36, 0, &removed, err, 512),
                   0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(dadm_lookup(a, f.scope, id, 36, &m, &n, err, 512), 0);
  ck_assert_uint_eq(n, 0);
  uuid_of(id, 151);
  ck_assert_int_eq(dadm_forget_id(a, f.scope, id, 36, 0, &removed, err, 512),
                   0);
  ck_assert_int_eq(dadm_forget_scope(a, other, 0, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 100);
  ck_assert_int_eq(dadm_prune(a, now - HOUR_MS, &removed, err, 512), 0);
  ck_assert_int_eq(removed, 100); /* the older segment */
  dadm_close(a);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM segments"), 1);
  fx_reopen(&f, 0, 0);
  expect_uuids(f.s, f.scope, 0, 100, DEDUP_NEW);
  expect_uuids(f.s, f.scope, 150, 2, DEDUP_NEW);
  expect_uuids(f.s, f.scope, 100, 50, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 152, 48, DEDUP_SEEN);
  expect_uuids(f.s, other, 0, 100, DEDUP_NEW);
  /* Handled again after the forget, segmented again: seen. */
  commit_uuids(f.s, f.scope, 150, 1, now);
  segment_now(f.s);
  fx_reopen(&f, 0, 0);
  expect_uuids(f.s, f.scope, 150, 1, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 151, 1, DEDUP_NEW);
  fx_done(&f);
}
END_TEST

static void exec_sql(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s",
                sql, sqlite3_errmsg(db));
  sqlite3_close(db);
}

/* A segment that cannot be recorded (its last transaction fails) leaves
 * the log's rows where they are: no segment, every ID seen, also after a
 * reopen; once the fault clears, the next segment takes the rows. */
START_TEST(test_segments_failed_write_keeps_log) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  size_t moved = 1;
  char err[512] = "";
  fx_init(&f, HOUR_MS, 0);
  commit_uuids(f.s, f.scope, 0, 1000, now);
  exec_sql(f.path, "CREATE TRIGGER full BEFORE INSERT ON segmented"
                   " BEGIN SELECT RAISE(ABORT, 'disk full'); END");
  ck_assert_int_eq(dedup_segment_now(f.s, &moved, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "disk full") != NULL, "%s", err);
  ck_assert_uint_eq(moved, 0);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM segments"), 0);
  ck_assert_int_eq(disk_rows(f.path), 1000);
  expect_uuids(f.s, f.scope, 0, 1000, DEDUP_SEEN);
  fx_reopen(&f, HOUR_MS, 0);
  expect_stats(f.s, 1000, 1000, 0);
  expect_uuids(f.s, f.scope, 0, 1000, DEDUP_SEEN);
  exec_sql(f.path, "DROP TRIGGER full");
  ck_assert_uint_eq(segment_now(f.s), 1000);
  ck_assert_int_eq(disk_rows(f.path), 0);
  fx_reopen(&f, HOUR_MS, 0);
  expect_stats(f.s, 1000, 0, 1);
  expect_uuids(f.s, f.scope, 0, 1000, DEDUP_SEEN);
  fx_done(&f);
}
END_TEST

/* The schema of version 2, as khost wrote it before segments. */
static const char *const schema_v2_sql =
    "CREATE TABLE scopes(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);"
    "CREATE TABLE marks(seq INTEGER PRIMARY KEY, scope INTEGER NOT NULL,"
    " event_id BLOB NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " handled_at INTEGER NOT NULL, outcome INTEGER NOT NULL);"
    "CREATE INDEX marks_handled_at ON marks(handled_at);"
    "CREATE TABLE replays(seq INTEGER PRIMARY KEY, scope INTEGER NOT NULL,"
    " topic TEXT NOT NULL, partition INTEGER NOT NULL, first INTEGER NOT NULL,"
    " stop INTEGER NOT NULL, mode INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX replays_partition ON replays(scope, topic, partition);"
    "INSERT INTO scopes(id, name) VALUES(1, 'orders');"
    "PRAGMA user_version=2;";

/* A version 2 database keeps its history: its marks move to the log of
 * version 5 (through the table of version 3), every ID is seen, and once
 * segmented and its newest mark forgotten, a new mark does not reuse that seq
 * (it would be taken for one already in a segment and never be loaded again).
 */
START_TEST(test_open_migrates_schema_2) {
  fx_t f = {0};
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  char id[37], err[512] = "";
  int64_t now = dedup_now_ms(), removed = 0;
  f.dir = tu_tempdir();
  ck_assert_int_ge(asprintf(&f.path, "%s/dedup.db", f.dir), 0);
  ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, schema_v2_sql, NULL, NULL, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "INSERT INTO marks(scope, event_id,"
                                      " topic, partition, \"offset\","
                                      " handled_at, outcome)"
                                      " VALUES(1, ?1, 't', 0, 0, ?2, 0)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  for (uint64_t i = 0; i < 100; i++) {
    uuid_of(id, i);
    sqlite3_bind_blob(st, 1, id, 36, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  fx_open(&f, HOUR_MS, 0);
  ck_assert_int_eq(sql_int(f.path, "PRAGMA user_version"),
                   DEDUP_SCHEMA_VERSION);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM sqlite_master"
                                   " WHERE name = 'marks'"),
                   0);
  ck_assert_int_eq(disk_rows(f.path), 100);
  expect_uuids(f.s, f.scope, 0, 100, DEDUP_SEEN);
  segment_now(f.s);
  dadm_t *a = adm_open(f.path, 0);
  uuid_of(id, 99);
  ck_assert_int_eq(dadm_forget_id(a, f.scope, id, 36, 0, &removed, err, 512),
                   0);
  dadm_close(a);
  commit_uuids(f.s, f.scope, 1000, 1, now);
  fx_reopen(&f, HOUR_MS, 0);
  expect_uuids(f.s, f.scope, 1000, 1, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 0, 99, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 99, 1, DEDUP_NEW);
  fx_done(&f);
}
END_TEST

/* Four segments of one tier merge into one, in the background thread
 * too; the answers stay exact, also for an ID marked again in a later
 * segment (its newest time wins for claims again), and after a reopen. */
START_TEST(test_segments_merge) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  size_t merged = 0;
  char err[512] = "", id[37];
  fx_init(&f, HOUR_MS, 0);
  for (uint64_t i = 0; i < 4; i++) {
    commit_uuids(f.s, f.scope, i * 100, 100, now - 10000);
    if (i == 3)
      commit_uuids(f.s, f.scope, 0, 1, now);
    segment_now(f.s);
  }
  expect_stats(f.s, 401, 0, 4);
  ck_assert_msg(dedup_merge_now(f.s, &merged, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(merged, 1);
  expect_stats(f.s, 400, 0, 1);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM segments"), 1);
  expect_uuids(f.s, f.scope, 0, 400, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 400, 400, DEDUP_NEW);
  uuid_of(id, 0);
  ck_assert_int_eq(dedup_claim_again_before(f.s, f.scope, id, 36, now),
                   DEDUP_SEEN);
  fx_reopen(&f, HOUR_MS, 0);
  expect_stats(f.s, 400, 0, 1);
  expect_uuids(f.s, f.scope, 0, 400, DEDUP_SEEN);
  fx_done(&f);
}
END_TEST

/* Time is kept per block: a merge keeps the newest time an input had for
 * an ID, so that an ID marked again after an older segment was written is
 * not claimed again by a replay recorded before the newer mark. */
START_TEST(test_segments_merge_keeps_newest_time) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  size_t merged = 0;
  char err[512] = "", id[37];
  fx_init(&f, HOUR_MS, 0);
  for (uint64_t i = 0; i < 3; i++) {
    commit_uuids(f.s, f.scope, i, 1, now - 10000);
    segment_now(f.s);
  }
  commit_uuids(f.s, f.scope, 0, 1, now);
  segment_now(f.s);
  ck_assert_msg(dedup_merge_now(f.s, &merged, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(merged, 1);
  expect_stats(f.s, 3, 0, 1);
  uuid_of(id, 0);
  ck_assert_int_eq(dedup_claim_again_before(f.s, f.scope, id, 36, now),
                   DEDUP_SEEN);
  ck_assert_int_eq(dedup_claim_again_before(f.s, f.scope, id, 36, now + 1),
                   DEDUP_NEW);
  dedup_release(f.s, f.scope, id, 36);
  fx_done(&f);
}
END_TEST

/* No merge makes a segment of more IDs than merge_max_ids: four segments
 * of one tier stay four while their sum is over it, and merge once a
 * store allows that many; the answers stay exact either way. */
START_TEST(test_segments_merge_capped) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  size_t merged = 9;
  char err[512] = "";
  fx_init(&f, HOUR_MS, 0);
  dedup_close(f.s);
  dedup_opts_t o = {
      .path = f.path, .retention_ms = HOUR_MS, .merge_max_ids = 399};
  ck_assert_msg(dedup_open(&f.s, &o, err, sizeof err) == 0, "%s", err);
  for (uint64_t i = 0; i < 4; i++) {
    commit_uuids(f.s, f.scope, i * 100, 100, now);
    segment_now(f.s);
  }
  ck_assert_msg(dedup_merge_now(f.s, &merged, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(merged, 0);
  expect_stats(f.s, 400, 0, 4);
  expect_uuids(f.s, f.scope, 0, 400, DEDUP_SEEN);
  dedup_close(f.s);
  o.merge_max_ids = 400;
  ck_assert_msg(dedup_open(&f.s, &o, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(dedup_merge_now(f.s, &merged, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(merged, 1);
  expect_stats(f.s, 400, 0, 1);
  expect_uuids(f.s, f.scope, 0, 400, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 400, 100, DEDUP_NEW);
  fx_done(&f);
}
END_TEST

static size_t segments_loading(dedup_store_t *s) {
  dedup_stats_t st;
  dedup_stats(s, &st);
  return st.segments_loading;
}

/* A start loads no segment's filter or index: they load in the
 * background, and every claim meanwhile is answered exactly (seen for
 * each ID of the segments, new for others), then also once all are
 * loaded. A merge while they load (a segment the loader may hold) is as
 * exact. */
START_TEST(test_segments_load_in_background) {
  fx_t f = {0};
  int64_t now = dedup_now_ms();
  size_t merged = 0;
  char err[512] = "";
  fx_init(&f, HOUR_MS, 0);
  for (uint64_t i = 0; i < 4; i++) {
    commit_uuids(f.s, f.scope, i * 3000, 3000, now);
    segment_now(f.s);
  }
  commit_uuids(f.s, f.scope, 12000, 500, now);
  fx_reopen(&f, HOUR_MS, 0);
  expect_uuids(f.s, f.scope, 0, 12500, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 12500, 3000, DEDUP_NEW);
  TU_WAIT_UNTIL(segments_loading(f.s) == 0, 30000, "segments loaded");
  expect_stats(f.s, 12500, 500, 4);
  expect_uuids(f.s, f.scope, 0, 12500, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 12500, 3000, DEDUP_NEW);
  fx_reopen(&f, HOUR_MS, 0);
  ck_assert_msg(dedup_merge_now(f.s, &merged, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(merged, 1);
  expect_uuids(f.s, f.scope, 0, 12500, DEDUP_SEEN);
  expect_uuids(f.s, f.scope, 12500, 3000, DEDUP_NEW);
  TU_WAIT_UNTIL(segments_loading(f.s) == 0, 30000, "segments loaded");
  expect_stats(f.s, 12500, 500, 1);
  fx_done(&f);
}
END_TEST

/* The schema of version 3: one row per mark, segments beside them. */
static const char *const schema_v3_sql =
    "CREATE TABLE scopes(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);"
    "INSERT INTO scopes(id, name) VALUES(1, 'orders'), (2, 'payments');"
    "CREATE TABLE marks(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " scope INTEGER NOT NULL, event_id BLOB NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " handled_at INTEGER NOT NULL, outcome INTEGER NOT NULL);"
    "CREATE INDEX marks_handled_at ON marks(handled_at);"
    "CREATE TABLE replays(seq INTEGER PRIMARY KEY, scope INTEGER NOT NULL,"
    " topic TEXT NOT NULL, partition INTEGER NOT NULL, first INTEGER NOT NULL,"
    " stop INTEGER NOT NULL, mode INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE segmented(id INTEGER PRIMARY KEY CHECK(id = 1),"
    " last_seq INTEGER NOT NULL);"
    "CREATE TABLE forgotten(scope INTEGER NOT NULL, event_id BLOB,"
    " upto_seq INTEGER NOT NULL);"
    "PRAGMA user_version=3;";

#define V3_MARKS 45000 /* more than one conversion chunk (20000) */

/* Mark i of the version 3 file: scope 1, or 2 for every 7th run of 100;
 * a UUID, or a short ID for every 10th; outcome FAIL for every 13th. */
static void v3_mark(sqlite3_stmt *st, uint64_t i, int64_t now) {
  char id[37];
  if (i % 10 == 9)
    snprintf(id, sizeof id, "ev-%" PRIu64, i);
  else
    uuid_of(id, i);
  sqlite3_bind_int(st, 1, (i / 100) % 7 == 6 ? 2 : 1);
  sqlite3_bind_blob(st, 2, id, (int)strlen(id), SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, i % 2 ? "orders" : "refunds", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, (int)(i % 3));
  sqlite3_bind_int64(st, 5, (int64_t)i * 5);
  sqlite3_bind_int64(st, 6, now - 1000 + (int64_t)(i % 1000));
  sqlite3_bind_int(st, 7, i % 13 == 0);
}

static void write_v3(const char *path, int64_t now) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, schema_v3_sql, NULL, NULL, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "INSERT INTO marks(scope, event_id,"
                                      " topic, partition, \"offset\","
                                      " handled_at, outcome)"
                                      " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  for (uint64_t i = 0; i < V3_MARKS; i++) {
    v3_mark(st, i, now);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

/* A version 3 database (one row per mark) opens as the current version: every
 * mark is in the log, each ID is seen in its own scope only, and `khost dedup
 * lookup` finds a mark's topic, partition, offset, time and outcome. */
START_TEST(test_open_converts_schema_3) {
  fx_t f = {0};
  char id[37], err[512] = "";
  int64_t now = dedup_now_ms();
  f.dir = tu_tempdir();
  ck_assert_int_ge(asprintf(&f.path, "%s/dedup.db", f.dir), 0);
  write_v3(f.path, now);
  fx_open(&f, HOUR_MS, 0);
  ck_assert_int_eq(sql_int(f.path, "PRAGMA user_version"),
                   DEDUP_SCHEMA_VERSION);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM sqlite_master"
                                   " WHERE name = 'marks'"),
                   0);
  ck_assert_int_eq(disk_rows(f.path), V3_MARKS);
  uint32_t payments = scope_of(f.s, "payments");
  for (uint64_t i = 0; i < V3_MARKS; i++) {
    uint32_t mine = (i / 100) % 7 == 6 ? payments : f.scope;
    if (i % 10 == 9)
      snprintf(id, sizeof id, "ev-%" PRIu64, i);
    else
      uuid_of(id, i);
    ck_assert_int_eq(claim_str(f.s, mine, id), DEDUP_SEEN);
    ck_assert_int_eq(claim_str(f.s, mine == f.scope ? payments : f.scope, id),
                     DEDUP_NEW);
  }
  dadm_t *a = adm_open(f.path, 0);
  dadm_mark_t *v = NULL;
  size_t n = 0;
  uuid_of(id, 26);
  ck_assert_msg(dadm_lookup(a, f.scope, id, 36, &v, &n, err, sizeof err) == 0,
                "%s", err);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(v[0].topic, "refunds");
  ck_assert_int_eq(v[0].partition, 2);
  ck_assert_int_eq(v[0].offset, 130);
  ck_assert_int_eq(v[0].handled_at_ms, now - 1000 + 26);
  ck_assert_int_eq(v[0].outcome, DEDUP_OUTCOME_FAIL);
  dadm_marks_free(v, n);
  dadm_close(a);
  fx_done(&f);
}
END_TEST

/* The schema of version 5: the log of marks, and segments of keys only
 * (no table of sources) beside it. */
static const char *const schema_v5_sql =
    "CREATE TABLE scopes(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);"
    "INSERT INTO scopes(id, name) VALUES(1, 'orders');"
    "CREATE TABLE replays(seq INTEGER PRIMARY KEY, scope INTEGER NOT NULL,"
    " topic TEXT NOT NULL, partition INTEGER NOT NULL, first INTEGER NOT NULL,"
    " stop INTEGER NOT NULL, mode INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE segmented(id INTEGER PRIMARY KEY CHECK(id = 1),"
    " last_seq INTEGER NOT NULL);"
    "CREATE TABLE forgotten(scope INTEGER NOT NULL, event_id BLOB,"
    " upto_seq INTEGER NOT NULL);"
    "CREATE TABLE batches(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " scope INTEGER NOT NULL, first_at INTEGER NOT NULL,"
    " last_at INTEGER NOT NULL, n INTEGER NOT NULL, marks BLOB NOT NULL);"
    "CREATE INDEX batches_last_at ON batches(last_at);"
    "CREATE TABLE segments(id INTEGER PRIMARY KEY, tag INTEGER NOT NULL,"
    " ids INTEGER NOT NULL, oldest_ms INTEGER NOT NULL,"
    " newest_ms INTEGER NOT NULL, filter BLOB NOT NULL);"
    "CREATE TABLE segment_blocks(pos INTEGER PRIMARY KEY,"
    " first_key BLOB NOT NULL, newest_ms INTEGER NOT NULL,"
    " keys BLOB NOT NULL);"
    "PRAGMA user_version=5;";

#define V5_ROWS 3 /* rows of the log, V5_ROW marks each */
#define V5_ROW 400

/* Mark i of the version 5 file: a UUID, or a short ID for every 10th;
 * topic, partition, offset, time and outcome from i. */
static void v5_mark(dlog_mark_t *m, uint64_t i, char *id, int64_t now) {
  if (i % 10 == 9)
    snprintf(id, 37, "ev-%" PRIu64, i);
  else
    uuid_of(id, i);
  *m = (dlog_mark_t){.id = id,
                     .id_len = strlen(id),
                     .topic = i % 2 ? "orders" : "refunds",
                     .topic_len = i % 2 ? 6 : 7,
                     .partition = (int32_t)(i % 3),
                     .offset = (int64_t)i * 5,
                     .handled_at = now - 1000 + (int64_t)i,
                     .outcome = i % 13 == 0};
}

/* A segment of version 5 as it wrote them: packed keys (scope, form, ID)
 * in one block, the filter, no sources. Its keys are never read again. */
static void write_v5_segment(sqlite3 *db, int64_t tag, int64_t now) {
  sqlite3_stmt *st = NULL;
  dfilter_t *flt = dfilter_new(V5_ROW, 12);
  size_t flen = 0;
  uint8_t *fbytes = dfilter_encode(flt, &flen);
  const uint8_t key[] = {0, 0, 0, 1, 0, 'e', 'v', '-', 'x'};
  uint8_t keys[1 + sizeof key];
  keys[0] = sizeof key;
  memcpy(keys + 1, key, sizeof key);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "INSERT INTO segments VALUES(1, ?1, 1,"
                                      " ?2, ?2, ?3)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_int64(st, 1, tag);
  sqlite3_bind_int64(st, 2, now);
  sqlite3_bind_blob(st, 3, fbytes, (int)flen, SQLITE_STATIC);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "INSERT INTO segment_blocks VALUES("
                                      " 16777216, ?1, ?2, ?3)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_blob(st, 1, key, sizeof key, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now);
  sqlite3_bind_blob(st, 3, keys, sizeof keys, SQLITE_STATIC);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  g_free(fbytes);
  dfilter_free(flt);
}

/* V5_ROWS rows of the log; the first two are in a segment of version 5
 * (the segments' mark is the second's seq), which also holds ev-x, an ID
 * `khost dedup forget` removed from the log. */
static void write_v5(const char *path, int64_t now) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  GByteArray *blob = g_byte_array_new();
  dlog_mark_t m[V5_ROW];
  char ids[V5_ROW][37];
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db, schema_v5_sql, NULL, NULL, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "INSERT INTO batches(seq, scope,"
                                      " first_at, last_at, n, marks)"
                                      " VALUES(?1, 1, ?2, ?3, ?4, ?5)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  for (uint64_t r = 0; r < V5_ROWS; r++) {
    int64_t first, last;
    for (uint64_t i = 0; i < V5_ROW; i++)
      v5_mark(&m[i], r * V5_ROW + i, ids[i], now);
    dlog_pack(blob, m, V5_ROW, &first, &last);
    sqlite3_bind_int64(st, 1, (int64_t)(r + 1) * 10);
    sqlite3_bind_int64(st, 2, first);
    sqlite3_bind_int64(st, 3, last);
    sqlite3_bind_int64(st, 4, V5_ROW);
    sqlite3_bind_blob(st, 5, blob->data, (int)blob->len, SQLITE_STATIC);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  write_v5_segment(db, 20, now);
  ck_assert_int_eq(sqlite3_exec(db,
                                "INSERT INTO segmented VALUES(1, 20);"
                                "INSERT INTO forgotten VALUES(1, 'ev-x', 20)",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  g_byte_array_free(blob, TRUE);
}

/* A version 5 database opens as version 6: the log's rows its segments
 * held move into segments that keep their marks (and leave the log), the
 * segments of version 5 go, every ID is still seen, and `khost dedup
 * lookup` and `stats` find marks that now live in a segment alone. */
START_TEST(test_open_converts_schema_5) {
  fx_t f = {0};
  char id[37], err[512] = "";
  int64_t now = dedup_now_ms();
  dadm_mark_t *v = NULL;
  dadm_stats_t *st = NULL;
  size_t n = 0;
  f.dir = tu_tempdir();
  ck_assert_int_ge(asprintf(&f.path, "%s/dedup.db", f.dir), 0);
  write_v5(f.path, now);
  fx_open(&f, HOUR_MS, 0);
  ck_assert_int_eq(sql_int(f.path, "PRAGMA user_version"),
                   DEDUP_SCHEMA_VERSION);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM segments"
                                   " WHERE sources IS NULL"),
                   0);
  ck_assert_int_eq(sql_int(f.path, "SELECT count(*) FROM segments"), 1);
  ck_assert_int_eq(disk_rows(f.path), V5_ROW); /* the row after the mark */
  for (uint64_t i = 0; i < V5_ROWS * V5_ROW; i++) {
    dlog_mark_t m;
    v5_mark(&m, i, id, now);
    ck_assert_msg(claim_str(f.s, f.scope, id) == DEDUP_SEEN, "%s", id);
  }
  expect_uuids(f.s, f.scope, V5_ROWS * V5_ROW, 100, DEDUP_NEW);
  ck_assert_int_eq(claim_str(f.s, f.scope, "ev-x"), DEDUP_NEW);
  dedup_release(f.s, f.scope, "ev-x", 4);
  fx_reopen(&f, HOUR_MS, 0);
  expect_uuids(f.s, f.scope, 0, 9, DEDUP_SEEN);
  dadm_t *a = adm_open(f.path, 0);
  uuid_of(id, 26);
  ck_assert_msg(dadm_lookup(a, f.scope, id, 36, &v, &n, err, sizeof err) == 0,
                "%s", err);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(v[0].topic, "refunds");
  ck_assert_int_eq(v[0].partition, 2);
  ck_assert_int_eq(v[0].offset, 130);
  ck_assert_int_eq(v[0].handled_at_ms, now - 1000 + 26);
  ck_assert_int_eq(v[0].outcome, DEDUP_OUTCOME_FAIL);
  dadm_marks_free(v, n);
  ck_assert_int_eq(dadm_stats(a, &st, &n, err, sizeof err), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_int_eq(st[0].marks, V5_ROWS * V5_ROW);
  ck_assert_int_eq(st[0].oldest_ms, now - 1000);
  dadm_stats_free(st, n);
  dadm_close(a);
  fx_done(&f);
}
END_TEST

Suite *dedup_suite(void) {
  Suite *s = suite_create("dedup");
  TCase *tc = tcase_create("claims");
  tcase_add_test(tc, test_claim_new_then_in_flight);
  tcase_add_test(tc, test_claimed_is_not_seen_until_committed);
  tcase_add_test(tc, test_release_makes_new_again);
  tcase_add_test(tc, test_release_after_commit_keeps_seen);
  tcase_add_test(tc, test_unclaimed_mark_seen_after_commit);
  tcase_add_test(tc, test_mark_without_topic_or_id_bytes);
  tcase_add_test(tc, test_scopes_are_separate);
  tcase_add_test(tc, test_concurrent_claims_exactly_one_wins);
  tcase_add_test(tc, test_id_forms_are_exact);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("durability");
  tcase_add_test(tc, test_commit_survives_reopen);
  tcase_add_test(tc, test_uncommitted_marks_not_seen_after_reopen);
  tcase_add_test(tc, test_reopen_loads_only_marks_inside_retention);
  tcase_add_test(tc, test_two_writers_never_busy);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("retention");
  tcase_add_test(tc, test_prune_removes_old_keeps_new);
  tcase_add_test(tc, test_prune_keeps_id_marked_again);
  tcase_add_test(tc, test_prune_keeps_live_claim);
  tcase_add_test(tc, test_prune_frees_memory);
  tcase_add_test(tc, test_huge_id_memory_returned_on_release);
  tcase_add_test(tc, test_pruner_thread_runs_beside_writer);
  tcase_add_test(tc, test_close_stops_idle_pruner_promptly);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("failures");
  tcase_add_test(tc, test_busy_commit_keeps_marks);
  tcase_add_test(tc, test_permanent_commit_failure);
  tcase_add_test(tc, test_open_corrupt_file);
  tcase_add_test(tc, test_open_missing_directory);
  tcase_add_test(tc, test_open_newer_schema);
  tcase_add_test(tc, test_open_locked_database_says_and_gives_up);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("replays");
  tcase_add_test(tc, test_claim_again_seen_id);
  tcase_add_test(tc, test_claim_ref_mark_commits);
  tcase_add_test(tc, test_claim_again_new_or_claimed_id);
  tcase_add_test(tc, test_prune_keeps_reclaimed_id);
  tcase_add_test(tc, test_replay_ranges_newest_first);
  tcase_add_test(tc, test_replay_ranges_pruned_with_marks);
  tcase_add_test(tc, test_open_upgrades_schema_1);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("admin");
  tcase_add_test(tc, test_admin_open);
  tcase_add_test(tc, test_admin_stats_and_lookup);
  tcase_add_test(tc, test_admin_forget_and_prune);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("segments");
  tcase_add_test(tc, test_segments_exact_and_reopen);
  tcase_add_test(tc, test_segments_growing_and_shrinking_exactly);
  tcase_add_test(tc, test_segments_pruned_whole);
  tcase_add_test(tc, test_segments_claim_again);
  tcase_add_test(tc, test_segments_claim_ref);
  tcase_add_test(tc, test_segments_memory_budget);
  tcase_add_test(tc, test_segments_admin_forget_and_prune);
  tcase_add_test(tc, test_segments_merge);
  tcase_add_test(tc, test_segments_merge_keeps_newest_time);
  tcase_add_test(tc, test_segments_merge_capped);
  tcase_add_test(tc, test_segments_load_in_background);
  tcase_add_test(tc, test_segments_failed_write_keeps_log);
  tcase_add_test(tc, test_open_migrates_schema_2);
  tcase_add_test(tc, test_open_converts_schema_3);
  tcase_add_test(tc, test_open_converts_schema_5);
  tcase_add_test(tc, test_open_upgrades_schema_6);
  suite_add_tcase(s, tc);

  tc = tcase_create("set");
  tcase_add_test(tc, test_set_claim_release_commit);
  tcase_add_test(tc, test_set_carried_hash_finds_the_same_id);
  tcase_add_test(tc, test_set_batch_marks_every_stripe);
  tcase_add_test(tc, test_set_forget_keeps_claims_and_newer_marks);
  tcase_add_test(tc, test_set_held_claim_marked_by_reference);
  tcase_add_test(tc, test_set_held_claim_outlives_other_marks);
  tcase_add_test(tc, test_set_chunks_freed_when_keys_forgotten);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}
