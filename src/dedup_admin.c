/*
 * Dedup administration. See dedup_admin.h for the contract, dedup.c for
 * the tables.
 *
 * Deletions never scan under the write lock: a read finds the next batch
 * of rows (by seq, after the last one seen), then a short write
 * transaction deletes exactly those rows. A running host's writers wait
 * at most one such transaction.
 */
#include "dedup_admin.h"

#include <errno.h>
#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dedup.h"
#include "dedup_file.h"
#include "dedup_segment.h"

#define ADMIN_BUSY_MS 10000
#define SWEEP_BATCH 5000

struct dadm {
  char *path;
  sqlite3 *db;
};

static int fail(const dadm_t *a, char *err, size_t errlen) {
  snprintf(err, errlen, "%s: %s", a->path,
           a->db ? sqlite3_errmsg(a->db) : "out of memory");
  return -1;
}

static int prepare(const dadm_t *a, const char *sql, sqlite3_stmt **st,
                   char *err, size_t errlen) {
  if (sqlite3_prepare_v2(a->db, sql, -1, st, NULL) != SQLITE_OK)
    return fail(a, err, errlen);
  return 0;
}

static int exec(const dadm_t *a, const char *sql, char *err, size_t errlen) {
  if (sqlite3_exec(a->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return fail(a, err, errlen);
  return 0;
}

/* WAL mode (a no-op on a khost database) and a current schema. */
static int prepare_db(dadm_t *a, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int version = 0, rc = -1;
  if (prepare(a, "PRAGMA journal_mode=WAL", &st, err, errlen) < 0)
    goto out;
  if (sqlite3_step(st) != SQLITE_ROW) {
    fail(a, err, errlen);
    goto out;
  }
  const char *mode = (const char *)sqlite3_column_text(st, 0);
  if (!mode || strcmp(mode, "wal") != 0) {
    snprintf(err, errlen, "%s: cannot use WAL journal mode (got %s)", a->path,
             mode ? mode : "nothing");
    goto out;
  }
  sqlite3_finalize(st); /* a statement in progress would block COMMIT */
  st = NULL;
  if (dedup_db_version(a->db, a->path, &version, err, errlen) < 0)
    goto out;
  rc = version < DEDUP_SCHEMA_VERSION
           ? dedup_db_schema(a->db, a->path, err, errlen)
           : 0;
out:
  sqlite3_finalize(st);
  return rc;
}

int dadm_open(dadm_t **out, const char *path, int create, char *err,
              size_t errlen) {
  dadm_t *a = g_new0(dadm_t, 1);
  struct stat sb;
  int rc = -1;
  a->path = g_strdup(path);
  if (!create && stat(path, &sb) != 0) {
    snprintf(err, errlen,
             "%s: no dedup database (%s); `khost run` creates it at start",
             path, g_strerror(errno));
    goto out;
  }
  /* Created as `khost run` creates it (mode 0600), not with SQLite's. */
  if (create && dfile_create(path, NULL, err, errlen) < 0)
    goto out;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path, &a->db, flags, NULL) != SQLITE_OK) {
    fail(a, err, errlen);
    goto out;
  }
  sqlite3_busy_timeout(a->db, ADMIN_BUSY_MS);
  rc = prepare_db(a, err, errlen);
out:
  if (rc < 0) {
    dadm_close(a);
    a = NULL;
  }
  *out = a;
  return rc;
}

void dadm_close(dadm_t *a) {
  if (!a)
    return;
  sqlite3_close(a->db);
  g_free(a->path);
  g_free(a);
}

static int find_scope(dadm_t *a, const char *pipeline, uint32_t *scope,
                      int *found, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc =
      prepare(a, "SELECT id FROM scopes WHERE name = ?1", &st, err, errlen);
  if (rc < 0)
    return -1;
  sqlite3_bind_text(st, 1, pipeline, -1, SQLITE_STATIC);
  int step = sqlite3_step(st);
  *found = step == SQLITE_ROW;
  if (*found)
    *scope = (uint32_t)sqlite3_column_int64(st, 0);
  else if (step != SQLITE_DONE)
    rc = fail(a, err, errlen);
  sqlite3_finalize(st);
  return rc;
}

int dadm_scope(dadm_t *a, const char *pipeline, int create, uint32_t *scope,
               int *found, char *err, size_t errlen) {
  sqlite3_stmt *ins = NULL;
  int rc = find_scope(a, pipeline, scope, found, err, errlen);
  if (rc < 0 || *found || !create)
    return rc;
  rc = prepare(a,
               "INSERT INTO scopes(name) VALUES(?1)"
               " ON CONFLICT(name) DO NOTHING",
               &ins, err, errlen);
  if (rc == 0) {
    sqlite3_bind_text(ins, 1, pipeline, -1, SQLITE_STATIC);
    if (sqlite3_step(ins) != SQLITE_DONE)
      rc = fail(a, err, errlen);
  }
  sqlite3_finalize(ins);
  if (rc == 0)
    rc = find_scope(a, pipeline, scope, found, err, errlen);
  return rc;
}

/* ------------------------------------------------------------------ stats */

/* Every scope by name, with the count of its replay ranges. */
static int stats_scopes(dadm_t *a, GArray *v, GHashTable *by_id, char *err,
                        size_t errlen) {
  sqlite3_stmt *st = NULL;
  int step;
  if (prepare(a,
              "SELECT id, name, (SELECT count(*) FROM replays r"
              " WHERE r.scope = s.id) FROM scopes s ORDER BY name",
              &st, err, errlen) < 0)
    return -1;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    dadm_stats_t e = {.pipeline =
                          g_strdup((const char *)sqlite3_column_text(st, 1)),
                      .replays = sqlite3_column_int64(st, 2)};
    g_array_append_val(v, e);
    g_hash_table_insert(by_id, GINT_TO_POINTER(sqlite3_column_int(st, 0)),
                        GUINT_TO_POINTER(v->len));
  }
  sqlite3_finalize(st);
  return step == SQLITE_DONE ? 0 : fail(a, err, errlen);
}

/* One sequential pass over the marks (a GROUP BY on the unindexed scope
 * would sort the whole table). */
static int stats_marks(dadm_t *a, GArray *v, GHashTable *by_id, char *err,
                       size_t errlen) {
  sqlite3_stmt *st = NULL;
  int step;
  if (prepare(a, "SELECT scope, handled_at FROM marks NOT INDEXED", &st, err,
              errlen) < 0)
    return -1;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    guint idx = GPOINTER_TO_UINT(
        g_hash_table_lookup(by_id, GINT_TO_POINTER(sqlite3_column_int(st, 0))));
    if (idx == 0)
      continue; /* a mark of no known scope: not reachable by name */
    dadm_stats_t *e = &g_array_index(v, dadm_stats_t, idx - 1);
    int64_t at = sqlite3_column_int64(st, 1);
    if (e->marks == 0 || at < e->oldest_ms)
      e->oldest_ms = at;
    if (e->marks == 0 || at > e->newest_ms)
      e->newest_ms = at;
    e->marks++;
  }
  sqlite3_finalize(st);
  return step == SQLITE_DONE ? 0 : fail(a, err, errlen);
}

int dadm_stats(dadm_t *a, dadm_stats_t **out, size_t *n, char *err,
               size_t errlen) {
  GArray *v = g_array_new(FALSE, TRUE, sizeof(dadm_stats_t));
  GHashTable *by_id = g_hash_table_new(NULL, NULL); /* id -> index + 1 */
  int rc = -1;
  /* One read transaction: both queries see the same snapshot. */
  if (exec(a, "BEGIN", err, errlen) < 0)
    goto out;
  if (stats_scopes(a, v, by_id, err, errlen) == 0 &&
      stats_marks(a, v, by_id, err, errlen) == 0)
    rc = 0;
  sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
out:
  g_hash_table_destroy(by_id);
  for (guint i = 0; rc < 0 && i < v->len; i++)
    g_free(g_array_index(v, dadm_stats_t, i).pipeline);
  *n = rc == 0 ? v->len : 0;
  *out = *n ? g_malloc(*n * sizeof(**out)) : NULL;
  if (*out)
    memcpy(*out, v->data, *n * sizeof(**out));
  g_array_free(v, TRUE);
  return rc;
}

void dadm_stats_free(dadm_stats_t *v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    g_free(v[i].pipeline);
  g_free(v);
}

void dadm_file_sizes(const char *path, int64_t *db, int64_t *wal) {
  struct stat sb;
  char *wal_path = g_strdup_printf("%s-wal", path);
  *db = stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
  *wal = stat(wal_path, &sb) == 0 ? (int64_t)sb.st_size : 0;
  g_free(wal_path);
}

/* ----------------------------------------------------------------- lookup */

int dadm_lookup(dadm_t *a, uint32_t scope, const void *id, size_t len,
                dadm_mark_t **out, size_t *n, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  GArray *v = g_array_new(FALSE, TRUE, sizeof(dadm_mark_t));
  int rc = -1, step;
  if (prepare(a,
              "SELECT topic, partition, \"offset\", handled_at, outcome"
              " FROM marks WHERE scope = ?1 AND event_id = ?2 ORDER BY seq",
              &st, err, errlen) < 0)
    goto out;
  sqlite3_bind_int64(st, 1, scope);
  sqlite3_bind_blob64(st, 2, len ? id : "", len, SQLITE_STATIC);
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    dadm_mark_t m = {
        .topic = g_strdup((const char *)sqlite3_column_text(st, 0)),
        .partition = sqlite3_column_int(st, 1),
        .offset = sqlite3_column_int64(st, 2),
        .handled_at_ms = sqlite3_column_int64(st, 3),
        .outcome = sqlite3_column_int(st, 4),
    };
    g_array_append_val(v, m);
  }
  rc = step == SQLITE_DONE ? 0 : fail(a, err, errlen);
out:
  sqlite3_finalize(st);
  for (guint i = 0; rc < 0 && i < v->len; i++)
    g_free(g_array_index(v, dadm_mark_t, i).topic);
  *n = rc == 0 ? v->len : 0;
  *out = *n ? g_malloc(*n * sizeof(**out)) : NULL;
  if (*out)
    memcpy(*out, v->data, *n * sizeof(**out));
  g_array_free(v, TRUE);
  return rc;
}

void dadm_marks_free(dadm_mark_t *v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    g_free(v[i].topic);
  g_free(v);
}

/* --------------------------------------------------------------- deleting */

/* Delete the marks with these seqs in one short write transaction. */
static int delete_seqs(dadm_t *a, const GArray *seqs, int64_t *removed,
                       char *err, size_t errlen) {
  sqlite3_stmt *del = NULL;
  int rc = -1;
  if (prepare(a, "DELETE FROM marks WHERE seq = ?1", &del, err, errlen) < 0 ||
      exec(a, "BEGIN IMMEDIATE", err, errlen) < 0)
    goto out;
  for (guint i = 0; i < seqs->len; i++) {
    sqlite3_bind_int64(del, 1, g_array_index(seqs, int64_t, i));
    if (sqlite3_step(del) != SQLITE_DONE) {
      fail(a, err, errlen);
      goto out;
    }
    *removed += sqlite3_changes(a->db); /* 0 if the pruner was first */
    sqlite3_reset(del);
  }
  rc = exec(a, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(a->db))
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_finalize(del);
  return rc;
}

/* The newest mark's seq (0 when there is none). */
static int newest_seq(dadm_t *a, int64_t *seq, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc =
      prepare(a, "SELECT coalesce(max(seq), 0) FROM marks", &st, err, errlen);
  if (rc == 0 && sqlite3_step(st) != SQLITE_ROW)
    rc = fail(a, err, errlen);
  if (rc == 0)
    *seq = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc;
}

/* Find the rows of `find` (parameter 1: the last seq seen, :max: the
 * newest seq to consider; it returns up to SWEEP_BATCH seqs in order)
 * batch by batch, and delete each batch unless dry_run; *count gets the
 * rows found (dry run) or deleted. Marks written after the sweep starts
 * are left alone, so that a busy host cannot keep it going forever. */
static int sweep(dadm_t *a, sqlite3_stmt *find, int dry_run, int64_t *count,
                 char *err, size_t errlen) {
  GArray *seqs = g_array_new(FALSE, FALSE, sizeof(int64_t));
  int64_t last = 0, max = 0;
  int rc = newest_seq(a, &max, err, errlen), step;
  *count = 0;
  sqlite3_bind_int64(find, sqlite3_bind_parameter_index(find, ":max"), max);
  while (rc == 0) {
    g_array_set_size(seqs, 0);
    sqlite3_bind_int64(find, 1, last);
    while ((step = sqlite3_step(find)) == SQLITE_ROW) {
      last = sqlite3_column_int64(find, 0);
      g_array_append_val(seqs, last);
    }
    sqlite3_reset(find);
    if (step != SQLITE_DONE)
      rc = fail(a, err, errlen);
    else if (dry_run)
      *count += seqs->len;
    else if (seqs->len > 0)
      rc = delete_seqs(a, seqs, count, err, errlen);
    if (seqs->len < SWEEP_BATCH)
      break;
  }
  g_array_free(seqs, TRUE);
  return rc;
}

/* Run a one-statement write (replay ranges) with one int64 parameter. */
static int write_one(dadm_t *a, const char *sql, int64_t param, char *err,
                     size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = prepare(a, sql, &st, err, errlen);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, param);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = fail(a, err, errlen);
  }
  sqlite3_finalize(st);
  return rc;
}

/* Note a forget for the store's segments (dedup.c): segments whose marks
 * all came before upto_seq (the newest mark when the forget began) no
 * longer answer for the ID, or the whole scope when id is NULL. */
static int note_forgotten(dadm_t *a, uint32_t scope, const void *id, size_t len,
                          int64_t upto_seq, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = prepare(a,
                   "INSERT INTO forgotten(scope, event_id, upto_seq)"
                   " VALUES(?1, ?2, ?3)",
                   &st, err, errlen);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, scope);
    if (id)
      sqlite3_bind_blob64(st, 2, len ? id : "", len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, upto_seq);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = fail(a, err, errlen);
  }
  sqlite3_finalize(st);
  return rc;
}

/* Drop the segments whose newest mark was handled before cutoff_ms. */
static int prune_segments(dadm_t *a, int64_t cutoff_ms, char *err,
                          size_t errlen) {
  sqlite3_stmt *st = NULL;
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
  int rc = prepare(a, "SELECT id FROM segments WHERE newest_ms < ?1", &st, err,
                   errlen);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, cutoff_ms);
    while (sqlite3_step(st) == SQLITE_ROW) {
      int64_t id = sqlite3_column_int64(st, 0);
      g_array_append_val(ids, id);
    }
  }
  sqlite3_finalize(st);
  for (guint i = 0; rc == 0 && i < ids->len; i++) {
    rc = exec(a, "BEGIN IMMEDIATE", err, errlen);
    if (rc == 0)
      rc = dseg_delete(a->db, a->path, g_array_index(ids, int64_t, i), err,
                       errlen);
    rc = rc == 0 ? exec(a, "COMMIT", err, errlen) : rc;
    dadm_rollback(a);
  }
  g_array_free(ids, TRUE);
  return rc;
}

/* :max comes last: it takes the number after those of `where`. */
#define BATCH_SQL(where)                                                       \
  "SELECT seq FROM marks WHERE seq > ?1 AND " where " AND seq <= :max"         \
  " ORDER BY seq LIMIT " G_STRINGIFY(SWEEP_BATCH)

int dadm_forget_id(dadm_t *a, uint32_t scope, const void *id, size_t len,
                   int dry_run, int64_t *removed, char *err, size_t errlen) {
  sqlite3_stmt *find = NULL;
  int64_t upto = 0;
  int rc =
      prepare(a, BATCH_SQL("scope = ?2 AND event_id = ?3"), &find, err, errlen);
  *removed = 0;
  if (rc == 0)
    rc = newest_seq(a, &upto, err, errlen);
  if (rc == 0) {
    sqlite3_bind_int64(find, 2, scope);
    sqlite3_bind_blob64(find, 3, len ? id : "", len, SQLITE_STATIC);
    rc = sweep(a, find, dry_run, removed, err, errlen);
  }
  sqlite3_finalize(find);
  if (rc == 0 && !dry_run)
    rc = note_forgotten(a, scope, len ? id : "", len, upto, err, errlen);
  return rc;
}

int dadm_forget_scope(dadm_t *a, uint32_t scope, int dry_run, int64_t *removed,
                      char *err, size_t errlen) {
  sqlite3_stmt *find = NULL;
  int64_t upto = 0;
  int rc = prepare(a, BATCH_SQL("scope = ?2"), &find, err, errlen);
  *removed = 0;
  if (rc == 0)
    rc = newest_seq(a, &upto, err, errlen);
  if (rc == 0) {
    sqlite3_bind_int64(find, 2, scope);
    rc = sweep(a, find, dry_run, removed, err, errlen);
  }
  sqlite3_finalize(find);
  if (rc == 0 && !dry_run)
    rc = note_forgotten(a, scope, NULL, 0, upto, err, errlen);
  if (rc == 0 && !dry_run)
    rc = write_one(a, "DELETE FROM replays WHERE scope = ?1", scope, err,
                   errlen);
  return rc;
}

int dadm_prune(dadm_t *a, int64_t cutoff_ms, int64_t *removed, char *err,
               size_t errlen) {
  sqlite3_stmt *find = NULL;
  int rc = prepare(a, BATCH_SQL("handled_at < ?2"), &find, err, errlen);
  *removed = 0;
  if (rc == 0) {
    sqlite3_bind_int64(find, 2, cutoff_ms);
    rc = sweep(a, find, 0, removed, err, errlen);
  }
  sqlite3_finalize(find);
  if (rc == 0)
    rc = prune_segments(a, cutoff_ms, err, errlen);
  if (rc == 0)
    rc = write_one(a, "DELETE FROM replays WHERE created_at < ?1", cutoff_ms,
                   err, errlen);
  return rc;
}

/* ---------------------------------------------------------- replay ranges */

int dadm_begin(dadm_t *a, char *err, size_t errlen) {
  return exec(a, "BEGIN IMMEDIATE", err, errlen);
}

int dadm_commit(dadm_t *a, char *err, size_t errlen) {
  int rc = exec(a, "COMMIT", err, errlen);
  if (rc < 0)
    dadm_rollback(a);
  return rc;
}

void dadm_rollback(dadm_t *a) {
  if (!sqlite3_get_autocommit(a->db))
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
}

int dadm_replay_add(dadm_t *a, uint32_t scope, const char *topic,
                    int32_t partition, int64_t from, int64_t to, int mode,
                    char *err, size_t errlen) {
  return dedup_db_replay_add(a->db, a->path, scope, topic, partition, from, to,
                             mode, dedup_now_ms(), err, errlen);
}
