/*
 * What happens to the head record of a partition (see member_int.h):
 *
 *   event ID -> seen in this pipeline? skip
 *            -> plugin handle()
 *                 OK    -> marked
 *                 RETRY -> waits at the head of its partition (backoff with
 *                          jitter) while the member goes on polling and
 *                          handling the other partitions; after retry.max
 *                          attempts it counts as FAIL
 *                 FAIL  -> dead-letter topic (once the broker acknowledged
 *                          it) or logged; marked
 *                 FATAL -> the pipeline stops; nothing past it is committed
 *
 * Threads: the member's thread only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "breaker.h"
#include "log.h"
#include "member_int.h"

int64_t member_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t member_coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall clock for marks, coarse: a mark's time only serves retention. */
static int64_t wall_coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A printable copy of an event ID for log lines. */
static const char *printable(char *buf, size_t size, const void *data,
                             size_t len) {
  if (!data)
    return "-";
  size_t n = len < size - 4 ? len : size - 4;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = ((const unsigned char *)data)[i];
    buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  strcpy(buf + n, len > n ? "..." : "");
  return buf;
}

/* The record's event ID (header or key); 0 when it has none. */
static int event_id(const member_t *m, rd_kafka_message_t *msg, const void **id,
                    size_t *len) {
  const cfg_pipeline_t *pc = m->p->env.pc;
  *id = NULL;
  *len = 0;
  if (pc->eid_source == CFG_EID_KEY) {
    *id = msg->key;
    *len = msg->key_len;
  } else {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, pc->eid_header, id, len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
      *id = NULL;
  }
  if (!*id || *len == 0) {
    *id = NULL;
    *len = 0;
    return 0;
  }
  return 1;
}

/* How often a head whose event ID is in flight elsewhere looks again. */
#define DISPATCH_CLAIM_RECHECK_MS 20
/* How often a head whose dead-letter write is in flight is looked at. */
#define DISPATCH_DEAD_LETTER_POLL_MS 5

static int64_t backoff_ms(const cfg_pipeline_t *pc, uint32_t attempt) {
  int64_t d = pc->retry_backoff_ms;
  for (uint32_t i = 1; i < attempt && d < pc->retry_backoff_max_ms; i++)
    d *= 2;
  if (d > pc->retry_backoff_max_ms)
    d = pc->retry_backoff_max_ms;
  /* Jitter in [d/2, d]: members retrying against one dependency spread. */
  return d / 2 + g_random_int_range(0, (gint32)(d / 2 + 1));
}

/* The replayed range holding offset, or NULL. Newest ranges come first. */
static const store_range_t *replay_range(const part_t *pt, int64_t offset) {
  for (size_t i = 0; i < pt->n_ranges; i++)
    if (offset >= pt->ranges[i].from && offset < pt->ranges[i].to)
      return &pt->ranges[i];
  return NULL;
}

/* ------------------------------------------------------------ outcomes */

/* The head has an outcome: mark it (when claimed), move it to m->cur.done and
 * make the partition's next record the head. */
static int finish(member_t *m, part_t *pt, int outcome) {
  rd_kafka_message_t *msg = g_queue_pop_head(&pt->queue);
  const void *id;
  size_t len;
  m->queued--;
  if (pt->claimed && event_id(m, msg, &id, &len)) {
    store_mark_t mark = {
        .scope = m->p->scope,
        .event_id = id,
        .event_id_len = len,
        .topic = rd_kafka_topic_name(msg->rkt),
        .partition = msg->partition,
        .offset = msg->offset,
        .handled_at_ms = wall_coarse_ms(),
        .outcome = outcome,
    };
    store_batch_add_mark(m->cur.writer, &mark);
    g_ptr_array_add(m->cur.claims, msg);
  }
  g_ptr_array_add(m->cur.done, msg);
  pt->started = pt->claimed = pt->dead_letter = pt->waits_claim = 0;
  pt->attempts = 0;
  pt->wait_until = 0;
  return DISPATCH_DONE;
}

static void log_record(member_t *m, int level, const rd_kafka_message_t *msg,
                       const char *what) {
  char idbuf[132];
  const void *id;
  size_t len;
  event_id(m, (rd_kafka_message_t *)msg, &id, &len);
  log_msg(level, m->who, "%s [%" PRId32 "] offset %" PRId64 " eventId %s: %s",
          rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset,
          printable(idbuf, sizeof(idbuf), id, len), what);
}

/* Write the failed head to the dead-letter topic; marked once the broker
 * acknowledged it, else it waits and the write is tried again. The head
 * waits while the write is in flight (the member goes on with the other
 * partitions) and is looked at again every DISPATCH_DEAD_LETTER_POLL_MS;
 * poll_ms > 0 waits that long for the answer here. */
static int dead_letter_step(member_t *m, part_t *pt, rd_kafka_message_t *msg,
                            int poll_ms) {
  char err[512], line[768];
  int r = -1;
  if (pt->dlw)
    r = dead_letter_poll(m->dlq, pt->dlw, poll_ms, err, sizeof(err));
  else if (dead_letter_begin(m->dlq, msg, pt->reason, pt->attempts, &pt->dlw,
                             err, sizeof(err)) == 0)
    r = dead_letter_poll(m->dlq, pt->dlw, poll_ms, err, sizeof(err));
  if (r == 1) {
    pt->wait_until = member_now_ms() + DISPATCH_DEAD_LETTER_POLL_MS;
    return DISPATCH_WAIT;
  }
  pt->dlw = NULL; /* taken: freed */
  if (r < 0) {
    snprintf(line, sizeof(line),
             "cannot write to the dead-letter topic, the record waits: %s",
             err);
    log_record(m, KHOST_LOG_WARNING, msg, line);
    pt->wait_until = member_now_ms() + backoff_ms(m->p->env.pc, 3);
    return DISPATCH_WAIT;
  }
  snprintf(line, sizeof(line), "%s; sent to the dead-letter topic %s",
           pt->reason, m->p->env.pc->dead_letter_topic);
  log_record(m, KHOST_LOG_ERR, msg, line);
  atomic_fetch_add(&m->p->failed_records, 1);
  metrics_failed(m->p->env.metrics, rd_kafka_topic_name(msg->rkt),
                 msg->partition, msg->offset, pt->reason, 1);
  return finish(m, pt, STORE_OUTCOME_FAIL);
}

static int to_dead_letter(member_t *m, part_t *pt, rd_kafka_message_t *msg) {
  return dead_letter_step(m, pt, msg, 0);
}

void dispatch_land_dead_letters(member_t *m, int64_t ms) {
  int64_t deadline = member_now_ms() + ms;
  for (int waiting = 1; waiting && member_now_ms() < deadline;) {
    waiting = 0;
    for (guint i = 0; i < m->parts->len; i++) {
      part_t *pt = m->parts->pdata[i];
      if (pt->dlw &&
          dead_letter_step(m, pt, g_queue_peek_head(&pt->queue),
                           DISPATCH_DEAD_LETTER_POLL_MS) == DISPATCH_WAIT &&
          pt->dlw)
        waiting = 1;
    }
  }
}

/* While the circuit breaker is open, failures are most likely the fault of
 * a dependency, not of the records: the head waits for the cooldown. */
static int breaker_holds(member_t *m, part_t *pt, rd_kafka_message_t *msg) {
  breaker_t *b = m->p->breaker;
  int64_t now = member_now_ms();
  if (!b)
    return 0;
  if (breaker_record(b, 1, now)) {
    atomic_fetch_add(&m->p->breaker_trips, 1);
    log_msg(KHOST_LOG_ERR, m->p->name,
            "circuit breaker open: more than %.0f %% of the last records "
            "failed; the pipeline pauses for %d ms instead of failing "
            "record after record",
            m->p->env.pc->breaker_ratio * 100,
            m->p->env.pc->breaker_cooldown_ms);
  }
  int64_t left = breaker_open_for(b, now);
  if (left == 0)
    return 0;
  log_record(m, KHOST_LOG_WARNING, msg,
             "failed while the circuit breaker is open: tried again later");
  pt->wait_until = now + left;
  return 1;
}

/* The head failed for good (FAIL, retries used up, or no event ID). */
static int fail_head(member_t *m, part_t *pt, rd_kafka_message_t *msg,
                     const char *reason, int counts_for_breaker) {
  if (counts_for_breaker && breaker_holds(m, pt, msg))
    return DISPATCH_WAIT;
  snprintf(pt->reason, sizeof(pt->reason), "%s", reason);
  if (m->dlq) {
    pt->dead_letter = 1;
    return to_dead_letter(m, pt, msg);
  }
  log_record(m, KHOST_LOG_ERR, msg, reason);
  atomic_fetch_add(&m->p->failed_records, 1);
  metrics_failed(m->p->env.metrics, rd_kafka_topic_name(msg->rkt),
                 msg->partition, msg->offset, reason, 0);
  return finish(m, pt, STORE_OUTCOME_FAIL);
}

/* ------------------------------------------------------------ the call */

static khost_result_t call_plugin(member_t *m, part_t *pt,
                                  rd_kafka_message_t *msg, const void *id,
                                  size_t len) {
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_timestamp_type_t tstype;
  rd_kafka_message_headers(msg, &hdrs);
  khost_record_t rec = {
      .struct_size = sizeof(rec),
      .topic = rd_kafka_topic_name(msg->rkt),
      .partition = msg->partition,
      .offset = msg->offset,
      .timestamp = rd_kafka_message_timestamp(msg, &tstype),
      .key = msg->key,
      .key_len = msg->key_len,
      .value = msg->payload,
      .value_len = msg->len,
      .event_id = id,
      .event_id_len = len,
      .attempt = ++pt->attempts,
      .flags = replay_range(pt, msg->offset) ? KHOST_RECORD_REPLAY : 0,
      .host_priv = hdrs,
  };
  atomic_store(&m->busy_topic, rec.topic);
  atomic_store(&m->busy_partition, rec.partition);
  atomic_store(&m->busy_offset, rec.offset);
  atomic_store(&m->busy_since, member_coarse_ms());
  int64_t t0 = metrics_now_us();
  khost_result_t res = plugin_instance_handle(m->inst, &rec);
  metrics_observe_handle(m->p->env.metrics, t0);
  atomic_store(&m->busy_since, 0);
  return res;
}

/* Is id claimed by a record of this member's pending batches (the one
 * being handled, or the one in the air)? Its mark becomes durable before
 * this skip is committed, or neither is (member.c abandons every batch
 * after one that cannot be made durable), so the copy is a duplicate now.
 * Linear, but only for in-flight IDs. */
static int batch_claims(member_t *m, const batch_t *b, const void *id,
                        size_t len) {
  for (guint i = 0; i < b->claims->len; i++) {
    const void *cid;
    size_t clen;
    if (event_id(m, b->claims->pdata[i], &cid, &clen) && clen == len &&
        memcmp(cid, id, len) == 0)
      return 1;
  }
  return 0;
}

static int own_claim(member_t *m, const void *id, size_t len) {
  /* The durability thread never touches the claims of the air batch. */
  return batch_claims(m, &m->cur, id, len) ||
         (m->flying && batch_claims(m, &m->air, id, len));
}

/* Another member (or this one, for a head waiting for a retry) holds the
 * head's event ID, and its mark is not durable yet: skipping now could
 * commit past a record whose outcome is never recorded (the claim is given
 * back when that batch is abandoned or that partition lost). The head
 * waits until the claim is committed (then a duplicate) or released (then
 * handled here). */
static int wait_for_claim(member_t *m, part_t *pt, rd_kafka_message_t *msg) {
  pt->started = 0;
  if (!pt->waits_claim)
    log_record(m, KHOST_LOG_INFO, msg,
               "in flight elsewhere (claimed, not durable yet): waiting for "
               "its outcome");
  pt->waits_claim = 1;
  pt->wait_until = member_now_ms() + DISPATCH_CLAIM_RECHECK_MS;
  return DISPATCH_WAIT;
}

/* First look at a head: no event ID, or already handled? Returns -1 to go
 * on to the plugin, or a DISPATCH_* outcome. */
static int check_head(member_t *m, part_t *pt, rd_kafka_message_t *msg,
                      const void *id, size_t len, int has_id) {
  pt->started = 1;
  if (!has_id) {
    atomic_fetch_add(&m->p->no_id, 1);
    if (m->p->env.pc->on_missing_id == CFG_MISSING_FAIL)
      return fail_head(m, pt, msg,
                       "record has no event ID (on_missing_id = fail)", 0);
    return -1;
  }
  if (!m->cur.writer)
    return -1;
  const store_range_t *r = replay_range(pt, msg->offset);
  int again = r && r->mode == STORE_REPLAY_REPROCESS;
  /* Reprocess: handled again once per replay, even across a restart in
   * the middle of it (marks newer than the replay count as seen). */
  int claim = store_claim(m->p->env.store, m->p->scope, id, len,
                          again ? STORE_CLAIM_AGAIN : STORE_CLAIM,
                          again ? r->recorded_ms : 0);
  if (claim == STORE_IN_FLIGHT && !own_claim(m, id, len))
    return wait_for_claim(m, pt, msg);
  if (claim != STORE_NEW) {
    atomic_fetch_add(&m->p->duplicates, 1);
    return finish(m, pt, STORE_OUTCOME_OK);
  }
  pt->claimed = 1;
  return -1;
}

/* A call that may crash the host is recorded before it is made (dedup.h,
 * "Attempts"): a retry, a record an earlier process left calls of, and
 * after an unclean stop the first calls of each partition. A record whose
 * recorded calls are used up fails without another call. Returns -1 to go
 * on to the plugin, or a DISPATCH_* outcome. */
static int guard_attempt(member_t *m, part_t *pt, rd_kafka_message_t *msg,
                         const void *id, size_t len, int *recorded) {
  const cfg_pipeline_t *pc = m->p->env.pc;
  char err[512], why[768];
  store_attempt_t a = {.scope = m->p->scope,
                       .event_id = id,
                       .event_id_len = len,
                       .topic = rd_kafka_topic_name(msg->rkt),
                       .partition = msg->partition,
                       .offset = msg->offset};
  *recorded = 0;
  if (!pt->claimed)
    return -1;             /* no event ID to count by */
  if (pt->attempts == 0) { /* the first call in this process */
    int record = store_attempts(m->p->env.store, &a, (uint32_t)pc->max_batch,
                                &pt->attempts);
    if (pt->attempts > (uint32_t)pc->retry_max) {
      snprintf(why, sizeof(why),
               "no outcome after %" PRIu32
               " recorded attempts: each asked for a retry or never "
               "returned (does the plugin crash the host on this record?)",
               pt->attempts);
      return fail_head(m, pt, msg, why, 0);
    }
    if (!record)
      return -1;
  }
  a.attempts = pt->attempts + 1;
  *recorded = store_attempts_set(m->cur.writer, &a, err, sizeof(err)) == 0;
  if (!*recorded) {
    snprintf(why, sizeof(why),
             "cannot record the attempt before the call (called anyway): %s",
             err);
    log_record(m, KHOST_LOG_WARNING, msg, why);
  }
  return -1;
}

/* A recorded call returned an outcome: it did not crash the host. */
static void attempt_returned(member_t *m, rd_kafka_message_t *msg,
                             const void *id, size_t len) {
  char err[512], why[768];
  store_attempt_t a = {.scope = m->p->scope,
                       .event_id = id,
                       .event_id_len = len,
                       .topic = rd_kafka_topic_name(msg->rkt),
                       .partition = msg->partition,
                       .offset = msg->offset,
                       .attempts = 0};
  if (store_attempts_set(m->cur.writer, &a, err, sizeof(err)) == 0)
    return;
  snprintf(why, sizeof(why), "cannot clear the recorded attempts: %s", err);
  log_record(m, KHOST_LOG_WARNING, msg, why);
}

int dispatch_head(member_t *m, part_t *pt) {
  rd_kafka_message_t *msg = g_queue_peek_head(&pt->queue);
  const cfg_pipeline_t *pc = m->p->env.pc;
  const void *id;
  size_t len;
  char why[192];
  if (msg->err) /* a partition-EOF marker: it only carries progress */
    return finish(m, pt, STORE_OUTCOME_OK);
  int has_id = event_id(m, msg, &id, &len);
  if (!pt->started) {
    int r = check_head(m, pt, msg, id, len, has_id);
    if (r >= 0)
      return r;
  }
  if (pt->dead_letter)
    return to_dead_letter(m, pt, msg);
  int recorded, guarded = guard_attempt(m, pt, msg, id, len, &recorded);
  if (guarded >= 0)
    return guarded;
  khost_result_t res = call_plugin(m, pt, msg, id, len);
  if (recorded && res != KHOST_RETRY)
    attempt_returned(m, msg, id, len);
  if (res == KHOST_OK) {
    atomic_fetch_add(&m->p->handled, 1);
    if (m->p->breaker)
      breaker_record(m->p->breaker, 0, member_now_ms());
    return finish(m, pt, STORE_OUTCOME_OK);
  }
  if (res == KHOST_FATAL) {
    log_record(m, KHOST_LOG_ERR, msg, "the plugin reported a fatal error");
    pipeline_fail(
        m->p,
        "%s: plugin reported a fatal error at %s [%" PRId32 "] offset %" PRId64,
        m->who, rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset);
    return DISPATCH_STOP;
  }
  if (res == KHOST_RETRY) {
    atomic_fetch_add(&m->p->retries, 1);
    if (pt->attempts <= (uint32_t)pc->retry_max) {
      int64_t wait = backoff_ms(pc, pt->attempts);
      snprintf(why, sizeof(why),
               "attempt %" PRIu32 " asks to retry; next in %" PRId64
               " ms (partition paused)",
               pt->attempts, wait);
      log_record(m, KHOST_LOG_WARNING, msg, why);
      pt->wait_until = member_now_ms() + wait;
      return DISPATCH_WAIT;
    }
    snprintf(why, sizeof(why), "still failing after %" PRIu32 " attempts",
             pt->attempts);
    return fail_head(m, pt, msg, why, 1);
  }
  return fail_head(m, pt, msg, "the plugin failed the record", 1);
}

void dispatch_release_head(member_t *m, part_t *pt) {
  rd_kafka_message_t *msg = g_queue_peek_head(&pt->queue);
  const void *id;
  size_t len;
  if (pt->dlw) /* written or not, the next owner writes it again */
    dead_letter_forget(m->dlq, pt->dlw);
  pt->dlw = NULL;
  if (msg && pt->claimed && event_id(m, msg, &id, &len))
    store_release(m->p->env.store, m->p->scope, id, len);
  pt->started = pt->claimed = pt->dead_letter = pt->waits_claim = 0;
  pt->attempts = 0;
}

void dispatch_release(member_t *m, batch_t *b) {
  for (guint i = 0; i < b->claims->len; i++) {
    const void *id;
    size_t len;
    if (event_id(m, b->claims->pdata[i], &id, &len))
      store_release(m->p->env.store, m->p->scope, id, len);
  }
  g_ptr_array_set_size(b->claims, 0);
  if (b->writer)
    store_batch_discard(b->writer);
}
