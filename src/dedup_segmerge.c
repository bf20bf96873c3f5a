/*
 * Dedup segments read in key order, entry by entry: merges and
 * dseg_each() (see dedup_segment.h).
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include <glib.h>
#include <sqlite3.h>
#include <string.h>

#include "dedup_log.h"
#include "dedup_pack.h"
#include "dedup_segment_int.h"
#include "id_hash.h"

/* ---------------------------------------------------------------- merge */

/* One segment read in key order, block by block, entry by entry. */
typedef struct cursor {
  sqlite3_stmt *st;
  dkey_reader_t r; /* the current entry, when has */
  int has, failed;
  uint8_t *blob; /* the sources' bytes */
  GArray *srcs;  /* dsrc_t, into blob */
  uint32_t *map; /* a merge: input source -> output source */
} cursor_t;

static void cursor_next(cursor_t *c) {
  int got;
  while ((got = dkey_reader_next(&c->r)) == 0) {
    int rc = sqlite3_step(c->st);
    if (rc != SQLITE_ROW) {
      c->failed = rc != SQLITE_DONE;
      c->has = 0;
      return;
    }
    const void *p = sqlite3_column_blob(c->st, 0); /* before _bytes() */
    dkey_reader_block(&c->r, p, (size_t)sqlite3_column_bytes(c->st, 0));
  }
  c->has = got == 1 && c->r.src < c->srcs->len;
  c->failed = !c->has;
}

static int cursor_sources(cursor_t *c, sqlite3 *db, int64_t seg_id) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (sqlite3_prepare_v2(db, "SELECT sources FROM segments WHERE id = ?1", -1,
                         &st, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(st, 1, seg_id);
  if (sqlite3_step(st) == SQLITE_ROW)
    rc = dseg_load_sources(st, 0, &c->blob, c->srcs) == 0 ? 0 : -3;
  sqlite3_finalize(st);
  return rc;
}

/* -3: the segment has no sources (schema version 5). */
static int cursor_open(cursor_t *c, sqlite3 *db, int64_t seg_id) {
  int rc;
  *c = (cursor_t){.srcs = g_array_new(FALSE, FALSE, sizeof(dsrc_t))};
  dkey_reader_init(&c->r);
  if ((rc = cursor_sources(c, db, seg_id)) < 0)
    return rc;
  if (sqlite3_prepare_v2(db,
                         "SELECT keys FROM segment_blocks"
                         " WHERE pos BETWEEN ?1 AND ?2 ORDER BY pos",
                         -1, &c->st, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(c->st, 1, seg_id << BLOCK_SHIFT);
  sqlite3_bind_int64(c->st, 2,
                     (seg_id << BLOCK_SHIFT) | ((1 << BLOCK_SHIFT) - 1));
  cursor_next(c);
  return c->failed ? -1 : 0;
}

static void cursor_close(cursor_t *c) {
  sqlite3_finalize(c->st);
  dkey_reader_done(&c->r);
  if (c->srcs)
    g_array_free(c->srcs, TRUE);
  g_free(c->blob);
  g_free(c->map);
}

/* The current entry's mark, its source as the cursor's own (map NULL) or
 * mapped to the merge's output. */
static dsegb_meta_t cursor_meta(const cursor_t *c) {
  const dsrc_t *s = &g_array_index(c->srcs, dsrc_t, c->r.src);
  return (dsegb_meta_t){
      .src = c->map ? c->map[c->r.src] : c->r.src,
      .outcome = c->r.outcome,
      .offset = (int64_t)((uint64_t)s->base_offset + c->r.offset_delta),
      .ms = (int64_t)((uint64_t)s->newest_ms - c->r.ms_delta)};
}

/* The ID's hash again from its packed key, as the flow core has it:
 * id_hash() of the scope and the ID (a UUID as its text). */
static uint64_t key_hash(const uint8_t *k, size_t len) {
  char text[36];
  uint32_t scope =
      (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 | (uint32_t)k[2] << 8 | k[3];
  if (k[4] != FORM_UUID)
    return id_hash(scope, k + KEY_MAX_HEAD, len - KEY_MAX_HEAD);
  dpack_uuid_text(k + KEY_MAX_HEAD, text);
  return id_hash(scope, text, sizeof text);
}

/* The cursor with the smallest key (NULL when all are done). */
static cursor_t *cursor_min(cursor_t *c, size_t n) {
  cursor_t *min = NULL;
  for (size_t i = 0; i < n; i++)
    if (c[i].has && (!min || dseg_key_cmp(c[i].r.key, c[i].r.len, min->r.key,
                                          min->r.len) < 0))
      min = &c[i];
  return min;
}

/* Merge the cursors' keys into w: one copy of each key, with the newest
 * mark any input has for it. The key is copied before its cursor moves
 * (the cursor's buffer goes with the step). */
static int merge_into(dsegb_t *w, cursor_t *c, size_t n) {
  GByteArray *k = g_byte_array_new();
  cursor_t *min;
  while ((min = cursor_min(c, n))) {
    dsegb_meta_t best = {.ms = INT64_MIN};
    g_byte_array_set_size(k, 0);
    g_byte_array_append(k, min->r.key, (guint)min->r.len);
    for (size_t i = 0; i < n; i++)
      while (c[i].has &&
             dseg_key_cmp(c[i].r.key, c[i].r.len, k->data, k->len) == 0) {
        dsegb_meta_t m = cursor_meta(&c[i]);
        if (m.ms > best.ms)
          best = m;
        cursor_next(&c[i]);
      }
    dsegb_add(w, k->data, k->len, &best, key_hash(k->data, k->len));
  }
  g_byte_array_free(k, TRUE);
  for (size_t i = 0; i < n; i++)
    if (c[i].failed)
      return -1;
  return 0;
}

/* The output's sources: every input's, each input's mapped to them. */
static void merge_sources(cursor_t *c, size_t n, dsrc_table_t *out) {
  for (size_t i = 0; i < n; i++) {
    c[i].map = g_new0(uint32_t, c[i].srcs->len ? c[i].srcs->len : 1);
    for (guint j = 0; j < c[i].srcs->len; j++) {
      const dsrc_t *s = &g_array_index(c[i].srcs, dsrc_t, j);
      c[i].map[j] =
          dsrc_find(out, s->scope, s->topic, s->topic_len, s->partition);
      if (s->count)
        dsrc_widen(out, c[i].map[j], s->base_offset, s->newest_ms);
    }
  }
}

int dseg_merge_chunked(sqlite3 *read_db, sqlite3 *write_db, const char *path,
                       const int64_t *ids, size_t n, uint64_t total_ids,
                       int64_t seg_id, int64_t tag, const dseg_chunks_t *ch,
                       char *err, size_t errlen) {
  cursor_t *c = g_new0(cursor_t, n);
  dsegb_t w = {0};
  dsrc_table_t srcs;
  int rc = 0, opened = 0;
  dsrc_table_init(&srcs);
  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = cursor_open(&c[i], read_db, ids[i]);
  if (rc == 0) {
    merge_sources(c, n, &srcs);
    rc = dsegb_open(&w, write_db, seg_id, total_ids, 0, &srcs, ch);
    opened = 1;
  }
  if (rc == 0)
    rc = merge_into(&w, c, n);
  /* An input that failed: the segment's row must not be written. */
  if (rc != 0 && opened && !w.failed)
    w.failed = 1;
  if (opened && dsegb_close(&w, tag) < 0)
    rc = -1;
  for (size_t i = 0; i < n; i++)
    cursor_close(&c[i]);
  g_free(c);
  dsrc_table_free(&srcs);
  if (rc < 0)
    dseg_fail(path, seg_id, opened ? write_db : read_db,
              w.why[0]   ? w.why
              : rc == -3 ? "an input has no table of sources"
                         : NULL,
              err, errlen);
  return rc < 0 ? -1 : 0;
}

int dseg_merge(sqlite3 *db, const char *path, const int64_t *ids, size_t n,
               uint64_t total_ids, int64_t seg_id, int64_t tag, char *err,
               size_t errlen) {
  return dseg_merge_chunked(db, db, path, ids, n, total_ids, seg_id, tag, NULL,
                            err, errlen);
}

/* ----------------------------------------------------------------- each */

/* The current entry of c as a mark; text holds a UUID's. */
static void cursor_mark(const cursor_t *c, dlog_mark_t *m, uint32_t *scope,
                        char text[36]) {
  const uint8_t *k = c->r.key;
  const dsrc_t *s = &g_array_index(c->srcs, dsrc_t, c->r.src);
  dsegb_meta_t meta = cursor_meta(c);
  *scope =
      (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 | (uint32_t)k[2] << 8 | k[3];
  if (k[4] == FORM_UUID) {
    dpack_uuid_text(k + KEY_MAX_HEAD, text);
    m->id = text;
    m->id_len = 36;
  } else {
    m->id = c->r.len > KEY_MAX_HEAD ? (const void *)(k + KEY_MAX_HEAD) : "";
    m->id_len = c->r.len - KEY_MAX_HEAD;
  }
  m->topic = s->topic_len ? s->topic : "";
  m->topic_len = s->topic_len;
  m->partition = s->partition;
  m->offset = meta.offset;
  m->handled_at = meta.ms;
  m->outcome = meta.outcome;
}

int dseg_each(sqlite3 *db, const char *path, int64_t seg_id, dseg_mark_fn fn,
              void *arg, char *err, size_t errlen) {
  cursor_t c;
  char text[36];
  int rc = cursor_open(&c, db, seg_id);
  while (rc == 0 && c.has) {
    dlog_mark_t m;
    uint32_t scope;
    if (c.r.len < KEY_MAX_HEAD) {
      c.failed = 1;
      break;
    }
    cursor_mark(&c, &m, &scope, text);
    rc = fn(arg, scope, &m);
    if (rc == 0)
      cursor_next(&c);
  }
  if (rc == 0 && c.failed)
    rc = -1;
  if (rc < 0)
    dseg_fail(path, seg_id, db,
              rc == -3 ? "no table of sources (a segment of schema version 5)"
                       : NULL,
              err, errlen);
  cursor_close(&c);
  return rc < 0 ? -1 : 0;
}
