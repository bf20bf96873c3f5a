/*
 * A new segment's keys put in key order (dedup_segment_int.h): encoded,
 * sorted, one copy of each with its newest mark, each with its source.
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include <stdlib.h>
#include <string.h>

#include "dedup_segment_int.h"

static uint64_t be_word(const uint8_t *p, size_t n) {
  uint64_t w = 0;
  for (size_t i = 0; i < 8; i++)
    w = w << 8 | (i < n ? p[i] : 0);
  return w;
}

/* Equal words leave the order to the whole keys: a key padded with zeros
 * ties with a longer one that goes on with zeros, never inverts it. */
static int ref_cmp(const void *a, const void *b) {
  const dseg_sref_t *x = a, *y = b;
  if (x->w0 != y->w0)
    return x->w0 < y->w0 ? -1 : 1;
  if (x->w1 != y->w1)
    return x->w1 < y->w1 ? -1 : 1;
  return dseg_key_cmp(x->e->k, x->e->len, y->e->k, y->e->len);
}

/* Sources seen last, by partition: the marks of a batch come in runs of
 * a few partitions of one topic (one copy of the topic's bytes shared by
 * its marks), so most keys find theirs here without hashing the topic. */
#define SRC_CACHE 16

typedef struct src_cache {
  const dseg_key_t *key[SRC_CACHE]; /* a key that had the source */
  uint32_t src[SRC_CACHE];
} src_cache_t;

static uint32_t key_source(dsrc_table_t *srcs, src_cache_t *c,
                           const dseg_key_t *k) {
  unsigned slot = (unsigned)k->partition % SRC_CACHE;
  const dseg_key_t *o = c->key[slot];
  if (o && o->scope == k->scope && o->partition == k->partition &&
      o->topic_len == k->topic_len &&
      (k->topic_len == 0 || o->topic == k->topic ||
       memcmp(o->topic, k->topic, k->topic_len) == 0))
    return c->src[slot];
  c->key[slot] = k;
  c->src[slot] =
      dsrc_find(srcs, k->scope, k->topic, k->topic_len, k->partition);
  return c->src[slot];
}

static void ref_swap(dseg_sref_t *a, dseg_sref_t *b) {
  dseg_sref_t t = *a;
  *a = *b;
  *b = t;
}

/* Quicksort with the comparison inlined (qsort()'s call per comparison
 * was most of the sort's cost); short runs by insertion, and qsort()
 * for a run that recursed too deep, so that no input is quadratic. */
static void refs_sort(dseg_sref_t *v, size_t n, unsigned depth) {
  while (n > 16) {
    if (depth-- == 0) {
      qsort(v, n, sizeof(*v), ref_cmp);
      return;
    }
    size_t mid = n / 2;
    if (ref_cmp(&v[mid], &v[0]) < 0)
      ref_swap(&v[mid], &v[0]);
    if (ref_cmp(&v[n - 1], &v[mid]) < 0) {
      ref_swap(&v[n - 1], &v[mid]);
      if (ref_cmp(&v[mid], &v[0]) < 0)
        ref_swap(&v[mid], &v[0]);
    }
    dseg_sref_t pivot = v[mid];
    size_t i = 0, j = n - 1;
    for (;;) { /* Hoare: v[0] <= pivot <= v[n - 1] bound both scans */
      while (ref_cmp(&v[i], &pivot) < 0)
        i++;
      while (ref_cmp(&pivot, &v[j]) < 0)
        j--;
      if (i >= j)
        break;
      ref_swap(&v[i++], &v[j--]);
    }
    /* v[0..j] <= pivot <= v[j+1..n): recurse into the smaller side */
    size_t left = j + 1;
    if (left < n - left) {
      refs_sort(v, left, depth);
      v += left;
      n -= left;
    } else {
      refs_sort(v + left, n - left, depth);
      n = left;
    }
  }
  for (size_t i = 1; i < n; i++) {
    dseg_sref_t x = v[i];
    size_t j = i;
    for (; j > 0 && ref_cmp(&x, &v[j - 1]) < 0; j--)
      v[j] = v[j - 1];
    v[j] = x;
  }
}

void dseg_sort_keys(const dseg_key_t *keys, size_t n, dsrc_table_t *srcs,
                    dseg_sorted_t *out) {
  size_t room = 0, at = 0, m = 0;
  src_cache_t cache = {0};
  unsigned depth = 0;
  for (size_t i = 0; i < n; i++)
    room += KEY_MAX_HEAD + keys[i].len;
  out->arena = g_malloc(room ? room : 1);
  out->ents = g_new(dseg_ent_t, n ? n : 1);
  dseg_sref_t *refs = g_new(dseg_sref_t, n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    const dseg_key_t *k = &keys[i];
    dseg_ent_t *e = &out->ents[i];
    e->k = out->arena + at;
    e->len = dseg_key_encode(k->scope, k->id, k->len, out->arena + at);
    e->hash = k->hash;
    uint32_t src = key_source(srcs, &cache, k);
    e->m = (dsegb_meta_t){.src = src,
                          .outcome = k->outcome,
                          .offset = k->offset,
                          .ms = k->handled_ms};
    dsrc_widen(srcs, src, k->offset, k->handled_ms);
    at += e->len;
    refs[i] =
        (dseg_sref_t){.w0 = be_word(e->k, e->len),
                      .w1 = e->len > 8 ? be_word(e->k + 8, e->len - 8) : 0,
                      .e = e};
  }
  for (size_t left = n; left > 1; left >>= 1)
    depth += 2;
  refs_sort(refs, n, depth);
  for (size_t i = 0; i < n; i++) {
    if (m > 0 && ref_cmp(&refs[m - 1], &refs[i]) == 0) {
      /* the newest mark; of equally new ones, the first given */
      const dseg_ent_t *a = refs[m - 1].e, *b = refs[i].e;
      if (b->m.ms > a->m.ms || (b->m.ms == a->m.ms && b < a))
        refs[m - 1] = refs[i];
      continue;
    }
    refs[m++] = refs[i];
  }
  out->refs = refs; /* the first m, kept as they are: no copy */
  out->n = m;
}

void dseg_sorted_free(dseg_sorted_t *s) {
  g_free(s->refs);
  g_free(s->ents);
  g_free(s->arena);
  *s = (dseg_sorted_t){0};
}
