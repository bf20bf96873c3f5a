/*
 * Two khost processes in one group (6 partitions, a mock cluster in its
 * own process, tests/mockd) sharing one PostgreSQL store on a throwaway
 * server (pgutil.h): an event re-published with the same eventId to other
 * partitions, so to the other host, is handled once across both hosts;
 * the server stopped mid-run and started again: nothing lost, nothing
 * committed while it was down, consumption resumes.
 * Skipped, saying so, without the server binaries, unless
 * KHOST_REQUIRE_POSTGRES=1.
 */
#include <check.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultutil.h"
#include "pgutil.h"
#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define EVENTS 60
#define PARTITIONS 6

/* A config for one pipeline of FU_TOPIC on the effects fixture, its store
 * the server's database. */
static char *pg_config(fu_world_t *w, const char *conninfo) {
  char *so = tu_fixture("effects");
  char *path = tu_write_filef(
      w->dir, "khost.cfg",
      "log_level = \"info\";\n"
      "kafka = { bootstrap_servers = \"%s\";\n"
      "  session_timeout_ms = 3000; heartbeat_interval_ms = 300; };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\"; };\n"
      "pipelines = ( {\n"
      "  name = \"" FU_PIPELINE "\"; group_id = \"" FU_GROUP "\";\n"
      "  topics = [ \"" FU_TOPIC "\" ]; plugin = \"%s\";\n"
      "  config = { log_path = \"%s/effects.log\"; };\n"
      "} );\n",
      w->bootstraps, conninfo, so, w->dir);
  free(so);
  return path;
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

Suite *pg_group_suite(void) {
  Suite *su = suite_create("pg_group");
  if (pgu_available("check_pg_group")) {
    FU_SCENARIO(su, test_two_hosts_handle_once, 180);
    FU_SCENARIO(su, test_server_stopped_mid_run, 180);
  }
  return su;
}
