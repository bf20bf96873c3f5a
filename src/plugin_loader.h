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
#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "khost/plugin.h"
#include "plugin_schema.h"

typedef struct plugin plugin_t;
typedef struct plugin_instance plugin_instance_t;

/* Load and validate the plugin at path. Errors name the path and the reason
 * (dlopen's message, missing khost_plugin_entry, a major ABI version other
 * than the host's naming both versions, missing handle/create, a bad config
 * schema). Any minor version loads. Calls nothing of the plugin but its
 * entry function: instances need plugin_start() first. */
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
/* Call the plugin's init() (ABI 1.1), once per loaded object however many
 * plugin_t share it; plugin_unload() of the last one calls fini(). Main
 * thread, before the first instance. Fails (-1) with "PATH: plugin NAME:
 * init() failed: <the plugin's message>". */
int plugin_start(plugin_t *p, char *err, size_t errlen);
/* The descriptor as this khost knows it: every field the plugin's
 * struct_size does not cover is NULL (struct_size is the plugin's). */
const khost_plugin_t *plugin_descriptor(const plugin_t *p);
/* The declared config schema, or NULL when the plugin declares none. */
const plugin_schema_t *plugin_schema(const plugin_t *p);
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
  /* Optional: the member's host-managed state (khost_api_t.state_*). */
  struct state *state;
  /* The instance's worker (khost_api_t.worker_index), 0 with one. */
  int worker;
} plugin_instance_opts_t;

/* Create an instance. Fails (-1, *out NULL) with one problem per line:
 *   "pipeline/member/plugin: <the plugin's own message>" when create() fails,
 *   "FILE:LINE: pipelines[N].config.KEY: expected a string" (an integer, ...)
 *     for a lookup of the wrong type, or a setting of the wrong type for the
 *     plugin's schema,
 *   "FILE:LINE: pipelines[N].config.KEY: unknown setting for plugin NAME"
 *     for a setting create() never looked up (no schema) or the schema does
 *     not declare,
 *   "FILE:LINE: pipelines[N].config: missing setting KEY (a string),
 *     required by plugin NAME" for a required one.
 * FILE is the setting's source file, else opts->config_file. Schema
 * problems are found before create(), which is not called then. When
 * create() had succeeded, destroy() is called before returning the
 * failure. */
int plugin_instance_create(plugin_instance_t **out, plugin_t *p,
                           const plugin_instance_opts_t *opts, char *err,
                           size_t errlen);
/* Call handle(); values outside khost_result_t become KHOST_FAIL. */
khost_result_t plugin_instance_handle(plugin_instance_t *pi,
                                      const khost_record_t *rec);
/* The reason the plugin gave with fail_reason() during the last
 * handle() call, or NULL. Valid until the next call. */
const char *plugin_instance_reason(const plugin_instance_t *pi);
/* Call flush() when the plugin has one; 0 otherwise. */
int plugin_instance_flush(plugin_instance_t *pi, char *err, size_t errlen);
void plugin_instance_destroy(plugin_instance_t *pi);
/* Call assigned() / revoked() (ABI 1.1) when the plugin has them and parts
 * is not empty; on the member's thread, from its rebalance handling. */
void plugin_instance_assigned(plugin_instance_t *pi,
                              const rd_kafka_topic_partition_list_t *parts);
void plugin_instance_revoked(plugin_instance_t *pi,
                             const rd_kafka_topic_partition_list_t *parts,
                             int lost);
/* "pipeline/member/plugin", for log lines. */
const char *plugin_instance_who(const plugin_instance_t *pi);

/* The host service table handed to plugins. */
const khost_api_t *plugin_host_api(void);

/* khost_record_t.host_priv is the record's `const rd_kafka_headers_t *`
 * (NULL when it has no headers); the api's header_* functions read it. */

#endif
