/*
 * librdkafka clients: every configuration khost hands librdkafka starts
 * here, and every client is created here, with one log callback that
 * writes librdkafka's lines to khost's logger under the client's name.
 *
 * Threads: the functions may be called from any thread; a client's log
 * callback runs on librdkafka's threads and on the threads that call it.
 */
#ifndef KHOST_KAFKA_CLIENT_H
#define KHOST_KAFKA_CLIENT_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "config.h"

/* What a configuration from kafka_conf_new() is for. */
typedef enum kafka_role {
  /* A producer (a dead-letter topic's): the properties librdkafka marks
   * consumer-only are left out, which it would only warn about
   * (CONFWARN). */
  KAFKA_PRODUCER,
  /* A consumer outside the pipeline's group (metadata and offset
   * queries): auto.offset.reset = earliest unless the user set it. */
  KAFKA_CONSUMER,
  /* A member of the pipeline's group: as a consumer, plus group.id and
   * khost's own offset management and prefetch settings. */
  KAFKA_MEMBER,
  /* The admin commands (offsets, replay): the user's properties as
   * written, none of khost's defaults. */
  KAFKA_ADMIN
} kafka_role_t;

/* Where the settings of a pipeline's clients come from. */
typedef struct kafka_settings {
  const cfg_t *cfg;              /* its kafka group; its path names errors */
  const cfg_pipeline_t *pc;      /* the pipeline's overrides and group_id */
  const char *bootstrap_servers; /* replaces the config's (mock), or NULL */
  int partition_eof; /* members report each partition's end (exit-at-end) */
} kafka_settings_t;

/* A configuration for role: the config's kafka group, the pipeline's
 * overrides, then what khost owns. NULL with err set ("FILE:LINE: kafka
 * property NAME: why") when librdkafka refuses a property. */
rd_kafka_conf_t *kafka_conf_new(const kafka_settings_t *ks, kafka_role_t role,
                                char *err, size_t errlen);
/* A configuration with nothing set, for the clients no config file
 * describes (the mock cluster's, the event generator's). */
rd_kafka_conf_t *kafka_conf_empty(void);
/* 1 when the user set property name, globally or for the pipeline. */
int kafka_user_set(const kafka_settings_t *ks, const char *name);

/* cfg's memory_limit goes in equal shares to every member of every
 * pipeline; of a member's share, 1/KAFKA_AIR_SHARE bounds the records of
 * its batches in the air (handled, not yet durable: kafka_air_bytes()),
 * the rest is its prefetch limit (queued.max.messages.kbytes), within
 * librdkafka's range (1..2097151 KB). */
#define KAFKA_AIR_SHARE 16
long kafka_prefetch_kbytes(const cfg_t *cfg);
size_t kafka_air_bytes(const cfg_t *cfg);

/* Set one property; -1 with librdkafka's reason in err. */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                   char *err, size_t errlen);
/* Set one "name=value" property; -1 with the reason in err. */
int kafka_conf_set_pair(rd_kafka_conf_t *conf, const char *pair, char *err,
                        size_t errlen);
/* Make a consumer configuration one of group that never commits: it reads
 * the group's committed offsets from the coordinator without joining as
 * long as it never subscribes. */
int kafka_conf_group_reader(rd_kafka_conf_t *conf, const char *group, char *err,
                            size_t errlen);

/* Create a client of type from conf, which it takes over (also on
 * failure). Its librdkafka log lines go to khost's logger under who
 * (copied); ctx is what its callbacks receive, through kafka_ctx() of
 * their opaque argument. NULL with librdkafka's reason in err. */
rd_kafka_t *kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                      const char *who, void *ctx, char *err, size_t errlen);
/* The ctx given to kafka_new(), from the opaque argument of a callback
 * (rebalance, error, delivery report) of a client it created. */
void *kafka_ctx(void *opaque);
/* Destroy a client from kafka_new() (NULL: nothing); a consumer leaves
 * its group first. */
void kafka_destroy(rd_kafka_t *rk);
/* The same for a consumer that never joined a group: nothing to leave. */
void kafka_destroy_unjoined(rd_kafka_t *rk);

#endif
