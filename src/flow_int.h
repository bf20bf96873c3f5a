/*
 * Inside the flow core: the state shared by flow.c (what happens to a
 * partition's head record) and flow_part.c (partitions, batches,
 * positions). Nothing else includes this.
 */
#ifndef KHOST_FLOW_INT_H
#define KHOST_FLOW_INT_H

#include <glib.h>

#include "flow.h"

/* The longest ID whose hash is taken a record early (flow_part). */
#define FLOW_NEXT_ID_MAX 64

/* One owned partition: the records delivered for it and not yet handled,
 * in offset order, and what its head record is waiting for. */
struct flow_part {
  char *topic;
  int32_t partition;
  GQueue queue;       /* records, oldest first */
  int started;        /* the head passed the dedup check */
  int claimed;        /* ... and its event ID is claimed */
  uint64_t hash;      /* the claimed ID's store_key_t hash */
  void *claim_ref;    /* the claim's store_claim_ref(), or NULL */
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
  int64_t ahead_to;   /* records below this offset were claimed ahead */
  int64_t ahead_next; /* a head from here on asks for those from ahead_to */
  /* The ID of the record after the head and its hash, taken (and the
   * store's lines for it fetched) while the head was checked: that
   * record's check reuses the hash when its ID has these bytes. */
  uint8_t next_id[FLOW_NEXT_ID_MAX];
  size_t next_len; /* 0: none */
  uint64_t next_hash;
  void *user; /* the adapter's */
  /* Concurrency > 1 (flow_lanes.c). A partition has lanes; a lane is a
   * flow_part_t of its own whose queue and head fields above are the
   * lane's, with owner its partition (NULL once that partition was
   * dropped while the lane's head was out: an orphan). */
  struct flow_lanes *lanes; /* a partition split into lanes, or NULL */
  flow_part_t *owner;       /* a lane: its partition */
  GBytes *lane_value;       /* a lane: its ordering value (NULL: null) */
  GList *ready_link;        /* a lane in f->ready, or NULL */
  int busy;                 /* a lane: its head is with the plugin */
  int orphan;               /* a lane: its partition went meanwhile */
};

/* A record of a batch whose event ID was claimed, and the ID's hash. */
typedef struct flow_claim {
  void *rec;
  uint64_t hash;
} flow_claim_t;

/* Outcomes on their way to being durable: the records, the claimed ones
 * among them, and the marks of those. */
struct flow_batch {
  store_batch_t *sb; /* the marks; NULL when dedup is off */
  GPtrArray *done;   /* records with an outcome, not yet durable */
  GArray *claims;    /* flow_claim_t: of those, the claimed ones */
  int durable;       /* in the air, durable, waiting for older batches */
  size_t bytes;      /* in the air: its records' bytes */
};

struct flow {
  const flow_conf_t *conf;
  const flow_rec_ops_t *ops;
  GPtrArray *parts;  /* flow_part_t *: the partitions owned */
  flow_part_t *last; /* the partition of the last record queued */
  size_t queued;     /* records in all queues */
  size_t rr;         /* where the next look for a ready head starts */
  flow_batch_t cur;  /* the batch being filled */
  /* The batches in the air, oldest first from air_head (a ring of
   * air_max, at most FLOW_AIR_MAX, slots). */
  flow_batch_t air[FLOW_AIR_MAX];
  unsigned air_head, air_n, air_max;
  size_t air_bytes;      /* of the records in the air */
  int hold;              /* the batch cannot be made durable: all paused */
  int breaker_open;      /* the pipeline's circuit breaker is open */
  int64_t first_done_at; /* when the oldest outcome of cur was reached */
  /* Concurrency > 1 (flow_lanes.c). */
  GQueue ready;        /* lanes with records and no job out, oldest first */
  size_t in_flight;    /* jobs handed out, not answered yet */
  size_t queued_bytes; /* what the queued records hold */
  int overfull;        /* the last record came while the queue was full */
  GPtrArray *orphans;  /* lanes whose partition went while their job was out */
  /* Links of partition queues whose record went, for the next records
   * (at most FLOW_SPARE_LINKS): a record's link is allocated when it is
   * queued and freed when it has its outcome, up to a batch later, which
   * the allocator's per-thread cache cannot serve. */
  GList *spare_links;
  size_t n_spare_links;
};

#define FLOW_SPARE_LINKS 4096

/* flow_part.c: a link of a partition queue taken from, or given back to,
 * the spares. */
GList *flow_link_take(flow_t *f, void *rec);
void *flow_link_give(flow_t *f, GList *link);

/* flow.c */
int flow_event_id(const flow_t *f, const void *rec, const void **id,
                  size_t *len);
/* rec's event ID with its hash (the caller knows it has one). */
store_key_t flow_claim_key(const flow_t *f, const flow_claim_t *c);
void flow_log_record(const flow_t *f, int level, const void *rec,
                     const char *what);
/* Give back the claim of pt's head, which will not get an outcome here. */
void flow_release_head(flow_t *f, flow_part_t *pt);
/* One step of pt's head (a partition's, or a lane's): a job, or FLOW_NONE
 * when it was settled here or waits. */
int flow_step_head(flow_t *f, flow_part_t *pt, int64_t now, flow_job_t *job);
int flow_head_ready(const flow_t *f, const flow_part_t *pt, int64_t now);

/* flow_lanes.c: concurrency > 1 */
void flow_lanes_init(flow_t *f, flow_part_t *pt);
void flow_lanes_drop(flow_t *f, flow_part_t *pt);
void flow_lanes_free_orphans(flow_t *f);
int flow_lanes_push(flow_t *f, flow_part_t *pt, void *rec);
int flow_lanes_next(flow_t *f, int64_t now, flow_job_t *job);
int64_t flow_lanes_ready_in(flow_t *f, int64_t now, int64_t cap);
/* A lane's head is settled (in batch b): its partition learns it. */
void flow_lanes_finished(flow_t *f, flow_part_t *lane, const void *rec,
                         flow_batch_t *b);
/* An answer came for lane's job: 1 when the lane is an orphan (the answer
 * is dropped, the lane freed), 0 to go on. */
int flow_lanes_answered(flow_t *f, flow_part_t *lane, const void *rec);
/* The lane's job is answered and its head moved on: ready again, or
 * freed when it has nothing left. */
void flow_lanes_idle(flow_t *f, flow_part_t *lane);
/* rec of pt (with lanes) is durable, or will not be (abandoned). */
void flow_lanes_durable(flow_t *f, flow_part_t *pt, const void *rec);
void flow_lanes_abandoned(flow_t *f, flow_part_t *pt, const void *rec);
void *flow_lanes_head(const flow_part_t *pt);
int flow_lanes_want_pause(const flow_t *f, const flow_part_t *pt, int64_t now);

#endif
