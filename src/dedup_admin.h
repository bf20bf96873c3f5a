/*
 * Dedup administration: what `khost dedup stats|lookup|forget|prune` and
 * `khost replay` do to the dedup database, on a SQLite connection of their
 * own, while a host may be running on the same file.
 *
 * Beside a running host: reads are WAL readers and never block its
 * writers; every write is a short transaction (deletions go in batches of
 * a few thousand rows, found by a read first), and waits for the write
 * lock with a busy timeout. A running host keeps its in-memory set: IDs
 * forgotten or pruned here stay "seen" for it until it restarts.
 *
 * These tools stay SQLite-specific on purpose, beside store.h: they work on
 * the file while no host (and so no store_t) needs to be open, and they
 * reach rows (file sizes, per-pipeline counts, batched deletes) that the
 * store interface of a running host has no reason to offer. A store on
 * another database brings its own administration.
 *
 * Threads: a dadm_t belongs to one thread.
 */
#ifndef KHOST_DEDUP_ADMIN_H
#define KHOST_DEDUP_ADMIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct dadm dadm_t;

/* Open the database at path. create = 0: it must exist (the error says
 * so); create = 1: create it when absent. The schema is brought up to
 * date either way. Errors name the path and SQLite's message. */
int dadm_open(dadm_t **out, const char *path, int create, char *err,
              size_t errlen);
void dadm_close(dadm_t *a);

/* The scope id of a pipeline. *found = 0 (and *scope untouched) when the
 * database has never seen the pipeline, unless create is set. */
int dadm_scope(dadm_t *a, const char *pipeline, int create, uint32_t *scope,
               int *found, char *err, size_t errlen);

typedef struct dadm_stats {
  char *pipeline;
  int64_t marks;
  int64_t oldest_ms, newest_ms; /* handled_at; 0 when there are no marks */
  int64_t replays;              /* replay ranges recorded */
} dadm_stats_t;

/* One entry per pipeline the database knows, by name. Scans the marks
 * (a reader: it does not block a running host). Free with
 * dadm_stats_free(). */
int dadm_stats(dadm_t *a, dadm_stats_t **out, size_t *n, char *err,
               size_t errlen);
void dadm_stats_free(dadm_stats_t *v, size_t n);

/* Bytes of the database file and of its write-ahead log (0 if absent). */
void dadm_file_sizes(const char *path, int64_t *db, int64_t *wal);

typedef struct dadm_mark {
  char *topic;
  int32_t partition;
  int64_t offset;
  int64_t handled_at_ms;
  int outcome; /* DEDUP_OUTCOME_* */
} dadm_mark_t;

/* Every mark of one event ID in one scope, oldest first. The event ID is
 * not indexed (see dedup.c): this scans the scope's log and every
 * segment. */
int dadm_lookup(dadm_t *a, uint32_t scope, const void *id, size_t len,
                dadm_mark_t **out, size_t *n, char *err, size_t errlen);
void dadm_marks_free(dadm_mark_t *v, size_t n);

/* Every mark of a scope (scope < 0: of every scope), those in segments
 * first (seq 0, in key order), then those of the log in the order they
 * were written, with the seq of their row; one read transaction, so no
 * mark is seen twice or missed while a host moves marks into a segment
 * (but a merge's inputs and output may both be seen). m and what it
 * points to are valid only during the call (m->topic is not
 * NUL-terminated: m->topic_len). fn returns 0, or -1 to stop with an
 * error. */
struct dlog_mark;
typedef int (*dadm_mark_fn)(void *arg, int64_t seq, uint32_t scope,
                            const struct dlog_mark *m);
int dadm_each_mark(dadm_t *a, int64_t scope, dadm_mark_fn fn, void *arg,
                   char *err, size_t errlen);

/* Delete the marks of one event ID in a scope (dry_run: only count them);
 * *removed gets the count. */
int dadm_forget_id(dadm_t *a, uint32_t scope, const void *id, size_t len,
                   int dry_run, int64_t *removed, char *err, size_t errlen);
/* Delete every mark and replay range of a scope (dry_run: count marks). */
int dadm_forget_scope(dadm_t *a, uint32_t scope, int dry_run, int64_t *removed,
                      char *err, size_t errlen);
/* Delete the batches of marks whose newest mark was handled before
 * cutoff_ms (a batch goes whole), the segments likewise, and the replay
 * ranges recorded before cutoff_ms. */
int dadm_prune(dadm_t *a, int64_t cutoff_ms, int64_t *removed, char *err,
               size_t errlen);

/* A write transaction around dadm_replay_add() calls, so that the ranges
 * of one replay land together (or not at all). Keep it short: it holds
 * the database's write lock. */
int dadm_begin(dadm_t *a, char *err, size_t errlen);
int dadm_commit(dadm_t *a, char *err, size_t errlen);
void dadm_rollback(dadm_t *a);
/* As dedup_replay_add(), inside dadm_begin() .. dadm_commit(). */
int dadm_replay_add(dadm_t *a, uint32_t scope, const char *topic,
                    int32_t partition, int64_t from, int64_t to, int mode,
                    char *err, size_t errlen);

#endif
