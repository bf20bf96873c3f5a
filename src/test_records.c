/*
 * Records written as JSON lines (test_records.h), parsed with jansson.
 *
 * The whole file is read and checked before any record reaches a plugin:
 * a typo on line 40 must not leave 39 records handled and the rest not.
 */
#include "test_records.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Problems reported before giving up on the rest of the file. */
#define TREC_MAX_PROBLEMS 20

typedef struct trec_reader {
  const char *path;
  const char *default_topic;
  GHashTable *next_offset; /* "topic\npartition" -> int64_t next offset */
  GString *err;
  int problems;
  int line;
} trec_reader_t;

static void problem(trec_reader_t *rd, const char *field, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void problem(trec_reader_t *rd, const char *field, const char *fmt,
                    ...) {
  va_list ap;
  rd->problems++;
  if (rd->problems > TREC_MAX_PROBLEMS)
    return;
  if (rd->err->len)
    g_string_append_c(rd->err, '\n');
  g_string_append_printf(rd->err, "%s:%d: %s%s", rd->path, rd->line,
                         field ? field : "", field ? ": " : "");
  va_start(ap, fmt);
  g_string_append_vprintf(rd->err, fmt, ap);
  va_end(ap);
}

/* key or value: a string as is, null for none, any other JSON encoded. */
static int bytes_of(trec_reader_t *rd, const char *field, json_t *v, char **out,
                    size_t *len) {
  *out = NULL;
  *len = 0;
  if (!v || json_is_null(v))
    return 0;
  if (json_is_string(v)) {
    *len = json_string_length(v);
    *out = g_memdup2(json_string_value(v), *len + 1);
    return 0;
  }
  *out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!*out) {
    problem(rd, field, "cannot encode the value");
    return -1;
  }
  *len = strlen(*out);
  return 0;
}

static int add_header(trec_reader_t *rd, trec_t *r, const char *name,
                      json_t *v) {
  if (!json_is_string(v) && !json_is_null(v)) {
    problem(rd, "headers",
            "the value of header \"%s\" must be a string or "
            "null",
            name);
    return -1;
  }
  if (!r->headers)
    r->headers = rd_kafka_headers_new(4);
  rd_kafka_header_add(r->headers, name, -1,
                      json_is_string(v) ? json_string_value(v) : NULL,
                      json_is_string(v) ? (ssize_t)json_string_length(v) : 0);
  return 0;
}

/* {"name": "value", ...} or [["name", "value"], ...] */
static int headers_of(trec_reader_t *rd, trec_t *r, json_t *h) {
  const char *name;
  json_t *v;
  size_t i;
  if (!h || json_is_null(h))
    return 0;
  if (json_is_object(h)) {
    json_object_foreach(h, name, v) {
      if (add_header(rd, r, name, v) < 0)
        return -1;
    }
    return 0;
  }
  if (!json_is_array(h)) {
    problem(rd, "headers",
            "must be an object {\"name\": \"value\"} or a list "
            "of [\"name\", \"value\"] pairs");
    return -1;
  }
  json_array_foreach(h, i, v) {
    if (!json_is_array(v) || json_array_size(v) != 2 ||
        !json_is_string(json_array_get(v, 0))) {
      problem(rd, "headers", "element %zu is not a [\"name\", \"value\"] pair",
              i);
      return -1;
    }
    if (add_header(rd, r, json_string_value(json_array_get(v, 0)),
                   json_array_get(v, 1)) < 0)
      return -1;
  }
  return 0;
}

/* An optional integer field of at least min; 1 when present. */
static int int_field(trec_reader_t *rd, json_t *obj, const char *field,
                     int64_t min, int64_t max, int64_t *out) {
  json_t *v = json_object_get(obj, field);
  if (!v || json_is_null(v))
    return 0;
  if (!json_is_integer(v) || json_integer_value(v) < min ||
      json_integer_value(v) > max) {
    problem(rd, field, "must be an integer from %" G_GINT64_FORMAT, min);
    return -1;
  }
  *out = json_integer_value(v);
  return 1;
}

/* The offset: as written (after the previous one of its partition), or
 * the next one. */
static int offset_of(trec_reader_t *rd, json_t *obj, trec_t *r) {
  char *tp = g_strdup_printf("%s\n%" PRId32, r->topic, r->partition);
  int64_t *next = g_hash_table_lookup(rd->next_offset, tp);
  int64_t want = next ? *next : 0;
  int rc = int_field(rd, obj, "offset", 0, INT64_MAX - 1, &r->offset);
  if (rc == 0)
    r->offset = want;
  if (rc >= 0 && r->offset < want) {
    problem(rd, "offset",
            "%" PRId64 " is not after the previous record of %s [%" PRId32
            "] (offset %" PRId64 "): offsets grow within a partition",
            r->offset, r->topic, r->partition, want - 1);
    rc = -1;
  }
  if (!next) {
    next = g_new(int64_t, 1);
    g_hash_table_insert(rd->next_offset, tp, next);
    tp = NULL;
  }
  *next = r->offset + 1;
  g_free(tp);
  return rc < 0 ? -1 : 0;
}

static int check_fields(trec_reader_t *rd, json_t *obj) {
  static const char *const known[] = {"topic", "partition", "offset",    "key",
                                      "value", "headers",   "timestamp", NULL};
  const char *name;
  json_t *v;
  int rc = 0;
  json_object_foreach(obj, name, v) {
    if (!g_strv_contains(known, name)) {
      problem(rd, name,
              "unknown field (known: topic, partition, offset, key, value, "
              "headers, timestamp)");
      rc = -1;
    }
  }
  return rc;
}

static int topic_of(trec_reader_t *rd, json_t *obj, trec_t *r) {
  json_t *t = json_object_get(obj, "topic");
  if (t && !json_is_string(t)) {
    problem(rd, "topic", "must be a string");
    return -1;
  }
  if (!t && !rd->default_topic) {
    problem(rd, "topic", "required (no pipeline gives a default)");
    return -1;
  }
  r->topic = g_strdup(t ? json_string_value(t) : rd->default_topic);
  return 0;
}

static int record_of(trec_reader_t *rd, json_t *obj, trec_t *r) {
  int64_t part = 0;
  int bad = check_fields(rd, obj);
  r->line = rd->line;
  r->timestamp = -1;
  bad |= topic_of(rd, obj, r);
  bad |= int_field(rd, obj, "partition", 0, INT32_MAX, &part) < 0;
  r->partition = (int32_t)part;
  bad |= int_field(rd, obj, "timestamp", -1, INT64_MAX, &r->timestamp) < 0;
  bad |= bytes_of(rd, "key", json_object_get(obj, "key"), &r->key, &r->key_len);
  bad |= bytes_of(rd, "value", json_object_get(obj, "value"), &r->value,
                  &r->value_len);
  bad |= headers_of(rd, r, json_object_get(obj, "headers"));
  if (r->topic)
    bad |= offset_of(rd, obj, r);
  return bad ? -1 : 0;
}

static void trec_clear(trec_t *r) {
  g_free(r->topic);
  g_free(r->key);
  g_free(r->value);
  if (r->headers)
    rd_kafka_headers_destroy(r->headers);
  memset(r, 0, sizeof(*r));
}

/* One line: appended to recs when it holds a good record. */
static void read_line(trec_reader_t *rd, const char *text, GArray *recs) {
  json_error_t jerr;
  trec_t r = {0};
  if (strspn(text, " \t\r\n") == strlen(text))
    return;
  json_t *obj = json_loads(text, JSON_ALLOW_NUL, &jerr);
  if (!obj)
    problem(rd, NULL, "not JSON: %s (column %d)", jerr.text, jerr.column);
  else if (!json_is_object(obj))
    problem(rd, NULL, "not a JSON object: write one {...} per line");
  else if (record_of(rd, obj, &r) == 0)
    g_array_append_val(recs, r);
  else
    trec_clear(&r);
  json_decref(obj);
}

int trec_read_file(trec_list_t *out, const char *path,
                   const char *default_topic, char *err, size_t errlen) {
  trec_reader_t rd = {path, default_topic, NULL, g_string_new(NULL), 0, 0};
  GArray *recs = g_array_new(FALSE, TRUE, sizeof(trec_t));
  char *text = NULL;
  size_t cap = 0;
  int rc = -1;
  FILE *f = fopen(path, "r");
  rd.next_offset =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  memset(out, 0, sizeof(*out));
  if (!f) {
    g_string_printf(rd.err, "%s: cannot read: %s", path, g_strerror(errno));
    goto out;
  }
  while (getline(&text, &cap, f) >= 0) {
    rd.line++;
    read_line(&rd, text, recs);
  }
  if (ferror(f))
    problem(&rd, NULL, "read error: %s", g_strerror(errno));
  if (rd.problems > TREC_MAX_PROBLEMS)
    g_string_append_printf(rd.err, "\n%s: %d more problems", path,
                           rd.problems - TREC_MAX_PROBLEMS);
  rc = rd.problems ? -1 : 0;
out:
  out->n = recs->len;
  out->recs = (trec_t *)(void *)g_array_free(recs, FALSE);
  if (rc != 0) {
    trec_list_free(out);
    g_strlcpy(err, rd.err->str, errlen);
  }
  if (f)
    fclose(f);
  free(text);
  g_hash_table_destroy(rd.next_offset);
  g_string_free(rd.err, TRUE);
  return rc;
}

void trec_list_free(trec_list_t *l) {
  for (size_t i = 0; i < l->n; i++)
    trec_clear(&l->recs[i]);
  g_free(l->recs);
  memset(l, 0, sizeof(*l));
}
