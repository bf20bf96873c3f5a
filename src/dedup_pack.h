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

/* The most bytes a varint of a 64-bit value takes. */
#define DPACK_VARINT_MAX 10

/* v as a varint at p (room for DPACK_VARINT_MAX bytes); returns its
 * length. */
static inline size_t dpack_varint_to(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static inline void dpack_varint_put(GByteArray *b, uint64_t v) {
  if (v < 0x80) { /* most: one byte, no buffer */
    uint8_t c = (uint8_t)v;
    g_byte_array_append(b, &c, 1);
    return;
  }
  uint8_t buf[DPACK_VARINT_MAX];
  g_byte_array_append(b, buf, (guint)dpack_varint_to(buf, v));
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

/* 1 + the value of a lower-case hex digit; 0 for any other byte. */
extern const uint8_t dpack_hex1[256];

/* The 16 bytes of a canonical lower-case UUID; 0 when id is not one (an
 * upper-case UUID stays as it is, so that it decodes to its own bytes). */
static inline int dpack_uuid_bytes(const uint8_t *id, size_t len,
                                   uint8_t out[16]) {
  /* where each byte's high digit sits in 8-4-4-4-12 text */
  static const uint8_t at[16] = {0,  2,  4,  6,  9,  11, 14, 16,
                                 19, 21, 24, 26, 28, 30, 32, 34};
  unsigned bad = 0;
  if (len != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' ||
      id[23] != '-')
    return 0;
  for (size_t i = 0; i < 16; i++) {
    unsigned hi = dpack_hex1[id[at[i]]], lo = dpack_hex1[id[at[i] + 1]];
    bad |= (hi - 1) | (lo - 1); /* a 0 (not a digit) wraps to all ones */
    out[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
  }
  return bad < 16;
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
