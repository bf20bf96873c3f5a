/*
 * One consumer-group member: its own librdkafka consumer and plugin
 * instance, on its own thread.
 *
 *   poll a batch (<= max_batch records, partition order kept)
 *   -> per record: event ID -> seen? skip : plugin handle() (+ retries)
 *   -> plugin flush -> one SQLite transaction with the batch's marks
 *   -> only then commit the next offsets to Kafka
 *
 * Offsets only ever trail outcomes that are durable in SQLite, so the host
 * may die at any moment without losing a record.
 *
 * Threads: everything here runs on the member's thread, including the
 * librdkafka rebalance and commit callbacks (served from
 * rd_kafka_consumer_poll()).
 */
#include "member.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pipeline.h"

/* How long one poll waits for the first record of a batch. */
#define MEMBER_POLL_MS 100

struct member {
  pipeline_t *p;
  int index;
  char who[160];
  pthread_t thread;
  rd_kafka_t *rk;
  plugin_instance_t *inst;
  dedup_writer_t *writer;

  /* The batch: messages polled and not yet committed. */
  rd_kafka_message_t **msgs;
  size_t n, cap;
  size_t done; /* msgs[0..done) have an outcome */
  /* Indexes of msgs whose event ID was claimed in the dedup store. */
  size_t *claimed;
  size_t n_claimed;

  /* Next offset to commit for every partition this member has handled
   * records of since it was assigned. */
  rd_kafka_topic_partition_list_t *positions;
};

/* ------------------------------------------------------------ helpers */

/* A printable copy of an event ID for log lines. */
static const char *printable(char *buf, size_t size, const void *data,
                             size_t len) {
  if (!data)
    return "-";
  size_t n = len < size - 4 ? len : size - 4;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = ((const unsigned char *)data)[i];
    buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  strcpy(buf + n, len > n ? "..." : "");
  return buf;
}

/* The record's event ID (header or key); 0 when it has none. */
static int event_id(const member_t *m, rd_kafka_message_t *msg, const void **id,
                    size_t *len) {
  const cfg_pipeline_t *pc = m->p->env.pc;
  *id = NULL;
  *len = 0;
  if (pc->eid_source == CFG_EID_KEY) {
    *id = msg->key;
    *len = msg->key_len;
  } else {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, pc->eid_header, id, len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
      *id = NULL;
  }
  if (!*id || *len == 0) {
    *id = NULL;
    *len = 0;
    return 0;
  }
  return 1;
}

static int64_t backoff_ms(const cfg_pipeline_t *pc, uint32_t attempt) {
  int64_t d = pc->retry_backoff_ms;
  for (uint32_t i = 1; i < attempt && d < pc->retry_backoff_max_ms; i++)
    d *= 2;
  if (d > pc->retry_backoff_max_ms)
    d = pc->retry_backoff_max_ms;
  /* Jitter in [d/2, d]: members retrying against one dependency spread. */
  return d / 2 + g_random_int_range(0, (gint32)(d / 2 + 1));
}

static void set_position(rd_kafka_topic_partition_list_t *list,
                         const char *topic, int32_t partition, int64_t offset) {
  rd_kafka_topic_partition_t *tp =
      rd_kafka_topic_partition_list_find(list, topic, partition);
  if (!tp)
    tp = rd_kafka_topic_partition_list_add(list, topic, partition);
  tp->offset = offset;
}

/* ------------------------------------------------------ handling */

enum { HANDLED, ABANDON }; /* abandon: stop here, commit nothing past it */

static void report_failure(member_t *m, const rd_kafka_message_t *msg,
                           const void *id, size_t len, const char *why) {
  char idbuf[132];
  log_msg(KHOST_LOG_ERR, m->who,
          "%s [%" PRId32 "] offset %" PRId64 " eventId %s: %s",
          rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset,
          printable(idbuf, sizeof(idbuf), id, len), why);
  atomic_fetch_add(&m->p->failed_records, 1);
}

/* Call the plugin for one record until it answers other than RETRY or the
 * retries are used up. */
static int call_plugin(member_t *m, rd_kafka_message_t *msg, const void *id,
                       size_t len, khost_result_t *res) {
  const cfg_pipeline_t *pc = m->p->env.pc;
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_message_headers(msg, &hdrs);
  rd_kafka_timestamp_type_t tstype;
  khost_record_t rec = {
      .struct_size = sizeof(rec),
      .topic = rd_kafka_topic_name(msg->rkt),
      .partition = msg->partition,
      .offset = msg->offset,
      .timestamp = rd_kafka_message_timestamp(msg, &tstype),
      .key = msg->key,
      .key_len = msg->key_len,
      .value = msg->payload,
      .value_len = msg->len,
      .event_id = id,
      .event_id_len = len,
      .host_priv = hdrs,
  };
  for (rec.attempt = 1;; rec.attempt++) {
    *res = plugin_instance_handle(m->inst, &rec);
    if (*res != KHOST_RETRY)
      return HANDLED;
    atomic_fetch_add(&m->p->retries, 1);
    if (rec.attempt > (uint32_t)pc->retry_max) {
      *res = KHOST_FAIL;
      return HANDLED;
    }
    int64_t wait = backoff_ms(pc, rec.attempt);
    log_msg(KHOST_LOG_WARNING, m->who,
            "%s [%" PRId32 "] offset %" PRId64 ": attempt %" PRIu32
            " asks to retry; next in %" PRId64 " ms",
            rec.topic, rec.partition, rec.offset, rec.attempt, wait);
    if (pipeline_sleep(m->p, wait))
      return ABANDON;
  }
}

static void add_mark(member_t *m, rd_kafka_message_t *msg, const void *id,
                     size_t len, int outcome) {
  dedup_mark_t mark = {
      .scope = m->p->scope,
      .event_id = id,
      .event_id_len = len,
      .topic = rd_kafka_topic_name(msg->rkt),
      .partition = msg->partition,
      .offset = msg->offset,
      .handled_at_ms = dedup_now_ms(),
      .outcome = outcome,
  };
  dedup_writer_add(m->writer, &mark);
}

/* One record: dedup check, plugin, outcome. */
static int handle_record(member_t *m, size_t idx) {
  rd_kafka_message_t *msg = m->msgs[idx];
  const cfg_pipeline_t *pc = m->p->env.pc;
  const void *id;
  size_t len;
  khost_result_t res;
  int has_id = event_id(m, msg, &id, &len);
  if (!has_id) {
    atomic_fetch_add(&m->p->no_id, 1);
    if (pc->on_missing_id == CFG_MISSING_FAIL) {
      report_failure(m, msg, NULL, 0,
                     "record has no event ID (on_missing_id = fail)");
      return HANDLED;
    }
  }
  int dedup = has_id && m->writer;
  if (dedup) {
    if (dedup_claim(m->p->env.dedup, m->p->scope, id, len) == DEDUP_SEEN) {
      atomic_fetch_add(&m->p->duplicates, 1);
      return HANDLED;
    }
    m->claimed[m->n_claimed++] = idx;
  }
  int r = call_plugin(m, msg, id, len, &res);
  if (r == HANDLED && res == KHOST_FATAL) {
    pipeline_fail(
        m->p,
        "%s: plugin reported a fatal error at %s [%" PRId32 "] offset %" PRId64,
        m->who, rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset);
    r = ABANDON;
  }
  if (r == ABANDON) {
    /* No outcome: this record will be delivered again, unclaimed. */
    if (dedup) {
      dedup_release(m->p->env.dedup, m->p->scope, id, len);
      m->n_claimed--;
    }
    return ABANDON;
  }
  if (res == KHOST_OK)
    atomic_fetch_add(&m->p->handled, 1);
  else
    report_failure(
        m, msg, id, len,
        "plugin failed the record (retries included); marked as handled");
  if (dedup)
    add_mark(m, msg, id, len,
             res == KHOST_OK ? DEDUP_OUTCOME_OK : DEDUP_OUTCOME_FAIL);
  return HANDLED;
}

/* ------------------------------------------------------ committing */

/* Give back the claims of a batch whose marks will not be written. */
static void release_claims(member_t *m) {
  for (size_t i = 0; i < m->n_claimed; i++) {
    const void *id;
    size_t len;
    if (event_id(m, m->msgs[m->claimed[i]], &id, &len))
      dedup_release(m->p->env.dedup, m->p->scope, id, len);
  }
  m->n_claimed = 0;
  if (m->writer)
    dedup_writer_discard(m->writer);
}

/* Make the plugin's effects and the dedup marks durable, retrying transient
 * faults until they clear or the pipeline stops. */
static int make_durable(member_t *m) {
  char err[512];
  int transient = 1;
  for (int attempt = 1;; attempt++) {
    err[0] = '\0';
    if (plugin_instance_flush(m->inst, err, sizeof(err)) == 0 &&
        (!m->writer || dedup_writer_pending(m->writer) == 0 ||
         dedup_writer_commit(m->writer, &transient, err, sizeof(err)) == 0))
      return 0;
    if (!transient) {
      pipeline_fail(m->p, "%s: dedup store: %s", m->who, err);
      return -1;
    }
    log_msg(KHOST_LOG_WARNING, m->who,
            "cannot make the batch durable (attempt %d), not committing: %s",
            attempt, err);
    if (pipeline_sleep(m->p, attempt < 8 ? 100LL << attempt : 25600))
      return -1;
  }
}

/* Commit the positions of partitions this member still owns. */
static void commit_positions(member_t *m, int sync) {
  rd_kafka_topic_partition_list_t *owned = NULL, *list;
  if (m->positions->cnt == 0 ||
      rd_kafka_assignment(m->rk, &owned) != RD_KAFKA_RESP_ERR_NO_ERROR)
    return;
  list = rd_kafka_topic_partition_list_new(m->positions->cnt);
  for (int i = 0; i < m->positions->cnt; i++) {
    const rd_kafka_topic_partition_t *tp = &m->positions->elems[i];
    if (rd_kafka_topic_partition_list_find(owned, tp->topic, tp->partition))
      rd_kafka_topic_partition_list_add(list, tp->topic, tp->partition)
          ->offset = tp->offset;
  }
  if (list->cnt > 0) {
    /* Failures are reported by on_commit(), for sync commits too. */
    rd_kafka_commit(m->rk, list, !sync);
    atomic_fetch_add(&m->p->commits, 1);
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_topic_partition_list_destroy(owned);
}

/* After the batch prefix msgs[0..done) is durable: advance positions and
 * the end-of-log bookkeeping (once per partition, not per record). */
static void advance(member_t *m) {
  for (size_t i = 0; i < m->done; i++) {
    rd_kafka_message_t *msg = m->msgs[i];
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
      set_position(m->positions, rd_kafka_topic_name(msg->rkt), msg->partition,
                   msg->offset + 1);
    else if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
      /* At a partition EOF the message offset is the end offset. */
      pipeline_progress(m->p, rd_kafka_topic_name(msg->rkt), msg->partition,
                        msg->offset);
  }
  if (!m->p->targets)
    return;
  for (int i = 0; i < m->positions->cnt; i++)
    pipeline_progress(m->p, m->positions->elems[i].topic,
                      m->positions->elems[i].partition,
                      m->positions->elems[i].offset);
}

static void clear_batch(member_t *m) {
  for (size_t i = 0; i < m->n; i++)
    rd_kafka_message_destroy(m->msgs[i]);
  m->n = m->done = m->n_claimed = 0;
}

/* Handle the whole batch, make it durable, then commit its offsets. */
static void process_batch(member_t *m, int sync) {
  for (m->done = 0; m->done < m->n; m->done++) {
    if (m->msgs[m->done]->err)
      continue; /* partition EOF marker */
    if (handle_record(m, m->done) == ABANDON)
      break;
  }
  if (make_durable(m) != 0) {
    log_msg(KHOST_LOG_WARNING, m->who,
            "batch of %zu records abandoned uncommitted: it will be "
            "delivered again",
            m->n);
    release_claims(m);
  } else {
    m->n_claimed = 0;
    advance(m);
    commit_positions(m, sync);
  }
  clear_batch(m);
}

/* ------------------------------------------------------ rebalancing */

static void log_partitions(member_t *m, const char *what,
                           const rd_kafka_topic_partition_list_t *parts) {
  char buf[1024];
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < parts->cnt && off < sizeof(buf) - 1; i++)
    off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s[%" PRId32 "]",
                            i ? " " : "", parts->elems[i].topic,
                            parts->elems[i].partition);
  log_msg(KHOST_LOG_INFO, m->who, "%s %d partition(s): %s", what, parts->cnt,
          buf);
}

/* Drop polled, unhandled messages of partitions this member lost. */
static void drop_partitions(member_t *m,
                            const rd_kafka_topic_partition_list_t *parts) {
  size_t kept = 0;
  for (size_t i = 0; i < m->n; i++) {
    rd_kafka_message_t *msg = m->msgs[i];
    if (rd_kafka_topic_partition_list_find(parts, rd_kafka_topic_name(msg->rkt),
                                           msg->partition))
      rd_kafka_message_destroy(msg);
    else
      m->msgs[kept++] = msg;
  }
  m->n = kept;
}

static void forget_positions(member_t *m,
                             const rd_kafka_topic_partition_list_t *parts) {
  for (int i = 0; i < parts->cnt; i++)
    rd_kafka_topic_partition_list_del(m->positions, parts->elems[i].topic,
                                      parts->elems[i].partition);
}

static void on_revoke(member_t *m, rd_kafka_topic_partition_list_t *parts) {
  if (rd_kafka_assignment_lost(m->rk)) {
    /* Someone else owns these now: their results must not be committed. */
    log_partitions(m, "lost", parts);
    drop_partitions(m, parts);
  } else {
    log_partitions(m, "revoked", parts);
    /* Finish the in-flight batch while every partition is still ours, then
     * commit synchronously before the partitions go. */
    if (m->n > 0)
      process_batch(m, 1);
    else
      commit_positions(m, 1);
  }
  forget_positions(m, parts);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  member_t *m = opaque;
  rd_kafka_error_t *error = NULL;
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  /* Known only once the group has been joined: ask every time. */
  int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    log_partitions(m, "assigned", parts);
    atomic_fetch_add(&m->p->assigned, (uint64_t)parts->cnt);
    if (cooperative)
      error = rd_kafka_incremental_assign(rk, parts);
    else
      e = rd_kafka_assign(rk, parts);
  } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    on_revoke(m, parts);
    atomic_fetch_sub(&m->p->assigned, (uint64_t)parts->cnt);
    if (cooperative)
      error = rd_kafka_incremental_unassign(rk, parts);
    else
      e = rd_kafka_assign(rk, NULL);
  } else {
    log_msg(KHOST_LOG_ERR, m->who, "rebalance failed: %s",
            rd_kafka_err2str(err));
    e = rd_kafka_assign(rk, NULL);
  }
  if (error) {
    log_msg(KHOST_LOG_ERR, m->who, "cannot apply the assignment: %s",
            rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  } else if (e) {
    log_msg(KHOST_LOG_ERR, m->who, "cannot apply the assignment: %s",
            rd_kafka_err2str(e));
  }
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque) {
  member_t *m = opaque;
  char buf[512];
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; offsets && i < offsets->cnt && off < sizeof(buf) - 1; i++) {
    const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
    off += (size_t)snprintf(buf + off, sizeof(buf) - off,
                            "%s%s[%" PRId32 "]@%" PRId64 "%s", i ? " " : "",
                            tp->topic, tp->partition, tp->offset,
                            tp->err ? "(failed)" : "");
  }
  if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
    return;
  if (err)
    /* Nothing is lost: the next commit of these partitions carries the
     * offsets again, and uncommitted records are skipped by dedup. */
    log_msg(KHOST_LOG_WARNING, m->who, "offset commit failed: %s: %s",
            rd_kafka_err2str(err), buf);
  else
    log_msg(KHOST_LOG_DEBUG, m->who, "committed %s", buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  member_t *m = opaque;
  char fatal[512];
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
    pipeline_fail(m->p, "%s: fatal Kafka client error: %s", m->who, fatal);
    return;
  }
  log_msg(KHOST_LOG_WARNING, m->who, "kafka: %s: %s",
          rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* ------------------------------------------------------ the loop */

static void fill_batch(member_t *m) {
  int max = m->p->env.pc->max_batch, timeout = MEMBER_POLL_MS;
  while ((int)m->n < max && !pipeline_stopping(m->p)) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(m->rk, timeout);
    if (!msg)
      return;
    timeout = 0;
    if (msg->err && msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      log_msg(KHOST_LOG_WARNING, m->who, "consumer: %s%s%s",
              msg->rkt ? rd_kafka_topic_name(msg->rkt) : "",
              msg->rkt ? ": " : "", rd_kafka_message_errstr(msg));
      rd_kafka_message_destroy(msg);
      continue;
    }
    m->msgs[m->n++] = msg;
  }
}

static int subscribe(member_t *m, char *err, size_t errlen) {
  const cfg_pipeline_t *pc = m->p->env.pc;
  rd_kafka_topic_partition_list_t *topics =
      rd_kafka_topic_partition_list_new((int)pc->n_topics);
  for (size_t i = 0; i < pc->n_topics; i++)
    rd_kafka_topic_partition_list_add(topics, pc->topics[i],
                                      RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(m->rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (e) {
    snprintf(err, errlen, "%s: cannot subscribe: %s", m->who,
             rd_kafka_err2str(e));
    return -1;
  }
  return 0;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf) {
  const member_t *m = rd_kafka_opaque(rk);
  log_msg(level, m->who, "librdkafka %s: %s", fac, buf);
}

static int create_consumer(member_t *m, char *err, size_t errlen) {
  char errstr[512], client_id[256];
  rd_kafka_conf_t *conf = pipeline_kafka_conf(m->p, 1, err, errlen);
  if (!conf)
    return -1;
  snprintf(client_id, sizeof(client_id), "khost-%s-%d", m->p->name, m->index);
  const cfg_t *cfg = m->p->env.cfg;
  const cfg_pipeline_t *pc = m->p->env.pc;
  if (!cfg_prop_find(cfg->kafka, cfg->n_kafka, "client.id") &&
      !cfg_prop_find(pc->kafka, pc->n_kafka, "client.id"))
    rd_kafka_conf_set(conf, "client.id", client_id, NULL, 0);
  rd_kafka_conf_set_opaque(conf, m);
  rd_kafka_conf_set_log_cb(conf, on_log);
  rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
  rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
  rd_kafka_conf_set_error_cb(conf, on_error);
  m->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (!m->rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "%s: %s", m->who, errstr);
    return -1;
  }
  rd_kafka_poll_set_consumer(m->rk);
  return 0;
}

static int setup(member_t *m, char *err, size_t errlen) {
  const pipeline_env_t *env = &m->p->env;
  plugin_instance_opts_t opts = {
      .pipeline = m->p->name,
      .member = m->index,
      .config = env->pc->plugin_config,
      .config_file = env->cfg->path,
  };
  if (plugin_instance_create(&m->inst, env->plugin, &opts, err, errlen) != 0)
    return -1;
  if (env->dedup && dedup_writer_open(env->dedup, &m->writer, err, errlen))
    return -1;
  if (create_consumer(m, err, errlen) != 0)
    return -1;
  return subscribe(m, err, errlen);
}

/* Last batch, last synchronous commit, leave the group. */
static void shut_down(member_t *m) {
  if (m->rk) {
    if (m->n > 0)
      process_batch(m, 1);
    commit_positions(m, 1);
    /* Leaving the group runs the revoke callback (another sync commit of
     * anything still pending) before the partitions go. */
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(m->rk);
    if (e)
      log_msg(KHOST_LOG_WARNING, m->who, "leaving the group: %s",
              rd_kafka_err2str(e));
    rd_kafka_destroy(m->rk);
    m->rk = NULL;
  }
  clear_batch(m);
  if (m->inst)
    plugin_instance_destroy(m->inst);
  m->inst = NULL;
  if (m->writer)
    dedup_writer_close(m->writer);
  m->writer = NULL;
}

static void *member_main(void *arg) {
  member_t *m = arg;
  pipeline_t *p = m->p;
  char err[1024] = "", name[16];
  /* Visible in top -H, perf and gdb; the kernel keeps 15 characters. */
  snprintf(name, sizeof(name), "kh/%.12s", m->who);
  pthread_setname_np(pthread_self(), name);
  int ok = setup(m, err, sizeof(err)) == 0;
  if (!ok)
    pipeline_fail(p, "%s", err);
  pthread_mutex_lock(&p->mu);
  if (ok) {
    p->ready++;
    p->running++;
  } else {
    p->setup_failed++;
  }
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
  if (ok) {
    log_msg(KHOST_LOG_INFO, m->who, "subscribed; consuming");
    while (!pipeline_stopping(p)) {
      fill_batch(m);
      if (m->n > 0)
        process_batch(m, 0);
    }
  }
  shut_down(m);
  if (ok) {
    pthread_mutex_lock(&p->mu);
    p->running--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

int member_spawn(member_t **out, pipeline_t *p, int index) {
  member_t *m = calloc(1, sizeof(*m));
  size_t cap = (size_t)p->env.pc->max_batch;
  m->p = p;
  m->index = index;
  snprintf(m->who, sizeof(m->who), "%s/%d", p->name, index);
  m->msgs = calloc(cap, sizeof(*m->msgs));
  m->claimed = calloc(cap, sizeof(*m->claimed));
  m->cap = cap;
  m->positions = rd_kafka_topic_partition_list_new(8);
  if (pthread_create(&m->thread, NULL, member_main, m) != 0) {
    rd_kafka_topic_partition_list_destroy(m->positions);
    free(m->msgs);
    free(m->claimed);
    free(m);
    return -1;
  }
  *out = m;
  return 0;
}

void member_join(member_t *m) {
  pthread_join(m->thread, NULL);
  rd_kafka_topic_partition_list_destroy(m->positions);
  free(m->msgs);
  free(m->claimed);
  free(m);
}
