/*
 * The benchmark's PostgreSQL server: see bench_pg.h.
 */
#include <glib.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_pg.h"
#include "store.h"
#include "store_pg.h"

static void die(const char *what, const char *why) {
  fprintf(stderr, "khost-bench: %s: %s\n", what, why);
  exit(1);
}

/* The newest /usr/lib/postgresql/N/bin, or $KHOST_PG_BIN. */
static char *pg_bin(void) {
  const char *env = getenv("KHOST_PG_BIN");
  char *found = NULL;
  if (env && *env)
    return g_strdup(env);
  for (int v = 13; v <= 30; v++) {
    char *d = g_strdup_printf("/usr/lib/postgresql/%d/bin/initdb", v);
    if (access(d, X_OK) == 0) {
      g_free(found);
      found = g_path_get_dirname(d);
    }
    g_free(d);
  }
  if (!found)
    die("postgresql", "no server binaries (Debian package postgresql, or "
                      "set KHOST_PG_BIN)");
  return found;
}

/* Run a server binary (as nobody when root); exits on failure. */
static void pg_run(const char *dir, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  char *bin = pg_bin(), *out = NULL, *errs = NULL;
  int status = -1;
  if (geteuid() == 0) {
    const char *pre[] = {"runuser", "-u", "nobody", "--"};
    for (int i = 0; i < 4; i++)
      g_ptr_array_add(argv, g_strdup(pre[i]));
  }
  g_ptr_array_add(argv, g_build_filename(bin, args[0], NULL));
  for (int i = 1; args[i]; i++)
    g_ptr_array_add(argv, g_strdup(args[i]));
  g_ptr_array_add(argv, NULL);
  if (!g_spawn_sync(dir, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL,
                    NULL, NULL, &errs, &status, NULL) ||
      !g_spawn_check_wait_status(status, NULL))
    die(args[0], errs ? errs : "failed");
  g_free(out);
  g_free(errs);
  g_free(bin);
  g_ptr_array_free(argv, TRUE);
}

static void sql(PGconn *c, const char *q) {
  PGresult *r = PQexec(c, q);
  if (PQresultStatus(r) != PGRES_COMMAND_OK &&
      PQresultStatus(r) != PGRES_TUPLES_OK)
    die(q, PQresultErrorMessage(r));
  PQclear(r);
}

static long count_marks(PGconn *c) {
  PGresult *r = PQexec(c, "SELECT count(*) FROM khost_marks");
  long n = PQresultStatus(r) == PGRES_TUPLES_OK
               ? strtol(PQgetvalue(r, 0, 0), NULL, 10)
               : -1;
  PQclear(r);
  return n;
}

/* ids random marks in bulk: the keys are built after the rows, which is
 * many times faster than inserting 10M random keys into a B-tree. The
 * IDs are random UUIDs, keyed as khost keys them (store_pg_int.h). */
static void fill(PGconn *c, uint32_t scope, long ids) {
  char *q = g_strdup_printf(
      "INSERT INTO khost_marks (scope, id, handled_at, topic, part, off,"
      " outcome, since) SELECT %u, '\\x01'::bytea ||"
      " uuid_send(gen_random_uuid()), t.at, 'order-completed', g %% 6, g, 0,"
      " t.at FROM generate_series(1, %ld) g, (SELECT (extract(epoch from"
      " now()) * 1000)::bigint - 86400000 AS at) t",
      scope, ids);
  printf("postgresql store: adding %ld IDs ...\n", ids);
  fflush(stdout);
  gint64 t = g_get_monotonic_time();
  sql(c, "TRUNCATE khost_marks");
  sql(c, "ALTER TABLE khost_marks DROP CONSTRAINT khost_marks_pkey");
  sql(c, "DROP INDEX khost_marks_since");
  sql(c, "SET maintenance_work_mem = '512MB'");
  sql(c, q);
  sql(c, "ALTER TABLE khost_marks ADD PRIMARY KEY (scope, id)");
  sql(c, "CREATE INDEX khost_marks_since ON khost_marks (since)");
  sql(c, "VACUUM ANALYZE khost_marks");
  printf("postgresql store: %ld IDs in %.1f s\n", ids,
         (double)(g_get_monotonic_time() - t) / 1e6);
  g_free(q);
}

/* The key of the marks read into the server's buffers, as a server that
 * has been running holds it: just started, the first claims of a run
 * each read a leaf page of it from the kernel. */
static void warm(PGconn *c, uint32_t scope) {
  char *q = g_strdup_printf("SELECT count(*) FROM khost_marks WHERE scope = %u",
                            scope);
  gint64 t = g_get_monotonic_time();
  sql(c, "SET enable_seqscan = off");
  sql(c, "SET enable_bitmapscan = off");
  sql(c, q);
  printf("postgresql store: its key read in %.1f s\n",
         (double)(g_get_monotonic_time() - t) / 1e6);
  g_free(q);
}

/* The schema and exactly ids marks of "bench". */
static void prepare(const char *conninfo, long ids) {
  char err[1024];
  store_t *s = NULL;
  uint32_t scope;
  store_pg_opts_t o = {.conninfo = conninfo, .create = 1};
  if (store_pg_open(&s, &o, err, sizeof(err)) != 0 ||
      store_scope(s, "bench", &scope, err, sizeof(err)) != 0)
    die("postgresql store", err);
  store_close(s);
  PGconn *c = PQconnectdb(conninfo);
  long have = count_marks(c);
  if (have == ids)
    printf("postgresql store: %ld IDs (reused)\n", have);
  else
    fill(c, scope, ids);
  warm(c, scope);
  PQfinish(c);
}

char *bench_pg_start(const char *dir, long ids) {
  char *pg = g_build_filename(dir, "pg", NULL);
  char *data = g_build_filename(pg, "data", NULL);
  char *log = g_build_filename(pg, "server.log", NULL);
  /* As the tests' server, with room in its buffers for the index of
   * 10M IDs (about 700 MB): at the default 128 MB every claim and mark
   * reads and writes back pages of it. Random keys dirty a different
   * page of that index each time: checkpoints far apart and compressed
   * full-page images keep the WAL to a third. */
  char *o = g_strdup_printf(
      "-F -c listen_addresses='' -c shared_buffers=2GB -c max_wal_size=8GB"
      " -c checkpoint_timeout=30min -c wal_compression=lz4 -k %s",
      pg);
  struct passwd *pw = getpwnam("nobody");
  mkdir(pg, 0755);
  if (geteuid() == 0 && (!pw || chown(pg, pw->pw_uid, pw->pw_gid) != 0))
    die(pg, "cannot hand it to nobody");
  if (access(data, F_OK) != 0) {
    const char *initdb[] = {"initdb", "-D",        data, "-A",   "trust", "-U",
                            "khost",  "--no-sync", "-E", "UTF8", NULL};
    pg_run(pg, initdb);
  }
  const char *start[] = {"pg_ctl", "-D", data, "-l",    log, "-o",
                         o,        "-w", "-s", "start", NULL};
  pg_run(pg, start);
  char *conninfo = g_strdup_printf("host=%s dbname=postgres user=khost", pg);
  prepare(conninfo, ids);
  g_free(pg);
  g_free(data);
  g_free(log);
  g_free(o);
  return conninfo;
}

void bench_pg_reset(const char *conninfo, int64_t since_ms) {
  PGconn *c = PQconnectdb(conninfo);
  /* The run's marks, and its claims given back or left by a stop. */
  char *q = g_strdup_printf("DELETE FROM khost_marks WHERE since >= %lld",
                            (long long)since_ms);
  sql(c, q);
  sql(c, "VACUUM khost_marks");
  g_free(q);
  PQfinish(c);
}

void bench_pg_stop(const char *dir) {
  char *pg = g_build_filename(dir, "pg", NULL);
  char *data = g_build_filename(pg, "data", NULL);
  const char *stop[] = {"pg_ctl", "-D", data,   "-m", "fast",
                        "-w",     "-s", "stop", NULL};
  pg_run(pg, stop);
  g_free(pg);
  g_free(data);
}
