/*
 * Progress lines (see progress.h).
 */
#include "progress.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

#define PROGRESS_TTY_MS 1000
#define PROGRESS_LOG_MS 60000

struct progress {
  int tty;
  int64_t every_ms;
  int64_t first_ms, first_left; /* the first observation: rate from there */
  int64_t last_ms;              /* the last line shown */
  int shown;                    /* a terminal line is up */
};

progress_t *progress_new(void) {
  progress_t *pg = calloc(1, sizeof(*pg));
  const char *env = getenv("KHOST_PROGRESS_INTERVAL_MS");
  pg->tty = isatty(2);
  pg->every_ms = pg->tty ? PROGRESS_TTY_MS : PROGRESS_LOG_MS;
  if (env && atoll(env) > 0)
    pg->every_ms = atoll(env);
  pg->first_ms = -1;
  return pg;
}

/* "1234 records left, 812 records/s, ETA 0:00:02" into buf. */
static void describe(const progress_t *pg, int64_t left, int64_t now_ms,
                     char *buf, size_t size) {
  double secs = (double)(now_ms - pg->first_ms) / 1000.0;
  double rate = secs > 0 ? (double)(pg->first_left - left) / secs : 0;
  int n = snprintf(buf, size, "%" PRId64 " records left, %.0f records/s", left,
                   rate > 0 ? rate : 0);
  if (n < 0 || (size_t)n >= size)
    return;
  if (rate <= 0) {
    snprintf(buf + n, size - (size_t)n, ", ETA unknown");
    return;
  }
  int64_t eta = (int64_t)((double)left / rate + 0.5);
  snprintf(buf + n, size - (size_t)n, ", ETA %" PRId64 ":%02d:%02d", eta / 3600,
           (int)(eta / 60 % 60), (int)(eta % 60));
}

void progress_update(progress_t *pg, int64_t left, int64_t now_ms) {
  char line[160];
  if (left < 0)
    return;
  if (pg->first_ms < 0)
    pg->last_ms = now_ms;
  /* The rate counts from the last moment nothing had moved yet: the wait
   * for the group's first assignment is no part of it. */
  if (pg->first_ms < 0 || left >= pg->first_left) {
    pg->first_ms = now_ms;
    pg->first_left = left;
  }
  if (now_ms - pg->last_ms < pg->every_ms)
    return;
  pg->last_ms = now_ms;
  describe(pg, left, now_ms, line, sizeof(line));
  if (pg->tty) {
    log_status(line);
    pg->shown = 1;
  } else {
    log_msg(KHOST_LOG_INFO, "khost", "progress: %s", line);
  }
}

void progress_free(progress_t *pg) {
  if (!pg)
    return;
  if (pg->shown)
    log_status(NULL);
  free(pg);
}
