/*
 * domain: see domain.h. Compiled into each domain plugin module, so the
 * registry below is per module.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"

/* ------------------------------------------ instances per pipeline */

/* Created by init() before any instance and freed by fini() after the
 * last one; the lock guards its entries against instances on other
 * members' threads. */
G_LOCK_DEFINE_STATIC(registry);
static GHashTable *registry; /* pipeline name -> live instances (int) */

int dom_module_init(const khost_api_t *api, khost_host_t *host, char *err,
                    size_t errlen) {
  (void)api, (void)host, (void)err, (void)errlen;
  registry = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  return 0;
}

void dom_module_fini(const khost_api_t *api, khost_host_t *host) {
  (void)api, (void)host;
  g_hash_table_destroy(registry);
  registry = NULL;
}

int dom_join(const khost_api_t *api, khost_host_t *host, char *err,
             size_t errlen) {
  if (!KHOST_API_HAS(api, state_scan)) {
    snprintf(err, errlen,
             "needs host-managed state (khost with plugin ABI 1.1 and "
             "state_get/state_put/state_scan)");
    return -1;
  }
  const char *name = api->pipeline_name(host);
  G_LOCK(registry);
  int n = GPOINTER_TO_INT(g_hash_table_lookup(registry, name));
  g_hash_table_insert(registry, g_strdup(name), GINT_TO_POINTER(n + 1));
  G_UNLOCK(registry);
  return 0;
}

int dom_leave(const khost_api_t *api, khost_host_t *host) {
  const char *name = api->pipeline_name(host);
  G_LOCK(registry);
  int n = GPOINTER_TO_INT(g_hash_table_lookup(registry, name)) - 1;
  if (n <= 0)
    g_hash_table_remove(registry, name);
  else
    g_hash_table_insert(registry, g_strdup(name), GINT_TO_POINTER(n));
  G_UNLOCK(registry);
  return n <= 0;
}

/* ------------------------------------------------------------ state */

/* Parse "a b c" (len bytes, not terminated) into n integers; 0 or -1. */
static int parse_ints(const void *text, size_t len, int64_t *v, int n) {
  char buf[DOM_MAX_INTS * 24], *p = buf, *end;
  if (len >= sizeof(buf))
    return -1;
  memcpy(buf, text, len);
  buf[len] = '\0';
  for (int i = 0; i < n; i++) {
    v[i] = strtoll(p, &end, 10);
    if (end == p)
      return -1;
    p = end;
  }
  return *p == '\0' ? 0 : -1;
}

int dom_get_ints(const khost_api_t *api, khost_host_t *host, const char *key,
                 int64_t *v, int n) {
  const void *val;
  size_t len;
  memset(v, 0, sizeof(*v) * (size_t)n);
  int r = api->state_get(host, key, strlen(key), &val, &len);
  if (r < 0)
    return -1;
  if (r == 0)
    return 0;
  if (parse_ints(val, len, v, n) != 0) {
    api->log(host, KHOST_LOG_ERR, "state %s: not %d integers: \"%.*s\"", key, n,
             (int)(len < 80 ? len : 80), (const char *)val);
    return -1;
  }
  return 0;
}

int dom_put_ints(const khost_api_t *api, khost_host_t *host, const char *key,
                 const int64_t *v, int n) {
  char buf[DOM_MAX_INTS * 24];
  size_t off = 0;
  for (int i = 0; i < n && i < DOM_MAX_INTS; i++)
    off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%" PRId64,
                            i ? " " : "", v[i]);
  return api->state_put(host, key, strlen(key), buf, off);
}

typedef struct scan {
  size_t plen;
  int n;
  dom_row_fn fn;
  void *arg;
} scan_t;

static int scan_row(void *arg, const void *k, size_t kl, const void *v,
                    size_t vl) {
  scan_t *s = arg;
  int64_t ints[DOM_MAX_INTS];
  char *rest = g_strndup((const char *)k + s->plen, kl - s->plen);
  if (parse_ints(v, vl, ints, s->n) != 0)
    memset(ints, 0, sizeof(ints));
  s->fn(s->arg, rest, ints, s->n);
  g_free(rest);
  return 0;
}

int dom_scan_ints(const khost_api_t *api, khost_host_t *host,
                  const char *prefix, int n, dom_row_fn fn, void *arg) {
  scan_t s = {strlen(prefix), n, fn, arg};
  return api->state_scan(host, prefix, s.plen, scan_row, &s) < 0 ? -1 : 0;
}

/* ---------------------------------------------------------- records */

char *dom_where(const khost_record_t *rec) {
  return g_strdup_printf("%s [%d] offset %lld eventId %.*s", rec->topic,
                         (int)rec->partition, (long long)rec->offset,
                         rec->event_id ? (int)rec->event_id_len : 1,
                         rec->event_id ? rec->event_id : "-");
}

char *dom_id_text(json_t *v) {
  if (json_is_integer(v))
    return g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
  if (json_is_string(v) && json_string_length(v) > 0)
    return g_strdup(json_string_value(v));
  return NULL;
}

const char *dom_money(int64_t cents, char buf[32]) {
  snprintf(buf, 32, "%s%lld.%02lld", cents < 0 ? "-" : "",
           (long long)(llabs(cents) / 100), (long long)(llabs(cents) % 100));
  return buf;
}
