/*
 * The flow core: what happens to the records of a member's partitions,
 * with no Kafka client and no database in it (DESIGN.md's per-partition
 * rules). The adapter (member.c) feeds it records and the results of what
 * it asked for; the core answers what to do next:
 *
 *   flow_push()        a polled record joins its partition's queue
 *   flow_next()        the next ready head: call the plugin with it, or
 *                      write it to the dead-letter topic; duplicates and
 *                      records without an event ID are settled inside
 *   flow_outcome()     the plugin's answer (OK, RETRY, FAIL, FATAL)
 *   flow_dead_letter_done()  the broker's answer to a dead-letter write
 *   flow_batch_*()     the outcomes to make durable together (a store
 *                      batch), then the positions they let commit
 *   flow_drop()        a partition revoked or lost: its claims go back
 *
 * Records are opaque handles read through flow_rec_ops_t. Time is passed
 * in (monotonic ms) with every call that depends on it, and wall-clock
 * time comes from flow_conf_t.wall_ms, so that tests drive a fake clock.
 * The core never blocks and never asks the adapter to block: a head that
 * waits (retry backoff, a claim held elsewhere, the breaker) holds only
 * its partition and says until when (flow_ready_in()).
 *
 * Threads: a flow_t belongs to its member's thread; only the store
 * batches handed out by flow_batch_take_off() go to the durability thread.
 */
#ifndef KHOST_FLOW_H
#define KHOST_FLOW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "khost/plugin.h"
#include "store.h"

typedef struct flow flow_t;
typedef struct flow_part flow_part_t;
typedef struct flow_batch flow_batch_t;

/* How the core reads a record the adapter owns. */
typedef struct flow_rec_ops {
  const char *(*topic)(const void *rec);
  int32_t (*partition)(const void *rec);
  int64_t (*offset)(const void *rec);
  /* 1 for a partition-end marker: it only carries progress (its offset
   * is the partition's end). */
  int (*is_end)(const void *rec);
  void (*key)(const void *rec, const void **key, size_t *len);
  /* The last header named name; 0 when there is none. */
  int (*header)(const void *rec, const char *name, const void **value,
                size_t *len);
  void (*free)(void *rec);
  /* What a parked record keeps beyond the above: timestamp, key, value
   * and, in *headers (malloc'd with glib, the caller frees it), the
   * headers as parked_hdr.h encodes them. May be NULL: only the fields
   * above are parked. */
  void (*payload)(const void *rec, store_parked_t *p, void **headers);
  /* Bytes the record holds (its key and value), for the bound on what a
   * member queues with concurrency > 1 and on its batches in the air
   * (flow_conf_t.max_air_bytes). May be NULL (counted as 0). */
  size_t (*size)(const void *rec);
  /* rec has its outcome: drop what only its handling needed (the parsed
   * headers), while rec itself waits in its batch until it is durable.
   * Every op above still works on rec afterwards, at the cost of doing
   * again what was dropped. May be NULL. */
  void (*settled)(void *rec);
} flow_rec_ops_t;

/* What stays in offset order with concurrency > 1 (flow_conf_t.order_by):
 * records with one ordering value in one partition form a lane. */
typedef enum flow_order {
  FLOW_ORDER_KEY = 0,   /* the record key */
  FLOW_ORDER_HEADER,    /* the header order_header */
  FLOW_ORDER_EVENT_ID,  /* the event ID */
  FLOW_ORDER_PARTITION, /* the whole partition (one lane) */
  FLOW_ORDER_NONE       /* nothing: every record its own lane */
} flow_order_t;

/* The pipeline's counters, shared by its members. */
typedef struct flow_counts {
  _Atomic uint64_t handled, duplicates, failed, retries, no_id, breaker_trips;
} flow_counts_t;

typedef struct flow_conf {
  const char *who;        /* for log lines: the member */
  const char *pipeline;   /* for the pipeline's own lines (the breaker) */
  const char *eid_header; /* the event ID's header; NULL: the key */
  int missing_id_fail;    /* no event ID: fail (1) or process (0) */
  int retry_max;          /* RETRY answers before the record fails */
  int64_t retry_backoff_ms, retry_backoff_max_ms;
  size_t max_batch;     /* outcomes per batch at most */
  int64_t linger_ms;    /* a batch is due once its oldest waited this */
  int64_t pause_min_ms; /* shorter waits do not pause their partition */
  /* NULL: failures are parked in the store (or, without one, logged),
   * and marked */
  const char *dead_letter_topic;
  const char *config_path; /* for the `khost parked` hint; may be NULL */
  breaker_t *breaker;      /* NULL: none */
  double breaker_ratio;    /* for its log line */
  int breaker_cooldown_ms;
  store_t *store; /* NULL: dedup off */
  uint32_t scope; /* the pipeline's, in store */
  flow_counts_t *counts;
  int64_t (*wall_ms)(void); /* marks' handled_at (ms since the epoch) */
  /* A partition found at its end with nothing read since it was assigned:
   * consumed up to offset (--exit-at-end). May be NULL. */
  void (*at_end)(void *ctx, const char *topic, int32_t partition,
                 int64_t offset);
  void *at_end_ctx;
  /* A record failed for good: logged and marked (dead_lettered 0), or
   * written to the dead-letter topic (1). May be NULL. */
  void (*failed)(void *ctx, const char *topic, int32_t partition,
                 int64_t offset, const char *reason, int dead_lettered);
  void *failed_ctx;
  /* A batch's store batch was made durable or abandoned (the state
   * overlay of its writes goes). May be NULL. */
  void (*batch_end)(void *ctx, store_batch_t *sb);
  void *batch_end_ctx;
  /* Concurrency inside a partition (flow_lanes.c). 1 (or 0): one head per
   * partition, one job at a time. N > 1: up to N jobs handed out at once,
   * at most one per lane (order_by); a record without an ordering value
   * (a null key, a missing header) joins its partition's null lane. */
  int concurrency;
  flow_order_t order_by;
  const char *order_header; /* FLOW_ORDER_HEADER: the header's name */
  /* With concurrency > 1: records and bytes queued per member before its
   * partitions want a pause (0: no bound). */
  size_t queue_max, queue_bytes;
  /* Batches in the air at most while the next one fills (0: the default,
   * FLOW_AIR_DEFAULT; at most FLOW_AIR_MAX). */
  unsigned max_in_air;
  /* Record bytes (flow_rec_ops_t.size) the batches in the air may hold
   * before no other takes off (one always may); 0: no bound. */
  size_t max_air_bytes;
} flow_conf_t;

#define FLOW_AIR_DEFAULT 3
#define FLOW_AIR_MAX 4

/* Opens the store batches (the one being filled and one per batch that
 * may be in the air). Errors name the member. conf and ops must outlive
 * the flow. */
int flow_open(flow_t **out, const flow_conf_t *conf, const flow_rec_ops_t *ops,
              char *err, size_t errlen);
/* Free queued records and batches; claims still held are released. */
void flow_close(flow_t *f);

/* ------------------------------------------------------------ partitions */

/* Own a partition (its replayed ranges are read from the store). */
flow_part_t *flow_assign(flow_t *f, const char *topic, int32_t partition);
flow_part_t *flow_find(flow_t *f, const char *topic, int32_t partition);
/* Forget a partition, revoked or lost: its queued records go to the next
 * owner, its head's claim is given back. Outcomes of it in the batches
 * stay (the adapter decides whether they are made durable first). Its
 * user pointer must be taken care of before. */
void flow_drop(flow_t *f, flow_part_t *pt);
size_t flow_parts(const flow_t *f);
flow_part_t *flow_part_at(const flow_t *f, size_t i);
const char *flow_part_topic(const flow_part_t *pt);
int32_t flow_part_partition(const flow_part_t *pt);
/* The oldest record of the partition without an outcome yet, or NULL. */
void *flow_part_head(const flow_part_t *pt);
/* The partition of a head: pt itself, or the partition of a lane (a
 * job's part with concurrency > 1). */
flow_part_t *flow_part_owner(flow_part_t *pt);
/* The adapter's own pointer per partition (a dead-letter write). */
void *flow_part_user(const flow_part_t *pt);
void flow_part_set_user(flow_part_t *pt, void *user);
/* Should the partition be paused now (its head waits long, the batch is
 * held, or the breaker is open)? */
int flow_part_wants_pause(const flow_t *f, const flow_part_t *pt, int64_t now);
int flow_part_paused(const flow_part_t *pt);
void flow_part_set_paused(flow_part_t *pt, int paused);
/* The position to commit: the next offset after the durable outcomes, or
 * -1 when there is none (or, unless all, when it is committed already).
 * With concurrency > 1 outcomes land out of order: the position is the
 * lowest offset without a durable outcome. */
int64_t flow_part_position(const flow_part_t *pt, int all);
/* A commit of the partition up to offset was acknowledged. Positions only
 * move forward. */
void flow_committed(flow_t *f, const char *topic, int32_t partition,
                    int64_t offset);

/* ------------------------------------------------------------ records */

/* Queue a record of an owned partition (the flow owns it then); -1 when
 * the partition is not owned here (the caller still owns the record). */
int flow_push(flow_t *f, void *rec);
/* Records queued in all partitions. */
size_t flow_queued(const flow_t *f);
/* Jobs handed out without an answer yet (concurrency > 1; else 0). */
size_t flow_in_flight(const flow_t *f);
/* concurrency > 1: the queues hold queue_max records or queue_bytes (take
 * no more for now). 0 with concurrency 1. */
int flow_full(const flow_t *f);

enum {
  FLOW_NONE = 0,   /* nothing ready now (see flow_ready_in()) */
  FLOW_CALL = 1,   /* call the plugin with job->rec */
  FLOW_DEAD_LETTER /* write job->rec to the dead-letter topic */
};

typedef struct flow_job {
  flow_part_t *part;
  void *rec; /* owned by the flow */
  const void *event_id;
  size_t event_id_len;
  uint32_t attempt;   /* this call's, from 1 (higher after a crash) */
  int replay;         /* the record is in a replayed range */
  const char *reason; /* FLOW_DEAD_LETTER: why it failed */
} flow_job_t;

/* The next job, round robin over the partitions, at most one per ready
 * head: FLOW_NONE when no head is ready or the batch is full. With
 * concurrency > 1 the adapter asks again before answering: up to
 * concurrency jobs are out at once, at most one per lane, and the batch
 * counts the jobs out (it never grows past max_batch outcomes). */
int flow_next(flow_t *f, int64_t now, flow_job_t *job);
/* The plugin's answer to job (a FLOW_CALL). Returns -1 for KHOST_FATAL
 * (the pipeline stops; nothing past it is committed), else 0. A job of a
 * partition dropped while it was out is only let go (its claim given
 * back, nothing of it batched). */
int flow_outcome(flow_t *f, const flow_job_t *job, khost_result_t res,
                 int64_t now);
/* 1 when job's partition was dropped while the job was out: its answer
 * will only let it go. */
int flow_job_dropped(const flow_job_t *job);
/* flow_outcome() with the plugin's reason for a FAIL or RETRY (NULL:
 * none): it joins the log line and the failure's reason. */
int flow_outcome_why(flow_t *f, const flow_job_t *job, khost_result_t res,
                     const char *reason, int64_t now);
/* The answer to a FLOW_DEAD_LETTER job of pt: written (0) or refused (-1,
 * err says why: it is tried again after a backoff). */
void flow_dead_letter_done(flow_t *f, flow_part_t *pt, int rc, const char *err,
                           int64_t now);
/* Milliseconds until some head is ready (0: now; cap when none waits). */
int64_t flow_ready_in(flow_t *f, int64_t now, int64_t cap);
/* Notice the breaker opening and closing (logged); 1 while it is open. */
int flow_check_breaker(flow_t *f, int64_t now);

/* ------------------------------------------------------------ batches */

/* The batch being filled. */
flow_batch_t *flow_cur(flow_t *f);
/* The batches in the air (taken off, not yet durable or abandoned), the
 * oldest (NULL when none), the i-th oldest, and whether another may take
 * off (a free slot, and max_air_bytes not reached). */
size_t flow_in_air(const flow_t *f);
flow_batch_t *flow_air(flow_t *f);
flow_batch_t *flow_air_at(flow_t *f, size_t i);
int flow_air_room(const flow_t *f);
/* Outcomes in the batch. */
size_t flow_batch_len(const flow_batch_t *b);
/* Outcomes in the air, in all batches, and the bytes of their records. */
size_t flow_air_len(const flow_t *f);
size_t flow_air_bytes(const flow_t *f);
/* The store batch with its marks (NULL with dedup off). */
store_batch_t *flow_batch_store(flow_batch_t *b);
/* Is the current batch due (max_batch outcomes, or lingered enough)? */
int flow_batch_due(flow_t *f, int64_t now);
/* The current batch goes in the air, the newest there (flow_air_room()
 * must be 1): its store batch is returned for the durability thread. */
store_batch_t *flow_batch_take_off(flow_t *f);
/* b is durable. Positions only advance in order: the records of b and of
 * every durable batch after it go once every batch before b is durable
 * too (b waits in the air until then). b may be the current batch only
 * while nothing is in the air. */
void flow_batch_durable(flow_t *f, flow_batch_t *b);
/* b will not be made durable, and so no batch after it either (their
 * positions would pass b's records): the claims of b, of every later
 * batch in the air and of the current one go back, and their records are
 * delivered again (to whoever owns their partitions then). Batches in the
 * air must not be in a durability thread's hands any more. */
void flow_batch_abandon(flow_t *f, flow_batch_t *b);
/* While held, no head is ready and every partition wants a pause (a
 * batch cannot be made durable). */
void flow_set_hold(flow_t *f, int hold);
int flow_held(const flow_t *f);

#endif
