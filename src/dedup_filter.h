/*
 * A blocked Bloom filter in front of each dedup segment
 * (dedup_segment.h): "certainly absent" or "maybe present" for a 64-bit
 * hash the caller computed once per ID. Each hash touches one 64-byte
 * block (one cache line): the upper 32 bits pick the block, and one bit
 * in each of the block's eight words comes from the hash multiplied by an
 * odd constant, so no ID is hashed again here.
 *
 * Hand-written: Debian ships no well-kept C filter library.
 *
 * Threads: adding is single-threaded (a filter is built once, with its
 * segment); a built filter may be read by any number of threads.
 */
#ifndef KHOST_DEDUP_FILTER_H
#define KHOST_DEDUP_FILTER_H

#include <stddef.h>
#include <stdint.h>

typedef struct dfilter dfilter_t;

/* Room for n IDs at bits_per_id bits each (at least one block). Never
 * NULL; running out of memory aborts. */
dfilter_t *dfilter_new(size_t n, unsigned bits_per_id);
void dfilter_free(dfilter_t *f);

void dfilter_add(dfilter_t *f, uint64_t hash);
/* Start fetching the cache line dfilter_maybe() will read for hash. */
void dfilter_prefetch(const dfilter_t *f, uint64_t hash);
/* 0: certainly not added; 1: maybe added. */
int dfilter_maybe(const dfilter_t *f, uint64_t hash);

/* The filter as bytes (little-endian words), for the segment's row:
 * *len gets the size; g_free() the bytes. */
uint8_t *dfilter_encode(const dfilter_t *f, size_t *len);
/* dfilter_encode()'s bytes without a copy (*len: their size) on a
 * little-endian machine, where they are the filter's own words (valid
 * while f is); NULL elsewhere (use dfilter_encode()). */
const void *dfilter_bytes_le(const dfilter_t *f, size_t *len);
/* A filter from dfilter_encode()'s bytes; NULL when len is not a whole
 * number of blocks. */
dfilter_t *dfilter_decode(const void *bytes, size_t len);
/* A filter of len bytes (a whole number of blocks, else NULL) to fill
 * with dfilter_encode()'s bytes at dfilter_words(), then
 * dfilter_from_le(): a read without a copy. */
dfilter_t *dfilter_alloc_bytes(size_t len);
void *dfilter_words(dfilter_t *f);
void dfilter_from_le(dfilter_t *f);
/* Bytes of memory the filter's bits take. */
size_t dfilter_size(const dfilter_t *f);

#endif
