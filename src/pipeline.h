/*
 * A pipeline: one consumer group (cfg_pipeline_t) run by `members` member
 * threads, each with its own librdkafka consumer and plugin instance.
 *
 * The struct belongs to pipeline.c (lifecycle, end-of-log progress, the
 * members' start and exit); members see only the member_env_t it hands
 * them (member.h).
 */
#ifndef KHOST_PIPELINE_H
#define KHOST_PIPELINE_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "end_tracker.h"
#include "flow.h"
#include "kafka_client.h"
#include "member.h"
#include "metrics.h"
#include "plugin_loader.h"
#include "store.h"

/* What the host hands a pipeline. */
typedef struct pipeline_env {
  const cfg_t *cfg;
  const cfg_pipeline_t *pc;
  plugin_t *plugin;
  store_t *store;                /* NULL when the pipeline has dedup off */
  const char *bootstrap_servers; /* overrides the config (mock), or NULL */
  int exit_at_end;               /* stop once the start-time end is reached */
  int from_beginning; /* start every partition at its earliest offset the
                       * first time it is assigned in this run */
  /* Called (from a member thread, no lock held) when a plugin's FATAL
   * should stop the whole host (on_fatal = stop_host). */
  void (*stop_host)(void *ctx);
  void *stop_host_ctx;
  /* Keep the notices plugin instances log while they close (their closing
   * summaries) for pipeline_take_closing_notes() instead of logging them. */
  int keep_closing_notes;
  /* What the members count for operators (metrics.h); NULL: nothing. */
  metrics_t *metrics;
} pipeline_env_t;

typedef struct pipeline_stats {
  uint64_t handled;       /* records the plugin returned OK for */
  uint64_t duplicates;    /* records skipped as already seen */
  uint64_t failed;        /* FAIL, retries exhausted, or no event ID (fail) */
  uint64_t retries;       /* RETRY answers */
  uint64_t no_id;         /* records without an event ID */
  uint64_t commits;       /* offset commits sent */
  uint64_t assigned;      /* partitions the members own right now */
  uint64_t breaker_trips; /* times the circuit breaker opened */
  int at_end;   /* exit-at-end: every partition consumed to its end offset */
  int64_t left; /* exit-at-end: records still to go; -1 without */
} pipeline_stats_t;

typedef struct pipeline {
  pipeline_env_t env;
  char name[128];
  uint32_t scope; /* dedup scope */

  pthread_mutex_t mu;
  pthread_cond_t cond; /* signalled on stop, member start/exit, progress */
  int stop;            /* members finish their batch and leave */
  int64_t stop_ms;     /* when stop was first set (monotonic ms), or 0 */
  int failed;          /* a member hit a fatal condition */
  char failure[512];
  int ready, setup_failed, running; /* member start-up and exit counts */

  member_t **members;
  int n_members;
  member_env_t member_env; /* what every member gets (member.h) */

  end_tracker_t *end; /* exit-at-end, or NULL */

  breaker_t *breaker;  /* NULL unless a circuit_breaker group is set */
  GHashTable *started; /* --from-beginning: partitions already started */
  pthread_t watchdog;  /* reports handle() calls over handler_timeout */
  int has_watchdog;
  GPtrArray *closing_notes; /* keep_closing_notes: lines, under mu */

  flow_counts_t counts; /* what the members' flow cores counted */
  _Atomic uint64_t commits, assigned;
} pipeline_t;

/* Start the pipeline: query end offsets (exit-at-end), spawn members and
 * wait until every member has created its plugin instance and subscribed.
 * On failure everything started is stopped and err says why. */
int pipeline_start(pipeline_t **out, const pipeline_env_t *env, char *err,
                   size_t errlen);
void pipeline_request_stop(pipeline_t *p);
/* 1 once every member thread has left its loop. */
int pipeline_done(pipeline_t *p);
/* Wait up to timeout_ms for pipeline_done(); returns pipeline_done(). */
int pipeline_wait_done(pipeline_t *p, int64_t timeout_ms);
/* Join the member threads (only after pipeline_done()) and free. Returns 0,
 * or 1 when the pipeline failed. */
int pipeline_finish(pipeline_t *p);
void pipeline_get_stats(pipeline_t *p, pipeline_stats_t *out);
/* After pipeline_done(): the closing notes of its plugin instances (see
 * pipeline_env_t.keep_closing_notes), in the order logged, as a GPtrArray
 * of strings the caller frees with g_ptr_array_unref(); NULL when none
 * were kept. */
GPtrArray *pipeline_take_closing_notes(pipeline_t *p);

/* Append "<member> in handle() for N ms on <topic> [<partition>] offset
 * <offset>" to the string in buf for every member whose plugin call has
 * not returned ("; " between them); returns how many there are. */
size_t pipeline_describe_busy(pipeline_t *p, char *buf, size_t len);

/* --- what members get through member_env_t (pipeline.c) --- */
/* Stop everything and remember why (first failure wins). */
void pipeline_fail(pipeline_t *p, const char *fmt, ...) KHOST_PRINTF(2, 3);
int pipeline_stopping(pipeline_t *p);
/* When the stop was first asked for (monotonic ms), 0 before: the
 * shutdown deadline counts from then, as the process's own does. */
int64_t pipeline_stop_ms(pipeline_t *p);
/* Sleep up to ms unless a stop is requested; returns 1 when stopping. */
int pipeline_sleep(pipeline_t *p, int64_t ms);
/* A librdkafka configuration for one of this pipeline's clients
 * (kafka_conf_new() with the pipeline's settings). */
rd_kafka_conf_t *pipeline_kafka_conf(pipeline_t *p, kafka_role_t role,
                                     char *err, size_t errlen);
/* exit-at-end bookkeeping: the partition has been consumed and committed
 * up to next_offset. */
void pipeline_progress(pipeline_t *p, const char *topic, int32_t partition,
                       int64_t next_offset);

/* --from-beginning: set the start offset of partitions assigned for the
 * first time in this run to the beginning of their log. */
void pipeline_start_offsets(pipeline_t *p,
                            rd_kafka_topic_partition_list_t *parts);

/* For plugin_instance_opts_t.closing_note, with the pipeline as ctx. */
void pipeline_closing_note(void *ctx, const char *line);

#endif
