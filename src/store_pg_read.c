/*
 * The PostgreSQL store's reads (replay ranges) and its pruning.
 *
 * Pruning deletes marks past the retention in small transactions (a few
 * thousand rows each) on a connection of its own, so that it never holds
 * the store's lock nor long row locks: claims and batch commits of every
 * host go on while it runs. A pruner thread runs it every
 * prune_interval_ms; any host may, the deletes of two do not conflict.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store_pg_int.h"

/* Marks deleted per transaction. */
#define PRUNE_CHUNK 2000

int pg_replay_ranges(store_t *s, uint32_t scope, const char *topic,
                     int32_t partition, store_range_t **out, size_t *n,
                     char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_str(&a, topic);
  pgp_i64(&a, partition);
  *out = NULL;
  *n = 0;
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT from_off, to_off, mode::bigint, recorded_at "
                        "FROM khost_replay WHERE scope = $1 AND topic = $2 "
                        "AND part = $3 ORDER BY seq DESC",
                        &a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (!r)
    return -1;
  *n = (size_t)PQntuples(r);
  if (*n)
    *out = calloc(*n, sizeof(**out));
  for (int i = 0; i < (int)*n; i++) {
    (*out)[i].from = pg_int(r, i, 0);
    (*out)[i].to = pg_int(r, i, 1);
    (*out)[i].mode = (int)pg_int(r, i, 2);
    (*out)[i].recorded_ms = pg_int(r, i, 3);
  }
  PQclear(r);
  return 0;
}

int store_pg_add_range(store_t *s, uint32_t scope, const char *topic,
                       int32_t partition, const store_range_t *rg, char *err,
                       size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_str(&a, topic);
  pgp_i64(&a, partition);
  pgp_i64(&a, rg->from);
  pgp_i64(&a, rg->to);
  pgp_i64(&a, rg->mode);
  pgp_i64(&a, rg->recorded_ms);
  pthread_mutex_lock(&p->mu);
  int rc = pg_exec0(p, p->conn,
                    "INSERT INTO khost_replay (scope, topic, part, from_off, "
                    "to_off, mode, recorded_at) VALUES ($1, $2, $3, $4, $5, "
                    "$6, $7)",
                    &a, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* ------------------------------------------------------------ pruning */

static int stopping(pg_store_t *p) {
  return __atomic_load_n(&p->stopping, __ATOMIC_RELAXED);
}

/* Marks handled before cutoff, a chunk per transaction, until none is
 * left (or the store closes). */
static int prune_chunks(pg_store_t *p, PGconn *c, int64_t cutoff,
                        int64_t *removed, char *err, size_t errlen) {
  int64_t n;
  *removed = 0;
  do {
    pgp_t a = {0};
    pgp_i64(&a, cutoff);
    pgp_i64(&a, PRUNE_CHUNK);
    PGresult *r =
        pg_exec(p, c,
                "DELETE FROM khost_marks WHERE ctid = ANY (ARRAY (SELECT ctid "
                "FROM khost_marks WHERE handled_at < $1 LIMIT $2))",
                &a, 0, NULL, err, errlen);
    if (!r)
      return -1;
    n = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    *removed += n;
    __atomic_add_fetch(&p->pruned, n, __ATOMIC_RELAXED);
  } while (n == PRUNE_CHUNK && !stopping(p));
  __atomic_add_fetch(&p->prune_runs, 1, __ATOMIC_RELAXED);
  return 0;
}

int pg_prune(store_t *s, int64_t now_ms, int64_t *removed, char *err,
             size_t errlen) {
  pg_store_t *p = pgs(s);
  int64_t n = 0;
  int rc = 0;
  if (p->retention_ms > 0) {
    PGconn *c = pg_connect(p, err, errlen);
    rc = c ? prune_chunks(p, c, now_ms - p->retention_ms, &n, err, errlen) : -1;
    PQfinish(c);
  }
  if (removed)
    *removed = n;
  return rc;
}

/* Waits interval on wake (mu held); 1 when the store is closing. */
static int prune_wait(pg_store_t *p) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  int64_t ns = until.tv_nsec + p->prune_interval_ms * 1000000LL;
  until.tv_sec += ns / 1000000000LL;
  until.tv_nsec = ns % 1000000000LL;
  if (!p->stopping)
    pthread_cond_timedwait(&p->wake, &p->mu, &until);
  return p->stopping;
}

/* The pruner: every prune_interval_ms, on its own connection. A failure
 * is said once, and again when pruning works again. */
void *pg_prune_main(void *arg) {
  pg_store_t *p = arg;
  PGconn *c = PQconnectdb(p->conninfo);
  int failing = 0;
  char err[512];
  pthread_mutex_lock(&p->mu);
  while (!prune_wait(p)) {
    int64_t n, now = g_get_real_time() / 1000;
    pthread_mutex_unlock(&p->mu);
    int rc = prune_chunks(p, c, now - p->retention_ms, &n, err, sizeof(err));
    if (rc != 0 && !failing)
      log_msg(KHOST_LOG_WARNING, "dedup", "%s (pruning again later)", err);
    else if (rc == 0 && n > 0)
      log_msg(KHOST_LOG_INFO, "dedup",
              "postgresql store (%s): pruned %lld marks past the retention",
              p->display, (long long)n);
    failing = rc != 0;
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  PQfinish(c);
  return NULL;
}
