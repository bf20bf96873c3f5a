/*
 * Concurrency inside a partition (flow.h, concurrency > 1). A partition's
 * records are split by their ordering value (order_by) into lanes: a lane
 * is a flow_part_t of its own, so that flow.c's head rules (claims,
 * retries, dead letters, the breaker) apply to it unchanged. Each lane's
 * records go in offset order, one job out at a time; the lanes of every
 * partition share the member's concurrency.
 *
 * Outcomes now land out of order, so a partition keeps a slot per record
 * from its push until its outcome is durable, in offset order: the
 * position to commit is the lowest offset without a durable outcome (the
 * front of the slots), and the offset stored with a batch is the lowest
 * without an outcome at all. A RETRY waits at the head of its lane and
 * holds only that lane; the partition is not paused for it.
 *
 * Threads: the member's, as the rest of the flow core.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "flow_int.h"
#include "log.h"

/* A record of a partition with lanes, from its push until durable. */
typedef struct slot {
  int64_t offset;
  void *rec;     /* while queued or out; NULL once it has an outcome */
  uint8_t state; /* SLOT_* */
  uint8_t end;   /* a partition-end marker */
} slot_t;

enum { SLOT_WAITING = 0, SLOT_DONE, SLOT_DURABLE };

struct flow_lanes {
  GHashTable *by_value;  /* GBytes ordering value -> lane */
  flow_part_t *null_one; /* the lane of records without a value */
  GArray *slots;         /* slot_t, offset order; [first] is the oldest */
  guint first;
  guint waiting_from; /* no slot before it waits for an outcome */
  size_t queued;      /* records of the partition in its lanes */
};

void flow_lanes_init(flow_t *f, flow_part_t *pt) {
  (void)f;
  pt->lanes = g_new0(struct flow_lanes, 1);
  pt->lanes->by_value = g_hash_table_new_full(
      g_bytes_hash, g_bytes_equal, (GDestroyNotify)g_bytes_unref, NULL);
  pt->lanes->slots = g_array_new(FALSE, FALSE, sizeof(slot_t));
}

static size_t rec_size(const flow_t *f, const void *rec) {
  return f->ops->size ? f->ops->size(rec) : 0;
}

/* ------------------------------------------------------------ slots */

/* The slot of rec (slots are in offset order; a partition-end marker
 * may share its offset with the record after it), or NULL. */
static slot_t *slot_of(const flow_t *f, struct flow_lanes *L, const void *rec) {
  int64_t offset = f->ops->offset(rec);
  int end = f->ops->is_end(rec) != 0;
  guint lo = L->first, hi = L->slots->len;
  while (lo < hi) {
    guint mid = lo + (hi - lo) / 2;
    if (g_array_index(L->slots, slot_t, mid).offset < offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (; lo < L->slots->len; lo++) {
    slot_t *s = &g_array_index(L->slots, slot_t, lo);
    if (s->offset != offset)
      break;
    if (s->end == end)
      return s;
  }
  return NULL;
}

/* Forget the slots before first once they are half the array. */
static void slots_compact(struct flow_lanes *L) {
  if (L->first < 64 || L->first < L->slots->len / 2)
    return;
  g_array_remove_range(L->slots, 0, L->first);
  L->waiting_from = L->waiting_from > L->first ? L->waiting_from - L->first : 0;
  L->first = 0;
}

/* The next offset of a slot reached by the position. */
static int64_t slot_next(const slot_t *s) {
  return s->end ? s->offset : s->offset + 1;
}

/* The lowest offset without an outcome, or past the last slot. -1 when
 * the partition has no slot. */
static int64_t lowest_waiting(struct flow_lanes *L) {
  if (L->waiting_from < L->first)
    L->waiting_from = L->first;
  for (; L->waiting_from < L->slots->len; L->waiting_from++) {
    const slot_t *s = &g_array_index(L->slots, slot_t, L->waiting_from);
    if (s->state == SLOT_WAITING)
      return s->offset;
  }
  if (L->slots->len == L->first)
    return -1;
  return slot_next(&g_array_index(L->slots, slot_t, L->slots->len - 1));
}

void *flow_lanes_head(const flow_part_t *pt) {
  const struct flow_lanes *L = pt->lanes;
  for (guint i = L->first; i < L->slots->len; i++) {
    const slot_t *s = &g_array_index(L->slots, slot_t, i);
    if (s->state == SLOT_WAITING)
      return s->rec;
  }
  return NULL;
}

/* ------------------------------------------------------------ lanes */

/* The ordering value of rec (borrowed), or 0 for the null lane. */
static int order_value(const flow_t *f, const void *rec, const void **v,
                       size_t *len, int64_t *offset) {
  const flow_conf_t *c = f->conf;
  *v = NULL;
  *len = 0;
  switch (c->order_by) {
  case FLOW_ORDER_KEY:
    f->ops->key(rec, v, len);
    break;
  case FLOW_ORDER_HEADER:
    if (!f->ops->header(rec, c->order_header, v, len))
      *v = NULL;
    break;
  case FLOW_ORDER_EVENT_ID:
    flow_event_id(f, rec, v, len);
    break;
  case FLOW_ORDER_NONE: /* a lane of its own */
    *offset = f->ops->offset(rec);
    *v = offset;
    *len = sizeof(*offset);
    break;
  case FLOW_ORDER_PARTITION:
    break;
  }
  return *v != NULL;
}

static flow_part_t *lane_new(flow_part_t *pt, GBytes *value) {
  flow_part_t *lane = calloc(1, sizeof(*lane));
  lane->topic = pt->topic;
  lane->partition = pt->partition;
  lane->ranges = pt->ranges;
  lane->n_ranges = pt->n_ranges;
  lane->next = lane->committed = -1;
  lane->owner = pt;
  lane->lane_value = value;
  g_queue_init(&lane->queue);
  return lane;
}

/* rec's lane in pt, made when it has none. */
static flow_part_t *lane_for(flow_t *f, flow_part_t *pt, const void *rec) {
  struct flow_lanes *L = pt->lanes;
  const void *v;
  size_t len;
  int64_t offset;
  if (!order_value(f, rec, &v, &len, &offset)) {
    if (!L->null_one)
      L->null_one = lane_new(pt, NULL);
    return L->null_one;
  }
  GBytes *key = g_bytes_new_static(v, len);
  flow_part_t *lane = g_hash_table_lookup(L->by_value, key);
  g_bytes_unref(key);
  if (!lane) {
    key = g_bytes_new(v, len);
    lane = lane_new(pt, key);
    g_hash_table_insert(L->by_value, key, lane);
  }
  return lane;
}

static void lane_list(flow_t *f, flow_part_t *lane) {
  if (lane->ready_link)
    return;
  g_queue_push_tail(&f->ready, lane);
  lane->ready_link = f->ready.tail;
}

static void lane_unlist(flow_t *f, flow_part_t *lane) {
  if (!lane->ready_link)
    return;
  g_queue_delete_link(&f->ready, lane->ready_link);
  lane->ready_link = NULL;
}

/* A lane with nothing queued and nothing out goes. */
static void lane_free(flow_t *f, flow_part_t *lane) {
  struct flow_lanes *L = lane->owner ? lane->owner->lanes : NULL;
  lane_unlist(f, lane);
  if (L && lane == L->null_one)
    L->null_one = NULL;
  else if (L)
    g_hash_table_remove(L->by_value, lane->lane_value);
  free(lane);
}

void flow_lanes_idle(flow_t *f, flow_part_t *lane) {
  if (lane->busy || lane->dl_flying)
    return;
  if (lane->queue.length == 0)
    lane_free(f, lane);
  else
    lane_list(f, lane);
}

/* ------------------------------------------------------------ records */

/* Are the queues at 1/div of their bound (queue_max, queue_bytes)? */
static int full_at(const flow_t *f, size_t div) {
  const flow_conf_t *c = f->conf;
  return (c->queue_max && f->queued >= c->queue_max / div) ||
         (c->queue_bytes && f->queued_bytes >= c->queue_bytes / div);
}

int flow_lanes_push(flow_t *f, flow_part_t *pt, void *rec) {
  struct flow_lanes *L = pt->lanes;
  slot_t s = {.offset = f->ops->offset(rec), .rec = rec};
  if (f->ops->is_end(rec)) {
    /* It only carries progress: settled at once, and the position
     * reaches it once every record before it is durable. */
    s.end = 1;
    s.state = SLOT_DONE;
    s.rec = NULL;
    g_array_append_val(L->slots, s);
    g_ptr_array_add(f->cur.done, rec);
    return 0;
  }
  g_array_append_val(L->slots, s);
  /* A member whose workers stay busy still polls now and then, and each
   * such poll may bring a record past the full queue (flow_lanes_want_pause).
   */
  f->overfull = full_at(f, 1);
  flow_part_t *lane = lane_for(f, pt, rec);
  g_queue_push_tail_link(&lane->queue, flow_link_take(f, rec));
  f->queued++;
  f->queued_bytes += rec_size(f, rec);
  L->queued++;
  if (!lane->busy && !lane->dl_flying)
    lane_list(f, lane);
  return 0;
}

void flow_lanes_finished(flow_t *f, flow_part_t *lane, const void *rec,
                         flow_batch_t *b) {
  flow_part_t *pt = lane->owner;
  struct flow_lanes *L = pt->lanes;
  slot_t *s = slot_of(f, L, rec);
  if (s) {
    s->state = SLOT_DONE;
    s->rec = NULL;
  }
  L->queued--;
  f->queued_bytes -= rec_size(f, rec);
  /* Should this batch be the last durable one, a member assigned the
   * partition starts at its lowest record without an outcome. */
  int64_t next = lowest_waiting(L);
  if (b->sb && next >= 0)
    store_batch_set_offset(b->sb, f->conf->scope, pt->topic, pt->partition,
                           next);
}

void flow_lanes_durable(flow_t *f, flow_part_t *pt, const void *rec) {
  struct flow_lanes *L = pt->lanes;
  slot_t *s = slot_of(f, L, rec);
  if (s)
    s->state = SLOT_DURABLE;
  /* The position moves over the durable slots at the front only. */
  while (L->first < L->slots->len) {
    s = &g_array_index(L->slots, slot_t, L->first);
    if (s->state != SLOT_DURABLE)
      break;
    if (s->end && pt->next < 0 && f->conf->at_end)
      f->conf->at_end(f->conf->at_end_ctx, pt->topic, pt->partition, s->offset);
    else if (!s->end || pt->next >= 0)
      pt->next = slot_next(s) > pt->next ? slot_next(s) : pt->next;
    L->first++;
  }
  slots_compact(L);
}

void flow_lanes_abandoned(flow_t *f, flow_part_t *pt, const void *rec) {
  struct flow_lanes *L = pt->lanes;
  slot_t *s = slot_of(f, L, rec);
  if (!s || s->state != SLOT_DONE)
    return;
  s->state = SLOT_WAITING; /* delivered again: never passed */
  guint i = (guint)(s - &g_array_index(L->slots, slot_t, 0));
  if (i < L->waiting_from)
    L->waiting_from = i;
}

/* ------------------------------------------------------------ jobs */

/* Room for one more job: below the concurrency, and the batch (with the
 * jobs out, whose outcomes join it) below max_batch. */
static int room(const flow_t *f) {
  return f->in_flight < (size_t)f->conf->concurrency &&
         f->cur.done->len + f->in_flight < f->conf->max_batch;
}

int flow_lanes_next(flow_t *f, int64_t now, flow_job_t *job) {
  GList *l = f->ready.head;
  while (l && room(f)) {
    flow_part_t *lane = l->data;
    if (!flow_head_ready(f, lane, now)) {
      l = l->next;
      continue;
    }
    int r = flow_step_head(f, lane, now, job);
    if (r != FLOW_NONE) {
      lane_unlist(f, lane);
      lane->busy = r == FLOW_CALL;
      f->in_flight++;
      return r;
    }
    /* Settled here (a duplicate) or waiting: the same lane again while
     * its next head is ready, else the next lane. */
    GList *next = l->next;
    if (lane->queue.length == 0)
      lane_free(f, lane);
    else if (flow_head_ready(f, lane, now))
      next = l;
    l = next;
  }
  return FLOW_NONE;
}

int64_t flow_lanes_ready_in(flow_t *f, int64_t now, int64_t cap) {
  int64_t t = cap;
  if (f->in_flight >= (size_t)f->conf->concurrency)
    return cap; /* an answer comes first */
  for (GList *l = f->ready.head; l; l = l->next) {
    const flow_part_t *lane = l->data;
    if (flow_head_ready(f, lane, now))
      return 0;
    if (lane->wait_until - now < t)
      t = lane->wait_until - now;
  }
  return t < 0 ? 0 : t;
}

int flow_full(const flow_t *f) {
  return f->conf->concurrency > 1 && full_at(f, 1);
}

static int any_ready(const flow_t *f, int64_t now) {
  for (GList *l = f->ready.head; l; l = l->next)
    if (flow_head_ready(f, l->data, now))
      return 1;
  return 0;
}

/* A full queue is the normal state while the workers drain it: the member
 * then takes no more records from librdkafka (whose own queue is bounded)
 * rather than pause, since a resumed partition waits for the fetch in
 * flight (up to fetch.wait.max.ms). A full queue that cannot move
 * (nothing out, no lane ready: retries, a dead-letter write refused), or
 * one that a record came to while it was full (the member polls every
 * POLL_MS to keep its group membership, and calls that outlast that
 * would otherwise let the queue grow by a record each time), pauses the
 * partitions with records queued, until it is below half. */
int flow_lanes_want_pause(const flow_t *f, const flow_part_t *pt, int64_t now) {
  if (pt->lanes->queued == 0)
    return 0;
  if (pt->paused)
    return full_at(f, 2);
  return full_at(f, 1) &&
         (f->overfull || (f->in_flight == 0 && !any_ready(f, now)));
}

/* ------------------------------------------------------------ orphans */

/* Let an orphan's head go: its claim back, the record freed. */
static void orphan_free(flow_t *f, flow_part_t *lane) {
  void *rec = g_queue_pop_head(&lane->queue);
  flow_claim_t c = {rec, lane->hash};
  store_key_t k = {NULL, 0, 0};
  if (rec && lane->claimed)
    k = flow_claim_key(f, &c);
  if (k.id)
    store_release(f->conf->store, f->conf->scope, &k);
  if (rec)
    f->ops->free(rec);
  g_ptr_array_remove_fast(f->orphans, lane);
  free(lane);
}

flow_part_t *flow_part_owner(flow_part_t *pt) {
  return pt->owner ? pt->owner : pt;
}

int flow_job_dropped(const flow_job_t *job) {
  return job->part->orphan;
}

int flow_lanes_answered(flow_t *f, flow_part_t *lane, const void *rec) {
  (void)rec;
  f->in_flight--;
  lane->busy = 0;
  if (!lane->orphan)
    return 0;
  orphan_free(f, lane);
  return 1;
}

void flow_lanes_free_orphans(flow_t *f) {
  while (f->orphans->len > 0) {
    f->in_flight--;
    orphan_free(f, f->orphans->pdata[0]);
  }
}

/* Drop one lane of a partition that goes: a lane whose head is with the
 * plugin stays, as an orphan, until the answer comes. */
static void lane_drop(flow_t *f, flow_part_t *lane) {
  void *rec;
  lane_unlist(f, lane);
  if (lane->dl_flying)
    f->in_flight--; /* the adapter forgot the write */
  if (!lane->busy)
    flow_release_head(f, lane);
  for (guint i = lane->busy ? 1 : 0; i < lane->queue.length;) {
    rec = g_queue_pop_nth(&lane->queue, i);
    f->queued--;
    f->queued_bytes -= rec_size(f, rec);
    f->ops->free(rec);
  }
  if (!lane->busy) {
    free(lane);
    return;
  }
  rec = g_queue_peek_head(&lane->queue);
  f->queued--;
  f->queued_bytes -= rec_size(f, rec);
  lane->orphan = 1;
  lane->owner = NULL;
  lane->topic = NULL;
  lane->ranges = NULL;
  lane->n_ranges = 0;
  lane->lane_value = NULL;
  g_ptr_array_add(f->orphans, lane);
}

void flow_lanes_drop(flow_t *f, flow_part_t *pt) {
  struct flow_lanes *L = pt->lanes;
  GHashTableIter it;
  gpointer lane;
  g_hash_table_iter_init(&it, L->by_value);
  while (g_hash_table_iter_next(&it, NULL, &lane)) {
    g_hash_table_iter_remove(&it); /* its value goes with it */
    lane_drop(f, lane);
  }
  if (L->null_one)
    lane_drop(f, L->null_one);
  g_hash_table_destroy(L->by_value);
  g_array_free(L->slots, TRUE);
  g_free(L);
  pt->lanes = NULL;
}
