/*
 * What the parts of the dedup administration (dedup_admin.c, and
 * dedup_admin_segs.c for the segments) share. Private to them.
 */
#ifndef KHOST_DEDUP_ADMIN_INT_H
#define KHOST_DEDUP_ADMIN_INT_H

#include <sqlite3.h>
#include <stdint.h>

#include "dedup_admin.h"

struct dadm {
  char *path;
  sqlite3 *db;
};

/* Every mark segments hold of a scope (scope < 0: of every scope), to fn
 * with seq 0, unless forgotten since its segment was written; in the
 * caller's read transaction. */
int dadm_segs_each(dadm_t *a, int64_t scope, dadm_mark_fn fn, void *arg,
                   char *err, size_t errlen);

/* The marks segments hold of one ID (as dadm_segs_each()), found
 * through each segment's filter and block index. */
int dadm_segs_find(dadm_t *a, uint32_t scope, const void *id, size_t len,
                   dadm_mark_fn fn, void *arg, char *err, size_t errlen);

/* The segments' tables of sources to fn: marks, oldest and newest
 * handled_at per source, without reading a block. A scope forgotten whole
 * after a segment was written has nothing there; an ID forgotten alone is
 * still counted until its segment is merged or dropped. */
typedef void (*dadm_source_fn)(void *arg, uint32_t scope, int64_t marks,
                               int64_t oldest_ms, int64_t newest_ms);
int dadm_segs_count(dadm_t *a, dadm_source_fn fn, void *arg, char *err,
                    size_t errlen);

#endif
