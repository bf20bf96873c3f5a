/*
 * Host-managed plugin state of one member (see state.h): a buffer of the
 * record being handled, an overlay per store batch not yet durable, the
 * store below them.
 */
#include "state.h"

#include <glib.h>
#include <pthread.h>
#include <string.h>

#include "flow.h"

/* Writes not durable yet: key -> value, or NULL for a delete. */
typedef struct overlay {
  store_batch_t *sb; /* NULL: slot free */
  uint64_t gen;      /* higher: joined later */
  GHashTable *kv;
} overlay_t;

/* The flow core's batches: the one filling and those in the air. */
#define OVERLAYS (1 + FLOW_AIR_MAX)

/* What every view of a member's state shares: the overlays, under mu
 * (workers read them while the member's thread joins and ends batches). */
typedef struct shared {
  store_t *store;
  uint32_t scope;
  overlay_t ov[OVERLAYS];
  uint64_t gen;
  /* "topic\x1fpartition\x1foffset" -> writes of a failed record whose
   * mark waits (its dead-letter write flies) */
  GHashTable *held;
  pthread_mutex_t mu;
} shared_t;

struct state {
  shared_t *sh;
  int base;        /* the member's own (state_new()): frees sh */
  GHashTable *rec; /* the record's writes */
  GBytes *last;    /* what state_read() returned last */
};

static GHashTable *kv_new(void) {
  return g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                               (GDestroyNotify)g_bytes_unref,
                               (GDestroyNotify)g_bytes_unref);
}

state_t *state_new(store_t *store, uint32_t scope) {
  state_t *st = g_new0(state_t, 1);
  st->sh = g_new0(shared_t, 1);
  st->sh->store = store;
  st->sh->scope = scope;
  pthread_mutex_init(&st->sh->mu, NULL);
  st->sh->held = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                       (GDestroyNotify)g_hash_table_unref);
  for (int i = 0; i < OVERLAYS; i++)
    st->sh->ov[i].kv = kv_new();
  st->base = 1;
  st->rec = kv_new();
  return st;
}

state_t *state_view(state_t *st) {
  state_t *v = g_new0(state_t, 1);
  v->sh = st->sh;
  v->rec = kv_new();
  return v;
}

void state_free(state_t *st) {
  if (!st)
    return;
  g_hash_table_destroy(st->rec);
  if (st->last)
    g_bytes_unref(st->last);
  if (st->base) {
    for (int i = 0; i < OVERLAYS; i++)
      g_hash_table_destroy(st->sh->ov[i].kv);
    g_hash_table_destroy(st->sh->held);
    pthread_mutex_destroy(&st->sh->mu);
    g_free(st->sh);
  }
  g_free(st);
}

void state_record_drop(state_t *st) {
  g_hash_table_remove_all(st->rec);
}

static overlay_t *overlay_of(shared_t *sh, store_batch_t *sb) {
  overlay_t *free_slot = NULL;
  for (int i = 0; i < OVERLAYS; i++) {
    if (sh->ov[i].sb == sb)
      return &sh->ov[i];
    if (!sh->ov[i].sb && !free_slot)
      free_slot = &sh->ov[i];
  }
  if (free_slot)
    free_slot->sb = sb;
  return free_slot;
}

/* Move the writes of kv into sb and its overlay; kv is left empty. */
static void join_writes(shared_t *sh, GHashTable *kv, store_batch_t *sb) {
  GHashTableIter it;
  gpointer k, v;
  if (g_hash_table_size(kv) == 0)
    return;
  pthread_mutex_lock(&sh->mu);
  overlay_t *o = overlay_of(sh, sb);
  if (!o) { /* one per batch the flow can have */
    pthread_mutex_unlock(&sh->mu);
    g_return_if_reached();
  }
  o->gen = ++sh->gen;
  g_hash_table_iter_init(&it, kv);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    gsize kl, vl = 0;
    const void *kd = g_bytes_get_data(k, &kl);
    const void *vd = v ? g_bytes_get_data(v, &vl) : NULL;
    if (v)
      store_batch_put_state(sb, sh->scope, kd, kl, vd, vl);
    else
      store_batch_del_state(sb, sh->scope, kd, kl);
    /* Moved, not copied: the overlay takes the record's references. */
    g_hash_table_iter_steal(&it);
    g_hash_table_insert(o->kv, k, v);
  }
  pthread_mutex_unlock(&sh->mu);
}

void state_record_join(state_t *st, store_batch_t *sb) {
  join_writes(st->sh, st->rec, sb);
}

static char *held_key(const char *topic, int32_t partition, int64_t offset) {
  return g_strdup_printf("%s\x1f%" G_GINT32_FORMAT "\x1f%" G_GINT64_FORMAT,
                         topic, partition, offset);
}

void state_record_hold(state_t *st, const char *topic, int32_t partition,
                       int64_t offset) {
  shared_t *sh = st->sh;
  char *k = held_key(topic, partition, offset);
  pthread_mutex_lock(&sh->mu);
  if (g_hash_table_size(st->rec) == 0) {
    g_hash_table_remove(sh->held, k);
    g_free(k);
  } else {
    g_hash_table_insert(sh->held, k, st->rec);
    st->rec = kv_new();
  }
  pthread_mutex_unlock(&sh->mu);
}

void state_held_join(state_t *st, const char *topic, int32_t partition,
                     int64_t offset, store_batch_t *sb) {
  shared_t *sh = st->sh;
  gpointer key = NULL, kv = NULL;
  pthread_mutex_lock(&sh->mu);
  if (g_hash_table_size(sh->held) > 0) {
    char *k = held_key(topic, partition, offset);
    g_hash_table_steal_extended(sh->held, k, &key, &kv);
    g_free(k);
  }
  pthread_mutex_unlock(&sh->mu);
  if (kv) {
    join_writes(sh, kv, sb);
    g_hash_table_unref(kv);
  }
  g_free(key);
}

void state_held_drop(state_t *st, const char *topic, int32_t partition,
                     int64_t offset) {
  shared_t *sh = st->sh;
  pthread_mutex_lock(&sh->mu);
  /* Every record calls this: no key built for nothing. */
  if (g_hash_table_size(sh->held) > 0) {
    char *k = held_key(topic, partition, offset);
    g_hash_table_remove(sh->held, k);
    g_free(k);
  }
  pthread_mutex_unlock(&sh->mu);
}

void state_held_drop_partition(state_t *st, const char *topic,
                               int32_t partition) {
  shared_t *sh = st->sh;
  GHashTableIter it;
  gpointer k;
  char *prefix =
      g_strdup_printf("%s\x1f%" G_GINT32_FORMAT "\x1f", topic, partition);
  pthread_mutex_lock(&sh->mu);
  g_hash_table_iter_init(&it, sh->held);
  while (g_hash_table_iter_next(&it, &k, NULL))
    if (g_str_has_prefix(k, prefix))
      g_hash_table_iter_remove(&it);
  pthread_mutex_unlock(&sh->mu);
  g_free(prefix);
}

void state_batch_end(state_t *st, store_batch_t *sb) {
  shared_t *sh = st->sh;
  pthread_mutex_lock(&sh->mu);
  for (int i = 0; i < OVERLAYS; i++) {
    if (sh->ov[i].sb == sb) {
      g_hash_table_remove_all(sh->ov[i].kv);
      sh->ov[i].sb = NULL;
    }
  }
  pthread_mutex_unlock(&sh->mu);
}

/* The overlays, newest first; under sh->mu. */
static void overlays_newest_first(shared_t *sh, overlay_t **out) {
  for (int i = 0; i < OVERLAYS; i++) {
    int j = i;
    for (; j > 0 && out[j - 1]->gen < sh->ov[i].gen; j--)
      out[j] = out[j - 1];
    out[j] = &sh->ov[i];
  }
}

/* 1 with *v (a ref, NULL for a delete) when a write not yet durable
 * answers for k; under sh->mu. */
static int pending_lookup(state_t *st, GBytes *k, GBytes **v) {
  overlay_t *o[OVERLAYS];
  gpointer found;
  if (g_hash_table_lookup_extended(st->rec, k, NULL, &found))
    goto hit;
  overlays_newest_first(st->sh, o);
  for (int i = 0; i < OVERLAYS; i++)
    if (o[i]->sb && g_hash_table_lookup_extended(o[i]->kv, k, NULL, &found))
      goto hit;
  return 0;
hit:
  *v = found ? g_bytes_ref(found) : NULL;
  return 1;
}

int state_read(state_t *st, const void *key, size_t klen, const void **val,
               size_t *vlen, char *err, size_t errlen) {
  GBytes *k = g_bytes_new(key, klen), *v = NULL;
  int rc = 1;
  if (st->last)
    g_bytes_unref(st->last);
  st->last = NULL;
  /* No overlay answering means every write of k is durable (a batch's
   * overlay goes only once the store has its writes): the store's read
   * needs no lock. */
  pthread_mutex_lock(&st->sh->mu);
  int pending = pending_lookup(st, k, &v);
  pthread_mutex_unlock(&st->sh->mu);
  if (!pending) {
    void *data = NULL;
    size_t n = 0;
    rc = store_state_get(st->sh->store, st->sh->scope, key, klen, &data, &n,
                         err, errlen);
    if (rc == 1)
      v = g_bytes_new_take(data, n);
  }
  if (rc == 1 && !v)
    rc = 0; /* deleted, not durable yet */
  if (rc == 1) {
    st->last = v;
    *val = g_bytes_get_data(v, vlen);
    if (!*val)
      *val = "";
  }
  g_bytes_unref(k);
  return rc;
}

void state_put(state_t *st, const void *key, size_t klen, const void *val,
               size_t vlen) {
  g_hash_table_insert(st->rec, g_bytes_new(key, klen), g_bytes_new(val, vlen));
}

void state_del(state_t *st, const void *key, size_t klen) {
  g_hash_table_insert(st->rec, g_bytes_new(key, klen), NULL);
}

/* ------------------------------------------------------------- scans */

typedef struct scan {
  GTree *t; /* GBytes key -> GBytes value */
  const guint8 *prefix;
  size_t plen;
} scan_t;

static int keep_row(void *arg, const void *k, size_t kl, const void *v,
                    size_t vl) {
  scan_t *s = arg;
  g_tree_insert(s->t, g_bytes_new(k, kl), g_bytes_new(v, vl));
  return 0;
}

/* Lay the writes of kv that match the prefix over the tree. */
static void lay_over(scan_t *s, GHashTable *kv) {
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, kv);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    gsize kl;
    const guint8 *kd = g_bytes_get_data(k, &kl);
    if (kl < s->plen || (s->plen && memcmp(kd, s->prefix, s->plen) != 0))
      continue;
    if (v)
      g_tree_insert(s->t, g_bytes_ref(k), g_bytes_ref(v));
    else
      g_tree_remove(s->t, k);
  }
}

static gint bytes_cmp(gconstpointer a, gconstpointer b, gpointer unused) {
  (void)unused;
  return g_bytes_compare(a, b);
}

typedef struct walk {
  store_state_fn fn;
  void *arg;
  int rc;
} walk_t;

static gboolean walk_one(gpointer k, gpointer v, gpointer arg) {
  walk_t *w = arg;
  gsize kl, vl;
  const void *kd = g_bytes_get_data(k, &kl);
  const void *vd = g_bytes_get_data(v, &vl);
  w->rc = w->fn(w->arg, kd, kl, vd ? vd : "", vl);
  return w->rc != 0;
}

int state_read_prefix(state_t *st, const void *prefix, size_t plen,
                      store_state_fn fn, void *arg, char *err, size_t errlen) {
  scan_t s = {g_tree_new_full(bytes_cmp, NULL, (GDestroyNotify)g_bytes_unref,
                              (GDestroyNotify)g_bytes_unref),
              prefix, plen};
  walk_t w = {fn, arg, 0};
  overlay_t *o[OVERLAYS];
  /* Held over the store's scan: a batch landing between the scan and the
   * overlays would be in neither. */
  pthread_mutex_lock(&st->sh->mu);
  int rc = store_state_scan(st->sh->store, st->sh->scope, prefix, plen,
                            keep_row, &s, err, errlen);
  if (rc == 0) {
    overlays_newest_first(st->sh, o);
    for (int i = OVERLAYS - 1; i >= 0; i--)
      if (o[i]->sb)
        lay_over(&s, o[i]->kv);
  }
  pthread_mutex_unlock(&st->sh->mu);
  if (rc == 0) {
    lay_over(&s, st->rec);
    /* fn may write: the tree is the scan's own copy. */
    g_tree_foreach(s.t, walk_one, &w);
    rc = w.rc;
  }
  g_tree_destroy(s.t);
  return rc;
}
