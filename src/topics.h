/*
 * The topics a pipeline names, as the cluster has them.
 *
 * A pipeline lists topic names and "^regex" patterns. librdkafka's
 * subscription (rd_kafka_subscribe()) matches a pattern against every
 * topic of the cluster's metadata: the whole string, "^" included, is a
 * POSIX extended regular expression (regcomp(REG_EXTENDED | REG_NOSUB) in
 * its rdregex.c, on a libc with regex.h as Debian's), found anywhere after
 * that anchor: "^orders-.*" and "^orders-" name the same topics. Topics
 * the metadata reports with an error are left out of a pattern's matches,
 * as the subscription leaves them out. (librdkafka's topic.blacklist
 * property, which hides topics from a subscription, is not applied here.)
 *
 * `khost offsets`, `khost replay` and --exit-at-end expand a pipeline's
 * topics here, from a metadata answer that lists every topic: a request
 * naming one topic could create it on a broker that auto-creates topics.
 */
#ifndef KHOST_TOPICS_H
#define KHOST_TOPICS_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* 1 when entry (a pipeline's topic) is a "^regex" pattern. */
int topics_is_pattern(const char *entry);

/* 0 when pattern (a "^regex") compiles as librdkafka compiles it; else -1
 * with err saying why. */
int topics_check_pattern(const char *pattern, char *err, size_t errlen);

/* 1 when entry names topic: the same name, or a pattern matching it (a
 * pattern that does not compile matches nothing). */
int topics_names(const char *entry, const char *topic);

/* Append to list the partitions of the topics entry names in md (all
 * topics of the cluster), topics in name order, each one's partitions in
 * order; partitions list holds already are not added again. Returns 0, or
 * with err set: RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART when the cluster
 * has no such topic or the pattern matches none (without an error), the
 * topic's own error when md reports the named topic with one, or
 * RD_KAFKA_RESP_ERR__INVALID_ARG for a pattern that does not compile. */
rd_kafka_resp_err_t topics_expand(const struct rd_kafka_metadata *md,
                                  const char *entry,
                                  rd_kafka_topic_partition_list_t *list,
                                  char *err, size_t errlen);

#endif
