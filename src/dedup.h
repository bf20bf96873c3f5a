/*
 * Dedup store: which event IDs each pipeline has already handled.
 *
 * The durable part is an append-only SQLite table (WAL): the write path only
 * appends rows in rowid order, one transaction per batch. The exact "seen?"
 * answer comes from an in-memory set of every ID inside the retention
 * window, rebuilt from that table at open. No random B-tree write per record.
 *
 * This is the one interface members use; a shared (multi-host) store can be
 * put behind it later without touching members or plugins.
 *
 * Threads: dedup_store_t is shared by all members and is thread-safe.
 * A dedup_writer_t (its own SQLite connection) belongs to one thread.
 *
 * Claims: dedup_claim() answers "seen?" and, when the ID is new, reserves it
 * at once so that a second copy of the same ID (same batch, or another
 * member) is treated as a duplicate. The claimant must then either add a
 * mark for it and commit it, or dedup_release() it (batch abandoned).
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
} dedup_mark_t;

enum { DEDUP_SEEN = 0, DEDUP_NEW = 1 };

/* Open (create) the database, load the in-memory set from marks inside the
 * retention window, start the pruner thread (it prunes at once, then every
 * prune_interval_ms). Errors name the path and SQLite's message. */
int dedup_open(dedup_store_t **out, const dedup_opts_t *opts, char *err,
               size_t errlen);
/* Stop the pruner and free everything. Writers must be closed first. */
void dedup_close(dedup_store_t *s);

/* The scope id of a pipeline name (created on first use). */
int dedup_scope(dedup_store_t *s, const char *pipeline, uint32_t *scope,
                char *err, size_t errlen);

/* DEDUP_NEW (claimed) or DEDUP_SEEN. */
int dedup_claim(dedup_store_t *s, uint32_t scope, const void *id, size_t len);
/* Give back a claim whose mark will never be committed. An ID whose mark
 * was committed stays seen. */
void dedup_release(dedup_store_t *s, uint32_t scope, const void *id,
                   size_t len);
/* IDs currently remembered (committed or claimed). */
size_t dedup_size(dedup_store_t *s);

typedef struct dedup_stats {
  size_t ids;          /* as dedup_size() */
  size_t arena_chunks; /* memory blocks holding the remembered IDs */
  size_t arena_bytes;  /* their size */
  int64_t pruned;      /* marks removed by pruning since open */
  int64_t prune_runs;  /* dedup_prune() calls completed since open */
} dedup_stats_t;

void dedup_stats(dedup_store_t *s, dedup_stats_t *out);

/* Remove marks handled before now_ms - retention from disk and memory, in
 * small transactions. *removed (may be NULL) gets the count. */
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
 * disk full, I/O error, read-only file) and 0 when it is permanent. */
int dedup_writer_commit(dedup_writer_t *w, int *transient, char *err,
                        size_t errlen);
/* Drop buffered marks without writing (their claims must be released). */
void dedup_writer_discard(dedup_writer_t *w);

/* Wall clock in ms since the epoch. */
int64_t dedup_now_ms(void);

#endif
