/*
 * Claims on the PostgreSQL store: rows of khost_marks in the claimed
 * state, owned by this process's row of khost_hosts, whose lease on the
 * server's clock the renewer extends. A claim of a live owner is in
 * flight; one of an owner whose lease ran out (it died) is taken over.
 * An ID's claim and its mark are one row: inserting the claim conflicts
 * with a mark committed meanwhile and sees it, so no second look is
 * needed.
 *
 * No round trip per record: the flow core names the IDs it will claim
 * next (store_claim_ahead()), and one statement claims them all, finding
 * their recorded attempts on the way; only when some were not taken does
 * a second one tell the marked ones from those in flight. store_claim()
 * and store_attempts() then answer from what they found. A claim taken
 * ahead and never asked for is given back when its partition is dropped
 * (store_part_dropped()), or else after two rounds of the renewer, so
 * that another host waits no longer than that for it.
 *
 * Those statements are the claimer thread's, on a connection of its own:
 * store_claim_ahead() queues its IDs as a window and returns, so that the
 * caller handles the records claimed before while the server claims the
 * next ones. store_claim() of an ID whose window is still on its way
 * waits for that window's answer.
 *
 * A claim taken ahead records its record's position in this process's
 * epoch of the partition (schema version 5): the batch that moves the
 * epoch's committed position past it makes it a mark (store_pg_batch.c).
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
  AHEAD_HANDED,  /* handed out as STORE_NEW: its attempts not asked yet */
  AHEAD_ASKED    /* its window is queued or being claimed */
};

/* IDs of one partition's records to claim in one statement, as
 * store_claim_ahead() named them: queued, then the claimer's. */
typedef struct pg_window {
  uint32_t scope;
  char *topic; /* NULL: none (no epoch) */
  int32_t partition;
  GPtrArray *keys; /* GBytes: the cache keys (ahead_key()), first offset */
  GArray *offs;    /* int64_t: their records' offsets */
  int64_t from;    /* the least of offs */
  int dropped;     /* its partition was dropped while it was claimed */
} pg_window_t;

typedef struct pg_ahead {
  int state;
  uint32_t attempts;      /* recorded calls, AHEAD_CLAIMED and AHEAD_HANDED */
  uint64_t tick;          /* the renewer's round when it was found */
  const pg_window_t *win; /* AHEAD_ASKED: the window on its way */
} pg_ahead_t;

static GBytes *ahead_key(uint32_t scope, const void *id, size_t len);

void pg_ahead_init(pg_store_t *p) {
  p->ahead = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                   (GDestroyNotify)g_bytes_unref, g_free);
  p->epochs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  p->pos = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                 (GDestroyNotify)g_bytes_unref, g_free);
  g_queue_init(&p->windows);
  pthread_cond_init(&p->claim_wake, NULL);
  pthread_cond_init(&p->answered, NULL);
}

static void window_free(pg_window_t *w) {
  g_free(w->topic);
  g_ptr_array_free(w->keys, TRUE);
  g_array_free(w->offs, TRUE);
  g_free(w);
}

void pg_ahead_free(pg_store_t *p) {
  g_queue_clear_full(&p->windows, (GDestroyNotify)window_free);
  g_hash_table_destroy(p->ahead);
  g_hash_table_destroy(p->epochs);
  g_hash_table_destroy(p->pos);
  pthread_cond_destroy(&p->claim_wake);
  pthread_cond_destroy(&p->answered);
}

char *pg_epoch_key(uint32_t scope, const char *topic, int32_t partition) {
  return g_strdup_printf("%u/%d/%s", scope, partition, topic);
}

GBytes *pg_ahead_key(uint32_t scope, const void *id, size_t len) {
  return ahead_key(scope, id, len);
}

/* The cache key: the scope's 4 bytes, then the ID's key (pg_key()). */
static GBytes *ahead_key(uint32_t scope, const void *id, size_t len) {
  GByteArray *a = g_byte_array_sized_new((guint)len + 5);
  g_byte_array_append(a, (const guint8 *)&scope, 4);
  pg_key(a, id, len);
  return g_byte_array_free_to_bytes(a);
}

/* The same of a key as the server returns it. */
static GBytes *ahead_key_of(uint32_t scope, const void *key, size_t len) {
  GByteArray *a = g_byte_array_sized_new((guint)len + 4);
  g_byte_array_append(a, (const guint8 *)&scope, 4);
  g_byte_array_append(a, key, (guint)len);
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

/* The claim of a new ID, or of one whose claim's owner is gone; with $4,
 * of a mark handled before $5 too (a re-claim: the row stays a mark, one
 * by position made a mark of its own, whose owner is this claim's). A
 * claim taken here has no position: its mark is written to its row. A
 * row comes back when this call took it. */
// clang-format off
static const char claim_sql[] =
    "INSERT INTO khost_marks (scope, id, handled_at, topic, part, off,"
    " outcome, owner, since) VALUES ($1::integer, $2, " PG_NOW_MS ", '', 0,"
    " 0, " PG_CLAIMED ", $3::integer, " PG_NOW_MS ")"
    " ON CONFLICT (scope, id) DO UPDATE SET owner = EXCLUDED.owner,"
    " epoch = NULL, outcome = CASE WHEN " PG_MARK("khost_marks")
    " THEN " PG_OUTCOME("khost_marks") " ELSE khost_marks.outcome END"
    " WHERE CASE"
    " WHEN NOT " PG_MARK("khost_marks") " THEN NOT " PG_LIVE("khost_marks")
    " WHEN khost_marks.outcome = " PG_CLAIMED
    " THEN $4::boolean AND khost_marks.handled_at < $5::bigint"
    " ELSE $4::boolean AND khost_marks.handled_at < $5::bigint"
    " AND NOT " PG_LIVE("khost_marks") " END"
    " RETURNING 1";
// clang-format on

/* Is there a mark, and is the row's claim live? */
// clang-format off
static const char look_sql[] =
    "SELECT " PG_MARK("m") ", " PG_LIVE("m") " FROM khost_marks m"
    " WHERE m.scope = $1::integer AND m.id = $2";
// clang-format on

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

/* What the row of an ID says (mu held), a statement of its own: its
 * snapshot sees the commits the claim statement waited for. An ID
 * neither marked nor claimed by a live host is absent (STORE_LOOKUP) or
 * was given back meanwhile (in flight: the caller asks again). */
static int look_one(pg_store_t *p, uint32_t scope, const void *id, size_t len,
                    int mode) {
  pgp_t a = {0};
  char err[512];
  int ans = STORE_IN_FLIGHT;
  pgp_i64(&a, scope);
  pgp_key(&a, id, len);
  PGresult *r = pg_exec(p, p->conn, look_sql, &a, 0, NULL, err, sizeof(err));
  claims_health(p, r != NULL, err);
  if (r && PQntuples(r) && strcmp(PQgetvalue(r, 0, 0), "t") == 0)
    ans = STORE_SEEN;
  else if (r && PQntuples(r) && strcmp(PQgetvalue(r, 0, 1), "t") == 0)
    ans = STORE_IN_FLIGHT;
  else if (r && mode == STORE_LOOKUP)
    ans = STORE_NEW;
  PQclear(r);
  pgp_free(&a);
  return ans;
}

/* mu held. Store unreachable: STORE_IN_FLIGHT (the caller waits). */
static int claim_one(pg_store_t *p, uint32_t scope, const void *id, size_t len,
                     int mode, int64_t before_ms) {
  pgp_t a = {0};
  char err[512];
  int took = 0, failed = 0;
  if (mode != STORE_LOOKUP) {
    pgp_i64(&a, scope);
    pgp_key(&a, id, len);
    pgp_i64(&a, p->host);
    pgp_str(&a, mode == STORE_CLAIM_AGAIN ? "true" : "false");
    pgp_i64(&a, before_ms);
    PGresult *r = pg_exec(p, p->conn, claim_sql, &a, 0, NULL, err, sizeof(err));
    claims_health(p, r != NULL, err);
    took = r && PQntuples(r) > 0;
    failed = !r;
    PQclear(r);
    pgp_free(&a);
  }
  if (took) {
    GBytes *k = ahead_key(scope, id, len);
    pthread_mutex_lock(&p->pos_mu);
    g_hash_table_remove(p->pos, k); /* no position: marked by its row */
    pthread_mutex_unlock(&p->pos_mu);
    g_bytes_unref(k);
    return STORE_NEW;
  }
  return failed ? STORE_IN_FLIGHT : look_one(p, scope, id, len, mode);
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

/* mu held: claimers started, windows being claimed. */
static int claimers_on(const pg_store_t *p) {
  int n = 0;
  for (int i = 0; i < PG_CLAIMERS; i++)
    n += p->claimers[i].on;
  return n;
}

static int claiming(const pg_store_t *p) {
  int n = 0;
  for (int i = 0; i < PG_CLAIMERS; i++)
    n += p->claimers[i].claiming != NULL;
  return n;
}

/* mu held: until the window id is on (if any) was answered. */
static void ahead_wait(pg_store_t *p, uint32_t scope, const void *id,
                       size_t len) {
  GBytes *k = ahead_key(scope, id, len);
  const pg_ahead_t *e;
  while ((e = g_hash_table_lookup(p->ahead, k)) && e->state == AHEAD_ASKED &&
         !p->stopping)
    pthread_cond_wait(&p->answered, &p->mu);
  g_bytes_unref(k);
}

int pg_claim_ready(store_t *s, uint32_t scope, const store_key_t *key) {
  pg_store_t *p = pgs(s);
  GBytes *k = ahead_key(scope, key->id, key->len);
  pthread_mutex_lock(&p->mu);
  const pg_ahead_t *e = g_hash_table_lookup(p->ahead, k);
  int ready = !e || e->state != AHEAD_ASKED;
  pthread_mutex_unlock(&p->mu);
  g_bytes_unref(k);
  return ready;
}

void store_pg_ahead_wait(store_t *s) {
  pg_store_t *p = pgs(s);
  pthread_mutex_lock(&p->mu);
  while ((p->windows.length > 0 || claiming(p)) && claimers_on(p) &&
         !p->stopping)
    pthread_cond_wait(&p->answered, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

/* The key's hash is of no use to the server: only the ID goes. */
int pg_claim(store_t *s, uint32_t scope, const store_key_t *key, int mode,
             int64_t before_ms) {
  pg_store_t *p = pgs(s);
  const void *id = key->id;
  size_t len = key->len;
  pthread_mutex_lock(&p->mu);
  ahead_wait(p, scope, id, len);
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
  pgp_key(&a, id, len);
  pgp_i64(&a, p->host);
  /* A claim's row goes; a re-claimed mark stays, seen. Lost with the
   * connection: the lease frees it. */
  pthread_mutex_lock(&p->mu);
  g_hash_table_remove(p->ahead, k);
  pthread_mutex_lock(&p->pos_mu);
  g_hash_table_remove(p->pos, k);
  pthread_mutex_unlock(&p->pos_mu);
  PQclear(
      pg_exec(p, p->conn,
              "WITH d AS (DELETE FROM khost_marks m WHERE scope = $1::integer"
              " AND id = $2 AND owner = $3::integer AND NOT " PG_MARK(
                  "m") ") UPDATE khost_marks SET owner = NULL WHERE scope ="
                       " $1::integer AND id = $2 AND owner = $3::integer AND"
                       " outcome <> " PG_CLAIMED,
              &a, 0, NULL, NULL, 0));
  pthread_mutex_unlock(&p->mu);
  pgp_free(&a);
  g_bytes_unref(k);
}

/* ------------------------------------------------------------ ahead */

/* The IDs new to the server are claimed, in key order (two hosts
 * claiming overlapping batches lock rows in one order), at their
 * records' positions in epoch $4 (0: none), with their recorded
 * attempts; the rows of the others are left as they are. An ID twice
 * among them is claimed at its first offset. */
// clang-format off
static const char ahead_sql[] =
    "WITH ins AS (INSERT INTO khost_marks (scope, id, handled_at, topic,"
    "   part, off, outcome, owner, since, epoch)"
    "   SELECT $1::integer, w.id, t.now, $6, $7::integer, w.off, " PG_CLAIMED
    ",   $3::integer, t.now, NULLIF($4::bigint, 0) FROM (SELECT DISTINCT ON"
    "   (u.id) u.id, u.off FROM unnest($2::bytea[], $5::bigint[]) AS"
    "   u(id, off) ORDER BY u.id, u.off) w, (SELECT " PG_NOW_MS " AS now) t"
    "   ORDER BY w.id"
    "   ON CONFLICT (scope, id) DO UPDATE SET owner = EXCLUDED.owner,"
    "   epoch = EXCLUDED.epoch, off = EXCLUDED.off, topic = EXCLUDED.topic,"
    "   part = EXCLUDED.part"
    " WHERE NOT " PG_MARK("khost_marks") " AND NOT " PG_LIVE("khost_marks")
    " RETURNING id, off)"
    " SELECT ins.id, coalesce(a.attempts, 0), ins.off FROM ins"
    " LEFT JOIN khost_attempts a ON a.scope = $1::integer AND a.id = ins.id";
// clang-format on

/* Of the IDs not taken, the marked ones (a statement of its own, which
 * sees the marks the claims waited for). */
static const char ahead_seen_sql[] =
    "SELECT id FROM khost_marks m WHERE scope = $1::integer AND"
    " id = ANY ($2::bytea[]) AND " PG_MARK("m");

/* Claims of this process ($1) given back: scopes $2, keys $3; a mark
 * by position among them stays. */
static const char give_back_sql[] =
    "DELETE FROM khost_marks m USING unnest($2::bigint[],"
    " $3::bytea[]) AS u(scope, id) WHERE m.scope = u.scope AND"
    " m.id = u.id AND m.owner = $1::integer AND NOT " PG_MARK("m");

/* The statements of every claim ahead, prepared on the claimer's
 * connection. */
static const pg_stmt_t st_ahead = {"khost_ahead", 1u},
                       st_seen = {"khost_ahead_seen", 2u};

/* mu held: the IDs of w still waiting for its answer leave the cache
 * (claimed one by one when they are asked for). */
static void window_forget(pg_store_t *p, const pg_window_t *w) {
  for (guint i = 0; i < w->keys->len; i++) {
    GBytes *k = g_ptr_array_index(w->keys, i);
    const pg_ahead_t *e = g_hash_table_lookup(p->ahead, k);
    if (e && e->win == w)
      g_hash_table_remove(p->ahead, k);
  }
}

/* Is w of that partition (a window without a topic is of none)? */
static int window_of(const pg_window_t *w, uint32_t scope, const char *topic,
                     int32_t partition) {
  return w->scope == scope && w->partition == partition && w->topic && topic &&
         strcmp(w->topic, topic) == 0;
}

/* This process's epoch of a partition whose records from offset `from`
 * on it claims, 0 when none could be made (on c, the claimer's
 * connection). A new one when there is none yet, or when `from` is below
 * the position it committed (the partition's offsets went back: a
 * replay): no row claimed in an epoch may be below its committed
 * position before it is handled. */
static int64_t epoch_for(pg_store_t *p, PGconn *c, uint32_t scope,
                         const char *topic, int32_t partition, int64_t from) {
  char *key = pg_epoch_key(scope, topic, partition);
  pgp_t a = {0};
  pthread_mutex_lock(&p->pos_mu);
  pg_epoch_t *e = g_hash_table_lookup(p->epochs, key);
  int64_t have = e && from >= e->through ? e->epoch : 0;
  pthread_mutex_unlock(&p->pos_mu);
  if (have) {
    g_free(key);
    return have;
  }
  pgp_i64(&a, p->host);
  pgp_i64(&a, scope);
  pgp_str(&a, topic);
  pgp_i64(&a, partition);
  pgp_i64(&a, from);
  PGresult *r =
      pg_exec(p, c,
              "INSERT INTO khost_epochs (host, scope, topic, part,"
              " through, last_at) VALUES ($1::integer, $2::integer,"
              " $3, $4::integer, $5::bigint, " PG_NOW_MS ") RETURNING epoch",
              &a, 0, NULL, NULL, 0);
  int64_t id = r ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  PQclear(r);
  if (id) {
    e = g_new0(pg_epoch_t, 1);
    e->epoch = id;
    e->through = from;
    pthread_mutex_lock(&p->pos_mu);
    g_hash_table_replace(p->epochs, key, e);
    pthread_mutex_unlock(&p->pos_mu);
  } else {
    g_free(key);
  }
  return id;
}

/* What the server said of a window. */
typedef struct pg_answer {
  int64_t epoch;
  PGresult *taken; /* ahead_sql's rows, NULL when it failed */
  PGresult *seen;  /* ahead_seen_sql's, when some were not taken */
} pg_answer_t;

/* The claimer's statements for w, mu not held. A failure is not an
 * error: store_claim() asks again, one by one. */
static void window_claim(pg_store_t *p, PGconn *c, unsigned *prepared,
                         const pg_window_t *w, pg_answer_t *ans) {
  pgp_t a = {0}, b = {0};
  pga_t *arr, *offs;
  ans->epoch =
      w->topic ? epoch_for(p, c, w->scope, w->topic, w->partition, w->from) : 0;
  pgp_i64(&a, w->scope);
  arr = pgp_array(&a, PGA_BYTEA);
  for (guint i = 0; i < w->keys->len; i++) {
    gsize len;
    const guint8 *d = g_bytes_get_data(g_ptr_array_index(w->keys, i), &len);
    pga_bytes(arr, d + 4, len - 4);
  }
  pgp_i64(&a, p->host);
  pgp_i64(&a, ans->epoch);
  offs = pgp_array(&a, PGA_INT8);
  for (guint i = 0; i < w->offs->len; i++)
    pga_i64(offs, g_array_index(w->offs, int64_t, i));
  pgp_str(&a, w->topic ? w->topic : "");
  pgp_i64(&a, w->partition);
  ans->taken = pg_exec_prepared(p, c, &st_ahead, prepared, ahead_sql, &a, 1,
                                NULL, NULL, 0);
  if (ans->taken && (guint)PQntuples(ans->taken) < w->keys->len) {
    pgp_i64(&b, w->scope);
    pgp_bytes(&b, arr->buf->data, arr->buf->len);
    ans->seen = pg_exec_prepared(p, c, &st_seen, prepared, ahead_seen_sql, &b,
                                 1, NULL, NULL, 0);
    pgp_free(&b);
  }
  pgp_free(&a);
}

/* mu held: the answer for w goes into the cache. A claim taken for an
 * ID no longer waiting for it (its partition dropped meanwhile, or the
 * ID released) goes into back (scopes, ids) to be given back. */
static void window_settle(pg_store_t *p, pg_window_t *w, const pg_answer_t *ans,
                          pga_t *scopes, pga_t *ids) {
  const PGresult *r = ans->taken;
  for (int i = 0; r && i < PQntuples(r); i++) {
    const char *id = PQgetvalue(r, i, 0);
    size_t len = (size_t)PQgetlength(r, i, 0);
    GBytes *k = ahead_key_of(w->scope, id, len);
    pg_ahead_t *e = g_hash_table_lookup(p->ahead, k);
    int mine = e && e->win == w;
    if (!mine) {
      pga_i64(scopes, w->scope);
      pga_bytes(ids, id, len);
    } else {
      e->state = AHEAD_CLAIMED;
      e->attempts = (uint32_t)pg_int(r, i, 1);
      e->tick = p->tick;
      e->win = NULL;
    }
    if (mine && ans->epoch) {
      pg_pos_t *ps = g_new0(pg_pos_t, 1);
      ps->epoch = ans->epoch;
      ps->off = pg_int(r, i, 2);
      ps->attempts = pg_int(r, i, 1) > 0;
      pthread_mutex_lock(&p->pos_mu);
      g_hash_table_replace(p->pos, g_bytes_ref(k), ps);
      pthread_mutex_unlock(&p->pos_mu);
    }
    g_bytes_unref(k);
  }
  for (int i = 0; ans->seen && i < PQntuples(ans->seen); i++) {
    GBytes *k = ahead_key_of(w->scope, PQgetvalue(ans->seen, i, 0),
                             (size_t)PQgetlength(ans->seen, i, 0));
    pg_ahead_t *e = g_hash_table_lookup(p->ahead, k);
    if (e && e->win == w) {
      e->state = AHEAD_SEEN;
      e->tick = p->tick;
      e->win = NULL;
    }
    g_bytes_unref(k);
  }
  window_forget(p, w); /* in flight elsewhere, or the statement failed */
  if (w->dropped && ans->epoch) {
    /* made after the partition was dropped: forgotten as its epoch was */
    char *key = pg_epoch_key(w->scope, w->topic, w->partition);
    pthread_mutex_lock(&p->pos_mu);
    const pg_epoch_t *e = g_hash_table_lookup(p->epochs, key);
    if (e && e->epoch == ans->epoch)
      g_hash_table_remove(p->epochs, key);
    pthread_mutex_unlock(&p->pos_mu);
    g_free(key);
  }
}

/* The IDs not asked for yet (nor on their way) become a window of the
 * claimer's: the caller goes on at once and finds their answers when it
 * asks for their claims. Without a claimer (it could not be started)
 * they are claimed one by one. */
void pg_claim_ahead(store_t *s, uint32_t scope, const char *topic,
                    int32_t partition, const void *const *ids,
                    const size_t *lens, const int64_t *offsets, size_t n) {
  pg_store_t *p = pgs(s);
  pg_window_t *w = g_new0(pg_window_t, 1);
  w->scope = scope;
  w->topic = g_strdup(topic);
  w->partition = partition;
  w->keys = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  w->offs = g_array_new(FALSE, FALSE, sizeof(int64_t));
  w->from = INT64_MAX;
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; claimers_on(p) && !p->stopping && i < n; i++) {
    if (lens[i] == 0)
      continue;
    GBytes *k = ahead_key(scope, ids[i], lens[i]);
    if (g_hash_table_contains(p->ahead, k)) { /* an ID twice: the first */
      g_bytes_unref(k);
      continue;
    }
    pg_ahead_t *e = g_new0(pg_ahead_t, 1);
    e->state = AHEAD_ASKED;
    e->tick = p->tick;
    e->win = w;
    g_hash_table_insert(p->ahead, g_bytes_ref(k), e);
    g_ptr_array_add(w->keys, k);
    g_array_append_val(w->offs, offsets[i]);
    w->from = offsets[i] < w->from ? offsets[i] : w->from;
  }
  if (w->keys->len > 0) {
    g_queue_push_tail(&p->windows, w);
    pthread_cond_broadcast(&p->claim_wake);
    w = NULL;
  }
  pthread_mutex_unlock(&p->mu);
  if (w)
    window_free(w);
}

/* mu held: the oldest window queued whose partition has none being
 * claimed (its epoch is made once, its windows claimed in order), taken
 * out of the queue; NULL when there is none. */
static pg_window_t *window_next(pg_store_t *p) {
  for (GList *l = p->windows.head; l; l = l->next) {
    pg_window_t *w = l->data;
    int busy = 0;
    for (int i = 0; i < PG_CLAIMERS; i++)
      busy |=
          p->claimers[i].claiming &&
          window_of(p->claimers[i].claiming, w->scope, w->topic, w->partition);
    if (busy)
      continue;
    g_queue_delete_link(&p->windows, l);
    return w;
  }
  return NULL;
}

/* A claimer: one window at a time, oldest first, on a connection of
 * its own (a lost one is reset before the next statement). Whoever waits
 * for a window is woken when its answer is in the cache. */
void *pg_claimer_main(void *arg) {
  struct pg_claimer *me = arg;
  pg_store_t *p = me->p;
  PGconn *c = PQconnectdb(p->conninfo);
  pg_window_t *w;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    w = NULL;
    while (!p->stopping && !(w = window_next(p)))
      pthread_cond_wait(&p->claim_wake, &p->mu);
    if (!w) /* stopping */
      break;
    me->claiming = w;
    pthread_mutex_unlock(&p->mu);
    pg_answer_t ans = {0};
    pgp_t b = {0};
    pga_t *scopes, *ids;
    window_claim(p, c, &me->prepared, w, &ans);
    pgp_i64(&b, p->host);
    scopes = pgp_array(&b, PGA_INT8);
    ids = pgp_array(&b, PGA_BYTEA);
    pthread_mutex_lock(&p->mu);
    window_settle(p, w, &ans, scopes, ids);
    pthread_cond_broadcast(&p->answered);
    pthread_mutex_unlock(&p->mu);
    if (ids->n > 0)
      pg_exec0(p, c, give_back_sql, &b, NULL, NULL, 0);
    pgp_free(&b);
    PQclear(ans.taken);
    PQclear(ans.seen);
    pthread_mutex_lock(&p->mu);
    me->claiming = NULL;
    pthread_cond_broadcast(&p->answered);
    pthread_cond_broadcast(&p->claim_wake); /* its partition is free */
    window_free(w);
  }
  /* Stopping: the windows not claimed are forgotten. */
  while ((w = g_queue_pop_head(&p->windows))) {
    window_forget(p, w);
    window_free(w);
  }
  pthread_cond_broadcast(&p->answered);
  pthread_mutex_unlock(&p->mu);
  PQfinish(c);
  return NULL;
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
  pgp_key(&q, a->event_id, a->event_id_len);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT attempts FROM khost_attempts WHERE scope = $1 "
                        "AND id = $2",
                        &q, 0, NULL, NULL, 0);
  pthread_mutex_unlock(&p->mu);
  pgp_free(&q);
  *count = r && PQntuples(r) ? (uint32_t)atoi(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  return *count > 0;
}

/* ------------------------------------------------------------ leases */

/* mu held: the next round; entries two rounds old leave the cache, and
 * the claims among them (taken ahead, never asked for) go into rel. */
static void ahead_expire(pg_store_t *p, pga_t *scopes, pga_t *ids) {
  GHashTableIter it;
  gpointer k, v;
  p->tick++;
  g_hash_table_iter_init(&it, p->ahead);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    pg_ahead_t *e = v;
    gsize len;
    const guint8 *d = g_bytes_get_data(k, &len);
    uint32_t scope;
    if (e->state == AHEAD_ASKED || e->tick + 2 > p->tick)
      continue;
    if (e->state == AHEAD_CLAIMED) {
      memcpy(&scope, d, 4);
      pga_i64(scopes, scope);
      pga_bytes(ids, d + 4, len - 4);
      pthread_mutex_lock(&p->pos_mu);
      g_hash_table_remove(p->pos, k);
      pthread_mutex_unlock(&p->pos_mu);
    }
    g_hash_table_iter_remove(&it);
  }
}

/* This process's lease extended. Its row is put back when it is gone:
 * another host deleted it as a trace too old to keep, because this one
 * did not reach the server for more than ten leases. The claims it
 * still holds are then live again, as the extended lease of a row that
 * was kept makes them. */
static void renew_lease(pg_store_t *p, PGconn *c) {
  pgp_t a = {0}, b = {0};
  pgp_i64(&a, p->host);
  pgp_i64(&a, p->lease_ms);
  PGresult *r = pg_exec(p, c,
                        "UPDATE khost_hosts SET lease_until = " PG_NOW_MS
                        " + $2::bigint WHERE host = $1::integer",
                        &a, 0, NULL, NULL, 0);
  int gone = r && strcmp(PQcmdTuples(r), "0") == 0;
  PQclear(r);
  pgp_i64(&b, p->host);
  pgp_i64(&b, p->lease_ms);
  pgp_str(&b, p->owner);
  if (gone &&
      pg_exec0(p, c,
               "INSERT INTO khost_hosts (host, name, lease_until) VALUES"
               " ($1::integer, $3, " PG_NOW_MS " + $2::bigint)"
               " ON CONFLICT (host) DO NOTHING",
               &b, NULL, NULL, 0) == 0)
    log_msg(KHOST_LOG_WARNING, "dedup",
            "postgresql store (%s): the row of khost_hosts of %s was gone "
            "(the server was not reached for more than ten leases): put "
            "back",
            p->display, p->owner);
}

/* mu held: the partition's windows not claimed yet are forgotten; the
 * one being claimed gives back what it takes when its answer comes. */
static void windows_dropped(pg_store_t *p, uint32_t scope, const char *topic,
                            int32_t partition) {
  for (GList *l = p->windows.head, *next; l; l = next) {
    pg_window_t *w = l->data;
    next = l->next;
    if (!window_of(w, scope, topic, partition))
      continue;
    window_forget(p, w);
    g_queue_delete_link(&p->windows, l);
    window_free(w);
  }
  for (int i = 0; i < PG_CLAIMERS; i++) {
    pg_window_t *w = p->claimers[i].claiming;
    if (w && window_of(w, scope, topic, partition)) {
      w->dropped = 1;
      window_forget(p, w);
    }
  }
}

/* The partition is no longer this process's: its epoch is forgotten (a
 * batch in flight writes its marks to their rows; claims made later, if
 * the partition comes back, are in a new epoch), and the claims taken
 * ahead in it and never asked for go back now, not two rounds of the
 * renewer later, so that the next owner takes them at once. */
void pg_part_dropped(store_t *s, uint32_t scope, const char *topic,
                     int32_t partition) {
  pg_store_t *p = pgs(s);
  char *key = pg_epoch_key(scope, topic, partition);
  pgp_t b = {0};
  pga_t *scopes, *ids;
  GHashTableIter it;
  gpointer k, v;
  pgp_i64(&b, p->host);
  scopes = pgp_array(&b, PGA_INT8);
  ids = pgp_array(&b, PGA_BYTEA);
  pthread_mutex_lock(&p->mu);
  windows_dropped(p, scope, topic, partition);
  pthread_mutex_lock(&p->pos_mu);
  pg_epoch_t *e = g_hash_table_lookup(p->epochs, key);
  int64_t epoch = e ? e->epoch : 0;
  g_hash_table_remove(p->epochs, key);
  g_hash_table_iter_init(&it, p->pos);
  while (epoch && g_hash_table_iter_next(&it, &k, &v)) {
    const pg_ahead_t *a = g_hash_table_lookup(p->ahead, k);
    gsize len;
    const guint8 *d = g_bytes_get_data(k, &len);
    uint32_t sc;
    if (((const pg_pos_t *)v)->epoch != epoch || !a ||
        a->state != AHEAD_CLAIMED)
      continue;
    memcpy(&sc, d, 4);
    pga_i64(scopes, sc);
    pga_bytes(ids, d + 4, len - 4);
    g_hash_table_remove(p->ahead, k);
    g_hash_table_iter_remove(&it);
  }
  pthread_mutex_unlock(&p->pos_mu);
  if (ids->n > 0)
    pg_exec0(p, p->conn, give_back_sql, &b, NULL, NULL, 0);
  pthread_mutex_unlock(&p->mu);
  pgp_free(&b);
  g_free(key);
}

/* One round: this process's lease extended, stale claims given back,
 * rows of processes long dead deleted. */
static void renew_round(pg_store_t *p, PGconn *c) {
  pgp_t b = {0};
  pga_t *scopes, *ids;
  pgp_i64(&b, p->host);
  scopes = pgp_array(&b, PGA_INT8);
  ids = pgp_array(&b, PGA_BYTEA);
  pthread_mutex_lock(&p->mu);
  ahead_expire(p, scopes, ids);
  pthread_mutex_unlock(&p->mu);
  if (ids->n > 0)
    pg_exec0(p, c, give_back_sql, &b, NULL, NULL, 0);
  renew_lease(p, c);
  pg_crash_forget(p, c);
  pgp_free(&b);
}

/* Every lease/3, this process's lease is extended: its claims outlive it
 * only when this process stops renewing it (it died, or lost the server
 * for longer than the lease). */
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
  /* A clean stop gives its claims back at once: they are of no host. */
  pgp_i64(&a, p->host);
  pg_exec0(p, c, "DELETE FROM khost_hosts WHERE host = $1::integer", &a, NULL,
           NULL, 0);
  PQfinish(c);
  return NULL;
}
