/*
 * Records: a librdkafka message seen through the flow core's record view
 * (flow_rec_ops_t) and handed to the plugin (khost_record_t). Queued
 * messages are partition-end markers or records without an error.
 *
 * Threads: any; a message belongs to one thread at a time.
 */
#ifndef KHOST_RECORD_H
#define KHOST_RECORD_H

#include <librdkafka/rdkafka.h>

#include "flow.h"
#include "khost/plugin.h"

/* The flow core's view of an rd_kafka_message_t *. */
extern const flow_rec_ops_t record_ops;

/* The plugin's view of the record of job (a FLOW_CALL), borrowed from
 * the message: valid while the message lives. */
void record_for_plugin(const flow_job_t *job, khost_record_t *out);

#endif
