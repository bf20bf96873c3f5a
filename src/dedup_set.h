/*
 * The dedup store's in-memory set: the exact set of (scope, event ID) that
 * the store remembers, each either claimed (reserved by a member, no
 * committed mark yet) or committed (backed by a durable mark, with the
 * newest handled_at among its marks). Private to the dedup store
 * (dedup.c); members use dedup.h.
 *
 * The set knows nothing of SQLite: the store decides when a mark is
 * durable or deleted and tells the set, under its own locks.
 *
 * Threads: a dset_t is thread-safe; every function on it locks one stripe
 * at a time (never two), so callers may hold their own locks around calls.
 * A dset_keys_t or dset_buf_t belongs to one thread at a time.
 *
 * Ownership: the set copies every ID it keeps; callers' IDs are borrowed
 * only for the call. Running out of memory aborts, as glib's allocators do.
 */
#ifndef KHOST_DEDUP_SET_H
#define KHOST_DEDUP_SET_H

#include <stddef.h>
#include <stdint.h>

typedef struct dset dset_t;

/* An empty set. Never NULL. Free with dset_free(). */
dset_t *dset_new(void);
/* Free the set and all its memory (NULL is ignored). No other thread may
 * be using it. */
void dset_free(dset_t *set);

/* What dset_claim() found. */
enum {
  DSET_SEEN = 0,     /* committed: a durable mark backs it */
  DSET_NEW = 1,      /* absent, and now claimed by the caller */
  DSET_IN_FLIGHT = 2 /* claimed by someone, no durable mark yet: the claim
                        may still be released */
};

/* DSET_NEW when (scope, id) was absent and is now claimed by the caller;
 * DSET_SEEN when it is committed; DSET_IN_FLIGHT when it is claimed and
 * not committed. id (len bytes) is copied when claimed. */
int dset_claim(dset_t *set, uint32_t scope, const void *id, size_t len);
/* Like dset_claim(), but a committed (scope, id) whose newest mark was
 * handled before before_ms is claimed again: DSET_NEW unless a re-claim of
 * it is in flight or it was marked at or after before_ms (DSET_SEEN), or
 * it is claimed and not committed (DSET_IN_FLIGHT). The ID stays
 * committed while re-claimed (dset_claim() still answers DSET_SEEN); the
 * re-claim ends with a committed mark or dset_release(). Pruning does not
 * forget a re-claimed ID. id is copied. */
int dset_claim_again(dset_t *set, uint32_t scope, const void *id, size_t len,
                     int64_t before_ms);
/* The same with the ID's id_hash() (id_hash.h) computed by the caller,
 * which the set then does not compute again (ID_HASH_NONE: computed). */
int dset_claim_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                 uint64_t hash);
int dset_claim_again_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                       uint64_t hash, int64_t before_ms);
void dset_release_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                    uint64_t hash);

/* A claimed ID's record, given to its claimer so that the claim's mark
 * needs no look-up (dset_keys_add_ref()). */
typedef struct dset_ref dset_ref_t;

/* dset_claim_h(), and when it answers DSET_NEW *ref is the claimed record
 * (else NULL). The record stays valid until the caller's mark of it
 * (dset_keys_add_ref() and dset_mark_committed_batch()) or its
 * dset_release*(): nothing else frees or moves it. A mark of the ID
 * without the reference meanwhile (another writer's) commits it but keeps
 * the record until then. */
int dset_claim_ref_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                     uint64_t hash, dset_ref_t **ref);
/* Forget (scope, id) if it is claimed and not committed; a committed ID
 * stays (a re-claim of it ends). */
void dset_release(dset_t *set, uint32_t scope, const void *id, size_t len);
/* Record a durable mark of (scope, id) handled at handled_ms: add the ID
 * (claimed or not) as committed, or move its newest handled_at forward.
 * id is copied. */
void dset_mark_committed(dset_t *set, uint32_t scope, const void *id,
                         size_t len, int64_t handled_ms);

/* IDs in the set (claimed or committed). Locks each stripe in turn, so
 * the count is not a snapshot while others write. */
size_t dset_size(dset_t *set);

typedef struct dset_stats {
  size_t ids;    /* as dset_size() */
  size_t chunks; /* arena chunks holding the keys */
  size_t bytes;  /* their mapped size */
} dset_stats_t;

/* Fill *out; same consistency as dset_size(). */
void dset_stats(dset_t *set, dset_stats_t *out);

/* ------------------------------------------------------------ key batches */

/* Keys encoded and hashed ahead of time, so that the work is done before
 * the caller takes its locks (a writer's marks before COMMIT, the pruner's
 * deleted rows before it forgets them). Owned by one thread. */
typedef struct dset_keys dset_keys_t;

/* An empty batch. Never NULL. Free with dset_keys_free(). */
dset_keys_t *dset_keys_new(void);
/* Free the batch (NULL is ignored). */
void dset_keys_free(dset_keys_t *k);
/* Append (scope, id) with the handled_at of its mark; id is copied.
 * handled_ms is used by dset_mark_committed_batch() only. */
void dset_keys_add(dset_keys_t *k, uint32_t scope, const void *id, size_t len,
                   int64_t handled_ms);
/* dset_keys_add() with the ID's id_hash() (ID_HASH_NONE: computed). */
void dset_keys_add_h(dset_keys_t *k, uint32_t scope, const void *id, size_t len,
                     int64_t handled_ms, uint64_t hash);
/* The mark of a claim dset_claim_ref_h() gave ref for, handled at
 * handled_ms: dset_mark_committed_batch() writes the record without
 * looking it up (dset_forget_if_older() skips it). ref must be valid:
 * not yet marked or released. */
void dset_keys_add_ref(dset_keys_t *k, dset_ref_t *ref, int64_t handled_ms);
/* Keys in the batch. */
size_t dset_keys_count(const dset_keys_t *k);
/* Empty the batch, keeping its memory for the next one. */
void dset_keys_clear(dset_keys_t *k);
/* Empty the batch and free its key bytes when they exceed keep_bytes
 * (long IDs can make one batch big; do not keep that around). */
void dset_keys_trim(dset_keys_t *k, size_t keep_bytes);

/* dset_mark_committed() for every key of k, with its own handled_ms.
 * k is only read. */
void dset_mark_committed_batch(dset_t *set, const dset_keys_t *k);
/* Forget every key of k that is committed and whose newest handled_at is
 * before cutoff_ms; claimed keys and keys marked again at or after the
 * cutoff stay. k is only read. */
void dset_forget_if_older(dset_t *set, const dset_keys_t *k, int64_t cutoff_ms);

/* ------------------------------------------------------------ byte buffer */

/* A growable byte buffer with size_t lengths (IDs may be long), shared
 * with the store's writers. Zero-initialise; owned by one thread. */
typedef struct dset_buf {
  uint8_t *data;
  size_t len, cap;
} dset_buf_t;

/* Append n bytes (data may be NULL when n is 0); returns their offset.
 * b->data may move. */
size_t dset_buf_put(dset_buf_t *b, const void *data, size_t n);
/* Free the bytes and reset *b to empty. */
void dset_buf_free(dset_buf_t *b);

#endif
