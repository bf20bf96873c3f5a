/*
 * khost logger. Lines go to one file descriptor (stderr by default), each
 * written with a single write() so that lines of different threads never
 * interleave. A warning repeated word for word is written once per
 * LOG_REPEAT_MS, then counted (see log_repeat_hold()).
 */
#include "log.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
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

/* Repeated warnings: one line per window, then how many were held. */
#define LOG_REPEAT_MS 5000
#define LOG_REPEAT_KEYS 256 /* warnings followed at once, at most */
typedef struct log_repeat {
  char *who, *msg;
  int64_t since; /* the window's start (log_clock) */
  int64_t last;  /* the last one held */
  uint64_t held; /* lines not written since `since` */
} log_repeat_t;
static pthread_mutex_t log_repeat_mu = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *log_repeats; /* "who\nmsg" -> log_repeat_t * */
static int64_t (*log_clock)(void);

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
                      const log_record_t *rec, const char *msg) {
  char stamp[96];
  log_time(stamp, sizeof(stamp));
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
  char msg[LOG_LINE_MAX];
  va_list ap;
  va_start(ap, fmt);
  if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
    msg[0] = '\0';
  va_end(ap);
  return log_format(line, level, who, NULL, msg);
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

/* One formatted line out (a status line cleared first). */
static void log_emit(int level, const char *who, const log_record_t *rec,
                     const char *msg) {
  char line[LOG_LINE_MAX + 4];
  /* Room for the escape that clears a status line in the same write. */
  int n = log_format(line + 4, level, who, rec, msg);
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

/* ------------------------------------------------------------ repeats */

static int64_t log_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_repeat_free(gpointer p) {
  log_repeat_t *r = p;
  g_free(r->who);
  g_free(r->msg);
  g_free(r);
}

void log_set_clock(int64_t (*now_ms)(void)) {
  pthread_mutex_lock(&log_repeat_mu);
  log_clock = now_ms;
  if (log_repeats)
    g_hash_table_remove_all(log_repeats);
  pthread_mutex_unlock(&log_repeat_mu);
}

/* Windows that are over (log_repeat_mu held): those that held lines give
 * their count to *due (the entries themselves go on, counting anew);
 * those that held none are forgotten, so that the next one is written. */
static void log_repeat_sweep(int64_t now, GPtrArray *due) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, log_repeats);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    log_repeat_t *r = v;
    if (now - r->since < LOG_REPEAT_MS)
      continue;
    if (r->held == 0) {
      g_hash_table_iter_remove(&it);
      continue;
    }
    int64_t secs = (r->last - r->since + 999) / 1000;
    g_ptr_array_add(due, g_strdup(r->who));
    g_ptr_array_add(due,
                    g_strdup_printf("%s (repeated %" PRIu64
                                    " more time%s in the last %" PRId64 " s)",
                                    r->msg, r->held, r->held == 1 ? "" : "s",
                                    secs > 0 ? secs : 1));
    r->since = now;
    r->held = 0;
  }
}

void log_repeats_flush(void) {
  GPtrArray *due = g_ptr_array_new_with_free_func(g_free);
  pthread_mutex_lock(&log_repeat_mu);
  int64_t now = log_clock ? log_clock() : log_mono_ms();
  /* Every window ends now: sweep as if it had. */
  if (log_repeats) {
    log_repeat_sweep(now + LOG_REPEAT_MS, due);
    g_hash_table_remove_all(log_repeats);
  }
  pthread_mutex_unlock(&log_repeat_mu);
  for (guint i = 0; i < due->len; i += 2)
    log_emit(KHOST_LOG_WARNING, due->pdata[i], NULL, due->pdata[i + 1]);
  g_ptr_array_free(due, TRUE);
}

/* Is this warning held (a repeat inside its window)? msg NULL: a line
 * that is never held. Also says, in *due, which counts are due (who,
 * line, who, line, ...). */
static int log_repeat_hold(const char *who, const char *msg, GPtrArray *due) {
  int held = 0;
  pthread_mutex_lock(&log_repeat_mu);
  int64_t now = log_clock ? log_clock() : log_mono_ms();
  if (!log_repeats)
    log_repeats =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, log_repeat_free);
  log_repeat_sweep(now, due);
  if (msg) {
    char *key = g_strconcat(who, "\n", msg, NULL);
    log_repeat_t *r = g_hash_table_lookup(log_repeats, key);
    if (r) {
      r->held++;
      r->last = now;
      held = 1;
      g_free(key);
    } else if (g_hash_table_size(log_repeats) < LOG_REPEAT_KEYS) {
      r = g_new0(log_repeat_t, 1);
      r->who = g_strdup(who);
      r->msg = g_strdup(msg);
      r->since = r->last = now;
      g_hash_table_insert(log_repeats, key, r);
    } else {
      g_free(key);
    }
  }
  pthread_mutex_unlock(&log_repeat_mu);
  return held;
}

/* A log that cannot be written (stderr a pipe whose reader went away, a
 * closed descriptor, a full disk) must not stop the host: the line is
 * counted as lost, and once writing works again one line says how many
 * were lost and why. With SIGPIPE ignored (main()), a write to a pipe
 * without reader fails with EPIPE instead of killing the process.
 * A warning not about one record, repeated word for word (a commit
 * refused during a rebalance, hundreds of times a second), is written
 * the first time; the repeats of the next LOG_REPEAT_MS are counted and
 * said in one line once that window is over (with the next line logged),
 * and so on while it goes on. */
static void log_vrec(int level, const char *who, const log_record_t *rec,
                     const char *fmt, va_list ap) {
  char msg[LOG_LINE_MAX];
  if (level > log_level)
    return;
  if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
    msg[0] = '\0';
  if (!who)
    who = "khost";
  GPtrArray *due = g_ptr_array_new_with_free_func(g_free);
  int held = log_repeat_hold(
      who, level == KHOST_LOG_WARNING && !rec ? msg : NULL, due);
  for (guint i = 0; i < due->len; i += 2)
    log_emit(KHOST_LOG_WARNING, due->pdata[i], NULL, due->pdata[i + 1]);
  g_ptr_array_free(due, TRUE);
  if (!held)
    log_emit(level, who, rec, msg);
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
