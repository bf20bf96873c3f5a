/*
 * Inside a member: the state shared by member.c (the loop, polling,
 * pausing, rebalances, commits) and dispatch.c (what happens to one
 * record). Nothing else includes this.
 *
 * Threads: all of it belongs to the member's thread, except the busy_*
 * fields, which the pipeline's watchdog reads.
 */
#ifndef KHOST_MEMBER_INT_H
#define KHOST_MEMBER_INT_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdint.h>

#include "dead_letter.h"
#include "durable.h"
#include "pipeline.h"
#include "plugin_loader.h"
#include "store.h"

/* One owned partition: the records delivered for it and not yet handled,
 * in offset order, and what its head record is waiting for. */
typedef struct part {
  char *topic;
  int32_t partition;
  GQueue queue;      /* rd_kafka_message_t *, oldest first */
  int started;       /* the head passed the dedup check */
  int claimed;       /* ... and its event ID is claimed */
  uint32_t attempts; /* plugin calls made for the head */
  int dead_letter;   /* the head failed: only its dead-letter write is left */
  dead_letter_write_t *dlw; /* that write, while in flight */
  int waits_claim;          /* the head's event ID is in flight elsewhere */
  char reason[192];         /* why it failed */
  int64_t wait_until;       /* monotonic ms: the head is not tried before */
  int paused;               /* paused by this member */
  int64_t next;             /* durable next offset to commit; -1 none yet */
  int64_t committed;        /* last next offset a commit was acknowledged for */
  store_range_t *ranges;    /* replayed ranges (khost replay), or NULL */
  size_t n_ranges;
} part_t;

/* Outcomes on their way to being durable: the records, the claimed ones
 * among them, and the marks of those. */
typedef struct batch {
  store_batch_t *writer; /* the marks; NULL when dedup is off */
  GPtrArray *done;       /* messages with an outcome, not yet durable */
  GPtrArray *claims;     /* of those, the ones whose event ID was claimed */
} batch_t;

struct member {
  pipeline_t *p;
  int index;
  char who[160];
  pthread_t thread;
  rd_kafka_t *rk;
  plugin_instance_t *inst;
  dead_letter_t *dlq; /* NULL without a dead-letter topic */

  GPtrArray *parts;           /* part_t *: the partitions owned */
  part_t *last;               /* the partition of the last record queued */
  size_t queued;              /* records in all queues */
  size_t rr;                  /* where the next round of handling starts */
  batch_t cur;                /* the batch being handled */
  int hold;                   /* the batch cannot be made durable: all paused */
  int breaker_open;           /* the pipeline's circuit breaker is open */
  int64_t recommit_at;        /* a commit failed: when to send it again */
  rd_kafka_queue_t *commit_q; /* the result of the async commit */
  int commit_in_flight;       /* an async commit awaits its result */
  int commit_behind;          /* a commit waits for the one in flight */
  int closing;                /* rd_kafka_consumer_close() is under way */
  int64_t first_done_at; /* when the oldest unsettled outcome was reached */

  /* With dedup on, a batch is made durable (its store transaction) on
   * the member's durability thread (durable.h) while the member handles
   * the next: at most one batch is in the air, and its offsets are
   * committed only once it has landed. */
  batch_t air;
  durable_t *durable; /* NULL with dedup off */
  int flying;         /* air is in the air */

  /* What handle() is busy with, for the watchdog (0: idle). */
  _Atomic int64_t busy_since;
  _Atomic int32_t busy_partition;
  _Atomic int64_t busy_offset;
  const char *_Atomic busy_topic;
};

/* Outcomes of dispatching a partition's head record. */
enum {
  DISPATCH_DONE, /* it has an outcome: moved to m->done */
  DISPATCH_WAIT, /* it waits (retry backoff, dead-letter, breaker) */
  DISPATCH_STOP  /* the pipeline stops (FATAL) */
};

/* Monotonic ms, coarse (a few ms): cheap enough to take per record. */
int64_t member_coarse_ms(void);

/* dispatch.c */
int dispatch_head(member_t *m, part_t *pt);
/* Give back the claim of a head that will not get an outcome here. */
void dispatch_release_head(member_t *m, part_t *pt);
/* Wait up to ms for the dead-letter writes in flight and finish the heads
 * the broker acknowledged: before partitions go, so that a record already
 * on the dead-letter topic is marked rather than written again by the
 * next owner. */
void dispatch_land_dead_letters(member_t *m, int64_t ms);
/* Give back the claims of a batch whose marks will not be written. */
void dispatch_release(member_t *m, batch_t *b);
int64_t member_now_ms(void);

#endif
