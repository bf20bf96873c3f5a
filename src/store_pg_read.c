/*
 * The PostgreSQL store's reads (plugin state, stored offsets, replay
 * ranges) and its pruning. Reads see what is committed.
 *
 * Pruning deletes marks past the retention (counted from `since`: when
 * an ID was claimed, or marked again) and the claims left by hosts that
 * died, in small transactions (a few
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
/* State rows read per statement of a scan. */
#define SCAN_CHUNK 1000

/* ------------------------------------------------------------ state */

int pg_state_get(store_t *s, uint32_t scope, const void *key, size_t klen,
                 void **val, size_t *vlen, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  int found;
  pgp_i64(&a, scope);
  pgp_bytes(&a, key, klen);
  *val = NULL;
  *vlen = 0;
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT val FROM khost_state WHERE scope = $1 AND "
                        "key = $2",
                        &a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (!r)
    return -1;
  found = PQntuples(r) > 0;
  if (found && PQgetlength(r, 0, 0) > 0) {
    *vlen = (size_t)PQgetlength(r, 0, 0);
    *val = g_memdup2(PQgetvalue(r, 0, 0), *vlen);
  }
  PQclear(r);
  return found;
}

/* The next chunk of a scan: keys from `from` on (included when first). */
static PGresult *scan_chunk(pg_store_t *p, uint32_t scope, const void *from,
                            size_t flen, int first, char *err, size_t errlen) {
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pgp_bytes(&a, from, flen);
  pgp_i64(&a, SCAN_CHUNK);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn,
                        first ? "SELECT key, val FROM khost_state WHERE scope "
                                "= $1 AND key >= $2 ORDER BY key LIMIT $3"
                              : "SELECT key, val FROM khost_state WHERE scope "
                                "= $1 AND key > $2 ORDER BY key LIMIT $3",
                        &a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  return r;
}

/* The callbacks run without the store's lock: they may call the store. */
int pg_state_scan(store_t *s, uint32_t scope, const void *prefix, size_t plen,
                  store_state_fn fn, void *arg, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  GBytes *from = g_bytes_new(prefix, plen);
  int rc = 0, rows = SCAN_CHUNK, first = 1;
  while (rc == 0 && rows == SCAN_CHUNK) {
    gsize flen;
    const void *f = g_bytes_get_data(from, &flen);
    PGresult *r = scan_chunk(p, scope, f, flen, first, err, errlen);
    if (!r) {
      rc = -1;
      break;
    }
    rows = PQntuples(r);
    for (int i = 0; rc == 0 && i < rows; i++) {
      const char *k = PQgetvalue(r, i, 0);
      size_t kl = (size_t)PQgetlength(r, i, 0);
      if (kl < plen || memcmp(k, prefix, plen) != 0) {
        rows = 0; /* past the prefix */
        break;
      }
      rc = fn(arg, k, kl, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
      if (i == rows - 1) {
        g_bytes_unref(from);
        from = g_bytes_new(k, kl);
      }
    }
    first = 0;
    PQclear(r);
  }
  g_bytes_unref(from);
  return rc;
}

int pg_state_reset(store_t *s, uint32_t scope, int64_t *removed, char *err,
                   size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  pgp_i64(&a, scope);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn, "DELETE FROM khost_state WHERE scope = $1",
                        &a, 0, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (r && removed)
    *removed = strtoll(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return r ? 0 : -1;
}

int pg_offset_get(store_t *s, uint32_t scope, const char *topic,
                  int32_t partition, int64_t *next, char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  int found;
  pgp_i64(&a, scope);
  pgp_str(&a, topic);
  pgp_i64(&a, partition);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT next FROM khost_offsets WHERE scope = $1 AND "
                        "topic = $2 AND part = $3",
                        &a, 1, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (!r)
    return -1;
  found = PQntuples(r) > 0;
  if (found)
    *next = pg_int(r, 0, 0);
  PQclear(r);
  return found;
}

/* ------------------------------------------------------------ ranges */

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
                "FROM khost_marks WHERE since < $1 LIMIT $2))",
                &a, 0, NULL, err, errlen);
    if (!r)
      return -1;
    n = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    *removed += n;
    __atomic_add_fetch(&p->pruned, n, __ATOMIC_RELAXED);
  } while (n == PRUNE_CHUNK && !stopping(p));
  /* The epochs of hosts gone whose position last moved before cutoff:
   * every mark they made is older (claimed before that move), pruned
   * above; what is left of them are claims of those hosts, free either
   * way. */
  if (n < PRUNE_CHUNK) {
    pgp_t b = {0};
    pgp_i64(&b, cutoff);
    PQclear(pg_exec(p, c,
                    "DELETE FROM khost_epochs e WHERE e.last_at < $1 AND NOT"
                    " EXISTS (SELECT 1 FROM khost_hosts h WHERE h.host ="
                    " e.host)",
                    &b, 0, NULL, NULL, 0));
  }
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
