/*
 * `khost replay` on the PostgreSQL store (store_pg_admin.h): the replayed
 * ranges and the stored offsets of a pipeline written in one transaction
 * around the Kafka commit, and the claims that show a host still
 * handling the pipeline.
 *
 * The transaction runs on a connection of its own, so that the store's
 * lock is not held while Kafka answers.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_admin.h"
#include "store_pg_int.h"

/* Older ranges inside the new one can never apply again: they go, so
 * that repeated replays do not pile up rows (as on the SQLite file). */
static const char range_sql[] =
    "WITH d AS (DELETE FROM khost_replay WHERE scope = $1 AND topic = $2"
    "   AND part = $3 AND from_off >= $4 AND to_off <= $5)"
    " INSERT INTO khost_replay (scope, topic, part, from_off, to_off, mode,"
    "  recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/* A partition without a stored offset keeps none: its first batch
 * stores one. */
static const char offset_sql[] = "UPDATE khost_offsets SET next = $4"
                                 " WHERE scope = $1 AND topic = $2 AND"
                                 " part = $3";

static int write_part(pg_store_t *p, PGconn *c, uint32_t scope,
                      const store_pg_replay_t *rp, int mode, int offsets,
                      int64_t now_ms, char *err, size_t errlen) {
  pgp_t a = {0};
  int rc = 0;
  pgp_i64(&a, scope);
  pgp_str(&a, rp->topic);
  pgp_i64(&a, rp->partition);
  pgp_i64(&a, rp->from);
  if (offsets)
    rc = pg_exec0(p, c, offset_sql, &a, NULL, err, errlen);
  if (rc == 0 && rp->from < rp->to) {
    pgp_i64(&a, rp->to);
    pgp_i64(&a, mode);
    pgp_i64(&a, now_ms);
    rc = pg_exec0(p, c, range_sql, &a, NULL, err, errlen);
  }
  pgp_free(&a);
  return rc;
}

int store_pg_replay_record(store_t *s, const store_pg_replay_rec_t *r,
                           int *applied, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  int64_t now_ms = g_get_real_time() / 1000;
  int rc = -1;
  *applied = -1;
  PGconn *c = pg_connect(p, err, errlen);
  if (!c || pg_exec0(p, c, "BEGIN", NULL, NULL, err, errlen) != 0)
    goto out;
  for (size_t i = 0; i < r->n; i++)
    if (write_part(p, c, r->scope, &r->parts[i], r->mode, r->move_offsets,
                   now_ms, err, errlen) != 0)
      goto out;
  *applied = r->apply(r->arg, err, errlen);
  if (*applied != 0)
    goto out;
  rc = pg_exec0(p, c, "COMMIT", NULL, NULL, err, errlen);
out:
  if (rc != 0 && c && PQtransactionStatus(c) != PQTRANS_IDLE)
    PQclear(PQexec(c, "ROLLBACK"));
  PQfinish(c);
  return rc;
}

int store_pg_live_claims(store_t *s, uint32_t scope, int64_t *claims,
                         char **owners, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pthread_mutex_lock(&p->mu);
  PGresult *r =
      pg_exec(p, p->conn,
              "SELECT h.name, count(*) FROM khost_marks m JOIN"
              " khost_hosts h ON h.host = m.owner WHERE m.scope ="
              " $1 AND m.owner IS NOT NULL AND h.lease_until >= " PG_NOW_MS
              " AND (m.outcome <> " PG_CLAIMED
              " OR NOT " PG_MARK("m") ")"
                                      " GROUP BY h.name ORDER BY h.name",
              &a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  *claims = 0;
  *owners = NULL;
  if (!r)
    return -1;
  GString *who = g_string_new(NULL);
  for (int i = 0; i < PQntuples(r); i++) {
    g_string_append_printf(who, "%s%.*s", i ? ", " : "", PQgetlength(r, i, 0),
                           PQgetvalue(r, i, 0));
    *claims += pg_int(r, i, 1);
  }
  *owners = g_string_free(who, FALSE);
  PQclear(r);
  return 0;
}
