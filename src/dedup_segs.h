/*
 * The dedup store's segments (dedup_segment.h) as one list: the IDs the
 * store moved out of its in-memory set, answered from disk. Private to
 * dedup.c.
 *
 * Lookups take the ID's hash as the flow core carries it (id_hash.h) and
 * ask every segment's filter;
 * only a filter pass reads a block, on a connection of the list's own
 * (under a mutex: with filters of about 0.3 % false positives, reads are
 * rare; a segment whose filter is not loaded yet, dsegs_open()'s lazy
 * start, reads its blocks for every lookup). A segment is published
 * (dsegs_add()) before its IDs leave the set and is unpublished
 * (dsegs_take_expired()) before its rows go, so a lookup never misses an ID
 * that is in neither place.
 *
 * Threads: thread-safe.
 */
#ifndef KHOST_DEDUP_SEGS_H
#define KHOST_DEDUP_SEGS_H

#include <stddef.h>
#include <stdint.h>

#include "dedup_segment.h"

typedef struct dsegs dsegs_t;

/* Load every segment of the database on db (the list's own connection
 * from now on, also on failure: closed by dsegs_free()). lazy: their
 * metadata alone (dseg_load_meta(): a start reads a few rows per segment,
 * whatever their size), the rest by dsegs_load_next(); lookups stay exact
 * meanwhile, reading blocks from disk. */
int dsegs_open(dsegs_t **out, struct sqlite3 *db, const char *path, int lazy,
               char *err, size_t errlen);
/* Load the filter of one segment that has none, or else the index of
 * one that has none, on db (a connection of the caller's thread): 1 when
 * it did, 0 when every segment is loaded, -1 (err) when SQLite failed (the
 * segment stays on the disk path). One caller at a time. */
int dsegs_load_next(dsegs_t *l, struct sqlite3 *db, char *err, size_t errlen);
void dsegs_free(dsegs_t *l);

/* 1 when a segment holds (scope, id), with the newest such segment's tag
 * in *tag and the newest handled_at of its marks there in *ms; 0 when
 * none does; -1 when a block could not be read (err). hash: id_hash(scope,
 * id, len), or ID_HASH_NONE to have it computed here. */
int dsegs_find(dsegs_t *l, uint32_t scope, const void *id, size_t len,
               uint64_t hash, int64_t *tag, int64_t *ms, char *err,
               size_t errlen);

/* Start fetching the filter lines dsegs_find() will read for hash (an
 * id_hash()), in every segment: asked a record or more before its claim,
 * the line is in cache when the claim needs it. No disk read. */
void dsegs_prefetch(dsegs_t *l, uint64_t hash);

/* Publish a loaded segment (the list owns it). */
void dsegs_add(dsegs_t *l, dseg_t *g);
/* Tiered merging: a segment's tier is its ID count in powers of
 * DSEGS_MERGE_RATIO; once DSEGS_MERGE_FANIN segments share a tier they are
 * merged into one of the next tier. A store of N IDs thus keeps about
 * FANIN - 1 segments per tier, log_RATIO(N / budget) tiers: few filters
 * to ask per new ID, and each ID rewritten about once per tier. */
#define DSEGS_MERGE_FANIN 4
#define DSEGS_MERGE_RATIO 4
/* No merge makes a segment of more IDs than this (about 540 MB of blocks
 * for UUIDs): a merge frees its inputs' pages only after its output is
 * written, so the file keeps that much free space until later segments
 * reuse it. Segments this big stay as they are; a store of N IDs then asks
 * about N / 24Mi more filters per new ID (with dedup.memory's default,
 * segments merge up to 22M IDs). */
#define DSEGS_MERGE_MAX_IDS (UINT64_C(24) << 20)

/* The ids of DSEGS_MERGE_FANIN segments of the lowest tier that has as
 * many (oldest first) holding max_ids IDs at most together (0:
 * DSEGS_MERGE_MAX_IDS), their total IDs and newest tag; 0 when no tier
 * has enough. */
size_t dsegs_pick_merge(dsegs_t *l, int64_t ids[DSEGS_MERGE_FANIN],
                        uint64_t *total, int64_t *tag, uint64_t max_ids);
/* Publish merged, then unpublish ids[0..n) (a lookup meanwhile finds an
 * ID in one or the other). */
void dsegs_replace(dsegs_t *l, const int64_t *ids, size_t n, dseg_t *merged);
/* The id for the next segment. */
int64_t dsegs_next_id(dsegs_t *l);
/* Unpublish the segments whose newest key was handled before cutoff_ms;
 * their ids go to *ids (g_free()), the count is returned. */
size_t dsegs_take_expired(dsegs_t *l, int64_t cutoff_ms, int64_t **ids);

typedef struct dsegs_stats {
  size_t segments;
  size_t loading; /* segments whose filter or index is not loaded yet */
  uint64_t ids;
  size_t memory; /* filters and block indexes */
} dsegs_stats_t;
void dsegs_stats(dsegs_t *l, dsegs_stats_t *out);

#endif
