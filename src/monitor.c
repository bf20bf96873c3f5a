/*
 * The monitor thread (see monitor.h).
 */
#include "monitor.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "metrics.h"
#include "progress.h"

/* How often the loop turns, and how often throughput is sampled. */
#define MONITOR_TICK_MS 250
#define MONITOR_SAMPLE_MS 5000

struct monitor {
  host_view_t view; /* a copy of what the host handed down */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cond; /* signalled on quit */
  int quit;
  int ready_sent, stopping_sent, stuck_logged;
  uint64_t watchdog_us; /* 0: systemd wants no WATCHDOG=1 */
  int64_t last_sample, last_watchdog;
  progress_t *progress; /* --exit-at-end: records left, rate, ETA */
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void notify(const char *state) {
#ifdef HAVE_SYSTEMD
  int rc = sd_notify(0, state);
  if (rc < 0)
    log_msg(KHOST_LOG_WARNING, "systemd", "cannot send %s: %s", state,
            strerror(-rc));
#else
  (void)state;
#endif
}

static void sample(monitor_t *mon) {
  for (size_t i = 0; i < view_pipeline_count(&mon->view); i++) {
    pipeline_stats_t s;
    view_pipeline_stats(&mon->view, i, &s);
    metrics_sample(view_metrics(&mon->view, i),
                   s.handled + s.duplicates + s.failed);
  }
}

static int all_joined(monitor_t *mon) {
  for (size_t i = 0; i < view_pipeline_count(&mon->view); i++) {
    metrics_t *mx = view_metrics(&mon->view, i);
    for (int m = 0; m < mx->n_members; m++)
      if (!atomic_load(&mx->members[m].joined))
        return 0;
  }
  return 1;
}

/* The first member whose loop has stood still past its pipeline's limit,
 * as "pipeline member N for M ms" in buf; 0 when every one moves. */
static int find_stuck(monitor_t *mon, char *buf, size_t len) {
  int64_t now = mono_ms();
  for (size_t i = 0; i < view_pipeline_count(&mon->view); i++) {
    metrics_t *mx = view_metrics(&mon->view, i);
    for (int m = 0; m < mx->n_members; m++) {
      int64_t tick = atomic_load(&mx->members[m].tick_ms);
      if (tick == 0 || now - tick <= mx->stuck_ms)
        continue;
      snprintf(buf, len, "%s member %d for %" PRId64 " ms", mx->pipeline, m,
               now - tick);
      return 1;
    }
  }
  return 0;
}

/* WATCHDOG=1 only while every member proves it progresses: a host whose
 * member hangs is restarted by systemd (Restart=on-failure). While the
 * host stops, members close and stop turning: the shutdown deadline
 * (shutdown_timeout) bounds that instead. */
static void watchdog(monitor_t *mon, int64_t now) {
  char who[256];
  if (!mon->watchdog_us ||
      now - mon->last_watchdog < (int64_t)(mon->watchdog_us / 2000))
    return;
  if (!mon->stopping_sent && find_stuck(mon, who, sizeof(who))) {
    if (!mon->stuck_logged)
      log_msg(KHOST_LOG_ERR, "systemd",
              "withholding the watchdog keep-alive: a member's loop stands "
              "still (%s)",
              who);
    mon->stuck_logged = 1;
    return;
  }
  mon->stuck_logged = 0;
  mon->last_watchdog = now;
  notify("WATCHDOG=1");
}

static void turn(monitor_t *mon) {
  int64_t now = mono_ms();
  if (now - mon->last_sample >= MONITOR_SAMPLE_MS) {
    mon->last_sample = now;
    sample(mon);
  }
  if (!mon->stopping_sent && view_stopping(&mon->view)) {
    mon->stopping_sent = 1;
    notify("STOPPING=1");
  }
  if (!mon->ready_sent && !mon->stopping_sent && all_joined(mon)) {
    mon->ready_sent = 1;
    log_msg(KHOST_LOG_INFO, "khost", "every member has joined its group");
    notify("READY=1");
  }
  watchdog(mon, now);
  if (!mon->stopping_sent)
    progress_update(mon->progress, view_records_left(&mon->view), now);
}

static void *monitor_main(void *arg) {
  monitor_t *mon = arg;
  struct timespec at;
  pthread_setname_np(pthread_self(), "kh/monitor");
  pthread_mutex_lock(&mon->mu);
  while (!mon->quit) {
    pthread_mutex_unlock(&mon->mu);
    view_begin(&mon->view);
    turn(mon);
    view_end(&mon->view);
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

monitor_t *monitor_start(const host_view_t *h) {
  monitor_t *mon = calloc(1, sizeof(*mon));
  pthread_condattr_t ca;
  mon->view = *h;
  mon->progress = progress_new();
  pthread_mutex_init(&mon->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&mon->cond, &ca);
  pthread_condattr_destroy(&ca);
#ifdef HAVE_SYSTEMD
  if (sd_watchdog_enabled(0, &mon->watchdog_us) <= 0)
    mon->watchdog_us = 0;
#endif
  if (pthread_create(&mon->thread, NULL, monitor_main, mon) != 0) {
    log_msg(KHOST_LOG_WARNING, "khost",
            "cannot start the monitor thread: no throughput samples, no "
            "systemd notifications");
    pthread_cond_destroy(&mon->cond);
    pthread_mutex_destroy(&mon->mu);
    progress_free(mon->progress);
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
  if (!mon->stopping_sent)
    notify("STOPPING=1");
  pthread_cond_destroy(&mon->cond);
  pthread_mutex_destroy(&mon->mu);
  progress_free(mon->progress);
  free(mon);
}
