/*
 * A member's polling: records from librdkafka to the flow core's queues,
 * and partitions paused and resumed as the flow core wants, so that a
 * member that waits (a retry, a held batch, the breaker) keeps polling
 * and its place in the group.
 *
 * Threads: the member's thread.
 */
#include <inttypes.h>

#include "log.h"
#include "member_int.h"

/* Longest single wait for records, so that retries, the breaker and stop
 * requests are noticed promptly. */
#define POLL_MS 100

void poll_enqueue(member_t *m, rd_kafka_message_t *msg) {
  if (msg->err && msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    log_msg(KHOST_LOG_WARNING, m->who, "consumer: %s%s%s",
            msg->rkt ? rd_kafka_topic_name(msg->rkt) : "", msg->rkt ? ": " : "",
            rd_kafka_message_errstr(msg));
    rd_kafka_message_destroy(msg);
    return;
  }
  if (flow_push(m->flow, msg) != 0) {
    /* Not (or no longer) assigned to this member: the flow's partitions
     * must stay the assignment, which commit_positions() relies on. */
    log_msg(KHOST_LOG_DEBUG, m->who,
            "%s [%" PRId32 "] offset %" PRId64
            ": record of a partition not assigned here, dropped",
            rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset);
    rd_kafka_message_destroy(msg);
  }
}

/* Is a dead-letter write in flight? */
static int dead_letters_flying(const member_t *m) {
  return m->dl_heads->len > 0;
}

/* How long the next poll may wait: not at all when a head is ready, else
 * until the earliest retry is due; briefly while outcomes wait to be made
 * durable or the broker's answer to a dead-letter write is awaited; no
 * longer than until a commit held back by commit_interval may go. */
static int poll_timeout(const member_t *m) {
  int64_t t = POLL_MS;
  if (flow_batch_len(flow_cur(m->flow)) > 0 || flow_in_air(m->flow) > 0)
    t = MEMBER_LINGER_MS;
  if (t > MEMBER_DEAD_LETTER_POLL_MS && dead_letters_flying(m))
    t = MEMBER_DEAD_LETTER_POLL_MS;
  if (m->commit_behind && !m->commit_in_flight && commit_wait(m) < t)
    t = commit_wait(m);
  return (int)flow_ready_in(m->flow, member_now_ms(), t);
}

/* Has the member taken what it may for now? With concurrency > 1 the
 * queues hold more than a batch: enough records to keep every lane busy. */
static int poll_enough(member_t *m) {
  if (m->fc.concurrency > 1)
    return flow_full(m->flow);
  return flow_queued(m->flow) >= (size_t)m->env->pc->max_batch;
}

/* Poll until max_batch records are queued or none is waiting. With
 * concurrency > 1 and the queues full, the records wait in librdkafka's
 * own queue (bounded by queued.max.messages.kbytes) while the member waits
 * for a worker's answer instead; it still polls every POLL_MS (rebalance
 * callbacks, max.poll.interval.ms). A record such a poll brings past the
 * bound pauses the partitions with records queued (poll_pauses()), so
 * that the queue stays within a record per partition of its bound
 * however long the calls take. */
void poll_records(member_t *m) {
  int timeout = poll_timeout(m);
  int64_t now = member_now_ms();
  if (m->workers && flow_full(m->flow) && workers_out(m->workers) > 0 &&
      now - m->polled_at < POLL_MS) {
    member_answer_wait(m, timeout);
    return;
  }
  m->polled_at = now;
  do {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(m->rk, timeout);
    if (!msg)
      return;
    poll_enqueue(m, msg);
    timeout = 0;
  } while (!poll_enough(m) && !member_stopping(m));
}

/* Poll for up to ms without handling anything (records are queued). */
int poll_wait(member_t *m, int64_t ms) {
  int64_t deadline = member_now_ms() + ms;
  while (!member_stopping(m)) {
    int64_t left = deadline - member_now_ms();
    if (left <= 0)
      return 0;
    rd_kafka_message_t *msg =
        rd_kafka_consumer_poll(m->rk, (int)(left < POLL_MS ? left : POLL_MS));
    if (msg)
      poll_enqueue(m, msg);
    metrics_tick(m->env->metrics, m->index, m->rk, flow_queued(m->flow), 0);
  }
  return 1;
}

/* Pause the partitions whose head waits (or all, while the batch cannot be
 * made durable or the breaker is open); resume the others. */
void poll_pauses(member_t *m) {
  int64_t now = member_now_ms();
  rd_kafka_topic_partition_list_t *pause = rd_kafka_topic_partition_list_new(4),
                                  *resume =
                                      rd_kafka_topic_partition_list_new(4);
  for (size_t i = 0; i < flow_parts(m->flow); i++) {
    flow_part_t *pt = flow_part_at(m->flow, i);
    int want = flow_part_wants_pause(m->flow, pt, now);
    if (want == flow_part_paused(pt))
      continue;
    rd_kafka_topic_partition_list_add(
        want ? pause : resume, flow_part_topic(pt), flow_part_partition(pt));
    flow_part_set_paused(pt, want);
  }
  if (pause->cnt)
    rd_kafka_pause_partitions(m->rk, pause);
  if (resume->cnt)
    rd_kafka_resume_partitions(m->rk, resume);
  rd_kafka_topic_partition_list_destroy(pause);
  rd_kafka_topic_partition_list_destroy(resume);
}
