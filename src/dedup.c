/*
 * Dedup store. See dedup.h for the contract.
 *
 * On disk: `marks`, an append-only rowid table (plus an index on
 * handled_at, which also grows at its right edge because marks arrive in
 * time order), and `scopes`, the pipeline names. There is no index on the
 * event ID: inserting random keys into a large B-tree costs a dirty page
 * per row.
 *
 * In memory: the exact set of (scope, event ID) inside the retention window,
 * split into stripes (each a mutex, a GHashTable and an arena) so that
 * members rarely wait for each other. Keys are compact records in large
 * arena chunks: a canonical UUID is packed to 16 bytes, anything else is
 * kept verbatim behind its length. Each record also holds the newest
 * handled_at among its committed marks, so that pruning an old mark does
 * not forget an ID that was marked again later.
 *
 * Lock order: write_lock, then SQLite's write lock, then one stripe.
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
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "log.h"

#define SCHEMA_VERSION 1
#define DEFAULT_BUSY_MS 10000
#define PRUNE_BATCH 5000
#define PRUNE_KEEP_BYTES ((size_t)1 << 20)
#define INSERT_ROWS 50
#define INSERT_COLS 7
#define STRIPE_BITS 4
#define NSTRIPES (1u << STRIPE_BITS)
#define CHUNK_SIZE ((size_t)256 << 10)
#define UUID_TEXT_LEN 36
#define UUID_BYTES 16
#define PROBE_INLINE 128
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS scopes("
    " id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);"
    "CREATE TABLE IF NOT EXISTS marks("
    " seq INTEGER PRIMARY KEY, scope INTEGER NOT NULL,"
    " event_id BLOB NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " handled_at INTEGER NOT NULL, outcome INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS marks_handled_at ON marks(handled_at);";

/* The oldest marks, at most PRUNE_BATCH of them, with what the in-memory
 * set needs to forget them. */
static const char *const prune_sql =
    "DELETE FROM marks WHERE seq IN (SELECT seq FROM marks"
    " WHERE handled_at < ?1 ORDER BY handled_at LIMIT " G_STRINGIFY(
        PRUNE_BATCH) ") RETURNING scope, event_id";

/* ------------------------------------------------------------ key records */

enum { KEY_RAW = 0, KEY_UUID_LOWER = 1, KEY_UUID_UPPER = 2 };

/* A claim not (yet) backed by a committed mark. */
#define KEY_CLAIMED INT64_MIN

typedef struct key_rec {
  int64_t last_ms; /* newest committed handled_at, or KEY_CLAIMED */
  uint32_t scope;
  uint8_t form;   /* KEY_* */
  uint8_t body[]; /* 16 UUID bytes, or a varint length and the bytes */
} key_rec_t;

/* Hashing and equality cover scope, form and body, which are contiguous. */
_Static_assert(offsetof(key_rec_t, form) == offsetof(key_rec_t, scope) + 4,
               "scope and form must be contiguous");
_Static_assert(offsetof(key_rec_t, body) == offsetof(key_rec_t, form) + 1,
               "form and body must be contiguous");
#define KEY_IDENT_HDR (offsetof(key_rec_t, body) - offsetof(key_rec_t, scope))

static size_t varint_len(size_t v) {
  size_t n = 1;
  while (v >>= 7)
    n++;
  return n;
}

static size_t varint_put(uint8_t *p, size_t v) {
  size_t n = 0;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    p[n++] = b | (v ? 0x80 : 0);
  } while (v);
  return n;
}

static size_t varint_get(const uint8_t *p, size_t *v) {
  size_t n = 0, shift = 0;
  *v = 0;
  do {
    *v |= (size_t)(p[n] & 0x7f) << shift;
    shift += 7;
  } while (p[n++] & 0x80);
  return n;
}

#define HEX_LOWER 0x40
#define HEX_UPPER 0x80

/* 1 + the value of a hex digit, flagged with the case of a letter; 0 for
 * anything else. */
/* clang-format off */
static const uint8_t hex_digit[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11 | HEX_LOWER, ['b'] = 12 | HEX_LOWER, ['c'] = 13 | HEX_LOWER,
    ['d'] = 14 | HEX_LOWER, ['e'] = 15 | HEX_LOWER, ['f'] = 16 | HEX_LOWER,
    ['A'] = 11 | HEX_UPPER, ['B'] = 12 | HEX_UPPER, ['C'] = 13 | HEX_UPPER,
    ['D'] = 14 | HEX_UPPER, ['E'] = 15 | HEX_UPPER, ['F'] = 16 | HEX_UPPER,
};
/* clang-format on */

/* Where each byte's high digit sits in 8-4-4-4-12 text. */
static const uint8_t uuid_digit_pos[UUID_BYTES] = {
    0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

/* Pack a canonical UUID text into out and return KEY_UUID_*; KEY_RAW when
 * id is not one. Letters must share one case so that the packed form maps
 * back to exactly these bytes. */
static int uuid_pack(uint8_t out[UUID_BYTES], const uint8_t *id) {
  unsigned seen = 0;
  if (id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-')
    return KEY_RAW;
  for (int i = 0; i < UUID_BYTES; i++) {
    unsigned hi = hex_digit[id[uuid_digit_pos[i]]];
    unsigned lo = hex_digit[id[uuid_digit_pos[i] + 1]];
    if (!hi || !lo)
      return KEY_RAW;
    seen |= hi | lo;
    out[i] = (uint8_t)(((hi & 0x1f) - 1) << 4 | ((lo & 0x1f) - 1));
  }
  if ((seen & HEX_LOWER) && (seen & HEX_UPPER))
    return KEY_RAW;
  return seen & HEX_UPPER ? KEY_UUID_UPPER : KEY_UUID_LOWER;
}

/* Room key_build() may need for an ID of len bytes. */
static size_t key_room(size_t len) {
  return ALIGN8(offsetof(key_rec_t, body) + varint_len(len) + len);
}

/* Encode (scope, id) into r, which has key_room(len) bytes; returns the
 * record's size. */
static size_t key_build(key_rec_t *r, uint32_t scope, const uint8_t *id,
                        size_t len) {
  r->last_ms = KEY_CLAIMED;
  r->scope = scope;
  r->form = KEY_RAW;
  if (len == UUID_TEXT_LEN)
    r->form = (uint8_t)uuid_pack(r->body, id);
  if (r->form != KEY_RAW)
    return ALIGN8(offsetof(key_rec_t, body) + UUID_BYTES);
  size_t n = varint_put(r->body, len);
  if (len)
    memcpy(r->body + n, id, len);
  return ALIGN8(offsetof(key_rec_t, body) + n + len);
}

static size_t key_ident_len(const key_rec_t *r) {
  size_t len = UUID_BYTES;
  if (r->form == KEY_RAW)
    len = varint_get(r->body, &len) + len;
  return KEY_IDENT_HDR + len;
}

static uint64_t key_hash64(const key_rec_t *r) {
  return XXH3_64bits(&r->scope, key_ident_len(r));
}

static guint key_hash(gconstpointer k) {
  return (guint)key_hash64(k);
}

static gboolean key_equal(gconstpointer a, gconstpointer b) {
  const key_rec_t *x = a, *y = b;
  size_t n = key_ident_len(x);
  return n == key_ident_len(y) && memcmp(&x->scope, &y->scope, n) == 0;
}

/* One key built on the stack (heap for long IDs) for a single lookup. */
typedef struct probe {
  key_rec_t *rec;
  size_t size;
  uint64_t hash;
  union {
    key_rec_t hdr;
    uint8_t bytes[PROBE_INLINE];
  } inl;
} probe_t;

static void probe_init(probe_t *p, uint32_t scope, const void *id, size_t len) {
  size_t room = key_room(len);
  p->rec = room <= sizeof p->inl ? &p->inl.hdr : g_malloc(room);
  p->size = key_build(p->rec, scope, id, len);
  p->hash = key_hash64(p->rec);
}

static void probe_done(probe_t *p) {
  if (p->rec != &p->inl.hdr)
    g_free(p->rec);
}

/* A growable byte buffer (size_t lengths: IDs may be long). */
typedef struct buf {
  uint8_t *data;
  size_t len, cap;
} buf_t;

static size_t buf_grow(buf_t *b, size_t n, size_t align) {
  size_t off = (b->len + align - 1) & ~(align - 1);
  if (off + n > b->cap) {
    b->cap = MAX(off + n, b->cap * 2);
    b->data = g_realloc(b->data, b->cap);
  }
  b->len = off + n;
  return off;
}

static size_t buf_put(buf_t *b, const void *data, size_t n) {
  size_t off = buf_grow(b, n, 1);
  if (n)
    memcpy(b->data + off, data, n);
  return off;
}

/* A key encoded into a buf_t, 8-aligned. */
typedef struct key_ref {
  size_t off, size;
  uint64_t hash;
} key_ref_t;

static void key_append(buf_t *b, uint32_t scope, const void *id, size_t len,
                       key_ref_t *ref) {
  ref->off = buf_grow(b, key_room(len), 8);
  key_rec_t *r = (key_rec_t *)(b->data + ref->off);
  ref->size = key_build(r, scope, id, len);
  b->len = ref->off + ref->size;
  ref->hash = key_hash64(r);
}

/* ------------------------------------------------------------------ arena */

/* Chunks are CHUNK_SIZE-aligned so a key finds its chunk by masking its
 * address; a key too big for a chunk gets its own mapping, which it starts,
 * so the mask still works. Each chunk counts its live keys and is unmapped
 * when the last one goes: under steady retention old chunks empty and are
 * returned while new ones fill. */
typedef struct chunk {
  struct chunk *prev, *next;
  size_t map_size;
  size_t used; /* bump offset */
  size_t live; /* keys not yet freed */
} chunk_t;

#define CHUNK_HDR ALIGN8(sizeof(chunk_t))

typedef struct stripe {
  pthread_mutex_t lock;
  GHashTable *set; /* key_rec_t * in the arena below; key == value */
  chunk_t *chunks; /* every mapped chunk */
  chunk_t *active; /* where small keys are bump-allocated */
  size_t nchunks, mapped;
  char pad[64]; /* keeps neighbouring stripes off each other's lines */
} stripe_t;

static chunk_t *chunk_map(stripe_t *st, size_t size) {
  size_t span = size + CHUNK_SIZE;
  uint8_t *p = mmap(NULL, span, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    g_error("dedup: cannot map %zu bytes for event IDs: %s", size,
            g_strerror(errno));
  uint8_t *start = (uint8_t *)(((uintptr_t)p + CHUNK_SIZE - 1) &
                               ~(uintptr_t)(CHUNK_SIZE - 1));
  if (start > p)
    munmap(p, (size_t)(start - p));
  if (start + size < p + span)
    munmap(start + size, (size_t)(p + span - (start + size)));
  chunk_t *c = (chunk_t *)start;
  *c = (chunk_t){.next = st->chunks, .map_size = size, .used = CHUNK_HDR};
  if (st->chunks)
    st->chunks->prev = c;
  st->chunks = c;
  st->nchunks++;
  st->mapped += size;
  return c;
}

static void chunk_unmap(stripe_t *st, chunk_t *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    st->chunks = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (st->active == c)
    st->active = NULL;
  st->nchunks--;
  st->mapped -= c->map_size;
  munmap(c, c->map_size);
}

static key_rec_t *arena_alloc(stripe_t *st, size_t size) {
  chunk_t *c = st->active;
  if (size > CHUNK_SIZE - CHUNK_HDR) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    c = chunk_map(st, (CHUNK_HDR + size + page - 1) & ~(page - 1));
  } else if (!c || c->used + size > CHUNK_SIZE) {
    if (c && c->live == 0)
      chunk_unmap(st, c);
    c = st->active = chunk_map(st, CHUNK_SIZE);
  }
  key_rec_t *r = (key_rec_t *)((uint8_t *)c + c->used);
  c->used += size;
  c->live++;
  return r;
}

static void arena_free(stripe_t *st, key_rec_t *r) {
  chunk_t *c = (chunk_t *)((uintptr_t)r & ~(uintptr_t)(CHUNK_SIZE - 1));
  if (--c->live > 0)
    return;
  if (c == st->active)
    c->used = CHUNK_HDR; /* reuse: claim/release churn must not remap */
  else
    chunk_unmap(st, c);
}

static void stripe_init(stripe_t *st) {
  pthread_mutex_init(&st->lock, NULL);
  st->set = g_hash_table_new(key_hash, key_equal);
}

static void stripe_free(stripe_t *st) {
  if (!st->set)
    return;
  g_hash_table_destroy(st->set);
  while (st->chunks)
    chunk_unmap(st, st->chunks);
  pthread_mutex_destroy(&st->lock);
}

/* ------------------------------------------------------------------ store */

struct dedup_store {
  char *path;
  int64_t retention_ms;
  int64_t prune_interval_ms;
  int durability_full;
  int busy_ms;
  stripe_t stripes[NSTRIPES];
  pthread_mutex_t write_lock; /* see the lock order at the top */

  pthread_mutex_t db_lock; /* db: scopes */
  sqlite3 *db;

  pthread_mutex_t prune_lock; /* the prune_* fields below */
  sqlite3 *prune_db;
  sqlite3_stmt *prune_del;
  buf_t prune_keys;
  GArray *prune_refs;         /* key_ref_t into prune_keys */
  int64_t pruned, prune_runs; /* statistics, atomic */

  pthread_mutex_t stop_lock; /* stopping, stop_cond */
  pthread_cond_t stop_cond;
  int stopping;
  int has_thread;
  pthread_t thread;
};

static stripe_t *stripe_of(dedup_store_t *s, uint64_t hash) {
  return &s->stripes[hash >> (64 - STRIPE_BITS)];
}

/* Record that k has a committed mark handled at ms. */
static void set_note(dedup_store_t *s, const key_rec_t *k, size_t size,
                     uint64_t hash, int64_t ms) {
  stripe_t *st = stripe_of(s, hash);
  if (ms == KEY_CLAIMED) /* that value means "claimed"; a mark is older */
    ms++;
  pthread_mutex_lock(&st->lock);
  key_rec_t *r = g_hash_table_lookup(st->set, k);
  if (!r) {
    r = arena_alloc(st, size);
    memcpy(r, k, size);
    r->last_ms = ms;
    g_hash_table_add(st->set, r);
  } else if (r->last_ms < ms) {
    r->last_ms = ms;
  }
  pthread_mutex_unlock(&st->lock);
}

/* Forget k unless it is claimed or has a mark at or after cutoff. */
static void set_forget(dedup_store_t *s, const key_rec_t *k, uint64_t hash,
                       int64_t cutoff) {
  stripe_t *st = stripe_of(s, hash);
  pthread_mutex_lock(&st->lock);
  key_rec_t *r = g_hash_table_lookup(st->set, k);
  if (r && r->last_ms != KEY_CLAIMED && r->last_ms < cutoff) {
    g_hash_table_remove(st->set, r);
    arena_free(st, r);
  }
  pthread_mutex_unlock(&st->lock);
}

int dedup_claim(dedup_store_t *s, uint32_t scope, const void *id, size_t len) {
  probe_t p;
  int rc = DEDUP_SEEN;
  probe_init(&p, scope, id, len);
  stripe_t *st = stripe_of(s, p.hash);
  pthread_mutex_lock(&st->lock);
  if (!g_hash_table_contains(st->set, p.rec)) {
    key_rec_t *r = arena_alloc(st, p.size);
    memcpy(r, p.rec, p.size);
    g_hash_table_add(st->set, r);
    rc = DEDUP_NEW;
  }
  pthread_mutex_unlock(&st->lock);
  probe_done(&p);
  return rc;
}

void dedup_release(dedup_store_t *s, uint32_t scope, const void *id,
                   size_t len) {
  probe_t p;
  probe_init(&p, scope, id, len);
  stripe_t *st = stripe_of(s, p.hash);
  pthread_mutex_lock(&st->lock);
  key_rec_t *r = g_hash_table_lookup(st->set, p.rec);
  if (r && r->last_ms == KEY_CLAIMED) {
    g_hash_table_remove(st->set, r);
    arena_free(st, r);
  }
  pthread_mutex_unlock(&st->lock);
  probe_done(&p);
}

void dedup_stats(dedup_store_t *s, dedup_stats_t *out) {
  *out = (dedup_stats_t){0};
  for (unsigned i = 0; i < NSTRIPES; i++) {
    stripe_t *st = &s->stripes[i];
    pthread_mutex_lock(&st->lock);
    out->ids += g_hash_table_size(st->set);
    out->arena_chunks += st->nchunks;
    out->arena_bytes += st->mapped;
    pthread_mutex_unlock(&st->lock);
  }
  out->pruned = __atomic_load_n(&s->pruned, __ATOMIC_RELAXED);
  out->prune_runs = __atomic_load_n(&s->prune_runs, __ATOMIC_RELAXED);
}

size_t dedup_size(dedup_store_t *s) {
  size_t n = 0;
  for (unsigned i = 0; i < NSTRIPES; i++) {
    pthread_mutex_lock(&s->stripes[i].lock);
    n += g_hash_table_size(s->stripes[i].set);
    pthread_mutex_unlock(&s->stripes[i].lock);
  }
  return n;
}

int64_t dedup_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----------------------------------------------------------------- SQLite */

static int db_fail(const dedup_store_t *s, sqlite3 *db, char *err,
                   size_t errlen) {
  snprintf(err, errlen, "%s: %s", s->path,
           db ? sqlite3_errmsg(db) : "out of memory");
  return -1;
}

static int db_exec(const dedup_store_t *s, sqlite3 *db, const char *sql,
                   char *err, size_t errlen) {
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return db_fail(s, db, err, errlen);
  return 0;
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

/* A connection in WAL mode with the store's durability and busy wait. */
static int db_open(const dedup_store_t *s, sqlite3 **out, char *err,
                   size_t errlen) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int rc = -1;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(s->path, &db, flags, NULL) != SQLITE_OK) {
    db_fail(s, db, err, errlen);
    goto out;
  }
  sqlite3_busy_timeout(db, s->busy_ms);
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

static int schema_version(const dedup_store_t *s, int *version, char *err,
                          size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = db_prepare(s, s->db, "PRAGMA user_version", &st, err, errlen);
  if (rc == 0 && sqlite3_step(st) != SQLITE_ROW)
    rc = db_fail(s, s->db, err, errlen);
  if (rc == 0)
    *version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return rc;
}

static int schema_init(const dedup_store_t *s, char *err, size_t errlen) {
  int version = 0, rc = -1;
  char sql[64];
  if (db_exec(s, s->db, "BEGIN IMMEDIATE", err, errlen) < 0)
    return -1;
  if (schema_version(s, &version, err, errlen) < 0)
    goto out;
  if (version > SCHEMA_VERSION) {
    snprintf(err, errlen,
             "%s: dedup schema version %d is newer than this khost's (%d)",
             s->path, version, SCHEMA_VERSION);
    goto out;
  }
  snprintf(sql, sizeof sql, "PRAGMA user_version=%d", SCHEMA_VERSION);
  if (db_exec(s, s->db, schema_sql, err, errlen) < 0 ||
      db_exec(s, s->db, sql, err, errlen) < 0)
    goto out;
  rc = db_exec(s, s->db, "COMMIT", err, errlen);
out:
  if (!sqlite3_get_autocommit(s->db))
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

static int64_t retention_cutoff(const dedup_store_t *s, int64_t now_ms) {
  return s->retention_ms > 0 ? now_ms - s->retention_ms : INT64_MIN;
}

/* Fill the set from the marks inside retention. A full scan in rowid
 * order reads the table sequentially, which beats the handled_at index
 * when (as after pruning) nearly every row qualifies. */
static int load_marks(dedup_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc;
  if (db_prepare(s, s->db,
                 "SELECT scope, event_id, handled_at FROM marks NOT INDEXED"
                 " WHERE handled_at >= ?1",
                 &st, err, errlen) < 0)
    return -1;
  sqlite3_bind_int64(st, 1, retention_cutoff(s, dedup_now_ms()));
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    probe_t p;
    const void *id = sqlite3_column_blob(st, 1); /* before _bytes() */
    probe_init(&p, (uint32_t)sqlite3_column_int64(st, 0), id,
               (size_t)sqlite3_column_bytes(st, 1));
    set_note(s, p.rec, p.size, p.hash, sqlite3_column_int64(st, 2));
    probe_done(&p);
  }
  if (rc != SQLITE_DONE)
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

/* Delete up to PRUNE_BATCH old marks in one short transaction and forget
 * their IDs. Returns the number deleted, or -1. */
static int64_t prune_batch(dedup_store_t *s, int64_t cutoff, char *err,
                           size_t errlen) {
  sqlite3_stmt *del = s->prune_del;
  int64_t n = -1;
  int rc;
  s->prune_keys.len = 0;
  g_array_set_size(s->prune_refs, 0);
  pthread_mutex_lock(&s->write_lock);
  if (db_exec(s, s->prune_db, "BEGIN IMMEDIATE", err, errlen) < 0)
    goto out;
  sqlite3_bind_int64(del, 1, cutoff);
  while ((rc = sqlite3_step(del)) == SQLITE_ROW) {
    key_ref_t ref;
    const void *id = sqlite3_column_blob(del, 1); /* before _bytes() */
    key_append(&s->prune_keys, (uint32_t)sqlite3_column_int64(del, 0), id,
               (size_t)sqlite3_column_bytes(del, 1), &ref);
    g_array_append_val(s->prune_refs, ref);
  }
  sqlite3_reset(del);
  if (rc != SQLITE_DONE) {
    db_fail(s, s->prune_db, err, errlen);
    goto out;
  }
  if (db_exec(s, s->prune_db, "COMMIT", err, errlen) < 0)
    goto out;
  for (guint i = 0; i < s->prune_refs->len; i++) {
    key_ref_t *ref = &g_array_index(s->prune_refs, key_ref_t, i);
    set_forget(s, (key_rec_t *)(s->prune_keys.data + ref->off), ref->hash,
               cutoff);
  }
  n = s->prune_refs->len;
  __atomic_add_fetch(&s->pruned, n, __ATOMIC_RELAXED);
out:
  if (!sqlite3_get_autocommit(s->prune_db))
    sqlite3_exec(s->prune_db, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->write_lock);
  return n;
}

static int stopping(dedup_store_t *s) {
  return __atomic_load_n(&s->stopping, __ATOMIC_RELAXED);
}

int dedup_prune(dedup_store_t *s, int64_t now_ms, int64_t *removed, char *err,
                size_t errlen) {
  int64_t total = 0, n = PRUNE_BATCH;
  int rc = 0;
  if (s->retention_ms <= 0)
    goto out;
  pthread_mutex_lock(&s->prune_lock);
  /* Batch after batch, each releasing the write lock, so that writers
   * commit between them; a closing store stops between batches. */
  while (n == PRUNE_BATCH && !stopping(s)) {
    n = prune_batch(s, retention_cutoff(s, now_ms), err, errlen);
    if (n < 0) {
      rc = -1;
      break;
    }
    total += n;
  }
  /* Long IDs can make a batch's keys big: do not keep that around. */
  if (s->prune_keys.cap > PRUNE_KEEP_BYTES) {
    g_free(s->prune_keys.data);
    s->prune_keys = (buf_t){0};
  }
  pthread_mutex_unlock(&s->prune_lock);
  __atomic_add_fetch(&s->prune_runs, 1, __ATOMIC_RELAXED);
out:
  if (removed)
    *removed = total;
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

/* ------------------------------------------------------------ open, close */

static dedup_store_t *store_new(const dedup_opts_t *opts) {
  dedup_store_t *s = g_new0(dedup_store_t, 1);
  s->path = g_strdup(opts->path);
  s->retention_ms = opts->retention_ms;
  s->prune_interval_ms = opts->prune_interval_ms;
  s->durability_full = opts->durability_full;
  s->busy_ms =
      opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : DEFAULT_BUSY_MS;
  for (unsigned i = 0; i < NSTRIPES; i++)
    stripe_init(&s->stripes[i]);
  pthread_mutex_init(&s->write_lock, NULL);
  pthread_mutex_init(&s->db_lock, NULL);
  pthread_mutex_init(&s->prune_lock, NULL);
  pthread_mutex_init(&s->stop_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadline_after() */
  pthread_cond_init(&s->stop_cond, &ca);
  pthread_condattr_destroy(&ca);
  s->prune_refs = g_array_new(FALSE, FALSE, sizeof(key_ref_t));
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
  if (db_open(s, &s->db, err, errlen) < 0 || schema_init(s, err, errlen) < 0 ||
      db_open(s, &s->prune_db, err, errlen) < 0 ||
      db_prepare(s, s->prune_db, prune_sql, &s->prune_del, err, errlen) < 0 ||
      load_marks(s, err, errlen) < 0 || pruner_start(s, err, errlen) < 0)
    goto out;
  rc = 0;
out:
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
  pthread_cond_signal(&s->stop_cond);
  pthread_mutex_unlock(&s->stop_lock);
  if (s->has_thread)
    pthread_join(s->thread, NULL);
  sqlite3_finalize(s->prune_del);
  sqlite3_close(s->prune_db);
  sqlite3_close(s->db);
  for (unsigned i = 0; i < NSTRIPES; i++)
    stripe_free(&s->stripes[i]);
  g_free(s->prune_keys.data);
  g_array_free(s->prune_refs, TRUE);
  pthread_cond_destroy(&s->stop_cond);
  pthread_mutex_destroy(&s->stop_lock);
  pthread_mutex_destroy(&s->prune_lock);
  pthread_mutex_destroy(&s->db_lock);
  pthread_mutex_destroy(&s->write_lock);
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
  key_ref_t key; /* into dedup_writer.keys */
} pending_t;

struct dedup_writer {
  dedup_store_t *s;
  sqlite3 *db;
  sqlite3_stmt *begin, *commit, *rollback;
  sqlite3_stmt *insert1, *insertn; /* one row; INSERT_ROWS rows */
  GArray *marks;                   /* pending_t */
  buf_t bytes;                     /* event IDs and topics of the marks */
  buf_t keys; /* their set keys, built before any lock is taken */
};

/* An INSERT of `rows` marks. Several rows per statement spread SQLite's
 * per-statement work (cursors, halting) over many rows. */
static char *insert_sql(int rows) {
  GString *sql = g_string_new("INSERT INTO marks(scope, event_id, topic,"
                              " partition, \"offset\", handled_at, outcome)"
                              " VALUES");
  for (int i = 0; i < rows; i++)
    g_string_append(sql, i ? ",(?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?)");
  return g_string_free(sql, FALSE);
}

static int writer_prepare(dedup_writer_t *w, char *err, size_t errlen) {
  char *one = insert_sql(1), *many = insert_sql(INSERT_ROWS);
  const dedup_store_t *s = w->s;
  int rc = -1;
  if (db_prepare(s, w->db, "BEGIN IMMEDIATE", &w->begin, err, errlen) < 0 ||
      db_prepare(s, w->db, "COMMIT", &w->commit, err, errlen) < 0 ||
      db_prepare(s, w->db, "ROLLBACK", &w->rollback, err, errlen) < 0 ||
      db_prepare(s, w->db, one, &w->insert1, err, errlen) < 0 ||
      db_prepare(s, w->db, many, &w->insertn, err, errlen) < 0)
    goto out;
  rc = 0;
out:
  g_free(one);
  g_free(many);
  return rc;
}

int dedup_writer_open(dedup_store_t *s, dedup_writer_t **out, char *err,
                      size_t errlen) {
  dedup_writer_t *w = g_new0(dedup_writer_t, 1);
  int rc = -1;
  w->s = s;
  w->marks = g_array_new(FALSE, FALSE, sizeof(pending_t));
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
  sqlite3_finalize(w->insert1);
  sqlite3_finalize(w->insertn);
  sqlite3_finalize(w->commit);
  sqlite3_finalize(w->rollback);
  sqlite3_close(w->db);
  g_array_free(w->marks, TRUE);
  g_free(w->bytes.data);
  g_free(w->keys.data);
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
                 .topic_len = strlen(topic)};
  p.id_off = buf_put(&w->bytes, m->event_id, p.id_len);
  /* A batch usually holds one or a few topics: share the copy. */
  const pending_t *last =
      w->marks->len ? &g_array_index(w->marks, pending_t, w->marks->len - 1)
                    : NULL;
  if (last && last->topic_len == p.topic_len &&
      (!p.topic_len ||
       memcmp(w->bytes.data + last->topic_off, topic, p.topic_len) == 0))
    p.topic_off = last->topic_off;
  else
    p.topic_off = buf_put(&w->bytes, topic, p.topic_len);
  key_append(&w->keys, p.scope, w->bytes.data + p.id_off, p.id_len, &p.key);
  g_array_append_val(w->marks, p);
  return 0;
}

size_t dedup_writer_pending(const dedup_writer_t *w) {
  return w->marks->len;
}

void dedup_writer_discard(dedup_writer_t *w) {
  g_array_set_size(w->marks, 0);
  w->bytes.len = 0;
  w->keys.len = 0;
}

/* Bytes of the writer's buffer at off; never NULL, because SQLite binds a
 * NULL pointer as SQL NULL even when the length is zero. */
static const char *writer_bytes(const dedup_writer_t *w, size_t off,
                                size_t len) {
  return len ? (const char *)w->bytes.data + off : "";
}

/* Bind mark p as the row starting at parameter base + 1. */
static void writer_bind(dedup_writer_t *w, sqlite3_stmt *st, int base,
                        const pending_t *p) {
  sqlite3_bind_int64(st, base + 1, p->scope);
  sqlite3_bind_blob64(st, base + 2, writer_bytes(w, p->id_off, p->id_len),
                      p->id_len, SQLITE_STATIC);
  sqlite3_bind_text64(st, base + 3, writer_bytes(w, p->topic_off, p->topic_len),
                      p->topic_len, SQLITE_STATIC, SQLITE_UTF8);
  sqlite3_bind_int(st, base + 4, p->partition);
  sqlite3_bind_int64(st, base + 5, p->offset);
  sqlite3_bind_int64(st, base + 6, p->handled_at);
  sqlite3_bind_int(st, base + 7, p->outcome);
}

static int writer_insert(dedup_writer_t *w) {
  const pending_t *p = (const pending_t *)w->marks->data;
  size_t n = w->marks->len, i = 0;
  int rc = SQLITE_OK;
  for (; rc == SQLITE_OK && n - i >= INSERT_ROWS; i += INSERT_ROWS) {
    for (int r = 0; r < INSERT_ROWS; r++)
      writer_bind(w, w->insertn, r * INSERT_COLS, &p[i + r]);
    rc = stmt_run(w->insertn);
  }
  for (; rc == SQLITE_OK && i < n; i++) {
    writer_bind(w, w->insert1, 0, &p[i]);
    rc = stmt_run(w->insert1);
  }
  return rc;
}

/* Make committed marks visible in the set (IDs added without a claim
 * too). */
static void writer_publish(dedup_writer_t *w) {
  for (guint i = 0; i < w->marks->len; i++) {
    const pending_t *p = &g_array_index(w->marks, pending_t, i);
    set_note(w->s, (key_rec_t *)(w->keys.data + p->key.off), p->key.size,
             p->key.hash, p->handled_at);
  }
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
  int rc = SQLITE_OK;
  if (transient)
    *transient = 0;
  if (w->marks->len == 0)
    return 0;
  pthread_mutex_lock(&w->s->write_lock);
  rc = stmt_run(w->begin);
  if (rc == SQLITE_OK)
    rc = writer_insert(w);
  if (rc == SQLITE_OK)
    rc = stmt_run(w->commit);
  if (rc == SQLITE_OK) {
    writer_publish(w);
  } else {
    db_fail(w->s, w->db, err, errlen);
    if (transient)
      *transient = is_transient(rc);
    if (!sqlite3_get_autocommit(w->db))
      stmt_run(w->rollback);
  }
  pthread_mutex_unlock(&w->s->write_lock);
  if (rc != SQLITE_OK)
    return -1;
  dedup_writer_discard(w);
  return 0;
}
