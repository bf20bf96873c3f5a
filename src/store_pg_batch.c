/*
 * A batch on the PostgreSQL store: what it buffers, committed in one
 * transaction on the batch's own connection, one statement per kind of
 * entry (the epochs' committed positions moved, which make the claims
 * below them marks; the other marks, their claims' rows updated to them
 * and their recorded attempts removed; the state writes; the offsets),
 * whatever the number of records. State writes and offsets are buffered as
 * their last value per key: the last write of a key in a batch wins, as it
 * would written in order.
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
  int by_position; /* its claim's epoch moves past it: no row written */
} pg_mark_t;

typedef struct pg_offset {
  uint32_t scope;
  int32_t partition;
  int64_t next;
  char *topic;
} pg_offset_t;

typedef struct pg_batch {
  store_batch_t base;
  PGconn *conn;
  unsigned prepared;   /* statements prepared on conn */
  GArray *marks;       /* pg_mark_t */
  GHashTable *state;   /* scope + key (GBytes) -> value, NULL: deleted */
  GHashTable *offsets; /* "scope/partition/topic" -> pg_offset_t */
  pg_parked_buf_t *parked;
} pg_batch_t;

static void offset_free(void *x) {
  pg_offset_t *o = x;
  g_free(o->topic);
  g_free(o);
}

int pg_batch_open(store_t *s, store_batch_t **out, char *err, size_t errlen) {
  pg_batch_t *b = g_new0(pg_batch_t, 1);
  b->conn = pg_connect(pgs(s), err, errlen);
  if (!b->conn) {
    g_free(b);
    return -1;
  }
  b->base.store = s;
  b->marks = g_array_new(FALSE, FALSE, sizeof(pg_mark_t));
  b->state = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                   (GDestroyNotify)g_bytes_unref,
                                   (GDestroyNotify)g_bytes_unref);
  b->offsets =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, offset_free);
  b->parked = pg_parked_new();
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
  g_hash_table_remove_all(b->state);
  g_hash_table_remove_all(b->offsets);
  pg_parked_clear(b->parked);
}

void pg_batch_close(store_batch_t *bb) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_batch_discard(bb);
  g_array_free(b->marks, TRUE);
  g_hash_table_destroy(b->state);
  g_hash_table_destroy(b->offsets);
  pg_parked_free(b->parked);
  PQfinish(b->conn);
  g_free(b);
}

int pg_batch_add_mark(store_batch_t *bb, const store_mark_t *m) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_mark_t x = {m->scope,           g_bytes_new(m->event_id, m->event_id_len),
                 g_strdup(m->topic), m->partition,
                 m->offset,          m->handled_at_ms,
                 m->outcome,         0};
  g_array_append_val(b->marks, x);
  return 0;
}

/* The marks of one scope: the newest handling of an ID kept, its claim
 * (the same row) turned into its mark, its recorded calls gone (the
 * record has an outcome). Attempts are found with `id = ANY` on their
 * primary key, whatever the planner thinks of the table's size; rows in
 * key order, so that two hosts' batches lock them in one order. A claim
 * keeps its `since`: no indexed column changes, so the update can stay
 * on the row's page. */
static const char marks_sql[] =
    "WITH a AS (DELETE FROM khost_attempts WHERE scope = $1::integer AND"
    "   id = ANY ($2::bytea[])),"
    " b AS (SELECT DISTINCT ON (id) * FROM unnest($2::bytea[], $3::bigint[],"
    "   $4::text[], $5::bigint[], $6::bigint[], $7::bigint[]) AS u(id,"
    "   handled_at, topic, part, off, outcome) ORDER BY id, handled_at DESC)"
    " INSERT INTO khost_marks (scope, id, handled_at, topic, part, off,"
    " outcome, owner, since) SELECT $1::integer, id, handled_at, topic, part,"
    " off, outcome, NULL, handled_at FROM b ORDER BY id"
    " ON CONFLICT (scope, id) DO UPDATE SET handled_at ="
    " GREATEST(khost_marks.handled_at, EXCLUDED.handled_at),"
    " topic = EXCLUDED.topic, part = EXCLUDED.part,"
    " off = EXCLUDED.off, outcome = EXCLUDED.outcome, owner = NULL,"
    " since = CASE WHEN khost_marks.outcome = " PG_CLAIMED
    " THEN khost_marks.since ELSE EXCLUDED.since END";

static const pg_stmt_t st_marks = {"khost_marks", 1u};

/* The marks of scope (a batch has one, its pipeline's, but need not). */
static int commit_scope(pg_batch_t *b, uint32_t scope, int *transient,
                        char *err, size_t errlen) {
  pg_store_t *p = pgs(b->base.store);
  static const uint32_t types[7] = {0,        PGA_BYTEA, PGA_INT8, PGA_TEXT,
                                    PGA_INT8, PGA_INT8,  PGA_INT8};
  pgp_t a = {0};
  pga_t *col[7];
  int rc;
  pgp_i64(&a, scope);
  for (int i = 1; i < 7; i++)
    col[i] = pgp_array(&a, types[i]);
  for (guint i = 0; i < b->marks->len; i++) {
    const pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    gsize idlen;
    const void *id = g_bytes_get_data(m->id, &idlen);
    if (m->scope != scope || m->by_position)
      continue;
    pga_key(col[1], id ? id : "", idlen);
    pga_i64(col[2], m->handled);
    pga_str(col[3], m->topic);
    pga_i64(col[4], m->partition);
    pga_i64(col[5], m->offset);
    pga_i64(col[6], m->outcome);
  }
  PGresult *r = pg_exec_prepared(p, b->conn, &st_marks, &b->prepared, marks_sql,
                                 &a, 0, transient, err, errlen);
  rc = r ? 0 : -1;
  PQclear(r);
  pgp_free(&a);
  return rc;
}

static int commit_marks(pg_batch_t *b, int *transient, char *err,
                        size_t errlen) {
  GHashTable *done = g_hash_table_new(g_direct_hash, g_direct_equal);
  int rc = 0;
  for (guint i = 0; rc == 0 && i < b->marks->len; i++) {
    const pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    if (!m->by_position &&
        g_hash_table_add(done, GUINT_TO_POINTER(m->scope + 1u)))
      rc = commit_scope(b, m->scope, transient, err, errlen);
  }
  g_hash_table_destroy(done);
  return rc;
}

/* ------------------------------------------------------------ epochs */

/* The committed position of each partition of the batch that this
 * process claims in by position (its epoch, store_pg_claim.c) moved to
 * the batch's next offset, in the batch's transaction; then the marks
 * that this makes marks are told apart (by_position): a plain outcome
 * below that position, of a claim this process took there in that epoch,
 * of a record with no recorded calls (a mark written to its row clears
 * them).
 * Every record below the next offset has its outcome by then, each
 * written to its row or made a mark by this move. An epoch that is gone
 * (pruned while this process was cut off from the server) leaves every
 * mark to its row. */
static int commit_epochs(pg_batch_t *b, int *transient, char *err,
                         size_t errlen) {
  pg_store_t *p = pgs(b->base.store);
  pgp_t a = {0};
  pga_t *eps = pgp_array(&a, PGA_INT8), *nexts = pgp_array(&a, PGA_INT8);
  GHashTable *at = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  GHashTableIter it;
  gpointer k, v;
  int rc = 0;
  pthread_mutex_lock(&p->pos_mu);
  g_hash_table_iter_init(&it, b->offsets);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    const pg_epoch_t *e = g_hash_table_lookup(p->epochs, k);
    if (!e)
      continue;
    pg_epoch_t *x = g_new(pg_epoch_t, 1);
    x->epoch = e->epoch;
    x->through = ((const pg_offset_t *)v)->next;
    g_hash_table_insert(at, k, x);
    pga_i64(eps, x->epoch);
    pga_i64(nexts, x->through);
  }
  pthread_mutex_unlock(&p->pos_mu);
  if (eps->n > 0) {
    PGresult *r = pg_exec(
        p, b->conn,
        "UPDATE khost_epochs e SET through = GREATEST(e.through, u.next),"
        " last_at = " PG_NOW_MS " FROM unnest($1::bigint[], $2::bigint[]) AS"
        " u(epoch, next) WHERE e.epoch = u.epoch",
        &a, 0, transient, err, errlen);
    rc = r ? 0 : -1;
    if (r && strtol(PQcmdTuples(r), NULL, 10) != eps->n)
      g_hash_table_remove_all(at);
    PQclear(r);
  }
  pthread_mutex_lock(&p->pos_mu);
  for (guint i = 0; rc == 0 && i < b->marks->len; i++) {
    pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    char *key = pg_epoch_key(m->scope, m->topic, m->partition);
    const pg_epoch_t *x = g_hash_table_lookup(at, key);
    gsize idlen;
    const void *id = g_bytes_get_data(m->id, &idlen);
    GBytes *pk = pg_ahead_key(m->scope, id ? id : "", idlen);
    const pg_pos_t *ps = g_hash_table_lookup(p->pos, pk);
    m->by_position = m->outcome == STORE_OUTCOME_OK && x && ps &&
                     !ps->attempts && ps->epoch == x->epoch &&
                     ps->off == m->offset && m->offset < x->through;
    g_bytes_unref(pk);
    g_free(key);
  }
  pthread_mutex_unlock(&p->pos_mu);
  g_hash_table_destroy(at);
  pgp_free(&a);
  return rc;
}

/* After the commit: the epochs' positions as set, the claims marked
 * forgotten. */
static void epochs_committed(pg_batch_t *b) {
  pg_store_t *p = pgs(b->base.store);
  GHashTableIter it;
  gpointer k, v;
  pthread_mutex_lock(&p->pos_mu);
  g_hash_table_iter_init(&it, b->offsets);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    pg_epoch_t *e = g_hash_table_lookup(p->epochs, k);
    int64_t next = ((const pg_offset_t *)v)->next;
    if (e && next > e->through)
      e->through = next;
  }
  for (guint i = 0; i < b->marks->len; i++) {
    const pg_mark_t *m = &g_array_index(b->marks, pg_mark_t, i);
    gsize idlen;
    const void *id = g_bytes_get_data(m->id, &idlen);
    GBytes *pk = pg_ahead_key(m->scope, id ? id : "", idlen);
    g_hash_table_remove(p->pos, pk);
    g_bytes_unref(pk);
  }
  pthread_mutex_unlock(&p->pos_mu);
}

/* ------------------------------------------------------------ state */

static GBytes *state_key(uint32_t scope, const void *key, size_t klen) {
  GByteArray *a = g_byte_array_sized_new((guint)klen + 4);
  g_byte_array_append(a, (const guint8 *)&scope, 4);
  g_byte_array_append(a, key, (guint)klen);
  return g_byte_array_free_to_bytes(a);
}

int pg_batch_put_state(store_batch_t *bb, uint32_t scope, const void *key,
                       size_t klen, const void *val, size_t vlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  g_hash_table_replace(b->state, state_key(scope, key, klen),
                       g_bytes_new(val, vlen));
  return 0;
}

int pg_batch_del_state(store_batch_t *bb, uint32_t scope, const void *key,
                       size_t klen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  g_hash_table_replace(b->state, state_key(scope, key, klen), NULL);
  return 0;
}

int pg_batch_set_offset(store_batch_t *bb, uint32_t scope, const char *topic,
                        int32_t partition, int64_t next) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_offset_t *o = g_new0(pg_offset_t, 1);
  o->scope = scope;
  o->partition = partition;
  o->next = next;
  o->topic = g_strdup(topic);
  g_hash_table_replace(b->offsets,
                       g_strdup_printf("%u/%d/%s", scope, partition, topic), o);
  return 0;
}

/* The puts upserted, the deletes deleted: keys are distinct, so the two
 * never touch one row. */
static const char state_sql[] =
    "WITH w AS (SELECT * FROM unnest($1::bigint[], $2::bytea[],"
    "   $3::bytea[]) AS u(scope, k, v)),"
    " d AS (DELETE FROM khost_state s USING w WHERE w.v IS NULL AND"
    "   s.scope = w.scope AND s.key = w.k)"
    " INSERT INTO khost_state SELECT scope, k, v FROM w WHERE v IS NOT NULL"
    " ORDER BY scope, k ON CONFLICT (scope, key) DO UPDATE SET"
    " val = EXCLUDED.val";

static int commit_state(pg_batch_t *b, int *transient, char *err,
                        size_t errlen) {
  pg_store_t *p = pgs(b->base.store);
  pgp_t a = {0};
  pga_t *scopes = pgp_array(&a, PGA_INT8), *keys = pgp_array(&a, PGA_BYTEA),
        *vals = pgp_array(&a, PGA_BYTEA);
  GHashTableIter it;
  gpointer k, v;
  int rc;
  g_hash_table_iter_init(&it, b->state);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    gsize klen, vlen = 0;
    const guint8 *kd = g_bytes_get_data(k, &klen);
    const void *vd = v ? g_bytes_get_data(v, &vlen) : NULL;
    uint32_t scope;
    memcpy(&scope, kd, 4);
    pga_i64(scopes, scope);
    pga_bytes(keys, kd + 4, klen - 4);
    pga_bytes(vals, v ? (vd ? vd : "") : NULL, vlen);
  }
  rc = pg_exec0(p, b->conn, state_sql, &a, transient, err, errlen);
  pgp_free(&a);
  return rc;
}

static int commit_offsets(pg_batch_t *b, int *transient, char *err,
                          size_t errlen) {
  pg_store_t *p = pgs(b->base.store);
  pgp_t a = {0};
  static const uint32_t types[4] = {PGA_INT8, PGA_TEXT, PGA_INT8, PGA_INT8};
  pga_t *col[4];
  GHashTableIter it;
  gpointer k, v;
  int rc;
  for (int i = 0; i < 4; i++)
    col[i] = pgp_array(&a, types[i]);
  g_hash_table_iter_init(&it, b->offsets);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    const pg_offset_t *o = v;
    pga_i64(col[0], o->scope);
    pga_str(col[1], o->topic);
    pga_i64(col[2], o->partition);
    pga_i64(col[3], o->next);
  }
  rc = pg_exec0(p, b->conn,
                "INSERT INTO khost_offsets SELECT * FROM unnest($1::bigint[],"
                " $2::text[], $3::bigint[], $4::bigint[]) ORDER BY 1, 2, 3"
                " ON CONFLICT (scope, topic, part) DO UPDATE SET"
                " next = EXCLUDED.next",
                &a, transient, err, errlen);
  pgp_free(&a);
  return rc;
}

/* ------------------------------------------------------------ commit */

int pg_batch_commit(store_batch_t *bb, int *transient, char *err,
                    size_t errlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pg_store_t *p = pgs(bb->store);
  int t = 0, rc;
  guint ns = g_hash_table_size(b->state), no = g_hash_table_size(b->offsets);
  size_t np = pg_parked_len(b->parked);
  if (b->marks->len == 0 && ns == 0 && no == 0 && np == 0)
    return 0;
  rc = pg_exec0(p, b->conn, "BEGIN", NULL, &t, err, errlen);
  if (rc == 0 && b->marks->len > 0)
    rc = commit_epochs(b, &t, err, errlen);
  if (rc == 0 && b->marks->len > 0)
    rc = commit_marks(b, &t, err, errlen);
  if (rc == 0 && ns > 0)
    rc = commit_state(b, &t, err, errlen);
  if (rc == 0 && no > 0)
    rc = commit_offsets(b, &t, err, errlen);
  if (rc == 0 && np > 0)
    rc = pg_parked_commit(p, b->conn, b->parked, &t, err, errlen);
  if (rc == 0)
    rc = pg_exec0(p, b->conn, "COMMIT", NULL, &t, err, errlen);
  if (rc != 0 && PQstatus(b->conn) == CONNECTION_OK)
    PQclear(PQexec(b->conn, "ROLLBACK"));
  if (rc == 0) {
    epochs_committed(b);
    pg_batch_discard(bb);
  } else if (transient)
    *transient = t;
  return rc;
}

int pg_batch_park(store_batch_t *bb, const store_parked_t *p) {
  pg_parked_add(((pg_batch_t *)bb)->parked, p, 0);
  return 0;
}

int pg_batch_unpark(store_batch_t *bb, const store_parked_t *p) {
  pg_parked_add(((pg_batch_t *)bb)->parked, p, 1);
  return 0;
}

int pg_attempts_set(store_batch_t *bb, const store_attempt_t *a, char *err,
                    size_t errlen) {
  pg_batch_t *b = (pg_batch_t *)bb;
  pgp_t q = {0};
  int rc;
  pgp_i64(&q, a->scope);
  pgp_key(&q, a->event_id, a->event_id_len);
  if (a->attempts > 0) {
    /* Its mark goes to its row, which clears the recorded calls. */
    pg_store_t *p = pgs(bb->store);
    GBytes *k = pg_ahead_key(a->scope, a->event_id, a->event_id_len);
    pthread_mutex_lock(&p->pos_mu);
    pg_pos_t *ps = g_hash_table_lookup(p->pos, k);
    if (ps)
      ps->attempts = 1;
    pthread_mutex_unlock(&p->pos_mu);
    g_bytes_unref(k);
  }
  if (a->attempts == 0) {
    rc = pg_exec0(pgs(bb->store), b->conn,
                  "DELETE FROM khost_attempts WHERE scope = $1 AND id = $2", &q,
                  NULL, err, errlen);
    pgp_free(&q);
    return rc;
  }
  pgp_str(&q, a->topic);
  pgp_i64(&q, a->partition);
  pgp_i64(&q, a->offset);
  pgp_i64(&q, a->attempts);
  rc = pg_exec0(pgs(bb->store), b->conn,
                "INSERT INTO khost_attempts VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (scope, id) DO UPDATE SET attempts ="
                " EXCLUDED.attempts",
                &q, NULL, err, errlen);
  pgp_free(&q);
  return rc;
}
