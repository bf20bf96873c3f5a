/*
 * Plugin loader: opens handler plugins, validates their descriptor, calls
 * their module callbacks (init, fini) and runs their instances; the host
 * service table they are handed is plugin_host.c's.
 *
 * Concurrency & locking: plugin_load(), plugin_start() and plugin_unload()
 * run on the main thread, at start and at exit; the registry of started
 * objects has a mutex all the same. An instance and its khost_host_t
 * belong to one member thread, which makes every call on them.
 */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_trust.h"
#include "log.h"
#include "plugin_host.h"
#include "plugin_schema.h"

#define PL_ENTRY_SYMBOL "khost_plugin_entry"

/* ABI 1.0 descriptors reach at least up to and including destroy. */
#define PL_DESC_MIN_SIZE                                                       \
  (offsetof(khost_plugin_t, destroy) + sizeof(((khost_plugin_t *)0)->destroy))

typedef const khost_plugin_t *(*pl_entry_fn)(void);

struct plugin {
  void *dl; /* NULL for a built-in plugin */
  char *path;
  const khost_plugin_t *desc; /* the plugin's own */
  /* The descriptor as this khost knows it: the fields the plugin's
   * struct_size covers, the others NULL. */
  khost_plugin_t known;
  plugin_schema_t *schema;  /* NULL: the lookup-based check */
  struct pl_module *module; /* set by plugin_start() */
};

struct plugin_instance {
  plugin_t *plugin;
  khost_host_t host;
  void *state;
  int warned_result;
};

static void pl_module_leave(plugin_t *p);

/* ------------------------------------------------------------ loading */

/* dlerror()'s text without a leading "file: " (our messages name the path
 * already). */
static const char *pl_dlerror(const char *file) {
  const char *msg = dlerror();
  size_t n = strlen(file);
  if (!msg)
    return "unknown dynamic loader error";
  if (strncmp(msg, file, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
    return msg + n + 2;
  return msg;
}

static int pl_validate(const char *path, const khost_plugin_t *d, char *err,
                       size_t errlen) {
  if (!d) {
    snprintf(err, errlen, "%s: %s() returned NULL", path, PL_ENTRY_SYMBOL);
    return -1;
  }
  if (d->abi_major != KHOST_ABI_MAJOR) {
    /* Any minor loads: an older one sees the fields it knows, a newer one
     * probes the host's with KHOST_API_HAS() (plugin.h). */
    snprintf(err, errlen,
             "%s: built for khost plugin ABI %u.%u, this khost provides "
             "%u.%u (rebuild the plugin against this khost's "
             "<khost/plugin.h>)",
             path, (unsigned)d->abi_major, (unsigned)d->abi_minor,
             (unsigned)KHOST_ABI_MAJOR, (unsigned)KHOST_ABI_MINOR);
    return -1;
  }
  if (d->struct_size < PL_DESC_MIN_SIZE) {
    snprintf(err, errlen,
             "%s: plugin descriptor is %zu bytes, khost plugin ABI %u.%u "
             "needs at least %zu",
             path, d->struct_size, (unsigned)d->abi_major,
             (unsigned)d->abi_minor, (size_t)PL_DESC_MIN_SIZE);
    return -1;
  }
  if (!d->name || !d->name[0]) {
    snprintf(err, errlen, "%s: plugin descriptor has no name", path);
    return -1;
  }
  if (!d->create || !d->handle) {
    snprintf(err, errlen, "%s: plugin %s has no %s() callback", path, d->name,
             d->create ? "handle" : "create");
    return -1;
  }
  return 0;
}

/* The descriptor's ABI 1.1 part, read only as far as struct_size goes: a
 * 1.0 plugin's descriptor ends at destroy, a newer one's goes on past the
 * fields this khost knows. */
static void pl_known(khost_plugin_t *known, const khost_plugin_t *d) {
  size_t n = d->struct_size < sizeof(*known) ? d->struct_size : sizeof(*known);
  memset(known, 0, sizeof(*known));
  memcpy(known, d, n);
}

static int pl_wrap(plugin_t **out, const char *path, const khost_plugin_t *d,
                   void *dl, char *err, size_t errlen) {
  char why[512];
  if (pl_validate(path, d, err, errlen) < 0)
    return -1;
  plugin_t *p = g_new0(plugin_t, 1);
  pl_known(&p->known, d);
  if (p->known.settings &&
      plugin_schema_new(&p->schema, p->known.settings, why, sizeof(why)) < 0) {
    snprintf(err, errlen, "%s: plugin %s declares a bad config schema: %s",
             path, d->name, why);
    g_free(p);
    return -1;
  }
  p->dl = dl;
  p->path = g_strdup(path);
  p->desc = d;
  *out = p;
  return 0;
}

/* Code that someone else can replace is not loaded, as sshd refuses key
 * files others can write (the rule: file_trust.h). */
static int pl_check_trust(const char *path, const char *file, char *err,
                          size_t errlen) {
  char why[1536];

  if (file_trust_check(file, why, sizeof(why)) == 0)
    return 0;
  snprintf(err, errlen, "%s: refusing to load a plugin: %s", path, why);
  return -1;
}

int plugin_load(plugin_t **out, const char *path, char *err, size_t errlen) {
  int rc = -1;
  /* Without a '/', dlopen() would search the library path, not the file. */
  char *file =
      strchr(path, '/') ? g_strdup(path) : g_strconcat("./", path, NULL);
  *out = NULL;
  void *dl = NULL;
  if (pl_check_trust(path, file, err, errlen) != 0)
    goto out;
  dlerror();
  dl = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    snprintf(err, errlen, "%s: cannot load plugin: %s", path, pl_dlerror(file));
    goto out;
  }
  pl_entry_fn entry = (pl_entry_fn)dlsym(dl, PL_ENTRY_SYMBOL);
  if (!entry) {
    snprintf(err, errlen, "%s: not a khost plugin: it does not export %s()",
             path, PL_ENTRY_SYMBOL);
    goto out;
  }
  /* Messages are formatted here, before dlclose() unmaps the descriptor. */
  if (pl_wrap(out, path, entry(), dl, err, errlen) < 0)
    goto out;
  dl = NULL;
  rc = 0;
out:
  if (dl)
    dlclose(dl);
  g_free(file);
  return rc;
}

int plugin_load_builtin(plugin_t **out, const char *label,
                        const khost_plugin_t *desc, char *err, size_t errlen) {
  *out = NULL;
  return pl_wrap(out, label, desc, NULL, err, errlen);
}

void plugin_unload(plugin_t *p) {
  if (!p)
    return;
  pl_module_leave(p);
  plugin_schema_free(p->schema);
  if (p->dl)
    dlclose(p->dl);
  g_free(p->path);
  g_free(p);
}

const khost_plugin_t *plugin_descriptor(const plugin_t *p) {
  return &p->known;
}

const plugin_schema_t *plugin_schema(const plugin_t *p) {
  return p->schema;
}

const char *plugin_path(const plugin_t *p) {
  return p->path;
}

/* ------------------------------------------------------------ modules */

/* One per loaded object, however many plugin_t share it: two config paths
 * may name one file, which dlopen() maps once, and init() and fini() run
 * once per object. */
typedef struct pl_module {
  const khost_plugin_t *desc; /* the plugin's own: identifies the object */
  int refs;
  khost_host_t *host; /* handed to init() and fini() */
} pl_module_t;

static pthread_mutex_t pl_modules_mu = PTHREAD_MUTEX_INITIALIZER;
static GPtrArray *pl_modules; /* pl_module_t *; NULL when empty */

/* A host without pipeline, member or config: its log lines name the
 * plugin. */
static khost_host_t *module_host_new(const char *name) {
  khost_host_t *h = g_new0(khost_host_t, 1);
  plugin_host_init(h, NULL, -1, g_strdup(name), NULL, NULL);
  return h;
}

static void module_free(pl_module_t *m) {
  plugin_host_clear(m->host);
  g_free(m->host);
  g_free(m);
}

static pl_module_t *module_find(const khost_plugin_t *desc) {
  for (guint i = 0; pl_modules && i < pl_modules->len; i++)
    if (((pl_module_t *)pl_modules->pdata[i])->desc == desc)
      return pl_modules->pdata[i];
  return NULL;
}

/* A new module, init() called; NULL with the message in err when init()
 * failed. */
static pl_module_t *module_open(const plugin_t *p, char *err, size_t errlen) {
  pl_module_t *m = g_new0(pl_module_t, 1);
  char perr[1024] = "";
  m->desc = p->desc;
  m->host = module_host_new(p->known.name);
  if (p->known.init &&
      p->known.init(plugin_host_api(), m->host, perr, sizeof(perr))) {
    perr[sizeof(perr) - 1] = '\0';
    snprintf(err, errlen, "%s: plugin %s: init() failed: %s", p->path,
             p->known.name, perr[0] ? perr : "(without a message)");
    module_free(m);
    return NULL;
  }
  if (!pl_modules)
    pl_modules = g_ptr_array_new();
  g_ptr_array_add(pl_modules, m);
  return m;
}

int plugin_start(plugin_t *p, char *err, size_t errlen) {
  if (p->module)
    return 0;
  pthread_mutex_lock(&pl_modules_mu);
  pl_module_t *m = module_find(p->desc);
  if (!m)
    m = module_open(p, err, errlen);
  if (m) {
    m->refs++;
    p->module = m;
  }
  pthread_mutex_unlock(&pl_modules_mu);
  return m ? 0 : -1;
}

/* The last plugin_t of an object calls fini(). */
static void pl_module_leave(plugin_t *p) {
  pl_module_t *m = p->module;
  if (!m)
    return;
  p->module = NULL;
  pthread_mutex_lock(&pl_modules_mu);
  if (--m->refs == 0) {
    if (p->known.fini)
      p->known.fini(plugin_host_api(), m->host);
    g_ptr_array_remove(pl_modules, m);
    if (pl_modules->len == 0) {
      g_ptr_array_free(pl_modules, TRUE);
      pl_modules = NULL;
    }
    module_free(m);
  }
  pthread_mutex_unlock(&pl_modules_mu);
}

/* ---------------------------------------------------------- instances */

static plugin_instance_t *pi_new(plugin_t *p,
                                 const plugin_instance_opts_t *opts) {
  plugin_instance_t *pi = g_new0(plugin_instance_t, 1);
  khost_host_t *h = &pi->host;
  const char *pipeline = opts->pipeline ? opts->pipeline : "-";
  pi->plugin = p;
  plugin_host_init(
      h, pipeline, opts->member,
      opts->worker > 0
          ? g_strdup_printf("%s/%d.%d/%s", pipeline, opts->member, opts->worker,
                            p->known.name)
          : g_strdup_printf("%s/%d/%s", pipeline, opts->member, p->known.name),
      opts->config_file, opts->config);
  h->schema = p->schema;
  h->closing_note = opts->closing_note;
  h->closing_ctx = opts->closing_ctx;
  h->state = opts->state;
  h->worker = opts->worker;
  return pi;
}

static void pi_free(plugin_instance_t *pi) {
  plugin_host_clear(&pi->host);
  g_free(pi);
}

/* A schema problem of the config group (NULL when there is none). */
static void pi_schema_problem(void *ctx, const config_setting_t *at,
                              const char *message) {
  khost_host_t *h = ctx;
  if (at) {
    plugin_host_config_error(h, at, "%s", message);
    return;
  }
  if (h->errors->len)
    g_string_append_c(h->errors, '\n');
  g_string_append_printf(h->errors, "%s: pipeline %s: config: %s",
                         h->config_file ? h->config_file : "(config)",
                         h->pipeline, message);
}

/* What must hold before create() is called. */
static int pi_precheck(plugin_instance_t *pi) {
  khost_host_t *h = &pi->host;
  const plugin_t *p = pi->plugin;
  if (p->known.init && !p->module) {
    /* init() must have run: plugin_start(). */
    g_string_append_printf(h->errors, "%s: plugin %s was not started", h->who,
                           p->known.name);
    return -1;
  }
  if (h->group && !config_setting_is_group(h->group)) {
    plugin_host_config_error(h, h->group,
                             "expected a group of settings for plugin %s",
                             p->known.name);
    return -1;
  }
  if (h->schema && plugin_schema_check(h->schema, p->known.name, h->group,
                                       pi_schema_problem, h) > 0)
    return -1;
  return 0;
}

/* Call create(); on failure its message (or a stand-in) joins the errors. */
static int pi_call_create(plugin_instance_t *pi) {
  khost_host_t *h = &pi->host;
  char perr[1024] = "";
  if (pi->plugin->desc->create(plugin_host_api(), h, &pi->state, perr,
                               sizeof(perr)) == 0)
    return 0;
  perr[sizeof(perr) - 1] = '\0';
  /* A config type error already says what is wrong: no stand-in then. */
  if (!perr[0] && h->errors->len)
    return -1;
  if (h->errors->len)
    g_string_append_c(h->errors, '\n');
  g_string_append_printf(h->errors, "%s: %s", h->who,
                         perr[0] ? perr : "create() failed without a message");
  return -1;
}

int plugin_instance_create(plugin_instance_t **out, plugin_t *p,
                           const plugin_instance_opts_t *opts, char *err,
                           size_t errlen) {
  int rc = -1, created = 0;
  plugin_instance_t *pi = pi_new(p, opts);
  khost_host_t *h = &pi->host;
  *out = NULL;
  if (pi_precheck(pi) != 0)
    goto out;
  created = pi_call_create(pi) == 0;
  /* Unknown keys only count once create() has had its say: a plugin that
   * failed early may not have looked everything up. With a schema, the
   * group was checked before create(). */
  if (created && !h->schema)
    plugin_host_check_unknown(h, p->known.name);
  if (h->errors->len)
    goto out;
  *out = pi;
  pi = NULL;
  rc = 0;
out:
  if (pi) {
    snprintf(err, errlen, "%s", h->errors->str);
    if (created && p->desc->destroy)
      p->desc->destroy(pi->state);
    pi_free(pi);
  }
  return rc;
}

khost_result_t plugin_instance_handle(plugin_instance_t *pi,
                                      const khost_record_t *rec) {
  pi->host.reason[0] = '\0';
  pi->host.in_handle = 1;
  int r = (int)pi->plugin->desc->handle(pi->state, rec);
  pi->host.in_handle = 0;
  if (r >= KHOST_OK && r <= KHOST_FATAL)
    return (khost_result_t)r;
  if (!pi->warned_result) {
    pi->warned_result = 1;
    log_msg(KHOST_LOG_WARNING, pi->host.who,
            "handle() returned %d, which is not a khost_result_t: treated as "
            "KHOST_FAIL (reported once)",
            r);
  }
  return KHOST_FAIL;
}

const char *plugin_instance_reason(const plugin_instance_t *pi) {
  return pi->host.reason[0] ? pi->host.reason : NULL;
}

int plugin_instance_flush(plugin_instance_t *pi, char *err, size_t errlen) {
  const khost_plugin_t *d = pi->plugin->desc;
  if (!d->flush)
    return 0;
  if (errlen)
    err[0] = '\0';
  if (d->flush(pi->state, err, errlen) == 0)
    return 0;
  if (errlen && !err[0])
    snprintf(err, errlen, "flush() failed without a message");
  if (errlen)
    err[errlen - 1] = '\0';
  return -1;
}

void plugin_instance_destroy(plugin_instance_t *pi) {
  if (!pi)
    return;
  pi->host.closing_thread = pthread_self();
  __atomic_store_n(&pi->host.closing, 1, __ATOMIC_RELEASE);
  if (pi->plugin->desc->destroy)
    pi->plugin->desc->destroy(pi->state);
  pi_free(pi);
}

/* The partitions of a librdkafka list as the plugin sees them; NULL when
 * the list is empty (no call then). */
static khost_partition_t *
pi_partitions(const rd_kafka_topic_partition_list_t *parts) {
  if (!parts || parts->cnt <= 0)
    return NULL;
  khost_partition_t *v = g_new0(khost_partition_t, (gsize)parts->cnt);
  for (int i = 0; i < parts->cnt; i++) {
    v[i].topic = parts->elems[i].topic;
    v[i].partition = parts->elems[i].partition;
  }
  return v;
}

void plugin_instance_assigned(plugin_instance_t *pi,
                              const rd_kafka_topic_partition_list_t *parts) {
  if (!pi || !pi->plugin->known.assigned)
    return;
  khost_partition_t *v = pi_partitions(parts);
  if (v)
    pi->plugin->known.assigned(pi->state, v, (size_t)parts->cnt);
  g_free(v);
}

void plugin_instance_revoked(plugin_instance_t *pi,
                             const rd_kafka_topic_partition_list_t *parts,
                             int lost) {
  if (!pi || !pi->plugin->known.revoked)
    return;
  khost_partition_t *v = pi_partitions(parts);
  if (v)
    pi->plugin->known.revoked(pi->state, v, (size_t)parts->cnt,
                              lost ? KHOST_REVOKED_LOST : 0);
  g_free(v);
}

const char *plugin_instance_who(const plugin_instance_t *pi) {
  return pi->host.who;
}
