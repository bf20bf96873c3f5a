/*
 * The dedup store's log of marks: what dedup.c writes to the table
 * `batches`, one row per store batch and scope (a batch has one scope in
 * practice: a member's pipeline), its marks packed into one blob. A row
 * costs about 20 bytes per mark of a UUID-shaped ID, against 85-92 for a
 * row (and an index entry) per mark; one insert per batch is an append in
 * rowid order.
 *
 * Blob: varint format (1); varint topic count, each topic as varint length
 * and bytes; varint mark count; then per mark: a varint head (bit 0: the
 * ID is a canonical lower-case UUID, kept as its 16 bytes, else a varint
 * length and the bytes; the bits above: the outcome), the ID, varint topic
 * index, then zigzag varints of the partition, of the offset's difference
 * from the previous mark's (the first: from 0) and of handled_at's
 * difference from the previous mark's (the first: from the row's
 * first_at).
 *
 * Threads: pure functions; a reader belongs to one thread.
 */
#ifndef KHOST_DEDUP_LOG_H
#define KHOST_DEDUP_LOG_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dlog_mark {
  const void *id;
  size_t id_len;
  const char *topic;
  size_t topic_len;
  int32_t partition;
  int64_t offset;
  int64_t handled_at;
  int outcome;
} dlog_mark_t;

/* Pack marks[0..n) (n > 0) into out, which is emptied first; *first_at
 * and *last_at get the oldest and newest handled_at. */
void dlog_pack(GByteArray *out, const dlog_mark_t *marks, size_t n,
               int64_t *first_at, int64_t *last_at);

typedef struct dlog_reader {
  const uint8_t *p, *end;
  GArray *topics; /* dlog_topic_t: into the blob */
  uint64_t left;  /* marks not read yet */
  int64_t offset, at;
  char uuid[36]; /* the text of the last UUID read */
} dlog_reader_t;

/* Start reading a row's blob (borrowed until dlog_read_done()), with the
 * row's first_at. 0, or -1 when the blob is malformed. */
int dlog_read_start(dlog_reader_t *r, const void *blob, size_t len,
                    int64_t first_at);
/* The next mark into *m (its pointers valid until the next call): 1; 0
 * after the last; -1 when the blob is malformed. */
int dlog_read_next(dlog_reader_t *r, dlog_mark_t *m);
/* The count of marks the blob says it holds (after dlog_read_start()). */
uint64_t dlog_read_count(const dlog_reader_t *r);
void dlog_read_done(dlog_reader_t *r);

struct sqlite3;
/* Move the rows of the `marks` table of versions 1-4 into `batches` (the table
 * and its seq numbering must exist), in order, a chunk of rows per
 * transaction (each moves its rows: a crash leaves every mark in one of
 * the tables), then drop `marks` and set the schema version to 5
 * (dedup_convert.c). Errors name the path and SQLite's message. */
int dedup_convert_marks(struct sqlite3 *db, const char *path, char *err,
                        size_t errlen);

/* Schema version 5 to 6: the log's rows that segments of version 5 hold
 * (seq up to the segments' mark) become segments of version 6, which keep
 * each ID's mark, and leave the log, a chunk of rows per transaction (a
 * crash leaves every mark in the log or a new segment); then the
 * segments of version 5 (keys only) go and the version moves
 * (dedup_convert.c). */
int dedup_convert_segments(struct sqlite3 *db, const char *path, char *err,
                           size_t errlen);

#endif
