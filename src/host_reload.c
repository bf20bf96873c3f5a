/*
 * SIGHUP: apply a new config to a running host (see host_reload() in
 * host.h).
 *
 * A pipeline is the same when its effective config is: its own settings
 * (every key of its group, the plugin's config group included), the
 * resolved plugin path, the global kafka properties and instance_id it
 * inherits. Such a pipeline keeps running untouched, its members keep
 * their group membership. The settings the whole host shares and that
 * cannot change under running members (dedup, http, mock) are refused
 * when changed: the old config keeps running and the message says to
 * restart khost. log_level, log_format and shutdown_timeout apply at once.
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "host_int.h"
#include "log.h"
#include "metrics.h"

/* A readable, complete rendering of a libconfig setting, for comparing. */
static void setting_text(GString *s, const config_setting_t *st) {
  const char *name = config_setting_name(st);
  g_string_append_printf(s, "%s:%d=", name ? name : "",
                         config_setting_type(st));
  switch (config_setting_type(st)) {
  case CONFIG_TYPE_INT:
    g_string_append_printf(s, "%d", config_setting_get_int(st));
    break;
  case CONFIG_TYPE_INT64:
    g_string_append_printf(s, "%lld", config_setting_get_int64(st));
    break;
  case CONFIG_TYPE_FLOAT:
    g_string_append_printf(s, "%.17g", config_setting_get_float(st));
    break;
  case CONFIG_TYPE_BOOL:
    g_string_append_printf(s, "%d", config_setting_get_bool(st));
    break;
  case CONFIG_TYPE_STRING:
    g_string_append_printf(s, "%zu:%s", strlen(config_setting_get_string(st)),
                           config_setting_get_string(st));
    break;
  default: /* group, array, list */
    g_string_append_c(s, '{');
    for (int i = 0; i < config_setting_length(st); i++)
      setting_text(s, config_setting_get_elem(st, (unsigned)i));
    g_string_append_c(s, '}');
  }
  g_string_append_c(s, ';');
}

/* Everything pipeline i of cfg runs with, as one string. */
static char *effective(const cfg_t *cfg, size_t i) {
  const config_setting_t *list = config_lookup(&cfg->lc, "pipelines");
  const config_setting_t *kafka = config_lookup(&cfg->lc, "kafka");
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "plugin=%s;instance_id=%s;",
                         cfg->pipelines[i].plugin_path,
                         cfg->instance_id ? cfg->instance_id : "");
  if (kafka)
    setting_text(s, kafka);
  setting_text(s, config_setting_get_elem(list, (unsigned)i));
  return g_string_free(s, FALSE);
}

static int same_str(const char *a, const char *b) {
  return strcmp(a ? a : "", b ? b : "") == 0;
}

/* The host-wide settings a reload cannot change: the first one that
 * differs into why; 0 when none does. */
static int global_change(const host_t *h, const cfg_t *nc, char *why,
                         size_t len) {
  const cfg_t *oc = h->cfg;
  const char *what = NULL;
  if (!same_str(oc->dedup_path, nc->dedup_path) ||
      oc->retention_ms != nc->retention_ms || oc->durability != nc->durability)
    what = "dedup";
  else if (!same_str(oc->http_listen, nc->http_listen))
    what = "http.listen";
  else if (oc->mock_brokers != nc->mock_brokers ||
           oc->mock_partitions != nc->mock_partitions ||
           oc->mock_sample_records != nc->mock_sample_records ||
           oc->mock_sample_duplicates != nc->mock_sample_duplicates ||
           oc->mock_gen.enabled != nc->mock_gen.enabled)
    what = "mock";
  if (what) {
    snprintf(why, len,
             "%s: %s changed: the running host keeps the old one "
             "(restart khost to apply it)",
             nc->path, what);
    return 1;
  }
  for (size_t i = 0; !h->store && i < nc->n_pipelines; i++)
    if (nc->pipelines[i].dedup) {
      snprintf(why, len,
               "%s:%d: pipelines[%zu]: dedup is on, and this host "
               "runs without a dedup store (restart khost to open it)",
               nc->path, nc->pipelines[i].line, i);
      return 1;
    }
  return 0;
}

/* As `khost check` does, with the plugins already loaded: every
 * pipeline's plugin takes its config (an instance is created and
 * destroyed). A plugin loaded here for a refused config stays loaded
 * until exit, as every plugin does. */
static int check_plugins(host_t *h, const cfg_t *nc, char *err, size_t errlen) {
  size_t off = 0;
  err[0] = '\0';
  for (size_t i = 0; i < nc->n_pipelines && off < errlen; i++) {
    char one[1024];
    plugin_t *plugin;
    plugin_instance_t *inst = NULL;
    plugin_instance_opts_t opts = {
        .pipeline = nc->pipelines[i].name,
        .config = nc->pipelines[i].plugin_config,
        .config_file = nc->path,
    };
    if (host_plugin_for(h, nc, i, &plugin, one, sizeof(one)) == 0 &&
        plugin_instance_create(&inst, plugin, &opts, one, sizeof(one)) == 0) {
      plugin_instance_destroy(inst);
      continue;
    }
    off +=
        (size_t)snprintf(err + off, errlen - off, "%s%s", off ? "\n" : "", one);
  }
  return off ? -1 : 0;
}

/* For pipeline i of nc: the index of the running pipeline it is (same
 * name, same effective config), or -1. */
static ssize_t find_same(const host_t *h, const cfg_t *nc, size_t i) {
  ssize_t found = -1;
  for (size_t j = 0; found < 0 && j < h->n; j++) {
    if (!h->pipelines[j] ||
        strcmp(h->cfg->pipelines[j].name, nc->pipelines[i].name) != 0)
      continue;
    char *a = effective(h->cfg, j), *b = effective(nc, i);
    if (strcmp(a, b) == 0)
      found = (ssize_t)j;
    g_free(a);
    g_free(b);
  }
  return found;
}

/* Stop (finish, commit, leave the group) the running pipelines keep[]
 * does not keep: all asked at once, then each waited for. */
static void stop_dropped(host_t *h, const int *keep) {
  for (size_t j = 0; j < h->n; j++)
    if (!keep[j] && h->pipelines[j])
      pipeline_request_stop(h->pipelines[j]);
  for (size_t j = 0; j < h->n; j++) {
    pipeline_t *pl = h->pipelines[j];
    if (keep[j] || !pl)
      continue;
    pipeline_wait_done(pl, -1);
    pipeline_get_stats(pl, &h->stats[j]);
    pthread_mutex_lock(&h->mu);
    h->pipelines[j] = NULL;
    pthread_mutex_unlock(&h->mu);
    GPtrArray *notes = pipeline_take_closing_notes(pl);
    if (notes)
      g_ptr_array_unref(notes);
    if (pipeline_finish(pl) != 0)
      log_msg(KHOST_LOG_WARNING, h->cfg->pipelines[j].name,
              "had failed before the reload stopped it");
    host_log_summary(h->cfg->pipelines[j].name, &h->stats[j]);
    log_msg(KHOST_LOG_NOTICE, h->cfg->pipelines[j].name,
            "stopped by the reload");
  }
}

/* The per-pipeline arrays of the new config. */
typedef struct next {
  size_t n;
  plugin_t **plugins;
  pipeline_t **pipelines;
  metrics_t **metrics;
  pipeline_stats_t *stats;
  GPtrArray **notes;
} next_t;

/* Start pipeline i of nc (one that is new or changed) into nx. */
static void start_one(host_t *h, const cfg_t *nc, size_t i, next_t *nx) {
  char err[4096];
  const char *name = nc->pipelines[i].name;
  nx->metrics[i] = host_metrics_new(&nc->pipelines[i]);
  if (host_plugin_for(h, nc, i, &nx->plugins[i], err, sizeof(err)) != 0 ||
      host_pipeline_start(h, nc, i, nx->plugins[i], nx->metrics[i],
                          &nx->pipelines[i], err, sizeof(err)) != 0) {
    nx->pipelines[i] = NULL;
    log_msg(KHOST_LOG_ERR, name, "cannot start after the reload: %s", err);
    return;
  }
  log_msg(KHOST_LOG_NOTICE, name, "started by the reload");
}

/* Put nx in place of the host's arrays, with nc in force; frees what the
 * dropped pipelines left. */
static void swap_in(host_t *h, const cfg_t *nc, next_t *nx, const int *keep) {
  pthread_rwlock_wrlock(&h->view);
  pthread_mutex_lock(&h->mu);
  for (size_t j = 0; j < h->n; j++) {
    if (!keep[j])
      metrics_free(h->metrics[j]);
    if (h->notes[j])
      g_ptr_array_unref(h->notes[j]);
  }
  free(h->plugins);
  free(h->pipelines);
  free(h->metrics);
  free(h->stats);
  free(h->notes);
  h->plugins = nx->plugins;
  h->pipelines = nx->pipelines;
  h->metrics = nx->metrics;
  h->stats = nx->stats;
  h->notes = nx->notes;
  h->n = nx->n;
  h->cfg = nc;
  pthread_mutex_unlock(&h->mu);
  pthread_rwlock_unlock(&h->view);
}

/* Stop what goes, start what comes, keep the rest; nc becomes the
 * host's. */
static void apply(host_t *h, cfg_t *nc) {
  int *keep = calloc(h->n ? h->n : 1, sizeof(*keep));
  ssize_t *from = calloc(nc->n_pipelines, sizeof(*from));
  next_t nx = {.n = nc->n_pipelines};
  nx.plugins = calloc(nx.n, sizeof(*nx.plugins));
  nx.pipelines = calloc(nx.n, sizeof(*nx.pipelines));
  nx.metrics = calloc(nx.n, sizeof(*nx.metrics));
  nx.stats = calloc(nx.n, sizeof(*nx.stats));
  nx.notes = calloc(nx.n, sizeof(*nx.notes));
  for (size_t i = 0; i < nx.n; i++) {
    from[i] = find_same(h, nc, i);
    if (from[i] >= 0)
      keep[from[i]] = 1;
  }
  stop_dropped(h, keep);
  g_ptr_array_add(h->cfgs, nc);
  for (size_t i = 0; i < nx.n; i++) {
    if (from[i] < 0) {
      start_one(h, nc, i, &nx);
      continue;
    }
    nx.plugins[i] = h->plugins[from[i]];
    nx.pipelines[i] = h->pipelines[from[i]];
    nx.metrics[i] = h->metrics[from[i]];
    log_msg(KHOST_LOG_INFO, nc->pipelines[i].name, "unchanged: keeps running");
  }
  swap_in(h, nc, &nx, keep);
  free(from);
  free(keep);
}

int host_reload(host_t *h, const char *path) {
  char err[8192];
  cfg_t *nc = calloc(1, sizeof(*nc));
  int rc = -1;
  log_msg(KHOST_LOG_NOTICE, "khost", "SIGHUP: reloading %s", path);
  if (cfg_load(nc, path, err, sizeof(err)) != 0 ||
      global_change(h, nc, err, sizeof(err)) ||
      check_plugins(h, nc, err, sizeof(err)) != 0) {
    log_msg(KHOST_LOG_ERR, "khost",
            "reload refused, the running config stays in force:\n%s", err);
    cfg_free(nc);
    free(nc);
    goto out;
  }
  log_set_level(nc->log_level);
  log_set_json(nc->log_json);
  apply(h, nc);
  log_msg(KHOST_LOG_NOTICE, "khost", "reloaded %s: %zu pipeline%s", path,
          nc->n_pipelines, nc->n_pipelines == 1 ? "" : "s");
  rc = 0;
out:
  return rc;
}
