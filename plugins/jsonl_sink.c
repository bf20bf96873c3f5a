/*
 * jsonl_sink: appends every record it handles to a file, one JSON object per
 * line (JSON Lines).
 *
 *   config = {
 *     path = "/var/lib/orders.jsonl";  # required
 *     fsync = false;                    # fsync(2) after each flush
 *   };
 *
 * A line (compact, keys in this order):
 *   {"topic":"orders","partition":2,"offset":1041,"timestamp":1700000000000,
 *    "key":"k1","event_id":"e-1","headers":{"eventId":"e-1"},"value":"..."}
 * - timestamp is null when the record has none;
 * - key, event_id and value are null when absent; bytes that are not UTF-8
 *   are written base64-encoded, with "<field>_encoding":"base64" added;
 * - headers maps a name to its value (null for a null value, or
 *   {"base64":"..."} when not UTF-8); a repeated name maps to an array of
 *   its values in record order;
 * - a header whose name is not UTF-8 (JSON keys must be) goes, the same
 *   way, into "headers_base64_names", keyed by the base64 of its name; that
 *   field follows headers and is present only when such a header is.
 *
 * Lines are kept in memory until flush(), which the host calls before it
 * commits a batch: what reaches the file is what the host is about to
 * commit. Past LINES_HIGH_WATER bytes, handle() writes the lines out early
 * (at-least-once: a crash before the commit leaves them in the file and
 * the records are delivered, and written, again).
 *
 * The file is created with mode 0600 (less with a stricter umask): it
 * holds whole record values. A file that exists keeps its mode.
 *
 * Every write(2) goes to an O_APPEND descriptor and holds whole lines only,
 * so several members (and hosts) may append to one file without their lines
 * interleaving. After a short write the rest is written with the next call,
 * so a failed flush loses and duplicates nothing.
 *
 * Concurrency & locking: an instance is created, used and destroyed on its
 * member's thread and owns its buffer and descriptor; instances share
 * nothing in memory, so there are no locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <khost/plugin.h>

#define LINES_HIGH_WATER (1024 * 1024)

typedef struct sink {
  const khost_api_t *api;
  khost_host_t *host;
  char *path;
  int fd;
  int fsync;
  GString *lines;  /* encoded lines not yet written; always whole lines
                      unless a short write left the rest of one */
  int write_error; /* the last early write failed (log once) */
} sink_t;

/* ------------------------------------------------------------ encoding */

static int is_utf8(const void *data, size_t len) {
  /* g_utf8_validate() also refuses NUL bytes; those go base64 as well. */
  return g_utf8_validate(data, (gssize)len, NULL);
}

static json_t *json_base64(const void *data, size_t len) {
  gchar *b64 = g_base64_encode(data, len);
  json_t *s = json_string(b64);
  g_free(b64);
  return s;
}

/* Set field to data as text, base64 (adding "<field>_encoding"), or null. */
static int set_bytes(json_t *obj, const char *field, const void *data,
                     size_t len) {
  if (!data)
    return json_object_set_new(obj, field, json_null());
  if (is_utf8(data, len))
    return json_object_set_new(obj, field, json_stringn(data, len));
  char *enc_field = g_strconcat(field, "_encoding", NULL);
  int rc = json_object_set_new(obj, field, json_base64(data, len));
  if (rc == 0)
    rc = json_object_set_new(obj, enc_field, json_string("base64"));
  g_free(enc_field);
  return rc;
}

static json_t *header_value(const void *value, size_t len) {
  if (!value)
    return json_null();
  if (is_utf8(value, len))
    return json_stringn(value, len);
  return json_pack("{s:o}", "base64", json_base64(value, len));
}

/* Add one header; a name seen before turns into an array of its values. */
static int add_header(json_t *headers, const char *name, json_t *value) {
  json_t *prev = json_object_get(headers, name);
  if (!value)
    return -1;
  if (!prev)
    return json_object_set_new(headers, name, value);
  if (json_is_array(prev))
    return json_array_append_new(prev, value);
  return json_object_set_new(headers, name, json_pack("[Oo]", prev, value));
}

/* The headers whose name is (binary = 0) or is not (binary = 1) UTF-8,
 * the latter keyed by the base64 of the name; NULL on failure. */
static json_t *encode_headers(const sink_t *s, const khost_record_t *rec,
                              int binary) {
  json_t *headers = json_object();
  size_t n = s->api->header_count(rec);
  for (size_t i = 0; headers && i < n; i++) {
    const char *name;
    const void *value;
    size_t len;
    if (!s->api->header_at(rec, i, &name, &value, &len)) {
      json_decref(headers);
      return NULL;
    }
    if (is_utf8(name, strlen(name)) == binary)
      continue;
    gchar *b64 =
        binary ? g_base64_encode((const guchar *)name, strlen(name)) : NULL;
    if (add_header(headers, b64 ? b64 : name, header_value(value, len)) < 0) {
      json_decref(headers);
      headers = NULL;
    }
    g_free(b64);
  }
  return headers;
}

/* "headers", and "headers_base64_names" when a name is not UTF-8. */
static int set_headers(json_t *obj, const sink_t *s,
                       const khost_record_t *rec) {
  json_t *binary = encode_headers(s, rec, 1);
  if (!binary ||
      json_object_set_new(obj, "headers", encode_headers(s, rec, 0)) < 0) {
    json_decref(binary);
    return -1;
  }
  if (json_object_size(binary) == 0) {
    json_decref(binary);
    return 0;
  }
  return json_object_set_new(obj, "headers_base64_names", binary);
}

/* The record as one compact JSON line with its '\n'; NULL on failure. */
static char *encode_record(const sink_t *s, const khost_record_t *rec) {
  char *line = NULL;
  json_t *obj = json_pack("{s:s, s:I, s:I, s:o}", "topic", rec->topic,
                          "partition", (json_int_t)rec->partition, "offset",
                          (json_int_t)rec->offset, "timestamp",
                          rec->timestamp >= 0 ? json_integer(rec->timestamp)
                                              : json_null());
  if (!obj || set_bytes(obj, "key", rec->key, rec->key_len) < 0 ||
      set_bytes(obj, "event_id", rec->event_id, rec->event_id_len) < 0 ||
      set_headers(obj, s, rec) < 0 ||
      set_bytes(obj, "value", rec->value, rec->value_len) < 0)
    goto out;
  line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
  json_decref(obj);
  return line;
}

/* ------------------------------------------------------------- writing */

/* Write out every buffered line. On failure the unwritten bytes stay
 * buffered for the next call and err says why. */
static int write_lines(sink_t *s, char *err, size_t errlen) {
  size_t done = 0;
  int rc = 0;
  if (s->lines->len == 0)
    return 0;
  /* Opened at the first write, so that `khost check` creates no file. */
  if (s->fd < 0)
    s->fd = open(s->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (s->fd < 0) {
    snprintf(err, errlen, "%s: %s", s->path, strerror(errno));
    return -1;
  }
  while (done < s->lines->len) {
    ssize_t n = write(s->fd, s->lines->str + done, s->lines->len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(err, errlen, "%s: %s", s->path, strerror(errno));
      rc = -1;
      break;
    }
    done += (size_t)n;
  }
  g_string_erase(s->lines, 0, (gssize)done);
  return rc;
}

static int sink_flush(void *instance, char *err, size_t errlen) {
  sink_t *s = instance;
  if (write_lines(s, err, errlen) < 0)
    return -1;
  s->write_error = 0;
  if (s->fsync && s->fd >= 0 && fsync(s->fd) < 0) {
    snprintf(err, errlen, "%s: fsync: %s", s->path, strerror(errno));
    return -1;
  }
  return 0;
}

/* ----------------------------------------------------------- lifecycle */

/* Refuse at start what would fail at the first write, without creating the
 * file. */
static int check_writable(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode))
      errno = EISDIR;
    else if (access(path, W_OK) == 0)
      return 0;
  } else if (errno == ENOENT) {
    char *dir = g_path_get_dirname(path);
    int ok = access(dir, W_OK | X_OK) == 0;
    g_free(dir);
    if (ok)
      return 0;
  }
  snprintf(err, errlen, "%s: %s", path, strerror(errno));
  return -1;
}

static void sink_free(sink_t *s) {
  if (!s)
    return;
  if (s->fd >= 0)
    close(s->fd);
  if (s->lines)
    g_string_free(s->lines, TRUE);
  g_free(s->path);
  g_free(s);
}

static int sink_create(const khost_api_t *api, khost_host_t *host,
                       void **instance, char *err, size_t errlen) {
  int rc = -1;
  const char *path = NULL;
  sink_t *s = g_new0(sink_t, 1);
  s->api = api;
  s->host = host;
  s->fd = -1;
  int has_path = api->config_string(host, "path", &path);
  if (api->config_bool(host, "fsync", &s->fsync) < 0 || has_path < 0) {
    snprintf(err, errlen, "path must be a string, fsync a boolean");
    goto out;
  }
  if (has_path == 0 || !path[0]) {
    snprintf(err, errlen,
             "the setting path (the file to append to) is "
             "required");
    goto out;
  }
  s->path = g_strdup(path);
  if (check_writable(path, err, errlen) != 0)
    goto out;
  s->lines = g_string_sized_new(64 * 1024);
  *instance = s;
  s = NULL;
  rc = 0;
out:
  sink_free(s);
  return rc;
}

static khost_result_t sink_handle(void *instance, const khost_record_t *rec) {
  sink_t *s = instance;
  char err[512];
  char *line = encode_record(s, rec);
  if (!line) {
    s->api->log(s->host, KHOST_LOG_ERR, "%s[%d]@%lld: cannot encode as JSON",
                rec->topic, (int)rec->partition, (long long)rec->offset);
    return KHOST_RETRY;
  }
  g_string_append(s->lines, line);
  g_string_append_c(s->lines, '\n');
  free(line);
  /* Lines stay buffered on failure; flush() reports it before any commit. */
  if (s->lines->len >= LINES_HIGH_WATER && write_lines(s, err, sizeof(err)) &&
      !s->write_error) {
    s->write_error = 1;
    s->api->log(s->host, KHOST_LOG_WARNING, "%s", err);
  }
  return KHOST_OK;
}

static void sink_destroy(void *instance) {
  sink_t *s = instance;
  char err[512];
  if (s->lines->len && sink_flush(s, err, sizeof(err)) < 0)
    s->api->log(s->host, KHOST_LOG_ERR, "%zu bytes not written: %s",
                s->lines->len, err);
  sink_free(s);
}

static const khost_setting_t sink_settings[] = {
    {"path", KHOST_SETTING_STRING, NULL,
     "the file to append one JSON object per record to (required)", 0},
    {"fsync", KHOST_SETTING_BOOL, "false",
     "fsync the file before each commit (survives power loss)", 0},
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t sink_plugin = {
    KHOST_PLUGIN_INIT,       .name = "jsonl_sink",      .version = "1.0",
    .create = sink_create,   .handle = sink_handle,     .flush = sink_flush,
    .destroy = sink_destroy, .settings = sink_settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &sink_plugin;
}
