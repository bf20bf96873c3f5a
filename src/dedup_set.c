/*
 * The dedup store's in-memory set. See dedup_set.h for the contract.
 *
 * The exact set of (scope, event ID) inside the retention window, split
 * into stripes (each a mutex, a GHashTable and an arena) so that members
 * rarely wait for each other. Keys are compact records in large arena
 * chunks: a canonical UUID is packed to 16 bytes, anything else is kept
 * verbatim behind its length. Each record also holds the newest handled_at
 * among its committed marks, so that pruning an old mark does not forget an
 * ID that was marked again later.
 *
 * Replays (dset_claim_again()) claim a committed key again without
 * dropping its committed state: such keys are also listed in their
 * stripe's `reclaimed` table until the re-claim is committed or released.
 * Replays are rare, so the table is usually empty and costs one size check.
 *
 * Held claims (dset_claim_ref_h()): the claimer gets the claimed record
 * itself, and its mark at commit (dset_keys_add_ref()) writes the record
 * without looking it up. Such a record stays where it is until that mark
 * or a release: only dset_release*() and forget_locked() free records, a
 * release frees only what its own caller claimed, forget_locked() skips
 * records that are claimed, and the arena never moves a live record (a
 * chunk is reused or unmapped only when none of its records is live). The
 * one way a held record could become committed while still held is a mark
 * without the reference (another writer's, which the store's members do
 * not make: a member marks only what it claimed); such a record is listed
 * in its stripe's `held` table, which pruning skips, until the holder's
 * mark or release. Usually empty too.
 *
 * Locks: one stripe at a time, never two. The store (dedup.c) takes its
 * own locks first.
 *
 * Running out of memory aborts, as glib's allocators do.
 */
#include "dedup_set.h"

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dedup_pack.h"
#include "id_hash.h"

#define STRIPE_BITS 4
#define NSTRIPES (1u << STRIPE_BITS)
#define CHUNK_SIZE ((size_t)256 << 10)
#define UUID_TEXT_LEN 36
#define UUID_BYTES 16
#define PROBE_INLINE 128
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

/* ------------------------------------------------------------ key records */

enum { KEY_RAW = 0, KEY_UUID_LOWER = 1, KEY_UUID_UPPER = 2 };

/* A claim not (yet) backed by a committed mark. */
#define KEY_CLAIMED INT64_MIN
/* The same, with the record given to the claimer (dset_claim_ref_h()). */
#define KEY_HELD (INT64_MIN + 1)

typedef struct key_rec {
  int64_t last_ms; /* newest committed handled_at, or KEY_CLAIMED/HELD */
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

/* Where each byte's high digit sits in 8-4-4-4-12 text. */
static const uint8_t uuid_digit_pos[UUID_BYTES] = {
    0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

/* Pack a canonical UUID text into out and return KEY_UUID_*; KEY_RAW when
 * id is not one. Letters must share one case so that the packed form maps
 * back to exactly these bytes. */
static int uuid_pack(uint8_t out[UUID_BYTES], const uint8_t *id) {
  switch (dpack_uuid_parse(id, out)) {
  case DPACK_UUID_LOWER:
    return KEY_UUID_LOWER;
  case DPACK_UUID_UPPER:
    return KEY_UUID_UPPER;
  default:
    return KEY_RAW;
  }
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

/* The ID's bytes back from a packed UUID (r->form says which case). */
static void uuid_unpack(char out[UUID_TEXT_LEN], const key_rec_t *r) {
  const char *digits =
      r->form == KEY_UUID_UPPER ? "0123456789ABCDEF" : "0123456789abcdef";
  memset(out, '-', UUID_TEXT_LEN);
  for (int i = 0; i < UUID_BYTES; i++) {
    out[uuid_digit_pos[i]] = digits[r->body[i] >> 4];
    out[uuid_digit_pos[i] + 1] = digits[r->body[i] & 0xf];
  }
}

/* id_hash() of the ID a record holds: the hash the caller computed, from
 * the bytes it was built from. Only needed where no hash came with the
 * key (key_hash() without a hint). */
static uint64_t key_hash64(const key_rec_t *r) {
  char text[UUID_TEXT_LEN];
  size_t len;
  if (r->form != KEY_RAW) {
    uuid_unpack(text, r);
    return id_hash(r->scope, text, UUID_TEXT_LEN);
  }
  size_t n = varint_get(r->body, &len);
  return id_hash(r->scope, r->body + n, len);
}

/* The key whose hash is known on this thread, for the GHashTable call
 * about to be made with it under its stripe's lock: every lookup, add and
 * remove passes the hash the key came with, so that a record's ID is
 * hashed once (id_hash.h), not once per table call. */
static __thread const key_rec_t *hint_rec;
static __thread uint64_t hint_hash;

static void hint(const key_rec_t *r, uint64_t hash) {
  hint_rec = r;
  hint_hash = hash;
}

static guint key_hash(gconstpointer k) {
  return (guint)(k == hint_rec ? hint_hash : key_hash64(k));
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

static void probe_init(probe_t *p, uint32_t scope, const void *id, size_t len,
                       uint64_t hash) {
  size_t room = key_room(len);
  p->rec = room <= sizeof p->inl ? &p->inl.hdr : g_malloc(room);
  p->size = key_build(p->rec, scope, id, len);
  p->hash = id_hash_or(hash, scope, id, len);
}

static void probe_done(probe_t *p) {
  if (p->rec != &p->inl.hdr)
    g_free(p->rec);
}

/* ------------------------------------------------------------ byte buffer */

static size_t buf_grow(dset_buf_t *b, size_t n, size_t align) {
  size_t off = (b->len + align - 1) & ~(align - 1);
  if (off + n > b->cap) {
    b->cap = MAX(off + n, b->cap * 2);
    b->data = g_realloc(b->data, b->cap);
  }
  b->len = off + n;
  return off;
}

size_t dset_buf_put(dset_buf_t *b, const void *data, size_t n) {
  size_t off = buf_grow(b, n, 1);
  if (n)
    memcpy(b->data + off, data, n);
  return off;
}

void dset_buf_free(dset_buf_t *b) {
  g_free(b->data);
  *b = (dset_buf_t){0};
}

/* ------------------------------------------------------------ key batches */

/* A key encoded into dset_keys.bytes, 8-aligned. */
typedef struct key_ref {
  size_t off, size;
  uint64_t hash;
  key_rec_t *held; /* a held claim's record (off and size unused), or NULL */
  int64_t held_ms; /* its handled_ms */
} key_ref_t;

struct dset_keys {
  dset_buf_t bytes; /* key_rec_t records; last_ms holds the handled_ms */
  GArray *refs;     /* key_ref_t into bytes, or to held records */
};

dset_keys_t *dset_keys_new(void) {
  dset_keys_t *k = g_new0(dset_keys_t, 1);
  k->refs = g_array_new(FALSE, FALSE, sizeof(key_ref_t));
  return k;
}

void dset_keys_free(dset_keys_t *k) {
  if (!k)
    return;
  dset_buf_free(&k->bytes);
  g_array_free(k->refs, TRUE);
  g_free(k);
}

void dset_keys_add(dset_keys_t *k, uint32_t scope, const void *id, size_t len,
                   int64_t handled_ms) {
  dset_keys_add_h(k, scope, id, len, handled_ms, ID_HASH_NONE);
}

void dset_keys_add_h(dset_keys_t *k, uint32_t scope, const void *id, size_t len,
                     int64_t handled_ms, uint64_t hash) {
  key_ref_t ref;
  ref.off = buf_grow(&k->bytes, key_room(len), 8);
  key_rec_t *r = (key_rec_t *)(k->bytes.data + ref.off);
  ref.size = key_build(r, scope, id, len);
  r->last_ms = handled_ms; /* set_note() keeps it off KEY_CLAIMED */
  k->bytes.len = ref.off + ref.size;
  ref.hash = id_hash_or(hash, scope, id, len);
  ref.held = NULL;
  ref.held_ms = 0;
  g_array_append_val(k->refs, ref);
}

size_t dset_keys_count(const dset_keys_t *k) {
  return k->refs->len;
}

void dset_keys_clear(dset_keys_t *k) {
  k->bytes.len = 0;
  g_array_set_size(k->refs, 0);
}

void dset_keys_trim(dset_keys_t *k, size_t keep_bytes) {
  dset_keys_clear(k);
  if (k->bytes.cap > keep_bytes)
    dset_buf_free(&k->bytes);
}

void dset_keys_add_ref(dset_keys_t *k, dset_ref_t *ref, int64_t handled_ms) {
  key_ref_t kr = {.held = (key_rec_t *)ref, .held_ms = handled_ms};
  g_array_append_val(k->refs, kr);
}

static const key_rec_t *keys_rec(const dset_keys_t *k, const key_ref_t *ref) {
  return (const key_rec_t *)(k->bytes.data + ref->off);
}

/* ------------------------------------------------------------------ arena */

/* Chunks are CHUNK_SIZE-aligned so a key finds its chunk by masking its
 * address; a key too big for a chunk gets its own mapping, which it starts,
 * so the mask still works. Each chunk counts its live keys and is unmapped
 * when the last one goes: under steady retention old chunks empty and are
 * returned while new ones fill. */
typedef struct chunk {
  struct chunk *prev, *next;
  unsigned stripe; /* the index of the stripe it belongs to */
  size_t map_size;
  size_t used; /* bump offset */
  size_t live; /* keys not yet freed */
} chunk_t;

#define CHUNK_HDR ALIGN8(sizeof(chunk_t))

typedef struct stripe {
  pthread_mutex_t lock;
  GHashTable *set;       /* key_rec_t * in the arena below; key == value */
  GHashTable *reclaimed; /* committed keys of set claimed again (by address) */
  GHashTable *held;      /* committed keys of set whose held claim is open (by
                            address; see the top of the file) */
  chunk_t *chunks;       /* every mapped chunk */
  chunk_t *active;       /* where small keys are bump-allocated */
  size_t nchunks, mapped;
  unsigned index; /* in dset.stripes */
  char pad[64];   /* keeps neighbouring stripes off each other's lines */
} stripe_t;

struct dset {
  stripe_t stripes[NSTRIPES];
};

static chunk_t *chunk_of(const key_rec_t *r) {
  return (chunk_t *)((uintptr_t)r & ~(uintptr_t)(CHUNK_SIZE - 1));
}

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
  *c = (chunk_t){.next = st->chunks,
                 .stripe = st->index,
                 .map_size = size,
                 .used = CHUNK_HDR};
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
  chunk_t *c = chunk_of(r);
  if (--c->live > 0)
    return;
  if (c == st->active)
    c->used = CHUNK_HDR; /* reuse: claim/release churn must not remap */
  else
    chunk_unmap(st, c);
}

/* ----------------------------------------------------------------- stripes */

static void stripe_init(stripe_t *st, unsigned index) {
  pthread_mutex_init(&st->lock, NULL);
  st->set = g_hash_table_new(key_hash, key_equal);
  st->reclaimed = g_hash_table_new(NULL, NULL);
  st->held = g_hash_table_new(NULL, NULL);
  st->index = index;
}

static void stripe_free(stripe_t *st) {
  g_hash_table_destroy(st->set);
  g_hash_table_destroy(st->reclaimed);
  g_hash_table_destroy(st->held);
  while (st->chunks)
    chunk_unmap(st, st->chunks);
  pthread_mutex_destroy(&st->lock);
}

static unsigned stripe_index(uint64_t hash) {
  return (unsigned)(hash >> (64 - STRIPE_BITS));
}

static stripe_t *stripe_of(dset_t *set, uint64_t hash) {
  return &set->stripes[stripe_index(hash)];
}

/* The stripe's table calls, each with the hash k came with (hint()). */
static key_rec_t *table_find(stripe_t *st, const key_rec_t *k, uint64_t hash) {
  hint(k, hash);
  key_rec_t *r = g_hash_table_lookup(st->set, k);
  hint(NULL, 0);
  return r;
}

static void table_add(stripe_t *st, key_rec_t *r, uint64_t hash) {
  hint(r, hash);
  g_hash_table_add(st->set, r);
  hint(NULL, 0);
}

static void table_remove(stripe_t *st, key_rec_t *r, uint64_t hash) {
  hint(r, hash);
  g_hash_table_remove(st->set, r);
  hint(NULL, 0);
}

/* r is claimed and not committed (held or not). */
static int is_claimed(const key_rec_t *r) {
  return r->last_ms <= KEY_HELD;
}

/* r is committed and a held claim of it is open (see the top of the
 * file). The caller holds st->lock. */
static int is_held(const stripe_t *st, const key_rec_t *r) {
  return g_hash_table_size(st->held) > 0 && g_hash_table_contains(st->held, r);
}

/* r is a committed key of st claimed again. The caller holds st->lock. */
static int is_reclaimed(const stripe_t *st, const key_rec_t *r) {
  return g_hash_table_size(st->reclaimed) > 0 &&
         g_hash_table_contains(st->reclaimed, r);
}

/* Record that k has a committed mark handled at ms (which also settles a
 * re-claim of it). The caller holds st->lock. */
static void note_locked(stripe_t *st, const key_rec_t *k, size_t size,
                        uint64_t hash, int64_t ms) {
  if (ms <= KEY_HELD) /* those values mean "claimed"; a mark is older */
    ms = KEY_HELD + 1;
  key_rec_t *r = table_find(st, k, hash);
  if (!r) {
    r = arena_alloc(st, size);
    memcpy(r, k, size);
    r->last_ms = ms;
    table_add(st, r, hash);
  } else {
    /* Held by a claimer who will mark or release it by reference: it
     * must stay until then. */
    if (r->last_ms == KEY_HELD)
      g_hash_table_add(st->held, r);
    if (r->last_ms < ms)
      r->last_ms = ms;
    if (g_hash_table_size(st->reclaimed) > 0)
      g_hash_table_remove(st->reclaimed, r);
  }
}

/* The mark of a held claim: its record, no look-up. The caller holds
 * st->lock. */
static void note_held_locked(stripe_t *st, key_rec_t *r, int64_t ms) {
  if (ms <= KEY_HELD)
    ms = KEY_HELD + 1;
  if (r->last_ms < ms)
    r->last_ms = ms;
  if (g_hash_table_size(st->held) > 0)
    g_hash_table_remove(st->held, r);
  if (g_hash_table_size(st->reclaimed) > 0)
    g_hash_table_remove(st->reclaimed, r);
}

static void set_note(dset_t *set, const key_rec_t *k, size_t size,
                     uint64_t hash, int64_t ms) {
  stripe_t *st = stripe_of(set, hash);
  pthread_mutex_lock(&st->lock);
  note_locked(st, k, size, hash, ms);
  pthread_mutex_unlock(&st->lock);
}

/* Forget k unless it is claimed (or claimed again) or has a mark at or
 * after cutoff. The caller holds st->lock. */
static void forget_locked(stripe_t *st, const key_rec_t *k, uint64_t hash,
                          int64_t cutoff) {
  key_rec_t *r = table_find(st, k, hash);
  if (r && !is_claimed(r) && r->last_ms < cutoff && !is_reclaimed(st, r) &&
      !is_held(st, r)) {
    table_remove(st, r, hash);
    arena_free(st, r);
  }
}

/* --------------------------------------------------------------------- set */

dset_t *dset_new(void) {
  dset_t *set = g_new0(dset_t, 1);
  for (unsigned i = 0; i < NSTRIPES; i++)
    stripe_init(&set->stripes[i], i);
  return set;
}

void dset_free(dset_t *set) {
  if (!set)
    return;
  for (unsigned i = 0; i < NSTRIPES; i++)
    stripe_free(&set->stripes[i]);
  g_free(set);
}

/* dset_claim_h(), or with again set dset_claim_again_h(); with held set
 * (not again), dset_claim_ref_h(). */
static int claim(dset_t *set, uint32_t scope, const void *id, size_t len,
                 uint64_t hash, int again, int64_t before_ms,
                 dset_ref_t **held) {
  probe_t p;
  int found = DSET_NEW;
  probe_init(&p, scope, id, len, hash);
  stripe_t *st = stripe_of(set, p.hash);
  pthread_mutex_lock(&st->lock);
  key_rec_t *r = table_find(st, p.rec, p.hash);
  if (!r) {
    r = arena_alloc(st, p.size);
    memcpy(r, p.rec, p.size);
    table_add(st, r, p.hash);
    if (held) {
      r->last_ms = KEY_HELD;
      *held = (dset_ref_t *)r;
    }
  } else if (is_claimed(r)) {
    found = DSET_IN_FLIGHT;
  } else if (again && r->last_ms < before_ms && !is_reclaimed(st, r)) {
    g_hash_table_add(st->reclaimed, r);
  } else {
    found = DSET_SEEN;
  }
  pthread_mutex_unlock(&st->lock);
  probe_done(&p);
  return found;
}

int dset_claim(dset_t *set, uint32_t scope, const void *id, size_t len) {
  return claim(set, scope, id, len, ID_HASH_NONE, 0, 0, NULL);
}

int dset_claim_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                 uint64_t hash) {
  return claim(set, scope, id, len, hash, 0, 0, NULL);
}

int dset_claim_ref_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                     uint64_t hash, dset_ref_t **ref) {
  *ref = NULL;
  return claim(set, scope, id, len, hash, 0, 0, ref);
}

int dset_claim_again(dset_t *set, uint32_t scope, const void *id, size_t len,
                     int64_t before_ms) {
  return claim(set, scope, id, len, ID_HASH_NONE, 1, before_ms, NULL);
}

int dset_claim_again_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                       uint64_t hash, int64_t before_ms) {
  return claim(set, scope, id, len, hash, 1, before_ms, NULL);
}

void dset_release(dset_t *set, uint32_t scope, const void *id, size_t len) {
  dset_release_h(set, scope, id, len, ID_HASH_NONE);
}

void dset_release_h(dset_t *set, uint32_t scope, const void *id, size_t len,
                    uint64_t hash) {
  probe_t p;
  probe_init(&p, scope, id, len, hash);
  stripe_t *st = stripe_of(set, p.hash);
  pthread_mutex_lock(&st->lock);
  key_rec_t *r = table_find(st, p.rec, p.hash);
  if (r && is_claimed(r)) {
    table_remove(st, r, p.hash);
    arena_free(st, r);
  } else if (r && g_hash_table_size(st->held) > 0 &&
             g_hash_table_remove(st->held, r)) {
    /* a held claim ends; another mark committed the ID meanwhile */
  } else if (r && g_hash_table_size(st->reclaimed) > 0) {
    g_hash_table_remove(st->reclaimed, r); /* stays committed */
  }
  pthread_mutex_unlock(&st->lock);
  probe_done(&p);
}

void dset_mark_committed(dset_t *set, uint32_t scope, const void *id,
                         size_t len, int64_t handled_ms) {
  probe_t p;
  probe_init(&p, scope, id, len, ID_HASH_NONE);
  set_note(set, p.rec, p.size, p.hash, handled_ms);
  probe_done(&p);
}

/* The stripe of a batch's key: a held record's chunk knows it. */
static unsigned key_stripe(const key_ref_t *ref) {
  return ref->held ? chunk_of(ref->held)->stripe : stripe_index(ref->hash);
}

/* A batch's keys in stripe order (a counting sort of their indexes into
 * order, which has room for all), with where each stripe's run starts:
 * stripe i's keys are order[start[i]] up to order[start[i + 1]]. */

static void keys_by_stripe(const dset_keys_t *k, guint *order,
                           guint start[NSTRIPES + 1]) {
  guint at[NSTRIPES];
  memset(start, 0, sizeof(guint) * (NSTRIPES + 1));
  for (guint i = 0; i < k->refs->len; i++)
    start[key_stripe(&g_array_index(k->refs, key_ref_t, i)) + 1]++;
  for (unsigned s = 0; s < NSTRIPES; s++) {
    start[s + 1] += start[s];
    at[s] = start[s];
  }
  for (guint i = 0; i < k->refs->len; i++)
    order[at[key_stripe(&g_array_index(k->refs, key_ref_t, i))]++] = i;
}

/* One lock round trip per stripe for the whole batch, not one per key:
 * the durability thread marks a batch of hundreds of IDs while the member
 * claims the next ones in the same stripes. */
void dset_mark_committed_batch(dset_t *set, const dset_keys_t *k) {
  guint start[NSTRIPES + 1], local[512];
  guint *order =
      k->refs->len <= G_N_ELEMENTS(local) ? local : g_new(guint, k->refs->len);
  keys_by_stripe(k, order, start);
  for (unsigned s = 0; s < NSTRIPES; s++) {
    stripe_t *st = &set->stripes[s];
    if (start[s] == start[s + 1])
      continue;
    pthread_mutex_lock(&st->lock);
    for (guint j = start[s]; j < start[s + 1]; j++) {
      const key_ref_t *ref = &g_array_index(k->refs, key_ref_t, order[j]);
      if (ref->held) {
        note_held_locked(st, ref->held, ref->held_ms);
        continue;
      }
      const key_rec_t *r = keys_rec(k, ref);
      note_locked(st, r, ref->size, ref->hash, r->last_ms);
    }
    pthread_mutex_unlock(&st->lock);
  }
  if (order != local)
    g_free(order);
}

/* Keys forgotten under one lock round trip: the segment thread forgets
 * every ID of a segment it wrote (a million or more) while members claim
 * in the same stripes, which must not wait for a whole stripe's run. */
#define FORGET_RUN 256

/* One lock round trip per FORGET_RUN keys of a stripe, not one per key. */
void dset_forget_if_older(dset_t *set, const dset_keys_t *k,
                          int64_t cutoff_ms) {
  guint start[NSTRIPES + 1], local[512];
  guint *order =
      k->refs->len <= G_N_ELEMENTS(local) ? local : g_new(guint, k->refs->len);
  keys_by_stripe(k, order, start);
  for (unsigned s = 0; s < NSTRIPES; s++) {
    stripe_t *st = &set->stripes[s];
    if (start[s] == start[s + 1])
      continue;
    pthread_mutex_lock(&st->lock);
    for (guint j = start[s]; j < start[s + 1]; j++) {
      const key_ref_t *ref = &g_array_index(k->refs, key_ref_t, order[j]);
      if (!ref->held) /* a held claim is not forgotten */
        forget_locked(st, keys_rec(k, ref), ref->hash, cutoff_ms);
      if ((j - start[s]) % FORGET_RUN == FORGET_RUN - 1) {
        pthread_mutex_unlock(&st->lock);
        pthread_mutex_lock(&st->lock);
      }
    }
    pthread_mutex_unlock(&st->lock);
  }
  if (order != local)
    g_free(order);
}

void dset_stats(dset_t *set, dset_stats_t *out) {
  *out = (dset_stats_t){0};
  for (unsigned i = 0; i < NSTRIPES; i++) {
    stripe_t *st = &set->stripes[i];
    pthread_mutex_lock(&st->lock);
    out->ids += g_hash_table_size(st->set);
    out->chunks += st->nchunks;
    out->bytes += st->mapped;
    pthread_mutex_unlock(&st->lock);
  }
}

size_t dset_size(dset_t *set) {
  size_t n = 0;
  for (unsigned i = 0; i < NSTRIPES; i++) {
    pthread_mutex_lock(&set->stripes[i].lock);
    n += g_hash_table_size(set->stripes[i].set);
    pthread_mutex_unlock(&set->stripes[i].lock);
  }
  return n;
}
