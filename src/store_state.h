/*
 * Plugin state and stored offsets in the SQLite file (store_sqlite.c):
 * the two tables, a batch's buffer of their writes, which the batch's
 * commit writes inside the same transaction as its dedup marks
 * (dedup_writer_commit_with()), and the reads of what is durable.
 *
 * Tables (schema version 7; also created at open when absent):
 *   state(scope, key BLOB, value BLOB, PRIMARY KEY(scope, key))
 *   offsets(scope, topic, partition, next, PRIMARY KEY(...))
 * both WITHOUT ROWID: looked up and scanned by their keys only, and
 *   state_log(seq, data)
 * where a batch's state writes go, one row per batch (store_state_log.h).
 * A fold thread (started by the first batch applied) folds the log into
 * the state table, off the batches' way, once 256 batches were logged,
 * the writes pass a bound (keys, bytes) or 5 s after the last fold; until
 * then an overlay in memory answers reads of them. Opening folds what a crash
 * left in the log, closing what is left: nothing is applied twice or lost.
 *
 * Threads: an sstate_t is thread-safe (one read connection under a
 * mutex, a fold thread with a connection of its own); a buffer belongs
 * to its batch's thread.
 */
#ifndef KHOST_STORE_STATE_H
#define KHOST_STORE_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The three tables (CREATE ... IF NOT EXISTS). */
extern const char *const sstate_schema_sql;

typedef struct sstate sstate_t;
typedef struct sstate_buf sstate_buf_t;

int sstate_open(sstate_t **out, const char *path, int busy_ms, char *err,
                size_t errlen);
void sstate_close(sstate_t *st);

sstate_buf_t *sstate_buf_new(void);
void sstate_buf_free(sstate_buf_t *b);
void sstate_buf_clear(sstate_buf_t *b);
size_t sstate_buf_len(const sstate_buf_t *b);
/* A put, or with is_del a delete (val ignored), of one key (copied). */
void sstate_buf_put(sstate_buf_t *b, uint32_t scope, const void *key,
                    size_t klen, const void *val, size_t vlen, int is_del);
void sstate_buf_offset(sstate_buf_t *b, uint32_t scope, const char *topic,
                       int32_t partition, int64_t next);
/* Write the buffer on db (inside the caller's transaction): an SQLite
 * result code. arg is the sstate_buf_t. Of the puts and deletes of one
 * key only the last one is written, in key order, into one row of the
 * log; the offsets into their table. The buffer keeps its statements on
 * db for the next write: free it (sstate_buf_free()) before db is
 * closed. */
struct sqlite3;
int sstate_buf_write(struct sqlite3 *db, void *arg);
/* The transaction of sstate_buf_write() committed: its writes join st's
 * overlay until a fold has them in the table. Before the buffer is
 * cleared. */
void sstate_buf_applied(sstate_t *st, const sstate_buf_t *b);

/* As store.h's state_get, state_scan, state_reset and offset_get. */
int sstate_get(sstate_t *st, uint32_t scope, const void *key, size_t klen,
               void **val, size_t *vlen, char *err, size_t errlen);
int sstate_scan(sstate_t *st, uint32_t scope, const void *prefix, size_t plen,
                store_state_fn fn, void *arg, char *err, size_t errlen);
int sstate_reset(sstate_t *st, uint32_t scope, int64_t *removed, char *err,
                 size_t errlen);
int sstate_offset_get(sstate_t *st, uint32_t scope, const char *topic,
                      int32_t partition, int64_t *next, char *err,
                      size_t errlen);

/* For `khost state`: the scope of a pipeline name (1; 0 when the file
 * has none), and the keys and bytes (keys and values) of a scope. */
int sstate_scope(sstate_t *st, const char *pipeline, uint32_t *scope, char *err,
                 size_t errlen);
int sstate_stats(sstate_t *st, uint32_t scope, int64_t *keys, int64_t *bytes,
                 char *err, size_t errlen);

#endif
