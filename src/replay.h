/*
 * `khost replay`: move a pipeline's committed group offsets back (or
 * forward) to a chosen position, so that the next `khost run` processes
 * the records from there, and record in the dedup store what dedup does
 * with the records that come again.
 *
 *   replay_plan()   resolve the position of every selected partition
 *                   (reads only; --dry-run stops here)
 *   replay_apply()  refuse while the group has active members, then
 *                   commit the new offsets and record the replayed ranges
 *
 * Active members: a broker that answers DescribeGroups says so (the
 * replay is refused without touching the group). The new offsets are
 * committed with the admin API (AlterConsumerGroupOffsets), without
 * joining, as kafka-consumer-groups --reset-offsets does. A broker that
 * refuses that (UNKNOWN_MEMBER_ID: librdkafka's mock cluster, for a
 * group it has seen) gets them from this replay as the group's only
 * member: when the group gives it fewer than all partitions of the
 * topics, someone else is a member and the replay is refused, having
 * changed nothing. (The mock cluster answers no DescribeGroups.) Joining
 * a group that has members makes them rebalance once.
 *
 * The replayed range of a partition is [new offset, the offset the
 * pipeline's own group had committed): the records consumed before that
 * come again. With `--dedup skip` their event IDs already handled are
 * skipped; with `--dedup reprocess` they are handled again. Either way
 * the plugin sees KHOST_RECORD_REPLAY on them.
 *
 * Functions return HOST_EXIT_OK, HOST_EXIT_CONFIG (bad input: nothing
 * changed) or HOST_EXIT_RUNTIME (Kafka or the store failed, or the group
 * has active members), with err set.
 */
#ifndef KHOST_REPLAY_H
#define KHOST_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

typedef enum {
  REPLAY_FROM_EARLIEST,
  REPLAY_FROM_LATEST,
  REPLAY_FROM_TIME,   /* value: ms since the epoch */
  REPLAY_FROM_OFFSET, /* value: the offset */
  REPLAY_FROM_SHIFT   /* value: added to the committed offset */
} replay_from_kind_t;

typedef struct replay_from {
  replay_from_kind_t kind;
  int64_t value;
} replay_from_t;

/* Parse --from: "earliest", "latest", an offset (digits), an ISO-8601
 * time with a timezone ("2026-03-01T08:00:00Z", "...+09:00", optional
 * fractional seconds), or a time before now_ms ("-1h", "-30m", "-2d":
 * a minus and a duration with its unit). A time after now_ms is refused.
 * 0 or -1 with err. */
int replay_parse_from(const char *s, int64_t now_ms, replay_from_t *out,
                      char *err, size_t errlen);
/* Parse --shift-by: a signed number of offsets (REPLAY_FROM_SHIFT). */
int replay_parse_shift(const char *s, replay_from_t *out, char *err,
                       size_t errlen);

typedef struct replay_opts {
  const char *pipeline;    /* a pipeline name of the config */
  const char *topic;       /* NULL: every topic of the pipeline */
  int32_t partition;       /* -1: every partition of the topic(s) */
  const char *from;        /* as replay_parse_from() takes it */
  const char *group;       /* NULL: the pipeline's group_id */
  int dedup_mode;          /* DEDUP_REPLAY_* */
  int64_t join_timeout_ms; /* joining the group; 0: 60 s */
  /* --shift-by N instead of from: each partition's committed offset
   * moved by N, kept within the log's start and end. */
  const char *shift_by;
} replay_opts_t;

typedef struct replay_part {
  char *topic;
  int32_t partition;
  int64_t start, end;     /* the log's offsets */
  int64_t committed;      /* the group's, OFFS_NONE when it has none */
  int64_t handled_before; /* the pipeline's own group's committed offset
                             (OFFS_NONE: none): records before it were
                             handled */
  int64_t target;         /* the new committed offset */
} replay_part_t;

typedef struct replay_plan replay_plan_t;

/* Check the input against the config and the cluster and resolve the new
 * offsets. Nothing is changed. *out is NULL on failure. */
int replay_plan(replay_plan_t **out, const cfg_t *cfg, const replay_opts_t *o,
                char *err, size_t errlen);
void replay_free(replay_plan_t *p);

/* The pipeline and the group whose offsets the plan moves. */
const cfg_pipeline_t *replay_pipeline(const replay_plan_t *p);
const char *replay_group(const replay_plan_t *p);
size_t replay_part_count(const replay_plan_t *p);
const replay_part_t *replay_part(const replay_plan_t *p, size_t i);
/* Records of the partition the group consumed before that come again. */
int64_t replay_part_replayed(const replay_plan_t *p, const replay_part_t *rp);

/* Refuse while the group has members, else commit the new offsets and
 * record the replayed ranges (one transaction of the store around the
 * Kafka commit: both happen or neither; replay_store.h). Notes for the user go
 * to `notes`. On failure nothing has changed, unless err says that the offsets
 * are committed (the ranges could then not be recorded). */
int replay_apply(replay_plan_t *p, FILE *notes, char *err, size_t errlen);

#endif
