/* Test helpers around librdkafka's mock cluster: produce records, read
 * committed and end offsets independently of khost, run a host in-process,
 * and parse what the `scripted` fixture plugin wrote. */
#ifndef KHOST_MOCKUTIL_H
#define KHOST_MOCKUTIL_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "host.h"
#include "mock.h"

/* The mock coordinator waits session.timeout.ms - 1 s for members to rejoin
 * before it completes a rebalance (and 3 s on the first join): tests use a
 * short session timeout so that rebalances take seconds, not a minute. */
#define MU_SESSION_TIMEOUT "3000"
#define MU_HEARTBEAT "300"

/* The global kafka settings of a test's config (mu_write_cfg()). */
#define MU_KAFKA                                                               \
  "session_timeout_ms = " MU_SESSION_TIMEOUT                                   \
  "; heartbeat_interval_ms = " MU_HEARTBEAT ";"

typedef struct mu_cluster {
  mock_t *mock;
  const char *bootstraps;
  rd_kafka_t *producer;
  char *dir; /* temp dir for configs, logs and the dedup db */
} mu_cluster_t;

void mu_start(mu_cluster_t *c, int brokers);
void mu_stop(mu_cluster_t *c);
void mu_topic(mu_cluster_t *c, const char *topic, int partitions);
/* Produce one record; event_id NULL: no eventId header. key may be NULL. */
void mu_produce(mu_cluster_t *c, const char *topic, int32_t partition,
                const char *event_id, const char *key, const char *value);
/* The same, stamped timestamp_ms (0: the time of producing). */
void mu_produce_at(mu_cluster_t *c, const char *topic, int32_t partition,
                   const char *event_id, const char *key, const char *value,
                   int64_t timestamp_ms);
void mu_flush(mu_cluster_t *c);

int64_t mu_end_offset(mu_cluster_t *c, const char *topic, int32_t partition);
/* Committed offset of group, or -1001 (RD_KAFKA_OFFSET_INVALID) if none. */
int64_t mu_committed(mu_cluster_t *c, const char *group, const char *topic,
                     int32_t partition);
void mu_commit(mu_cluster_t *c, const char *group, const char *topic,
               int32_t partition, int64_t offset);

/* Read partition 0 of topic from the beginning until `want` records
 * arrived or timeout_ms passed, calling check (may be NULL) on each with
 * arg; returns how many came. To show there are exactly N, ask for N + 1
 * with a short timeout. (Messages must be destroyed before their handle,
 * hence the callback.) */
size_t mu_consume(mu_cluster_t *c, const char *topic, size_t want,
                  int64_t timeout_ms,
                  void (*check)(rd_kafka_message_t *m, void *arg), void *arg);
/* The last header `name` of m as a string in buf, or NULL if absent. */
const char *mu_header(rd_kafka_message_t *m, const char *name, char *buf,
                      size_t size);

/* A host running in this process. */
typedef struct mu_host {
  cfg_t cfg;
  host_t *host;
  int status; /* host_finish() */
} mu_host_t;

/* Load cfg_path and start a host; fails the test on error. */
void mu_host_start(mu_host_t *h, const char *cfg_path, int exit_at_end);
/* The same with every option of `khost run` (--from-beginning, ...). */
void mu_host_start_opts(mu_host_t *h, const char *cfg_path,
                        const host_opts_t *opts);
/* Wait (deadline) for it to stop by itself, finish it. */
void mu_host_wait(mu_host_t *h, int64_t timeout_ms);
/* Ask it to stop, wait, finish. */
void mu_host_stop(mu_host_t *h);
void mu_host_stats(mu_host_t *h, pipeline_stats_t *s);
void mu_host_close(mu_host_t *h);

/* A config of pipeline "orders" with the `scripted` fixture plugin, as
 * the tests write it: each field left 0 or NULL takes the default named. */
typedef struct mu_cfg {
  const char *file;     /* in the cluster's dir: "khost.cfg" */
  const char *top;      /* global settings: shutdown_timeout = "20s" */
  const char *kafka;    /* the global kafka group: MU_KAFKA */
  const char *dedup;    /* more of the dedup group: none */
  const char *db;       /* the dedup database in dir: "dedup.db" */
  const char *group;    /* "data-platform-consumer-group" */
  const char *topics;   /* libconfig list items: "\"order-completed\"" */
  int members;          /* 1 */
  const char *pipeline; /* more of the pipeline: none */
  const char *log;      /* the plugin's log in dir: "calls.log" */
  const char *plugin;   /* more of the plugin's config: none */
  const char *more;     /* more pipelines (", { ... }"): none */
} mu_cfg_t;

/* Write the config to the cluster's dir; returns its path. */
char *mu_write_cfg(mu_cluster_t *c, const mu_cfg_t *o);

/* Run a host on cfg with --exit-at-end until it stops by itself, within
 * timeout_ms; check its exit status; returns the first pipeline's stats. */
pipeline_stats_t mu_run_to_end(const char *cfg, int want_status,
                               int64_t timeout_ms);

/* Send the host's log lines, from level on, to <dir>/<name> (the host
 * started next keeps that level); returns what mu_log_restore() takes. */
int mu_log_to(mu_cluster_t *c, const char *name, int level);
void mu_log_restore(int fd);

/* One line of the scripted plugin's log. */
typedef struct mu_line {
  char topic[64];
  int32_t partition;
  int64_t offset;
  unsigned attempt;
  char event_id[64];
  int result;
  int64_t ms;
  unsigned flags; /* khost_record_t.flags */
  int worker;     /* the instance's api->worker_index() */
  int overlap;    /* 1: the call began inside another of its instance */
} mu_line_t;

/* All whole lines of path (a last line without its newline is still being
 * written: left out); *n gets the count (0 when the file is absent). */
mu_line_t *mu_read_lines(const char *path, size_t *n);
/* Every OK line has a distinct event ID (fails the test otherwise);
 * returns how many there are. */
size_t mu_assert_ok_ids_distinct(const mu_line_t *l, size_t n);
/* The per-key order checker, for event IDs "KEY-SEQ" (SEQ the record's
 * number within its key, from 0 in production order): the OK lines of
 * each key, in log order, must carry strictly increasing numbers. Returns
 * the violations, the first few appended to why. */
size_t mu_key_order_violations(const mu_line_t *l, size_t n, GString *why);
/* Count of lines with that result. */
size_t mu_count_result(const mu_line_t *l, size_t n, int result);

#endif
