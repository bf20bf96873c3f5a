/*
 * The store on PostgreSQL (store_pg.c): one database shared by every host
 * of a group, so that dedup marks, claims, plugin state and stored
 * offsets hold across hosts.
 */
#ifndef KHOST_STORE_PG_H
#define KHOST_STORE_PG_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The schema version this khost reads and writes. */
#define STORE_PG_SCHEMA 5

typedef struct store_pg_opts {
  const char *conninfo;      /* libpq connection string (may hold a password) */
  int64_t lease_ms;          /* how long a claim holds without renewal */
  int64_t retention_ms;      /* marks older than this are pruned; <= 0: never */
  int64_t prune_interval_ms; /* the pruner thread's period; 0: no thread */
  int create;                /* 1: create or upgrade the schema (store init) */
} store_pg_opts_t;

int store_pg_open(store_t **out, const store_pg_opts_t *opts, char *err,
                  size_t errlen);

/* conninfo without its password, for messages and logs; caller frees
 * (g_free). A string libpq cannot parse gives "(unparsable conninfo)". */
char *store_pg_display(const char *conninfo);

/* Statements sent to the server since open (tests and benchmarks: a
 * batch costs a few, whatever its size). */
int64_t store_pg_round_trips(store_t *s);

/* Wait until the claims store_claim_ahead() queued were taken (or found
 * marked, or failed): its claims are on their way when it returns (tests:
 * what another host sees of them). */
void store_pg_ahead_wait(store_t *s);

/* Record a replayed range, as `khost replay` does. */
int store_pg_add_range(store_t *s, uint32_t scope, const char *topic,
                       int32_t partition, const store_range_t *r, char *err,
                       size_t errlen);

#endif
