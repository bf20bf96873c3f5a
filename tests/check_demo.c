/*
 * The demo (`make demo`): the three domain plugins on their own, loaded as
 * real shared objects through the plugin loader (hourly sums, the coupon
 * stock with two instances racing, per-user order checks, idempotence by
 * eventId), then the demo's scenario with smaller counts: the generator
 * fills the source document's topics, one host runs the three pipelines to
 * the end, and the numbers must reconcile; a second host over the same
 * topics handles nothing new. Last, the khost program itself on a config
 * like examples/demo.cfg, read as a person reads its output.
 */
#include <check.h>
#include <fcntl.h>
#include <glib.h>
#include <libconfig.h>
#include <pthread.h>
#include <sqlite3.h>
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
#include "testutil.h"

#define PLUGIN(name) TOP_BUILDDIR "/plugins/.libs/" name ".so"
#define KHOST TOP_BUILDDIR "/src/khost"

static char *tmpdir, *log_path;
static int log_fd = -1;

static void setup(void) {
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  ck_assert_int_ge(asprintf(&log_path, "%s/khost.log", tmpdir), 0);
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  ck_assert_int_ge(log_fd, 0);
  log_set_fd(log_fd);
  log_set_level(KHOST_LOG_INFO);
}

static void teardown(void) {
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

/* An instance with its own config tree, which must outlive it. */
typedef struct inst {
  plugin_t *plugin;
  plugin_instance_t *pi;
  config_t cfg;
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
  plugin_instance_opts_t o = {
      .pipeline = "demo",
      .member = member,
      .config = config_setting_get_member(
          config_setting_get_elem(config_lookup(&in->cfg, "pipelines"), 0),
          "config"),
      .config_file = "demo.cfg"};
  return plugin_instance_create(&in->pi, in->plugin, &o, err, errlen);
}

static void create_ok(inst_t *in, const char *so, int member, const char *fmt,
                      const char *db, const char *more) {
  char settings[512], err[1024] = "";
  snprintf(settings, sizeof(settings), fmt, db, more ? more : "");
  ck_assert_msg(try_create(in, so, member, settings, err, sizeof(err)) == 0,
                "%s", err);
}

static void destroy(inst_t *in) {
  if (in->pi)
    plugin_instance_destroy(in->pi);
  plugin_unload(in->plugin);
  config_destroy(&in->cfg);
}

static khost_result_t handle(inst_t *in, const char *topic, int32_t partition,
                             int64_t offset, const char *event_id,
                             const char *value) {
  khost_record_t r = {.struct_size = sizeof(r),
                      .topic = topic,
                      .partition = partition,
                      .offset = offset,
                      .timestamp = -1,
                      .value = value,
                      .value_len = value ? strlen(value) : 0,
                      .event_id = event_id,
                      .event_id_len = event_id ? strlen(event_id) : 0,
                      .attempt = 1};
  return plugin_instance_handle(in->pi, &r);
}

static void flush_ok(inst_t *in) {
  char err[512] = "";
  ck_assert_msg(plugin_instance_flush(in->pi, err, sizeof(err)) == 0, "%s",
                err);
}

/* ----------------------------------------------------------- databases */

static sqlite3 *db_open(const char *path) {
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  return db;
}

/* The first column of the first row of q, as an integer (0: no row). */
static int64_t q_int(sqlite3 *db, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *q = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  sqlite3_stmt *st = NULL;
  ck_assert_msg(sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK, "%s: %s",
                q, sqlite3_errmsg(db));
  int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  sqlite3_free(q);
  return v;
}

/* --------------------------------------------------- order_analytics */

#define OA_SETTINGS "db = \"%s\"; %s"

static char *order(int64_t amount, const char *when) {
  char *v = NULL;
  ck_assert_int_ge(asprintf(&v,
                            "{\"orderId\":1,\"userId\":2,\"amount\":%lld,"
                            "\"occurredOn\":\"%s\"}",
                            (long long)amount, when),
                   0);
  return v;
}

static void handle_order(inst_t *in, int64_t off, const char *id,
                         int64_t amount, const char *when) {
  char *v = order(amount, when);
  ck_assert_int_eq(handle(in, "order-completed", 0, off, id, v), KHOST_OK);
  free(v);
}

START_TEST(test_order_analytics_hourly) {
  char *path = in_tmp("orders.db");
  inst_t in;
  create_ok(&in, PLUGIN("order_analytics"), 0, OA_SETTINGS, path, NULL);
  handle_order(&in, 0, "o1", 1000, "2025-01-01T10:15:00.000Z");
  handle_order(&in, 1, "o2", 250, "2025-01-01T10:59:59.999Z");
  /* 20:30 in Seoul is 11:30 UTC. */
  handle_order(&in, 2, "o3", 500, "2025-01-01T20:30:00+09:00");
  handle_order(&in, 3, "o4", 100, "2025-01-01T11:00:00Z");
  handle_order(&in, 4, "o3", 500, "2025-01-01T20:30:00+09:00"); /* again */
  /* Bad data fails the record, and counts nothing. */
  ck_assert_int_eq(handle(&in, "order-completed", 0, 5, "o5", "{"), KHOST_FAIL);
  ck_assert_int_eq(handle(&in, "order-completed", 0, 6, "o6",
                          "{\"occurredOn\":\"2025-01-01T10:00:00Z\"}"),
                   KHOST_FAIL);
  ck_assert_int_eq(handle(&in, "order-completed", 0, 7, "o7",
                          "{\"amount\":5,\"occurredOn\":\"yesterday\"}"),
                   KHOST_FAIL);
  ck_assert(logged("order-completed [0] offset 7 eventId o7: occurredOn is "
                   "not an ISO-8601 time: \"yesterday\""));
  /* Nothing written before flush: not even the database exists. */
  ck_assert_int_ne(access(path, F_OK), 0);
  flush_ok(&in);

  sqlite3 *db = db_open(path);
  ck_assert_int_eq(q_int(db, "SELECT orders FROM hourly WHERE hour = "
                             "'2025-01-01T10'"),
                   2);
  ck_assert_int_eq(q_int(db, "SELECT revenue FROM hourly WHERE hour = "
                             "'2025-01-01T10'"),
                   1250);
  ck_assert_int_eq(q_int(db, "SELECT orders FROM hourly WHERE hour = "
                             "'2025-01-01T11'"),
                   2);
  ck_assert_int_eq(q_int(db, "SELECT revenue FROM hourly WHERE hour = "
                             "'2025-01-01T11'"),
                   600);
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM hourly"), 2);

  /* A batch delivered again (its marks never committed) counts once. */
  handle_order(&in, 0, "o1", 1000, "2025-01-01T10:15:00.000Z");
  handle_order(&in, 8, "o8", 5, "2025-01-01T10:30:00Z");
  flush_ok(&in);
  ck_assert_int_eq(q_int(db, "SELECT orders FROM hourly WHERE hour = "
                             "'2025-01-01T10'"),
                   3);
  ck_assert_int_eq(q_int(db, "SELECT revenue FROM hourly WHERE hour = "
                             "'2025-01-01T10'"),
                   1255);
  ck_assert(logged("order-completed [0] offset 0 eventId o1: already "
                   "counted"));
  sqlite3_close(db);
  destroy(&in);
  ck_assert(logged("hour 2025-01-01T10 (UTC): 3 orders, revenue 12.55"));
  ck_assert(logged(": 5 orders over 2 hour(s), revenue 18.55"));
  free(path);
}
END_TEST

/* ----------------------------------------------------- coupon_issuer */

#define CI_SETTINGS "db = \"%s\"; %s"

static khost_result_t request(inst_t *in, int64_t off, const char *id,
                              const char *coupon, int user) {
  char v[128];
  snprintf(v, sizeof(v), "{\"couponId\":%s,\"userId\":%d,\"requestId\":1}",
           coupon, user);
  return handle(in, "coupon-issue", 0, off, id, v);
}

typedef struct racer {
  inst_t *in;
  char prefix;
} racer_t;

/* 150 requests for coupon 7, flushed every 10 records. */
static void *race(void *arg) {
  racer_t *r = arg;
  char id[32], err[256];
  for (int i = 0; i < 150; i++) {
    snprintf(id, sizeof(id), "%c-%d", r->prefix, i);
    if (request(r->in, i, id, "7", i) != KHOST_OK ||
        (i % 10 == 9 && plugin_instance_flush(r->in->pi, err, sizeof(err))))
      return (void *)1;
  }
  return NULL;
}

START_TEST(test_coupon_stock_two_instances) {
  char *path = in_tmp("coupons.db");
  inst_t a, b;
  pthread_t ta, tb;
  void *ra, *rb;
  create_ok(&a, PLUGIN("coupon_issuer"), 0, CI_SETTINGS, path, "stock = 100;");
  create_ok(&b, PLUGIN("coupon_issuer"), 1, CI_SETTINGS, path, "stock = 100;");
  racer_t wa = {&a, 'a'}, wb = {&b, 'b'};
  ck_assert_int_eq(pthread_create(&ta, NULL, race, &wa), 0);
  ck_assert_int_eq(pthread_create(&tb, NULL, race, &wb), 0);
  pthread_join(ta, &ra);
  pthread_join(tb, &rb);
  ck_assert_ptr_null(ra);
  ck_assert_ptr_null(rb);

  sqlite3 *db = db_open(path);
  /* 300 requests for a stock of 100: exactly 100 issued, once each. */
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM requests"), 300);
  ck_assert_int_eq(
      q_int(db, "SELECT count(*) FROM requests WHERE outcome = 'issued'"), 100);
  ck_assert_int_eq(q_int(db, "SELECT count(DISTINCT event_id) FROM requests "
                             "WHERE outcome = 'issued'"),
                   100);
  ck_assert_int_eq(q_int(db, "SELECT issued FROM coupons WHERE coupon_id = "
                             "'7'"),
                   100);
  ck_assert_int_eq(q_int(db, "SELECT sold_out FROM coupons WHERE coupon_id = "
                             "'7'"),
                   200);
  /* Every request of both instances was decided. */
  ck_assert_int_eq(
      q_int(db, "SELECT count(*) FROM requests WHERE event_id LIKE 'a-%%'"),
      150);
  ck_assert_int_eq(
      q_int(db, "SELECT count(*) FROM requests WHERE event_id LIKE 'b-%%'"),
      150);
  sqlite3_close(db);
  destroy(&a);
  ck_assert(!logged("coupons.db: 1 coupon(s)")); /* b is still there */
  destroy(&b);
  ck_assert(logged("coupon 7: issued 100 of stock 100, 200 sold-out "
                   "request(s) refused"));
  ck_assert(logged("coupons.db: 1 coupon(s), 100 issued, 200 sold-out "
                   "request(s) refused, 0 coupon(s) over stock"));
  free(path);
}
END_TEST

START_TEST(test_coupon_sold_out_and_redelivery) {
  char *path = in_tmp("coupons.db");
  inst_t in;
  create_ok(&in, PLUGIN("coupon_issuer"), 0, CI_SETTINGS, path, "stock = 2;");
  ck_assert_int_eq(request(&in, 0, "c1", "1", 7), KHOST_OK);
  ck_assert_int_eq(request(&in, 1, "c2", "1", 8), KHOST_OK);
  ck_assert_int_eq(request(&in, 2, "c3", "1", 9), KHOST_OK);
  ck_assert_int_eq(request(&in, 3, "c4", "\"SPRING\"", 9), KHOST_OK);
  ck_assert_int_eq(handle(&in, "coupon-issue", 0, 4, "c5", "{\"userId\":1}"),
                   KHOST_FAIL);
  flush_ok(&in);
  ck_assert(logged("coupon-issue [0] offset 2 eventId c3: coupon 1 sold out "
                   "(stock 2): request of user 9 refused"));
  /* The whole batch again: nothing decided twice. */
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(request(&in, i,
                             (const char *[]){"c1", "c2", "c3", "c4"}[i],
                             i < 3 ? "1" : "\"SPRING\"", 1),
                     KHOST_OK);
  flush_ok(&in);
  ck_assert(logged("coupon-issue [0] offset 0 eventId c1: already decided"));
  sqlite3 *db = db_open(path);
  ck_assert_int_eq(q_int(db, "SELECT issued FROM coupons WHERE coupon_id = "
                             "'1'"),
                   2);
  ck_assert_int_eq(q_int(db, "SELECT sold_out FROM coupons WHERE coupon_id = "
                             "'1'"),
                   1);
  ck_assert_int_eq(q_int(db, "SELECT issued FROM coupons WHERE coupon_id = "
                             "'SPRING'"),
                   1);
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM requests"), 4);
  sqlite3_close(db);
  destroy(&in);
  free(path);
}
END_TEST

/* ---------------------------------------------------- balance_ledger */

static void change(inst_t *in, int64_t off, const char *id, int user,
                   int64_t seq, int64_t amount) {
  char v[128];
  snprintf(v, sizeof(v), "{\"userId\":%d,\"seq\":%lld,\"amount\":%lld}", user,
           (long long)seq, (long long)amount);
  ck_assert_int_eq(handle(in, "balance-activity", 1, off, id, v), KHOST_OK);
}

START_TEST(test_balance_gap_and_reorder) {
  char *path = in_tmp("ledger.db");
  inst_t in;
  create_ok(&in, PLUGIN("balance_ledger"), 0, "db = \"%s\"; %s", path, NULL);
  change(&in, 10, "b1", 1, 1, 100);
  change(&in, 11, "b2", 1, 2, 200);
  change(&in, 12, "b4", 1, 4, 400); /* 3 is missing: a gap */
  change(&in, 13, "b3", 1, 3, 300); /* late: a reorder */
  change(&in, 14, "b5", 1, 5, 500); /* 4 was seen: in order again */
  change(&in, 15, "x1", 2, 1, 50);
  change(&in, 16, "x2", 2, 2, 50);
  ck_assert_int_eq(handle(&in, "balance-activity", 1, 17, "x3",
                          "{\"userId\":2,\"amount\":1}"),
                   KHOST_FAIL);
  flush_ok(&in);
  ck_assert(logged("balance-activity [1] offset 12 eventId b4: user 1: "
                   "expected seq 3, got 4 (gap); applied"));
  ck_assert(logged("balance-activity [1] offset 13 eventId b3: user 1: "
                   "expected seq 5, got 3 (reorder); applied"));

  sqlite3 *db = db_open(path);
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM violations"), 2);
  ck_assert_int_eq(q_int(db, "SELECT got FROM violations WHERE kind = 'gap' "
                             "AND user_id = '1' AND expected = 3"),
                   4);
  ck_assert_int_eq(q_int(db, "SELECT got FROM violations WHERE kind = "
                             "'reorder' AND user_id = '1' AND expected = 5"),
                   3);
  ck_assert_int_eq(q_int(db, "SELECT kafka_offset FROM violations WHERE kind "
                             "= 'reorder'"),
                   13);
  /* Every change applied, the violations included. */
  ck_assert_int_eq(q_int(db, "SELECT balance FROM accounts WHERE user_id = "
                             "'1'"),
                   1500);
  ck_assert_int_eq(q_int(db, "SELECT last_seq FROM accounts WHERE user_id = "
                             "'1'"),
                   5);
  ck_assert_int_eq(q_int(db, "SELECT entries FROM accounts WHERE user_id = "
                             "'2'"),
                   2);
  ck_assert_int_eq(q_int(db, "SELECT balance_after FROM ledger WHERE "
                             "event_id = 'b5'"),
                   1500);

  /* Delivered again: not applied twice, and no violation for it. */
  change(&in, 12, "b4", 1, 4, 400);
  flush_ok(&in);
  ck_assert(logged("offset 12 eventId b4: already in the ledger"));
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM violations"), 2);
  ck_assert_int_eq(q_int(db, "SELECT balance FROM accounts WHERE user_id = "
                             "'1'"),
                   1500);
  sqlite3_close(db);
  destroy(&in);
  ck_assert(logged("ledger.db: 2 user(s), 7 ledger entries, balances total "
                   "16.00; per-user ordering violations: 2"));
  ck_assert(logged("violation: user 1 expected seq 3, got 4 (gap) at "
                   "balance-activity [1] offset 12"));
  free(path);
}
END_TEST

/* ---------------------------------------------------------- settings */

static const struct settings_case {
  const char *plugin, *settings, *expect;
} settings_cases[] = {
    {"order_analytics", "",
     "demo/0/order_analytics: the setting db (the SQLite database to keep the "
     "hourly figures in) is required"},
    {"coupon_issuer", "stock = 5;",
     "demo/0/coupon_issuer: the setting db (the SQLite database of issued "
     "coupons) is required"},
    {"balance_ledger", "db = 5;",
     "demo.cfg:1: pipelines[0].config.db: expected a string"},
    {"coupon_issuer", "db = \"/tmp/x.db\"; stock = -1;",
     "demo/0/coupon_issuer: stock must be 0 or more (got -1)"},
    {"coupon_issuer", "db = \"/tmp/x.db\"; stock = \"many\";",
     "demo.cfg:1: pipelines[0].config.stock: expected an integer"},
    {"balance_ledger", "db = \"/nonexistent/dir/l.db\";",
     "demo/0/balance_ledger: db /nonexistent/dir/l.db: No such file or "
     "directory"},
    {"order_analytics", "db = \"/tmp/x.db\"; dbb = 1;",
     "demo.cfg:1: pipelines[0].config.dbb: unknown setting for plugin "
     "order_analytics"},
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

/* What `khost check` does (create, destroy) leaves no database behind. */
START_TEST(test_check_creates_nothing) {
  static const char *const names[] = {"order_analytics", "coupon_issuer",
                                      "balance_ledger"};
  char *path = in_tmp("none.db");
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    char so[512];
    inst_t in;
    snprintf(so, sizeof(so), TOP_BUILDDIR "/plugins/.libs/%s.so", names[i]);
    create_ok(&in, so, 0, "db = \"%s\"; %s", path, NULL);
    destroy(&in);
    ck_assert_msg(access(path, F_OK) != 0, "%s created %s", names[i], path);
  }
  ck_assert(!logged("none.db:"));
  free(path);
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
               "    plugin = \"%s\"; config = { db = \"%s/orders.db\"; }; },\n"
               "  { name = \"coupon-issuer\";\n"
               "    group_id = \"coupon-issue-consumer-group\";\n"
               "    topics = [ \"coupon-issue\" ];\n"
               "    plugin = \"%s\";\n"
               "    config = { db = \"%s/coupons.db\"; stock = %d; }; },\n"
               "  { name = \"balance-ledger\";\n"
               "    group_id = \"balance-ledger-consumer-group\";\n"
               "    topics = [ \"balance-activity\" ];\n"
               "    plugin = \"%s\"; config = { db = \"%s/ledger.db\"; }; }\n"
               ");\n",
               c->bootstraps, c->dir, PLUGIN("order_analytics"), c->dir,
               PLUGIN("coupon_issuer"), c->dir, STOCK, PLUGIN("balance_ledger"),
               c->dir),
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

/* What the databases say after the first run. */
typedef struct facts {
  int64_t orders, requests, issued, ledger, violations;
} facts_t;

static facts_t read_facts(const char *dir) {
  facts_t f;
  char path[1024];
  snprintf(path, sizeof(path), "%s/orders.db", dir);
  sqlite3 *db = db_open(path);
  f.orders = q_int(db, "SELECT sum(orders) FROM hourly");
  sqlite3_close(db);
  snprintf(path, sizeof(path), "%s/coupons.db", dir);
  db = db_open(path);
  f.requests = q_int(db, "SELECT count(*) FROM requests");
  f.issued = q_int(db, "SELECT count(*) FROM requests WHERE outcome = "
                       "'issued'");
  /* Never one event issued twice, never more than the stock. */
  ck_assert_int_eq(q_int(db, "SELECT count(DISTINCT event_id) FROM requests "
                             "WHERE outcome = 'issued'"),
                   f.issued);
  ck_assert_int_eq(q_int(db,
                         "SELECT count(*) FROM (SELECT coupon_id FROM "
                         "requests WHERE outcome = 'issued' GROUP BY "
                         "coupon_id HAVING count(*) > %d)",
                         STOCK),
                   0);
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM coupons c WHERE issued != "
                             "(SELECT count(*) FROM requests r WHERE "
                             "r.coupon_id = c.coupon_id AND outcome = "
                             "'issued')"),
                   0);
  /* The stock was reached: the limit was put to the test. */
  ck_assert_int_gt(q_int(db, "SELECT sum(sold_out) FROM coupons"), 0);
  sqlite3_close(db);
  snprintf(path, sizeof(path), "%s/ledger.db", dir);
  db = db_open(path);
  f.ledger = q_int(db, "SELECT count(*) FROM ledger");
  f.violations = q_int(db, "SELECT count(*) FROM violations");
  /* Each user's changes 1..n, all there. */
  ck_assert_int_eq(q_int(db, "SELECT count(*) FROM accounts WHERE last_seq "
                             "!= entries"),
                   0);
  sqlite3_close(db);
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
               "\"order_analytics\"; %s\n"
               "    config = { db = \"%s/orders.db\"; }; },\n"
               "  { name = \"coupon-issuer\"; group_id = \"g2\";\n"
               "    topics = [ \"coupon-issue\" ]; plugin = "
               "\"coupon_issuer\";\n"
               "    config = { db = \"%s/coupons.db\"; stock = %d; }; },\n"
               "  { name = \"balance-ledger\"; group_id = \"g3\";\n"
               "    topics = [ \"balance-activity\" ]; plugin = "
               "\"balance_ledger\";\n"
               "    config = { db = \"%s/ledger.db\"; }; }\n"
               ");\n",
               TOP_BUILDDIR, tmpdir, extra, tmpdir, tmpdir, STOCK, tmpdir),
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
  tcase_add_test(tc, test_coupon_stock_two_instances);
  tcase_add_test(tc, test_coupon_sold_out_and_redelivery);
  tcase_add_test(tc, test_balance_gap_and_reorder);
  tcase_add_loop_test(tc, test_bad_settings, 0,
                      (int)G_N_ELEMENTS(settings_cases));
  tcase_add_test(tc, test_check_creates_nothing);
  tcase_add_test(tc, test_demo_cfg_loads);
  suite_add_tcase(s, tc);

  /* The scenarios side by side, each a case of its own (tagged
   * "scenario"). */
  const TTest *scenarios[] = {test_demo_scenario, test_demo_program_output,
                              test_demo_program_not_reconciled,
                              test_demo_report_stopped_early};
  for (size_t i = 0; i < G_N_ELEMENTS(scenarios); i++) {
    tc = tu_case(s, scenarios[i]->name + strlen("test_"), 120, "scenario");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, scenarios[i]);
  }
  return s;
}
