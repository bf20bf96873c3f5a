/*
 * Plugin loader: opens handler plugins, validates their descriptor, runs
 * their instances and offers them the host service table (khost_api_t).
 *
 * Concurrency & locking: plugin_load() and plugin_unload() run on the main
 * thread, at start and at exit. An instance and its khost_host_t belong to
 * one member thread, which makes every call on them; the api functions touch
 * only that instance's state, the read-only libconfig tree and the
 * thread-safe logger, so nothing here takes a lock.
 */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
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

struct khost_host {
  char *pipeline;
  int member;
  char *who; /* "pipeline/member/plugin" */
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
 * files others can write. */
static int pl_check_mode(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) != 0)
    return 0; /* dlopen() reports a missing file with its own words */
  if (!(st.st_mode & (S_IWGRP | S_IWOTH)))
    return 0;
  snprintf(err, errlen,
           "%s: refusing to load a plugin that group or others can write "
           "(mode %04o); run chmod go-w on it",
           path, (unsigned)(st.st_mode & 07777));
  return -1;
}

int plugin_load(plugin_t **out, const char *path, char *err, size_t errlen) {
  int rc = -1;
  /* Without a '/', dlopen() would search the library path, not the file. */
  char *file =
      strchr(path, '/') ? g_strdup(path) : g_strconcat("./", path, NULL);
  *out = NULL;
  void *dl = NULL;
  if (pl_check_mode(file, err, errlen) != 0)
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

/* ------------------------------------------------------ config lookups */

/* "pipelines[1].config.limit": names of groups, indexes in lists. */
static void setting_path(GString *out, const config_setting_t *s) {
  const config_setting_t *parent = config_setting_parent(s);
  if (!parent)
    return;
  setting_path(out, parent);
  if (config_setting_is_list(parent) || config_setting_is_array(parent))
    g_string_append_printf(out, "[%d]", config_setting_index(s));
  else
    g_string_append_printf(out, "%s%s", out->len ? "." : "",
                           config_setting_name(s));
}

/* Record "FILE:LINE: KEY: <message>" as one line of h->errors. */
G_GNUC_PRINTF(3, 4)
static void host_config_error(khost_host_t *h, const config_setting_t *s,
                              const char *fmt, ...) {
  const char *file = config_setting_source_file(s);
  GString *key = g_string_new(NULL);
  va_list ap;
  setting_path(key, s);
  if (!file)
    file = h->config_file ? h->config_file : "(config)";
  if (h->errors->len)
    g_string_append_c(h->errors, '\n');
  g_string_append_printf(h->errors, "%s:%u: %s: ", file,
                         (unsigned)config_setting_source_line(s), key->str);
  va_start(ap, fmt);
  g_string_append_vprintf(h->errors, fmt, ap);
  va_end(ap);
  g_string_free(key, TRUE);
}

/* The setting key of the instance's group, marked as looked up; NULL when
 * the group has no such setting. */
static config_setting_t *host_lookup(khost_host_t *h, const char *key) {
  if (!h || !h->group || !key)
    return NULL;
  config_setting_t *s = config_setting_get_member(h->group, key);
  int i = s ? config_setting_index(s) : -1;
  if (i >= 0 && i < h->n_settings)
    h->looked_up[i] = 1;
  return s;
}

static int host_type_error(khost_host_t *h, const config_setting_t *s,
                           const char *expected) {
  host_config_error(h, s, "expected %s", expected);
  return -1;
}

static int api_config_string(khost_host_t *h, const char *key,
                             const char **value) {
  config_setting_t *s = host_lookup(h, key);
  if (!s)
    return h ? plugin_schema_default_string(h->schema, key, value) : 0;
  if (config_setting_type(s) != CONFIG_TYPE_STRING)
    return host_type_error(h, s, "a string");
  /* A copy, so the promise "valid until destroy()" holds whatever the
   * owner of the libconfig tree does. */
  char *copy = g_strdup(config_setting_get_string(s));
  g_ptr_array_add(h->strings, copy);
  *value = copy;
  return 1;
}

static int api_config_int(khost_host_t *h, const char *key, int64_t *value) {
  config_setting_t *s = host_lookup(h, key);
  if (!s)
    return h ? plugin_schema_default_int(h->schema, key, value) : 0;
  int type = config_setting_type(s);
  if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
    return host_type_error(h, s, "an integer");
  *value = config_setting_get_int64(s);
  return 1;
}

static int api_config_double(khost_host_t *h, const char *key, double *value) {
  config_setting_t *s = host_lookup(h, key);
  if (!s)
    return h ? plugin_schema_default_double(h->schema, key, value) : 0;
  int type = config_setting_type(s);
  if (type == CONFIG_TYPE_FLOAT)
    *value = config_setting_get_float(s);
  else if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
    *value = (double)config_setting_get_int64(s);
  else
    return host_type_error(h, s, "a number");
  return 1;
}

static int api_config_bool(khost_host_t *h, const char *key, int *value) {
  config_setting_t *s = host_lookup(h, key);
  if (!s)
    return h ? plugin_schema_default_bool(h->schema, key, value) : 0;
  if (config_setting_type(s) != CONFIG_TYPE_BOOL)
    return host_type_error(h, s, "a boolean (true or false)");
  *value = config_setting_get_bool(s) ? 1 : 0;
  return 1;
}

/* Every setting must have been looked up by create(): the rest are typos
 * or settings of another plugin, and silence would hide them. */
static void host_check_unknown(khost_host_t *h, const char *plugin_name) {
  for (int i = 0; i < h->n_settings; i++)
    if (!h->looked_up[i])
      host_config_error(h, config_setting_get_elem(h->group, (unsigned)i),
                        "unknown setting for plugin %s", plugin_name);
}

/* ------------------------------------------------ the rest of the api */

/* Notices of destroy() on the thread running it are the closing summary;
 * the plugin's own threads log as usual meanwhile. */
static int closing_here(khost_host_t *h) {
  return __atomic_load_n(&h->closing, __ATOMIC_ACQUIRE) &&
         pthread_equal(h->closing_thread, pthread_self());
}

static void api_vlog(khost_host_t *h, int level, const char *fmt, va_list ap) {
  if (h && h->closing_note && level == KHOST_LOG_NOTICE && closing_here(h)) {
    char line[2048];
    vsnprintf(line, sizeof(line), fmt, ap);
    h->closing_note(h->closing_ctx, line);
    return;
  }
  log_vmsg(level, h ? h->who : "plugin", fmt, ap);
}

static void api_log(khost_host_t *h, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  api_vlog(h, level, fmt, ap);
  va_end(ap);
}

static const rd_kafka_headers_t *rec_headers(const khost_record_t *rec) {
  return rec ? (const rd_kafka_headers_t *)rec->host_priv : NULL;
}

static int api_header_get(const khost_record_t *rec, const char *name,
                          const void **value, size_t *len) {
  const rd_kafka_headers_t *hdrs = rec_headers(rec);
  const void *v = NULL;
  size_t n = 0;
  if (!hdrs || !name || rd_kafka_header_get_last(hdrs, name, &v, &n))
    return 0;
  if (value)
    *value = v;
  if (len)
    *len = n;
  return 1;
}

static size_t api_header_count(const khost_record_t *rec) {
  const rd_kafka_headers_t *hdrs = rec_headers(rec);
  return hdrs ? rd_kafka_header_cnt(hdrs) : 0;
}

static int api_header_at(const khost_record_t *rec, size_t idx,
                         const char **name, const void **value, size_t *len) {
  const rd_kafka_headers_t *hdrs = rec_headers(rec);
  const char *nm = NULL;
  const void *v = NULL;
  size_t n = 0;
  if (!hdrs || rd_kafka_header_get_all(hdrs, idx, &nm, &v, &n))
    return 0;
  if (name)
    *name = nm;
  if (value)
    *value = v;
  if (len)
    *len = n;
  return 1;
}

static const char *api_pipeline_name(khost_host_t *h) {
  return h ? h->pipeline : NULL;
}

static int api_member_index(khost_host_t *h) {
  return h ? h->member : -1;
}

static const khost_api_t pl_api = {
    .struct_size = sizeof(khost_api_t),
    .abi_major = KHOST_ABI_MAJOR,
    .abi_minor = KHOST_ABI_MINOR,
    .log = api_log,
    .vlog = api_vlog,
    .config_string = api_config_string,
    .config_int = api_config_int,
    .config_double = api_config_double,
    .config_bool = api_config_bool,
    .header_get = api_header_get,
    .header_count = api_header_count,
    .header_at = api_header_at,
    .pipeline_name = api_pipeline_name,
    .member_index = api_member_index,
};

const khost_api_t *plugin_host_api(void) {
  return &pl_api;
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

static void host_free_fields(khost_host_t *h) {
  g_free(h->pipeline);
  g_free(h->who);
  g_free(h->config_file);
  g_free(h->looked_up);
  g_string_free(h->errors, TRUE);
  g_ptr_array_free(h->strings, TRUE);
}

/* A host without pipeline, member or config: its log lines name the
 * plugin. */
static khost_host_t *module_host_new(const char *name) {
  khost_host_t *h = g_new0(khost_host_t, 1);
  h->member = -1;
  h->who = g_strdup(name);
  h->looked_up = g_new0(unsigned char, 1);
  h->errors = g_string_new(NULL);
  h->strings = g_ptr_array_new_with_free_func(g_free);
  return h;
}

static void module_free(pl_module_t *m) {
  host_free_fields(m->host);
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
  if (p->known.init && p->known.init(&pl_api, m->host, perr, sizeof(perr))) {
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
      p->known.fini(&pl_api, m->host);
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
  pi->plugin = p;
  h->pipeline = g_strdup(opts->pipeline ? opts->pipeline : "-");
  h->member = opts->member;
  h->who = g_strdup_printf("%s/%d/%s", h->pipeline, h->member, p->known.name);
  h->config_file = g_strdup(opts->config_file);
  h->group = opts->config;
  h->closing_note = opts->closing_note;
  h->closing_ctx = opts->closing_ctx;
  h->errors = g_string_new(NULL);
  h->strings = g_ptr_array_new_with_free_func(g_free);
  h->schema = p->schema;
  if (h->group && config_setting_is_group(h->group))
    h->n_settings = config_setting_length(h->group);
  h->looked_up = g_new0(unsigned char, (gsize)h->n_settings + 1);
  return pi;
}

static void pi_free(plugin_instance_t *pi) {
  host_free_fields(&pi->host);
  g_free(pi);
}

/* A schema problem of the config group (NULL when there is none). */
static void pi_schema_problem(void *ctx, const config_setting_t *at,
                              const char *message) {
  khost_host_t *h = ctx;
  if (at) {
    host_config_error(h, at, "%s", message);
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
    host_config_error(h, h->group, "expected a group of settings for plugin %s",
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
  if (pi->plugin->desc->create(&pl_api, h, &pi->state, perr, sizeof(perr)) == 0)
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
    host_check_unknown(h, p->known.name);
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
  int r = (int)pi->plugin->desc->handle(pi->state, rec);
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
