/*
 * khost logger. Lines go to one file descriptor (stderr by default), each
 * written with a single write() so that lines of different threads never
 * interleave.
 */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int log_level = KHOST_LOG_INFO;
static volatile int log_fd = 2;

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

void log_vmsg(int level, const char *who, const char *fmt, va_list ap) {
  if (level > log_level)
    return;
  char line[4096];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof(line),
                   "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s [%s] ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                   log_level_name(level), who ? who : "khost");
  if (n < 0)
    return;
  if ((size_t)n < sizeof(line) - 1) {
    int m = vsnprintf(line + n, sizeof(line) - 1 - (size_t)n, fmt, ap);
    if (m > 0)
      n += m;
  }
  if ((size_t)n > sizeof(line) - 2) {
    n = (int)sizeof(line) - 2; /* truncated: keep the newline */
  }
  line[n++] = '\n';
  ssize_t w = write(log_fd, line, (size_t)n);
  (void)w;
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
