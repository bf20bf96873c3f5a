/*
 * Embedded mock cluster (see mock.h). The cluster lives inside a producer
 * handle of its own, which also produces the sample events; generated
 * events come from gen.c's idempotent producer.
 */
#include "mock.h"

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_client.h"
#include "log.h"

struct mock {
  rd_kafka_t *rk; /* producer that owns the cluster */
  rd_kafka_mock_cluster_t *mcluster;
};

int mock_start(mock_t **out, int brokers, char *err, size_t errlen) {
  char errstr[512], n[16];
  mock_t *m = calloc(1, sizeof(*m));
  rd_kafka_conf_t *conf = kafka_conf_empty();
  if (!m) {
    snprintf(err, errlen, "mock cluster: out of memory");
    goto fail;
  }
  /* The producer creates the cluster and is connected to it: it is also
   * the one that writes the sample events. */
  snprintf(n, sizeof(n), "%d", brokers);
  if (kafka_conf_set(conf, "test.mock.num.brokers", n, errstr,
                     sizeof(errstr)) != 0) {
    snprintf(err, errlen, "mock cluster: %s", errstr);
    goto fail;
  }
  rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
  rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
  m->rk =
      kafka_new(RD_KAFKA_PRODUCER, conf, "mock", NULL, errstr, sizeof(errstr));
  conf = NULL; /* taken over */
  if (!m->rk) {
    snprintf(err, errlen, "mock cluster: %s", errstr);
    goto fail;
  }
  m->mcluster = rd_kafka_handle_mock_cluster(m->rk);
  if (!m->mcluster) {
    snprintf(err, errlen, "mock cluster: cannot start %d brokers", brokers);
    goto fail;
  }
  *out = m;
  return 0;
fail:
  if (conf)
    rd_kafka_conf_destroy(conf);
  mock_stop(m);
  return -1;
}

void mock_stop(mock_t *m) {
  if (!m)
    return;
  /* The cluster belongs to the producer handle and goes with it. */
  kafka_destroy(m->rk);
  free(m);
}

const char *mock_bootstraps(const mock_t *m) {
  return rd_kafka_mock_cluster_bootstraps(m->mcluster);
}

void *mock_cluster(mock_t *m) {
  return m->mcluster;
}

int mock_create_topic(mock_t *m, const char *topic, int partitions, char *err,
                      size_t errlen) {
  rd_kafka_resp_err_t e =
      rd_kafka_mock_topic_create(m->mcluster, topic, partitions, 1);
  if (e) {
    snprintf(err, errlen, "mock cluster: cannot create topic %s: %s", topic,
             rd_kafka_err2str(e));
    return -1;
  }
  return 0;
}

int mock_generate(mock_t *m, const gen_opts_t *o, int partitions,
                  gen_report_t *r, char *err, size_t errlen) {
  char why[512];
  unsigned chosen = o->topics ? o->topics : (1u << GEN_N_TOPICS) - 1;
  memset(r, 0, sizeof(*r));
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    if (!(chosen & (1u << t)))
      continue;
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
        m->mcluster, gen_topic_name(t), partitions, 1);
    /* A pipeline's topic may have been created already. */
    if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      snprintf(err, errlen, "mock cluster: cannot create topic %s: %s",
               gen_topic_name(t), rd_kafka_err2str(e));
      return -1;
    }
  }
  rd_kafka_conf_t *conf =
      gen_conf(mock_bootstraps(m), NULL, 0, why, sizeof(why));
  if (!conf || gen_run(conf, o, r, why, sizeof(why)) != 0) {
    snprintf(err, errlen, "mock cluster: generating events: %s", why);
    return -1;
  }
  return 0;
}

static int produce_one(mock_t *m, const char *topic, const char *event_id,
                       int seq) {
  char value[256], aggregate[32], when[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  snprintf(aggregate, sizeof(aggregate), "%d", 1000 + seq);
  /* Only digits and fixed ASCII go into this JSON: nothing to escape. */
  snprintf(value, sizeof(value),
           "{\"orderId\":%d,\"userId\":%d,\"amount\":%d,\"occurredOn\":\"%s\"}",
           1000 + seq, 1 + seq % 97, 500 + (seq * 37) % 20000, when);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      m->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(value, strlen(value)),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADER("eventId", event_id, -1),
      RD_KAFKA_V_HEADER("eventType", gen_event_type_of(topic), -1),
      RD_KAFKA_V_HEADER("aggregateId", aggregate, -1),
      RD_KAFKA_V_HEADER("occurredOn", when, -1), RD_KAFKA_V_END);
  return e ? -1 : 0;
}

int mock_produce_samples(mock_t *m, const char *topic, int records,
                         int duplicates, char *err, size_t errlen) {
  int rc = -1, originals = records - duplicates;
  char **ids = calloc((size_t)(originals > 0 ? originals : 1), sizeof(*ids));
  GRand *rand = g_rand_new_with_seed(42);
  for (int i = 0; i < records; i++) {
    int dup = i >= originals;
    if (!dup)
      ids[i] = g_uuid_string_random();
    const char *id = dup ? ids[g_rand_int_range(rand, 0, originals)] : ids[i];
    if (produce_one(m, topic, id, i) != 0) {
      snprintf(err, errlen, "mock cluster: cannot produce to %s", topic);
      goto out;
    }
    rd_kafka_poll(m->rk, 0);
  }
  if (rd_kafka_flush(m->rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    snprintf(err, errlen, "mock cluster: producing to %s timed out", topic);
    goto out;
  }
  rc = 0;
out:
  for (int i = 0; i < originals; i++)
    g_free(ids[i]);
  free(ids);
  g_rand_free(rand);
  return rc;
}
