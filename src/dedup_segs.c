/*
 * The dedup store's segment list: see dedup_segs.h.
 */
#include "dedup_segs.h"

#include <glib.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>

#include "dedup_log.h"
#include "id_hash.h"

struct dsegs {
  char *path;
  pthread_rwlock_t lock; /* segs, next_id */
  GPtrArray *segs;       /* dseg_t, oldest first */
  int64_t next_id;
  int count;               /* segs->len, read without the lock */
  pthread_mutex_t db_lock; /* db, block_st */
  sqlite3 *db;
  sqlite3_stmt *block_st; /* the lookups' block read, kept */
};

int dsegs_open(dsegs_t **out, sqlite3 *db, const char *path, int lazy,
               char *err, size_t errlen) {
  dsegs_t *l = g_new0(dsegs_t, 1);
  int64_t *ids = NULL;
  size_t n = 0;
  int rc = -1;
  l->path = g_strdup(path);
  l->db = db;
  l->segs = g_ptr_array_new_with_free_func((GDestroyNotify)dseg_free);
  l->next_id = 1;
  pthread_rwlock_init(&l->lock, NULL);
  pthread_mutex_init(&l->db_lock, NULL);
  if (dseg_list(db, path, &ids, &n, err, errlen) < 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    dseg_t *g;
    if ((lazy ? dseg_load_meta(db, path, ids[i], &g, err, errlen)
              : dseg_load(db, path, ids[i], &g, err, errlen)) < 0)
      goto out;
    dsegs_add(l, g);
  }
  rc = 0;
out:
  g_free(ids);
  if (rc < 0) {
    dsegs_free(l);
    l = NULL;
  }
  *out = l;
  return rc;
}

void dsegs_free(dsegs_t *l) {
  if (!l)
    return;
  g_ptr_array_free(l->segs, TRUE);
  sqlite3_finalize(l->block_st);
  sqlite3_close(l->db);
  pthread_rwlock_destroy(&l->lock);
  pthread_mutex_destroy(&l->db_lock);
  g_free(l->path);
  g_free(l);
}

int dsegs_find(dsegs_t *l, uint32_t scope, const void *id, size_t len,
               uint64_t hash, int64_t *tag, int64_t *ms, char *err,
               size_t errlen) {
  int r = 0;
  /* No segment (a store below its memory budget): no hash, no lock. */
  if (__atomic_load_n(&l->count, __ATOMIC_ACQUIRE) == 0)
    return 0;
  hash = id_hash_or(hash, scope, id, len);
  *tag = INT64_MIN;
  *ms = INT64_MIN;
  pthread_rwlock_rdlock(&l->lock);
  /* Each filter costs a cache miss: asked for all at once, the misses
   * overlap instead of adding up. */
  for (guint i = 0; i < l->segs->len; i++)
    dseg_prefetch(l->segs->pdata[i], hash);
  /* Every segment: an ID may be in more than one (marked again later),
   * and the newest time and tag decide. */
  for (guint i = 0; r >= 0 && i < l->segs->len; i++) {
    const dseg_t *g = l->segs->pdata[i];
    dlog_mark_t m;
    int found;
    if (!dseg_maybe(g, hash))
      continue;
    pthread_mutex_lock(&l->db_lock);
    found = dseg_lookup_mark_kept(g, l->db, &l->block_st, l->path, scope, id,
                                  len, hash, &m, err, errlen);
    pthread_mutex_unlock(&l->db_lock);
    if (found == 1) {
      dseg_info_t info;
      dseg_info(g, &info);
      *tag = info.tag > *tag ? info.tag : *tag;
      *ms = m.handled_at > *ms ? m.handled_at : *ms;
    }
    r = found < 0 ? -1 : (r | found);
  }
  pthread_rwlock_unlock(&l->lock);
  return r;
}

void dsegs_prefetch(dsegs_t *l, uint64_t hash) {
  if (__atomic_load_n(&l->count, __ATOMIC_ACQUIRE) == 0)
    return;
  pthread_rwlock_rdlock(&l->lock);
  for (guint i = 0; i < l->segs->len; i++)
    dseg_prefetch(l->segs->pdata[i], hash);
  pthread_rwlock_unlock(&l->lock);
}

int dsegs_load_next(dsegs_t *l, sqlite3 *db, char *err, size_t errlen) {
  dseg_t *g = NULL;
  int rc, filter_only = 1;
  /* Every filter first (a blob each, read in place), then the indexes (a
   * read of every block): with its filter, a segment answers most new IDs
   * without a disk read. */
  pthread_rwlock_rdlock(&l->lock);
  for (guint i = 0; !g && i < l->segs->len; i++)
    if (!dseg_has_filter(l->segs->pdata[i]))
      g = dseg_ref(l->segs->pdata[i]);
  for (guint i = 0; !g && i < l->segs->len; i++)
    if (!dseg_loaded(l->segs->pdata[i])) {
      g = dseg_ref(l->segs->pdata[i]);
      filter_only = 0;
    }
  pthread_rwlock_unlock(&l->lock);
  if (!g)
    return 0;
  /* A merge or retention may unpublish g meanwhile: the reference keeps
   * it until this load is done. */
  rc = filter_only ? dseg_load_filter(g, db, l->path, err, errlen)
                   : dseg_load_rest(g, db, l->path, err, errlen);
  dseg_free(g);
  return rc < 0 ? -1 : 1;
}

void dsegs_add(dsegs_t *l, dseg_t *g) {
  dseg_info_t info;
  dseg_info(g, &info);
  pthread_rwlock_wrlock(&l->lock);
  g_ptr_array_add(l->segs, g);
  if (info.id >= l->next_id)
    l->next_id = info.id + 1;
  __atomic_store_n(&l->count, (int)l->segs->len, __ATOMIC_RELEASE);
  pthread_rwlock_unlock(&l->lock);
}

/* A segment's tier: its size in powers of MERGE_RATIO. */
static int tier_of(uint64_t ids) {
  int t = 0;
  while (ids >= DSEGS_MERGE_RATIO) {
    ids /= DSEGS_MERGE_RATIO;
    t++;
  }
  return t;
}

size_t dsegs_pick_merge(dsegs_t *l, int64_t ids[DSEGS_MERGE_FANIN],
                        uint64_t *total, int64_t *tag, uint64_t max_ids) {
  size_t n = 0;
  if (max_ids == 0)
    max_ids = DSEGS_MERGE_MAX_IDS;
  pthread_rwlock_rdlock(&l->lock);
  for (int t = 0; n < DSEGS_MERGE_FANIN && t < 64; t++) {
    n = 0;
    *total = 0;
    *tag = INT64_MIN;
    for (guint i = 0; n < DSEGS_MERGE_FANIN && i < l->segs->len; i++) {
      dseg_info_t info;
      dseg_info(l->segs->pdata[i], &info);
      if (tier_of(info.ids) != t)
        continue;
      ids[n++] = info.id;
      *total += info.ids;
      *tag = info.tag > *tag ? info.tag : *tag;
    }
    /* Too big together: this tier and those above stay as they are. */
    if (n == DSEGS_MERGE_FANIN && *total > max_ids) {
      n = 0;
      break;
    }
  }
  pthread_rwlock_unlock(&l->lock);
  return n == DSEGS_MERGE_FANIN ? n : 0;
}

void dsegs_replace(dsegs_t *l, const int64_t *ids, size_t n, dseg_t *merged) {
  dsegs_add(l, merged);
  pthread_rwlock_wrlock(&l->lock);
  for (guint i = 0; i < l->segs->len;) {
    dseg_info_t info;
    size_t j = 0;
    dseg_info(l->segs->pdata[i], &info);
    while (j < n && ids[j] != info.id)
      j++;
    if (j < n)
      g_ptr_array_remove_index(l->segs, i);
    else
      i++;
  }
  __atomic_store_n(&l->count, (int)l->segs->len, __ATOMIC_RELEASE);
  pthread_rwlock_unlock(&l->lock);
}

int64_t dsegs_next_id(dsegs_t *l) {
  pthread_rwlock_rdlock(&l->lock);
  int64_t id = l->next_id;
  pthread_rwlock_unlock(&l->lock);
  return id;
}

size_t dsegs_take_expired(dsegs_t *l, int64_t cutoff_ms, int64_t **ids) {
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int64_t));
  pthread_rwlock_wrlock(&l->lock);
  for (guint i = 0; i < l->segs->len;) {
    dseg_info_t info;
    dseg_info(l->segs->pdata[i], &info);
    if (info.newest_ms >= cutoff_ms) {
      i++;
      continue;
    }
    g_array_append_val(out, info.id);
    g_ptr_array_remove_index(l->segs, i);
  }
  __atomic_store_n(&l->count, (int)l->segs->len, __ATOMIC_RELEASE);
  pthread_rwlock_unlock(&l->lock);
  size_t n = out->len;
  *ids = (int64_t *)g_array_free(out, FALSE);
  return n;
}

void dsegs_stats(dsegs_t *l, dsegs_stats_t *out) {
  *out = (dsegs_stats_t){0};
  pthread_rwlock_rdlock(&l->lock);
  for (guint i = 0; i < l->segs->len; i++) {
    dseg_info_t info;
    dseg_info(l->segs->pdata[i], &info);
    out->segments++;
    out->loading += !info.loaded;
    out->ids += info.ids;
    out->memory += info.memory;
  }
  pthread_rwlock_unlock(&l->lock);
}
