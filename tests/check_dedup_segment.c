/*
 * Dedup segments and their filters (src/dedup_segment.c,
 * src/dedup_filter.c): exact answers across several segments and ID forms,
 * a filter false positive never answers "seen", a reopened database gives
 * the same answers, and loading a segment reads no IDs; the store writes a
 * big segment without holding up batch commits.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dedup.h"
#include "dedup_filter.h"
#include "dedup_log.h"
#include "dedup_pack.h"
#include "dedup_segment.h"
#include "id_hash.h"
#include "testutil.h"

#define NSEG 3
#define PER_SEG 3000

typedef struct fx {
  char *dir, *path;
  sqlite3 *db;
} fx_t;

static void fx_open_db(fx_t *f) {
  ck_assert_int_eq(sqlite3_open(f->path, &f->db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(f->db, dseg_schema_sql, NULL, NULL, NULL),
                   SQLITE_OK);
}

static void fx_init(fx_t *f) {
  f->dir = tu_tempdir();
  ck_assert_ptr_nonnull(f->dir);
  f->path = tu_path(f->dir, "seg.db");
  fx_open_db(f);
}

static void fx_done(fx_t *f) {
  sqlite3_close(f->db);
  tu_rm_rf(f->dir);
  free(f->path);
  free(f->dir);
}

/* ID number i in one of four forms: lower-case UUID (kept binary),
 * upper-case UUID and short text (kept as they are), and a long ID. */
static size_t make_id(unsigned i, char *out, size_t room) {
  switch (i % 4) {
  case 0:
    return (size_t)snprintf(out, room, "%08x-0000-4000-8000-%012x", i, i * 7);
  case 1:
    return (size_t)snprintf(out, room, "%08X-0000-4000-8000-%012X", i, i * 7);
  case 2:
    return (size_t)snprintf(out, room, "ev-%u", i);
  default:
    memset(out, 'x', 150);
    return 150 + (size_t)snprintf(out + 150, room - 150, "%u", i);
  }
}

/* Write segment seg with IDs [first, first + n) of scope, handled at
 * ms + i; bits_per_id as dseg_write()'s. */
static void write_seg(fx_t *f, int64_t seg, uint32_t scope, unsigned first,
                      size_t n, int64_t ms, unsigned bits_per_id) {
  dseg_key_t *k = calloc(n, sizeof(*k));
  char(*ids)[200] = calloc(n, 200);
  char err[512] = "";
  ck_assert_ptr_nonnull(k);
  ck_assert_ptr_nonnull(ids);
  for (size_t i = 0; i < n; i++) {
    size_t len = make_id(first + (unsigned)i, ids[i], 200);
    k[i] = (dseg_key_t){.scope = scope,
                        .id = ids[i],
                        .len = len,
                        .hash = id_hash(scope, ids[i], len),
                        .handled_ms = ms + (int64_t)i,
                        .topic = "orders",
                        .topic_len = 6,
                        .partition = (int32_t)(i % 3),
                        .offset = (int64_t)(first + i)};
  }
  ck_assert_int_eq(sqlite3_exec(f->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_msg(dseg_write(f->db, f->path, seg, 0, k, n, bits_per_id, err,
                           sizeof err) == 0,
                "dseg_write: %s", err);
  ck_assert_int_eq(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  free(ids);
  free(k);
}

/* Every segment of the database, loaded. */
static dseg_t **load_all(fx_t *f, size_t *n) {
  int64_t *ids = NULL;
  char err[512] = "";
  ck_assert_msg(dseg_list(f->db, f->path, &ids, n, err, sizeof err) == 0,
                "dseg_list: %s", err);
  dseg_t **g = calloc(*n + 1, sizeof(*g));
  for (size_t i = 0; i < *n; i++)
    ck_assert_msg(dseg_load(f->db, f->path, ids[i], &g[i], err, sizeof err) ==
                      0,
                  "dseg_load: %s", err);
  g_free(ids);
  return g;
}

static void free_all(dseg_t **g, size_t n) {
  for (size_t i = 0; i < n; i++)
    dseg_free(g[i]);
  free(g);
}

/* The segments (of n) that hold ID number i of scope, as a bit mask. */
static unsigned holders(fx_t *f, dseg_t **g, size_t n, uint32_t scope,
                        unsigned i) {
  char id[200], err[512] = "";
  size_t len = make_id(i, id, sizeof id);
  unsigned mask = 0;
  for (size_t s = 0; s < n; s++) {
    int r = dseg_lookup(g[s], f->db, f->path, scope, id, len,
                        id_hash(scope, id, len), NULL, err, sizeof err);
    ck_assert_msg(r >= 0, "dseg_lookup: %s", err);
    mask |= (unsigned)r << s;
  }
  return mask;
}

START_TEST(test_filter_never_misses_added) {
  dfilter_t *f = dfilter_new(10000, DSEG_BITS_PER_ID);
  size_t passes = 0;
  for (uint64_t i = 0; i < 10000; i++)
    dfilter_add(f, XXH3_64bits(&i, sizeof i));
  for (uint64_t i = 0; i < 10000; i++)
    ck_assert_int_eq(dfilter_maybe(f, XXH3_64bits(&i, sizeof i)), 1);
  for (uint64_t i = 10000; i < 110000; i++)
    passes += (size_t)dfilter_maybe(f, XXH3_64bits(&i, sizeof i));
  /* About 0.3 % expected at 12 bits per ID; 2 % means a broken filter. */
  ck_assert_uint_lt(passes, 2000);
  size_t len;
  uint8_t *bytes = dfilter_encode(f, &len);
  dfilter_t *back = dfilter_decode(bytes, len);
  ck_assert_ptr_nonnull(back);
  for (uint64_t i = 0; i < 10000; i++)
    ck_assert_int_eq(dfilter_maybe(back, XXH3_64bits(&i, sizeof i)), 1);
  ck_assert_ptr_null(dfilter_decode(bytes, len - 1));
  g_free(bytes);
  dfilter_free(back);
  dfilter_free(f);
}
END_TEST

/* A filter of several huge pages (mapped at a 2 MB boundary): empty at
 * first, never misses an added hash, and read back in place through
 * dfilter_alloc_bytes() answers the same. */
START_TEST(test_big_filter_exact_and_aligned) {
  const size_t n = 3u << 20; /* 4.5 MB at 12 bits per ID */
  dfilter_t *f = dfilter_new(n, DSEG_BITS_PER_ID);
  ck_assert_uint_ge(dfilter_size(f), (size_t)4 << 20);
  ck_assert_uint_eq((uintptr_t)dfilter_words(f) % ((size_t)2 << 20), 0);
  for (uint64_t i = 0; i < 100000; i++)
    ck_assert_int_eq(dfilter_maybe(f, XXH3_64bits(&i, sizeof i)), 0);
  for (uint64_t i = 0; i < n; i += 7)
    dfilter_add(f, XXH3_64bits(&i, sizeof i));
  size_t len;
  uint8_t *bytes = dfilter_encode(f, &len);
  dfilter_t *back = dfilter_alloc_bytes(len);
  ck_assert_ptr_nonnull(back);
  ck_assert_uint_eq((uintptr_t)dfilter_words(back) % ((size_t)2 << 20), 0);
  memcpy(dfilter_words(back), bytes, len);
  dfilter_from_le(back);
  for (uint64_t i = 0; i < n; i += 7) {
    ck_assert_int_eq(dfilter_maybe(f, XXH3_64bits(&i, sizeof i)), 1);
    ck_assert_int_eq(dfilter_maybe(back, XXH3_64bits(&i, sizeof i)), 1);
  }
  for (uint64_t i = n; i < n + 100000; i++)
    ck_assert_int_eq(dfilter_maybe(f, XXH3_64bits(&i, sizeof i)),
                     dfilter_maybe(back, XXH3_64bits(&i, sizeof i)));
  g_free(bytes);
  dfilter_free(back);
  dfilter_free(f);
}
END_TEST

/* Three segments of different IDs in all four forms, two scopes: every
 * ID is found in exactly its own segment and nowhere else. */
START_TEST(test_segments_answer_exactly) {
  fx_t f;
  size_t n;
  fx_init(&f);
  for (unsigned s = 0; s < NSEG; s++)
    write_seg(&f, s + 1, 7, s * PER_SEG, PER_SEG, 1000, 0);
  dseg_t **g = load_all(&f, &n);
  ck_assert_uint_eq(n, NSEG);
  for (unsigned i = 0; i < NSEG * PER_SEG; i++)
    ck_assert_uint_eq(holders(&f, g, n, 7, i), 1u << (i / PER_SEG));
  for (unsigned i = NSEG * PER_SEG; i < NSEG * PER_SEG + 2000; i++)
    ck_assert_uint_eq(holders(&f, g, n, 7, i), 0);
  for (unsigned i = 0; i < 500; i++)
    ck_assert_uint_eq(holders(&f, g, n, 8, i), 0);
  dseg_info_t info;
  dseg_info(g[0], &info);
  ck_assert_uint_eq(info.ids, PER_SEG);
  ck_assert_uint_gt(info.blocks, 1);
  free_all(g, n);
  fx_done(&f);
}
END_TEST

/* Lookups on one kept block statement answer as lookups on their own
 * statements, across segments, hits and misses (a filter of one bit per
 * ID passes most absent IDs, so the statement is reused for misses too),
 * with each hit's mark. */
START_TEST(test_kept_statement_answers_alike) {
  fx_t f;
  size_t n;
  sqlite3_stmt *kept = NULL;
  char err[512] = "";
  fx_init(&f);
  for (unsigned s = 0; s < 2; s++)
    write_seg(&f, s + 1, 7, s * PER_SEG, PER_SEG, 1000, 1);
  dseg_t **g = load_all(&f, &n);
  for (unsigned i = 0; i < 3 * PER_SEG; i++) {
    char id[200];
    size_t len = make_id(i, id, sizeof id);
    uint64_t h = id_hash(7, id, len);
    for (size_t s = 0; s < n; s++) {
      dlog_mark_t a, b;
      int ra = dseg_lookup_mark(g[s], f.db, f.path, 7, id, len, h, &a, err,
                                sizeof err);
      int rb = dseg_lookup_mark_kept(g[s], f.db, &kept, f.path, 7, id, len, h,
                                     &b, err, sizeof err);
      ck_assert_int_eq(rb, ra);
      ck_assert_int_eq(rb, i / PER_SEG == s);
      if (rb == 1) {
        ck_assert_int_eq(b.offset, a.offset);
        ck_assert_int_eq(b.handled_at, a.handled_at);
      }
    }
  }
  ck_assert_ptr_nonnull(kept);
  sqlite3_finalize(kept);
  free_all(g, n);
  fx_done(&f);
}
END_TEST

/* A filter of one bit per ID passes most absent IDs: each is read from
 * its block and still answered absent. */
START_TEST(test_filter_false_positive_never_seen) {
  fx_t f;
  size_t n;
  dseg_counters_t before, after;
  fx_init(&f);
  write_seg(&f, 1, 7, 0, 2000, 1000, 1);
  dseg_t **g = load_all(&f, &n);
  dseg_counters(&before);
  for (unsigned i = 2000; i < 4000; i++)
    ck_assert_uint_eq(holders(&f, g, n, 7, i), 0);
  dseg_counters(&after);
  ck_assert_uint_gt(after.filter_passes - before.filter_passes, 1000);
  ck_assert_uint_gt(after.blocks_read - before.blocks_read, 1000);
  free_all(g, n);
  fx_done(&f);
}
END_TEST

/* Reopened, the same answers; loading reads metadata, filters and block
 * first keys, never a block of IDs. */
/* A segment with its metadata alone (what a start loads) answers as the
 * loaded one, mark for mark, on its own statement and on a kept one:
 * every ID held (first and last of each block among them), none absent,
 * a key sorting before every block; then again once its filter alone,
 * then also its index, arrived. */
START_TEST(test_meta_only_answers_exactly) {
  fx_t f;
  size_t n;
  sqlite3_stmt *kept = NULL;
  char err[512] = "";
  fx_init(&f);
  write_seg(&f, 1, 7, 0, PER_SEG, 1000, 0);
  write_seg(&f, 2, 7, PER_SEG, PER_SEG, 5000, 0);
  dseg_t **full = load_all(&f, &n);
  dseg_t *meta = NULL;
  ck_assert_msg(dseg_load_meta(f.db, f.path, 1, &meta, err, sizeof err) == 0,
                "dseg_load_meta: %s", err);
  dseg_info_t a, b;
  dseg_info(full[0], &a);
  dseg_info(meta, &b);
  ck_assert_uint_eq(b.ids, a.ids);
  ck_assert_uint_eq(b.blocks, a.blocks);
  ck_assert_uint_gt(b.blocks, 10);
  ck_assert_int_eq(b.loaded, 0);
  ck_assert_int_eq(a.loaded, 1);
  ck_assert_uint_lt(b.memory, a.memory);
  for (int stage = 0; stage < 3; stage++) {
    for (unsigned i = 0; i < 2 * PER_SEG + 500; i++) {
      char id[200];
      size_t len = make_id(i, id, sizeof id);
      uint64_t h = id_hash(7, id, len);
      dlog_mark_t ma, mb, mk;
      int ra = dseg_lookup_mark(full[0], f.db, f.path, 7, id, len, h, &ma, err,
                                sizeof err);
      int rb = dseg_lookup_mark(meta, f.db, f.path, 7, id, len, h, &mb, err,
                                sizeof err);
      int rk = dseg_lookup_mark_kept(meta, f.db, &kept, f.path, 7, id, len, h,
                                     &mk, err, sizeof err);
      ck_assert_msg(rb >= 0 && rk >= 0, "lookup: %s", err);
      ck_assert_int_eq(rb, i < PER_SEG);
      ck_assert_int_eq(rb, ra);
      ck_assert_int_eq(rk, ra);
      if (rb == 1) {
        ck_assert_int_eq(mb.offset, ma.offset);
        ck_assert_int_eq(mb.handled_at, ma.handled_at);
        ck_assert_int_eq(mk.handled_at, ma.handled_at);
      }
    }
    /* Before every key of the segment: scope 0 sorts first. */
    ck_assert_int_eq(dseg_lookup(meta, f.db, f.path, 0, "a", 1,
                                 id_hash(0, "a", 1), NULL, err, sizeof err),
                     0);
    ck_assert_int_eq(dseg_has_filter(meta), stage > 0);
    ck_assert_int_eq(dseg_loaded(meta), stage > 1);
    ck_assert_msg(
        (stage == 0 ? dseg_load_filter(meta, f.db, f.path, err, sizeof err)
                    : dseg_load_rest(meta, f.db, f.path, err, sizeof err)) == 0,
        "loading: %s", err);
  }
  ck_assert_int_eq(dseg_loaded(meta), 1);
  sqlite3_finalize(kept);
  dseg_free(meta);
  free_all(full, n);
  fx_done(&f);
}
END_TEST

/* A segment whose blocks went missing after its metadata was read: its
 * lookups fail (never "absent"), and so does loading it. */
START_TEST(test_meta_only_missing_blocks_fail) {
  fx_t f;
  dseg_t *meta = NULL;
  char err[512] = "", id[200];
  fx_init(&f);
  write_seg(&f, 1, 7, 0, PER_SEG, 1000, 0);
  ck_assert_int_eq(dseg_load_meta(f.db, f.path, 1, &meta, err, sizeof err), 0);
  ck_assert_int_eq(sqlite3_exec(f.db,
                                "DELETE FROM segment_blocks WHERE pos ="
                                " (SELECT max(pos) FROM segment_blocks)",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  size_t len = make_id(PER_SEG - 4, id, sizeof id);
  ck_assert_int_eq(dseg_lookup(meta, f.db, f.path, 7, id, len,
                               id_hash(7, id, len), NULL, err, sizeof err),
                   -1);
  ck_assert_ptr_nonnull(strstr(err, "segment 1"));
  ck_assert_int_eq(dseg_load_rest(meta, f.db, f.path, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "blocks missing"));
  ck_assert_int_eq(dseg_loaded(meta), 0);
  dseg_free(meta);
  fx_done(&f);
}
END_TEST

START_TEST(test_reopen_same_answers_without_reading_ids) {
  fx_t f;
  size_t n;
  dseg_counters_t before, after;
  fx_init(&f);
  for (unsigned s = 0; s < NSEG; s++)
    write_seg(&f, s + 1, 7, s * PER_SEG, PER_SEG, 1000, 0);
  sqlite3_close(f.db);
  fx_open_db(&f);
  dseg_counters(&before);
  dseg_t **g = load_all(&f, &n);
  dseg_counters(&after);
  ck_assert_uint_eq(after.blocks_read, before.blocks_read);
  ck_assert_uint_eq(after.keys_decoded, before.keys_decoded);
  ck_assert_uint_eq(n, NSEG);
  for (unsigned i = 0; i < NSEG * PER_SEG; i += 7)
    ck_assert_uint_eq(holders(&f, g, n, 7, i), 1u << (i / PER_SEG));
  free_all(g, n);
  fx_done(&f);
}
END_TEST

static int each_mark(void *arg, uint32_t scope, const dlog_mark_t *m) {
  GArray *v = arg;
  ck_assert_uint_eq(scope, 7);
  g_array_append_vals(v, m, 1);
  ck_assert_int_eq(m->id_len, 36);
  ck_assert_int_eq(memcmp(m->id, "0f0e0d0c-0b0a-4009-8807-060504030201", 36),
                   0);
  ck_assert_int_eq(m->topic_len, 6);
  ck_assert_int_eq(memcmp(m->topic, "orders", 6), 0);
  return 0;
}

/* A segment keeps each ID's newest mark (topic, partition, offset, time,
 * outcome), read back by lookups and dseg_each(); a UUID takes 16 bytes,
 * not 36, and the mark a few more. */
START_TEST(test_mark_kept_and_duplicates) {
  fx_t f;
  size_t n;
  char err[512] = "";
  const char *u = "0f0e0d0c-0b0a-4009-8807-060504030201";
  dseg_key_t k[2] = {
      {7, u, 36, id_hash(7, u, 36), 5000, "orders", 6, 2, 1000, 0},
      {7, u, 36, id_hash(7, u, 36), 9000, "orders", 6, 2, 1001, 1}};
  GArray *marks = g_array_new(FALSE, FALSE, sizeof(dlog_mark_t));
  fx_init(&f);
  ck_assert_int_eq(sqlite3_exec(f.db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_int_eq(dseg_write(f.db, f.path, 1, 0, k, 2, 0, err, sizeof err), 0);
  ck_assert_int_eq(sqlite3_exec(f.db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  dseg_t **g = load_all(&f, &n);
  int64_t ms = 0;
  ck_assert_int_eq(dseg_lookup(g[0], f.db, f.path, 7, u, 36, id_hash(7, u, 36),
                               &ms, err, sizeof err),
                   1);
  ck_assert_int_eq(ms, 9000);
  dseg_info_t info;
  dseg_info(g[0], &info);
  ck_assert_uint_eq(info.ids, 1);
  ck_assert_int_eq(info.oldest_ms, 9000);
  ck_assert_msg(dseg_each(f.db, f.path, 1, each_mark, marks, err, 512) == 0,
                "%s", err);
  ck_assert_uint_eq(marks->len, 1);
  dlog_mark_t *m = &g_array_index(marks, dlog_mark_t, 0);
  ck_assert_int_eq(m->partition, 2);
  ck_assert_int_eq(m->offset, 1001);
  ck_assert_int_eq(m->handled_at, 9000);
  ck_assert_int_eq(m->outcome, 1);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(f.db,
                                      "SELECT length(keys) FROM segment_blocks",
                                      -1, &st, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  /* shared prefix, rest, scope, form, UUID; source and outcome, offset,
   * time */
  ck_assert_int_eq(sqlite3_column_int(st, 0), 1 + 1 + 4 + 1 + 16 + 1 + 1 + 1);
  sqlite3_finalize(st);
  g_array_free(marks, TRUE);
  free_all(g, n);
  fx_done(&f);
}
END_TEST

/* The keys dseg_each() hands out, copied, with their marks. */
typedef struct seen_keys {
  GPtrArray *ids; /* GBytes */
  GArray *parts;  /* int32_t partition of each */
  GArray *offs;   /* int64_t offset of each */
} seen_keys_t;

static int collect_key(void *arg, uint32_t scope, const dlog_mark_t *m) {
  seen_keys_t *v = arg;
  ck_assert_uint_eq(scope, 9);
  g_ptr_array_add(v->ids, g_bytes_new(m->id, m->id_len));
  g_array_append_val(v->parts, m->partition);
  g_array_append_val(v->offs, m->offset);
  return 0;
}

/* Keys that the sort's first 16 bytes cannot tell apart (a shared long
 * prefix, zero bytes, one key the prefix of another) come out in byte
 * order, each once with its newest mark and its own source, when the
 * sources of consecutive keys change. */
START_TEST(test_sort_ties_and_sources) {
  static const struct {
    const char *id;
    size_t len;
  } ids[] = {{"abcdefghijklmnopZ", 17},
             {"abcdefghijklmnop", 16},
             {"abcdefghijklmnop\0", 17},
             {"abcdefghijklmnop\0\0", 18},
             {"abcdefghijklmnopA", 17},
             {"abcdefghijklmno", 15},
             {"", 0},
             {"\0", 1},
             {"abcdefghijklmnopA", 17},
             {"abcdefgh", 8},
             {"abcdefgh\0\0\0\0\0\0\0\0\1", 17}};
  const size_t n = G_N_ELEMENTS(ids);
  const char *topics[] = {"orders", "payments"};
  dseg_key_t k[G_N_ELEMENTS(ids)];
  char err[512] = "";
  fx_t f;
  for (size_t i = 0; i < n; i++)
    k[i] = (dseg_key_t){.scope = 9,
                        .id = ids[i].id,
                        .len = ids[i].len,
                        .hash = id_hash(9, ids[i].id, ids[i].len),
                        .handled_ms = 1000 + (int64_t)i,
                        .topic = topics[i % 3 == 2],
                        .topic_len = strlen(topics[i % 3 == 2]),
                        .partition = (int32_t)(i / 2),
                        .offset = (int64_t)(100 + i)};
  fx_init(&f);
  ck_assert_int_eq(sqlite3_exec(f.db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_msg(dseg_write(f.db, f.path, 1, 0, k, n, 0, err, sizeof err) == 0,
                "%s", err);
  ck_assert_int_eq(sqlite3_exec(f.db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  seen_keys_t v = {
      g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref),
      g_array_new(FALSE, FALSE, sizeof(int32_t)),
      g_array_new(FALSE, FALSE, sizeof(int64_t))};
  ck_assert_msg(dseg_each(f.db, f.path, 1, collect_key, &v, err, 512) == 0,
                "%s", err);
  ck_assert_uint_eq(v.ids->len, n - 1); /* one ID given twice */
  for (guint i = 1; i < v.ids->len; i++) {
    GBytes *a = g_ptr_array_index(v.ids, i - 1),
           *b = g_ptr_array_index(v.ids, i);
    size_t al, bl;
    const uint8_t *ap = g_bytes_get_data(a, &al),
                  *bp = g_bytes_get_data(b, &bl);
    int c = MIN(al, bl) ? memcmp(ap, bp, MIN(al, bl)) : 0;
    ck_assert_msg(c < 0 || (c == 0 && al < bl), "keys %u and %u out of order",
                  i - 1, i);
  }
  for (guint i = 0; i < v.ids->len; i++) {
    size_t len;
    const void *id = g_bytes_get_data(g_ptr_array_index(v.ids, i), &len);
    size_t last = n; /* the newest mark given for this ID */
    for (size_t j = 0; j < n; j++)
      if (ids[j].len == len && (len == 0 || memcmp(ids[j].id, id, len) == 0))
        last = j;
    ck_assert_uint_lt(last, n);
    ck_assert_int_eq(g_array_index(v.parts, int32_t, i), k[last].partition);
    ck_assert_int_eq(g_array_index(v.offs, int64_t, i), k[last].offset);
  }
  g_ptr_array_free(v.ids, TRUE);
  g_array_free(v.parts, TRUE);
  g_array_free(v.offs, TRUE);
  fx_done(&f);
}
END_TEST

/* Inputs a quicksort can trip on: keys already in order, in reverse,
 * and one key many times. Each ID once, in order, with its newest mark. */
START_TEST(test_sort_sorted_and_equal_keys) {
  enum { IDS = 3000, COPIES = 3 };
  dseg_key_t *k = calloc(IDS * COPIES, sizeof(*k));
  char(*ids)[16] = calloc(IDS, 16);
  char err[512] = "";
  fx_t f;
  for (size_t i = 0; i < IDS; i++)
    snprintf(ids[i], 16, "id-%06zu", i);
  for (size_t c = 0; c < COPIES; c++)
    for (size_t i = 0; i < IDS; i++) {
      size_t at = c * IDS + i, id = c == 1 ? IDS - 1 - i : i;
      if (c == 2 && i >= IDS / 2)
        id = 7; /* half the last run: one ID again and again */
      k[at] = (dseg_key_t){.scope = 9,
                           .id = ids[id],
                           .len = 9,
                           .hash = id_hash(9, ids[id], 9),
                           .handled_ms = (int64_t)at,
                           .topic = "orders",
                           .topic_len = 6,
                           .offset = (int64_t)at};
    }
  fx_init(&f);
  ck_assert_int_eq(sqlite3_exec(f.db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_msg(
      dseg_write(f.db, f.path, 1, 0, k, IDS * COPIES, 0, err, sizeof err) == 0,
      "%s", err);
  ck_assert_int_eq(sqlite3_exec(f.db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  seen_keys_t v = {
      g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref),
      g_array_new(FALSE, FALSE, sizeof(int32_t)),
      g_array_new(FALSE, FALSE, sizeof(int64_t))};
  ck_assert_msg(dseg_each(f.db, f.path, 1, collect_key, &v, err, 512) == 0,
                "%s", err);
  ck_assert_uint_eq(v.ids->len, IDS);
  for (guint i = 0; i < IDS; i++) {
    size_t len;
    const char *id = g_bytes_get_data(g_ptr_array_index(v.ids, i), &len);
    ck_assert_uint_eq(len, 9);
    ck_assert_int_eq(memcmp(id, ids[i], 9), 0);
    /* newest: the last run's own copy, 7's last repeat, else the reversed
     * run's */
    int64_t want = i < IDS / 2 ? 2 * IDS + i : IDS + (IDS - 1 - i);
    if (i == 7)
      want = 3 * IDS - 1;
    ck_assert_int_eq(g_array_index(v.offs, int64_t, i), want);
  }
  g_ptr_array_free(v.ids, TRUE);
  g_array_free(v.parts, TRUE);
  g_array_free(v.offs, TRUE);
  free(ids);
  free(k);
  fx_done(&f);
}
END_TEST

/* Three overlapping segments merged into one: every ID once, found, with
 * the newest time any input had; absent IDs stay absent. */
START_TEST(test_merge_keeps_every_id_once) {
  fx_t f;
  size_t n;
  char err[512] = "";
  int64_t ids[3] = {1, 2, 3};
  fx_init(&f);
  write_seg(&f, 1, 7, 0, 2000, 1000, 0);
  write_seg(&f, 2, 7, 1000, 2000, 5000, 0);
  write_seg(&f, 3, 7, 2500, 1000, 9000, 0);
  ck_assert_int_eq(sqlite3_exec(f.db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_msg(
      dseg_merge(f.db, f.path, ids, 3, 5000, 4, 77, err, sizeof err) == 0,
      "dseg_merge: %s", err);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(dseg_delete(f.db, f.path, ids[i], err, sizeof err), 0);
  ck_assert_int_eq(sqlite3_exec(f.db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  dseg_t **g = load_all(&f, &n);
  ck_assert_uint_eq(n, 1);
  dseg_info_t info;
  dseg_info(g[0], &info);
  ck_assert_uint_eq(info.ids, 3500);
  ck_assert_int_eq(info.tag, 77);
  ck_assert_int_ge(info.oldest_ms, 1000);
  ck_assert_int_eq(info.newest_ms, 9000 + 999);
  for (unsigned i = 0; i < 3500; i++)
    ck_assert_uint_eq(holders(&f, g, n, 7, i), 1);
  for (unsigned i = 3500; i < 5000; i++)
    ck_assert_uint_eq(holders(&f, g, n, 7, i), 0);
  /* ID 2999 was in the last two: the newer mark's time. */
  char id[200];
  size_t len = make_id(2999, id, sizeof id);
  int64_t ms = 0;
  ck_assert_int_eq(dseg_lookup(g[0], f.db, f.path, 7, id, len,
                               id_hash(7, id, len), &ms, err, sizeof err),
                   1);
  ck_assert_int_eq(ms, 9000 + 499);
  free_all(g, n);
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------ store: chunked writes */

#define BIG_IDS 2000000
#define BIG_BATCH 50000
#define HOLD_BOUND_MS 500

typedef struct seg_job {
  dedup_store_t *s;
  size_t moved;
  int rc, done;
  char err[512];
} seg_job_t;

static void *segment_main(void *arg) {
  seg_job_t *j = arg;
  j->rc = dedup_segment_now(j->s, &j->moved, j->err, sizeof j->err);
  __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void uuid_id(unsigned i, char out[37]) {
  snprintf(out, 37, "%08x-0000-4000-8000-%012x", i * 2654435761u, i);
}

/* Commit IDs [first, first + n) in one batch; returns how long the commit
 * took in ms. */
static int64_t commit_range(dedup_writer_t *w, uint32_t scope, unsigned first,
                            unsigned n) {
  char id[37], err[512] = "";
  for (unsigned i = first; i < first + n; i++) {
    uuid_id(i, id);
    dedup_mark_t m = {.scope = scope,
                      .event_id = id,
                      .event_id_len = 36,
                      .topic = "t",
                      .partition = 0,
                      .offset = i,
                      .handled_at_ms = dedup_now_ms()};
    ck_assert_int_eq(dedup_writer_add(w, &m), 0);
  }
  int64_t t0 = tu_mono_ms();
  ck_assert_msg(dedup_writer_commit(w, NULL, err, sizeof err) == 0, "%s", err);
  return tu_mono_ms() - t0;
}

START_TEST(test_segment_write_leaves_commits_alone) {
  char *dir = tu_tempdir(), *path = tu_path(dir, "dedup.db"), err[512] = "";
  dedup_opts_t o = {.path = path};
  dedup_store_t *s = NULL;
  dedup_writer_t *w = NULL;
  uint32_t scope;
  seg_job_t job = {0};
  pthread_t th;
  int64_t longest = 0, commits = 0;
  unsigned next = BIG_IDS;
  ck_assert_msg(dedup_open(&s, &o, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(dedup_scope(s, "p", &scope, err, sizeof err), 0);
  ck_assert_int_eq(dedup_writer_open(s, &w, err, sizeof err), 0);
  for (unsigned i = 0; i < BIG_IDS; i += BIG_BATCH)
    commit_range(w, scope, i, BIG_BATCH);
  job.s = s;
  int64_t t0 = tu_mono_ms();
  ck_assert_int_eq(pthread_create(&th, NULL, segment_main, &job), 0);
  /* Small batches, one after the other, for as long as the segment of two
   * million IDs is being built. */
  while (!__atomic_load_n(&job.done, __ATOMIC_ACQUIRE)) {
    int64_t ms = commit_range(w, scope, next, 100);
    longest = ms > longest ? ms : longest;
    commits++;
    next += 100;
  }
  pthread_join(th, NULL);
  int64_t build_ms = tu_mono_ms() - t0;
  ck_assert_msg(job.rc == 0, "dedup_segment_now: %s", job.err);
  ck_assert_uint_ge(job.moved, BIG_IDS);
  ck_assert_int_gt(commits, 1);
  /* Held for the whole write, a commit would wait about build_ms; a slow
   * (busy, sanitized) machine stretches both, so the bound grows with the
   * build. */
  int64_t bound = build_ms / 4 > HOLD_BOUND_MS ? build_ms / 4 : HOLD_BOUND_MS;
  ck_assert_msg(longest < bound,
                "a batch commit waited %" PRId64
                " ms for a segment write of %" PRId64 " ms (bound %" PRId64
                " ms)",
                longest, build_ms, bound);
  /* The segment answers for what left the set, the set for the rest. */
  char id[37];
  for (unsigned i = 0; i < next; i += 9973) {
    uuid_id(i, id);
    ck_assert_int_eq(dedup_claim(s, scope, id, 36), DEDUP_SEEN);
  }
  uuid_id(next, id);
  ck_assert_int_eq(dedup_claim(s, scope, id, 36), DEDUP_NEW);
  dedup_writer_close(w);
  dedup_close(s);
  tu_rm_rf(dir);
  free(path);
  free(dir);
}
END_TEST

/* ------------------------------------------------------------ UUID text */

/* dpack_uuid_parse() digit by digit: the answer it must give. */
static int uuid_parse_ref(const uint8_t *id, uint8_t out[16]) {
  static const uint8_t at[16] = {0,  2,  4,  6,  9,  11, 14, 16,
                                 19, 21, 24, 26, 28, 30, 32, 34};
  int lower = 0, upper = 0;
  if (id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-')
    return DPACK_NOT_UUID;
  for (int i = 0; i < 32; i++) {
    unsigned c = id[at[i / 2] + i % 2], v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10, lower = 1;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10, upper = 1;
    else
      return DPACK_NOT_UUID;
    out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
  }
  if (lower && upper)
    return DPACK_NOT_UUID;
  return upper ? DPACK_UUID_UPPER : DPACK_UUID_LOWER;
}

static void expect_parse_like_ref(const char *text) {
  uint8_t got[16], want[16];
  int g = dpack_uuid_parse((const uint8_t *)text, got);
  int w = uuid_parse_ref((const uint8_t *)text, want);
  ck_assert_msg(g == w, "%.36s: parsed as %d, not %d", text, g, w);
  if (w != DPACK_NOT_UUID)
    ck_assert_msg(memcmp(got, want, 16) == 0, "%.36s: other bytes", text);
  ck_assert_int_eq(dpack_uuid_bytes((const uint8_t *)text, 36, got),
                   w == DPACK_UUID_LOWER);
}

/* The parser that takes eight digits at a time answers as one that takes
 * them one by one: for every byte value at every position of a lower-,
 * an upper-case and an all-digit UUID, and for random UUIDs of each case
 * and of mixed case. */
START_TEST(test_uuid_parse_every_byte) {
  static const char *base[] = {"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                               "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
                               "01234567-8901-2345-6789-012345678901"};
  char text[37];
  for (size_t b = 0; b < G_N_ELEMENTS(base); b++)
    for (int pos = 0; pos < 36; pos++)
      for (int c = 0; c < 256; c++) {
        memcpy(text, base[b], 37);
        text[pos] = (char)c;
        expect_parse_like_ref(text);
      }
  GRand *r = g_rand_new_with_seed(11);
  static const char *alphabet[] = {"0123456789abcdef", "0123456789ABCDEF",
                                   "0123456789abcdefABCDEF"};
  for (int n = 0; n < 30000; n++) {
    const char *a = alphabet[n % 3];
    for (int i = 0; i < 36; i++)
      text[i] = (i == 8 || i == 13 || i == 18 || i == 23)
                    ? '-'
                    : a[g_rand_int_range(r, 0, (gint32)strlen(a))];
    expect_parse_like_ref(text);
  }
  g_rand_free(r);
  uint8_t bytes[16];
  ck_assert_int_eq(dpack_uuid_parse((const uint8_t *)base[0], bytes),
                   DPACK_UUID_LOWER);
  ck_assert_int_eq(bytes[0], 0x0f);
  ck_assert_int_eq(bytes[15], 0xf0);
}
END_TEST

Suite *dedup_segment_suite(void) {
  Suite *s = suite_create("dedup_segment");
  TCase *tc = tcase_create("filter");
  tcase_add_test(tc, test_filter_never_misses_added);
  tcase_add_test(tc, test_big_filter_exact_and_aligned);
  tcase_add_test(tc, test_uuid_parse_every_byte);
  suite_add_tcase(s, tc);

  tc = tcase_create("segment");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_segments_answer_exactly);
  tcase_add_test(tc, test_filter_false_positive_never_seen);
  tcase_add_test(tc, test_kept_statement_answers_alike);
  tcase_add_test(tc, test_reopen_same_answers_without_reading_ids);
  tcase_add_test(tc, test_meta_only_answers_exactly);
  tcase_add_test(tc, test_meta_only_missing_blocks_fail);
  tcase_add_test(tc, test_mark_kept_and_duplicates);
  tcase_add_test(tc, test_sort_ties_and_sources);
  tcase_add_test(tc, test_sort_sorted_and_equal_keys);
  tcase_add_test(tc, test_merge_keeps_every_id_once);
  suite_add_tcase(s, tc);

  tc = tcase_create("chunks");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_segment_write_leaves_commits_alone);
  suite_add_tcase(s, tc);
  return s;
}
