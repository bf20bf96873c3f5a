/*
 * librdkafka configurations and clients (see kafka_client.h).
 */
#include "kafka_client.h"

#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* The opaque of every client: librdkafka's log callback has no opaque of
 * its own, so the name its lines go under travels with the callbacks'
 * state. */
typedef struct kafka_tag {
  void *ctx;
  char *who;
} kafka_tag_t;

/* librdkafka stops fetching a partition for fetch.queue.backoff.ms (1 s,
 * and fixed before librdkafka 2.4) once its prefetch queue holds more than
 * queued.min.messages (100,000) records or queued.max.messages.kbytes. A
 * member that handles more than that a second empties the queue early and
 * then idles for the rest of the second: against a real broker with a
 * backlog, khost was capped near 120,000 records/s by this alone. Unless
 * the user set either: where librdkafka has the setting, the backoff is
 * shortened; before it, the queue may hold a second of records (its byte
 * limit, 64 MB by default, still bounds the memory it takes). */
#define KAFKA_FETCH_QUEUE_BACKOFF_MS "10"
#define KAFKA_QUEUED_MIN_MESSAGES "1000000"

static void on_log(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf) {
  const kafka_tag_t *tag = rd_kafka_opaque(rk);
  log_msg(level, tag->who, "librdkafka %s: %s", fac, buf);
}

int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                   char *err, size_t errlen) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) ==
      RD_KAFKA_CONF_OK)
    return 0;
  snprintf(err, errlen, "%s", errstr);
  return -1;
}

int kafka_conf_set_pair(rd_kafka_conf_t *conf, const char *pair, char *err,
                        size_t errlen) {
  char *name = g_strdup(pair), *eq = strchr(name, '=');
  int rc = -1;
  snprintf(err, errlen, "expected name=value");
  if (eq) {
    *eq = '\0';
    rc = kafka_conf_set(conf, name, eq + 1, err, errlen);
  }
  g_free(name);
  return rc;
}

/* A property khost sets itself; err names it. */
static int set_own(rd_kafka_conf_t *conf, const char *name, const char *value,
                   char *err, size_t errlen) {
  char why[512];
  if (kafka_conf_set(conf, name, value, why, sizeof(why)) == 0)
    return 0;
  snprintf(err, errlen, "kafka property %s: %s", name, why);
  return -1;
}

int kafka_conf_group_reader(rd_kafka_conf_t *conf, const char *group, char *err,
                            size_t errlen) {
  if (set_own(conf, "group.id", group, err, errlen) != 0)
    return -1;
  return set_own(conf, "enable.auto.commit", "false", err, errlen);
}

/* The properties librdkafka itself marks consumer-only: "C" in the C/P
 * column of the tables rd_kafka_conf_properties_show() prints (its
 * CONFIGURATION.md), so the list follows the installed version. Built
 * once, never freed. */
static GHashTable *g_consumer_only;
static pthread_once_t g_consumer_only_once = PTHREAD_ONCE_INIT;

static void load_consumer_only(void) {
  char *text = NULL;
  size_t len = 0;
  g_consumer_only =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  FILE *f = open_memstream(&text, &len);
  if (!f)
    return;
  rd_kafka_conf_properties_show(f);
  fclose(f);
  gchar **lines = g_strsplit(text, "\n", -1);
  for (size_t i = 0; lines[i]; i++) {
    gchar **col = g_strsplit(lines[i], "|", 3);
    if (col[0] && col[1] && strcmp(g_strstrip(col[1]), "C") == 0)
      g_hash_table_add(g_consumer_only, g_strdup(g_strstrip(col[0])));
    g_strfreev(col);
  }
  g_strfreev(lines);
  free(text);
}

static int consumer_only(const char *name) {
  pthread_once(&g_consumer_only_once, load_consumer_only);
  return g_hash_table_contains(g_consumer_only, name);
}

/* Set the user's props on conf; for a producer, leave out the
 * consumer-only ones. Errors name the config file and line. */
static int set_user(rd_kafka_conf_t *conf, const cfg_t *cfg,
                    const cfg_prop_t *props, size_t n, kafka_role_t role,
                    char *err, size_t errlen) {
  char why[512];
  for (size_t i = 0; i < n; i++) {
    if (role == KAFKA_PRODUCER && consumer_only(props[i].name))
      continue;
    if (kafka_conf_set(conf, props[i].name, props[i].value, why, sizeof(why)) ==
        0)
      continue;
    snprintf(err, errlen, "%s:%d: kafka property %s: %s", cfg->path,
             props[i].line, props[i].name, why);
    return -1;
  }
  return 0;
}

int kafka_user_set(const kafka_settings_t *ks, const char *name) {
  return cfg_prop_find(ks->cfg->kafka, ks->cfg->n_kafka, name) ||
         (ks->pc && cfg_prop_find(ks->pc->kafka, ks->pc->n_kafka, name));
}

/* librdkafka's bounds of queued.max.messages.kbytes. */
#define KAFKA_PREFETCH_KBYTES_MIN 1
#define KAFKA_PREFETCH_KBYTES_MAX 2097151

/* Each member's equal share of memory_limit. */
static int64_t member_share(const cfg_t *cfg) {
  int64_t limit = cfg->memory_limit > 0 ? cfg->memory_limit : CFG_MEMORY_LIMIT;
  int64_t members = 0;
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    members += cfg->pipelines[i].members;
  return limit / (members > 0 ? members : 1);
}

size_t kafka_air_bytes(const cfg_t *cfg) {
  return (size_t)(member_share(cfg) / KAFKA_AIR_SHARE);
}

long kafka_prefetch_kbytes(const cfg_t *cfg) {
  int64_t share = member_share(cfg);
  int64_t kb = (share - share / KAFKA_AIR_SHARE) / 1024;
  if (kb < KAFKA_PREFETCH_KBYTES_MIN)
    kb = KAFKA_PREFETCH_KBYTES_MIN;
  if (kb > KAFKA_PREFETCH_KBYTES_MAX)
    kb = KAFKA_PREFETCH_KBYTES_MAX;
  return (long)kb;
}

/* librdkafka's 64 MB prefetch limit holds only ~60,000 records of 1 KB:
 * against a real broker a member drained it faster than fetches refilled
 * it, and fetching stalled (the host was a third busy; 1 GB of prefetch
 * gave 2.5-3.5x). Each member gets its share of memory_limit instead,
 * unless the user set the limit. */
static int set_prefetch_bytes(const kafka_settings_t *ks, rd_kafka_conf_t *conf,
                              char *err, size_t errlen) {
  char kb[32];
  if (kafka_user_set(ks, "queued.max.messages.kbytes"))
    return 0;
  snprintf(kb, sizeof(kb), "%ld", kafka_prefetch_kbytes(ks->cfg));
  return set_own(conf, "queued.max.messages.kbytes", kb, err, errlen);
}

static int set_prefetch(const kafka_settings_t *ks, rd_kafka_conf_t *conf,
                        char *err, size_t errlen) {
  if (set_prefetch_bytes(ks, conf, err, errlen) != 0)
    return -1;
  if (kafka_user_set(ks, "fetch.queue.backoff.ms") ||
      kafka_user_set(ks, "queued.min.messages"))
    return 0;
  if (rd_kafka_conf_set(conf, "fetch.queue.backoff.ms",
                        KAFKA_FETCH_QUEUE_BACKOFF_MS, NULL,
                        0) == RD_KAFKA_CONF_OK)
    return 0;
  return set_own(conf, "queued.min.messages", KAFKA_QUEUED_MIN_MESSAGES, err,
                 errlen);
}

/* A member learns of partitions added to its topics, and of new topics
 * matching a ^pattern, only from a metadata refresh; librdkafka refreshes
 * every 5 minutes by default, so they sat idle that long. 30 s notices
 * them within half a minute (plus the rebalance) and costs each member
 * one Metadata request per 30 s: for a ^pattern that is the metadata of
 * every topic of the cluster, which is why it is not a few seconds. */
#define KAFKA_METADATA_REFRESH_MS "30000"

static int set_metadata_refresh(const kafka_settings_t *ks,
                                rd_kafka_conf_t *conf, char *err,
                                size_t errlen) {
  if (kafka_user_set(ks, "topic.metadata.refresh.interval.ms"))
    return 0;
  return set_own(conf, "topic.metadata.refresh.interval.ms",
                 KAFKA_METADATA_REFRESH_MS, err, errlen);
}

/* What khost sets on top of the user's properties for role. */
static int set_khost(const kafka_settings_t *ks, rd_kafka_conf_t *conf,
                     kafka_role_t role, char *err, size_t errlen) {
  if (role == KAFKA_PRODUCER || role == KAFKA_ADMIN)
    return 0;
  if (!kafka_user_set(ks, "auto.offset.reset") &&
      set_own(conf, "auto.offset.reset", "earliest", err, errlen))
    return -1;
  if (role != KAFKA_MEMBER)
    return 0;
  /* khost owns offset management: nothing is committed behind its back. */
  if (set_own(conf, "group.id", ks->pc->group_id, err, errlen) ||
      set_own(conf, "enable.auto.commit", "false", err, errlen) ||
      set_own(conf, "enable.auto.offset.store", "false", err, errlen) ||
      set_own(conf, "enable.partition.eof",
              ks->partition_eof ? "true" : "false", err, errlen))
    return -1;
  if (set_prefetch(ks, conf, err, errlen) != 0)
    return -1;
  return set_metadata_refresh(ks, conf, err, errlen);
}

rd_kafka_conf_t *kafka_conf_new(const kafka_settings_t *ks, kafka_role_t role,
                                char *err, size_t errlen) {
  const cfg_t *cfg = ks->cfg;
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (set_user(conf, cfg, cfg->kafka, cfg->n_kafka, role, err, errlen) ||
      (ks->pc &&
       set_user(conf, cfg, ks->pc->kafka, ks->pc->n_kafka, role, err, errlen)))
    goto fail;
  if (ks->bootstrap_servers &&
      set_own(conf, "bootstrap.servers", ks->bootstrap_servers, err, errlen))
    goto fail;
  if (set_khost(ks, conf, role, err, errlen) != 0)
    goto fail;
  return conf;
fail:
  rd_kafka_conf_destroy(conf);
  return NULL;
}

rd_kafka_conf_t *kafka_conf_empty(void) {
  return rd_kafka_conf_new();
}

rd_kafka_t *kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                      const char *who, void *ctx, char *err, size_t errlen) {
  char errstr[512];
  kafka_tag_t *tag = g_new0(kafka_tag_t, 1);
  tag->ctx = ctx;
  tag->who = g_strdup(who ? who : "kafka");
  rd_kafka_conf_set_opaque(conf, tag);
  rd_kafka_conf_set_log_cb(conf, on_log);
  rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    g_free(tag->who);
    g_free(tag);
    snprintf(err, errlen, "%s", errstr);
  }
  return rk;
}

void *kafka_ctx(void *opaque) {
  const kafka_tag_t *tag = opaque;
  return tag ? tag->ctx : NULL;
}

static void destroy(rd_kafka_t *rk, int flags) {
  if (!rk)
    return;
  /* Freed once the client is gone: it logs until then. */
  kafka_tag_t *tag = rd_kafka_opaque(rk);
  if (flags)
    rd_kafka_destroy_flags(rk, flags);
  else
    rd_kafka_destroy(rk);
  g_free(tag->who);
  g_free(tag);
}

void kafka_destroy(rd_kafka_t *rk) {
  destroy(rk, 0);
}

void kafka_destroy_unjoined(rd_kafka_t *rk) {
  destroy(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}
