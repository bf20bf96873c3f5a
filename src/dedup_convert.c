/*
 * The marks of dedup schema versions 3 and 4 (a row per mark) moved into the
 * log of version 5 (dedup_log.h): see dedup_convert_marks(); and the
 * segments of version 5 (keys only) rewritten as those of version 6, which
 * keep each ID's mark: see dedup_convert_segments().
 *
 * A converted row keeps the seq of its newest mark, so that the seqs the
 * segments and forgets of versions 3 and 4 recorded (dedup.c) still compare the
 * same; marks of one scope with consecutive seqs share a row, up to
 * CONVERT_ROW marks. Running out of memory aborts, as glib's allocators
 * do.
 */
#include <glib.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dedup.h"
#include "dedup_log.h"
#include "dedup_segment.h"
#include "id_hash.h"
#include "log.h"

#define CONVERT_CHUNK 20000 /* marks per transaction */
#define CONVERT_ROW 500     /* marks per row of the log */
#define LOG_VERSION 5       /* the log of marks, segments of keys only */
#define SEG_CHUNK (1 << 19) /* marks per converted segment (transaction) */

/* One row of the log being gathered: copies of its marks' bytes. */
typedef struct gather {
  uint32_t scope;
  int64_t seq;   /* the newest mark's */
  GArray *marks; /* dlog_mark_t, pointing into bytes by offset */
  GByteArray *bytes, *blob;
  sqlite3_stmt *ins;
} gather_t;

static int gather_flush(gather_t *g) {
  int64_t first, last;
  int rc;
  if (g->marks->len == 0)
    return SQLITE_OK;
  for (guint i = 0; i < g->marks->len; i++) {
    dlog_mark_t *m = &g_array_index(g->marks, dlog_mark_t, i);
    m->id = g->bytes->data + (size_t)m->id;
    m->topic = (const char *)g->bytes->data + (size_t)m->topic;
  }
  dlog_pack(g->blob, (dlog_mark_t *)g->marks->data, g->marks->len, &first,
            &last);
  sqlite3_bind_int64(g->ins, 1, g->seq);
  sqlite3_bind_int64(g->ins, 2, g->scope);
  sqlite3_bind_int64(g->ins, 3, first);
  sqlite3_bind_int64(g->ins, 4, last);
  sqlite3_bind_int64(g->ins, 5, g->marks->len);
  sqlite3_bind_blob(g->ins, 6, g->blob->data, (int)g->blob->len, SQLITE_STATIC);
  rc = sqlite3_step(g->ins);
  sqlite3_reset(g->ins);
  g_array_set_size(g->marks, 0);
  g_byte_array_set_size(g->bytes, 0);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Add the current row of sel to the gathered log row (a new one when the
 * scope changes or the row is full). */
static int gather_add(gather_t *g, sqlite3_stmt *sel) {
  uint32_t scope = (uint32_t)sqlite3_column_int64(sel, 1);
  int rc = SQLITE_OK;
  if (g->marks->len > 0 && (scope != g->scope || g->marks->len >= CONVERT_ROW))
    rc = gather_flush(g);
  const void *id = sqlite3_column_blob(sel, 2); /* before _bytes() */
  size_t id_len = (size_t)sqlite3_column_bytes(sel, 2);
  const unsigned char *topic = sqlite3_column_text(sel, 3);
  size_t topic_len = (size_t)sqlite3_column_bytes(sel, 3);
  dlog_mark_t m = {.id = (const void *)(uintptr_t)g->bytes->len,
                   .id_len = id_len,
                   .partition = sqlite3_column_int(sel, 4),
                   .offset = sqlite3_column_int64(sel, 5),
                   .handled_at = sqlite3_column_int64(sel, 6),
                   .outcome = sqlite3_column_int(sel, 7)};
  if (id_len)
    g_byte_array_append(g->bytes, id, (guint)id_len);
  m.topic = (const char *)(uintptr_t)g->bytes->len;
  m.topic_len = topic_len;
  if (topic_len)
    g_byte_array_append(g->bytes, topic, (guint)topic_len);
  g->scope = scope;
  g->seq = sqlite3_column_int64(sel, 0);
  g_array_append_val(g->marks, m);
  return rc;
}

/* One transaction: the oldest CONVERT_CHUNK marks into the log. *moved
 * gets their count (0: none left). */
static int convert_chunk(sqlite3 *db, gather_t *g, int64_t *moved) {
  sqlite3_stmt *sel = NULL, *del = NULL;
  int rc, step;
  *moved = 0;
  rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(
        db,
        "SELECT seq, scope, event_id, topic, partition, \"offset\","
        " handled_at, outcome FROM marks ORDER BY seq LIMIT " G_STRINGIFY(
            CONVERT_CHUNK),
        -1, &sel, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db, "DELETE FROM marks WHERE seq <= ?1", -1, &del,
                            NULL);
  while (rc == SQLITE_OK && (step = sqlite3_step(sel)) == SQLITE_ROW) {
    rc = gather_add(g, sel);
    (*moved)++;
  }
  if (rc == SQLITE_OK && step != SQLITE_DONE)
    rc = step;
  if (rc == SQLITE_OK)
    rc = gather_flush(g);
  if (rc == SQLITE_OK && *moved > 0) {
    sqlite3_bind_int64(del, 1, g->seq);
    rc = sqlite3_step(del) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  }
  sqlite3_finalize(sel);
  sqlite3_finalize(del);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  return rc;
}

/* Every mark converted: the old table goes, the version moves. */
static int convert_done(sqlite3 *db) {
  char sql[128];
  snprintf(sql, sizeof sql,
           "BEGIN IMMEDIATE; DROP TABLE IF EXISTS marks;"
           " PRAGMA user_version=%d; COMMIT",
           LOG_VERSION);
  return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

int dedup_convert_marks(sqlite3 *db, const char *path, char *err,
                        size_t errlen) {
  gather_t g = {.marks = g_array_new(FALSE, FALSE, sizeof(dlog_mark_t)),
                .bytes = g_byte_array_new(),
                .blob = g_byte_array_new()};
  int64_t moved = 1, total = 0;
  struct timespec t0, t1;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT INTO batches(seq, scope, first_at,"
                              " last_at, n, marks) VALUES(?1, ?2, ?3, ?4,"
                              " ?5, ?6)",
                              -1, &g.ins, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  log_msg(KHOST_LOG_INFO, "dedup",
          "%s: converting the marks (a row each) to the log of schema"
          " version %d",
          path, LOG_VERSION);
  while (rc == SQLITE_OK && moved > 0) {
    rc = convert_chunk(db, &g, &moved);
    total += moved;
  }
  if (rc == SQLITE_OK)
    rc = convert_done(db);
  if (rc != SQLITE_OK)
    snprintf(err, errlen, "%s: converting the marks to the log: %s", path,
             sqlite3_errmsg(db));
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc == SQLITE_OK)
    log_msg(KHOST_LOG_INFO, "dedup",
            "%s: %" PRId64 " marks converted in %.1f s", path, total,
            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  sqlite3_finalize(g.ins);
  g_array_free(g.marks, TRUE);
  g_byte_array_free(g.bytes, TRUE);
  g_byte_array_free(g.blob, TRUE);
  return rc == SQLITE_OK ? 0 : -1;
}

/* ------------------------------------------------------ segments, 5 -> 6 */

/* The marks of rows of the log being gathered for one segment: keys with
 * their IDs and topics as offsets into bytes (it may move). */
typedef struct seg_gather {
  GArray *keys; /* dseg_key_t */
  GByteArray *bytes;
} seg_gather_t;

/* Add the marks of the current row of sel (seq, scope, first_at, marks);
 * -1 when the row is malformed. */
static int seg_gather_row(seg_gather_t *g, sqlite3_stmt *sel) {
  dlog_reader_t r;
  dlog_mark_t m;
  uint32_t scope = (uint32_t)sqlite3_column_int64(sel, 1);
  const void *blob = sqlite3_column_blob(sel, 3); /* before _bytes() */
  int rc = dlog_read_start(&r, blob, (size_t)sqlite3_column_bytes(sel, 3),
                           sqlite3_column_int64(sel, 2));
  while (rc == 0 && (rc = dlog_read_next(&r, &m)) == 1) {
    dseg_key_t k = {.scope = scope,
                    .id = (const void *)(uintptr_t)g->bytes->len,
                    .len = m.id_len,
                    .handled_ms = m.handled_at,
                    .topic_len = m.topic_len,
                    .partition = m.partition,
                    .offset = m.offset,
                    .outcome = m.outcome};
    g_byte_array_append(g->bytes, m.id, (guint)m.id_len);
    k.topic = (const char *)(uintptr_t)g->bytes->len;
    g_byte_array_append(g->bytes, (const uint8_t *)m.topic, (guint)m.topic_len);
    g_array_append_val(g->keys, k);
    rc = 0;
  }
  dlog_read_done(&r);
  return rc < 0 ? -1 : 0;
}

/* Gather the oldest rows up to the segments' mark (at least one row, up
 * to SEG_CHUNK marks); *last gets the newest seq read (0: none left). */
static int seg_gather(sqlite3 *db, int64_t mark, seg_gather_t *g,
                      int64_t *last) {
  sqlite3_stmt *sel = NULL;
  int rc = SQLITE_OK, step;
  *last = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT seq, scope, first_at, marks FROM batches"
                         " WHERE seq <= ?1 ORDER BY seq",
                         -1, &sel, NULL) != SQLITE_OK)
    return sqlite3_errcode(db);
  sqlite3_bind_int64(sel, 1, mark);
  while (g->keys->len < SEG_CHUNK && (step = sqlite3_step(sel)) == SQLITE_ROW) {
    *last = sqlite3_column_int64(sel, 0);
    if (seg_gather_row(g, sel) < 0) {
      rc = SQLITE_CORRUPT;
      break;
    }
  }
  if (rc == SQLITE_OK && g->keys->len < SEG_CHUNK && step != SQLITE_DONE)
    rc = step;
  sqlite3_finalize(sel);
  for (guint i = 0; rc == SQLITE_OK && i < g->keys->len; i++) {
    dseg_key_t *k = &g_array_index(g->keys, dseg_key_t, i);
    k->id = g->bytes->data + (uintptr_t)k->id;
    k->topic = (const char *)g->bytes->data + (uintptr_t)k->topic;
    k->hash = id_hash(k->scope, k->id, k->len);
  }
  return rc;
}

static int64_t query_int(sqlite3 *db, const char *sql, int *rc) {
  sqlite3_stmt *st = NULL;
  int64_t v = 0;
  *rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (*rc == SQLITE_OK && (*rc = sqlite3_step(st)) == SQLITE_ROW) {
    v = sqlite3_column_int64(st, 0);
    *rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return v;
}

/* One transaction: the oldest rows the segments of version 5 hold into a
 * new segment, deleted from the log. *moved: their marks (0: none left). */
static int seg_convert_chunk(sqlite3 *db, const char *path, int64_t *moved,
                             char *err, size_t errlen) {
  seg_gather_t g = {g_array_new(FALSE, FALSE, sizeof(dseg_key_t)),
                    g_byte_array_new()};
  int64_t mark, id, last = 0;
  char sql[96];
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  *moved = 0;
  if (rc == SQLITE_OK)
    mark = query_int(db,
                     "SELECT coalesce((SELECT last_seq FROM segmented"
                     " WHERE id = 1), 0)",
                     &rc);
  if (rc == SQLITE_OK)
    id = query_int(db, "SELECT coalesce(max(id), 0) + 1 FROM segments", &rc);
  if (rc == SQLITE_OK)
    rc = seg_gather(db, mark, &g, &last);
  if (rc == SQLITE_OK && last > 0) {
    if (dseg_write(db, path, id, last, (dseg_key_t *)g.keys->data, g.keys->len,
                   0, err, errlen) < 0) {
      rc = -1; /* err says why */
    } else {
      snprintf(sql, sizeof sql, "DELETE FROM batches WHERE seq <= %" PRId64,
               last);
      rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    *moved = g.keys->len;
  g_array_free(g.keys, TRUE);
  g_byte_array_free(g.bytes, TRUE);
  return rc;
}

/* Every row converted: the segments of version 5 go, the version moves. */
static int seg_convert_done(sqlite3 *db, const char *path, char *err,
                            size_t errlen) {
  sqlite3_stmt *st = NULL;
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int64_t));
  char sql[64];
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db, "SELECT id FROM segments WHERE sources IS NULL",
                            -1, &st, NULL);
  while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0);
    g_array_append_val(ids, id);
  }
  sqlite3_finalize(st);
  for (guint i = 0; rc == SQLITE_OK && i < ids->len; i++)
    if (dseg_delete(db, path, g_array_index(ids, int64_t, i), err, errlen) < 0)
      rc = -1;
  snprintf(sql, sizeof sql, "PRAGMA user_version=%d", DEDUP_SCHEMA_VERSION);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  g_array_free(ids, TRUE);
  return rc;
}

int dedup_convert_segments(sqlite3 *db, const char *path, char *err,
                           size_t errlen) {
  int64_t moved = 1, total = 0;
  struct timespec t0, t1;
  int rc = SQLITE_OK;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  err[0] = '\0';
  while (rc == SQLITE_OK && moved > 0) {
    rc = seg_convert_chunk(db, path, &moved, err, errlen);
    total += moved;
  }
  if (rc == SQLITE_OK)
    rc = seg_convert_done(db, path, err, errlen);
  if (rc != SQLITE_OK && !err[0])
    snprintf(err, errlen, "%s: converting the segments: %s", path,
             sqlite3_errmsg(db));
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc == SQLITE_OK && total > 0)
    log_msg(KHOST_LOG_INFO, "dedup",
            "%s: %" PRId64 " marks moved into segments of schema version %d"
            " in %.1f s",
            path, total, DEDUP_SCHEMA_VERSION,
            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return rc == SQLITE_OK ? 0 : -1;
}
