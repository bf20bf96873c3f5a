/*
 * The store on PostgreSQL: store.h's operations over libpq, plain SQL
 * (PostgreSQL 13 or newer, no extensions, READ COMMITTED), so that every
 * host of a group can point at one database and share its marks.
 *
 * Claims are rows of khost_claims with an owner (this process) and a
 * lease on the server's clock: a live claim of another owner is in
 * flight, an expired one is taken over. Marks and the removal of their
 * claims commit in one transaction on the batch's connection.
 *
 * Connections: one per batch (its thread), and one for the calls on the
 * store itself (claims, lookups, ranges), serialised by a mutex. A lost
 * connection is reset on the next call; meanwhile claims answer
 * STORE_IN_FLIGHT (the caller waits) and commits fail as transient.
 */
#include <glib.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_pg.h"

typedef struct pg_store {
  store_t base;
  pthread_mutex_t mu;
  PGconn *conn; /* the store's own calls, under mu */
  char *conninfo;
  char *display; /* conninfo without its password */
  char owner[96];
  int64_t lease_ms, retention_ms;
  int was_empty;      /* no marks at open */
  GHashTable *checks; /* scopes asked history_check_due */
  int64_t pruned, prune_runs;
  /* Lease renewal: a thread of its own, with its own connection. */
  pthread_t renewer;
  int renewing, stopping;
  int claims_down; /* the last claim failed (logged once) */
  pthread_cond_t wake;
} pg_store_t;

typedef struct pg_mark {
  uint32_t scope;
  GBytes *id;
  char *topic;
  int32_t partition;
  int64_t offset, handled;
  int outcome;
} pg_mark_t;

typedef struct pg_batch {
  store_batch_t base;
  PGconn *conn;
  GArray *marks; /* pg_mark_t */
} pg_batch_t;

static pg_store_t *pgs(store_t *s) {
  return (pg_store_t *)s;
}

/* Faults that may clear by themselves: the connection (class 08), a
 * serialization failure or deadlock (40), a server shutting down or
 * starting (57P0x). */
static int is_transient(PGconn *c, const PGresult *r) {
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (PQstatus(c) != CONNECTION_OK || !st)
    return 1;
  return strncmp(st, "08", 2) == 0 || strncmp(st, "40", 2) == 0 ||
         strncmp(st, "57P", 3) == 0;
}

static void set_err(pg_store_t *p, PGconn *c, const PGresult *r,
                    const char *what, char *err, size_t errlen) {
  const char *m = r ? PQresultErrorMessage(r) : "";
  if (!m || !*m)
    m = c ? PQerrorMessage(c) : "out of memory";
  if (err && errlen)
    snprintf(err, errlen, "postgresql store (%s): %s: %.*s", p->display, what,
             (int)strcspn(m, "\n"), m);
}

char *store_pg_display(const char *conninfo) {
  char *perr = NULL;
  PQconninfoOption *o = PQconninfoParse(conninfo, &perr);
  GString *s = g_string_new(NULL);
  PQfreemem(perr);
  if (!o)
    return g_string_free(s, FALSE), g_strdup("(unparsable conninfo)");
  for (PQconninfoOption *i = o; i->keyword; i++) {
    if (!i->val || strcmp(i->keyword, "password") == 0)
      continue;
    g_string_append_printf(s, "%s%s=%s", s->len ? " " : "", i->keyword, i->val);
  }
  PQconninfoFree(o);
  return g_string_free(s, FALSE);
}

/* A connection, or NULL with err. */
static PGconn *pg_connect(pg_store_t *p, char *err, size_t errlen) {
  PGconn *c = PQconnectdb(p->conninfo);
  if (c && PQstatus(c) == CONNECTION_OK)
    return c;
  set_err(p, c, NULL, "cannot connect", err, errlen);
  PQfinish(c);
  return NULL;
}

/* A lost connection is reset before use; 0 when it is usable. */
static int pg_ready(PGconn *c) {
  if (PQstatus(c) != CONNECTION_OK)
    PQreset(c);
  return PQstatus(c) == CONNECTION_OK ? 0 : -1;
}

/* Run sql with text parameters, except those listed binary (the IDs).
 * Returns the result (caller clears) or NULL with err and *transient. */
static PGresult *run(pg_store_t *p, PGconn *c, const char *sql, int n,
                     const char *const *v, const int *len, const int *bin,
                     int *transient, char *err, size_t errlen) {
  PGresult *r = NULL;
  ExecStatusType st;
  if (pg_ready(c) == 0)
    r = PQexecParams(c, sql, n, NULL, v, len, bin, 0);
  st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
    return r;
  if (transient)
    *transient = is_transient(c, r);
  set_err(p, c, r, sql, err, errlen);
  PQclear(r);
  return NULL;
}

/* A statement whose result is not needed. */
static int run0(pg_store_t *p, PGconn *c, const char *sql, int n,
                const char *const *v, const int *len, const int *bin,
                int *transient, char *err, size_t errlen) {
  PGresult *r = run(p, c, sql, n, v, len, bin, transient, err, errlen);
  PQclear(r);
  return r ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * Schema. */

static const char *const schema_v1[] = {
    "CREATE TABLE khost_schema (version integer NOT NULL)",
    "CREATE TABLE khost_scopes (scope serial PRIMARY KEY,"
    " pipeline text NOT NULL UNIQUE)",
    /* One row per ID: the newest handling of it. */
    "CREATE TABLE khost_marks (scope integer NOT NULL, id bytea NOT NULL,"
    " handled_at bigint NOT NULL, topic text NOT NULL, part integer NOT NULL,"
    " off bigint NOT NULL, outcome smallint NOT NULL,"
    " PRIMARY KEY (scope, id))",
    "CREATE INDEX khost_marks_handled ON khost_marks (handled_at)",
    /* Primary key (scope, id): a batch of claims can be one
     * INSERT ... ON CONFLICT ... RETURNING. */
    "CREATE TABLE khost_claims (scope integer NOT NULL, id bytea NOT NULL,"
    " owner text NOT NULL, lease_until bigint NOT NULL,"
    " PRIMARY KEY (scope, id))",
    "CREATE INDEX khost_claims_owner ON khost_claims (owner)",
    "CREATE TABLE khost_replay (seq bigserial PRIMARY KEY,"
    " scope integer NOT NULL, topic text NOT NULL, part integer NOT NULL,"
    " from_off bigint NOT NULL, to_off bigint NOT NULL,"
    " mode smallint NOT NULL, recorded_at bigint NOT NULL)",
    "CREATE TABLE khost_attempts (scope integer NOT NULL, id bytea NOT NULL,"
    " topic text NOT NULL, part integer NOT NULL, off bigint NOT NULL,"
    " attempts integer NOT NULL, PRIMARY KEY (scope, id))",
    "INSERT INTO khost_schema VALUES (1)", NULL};

/* The version found (0: no schema), or -1 with err. */
static int schema_version(pg_store_t *p, char *err, size_t errlen) {
  PGresult *r =
      run(p, p->conn, "SELECT to_regclass('khost_schema') IS NOT NULL", 0, NULL,
          NULL, NULL, NULL, err, errlen);
  int v = -1;
  if (!r)
    return -1;
  if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
    PQclear(r);
    return 0;
  }
  PQclear(r);
  r = run(p, p->conn, "SELECT max(version) FROM khost_schema", 0, NULL, NULL,
          NULL, NULL, err, errlen);
  if (r)
    v = atoi(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

static int schema_create(pg_store_t *p, char *err, size_t errlen) {
  int rc = run0(p, p->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, err, errlen);
  for (int i = 0; rc == 0 && schema_v1[i]; i++)
    rc = run0(p, p->conn, schema_v1[i], 0, NULL, NULL, NULL, NULL, err, errlen);
  if (rc == 0)
    return run0(p, p->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, err, errlen);
  PQclear(PQexec(p->conn, "ROLLBACK"));
  return -1;
}

/* The schema this khost knows, created when asked. */
static int schema_check(pg_store_t *p, int create, char *err, size_t errlen) {
  int v = schema_version(p, err, errlen);
  if (v < 0)
    return -1;
  if (v == 0 && create)
    return schema_create(p, err, errlen);
  if (v == STORE_PG_SCHEMA)
    return 0;
  if (v == 0)
    snprintf(err, errlen,
             "postgresql store (%s): no khost schema: create it with "
             "`khost store init -c FILE`",
             p->display);
  else
    snprintf(err, errlen,
             "postgresql store (%s): schema version %d, this khost knows "
             "version %d",
             p->display, v, STORE_PG_SCHEMA);
  return -1;
}

/* ------------------------------------------------------------------------
 * Operations. */

#define NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

/* Every lease/3, this process's claims are extended: a claim outlives its
 * lease only when this process stops renewing it (it died, or lost the
 * server for longer than the lease). */
static void *renew_main(void *arg) {
  pg_store_t *p = arg;
  PGconn *c = PQconnectdb(p->conninfo);
  char lease[24];
  const char *v[] = {p->owner, lease};
  snprintf(lease, sizeof(lease), "%lld", (long long)p->lease_ms);
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
    PQclear(run(p, c,
                "UPDATE khost_claims SET lease_until = " NOW_MS " + $2 "
                "WHERE owner = $1",
                2, v, NULL, NULL, NULL, NULL, 0));
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  /* A clean stop gives its claims back at once. */
  PQclear(run(p, c, "DELETE FROM khost_claims WHERE owner = $1", 1, v, NULL,
              NULL, NULL, NULL, 0));
  PQfinish(c);
  return NULL;
}

static void pg_close(store_t *s) {
  pg_store_t *p = pgs(s);
  if (p->renewing) {
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->renewer, NULL);
  }
  pthread_cond_destroy(&p->wake);
  PQfinish(p->conn);
  g_hash_table_destroy(p->checks);
  pthread_mutex_destroy(&p->mu);
  g_free(p->conninfo);
  g_free(p->display);
  g_free(p);
}

static int pg_scope(store_t *s, const char *pipeline, uint32_t *scope,
                    char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  const char *v[] = {pipeline};
  PGresult *r;
  pthread_mutex_lock(&p->mu);
  /* The no-op update makes RETURNING answer for an existing row too. */
  r = run(p, p->conn,
          "INSERT INTO khost_scopes (pipeline) VALUES ($1) ON CONFLICT "
          "(pipeline) DO UPDATE SET pipeline = EXCLUDED.pipeline "
          "RETURNING scope",
          1, v, NULL, NULL, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (!r)
    return -1;
  *scope = (uint32_t)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return 0;
}

/* First statement of a claim: is there a mark (and is it older than
 * $4), a live claim, and did this call take the claim (none, or an
 * expired one)? Inserting only where no mark exists, except for a
 * re-claim of an old mark. */
static const char claim_sql[] =
    "WITH m AS (SELECT handled_at FROM khost_marks"
    "   WHERE scope = $1 AND id = $2),"
    " ins AS (INSERT INTO khost_claims (scope, id, owner, lease_until)"
    "   SELECT $1, $2, $3, " NOW_MS " + $5"
    "   WHERE $6 AND (NOT EXISTS (SELECT 1 FROM m) OR"
    "     ($7 AND (SELECT handled_at FROM m) < $4))"
    "   ON CONFLICT (scope, id) DO UPDATE SET owner = EXCLUDED.owner,"
    "     lease_until = EXCLUDED.lease_until"
    "   WHERE khost_claims.lease_until < " NOW_MS " RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM m), EXISTS (SELECT 1 FROM ins),"
    "  EXISTS (SELECT 1 FROM khost_claims WHERE scope = $1 AND id = $2"
    "   AND lease_until >= " NOW_MS ")";

/* A claim taken while a mark was being committed: the second look, with
 * a snapshot of its own, sees that commit. */
static int claim_recheck(pg_store_t *p, const char *const *v, const int *len,
                         const int *bin) {
  PGresult *r = run(p, p->conn,
                    "SELECT EXISTS (SELECT 1 FROM khost_marks WHERE scope = $1"
                    " AND id = $2)",
                    2, v, len, bin, NULL, NULL, 0);
  int ok = r != NULL, seen = !r || strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (!seen)
    return STORE_NEW;
  PQclear(run(p, p->conn,
              "DELETE FROM khost_claims WHERE scope = $1 AND id = $2 AND "
              "owner = $3",
              3, v, len, bin, NULL, NULL, 0));
  return ok ? STORE_SEEN : STORE_IN_FLIGHT;
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

static int pg_claim(store_t *s, uint32_t scope, const void *id, size_t len,
                    int mode, int64_t before_ms) {
  pg_store_t *p = pgs(s);
  char sc[16], before[24], lease[24];
  snprintf(sc, sizeof(sc), "%u", scope);
  snprintf(before, sizeof(before), "%lld", (long long)before_ms);
  snprintf(lease, sizeof(lease), "%lld", (long long)p->lease_ms);
  const char *v[] = {sc,
                     id,
                     p->owner,
                     before,
                     lease,
                     mode == STORE_LOOKUP ? "false" : "true",
                     mode == STORE_CLAIM_AGAIN ? "true" : "false"};
  int lens[] = {0, (int)len, 0, 0, 0, 0, 0}, bin[] = {0, 1, 0, 0, 0, 0, 0};
  int ans = STORE_IN_FLIGHT; /* store unreachable: the caller waits */
  char err[512];
  pthread_mutex_lock(&p->mu);
  PGresult *r =
      run(p, p->conn, claim_sql, 7, v, lens, bin, NULL, err, sizeof(err));
  claims_health(p, r != NULL, err);
  if (r)
    ans = claim_answer(r, mode);
  if (r && ans == STORE_NEW && mode == STORE_CLAIM)
    ans = claim_recheck(p, v, lens, bin);
  pthread_mutex_unlock(&p->mu);
  PQclear(r);
  return ans;
}

static void pg_release(store_t *s, uint32_t scope, const void *id, size_t len) {
  pg_store_t *p = pgs(s);
  char sc[16];
  snprintf(sc, sizeof(sc), "%u", scope);
  const char *v[] = {sc, id, p->owner};
  int lens[] = {0, (int)len, 0}, bin[] = {0, 1, 0};
  /* Lost with the connection: the lease frees it. */
  pthread_mutex_lock(&p->mu);
  PQclear(run(p, p->conn,
              "DELETE FROM khost_claims WHERE scope = $1 AND id = $2 AND "
              "owner = $3",
              3, v, lens, bin, NULL, NULL, 0));
  pthread_mutex_unlock(&p->mu);
}

static int pg_batch_open(store_t *s, store_batch_t **out, char *err,
                         size_t errlen) {
  pg_batch_t *b = g_new0(pg_batch_t, 1);
  b->conn = pg_connect(pgs(s), err, errlen);
  if (!b->conn) {
    g_free(b);
    return -1;
  }
  b->base.store = s;
  b->marks = g_array_new(FALSE, FALSE, sizeof(pg_mark_t));
  *out = &b->base;
  return 0;
}

static void pg_batch_discard(store_batch_t *bb) {
  pg_batch_t *b = (pg_batch_t *)bb;
  for (guint i = 0; i < b->marks->len; i++) {
    pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    g_bytes_unref(m->id);
    g_free(m->topic);
  }
  g_array_set_size(b->marks, 0);
}

static void pg_batch_close(store_batch_t *bb) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_batch_discard(bb);
  g_array_free(b->marks, TRUE);
  PQfinish(b->conn);
  g_free(b);
}

static int pg_batch_add_mark(store_batch_t *bb, const store_mark_t *m) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_mark_t x = {m->scope,           g_bytes_new(m->event_id, m->event_id_len),
                 g_strdup(m->topic), m->partition,
                 m->offset,          m->handled_at_ms,
                 m->outcome};
  g_array_append_val(b->marks, x);
  return 0;
}

/* One mark: the newest handling kept, its claim and its recorded calls
 * gone (the record has an outcome). */
static int commit_mark(pg_batch_t *b, const pg_mark_t *m, int *transient,
                       char *err, size_t errlen) {
  pg_store_t *p = pgs(b->base.store);
  char sc[16], part[16], off[24], at[24], oc[8];
  gsize idlen;
  const void *id = g_bytes_get_data(m->id, &idlen);
  snprintf(sc, sizeof(sc), "%u", m->scope);
  snprintf(part, sizeof(part), "%d", m->partition);
  snprintf(off, sizeof(off), "%lld", (long long)m->offset);
  snprintf(at, sizeof(at), "%lld", (long long)m->handled);
  snprintf(oc, sizeof(oc), "%d", m->outcome);
  const char *v[] = {sc, id, at, m->topic, part, off, oc, p->owner};
  int lens[] = {0, (int)idlen, 0, 0, 0, 0, 0, 0};
  int bin[] = {0, 1, 0, 0, 0, 0, 0, 0};
  return run0(p, b->conn,
              "WITH c AS (DELETE FROM khost_claims WHERE scope = $1 AND"
              "  id = $2 AND owner = $8),"
              " a AS (DELETE FROM khost_attempts WHERE scope = $1 AND id = $2)"
              " INSERT INTO khost_marks VALUES ($1, $2, $3, $4, $5, $6, $7)"
              " ON CONFLICT (scope, id) DO UPDATE SET handled_at ="
              " GREATEST(khost_marks.handled_at, EXCLUDED.handled_at),"
              " topic = EXCLUDED.topic, part = EXCLUDED.part,"
              " off = EXCLUDED.off, outcome = EXCLUDED.outcome",
              8, v, lens, bin, transient, err, errlen);
}

static int pg_batch_commit(store_batch_t *bb, int *transient, char *err,
                           size_t errlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_store_t *p = pgs(bb->store);
  int t = 0, rc;
  if (b->marks->len == 0)
    return 0;
  rc = run0(p, b->conn, "BEGIN", 0, NULL, NULL, NULL, &t, err, errlen);
  for (guint i = 0; rc == 0 && i < b->marks->len; i++)
    rc =
        commit_mark(b, &g_array_index(b->marks, pg_mark_t, i), &t, err, errlen);
  if (rc == 0)
    rc = run0(p, b->conn, "COMMIT", 0, NULL, NULL, NULL, &t, err, errlen);
  if (rc != 0 && PQstatus(b->conn) == CONNECTION_OK)
    PQclear(PQexec(b->conn, "ROLLBACK"));
  if (rc == 0)
    pg_batch_discard(bb);
  else if (transient)
    *transient = t;
  return rc;
}

static int pg_prune(store_t *s, int64_t now_ms, int64_t *removed, char *err,
                    size_t errlen) {
  pg_store_t *p = pgs(s);
  char cut[24];
  const char *v[] = {cut};
  PGresult *r = NULL;
  int64_t n = 0;
  int rc = 0;
  snprintf(cut, sizeof(cut), "%lld", (long long)(now_ms - p->retention_ms));
  pthread_mutex_lock(&p->mu);
  if (p->retention_ms > 0)
    r = run(p, p->conn, "DELETE FROM khost_marks WHERE handled_at < $1", 1, v,
            NULL, NULL, NULL, err, errlen);
  if (r)
    n = strtoll(PQcmdTuples(r), NULL, 10);
  else if (p->retention_ms > 0)
    rc = -1;
  p->pruned += n;
  p->prune_runs++;
  pthread_mutex_unlock(&p->mu);
  if (removed)
    *removed = n;
  PQclear(r);
  return rc;
}

static int pg_replay_ranges(store_t *s, uint32_t scope, const char *topic,
                            int32_t partition, store_range_t **out, size_t *n,
                            char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  char sc[16], part[16];
  snprintf(sc, sizeof(sc), "%u", scope);
  snprintf(part, sizeof(part), "%d", partition);
  const char *v[] = {sc, topic, part};
  *out = NULL;
  *n = 0;
  pthread_mutex_lock(&p->mu);
  PGresult *r = run(p, p->conn,
                    "SELECT from_off, to_off, mode, recorded_at FROM "
                    "khost_replay WHERE scope = $1 AND topic = $2 AND part = "
                    "$3 ORDER BY seq DESC",
                    3, v, NULL, NULL, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (!r)
    return -1;
  *n = (size_t)PQntuples(r);
  if (*n)
    *out = calloc(*n, sizeof(**out));
  for (size_t i = 0; i < *n; i++) {
    (*out)[i].from = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
    (*out)[i].to = strtoll(PQgetvalue(r, (int)i, 1), NULL, 10);
    (*out)[i].mode = atoi(PQgetvalue(r, (int)i, 2));
    (*out)[i].recorded_ms = strtoll(PQgetvalue(r, (int)i, 3), NULL, 10);
  }
  PQclear(r);
  return 0;
}

int store_pg_add_range(store_t *s, uint32_t scope, const char *topic,
                       int32_t partition, const store_range_t *rg, char *err,
                       size_t errlen) {
  pg_store_t *p = pgs(s);
  char sc[16], part[16], from[24], to[24], mode[8], at[24];
  snprintf(sc, sizeof(sc), "%u", scope);
  snprintf(part, sizeof(part), "%d", partition);
  snprintf(from, sizeof(from), "%lld", (long long)rg->from);
  snprintf(to, sizeof(to), "%lld", (long long)rg->to);
  snprintf(mode, sizeof(mode), "%d", rg->mode);
  snprintf(at, sizeof(at), "%lld", (long long)rg->recorded_ms);
  const char *v[] = {sc, topic, part, from, to, mode, at};
  pthread_mutex_lock(&p->mu);
  int rc = run0(p, p->conn,
                "INSERT INTO khost_replay (scope, topic, part, from_off, "
                "to_off, mode, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, "
                "$7)",
                7, v, NULL, NULL, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* Calls recorded for a record. Whether the process before stopped
 * uncleanly is not known to this store yet: only recorded calls count. */
static int pg_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                       uint32_t *count) {
  pg_store_t *p = pgs(s);
  char sc[16];
  snprintf(sc, sizeof(sc), "%u", a->scope);
  const char *v[] = {sc, a->event_id};
  int lens[] = {0, (int)a->event_id_len}, bin[] = {0, 1};
  (void)budget;
  pthread_mutex_lock(&p->mu);
  PGresult *r = run(p, p->conn,
                    "SELECT attempts FROM khost_attempts WHERE scope = $1 AND "
                    "id = $2",
                    2, v, lens, bin, NULL, NULL, 0);
  pthread_mutex_unlock(&p->mu);
  *count = r && PQntuples(r) ? (uint32_t)atoi(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  return *count > 0;
}

static int pg_attempts_set(store_batch_t *bb, const store_attempt_t *a,
                           char *err, size_t errlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  char sc[16], part[16], off[24], n[16];
  snprintf(sc, sizeof(sc), "%u", a->scope);
  snprintf(part, sizeof(part), "%d", a->partition);
  snprintf(off, sizeof(off), "%lld", (long long)a->offset);
  snprintf(n, sizeof(n), "%u", a->attempts);
  const char *v[] = {sc, a->event_id, a->topic, part, off, n};
  int lens[] = {0, (int)a->event_id_len, 0, 0, 0, 0};
  int bin[] = {0, 1, 0, 0, 0, 0};
  if (a->attempts == 0)
    return run0(pgs(bb->store), b->conn,
                "DELETE FROM khost_attempts WHERE scope = $1 AND id = $2", 2, v,
                lens, bin, NULL, err, errlen);
  return run0(pgs(bb->store), b->conn,
              "INSERT INTO khost_attempts VALUES ($1, $2, $3, $4, $5, $6)"
              " ON CONFLICT (scope, id) DO UPDATE SET attempts ="
              " EXCLUDED.attempts",
              6, v, lens, bin, NULL, err, errlen);
}

/* The planner's estimate: a count of every mark would scan the table. */
static void pg_stats(store_t *s, store_stats_t *out) {
  pg_store_t *p = pgs(s);
  pthread_mutex_lock(&p->mu);
  PGresult *r = run(p, p->conn,
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                    "WHERE oid = 'khost_marks'::regclass",
                    0, NULL, NULL, NULL, NULL, NULL, 0);
  out->ids = r ? (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  out->pruned = p->pruned;
  out->prune_runs = p->prune_runs;
  pthread_mutex_unlock(&p->mu);
  PQclear(r);
}

static int pg_history_check_due(store_t *s, uint32_t scope) {
  pg_store_t *p = pgs(s);
  int due;
  pthread_mutex_lock(&p->mu);
  due =
      p->was_empty && g_hash_table_add(p->checks, GUINT_TO_POINTER(scope + 1u));
  pthread_mutex_unlock(&p->mu);
  return due;
}

static const store_ops_t pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .scope = pg_scope,
    .claim = pg_claim,
    .release = pg_release,
    .batch_open = pg_batch_open,
    .batch_close = pg_batch_close,
    .batch_add_mark = pg_batch_add_mark,
    .batch_commit = pg_batch_commit,
    .batch_discard = pg_batch_discard,
    .prune = pg_prune,
    .replay_ranges = pg_replay_ranges,
    .attempts = pg_attempts,
    .attempts_set = pg_attempts_set,
    .stats = pg_stats,
    .history_check_due = pg_history_check_due,
};

static int was_empty(pg_store_t *p, char *err, size_t errlen) {
  PGresult *r = run(p, p->conn, "SELECT NOT EXISTS (SELECT 1 FROM khost_marks)",
                    0, NULL, NULL, NULL, NULL, err, errlen);
  if (!r)
    return -1;
  p->was_empty = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  return 0;
}

int store_pg_open(store_t **out, const store_pg_opts_t *opts, char *err,
                  size_t errlen) {
  pg_store_t *p = g_new0(pg_store_t, 1);
  char host[64] = "";
  p->base.ops = &pg_ops;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  p->checks = g_hash_table_new(g_direct_hash, g_direct_equal);
  p->conninfo = g_strdup(opts->conninfo);
  p->display = store_pg_display(opts->conninfo);
  p->lease_ms = opts->lease_ms > 0 ? opts->lease_ms : 20000;
  p->retention_ms = opts->retention_ms;
  gethostname(host, sizeof(host) - 1);
  snprintf(p->owner, sizeof(p->owner), "%s/%d/%08x", host, (int)getpid(),
           g_random_int());
  p->conn = pg_connect(p, err, errlen);
  if (!p->conn || schema_check(p, opts->create, err, errlen) != 0 ||
      was_empty(p, err, errlen) != 0) {
    pg_close(&p->base);
    return -1;
  }
  p->renewing = pthread_create(&p->renewer, NULL, renew_main, p) == 0;
  *out = &p->base;
  return 0;
}
