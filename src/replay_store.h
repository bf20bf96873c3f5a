/*
 * Where `khost replay` records what it did (replay.c): the replayed
 * ranges, and the pipeline's stored offsets, in the store the config
 * names, together with the Kafka commit: the SQLite file (through
 * dedup_admin.h: a host of another pipeline may have it open) or the
 * PostgreSQL store shared by every host (through store_pg_admin.h).
 *
 * Functions return HOST_EXIT_OK, HOST_EXIT_RUNTIME with err, or what the
 * apply callback returned.
 */
#ifndef KHOST_REPLAY_STORE_H
#define KHOST_REPLAY_STORE_H

#include <stddef.h>

#include "config.h"
#include "replay.h"

typedef struct replay_write {
  const cfg_t *cfg;
  const cfg_pipeline_t *pc;
  const replay_part_t *parts;
  size_t n;
  int mode;      /* DEDUP_REPLAY_* */
  int own_group; /* the offsets of the pipeline's own group move */
  /* The Kafka commit, made while the store's transaction is open: 0, or
   * non-zero with err (nothing is recorded then). */
  int (*apply)(void *arg, char *err, size_t errlen);
  void *arg;
} replay_write_t;

/* Record the ranges of w->parts (each [target, handled_before), where
 * records come again) and, on PostgreSQL for the pipeline's own group,
 * set the partitions' stored offsets to their targets; w->apply() in the
 * same transaction. On PostgreSQL the pipeline's live claims (a host
 * handling its records) refuse the replay first, for its own group.
 * When the apply succeeded but the store's commit failed, err says that
 * the offsets moved. */
int replay_store_write(const replay_write_t *w, char *err, size_t errlen);

/* The store as the notes name it (g_free). */
char *replay_store_where(const cfg_t *cfg);

#endif
