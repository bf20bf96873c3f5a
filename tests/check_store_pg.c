/*
 * The PostgreSQL store seen from the command line, against a throwaway
 * server (pgutil.h): `khost store init` and `khost check`, a schema run
 * refuses, an unreachable server and a wrong password (exit 2, clear
 * message, the password in none of it), `khost dedup` and `khost state`
 * on the shared store, `khost parked` on its parking lot (replay with
 * host state). Skipped, saying so, without the
 * server binaries, unless KHOST_REQUIRE_POSTGRES=1.
 */
#include <check.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgutil.h"
#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define PLUGIN_DIR TOP_BUILDDIR "/plugins/.libs"
#define SECRET "Sesame42"

static pgu_t *pg;
static char *dir;

static void setup(void) {
  dir = tu_tempdir();
  ck_assert_ptr_nonnull(dir);
}

static void teardown(void) {
  pgu_free(pg);
  pg = NULL;
  tu_rm_rf(dir);
  free(dir);
}

/* A mock-cluster config whose store is conninfo; the path (freed by the
 * caller). */
static char *config(const char *conninfo) {
  return tu_write_filef(
      dir, "khost.cfg",
      "plugin_dir = \"" PLUGIN_DIR "\";\n"
      "mock = { brokers = 1; partitions = 3; };\n"
      "http = { listen = \"\"; };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\"; };\n"
      "pipelines = ( { name = \"orders\"; group_id = \"g\";\n"
      "  topics = [ \"orders\" ]; plugin = \"log\"; } );\n",
      conninfo);
}

/* khost ARGS... to its end: the exit status; stdout and stderr. */
static int khost(char **out, char **err, const char *a1, const char *a2,
                 const char *a3, const char *a4) {
  const char *argv[] = {KHOST, a1, a2, a3, a4, NULL};
  int status = -1;
  GError *e = NULL;
  ck_assert_msg(g_spawn_sync(dir, (char **)argv, NULL, 0, NULL, NULL, out, err,
                             &status, &e),
                "%s", e ? e->message : "spawn");
  ck_assert_msg(WIFEXITED(status), "khost %s died: %s", a1, *err);
  return WEXITSTATUS(status);
}

static void assert_has(const char *s, const char *needle) {
  ck_assert_msg(strstr(s, needle) != NULL, "\"%s\" not in:\n%s", needle, s);
}

static void assert_no_secret(const char *out, const char *err) {
  ck_assert_msg(strstr(out, SECRET) == NULL, "password on stdout:\n%s", out);
  ck_assert_msg(strstr(err, SECRET) == NULL, "password on stderr:\n%s", err);
}

/* check refuses a database without the schema, store init creates it,
 * check then reports it. */
START_TEST(test_init_then_check) {
  char *out, *err, *cfg;
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  cfg = config(pg->conninfo);
  ck_assert_int_eq(khost(&out, &err, "check", "-c", cfg, NULL), 2);
  assert_has(err, "no khost schema: create it with `khost store init");
  g_free(out);
  g_free(err);
  ck_assert_msg(khost(&out, &err, "store", "init", "-c", cfg) == 0, "%s", err);
  assert_has(out, "schema version 5");
  g_free(out);
  g_free(err);
  ck_assert_msg(khost(&out, &err, "check", "-c", cfg, NULL) == 0, "%s", err);
  assert_has(out, "reachable, schema version 5");
  g_free(out);
  g_free(err);
  free(cfg);
}
END_TEST

/* A schema of a later khost: run refuses it, naming both versions. */
START_TEST(test_unknown_schema_refused) {
  char *out, *err, *cfg;
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  cfg = config(pg->conninfo);
  ck_assert_msg(khost(&out, &err, "store", "init", "-c", cfg) == 0, "%s", err);
  g_free(out);
  g_free(err);
  char *psql = g_build_filename(pg->bin, "psql", NULL);
  const char *argv[] = {psql, pg->conninfo, "-qc",
                        "UPDATE khost_schema SET version = 9", NULL};
  int status;
  ck_assert(g_spawn_sync(dir, (char **)argv, NULL, 0, NULL, NULL, NULL, NULL,
                         &status, NULL) &&
            status == 0);
  g_free(psql);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "schema version 9, this khost knows version 5");
  g_free(out);
  g_free(err);
  free(cfg);
}
END_TEST

/* An event ID's key in khost_marks (not a UUID), as SQL. */
#define KEY(id) "('\\x00'::bytea || '" id "')"

/* The schema of version 3, as `khost store init` of that version made it:
 * the claims in a table of their own, IDs as their bytes. */
static const char schema_v3[] =
    "CREATE TABLE khost_schema (version integer NOT NULL);"
    "CREATE TABLE khost_scopes (scope serial PRIMARY KEY,"
    " pipeline text NOT NULL UNIQUE);"
    "CREATE TABLE khost_marks (scope integer NOT NULL, id bytea NOT NULL,"
    " handled_at bigint NOT NULL, topic text NOT NULL, part integer NOT NULL,"
    " off bigint NOT NULL, outcome smallint NOT NULL,"
    " PRIMARY KEY (scope, id));"
    "CREATE INDEX khost_marks_handled ON khost_marks (handled_at);"
    "CREATE TABLE khost_claims (scope integer NOT NULL, id bytea NOT NULL,"
    " owner text NOT NULL, lease_until bigint NOT NULL,"
    " PRIMARY KEY (scope, id));"
    "CREATE INDEX khost_claims_owner ON khost_claims (owner);"
    "CREATE TABLE khost_replay (seq bigserial PRIMARY KEY,"
    " scope integer NOT NULL, topic text NOT NULL, part integer NOT NULL,"
    " from_off bigint NOT NULL, to_off bigint NOT NULL,"
    " mode smallint NOT NULL, recorded_at bigint NOT NULL);"
    "CREATE TABLE khost_attempts (scope integer NOT NULL, id bytea NOT NULL,"
    " topic text NOT NULL, part integer NOT NULL, off bigint NOT NULL,"
    " attempts integer NOT NULL, PRIMARY KEY (scope, id));"
    "CREATE TABLE khost_state (scope integer NOT NULL, key bytea NOT NULL,"
    " val bytea NOT NULL, PRIMARY KEY (scope, key));"
    "CREATE TABLE khost_offsets (scope integer NOT NULL, topic text NOT NULL,"
    " part integer NOT NULL, next bigint NOT NULL,"
    " PRIMARY KEY (scope, topic, part));"
    "CREATE TABLE khost_parked (scope integer NOT NULL, topic text NOT NULL,"
    " part integer NOT NULL, off bigint NOT NULL, ts bigint NOT NULL,"
    " key bytea, val bytea, headers bytea NOT NULL, event_id bytea,"
    " reason text NOT NULL, attempts integer NOT NULL,"
    " parked_at bigint NOT NULL, PRIMARY KEY (scope, topic, part, off));"
    "INSERT INTO khost_schema VALUES (3)";

/* psql -c sql on the test server: 0 when it succeeded. */
static int psql(const char *sql) {
  char *bin = g_build_filename(pg->bin, "psql", NULL);
  const char *argv[] = {bin, pg->conninfo, "-qc", sql, NULL};
  int status = -1;
  int ok = g_spawn_sync(dir, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL,
                        NULL, NULL, NULL, NULL, &status, NULL) &&
           WIFEXITED(status) && WEXITSTATUS(status) == 0;
  g_free(bin);
  return ok ? 0 : -1;
}

/* A schema of version 1 (no state, no offsets): run refuses it and says
 * how to upgrade; store migrate upgrades it, keeping its marks. */
START_TEST(test_migrate_from_v1) {
  char *out, *err, *cfg;
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  cfg = config(pg->conninfo);
  ck_assert_int_eq(psql(schema_v3), 0);
  ck_assert_int_eq(psql("DROP TABLE khost_state, khost_offsets, khost_parked;"
                        "UPDATE khost_schema SET version = 1;"
                        "INSERT INTO khost_marks VALUES (1, 'kept', 1, 't', "
                        "0, 0, 0)"),
                   0);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "schema version 1, this khost knows version 5: upgrade it "
                  "with `khost store migrate -c FILE`");
  g_free(out);
  g_free(err);
  ck_assert_msg(khost(&out, &err, "store", "migrate", "-c", cfg) == 0, "%s",
                err);
  assert_has(out, "schema version 5");
  g_free(out);
  g_free(err);
  ck_assert_int_eq(psql("SELECT 1/count(*) FROM khost_marks WHERE id = " KEY(
                       "kept") "; SELECT count(*) FROM khost_state, "
                               "khost_offsets"),
                   0);
  ck_assert_msg(khost(&out, &err, "check", "-c", cfg, NULL) == 0, "%s", err);
  g_free(out);
  g_free(err);
  free(cfg);
}
END_TEST

/* No server at the address: exit 2 at start, the reason given. */
START_TEST(test_unreachable_at_start) {
  char *out, *err, *cfg, *ci;
  ci =
      g_strdup_printf("host=%s/none dbname=k user=khost password=" SECRET, dir);
  cfg = config(ci);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "postgresql store (");
  assert_has(err, "cannot connect");
  assert_no_secret(out, err);
  g_free(out);
  g_free(err);
  g_free(ci);
  free(cfg);
}
END_TEST

/* A wrong password: exit 2, the server's refusal, neither password. */
START_TEST(test_wrong_password) {
  char *out, *err, *cfg, *ci;
  pg = pgu_start_password("Right-one-7");
  ck_assert_ptr_nonnull(pg);
  ci = g_strdup_printf("%s password=" SECRET, pg->conninfo);
  cfg = config(ci);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "password authentication failed");
  assert_no_secret(out, err);
  ck_assert(strstr(err, "Right-one-7") == NULL);
  g_free(out);
  g_free(err);
  g_free(ci);
  free(cfg);
}
END_TEST

/* khost ARGV (NULL-terminated, without the program) to its end: the exit
 * status; stdout and stderr. */
static int khostv(char **out, char **err, const char *const *args) {
  const char *argv[16] = {KHOST};
  int status = -1;
  for (int i = 0; args[i] && i < 14; i++)
    argv[i + 1] = args[i];
  ck_assert(g_spawn_sync(dir, (char **)argv, NULL, 0, NULL, NULL, out, err,
                         &status, NULL));
  ck_assert_msg(WIFEXITED(status), "khost %s died: %s", args[0], *err);
  return WEXITSTATUS(status);
}

/* khost ARGS, expected to exit with want; its stdout (caller frees). */
static char *expect(int want, const char *const *args) {
  char *out, *err;
  int rc = khostv(&out, &err, args);
  ck_assert_msg(rc == want, "khost %s %s: exit %d, not %d:\n%s%s", args[0],
                args[1], rc, want, out, err);
  g_free(err);
  return out;
}

/* A store with marks (one old, one new) and plugin state of "orders". */
static char *seeded_store(void) {
  char *out, *err, *cfg;
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  cfg = config(pg->conninfo);
  ck_assert_msg(khost(&out, &err, "store", "init", "-c", cfg) == 0, "%s", err);
  g_free(out);
  g_free(err);
  char *sql = g_strdup_printf(
      "INSERT INTO khost_scopes (pipeline) VALUES ('orders');"
      "INSERT INTO khost_marks VALUES (1, " KEY(
          "e-new") ", %lld, 'orders',"
                   " 2, 41, 0, NULL, %lld), (1, " KEY(
                       "e-old") ", 1000, 'orders', 0, 7, 1,"
                                " NULL, 1000);"
                                "INSERT INTO khost_state VALUES (1, 'user:1', "
                                "'10'), (1, 'user:2', "
                                "'20'), (1, 'other', 'x')",
      (long long)(g_get_real_time() / 1000),
      (long long)(g_get_real_time() / 1000));
  ck_assert_int_eq(psql(sql), 0);
  g_free(sql);
  return cfg;
}

/* khost dedup stats|lookup|forget|prune on the shared store. */
START_TEST(test_dedup_commands) {
  char *cfg = seeded_store(), *out;
  out = expect(0, (const char *[]){"dedup", "stats", "-c", cfg, NULL});
  assert_has(out, "database postgresql store (");
  ck_assert_msg(g_regex_match_simple("orders +2 ", out, 0, 0), "%s", out);
  g_free(out);
  out = expect(0, (const char *[]){"dedup", "lookup", "-c", cfg, "-p", "orders",
                                   "--event-id", "e-new", NULL});
  ck_assert_msg(g_regex_match_simple("orders +orders +2 +41 ", out, 0, 0), "%s",
                out);
  g_free(out);
  out = expect(0, (const char *[]){"dedup", "forget", "-c", cfg, "-p", "orders",
                                   "--event-id", "e-new", NULL});
  assert_has(out, "would remove the marks of event ID e-new");
  g_free(out);
  out = expect(0, (const char *[]){"dedup", "forget", "-c", cfg, "-p", "orders",
                                   "--event-id", "e-new", "--execute", NULL});
  assert_has(out, "1 mark(s)");
  assert_has(out, "every host on this store forgets them at once");
  g_free(out);
  g_free(expect(1, (const char *[]){"dedup", "lookup", "-c", cfg, "-p",
                                    "orders", "--event-id", "e-new", NULL}));
  out = expect(0, (const char *[]){"dedup", "prune", "-c", cfg, "--older-than",
                                   "1d", NULL});
  assert_has(out, "removed 1 mark(s) handled before");
  g_free(out);
  g_free(expect(1, (const char *[]){"dedup", "lookup", "-c", cfg, "-p",
                                    "orders", "--event-id", "e-old", NULL}));
  free(cfg);
}
END_TEST

/* khost state get|scan|stats|reset on the shared store. */
START_TEST(test_state_commands) {
  char *cfg = seeded_store(), *out;
  out = expect(0, (const char *[]){"state", "get", "-c", cfg, "-p", "orders",
                                   "--key", "user:2", NULL});
  ck_assert_str_eq(out, "20\n");
  g_free(out);
  out = expect(0, (const char *[]){"state", "scan", "-c", cfg, "-p", "orders",
                                   "--prefix", "user:", NULL});
  ck_assert_str_eq(out, "user:1\t10\nuser:2\t20\n");
  g_free(out);
  out = expect(
      0, (const char *[]){"state", "stats", "-c", cfg, "-p", "orders", NULL});
  assert_has(out, "pipeline orders: 3 keys, 22 bytes");
  g_free(out);
  out = expect(0, (const char *[]){"state", "reset", "-c", cfg, "-p", "orders",
                                   "--execute", NULL});
  assert_has(out, "removed 3 keys of pipeline orders");
  g_free(out);
  g_free(expect(1, (const char *[]){"state", "get", "-c", cfg, "-p", "orders",
                                    "--key", "user:2", NULL}));
  free(cfg);
}
END_TEST

/* A store of version 3 with "orders" (scope 1) and its state; cfg gets
 * its config (caller frees). */
static void old_store(char **cfg) {
  pg = pgu_start();
  ck_assert_ptr_nonnull(pg);
  *cfg = config(pg->conninfo);
  ck_assert_int_eq(psql(schema_v3), 0);
  ck_assert_int_eq(psql("INSERT INTO khost_scopes (pipeline) VALUES "
                        "('orders'); INSERT INTO khost_state VALUES (1, "
                        "'user:1', '10')"),
                   0);
}

/* A schema of version 2 (no parking lot): run refuses it; store migrate
 * adds the lot, keeping the state. */
START_TEST(test_migrate_from_v2) {
  char *out, *err, *cfg;
  old_store(&cfg);
  ck_assert_int_eq(psql("DROP TABLE khost_parked;"
                        "UPDATE khost_schema SET version = 2"),
                   0);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "schema version 2, this khost knows version 5: upgrade it "
                  "with `khost store migrate -c FILE`");
  g_free(out);
  g_free(err);
  ck_assert_msg(khost(&out, &err, "store", "migrate", "-c", cfg) == 0, "%s",
                err);
  assert_has(out, "schema version 5");
  g_free(out);
  g_free(err);
  ck_assert_int_eq(psql("SELECT count(*) FROM khost_parked;"
                        "SELECT 1/count(*) FROM khost_state"),
                   0);
  free(cfg);
}
END_TEST

#define UUID_LOW "0b5e9ad2-6c1f-4b1e-9a57-3f0c8e2d7a10"
#define UUID_UP "0B5E9AD2-6C1F-4B1E-9A57-3F0C8E2D7A10"

/* khost dedup lookup of id in "orders": its output (caller frees). */
static char *lookup(const char *cfg, const char *id) {
  return expect(0, (const char *[]){"dedup", "lookup", "-c", cfg, "-p",
                                    "orders", "--event-id", id, NULL});
}

/* A store written by version 3 (marks keyed by their bytes, a claim, a
 * recorded attempt): run refuses it; store migrate keys the IDs anew (a
 * UUID in 16 bytes, the same in capitals apart), keeps marks, attempts
 * and state, and drops the claims of the hosts it stopped. */
START_TEST(test_migrate_from_v3) {
  char *out, *err, *cfg;
  old_store(&cfg);
  ck_assert_int_eq(
      psql("INSERT INTO khost_marks VALUES (1, '" UUID_LOW "', 5000, 'orders',"
           " 2, 41, 0), (1, '" UUID_UP "', 6000, 'orders', 1, 17, 1),"
           " (1, 'e-7', 7000, 'orders', 0, 7, 0);"
           "INSERT INTO khost_claims VALUES (1, 'e-8', 'gone', 0);"
           "INSERT INTO khost_attempts VALUES (1, 'e-9', 'orders', 0, 9, 2)"),
      0);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "schema version 3, this khost knows version 5: upgrade it "
                  "with `khost store migrate -c FILE`");
  g_free(out);
  g_free(err);
  ck_assert_msg(khost(&out, &err, "store", "migrate", "-c", cfg) == 0, "%s",
                err);
  assert_has(out, "schema version 5");
  g_free(out);
  g_free(err);
  ck_assert_int_eq(
      psql("SELECT 1/count(*) FROM khost_marks WHERE id = '\\x01'::bytea"
           " || decode(replace('" UUID_LOW "', '-', ''), 'hex') AND"
           " since = 5000 AND owner IS NULL;"
           "SELECT 1/(count(*) = 3)::int FROM khost_marks;"
           "SELECT 1/count(*) FROM khost_attempts WHERE id = " KEY(
               "e-9") ";"
                      "SELECT 1/(to_regclass('khost_claims') IS NULL)::int;"
                      "SELECT 1/count(*) FROM khost_state"),
      0);
  out = lookup(cfg, UUID_LOW);
  ck_assert_msg(g_regex_match_simple("orders +orders +2 +41 ", out, 0, 0), "%s",
                out);
  g_free(out);
  out = lookup(cfg, UUID_UP);
  ck_assert_msg(g_regex_match_simple("orders +orders +1 +17 ", out, 0, 0), "%s",
                out);
  g_free(out);
  out = lookup(cfg, "e-7");
  ck_assert_msg(g_regex_match_simple("orders +orders +0 +7 ", out, 0, 0), "%s",
                out);
  g_free(out);
  free(cfg);
}
END_TEST

/* The index on `since` is a plain B-tree, and no index of the schema
 * is of another kind (what PostgreSQL-compatible databases have). */
#define SINCE_BTREE_ONLY                                                       \
  "SELECT 1/count(*) FROM pg_indexes WHERE indexname = 'khost_marks_since'"    \
  " AND indexdef LIKE '%USING btree (since)';"                                 \
  "SELECT 1/(count(*) = 0)::int FROM pg_indexes WHERE tablename LIKE"          \
  " 'khost\\_%' AND indexdef NOT LIKE '%USING btree (%'"

/* A store of version 4 (no epochs), with two marks and a claim of a host
 * that is gone: run refuses it; store migrate adds the epochs and keeps
 * the rows as they were, the marks seen by dedup lookup, and the B-tree
 * index on `since` (a fresh store's too). */
START_TEST(test_migrate_from_v4) {
  char *cfg = seeded_store(), *out, *err;
  ck_assert_int_eq(psql(SINCE_BTREE_ONLY), 0);
  ck_assert_int_eq(psql("DROP TABLE khost_epochs;"
                        "ALTER TABLE khost_marks DROP COLUMN epoch;"
                        "UPDATE khost_schema SET version = 4;"
                        "INSERT INTO khost_marks VALUES (1, " KEY(
                            "e-claimed") ", 3000, '', 0, 0, 2, 999, 3000)"),
                   0);
  ck_assert_int_eq(khost(&out, &err, "run", "-c", cfg, NULL), 2);
  assert_has(err, "schema version 4, this khost knows version 5: upgrade it "
                  "with `khost store migrate -c FILE`");
  g_free(out);
  g_free(err);
  ck_assert_msg(khost(&out, &err, "store", "migrate", "-c", cfg) == 0, "%s",
                err);
  assert_has(out, "schema version 5");
  g_free(out);
  g_free(err);
  ck_assert_int_eq(
      psql("SELECT 1/(count(*) = 3)::int FROM khost_marks;"
           "SELECT 1/count(*) FROM khost_marks WHERE id = " KEY(
               "e-claimed") " AND outcome = 2 AND owner = 999;"
                            "SELECT 1/(count(*) = 0)::int FROM khost_epochs;"
                            " " SINCE_BTREE_ONLY),
      0);
  out = lookup(cfg, "e-new");
  ck_assert_msg(g_regex_match_simple("orders +orders +2 +41 ", out, 0, 0), "%s",
                out);
  g_free(out);
  out = lookup(cfg, "e-old");
  ck_assert_msg(g_regex_match_simple("orders +orders +0 +7 ", out, 0, 0), "%s",
                out);
  g_free(out);
  free(cfg);
}
END_TEST

/* Two parked records of "orders" (scope 1): apple at [0] 5, pear at
 * [1] 6, with their event IDs p-5 and p-6. */
static void seed_lot(void) {
  ck_assert_int_eq(
      psql("INSERT INTO khost_parked VALUES"
           " (1, 'orders', 0, 5, 1000, NULL, 'apple', '', 'p-5', 'bad apple',"
           "  7, 2000), (1, 'orders', 1, 6, 1000, 'k', 'pear', '', 'p-6',"
           "  'bad pear', 7, 2000);"
           "INSERT INTO khost_marks VALUES (1, " KEY(
               "p-5") ", 2000, 'orders',"
                      " 0, 5, 1, NULL, 2000), (1, " KEY(
                          "p-6") ", 2000, 'orders', 1, 6, 1,"
                                 " NULL, 2000)"),
      0);
}

/* list, show and skip on the shared lot. */
START_TEST(test_parked_commands) {
  char *cfg = seeded_store(), *out;
  seed_lot();
  out = expect(
      0, (const char *[]){"parked", "list", "-c", cfg, "-p", "orders", NULL});
  ck_assert_msg(
      g_regex_match_simple("orders +0 +5 +p-5 +7 .*bad apple", out, 0, 0), "%s",
      out);
  assert_has(out, "bad pear");
  g_free(out);
  out = expect(0, (const char *[]){"parked", "show", "-c", cfg, "-p", "orders",
                                   "--topic", "orders", "--partition", "1",
                                   "--offset", "6", NULL});
  assert_has(out, "value      pear");
  assert_has(out, "key        k");
  g_free(out);
  out = expect(0, (const char *[]){"parked", "skip", "-c", cfg, "-p", "orders",
                                   "--topic", "orders", "--partition", "1",
                                   "--offset", "6", "--execute", NULL});
  assert_has(out, "dropped 1 parked record(s) of pipeline orders on purpose");
  g_free(out);
  out = expect(
      0, (const char *[]){"parked", "list", "-c", cfg, "-p", "orders", NULL});
  ck_assert_msg(strstr(out, "bad pear") == NULL, "%s", out);
  assert_has(out, "bad apple");
  g_free(out);
  free(cfg);
}
END_TEST

/* The seeded store's config with the counter fixture as the plugin. */
static char *counter_config(void) {
  char *so = tu_fixture("counter");
  char *cfg = tu_write_filef(
      dir, "counter.cfg",
      "mock = { brokers = 1; partitions = 3; };\n"
      "http = { listen = \"\"; };\n"
      "store = { backend = \"postgresql\"; conninfo = \"%s\"; };\n"
      "pipelines = ( { name = \"orders\"; group_id = \"g\";\n"
      "  topics = [ \"orders\" ]; plugin = \"%s\"; } );\n",
      pg->conninfo, so);
  free(so);
  return cfg;
}

/* replay with host state: the counter plugin reads the stored state and
 * its write lands with the record's mark and its leaving the lot; a
 * second replay finds nothing to do and counts nothing again. */
START_TEST(test_parked_replay_with_state) {
  char *cfg = seeded_store(), *ccfg = counter_config(), *out;
  ck_assert_int_eq(psql("INSERT INTO khost_state VALUES (1, 'count:apple:p0',"
                        " '41')"),
                   0);
  seed_lot();
  for (int run = 0; run < 2; run++) {
    out = expect(0, (const char *[]){"parked", "replay", "-c", ccfg, "-p",
                                     "orders", "--execute", NULL});
    assert_has(out, run == 0 ? "2 OK and 0 handled since"
                             : "nothing parked to replay");
    g_free(out);
    out = expect(0, (const char *[]){"state", "get", "-c", cfg, "-p", "orders",
                                     "--key", "count:apple:p0", NULL});
    ck_assert_str_eq(out, "42\n");
    g_free(out);
    out = expect(0, (const char *[]){"state", "get", "-c", cfg, "-p", "orders",
                                     "--key", "count:pear:p1", NULL});
    ck_assert_str_eq(out, "1\n");
    g_free(out);
  }
  out = expect(
      0, (const char *[]){"parked", "list", "-c", cfg, "-p", "orders", NULL});
  ck_assert_msg(strstr(out, "bad") == NULL, "%s", out);
  g_free(out);
  out = expect(0, (const char *[]){"dedup", "lookup", "-c", cfg, "-p", "orders",
                                   "--event-id", "p-5", NULL});
  ck_assert_msg(g_regex_match_simple(" ok\\n", out, 0, 0), "%s", out);
  g_free(out);
  free(ccfg);
  free(cfg);
}
END_TEST

Suite *store_pg_suite(void) {
  Suite *su = suite_create("store_pg");
  TCase *tc = tcase_create("cli");
  tcase_add_checked_fixture(tc, setup, teardown);
  if (pgu_available("check_store_pg")) {
    tcase_add_test(tc, test_init_then_check);
    tcase_add_test(tc, test_unknown_schema_refused);
    tcase_add_test(tc, test_migrate_from_v1);
    tcase_add_test(tc, test_unreachable_at_start);
    tcase_add_test(tc, test_wrong_password);
    tcase_add_test(tc, test_dedup_commands);
    tcase_add_test(tc, test_state_commands);
    tcase_add_test(tc, test_migrate_from_v2);
    tcase_add_test(tc, test_migrate_from_v3);
    tcase_add_test(tc, test_migrate_from_v4);
    tcase_add_test(tc, test_parked_commands);
    tcase_add_test(tc, test_parked_replay_with_state);
  }
  tcase_set_timeout(tc, 120);
  suite_add_tcase(su, tc);
  return su;
}
