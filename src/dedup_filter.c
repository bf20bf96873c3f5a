/*
 * Blocked Bloom filter: see dedup_filter.h.
 */
#include "dedup_filter.h"

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BLOCK_WORDS 8
#define BLOCK_BITS (BLOCK_WORDS * 64)

/* Filters of a huge page and more go in huge pages (madvise(): the
 * kernel's transparent huge pages are often "madvise" only): a probe
 * lands on a random block, and in 4 KB pages nearly every probe of a big
 * filter also missed the TLB. */
#define HUGE_PAGE ((size_t)2 << 20)

struct dfilter {
  uint64_t *words;
  size_t blocks;
  size_t mapped; /* bytes mapped at words (huge-page aligned); 0: g_new0 */
};

/* len bytes of zeros at a huge-page boundary, len rounded up to whole
 * huge pages in *mapped; NULL when the mapping failed. */
static void *huge_alloc(size_t len, size_t *mapped) {
  size_t want = (len + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uint8_t *p = mmap(NULL, want + HUGE_PAGE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  size_t head =
      (HUGE_PAGE - ((uintptr_t)p & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
  if (head)
    munmap(p, head);
  munmap(p + head + want, HUGE_PAGE - head); /* never 0 bytes */
#ifdef MADV_HUGEPAGE
  /* Only advice: without it the filter works the same, in small pages. */
  (void)madvise(p + head, want, MADV_HUGEPAGE);
#endif
  *mapped = want;
  return p + head;
}

static dfilter_t *filter_alloc(size_t blocks) {
  dfilter_t *f = g_new0(dfilter_t, 1);
  f->blocks = blocks ? blocks : 1;
  size_t len = f->blocks * BLOCK_WORDS * sizeof(uint64_t);
  if (len >= HUGE_PAGE)
    f->words = huge_alloc(len, &f->mapped);
  if (!f->words) /* small, or no mapping: the heap (aborts when out) */
    f->words = g_new0(uint64_t, f->blocks * BLOCK_WORDS);
  return f;
}

dfilter_t *dfilter_new(size_t n, unsigned bits_per_id) {
  size_t bits = n * (size_t)bits_per_id;
  return filter_alloc((bits + BLOCK_BITS - 1) / BLOCK_BITS);
}

void dfilter_free(dfilter_t *f) {
  if (!f)
    return;
  if (f->mapped)
    munmap(f->words, f->mapped);
  else
    g_free(f->words);
  g_free(f);
}

/* The block: the upper half of the hash scaled to [0, blocks), without a
 * division. */
static uint64_t *block_of(const dfilter_t *f, uint64_t hash) {
  uint64_t b = ((hash >> 32) * (uint64_t)f->blocks) >> 32;
  return f->words + b * BLOCK_WORDS;
}

/* Six bits per word for the bit within it. The multiplication spreads the
 * lower half of the hash (the block used the upper half) over all 48 bits
 * taken. */
static uint64_t probe_bits(uint64_t hash) {
  return hash * UINT64_C(0x9E3779B97F4A7C15);
}

void dfilter_add(dfilter_t *f, uint64_t hash) {
  uint64_t *w = block_of(f, hash), m = probe_bits(hash);
  for (int i = 0; i < BLOCK_WORDS; i++)
    w[i] |= UINT64_C(1) << ((m >> (64 - 6 * (i + 1))) & 63);
}

void dfilter_prefetch(const dfilter_t *f, uint64_t hash) {
  __builtin_prefetch(block_of(f, hash));
}

int dfilter_maybe(const dfilter_t *f, uint64_t hash) {
  const uint64_t *w = block_of(f, hash);
  uint64_t m = probe_bits(hash);
  for (int i = 0; i < BLOCK_WORDS; i++)
    if (!(w[i] & (UINT64_C(1) << ((m >> (64 - 6 * (i + 1))) & 63))))
      return 0;
  return 1;
}

uint8_t *dfilter_encode(const dfilter_t *f, size_t *len) {
  size_t n = f->blocks * BLOCK_WORDS;
  uint8_t *out = g_malloc(n * 8);
  for (size_t i = 0; i < n; i++) {
    uint64_t le = GUINT64_TO_LE(f->words[i]);
    memcpy(out + i * 8, &le, 8);
  }
  *len = n * 8;
  return out;
}

const void *dfilter_bytes_le(const dfilter_t *f, size_t *len) {
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  *len = f->blocks * BLOCK_WORDS * 8;
  return f->words;
#else
  (void)f;
  *len = 0;
  return NULL;
#endif
}

dfilter_t *dfilter_decode(const void *bytes, size_t len) {
  dfilter_t *f;
  const uint8_t *p = bytes;
  if (len == 0 || len % (BLOCK_WORDS * 8) != 0)
    return NULL;
  f = filter_alloc(len / (BLOCK_WORDS * 8));
  for (size_t i = 0; i < f->blocks * BLOCK_WORDS; i++) {
    uint64_t le;
    memcpy(&le, p + i * 8, 8);
    f->words[i] = GUINT64_FROM_LE(le);
  }
  return f;
}

dfilter_t *dfilter_alloc_bytes(size_t len) {
  if (len == 0 || len % (BLOCK_WORDS * 8) != 0)
    return NULL;
  return filter_alloc(len / (BLOCK_WORDS * 8));
}

void *dfilter_words(dfilter_t *f) {
  return f->words;
}

void dfilter_from_le(dfilter_t *f) {
#if G_BYTE_ORDER != G_LITTLE_ENDIAN
  for (size_t i = 0; i < f->blocks * BLOCK_WORDS; i++)
    f->words[i] = GUINT64_FROM_LE(f->words[i]);
#else
  (void)f;
#endif
}

size_t dfilter_size(const dfilter_t *f) {
  return f->blocks * BLOCK_WORDS * 8;
}
