/*
 * A buffer of state writes not yet durable (see state_buf.h): one arena
 * of bytes, entries by offset, an index by hash with linear probing.
 *
 * Nothing is removed from the index but by sbuf_clear(): a later write of
 * a key takes over the index slot of the earlier one, which stays in the
 * arena, marked hidden, until the buffer is cleared. So an entry's slot
 * never moves but when the index grows, and clearing can zero the slots
 * of the live entries alone.
 */
#include "state_buf.h"

#include <glib.h>
#include <string.h>

typedef struct ent {
  size_t off; /* key at arena + off, the value right after it */
  size_t klen;
  size_t vlen;
  uint32_t hash;
  uint32_t slot; /* where the index points at it, while live */
  uint8_t del;
  uint8_t live; /* 0: a later write of its key hides it */
} ent_t;

struct sbuf {
  uint8_t *arena;
  size_t len, cap;
  ent_t *ents;
  size_t n, ncap;
  uint32_t *idx; /* entry + 1; 0: empty */
  size_t icap;   /* a power of two, or 0 */
  size_t keys;
};

/* What a cleared buffer may keep for the next record or batch; more is
 * given back (a batch of large values should not pin its memory). */
#define ARENA_KEEP ((size_t)1 << 20)
#define ENTS_KEEP ((size_t)1 << 14)
#define IDX_KEEP ((size_t)1 << 15)

sbuf_t *sbuf_new(void) {
  return g_new0(sbuf_t, 1);
}

void sbuf_free(sbuf_t *b) {
  if (!b)
    return;
  g_free(b->arena);
  g_free(b->ents);
  g_free(b->idx);
  g_free(b);
}

uint32_t sbuf_hash(const void *key, size_t klen) {
  const uint8_t *p = key;
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ klen, w;
  for (; klen >= 8; p += 8, klen -= 8) {
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  if (klen) {
    w = 0;
    memcpy(&w, p, klen);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
  }
  h ^= h >> 29;
  h *= 0xff51afd7ed558ccdULL;
  return (uint32_t)(h ^ (h >> 32));
}

static int ent_is(const sbuf_t *b, const ent_t *e, uint32_t hash,
                  const void *key, size_t klen) {
  return e->hash == hash && e->klen == klen &&
         (klen == 0 || memcmp(b->arena + e->off, key, klen) == 0);
}

/* The slot of key's entry, or the empty slot where it would go. */
static size_t probe(const sbuf_t *b, uint32_t hash, const void *key,
                    size_t klen) {
  size_t mask = b->icap - 1, i = hash & mask;
  while (b->idx[i] && !ent_is(b, &b->ents[b->idx[i] - 1], hash, key, klen))
    i = (i + 1) & mask;
  return i;
}

/* Room for one more key: at most half the slots are taken. */
static void idx_grow(sbuf_t *b) {
  size_t icap = b->icap ? b->icap * 2 : 16, mask = icap - 1;
  g_free(b->idx);
  b->idx = g_new0(uint32_t, icap);
  b->icap = icap;
  for (size_t e = 0; e < b->n; e++) {
    if (!b->ents[e].live)
      continue;
    size_t i = b->ents[e].hash & mask;
    while (b->idx[i])
      i = (i + 1) & mask;
    b->idx[i] = (uint32_t)(e + 1);
    b->ents[e].slot = (uint32_t)i;
  }
}

static void arena_append(sbuf_t *b, const void *p, size_t len) {
  if (!len)
    return;
  if (b->cap - b->len < len) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < len)
      cap *= 2;
    b->arena = g_realloc(b->arena, cap);
    b->cap = cap;
  }
  memcpy(b->arena + b->len, p, len);
  b->len += len;
}

void sbuf_write(sbuf_t *b, uint32_t hash, const void *key, size_t klen,
                const void *val, size_t vlen, int del) {
  if ((b->keys + 1) * 2 > b->icap)
    idx_grow(b);
  if (b->n == b->ncap) {
    b->ncap = b->ncap ? b->ncap * 2 : 16;
    b->ents = g_renew(ent_t, b->ents, b->ncap);
  }
  size_t i = probe(b, hash, key, klen);
  ent_t *e = &b->ents[b->n];
  e->off = b->len;
  e->klen = klen;
  e->vlen = del ? 0 : vlen;
  e->hash = hash;
  e->slot = (uint32_t)i;
  e->del = del != 0;
  e->live = 1;
  arena_append(b, key, klen);
  arena_append(b, val, e->vlen);
  if (b->idx[i])
    b->ents[b->idx[i] - 1].live = 0;
  else
    b->keys++;
  b->idx[i] = (uint32_t)++b->n;
}

static void ent_write(const sbuf_t *b, const ent_t *e, sbuf_write_t *w) {
  w->key = b->arena + e->off;
  w->klen = e->klen;
  w->vlen = e->vlen;
  /* A put of an empty value is not a delete: it points somewhere. */
  w->val = e->del ? NULL : b->arena + e->off + e->klen;
}

int sbuf_get(const sbuf_t *b, uint32_t hash, const void *key, size_t klen,
             sbuf_write_t *w) {
  if (!b->keys)
    return 0;
  size_t i = probe(b, hash, key, klen);
  if (!b->idx[i])
    return 0;
  ent_write(b, &b->ents[b->idx[i] - 1], w);
  return 1;
}

int sbuf_each(const sbuf_t *b, sbuf_fn fn, void *arg) {
  sbuf_write_t w;
  for (size_t e = 0; e < b->n; e++) {
    if (!b->ents[e].live)
      continue;
    ent_write(b, &b->ents[e], &w);
    int rc = fn(arg, b->ents[e].hash, &w);
    if (rc)
      return rc;
  }
  return 0;
}

size_t sbuf_keys(const sbuf_t *b) {
  return b->keys;
}

void sbuf_clear(sbuf_t *b) {
  if (b->icap > IDX_KEEP) {
    g_free(b->idx);
    b->idx = NULL;
    b->icap = 0;
  } else if (b->n * 4 < b->icap) {
    for (size_t e = 0; e < b->n; e++)
      if (b->ents[e].live)
        b->idx[b->ents[e].slot] = 0;
  } else if (b->icap) {
    memset(b->idx, 0, b->icap * sizeof *b->idx);
  }
  if (b->ncap > ENTS_KEEP) {
    g_free(b->ents);
    b->ents = NULL;
    b->ncap = 0;
  }
  if (b->cap > ARENA_KEEP) {
    g_free(b->arena);
    b->arena = NULL;
    b->cap = 0;
  }
  b->n = b->len = b->keys = 0;
}
