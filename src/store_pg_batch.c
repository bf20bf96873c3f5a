/*
 * A batch on the PostgreSQL store: what it buffers, committed in one
 * transaction on the batch's own connection, one statement per kind of
 * entry (the marks, with their claims and recorded attempts removed),
 * whatever the number of records.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"

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

int pg_batch_open(store_t *s, store_batch_t **out, char *err, size_t errlen) {
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

void pg_batch_discard(store_batch_t *bb) {
  pg_batch_t *b = (pg_batch_t *)bb;
  for (guint i = 0; i < b->marks->len; i++) {
    pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    g_bytes_unref(m->id);
    g_free(m->topic);
  }
  g_array_set_size(b->marks, 0);
}

void pg_batch_close(store_batch_t *bb) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_batch_discard(bb);
  g_array_free(b->marks, TRUE);
  PQfinish(b->conn);
  g_free(b);
}

int pg_batch_add_mark(store_batch_t *bb, const store_mark_t *m) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_mark_t x = {m->scope,           g_bytes_new(m->event_id, m->event_id_len),
                 g_strdup(m->topic), m->partition,
                 m->offset,          m->handled_at_ms,
                 m->outcome};
  g_array_append_val(b->marks, x);
  return 0;
}

/* Every mark of the batch: the newest handling of an ID kept, its claim
 * and its recorded calls gone (the record has an outcome). Rows in ID
 * order: two hosts' batches lock them in one order. */
static const char marks_sql[] =
    "WITH b AS (SELECT DISTINCT ON (scope, id) * FROM unnest($1::integer[],"
    "   $2::bytea[], $3::bigint[], $4::text[], $5::integer[], $6::bigint[],"
    "   $7::smallint[]) AS u(scope, id, handled_at, topic, part, off,"
    "   outcome) ORDER BY scope, id, handled_at DESC),"
    " c AS (DELETE FROM khost_claims k USING b WHERE k.scope = b.scope AND"
    "   k.id = b.id AND k.owner = $8),"
    " a AS (DELETE FROM khost_attempts x USING b WHERE x.scope = b.scope AND"
    "   x.id = b.id)"
    " INSERT INTO khost_marks SELECT * FROM b ORDER BY scope, id"
    " ON CONFLICT (scope, id) DO UPDATE SET handled_at ="
    " GREATEST(khost_marks.handled_at, EXCLUDED.handled_at),"
    " topic = EXCLUDED.topic, part = EXCLUDED.part,"
    " off = EXCLUDED.off, outcome = EXCLUDED.outcome";

static int commit_marks(pg_batch_t *b, int *transient, char *err,
                        size_t errlen) {
  pg_store_t *p = pgs(b->base.store);
  pgp_t a = {0};
  GString *col[7];
  int rc;
  for (int i = 0; i < 7; i++)
    col[i] = pgp_array(&a);
  pgp_str(&a, p->owner);
  for (guint i = 0; i < b->marks->len; i++) {
    const pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    gsize idlen;
    const void *id = g_bytes_get_data(m->id, &idlen);
    pga_i64(col[0], m->scope);
    pga_bytes(col[1], id ? id : "", idlen);
    pga_i64(col[2], m->handled);
    pga_str(col[3], m->topic);
    pga_i64(col[4], m->partition);
    pga_i64(col[5], m->offset);
    pga_i64(col[6], m->outcome);
  }
  rc = pg_exec0(p, b->conn, marks_sql, &a, transient, err, errlen);
  pgp_free(&a);
  return rc;
}

int pg_batch_commit(store_batch_t *bb, int *transient, char *err,
                    size_t errlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_store_t *p = pgs(bb->store);
  int t = 0, rc;
  if (b->marks->len == 0)
    return 0;
  rc = pg_exec0(p, b->conn, "BEGIN", NULL, &t, err, errlen);
  if (rc == 0)
    rc = commit_marks(b, &t, err, errlen);
  if (rc == 0)
    rc = pg_exec0(p, b->conn, "COMMIT", NULL, &t, err, errlen);
  if (rc != 0 && PQstatus(b->conn) == CONNECTION_OK)
    PQclear(PQexec(b->conn, "ROLLBACK"));
  if (rc == 0)
    pg_batch_discard(bb);
  else if (transient)
    *transient = t;
  return rc;
}

int pg_attempts_set(store_batch_t *bb, const store_attempt_t *a, char *err,
                    size_t errlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pgp_t q = {0};
  int rc;
  pgp_i64(&q, a->scope);
  pgp_bytes(&q, a->event_id, a->event_id_len);
  if (a->attempts == 0)
    return pg_exec0(pgs(bb->store), b->conn,
                    "DELETE FROM khost_attempts WHERE scope = $1 AND id = $2",
                    &q, NULL, err, errlen);
  pgp_str(&q, a->topic);
  pgp_i64(&q, a->partition);
  pgp_i64(&q, a->offset);
  pgp_i64(&q, a->attempts);
  rc = pg_exec0(pgs(bb->store), b->conn,
                "INSERT INTO khost_attempts VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (scope, id) DO UPDATE SET attempts ="
                " EXCLUDED.attempts",
                &q, NULL, err, errlen);
  return rc;
}
