/*
 * The parking lot seen by `khost parked` (store_parked.h has the table):
 * reads and deletes on a SQLite connection of its own, beside a running
 * host (WAL readers; a delete is one short write transaction), as
 * dedup_admin.h does for the marks.
 *
 * Threads: a padm_t belongs to one thread.
 */
#ifndef KHOST_PARKED_ADMIN_H
#define KHOST_PARKED_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct padm padm_t;

/* Open the database at path, which must exist; its schema is brought up
 * to date (dedup_admin.h). Errors name the path. */
int padm_open(padm_t **out, const char *path, char *err, size_t errlen);
void padm_close(padm_t *a);

/* The scope of a pipeline; *found = 0 when the database has never seen
 * it (then nothing of it is parked). */
int padm_scope(padm_t *a, const char *pipeline, uint32_t *scope, int *found,
               char *err, size_t errlen);

/* Which parked records: topic NULL for every topic, partition -1 for
 * every partition, offset -1 for every offset. */
typedef struct padm_filter {
  const char *topic;
  int32_t partition;
  int64_t offset;
} padm_filter_t;

/* The parked records of scope that pass f, by topic, partition and
 * offset; each a store_parked_t that owns its memory. */
int padm_list(padm_t *a, uint32_t scope, const padm_filter_t *f,
              store_parked_t ***out, size_t *n, char *err, size_t errlen);
void padm_list_free(store_parked_t **v, size_t n);

/* Remove one parked record (*removed: 0 when it was not there). */
int padm_remove(padm_t *a, const store_parked_t *p, int *removed, char *err,
                size_t errlen);

/* -1 with err when another connection (a running khost) has the
 * database open: it would not see what an in-process replay marks. Call
 * before anything of this process opens it. */
int padm_check_unused(const char *path, char *err, size_t errlen);

#endif
