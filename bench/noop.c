/*
 * noop: the benchmark's plugin. Accepts every record and does nothing, so
 * the benchmark measures khost itself. With `state_put = true` in its
 * config it makes one host-state put per record (a small value under one
 * of `state_keys` keys per partition, 1024 unless set: record offset
 * modulo state_keys), to measure what host state costs. 1024 keys make
 * the 500 records of a batch write 500 different keys; a few keys stand
 * for a plugin that counts by a hot key (a coupon, an hour), whose batch
 * writes each key many times.
 * Threads: handle() runs on its member's thread; an instance is its own.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <khost/plugin.h>

typedef struct noop {
  const khost_api_t *api;
  khost_host_t *host;
  int state_put;
  int64_t state_keys;
} noop_t;

static int noop_create(const khost_api_t *api, khost_host_t *host,
                       void **instance, char *err, size_t errlen) {
  noop_t *n = calloc(1, sizeof(*n));
  if (!n || api->config_bool(host, "state_put", &n->state_put) < 0) {
    snprintf(err, errlen, "state_put must be a boolean");
    free(n);
    return -1;
  }
  n->state_keys = 1024;
  if (api->config_int(host, "state_keys", &n->state_keys) < 0 ||
      n->state_keys < 1) {
    snprintf(err, errlen, "state_keys must be a positive integer");
    free(n);
    return -1;
  }
  n->api = api;
  n->host = host;
  *instance = n;
  return 0;
}

static khost_result_t noop_handle(void *instance, const khost_record_t *rec) {
  noop_t *n = instance;
  char key[32];
  if (!n->state_put)
    return KHOST_OK;
  int len = snprintf(key, sizeof(key), "p%d:%d", (int)rec->partition,
                     (int)(rec->offset % n->state_keys));
  if (n->api->state_put(n->host, key, (size_t)len, &rec->offset,
                        sizeof(rec->offset)) != 0)
    return KHOST_FATAL;
  return KHOST_OK;
}

static void noop_destroy(void *instance) {
  free(instance);
}

static const khost_plugin_t noop_plugin = {
    KHOST_PLUGIN_INIT,     .name = "noop",        .version = "1.0",
    .create = noop_create, .handle = noop_handle, .destroy = noop_destroy,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &noop_plugin;
}
