/*
 * Loading handler plugins (dlopen) and running their instances.
 *
 * Plugins are opened RTLD_NOW | RTLD_LOCAL and never dlclose()d while any
 * instance may run: plugin_unload() is for the end of the process (or a
 * plugin that was rejected before any instance was created).
 */
#ifndef KHOST_PLUGIN_LOADER_H
#define KHOST_PLUGIN_LOADER_H

#include <libconfig.h>
#include <stddef.h>

#include "khost/plugin.h"

typedef struct plugin plugin_t;
typedef struct plugin_instance plugin_instance_t;

/* Load and validate the plugin at path. Errors name the path and the reason
 * (dlopen's message, missing khost_plugin_entry, ABI mismatch naming both
 * versions, missing handle/create). */
int plugin_load(plugin_t **out, const char *path, char *err, size_t errlen);
/* Wrap a descriptor compiled into the process (built-in plugins, tests):
 * the same validation as plugin_load(), with label standing for the path in
 * messages. plugin_unload() then only frees the wrapper. */
int plugin_load_builtin(plugin_t **out, const char *label,
                        const khost_plugin_t *desc, char *err, size_t errlen);
/* dlclose() and free. Only at the end of the process, after every instance
 * was destroyed and every member thread joined, or for a plugin that never
 * had an instance. */
void plugin_unload(plugin_t *p);
const khost_plugin_t *plugin_descriptor(const plugin_t *p);
const char *plugin_path(const plugin_t *p);

typedef struct plugin_instance_opts {
  const char *pipeline;     /* pipeline name */
  int member;               /* member index */
  config_setting_t *config; /* the plugin's config group, or NULL */
  const char *config_file;  /* for error messages */
  /* Optional: the notices the plugin logs from destroy() (its closing
   * summary, e.g. from its own database) go to closing_note(ctx, line)
   * instead of the log, on the thread that destroys the instance. */
  void (*closing_note)(void *ctx, const char *line);
  void *closing_ctx;
} plugin_instance_opts_t;

/* Create an instance. Fails (-1, *out NULL) with one problem per line:
 *   "pipeline/member/plugin: <the plugin's own message>" when create() fails,
 *   "FILE:LINE: pipelines[N].config.KEY: expected a string" (an integer, ...)
 *     for a lookup of the wrong type,
 *   "FILE:LINE: pipelines[N].config.KEY: unknown setting for plugin NAME"
 *     for a setting create() never looked up.
 * FILE is the setting's source file, else opts->config_file. When create()
 * had succeeded, destroy() is called before returning the failure. */
int plugin_instance_create(plugin_instance_t **out, plugin_t *p,
                           const plugin_instance_opts_t *opts, char *err,
                           size_t errlen);
/* Call handle(); values outside khost_result_t become KHOST_FAIL. */
khost_result_t plugin_instance_handle(plugin_instance_t *pi,
                                      const khost_record_t *rec);
/* Call flush() when the plugin has one; 0 otherwise. */
int plugin_instance_flush(plugin_instance_t *pi, char *err, size_t errlen);
void plugin_instance_destroy(plugin_instance_t *pi);
/* "pipeline/member/plugin", for log lines. */
const char *plugin_instance_who(const plugin_instance_t *pi);

/* The host service table handed to plugins. */
const khost_api_t *plugin_host_api(void);

/* khost_record_t.host_priv is the record's `const rd_kafka_headers_t *`
 * (NULL when it has no headers); the api's header_* functions read it. */

#endif
