/*
 * The demo's shop as a torture scenario: see shoputil.h.
 */
#include "shoputil.h"

#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_state.h"
#include "testutil.h"

/* ------------------------------------------------------------ events */

/* Event n, an original: kind n % 3, its figures added to the reference. */
static void original(shop_ref_t *r, unsigned n, shop_event_t *e) {
  unsigned kind = n % 3, k = n / 3;
  if (kind == 0) {
    int hour = (int)(k / 37) % SHOP_HOURS;
    int64_t amount = 100 + (int64_t)(k * 7919 % 40000);
    e->topic = SHOP_ORDERS;
    e->key[0] = '\0';
    snprintf(e->value, sizeof(e->value),
             "{\"orderId\":%u,\"amount\":%" PRId64
             ",\"occurredOn\":\"2026-01-01T%02d:%02u:00Z\"}",
             n, amount, 8 + hour, k % 60);
    r->orders[hour]++;
    r->revenue[hour] += amount;
  } else if (kind == 1) {
    unsigned coupon = k % SHOP_COUPONS + 1;
    e->topic = SHOP_REQUESTS;
    snprintf(e->key, sizeof(e->key), "%u", coupon);
    snprintf(e->value, sizeof(e->value),
             "{\"couponId\":%u,\"userId\":%u,\"requestId\":%u}", coupon,
             k % SHOP_USERS + 1, n);
    r->requests[coupon]++;
  } else {
    unsigned user = k % SHOP_USERS + 1;
    int64_t amount = (int64_t)(k % 11) * 500 - 2000;
    e->topic = SHOP_CHANGES;
    snprintf(e->key, sizeof(e->key), "user:%u", user);
    snprintf(e->value, sizeof(e->value),
             "{\"userId\":%u,\"seq\":%" PRId64 ",\"amount\":%" PRId64 "}", user,
             ++r->seq[user], amount);
    r->balance[user] += amount;
  }
  snprintf(e->id, sizeof(e->id), "shop-%06u", n);
  r->events++;
}

static const char *topic_of(const shop_t *s, const shop_event_t *e) {
  int i = strcmp(e->topic, SHOP_ORDERS) == 0     ? 0
          : strcmp(e->topic, SHOP_REQUESTS) == 0 ? 1
                                                 : 2;
  return s->topics[i] ? s->topics[i] : e->topic;
}

static void *feed(void *arg) {
  shop_t *s = arg;
  GArray *sent = g_array_new(FALSE, FALSE, sizeof(shop_event_t));
  for (unsigned n = 0; !s->stop; n++) {
    shop_event_t e;
    if (n % 10 == 9) {
      e = g_array_index(sent, shop_event_t, n * 7 % sent->len); /* again */
    } else {
      pthread_mutex_lock(&s->mu);
      original(&s->ref, n, &e);
      pthread_mutex_unlock(&s->mu);
      g_array_append_val(sent, e);
    }
    s->produce(s->ctx, &e, topic_of(s, &e));
    usleep((useconds_t)s->every_us); /* the pace of a shop, not a wait */
  }
  g_array_free(sent, TRUE);
  return NULL;
}

void shop_feed_start(shop_t *s, shop_produce_fn produce, void *ctx,
                     int every_us, const char *const topics[3]) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  s->produce = produce;
  s->ctx = ctx;
  s->every_us = every_us;
  for (int i = 0; topics && i < 3; i++)
    s->topics[i] = topics[i];
  ck_assert_int_eq(pthread_create(&s->feeder, NULL, feed, s), 0);
}

void shop_feed_stop(shop_t *s) {
  s->stop = 1;
  pthread_join(s->feeder, NULL);
  pthread_mutex_destroy(&s->mu);
}

int64_t shop_events(shop_t *s) {
  pthread_mutex_lock(&s->mu);
  int64_t n = s->ref.events;
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* ------------------------------------------------------------ config */

char *shop_config(const char *dir, const char *name, const char *bootstraps,
                  const char *db, const char *kafka,
                  const char *const topics[3], const char *group_suffix) {
  const char *t[3] = {SHOP_ORDERS, SHOP_REQUESTS, SHOP_CHANGES};
  const char *g = group_suffix ? group_suffix : "";
  for (int i = 0; topics && i < 3; i++)
    t[i] = topics[i];
  char *path = tu_write_filef(
      dir, name,
      "log_level = \"info\";\n"
      "kafka = { bootstrap_servers = \"%s\";\n  %s };\n"
      "dedup = { path = \"%s\"; };\n"
      "pipelines = (\n"
      "  { name = \"order-analytics\"; group_id = \"order-analytics%s\";\n"
      "    topics = [ \"%s\" ];\n"
      "    plugin = \"" TOP_BUILDDIR "/plugins/.libs/order_analytics.so\"; },\n"
      "  { name = \"coupon-issuer\"; group_id = \"coupon-issuer%s\";\n"
      "    topics = [ \"%s\" ];\n"
      "    plugin = \"" TOP_BUILDDIR "/plugins/.libs/coupon_issuer.so\";\n"
      "    config = { stock = %d; }; },\n"
      "  { name = \"balance-ledger\"; group_id = \"balance-ledger%s\";\n"
      "    topics = [ \"%s\" ];\n"
      "    plugin = \"" TOP_BUILDDIR "/plugins/.libs/balance_ledger.so\"; }\n"
      ");\n",
      bootstraps, kafka ? kafka : "", db, g, t[0], g, t[1], SHOP_STOCK, g,
      t[2]);
  chmod(path, 0644);
  return path;
}

/* ------------------------------------------------------------- state */

static void ints(const void *v, size_t n, int64_t *out, int count) {
  char *text = g_strndup(v, n), *p = text;
  for (int i = 0; i < count; i++)
    out[i] = g_ascii_strtoll(p, &p, 10);
  g_free(text);
}

/* The number at byte `at` of a key, or -1. */
static long key_number(const void *k, size_t kl, size_t at) {
  char *text = g_strndup(k, kl);
  long n = kl > at ? strtol(text + at, NULL, 10) : -1;
  g_free(text);
  return n;
}

static int add_hour(void *arg, const void *k, size_t kl, const void *v,
                    size_t vl) {
  shop_state_t *st = arg;
  int64_t x[2];
  long hour = key_number(k, kl, strlen("hour:2026-01-01T")) - 8;
  ints(v, vl, x, 2);
  if (hour < 0 || hour >= SHOP_HOURS)
    st->unknown++;
  else {
    st->s.orders[hour] += x[0];
    st->s.revenue[hour] += x[1];
  }
  return 0;
}

static int add_coupon(void *arg, const void *k, size_t kl, const void *v,
                      size_t vl) {
  shop_state_t *st = arg;
  long c = key_number(k, kl, strlen("coupon:"));
  int64_t x[2];
  ints(v, vl, x, 2);
  if (c < 1 || c > SHOP_COUPONS)
    st->unknown++;
  else {
    st->issued[c] = x[0];
    st->refused[c] = x[1];
    st->s.requests[c] = x[0] + x[1];
  }
  return 0;
}

static int add_user(void *arg, const void *k, size_t kl, const void *v,
                    size_t vl) {
  shop_state_t *st = arg;
  long u = key_number(k, kl, strlen("user:"));
  int64_t x[5]; /* last seq, balance, entries, gaps, reorders */
  ints(v, vl, x, 5);
  if (u < 1 || u > SHOP_USERS)
    st->unknown++;
  else {
    st->s.seq[u] = x[0];
    st->s.balance[u] = x[1];
    st->entries[u] = x[2];
    st->violations += x[3] + x[4];
  }
  return 0;
}

shop_state_t shop_stored(const char *db) {
  static const struct {
    const char *pipeline, *prefix;
    store_state_fn fn;
  } scans[] = {{"order-analytics", "hour:", add_hour},
               {"coupon-issuer", "coupon:", add_coupon},
               {"balance-ledger", "user:", add_user}};
  shop_state_t st = {0};
  char err[512];
  sstate_t *ss = NULL;
  uint32_t scope;
  if (access(db, F_OK) != 0)
    return st;
  ck_assert_msg(sstate_open(&ss, db, 1000, err, sizeof(err)) == 0, "%s", err);
  for (size_t i = 0; i < G_N_ELEMENTS(scans); i++)
    if (sstate_scope(ss, scans[i].pipeline, &scope, err, sizeof(err)) == 1)
      ck_assert_msg(sstate_scan(ss, scope, scans[i].prefix,
                                strlen(scans[i].prefix), scans[i].fn, &st, err,
                                sizeof(err)) == 0,
                    "%s", err);
  sstate_close(ss);
  return st;
}

int64_t shop_applied(const shop_state_t *st) {
  int64_t n = 0;
  for (int h = 0; h < SHOP_HOURS; h++)
    n += st->s.orders[h];
  for (int c = 1; c <= SHOP_COUPONS; c++)
    n += st->s.requests[c];
  for (int u = 1; u <= SHOP_USERS; u++)
    n += st->entries[u];
  return n;
}

void shop_compare(const shop_state_t *got, const shop_ref_t *want) {
  for (int c = 1; c <= SHOP_COUPONS; c++) {
    int64_t issued = MIN(SHOP_STOCK, want->requests[c]);
    ck_assert_msg(got->issued[c] == issued &&
                      got->refused[c] == want->requests[c] - issued,
                  "coupon %d: issued %" PRId64 ", refused %" PRId64
                  "; the %" PRId64 " requests say %" PRId64 " and %" PRId64,
                  c, got->issued[c], got->refused[c], want->requests[c], issued,
                  want->requests[c] - issued);
  }
  for (int u = 1; u <= SHOP_USERS; u++)
    ck_assert_msg(
        got->s.balance[u] == want->balance[u] &&
            got->s.seq[u] == want->seq[u] && got->entries[u] == want->seq[u],
        "user %d: balance %" PRId64 ", seq %" PRId64 ", entries %" PRId64
        "; the changes say %" PRId64 " over %" PRId64,
        u, got->s.balance[u], got->s.seq[u], got->entries[u], want->balance[u],
        want->seq[u]);
  for (int h = 0; h < SHOP_HOURS; h++)
    ck_assert_msg(got->s.orders[h] == want->orders[h] &&
                      got->s.revenue[h] == want->revenue[h],
                  "hour %d: %" PRId64 " orders, revenue %" PRId64
                  "; the orders say %" PRId64 " and %" PRId64,
                  8 + h, got->s.orders[h], got->s.revenue[h], want->orders[h],
                  want->revenue[h]);
  ck_assert_int_eq(got->violations, 0);
  ck_assert_int_eq(got->unknown, 0);
}
