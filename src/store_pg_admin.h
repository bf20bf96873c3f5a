/*
 * Administration of the PostgreSQL store: what `khost dedup` and `khost
 * state` do to it, with the shapes of dedup_admin.h, on the store's own
 * connection. Beside running hosts: every delete is a run of short
 * transactions, and what is forgotten or pruned is forgotten by every
 * host at once (they keep no copy of the marks).
 *
 * Threads: as the store (store_pg.h).
 */
#ifndef KHOST_STORE_PG_ADMIN_H
#define KHOST_STORE_PG_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "dedup_admin.h"
#include "store.h"

/* The scope of a pipeline, created never: *found = 0 when the store has
 * never seen it. */
int store_pg_find_scope(store_t *s, const char *pipeline, uint32_t *scope,
                        int *found, char *err, size_t errlen);

/* One entry per pipeline the store knows, by name (dadm_stats_free()). */
int store_pg_dedup_stats(store_t *s, dadm_stats_t **out, size_t *n, char *err,
                         size_t errlen);

/* The mark of one event ID (at most one: the newest handling), as an array
 * for dadm_marks_free(). */
int store_pg_lookup(store_t *s, uint32_t scope, const void *id, size_t len,
                    dadm_mark_t **out, size_t *n, char *err, size_t errlen);

/* As dadm_forget_id(), dadm_forget_scope() and dadm_prune(). */
int store_pg_forget_id(store_t *s, uint32_t scope, const void *id, size_t len,
                       int dry_run, int64_t *removed, char *err, size_t errlen);
int store_pg_forget_scope(store_t *s, uint32_t scope, int dry_run,
                          int64_t *removed, char *err, size_t errlen);
int store_pg_prune_before(store_t *s, int64_t cutoff_ms, int64_t *removed,
                          char *err, size_t errlen);

/* Keys of a scope's plugin state and their bytes (keys + values). */
int store_pg_state_stats(store_t *s, uint32_t scope, int64_t *keys,
                         int64_t *bytes, char *err, size_t errlen);

#endif
