/*
 * Inside the flow core: the state shared by flow.c (what happens to a
 * partition's head record) and flow_part.c (partitions, batches,
 * positions). Nothing else includes this.
 */
#ifndef KHOST_FLOW_INT_H
#define KHOST_FLOW_INT_H

#include <glib.h>

#include "flow.h"

/* One owned partition: the records delivered for it and not yet handled,
 * in offset order, and what its head record is waiting for. */
struct flow_part {
  char *topic;
  int32_t partition;
  GQueue queue;       /* records, oldest first */
  int started;        /* the head passed the dedup check */
  int claimed;        /* ... and its event ID is claimed */
  int recorded;       /* its call in progress was recorded (attempts) */
  uint32_t attempts;  /* plugin calls made for the head */
  int dead_letter;    /* the head failed: only its dead-letter write is left */
  int dl_flying;      /* ... and that write is with the adapter */
  int waits_claim;    /* the head's event ID is in flight elsewhere */
  char reason[512];   /* why it failed */
  int64_t wait_until; /* monotonic ms: the head is not tried before */
  int64_t parked_at;  /* the head was parked then (its mark's time); 0 */
  int paused;         /* paused by the adapter */
  int64_t next;       /* durable next offset to commit; -1 none yet */
  int64_t committed;  /* last next offset a commit was acknowledged for */
  store_range_t *ranges; /* replayed ranges (khost replay), or NULL */
  size_t n_ranges;
  int64_t ahead_to; /* records below this offset were claimed ahead */
  void *user;       /* the adapter's */
};

/* Outcomes on their way to being durable: the records, the claimed ones
 * among them, and the marks of those. */
struct flow_batch {
  store_batch_t *sb; /* the marks; NULL when dedup is off */
  GPtrArray *done;   /* records with an outcome, not yet durable */
  GPtrArray *claims; /* of those, the ones whose event ID was claimed */
};

struct flow {
  const flow_conf_t *conf;
  const flow_rec_ops_t *ops;
  GPtrArray *parts;      /* flow_part_t *: the partitions owned */
  flow_part_t *last;     /* the partition of the last record queued */
  size_t queued;         /* records in all queues */
  size_t rr;             /* where the next look for a ready head starts */
  flow_batch_t cur;      /* the batch being filled */
  flow_batch_t air;      /* the batch in the air, or empty */
  int hold;              /* the batch cannot be made durable: all paused */
  int breaker_open;      /* the pipeline's circuit breaker is open */
  int64_t first_done_at; /* when the oldest outcome of cur was reached */
};

/* flow.c */
int flow_event_id(const flow_t *f, const void *rec, const void **id,
                  size_t *len);
void flow_log_record(const flow_t *f, int level, const void *rec,
                     const char *what);
/* Give back the claim of pt's head, which will not get an outcome here. */
void flow_release_head(flow_t *f, flow_part_t *pt);

#endif
