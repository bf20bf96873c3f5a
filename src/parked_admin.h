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
/* The lot of the PostgreSQL store s (borrowed: closed by the caller, after
 * padm_close()), read and changed beside running hosts. */
padm_t *padm_of_pg(store_t *s);
/* The PostgreSQL store of padm_of_pg(), NULL for a SQLite file. */
store_t *padm_store(const padm_t *a);
void padm_close(padm_t *a);

/* The scope of a pipeline; *found = 0 when the database has never seen
 * it (then nothing of it is parked). */
int padm_scope(padm_t *a, const char *pipeline, uint32_t *scope, int *found,
               char *err, size_t errlen);

/* Which parked records: topic NULL for every topic, partition -1 for
 * every partition, offset -1 for every offset. */
typedef store_parked_filter_t padm_filter_t;

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
