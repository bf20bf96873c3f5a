/*
 * Administration of the PostgreSQL store (store_pg_admin.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "store_pg_admin.h"
#include "store_pg_int.h"

/* Rows deleted per transaction. */
#define ADMIN_CHUNK 2000

/* A statement on the store's connection, under its lock. */
static PGresult *admin_exec(pg_store_t *p, const char *sql, pgp_t *a, char *err,
                            size_t errlen) {
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn, sql, a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  pgp_free(a);
  return r;
}

/* The one bigint of a one-row result (a count), or -1 with err. */
static int count_of(pg_store_t *p, const char *sql, pgp_t *a, int64_t *n,
                    char *err, size_t errlen) {
  PGresult *r = admin_exec(p, sql, a, err, errlen);
  if (!r)
    return -1;
  *n = pg_int(r, 0, 0);
  PQclear(r);
  return 0;
}

/* Repeat a chunked DELETE ($last is the chunk size) until a chunk comes
 * back short: each is a transaction of its own. */
static int delete_chunks(pg_store_t *p, const char *sql, pgp_t *a,
                         int64_t *removed, char *err, size_t errlen) {
  int64_t n;
  pgp_i64(a, ADMIN_CHUNK);
  *removed = 0;
  do {
    pthread_mutex_lock(&p->mu);
    PGresult *r = pg_exec(p, p->conn, sql, a, 0, NULL, err, errlen);
    pthread_mutex_unlock(&p->mu);
    if (!r) {
      pgp_free(a);
      return -1;
    }
    n = strtoll(PQcmdTuples(r), NULL, 10);
    *removed += n;
    PQclear(r);
  } while (n == ADMIN_CHUNK);
  pgp_free(a);
  return 0;
}

int store_pg_find_scope(store_t *s, const char *pipeline, uint32_t *scope,
                        int *found, char *err, size_t errlen) {
  pgp_t a = {0};
  pgp_str(&a, pipeline);
  PGresult *r = admin_exec(pgs(s),
                           "SELECT scope::bigint FROM khost_scopes WHERE "
                           "pipeline = $1",
                           &a, err, errlen);
  if (!r)
    return -1;
  *found = PQntuples(r) > 0;
  if (*found)
    *scope = (uint32_t)pg_int(r, 0, 0);
  PQclear(r);
  return 0;
}

int store_pg_dedup_stats(store_t *s, dadm_stats_t **out, size_t *n, char *err,
                         size_t errlen) {
  PGresult *r = admin_exec(
      pgs(s),
      "SELECT s.pipeline, count(m.id), coalesce(min(m.handled_at), 0),"
      " coalesce(max(m.handled_at), 0), (SELECT count(*) FROM khost_replay"
      " r WHERE r.scope = s.scope) FROM khost_scopes s LEFT JOIN khost_marks"
      " m ON m.scope = s.scope AND " PG_MARK(
          "m") " GROUP BY s.scope, s.pipeline"
               " ORDER BY s.pipeline",
      NULL, err, errlen);
  *out = NULL;
  *n = 0;
  if (!r)
    return -1;
  *n = (size_t)PQntuples(r);
  *out = g_new0(dadm_stats_t, *n ? *n : 1);
  for (int i = 0; i < (int)*n; i++) {
    (*out)[i].pipeline =
        g_strndup(PQgetvalue(r, i, 0), (gsize)PQgetlength(r, i, 0));
    (*out)[i].marks = pg_int(r, i, 1);
    (*out)[i].oldest_ms = pg_int(r, i, 2);
    (*out)[i].newest_ms = pg_int(r, i, 3);
    (*out)[i].replays = pg_int(r, i, 4);
  }
  PQclear(r);
  return 0;
}

int store_pg_lookup(store_t *s, uint32_t scope, const void *id, size_t len,
                    dadm_mark_t **out, size_t *n, char *err, size_t errlen) {
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_key(&a, id, len);
  PGresult *r =
      admin_exec(pgs(s),
                 "SELECT topic, part, off, handled_at, " PG_OUTCOME(
                     "m") "::integer FROM khost_marks m"
                          " WHERE scope = $1 AND id = $2 AND " PG_MARK("m"),
                 &a, err, errlen);
  *out = NULL;
  *n = 0;
  if (!r)
    return -1;
  *n = (size_t)PQntuples(r);
  *out = g_new0(dadm_mark_t, *n ? *n : 1);
  for (int i = 0; i < (int)*n; i++) {
    (*out)[i].topic =
        g_strndup(PQgetvalue(r, i, 0), (gsize)PQgetlength(r, i, 0));
    (*out)[i].partition = (int32_t)pg_int(r, i, 1);
    (*out)[i].offset = pg_int(r, i, 2);
    (*out)[i].handled_at_ms = pg_int(r, i, 3);
    (*out)[i].outcome = (int)pg_int(r, i, 4) == STORE_OUTCOME_OK
                            ? DEDUP_OUTCOME_OK
                            : DEDUP_OUTCOME_FAIL;
  }
  PQclear(r);
  return 0;
}

int store_pg_forget_id(store_t *s, uint32_t scope, const void *id, size_t len,
                       int dry_run, int64_t *removed, char *err,
                       size_t errlen) {
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_key(&a, id, len);
  /* A claim in flight is not a mark: its host keeps it. */
  return count_of(
      pgs(s),
      dry_run ? "SELECT count(*) FROM khost_marks m WHERE scope = "
                "$1 AND id = $2 AND " PG_MARK("m")
              : "WITH d AS (DELETE FROM khost_marks m WHERE scope = "
                "$1 AND id = $2 AND " PG_MARK("m") " RETURNING 1)"
                                                   " SELECT count(*) FROM d",
      &a, removed, err, errlen);
}

int store_pg_forget_scope(store_t *s, uint32_t scope, int dry_run,
                          int64_t *removed, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0}, b = {0};
  pgp_i64(&a, scope);
  if (dry_run)
    return count_of(p, "SELECT count(*) FROM khost_marks WHERE scope = $1", &a,
                    removed, err, errlen);
  if (delete_chunks(p,
                    "DELETE FROM khost_marks WHERE ctid = ANY (ARRAY (SELECT "
                    "ctid FROM khost_marks WHERE scope = $1 LIMIT $2))",
                    &a, removed, err, errlen) < 0)
    return -1;
  pgp_i64(&b, scope);
  PQclear(admin_exec(p, "DELETE FROM khost_replay WHERE scope = $1", &b, err,
                     errlen));
  return 0;
}

int store_pg_prune_before(store_t *s, int64_t cutoff_ms, int64_t *removed,
                          char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0}, b = {0};
  pgp_i64(&a, cutoff_ms);
  if (delete_chunks(p,
                    "DELETE FROM khost_marks WHERE ctid = ANY (ARRAY (SELECT "
                    "ctid FROM khost_marks WHERE since < $1 LIMIT $2))",
                    &a, removed, err, errlen) < 0)
    return -1;
  pgp_i64(&b, cutoff_ms);
  PGresult *r = admin_exec(p, "DELETE FROM khost_replay WHERE recorded_at < $1",
                           &b, err, errlen);
  PQclear(r);
  return r ? 0 : -1;
}

int store_pg_state_stats(store_t *s, uint32_t scope, int64_t *keys,
                         int64_t *bytes, char *err, size_t errlen) {
  pgp_t a = {0};
  pgp_i64(&a, scope);
  PGresult *r = admin_exec(pgs(s),
                           "SELECT count(*), coalesce(sum(length(key) +"
                           " length(val)), 0)::bigint FROM khost_state"
                           " WHERE scope = $1",
                           &a, err, errlen);
  if (!r)
    return -1;
  *keys = pg_int(r, 0, 0);
  *bytes = pg_int(r, 0, 1);
  PQclear(r);
  return 0;
}
