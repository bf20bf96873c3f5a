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
#include "state_buf.h"

/* Writes not durable yet, the batch's (a delete: no value). */
typedef struct overlay {
  store_batch_t *sb; /* NULL: slot free */
  uint64_t gen;      /* higher: joined later */
  sbuf_t *buf;
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
  /* "topic\x1fpartition\x1foffset" -> writes (sbuf_t) of a failed record
   * whose mark waits (its dead-letter write flies) */
  GHashTable *held;
  pthread_mutex_t mu;
} shared_t;

struct state {
  shared_t *sh;
  int base;    /* the member's own (state_new()): frees sh */
  sbuf_t *rec; /* the record's writes */
  /* What state_read() returned last: a copy, since a batch's overlay
   * may be cleared once the lock is let go. */
  void *last;
  size_t last_cap;
};

state_t *state_new(store_t *store, uint32_t scope) {
  state_t *st = g_new0(state_t, 1);
  st->sh = g_new0(shared_t, 1);
  st->sh->store = store;
  st->sh->scope = scope;
  pthread_mutex_init(&st->sh->mu, NULL);
  st->sh->held = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                       (GDestroyNotify)sbuf_free);
  for (int i = 0; i < OVERLAYS; i++)
    st->sh->ov[i].buf = sbuf_new();
  st->base = 1;
  st->rec = sbuf_new();
  return st;
}

state_t *state_view(state_t *st) {
  state_t *v = g_new0(state_t, 1);
  v->sh = st->sh;
  v->rec = sbuf_new();
  return v;
}

void state_free(state_t *st) {
  if (!st)
    return;
  sbuf_free(st->rec);
  g_free(st->last);
  if (st->base) {
    for (int i = 0; i < OVERLAYS; i++)
      sbuf_free(st->sh->ov[i].buf);
    g_hash_table_destroy(st->sh->held);
    pthread_mutex_destroy(&st->sh->mu);
    g_free(st->sh);
  }
  g_free(st);
}

void state_record_drop(state_t *st) {
  sbuf_clear(st->rec);
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

typedef struct join {
  shared_t *sh;
  store_batch_t *sb;
  sbuf_t *to;
} join_t;

static int join_one(void *arg, uint32_t hash, const sbuf_write_t *w) {
  join_t *j = arg;
  if (w->val)
    store_batch_put_state(j->sb, j->sh->scope, w->key, w->klen, w->val,
                          w->vlen);
  else
    store_batch_del_state(j->sb, j->sh->scope, w->key, w->klen);
  sbuf_write(j->to, hash, w->key, w->klen, w->val, w->vlen, w->val == NULL);
  return 0;
}

/* Copy the writes of from into sb and its overlay (appended to the
 * overlay's arena, the key's hash kept); the caller empties from. */
static void join_writes(shared_t *sh, const sbuf_t *from, store_batch_t *sb) {
  if (sbuf_keys(from) == 0)
    return;
  pthread_mutex_lock(&sh->mu);
  overlay_t *o = overlay_of(sh, sb);
  if (!o) { /* one per batch the flow can have */
    pthread_mutex_unlock(&sh->mu);
    g_return_if_reached();
  }
  o->gen = ++sh->gen;
  join_t j = {sh, sb, o->buf};
  sbuf_each(from, join_one, &j);
  pthread_mutex_unlock(&sh->mu);
}

void state_record_join(state_t *st, store_batch_t *sb) {
  join_writes(st->sh, st->rec, sb);
  sbuf_clear(st->rec);
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
  if (sbuf_keys(st->rec) == 0) {
    g_hash_table_remove(sh->held, k);
    g_free(k);
  } else {
    g_hash_table_insert(sh->held, k, st->rec);
    st->rec = sbuf_new();
  }
  pthread_mutex_unlock(&sh->mu);
}

void state_held_join(state_t *st, const char *topic, int32_t partition,
                     int64_t offset, store_batch_t *sb) {
  shared_t *sh = st->sh;
  gpointer key = NULL, buf = NULL;
  pthread_mutex_lock(&sh->mu);
  if (g_hash_table_size(sh->held) > 0) {
    char *k = held_key(topic, partition, offset);
    g_hash_table_steal_extended(sh->held, k, &key, &buf);
    g_free(k);
  }
  pthread_mutex_unlock(&sh->mu);
  if (buf) {
    join_writes(sh, buf, sb);
    sbuf_free(buf);
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
      sbuf_clear(sh->ov[i].buf); /* one call, whatever it holds */
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

/* 1 with *w when a write not yet durable answers for the key; under
 * sh->mu (w points into a buffer the lock guards). */
static int pending_lookup(state_t *st, uint32_t hash, const void *key,
                          size_t klen, sbuf_write_t *w) {
  overlay_t *o[OVERLAYS];
  if (sbuf_get(st->rec, hash, key, klen, w))
    return 1;
  overlays_newest_first(st->sh, o);
  for (int i = 0; i < OVERLAYS; i++)
    if (o[i]->sb && sbuf_get(o[i]->buf, hash, key, klen, w))
      return 1;
  return 0;
}

/* Keep a copy of a pending value as what state_read() returned. */
static void keep_copy(state_t *st, const void *val, size_t vlen) {
  if (st->last_cap < vlen || !st->last) {
    g_free(st->last);
    st->last_cap = vlen ? vlen : 1;
    st->last = g_malloc(st->last_cap);
  }
  if (vlen)
    memcpy(st->last, val, vlen);
}

int state_read(state_t *st, const void *key, size_t klen, const void **val,
               size_t *vlen, char *err, size_t errlen) {
  uint32_t hash = sbuf_hash(key, klen);
  sbuf_write_t w;
  /* No overlay answering means every write of the key is durable (a
   * batch's overlay goes only once the store has its writes): the store's
   * read needs no lock. */
  pthread_mutex_lock(&st->sh->mu);
  int pending = pending_lookup(st, hash, key, klen, &w);
  if (pending && w.val)
    keep_copy(st, w.val, w.vlen);
  pthread_mutex_unlock(&st->sh->mu);
  if (pending) {
    if (!w.val)
      return 0; /* deleted, not durable yet */
    *val = st->last;
    *vlen = w.vlen;
    return 1;
  }
  void *data = NULL;
  size_t n = 0;
  int rc = store_state_get(st->sh->store, st->sh->scope, key, klen, &data, &n,
                           err, errlen);
  if (rc == 1) {
    g_free(st->last);
    st->last = data ? data : g_malloc(1);
    st->last_cap = data ? n : 1;
    *val = st->last;
    *vlen = n;
  }
  return rc;
}

void state_put(state_t *st, const void *key, size_t klen, const void *val,
               size_t vlen) {
  sbuf_write(st->rec, sbuf_hash(key, klen), key, klen, val, vlen, 0);
}

void state_del(state_t *st, const void *key, size_t klen) {
  sbuf_write(st->rec, sbuf_hash(key, klen), key, klen, NULL, 0, 1);
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

static int lay_one(void *arg, uint32_t hash, const sbuf_write_t *w) {
  scan_t *s = arg;
  (void)hash;
  if (w->klen < s->plen || (s->plen && memcmp(w->key, s->prefix, s->plen) != 0))
    return 0;
  GBytes *k = g_bytes_new(w->key, w->klen);
  if (w->val)
    g_tree_insert(s->t, k, g_bytes_new(w->val, w->vlen));
  else {
    g_tree_remove(s->t, k);
    g_bytes_unref(k);
  }
  return 0;
}

/* Lay the writes of b that match the prefix over the tree. */
static void lay_over(scan_t *s, const sbuf_t *b) {
  sbuf_each(b, lay_one, s);
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
        lay_over(&s, o[i]->buf);
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
