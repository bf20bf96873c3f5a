/*
 * What `khost dedup` reads from the segments of schema version 6 (see
 * dedup_admin.h): their marks, and their counts per pipeline from their
 * tables of sources, both without the IDs `khost dedup forget` removed
 * (the table `forgotten`, as the store reads it in dedup.c).
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "dedup_admin_int.h"
#include "dedup_log.h"
#include "dedup_segkey.h"
#include "dedup_segment.h"
#include "id_hash.h"

static int fail(const dadm_t *a, char *err, size_t errlen) {
  snprintf(err, errlen, "%s: %s", a->path, sqlite3_errmsg(a->db));
  return -1;
}

static int prepare(const dadm_t *a, const char *sql, sqlite3_stmt **st,
                   char *err, size_t errlen) {
  if (sqlite3_prepare_v2(a->db, sql, -1, st, NULL) != SQLITE_OK)
    return fail(a, err, errlen);
  return 0;
}

static GHashTable *forgotten_new(void) {
  return g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                               (GDestroyNotify)g_bytes_unref, g_free);
}

/* The table `forgotten` (few rows) into h: key -> the newest upto_seq. */
static int forgotten_load(dadm_t *a, GHashTable *h, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int step;
  if (prepare(a, "SELECT scope, event_id, upto_seq FROM forgotten", &st, err,
              errlen) < 0)
    return -1;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    const void *id = sqlite3_column_blob(st, 1); /* before _bytes() */
    int whole = sqlite3_column_type(st, 1) == SQLITE_NULL;
    GBytes *k = dkey_forgotten((uint32_t)sqlite3_column_int64(st, 0),
                               whole ? NULL : (id ? id : ""),
                               (size_t)sqlite3_column_bytes(st, 1));
    int64_t *upto = g_hash_table_lookup(h, k);
    if (!upto) {
      upto = g_new0(int64_t, 1);
      g_hash_table_insert(h, g_bytes_ref(k), upto);
    }
    *upto = MAX(*upto, sqlite3_column_int64(st, 2));
    g_bytes_unref(k);
  }
  sqlite3_finalize(st);
  return step == SQLITE_DONE ? 0 : fail(a, err, errlen);
}

/* 1 when (scope, id) (or, id NULL, the whole scope) was forgotten after
 * every mark of the segment tagged tag was written. */
static int forgotten_since(GHashTable *h, uint32_t scope, const void *id,
                           size_t len, int64_t tag) {
  int hit = 0;
  for (int whole = id ? 0 : 1; !hit && whole < 2; whole++) {
    GBytes *k = dkey_forgotten(scope, whole ? NULL : id, len);
    const int64_t *upto = g_hash_table_lookup(h, k);
    hit = upto && *upto >= tag;
    g_bytes_unref(k);
  }
  return hit;
}

/* ------------------------------------------------------------------ marks */

typedef struct seg_each {
  dadm_mark_fn fn;
  void *arg;
  int64_t scope; /* < 0: every scope */
  int64_t tag;   /* the segment's */
  GHashTable *forgotten;
} seg_each_t;

static int seg_each_mark(void *arg, uint32_t scope, const dlog_mark_t *m) {
  seg_each_t *e = arg;
  if ((e->scope >= 0 && scope != (uint32_t)e->scope) ||
      forgotten_since(e->forgotten, scope, m->id, m->id_len, e->tag))
    return 0;
  return e->fn(e->arg, 0, scope, m);
}

typedef struct seg_ref {
  int64_t id, tag;
} seg_ref_t;

/* The segments of version 6, oldest first. */
static int list_segments(dadm_t *a, GArray *segs, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int step = SQLITE_DONE;
  int rc = prepare(a,
                   "SELECT id, tag FROM segments WHERE sources IS NOT NULL"
                   " ORDER BY id",
                   &st, err, errlen);
  while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
    seg_ref_t seg = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)};
    g_array_append_val(segs, seg);
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = fail(a, err, errlen);
  sqlite3_finalize(st);
  return rc;
}

/* The marks that live in segments, segment by segment. */
static int each_segment_mark(dadm_t *a, seg_each_t *e, char *err,
                             size_t errlen) {
  GArray *segs = g_array_new(FALSE, FALSE, sizeof(seg_ref_t));
  int rc = forgotten_load(a, e->forgotten, err, errlen);
  if (rc == 0)
    rc = list_segments(a, segs, err, errlen);
  for (guint i = 0; rc == 0 && i < segs->len; i++) {
    const seg_ref_t *seg = &g_array_index(segs, seg_ref_t, i);
    e->tag = seg->tag;
    rc = dseg_each(a->db, a->path, seg->id, seg_each_mark, e, err, errlen);
  }
  g_array_free(segs, TRUE);
  return rc;
}

int dadm_segs_each(dadm_t *a, int64_t scope, dadm_mark_fn fn, void *arg,
                   char *err, size_t errlen) {
  seg_each_t e = {
      .fn = fn, .arg = arg, .scope = scope, .forgotten = forgotten_new()};
  int rc = each_segment_mark(a, &e, err, errlen);
  g_hash_table_destroy(e.forgotten);
  return rc;
}

/* One ID: each segment's filter and block index, then the one block that
 * could hold it (never a scan). */
int dadm_segs_find(dadm_t *a, uint32_t scope, const void *id, size_t len,
                   dadm_mark_fn fn, void *arg, char *err, size_t errlen) {
  seg_each_t e = {.forgotten = forgotten_new()};
  GArray *segs = g_array_new(FALSE, FALSE, sizeof(seg_ref_t));
  uint64_t hash = id_hash(scope, id, len);
  int rc = forgotten_load(a, e.forgotten, err, errlen);
  if (rc == 0)
    rc = list_segments(a, segs, err, errlen);
  for (guint i = 0; rc == 0 && i < segs->len; i++) {
    const seg_ref_t *seg = &g_array_index(segs, seg_ref_t, i);
    dseg_t *g = NULL;
    dlog_mark_t m;
    int found = -1;
    if (dseg_load(a->db, a->path, seg->id, &g, err, errlen) == 0)
      found = dseg_lookup_mark(g, a->db, a->path, scope, id, len, hash, &m, err,
                               errlen);
    if (found == 1 && !forgotten_since(e.forgotten, scope, id, len, seg->tag))
      rc = fn(arg, 0, scope, &m);
    rc = found < 0 ? -1 : rc;
    dseg_free(g);
  }
  g_array_free(segs, TRUE);
  g_hash_table_destroy(e.forgotten);
  return rc;
}

/* ----------------------------------------------------------------- counts */

int dadm_segs_count(dadm_t *a, dadm_source_fn fn, void *arg, char *err,
                    size_t errlen) {
  sqlite3_stmt *st = NULL;
  GHashTable *forgotten = forgotten_new();
  GArray *srcs = g_array_new(FALSE, FALSE, sizeof(dsrc_t));
  int step = SQLITE_DONE, rc = forgotten_load(a, forgotten, err, errlen);
  if (rc == 0)
    rc = prepare(a,
                 "SELECT id, tag, sources FROM segments"
                 " WHERE sources IS NOT NULL",
                 &st, err, errlen);
  while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
    const void *blob = sqlite3_column_blob(st, 2); /* before _bytes() */
    g_array_set_size(srcs, 0);
    if (dsrc_decode(blob, (size_t)sqlite3_column_bytes(st, 2), srcs) < 0) {
      snprintf(err, errlen, "%s: segment %lld: malformed table of sources",
               a->path, (long long)sqlite3_column_int64(st, 0));
      rc = -1;
    }
    for (guint i = 0; rc == 0 && i < srcs->len; i++) {
      const dsrc_t *src = &g_array_index(srcs, dsrc_t, i);
      if (!forgotten_since(forgotten, src->scope, NULL, 0,
                           sqlite3_column_int64(st, 1)))
        fn(arg, src->scope, (int64_t)src->count, src->oldest_ms,
           src->newest_ms);
    }
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = fail(a, err, errlen);
  sqlite3_finalize(st);
  g_array_free(srcs, TRUE);
  g_hash_table_destroy(forgotten);
  return rc;
}
