/*
 * Dead-letter producer (see dead_letter.h).
 */
#include "dead_letter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct dead_letter {
  rd_kafka_t *rk;
  char *topic, *pipeline, *plugin;
};

/* Delivery outcome of the one record in flight. */
typedef struct delivery {
  int done;
  rd_kafka_resp_err_t err;
} delivery_t;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                        void *opaque) {
  delivery_t *d = msg->_private;
  (void)rk, (void)opaque;
  d->err = msg->err;
  d->done = 1;
}

int dead_letter_open(dead_letter_t **out, rd_kafka_conf_t *conf,
                     const char *topic, const char *pipeline,
                     const char *plugin, int timeout_ms, char *err,
                     size_t errlen) {
  char errstr[512], ms[24];
  snprintf(ms, sizeof(ms), "%d", timeout_ms);
  /* The write must not be lost or doubled by the producer's own retries,
   * and its outcome is known within timeout_ms. */
  if (rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr,
                        sizeof(errstr)) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof(errstr)) !=
          RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "message.timeout.ms", ms, errstr,
                        sizeof(errstr)) != RD_KAFKA_CONF_OK) {
    snprintf(err, errlen, "dead-letter producer: %s", errstr);
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (!rk) {
    snprintf(err, errlen, "dead-letter producer: %s", errstr);
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  dead_letter_t *d = calloc(1, sizeof(*d));
  d->rk = rk;
  d->topic = strdup(topic);
  d->pipeline = strdup(pipeline);
  d->plugin = strdup(plugin);
  *out = d;
  return 0;
}

void dead_letter_close(dead_letter_t *d) {
  if (!d)
    return;
  rd_kafka_flush(d->rk, 5000);
  rd_kafka_destroy(d->rk);
  free(d->topic);
  free(d->pipeline);
  free(d->plugin);
  free(d);
}

/* The original headers plus the failure's. */
static rd_kafka_headers_t *failure_headers(const dead_letter_t *d,
                                           const rd_kafka_message_t *msg,
                                           const char *reason,
                                           uint32_t attempts) {
  rd_kafka_headers_t *orig = NULL, *h;
  char num[32], when[64];
  struct timeval tv;
  struct tm tm;
  if (rd_kafka_message_headers(msg, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR)
    h = rd_kafka_headers_copy(orig);
  else
    h = rd_kafka_headers_new(8);
  rd_kafka_header_add(h, DLT_H_ERROR, -1, reason, -1);
  rd_kafka_header_add(h, DLT_H_TOPIC, -1, rd_kafka_topic_name(msg->rkt), -1);
  snprintf(num, sizeof(num), "%" PRId32, msg->partition);
  rd_kafka_header_add(h, DLT_H_PARTITION, -1, num, -1);
  snprintf(num, sizeof(num), "%" PRId64, msg->offset);
  rd_kafka_header_add(h, DLT_H_OFFSET, -1, num, -1);
  snprintf(num, sizeof(num), "%" PRIu32, attempts);
  rd_kafka_header_add(h, DLT_H_ATTEMPTS, -1, num, -1);
  rd_kafka_header_add(h, DLT_H_PLUGIN, -1, d->plugin, -1);
  rd_kafka_header_add(h, DLT_H_PIPELINE, -1, d->pipeline, -1);
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, (long)(tv.tv_usec / 1000));
  rd_kafka_header_add(h, DLT_H_FAILED_AT, -1, when, -1);
  return h;
}

int dead_letter_send(dead_letter_t *d, const rd_kafka_message_t *msg,
                     const char *reason, uint32_t attempts, char *err,
                     size_t errlen) {
  delivery_t dv = {0};
  rd_kafka_headers_t *h = failure_headers(d, msg, reason, attempts);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      d->rk, RD_KAFKA_V_TOPIC(d->topic), RD_KAFKA_V_KEY(msg->key, msg->key_len),
      RD_KAFKA_V_VALUE(msg->payload, msg->len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
      RD_KAFKA_V_OPAQUE(&dv), RD_KAFKA_V_END);
  if (e) {
    rd_kafka_headers_destroy(h); /* not taken over on failure */
    snprintf(err, errlen, "dead-letter topic %s: %s", d->topic,
             rd_kafka_err2str(e));
    return -1;
  }
  /* message.timeout.ms bounds this wait: the delivery report comes. */
  while (!dv.done)
    rd_kafka_poll(d->rk, 50);
  if (dv.err) {
    snprintf(err, errlen, "dead-letter topic %s: %s", d->topic,
             rd_kafka_err2str(dv.err));
    return -1;
  }
  return 0;
}
