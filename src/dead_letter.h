/*
 * Dead-letter topic of a pipeline: a record the plugin failed (or whose
 * retries ran out) is produced there with its original key, value and
 * headers plus headers naming the failure, and only once the broker has
 * acknowledged it does the member mark the record and move on. The write
 * does not block the member: the record waits at the head of its
 * partition while the other partitions go on.
 *
 * One per member (a producer of its own): used from the member's thread,
 * where delivery reports are served too (dead_letter_poll()).
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

/* conf is consumed (destroyed on failure too); the producer's librdkafka
 * lines are logged under who. A send's outcome is known within timeout_ms
 * (message.timeout.ms). */
int dead_letter_open(dead_letter_t **out, rd_kafka_conf_t *conf,
                     const char *who, const char *topic, const char *pipeline,
                     const char *plugin, int timeout_ms, char *err,
                     size_t errlen);
void dead_letter_close(dead_letter_t *d);

/* One write to the dead-letter topic, from dead_letter_begin() until its
 * outcome is taken (dead_letter_poll()) or it is forgotten. */
typedef struct dead_letter_write dead_letter_write_t;

/* Produce msg with the failure headers, without waiting: *out follows the
 * write. 0; or -1 with err when the producer refused it at once (nothing
 * to follow). */
int dead_letter_begin(dead_letter_t *d, const rd_kafka_message_t *msg,
                      const char *reason, uint32_t attempts,
                      dead_letter_write_t **out, char *err, size_t errlen);

/* Serve delivery reports for up to timeout_ms (0: only those in) and tell
 * how w went: 1 still in flight; 0 acknowledged by the broker; -1 not
 * written (err says why; the caller tries again later: nothing is
 * marked). Once it returns 0 or -1, w is freed. */
int dead_letter_poll(dead_letter_t *d, dead_letter_write_t *w, int timeout_ms,
                     char *err, size_t errlen);

/* Stop following w (its partition went): freed once its report comes, or
 * at dead_letter_close(). */
void dead_letter_forget(dead_letter_t *d, dead_letter_write_t *w);

#endif
