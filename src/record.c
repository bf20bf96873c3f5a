/*
 * A librdkafka message as the flow core and the plugin see it (record.h).
 */
#include "record.h"

#include <string.h>

#include "parked_hdr.h"

/* The flow core's view of a librdkafka message. */
static const char *rec_topic(const void *rec) {
  return rd_kafka_topic_name(((const rd_kafka_message_t *)rec)->rkt);
}
static int32_t rec_partition(const void *rec) {
  return ((const rd_kafka_message_t *)rec)->partition;
}
static int64_t rec_offset(const void *rec) {
  return ((const rd_kafka_message_t *)rec)->offset;
}
/* Only partition-end markers are queued with an error (enqueue()). */
static int rec_is_end(const void *rec) {
  return ((const rd_kafka_message_t *)rec)->err != 0;
}
static void rec_key(const void *rec, const void **key, size_t *len) {
  const rd_kafka_message_t *msg = rec;
  *key = msg->key;
  *len = msg->key_len;
}
static int rec_header(const void *rec, const char *name, const void **value,
                      size_t *len) {
  rd_kafka_headers_t *hdrs = NULL;
  return rd_kafka_message_headers((rd_kafka_message_t *)rec, &hdrs) ==
             RD_KAFKA_RESP_ERR_NO_ERROR &&
         rd_kafka_header_get_last(hdrs, name, value, len) ==
             RD_KAFKA_RESP_ERR_NO_ERROR;
}
/* What a parked record keeps of the message (flow.h). */
static void rec_payload(const void *rec, store_parked_t *p, void **headers) {
  rd_kafka_message_t *msg = (rd_kafka_message_t *)rec;
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_timestamp_type_t tstype;
  GByteArray *buf = g_byte_array_new();
  const char *name;
  const void *val;
  size_t len;
  p->timestamp_ms = rd_kafka_message_timestamp(msg, &tstype);
  p->key = msg->key;
  p->key_len = msg->key_len;
  p->value = msg->payload;
  p->value_len = msg->len;
  if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &len) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR;
         i++)
      parked_hdr_add(buf, name, strlen(name), val, len);
  p->headers_len = buf->len;
  *headers = g_byte_array_free(buf, FALSE);
  p->headers = *headers;
}

static size_t rec_size(const void *rec) {
  const rd_kafka_message_t *m = rec;
  return m->len + m->key_len;
}

static void rec_free(void *rec) {
  rd_kafka_message_destroy(rec);
}

/* The headers librdkafka parsed for the event ID and the plugin go now,
 * not with the message when its batch is durable: freed right after they
 * were allocated, their memory comes back from the thread's cache for the
 * next record, where freeing a batch's worth at once costs several times
 * as much. A later look at the headers parses them again. */
static void rec_settled(void *rec) {
  rd_kafka_headers_t *hdrs = NULL;
  if (rd_kafka_message_detach_headers(rec, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
    rd_kafka_headers_destroy(hdrs);
}

const flow_rec_ops_t record_ops = {
    .topic = rec_topic,
    .partition = rec_partition,
    .offset = rec_offset,
    .is_end = rec_is_end,
    .key = rec_key,
    .header = rec_header,
    .free = rec_free,
    .payload = rec_payload,
    .size = rec_size,
    .settled = rec_settled,
};

void record_for_plugin(const flow_job_t *job, khost_record_t *out) {
  rd_kafka_message_t *msg = job->rec;
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_timestamp_type_t tstype;
  rd_kafka_message_headers(msg, &hdrs);
  *out = (khost_record_t){
      .struct_size = sizeof(*out),
      .topic = rd_kafka_topic_name(msg->rkt),
      .partition = msg->partition,
      .offset = msg->offset,
      .timestamp = rd_kafka_message_timestamp(msg, &tstype),
      .key = msg->key,
      .key_len = msg->key_len,
      .value = msg->payload,
      .value_len = msg->len,
      .event_id = job->event_id,
      .event_id_len = job->event_id_len,
      .attempt = job->attempt,
      .flags = job->replay ? KHOST_RECORD_REPLAY : 0,
      .host_priv = hdrs,
  };
}
