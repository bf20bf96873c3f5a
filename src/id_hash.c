/*
 * The one hash of an event ID (id_hash.h).
 */
#include "id_hash.h"

#include <xxhash.h>

uint64_t id_hash(uint32_t scope, const void *id, size_t len) {
  uint64_t h = XXH3_64bits_withSeed(len ? id : "", len, scope);
  return h != ID_HASH_NONE ? h : 1;
}
