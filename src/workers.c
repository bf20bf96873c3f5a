/*
 * A member's worker threads (workers.h): one mutex for the pool, a
 * condition per worker for its next job, one for the member waiting on
 * answers. Answers queue in the order the workers finish.
 */
#include "workers.h"

#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "record.h"
#include "state.h"

enum { W_IDLE, W_JOB, W_ANSWERED };

typedef struct worker {
  struct workers *pool;
  int index;
  pthread_t thread;
  pthread_cond_t go;
  int state; /* W_*, under the pool's mu */
  flow_job_t job;
  khost_record_t rec; /* the job's record as the plugin sees it */
  khost_result_t res;
  plugin_instance_t *inst;
  struct state *view;
  /* What handle() is busy with, for the watchdog (0: idle). */
  _Atomic int64_t busy_since;
} worker_t;

struct workers {
  pthread_mutex_t mu;
  pthread_cond_t answered;
  worker_t *w;
  int n, started;
  int stop;
  int out;     /* jobs sent, answers not taken */
  GQueue idle; /* worker_t * */
  GQueue done; /* worker_t *, answered, in the order they finished */
  metrics_t *metrics;
  void (*wake)(void *ctx);
  void *ctx;
};

/* Monotonic ms, coarse: cheap enough per record. */
static int64_t coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static khost_result_t call(worker_t *wk) {
  if (wk->view)
    state_record_drop(wk->view); /* writes of an earlier RETRY */
  atomic_store(&wk->busy_since, coarse_ms());
  int64_t t0 = metrics_now_us();
  khost_result_t res = plugin_instance_handle(wk->inst, &wk->rec);
  metrics_observe_handle(wk->pool->metrics, t0);
  atomic_store(&wk->busy_since, 0);
  return res;
}

static void *worker_main(void *arg) {
  worker_t *wk = arg;
  struct workers *p = wk->pool;
  char name[16];
  snprintf(name, sizeof(name), "kh/worker%d", wk->index);
  pthread_setname_np(pthread_self(), name);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (wk->state != W_JOB && !p->stop)
      pthread_cond_wait(&wk->go, &p->mu);
    if (wk->state != W_JOB)
      break;
    pthread_mutex_unlock(&p->mu);
    khost_result_t res = call(wk);
    pthread_mutex_lock(&p->mu);
    wk->res = res;
    wk->state = W_ANSWERED;
    g_queue_push_tail(&p->done, wk);
    pthread_cond_signal(&p->answered);
    /* Under the lock: the member cannot be freeing the pool meanwhile. */
    if (p->wake)
      p->wake(p->ctx);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int workers_start(workers_t **out, const char *who, int n,
                  plugin_instance_t **insts, struct state **views,
                  metrics_t *metrics, void (*wake)(void *ctx), void *ctx,
                  char *err, size_t errlen) {
  workers_t *p = calloc(1, sizeof(*p));
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->answered, NULL);
  p->w = calloc((size_t)n, sizeof(*p->w));
  p->n = n;
  p->metrics = metrics;
  p->wake = wake;
  p->ctx = ctx;
  for (int i = 0; i < n; i++) {
    worker_t *wk = &p->w[i];
    *wk = (worker_t){.pool = p, .index = i, .inst = insts[i]};
    wk->view = views ? views[i] : NULL;
    pthread_cond_init(&wk->go, NULL);
    if (pthread_create(&wk->thread, NULL, worker_main, wk) != 0) {
      snprintf(err, errlen, "%s: cannot start worker %d of %d", who, i, n);
      workers_free(p);
      return -1;
    }
    p->started++;
    g_queue_push_tail(&p->idle, wk);
  }
  *out = p;
  return 0;
}

void workers_stop(workers_t *p) {
  if (!p || p->stop)
    return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  for (int i = 0; i < p->started; i++)
    pthread_cond_signal(&p->w[i].go);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->started; i++)
    pthread_join(p->w[i].thread, NULL);
}

void workers_free(workers_t *p) {
  if (!p)
    return;
  workers_stop(p);
  for (int i = 0; i < p->n; i++)
    pthread_cond_destroy(&p->w[i].go);
  g_queue_clear(&p->idle);
  g_queue_clear(&p->done);
  pthread_cond_destroy(&p->answered);
  pthread_mutex_destroy(&p->mu);
  free(p->w);
  free(p);
}

int workers_send(workers_t *p, const flow_job_t *job) {
  int index = -1;
  pthread_mutex_lock(&p->mu);
  worker_t *wk = g_queue_pop_head(&p->idle);
  if (wk) {
    wk->job = *job;
    /* Built here, on the member's thread: the worker and the watchdog
     * only read it. */
    record_for_plugin(job, &wk->rec);
    wk->state = W_JOB;
    p->out++;
    index = wk->index;
    pthread_cond_signal(&wk->go);
  }
  pthread_mutex_unlock(&p->mu);
  return index;
}

/* Absolute CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  return ts;
}

int workers_take(workers_t *p, worker_answer_t *out, int64_t wait_ms) {
  int got = 0;
  pthread_mutex_lock(&p->mu);
  if (p->done.length == 0 && wait_ms > 0 && p->out > 0) {
    struct timespec ts = deadline_in(wait_ms);
    while (p->done.length == 0 &&
           pthread_cond_timedwait(&p->answered, &p->mu, &ts) == 0)
      ;
  }
  worker_t *wk = g_queue_pop_head(&p->done);
  if (wk) {
    *out =
        (worker_answer_t){.job = wk->job, .res = wk->res, .index = wk->index};
    wk->state = W_IDLE;
    p->out--;
    g_queue_push_tail(&p->idle, wk);
    got = 1;
  }
  pthread_mutex_unlock(&p->mu);
  return got;
}

int workers_out(const workers_t *p) {
  return p->out;
}

int workers_busy(workers_t *p, int64_t *since, const char **topic,
                 int32_t *partition, int64_t *offset) {
  int found = 0;
  *since = 0;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->started; i++) {
    worker_t *wk = &p->w[i];
    int64_t s = atomic_load(&wk->busy_since);
    if (s == 0 || (found && s >= *since))
      continue;
    *since = s;
    *topic = wk->rec.topic;
    *partition = wk->rec.partition;
    *offset = wk->rec.offset;
    found = 1;
  }
  pthread_mutex_unlock(&p->mu);
  return found;
}
