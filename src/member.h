/*
 * One consumer-group member (member.c): its own librdkafka consumer,
 * plugin instance and flow core, on its own thread. Its pipeline spawns
 * and joins it; everything the member needs of the pipeline comes in a
 * member_env_t, so that the member knows nothing else of it (the pipeline
 * is above the member, never beside it).
 */
#ifndef KHOST_MEMBER_H
#define KHOST_MEMBER_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "flow.h"
#include "metrics.h"
#include "plugin_loader.h"
#include "store.h"

typedef struct member member_t;

/* What a member gets from its pipeline. Everything outlives the member;
 * the callbacks are called from the member's thread with ctx and no lock
 * of the member held. */
typedef struct member_env {
  const char *pipeline; /* the pipeline's name */
  const cfg_t *cfg;
  const cfg_pipeline_t *pc;
  plugin_t *plugin;
  store_t *store;             /* NULL when the pipeline has dedup off */
  uint32_t scope;             /* the pipeline's, in store */
  breaker_t *breaker;         /* NULL: none */
  flow_counts_t *counts;      /* shared by the pipeline's members */
  _Atomic uint64_t *commits;  /* offset commits sent */
  _Atomic uint64_t *assigned; /* partitions the members own right now */
  int keep_closing_notes;     /* give closing notes to closing_note() */
  metrics_t *metrics;         /* what members count for operators, or NULL */

  void *ctx;
  /* 1 once the member should finish its batch and leave. */
  int (*stopping)(void *ctx);
  /* When the stop was asked for (monotonic ms; 0 or NULL: not known). */
  int64_t (*stop_ms)(void *ctx);
  /* Stop the pipeline and say why (first failure wins). */
  void (*fail)(void *ctx, const char *why);
  /* A librdkafka configuration: the group member's (producer 0) or the
   * dead-letter producer's (producer 1). NULL with err on failure. */
  rd_kafka_conf_t *(*kafka_conf)(void *ctx, int producer, char *err,
                                 size_t errlen);
  /* A partition has been consumed and committed up to next_offset. */
  void (*progress)(void *ctx, const char *topic, int32_t partition,
                   int64_t next_offset);
  /* Partitions just assigned: set their start offsets where wanted. */
  void (*start_offsets)(void *ctx, rd_kafka_topic_partition_list_t *parts);
  /* A notice a plugin instance logged while it closed. */
  void (*closing_note)(void *ctx, const char *line);
  /* Set up and consuming (ok 1), or not (ok 0, after fail()); then, for a
   * member that was set up, once it has left its loop: exited(). */
  void (*started)(void *ctx, int ok);
  void (*exited)(void *ctx);
} member_env_t;

/* Start member index on its thread. env must outlive the member. */
int member_spawn(member_t **out, const member_env_t *env, int index);
void member_join(member_t *m);
/* What handle() of member m is busy with; 0 when idle. */
int member_busy(member_t *m, int64_t *since, const char **topic,
                int32_t *partition, int64_t *offset);
const char *member_who(const member_t *m);

#endif
