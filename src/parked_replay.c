/*
 * Parked records through the plugin again: see parked_replay.h.
 */
#include "parked_replay.h"

#include <glib.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

#include "dedup.h"
#include "host.h"
#include "parked_hdr.h"
#include "plugin_loader.h"
#include "state.h"

/* What became of one record. */
enum { PR_OK, PR_FAIL, PR_SKIPPED, PR_FATAL };

typedef struct pr_run {
  const cfg_pipeline_t *pc;
  store_t *store;
  int own_store; /* opened here (the SQLite file), closed here */
  store_batch_t *batch;
  state_t *state; /* the pipeline's host state, over store */
  uint32_t scope;
  plugin_t *plugin;
  plugin_instance_t *inst;
  GPtrArray *claimed; /* store_parked_t * (borrowed): claims to give back if
                         nothing is committed */
  uint64_t ok, failed, skipped;
} pr_run_t;

static int add_header(void *arg, const char *name, size_t nlen,
                      const void *value, size_t vlen) {
  rd_kafka_header_add(arg, name, (ssize_t)nlen, value, (ssize_t)vlen);
  return 0;
}

static void print_line(const store_parked_t *p, const char *what) {
  printf("%s [%" PRId32 "] @%" PRId64 " event %.*s: %s\n", p->topic,
         p->partition, p->offset, p->event_id ? (int)p->event_id_len : 1,
         p->event_id ? (const char *)p->event_id : "-", what);
}

/* The plugin's answer for p, with the pipeline's retries and backoff;
 * *why gets the reason of a failure. */
static khost_result_t call(pr_run_t *r, const store_parked_t *p,
                           uint32_t *attempts, char *why, size_t size) {
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
  parked_hdr_each(p->headers, p->headers_len, add_header, hdrs);
  khost_record_t rec = {.struct_size = sizeof(rec),
                        .topic = p->topic,
                        .partition = p->partition,
                        .offset = p->offset,
                        .timestamp = p->timestamp_ms,
                        .key = p->key,
                        .key_len = p->key_len,
                        .value = p->value,
                        .value_len = p->value_len,
                        .event_id = p->event_id,
                        .event_id_len = p->event_id_len,
                        .flags = KHOST_RECORD_REPLAY,
                        .host_priv = hdrs};
  khost_result_t res;
  int64_t wait = r->pc->retry_backoff_ms;
  for (int retries = 0;; retries++) {
    rec.attempt = ++*attempts;
    /* A retried call starts over: what the last one wrote is dropped. */
    state_record_drop(r->state);
    res = plugin_instance_handle(r->inst, &rec);
    const char *reason = plugin_instance_reason(r->inst);
    if (res == KHOST_RETRY)
      snprintf(why, size, "still failing after %d attempts%s%s", retries + 1,
               reason ? ": " : "", reason ? reason : "");
    else
      snprintf(why, size, "the plugin failed the record%s%s",
               reason ? ": " : "", reason ? reason : "");
    if (res != KHOST_RETRY || retries >= r->pc->retry_max)
      break;
    g_usleep((gulong)wait * 1000);
    wait = MIN(wait * 2, (int64_t)r->pc->retry_backoff_max_ms);
  }
  rd_kafka_headers_destroy(hdrs);
  return res == KHOST_RETRY ? KHOST_FAIL : res;
}

/* The outcome of p goes into the batch: a mark, and with it the record's
 * state writes and its removal from the lot (OK), or the record parked
 * again with the same time and none of its writes (a failure). */
static void buffer_outcome(pr_run_t *r, const store_parked_t *p, int ok,
                           uint32_t attempts, const char *why) {
  int64_t now = dedup_now_ms();
  if (ok) {
    state_record_join(r->state, r->batch);
    store_batch_unpark(r->batch, p);
  } else {
    state_record_drop(r->state);
  }
  if (p->event_id) {
    store_mark_t m = {.scope = r->scope,
                      .event_id = p->event_id,
                      .event_id_len = p->event_id_len,
                      .topic = p->topic,
                      .partition = p->partition,
                      .offset = p->offset,
                      .handled_at_ms = now,
                      .outcome = ok ? STORE_OUTCOME_OK : STORE_OUTCOME_FAIL};
    store_batch_add_mark(r->batch, &m);
  }
  if (ok)
    return;
  store_parked_t again = *p;
  again.scope = r->scope;
  again.reason = why;
  again.attempts = attempts;
  again.parked_at_ms = now;
  store_batch_park(r->batch, &again);
}

/* One parked record: handled since (skipped), or through the plugin. */
static int replay_one(pr_run_t *r, store_parked_t *p) {
  char why[1024], line[1200];
  uint32_t attempts = p->attempts;
  if (p->event_id) {
    /* Claimed again only when its newest mark is the one it was parked
     * with (same time): a later mark means it was handled since. */
    store_key_t k = store_key(r->scope, p->event_id, p->event_id_len);
    int claim = store_claim(r->store, r->scope, &k, STORE_CLAIM_AGAIN,
                            p->parked_at_ms + 1);
    if (claim != STORE_NEW) {
      print_line(p, "skipped: handled since it was parked; leaves the lot");
      store_batch_unpark(r->batch, p);
      r->skipped++;
      return PR_SKIPPED;
    }
    g_ptr_array_add(r->claimed, p);
  }
  khost_result_t res = call(r, p, &attempts, why, sizeof(why));
  if (res == KHOST_FATAL) {
    print_line(p, "FATAL: the plugin is unusable; stopped here, the record "
                  "stays parked");
    state_record_drop(r->state);
    return PR_FATAL;
  }
  buffer_outcome(r, p, res == KHOST_OK, attempts, why);
  if (res == KHOST_OK) {
    print_line(p, "OK: leaves the lot");
    r->ok++;
    return PR_OK;
  }
  snprintf(line, sizeof(line), "FAIL: %s; stays parked", why);
  print_line(p, line);
  r->failed++;
  return PR_FAIL;
}

static void release_claims(pr_run_t *r) {
  for (guint i = 0; i < r->claimed->len; i++) {
    const store_parked_t *p = r->claimed->pdata[i];
    store_key_t k = store_key(r->scope, p->event_id, p->event_id_len);
    store_release(r->store, r->scope, &k);
  }
}

/* flush(), then the batch (marks, state writes, the lot's changes in one
 * transaction); on failure nothing is durable and the claims go back. */
static int make_durable(pr_run_t *r, char *err, size_t errlen) {
  char why[1024];
  int rc = -1;
  if (plugin_instance_flush(r->inst, why, sizeof(why)) != 0)
    snprintf(err, errlen, "the plugin's flush() failed: %s", why);
  else if (store_batch_commit(r->batch, NULL, why, sizeof(why)) != 0)
    snprintf(err, errlen, "%s", why);
  else
    rc = 0;
  if (rc != 0) {
    store_batch_discard(r->batch);
    release_claims(r);
  }
  state_batch_end(r->state, r->batch);
  return rc;
}

/* The store (the PostgreSQL one of adm, or the SQLite file opened here),
 * the pipeline's state over it, the plugin with that state. */
static int open_all(pr_run_t *r, const cfg_t *cfg, padm_t *adm, char *err,
                    size_t errlen) {
  dedup_opts_t o = {.path = cfg->dedup_path,
                    .retention_ms = cfg->retention_ms,
                    .durability_full = cfg->durability == CFG_DURABILITY_FULL};
  plugin_instance_opts_t io = {.pipeline = r->pc->name,
                               .config = r->pc->plugin_config,
                               .config_file = cfg->path};
  r->store = padm_store(adm);
  if (!r->store) {
    if (store_sqlite_open(&r->store, &o, err, errlen) != 0)
      return -1;
    r->own_store = 1;
  }
  if (store_scope(r->store, r->pc->name, &r->scope, err, errlen) != 0 ||
      store_batch_open(r->store, &r->batch, err, errlen) != 0)
    return -1;
  r->state = state_new(r->store, r->scope);
  io.state = r->state;
  if (plugin_load(&r->plugin, r->pc->plugin_path, err, errlen) != 0 ||
      plugin_start(r->plugin, err, errlen) != 0 ||
      plugin_instance_create(&r->inst, r->plugin, &io, err, errlen) != 0)
    return -1;
  return 0;
}

/* Every partition of recs, for assigned() and revoked(). */
static rd_kafka_topic_partition_list_t *partitions_of(store_parked_t **recs,
                                                      size_t n) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
  for (size_t i = 0; i < n; i++)
    if (!rd_kafka_topic_partition_list_find(l, recs[i]->topic,
                                            recs[i]->partition))
      rd_kafka_topic_partition_list_add(l, recs[i]->topic, recs[i]->partition);
  return l;
}

int parked_replay(const cfg_t *cfg, const cfg_pipeline_t *pc, padm_t *adm,
                  store_parked_t **recs, size_t n, char *err, size_t errlen) {
  pr_run_t r = {.pc = pc, .claimed = g_ptr_array_new()};
  rd_kafka_topic_partition_list_t *parts = partitions_of(recs, n);
  int rc = HOST_EXIT_RUNTIME, fatal = 0;
  if (open_all(&r, cfg, adm, err, errlen) != 0)
    goto out;
  plugin_instance_assigned(r.inst, parts);
  for (size_t i = 0; i < n && !fatal; i++)
    fatal = replay_one(&r, recs[i]) == PR_FATAL;
  if (make_durable(&r, err, errlen) != 0)
    goto out;
  if (!fatal)
    plugin_instance_revoked(r.inst, parts, 0);
  printf("%" PRIu64 " OK and %" PRIu64 " handled since (out of the lot), "
         "%" PRIu64 " FAIL (parked again with the new reason)%s\n",
         r.ok, r.skipped, r.failed, fatal ? "; stopped at a FATAL answer" : "");
  if (fatal)
    snprintf(err, errlen, "the plugin answered FATAL");
  rc = fatal ? HOST_EXIT_RUNTIME : HOST_EXIT_OK;
out:
  fflush(stdout);
  rd_kafka_topic_partition_list_destroy(parts);
  plugin_instance_destroy(r.inst);
  plugin_unload(r.plugin);
  state_free(r.state);
  store_batch_close(r.batch);
  if (r.own_store)
    store_close(r.store);
  g_ptr_array_free(r.claimed, TRUE);
  return rc;
}
