/*
 * plugin_db: see plugin_db.h. Compiled into each domain plugin module, so
 * the registry below is per module.
 */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "plugin_db.h"

/* ----------------------------------------------- instances per database */

typedef struct db_users {
  int instances;
  int used; /* an instance wrote to it: worth a summary */
} db_users_t;

/* Created by init() before any instance and freed by fini() after the
 * last one; the lock guards its entries against instances on other
 * members' threads. */
G_LOCK_DEFINE_STATIC(registry);
static GHashTable *registry; /* path -> db_users_t */

int pdb_module_init(const khost_api_t *api, khost_host_t *host, char *err,
                    size_t errlen) {
  registry = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return 0;
}

void pdb_module_fini(const khost_api_t *api, khost_host_t *host) {
  g_hash_table_destroy(registry);
  registry = NULL;
}

static void registry_join(const char *path) {
  G_LOCK(registry);
  db_users_t *u = g_hash_table_lookup(registry, path);
  if (!u) {
    u = g_new0(db_users_t, 1);
    g_hash_table_insert(registry, g_strdup(path), u);
  }
  u->instances++;
  G_UNLOCK(registry);
}

static void registry_mark_used(const char *path) {
  G_LOCK(registry);
  db_users_t *u = g_hash_table_lookup(registry, path);
  if (u)
    u->used = 1;
  G_UNLOCK(registry);
}

/* Returns 1 when this was the last instance of a database written to. */
static int registry_leave(const char *path) {
  int last = 0;
  G_LOCK(registry);
  db_users_t *u = g_hash_table_lookup(registry, path);
  if (--u->instances == 0) {
    last = u->used;
    g_hash_table_remove(registry, path);
  }
  G_UNLOCK(registry);
  return last;
}

/* ----------------------------------------------------------- database */

/* Refuse at start what would fail at the first write, without creating
 * the database (so that `khost check` leaves nothing behind). */
int pdb_check_path(const char *path, char *err, size_t errlen) {
  char *dir = g_path_get_dirname(path);
  int ok = access(path, F_OK) == 0 ? access(path, R_OK | W_OK) == 0
                                   : access(dir, W_OK | X_OK) == 0;
  if (!ok)
    snprintf(err, errlen, "db %s: %s", path, strerror(errno));
  g_free(dir);
  return ok ? 0 : -1;
}

int pdb_config_path(const khost_api_t *api, khost_host_t *host,
                    const char *what, const char **path, char *err,
                    size_t errlen) {
  int has = api->config_string(host, "db", path);
  if (has < 0) {
    snprintf(err, errlen, "db must be a string (the SQLite database path)");
    return -1;
  }
  if (has == 0 || !(*path)[0]) {
    snprintf(err, errlen, "the setting db (the SQLite database %s) is required",
             what);
    return -1;
  }
  return pdb_check_path(*path, err, errlen);
}

void pdb_init(pdb_t *d, const char *path, const char *schema,
              const char *const *sql, int n_stmts) {
  d->path = g_strdup(path);
  d->schema = schema;
  d->sql = sql;
  d->n_stmts = n_stmts;
  d->conn = NULL;
  d->st = g_new0(sqlite3_stmt *, n_stmts);
  registry_join(d->path);
}

/* A new database is switched to WAL under an exclusive lock that SQLite
 * does not wait for (no busy handler): several instances opening it at once
 * retry for as long as the busy timeout. */
static int set_wal(sqlite3 *db) {
  int rc = SQLITE_BUSY;
  for (int waited = 0; rc == SQLITE_BUSY && waited <= PDB_BUSY_TIMEOUT_MS;
       waited += 10) {
    rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc == SQLITE_BUSY)
      sqlite3_sleep(10);
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  return rc;
}

static void close_db(pdb_t *d) {
  for (int i = 0; i < d->n_stmts; i++) {
    sqlite3_finalize(d->st[i]);
    d->st[i] = NULL;
  }
  sqlite3_close(d->conn);
  d->conn = NULL;
}

int pdb_open(pdb_t *d, char *err, size_t errlen) {
  int rc = sqlite3_open_v2(d->path, &d->conn,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_busy_timeout(d->conn, PDB_BUSY_TIMEOUT_MS);
  if (rc == SQLITE_OK)
    rc = set_wal(d->conn);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(d->conn, d->schema, NULL, NULL, NULL);
  for (int i = 0; rc == SQLITE_OK && i < d->n_stmts; i++)
    rc = sqlite3_prepare_v2(d->conn, d->sql[i], -1, &d->st[i], NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "db %s: %s", d->path,
             d->conn ? sqlite3_errmsg(d->conn) : sqlite3_errstr(rc));
    close_db(d);
    return -1;
  }
  registry_mark_used(d->path);
  return 0;
}

int pdb_write(pdb_t *d, GArray *batch, pdb_apply_fn apply, void *instance,
              char *err, size_t errlen) {
  guint size = g_array_get_element_size(batch);
  int rc;
  if (batch->len == 0)
    return 0;
  if (!d->conn && pdb_open(d, err, errlen) != 0)
    return -1;
  rc = sqlite3_exec(d->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  for (guint i = 0; rc == SQLITE_OK && i < batch->len; i++)
    if (apply(instance, batch->data + (gsize)i * size) != SQLITE_DONE)
      rc = SQLITE_ERROR;
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(d->conn, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    /* Nothing of the batch stays: the host calls flush() again. */
    snprintf(err, errlen, "db %s: %s", d->path, sqlite3_errmsg(d->conn));
    sqlite3_exec(d->conn, "ROLLBACK", NULL, NULL, NULL);
    return -1;
  }
  return 0;
}

/* The summary needs the connection: the last instance may never have
 * flushed (its batches written by others), so it opens one here. */
void pdb_finish(pdb_t *d, const khost_api_t *api, khost_host_t *host,
                void (*summary)(void *instance), void *instance) {
  char err[512];
  if (registry_leave(d->path)) {
    if (d->conn || pdb_open(d, err, sizeof(err)) == 0)
      summary(instance);
    else
      api->log(host, KHOST_LOG_WARNING, "no summary: %s", err);
  }
  if (d->conn)
    close_db(d);
  g_free(d->st);
  g_free(d->path);
  d->st = NULL;
  d->path = NULL;
}

int pdb_step(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc;
}

/* ------------------------------------------------------------ records */

void pdb_identify(const khost_record_t *rec, char **event_id, char **where) {
  if (rec->event_id)
    *event_id = g_strndup(rec->event_id, rec->event_id_len);
  else
    *event_id = g_strdup_printf("%s/%d/%lld", rec->topic, (int)rec->partition,
                                (long long)rec->offset);
  *where = g_strdup_printf("%s [%d] offset %lld eventId %s", rec->topic,
                           (int)rec->partition, (long long)rec->offset,
                           rec->event_id ? *event_id : "-");
}

char *pdb_id_text(json_t *v) {
  if (json_is_integer(v))
    return g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
  if (json_is_string(v) && json_string_length(v) > 0)
    return g_strdup(json_string_value(v));
  return NULL;
}
