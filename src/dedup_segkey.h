/*
 * What a dedup segment (dedup_segment.h) keeps per ID, and how: the
 * entries of its blocks and its table of sources. Private to the dedup
 * store.
 *
 * A source is one (scope, topic, partition) whose marks the segment holds;
 * the table sits in the segment's row (column `sources`): varint format
 * (1), varint count, then per source: varint scope, varint topic length
 * and bytes, zigzag varints of partition and base_offset (its smallest
 * offset), varint count of its IDs, zigzag varints of its oldest and
 * newest handled_at.
 *
 * A block entry: varint length of the prefix shared with the block's
 * previous key (0 for a block's first), varint length of the rest and its
 * bytes, then varint (source index << 2 | outcome), varint (offset -
 * the source's base_offset) and varint (the source's newest_ms -
 * handled_at). Keys are sorted, so the scope and the first bytes of an ID
 * are mostly shared: a UUID-shaped ID of a large segment takes about 14
 * bytes of key and 6-8 of mark.
 *
 * Threads: pure functions; a reader or table belongs to one thread.
 */
#ifndef KHOST_DEDUP_SEGKEY_H
#define KHOST_DEDUP_SEGKEY_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#define DSRC_OUTCOME_MASK 3

typedef struct dsrc {
  uint32_t scope;
  int32_t partition;
  char *topic; /* owned (a table) or into a decoded blob (dsrc_decode()) */
  size_t topic_len;
  int64_t base_offset;
  int64_t oldest_ms, newest_ms;
  uint64_t count;
} dsrc_t;

/* A table of sources being gathered, found by (scope, topic, partition). */
typedef struct dsrc_table {
  GArray *v;        /* dsrc_t, topics owned */
  GHashTable *find; /* dsrc_t * (g_new) -> index + 1 */
} dsrc_table_t;

void dsrc_table_init(dsrc_table_t *t);
void dsrc_table_free(dsrc_table_t *t);
/* The index of (scope, topic, partition), added when new with an empty
 * range (base INT64_MAX, newest INT64_MIN, count 0). */
uint32_t dsrc_find(dsrc_table_t *t, uint32_t scope, const char *topic,
                   size_t topic_len, int32_t partition);
/* Widen source i's base and newest to cover offset and ms. */
void dsrc_widen(dsrc_table_t *t, uint32_t i, int64_t offset, int64_t ms);
/* The table as a blob into out (emptied first). */
void dsrc_encode(const dsrc_table_t *t, GByteArray *out);
/* The sources of a blob into out (dsrc_t, topics into the blob, which
 * must outlive them); -1 when malformed. */
int dsrc_decode(const void *blob, size_t len, GArray *out);

/* One block entry being read; the key is rebuilt in the reader's
 * buffer. */
typedef struct dkey_reader {
  const uint8_t *p, *end;
  uint8_t small[256];
  uint8_t *key; /* small, or g_malloc'd when a key is longer */
  size_t len, cap;
  uint32_t src;
  int outcome;
  uint64_t offset_delta, ms_delta;
} dkey_reader_t;

void dkey_reader_init(dkey_reader_t *r);
/* Start on a block's entries (the key is reset: the first is whole). */
void dkey_reader_block(dkey_reader_t *r, const void *p, size_t len);
/* 1: the next entry is read; 0: the block is done; -1: malformed. */
int dkey_reader_next(dkey_reader_t *r);
void dkey_reader_done(dkey_reader_t *r);

/* Append an entry for key (len bytes) after prev (plen bytes; 0 for a
 * block's first). */
void dkey_put(GByteArray *block, const uint8_t *prev, size_t plen,
              const uint8_t *key, size_t len, uint32_t src, int outcome,
              uint64_t offset_delta, uint64_t ms_delta);
/* The most bytes dkey_put() appends for a key of len bytes. */
#define DKEY_MAX_ENTRY(len) ((len) + 50)

/* The key under which the dedup store remembers a forgotten ID (a whole
 * scope when id is NULL): an ID forgotten after a segment's marks is new
 * whatever the segment says. dedup.c and the admin tools build it alike. */
GBytes *dkey_forgotten(uint32_t scope, const void *id, size_t len);

#endif
