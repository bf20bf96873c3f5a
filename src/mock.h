/*
 * The embedded mock cluster: librdkafka's in-process Kafka simulation,
 * reached over real TCP on loopback. Used when the config has a `mock`
 * group, by the tests and by the benchmark. It keeps only a bounded window
 * of each partition, so it is for demos and tests, not for volume.
 */
#ifndef KHOST_MOCK_H
#define KHOST_MOCK_H

#include <stddef.h>

#include "gen.h"

typedef struct mock mock_t;

int mock_start(mock_t **out, int brokers, char *err, size_t errlen);
void mock_stop(mock_t *m);
/* "127.0.0.1:port,..." for bootstrap.servers. */
const char *mock_bootstraps(const mock_t *m);
/* The rd_kafka_mock_cluster_t of m, for fault injection in tests. */
void *mock_cluster(mock_t *m);

int mock_create_topic(mock_t *m, const char *topic, int partitions, char *err,
                      size_t errlen);

/* Create the generator's topics (those of o->topics that do not exist
 * yet, with `partitions` partitions) and produce o's events to them with
 * gen_run(). r says what was produced, also on failure. */
int mock_generate(mock_t *m, const gen_opts_t *o, int partitions,
                  gen_report_t *r, char *err, size_t errlen);

/* Produce `records` sample events of the source document to topic (headers
 * eventId, eventType, aggregateId, occurredOn; a JSON value; no key), of
 * which `duplicates` re-publish the eventId of an earlier record, as a
 * retrying publisher does. Waits until every record is acknowledged. */
int mock_produce_samples(mock_t *m, const char *topic, int records,
                         int duplicates, char *err, size_t errlen);

#endif
