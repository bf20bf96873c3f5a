/*
 * The store interface (src/store.h) as a contract: every case runs on
 * each implementation (loop index 0: the in-memory store of the unit
 * tests, 1: the SQLite store, 2: the PostgreSQL store on a throwaway
 * server of its own, skipped when the server binaries are missing), so
 * that the fake the flow core is tested with keeps the rules of the real
 * one, and a new store can be held to the same cases.
 */
#include <check.h>
#include <glib.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dedup.h"
#include "pgutil.h"
#include "store.h"
#include "store_pg.h"
#include "store_pg_admin.h"
#include "testutil.h"

enum { IMPL_MEM = 0, IMPL_SQLITE = 1, IMPL_PG = 2, IMPLS };

static store_t *s;
static dedup_store_t *raw; /* IMPL_SQLITE: a second handle, for set-ups */
static char *dir;
static pgu_t *pg; /* IMPL_PG: its server */
static uint32_t scope;

static void open_store(int impl) {
  char err[512];
  s = NULL;
  dir = NULL;
  pg = NULL;
  if (impl == IMPL_MEM) {
    s = store_mem_new();
  } else if (impl == IMPL_PG) {
    pg = pgu_start();
    ck_assert_ptr_nonnull(pg);
    store_pg_opts_t o = {.conninfo = pg->conninfo, .create = 1};
    ck_assert_msg(store_pg_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  } else {
    dir = tu_tempdir();
    ck_assert_ptr_nonnull(dir);
    char *path = g_strdup_printf("%s/dedup.db", dir);
    dedup_opts_t o = {.path = path, .retention_ms = 0};
    ck_assert_msg(store_sqlite_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
    g_free(path);
  }
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
}

static void close_store(void) {
  store_close(s);
  pgu_free(pg);
  if (dir) {
    tu_rm_rf(dir);
    free(dir);
  }
}

static int claim(const char *id, int mode, int64_t before) {
  store_key_t k = store_key(scope, id, strlen(id));
  return store_claim(s, scope, &k, mode, before);
}

static void release(const char *id) {
  store_key_t k = store_key(scope, id, strlen(id));
  store_release(s, scope, &k);
}

/* Mark ids (NULL-terminated) handled at handled_ms and commit them. */
static void commit_marks(const char **ids, int64_t handled_ms) {
  char err[512];
  store_batch_t *b;
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  for (int i = 0; ids[i]; i++) {
    store_mark_t m = {.scope = scope,
                      .event_id = ids[i],
                      .event_id_len = strlen(ids[i]),
                      .topic = "t",
                      .partition = 0,
                      .offset = i,
                      .handled_at_ms = handled_ms,
                      .outcome = STORE_OUTCOME_OK};
    ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  }
  ck_assert_uint_gt(store_batch_pending(b), 0);
  ck_assert_int_eq(store_batch_commit(b, NULL, err, sizeof(err)), 0);
  ck_assert_uint_eq(store_batch_pending(b), 0);
  store_batch_close(b);
}

START_TEST(test_scopes) {
  uint32_t again, other;
  open_store(_i);
  ck_assert_int_eq(store_scope(s, "orders", &again, NULL, 0), 0);
  ck_assert_int_eq(store_scope(s, "payments", &other, NULL, 0), 0);
  ck_assert_uint_eq(again, scope);
  ck_assert_uint_ne(other, scope);
  close_store();
}
END_TEST

START_TEST(test_claim_release) {
  open_store(_i);
  ck_assert_int_eq(claim("a", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("a", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  release("a");
  ck_assert_int_eq(claim("a", STORE_CLAIM, 0), STORE_NEW);
  close_store();
}
END_TEST

START_TEST(test_lookup_claims_nothing) {
  open_store(_i);
  ck_assert_int_eq(claim("a", STORE_LOOKUP, 0), STORE_NEW);
  ck_assert_int_eq(claim("a", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("a", STORE_LOOKUP, 0), STORE_IN_FLIGHT);
  close_store();
}
END_TEST

START_TEST(test_commit_makes_seen) {
  const char *ids[] = {"a", "b", NULL};
  open_store(_i);
  ck_assert_int_eq(claim("a", STORE_CLAIM, 0), STORE_NEW);
  commit_marks(ids, 1000); /* "b" was never claimed: seen too */
  ck_assert_int_eq(claim("a", STORE_CLAIM, 0), STORE_SEEN);
  ck_assert_int_eq(claim("b", STORE_CLAIM, 0), STORE_SEEN);
  release("a"); /* a committed ID stays seen */
  ck_assert_int_eq(claim("a", STORE_LOOKUP, 0), STORE_SEEN);
  close_store();
}
END_TEST

START_TEST(test_discard_writes_nothing) {
  char err[512];
  store_batch_t *b;
  open_store(_i);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  store_mark_t m = {.scope = scope,
                    .event_id = "gone",
                    .event_id_len = 4,
                    .topic = "t",
                    .handled_at_ms = 1000};
  ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  store_batch_discard(b);
  ck_assert_uint_eq(store_batch_pending(b), 0);
  ck_assert_int_eq(store_batch_commit(b, NULL, err, sizeof(err)), 0);
  store_batch_close(b);
  ck_assert_int_eq(claim("gone", STORE_LOOKUP, 0), STORE_NEW);
  close_store();
}
END_TEST

/* IDs that look alike stay apart: a UUID, the same in capitals, its 16
 * bytes, and those bytes after a byte 1 (the PostgreSQL store's key of
 * the UUID). */
START_TEST(test_uuid_ids_exact) {
  static const char uuid[] = "0b5e9ad2-6c1f-4b1e-9a57-3f0c8e2d7a10";
  static const char upper[] = "0B5E9AD2-6C1F-4B1E-9A57-3F0C8E2D7A10";
  static const char bytes[] = "\x01\x0b\x5e\x9a\xd2\x6c\x1f\x4b\x1e\x9a\x57"
                              "\x3f\x0c\x8e\x2d\x7a\x10";
  const char *ids[] = {uuid, NULL};
  open_store(_i);
  ck_assert_int_eq(claim(uuid, STORE_CLAIM, 0), STORE_NEW);
  commit_marks(ids, 1000);
  ck_assert_int_eq(claim(uuid, STORE_CLAIM, 0), STORE_SEEN);
  ck_assert_int_eq(claim(upper, STORE_LOOKUP, 0), STORE_NEW);
  store_key_t plain = store_key(scope, bytes + 1, 16);
  store_key_t tagged = store_key(scope, bytes, 17);
  ck_assert_int_eq(store_claim(s, scope, &plain, STORE_LOOKUP, 0), STORE_NEW);
  ck_assert_int_eq(store_claim(s, scope, &tagged, STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim(uuid, STORE_LOOKUP, 0), STORE_SEEN);
  store_release(s, scope, &tagged);
  close_store();
}
END_TEST

/* --dedup reprocess: a seen ID handled before the replay is claimed once
 * more; a second re-claim waits; its release leaves it seen. */
START_TEST(test_claim_again) {
  const char *ids[] = {"old", NULL};
  open_store(_i);
  commit_marks(ids, 1000);
  ck_assert_int_eq(claim("old", STORE_CLAIM_AGAIN, 500), STORE_SEEN);
  ck_assert_int_eq(claim("old", STORE_CLAIM_AGAIN, 2000), STORE_NEW);
  ck_assert_int_eq(claim("old", STORE_CLAIM_AGAIN, 2000), STORE_SEEN);
  ck_assert_int_eq(claim("old", STORE_CLAIM, 0), STORE_SEEN);
  release("old");
  ck_assert_int_eq(claim("old", STORE_LOOKUP, 0), STORE_SEEN);
  ck_assert_int_eq(claim("new", STORE_CLAIM_AGAIN, 2000), STORE_NEW);
  ck_assert_int_eq(claim("new", STORE_CLAIM_AGAIN, 2000), STORE_IN_FLIGHT);
  close_store();
}
END_TEST

START_TEST(test_attempts) {
  char err[512];
  store_batch_t *b;
  uint32_t n = 99;
  store_attempt_t a = {.scope = scope,
                       .event_id = "crashy",
                       .event_id_len = 6,
                       .topic = "t",
                       .partition = 0,
                       .offset = 7};
  open_store(_i);
  a.scope = scope;
  /* A clean start with nothing recorded: calls need no record. */
  ck_assert_int_eq(store_attempts(s, &a, 10, &n), 0);
  ck_assert_uint_eq(n, 0);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  a.attempts = 2;
  ck_assert_int_eq(store_attempts_set(b, &a, err, sizeof(err)), 0);
  ck_assert_int_eq(store_attempts(s, &a, 10, &n), 1);
  ck_assert_uint_eq(n, 2);
  a.attempts = 0;
  ck_assert_int_eq(store_attempts_set(b, &a, err, sizeof(err)), 0);
  ck_assert_int_eq(store_attempts(s, &a, 10, &n), 0);
  ck_assert_uint_eq(n, 0);
  store_batch_close(b);
  close_store();
}
END_TEST

/* Record two overlapping replays of partition 3: through the in-memory
 * store's own call, or through the SQLite file's (dedup_replay_add(), as
 * `khost replay` does; the store is reopened around it). */
static void add_two_ranges(int impl) {
  char err[512];
  store_range_t older = {0, 10, STORE_REPLAY_SKIP, 1000},
                newer = {5, 20, STORE_REPLAY_REPROCESS, 2000};
  if (impl == IMPL_MEM) {
    store_mem_add_range(s, scope, "t", 3, &older);
    store_mem_add_range(s, scope, "t", 3, &newer);
    return;
  }
  if (impl == IMPL_PG) {
    ck_assert_int_eq(
        store_pg_add_range(s, scope, "t", 3, &older, err, sizeof(err)), 0);
    ck_assert_int_eq(
        store_pg_add_range(s, scope, "t", 3, &newer, err, sizeof(err)), 0);
    return;
  }
  char *path = g_strdup_printf("%s/dedup.db", dir);
  dedup_opts_t o = {.path = path};
  store_close(s);
  ck_assert_int_eq(dedup_open(&raw, &o, err, sizeof(err)), 0);
  ck_assert_int_eq(dedup_replay_add(raw, scope, "t", 3, 0, 10,
                                    DEDUP_REPLAY_SKIP, err, sizeof(err)),
                   0);
  ck_assert_int_eq(dedup_replay_add(raw, scope, "t", 3, 5, 20,
                                    DEDUP_REPLAY_REPROCESS, err, sizeof(err)),
                   0);
  dedup_close(raw);
  ck_assert_int_eq(store_sqlite_open(&s, &o, err, sizeof(err)), 0);
  g_free(path);
}

START_TEST(test_replay_ranges_newest_first) {
  char err[512];
  store_range_t *r = NULL;
  size_t n = 0;
  open_store(_i);
  add_two_ranges(_i);
  ck_assert_int_eq(
      store_replay_ranges(s, scope, "t", 3, &r, &n, err, sizeof(err)), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_int_eq(r[0].from, 5);
  ck_assert_int_eq(r[0].mode, STORE_REPLAY_REPROCESS);
  ck_assert_int_eq(r[1].to, 10);
  ck_assert_int_eq(r[1].mode, STORE_REPLAY_SKIP);
  free(r);
  ck_assert_int_eq(
      store_replay_ranges(s, scope, "t", 4, &r, &n, err, sizeof(err)), 0);
  ck_assert_uint_eq(n, 0);
  free(r);
  close_store();
}
END_TEST

/* ------------------------------------------------------------------------
 * The PostgreSQL store shared by two hosts (two handles on one server). */

static store_t *open_pg(int64_t lease_ms) {
  char err[512];
  store_t *x = NULL;
  store_pg_opts_t o = {.conninfo = pg->conninfo, .lease_ms = lease_ms};
  ck_assert_msg(store_pg_open(&x, &o, err, sizeof(err)) == 0, "%s", err);
  return x;
}

static int claim_on(store_t *x, const char *id) {
  store_key_t k = store_key(scope, id, strlen(id));
  return store_claim(x, scope, &k, STORE_CLAIM, 0);
}

/* A claim of one host is in flight for the other until its mark
 * commits; then it is seen there. */
START_TEST(test_pg_two_hosts) {
  const char *ids[] = {"x", NULL};
  open_store(IMPL_PG);
  store_t *other = open_pg(0);
  ck_assert_int_eq(claim("x", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim_on(other, "x"), STORE_IN_FLIGHT);
  commit_marks(ids, 1000);
  ck_assert_int_eq(claim_on(other, "x"), STORE_SEEN);
  store_close(other);
  close_store();
}
END_TEST

/* A claim whose owner stopped renewing it (a host that died) is taken
 * over once its lease ends; a live owner's claim is renewed and holds
 * past its lease. */
START_TEST(test_pg_lease) {
  open_store(IMPL_PG);
  store_t *live = open_pg(1000);
  PGconn *c = PQconnectdb(pg->conninfo);
  char *sql = g_strdup_printf(
      "WITH h AS (INSERT INTO khost_hosts (name, lease_until) VALUES"
      " ('gone-host', (extract(epoch from clock_timestamp()) * 1000)::bigint"
      " + 1000) RETURNING host) INSERT INTO khost_marks SELECT %u,"
      " '\\x00'::bytea || 'dead', 0, '', 0, 0, 2, host, 0 FROM h",
      scope);
  PGresult *r = PQexec(c, sql);
  ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  ck_assert_int_eq(claim("dead", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  ck_assert_int_eq(claim_on(live, "held"), STORE_NEW);
  int64_t deadline = tu_mono_ms() + 10000, taken = 0;
  while (!taken && tu_mono_ms() < deadline) {
    taken = claim("dead", STORE_CLAIM, 0) == STORE_NEW;
    if (!taken)
      g_usleep(50 * 1000);
  }
  ck_assert_msg(taken, "the dead host's claim was never taken over");
  /* Three leases long, the live host's claim holds. */
  deadline = tu_mono_ms() + 3000;
  while (tu_mono_ms() < deadline) {
    ck_assert_int_eq(claim("held", STORE_CLAIM, 0), STORE_IN_FLIGHT);
    g_usleep(100 * 1000);
  }
  /* Its clean stop gives the claim back at once. */
  store_close(live);
  ck_assert_int_eq(claim("held", STORE_CLAIM, 0), STORE_NEW);
  PQfinish(c);
  g_free(sql);
  close_store();
}
END_TEST

static void commit(store_batch_t *b);

/* ------------------------------------------------------------ pruning */

static int64_t pg_count(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
                PQresultErrorMessage(r));
  int64_t n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return n;
}

static void pg_do(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK ||
                    PQresultStatus(r) == PGRES_TUPLES_OK,
                "%s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
}

/* n marks handled at 1 ms (long past any retention), then "last" at 2. */
static void old_marks(PGconn *c, int n) {
  char *sql = g_strdup_printf(
      "INSERT INTO khost_marks SELECT %u, '\\x00'::bytea ||"
      " convert_to('old-' || g, 'UTF8'),"
      " 1, 't', 0, g, 0, NULL, 1 FROM generate_series(1, %d) g;"
      "INSERT INTO khost_marks VALUES (%u, '\\x00'::bytea || 'last', 2, 't',"
      " 0, 0, 0, NULL, 2)",
      scope, n, scope);
  pg_do(c, sql);
  g_free(sql);
}

static void *prune_main(void *arg) {
  char err[512];
  int64_t *removed = arg;
  if (store_prune(s, g_get_real_time() / 1000, removed, err, sizeof(err)))
    *removed = -1;
  return NULL;
}

/* Pruning deletes in small transactions and holds no lock of the store:
 * while one old mark is locked by another transaction (the prune waits
 * on it), the marks before it are already gone for everyone, and claims
 * and commits go on. */
START_TEST(test_pg_prune_small_transactions) {
  const char *ids[] = {"fresh", NULL};
  char err[512];
  int64_t removed = 0;
  pthread_t t;
  dir = NULL;
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  store_pg_opts_t o = {
      .conninfo = pg->conninfo, .create = 1, .retention_ms = 60000};
  ck_assert_msg(store_pg_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
  PGconn *c = PQconnectdb(pg->conninfo), *lock = PQconnectdb(pg->conninfo);
  old_marks(c, 20000);
  pg_do(lock, "BEGIN");
  pg_do(lock, "SELECT 1 FROM khost_marks WHERE id = '\\x00'::bytea || "
              "'last' FOR UPDATE");
  ck_assert_int_eq(pthread_create(&t, NULL, prune_main, &removed), 0);
  int64_t left = 20001, deadline = tu_mono_ms() + 20000;
  while (left == 20001 && tu_mono_ms() < deadline) {
    left = pg_count(c, "SELECT count(*) FROM khost_marks");
    if (left == 20001)
      g_usleep(20 * 1000);
  }
  ck_assert_msg(left < 20001, "no chunk of the prune committed on its own");
  ck_assert_int_eq(claim("fresh", STORE_CLAIM, 0), STORE_NEW);
  commit_marks(ids, g_get_real_time() / 1000);
  ck_assert_int_eq(claim("fresh", STORE_LOOKUP, 0), STORE_SEEN);
  pg_do(lock, "COMMIT");
  pthread_join(t, NULL);
  ck_assert_int_eq(removed, 20001);
  ck_assert_int_eq(pg_count(c, "SELECT count(*) FROM khost_marks"), 1);
  PQfinish(lock);
  PQfinish(c);
  close_store();
}
END_TEST

/* The pruner thread prunes on its own, every prune_interval_ms. */
START_TEST(test_pg_pruner_thread) {
  char err[512];
  store_stats_t st = {0};
  dir = NULL;
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  store_pg_opts_t o = {.conninfo = pg->conninfo,
                       .create = 1,
                       .retention_ms = 60000,
                       .prune_interval_ms = 100};
  ck_assert_msg(store_pg_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
  PGconn *c = PQconnectdb(pg->conninfo);
  old_marks(c, 5000);
  int64_t deadline = tu_mono_ms() + 20000;
  while (st.pruned < 5001 && tu_mono_ms() < deadline) {
    store_stats(s, &st);
    if (st.pruned < 5001)
      g_usleep(20 * 1000);
  }
  ck_assert_int_eq(st.pruned, 5001);
  ck_assert_int_eq(pg_count(c, "SELECT count(*) FROM khost_marks"), 0);
  PQfinish(c);
  close_store();
}
END_TEST

/* Plugin state and stored offsets committed by one host are read by the
 * other. */
START_TEST(test_pg_state_shared) {
  char err[512];
  store_batch_t *b;
  void *v = NULL;
  size_t n = 0;
  int64_t next = -1;
  open_store(IMPL_PG);
  store_t *other = open_pg(0);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  ck_assert_int_eq(store_batch_put_state(b, scope, "count", 5, "7", 1), 0);
  ck_assert_int_eq(store_batch_set_offset(b, scope, "t", 3, 99), 0);
  commit(b);
  ck_assert_int_eq(
      store_state_get(other, scope, "count", 5, &v, &n, err, sizeof(err)), 1);
  ck_assert_uint_eq(n, 1);
  ck_assert_int_eq(memcmp(v, "7", 1), 0);
  ck_assert_int_eq(
      store_offset_get(other, scope, "t", 3, &next, err, sizeof(err)), 1);
  ck_assert_int_eq(next, 99);
  free(v);
  store_batch_close(b);
  store_close(other);
  close_store();
}
END_TEST

/* A batch of 500 records costs a few statements, not one per record:
 * claims taken ahead in one, marks committed in one; the answers are
 * those of claims one by one (a marked ID seen, another host's live
 * claim in flight, the rest new, recorded attempts found). */
START_TEST(test_pg_batch_round_trips) {
  enum { N = 500 };
  char ids[N][16], err[512];
  const void *ptr[N];
  size_t lens[N];
  const char *marked[] = {"id-0", NULL};
  store_batch_t *b;
  open_store(IMPL_PG);
  store_t *other = open_pg(0);
  commit_marks(marked, 1000);
  ck_assert_int_eq(claim_on(other, "id-1"), STORE_NEW);
  store_attempt_t at = {.scope = scope,
                        .event_id = "id-2",
                        .event_id_len = 4,
                        .topic = "t",
                        .attempts = 2};
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  ck_assert_int_eq(store_attempts_set(b, &at, err, sizeof(err)), 0);
  for (int i = 0; i < N; i++) {
    snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
    ptr[i] = ids[i];
    lens[i] = strlen(ids[i]);
  }
  int64_t before = store_pg_round_trips(s), offs[N];
  for (int i = 0; i < N; i++)
    offs[i] = i;
  store_claim_ahead(s, scope, "t", 0, ptr, lens, offs, N);
  for (int i = 0; i < N; i++) {
    int want = i == 0 ? STORE_SEEN : i == 1 ? STORE_IN_FLIGHT : STORE_NEW;
    ck_assert_int_eq(claim(ids[i], STORE_CLAIM, 0), want);
    if (want != STORE_NEW)
      continue;
    uint32_t n = 99;
    at.event_id = ids[i];
    at.event_id_len = lens[i];
    store_attempts(s, &at, 10, &n);
    ck_assert_uint_eq(n, i == 2 ? 2 : 0);
    store_mark_t m = {.scope = scope,
                      .event_id = ids[i],
                      .event_id_len = lens[i],
                      .topic = "t",
                      .offset = i,
                      .handled_at_ms = 2000};
    ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  }
  commit(b);
  int64_t trips = store_pg_round_trips(s) - before;
  /* Ahead: 2; the in-flight one: 1; BEGIN, marks, COMMIT: 3. */
  ck_assert_msg(trips <= 8, "%lld statements for %d records", (long long)trips,
                N);
  for (int i = 2; i < N; i += 97)
    ck_assert_int_eq(claim_on(other, ids[i]), STORE_SEEN);
  at.event_id = "id-2";
  at.event_id_len = 4;
  uint32_t n = 99;
  store_attempts(other, &at, 10, &n);
  ck_assert_uint_eq(n, 0); /* the mark cleared the recorded attempts */
  store_batch_close(b);
  store_close(other);
  close_store();
}
END_TEST

/* The outcome and offset `khost dedup lookup` shows for id on s. */
static int looked_up(const char *id, int64_t *offset) {
  char err[512];
  dadm_mark_t *v = NULL;
  size_t n = 0;
  ck_assert_msg(
      store_pg_lookup(s, scope, id, strlen(id), &v, &n, err, sizeof(err)) == 0,
      "%s", err);
  int outcome = n == 1 ? v[0].outcome : -1;
  *offset = n == 1 ? v[0].offset : -1;
  dadm_marks_free(v, n);
  return outcome;
}

/* Marks by position: a host claims p-0..p-9 ahead at offsets 100..109
 * and commits a batch whose next offset is 106, with plain outcomes but
 * one failed (p-3) and one handled out of order past that position
 * (p-7, per-key lanes). Only the failed one and those at or past 106
 * are written to their rows; the others are marks because their epoch's
 * position passed them. The host then stops without a word (its row of
 * khost_hosts gone, as after a kill once the lease ran out): another
 * host sees p-0..p-7 marked, with their outcomes, and takes the claims
 * of p-8 and p-9, never handled, at once. A claim below the position
 * already committed (the partition's offsets went back) is not a mark
 * before it is handled. */
START_TEST(test_pg_marks_by_position) {
  char err[512], ids[10][16];
  const void *ptr[10];
  size_t lens[10];
  int64_t offs[10], off;
  store_batch_t *b;
  open_store(IMPL_PG);
  store_t *h = open_pg(0);
  for (int i = 0; i < 10; i++) {
    snprintf(ids[i], sizeof(ids[i]), "p-%d", i);
    ptr[i] = ids[i];
    lens[i] = strlen(ids[i]);
    offs[i] = 100 + i;
  }
  store_claim_ahead(h, scope, "t", 0, ptr, lens, offs, 10);
  ck_assert_int_eq(store_batch_open(h, &b, err, sizeof(err)), 0);
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(claim_on(h, ids[i]), STORE_NEW);
    store_mark_t m = {.scope = scope,
                      .event_id = ids[i],
                      .event_id_len = lens[i],
                      .topic = "t",
                      .offset = offs[i],
                      .handled_at_ms = 2000,
                      .outcome =
                          i == 3 ? STORE_OUTCOME_FAIL : STORE_OUTCOME_OK};
    ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  }
  ck_assert_int_eq(store_batch_set_offset(b, scope, "t", 0, 106), 0);
  commit(b);
  store_batch_close(b);
  PGconn *c = PQconnectdb(pg->conninfo);
  ck_assert_int_eq(
      pg_count(c, "SELECT count(*) FROM khost_marks WHERE outcome <> 2"), 3);
  ck_assert_int_eq(pg_count(c, "SELECT count(*) FROM khost_marks m WHERE"
                               " outcome = 2 AND EXISTS (SELECT 1 FROM"
                               " khost_epochs e WHERE e.epoch = m.epoch AND"
                               " e.through > m.off)"),
                   5);
  const void *back[] = {"r-0"};
  size_t back_len[] = {3};
  int64_t back_off[] = {10};
  store_claim_ahead(h, scope, "t", 0, back, back_len, back_off, 1);
  store_pg_ahead_wait(h); /* taken by h's claimer */
  ck_assert_int_eq(claim("r-0", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  for (int i = 0; i < 8; i++)
    ck_assert_int_eq(claim(ids[i], STORE_CLAIM, 0), STORE_SEEN);
  store_close(h);
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(claim(ids[i], STORE_CLAIM, 0), STORE_SEEN);
    ck_assert_int_eq(looked_up(ids[i], &off),
                     i == 3 ? DEDUP_OUTCOME_FAIL : DEDUP_OUTCOME_OK);
    ck_assert_int_eq(off, offs[i]);
  }
  ck_assert_int_eq(claim("p-8", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("p-9", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("r-0", STORE_CLAIM, 0), STORE_NEW);
  PQfinish(c);
  close_store();
}
END_TEST

/* A partition dropped (revoked): the claims taken ahead of its records
 * and never asked for go back at once, to be taken by the next owner
 * without waiting for the renewer (a lease of a minute here); the claim
 * of a record handed out stays with its host until its batch ends. */
START_TEST(test_pg_dropped_partition_given_back) {
  const void *ptr[] = {"d-0", "d-1", "d-2"};
  size_t lens[] = {3, 3, 3};
  int64_t offs[] = {7, 8, 9};
  open_store(IMPL_PG);
  store_t *h = open_pg(60000);
  store_claim_ahead(h, scope, "t", 0, ptr, lens, offs, 3);
  ck_assert_int_eq(claim_on(h, "d-0"), STORE_NEW);
  ck_assert_int_eq(claim("d-1", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  store_part_dropped(h, scope, "t", 0);
  ck_assert_int_eq(claim("d-0", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  ck_assert_int_eq(claim("d-1", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("d-2", STORE_CLAIM, 0), STORE_NEW);
  store_close(h);
  close_store();
}
END_TEST

/* Claims taken ahead that are never asked for (the partition went to
 * another member) are given back by the renewer: the other host gets
 * them within a few leases. */
START_TEST(test_pg_ahead_given_back) {
  const void *ptr[] = {"a1", "a2"};
  size_t lens[] = {2, 2};
  int64_t offs[] = {0, 1};
  open_store(IMPL_PG);
  store_t *live = open_pg(300);
  store_claim_ahead(live, scope, "t", 0, ptr, lens, offs, 2);
  store_pg_ahead_wait(live); /* taken by live's claimer */
  ck_assert_int_eq(claim("a1", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  int64_t deadline = tu_mono_ms() + 10000;
  int taken = 0;
  while (!taken && tu_mono_ms() < deadline) {
    taken = claim("a1", STORE_CLAIM, 0) == STORE_NEW;
    if (!taken)
      g_usleep(50 * 1000);
  }
  ck_assert_msg(taken, "a claim taken ahead was never given back");
  /* The live host now asks for it one by one: in flight. */
  ck_assert_int_eq(claim_on(live, "a1"), STORE_IN_FLIGHT);
  store_close(live);
  close_store();
}
END_TEST

/* Mark id on s, then lock its row in a transaction of c: a claim
 * statement that meets the row waits until c's transaction ends. */
static void lock_mark(PGconn *c, const char *id) {
  const char *ids[] = {id, NULL};
  char sql[256];
  GString *hex = g_string_new("\\x00"); /* pg_key() of an ID not a UUID */
  commit_marks(ids, 1000);
  for (const char *i = id; *i; i++)
    g_string_append_printf(hex, "%02x", (unsigned char)*i);
  snprintf(sql, sizeof(sql),
           "SELECT 1 FROM khost_marks WHERE id = '%s'::bytea FOR UPDATE",
           hex->str);
  pg_do(c, "BEGIN");
  pg_do(c, sql);
  g_string_free(hex, TRUE);
}

/* Backends waiting for a row lock (on their own connection: a
 * transaction sees pg_stat_activity as it was at its start). */
static int64_t lock_waits(PGconn *c) {
  return pg_count(c, "SELECT count(*) FROM pg_stat_activity WHERE"
                     " wait_event_type = 'Lock'");
}

typedef struct in_air {
  PGconn *lock, *watch;
  int released; /* atomic: the lock's transaction ended */
} in_air_t;

/* Once the claim statement waits for the locked row, the lock goes. */
static void *release_when_waiting(void *arg) {
  in_air_t *a = arg;
  TU_WAIT_UNTIL(lock_waits(a->watch) == 1, 10000,
                "the claim statement waiting for the locked row");
  __atomic_store_n(&a->released, 1, __ATOMIC_SEQ_CST);
  pg_do(a->lock, "COMMIT");
  return NULL;
}

/* store_claim_ahead() only queues its IDs: it returns while the claim
 * statement waits for a row another transaction holds. A claim of an ID
 * of that window then waits for the window's answer and answers from
 * it, with no statement of its own: it returns only after the row was
 * released, new (w-0) or seen (w-5, marked). */
START_TEST(test_pg_claim_waits_for_window) {
  char ids[10][16];
  const void *ptr[10];
  size_t lens[10];
  int64_t offs[10];
  pthread_t t;
  open_store(IMPL_PG);
  store_t *h = open_pg(60000);
  in_air_t a = {PQconnectdb(pg->conninfo), PQconnectdb(pg->conninfo), 0};
  lock_mark(a.lock, "w-5");
  for (int i = 0; i < 10; i++) {
    snprintf(ids[i], sizeof(ids[i]), "w-%d", i);
    ptr[i] = ids[i];
    lens[i] = strlen(ids[i]);
    offs[i] = i;
  }
  int64_t before = store_pg_round_trips(h);
  store_claim_ahead(h, scope, "t", 0, ptr, lens, offs, 10);
  ck_assert_int_eq(pthread_create(&t, NULL, release_when_waiting, &a), 0);
  ck_assert_int_eq(claim_on(h, "w-0"), STORE_NEW);
  ck_assert_int_eq(__atomic_load_n(&a.released, __ATOMIC_SEQ_CST), 1);
  pthread_join(t, NULL);
  ck_assert_int_eq(claim_on(h, "w-5"), STORE_SEEN);
  for (int i = 1; i < 10; i++)
    if (i != 5)
      ck_assert_int_eq(claim_on(h, ids[i]), STORE_NEW);
  /* The epoch, the claims, the marked ones among those not taken. */
  ck_assert_int_eq(store_pg_round_trips(h) - before, 3);
  ck_assert_int_eq(claim("w-1", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  PQfinish(a.lock);
  PQfinish(a.watch);
  store_close(h);
  close_store();
}
END_TEST

/* A partition dropped while the claims of its records are on their way
 * (the statement waits for a locked row) and more of them are queued
 * behind: store_part_dropped() does not wait for them; the claims the
 * statement takes once the row is released are given back, the queued
 * ones never taken, and another host takes them all at once. The claims
 * of another partition's records, queued behind, are taken as asked. */
START_TEST(test_pg_dropped_window_in_air) {
  const void *first[] = {"y-0", "y-1", "y-5", "y-6"},
             *second[] = {"y-7", "y-8"}, *other[] = {"z-0"};
  size_t lens[] = {3, 3, 3, 3};
  int64_t offs[] = {0, 1, 2, 3}, offs2[] = {4, 5}, offs3[] = {0};
  open_store(IMPL_PG);
  store_t *h = open_pg(60000);
  in_air_t a = {PQconnectdb(pg->conninfo), PQconnectdb(pg->conninfo), 0};
  lock_mark(a.lock, "y-5");
  store_claim_ahead(h, scope, "t", 0, first, lens, offs, 4);
  TU_WAIT_UNTIL(lock_waits(a.watch) == 1, 10000,
                "the claim statement waiting for the locked row");
  store_claim_ahead(h, scope, "t", 0, second, lens, offs2, 2);
  store_claim_ahead(h, scope, "t", 1, other, lens, offs3, 1);
  store_part_dropped(h, scope, "t", 0);
  ck_assert_int_eq(lock_waits(a.watch), 1); /* still on its way */
  pg_do(a.lock, "COMMIT");
  store_pg_ahead_wait(h);
  ck_assert_int_eq(claim("y-0", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("y-1", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("y-5", STORE_CLAIM, 0), STORE_SEEN);
  ck_assert_int_eq(claim("y-6", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("y-7", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("y-8", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim("z-0", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  ck_assert_int_eq(claim_on(h, "z-0"), STORE_NEW);
  PQfinish(a.lock);
  PQfinish(a.watch);
  store_close(h);
  close_store();
}
END_TEST

/* ------------------------------------------------------------ state */

static void put(store_batch_t *b, const char *k, const char *v) {
  ck_assert_int_eq(store_batch_put_state(b, scope, k, strlen(k), v, strlen(v)),
                   0);
}

/* 1 and the value in out (NUL-terminated) when k is durable. */
static int get(const char *k, char *out, size_t outlen) {
  char err[512];
  void *v = NULL;
  size_t n = 0;
  int r = store_state_get(s, scope, k, strlen(k), &v, &n, err, sizeof(err));
  ck_assert_msg(r >= 0, "%s", err);
  if (r == 1) {
    ck_assert_uint_lt(n, outlen);
    memcpy(out, v ? v : "", n);
    out[n] = '\0';
  }
  free(v);
  return r;
}

static void commit(store_batch_t *b) {
  char err[512];
  ck_assert_msg(store_batch_commit(b, NULL, err, sizeof(err)) == 0, "%s", err);
}

START_TEST(test_state_durable_on_commit_only) {
  char err[512], v[64];
  store_batch_t *b;
  open_store(_i);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  put(b, "user:1", "10");
  put(b, "user:2", "20");
  ck_assert_uint_eq(store_batch_pending(b), 2);
  ck_assert_int_eq(get("user:1", v, sizeof v), 0);
  commit(b);
  ck_assert_int_eq(get("user:1", v, sizeof v), 1);
  ck_assert_str_eq(v, "10");
  /* The last write of a key in a batch wins; a delete removes it. */
  put(b, "user:1", "11");
  put(b, "user:1", "12");
  ck_assert_int_eq(store_batch_del_state(b, scope, "user:2", 6), 0);
  commit(b);
  ck_assert_int_eq(get("user:1", v, sizeof v), 1);
  ck_assert_str_eq(v, "12");
  ck_assert_int_eq(get("user:2", v, sizeof v), 0);
  /* Discarded writes leave nothing. */
  put(b, "user:3", "30");
  store_batch_discard(b);
  commit(b);
  ck_assert_int_eq(get("user:3", v, sizeof v), 0);
  store_batch_close(b);
  close_store();
}
END_TEST

static int collect(void *arg, const void *k, size_t kl, const void *v,
                   size_t vl) {
  GString *g = arg;
  g_string_append_len(g, k, (gssize)kl);
  g_string_append_c(g, '=');
  g_string_append_len(g, v, (gssize)vl);
  g_string_append_c(g, ';');
  return 0;
}

START_TEST(test_state_scan_prefix_in_order) {
  char err[512];
  store_batch_t *b;
  GString *g = g_string_new(NULL);
  uint32_t other;
  open_store(_i);
  ck_assert_int_eq(store_scope(s, "other", &other, err, sizeof(err)), 0);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  put(b, "b:2", "y");
  put(b, "a:1", "w");
  put(b, "b:1", "x");
  put(b, "b\xff", "z");
  put(b, "c", "v");
  ck_assert_int_eq(store_batch_put_state(b, other, "b:3", 3, "o", 1), 0);
  commit(b);
  ck_assert_int_eq(
      store_state_scan(s, scope, "b", 1, collect, g, err, sizeof(err)), 0);
  ck_assert_str_eq(g->str, "b:1=x;b:2=y;b\xff=z;");
  g_string_truncate(g, 0);
  ck_assert_int_eq(
      store_state_scan(s, scope, "b\xff", 2, collect, g, err, sizeof(err)), 0);
  ck_assert_str_eq(g->str, "b\xff=z;");
  g_string_truncate(g, 0);
  ck_assert_int_eq(
      store_state_scan(s, scope, "", 0, collect, g, err, sizeof(err)), 0);
  ck_assert_str_eq(g->str, "a:1=w;b:1=x;b:2=y;b\xff=z;c=v;");
  /* Reset forgets one scope's keys only. */
  int64_t removed = -1;
  ck_assert_int_eq(store_state_reset(s, scope, &removed, err, sizeof(err)), 0);
  ck_assert_int_eq(removed, 5);
  g_string_truncate(g, 0);
  ck_assert_int_eq(
      store_state_scan(s, scope, "", 0, collect, g, err, sizeof(err)), 0);
  ck_assert_str_eq(g->str, "");
  ck_assert_int_eq(
      store_state_scan(s, other, "", 0, collect, g, err, sizeof(err)), 0);
  ck_assert_str_eq(g->str, "b:3=o;");
  g_string_free(g, TRUE);
  store_batch_close(b);
  close_store();
}
END_TEST

static int count_keys(void *arg, const void *k, size_t kl, const void *v,
                      size_t vl) {
  (void)k, (void)kl, (void)v, (void)vl;
  (*(int *)arg)++;
  return 0;
}

/* A scan longer than one chunk of reads sees every key once. */
START_TEST(test_state_scan_many) {
  char err[512], k[32];
  store_batch_t *b;
  int n = 0;
  open_store(_i);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof k, "k%04d", i);
    put(b, k, "v");
  }
  commit(b);
  ck_assert_int_eq(
      store_state_scan(s, scope, "k", 1, count_keys, &n, err, sizeof(err)), 0);
  ck_assert_int_eq(n, 1000);
  store_batch_close(b);
  close_store();
}
END_TEST

/* Offsets are stored with the batch's marks and state, and read back
 * (after a reopen for the file). */
START_TEST(test_offsets_with_batch) {
  char err[512];
  store_batch_t *b;
  int64_t next = -1;
  open_store(_i);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  ck_assert_int_eq(store_offset_get(s, scope, "t", 0, &next, err, sizeof err),
                   0);
  ck_assert_int_eq(store_batch_set_offset(b, scope, "t", 0, 42), 0);
  put(b, "k", "v");
  store_mark_t m = {.scope = scope,
                    .event_id = "e1",
                    .event_id_len = 2,
                    .topic = "t",
                    .offset = 41,
                    .handled_at_ms = 1};
  ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  ck_assert_int_eq(store_offset_get(s, scope, "t", 0, &next, err, sizeof err),
                   0);
  commit(b);
  ck_assert_int_eq(store_batch_set_offset(b, scope, "t", 0, 50), 0);
  commit(b); /* offsets alone make a transaction too */
  store_batch_close(b);
  if (_i == IMPL_SQLITE) {
    char *path = g_strdup_printf("%s/dedup.db", dir);
    dedup_opts_t o = {.path = path};
    store_close(s);
    ck_assert_int_eq(store_sqlite_open(&s, &o, err, sizeof(err)), 0);
    g_free(path);
  }
  ck_assert_int_eq(store_offset_get(s, scope, "t", 0, &next, err, sizeof err),
                   1);
  ck_assert_int_eq(next, 50);
  ck_assert_int_eq(store_offset_get(s, scope, "t", 1, &next, err, sizeof err),
                   0);
  ck_assert_int_eq(claim("e1", STORE_LOOKUP, 0), STORE_SEEN);
  close_store();
}
END_TEST

/* A refused commit writes none of marks, state and offsets, and keeps
 * them for the retry. */
START_TEST(test_failed_commit_keeps_state_buffered) {
  char err[512], v[64];
  store_batch_t *b;
  int64_t next = -1;
  open_store(IMPL_MEM);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  put(b, "k", "v");
  ck_assert_int_eq(store_batch_set_offset(b, scope, "t", 0, 7), 0);
  store_mem_fail_commits(s, 1, 1);
  ck_assert_int_ne(store_batch_commit(b, NULL, err, sizeof(err)), 0);
  ck_assert_int_eq(get("k", v, sizeof v), 0);
  ck_assert_int_eq(store_offset_get(s, scope, "t", 0, &next, err, sizeof err),
                   0);
  commit(b);
  ck_assert_int_eq(get("k", v, sizeof v), 1);
  ck_assert_int_eq(store_offset_get(s, scope, "t", 0, &next, err, sizeof err),
                   1);
  store_batch_close(b);
  close_store();
}
END_TEST

/* ------------------------------------------------------------- parked */

/* Park one record of partition 0 at off (a binary key, no value). */
static void park_one(store_batch_t *b, int64_t off, const char *reason) {
  char id[32];
  snprintf(id, sizeof(id), "ev-%lld", (long long)off);
  store_parked_t p = {.scope = scope,
                      .topic = "orders",
                      .partition = 0,
                      .offset = off,
                      .timestamp_ms = 1000 + off,
                      .key = "\x00k",
                      .key_len = 2,
                      .headers = "",
                      .event_id = id,
                      .event_id_len = strlen(id),
                      .reason = reason,
                      .attempts = 3,
                      .parked_at_ms = 5000};
  ck_assert_int_eq(store_batch_park(b, &p), 0);
}

static size_t lot_size(const store_parked_filter_t *f, int64_t *first) {
  char err[512];
  store_parked_t **v;
  size_t n;
  ck_assert_msg(store_parked_list(s, scope, f, &v, &n, err, sizeof err) == 0,
                "%s", err);
  if (n > 0 && first)
    *first = v[0]->offset;
  store_parked_list_free(v, n);
  return n;
}

/* park (durable with the batch only) -> list (filters, order, fields) ->
 * skip (one removed now) -> unpark (with the next batch). */
START_TEST(test_park_list_skip) {
  char err[512];
  store_batch_t *b;
  store_parked_t **v;
  size_t n;
  int removed;
  store_parked_filter_t all = {NULL, -1, -1}, one = {"orders", 0, 7};
  open_store(_i);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  park_one(b, 9, "bad");
  park_one(b, 7, "worse");
  ck_assert_uint_eq(lot_size(&all, NULL), 0);
  commit(b);
  int64_t first = -1;
  ck_assert_uint_eq(lot_size(&all, &first), 2);
  ck_assert_int_eq(first, 7);
  ck_assert_int_eq(store_parked_list(s, scope, &one, &v, &n, err, sizeof err),
                   0);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(v[0]->reason, "worse");
  ck_assert_uint_eq(v[0]->key_len, 2);
  ck_assert_int_eq(memcmp(v[0]->key, "\x00k", 2), 0);
  ck_assert_ptr_null(v[0]->value);
  ck_assert_int_eq(v[0]->timestamp_ms, 1007);
  ck_assert_uint_eq(v[0]->attempts, 3);
  ck_assert_mem_eq(v[0]->event_id, "ev-7", 4);
  /* Parked again: the row is replaced (the newest reason). */
  park_one(b, 7, "worst");
  commit(b);
  ck_assert_uint_eq(lot_size(&all, NULL), 2);
  /* Skip: gone at once; a second time finds nothing. */
  ck_assert_int_eq(store_parked_remove(s, v[0], &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 1);
  ck_assert_int_eq(store_parked_remove(s, v[0], &removed, err, sizeof err), 0);
  ck_assert_int_eq(removed, 0);
  store_parked_list_free(v, n);
  ck_assert_uint_eq(lot_size(&all, &first), 1);
  ck_assert_int_eq(first, 9);
  /* Unpark: with the batch's commit, not before; a discard keeps it. */
  store_parked_t gone = {.scope = scope, .topic = "orders", .offset = 9};
  ck_assert_int_eq(store_batch_unpark(b, &gone), 0);
  store_batch_discard(b);
  commit(b);
  ck_assert_uint_eq(lot_size(&all, NULL), 1);
  ck_assert_int_eq(store_batch_unpark(b, &gone), 0);
  ck_assert_uint_eq(lot_size(&all, NULL), 1);
  commit(b);
  ck_assert_uint_eq(lot_size(&all, NULL), 0);
  store_batch_close(b);
  close_store();
}
END_TEST

/* ------------------------------------------------- crash attempts */

/* attempts(budget 2) of a call of partition p: what it answers. */
static int attempts_of(store_t *x, int32_t p) {
  uint32_t n = 99;
  store_attempt_t a = {.scope = scope,
                       .event_id = "other",
                       .event_id_len = 5,
                       .topic = "t",
                       .partition = p};
  int rec = store_attempts(x, &a, 2, &n);
  ck_assert_uint_eq(n, 0); /* no call of "other" recorded */
  return rec;
}

/* A new handle on the store in s: does it start clean (no call
 * recorded)? If not, closed again. */
static int clean_start(void) {
  s = open_pg(1000);
  if (attempts_of(s, 0) == 0)
    return 1;
  store_close(s);
  s = NULL;
  return 0;
}

/* A process killed while it holds a claim (a record in its plugin) leaves
 * its row of khost_hosts behind: the next process on this host knows at
 * open that the one before stopped uncleanly, and records the first 2
 * calls of each partition. The claim is taken over after its lease; once
 * the row's lease ran out ten leases ago, a start is clean again. */
START_TEST(test_pg_unclean_stop) {
  char err[512];
  int status;
  store_pg_opts_t o = {.create = 1, .lease_ms = 1000};
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  o.conninfo = pg->conninfo;
  ck_assert_msg(store_pg_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
  store_close(s);
  fflush(NULL);
  pid_t child = fork();
  ck_assert_int_ge(child, 0);
  if (child == 0) {
    store_t *x = NULL;
    if (store_pg_open(&x, &o, err, sizeof(err)) != 0 ||
        claim_on(x, "crashy") != STORE_NEW)
      _exit(1);
    raise(SIGKILL); /* killed holding the claim */
  }
  ck_assert_int_eq(waitpid(child, &status, 0), child);
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                "the child did not claim (status %d)", status);
  s = open_pg(1000);
  ck_assert_int_eq(attempts_of(s, 0), 1);
  ck_assert_int_eq(attempts_of(s, 0), 1);
  ck_assert_int_eq(attempts_of(s, 0), 0);
  ck_assert_int_eq(attempts_of(s, 1), 1);
  TU_WAIT_UNTIL(claim("crashy", STORE_CLAIM, 0) == STORE_NEW, 10000,
                "the dead process's claim taken over");
  release("crashy");
  store_close(s);
  /* The dead process's row of khost_hosts is a trace for ten leases;
   * then the renewer deletes it. */
  TU_WAIT_UNTIL(clean_start(), 30000, "a start is clean again");
  PGconn *c = PQconnectdb(pg->conninfo);
  TU_WAIT_UNTIL(pg_count(c, "SELECT count(*) FROM khost_hosts") == 1, 5000,
                "the killed process's row of khost_hosts removed");
  PQfinish(c);
  close_store();
}
END_TEST

/* Another host died (its lease ran out) while this one runs: a partition
 * first called after that records its first calls, one called before
 * does not. A host whose lease ran out long ago is no trace. */
START_TEST(test_pg_dead_host_found_later) {
  int32_t p = 1;
  open_store(IMPL_PG);
  PGconn *c = PQconnectdb(pg->conninfo);
  pg_do(c, "INSERT INTO khost_hosts (name, lease_until) VALUES"
           " ('old-host/8/gone', (extract(epoch from clock_timestamp())"
           " * 1000)::bigint - 3600000)");
  store_t *late = open_pg(0);
  ck_assert_int_eq(attempts_of(late, 0), 0);
  ck_assert_int_eq(attempts_of(s, 0), 0);
  pg_do(c, "INSERT INTO khost_hosts (name, lease_until) VALUES"
           " ('far-host/7/dead', (extract(epoch from clock_timestamp())"
           " * 1000)::bigint - 1000)");
  /* A look at most once a second: new partitions until one records. */
  TU_WAIT_UNTIL(attempts_of(s, p++) == 1, 10000,
                "a newly called partition records its first calls");
  ck_assert_int_eq(attempts_of(s, p - 1), 1);
  ck_assert_int_eq(attempts_of(s, p - 1), 0);
  ck_assert_int_eq(attempts_of(s, 0), 0);
  store_close(late);
  PQfinish(c);
  close_store();
}
END_TEST

/* Rows of khost_hosts whose lease ran out more than ten leases ago are
 * deleted by a renewer, and their claims are taken over as those of an
 * expired lease; a row within the ten leases is kept (the crash-attempt
 * guard reads it). */
START_TEST(test_pg_old_hosts_removed) {
  open_store(IMPL_PG);
  store_t *live = open_pg(1000);
  PGconn *c = PQconnectdb(pg->conninfo);
  char *sql = g_strdup_printf(
      "WITH h AS (INSERT INTO khost_hosts (name, lease_until) VALUES"
      " ('old-host/9/gone', (extract(epoch from clock_timestamp()) * 1000)"
      "::bigint - 3600000) RETURNING host) INSERT INTO khost_marks SELECT"
      " %u, '\\x00'::bytea || 'orphan', 0, '', 0, 0, 2, host, 0 FROM h",
      scope);
  pg_do(c, sql);
  pg_do(c, "INSERT INTO khost_hosts (name, lease_until) VALUES"
           " ('recent-host/9/gone', (extract(epoch from clock_timestamp())"
           " * 1000)::bigint - 1000)");
  TU_WAIT_UNTIL(pg_count(c, "SELECT count(*) FROM khost_hosts WHERE"
                            " name = 'old-host/9/gone'") == 0,
                5000, "the row of a host dead an hour removed");
  ck_assert_int_eq(pg_count(c, "SELECT count(*) FROM khost_hosts WHERE"
                               " name = 'recent-host/9/gone'"),
                   1);
  ck_assert_int_eq(pg_count(c, "SELECT count(*) FROM khost_hosts"), 3);
  /* Its claim has no owner row: taken over, once. */
  ck_assert_int_eq(claim("orphan", STORE_CLAIM, 0), STORE_NEW);
  ck_assert_int_eq(claim_on(live, "orphan"), STORE_IN_FLIGHT);
  store_close(live);
  PQfinish(c);
  g_free(sql);
  close_store();
}
END_TEST

/* A host whose row was deleted (it did not reach the server for ten
 * leases) puts it back at its next renewal: its claims are live again. */
START_TEST(test_pg_row_put_back) {
  open_store(IMPL_PG);
  store_t *live = open_pg(300);
  PGconn *c = PQconnectdb(pg->conninfo);
  ck_assert_int_eq(claim_on(live, "held"), STORE_NEW);
  pg_do(c, "DELETE FROM khost_hosts WHERE host ="
           " (SELECT max(host) FROM khost_hosts)");
  TU_WAIT_UNTIL(pg_count(c, "SELECT count(*) FROM khost_hosts") == 2, 5000,
                "the deleted row put back");
  ck_assert_int_eq(claim("held", STORE_CLAIM, 0), STORE_IN_FLIGHT);
  store_close(live);
  ck_assert_int_eq(claim("held", STORE_CLAIM, 0), STORE_NEW);
  PQfinish(c);
  close_store();
}
END_TEST

Suite *store_suite(void) {
  Suite *su = suite_create("store");
  TCase *tc = tcase_create("contract");
  int impls = pgu_available("check_store") ? IMPLS : IMPL_PG;
  tcase_add_loop_test(tc, test_scopes, 0, impls);
  tcase_add_loop_test(tc, test_claim_release, 0, impls);
  tcase_add_loop_test(tc, test_lookup_claims_nothing, 0, impls);
  tcase_add_loop_test(tc, test_commit_makes_seen, 0, impls);
  tcase_add_loop_test(tc, test_discard_writes_nothing, 0, impls);
  tcase_add_loop_test(tc, test_claim_again, 0, impls);
  tcase_add_loop_test(tc, test_uuid_ids_exact, 0, impls);
  tcase_add_loop_test(tc, test_attempts, 0, impls);
  tcase_add_loop_test(tc, test_replay_ranges_newest_first, 0, impls);
  tcase_add_loop_test(tc, test_state_durable_on_commit_only, 0, impls);
  tcase_add_loop_test(tc, test_state_scan_prefix_in_order, 0, impls);
  tcase_add_loop_test(tc, test_state_scan_many, 0, impls);
  tcase_add_loop_test(tc, test_offsets_with_batch, 0, impls);
  tcase_add_loop_test(tc, test_park_list_skip, 0, impls);
  tcase_add_test(tc, test_failed_commit_keeps_state_buffered);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(su, tc);
  if (impls == IMPLS) {
    tc = tcase_create("postgresql");
    tcase_add_test(tc, test_pg_two_hosts);
    tcase_add_test(tc, test_pg_lease);
    tcase_add_test(tc, test_pg_batch_round_trips);
    tcase_add_test(tc, test_pg_state_shared);
    tcase_add_test(tc, test_pg_prune_small_transactions);
    tcase_add_test(tc, test_pg_pruner_thread);
    tcase_add_test(tc, test_pg_marks_by_position);
    tcase_add_test(tc, test_pg_dropped_partition_given_back);
    tcase_add_test(tc, test_pg_ahead_given_back);
    tcase_add_test(tc, test_pg_claim_waits_for_window);
    tcase_add_test(tc, test_pg_dropped_window_in_air);
    tcase_add_test(tc, test_pg_unclean_stop);
    tcase_add_test(tc, test_pg_dead_host_found_later);
    tcase_add_test(tc, test_pg_old_hosts_removed);
    tcase_add_test(tc, test_pg_row_put_back);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(su, tc);
  }
  return su;
}
