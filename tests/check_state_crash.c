/*
 * Kill -9 torture of host-managed state: the `counter` fixture keeps a
 * plain counter per record value and partition in host state, with no
 * idempotency code of its own. The host is killed at random moments while a
 * producer feeds the topic, restarted each time, and at the end every counter
 * must equal the count of its value among the produced records: nothing lost,
 * nothing applied twice. Values ending in '!' make the first attempt
 * write and then ask for a retry, whose write must leave nothing.
 *
 * KHOST_STATE_KILLS sets the number of kills (default 20), and
 * KHOST_TEST_SEED the moments (the seed is printed).
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultutil.h"
#include "store_state.h"
#include "testutil.h"

#define VALUES 7

static fu_world_t w;

/* Record n's value: "c0".."c6", every 40th asking for a retry first. */
static const char *value_of(unsigned n) {
  static const char *const plain[VALUES] = {"c0", "c1", "c2", "c3",
                                            "c4", "c5", "c6"};
  static const char *const retry[VALUES] = {"c0!", "c1!", "c2!", "c3!",
                                            "c4!", "c5!", "c6!"};
  return n % 40 == 9 ? retry[n % VALUES] : plain[n % VALUES];
}

/* The counter fixture's pipeline; `pipeline` goes into its group. */
static char *counter_config(const char *pipeline) {
  char *so = tu_fixture("counter"), *db = fu_db_path(&w, 0);
  char *path = tu_write_filef(
      w.dir, "khost.cfg",
      "log_level = \"info\";\n"
      "kafka = { bootstrap_servers = \"%s\";\n"
      "  session_timeout_ms = 1500; heartbeat_interval_ms = 150;\n"
      "  topic_metadata_refresh_interval_ms = 1000; };\n"
      "dedup = { path = \"%s\"; };\n"
      "pipelines = ( {\n"
      "  name = \"" FU_PIPELINE "\"; group_id = \"" FU_GROUP "\";\n"
      "  topics = [ \"" FU_TOPIC "\" ]; members = 1;\n"
      "  plugin = \"%s\";\n"
      "  retry = { max = 3; backoff = \"10ms\"; backoff_max = \"50ms\"; };\n"
      "  %s\n"
      "} );\n",
      w.bootstraps, db, so, pipeline);
  chmod(path, 0644);
  free(so);
  free(db);
  return path;
}

typedef struct counts {
  int64_t v[VALUES];
} counts_t;

static int add_count(void *arg, const void *k, size_t kl, const void *v,
                     size_t vl) {
  counts_t *c = arg;
  char num[32];
  int i;
  ck_assert_uint_ge(kl, 11); /* "count:cN:pP" */
  i = ((const char *)k)[7] - '0';
  ck_assert(i >= 0 && i < VALUES);
  ck_assert_uint_lt(vl, sizeof(num));
  memcpy(num, v, vl);
  num[vl] = '\0';
  c->v[i] += strtoll(num, NULL, 10);
  return 0;
}

/* The counters durable in the database (no host running). */
static counts_t stored_counts(void) {
  counts_t c = {{0}};
  char err[512], *db = fu_db_path(&w, 0);
  sstate_t *st = NULL;
  uint32_t scope;
  if (access(db, F_OK) == 0) {
    ck_assert_msg(sstate_open(&st, db, 0, err, sizeof(err)) == 0, "%s", err);
    if (sstate_scope(st, FU_PIPELINE, &scope, err, sizeof(err)) == 1)
      ck_assert_msg(sstate_scan(st, scope, "count:", 6, add_count, &c, err,
                                sizeof(err)) == 0,
                    "%s", err);
    sstate_close(st);
  }
  free(db);
  return c;
}

static int64_t total(const counts_t *c) {
  int64_t t = 0;
  for (int i = 0; i < VALUES; i++)
    t += c->v[i];
  return t;
}

static int kills_wanted(void) {
  const char *env = getenv("KHOST_STATE_KILLS");
  return env ? atoi(env) : 20;
}

START_TEST(test_state_survives_kill9) {
  const char *env = getenv("KHOST_TEST_SEED");
  guint32 seed = env ? (guint32)strtoul(env, NULL, 10) : 20261207u;
  GRand *rand = g_rand_new_with_seed(seed);
  int kills = kills_wanted(), in_flight = 0;
  fprintf(stderr, "test_state_survives_kill9: seed %" PRIu32 "\n", seed);
  fu_start(&w, 1, 4);
  char *cfg = counter_config("");
  fu_feed_start(&w, 3, value_of);
  for (int k = 0; k < kills; k++) {
    char tag[32];
    snprintf(tag, sizeof(tag), "run%d", k);
    counts_t before = stored_counts();
    fu_proc_t *p = fu_khost(&w, tag, cfg, 0, 0);
    /* One kill in four while the host starts and joins; the others
     * while it consumes. */
    int consuming = k % 4 != 0;
    if (consuming)
      fu_wait_stderr(p, "assigned", 1, 30000);
    usleep((useconds_t)g_rand_int_range(rand, 0, consuming ? 600 : 1500) *
           1000);
    fu_kill9(p);
    counts_t after = stored_counts();
    in_flight += total(&after) > total(&before);
  }
  fu_feed_stop(&w);
  fu_run_to_end(&w, "last", cfg, 0);
  counts_t want = {{0}}, got = stored_counts();
  size_t produced = fu_produced(&w);
  for (unsigned n = 0; n < produced; n++)
    want.v[n % VALUES]++;
  fprintf(stderr,
          "%d kills, %d of them while records were handled; %zu records\n",
          kills, in_flight, produced);
  for (int i = 0; i < VALUES; i++)
    ck_assert_msg(got.v[i] == want.v[i],
                  "count:c%d is %" PRId64 ", the produced records say %" PRId64,
                  i, got.v[i], want.v[i]);
  ck_assert_int_ge(in_flight, kills / 2);
  g_rand_free(rand);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* The durable value of key as a number; 0 when absent. */
static int64_t stored_value(const char *key) {
  char err[512], num[32], *db = fu_db_path(&w, 0);
  sstate_t *st = NULL;
  uint32_t scope;
  void *v = NULL;
  size_t n = 0;
  int64_t value = 0;
  ck_assert_msg(sstate_open(&st, db, 0, err, sizeof(err)) == 0, "%s", err);
  if (sstate_scope(st, FU_PIPELINE, &scope, err, sizeof(err)) == 1 &&
      sstate_get(st, scope, key, strlen(key), &v, &n, err, sizeof(err)) == 1) {
    ck_assert_uint_lt(n, sizeof(num));
    memcpy(num, v, n);
    num[n] = '\0';
    value = strtoll(num, NULL, 10);
  }
  g_free(v);
  sstate_close(st);
  free(db);
  return value;
}

/* A record the plugin fails after a state write, while its dead-letter
 * write gets no answer (the dead-letter partition has no leader): batches
 * of the other partition become durable meanwhile, and none of them may
 * carry the failed record's write, since its mark is not made yet. Killed
 * then, the host hands the record to the plugin again on restart; once
 * it is dead-lettered, its write is durable with its mark: counted once. */
START_TEST(test_dead_letter_write_with_its_mark) {
  enum { LATER = 30 };
  fu_start(&w, 1, 2);
  fu_mockd(&w, "topic " FU_DLT " 1");
  fu_produce_n(&w, 1, "c0"); /* the group forms over records */
  /* The mock coordinator's first join takes 3 s: a session as long. */
  char *cfg = counter_config("dead_letter_topic = \"" FU_DLT "\";\n"
                             "  kafka = { session_timeout_ms = 3000;\n"
                             "    heartbeat_interval_ms = 300; };");
  fu_proc_t *p = fu_khost(&w, "run", cfg, 0, 0);
  fu_wait_stderr(p, "assigned", 1, 30000);
  fu_mockd(&w, "leader " FU_DLT " 0 -1");
  free(fu_produce(&w, 0, "x#"));
  fu_flush(&w);
  fu_wait_stderr(p, "failing count:x:p0", 1, 30000);
  for (int i = 0; i < LATER; i++)
    free(fu_produce(&w, 1, "c1"));
  fu_flush(&w);
  TU_WAIT_UNTIL(stored_value("count:c1:p1") == LATER, 30000,
                "the records after the failed one are durable");
  ck_assert_msg(stored_value("count:x:p0") == 0,
                "the failed record's write is durable before its mark");
  fu_kill9(p);
  fu_mockd(&w, "leader " FU_DLT " 0 1");
  p = fu_run_to_end(&w, "last", cfg, 0);
  ck_assert_int_ge(fu_stderr_count(p, "sent to the dead-letter topic"), 1);
  ck_assert_int_eq(stored_value("count:x:p0"), 1);
  ck_assert_int_eq(stored_value("count:c1:p1"), LATER);
  free(cfg);
  fu_stop(&w);
}
END_TEST

/* ------------------------------------------------- the demo scenario */

/* The demo's three pipelines under kill -9: order_analytics,
 * coupon_issuer and balance_ledger, which keep their state in khost and
 * have no idempotency code of their own. A feeder publishes the shop's
 * events (a tenth of them again with an earlier event's ID, key and value,
 * as a retrying publisher does) while the host is killed at random moments
 * and restarted; at the end the coupons issued and refused per coupon,
 * every user's balance, seq and entries, and every hour's orders and
 * revenue must equal what the produced events say, exactly. */

#define DEMO_COUPONS 4
#define DEMO_USERS 7
#define DEMO_HOURS 5
#define DEMO_STOCK 40

/* The reference: what the events produced so far add up to. */
typedef struct shop {
  int64_t requests[DEMO_COUPONS + 1];
  int64_t balance[DEMO_USERS + 1], seq[DEMO_USERS + 1];
  int64_t orders[DEMO_HOURS], revenue[DEMO_HOURS];
  int64_t events; /* originals */
} shop_t;

static pthread_mutex_t shop_mu = PTHREAD_MUTEX_INITIALIZER;
static shop_t shop;
static volatile int shop_stop;

typedef struct shop_event {
  const char *topic;
  char id[24], key[24], value[160];
} shop_event_t;

/* Event n, an original: kind n % 3, its figures added to the reference. */
static void shop_original(unsigned n, shop_event_t *e) {
  unsigned kind = n % 3, k = n / 3;
  if (kind == 0) {
    int hour = (int)(k / 37) % DEMO_HOURS;
    int64_t amount = 100 + (int64_t)(k * 7919 % 40000);
    e->topic = "order-completed";
    e->key[0] = '\0';
    snprintf(e->value, sizeof(e->value),
             "{\"orderId\":%u,\"amount\":%" PRId64
             ",\"occurredOn\":\"2026-01-01T%02d:%02u:00Z\"}",
             n, amount, 8 + hour, k % 60);
    shop.orders[hour]++;
    shop.revenue[hour] += amount;
  } else if (kind == 1) {
    unsigned coupon = k % DEMO_COUPONS + 1;
    e->topic = "coupon-issue";
    snprintf(e->key, sizeof(e->key), "%u", coupon);
    snprintf(e->value, sizeof(e->value),
             "{\"couponId\":%u,\"userId\":%u,\"requestId\":%u}", coupon,
             k % DEMO_USERS + 1, n);
    shop.requests[coupon]++;
  } else {
    unsigned user = k % DEMO_USERS + 1;
    int64_t amount = (int64_t)(k % 11) * 500 - 2000;
    e->topic = "balance-activity";
    snprintf(e->key, sizeof(e->key), "user:%u", user);
    snprintf(e->value, sizeof(e->value),
             "{\"userId\":%u,\"seq\":%" PRId64 ",\"amount\":%" PRId64 "}", user,
             ++shop.seq[user], amount);
    shop.balance[user] += amount;
  }
  snprintf(e->id, sizeof(e->id), "shop-%06u", n);
  shop.events++;
}

static void *shop_feed(void *arg) {
  GArray *sent = g_array_new(FALSE, FALSE, sizeof(shop_event_t));
  (void)arg;
  for (unsigned n = 0; !shop_stop; n++) {
    shop_event_t e;
    if (n % 10 == 9) {
      e = g_array_index(sent, shop_event_t, n * 7 % sent->len); /* again */
    } else {
      pthread_mutex_lock(&shop_mu);
      shop_original(n, &e);
      pthread_mutex_unlock(&shop_mu);
      g_array_append_val(sent, e);
    }
    fu_produce_raw(&w, e.topic, -1, e.id, e.key[0] ? e.key : NULL, e.value,
                   strlen(e.value), NULL);
    usleep(4000); /* the pace of a shop, not a wait for anything */
  }
  g_array_free(sent, TRUE);
  return NULL;
}

static char *shop_config(void) {
  char *db = fu_db_path(&w, 0);
  char *path = tu_write_filef(
      w.dir, "shop.cfg",
      "log_level = \"info\";\n"
      "kafka = { bootstrap_servers = \"%s\";\n"
      "  session_timeout_ms = 3000; heartbeat_interval_ms = 300;\n"
      "  topic_metadata_refresh_interval_ms = 1000; };\n"
      "dedup = { path = \"%s\"; };\n"
      "pipelines = (\n"
      "  { name = \"order-analytics\"; group_id = \"data-platform\";\n"
      "    topics = [ \"order-completed\" ];\n"
      "    plugin = \"" TOP_BUILDDIR "/plugins/.libs/order_analytics.so\"; },\n"
      "  { name = \"coupon-issuer\"; group_id = \"coupon-issue\";\n"
      "    topics = [ \"coupon-issue\" ];\n"
      "    plugin = \"" TOP_BUILDDIR "/plugins/.libs/coupon_issuer.so\";\n"
      "    config = { stock = %d; }; },\n"
      "  { name = \"balance-ledger\"; group_id = \"balance-ledger\";\n"
      "    topics = [ \"balance-activity\" ];\n"
      "    plugin = \"" TOP_BUILDDIR "/plugins/.libs/balance_ledger.so\"; }\n"
      ");\n",
      w.bootstraps, db, DEMO_STOCK);
  chmod(path, 0644);
  free(db);
  return path;
}

/* What the plugins' state in the database says, in the reference's
 * shape; gaps and reorders summed over the users. */
typedef struct shop_state {
  shop_t s;
  int64_t issued[DEMO_COUPONS + 1], refused[DEMO_COUPONS + 1];
  int64_t entries[DEMO_USERS + 1], violations, unknown;
} shop_state_t;

static void ints(const void *v, size_t n, int64_t *out, int count) {
  char *text = g_strndup(v, n), *p = text;
  for (int i = 0; i < count; i++)
    out[i] = g_ascii_strtoll(p, &p, 10);
  g_free(text);
}

/* "<prefix><number>..." of a key: the number, or -1. */
static long key_number(const void *k, size_t kl, size_t at) {
  char *text = g_strndup(k, kl);
  long n = kl > at ? strtol(text + at, NULL, 10) : -1;
  g_free(text);
  return n;
}

static int shop_hour(void *arg, const void *k, size_t kl, const void *v,
                     size_t vl) {
  shop_state_t *st = arg;
  int64_t x[2];
  long hour = key_number(k, kl, strlen("hour:2026-01-01T")) - 8;
  ints(v, vl, x, 2);
  if (hour < 0 || hour >= DEMO_HOURS)
    st->unknown++;
  else {
    st->s.orders[hour] += x[0];
    st->s.revenue[hour] += x[1];
  }
  return 0;
}

static int shop_coupon(void *arg, const void *k, size_t kl, const void *v,
                       size_t vl) {
  shop_state_t *st = arg;
  long c = key_number(k, kl, strlen("coupon:"));
  int64_t x[2];
  ints(v, vl, x, 2);
  if (c < 1 || c > DEMO_COUPONS)
    st->unknown++;
  else {
    st->issued[c] = x[0];
    st->refused[c] = x[1];
    st->s.requests[c] = x[0] + x[1];
  }
  return 0;
}

static int shop_user(void *arg, const void *k, size_t kl, const void *v,
                     size_t vl) {
  shop_state_t *st = arg;
  long u = key_number(k, kl, strlen("user:"));
  int64_t x[5];
  ints(v, vl, x, 5);
  if (u < 1 || u > DEMO_USERS)
    st->unknown++;
  else {
    st->s.seq[u] = x[0];
    st->s.balance[u] = x[1];
    st->entries[u] = x[2];
    st->violations += x[3] + x[4];
  }
  return 0;
}

static shop_state_t shop_stored(void) {
  static const struct {
    const char *pipeline, *prefix;
    store_state_fn fn;
  } scans[] = {{"order-analytics", "hour:", shop_hour},
               {"coupon-issuer", "coupon:", shop_coupon},
               {"balance-ledger", "user:", shop_user}};
  shop_state_t st = {0};
  char err[512], *db = fu_db_path(&w, 0);
  sstate_t *ss = NULL;
  uint32_t scope;
  if (access(db, F_OK) == 0) {
    ck_assert_msg(sstate_open(&ss, db, 1000, err, sizeof(err)) == 0, "%s", err);
    for (size_t i = 0; i < G_N_ELEMENTS(scans); i++)
      if (sstate_scope(ss, scans[i].pipeline, &scope, err, sizeof(err)) == 1)
        ck_assert_msg(sstate_scan(ss, scope, scans[i].prefix,
                                  strlen(scans[i].prefix), scans[i].fn, &st,
                                  err, sizeof(err)) == 0,
                      "%s", err);
    sstate_close(ss);
  }
  free(db);
  return st;
}

/* Events whose effects are durable: orders, requests, ledger entries. */
static int64_t shop_applied(const shop_state_t *st) {
  int64_t n = 0;
  for (int h = 0; h < DEMO_HOURS; h++)
    n += st->s.orders[h];
  for (int c = 1; c <= DEMO_COUPONS; c++)
    n += st->s.requests[c];
  for (int u = 1; u <= DEMO_USERS; u++)
    n += st->entries[u];
  return n;
}

static void shop_compare(const shop_state_t *got, const shop_t *want) {
  for (int c = 1; c <= DEMO_COUPONS; c++) {
    int64_t issued = MIN(DEMO_STOCK, want->requests[c]);
    ck_assert_msg(got->issued[c] == issued &&
                      got->refused[c] == want->requests[c] - issued,
                  "coupon %d: issued %" PRId64 ", refused %" PRId64
                  "; the %" PRId64 " requests say %" PRId64 " and %" PRId64,
                  c, got->issued[c], got->refused[c], want->requests[c], issued,
                  want->requests[c] - issued);
  }
  for (int u = 1; u <= DEMO_USERS; u++)
    ck_assert_msg(
        got->s.balance[u] == want->balance[u] &&
            got->s.seq[u] == want->seq[u] && got->entries[u] == want->seq[u],
        "user %d: balance %" PRId64 ", seq %" PRId64 ", entries %" PRId64
        "; the changes say %" PRId64 " over %" PRId64,
        u, got->s.balance[u], got->s.seq[u], got->entries[u], want->balance[u],
        want->seq[u]);
  for (int h = 0; h < DEMO_HOURS; h++)
    ck_assert_msg(got->s.orders[h] == want->orders[h] &&
                      got->s.revenue[h] == want->revenue[h],
                  "hour %d: %" PRId64 " orders, revenue %" PRId64
                  "; the orders say %" PRId64 " and %" PRId64,
                  8 + h, got->s.orders[h], got->s.revenue[h], want->orders[h],
                  want->revenue[h]);
  ck_assert_int_eq(got->violations, 0);
  ck_assert_int_eq(got->unknown, 0);
}

START_TEST(test_demo_survives_kill9) {
  const char *env = getenv("KHOST_TEST_SEED");
  guint32 seed = env ? (guint32)strtoul(env, NULL, 10) : 20261207u;
  GRand *rand = g_rand_new_with_seed(seed);
  int kills = kills_wanted(), in_flight = 0;
  pthread_t feeder;
  fprintf(stderr, "test_demo_survives_kill9: seed %" PRIu32 "\n", seed);
  fu_start(&w, 1, 3);
  fu_mockd(&w, "topic coupon-issue 3");
  fu_mockd(&w, "topic balance-activity 3");
  char *cfg = shop_config();
  memset(&shop, 0, sizeof(shop));
  shop_stop = 0;
  ck_assert_int_eq(pthread_create(&feeder, NULL, shop_feed, NULL), 0);
  for (int k = 0; k < kills; k++) {
    char tag[32];
    snprintf(tag, sizeof(tag), "shop%d", k);
    shop_state_t was = shop_stored();
    int64_t before = shop_applied(&was);
    fu_proc_t *p = fu_khost(&w, tag, cfg, 0, 0);
    /* One kill in four while the host starts and joins; the others
     * while its three pipelines consume. */
    int consuming = k % 4 != 0;
    if (consuming)
      fu_wait_stderr(p, "assigned", 3, 30000);
    usleep((useconds_t)g_rand_int_range(rand, 0, consuming ? 800 : 2000) *
           1000);
    pthread_mutex_lock(&shop_mu);
    int64_t produced = shop.events;
    pthread_mutex_unlock(&shop_mu);
    fu_kill9(p);
    shop_state_t after = shop_stored();
    /* It had handled records and had more to handle when it died. */
    in_flight +=
        shop_applied(&after) > before && shop_applied(&after) < produced;
  }
  shop_stop = 1;
  pthread_join(feeder, NULL);
  fu_flush(&w);
  fu_run_to_end(&w, "last", cfg, 0);
  shop_state_t got = shop_stored();
  fprintf(stderr,
          "%d kills, %d of them while records were in flight; %" PRId64
          " events (and their re-published copies), %" PRId64 " applied\n",
          kills, in_flight, shop.events, shop_applied(&got));
  shop_compare(&got, &shop);
  ck_assert_int_ge(in_flight, kills / 2);
  g_rand_free(rand);
  free(cfg);
  fu_stop(&w);
}
END_TEST

Suite *state_crash_suite(void) {
  Suite *s = suite_create("state_crash");
  FU_SCENARIO(s, test_state_survives_kill9, 3600);
  FU_SCENARIO(s, test_dead_letter_write_with_its_mark, 120);
  FU_SCENARIO(s, test_demo_survives_kill9, 3600);
  return s;
}
