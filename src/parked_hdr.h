/*
 * The headers of a parked record as one blob (store.h, store_parked_t):
 * each header is its name's length (4 bytes, big-endian), the name, its
 * value's length (4 bytes, big-endian; 0xffffffff for a header without a
 * value) and the value, in the record's order. A blob the store can keep
 * as it is and `khost parked` can show and send again.
 *
 * Threads: no state; any thread.
 */
#ifndef KHOST_PARKED_HDR_H
#define KHOST_PARKED_HDR_H

#include <glib.h>
#include <stddef.h>

/* Append one header; value NULL: a header without a value. */
void parked_hdr_add(GByteArray *buf, const char *name, size_t name_len,
                    const void *value, size_t value_len);

/* One header of a blob: name and value are borrowed for the call (value
 * NULL: none). A non-zero return stops the walk. */
typedef int (*parked_hdr_fn)(void *arg, const char *name, size_t name_len,
                             const void *value, size_t value_len);

/* Each header of blob in order: 0, fn's non-zero return, or -1 when the
 * blob is cut short (nothing is called for the broken tail). */
int parked_hdr_each(const void *blob, size_t len, parked_hdr_fn fn, void *arg);

#endif
