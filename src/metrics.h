/*
 * What a pipeline's members count for operators: the counters and gauges
 * behind /metrics, /readyz and the status page (http.c) that the pipeline
 * itself does not keep (pipeline_stats_t has the record counts).
 *
 * The host owns one metrics_t per pipeline for as long as the config
 * has it, so the HTTP thread may read it while pipelines start and stop
 * (a reload frees a dropped pipeline's while no reader is between the
 * begin() and end() of host_view.h). Members update it from their own
 * threads: plain counters are atomics; the partition table, the recent
 * failures and the throughput samples are under mu.
 * Every update function accepts a NULL metrics_t (a pipeline run without
 * a host) and does nothing then.
 */
#ifndef KHOST_METRICS_H
#define KHOST_METRICS_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Upper bounds (seconds) of the latency histograms' buckets; +Inf last. */
#define METRICS_BUCKETS 12
extern const double metrics_bucket_bounds[METRICS_BUCKETS];

typedef struct metrics_hist {
  _Atomic uint64_t bucket[METRICS_BUCKETS + 1]; /* not cumulative */
  _Atomic uint64_t sum_us;
} metrics_hist_t;

/* One member as its thread last reported it. */
typedef struct metrics_member {
  _Atomic int joined;       /* an assignment (maybe empty) arrived */
  _Atomic int held;         /* the store refuses its batches */
  _Atomic int64_t tick_ms;  /* monotonic: the last turn of its loop */
  _Atomic uint64_t queued;  /* records delivered, not yet handled */
  _Atomic uint64_t pending; /* records with an outcome, not yet durable */
} metrics_member_t;

/* One partition the pipeline owns or owned in this run. */
typedef struct metrics_part {
  char *topic;
  int32_t partition;
  int member;        /* who owns it; -1 once revoked */
  int64_t committed; /* next offset committed; -1 unknown */
  int64_t low, high; /* watermarks as the member's client last saw them;
                      * -1 unknown */
  int64_t oldest_ms; /* timestamp (ms since the epoch) of the oldest record
                      * fetched and not handled yet; -1: none waits */
} metrics_part_t;

/* A record that failed for good. */
typedef struct metrics_failure {
  int64_t at_ms; /* wall clock */
  char topic[128];
  int32_t partition;
  int64_t offset;
  int dead_lettered;
  char reason[192];
} metrics_failure_t;

#define METRICS_FAILURES 20
#define METRICS_SAMPLES 60 /* throughput samples kept */

typedef struct metrics_sample {
  int64_t at_ms;     /* wall clock */
  uint64_t outcomes; /* handled + duplicates + failed so far */
} metrics_sample_t;

typedef struct metrics {
  char *pipeline;
  int n_members;
  int64_t stuck_ms; /* a member whose loop has not turned for this long
                     * is stuck */
  metrics_member_t *members;

  _Atomic uint64_t dead_lettered, commits_ok, commits_failed;
  _Atomic uint64_t assigned_events, revoked_events, lost_events;
  _Atomic int breaker_open;
  metrics_hist_t handle, durable;

  pthread_mutex_t mu;
  GHashTable *parts; /* "topic\x1fpartition" -> metrics_part_t * */
  metrics_failure_t failures[METRICS_FAILURES]; /* ring, newest at
                                                 * n_failures - 1 */
  uint64_t n_failures;
  metrics_sample_t samples[METRICS_SAMPLES]; /* ring */
  uint64_t n_samples;
} metrics_t;

metrics_t *metrics_new(const char *pipeline, int members, int64_t stuck_ms);
void metrics_free(metrics_t *mx);

/* Monotonic microseconds, for the histograms. */
int64_t metrics_now_us(void);
/* Add the time since start_us (metrics_now_us()) to the handle() or the
 * batch-durable histogram. */
void metrics_observe_handle(metrics_t *mx, int64_t start_us);
void metrics_observe_durable(metrics_t *mx, int64_t start_us);

/* --- from member threads --- */
void metrics_assigned(metrics_t *mx, int member,
                      const rd_kafka_topic_partition_list_t *parts);
void metrics_revoked(metrics_t *mx, int member,
                     const rd_kafka_topic_partition_list_t *parts, int lost);
/* The result of one offset commit; offsets may be NULL. The watermarks of
 * the committed partitions are read from rk (cached, no request). */
void metrics_committed(metrics_t *mx, rd_kafka_t *rk, int ok,
                       const rd_kafka_topic_partition_list_t *offsets);
/* A turn of member's loop: it is alive; its queue sizes; about once a
 * second the watermarks of its partitions are refreshed from rk. */
void metrics_tick(metrics_t *mx, int member, rd_kafka_t *rk, uint64_t queued,
                  uint64_t pending);
/* The timestamp of the oldest record of topic/partition fetched and not
 * handled yet (ms since the epoch; -1: none waits). */
void metrics_oldest(metrics_t *mx, const char *topic, int32_t partition,
                    int64_t ts_ms);
void metrics_held(metrics_t *mx, int member, int held);
void metrics_breaker(metrics_t *mx, int open);
void metrics_failed(metrics_t *mx, const char *topic, int32_t partition,
                    int64_t offset, const char *reason, int dead_lettered);

/* --- from the host's monitor --- */
void metrics_sample(metrics_t *mx, uint64_t outcomes);

/* Copies for readers, under mu; free with g_free / g_ptr_array_unref. */
GPtrArray *metrics_parts(metrics_t *mx); /* metrics_part_t *, sorted */
size_t metrics_failures(metrics_t *mx, metrics_failure_t *out, size_t max);
size_t metrics_samples(metrics_t *mx, metrics_sample_t *out, size_t max);

/* Consumer lag in seconds: the age at now_ms (wall clock) of the
 * partition's oldest record not handled yet; 0 when none waits. */
double metrics_lag_seconds(const metrics_part_t *pt, int64_t now_ms);

/* Why the pipeline is not ready, appended to why (strings the array
 * frees); returns 1 when it is ready. */
int metrics_ready(metrics_t *mx, GPtrArray *why);

#endif
