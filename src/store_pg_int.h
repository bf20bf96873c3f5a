/*
 * Inside the PostgreSQL store (store_pg.h): what its files share.
 *
 *   store_pg.c         open, close, scopes, statistics, the operations
 *   store_pg_sql.c     connections, statements, parameters, errors
 *   store_pg_schema.c  the versioned schema: check, create, upgrade
 *   store_pg_claim.c   claims (one by one, or a batch's ahead), leases
 *   store_pg_batch.c   a batch: marks, state writes, offsets, attempts
 *   store_pg_read.c    state and offset reads, replay ranges, pruning
 *   store_pg_parked.c  the parking lot: a batch's parked records, the lot
 *   store_pg_crash.c   the crash-attempt guard: unclean stops, from claims
 *
 * Threads: the store's own connection (conn) and the claim-ahead cache
 * are under mu; a batch's connection belongs to the batch's thread; the
 * claimers (the claims taken ahead), the renewer and the pruner each have
 * a connection of their own.
 */
#ifndef KHOST_STORE_PG_INT_H
#define KHOST_STORE_PG_INT_H

#include <glib.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>

#include "store_pg.h"

/* The server's clock in ms since the epoch: leases are on one clock. */
#define PG_NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

/* The outcome of a row of khost_marks that is a claim, not a mark yet
 * (STORE_OUTCOME_* are the marks'). */
#define PG_CLAIMED "2"

/* Is the claim of row m (its owner) held by a live host: one whose
 * renewer extended its lease in time (khost_hosts)? A mark without a
 * claim on it has no owner. */
#define PG_LIVE(m)                                                             \
  "EXISTS (SELECT 1 FROM khost_hosts h WHERE h.host = " m ".owner AND"         \
  " h.lease_until >= " PG_NOW_MS ")"

/* Is row m a mark: an outcome of its own, or a claim whose epoch's
 * committed position is past its offset (schema version 5)? */
#define PG_MARK(m)                                                             \
  "(" m ".outcome <> " PG_CLAIMED " OR EXISTS (SELECT 1 FROM khost_epochs e"   \
  " WHERE e.epoch = " m ".epoch AND e.through > " m ".off))"
/* The outcome of a mark (PG_MARK): a mark by position is a plain one. */
#define PG_OUTCOME(m)                                                          \
  "(CASE WHEN " m ".outcome = " PG_CLAIMED " THEN 0 ELSE " m ".outcome END)"

/* Claimer threads of a store, each with a connection of its own. Two
 * (windows of different partitions claimed side by side) measured no
 * faster than one with the server on the same two cores as the hosts
 * (bench/README.md). */
#define PG_CLAIMERS 1

typedef struct pg_store {
  store_t base;
  pthread_mutex_t mu;
  PGconn *conn;           /* the store's own calls, under mu */
  unsigned conn_prepared; /* statements prepared on conn (pg_stmt_t) */
  char *conninfo;
  char *display;  /* conninfo without its password */
  char owner[96]; /* this process, as khost_hosts names it */
  int64_t host;   /* its row in khost_hosts: the owner of its claims */
  int64_t lease_ms, retention_ms, prune_interval_ms;
  int was_empty;              /* no marks at open */
  GHashTable *checks;         /* scopes asked history_check_due */
  int64_t pruned, prune_runs; /* atomic */
  int64_t round_trips;        /* statements sent, atomic */
  /* Claims taken (or found marked, or on their way) ahead of their
   * store_claim() call: "scope/id" bytes -> pg_ahead_t, under mu
   * (store_pg_claim.c). */
  GHashTable *ahead;
  /* The claimer threads: the windows of IDs store_claim_ahead() queued
   * (pg_window_t, oldest first) and the one each is claiming, under mu
   * (two windows of one partition are never claimed at once);
   * claim_wake wakes them, answered wakes whoever waits for a window's
   * answer (store_claim() of one of its IDs, store_pg_ahead_wait()). */
  GQueue windows;
  struct pg_claimer {
    struct pg_store *p;
    pthread_t thread;
    int on;
    struct pg_window *claiming;
    unsigned prepared; /* statements prepared on its connection */
  } claimers[PG_CLAIMERS];
  pthread_cond_t claim_wake, answered;
  /* Marks by position (schema version 5), under pos_mu: this process's epoch
   * of each partition it claims in, "scope/partition/topic" -> pg_epoch_t;
   * and the claims it took with a position and has not marked or given
   * back yet, the cache's key -> pg_pos_t. */
  GHashTable *epochs, *pos;
  /* Guards epochs and pos (taken after mu when both are): a batch's
   * commit never waits for a claim statement under mu. */
  pthread_mutex_t pos_mu;
  uint64_t tick;   /* renewer rounds, under mu */
  int claims_down; /* the last claim failed (logged once), under mu */
  /* The renewer and the pruner threads, stopped by stopping + wake (the
   * claimer by stopping + claim_wake). */
  pthread_t renewer, pruner;
  int renewing, pruning, stopping;
  pthread_cond_t wake;
  struct pg_crash *crash; /* store_pg_crash.c */
} pg_store_t;

typedef struct pg_epoch {
  int64_t epoch;
  int64_t through; /* its committed position as this process set it */
} pg_epoch_t;

typedef struct pg_pos {
  int64_t epoch, off;
  int attempts; /* calls of its record recorded: its mark clears them */
} pg_pos_t;

/* The key of p->epochs (caller frees). */
char *pg_epoch_key(uint32_t scope, const char *topic, int32_t partition);
/* The key of p->ahead and p->pos of an ID (pg_key() after the scope). */
GBytes *pg_ahead_key(uint32_t scope, const void *id, size_t len);

static inline pg_store_t *pgs(store_t *s) {
  return (pg_store_t *)s;
}

/* An array parameter in PostgreSQL's binary format, one element type:
 * the statement casts it to that type's array ($2::bytea[]). */
typedef struct pga {
  GByteArray *buf; /* the header's room, then the elements */
  int n, nulls, done;
  uint32_t oid;
} pga_t;

/* Element types of arrays: integers all go as bigint[]. */
#define PGA_BYTEA 17u
#define PGA_INT8 20u
#define PGA_TEXT 25u

/* Parameters of one statement: text, or binary for bytea, event-ID keys
 * and arrays. */
#define PGP_MAX 12
typedef struct pgp {
  int n;
  const char *v[PGP_MAX];
  int len[PGP_MAX], bin[PGP_MAX];
  char num[PGP_MAX][24];
  pga_t arr[PGP_MAX];
  GByteArray *key[PGP_MAX];
} pgp_t;

void pgp_i64(pgp_t *p, int64_t v);
void pgp_str(pgp_t *p, const char *s);
void pgp_bytes(pgp_t *p, const void *data, size_t len);
/* An event ID as khost_marks and khost_attempts key it (pg_key()). */
void pgp_key(pgp_t *p, const void *id, size_t len);
/* An array parameter of elements of type oid (PGA_*), appended with the
 * calls below; finished by pg_exec(). */
pga_t *pgp_array(pgp_t *p, uint32_t oid);
void pga_bytes(pga_t *a, const void *data, size_t len); /* NULL: null */
void pga_key(pga_t *a, const void *id, size_t len);     /* pg_key() */
void pga_str(pga_t *a, const char *s);
void pga_i64(pga_t *a, int64_t v);
/* Frees what the parameters own (keys and arrays): after every
 * statement that has any. */
void pgp_free(pgp_t *p);

/* Event IDs as keys: a UUID in its canonical lowercase text form (36
 * characters) is its 16 bytes after the byte 1; any other ID is its
 * bytes after the byte 0. Exact both ways, and the key of a random-UUID
 * ID is half as long: 32 bytes an index entry instead of 56. */
#define PG_KEY_UUID 1
#define PG_KEY_TEXT 0
/* The key of id appended to out. */
void pg_key(GByteArray *out, const void *id, size_t len);
/* The same as an SQL expression of a bytea expression `id` (the schema
 * upgrade from keys that were the ID's bytes). */
#define PG_KEY_SQL(id)                                                         \
  "CASE WHEN encode(" id ", 'escape') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-"            \
  "[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN '\\x01'::bytea ||"              \
  " decode(replace(encode(" id ", 'escape'), '-', ''), 'hex')"                 \
  " ELSE '\\x00'::bytea || " id " END"

/* Faults that may clear by themselves (connection, serialization,
 * server shutdown). */
int pg_is_transient(PGconn *c, const PGresult *r);
void pg_set_err(pg_store_t *p, PGconn *c, const PGresult *r, const char *what,
                char *err, size_t errlen);
/* A connection, or NULL with err. */
PGconn *pg_connect(pg_store_t *p, char *err, size_t errlen);
/* Run sql: the result (caller clears; binary columns when binary) or
 * NULL with err and *transient (either may be NULL). */
PGresult *pg_exec(pg_store_t *p, PGconn *c, const char *sql, pgp_t *params,
                  int binary, int *transient, char *err, size_t errlen);
/* A statement run often on one connection: prepared there once (its
 * parse and plan, a tenth of a millisecond or more, not paid again). */
typedef struct pg_stmt {
  const char *name;
  unsigned bit; /* in the connection's mask of what is prepared on it */
} pg_stmt_t;
/* As pg_exec(), with sql prepared on c as st unless *mask says it is
 * (then set); a connection reset clears *mask. */
PGresult *pg_exec_prepared(pg_store_t *p, PGconn *c, const pg_stmt_t *st,
                           unsigned *mask, const char *sql, pgp_t *params,
                           int binary, int *transient, char *err,
                           size_t errlen);
/* A statement whose result is not needed: 0 or -1. */
int pg_exec0(pg_store_t *p, PGconn *c, const char *sql, pgp_t *params,
             int *transient, char *err, size_t errlen);
/* A binary int8/int4/int2 column of a binary result. */
int64_t pg_int(const PGresult *r, int row, int col);

/* store_pg_schema.c: the schema this khost knows (created or upgraded
 * when create), or -1 with err naming both versions. */
int pg_schema_check(pg_store_t *p, int create, char *err, size_t errlen);

/* store_pg_claim.c */
int pg_claim(store_t *s, uint32_t scope, const store_key_t *key, int mode,
             int64_t before_ms);
void pg_release(store_t *s, uint32_t scope, const store_key_t *key);
void pg_claim_ahead(store_t *s, uint32_t scope, const char *topic,
                    int32_t partition, const void *const *ids,
                    const size_t *lens, const int64_t *offsets, size_t n);
int pg_claim_ready(store_t *s, uint32_t scope, const store_key_t *key);
void pg_part_dropped(store_t *s, uint32_t scope, const char *topic,
                     int32_t partition);
int pg_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                uint32_t *count);
void *pg_renew_main(void *arg);
/* A claimer thread (arg: its struct pg_claimer): claims the windows
 * store_claim_ahead() queued, on a connection of its own. */
void *pg_claimer_main(void *arg);
void pg_ahead_init(pg_store_t *p);
/* The cache freed, the windows left in the queue dropped (at close,
 * after the claimer was joined). */
void pg_ahead_free(pg_store_t *p);

/* store_pg_batch.c */
int pg_batch_open(store_t *s, store_batch_t **out, char *err, size_t errlen);
void pg_batch_close(store_batch_t *b);
int pg_batch_add_mark(store_batch_t *b, const store_mark_t *m);
int pg_batch_commit(store_batch_t *b, int *transient, char *err, size_t errlen);
void pg_batch_discard(store_batch_t *b);
int pg_attempts_set(store_batch_t *b, const store_attempt_t *a, char *err,
                    size_t errlen);
int pg_batch_put_state(store_batch_t *b, uint32_t scope, const void *key,
                       size_t klen, const void *val, size_t vlen);
int pg_batch_del_state(store_batch_t *b, uint32_t scope, const void *key,
                       size_t klen);
int pg_batch_set_offset(store_batch_t *b, uint32_t scope, const char *topic,
                        int32_t partition, int64_t next);

/* store_pg_read.c */
int pg_state_get(store_t *s, uint32_t scope, const void *key, size_t klen,
                 void **val, size_t *vlen, char *err, size_t errlen);
int pg_state_scan(store_t *s, uint32_t scope, const void *prefix, size_t plen,
                  store_state_fn fn, void *arg, char *err, size_t errlen);
int pg_state_reset(store_t *s, uint32_t scope, int64_t *removed, char *err,
                   size_t errlen);
int pg_offset_get(store_t *s, uint32_t scope, const char *topic,
                  int32_t partition, int64_t *next, char *err, size_t errlen);
int pg_replay_ranges(store_t *s, uint32_t scope, const char *topic,
                     int32_t partition, store_range_t **out, size_t *n,
                     char *err, size_t errlen);
int pg_prune(store_t *s, int64_t now_ms, int64_t *removed, char *err,
             size_t errlen);
void *pg_prune_main(void *arg);

/* store_pg_parked.c: a batch's parked records and removals (remove: 1),
 * written by pg_parked_commit() inside the batch's transaction. */
typedef struct pg_parked_buf pg_parked_buf_t;
pg_parked_buf_t *pg_parked_new(void);
void pg_parked_free(pg_parked_buf_t *b);
void pg_parked_clear(pg_parked_buf_t *b);
size_t pg_parked_len(const pg_parked_buf_t *b);
void pg_parked_add(pg_parked_buf_t *b, const store_parked_t *p, int remove);
int pg_parked_commit(pg_store_t *s, PGconn *c, const pg_parked_buf_t *b,
                     int *transient, char *err, size_t errlen);
int pg_parked_list(store_t *s, uint32_t scope, const store_parked_filter_t *f,
                   store_parked_t ***out, size_t *n, char *err, size_t errlen);
int pg_parked_remove(store_t *s, const store_parked_t *rec, int *removed,
                     char *err, size_t errlen);
int pg_batch_park(store_batch_t *b, const store_parked_t *p);
int pg_batch_unpark(store_batch_t *b, const store_parked_t *p);

/* store_pg_crash.c: the crash-attempt guard (store.h's attempts): after
 * an unclean stop found at open (0, or -1 with err when the store did
 * not answer) or later, the first calls of each partition are recorded. */
int pg_crash_open(pg_store_t *p, char *err, size_t errlen);
void pg_crash_free(pg_store_t *p);
/* The owner of a store opened (1) or closed (0) in this process. */
void pg_crash_mine(const char *owner, int open);
int pg_crash_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                      uint32_t *count);
/* Rows of khost_hosts too old to be a trace deleted on c (the renewer's
 * connection); a failure is left to the next round. */
void pg_crash_forget(pg_store_t *p, PGconn *c);

#endif
