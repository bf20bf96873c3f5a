/*
 * Pipeline lifecycle: start members, stop them, and stop once the log end
 * that existed at start has been reached (--exit-at-end, end_tracker.c).
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

/* How often a start waiting for its members says so. */
#define SETUP_SAY_MS 10000

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Set the stop, remembering when it was first set. Called with p->mu
 * held, or before the members start. */
static void set_stop(pipeline_t *p) {
  if (!p->stop_ms)
    p->stop_ms = mono_ms();
  p->stop = 1;
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

static char *partition_key(const char *topic, int32_t partition) {
  return g_strdup_printf("%s\x1f%" PRId32, topic, partition);
}

/* The settings of the pipeline's librdkafka clients. */
static kafka_settings_t kafka_settings(const pipeline_t *p) {
  return (kafka_settings_t){
      .cfg = p->env.cfg,
      .pc = p->env.pc,
      .bootstrap_servers = p->env.bootstrap_servers,
      .partition_eof = p->env.exit_at_end,
  };
}

rd_kafka_conf_t *pipeline_kafka_conf(pipeline_t *p, kafka_role_t role,
                                     char *err, size_t errlen) {
  kafka_settings_t ks = kafka_settings(p);
  return kafka_conf_new(&ks, role, err, errlen);
}

void pipeline_progress(pipeline_t *p, const char *topic, int32_t partition,
                       int64_t next_offset) {
  if (p->end)
    end_tracker_progress(p->end, topic, partition, next_offset);
}

/* The end tracker's at_end: every partition is consumed to its end. */
static void at_end(void *ctx, int partitions) {
  pipeline_t *p = ctx;
  pthread_mutex_lock(&p->mu);
  if (!p->stop) {
    log_msg(KHOST_LOG_NOTICE, p->name,
            "all %d partitions consumed to their end: stopping", partitions);
    set_stop(p);
    pthread_cond_broadcast(&p->cond);
  }
  pthread_mutex_unlock(&p->mu);
}

static int sleep_hook(void *ctx, int64_t ms) {
  return pipeline_sleep(ctx, ms);
}

/* --exit-at-end: the end offsets as they are now; with targets to reach,
 * and unless --from-beginning, the watch of the group's commits. With
 * --from-beginning the group's committed offsets tell where an earlier run
 * got to, not this one: only this process's commits count. */
static int open_end_tracker(pipeline_t *p, char *err, size_t errlen) {
  kafka_settings_t ks = kafka_settings(p);
  end_tracker_hooks_t hooks = {.at_end = at_end, .sleep = sleep_hook, .ctx = p};
  if (end_tracker_open(&p->end, &ks, p->name, &hooks, err, errlen) != 0)
    return -1;
  if (end_tracker_total(p->end) == 0) {
    log_msg(KHOST_LOG_NOTICE, p->name, "no partitions to consume: stopping");
    set_stop(p);
    return 0;
  }
  return p->env.from_beginning ? 0
                               : end_tracker_watch_group(p->end, err, errlen);
}

void pipeline_request_stop(pipeline_t *p) {
  pthread_mutex_lock(&p->mu);
  set_stop(p);
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
  set_stop(p);
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
    char *key = partition_key(parts->elems[i].topic, parts->elems[i].partition);
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

int64_t pipeline_stop_ms(pipeline_t *p) {
  pthread_mutex_lock(&p->mu);
  int64_t t = p->stop_ms;
  pthread_mutex_unlock(&p->mu);
  return t;
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
  if (p->end) {
    pipeline_request_stop(p); /* ends the tracker's watch */
    end_tracker_close(p->end);
  }
  if (p->started)
    g_hash_table_destroy(p->started);
  breaker_free(p->breaker);
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->mu);
  free(p->members);
  free(p);
}

/* ---------------------------------------------------------- members */

/* What members ask of their pipeline (member_env_t): the calls below,
 * with the pipeline as ctx. */
static int m_stopping(void *ctx) {
  return pipeline_stopping(ctx);
}

static int64_t m_stop_ms(void *ctx) {
  return pipeline_stop_ms(ctx);
}

static void m_fail(void *ctx, const char *why) {
  pipeline_fail(ctx, "%s", why);
}

static rd_kafka_conf_t *m_kafka_conf(void *ctx, int producer, char *err,
                                     size_t errlen) {
  return pipeline_kafka_conf(ctx, producer ? KAFKA_PRODUCER : KAFKA_MEMBER, err,
                             errlen);
}

static void m_progress(void *ctx, const char *topic, int32_t partition,
                       int64_t next_offset) {
  pipeline_progress(ctx, topic, partition, next_offset);
}

static void m_start_offsets(void *ctx, rd_kafka_topic_partition_list_t *parts) {
  pipeline_start_offsets(ctx, parts);
}

/* A member is set up (ok) or failed to be: counted for
 * wait_members_ready() and pipeline_done(). */
static void m_started(void *ctx, int ok) {
  pipeline_t *p = ctx;
  pthread_mutex_lock(&p->mu);
  if (ok) {
    p->ready++;
    p->running++;
  } else {
    p->setup_failed++;
  }
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
}

static void m_exited(void *ctx) {
  pipeline_t *p = ctx;
  pthread_mutex_lock(&p->mu);
  p->running--;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
}

static void member_env(pipeline_t *p) {
  const pipeline_env_t *env = &p->env;
  p->member_env = (member_env_t){
      .pipeline = p->name,
      .cfg = env->cfg,
      .pc = env->pc,
      .plugin = env->plugin,
      .store = env->store,
      .scope = p->scope,
      .breaker = p->breaker,
      .counts = &p->counts,
      .commits = &p->commits,
      .assigned = &p->assigned,
      .keep_closing_notes = env->keep_closing_notes,
      .metrics = env->metrics,
      .ctx = p,
      .stopping = m_stopping,
      .stop_ms = m_stop_ms,
      .fail = m_fail,
      .kafka_conf = m_kafka_conf,
      .progress = m_progress,
      .start_offsets = m_start_offsets,
      .closing_note = pipeline_closing_note,
      .started = m_started,
      .exited = m_exited,
  };
}

/* Wait until every spawned member has either subscribed or failed. A
 * member's setup calls the plugin's create(), which may take its time
 * (or never return): the wait is said every SETUP_SAY_MS, so that a start
 * that stands still says what it is waiting for. */
static int wait_members_ready(pipeline_t *p, char *err, size_t errlen) {
  int64_t since = mono_ms();
  pthread_mutex_lock(&p->mu);
  while (p->ready + p->setup_failed < p->n_members) {
    struct timespec deadline;
    deadline_after(&deadline, SETUP_SAY_MS);
    if (pthread_cond_timedwait(&p->cond, &p->mu, &deadline) != ETIMEDOUT)
      continue;
    log_msg(KHOST_LOG_WARNING, p->name,
            "still setting up %d of %d member(s) after %" PRId64
            " s: waiting for the plugin's create() (plugin %s), the store "
            "connection or the Kafka consumer",
            p->n_members - p->ready - p->setup_failed, p->n_members,
            (mono_ms() - since) / 1000, plugin_descriptor(p->env.plugin)->name);
  }
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
  if (env->store &&
      store_scope(env->store, env->pc->name, &p->scope, err, errlen) != 0)
    goto fail;
  warn_cooperative(p);
  if (env->exit_at_end && open_end_tracker(p, err, errlen) != 0)
    goto fail;
  member_env(p);
  for (int i = 0; i < env->pc->members; i++) {
    if (member_spawn(&p->members[i], &p->member_env, i) != 0) {
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
  out->handled = atomic_load(&p->counts.handled);
  out->duplicates = atomic_load(&p->counts.duplicates);
  out->failed = atomic_load(&p->counts.failed);
  out->retries = atomic_load(&p->counts.retries);
  out->no_id = atomic_load(&p->counts.no_id);
  out->commits = atomic_load(&p->commits);
  out->assigned = atomic_load(&p->assigned);
  out->breaker_trips = atomic_load(&p->counts.breaker_trips);
  out->at_end = p->end && end_tracker_reached(p->end);
  out->left = p->end ? end_tracker_left(p->end) : -1;
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
