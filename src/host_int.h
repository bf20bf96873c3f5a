/*
 * The host's insides, shared by host.c and host_reload.c (SIGHUP).
 */
#ifndef KHOST_HOST_INT_H
#define KHOST_HOST_INT_H

#include <glib.h>
#include <pthread.h>

#include "demo.h"
#include "host.h"
#include "http.h"
#include "monitor.h"
#include "store.h"

struct host {
  pthread_mutex_t mu; /* guards pipelines[] against a concurrent stop */
  /* Readers of the per-pipeline arrays from other threads (the HTTP
   * listener, the monitor) hold it shared; a reload swaps them holding it
   * exclusive. */
  pthread_rwlock_t view;
  const cfg_t *cfg; /* the config in force (the newest one applied) */
  host_opts_t opts;
  demo_t *demo;       /* the config's mock group, or NULL */
  store_t *store;     /* the dedup store, when a pipeline has dedup on */
  plugin_t **plugins; /* per pipeline; shared when the path is the same */
  GPtrArray *loaded;  /* every plugin_t loaded, each once; unloaded at close */
  GPtrArray *cfgs;    /* configs applied by reloads (owned): running
                         pipelines point into them */
  pipeline_t **pipelines;
  pipeline_stats_t *stats; /* filled by host_finish() */
  GPtrArray **notes;       /* per pipeline: its plugin's closing notes */
  size_t n;
  int finished;
  metrics_t **metrics; /* per pipeline */
  http_t *http;        /* NULL when http.listen is "" */
  monitor_t *monitor;  /* throughput samples, systemd; after host_start() */
};

/* Pipeline i of cfg's plugin: one already loaded from the same path, else
 * loaded and started now. Errors name the config file, line and key. */
int host_plugin_for(host_t *h, const cfg_t *cfg, size_t i, plugin_t **out,
                    char *err, size_t errlen);
metrics_t *host_metrics_new(const cfg_pipeline_t *pc);
/* Start pipeline i of cfg with plugin and metrics. */
int host_pipeline_start(host_t *h, const cfg_t *cfg, size_t i, plugin_t *plugin,
                        metrics_t *mx, pipeline_t **out, char *err,
                        size_t errlen);
void host_log_summary(const char *pipeline, const pipeline_stats_t *s);

#endif
