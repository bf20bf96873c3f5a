/*
 * The host side of khost_host_t and the service table handed to plugins
 * (khost_api_t): logging, config lookups (with the defaults of a declared
 * schema), record headers. Private to the loader (plugin_loader.c).
 *
 * Concurrency & locking: a khost_host_t belongs to one instance and its
 * member thread (or, for init() and fini(), to the main thread); the api
 * functions touch only that host's state, the read-only libconfig tree and
 * the thread-safe logger, so nothing here takes a lock. The plugin's own
 * threads may log while destroy() runs, hence the atomic `closing`.
 */
#ifndef KHOST_PLUGIN_HOST_H
#define KHOST_PLUGIN_HOST_H

#include <glib.h>
#include <libconfig.h>
#include <pthread.h>

#include "khost/plugin.h"
#include "plugin_schema.h"

struct khost_host {
  char *pipeline;
  int member;
  int worker; /* the instance's worker (concurrency > 1), else 0 */
  char *who;  /* "pipeline/member/plugin" */
  char *config_file;
  config_setting_t *group;  /* NULL: the plugin has no settings */
  unsigned char *looked_up; /* one flag per setting of group */
  int n_settings;
  GString *errors;               /* config problems found by the lookups */
  GPtrArray *strings;            /* copies handed out by config_string() */
  const plugin_schema_t *schema; /* the plugin's, or NULL */
  /* destroy() is running on closing_thread (the plugin's own threads may
   * log meanwhile, hence atomic). */
  int closing;
  pthread_t closing_thread;
  void (*closing_note)(void *ctx, const char *line);
  void *closing_ctx;
  /* fail_reason() of the record being handled ("": none); cleared before
   * each handle() call. */
  char reason[256];
  struct state *state; /* the member's host-managed state, or NULL */
  int in_handle;       /* handle() is running: state writes are allowed */
};

/* Fill h (zeroed) for a plugin instance or module: who is taken over
 * (g_malloc'd); the rest is copied. group may be NULL. */
void plugin_host_init(khost_host_t *h, const char *pipeline, int member,
                      char *who, const char *config_file,
                      config_setting_t *group);
/* The service table handed to plugins (also declared in plugin_loader.h). */
const khost_api_t *plugin_host_api(void);
/* Free what h owns (not h). */
void plugin_host_clear(khost_host_t *h);

/* Add "FILE:LINE: KEY: <message>" as one line of h->errors. */
void plugin_host_config_error(khost_host_t *h, const config_setting_t *s,
                              const char *fmt, ...) KHOST_PRINTF(3, 4);
/* Every setting of h's group that no lookup asked for is an unknown
 * setting for plugin_name (the check without a schema). */
void plugin_host_check_unknown(khost_host_t *h, const char *plugin_name);

#endif
