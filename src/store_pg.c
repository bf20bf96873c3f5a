/*
 * The store on PostgreSQL: store.h's operations over libpq, plain SQL
 * (PostgreSQL 13 or newer, no extensions, READ COMMITTED), so that every
 * host of a group can point at one database and share its marks, claims,
 * plugin state and stored offsets.
 *
 * This file opens and closes the store and answers for scopes and
 * statistics; store_pg_int.h says where the rest lives.
 *
 * Connections: one per batch (its thread), one for the calls on the store
 * itself (claims, lookups, ranges), serialised by a mutex, one for the
 * claimer (claims taken ahead: PG_CLAIMERS), one for the lease renewer and
 * one for the pruner. A lost connection is reset on the
 * next call; meanwhile claims answer STORE_IN_FLIGHT (the caller waits)
 * and commits fail as transient.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_pg_int.h"

static void pg_close(store_t *s) {
  pg_store_t *p = pgs(s);
  pthread_mutex_lock(&p->mu);
  __atomic_store_n(&p->stopping, 1, __ATOMIC_RELAXED);
  pthread_cond_broadcast(&p->wake);
  pthread_cond_broadcast(&p->claim_wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < PG_CLAIMERS; i++)
    if (p->claimers[i].on)
      pthread_join(p->claimers[i].thread, NULL);
  if (p->renewing)
    pthread_join(p->renewer, NULL);
  if (p->pruning)
    pthread_join(p->pruner, NULL);
  pthread_cond_destroy(&p->wake);
  PQfinish(p->conn);
  g_hash_table_destroy(p->checks);
  pg_ahead_free(p);
  pg_crash_free(p);
  if (p->host)
    pg_crash_mine(p->owner, 0);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->pos_mu);
  g_free(p->conninfo);
  g_free(p->display);
  g_free(p);
}

static int pg_scope(store_t *s, const char *pipeline, uint32_t *scope,
                    char *err, size_t errlen) {
  pg_store_t *p = pgs(s);
  pgp_t a = {0};
  PGresult *r;
  pgp_str(&a, pipeline);
  pthread_mutex_lock(&p->mu);
  /* The no-op update makes RETURNING answer for an existing row too. */
  r = pg_exec(p, p->conn,
              "INSERT INTO khost_scopes (pipeline) VALUES ($1) ON CONFLICT "
              "(pipeline) DO UPDATE SET pipeline = EXCLUDED.pipeline "
              "RETURNING scope",
              &a, 0, NULL, err, errlen);
  pthread_mutex_unlock(&p->mu);
  if (!r)
    return -1;
  *scope = (uint32_t)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return 0;
}

/* The planner's estimate: a count of every mark would scan the table. */
static void pg_stats(store_t *s, store_stats_t *out) {
  pg_store_t *p = pgs(s);
  pthread_mutex_lock(&p->mu);
  PGresult *r = pg_exec(p, p->conn,
                        "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                        "WHERE oid = 'khost_marks'::regclass",
                        NULL, 0, NULL, NULL, 0);
  pthread_mutex_unlock(&p->mu);
  out->ids = r ? (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  out->pruned = __atomic_load_n(&p->pruned, __ATOMIC_RELAXED);
  out->prune_runs = __atomic_load_n(&p->prune_runs, __ATOMIC_RELAXED);
  PQclear(r);
}

static int pg_history_check_due(store_t *s, uint32_t scope) {
  pg_store_t *p = pgs(s);
  int due;
  pthread_mutex_lock(&p->mu);
  due =
      p->was_empty && g_hash_table_add(p->checks, GUINT_TO_POINTER(scope + 1u));
  pthread_mutex_unlock(&p->mu);
  return due;
}

static const store_ops_t pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .scope = pg_scope,
    .claim = pg_claim,
    .release = pg_release,
    .batch_open = pg_batch_open,
    .batch_close = pg_batch_close,
    .batch_add_mark = pg_batch_add_mark,
    .batch_commit = pg_batch_commit,
    .batch_discard = pg_batch_discard,
    .prune = pg_prune,
    .replay_ranges = pg_replay_ranges,
    .attempts = pg_crash_attempts,
    .attempts_set = pg_attempts_set,
    .stats = pg_stats,
    .history_check_due = pg_history_check_due,
    .batch_put_state = pg_batch_put_state,
    .batch_del_state = pg_batch_del_state,
    .batch_set_offset = pg_batch_set_offset,
    .state_get = pg_state_get,
    .state_scan = pg_state_scan,
    .state_reset = pg_state_reset,
    .offset_get = pg_offset_get,
    .claim_ahead = pg_claim_ahead,
    .claim_ready = pg_claim_ready,
    .part_dropped = pg_part_dropped,
    .batch_park = pg_batch_park,
    .parked_list = pg_parked_list,
    .parked_remove = pg_parked_remove,
    .batch_unpark = pg_batch_unpark,
};

static int was_empty(pg_store_t *p, char *err, size_t errlen) {
  PGresult *r =
      pg_exec(p, p->conn, "SELECT NOT EXISTS (SELECT 1 FROM khost_marks)", NULL,
              0, NULL, err, errlen);
  if (!r)
    return -1;
  p->was_empty = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  return 0;
}

/* This process's row in khost_hosts: its claims are live while the
 * renewer keeps the row's lease ahead of the server's clock. */
static int register_host(pg_store_t *p, char *err, size_t errlen) {
  pgp_t a = {0};
  pgp_str(&a, p->owner);
  pgp_i64(&a, p->lease_ms);
  PGresult *r = pg_exec(p, p->conn,
                        "INSERT INTO khost_hosts (name, lease_until) VALUES"
                        " ($1, " PG_NOW_MS " + $2::bigint) RETURNING host",
                        &a, 0, NULL, err, errlen);
  if (!r)
    return -1;
  p->host = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  pg_crash_mine(p->owner, 1);
  return 0;
}

static pg_store_t *pg_new(const store_pg_opts_t *opts) {
  pg_store_t *p = g_new0(pg_store_t, 1);
  char host[64] = "";
  p->base.ops = &pg_ops;
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->pos_mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  p->checks = g_hash_table_new(g_direct_hash, g_direct_equal);
  pg_ahead_init(p);
  p->conninfo = g_strdup(opts->conninfo);
  p->display = store_pg_display(opts->conninfo);
  p->lease_ms = opts->lease_ms > 0 ? opts->lease_ms : 20000;
  p->retention_ms = opts->retention_ms;
  p->prune_interval_ms = opts->prune_interval_ms;
  gethostname(host, sizeof(host) - 1);
  snprintf(p->owner, sizeof(p->owner), "%s/%d/%08x", host, (int)getpid(),
           g_random_int());
  return p;
}

int store_pg_open(store_t **out, const store_pg_opts_t *opts, char *err,
                  size_t errlen) {
  pg_store_t *p = pg_new(opts);
  p->conn = pg_connect(p, err, errlen);
  if (!p->conn || pg_schema_check(p, opts->create, err, errlen) != 0 ||
      was_empty(p, err, errlen) != 0 || register_host(p, err, errlen) != 0 ||
      pg_crash_open(p, err, errlen) != 0) {
    pg_close(&p->base);
    return -1;
  }
  for (int i = 0; i < PG_CLAIMERS; i++) {
    struct pg_claimer *c = &p->claimers[i];
    c->p = p;
    pthread_mutex_lock(&p->mu); /* claimers_on() reads it */
    c->on = pthread_create(&c->thread, NULL, pg_claimer_main, c) == 0;
    pthread_mutex_unlock(&p->mu);
  }
  p->renewing = pthread_create(&p->renewer, NULL, pg_renew_main, p) == 0;
  if (p->retention_ms > 0 && p->prune_interval_ms > 0)
    p->pruning = pthread_create(&p->pruner, NULL, pg_prune_main, p) == 0;
  *out = &p->base;
  return 0;
}

int64_t store_pg_round_trips(store_t *s) {
  return __atomic_load_n(&pgs(s)->round_trips, __ATOMIC_RELAXED);
}
