/*
 * The flow core's partitions, batches and positions (flow.h): which
 * records a member owns, which outcomes wait to be durable, and which
 * offsets may be committed. A position moves only when the batch holding
 * its outcomes is durable, and only forward.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_int.h"
#include "log.h"

static int batch_init(flow_t *f, flow_batch_t *b, char *err, size_t errlen) {
  b->done = g_ptr_array_new();
  b->claims = g_array_new(FALSE, FALSE, sizeof(flow_claim_t));
  return f->conf->store ? store_batch_open(f->conf->store, &b->sb, err, errlen)
                        : 0;
}

int flow_open(flow_t **out, const flow_conf_t *conf, const flow_rec_ops_t *ops,
              char *err, size_t errlen) {
  flow_t *f = calloc(1, sizeof(*f));
  char why[512] = "";
  f->conf = conf;
  f->ops = ops;
  f->parts = g_ptr_array_new();
  f->orphans = g_ptr_array_new();
  f->air_max = conf->max_in_air ? conf->max_in_air : FLOW_AIR_DEFAULT;
  if (f->air_max > FLOW_AIR_MAX)
    f->air_max = FLOW_AIR_MAX;
  int rc = batch_init(f, &f->cur, why, sizeof(why));
  for (unsigned i = 0; rc == 0 && i < f->air_max; i++)
    rc = batch_init(f, &f->air[i], why, sizeof(why));
  if (rc != 0) {
    snprintf(err, errlen, "%s: %s", conf->who, why);
    flow_close(f);
    return -1;
  }
  *out = f;
  return 0;
}

static void abandon_one(flow_t *f, flow_batch_t *b);

static void batch_free(flow_t *f, flow_batch_t *b) {
  if (!b->done)
    return;
  abandon_one(f, b);
  store_batch_close(b->sb);
  g_ptr_array_free(b->done, TRUE);
  g_array_free(b->claims, TRUE);
}

void flow_close(flow_t *f) {
  if (!f)
    return;
  while (f->parts->len > 0)
    flow_drop(f, f->parts->pdata[0]);
  flow_lanes_free_orphans(f);
  g_ptr_array_free(f->orphans, TRUE);
  /* Newest first, as flow_batch_abandon() goes. */
  if (f->air_n > 0)
    flow_batch_abandon(f, flow_air(f));
  batch_free(f, &f->cur);
  for (unsigned i = 0; i < FLOW_AIR_MAX; i++)
    batch_free(f, &f->air[i]);
  g_ptr_array_free(f->parts, TRUE);
  g_list_free(f->spare_links);
  free(f);
}

GList *flow_link_take(flow_t *f, void *rec) {
  GList *l = f->spare_links;
  if (!l)
    l = g_list_alloc();
  else {
    f->spare_links = l->next;
    f->n_spare_links--;
  }
  *l = (GList){.data = rec};
  return l;
}

void *flow_link_give(flow_t *f, GList *link) {
  void *rec = link->data;
  if (f->n_spare_links >= FLOW_SPARE_LINKS) {
    g_list_free_1(link);
    return rec;
  }
  *link = (GList){.next = f->spare_links};
  f->spare_links = link;
  f->n_spare_links++;
  return rec;
}

/* ------------------------------------------------------------ partitions */

flow_part_t *flow_find(flow_t *f, const char *topic, int32_t partition) {
  /* Records come in runs of one partition: try the last one first. */
  if (f->last && f->last->partition == partition &&
      strcmp(f->last->topic, topic) == 0)
    return f->last;
  for (guint i = 0; i < f->parts->len; i++) {
    flow_part_t *pt = f->parts->pdata[i];
    if (pt->partition == partition && strcmp(pt->topic, topic) == 0)
      return pt;
  }
  return NULL;
}

/* The replayed ranges of a newly owned partition (khost replay). */
static void load_ranges(flow_t *f, flow_part_t *pt) {
  const flow_conf_t *c = f->conf;
  char err[512];
  if (!c->store)
    return;
  if (store_replay_ranges(c->store, c->scope, pt->topic, pt->partition,
                          &pt->ranges, &pt->n_ranges, err, sizeof(err)) != 0)
    log_msg(KHOST_LOG_WARNING, c->who,
            "%s [%" PRId32 "]: cannot read replayed ranges: %s", pt->topic,
            pt->partition, err);
  else if (pt->n_ranges > 0)
    log_msg(KHOST_LOG_INFO, c->who,
            "%s [%" PRId32 "]: %zu replayed range(s), newest [%" PRId64
            ", %" PRId64 ") %s",
            pt->topic, pt->partition, pt->n_ranges, pt->ranges[0].from,
            pt->ranges[0].to,
            pt->ranges[0].mode == STORE_REPLAY_REPROCESS ? "reprocess"
                                                         : "skip");
}

flow_part_t *flow_assign(flow_t *f, const char *topic, int32_t partition) {
  flow_part_t *pt = flow_find(f, topic, partition);
  if (pt)
    return pt;
  pt = calloc(1, sizeof(*pt));
  pt->topic = strdup(topic);
  pt->partition = partition;
  pt->next = pt->committed = -1;
  g_queue_init(&pt->queue);
  load_ranges(f, pt);
  if (f->conf->concurrency > 1)
    flow_lanes_init(f, pt);
  g_ptr_array_add(f->parts, pt);
  return pt;
}

void flow_drop(flow_t *f, flow_part_t *pt) {
  void *rec;
  if (f->conf->store)
    store_part_dropped(f->conf->store, f->conf->scope, pt->topic,
                       pt->partition);
  if (pt->lanes)
    flow_lanes_drop(f, pt);
  flow_release_head(f, pt);
  while ((rec = g_queue_pop_head(&pt->queue))) {
    f->ops->free(rec);
    f->queued--;
  }
  g_ptr_array_remove(f->parts, pt);
  if (f->last == pt)
    f->last = NULL;
  free(pt->ranges);
  free(pt->topic);
  free(pt);
}

size_t flow_parts(const flow_t *f) {
  return f->parts->len;
}

flow_part_t *flow_part_at(const flow_t *f, size_t i) {
  return f->parts->pdata[i];
}

const char *flow_part_topic(const flow_part_t *pt) {
  return pt->topic;
}

int32_t flow_part_partition(const flow_part_t *pt) {
  return pt->partition;
}

void *flow_part_head(const flow_part_t *pt) {
  if (pt->lanes)
    return flow_lanes_head(pt);
  return pt->queue.head ? pt->queue.head->data : NULL;
}

void *flow_part_user(const flow_part_t *pt) {
  return pt->user;
}

void flow_part_set_user(flow_part_t *pt, void *user) {
  pt->user = user;
}

int flow_part_wants_pause(const flow_t *f, const flow_part_t *pt, int64_t now) {
  if (pt->lanes)
    return f->hold || f->breaker_open || flow_lanes_want_pause(f, pt, now);
  return f->hold || f->breaker_open ||
         (pt->queue.length > 0 && pt->wait_until > now + f->conf->pause_min_ms);
}

int flow_part_paused(const flow_part_t *pt) {
  return pt->paused;
}

void flow_part_set_paused(flow_part_t *pt, int paused) {
  pt->paused = paused;
}

/* ------------------------------------------------------------ positions */

int64_t flow_part_position(const flow_part_t *pt, int all) {
  if (pt->next < 0 || (!all && pt->next == pt->committed))
    return -1;
  return pt->next;
}

void flow_committed(flow_t *f, const char *topic, int32_t partition,
                    int64_t offset) {
  flow_part_t *pt = flow_find(f, topic, partition);
  if (pt && offset > pt->committed)
    pt->committed = offset;
}

/* The records of b are durable: advance their partitions' positions. */
static void advance(flow_t *f, const flow_batch_t *b) {
  const flow_rec_ops_t *o = f->ops;
  for (guint i = 0; i < b->done->len; i++) {
    const void *rec = b->done->pdata[i];
    const char *topic = o->topic(rec);
    int64_t offset = o->offset(rec);
    flow_part_t *pt = flow_find(f, topic, o->partition(rec));
    if (!pt) /* revoked meanwhile; its next owner gets it */
      continue;
    if (pt->lanes) {
      flow_lanes_durable(f, pt, rec);
      continue;
    }
    if (!o->is_end(rec)) {
      if (offset + 1 > pt->next)
        pt->next = offset + 1;
    } else if (pt->next < 0) {
      /* Nothing was read here since the assignment: the partition started
       * at its end (its committed offset), with nothing to commit. */
      if (f->conf->at_end)
        f->conf->at_end(f->conf->at_end_ctx, topic, pt->partition, offset);
    } else if (offset > pt->next) {
      /* The end lies past the last record (transaction markers): at a
       * partition end the marker's offset is the end offset. */
      pt->next = offset;
    }
  }
}

/* ------------------------------------------------------------ records */

int flow_push(flow_t *f, void *rec) {
  flow_part_t *pt = flow_find(f, f->ops->topic(rec), f->ops->partition(rec));
  if (!pt)
    return -1;
  f->last = pt;
  if (pt->lanes)
    return flow_lanes_push(f, pt, rec);
  g_queue_push_tail_link(&pt->queue, flow_link_take(f, rec));
  f->queued++;
  return 0;
}

size_t flow_queued(const flow_t *f) {
  return f->queued;
}

size_t flow_in_flight(const flow_t *f) {
  return f->in_flight;
}

/* ------------------------------------------------------------ batches */

flow_batch_t *flow_cur(flow_t *f) {
  return &f->cur;
}

size_t flow_in_air(const flow_t *f) {
  return f->air_n;
}

flow_batch_t *flow_air_at(flow_t *f, size_t i) {
  return i < f->air_n ? &f->air[(f->air_head + i) % f->air_max] : NULL;
}

flow_batch_t *flow_air(flow_t *f) {
  return flow_air_at(f, 0);
}

int flow_air_room(const flow_t *f) {
  if (f->air_n >= f->air_max)
    return 0;
  return f->air_n == 0 || !f->conf->max_air_bytes ||
         f->air_bytes < f->conf->max_air_bytes;
}

size_t flow_air_bytes(const flow_t *f) {
  return f->air_bytes;
}

/* The bytes of b's records (0 when the adapter does not say). */
static size_t batch_bytes(const flow_t *f, const flow_batch_t *b) {
  size_t n = 0;
  for (guint i = 0; f->ops->size && i < b->done->len; i++)
    n += f->ops->size(b->done->pdata[i]);
  return n;
}

size_t flow_batch_len(const flow_batch_t *b) {
  return b->done->len;
}

size_t flow_air_len(const flow_t *f) {
  size_t n = 0;
  for (unsigned i = 0; i < f->air_n; i++)
    n += f->air[(f->air_head + i) % f->air_max].done->len;
  return n;
}

store_batch_t *flow_batch_store(flow_batch_t *b) {
  return b->sb;
}

int flow_batch_due(flow_t *f, int64_t now) {
  if (f->cur.done->len == 0)
    return 0;
  if (f->first_done_at == 0)
    f->first_done_at = now;
  return f->cur.done->len >= f->conf->max_batch ||
         now - f->first_done_at >= f->conf->linger_ms;
}

/* The current batch swaps places with the free slot after the newest
 * batch in the air: the batches keep their store batches (connections),
 * only the roles move. */
store_batch_t *flow_batch_take_off(flow_t *f) {
  flow_batch_t *slot = &f->air[(f->air_head + f->air_n) % f->air_max];
  flow_batch_t spare = *slot;
  g_assert(f->air_n < f->air_max);
  *slot = f->cur;
  slot->durable = 0;
  slot->bytes = batch_bytes(f, slot);
  f->air_bytes += slot->bytes;
  f->cur = spare;
  f->air_n++;
  f->first_done_at = 0;
  return slot->sb;
}

static void batch_clear(flow_t *f, flow_batch_t *b) {
  for (guint i = 0; i < b->done->len; i++)
    f->ops->free(b->done->pdata[i]);
  g_ptr_array_set_size(b->done, 0);
  g_array_set_size(b->claims, 0);
  b->durable = 0;
  b->bytes = 0;
  if (b == &f->cur)
    f->first_done_at = 0;
}

/* The oldest batches in the air that are durable land: their positions
 * advance, in the order the batches took off. */
static void land_durable(flow_t *f) {
  flow_batch_t *b;
  while ((b = flow_air(f)) && b->durable) {
    advance(f, b);
    f->air_bytes -= b->bytes;
    batch_clear(f, b);
    f->air_head = (f->air_head + 1) % f->air_max;
    f->air_n--;
  }
}

void flow_batch_durable(flow_t *f, flow_batch_t *b) {
  if (f->conf->batch_end && b->sb)
    f->conf->batch_end(f->conf->batch_end_ctx, b->sb);
  if (b == &f->cur) {
    g_assert(f->air_n == 0);
    advance(f, b);
    batch_clear(f, b);
    return;
  }
  b->durable = 1;
  land_durable(f);
}

/* b's claims go back and its records go (delivered again later). */
static void abandon_one(flow_t *f, flow_batch_t *b) {
  const flow_conf_t *c = f->conf;
  if (b->done->len > 0)
    log_msg(KHOST_LOG_WARNING, c->who,
            "%u handled records not made durable: they will be delivered "
            "again",
            b->done->len);
  for (guint i = 0; i < b->claims->len; i++) {
    store_key_t k =
        flow_claim_key(f, &g_array_index(b->claims, flow_claim_t, i));
    if (k.id)
      store_release(c->store, c->scope, &k);
  }
  /* A partition with lanes never commits past them. */
  for (guint i = 0; i < b->done->len; i++) {
    const void *rec = b->done->pdata[i];
    flow_part_t *pt = flow_find(f, f->ops->topic(rec), f->ops->partition(rec));
    if (pt && pt->lanes)
      flow_lanes_abandoned(f, pt, rec);
  }
  if (b->sb)
    store_batch_discard(b->sb);
  if (c->batch_end && b->sb)
    c->batch_end(c->batch_end_ctx, b->sb);
  batch_clear(f, b);
}

void flow_batch_abandon(flow_t *f, flow_batch_t *b) {
  unsigned from = f->air_n;
  for (unsigned i = 0; i < f->air_n; i++)
    if (flow_air_at(f, i) == b)
      from = i;
  /* Newest first: the current batch, then the air down to b. */
  abandon_one(f, &f->cur);
  for (unsigned i = f->air_n; i-- > from;) {
    f->air_bytes -= flow_air_at(f, i)->bytes;
    abandon_one(f, flow_air_at(f, i));
  }
  f->air_n = from;
}

void flow_set_hold(flow_t *f, int hold) {
  f->hold = hold;
}

int flow_held(const flow_t *f) {
  return f->hold;
}
