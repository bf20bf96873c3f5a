/*
 * Dead-letter topic of a pipeline: a record the plugin failed (or whose
 * retries ran out) is produced there with its original key, value and
 * headers plus headers naming the failure, and only once the broker has
 * acknowledged it does the member mark the record and move on.
 *
 * One per member (a producer of its own): used from the member's thread.
 */
#ifndef KHOST_DEAD_LETTER_H
#define KHOST_DEAD_LETTER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dead_letter dead_letter_t;

/* The headers khost adds (the original ones are kept). */
#define DLT_H_ERROR "khost-error"
#define DLT_H_TOPIC "khost-source-topic"
#define DLT_H_PARTITION "khost-source-partition"
#define DLT_H_OFFSET "khost-source-offset"
#define DLT_H_ATTEMPTS "khost-attempts"
#define DLT_H_PLUGIN "khost-plugin"
#define DLT_H_PIPELINE "khost-pipeline"
#define DLT_H_FAILED_AT "khost-failed-at"

/* conf is consumed (destroyed on failure too). A send's outcome is known
 * within timeout_ms (message.timeout.ms). */
int dead_letter_open(dead_letter_t **out, rd_kafka_conf_t *conf,
                     const char *topic, const char *pipeline,
                     const char *plugin, int timeout_ms, char *err,
                     size_t errlen);
void dead_letter_close(dead_letter_t *d);

/* Produce msg with the failure headers and wait for the broker's
 * acknowledgement. 0 when acknowledged; -1 with err when not (the caller
 * tries again later: nothing is marked). */
int dead_letter_send(dead_letter_t *d, const rd_kafka_message_t *msg,
                     const char *reason, uint32_t attempts, char *err,
                     size_t errlen);

#endif
