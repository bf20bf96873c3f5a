/*
 * Test helpers for a real Apache Kafka cluster, the one tests/kafka/broker
 * starts: its bootstrap string comes from KHOST_KAFKA_BOOTSTRAP and its size
 * from KHOST_KAFKA_NODES (both set by tests/kafka/run-tests).
 *
 * A cluster is a mu_cluster_t (tests/mockutil.h) without a mock: mu_produce,
 * mu_flush, mu_end_offset, mu_committed and the mu_host_* functions work on
 * it as they do on the mock. What only a real cluster has is here: topics
 * with the cluster's replication, Kafka's own command-line tools (reading
 * and resetting a group's committed offsets independently of khost), nodes
 * to kill, and child processes for khost runs that may be SIGKILLed.
 */
#ifndef KHOST_KAFKAUTIL_H
#define KHOST_KAFKAUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mockutil.h"
#include "testutil.h"

/* Real brokers refuse session timeouts under group.min.session.timeout.ms
 * (6 s by default): the shortest a group member may ask for. */
#define KU_SESSION_TIMEOUT "6000"
#define KU_HEARTBEAT "500"

/* Connect to the cluster of the environment: c->bootstraps, an idempotent
 * producer (acks=all), and a fresh temp dir. Fails the test when
 * KHOST_KAFKA_BOOTSTRAP is unset. Release with mu_stop(). */
void ku_connect(mu_cluster_t *c);
/* rd_kafka_flush() with a deadline fit for a leader change; fails the test
 * when a record could not be produced (mu_flush() does not look). */
void ku_flush(mu_cluster_t *c);
/* Nodes in the cluster (KHOST_KAFKA_NODES, default 1). */
int ku_nodes(void);

/* Create topic with the cluster's replication (3 with min.insync.replicas
 * 2 on three nodes, else 1) through the Admin API, and wait until every
 * broker knows it and a leader for each partition. */
void ku_topic(mu_cluster_t *c, const char *topic, int partitions);
/* Wait until every broker knows topic (created some other way) and a
 * leader for each of its partitions. */
void ku_wait_topic(mu_cluster_t *c, const char *topic, int partitions);
/* Node id of the partition's leader, from a metadata request. */
int32_t ku_leader(mu_cluster_t *c, const char *topic, int32_t partition);

/* The tests/kafka/broker script of the cluster (KHOST_KAFKA_BROKER, else
 * the one of the source tree). */
const char *ku_broker_script(void);
/* tests/kafka/broker kill-node / start-node. */
void ku_kill_node(int32_t node);
void ku_start_node(int32_t node);

/* One partition of a group as Kafka's ConsumerGroupCommand describes it;
 * -1 where the tool prints "-" (nothing committed). */
typedef struct ku_group_offsets {
  int64_t current; /* committed offset */
  int64_t log_end;
  int64_t lag;
  /* The member it is assigned to as CLIENT-ID@HOST (the tool prints the
   * host as "/127.0.0.1"; the slash is left out); "" when none is. */
  char member[256];
} ku_group_offsets_t;

/* `kafka-consumer-groups --describe --group group`, rows of topic in
 * out[partition] for partitions 0..n-1; fails the test when one is
 * missing. */
void ku_describe_group(mu_cluster_t *c, const char *group, const char *topic,
                       ku_group_offsets_t *out, int n);
/* `kafka-consumer-groups --reset-offsets --to-earliest --execute` for the
 * topic (the group must have no member); fails the test unless the tool
 * reports offset 0 for each of its partitions. */
void ku_reset_to_earliest(mu_cluster_t *c, const char *group, const char *topic,
                          int partitions);

/* A child process (tests/testutil.h). */
typedef tu_proc_t ku_proc_t;

void ku_spawn(ku_proc_t *p, const char *dir, const char *tag,
              char *const argv[]);
/* 1 once p has exited (within timeout_ms), else 0. */
int ku_reap(ku_proc_t *p, int64_t timeout_ms);
/* Wait for p to exit normally within timeout_ms; its exit status. Fails
 * the test, showing stderr, when it does not. */
int ku_exit_status(ku_proc_t *p, int64_t timeout_ms);
void ku_proc_free(ku_proc_t *p);
/* The last part of a text, for failure messages. */
const char *ku_tail(const char *s);

#endif
