/*
 * Dedup administration. See dedup_admin.h for the contract, dedup.c for
 * the tables.
 *
 * Deletions never scan under the write lock: a read finds the next batch
 * of rows of the log (by seq, after the last one seen), then a short write
 * transaction deletes exactly those rows (or rewrites one without an ID
 * forgotten). A running host's writers wait at most one such
 * transaction.
 *
 * Since schema version 6 a mark lives in the log until a segment holds
 * it, then in the segment alone: reads go through both (segments first,
 * in one read transaction, so that no mark is seen twice or missed while
 * the host moves rows into a segment). A mark in a segment is forgotten
 * through the table `forgotten` (dedup.c), which reads here honour too.
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
#include "dedup_admin_int.h"
#include "dedup_file.h"
#include "dedup_log.h"
#include "dedup_segkey.h"
#include "dedup_segment.h"

#define ADMIN_BUSY_MS 10000
#define SWEEP_BATCH 5000

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

static void stats_add(GArray *v, GHashTable *by_id, uint32_t scope, int64_t n,
                      int64_t first, int64_t last) {
  guint idx =
      GPOINTER_TO_UINT(g_hash_table_lookup(by_id, GINT_TO_POINTER(scope)));
  if (idx == 0 || n <= 0)
    return; /* a mark of no known scope: not reachable by name */
  dadm_stats_t *e = &g_array_index(v, dadm_stats_t, idx - 1);
  if (e->marks == 0 || first < e->oldest_ms)
    e->oldest_ms = first;
  if (e->marks == 0 || last > e->newest_ms)
    e->newest_ms = last;
  e->marks += n;
}

typedef struct stats_arg {
  GArray *v;
  GHashTable *by_id;
} stats_arg_t;

static void stats_source(void *arg, uint32_t scope, int64_t n, int64_t first,
                         int64_t last) {
  stats_arg_t *sa = arg;
  stats_add(sa->v, sa->by_id, scope, n, first, last);
}

/* The marks segments hold (dedup_admin_segs.c). */
static int stats_segments(dadm_t *a, GArray *v, GHashTable *by_id, char *err,
                          size_t errlen) {
  stats_arg_t sa = {v, by_id};
  return dadm_segs_count(a, stats_source, &sa, err, errlen);
}

/* One sequential pass over the log's rows, reading their counts and
 * times, never their marks (a GROUP BY on the unindexed scope would sort
 * the whole table). */
static int stats_marks(dadm_t *a, GArray *v, GHashTable *by_id, char *err,
                       size_t errlen) {
  sqlite3_stmt *st = NULL;
  int step;
  if (prepare(a, "SELECT scope, first_at, last_at, n FROM batches NOT INDEXED",
              &st, err, errlen) < 0)
    return -1;
  while ((step = sqlite3_step(st)) == SQLITE_ROW)
    stats_add(v, by_id, (uint32_t)sqlite3_column_int64(st, 0),
              sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 1),
              sqlite3_column_int64(st, 2));
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
      stats_segments(a, v, by_id, err, errlen) == 0 &&
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

/* The marks of the log's rows. */
static int each_log_mark(dadm_t *a, int64_t scope, dadm_mark_fn fn, void *arg,
                         char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = 0, step;
  if (prepare(a,
              "SELECT seq, scope, first_at, marks FROM batches"
              " WHERE ?1 < 0 OR scope = ?1 ORDER BY seq",
              &st, err, errlen) < 0)
    return -1;
  sqlite3_bind_int64(st, 1, scope);
  while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
    dlog_reader_t r;
    dlog_mark_t m;
    int64_t seq = sqlite3_column_int64(st, 0);
    uint32_t sc = (uint32_t)sqlite3_column_int64(st, 1);
    const void *blob = sqlite3_column_blob(st, 3); /* before _bytes() */
    rc = dlog_read_start(&r, blob, (size_t)sqlite3_column_bytes(st, 3),
                         sqlite3_column_int64(st, 2));
    while (rc == 0 && (rc = dlog_read_next(&r, &m)) == 1)
      rc = fn(arg, seq, sc, &m);
    dlog_read_done(&r);
    if (rc < 0)
      snprintf(err, errlen, "%s: batch %lld of the log is malformed", a->path,
               (long long)seq);
    rc = rc < 0 ? -1 : 0;
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = fail(a, err, errlen);
  sqlite3_finalize(st);
  return rc;
}

int dadm_each_mark(dadm_t *a, int64_t scope, dadm_mark_fn fn, void *arg,
                   char *err, size_t errlen) {
  int own = sqlite3_get_autocommit(a->db);
  int rc = own ? exec(a, "BEGIN", err, errlen) : 0;
  if (rc == 0)
    rc = dadm_segs_each(a, scope, fn, arg, err, errlen);
  if (rc == 0)
    rc = each_log_mark(a, scope, fn, arg, err, errlen);
  if (own)
    dadm_rollback(a); /* a read transaction: nothing to keep */
  return rc;
}

/* The marks of one ID: in segments (found, not scanned), then in the
 * log, in one read transaction. */
static int each_mark_of_id(dadm_t *a, uint32_t scope, const void *id,
                           size_t len, dadm_mark_fn fn, void *arg, char *err,
                           size_t errlen) {
  int own = sqlite3_get_autocommit(a->db);
  int rc = own ? exec(a, "BEGIN", err, errlen) : 0;
  if (rc == 0)
    rc = dadm_segs_find(a, scope, id, len, fn, arg, err, errlen);
  if (rc == 0)
    rc = each_log_mark(a, scope, fn, arg, err, errlen);
  if (own)
    dadm_rollback(a);
  return rc;
}

typedef struct find_id {
  const void *id;
  size_t len;
  GArray *marks;   /* dadm_mark_t */
  GArray *seqs;    /* int64_t: the rows that hold the ID (each once) */
  int64_t in_segs; /* marks found in segments */
} find_id_t;

static int find_id_mark(void *arg, int64_t seq, uint32_t scope,
                        const dlog_mark_t *m) {
  find_id_t *f = arg;
  (void)scope;
  if (m->id_len != f->len || (f->len && memcmp(m->id, f->id, f->len) != 0))
    return 0;
  if (f->marks) {
    dadm_mark_t d = {.topic = g_strndup(m->topic, m->topic_len),
                     .partition = m->partition,
                     .offset = m->offset,
                     .handled_at_ms = m->handled_at,
                     .outcome = m->outcome};
    g_array_append_val(f->marks, d);
  }
  if (seq == 0)
    f->in_segs++;
  else if (f->seqs &&
           (f->seqs->len == 0 ||
            g_array_index(f->seqs, int64_t, f->seqs->len - 1) != seq))
    g_array_append_val(f->seqs, seq);
  return 0;
}

static int mark_cmp(const void *x, const void *y) {
  const dadm_mark_t *a = x, *b = y;
  if (a->handled_at_ms != b->handled_at_ms)
    return a->handled_at_ms < b->handled_at_ms ? -1 : 1;
  if (a->offset != b->offset)
    return a->offset < b->offset ? -1 : 1;
  if (a->partition != b->partition)
    return a->partition < b->partition ? -1 : 1;
  if (a->outcome != b->outcome)
    return a->outcome < b->outcome ? -1 : 1;
  return strcmp(a->topic, b->topic);
}

/* Oldest first; a mark read twice (in a merged segment and, not yet
 * deleted, in one of its inputs) once. */
static void marks_sort_unique(GArray *marks) {
  guint n = 0;
  g_array_sort(marks, mark_cmp);
  for (guint i = 0; i < marks->len; i++) {
    dadm_mark_t *m = &g_array_index(marks, dadm_mark_t, i);
    if (n > 0 && mark_cmp(&g_array_index(marks, dadm_mark_t, n - 1), m) == 0) {
      g_free(m->topic);
      continue;
    }
    g_array_index(marks, dadm_mark_t, n++) = *m;
  }
  g_array_set_size(marks, n);
}

int dadm_lookup(dadm_t *a, uint32_t scope, const void *id, size_t len,
                dadm_mark_t **out, size_t *n, char *err, size_t errlen) {
  find_id_t f = {.id = id,
                 .len = len,
                 .marks = g_array_new(FALSE, TRUE, sizeof(dadm_mark_t))};
  int rc = each_mark_of_id(a, scope, id, len, find_id_mark, &f, err, errlen);
  for (guint i = 0; rc < 0 && i < f.marks->len; i++)
    g_free(g_array_index(f.marks, dadm_mark_t, i).topic);
  if (rc == 0)
    marks_sort_unique(f.marks);
  *n = rc == 0 ? f.marks->len : 0;
  *out = *n ? g_malloc(*n * sizeof(**out)) : NULL;
  if (*out)
    memcpy(*out, f.marks->data, *n * sizeof(**out));
  g_array_free(f.marks, TRUE);
  return rc;
}

void dadm_marks_free(dadm_mark_t *v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    g_free(v[i].topic);
  g_free(v);
}

/* --------------------------------------------------------------- deleting */

/* Delete the log's rows with these seqs in one short write transaction;
 * *removed counts their marks. */
static int delete_seqs(dadm_t *a, const GArray *seqs, int64_t *removed,
                       char *err, size_t errlen) {
  sqlite3_stmt *del = NULL;
  int rc = -1, step;
  if (prepare(a, "DELETE FROM batches WHERE seq = ?1 RETURNING n", &del, err,
              errlen) < 0 ||
      exec(a, "BEGIN IMMEDIATE", err, errlen) < 0)
    goto out;
  for (guint i = 0; i < seqs->len; i++) {
    sqlite3_bind_int64(del, 1, g_array_index(seqs, int64_t, i));
    /* No row if the pruner was first. */
    while ((step = sqlite3_step(del)) == SQLITE_ROW)
      *removed += sqlite3_column_int64(del, 0);
    if (step != SQLITE_DONE) {
      fail(a, err, errlen);
      goto out;
    }
    sqlite3_reset(del);
  }
  rc = exec(a, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(a->db))
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_finalize(del);
  return rc;
}

/* The newest seq the log ever gave a row (0 when none): the rows a
 * segment holds are gone from the log, but its tag is their newest. */
static int newest_seq(dadm_t *a, int64_t *seq, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = prepare(a,
                   "SELECT max(coalesce((SELECT max(seq) FROM batches), 0),"
                   " coalesce((SELECT seq FROM sqlite_sequence"
                   " WHERE name = 'batches'), 0))",
                   &st, err, errlen);
  if (rc == 0 && sqlite3_step(st) != SQLITE_ROW)
    rc = fail(a, err, errlen);
  if (rc == 0)
    *seq = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc;
}

/* Find the rows of `find` (parameter 1: the last seq seen, :max: the
 * newest seq to consider; it returns up to SWEEP_BATCH seqs and their
 * mark counts, in order) batch by batch, and delete each batch unless
 * dry_run; *count gets the marks found (dry run) or deleted. Rows written
 * after the sweep starts are left alone, so that a busy host cannot keep
 * it going forever. */
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
      if (dry_run)
        *count += sqlite3_column_int64(find, 1);
    }
    sqlite3_reset(find);
    if (step != SQLITE_DONE)
      rc = fail(a, err, errlen);
    else if (dry_run)
      ;
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

/* Drop the segments whose newest mark was handled before cutoff_ms;
 * *removed counts their IDs. */
static int prune_segments(dadm_t *a, int64_t cutoff_ms, int64_t *removed,
                          char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
  int rc = prepare(a, "SELECT id, ids FROM segments WHERE newest_ms < ?1", &st,
                   err, errlen);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, cutoff_ms);
    while (sqlite3_step(st) == SQLITE_ROW) {
      int64_t id = sqlite3_column_int64(st, 0);
      g_array_append_val(ids, id);
      *removed += sqlite3_column_int64(st, 1);
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
  "SELECT seq, n FROM batches WHERE seq > ?1 AND " where " AND seq <= :max"    \
  " ORDER BY seq LIMIT " G_STRINGIFY(SWEEP_BATCH)

typedef struct keep_others {
  const void *id;
  size_t len;
  GArray *kept; /* dlog_mark_t, pointing into bytes by offset */
  GByteArray *bytes;
  int64_t removed;
} keep_others_t;

static int keep_other(void *arg, int64_t seq, uint32_t scope,
                      const dlog_mark_t *m) {
  keep_others_t *k = arg;
  dlog_mark_t c = *m;
  (void)seq;
  (void)scope;
  if (m->id_len == k->len && (!k->len || memcmp(m->id, k->id, k->len) == 0)) {
    k->removed++;
    return 0;
  }
  c.id = (const void *)(uintptr_t)k->bytes->len;
  g_byte_array_append(k->bytes, m->id, (guint)m->id_len);
  c.topic = (const char *)(uintptr_t)k->bytes->len;
  g_byte_array_append(k->bytes, (const uint8_t *)m->topic, (guint)m->topic_len);
  g_array_append_val(k->kept, c);
  return 0;
}

/* Write row seq again with the marks other than the ID's (delete it when
 * none is left), inside the open transaction. */
static int rewrite_row(dadm_t *a, int64_t seq, keep_others_t *k) {
  sqlite3_stmt *st = NULL;
  GByteArray *blob = g_byte_array_new();
  int64_t first = 0, last = 0;
  int rc;
  for (guint i = 0; i < k->kept->len; i++) {
    dlog_mark_t *m = &g_array_index(k->kept, dlog_mark_t, i);
    m->id = k->bytes->data + (uintptr_t)m->id;
    m->topic = (const char *)k->bytes->data + (uintptr_t)m->topic;
  }
  if (k->kept->len)
    dlog_pack(blob, (dlog_mark_t *)k->kept->data, k->kept->len, &first, &last);
  rc = sqlite3_prepare_v2(
      a->db,
      k->kept->len ? "UPDATE batches SET first_at = ?2, last_at = ?3,"
                     " n = ?4, marks = ?5 WHERE seq = ?1"
                   : "DELETE FROM batches WHERE seq = ?1",
      -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, seq);
    if (k->kept->len) {
      sqlite3_bind_int64(st, 2, first);
      sqlite3_bind_int64(st, 3, last);
      sqlite3_bind_int64(st, 4, k->kept->len);
      sqlite3_bind_blob(st, 5, blob->data, (int)blob->len, SQLITE_STATIC);
    }
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(st);
  g_byte_array_free(blob, TRUE);
  return rc == SQLITE_OK ? 0 : -1;
}

/* Remove the ID's marks from row seq in one short write transaction (the
 * row is read again in it: the pruner may have deleted it). */
static int forget_in_row(dadm_t *a, int64_t seq, const void *id, size_t len,
                         int64_t *removed, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  keep_others_t k = {.id = id,
                     .len = len,
                     .kept = g_array_new(FALSE, FALSE, sizeof(dlog_mark_t)),
                     .bytes = g_byte_array_new()};
  int rc = exec(a, "BEGIN IMMEDIATE", err, errlen), step = SQLITE_DONE;
  if (rc == 0)
    rc = prepare(a, "SELECT first_at, marks FROM batches WHERE seq = ?1", &st,
                 err, errlen);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, seq);
    step = sqlite3_step(st);
  }
  if (rc == 0 && step == SQLITE_ROW) {
    dlog_reader_t r;
    dlog_mark_t m;
    const void *blob = sqlite3_column_blob(st, 1); /* before _bytes() */
    int got = dlog_read_start(&r, blob, (size_t)sqlite3_column_bytes(st, 1),
                              sqlite3_column_int64(st, 0));
    while (got == 0 && (got = dlog_read_next(&r, &m)) == 1)
      got = keep_other(&k, seq, 0, &m);
    dlog_read_done(&r);
    if (got < 0) {
      snprintf(err, errlen, "%s: batch %lld of the log is malformed", a->path,
               (long long)seq);
      rc = -1;
    } else if (k.removed > 0 && rewrite_row(a, seq, &k) < 0)
      rc = fail(a, err, errlen);
  } else if (rc == 0 && step != SQLITE_DONE)
    rc = fail(a, err, errlen);
  sqlite3_finalize(st);
  if (rc == 0)
    rc = exec(a, "COMMIT", err, errlen);
  if (rc == 0)
    *removed += k.removed;
  dadm_rollback(a);
  g_array_free(k.kept, TRUE);
  g_byte_array_free(k.bytes, TRUE);
  return rc;
}

int dadm_forget_id(dadm_t *a, uint32_t scope, const void *id, size_t len,
                   int dry_run, int64_t *removed, char *err, size_t errlen) {
  find_id_t f = {.id = len ? id : "",
                 .len = len,
                 .seqs = g_array_new(FALSE, FALSE, sizeof(int64_t))};
  GArray *marks = g_array_new(FALSE, TRUE, sizeof(dadm_mark_t));
  int64_t upto = 0;
  int rc = newest_seq(a, &upto, err, errlen);
  *removed = 0;
  f.marks = dry_run ? marks : NULL;
  /* Found by a read, removed row by row in short transactions. */
  if (rc == 0)
    rc = each_mark_of_id(a, scope, f.id, len, find_id_mark, &f, err, errlen);
  if (rc == 0 && dry_run)
    *removed = marks->len;
  if (rc == 0 && !dry_run)
    *removed += f.in_segs; /* gone with the note below */
  for (guint i = 0; rc == 0 && !dry_run && i < f.seqs->len; i++)
    if (g_array_index(f.seqs, int64_t, i) <= upto)
      rc = forget_in_row(a, g_array_index(f.seqs, int64_t, i), f.id, len,
                         removed, err, errlen);
  if (rc == 0 && !dry_run)
    rc = note_forgotten(a, scope, f.id, len, upto, err, errlen);
  for (guint i = 0; i < marks->len; i++)
    g_free(g_array_index(marks, dadm_mark_t, i).topic);
  g_array_free(marks, TRUE);
  g_array_free(f.seqs, TRUE);
  return rc;
}

/* Add the marks of scope that segments hold (their tables of sources) to
 * *n. */
static int scope_segment_marks(dadm_t *a, uint32_t scope, int64_t *n, char *err,
                               size_t errlen) {
  GArray *v = g_array_new(FALSE, TRUE, sizeof(dadm_stats_t));
  GHashTable *by_id = g_hash_table_new(NULL, NULL);
  dadm_stats_t e = {0};
  g_array_append_val(v, e);
  g_hash_table_insert(by_id, GINT_TO_POINTER(scope), GUINT_TO_POINTER(1));
  int rc = stats_segments(a, v, by_id, err, errlen);
  if (rc == 0)
    *n += g_array_index(v, dadm_stats_t, 0).marks;
  g_hash_table_destroy(by_id);
  g_array_free(v, TRUE);
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
  if (rc == 0)
    rc = scope_segment_marks(a, scope, removed, err, errlen);
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
  int rc = prepare(a, BATCH_SQL("last_at < ?2"), &find, err, errlen);
  *removed = 0;
  if (rc == 0) {
    sqlite3_bind_int64(find, 2, cutoff_ms);
    rc = sweep(a, find, 0, removed, err, errlen);
  }
  sqlite3_finalize(find);
  if (rc == 0)
    rc = prune_segments(a, cutoff_ms, removed, err, errlen);
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
