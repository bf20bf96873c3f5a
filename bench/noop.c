/*
 * noop: the benchmark's plugin. Accepts every record and does nothing, so
 * the benchmark measures khost itself.
 * Threads: handle() runs on its member's thread; there is no state.
 */
#include <khost/plugin.h>

static int noop_create(const khost_api_t *api, khost_host_t *host,
                       void **instance, char *err, size_t errlen) {
  (void)api, (void)host, (void)err, (void)errlen;
  *instance = NULL;
  return 0;
}

static khost_result_t noop_handle(void *instance, const khost_record_t *rec) {
  (void)instance, (void)rec;
  return KHOST_OK;
}

static const khost_plugin_t noop_plugin = {
    KHOST_PLUGIN_INIT,     .name = "noop",        .version = "1.0",
    .create = noop_create, .handle = noop_handle,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &noop_plugin;
}
