/*
 * The fault-injection checker (see checker.h and tests/README.md).
 *
 * Facts are kept as plain arrays; the checks index them by event ID or by
 * partition as they go. Histories are a few thousand records, so clarity
 * wins over speed here.
 */
#include "checker.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup_admin.h"
#include "dedup_log.h"
#include "khost/plugin.h"

/* Violations described in `why`; the count goes on past it. */
#define CHK_SHOWN 10

typedef struct rec {
  char *topic, *id;
  int32_t partition;
  int64_t offset;
} rec_t;

typedef struct run {
  long pid;
  int db;
  int64_t start_ms, end_ms;
} run_t;

typedef struct effect {
  long pid;
  int member;
  char *topic, *id;
  int32_t partition;
  int64_t offset;
  uint32_t attempt;
  int result;
} effect_t;

typedef struct mark {
  int db;
  char *id, *topic;
  int32_t partition;
  int64_t offset, handled_at;
  int outcome;
} mark_t;

struct chk {
  GPtrArray *produced;   /* rec_t * */
  GArray *runs;          /* run_t */
  GPtrArray *effects;    /* effect_t *, in log order */
  GPtrArray *marks;      /* mark_t * */
  GPtrArray *dead;       /* rec_t *: source coordinates and event ID */
  GHashTable *committed; /* "topic\x1fpartition" -> int64_t * */
};

static void rec_free(gpointer p) {
  rec_t *r = p;
  g_free(r->topic);
  g_free(r->id);
  g_free(r);
}

static void effect_free(gpointer p) {
  effect_t *e = p;
  g_free(e->topic);
  g_free(e->id);
  g_free(e);
}

static void mark_free(gpointer p) {
  mark_t *m = p;
  g_free(m->topic);
  g_free(m->id);
  g_free(m);
}

static char *part_key(const char *topic, int32_t partition) {
  return g_strdup_printf("%s\x1f%" PRId32, topic, partition);
}

chk_t *chk_new(void) {
  chk_t *c = g_new0(chk_t, 1);
  c->produced = g_ptr_array_new_with_free_func(rec_free);
  c->runs = g_array_new(FALSE, FALSE, sizeof(run_t));
  c->effects = g_ptr_array_new_with_free_func(effect_free);
  c->marks = g_ptr_array_new_with_free_func(mark_free);
  c->dead = g_ptr_array_new_with_free_func(rec_free);
  c->committed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return c;
}

void chk_free(chk_t *c) {
  if (!c)
    return;
  g_ptr_array_free(c->produced, TRUE);
  g_array_free(c->runs, TRUE);
  g_ptr_array_free(c->effects, TRUE);
  g_ptr_array_free(c->marks, TRUE);
  g_ptr_array_free(c->dead, TRUE);
  g_hash_table_destroy(c->committed);
  g_free(c);
}

static rec_t *rec_new(const char *topic, int32_t partition, int64_t offset,
                      const char *id) {
  rec_t *r = g_new0(rec_t, 1);
  *r = (rec_t){g_strdup(topic), g_strdup(id), partition, offset};
  return r;
}

void chk_add_produced(chk_t *c, const char *topic, int32_t partition,
                      int64_t offset, const char *id) {
  g_ptr_array_add(c->produced, rec_new(topic, partition, offset, id));
}

void chk_add_run(chk_t *c, long pid, int db, int64_t start_ms, int64_t end_ms) {
  run_t r = {pid, db, start_ms, end_ms};
  g_array_append_val(c->runs, r);
}

void chk_add_dead_letter(chk_t *c, const char *id, const char *topic,
                         int32_t partition, int64_t offset) {
  g_ptr_array_add(c->dead, rec_new(topic, partition, offset, id));
}

void chk_set_committed(chk_t *c, const char *topic, int32_t partition,
                       int64_t offset) {
  g_hash_table_replace(c->committed, part_key(topic, partition),
                       g_memdup2(&offset, sizeof(offset)));
}

void chk_add_mark(chk_t *c, int db, const char *id, const char *topic,
                  int32_t partition, int64_t offset, int64_t handled_at_ms,
                  int outcome) {
  mark_t *m = g_new0(mark_t, 1);
  *m = (mark_t){db,     g_strdup(id),  g_strdup(topic), partition,
                offset, handled_at_ms, outcome};
  g_ptr_array_add(c->marks, m);
}

void chk_clear_marks(chk_t *c) {
  g_ptr_array_set_size(c->marks, 0);
}

/* ------------------------------------------------------------ loading */

int chk_add_effect_line(chk_t *c, const char *line, char *err, size_t errlen) {
  gchar **w = g_strsplit(line, " ", 0);
  int rc = -1;
  long long v[6];
  char *end;
  static const int numeric[] = {0, 1, 3, 4, 5, 7};
  if (g_strv_length(w) != 8)
    goto out;
  for (int i = 0; i < 6; i++) {
    errno = 0;
    v[i] = strtoll(w[numeric[i]], &end, 10);
    if (errno || end == w[numeric[i]] || *end)
      goto out;
  }
  effect_t *e = g_new0(effect_t, 1);
  *e = (effect_t){.pid = (long)v[0],
                  .member = (int)v[1],
                  .topic = g_strdup(w[2]),
                  .partition = (int32_t)v[2],
                  .offset = v[3],
                  .attempt = (uint32_t)v[4],
                  .id = g_strdup(w[6]),
                  .result = (int)v[5]};
  g_ptr_array_add(c->effects, e);
  rc = 0;
out:
  if (rc < 0)
    snprintf(err, errlen, "malformed effects line: %s", line);
  g_strfreev(w);
  return rc;
}

int chk_load_effects(chk_t *c, const char *path, char *err, size_t errlen) {
  gchar *text = NULL;
  GError *gerr = NULL;
  int rc = 0;
  if (!g_file_get_contents(path, &text, NULL, &gerr)) {
    rc = g_error_matches(gerr, G_FILE_ERROR, G_FILE_ERROR_NOENT) ? 0 : -1;
    if (rc < 0)
      snprintf(err, errlen, "%s: %s", path, gerr->message);
    g_error_free(gerr);
    return rc;
  }
  gchar **lines = g_strsplit(text, "\n", 0);
  for (size_t i = 0; lines[i] && rc == 0; i++)
    if (lines[i][0])
      rc = chk_add_effect_line(c, lines[i], err, errlen);
  g_strfreev(lines);
  g_free(text);
  return rc;
}

typedef struct load_arg {
  chk_t *c;
  int db;
} load_arg_t;

static int load_mark(void *arg, int64_t seq, uint32_t scope,
                     const dlog_mark_t *m) {
  load_arg_t *a = arg;
  char *id = g_strndup(m->id, m->id_len);
  char *topic = g_strndup(m->topic, m->topic_len);
  (void)seq;
  (void)scope;
  chk_add_mark(a->c, a->db, id, topic, m->partition, m->offset, m->handled_at,
               m->outcome);
  g_free(topic);
  g_free(id);
  return 0;
}

int chk_load_marks(chk_t *c, int db, const char *path, const char *pipeline,
                   char *err, size_t errlen) {
  dadm_t *a = NULL;
  load_arg_t arg = {c, db};
  uint32_t scope = 0;
  int found = 0, rc = dadm_open(&a, path, 0, err, errlen);
  if (rc == 0)
    rc = dadm_scope(a, pipeline, 0, &scope, &found, err, errlen);
  if (rc == 0 && found)
    rc = dadm_each_mark(a, scope, load_mark, &arg, err, errlen);
  dadm_close(a);
  return rc;
}

/* ------------------------------------------------------------ helpers */

/* Describe one violation (the first CHK_SHOWN of them). */
static void violation(GString *why, size_t *count, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void violation(GString *why, size_t *count, const char *fmt, ...) {
  if (why && *count < CHK_SHOWN) {
    va_list ap;
    va_start(ap, fmt);
    g_string_append_vprintf(why, fmt, ap);
    va_end(ap);
    g_string_append_c(why, '\n');
  }
  (*count)++;
}

/* event ID -> GPtrArray of the items of arr (effects or marks) with it,
 * in order; only items for which keep() holds (NULL: all). */
static GHashTable *by_id(const GPtrArray *arr, size_t id_offset,
                         int (*keep)(const void *item)) {
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                        (GDestroyNotify)g_ptr_array_unref);
  for (guint i = 0; i < arr->len; i++) {
    const void *item = arr->pdata[i];
    const char *id = *(char *const *)((const char *)item + id_offset);
    if (keep && !keep(item))
      continue;
    GPtrArray *v = g_hash_table_lookup(h, id);
    if (!v) {
      v = g_ptr_array_new();
      g_hash_table_insert(h, (gpointer)id, v);
    }
    g_ptr_array_add(v, (gpointer)item);
  }
  return h;
}

static int is_ok(const void *item) {
  return ((const effect_t *)item)->result == KHOST_OK;
}

static const run_t *run_of(const chk_t *c, long pid) {
  for (guint i = 0; i < c->runs->len; i++)
    if (g_array_index(c->runs, run_t, i).pid == pid)
      return &g_array_index(c->runs, run_t, i);
  return NULL;
}

/* "topic\x1fpartition\x1foffset" -> produced rec_t * */
static GHashTable *produced_at(const chk_t *c) {
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < c->produced->len; i++) {
    const rec_t *r = c->produced->pdata[i];
    g_hash_table_insert(h,
                        g_strdup_printf("%s\x1f%" PRId32 "\x1f%" PRId64,
                                        r->topic, r->partition, r->offset),
                        (gpointer)r);
  }
  return h;
}

/* "topic\x1fpartition" -> end offset (last produced offset + 1) */
static GHashTable *end_offsets(const chk_t *c) {
  GHashTable *h =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  for (guint i = 0; i < c->produced->len; i++) {
    const rec_t *r = c->produced->pdata[i];
    char *key = part_key(r->topic, r->partition);
    int64_t *end = g_hash_table_lookup(h, key);
    if (!end) {
      end = g_new0(int64_t, 1);
      g_hash_table_insert(h, key, end);
      key = NULL;
    }
    if (r->offset + 1 > *end)
      *end = r->offset + 1;
    g_free(key);
  }
  return h;
}

/* ------------------------------------------------------------ checks */

/* Every call names the record produced at its coordinates. */
static void calls_match_records(const chk_t *c, GString *why, size_t *n) {
  GHashTable *at = produced_at(c);
  for (guint i = 0; i < c->effects->len; i++) {
    const effect_t *e = c->effects->pdata[i];
    char *key = g_strdup_printf("%s\x1f%" PRId32 "\x1f%" PRId64, e->topic,
                                e->partition, e->offset);
    const rec_t *r = g_hash_table_lookup(at, key);
    if (!r || strcmp(r->id, e->id) != 0)
      violation(why, n,
                "call for %s [%" PRId32 "] offset %" PRId64 " eventId %s: %s",
                e->topic, e->partition, e->offset, e->id,
                r ? "another event was produced there"
                  : "no such record was produced");
    g_free(key);
  }
  g_hash_table_destroy(at);
}

size_t chk_no_loss(const chk_t *c, GString *why) {
  size_t n = 0;
  GHashTable *ok = by_id(c->effects, G_STRUCT_OFFSET(effect_t, id), is_ok);
  GHashTable *dead = by_id(c->dead, G_STRUCT_OFFSET(rec_t, id), NULL);
  for (guint i = 0; i < c->produced->len; i++) {
    const rec_t *r = c->produced->pdata[i];
    if (!g_hash_table_contains(ok, r->id) &&
        !g_hash_table_contains(dead, r->id))
      violation(why, &n,
                "lost: %s [%" PRId32 "] offset %" PRId64
                " eventId %s was neither handled nor dead-lettered",
                r->topic, r->partition, r->offset, r->id);
  }
  calls_match_records(c, why, &n);
  g_hash_table_destroy(ok);
  g_hash_table_destroy(dead);
  return n;
}

/* Did a process on db leave a mark of the event (in marks) during its
 * lifetime? */
static int marked_during(const run_t *run, const GPtrArray *marks) {
  for (guint i = 0; marks && i < marks->len; i++) {
    const mark_t *m = marks->pdata[i];
    if (m->db == run->db && m->handled_at >= run->start_ms &&
        m->handled_at <= run->end_ms)
      return 1;
  }
  return 0;
}

/* The OK calls of one event, in log order: judge each repetition. */
static void judge_repeats(const chk_t *c, const char *id, const GPtrArray *ok,
                          const GPtrArray *marks, GString *why, size_t *n) {
  for (guint j = 1; j < ok->len; j++) {
    const effect_t *e = ok->pdata[j];
    const run_t *now = run_of(c, e->pid);
    for (guint i = 0; i < j; i++) {
      const effect_t *before = ok->pdata[i];
      const run_t *then = run_of(c, before->pid);
      if (!now || !then)
        violation(why, n, "eventId %s: handled by an unknown process %ld", id,
                  now ? before->pid : e->pid);
      else if (before->pid == e->pid)
        violation(why, n, "eventId %s: handled twice by process %ld", id,
                  e->pid);
      else if (then->db == now->db && marked_during(then, marks))
        violation(why, n,
                  "eventId %s: handled again by process %ld although "
                  "process %ld had recorded it",
                  id, e->pid, before->pid);
    }
  }
}

/* At most one mark per event and database. */
static void judge_marks(const char *id, const GPtrArray *marks, GString *why,
                        size_t *n) {
  for (guint j = 1; marks && j < marks->len; j++)
    for (guint i = 0; i < j; i++)
      if (((const mark_t *)marks->pdata[i])->db ==
          ((const mark_t *)marks->pdata[j])->db)
        violation(why, n, "eventId %s: marked twice in database %d", id,
                  ((const mark_t *)marks->pdata[j])->db);
}

size_t chk_no_duplicate_effect(const chk_t *c, GString *why) {
  size_t n = 0;
  GHashTable *ok = by_id(c->effects, G_STRUCT_OFFSET(effect_t, id), is_ok);
  GHashTable *marks = by_id(c->marks, G_STRUCT_OFFSET(mark_t, id), NULL);
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init(&it, ok);
  while (g_hash_table_iter_next(&it, &key, &value))
    judge_repeats(c, key, value, g_hash_table_lookup(marks, key), why, &n);
  g_hash_table_iter_init(&it, marks);
  while (g_hash_table_iter_next(&it, &key, &value))
    judge_marks(key, value, why, &n);
  g_hash_table_destroy(ok);
  g_hash_table_destroy(marks);
  return n;
}

size_t chk_in_order(const chk_t *c, GString *why) {
  size_t n = 0;
  /* "pid\x1fmember\x1ftopic\x1fpartition" -> the last call seen */
  GHashTable *last =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < c->effects->len; i++) {
    const effect_t *e = c->effects->pdata[i];
    char *key = g_strdup_printf("%ld\x1f%d\x1f%s\x1f%" PRId32, e->pid,
                                e->member, e->topic, e->partition);
    const effect_t *prev = g_hash_table_lookup(last, key);
    if (prev && (e->offset < prev->offset ||
                 (e->offset == prev->offset && e->attempt <= prev->attempt)))
      violation(why, &n,
                "out of order: process %ld member %d called %s [%" PRId32
                "] offset %" PRId64 " attempt %" PRIu32 " after offset %" PRId64
                " attempt %" PRIu32,
                e->pid, e->member, e->topic, e->partition, e->offset,
                e->attempt, prev->offset, prev->attempt);
    g_hash_table_replace(last, key, (gpointer)e);
  }
  g_hash_table_destroy(last);
  return n;
}

size_t chk_committed_covered(const chk_t *c, GString *why) {
  size_t n = 0;
  GHashTable *marks = by_id(c->marks, G_STRUCT_OFFSET(mark_t, id), NULL);
  GHashTable *ends = end_offsets(c);
  for (guint i = 0; i < c->produced->len; i++) {
    const rec_t *r = c->produced->pdata[i];
    char *key = part_key(r->topic, r->partition);
    const int64_t *committed = g_hash_table_lookup(c->committed, key);
    if (committed && r->offset < *committed &&
        !g_hash_table_contains(marks, r->id))
      violation(why, &n,
                "%s [%" PRId32 "] committed at %" PRId64 " past offset %" PRId64
                " (eventId %s), which has no mark",
                r->topic, r->partition, *committed, r->offset, r->id);
    g_free(key);
  }
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init(&it, c->committed);
  while (g_hash_table_iter_next(&it, &key, &value)) {
    const int64_t *end = g_hash_table_lookup(ends, key);
    if (end && *(const int64_t *)value > *end)
      violation(why, &n, "%s: committed at %" PRId64 ", past the end %" PRId64,
                (const char *)key, *(const int64_t *)value, *end);
  }
  g_hash_table_destroy(ends);
  g_hash_table_destroy(marks);
  return n;
}

size_t chk_committed_at_end(const chk_t *c, GString *why) {
  size_t n = 0;
  GHashTable *ends = end_offsets(c);
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init(&it, ends);
  while (g_hash_table_iter_next(&it, &key, &value)) {
    const int64_t *committed = g_hash_table_lookup(c->committed, key);
    int64_t end = *(const int64_t *)value;
    if (!committed || *committed != end) {
      gchar **tp = g_strsplit(key, "\x1f", 2);
      violation(why, &n, "%s [%s]: committed %" PRId64 ", end %" PRId64, tp[0],
                tp[1], committed ? *committed : (int64_t)-1, end);
      g_strfreev(tp);
    }
  }
  g_hash_table_destroy(ends);
  return n;
}

size_t chk_all(const chk_t *c, GString *why) {
  return chk_no_loss(c, why) + chk_no_duplicate_effect(c, why) +
         chk_in_order(c, why) + chk_committed_covered(c, why) +
         chk_committed_at_end(c, why);
}

/* Events with OK calls on several runs: on one database, or on several. */
static void count_redone(const chk_t *c, size_t *same, size_t *hosts) {
  GHashTable *ok = by_id(c->effects, G_STRUCT_OFFSET(effect_t, id), is_ok);
  GHashTableIter it;
  gpointer value;
  *same = *hosts = 0;
  g_hash_table_iter_init(&it, ok);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    const GPtrArray *v = value;
    int cross = 0, again = 0;
    for (guint j = 1; j < v->len; j++) {
      const run_t *a = run_of(c, ((const effect_t *)v->pdata[0])->pid),
                  *b = run_of(c, ((const effect_t *)v->pdata[j])->pid);
      again = 1;
      cross |= a && b && a->db != b->db;
    }
    *same += again && !cross;
    *hosts += cross;
  }
  g_hash_table_destroy(ok);
}

void chk_summary(const chk_t *c, chk_summary_t *out) {
  memset(out, 0, sizeof(*out));
  out->produced = c->produced->len;
  out->calls = c->effects->len;
  for (guint i = 0; i < c->effects->len; i++)
    out->effects += is_ok(c->effects->pdata[i]);
  out->dead_letters = c->dead->len;
  out->marks = c->marks->len;
  count_redone(c, &out->redone, &out->redone_hosts);
}
