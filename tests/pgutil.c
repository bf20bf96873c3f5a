/*
 * The throwaway PostgreSQL server of pgutil.h. Children are started with
 * g_spawn_sync; as root through runuser, because the server refuses to
 * run as root, with the directory handed to nobody.
 */
#include <glib.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgutil.h"
#include "testutil.h"

char *pgu_bin(void) {
  const char *env = getenv("KHOST_PG_BIN");
  char *found = NULL;
  if (env && *env)
    return g_strdup(env);
  for (int v = 13; v <= 30; v++) { /* the newest installed wins */
    char *d = g_strdup_printf("/usr/lib/postgresql/%d/bin", v);
    char *initdb = g_build_filename(d, "initdb", NULL);
    if (access(initdb, X_OK) == 0) {
      g_free(found);
      found = d;
    } else {
      g_free(d);
    }
    g_free(initdb);
  }
  return found;
}

int pgu_available(const char *suite) {
  char *bin = pgu_bin();
  const char *req = getenv("KHOST_REQUIRE_POSTGRES");
  if (bin) {
    g_free(bin);
    return 1;
  }
  if (req && strcmp(req, "1") == 0) {
    fprintf(stderr,
            "%s: FAIL: KHOST_REQUIRE_POSTGRES=1 but no PostgreSQL server "
            "binaries (Debian package postgresql, or set KHOST_PG_BIN)\n",
            suite);
    return 1; /* run them: each fails */
  }
  printf("%s: SKIP: the postgresql store tests (no PostgreSQL server "
         "binaries; install the Debian package postgresql)\n",
         suite);
  return 0;
}

/* Run a server binary (as nobody when root); 0 on exit status 0. */
static int pg_run(const pgu_t *p, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  char *out = NULL, *errs = NULL;
  int status = -1;
  if (geteuid() == 0) {
    g_ptr_array_add(argv, g_strdup("runuser"));
    g_ptr_array_add(argv, g_strdup("-u"));
    g_ptr_array_add(argv, g_strdup("nobody"));
    g_ptr_array_add(argv, g_strdup("--"));
  }
  g_ptr_array_add(argv, g_build_filename(p->bin, args[0], NULL));
  for (int i = 1; args[i]; i++)
    g_ptr_array_add(argv, g_strdup(args[i]));
  g_ptr_array_add(argv, NULL);
  if (!g_spawn_sync(p->dir, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH,
                    NULL, NULL, &out, &errs, &status, NULL) ||
      !g_spawn_check_wait_status(status, NULL)) {
    fprintf(stderr, "pgutil: %s failed: %s%s\n", args[0], out ? out : "",
            errs ? errs : "");
    status = -1;
  } else {
    status = 0;
  }
  g_free(out);
  g_free(errs);
  g_ptr_array_free(argv, TRUE);
  return status;
}

/* Hand the directory to nobody, so the server may write it. */
static int give_dir(const char *dir) {
  struct passwd *pw = getpwnam("nobody");
  if (geteuid() != 0)
    return 0;
  if (!pw || chown(dir, pw->pw_uid, pw->pw_gid) != 0) {
    fprintf(stderr, "pgutil: cannot hand %s to nobody\n", dir);
    return -1;
  }
  return 0;
}

int pgu_restart(pgu_t *p) {
  char *data = g_build_filename(p->dir, "data", NULL);
  char *log = g_build_filename(p->dir, "server.log", NULL);
  /* fsync off: a test server, thrown away after the test. */
  char *o = g_strdup_printf("-F -c listen_addresses='' -k %s", p->dir);
  const char *args[] = {"pg_ctl", "-D", data, "-l",    log, "-o",
                        o,        "-w", "-s", "start", NULL};
  int rc = pg_run(p, args);
  g_free(data);
  g_free(log);
  g_free(o);
  return rc;
}

int pgu_stop(pgu_t *p) {
  char *data = g_build_filename(p->dir, "data", NULL);
  const char *args[] = {"pg_ctl", "-D", data,   "-m", "fast",
                        "-w",     "-s", "stop", NULL};
  int rc = pg_run(p, args);
  g_free(data);
  return rc;
}

pgu_t *pgu_start(void) {
  return pgu_start_password(NULL);
}

pgu_t *pgu_start_password(const char *password) {
  pgu_t *p = g_new0(pgu_t, 1);
  char *data, *pwfile = NULL, *pwopt = NULL;
  p->bin = pgu_bin();
  p->dir = tu_tempdir();
  if (!p->bin || !p->dir || give_dir(p->dir) != 0) {
    pgu_free(p);
    return NULL;
  }
  data = g_build_filename(p->dir, "data", NULL);
  if (password) {
    pwfile = tu_write_file(p->dir, "pw", password);
    pwopt = g_strdup_printf("--pwfile=%s", pwfile);
  }
  const char *initdb[] = {"initdb",
                          "-D",
                          data,
                          "-A",
                          password ? "scram-sha-256" : "trust",
                          "-U",
                          "khost",
                          "--no-sync",
                          "-E",
                          "UTF8",
                          pwopt,
                          NULL};
  int rc = pg_run(p, initdb) == 0 ? pgu_restart(p) : -1;
  g_free(data);
  free(pwfile);
  g_free(pwopt);
  if (rc != 0) {
    pgu_free(p);
    return NULL;
  }
  p->conninfo = g_strdup_printf("host=%s dbname=postgres user=khost", p->dir);
  return p;
}

void pgu_free(pgu_t *p) {
  if (!p)
    return;
  if (p->conninfo)
    pgu_stop(p);
  if (p->dir) {
    tu_rm_rf(p->dir);
    free(p->dir);
  }
  g_free(p->bin);
  g_free(p->conninfo);
  g_free(p);
}
