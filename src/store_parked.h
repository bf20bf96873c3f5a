/*
 * The parking lot in the SQLite file: records that failed for good while
 * no dead-letter topic was set (store.h, store_parked_t), one row per
 * (pipeline, topic, partition, offset), written in the transaction of the
 * batch's marks. The table is created by the schema step of version 4
 * (dedup.c runs sparked_schema_sql); retention never touches it.
 *
 * Threads: a buffer belongs to its batch's thread.
 */
#ifndef KHOST_STORE_PARKED_H
#define KHOST_STORE_PARKED_H

#include <sqlite3.h>
#include <stddef.h>

#include "store.h"

/* The parked table (CREATE ... IF NOT EXISTS). */
extern const char *const sparked_schema_sql;

/* A copy of p with copies of everything it points to, and its end. */
store_parked_t *store_parked_dup(const store_parked_t *p);
void store_parked_free(store_parked_t *p);

/* A batch's parked records until its commit. */
typedef struct sparked_buf sparked_buf_t;
sparked_buf_t *sparked_buf_new(void);
void sparked_buf_free(sparked_buf_t *b);
void sparked_buf_add(sparked_buf_t *b, const store_parked_t *p);
/* The removal of p's row (scope, topic, partition, offset). */
void sparked_buf_remove(sparked_buf_t *b, const store_parked_t *p);
size_t sparked_buf_len(const sparked_buf_t *b);
void sparked_buf_clear(sparked_buf_t *b);
/* Write them inside the caller's transaction on db, the removals first:
 * an SQLite code. A record parked again replaces its row (the newest
 * reason). */
int sparked_buf_write(sqlite3 *db, void *arg);

#endif
