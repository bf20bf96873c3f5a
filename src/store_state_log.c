/*
 * The log of plugin state writes, its fold and the overlay of the writes
 * not folded yet: see store_state_log.h.
 */
#include <sqlite3.h>
#include <string.h>

#include "store_state_log.h"

const char *const slog_schema_sql =
    "CREATE TABLE IF NOT EXISTS state_log("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);";

#define HEAD 13 /* flag, scope, key length, value length */

static void put32(guint8 *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (guint8)(v >> (8 * i));
}

static uint32_t get32(const guint8 *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

void slog_pack(GByteArray *out, const slog_write_t *w) {
  guint8 h[HEAD];
  h[0] = w->del ? 1 : 0;
  put32(h + 1, w->scope);
  put32(h + 5, (uint32_t)w->klen);
  put32(h + 9, w->del ? 0 : (uint32_t)w->vlen);
  g_byte_array_append(out, h, HEAD);
  g_byte_array_append(out, w->key, (guint)w->klen);
  if (!w->del)
    g_byte_array_append(out, w->val, (guint)w->vlen);
}

int slog_unpack(const guint8 *p, size_t n, size_t *at, slog_write_t *w) {
  if (*at == n)
    return 0;
  if (n - *at < HEAD)
    return -1;
  const guint8 *h = p + *at;
  w->del = h[0] == 1;
  w->scope = get32(h + 1);
  w->klen = get32(h + 5);
  w->vlen = get32(h + 9);
  if (n - *at - HEAD < w->klen || n - *at - HEAD - w->klen < w->vlen)
    return -1;
  w->key = h + HEAD;
  w->val = w->del ? NULL : h + HEAD + w->klen;
  *at += HEAD + w->klen + w->vlen;
  return 1;
}

/* By scope, then key bytes (a shorter key first when one starts the
 * other), as SQLite orders (scope, key BLOB). */
static int key_cmp(uint32_t s1, const guint8 *k1, size_t l1, uint32_t s2,
                   const guint8 *k2, size_t l2) {
  if (s1 != s2)
    return s1 < s2 ? -1 : 1;
  size_t n = MIN(l1, l2);
  int c = n ? memcmp(k1, k2, n) : 0;
  if (c == 0 && l1 != l2)
    c = l1 < l2 ? -1 : 1;
  return c;
}

static gint write_cmp(gconstpointer a, gconstpointer b) {
  const slog_write_t *x = *(slog_write_t *const *)a;
  const slog_write_t *y = *(slog_write_t *const *)b;
  return key_cmp(x->scope, x->key, x->klen, y->scope, y->key, y->klen);
}

static guint key_hash(uint32_t scope, const guint8 *key, size_t klen) {
  guint h = 2166136261u ^ scope;
  for (size_t i = 0; i < klen; i++)
    h = (h ^ key[i]) * 16777619u;
  return h;
}

static guint write_hash(gconstpointer p) {
  const slog_write_t *w = p;
  return key_hash(w->scope, w->key, w->klen);
}

static gboolean write_eq(gconstpointer a, gconstpointer b) {
  const slog_write_t *x = a, *y = b;
  return x->scope == y->scope && x->klen == y->klen &&
         memcmp(x->key, y->key, x->klen) == 0;
}

typedef struct fold {
  sqlite3_stmt *put, *del;
  int rc;
} fold_t;

/* Bytes to bind; never NULL (SQLite binds NULL as SQL NULL). */
static const void *nn(const void *p, size_t n) {
  return n ? p : "";
}

static void fold_one(const slog_write_t *w, fold_t *f) {
  sqlite3_stmt *q = w->del ? f->del : f->put;
  sqlite3_bind_int64(q, 1, w->scope);
  sqlite3_bind_blob64(q, 2, nn(w->key, w->klen), w->klen, SQLITE_STATIC);
  if (!w->del)
    sqlite3_bind_blob64(q, 3, nn(w->val, w->vlen), w->vlen, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_reset(q);
  f->rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The rows of the log, oldest first, into t (the latest write of each
 * key, found by hash: a fold reads many writes of few keys, and a
 * balanced tree's search cost each write 1,200 instructions); their
 * bytes are kept in rows. */
static int fold_read(sqlite3 *db, GHashTable *t, GPtrArray *rows) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(db, "SELECT data FROM state_log ORDER BY seq", -1,
                              &q, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    size_t n = (size_t)sqlite3_column_bytes(q, 0), at = 0;
    GBytes *row = g_bytes_new(sqlite3_column_blob(q, 0), n);
    const guint8 *p = g_bytes_get_data(row, NULL);
    slog_write_t w;
    int u;
    g_ptr_array_add(rows, row);
    rc = SQLITE_OK;
    while ((u = slog_unpack(p, n, &at, &w)) == 1) {
      slog_write_t *old = g_hash_table_lookup(t, &w);
      if (old)
        *old = w; /* a later row: its write wins */
      else
        g_hash_table_add(t, g_memdup2(&w, sizeof(w)));
    }
    if (u < 0)
      rc = SQLITE_CORRUPT;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  sqlite3_finalize(q);
  return rc;
}

static int last_seq(sqlite3 *db, int64_t *upto) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(
      db, "SELECT seq FROM sqlite_sequence WHERE name = 'state_log'", -1, &q,
      NULL);
  *upto = 0;
  if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW)
    *upto = sqlite3_column_int64(q, 0);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE)
    rc = SQLITE_OK;
  sqlite3_finalize(q);
  return rc;
}

int slog_fold_in(sqlite3 *db, int64_t *upto) {
  GHashTable *t = g_hash_table_new_full(write_hash, write_eq, g_free, NULL);
  GPtrArray *rows =
      g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  GPtrArray *keys = NULL;
  fold_t f = {0};
  int rc = fold_read(db, t, rows);
  if (rc == SQLITE_OK && g_hash_table_size(t) > 0) {
    rc = sqlite3_prepare_v2(db,
                            "INSERT OR REPLACE INTO state(scope, key, value)"
                            " VALUES(?1, ?2, ?3)",
                            -1, &f.put, NULL);
    if (rc == SQLITE_OK)
      rc = sqlite3_prepare_v2(db,
                              "DELETE FROM state WHERE scope = ?1 AND key = ?2",
                              -1, &f.del, NULL);
    if (rc == SQLITE_OK) {
      /* In key order: each page of the table is reached once. */
      GHashTableIter it;
      gpointer w;
      keys = g_ptr_array_sized_new(g_hash_table_size(t));
      g_hash_table_iter_init(&it, t);
      while (g_hash_table_iter_next(&it, &w, NULL))
        g_ptr_array_add(keys, w);
      g_ptr_array_sort(keys, write_cmp);
      for (guint i = 0; f.rc == SQLITE_OK && i < keys->len; i++)
        fold_one(keys->pdata[i], &f);
      rc = f.rc;
    }
  }
  if (rc == SQLITE_OK && rows->len > 0)
    rc = sqlite3_exec(db, "DELETE FROM state_log", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = last_seq(db, upto);
  sqlite3_finalize(f.put);
  sqlite3_finalize(f.del);
  if (keys)
    g_ptr_array_free(keys, TRUE);
  g_hash_table_destroy(t);
  g_ptr_array_free(rows, TRUE);
  return rc;
}

int slog_fold(sqlite3 *db, int64_t *upto) {
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = slog_fold_in(db, upto);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

/* ------------------------------------------------------------------------
 * The overlay: the nodes by key in a hash table, for the writes of every
 * batch (most of them to keys already there), and in key order only when
 * a scan asks: new keys wait in an unsorted tail, sorted and merged into
 * the ordered array by the next scan. Keeping every node in a sorted
 * sequence as it came cost a batch's writes 2,000 instructions each (the
 * search) and a new key 2,800 (the insert). */

struct slog_ov {
  GHashTable *by_key; /* node -> node */
  GPtrArray *sorted;  /* nodes in key order */
  GPtrArray *tail;    /* nodes not in sorted yet */
  size_t bytes;
  int64_t prune_upto; /* slog_ov_prune()'s, for its callback */
};

#define NODE_BYTES (sizeof(slog_node_t) + 48) /* with the containers' */

static void node_free(gpointer p) {
  slog_node_t *n = p;
  g_free(n->val);
  g_free(n);
}

static gint node_cmp(gconstpointer a, gconstpointer b) {
  const slog_node_t *x = a, *y = b;
  return key_cmp(x->scope, x->key, x->klen, y->scope, y->key, y->klen);
}

static gint node_pcmp(gconstpointer a, gconstpointer b) {
  return node_cmp(*(slog_node_t *const *)a, *(slog_node_t *const *)b);
}

static guint node_hash(gconstpointer p) {
  const slog_node_t *n = p;
  return key_hash(n->scope, n->key, n->klen);
}

static gboolean node_eq(gconstpointer a, gconstpointer b) {
  const slog_node_t *x = a, *y = b;
  return x->scope == y->scope && x->klen == y->klen &&
         memcmp(x->key, y->key, x->klen) == 0;
}

slog_ov_t *slog_ov_new(void) {
  slog_ov_t *ov = g_new0(slog_ov_t, 1);
  ov->by_key = g_hash_table_new_full(node_hash, node_eq, node_free, NULL);
  ov->sorted = g_ptr_array_new();
  ov->tail = g_ptr_array_new();
  return ov;
}

void slog_ov_free(slog_ov_t *ov) {
  if (!ov)
    return;
  g_ptr_array_free(ov->sorted, TRUE);
  g_ptr_array_free(ov->tail, TRUE);
  g_hash_table_destroy(ov->by_key);
  g_free(ov);
}

static slog_node_t probe(uint32_t scope, const void *key, size_t klen) {
  return (slog_node_t){.scope = scope, .key = (guint8 *)key, .klen = klen};
}

/* The value kept where it fits (most writes of a key have the value's
 * length of the one before). */
static void set_val(slog_ov_t *ov, slog_node_t *n, const slog_write_t *w) {
  size_t vlen = w->del ? 0 : w->vlen;
  if (w->del || !n->val || vlen != n->vlen) {
    ov->bytes -= n->vlen;
    g_free(n->val);
    n->val = w->del ? NULL : g_malloc(vlen ? vlen : 1);
    ov->bytes += vlen;
  }
  n->del = w->del;
  n->vlen = vlen;
  if (vlen)
    memcpy(n->val, w->val, vlen);
}

void slog_ov_apply(slog_ov_t *ov, const slog_write_t *w, int64_t seq) {
  slog_node_t p = probe(w->scope, w->key, w->klen);
  slog_node_t *n = g_hash_table_lookup(ov->by_key, &p);
  if (n) {
    if (n->seq < seq) {
      n->seq = seq;
      set_val(ov, n, w);
    }
    return;
  }
  /* The key's bytes after the node, in one allocation. */
  n = g_malloc0(sizeof(*n) + w->klen);
  n->seq = seq;
  n->scope = w->scope;
  n->klen = w->klen;
  n->key = (guint8 *)(n + 1);
  memcpy(n->key, w->key, w->klen);
  ov->bytes += NODE_BYTES + w->klen;
  set_val(ov, n, w);
  g_hash_table_add(ov->by_key, n);
  g_ptr_array_add(ov->tail, n);
}

int slog_ov_load(slog_ov_t *ov, sqlite3 *db) {
  sqlite3_stmt *q = NULL;
  int rc =
      sqlite3_prepare_v2(db, "SELECT seq, data FROM state_log", -1, &q, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    int64_t seq = sqlite3_column_int64(q, 0);
    size_t n = (size_t)sqlite3_column_bytes(q, 1), at = 0;
    const guint8 *p = sqlite3_column_blob(q, 1);
    slog_write_t w;
    int u;
    rc = SQLITE_OK;
    while ((u = slog_unpack(p, n, &at, &w)) == 1)
      slog_ov_apply(ov, &w, seq);
    if (u < 0)
      rc = SQLITE_CORRUPT;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  sqlite3_finalize(q);
  return rc;
}

/* The nodes of a that stay (seq above upto); those that go are freed
 * by the hash table, after every array let go of them. */
static void keep_newer(GPtrArray *a, int64_t upto) {
  guint k = 0;
  for (guint i = 0; i < a->len; i++) {
    slog_node_t *n = g_ptr_array_index(a, i);
    if (n->seq > upto)
      a->pdata[k++] = n;
  }
  g_ptr_array_set_size(a, k);
}

static gboolean folded(gpointer key, gpointer val, gpointer arg) {
  (void)val;
  slog_node_t *n = key;
  slog_ov_t *ov = arg;
  if (n->seq > ov->prune_upto)
    return FALSE;
  ov->bytes -= NODE_BYTES + n->klen + n->vlen;
  return TRUE;
}

void slog_ov_prune(slog_ov_t *ov, int64_t upto) {
  keep_newer(ov->sorted, upto);
  keep_newer(ov->tail, upto);
  ov->prune_upto = upto;
  g_hash_table_foreach_remove(ov->by_key, folded, ov);
}

const slog_node_t *slog_ov_find(slog_ov_t *ov, uint32_t scope, const void *key,
                                size_t klen) {
  slog_node_t p = probe(scope, key, klen);
  return g_hash_table_lookup(ov->by_key, &p);
}

/* The tail sorted and merged into sorted. */
static void order(slog_ov_t *ov) {
  if (ov->tail->len == 0)
    return;
  g_ptr_array_sort(ov->tail, node_pcmp);
  GPtrArray *m = g_ptr_array_sized_new(ov->sorted->len + ov->tail->len);
  guint i = 0, j = 0;
  while (i < ov->sorted->len || j < ov->tail->len) {
    int take_sorted = j == ov->tail->len ||
                      (i < ov->sorted->len &&
                       node_cmp(ov->sorted->pdata[i], ov->tail->pdata[j]) < 0);
    g_ptr_array_add(m, take_sorted ? ov->sorted->pdata[i++]
                                   : ov->tail->pdata[j++]);
  }
  g_ptr_array_free(ov->sorted, TRUE);
  ov->sorted = m;
  g_ptr_array_set_size(ov->tail, 0);
}

void slog_ov_range(slog_ov_t *ov, uint32_t scope, const void *from, size_t flen,
                   int after, const void *to, size_t tlen, int to_incl,
                   slog_ov_fn fn, void *arg) {
  slog_node_t p = probe(scope, from, flen);
  order(ov);
  /* The first node at from (after: past it). */
  guint lo = 0, hi = ov->sorted->len;
  while (lo < hi) {
    guint mid = lo + (hi - lo) / 2;
    int c = node_cmp(ov->sorted->pdata[mid], &p);
    if (c < 0 || (after && c == 0))
      lo = mid + 1;
    else
      hi = mid;
  }
  for (guint i = lo; i < ov->sorted->len; i++) {
    const slog_node_t *n = ov->sorted->pdata[i];
    if (n->scope != scope)
      break;
    if (to) {
      int c = key_cmp(scope, n->key, n->klen, scope, to, tlen);
      if (c > 0 || (c == 0 && !to_incl))
        break;
    }
    fn(arg, n);
  }
}

size_t slog_ov_keys(const slog_ov_t *ov) {
  return g_hash_table_size(ov->by_key);
}

size_t slog_ov_bytes(const slog_ov_t *ov) {
  return ov->bytes;
}
