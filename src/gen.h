/*
 * The event generator behind khost-gen and the config's mock.generate: the
 * e-commerce events of the source document (SEED-kafka-concepts.md),
 * produced to Kafka the way its publishers do.
 *
 * Five topics, one per domain (order-completed, coupon-issue,
 * user-activity, balance-activity, product-activity); every record carries
 * the headers eventId (a UUID), eventType, aggregateId and occurredOn
 * (ISO-8601 UTC with milliseconds) and a JSON value. Keys follow the
 * document: balance-activity is keyed "user:<id>" (a user's balance changes
 * stay in one partition, in order), coupon-issue by the coupon id,
 * product-activity by "product:<id>"; order-completed and user-activity
 * have no key and are spread round-robin.
 *
 * A share of the records re-publishes an earlier event (same eventId, key
 * and value), as a publisher that retries after an unacknowledged send
 * does: keyed ones land in the same partition again, unkeyed ones possibly
 * in another.
 *
 * The model is seeded: one seed gives the same events (eventIds, keys,
 * values, partitions), except for occurredOn, which is the time the event
 * was made.
 */
#ifndef KHOST_GEN_H
#define KHOST_GEN_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
  GEN_ORDER = 0, /* order-completed, ORDER_COMPLETED */
  GEN_COUPON,    /* coupon-issue, COUPON_ISSUED */
  GEN_USER,      /* user-activity, USER_ACTIVITY */
  GEN_BALANCE,   /* balance-activity, BALANCE_CHARGED */
  GEN_PRODUCT,   /* product-activity, PRODUCT_STOCK_CHANGED */
  GEN_N_TOPICS
};

/* Topic name and eventType of GEN_* t. */
const char *gen_topic_name(int t);
const char *gen_event_type(int t);
/* GEN_* of a topic name, or -1. */
int gen_topic_index(const char *topic);
/* The eventType the document's publishers give a topic ("GENERAL_EVENT"
 * for any other topic). */
const char *gen_event_type_of(const char *topic);

typedef struct gen_opts {
  uint64_t count;      /* records to produce (duplicates included); 0: no
                          limit (then duration_ms is one) */
  int64_t duration_ms; /* stop producing after this long; 0: no limit */
  double rate;         /* records per second; 0: as fast as possible */
  uint32_t seed;
  int users;         /* user ids 1..users */
  int coupons;       /* coupon ids 1..coupons */
  double duplicates; /* share of records that re-publish an earlier event */
  unsigned topics;   /* 1u << GEN_* per topic produced to; 0: all five */
  /* Checked between records: producing stops when *stop != 0. May be NULL. */
  const volatile sig_atomic_t *stop;
} gen_opts_t;

/* count 1000, no duration or rate limit, a random seed, 100 users, 10
 * coupons, no duplicates, every topic. */
void gen_opts_default(gen_opts_t *o);

/* What was produced; a record counts once it is acknowledged. */
typedef struct gen_report {
  uint64_t originals[GEN_N_TOPICS];  /* records with a new eventId */
  uint64_t duplicates[GEN_N_TOPICS]; /* records re-publishing an earlier one */
  uint64_t failed[GEN_N_TOPICS];     /* records whose delivery failed */
  uint32_t seed;
  int64_t elapsed_ms;
} gen_report_t;

/* originals + duplicates of topic t. */
uint64_t gen_report_produced(const gen_report_t *r, int t);

/* ------------------------------------------------------------- model */

/* Where a record goes: a partition number, or GEN_PARTITION_ANY for the
 * producer's partitioner (hash of the key). */
#define GEN_PARTITION_ANY (-1)
#define GEN_VALUE_MAX 256

typedef struct gen_event {
  int topic;         /* GEN_* */
  int duplicate;     /* re-publishes an earlier event */
  int32_t partition; /* or GEN_PARTITION_ANY */
  char event_id[37];
  char aggregate_id[24];
  char occurred_on[32];
  char key[24]; /* "" when the record has no key */
  char value[GEN_VALUE_MAX];
  size_t value_len;
} gen_event_t;

typedef struct gen_model gen_model_t;

/* A model with o's seed, users, coupons, duplicates and topics.
 * partitions[t] is topic t's partition count, used to spread unkeyed
 * records; NULL (or 0) leaves them to the partitioner. */
gen_model_t *gen_model_new(const gen_opts_t *o, const int32_t *partitions);
/* The next record; valid until the next call. */
const gen_event_t *gen_model_next(gen_model_t *m);
void gen_model_free(gen_model_t *m);

/* ---------------------------------------------------------- producing */

/* A producer configuration with the document's reliability settings
 * (enable.idempotence=true, acks=all), no automatic topic creation,
 * bootstrap.servers, then the extra "name=value" properties of props (n of
 * them). NULL with err naming the bad property. */
rd_kafka_conf_t *gen_conf(const char *bootstraps, char *const *props, size_t n,
                          char *err, size_t errlen);

/* Produce o's events with a producer made from conf (taken, also on
 * failure), wait until every record is acknowledged or failed, and fill r.
 * Every topic must exist. Returns 0, or -1 with err set when Kafka could
 * not be reached, a topic is missing, or any record failed delivery (r
 * then says how many, per topic). */
int gen_run(rd_kafka_conf_t *conf, const gen_opts_t *o, gen_report_t *r,
            char *err, size_t errlen);

/* One notice line per topic produced to, through khost's logger:
 * "order-completed: produced 903 records: 858 events + 45 re-published
 * duplicates (an earlier eventId)". */
void gen_report_log(const gen_report_t *r, const char *who);
/* The report as a table, for people. */
void gen_report_print(const gen_report_t *r, FILE *out);
/* The same as one JSON object: "topics" (a row per topic produced to:
 * topic, produced, events, duplicates, failed), "total", "seed",
 * "elapsed_ms". */
void gen_report_print_json(const gen_report_t *r, FILE *out);

#endif
