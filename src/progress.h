/*
 * Progress of `khost run --exit-at-end`: records left, rate and the time
 * still to go. On a terminal (stderr a tty) one line that updates itself
 * every second; otherwise a log line every minute
 * (KHOST_PROGRESS_INTERVAL_MS overrides that interval, for tests).
 * Driven by one thread (the host's monitor).
 */
#ifndef KHOST_PROGRESS_H
#define KHOST_PROGRESS_H

#include <stdint.h>

typedef struct progress progress_t;

progress_t *progress_new(void);
/* left: records still to go now (-1: nothing tracked); now_ms monotonic. */
void progress_update(progress_t *pg, int64_t left, int64_t now_ms);
/* Clears the terminal line, and frees. */
void progress_free(progress_t *pg);

#endif
