/*
 * khost logger. Lines go to one file descriptor (stderr by default), each
 * written with a single write() so that lines of different threads never
 * interleave.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int log_level = KHOST_LOG_INFO;
static volatile int log_fd = 2;
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

/* "<time> <level> [who] <message>\n" into line (LOG_LINE_MAX bytes,
 * truncated to fit); its length, or -1. */
static int log_format(char *line, int level, const char *who, const char *fmt,
                      va_list ap) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, LOG_LINE_MAX,
                   "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s [%s] ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                   log_level_name(level), who ? who : "khost");
  if (n < 0)
    return -1;
  if (n < LOG_LINE_MAX - 1) {
    int m = vsnprintf(line + n, LOG_LINE_MAX - 1 - (size_t)n, fmt, ap);
    if (m > 0)
      n += m;
  }
  if (n > LOG_LINE_MAX - 2)
    n = LOG_LINE_MAX - 2; /* truncated: keep the newline */
  line[n++] = '\n';
  return n;
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
  int n = log_format(line, level, who, fmt, ap);
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
void log_vmsg(int level, const char *who, const char *fmt, va_list ap) {
  char line[LOG_LINE_MAX];
  if (level > log_level)
    return;
  int n = log_format(line, level, who, fmt, ap);
  if (n < 0)
    return;
  log_note_lost();
  if (log_write(line, n) < 0)
    atomic_fetch_add(&log_lost, 1);
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
