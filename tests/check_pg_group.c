/*
 * Two khost processes in one group (6 partitions, a mock cluster in its
 * own process, tests/mockd) sharing one PostgreSQL store on a throwaway
 * server (pgutil.h): an event re-published with the same eventId to other
 * partitions, so to the other host, is handled once across both hosts;
 * the server stopped mid-run and started again: nothing lost, nothing
 * committed while it was down, consumption resumes; one host killed with
 * kill -9 again and again while both run, with the `counter` fixture on
 * host state: every counter equals the produced records' count, nothing
 * lost, nothing applied twice (KHOST_PG_KILLS kills, default 12;
 * KHOST_TEST_SEED the moments).
 * Skipped, saying so, without the server binaries, unless
 * KHOST_REQUIRE_POSTGRES=1.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultutil.h"
#include "pgutil.h"
#include "store_pg.h"
#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define EVENTS 60
#define PARTITIONS 6

/* A config for one pipeline of FU_TOPIC on the effects fixture, its store
 * the server's database; store_more and pipeline_more are added to the
 * store's and the pipeline's groups. */
static char *pg_config_with(fu_world_t *w, const char *conninfo,
                            const char *store_more, const char *pipeline_more) {
  char *so = tu_fixture("effects");
  char *path = tu_write_filef(
      w->dir, "khost.cfg",
      "log_level = \"info\";\n"
      "http = { listen = \"\"; };\n"
      "kafka = { bootstrap_servers = \"%s\";\n"
      "  session_timeout_ms = 3000; heartbeat_interval_ms = 300; };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\"; %s };\n"
      "pipelines = ( {\n"
      "  name = \"" FU_PIPELINE "\"; group_id = \"" FU_GROUP "\";\n"
      "  topics = [ \"" FU_TOPIC "\" ]; plugin = \"%s\";\n"
      "  config = { log_path = \"%s/effects.log\"; };\n"
      "  %s\n"
      "} );\n",
      w->bootstraps, conninfo, store_more, so, w->dir, pipeline_more);
  free(so);
  return path;
}

static char *pg_config(fu_world_t *w, const char *conninfo) {
  return pg_config_with(w, conninfo, "", "");
}

static void store_init(fu_world_t *w, const char *cfg) {
  char *argv[] = {KHOST, "store", "init", "-c", (char *)cfg, NULL};
  fu_proc_t *p = fu_spawn(w, "init", argv, 0);
  ck_assert_int_eq(fu_wait_exit(p, 30000), 0);
}

/* How many effect lines (KHOST_OK results) each event ID has. */
static GHashTable *effects_by_id(fu_world_t *w) {
  char *path = fu_path(w, "effects.log"), *text = tu_read_file(path);
  GHashTable *n = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  char **lines = g_strsplit(text ? text : "", "\n", -1);
  for (char **l = lines; *l; l++) {
    char **f = g_strsplit(*l, " ", -1);
    if (g_strv_length(f) >= 7) {
      guint c = GPOINTER_TO_UINT(g_hash_table_lookup(n, f[6]));
      g_hash_table_replace(n, g_strdup(f[6]), GUINT_TO_POINTER(c + 1));
    }
    g_strfreev(f);
  }
  g_strfreev(lines);
  free(text);
  free(path);
  return n;
}

/* Every event three times, on partitions i, i+2 and i+4 (mod 6): each
 * host holds some of them once both are in the group. */
static void publish_copies(fu_world_t *w) {
  for (int i = 0; i < EVENTS; i++) {
    char id[32];
    snprintf(id, sizeof(id), "ev-%03d", i);
    for (int k = 0; k < 3; k++)
      fu_produce_raw(w, FU_TOPIC, (i + 2 * k) % PARTITIONS, id, NULL, "ok", 2,
                     NULL);
  }
  fu_flush(w);
}

/* Rows of khost_marks that are marks because their epoch's committed
 * position passed them (schema version 5), and rows written as marks. */
static void count_marks(const pgu_t *pg, long *by_position, long *written) {
  PGconn *c = PQconnectdb(pg->conninfo);
  PGresult *r = PQexec(
      c, "SELECT count(*) FILTER (WHERE m.outcome = 2 AND EXISTS (SELECT 1"
         " FROM khost_epochs e WHERE e.epoch = m.epoch AND e.through >"
         " m.off)), count(*) FILTER (WHERE m.outcome <> 2) FROM khost_marks m");
  ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s",
                PQresultErrorMessage(r));
  *by_position = strtol(PQgetvalue(r, 0, 0), NULL, 10);
  *written = strtol(PQgetvalue(r, 0, 1), NULL, 10);
  PQclear(r);
  PQfinish(c);
}

START_TEST(test_two_hosts_handle_once) {
  fu_world_t w;
  pgu_t *pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  fu_start(&w, 1, PARTITIONS);
  char *cfg = pg_config(&w, pg->conninfo);
  store_init(&w, cfg);
  fu_proc_t *a = fu_khost(&w, "a", cfg, 0, 0);
  fu_wait_stderr(a, "assigned", 1, 30000);
  fu_proc_t *b = fu_khost(&w, "b", cfg, 1, 0);
  fu_wait_stderr(b, "assigned", 1, 30000);
  publish_copies(&w);
  fu_wait_all_committed(&w, 60000);
  fu_stop_host(a);
  fu_stop_host(b);
  GHashTable *n = effects_by_id(&w);
  for (int i = 0; i < EVENTS; i++) {
    char id[32];
    snprintf(id, sizeof(id), "ev-%03d", i);
    guint c = GPOINTER_TO_UINT(g_hash_table_lookup(n, id));
    ck_assert_msg(c == 1, "%s handled %u times across the two hosts", id, c);
  }
  ck_assert_msg(fu_stderr_count(a, "handled") > 0 &&
                    fu_stderr_count(b, "handled") > 0,
                "a summary line missing");
  /* Records handled in order are marks by position, not rows written;
   * together they are every event once. */
  long by_position, written;
  count_marks(pg, &by_position, &written);
  ck_assert_msg(by_position > 0 && by_position + written == EVENTS,
                "%ld marks by position, %ld written, %d events", by_position,
                written, EVENTS);
  g_hash_table_destroy(n);
  free(cfg);
  fu_stop(&w);
  pgu_free(pg);
}
END_TEST

/* Every event ID ev-000 .. ev-(n-1) has exactly one effect. */
static void assert_once(fu_world_t *w, int n, const char *prefix) {
  GHashTable *h = effects_by_id(w);
  for (int i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof(id), "%s%03d", prefix, i);
    guint c = GPOINTER_TO_UINT(g_hash_table_lookup(h, id));
    ck_assert_msg(c == 1, "%s handled %u times", id, c);
  }
  g_hash_table_destroy(h);
}

static void publish(fu_world_t *w, const char *prefix, int n) {
  for (int i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof(id), "%s%03d", prefix, i);
    fu_produce_raw(w, FU_TOPIC, i % PARTITIONS, id, NULL, "ok", 2, NULL);
  }
  fu_flush(w);
}

/* The server stops mid-run: the host says so, commits nothing while it
 * is down, and once it is back handles what arrived meanwhile. */
START_TEST(test_server_stopped_mid_run) {
  fu_world_t w;
  int64_t before[PARTITIONS];
  pgu_t *pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  fu_start(&w, 1, PARTITIONS);
  char *cfg = pg_config(&w, pg->conninfo);
  store_init(&w, cfg);
  fu_proc_t *a = fu_khost(&w, "a", cfg, 0, 0);
  fu_wait_stderr(a, "assigned", 1, 30000);
  publish(&w, "up-", 30);
  fu_wait_all_committed(&w, 60000);
  for (int p = 0; p < PARTITIONS; p++)
    before[p] = fu_committed(&w, p, 5000);
  ck_assert_int_eq(pgu_stop(pg), 0);
  publish(&w, "down-", 30);
  fu_wait_stderr(a, "records wait for their claims", 1, 30000);
  for (int p = 0; p < PARTITIONS; p++)
    ck_assert_int_eq(fu_committed(&w, p, 5000), before[p]);
  ck_assert_int_eq(pgu_restart(pg), 0);
  fu_wait_stderr(a, "claims work again", 1, 30000);
  fu_wait_all_committed(&w, 60000);
  fu_stop_host(a);
  assert_once(&w, 30, "up-");
  assert_once(&w, 30, "down-");
  free(cfg);
  fu_stop(&w);
  pgu_free(pg);
}
END_TEST

/* ------------------------------------------------------------ kill -9 */

#define VALUES 7

/* Record n's value: "c0".."c6", every 40th asking for a retry first (its
 * first attempt's write must leave nothing). */
static const char *value_of(unsigned n) {
  static const char *const plain[VALUES] = {"c0", "c1", "c2", "c3",
                                            "c4", "c5", "c6"};
  static const char *const retry[VALUES] = {"c0!", "c1!", "c2!", "c3!",
                                            "c4!", "c5!", "c6!"};
  return n % 40 == 9 ? retry[n % VALUES] : plain[n % VALUES];
}

/* The counter fixture on the shared store; a lease well under the
 * session timeout plus a rebalance. */
static char *counter_config(fu_world_t *w, const char *conninfo) {
  char *so = tu_fixture("counter");
  char *path = tu_write_filef(
      w->dir, "counter.cfg",
      "log_level = \"info\";\n"
      "http = { listen = \"\"; };\n"
      "kafka = { bootstrap_servers = \"%s\";\n"
      "  session_timeout_ms = 3000; heartbeat_interval_ms = 300; };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\";\n"
      "  lease = \"1s\"; };\n"
      "pipelines = ( {\n"
      "  name = \"" FU_PIPELINE "\"; group_id = \"" FU_GROUP "\";\n"
      "  topics = [ \"" FU_TOPIC "\" ]; members = 1; plugin = \"%s\";\n"
      "  retry = { max = 3; backoff = \"10ms\"; backoff_max = \"50ms\"; };\n"
      "} );\n",
      w->bootstraps, conninfo, so);
  free(so);
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

/* The counters durable in the shared store. */
static counts_t stored_counts(const pgu_t *pg) {
  counts_t c = {{0}};
  char err[512];
  store_t *s = NULL;
  uint32_t scope;
  store_pg_opts_t o = {.conninfo = pg->conninfo};
  ck_assert_msg(store_pg_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(store_scope(s, FU_PIPELINE, &scope, err, sizeof(err)) == 0,
                "%s", err);
  ck_assert_msg(store_state_scan(s, scope, "count:", 6, add_count, &c, err,
                                 sizeof(err)) == 0,
                "%s", err);
  store_close(s);
  return c;
}

static int64_t total(const counts_t *c) {
  int64_t t = 0;
  for (int i = 0; i < VALUES; i++)
    t += c->v[i];
  return t;
}

/* How long the group may take to handle records again after a kill and
 * a restart: the killed host's claims are taken over once their lease
 * (1 s) ends, and the restarted host's join and the rebalance take the
 * mock coordinator's 3 s and session.timeout.ms (3 s); ten times that on
 * a busy machine under the sanitizers. */
#define PG_KILL_PROGRESS_MS 70000

/* Wait until the counters in the shared store have moved past from, that
 * is until records are being handled; returns the counters then. */
static counts_t wait_for_progress(const pgu_t *pg, const counts_t *from) {
  int64_t deadline = tu_mono_ms() + PG_KILL_PROGRESS_MS;
  counts_t now = stored_counts(pg);
  while (total(&now) == total(from)) {
    ck_assert_msg(tu_mono_ms() < deadline,
                  "no record handled for %d ms after a restart (%" PRId64
                  " counted)",
                  PG_KILL_PROGRESS_MS, total(&now));
    usleep(50 * 1000);
    now = stored_counts(pg);
  }
  return now;
}

/* Both hosts run while a producer feeds the topic; one of them (each in
 * turn) is killed with kill -9 at a random moment and started again. The
 * moment is drawn once the group handles records again: drawn from the
 * assignment on, under the sanitizers on a busy machine it often came
 * before the host had made anything durable (it may first wait for the
 * claims the killed one left, a lease of 1 s), and few kills landed while
 * records were handled; a random moment after that alone still often fell
 * between two of a busy host's batches. */
START_TEST(test_two_hosts_kill9) {
  const char *env = getenv("KHOST_TEST_SEED"), *kenv = getenv("KHOST_PG_KILLS");
  guint32 seed = env ? (guint32)strtoul(env, NULL, 10) : 20261207u;
  GRand *rand = g_rand_new_with_seed(seed);
  int kills = kenv ? atoi(kenv) : 12;
  fu_world_t w;
  fu_proc_t *host[2];
  pgu_t *pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  fprintf(stderr, "test_two_hosts_kill9: seed %" PRIu32 "\n", seed);
  fu_start(&w, 1, PARTITIONS);
  char *cfg = counter_config(&w, pg->conninfo);
  store_init(&w, cfg);
  fu_feed_start(&w, 2, value_of);
  host[0] = fu_khost(&w, "a0", cfg, 0, 0);
  fu_wait_stderr(host[0], "assigned", 1, 30000);
  host[1] = fu_khost(&w, "b0", cfg, 1, 0);
  fu_wait_stderr(host[1], "assigned", 1, 30000);
  for (int k = 0; k < kills; k++) {
    char tag[32];
    int v = k % 2;
    counts_t before = stored_counts(pg);
    fu_wait_stderr(host[v], "assigned", 1, 30000);
    before = wait_for_progress(pg, &before);
    usleep((useconds_t)g_rand_int_range(rand, 0, 800) * 1000);
    /* Then the next batch made durable, and a moment later the kill: the
     * group is handling records when it comes, however busy the machine. */
    counts_t mid = stored_counts(pg);
    mid = wait_for_progress(pg, &mid);
    usleep((useconds_t)g_rand_int_range(rand, 0, 200) * 1000);
    fu_kill9(host[v]);
    snprintf(tag, sizeof(tag), "%c%d", v ? 'b' : 'a', k + 1);
    host[v] = fu_khost(&w, tag, cfg, v, 0);
  }
  fu_feed_stop(&w);
  /* The host started last may still be loading its config: SIGTERM kills
   * a khost that has not blocked it yet (status 143). */
  for (int v = 0; v < 2; v++)
    fu_wait_stderr(host[v], "subscribed", 1, 30000);
  fu_stop_host(host[0]);
  fu_stop_host(host[1]);
  fu_run_to_end(&w, "last", cfg, 0);
  counts_t want = {{0}}, got = stored_counts(pg);
  size_t produced = fu_produced(&w);
  for (unsigned n = 0; n < produced; n++)
    want.v[n % VALUES]++;
  fprintf(stderr,
          "%d kills, each within 200 ms of a batch made durable; %zu "
          "records\n",
          kills, produced);
  for (int i = 0; i < VALUES; i++)
    ck_assert_msg(got.v[i] == want.v[i],
                  "count:c%d is %" PRId64 ", the produced records say %" PRId64,
                  i, got.v[i], want.v[i]);
  g_rand_free(rand);
  free(cfg);
  fu_stop(&w);
  pgu_free(pg);
}
END_TEST

/* The plugin crashes the host on one record, on the shared store.
 * Restarted each time (as a supervisor would), khost learns from the
 * claim the killed process left behind that it stopped uncleanly,
 * records its calls before making them, and after retry.max + 1
 * recorded attempts dead-letters the record: no endless crash loop. */
START_TEST(test_crashing_record_is_dead_lettered) {
  enum { RETRY_MAX = 2 };
  fu_world_t w;
  int crashes = 0, status = -1, noticed = 0;
  pgu_t *pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  fu_start(&w, 1, 3);
  fu_mockd(&w, "topic %s 1", FU_DLT);
  fu_produce_n(&w, 4, "ok");
  g_free(fu_produce(&w, 1, "crash"));
  fu_produce_n(&w, 4, "ok");
  char *cfg = pg_config_with(&w, pg->conninfo, "lease = \"1s\";",
                             "dead_letter_topic = \"" FU_DLT "\";\n"
                             "  retry = { max = 2; backoff = \"20ms\"; };");
  store_init(&w, cfg);
  fu_proc_t *p = NULL;
  for (int run = 0; run < RETRY_MAX + 4 && status != 0; run++) {
    char tag[16];
    snprintf(tag, sizeof(tag), "run%d", run);
    p = fu_khost(&w, tag, cfg, 0, FU_EXIT_AT_END);
    status = fu_wait_exit(p, FU_RUN_MS);
    noticed += fu_stderr_count(p, "did not stop cleanly (its row of");
    if (status == 0)
      break;
    /* Killed by SIGSEGV, or by the sanitizer that caught the write. */
    ck_assert_msg(status == 128 + SIGSEGV ||
                      fu_stderr_count(p, "SEGV on unknown address") > 0 ||
                      fu_stderr_count(p, "store to null pointer") > 0,
                  "%s ended with %d (see %s)", tag, status, p->err);
    crashes++;
  }
  ck_assert_int_eq(status, 0);
  ck_assert_int_ge(crashes, 1);
  ck_assert_int_le(crashes, RETRY_MAX + 2);
  ck_assert_int_ge(noticed, 1);
  ck_assert_int_eq(fu_stderr_count(p, "no outcome after 3 recorded attempts"),
                   1);
  ck_assert(fu_all_committed(&w));
  free(cfg);
  fu_stop(&w);
  pgu_free(pg);
}
END_TEST

Suite *pg_group_suite(void) {
  Suite *su = suite_create("pg_group");
  if (pgu_available("check_pg_group")) {
    FU_SCENARIO(su, test_two_hosts_handle_once, 180);
    FU_SCENARIO(su, test_server_stopped_mid_run, 180);
    FU_SCENARIO(su, test_two_hosts_kill9, 900);
    FU_SCENARIO(su, test_crashing_record_is_dead_lettered, 180);
  }
  return su;
}
