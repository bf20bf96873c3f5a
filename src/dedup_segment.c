/*
 * Dedup segments: see dedup_segment.h for the layout.
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include "dedup_segment.h"

#include <glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dedup_filter.h"
#include "dedup_log.h"
#include "dedup_pack.h"
#include "dedup_segkey.h"
#include "dedup_segment_int.h"

const char *const dseg_schema_sql =
    "CREATE TABLE IF NOT EXISTS segments("
    " id INTEGER PRIMARY KEY, tag INTEGER NOT NULL, ids INTEGER NOT NULL,"
    " oldest_ms INTEGER NOT NULL, newest_ms INTEGER NOT NULL,"
    " filter BLOB NOT NULL, sources BLOB);"
    "CREATE TABLE IF NOT EXISTS segment_blocks("
    " pos INTEGER PRIMARY KEY, first_key BLOB NOT NULL,"
    " newest_ms INTEGER NOT NULL, keys BLOB NOT NULL);";

/* The first key of every block, in block order: what a lookup searches
 * to find the one block that could hold a key. */
typedef struct dseg_index {
  size_t *first_off; /* blocks + 1 offsets into first_keys */
  uint8_t *first_keys;
} dseg_index_t;

struct dseg {
  int refs; /* atomic */
  int64_t id, tag;
  uint64_t ids;
  int64_t oldest_ms, newest_ms;
  uint8_t *src_blob; /* the sources' row bytes, which srcs point into */
  GArray *srcs;      /* dsrc_t */
  size_t blocks;
  /* Set once each by dseg_load_filter() and dseg_load_rest() (NULL
   * until then), read with acquire loads. */
  dseg_index_t *index;
  dfilter_t *filter;
};

static dseg_counters_t counters;

void dseg_counters(dseg_counters_t *out) {
  out->filter_passes =
      __atomic_load_n(&counters.filter_passes, __ATOMIC_RELAXED);
  out->blocks_read = __atomic_load_n(&counters.blocks_read, __ATOMIC_RELAXED);
  out->keys_decoded = __atomic_load_n(&counters.keys_decoded, __ATOMIC_RELAXED);
}

/* ----------------------------------------------------------------- keys */

size_t dseg_key_encode(uint32_t scope, const void *id, size_t len,
                       uint8_t *out) {
  out[0] = (uint8_t)(scope >> 24);
  out[1] = (uint8_t)(scope >> 16);
  out[2] = (uint8_t)(scope >> 8);
  out[3] = (uint8_t)scope;
  if (dpack_uuid_bytes(id, len, out + 5)) {
    out[4] = FORM_UUID;
    return KEY_MAX_HEAD + 16;
  }
  out[4] = FORM_RAW;
  if (len)
    memcpy(out + 5, id, len);
  return KEY_MAX_HEAD + len;
}

int dseg_key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c)
    return c;
  return alen < blen ? -1 : alen > blen;
}

/* ---------------------------------------------------------------- write */

static int64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Delete the blocks at segment ids from seg_id on (with to_end) or of
 * seg_id alone. */
static int blocks_delete(sqlite3 *db, int64_t seg_id, int to_end) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (sqlite3_prepare_v2(db,
                         "DELETE FROM segment_blocks WHERE pos BETWEEN ?1 AND"
                         " ?2",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, seg_id << BLOCK_SHIFT);
    sqlite3_bind_int64(st, 2,
                       to_end ? INT64_MAX
                              : (seg_id << BLOCK_SHIFT) |
                                    ((1 << BLOCK_SHIFT) - 1));
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
  }
  sqlite3_finalize(st);
  return rc;
}

/* The first of ch's transactions; blocks a failed or interrupted write
 * left (at this id or later ones: ids only grow) go first. */
static int chunk_first(dsegb_t *w) {
  if (w->ch->begin(w->ch->arg) < 0)
    return -1;
  w->txn_start_ms = mono_ms();
  if (blocks_delete(w->db, w->seg_id, 1) == 0)
    return 0;
  w->ch->end(w->ch->arg, 0);
  return -1;
}

/* Between two blocks: commit and begin again once the budget is used. */
static void chunk_next(dsegb_t *w) {
  if (!w->ch || w->failed || mono_ms() - w->txn_start_ms < w->ch->budget_ms)
    return;
  if (w->ch->end(w->ch->arg, 1) < 0 || w->ch->begin(w->ch->arg) < 0) {
    w->failed = 2; /* no transaction open */
    return;
  }
  w->txn_start_ms = mono_ms();
}

int dsegb_open(dsegb_t *w, sqlite3 *db, int64_t seg_id, size_t expected,
               unsigned bits_per_id, dsrc_table_t *srcs,
               const dseg_chunks_t *ch) {
  *w = (dsegb_t){.db = db,
                 .ch = ch,
                 .seg_id = seg_id,
                 .pos = seg_id << BLOCK_SHIFT,
                 .block = g_byte_array_new(),
                 .srcs = srcs,
                 .block_newest = INT64_MIN,
                 .oldest = INT64_MAX,
                 .newest = INT64_MIN};
  w->filter =
      dfilter_new(expected, bits_per_id ? bits_per_id : DSEG_BITS_PER_ID);
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO segment_blocks(pos, first_key,"
                         " newest_ms, keys) VALUES(?1, ?2, ?3, ?4)",
                         -1, &w->st, NULL) != SQLITE_OK ||
      (ch && chunk_first(w) < 0)) {
    w->failed = 2;
    return -1;
  }
  return 0;
}

static void keybuf_set(dseg_keybuf_t *b, const uint8_t *k, size_t len) {
  if (len > b->cap) {
    b->cap = MAX(len, 2 * b->cap);
    b->p = g_realloc(b->p, b->cap);
  }
  if (len)
    memcpy(b->p, k, len);
  b->len = len;
}

static void builder_flush(dsegb_t *w) {
  if (w->block->len == 0 || w->failed)
    return;
  sqlite3_bind_int64(w->st, 1, w->pos++);
  sqlite3_bind_blob(w->st, 2, w->first.p, (int)w->first.len, SQLITE_STATIC);
  sqlite3_bind_int64(w->st, 3, w->block_newest);
  sqlite3_bind_blob(w->st, 4, w->block->data, (int)w->block->len,
                    SQLITE_STATIC);
  w->failed = sqlite3_step(w->st) != SQLITE_DONE;
  sqlite3_reset(w->st);
  g_byte_array_set_size(w->block, 0);
  w->block_newest = INT64_MIN;
  chunk_next(w);
}

/* Add the next key (greater than the last one) with its mark, which its
 * source's range covers. */
void dsegb_add(dsegb_t *w, const uint8_t *k, size_t len, const dsegb_meta_t *m,
               uint64_t hash) {
  dsrc_t *s = &g_array_index(w->srcs->v, dsrc_t, m->src);
  int64_t ms = m->ms;
  if (w->block->len > 0 &&
      w->block->len + DKEY_MAX_ENTRY(len) > DSEG_BLOCK_BYTES)
    builder_flush(w);
  if (w->block->len == 0)
    keybuf_set(&w->first, k, len);
  dkey_put(w->block, w->prev.p, w->block->len ? w->prev.len : 0, k, len, m->src,
           m->outcome, (uint64_t)m->offset - (uint64_t)s->base_offset,
           (uint64_t)s->newest_ms - (uint64_t)ms);
  keybuf_set(&w->prev, k, len);
  s->count++;
  s->oldest_ms = MIN(s->oldest_ms, ms);
  w->block_newest = ms > w->block_newest ? ms : w->block_newest;
  w->oldest = ms < w->oldest ? ms : w->oldest;
  w->newest = ms > w->newest ? ms : w->newest;
  w->ids++;
  dfilter_add(w->filter, hash);
}

/* With chunks: the final transaction ends (committed when all went
 * well); a failed write takes back the blocks it committed. */
static void chunk_close(dsegb_t *w) {
  if (!w->ch)
    return;
  if (!w->failed && w->ch->last && w->ch->last(w->ch->arg) < 0) {
    w->failed = 1;
    /* Before the rollback replaces SQLite's message. */
    snprintf(w->why, sizeof w->why, "%s", sqlite3_errmsg(w->db));
  }
  if (w->failed != 2 && w->ch->end(w->ch->arg, !w->failed) < 0)
    w->failed = 1;
  if (w->failed && !w->why[0])
    snprintf(w->why, sizeof w->why, "%s", sqlite3_errmsg(w->db));
  if (w->failed && w->ch->begin(w->ch->arg) == 0)
    w->ch->end(w->ch->arg, blocks_delete(w->db, w->seg_id, 0) == 0);
}

/* The last block and the segment's row; frees the builder. */
int dsegb_close(dsegb_t *w, int64_t tag) {
  sqlite3_stmt *st = NULL;
  size_t flen = 0;
  uint8_t *fbytes = NULL;
  GByteArray *srcs = g_byte_array_new();
  builder_flush(w);
  if (!w->failed && sqlite3_prepare_v2(w->db,
                                       "INSERT INTO segments(id, ids,"
                                       " oldest_ms, newest_ms, filter, tag,"
                                       " sources)"
                                       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                       -1, &st, NULL) == SQLITE_OK) {
    /* The filter's words as they are where that is its encoding: a
     * merged segment's filter is tens of MB, not copied for the write. */
    const void *fb = dfilter_bytes_le(w->filter, &flen);
    if (!fb)
      fb = fbytes = dfilter_encode(w->filter, &flen);
    dsrc_encode(w->srcs, srcs);
    sqlite3_bind_blob(st, 7, srcs->data, (int)srcs->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 1, w->seg_id);
    sqlite3_bind_int64(st, 2, (int64_t)w->ids);
    sqlite3_bind_int64(st, 3, w->ids ? w->oldest : 0);
    sqlite3_bind_int64(st, 4, w->ids ? w->newest : 0);
    sqlite3_bind_blob64(st, 5, fb, flen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, tag);
    w->failed = sqlite3_step(st) != SQLITE_DONE;
  } else if (!w->failed)
    w->failed = 1;
  if (w->failed && !w->why[0])
    snprintf(w->why, sizeof w->why, "%s", sqlite3_errmsg(w->db));
  sqlite3_finalize(st);
  sqlite3_finalize(w->st);
  chunk_close(w);
  g_free(fbytes);
  g_byte_array_free(srcs, TRUE);
  g_byte_array_free(w->block, TRUE);
  g_free(w->first.p);
  g_free(w->prev.p);
  dfilter_free(w->filter);
  return w->failed ? -1 : 0;
}

int dseg_write_chunked(sqlite3 *db, const char *path, int64_t seg_id,
                       int64_t tag, dseg_key_t *keys, size_t n,
                       unsigned bits_per_id, const dseg_chunks_t *ch, char *err,
                       size_t errlen) {
  dseg_sorted_t sorted;
  dsrc_table_t srcs;
  dsrc_table_init(&srcs);
  dseg_sort_keys(keys, n, &srcs, &sorted);
  dsegb_t w;
  int rc = dsegb_open(&w, db, seg_id, sorted.n, bits_per_id, &srcs, ch);
  for (size_t i = 0; i < sorted.n; i++) {
    const dseg_ent_t *e = sorted.refs[i].e;
    dsegb_add(&w, e->k, e->len, &e->m, e->hash);
  }
  if (dsegb_close(&w, tag) < 0)
    rc = -1;
  if (rc != 0)
    dseg_fail(path, seg_id, db, w.why[0] ? w.why : NULL, err, errlen);
  dsrc_table_free(&srcs);
  dseg_sorted_free(&sorted);
  return rc;
}

int dseg_write(sqlite3 *db, const char *path, int64_t seg_id, int64_t tag,
               dseg_key_t *keys, size_t n, unsigned bits_per_id, char *err,
               size_t errlen) {
  return dseg_write_chunked(db, path, seg_id, tag, keys, n, bits_per_id, NULL,
                            err, errlen);
}

/* ----------------------------------------------------------------- load */

int dseg_fail(const char *path, int64_t id, sqlite3 *db, const char *what,
              char *err, size_t errlen) {
  snprintf(err, errlen, "%s: segment %lld: %s", path, (long long)id,
           what ? what : sqlite3_errmsg(db));
  return -1;
}

/* The sources of a segment's row (column col) into srcs, their bytes
 * copied to *blob; -3 when the row has none (a segment of schema version
 * 5 or older) or they are malformed. */
int dseg_load_sources(sqlite3_stmt *st, int col, uint8_t **blob, GArray *srcs) {
  const void *p = sqlite3_column_blob(st, col); /* before _bytes() */
  size_t len = (size_t)sqlite3_column_bytes(st, col);
  if (!p)
    return -3;
  *blob = g_memdup2(p, len);
  return dsrc_decode(*blob, len, srcs) == 0 ? 0 : -3;
}

/* The row's numbers and sources (not the filter), and the count of
 * blocks (a search of the rowid B-tree, not a scan). */
static int load_meta(sqlite3 *db, dseg_t *g) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (sqlite3_prepare_v2(db,
                         "SELECT ids, oldest_ms, newest_ms, tag, sources,"
                         " (SELECT max(pos) FROM segment_blocks"
                         "  WHERE pos BETWEEN ?2 AND ?3)"
                         " FROM segments WHERE id = ?1",
                         -1, &st, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(st, 1, g->id);
  sqlite3_bind_int64(st, 2, g->id << BLOCK_SHIFT);
  sqlite3_bind_int64(st, 3, (g->id << BLOCK_SHIFT) | ((1 << BLOCK_SHIFT) - 1));
  if (sqlite3_step(st) == SQLITE_ROW) {
    g->ids = (uint64_t)sqlite3_column_int64(st, 0);
    g->oldest_ms = sqlite3_column_int64(st, 1);
    g->newest_ms = sqlite3_column_int64(st, 2);
    g->tag = sqlite3_column_int64(st, 3);
    g->blocks = sqlite3_column_type(st, 5) == SQLITE_NULL
                    ? 0
                    : (size_t)(sqlite3_column_int64(st, 5) -
                               (g->id << BLOCK_SHIFT) + 1);
    rc = dseg_load_sources(st, 4, &g->src_blob, g->srcs);
  }
  sqlite3_finalize(st);
  return rc;
}

/* The filter, read into its words in place (no copy of the blob). */
static int load_filter(sqlite3 *db, dseg_t *g, dfilter_t **out) {
  sqlite3_blob *b = NULL;
  dfilter_t *f = NULL;
  int rc = -1;
  if (sqlite3_blob_open(db, "main", "segments", "filter", g->id, 0, &b) !=
      SQLITE_OK)
    goto out;
  f = dfilter_alloc_bytes((size_t)sqlite3_blob_bytes(b));
  if (!f) {
    rc = -2;
    goto out;
  }
  if (sqlite3_blob_read(b, dfilter_words(f), sqlite3_blob_bytes(b), 0) !=
      SQLITE_OK)
    goto out;
  dfilter_from_le(f);
  rc = 0;
out:
  sqlite3_blob_close(b);
  if (rc < 0)
    dfilter_free(f);
  else
    *out = f;
  return rc;
}

static void index_free(dseg_index_t *x) {
  if (!x)
    return;
  g_free(x->first_off);
  g_free(x->first_keys);
  g_free(x);
}

/* The first key of every block, in block order: the index a lookup
 * searches. -4 when the blocks are not as many as load_meta() counted. */
static int load_index(sqlite3 *db, dseg_t *g, dseg_index_t **out) {
  sqlite3_stmt *st = NULL;
  GByteArray *keys = g_byte_array_new();
  GArray *off = g_array_new(FALSE, FALSE, sizeof(size_t));
  dseg_index_t *x = g_new0(dseg_index_t, 1);
  size_t blocks;
  int rc;
  if (sqlite3_prepare_v2(db,
                         "SELECT first_key FROM segment_blocks"
                         " WHERE pos BETWEEN ?1 AND ?2 ORDER BY pos",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, g->id << BLOCK_SHIFT);
    sqlite3_bind_int64(st, 2,
                       (g->id << BLOCK_SHIFT) | ((1 << BLOCK_SHIFT) - 1));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      size_t at = keys->len;
      g_array_append_val(off, at);
      g_byte_array_append(keys, sqlite3_column_blob(st, 0),
                          (guint)sqlite3_column_bytes(st, 0));
    }
  } else
    rc = SQLITE_ERROR;
  sqlite3_finalize(st);
  blocks = off->len;
  size_t end = keys->len;
  g_array_append_val(off, end);
  x->first_off = (size_t *)g_array_free(off, FALSE);
  x->first_keys = g_byte_array_free(keys, FALSE);
  if (rc == SQLITE_DONE && blocks == g->blocks) {
    *out = x;
    return 0;
  }
  index_free(x);
  return rc == SQLITE_DONE ? -4 : -1;
}

/* err for what load_meta(), load_index() or load_filter() returned. */
static int load_fail(const char *path, const dseg_t *g, sqlite3 *db, int rc,
                     char *err, size_t errlen) {
  return dseg_fail(path, g->id, db,
                   rc == -2   ? "filter of a wrong size"
                   : rc == -3 ? "no table of sources (a segment of schema "
                                "version 5)"
                   : rc == -4 ? "blocks missing"
                              : NULL,
                   err, errlen);
}

int dseg_load_meta(sqlite3 *db, const char *path, int64_t seg_id, dseg_t **out,
                   char *err, size_t errlen) {
  dseg_t *g = g_new0(dseg_t, 1);
  int rc;
  g->refs = 1;
  g->id = seg_id;
  g->srcs = g_array_new(FALSE, FALSE, sizeof(dsrc_t));
  rc = load_meta(db, g);
  if (rc != 0) {
    load_fail(path, g, db, rc, err, errlen);
    dseg_free(g);
    return -1;
  }
  *out = g;
  return 0;
}

int dseg_load_filter(dseg_t *g, sqlite3 *db, const char *path, char *err,
                     size_t errlen) {
  dfilter_t *f = NULL;
  int rc = 0;
  if (!__atomic_load_n(&g->filter, __ATOMIC_ACQUIRE)) {
    rc = load_filter(db, g, &f);
    if (rc == 0)
      __atomic_store_n(&g->filter, f, __ATOMIC_RELEASE);
  }
  return rc == 0 ? 0 : load_fail(path, g, db, rc, err, errlen);
}

int dseg_load_rest(dseg_t *g, sqlite3 *db, const char *path, char *err,
                   size_t errlen) {
  dseg_index_t *x = NULL;
  int rc = 0;
  if (dseg_load_filter(g, db, path, err, errlen) < 0)
    return -1;
  if (!__atomic_load_n(&g->index, __ATOMIC_ACQUIRE)) {
    rc = load_index(db, g, &x);
    if (rc == 0)
      __atomic_store_n(&g->index, x, __ATOMIC_RELEASE);
  }
  return rc == 0 ? 0 : load_fail(path, g, db, rc, err, errlen);
}

int dseg_has_filter(const dseg_t *g) {
  return __atomic_load_n(&g->filter, __ATOMIC_ACQUIRE) != NULL;
}

int dseg_loaded(const dseg_t *g) {
  return __atomic_load_n(&g->filter, __ATOMIC_ACQUIRE) != NULL &&
         __atomic_load_n(&g->index, __ATOMIC_ACQUIRE) != NULL;
}

int dseg_load(sqlite3 *db, const char *path, int64_t seg_id, dseg_t **out,
              char *err, size_t errlen) {
  dseg_t *g = NULL;
  if (dseg_load_meta(db, path, seg_id, &g, err, errlen) < 0)
    return -1;
  if (dseg_load_rest(g, db, path, err, errlen) < 0) {
    dseg_free(g);
    return -1;
  }
  *out = g;
  return 0;
}

int dseg_list(sqlite3 *db, const char *path, int64_t **ids, size_t *n,
              char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  GArray *a = g_array_new(FALSE, FALSE, sizeof(int64_t));
  int rc = SQLITE_ERROR;
  if (sqlite3_prepare_v2(db, "SELECT id FROM segments ORDER BY id", -1, &st,
                         NULL) == SQLITE_OK)
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      int64_t id = sqlite3_column_int64(st, 0);
      g_array_append_val(a, id);
    }
  sqlite3_finalize(st);
  *n = a->len;
  *ids = (int64_t *)g_array_free(a, FALSE);
  if (rc != SQLITE_DONE) {
    g_free(*ids);
    *ids = NULL;
    *n = 0;
    snprintf(err, errlen, "%s: segments: %s", path, sqlite3_errmsg(db));
    return -1;
  }
  return 0;
}

dseg_t *dseg_ref(dseg_t *g) {
  __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
  return g;
}

void dseg_free(dseg_t *g) {
  if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  dfilter_free(g->filter);
  if (g->srcs)
    g_array_free(g->srcs, TRUE);
  g_free(g->src_blob);
  index_free(g->index);
  g_free(g);
}

void dseg_info(const dseg_t *g, dseg_info_t *out) {
  const dseg_index_t *x = __atomic_load_n(&g->index, __ATOMIC_ACQUIRE);
  const dfilter_t *f = __atomic_load_n(&g->filter, __ATOMIC_ACQUIRE);
  *out = (dseg_info_t){
      .id = g->id,
      .tag = g->tag,
      .ids = g->ids,
      .oldest_ms = g->oldest_ms,
      .newest_ms = g->newest_ms,
      .blocks = g->blocks,
      .loaded = x && f,
      .memory =
          (f ? dfilter_size(f) : 0) +
          (x ? x->first_off[g->blocks] + (g->blocks + 1) * sizeof(size_t) : 0) +
          g->srcs->len * sizeof(dsrc_t),
  };
}

/* ---------------------------------------------------------------- lookup */

/* The last block whose first key is at or before key; -1 when key sorts
 * before every block. */
static ssize_t block_for(const dseg_t *g, const dseg_index_t *x,
                         const uint8_t *key, size_t len) {
  size_t lo = 0, hi = g->blocks;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const uint8_t *k = x->first_keys + x->first_off[mid];
    size_t klen = x->first_off[mid + 1] - x->first_off[mid];
    if (dseg_key_cmp(k, klen, key, len) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (ssize_t)lo - 1;
}

/* The mark of the entry r is at (its source in range). */
static void entry_mark(const dseg_t *g, const dkey_reader_t *r,
                       dlog_mark_t *m) {
  const dsrc_t *s = &g_array_index(g->srcs, dsrc_t, r->src);
  m->topic = s->topic_len ? s->topic : "";
  m->topic_len = s->topic_len;
  m->partition = s->partition;
  m->offset = (int64_t)((uint64_t)s->base_offset + r->offset_delta);
  m->handled_at = (int64_t)((uint64_t)s->newest_ms - r->ms_delta);
  m->outcome = r->outcome;
}

/* 1 when the entries of a block hold key (sorted: stop past it), with
 * its mark in *m (but its ID); -3 when the block is malformed. */
static int block_holds(const dseg_t *g, const uint8_t *p, size_t n,
                       const uint8_t *key, size_t len, dlog_mark_t *m) {
  dkey_reader_t r;
  int c = 1, got = 0;
  dkey_reader_init(&r);
  dkey_reader_block(&r, p, n);
  while (c > 0 && (got = dkey_reader_next(&r)) == 1) {
    __atomic_add_fetch(&counters.keys_decoded, 1, __ATOMIC_RELAXED);
    c = dseg_key_cmp(key, len, r.key, r.len);
  }
  if (c == 0 && r.src < g->srcs->len)
    entry_mark(g, &r, m);
  dkey_reader_done(&r);
  if (got < 0 || (c == 0 && r.src >= g->srcs->len))
    return -3;
  return c == 0;
}

#define BLOCK_SQL                                                              \
  "SELECT newest_ms, keys, first_key FROM segment_blocks WHERE pos = ?1"

/* Block pos holds key? With kept, on the statement *kept (prepared on
 * first use, left reset for the next read), else on one of its own: a
 * prepare costs several times the block's decoding. */
static int read_block(const dseg_t *g, sqlite3 *db, sqlite3_stmt **kept,
                      int64_t pos, const uint8_t *key, size_t len,
                      dlog_mark_t *m) {
  sqlite3_stmt *st = kept ? *kept : NULL;
  int rc = -1;
  if (!st && sqlite3_prepare_v3(db, BLOCK_SQL, -1,
                                kept ? SQLITE_PREPARE_PERSISTENT : 0, &st,
                                NULL) != SQLITE_OK)
    return -1;
  if (kept)
    *kept = st;
  sqlite3_bind_int64(st, 1, pos);
  switch (sqlite3_step(st)) {
  case SQLITE_ROW: {
    const uint8_t *p = sqlite3_column_blob(st, 1);
    size_t n = (size_t)sqlite3_column_bytes(st, 1);
    __atomic_add_fetch(&counters.blocks_read, 1, __ATOMIC_RELAXED);
    rc = p ? block_holds(g, p, n, key, len, m) : -3;
    break;
  }
  case SQLITE_DONE:
    /* Never "absent": a segment loaded must not lose its blocks. */
    rc = -2;
    break;
  }
  if (kept)
    sqlite3_reset(st);
  else
    sqlite3_finalize(st);
  return rc;
}

/* block_for() without the index (not loaded yet) into *b: the same
 * binary search over the blocks' first keys, read from disk, about
 * log2(blocks) rows. -2 when a block is missing, -1 when SQLite fails. */
static int block_search(const dseg_t *g, sqlite3 *db, sqlite3_stmt **kept,
                        const uint8_t *key, size_t len, ssize_t *b) {
  sqlite3_stmt *st = kept ? *kept : NULL;
  size_t lo = 0, hi = g->blocks;
  int rc = 0;
  if (!st && sqlite3_prepare_v3(db, BLOCK_SQL, -1,
                                kept ? SQLITE_PREPARE_PERSISTENT : 0, &st,
                                NULL) != SQLITE_OK)
    return -1;
  if (kept)
    *kept = st;
  while (rc == 0 && lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    sqlite3_bind_int64(st, 1, (g->id << BLOCK_SHIFT) + (int64_t)mid);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
      const uint8_t *k = sqlite3_column_blob(st, 2); /* before _bytes() */
      size_t klen = (size_t)sqlite3_column_bytes(st, 2);
      if (dseg_key_cmp(k ? k : (const uint8_t *)"", klen, key, len) <= 0)
        lo = mid + 1;
      else
        hi = mid;
    } else
      rc = step == SQLITE_DONE ? -2 : -1;
    sqlite3_reset(st);
  }
  if (!kept)
    sqlite3_finalize(st);
  *b = (ssize_t)lo - 1;
  return rc;
}

int dseg_lookup_mark_kept(const dseg_t *g, sqlite3 *db,
                          struct sqlite3_stmt **kept, const char *path,
                          uint32_t scope, const void *id, size_t len,
                          uint64_t hash, dlog_mark_t *m, char *err,
                          size_t errlen) {
  uint8_t small[KEY_MAX_HEAD + 64], *key;
  const dfilter_t *f = __atomic_load_n(&g->filter, __ATOMIC_ACQUIRE);
  const dseg_index_t *x = __atomic_load_n(&g->index, __ATOMIC_ACQUIRE);
  size_t klen;
  ssize_t b = -1;
  int rc = 0;
  /* Not loaded yet (dseg_load_meta()): the blocks answer, exactly. */
  if (f && !dfilter_maybe(f, hash))
    return 0;
  if (f)
    __atomic_add_fetch(&counters.filter_passes, 1, __ATOMIC_RELAXED);
  key = len <= 64 ? small : g_malloc(KEY_MAX_HEAD + len);
  klen = dseg_key_encode(scope, id, len, key);
  if (x)
    b = block_for(g, x, key, klen);
  else
    rc = block_search(g, db, kept, key, klen, &b);
  if (rc == 0)
    rc = b < 0 ? 0
               : read_block(g, db, kept, (g->id << BLOCK_SHIFT) + b, key, klen,
                            m);
  if (rc == 1) {
    m->id = len ? id : "";
    m->id_len = len;
  }
  if (rc < 0)
    dseg_fail(path, g->id, db,
              rc == -2   ? "block missing"
              : rc == -3 ? "block malformed"
                         : NULL,
              err, errlen);
  rc = rc < 0 ? -1 : rc;
  if (key != small)
    g_free(key);
  return rc;
}

int dseg_lookup_mark(const dseg_t *g, sqlite3 *db, const char *path,
                     uint32_t scope, const void *id, size_t len, uint64_t hash,
                     dlog_mark_t *m, char *err, size_t errlen) {
  return dseg_lookup_mark_kept(g, db, NULL, path, scope, id, len, hash, m, err,
                               errlen);
}

int dseg_lookup(const dseg_t *g, sqlite3 *db, const char *path, uint32_t scope,
                const void *id, size_t len, uint64_t hash, int64_t *ms,
                char *err, size_t errlen) {
  dlog_mark_t m;
  int rc = dseg_lookup_mark(g, db, path, scope, id, len, hash, &m, err, errlen);
  if (rc == 1 && ms)
    *ms = m.handled_at;
  return rc;
}

void dseg_prefetch(const dseg_t *g, uint64_t hash) {
  const dfilter_t *f = __atomic_load_n(&g->filter, __ATOMIC_ACQUIRE);
  if (f)
    dfilter_prefetch(f, hash);
}

int dseg_maybe(const dseg_t *g, uint64_t hash) {
  const dfilter_t *f = __atomic_load_n(&g->filter, __ATOMIC_ACQUIRE);
  return !f || dfilter_maybe(f, hash);
}

int dseg_delete(sqlite3 *db, const char *path, int64_t seg_id, char *err,
                size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (sqlite3_prepare_v2(db,
                         "DELETE FROM segment_blocks WHERE pos BETWEEN ?1 AND"
                         " ?2; ",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, seg_id << BLOCK_SHIFT);
    sqlite3_bind_int64(st, 2,
                       (seg_id << BLOCK_SHIFT) | ((1 << BLOCK_SHIFT) - 1));
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    st = NULL;
  }
  if (rc == 0 && sqlite3_prepare_v2(db, "DELETE FROM segments WHERE id = ?1",
                                    -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, seg_id);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
  } else
    rc = -1;
  sqlite3_finalize(st);
  return rc < 0 ? dseg_fail(path, seg_id, db, NULL, err, errlen) : 0;
}

int dseg_schema_upgrade(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int has = 0, rc;
  if (sqlite3_prepare_v2(db,
                         "SELECT count(*) FROM pragma_table_info("
                         "'segments') WHERE name = 'sources'",
                         -1, &st, NULL) != SQLITE_OK)
    return -1;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    has = sqlite3_column_int(st, 0) > 0;
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW)
    return -1;
  if (has)
    return 0;
  return sqlite3_exec(db, "ALTER TABLE segments ADD COLUMN sources BLOB", NULL,
                      NULL, NULL) == SQLITE_OK
             ? 0
             : -1;
}
