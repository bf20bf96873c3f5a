/*
 * The flow core (flow.h): the per-partition rules of DESIGN.md.
 *
 *   event ID -> seen in this pipeline? skip (marked with the batch)
 *            -> in flight in another member? wait for its outcome
 *            -> the plugin (flow_next() -> flow_outcome())
 *                 OK    -> marked
 *                 RETRY -> waits at the head of its partition (backoff
 *                          with jitter) while the other partitions go on;
 *                          after retry.max attempts it counts as FAIL
 *                 FAIL  -> dead-letter topic (once the broker acknowledged
 *                          it) or parked in the store; marked
 *                 FATAL -> the pipeline stops; nothing past it commits
 *
 * Outcomes gather in the current batch; flow_batch.c makes positions out
 * of the batches that became durable.
 */
#include "flow_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* How often a head whose event ID is in flight elsewhere looks again. */
#define FLOW_CLAIM_RECHECK_MS 20
/* A head whose claim taken ahead is still on its way is tried again after
 * this long (ms). */
#define FLOW_AHEAD_WAIT_MS 1

/* ------------------------------------------------------------ records */

int flow_event_id(const flow_t *f, const void *rec, const void **id,
                  size_t *len) {
  *id = NULL;
  *len = 0;
  if (!f->conf->eid_header)
    f->ops->key(rec, id, len);
  else if (!f->ops->header(rec, f->conf->eid_header, id, len))
    *id = NULL;
  if (!*id || *len == 0) {
    *id = NULL;
    *len = 0;
    return 0;
  }
  return 1;
}

store_key_t flow_claim_key(const flow_t *f, const flow_claim_t *c) {
  store_key_t k = {.hash = c->hash};
  flow_event_id(f, c->rec, &k.id, &k.len);
  return k;
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

void flow_log_record(const flow_t *f, int level, const void *rec,
                     const char *what) {
  char idbuf[132];
  const void *id;
  size_t len;
  flow_event_id(f, rec, &id, &len);
  log_record_t lr = {
      .topic = f->ops->topic(rec),
      .partition = f->ops->partition(rec),
      .offset = f->ops->offset(rec),
      .event_id = id ? printable(idbuf, sizeof(idbuf), id, len) : NULL,
  };
  log_rec(level, f->conf->who, &lr, "%s", what);
}

static int64_t backoff_ms(const flow_conf_t *c, uint32_t attempt) {
  int64_t d = c->retry_backoff_ms;
  for (uint32_t i = 1; i < attempt && d < c->retry_backoff_max_ms; i++)
    d *= 2;
  if (d > c->retry_backoff_max_ms)
    d = c->retry_backoff_max_ms;
  /* Jitter in [d/2, d]: members retrying against one dependency spread. */
  return d / 2 + g_random_int_range(0, (gint32)(d / 2 + 1));
}

/* The replayed range holding offset, or NULL. Newest ranges come first. */
static const store_range_t *replay_range(const flow_part_t *pt,
                                         int64_t offset) {
  for (size_t i = 0; i < pt->n_ranges; i++)
    if (offset >= pt->ranges[i].from && offset < pt->ranges[i].to)
      return &pt->ranges[i];
  return NULL;
}

/* ------------------------------------------------------------ outcomes */

/* The head has an outcome: mark it (when claimed), move it to the current
 * batch and make the partition's next record the head. */
static void finish(flow_t *f, flow_part_t *pt, int outcome) {
  void *rec = flow_link_give(f, g_queue_pop_head_link(&pt->queue));
  flow_batch_t *b = &f->cur;
  const void *id;
  size_t len;
  f->queued--;
  if (pt->claimed && flow_event_id(f, rec, &id, &len)) {
    store_mark_t mark = {
        .scope = f->conf->scope,
        .event_id = id,
        .event_id_len = len,
        .topic = f->ops->topic(rec),
        .partition = f->ops->partition(rec),
        .offset = f->ops->offset(rec),
        /* A parked record's mark has the time it was parked: `khost
         * parked replay` tells a mark made since by a later time. */
        .handled_at_ms = pt->parked_at ? pt->parked_at : f->conf->wall_ms(),
        .outcome = outcome,
        .id_hash = pt->hash,
        .claim_ref = pt->claim_ref,
    };
    flow_claim_t claim = {rec, pt->hash};
    store_batch_add_mark(b->sb, &mark);
    g_array_append_val(b->claims, claim);
  }
  /* The partition's next offset is stored with the batch (a member
   * assigned the partition later starts there); a lane's partition knows
   * its lowest record without an outcome. */
  if (pt->owner)
    flow_lanes_finished(f, pt, rec, b);
  else if (b->sb && !f->ops->is_end(rec))
    store_batch_set_offset(b->sb, f->conf->scope, f->ops->topic(rec),
                           f->ops->partition(rec), f->ops->offset(rec) + 1);
  /* Its headers were parsed when its event ID came from one or the
   * plugin saw it: only then is there something to drop. */
  if (f->ops->settled && !f->ops->is_end(rec) &&
      (f->conf->eid_header || pt->attempts > 0))
    f->ops->settled(rec);
  g_ptr_array_add(b->done, rec);
  pt->started = pt->claimed = pt->dead_letter = pt->dl_flying = 0;
  pt->waits_claim = 0;
  pt->attempts = 0;
  pt->wait_until = 0;
  pt->parked_at = 0;
}

/* A record failed for good: counted, and told to the adapter. */
static void failed(flow_t *f, const void *rec, const char *reason,
                   int dead_lettered) {
  const flow_conf_t *c = f->conf;
  atomic_fetch_add(&c->counts->failed, 1);
  if (c->failed)
    c->failed(c->failed_ctx, f->ops->topic(rec), f->ops->partition(rec),
              f->ops->offset(rec), reason, dead_lettered);
}

/* While the circuit breaker is open, failures are most likely the fault of
 * a dependency, not of the records: the head waits for the cooldown. */
static int breaker_holds(flow_t *f, flow_part_t *pt, const void *rec,
                         int64_t now) {
  const flow_conf_t *c = f->conf;
  if (!c->breaker)
    return 0;
  if (breaker_record(c->breaker, 1, now)) {
    atomic_fetch_add(&c->counts->breaker_trips, 1);
    log_msg(KHOST_LOG_ERR, c->pipeline,
            "circuit breaker open: more than %.0f %% of the last records "
            "failed; the pipeline pauses for %d ms instead of failing "
            "record after record",
            c->breaker_ratio * 100, c->breaker_cooldown_ms);
  }
  int64_t left = breaker_open_for(c->breaker, now);
  if (left == 0)
    return 0;
  flow_log_record(f, KHOST_LOG_WARNING, rec,
                  "failed while the circuit breaker is open: tried again "
                  "later");
  pt->wait_until = now + left;
  return 1;
}

/* Park rec in the current batch, durable with its mark (store.h). Returns
 * 0, or -1 with line saying why it was not parked. */
static int park(flow_t *f, flow_part_t *pt, const void *rec, const char *reason,
                char *line, size_t size) {
  const flow_conf_t *c = f->conf;
  void *headers = NULL;
  if (!f->cur.sb) {
    snprintf(line, size,
             "%s; not kept: dedup is off, so the pipeline has no store to "
             "park it in (set dead_letter_topic to keep such records)",
             reason);
    return -1;
  }
  store_parked_t p = {.timestamp_ms = -1};
  if (f->ops->payload)
    f->ops->payload(rec, &p, &headers);
  p.scope = c->scope;
  p.topic = f->ops->topic(rec);
  p.partition = f->ops->partition(rec);
  p.offset = f->ops->offset(rec);
  flow_event_id(f, rec, &p.event_id, &p.event_id_len);
  p.reason = reason;
  p.attempts = pt->attempts;
  p.parked_at_ms = c->wall_ms();
  int rc = store_batch_park(f->cur.sb, &p);
  g_free(headers);
  if (rc < 0) {
    snprintf(line, size,
             "%s; not kept: the %s store has no parking lot (set "
             "dead_letter_topic to keep such records)",
             reason, f->cur.sb->store->ops->name);
    return -1;
  }
  pt->parked_at = p.parked_at_ms;
  snprintf(line, size,
           "%s; parked in the store: see `khost parked list -c %s -p %s`",
           reason, c->config_path ? c->config_path : "FILE", c->pipeline);
  return 0;
}

/* The head failed for good (FAIL, retries used up, or no event ID): to the
 * dead-letter topic (the next flow_next() asks for the write), or parked
 * in the store and marked failed. */
static void fail_head(flow_t *f, flow_part_t *pt, const void *rec,
                      const char *reason, int counts_for_breaker, int64_t now) {
  char line[1024];
  if (counts_for_breaker && breaker_holds(f, pt, rec, now))
    return;
  snprintf(pt->reason, sizeof(pt->reason), "%s", reason);
  if (f->conf->dead_letter_topic) {
    pt->dead_letter = 1;
    return;
  }
  park(f, pt, rec, reason, line, sizeof(line));
  flow_log_record(f, KHOST_LOG_ERR, rec, line);
  failed(f, rec, reason, 0);
  finish(f, pt, STORE_OUTCOME_FAIL);
}

static void dead_letter_done(flow_t *f, flow_part_t *pt, int rc,
                             const char *err, int64_t now) {
  char line[768];
  void *rec = g_queue_peek_head(&pt->queue);
  pt->dl_flying = 0;
  if (!rec)
    return;
  if (rc < 0) {
    snprintf(line, sizeof(line),
             "cannot write to the dead-letter topic, the record waits: %s",
             err);
    flow_log_record(f, KHOST_LOG_WARNING, rec, line);
    pt->wait_until = now + backoff_ms(f->conf, 3);
    return;
  }
  snprintf(line, sizeof(line), "%s; sent to the dead-letter topic %s",
           pt->reason, f->conf->dead_letter_topic);
  flow_log_record(f, KHOST_LOG_ERR, rec, line);
  failed(f, rec, pt->reason, 1);
  finish(f, pt, STORE_OUTCOME_FAIL);
}

void flow_dead_letter_done(flow_t *f, flow_part_t *pt, int rc, const char *err,
                           int64_t now) {
  if (pt->owner)
    f->in_flight--;
  dead_letter_done(f, pt, rc, err, now);
  if (pt->owner)
    flow_lanes_idle(f, pt);
}

/* ------------------------------------------------------------ claims */

/* Is id claimed by a record of one of this member's pending batches (the
 * one being filled, or one in the air)? Its mark becomes durable before
 * this skip is committed, or neither is (every batch after one that
 * cannot be made durable is abandoned), so the copy is a duplicate now.
 * Linear, but only for in-flight IDs. */
static int batch_claims(const flow_t *f, const flow_batch_t *b,
                        const store_key_t *k) {
  for (guint i = 0; i < b->claims->len; i++) {
    const flow_claim_t *c = &g_array_index(b->claims, flow_claim_t, i);
    if (c->hash != k->hash)
      continue;
    store_key_t ck = flow_claim_key(f, c);
    if (ck.len == k->len && memcmp(ck.id, k->id, k->len) == 0)
      return 1;
  }
  return 0;
}

static int pending_claims(flow_t *f, const store_key_t *k) {
  if (batch_claims(f, &f->cur, k))
    return 1;
  for (size_t i = 0; i < flow_in_air(f); i++)
    if (batch_claims(f, flow_air_at(f, i), k))
      return 1;
  return 0;
}

/* Another member (or this one, for a head waiting for a retry) holds the
 * head's event ID, and its mark is not durable yet: skipping now could
 * commit past a record whose outcome is never recorded (the claim is given
 * back when that batch is abandoned or that partition lost). The head
 * waits until the claim is committed (then a duplicate) or released (then
 * handled here). */
static void wait_for_claim(flow_t *f, flow_part_t *pt, const void *rec,
                           int64_t now) {
  pt->started = 0;
  if (!pt->waits_claim)
    flow_log_record(f, KHOST_LOG_INFO, rec,
                    "in flight elsewhere (claimed, not durable yet): "
                    "waiting for its outcome");
  pt->waits_claim = 1;
  pt->wait_until = now + FLOW_CLAIM_RECHECK_MS;
}

/* The event IDs of the records queued from offset `from` on (max_batch
 * records at most) go to the store in one call, so that a shared store
 * answers their claims without a round trip each. Records of a
 * reprocessed replay range are left to claims of their own. The next
 * call is due when the head reaches the middle of these records
 * (ahead_next). */
static void claim_ahead(flow_t *f, flow_part_t *pt, int64_t from) {
  const flow_conf_t *c = f->conf;
  const void **ids = g_new(const void *, c->max_batch);
  size_t *lens = g_new(size_t, c->max_batch), n = 0, seen = 0;
  int64_t *offs = g_new(int64_t, c->max_batch), first = -1;
  const char *topic = NULL;
  int32_t partition = 0;
  for (GList *l = pt->queue.head; l && seen < c->max_batch; l = l->next) {
    const void *rec = l->data;
    if (f->ops->is_end(rec))
      continue;
    int64_t off = f->ops->offset(rec);
    if (off < from)
      continue;
    const store_range_t *r = replay_range(pt, off);
    first = seen == 0 ? off : first;
    pt->ahead_to = off + 1;
    seen++;
    topic = f->ops->topic(rec);
    partition = f->ops->partition(rec);
    offs[n] = off;
    if ((!r || r->mode != STORE_REPLAY_REPROCESS) &&
        flow_event_id(f, rec, &ids[n], &lens[n]))
      n++;
  }
  if (seen > 0)
    pt->ahead_next = first + (pt->ahead_to - first) / 2;
  store_claim_ahead(c->store, c->scope, topic, partition, ids, lens, offs, n);
  g_free(ids);
  g_free(lens);
  g_free(offs);
}

/* The offset of the last record queued, or -1. */
static int64_t queued_to(const flow_t *f, const flow_part_t *pt) {
  for (GList *l = pt->queue.tail; l; l = l->prev)
    if (!f->ops->is_end(l->data))
      return f->ops->offset(l->data);
  return -1;
}

/* Claims ahead for the head at offset off: those of the records from the
 * head on when it is past what was asked for; then, once it reaches the
 * middle of the last records asked for, those of the records queued
 * after them, so that a store that claims them meanwhile (the PostgreSQL
 * store's claimer) has them ready when the head gets there. */
static void claims_ahead(flow_t *f, flow_part_t *pt, int64_t off) {
  if (off >= pt->ahead_to)
    claim_ahead(f, pt, off);
  if (off >= pt->ahead_next && queued_to(f, pt) >= pt->ahead_to)
    claim_ahead(f, pt, pt->ahead_to);
}

/* The record after the head: its ID's hash now, and the store starts
 * fetching what its claim will read (a segment filter's line is a cache
 * and TLB miss, more than the hash; asked just before the claim, the
 * miss could not overlap anything). */
static void look_ahead(flow_t *f, flow_part_t *pt) {
  const void *id;
  size_t len;
  pt->next_len = 0;
  for (GList *l = pt->queue.head ? pt->queue.head->next : NULL; l;
       l = l->next) {
    if (f->ops->is_end(l->data))
      continue;
    if (!flow_event_id(f, l->data, &id, &len) || len > FLOW_NEXT_ID_MAX)
      return;
    pt->next_hash = id_hash(f->conf->scope, id, len);
    memcpy(pt->next_id, id, len);
    pt->next_len = len;
    store_prefetch(f->conf->store, pt->next_hash);
    return;
  }
}

/* First look at a head: no event ID, or already handled? Returns 1 to go
 * on to the plugin, 0 when the head is settled or waits. */
static int check_head(flow_t *f, flow_part_t *pt, const void *rec,
                      const void *id, size_t len, int64_t now) {
  const flow_conf_t *c = f->conf;
  pt->started = 1;
  if (!id) {
    atomic_fetch_add(&c->counts->no_id, 1);
    if (!c->missing_id_fail)
      return 1;
    fail_head(f, pt, rec, "record has no event ID (on_missing_id = fail)", 0,
              now);
    return 0;
  }
  if (!c->store)
    return 1;
  const store_range_t *r = replay_range(pt, f->ops->offset(rec));
  int again = r && r->mode == STORE_REPLAY_REPROCESS;
  if (!again && store_wants_ahead(c->store))
    claims_ahead(f, pt, f->ops->offset(rec));
  /* Reprocess: handled again once per replay, even across a restart in
   * the middle of it (marks newer than the replay count as seen). */
  /* The ID's one hash: the claim, the mark and a release all carry it
   * (taken with the record before when that looked ahead). */
  store_key_t k = {id, len,
                   len == pt->next_len && memcmp(id, pt->next_id, len) == 0
                       ? pt->next_hash
                       : id_hash(c->scope, id, len)};
  pt->hash = k.hash;
  if (store_wants_prefetch(c->store))
    look_ahead(f, pt);
  if (!store_claim_ready(c->store, c->scope, &k)) {
    /* its claim is on its way: the other partitions' heads go first */
    pt->started = 0;
    pt->wait_until = now + FLOW_AHEAD_WAIT_MS;
    return 0;
  }
  int claim = store_claim_ref(c->store, c->scope, &k,
                              again ? STORE_CLAIM_AGAIN : STORE_CLAIM,
                              again ? r->recorded_ms : 0, &pt->claim_ref);
  if (claim == STORE_IN_FLIGHT && !pending_claims(f, &k)) {
    wait_for_claim(f, pt, rec, now);
    return 0;
  }
  if (claim != STORE_NEW) {
    atomic_fetch_add(&c->counts->duplicates, 1);
    finish(f, pt, STORE_OUTCOME_OK);
    return 0;
  }
  pt->claimed = 1;
  return 1;
}

/* ------------------------------------------------------------ attempts */

/* A call that may crash the host is recorded before it is made (store.h,
 * "crash attempts"): a retry, a record an earlier process left calls of,
 * and after an unclean stop the first calls of each partition. A record
 * whose recorded calls are used up fails without another call. Returns 1
 * to go on to the plugin. */
static int guard_attempt(flow_t *f, flow_part_t *pt, const void *rec,
                         const void *id, size_t len, int64_t now) {
  const flow_conf_t *c = f->conf;
  char err[512], why[768];
  store_attempt_t a = {.scope = c->scope,
                       .event_id = id,
                       .event_id_len = len,
                       .topic = f->ops->topic(rec),
                       .partition = f->ops->partition(rec),
                       .offset = f->ops->offset(rec)};
  pt->recorded = 0;
  if (!pt->claimed)
    return 1;              /* no event ID to count by */
  if (pt->attempts == 0) { /* the first call in this process */
    int record =
        store_attempts(c->store, &a, (uint32_t)c->max_batch, &pt->attempts);
    if (pt->attempts > (uint32_t)c->retry_max) {
      snprintf(why, sizeof(why),
               "no outcome after %" PRIu32
               " recorded attempts: each asked for a retry or never "
               "returned (does the plugin crash the host on this record?)",
               pt->attempts);
      fail_head(f, pt, rec, why, 0, now);
      return 0;
    }
    if (!record)
      return 1;
  }
  a.attempts = pt->attempts + 1;
  pt->recorded = store_attempts_set(f->cur.sb, &a, err, sizeof(err)) == 0;
  if (!pt->recorded) {
    snprintf(why, sizeof(why),
             "cannot record the attempt before the call (called anyway): %s",
             err);
    flow_log_record(f, KHOST_LOG_WARNING, rec, why);
  }
  return 1;
}

/* A recorded call returned an outcome: it did not crash the host. */
static void attempt_returned(flow_t *f, const flow_job_t *job) {
  char err[512], why[768];
  store_attempt_t a = {.scope = f->conf->scope,
                       .event_id = job->event_id,
                       .event_id_len = job->event_id_len,
                       .topic = f->ops->topic(job->rec),
                       .partition = f->ops->partition(job->rec),
                       .offset = f->ops->offset(job->rec),
                       .attempts = 0};
  if (store_attempts_set(f->cur.sb, &a, err, sizeof(err)) == 0)
    return;
  snprintf(why, sizeof(why), "cannot clear the recorded attempts: %s", err);
  flow_log_record(f, KHOST_LOG_WARNING, job->rec, why);
}

/* ------------------------------------------------------------ the head */

int flow_head_ready(const flow_t *f, const flow_part_t *pt, int64_t now) {
  return pt->queue.length > 0 && pt->wait_until <= now && !pt->dl_flying &&
         !pt->busy && !f->hold && !f->breaker_open;
}

/* Take pt's head one step: a job for the adapter (FLOW_CALL or
 * FLOW_DEAD_LETTER), or FLOW_NONE when it was settled here or waits. */
int flow_step_head(flow_t *f, flow_part_t *pt, int64_t now, flow_job_t *job) {
  void *rec = g_queue_peek_head(&pt->queue);
  const void *id;
  size_t len;
  if (f->ops->is_end(rec)) { /* it only carries progress */
    finish(f, pt, STORE_OUTCOME_OK);
    return FLOW_NONE;
  }
  flow_event_id(f, rec, &id, &len);
  if (!pt->started && !check_head(f, pt, rec, id, len, now))
    return FLOW_NONE;
  *job = (flow_job_t){.part = pt,
                      .rec = rec,
                      .event_id = id,
                      .event_id_len = len,
                      .replay = replay_range(pt, f->ops->offset(rec)) != NULL};
  if (pt->dead_letter) {
    pt->dl_flying = 1;
    job->attempt = pt->attempts;
    job->reason = pt->reason;
    return FLOW_DEAD_LETTER;
  }
  if (!guard_attempt(f, pt, rec, id, len, now) || pt->dead_letter)
    return FLOW_NONE;
  job->attempt = ++pt->attempts;
  return FLOW_CALL;
}

int flow_next(flow_t *f, int64_t now, flow_job_t *job) {
  size_t n = f->parts->len;
  if (f->conf->concurrency > 1)
    return flow_lanes_next(f, now, job);
  for (int moved = 1; moved && n > 0;) {
    moved = 0;
    for (size_t k = 0; k < n; k++) {
      /* A batch never grows past max_batch outcomes. */
      if (f->cur.done->len >= f->conf->max_batch)
        return FLOW_NONE;
      flow_part_t *pt = f->parts->pdata[f->rr++ % n];
      if (!flow_head_ready(f, pt, now))
        continue;
      guint before = f->cur.done->len;
      int r = flow_step_head(f, pt, now, job);
      if (r != FLOW_NONE)
        return r;
      moved |= f->cur.done->len != before;
    }
  }
  return FLOW_NONE;
}

/* RETRY: wait at the head for a backoff, or fail once retries are used
 * up. reason: the plugin's, or NULL. */
static void retry(flow_t *f, flow_part_t *pt, void *rec, const char *reason,
                  int64_t now) {
  const flow_conf_t *c = f->conf;
  char why[512];
  atomic_fetch_add(&c->counts->retries, 1);
  if (pt->attempts <= (uint32_t)c->retry_max) {
    int64_t wait = backoff_ms(c, pt->attempts);
    snprintf(why, sizeof(why),
             "attempt %" PRIu32 " asks to retry%s%s; next in %" PRId64
             " ms (partition paused)",
             pt->attempts, reason ? ": " : "", reason ? reason : "", wait);
    flow_log_record(f, KHOST_LOG_WARNING, rec, why);
    pt->wait_until = now + wait;
    return;
  }
  snprintf(why, sizeof(why), "still failing after %" PRIu32 " attempts%s%s",
           pt->attempts, reason ? ": " : "", reason ? reason : "");
  fail_head(f, pt, rec, why, 1, now);
}

int flow_outcome(flow_t *f, const flow_job_t *job, khost_result_t res,
                 int64_t now) {
  return flow_outcome_why(f, job, res, NULL, now);
}

/* The plugin's answer for pt's head (a partition's or a lane's). */
static int outcome(flow_t *f, const flow_job_t *job, khost_result_t res,
                   const char *reason, int64_t now) {
  char why[512];
  const flow_conf_t *c = f->conf;
  flow_part_t *pt = job->part;
  if (pt->recorded && res != KHOST_RETRY)
    attempt_returned(f, job);
  pt->recorded = 0;
  switch (res) {
  case KHOST_OK:
    atomic_fetch_add(&c->counts->handled, 1);
    if (c->breaker)
      breaker_record(c->breaker, 0, now);
    finish(f, pt, STORE_OUTCOME_OK);
    return 0;
  case KHOST_FATAL:
    flow_log_record(f, KHOST_LOG_ERR, job->rec,
                    "the plugin reported a fatal error");
    return -1;
  case KHOST_RETRY:
    retry(f, pt, job->rec, reason, now);
    return 0;
  default:
    snprintf(why, sizeof(why), "the plugin failed the record%s%s",
             reason ? ": " : "", reason ? reason : "");
    fail_head(f, pt, job->rec, why, 1, now);
    return 0;
  }
}

int flow_outcome_why(flow_t *f, const flow_job_t *job, khost_result_t res,
                     const char *reason, int64_t now) {
  flow_part_t *pt = job->part;
  if (!pt->owner && !pt->orphan)
    return outcome(f, job, res, reason, now);
  if (flow_lanes_answered(f, pt, job->rec))
    return 0;
  int rc = outcome(f, job, res, reason, now);
  flow_lanes_idle(f, pt);
  return rc;
}

void flow_release_head(flow_t *f, flow_part_t *pt) {
  void *rec = g_queue_peek_head(&pt->queue);
  flow_claim_t c = {rec, pt->hash};
  store_key_t k;
  if (rec && pt->claimed) {
    k = flow_claim_key(f, &c);
    if (k.id)
      store_release(f->conf->store, f->conf->scope, &k);
  }
  pt->started = pt->claimed = pt->dead_letter = pt->dl_flying = 0;
  pt->waits_claim = pt->recorded = 0;
  pt->attempts = 0;
}

int64_t flow_ready_in(flow_t *f, int64_t now, int64_t cap) {
  int64_t t = cap;
  if (f->conf->concurrency > 1)
    return flow_lanes_ready_in(f, now, cap);
  for (guint i = 0; i < f->parts->len; i++) {
    const flow_part_t *pt = f->parts->pdata[i];
    if (flow_head_ready(f, pt, now))
      return 0;
    if (pt->queue.length > 0 && !pt->dl_flying && pt->wait_until - now < t)
      t = pt->wait_until - now;
  }
  return t < 0 ? 0 : t;
}

int flow_check_breaker(flow_t *f, int64_t now) {
  const flow_conf_t *c = f->conf;
  if (!c->breaker)
    return 0;
  int open = breaker_open_for(c->breaker, now) > 0;
  if (open != f->breaker_open) {
    f->breaker_open = open;
    log_msg(open ? KHOST_LOG_WARNING : KHOST_LOG_NOTICE, c->who,
            open ? "circuit breaker open: partitions paused"
                 : "circuit breaker closed: resuming");
  }
  return open;
}
