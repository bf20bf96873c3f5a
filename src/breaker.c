/*
 * Circuit breaker (see breaker.h): a ring of the last `window` outcomes
 * with a running count of failures.
 */
#include "breaker.h"

#include <pthread.h>
#include <stdlib.h>

struct breaker {
  pthread_mutex_t mu;
  unsigned char *ring; /* 1 = failed */
  int window, next, filled, failures, min_filled;
  double ratio;
  int64_t cooldown_ms;
  int64_t open_until; /* monotonic ms; 0 = closed */
};

breaker_t *breaker_new(int window, double ratio, int64_t cooldown_ms) {
  breaker_t *b = calloc(1, sizeof(*b));
  b->ring = calloc((size_t)window, 1);
  b->window = window;
  b->min_filled = window / 10 > 10 ? window / 10 : 10;
  b->ratio = ratio;
  b->cooldown_ms = cooldown_ms;
  pthread_mutex_init(&b->mu, NULL);
  return b;
}

void breaker_free(breaker_t *b) {
  if (!b)
    return;
  pthread_mutex_destroy(&b->mu);
  free(b->ring);
  free(b);
}

static void forget(breaker_t *b) {
  for (int i = 0; i < b->window; i++)
    b->ring[i] = 0;
  b->next = b->filled = b->failures = 0;
}

int breaker_record(breaker_t *b, int failed, int64_t now_ms) {
  int opened = 0;
  pthread_mutex_lock(&b->mu);
  b->failures += (failed ? 1 : 0) - b->ring[b->next];
  b->ring[b->next] = failed ? 1 : 0;
  b->next = (b->next + 1) % b->window;
  if (b->filled < b->window)
    b->filled++;
  if (b->open_until == 0 && b->filled >= b->min_filled &&
      (double)b->failures > b->ratio * (double)b->filled) {
    b->open_until = now_ms + b->cooldown_ms;
    opened = 1;
  }
  pthread_mutex_unlock(&b->mu);
  return opened;
}

int64_t breaker_open_for(breaker_t *b, int64_t now_ms) {
  int64_t left = 0;
  pthread_mutex_lock(&b->mu);
  if (b->open_until > now_ms) {
    left = b->open_until - now_ms;
  } else if (b->open_until != 0) {
    b->open_until = 0;
    forget(b);
  }
  pthread_mutex_unlock(&b->mu);
  return left;
}
