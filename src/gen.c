/*
 * The event generator (see gen.h): a seeded model of the source document's
 * e-commerce events, and a producer loop that sends them to Kafka and
 * counts what was acknowledged.
 *
 * Threads: gen_run() is synchronous; librdkafka calls the delivery, error
 * and log callbacks from rd_kafka_poll()/rd_kafka_flush() on the calling
 * thread (the log callback also from librdkafka's own threads, which only
 * use the thread-safe logger).
 */
#include "gen.h"

#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_client.h"
#include "log.h"

/* Originals kept for re-publishing: duplicates pick one of the latest. */
#define GEN_RING 1024
#define GEN_PRODUCTS 100
#define GEN_WHO "gen"

static const struct {
  const char *topic, *event_type;
  unsigned weight; /* share of the mix, in % */
  int keyed;
} topic_info[GEN_N_TOPICS] = {
    [GEN_ORDER] = {"order-completed", "ORDER_COMPLETED", 30, 0},
    [GEN_COUPON] = {"coupon-issue", "COUPON_ISSUED", 20, 1},
    [GEN_USER] = {"user-activity", "USER_ACTIVITY", 20, 0},
    [GEN_BALANCE] = {"balance-activity", "BALANCE_CHARGED", 20, 1},
    [GEN_PRODUCT] = {"product-activity", "PRODUCT_STOCK_CHANGED", 10, 1},
};

const char *gen_topic_name(int t) {
  return topic_info[t].topic;
}

const char *gen_event_type(int t) {
  return topic_info[t].event_type;
}

int gen_topic_index(const char *topic) {
  for (int t = 0; t < GEN_N_TOPICS; t++)
    if (strcmp(topic, topic_info[t].topic) == 0)
      return t;
  return -1;
}

const char *gen_event_type_of(const char *topic) {
  int t = gen_topic_index(topic);
  return t < 0 ? "GENERAL_EVENT" : topic_info[t].event_type;
}

void gen_opts_default(gen_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->count = 1000;
  o->seed = g_random_int();
  o->users = 100;
  o->coupons = 10;
}

uint64_t gen_report_produced(const gen_report_t *r, int t) {
  return r->originals[t] + r->duplicates[t];
}

/* -------------------------------------------------------------- model */

struct gen_model {
  gen_opts_t o;
  GRand *rand;
  int32_t partitions[GEN_N_TOPICS]; /* 0: unknown */
  uint64_t round_robin[GEN_N_TOPICS];
  int mix[100]; /* GEN_* per percent of the mix, over the chosen topics */
  int64_t *balance_seq; /* last seq per user (index user - 1) */
  uint64_t orders, requests;
  gen_event_t *ring; /* the latest originals */
  size_t ring_len, ring_next;
  gen_event_t cur;
};

/* A version 4 UUID made of the model's random numbers: the seed decides
 * it, so a seed reproduces the eventIds. */
static void make_uuid(GRand *r, char out[37]) {
  uint8_t b[16];
  for (int i = 0; i < 16; i += 4) {
    guint32 v = g_rand_int(r);
    for (int k = 0; k < 4; k++)
      b[i + k] = (uint8_t)(v >> (8 * k));
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
           "%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
           b[11], b[12], b[13], b[14], b[15]);
}

/* Now, as ISO-8601 UTC with milliseconds: 2025-11-25T10:00:00.123Z. */
static void now_iso(char out[32]) {
  gint64 us = g_get_real_time();
  time_t secs = (time_t)(us / G_USEC_PER_SEC);
  struct tm tm;
  char base[24];
  gmtime_r(&secs, &tm);
  strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, 32, "%s.%03dZ", base, (int)(us / 1000 % 1000));
}

/* Serialise obj (taken) into e->value; 0, or -1 when it does not fit. */
static int set_value(gen_event_t *e, json_t *obj) {
  size_t n = obj ? json_dumpb(obj, e->value, sizeof(e->value) - 1,
                              JSON_COMPACT | JSON_PRESERVE_ORDER)
                 : 0;
  json_decref(obj);
  if (n == 0 || n >= sizeof(e->value))
    return -1;
  e->value[n] = '\0';
  e->value_len = n;
  return 0;
}

static int pick(GRand *r, int n) {
  return g_rand_int_range(r, 1, n + 1);
}

static int build_order(gen_model_t *m, gen_event_t *e) {
  uint64_t order = ++m->orders;
  int user = pick(m->rand, m->o.users);
  /* Amounts in cents: 1.00 to 500.00. */
  json_int_t amount = g_rand_int_range(m->rand, 100, 50001);
  snprintf(e->aggregate_id, sizeof(e->aggregate_id), "%" PRIu64, order);
  return set_value(e, json_pack("{s:I, s:i, s:I, s:s}", "orderId",
                                (json_int_t)order, "userId", user, "amount",
                                amount, "occurredOn", e->occurred_on));
}

static int build_coupon(gen_model_t *m, gen_event_t *e) {
  int coupon = pick(m->rand, m->o.coupons);
  int user = pick(m->rand, m->o.users);
  uint64_t request = ++m->requests;
  snprintf(e->aggregate_id, sizeof(e->aggregate_id), "%d", coupon);
  snprintf(e->key, sizeof(e->key), "%d", coupon);
  return set_value(e,
                   json_pack("{s:i, s:i, s:I, s:s}", "couponId", coupon,
                             "userId", user, "requestId", (json_int_t)request,
                             "occurredOn", e->occurred_on));
}

static int build_user(gen_model_t *m, gen_event_t *e) {
  static const char *const actions[] = {"VIEW_PRODUCT", "ADD_TO_CART", "SEARCH",
                                        "LOGIN"};
  int user = pick(m->rand, m->o.users);
  int action = g_rand_int_range(m->rand, 0, G_N_ELEMENTS(actions));
  int product = pick(m->rand, GEN_PRODUCTS);
  snprintf(e->aggregate_id, sizeof(e->aggregate_id), "%d", user);
  return set_value(e, json_pack("{s:i, s:s, s:i, s:s}", "userId", user,
                                "action", actions[action], "productId", product,
                                "occurredOn", e->occurred_on));
}

static int build_balance(gen_model_t *m, gen_event_t *e) {
  int user = pick(m->rand, m->o.users);
  int64_t seq = ++m->balance_seq[user - 1];
  /* Charges of 5.00 to 500.00, in steps of 5.00. */
  json_int_t amount = (json_int_t)g_rand_int_range(m->rand, 1, 101) * 500;
  snprintf(e->aggregate_id, sizeof(e->aggregate_id), "%d", user);
  snprintf(e->key, sizeof(e->key), "user:%d", user);
  return set_value(e, json_pack("{s:i, s:I, s:I, s:s}", "userId", user, "seq",
                                (json_int_t)seq, "amount", amount, "occurredOn",
                                e->occurred_on));
}

static int build_product(gen_model_t *m, gen_event_t *e) {
  int product = pick(m->rand, GEN_PRODUCTS);
  int restock = g_rand_int_range(m->rand, 0, 5) == 0;
  int change = restock ? g_rand_int_range(m->rand, 10, 101)
                       : -g_rand_int_range(m->rand, 1, 4);
  snprintf(e->aggregate_id, sizeof(e->aggregate_id), "%d", product);
  snprintf(e->key, sizeof(e->key), "product:%d", product);
  return set_value(e, json_pack("{s:i, s:i, s:s, s:s}", "productId", product,
                                "change", change, "reason",
                                restock ? "RESTOCK" : "ORDER", "occurredOn",
                                e->occurred_on));
}

static void build_original(gen_model_t *m, gen_event_t *e) {
  static int (*const build[GEN_N_TOPICS])(gen_model_t *, gen_event_t *) = {
      build_order, build_coupon, build_user, build_balance, build_product};
  int t = m->mix[g_rand_int_range(m->rand, 0, 100)];
  memset(e, 0, sizeof(*e));
  e->topic = t;
  make_uuid(m->rand, e->event_id);
  now_iso(e->occurred_on);
  /* The values are small and fixed in shape: they always fit. */
  if (build[t](m, e) != 0)
    g_error("gen: a %s value does not fit in %d bytes", topic_info[t].topic,
            GEN_VALUE_MAX);
  e->partition = GEN_PARTITION_ANY;
  if (!topic_info[t].keyed && m->partitions[t] > 0)
    e->partition = (int32_t)(m->round_robin[t]++ % (uint64_t)m->partitions[t]);
}

/* A copy of an earlier original: keyed records follow their key to the
 * same partition, unkeyed ones may land in any. */
static void build_duplicate(gen_model_t *m, gen_event_t *e) {
  size_t i = (size_t)g_rand_int_range(m->rand, 0, (gint32)m->ring_len);
  *e = m->ring[i];
  e->duplicate = 1;
  if (!topic_info[e->topic].keyed && m->partitions[e->topic] > 0)
    e->partition = g_rand_int_range(m->rand, 0, m->partitions[e->topic]);
}

const gen_event_t *gen_model_next(gen_model_t *m) {
  if (m->ring_len > 0 && g_rand_double(m->rand) < m->o.duplicates) {
    build_duplicate(m, &m->cur);
    return &m->cur;
  }
  build_original(m, &m->cur);
  m->ring[m->ring_next] = m->cur;
  m->ring_next = (m->ring_next + 1) % GEN_RING;
  if (m->ring_len < GEN_RING)
    m->ring_len++;
  return &m->cur;
}

/* Spread 100 slots over the chosen topics by their weights. */
static void fill_mix(gen_model_t *m) {
  unsigned chosen = m->o.topics ? m->o.topics : (1u << GEN_N_TOPICS) - 1;
  unsigned total = 0, slot = 0, acc = 0;
  for (int t = 0; t < GEN_N_TOPICS; t++)
    if (chosen & (1u << t))
      total += topic_info[t].weight;
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    if (!(chosen & (1u << t)))
      continue;
    acc += topic_info[t].weight;
    for (; slot < 100 * acc / total; slot++)
      m->mix[slot] = t;
  }
}

gen_model_t *gen_model_new(const gen_opts_t *o, const int32_t *partitions) {
  gen_model_t *m = g_new0(gen_model_t, 1);
  m->o = *o;
  if (m->o.users < 1)
    m->o.users = 1;
  if (m->o.coupons < 1)
    m->o.coupons = 1;
  m->rand = g_rand_new_with_seed(o->seed);
  for (int t = 0; partitions && t < GEN_N_TOPICS; t++)
    m->partitions[t] = partitions[t];
  fill_mix(m);
  m->balance_seq = g_new0(int64_t, m->o.users);
  m->ring = g_new(gen_event_t, GEN_RING);
  return m;
}

void gen_model_free(gen_model_t *m) {
  if (!m)
    return;
  g_rand_free(m->rand);
  g_free(m->balance_seq);
  g_free(m->ring);
  g_free(m);
}

/* ---------------------------------------------------------- producing */

typedef struct run {
  gen_report_t *r;
  char first_error[512];
  int fatal;
} run_t;

/* The message opaque carries the topic and whether it is a duplicate. */
#define TAG(t, dup) ((void *)(intptr_t)(((t) << 1) | (dup)))

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                        void *opaque) {
  run_t *run = kafka_ctx(opaque);
  intptr_t tag = (intptr_t)msg->_private;
  int t = (int)(tag >> 1);
  if (msg->err) {
    run->r->failed[t]++;
    if (!run->first_error[0])
      snprintf(run->first_error, sizeof(run->first_error),
               "%s [%" PRId32 "]: %s", topic_info[t].topic, msg->partition,
               rd_kafka_err2str(msg->err));
  } else if (tag & 1) {
    run->r->duplicates[t]++;
  } else {
    run->r->originals[t]++;
  }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  run_t *run = kafka_ctx(opaque);
  char fatal[512];
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
    snprintf(run->first_error, sizeof(run->first_error),
             "fatal producer error: %.400s", fatal);
    run->fatal = 1;
    return;
  }
  log_msg(KHOST_LOG_WARNING, GEN_WHO, "kafka: %s: %s",
          rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

rd_kafka_conf_t *gen_conf(const char *bootstraps, char *const *props, size_t n,
                          char *err, size_t errlen) {
  char errstr[512];
  const char *bad = NULL; /* the property refused */
  rd_kafka_conf_t *conf = kafka_conf_empty();
  rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
  rd_kafka_conf_set(conf, "acks", "all", NULL, 0);
  rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
  /* A misspelt topic is an error, not a new topic. */
  rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", NULL, 0);
  if (bootstraps && kafka_conf_set(conf, "bootstrap.servers", bootstraps,
                                   errstr, sizeof(errstr)))
    bad = "bootstrap.servers";
  for (size_t i = 0; !bad && i < n; i++)
    if (kafka_conf_set_pair(conf, props[i], errstr, sizeof(errstr)) != 0)
      bad = props[i];
  if (bad) {
    snprintf(err, errlen, "%s: %s", bad, errstr);
    rd_kafka_conf_destroy(conf);
    conf = NULL;
  }
  return conf;
}

/* Partition count of every chosen topic; a missing topic is an error. */
static int partition_counts(rd_kafka_t *rk, unsigned chosen, int32_t *out,
                            char *err, size_t errlen) {
  int rc = 0;
  for (int t = 0; t < GEN_N_TOPICS && rc == 0; t++) {
    const rd_kafka_metadata_t *md = NULL;
    if (!(chosen & (1u << t)))
      continue;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic_info[t].topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (!e && (md->topic_cnt != 1 || md->topics[0].err))
      e = md->topic_cnt == 1 ? md->topics[0].err
                             : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    if (e) {
      snprintf(err, errlen, "topic %s: %s", topic_info[t].topic,
               rd_kafka_err2str(e));
      rc = -1;
    } else {
      out[t] = md->topics[0].partition_cnt;
    }
    if (md)
      rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
  }
  return rc;
}

static rd_kafka_resp_err_t produce(rd_kafka_t *rk, const gen_event_t *e) {
  rd_kafka_resp_err_t err;
  for (;;) {
    err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic_info[e->topic].topic),
        RD_KAFKA_V_PARTITION(e->partition),
        RD_KAFKA_V_KEY(e->key[0] ? e->key : NULL, strlen(e->key)),
        RD_KAFKA_V_VALUE((void *)e->value, e->value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADER("eventId", e->event_id, -1),
        RD_KAFKA_V_HEADER("eventType", topic_info[e->topic].event_type, -1),
        RD_KAFKA_V_HEADER("aggregateId", e->aggregate_id, -1),
        RD_KAFKA_V_HEADER("occurredOn", e->occurred_on, -1),
        RD_KAFKA_V_OPAQUE(TAG(e->topic, e->duplicate)), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
      return err;
    /* The local queue is full: let deliveries drain it. */
    rd_kafka_poll(rk, 100);
  }
}

static int stopping(const gen_opts_t *o, const run_t *run, uint64_t n,
                    int64_t start_us) {
  return run->fatal || (o->stop && *o->stop) || (o->count && n >= o->count) ||
         (o->duration_ms &&
          g_get_monotonic_time() - start_us >= o->duration_ms * 1000);
}

/* Wait until record n is due at the configured rate, serving callbacks. */
static void pace(rd_kafka_t *rk, const gen_opts_t *o, uint64_t n,
                 int64_t start_us) {
  int64_t due =
      o->rate > 0 ? start_us + (int64_t)((double)n * 1e6 / o->rate) : 0;
  /* In slices, so that a stop request is seen at low rates too. */
  for (int64_t now = g_get_monotonic_time();
       now < due && !(o->stop && *o->stop); now = g_get_monotonic_time())
    rd_kafka_poll(rk, (int)MIN((due - now + 999) / 1000, 100));
  rd_kafka_poll(rk, 0);
}

static int produce_all(rd_kafka_t *rk, const gen_opts_t *o, run_t *run,
                       gen_model_t *m, char *err, size_t errlen) {
  int64_t start = g_get_monotonic_time();
  int rc = 0;
  for (uint64_t n = 0; rc == 0 && !stopping(o, run, n, start); n++) {
    pace(rk, o, n, start);
    const gen_event_t *e = gen_model_next(m);
    rd_kafka_resp_err_t e_err = produce(rk, e);
    if (e_err) {
      snprintf(err, errlen, "cannot produce to %s: %s",
               topic_info[e->topic].topic, rd_kafka_err2str(e_err));
      rc = -1;
    }
  }
  /* Each record ends acknowledged or failed within message.timeout.ms. */
  while (rd_kafka_flush(rk, 1000) == RD_KAFKA_RESP_ERR__TIMED_OUT &&
         !run->fatal)
    ;
  return rc;
}

/* The error text of a run whose records did not all arrive; 0 if they
 * did. */
static int delivery_result(const run_t *run, char *err, size_t errlen) {
  uint64_t failed = 0;
  for (int t = 0; t < GEN_N_TOPICS; t++)
    failed += run->r->failed[t];
  if (run->fatal)
    snprintf(err, errlen, "%s", run->first_error);
  else if (failed)
    snprintf(err, errlen, "%" PRIu64 " record(s) failed delivery; first: %s",
             failed, run->first_error);
  return run->fatal || failed ? -1 : 0;
}

int gen_run(rd_kafka_conf_t *conf, const gen_opts_t *o, gen_report_t *r,
            char *err, size_t errlen) {
  char errstr[512];
  int32_t partitions[GEN_N_TOPICS] = {0};
  unsigned chosen = o->topics ? o->topics : (1u << GEN_N_TOPICS) - 1;
  run_t run = {.r = r};
  gen_model_t *m = NULL;
  int64_t start = g_get_monotonic_time();
  int rc = -1;
  memset(r, 0, sizeof(*r));
  r->seed = o->seed;
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_error_cb(conf, on_error);
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_PRODUCER, conf, GEN_WHO, &run, errstr, sizeof(errstr));
  if (!rk) {
    snprintf(err, errlen, "producer: %s", errstr);
    goto out;
  }
  if (partition_counts(rk, chosen, partitions, err, errlen) != 0)
    goto out;
  m = gen_model_new(o, partitions);
  if (produce_all(rk, o, &run, m, err, errlen) == 0)
    rc = delivery_result(&run, err, errlen);
out:
  r->elapsed_ms = (g_get_monotonic_time() - start) / 1000;
  gen_model_free(m);
  kafka_destroy(rk);
  return rc;
}

/* ------------------------------------------------------------ reports */

void gen_report_log(const gen_report_t *r, const char *who) {
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    if (gen_report_produced(r, t) == 0 && r->failed[t] == 0)
      continue;
    log_msg(KHOST_LOG_NOTICE, who,
            "%s: produced %" PRIu64 " records: %" PRIu64 " events + %" PRIu64
            " re-published duplicates (an earlier eventId)%s",
            topic_info[t].topic, gen_report_produced(r, t), r->originals[t],
            r->duplicates[t], r->failed[t] ? "; some failed delivery" : "");
  }
}

/* A row of the JSON report; topic NULL for the total. */
static json_t *report_row(const char *topic, uint64_t produced, uint64_t events,
                          uint64_t duplicates, uint64_t failed) {
  json_t *row = json_object();
  if (topic)
    json_object_set_new(row, "topic", json_string(topic));
  json_object_set_new(row, "produced", json_integer((json_int_t)produced));
  json_object_set_new(row, "events", json_integer((json_int_t)events));
  json_object_set_new(row, "duplicates", json_integer((json_int_t)duplicates));
  json_object_set_new(row, "failed", json_integer((json_int_t)failed));
  return row;
}

void gen_report_print_json(const gen_report_t *r, FILE *out) {
  uint64_t sum[3] = {0};
  json_t *topics = json_array();
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    uint64_t produced = gen_report_produced(r, t);
    if (produced == 0 && r->failed[t] == 0)
      continue;
    json_array_append_new(topics, report_row(topic_info[t].topic, produced,
                                             r->originals[t], r->duplicates[t],
                                             r->failed[t]));
    sum[0] += r->originals[t];
    sum[1] += r->duplicates[t];
    sum[2] += r->failed[t];
  }
  json_t *doc = json_object();
  json_object_set_new(doc, "topics", topics);
  json_object_set_new(
      doc, "total", report_row(NULL, sum[0] + sum[1], sum[0], sum[1], sum[2]));
  json_object_set_new(doc, "seed", json_integer((json_int_t)r->seed));
  json_object_set_new(doc, "elapsed_ms",
                      json_integer((json_int_t)r->elapsed_ms));
  json_dumpf(doc, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  fputc('\n', out);
  json_decref(doc);
}

void gen_report_print(const gen_report_t *r, FILE *out) {
  uint64_t sum[3] = {0};
  fprintf(out, "%-18s %10s %10s %10s %8s\n", "topic", "produced", "events",
          "duplicates", "failed");
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    uint64_t produced = gen_report_produced(r, t);
    if (produced == 0 && r->failed[t] == 0)
      continue;
    fprintf(out,
            "%-18s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64 "\n",
            topic_info[t].topic, produced, r->originals[t], r->duplicates[t],
            r->failed[t]);
    sum[0] += r->originals[t];
    sum[1] += r->duplicates[t];
    sum[2] += r->failed[t];
  }
  fprintf(out, "%-18s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64 "\n",
          "total", sum[0] + sum[1], sum[0], sum[1], sum[2]);
  fprintf(out,
          "seed %" PRIu32 " (the same seed gives the same events), %.1f s\n",
          r->seed, (double)r->elapsed_ms / 1000);
}
