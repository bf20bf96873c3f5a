/*
 * `khost replay` on the PostgreSQL store: a pipeline on a throwaway
 * server (pgutil.h) and librdkafka's mock cluster in-process runs to the
 * end, the replay moves its group back, and the next run shows what
 * dedup does with the records that come again (skip: none handled;
 * reprocess: every one, flagged); with host state, the stored offsets
 * move with the group's, so the next run starts where the replay says;
 * live claims of the pipeline (a host handling it) refuse the replay,
 * changing nothing, while expired ones (a host that died) do not.
 * Skipped, saying so, without the server binaries, unless
 * KHOST_REQUIRE_POSTGRES=1.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "dedup.h"
#include "host.h"
#include "mockutil.h"
#include "pgutil.h"
#include "replay.h"
#include "store_pg.h"
#include "testutil.h"

#define TOPIC "order-completed"
#define GROUP "data-platform-consumer-group"
#define PARTS 3
#define PER_PART 40

typedef struct world {
  mu_cluster_t c;
  pgu_t *pg;
  char *cfg;
  char *log; /* the scripted plugin's calls */
} world_t;

/* A config of pipeline "orders" on the server's store, with plugin (a
 * fixture name) and its config group's entries. */
static char *pg_cfg(world_t *w, const char *plugin, const char *plugin_cfg) {
  char *so = tu_fixture(plugin);
  char *path = tu_write_filef(
      w->c.dir, "khost.cfg",
      "shutdown_timeout = \"20s\";\n"
      "http = { listen = \"\"; };\n"
      "kafka = { bootstrap_servers = \"%s\";\n  " MU_KAFKA " };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\"; };\n"
      "pipelines = ( {\n"
      "  name = \"orders\"; group_id = \"" GROUP "\";\n"
      "  topics = [ \"" TOPIC "\" ]; plugin = \"%s\";\n"
      "  config = { %s };\n"
      "} );\n",
      w->c.bootstraps, w->pg->conninfo, so, plugin_cfg);
  free(so);
  return path;
}

/* The store with its schema, as `khost store init` leaves it. */
static store_t *pg_open(world_t *w) {
  char err[512];
  store_t *s = NULL;
  store_pg_opts_t o = {.conninfo = w->pg->conninfo, .create = 1};
  ck_assert_msg(store_pg_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  return s;
}

/* PER_PART records per partition, event IDs evt-<partition>-<i>, run to
 * the end by plugin: every one handled once. */
static void start(world_t *w, const char *plugin) {
  char id[32];
  w->pg = pgu_start();
  ck_assert_ptr_nonnull(w->pg);
  mu_start(&w->c, 1);
  mu_topic(&w->c, TOPIC, PARTS);
  for (int p = 0; p < PARTS; p++)
    for (int i = 0; i < PER_PART; i++) {
      snprintf(id, sizeof(id), "evt-%d-%03d", p, i);
      mu_produce(&w->c, TOPIC, p, id, NULL, "order");
    }
  mu_flush(&w->c);
  store_close(pg_open(w));
  w->log = tu_path(w->c.dir, "calls.log");
  char *plugin_cfg = strcmp(plugin, "scripted") == 0
                         ? g_strdup_printf("log_path = \"%s\";", w->log)
                         : g_strdup("");
  w->cfg = pg_cfg(w, plugin, plugin_cfg);
  g_free(plugin_cfg);
  pipeline_stats_t s = mu_run_to_end(w->cfg, 0, 60000);
  ck_assert_uint_eq(s.handled, PARTS * PER_PART);
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(&w->c, GROUP, TOPIC, p), PER_PART);
}

static void finish(world_t *w) {
  free(w->cfg);
  free(w->log);
  mu_stop(&w->c);
  pgu_free(w->pg);
}

/* Plan and apply a replay of pipeline orders; the status, err set. */
static int replay(world_t *w, const char *from, int mode, char *err,
                  size_t errlen) {
  cfg_t cfg;
  replay_plan_t *plan = NULL;
  replay_opts_t o = {
      .pipeline = "orders", .from = from, .partition = -1, .dedup_mode = mode};
  ck_assert_msg(cfg_load(&cfg, w->cfg, err, errlen) == 0, "%s", err);
  int rc = replay_plan(&plan, &cfg, &o, err, errlen);
  if (rc == 0)
    rc = replay_apply(plan, NULL, err, errlen);
  replay_free(plan);
  cfg_free(&cfg);
  return rc;
}

/* The replayed ranges of a partition, through the store's interface. */
static store_range_t *ranges_of(world_t *w, int32_t partition, size_t *n) {
  char err[512];
  uint32_t scope;
  store_range_t *v = NULL;
  store_t *s = pg_open(w);
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
  ck_assert_msg(store_replay_ranges(s, scope, TOPIC, partition, &v, n, err,
                                    sizeof(err)) == 0,
                "%s", err);
  store_close(s);
  return v;
}

static void assert_committed(world_t *w, int64_t want) {
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(&w->c, GROUP, TOPIC, p), want);
}

START_TEST(test_pg_replay_earliest_skip) {
  world_t w;
  char err[4096] = "";
  start(&w, "scripted");
  ck_assert_msg(replay(&w, "earliest", DEDUP_REPLAY_SKIP, err, 4096) == 0,
                "replay: %s", err);
  assert_committed(&w, 0);
  for (int p = 0; p < PARTS; p++) {
    size_t n;
    store_range_t *r = ranges_of(&w, p, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(r[0].from, 0);
    ck_assert_int_eq(r[0].to, PER_PART);
    ck_assert_int_eq(r[0].mode, STORE_REPLAY_SKIP);
    free(r);
  }
  pipeline_stats_t s = mu_run_to_end(w.cfg, 0, 60000);
  ck_assert_uint_eq(s.handled, 0);
  ck_assert_uint_eq(s.duplicates, PARTS * PER_PART);
  size_t n;
  free(mu_read_lines(w.log, &n));
  ck_assert_uint_eq(n, PARTS * PER_PART); /* no call since the first run */
  assert_committed(&w, PER_PART);
  finish(&w);
}
END_TEST

START_TEST(test_pg_replay_earliest_reprocess) {
  world_t w;
  char err[4096] = "";
  start(&w, "scripted");
  ck_assert_msg(replay(&w, "earliest", DEDUP_REPLAY_REPROCESS, err, 4096) == 0,
                "replay: %s", err);
  pipeline_stats_t s = mu_run_to_end(w.cfg, 0, 60000);
  ck_assert_uint_eq(s.handled, PARTS * PER_PART);
  size_t n;
  mu_line_t *l = mu_read_lines(w.log, &n);
  ck_assert_uint_eq(n, 2 * PARTS * PER_PART);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(!(l[i].flags & KHOST_RECORD_REPLAY) ==
                      !(i >= PARTS * PER_PART),
                  "line %zu (%s [%d] %lld): flags %u", i, l[i].topic,
                  (int)l[i].partition, (long long)l[i].offset, l[i].flags);
  free(l);
  /* A second run has nothing left: each event handled once more. */
  s = mu_run_to_end(w.cfg, 0, 60000);
  ck_assert_uint_eq(s.handled + s.duplicates, 0);
  assert_committed(&w, PER_PART);
  finish(&w);
}
END_TEST

/* The counter of partition p ("count:order:pP") in host state. */
static int64_t counter_of(world_t *w, int p) {
  char err[512], key[32];
  uint32_t scope;
  void *v = NULL;
  size_t vl = 0;
  store_t *s = pg_open(w);
  snprintf(key, sizeof(key), "count:order:p%d", p);
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
  ck_assert_int_eq(
      store_state_get(s, scope, key, strlen(key), &v, &vl, err, sizeof(err)),
      1);
  char *num = g_strndup(v, vl);
  int64_t n = strtoll(num, NULL, 10);
  g_free(num);
  free(v);
  store_close(s);
  return n;
}

static int64_t stored_offset(world_t *w, int p) {
  char err[512];
  uint32_t scope;
  int64_t next = -1;
  store_t *s = pg_open(w);
  ck_assert_int_eq(store_scope(s, "orders", &scope, err, sizeof(err)), 0);
  ck_assert_int_eq(
      store_offset_get(s, scope, TOPIC, p, &next, err, sizeof(err)), 1);
  store_close(s);
  return next;
}

/* With host state the store keeps each partition's next offset: the
 * replay from offset 25 sets it there with the group's, and the next run
 * (reprocess) starts at 25 — each counter gains exactly the replayed
 * records. */
START_TEST(test_pg_replay_moves_stored_offsets) {
  enum { FROM = 25 };
  world_t w;
  char err[4096] = "";
  start(&w, "counter");
  for (int p = 0; p < PARTS; p++) {
    ck_assert_int_eq(stored_offset(&w, p), PER_PART);
    ck_assert_int_eq(counter_of(&w, p), PER_PART);
  }
  ck_assert_msg(replay(&w, "25", DEDUP_REPLAY_REPROCESS, err, 4096) == 0,
                "replay: %s", err);
  assert_committed(&w, FROM);
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(stored_offset(&w, p), FROM);
  pipeline_stats_t s = mu_run_to_end(w.cfg, 0, 60000);
  ck_assert_uint_eq(s.handled, PARTS * (PER_PART - FROM));
  for (int p = 0; p < PARTS; p++) {
    ck_assert_int_eq(counter_of(&w, p), 2 * PER_PART - FROM);
    ck_assert_int_eq(stored_offset(&w, p), PER_PART);
  }
  assert_committed(&w, PER_PART);
  finish(&w);
}
END_TEST

/* psql -c sql on the test server: 0 when it succeeded. */
static int psql(world_t *w, const char *sql) {
  char *bin = g_build_filename(w->pg->bin, "psql", NULL);
  const char *argv[] = {bin, w->pg->conninfo, "-qc", sql, NULL};
  int status = -1;
  int ok =
      g_spawn_sync(w->c.dir, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL,
                   NULL, NULL, NULL, NULL, &status, NULL) &&
      WIFEXITED(status) && WEXITSTATUS(status) == 0;
  g_free(bin);
  return ok ? 0 : -1;
}

/* A live claim of the pipeline (a host handling one of its records)
 * refuses the replay and nothing changes; once its lease has run out
 * (the host died), the replay goes through. */
START_TEST(test_pg_replay_refused_while_claimed) {
  world_t w;
  char err[4096] = "";
  start(&w, "scripted");
  ck_assert_int_eq(
      psql(&w, "WITH h AS (INSERT INTO khost_hosts (name, lease_until)"
               " VALUES ('elsewhere/42/live', (extract(epoch from now()) *"
               " 1000 + 600000)::bigint) RETURNING host) INSERT INTO"
               " khost_marks SELECT scope, '\\x00'::bytea || 'evt-x', 0, '',"
               " 0, 0, 2, h.host, 0 FROM khost_scopes, h WHERE pipeline ="
               " 'orders'"),
      0);
  ck_assert_int_eq(replay(&w, "earliest", DEDUP_REPLAY_SKIP, err, 4096),
                   HOST_EXIT_RUNTIME);
  ck_assert_msg(strstr(err, "1 record(s) in flight") != NULL &&
                    strstr(err, "elsewhere/42/live") != NULL,
                "%s", err);
  assert_committed(&w, PER_PART);
  size_t n;
  free(ranges_of(&w, 0, &n));
  ck_assert_uint_eq(n, 0);
  ck_assert_int_eq(psql(&w, "UPDATE khost_hosts SET lease_until = 0 WHERE"
                            " name = 'elsewhere/42/live'"),
                   0);
  ck_assert_msg(replay(&w, "earliest", DEDUP_REPLAY_SKIP, err, 4096) == 0,
                "replay: %s", err);
  assert_committed(&w, 0);
  finish(&w);
}
END_TEST

Suite *pg_replay_suite(void) {
  Suite *s = suite_create("pg_replay");
  if (pgu_available("check_pg_replay")) {
    TU_CASE(s, test_pg_replay_moves_stored_offsets, 120, "mock-cluster");
    TU_CASE(s, test_pg_replay_earliest_reprocess, 120, "mock-cluster");
    TU_CASE(s, test_pg_replay_earliest_skip, 120, "mock-cluster");
    TU_CASE(s, test_pg_replay_refused_while_claimed, 120, "mock-cluster");
  }
  return s;
}
