/*
 * Circuit breaker of a pipeline: when more than a configured share of the
 * last N outcomes failed, the pipeline pauses for a cooldown instead of
 * sending record after record to the dead-letter topic while a dependency
 * is down. Shared by the members of one pipeline; thread-safe.
 */
#ifndef KHOST_BREAKER_H
#define KHOST_BREAKER_H

#include <stdint.h>

typedef struct breaker breaker_t;

/* window outcomes are remembered; it opens once at least window / 10 (and
 * at least 10) are known and more than ratio of them failed. */
breaker_t *breaker_new(int window, double ratio, int64_t cooldown_ms);
void breaker_free(breaker_t *b);

/* Record one outcome (failed: 1) at now_ms (monotonic). Returns 1 when this
 * outcome opened the breaker. */
int breaker_record(breaker_t *b, int failed, int64_t now_ms);
/* Milliseconds until the breaker closes; 0 when closed. Closing forgets
 * the window, so a dependency that is still down opens it again only after
 * enough new failures. */
int64_t breaker_open_for(breaker_t *b, int64_t now_ms);

#endif
