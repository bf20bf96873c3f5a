/*
 * The durability thread (durable.h): one store transaction at a time,
 * handed over and taken back under one mutex.
 */
#include "durable.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where the batch handed to the thread is. */
enum { AIR_NONE, AIR_FLYING, AIR_LANDED };

struct durable {
  char who[160];
  metrics_t *mx;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  store_batch_t *batch; /* the thread's while AIR_FLYING */
  int state;            /* AIR_* */
  int quit;
  int rc, transient;
  char err[512];
};

/* Commit the batch in the air (mu not held: it belongs to this thread
 * until it is AIR_LANDED). */
static void fly(durable_t *d) {
  int transient = 0;
  char err[sizeof(d->err)];
  int64_t t0 = metrics_now_us();
  int rc = store_batch_commit(d->batch, &transient, err, sizeof(err));
  metrics_observe_durable(d->mx, t0);
  pthread_mutex_lock(&d->mu);
  d->rc = rc;
  d->transient = transient;
  if (rc)
    memcpy(d->err, err, sizeof(err));
  d->state = AIR_LANDED;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->mu);
}

static void *durable_main(void *arg) {
  durable_t *d = arg;
  char name[16];
  snprintf(name, sizeof(name), "kd/%.12s", d->who);
  pthread_setname_np(pthread_self(), name);
  pthread_mutex_lock(&d->mu);
  for (;;) {
    while (d->state != AIR_FLYING && !d->quit)
      pthread_cond_wait(&d->cond, &d->mu);
    if (d->state != AIR_FLYING)
      break;
    pthread_mutex_unlock(&d->mu);
    fly(d);
    pthread_mutex_lock(&d->mu);
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

int durable_start(durable_t **out, const char *who, metrics_t *mx, char *err,
                  size_t errlen) {
  durable_t *d = calloc(1, sizeof(*d));
  int e;
  snprintf(d->who, sizeof(d->who), "%s", who);
  d->mx = mx;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cond, NULL);
  if ((e = pthread_create(&d->thread, NULL, durable_main, d)) != 0) {
    snprintf(err, errlen, "%s: cannot start its durability thread: %s", who,
             strerror(e));
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cond);
    free(d);
    return -1;
  }
  *out = d;
  return 0;
}

void durable_stop(durable_t *d) {
  if (!d)
    return;
  pthread_mutex_lock(&d->mu);
  d->quit = 1;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->mu);
  pthread_join(d->thread, NULL);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cond);
  free(d);
}

void durable_send(durable_t *d, store_batch_t *b) {
  pthread_mutex_lock(&d->mu);
  d->batch = b;
  d->state = AIR_FLYING;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->mu);
}

int durable_land(durable_t *d, int block, int *rc, int *transient, char *err,
                 size_t errlen) {
  int flying;
  pthread_mutex_lock(&d->mu);
  while (block && d->state == AIR_FLYING)
    pthread_cond_wait(&d->cond, &d->mu);
  flying = d->state == AIR_FLYING;
  if (!flying) {
    *rc = d->state == AIR_LANDED ? d->rc : 0;
    *transient = d->transient;
    if (*rc)
      snprintf(err, errlen, "%s", d->err);
    d->state = AIR_NONE;
    d->batch = NULL;
  }
  pthread_mutex_unlock(&d->mu);
  return flying;
}
