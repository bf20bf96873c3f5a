/*
 * The store in memory: store.h's operations on a hash table, for the unit
 * tests of the flow core (no file, nothing survives close). It keeps the
 * rules of the real store (claims, re-claims, marks durable only on
 * commit, replay ranges, crash attempts, parked records) and can be told to
 * refuse commits, as a full disk or a locked database would.
 *
 * Threads: one mutex around everything; a batch belongs to one thread.
 */
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_parked.h"

typedef struct mem_entry {
  int committed;   /* a durable mark backs it */
  int claimed;     /* claimed (or re-claimed) and not committed since */
  int64_t handled; /* newest handled_at of its marks */
} mem_entry_t;

typedef struct mem_store {
  store_t base;
  pthread_mutex_t mu;
  GHashTable *ids;      /* GBytes (scope, id) -> mem_entry_t * */
  GHashTable *attempts; /* GBytes (scope, id) -> count (GUINT_TO_POINTER) */
  GHashTable *scopes;   /* pipeline name -> scope (GUINT_TO_POINTER) */
  GPtrArray *ranges;    /* mem_range_t * */
  GHashTable *firsts;   /* "topic/partition" -> first calls counted */
  GTree *state;         /* GBytes (scope, key) -> GBytes value */
  GHashTable *offsets;  /* "scope/topic/partition" -> int64_t * next */
  GHashTable *parked;   /* "scope/topic/partition/offset" -> store_parked_t * */
  GHashTable *prefetched; /* hashes given to prefetch (uint64_t *) */
  size_t claims_ahead;    /* claims of a hash prefetched before */
  size_t wrong_hashes;    /* claims whose hash was not their ID's */
  int unclean;
  int fail_commits, fail_transient;
  int64_t pruned, prune_runs;
} mem_store_t;

typedef struct mem_range {
  uint32_t scope;
  char *topic;
  int32_t partition;
  store_range_t r;
} mem_range_t;

typedef struct mem_mark {
  GBytes *key;
  int64_t handled;
} mem_mark_t;

/* A state write (val NULL: delete), with okey a stored offset, or with
 * park a parked record. */
typedef struct mem_op {
  GBytes *key, *val;
  char *okey;
  int64_t next;
  store_parked_t *park;
  int unpark; /* park names a parked record to remove */
} mem_op_t;

typedef struct mem_batch {
  store_batch_t base;
  GArray *marks; /* mem_mark_t */
  GArray *ops;   /* mem_op_t, in the order made */
} mem_batch_t;

static mem_store_t *mem(store_t *s) {
  return (mem_store_t *)s;
}

static GBytes *key_of(uint32_t scope, const void *id, size_t len) {
  guint8 *k = g_malloc(sizeof(scope) + len);
  memcpy(k, &scope, sizeof(scope));
  if (len) /* an empty prefix may come as NULL */
    memcpy(k + sizeof(scope), id, len);
  return g_bytes_new_take(k, sizeof(scope) + len);
}

static char *parked_key(uint32_t scope, const char *topic, int32_t partition,
                        int64_t offset) {
  return g_strdup_printf("%u/%s/%d/%" G_GINT64_FORMAT, scope, topic, partition,
                         offset);
}

static void range_free(gpointer p) {
  mem_range_t *r = p;
  g_free(r->topic);
  g_free(r);
}

static void m_close(store_t *s) {
  mem_store_t *m = mem(s);
  g_hash_table_destroy(m->ids);
  g_hash_table_destroy(m->attempts);
  g_hash_table_destroy(m->scopes);
  g_hash_table_destroy(m->firsts);
  g_tree_destroy(m->state);
  g_hash_table_destroy(m->offsets);
  g_hash_table_destroy(m->parked);
  g_hash_table_destroy(m->prefetched);
  g_ptr_array_free(m->ranges, TRUE);
  pthread_mutex_destroy(&m->mu);
  g_free(m);
}

static int m_scope(store_t *s, const char *pipeline, uint32_t *scope, char *err,
                   size_t errlen) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  gpointer v = g_hash_table_lookup(m->scopes, pipeline);
  if (!v) {
    v = GUINT_TO_POINTER(g_hash_table_size(m->scopes) + 1);
    g_hash_table_insert(m->scopes, g_strdup(pipeline), v);
  }
  *scope = GPOINTER_TO_UINT(v);
  pthread_mutex_unlock(&m->mu);
  (void)err;
  (void)errlen;
  return 0;
}

/* The answer for an entry present in the table (mu held). A committed ID
 * stays seen while it is re-claimed; only a re-claim waits for another. */
static int claim_present(mem_entry_t *e, int mode, int64_t before_ms) {
  if (!e->committed)
    return STORE_IN_FLIGHT;
  if (mode != STORE_CLAIM_AGAIN || e->claimed || e->handled >= before_ms)
    return STORE_SEEN;
  e->claimed = 1;
  return STORE_NEW;
}

static int m_claim(store_t *s, uint32_t scope, const store_key_t *key, int mode,
                   int64_t before_ms) {
  mem_store_t *m = mem(s);
  GBytes *k = key_of(scope, key->id, key->len);
  int r = STORE_NEW;
  pthread_mutex_lock(&m->mu);
  if (key->hash != ID_HASH_NONE &&
      key->hash != id_hash(scope, key->id, key->len))
    m->wrong_hashes++;
  if (g_hash_table_contains(m->prefetched, &key->hash))
    m->claims_ahead++;
  mem_entry_t *e = g_hash_table_lookup(m->ids, k);
  if (e) {
    r = claim_present(e, mode, before_ms);
  } else if (mode != STORE_LOOKUP) {
    e = g_new0(mem_entry_t, 1);
    e->claimed = 1;
    g_hash_table_insert(m->ids, g_bytes_ref(k), e);
  }
  pthread_mutex_unlock(&m->mu);
  g_bytes_unref(k);
  return r;
}

static void m_prefetch(store_t *s, uint64_t hash) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  g_hash_table_add(m->prefetched, g_memdup2(&hash, sizeof hash));
  pthread_mutex_unlock(&m->mu);
}

void store_mem_lookahead(store_t *s, size_t *prefetched, size_t *claims_ahead,
                         size_t *wrong_hashes) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  *prefetched = g_hash_table_size(m->prefetched);
  *claims_ahead = m->claims_ahead;
  *wrong_hashes = m->wrong_hashes;
  pthread_mutex_unlock(&m->mu);
}

static void m_release(store_t *s, uint32_t scope, const store_key_t *key) {
  mem_store_t *m = mem(s);
  GBytes *k = key_of(scope, key->id, key->len);
  pthread_mutex_lock(&m->mu);
  mem_entry_t *e = g_hash_table_lookup(m->ids, k);
  if (e && e->committed)
    e->claimed = 0;
  else if (e)
    g_hash_table_remove(m->ids, k);
  pthread_mutex_unlock(&m->mu);
  g_bytes_unref(k);
}

static int m_batch_open(store_t *s, store_batch_t **out, char *err,
                        size_t errlen) {
  mem_batch_t *b = g_new0(mem_batch_t, 1);
  b->base.store = s;
  b->marks = g_array_new(FALSE, FALSE, sizeof(mem_mark_t));
  b->ops = g_array_new(FALSE, FALSE, sizeof(mem_op_t));
  *out = &b->base;
  (void)err;
  (void)errlen;
  return 0;
}

static void m_batch_discard(store_batch_t *bb) {
  mem_batch_t *b = (mem_batch_t *)bb;
  for (guint i = 0; i < b->marks->len; i++)
    g_bytes_unref(g_array_index(b->marks, mem_mark_t, i).key);
  g_array_set_size(b->marks, 0);
  for (guint i = 0; i < b->ops->len; i++) {
    mem_op_t *o = &g_array_index(b->ops, mem_op_t, i);
    if (o->key)
      g_bytes_unref(o->key);
    if (o->val)
      g_bytes_unref(o->val);
    g_free(o->okey);
    store_parked_free(o->park);
  }
  g_array_set_size(b->ops, 0);
}

static void m_batch_close(store_batch_t *bb) {
  mem_batch_t *b = (mem_batch_t *)bb;
  m_batch_discard(bb);
  g_array_free(b->marks, TRUE);
  g_array_free(b->ops, TRUE);
  g_free(b);
}

static int m_batch_add_mark(store_batch_t *bb, const store_mark_t *mk) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_store_t *m = mem(bb->store);
  mem_mark_t x = {key_of(mk->scope, mk->event_id, mk->event_id_len),
                  mk->handled_at_ms};
  g_array_append_val(b->marks, x);
  /* An outcome: the record's recorded calls are done with. */
  pthread_mutex_lock(&m->mu);
  g_hash_table_remove(m->attempts, x.key);
  pthread_mutex_unlock(&m->mu);
  return 0;
}

/* A durable mark (mu held). */
static void commit_mark(mem_store_t *m, const mem_mark_t *x) {
  mem_entry_t *e = g_hash_table_lookup(m->ids, x->key);
  if (!e) {
    e = g_new0(mem_entry_t, 1);
    g_hash_table_insert(m->ids, g_bytes_ref(x->key), e);
  }
  e->committed = 1;
  e->claimed = 0;
  if (x->handled > e->handled)
    e->handled = x->handled;
}

/* A durable state write or offset (mu held). */
static void commit_op(mem_store_t *m, mem_op_t *o) {
  if (o->park && o->unpark) {
    const store_parked_t *p = o->park;
    char *k = parked_key(p->scope, p->topic, p->partition, p->offset);
    g_hash_table_remove(m->parked, k);
    g_free(k);
  } else if (o->park) {
    const store_parked_t *p = o->park;
    g_hash_table_replace(
        m->parked, parked_key(p->scope, p->topic, p->partition, p->offset),
        o->park);
    o->park = NULL; /* the table's now */
  } else if (o->okey) {
    int64_t *n = g_new(int64_t, 1);
    *n = o->next;
    g_hash_table_insert(m->offsets, g_strdup(o->okey), n);
  } else if (o->val) {
    g_tree_insert(m->state, g_bytes_ref(o->key), g_bytes_ref(o->val));
  } else {
    g_tree_remove(m->state, o->key);
  }
}

static int m_batch_commit(store_batch_t *bb, int *transient, char *err,
                          size_t errlen) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_store_t *m = mem(bb->store);
  int rc = 0;
  pthread_mutex_lock(&m->mu);
  if (m->fail_commits > 0) {
    m->fail_commits--;
    if (transient)
      *transient = m->fail_transient;
    snprintf(err, errlen, "memory store: commit refused (as asked)");
    rc = -1;
  } else {
    for (guint i = 0; i < b->marks->len; i++)
      commit_mark(m, &g_array_index(b->marks, mem_mark_t, i));
    for (guint i = 0; i < b->ops->len; i++)
      commit_op(m, &g_array_index(b->ops, mem_op_t, i));
  }
  pthread_mutex_unlock(&m->mu);
  if (rc == 0)
    m_batch_discard(bb);
  return rc;
}

static gboolean older(gpointer key, gpointer value, gpointer cutoff) {
  const mem_entry_t *e = value;
  (void)key;
  return e->committed && !e->claimed && e->handled < *(int64_t *)cutoff;
}

/* Retention is the caller's: now_ms is the cutoff itself here. */
static int m_prune(store_t *s, int64_t now_ms, int64_t *removed, char *err,
                   size_t errlen) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  guint n = g_hash_table_foreach_remove(m->ids, older, &now_ms);
  m->pruned += n;
  m->prune_runs++;
  pthread_mutex_unlock(&m->mu);
  if (removed)
    *removed = n;
  (void)err;
  (void)errlen;
  return 0;
}

static int m_replay_ranges(store_t *s, uint32_t scope, const char *topic,
                           int32_t partition, store_range_t **out, size_t *n,
                           char *err, size_t errlen) {
  mem_store_t *m = mem(s);
  *out = NULL;
  *n = 0;
  pthread_mutex_lock(&m->mu);
  for (guint i = m->ranges->len; i-- > 0;) { /* newest first */
    const mem_range_t *r = m->ranges->pdata[i];
    if (r->scope != scope || r->partition != partition ||
        strcmp(r->topic, topic) != 0)
      continue;
    *out = realloc(*out, (*n + 1) * sizeof(**out));
    (*out)[(*n)++] = r->r;
  }
  pthread_mutex_unlock(&m->mu);
  (void)err;
  (void)errlen;
  return 0;
}

static int m_attempts(store_t *s, const store_attempt_t *a, uint32_t budget,
                      uint32_t *count) {
  mem_store_t *m = mem(s);
  GBytes *k = key_of(a->scope, a->event_id, a->event_id_len);
  char *part = g_strdup_printf("%u/%s/%d", a->scope, a->topic, a->partition);
  int record;
  pthread_mutex_lock(&m->mu);
  *count = GPOINTER_TO_UINT(g_hash_table_lookup(m->attempts, k));
  record = *count > 0;
  if (!record && m->unclean) {
    guint firsts = GPOINTER_TO_UINT(g_hash_table_lookup(m->firsts, part));
    record = firsts < budget;
    g_hash_table_replace(m->firsts, part, GUINT_TO_POINTER(firsts + 1));
    part = NULL;
  }
  pthread_mutex_unlock(&m->mu);
  g_free(part);
  g_bytes_unref(k);
  return record;
}

static int m_attempts_set(store_batch_t *b, const store_attempt_t *a, char *err,
                          size_t errlen) {
  mem_store_t *m = mem(b->store);
  GBytes *k = key_of(a->scope, a->event_id, a->event_id_len);
  pthread_mutex_lock(&m->mu);
  if (a->attempts == 0)
    g_hash_table_remove(m->attempts, k);
  else
    g_hash_table_replace(m->attempts, g_bytes_ref(k),
                         GUINT_TO_POINTER(a->attempts));
  pthread_mutex_unlock(&m->mu);
  g_bytes_unref(k);
  (void)err;
  (void)errlen;
  return 0;
}

static void m_stats(store_t *s, store_stats_t *out) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  out->ids = g_hash_table_size(m->ids);
  out->pruned = m->pruned;
  out->prune_runs = m->prune_runs;
  pthread_mutex_unlock(&m->mu);
}

/* Nothing survives close: there is no history to compare with. */
static int m_history_check_due(store_t *s, uint32_t scope) {
  (void)s;
  (void)scope;
  return 0;
}

/* ------------------------------------------------------------- state */

static int bytes_cmp(gconstpointer a, gconstpointer b, gpointer unused) {
  (void)unused;
  return g_bytes_compare(a, b);
}

static char *offset_key(uint32_t scope, const char *topic, int32_t partition) {
  return g_strdup_printf("%u/%s/%d", scope, topic, partition);
}

static int m_put_state(store_batch_t *bb, uint32_t scope, const void *key,
                       size_t klen, const void *val, size_t vlen) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_op_t o = {.key = key_of(scope, key, klen), .val = g_bytes_new(val, vlen)};
  g_array_append_val(b->ops, o);
  return 0;
}

static int m_del_state(store_batch_t *bb, uint32_t scope, const void *key,
                       size_t klen) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_op_t o = {.key = key_of(scope, key, klen)};
  g_array_append_val(b->ops, o);
  return 0;
}

static int m_set_offset(store_batch_t *bb, uint32_t scope, const char *topic,
                        int32_t partition, int64_t next) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_op_t o = {.okey = offset_key(scope, topic, partition), .next = next};
  g_array_append_val(b->ops, o);
  return 0;
}

static int m_park(store_batch_t *bb, const store_parked_t *p) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_op_t o = {.park = store_parked_dup(p)};
  g_array_append_val(b->ops, o);
  return 0;
}

static int m_unpark(store_batch_t *bb, const store_parked_t *p) {
  mem_batch_t *b = (mem_batch_t *)bb;
  mem_op_t o = {.park = store_parked_dup(p), .unpark = 1};
  g_array_append_val(b->ops, o);
  return 0;
}

static int passes(const store_parked_t *p, uint32_t scope,
                  const store_parked_filter_t *f) {
  return p->scope == scope && (!f->topic || strcmp(p->topic, f->topic) == 0) &&
         (f->partition < 0 || p->partition == f->partition) &&
         (f->offset < 0 || p->offset == f->offset);
}

static gint parked_cmp(gconstpointer a, gconstpointer b) {
  const store_parked_t *x = *(store_parked_t *const *)a;
  const store_parked_t *y = *(store_parked_t *const *)b;
  int t = strcmp(x->topic, y->topic);
  if (t != 0)
    return t;
  if (x->partition != y->partition)
    return x->partition < y->partition ? -1 : 1;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int m_parked_list(store_t *s, uint32_t scope,
                         const store_parked_filter_t *f, store_parked_t ***out,
                         size_t *n, char *err, size_t errlen) {
  mem_store_t *m = mem(s);
  GPtrArray *v = g_ptr_array_new();
  GHashTableIter it;
  gpointer x;
  (void)err, (void)errlen;
  pthread_mutex_lock(&m->mu);
  g_hash_table_iter_init(&it, m->parked);
  while (g_hash_table_iter_next(&it, NULL, &x))
    if (passes(x, scope, f))
      g_ptr_array_add(v, store_parked_dup(x));
  pthread_mutex_unlock(&m->mu);
  g_ptr_array_sort(v, parked_cmp);
  *n = v->len;
  *out = (store_parked_t **)g_ptr_array_free(v, FALSE);
  return 0;
}

static int m_parked_remove(store_t *s, const store_parked_t *p, int *removed,
                           char *err, size_t errlen) {
  mem_store_t *m = mem(s);
  char *k = parked_key(p->scope, p->topic, p->partition, p->offset);
  (void)err, (void)errlen;
  pthread_mutex_lock(&m->mu);
  *removed = g_hash_table_remove(m->parked, k);
  pthread_mutex_unlock(&m->mu);
  g_free(k);
  return 0;
}

static int m_state_get(store_t *s, uint32_t scope, const void *key, size_t klen,
                       void **val, size_t *vlen, char *err, size_t errlen) {
  mem_store_t *m = mem(s);
  GBytes *k = key_of(scope, key, klen);
  int rc = 0;
  (void)err;
  (void)errlen;
  *val = NULL;
  *vlen = 0;
  pthread_mutex_lock(&m->mu);
  GBytes *v = g_tree_lookup(m->state, k);
  if (v) {
    gsize n;
    const void *d = g_bytes_get_data(v, &n);
    *val = n ? g_memdup2(d, n) : NULL;
    *vlen = n;
    rc = 1;
  }
  pthread_mutex_unlock(&m->mu);
  g_bytes_unref(k);
  return rc;
}

typedef struct scan_ctx {
  GBytes *prefix;  /* (scope, prefix) */
  GPtrArray *hits; /* key, value, key, value ... (refs) */
} scan_ctx_t;

static int has_prefix(GBytes *key, GBytes *prefix) {
  gsize pl, kl;
  const guint8 *p = g_bytes_get_data(prefix, &pl);
  const guint8 *k = g_bytes_get_data(key, &kl);
  return kl >= pl && memcmp(k, p, pl) == 0;
}

static gboolean scan_one(gpointer key, gpointer val, gpointer arg) {
  scan_ctx_t *c = arg;
  if (has_prefix(key, c->prefix)) {
    g_ptr_array_add(c->hits, g_bytes_ref(key));
    g_ptr_array_add(c->hits, g_bytes_ref(val));
  }
  return FALSE;
}

/* The hits are gathered under mu and handed to fn after, so that fn may
 * read the store again. */
static int m_state_scan(store_t *s, uint32_t scope, const void *prefix,
                        size_t plen, store_state_fn fn, void *arg, char *err,
                        size_t errlen) {
  mem_store_t *m = mem(s);
  scan_ctx_t c = {
      key_of(scope, prefix, plen),
      g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref)};
  int rc = 0;
  (void)err;
  (void)errlen;
  pthread_mutex_lock(&m->mu);
  g_tree_foreach(m->state, scan_one, &c);
  pthread_mutex_unlock(&m->mu);
  for (guint i = 0; rc == 0 && i < c.hits->len; i += 2) {
    gsize kl, vl;
    const guint8 *k = g_bytes_get_data(c.hits->pdata[i], &kl);
    const void *v = g_bytes_get_data(c.hits->pdata[i + 1], &vl);
    rc = fn(arg, k + sizeof(scope), kl - sizeof(scope), v, vl);
  }
  g_ptr_array_free(c.hits, TRUE);
  g_bytes_unref(c.prefix);
  return rc;
}

/* Keys only: the tree cannot change while it is walked. */
static gboolean collect_key(gpointer key, gpointer val, gpointer arg) {
  scan_ctx_t *c = arg;
  (void)val;
  if (has_prefix(key, c->prefix))
    g_ptr_array_add(c->hits, g_bytes_ref(key));
  return FALSE;
}

static int m_state_reset(store_t *s, uint32_t scope, int64_t *removed,
                         char *err, size_t errlen) {
  mem_store_t *m = mem(s);
  scan_ctx_t c = {key_of(scope, NULL, 0), g_ptr_array_new()};
  (void)err;
  (void)errlen;
  pthread_mutex_lock(&m->mu);
  g_tree_foreach(m->state, collect_key, &c);
  for (guint i = 0; i < c.hits->len; i++) {
    GBytes *k = c.hits->pdata[i];
    g_tree_remove(m->state, k); /* drops the tree's ref */
    g_bytes_unref(k);           /* and ours */
  }
  pthread_mutex_unlock(&m->mu);
  if (removed)
    *removed = c.hits->len;
  g_ptr_array_free(c.hits, TRUE);
  g_bytes_unref(c.prefix);
  return 0;
}

static int m_offset_get(store_t *s, uint32_t scope, const char *topic,
                        int32_t partition, int64_t *next, char *err,
                        size_t errlen) {
  mem_store_t *m = mem(s);
  char *k = offset_key(scope, topic, partition);
  int rc = 0;
  (void)err;
  (void)errlen;
  pthread_mutex_lock(&m->mu);
  const int64_t *n = g_hash_table_lookup(m->offsets, k);
  if (n) {
    *next = *n;
    rc = 1;
  }
  pthread_mutex_unlock(&m->mu);
  g_free(k);
  return rc;
}

static const store_ops_t mem_ops = {
    .name = "memory",
    .close = m_close,
    .scope = m_scope,
    .claim = m_claim,
    .release = m_release,
    .prefetch = m_prefetch,
    .batch_open = m_batch_open,
    .batch_close = m_batch_close,
    .batch_add_mark = m_batch_add_mark,
    .batch_commit = m_batch_commit,
    .batch_discard = m_batch_discard,
    .prune = m_prune,
    .replay_ranges = m_replay_ranges,
    .attempts = m_attempts,
    .attempts_set = m_attempts_set,
    .stats = m_stats,
    .history_check_due = m_history_check_due,
    .batch_put_state = m_put_state,
    .batch_del_state = m_del_state,
    .batch_set_offset = m_set_offset,
    .state_get = m_state_get,
    .state_scan = m_state_scan,
    .state_reset = m_state_reset,
    .offset_get = m_offset_get,
    .batch_park = m_park,
    .parked_list = m_parked_list,
    .parked_remove = m_parked_remove,
    .batch_unpark = m_unpark,
};

store_t *store_mem_new(void) {
  mem_store_t *m = g_new0(mem_store_t, 1);
  m->base.ops = &mem_ops;
  pthread_mutex_init(&m->mu, NULL);
  m->ids = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                 (GDestroyNotify)g_bytes_unref, g_free);
  m->attempts = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                      (GDestroyNotify)g_bytes_unref, NULL);
  m->scopes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  m->firsts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  m->ranges = g_ptr_array_new_with_free_func(range_free);
  m->state = g_tree_new_full((GCompareDataFunc)bytes_cmp, NULL,
                             (GDestroyNotify)g_bytes_unref,
                             (GDestroyNotify)g_bytes_unref);
  m->offsets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  m->parked = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                    (GDestroyNotify)store_parked_free);
  m->prefetched =
      g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
  return &m->base;
}

void store_mem_fail_commits(store_t *s, int n, int transient) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  m->fail_commits = n;
  m->fail_transient = transient;
  pthread_mutex_unlock(&m->mu);
}

void store_mem_add_range(store_t *s, uint32_t scope, const char *topic,
                         int32_t partition, const store_range_t *r) {
  mem_store_t *m = mem(s);
  mem_range_t *x = g_new0(mem_range_t, 1);
  x->scope = scope;
  x->topic = g_strdup(topic);
  x->partition = partition;
  x->r = *r;
  pthread_mutex_lock(&m->mu);
  g_ptr_array_add(m->ranges, x);
  pthread_mutex_unlock(&m->mu);
}

void store_mem_set_unclean(store_t *s, int unclean) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  m->unclean = unclean;
  pthread_mutex_unlock(&m->mu);
}

int store_mem_parked(store_t *s, const char *topic, int32_t partition,
                     int64_t offset, store_parked_t *out) {
  mem_store_t *m = mem(s);
  int found = 0;
  pthread_mutex_lock(&m->mu);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, m->parked);
  while (!found && g_hash_table_iter_next(&it, NULL, &v)) {
    const store_parked_t *p = v;
    found = p->partition == partition && p->offset == offset &&
            strcmp(p->topic, topic) == 0;
    if (found)
      *out = *p;
  }
  pthread_mutex_unlock(&m->mu);
  return found;
}

size_t store_mem_parked_count(store_t *s) {
  mem_store_t *m = mem(s);
  pthread_mutex_lock(&m->mu);
  size_t n = g_hash_table_size(m->parked);
  pthread_mutex_unlock(&m->mu);
  return n;
}
