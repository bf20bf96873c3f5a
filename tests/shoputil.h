/*
 * The demo's shop as a torture scenario, shared by the mock cluster's
 * (check_state_crash) and the real broker's (check_kafka) kill -9 tests:
 * events for the three domain plugins (orders, coupon requests keyed by
 * coupon, balance changes keyed user:<id>), a tenth of them published
 * again with an earlier event's ID, key and value, as a retrying
 * publisher does; the reference they add up to; a config running the
 * three plugins; and the plugins' state read back from the dedup
 * database, compared with the reference exactly.
 *
 * Threads: the feeder runs on a thread of its own; the reference is read
 * under its lock (shop_events()) while it runs, and whole after
 * shop_feed_stop().
 */
#ifndef KHOST_SHOPUTIL_H
#define KHOST_SHOPUTIL_H

#include <pthread.h>
#include <stdint.h>

#define SHOP_COUPONS 4
#define SHOP_USERS 7
#define SHOP_HOURS 5
#define SHOP_STOCK 40

#define SHOP_ORDERS "order-completed"
#define SHOP_REQUESTS "coupon-issue"
#define SHOP_CHANGES "balance-activity"

/* What the original events add up to (index 0 of coupons and users
 * unused). */
typedef struct shop_ref {
  int64_t requests[SHOP_COUPONS + 1];
  int64_t balance[SHOP_USERS + 1], seq[SHOP_USERS + 1];
  int64_t orders[SHOP_HOURS], revenue[SHOP_HOURS];
  int64_t events; /* originals */
} shop_ref_t;

/* One event to publish; key "" for none. */
typedef struct shop_event {
  const char *topic;
  char id[24], key[24], value[160];
} shop_event_t;

/* Publishes one event (the topic is e->topic, or the name given to
 * shop_feed_start() for it). */
typedef void (*shop_produce_fn)(void *ctx, const shop_event_t *e,
                                const char *topic);

typedef struct shop {
  shop_ref_t ref;
  pthread_mutex_t mu;
  pthread_t feeder;
  volatile int stop;
  int every_us;
  shop_produce_fn produce;
  void *ctx;
  const char *topics[3]; /* orders, requests, changes */
} shop_t;

/* Publish an event every every_us until shop_feed_stop(); topics[3] are
 * the names of the orders, requests and changes topics (NULL: the
 * SHOP_* names). */
void shop_feed_start(shop_t *s, shop_produce_fn produce, void *ctx,
                     int every_us, const char *const topics[3]);
void shop_feed_stop(shop_t *s);
/* The originals published so far. */
int64_t shop_events(shop_t *s);

/* A config running the three plugins, one member each, on the dedup
 * database db: <dir>/<name>; kafka goes into the kafka group, after the
 * bootstrap servers; topics and groups as in shop_feed_start() (NULL:
 * the SHOP_* names, groups named after the pipelines). */
char *shop_config(const char *dir, const char *name, const char *bootstraps,
                  const char *db, const char *kafka,
                  const char *const topics[3], const char *group_suffix);

/* The plugins' state in db (nothing when db does not exist). */
typedef struct shop_state {
  shop_ref_t s;
  int64_t issued[SHOP_COUPONS + 1], refused[SHOP_COUPONS + 1];
  int64_t entries[SHOP_USERS + 1], violations, unknown;
} shop_state_t;

shop_state_t shop_stored(const char *db);
/* Events whose effects are durable: orders, requests, ledger entries. */
int64_t shop_applied(const shop_state_t *st);
/* Fails the test unless every coupon's issued and refused, every user's
 * balance, seq and entries and every hour's orders and revenue are what
 * want says, with no ordering violation. */
void shop_compare(const shop_state_t *got, const shop_ref_t *want);

#endif
