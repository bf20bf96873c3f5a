/*
 * The log of plugin state writes in the SQLite file (schema version 7)
 * and its fold into the state table; the overlay of the writes not yet
 * folded. Used by store_state.c.
 *
 * A batch's transaction appends one row to
 *   state_log(seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB)
 * holding the batch's writes (the last one of each key, in key order),
 * packed: per write a flag byte (1: delete), the scope, the key's and the
 * value's lengths (32-bit little-endian each), the key, the value. Seqs
 * are never reused (AUTOINCREMENT), so "folded up to seq" stays true when
 * the log is emptied.
 *
 * A fold applies every row of the log to the state table (the latest
 * write of each key, in key order, deletes as deletes) and deletes the
 * rows, in one transaction: a crash leaves either the rows or their
 * effect, never both and never neither. Writing a table row costs SQLite
 * about 9,000 instructions, so writing one per batch and key change was
 * the state's cost; a fold of many batches writes each key once.
 *
 * The overlay answers reads of the writes whose rows are not folded yet:
 * per key the write of the newest seq. Not thread-safe: its owner locks.
 */
#ifndef KHOST_STORE_STATE_LOG_H
#define KHOST_STORE_STATE_LOG_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

struct sqlite3;

extern const char *const slog_schema_sql;

/* One write, as packed; key and val point into the packed bytes. */
typedef struct slog_write {
  uint32_t scope;
  int del;
  const guint8 *key, *val;
  size_t klen, vlen;
} slog_write_t;

void slog_pack(GByteArray *out, const slog_write_t *w);
/* The write at *at of the n bytes at p into *w, *at moved past it: 1; 0
 * at the end; -1 when the bytes are cut short. */
int slog_unpack(const guint8 *p, size_t n, size_t *at, slog_write_t *w);

/* Fold every row of the log on db, inside the caller's write
 * transaction; *upto: the highest seq a row was ever given (every row up
 * to it is folded once the transaction commits). An SQLite result code;
 * SQLITE_CORRUPT for a row cut short. */
int slog_fold_in(struct sqlite3 *db, int64_t *upto);
/* The same in a transaction of its own (BEGIN IMMEDIATE). */
int slog_fold(struct sqlite3 *db, int64_t *upto);

typedef struct slog_ov slog_ov_t;

/* A write in the overlay (del: a delete, val NULL). */
typedef struct slog_node {
  int64_t seq;
  uint32_t scope;
  int del;
  size_t klen, vlen;
  guint8 *key, *val;
} slog_node_t;

slog_ov_t *slog_ov_new(void);
void slog_ov_free(slog_ov_t *ov);
/* w of log row seq: it replaces the key's write when that is older. */
void slog_ov_apply(slog_ov_t *ov, const slog_write_t *w, int64_t seq);
/* Every row of the log on db (read, not folded) into ov. */
int slog_ov_load(slog_ov_t *ov, struct sqlite3 *db);
/* The writes of seq <= upto go (they are in the table). */
void slog_ov_prune(slog_ov_t *ov, int64_t upto);
const slog_node_t *slog_ov_find(slog_ov_t *ov, uint32_t scope, const void *key,
                                size_t klen);
/* The writes of scope with key from `from` (after: past it) up to `to`
 * (NULL: no bound; to_incl: with it), in key order. */
typedef void (*slog_ov_fn)(void *arg, const slog_node_t *n);
void slog_ov_range(slog_ov_t *ov, uint32_t scope, const void *from, size_t flen,
                   int after, const void *to, size_t tlen, int to_incl,
                   slog_ov_fn fn, void *arg);
size_t slog_ov_keys(const slog_ov_t *ov);
size_t slog_ov_bytes(const slog_ov_t *ov);

#endif
