/*
 * Pipeline lifecycle: start members, stop them, and know when the log end
 * that existed at start has been reached (--exit-at-end).
 */
#include "pipeline.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "topics.h"

/* How long the start-up metadata and watermark queries may take. */
#define PIPELINE_QUERY_TIMEOUT_MS 15000
/* --exit-at-end: how often the group's committed offsets are read, and
 * how long one read may take (short: a stop waits for it). */
#define PIPELINE_GROUP_POLL_MS 1000
#define PIPELINE_GROUP_QUERY_MS 2000

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_after(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

static char *target_key(const char *topic, int32_t partition) {
  return g_strdup_printf("%s\x1f%" PRId32, topic, partition);
}

rd_kafka_conf_t *pipeline_kafka_conf(pipeline_t *p, kafka_role_t role,
                                     char *err, size_t errlen) {
  kafka_settings_t ks = {
      .cfg = p->env.cfg,
      .pc = p->env.pc,
      .bootstrap_servers = p->env.bootstrap_servers,
      .partition_eof = p->env.exit_at_end,
  };
  return kafka_conf_new(&ks, role, err, errlen);
}

/* A consumer outside the pipeline's group for queries; with group set, a
 * consumer of that group that never subscribes: it reads the group's
 * committed offsets from the coordinator without joining. */
static rd_kafka_t *query_handle(pipeline_t *p, const char *group, char *err,
                                size_t errlen) {
  char why[512];
  rd_kafka_conf_t *conf = pipeline_kafka_conf(p, KAFKA_CONSUMER, err, errlen);
  if (!conf)
    return NULL;
  if (group && kafka_conf_group_reader(conf, group, err, errlen) != 0) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_CONSUMER, conf, p->name, NULL, why, sizeof(why));
  if (!rk)
    snprintf(err, errlen, "%s: %s", p->name, why);
  return rk;
}

/* The partitions of the pipeline's topics, a pattern's matches as they are
 * now (topics.h). */
static int target_partitions(pipeline_t *p, rd_kafka_t *rk,
                             rd_kafka_topic_partition_list_t *parts, char *err,
                             size_t errlen) {
  char why[512];
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e =
      rd_kafka_metadata(rk, 1, NULL, &md, PIPELINE_QUERY_TIMEOUT_MS);
  if (e) {
    snprintf(err, errlen, "%s: cannot read the cluster's metadata: %s", p->name,
             rd_kafka_err2str(e));
    return -1;
  }
  for (size_t t = 0; !e && t < p->env.pc->n_topics; t++) {
    e = topics_expand(md, p->env.pc->topics[t], parts, why, sizeof(why));
    if (e)
      snprintf(err, errlen, "%s: %s", p->name, why);
  }
  rd_kafka_metadata_destroy(md);
  return e ? -1 : 0;
}

/* Record the end offset of every partition of the pipeline's topics, as it
 * is now: --exit-at-end stops once all of them are consumed. */
static int load_targets(pipeline_t *p, char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
  int rc = -1;
  rd_kafka_t *rk = query_handle(p, NULL, err, errlen);
  if (!rk || target_partitions(p, rk, parts, err, errlen) != 0)
    goto out;
  for (int i = 0; i < parts->cnt; i++) {
    const char *topic = parts->elems[i].topic;
    int32_t part = parts->elems[i].partition;
    int64_t lo, hi;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
        rk, topic, part, &lo, &hi, PIPELINE_QUERY_TIMEOUT_MS);
    if (e) {
      snprintf(err, errlen, "%s: %s [%" PRId32 "]: cannot read end offset: %s",
               p->name, topic, part, rd_kafka_err2str(e));
      goto out;
    }
    int64_t *target = g_new(int64_t, 1);
    *target = hi;
    g_hash_table_insert(p->targets, target_key(topic, part), target);
    log_msg(KHOST_LOG_DEBUG, p->name, "%s [%" PRId32 "]: end offset %" PRId64,
            topic, part, hi);
  }
  p->targets_total = (int)g_hash_table_size(p->targets);
  rc = 0;
out:
  rd_kafka_topic_partition_list_destroy(parts);
  kafka_destroy(rk);
  return rc;
}

/* The target of topic/partition is reached (next_offset); by_group: seen
 * in the group's committed offsets rather than in a commit of this
 * process. */
static void progress(pipeline_t *p, const char *topic, int32_t partition,
                     int64_t next_offset, int by_group) {
  char *key = target_key(topic, partition);
  pthread_mutex_lock(&p->mu);
  int64_t *target = g_hash_table_lookup(p->targets, key);
  if (target && next_offset >= *target) {
    log_msg(KHOST_LOG_INFO, p->name,
            "%s [%" PRId32 "]: %s the end offset %" PRId64 " it had at start",
            topic, partition, by_group ? "the group has committed" : "reached",
            *target);
    g_hash_table_remove(p->targets, key);
    if (g_hash_table_size(p->targets) == 0 && !p->stop) {
      log_msg(KHOST_LOG_NOTICE, p->name,
              "all %d partitions consumed to their end: stopping",
              p->targets_total);
      p->stop = 1;
      pthread_cond_broadcast(&p->cond);
    }
  }
  pthread_mutex_unlock(&p->mu);
  g_free(key);
}

void pipeline_progress(pipeline_t *p, const char *topic, int32_t partition,
                       int64_t next_offset) {
  if (p->targets)
    progress(p, topic, partition, next_offset, 0);
}

/* The partitions whose targets are not reached yet. */
static rd_kafka_topic_partition_list_t *remaining_targets(pipeline_t *p) {
  GHashTableIter it;
  gpointer key;
  pthread_mutex_lock(&p->mu);
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)g_hash_table_size(p->targets));
  g_hash_table_iter_init(&it, p->targets);
  while (g_hash_table_iter_next(&it, &key, NULL)) {
    char *topic = g_strdup(key), *sep = strrchr(topic, '\x1f');
    *sep = '\0';
    rd_kafka_topic_partition_list_add(l, topic, (int32_t)atoi(sep + 1));
    g_free(topic);
  }
  pthread_mutex_unlock(&p->mu);
  return l;
}

/* The group's committed offset of a partition counts once it reaches the
 * target and lies within the log: past the end (offsets set by hand, a
 * topic created again) it is out of range, and the member that owns the
 * partition starts over where auto.offset.reset says. */
static int group_reached(pipeline_t *p, const rd_kafka_topic_partition_t *tp) {
  int64_t target = -1, lo, hi;
  char *key = target_key(tp->topic, tp->partition);
  pthread_mutex_lock(&p->mu);
  const int64_t *t = g_hash_table_lookup(p->targets, key);
  if (t)
    target = *t;
  pthread_mutex_unlock(&p->mu);
  g_free(key);
  if (tp->err || target < 0 || tp->offset < target)
    return 0;
  return rd_kafka_query_watermark_offsets(p->group_rk, tp->topic, tp->partition,
                                          &lo, &hi,
                                          PIPELINE_GROUP_QUERY_MS) == 0 &&
         tp->offset <= hi;
}

/* --exit-at-end when other hosts share the group: they commit the
 * partitions they own, and this process sees no commit of those. So,
 * until every target is reached, read the group's committed offsets of
 * the partitions still to go, once a second, and count those the group
 * has committed up to their target (group_reached()). */
static void *group_watch_main(void *arg) {
  pipeline_t *p = arg;
  rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
  do {
    rd_kafka_topic_partition_list_t *l = remaining_targets(p);
    rd_kafka_resp_err_t e =
        l->cnt ? rd_kafka_committed(p->group_rk, l, PIPELINE_GROUP_QUERY_MS)
               : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e && e != last)
      log_msg(KHOST_LOG_WARNING, p->name,
              "cannot read the committed offsets of group %s: %s (trying "
              "again every %d ms)",
              p->env.pc->group_id, rd_kafka_err2str(e), PIPELINE_GROUP_POLL_MS);
    last = e;
    for (int i = 0; !e && i < l->cnt; i++)
      if (group_reached(p, &l->elems[i]))
        progress(p, l->elems[i].topic, l->elems[i].partition,
                 l->elems[i].offset, 1);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_poll(p->group_rk, 0); /* drop queued error events */
  } while (!pipeline_sleep(p, PIPELINE_GROUP_POLL_MS));
  return NULL;
}

/* Start the group watch (--exit-at-end with targets to reach). */
static int start_group_watch(pipeline_t *p, char *err, size_t errlen) {
  p->group_rk = query_handle(p, p->env.pc->group_id, err, errlen);
  if (!p->group_rk)
    return -1;
  if (pthread_create(&p->group_watch, NULL, group_watch_main, p) != 0) {
    snprintf(err, errlen, "%s: cannot start the group watch thread", p->name);
    return -1;
  }
  p->has_group_watch = 1;
  return 0;
}

void pipeline_request_stop(pipeline_t *p) {
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
}

void pipeline_fail(pipeline_t *p, const char *fmt, ...) {
  int first = 0;
  pthread_mutex_lock(&p->mu);
  if (!p->failed) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->failure, sizeof(p->failure), fmt, ap);
    va_end(ap);
    p->failed = first = 1;
    log_msg(KHOST_LOG_ERR, p->name, "pipeline stops: %s", p->failure);
  }
  p->stop = 1;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
  if (first && p->env.stop_host && p->env.pc->on_fatal == CFG_FATAL_STOP_HOST)
    p->env.stop_host(p->env.stop_host_ctx);
}

void pipeline_start_offsets(pipeline_t *p,
                            rd_kafka_topic_partition_list_t *parts) {
  if (!p->started)
    return;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < parts->cnt; i++) {
    char *key = target_key(parts->elems[i].topic, parts->elems[i].partition);
    if (g_hash_table_contains(p->started, key)) {
      g_free(key);
      continue;
    }
    g_hash_table_add(p->started, key);
    parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    log_msg(KHOST_LOG_INFO, p->name,
            "%s [%" PRId32 "]: --from-beginning: starting at the earliest "
            "offset",
            parts->elems[i].topic, parts->elems[i].partition);
  }
  pthread_mutex_unlock(&p->mu);
}

/* Report handle() calls running longer than handler_timeout, with the
 * record they are stuck on; again every further timeout. */
static void *watchdog_main(void *arg) {
  pipeline_t *p = arg;
  int64_t timeout = p->env.pc->handler_timeout_ms;
  int64_t tick =
      timeout / 4 < 1000 ? (timeout / 4 > 10 ? timeout / 4 : 10) : 1000;
  int64_t *reported = calloc((size_t)p->n_members + 1, sizeof(*reported));
  while (!pipeline_sleep(p, tick)) {
    int64_t now = mono_ms();
    for (int i = 0; i < p->n_members; i++) {
      int64_t since, offset;
      const char *topic;
      int32_t part;
      if (!member_busy(p->members[i], &since, &topic, &part, &offset) ||
          now - since < timeout || now - reported[i] < timeout)
        continue;
      reported[i] = now;
      log_msg(KHOST_LOG_WARNING, member_who(p->members[i]),
              "handle() has been running for %" PRId64 " ms on %s [%" PRId32
              "] offset %" PRId64 " (handler_timeout %" PRId64 " ms)",
              now - since, topic, part, offset, timeout);
    }
  }
  free(reported);
  return NULL;
}

size_t pipeline_describe_busy(pipeline_t *p, char *buf, size_t len) {
  size_t n = 0, off = strlen(buf);
  int64_t now = mono_ms();
  for (int i = 0; i < p->n_members; i++) {
    int64_t since, offset;
    const char *topic;
    int32_t part;
    if (!member_busy(p->members[i], &since, &topic, &part, &offset))
      continue;
    n++;
    if (off < len)
      off += (size_t)snprintf(buf + off, len - off,
                              "%s%s in handle() for %" PRId64
                              " ms on %s [%" PRId32 "] offset %" PRId64,
                              off ? "; " : "", member_who(p->members[i]),
                              now - since, topic, part, offset);
  }
  return n;
}

int pipeline_stopping(pipeline_t *p) {
  /* Asked once per record: a plain atomic read (writers hold p->mu). */
  return __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE);
}

int pipeline_sleep(pipeline_t *p, int64_t ms) {
  struct timespec deadline;
  deadline_after(&deadline, ms);
  pthread_mutex_lock(&p->mu);
  while (!p->stop &&
         pthread_cond_timedwait(&p->cond, &p->mu, &deadline) != ETIMEDOUT)
    ;
  int stop = p->stop;
  pthread_mutex_unlock(&p->mu);
  return stop;
}

static pipeline_t *pipeline_new(const pipeline_env_t *env) {
  pipeline_t *p = calloc(1, sizeof(*p));
  pthread_condattr_t ca;
  p->env = *env;
  snprintf(p->name, sizeof(p->name), "%s", env->pc->name);
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cond, &ca);
  pthread_condattr_destroy(&ca);
  p->members = calloc((size_t)env->pc->members, sizeof(*p->members));
  if (env->exit_at_end)
    p->targets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  if (env->from_beginning)
    p->started = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (env->pc->breaker_window > 0)
    p->breaker = breaker_new(env->pc->breaker_window, env->pc->breaker_ratio,
                             env->pc->breaker_cooldown_ms);
  return p;
}

static void pipeline_free(pipeline_t *p) {
  if (p->closing_notes)
    g_ptr_array_unref(p->closing_notes);
  if (p->has_group_watch) {
    pipeline_request_stop(p);
    pthread_join(p->group_watch, NULL);
  }
  /* It never joined the group: there is nothing to leave. */
  kafka_destroy_unjoined(p->group_rk);
  if (p->targets)
    g_hash_table_destroy(p->targets);
  if (p->started)
    g_hash_table_destroy(p->started);
  breaker_free(p->breaker);
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->mu);
  free(p->members);
  free(p);
}

/* Wait until every spawned member has either subscribed or failed. */
static int wait_members_ready(pipeline_t *p, char *err, size_t errlen) {
  pthread_mutex_lock(&p->mu);
  while (p->ready + p->setup_failed < p->n_members)
    pthread_cond_wait(&p->cond, &p->mu);
  int failed = p->setup_failed > 0;
  if (failed)
    snprintf(err, errlen, "%s", p->failure);
  pthread_mutex_unlock(&p->mu);
  return failed ? -1 : 0;
}

/* librdkafka before 2.10 can fail commits made during a cooperative
 * rebalance (the partitions are then declared lost and their last records
 * handled again by the next owner): say so where it applies. */
static void warn_cooperative(const pipeline_t *p) {
  const cfg_prop_t *a = cfg_prop_find(p->env.pc->kafka, p->env.pc->n_kafka,
                                      "partition.assignment.strategy");
  if (!a)
    a = cfg_prop_find(p->env.cfg->kafka, p->env.cfg->n_kafka,
                      "partition.assignment.strategy");
  if (a && strstr(a->value, "cooperative") && rd_kafka_version() < 0x020a0000)
    log_msg(KHOST_LOG_WARNING, p->name,
            "cooperative-sticky with librdkafka %s: commits during a "
            "rebalance can fail (fixed in 2.10); records whose commit failed "
            "are handled again by their next owner when it runs in another "
            "host (with its own dedup store)",
            rd_kafka_version_str());
}

int pipeline_start(pipeline_t **out, const pipeline_env_t *env, char *err,
                   size_t errlen) {
  pipeline_t *p = pipeline_new(env);
  if (env->dedup &&
      dedup_scope(env->dedup, env->pc->name, &p->scope, err, errlen) != 0)
    goto fail;
  warn_cooperative(p);
  if (env->exit_at_end && load_targets(p, err, errlen) != 0)
    goto fail;
  if (env->exit_at_end && p->targets_total == 0) {
    log_msg(KHOST_LOG_NOTICE, p->name, "no partitions to consume: stopping");
    p->stop = 1;
  } else if (env->exit_at_end && !env->from_beginning &&
             start_group_watch(p, err, errlen) != 0) {
    goto fail;
  }
  /* With --from-beginning the group's committed offsets tell where an
   * earlier run got to, not this one: only this process's commits count
   * (no group watch). */
  for (int i = 0; i < env->pc->members; i++) {
    if (member_spawn(&p->members[i], p, i) != 0) {
      pipeline_fail(p, "cannot start member thread %d", i);
      break;
    }
    p->n_members++;
  }
  if (wait_members_ready(p, err, errlen) != 0 ||
      p->n_members < env->pc->members) {
    if (!err[0])
      snprintf(err, errlen, "%s", p->failure);
    pipeline_request_stop(p);
    pipeline_wait_done(p, -1);
    pipeline_finish(p);
    return -1;
  }
  if (env->pc->handler_timeout_ms > 0 &&
      pthread_create(&p->watchdog, NULL, watchdog_main, p) == 0)
    p->has_watchdog = 1;
  log_msg(KHOST_LOG_NOTICE, p->name,
          "started: group %s, %d member(s), plugin %s", env->pc->group_id,
          p->n_members, plugin_descriptor(env->plugin)->name);
  *out = p;
  return 0;
fail:
  pipeline_free(p);
  return -1;
}

int pipeline_done(pipeline_t *p) {
  pthread_mutex_lock(&p->mu);
  int done = p->running == 0 && p->ready + p->setup_failed == p->n_members;
  pthread_mutex_unlock(&p->mu);
  return done;
}

int pipeline_wait_done(pipeline_t *p, int64_t timeout_ms) {
  struct timespec deadline;
  if (timeout_ms >= 0)
    deadline_after(&deadline, timeout_ms);
  pthread_mutex_lock(&p->mu);
  while (p->running > 0 || p->ready + p->setup_failed < p->n_members) {
    if (timeout_ms < 0)
      pthread_cond_wait(&p->cond, &p->mu);
    else if (pthread_cond_timedwait(&p->cond, &p->mu, &deadline) == ETIMEDOUT)
      break;
  }
  pthread_mutex_unlock(&p->mu);
  return pipeline_done(p);
}

int pipeline_finish(pipeline_t *p) {
  pipeline_request_stop(p);
  if (p->has_watchdog)
    pthread_join(p->watchdog, NULL);
  for (int i = 0; i < p->n_members; i++)
    member_join(p->members[i]);
  int failed = p->failed;
  pipeline_free(p);
  return failed ? 1 : 0;
}

void pipeline_get_stats(pipeline_t *p, pipeline_stats_t *out) {
  out->handled = atomic_load(&p->handled);
  out->duplicates = atomic_load(&p->duplicates);
  out->failed = atomic_load(&p->failed_records);
  out->retries = atomic_load(&p->retries);
  out->no_id = atomic_load(&p->no_id);
  out->commits = atomic_load(&p->commits);
  out->assigned = atomic_load(&p->assigned);
  out->breaker_trips = atomic_load(&p->breaker_trips);
  pthread_mutex_lock(&p->mu);
  out->at_end = p->targets && g_hash_table_size(p->targets) == 0;
  pthread_mutex_unlock(&p->mu);
}

void pipeline_closing_note(void *ctx, const char *line) {
  pipeline_t *p = ctx;
  pthread_mutex_lock(&p->mu);
  if (!p->closing_notes)
    p->closing_notes = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(p->closing_notes, g_strdup(line));
  pthread_mutex_unlock(&p->mu);
}

GPtrArray *pipeline_take_closing_notes(pipeline_t *p) {
  pthread_mutex_lock(&p->mu);
  GPtrArray *notes = p->closing_notes;
  p->closing_notes = NULL;
  pthread_mutex_unlock(&p->mu);
  return notes;
}
