/*
 * The crash-attempt guard on the PostgreSQL store (store.h, "Crash
 * attempts"): after a process using the store stopped uncleanly, the
 * first calls of each partition are recorded before they are made, so
 * that a record that crashes the host is not tried forever.
 *
 * The SQLite file keeps a note of the process that has it open; the
 * shared store learns of an unclean stop from khost_hosts instead: a
 * process has a row there (the owner of its claims), renews its lease
 * every lease/3 and deletes the row when it stops cleanly. A row left
 * behind by another process is the trace of an unclean stop:
 *   - an earlier process on this host whose pid is gone (or is this
 *     process's own: a container started again), lease run out or not:
 *     a restart after a crash, seen at once;
 *   - any process whose lease has run out (it stopped renewing: it
 *     died, or lost the server for longer than the lease).
 * Traces older than TRACE_LEASES leases are stale and ignored, and the
 * renewer then deletes them (pg_crash_forget()), so that the table does
 * not grow by a row per crash. Their claims need nothing: a claim whose
 * owner has no row is not live (PG_LIVE), as one whose lease ran out,
 * and is taken over; the pruner removes the claims no host took.
 *
 * The store looks at open: then, as on the SQLite file, every partition
 * records its first `budget` calls. It looks again (at most once a
 * second) at the first call of a partition this process had not called
 * yet, so that partitions taken over from a host that died record their
 * first calls too; partitions called before are left alone.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "store_pg_int.h"

/* Claims whose leases ran out longer ago than this many leases are no
 * trace of a recent stop. */
#define TRACE_LEASES 10
/* The least time between two looks. */
#define LOOK_EVERY_MS 1000
/* counted: a partition whose calls are not recorded. */
#define NEVER G_MAXUINT

typedef struct pg_crash {
  pthread_mutex_t mu;
  GHashTable *dead;    /* owners found stopped uncleanly (a set) */
  GHashTable *counted; /* "scope/topic/partition" -> calls recorded + 1,
                          or NEVER */
  int unclean_at_open; /* every partition records its first calls */
  int found_since;     /* an unclean stop found after open */
  int said;            /* the notice is logged */
  int64_t looked_ms;   /* monotonic */
} pg_crash_t;

/* The owners of the stores open in this process: a row of one of them
 * is live, whatever its pid says. */
static GHashTable *open_owners;
static pthread_mutex_t mine_mu = PTHREAD_MUTEX_INITIALIZER;

void pg_crash_mine(const char *owner, int open) {
  pthread_mutex_lock(&mine_mu);
  if (!open_owners)
    open_owners = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (open)
    g_hash_table_add(open_owners, g_strdup(owner));
  else
    g_hash_table_remove(open_owners, owner);
  if (!open && g_hash_table_size(open_owners) == 0) {
    g_hash_table_destroy(open_owners);
    open_owners = NULL;
  }
  pthread_mutex_unlock(&mine_mu);
}

static int is_mine(const char *owner) {
  pthread_mutex_lock(&mine_mu);
  int m = open_owners && g_hash_table_contains(open_owners, owner);
  pthread_mutex_unlock(&mine_mu);
  return m;
}

/* Was owner ("host/pid/tag", store_pg.c) a process of this host that is
 * no longer running? */
static int gone_here(const pg_store_t *p, const char *owner) {
  if (is_mine(owner))
    return 0;
  const char *tag = strrchr(owner, '/');
  const char *mine = strrchr(p->owner, '/');
  if (!tag || !mine || tag == owner)
    return 0;
  const char *pid_at = tag - 1;
  while (pid_at > owner && *pid_at != '/')
    pid_at--;
  const char *my_pid_at = mine - 1;
  while (my_pid_at > p->owner && *my_pid_at != '/')
    my_pid_at--;
  if (*pid_at != '/' || pid_at - owner != my_pid_at - p->owner ||
      memcmp(owner, p->owner, (size_t)(pid_at - owner)) != 0)
    return 0; /* another host */
  long pid = strtol(pid_at + 1, NULL, 10);
  if (pid <= 0)
    return 0;
  return pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

/* c->mu held (or the store opening): the processes that left their row
 * of khost_hosts behind, added to c->dead; 1 when a new one turned up, 0
 * when none, -1 with err (may be NULL) when the store did not answer. */
static int look(pg_store_t *p, pg_crash_t *c, char *err, size_t errlen) {
  pgp_t a = {0};
  int found = 0;
  pgp_i64(&a, p->host);
  pgp_i64(&a, p->lease_ms * TRACE_LEASES);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT name, lease_until < " PG_NOW_MS
                        " FROM khost_hosts WHERE host <> $1::integer AND"
                        " lease_until >= " PG_NOW_MS " - $2::bigint",
                        &a, 0, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  c->looked_ms = g_get_monotonic_time() / 1000;
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    const char *owner = PQgetvalue(r, i, 0);
    int expired = strcmp(PQgetvalue(r, i, 1), "t") == 0;
    if ((expired || gone_here(p, owner)) &&
        g_hash_table_add(c->dead, g_strdup(owner)))
      found = 1;
  }
  PQclear(r);
  return found;
}

/* The rows of khost_hosts whose lease ran out more than TRACE_LEASES
 * leases ago are deleted on c: no trace any more (look() skips them),
 * and their claims have been free to take over for as long. A process
 * that comes back after that puts its row back (store_pg_claim.c). */
void pg_crash_forget(pg_store_t *p, PGconn *c) {
  pgp_t a = {0};
  pgp_i64(&a, p->host);
  pgp_i64(&a, p->lease_ms * TRACE_LEASES);
  PGresult *r = pg_exec(p, c,
                        "DELETE FROM khost_hosts WHERE host <> $1::integer AND"
                        " lease_until < " PG_NOW_MS " - $2::bigint"
                        " RETURNING name",
                        &a, 0, NULL, NULL, 0);
  for (int i = 0; r && i < PQntuples(r); i++)
    log_msg(KHOST_LOG_INFO, "dedup",
            "postgresql store (%s): the row of khost_hosts of %s removed: "
            "its lease ran out more than %d leases ago",
            p->display, PQgetvalue(r, i, 0), TRACE_LEASES);
  PQclear(r);
}

int pg_crash_open(pg_store_t *p, char *err, size_t errlen) {
  pg_crash_t *c = g_new0(pg_crash_t, 1);
  pthread_mutex_init(&c->mu, NULL);
  c->dead = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  c->counted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  p->crash = c;
  int rc = look(p, c, err, errlen);
  c->unclean_at_open = rc > 0;
  return rc < 0 ? -1 : 0;
}

void pg_crash_free(pg_store_t *p) {
  pg_crash_t *c = p->crash;
  if (!c)
    return;
  g_hash_table_destroy(c->dead);
  g_hash_table_destroy(c->counted);
  pthread_mutex_destroy(&c->mu);
  g_free(c);
  p->crash = NULL;
}

/* c->mu held: said once, when it first makes a call recorded. */
static void say_unclean(pg_store_t *p, pg_crash_t *c) {
  if (c->said)
    return;
  c->said = 1;
  GString *who = g_string_new(NULL);
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, c->dead);
  while (g_hash_table_iter_next(&it, &k, NULL))
    g_string_append_printf(who, "%s%s", who->len ? ", " : "", (char *)k);
  log_msg(KHOST_LOG_NOTICE, "dedup",
          "postgresql store (%s): %s did not stop cleanly (its row of "
          "khost_hosts left behind): the first calls of %s partition are "
          "recorded before "
          "they are made, so that a record that crashes a host is not "
          "tried forever",
          p->display, who->str,
          c->unclean_at_open ? "every" : "each newly called");
  g_string_free(who, TRUE);
}

/* Is this call one of the first `budget` of its partition to record? */
static int recovering(pg_store_t *p, const store_attempt_t *a,
                      uint32_t budget) {
  pg_crash_t *c = p->crash;
  char *key = g_strdup_printf("%" PRIu32 "/%s/%" PRId32, a->scope,
                              a->topic ? a->topic : "", a->partition);
  int rec = 0;
  pthread_mutex_lock(&c->mu);
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(c->counted, key));
  if (n == 0 && !c->unclean_at_open &&
      g_get_monotonic_time() / 1000 - c->looked_ms >= LOOK_EVERY_MS &&
      look(p, c, NULL, 0) > 0)
    c->found_since = 1;
  if (n == 0) /* its first call: it records when an unclean stop is known */
    n = c->unclean_at_open || c->found_since ? 1 : NEVER;
  rec = n != NEVER && n <= budget;
  g_hash_table_replace(c->counted, key, GUINT_TO_POINTER(rec ? n + 1 : n));
  if (rec)
    say_unclean(p, c);
  pthread_mutex_unlock(&c->mu);
  return rec;
}

int pg_crash_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                      uint32_t *count) {
  return pg_attempts(s, a, budget, count) || recovering(pgs(s), a, budget);
}
