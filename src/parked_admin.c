/*
 * The parking lot seen by `khost parked`: see parked_admin.h.
 */
#include "parked_admin.h"

#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "dedup_admin.h"
#include "store_parked.h"
#include "store_pg_admin.h"

#define PADM_BUSY_MS 10000

struct padm {
  char *path;
  dadm_t *dadm; /* scopes, and the schema brought up to date */
  sqlite3 *db;
  store_t *pg; /* instead of the three above: the PostgreSQL store */
};

static int fail(const padm_t *a, char *err, size_t errlen) {
  snprintf(err, errlen, "%s: parked: %s", a->path, sqlite3_errmsg(a->db));
  return -1;
}

int padm_open(padm_t **out, const char *path, char *err, size_t errlen) {
  padm_t *a = g_new0(padm_t, 1);
  int rc = -1;
  a->path = g_strdup(path);
  if (dadm_open(&a->dadm, path, 0, err, errlen) < 0)
    goto out;
  if (sqlite3_open_v2(path, &a->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
    fail(a, err, errlen);
    goto out;
  }
  sqlite3_busy_timeout(a->db, PADM_BUSY_MS);
  rc = 0;
out:
  if (rc < 0) {
    padm_close(a);
    a = NULL;
  }
  *out = a;
  return rc;
}

padm_t *padm_of_pg(store_t *s) {
  padm_t *a = g_new0(padm_t, 1);
  a->pg = s;
  return a;
}

store_t *padm_store(const padm_t *a) {
  return a->pg;
}

void padm_close(padm_t *a) {
  if (!a)
    return;
  sqlite3_close(a->db);
  dadm_close(a->dadm);
  g_free(a->path);
  g_free(a);
}

int padm_scope(padm_t *a, const char *pipeline, uint32_t *scope, int *found,
               char *err, size_t errlen) {
  if (a->pg)
    return store_pg_find_scope(a->pg, pipeline, scope, found, err, errlen);
  return dadm_scope(a->dadm, pipeline, 0, scope, found, err, errlen);
}

/* A blob column as a copy (NULL for SQL NULL). */
static const void *column_copy(sqlite3_stmt *st, int col, size_t *len) {
  *len = 0;
  if (sqlite3_column_type(st, col) == SQLITE_NULL)
    return NULL;
  const void *b = sqlite3_column_blob(st, col);
  *len = (size_t)sqlite3_column_bytes(st, col);
  return *len ? g_memdup2(b, *len) : g_malloc0(1);
}

static store_parked_t *row_of(sqlite3_stmt *st, uint32_t scope) {
  store_parked_t *p = g_new0(store_parked_t, 1);
  p->scope = scope;
  p->topic = g_strdup((const char *)sqlite3_column_text(st, 0));
  p->partition = sqlite3_column_int(st, 1);
  p->offset = sqlite3_column_int64(st, 2);
  p->timestamp_ms = sqlite3_column_int64(st, 3);
  p->key = column_copy(st, 4, &p->key_len);
  p->value = column_copy(st, 5, &p->value_len);
  p->headers = column_copy(st, 6, &p->headers_len);
  p->event_id = column_copy(st, 7, &p->event_id_len);
  p->reason = g_strdup((const char *)sqlite3_column_text(st, 8));
  p->attempts = (uint32_t)sqlite3_column_int64(st, 9);
  p->parked_at_ms = sqlite3_column_int64(st, 10);
  return p;
}

int padm_list(padm_t *a, uint32_t scope, const padm_filter_t *f,
              store_parked_t ***out, size_t *n, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  GPtrArray *v;
  int step, rc = -1;
  if (a->pg)
    return store_parked_list(a->pg, scope, f, out, n, err, errlen);
  v = g_ptr_array_new();
  if (sqlite3_prepare_v2(
          a->db,
          "SELECT topic, partition, \"offset\", timestamp, key, value,"
          " headers, event_id, reason, attempts, parked_at FROM parked"
          " WHERE scope = ?1 AND (?2 IS NULL OR topic = ?2)"
          " AND (?3 < 0 OR partition = ?3) AND (?4 < 0 OR \"offset\" = ?4)"
          " ORDER BY topic, partition, \"offset\"",
          -1, &st, NULL) != SQLITE_OK) {
    fail(a, err, errlen);
    goto out;
  }
  sqlite3_bind_int64(st, 1, scope);
  if (f->topic)
    sqlite3_bind_text(st, 2, f->topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, f->partition);
  sqlite3_bind_int64(st, 4, f->offset);
  while ((step = sqlite3_step(st)) == SQLITE_ROW)
    g_ptr_array_add(v, row_of(st, scope));
  if (step != SQLITE_DONE) {
    fail(a, err, errlen);
    goto out;
  }
  rc = 0;
out:
  sqlite3_finalize(st);
  *n = rc == 0 ? v->len : 0;
  if (rc < 0) {
    g_ptr_array_set_free_func(v, (GDestroyNotify)store_parked_free);
    g_ptr_array_free(v, TRUE);
    *out = NULL;
  } else {
    *out = (store_parked_t **)g_ptr_array_free(v, FALSE);
  }
  return rc;
}

void padm_list_free(store_parked_t **v, size_t n) {
  store_parked_list_free(v, n);
}

int padm_remove(padm_t *a, const store_parked_t *p, int *removed, char *err,
                size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (a->pg)
    return store_parked_remove(a->pg, p, removed, err, errlen);
  if (sqlite3_prepare_v2(a->db,
                         "DELETE FROM parked WHERE scope = ?1 AND topic = ?2"
                         " AND partition = ?3 AND \"offset\" = ?4",
                         -1, &st, NULL) != SQLITE_OK) {
    fail(a, err, errlen);
    goto out;
  }
  sqlite3_bind_int64(st, 1, p->scope);
  sqlite3_bind_text(st, 2, p->topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, p->partition);
  sqlite3_bind_int64(st, 4, p->offset);
  if (sqlite3_step(st) != SQLITE_DONE) {
    fail(a, err, errlen);
    goto out;
  }
  *removed = sqlite3_changes(a->db) > 0;
  rc = 0;
out:
  sqlite3_finalize(st);
  return rc;
}

/* In WAL mode every connection holds a shared lock on the WAL index while
 * it is open: an exclusive lock is refused (SQLITE_BUSY) as long as
 * another one is open, idle or not. */
int padm_check_unused(const char *path, char *err, size_t errlen) {
  sqlite3 *db = NULL;
  int rc = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
    goto out;
  }
  int step = sqlite3_exec(db,
                          "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;"
                          " SELECT count(*) FROM sqlite_master",
                          NULL, NULL, NULL);
  if (step == SQLITE_BUSY || step == SQLITE_LOCKED) {
    snprintf(err, errlen,
             "%s is in use by a running khost: stop it first (it would not "
             "see the records marked here)",
             path);
    goto out;
  }
  if (step != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
    goto out;
  }
  rc = 0;
out:
  sqlite3_close(db); /* rolls back and lets go of the lock */
  return rc;
}
