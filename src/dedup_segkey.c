/*
 * A dedup segment's entries and sources: see dedup_segkey.h.
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include "dedup_segkey.h"

#include <string.h>

#include "dedup_pack.h"

#define SRC_FORMAT 1

static guint src_hash(gconstpointer p) {
  const dsrc_t *s = p;
  guint h = s->scope * 31u + (guint)s->partition;
  for (size_t i = 0; i < s->topic_len; i++)
    h = h * 31u + (guint)(uint8_t)s->topic[i];
  return h;
}

static gboolean src_equal(gconstpointer a, gconstpointer b) {
  const dsrc_t *x = a, *y = b;
  return x->scope == y->scope && x->partition == y->partition &&
         x->topic_len == y->topic_len &&
         (x->topic_len == 0 || memcmp(x->topic, y->topic, x->topic_len) == 0);
}

void dsrc_table_init(dsrc_table_t *t) {
  t->v = g_array_new(FALSE, FALSE, sizeof(dsrc_t));
  t->find = g_hash_table_new_full(src_hash, src_equal, g_free, NULL);
}

void dsrc_table_free(dsrc_table_t *t) {
  if (!t->v)
    return;
  for (guint i = 0; i < t->v->len; i++)
    g_free(g_array_index(t->v, dsrc_t, i).topic);
  g_array_free(t->v, TRUE);
  g_hash_table_destroy(t->find);
  t->v = NULL;
}

uint32_t dsrc_find(dsrc_table_t *t, uint32_t scope, const char *topic,
                   size_t topic_len, int32_t partition) {
  dsrc_t probe = {.scope = scope,
                  .partition = partition,
                  .topic = (char *)topic,
                  .topic_len = topic_len};
  gpointer at = g_hash_table_lookup(t->find, &probe);
  if (at)
    return GPOINTER_TO_UINT(at) - 1;
  dsrc_t s = {.scope = scope,
              .partition = partition,
              .topic = g_strndup(topic_len ? topic : "", topic_len),
              .topic_len = topic_len,
              .base_offset = INT64_MAX,
              .oldest_ms = INT64_MAX,
              .newest_ms = INT64_MIN};
  g_array_append_val(t->v, s);
  /* The key points at the owned topic, which does not move. */
  dsrc_t *key = g_memdup2(&s, sizeof s);
  g_hash_table_insert(t->find, key, GUINT_TO_POINTER(t->v->len));
  return t->v->len - 1;
}

void dsrc_widen(dsrc_table_t *t, uint32_t i, int64_t offset, int64_t ms) {
  dsrc_t *s = &g_array_index(t->v, dsrc_t, i);
  s->base_offset = MIN(s->base_offset, offset);
  s->newest_ms = MAX(s->newest_ms, ms);
}

void dsrc_encode(const dsrc_table_t *t, GByteArray *out) {
  g_byte_array_set_size(out, 0);
  dpack_varint_put(out, SRC_FORMAT);
  dpack_varint_put(out, t->v->len);
  for (guint i = 0; i < t->v->len; i++) {
    const dsrc_t *s = &g_array_index(t->v, dsrc_t, i);
    dpack_varint_put(out, s->scope);
    dpack_varint_put(out, s->topic_len);
    if (s->topic_len)
      g_byte_array_append(out, (const uint8_t *)s->topic, (guint)s->topic_len);
    dpack_varint_put(out, dpack_zigzag(s->partition));
    dpack_varint_put(out, dpack_zigzag(s->count ? s->base_offset : 0));
    dpack_varint_put(out, s->count);
    dpack_varint_put(out, dpack_zigzag(s->count ? s->oldest_ms : 0));
    dpack_varint_put(out, dpack_zigzag(s->count ? s->newest_ms : 0));
  }
}

/* One source of a blob at *p; 0 when malformed. */
static int decode_one(const uint8_t **p, const uint8_t *end, dsrc_t *s) {
  uint64_t scope, tlen, part, base, count, oldest, newest;
  if (!dpack_varint_get(p, end, &scope) || scope > UINT32_MAX ||
      !dpack_varint_get(p, end, &tlen) || tlen > (uint64_t)(end - *p))
    return 0;
  s->topic = (char *)*p;
  s->topic_len = (size_t)tlen;
  *p += tlen;
  if (!dpack_varint_get(p, end, &part) || !dpack_varint_get(p, end, &base) ||
      !dpack_varint_get(p, end, &count) || !dpack_varint_get(p, end, &oldest) ||
      !dpack_varint_get(p, end, &newest))
    return 0;
  s->scope = (uint32_t)scope;
  s->partition = (int32_t)dpack_unzigzag(part);
  s->base_offset = dpack_unzigzag(base);
  s->count = count;
  s->oldest_ms = dpack_unzigzag(oldest);
  s->newest_ms = dpack_unzigzag(newest);
  return 1;
}

int dsrc_decode(const void *blob, size_t len, GArray *out) {
  const uint8_t *p = blob, *end = p + len;
  uint64_t format, n;
  if (!blob || !dpack_varint_get(&p, end, &format) || format != SRC_FORMAT ||
      !dpack_varint_get(&p, end, &n) || n > len)
    return -1;
  for (uint64_t i = 0; i < n; i++) {
    dsrc_t s;
    if (!decode_one(&p, end, &s))
      return -1;
    g_array_append_val(out, s);
  }
  return 0;
}

/* ---------------------------------------------------------------- entries */

void dkey_reader_init(dkey_reader_t *r) {
  memset(r, 0, sizeof *r);
  r->key = r->small;
  r->cap = sizeof r->small;
}

void dkey_reader_block(dkey_reader_t *r, const void *p, size_t len) {
  r->p = p;
  r->end = r->p + len;
  r->len = 0;
}

static void reader_room(dkey_reader_t *r, size_t need) {
  if (need <= r->cap)
    return;
  r->cap = need * 2;
  if (r->key == r->small) {
    r->key = g_malloc(r->cap);
    memcpy(r->key, r->small, r->len);
  } else
    r->key = g_realloc(r->key, r->cap);
}

int dkey_reader_next(dkey_reader_t *r) {
  uint64_t shared, rest, head;
  if (!r->p || r->p >= r->end)
    return 0;
  if (!dpack_varint_get(&r->p, r->end, &shared) || shared > r->len ||
      !dpack_varint_get(&r->p, r->end, &rest) ||
      rest > (uint64_t)(r->end - r->p))
    return -1;
  reader_room(r, (size_t)(shared + rest));
  memcpy(r->key + shared, r->p, (size_t)rest);
  r->p += rest;
  r->len = (size_t)(shared + rest);
  if (!dpack_varint_get(&r->p, r->end, &head) || (head >> 2) > UINT32_MAX ||
      !dpack_varint_get(&r->p, r->end, &r->offset_delta) ||
      !dpack_varint_get(&r->p, r->end, &r->ms_delta))
    return -1;
  r->src = (uint32_t)(head >> 2);
  r->outcome = (int)(head & DSRC_OUTCOME_MASK);
  return 1;
}

void dkey_reader_done(dkey_reader_t *r) {
  if (r->key != r->small)
    g_free(r->key);
  r->key = r->small;
}

void dkey_put(GByteArray *block, const uint8_t *prev, size_t plen,
              const uint8_t *key, size_t len, uint32_t src, int outcome,
              uint64_t offset_delta, uint64_t ms_delta) {
  size_t shared = 0, most = plen < len ? plen : len;
  while (shared < most && prev[shared] == key[shared])
    shared++;
  /* Put together on the stack and appended at once (one call, not one
   * per field); a long key goes in three appends. */
  uint8_t buf[320], *p = buf;
  int whole = DKEY_MAX_ENTRY(len) <= sizeof buf;
  p += dpack_varint_to(p, shared);
  p += dpack_varint_to(p, len - shared);
  if (whole && len > shared) {
    memcpy(p, key + shared, len - shared);
    p += len - shared;
  } else if (len > shared) {
    g_byte_array_append(block, buf, (guint)(p - buf));
    g_byte_array_append(block, key + shared, (guint)(len - shared));
    p = buf;
  }
  p += dpack_varint_to(p, (uint64_t)src << 2 |
                              (uint64_t)(outcome & DSRC_OUTCOME_MASK));
  p += dpack_varint_to(p, offset_delta);
  p += dpack_varint_to(p, ms_delta);
  g_byte_array_append(block, buf, (guint)(p - buf));
}

GBytes *dkey_forgotten(uint32_t scope, const void *id, size_t len) {
  uint8_t *k = g_malloc(sizeof(scope) + 1 + len);
  memcpy(k, &scope, sizeof(scope));
  k[sizeof(scope)] = 0;
  if (id && len)
    memcpy(k + sizeof(scope) + 1, id, len);
  return g_bytes_new_take(k, id ? sizeof(scope) + 1 + len : sizeof(scope));
}
