/*
 * Where a pipeline's consumer group stands: per partition of its topics,
 * the group's committed offset, the log start and end offsets, the lag and
 * the member the partition is assigned to (`khost offsets`), and the
 * Kafka queries `khost replay` builds on.
 *
 * Everything here only reads: it never joins a group or commits.
 * Functions that can fail return HOST_EXIT_OK, HOST_EXIT_CONFIG (the
 * input names a pipeline, topic or partition that does not exist) or
 * HOST_EXIT_RUNTIME (Kafka did not answer), with err set.
 *
 * Members: read from the broker's DescribeGroups answer. A broker that
 * does not answer it (librdkafka's mock cluster) leaves the group
 * undescribed: members unknown.
 *
 * Threads: an offs_client_t belongs to one thread.
 */
#ifndef KHOST_OFFSETS_H
#define KHOST_OFFSETS_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* An offset that is not there (no committed offset, unknown lag). */
#define OFFS_NONE INT64_C(-1)

/* A Kafka client for the cluster of one pipeline (the config's kafka
 * properties with the pipeline's overrides), for queries. */
typedef struct offs_client offs_client_t;

/* Refuses (HOST_EXIT_CONFIG) a config that runs the embedded mock
 * cluster: it exists only inside `khost run`. */
int offs_client_open(offs_client_t **out, const cfg_t *cfg,
                     const cfg_pipeline_t *pc, char *err, size_t errlen);
void offs_client_close(offs_client_t *c);
/* The client's handle: a consumer in no group, for reading records. */
rd_kafka_t *offs_client_handle(offs_client_t *c);

/* Append to list the partitions of entry: a topic, or a "^regex" pattern
 * matched against every topic of the cluster as librdkafka's subscription
 * matches it (topics.h); partitions list holds already are not added
 * again. HOST_EXIT_CONFIG when the cluster has no such topic, or the
 * pattern matches none or does not compile. */
int offs_topic_partitions(offs_client_t *c, const char *entry,
                          rd_kafka_topic_partition_list_t *list, char *err,
                          size_t errlen);
/* Log start and end offsets of one partition. */
int offs_watermarks(offs_client_t *c, const char *topic, int32_t partition,
                    int64_t *start, int64_t *end, char *err, size_t errlen);
/* Fill the offset of every element of list with group's committed offset
 * (OFFS_NONE when it has none). */
int offs_committed(offs_client_t *c, const char *group,
                   rd_kafka_topic_partition_list_t *list, char *err,
                   size_t errlen);

/* One member of a described group. */
typedef struct offs_member {
  char *name; /* "client.id@host" */
  rd_kafka_topic_partition_list_t *assigned;
} offs_member_t;

typedef struct offs_group {
  int described; /* 0: the broker does not answer DescribeGroups */
  char *state;   /* "Stable", "Empty", "PreparingRebalance", ... */
  offs_member_t *members;
  int n_members;
} offs_group_t;

/* Describe group. A broker without DescribeGroups is not an error:
 * g->described stays 0. Free with offs_group_free(). */
int offs_describe_group(offs_client_t *c, const char *group, offs_group_t *g,
                        char *err, size_t errlen);
void offs_group_free(offs_group_t *g);
/* The member partition topic/partition is assigned to, or NULL. */
const char *offs_group_owner(const offs_group_t *g, const char *topic,
                             int32_t partition);
/* 1 when the group has members (only meaningful when described). */
int offs_group_active(const offs_group_t *g);

/* Decode a consumer-protocol member assignment (the bytes DescribeGroups
 * returns) into a new list; -1 when the bytes are malformed. */
int offs_parse_assignment(const void *buf, size_t len,
                          rd_kafka_topic_partition_list_t **out);

/* One row of `khost offsets`. */
typedef struct offs_row {
  char *group;
  char *topic;
  int32_t partition;
  int64_t committed;  /* OFFS_NONE when the group has none */
  int64_t start, end; /* log start and end offsets */
  int64_t lag;        /* records the group has still to consume */
  char *member;       /* assigned member, NULL: none or unknown */
  int member_known;   /* the group was described: NULL member means none */
} offs_row_t;

/* Zero-initialise; offs_report_free() frees what offs_gather() added. */
typedef struct offs_report {
  offs_row_t *rows;
  size_t n;
  /* What the rows cannot say: a group the broker would not describe
   * (members unknown), a topic missing from the cluster. */
  char **notes;
  size_t n_notes;
} offs_report_t;

/* Append the rows of pipeline pc to r. Lag is end - committed; without a
 * committed offset (or with one the log no longer holds) it follows the
 * pipeline's auto.offset.reset (earliest, khost's default: end - start;
 * latest: 0; error: unknown). */
int offs_gather(offs_report_t *r, const cfg_t *cfg, const cfg_pipeline_t *pc,
                char *err, size_t errlen);
void offs_report_free(offs_report_t *r);

#endif
