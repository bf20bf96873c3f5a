/*
 * The parking lot in the SQLite file: see store_parked.h.
 */
#include "store_parked.h"

#include <glib.h>

const char *const sparked_schema_sql =
    "CREATE TABLE IF NOT EXISTS parked("
    " scope INTEGER NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " timestamp INTEGER NOT NULL, key BLOB, value BLOB,"
    " headers BLOB NOT NULL, event_id BLOB, reason TEXT NOT NULL,"
    " attempts INTEGER NOT NULL, parked_at INTEGER NOT NULL,"
    " PRIMARY KEY(scope, topic, partition, \"offset\"));";

struct sparked_buf {
  GPtrArray *recs; /* store_parked_t *, copies */
  GPtrArray *gone; /* store_parked_t *, copies: rows to remove */
};

store_parked_t *store_parked_dup(const store_parked_t *p) {
  store_parked_t *c = g_new(store_parked_t, 1);
  *c = *p;
  c->topic = g_strdup(p->topic);
  c->key = p->key ? g_memdup2(p->key, p->key_len) : NULL;
  c->value = p->value ? g_memdup2(p->value, p->value_len) : NULL;
  c->headers = g_memdup2(p->headers, p->headers_len);
  c->event_id = p->event_id ? g_memdup2(p->event_id, p->event_id_len) : NULL;
  c->reason = g_strdup(p->reason ? p->reason : "");
  return c;
}

void store_parked_free(store_parked_t *p) {
  if (!p)
    return;
  g_free((char *)p->topic);
  g_free((void *)p->key);
  g_free((void *)p->value);
  g_free((void *)p->headers);
  g_free((void *)p->event_id);
  g_free((char *)p->reason);
  g_free(p);
}

sparked_buf_t *sparked_buf_new(void) {
  sparked_buf_t *b = g_new0(sparked_buf_t, 1);
  b->recs = g_ptr_array_new_with_free_func((GDestroyNotify)store_parked_free);
  b->gone = g_ptr_array_new_with_free_func((GDestroyNotify)store_parked_free);
  return b;
}

void sparked_buf_free(sparked_buf_t *b) {
  if (!b)
    return;
  g_ptr_array_free(b->recs, TRUE);
  g_ptr_array_free(b->gone, TRUE);
  g_free(b);
}

void sparked_buf_add(sparked_buf_t *b, const store_parked_t *p) {
  g_ptr_array_add(b->recs, store_parked_dup(p));
}

void sparked_buf_remove(sparked_buf_t *b, const store_parked_t *p) {
  g_ptr_array_add(b->gone, store_parked_dup(p));
}

size_t sparked_buf_len(const sparked_buf_t *b) {
  return b->recs->len + b->gone->len;
}

void sparked_buf_clear(sparked_buf_t *b) {
  g_ptr_array_set_size(b->recs, 0);
  g_ptr_array_set_size(b->gone, 0);
}

void store_parked_list_free(store_parked_t **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    store_parked_free(v[i]);
  g_free(v);
}

/* A blob column: SQL NULL for an absent one, never NULL for an empty. */
static void bind_blob(sqlite3_stmt *q, int col, const void *v, size_t len) {
  if (!v)
    sqlite3_bind_null(q, col);
  else
    sqlite3_bind_blob64(q, col, len ? v : "", len, SQLITE_STATIC);
}

static int row_write(sqlite3_stmt *q, const store_parked_t *p) {
  sqlite3_bind_int64(q, 1, p->scope);
  sqlite3_bind_text(q, 2, p->topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 3, p->partition);
  sqlite3_bind_int64(q, 4, p->offset);
  sqlite3_bind_int64(q, 5, p->timestamp_ms);
  bind_blob(q, 6, p->key, p->key_len);
  bind_blob(q, 7, p->value, p->value_len);
  bind_blob(q, 8, p->headers ? p->headers : "", p->headers_len);
  bind_blob(q, 9, p->event_id, p->event_id_len);
  sqlite3_bind_text(q, 10, p->reason, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 11, p->attempts);
  sqlite3_bind_int64(q, 12, p->parked_at_ms);
  int rc = sqlite3_step(q);
  sqlite3_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int rows_remove(sqlite3 *db, const sparked_buf_t *b) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "DELETE FROM parked WHERE scope = ?1 AND"
                              " topic = ?2 AND partition = ?3 AND"
                              " \"offset\" = ?4",
                              -1, &q, NULL);
  for (guint i = 0; rc == SQLITE_OK && i < b->gone->len; i++) {
    const store_parked_t *p = b->gone->pdata[i];
    sqlite3_bind_int64(q, 1, p->scope);
    sqlite3_bind_text(q, 2, p->topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, p->partition);
    sqlite3_bind_int64(q, 4, p->offset);
    rc = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    sqlite3_reset(q);
  }
  sqlite3_finalize(q);
  return rc;
}

int sparked_buf_write(sqlite3 *db, void *arg) {
  const sparked_buf_t *b = arg;
  sqlite3_stmt *q = NULL;
  int rc = b->gone->len > 0 ? rows_remove(db, b) : SQLITE_OK;
  if (rc != SQLITE_OK || b->recs->len == 0)
    return rc;
  rc = sqlite3_prepare_v2(
      db,
      "INSERT OR REPLACE INTO parked(scope, topic, partition, \"offset\","
      " timestamp, key, value, headers, event_id, reason, attempts,"
      " parked_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
      -1, &q, NULL);
  for (guint i = 0; rc == SQLITE_OK && i < b->recs->len; i++)
    rc = row_write(q, b->recs->pdata[i]);
  sqlite3_finalize(q);
  return rc;
}
