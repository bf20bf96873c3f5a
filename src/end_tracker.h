/*
 * --exit-at-end: the end offset each partition of a pipeline's topics had
 * when the pipeline started, and which partitions have been consumed and
 * committed up to it, by this process's members (end_tracker_progress())
 * or, when other hosts share the group, by whoever owns the partition: a
 * watch reads the group's committed offsets once a second.
 *
 * Threads: progress may be reported from any thread; the watch runs on a
 * thread of its own.
 */
#ifndef KHOST_END_TRACKER_H
#define KHOST_END_TRACKER_H

#include <stddef.h>
#include <stdint.h>

#include "kafka_client.h"

typedef struct end_tracker end_tracker_t;

/* What the tracker calls back into (its pipeline). */
typedef struct end_tracker_hooks {
  /* Every partition reached its end: called once, without a lock of the
   * tracker held, by the thread that saw the last one. */
  void (*at_end)(void *ctx, int partitions);
  /* Sleep up to ms; 1 once the pipeline stops, which ends the watch. */
  int (*sleep)(void *ctx, int64_t ms);
  void *ctx;
} end_tracker_hooks_t;

/* Read the end offset of every partition of ks->pc's topics (a pattern's
 * matches as they are now); logs go under who. Returns 0, or -1 with err
 * set when the cluster cannot say. */
int end_tracker_open(end_tracker_t **out, const kafka_settings_t *ks,
                     const char *who, const end_tracker_hooks_t *hooks,
                     char *err, size_t errlen);
/* How many partitions there are to consume (0: nothing to do). */
int end_tracker_total(const end_tracker_t *t);
/* Start the watch of the group's committed offsets (ks->pc's group). */
int end_tracker_watch_group(end_tracker_t *t, char *err, size_t errlen);
/* This process has consumed and committed the partition up to
 * next_offset. */
void end_tracker_progress(end_tracker_t *t, const char *topic,
                          int32_t partition, int64_t next_offset);
/* Records still to go: for every partition not at its end yet, its end
 * offset minus the next offset known to be consumed (the log start
 * before any progress, so this may count records consumed by an earlier
 * run until the partition's first progress). */
int64_t end_tracker_left(end_tracker_t *t);
/* 1 once every partition has reached its end. */
int end_tracker_reached(end_tracker_t *t);
/* Join the watch (its hooks' sleep must return 1 by now) and free. */
void end_tracker_close(end_tracker_t *t);

#endif
