/*
 * What the operators' side (http.c, status.c, prom.c, monitor.c) may read
 * of a running host: a table of calls and the host they are made on,
 * filled by host.c and handed down, so that those modules never call up
 * into the host. Every call is safe from any thread between host_open()
 * and host_close(); the per-pipeline ones are made between begin() and
 * end(), which keep a reload from changing the pipelines under them.
 */
#ifndef KHOST_HOST_VIEW_H
#define KHOST_HOST_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "config.h"
#include "metrics.h"
#include "pipeline.h"

typedef struct host_view_ops {
  void (*begin)(void *host);
  void (*end)(void *host);
  size_t (*pipeline_count)(void *host);
  const cfg_t *(*config)(void *host);
  metrics_t *(*metrics)(void *host, size_t i);
  void (*pipeline_stats)(void *host, size_t i, pipeline_stats_t *out);
  /* 1 when pipeline i is ready; else 0 with the reasons added to why. */
  int (*pipeline_ready)(void *host, size_t i, GPtrArray *why);
  /* 1 once every pipeline has been asked to stop, or has stopped. */
  int (*stopping)(void *host);
  /* Event IDs the store remembers, and the bytes of its files; -1
   * without a store. */
  int64_t (*dedup_ids)(void *host);
  int64_t (*dedup_bytes)(void *host);
  /* --exit-at-end: the records left to go; -1 without it. */
  int64_t (*records_left)(void *host);
} host_view_ops_t;

typedef struct host_view {
  const host_view_ops_t *ops;
  void *host;
} host_view_t;

static inline void view_begin(const host_view_t *v) {
  v->ops->begin(v->host);
}
static inline void view_end(const host_view_t *v) {
  v->ops->end(v->host);
}
static inline size_t view_pipeline_count(const host_view_t *v) {
  return v->ops->pipeline_count(v->host);
}
static inline const cfg_t *view_config(const host_view_t *v) {
  return v->ops->config(v->host);
}
static inline metrics_t *view_metrics(const host_view_t *v, size_t i) {
  return v->ops->metrics(v->host, i);
}
static inline void view_pipeline_stats(const host_view_t *v, size_t i,
                                       pipeline_stats_t *out) {
  v->ops->pipeline_stats(v->host, i, out);
}
static inline int view_pipeline_ready(const host_view_t *v, size_t i,
                                      GPtrArray *why) {
  return v->ops->pipeline_ready(v->host, i, why);
}
static inline int view_stopping(const host_view_t *v) {
  return v->ops->stopping(v->host);
}
static inline int64_t view_dedup_ids(const host_view_t *v) {
  return v->ops->dedup_ids(v->host);
}
static inline int64_t view_dedup_bytes(const host_view_t *v) {
  return v->ops->dedup_bytes(v->host);
}
static inline int64_t view_records_left(const host_view_t *v) {
  return v->ops->records_left(v->host);
}

#endif
