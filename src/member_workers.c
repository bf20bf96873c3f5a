/*
 * A member with concurrency > 1 (workers.h): its plugin instances, one per
 * worker, each with a view of the member's state; jobs handed to idle
 * workers and their answers given to the flow core, all on the member's
 * thread. With concurrency = 1 the member has one instance and no worker
 * (member.c calls the plugin itself), and everything here comes down to
 * that instance.
 *
 * Threads: the member's, except wake(), on the worker that answered.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "member_int.h"
#include "state.h"

int member_instances_create(member_t *m, plugin_instance_opts_t *opts,
                            char *err, size_t errlen) {
  int n = m->env->pc->concurrency > 1 ? m->env->pc->concurrency : 1;
  m->insts = calloc((size_t)n, sizeof(*m->insts));
  m->inst_busy = calloc((size_t)n, 1);
  m->inst_dirty = calloc((size_t)n, 1);
  if (m->state && n > 1)
    m->views = calloc((size_t)n, sizeof(*m->views));
  for (int i = 0; i < n; i++) {
    opts->worker = i;
    if (m->views) {
      m->views[i] = state_view(m->state);
      opts->state = m->views[i];
    }
    if (plugin_instance_create(&m->insts[i], m->env->plugin, opts, err,
                               errlen) != 0)
      return -1;
    m->n_insts = i + 1;
  }
  m->inst = m->insts[0];
  return 0;
}

void member_instances_destroy(member_t *m) {
  for (int i = 0; i < m->n_insts; i++)
    plugin_instance_destroy(m->insts[i]);
  for (int i = 0; m->views && i < m->env->pc->concurrency; i++)
    state_free(m->views[i]);
  free(m->insts);
  free(m->views);
  free(m->inst_busy);
  free(m->inst_dirty);
  m->inst_busy = m->inst_dirty = NULL;
  m->insts = NULL;
  m->views = NULL;
  m->inst = NULL;
  m->n_insts = 0;
}

/* A worker answered: a member waiting in its poll looks at once. */
static void wake(void *ctx) {
  member_t *m = ctx;
  rd_kafka_queue_yield(m->wake_q);
}

int member_workers_start(member_t *m, char *err, size_t errlen) {
  if (m->n_insts < 2)
    return 0;
  m->wake_q = rd_kafka_queue_get_consumer(m->rk);
  return workers_start(&m->workers, m->who, m->n_insts, m->insts, m->views,
                       m->env->metrics, wake, m, err, errlen);
}

void member_workers_stop(member_t *m) {
  if (!m->workers)
    return;
  member_drain(m);
  workers_stop(m->workers);
  if (m->wake_q)
    rd_kafka_queue_destroy(m->wake_q);
  m->wake_q = NULL;
}

/* One answer to the flow core: the record's state writes join the batch
 * its outcome goes to (OK, FAIL), or go (RETRY, FATAL, a partition that
 * went meanwhile). */
static void answer(member_t *m, const worker_answer_t *a) {
  struct state *view = m->views ? m->views[a->index] : NULL;
  khost_result_t res = a->res;
  rd_kafka_message_t *msg = a->job.rec;
  int kept = view && !flow_job_dropped(&a->job);
  m->inst_busy[a->index] = 0;
  m->inst_dirty[a->index] = 1;
  if (kept) /* writes held for an earlier FAIL of this record */
    state_held_drop(view, rd_kafka_topic_name(msg->rkt), msg->partition,
                    msg->offset);
  /* A FAIL's mark may wait for the dead-letter topic: its writes are held
   * until the flow core marks it (member.c, record_failed()). */
  if (kept && res == KHOST_OK)
    state_record_join(view, flow_batch_store(flow_cur(m->flow)));
  else if (kept && res == KHOST_FAIL)
    state_record_hold(view, rd_kafka_topic_name(msg->rkt), msg->partition,
                      msg->offset);
  else if (view)
    state_record_drop(view);
  if (flow_outcome_why(m->flow, &a->job, res,
                       plugin_instance_reason(m->insts[a->index]),
                       member_now_ms()) != 0) {
    member_fail(
        m,
        "%s: plugin reported a fatal error at %s [%" PRId32 "] offset %" PRId64,
        m->who, rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset);
  }
}

void member_answers(member_t *m) {
  worker_answer_t a;
  while (m->workers && workers_take(m->workers, &a, 0))
    answer(m, &a);
}

void member_answer_wait(member_t *m, int64_t ms) {
  worker_answer_t a;
  if (m->workers && workers_take(m->workers, &a, ms))
    answer(m, &a);
}

void member_drain(member_t *m) {
  worker_answer_t a;
  while (m->workers && m->wake_q && workers_out(m->workers) > 0)
    if (workers_take(m->workers, &a, 100))
      answer(m, &a);
}

void member_dispatch(member_t *m, const flow_job_t *job) {
  int i = workers_send(m->workers, job);
  if (i >= 0) {
    m->inst_busy[i] = 1;
    return;
  }
  /* The flow core hands out no more jobs than there are workers. */
  log_msg(KHOST_LOG_ERR, m->who, "no idle worker for a job: answered RETRY");
  flow_outcome(m->flow, job, KHOST_RETRY, member_now_ms());
}

/* An instance whose worker has a job out and that answered a record
 * since its last flush(): that record's outcome is in the batch to be
 * made durable, so the instance must be flushed, which waits for its
 * job. */
static int dirty_busy(const member_t *m) {
  for (int i = 0; i < m->n_insts; i++)
    if (m->inst_busy[i] && m->inst_dirty[i])
      return 1;
  return 0;
}

/* flush() never runs beside handle() of its instance. The instances
 * whose worker is idle are flushed at once; one whose worker is busy
 * with the first record since its last flush() holds nothing of the
 * batch and is left alone (a slow call holds no one else's batch); one
 * that answered a record before its current job is waited for. */
int member_flush(member_t *m, char *err, size_t errlen) {
  worker_answer_t a;
  if (m->n_insts <= 1)
    return m->inst ? plugin_instance_flush(m->inst, err, errlen) : 0;
  if (!plugin_descriptor(m->env->plugin)->flush) {
    memset(m->inst_dirty, 0, (size_t)m->n_insts);
    return 0;
  }
  while (m->workers && dirty_busy(m))
    if (workers_take(m->workers, &a, 100))
      answer(m, &a);
  for (int i = 0; i < m->n_insts; i++) {
    if (m->inst_busy[i])
      continue;
    if (plugin_instance_flush(m->insts[i], err, errlen) != 0)
      return -1;
    m->inst_dirty[i] = 0;
  }
  return 0;
}

void member_plugin_assigned(member_t *m,
                            const rd_kafka_topic_partition_list_t *parts) {
  member_drain(m);
  for (int i = 0; i < m->n_insts; i++)
    plugin_instance_assigned(m->insts[i], parts);
}

void member_plugin_revoked(member_t *m,
                           const rd_kafka_topic_partition_list_t *parts,
                           int lost) {
  member_drain(m);
  for (int i = 0; i < m->n_insts; i++)
    plugin_instance_revoked(m->insts[i], parts, lost);
}
