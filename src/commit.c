/*
 * A member's offset commits: the durable positions of the flow core's
 * partitions, one commit request at a time, failed ones sent again.
 *
 * Threads: the member's thread (librdkafka serves the results there).
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>

#include "log.h"
#include "member_int.h"

/* A failed offset commit is sent again after this long, even when idle. */
#define COMMIT_RETRY_MS 1000
/* How long a sync commit waits for the async commits still in flight. */
#define COMMIT_DRAIN_MS 10000
/* Longest single wait for the result of a commit in flight. */
#define COMMIT_POLL_MS 100
/* The pause between two tries of the last commit (shutdown). */
#define COMMIT_FINAL_PAUSE_MS 300

/* The result of a commit (sync or async). */
void commit_result(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                   rd_kafka_topic_partition_list_t *offsets, void *opaque) {
  member_t *m = opaque;
  char buf[512], parts[512];
  size_t off = 0, poff = 0;
  buf[0] = parts[0] = '\0';
  if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
    return;
  metrics_committed(m->env->metrics, rk, !err, offsets);
  for (int i = 0; offsets && i < offsets->cnt && off < sizeof(buf) - 1; i++) {
    const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
    if (!err && !tp->err) {
      flow_committed(m->flow, tp->topic, tp->partition, tp->offset);
      m->env->progress(m->env->ctx, tp->topic, tp->partition, tp->offset);
    }
    off += (size_t)snprintf(buf + off, sizeof(buf) - off,
                            "%s%s[%" PRId32 "]@%" PRId64 "%s", i ? " " : "",
                            tp->topic, tp->partition, tp->offset,
                            tp->err ? "(failed)" : "");
    if (err && poff < sizeof(parts) - 1) /* for the warning only */
      poff += (size_t)snprintf(parts + poff, sizeof(parts) - poff,
                               "%s%s[%" PRId32 "]", i ? " " : "", tp->topic,
                               tp->partition);
  }
  if (err) {
    /* Nothing is lost: the offsets are sent again shortly, and records
     * delivered again meanwhile are skipped by dedup. The warning names
     * the partitions, not the offsets, so that a storm of refusals while
     * records flow (a rebalance in progress: a refusal per batch) is one
     * line repeated word for word, which the logger counts instead of
     * writing (log.h); the offsets are in a debug line. */
    log_msg(KHOST_LOG_WARNING, m->who,
            "offset commit failed: %s: %s (sent again in %d ms)",
            rd_kafka_err2str(err), parts, COMMIT_RETRY_MS);
    log_msg(KHOST_LOG_DEBUG, m->who, "offset commit failed for %s", buf);
    m->recommit_at = member_now_ms() + COMMIT_RETRY_MS;
  } else {
    log_msg(KHOST_LOG_DEBUG, m->who, "committed %s", buf);
  }
  (void)rk;
}

/* How long the next async commit waits for commit_interval to pass since
 * the last one was sent; 0 when it may go now. */
int64_t commit_wait(const member_t *m) {
  int64_t left =
      m->commit_sent + m->env->pc->commit_interval_ms - member_now_ms();
  return m->commit_sent && left > 0 ? left : 0;
}

/* The result of the async commit in flight: the next one may go. */
static void on_async_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *offsets,
                            void *opaque) {
  member_t *m = opaque;
  m->commit_in_flight = 0;
  commit_result(rk, err, offsets, opaque);
}

/* Serve the result of the async commit in flight, waiting for it until
 * deadline (monotonic ms). Returns 0 once it is in, -1 when it is not. */
static int drain_until(member_t *m, int64_t deadline) {
  while (m->commit_in_flight) {
    int64_t left = deadline - member_now_ms();
    if (left <= 0)
      return -1;
    rd_kafka_queue_poll_callback(
        m->commit_q, (int)(left < COMMIT_POLL_MS ? left : COMMIT_POLL_MS));
  }
  return 0;
}

/* Serve the result of the async commit in flight, waiting up to ms for
 * it. */
static void drain(member_t *m, int64_t ms) {
  if (drain_until(m, member_now_ms() + ms) != 0)
    log_msg(KHOST_LOG_WARNING, m->who,
            "an offset commit is still without a result after %" PRId64 " ms",
            ms);
}

/* Commit the durable positions of partitions this member still owns:
 * the flow holds exactly the assigned partitions (the rebalance callback
 * adds and drops them on this thread), and nothing is committed once
 * librdkafka has noticed that the assignment is lost (the revoke callback
 * follows). A sync commit (revoke, shutdown) also asks librdkafka for its
 * current assignment: while the consumer closes, the partitions are no
 * longer assigned when the revoke callback runs, and a sync commit of
 * them would wait forever; and once the consumer closes, nothing is
 * committed any more (shut_down() commits before it closes): a commit
 * from the revoke callback of rd_kafka_consumer_close() can wait forever
 * for a coordinator that is going away. A sync commit returns its error
 * (0 when there was nothing to commit).
 *
 * Commits go out one at a time: librdkafka sends a failed OffsetCommit
 * again by itself and reports it only at the end, so a commit made while
 * an older one is in flight could land first and be overwritten by the
 * older offsets. An async commit asked for while one is in flight is made
 * once its result is in (commit_due()); a sync commit waits for it. */
rd_kafka_resp_err_t commit_positions(member_t *m, int sync) {
  rd_kafka_topic_partition_list_t *owned = NULL, *list;
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (m->closing)
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  if (sync)
    drain(m, COMMIT_DRAIN_MS);
  else if (m->commit_in_flight || (!m->commit_at_once && commit_wait(m) > 0)) {
    m->commit_behind = 1;
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  m->commit_behind = 0;
  if (rd_kafka_assignment_lost(m->rk) ||
      (sync &&
       rd_kafka_assignment(m->rk, &owned) != RD_KAFKA_RESP_ERR_NO_ERROR))
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  list = rd_kafka_topic_partition_list_new((int)flow_parts(m->flow) + 1);
  for (size_t i = 0; i < flow_parts(m->flow); i++) {
    flow_part_t *pt = flow_part_at(m->flow, i);
    int64_t next = flow_part_position(pt, sync);
    const char *topic = flow_part_topic(pt);
    int32_t partition = flow_part_partition(pt);
    if (next >= 0 &&
        (!owned || rd_kafka_topic_partition_list_find(owned, topic, partition)))
      rd_kafka_topic_partition_list_add(list, topic, partition)->offset = next;
  }
  if (list->cnt > 0) {
    /* Failures are reported by commit_result(), for sync commits too. */
    if (sync)
      e = rd_kafka_commit_queue(m->rk, list, NULL, commit_result, m);
    else if (rd_kafka_commit_queue(m->rk, list, m->commit_q, on_async_commit,
                                   m) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      m->commit_in_flight = 1;
      m->commit_sent = member_now_ms();
    }
    atomic_fetch_add(m->env->commits, 1);
  }
  rd_kafka_topic_partition_list_destroy(list);
  if (owned)
    rd_kafka_topic_partition_list_destroy(owned);
  return sync ? e : RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Serve the async commit's result; send what waited for it, or what
 * failed once its time has come. */
void commit_due(member_t *m) {
  rd_kafka_queue_poll_callback(m->commit_q, 0);
  if (m->recommit_at) {
    if (member_now_ms() < m->recommit_at)
      return;
    m->recommit_at = 0;
    commit_positions(m, 0);
  } else if (m->commit_behind && !m->commit_in_flight && commit_wait(m) == 0) {
    commit_positions(m, 0);
  }
}

/* 1 while a partition has a durable position not committed yet. */
static int commit_pending(member_t *m) {
  for (size_t i = 0; i < flow_parts(m->flow); i++)
    if (flow_part_position(flow_part_at(m->flow, i), 0) >= 0)
      return 1;
  return 0;
}

/* The durable positions the last commit did not reach: their records are
 * delivered again after the stop. */
static void log_uncommitted(member_t *m) {
  char buf[1024];
  size_t off = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < flow_parts(m->flow) && off < sizeof(buf) - 1; i++) {
    flow_part_t *pt = flow_part_at(m->flow, i);
    int64_t next = flow_part_position(pt, 0);
    if (next >= 0)
      off += (size_t)snprintf(
          buf + off, sizeof(buf) - off, "%s%s[%" PRId32 "]@%" PRId64,
          off ? " " : "", flow_part_topic(pt), flow_part_partition(pt), next);
  }
  log_msg(KHOST_LOG_WARNING, m->who,
          "stopping without committing %s (no answer or refused before the "
          "shutdown deadline): the records below these offsets not "
          "committed before are delivered again%s",
          buf, m->env->store ? ", and dedup skips those already handled" : "");
}

int commit_final(member_t *m, int64_t deadline, int tries) {
  int rc = -1;
  if (drain_until(m, deadline) != 0)
    goto out;
  for (int i = 0; i < tries && commit_pending(m); i++) {
    int64_t left = deadline - member_now_ms();
    if (i > 0 && left > COMMIT_FINAL_PAUSE_MS)
      g_usleep(COMMIT_FINAL_PAUSE_MS * 1000);
    else if (i > 0)
      goto out;
    m->recommit_at = 0;
    m->commit_at_once = 1;
    commit_positions(m, 0);
    m->commit_at_once = 0;
    if (!m->commit_in_flight || drain_until(m, deadline) != 0)
      goto out; /* nothing it may commit (assignment lost), or no answer */
  }
  rc = commit_pending(m) ? -1 : 0;
out:
  if (rc != 0 && commit_pending(m))
    log_uncommitted(m);
  return rc;
}
