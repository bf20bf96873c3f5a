/*
 * The --exit-at-end tracker (see end_tracker.h).
 */
#include "end_tracker.h"

#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "topics.h"

/* How long the start-up metadata and watermark queries may take. */
#define END_QUERY_TIMEOUT_MS 15000
/* How often the group's committed offsets are read, and how long one read
 * may take (short: a stop waits for it). */
#define END_GROUP_POLL_MS 1000
#define END_GROUP_QUERY_MS 2000

struct end_tracker {
  kafka_settings_t ks;
  end_tracker_hooks_t hooks;
  char *who;
  pthread_mutex_t mu;
  /* "topic\x1fpartition" -> target end offset; removed once the partition
   * is consumed and committed up to it. Under mu. */
  GHashTable *targets;
  /* "topic\x1fpartition" -> the next offset known to be consumed (the log
   * start until a progress says more), for end_tracker_left(). Under mu. */
  GHashTable *next;
  int total;
  /* A consumer of the group that never joins it: it reads the group's
   * committed offsets of the partitions still to go. */
  rd_kafka_t *group_rk;
  pthread_t watch;
  int has_watch;
};

static char *target_key(const char *topic, int32_t partition) {
  return g_strdup_printf("%s\x1f%" PRId32, topic, partition);
}

/* A consumer outside the pipeline's group for queries; with group set, a
 * consumer of that group that never subscribes: it reads the group's
 * committed offsets from the coordinator without joining. */
static rd_kafka_t *query_handle(end_tracker_t *t, const char *group, char *err,
                                size_t errlen) {
  char why[512];
  rd_kafka_conf_t *conf = kafka_conf_new(&t->ks, KAFKA_CONSUMER, err, errlen);
  if (!conf)
    return NULL;
  if (group && kafka_conf_group_reader(conf, group, err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_CONSUMER, conf, t->who, NULL, why, sizeof(why));
  if (!rk)
    snprintf(err, errlen, "%s: %s", t->who, why);
  return rk;
}

/* The partitions of the pipeline's topics, a pattern's matches as they are
 * now (topics.h). */
static int target_partitions(end_tracker_t *t, rd_kafka_t *rk,
                             rd_kafka_topic_partition_list_t *parts, char *err,
                             size_t errlen) {
  char why[512];
  const struct rd_kafka_metadata *md = NULL;
  const cfg_pipeline_t *pc = t->ks.pc;
  rd_kafka_resp_err_t e =
      rd_kafka_metadata(rk, 1, NULL, &md, END_QUERY_TIMEOUT_MS);
  if (e) {
    snprintf(err, errlen, "%s: cannot read the cluster's metadata: %s", t->who,
             rd_kafka_err2str(e));
    return -1;
  }
  for (size_t i = 0; !e && i < pc->n_topics; i++) {
    e = topics_expand(md, pc->topics[i], parts, why, sizeof(why));
    if (e)
      snprintf(err, errlen, "%s: %s", t->who, why);
  }
  rd_kafka_metadata_destroy(md);
  return e ? -1 : 0;
}

/* Record the end offset of every partition of the pipeline's topics, as it
 * is now. */
static int load_targets(end_tracker_t *t, char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
  int rc = -1;
  rd_kafka_t *rk = query_handle(t, NULL, err, errlen);
  if (!rk || target_partitions(t, rk, parts, err, errlen) != 0)
    goto out;
  for (int i = 0; i < parts->cnt; i++) {
    const char *topic = parts->elems[i].topic;
    int32_t part = parts->elems[i].partition;
    int64_t lo, hi;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
        rk, topic, part, &lo, &hi, END_QUERY_TIMEOUT_MS);
    if (e) {
      snprintf(err, errlen, "%s: %s [%" PRId32 "]: cannot read end offset: %s",
               t->who, topic, part, rd_kafka_err2str(e));
      goto out;
    }
    int64_t *target = g_new(int64_t, 1), *next = g_new(int64_t, 1);
    *target = hi;
    *next = lo;
    g_hash_table_insert(t->targets, target_key(topic, part), target);
    g_hash_table_insert(t->next, target_key(topic, part), next);
    log_msg(KHOST_LOG_DEBUG, t->who, "%s [%" PRId32 "]: end offset %" PRId64,
            topic, part, hi);
  }
  t->total = (int)g_hash_table_size(t->targets);
  rc = 0;
out:
  rd_kafka_topic_partition_list_destroy(parts);
  kafka_destroy(rk);
  return rc;
}

int end_tracker_open(end_tracker_t **out, const kafka_settings_t *ks,
                     const char *who, const end_tracker_hooks_t *hooks,
                     char *err, size_t errlen) {
  end_tracker_t *t = calloc(1, sizeof(*t));
  t->ks = *ks;
  t->hooks = *hooks;
  t->who = g_strdup(who);
  pthread_mutex_init(&t->mu, NULL);
  t->targets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  t->next = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  if (load_targets(t, err, errlen) != 0) {
    end_tracker_close(t);
    return -1;
  }
  *out = t;
  return 0;
}

int end_tracker_total(const end_tracker_t *t) {
  return t->total;
}

/* The target of topic/partition is reached (next_offset); by_group: seen
 * in the group's committed offsets rather than in a commit of this
 * process. */
static void progress(end_tracker_t *t, const char *topic, int32_t partition,
                     int64_t next_offset, int by_group) {
  char *key = target_key(topic, partition);
  int last = 0;
  pthread_mutex_lock(&t->mu);
  int64_t *target = g_hash_table_lookup(t->targets, key);
  int64_t *next = g_hash_table_lookup(t->next, key);
  if (next && next_offset > *next)
    *next = next_offset;
  if (target && next_offset >= *target) {
    log_msg(KHOST_LOG_INFO, t->who,
            "%s [%" PRId32 "]: %s the end offset %" PRId64 " it had at start",
            topic, partition, by_group ? "the group has committed" : "reached",
            *target);
    g_hash_table_remove(t->targets, key);
    last = g_hash_table_size(t->targets) == 0;
  }
  pthread_mutex_unlock(&t->mu);
  g_free(key);
  if (last)
    t->hooks.at_end(t->hooks.ctx, t->total);
}

void end_tracker_progress(end_tracker_t *t, const char *topic,
                          int32_t partition, int64_t next_offset) {
  progress(t, topic, partition, next_offset, 0);
}

int64_t end_tracker_left(end_tracker_t *t) {
  GHashTableIter it;
  gpointer key, target;
  int64_t left = 0;
  pthread_mutex_lock(&t->mu);
  g_hash_table_iter_init(&it, t->targets);
  while (g_hash_table_iter_next(&it, &key, &target)) {
    const int64_t *next = g_hash_table_lookup(t->next, key);
    int64_t from = next ? *next : 0;
    if (*(int64_t *)target > from)
      left += *(int64_t *)target - from;
  }
  pthread_mutex_unlock(&t->mu);
  return left;
}

int end_tracker_reached(end_tracker_t *t) {
  pthread_mutex_lock(&t->mu);
  int reached = g_hash_table_size(t->targets) == 0;
  pthread_mutex_unlock(&t->mu);
  return reached;
}

/* The partitions whose targets are not reached yet. */
static rd_kafka_topic_partition_list_t *remaining_targets(end_tracker_t *t) {
  GHashTableIter it;
  gpointer key;
  pthread_mutex_lock(&t->mu);
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)g_hash_table_size(t->targets));
  g_hash_table_iter_init(&it, t->targets);
  while (g_hash_table_iter_next(&it, &key, NULL)) {
    char *topic = g_strdup(key), *sep = strrchr(topic, '\x1f');
    *sep = '\0';
    rd_kafka_topic_partition_list_add(l, topic, (int32_t)atoi(sep + 1));
    g_free(topic);
  }
  pthread_mutex_unlock(&t->mu);
  return l;
}

/* The group's committed offset of a partition counts once it reaches the
 * target and lies within the log: past the end (offsets set by hand, a
 * topic created again) it is out of range, and the member that owns the
 * partition starts over where auto.offset.reset says. */
static int group_reached(end_tracker_t *t,
                         const rd_kafka_topic_partition_t *tp) {
  int64_t target = -1, lo, hi;
  char *key = target_key(tp->topic, tp->partition);
  pthread_mutex_lock(&t->mu);
  const int64_t *found = g_hash_table_lookup(t->targets, key);
  if (found)
    target = *found;
  pthread_mutex_unlock(&t->mu);
  g_free(key);
  if (tp->err || target < 0 || tp->offset < target)
    return 0;
  return rd_kafka_query_watermark_offsets(t->group_rk, tp->topic, tp->partition,
                                          &lo, &hi, END_GROUP_QUERY_MS) == 0 &&
         tp->offset <= hi;
}

/* When other hosts share the group, they commit the partitions they own,
 * and this process sees no commit of those. So, until every target is
 * reached, read the group's committed offsets of the partitions still to
 * go, once a second, and count those the group has committed up to their
 * target (group_reached()). */
static void *watch_main(void *arg) {
  end_tracker_t *t = arg;
  rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
  do {
    rd_kafka_topic_partition_list_t *l = remaining_targets(t);
    rd_kafka_resp_err_t e =
        l->cnt ? rd_kafka_committed(t->group_rk, l, END_GROUP_QUERY_MS)
               : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e && e != last)
      log_msg(KHOST_LOG_WARNING, t->who,
              "cannot read the committed offsets of group %s: %s (trying "
              "again every %d ms)",
              t->ks.pc->group_id, rd_kafka_err2str(e), END_GROUP_POLL_MS);
    last = e;
    for (int i = 0; !e && i < l->cnt; i++)
      if (group_reached(t, &l->elems[i]))
        progress(t, l->elems[i].topic, l->elems[i].partition,
                 l->elems[i].offset, 1);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_poll(t->group_rk, 0); /* drop queued error events */
  } while (!t->hooks.sleep(t->hooks.ctx, END_GROUP_POLL_MS));
  return NULL;
}

int end_tracker_watch_group(end_tracker_t *t, char *err, size_t errlen) {
  t->group_rk = query_handle(t, t->ks.pc->group_id, err, errlen);
  if (!t->group_rk)
    return -1;
  if (pthread_create(&t->watch, NULL, watch_main, t) != 0) {
    snprintf(err, errlen, "%s: cannot start the group watch thread", t->who);
    return -1;
  }
  t->has_watch = 1;
  return 0;
}

void end_tracker_close(end_tracker_t *t) {
  if (!t)
    return;
  if (t->has_watch)
    pthread_join(t->watch, NULL);
  /* It never joined the group: there is nothing to leave. */
  kafka_destroy_unjoined(t->group_rk);
  g_hash_table_destroy(t->targets);
  g_hash_table_destroy(t->next);
  pthread_mutex_destroy(&t->mu);
  g_free(t->who);
  free(t);
}
