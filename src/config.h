/*
 * khost configuration: the libconfig file users write (see DESIGN.md and
 * examples/). cfg_load() validates everything it can without touching Kafka
 * or plugins: unknown keys, types and ranges are errors that name the file,
 * line and full key path, e.g.
 *   khost.cfg:12: pipelines[0].members: must be between 1 and 256 (got 0)
 */
#ifndef KHOST_CONFIG_H
#define KHOST_CONFIG_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

/* One librdkafka property, name already translated ('_' -> '.'). */
typedef struct cfg_prop {
  char *name;
  char *value;
  int line; /* line in the config file */
} cfg_prop_t;

typedef enum { CFG_EID_HEADER = 0, CFG_EID_KEY = 1 } cfg_eid_source_t;
typedef enum { CFG_MISSING_PROCESS = 0, CFG_MISSING_FAIL = 1 } cfg_missing_t;
/* What stays in order with concurrency > 1 (order_by). */
typedef enum {
  CFG_ORDER_KEY = 0,
  CFG_ORDER_HEADER,
  CFG_ORDER_EVENT_ID,
  CFG_ORDER_PARTITION,
  CFG_ORDER_NONE
} cfg_order_t;
typedef enum { CFG_DURABILITY_NORMAL = 0, CFG_DURABILITY_FULL = 1 } cfg_durab_t;
typedef enum { CFG_STORE_SQLITE = 0, CFG_STORE_POSTGRESQL = 1 } cfg_store_t;
/* What a plugin's KHOST_FATAL stops. */
typedef enum {
  CFG_FATAL_STOP_HOST = 0,
  CFG_FATAL_STOP_PIPELINE = 1
} cfg_fatal_t;

/* The default retry budget: long enough to ride out a routine restart of
 * a dependency. The waits double from 200 ms to the 5 s cap:
 * 200 + 400 + 800 + 1600 + 3200 + 11 * 5000 ms = 61.2 s at most, half of
 * that at least (jitter), before the record fails. */
enum {
  CFG_DEFAULT_RETRY_MAX = 16,
  CFG_DEFAULT_RETRY_BACKOFF_MS = 200,
  CFG_DEFAULT_RETRY_BACKOFF_MAX_MS = 5000
};

/* Offset commits while records flow: at most one per 100 ms and member
 * (each is a request the group coordinator writes to __consumer_offsets;
 * one per durable batch was hundreds a second). A crash hands the records
 * of the last 100 ms to the next owner again: dedup skips those whose
 * batch was durable. Revokes and shutdown commit at once. */
enum { CFG_DEFAULT_COMMIT_INTERVAL_MS = 100 };

typedef struct cfg_pipeline {
  char *name;
  char *group_id;
  char **topics;
  size_t n_topics;
  int members;                 /* 1..256, default 1 */
  char *plugin;                /* as written in the file */
  int plugin_line;             /* line of the `plugin` key */
  char *plugin_path;           /* resolved: plugin_dir/<name>.so, or the path */
  cfg_eid_source_t eid_source; /* default header */
  char *eid_header; /* header name when eid_source is header ("eventId") */
  cfg_missing_t on_missing_id; /* default process */
  int max_batch;               /* 1..100000, default 500 */
  int concurrency;             /* records in flight per member, 1..4096,
                                * default 1 */
  cfg_order_t order_by;        /* default key */
  char *order_header;          /* order_by = "header:NAME": NAME */
  int dedup;                   /* bool, default 1 */
  int retry_max;            /* attempts after the first, 0..1000, default 16 */
  int retry_backoff_ms;     /* first backoff, default 200 */
  int retry_backoff_max_ms; /* backoff cap, default 5000 */
  cfg_fatal_t on_fatal;     /* default stop_host */
  int handler_timeout_ms;   /* report a handle() running longer; 0 = off,
                             * default 60000 */
  int commit_interval_ms;   /* least time between two offset commits while
                             * records flow; 0 = after each durable batch,
                             * default CFG_DEFAULT_COMMIT_INTERVAL_MS */
  int breaker_window;       /* circuit breaker: outcomes remembered; 0 =
                             * off (the default: no circuit_breaker group) */
  double breaker_ratio;     /* failure share that opens it, default 0.5 */
  int breaker_cooldown_ms;  /* how long it stays open, default 30000 */
  /* Topic FAIL records (and records whose retries ran out) are produced to,
   * or NULL: they are then only logged. */
  char *dead_letter_topic;
  cfg_prop_t *kafka; /* per-pipeline overrides */
  size_t n_kafka;
  /* The plugin's own group (`config = {...}`), or NULL when absent. Owned by
   * cfg_t's libconfig tree; valid until cfg_free(). */
  config_setting_t *plugin_config;
  int line;
} cfg_pipeline_t;

#define CFG_DEDUP_MEMORY_DEFAULT ((uint64_t)256 << 20)
#define CFG_DEDUP_MEMORY_MIN ((uint64_t)1 << 20)

typedef struct cfg {
  config_t lc; /* the parsed tree; kept for plugin config groups */
  char *path;  /* the file as given */
  char *plugin_dir;
  int log_level;           /* syslog number, default info */
  int log_json;            /* log_format = "json" */
  int shutdown_timeout_ms; /* default 30000 */
  /* memory_limit: bytes the host may spend on records fetched ahead; each
   * member's librdkafka prefetch limit is its share (kafka_client.h).
   * Default CFG_MEMORY_LIMIT. */
  int64_t memory_limit;
  cfg_prop_t *kafka; /* global librdkafka properties */
  size_t n_kafka;
  /* dedup store: store = { ... } or the older dedup = { ... } */
  cfg_store_t store_backend; /* default sqlite */
  char *store_conninfo;      /* postgresql: libpq conninfo (secret) */
  int64_t store_lease_ms;    /* postgresql: claim lease, default 20 s */
  char *dedup_path;          /* sqlite: default "khost-dedup.db" */
  int64_t retention_ms;      /* default 7 days */
  cfg_durab_t durability;    /* default normal */
  uint64_t dedup_memory;     /* sqlite: bytes for the recent IDs, default
                                256 MiB */
  /* embedded mock cluster: mock_brokers > 0 starts one in-process */
  int mock_brokers;
  int mock_partitions;     /* partitions of every pipeline topic, default 3 */
  int mock_sample_records; /* sample records produced to each topic, default 0
                            */
  int mock_sample_duplicates; /* of those, how many re-use an earlier eventId */
  /* mock.generate: fill the source document's five topics with the event
   * generator (gen.h) before consuming. */
  struct {
    int enabled;       /* the group is present */
    int count;         /* records, duplicates included; default 1000 */
    double duplicates; /* share re-publishing an earlier event, 0..1 */
    int seed_set;      /* seed given; else a random one */
    uint32_t seed;
    int users;   /* default 100 */
    int coupons; /* default 10 */
  } mock_gen;
  cfg_pipeline_t *pipelines;
  size_t n_pipelines;
  /* http.listen: HOST:PORT of /metrics, /healthz, /readyz and the status
   * page; "" when off. Default CFG_HTTP_LISTEN (or $KHOST_HTTP_LISTEN). */
  char *http_listen;
  /* instance_id: static membership (cfg_member_instance_id()); NULL when
   * not set. */
  char *instance_id;
} cfg_t;

#define CFG_HTTP_LISTEN "127.0.0.1:9464"
#define CFG_MEMORY_LIMIT ((int64_t)1 << 30)
#define CFG_MEMORY_LIMIT_MIN ((int64_t)16 << 20)

/*
 * Parse and validate path. On failure returns -1 and writes every problem
 * found, one per line, into err (truncated to errlen). cfg must be freed
 * with cfg_free() in both cases.
 */
int cfg_load(cfg_t *cfg, const char *path, char *err, size_t errlen);
void cfg_free(cfg_t *cfg);

/* "250ms", "30s", "15m", "12h", "7d", or a plain number of seconds.
 * Returns 0 and sets *ms, or -1. */
int cfg_parse_duration(const char *s, int64_t *ms);

/* "64M", "1G", "2T" (powers of 1024, an optional trailing "B"), or a
 * plain number of bytes. Returns 0 and sets *bytes, or -1. */
int cfg_parse_size(const char *s, int64_t *bytes);

/* Find a property by librdkafka name in a list; NULL when absent. */
const cfg_prop_t *cfg_prop_find(const cfg_prop_t *props, size_t n,
                                const char *name);

/* With instance_id set, the group.instance.id of member (0-based) of
 * pipeline pc, "INSTANCE-PIPELINE-MEMBER", into buf: returns 1; else 0. */
int cfg_member_instance_id(const cfg_t *cfg, const cfg_pipeline_t *pc,
                           int member, char *buf, size_t len);

/* The file a setting was read from (an @include'd file, or cfg->path), for
 * "file:line" in error messages; pair it with config_setting_source_line().
 * s may be NULL. */
const char *cfg_setting_file(const config_setting_t *s, const cfg_t *cfg);

#endif
