/*
 * Dedup segments: immutable, ID-sorted runs of remembered (scope, event
 * ID) keys in the dedup database, each with a filter (dedup_filter.h) in
 * front, so that the store can answer "seen?" for IDs that are no longer
 * in its bounded in-memory set without keeping them in memory.
 *
 * On disk (tables `segments` and `segment_blocks`): a segment row holds
 * its ID count, the oldest and newest handled_at of its keys, the filter
 * and its table of sources (dedup_segkey.h: scope, topic and partition
 * of its marks); its keys are packed, in key order, into blocks of about
 * DSEG_BLOCK_BYTES, one row each, keyed by (segment << 24 | block) so that
 * a segment is written as an append in rowid order. A block row keeps its
 * first key (for the in-memory index) and the newest handled_at of its
 * keys. Each key carries its mark (dedup_segkey.h): source, offset,
 * handled_at and outcome, so that a mark lives in its segment alone once
 * the segment is written (schema version 6) and `khost dedup lookup`
 * still finds it. A segment keeps one mark per key: the newest.
 *
 * Keys: the scope (4 bytes, big-endian) and the ID; an ID in the
 * canonical lower-case UUID text form (36 bytes) is kept as its 16 binary
 * bytes, any other ID as it is, so that the packed key is at most 22
 * bytes for UUIDs and decodes back to the exact bytes.
 *
 * In memory, per segment: the filter and the first key of each block. A
 * lookup that passes the filter reads the one block that could hold the
 * key: the answer is exact (a filter false positive costs one block read,
 * never a wrong "seen").
 *
 * Threads: a dseg_t may be shared (reference-counted); its filter and
 * index arrive once each (dseg_load_rest()) and are read-only after.
 * Each lookup uses the caller's connection. Statistics are atomic.
 */
#ifndef KHOST_DEDUP_SEGMENT_H
#define KHOST_DEDUP_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

struct sqlite3;

/* A block row (its keys, first key and time) stays below what one 4 KB
 * page holds, so that no block spills into an overflow page. */
#define DSEG_BLOCK_BYTES 3968
#define DSEG_BITS_PER_ID 12 /* filter size: about 0.3 % false positives */

extern const char *const dseg_schema_sql;
/* Add the column `sources` to a `segments` table of schema versions 3-5,
 * inside the caller's write transaction (nothing when it has it). Their
 * segments (sources NULL) hold keys without marks: dedup_convert.c
 * rewrites them. 0, or -1 with SQLite's error on db. */
int dseg_schema_upgrade(struct sqlite3 *db);

typedef struct dseg dseg_t;

/* One key to write, with its mark: id and topic are borrowed; hash is the
 * ID's hash as the flow core carries it (id_hash(scope, id, len)). */
typedef struct dseg_key {
  uint32_t scope;
  const void *id;
  size_t len;
  uint64_t hash;
  int64_t handled_ms;
  const char *topic; /* topic_len bytes (NULL when 0) */
  size_t topic_len;
  int32_t partition;
  int64_t offset;
  int outcome; /* 0-3 */
} dseg_key_t;

/* A segment written in several transactions (dseg_write_chunked(),
 * dseg_merge_chunked()), so that no single one holds the database's write
 * lock for long: begin() takes the write lock and opens a write
 * transaction, end(arg, 1) commits it (end(arg, 0) rolls it back) and
 * releases the lock; last() (may be NULL) runs inside the final
 * transaction, which also writes the segment's row. Until that row is
 * committed the segment does not exist for dseg_list() and dseg_load():
 * its blocks written so far are invisible, and a write that fails or
 * never ends (a crash) leaves blocks only at ids from seg_id on, which the
 * next write at that id deletes first. Each callback returns 0, or -1 with
 * the database's error on db. A transaction is committed once it has run
 * budget_ms (between two blocks). */
typedef struct dseg_chunks {
  int (*begin)(void *arg);
  int (*end)(void *arg, int commit);
  int (*last)(void *arg);
  void *arg;
  int64_t budget_ms;
} dseg_chunks_t;

/* Write keys[0..n) as segment seg_id, with the caller's tag (the store:
 * the newest mark's seq in it), inside the caller's open write
 * transaction (keys are only read; duplicates keep the newest
 * handled_ms). bits_per_id sizes the filter (0: DSEG_BITS_PER_ID).
 * Errors name path and SQLite's message. */
int dseg_write(struct sqlite3 *db, const char *path, int64_t seg_id,
               int64_t tag, dseg_key_t *keys, size_t n, unsigned bits_per_id,
               char *err, size_t errlen);

/* dseg_write() in transactions of ch's (none may be open on db): the keys
 * are encoded and sorted before the first one. */
int dseg_write_chunked(struct sqlite3 *db, const char *path, int64_t seg_id,
                       int64_t tag, dseg_key_t *keys, size_t n,
                       unsigned bits_per_id, const dseg_chunks_t *ch, char *err,
                       size_t errlen);

/* Merge segments ids[0..n) (total_ids IDs together, to size the filter)
 * into a new segment seg_id with the caller's tag, inside the caller's
 * open write transaction, reading them block by block: memory holds one
 * block per input and the new filter. An ID in several inputs is kept
 * once, with the newest block time. The inputs stay (dseg_delete()). */
int dseg_merge(struct sqlite3 *db, const char *path, const int64_t *ids,
               size_t n, uint64_t total_ids, int64_t seg_id, int64_t tag,
               char *err, size_t errlen);

/* dseg_merge() reading the inputs on read_db (one read transaction,
 * outside ch's) and writing on write_db in transactions of ch's. */
int dseg_merge_chunked(struct sqlite3 *read_db, struct sqlite3 *write_db,
                       const char *path, const int64_t *ids, size_t n,
                       uint64_t total_ids, int64_t seg_id, int64_t tag,
                       const dseg_chunks_t *ch, char *err, size_t errlen);

/* Load segment seg_id's metadata, filter and block index (never its
 * keys): dseg_load_meta(), then dseg_load_rest(). */
int dseg_load(struct sqlite3 *db, const char *path, int64_t seg_id,
              dseg_t **out, char *err, size_t errlen);
/* Segment seg_id's metadata and table of sources alone: a few rows read,
 * whatever its size. Until dseg_load_rest() is done, a lookup reads
 * blocks from disk (a binary search over their first keys, about
 * log2(blocks) rows, then the block): slower, as exact. */
int dseg_load_meta(struct sqlite3 *db, const char *path, int64_t seg_id,
                   dseg_t **out, char *err, size_t errlen);
/* The filter of a segment from dseg_load_meta() (nothing when it has
 * one), published to lookups running meanwhile: from then on most absent
 * IDs are answered without a disk read. One thread at a time per
 * segment. */
int dseg_load_filter(dseg_t *g, struct sqlite3 *db, const char *path, char *err,
                     size_t errlen);
/* dseg_load_filter(), then the block index (a read of every block's first
 * key), published the same way. */
int dseg_load_rest(dseg_t *g, struct sqlite3 *db, const char *path, char *err,
                   size_t errlen);
/* 1 when g's filter is loaded; dseg_loaded(): its filter and index. */
int dseg_has_filter(const dseg_t *g);
int dseg_loaded(const dseg_t *g);
/* The ids of every segment, oldest first; *ids is g_malloc'd (g_free()). */
int dseg_list(struct sqlite3 *db, const char *path, int64_t **ids, size_t *n,
              char *err, size_t errlen);
/* Another reference to g (dseg_free() drops one; the last frees it). */
dseg_t *dseg_ref(dseg_t *g);
void dseg_free(dseg_t *g);

/* 0 when the segment's filter rules hash out; no disk read (1 while the
 * filter is not loaded). */
int dseg_maybe(const dseg_t *g, uint64_t hash);
/* Start fetching what dseg_maybe() will read (nothing while the filter is
 * not loaded). */
void dseg_prefetch(const dseg_t *g, uint64_t hash);
/* Delete segment seg_id's rows inside the caller's open write
 * transaction. */
int dseg_delete(struct sqlite3 *db, const char *path, int64_t seg_id, char *err,
                size_t errlen);

/* 1 when the segment holds (scope, id), with its mark's handled_at in
 * *ms (may be NULL); 0 when it does not; -1 when SQLite fails (err names
 * path and message). hash: id_hash(scope, id, len). */
int dseg_lookup(const dseg_t *g, struct sqlite3 *db, const char *path,
                uint32_t scope, const void *id, size_t len, uint64_t hash,
                int64_t *ms, char *err, size_t errlen);

/* As dseg_lookup(), with the mark found in *m (its ID is the caller's;
 * its topic points into g). */
struct dlog_mark;
int dseg_lookup_mark(const dseg_t *g, struct sqlite3 *db, const char *path,
                     uint32_t scope, const void *id, size_t len, uint64_t hash,
                     struct dlog_mark *m, char *err, size_t errlen);

/* As dseg_lookup_mark(), reading a block on the statement *kept: NULL
 * at first, prepared on db by the first read and kept (reset) for the
 * next lookups on db; the caller finalizes it before closing db. */
struct sqlite3_stmt;
int dseg_lookup_mark_kept(const dseg_t *g, struct sqlite3 *db,
                          struct sqlite3_stmt **kept, const char *path,
                          uint32_t scope, const void *id, size_t len,
                          uint64_t hash, struct dlog_mark *m, char *err,
                          size_t errlen);

/* Every mark of segment seg_id, in key order, to fn (m and what it points
 * to valid only during the call; fn returns 0, or -1 to stop). Reads on
 * db in the caller's transaction, if any. -1 with err on failure. */
typedef int (*dseg_mark_fn)(void *arg, uint32_t scope,
                            const struct dlog_mark *m);
int dseg_each(struct sqlite3 *db, const char *path, int64_t seg_id,
              dseg_mark_fn fn, void *arg, char *err, size_t errlen);

typedef struct dseg_info {
  int64_t id, tag;
  uint64_t ids;
  int64_t oldest_ms, newest_ms;
  size_t blocks;
  int loaded;    /* dseg_loaded() */
  size_t memory; /* bytes the filter and index take */
} dseg_info_t;
void dseg_info(const dseg_t *g, dseg_info_t *out);

/* Process-wide counters (for tests and the benchmark). */
typedef struct dseg_counters {
  uint64_t filter_passes; /* lookups the filter let through */
  uint64_t blocks_read;   /* block rows read by lookups */
  uint64_t keys_decoded;  /* keys read back from blocks */
} dseg_counters_t;
void dseg_counters(dseg_counters_t *out);

#endif
