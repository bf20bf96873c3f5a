/*
 * The host service table and khost_host_t (see plugin_host.h).
 */
#include "plugin_host.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "state.h"

void plugin_host_init(khost_host_t *h, const char *pipeline, int member,
                      char *who, const char *config_file,
                      config_setting_t *group) {
  h->pipeline = g_strdup(pipeline);
  h->member = member;
  h->who = who;
  h->config_file = g_strdup(config_file);
  h->group = group;
  h->errors = g_string_new(NULL);
  h->strings = g_ptr_array_new_with_free_func(g_free);
  if (group && config_setting_is_group(group))
    h->n_settings = config_setting_length(group);
  h->looked_up = g_new0(unsigned char, (gsize)h->n_settings + 1);
}

void plugin_host_clear(khost_host_t *h) {
  g_free(h->pipeline);
  g_free(h->who);
  g_free(h->config_file);
  g_free(h->looked_up);
  g_string_free(h->errors, TRUE);
  g_ptr_array_free(h->strings, TRUE);
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
void plugin_host_config_error(khost_host_t *h, const config_setting_t *s,
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
  plugin_host_config_error(h, s, "expected %s", expected);
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
void plugin_host_check_unknown(khost_host_t *h, const char *plugin_name) {
  for (int i = 0; i < h->n_settings; i++)
    if (!h->looked_up[i])
      plugin_host_config_error(h,
                               config_setting_get_elem(h->group, (unsigned)i),
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

static int api_worker_index(khost_host_t *h) {
  return h && h->member >= 0 ? h->worker : -1;
}

/* One line: a reason is quoted in log lines and a header. */
static void api_fail_reason(khost_host_t *h, const char *fmt, ...) {
  va_list ap;
  if (!h || !fmt || h->member < 0)
    return;
  va_start(ap, fmt);
  vsnprintf(h->reason, sizeof(h->reason), fmt, ap);
  va_end(ap);
  for (char *c = h->reason; *c; c++)
    if (*c == '\n' || *c == '\r')
      *c = ' ';
}

/* ---------------------------------------------------------------- state */

static int no_state(khost_host_t *h, const char *what) {
  log_msg(KHOST_LOG_ERR, h ? h->who : NULL, "state_%s: %s", what,
          h && h->state ? "writes are made in handle() only"
                        : "this pipeline keeps no state (dedup is off, or its "
                          "store keeps no plugin state yet)");
  return -1;
}

static int api_state_get(khost_host_t *h, const void *key, size_t klen,
                         const void **value, size_t *len) {
  char err[512];
  if (!h || !h->state)
    return no_state(h, "get");
  int rc = state_read(h->state, key, klen, value, len, err, sizeof(err));
  if (rc < 0)
    log_msg(KHOST_LOG_ERR, h->who, "state_get: %s", err);
  return rc;
}

static int api_state_put(khost_host_t *h, const void *key, size_t klen,
                         const void *value, size_t len) {
  if (!h || !h->state || !h->in_handle)
    return no_state(h, "put");
  state_put(h->state, key, klen, value, len);
  return 0;
}

static int api_state_delete(khost_host_t *h, const void *key, size_t klen) {
  if (!h || !h->state || !h->in_handle)
    return no_state(h, "delete");
  state_del(h->state, key, klen);
  return 0;
}

static int api_state_scan(khost_host_t *h, const void *prefix, size_t plen,
                          int (*fn)(void *arg, const void *key, size_t klen,
                                    const void *value, size_t len),
                          void *arg) {
  char err[512];
  if (!h || !h->state)
    return no_state(h, "scan");
  int rc = state_read_prefix(h->state, prefix, plen, fn, arg, err, sizeof(err));
  if (rc < 0)
    log_msg(KHOST_LOG_ERR, h->who, "state_scan: %s", err);
  return rc;
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
    .fail_reason = api_fail_reason,
    .state_get = api_state_get,
    .state_put = api_state_put,
    .state_delete = api_state_delete,
    .state_scan = api_state_scan,
    .worker_index = api_worker_index,
};

const khost_api_t *plugin_host_api(void) {
  return &pl_api;
}
