/*
 * The dedup store's log of marks: see dedup_log.h for the layout.
 */
#include "dedup_log.h"

#include <string.h>

#include "dedup_pack.h"

#define LOG_FORMAT 1

typedef struct dlog_topic {
  const uint8_t *p;
  size_t len;
} dlog_topic_t;

/* The index of the mark's topic among topics (added when new). A batch
 * holds one or a few topics: a linear search is enough. */
static uint64_t topic_index(GArray *topics, const dlog_mark_t *m) {
  for (guint i = 0; i < topics->len; i++) {
    const dlog_mark_t *t = &g_array_index(topics, dlog_mark_t, i);
    if (t->topic_len == m->topic_len &&
        (m->topic_len == 0 || memcmp(t->topic, m->topic, m->topic_len) == 0))
      return i;
  }
  g_array_append_val(topics, *m);
  return topics->len - 1;
}

/* A mark is put together on the stack and appended at once (one call,
 * not one per field; a long ID goes in three appends). */
static void pack_mark(GByteArray *out, const dlog_mark_t *m, uint64_t topic,
                      int64_t *offset, int64_t *at) {
  uint8_t buf[256], *p = buf, uuid[16];
  int is_uuid = dpack_uuid_bytes(m->id, m->id_len, uuid);
  p += dpack_varint_to(p, (uint64_t)m->outcome << 1 | (uint64_t)is_uuid);
  if (is_uuid) {
    memcpy(p, uuid, sizeof uuid);
    p += sizeof uuid;
  } else {
    p += dpack_varint_to(p, m->id_len);
    if (m->id_len <= sizeof buf - 6 * DPACK_VARINT_MAX) {
      if (m->id_len)
        memcpy(p, m->id, m->id_len);
      p += m->id_len;
    } else {
      g_byte_array_append(out, buf, (guint)(p - buf));
      g_byte_array_append(out, m->id, (guint)m->id_len);
      p = buf;
    }
  }
  p += dpack_varint_to(p, topic);
  p += dpack_varint_to(p, dpack_zigzag(m->partition));
  p += dpack_varint_to(p, dpack_zigzag(m->offset - *offset));
  p += dpack_varint_to(p, dpack_zigzag(m->handled_at - *at));
  g_byte_array_append(out, buf, (guint)(p - buf));
  *offset = m->offset;
  *at = m->handled_at;
}

void dlog_pack(GByteArray *out, const dlog_mark_t *marks, size_t n,
               int64_t *first_at, int64_t *last_at) {
  GArray *topics = g_array_new(FALSE, FALSE, sizeof(dlog_mark_t));
  uint64_t *index = g_new(uint64_t, n);
  int64_t offset = 0, at;
  *first_at = *last_at = marks[0].handled_at;
  for (size_t i = 0; i < n; i++) {
    index[i] = topic_index(topics, &marks[i]);
    *first_at = MIN(*first_at, marks[i].handled_at);
    *last_at = MAX(*last_at, marks[i].handled_at);
  }
  g_byte_array_set_size(out, 0);
  dpack_varint_put(out, LOG_FORMAT);
  dpack_varint_put(out, topics->len);
  for (guint i = 0; i < topics->len; i++) {
    const dlog_mark_t *t = &g_array_index(topics, dlog_mark_t, i);
    dpack_varint_put(out, t->topic_len);
    if (t->topic_len)
      g_byte_array_append(out, (const uint8_t *)t->topic, (guint)t->topic_len);
  }
  dpack_varint_put(out, n);
  at = *first_at;
  for (size_t i = 0; i < n; i++)
    pack_mark(out, &marks[i], index[i], &offset, &at);
  g_free(index);
  g_array_free(topics, TRUE);
}

/* n bytes at *p (before end), stepped over; NULL when cut short. */
static const uint8_t *take(const uint8_t **p, const uint8_t *end, uint64_t n) {
  const uint8_t *at = *p;
  if (n > (uint64_t)(end - at))
    return NULL;
  *p += n;
  return at;
}

int dlog_read_start(dlog_reader_t *r, const void *blob, size_t len,
                    int64_t first_at) {
  uint64_t format = 0, ntopics = 0, tlen;
  *r = (dlog_reader_t){.p = blob, .end = (const uint8_t *)blob + len};
  r->topics = g_array_new(FALSE, FALSE, sizeof(dlog_topic_t));
  r->at = first_at;
  if (!blob || !dpack_varint_get(&r->p, r->end, &format) ||
      format != LOG_FORMAT || !dpack_varint_get(&r->p, r->end, &ntopics))
    return -1;
  for (uint64_t i = 0; i < ntopics; i++) {
    dlog_topic_t t;
    if (!dpack_varint_get(&r->p, r->end, &tlen) ||
        !(t.p = take(&r->p, r->end, tlen)))
      return -1;
    t.len = (size_t)tlen;
    g_array_append_val(r->topics, t);
  }
  return dpack_varint_get(&r->p, r->end, &r->left) ? 0 : -1;
}

int dlog_read_next(dlog_reader_t *r, dlog_mark_t *m) {
  uint64_t head, len, topic, part, doff, dat;
  const uint8_t *id;
  if (r->left == 0)
    return 0;
  if (!dpack_varint_get(&r->p, r->end, &head))
    return -1;
  if (head & 1) {
    if (!(id = take(&r->p, r->end, 16)))
      return -1;
    dpack_uuid_text(id, r->uuid);
    m->id = r->uuid;
    m->id_len = sizeof r->uuid;
  } else {
    if (!dpack_varint_get(&r->p, r->end, &len) ||
        !(id = take(&r->p, r->end, len)))
      return -1;
    m->id = len ? (const void *)id : "";
    m->id_len = (size_t)len;
  }
  if (!dpack_varint_get(&r->p, r->end, &topic) || topic >= r->topics->len ||
      !dpack_varint_get(&r->p, r->end, &part) ||
      !dpack_varint_get(&r->p, r->end, &doff) ||
      !dpack_varint_get(&r->p, r->end, &dat))
    return -1;
  const dlog_topic_t *t = &g_array_index(r->topics, dlog_topic_t, topic);
  m->topic = t->len ? (const char *)t->p : "";
  m->topic_len = t->len;
  m->partition = (int32_t)dpack_unzigzag(part);
  r->offset += dpack_unzigzag(doff);
  r->at += dpack_unzigzag(dat);
  m->offset = r->offset;
  m->handled_at = r->at;
  m->outcome = (int)(head >> 1);
  r->left--;
  return 1;
}

uint64_t dlog_read_count(const dlog_reader_t *r) {
  return r->left;
}

void dlog_read_done(dlog_reader_t *r) {
  if (r->topics)
    g_array_free(r->topics, TRUE);
  r->topics = NULL;
}
