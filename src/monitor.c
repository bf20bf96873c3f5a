/*
 * The monitor thread (see monitor.h).
 */
#include "monitor.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

/* How often the loop turns, and how often throughput is sampled. */
#define MONITOR_TICK_MS 250
#define MONITOR_SAMPLE_MS 5000

struct monitor {
  host_t *h;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cond; /* signalled on quit */
  int quit;
  int64_t last_sample;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sample(monitor_t *mon) {
  for (size_t i = 0; i < host_pipeline_count(mon->h); i++) {
    pipeline_stats_t s;
    host_pipeline_stats(mon->h, i, &s);
    metrics_sample(host_metrics(mon->h, i),
                   s.handled + s.duplicates + s.failed);
  }
}

static void turn(monitor_t *mon) {
  int64_t now = mono_ms();
  if (now - mon->last_sample >= MONITOR_SAMPLE_MS) {
    mon->last_sample = now;
    sample(mon);
  }
}

static void *monitor_main(void *arg) {
  monitor_t *mon = arg;
  struct timespec at;
  pthread_setname_np(pthread_self(), "kh/monitor");
  pthread_mutex_lock(&mon->mu);
  while (!mon->quit) {
    pthread_mutex_unlock(&mon->mu);
    turn(mon);
    pthread_mutex_lock(&mon->mu);
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_nsec += MONITOR_TICK_MS * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
      at.tv_sec++;
      at.tv_nsec -= 1000000000L;
    }
    while (!mon->quit &&
           pthread_cond_timedwait(&mon->cond, &mon->mu, &at) != ETIMEDOUT)
      ;
  }
  pthread_mutex_unlock(&mon->mu);
  return NULL;
}

monitor_t *monitor_start(host_t *h) {
  monitor_t *mon = calloc(1, sizeof(*mon));
  pthread_condattr_t ca;
  mon->h = h;
  pthread_mutex_init(&mon->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&mon->cond, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&mon->thread, NULL, monitor_main, mon) != 0) {
    log_msg(KHOST_LOG_WARNING, "khost",
            "cannot start the monitor thread: no throughput samples");
    pthread_cond_destroy(&mon->cond);
    pthread_mutex_destroy(&mon->mu);
    free(mon);
    return NULL;
  }
  return mon;
}

void monitor_stop(monitor_t *mon) {
  if (!mon)
    return;
  pthread_mutex_lock(&mon->mu);
  mon->quit = 1;
  pthread_cond_broadcast(&mon->cond);
  pthread_mutex_unlock(&mon->mu);
  pthread_join(mon->thread, NULL);
  pthread_cond_destroy(&mon->cond);
  pthread_mutex_destroy(&mon->mu);
  free(mon);
}
