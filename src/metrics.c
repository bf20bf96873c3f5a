/*
 * Operator metrics of a pipeline (see metrics.h).
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* From 100 us (a plugin that only counts) to 10 s (one that calls a slow
 * service, or a batch transaction on a busy disk). */
const double metrics_bucket_bounds[METRICS_BUCKETS] = {
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

/* Watermarks are cached by librdkafka from fetch responses: reading them
 * is cheap, but once a second per member is plenty for a lag gauge. */
#define METRICS_WATERMARK_MS 1000

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t metrics_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void part_free(gpointer p) {
  metrics_part_t *pt = p;
  g_free(pt->topic);
  g_free(pt);
}

metrics_t *metrics_new(const char *pipeline, int members, int64_t stuck_ms) {
  metrics_t *mx = calloc(1, sizeof(*mx));
  mx->pipeline = g_strdup(pipeline);
  mx->n_members = members;
  mx->stuck_ms = stuck_ms;
  mx->members = calloc((size_t)members, sizeof(*mx->members));
  pthread_mutex_init(&mx->mu, NULL);
  mx->parts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, part_free);
  return mx;
}

void metrics_free(metrics_t *mx) {
  if (!mx)
    return;
  g_hash_table_destroy(mx->parts);
  pthread_mutex_destroy(&mx->mu);
  free(mx->members);
  g_free(mx->pipeline);
  free(mx);
}

static void observe(metrics_hist_t *h, int64_t start_us) {
  int64_t us = metrics_now_us() - start_us;
  double s = (double)us / 1e6;
  int i = 0;
  while (i < METRICS_BUCKETS && s > metrics_bucket_bounds[i])
    i++;
  atomic_fetch_add(&h->bucket[i], 1);
  atomic_fetch_add(&h->sum_us, (uint64_t)(us > 0 ? us : 0));
}

void metrics_observe_handle(metrics_t *mx, int64_t start_us) {
  if (mx)
    observe(&mx->handle, start_us);
}

void metrics_observe_durable(metrics_t *mx, int64_t start_us) {
  if (mx)
    observe(&mx->durable, start_us);
}

/* The entry of topic/partition, created when absent; under mu. */
static metrics_part_t *part_get(metrics_t *mx, const char *topic,
                                int32_t partition) {
  char *key = g_strdup_printf("%s\x1f%" PRId32, topic, partition);
  metrics_part_t *pt = g_hash_table_lookup(mx->parts, key);
  if (pt) {
    g_free(key);
    return pt;
  }
  pt = g_new0(metrics_part_t, 1);
  pt->topic = g_strdup(topic);
  pt->partition = partition;
  pt->member = -1;
  pt->committed = pt->low = pt->high = pt->oldest_ms = -1;
  g_hash_table_insert(mx->parts, key, pt);
  return pt;
}

void metrics_assigned(metrics_t *mx, int member,
                      const rd_kafka_topic_partition_list_t *parts) {
  if (!mx)
    return;
  atomic_fetch_add(&mx->assigned_events, 1);
  atomic_store(&mx->members[member].joined, 1);
  pthread_mutex_lock(&mx->mu);
  for (int i = 0; i < parts->cnt; i++)
    part_get(mx, parts->elems[i].topic, parts->elems[i].partition)->member =
        member;
  pthread_mutex_unlock(&mx->mu);
}

void metrics_revoked(metrics_t *mx, int member,
                     const rd_kafka_topic_partition_list_t *parts, int lost) {
  if (!mx)
    return;
  atomic_fetch_add(lost ? &mx->lost_events : &mx->revoked_events, 1);
  pthread_mutex_lock(&mx->mu);
  for (int i = 0; i < parts->cnt; i++) {
    metrics_part_t *pt =
        part_get(mx, parts->elems[i].topic, parts->elems[i].partition);
    if (pt->member == member) {
      pt->member = -1;
      pt->oldest_ms = -1;
    }
  }
  pthread_mutex_unlock(&mx->mu);
}

static void read_watermarks(rd_kafka_t *rk, metrics_part_t *pt) {
  int64_t lo = -1, hi = -1;
  if (rd_kafka_get_watermark_offsets(rk, pt->topic, pt->partition, &lo, &hi) ==
          RD_KAFKA_RESP_ERR_NO_ERROR &&
      hi >= 0) {
    pt->low = lo;
    pt->high = hi;
  }
}

void metrics_committed(metrics_t *mx, rd_kafka_t *rk, int ok,
                       const rd_kafka_topic_partition_list_t *offsets) {
  if (!mx)
    return;
  atomic_fetch_add(ok ? &mx->commits_ok : &mx->commits_failed, 1);
  if (!ok || !offsets)
    return;
  pthread_mutex_lock(&mx->mu);
  for (int i = 0; i < offsets->cnt; i++) {
    const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
    if (tp->err || tp->offset < 0)
      continue;
    metrics_part_t *pt = part_get(mx, tp->topic, tp->partition);
    pt->committed = tp->offset;
    read_watermarks(rk, pt);
  }
  pthread_mutex_unlock(&mx->mu);
}

void metrics_tick(metrics_t *mx, int member, rd_kafka_t *rk, uint64_t queued,
                  uint64_t pending) {
  if (!mx)
    return;
  metrics_member_t *mm = &mx->members[member];
  int64_t now = mono_ms(), last = atomic_load(&mm->tick_ms);
  atomic_store(&mm->tick_ms, now);
  atomic_store(&mm->queued, queued);
  atomic_store(&mm->pending, pending);
  if (now / METRICS_WATERMARK_MS == last / METRICS_WATERMARK_MS || !rk)
    return;
  GHashTableIter it;
  gpointer v;
  pthread_mutex_lock(&mx->mu);
  g_hash_table_iter_init(&it, mx->parts);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (((metrics_part_t *)v)->member == member)
      read_watermarks(rk, v);
  pthread_mutex_unlock(&mx->mu);
}

void metrics_oldest(metrics_t *mx, const char *topic, int32_t partition,
                    int64_t ts_ms) {
  if (!mx)
    return;
  pthread_mutex_lock(&mx->mu);
  part_get(mx, topic, partition)->oldest_ms = ts_ms;
  pthread_mutex_unlock(&mx->mu);
}

double metrics_lag_seconds(const metrics_part_t *pt, int64_t now_ms) {
  /* A producer's clock ahead of ours gives no negative age. */
  if (pt->oldest_ms < 0 || now_ms <= pt->oldest_ms)
    return 0;
  return (double)(now_ms - pt->oldest_ms) / 1000.0;
}

void metrics_held(metrics_t *mx, int member, int held) {
  if (mx)
    atomic_store(&mx->members[member].held, held);
}

void metrics_breaker(metrics_t *mx, int open) {
  if (mx)
    atomic_store(&mx->breaker_open, open);
}

void metrics_failed(metrics_t *mx, const char *topic, int32_t partition,
                    int64_t offset, const char *reason, int dead_lettered) {
  if (!mx)
    return;
  if (dead_lettered)
    atomic_fetch_add(&mx->dead_lettered, 1);
  pthread_mutex_lock(&mx->mu);
  metrics_failure_t *f = &mx->failures[mx->n_failures++ % METRICS_FAILURES];
  f->at_ms = wall_ms();
  g_strlcpy(f->topic, topic, sizeof(f->topic));
  f->partition = partition;
  f->offset = offset;
  f->dead_lettered = dead_lettered;
  g_strlcpy(f->reason, reason, sizeof(f->reason));
  pthread_mutex_unlock(&mx->mu);
}

void metrics_sample(metrics_t *mx, uint64_t outcomes) {
  pthread_mutex_lock(&mx->mu);
  metrics_sample_t *s = &mx->samples[mx->n_samples++ % METRICS_SAMPLES];
  s->at_ms = wall_ms();
  s->outcomes = outcomes;
  pthread_mutex_unlock(&mx->mu);
}

static gint part_cmp(gconstpointer a, gconstpointer b) {
  const metrics_part_t *x = *(metrics_part_t *const *)a;
  const metrics_part_t *y = *(metrics_part_t *const *)b;
  int c = strcmp(x->topic, y->topic);
  return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

GPtrArray *metrics_parts(metrics_t *mx) {
  GPtrArray *out = g_ptr_array_new_with_free_func(part_free);
  GHashTableIter it;
  gpointer v;
  pthread_mutex_lock(&mx->mu);
  g_hash_table_iter_init(&it, mx->parts);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    metrics_part_t *copy = g_new(metrics_part_t, 1);
    *copy = *(metrics_part_t *)v;
    copy->topic = g_strdup(copy->topic);
    g_ptr_array_add(out, copy);
  }
  pthread_mutex_unlock(&mx->mu);
  g_ptr_array_sort(out, part_cmp);
  return out;
}

/* The last n entries of a ring of size cap holding total entries so far,
 * oldest first. */
static size_t ring_copy(const void *ring, size_t size, size_t cap,
                        uint64_t total, void *out, size_t max) {
  size_t n = total < cap ? (size_t)total : cap;
  if (n > max)
    n = max;
  for (size_t i = 0; i < n; i++) {
    uint64_t idx = (total - n + i) % cap;
    memcpy((char *)out + i * size, (const char *)ring + idx * size, size);
  }
  return n;
}

size_t metrics_failures(metrics_t *mx, metrics_failure_t *out, size_t max) {
  pthread_mutex_lock(&mx->mu);
  size_t n = ring_copy(mx->failures, sizeof(*out), METRICS_FAILURES,
                       mx->n_failures, out, max);
  pthread_mutex_unlock(&mx->mu);
  return n;
}

size_t metrics_samples(metrics_t *mx, metrics_sample_t *out, size_t max) {
  pthread_mutex_lock(&mx->mu);
  size_t n = ring_copy(mx->samples, sizeof(*out), METRICS_SAMPLES,
                       mx->n_samples, out, max);
  pthread_mutex_unlock(&mx->mu);
  return n;
}

static void add_reason(GPtrArray *why, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void add_reason(GPtrArray *why, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_ptr_array_add(why, g_strdup_vprintf(fmt, ap));
  va_end(ap);
}

int metrics_ready(metrics_t *mx, GPtrArray *why) {
  guint before = why->len;
  int64_t now = mono_ms();
  for (int i = 0; i < mx->n_members; i++) {
    metrics_member_t *mm = &mx->members[i];
    int64_t tick = atomic_load(&mm->tick_ms);
    if (!atomic_load(&mm->joined))
      add_reason(why, "%s member %d has not joined its group yet", mx->pipeline,
                 i);
    else if (now - tick > mx->stuck_ms)
      add_reason(why,
                 "%s member %d is stuck: its loop has not turned for %" PRId64
                 " ms",
                 mx->pipeline, i, now - tick);
    if (atomic_load(&mm->held))
      add_reason(why,
                 "%s member %d: the dedup store does not accept its batches",
                 mx->pipeline, i);
  }
  if (atomic_load(&mx->breaker_open))
    add_reason(why, "%s: the circuit breaker is open", mx->pipeline);
  return why->len == before;
}
