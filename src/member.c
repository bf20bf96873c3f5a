/*
 * One consumer-group member: its own librdkafka consumer and plugin
 * instance, on its own thread. One cycle:
 *
 *   poll        records go to a queue per partition (offset order kept;
 *               poll.c)
 *   handle      the ready head records of the partitions, round robin,
 *               at most max_batch: the flow core (flow.h) says which
 *               record goes to the plugin or the dead-letter topic; a head
 *               waiting for a retry holds its partition only
 *   settle      plugin flush -> one store transaction with the batch's
 *               dedup marks -> only then commit the next offsets to Kafka
 *               (settle.c, durable.c, commit.c)
 *
 * Offsets only ever trail outcomes that are durable in the store, so the
 * host may die at any moment without losing a record. Polling never stops
 * for long — while records wait for retries, or while the store refuses
 * the batch (all partitions paused) — so the member keeps its place in the
 * group.
 *
 * This file is the librdkafka adapter around the flow core: the member's
 * thread and cycle, rebalances, dead-letter writes and the plugin call.
 * The rules live in the flow core.
 *
 * Threads: everything here runs on the member's thread, including the
 * librdkafka rebalance and commit callbacks (served from
 * rd_kafka_consumer_poll()), except the store transaction of the batch in
 * the air (durable.h).
 */
#include "member.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "breaker.h"
#include "kafka_client.h"
#include "log.h"
#include "member_int.h"
#include "record.h"
#include "state.h"

/* A head that waits less than this (a short retry backoff, an event ID in
 * flight elsewhere) does not pause its partition: resuming costs a refetch
 * of what librdkafka had prefetched, far more than the wait. */
#define MEMBER_PAUSE_MIN_MS 100
/* Commits tried at shutdown, 300 ms apart (within its deadline). */
#define SHUTDOWN_COMMIT_TRIES 10
/* The most of shutdown_timeout kept for closing the plugins and the store
 * after a member is done with Kafka (a fifth of it when that is less). */
#define SHUTDOWN_RESERVE_MS 3000
/* Longest wait for the broker's answer to a dead-letter write. */
#define MEMBER_DEAD_LETTER_TIMEOUT_MS 30000
/* Longest wait for the group's committed offsets (dedup history check). */
#define MEMBER_COMMITTED_QUERY_MS 5000

/* ------------------------------------------------------------ partitions */

/* Monotonic ms, coarse (a few ms): cheap enough to take per record. */
static int64_t coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Forget a partition: its queued records were never handled and go to the
 * next owner; a dead-letter write of its head (of one of its lanes, with
 * concurrency > 1), written or not, is made again by the next owner. */
static void part_drop(member_t *m, flow_part_t *pt) {
  for (guint i = m->dl_heads->len; i-- > 0;) {
    flow_part_t *head = m->dl_heads->pdata[i];
    if (flow_part_owner(head) != pt)
      continue;
    dead_letter_forget(m->dlq, flow_part_user(head));
    flow_part_set_user(head, NULL);
    g_ptr_array_remove_index_fast(m->dl_heads, i);
  }
  if (m->state)
    state_held_drop_partition(m->state, flow_part_topic(pt),
                              flow_part_partition(pt));
  flow_drop(m->flow, pt);
}

static void drop_partitions(member_t *m,
                            const rd_kafka_topic_partition_list_t *parts) {
  for (int i = 0; i < parts->cnt; i++) {
    flow_part_t *pt =
        flow_find(m->flow, parts->elems[i].topic, parts->elems[i].partition);
    if (pt)
      part_drop(m, pt);
  }
}

/* The longest wait for the broker's answer to a dead-letter write. Landing
 * the writes in flight (revoke, shutdown) blocks the member thread that
 * long at most: it stays well inside the consumer's max.poll.interval.ms,
 * so that the wait never costs the member its place in the group. */
static int dead_letter_timeout_ms(const member_t *m) {
  char value[32];
  size_t size = sizeof(value);
  long poll = 300000; /* librdkafka's default */
  if (rd_kafka_conf_get(rd_kafka_conf(m->rk), "max.poll.interval.ms", value,
                        &size) == RD_KAFKA_CONF_OK)
    poll = strtol(value, NULL, 10);
  return poll / 3 < MEMBER_DEAD_LETTER_TIMEOUT_MS
             ? (int)(poll / 3)
             : MEMBER_DEAD_LETTER_TIMEOUT_MS;
}

/* ------------------------------------------------------------ the cycle */

/* The plugin's call for a job of the flow, watched by the pipeline's
 * watchdog while it runs. */
static khost_result_t call_plugin(member_t *m, const flow_job_t *job) {
  khost_record_t rec;
  record_for_plugin(job, &rec);
  atomic_store(&m->busy_topic, rec.topic);
  atomic_store(&m->busy_partition, rec.partition);
  atomic_store(&m->busy_offset, rec.offset);
  atomic_store(&m->busy_since, coarse_ms());
  int64_t t0 = metrics_now_us();
  khost_result_t res = plugin_instance_handle(m->inst, &rec);
  metrics_observe_handle(m->env->metrics, t0);
  atomic_store(&m->busy_since, 0);
  return res;
}

/* Look at pt's dead-letter write for up to poll_ms and tell the flow how
 * it went. Returns 1 while it is still in flight. */
static int dead_letter_check(member_t *m, flow_part_t *pt, int poll_ms) {
  char err[512] = "";
  int r =
      dead_letter_poll(m->dlq, flow_part_user(pt), poll_ms, err, sizeof(err));
  if (r == 1)
    return 1;
  flow_part_set_user(pt, NULL); /* taken: freed */
  g_ptr_array_remove_fast(m->dl_heads, pt);
  flow_dead_letter_done(m->flow, pt, r < 0 ? -1 : 0, err, member_now_ms());
  return 0;
}

/* Write the record of a job to the dead-letter topic; the head waits for
 * the broker's answer while the member goes on with the other
 * partitions. */
static void dead_letter_start(member_t *m, const flow_job_t *job) {
  dead_letter_write_t *dlw = NULL;
  char err[512];
  if (dead_letter_begin(m->dlq, job->rec, job->reason, job->attempt, &dlw, err,
                        sizeof(err)) != 0) {
    flow_dead_letter_done(m->flow, job->part, -1, err, member_now_ms());
    return;
  }
  flow_part_set_user(job->part, dlw);
  g_ptr_array_add(m->dl_heads, job->part);
  dead_letter_check(m, job->part, 0);
}

/* Look at every write in flight once, for up to poll_ms each; 1 while
 * one still is. (A head answered leaves dl_heads; the loop runs from the
 * end, so that the ones moved into its place were looked at already.) */
static int dead_letters_check(member_t *m, int poll_ms) {
  int waiting = 0;
  for (guint i = m->dl_heads->len; i-- > 0;)
    if (i < m->dl_heads->len &&
        dead_letter_check(m, m->dl_heads->pdata[i], poll_ms))
      waiting = 1;
  return waiting;
}

static void dead_letters_poll(member_t *m) {
  dead_letters_check(m, 0);
}

/* Wait up to ms for the dead-letter writes in flight and finish the heads
 * the broker acknowledged: before partitions go, so that a record already
 * on the dead-letter topic is marked rather than written again by the
 * next owner. */
static void land_dead_letters(member_t *m, int64_t ms) {
  int64_t deadline = member_now_ms() + ms;
  while (dead_letters_check(m, MEMBER_DEAD_LETTER_POLL_MS) &&
         member_now_ms() < deadline)
    ;
}

/* Handle the ready heads, round robin over the partitions, until the
 * batch is full or none is ready. The clock is read once before the loop
 * and once after each plugin call (the time of its outcome, which retry
 * backoffs and the breaker's cooldown count from). */
static void handle_ready(member_t *m) {
  flow_job_t job;
  int what;
  int64_t now = member_now_ms();
  dead_letters_poll(m);
  if (flow_check_breaker(m->flow, now) != m->breaker_open) {
    m->breaker_open = !m->breaker_open;
    metrics_breaker(m->env->metrics, m->breaker_open);
  }
  member_answers(m);
  while (!member_stopping(m) &&
         (what = flow_next(m->flow, now, &job)) != FLOW_NONE) {
    if (what == FLOW_DEAD_LETTER) {
      dead_letter_start(m, &job);
      continue;
    }
    if (m->workers) {
      member_dispatch(m, &job);
      continue;
    }
    rd_kafka_message_t *msg = job.rec;
    if (m->state) {
      /* Writes of an earlier RETRY, or of a FAIL handled again. */
      state_record_drop(m->state);
      state_held_drop(m->state, rd_kafka_topic_name(msg->rkt), msg->partition,
                      msg->offset);
    }
    khost_result_t res = call_plugin(m, &job);
    now = member_now_ms();
    /* The record's state writes go with its outcome: into the batch its
     * mark goes to (OK), or nowhere (RETRY, FATAL). A FAIL's mark may wait
     * for the dead-letter topic and land in a later batch: its writes are
     * held until record_failed() says it is marked. */
    if (m->state && res == KHOST_OK)
      state_record_join(m->state, flow_batch_store(flow_cur(m->flow)));
    else if (m->state && res == KHOST_FAIL)
      state_record_hold(m->state, rd_kafka_topic_name(msg->rkt), msg->partition,
                        msg->offset);
    if (flow_outcome_why(m->flow, &job, res, plugin_instance_reason(m->inst),
                         now) != 0) {
      member_fail(m,
                  "%s: plugin reported a fatal error at %s [%" PRId32
                  "] offset %" PRId64,
                  m->who, rd_kafka_topic_name(msg->rkt), msg->partition,
                  msg->offset);
      return;
    }
  }
}

/* A member that subscribed and has had no answer from its group yet
 * (no assignment, not even an empty one) says so every
 * MEMBER_UNASSIGNED_SAY_MS: a start that stands still waiting for the
 * coordinator is otherwise silent. */
static void say_unassigned(member_t *m) {
  int64_t now = member_now_ms();
  if (!m->unassigned_since ||
      now - (m->unassigned_said ? m->unassigned_said : m->unassigned_since) <
          MEMBER_UNASSIGNED_SAY_MS)
    return;
  m->unassigned_said = now;
  log_msg(KHOST_LOG_WARNING, m->who,
          "no partitions from group %s yet, %" PRId64
          " s after subscribing: waiting for the group to be joined (its "
          "coordinator unreachable or not answering, or a rebalance waiting "
          "for members that died without leaving the group)",
          m->env->pc->group_id, (now - m->unassigned_since) / 1000);
}

static void cycle(member_t *m) {
  say_unassigned(m);
  metrics_tick(m->env->metrics, m->index, m->rk, flow_queued(m->flow),
               flow_batch_len(flow_cur(m->flow)) + flow_air_len(m->flow));
  poll_records(m);
  member_report_oldest(m);
  settle_land(m, 0, 1); /* commit landed batches' offsets without delay */
  handle_ready(m);
  if (flow_batch_due(m->flow, member_now_ms()))
    settle_due(m);
  commit_due(m);
  poll_pauses(m);
}

/* ------------------------------------------------------ rebalancing */

static void log_partitions(member_t *m, const char *what,
                           const rd_kafka_topic_partition_list_t *parts) {
  char buf[1024];
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < parts->cnt && off < sizeof(buf) - 1; i++)
    off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s[%" PRId32 "]",
                            i ? " " : "", parts->elems[i].topic,
                            parts->elems[i].partition);
  log_msg(KHOST_LOG_INFO, m->who, "%s %d partition(s): %s", what, parts->cnt,
          buf);
}

/* At the pipeline's first assignment in this process, when its dedup
 * database was created empty at this start: warn when the group already
 * has committed offsets. Records were handled before, and their event IDs
 * are in a history this database lacks (deleted or moved, or another
 * host's). One OffsetFetch, made only then, before anything of this
 * process is committed. */
static void check_dedup_history(member_t *m,
                                const rd_kafka_topic_partition_list_t *parts) {
  store_t *s = m->env->store;
  const rd_kafka_topic_partition_t *first = NULL;
  int n = 0;
  if (!s || parts->cnt == 0 || !store_history_check_due(s, m->env->scope))
    return;
  rd_kafka_topic_partition_list_t *c =
      rd_kafka_topic_partition_list_copy(parts);
  rd_kafka_resp_err_t e =
      rd_kafka_committed(m->rk, c, MEMBER_COMMITTED_QUERY_MS);
  for (int i = 0; !e && i < c->cnt; i++)
    if (c->elems[i].offset >= 0 && n++ == 0)
      first = &c->elems[i];
  if (e)
    log_msg(KHOST_LOG_WARNING, m->who,
            "the dedup database %s is new, and the group's committed offsets "
            "to compare it with cannot be read: %s",
            m->env->cfg->dedup_path, rd_kafka_err2str(e));
  else if (first)
    log_msg(KHOST_LOG_WARNING, m->who,
            "the dedup database %s was created empty at this start, but group "
            "%s has committed offsets (%d of the %d partition(s) assigned "
            "here, e.g. %s [%" PRId32 "] at %" PRId64 "): the event IDs "
            "handled before are not in it, and records published again will "
            "be handled again. If the database was deleted or moved, stop "
            "khost and restore it; to handle records again on purpose, use "
            "khost replay (README.md, \"Dedup store\")",
            m->env->cfg->dedup_path, m->env->pc->group_id, n, c->cnt,
            first->topic, first->partition, first->offset);
  rd_kafka_topic_partition_list_destroy(c);
}

/* A revoke ends by one deadline, the one it already allowed the
 * dead-letter writes in flight (dead_letter_timeout_ms(), well inside
 * max.poll.interval.ms): the calls out for the revoked partitions finish
 * by then or are abandoned (their outcomes dropped when they return),
 * and the member goes on. A lost partition's calls get the same time:
 * their outcomes are made durable (marks, not commits), so that the
 * member skips those records rather than handling them again should the
 * partition come back to it. */
static void on_revoke(member_t *m, rd_kafka_topic_partition_list_t *parts) {
  int lost = rd_kafka_assignment_lost(m->rk);
  int64_t ms = dead_letter_timeout_ms(m);
  int64_t deadline = member_now_ms() + ms;
  /* The jobs out for these partitions finish first (as a handle() call
   * would): their outcomes join the batch made durable below. */
  member_revoke_wait(m, parts, ms, lost);
  if (lost) {
    /* Someone else owns these now: their results must not be committed. */
    log_partitions(m, "lost", parts);
  } else {
    log_partitions(m, "revoked", parts);
    /* Make what was handled durable and commit it synchronously before
     * the partitions go (what cannot be made durable now is delivered to
     * the next owner). */
    land_dead_letters(m, deadline - member_now_ms());
    m->flush_by = deadline;
    settle(m, 1, 0);
    m->flush_by = 0;
  }
  /* The batch in flight is finished or abandoned; the partitions go. */
  member_plugin_revoked(m, parts, lost);
  drop_partitions(m, parts);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  member_t *m = kafka_ctx(opaque);
  rd_kafka_error_t *error = NULL;
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  /* Known only once the group has been joined (NULL when there is no
   * group any more, while closing): ask every time. */
  const char *protocol = rd_kafka_rebalance_protocol(rk);
  int cooperative = protocol && strcmp(protocol, "COOPERATIVE") == 0;
  m->unassigned_since = 0;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    log_partitions(m, "assigned", parts);
    check_dedup_history(m, parts);
    atomic_fetch_add(m->env->assigned, (uint64_t)parts->cnt);
    metrics_assigned(m->env->metrics, m->index, parts);
    for (int i = 0; i < parts->cnt; i++)
      flow_assign(m->flow, parts->elems[i].topic, parts->elems[i].partition);
    m->env->start_offsets(m->env->ctx, parts);
    if (m->state)
      state_start_offsets(m, parts);
    member_plugin_assigned(m, parts);
    if (cooperative)
      error = rd_kafka_incremental_assign(rk, parts);
    else
      e = rd_kafka_assign(rk, parts);
  } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    metrics_revoked(m->env->metrics, m->index, parts,
                    rd_kafka_assignment_lost(rk));
    on_revoke(m, parts);
    atomic_fetch_sub(m->env->assigned, (uint64_t)parts->cnt);
    if (cooperative)
      error = rd_kafka_incremental_unassign(rk, parts);
    else
      e = rd_kafka_assign(rk, NULL);
  } else {
    log_msg(KHOST_LOG_ERR, m->who, "rebalance failed: %s",
            rd_kafka_err2str(err));
    e = rd_kafka_assign(rk, NULL);
  }
  if (error) {
    log_msg(KHOST_LOG_ERR, m->who, "cannot apply the assignment: %s",
            rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  } else if (e) {
    log_msg(KHOST_LOG_ERR, m->who, "cannot apply the assignment: %s",
            rd_kafka_err2str(e));
  }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  member_t *m = kafka_ctx(opaque);
  char fatal[512];
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
    member_fail(m, "%s: fatal Kafka client error: %s", m->who, fatal);
    return;
  }
  log_msg(KHOST_LOG_WARNING, m->who, "kafka: %s: %s",
          rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static int subscribe(member_t *m, char *err, size_t errlen) {
  const cfg_pipeline_t *pc = m->env->pc;
  rd_kafka_topic_partition_list_t *topics =
      rd_kafka_topic_partition_list_new((int)pc->n_topics);
  for (size_t i = 0; i < pc->n_topics; i++)
    rd_kafka_topic_partition_list_add(topics, pc->topics[i],
                                      RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(m->rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (e) {
    snprintf(err, errlen, "%s: cannot subscribe: %s", m->who,
             rd_kafka_err2str(e));
    return -1;
  }
  return 0;
}

static int create_consumer(member_t *m, char *err, size_t errlen) {
  char errstr[512], client_id[256], instance_id[256];
  rd_kafka_conf_t *conf = m->env->kafka_conf(m->env->ctx, 0, err, errlen);
  if (!conf)
    return -1;
  snprintf(client_id, sizeof(client_id), "khost-%s-%d", m->env->pipeline,
           m->index);
  const cfg_t *cfg = m->env->cfg;
  const cfg_pipeline_t *pc = m->env->pc;
  if (!cfg_prop_find(cfg->kafka, cfg->n_kafka, "client.id") &&
      !cfg_prop_find(pc->kafka, pc->n_kafka, "client.id"))
    rd_kafka_conf_set(conf, "client.id", client_id, NULL, 0);
  /* Static membership: a restarted member takes its partitions back
   * without a rebalance (config.c refuses a group.instance.id of the
   * user's next to instance_id). */
  if (cfg_member_instance_id(cfg, pc, m->index, instance_id,
                             sizeof(instance_id))) {
    rd_kafka_conf_set(conf, "group.instance.id", instance_id, NULL, 0);
    log_msg(KHOST_LOG_INFO, m->who, "static membership: group.instance.id %s",
            instance_id);
  }
  rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
  rd_kafka_conf_set_error_cb(conf, on_error);
  m->rk = kafka_new(RD_KAFKA_CONSUMER, conf, m->who, m, errstr, sizeof(errstr));
  if (!m->rk) {
    snprintf(err, errlen, "%s: %s", m->who, errstr);
    return -1;
  }
  rd_kafka_poll_set_consumer(m->rk);
  m->commit_q = rd_kafka_queue_new(m->rk);
  return 0;
}

/* The dead-letter producer: the pipeline's connection settings, its own
 * client id. After create_consumer(). */
static int open_dead_letter(member_t *m, char *err, size_t errlen) {
  const cfg_pipeline_t *pc = m->env->pc;
  char client_id[256];
  if (!pc->dead_letter_topic)
    return 0;
  rd_kafka_conf_t *conf = m->env->kafka_conf(m->env->ctx, 1, err, errlen);
  if (!conf)
    return -1;
  snprintf(client_id, sizeof(client_id), "khost-%s-%d-dlt", m->env->pipeline,
           m->index);
  rd_kafka_conf_set(conf, "client.id", client_id, NULL, 0);
  return dead_letter_open(&m->dlq, conf, m->who, pc->dead_letter_topic,
                          m->env->pipeline,
                          plugin_descriptor(m->env->plugin)->name,
                          dead_letter_timeout_ms(m), err, errlen);
}

/* Wall clock for marks, coarse: a mark's time only serves retention. */
static int64_t wall_coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The flow core marks the failed record right after this, in its current
 * batch: the record's held state writes go there with it. */
static void record_failed(void *ctx, const char *topic, int32_t partition,
                          int64_t offset, const char *reason,
                          int dead_lettered) {
  member_t *m = ctx;
  metrics_failed(m->env->metrics, topic, partition, offset, reason,
                 dead_lettered);
  if (m->state)
    state_held_join(m->state, topic, partition, offset,
                    flow_batch_store(flow_cur(m->flow)));
}

static void batch_end(void *ctx, store_batch_t *sb) {
  state_batch_end(ctx, sb);
}

/* The flow core's settings, from the pipeline's. */
static void flow_setup(member_t *m) {
  const member_env_t *env = m->env;
  const cfg_pipeline_t *pc = env->pc;
  m->fc = (flow_conf_t){
      .who = m->who,
      .pipeline = env->pipeline,
      .eid_header = pc->eid_source == CFG_EID_KEY ? NULL : pc->eid_header,
      .missing_id_fail = pc->on_missing_id == CFG_MISSING_FAIL,
      .retry_max = pc->retry_max,
      .retry_backoff_ms = pc->retry_backoff_ms,
      .retry_backoff_max_ms = pc->retry_backoff_max_ms,
      .max_batch = (size_t)pc->max_batch,
      .linger_ms = MEMBER_LINGER_MS,
      .pause_min_ms = MEMBER_PAUSE_MIN_MS,
      .dead_letter_topic = pc->dead_letter_topic,
      .config_path = env->cfg->path,
      .breaker = env->breaker,
      .breaker_ratio = pc->breaker_ratio,
      .breaker_cooldown_ms = pc->breaker_cooldown_ms,
      .store = env->store,
      .scope = env->scope,
      .counts = env->counts,
      .wall_ms = wall_coarse_ms,
      .at_end = env->progress,
      .at_end_ctx = env->ctx,
      .failed = record_failed,
      .failed_ctx = m,
      .batch_end = m->state ? batch_end : NULL,
      .batch_end_ctx = m->state,
      .concurrency = pc->concurrency,
      .order_by = (flow_order_t)pc->order_by,
      .order_header = pc->order_header,
      /* Enough records to find concurrency distinct ordering values, and
       * the member's share of memory_limit. */
      .queue_max =
          (size_t)(pc->max_batch > 16 * pc->concurrency ? pc->max_batch
                                                        : 16 * pc->concurrency),
      .queue_bytes = (size_t)kafka_prefetch_kbytes(env->cfg) * 1024,
      .max_air_bytes = kafka_air_bytes(env->cfg),
  };
}

/* ------------------------------------------------------------ setup */

static int setup(member_t *m, char *err, size_t errlen) {
  const member_env_t *env = m->env;
  plugin_instance_opts_t opts = {
      .pipeline = env->pipeline,
      .member = m->index,
      .config = env->pc->plugin_config,
      .config_file = env->cfg->path,
      .closing_note = env->keep_closing_notes ? env->closing_note : NULL,
      .closing_ctx = env->ctx,
  };
  if (env->store && store_has_state(env->store))
    m->state = state_new(env->store, env->scope);
  opts.state = m->state;
  if (member_instances_create(m, &opts, err, errlen) != 0)
    return -1;
  flow_setup(m);
  if (flow_open(&m->flow, &m->fc, &record_ops, err, errlen) != 0)
    return -1;
  if (env->store &&
      durable_start(&m->durable, m->who, m->env->metrics, err, errlen) != 0)
    return -1;
  if (create_consumer(m, err, errlen) != 0)
    return -1;
  if (member_workers_start(m, err, errlen) != 0)
    return -1;
  if (open_dead_letter(m, err, errlen) != 0)
    return -1;
  return subscribe(m, err, errlen);
}

/* When a stopping member must be done with Kafka: shutdown_timeout from
 * the moment the stop was asked for (the process's own deadline, cmd_run.c,
 * counts from then too, and a member may notice the stop seconds later,
 * after a plugin call or a commit in a rebalance), less a share left for
 * closing the plugins and the store, so that the process ends before its
 * own deadline ends it with status 1 and a stuck plugin call as the only
 * explanation. */
static int64_t shutdown_deadline(const member_t *m) {
  int64_t t = m->env->cfg->shutdown_timeout_ms, now = member_now_ms();
  int64_t reserve = t / 5 < SHUTDOWN_RESERVE_MS ? t / 5 : SHUTDOWN_RESERVE_MS;
  int64_t from = m->env->stop_ms ? m->env->stop_ms(m->env->ctx) : 0;
  if (from <= 0 || from > now)
    from = now;
  return from + t - reserve;
}

/* An event of the closing consumer: a revoke goes to the rebalance
 * callback, as rd_kafka_consumer_close() would have passed it; records
 * fetched meanwhile are dropped (the next owner reads them again). */
static void closing_event(member_t *m, rd_kafka_event_t *ev) {
  if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
    on_rebalance(m->rk, rd_kafka_event_error(ev),
                 rd_kafka_event_topic_partition_list(ev),
                 rd_kafka_opaque(m->rk));
  else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR)
    log_msg(KHOST_LOG_WARNING, m->who, "leaving the group: %s",
            rd_kafka_event_error_string(ev));
  rd_kafka_event_destroy(ev);
}

/* Leave the group by deadline. rd_kafka_consumer_close() has no timeout
 * (it waits for the coordinator's answers); closing through a queue of
 * our own, served here as events (the callbacks of the consumer queue
 * cannot serve the records it carries too), stops waiting at the
 * deadline. Returns 1 when the consumer closed. */
static int leave_group(member_t *m, int64_t deadline) {
  rd_kafka_queue_t *q = rd_kafka_queue_new(m->rk);
  rd_kafka_error_t *error = rd_kafka_consumer_close_queue(m->rk, q);
  int64_t left;
  if (error) {
    log_msg(KHOST_LOG_WARNING, m->who, "leaving the group: %s",
            rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  }
  while (!error && !rd_kafka_consumer_closed(m->rk) &&
         (left = deadline - member_now_ms()) > 0) {
    rd_kafka_event_t *ev =
        rd_kafka_queue_poll(q, (int)(left < 100 ? left : 100));
    if (ev)
      closing_event(m, ev);
  }
  int closed = !error && rd_kafka_consumer_closed(m->rk);
  if (!error && !closed)
    log_msg(KHOST_LOG_WARNING, m->who,
            "leaving the group did not finish before the shutdown deadline: "
            "the group rebalances once the session times out");
  rd_kafka_queue_destroy(q);
  return closed;
}

/* Stop: the jobs out answered, the dead-letter writes and the last batch
 * landed, the durable positions committed, the group left; all of it with
 * Kafka ends by one deadline derived from shutdown_timeout. What is left
 * uncommitted then is delivered again, never lost. */
static void shut_down(member_t *m) {
  if (m->rk) {
    int64_t deadline = shutdown_deadline(m), left;
    member_workers_stop(m); /* every job out answered first */
    left = deadline - member_now_ms();
    land_dead_letters(
        m, left < dead_letter_timeout_ms(m) ? left : dead_letter_timeout_ms(m));
    settle(m, 0, 1);
    /* Refused while the group rebalances (other members leaving too):
     * tried again a few times. A quarter of the time left is kept for
     * leaving the group. */
    left = deadline - member_now_ms();
    commit_final(m, deadline - (left > 0 ? left / 4 : 0),
                 SHUTDOWN_COMMIT_TRIES);
    /* Leaving the group runs the revoke callback, which makes nothing
     * durable any more (all is) and commits nothing, and drops every
     * partition with its unhandled records. */
    m->closing = 1;
    int closed = leave_group(m, deadline);
    while (flow_parts(m->flow) > 0)
      part_drop(m, flow_part_at(m->flow, 0));
    rd_kafka_queue_destroy(m->commit_q);
    m->commit_q = NULL;
    if (closed)
      kafka_destroy(m->rk);
    else
      kafka_destroy_unjoined(m->rk);
    m->rk = NULL;
  }
  durable_stop(m->durable);
  m->durable = NULL;
  while (m->flow && flow_parts(m->flow) > 0)
    part_drop(m, flow_part_at(m->flow, 0));
  dead_letter_close(m->dlq);
  m->dlq = NULL;
  member_instances_destroy(m);
  /* Outcomes left were not made durable: their claims go back. */
  flow_close(m->flow);
  m->flow = NULL;
  state_free(m->state);
  m->state = NULL;
}

static void *member_main(void *arg) {
  member_t *m = arg;
  const member_env_t *env = m->env;
  char err[1024] = "", name[16];
  /* Visible in top -H, perf and gdb; the kernel keeps 15 characters. */
  snprintf(name, sizeof(name), "kh/%.12s", m->who);
  pthread_setname_np(pthread_self(), name);
  int ok = setup(m, err, sizeof(err)) == 0;
  if (!ok)
    env->fail(env->ctx, err);
  env->started(env->ctx, ok);
  if (ok) {
    m->unassigned_since = member_now_ms();
    log_msg(KHOST_LOG_INFO, m->who, "subscribed; consuming");
    while (!member_stopping(m))
      cycle(m);
  }
  shut_down(m);
  if (ok)
    env->exited(env->ctx);
  return NULL;
}

static void member_free(member_t *m) {
  workers_free(m->workers);
  g_ptr_array_free(m->dl_heads, TRUE);
  free(m);
}

int member_spawn(member_t **out, const member_env_t *env, int index) {
  member_t *m = calloc(1, sizeof(*m));
  m->env = env;
  m->index = index;
  m->dl_heads = g_ptr_array_new();
  snprintf(m->who, sizeof(m->who), "%s/%d", env->pipeline, index);
  if (pthread_create(&m->thread, NULL, member_main, m) != 0) {
    member_free(m);
    return -1;
  }
  *out = m;
  return 0;
}

void member_join(member_t *m) {
  pthread_join(m->thread, NULL);
  member_free(m);
}

int member_busy(member_t *m, int64_t *since, const char **topic,
                int32_t *partition, int64_t *offset) {
  if (m->workers)
    return workers_busy(m->workers, since, topic, partition, offset);
  *since = atomic_load(&m->busy_since);
  if (*since == 0)
    return 0;
  *topic = atomic_load(&m->busy_topic);
  *partition = atomic_load(&m->busy_partition);
  *offset = atomic_load(&m->busy_offset);
  return 1;
}

const char *member_who(const member_t *m) {
  return m->who;
}
