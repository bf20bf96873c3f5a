/*
 * Packing helpers shared by the dedup store's on-disk forms (segments,
 * dedup_segment.c; the log of marks, dedup_log.c): varints and UUIDs as
 * 16 binary bytes. Private to the dedup store.
 *
 * Threads: pure functions.
 */
#ifndef KHOST_DEDUP_PACK_H
#define KHOST_DEDUP_PACK_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

static inline void dpack_varint_put(GByteArray *b, uint64_t v) {
  uint8_t buf[10];
  guint n = 0;
  while (v >= 0x80) {
    buf[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  buf[n++] = (uint8_t)v;
  g_byte_array_append(b, buf, n);
}

/* A varint at *p (before end); 0 when it is cut short. */
static inline int dpack_varint_get(const uint8_t **p, const uint8_t *end,
                                   uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t c = *(*p)++;
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = r;
      return 1;
    }
  }
  return 0;
}

/* Signed values (deltas) as varints: small magnitudes, few bytes. */
static inline uint64_t dpack_zigzag(int64_t v) {
  return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t dpack_unzigzag(uint64_t v) {
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline int dpack_hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* The 16 bytes of a canonical lower-case UUID; 0 when id is not one (an
 * upper-case UUID stays as it is, so that it decodes to its own bytes). */
static inline int dpack_uuid_bytes(const uint8_t *id, size_t len,
                                   uint8_t out[16]) {
  size_t o = 0;
  if (len != 36)
    return 0;
  for (size_t i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (id[i] != '-')
        return 0;
      continue;
    }
    int v = dpack_hexval(id[i]);
    if (v < 0)
      return 0;
    out[o / 2] = (uint8_t)(o % 2 ? out[o / 2] | v : v << 4);
    o++;
  }
  return 1;
}

/* The canonical text of 16 UUID bytes (36 characters, no NUL). */
static inline void dpack_uuid_text(const uint8_t b[16], char text[36]) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0, o = 0; i < 16; i++) {
    if (o == 8 || o == 13 || o == 18 || o == 23)
      text[o++] = '-';
    text[o++] = hex[b[i] >> 4];
    text[o++] = hex[b[i] & 15];
  }
}

#endif
