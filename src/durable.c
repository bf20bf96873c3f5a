/*
 * The durability thread (durable.h): a queue of store batches, committed
 * one transaction at a time in the order they were sent, handed over and
 * taken back under one mutex.
 */
#include "durable.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One batch sent: in the air until landed. */
typedef struct flight {
  store_batch_t *batch; /* the thread's until landed */
  int landed;
  int rc, transient;
  char err[512];
} flight_t;

struct durable {
  char who[160];
  metrics_t *mx;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  flight_t q[DURABLE_MAX]; /* a ring: n sent from head, oldest first */
  unsigned head, n;
  /* Of those, the first landed ones. Changed under mu with atomic
   * operations: durable_land() reads it without mu first. */
  unsigned landed;
  /* A commit failed: the batches after it are not tried (a later batch
   * durable before an earlier one could store offsets past records
   * whose marks are not), until the member has taken every batch back. */
  int failed;
  int quit;
};

/* Commit f (mu not held: f->batch belongs to this thread until
 * landed), or pass it over after a failure. */
static void fly(durable_t *d, flight_t *f, int skip) {
  int transient = 1, rc = DURABLE_NOT_TRIED;
  char err[sizeof(f->err)];
  snprintf(err, sizeof(err), "not tried after an earlier batch failed");
  if (!skip) {
    int64_t t0 = metrics_now_us();
    transient = 0;
    rc = store_batch_commit(f->batch, &transient, err, sizeof(err));
    metrics_observe_durable(d->mx, t0);
  }
  pthread_mutex_lock(&d->mu);
  f->rc = rc;
  f->transient = transient;
  if (rc)
    memcpy(f->err, err, sizeof(err));
  f->landed = 1;
  __atomic_fetch_add(&d->landed, 1, __ATOMIC_RELEASE); /* durable_land() */
  if (rc)
    d->failed = 1;
  pthread_mutex_unlock(&d->mu);
  /* After the unlock (see durable_send()). */
  pthread_cond_broadcast(&d->cond);
}

static void *durable_main(void *arg) {
  durable_t *d = arg;
  char name[16];
  snprintf(name, sizeof(name), "kd/%.12s", d->who);
  pthread_setname_np(pthread_self(), name);
  pthread_mutex_lock(&d->mu);
  for (;;) {
    while (d->landed == d->n && !d->quit)
      pthread_cond_wait(&d->cond, &d->mu);
    if (d->landed == d->n)
      break;
    flight_t *f = &d->q[(d->head + d->landed) % DURABLE_MAX];
    int skip = d->failed;
    pthread_mutex_unlock(&d->mu);
    fly(d, f, skip);
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
  flight_t *f = &d->q[(d->head + d->n) % DURABLE_MAX];
  *f = (flight_t){.batch = b};
  d->n++;
  pthread_mutex_unlock(&d->mu);
  /* Woken after the unlock, the durability thread does not wake up only
   * to sleep again on the mutex this thread still holds, and wake it a
   * second time when it lets go (two switches of the member's CPU per
   * batch on a busy machine). Nothing is lost: the thread looks at n
   * under the mutex before it waits. */
  pthread_cond_broadcast(&d->cond);
}

int durable_land(durable_t *d, int block, store_batch_t **b, int *rc,
                 int *transient, char *err, size_t errlen) {
  int flying = 0;
  *b = NULL;
  /* Nothing to wait for or take, seen without the mutex: the member asks
   * after every batch it fills, and each time it took the mutex while the
   * durability thread wanted it to land a batch, its unlock woke that
   * thread onto the member's CPU. n is this thread's own (only the member
   * changes it); landed only grows behind its back. */
  if (!block &&
      (d->n == 0 || __atomic_load_n(&d->landed, __ATOMIC_ACQUIRE) == 0))
    return d->n > 0;
  pthread_mutex_lock(&d->mu);
  while (block && d->n > 0 && d->landed == 0)
    pthread_cond_wait(&d->cond, &d->mu);
  if (d->n > 0 && d->landed == 0) {
    flying = 1;
  } else if (d->n > 0) {
    flight_t *f = &d->q[d->head];
    *b = f->batch;
    *rc = f->rc;
    *transient = f->transient;
    if (f->rc)
      snprintf(err, errlen, "%s", f->err);
    d->head = (d->head + 1) % DURABLE_MAX;
    d->n--;
    __atomic_fetch_sub(&d->landed, 1, __ATOMIC_RELAXED);
    if (d->n == 0)
      d->failed = 0;
  }
  pthread_mutex_unlock(&d->mu);
  return flying;
}
