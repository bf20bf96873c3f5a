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

#include <glib.h>

#include "kafka_client.h"

struct dead_letter {
  rd_kafka_t *rk;
  char *topic, *pipeline, *plugin;
  GPtrArray *writes; /* dead_letter_write_t *: in flight or not taken */
};

struct dead_letter_write {
  dead_letter_t *d;
  int done;
  rd_kafka_resp_err_t err;
  int forgotten; /* nobody takes the outcome: free it when it comes */
};

/* Frees w (the array's free function). */
static void write_free(dead_letter_t *d, dead_letter_write_t *w) {
  g_ptr_array_remove_fast(d->writes, w);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                        void *opaque) {
  dead_letter_write_t *w = msg->_private;
  (void)rk, (void)opaque;
  if (w->forgotten) {
    write_free(w->d, w);
    return;
  }
  w->err = msg->err;
  w->done = 1;
}

int dead_letter_open(dead_letter_t **out, rd_kafka_conf_t *conf,
                     const char *who, const char *topic, const char *pipeline,
                     const char *plugin, int timeout_ms, char *err,
                     size_t errlen) {
  char why[512], ms[24];
  snprintf(ms, sizeof(ms), "%d", timeout_ms);
  /* The write must not be lost or doubled by the producer's own retries,
   * and its outcome is known within timeout_ms. */
  if (kafka_conf_set(conf, "enable.idempotence", "true", why, sizeof(why)) ||
      kafka_conf_set(conf, "acks", "all", why, sizeof(why)) ||
      kafka_conf_set(conf, "message.timeout.ms", ms, why, sizeof(why))) {
    snprintf(err, errlen, "dead-letter producer: %s", why);
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_PRODUCER, conf, who, NULL, why, sizeof(why));
  if (!rk) {
    snprintf(err, errlen, "dead-letter producer: %s", why);
    return -1;
  }
  dead_letter_t *d = calloc(1, sizeof(*d));
  d->rk = rk;
  d->writes = g_ptr_array_new_with_free_func(free);
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
  kafka_destroy(d->rk);
  g_ptr_array_free(d->writes, TRUE); /* those never reported */
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

int dead_letter_begin(dead_letter_t *d, const rd_kafka_message_t *msg,
                      const char *reason, uint32_t attempts,
                      dead_letter_write_t **out, char *err, size_t errlen) {
  dead_letter_write_t *w = calloc(1, sizeof(*w));
  w->d = d;
  rd_kafka_headers_t *h = failure_headers(d, msg, reason, attempts);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      d->rk, RD_KAFKA_V_TOPIC(d->topic), RD_KAFKA_V_KEY(msg->key, msg->key_len),
      RD_KAFKA_V_VALUE(msg->payload, msg->len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
      RD_KAFKA_V_OPAQUE(w), RD_KAFKA_V_END);
  if (e) {
    rd_kafka_headers_destroy(h); /* not taken over on failure */
    free(w);
    snprintf(err, errlen, "dead-letter topic %s: %s", d->topic,
             rd_kafka_err2str(e));
    return -1;
  }
  g_ptr_array_add(d->writes, w);
  *out = w;
  return 0;
}

int dead_letter_poll(dead_letter_t *d, dead_letter_write_t *w, int timeout_ms,
                     char *err, size_t errlen) {
  /* message.timeout.ms bounds how long a write stays in flight. */
  rd_kafka_poll(d->rk, w->done ? 0 : timeout_ms);
  if (!w->done)
    return 1;
  rd_kafka_resp_err_t e = w->err;
  write_free(d, w);
  if (e) {
    snprintf(err, errlen, "dead-letter topic %s: %s", d->topic,
             rd_kafka_err2str(e));
    return -1;
  }
  return 0;
}

void dead_letter_forget(dead_letter_t *d, dead_letter_write_t *w) {
  if (w->done)
    write_free(d, w);
  else
    w->forgotten = 1;
}
