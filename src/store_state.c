/*
 * Plugin state and stored offsets in the SQLite file: see store_state.h.
 */
#include <glib.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store_state.h"
#include "store_state_log.h"

const char *const sstate_schema_sql =
    "CREATE TABLE IF NOT EXISTS state("
    " scope INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY(scope, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS offsets("
    " scope INTEGER NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, next INTEGER NOT NULL,"
    " PRIMARY KEY(scope, topic, partition)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS state_log("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);";

/* When the fold thread folds: once FOLD_ROWS batches' rows were logged
 * since the last fold (a count, not a time, so that a fold takes the
 * same share of the work at any rate), the overlay past FOLD_KEYS keys
 * or FOLD_BYTES bytes, the log past FOLD_LOG_BYTES since the last fold,
 * or FOLD_MS after it with anything to fold. */
#define FOLD_ROWS 256
#define FOLD_KEYS 100000
#define FOLD_BYTES ((size_t)32 << 20)
#define FOLD_LOG_BYTES ((size_t)64 << 20)
#define FOLD_MS 5000

struct sstate {
  char *path;
  int busy_ms;
  pthread_mutex_t mu;
  sqlite3 *db;        /* reads, resets, the folds at open and close */
  sqlite3_stmt *read; /* sstate_get()'s, kept: plugins read per record */
  /* Under mu: the writes of the log's rows not folded yet, the highest
   * seq known folded (writes of a seq up to it are in the table), what
   * was logged since the last fold. */
  slog_ov_t *ov;
  int64_t folded;
  size_t logged, rows;
  /* The fold thread, started by the first batch applied; its own
   * connection. */
  pthread_t thread;
  pthread_cond_t cv;
  int started, stop;
  sqlite3 *fdb;
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
  GByteArray *row;      /* the log row they were packed into */
  int64_t seq;          /* its seq; 0: none written */
  /* The statements of sstate_buf_write(), kept on the connection they
   * were made on (a batch commits on one connection, again and again):
   * preparing them and checking the schema cost a tenth of a batch's
   * state writes. Finalized by sstate_buf_free(), before it closes. */
  sqlite3 *db;
  sqlite3_stmt *q[2]; /* Q_LOG, Q_OFFSET */
};

enum { Q_LOG, Q_OFFSET };

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

/* The log folded on db, the overlay pruned to match: an SQLite result
 * code. */
static int fold_on(sstate_t *st, sqlite3 *db) {
  int64_t upto = 0;
  int rc = slog_fold(db, &upto);
  if (rc == SQLITE_OK) {
    pthread_mutex_lock(&st->mu);
    slog_ov_prune(st->ov, upto);
    if (upto > st->folded)
      st->folded = upto;
    pthread_mutex_unlock(&st->mu);
  }
  return rc;
}

/* Under mu. */
static int over_bound(sstate_t *st) {
  return st->rows >= FOLD_ROWS || slog_ov_keys(st->ov) > FOLD_KEYS ||
         slog_ov_bytes(st->ov) > FOLD_BYTES || st->logged > FOLD_LOG_BYTES;
}

static int fold_due(sstate_t *st, gint64 last) {
  return slog_ov_keys(st->ov) > 0 &&
         (over_bound(st) ||
          g_get_monotonic_time() - last >= (gint64)FOLD_MS * 1000);
}

/* Folds off the members' and the durability threads' way, on its own
 * connection: its transaction holds SQLite's write lock for the time of
 * one fold, which the batches' commits wait for (busy timeout). Looks
 * every 100 ms whether a fold is due; a batch past a bound wakes it. */
static void *fold_main(void *arg) {
  sstate_t *st = arg;
  gint64 last = g_get_monotonic_time();
  pthread_mutex_lock(&st->mu);
  while (!st->stop) {
    if (!fold_due(st, last)) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 100 * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&st->cv, &st->mu, &ts);
      continue;
    }
    st->logged = 0;
    st->rows = 0;
    pthread_mutex_unlock(&st->mu);
    int rc = SQLITE_OK;
    if (!st->fdb) {
      rc = sqlite3_open_v2(st->path, &st->fdb, SQLITE_OPEN_READWRITE, NULL);
      sqlite3_busy_timeout(st->fdb, st->busy_ms);
    }
    if (rc == SQLITE_OK)
      rc = fold_on(st, st->fdb);
    if (rc != SQLITE_OK)
      log_msg(KHOST_LOG_WARNING, "state",
              "%s: folding the log of state writes: %s (tried again later)",
              st->path, st->fdb ? sqlite3_errmsg(st->fdb) : "out of memory");
    last = g_get_monotonic_time();
    pthread_mutex_lock(&st->mu);
  }
  pthread_mutex_unlock(&st->mu);
  return NULL;
}

/* What the log holds folded into the table (else, when the file cannot
 * be written now, read into the overlay): reads see the same either
 * way. */
static int open_log(sstate_t *st) {
  if (fold_on(st, st->db) == SQLITE_OK)
    return 0;
  int rc = slog_ov_load(st->ov, st->db);
  return rc == SQLITE_OK || rc == SQLITE_ERROR ? 0 : -1; /* no table yet */
}

int sstate_open(sstate_t **out, const char *path, int busy_ms, char *err,
                size_t errlen) {
  sstate_t *st = g_new0(sstate_t, 1);
  int rc = -1;
  st->path = g_strdup(path);
  st->busy_ms = busy_ms > 0 ? busy_ms : 10000;
  st->ov = slog_ov_new();
  pthread_mutex_init(&st->mu, NULL);
  pthread_cond_init(&st->cv, NULL);
  if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      NULL) != SQLITE_OK)
    goto out;
  sqlite3_busy_timeout(st->db, st->busy_ms);
  /* A file that cannot take the tables now (a full disk) still opens:
   * every commit creates them in its own transaction when absent, and
   * reads find nothing until then. */
  sqlite3_exec(st->db, sstate_schema_sql, NULL, NULL, NULL);
  if (open_log(st) < 0)
    goto out;
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
  if (st->started) {
    pthread_mutex_lock(&st->mu);
    st->stop = 1;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->thread, NULL);
  }
  sqlite3_close(st->fdb);
  /* A clean stop leaves no log to fold; when this fails the next open
   * folds it. */
  if (st->db && slog_ov_keys(st->ov) > 0)
    fold_on(st, st->db);
  sqlite3_finalize(st->read);
  sqlite3_close(st->db);
  slog_ov_free(st->ov);
  pthread_cond_destroy(&st->cv);
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
  b->row = g_byte_array_new();
  return b;
}

static void stmts_drop(sstate_buf_t *b) {
  for (int k = 0; k < 2; k++) {
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
  g_byte_array_free(b->row, TRUE);
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
  g_array_set_size(b->order, 0);
  g_byte_array_set_size(b->row, 0);
  b->seq = 0;
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

static int offset_run(sqlite3_stmt *q, const sstate_buf_t *b, const op_t *o) {
  sqlite3_bind_int64(q, 1, o->scope);
  sqlite3_bind_text64(q, 2, bytes_at(b, o->off, o->klen), o->klen,
                      SQLITE_STATIC, SQLITE_UTF8);
  sqlite3_bind_int(q, 3, o->partition);
  sqlite3_bind_int64(q, 4, o->next);
  int rc = sqlite3_step(q);
  sqlite3_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The statements on db: kept from the last write on it, else made
 * (with the tables, when absent). */
static int stmts_on(sstate_buf_t *b, sqlite3 *db) {
  static const char *const sql[] = {
      [Q_LOG] = "INSERT INTO state_log(data) VALUES(?1)",
      [Q_OFFSET] = "INSERT OR REPLACE INTO offsets(scope, topic, partition,"
                   " next) VALUES(?1, ?2, ?3, ?4)"};
  if (b->db == db)
    return SQLITE_OK;
  stmts_drop(b);
  int rc = sqlite3_exec(db, sstate_schema_sql, NULL, NULL, NULL);
  for (int k = 0; rc == SQLITE_OK && k < 2; k++)
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

static slog_write_t write_of(const sstate_buf_t *b, const op_t *o) {
  return (slog_write_t){.scope = o->scope,
                        .del = o->kind == OP_DEL,
                        .key = b->data->data + o->off,
                        .klen = o->klen,
                        .val = b->data->data + o->off + o->klen,
                        .vlen = o->vlen};
}

static const op_t *ordered(const sstate_buf_t *b, guint i) {
  return &g_array_index(b->ops, op_t,
                        g_array_index(b->order, sort_key_t, i).at);
}

/* The batch's writes as one row of the log (store_state_log.h): the
 * table's rows are written by the folds, each key once for many
 * batches. */
static int log_row(sstate_buf_t *b, sqlite3 *db) {
  g_byte_array_set_size(b->row, 0);
  for (guint i = 0; i < b->order->len; i++) {
    slog_write_t w = write_of(b, ordered(b, i));
    slog_pack(b->row, &w);
  }
  sqlite3_stmt *q = b->q[Q_LOG];
  sqlite3_bind_blob64(q, 1, b->row->data, b->row->len, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_reset(q);
  if (rc != SQLITE_DONE)
    return rc;
  b->seq = sqlite3_last_insert_rowid(db);
  return SQLITE_OK;
}

int sstate_buf_write(sqlite3 *db, void *arg) {
  sstate_buf_t *b = arg;
  int rc = stmts_on(b, db);
  if (rc != SQLITE_OK)
    return rc;
  b->seq = 0;
  order_writes(b);
  if (b->order->len > 0)
    rc = log_row(b, db);
  for (guint i = 0; rc == SQLITE_OK && i < b->ops->len; i++) {
    const op_t *o = &g_array_index(b->ops, op_t, i);
    if (o->kind == OP_OFFSET)
      rc = offset_run(b->q[Q_OFFSET], b, o);
  }
  return rc;
}

void sstate_buf_applied(sstate_t *st, const sstate_buf_t *b) {
  if (b->seq == 0)
    return;
  pthread_mutex_lock(&st->mu);
  /* A fold that already took the row (another process's, or this one's
   * when the commit's answer came late) leaves it to the table. */
  if (b->seq > st->folded) {
    for (guint i = 0; i < b->order->len; i++) {
      slog_write_t w = write_of(b, ordered(b, i));
      slog_ov_apply(st->ov, &w, b->seq);
    }
    st->logged += b->row->len;
    st->rows++;
  }
  if (!st->started) {
    st->started = pthread_create(&st->thread, NULL, fold_main, st) == 0;
    if (!st->started)
      log_msg(KHOST_LOG_WARNING, "state",
              "%s: no thread to fold the log of state writes: folded at"
              " close",
              st->path);
  } else if (over_bound(st))
    pthread_cond_signal(&st->cv);
  pthread_mutex_unlock(&st->mu);
}

int sstate_get(sstate_t *st, uint32_t scope, const void *key, size_t klen,
               void **val, size_t *vlen, char *err, size_t errlen) {
  int rc = -1;
  *val = NULL;
  *vlen = 0;
  pthread_mutex_lock(&st->mu);
  const slog_node_t *n = slog_ov_find(st->ov, scope, key, klen);
  if (n) {
    *vlen = n->vlen;
    *val = n->vlen ? g_memdup2(n->val, n->vlen) : NULL;
    rc = n->del ? 0 : 1;
    goto out;
  }
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

static kv_t kv_of(const void *k, size_t kl, const void *v, size_t vl) {
  return (kv_t){g_bytes_new(k, kl), v ? g_bytes_new(v, vl) : NULL};
}

static void ov_row(void *arg, const slog_node_t *n) {
  kv_t x = kv_of(n->key, n->klen, n->del ? NULL : n->val, n->vlen);
  g_array_append_val(arg, x);
}

static int kv_cmp(const kv_t *a, const kv_t *b) {
  gsize al, bl;
  const guint8 *ak = g_bytes_get_data(a->key, &al);
  const guint8 *bk = g_bytes_get_data(b->key, &bl);
  int c = MIN(al, bl) ? memcmp(ak, bk, MIN(al, bl)) : 0;
  return c ? c : al < bl ? -1 : al > bl;
}

/* The table's rows tab and the overlay's writes ov (both by key) into
 * rows: a write of the overlay replaces the table's row of its key, a
 * delete drops it. tab and ov are emptied (their references moved). */
static void merge(GArray *tab, GArray *ov, GArray *rows) {
  guint i = 0, j = 0;
  while (i < tab->len || j < ov->len) {
    kv_t *t = i < tab->len ? &g_array_index(tab, kv_t, i) : NULL;
    kv_t *o = j < ov->len ? &g_array_index(ov, kv_t, j) : NULL;
    int c = !t ? 1 : !o ? -1 : kv_cmp(t, o);
    kv_t *x = c < 0 ? t : o;
    if (c == 0)
      kv_clear(t);
    i += c <= 0;
    j += c >= 0;
    if (x->val)
      g_array_append_val(rows, *x);
    else
      kv_clear(x);
  }
  g_array_set_clear_func(tab, NULL);
  g_array_set_clear_func(ov, NULL);
  g_array_set_size(tab, 0);
  g_array_set_size(ov, 0);
  g_array_set_clear_func(tab, kv_clear);
  g_array_set_clear_func(ov, kv_clear);
}

/* Up to SCAN_CHUNK rows of the table from key `from` on (after: past
 * it), below end (NULL: no bound), into tab. */
static int table_rows(sstate_t *st, uint32_t scope, GBytes *from, int after,
                      GBytes *end, GArray *tab, char *err, size_t errlen) {
  sqlite3_stmt *q = NULL;
  int rc = -1, s;
  gsize fl;
  const void *f = g_bytes_get_data(from, &fl);
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
    const void *k = sqlite3_column_blob(q, 0);
    size_t kl = (size_t)sqlite3_column_bytes(q, 0);
    const void *v = sqlite3_column_blob(q, 1);
    size_t vl = (size_t)sqlite3_column_bytes(q, 1);
    kv_t x = kv_of(k, kl, v ? v : "", vl);
    g_array_append_val(tab, x);
  }
  if (s != SQLITE_DONE) {
    fail(st, err, errlen);
    goto out;
  }
  rc = 0;
out:
  sqlite3_finalize(q);
  return rc;
}

/* A chunk of a scan: the table's rows from `from` on (after: past it),
 * below end (NULL: no bound), up to SCAN_CHUNK of them, merged with the
 * overlay's writes up to the last of them (to end when the table had
 * fewer), read under the mutex; *next: that last row's key when the
 * table may hold more, else NULL. fn is called without the mutex, so
 * that fn may read again, and a scan holds one chunk in memory. */
static int scan_rows(sstate_t *st, uint32_t scope, GBytes *from, int after,
                     GBytes *end, GArray *rows, GBytes **next, char *err,
                     size_t errlen) {
  GArray *tab = g_array_new(FALSE, FALSE, sizeof(kv_t));
  GArray *ov = g_array_new(FALSE, FALSE, sizeof(kv_t));
  g_array_set_clear_func(tab, kv_clear);
  g_array_set_clear_func(ov, kv_clear);
  *next = NULL;
  pthread_mutex_lock(&st->mu);
  int rc = table_rows(st, scope, from, after, end, tab, err, errlen);
  if (rc == 0) {
    gsize fl, tl = 0;
    const void *f = g_bytes_get_data(from, &fl), *to = NULL;
    int incl = 0;
    if (tab->len == SCAN_CHUNK) {
      *next = g_bytes_ref(g_array_index(tab, kv_t, tab->len - 1).key);
      to = g_bytes_get_data(*next, &tl);
      incl = 1;
    } else if (end)
      to = g_bytes_get_data(end, &tl);
    slog_ov_range(st->ov, scope, f, fl, after, to, tl, incl, ov_row, ov);
    merge(tab, ov, rows);
  }
  pthread_mutex_unlock(&st->mu);
  g_array_free(tab, TRUE);
  g_array_free(ov, TRUE);
  return rc;
}

int sstate_scan(sstate_t *st, uint32_t scope, const void *prefix, size_t plen,
                store_state_fn fn, void *arg, char *err, size_t errlen) {
  GArray *rows = g_array_new(FALSE, FALSE, sizeof(kv_t));
  GBytes *end = prefix_end(prefix, plen);
  GBytes *from = g_bytes_new(prefix, plen), *next = NULL;
  int rc = 0, after = 0;
  g_array_set_clear_func(rows, kv_clear);
  do {
    g_array_set_size(rows, 0);
    rc = scan_rows(st, scope, from, after, end, rows, &next, err, errlen);
    for (guint i = 0; rc == 0 && i < rows->len; i++) {
      const kv_t *x = &g_array_index(rows, kv_t, i);
      gsize kl, vl;
      const void *k = g_bytes_get_data(x->key, &kl);
      const void *v = g_bytes_get_data(x->val, &vl);
      rc = fn(arg, k, kl, v ? v : "", vl);
    }
    if (next) {
      g_bytes_unref(from);
      from = next;
      after = 1;
    }
  } while (rc == 0 && next);
  g_array_free(rows, TRUE);
  g_bytes_unref(from);
  if (end)
    g_bytes_unref(end);
  return rc;
}

/* The log folded first, in the same transaction: a write of the scope
 * still in the log would otherwise come back after the reset. */
int sstate_reset(sstate_t *st, uint32_t scope, int64_t *removed, char *err,
                 size_t errlen) {
  sqlite3_stmt *q = NULL;
  int64_t upto = 0;
  int rc = -1;
  pthread_mutex_lock(&st->mu);
  if (removed)
    *removed = 0;
  if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    goto out;
  if (sqlite3_prepare_v2(st->db, "DELETE FROM state WHERE scope = ?1", -1, &q,
                         NULL) != SQLITE_OK) {
    if (absent(st))
      rc = 0;
    goto out;
  }
  if (slog_fold_in(st->db, &upto) != SQLITE_OK)
    goto out;
  sqlite3_bind_int64(q, 1, scope);
  if (sqlite3_step(q) != SQLITE_DONE)
    goto out;
  if (removed)
    *removed = sqlite3_changes64(st->db);
  if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    goto out;
  slog_ov_prune(st->ov, upto);
  if (upto > st->folded)
    st->folded = upto;
  rc = 0;
out:
  if (rc < 0)
    fail(st, err, errlen);
  sqlite3_finalize(q);
  if (!sqlite3_get_autocommit(st->db))
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
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

/* Counted in the table, the log folded first (a file no one may write
 * now counts without it). */
int sstate_stats(sstate_t *st, uint32_t scope, int64_t *keys, int64_t *bytes,
                 char *err, size_t errlen) {
  fold_on(st, st->db);
  int rc = query_ints(st,
                      "SELECT count(*), coalesce(sum(length(key) +"
                      " length(value)), 0) FROM state WHERE scope = ?1",
                      scope, NULL, keys, bytes, err, errlen);
  return rc < 0 ? -1 : 0;
}
