/*
 * Dedup store: which event IDs each pipeline has already handled.
 *
 * The durable part is an append-only SQLite table (WAL): the write path only
 * appends rows in rowid order, one transaction per batch. The exact "seen?"
 * answer comes from an in-memory set of every ID inside the retention
 * window, rebuilt from that table at open. No random B-tree write per record.
 *
 * Members do not use it directly: store_sqlite.c puts it behind store.h,
 * the interface members and the flow core use. The admin tools
 * (dedup_admin.h) and the benchmark use it, and the lower-level calls
 * below, on SQLite terms.
 *
 * Threads: dedup_store_t is shared by all members and is thread-safe.
 * A dedup_writer_t (its own SQLite connection) belongs to one thread.
 *
 * Claims: dedup_claim() answers "seen?" and, when the ID is new, reserves it
 * at once so that a second copy of the same ID (same batch, or another
 * member) is not handled twice. The claimant must then either add a mark
 * for it and commit it, or dedup_release() it (batch abandoned, partition
 * lost). Until one of them happened, the ID is in flight (DEDUP_IN_FLIGHT),
 * not seen: a second copy may be skipped only where skipping becomes
 * durable together with the claimant's mark (the same batch), and must
 * otherwise wait for the claim to end.
 */
#ifndef KHOST_DEDUP_H
#define KHOST_DEDUP_H

#include <stddef.h>
#include <stdint.h>

typedef struct dedup_store dedup_store_t;
typedef struct dedup_writer dedup_writer_t;

typedef struct dedup_opts {
  const char *path;          /* database file; created when absent */
  int64_t retention_ms;      /* marks older than this are forgotten;
                                0 or less: remembered forever */
  int durability_full;       /* 1: synchronous=FULL, 0: NORMAL */
  int64_t prune_interval_ms; /* background prune period; 0 = no thread */
  int busy_timeout_ms;       /* how long a writer waits for the write lock
                                before reporting busy; 0 = 10 s */
  size_t memory_ids;         /* IDs the in-memory set may hold before a
                                background thread moves the committed
                                ones to a segment on disk; 0: never */
  uint64_t merge_max_ids;    /* no merge makes a segment of more IDs
                                (dedup_segs.h); 0: DSEGS_MERGE_MAX_IDS */
} dedup_opts_t;

/* Outcome recorded with a mark. */
enum { DEDUP_OUTCOME_OK = 0, DEDUP_OUTCOME_FAIL = 1 };

typedef struct dedup_mark {
  uint32_t scope; /* from dedup_scope() */
  const void *event_id;
  size_t event_id_len;
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t handled_at_ms; /* wall clock, ms since the epoch */
  int outcome;           /* DEDUP_OUTCOME_* */
  uint64_t id_hash;      /* id_hash() of (scope, event_id); 0: not known */
  void *claim_ref; /* dedup_claim_ref()'s for this ID, or NULL: the mark at
                      commit then needs no look-up */
} dedup_mark_t;

/* What a claim found (dedup_claim()). */
enum {
  DEDUP_SEEN = 0,     /* a durable mark: handled before */
  DEDUP_NEW = 1,      /* claimed by the caller */
  DEDUP_IN_FLIGHT = 2 /* claimed by someone whose mark is not durable yet */
};

/* Open (create, with mode 0600) the database, load the in-memory set from
 * marks inside the retention window, start the pruner thread (it prunes at
 * once, then every prune_interval_ms) and, when there are segments, the
 * thread that loads their filters and indexes (dedup_segs.h: lookups stay
 * exact meanwhile). A database, -wal or -shm file (or
 * their directory) this process may not write is refused before SQLite
 * touches it, naming that file. Errors name the path and SQLite's
 * message. */
int dedup_open(dedup_store_t **out, const dedup_opts_t *opts, char *err,
               size_t errlen);
/* Stop the pruner and free everything. Writers must be closed first. */
void dedup_close(dedup_store_t *s);

/* The scope id of a pipeline name (created on first use). */
int dedup_scope(dedup_store_t *s, const char *pipeline, uint32_t *scope,
                char *err, size_t errlen);

/* DEDUP_NEW (claimed), DEDUP_SEEN or DEDUP_IN_FLIGHT. */
int dedup_claim(dedup_store_t *s, uint32_t scope, const void *id, size_t len);
/* Like dedup_claim(), but an ID whose mark is committed (seen) is claimed
 * again: DEDUP_NEW unless another re-claim holds it (DEDUP_SEEN) or it is
 * claimed and not committed (DEDUP_IN_FLIGHT). A later dedup_release() of
 * such a re-claim leaves the ID seen.
 * An ID marked since the store was opened was handled again in this run
 * already (a replayed event published twice, a redelivery): DEDUP_SEEN,
 * so that a replay handles each event again once. */
int dedup_claim_again(dedup_store_t *s, uint32_t scope, const void *id,
                      size_t len);
/* dedup_claim_again() with another limit: only an ID whose newest mark was
 * handled before before_ms is claimed again. With a range's recorded_ms,
 * an event is handled again once per replay, across restarts too. */
int dedup_claim_again_before(dedup_store_t *s, uint32_t scope, const void *id,
                             size_t len, int64_t before_ms);
/* dedup_claim() (again 0) or dedup_claim_again_before() (again 1) with
 * the ID's id_hash() (id_hash.h) from the caller (ID_HASH_NONE: computed
 * here). */
int dedup_claim_h(dedup_store_t *s, uint32_t scope, const void *id, size_t len,
                  uint64_t hash, int again, int64_t before_ms);
/* dedup_claim_h() with again 0; when it answers DEDUP_NEW, *ref is a
 * reference to the claim (else NULL) for the ID's mark (dedup_mark_t's
 * claim_ref), valid until that mark is committed or the claim released. */
int dedup_claim_ref(dedup_store_t *s, uint32_t scope, const void *id,
                    size_t len, uint64_t hash, void **ref);
/* A claim of the ID of id_hash() hash is coming (a record or more
 * later): start fetching what it will read from memory (the segments'
 * filter lines). Nothing else; any thread. */
void dedup_prefetch(dedup_store_t *s, uint64_t hash);
/* dedup_release() with the ID's id_hash() (ID_HASH_NONE: computed). */
void dedup_release_h(dedup_store_t *s, uint32_t scope, const void *id,
                     size_t len, uint64_t hash);
/* Give back a claim whose mark will never be committed. An ID whose mark
 * was committed stays seen. */
void dedup_release(dedup_store_t *s, uint32_t scope, const void *id,
                   size_t len);
/* 1 when the database was created (or found empty) at open and this is
 * the first call for scope: the caller checks once whether the pipeline
 * already has a history elsewhere (committed offsets) that the store
 * lacks. 0 otherwise. */
int dedup_history_check_due(dedup_store_t *s, uint32_t scope);
/* IDs currently remembered (committed or claimed, in memory or in
 * segments). */
size_t dedup_size(dedup_store_t *s);

typedef struct dedup_stats {
  size_t ids;              /* as dedup_size(): in memory and in segments */
  size_t recent_ids;       /* in the in-memory set */
  size_t segments;         /* segments on disk */
  size_t segments_loading; /* of them, those whose filter and index are
                              not loaded yet (a start loads them in the
                              background; lookups read their blocks) */
  size_t segment_memory;   /* bytes their filters and indexes take */
  size_t arena_chunks;     /* memory blocks holding the remembered IDs */
  size_t arena_bytes;      /* their size */
  int64_t pruned;          /* marks removed by pruning since open */
  int64_t prune_runs;      /* dedup_prune() calls completed since open */
} dedup_stats_t;

void dedup_stats(dedup_store_t *s, dedup_stats_t *out);

/* The memory_ids that fit a budget of bytes: the set takes about 56
 * bytes per ID, and writing a segment copies, sorts and packs its IDs
 * (about 140 bytes per UUID more, for the moment it takes). */
size_t dedup_memory_ids(uint64_t bytes);

/* Move every committed mark not yet in a segment into a new segment (one
 * transaction), then forget those IDs in memory; *moved (may be NULL)
 * gets their count. What the segment thread does once the set is over
 * memory_ids; thread-safe. */
int dedup_segment_now(dedup_store_t *s, size_t *moved, char *err,
                      size_t errlen);

/* Merge segments, tier by tier, while DSEGS_MERGE_FANIN (4) of a tier
 * exist and hold merge_max_ids IDs at most together (dedup_segs.h); *merged
 * (may be NULL) gets the merges done. What the segment thread does after each
 * segment; thread-safe. */
int dedup_merge_now(dedup_store_t *s, size_t *merged, char *err, size_t errlen);

/* Remove marks handled before now_ms - retention from disk and memory, in
 * small transactions, and the replay ranges recorded before that time.
 * *removed (may be NULL) gets the count of marks. */
int dedup_prune(dedup_store_t *s, int64_t now_ms, int64_t *removed, char *err,
                size_t errlen);

int dedup_writer_open(dedup_store_t *s, dedup_writer_t **out, char *err,
                      size_t errlen);
/* Marks still buffered are dropped (as by dedup_writer_discard()). */
void dedup_writer_close(dedup_writer_t *w);
/* Buffer a mark (copied) for the next commit. */
int dedup_writer_add(dedup_writer_t *w, const dedup_mark_t *m);
size_t dedup_writer_pending(const dedup_writer_t *w);
/* Write every buffered mark in one transaction; once it is durable the
 * marked IDs read as seen (also those that were never claimed). On failure
 * nothing is written, the marks stay buffered (commit may be retried) and
 * -1 is returned with the path and SQLite's message; *transient (may be
 * NULL) is set to 1 when the failure may clear by itself (busy, locked,
 * disk full, I/O error, read-only file) and 0 when it is permanent.
 * After each transaction the path must still name the file opened: a
 * database deleted or replaced meanwhile is a permanent failure (the
 * transaction went into a file no later start reads; its IDs stay
 * unseen). */
int dedup_writer_commit(dedup_writer_t *w, int *transient, char *err,
                        size_t errlen);
/* Drop buffered marks without writing (their claims must be released). */
void dedup_writer_discard(dedup_writer_t *w);
/* As dedup_writer_commit(), and extra(db, arg) writes the store's other
 * tables (plugin state, stored offsets) on the writer's connection inside
 * the same transaction, after the marks; it returns an SQLite result code.
 * With extra set the transaction runs even when no mark is buffered. */
struct sqlite3;
typedef int (*dedup_writer_extra_fn)(struct sqlite3 *db, void *arg);
int dedup_writer_commit_with(dedup_writer_t *w, dedup_writer_extra_fn extra,
                             void *arg, int *transient, char *err,
                             size_t errlen);

/* Wall clock in ms since the epoch. */
int64_t dedup_now_ms(void);

/* Replay ranges: offsets [from, to) of one partition that `khost replay`
 * put back in front of a pipeline, and what dedup does with them. */
enum { DEDUP_REPLAY_SKIP = 0, DEDUP_REPLAY_REPROCESS = 1 };
typedef struct dedup_range {
  int64_t from, to;    /* [from, to) */
  int mode;            /* DEDUP_REPLAY_* */
  int64_t recorded_ms; /* when the replay was recorded (wall clock) */
} dedup_range_t;
/* Record a replayed range (newest wins where ranges overlap). */
int dedup_replay_add(dedup_store_t *s, uint32_t scope, const char *topic,
                     int32_t partition, int64_t from, int64_t to, int mode,
                     char *err, size_t errlen);
/* The ranges of one partition, newest first; *out is malloc'd (free() it;
 * NULL when *n is 0). Reads with the store's own connection; thread-safe.
 * Ranges recorded before the retention window are not returned (and are
 * pruned with the marks). */
int dedup_replay_ranges(dedup_store_t *s, uint32_t scope, const char *topic,
                        int32_t partition, dedup_range_t **out, size_t *n,
                        char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * The same database seen from a connection of the caller's own (the admin
 * tools of dedup_admin.h, which run beside a host). */

/* 4: the parking lot (store_parked.h); 5: the marks in a packed log
 * (dedup_log.h); 6: segments carry their marks; 7: plugin state writes
 * in a log folded into the state table (store_state_log.h) */
#define DEDUP_SCHEMA_VERSION 7

struct sqlite3;
/* Read the schema version into *version; -1 with the path when SQLite
 * fails or the version is newer than DEDUP_SCHEMA_VERSION. */
int dedup_db_version(struct sqlite3 *db, const char *path, int *version,
                     char *err, size_t errlen);
/* Create or upgrade the schema, in one short write transaction. */
int dedup_db_schema(struct sqlite3 *db, const char *path, char *err,
                    size_t errlen);
/* dedup_replay_add() inside the caller's open write transaction, recorded
 * as of now_ms. */
int dedup_db_replay_add(struct sqlite3 *db, const char *path, uint32_t scope,
                        const char *topic, int32_t partition, int64_t from,
                        int64_t to, int mode, int64_t now_ms, char *err,
                        size_t errlen);

/* ------------------------------------------------------------------------
 * Attempts: plugin calls made for a record that has no outcome yet,
 * recorded in the table `attempts` *before* the call, so that a record
 * that kills the process (a plugin crash) is not called again forever:
 * the next process reads how often it was tried. A call that returns an
 * outcome (anything but RETRY) deletes the row again; what is left counts
 * the calls that asked for a retry or never returned. Rows are written
 * only where a crash may be under way (see flow.c): for retries, for
 * records a row exists for, and after an unclean stop for the first calls
 * of every partition. The no-fault path writes nothing.
 *
 * dedup_open() also notes in the table `opened` that the database is in
 * use, and dedup_close() removes the note: a note left behind means the
 * previous process was killed or crashed (an unclean stop).
 */

typedef struct dedup_attempt {
  uint32_t scope;
  const void *event_id;
  size_t event_id_len;
  const char *topic;
  int32_t partition;
  int64_t offset;
  uint32_t attempts; /* calls made for the record, this one included */
} dedup_attempt_t;

/* 1 when the process that used the database before did not close it. */
int dedup_unclean_start(dedup_store_t *s);
/* After an unclean start: 1 while fewer than budget first calls of this
 * partition have been counted since open (this one is counted), so that
 * they are recorded; 0 otherwise, and always after a clean start. */
int dedup_attempts_recovering(dedup_store_t *s, uint32_t scope,
                              const char *topic, int32_t partition,
                              uint32_t budget);
/* Calls recorded for (scope, id), by this or an earlier process, that
 * asked for a retry or never returned; 0 when none. */
uint32_t dedup_attempts_get(dedup_store_t *s, uint32_t scope, const void *id,
                            size_t len);
/* Record a->attempts for the record durably, in a transaction of the
 * writer's connection of its own (marks buffered in w are not written).
 * Errors name the path and SQLite's message. */
int dedup_attempts_put(dedup_writer_t *w, const dedup_attempt_t *a, char *err,
                       size_t errlen);
/* A recorded call returned an outcome: delete the record's row, durably
 * and in memory. */
int dedup_attempts_clear(dedup_writer_t *w, uint32_t scope, const void *id,
                         size_t len, char *err, size_t errlen);
/* The record got an outcome: forget its calls in memory (a row left goes
 * once its mark is durable: dedup_open() deletes rows of marked IDs). */
void dedup_attempts_forget(dedup_store_t *s, uint32_t scope, const void *id,
                           size_t len);

#endif
