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
  m->inst_job = calloc((size_t)n, sizeof(*m->inst_job));
  m->inst_later = calloc((size_t)n, sizeof(*m->inst_later));
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

/* An assigned() or revoked() call kept for a busy instance. */
typedef struct partition_call {
  rd_kafka_topic_partition_list_t *parts;
  int revoked, lost;
} partition_call_t;

static void partition_call_free(void *p) {
  partition_call_t *c = p;
  rd_kafka_topic_partition_list_destroy(c->parts);
  free(c);
}

static void partition_call(member_t *m, int i, const partition_call_t *c) {
  if (c->revoked)
    plugin_instance_revoked(m->insts[i], c->parts, c->lost);
  else
    plugin_instance_assigned(m->insts[i], c->parts);
}

/* Instance i's worker is idle: the calls kept for it, in order. */
static void partition_calls_later(member_t *m, int i) {
  GPtrArray *later = m->inst_later[i];
  m->inst_later[i] = NULL;
  for (guint k = 0; later && k < later->len; k++)
    partition_call(m, i, later->pdata[k]);
  if (later)
    g_ptr_array_free(later, TRUE);
}

/* Every instance's call: at once when its worker is idle, else kept. */
static void partition_calls(member_t *m,
                            const rd_kafka_topic_partition_list_t *parts,
                            int revoked, int lost) {
  partition_call_t now = {(rd_kafka_topic_partition_list_t *)parts, revoked,
                          lost};
  for (int i = 0; i < m->n_insts; i++) {
    if (!m->inst_busy[i]) {
      partition_call(m, i, &now);
      continue;
    }
    partition_call_t *c = malloc(sizeof(*c));
    *c = now;
    c->parts = rd_kafka_topic_partition_list_copy(parts);
    if (!m->inst_later[i])
      m->inst_later[i] = g_ptr_array_new_with_free_func(partition_call_free);
    g_ptr_array_add(m->inst_later[i], c);
  }
}

void member_instances_destroy(member_t *m) {
  for (int i = 0; i < m->n_insts; i++) {
    if (m->inst_later[i])
      g_ptr_array_free(m->inst_later[i], TRUE);
    plugin_instance_destroy(m->insts[i]);
  }
  for (int i = 0; m->views && i < m->env->pc->concurrency; i++)
    state_free(m->views[i]);
  free(m->insts);
  free(m->views);
  free(m->inst_busy);
  free(m->inst_dirty);
  free(m->inst_job);
  free(m->inst_later);
  m->inst_busy = m->inst_dirty = NULL;
  m->inst_job = NULL;
  m->inst_later = NULL;
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
  int dropped = flow_job_dropped(&a->job);
  int kept = view && !dropped;
  m->inst_busy[a->index] = 0;
  if (dropped)
    log_msg(KHOST_LOG_NOTICE, m->who,
            "handle() of %s [%" PRId32 "] offset %" PRId64
            " returned after its partition went: its outcome is dropped",
            rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset);
  else
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
  partition_calls_later(m, a->index);
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
    m->inst_job[i] = *job;
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
  while (m->workers && dirty_busy(m)) {
    int64_t left = m->flush_by ? m->flush_by - member_now_ms() : 100;
    if (left <= 0) {
      /* The revoke abandons the batches pending (make_durable() fails
       * without waiting): the outcomes that instance owes a flush() for
       * go with them, and no later flush() waits for it. */
      for (int i = 0; i < m->n_insts; i++)
        if (m->inst_busy[i])
          m->inst_dirty[i] = 0;
      snprintf(err, errlen,
               "a worker still runs handle() at the revoke deadline, after "
               "a record of the batch whose flush() it owes");
      return -1;
    }
    if (workers_take(m->workers, &a, left < 100 ? left : 100))
      answer(m, &a);
  }
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
  partition_calls(m, parts, 0, 0);
}

void member_plugin_revoked(member_t *m,
                           const rd_kafka_topic_partition_list_t *parts,
                           int lost) {
  partition_calls(m, parts, 1, lost);
}

/* Is the job out on instance i of one of parts (and not let go yet)? */
static int job_of(const member_t *m, int i,
                  const rd_kafka_topic_partition_list_t *parts) {
  const flow_job_t *job = &m->inst_job[i];
  if (!m->inst_busy[i] || flow_job_dropped(job))
    return 0;
  flow_part_t *pt = flow_part_owner(job->part);
  return rd_kafka_topic_partition_list_find(parts, flow_part_topic(pt),
                                            flow_part_partition(pt)) != NULL;
}

static int revoked_out(const member_t *m,
                       const rd_kafka_topic_partition_list_t *parts) {
  for (int i = 0; i < m->n_insts; i++)
    if (job_of(m, i, parts))
      return 1;
  return 0;
}

/* The calls still running at the deadline stay with their workers, which
 * get no other job until they answer; flow_drop() makes their lanes
 * orphans, whose answers are only let go (no mark, no state write, no
 * dead letter, nothing committed), their claims given back then. */
void member_revoke_wait(member_t *m,
                        const rd_kafka_topic_partition_list_t *parts,
                        int64_t ms, int lost) {
  worker_answer_t a;
  int64_t deadline = member_now_ms() + ms, left;
  while (m->workers && revoked_out(m, parts) &&
         (left = deadline - member_now_ms()) > 0)
    if (workers_take(m->workers, &a, left < 100 ? left : 100))
      answer(m, &a);
  for (int i = 0; i < m->n_insts; i++) {
    if (!job_of(m, i, parts))
      continue;
    rd_kafka_message_t *msg = m->inst_job[i].rec;
    log_msg(KHOST_LOG_WARNING, m->who,
            "handle() of %s [%" PRId32 "] offset %" PRId64
            " still runs %" PRId64 " ms after its partition was %s: "
            "abandoned (its outcome will be dropped; the next owner gets the "
            "record)",
            rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset, ms,
            lost ? "lost" : "revoked");
  }
}
