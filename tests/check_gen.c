/*
 * Tests of the event generator: the seeded model on its own (reproducible
 * eventIds, the document's key rules, the duplicate share, per-user
 * sequence numbers, JSON values), gen_run() against librdkafka's mock
 * cluster (what arrives in Kafka, delivery failures), and the khost-gen
 * command as a user runs it.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "gen.h"
#include "log.h"
#include "mock_window.h"
#include "mockutil.h"
#include "testutil.h"

#define KHOST_GEN TOP_BUILDDIR "/src/khost-gen"

static gen_opts_t opts(uint32_t seed, double duplicates) {
  gen_opts_t o;
  gen_opts_default(&o);
  o.seed = seed;
  o.duplicates = duplicates;
  o.users = 20;
  o.coupons = 4;
  return o;
}

/* The value as JSON without occurredOn, the one field the seed does not
 * decide; the caller frees it. */
static char *value_without_time(const gen_event_t *e) {
  json_error_t jerr;
  json_t *v = json_loadb(e->value, e->value_len, 0, &jerr);
  ck_assert_msg(json_is_object(v), "value is not a JSON object (%s): %s",
                jerr.text, e->value);
  json_object_del(v, "occurredOn");
  char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(v);
  return s;
}

/* ------------------------------------------------------------- model */

START_TEST(test_model_reproducible) {
  static const int32_t parts[GEN_N_TOPICS] = {3, 3, 3, 3, 3};
  gen_opts_t o = opts(1234, 0.1);
  gen_model_t *a = gen_model_new(&o, parts), *b = gen_model_new(&o, parts);
  o.seed = 1235;
  gen_model_t *c = gen_model_new(&o, parts);
  GHashTable *ids_a =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (int i = 0; i < 2000; i++) {
    gen_event_t ea = *gen_model_next(a);
    const gen_event_t *eb = gen_model_next(b);
    char *va = value_without_time(&ea), *vb = value_without_time(eb);
    ck_assert_str_eq(ea.event_id, eb->event_id);
    ck_assert_int_eq(ea.topic, eb->topic);
    ck_assert_int_eq(ea.duplicate, eb->duplicate);
    ck_assert_int_eq(ea.partition, eb->partition);
    ck_assert_str_eq(ea.key, eb->key);
    ck_assert_str_eq(ea.aggregate_id, eb->aggregate_id);
    ck_assert_str_eq(va, vb);
    g_hash_table_add(ids_a, g_strdup(ea.event_id));
    free(va);
    free(vb);
  }
  /* Another seed, other events. */
  for (int i = 0; i < 2000; i++)
    ck_assert(!g_hash_table_contains(ids_a, gen_model_next(c)->event_id));
  g_hash_table_destroy(ids_a);
  gen_model_free(a);
  gen_model_free(b);
  gen_model_free(c);
}
END_TEST

/* An integer member of the value. */
static json_int_t int_field(json_t *v, const char *name) {
  json_t *f = json_object_get(v, name);
  ck_assert_msg(json_is_integer(f), "%s is not an integer", name);
  return json_integer_value(f);
}

static void check_headers(const gen_event_t *e) {
  GDateTime *t = g_date_time_new_from_iso8601(e->occurred_on, NULL);
  /* A version 4 UUID: 8-4-4-4-12 hex digits, version and variant set. */
  ck_assert_uint_eq(strlen(e->event_id), 36);
  ck_assert_int_eq(e->event_id[14], '4');
  ck_assert_ptr_nonnull(strchr("89ab", e->event_id[19]));
  ck_assert_msg(t != NULL, "occurredOn %s is not ISO-8601", e->occurred_on);
  ck_assert_msg(strlen(e->occurred_on) == 24 && e->occurred_on[19] == '.' &&
                    e->occurred_on[23] == 'Z',
                "occurredOn %s: UTC with milliseconds", e->occurred_on);
  g_date_time_unref(t);
}

/* The document's key rules, the aggregateId, and the value's fields. */
static void check_event(const gen_event_t *e) {
  char want[32];
  json_t *v = json_loadb(e->value, e->value_len, 0, NULL);
  ck_assert_msg(json_is_object(v), "not JSON: %s", e->value);
  ck_assert_msg(json_is_string(json_object_get(v, "occurredOn")), "%s",
                e->value);
  check_headers(e);
  switch (e->topic) {
  case GEN_ORDER:
    ck_assert_str_eq(e->key, ""); /* no key: spread for throughput */
    snprintf(want, sizeof(want), "%lld", (long long)int_field(v, "orderId"));
    ck_assert_str_eq(e->aggregate_id, want);
    ck_assert_int_gt(int_field(v, "amount"), 0);
    int_field(v, "userId");
    break;
  case GEN_COUPON:
    snprintf(want, sizeof(want), "%lld", (long long)int_field(v, "couponId"));
    ck_assert_str_eq(e->key, want); /* keyed by the coupon id */
    ck_assert_str_eq(e->aggregate_id, want);
    int_field(v, "userId");
    int_field(v, "requestId");
    break;
  case GEN_BALANCE:
    snprintf(want, sizeof(want), "user:%lld",
             (long long)int_field(v, "userId"));
    ck_assert_str_eq(e->key, want); /* "user:" + aggregateId */
    ck_assert_str_eq(e->aggregate_id, want + 5);
    ck_assert_int_ge(int_field(v, "seq"), 1);
    ck_assert_int_gt(int_field(v, "amount"), 0);
    break;
  case GEN_USER:
    ck_assert_str_eq(e->key, "");
    int_field(v, "userId");
    break;
  case GEN_PRODUCT:
    snprintf(want, sizeof(want), "product:%lld",
             (long long)int_field(v, "productId"));
    ck_assert_str_eq(e->key, want);
    break;
  default:
    ck_abort_msg("unknown topic %d", e->topic);
  }
  json_decref(v);
}

START_TEST(test_model_keys_headers_values) {
  static const int32_t parts[GEN_N_TOPICS] = {3, 3, 3, 3, 3};
  gen_opts_t o = opts(7, 0);
  gen_model_t *m = gen_model_new(&o, parts);
  int per_topic[GEN_N_TOPICS] = {0};
  for (int i = 0; i < 3000; i++) {
    const gen_event_t *e = gen_model_next(m);
    check_event(e);
    per_topic[e->topic]++;
    /* Unkeyed records go round-robin; keyed ones follow their key. */
    if (e->key[0])
      ck_assert_int_eq(e->partition, GEN_PARTITION_ANY);
    else
      ck_assert_int_eq(e->partition, (per_topic[e->topic] - 1) % 3);
  }
  for (int t = 0; t < GEN_N_TOPICS; t++)
    ck_assert_msg(per_topic[t] > 150, "%s: only %d of 3000", gen_topic_name(t),
                  per_topic[t]);
  gen_model_free(m);
}
END_TEST

typedef struct original {
  int topic;
  int32_t partition;
  char key[24];
  char *value;
} original_t;

static void free_original(gpointer p) {
  original_t *o = p;
  free(o->value);
  g_free(o);
}

START_TEST(test_model_duplicates) {
  enum { N = 20000 };
  static const int32_t parts[GEN_N_TOPICS] = {3, 3, 3, 3, 3};
  gen_opts_t o = opts(99, 0.05);
  gen_model_t *m = gen_model_new(&o, parts);
  GHashTable *seen =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, free_original);
  int dups = 0, moved = 0;
  for (int i = 0; i < N; i++) {
    const gen_event_t *e = gen_model_next(m);
    original_t *first = g_hash_table_lookup(seen, e->event_id);
    ck_assert_msg(!first == !e->duplicate, "event %d: duplicate flag %d", i,
                  e->duplicate);
    if (!first) {
      original_t *n = g_new0(original_t, 1);
      n->topic = e->topic;
      n->partition = e->partition;
      strcpy(n->key, e->key);
      n->value = value_without_time(e);
      g_hash_table_insert(seen, g_strdup(e->event_id), n);
      continue;
    }
    /* The same event again: topic, key and value as the first time. */
    char *value = value_without_time(e);
    dups++;
    ck_assert_int_eq(e->topic, first->topic);
    ck_assert_str_eq(e->key, first->key);
    ck_assert_str_eq(value, first->value);
    if (e->key[0])
      ck_assert_int_eq(e->partition, GEN_PARTITION_ANY); /* its key decides */
    else
      moved += e->partition != first->partition;
    free(value);
  }
  /* 5 % of 20000 is 1000, with a standard deviation of about 31. */
  ck_assert_msg(dups > 850 && dups < 1150, "%d duplicates of %d", dups, N);
  ck_assert_msg(moved > 0, "no unkeyed duplicate landed in another partition");
  g_hash_table_destroy(seen);
  gen_model_free(m);
}
END_TEST

START_TEST(test_model_balance_seq) {
  gen_opts_t o = opts(5, 0.2);
  gen_model_t *m = gen_model_new(&o, NULL);
  int64_t last[21] = {0};
  int checked = 0;
  for (int i = 0; i < 5000; i++) {
    const gen_event_t *e = gen_model_next(m);
    if (e->topic != GEN_BALANCE || e->duplicate)
      continue;
    json_t *v = json_loadb(e->value, e->value_len, 0, NULL);
    json_int_t user = int_field(v, "userId"), seq = int_field(v, "seq");
    ck_assert_int_ge(user, 1);
    ck_assert_int_le(user, 20);
    /* Per user: 1, 2, 3, ... in production order. */
    ck_assert_int_eq(seq, last[user] + 1);
    last[user] = seq;
    checked++;
    json_decref(v);
  }
  ck_assert_int_gt(checked, 500);
  gen_model_free(m);
}
END_TEST

START_TEST(test_model_topic_subset) {
  gen_opts_t o = opts(3, 0.3);
  o.topics = (1u << GEN_COUPON) | (1u << GEN_BALANCE);
  gen_model_t *m = gen_model_new(&o, NULL);
  int n[GEN_N_TOPICS] = {0};
  for (int i = 0; i < 1000; i++)
    n[gen_model_next(m)->topic]++;
  ck_assert_int_eq(n[GEN_ORDER] + n[GEN_USER] + n[GEN_PRODUCT], 0);
  /* Equal weights: about half each. */
  ck_assert_int_gt(n[GEN_COUPON], 400);
  ck_assert_int_gt(n[GEN_BALANCE], 400);
  gen_model_free(m);
}
END_TEST

START_TEST(test_topic_names) {
  ck_assert_str_eq(gen_topic_name(GEN_BALANCE), "balance-activity");
  ck_assert_str_eq(gen_event_type(GEN_BALANCE), "BALANCE_CHARGED");
  ck_assert_int_eq(gen_topic_index("coupon-issue"), GEN_COUPON);
  ck_assert_int_eq(gen_topic_index("push-notifications"), -1);
  ck_assert_str_eq(gen_event_type_of("order-completed"), "ORDER_COMPLETED");
  ck_assert_str_eq(gen_event_type_of("push-notifications"), "GENERAL_EVENT");
}
END_TEST

/* ------------------------------------------------------ mock cluster */

typedef struct consumed {
  int topic;
  int32_t partition;
  char key[24];
  char event_id[40];
  char *value;
} consumed_t;

static void header(const rd_kafka_message_t *msg, const char *name, char *out,
                   size_t len) {
  rd_kafka_headers_t *hdrs = NULL;
  const void *v = NULL;
  size_t n = 0;
  ck_assert_int_eq(rd_kafka_message_headers(msg, &hdrs), 0);
  ck_assert_msg(rd_kafka_header_get_last(hdrs, name, &v, &n) == 0,
                "header %s missing", name);
  ck_assert_uint_lt(n, len);
  memcpy(out, v, n);
  out[n] = '\0';
}

/* Every record of the five topics (3 partitions each), in partition
 * order; *n gets the count. */
static consumed_t *consume_all(mu_cluster_t *c, size_t *n) {
  char errstr[512], type[40];
  size_t want = 0, cap = 1024;
  consumed_t *out = calloc(cap, sizeof(*out));
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstraps, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "gen-test-reader", NULL, 0);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(15);
  for (int t = 0; t < GEN_N_TOPICS; t++)
    for (int p = 0; p < 3; p++) {
      rd_kafka_topic_partition_list_add(l, gen_topic_name(t), p)->offset =
          RD_KAFKA_OFFSET_BEGINNING;
      want += (size_t)mu_end_offset(c, gen_topic_name(t), p);
    }
  ck_assert_int_eq(rd_kafka_assign(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  int64_t deadline = tu_mono_ms() + 30000;
  for (*n = 0; *n < want;) {
    ck_assert_msg(tu_mono_ms() < deadline, "consumed %zu of %zu", *n, want);
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
    if (!msg || msg->err) {
      if (msg)
        rd_kafka_message_destroy(msg);
      continue;
    }
    if (*n == cap)
      out = realloc(out, (cap *= 2) * sizeof(*out));
    consumed_t *r = &out[(*n)++];
    r->topic = gen_topic_index(rd_kafka_topic_name(msg->rkt));
    r->partition = msg->partition;
    ck_assert_uint_lt(msg->key_len, sizeof(r->key));
    memcpy(r->key, msg->key ? msg->key : "", msg->key_len);
    r->value = strndup(msg->payload, msg->len);
    header(msg, "eventId", r->event_id, sizeof(r->event_id));
    header(msg, "eventType", type, sizeof(type));
    ck_assert_str_eq(type, gen_event_type(r->topic));
    rd_kafka_message_destroy(msg);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

static void free_consumed(consumed_t *c, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(c[i].value);
  free(c);
}

/* librdkafka's notices (partition counts seen changing) are expected
 * here: only warnings and errors are shown. */
static void quiet(void) {
  log_set_level(KHOST_LOG_WARNING);
}

static void create_topics(mu_cluster_t *c) {
  for (int t = 0; t < GEN_N_TOPICS; t++)
    mu_topic(c, gen_topic_name(t), 3);
}

static void run_ok(mu_cluster_t *c, const gen_opts_t *o, gen_report_t *r) {
  char err[1024] = "";
  rd_kafka_conf_t *conf = gen_conf(c->bootstraps, NULL, 0, err, sizeof(err));
  ck_assert_msg(conf != NULL, "%s", err);
  ck_assert_msg(gen_run(conf, o, r, err, sizeof(err)) == 0, "%s", err);
}

/* What arrives in Kafka: the report's counts, one partition per key, and
 * a second run with the same seed brings the same eventIds again. */
START_TEST(test_run_to_mock_cluster) {
  mu_cluster_t c;
  gen_report_t r1, r2;
  size_t n;
  gen_opts_t o = opts(42, 0.1);
  o.count = 600;
  mu_start(&c, 3);
  create_topics(&c);
  run_ok(&c, &o, &r1);
  uint64_t total = 0, dups = 0;
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    total += gen_report_produced(&r1, t);
    dups += r1.duplicates[t];
    ck_assert_uint_eq(r1.failed[t], 0);
  }
  ck_assert_uint_eq(total, 600);
  ck_assert_uint_gt(dups, 0);

  consumed_t *recs = consume_all(&c, &n);
  ck_assert_uint_eq(n, 600);
  GHashTable *key_part = g_hash_table_new(g_str_hash, g_str_equal);
  GHashTable *ids = g_hash_table_new(g_str_hash, g_str_equal);
  uint64_t per_topic[GEN_N_TOPICS] = {0}, again = 0;
  for (size_t i = 0; i < n; i++) {
    per_topic[recs[i].topic]++;
    again += !g_hash_table_add(ids, recs[i].event_id);
    if (!recs[i].key[0])
      continue;
    gpointer p = g_hash_table_lookup(key_part, recs[i].key);
    if (p)
      ck_assert_msg(GPOINTER_TO_INT(p) - 1 == recs[i].partition,
                    "key %s in two partitions", recs[i].key);
    g_hash_table_insert(key_part, recs[i].key,
                        GINT_TO_POINTER(recs[i].partition + 1));
  }
  for (int t = 0; t < GEN_N_TOPICS; t++)
    ck_assert_uint_eq(per_topic[t], gen_report_produced(&r1, t));
  ck_assert_uint_eq(again, dups);

  /* Same seed again: 600 more records, not one new eventId. */
  run_ok(&c, &o, &r2);
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    ck_assert_uint_eq(r2.originals[t], r1.originals[t]);
    ck_assert_uint_eq(r2.duplicates[t], r1.duplicates[t]);
  }
  consumed_t *both = consume_all(&c, &n);
  ck_assert_uint_eq(n, 1200);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(g_hash_table_contains(ids, both[i].event_id),
                  "eventId %s is new in the second run", both[i].event_id);
  g_hash_table_destroy(key_part);
  g_hash_table_destroy(ids);
  free_consumed(both, n);
  free_consumed(recs, 600);
  mu_stop(&c);
}
END_TEST

/* balance-activity as consumed: per partition, every user's seq goes 1,
 * 2, 3, ... (re-published duplicates aside). */
START_TEST(test_balance_order_in_kafka) {
  mu_cluster_t c;
  gen_report_t r;
  size_t n;
  gen_opts_t o = opts(11, 0.1);
  o.count = 500;
  o.topics = 1u << GEN_BALANCE;
  mu_start(&c, 1);
  create_topics(&c);
  run_ok(&c, &o, &r);
  consumed_t *recs = consume_all(&c, &n);
  ck_assert_uint_eq(n, 500);
  GHashTable *ids = g_hash_table_new(g_str_hash, g_str_equal);
  int64_t last[21] = {0};
  for (size_t i = 0; i < n; i++) {
    if (!g_hash_table_add(ids, recs[i].event_id))
      continue;
    json_t *v = json_loads(recs[i].value, 0, NULL);
    json_int_t user = int_field(v, "userId");
    ck_assert_int_eq(int_field(v, "seq"), last[user] + 1);
    last[user]++;
    json_decref(v);
  }
  g_hash_table_destroy(ids);
  free_consumed(recs, n);
  mu_stop(&c);
}
END_TEST

START_TEST(test_missing_topic_fails) {
  mu_cluster_t c;
  gen_report_t r;
  char err[1024] = "";
  gen_opts_t o = opts(1, 0);
  o.count = 10;
  o.topics = 1u << GEN_COUPON;
  mu_start(&c, 1);
  /* The mock cluster creates any topic asked for: make it deny this one,
   * as a broker does a topic it does not have. */
  rd_kafka_mock_topic_set_error(mock_cluster(c.mock), "coupon-issue",
                                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  rd_kafka_conf_t *conf = gen_conf(c.bootstraps, NULL, 0, err, sizeof(err));
  ck_assert_int_eq(gen_run(conf, &o, &r, err, sizeof(err)), -1);
  ck_assert_str_eq(err, "topic coupon-issue: Broker: Unknown topic or "
                        "partition");
  ck_assert_uint_eq(gen_report_produced(&r, GEN_COUPON), 0);
  mu_stop(&c);
}
END_TEST

/* The broker refuses every produce request: each record fails and is
 * counted, and gen_run() says so. */
START_TEST(test_delivery_failure_reported) {
  mu_cluster_t c;
  gen_report_t r;
  char err[1024] = "";
  gen_opts_t o = opts(1, 0);
  o.count = 5;
  o.topics = 1u << GEN_ORDER;
  mu_start(&c, 1);
  create_topics(&c);
  rd_kafka_resp_err_t errs[64];
  for (size_t i = 0; i < G_N_ELEMENTS(errs); i++)
    errs[i] = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
  rd_kafka_mock_push_request_errors_array(mock_cluster(c.mock), 0 /* Produce */,
                                          G_N_ELEMENTS(errs), errs);
  rd_kafka_conf_t *conf = gen_conf(c.bootstraps, NULL, 0, err, sizeof(err));
  ck_assert_int_eq(gen_run(conf, &o, &r, err, sizeof(err)), -1);
  ck_assert_uint_eq(r.failed[GEN_ORDER], 5);
  ck_assert_uint_eq(gen_report_produced(&r, GEN_ORDER), 0);
  ck_assert_msg(strstr(err, "5 record(s) failed delivery; first: "
                            "order-completed [") != NULL,
                "%s", err);
  mu_stop(&c);
}
END_TEST

START_TEST(test_bad_property) {
  char err[512] = "";
  ck_assert_ptr_null(
      gen_conf("h:1", (char *[]){"no.such.thing=1"}, 1, err, sizeof(err)));
  ck_assert_msg(strstr(err, "no.such.thing=1: ") != NULL, "%s", err);
  ck_assert_ptr_null(gen_conf("h:1", (char *[]){"acks"}, 1, err, sizeof(err)));
  ck_assert_str_eq(err, "acks: expected name=value");
}
END_TEST

/* ------------------------------------------------------------ khost-gen */

typedef struct cmd {
  int status;
  char *out, *err;
} cmd_t;

static void die_with_parent(gpointer unused) {
  (void)unused;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Run khost-gen with the NULL-terminated arguments; it dies with us. */
static cmd_t run_gen(const char *first, ...) {
  const char *argv[32] = {KHOST_GEN};
  size_t n = 1;
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && n < G_N_ELEMENTS(argv) - 1;
       a = va_arg(ap, const char *))
    argv[n++] = a;
  va_end(ap);
  cmd_t c = {0};
  GError *error = NULL;
  ck_assert_msg(g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_DEFAULT,
                             die_with_parent, NULL, &c.out, &c.err, &c.status,
                             &error),
                "spawn: %s", error ? error->message : "?");
  ck_assert_msg(WIFEXITED(c.status), "khost-gen did not exit normally");
  c.status = WEXITSTATUS(c.status);
  return c;
}

static void free_cmd(cmd_t *c) {
  g_free(c->out);
  g_free(c->err);
}

/* The "total" row of the report: produced, events, duplicates, failed. */
static void report_total(const char *out, unsigned long long v[4]) {
  const char *row = strstr(out, "\ntotal ");
  ck_assert_msg(row != NULL, "no total row in: %s", out);
  ck_assert_int_eq(
      sscanf(row, " total %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3]), 4);
}

START_TEST(test_cli_mock_run) {
  unsigned long long v[4];
  cmd_t c = run_gen("--mock", "1", "-n", "400", "--duplicates", "0.1", "-s",
                    "5", "--users", "10", "--coupons", "2", NULL);
  ck_assert_msg(c.status == 0, "exit %d: %s", c.status, c.err);
  report_total(c.out, v);
  ck_assert_uint_eq(v[0], 400);
  ck_assert_uint_eq(v[1] + v[2], 400);
  ck_assert_uint_gt(v[2], 10);
  ck_assert_uint_eq(v[3], 0);
  for (int t = 0; t < GEN_N_TOPICS; t++)
    ck_assert_msg(strstr(c.out, gen_topic_name(t)), "%s missing: %s",
                  gen_topic_name(t), c.out);
  ck_assert_msg(strstr(c.out, "seed 5 "), "%s", c.out);
  /* The same seed, the same events: the same counts. */
  cmd_t again = run_gen("--mock", "1", "-n", "400", "--duplicates", "0.1", "-s",
                        "5", "--users", "10", "--coupons", "2", NULL);
  ck_assert_int_eq(again.status, 0);
  char *table1 = g_strndup(c.out, strstr(c.out, "\nseed ") - c.out);
  char *table2 = g_strndup(again.out, strstr(again.out, "\nseed ") - again.out);
  ck_assert_str_eq(strchr(table1, '\n'), strchr(table2, '\n'));
  g_free(table1);
  g_free(table2);
  free_cmd(&again);
  free_cmd(&c);
}
END_TEST

/* --json: the report as one JSON object on stdout (the mock cluster's
 * line goes to stderr), with the table's numbers. */
START_TEST(test_cli_json) {
  unsigned long long v[4];
  cmd_t t = run_gen("--mock", "1", "-n", "300", "--duplicates", "0.1", "-s",
                    "9", NULL);
  cmd_t c = run_gen("--mock", "1", "-n", "300", "--duplicates", "0.1", "-s",
                    "9", "--json", NULL);
  ck_assert_msg(t.status == 0 && c.status == 0, "exit %d, %d: %s", t.status,
                c.status, c.err);
  report_total(t.out, v);
  json_error_t jerr;
  json_t *doc = json_loads(c.out, 0, &jerr);
  ck_assert_msg(doc != NULL, "stdout is not JSON (%s): %s", jerr.text, c.out);
  ck_assert_msg(strstr(c.err, "mock cluster: 1 broker(s) at "), "%s", c.err);
  json_t *total = json_object_get(doc, "total");
  ck_assert_int_eq(json_integer_value(json_object_get(total, "produced")),
                   (json_int_t)v[0]);
  ck_assert_int_eq(json_integer_value(json_object_get(total, "events")),
                   (json_int_t)v[1]);
  ck_assert_int_eq(json_integer_value(json_object_get(total, "duplicates")),
                   (json_int_t)v[2]);
  ck_assert_int_eq(json_integer_value(json_object_get(total, "failed")), 0);
  ck_assert_int_eq(json_integer_value(json_object_get(doc, "seed")), 9);
  json_t *topics = json_object_get(doc, "topics");
  ck_assert_uint_eq(json_array_size(topics), GEN_N_TOPICS);
  json_int_t sum = 0;
  for (size_t i = 0; i < json_array_size(topics); i++) {
    json_t *row = json_array_get(topics, i);
    const char *name = json_string_value(json_object_get(row, "topic"));
    ck_assert_ptr_nonnull(name);
    json_int_t n = json_integer_value(json_object_get(row, "produced"));
    /* The table's row of that topic says the same. */
    char *want = g_strdup_printf("\n%-18s %10lld ", name, (long long)n);
    ck_assert_msg(strstr(t.out, want), "no \"%s\" in: %s", want, t.out);
    g_free(want);
    sum += n;
  }
  ck_assert_int_eq(sum, (json_int_t)v[0]);
  json_decref(doc);
  free_cmd(&c);
  free_cmd(&t);
}
END_TEST

START_TEST(test_cli_topics_and_duration) {
  unsigned long long v[4];
  /* At 200 records a second for 1 s: about 200, only balance-activity. */
  cmd_t c = run_gen("--mock", "1", "--partitions", "2", "-d", "1", "-r", "200",
                    "--topics", "balance-activity", NULL);
  ck_assert_msg(c.status == 0, "exit %d: %s", c.status, c.err);
  report_total(c.out, v);
  ck_assert_msg(v[0] >= 100 && v[0] <= 210, "%llu records in 1 s at 200/s",
                v[0]);
  ck_assert_msg(strstr(c.out, "balance-activity"), "%s", c.out);
  ck_assert_msg(!strstr(c.out, "order-completed"), "%s", c.out);
  ck_assert_msg(strstr(c.out, "2 partitions per topic"), "%s", c.out);
  free_cmd(&c);
}
END_TEST

static const struct usage_case {
  const char *args[6];
  const char *expect; /* in stderr */
} usage_cases[] = {
    {{NULL}, "give either -b SERVERS or --mock N"},
    {{"-b", "h:1", "--mock", "1", NULL}, "give either -b SERVERS or --mock N"},
    {{"--mock", "1", "--duplicates", "1.5", NULL},
     "--duplicates: expected a number from 0 to 1 (got '1.5')"},
    {{"--mock", "1", "-n", "ten", NULL},
     "--count: expected an integer from 1 to"},
    {{"--mock", "0", NULL}, "--mock: expected an integer from 1 to 9"},
    {{"--mock", "1", "--topics", "orders", NULL},
     "--topics: unknown topic 'orders'"},
    {{"-b", "h:1", "--partitions", "3", NULL}, "--partitions goes with --mock"},
    {{"--mock", "1", "--colour", NULL}, "unknown option '--colour'"},
    {{"--mock", "1", "extra", NULL}, "unexpected argument 'extra'"},
    {{"--mock", "1", "-X", "no.such=1", NULL}, "-X no.such=1: "},
};

START_TEST(test_cli_usage) {
  const struct usage_case *u = &usage_cases[_i];
  cmd_t c =
      run_gen(u->args[0], u->args[1], u->args[2], u->args[3], u->args[4], NULL);
  ck_assert_msg(c.status == 2, "exit %d for %s", c.status, u->expect);
  ck_assert_msg(strstr(c.err, u->expect) != NULL, "want \"%s\" in: %s",
                u->expect, c.err);
  free_cmd(&c);
}
END_TEST

START_TEST(test_cli_help_version) {
  cmd_t c = run_gen("--help", NULL);
  ck_assert_int_eq(c.status, 0);
  ck_assert_msg(strstr(c.out, "Usage: khost-gen") &&
                    strstr(c.out, "--duplicates P") &&
                    strstr(c.out, "for trying\n"),
                "%s", c.out);
  free_cmd(&c);
  c = run_gen("--version", NULL);
  ck_assert_int_eq(c.status, 0);
  ck_assert_msg(strstr(c.out, "khost-gen " PACKAGE_VERSION " (librdkafka "),
                "%s", c.out);
  free_cmd(&c);
}
END_TEST

/* mock.generate's estimate of the mock cluster's window. 300,000 events
 * with seed 1 over 3 partitions: order-completed, the largest share, puts
 * about 30,000 records of about 220 bytes (6.6 MB) on each partition,
 * more than the 5 MiB kept (measured: 71,536 of 89,711 consumed); 3,000
 * (the demo) fit, as do 300,000 over 6 partitions. */
START_TEST(test_mock_window_estimate) {
  gen_opts_t o;
  mock_window_fit_t f;
  gen_opts_default(&o);
  o.seed = 1;
  o.count = 3000;
  ck_assert_int_eq(mock_window_check(&o, 3, &f), 0);
  o.count = 300000;
  ck_assert_int_eq(mock_window_check(&o, 3, &f), 1);
  ck_assert_int_eq(f.topic, GEN_ORDER);
  ck_assert_msg(f.records > 28500 && f.records < 31500, "records %" PRIu64,
                f.records);
  ck_assert_msg(f.bytes > MOCK_WINDOW_BYTES, "bytes %" PRIu64, f.bytes);
  /* What the window keeps: 5 MiB of these records, about 23,800. */
  ck_assert_msg(f.kept > 22000 && f.kept < 25500, "kept %" PRIu64, f.kept);
  ck_assert_msg(f.max_count > 220000 && f.max_count < 255000,
                "max_count %" PRIu64, f.max_count);
  uint64_t max = f.max_count;
  o.count = max - max / 20;
  ck_assert_int_eq(mock_window_check(&o, 3, &f), 0);
  o.count = 300000;
  ck_assert_int_eq(mock_window_check(&o, 6, &f), 0);
}
END_TEST

/* README's "Event shapes": for each topic its row names the eventType and
 * shows a value whose fields are the generator's, in its order. */
START_TEST(test_readme_event_shapes) {
  char *readme = tu_read_file(TOP_SRCDIR "/README.md");
  ck_assert_ptr_nonnull(readme);
  const char *table = strstr(readme, "### Event shapes");
  ck_assert_msg(table != NULL, "README.md has no Event shapes section");
  gen_opts_t o;
  gen_opts_default(&o);
  o.seed = 3;
  gen_model_t *m = gen_model_new(&o, NULL);
  int seen[GEN_N_TOPICS] = {0}, left = GEN_N_TOPICS;
  for (int i = 0; left > 0 && i < 10000; i++) {
    const gen_event_t *e = gen_model_next(m);
    if (seen[e->topic]++)
      continue;
    left--;
    char head[64];
    snprintf(head, sizeof(head), "\n| `%s` | `%s` |", gen_topic_name(e->topic),
             gen_event_type(e->topic));
    const char *row = strstr(table, head);
    ck_assert_msg(row != NULL, "no row \"%s\" in README.md", head + 1);
    const char *v = strstr(row, "`{");
    ck_assert_msg(v && v < strchr(row + 1, '\n'), "%s: no value", head + 1);
    char *shown = g_strndup(v + 1, (gsize)(strstr(v, "}`") + 1 - (v + 1)));
    json_error_t jerr;
    json_t *doc = json_loads(shown, 0, &jerr);
    json_t *made = json_loadb(e->value, e->value_len, 0, &jerr);
    ck_assert_msg(doc && made, "%s: not JSON: %s", head + 1, shown);
    /* The same fields in the same order. */
    void *a = json_object_iter(doc), *b = json_object_iter(made);
    for (; a && b;
         a = json_object_iter_next(doc, a), b = json_object_iter_next(made, b))
      ck_assert_str_eq(json_object_iter_key(a), json_object_iter_key(b));
    ck_assert_msg(!a && !b, "%s: fields differ: README %s, generator %.*s",
                  head + 1, shown, (int)e->value_len, e->value);
    json_decref(doc);
    json_decref(made);
    g_free(shown);
  }
  ck_assert_int_eq(left, 0);
  gen_model_free(m);
  free(readme);
}
END_TEST

Suite *gen_suite(void) {
  Suite *s = suite_create("gen");
  TCase *tc = tcase_create("model");
  tcase_add_test(tc, test_model_reproducible);
  tcase_add_test(tc, test_model_keys_headers_values);
  tcase_add_test(tc, test_model_duplicates);
  tcase_add_test(tc, test_model_balance_seq);
  tcase_add_test(tc, test_model_topic_subset);
  tcase_add_test(tc, test_topic_names);
  tcase_add_test(tc, test_bad_property);
  tcase_add_test(tc, test_mock_window_estimate);
  tcase_add_test(tc, test_readme_event_shapes);
  suite_add_tcase(s, tc);

  tc = tu_case(s, "mock-cluster", 60, NULL);
  tcase_add_checked_fixture(tc, quiet, NULL);
  tcase_add_test(tc, test_run_to_mock_cluster);
  tcase_add_test(tc, test_balance_order_in_kafka);
  tcase_add_test(tc, test_missing_topic_fails);
  tcase_add_test(tc, test_delivery_failure_reported);

  tc = tu_case(s, "cli", 60, NULL);
  tcase_add_test(tc, test_cli_mock_run);
  tcase_add_test(tc, test_cli_json);
  tcase_add_test(tc, test_cli_topics_and_duration);
  tcase_add_loop_test(tc, test_cli_usage, 0, (int)G_N_ELEMENTS(usage_cases));
  tcase_add_test(tc, test_cli_help_version);
  return s;
}
