/*
 * The store: what members and the flow core ask of the database that
 * remembers which event IDs a pipeline has handled. One small table of
 * operations, so that the SQLite file of today (store_sqlite.c over
 * dedup.c), the in-memory fake of the unit tests (store_mem.c) and later
 * a shared store (several hosts, one database) sit behind the same calls.
 *
 * Claims: store_claim() answers "seen?" and, when the ID is new, reserves
 * it at once, so that a second copy of the same ID (same batch, another
 * member) is not handled twice. The claimant then either adds a mark for
 * it to a batch that commits, or releases it (batch abandoned, partition
 * lost). Until then the ID is in flight (STORE_IN_FLIGHT), not seen.
 *
 * Batches: a store_batch_t gathers what must become durable together
 * (the dedup marks of handled records, the plugin state writes of those
 * records, the next offset of each partition covered, the records parked) and
 * commits it in one transaction, so that all of them are durable together or
 * not at all: new kinds of entries get their own store_batch_*() call and a new
 * entry at the end of store_ops_t.
 *
 * State: a key-value map per scope (pipeline) with byte keys and values.
 * Reads (store_state_get/scan) see only what is durable; read-your-writes
 * over batches not yet committed is the caller's (state.c).
 *
 * Threads: a store_t is shared by all members and is thread-safe. A
 * store_batch_t belongs to one thread at a time (it may be handed over,
 * as the member hands a batch to its durability thread).
 *
 * Ownership: every call copies what it keeps; IDs and names are borrowed
 * only for the call.
 */
#ifndef KHOST_STORE_H
#define KHOST_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "id_hash.h"

typedef struct store store_t;
typedef struct store_batch store_batch_t;

/* What a claim found. */
enum {
  STORE_SEEN = 0,     /* a durable mark: handled before */
  STORE_NEW = 1,      /* claimed by the caller (STORE_LOOKUP: absent) */
  STORE_IN_FLIGHT = 2 /* claimed by someone whose mark is not durable yet */
};

/* How to claim (store_claim()'s mode). */
enum {
  STORE_CLAIM = 0, /* new IDs only */
  /* Replayed with --dedup reprocess: an ID whose newest mark was handled
   * before before_ms is claimed again (STORE_NEW) unless another re-claim
   * holds it; its release leaves it seen. */
  STORE_CLAIM_AGAIN = 1,
  /* Only look: STORE_NEW means absent, nothing is claimed. */
  STORE_LOOKUP = 2
};

/* Outcome recorded with a mark. */
enum { STORE_OUTCOME_OK = 0, STORE_OUTCOME_FAIL = 1 };

/* An event ID and its id_hash() (scope seeded), computed once where the
 * ID is learnt and passed with it to every call about it: the stores that
 * hash IDs (the SQLite file's set) use it instead of hashing again. */
typedef struct store_key {
  const void *id;
  size_t len;
  uint64_t hash; /* id_hash(scope, id, len); ID_HASH_NONE: computed */
} store_key_t;

static inline store_key_t store_key(uint32_t scope, const void *id,
                                    size_t len) {
  return (store_key_t){id, len, id_hash(scope, id, len)};
}

typedef struct store_mark {
  uint32_t scope; /* from store_scope() */
  const void *event_id;
  size_t event_id_len;
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t handled_at_ms; /* wall clock, ms since the epoch */
  int outcome;           /* STORE_OUTCOME_* */
  uint64_t id_hash;      /* the event ID's store_key_t hash; 0: not known */
  void *claim_ref;       /* store_claim_ref()'s for this ID, or NULL */
} store_mark_t;

/* Replay ranges: offsets [from, to) of one partition that `khost replay`
 * put back in front of a pipeline, and what dedup does with them. */
enum { STORE_REPLAY_SKIP = 0, STORE_REPLAY_REPROCESS = 1 };
typedef struct store_range {
  int64_t from, to;    /* [from, to) */
  int mode;            /* STORE_REPLAY_* */
  int64_t recorded_ms; /* when the replay was recorded (wall clock) */
} store_range_t;

/* A record's plugin calls that have no outcome yet (attempts that asked
 * for a retry or never returned: the process may have crashed in them). */
typedef struct store_attempt {
  uint32_t scope;
  const void *event_id;
  size_t event_id_len;
  const char *topic;
  int32_t partition;
  int64_t offset;
  uint32_t attempts; /* calls made, this one included; 0: forget them */
} store_attempt_t;

/* A record parked for a person to look at (`khost parked`): a record that
 * failed for good while no dead-letter topic was set, as it came, with
 * why and when. headers is parked_hdr.h's encoding. Retention leaves
 * parked records alone. */
typedef struct store_parked {
  uint32_t scope;
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t timestamp_ms; /* the record's; -1: none */
  const void *key;      /* NULL: none */
  size_t key_len;
  const void *value; /* NULL: none (a tombstone) */
  size_t value_len;
  const void *headers;
  size_t headers_len;
  const void *event_id; /* NULL: none */
  size_t event_id_len;
  const char *reason;
  uint32_t attempts;
  int64_t parked_at_ms; /* wall clock */
} store_parked_t;

/* Which parked records: topic NULL for every topic, partition -1 for
 * every partition, offset -1 for every offset. */
typedef struct store_parked_filter {
  const char *topic;
  int32_t partition;
  int64_t offset;
} store_parked_filter_t;

typedef struct store_stats {
  size_t ids;         /* event IDs remembered (committed or claimed) */
  int64_t pruned;     /* marks removed by pruning since open */
  int64_t prune_runs; /* prunes completed since open */
} store_stats_t;

/* A scanned key and its value, borrowed for the call. */
typedef int (*store_state_fn)(void *arg, const void *key, size_t klen,
                              const void *val, size_t vlen);

/* The operations of one implementation. The table only grows: new
 * entries go at the end. Every err names the store (file, server) and the
 * implementation's own message. */
typedef struct store_ops {
  const char *name; /* "sqlite", "memory" */
  /* Free everything. Batches must be closed first. */
  void (*close)(store_t *s);
  /* The scope id of a pipeline name (created on first use). */
  int (*scope)(store_t *s, const char *pipeline, uint32_t *scope, char *err,
               size_t errlen);
  /* STORE_NEW, STORE_SEEN or STORE_IN_FLIGHT; mode: STORE_CLAIM*. */
  int (*claim)(store_t *s, uint32_t scope, const store_key_t *k, int mode,
               int64_t before_ms);
  /* Give back a claim whose mark will never be committed. */
  void (*release)(store_t *s, uint32_t scope, const store_key_t *k);
  /* A batch of the caller's thread (its own connection, where there is
   * one), and its end (entries still buffered are dropped). */
  int (*batch_open)(store_t *s, store_batch_t **out, char *err, size_t errlen);
  void (*batch_close)(store_batch_t *b);
  /* Buffer a mark (copied) for the next commit. */
  int (*batch_add_mark)(store_batch_t *b, const store_mark_t *m);
  /* Everything buffered, in one transaction. On failure nothing is
   * written, the entries stay buffered (commit may be retried), and
   * *transient says whether the fault may clear by itself. */
  int (*batch_commit)(store_batch_t *b, int *transient, char *err,
                      size_t errlen);
  /* Drop what is buffered (its claims must be released). */
  void (*batch_discard)(store_batch_t *b);
  /* Forget marks handled before now_ms - retention. */
  int (*prune)(store_t *s, int64_t now_ms, int64_t *removed, char *err,
               size_t errlen);
  /* The replayed ranges of one partition, newest first; *out is malloc'd
   * (NULL when *n is 0). */
  int (*replay_ranges)(store_t *s, uint32_t scope, const char *topic,
                       int32_t partition, store_range_t **out, size_t *n,
                       char *err, size_t errlen);
  /* Crash attempts: *count gets the calls recorded for a->event_id by this
   * or an earlier process; returns 1 when the next call of this record
   * must be recorded before it is made (calls are recorded, or the
   * process before this one stopped uncleanly and fewer than budget first
   * calls of a->partition were counted since), else 0. */
  int (*attempts)(store_t *s, const store_attempt_t *a, uint32_t budget,
                  uint32_t *count);
  /* Record a->attempts durably before the call (0: the call returned an
   * outcome; forget the record's calls), in a transaction of its own on
   * the batch's connection; what the batch buffers is not written. */
  int (*attempts_set)(store_batch_t *b, const store_attempt_t *a, char *err,
                      size_t errlen);
  void (*stats)(store_t *s, store_stats_t *out);
  /* 1 when the store was created (or found empty) at open and this is
   * the first call for scope: the caller checks once whether the pipeline
   * already has a history elsewhere (committed offsets) that the store
   * lacks. 0 otherwise. */
  int (*history_check_due)(store_t *s, uint32_t scope);
  /* Plugin state (store_state_*() below): buffer a put or a delete of one
   * key for the next commit, in the order made (copied). */
  int (*batch_put_state)(store_batch_t *b, uint32_t scope, const void *key,
                         size_t klen, const void *val, size_t vlen);
  int (*batch_del_state)(store_batch_t *b, uint32_t scope, const void *key,
                         size_t klen);
  /* Buffer the next offset of a partition the batch covered. */
  int (*batch_set_offset)(store_batch_t *b, uint32_t scope, const char *topic,
                          int32_t partition, int64_t next);
  /* 1 and *val (malloc'd, caller frees; NULL when vlen is 0) when the key
   * has a durable value, 0 when not, -1 on error. */
  int (*state_get)(store_t *s, uint32_t scope, const void *key, size_t klen,
                   void **val, size_t *vlen, char *err, size_t errlen);
  /* Every durable key starting with prefix, in byte order, until fn
   * returns non-zero (that value is returned). */
  int (*state_scan)(store_t *s, uint32_t scope, const void *prefix, size_t plen,
                    store_state_fn fn, void *arg, char *err, size_t errlen);
  /* Forget every key of scope (`khost state reset`); *removed may be
   * NULL. */
  int (*state_reset)(store_t *s, uint32_t scope, int64_t *removed, char *err,
                     size_t errlen);
  /* 1 and *next when the partition has a stored offset, 0 when not, -1 on
   * error. */
  int (*offset_get)(store_t *s, uint32_t scope, const char *topic,
                    int32_t partition, int64_t *next, char *err, size_t errlen);
  /* Buffer a parked record (copied) for the next commit: one per record
   * (topic, partition, offset), a later one replaces it. NULL: the store
   * has no parking lot. */
  int (*batch_park)(store_batch_t *b, const store_parked_t *p);
  /* The IDs the caller will claim next (STORE_CLAIM, in this order), of
   * records of one partition at offsets[i]: a store with a round trip
   * per claim takes them in one, and answers their store_claim() and
   * store_attempts() from what it found. NULL where claims are cheap. */
  void (*claim_ahead)(store_t *s, uint32_t scope, const char *topic,
                      int32_t partition, const void *const *ids,
                      const size_t *lens, const int64_t *offsets, size_t n);
  /* 0 while the claim of key taken ahead (claim_ahead) is still on its
   * way: store_claim() would wait for it. NULL: never. */
  int (*claim_ready)(store_t *s, uint32_t scope, const store_key_t *key);
  /* The caller no longer owns the partition (revoked, lost, closing):
   * the claims taken ahead of its records and never asked for go back at
   * once. NULL where there are none. */
  void (*part_dropped)(store_t *s, uint32_t scope, const char *topic,
                       int32_t partition);
  /* A claim of the ID of hash (store_key_t's) is coming soon: start
   * fetching what it will read from memory. Only a hint. NULL where
   * there is nothing worth fetching early. */
  void (*prefetch)(store_t *s, uint64_t hash);
  /* The parked records of scope that pass f, by topic, partition and
   * offset: *out is an array of copies (store_parked_list_free()). */
  int (*parked_list)(store_t *s, uint32_t scope, const store_parked_filter_t *f,
                     store_parked_t ***out, size_t *n, char *err,
                     size_t errlen);
  /* Remove one parked record now, in a transaction of its own (*removed:
   * 0 when it was not there). */
  int (*parked_remove)(store_t *s, const store_parked_t *p, int *removed,
                       char *err, size_t errlen);
  /* Buffer the removal of a parked record (p's scope, topic, partition,
   * offset) for the next commit: a replayed record leaves the lot in the
   * transaction of its mark and its state writes. */
  int (*batch_unpark)(store_batch_t *b, const store_parked_t *p);
  /* claim with STORE_CLAIM, and when it answers STORE_NEW *ref is a
   * reference to the claim (else NULL) for the ID's mark (store_mark_t's
   * claim_ref): the store then finds what the claim took without looking
   * it up again when the mark commits. Valid until that mark is committed
   * or the claim released. NULL: claim. */
  int (*claim_ref)(store_t *s, uint32_t scope, const store_key_t *k,
                   void **ref);
} store_ops_t;

/* Implementations embed these first. */
struct store {
  const store_ops_t *ops;
};
struct store_batch {
  store_t *store;
  size_t pending; /* entries buffered since the last commit or discard */
};

static inline void store_close(store_t *s) {
  if (s)
    s->ops->close(s);
}
static inline int store_scope(store_t *s, const char *pipeline, uint32_t *scope,
                              char *err, size_t errlen) {
  return s->ops->scope(s, pipeline, scope, err, errlen);
}
static inline int store_claim(store_t *s, uint32_t scope, const store_key_t *k,
                              int mode, int64_t before_ms) {
  return s->ops->claim(s, scope, k, mode, before_ms);
}
/* store_claim(), and for mode STORE_CLAIM a reference to a new claim in
 * *ref where the store gives one (claim_ref above); else *ref is NULL. */
static inline int store_claim_ref(store_t *s, uint32_t scope,
                                  const store_key_t *k, int mode,
                                  int64_t before_ms, void **ref) {
  *ref = NULL;
  if (mode == STORE_CLAIM && s->ops->claim_ref)
    return s->ops->claim_ref(s, scope, k, ref);
  return s->ops->claim(s, scope, k, mode, before_ms);
}
static inline void store_release(store_t *s, uint32_t scope,
                                 const store_key_t *k) {
  s->ops->release(s, scope, k);
}
static inline int store_batch_open(store_t *s, store_batch_t **out, char *err,
                                   size_t errlen) {
  return s->ops->batch_open(s, out, err, errlen);
}
static inline void store_batch_close(store_batch_t *b) {
  if (b)
    b->store->ops->batch_close(b);
}
static inline int store_batch_add_mark(store_batch_t *b,
                                       const store_mark_t *m) {
  int rc = b->store->ops->batch_add_mark(b, m);
  if (rc == 0)
    b->pending++;
  return rc;
}
static inline size_t store_batch_pending(const store_batch_t *b) {
  return b->pending;
}
static inline int store_batch_commit(store_batch_t *b, int *transient,
                                     char *err, size_t errlen) {
  int rc = b->store->ops->batch_commit(b, transient, err, errlen);
  if (rc == 0)
    b->pending = 0;
  return rc;
}
static inline void store_batch_discard(store_batch_t *b) {
  b->store->ops->batch_discard(b);
  b->pending = 0;
}
static inline int store_prune(store_t *s, int64_t now_ms, int64_t *removed,
                              char *err, size_t errlen) {
  return s->ops->prune(s, now_ms, removed, err, errlen);
}
static inline int store_replay_ranges(store_t *s, uint32_t scope,
                                      const char *topic, int32_t partition,
                                      store_range_t **out, size_t *n, char *err,
                                      size_t errlen) {
  return s->ops->replay_ranges(s, scope, topic, partition, out, n, err, errlen);
}
static inline int store_attempts(store_t *s, const store_attempt_t *a,
                                 uint32_t budget, uint32_t *count) {
  return s->ops->attempts(s, a, budget, count);
}
static inline int store_attempts_set(store_batch_t *b, const store_attempt_t *a,
                                     char *err, size_t errlen) {
  return b->store->ops->attempts_set(b, a, err, errlen);
}
static inline void store_stats(store_t *s, store_stats_t *out) {
  s->ops->stats(s, out);
}
/* 1 when the store keeps plugin state (every store here does). */
static inline int store_has_state(const store_t *s) {
  return s->ops->batch_put_state != NULL && s->ops->state_get != NULL;
}
static inline int store_history_check_due(store_t *s, uint32_t scope) {
  return s->ops->history_check_due(s, scope);
}

static inline int store_batch_put_state(store_batch_t *b, uint32_t scope,
                                        const void *key, size_t klen,
                                        const void *val, size_t vlen) {
  int rc = b->store->ops->batch_put_state(b, scope, key, klen, val, vlen);
  if (rc == 0)
    b->pending++;
  return rc;
}
static inline int store_batch_del_state(store_batch_t *b, uint32_t scope,
                                        const void *key, size_t klen) {
  int rc = b->store->ops->batch_del_state(b, scope, key, klen);
  if (rc == 0)
    b->pending++;
  return rc;
}
static inline int store_batch_set_offset(store_batch_t *b, uint32_t scope,
                                         const char *topic, int32_t partition,
                                         int64_t next) {
  /* A store without stored offsets: the Kafka commit alone says where a
   * member starts. */
  if (!b->store->ops->batch_set_offset)
    return 0;
  int rc = b->store->ops->batch_set_offset(b, scope, topic, partition, next);
  if (rc == 0)
    b->pending++;
  return rc;
}
static inline int store_state_get(store_t *s, uint32_t scope, const void *key,
                                  size_t klen, void **val, size_t *vlen,
                                  char *err, size_t errlen) {
  if (!s->ops->state_get) {
    snprintf(err, errlen, "the %s store keeps no plugin state yet",
             s->ops->name);
    return -1;
  }
  return s->ops->state_get(s, scope, key, klen, val, vlen, err, errlen);
}
static inline int store_state_scan(store_t *s, uint32_t scope,
                                   const void *prefix, size_t plen,
                                   store_state_fn fn, void *arg, char *err,
                                   size_t errlen) {
  if (!s->ops->state_scan) {
    snprintf(err, errlen, "the %s store keeps no plugin state yet",
             s->ops->name);
    return -1;
  }
  return s->ops->state_scan(s, scope, prefix, plen, fn, arg, err, errlen);
}
static inline int store_state_reset(store_t *s, uint32_t scope,
                                    int64_t *removed, char *err,
                                    size_t errlen) {
  if (!s->ops->state_reset) {
    snprintf(err, errlen, "the %s store keeps no plugin state yet",
             s->ops->name);
    return -1;
  }
  return s->ops->state_reset(s, scope, removed, err, errlen);
}
static inline int store_offset_get(store_t *s, uint32_t scope,
                                   const char *topic, int32_t partition,
                                   int64_t *next, char *err, size_t errlen) {
  if (!s->ops->offset_get)
    return 0;
  return s->ops->offset_get(s, scope, topic, partition, next, err, errlen);
}

/* 1 when the store keeps parked records. */
static inline int store_has_parking(const store_t *s) {
  return s->ops->batch_park != NULL;
}
static inline int store_batch_park(store_batch_t *b, const store_parked_t *p) {
  if (!b->store->ops->batch_park)
    return -1;
  int rc = b->store->ops->batch_park(b, p);
  if (rc == 0)
    b->pending++;
  return rc;
}
static inline int store_batch_unpark(store_batch_t *b,
                                     const store_parked_t *p) {
  if (!b->store->ops->batch_unpark)
    return -1;
  int rc = b->store->ops->batch_unpark(b, p);
  if (rc == 0)
    b->pending++;
  return rc;
}
static inline int store_parked_list(store_t *s, uint32_t scope,
                                    const store_parked_filter_t *f,
                                    store_parked_t ***out, size_t *n, char *err,
                                    size_t errlen) {
  *out = NULL;
  *n = 0;
  if (!s->ops->parked_list) {
    snprintf(err, errlen, "the %s store has no parking lot", s->ops->name);
    return -1;
  }
  return s->ops->parked_list(s, scope, f, out, n, err, errlen);
}
static inline int store_parked_remove(store_t *s, const store_parked_t *p,
                                      int *removed, char *err, size_t errlen) {
  if (!s->ops->parked_remove) {
    snprintf(err, errlen, "the %s store has no parking lot", s->ops->name);
    return -1;
  }
  return s->ops->parked_remove(s, p, removed, err, errlen);
}
/* The end of store_parked_list()'s array (store_parked.c). */
void store_parked_list_free(store_parked_t **v, size_t n);
static inline int store_wants_ahead(const store_t *s) {
  return s->ops->claim_ahead != NULL;
}
static inline void store_claim_ahead(store_t *s, uint32_t scope,
                                     const char *topic, int32_t partition,
                                     const void *const *ids, const size_t *lens,
                                     const int64_t *offsets, size_t n) {
  if (s->ops->claim_ahead && n > 0)
    s->ops->claim_ahead(s, scope, topic, partition, ids, lens, offsets, n);
}
static inline int store_claim_ready(store_t *s, uint32_t scope,
                                    const store_key_t *key) {
  return !s->ops->claim_ready || s->ops->claim_ready(s, scope, key);
}
static inline void store_part_dropped(store_t *s, uint32_t scope,
                                      const char *topic, int32_t partition) {
  if (s->ops->part_dropped)
    s->ops->part_dropped(s, scope, topic, partition);
}

static inline int store_wants_prefetch(const store_t *s) {
  return s->ops->prefetch != NULL;
}
static inline void store_prefetch(store_t *s, uint64_t hash) {
  s->ops->prefetch(s, hash);
}

/* ------------------------------------------------------------------------
 * Implementations. */

/* The SQLite file (dedup.c): opts as dedup_open()'s. */
struct dedup_opts;
int store_sqlite_open(store_t **out, const struct dedup_opts *opts, char *err,
                      size_t errlen);

/* The in-memory fake of the unit tests: nothing survives close. A commit
 * can be made to fail (store_mem_fail_commits()). */
store_t *store_mem_new(void);
/* The next n batch commits fail (transient: 1 or 0); n = 0 stops that. */
void store_mem_fail_commits(store_t *s, int n, int transient);
/* Record a replayed range, as `khost replay` does. */
void store_mem_add_range(store_t *s, uint32_t scope, const char *topic,
                         int32_t partition, const store_range_t *r);
/* Mark the store as left behind by an unclean stop. */
void store_mem_set_unclean(store_t *s, int unclean);
/* The durable parked record of (topic, partition, offset): 1 and *out
 * (borrowed until the store closes or the record is parked again), or 0. */
int store_mem_parked(store_t *s, const char *topic, int32_t partition,
                     int64_t offset, store_parked_t *out);
/* Parked records, durable, in every scope. */
size_t store_mem_parked_count(store_t *s);
/* Distinct hashes given to the store's prefetch, claims whose hash was
 * one of them, and claims whose hash was not id_hash() of their ID. */
void store_mem_lookahead(store_t *s, size_t *prefetched, size_t *claims_ahead,
                         size_t *wrong_hashes);

#endif
