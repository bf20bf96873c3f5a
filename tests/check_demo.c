/*
 * The demo (`make demo`): the three domain plugins on their own, loaded as
 * real shared objects through the plugin loader, their state in host state
 * over the in-memory store as a member keeps it (hourly sums per
 * partition, the coupon stock, per-user balances and order checks, bad
 * data failed, nothing durable before its batch commits, the summaries
 * read back from the state), then the demo's scenario with smaller counts:
 * the generator fills the source document's topics, one host runs the
 * three pipelines to the end, and the numbers must reconcile with the
 * state in the dedup database; a second host over the same topics handles
 * nothing new. Last, the khost program itself on a config like
 * examples/demo.cfg, read as a person reads its output.
 */
#include <check.h>
#include <fcntl.h>
#include <glib.h>
#include <libconfig.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* By path: "config.h" alone would find autoconf's header in the build dir. */
#include "../src/config.h"
#include "gen.h"
#include "log.h"
#include "mockutil.h"
#include "plugin_loader.h"
#include "state.h"
#include "store.h"
#include "store_state.h"
#include "testutil.h"

#define PLUGIN(name) TOP_BUILDDIR "/plugins/.libs/" name ".so"
#define KHOST TOP_BUILDDIR "/src/khost"

static char *tmpdir, *log_path;
static int log_fd = -1;
static store_t *store; /* the plugins' host state, in memory */
static uint32_t scope;

static void setup(void) {
  char err[256];
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  ck_assert_int_ge(asprintf(&log_path, "%s/khost.log", tmpdir), 0);
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  ck_assert_int_ge(log_fd, 0);
  log_set_fd(log_fd);
  log_set_level(KHOST_LOG_INFO);
  store = store_mem_new();
  ck_assert_int_eq(store_scope(store, "demo", &scope, err, sizeof(err)), 0);
}

static void teardown(void) {
  store_close(store);
  log_set_fd(2);
  close(log_fd);
  tu_rm_rf(tmpdir);
  free(tmpdir);
  free(log_path);
}

static char *in_tmp(const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", tmpdir, name), 0);
  return p;
}

/* Whether the log so far holds text. */
static int logged(const char *text) {
  char *all = tu_read_file(log_path);
  int found = all && strstr(all, text) != NULL;
  free(all);
  return found;
}

/* ------------------------------------------------------------ instances */

/* An instance with its own config tree, which must outlive it, and its
 * member's state and store batch (the records' writes until commit()). */
typedef struct inst {
  plugin_t *plugin;
  plugin_instance_t *pi;
  config_t cfg;
  state_t *st;
  store_batch_t *sb;
} inst_t;

static int try_create(inst_t *in, const char *so, int member,
                      const char *settings, char *err, size_t errlen) {
  char *text = NULL;
  memset(in, 0, sizeof(*in));
  ck_assert_msg(plugin_load(&in->plugin, so, err, errlen) == 0, "%s", err);
  ck_assert_msg(plugin_start(in->plugin, err, errlen) == 0, "%s", err);
  ck_assert_int_ge(
      asprintf(&text, "pipelines = ({ config = { %s }; });", settings), 0);
  config_init(&in->cfg);
  ck_assert_msg(config_read_string(&in->cfg, text) == CONFIG_TRUE, "%s",
                config_error_text(&in->cfg));
  free(text);
  in->st = state_new(store, scope);
  ck_assert_int_eq(store_batch_open(store, &in->sb, err, errlen), 0);
  plugin_instance_opts_t o = {
      .pipeline = "demo",
      .member = member,
      .config = config_setting_get_member(
          config_setting_get_elem(config_lookup(&in->cfg, "pipelines"), 0),
          "config"),
      .config_file = "demo.cfg",
      .state = in->st};
  return plugin_instance_create(&in->pi, in->plugin, &o, err, errlen);
}

static void create_ok(inst_t *in, const char *so, const char *settings) {
  char err[1024] = "";
  ck_assert_msg(try_create(in, so, 0, settings, err, sizeof(err)) == 0, "%s",
                err);
}

static void destroy(inst_t *in) {
  if (in->pi)
    plugin_instance_destroy(in->pi);
  plugin_unload(in->plugin);
  config_destroy(&in->cfg);
  store_batch_close(in->sb);
  state_free(in->st);
}

/* Hand the plugin a record, as a member does: the record's state writes
 * join the batch with an outcome (OK, FAIL), else are dropped. */
static khost_result_t handle(inst_t *in, const char *topic, int32_t partition,
                             int64_t offset, const char *key,
                             const char *event_id, const char *value) {
  khost_record_t r = {.struct_size = sizeof(r),
                      .topic = topic,
                      .partition = partition,
                      .offset = offset,
                      .timestamp = -1,
                      .key = key,
                      .key_len = key ? strlen(key) : 0,
                      .value = value,
                      .value_len = value ? strlen(value) : 0,
                      .event_id = event_id,
                      .event_id_len = event_id ? strlen(event_id) : 0,
                      .attempt = 1};
  state_record_drop(in->st);
  khost_result_t res = plugin_instance_handle(in->pi, &r);
  if (res == KHOST_OK || res == KHOST_FAIL)
    state_record_join(in->st, in->sb);
  return res;
}

/* Make the batch durable, as the durability thread does. */
static void commit(inst_t *in) {
  char err[512] = "";
  ck_assert_msg(store_batch_commit(in->sb, NULL, err, sizeof(err)) == 0, "%s",
                err);
  state_batch_end(in->st, in->sb);
}

/* The durable value of key ("-" when it has none), for free(). */
static char *stored(const char *key) {
  char err[256];
  void *v = NULL;
  size_t n = 0;
  int r =
      store_state_get(store, scope, key, strlen(key), &v, &n, err, sizeof(err));
  ck_assert_msg(r >= 0, "%s", err);
  char *text = r == 1 ? g_strndup(v, n) : g_strdup("-");
  g_free(v);
  return text;
}

static void assert_stored(const char *key, const char *want) {
  char *got = stored(key);
  ck_assert_msg(strcmp(got, want) == 0, "state %s: \"%s\", want \"%s\"", key,
                got, want);
  g_free(got);
}

/* --------------------------------------------------- order_analytics */

static char *order(int64_t amount, const char *when) {
  char *v = NULL;
  ck_assert_int_ge(asprintf(&v,
                            "{\"orderId\":1,\"userId\":2,\"amount\":%lld,"
                            "\"occurredOn\":\"%s\"}",
                            (long long)amount, when),
                   0);
  return v;
}

static void handle_order(inst_t *in, int32_t part, int64_t off, const char *id,
                         int64_t amount, const char *when) {
  char *v = order(amount, when);
  ck_assert_int_eq(handle(in, "order-completed", part, off, NULL, id, v),
                   KHOST_OK);
  free(v);
}

START_TEST(test_order_analytics_hourly) {
  inst_t in;
  create_ok(&in, PLUGIN("order_analytics"), "");
  handle_order(&in, 0, 0, "o1", 1000, "2025-01-01T10:15:00.000Z");
  handle_order(&in, 0, 1, "o2", 250, "2025-01-01T10:59:59.999Z");
  /* 20:30 in Seoul is 11:30 UTC. */
  handle_order(&in, 0, 2, "o3", 500, "2025-01-01T20:30:00+09:00");
  handle_order(&in, 0, 3, "o4", 100, "2025-01-01T11:00:00Z");
  handle_order(&in, 1, 0, "o8", 5, "2025-01-01T10:30:00Z");
  /* Bad data fails the record, and counts nothing. */
  ck_assert_int_eq(handle(&in, "order-completed", 0, 5, NULL, "o5", "{"),
                   KHOST_FAIL);
  ck_assert_int_eq(handle(&in, "order-completed", 0, 6, NULL, "o6",
                          "{\"occurredOn\":\"2025-01-01T10:00:00Z\"}"),
                   KHOST_FAIL);
  ck_assert_int_eq(handle(&in, "order-completed", 0, 7, NULL, "o7",
                          "{\"amount\":5,\"occurredOn\":\"yesterday\"}"),
                   KHOST_FAIL);
  ck_assert(logged("order-completed [0] offset 7 eventId o7: occurredOn is "
                   "not an ISO-8601 time: \"yesterday\""));
  /* Nothing durable before the batch commits. */
  assert_stored("hour:2025-01-01T10:order-completed/0", "-");
  commit(&in);
  /* Per hour and partition: one writer per key. */
  assert_stored("hour:2025-01-01T10:order-completed/0", "2 1250");
  assert_stored("hour:2025-01-01T10:order-completed/1", "1 5");
  assert_stored("hour:2025-01-01T11:order-completed/0", "2 600");
  destroy(&in);
  /* The summary adds the partitions up. */
  ck_assert(logged("hour 2025-01-01T10 (UTC): 3 orders, revenue 12.55"));
  ck_assert(logged("hour 2025-01-01T11 (UTC): 2 orders, revenue 6.00"));
  ck_assert(logged("demo: 5 orders over 2 hour(s), revenue 18.55"));
}
END_TEST

/* ----------------------------------------------------- coupon_issuer */

/* A request keyed by its coupon, as the source document's producers do. */
static khost_result_t request(inst_t *in, int64_t off, const char *id,
                              const char *coupon, int user) {
  char v[128], key[32];
  snprintf(v, sizeof(v), "{\"couponId\":%s,\"userId\":%d,\"requestId\":1}",
           coupon, user);
  snprintf(key, sizeof(key), "%.*s",
           (int)strcspn(coupon + (*coupon == '"'), "\""),
           coupon + (*coupon == '"'));
  return handle(in, "coupon-issue", 0, off, key, id, v);
}

START_TEST(test_coupon_stock) {
  inst_t in;
  create_ok(&in, PLUGIN("coupon_issuer"), "stock = 2;");
  ck_assert_int_eq(request(&in, 0, "c1", "1", 7), KHOST_OK);
  ck_assert_int_eq(request(&in, 1, "c2", "1", 8), KHOST_OK);
  commit(&in);
  /* Read back across batches: the third request finds the stock spent. */
  ck_assert_int_eq(request(&in, 2, "c3", "1", 9), KHOST_OK);
  ck_assert_int_eq(request(&in, 3, "c4", "\"SPRING\"", 9), KHOST_OK);
  ck_assert_int_eq(
      handle(&in, "coupon-issue", 0, 4, "1", "c5", "{\"userId\":1}"),
      KHOST_FAIL);
  /* Keyed otherwise, two members could spend one stock at once. */
  ck_assert_int_eq(handle(&in, "coupon-issue", 0, 5, "9", "c6",
                          "{\"couponId\":1,\"userId\":1}"),
                   KHOST_FAIL);
  ck_assert(logged("coupon-issue [0] offset 5 eventId c6: record key is not "
                   "its couponId 1"));
  ck_assert(logged("coupon-issue [0] offset 2 eventId c3: coupon 1 sold out "
                   "(stock 2): request of user 9 refused"));
  assert_stored("coupon:1", "2 0");
  commit(&in);
  assert_stored("coupon:1", "2 1");
  assert_stored("coupon:SPRING", "1 0");
  destroy(&in);
  ck_assert(logged("coupon 1: issued 2 of stock 2, 1 sold-out request(s) "
                   "refused"));
  ck_assert(logged("coupon SPRING: issued 1 of stock 2, 0 sold-out"));
  ck_assert(logged("demo: 2 coupon(s), 3 issued, 1 sold-out request(s) "
                   "refused, 0 coupon(s) over stock"));
}
END_TEST

/* A request whose outcome was a retry (or whose batch never became
 * durable) spends nothing: it is decided when it comes again. */
START_TEST(test_coupon_retry_spends_nothing) {
  inst_t in;
  create_ok(&in, PLUGIN("coupon_issuer"), "stock = 1;");
  ck_assert_int_eq(request(&in, 0, "c1", "3", 7), KHOST_OK);
  state_record_drop(in.st); /* the member's view of a RETRY */
  store_batch_discard(in.sb);
  state_batch_end(in.st, in.sb); /* the batch is abandoned */
  ck_assert_int_eq(request(&in, 0, "c1", "3", 7), KHOST_OK);
  commit(&in);
  assert_stored("coupon:3", "1 0");
  destroy(&in);
}
END_TEST

/* ---------------------------------------------------- balance_ledger */

static void change(inst_t *in, int64_t off, const char *id, int user,
                   int64_t seq, int64_t amount) {
  char v[128], key[32];
  snprintf(v, sizeof(v), "{\"userId\":%d,\"seq\":%lld,\"amount\":%lld}", user,
           (long long)seq, (long long)amount);
  snprintf(key, sizeof(key), "user:%d", user);
  ck_assert_int_eq(handle(in, "balance-activity", 1, off, key, id, v),
                   KHOST_OK);
}

START_TEST(test_balance_gap_and_reorder) {
  inst_t in;
  create_ok(&in, PLUGIN("balance_ledger"), "");
  change(&in, 10, "b1", 1, 1, 100);
  change(&in, 11, "b2", 1, 2, 200);
  change(&in, 12, "b4", 1, 4, 400); /* 3 is missing: a gap */
  change(&in, 13, "b3", 1, 3, 300); /* late: a reorder */
  change(&in, 14, "b5", 1, 5, 500); /* 4 was seen: in order again */
  change(&in, 15, "x1", 2, 1, 50);
  change(&in, 16, "x2", 2, 2, -150);
  ck_assert_int_eq(handle(&in, "balance-activity", 1, 17, "user:2", "x3",
                          "{\"userId\":2,\"amount\":1}"),
                   KHOST_FAIL);
  ck_assert_int_eq(handle(&in, "balance-activity", 1, 18, "2", "x4",
                          "{\"userId\":2,\"seq\":3,\"amount\":1}"),
                   KHOST_FAIL);
  ck_assert(logged("balance-activity [1] offset 18 eventId x4: record key is "
                   "not user:2"));
  ck_assert(logged("balance-activity [1] offset 12 eventId b4: user 1: "
                   "expected seq 3, got 4 (gap); applied"));
  ck_assert(logged("balance-activity [1] offset 13 eventId b3: user 1: "
                   "expected seq 5, got 3 (reorder); applied"));
  assert_stored("user:1", "-");
  commit(&in);
  /* last seq, balance, entries, gaps, reorders: every change applied, the
   * violations included. */
  assert_stored("user:1", "5 1500 5 1 1");
  assert_stored("user:2", "2 -100 2 0 0");
  destroy(&in);
  ck_assert(logged("demo: 2 user(s), 7 ledger entries, balances total "
                   "14.00; per-user ordering violations: 2"));
  ck_assert(logged("violations: user 1: 1 gap(s), 1 reorder(s)"));
}
END_TEST

/* ---------------------------------------------------------- settings */

static const struct settings_case {
  const char *plugin, *settings, *expect;
} settings_cases[] = {
    {"coupon_issuer", "stock = -1;",
     "demo/0/coupon_issuer: stock must be 0 or more (got -1)"},
    {"coupon_issuer", "stock = \"many\";",
     "demo.cfg:1: pipelines[0].config.stock: expected an integer"},
    /* A database of their own is gone: the setting with it. */
    {"order_analytics", "db = \"/tmp/x.db\";",
     "demo.cfg:1: pipelines[0].config.db: unknown setting for plugin "
     "order_analytics"},
    {"balance_ledger", "db = \"/tmp/x.db\";",
     "demo.cfg:1: pipelines[0].config.db: unknown setting for plugin "
     "balance_ledger"},
};

START_TEST(test_bad_settings) {
  const struct settings_case *c = &settings_cases[_i];
  char so[512], err[1024] = "";
  inst_t in;
  snprintf(so, sizeof(so), TOP_BUILDDIR "/plugins/.libs/%s.so", c->plugin);
  ck_assert_int_eq(try_create(&in, so, 0, c->settings, err, sizeof(err)), -1);
  ck_assert_msg(strstr(err, c->expect) != NULL, "want \"%s\", got \"%s\"",
                c->expect, err);
  destroy(&in);
}
END_TEST

START_TEST(test_demo_cfg_loads) {
  static const char *const want[3][4] = {
      {"order-analytics", "data-platform-consumer-group", "order-completed",
       "order_analytics"},
      {"coupon-issuer", "coupon-issue-consumer-group", "coupon-issue",
       "coupon_issuer"},
      {"balance-ledger", "balance-ledger-consumer-group", "balance-activity",
       "balance_ledger"}};
  cfg_t cfg;
  char err[4096];
  ck_assert_msg(
      cfg_load(&cfg, TOP_SRCDIR "/examples/demo.cfg", err, sizeof(err)) == 0,
      "examples/demo.cfg: %s", err);
  ck_assert_uint_eq(cfg.n_pipelines, 3);
  for (size_t i = 0; i < 3; i++) {
    ck_assert_str_eq(cfg.pipelines[i].name, want[i][0]);
    ck_assert_str_eq(cfg.pipelines[i].group_id, want[i][1]);
    ck_assert_str_eq(cfg.pipelines[i].topics[0], want[i][2]);
    ck_assert_str_eq(cfg.pipelines[i].plugin, want[i][3]);
  }
  ck_assert_int_eq(cfg.mock_brokers, 3);
  ck_assert_int_eq(cfg.mock_partitions, 3);
  ck_assert(cfg.mock_gen.enabled);
  ck_assert_int_eq(cfg.mock_gen.count, 3000);
  ck_assert(cfg.mock_gen.duplicates == 0.05);
  ck_assert(cfg.mock_gen.seed_set && cfg.mock_gen.seed == 42);
  cfg_free(&cfg);
}
END_TEST

/* ---------------------------------------------------------- scenario */

enum { STOCK = 30 };

/* The demo's three pipelines (one member each, as in examples/demo.cfg),
 * on the cluster c, with their databases in c's directory. */
static char *scenario_cfg(mu_cluster_t *c) {
  char *text = NULL;
  ck_assert_int_ge(
      asprintf(&text,
               "log_level = \"notice\";\n"
               "kafka = { bootstrap_servers = \"%s\";\n"
               "  session_timeout_ms = " MU_SESSION_TIMEOUT ";\n"
               "  heartbeat_interval_ms = " MU_HEARTBEAT "; };\n"
               "dedup = { path = \"%s/dedup.db\"; };\n"
               "pipelines = (\n"
               "  { name = \"order-analytics\";\n"
               "    group_id = \"data-platform-consumer-group\";\n"
               "    topics = [ \"order-completed\" ];\n"
               "    plugin = \"%s\"; },\n"
               "  { name = \"coupon-issuer\";\n"
               "    group_id = \"coupon-issue-consumer-group\";\n"
               "    topics = [ \"coupon-issue\" ];\n"
               "    plugin = \"%s\"; config = { stock = %d; }; },\n"
               "  { name = \"balance-ledger\";\n"
               "    group_id = \"balance-ledger-consumer-group\";\n"
               "    topics = [ \"balance-activity\" ];\n"
               "    plugin = \"%s\"; }\n"
               ");\n",
               c->bootstraps, c->dir, PLUGIN("order_analytics"),
               PLUGIN("coupon_issuer"), STOCK, PLUGIN("balance_ledger")),
      0);
  char *path = tu_write_file(c->dir, "demo.cfg", text);
  free(text);
  return path;
}

static const int pipeline_topic[3] = {GEN_ORDER, GEN_COUPON, GEN_BALANCE};

static void run_to_end(const char *cfg, pipeline_stats_t s[3]) {
  mu_host_t h;
  mu_host_start(&h, cfg, 1);
  mu_host_wait(&h, 60000);
  ck_assert_int_eq(h.status, 0);
  ck_assert_uint_eq(host_pipeline_count(h.host), 3);
  for (size_t i = 0; i < 3; i++)
    host_pipeline_stats(h.host, i, &s[i]);
  mu_host_close(&h);
}

/* What the plugins' state in the dedup database says. */
typedef struct facts {
  int64_t orders, requests, issued, refused, ledger, violations;
  int64_t over_stock, misdecided, users_out_of_step;
} facts_t;

/* The integers of a state value ("a b c"). */
static void ints_of(const void *v, size_t n, int64_t *out, int count) {
  char *text = g_strndup(v, n), *p = text;
  for (int i = 0; i < count; i++)
    out[i] = g_ascii_strtoll(p, &p, 10);
  g_free(text);
}

static int add_hour(void *arg, const void *k, size_t kl, const void *v,
                    size_t vl) {
  int64_t x[2];
  (void)k, (void)kl;
  ints_of(v, vl, x, 2);
  ((facts_t *)arg)->orders += x[0];
  return 0;
}

static int add_coupon(void *arg, const void *k, size_t kl, const void *v,
                      size_t vl) {
  facts_t *f = arg;
  int64_t x[2];
  (void)k, (void)kl;
  ints_of(v, vl, x, 2);
  f->issued += x[0];
  f->refused += x[1];
  f->requests += x[0] + x[1];
  f->over_stock += x[0] > STOCK;
  f->misdecided += x[0] != MIN(STOCK, x[0] + x[1]); /* refused with stock */
  return 0;
}

static int add_user(void *arg, const void *k, size_t kl, const void *v,
                    size_t vl) {
  facts_t *f = arg;
  int64_t x[5]; /* last seq, balance, entries, gaps, reorders */
  (void)k, (void)kl;
  ints_of(v, vl, x, 5);
  f->ledger += x[2];
  f->violations += x[3] + x[4];
  f->users_out_of_step += x[0] != x[2];
  return 0;
}

static void scan_pipeline(sstate_t *st, const char *pipeline,
                          const char *prefix, store_state_fn fn, facts_t *f) {
  char err[512];
  uint32_t sc;
  ck_assert_msg(sstate_scope(st, pipeline, &sc, err, sizeof(err)) == 1,
                "%s: %s", pipeline, err);
  ck_assert_msg(
      sstate_scan(st, sc, prefix, strlen(prefix), fn, f, err, sizeof(err)) == 0,
      "%s", err);
}

static facts_t read_facts(const char *dir) {
  facts_t f = {0};
  char err[512], *path = g_strdup_printf("%s/dedup.db", dir);
  sstate_t *st = NULL;
  ck_assert_msg(sstate_open(&st, path, 1000, err, sizeof(err)) == 0, "%s", err);
  scan_pipeline(st, "order-analytics", "hour:", add_hour, &f);
  scan_pipeline(st, "coupon-issuer", "coupon:", add_coupon, &f);
  scan_pipeline(st, "balance-ledger", "user:", add_user, &f);
  sstate_close(st);
  g_free(path);
  /* Never more than the stock, and the stock was reached: the limit was
   * put to the test. Each user's changes 1..n, all there. */
  ck_assert_int_eq(f.over_stock, 0);
  ck_assert_int_eq(f.misdecided, 0);
  ck_assert_int_gt(f.refused, 0);
  ck_assert_int_eq(f.users_out_of_step, 0);
  return f;
}

START_TEST(test_demo_scenario) {
  mu_cluster_t c;
  gen_report_t r;
  pipeline_stats_t s[3], again[3];
  char err[1024] = "";
  gen_opts_t o;
  mu_start(&c, 3);
  for (int t = 0; t < GEN_N_TOPICS; t++)
    mu_topic(&c, gen_topic_name(t), 3);
  gen_opts_default(&o);
  o.count = 600;
  o.duplicates = 0.05;
  o.seed = 42;
  o.users = 20;
  o.coupons = 3;
  rd_kafka_conf_t *conf = gen_conf(c.bootstraps, NULL, 0, err, sizeof(err));
  ck_assert_msg(gen_run(conf, &o, &r, err, sizeof(err)) == 0, "%s", err);
  char *cfg = scenario_cfg(&c);
  run_to_end(cfg, s);

  for (int i = 0; i < 3; i++) {
    int t = pipeline_topic[i];
    /* produced = handled + duplicates skipped, and nothing failed. */
    ck_assert_msg(
        gen_report_produced(&r, t) == s[i].handled + s[i].duplicates,
        "%s: produced %llu, handled %llu + skipped %llu", gen_topic_name(t),
        (unsigned long long)gen_report_produced(&r, t),
        (unsigned long long)s[i].handled, (unsigned long long)s[i].duplicates);
    ck_assert_uint_eq(s[i].handled, r.originals[t]);
    ck_assert_uint_eq(s[i].failed, 0);
    ck_assert_uint_gt(s[i].duplicates, 0);
  }
  facts_t f = read_facts(c.dir);
  ck_assert_int_eq(f.orders, (int64_t)s[0].handled);
  ck_assert_int_eq(f.requests, (int64_t)s[1].handled);
  ck_assert_int_eq(f.ledger, (int64_t)s[2].handled);
  ck_assert_int_eq(f.violations, 0);

  /* A second host over the same topics, same groups and databases. */
  run_to_end(cfg, again);
  for (int i = 0; i < 3; i++)
    ck_assert_msg(again[i].handled == 0, "%s: %llu handled again",
                  gen_topic_name(pipeline_topic[i]),
                  (unsigned long long)again[i].handled);
  facts_t g = read_facts(c.dir);
  ck_assert_int_eq(g.orders, f.orders);
  ck_assert_int_eq(g.requests, f.requests);
  ck_assert_int_eq(g.issued, f.issued);
  ck_assert_int_eq(g.ledger, f.ledger);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------ the khost program */

static void die_with_parent(gpointer unused) {
  (void)unused;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Run `khost run -c cfg --exit-at-end`: its exit status, stdout and log
 * (g_free() both). */
static int run_khost(const char *cfg, char **out, char **errs) {
  char *argv[] = {KHOST, "run", "-c", (char *)cfg, "--exit-at-end", NULL};
  int status = -1;
  GError *error = NULL;
  ck_assert_msg(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, die_with_parent,
                             NULL, out, errs, &status, &error),
                "spawn: %s", error ? error->message : "?");
  ck_assert_msg(WIFEXITED(status), "khost died: %d: %s", status, *errs);
  return WEXITSTATUS(status);
}

/* A config like examples/demo.cfg, its databases in tmpdir; pipeline
 * order-analytics takes `extra` settings. */
static char *program_cfg(const char *extra) {
  char *text = NULL;
  ck_assert_int_ge(
      asprintf(&text,
               "plugin_dir = \"%s/plugins/.libs\";\n"
               "log_level = \"notice\";\n"
               "mock = { brokers = 3; partitions = 3;\n"
               "  generate = { count = 600; duplicates = 0.05; seed = 7;\n"
               "               users = 20; coupons = 3; }; };\n"
               "dedup = { path = \"%s/dedup.db\"; };\n"
               "pipelines = (\n"
               "  { name = \"order-analytics\"; group_id = \"g1\";\n"
               "    topics = [ \"order-completed\" ]; plugin = "
               "\"order_analytics\"; %s },\n"
               "  { name = \"coupon-issuer\"; group_id = \"g2\";\n"
               "    topics = [ \"coupon-issue\" ]; plugin = "
               "\"coupon_issuer\";\n"
               "    config = { stock = %d; }; },\n"
               "  { name = \"balance-ledger\"; group_id = \"g3\";\n"
               "    topics = [ \"balance-activity\" ]; plugin = "
               "\"balance_ledger\"; }\n"
               ");\n",
               TOP_BUILDDIR, tmpdir, extra, STOCK),
      0);
  char *cfg = tu_write_file(tmpdir, "demo.cfg", text);
  free(text);
  return cfg;
}

/* N, E, D of "[mock] <topic>: produced N records: E events + D
 * re-published" in the log. */
static void produced(const char *log, const char *topic, unsigned long *n,
                     unsigned long *e, unsigned long *d) {
  char *key = g_strdup_printf("[mock] %s: produced ", topic);
  const char *at = strstr(log, key);
  ck_assert_msg(at != NULL, "no \"%s\" in: %s", key, log);
  ck_assert_int_eq(
      sscanf(at + strlen(key), "%lu records: %lu events + %lu", n, e, d), 3);
  g_free(key);
}

/* H, S, F of "[<pipeline>] handled H, duplicates skipped S, failed F" in
 * the log. */
static void handled(const char *log, const char *pipeline, unsigned long *h,
                    unsigned long *s, unsigned long *f) {
  char *key = g_strdup_printf("[%s] handled ", pipeline);
  const char *at = strstr(log, key);
  ck_assert_msg(at != NULL, "no \"%s\" in: %s", key, log);
  ck_assert_int_eq(sscanf(at + strlen(key),
                          "%lu, duplicates skipped %lu, failed %lu", h, s, f),
                   3);
  g_free(key);
}

/* A row of the summary table: "<pipeline>  <topic>  produced  handled
 * duplicates-skipped  failed  reconciled". */
typedef struct row {
  char topic[64], reconciled[16];
  unsigned long produced, handled, skipped, failed;
} row_t;

static row_t summary_row(const char *out, const char *pipeline) {
  row_t r;
  char *key = g_strdup_printf("\n%s  ", pipeline);
  const char *at = strstr(out, key);
  ck_assert_msg(at != NULL, "no row for %s in: %s", pipeline, out);
  ck_assert_int_eq(sscanf(at + strlen(key), "%63s %lu %lu %lu %lu %15s",
                          r.topic, &r.produced, &r.handled, &r.skipped,
                          &r.failed, r.reconciled),
                   6);
  g_free(key);
  return r;
}

static const char *const demo_names[3] = {"order-analytics", "coupon-issuer",
                                          "balance-ledger"};

START_TEST(test_demo_program_output) {
  char *out = NULL, *errs = NULL;
  char *cfg = program_cfg("");
  ck_assert_msg(run_khost(cfg, &out, &errs) == 0, "%s%s", errs, out);
  ck_assert_msg(strstr(out, "pipeline  ") && strstr(out, "  reconciled\n"),
                "no summary table in: %s", out);
  /* The header: one word per column, and as README shows it. */
  const char *head = strstr(out, "\npipeline  ");
  ck_assert_ptr_nonnull(head);
  char *line = g_strndup(head + 1, strcspn(head + 1, "\n"));
  gchar **words = g_strsplit_set(line, " ", -1);
  static const char *const want[] = {"pipeline",  "topic",      "produced",
                                     "handled",   "duplicates", "failed",
                                     "reconciled"};
  size_t nw = 0;
  for (gchar **w = words; *w; w++)
    if (**w) {
      ck_assert_uint_lt(nw, G_N_ELEMENTS(want));
      ck_assert_str_eq(*w, want[nw++]);
    }
  ck_assert_uint_eq(nw, G_N_ELEMENTS(want));
  char *readme = tu_read_file(TOP_SRCDIR "/README.md");
  char *shown = g_strdup_printf("\n%s\n", line);
  ck_assert_msg(strstr(readme, shown), "README.md does not show: %s", line);
  g_free(shown);
  free(readme);
  g_strfreev(words);
  g_free(line);
  for (int i = 0; i < 3; i++) {
    unsigned long n, e, d, h, s, f;
    const char *topic = gen_topic_name(pipeline_topic[i]);
    row_t r = summary_row(out, demo_names[i]);
    produced(errs, topic, &n, &e, &d);
    handled(errs, demo_names[i], &h, &s, &f);
    /* The table says what the generator and the pipeline counted... */
    ck_assert_str_eq(r.topic, topic);
    ck_assert_uint_eq(r.produced, n);
    ck_assert_uint_eq(r.handled, h);
    ck_assert_uint_eq(r.skipped, s);
    ck_assert_uint_eq(r.failed, f);
    /* ...and that adds up: each event handled once, each copy skipped. */
    ck_assert_msg(n == h + s && f == 0 && h == e && s == d,
                  "%s: produced %lu (%lu + %lu); handled %lu, skipped %lu, "
                  "failed %lu",
                  demo_names[i], n, e, d, h, s, f);
    ck_assert_str_eq(r.reconciled, "yes");
  }
  ck_assert_msg(strstr(out, "\nEvery pipeline reconciled.\n"), "%s", out);
  /* The plugins' figures from their databases, under the table. */
  ck_assert_msg(strstr(out, "per-user ordering violations: 0\n"), "%s", out);
  ck_assert_msg(strstr(out, "sold-out request(s) refused, 0 coupon(s) over "
                            "stock\n"),
                "%s", out);
  ck_assert_msg(strstr(out, "\n  coupon 1: issued "), "%s", out);
  ck_assert_msg(strstr(out, "\n  hour ") && strstr(out, " (UTC): "), "%s", out);
  ck_assert_msg(strstr(out, " orders over "), "%s", out);
  /* Shown there, not in the log as well. */
  ck_assert_msg(!strstr(errs, "ordering violations"), "%s", errs);
  g_free(out);
  g_free(errs);
  free(cfg);
}
END_TEST

/* `make demo` as README shows it: examples/demo.cfg run from the top of
 * the built tree (its relative plugin_dir as written; its database moved
 * to the test's directory); the summary it prints, from "Summary:" to the
 * line under the table, is the block README.md and docs/plugins.md show
 * (the generator's seed 42 makes the same events every time). */
START_TEST(test_demo_cfg_summary_as_readme) {
  char *example = tu_read_file(TOP_SRCDIR "/examples/demo.cfg");
  gchar **parts = g_strsplit(example, "/tmp/khost-demo-dedup.db", -1);
  ck_assert_uint_ge(g_strv_length(parts), 2); /* the path, and comments */
  char *db = g_strdup_printf("%s/demo.db", tmpdir);
  char *text = g_strjoinv(db, parts);
  char *cfg = tu_write_file(tmpdir, "demo.cfg", text);
  char *argv[] = {KHOST, "run", "-c", cfg, "--exit-at-end", NULL};
  char *out = NULL, *errs = NULL;
  int status = -1;
  GError *error = NULL;
  ck_assert_msg(g_spawn_sync(TOP_BUILDDIR, argv, NULL, G_SPAWN_DEFAULT,
                             die_with_parent, NULL, &out, &errs, &status,
                             &error),
                "spawn: %s", error ? error->message : "?");
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "status %d:\n%s%s", status, errs, out);
  const char *from = strstr(out, "Summary: ");
  ck_assert_msg(from != NULL, "no summary in:\n%s", out);
  const char *end = strstr(from, "\nreconciled: ");
  ck_assert_ptr_nonnull(end);
  end = strchr(end + 1, '\n');
  char *block = g_strndup(from, (size_t)(end + 1 - from));
  static const char *const docs[] = {TOP_SRCDIR "/README.md",
                                     TOP_SRCDIR "/docs/plugins.md"};
  for (size_t i = 0; i < G_N_ELEMENTS(docs); i++) {
    char *doc = tu_read_file(docs[i]);
    ck_assert_msg(strstr(doc, block) != NULL, "%s does not show:\n%s", docs[i],
                  block);
    free(doc);
  }
  g_free(block);
  g_free(out);
  g_free(errs);
  free(cfg);
  g_free(text);
  g_free(db);
  g_strfreev(parts);
  free(example);
}
END_TEST

/* mock.generate with more events than the mock cluster keeps: khost says
 * so before it produces them, and by how much, and the estimate is near
 * what is then lost (100,000 events on one partition each: order-completed
 * gets about 30,000 records, 6.7 MB, of which the cluster keeps 5 MB). */
START_TEST(test_demo_program_window_warning) {
  char *text = NULL, *out = NULL, *errs = NULL;
  ck_assert_int_ge(
      asprintf(&text,
               "plugin_dir = \"%s/plugins/.libs\";\n"
               "log_level = \"notice\";\n"
               "mock = { brokers = 1; partitions = 1;\n"
               "  generate = { count = 100000; seed = 7; }; };\n"
               "dedup = { path = \"%s/dedup.db\"; };\n"
               "pipelines = ( { name = \"order-analytics\"; group_id = "
               "\"g1\";\n"
               "  topics = [ \"order-completed\" ]; plugin = "
               "\"order_analytics\"; } );\n",
               TOP_BUILDDIR, tmpdir),
      0);
  char *cfg = tu_write_file(tmpdir, "big.cfg", text);
  /* It does not reconcile: exit 1. */
  ck_assert_int_eq(run_khost(cfg, &out, &errs), 1);
  const char *warn = strstr(errs, "mock.generate: 100000 events put about ");
  const char *produced = strstr(errs, "order-completed: produced ");
  ck_assert_msg(warn != NULL, "no warning in:\n%s", errs);
  ck_assert_msg(produced != NULL && warn < produced,
                "the warning does not come before producing:\n%s", errs);
  ck_assert_msg(strstr(warn, "events fit with mock.partitions = 1"), "%s",
                warn);
  unsigned long gone = 0, made = 0, handled = 0;
  const char *at = strstr(warn, "partition: about ");
  ck_assert_msg(at && sscanf(at, "partition: about %lu of them", &gone) == 1,
                "%s", warn);
  ck_assert_int_eq(
      sscanf(produced, "order-completed: produced %lu records", &made), 1);
  at = strstr(errs, "[order-analytics] handled ");
  ck_assert_msg(at &&
                    sscanf(at, "[order-analytics] handled %lu", &handled) == 1,
                "%s", errs);
  /* What the warning said would be gone, against what was: within 15 %. */
  unsigned long lost = made - handled;
  ck_assert_msg(lost > 0 && gone * 100 > lost * 85 && gone * 100 < lost * 115,
                "said about %lu gone, %lu were (%lu produced, %lu handled)",
                gone, lost, made, handled);
  ck_assert_msg(strstr(out, "  NO\n"), "%s", out);
  g_free(out);
  g_free(errs);
  free(cfg);
  free(text);
}
END_TEST

/* Records a pipeline neither handles nor skips make the sums differ: the
 * table says NO and khost exits 1. Here order-completed (no key) is read
 * with the key as event ID, and a record without one fails. */
START_TEST(test_demo_program_not_reconciled) {
  char *out = NULL, *errs = NULL;
  char *cfg = program_cfg("event_id = \"key\"; on_missing_id = \"fail\";");
  ck_assert_int_eq(run_khost(cfg, &out, &errs), 1);
  row_t r = summary_row(out, "order-analytics");
  ck_assert_uint_gt(r.produced, 0);
  ck_assert_uint_eq(r.handled, 0);
  ck_assert_uint_eq(r.failed, r.produced);
  ck_assert_str_eq(r.reconciled, "NO");
  ck_assert_str_eq(summary_row(out, "coupon-issuer").reconciled, "yes");
  ck_assert_msg(strstr(out, "\nNOT RECONCILED: 1 pipeline(s) "), "%s", out);
  ck_assert_msg(strstr(errs, "do not add up to those produced"), "%s", errs);
  g_free(out);
  g_free(errs);
  free(cfg);
}
END_TEST

/* Stopped before the end of its topics, a pipeline is not reconciled at
 * all ("-"): fewer handled than produced is no fault then. */
START_TEST(test_demo_report_stopped_early) {
  mu_host_t h;
  char *cfg = program_cfg("");
  mu_host_start(&h, cfg, 0);
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  char *path = in_tmp("report.txt");
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(host_report(h.host, f), 0);
  fclose(f);
  mu_host_close(&h);
  char *out = tu_read_file(path);
  for (int i = 0; i < 3; i++)
    ck_assert_str_eq(summary_row(out, demo_names[i]).reconciled, "-");
  ck_assert_msg(strstr(out, "\n3 pipeline(s) stopped before the end of their "
                            "topics: not reconciled"),
                "%s", out);
  free(out);
  free(path);
  free(cfg);
}
END_TEST

Suite *demo_suite(void) {
  Suite *s = suite_create("demo");
  TCase *tc = tcase_create("plugins");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_order_analytics_hourly);
  tcase_add_test(tc, test_coupon_stock);
  tcase_add_test(tc, test_coupon_retry_spends_nothing);
  tcase_add_test(tc, test_balance_gap_and_reorder);
  tcase_add_loop_test(tc, test_bad_settings, 0,
                      (int)G_N_ELEMENTS(settings_cases));
  tcase_add_test(tc, test_demo_cfg_loads);
  suite_add_tcase(s, tc);

  /* The scenarios side by side, each a case of its own (tagged
   * "scenario"). */
  const TTest *scenarios[] = {test_demo_scenario,
                              test_demo_program_output,
                              test_demo_program_not_reconciled,
                              test_demo_report_stopped_early,
                              test_demo_program_window_warning,
                              test_demo_cfg_summary_as_readme};
  for (size_t i = 0; i < G_N_ELEMENTS(scenarios); i++) {
    tc = tu_case(s, scenarios[i]->name + strlen("test_"), 120, "scenario");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, scenarios[i]);
  }
  return s;
}
