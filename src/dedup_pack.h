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
#include <string.h>

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

/* What dpack_uuid_parse() found. */
enum { DPACK_NOT_UUID = 0, DPACK_UUID_LOWER = 1, DPACK_UUID_UPPER = 2 };

/* Eight characters at p as one number, the first in the low byte. */
static inline uint64_t dpack_load8(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return GUINT64_FROM_LE(v);
}

static inline uint64_t dpack_load4x2(const uint8_t *a, const uint8_t *b) {
  uint32_t x, y;
  memcpy(&x, a, 4);
  memcpy(&y, b, 4);
  return (uint64_t)GUINT32_FROM_LE(x) | (uint64_t)GUINT32_FROM_LE(y) << 32;
}

#define DPACK_ONES UINT64_C(0x0101010101010101)
#define DPACK_HIGH UINT64_C(0x8080808080808080)

/* The high bit of each byte of x (all below 0x80) that lies in [lo, hi]:
 * x + 0x80 - lo reaches 0x80 exactly when x >= lo, x + 0x7f - hi when
 * x > hi, and neither sum carries into the next byte. */
static inline uint64_t dpack_in_range(uint64_t x, unsigned lo, unsigned hi) {
  return (x + DPACK_ONES * (0x80 - lo)) & ~(x + DPACK_ONES * (0x7f - hi)) &
         DPACK_HIGH;
}

/* Eight hex digits (x, as dpack_load8() reads them) into four bytes at
 * out; *bad gets a high bit for each byte that is not a digit, *lower and
 * *upper one for each letter of that case. The value of a digit or
 * letter is its low four bits, plus 9 for a letter (bit 6 set). */
static inline void dpack_hex8(uint64_t x, uint8_t out[4], uint64_t *bad,
                              uint64_t *lower, uint64_t *upper) {
  uint64_t lo = dpack_in_range(x, 'a', 'f'), up = dpack_in_range(x, 'A', 'F');
  *bad |=
      (x & DPACK_HIGH) | ((dpack_in_range(x, '0', '9') | lo | up) ^ DPACK_HIGH);
  *lower |= lo;
  *upper |= up;
  uint64_t n = (x & (DPACK_ONES * 0x0f)) + ((x >> 6) & DPACK_ONES) * 9;
  uint64_t m = UINT64_C(0x00ff00ff00ff00ff);
  n = ((n & m) << 4) | ((n >> 8) & m);               /* byte pairs */
  n = (n | (n >> 8)) & UINT64_C(0x0000ffff0000ffff); /* 2 bytes per half */
  uint32_t v = GUINT32_TO_LE((uint32_t)(n | (n >> 16)));
  memcpy(out, &v, 4);
}

/* The 16 bytes of the canonical 8-4-4-4-12 text of a UUID at id (36
 * bytes), eight digits at a time: DPACK_UUID_LOWER or DPACK_UUID_UPPER by
 * the case of its letters (digits alone count as lower case), or
 * DPACK_NOT_UUID (out undefined) for anything else, letters of both cases
 * included, so that the bytes and the case give back exactly the text. */
static inline int dpack_uuid_parse(const uint8_t *id, uint8_t out[16]) {
  uint64_t bad = 0, lower = 0, upper = 0;
  if (id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-')
    return DPACK_NOT_UUID;
  dpack_hex8(dpack_load8(id), out, &bad, &lower, &upper);
  dpack_hex8(dpack_load4x2(id + 9, id + 14), out + 4, &bad, &lower, &upper);
  dpack_hex8(dpack_load4x2(id + 19, id + 24), out + 8, &bad, &lower, &upper);
  dpack_hex8(dpack_load8(id + 28), out + 12, &bad, &lower, &upper);
  if (bad || (lower && upper))
    return DPACK_NOT_UUID;
  return upper ? DPACK_UUID_UPPER : DPACK_UUID_LOWER;
}

/* The 16 bytes of a canonical lower-case UUID; 0 when id is not one (an
 * upper-case UUID stays as it is, so that it decodes to its own bytes). */
static inline int dpack_uuid_bytes(const uint8_t *id, size_t len,
                                   uint8_t out[16]) {
  return len == 36 && dpack_uuid_parse(id, out) == DPACK_UUID_LOWER;
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
