/*
 * The headers of a parked record as one blob: see parked_hdr.h.
 */
#include "parked_hdr.h"

#include <stdint.h>
#include <string.h>

#define HDR_NO_VALUE 0xffffffffu

static void put_u32(GByteArray *buf, uint32_t v) {
  guint8 b[4] = {(guint8)(v >> 24), (guint8)(v >> 16), (guint8)(v >> 8),
                 (guint8)v};
  g_byte_array_append(buf, b, 4);
}

static uint32_t get_u32(const guint8 *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

void parked_hdr_add(GByteArray *buf, const char *name, size_t name_len,
                    const void *value, size_t value_len) {
  put_u32(buf, (uint32_t)name_len);
  g_byte_array_append(buf, (const guint8 *)name, (guint)name_len);
  put_u32(buf, value ? (uint32_t)value_len : HDR_NO_VALUE);
  if (value && value_len)
    g_byte_array_append(buf, value, (guint)value_len);
}

/* The length at *at, moved past it; -1 when the blob ends first. */
static int take_len(const guint8 *p, size_t len, size_t *at, uint32_t *out) {
  if (len - *at < 4)
    return -1;
  *out = get_u32(p + *at);
  *at += 4;
  return 0;
}

int parked_hdr_each(const void *blob, size_t len, parked_hdr_fn fn, void *arg) {
  const guint8 *p = blob;
  size_t at = 0;
  while (at < len) {
    uint32_t nl, vl;
    if (take_len(p, len, &at, &nl) < 0 || len - at < nl)
      return -1;
    const char *name = (const char *)p + at;
    at += nl;
    if (take_len(p, len, &at, &vl) < 0)
      return -1;
    int none = vl == HDR_NO_VALUE;
    if (!none && len - at < vl)
      return -1;
    int rc = fn(arg, name, nl, none ? NULL : p + at, none ? 0 : vl);
    at += none ? 0 : vl;
    if (rc != 0)
      return rc;
  }
  return 0;
}
