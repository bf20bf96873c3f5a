/*
 * The parking lot on the PostgreSQL store (store_pg_int.h): the table
 * khost_parked of schema version 3, one row per (scope, topic, partition,
 * offset). A batch's parked records and removals are written in the
 * batch's transaction, one statement per record (records fail for good
 * rarely; a batch parks a few at most). `khost parked` reads and removes
 * on the store's own connection, beside running hosts: every host sees
 * one lot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_parked.h"
#include "store_pg_int.h"

struct pg_parked_buf {
  GPtrArray *recs; /* store_parked_t *, copies: to park */
  GPtrArray *gone; /* store_parked_t *, copies: to remove */
};

pg_parked_buf_t *pg_parked_new(void) {
  pg_parked_buf_t *b = g_new0(pg_parked_buf_t, 1);
  b->recs = g_ptr_array_new_with_free_func((GDestroyNotify)store_parked_free);
  b->gone = g_ptr_array_new_with_free_func((GDestroyNotify)store_parked_free);
  return b;
}

void pg_parked_free(pg_parked_buf_t *b) {
  if (!b)
    return;
  g_ptr_array_free(b->recs, TRUE);
  g_ptr_array_free(b->gone, TRUE);
  g_free(b);
}

void pg_parked_clear(pg_parked_buf_t *b) {
  g_ptr_array_set_size(b->recs, 0);
  g_ptr_array_set_size(b->gone, 0);
}

size_t pg_parked_len(const pg_parked_buf_t *b) {
  return b->recs->len + b->gone->len;
}

void pg_parked_add(pg_parked_buf_t *b, const store_parked_t *p, int remove) {
  g_ptr_array_add(remove ? b->gone : b->recs, store_parked_dup(p));
}

/* A bytea parameter that may be SQL null. */
static void bytes_or_null(pgp_t *a, const void *data, size_t len) {
  if (data)
    pgp_bytes(a, data, len);
  else
    pgp_str(a, NULL);
}

static const char park_sql[] =
    "INSERT INTO khost_parked VALUES ($1::integer, $2, $3::integer,"
    " $4::bigint, $5::bigint, $6::bytea, $7::bytea, $8::bytea, $9::bytea,"
    " $10, $11::integer, $12::bigint)"
    " ON CONFLICT (scope, topic, part, off) DO UPDATE SET"
    " ts = EXCLUDED.ts, key = EXCLUDED.key, val = EXCLUDED.val,"
    " headers = EXCLUDED.headers, event_id = EXCLUDED.event_id,"
    " reason = EXCLUDED.reason, attempts = EXCLUDED.attempts,"
    " parked_at = EXCLUDED.parked_at";

static const char unpark_sql[] =
    "DELETE FROM khost_parked WHERE scope = $1::integer AND topic = $2 AND"
    " part = $3::integer AND off = $4::bigint";

/* The key columns of p: scope, topic, partition, offset. */
static void key_params(pgp_t *a, const store_parked_t *p) {
  pgp_i64(a, p->scope);
  pgp_str(a, p->topic);
  pgp_i64(a, p->partition);
  pgp_i64(a, p->offset);
}

static int park_one(pg_store_t *s, PGconn *c, const store_parked_t *p,
                    int *transient, char *err, size_t errlen) {
  pgp_t a = {0};
  key_params(&a, p);
  pgp_i64(&a, p->timestamp_ms);
  bytes_or_null(&a, p->key, p->key_len);
  bytes_or_null(&a, p->value, p->value_len);
  pgp_bytes(&a, p->headers, p->headers_len);
  bytes_or_null(&a, p->event_id, p->event_id_len);
  pgp_str(&a, p->reason ? p->reason : "");
  pgp_i64(&a, p->attempts);
  pgp_i64(&a, p->parked_at_ms);
  int rc = pg_exec0(s, c, park_sql, &a, transient, err, errlen);
  pgp_free(&a);
  return rc;
}

int pg_parked_commit(pg_store_t *s, PGconn *c, const pg_parked_buf_t *b,
                     int *transient, char *err, size_t errlen) {
  int rc = 0;
  for (guint i = 0; rc == 0 && i < b->gone->len; i++) {
    pgp_t a = {0};
    key_params(&a, b->gone->pdata[i]);
    rc = pg_exec0(s, c, unpark_sql, &a, transient, err, errlen);
    pgp_free(&a);
  }
  for (guint i = 0; rc == 0 && i < b->recs->len; i++)
    rc = park_one(s, c, b->recs->pdata[i], transient, err, errlen);
  return rc;
}

/* ------------------------------------------------------------ the lot */

/* A bytea column as a copy (NULL for SQL null, never NULL for empty). */
static const void *column_copy(const PGresult *r, int row, int col,
                               size_t *len) {
  *len = 0;
  if (PQgetisnull(r, row, col))
    return NULL;
  *len = (size_t)PQgetlength(r, row, col);
  return *len ? g_memdup2(PQgetvalue(r, row, col), *len) : g_malloc0(1);
}

static store_parked_t *row_of(const PGresult *r, int i, uint32_t scope) {
  store_parked_t *p = g_new0(store_parked_t, 1);
  p->scope = scope;
  p->topic = g_strndup(PQgetvalue(r, i, 0), (gsize)PQgetlength(r, i, 0));
  p->partition = (int32_t)pg_int(r, i, 1);
  p->offset = pg_int(r, i, 2);
  p->timestamp_ms = pg_int(r, i, 3);
  p->key = column_copy(r, i, 4, &p->key_len);
  p->value = column_copy(r, i, 5, &p->value_len);
  p->headers = column_copy(r, i, 6, &p->headers_len);
  p->event_id = column_copy(r, i, 7, &p->event_id_len);
  p->reason = g_strndup(PQgetvalue(r, i, 8), (gsize)PQgetlength(r, i, 8));
  p->attempts = (uint32_t)pg_int(r, i, 9);
  p->parked_at_ms = pg_int(r, i, 10);
  return p;
}

int pg_parked_list(store_t *s, uint32_t scope, const store_parked_filter_t *f,
                   store_parked_t ***out, size_t *n, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_str(&a, f->topic);
  pgp_i64(&a, f->partition);
  pgp_i64(&a, f->offset);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(
      p, p->conn,
      "SELECT topic, part, off, ts, key, val, headers, event_id, reason,"
      " attempts, parked_at FROM khost_parked WHERE scope = $1::integer"
      " AND ($2::text IS NULL OR topic = $2) AND ($3::integer < 0 OR"
      " part = $3) AND ($4::bigint < 0 OR off = $4)"
      " ORDER BY topic, part, off",
      &a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  pgp_free(&a);
  *out = NULL;
  *n = 0;
  if (!r)
    return -1;
  *n = (size_t)PQntuples(r);
  *out = g_new0(store_parked_t *, *n ? *n : 1);
  for (int i = 0; i < (int)*n; i++)
    (*out)[i] = row_of(r, i, scope);
  PQclear(r);
  return 0;
}

int pg_parked_remove(store_t *s, const store_parked_t *rec, int *removed,
                     char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  key_params(&a, rec);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn, unpark_sql, &a, 0, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  pgp_free(&a);
  if (!r)
    return -1;
  *removed = strtoll(PQcmdTuples(r), NULL, 10) > 0;
  PQclear(r);
  return 0;
}
