/*
 * io_wait: the concurrency benchmark's plugin (bench/concurrency.c). Each
 * handle() waits wait_us microseconds (1000 by default), a stand-in for a
 * call to a database or a service, and checks the per-key order: the
 * record value is "KEY SEQ", and a key's sequence numbers must come
 * strictly increasing. When the last instance is destroyed it writes
 * "calls N violations V" to report_path and starts over.
 *
 * Threads: handle() runs on the instance's worker (or member) thread;
 * instances share the order table under a mutex. Different keys run at
 * once, one key's records one at a time (order_by = "key").
 */
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <khost/plugin.h>

typedef struct io_wait {
  int64_t wait_us;
  char *report_path;
} io_wait_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *last_seq; /* key -> last sequence number + 1 */
static long calls, violations;
static int instances;

static int iw_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  io_wait_t *w = calloc(1, sizeof(*w));
  const char *path = NULL;
  w->wait_us = 1000;
  if (api->config_int(host, "wait_us", &w->wait_us) < 0 ||
      api->config_string(host, "report_path", &path) <= 0) {
    snprintf(err, errlen, "wait_us (an integer) and report_path (required)");
    free(w);
    return -1;
  }
  w->report_path = strdup(path);
  pthread_mutex_lock(&mu);
  if (!last_seq)
    last_seq = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  instances++;
  pthread_mutex_unlock(&mu);
  *instance = w;
  return 0;
}

static void check_order(const khost_record_t *rec) {
  char text[64], key[32];
  long seq;
  size_t n = rec->value_len < sizeof(text) - 1 ? rec->value_len : 0;
  memcpy(text, rec->value ? rec->value : "", n);
  text[n] = '\0';
  if (sscanf(text, "%31s %ld", key, &seq) != 2)
    return;
  pthread_mutex_lock(&mu);
  calls++;
  gpointer prev;
  if (g_hash_table_lookup_extended(last_seq, key, NULL, &prev) &&
      GPOINTER_TO_SIZE(prev) > (size_t)seq)
    violations++;
  g_hash_table_insert(last_seq, g_strdup(key), GSIZE_TO_POINTER(seq + 1));
  pthread_mutex_unlock(&mu);
}

static khost_result_t iw_handle(void *instance, const khost_record_t *rec) {
  io_wait_t *w = instance;
  struct timespec ts = {(time_t)(w->wait_us / 1000000),
                        (long)(w->wait_us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  check_order(rec);
  return KHOST_OK;
}

static void iw_destroy(void *instance) {
  io_wait_t *w = instance;
  pthread_mutex_lock(&mu);
  if (--instances == 0) {
    FILE *f = fopen(w->report_path, "w");
    if (f) {
      fprintf(f, "calls %ld violations %ld\n", calls, violations);
      fclose(f);
    }
    calls = violations = 0;
    g_hash_table_remove_all(last_seq);
  }
  pthread_mutex_unlock(&mu);
  free(w->report_path);
  free(w);
}

static const khost_plugin_t iw_plugin = {
    KHOST_PLUGIN_INIT,   .name = "io_wait",   .version = "1.0",
    .create = iw_create, .handle = iw_handle, .destroy = iw_destroy,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &iw_plugin;
}
