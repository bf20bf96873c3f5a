/*
 * A member's worker threads (concurrency > 1): each calls handle() of a
 * plugin instance of its own for the jobs the member hands it, one at a
 * time, and hands the answer back. The member's thread stays the only
 * one touching its flow core: it sends jobs to idle workers and takes
 * the answers from one completion queue; a worker that finishes calls
 * wake() so that a member waiting in its poll looks at once.
 *
 * Threads: every call here is the member's, except wake(), which runs on
 * the worker that finished. A worker touches its instance and state view
 * only while it has a job; between an answer and the next job the member
 * may use them (flush, the state's writes, assigned/revoked).
 */
#ifndef KHOST_WORKERS_H
#define KHOST_WORKERS_H

#include <stdint.h>

#include "flow.h"
#include "metrics.h"
#include "plugin_loader.h"

typedef struct workers workers_t;

/* A job answered by worker index. */
typedef struct worker_answer {
  flow_job_t job;
  khost_result_t res;
  int index;
} worker_answer_t;

/* Start n workers on the instances insts[0..n-1] and their state views
 * views[0..n-1] (views NULL: no state; all borrowed, outliving the
 * workers). wake(ctx) on every answer. Errors name who. */
int workers_start(workers_t **out, const char *who, int n,
                  plugin_instance_t **insts, struct state **views,
                  metrics_t *metrics, void (*wake)(void *ctx), void *ctx,
                  char *err, size_t errlen);
/* Join the workers once they are idle (every answer taken). What the
 * watchdog reads stays until workers_free(). */
void workers_stop(workers_t *w);
void workers_free(workers_t *w);
/* Hand job to an idle worker: its index, or -1 when all are busy. */
int workers_send(workers_t *w, const flow_job_t *job);
/* Take one answer, waiting up to wait_ms for it (0: only look): 1 with
 * *out, 0 when none came. */
int workers_take(workers_t *w, worker_answer_t *out, int64_t wait_ms);
/* Jobs sent whose answers were not taken yet. */
int workers_out(const workers_t *w);
/* The handle() call running longest (for the watchdog): 0 when none. */
int workers_busy(workers_t *w, int64_t *since, const char **topic,
                 int32_t *partition, int64_t *offset);

#endif
