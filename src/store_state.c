/*
 * Plugin state and stored offsets in the SQLite file: see store_state.h.
 */
#include <glib.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_state.h"

static const char *const state_schema_sql =
    "CREATE TABLE IF NOT EXISTS state("
    " scope INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY(scope, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS offsets("
    " scope INTEGER NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, next INTEGER NOT NULL,"
    " PRIMARY KEY(scope, topic, partition)) WITHOUT ROWID;";

struct sstate {
  char *path;
  pthread_mutex_t mu;
  sqlite3 *db;        /* reads and resets */
  sqlite3_stmt *read; /* sstate_get()'s, kept: plugins read per record */
};

enum { OP_PUT, OP_DEL, OP_OFFSET };

typedef struct op {
  int kind;
  uint32_t scope;
  int32_t partition;
  int64_t next;
  size_t off, klen, vlen; /* key (or topic), then value, at off */
} op_t;

/* A put or delete to sort: its scope and first 8 key bytes (big-endian,
 * zeros past the end) decide most comparisons without reaching the
 * key. */
typedef struct sort_key {
  uint64_t pre;
  uint32_t scope;
  guint at; /* index in ops */
} sort_key_t;

/* Offsets found again without the hash table: a batch's records come in
 * runs of a few partitions, each record moving its partition's offset,
 * and building and hashing the table's key was most of that. */
#define HOT_SLOTS 8

struct sstate_buf {
  GArray *ops;          /* op_t, in the order made */
  GByteArray *data;     /* their bytes */
  GHashTable *last;     /* part_key_t -> index + 1 of its offset */
  guint hot[HOT_SLOTS]; /* by partition: index + 1 of an offset, or 0 */
  GArray *order;        /* sort_key_t: the puts and deletes to write, by key */
  /* The statements of sstate_buf_write(), kept on the connection they
   * were made on (a batch commits on one connection, again and again):
   * preparing them and checking the schema cost a tenth of a batch's
   * state writes. Finalized by sstate_buf_free(), before it closes. */
  sqlite3 *db;
  sqlite3_stmt *q[3];
};

/* A partition of a scope, as the key of its offset in a buffer. Looked
 * up from the stack for every record (no allocation); copied once per
 * partition and batch. Kafka topic names have at most 249 bytes. */
typedef struct part_key {
  uint32_t scope;
  int32_t partition;
  size_t tlen;
  char topic[256];
} part_key_t;

static guint part_hash(gconstpointer p) {
  const part_key_t *k = p;
  guint h = k->scope * 31u + (guint)k->partition;
  for (size_t i = 0; i < k->tlen; i++)
    h = h * 31u + (guchar)k->topic[i];
  return h;
}

static gboolean part_equal(gconstpointer a, gconstpointer b) {
  const part_key_t *x = a, *y = b;
  return x->scope == y->scope && x->partition == y->partition &&
         x->tlen == y->tlen && memcmp(x->topic, y->topic, x->tlen) == 0;
}

/* The last statement found no state table yet (nothing was stored). */
static int absent(sstate_t *st) {
  return strncmp(sqlite3_errmsg(st->db), "no such table", 13) == 0;
}

static int fail(sstate_t *st, char *err, size_t errlen) {
  snprintf(err, errlen, "%s: state: %s", st->path, sqlite3_errmsg(st->db));
  return -1;
}

int sstate_open(sstate_t **out, const char *path, int busy_ms, char *err,
                size_t errlen) {
  sstate_t *st = g_new0(sstate_t, 1);
  int rc = -1;
  st->path = g_strdup(path);
  pthread_mutex_init(&st->mu, NULL);
  if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      NULL) != SQLITE_OK)
    goto out;
  sqlite3_busy_timeout(st->db, busy_ms > 0 ? busy_ms : 10000);
  /* A file that cannot take the tables now (a full disk) still opens:
   * every commit creates them in its own transaction when absent, and
   * reads find nothing until then. */
  sqlite3_exec(st->db, state_schema_sql, NULL, NULL, NULL);
  rc = 0;
out:
  if (rc < 0) {
    fail(st, err, errlen);
    sstate_close(st);
    st = NULL;
  }
  *out = st;
  return rc;
}

void sstate_close(sstate_t *st) {
  if (!st)
    return;
  sqlite3_finalize(st->read);
  sqlite3_close(st->db);
  pthread_mutex_destroy(&st->mu);
  g_free(st->path);
  g_free(st);
}

sstate_buf_t *sstate_buf_new(void) {
  sstate_buf_t *b = g_new0(sstate_buf_t, 1);
  b->ops = g_array_new(FALSE, FALSE, sizeof(op_t));
  b->data = g_byte_array_new();
  b->last = g_hash_table_new_full(part_hash, part_equal, g_free, NULL);
  b->order = g_array_new(FALSE, FALSE, sizeof(sort_key_t));
  return b;
}

static void stmts_drop(sstate_buf_t *b) {
  for (int k = 0; k < 3; k++) {
    sqlite3_finalize(b->q[k]);
    b->q[k] = NULL;
  }
  b->db = NULL;
}

void sstate_buf_free(sstate_buf_t *b) {
  if (!b)
    return;
  stmts_drop(b);
  g_array_free(b->order, TRUE);
  g_array_free(b->ops, TRUE);
  g_byte_array_free(b->data, TRUE);
  g_hash_table_destroy(b->last);
  g_free(b);
}

void sstate_buf_clear(sstate_buf_t *b) {
  g_array_set_size(b->ops, 0);
  g_byte_array_set_size(b->data, 0);
  g_hash_table_remove_all(b->last);
  memset(b->hot, 0, sizeof b->hot);
}

size_t sstate_buf_len(const sstate_buf_t *b) {
  return b->ops->len;
}

void sstate_buf_put(sstate_buf_t *b, uint32_t scope, const void *key,
                    size_t klen, const void *val, size_t vlen, int is_del) {
  op_t o = {.kind = is_del ? OP_DEL : OP_PUT,
            .scope = scope,
            .off = b->data->len,
            .klen = klen,
            .vlen = is_del ? 0 : vlen};
  g_byte_array_append(b->data, key, klen);
  if (o.vlen)
    g_byte_array_append(b->data, val, vlen);
  g_array_append_val(b->ops, o);
}

/* One row per partition and batch: a later offset replaces the one
 * buffered (every record of the batch sets it). */
/* The offset op of (scope, topic, partition) in the hot slot, if it is
 * there; 0 if not. */
static guint hot_find(const sstate_buf_t *b, unsigned slot, uint32_t scope,
                      const char *topic, int32_t partition) {
  guint at = b->hot[slot];
  if (!at)
    return 0;
  const op_t *o = &g_array_index(b->ops, op_t, at - 1);
  const char *t = (const char *)b->data->data + o->off;
  if (o->scope != scope || o->partition != partition ||
      strncmp(topic, t, o->klen) != 0 || topic[o->klen] != '\0')
    return 0;
  return at;
}

void sstate_buf_offset(sstate_buf_t *b, uint32_t scope, const char *topic,
                       int32_t partition, int64_t next) {
  unsigned slot = (unsigned)partition % HOT_SLOTS;
  guint at = hot_find(b, slot, scope, topic, partition);
  if (at) {
    g_array_index(b->ops, op_t, at - 1).next = next;
    return;
  }
  part_key_t k = {.scope = scope, .partition = partition};
  k.tlen = strnlen(topic, sizeof(k.topic) - 1);
  memcpy(k.topic, topic, k.tlen);
  at = GPOINTER_TO_UINT(g_hash_table_lookup(b->last, &k));
  if (at) {
    g_array_index(b->ops, op_t, at - 1).next = next;
    if (topic[k.tlen] == '\0') /* a whole topic, not one cut short */
      b->hot[slot] = at;
    return;
  }
  g_hash_table_insert(b->last, g_memdup2(&k, sizeof(k)),
                      GUINT_TO_POINTER(b->ops->len + 1));
  op_t o = {.kind = OP_OFFSET,
            .scope = scope,
            .partition = partition,
            .next = next,
            .off = b->data->len,
            .klen = k.tlen};
  g_byte_array_append(b->data, (const guint8 *)topic, o.klen);
  g_array_append_val(b->ops, o);
  if (topic[k.tlen] == '\0')
    b->hot[slot] = b->ops->len;
}

/* Bytes at off; never NULL (SQLite binds NULL as SQL NULL). */
static const void *bytes_at(const sstate_buf_t *b, size_t off, size_t len) {
  return len ? (const void *)(b->data->data + off) : "";
}

static int op_run(sqlite3_stmt *q, const sstate_buf_t *b, const op_t *o) {
  sqlite3_bind_int64(q, 1, o->scope);
  if (o->kind == OP_OFFSET) {
    sqlite3_bind_text64(q, 2, bytes_at(b, o->off, o->klen), o->klen,
                        SQLITE_STATIC, SQLITE_UTF8);
    sqlite3_bind_int(q, 3, o->partition);
    sqlite3_bind_int64(q, 4, o->next);
  } else {
    sqlite3_bind_blob64(q, 2, bytes_at(b, o->off, o->klen), o->klen,
                        SQLITE_STATIC);
    if (o->kind == OP_PUT)
      sqlite3_bind_blob64(q, 3, bytes_at(b, o->off + o->klen, o->vlen), o->vlen,
                          SQLITE_STATIC);
  }
  int rc = sqlite3_step(q);
  sqlite3_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The statements on db: kept from the last write on it, else made
 * (with the tables, when absent). */
static int stmts_on(sstate_buf_t *b, sqlite3 *db) {
  static const char *const sql[] = {
      [OP_PUT] = "INSERT OR REPLACE INTO state(scope, key, value)"
                 " VALUES(?1, ?2, ?3)",
      [OP_DEL] = "DELETE FROM state WHERE scope = ?1 AND key = ?2",
      [OP_OFFSET] = "INSERT OR REPLACE INTO offsets(scope, topic, partition,"
                    " next) VALUES(?1, ?2, ?3, ?4)"};
  if (b->db == db)
    return SQLITE_OK;
  stmts_drop(b);
  int rc = sqlite3_exec(db, state_schema_sql, NULL, NULL, NULL);
  for (int k = 0; rc == SQLITE_OK && k < 3; k++)
    rc = sqlite3_prepare_v3(db, sql[k], -1, SQLITE_PREPARE_PERSISTENT, &b->q[k],
                            NULL);
  if (rc == SQLITE_OK)
    b->db = db;
  else
    stmts_drop(b);
  return rc;
}

/* By scope and key; equal keys in the order made. */
static gint op_cmp(gconstpointer x, gconstpointer y, gpointer arg) {
  const sstate_buf_t *b = arg;
  const sort_key_t *s = x, *t = y;
  if (s->scope != t->scope)
    return s->scope < t->scope ? -1 : 1;
  if (s->pre != t->pre)
    return s->pre < t->pre ? -1 : 1;
  const op_t *p = &g_array_index(b->ops, op_t, s->at);
  const op_t *q = &g_array_index(b->ops, op_t, t->at);
  size_t n = MIN(p->klen, q->klen);
  int c = n > 8 ? memcmp(b->data->data + p->off + 8, b->data->data + q->off + 8,
                         n - 8)
                : 0;
  if (c == 0 && p->klen != q->klen)
    c = p->klen < q->klen ? -1 : 1;
  if (c == 0)
    c = s->at < t->at ? -1 : 1;
  return c;
}

static sort_key_t sort_key(const sstate_buf_t *b, guint at) {
  const op_t *o = &g_array_index(b->ops, op_t, at);
  sort_key_t k = {.scope = o->scope, .at = at};
  for (size_t i = 0; i < 8; i++)
    k.pre = k.pre << 8 | (i < o->klen ? b->data->data[o->off + i] : 0);
  return k;
}

static int same_key(const sstate_buf_t *b, guint i, guint j) {
  const op_t *p = &g_array_index(b->ops, op_t, i);
  const op_t *q = &g_array_index(b->ops, op_t, j);
  return p->scope == q->scope && p->klen == q->klen &&
         memcmp(b->data->data + p->off, b->data->data + q->off, p->klen) == 0;
}

/* The puts and deletes to write into b->order: the last one of each key
 * (the one that wins), in key order. */
static void order_writes(sstate_buf_t *b) {
  g_array_set_size(b->order, 0);
  for (guint i = 0; i < b->ops->len; i++) {
    if (g_array_index(b->ops, op_t, i).kind == OP_OFFSET)
      continue;
    sort_key_t k = sort_key(b, i);
    g_array_append_val(b->order, k);
  }
  g_array_sort_with_data(b->order, op_cmp, b);
  guint n = 0;
  for (guint i = 0; i < b->order->len; i++) {
    const sort_key_t *k = &g_array_index(b->order, sort_key_t, i);
    if (i + 1 < b->order->len && k->pre == k[1].pre &&
        same_key(b, k->at, k[1].at))
      continue; /* a later write of this key follows */
    g_array_index(b->order, sort_key_t, n++) = *k;
  }
  g_array_set_size(b->order, n);
}

int sstate_buf_write(sqlite3 *db, void *arg) {
  sstate_buf_t *b = arg;
  int rc = stmts_on(b, db);
  if (rc != SQLITE_OK)
    return rc;
  order_writes(b);
  for (guint i = 0; rc == SQLITE_OK && i < b->order->len; i++) {
    const op_t *o =
        &g_array_index(b->ops, op_t, g_array_index(b->order, sort_key_t, i).at);
    rc = op_run(b->q[o->kind], b, o);
  }
  for (guint i = 0; rc == SQLITE_OK && i < b->ops->len; i++) {
    const op_t *o = &g_array_index(b->ops, op_t, i);
    if (o->kind == OP_OFFSET)
      rc = op_run(b->q[OP_OFFSET], b, o);
  }
  return rc;
}

int sstate_get(sstate_t *st, uint32_t scope, const void *key, size_t klen,
               void **val, size_t *vlen, char *err, size_t errlen) {
  int rc = -1;
  *val = NULL;
  *vlen = 0;
  pthread_mutex_lock(&st->mu);
  if (!st->read &&
      sqlite3_prepare_v3(
          st->db, "SELECT value FROM state WHERE scope = ?1 AND key = ?2", -1,
          SQLITE_PREPARE_PERSISTENT, &st->read, NULL) != SQLITE_OK) {
    if (absent(st))
      rc = 0;
    else
      fail(st, err, errlen);
    goto out;
  }
  sqlite3_bind_int64(st->read, 1, scope);
  sqlite3_bind_blob64(st->read, 2, klen ? key : "", klen, SQLITE_STATIC);
  int s = sqlite3_step(st->read);
  if (s == SQLITE_ROW) {
    *vlen = (size_t)sqlite3_column_bytes(st->read, 0);
    *val = *vlen ? g_memdup2(sqlite3_column_blob(st->read, 0), *vlen) : NULL;
    rc = 1;
  } else if (s == SQLITE_DONE) {
    rc = 0;
  } else {
    fail(st, err, errlen);
  }
  /* Reset at once: a statement left running would hold a read
   * transaction open and keep the WAL from being checkpointed. */
  sqlite3_reset(st->read);
  sqlite3_clear_bindings(st->read);
out:
  pthread_mutex_unlock(&st->mu);
  return rc;
}

/* The smallest key above every key starting with prefix: prefix with its
 * trailing 0xff bytes dropped and the last byte raised; NULL when there
 * is none (no upper bound). */
static GBytes *prefix_end(const void *prefix, size_t plen) {
  const guint8 *p = prefix;
  while (plen > 0 && p[plen - 1] == 0xff)
    plen--;
  if (plen == 0)
    return NULL;
  guint8 *e = g_memdup2(p, plen);
  e[plen - 1]++;
  return g_bytes_new_take(e, plen);
}

typedef struct kv {
  GBytes *key, *val;
} kv_t;

static void kv_clear(gpointer p) {
  kv_t *x = p;
  g_bytes_unref(x->key);
  g_bytes_unref(x->val);
}

#define SCAN_CHUNK 256

/* Up to SCAN_CHUNK rows of a scan from key `from` on (after: past it),
 * below end (NULL: no bound), read under the mutex; fn is called without
 * it, so that fn may read again, and a scan holds one chunk in memory. */
static int scan_rows(sstate_t *st, uint32_t scope, GBytes *from, int after,
                     GBytes *end, GArray *rows, char *err, size_t errlen) {
  sqlite3_stmt *q = NULL;
  int rc = -1, s;
  gsize fl;
  const void *f = g_bytes_get_data(from, &fl);
  pthread_mutex_lock(&st->mu);
  if (sqlite3_prepare_v2(st->db,
                         after ? "SELECT key, value FROM state WHERE scope = ?1"
                                 " AND key > ?2 AND (?3 IS NULL OR key < ?3)"
                                 " ORDER BY key LIMIT " G_STRINGIFY(SCAN_CHUNK)
                               : "SELECT key, value FROM state WHERE scope = ?1"
                                 " AND key >= ?2 AND (?3 IS NULL OR key < ?3)"
                                 " ORDER BY key LIMIT " G_STRINGIFY(SCAN_CHUNK),
                         -1, &q, NULL) != SQLITE_OK) {
    if (absent(st))
      rc = 0;
    else
      fail(st, err, errlen);
    goto out;
  }
  sqlite3_bind_int64(q, 1, scope);
  sqlite3_bind_blob64(q, 2, fl ? f : "", fl, SQLITE_STATIC);
  if (end)
    sqlite3_bind_blob64(q, 3, g_bytes_get_data(end, NULL),
                        g_bytes_get_size(end), SQLITE_STATIC);
  while ((s = sqlite3_step(q)) == SQLITE_ROW) {
    kv_t x = {
        g_bytes_new(sqlite3_column_blob(q, 0), sqlite3_column_bytes(q, 0)),
        g_bytes_new(sqlite3_column_blob(q, 1), sqlite3_column_bytes(q, 1))};
    g_array_append_val(rows, x);
  }
  if (s != SQLITE_DONE) {
    fail(st, err, errlen);
    goto out;
  }
  rc = 0;
out:
  sqlite3_finalize(q);
  pthread_mutex_unlock(&st->mu);
  return rc;
}

int sstate_scan(sstate_t *st, uint32_t scope, const void *prefix, size_t plen,
                store_state_fn fn, void *arg, char *err, size_t errlen) {
  GArray *rows = g_array_new(FALSE, FALSE, sizeof(kv_t));
  GBytes *end = prefix_end(prefix, plen);
  GBytes *from = g_bytes_new(prefix, plen);
  int rc = 0, after = 0;
  g_array_set_clear_func(rows, kv_clear);
  do {
    g_array_set_size(rows, 0);
    rc = scan_rows(st, scope, from, after, end, rows, err, errlen);
    for (guint i = 0; rc == 0 && i < rows->len; i++) {
      const kv_t *x = &g_array_index(rows, kv_t, i);
      gsize kl, vl;
      const void *k = g_bytes_get_data(x->key, &kl);
      const void *v = g_bytes_get_data(x->val, &vl);
      rc = fn(arg, k, kl, v ? v : "", vl);
    }
    if (rows->len > 0) {
      g_bytes_unref(from);
      from = g_bytes_ref(g_array_index(rows, kv_t, rows->len - 1).key);
      after = 1;
    }
  } while (rc == 0 && rows->len == SCAN_CHUNK);
  g_array_free(rows, TRUE);
  g_bytes_unref(from);
  if (end)
    g_bytes_unref(end);
  return rc;
}

int sstate_reset(sstate_t *st, uint32_t scope, int64_t *removed, char *err,
                 size_t errlen) {
  sqlite3_stmt *q = NULL;
  int rc = -1;
  pthread_mutex_lock(&st->mu);
  if (sqlite3_prepare_v2(st->db, "DELETE FROM state WHERE scope = ?1", -1, &q,
                         NULL) != SQLITE_OK) {
    if (absent(st)) {
      rc = 0;
      if (removed)
        *removed = 0;
    }
    goto out;
  }
  sqlite3_bind_int64(q, 1, scope);
  if (sqlite3_step(q) != SQLITE_DONE)
    goto out;
  if (removed)
    *removed = sqlite3_changes64(st->db);
  rc = 0;
out:
  if (rc < 0)
    fail(st, err, errlen);
  sqlite3_finalize(q);
  pthread_mutex_unlock(&st->mu);
  return rc;
}

int sstate_offset_get(sstate_t *st, uint32_t scope, const char *topic,
                      int32_t partition, int64_t *next, char *err,
                      size_t errlen) {
  sqlite3_stmt *q = NULL;
  int rc = -1, s;
  pthread_mutex_lock(&st->mu);
  if (sqlite3_prepare_v2(st->db,
                         "SELECT next FROM offsets WHERE scope = ?1"
                         " AND topic = ?2 AND partition = ?3",
                         -1, &q, NULL) != SQLITE_OK) {
    if (absent(st))
      rc = 0;
    else
      fail(st, err, errlen);
    goto out;
  }
  sqlite3_bind_int64(q, 1, scope);
  sqlite3_bind_text(q, 2, topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 3, partition);
  s = sqlite3_step(q);
  if (s == SQLITE_ROW) {
    *next = sqlite3_column_int64(q, 0);
    rc = 1;
  } else if (s == SQLITE_DONE) {
    rc = 0;
  } else {
    fail(st, err, errlen);
  }
out:
  sqlite3_finalize(q);
  pthread_mutex_unlock(&st->mu);
  return rc;
}

/* One row of one or two integers (NULL *b: one). */
static int query_ints(sstate_t *st, const char *sql, uint32_t scope,
                      const char *name, int64_t *a, int64_t *b, char *err,
                      size_t errlen) {
  sqlite3_stmt *q = NULL;
  int rc = -1, s;
  pthread_mutex_lock(&st->mu);
  if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK) {
    if (absent(st))
      rc = 0;
    else
      fail(st, err, errlen);
    goto out;
  }
  if (name)
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  else
    sqlite3_bind_int64(q, 1, scope);
  s = sqlite3_step(q);
  if (s == SQLITE_ROW) {
    *a = sqlite3_column_int64(q, 0);
    if (b)
      *b = sqlite3_column_int64(q, 1);
    rc = 1;
  } else if (s == SQLITE_DONE) {
    rc = 0;
  } else {
    fail(st, err, errlen);
  }
out:
  sqlite3_finalize(q);
  pthread_mutex_unlock(&st->mu);
  return rc;
}

int sstate_scope(sstate_t *st, const char *pipeline, uint32_t *scope, char *err,
                 size_t errlen) {
  int64_t id = 0;
  int rc = query_ints(st, "SELECT id FROM scopes WHERE name = ?1", 0, pipeline,
                      &id, NULL, err, errlen);
  *scope = (uint32_t)id;
  return rc;
}

int sstate_stats(sstate_t *st, uint32_t scope, int64_t *keys, int64_t *bytes,
                 char *err, size_t errlen) {
  int rc = query_ints(st,
                      "SELECT count(*), coalesce(sum(length(key) +"
                      " length(value)), 0) FROM state WHERE scope = ?1",
                      scope, NULL, keys, bytes, err, errlen);
  return rc < 0 ? -1 : 0;
}
