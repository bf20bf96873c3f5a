/*
 * Claims on the PostgreSQL store: rows of khost_claims with an owner (this
 * process) and a lease on the server's clock. A live claim of another
 * owner is in flight; an expired one is taken over.
 *
 * No round trip per record: the flow core names the IDs it will claim
 * next (store_claim_ahead()), and one statement claims them all, finding
 * the marked ones and their recorded attempts on the way; a second one
 * gives back those whose mark committed meanwhile. store_claim() and
 * store_attempts() then answer from what it found. A claim taken ahead
 * and never asked for (its partition was revoked) is given back after
 * two rounds of the renewer, so that another host waits no longer than
 * that for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store_pg_int.h"

enum {
  AHEAD_CLAIMED, /* claimed ahead, not asked for yet */
  AHEAD_SEEN,    /* marked: store_claim() answers STORE_SEEN */
  AHEAD_HANDED   /* handed out as STORE_NEW: its attempts not asked yet */
};

typedef struct pg_ahead {
  int state;
  uint32_t attempts; /* recorded calls, AHEAD_CLAIMED and AHEAD_HANDED */
  uint64_t tick;     /* the renewer's round when it was found */
} pg_ahead_t;

void pg_ahead_init(pg_store_t *p) {
  p->ahead = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                   (GDestroyNotify)g_bytes_unref, g_free);
}

/* The cache key: the scope's 4 bytes, then the ID. */
static GBytes *ahead_key(uint32_t scope, const void *id, size_t len) {
  GByteArray *a = g_byte_array_sized_new((guint)len + 4);
  g_byte_array_append(a, (const guint8 *)&scope, 4);
  g_byte_array_append(a, id, (guint)len);
  return g_byte_array_free_to_bytes(a);
}

static pg_ahead_t *ahead_find(pg_store_t *p, uint32_t scope, const void *id,
                              size_t len, GBytes **key) {
  GBytes *k = ahead_key(scope, id, len);
  pg_ahead_t *e = g_hash_table_lookup(p->ahead, k);
  if (key)
    *key = k;
  else
    g_bytes_unref(k);
  return e;
}

/* ------------------------------------------------------------ one by one */

/* Is there a mark (older than $4?), a live claim, and did this call take
 * the claim (none, or an expired one)? Inserting only where no mark
 * exists, except for a re-claim of an old mark. */
static const char claim_sql[] =
    "WITH m AS (SELECT handled_at FROM khost_marks"
    "   WHERE scope = $1 AND id = $2),"
    " ins AS (INSERT INTO khost_claims (scope, id, owner, lease_until)"
    "   SELECT $1, $2, $3, " PG_NOW_MS " + $5"
    "   WHERE $6 AND (NOT EXISTS (SELECT 1 FROM m) OR"
    "     ($7 AND (SELECT handled_at FROM m) < $4))"
    "   ON CONFLICT (scope, id) DO UPDATE SET owner = EXCLUDED.owner,"
    "     lease_until = EXCLUDED.lease_until"
    "   WHERE khost_claims.lease_until < " PG_NOW_MS " RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM m), EXISTS (SELECT 1 FROM ins),"
    "  EXISTS (SELECT 1 FROM khost_claims WHERE scope = $1 AND id = $2"
    "   AND lease_until >= " PG_NOW_MS ")";

/* A claim taken while a mark was being committed: the second look, with
 * a snapshot of its own, sees that commit. */
static int claim_recheck(pg_store_t *p, uint32_t scope, const void *id,
                         size_t len) {
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_bytes(&a, id, len);
  pgp_str(&a, p->owner);
  PGresult *r = pg_exec(p, p->conn,
                        "WITH d AS (DELETE FROM khost_claims c WHERE"
                        " c.scope = $1 AND c.id = $2 AND c.owner = $3 AND"
                        " EXISTS (SELECT 1 FROM khost_marks k WHERE"
                        " k.scope = $1 AND k.id = $2) RETURNING 1)"
                        " SELECT EXISTS (SELECT 1 FROM d)",
                        &a, 0, NULL, NULL, 0);
  int ans = !r                                      ? STORE_IN_FLIGHT
            : strcmp(PQgetvalue(r, 0, 0), "t") == 0 ? STORE_SEEN
                                                    : STORE_NEW;
  PQclear(r);
  return ans;
}

/* Said once when claims start failing and once when they work again
 * (mu held): meanwhile records wait for their claims. */
static void claims_health(pg_store_t *p, int ok, const char *err) {
  if (!ok && !p->claims_down)
    log_msg(KHOST_LOG_WARNING, "dedup",
            "%s; records wait for their claims until it answers", err);
  else if (ok && p->claims_down)
    log_msg(KHOST_LOG_NOTICE, "dedup",
            "postgresql store (%s): claims work again", p->display);
  p->claims_down = !ok;
}

static int claim_answer(const PGresult *r, int mode) {
  int marked = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  int took = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
  int live = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
  if (took)
    return STORE_NEW;
  if (marked)
    return STORE_SEEN;
  if (live)
    return STORE_IN_FLIGHT;
  return mode == STORE_LOOKUP ? STORE_NEW : STORE_IN_FLIGHT;
}

/* mu held. Store unreachable: STORE_IN_FLIGHT (the caller waits). */
static int claim_one(pg_store_t *p, uint32_t scope, const void *id, size_t len,
                     int mode, int64_t before_ms) {
  pgp_t a = {0};
  char err[512];
  int ans = STORE_IN_FLIGHT;
  pgp_i64(&a, scope);
  pgp_bytes(&a, id, len);
  pgp_str(&a, p->owner);
  pgp_i64(&a, before_ms);
  pgp_i64(&a, p->lease_ms);
  pgp_str(&a, mode == STORE_LOOKUP ? "false" : "true");
  pgp_str(&a, mode == STORE_CLAIM_AGAIN ? "true" : "false");
  PGresult *r = pg_exec(p, p->conn, claim_sql, &a, 0, NULL, err, sizeof(err));
  claims_health(p, r != NULL, err);
  if (r)
    ans = claim_answer(r, mode);
  if (r && ans == STORE_NEW && mode == STORE_CLAIM)
    ans = claim_recheck(p, scope, id, len);
  PQclear(r);
  return ans;
}

/* What the claims taken ahead answer for id (mu held), or -1: ask the
 * server. */
static int ahead_answer(pg_store_t *p, uint32_t scope, const void *id,
                        size_t len, int mode) {
  GBytes *k;
  pg_ahead_t *e = ahead_find(p, scope, id, len, &k);
  int ans = -1;
  if (e && e->state == AHEAD_CLAIMED) {
    ans = STORE_NEW; /* for STORE_LOOKUP: no mark */
    if (mode != STORE_LOOKUP)
      e->state = AHEAD_HANDED;
  } else if (e && e->state == AHEAD_SEEN && mode != STORE_CLAIM_AGAIN) {
    ans = STORE_SEEN;
    if (mode != STORE_LOOKUP)
      g_hash_table_remove(p->ahead, k);
  } else if (e && e->state == AHEAD_SEEN) {
    g_hash_table_remove(p->ahead, k); /* an old mark may be claimed again */
  }
  g_bytes_unref(k);
  return ans;
}

/* The key's hash is of no use to the server: only the ID goes. */
int pg_claim(store_t *s, uint32_t scope, const store_key_t *key, int mode,
             int64_t before_ms) {
  pg_store_t *p = pgs(s);
  const void *id = key->id;
  size_t len = key->len;
  pthread_mutex_lock(&p->mu);
  int ans = ahead_answer(p, scope, id, len, mode);
  if (ans < 0)
    ans = claim_one(p, scope, id, len, mode, before_ms);
  pthread_mutex_unlock(&p->mu);
  return ans;
}

void pg_release(store_t *s, uint32_t scope, const store_key_t *key) {
  pg_store_t *p = pgs(s);
  const void *id = key->id;
  size_t len = key->len;
  pgp_t a = {0};
  GBytes *k = ahead_key(scope, id, len);
  pgp_i64(&a, scope);
  pgp_bytes(&a, id, len);
  pgp_str(&a, p->owner);
  /* Lost with the connection: the lease frees it. */
  pthread_mutex_lock(&p->mu);
  g_hash_table_remove(p->ahead, k);
  PQclear(pg_exec(p, p->conn,
                  "DELETE FROM khost_claims WHERE scope = $1 AND id = $2 AND "
                  "owner = $3",
                  &a, 0, NULL, NULL, 0));
  pthread_mutex_unlock(&p->mu);
  g_bytes_unref(k);
}

/* ------------------------------------------------------------ ahead */

/* The IDs new to the server are claimed, in ID order (two hosts claiming
 * overlapping batches lock rows in one order), with their recorded
 * attempts; the marked ones come back with took = false. */
static const char ahead_sql[] =
    "WITH want AS (SELECT DISTINCT u.id FROM unnest($2::bytea[]) AS u(id)),"
    " m AS (SELECT k.id FROM khost_marks k WHERE k.scope = $1::integer"
    "   AND k.id IN (SELECT id FROM want)),"
    " ins AS (INSERT INTO khost_claims (scope, id, owner, lease_until)"
    "   SELECT $1::integer, w.id, $3, " PG_NOW_MS " + $4::bigint FROM want w"
    "   WHERE NOT EXISTS (SELECT 1 FROM m WHERE m.id = w.id) ORDER BY w.id"
    "   ON CONFLICT (scope, id) DO UPDATE SET owner = EXCLUDED.owner,"
    "     lease_until = EXCLUDED.lease_until"
    "   WHERE khost_claims.lease_until < " PG_NOW_MS " RETURNING id)"
    " SELECT ins.id, true, coalesce(a.attempts, 0) FROM ins"
    "   LEFT JOIN khost_attempts a ON a.scope = $1::integer AND a.id = ins.id"
    " UNION ALL SELECT id, false, 0 FROM m";

/* Of the IDs just claimed, those whose mark committed while the claim
 * statement ran: their claims given back, the IDs returned. */
static const char ahead_recheck_sql[] =
    "WITH d AS (DELETE FROM khost_claims c WHERE c.scope = $1::integer"
    "   AND c.owner = $3 AND c.id = ANY ($2::bytea[]) AND EXISTS (SELECT 1"
    "   FROM khost_marks k WHERE k.scope = c.scope AND k.id = c.id)"
    "   RETURNING c.id)"
    " SELECT id FROM d";

static void ahead_put(pg_store_t *p, uint32_t scope, const PGresult *r, int row,
                      int state, uint32_t attempts) {
  pg_ahead_t *e = g_new0(pg_ahead_t, 1);
  e->state = state;
  e->attempts = attempts;
  e->tick = p->tick;
  g_hash_table_replace(
      p->ahead,
      ahead_key(scope, PQgetvalue(r, row, 0), (size_t)PQgetlength(r, row, 0)),
      e);
}

/* mu held: the claims of r just taken whose marks turned up are seen. */
static void ahead_recheck(pg_store_t *p, uint32_t scope, const PGresult *r) {
  pgp_t a = {0};
  GString *ids;
  int took = 0;
  pgp_i64(&a, scope);
  ids = pgp_array(&a);
  pgp_str(&a, p->owner);
  for (int i = 0; i < PQntuples(r); i++)
    if (*PQgetvalue(r, i, 1)) {
      pga_bytes(ids, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
      took++;
    }
  PGresult *d =
      took ? pg_exec(p, p->conn, ahead_recheck_sql, &a, 1, NULL, NULL, 0)
           : NULL;
  for (int i = 0; d && i < PQntuples(d); i++)
    ahead_put(p, scope, d, i, AHEAD_SEEN, 0);
  PQclear(d);
  pgp_free(&a);
}

void pg_claim_ahead(store_t *s, uint32_t scope, const void *const *ids,
                    const size_t *lens, size_t n) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  GString *arr;
  size_t asked = 0;
  pgp_i64(&a, scope);
  arr = pgp_array(&a);
  pgp_str(&a, p->owner);
  pgp_i64(&a, p->lease_ms);
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < n; i++)
    if (lens[i] > 0 && !ahead_find(p, scope, ids[i], lens[i], NULL)) {
      pga_bytes(arr, ids[i], lens[i]);
      asked++;
    }
  /* A failure is not an error: store_claim() asks again, one by one. */
  PGresult *r =
      asked ? pg_exec(p, p->conn, ahead_sql, &a, 1, NULL, NULL, 0) : NULL;
  for (int i = 0; r && i < PQntuples(r); i++)
    ahead_put(p, scope, r, i, *PQgetvalue(r, i, 1) ? AHEAD_CLAIMED : AHEAD_SEEN,
              (uint32_t)pg_int(r, i, 2));
  if (r)
    ahead_recheck(p, scope, r);
  pthread_mutex_unlock(&p->mu);
  PQclear(r);
  pgp_free(&a);
}

/* Calls recorded for a record: found with its claim when it was taken
 * ahead. The calls to record after an unclean stop are
 * store_pg_crash.c's. */
int pg_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                uint32_t *count) {
  pg_store_t *p = pgs(s);
  pgp_t q = {0};
  GBytes *k;
  (void)budget;
  pthread_mutex_lock(&p->mu);
  pg_ahead_t *e = ahead_find(p, a->scope, a->event_id, a->event_id_len, &k);
  if (e && e->state == AHEAD_HANDED) {
    *count = e->attempts;
    g_hash_table_remove(p->ahead, k);
    pthread_mutex_unlock(&p->mu);
    g_bytes_unref(k);
    return *count > 0;
  }
  g_bytes_unref(k);
  pgp_i64(&q, a->scope);
  pgp_bytes(&q, a->event_id, a->event_id_len);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT attempts FROM khost_attempts WHERE scope = $1 "
                        "AND id = $2",
                        &q, 0, NULL, NULL, 0);
  pthread_mutex_unlock(&p->mu);
  *count = r && PQntuples(r) ? (uint32_t)atoi(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  return *count > 0;
}

/* ------------------------------------------------------------ leases */

/* mu held: the next round; entries two rounds old leave the cache, and
 * the claims among them (taken ahead, never asked for) go into rel. */
static void ahead_expire(pg_store_t *p, GString *scopes, GString *ids) {
  GHashTableIter it;
  gpointer k, v;
  p->tick++;
  g_hash_table_iter_init(&it, p->ahead);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    pg_ahead_t *e = v;
    gsize len;
    const guint8 *d = g_bytes_get_data(k, &len);
    uint32_t scope;
    if (e->tick + 2 > p->tick)
      continue;
    if (e->state == AHEAD_CLAIMED) {
      memcpy(&scope, d, 4);
      pga_i64(scopes, scope);
      pga_bytes(ids, d + 4, len - 4);
    }
    g_hash_table_iter_remove(&it);
  }
}

/* One round: this process's claims extended, stale ones given back. */
static void renew_round(pg_store_t *p, PGconn *c) {
  pgp_t a = {0}, b = {0};
  GString *scopes, *ids;
  pgp_str(&a, p->owner);
  pgp_i64(&a, p->lease_ms);
  pgp_str(&b, p->owner);
  scopes = pgp_array(&b);
  ids = pgp_array(&b);
  pthread_mutex_lock(&p->mu);
  ahead_expire(p, scopes, ids);
  pthread_mutex_unlock(&p->mu);
  if (ids->len > 1)
    pg_exec0(p, c,
             "DELETE FROM khost_claims c USING unnest($2::integer[],"
             " $3::bytea[]) AS u(scope, id) WHERE c.scope = u.scope AND"
             " c.id = u.id AND c.owner = $1",
             &b, NULL, NULL, 0);
  pg_exec0(p, c,
           "UPDATE khost_claims SET lease_until = " PG_NOW_MS " + $2 "
           "WHERE owner = $1",
           &a, NULL, NULL, 0);
  pgp_free(&a);
  pgp_free(&b);
}

/* Every lease/3, this process's claims are extended: a claim outlives its
 * lease only when this process stops renewing it (it died, or lost the
 * server for longer than the lease). */
void *pg_renew_main(void *arg) {
  pg_store_t *p = arg;
  PGconn *c = PQconnectdb(p->conninfo);
  pgp_t a = {0};
  pthread_mutex_lock(&p->mu);
  while (!p->stopping) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (p->lease_ms / 3) * 1000000LL;
    until.tv_sec += ns / 1000000000LL;
    until.tv_nsec = ns % 1000000000LL;
    pthread_cond_timedwait(&p->wake, &p->mu, &until);
    if (p->stopping)
      break;
    pthread_mutex_unlock(&p->mu);
    renew_round(p, c);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  /* A clean stop gives its claims back at once. */
  pgp_str(&a, p->owner);
  pg_exec0(p, c, "DELETE FROM khost_claims WHERE owner = $1", &a, NULL, NULL,
           0);
  PQfinish(c);
  return NULL;
}
