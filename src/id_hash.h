/*
 * The one hash of an event ID: computed once where the flow core learns
 * the ID, then carried with it through the store (store.h's store_key_t)
 * into the in-memory set (dedup_set.c), so that a record's claim, its mark
 * and its release never hash the ID again.
 *
 * Threads: any; no state.
 */
#ifndef KHOST_ID_HASH_H
#define KHOST_ID_HASH_H

#include <stddef.h>
#include <stdint.h>

/* "Not computed yet": id_hash() never returns it, so that a caller that
 * has no hash at hand (the admin tools, the tests) passes 0 and the store
 * computes it. */
#define ID_HASH_NONE 0

/* XXH3 of the ID's bytes, seeded with the scope (two pipelines' copies of
 * one ID hash apart). Never ID_HASH_NONE. */
uint64_t id_hash(uint32_t scope, const void *id, size_t len);

/* hash, or id_hash() when it is ID_HASH_NONE. */
static inline uint64_t id_hash_or(uint64_t hash, uint32_t scope, const void *id,
                                  size_t len) {
  return hash != ID_HASH_NONE ? hash : id_hash(scope, id, len);
}

#endif
