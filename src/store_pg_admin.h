/*
 * Administration of the PostgreSQL store: what `khost dedup` and `khost
 * state` do to it, with the shapes of dedup_admin.h, on the store's own
 * connection. Beside running hosts: every delete is a run of short
 * transactions, and what is forgotten or pruned is forgotten by every
 * host at once (they keep no copy of the marks).
 *
 * Threads: as the store (store_pg.h).
 */
#ifndef KHOST_STORE_PG_ADMIN_H
#define KHOST_STORE_PG_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "dedup_admin.h"
#include "store.h"

/* The scope of a pipeline, created never: *found = 0 when the store has
 * never seen it. */
int store_pg_find_scope(store_t *s, const char *pipeline, uint32_t *scope,
                        int *found, char *err, size_t errlen);

/* One entry per pipeline the store knows, by name (dadm_stats_free()). */
int store_pg_dedup_stats(store_t *s, dadm_stats_t **out, size_t *n, char *err,
                         size_t errlen);

/* The mark of one event ID (at most one: the newest handling), as an array
 * for dadm_marks_free(). */
int store_pg_lookup(store_t *s, uint32_t scope, const void *id, size_t len,
                    dadm_mark_t **out, size_t *n, char *err, size_t errlen);

/* As dadm_forget_id(), dadm_forget_scope() and dadm_prune(). */
int store_pg_forget_id(store_t *s, uint32_t scope, const void *id, size_t len,
                       int dry_run, int64_t *removed, char *err, size_t errlen);
int store_pg_forget_scope(store_t *s, uint32_t scope, int dry_run,
                          int64_t *removed, char *err, size_t errlen);
int store_pg_prune_before(store_t *s, int64_t cutoff_ms, int64_t *removed,
                          char *err, size_t errlen);

/* Keys of a scope's plugin state and their bytes (keys + values). */
int store_pg_state_stats(store_t *s, uint32_t scope, int64_t *keys,
                         int64_t *bytes, char *err, size_t errlen);

/* `khost replay` (replay.c): per partition the range [from, to) put back
 * in front of the pipeline (none when from >= to) and, with
 * move_offsets, its stored offset set to from. */
typedef struct store_pg_replay {
  const char *topic;
  int32_t partition;
  int64_t from, to;
} store_pg_replay_t;

typedef struct store_pg_replay_rec {
  uint32_t scope;
  const store_pg_replay_t *parts;
  size_t n;
  int mode;         /* STORE_REPLAY_* */
  int move_offsets; /* the pipeline's own group moves: its stored ones too */
  /* The Kafka commit, inside the transaction: 0, or non-zero with err
   * (the transaction is then rolled back). */
  int (*apply)(void *arg, char *err, size_t errlen);
  void *arg;
} store_pg_replay_rec_t;

/* The ranges and stored offsets of r, then r->apply(), in one
 * transaction: all of it or nothing. 0, or -1 with err and *applied:
 * -1 when the store failed before the apply, the apply's non-zero result
 * when it failed, 0 when it succeeded but the commit did not (the Kafka
 * offsets moved, nothing else). */
int store_pg_replay_record(store_t *s, const store_pg_replay_rec_t *r,
                           int *applied, char *err, size_t errlen);

/* Live claims in scope (a host is handling the pipeline's records now):
 * their number, and their owners (host/pid/tag, comma-separated;
 * g_free). Expired claims (an owner that died) do not count. */
int store_pg_live_claims(store_t *s, uint32_t scope, int64_t *claims,
                         char **owners, char *err, size_t errlen);

#endif
