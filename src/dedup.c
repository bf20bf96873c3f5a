/*
 * Dedup store. See dedup.h for the contract.
 *
 * On disk: `batches`, the log of marks: an append-only rowid table of one
 * row per batch and scope, its marks packed (dedup_log.h), plus an index
 * on each row's newest handled_at for pruning (one entry per batch, at its
 * right edge because batches arrive in time order), whose rows go once a
 * segment holds their marks (version 6); `scopes`, the
 * pipeline names; `replays`, the offset ranges `khost replay` put back in
 * front of a pipeline (a handful of rows per replay); and the segments
 * (dedup_segment.h). There is no index on the event ID: inserting random
 * keys into a large B-tree costs a dirty page per row.
 *
 * In memory: the exact set of (scope, event ID) inside the retention window
 * (dedup_set.c). This file keeps it in step with the table: IDs are added
 * as committed once their marks are durable, loaded at open, and forgotten
 * once the pruner has deleted their last mark.
 *
 * Lock order: write_lock, then SQLite's write lock, then one stripe of the
 * set (taken inside the dset_ calls).
 * write_lock queues this process's write transactions (writers, pruner,
 * new scopes) on a mutex: SQLite's own busy wait polls with sleeps of up
 * to 100 ms, which would stall members behind each other. Holding it from
 * BEGIN to after the set is updated also makes "COMMIT + publish" of a
 * writer and "COMMIT + forget" of the pruner atomic with respect to each
 * other: the set never keeps an ID whose last mark the pruner deleted.
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include "dedup.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dedup_file.h"
#include "dedup_log.h"
#include "dedup_segkey.h"
#include "dedup_segment.h"
#include "dedup_segs.h"
#include "dedup_set.h"
#include "id_hash.h"
#include "log.h"
#include "store_parked.h"
#include "store_state.h"

#define DEFAULT_BUSY_MS 10000
/* How long a start waits for another process's lock before saying so. */
#define OPEN_SAY_MS 1000
#define PRUNE_ROWS 200 /* batch rows deleted per transaction */
#define PRUNE_KEEP_BYTES ((size_t)1 << 20)

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS scopes("
    " id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);"
    /* version 2 */
    "CREATE TABLE IF NOT EXISTS replays("
    " seq INTEGER PRIMARY KEY, scope INTEGER NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, first INTEGER NOT NULL,"
    " stop INTEGER NOT NULL, mode INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS replays_partition"
    " ON replays(scope, topic, partition);"
    /* version 3: segments (dseg_schema_sql) and how far the marks went
     * into them */
    "CREATE TABLE IF NOT EXISTS segmented("
    " id INTEGER PRIMARY KEY CHECK(id = 1), last_seq INTEGER NOT NULL);"
    /* IDs (event_id NULL: a whole scope) `khost dedup forget` removed:
     * segments whose marks all come before upto_seq no longer hold them */
    "CREATE TABLE IF NOT EXISTS forgotten("
    " scope INTEGER NOT NULL, event_id BLOB, upto_seq INTEGER NOT NULL);"
    /* version 5: the log of marks, one row per batch and scope; seq goes
     * on from the marks of version 3 (segments and forgets name seqs) */
    "CREATE TABLE IF NOT EXISTS batches("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, scope INTEGER NOT NULL,"
    " first_at INTEGER NOT NULL, last_at INTEGER NOT NULL,"
    " n INTEGER NOT NULL, marks BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS batches_last_at ON batches(last_at);";

/* The oldest batches whose every mark is past the cutoff, at most
 * PRUNE_ROWS of them, with what the in-memory set needs to forget their
 * IDs. */
static const char *const prune_sql =
    "DELETE FROM batches WHERE seq IN (SELECT seq FROM batches"
    " WHERE last_at < ?1 ORDER BY last_at LIMIT " G_STRINGIFY(
        PRUNE_ROWS) ") RETURNING seq, scope, first_at, marks";

/* ------------------------------------------------------------------ store */

struct dedup_store {
  char *path;
  int64_t retention_ms;
  int64_t prune_interval_ms;
  int durability_full;
  int busy_ms;
  int opening;       /* atomic: dedup_open() is under way */
  int open_said;     /* atomic: its wait for a lock was logged */
  int open_gave_up;  /* atomic: its wait for a lock ran out */
  int64_t opened_ms; /* wall clock at open: marks before it are older runs' */
  dfile_id_t file;   /* the database file opened, by device and inode */
  int fresh;         /* the file was created (or empty) at open */
  GHashTable *history_asked; /* fresh: scopes dedup_history_check_due()
                                answered for (under db_lock) */
  dset_t *set;
  pthread_mutex_t write_lock;  /* see the lock order at the top */
  pthread_cond_t writers_done; /* with write_lock: batch commits waiting
                                  went through (seg_txn_begin()) */
  int writers_waiting;         /* batch commits waiting for write_lock */

  pthread_mutex_t db_lock; /* db: scopes */
  sqlite3 *db;

  pthread_mutex_t prune_lock; /* the prune_* fields below */
  sqlite3 *prune_db;
  sqlite3_stmt *prune_del;
  dset_keys_t *prune_keys;    /* the IDs of the batch being deleted */
  int64_t pruned, prune_runs; /* statistics, atomic */

  pthread_mutex_t stop_lock; /* stopping, stop_cond */
  pthread_cond_t stop_cond;
  int stopping;
  int has_thread;
  pthread_t thread;

  struct attempts *att; /* calls recorded before they were made (the end
                           of this file) */

  /* Segments: IDs moved out of the set to disk (segments.c below). */
  dsegs_t *segs;
  sqlite3 *seg_db;        /* segment writes and merges (under prune_lock) */
  GHashTable *forgotten;  /* GBytes (scope[, 0, ID]) -> upto_seq; read-only
                             after open */
  size_t memory_ids;      /* segment when the set holds more; 0: never */
  uint64_t merge_max_ids; /* no merged segment holds more */
  int64_t seg_mark;       /* marks with seq up to this are in segments (under
                             prune_lock) */
  int seg_due;            /* under stop_lock: the set is over its budget */
  int has_seg_thread;
  pthread_t seg_thread;
  int has_load_thread; /* loads the segments' filters and indexes */
  pthread_t load_thread;
};

_Static_assert((int)DEDUP_SEEN == (int)DSET_SEEN &&
                   (int)DEDUP_NEW == (int)DSET_NEW &&
                   (int)DEDUP_IN_FLIGHT == (int)DSET_IN_FLIGHT,
               "dedup.h and dedup_set.h answer claims alike");

/* 1 when (scope, id) was forgotten after every mark of the segment tagged
 * tag (its newest seq) was written. */
static int forgotten_since(dedup_store_t *s, uint32_t scope, const void *id,
                           size_t len, int64_t tag) {
  int hit = 0;
  if (g_hash_table_size(s->forgotten) == 0)
    return 0;
  for (int whole = 0; !hit && whole < 2; whole++) {
    GBytes *k = dkey_forgotten(scope, whole ? NULL : id, len);
    const int64_t *upto = g_hash_table_lookup(s->forgotten, k);
    hit = upto && *upto >= tag;
    g_bytes_unref(k);
  }
  return hit;
}

void dedup_prefetch(dedup_store_t *s, uint64_t hash) {
  if (s->segs)
    dsegs_prefetch(s->segs, hash);
}

/* The set claimed (scope, id) as new: the segments decide. Handled
 * before at or after before_ms there: seen (the claim goes back); a block
 * that cannot be read: in flight, never a wrong "new" (the caller waits
 * and asks again).
 *
 * The claim-again rule for IDs in segments: a segment keeps the newest
 * mark of each ID (a merge keeps the newest of its inputs'), so a claim
 * again (dedup_claim_again_before()) compares before_ms with the newest
 * time any segment has for the ID. */
static int seg_decide(dedup_store_t *s, uint32_t scope, const void *id,
                      size_t len, uint64_t hash, int64_t before_ms) {
  char err[512];
  int64_t ms = INT64_MAX, tag = 0;
  int r = dsegs_find(s->segs, scope, id, len, hash, &tag, &ms, err, sizeof err);
  if (r == 1 && forgotten_since(s, scope, id, len, tag))
    r = 0;
  if (r == 0 || (r == 1 && ms < before_ms))
    return DEDUP_NEW;
  dset_release_h(s->set, scope, id, len, hash);
  if (r == 1)
    return DEDUP_SEEN;
  log_msg(KHOST_LOG_WARNING, "dedup", "looking up an event ID: %s", err);
  return DEDUP_IN_FLIGHT;
}

int dedup_claim_h(dedup_store_t *s, uint32_t scope, const void *id, size_t len,
                  uint64_t hash, int again, int64_t before_ms) {
  hash = id_hash_or(hash, scope, id, len);
  int r = again ? dset_claim_again_h(s->set, scope, id, len, hash, before_ms)
                : dset_claim_h(s->set, scope, id, len, hash);
  if (r != DSET_NEW)
    return r;
  return seg_decide(s, scope, id, len, hash, again ? before_ms : INT64_MIN);
}

int dedup_claim_ref(dedup_store_t *s, uint32_t scope, const void *id,
                    size_t len, uint64_t hash, void **ref) {
  dset_ref_t *r;
  hash = id_hash_or(hash, scope, id, len);
  int found = dset_claim_ref_h(s->set, scope, id, len, hash, &r);
  if (found == DSET_NEW)
    found = seg_decide(s, scope, id, len, hash, INT64_MIN);
  /* seg_decide() released it unless it stays new */
  *ref = found == DEDUP_NEW ? r : NULL;
  return found;
}

int dedup_claim(dedup_store_t *s, uint32_t scope, const void *id, size_t len) {
  return dedup_claim_h(s, scope, id, len, ID_HASH_NONE, 0, 0);
}

int dedup_claim_again(dedup_store_t *s, uint32_t scope, const void *id,
                      size_t len) {
  return dedup_claim_again_before(s, scope, id, len, s->opened_ms);
}

int dedup_claim_again_before(dedup_store_t *s, uint32_t scope, const void *id,
                             size_t len, int64_t before_ms) {
  return dedup_claim_h(s, scope, id, len, ID_HASH_NONE, 1, before_ms);
}

void dedup_release(dedup_store_t *s, uint32_t scope, const void *id,
                   size_t len) {
  dset_release(s->set, scope, id, len);
}

void dedup_release_h(dedup_store_t *s, uint32_t scope, const void *id,
                     size_t len, uint64_t hash) {
  dset_release_h(s->set, scope, id, len, hash);
}

void dedup_stats(dedup_store_t *s, dedup_stats_t *out) {
  dset_stats_t st;
  dsegs_stats_t sg;
  dset_stats(s->set, &st);
  dsegs_stats(s->segs, &sg);
  *out = (dedup_stats_t){
      .ids = st.ids + sg.ids,
      .recent_ids = st.ids,
      .segments = sg.segments,
      .segments_loading = sg.loading,
      .segment_memory = sg.memory,
      .arena_chunks = st.chunks,
      .arena_bytes = st.bytes,
      .pruned = __atomic_load_n(&s->pruned, __ATOMIC_RELAXED),
      .prune_runs = __atomic_load_n(&s->prune_runs, __ATOMIC_RELAXED),
  };
}

int dedup_history_check_due(dedup_store_t *s, uint32_t scope) {
  int due;
  if (!s->fresh)
    return 0;
  pthread_mutex_lock(&s->db_lock);
  due = g_hash_table_add(s->history_asked, GUINT_TO_POINTER(scope));
  pthread_mutex_unlock(&s->db_lock);
  return due;
}

size_t dedup_size(dedup_store_t *s) {
  dedup_stats_t st;
  dedup_stats(s, &st);
  return st.ids;
}

int64_t dedup_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----------------------------------------------------------------- SQLite */

static int path_fail(const char *path, sqlite3 *db, char *err, size_t errlen) {
  snprintf(err, errlen, "%s: %s", path,
           db ? sqlite3_errmsg(db) : "out of memory");
  return -1;
}

static int db_fail(const dedup_store_t *s, sqlite3 *db, char *err,
                   size_t errlen) {
  return path_fail(s->path, db, err, errlen);
}

static int path_exec(const char *path, sqlite3 *db, const char *sql, char *err,
                     size_t errlen) {
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return path_fail(path, db, err, errlen);
  return 0;
}

static int db_exec(const dedup_store_t *s, sqlite3 *db, const char *sql,
                   char *err, size_t errlen) {
  return path_exec(s->path, db, sql, err, errlen);
}

/* Step a statement that returns nothing, then make it reusable. */
static int stmt_run(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int db_prepare(const dedup_store_t *s, sqlite3 *db, const char *sql,
                      sqlite3_stmt **st, char *err, size_t errlen) {
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) !=
      SQLITE_OK)
    return db_fail(s, db, err, errlen);
  return 0;
}

/* The pauses of SQLite's own busy wait (sqlite3_busy_timeout()), in ms:
 * the wait below keeps its pace. */
static const int busy_pauses[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};

/* The time waited before the count-th pause (as SQLite counts). */
static int64_t busy_waited(int count) {
  const int n = (int)G_N_ELEMENTS(busy_pauses);
  int64_t t = 0;
  for (int i = 0; i < count && i < n; i++)
    t += busy_pauses[i];
  if (count > n)
    t += (int64_t)(count - n) * busy_pauses[n - 1];
  return t;
}

/* SQLite's busy wait, up to busy_ms, which also says what a start waits
 * for: another process holding the database's lock (another khost on
 * the file, a `khost dedup` or `state` command in a transaction) would
 * otherwise leave the host silent for the whole timeout of each step of
 * the open. */
static int busy_wait(void *arg, int count) {
  dedup_store_t *s = arg;
  const int n = (int)G_N_ELEMENTS(busy_pauses);
  int64_t waited = busy_waited(count);
  int64_t pause = busy_pauses[count < n ? count : n - 1];
  int opening = __atomic_load_n(&s->opening, __ATOMIC_RELAXED);
  if (waited + pause > s->busy_ms)
    pause = s->busy_ms - waited;
  if (pause <= 0) {
    if (opening)
      __atomic_store_n(&s->open_gave_up, 1, __ATOMIC_RELAXED);
    return 0;
  }
  if (opening && waited >= OPEN_SAY_MS &&
      !__atomic_exchange_n(&s->open_said, 1, __ATOMIC_RELAXED))
    log_msg(KHOST_LOG_WARNING, "dedup",
            "%s: waiting for a lock that another process holds on the dedup "
            "database (another khost using this file, or a khost dedup, "
            "state or parked command); giving up after %d s",
            s->path, (s->busy_ms + 999) / 1000);
  sqlite3_sleep((int)pause);
  return 1;
}

/* A connection in WAL mode with the store's durability and busy wait. */
static int db_open(dedup_store_t *s, sqlite3 **out, char *err, size_t errlen) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int rc = -1;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(s->path, &db, flags, NULL) != SQLITE_OK) {
    db_fail(s, db, err, errlen);
    goto out;
  }
  sqlite3_busy_handler(db, busy_wait, s);
  if (db_prepare(s, db, "PRAGMA journal_mode=WAL", &st, err, errlen) < 0)
    goto out;
  if (sqlite3_step(st) != SQLITE_ROW) {
    db_fail(s, db, err, errlen);
    goto out;
  }
  const char *mode = (const char *)sqlite3_column_text(st, 0);
  if (!mode || strcmp(mode, "wal") != 0) {
    snprintf(err, errlen, "%s: cannot use WAL journal mode (got %s)", s->path,
             mode ? mode : "nothing");
    goto out;
  }
  rc = db_exec(s, db,
               s->durability_full ? "PRAGMA synchronous=FULL"
                                  : "PRAGMA synchronous=NORMAL",
               err, errlen);
out:
  sqlite3_finalize(st);
  if (rc < 0) {
    sqlite3_close(db);
    db = NULL;
  }
  *out = db;
  return rc;
}

int dedup_db_version(sqlite3 *db, const char *path, int *version, char *err,
                     size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    path_fail(path, db, err, errlen);
    goto out;
  }
  *version = sqlite3_column_int(st, 0);
  if (*version > DEDUP_SCHEMA_VERSION) {
    snprintf(err, errlen,
             "%s: dedup schema version %d is newer than this khost's (%d)",
             path, *version, DEDUP_SCHEMA_VERSION);
    goto out;
  }
  rc = 0;
out:
  sqlite3_finalize(st);
  return rc;
}

/* Version 3 keeps segments of the marks up to a seq: seqs must never be
 * reused once the newest marks are deleted (a forget, a prune of
 * everything), so the marks of versions 1 and 2 move to a table with
 * AUTOINCREMENT, in the caller's transaction. */
static const char *const marks_v3_sql =
    "CREATE TABLE marks_v3("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, scope INTEGER NOT NULL,"
    " event_id BLOB NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " handled_at INTEGER NOT NULL, outcome INTEGER NOT NULL);"
    "INSERT INTO marks_v3 SELECT seq, scope, event_id, topic, partition,"
    " \"offset\", handled_at, outcome FROM marks ORDER BY seq;";
static const char *const marks_v3_swap_sql =
    "DROP TABLE marks; ALTER TABLE marks_v3 RENAME TO marks;";

static int migrate_marks(sqlite3 *db, const char *path, int version, char *err,
                         size_t errlen) {
  struct timespec t0, t1;
  if (version < 1 || version >= 3)
    return 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  log_msg(KHOST_LOG_INFO, "dedup",
          "%s: converting the marks of schema version %d to version 3", path,
          version);
  if (path_exec(path, db, marks_v3_sql, err, errlen) < 0)
    return -1;
  int n = sqlite3_changes(db); /* the INSERT's rows */
  if (path_exec(path, db, marks_v3_swap_sql, err, errlen) < 0)
    return -1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  log_msg(KHOST_LOG_INFO, "dedup", "%s: %d marks converted in %.1f s", path, n,
          (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}

/* 1 when table name exists in *found. */
static int table_exists(sqlite3 *db, const char *path, const char *name,
                        int *found, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (sqlite3_prepare_v2(db,
                         "SELECT count(*) FROM sqlite_master"
                         " WHERE type = 'table' AND name = ?1",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
      *found = sqlite3_column_int(st, 0) > 0;
      rc = 0;
    }
  }
  if (rc < 0)
    path_fail(path, db, err, errlen);
  sqlite3_finalize(st);
  return rc;
}

/* Batches go on numbering after every seq the marks ever used. */
static const char *const batches_seq_sql =
    "INSERT INTO sqlite_sequence(name, seq) SELECT 'batches', 0"
    " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'batches');"
    "UPDATE sqlite_sequence SET seq = max(seq,"
    " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'marks'), 0),"
    " coalesce((SELECT max(seq) FROM marks), 0)) WHERE name = 'batches';";

int dedup_db_schema(sqlite3 *db, const char *path, char *err, size_t errlen) {
  int version = 0, rc = -1, has_marks = 0, older;
  char sql[64];
  if (path_exec(path, db, "BEGIN IMMEDIATE", err, errlen) < 0)
    return -1;
  if (dedup_db_version(db, path, &version, err, errlen) < 0)
    goto out;
  snprintf(sql, sizeof sql, "PRAGMA user_version=%d", DEDUP_SCHEMA_VERSION);
  if (table_exists(db, path, "marks", &has_marks, err, errlen) < 0 ||
      (has_marks && migrate_marks(db, path, version, err, errlen) < 0) ||
      path_exec(path, db, schema_sql, err, errlen) < 0 ||
      path_exec(path, db, dseg_schema_sql, err, errlen) < 0 ||
      /* version 4: the parking lot */
      path_exec(path, db, sparked_schema_sql, err, errlen) < 0 ||
      /* version 7: plugin state, its log of writes, stored offsets */
      path_exec(path, db, sstate_schema_sql, err, errlen) < 0)
    goto out;
  /* version 6: segments carry their marks */
  if (dseg_schema_upgrade(db) < 0) {
    path_fail(path, db, err, errlen);
    goto out;
  }
  /* The marks of versions 1-4 (a row each) and then the segments of
   * versions 3-5 are converted in chunks after this transaction; the
   * version moves once they are all done. Version 6 moves at once (7
   * only adds tables). */
  older = version > 0 && version < 6;
  if (has_marks ? path_exec(path, db, batches_seq_sql, err, errlen) < 0
                : !older && path_exec(path, db, sql, err, errlen) < 0)
    goto out;
  rc = path_exec(path, db, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  if (rc == 0 && has_marks)
    rc = dedup_convert_marks(db, path, err, errlen);
  if (rc == 0 && older)
    rc = dedup_convert_segments(db, path, err, errlen);
  return rc;
}

static int64_t retention_cutoff(const dedup_store_t *s, int64_t now_ms) {
  return s->retention_ms > 0 ? now_ms - s->retention_ms : INT64_MIN;
}

/* What is done with each mark of a row of the log. */
typedef void (*row_mark_fn)(void *arg, uint32_t scope, const dlog_mark_t *m);

/* Call fn for every mark of the current row of st, whose columns from
 * col on are scope, first_at and marks (the blob); -1 (err names the
 * row's seq, column 0) when the blob is malformed. */
static int row_marks(const dedup_store_t *s, sqlite3_stmt *st, int col,
                     row_mark_fn fn, void *arg, char *err, size_t errlen) {
  dlog_reader_t r;
  dlog_mark_t m;
  uint32_t scope = (uint32_t)sqlite3_column_int64(st, col);
  const void *blob = sqlite3_column_blob(st, col + 2); /* before _bytes() */
  int rc = dlog_read_start(&r, blob, (size_t)sqlite3_column_bytes(st, col + 2),
                           sqlite3_column_int64(st, col + 1));
  while (rc == 0 && (rc = dlog_read_next(&r, &m)) == 1) {
    fn(arg, scope, &m);
    rc = 0;
  }
  dlog_read_done(&r);
  if (rc < 0)
    snprintf(err, errlen, "%s: batch %" PRId64 " of the log is malformed",
             s->path, (int64_t)sqlite3_column_int64(st, 0));
  return rc < 0 ? -1 : 0;
}

typedef struct load_arg {
  dedup_store_t *s;
  int64_t cutoff;
} load_arg_t;

static void load_mark(void *arg, uint32_t scope, const dlog_mark_t *m) {
  load_arg_t *a = arg;
  if (m->handled_at >= a->cutoff)
    dset_mark_committed(a->s->set, scope, m->id, m->id_len, m->handled_at);
}

/* Fill the set from the marks inside retention that no segment holds: a
 * rowid range from the segments' mark on, read sequentially, so a start
 * reads only the marks since the last segment, whatever the store's
 * size. */
static int load_marks(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  load_arg_t a = {s, retention_cutoff(s, dedup_now_ms())};
  int rc = SQLITE_DONE;
  if (db_prepare(s, s->db,
                 "SELECT seq, scope, first_at, marks FROM batches"
                 " WHERE seq > ?2 AND last_at >= ?1",
                 &st, err, errlen) < 0)
    return -1;
  sqlite3_bind_int64(st, 1, a.cutoff);
  sqlite3_bind_int64(st, 2, s->seg_mark);
  while (rc == SQLITE_DONE && (rc = sqlite3_step(st)) == SQLITE_ROW)
    rc = row_marks(s, st, 1, load_mark, &a, err, errlen) < 0 ? -1 : SQLITE_DONE;
  if (rc != SQLITE_DONE && rc != -1)
    db_fail(s, s->db, err, errlen);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : -1;
}

int dedup_scope(dedup_store_t *s, const char *pipeline, uint32_t *scope,
                char *err, size_t errlen) {
  sqlite3_stmt *ins = NULL, *sel = NULL;
  int rc = -1;
  pthread_mutex_lock(&s->db_lock);
  if (db_prepare(s, s->db,
                 "INSERT INTO scopes(name) VALUES(?1)"
                 " ON CONFLICT(name) DO NOTHING",
                 &ins, err, errlen) < 0 ||
      db_prepare(s, s->db, "SELECT id FROM scopes WHERE name = ?1", &sel, err,
                 errlen) < 0)
    goto out;
  sqlite3_bind_text(ins, 1, pipeline, -1, SQLITE_STATIC);
  sqlite3_bind_text(sel, 1, pipeline, -1, SQLITE_STATIC);
  pthread_mutex_lock(&s->write_lock);
  int ok = stmt_run(ins) == SQLITE_OK && sqlite3_step(sel) == SQLITE_ROW;
  if (!ok)
    db_fail(s, s->db, err, errlen);
  pthread_mutex_unlock(&s->write_lock);
  if (!ok)
    goto out;
  *scope = (uint32_t)sqlite3_column_int64(sel, 0);
  rc = 0;
out:
  sqlite3_finalize(ins);
  sqlite3_finalize(sel);
  pthread_mutex_unlock(&s->db_lock);
  return rc;
}

/* ---------------------------------------------------------------- pruning */

static int seg_prune(dedup_store_t *s, int64_t cutoff, char *err,
                     size_t errlen);

/* handled_at is not needed to forget: the cutoff decides. */
static void prune_mark(void *arg, uint32_t scope, const dlog_mark_t *m) {
  dset_keys_add(arg, scope, m->id, m->id_len, 0);
}

/* Delete up to PRUNE_ROWS batches of old marks in one short transaction
 * and forget their IDs. Returns the number of marks deleted (*rows: of
 * batches), or -1. */
static int64_t prune_batch(dedup_store_t *s, int64_t cutoff, int64_t *rows,
                           char *err, size_t errlen) {
  sqlite3_stmt *del = s->prune_del;
  int64_t n = -1;
  int rc = SQLITE_DONE;
  *rows = 0;
  dset_keys_clear(s->prune_keys);
  pthread_mutex_lock(&s->write_lock);
  if (db_exec(s, s->prune_db, "BEGIN IMMEDIATE", err, errlen) < 0)
    goto out;
  sqlite3_bind_int64(del, 1, cutoff);
  while (rc == SQLITE_DONE && (rc = sqlite3_step(del)) == SQLITE_ROW) {
    (*rows)++;
    rc = row_marks(s, del, 1, prune_mark, s->prune_keys, err, errlen) < 0
             ? -1
             : SQLITE_DONE;
  }
  sqlite3_reset(del);
  if (rc != SQLITE_DONE) {
    if (rc != -1)
      db_fail(s, s->prune_db, err, errlen);
    goto out;
  }
  if (db_exec(s, s->prune_db, "COMMIT", err, errlen) < 0)
    goto out;
  dset_forget_if_older(s->set, s->prune_keys, cutoff);
  n = (int64_t)dset_keys_count(s->prune_keys);
  __atomic_add_fetch(&s->pruned, n, __ATOMIC_RELAXED);
out:
  if (!sqlite3_get_autocommit(s->prune_db))
    sqlite3_exec(s->prune_db, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->write_lock);
  return n;
}

/* Replay ranges recorded before the cutoff go with the marks of their
 * time: one short transaction (there are few of them). */
static int prune_ranges(dedup_store_t *s, int64_t cutoff, char *err,
                        size_t errlen) {
  sqlite3_stmt *del = NULL;
  int rc = -1;
  pthread_mutex_lock(&s->write_lock);
  if (db_prepare(s, s->prune_db, "DELETE FROM replays WHERE created_at < ?1",
                 &del, err, errlen) < 0 ||
      db_exec(s, s->prune_db, "BEGIN IMMEDIATE", err, errlen) < 0)
    goto out;
  sqlite3_bind_int64(del, 1, cutoff);
  if (stmt_run(del) != SQLITE_OK) {
    db_fail(s, s->prune_db, err, errlen);
    goto out;
  }
  rc = db_exec(s, s->prune_db, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(s->prune_db))
    sqlite3_exec(s->prune_db, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->write_lock);
  sqlite3_finalize(del);
  return rc;
}

static int stopping(dedup_store_t *s) {
  return __atomic_load_n(&s->stopping, __ATOMIC_RELAXED);
}

int dedup_prune(dedup_store_t *s, int64_t now_ms, int64_t *removed, char *err,
                size_t errlen) {
  int64_t total = 0, n, rows = PRUNE_ROWS;
  int rc = 0;
  if (s->retention_ms <= 0)
    goto out;
  pthread_mutex_lock(&s->prune_lock);
  /* Transaction after transaction, each releasing the write lock, so that
   * writers commit between them; a closing store stops between them. */
  while (rows == PRUNE_ROWS && !stopping(s)) {
    n = prune_batch(s, retention_cutoff(s, now_ms), &rows, err, errlen);
    if (n < 0) {
      rc = -1;
      break;
    }
    total += n;
  }
  if (rc == 0 && !stopping(s))
    rc = seg_prune(s, retention_cutoff(s, now_ms), err, errlen);
  if (rc == 0 && !stopping(s))
    rc = prune_ranges(s, retention_cutoff(s, now_ms), err, errlen);
  /* Long IDs can make a batch's keys big: do not keep that around. */
  dset_keys_trim(s->prune_keys, PRUNE_KEEP_BYTES);
  pthread_mutex_unlock(&s->prune_lock);
  __atomic_add_fetch(&s->prune_runs, 1, __ATOMIC_RELAXED);
out:
  if (removed)
    *removed = total;
  return rc;
}

/* --------------------------------------------------------------- segments */

/* How far the marks went into segments (0: none yet). */
static int seg_mark_load(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc;
  if (db_prepare(s, s->db, "SELECT last_seq FROM segmented WHERE id = 1", &st,
                 err, errlen) < 0)
    return -1;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    s->seg_mark = sqlite3_column_int64(st, 0);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    db_fail(s, s->db, err, errlen);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* What `khost dedup forget` removed from segments (few rows). */
static int forgotten_load(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc;
  if (db_prepare(s, s->db, "SELECT scope, event_id, upto_seq FROM forgotten",
                 &st, err, errlen) < 0)
    return -1;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *id = sqlite3_column_blob(st, 1); /* before _bytes() */
    int whole = sqlite3_column_type(st, 1) == SQLITE_NULL;
    GBytes *k = dkey_forgotten((uint32_t)sqlite3_column_int64(st, 0),
                               whole ? NULL : (id ? id : ""),
                               (size_t)sqlite3_column_bytes(st, 1));
    int64_t *upto = g_hash_table_lookup(s->forgotten, k);
    if (!upto) {
      upto = g_new0(int64_t, 1);
      g_hash_table_insert(s->forgotten, g_bytes_ref(k), upto);
    }
    if (sqlite3_column_int64(st, 2) > *upto)
      *upto = sqlite3_column_int64(st, 2);
    g_bytes_unref(k);
  }
  if (rc != SQLITE_DONE)
    db_fail(s, s->db, err, errlen);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : -1;
}

static int segs_open(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3 *db;
  if (seg_mark_load(s, err, errlen) < 0 || forgotten_load(s, err, errlen) < 0 ||
      db_open(s, &s->seg_db, err, errlen) < 0 ||
      db_open(s, &db, err, errlen) < 0)
    return -1;
  /* Lazily: a start reads no filter and no block index, whatever the
   * store's size (the load thread does, below). */
  return dsegs_open(&s->segs, db, s->path, 1, err, errlen);
}

typedef struct seg_read {
  GArray *keys;
  dset_buf_t *buf;
  size_t topic, topic_len; /* the last topic put into buf */
} seg_read_t;

/* The ID's and topic's offsets into buf stand in for pointers (buf may
 * move); a topic like the last mark's is not copied again. */
static void seg_read_mark(void *arg, uint32_t scope, const dlog_mark_t *m) {
  seg_read_t *r = arg;
  dseg_key_t k = {.scope = scope,
                  .id = (const void *)dset_buf_put(r->buf, m->id, m->id_len),
                  .len = m->id_len,
                  .handled_ms = m->handled_at,
                  .topic_len = m->topic_len,
                  .partition = m->partition,
                  .offset = m->offset,
                  .outcome = m->outcome};
  if (r->keys->len == 0 || m->topic_len != r->topic_len ||
      (m->topic_len &&
       memcmp(r->buf->data + r->topic, m->topic, m->topic_len) != 0)) {
    r->topic = dset_buf_put(r->buf, m->topic, m->topic_len);
    r->topic_len = m->topic_len;
  }
  k.topic = (const char *)r->topic;
  g_array_append_val(r->keys, k);
}

/* The marks after the segments' mark, as segment keys; their bytes go to
 * buf (kept until the keys are written). *last gets the newest seq. */
static int seg_read_marks(dedup_store_t *s, GArray *keys, dset_buf_t *buf,
                          int64_t *last, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  seg_read_t r = {.keys = keys, .buf = buf};
  int rc = SQLITE_DONE;
  if (db_prepare(s, s->prune_db,
                 "SELECT seq, scope, first_at, marks FROM batches"
                 " WHERE seq > ?1 ORDER BY seq",
                 &st, err, errlen) < 0)
    return -1;
  sqlite3_bind_int64(st, 1, s->seg_mark);
  while (rc == SQLITE_DONE && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    *last = sqlite3_column_int64(st, 0);
    rc = row_marks(s, st, 1, seg_read_mark, &r, err, errlen) < 0 ? -1
                                                                 : SQLITE_DONE;
  }
  if (rc != SQLITE_DONE && rc != -1)
    db_fail(s, s->prune_db, err, errlen);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : -1;
}

/* The keys' IDs and topics were stored as offsets into buf (it may have
 * moved while it grew): make them pointers and hash the IDs. */
static void seg_fix_keys(GArray *keys, const dset_buf_t *buf,
                         dset_keys_t *forget, int64_t *newest) {
  for (guint i = 0; i < keys->len; i++) {
    dseg_key_t *k = &g_array_index(keys, dseg_key_t, i);
    k->id = buf->data + (size_t)k->id;
    k->topic = (const char *)buf->data + (size_t)k->topic;
    k->hash = id_hash(k->scope, k->id, k->len);
    if (k->handled_ms > *newest)
      *newest = k->handled_ms;
    dset_keys_add_h(forget, k->scope, k->id, k->len, 0, k->hash);
  }
}

/* Segment writes and merges go to disk in transactions of about
 * SEG_CHUNK_MS each, each under write_lock (dseg_chunks_t): a batch commit
 * waits for one chunk at most, never for a whole segment (writing a few
 * million IDs in one transaction held the write lock for 1-2 s, and the
 * durability threads' commits, so the offsets, waited that long). Chunks
 * rather than a side file attached later: the blocks go to the one file
 * the store already syncs and backs up, and a segment becomes visible only
 * with its row, written in the last chunk (with the segments' mark, for a
 * new segment, and the deletion of the log's rows it now holds: each mark
 * is kept once, in the log or in a segment, never in neither). Blocks of
 * a write that never finished are invisible and deleted by the next write
 * at that id. */
#define SEG_CHUNK_MS 50

typedef struct seg_txn {
  dedup_store_t *s;
  int64_t last_seq; /* a new segment: the segments' mark moves here */
  char why[256];    /* a BEGIN or COMMIT that failed */
} seg_txn_t;

/* A mutex is not fair: a chunk taken again at once after the last one
 * could keep a waiting batch commit out for many chunks. Batch commits
 * that wait go first. */
static int seg_txn_begin(void *arg) {
  seg_txn_t *t = arg;
  sqlite3 *db = t->s->seg_db;
  pthread_mutex_lock(&t->s->write_lock);
  while (__atomic_load_n(&t->s->writers_waiting, __ATOMIC_ACQUIRE) > 0)
    pthread_cond_wait(&t->s->writers_done, &t->s->write_lock);
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK)
    return 0;
  snprintf(t->why, sizeof t->why, "%s", sqlite3_errmsg(db));
  pthread_mutex_unlock(&t->s->write_lock);
  return -1;
}

static int seg_txn_end(void *arg, int commit) {
  seg_txn_t *t = arg;
  sqlite3 *db = t->s->seg_db;
  int rc = 0;
  if (commit && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    snprintf(t->why, sizeof t->why, "%s", sqlite3_errmsg(db));
    rc = -1;
  }
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&t->s->write_lock);
  return rc;
}

static int seg_txn_last(void *arg) {
  seg_txn_t *t = arg;
  char sql[192];
  if (t->last_seq <= 0)
    return 0;
  snprintf(sql, sizeof sql,
           "INSERT OR REPLACE INTO segmented(id, last_seq) VALUES(1, %" PRId64
           "); DELETE FROM batches WHERE seq <= %" PRId64,
           t->last_seq, t->last_seq);
  return sqlite3_exec(t->s->seg_db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0
                                                                        : -1;
}

static dseg_chunks_t seg_chunks(seg_txn_t *t) {
  return (dseg_chunks_t){.begin = seg_txn_begin,
                         .end = seg_txn_end,
                         .last = seg_txn_last,
                         .arg = t,
                         .budget_ms = SEG_CHUNK_MS};
}

/* A chunked write that failed: BEGIN or COMMIT say why, when it was one
 * of them. */
static void seg_txn_why(const seg_txn_t *t, const dedup_store_t *s, int64_t id,
                        char *err, size_t errlen) {
  if (t->why[0])
    snprintf(err, errlen, "%s: segment %" PRId64 ": %s", s->path, id, t->why);
}

/* Write the segment, moving the segments' mark with its last chunk. */
static int seg_put(dedup_store_t *s, int64_t id, GArray *keys, int64_t last,
                   char *err, size_t errlen) {
  seg_txn_t t = {.s = s, .last_seq = last};
  dseg_chunks_t ch = seg_chunks(&t);
  int rc =
      dseg_write_chunked(s->seg_db, s->path, id, last, (dseg_key_t *)keys->data,
                         keys->len, 0, &ch, err, errlen);
  if (rc < 0)
    seg_txn_why(&t, s, id, err, errlen);
  return rc;
}

size_t dedup_memory_ids(uint64_t bytes) {
  return (size_t)(bytes / 196);
}

int dedup_segment_now(dedup_store_t *s, size_t *moved, char *err,
                      size_t errlen) {
  GArray *keys = g_array_new(FALSE, FALSE, sizeof(dseg_key_t));
  dset_buf_t buf = {0};
  dset_keys_t *forget = dset_keys_new();
  int64_t last = 0, newest = INT64_MIN, id;
  dseg_t *g = NULL;
  int rc = -1;
  pthread_mutex_lock(&s->prune_lock);
  if (seg_read_marks(s, keys, &buf, &last, err, errlen) < 0)
    goto out;
  rc = 0;
  if (keys->len == 0)
    goto out;
  seg_fix_keys(keys, &buf, forget, &newest);
  id = dsegs_next_id(s->segs);
  rc = -1;
  if (seg_put(s, id, keys, last, err, errlen) < 0 ||
      dseg_load(s->prune_db, s->path, id, &g, err, errlen) < 0)
    goto out;
  s->seg_mark = last;
  /* Published first, forgotten after: a claim between the two finds the
   * ID in the set or in the segment. An ID marked again since (a newer
   * handled_at) stays in the set. */
  dsegs_add(s->segs, g);
  dset_forget_if_older(s->set, forget, newest + 1);
  log_msg(KHOST_LOG_INFO, "dedup", "%s: segment %" PRId64 ": %u IDs", s->path,
          id, keys->len);
  rc = 0;
out:
  pthread_mutex_unlock(&s->prune_lock);
  if (moved)
    *moved = rc == 0 ? keys->len : 0;
  g_array_free(keys, TRUE);
  dset_buf_free(&buf);
  dset_keys_free(forget);
  return rc;
}

/* Write the merged segment (in chunks: its inputs are read on prune_db,
 * the output written on seg_db) and publish it, unpublish its inputs, then
 * delete them: a crash in between leaves IDs in two segments, which
 * answers the same. */
static int merge_put(dedup_store_t *s, const int64_t *ids, size_t n,
                     uint64_t total, int64_t tag, char *err, size_t errlen) {
  int64_t id = dsegs_next_id(s->segs);
  seg_txn_t t = {.s = s};
  dseg_chunks_t ch = seg_chunks(&t);
  dseg_t *g = NULL;
  int rc = dseg_merge_chunked(s->prune_db, s->seg_db, s->path, ids, n, total,
                              id, tag, &ch, err, errlen);
  if (rc < 0)
    seg_txn_why(&t, s, id, err, errlen);
  if (rc == 0)
    rc = dseg_load(s->prune_db, s->path, id, &g, err, errlen);
  if (rc == 0)
    dsegs_replace(s->segs, ids, n, g);
  return rc;
}

static int seg_drop(dedup_store_t *s, const int64_t *ids, size_t n, char *err,
                    size_t errlen);

int dedup_merge_now(dedup_store_t *s, size_t *merged, char *err,
                    size_t errlen) {
  int64_t ids[DSEGS_MERGE_FANIN], tag;
  uint64_t total;
  size_t n;
  int rc = 0;
  if (merged)
    *merged = 0;
  pthread_mutex_lock(&s->prune_lock);
  while (rc == 0 && !stopping(s) &&
         (n = dsegs_pick_merge(s->segs, ids, &total, &tag, s->merge_max_ids)) >
             0) {
    rc = merge_put(s, ids, n, total, tag, err, errlen);
    if (rc == 0)
      rc = seg_drop(s, ids, n, err, errlen);
    if (rc == 0 && merged)
      (*merged)++;
  }
  pthread_mutex_unlock(&s->prune_lock);
  return rc;
}

/* Delete segments no longer published, one short transaction each. */
static int seg_drop(dedup_store_t *s, const int64_t *ids, size_t n, char *err,
                    size_t errlen) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    pthread_mutex_lock(&s->write_lock);
    rc = db_exec(s, s->prune_db, "BEGIN IMMEDIATE", err, errlen);
    if (rc == 0)
      rc = dseg_delete(s->prune_db, s->path, ids[i], err, errlen);
    if (rc == 0)
      rc = db_exec(s, s->prune_db, "COMMIT", err, errlen);
    if (!sqlite3_get_autocommit(s->prune_db))
      sqlite3_exec(s->prune_db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->write_lock);
  }
  return rc;
}

/* Drop whole segments past retention, one short transaction each. Called
 * under prune_lock. */
static int seg_prune(dedup_store_t *s, int64_t cutoff, char *err,
                     size_t errlen) {
  int64_t *ids = NULL;
  size_t n = dsegs_take_expired(s->segs, cutoff, &ids);
  int rc = seg_drop(s, ids, n, err, errlen);
  g_free(ids);
  return rc;
}

/* ---------------------------------------------------------- replay ranges */

int dedup_db_replay_add(sqlite3 *db, const char *path, uint32_t scope,
                        const char *topic, int32_t partition, int64_t from,
                        int64_t to, int mode, int64_t now_ms, char *err,
                        size_t errlen) {
  sqlite3_stmt *del = NULL, *ins = NULL;
  int rc = -1;
  if (from < 0 || from >= to ||
      (mode != DEDUP_REPLAY_SKIP && mode != DEDUP_REPLAY_REPROCESS)) {
    snprintf(err, errlen,
             "%s: %s [%" PRId32 "]: invalid replay range [%" PRId64 ", %" PRId64
             ") with mode %d",
             path, topic, partition, from, to, mode);
    return -1;
  }
  /* Older ranges inside the new one can never apply again: drop them so
   * that repeated replays do not pile up rows. */
  if (sqlite3_prepare_v2(db,
                         "DELETE FROM replays WHERE scope = ?1 AND topic = ?2"
                         " AND partition = ?3 AND first >= ?4 AND stop <= ?5",
                         -1, &del, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "INSERT INTO replays(scope, topic, partition, first,"
                         " stop, mode, created_at)"
                         " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                         -1, &ins, NULL) != SQLITE_OK)
    goto fail;
  sqlite3_stmt *both[] = {del, ins};
  for (int i = 0; i < 2; i++) {
    sqlite3_bind_int64(both[i], 1, scope);
    sqlite3_bind_text(both[i], 2, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(both[i], 3, partition);
    sqlite3_bind_int64(both[i], 4, from);
    sqlite3_bind_int64(both[i], 5, to);
  }
  sqlite3_bind_int(ins, 6, mode);
  sqlite3_bind_int64(ins, 7, now_ms);
  if (stmt_run(del) != SQLITE_OK || stmt_run(ins) != SQLITE_OK)
    goto fail;
  rc = 0;
  goto out;
fail:
  path_fail(path, db, err, errlen);
out:
  sqlite3_finalize(del);
  sqlite3_finalize(ins);
  return rc;
}

int dedup_replay_add(dedup_store_t *s, uint32_t scope, const char *topic,
                     int32_t partition, int64_t from, int64_t to, int mode,
                     char *err, size_t errlen) {
  int rc = -1;
  pthread_mutex_lock(&s->db_lock);
  pthread_mutex_lock(&s->write_lock);
  if (db_exec(s, s->db, "BEGIN IMMEDIATE", err, errlen) < 0 ||
      dedup_db_replay_add(s->db, s->path, scope, topic, partition, from, to,
                          mode, dedup_now_ms(), err, errlen) < 0)
    goto out;
  rc = db_exec(s, s->db, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(s->db))
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->write_lock);
  pthread_mutex_unlock(&s->db_lock);
  return rc;
}

/* Append a range to a malloc'd array of *n. */
static int ranges_push(dedup_range_t **v, size_t *n, const dedup_range_t *r) {
  dedup_range_t *grown = realloc(*v, (*n + 1) * sizeof(**v));
  if (!grown)
    return -1;
  grown[(*n)++] = *r;
  *v = grown;
  return 0;
}

int dedup_replay_ranges(dedup_store_t *s, uint32_t scope, const char *topic,
                        int32_t partition, dedup_range_t **out, size_t *n,
                        char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  dedup_range_t *v = NULL;
  size_t count = 0;
  int rc = -1, step;
  pthread_mutex_lock(&s->db_lock);
  if (db_prepare(s, s->db,
                 "SELECT first, stop, mode, created_at FROM replays"
                 " WHERE scope = ?1"
                 " AND topic = ?2 AND partition = ?3 AND created_at >= ?4"
                 " ORDER BY seq DESC",
                 &st, err, errlen) < 0)
    goto out;
  sqlite3_bind_int64(st, 1, scope);
  sqlite3_bind_text(st, 2, topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, partition);
  sqlite3_bind_int64(st, 4, retention_cutoff(s, dedup_now_ms()));
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    dedup_range_t r = {.from = sqlite3_column_int64(st, 0),
                       .to = sqlite3_column_int64(st, 1),
                       .mode = sqlite3_column_int(st, 2),
                       .recorded_ms = sqlite3_column_int64(st, 3)};
    if (ranges_push(&v, &count, &r) < 0) {
      snprintf(err, errlen, "%s: out of memory", s->path);
      goto out;
    }
  }
  if (step != SQLITE_DONE) {
    db_fail(s, s->db, err, errlen);
    goto out;
  }
  rc = 0;
out:
  sqlite3_finalize(st);
  pthread_mutex_unlock(&s->db_lock);
  if (rc < 0) {
    free(v);
    v = NULL;
    count = 0;
  }
  *out = v;
  *n = count;
  return rc;
}

static struct timespec deadline_after(int64_t ms) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (ms % 1000) * 1000000;
  if (t.tv_nsec >= 1000000000) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000;
  }
  return t;
}

/* Prune at once (marks may have expired while the host was down), then
 * every interval until dedup_close() wakes the thread. */
static void *pruner_main(void *arg) {
  dedup_store_t *s = arg;
  char err[512];
  pthread_setname_np(pthread_self(), "dedup-prune");
  pthread_mutex_lock(&s->stop_lock);
  while (!s->stopping) {
    pthread_mutex_unlock(&s->stop_lock);
    if (dedup_prune(s, dedup_now_ms(), NULL, err, sizeof err) < 0)
      log_msg(KHOST_LOG_WARNING, "dedup", "pruning old marks: %s", err);
    pthread_mutex_lock(&s->stop_lock);
    struct timespec deadline = deadline_after(s->prune_interval_ms);
    while (!s->stopping && pthread_cond_timedwait(&s->stop_cond, &s->stop_lock,
                                                  &deadline) != ETIMEDOUT)
      ;
  }
  pthread_mutex_unlock(&s->stop_lock);
  return NULL;
}

static int pruner_start(dedup_store_t *s, char *err, size_t errlen) {
  if (s->prune_interval_ms <= 0 || s->retention_ms <= 0)
    return 0;
  int e = pthread_create(&s->thread, NULL, pruner_main, s);
  if (e != 0) {
    snprintf(err, errlen, "%s: cannot start the pruner thread: %s", s->path,
             g_strerror(e));
    return -1;
  }
  s->has_thread = 1;
  return 0;
}

/* Segment whenever a writer found the set over its budget, until
 * dedup_close() wakes the thread. */
static void *segmenter_main(void *arg) {
  dedup_store_t *s = arg;
  char err[512];
  /* Named, so that top and perf tell its work from the main thread's. */
  pthread_setname_np(pthread_self(), "dedup-segment");
  pthread_mutex_lock(&s->stop_lock);
  for (;;) {
    while (!s->stopping && !s->seg_due)
      pthread_cond_wait(&s->stop_cond, &s->stop_lock);
    if (s->stopping)
      break;
    s->seg_due = 0;
    pthread_mutex_unlock(&s->stop_lock);
    if (dedup_segment_now(s, NULL, err, sizeof err) < 0)
      log_msg(KHOST_LOG_WARNING, "dedup", "writing a segment: %s", err);
    else if (dedup_merge_now(s, NULL, err, sizeof err) < 0)
      log_msg(KHOST_LOG_WARNING, "dedup", "merging segments: %s", err);
    pthread_mutex_lock(&s->stop_lock);
  }
  pthread_mutex_unlock(&s->stop_lock);
  return NULL;
}

static int segmenter_start(dedup_store_t *s, char *err, size_t errlen) {
  if (s->memory_ids == 0)
    return 0;
  int e = pthread_create(&s->seg_thread, NULL, segmenter_main, s);
  if (e != 0) {
    snprintf(err, errlen, "%s: cannot start the segment thread: %s", s->path,
             g_strerror(e));
    return -1;
  }
  s->has_seg_thread = 1;
  return 0;
}

/* Load the filters and block indexes of the segments a start found, one
 * segment after the other, on a connection of its own; lookups read those
 * segments' blocks until then. A closing store stops it between two
 * segments. */
static void *loader_main(void *arg) {
  dedup_store_t *s = arg;
  char err[512];
  sqlite3 *db = NULL;
  int rc = 0;
  struct timespec t0, t1;
  pthread_setname_np(pthread_self(), "dedup-load");
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (db_open(s, &db, err, sizeof err) < 0)
    rc = -1;
  while (rc == 0 && !stopping(s)) {
    int r = dsegs_load_next(s->segs, db, err, sizeof err);
    rc = r > 0 ? 0 : r == 0 ? 1 : -1;
  }
  sqlite3_close(db);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc < 0)
    log_msg(KHOST_LOG_WARNING, "dedup",
            "loading the segments' filters: %s (lookups read their blocks)",
            err);
  else if (rc > 0)
    log_msg(KHOST_LOG_INFO, "dedup", "%s: segments loaded in %.1f s", s->path,
            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return NULL;
}

static int loader_start(dedup_store_t *s, char *err, size_t errlen) {
  dsegs_stats_t st;
  dsegs_stats(s->segs, &st);
  if (st.loading == 0)
    return 0;
  int e = pthread_create(&s->load_thread, NULL, loader_main, s);
  if (e != 0) {
    snprintf(err, errlen, "%s: cannot start the segment load thread: %s",
             s->path, g_strerror(e));
    return -1;
  }
  s->has_load_thread = 1;
  return 0;
}

/* After a commit: wake the segmenter when the set is over its budget. */
static void segmenter_poke(dedup_store_t *s) {
  if (!s->has_seg_thread || dset_size(s->set) <= s->memory_ids)
    return;
  pthread_mutex_lock(&s->stop_lock);
  s->seg_due = 1;
  pthread_cond_broadcast(&s->stop_cond);
  pthread_mutex_unlock(&s->stop_lock);
}

/* ------------------------------------------------------------ open, close */

static int attempts_open(dedup_store_t *s, char *err, size_t errlen);
static void attempts_close(dedup_store_t *s);

static dedup_store_t *store_new(const dedup_opts_t *opts) {
  dedup_store_t *s = g_new0(dedup_store_t, 1);
  s->path = g_strdup(opts->path);
  s->retention_ms = opts->retention_ms;
  s->prune_interval_ms = opts->prune_interval_ms;
  s->memory_ids = opts->memory_ids;
  s->merge_max_ids = opts->merge_max_ids;
  s->durability_full = opts->durability_full;
  s->busy_ms =
      opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : DEFAULT_BUSY_MS;
  s->set = dset_new();
  s->opened_ms = dedup_now_ms();
  s->opening = 1;
  pthread_mutex_init(&s->write_lock, NULL);
  pthread_cond_init(&s->writers_done, NULL);
  pthread_mutex_init(&s->db_lock, NULL);
  pthread_mutex_init(&s->prune_lock, NULL);
  pthread_mutex_init(&s->stop_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadline_after() */
  pthread_cond_init(&s->stop_cond, &ca);
  pthread_condattr_destroy(&ca);
  s->prune_keys = dset_keys_new();
  s->history_asked = g_hash_table_new(g_direct_hash, g_direct_equal);
  s->forgotten = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                       (GDestroyNotify)g_bytes_unref, g_free);
  return s;
}

int dedup_open(dedup_store_t **out, const dedup_opts_t *opts, char *err,
               size_t errlen) {
  dedup_store_t *s = NULL;
  int rc = -1;
  if (!opts->path || !*opts->path) {
    snprintf(err, errlen, "dedup: no database path given");
    goto out;
  }
  s = store_new(opts);
  if (dfile_create(s->path, &s->fresh, err, errlen) < 0 ||
      dfile_check_writable(s->path, err, errlen) < 0 ||
      db_open(s, &s->db, err, errlen) < 0 ||
      dedup_db_schema(s->db, s->path, err, errlen) < 0 ||
      dfile_identify(s->path, &s->file, err, errlen) < 0 ||
      db_open(s, &s->prune_db, err, errlen) < 0 ||
      db_prepare(s, s->prune_db, prune_sql, &s->prune_del, err, errlen) < 0 ||
      segs_open(s, err, errlen) < 0 || loader_start(s, err, errlen) < 0 ||
      load_marks(s, err, errlen) < 0 || attempts_open(s, err, errlen) < 0 ||
      pruner_start(s, err, errlen) < 0 || segmenter_start(s, err, errlen) < 0)
    goto out;
  __atomic_store_n(&s->opening, 0, __ATOMIC_RELAXED);
  rc = 0;
out:
  if (rc < 0 && s && __atomic_load_n(&s->open_gave_up, __ATOMIC_RELAXED))
    snprintf(err, errlen,
             "%s: the dedup database stayed locked by another process for "
             "%d s (another khost using this file, or a khost dedup, state "
             "or parked command): not starting on it; stop that process, "
             "or give each host a file of its own",
             s->path, (s->busy_ms + 999) / 1000);
  if (rc < 0) {
    dedup_close(s);
    s = NULL;
  }
  *out = s;
  return rc;
}

void dedup_close(dedup_store_t *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->stop_lock);
  __atomic_store_n(&s->stopping, 1, __ATOMIC_RELAXED);
  pthread_cond_broadcast(&s->stop_cond);
  pthread_mutex_unlock(&s->stop_lock);
  if (s->has_thread)
    pthread_join(s->thread, NULL);
  if (s->has_seg_thread)
    pthread_join(s->seg_thread, NULL);
  if (s->has_load_thread)
    pthread_join(s->load_thread, NULL);
  dsegs_free(s->segs);
  sqlite3_close(s->seg_db);
  attempts_close(s);
  sqlite3_finalize(s->prune_del);
  sqlite3_close(s->prune_db);
  sqlite3_close(s->db);
  dset_free(s->set);
  dset_keys_free(s->prune_keys);
  g_hash_table_destroy(s->history_asked);
  g_hash_table_destroy(s->forgotten);
  pthread_cond_destroy(&s->stop_cond);
  pthread_mutex_destroy(&s->stop_lock);
  pthread_mutex_destroy(&s->prune_lock);
  pthread_mutex_destroy(&s->db_lock);
  pthread_mutex_destroy(&s->write_lock);
  pthread_cond_destroy(&s->writers_done);
  g_free(s->path);
  g_free(s);
}

/* ----------------------------------------------------------------- writer */

typedef struct pending {
  uint32_t scope;
  int32_t partition;
  int64_t offset, handled_at;
  int outcome;
  size_t id_off, id_len, topic_off, topic_len;
  uint64_t id_hash; /* ID_HASH_NONE: computed with its key */
  dset_ref_t *ref;  /* the claim's record (dedup_claim_ref()), or NULL */
} pending_t;

/* One row of the log, packed before the write lock is taken. */
typedef struct packed {
  uint32_t scope;
  int64_t first_at, last_at;
  size_t n;
  GByteArray *blob;
} packed_t;

struct dedup_writer {
  dedup_store_t *s;
  sqlite3 *db;
  sqlite3_stmt *begin, *commit, *rollback, *insert;
  GArray *marks;     /* pending_t */
  dset_buf_t bytes;  /* event IDs and topics of the marks */
  dset_keys_t *keys; /* their set keys, built at commit (writer_keys()) */
  GArray *rows;      /* packed_t: the rows of the next commit */
  size_t nrows;      /* rows used in it */
  GArray *scratch;   /* dlog_mark_t of one row */
};

static int writer_prepare(dedup_writer_t *w, char *err, size_t errlen) {
  const dedup_store_t *s = w->s;
  if (db_prepare(s, w->db, "BEGIN IMMEDIATE", &w->begin, err, errlen) < 0 ||
      db_prepare(s, w->db, "COMMIT", &w->commit, err, errlen) < 0 ||
      db_prepare(s, w->db, "ROLLBACK", &w->rollback, err, errlen) < 0 ||
      db_prepare(s, w->db,
                 "INSERT INTO batches(scope, first_at, last_at, n, marks)"
                 " VALUES(?1, ?2, ?3, ?4, ?5)",
                 &w->insert, err, errlen) < 0)
    return -1;
  return 0;
}

int dedup_writer_open(dedup_store_t *s, dedup_writer_t **out, char *err,
                      size_t errlen) {
  dedup_writer_t *w = g_new0(dedup_writer_t, 1);
  int rc = -1;
  w->s = s;
  w->marks = g_array_new(FALSE, FALSE, sizeof(pending_t));
  w->keys = dset_keys_new();
  w->rows = g_array_new(FALSE, TRUE, sizeof(packed_t));
  w->scratch = g_array_new(FALSE, FALSE, sizeof(dlog_mark_t));
  if (db_open(s, &w->db, err, errlen) < 0 || writer_prepare(w, err, errlen) < 0)
    goto out;
  rc = 0;
out:
  if (rc < 0) {
    dedup_writer_close(w);
    w = NULL;
  }
  *out = w;
  return rc;
}

void dedup_writer_close(dedup_writer_t *w) {
  if (!w)
    return;
  sqlite3_finalize(w->begin);
  sqlite3_finalize(w->insert);
  sqlite3_finalize(w->commit);
  sqlite3_finalize(w->rollback);
  sqlite3_close(w->db);
  for (guint i = 0; i < w->rows->len; i++)
    g_byte_array_free(g_array_index(w->rows, packed_t, i).blob, TRUE);
  g_array_free(w->rows, TRUE);
  g_array_free(w->scratch, TRUE);
  g_array_free(w->marks, TRUE);
  dset_buf_free(&w->bytes);
  dset_keys_free(w->keys);
  g_free(w);
}

int dedup_writer_add(dedup_writer_t *w, const dedup_mark_t *m) {
  const char *topic = m->topic ? m->topic : "";
  pending_t p = {.scope = m->scope,
                 .partition = m->partition,
                 .offset = m->offset,
                 .handled_at = m->handled_at_ms,
                 .outcome = m->outcome,
                 .id_len = m->event_id_len,
                 .topic_len = strlen(topic),
                 .id_hash = m->id_hash,
                 .ref = m->claim_ref};
  p.id_off = dset_buf_put(&w->bytes, m->event_id, p.id_len);
  /* A batch usually holds one or a few topics: share the copy. */
  const pending_t *last =
      w->marks->len ? &g_array_index(w->marks, pending_t, w->marks->len - 1)
                    : NULL;
  if (last && last->topic_len == p.topic_len &&
      (!p.topic_len ||
       memcmp(w->bytes.data + last->topic_off, topic, p.topic_len) == 0))
    p.topic_off = last->topic_off;
  else
    p.topic_off = dset_buf_put(&w->bytes, topic, p.topic_len);
  g_array_append_val(w->marks, p);
  return 0;
}

size_t dedup_writer_pending(const dedup_writer_t *w) {
  return w->marks->len;
}

void dedup_writer_discard(dedup_writer_t *w) {
  g_array_set_size(w->marks, 0);
  w->bytes.len = 0;
  dset_keys_clear(w->keys);
}

/* The next row of the commit, its blob kept from earlier commits. */
static packed_t *writer_row(dedup_writer_t *w) {
  if (w->nrows == w->rows->len) {
    packed_t p = {.blob = g_byte_array_new()};
    g_array_append_val(w->rows, p);
  }
  return &g_array_index(w->rows, packed_t, w->nrows++);
}

/* Pack the marks of scope (from mark first on) into a row of the log. */
static void writer_pack_scope(dedup_writer_t *w, uint32_t scope, size_t first) {
  const pending_t *p = (const pending_t *)w->marks->data;
  packed_t *row = writer_row(w);
  g_array_set_size(w->scratch, 0);
  for (size_t i = first; i < w->marks->len; i++) {
    if (p[i].scope != scope)
      continue;
    dlog_mark_t m = {.id = w->bytes.data + p[i].id_off,
                     .id_len = p[i].id_len,
                     .topic = (const char *)w->bytes.data + p[i].topic_off,
                     .topic_len = p[i].topic_len,
                     .partition = p[i].partition,
                     .offset = p[i].offset,
                     .handled_at = p[i].handled_at,
                     .outcome = p[i].outcome};
    g_array_append_val(w->scratch, m);
  }
  row->scope = scope;
  row->n = w->scratch->len;
  dlog_pack(row->blob, (const dlog_mark_t *)w->scratch->data, row->n,
            &row->first_at, &row->last_at);
}

/* The set keys of the marks buffered since the keys were last built: at
 * commit, on the thread that commits (the durability thread), not on the
 * member's as each mark is added; those of a failed commit stay built for
 * the next try. A mark of a claim with a reference is just that (its
 * claim is open until this commit or a release, so the record is there). */
static void writer_keys(dedup_writer_t *w) {
  const pending_t *p = (const pending_t *)w->marks->data;
  for (size_t i = dset_keys_count(w->keys); i < w->marks->len; i++)
    if (p[i].ref)
      dset_keys_add_ref(w->keys, p[i].ref, p[i].handled_at);
    else
      dset_keys_add_h(w->keys, p[i].scope, w->bytes.data + p[i].id_off,
                      p[i].id_len, p[i].handled_at, p[i].id_hash);
}

/* The buffered marks as rows of the log, one per scope (in the order the
 * scopes first appear; a member's batch has one), and their set keys.
 * Done before the write lock is taken. */
static void writer_pack(dedup_writer_t *w) {
  const pending_t *p = (const pending_t *)w->marks->data;
  writer_keys(w);
  w->nrows = 0;
  for (size_t i = 0; i < w->marks->len; i++) {
    int done = 0;
    for (size_t j = 0; j < w->nrows && !done; j++)
      done = g_array_index(w->rows, packed_t, j).scope == p[i].scope;
    if (!done)
      writer_pack_scope(w, p[i].scope, i);
  }
}

static int writer_insert(dedup_writer_t *w) {
  int rc = SQLITE_OK;
  for (size_t i = 0; rc == SQLITE_OK && i < w->nrows; i++) {
    const packed_t *row = &g_array_index(w->rows, packed_t, i);
    sqlite3_bind_int64(w->insert, 1, row->scope);
    sqlite3_bind_int64(w->insert, 2, row->first_at);
    sqlite3_bind_int64(w->insert, 3, row->last_at);
    sqlite3_bind_int64(w->insert, 4, (int64_t)row->n);
    sqlite3_bind_blob64(w->insert, 5, row->blob->data, row->blob->len,
                        SQLITE_STATIC);
    rc = stmt_run(w->insert);
  }
  return rc;
}

/* Faults that may clear by themselves (another writer, a full or
 * read-only file system, I/O trouble): the caller waits and retries. */
static int is_transient(int rc) {
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
  case SQLITE_FULL:
  case SQLITE_IOERR:
  case SQLITE_READONLY:
    return 1;
  default:
    return 0;
  }
}

int dedup_writer_commit(dedup_writer_t *w, int *transient, char *err,
                        size_t errlen) {
  return dedup_writer_commit_with(w, NULL, NULL, transient, err, errlen);
}

int dedup_writer_commit_with(dedup_writer_t *w, dedup_writer_extra_fn extra,
                             void *arg, int *transient, char *err,
                             size_t errlen) {
  int rc = SQLITE_OK, moved = 0;
  if (transient)
    *transient = 0;
  if (w->marks->len == 0 && !extra)
    return 0;
  writer_pack(w);
  __atomic_add_fetch(&w->s->writers_waiting, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_lock(&w->s->write_lock);
  __atomic_sub_fetch(&w->s->writers_waiting, 1, __ATOMIC_ACQ_REL);
  rc = stmt_run(w->begin);
  if (rc == SQLITE_OK)
    rc = writer_insert(w);
  if (rc == SQLITE_OK && extra)
    rc = extra(w->db, arg);
  if (rc == SQLITE_OK)
    rc = stmt_run(w->commit);
  /* Durable in a file that no later start reads is not durable: a
   * permanent fault. One stat() per batch. */
  if (rc == SQLITE_OK)
    moved = dfile_check_same(w->s->path, &w->s->file, err, errlen) < 0;
  if (rc == SQLITE_OK && !moved) {
    /* Committed marks become visible in the set (IDs added without a
     * claim too), still under write_lock: see the top of the file. */
    dset_mark_committed_batch(w->s->set, w->keys);
  } else if (rc != SQLITE_OK) {
    db_fail(w->s, w->db, err, errlen);
    if (transient)
      *transient = is_transient(rc);
    if (!sqlite3_get_autocommit(w->db))
      stmt_run(w->rollback);
  }
  pthread_mutex_unlock(&w->s->write_lock);
  pthread_cond_broadcast(&w->s->writers_done);
  if (rc != SQLITE_OK || moved)
    return -1;
  dedup_writer_discard(w);
  segmenter_poke(w->s);
  return 0;
}

/* --------------------------------------------------------------- attempts */

static const char *const attempts_sql =
    "CREATE TABLE IF NOT EXISTS attempts("
    " scope INTEGER NOT NULL, event_id BLOB NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " PRIMARY KEY(scope, event_id));"
    "CREATE TABLE IF NOT EXISTS opened("
    " id INTEGER PRIMARY KEY, at INTEGER NOT NULL);";

typedef struct attempts {
  pthread_mutex_t lock; /* calls, counted */
  GHashTable *calls;    /* GBytes (scope, ID) -> attempts */
  int n_calls;          /* g_hash_table_size(calls), read without the lock */
  GHashTable *counted;  /* "scope\x1ftopic\x1fpartition" -> first calls */
  int unclean;          /* the previous process left its note in `opened` */
  int64_t note;         /* this process's row in `opened`; 0 when none */
} attempts_t;

static GBytes *attempts_key(uint32_t scope, const void *id, size_t len) {
  uint8_t *k = g_malloc(sizeof(scope) + len);
  memcpy(k, &scope, sizeof(scope));
  if (len)
    memcpy(k + sizeof(scope), id, len);
  return g_bytes_new_take(k, sizeof(scope) + len);
}

static void attempts_set(attempts_t *a, GBytes *key, uint32_t n) {
  pthread_mutex_lock(&a->lock);
  if (n)
    g_hash_table_replace(a->calls, key, GUINT_TO_POINTER(n));
  else
    g_hash_table_remove(a->calls, key);
  __atomic_store_n(&a->n_calls, (int)g_hash_table_size(a->calls),
                   __ATOMIC_RELAXED);
  pthread_mutex_unlock(&a->lock);
  if (!n)
    g_bytes_unref(key);
}

/* Rows of IDs without a durable mark go to memory; rows of marked IDs
 * (the record got its outcome) are deleted. */
static int attempts_load(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *sel = NULL, *del = NULL;
  GPtrArray *stale =
      g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  int rc = -1, step;
  if (db_prepare(s, s->db, "SELECT scope, event_id, attempts FROM attempts",
                 &sel, err, errlen) < 0 ||
      db_prepare(s, s->db,
                 "DELETE FROM attempts WHERE scope = ?1 AND event_id = ?2",
                 &del, err, errlen) < 0)
    goto out;
  while ((step = sqlite3_step(sel)) == SQLITE_ROW) {
    uint32_t scope = (uint32_t)sqlite3_column_int64(sel, 0);
    const void *id = sqlite3_column_blob(sel, 1); /* before _bytes() */
    size_t len = (size_t)sqlite3_column_bytes(sel, 1);
    GBytes *key = attempts_key(scope, id, len);
    if (dedup_claim(s, scope, id, len) == DEDUP_NEW) {
      dset_release(s->set, scope, id, len);
      attempts_set(s->att, key, (uint32_t)sqlite3_column_int(sel, 2));
    } else {
      g_ptr_array_add(stale, key);
    }
  }
  if (step != SQLITE_DONE)
    goto fail;
  for (guint i = 0; i < stale->len; i++) {
    gsize n;
    const uint8_t *k = g_bytes_get_data(stale->pdata[i], &n);
    uint32_t scope;
    memcpy(&scope, k, sizeof(scope));
    sqlite3_bind_int64(del, 1, scope);
    sqlite3_bind_blob64(del, 2, k + sizeof(scope), n - sizeof(scope),
                        SQLITE_STATIC);
    if (stmt_run(del) != SQLITE_OK)
      goto fail;
  }
  rc = 0;
  goto out;
fail:
  db_fail(s, s->db, err, errlen);
out:
  sqlite3_finalize(sel);
  sqlite3_finalize(del);
  g_ptr_array_free(stale, TRUE);
  return rc;
}

/* Whether the previous process left its note, and this process's own. */
static int attempts_note(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = -1;
  if (db_prepare(s, s->db, "SELECT count(*) FROM opened", &st, err, errlen) < 0)
    return -1;
  if (sqlite3_step(st) != SQLITE_ROW) {
    db_fail(s, s->db, err, errlen);
    goto out;
  }
  s->att->unclean = sqlite3_column_int64(st, 0) > 0;
  char sql[128];
  snprintf(sql, sizeof(sql),
           "DELETE FROM opened; INSERT INTO opened(at) VALUES(%" PRId64 ")",
           dedup_now_ms());
  if (db_exec(s, s->db, sql, err, errlen) < 0)
    goto out;
  s->att->note = sqlite3_last_insert_rowid(s->db);
  rc = 0;
out:
  sqlite3_finalize(st);
  return rc;
}

static int attempts_open(dedup_store_t *s, char *err, size_t errlen) {
  int rc = -1;
  attempts_t *a = g_new0(attempts_t, 1);
  pthread_mutex_init(&a->lock, NULL);
  a->calls = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                   (GDestroyNotify)g_bytes_unref, NULL);
  a->counted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  s->att = a;
  pthread_mutex_lock(&s->db_lock);
  pthread_mutex_lock(&s->write_lock);
  if (db_exec(s, s->db, "BEGIN IMMEDIATE", err, errlen) < 0 ||
      db_exec(s, s->db, attempts_sql, err, errlen) < 0 ||
      attempts_note(s, err, errlen) < 0 || attempts_load(s, err, errlen) < 0)
    goto out;
  rc = db_exec(s, s->db, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(s->db))
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  if (rc < 0)
    a->note = 0;
  pthread_mutex_unlock(&s->write_lock);
  pthread_mutex_unlock(&s->db_lock);
  if (a->unclean && rc == 0)
    log_msg(KHOST_LOG_NOTICE, "dedup",
            "%s: the previous process using it did not stop cleanly: the "
            "first calls of every partition are recorded before they are "
            "made, so that a record that crashes the host is not tried "
            "forever",
            s->path);
  return rc;
}

/* A clean stop: remove this process's note. */
static void attempts_close(dedup_store_t *s) {
  attempts_t *a = s->att;
  char sql[64], err[512];
  if (!a)
    return;
  if (a->note && s->db) {
    snprintf(sql, sizeof(sql), "DELETE FROM opened WHERE id = %" PRId64,
             a->note);
    pthread_mutex_lock(&s->write_lock);
    if (db_exec(s, s->db, sql, err, sizeof(err)) < 0)
      log_msg(KHOST_LOG_WARNING, "dedup",
              "cannot note the clean stop (the next start records its "
              "first calls): %s",
              err);
    pthread_mutex_unlock(&s->write_lock);
  }
  g_hash_table_destroy(a->calls);
  g_hash_table_destroy(a->counted);
  pthread_mutex_destroy(&a->lock);
  g_free(a);
  s->att = NULL;
}

int dedup_unclean_start(dedup_store_t *s) {
  return s->att->unclean;
}

int dedup_attempts_recovering(dedup_store_t *s, uint32_t scope,
                              const char *topic, int32_t partition,
                              uint32_t budget) {
  attempts_t *a = s->att;
  if (!a->unclean)
    return 0;
  char *key =
      g_strdup_printf("%" PRIu32 "\x1f%s\x1f%" PRId32, scope, topic, partition);
  pthread_mutex_lock(&a->lock);
  uint32_t n = GPOINTER_TO_UINT(g_hash_table_lookup(a->counted, key));
  int recovering = n < budget;
  if (recovering)
    g_hash_table_replace(a->counted, key, GUINT_TO_POINTER(n + 1));
  else
    g_free(key);
  pthread_mutex_unlock(&a->lock);
  return recovering;
}

uint32_t dedup_attempts_get(dedup_store_t *s, uint32_t scope, const void *id,
                            size_t len) {
  attempts_t *a = s->att;
  if (__atomic_load_n(&a->n_calls, __ATOMIC_RELAXED) == 0)
    return 0;
  GBytes *key = attempts_key(scope, id, len);
  pthread_mutex_lock(&a->lock);
  uint32_t n = GPOINTER_TO_UINT(g_hash_table_lookup(a->calls, key));
  pthread_mutex_unlock(&a->lock);
  g_bytes_unref(key);
  return n;
}

void dedup_attempts_forget(dedup_store_t *s, uint32_t scope, const void *id,
                           size_t len) {
  if (__atomic_load_n(&s->att->n_calls, __ATOMIC_RELAXED) == 0)
    return;
  attempts_set(s->att, attempts_key(scope, id, len), 0);
}

/* Run one statement of the attempts table on the writer's connection (a
 * transaction of its own), under write_lock. */
static int attempts_write(dedup_writer_t *w, const char *sql,
                          const dedup_attempt_t *a, char *err, size_t errlen) {
  dedup_store_t *s = w->s;
  sqlite3_stmt *st = NULL;
  int rc = -1;
  pthread_mutex_lock(&s->write_lock);
  if (db_prepare(s, w->db, sql, &st, err, errlen) < 0)
    goto out;
  sqlite3_bind_int64(st, 1, a->scope);
  sqlite3_bind_blob64(st, 2, a->event_id_len ? a->event_id : "",
                      a->event_id_len, SQLITE_STATIC);
  if (sqlite3_bind_parameter_count(st) > 2) {
    sqlite3_bind_text(st, 3, a->topic ? a->topic : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, a->partition);
    sqlite3_bind_int64(st, 5, a->offset);
    sqlite3_bind_int64(st, 6, a->attempts);
    sqlite3_bind_int64(st, 7, dedup_now_ms());
  }
  if (stmt_run(st) != SQLITE_OK) {
    db_fail(s, w->db, err, errlen);
    goto out;
  }
  rc = 0;
out:
  pthread_mutex_unlock(&s->write_lock);
  sqlite3_finalize(st);
  return rc;
}

int dedup_attempts_put(dedup_writer_t *w, const dedup_attempt_t *a, char *err,
                       size_t errlen) {
  if (attempts_write(w,
                     "INSERT INTO attempts(scope, event_id, topic, partition,"
                     " \"offset\", attempts, updated_at)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                     " ON CONFLICT(scope, event_id) DO UPDATE SET"
                     " attempts = excluded.attempts, topic = excluded.topic,"
                     " partition = excluded.partition,"
                     " \"offset\" = excluded.\"offset\","
                     " updated_at = excluded.updated_at",
                     a, err, errlen) < 0)
    return -1;
  attempts_set(w->s->att, attempts_key(a->scope, a->event_id, a->event_id_len),
               a->attempts);
  return 0;
}

int dedup_attempts_clear(dedup_writer_t *w, uint32_t scope, const void *id,
                         size_t len, char *err, size_t errlen) {
  dedup_attempt_t a = {.scope = scope, .event_id = id, .event_id_len = len};
  dedup_attempts_forget(w->s, scope, id, len);
  return attempts_write(
      w, "DELETE FROM attempts WHERE scope = ?1 AND event_id = ?2", &a, err,
      errlen);
}
