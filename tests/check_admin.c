/*
 * `khost replay`, `khost offsets` and `khost dedup` as a user runs them:
 * the real binary as a child process (dying with the test process), its
 * exit status, stdout and stderr; Kafka is librdkafka's mock cluster in
 * this process, reached over TCP; dedup databases are written here with
 * the store's own interface.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "dedup.h"
#include "dedup_admin.h"
#include "mockutil.h"
#include "parked_hdr.h"
#include "store.h"
#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define TOPIC "order-completed"
#define GROUP "data-platform-consumer-group"
#define PARTS 3
#define DAY_MS (INT64_C(86400) * 1000)

/* ------------------------------------------------------------- running */

typedef struct run {
  int status; /* exit status */
  char *out, *err;
} run_t;

static void die_with_parent(gpointer parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
      getppid() != GPOINTER_TO_INT(parent))
    _exit(127);
}

/* Run khost with the NULL-terminated arguments; fails the test if it
 * cannot start, is killed, or reports a sanitizer error. */
static run_t khost(const char *first, ...) {
  const char *argv[24] = {KHOST, first};
  size_t n = 2;
  va_list ap;
  va_start(ap, first);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
    ck_assert_uint_lt(n, G_N_ELEMENTS(argv) - 1);
    argv[n++] = a;
  }
  va_end(ap);
  argv[n] = NULL;
  run_t r = {0};
  int wait = 0;
  GError *gerr = NULL;
  gboolean ok =
      g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, die_with_parent,
                   GINT_TO_POINTER(getpid()), &r.out, &r.err, &wait, &gerr);
  ck_assert_msg(ok, "cannot run %s: %s", KHOST, gerr ? gerr->message : "?");
  ck_assert_msg(WIFEXITED(wait), "khost killed by signal %d; stderr:\n%s",
                WTERMSIG(wait), r.err);
  ck_assert_msg(strstr(r.err, "runtime error:") == NULL &&
                    strstr(r.err, "Sanitizer") == NULL,
                "sanitizer report:\n%s", r.err);
  r.status = WEXITSTATUS(wait);
  return r;
}

static void run_free(run_t *r) {
  g_free(r->out);
  g_free(r->err);
}

/* r exited with status and said `needle` on stderr (or stdout). */
static void assert_run(const run_t *r, int status, const char *needle) {
  ck_assert_msg(r->status == status,
                "exit %d, not %d; stdout:\n%s\nstderr:\n%s", r->status, status,
                r->out, r->err);
  ck_assert_msg(!needle || strstr(r->err, needle) || strstr(r->out, needle),
                "\"%s\" not in the output; stdout:\n%s\nstderr:\n%s", needle,
                r->out, r->err);
}

/* ------------------------------------------------------------- configs */

/* Pipelines "orders" (TOPIC) and "coupons" (a topic the cluster does not
 * have); the dedup database in dir. */
static char *write_cfg(const char *dir, const char *bootstraps) {
  char *coupons = NULL, *plugin = tu_fixture("scripted");
  /* Also without a cluster (bootstraps nobody answers at). */
  mu_cluster_t where = {.bootstraps = bootstraps, .dir = (char *)dir};
  ck_assert_int_ge(
      asprintf(&coupons,
               ", {\n"
               "  name = \"coupons\"; group_id = \"coupon-consumer-group\";\n"
               "  topics = [ \"coupon-issue\" ]; plugin = \"%s\";\n"
               "  config = { log_path = \"%s/calls.log\"; };\n}",
               plugin, dir),
      0);
  mu_cfg_t o = {.top = "log_level = \"warning\";",
                .dedup = "retention = \"7d\";",
                .group = GROUP,
                .topics = "\"" TOPIC "\"",
                .more = coupons};
  char *path = mu_write_cfg(&where, &o);
  free(coupons);
  free(plugin);
  return path;
}

static char *dir_file(const char *dir, const char *name) {
  return tu_path(dir, name);
}

/* 20 records in each of 3 partitions of TOPIC. */
static char *cluster_with_records(mu_cluster_t *c) {
  mu_start(c, 1);
  mu_topic(c, TOPIC, PARTS);
  for (int i = 0; i < 20 * PARTS; i++) {
    char id[32];
    snprintf(id, sizeof(id), "evt-%03d", i);
    mu_produce(c, TOPIC, i % PARTS, id, NULL, "order");
  }
  mu_flush(c);
  return write_cfg(c->dir, c->bootstraps);
}

static int64_t sql_count(const char *db_path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int64_t n = -1;
  ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

/* ------------------------------------------------------------- replay */

/* Every kind of bad input: exit 2, a message naming the problem, and
 * nothing changed (no committed offsets, no dedup database). */
START_TEST(test_replay_bad_input) {
  mu_cluster_t c;
  char *cfg = cluster_with_records(&c);
  static const struct {
    const char *args[6];
    const char *says;
  } cases[] = {
      {{"-p", "nope", "--from", "earliest"}, "no pipeline named \"nope\""},
      {{"-p", "orders", "--from", "earliest", "--topic", "user-activity"},
       "is not a topic of pipeline orders"},
      {{"-p", "coupons", "--from", "earliest"},
       "coupon-issue does not exist in the cluster"},
      {{"-p", "orders", "--from", "earliest", "--partition", "7"},
       "has no partition 7"},
      {{"-p", "orders", "--from", "2999-01-01T00:00:00Z"},
       "that time is in the future"},
      {{"-p", "orders", "--from", "500"}, "that offset is outside the log"},
      {{"-p", "orders", "--from", "2026-02-30T00:00:00Z"}, "ISO-8601"},
      {{"-p", "orders", "--from", "last tuesday"}, "ISO-8601"},
      {{"-p", "orders", "--from", "earliest", "--dedup", "maybe"},
       "use skip or reprocess"},
      {{"-p", "orders"}, "--from POSITION"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    const char *const *a = cases[i].args;
    run_t r =
        khost("replay", "-c", cfg, a[0], a[1], a[2], a[3], a[4], a[5], NULL);
    assert_run(&r, 2, cases[i].says);
    run_free(&r);
  }
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, p),
                     RD_KAFKA_OFFSET_INVALID);
  char *db = dir_file(c.dir, "dedup.db");
  ck_assert_msg(access(db, F_OK) != 0, "a replay that failed created %s", db);
  free(db);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A config that runs the embedded mock cluster has nothing to inspect
 * afterwards; a dedup database that does not exist yet is no database. */
START_TEST(test_nothing_to_inspect) {
  char *dir = tu_tempdir();
  char *cfg = tu_write_file(
      dir, "mock.cfg",
      "mock = { brokers = 1; };\n"
      "dedup = { path = \"/nonexistent/khost-dedup.db\"; };\n"
      "pipelines = ( { name = \"orders\"; group_id = \"g\";\n"
      "  topics = [ \"" TOPIC "\" ]; plugin = \"./none.so\"; } );\n");
  run_t r = khost("offsets", "-c", cfg, NULL);
  assert_run(&r, 2, "embedded mock cluster");
  run_free(&r);
  r = khost("replay", "-c", cfg, "-p", "orders", "--from", "earliest", NULL);
  assert_run(&r, 2, "embedded mock cluster");
  run_free(&r);
  r = khost("dedup", "stats", "-c", cfg, NULL);
  assert_run(&r, 1, "/nonexistent/khost-dedup.db: no dedup database");
  run_free(&r);
  free(cfg);
  tu_rm_rf(dir);
  free(dir);
}
END_TEST

/* Without --execute a replay is a preview: the plan, nothing changed
 * (--dry-run says the same explicitly). */
START_TEST(test_replay_preview_changes_nothing) {
  mu_cluster_t c;
  char *cfg = cluster_with_records(&c);
  run_t r = khost("replay", "-c", cfg, "-p", "orders", "--from", "10",
                  "--dry-run", NULL);
  assert_run(&r, 0,
             "preview only, nothing changed: add --execute to move the "
             "offsets\n");
  run_free(&r);
  r = khost("replay", "-c", cfg, "-p", "orders", "--from", "10", NULL);
  assert_run(&r, 0,
             "preview only, nothing changed: add --execute to move the "
             "offsets\n");
  /* Header, then per partition: no committed offset, new 10, end 20,
   * backlog 10, nothing consumed before. */
  ck_assert_msg(strstr(r.out, "\nTOPIC ") && strstr(r.out, " COMMITTED ") &&
                    strstr(r.out, " REPLAYED\n"),
                "no header in:\n%s", r.out);
  for (int p = 0; p < PARTS; p++) {
    char row[128];
    snprintf(row, sizeof(row), TOPIC "  %-9d  %-10s  %-10d  %-10d  %-10d  0\n",
             p, "-", 10, 20, 10);
    ck_assert_msg(strstr(r.out, row) != NULL, "no row \"%s\" in:\n%s", row,
                  r.out);
  }
  run_free(&r);
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, p),
                     RD_KAFKA_OFFSET_INVALID);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A replay to offset 10 (the group is empty: it joins and commits), then
 * `offsets` reports exactly what the cluster holds: committed 10, end 20,
 * lag 10, in JSON and as a table. */
START_TEST(test_replay_then_offsets) {
  mu_cluster_t c;
  char *cfg = cluster_with_records(&c);
  run_t r = khost("replay", "-c", cfg, "-p", "orders", "--from", "10",
                  "--execute", "--json", NULL);
  assert_run(&r, 0, "committed the new offsets of group " GROUP);
  /* --json: only the plan on stdout, the rest on stderr. */
  json_error_t jerr;
  json_t *plan = json_loads(r.out, 0, &jerr);
  ck_assert_msg(plan != NULL, "not JSON (%s):\n%s", jerr.text, r.out);
  ck_assert_str_eq(json_string_value(json_object_get(plan, "group")), GROUP);
  ck_assert(json_is_true(json_object_get(plan, "execute")));
  json_t *parts = json_object_get(plan, "partitions");
  ck_assert_uint_eq(json_array_size(parts), PARTS);
  for (int p = 0; p < PARTS; p++) {
    json_t *row = json_array_get(parts, (size_t)p);
    ck_assert(json_is_null(json_object_get(row, "committed")));
    ck_assert_int_eq(json_integer_value(json_object_get(row, "new")), 10);
    ck_assert_int_eq(json_integer_value(json_object_get(row, "end")), 20);
  }
  ck_assert_int_eq(json_integer_value(json_object_get(plan, "backlog")),
                   10 * PARTS);
  json_decref(plan);
  run_free(&r);
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, p), 10);

  r = khost("offsets", "-c", cfg, "-p", "orders", "--json", NULL);
  assert_run(&r, 0, "members unknown");
  json_t *rows = json_loads(r.out, 0, &jerr);
  ck_assert_msg(json_is_array(rows), "not a JSON array (%s):\n%s", jerr.text,
                r.out);
  ck_assert_uint_eq(json_array_size(rows), PARTS);
  for (int p = 0; p < PARTS; p++) {
    json_t *o = json_array_get(rows, (size_t)p);
    ck_assert_str_eq(json_string_value(json_object_get(o, "group")), GROUP);
    ck_assert_str_eq(json_string_value(json_object_get(o, "topic")), TOPIC);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "partition")), p);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "committed")),
                     mu_committed(&c, GROUP, TOPIC, p));
    ck_assert_int_eq(json_integer_value(json_object_get(o, "start")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "end")),
                     mu_end_offset(&c, TOPIC, p));
    ck_assert_int_eq(json_integer_value(json_object_get(o, "lag")), 10);
    ck_assert(json_is_null(json_object_get(o, "member")));
  }
  json_decref(rows);
  run_free(&r);

  /* Both pipelines as a table: the missing topic is a note. */
  r = khost("offsets", "-c", cfg, NULL);
  assert_run(&r, 0, "coupon-issue does not exist in the cluster");
  ck_assert_msg(strstr(r.out,
                       GROUP "  " TOPIC "  0          10          0  "
                             "         20          10          ?\n") != NULL,
                "%s", r.out);
  run_free(&r);
  r = khost("offsets", "-c", cfg, "-p", "nope", NULL);
  assert_run(&r, 2, "no pipeline named \"nope\"");
  run_free(&r);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------------- dedup */

typedef struct dbfx {
  char *dir, *cfg, *db;
} dbfx_t;

static void add(dedup_writer_t *w, uint32_t scope, const char *id, int32_t part,
                int64_t off, int64_t at) {
  dedup_mark_t m = {.scope = scope,
                    .event_id = id,
                    .event_id_len = strlen(id),
                    .topic = TOPIC,
                    .partition = part,
                    .offset = off,
                    .handled_at_ms = at,
                    .outcome =
                        off == 13 ? DEDUP_OUTCOME_FAIL : DEDUP_OUTCOME_OK};
  ck_assert_int_eq(dedup_writer_add(w, &m), 0);
}

/* orders: evt-2 ten days ago, evt-1 twice (an hour ago and now), evt-3
 * (failed); coupons: evt-1. */
static void dbfx_init(dbfx_t *f) {
  char err[512];
  dedup_store_t *s = NULL;
  dedup_writer_t *w = NULL;
  uint32_t orders, coupons;
  int64_t now = dedup_now_ms();
  f->dir = tu_tempdir();
  f->cfg = write_cfg(f->dir, "127.0.0.1:1");
  f->db = dir_file(f->dir, "dedup.db");
  dedup_opts_t o = {.path = f->db};
  ck_assert_msg(dedup_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(dedup_scope(s, "orders", &orders, err, sizeof(err)), 0);
  ck_assert_int_eq(dedup_scope(s, "coupons", &coupons, err, sizeof(err)), 0);
  ck_assert_int_eq(dedup_writer_open(s, &w, err, sizeof(err)), 0);
  /* Batches of their own: pruning drops whole batches. */
  add(w, orders, "evt-2", 1, 8, now - 10 * DAY_MS);
  ck_assert_int_eq(dedup_writer_commit(w, NULL, err, sizeof(err)), 0);
  add(w, orders, "evt-1", 0, 7, now - 3600 * 1000);
  ck_assert_int_eq(dedup_writer_commit(w, NULL, err, sizeof(err)), 0);
  add(w, orders, "evt-3", 2, 13, now);
  add(w, orders, "evt-1", 2, 14, now);
  add(w, coupons, "evt-1", 0, 1, now);
  ck_assert_int_eq(dedup_writer_commit(w, NULL, err, sizeof(err)), 0);
  dedup_writer_close(w);
  dedup_close(s);
}

static void dbfx_done(dbfx_t *f) {
  tu_rm_rf(f->dir);
  free(f->dir);
  free(f->cfg);
  free(f->db);
}

/* Marks of event ID id in pipeline with outcome OK. */
static int ok_marks_of(const char *path, const char *pipeline, const char *id) {
  dadm_t *a = NULL;
  dadm_mark_t *v = NULL;
  size_t n = 0;
  uint32_t scope = 0;
  int found = 0, ok = 0;
  char err[512] = "";
  ck_assert_msg(
      dadm_open(&a, path, 0, err, sizeof(err)) == 0 &&
          dadm_scope(a, pipeline, 0, &scope, &found, err, sizeof(err)) == 0 &&
          found &&
          dadm_lookup(a, scope, id, strlen(id), &v, &n, err, sizeof(err)) == 0,
      "%s", err);
  for (size_t i = 0; i < n; i++)
    ok += v[i].outcome == DEDUP_OUTCOME_OK;
  dadm_marks_free(v, n);
  dadm_close(a);
  return ok;
}

static int64_t marks_of(const dbfx_t *f, const char *pipeline) {
  char sql[256];
  snprintf(sql, sizeof(sql),
           "SELECT coalesce(sum(n), 0) FROM batches"
           " JOIN scopes ON scopes.id = batches.scope"
           " WHERE scopes.name = '%s'",
           pipeline);
  return sql_count(f->db, sql);
}

START_TEST(test_dedup_stats) {
  dbfx_t f;
  dbfx_init(&f);
  run_t r = khost("dedup", "stats", "-c", f.cfg, NULL);
  assert_run(&r, 0, f.db);
  char orders[256], coupons[256];
  /* pipeline, marks, oldest (ten days ago), newest, replay ranges */
  ck_assert_int_eq(sscanf(strstr(r.out, "\norders ") + 1, "%255[^\n]", orders),
                   1);
  ck_assert_int_eq(
      sscanf(strstr(r.out, "\ncoupons ") + 1, "%255[^\n]", coupons), 1);
  char name[32], oldest[40], newest[40];
  long long marks, replays;
  ck_assert_int_eq(sscanf(orders, "%31s %lld %39s %39s %lld", name, &marks,
                          oldest, newest, &replays),
                   5);
  ck_assert_int_eq(marks, 4);
  ck_assert_int_lt(strcmp(oldest, newest), 0);
  ck_assert_int_eq(strlen(oldest), strlen("2026-01-01T00:00:00.000Z"));
  ck_assert_int_eq(oldest[strlen(oldest) - 1], 'Z');
  ck_assert_int_eq(sscanf(coupons, "%31s %lld", name, &marks), 2);
  ck_assert_int_eq(marks, 1);
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

START_TEST(test_dedup_lookup) {
  dbfx_t f;
  dbfx_init(&f);
  run_t r = khost("dedup", "lookup", "-c", f.cfg, "-p", "orders", "--event-id",
                  "evt-1", NULL);
  assert_run(&r, 0, NULL);
  /* Both marks, oldest first: pipeline, topic, partition, offset, time,
   * outcome. */
  const char *first = strstr(r.out, "\norders "), *second = NULL;
  ck_assert_ptr_nonnull(first);
  second = strstr(first + 1, "\norders ");
  ck_assert_ptr_nonnull(second);
  char topic[64], at[40], outcome[16];
  int part;
  long long off;
  ck_assert_int_eq(sscanf(first, " orders %63s %d %lld %39s %15s", topic, &part,
                          &off, at, outcome),
                   5);
  ck_assert_str_eq(topic, TOPIC);
  ck_assert_int_eq(part, 0);
  ck_assert_int_eq(off, 7);
  ck_assert_str_eq(outcome, "ok");
  ck_assert_int_eq(sscanf(second, " orders %63s %d %lld", topic, &part, &off),
                   3);
  ck_assert_int_eq(part, 2);
  ck_assert_int_eq(off, 14);
  run_free(&r);
  r = khost("dedup", "lookup", "-c", f.cfg, "-p", "orders", "--event-id",
            "evt-3", NULL);
  assert_run(&r, 0, " failed\n");
  run_free(&r);
  r = khost("dedup", "lookup", "-c", f.cfg, "-p", "orders", "--event-id",
            "evt-404", NULL);
  assert_run(&r, 1, "event ID evt-404: not found in pipeline orders");
  run_free(&r);
  r = khost("dedup", "lookup", "-c", f.cfg, "-p", "nope", "--event-id", "evt-1",
            NULL);
  assert_run(&r, 2, "no pipeline named \"nope\"");
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

/* forget previews by default and removes only with --execute, as replay
 * does; --yes, its old name, still works and says it is deprecated. */
START_TEST(test_dedup_forget) {
  dbfx_t f;
  dbfx_init(&f);
  run_t r = khost("dedup", "forget", "-c", f.cfg, "-p", "orders", "--event-id",
                  "evt-1", NULL);
  assert_run(&r, 0,
             "would remove the marks of event ID evt-1 in pipeline "
             "orders from ");
  ck_assert_msg(strstr(r.out, ": 2 mark(s)\npreview only, nothing changed: "
                              "add --execute to remove them\n") != NULL,
                "%s", r.out);
  run_free(&r);
  ck_assert_int_eq(marks_of(&f, "orders"), 4);

  r = khost("dedup", "forget", "-c", f.cfg, "-p", "orders", "--event-id",
            "evt-1", "--execute", NULL);
  assert_run(&r, 0, ": 2 mark(s)\n");
  assert_run(&r, 0, "a running khost keeps remembering these event IDs");
  ck_assert_msg(strstr(r.err, "deprecated") == NULL, "%s", r.err);
  run_free(&r);
  ck_assert_int_eq(marks_of(&f, "orders"), 2);
  ck_assert_int_eq(marks_of(&f, "coupons"), 1); /* its own evt-1 stays */
  r = khost("dedup", "lookup", "-c", f.cfg, "-p", "orders", "--event-id",
            "evt-1", NULL);
  assert_run(&r, 1, "not found");
  run_free(&r);

  r = khost("dedup", "forget", "-c", f.cfg, "-p", "orders", "--all", NULL);
  assert_run(&r, 0, "would remove every mark of pipeline orders");
  run_free(&r);
  ck_assert_int_eq(marks_of(&f, "orders"), 2);
  r = khost("dedup", "forget", "-c", f.cfg, "-p", "orders", "--all", "--yes",
            NULL);
  assert_run(&r, 0, ": 2 mark(s)\n");
  assert_run(&r, 0, "--yes is deprecated: use --execute");
  run_free(&r);
  ck_assert_int_eq(marks_of(&f, "orders"), 0);
  ck_assert_int_eq(marks_of(&f, "coupons"), 1);
  r = khost("dedup", "forget", "-c", f.cfg, "-p", "orders", NULL);
  assert_run(&r, 2, "give --event-id ID or --all");
  run_free(&r);
  r = khost("dedup", "prune", "-c", f.cfg, "--execute", NULL);
  assert_run(&r, 2, "--execute go with forget");
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

/* --json: stats and lookup as JSON, the same rows as the tables; headers
 * of the tables are single words. */
START_TEST(test_dedup_json) {
  dbfx_t f;
  json_error_t jerr;
  dbfx_init(&f);
  run_t r = khost("dedup", "stats", "-c", f.cfg, "--json", NULL);
  assert_run(&r, 0, NULL);
  json_t *st = json_loads(r.out, 0, &jerr);
  ck_assert_msg(st != NULL, "not JSON (%s):\n%s", jerr.text, r.out);
  ck_assert_str_eq(json_string_value(json_object_get(st, "database")), f.db);
  json_t *rows = json_object_get(st, "pipelines");
  ck_assert_uint_eq(json_array_size(rows), 2);
  json_t *orders = json_array_get(rows, 0);
  ck_assert_str_eq(json_string_value(json_object_get(orders, "pipeline")),
                   "orders");
  ck_assert_int_eq(json_integer_value(json_object_get(orders, "marks")), 4);
  ck_assert_int_lt(strcmp(json_string_value(json_object_get(orders, "oldest")),
                          json_string_value(json_object_get(orders, "newest"))),
                   0);
  json_decref(st);
  run_free(&r);

  r = khost("dedup", "lookup", "-c", f.cfg, "-p", "orders", "--event-id",
            "evt-1", "--json", NULL);
  assert_run(&r, 0, NULL);
  json_t *marks = json_loads(r.out, 0, &jerr);
  ck_assert_msg(json_is_array(marks), "not a JSON array:\n%s", r.out);
  ck_assert_uint_eq(json_array_size(marks), 2);
  json_t *m = json_array_get(marks, 1);
  ck_assert_str_eq(json_string_value(json_object_get(m, "topic")), TOPIC);
  ck_assert_int_eq(json_integer_value(json_object_get(m, "partition")), 2);
  ck_assert_int_eq(json_integer_value(json_object_get(m, "offset")), 14);
  ck_assert_str_eq(json_string_value(json_object_get(m, "outcome")), "ok");
  json_decref(marks);
  run_free(&r);

  r = khost("dedup", "lookup", "-c", f.cfg, "-p", "orders", "--event-id",
            "evt-1", NULL);
  assert_run(&r, 0, NULL);
  ck_assert_msg(strstr(r.out, " HANDLED_AT ") != NULL, "header:\n%s", r.out);
  run_free(&r);
  r = khost("dedup", "prune", "-c", f.cfg, "--json", NULL);
  assert_run(&r, 2, "--json goes with stats or lookup");
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

START_TEST(test_dedup_prune) {
  dbfx_t f;
  dbfx_init(&f);
  /* The configured retention (7d): the mark of ten days ago goes. */
  run_t r = khost("dedup", "prune", "-c", f.cfg, NULL);
  assert_run(&r, 0, "removed 1 mark(s) handled before ");
  run_free(&r);
  ck_assert_int_eq(marks_of(&f, "orders"), 3);
  /* Older than 30 minutes: the mark of an hour ago. */
  r = khost("dedup", "prune", "-c", f.cfg, "--older-than", "30m", NULL);
  assert_run(&r, 0, "removed 1 mark(s)");
  run_free(&r);
  ck_assert_int_eq(marks_of(&f, "orders"), 2);
  ck_assert_int_eq(marks_of(&f, "coupons"), 1);
  r = khost("dedup", "prune", "-c", f.cfg, "--older-than", "soon", NULL);
  assert_run(&r, 2, "--older-than soon: not a duration");
  run_free(&r);
  r = khost("dedup", "frobnicate", "-c", f.cfg, NULL);
  assert_run(&r, 2, "unknown action 'frobnicate'");
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

/* A writer (as a running host's member) commits batches all along while
 * the admin commands read and delete: none of its commits fails, and
 * none waits long. */
typedef struct busy_writer {
  dedup_store_t *s;
  uint32_t scope;
  _Atomic int stop, batches;
  int failures;
  int64_t worst_ms;
} busy_writer_t;

static void *writer_main(void *arg) {
  busy_writer_t *b = arg;
  char err[512], id[32];
  dedup_writer_t *w = NULL;
  if (dedup_writer_open(b->s, &w, err, sizeof(err)) != 0)
    return NULL;
  for (int i = 0; !b->stop; i++) {
    for (int k = 0; k < 50; k++) {
      snprintf(id, sizeof(id), "live-%d-%d", i, k);
      add(w, b->scope, id, 0, i, dedup_now_ms());
    }
    int64_t t0 = tu_mono_ms();
    b->failures += dedup_writer_commit(w, NULL, err, sizeof(err)) != 0;
    int64_t took = tu_mono_ms() - t0;
    b->worst_ms = took > b->worst_ms ? took : b->worst_ms;
    b->batches++;
  }
  dedup_writer_close(w);
  return NULL;
}

START_TEST(test_dedup_admin_beside_a_writer) {
  dbfx_t f;
  char err[512];
  busy_writer_t b = {0};
  pthread_t t;
  dbfx_init(&f);
  dedup_opts_t o = {.path = f.db, .busy_timeout_ms = 10000};
  ck_assert_msg(dedup_open(&b.s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(dedup_scope(b.s, "orders", &b.scope, err, sizeof(err)), 0);
  ck_assert_int_eq(pthread_create(&t, NULL, writer_main, &b), 0);
  TU_WAIT_UNTIL(b.batches > 0, 10000, "the writer commits");
  run_t r = khost("dedup", "stats", "-c", f.cfg, NULL);
  assert_run(&r, 0, "orders");
  run_free(&r);
  r = khost("dedup", "prune", "-c", f.cfg, NULL);
  assert_run(&r, 0, "removed 1 mark(s)");
  run_free(&r);
  r = khost("dedup", "forget", "-c", f.cfg, "-p", "orders", "--all",
            "--execute", NULL);
  assert_run(&r, 0, "removed every mark of pipeline orders");
  run_free(&r);
  int before = b.batches;
  TU_WAIT_UNTIL(b.batches > before, 10000, "the writer goes on");
  b.stop = 1;
  pthread_join(t, NULL);
  dedup_close(b.s);
  ck_assert_int_eq(b.failures, 0);
  ck_assert_msg(b.worst_ms < 2000, "a commit waited %lld ms",
                (long long)b.worst_ms);
  dbfx_done(&f);
}
END_TEST

/* ------------------------------------------------------------- parked */

/* Park one record of pipeline (as a failing run does: its FAIL mark with
 * the same time); handled_since > 0: a later OK mark of its ID then. */
static void park(store_t *s, const char *pipeline, int32_t part, int64_t off,
                 const char *id, const void *value, size_t vlen, int64_t at,
                 int64_t handled_since) {
  char err[512];
  uint32_t scope;
  store_batch_t *b = NULL;
  GByteArray *hdrs = g_byte_array_new();
  parked_hdr_add(hdrs, "eventId", 7, id, strlen(id));
  parked_hdr_add(hdrs, "bin", 3, "\x00\x01", 2);
  ck_assert_int_eq(store_scope(s, pipeline, &scope, err, sizeof(err)), 0);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  char key[16];
  snprintf(key, sizeof(key), "k%" PRId64, off);
  store_parked_t p = {.scope = scope,
                      .topic = TOPIC,
                      .partition = part,
                      .offset = off,
                      .timestamp_ms = at - 5000,
                      .key = key,
                      .key_len = strlen(key),
                      .value = value,
                      .value_len = vlen,
                      .headers = hdrs->data,
                      .headers_len = hdrs->len,
                      .event_id = id,
                      .event_id_len = strlen(id),
                      .reason = "the plugin failed the record: the "
                                "dependency is down",
                      .attempts = 1,
                      .parked_at_ms = at};
  store_mark_t m = {.scope = scope,
                    .event_id = id,
                    .event_id_len = strlen(id),
                    .topic = TOPIC,
                    .partition = part,
                    .offset = off,
                    .handled_at_ms = at,
                    .outcome = STORE_OUTCOME_FAIL};
  ck_assert_int_eq(store_batch_park(b, &p), 0);
  ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  if (handled_since > 0) {
    m.handled_at_ms = handled_since;
    m.outcome = STORE_OUTCOME_OK;
    ck_assert_int_eq(store_batch_add_mark(b, &m), 0);
  }
  ck_assert_msg(store_batch_commit(b, NULL, err, sizeof(err)) == 0, "%s", err);
  store_batch_close(b);
  g_byte_array_free(hdrs, TRUE);
}

/* orders: p0 o3 fails again ("fail: still bad"), p0 o5 and p2 o9 (a
 * value that is not text) go through now, p1 o7 was handled since it was
 * parked; coupons: p0 o1. */
static void pfx_init(dbfx_t *f) {
  char err[512];
  store_t *s = NULL;
  int64_t at = dedup_now_ms() - 60000;
  f->dir = tu_tempdir();
  f->cfg = write_cfg(f->dir, "127.0.0.1:1");
  f->db = dir_file(f->dir, "dedup.db");
  dedup_opts_t o = {.path = f->db};
  ck_assert_msg(store_sqlite_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  park(s, "orders", 0, 5, "evt-5", "order", 5, at, 0);
  park(s, "orders", 0, 3, "evt-3", "fail: still bad", 15, at, 0);
  park(s, "orders", 1, 7, "evt-7", "order", 5, at, at + 30000);
  park(s, "orders", 2, 9, "evt-9", "\xff\xfe", 2, at, 0);
  park(s, "coupons", 0, 1, "evt-1", "coupon", 6, at, 0);
  store_close(s);
}

static int64_t parked_of(const dbfx_t *f, const char *pipeline) {
  char sql[256];
  snprintf(sql, sizeof(sql),
           "SELECT count(*) FROM parked JOIN scopes ON scopes.id ="
           " parked.scope WHERE scopes.name = '%s'",
           pipeline);
  return sql_count(f->db, sql);
}

/* Offsets of the lines of r.out that start with TOPIC, in order. */
static int row_offsets(const run_t *r, int64_t *offs, int max) {
  int n = 0;
  for (const char *l = r->out; l && *l && n < max; l = strchr(l, '\n')) {
    l += *l == '\n';
    int part;
    long long off;
    if (sscanf(l, TOPIC " %d %lld", &part, &off) == 2)
      offs[n++] = part * 100 + off;
  }
  return n;
}

START_TEST(test_parked_list_and_show) {
  dbfx_t f;
  int64_t offs[8];
  pfx_init(&f);
  run_t r = khost("parked", "list", "-c", f.cfg, "-p", "orders", NULL);
  assert_run(&r, 0, "TOPIC");
  ck_assert_int_eq(row_offsets(&r, offs, 8), 4);
  ck_assert_int_eq(offs[0], 3); /* by partition, then offset */
  ck_assert_int_eq(offs[1], 5);
  ck_assert_int_eq(offs[2], 107);
  ck_assert_int_eq(offs[3], 209);
  ck_assert_ptr_nonnull(strstr(r.out, "the dependency is down"));
  ck_assert_ptr_null(strstr(r.out, "evt-1 "));
  run_free(&r);
  r = khost("parked", "list", "-c", f.cfg, "-p", "orders", "--topic", TOPIC,
            "--partition", "0", "--json", NULL);
  assert_run(&r, 0, NULL);
  json_error_t je;
  json_t *j = json_loads(r.out, 0, &je);
  ck_assert_msg(j && json_array_size(j) == 2, "%s", r.out);
  ck_assert_str_eq(
      json_string_value(json_object_get(json_array_get(j, 1), "event_id")),
      "evt-5");
  ck_assert_int_eq(
      json_integer_value(json_object_get(json_array_get(j, 1), "attempts")), 1);
  json_decref(j);
  run_free(&r);
  r = khost("parked", "show", "-c", f.cfg, "-p", "orders", "--topic", TOPIC,
            "--partition", "0", "--offset", "5", NULL);
  assert_run(&r, 0, "value      order\n");
  ck_assert_ptr_nonnull(strstr(r.out, "key        k5\n"));
  ck_assert_ptr_nonnull(strstr(r.out, "header     eventId: evt-5\n"));
  ck_assert_ptr_nonnull(strstr(r.out, "header     bin: base64:AAE=\n"));
  ck_assert_ptr_nonnull(strstr(r.out, "attempts   1\n"));
  run_free(&r);
  r = khost("parked", "show", "-c", f.cfg, "-p", "orders", "--topic", TOPIC,
            "--partition", "2", "--offset", "9", "--json", NULL);
  assert_run(&r, 0, NULL);
  j = json_loads(r.out, 0, &je);
  ck_assert_msg(j != NULL, "%s", r.out);
  ck_assert_str_eq(json_string_value(json_object_get(j, "value")), "//4=");
  ck_assert_str_eq(json_string_value(json_object_get(j, "value_encoding")),
                   "base64");
  json_decref(j);
  run_free(&r);
  r = khost("parked", "show", "-c", f.cfg, "-p", "orders", "--topic", TOPIC,
            "--partition", "0", "--offset", "4", NULL);
  assert_run(&r, 1, "nothing parked at " TOPIC " [0] offset 4");
  run_free(&r);
  r = khost("parked", "show", "-c", f.cfg, "-p", "orders", NULL);
  assert_run(&r, 2, "give --topic T --partition N --offset O");
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

START_TEST(test_parked_skip) {
  dbfx_t f;
  pfx_init(&f);
  run_t r = khost("parked", "skip", "-c", f.cfg, "-p", "orders", "--topic",
                  TOPIC, "--partition", "2", "--offset", "9", NULL);
  assert_run(&r, 0, "would drop 1 parked record(s) of pipeline orders");
  ck_assert_int_eq(parked_of(&f, "orders"), 4);
  run_free(&r);
  r = khost("parked", "skip", "-c", f.cfg, "-p", "orders", "--topic", TOPIC,
            "--partition", "2", "--offset", "9", "--execute", NULL);
  assert_run(&r, 0, "dropped 1 parked record(s) of pipeline orders");
  ck_assert_int_eq(parked_of(&f, "orders"), 3);
  run_free(&r);
  r = khost("parked", "skip", "-c", f.cfg, "-p", "orders", NULL);
  assert_run(&r, 2, "or --all");
  run_free(&r);
  r = khost("parked", "skip", "-c", f.cfg, "-p", "orders", "--all", "--execute",
            NULL);
  assert_run(&r, 0, "dropped 3 parked record(s)");
  ck_assert_int_eq(parked_of(&f, "orders"), 0);
  ck_assert_int_eq(parked_of(&f, "coupons"), 1);
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

/* The plugin's calls in calls.log: "topic partition offset attempt id
 * result ms flags" per line; the offsets (partition * 100 + offset) in
 * order, and whether each had the replay flag. */
static int calls_of(const dbfx_t *f, int64_t *offs, int max, int *replay) {
  char *path = dir_file(f->dir, "calls.log");
  char *text = tu_read_file(path);
  int n = 0;
  *replay = 1;
  for (char *l = text; l && *l && n < max;) {
    int part;
    long long off, ms;
    unsigned attempt, flags;
    int res;
    char id[64];
    if (sscanf(l, TOPIC " %d %lld %u %63s %d %lld %u", &part, &off, &attempt,
               id, &res, &ms, &flags) == 7) {
      offs[n++] = part * 100 + off;
      *replay &= (flags & KHOST_RECORD_REPLAY) != 0;
    }
    l = strchr(l, '\n');
    l = l ? l + 1 : NULL;
  }
  free(text);
  free(path);
  return n;
}

/* replay previews; refuses while the store is open elsewhere; then sends
 * the records through the plugin in offset order per partition: OK
 * leaves the lot, FAIL stays with the new reason and attempts, a record
 * handled since is not called and leaves the lot. */
START_TEST(test_parked_replay) {
  dbfx_t f;
  char err[512];
  int64_t offs[8];
  int replay;
  store_t *s = NULL;
  pfx_init(&f);
  run_t r = khost("parked", "replay", "-c", f.cfg, "-p", "orders", NULL);
  assert_run(&r, 0, "would replay 4 parked record(s) of pipeline orders");
  ck_assert_int_eq(calls_of(&f, offs, 8, &replay), 0);
  run_free(&r);
  /* A running host has the store open. */
  dedup_opts_t o = {.path = f.db};
  ck_assert_msg(store_sqlite_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  r = khost("parked", "replay", "-c", f.cfg, "-p", "orders", "--execute", NULL);
  assert_run(&r, 2, "in use by a running khost: stop it first");
  ck_assert_int_eq(calls_of(&f, offs, 8, &replay), 0);
  run_free(&r);
  store_close(s);
  r = khost("parked", "replay", "-c", f.cfg, "-p", "orders", "--execute", NULL);
  assert_run(&r, 0, "2 OK and 1 handled since (out of the lot), 1 FAIL");
  ck_assert_int_eq(calls_of(&f, offs, 8, &replay), 3);
  ck_assert_int_eq(offs[0], 3);
  ck_assert_int_eq(offs[1], 5);
  ck_assert_int_eq(offs[2], 209);
  ck_assert(replay);
  run_free(&r);
  ck_assert_int_eq(parked_of(&f, "orders"), 1);
  ck_assert_int_eq(sql_count(f.db, "SELECT attempts FROM parked WHERE"
                                   " \"offset\" = 3 AND reason = 'the plugin"
                                   " failed the record: still bad'"),
                   2);
  ck_assert_int_eq(parked_of(&f, "coupons"), 1);
  /* Its ID is marked OK now: a copy delivered later is a duplicate. */
  ck_assert_int_eq(ok_marks_of(f.db, "orders", "evt-5"), 1);
  /* Again: the record that failed is called again, nothing else. */
  r = khost("parked", "replay", "-c", f.cfg, "-p", "orders", "--execute", NULL);
  assert_run(&r, 0, "0 OK and 0 handled since (out of the lot), 1 FAIL");
  ck_assert_int_eq(calls_of(&f, offs, 8, &replay), 4);
  run_free(&r);
  dbfx_done(&f);
}
END_TEST

/* The value of key in the durable state of pipeline, or NULL. */
static char *state_of(const char *db, const char *pipeline, const char *key) {
  char err[512];
  store_t *s = NULL;
  uint32_t scope;
  void *v = NULL;
  size_t vl = 0;
  dedup_opts_t o = {.path = db};
  ck_assert_msg(store_sqlite_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(store_scope(s, pipeline, &scope, err, sizeof(err)), 0);
  int found =
      store_state_get(s, scope, key, strlen(key), &v, &vl, err, sizeof(err));
  ck_assert_msg(found >= 0, "%s", err);
  char *text = found ? g_strndup(v, vl) : NULL;
  free(v);
  store_close(s);
  return text;
}

/* replay with host state (the counter fixture, pipeline "counts"): reads
 * see the stored counter, an OK's write lands with its leaving the lot,
 * the write of an attempt that asked for a retry leaves nothing, and a
 * second replay counts nothing again. */
START_TEST(test_parked_replay_with_state) {
  char err[512], *plugin = tu_fixture("counter"), *more = NULL;
  store_t *s = NULL;
  store_batch_t *b = NULL;
  uint32_t scope;
  int64_t at = dedup_now_ms() - 60000;
  char *dir = tu_tempdir();
  mu_cluster_t where = {.bootstraps = "127.0.0.1:1", .dir = dir};
  ck_assert_int_ge(asprintf(&more,
                            ", {\n  name = \"counts\"; group_id = \"c\";\n"
                            "  topics = [ \"" TOPIC "\" ]; plugin = \"%s\";\n"
                            "  retry = { max = 2; backoff = \"5ms\"; };\n}",
                            plugin),
                   0);
  mu_cfg_t mc = {.group = GROUP, .topics = "\"" TOPIC "\"", .more = more};
  char *cfg = mu_write_cfg(&where, &mc), *db = dir_file(dir, "dedup.db");
  dedup_opts_t o = {.path = db};
  ck_assert_msg(store_sqlite_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(store_scope(s, "counts", &scope, err, sizeof(err)), 0);
  ck_assert_int_eq(store_batch_open(s, &b, err, sizeof(err)), 0);
  ck_assert_int_eq(
      store_batch_put_state(b, scope, "count:apple:p0", 14, "41", 2), 0);
  ck_assert_int_eq(store_batch_commit(b, NULL, err, sizeof(err)), 0);
  store_batch_close(b);
  park(s, "counts", 0, 4, "evt-4", "apple", 5, at, 0);
  park(s, "counts", 1, 6, "evt-6", "apple!", 6, at, 0);
  store_close(s);
  for (int run = 0; run < 2; run++) {
    run_t r =
        khost("parked", "replay", "-c", cfg, "-p", "counts", "--execute", NULL);
    assert_run(&r, 0,
               run == 0 ? "2 OK and 0 handled since (out of the lot), 0 FAIL"
                        : "nothing parked to replay in pipeline counts");
    run_free(&r);
    char *p0 = state_of(db, "counts", "count:apple:p0");
    char *p1 = state_of(db, "counts", "count:apple:p1");
    ck_assert_str_eq(p0 ? p0 : "(none)", "42");
    ck_assert_str_eq(p1 ? p1 : "(none)", "1");
    g_free(p0);
    g_free(p1);
  }
  ck_assert_int_eq(sql_count(db, "SELECT count(*) FROM parked"), 0);
  ck_assert_int_eq(ok_marks_of(db, "counts", "evt-6"), 1);
  tu_rm_rf(dir);
  free(dir);
  free(cfg);
  free(db);
  free(more);
  free(plugin);
}
END_TEST

Suite *admin_suite(void) {
  Suite *s = suite_create("admin");
  TCase *db = tcase_create("dedup");
  tcase_set_timeout(db, 60);
  tcase_add_test(db, test_dedup_stats);
  tcase_add_test(db, test_dedup_lookup);
  tcase_add_test(db, test_dedup_forget);
  tcase_add_test(db, test_dedup_json);
  tcase_add_test(db, test_dedup_prune);
  tcase_add_test(db, test_dedup_admin_beside_a_writer);
  tcase_add_test(db, test_nothing_to_inspect);
  tcase_add_test(db, test_parked_list_and_show);
  tcase_add_test(db, test_parked_skip);
  tcase_add_test(db, test_parked_replay);
  tcase_add_test(db, test_parked_replay_with_state);
  suite_add_tcase(s, db);
  /* Each test a case of its own, run beside the others. */
  TU_CASE(s, test_replay_bad_input, 120, "mock-cluster");
  TU_CASE(s, test_replay_preview_changes_nothing, 120, "mock-cluster");
  TU_CASE(s, test_replay_then_offsets, 120, "mock-cluster");
  return s;
}
