/*
 * The store on one SQLite file: store.h's operations over dedup.c, which
 * keeps the append-only table of marks and the in-memory set of every ID
 * inside the retention window. A batch is a dedup writer (a connection of
 * its own).
 *
 * Threads: as dedup.h (the store is thread-safe, a batch belongs to one
 * thread at a time).
 */
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "parked_admin.h"
#include "store.h"
#include "store_parked.h"
#include "store_state.h"

typedef struct sqlite_store {
  store_t base;
  dedup_store_t *d;
  sstate_t *st; /* plugin state and stored offsets */
  char *path;
} sqlite_store_t;

typedef struct sqlite_batch {
  store_batch_t base;
  dedup_writer_t *w;
  sstate_buf_t *sb;  /* state writes and offsets, committed with the marks */
  sparked_buf_t *pb; /* parked records, likewise */
} sqlite_batch_t;

static dedup_store_t *dstore(store_t *s) {
  return ((sqlite_store_t *)s)->d;
}

static dedup_writer_t *writer(store_batch_t *b) {
  return ((sqlite_batch_t *)b)->w;
}

static sstate_t *sstate(store_t *s) {
  return ((sqlite_store_t *)s)->st;
}

static sstate_buf_t *sbuf(store_batch_t *b) {
  return ((sqlite_batch_t *)b)->sb;
}

static void sq_close(store_t *s) {
  sstate_close(sstate(s));
  dedup_close(dstore(s));
  free(((sqlite_store_t *)s)->path);
  free(s);
}

static int sq_scope(store_t *s, const char *pipeline, uint32_t *scope,
                    char *err, size_t errlen) {
  return dedup_scope(dstore(s), pipeline, scope, err, errlen);
}

/* DEDUP_* and STORE_* answers have the same values (checked below). */
static int sq_claim(store_t *s, uint32_t scope, const store_key_t *k, int mode,
                    int64_t before_ms) {
  dedup_store_t *d = dstore(s);
  int again = mode == STORE_CLAIM_AGAIN;
  int r = dedup_claim_h(d, scope, k->id, k->len, k->hash, again, before_ms);
  /* A look only: what was claimed for it goes back at once. */
  if (mode == STORE_LOOKUP && r == DEDUP_NEW)
    dedup_release_h(d, scope, k->id, k->len, k->hash);
  return r;
}

static int sq_claim_ref(store_t *s, uint32_t scope, const store_key_t *k,
                        void **ref) {
  return dedup_claim_ref(dstore(s), scope, k->id, k->len, k->hash, ref);
}

static void sq_prefetch(store_t *s, uint64_t hash) {
  dedup_prefetch(dstore(s), hash);
}

static void sq_release(store_t *s, uint32_t scope, const store_key_t *k) {
  dedup_release_h(dstore(s), scope, k->id, k->len, k->hash);
}

static int sq_batch_open(store_t *s, store_batch_t **out, char *err,
                         size_t errlen) {
  sqlite_batch_t *b = calloc(1, sizeof(*b));
  if (!b || dedup_writer_open(dstore(s), &b->w, err, errlen) != 0) {
    free(b);
    return -1;
  }
  b->base.store = s;
  b->sb = sstate_buf_new();
  b->pb = sparked_buf_new();
  *out = &b->base;
  return 0;
}

static void sq_batch_close(store_batch_t *b) {
  sstate_buf_free(sbuf(b)); /* its statements, on the writer's connection */
  dedup_writer_close(writer(b));
  sparked_buf_free(((sqlite_batch_t *)b)->pb);
  free(b);
}

/* A marked record has an outcome: its recorded calls are forgotten in
 * memory (the row goes once the mark is durable, dedup.h "Attempts"). */
static int sq_batch_add_mark(store_batch_t *b, const store_mark_t *m) {
  int rc = dedup_writer_add(writer(b), (const dedup_mark_t *)m);
  dedup_attempts_forget(dstore(b->store), m->scope, m->event_id,
                        m->event_id_len);
  return rc;
}

/* The entries beside the marks, inside the marks' transaction. */
static int write_extras(sqlite3 *db, void *arg) {
  sqlite_batch_t *b = arg;
  int rc = SQLITE_OK;
  if (sstate_buf_len(b->sb) > 0)
    rc = sstate_buf_write(db, b->sb);
  if (rc == SQLITE_OK && sparked_buf_len(b->pb) > 0)
    rc = sparked_buf_write(db, b->pb);
  return rc;
}

static int sq_batch_commit(store_batch_t *b, int *transient, char *err,
                           size_t errlen) {
  sqlite_batch_t *sb = (sqlite_batch_t *)b;
  if (sstate_buf_len(sb->sb) == 0 && sparked_buf_len(sb->pb) == 0)
    return dedup_writer_commit(writer(b), transient, err, errlen);
  if (dedup_writer_commit_with(writer(b), write_extras, sb, transient, err,
                               errlen) != 0)
    return -1;
  sstate_buf_applied(sstate(b->store), sb->sb);
  sstate_buf_clear(sb->sb);
  sparked_buf_clear(sb->pb);
  return 0;
}

static void sq_batch_discard(store_batch_t *b) {
  dedup_writer_discard(writer(b));
  sstate_buf_clear(sbuf(b));
  sparked_buf_clear(((sqlite_batch_t *)b)->pb);
}

static int sq_park(store_batch_t *b, const store_parked_t *p) {
  sparked_buf_add(((sqlite_batch_t *)b)->pb, p);
  return 0;
}

static int sq_unpark(store_batch_t *b, const store_parked_t *p) {
  sparked_buf_remove(((sqlite_batch_t *)b)->pb, p);
  return 0;
}

/* The lot is read and changed on a connection of its own, as `khost
 * parked` does beside a running host (parked_admin.h). */
static int sq_parked_list(store_t *s, uint32_t scope,
                          const store_parked_filter_t *f, store_parked_t ***out,
                          size_t *n, char *err, size_t errlen) {
  padm_t *a = NULL;
  int rc = padm_open(&a, ((sqlite_store_t *)s)->path, err, errlen);
  if (rc == 0)
    rc = padm_list(a, scope, f, out, n, err, errlen);
  padm_close(a);
  return rc;
}

static int sq_parked_remove(store_t *s, const store_parked_t *p, int *removed,
                            char *err, size_t errlen) {
  padm_t *a = NULL;
  int rc = padm_open(&a, ((sqlite_store_t *)s)->path, err, errlen);
  if (rc == 0)
    rc = padm_remove(a, p, removed, err, errlen);
  padm_close(a);
  return rc;
}

static int sq_put_state(store_batch_t *b, uint32_t scope, const void *key,
                        size_t klen, const void *val, size_t vlen) {
  sstate_buf_put(sbuf(b), scope, key, klen, val, vlen, 0);
  return 0;
}

static int sq_del_state(store_batch_t *b, uint32_t scope, const void *key,
                        size_t klen) {
  sstate_buf_put(sbuf(b), scope, key, klen, NULL, 0, 1);
  return 0;
}

static int sq_set_offset(store_batch_t *b, uint32_t scope, const char *topic,
                         int32_t partition, int64_t next) {
  sstate_buf_offset(sbuf(b), scope, topic, partition, next);
  return 0;
}

static int sq_state_get(store_t *s, uint32_t scope, const void *key,
                        size_t klen, void **val, size_t *vlen, char *err,
                        size_t errlen) {
  return sstate_get(sstate(s), scope, key, klen, val, vlen, err, errlen);
}

static int sq_state_scan(store_t *s, uint32_t scope, const void *prefix,
                         size_t plen, store_state_fn fn, void *arg, char *err,
                         size_t errlen) {
  return sstate_scan(sstate(s), scope, prefix, plen, fn, arg, err, errlen);
}

static int sq_state_reset(store_t *s, uint32_t scope, int64_t *removed,
                          char *err, size_t errlen) {
  return sstate_reset(sstate(s), scope, removed, err, errlen);
}

static int sq_offset_get(store_t *s, uint32_t scope, const char *topic,
                         int32_t partition, int64_t *next, char *err,
                         size_t errlen) {
  return sstate_offset_get(sstate(s), scope, topic, partition, next, err,
                           errlen);
}

static int sq_prune(store_t *s, int64_t now_ms, int64_t *removed, char *err,
                    size_t errlen) {
  return dedup_prune(dstore(s), now_ms, removed, err, errlen);
}

static int sq_replay_ranges(store_t *s, uint32_t scope, const char *topic,
                            int32_t partition, store_range_t **out, size_t *n,
                            char *err, size_t errlen) {
  dedup_range_t *r = NULL;
  if (dedup_replay_ranges(dstore(s), scope, topic, partition, &r, n, err,
                          errlen) != 0)
    return -1;
  *out = (store_range_t *)r; /* same layout (checked below) */
  return 0;
}

static int sq_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                       uint32_t *count) {
  dedup_store_t *d = dstore(s);
  *count = dedup_attempts_get(d, a->scope, a->event_id, a->event_id_len);
  return *count > 0 ||
         dedup_attempts_recovering(d, a->scope, a->topic, a->partition, budget);
}

static int sq_attempts_set(store_batch_t *b, const store_attempt_t *a,
                           char *err, size_t errlen) {
  if (a->attempts == 0)
    return dedup_attempts_clear(writer(b), a->scope, a->event_id,
                                a->event_id_len, err, errlen);
  return dedup_attempts_put(writer(b), (const dedup_attempt_t *)a, err, errlen);
}

static void sq_stats(store_t *s, store_stats_t *out) {
  dedup_stats_t st;
  dedup_stats(dstore(s), &st);
  out->ids = st.ids;
  out->pruned = st.pruned;
  out->prune_runs = st.prune_runs;
}

static int sq_history_check_due(store_t *s, uint32_t scope) {
  return dedup_history_check_due(dstore(s), scope);
}

static const store_ops_t sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .scope = sq_scope,
    .claim = sq_claim,
    .release = sq_release,
    .prefetch = sq_prefetch,
    .batch_open = sq_batch_open,
    .batch_close = sq_batch_close,
    .batch_add_mark = sq_batch_add_mark,
    .batch_commit = sq_batch_commit,
    .batch_discard = sq_batch_discard,
    .prune = sq_prune,
    .replay_ranges = sq_replay_ranges,
    .attempts = sq_attempts,
    .attempts_set = sq_attempts_set,
    .stats = sq_stats,
    .history_check_due = sq_history_check_due,
    .batch_put_state = sq_put_state,
    .batch_del_state = sq_del_state,
    .batch_set_offset = sq_set_offset,
    .state_get = sq_state_get,
    .state_scan = sq_state_scan,
    .state_reset = sq_state_reset,
    .offset_get = sq_offset_get,
    .batch_park = sq_park,
    .parked_list = sq_parked_list,
    .parked_remove = sq_parked_remove,
    .batch_unpark = sq_unpark,
    .claim_ref = sq_claim_ref,
};

/* The casts above rely on these. */
_Static_assert((int)STORE_SEEN == (int)DEDUP_SEEN &&
                   (int)STORE_NEW == (int)DEDUP_NEW &&
                   (int)STORE_IN_FLIGHT == (int)DEDUP_IN_FLIGHT,
               "claim answers");
_Static_assert((int)STORE_OUTCOME_FAIL == (int)DEDUP_OUTCOME_FAIL &&
                   (int)STORE_REPLAY_REPROCESS == (int)DEDUP_REPLAY_REPROCESS,
               "outcomes and replay modes");
_Static_assert(sizeof(store_mark_t) == sizeof(dedup_mark_t) &&
                   offsetof(store_mark_t, outcome) ==
                       offsetof(dedup_mark_t, outcome) &&
                   offsetof(store_mark_t, claim_ref) ==
                       offsetof(dedup_mark_t, claim_ref),
               "marks");
_Static_assert(sizeof(store_range_t) == sizeof(dedup_range_t) &&
                   offsetof(store_range_t, recorded_ms) ==
                       offsetof(dedup_range_t, recorded_ms),
               "ranges");
_Static_assert(sizeof(store_attempt_t) == sizeof(dedup_attempt_t) &&
                   offsetof(store_attempt_t, attempts) ==
                       offsetof(dedup_attempt_t, attempts),
               "attempts");

int store_sqlite_open(store_t **out, const struct dedup_opts *opts, char *err,
                      size_t errlen) {
  sqlite_store_t *s = calloc(1, sizeof(*s));
  if (!s || dedup_open(&s->d, opts, err, errlen) != 0) {
    free(s);
    return -1;
  }
  if (sstate_open(&s->st, opts->path, opts->busy_timeout_ms, err, errlen) !=
      0) {
    dedup_close(s->d);
    free(s);
    return -1;
  }
  s->base.ops = &sqlite_ops;
  s->path = strdup(opts->path);
  *out = &s->base;
  return 0;
}
