/*
 * What the parts of the dedup segments (dedup_segment.c: keys, writing,
 * loading, lookups; dedup_segmerge.c: reading in key order, merging)
 * share. Private to them.
 */
#ifndef KHOST_DEDUP_SEGMENT_INT_H
#define KHOST_DEDUP_SEGMENT_INT_H

#include <glib.h>
#include <sqlite3.h>
#include <stdint.h>

#include "dedup_filter.h"
#include "dedup_segkey.h"
#include "dedup_segment.h"

#define BLOCK_SHIFT 24
#define KEY_MAX_HEAD 5 /* scope and the form byte */
#define FORM_RAW 0
#define FORM_UUID 1

/* A key's bytes kept between two calls (a block's first key, the last
 * key written), reused without reallocating. */
typedef struct dseg_keybuf {
  uint8_t *p;
  size_t len, cap;
} dseg_keybuf_t;

/* A segment written key by key, in key order: blocks go out as they
 * fill, so memory stays at one block and the filter. */
typedef struct dsegb {
  sqlite3 *db;
  sqlite3_stmt *st;
  const dseg_chunks_t *ch; /* NULL: the caller's one transaction */
  int64_t txn_start_ms;    /* when ch's current transaction began */
  char why[256];           /* the first failure's message, kept before a
                              rollback replaces SQLite's */
  int64_t seg_id, pos;
  GByteArray *block;
  dseg_keybuf_t first, prev; /* prev: the block's last key */
  dsrc_table_t *srcs;        /* the segment's sources, bases and newest set */
  int64_t block_newest, oldest, newest;
  uint64_t ids;
  dfilter_t *filter;
  int failed;
} dsegb_t;

/* A key's mark: its source (an index into the builder's), outcome,
 * offset and time. */
typedef struct dsegb_meta {
  uint32_t src;
  int outcome;
  int64_t offset, ms;
} dsegb_meta_t;

int dseg_key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
/* The packed key of (scope, id) into out (room for KEY_MAX_HEAD + len
 * bytes); returns its length. */
size_t dseg_key_encode(uint32_t scope, const void *id, size_t len,
                       uint8_t *out);
/* err gets "path: segment id: what" (what NULL: SQLite's message on db);
 * returns -1. */
int dseg_fail(const char *path, int64_t id, sqlite3 *db, const char *what,
              char *err, size_t errlen);
/* The sources of a segment's row (column col of st) into srcs, their bytes
 * copied to *blob; -3 when the row has none or they are malformed. */
int dseg_load_sources(sqlite3_stmt *st, int col, uint8_t **blob, GArray *srcs);

/* A key of a segment being written: encoded, with its mark and hash. */
typedef struct dseg_ent {
  const uint8_t *k;
  size_t len;
  uint64_t hash;
  dsegb_meta_t m;
} dseg_ent_t;

/* What the sort moves: a key's first 16 bytes as two big-endian numbers
 * (zero-padded), which order most keys without reading them, and the
 * key's entry for the rest. */
typedef struct dseg_sref {
  uint64_t w0, w1;
  const dseg_ent_t *e;
} dseg_sref_t;

/* Keys in key order (dedup_segsort.c). Besides the keys themselves, 72
 * bytes an ID while a segment is written: the entries and what the sort
 * moves (qsort() of the entries alone took 64 with its buffer). */
typedef struct dseg_sorted {
  dseg_sref_t *refs; /* n entries, ascending, each key once (.e) */
  size_t n;
  dseg_ent_t *ents; /* what refs point to */
  uint8_t *arena;   /* the encoded keys */
} dseg_sorted_t;

/* Encode the n keys, sort them and keep each key's newest mark (of
 * marks equally new, the first given) into *out; their sources are found
 * or added in srcs, whose ranges grow to cover every mark. Free with
 * dseg_sorted_free(). */
void dseg_sort_keys(const dseg_key_t *keys, size_t n, dsrc_table_t *srcs,
                    dseg_sorted_t *out);
void dseg_sorted_free(dseg_sorted_t *s);

/* A builder for segment seg_id of about expected IDs, its sources in srcs
 * (bases and newest set); with ch, in ch's transactions. */
int dsegb_open(dsegb_t *w, sqlite3 *db, int64_t seg_id, size_t expected,
               unsigned bits_per_id, dsrc_table_t *srcs,
               const dseg_chunks_t *ch);
void dsegb_add(dsegb_t *w, const uint8_t *k, size_t len, const dsegb_meta_t *m,
               uint64_t hash);
/* The last block and the segment's row; frees the builder. */
int dsegb_close(dsegb_t *w, int64_t tag);

#endif
