/*
 * The host (see host.h).
 */
#include "host.h"
#include "host_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <glib.h>

#include "dedup.h"
#include "demo.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "store.h"
#include "store_pg.h"

/* The pruner runs often enough to keep memory near the retention window,
 * and at most once a minute. */
static int64_t prune_interval(int64_t retention_ms) {
  int64_t every = retention_ms / 10;
  if (every > 60000)
    every = 60000;
  return every < 1000 ? 1000 : every;
}

/* What the listener and the monitor may read of h (host_view.h). */
static host_view_t view_of(host_t *h);

/* Load and start (init()) pipeline i's plugin; errors name the config
 * file, line and key. */
static int load_plugin(const cfg_t *cfg, size_t i, plugin_t **out, char *err,
                       size_t errlen) {
  char why[1024];
  const cfg_pipeline_t *pc = &cfg->pipelines[i];
  if (plugin_load(out, pc->plugin_path, why, sizeof(why)) == 0) {
    if (plugin_start(*out, why, sizeof(why)) == 0)
      return 0;
    plugin_unload(*out);
    *out = NULL;
  }
  snprintf(err, errlen, "%s:%d: pipelines[%zu].plugin: %.700s", cfg->path,
           pc->plugin_line, i, why);
  return -1;
}

int host_plugin_for(host_t *h, const cfg_t *cfg, size_t i, plugin_t **out,
                    char *err, size_t errlen) {
  const char *path = cfg->pipelines[i].plugin_path;
  for (guint j = 0; j < h->loaded->len; j++)
    if (strcmp(plugin_path(g_ptr_array_index(h->loaded, j)), path) == 0) {
      *out = g_ptr_array_index(h->loaded, j);
      return 0;
    }
  if (load_plugin(cfg, i, out, err, errlen) != 0)
    return -1;
  g_ptr_array_add(h->loaded, *out);
  return 0;
}

static int load_plugins(host_t *h, char *err, size_t errlen) {
  for (size_t i = 0; i < h->n; i++)
    if (host_plugin_for(h, h->cfg, i, &h->plugins[i], err, errlen) != 0)
      return -1;
  return 0;
}

/* The shared store. Its schema is made by `khost store init`, never by
 * run: a host started against the wrong database creates nothing there.
 * Its pruner runs on every host, in small transactions. */
static int open_pg(host_t *h, char *err, size_t errlen) {
  const cfg_t *cfg = h->cfg;
  store_pg_opts_t o = {.conninfo = cfg->store_conninfo,
                       .lease_ms = cfg->store_lease_ms,
                       .retention_ms = cfg->retention_ms,
                       .prune_interval_ms = prune_interval(cfg->retention_ms)};
  store_stats_t st;
  char *shown;
  if (store_pg_open(&h->store, &o, err, errlen) != 0)
    return -1;
  store_stats(h->store, &st);
  shown = store_pg_display(cfg->store_conninfo);
  log_msg(KHOST_LOG_INFO, "dedup", "postgresql store (%s): about %zu event IDs",
          shown, st.ids);
  g_free(shown);
  return 0;
}

static int open_dedup(host_t *h, char *err, size_t errlen) {
  const cfg_t *cfg = h->cfg;
  int wanted = 0;
  for (size_t i = 0; i < h->n; i++)
    wanted |= cfg->pipelines[i].dedup;
  if (!wanted)
    return 0;
  if (cfg->store_backend == CFG_STORE_POSTGRESQL)
    return open_pg(h, err, errlen);
  dedup_opts_t o = {
      .path = cfg->dedup_path,
      .retention_ms = cfg->retention_ms,
      .durability_full = cfg->durability == CFG_DURABILITY_FULL,
      .prune_interval_ms = prune_interval(cfg->retention_ms),
      .memory_ids = dedup_memory_ids(cfg->dedup_memory),
  };
  store_stats_t st;
  if (store_sqlite_open(&h->store, &o, err, errlen) != 0)
    return -1;
  store_stats(h->store, &st);
  log_msg(KHOST_LOG_INFO, "dedup", "%s: %zu event IDs remembered",
          cfg->dedup_path, st.ids);
  return 0;
}

metrics_t *host_metrics_new(const cfg_pipeline_t *pc) {
  /* A member whose loop stands still longer than a handle() may take is
   * stuck. */
  int64_t stuck = pc->handler_timeout_ms > 0 ? pc->handler_timeout_ms : 60000;
  return metrics_new(pc->name, pc->members, stuck);
}

static void open_metrics(host_t *h) {
  h->metrics = calloc(h->n, sizeof(*h->metrics));
  for (size_t i = 0; i < h->n; i++)
    h->metrics[i] = host_metrics_new(&h->cfg->pipelines[i]);
}

int host_open(host_t **out, const cfg_t *cfg, const host_opts_t *opts,
              char *err, size_t errlen) {
  host_t *h = calloc(1, sizeof(*h));
  int rc = HOST_EXIT_CONFIG;
  pthread_mutex_init(&h->mu, NULL);
  pthread_rwlock_init(&h->view, NULL);
  h->loaded = g_ptr_array_new();
  h->cfgs = g_ptr_array_new();
  h->cfg = cfg;
  h->opts = *opts;
  h->n = cfg->n_pipelines;
  h->plugins = calloc(h->n, sizeof(*h->plugins));
  h->pipelines = calloc(h->n, sizeof(*h->pipelines));
  h->stats = calloc(h->n, sizeof(*h->stats));
  h->notes = calloc(h->n, sizeof(*h->notes));
  open_metrics(h);
  host_view_t view = view_of(h);
  if (cfg->http_listen[0] &&
      http_start(&h->http, cfg->http_listen, &view, err, errlen) != 0)
    goto fail;
  if (load_plugins(h, err, errlen) != 0)
    goto fail;
  /* A shared store that refuses at start is a setting to fix (address,
   * credentials, schema), not a fault of this run. */
  rc = cfg->store_backend == CFG_STORE_POSTGRESQL ? HOST_EXIT_CONFIG
                                                  : HOST_EXIT_RUNTIME;
  if (open_dedup(h, err, errlen) != 0)
    goto fail;
  if (cfg->mock_brokers > 0 && demo_open(&h->demo, cfg, err, errlen) != 0)
    goto fail;
  *out = h;
  return 0;
fail:
  host_close(h);
  return rc;
}

/* A plugin's FATAL with on_fatal = stop_host: every pipeline stops. */
static void stop_host(void *ctx) {
  host_t *h = ctx;
  log_msg(KHOST_LOG_ERR, "khost",
          "a pipeline failed (on_fatal = stop_host): stopping every pipeline");
  host_request_stop(h);
}

int host_pipeline_start(host_t *h, const cfg_t *cfg, size_t i, plugin_t *plugin,
                        metrics_t *mx, pipeline_t **out, char *err,
                        size_t errlen) {
  const cfg_pipeline_t *pc = &cfg->pipelines[i];
  pipeline_env_t env = {
      .cfg = cfg,
      .pc = pc,
      .plugin = plugin,
      .store = pc->dedup ? h->store : NULL,
      .bootstrap_servers = h->demo ? mock_bootstraps(demo_mock(h->demo)) : NULL,
      .exit_at_end = h->opts.exit_at_end,
      .from_beginning = h->opts.from_beginning,
      .stop_host = stop_host,
      .stop_host_ctx = h,
      /* Shown by host_report(), under what the generator produced. */
      .keep_closing_notes = demo_generated(h->demo),
      .metrics = mx,
  };
  return pipeline_start(out, &env, err, errlen);
}

int host_start(host_t *h, char *err, size_t errlen) {
  for (size_t i = 0; i < h->n; i++) {
    pipeline_t *pl;
    int rc = host_pipeline_start(h, h->cfg, i, h->plugins[i], h->metrics[i],
                                 &pl, err, errlen);
    pthread_mutex_lock(&h->mu);
    h->pipelines[i] = rc == 0 ? pl : NULL;
    pthread_mutex_unlock(&h->mu);
    if (rc != 0) {
      host_request_stop(h);
      host_wait(h, -1);
      host_finish(h);
      return HOST_EXIT_CONFIG;
    }
  }
  host_view_t view = view_of(h);
  h->monitor = monitor_start(&view);
  return 0;
}

void host_request_stop(host_t *h) {
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n; i++)
    if (h->pipelines[i])
      pipeline_request_stop(h->pipelines[i]);
  pthread_mutex_unlock(&h->mu);
}

int host_done(host_t *h) {
  for (size_t i = 0; i < h->n; i++)
    if (h->pipelines[i] && !pipeline_done(h->pipelines[i]))
      return 0;
  return 1;
}

int host_stopping(host_t *h) {
  int stopping = 1;
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n; i++)
    if (h->pipelines[i] && !pipeline_stopping(h->pipelines[i]))
      stopping = 0;
  pthread_mutex_unlock(&h->mu);
  return stopping;
}

int host_wait(host_t *h, int64_t timeout_ms) {
  for (size_t i = 0; i < h->n; i++) {
    if (!h->pipelines[i])
      continue;
    /* One overall deadline is close enough: pipelines stop together. */
    if (!pipeline_wait_done(h->pipelines[i], timeout_ms))
      return 0;
  }
  return 1;
}

void host_log_summary(const char *pipeline, const pipeline_stats_t *s) {
  log_msg(KHOST_LOG_NOTICE, pipeline,
          "handled %" PRIu64 ", duplicates skipped %" PRIu64 ", failed %" PRIu64
          ", retries %" PRIu64 ", without event ID %" PRIu64
          ", offset commits %" PRIu64,
          s->handled, s->duplicates, s->failed, s->retries, s->no_id,
          s->commits);
}

int host_finish(host_t *h) {
  int rc = HOST_EXIT_OK;
  for (size_t i = 0; i < h->n; i++) {
    if (!h->pipelines[i])
      continue;
    pipeline_t *pl = h->pipelines[i];
    pipeline_get_stats(pl, &h->stats[i]);
    h->notes[i] = pipeline_take_closing_notes(pl);
    pthread_mutex_lock(&h->mu);
    h->pipelines[i] = NULL;
    pthread_mutex_unlock(&h->mu);
    if (pipeline_finish(pl) != 0)
      rc = HOST_EXIT_RUNTIME;
    host_log_summary(h->cfg->pipelines[i].name, &h->stats[i]);
  }
  h->finished = 1;
  return rc;
}

void host_close(host_t *h) {
  if (!h)
    return;
  /* First: the monitor and the listener read everything below. */
  monitor_stop(h->monitor);
  http_stop(h->http);
  store_close(h->store);
  demo_close(h->demo);
  /* Every member thread is joined: unloading is safe now. */
  for (guint i = 0; i < h->loaded->len; i++)
    plugin_unload(g_ptr_array_index(h->loaded, i));
  g_ptr_array_free(h->loaded, TRUE);
  for (size_t i = 0; h->notes && i < h->n; i++)
    if (h->notes[i])
      g_ptr_array_unref(h->notes[i]);
  free(h->notes);
  for (size_t i = 0; h->metrics && i < h->n; i++)
    metrics_free(h->metrics[i]);
  free(h->metrics);
  free(h->plugins);
  free(h->pipelines);
  free(h->stats);
  for (guint i = 0; i < h->cfgs->len; i++) {
    cfg_free(g_ptr_array_index(h->cfgs, i));
    free(g_ptr_array_index(h->cfgs, i));
  }
  g_ptr_array_free(h->cfgs, TRUE);
  pthread_rwlock_destroy(&h->view);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

int host_report(host_t *h, FILE *out) {
  if (!h->finished || !demo_generated(h->demo))
    return -1;
  demo_row_t *rows = calloc(h->n ? h->n : 1, sizeof(*rows));
  for (size_t i = 0; i < h->n; i++)
    rows[i] = (demo_row_t){
        .pc = &h->cfg->pipelines[i],
        .stats = &h->stats[i],
        .plugin = plugin_descriptor(h->plugins[i])->name,
        .notes = h->notes[i],
    };
  int bad = demo_report(h->demo, rows, h->n, out);
  free(rows);
  return bad;
}

size_t host_describe_busy(host_t *h, char *buf, size_t len) {
  size_t n = 0;
  if (len > 0)
    buf[0] = '\0';
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n; i++)
    if (h->pipelines[i])
      n += pipeline_describe_busy(h->pipelines[i], buf, len);
  pthread_mutex_unlock(&h->mu);
  return n;
}

/* Readers of the per-pipeline state from another thread (the HTTP
 * listener, the monitor) hold the view lock shared around what they read,
 * so that a reload cannot change the pipelines under them. */
static void view_begin_of(void *host) {
  host_t *h = host;
  pthread_rwlock_rdlock(&h->view);
}

static void view_end_of(void *host) {
  host_t *h = host;
  pthread_rwlock_unlock(&h->view);
}

size_t host_pipeline_count(const host_t *h) {
  return h->n;
}

void host_pipeline_stats(host_t *h, size_t i, pipeline_stats_t *out) {
  /* Under mu: the HTTP thread asks while host_finish() frees pipelines. */
  pthread_mutex_lock(&h->mu);
  if (h->pipelines[i])
    pipeline_get_stats(h->pipelines[i], out);
  else
    *out = h->stats[i];
  pthread_mutex_unlock(&h->mu);
}

static int pipeline_ready_of(void *host, size_t i, GPtrArray *why) {
  host_t *h = host;
  pthread_mutex_lock(&h->mu);
  pipeline_t *pl = h->pipelines[i];
  int stopping = pl ? pipeline_stopping(pl) : h->finished;
  pthread_mutex_unlock(&h->mu);
  /* Stopped alone (on_fatal = stop_pipeline), or with the host: not
   * ready, whatever its members last reported. */
  if (!stopping)
    return metrics_ready(h->metrics[i], why);
  g_ptr_array_add(why,
                  g_strdup_printf("%s has stopped", h->cfg->pipelines[i].name));
  return 0;
}

const cfg_t *host_config(const host_t *h) {
  return h->cfg;
}

static metrics_t *metrics_of(void *host, size_t i) {
  host_t *h = host;
  return h->metrics[i];
}

static int64_t dedup_ids_of(void *host) {
  host_t *h = host;
  store_stats_t st;
  if (!h->store)
    return -1;
  store_stats(h->store, &st);
  return (int64_t)st.ids;
}

static int64_t dedup_bytes_of(void *host) {
  host_t *h = host;
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  int64_t bytes = 0;
  struct stat st;
  if (!h->store)
    return -1;
  for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
    char *path = g_strconcat(h->cfg->dedup_path, suffixes[i], NULL);
    if (stat(path, &st) == 0)
      bytes += st.st_size;
    g_free(path);
  }
  return bytes;
}

static int64_t records_left_of(void *host) {
  host_t *h = host;
  int64_t left = -1;
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n; i++) {
    pipeline_stats_t s;
    if (!h->pipelines[i])
      continue;
    pipeline_get_stats(h->pipelines[i], &s);
    if (s.left >= 0)
      left = (left < 0 ? 0 : left) + s.left;
  }
  pthread_mutex_unlock(&h->mu);
  return left;
}

/* The public accessors, in the shape of the view's table. */
static size_t pipeline_count_of(void *host) {
  return host_pipeline_count(host);
}

static const cfg_t *config_of(void *host) {
  return host_config(host);
}

static void pipeline_stats_of(void *host, size_t i, pipeline_stats_t *out) {
  host_pipeline_stats(host, i, out);
}

static int stopping_of(void *host) {
  return host_stopping(host);
}

static const host_view_ops_t view_ops = {
    .begin = view_begin_of,
    .end = view_end_of,
    .pipeline_count = pipeline_count_of,
    .config = config_of,
    .metrics = metrics_of,
    .pipeline_stats = pipeline_stats_of,
    .pipeline_ready = pipeline_ready_of,
    .stopping = stopping_of,
    .dedup_ids = dedup_ids_of,
    .dedup_bytes = dedup_bytes_of,
    .records_left = records_left_of,
};

static host_view_t view_of(host_t *h) {
  return (host_view_t){.ops = &view_ops, .host = h};
}

int host_http_port(const host_t *h) {
  return http_port(h->http);
}

mock_t *host_mock(host_t *h) {
  return h->demo ? demo_mock(h->demo) : NULL;
}

static int check_pipeline(const cfg_t *cfg, size_t i, char *err,
                          size_t errlen) {
  const cfg_pipeline_t *pc = &cfg->pipelines[i];
  plugin_t *plugin = NULL;
  plugin_instance_t *inst = NULL;
  plugin_instance_opts_t opts = {
      .pipeline = pc->name,
      .member = 0,
      .config = pc->plugin_config,
      .config_file = cfg->path,
  };
  if (load_plugin(cfg, i, &plugin, err, errlen) != 0)
    return -1;
  int rc = plugin_instance_create(&inst, plugin, &opts, err, errlen);
  if (rc == 0)
    plugin_instance_destroy(inst);
  plugin_unload(plugin);
  return rc;
}

int host_check(const cfg_t *cfg, char *err, size_t errlen) {
  int rc = 0;
  size_t off = 0;
  err[0] = '\0';
  for (size_t i = 0; i < cfg->n_pipelines && off < errlen; i++) {
    char one[1024];
    if (check_pipeline(cfg, i, one, sizeof(one)) == 0)
      continue;
    rc = HOST_EXIT_CONFIG;
    off +=
        (size_t)snprintf(err + off, errlen - off, "%s%s", off ? "\n" : "", one);
  }
  return rc;
}
