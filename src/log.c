/*
 * khost logger. Lines go to one file descriptor (stderr by default), each
 * written with a single write() so that lines of different threads never
 * interleave.
 */
#include "log.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int log_level = KHOST_LOG_INFO;
static volatile int log_fd = 2;
static volatile int log_json;
/* A status line (log_status()) is on the terminal, without a newline. */
static atomic_int log_status_shown;
/* Lines a failed write() lost since the last one that went through, and
 * that write's errno. */
static atomic_ulong log_lost;
static atomic_int log_lost_errno;

static const char *const level_names[] = {
    [KHOST_LOG_ERR] = "err",       [KHOST_LOG_WARNING] = "warning",
    [KHOST_LOG_NOTICE] = "notice", [KHOST_LOG_INFO] = "info",
    [KHOST_LOG_DEBUG] = "debug",
};

void log_set_level(int level) {
  log_level = level;
}

int log_get_level(void) {
  return log_level;
}

void log_set_fd(int fd) {
  log_fd = fd;
}

int log_level_parse(const char *name) {
  for (int l = KHOST_LOG_ERR; l <= KHOST_LOG_DEBUG; l++)
    if (strcasecmp(name, level_names[l]) == 0)
      return l;
  if (strcasecmp(name, "error") == 0)
    return KHOST_LOG_ERR;
  if (strcasecmp(name, "warn") == 0)
    return KHOST_LOG_WARNING;
  return -1;
}

const char *log_level_name(int level) {
  if (level < KHOST_LOG_ERR)
    level = KHOST_LOG_ERR;
  if (level > KHOST_LOG_DEBUG)
    level = KHOST_LOG_DEBUG;
  return level_names[level];
}

#define LOG_LINE_MAX 4096

int log_format_parse(const char *name) {
  if (strcasecmp(name, "text") == 0)
    return 0;
  if (strcasecmp(name, "json") == 0)
    return 1;
  return -1;
}

void log_set_json(int on) {
  log_json = on;
}

/* "2026-11-25T10:00:00.123Z" into buf (96 bytes: room for any int). */
static void log_time(char *buf, size_t size) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(tv.tv_usec / 1000));
}

/* "<time> <level> [who] [record: ]<message>\n" into line (LOG_LINE_MAX
 * bytes, truncated to fit); its length, or -1. */
static int log_format_text(char *line, const char *stamp, int level,
                           const char *who, const log_record_t *rec,
                           const char *msg) {
  int n = snprintf(line, LOG_LINE_MAX, "%s %-7s [%s] ", stamp,
                   log_level_name(level), who);
  if (n < 0)
    return -1;
  if (rec && n < LOG_LINE_MAX - 1) {
    int m = snprintf(
        line + n, LOG_LINE_MAX - 1 - (size_t)n,
        "%s [%" PRId32 "] offset %" PRId64 " eventId %s: ", rec->topic,
        rec->partition, rec->offset, rec->event_id ? rec->event_id : "-");
    if (m > 0)
      n += m;
  }
  if (n < LOG_LINE_MAX - 1) {
    int m = snprintf(line + n, LOG_LINE_MAX - 1 - (size_t)n, "%s", msg);
    if (m > 0)
      n += m;
  }
  if (n > LOG_LINE_MAX - 2)
    n = LOG_LINE_MAX - 2; /* truncated: keep the newline */
  line[n++] = '\n';
  return n;
}

/* who is "pipeline/member[/plugin]" for the lines about a member (and its
 * plugin): those become fields of their own next to "who". */
static void log_json_who(json_t *o, const char *who) {
  const char *slash = strchr(who, '/');
  char *end;
  json_object_set_new(o, "who", json_string(who));
  if (!slash)
    return;
  long member = strtol(slash + 1, &end, 10);
  if (end == slash + 1 || (*end && *end != '/'))
    return;
  json_object_set_new(o, "pipeline", json_stringn(who, (size_t)(slash - who)));
  json_object_set_new(o, "member", json_integer(member));
  if (*end == '/' && end[1])
    json_object_set_new(o, "plugin", json_string(end + 1));
}

/* Invalid UTF-8 (a plugin's text, a record's bytes) or a cut through a
 * character must not lose the line: the message is then kept with its
 * bytes escaped. */
static void log_json_message(json_t *o, const char *msg, size_t len) {
  char *text = g_strndup(msg, len);
  json_t *m = json_string(text);
  if (!m) {
    char *esc = g_strescape(text, NULL);
    m = json_string(esc);
    g_free(esc);
  }
  json_object_set_new(o, "message", m);
  g_free(text);
}

/* One JSON object and a newline into line (LOG_LINE_MAX bytes; a longer
 * message is cut to fit); its length, or -1. */
static int log_format_json(char *line, const char *stamp, int level,
                           const char *who, const log_record_t *rec,
                           const char *msg) {
  json_t *o = json_object();
  int n = -1;
  json_object_set_new(o, "time", json_string(stamp));
  json_object_set_new(o, "level", json_string(log_level_name(level)));
  log_json_who(o, who);
  if (rec) {
    json_object_set_new(o, "topic", json_string(rec->topic));
    json_object_set_new(o, "partition", json_integer(rec->partition));
    json_object_set_new(o, "offset", json_integer(rec->offset));
    if (rec->event_id)
      json_object_set_new(o, "event_id", json_string(rec->event_id));
  }
  log_json_message(o, msg, strlen(msg));
  size_t len = json_dumpb(o, line, LOG_LINE_MAX - 1, JSON_COMPACT);
  if (len >= LOG_LINE_MAX - 1) {
    /* Too long for one line (escapes grow it): cut the message. */
    log_json_message(o, msg, LOG_LINE_MAX / 4);
    len = json_dumpb(o, line, LOG_LINE_MAX - 1, JSON_COMPACT);
  }
  if (len > 0 && len < LOG_LINE_MAX - 1) {
    line[len] = '\n';
    n = (int)len + 1;
  }
  json_decref(o);
  return n;
}

static int log_format(char *line, int level, const char *who,
                      const log_record_t *rec, const char *fmt, va_list ap) {
  char stamp[96], msg[LOG_LINE_MAX];
  log_time(stamp, sizeof(stamp));
  if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
    msg[0] = '\0';
  if (!who)
    who = "khost";
  if (log_json)
    return log_format_json(line, stamp, level, who, rec, msg);
  return log_format_text(line, stamp, level, who, rec, msg);
}

/* One write() per line, so that lines of different threads never mix;
 * 0, or -1 with the reason kept for the note on lost lines. */
static int log_write(const char *line, int n) {
  ssize_t w;
  do
    w = write(log_fd, line, (size_t)n);
  while (w < 0 && errno == EINTR);
  if (w >= 0)
    return 0;
  atomic_store(&log_lost_errno, errno);
  return -1;
}

static int log_formatf(char *line, int level, const char *who, const char *fmt,
                       ...) KHOST_PRINTF(4, 5);

static int log_formatf(char *line, int level, const char *who, const char *fmt,
                       ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = log_format(line, level, who, NULL, fmt, ap);
  va_end(ap);
  return n;
}

/* Before the first line that can be written again: how many were lost
 * (given back to the count if this note cannot be written either). */
static void log_note_lost(void) {
  char line[LOG_LINE_MAX];
  unsigned long lost = atomic_exchange(&log_lost, 0);
  if (lost == 0)
    return;
  int n = log_formatf(line, KHOST_LOG_WARNING, "khost",
                      "%lu log line(s) lost: writing the log failed: %s", lost,
                      strerror(atomic_load(&log_lost_errno)));
  if (n < 0 || log_write(line, n) < 0)
    atomic_fetch_add(&log_lost, lost);
}

/* A log that cannot be written (stderr a pipe whose reader went away, a
 * closed descriptor, a full disk) must not stop the host: the line is
 * counted as lost, and once writing works again one line says how many
 * were lost and why. With SIGPIPE ignored (main()), a write to a pipe
 * without reader fails with EPIPE instead of killing the process. */
static void log_vrec(int level, const char *who, const log_record_t *rec,
                     const char *fmt, va_list ap) {
  char line[LOG_LINE_MAX + 4];
  if (level > log_level)
    return;
  /* Room for the escape that clears a status line in the same write. */
  int n = log_format(line + 4, level, who, rec, fmt, ap);
  if (n < 0)
    return;
  char *out = line + 4;
  if (atomic_exchange(&log_status_shown, 0)) {
    memcpy(line, "\r\x1b[K", 4);
    out = line;
    n += 4;
  }
  log_note_lost();
  if (log_write(out, n) < 0)
    atomic_fetch_add(&log_lost, 1);
}

void log_status(const char *text) {
  char line[256];
  int n = snprintf(line, sizeof(line), "\r\x1b[K%s", text ? text : "");
  if (n >= (int)sizeof(line))
    n = (int)sizeof(line) - 1;
  /* A lost status line is redrawn by the next one: not counted. */
  if (n > 0 && log_write(line, n) == 0)
    atomic_store(&log_status_shown, text != NULL);
}

void log_vmsg(int level, const char *who, const char *fmt, va_list ap) {
  log_vrec(level, who, NULL, fmt, ap);
}

void log_rec(int level, const char *who, const log_record_t *rec,
             const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vrec(level, who, rec, fmt, ap);
  va_end(ap);
}

void log_msg(int level, const char *who, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(level, who, fmt, ap);
  va_end(ap);
}

int log_is_secret_property(const char *name) {
  static const char *const secret_words[] = {"password", "secret",
                                             "sasl.oauthbearer.config",
                                             "ssl.key.pem", "ssl_key"};
  for (size_t i = 0; i < sizeof(secret_words) / sizeof(*secret_words); i++)
    if (strstr(name, secret_words[i]))
      return 1;
  return 0;
}
