/*
 * khost plugin ABI.
 *
 * This is the only header a handler plugin includes. A plugin is a shared
 * object that exports exactly one symbol:
 *
 *     const khost_plugin_t *khost_plugin_entry(void);
 *
 * returning a descriptor that lives as long as the object is loaded.
 *
 * Versioning: the descriptor starts with the ABI version the plugin was built
 * against (KHOST_ABI_MAJOR/MINOR below, captured by KHOST_PLUGIN_INIT). khost
 * loads a plugin only when its major version equals the host's and its minor
 * version is not newer than the host's. Within one major version structures
 * only grow at the end and every structure carries its size first.
 *
 * Threads: khost creates one plugin instance per consumer-group member and
 * calls every callback of one instance from that member's thread only, never
 * concurrently. Different instances run on different threads at the same
 * time; state shared between instances (globals) needs its own locking.
 */
#ifndef KHOST_PLUGIN_H
#define KHOST_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major version: bumped on any incompatible change. */
#define KHOST_ABI_MAJOR 1
/** ABI minor version: bumped when fields or host services are appended. */
#define KHOST_ABI_MINOR 0

#if defined(__GNUC__)
#define KHOST_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define KHOST_EXPORT __attribute__((visibility("default")))
#else
#define KHOST_PRINTF(fmt, args)
#define KHOST_EXPORT
#endif

/** What handle() tells the host about one record. */
typedef enum khost_result {
  /** Handled. The record is marked as seen and its offset may be committed. */
  KHOST_OK = 0,
  /** Transient failure: call handle() again for this record after a backoff.
   *  After the pipeline's retry limit the record is treated as KHOST_FAIL. */
  KHOST_RETRY = 1,
  /** This record cannot be handled (bad data): it is reported (and sent to
   *  the dead-letter destination when one is configured), marked, and
   *  consumption goes on. */
  KHOST_FAIL = 2,
  /** The plugin instance is unusable: the pipeline stops, commits nothing
   *  past this record and the host exits non-zero. */
  KHOST_FATAL = 3
} khost_result_t;
/* Any other value returned by handle() is treated as KHOST_FAIL. */

/** Log levels, the syslog numbers. */
enum {
  KHOST_LOG_ERR = 3,
  KHOST_LOG_WARNING = 4,
  KHOST_LOG_NOTICE = 5,
  KHOST_LOG_INFO = 6,
  KHOST_LOG_DEBUG = 7
};

/** Record flags (khost_record_t.flags). */
enum {
  /** The record is delivered again by an explicit replay. */
  KHOST_RECORD_REPLAY = 1u << 0
};

/**
 * One Kafka record, as the plugin sees it.
 *
 * Owned by the host and valid only during the handle() call that receives
 * it: copy whatever you keep. key, value and event_id are not
 * NUL-terminated and may be NULL (with length 0) when absent.
 */
typedef struct khost_record {
  size_t struct_size;    /**< sizeof(khost_record_t) of the host */
  const char *topic;     /**< NUL-terminated topic name */
  int32_t partition;     /**< partition number */
  int64_t offset;        /**< offset within the partition */
  int64_t timestamp;     /**< ms since the epoch, -1 when unknown */
  const void *key;       /**< record key, NULL when the record has none */
  size_t key_len;        /**< key length in bytes */
  const void *value;     /**< record value, NULL for a null value */
  size_t value_len;      /**< value length in bytes */
  const char *event_id;  /**< event ID used for deduplication, or NULL */
  size_t event_id_len;   /**< event ID length in bytes */
  uint32_t attempt;      /**< 1 on the first call, 2 on the first retry, ... */
  uint32_t flags;        /**< KHOST_RECORD_* bits */
  const void *host_priv; /**< reserved for the host: do not touch */
} khost_record_t;

/** Per-instance handle the host gives to a plugin (opaque). Valid from
 *  create() until destroy() returns. */
typedef struct khost_host khost_host_t;

/**
 * Services the host offers to plugins.
 *
 * A table of function pointers that only grows: new entries are appended in
 * later minor versions. Check api->struct_size (or api->abi_minor) before
 * using an entry that is newer than KHOST_ABI_MINOR 0. All entries are
 * thread-safe; a khost_host_t is used only from its member's thread.
 */
typedef struct khost_api {
  size_t struct_size; /**< sizeof(khost_api_t) of the host */
  uint32_t abi_major; /**< the host's KHOST_ABI_MAJOR */
  uint32_t abi_minor; /**< the host's KHOST_ABI_MINOR */

  /** Log one line through khost's logger, prefixed with the pipeline,
   *  member and plugin name. level is a KHOST_LOG_* value. */
  void (*log)(khost_host_t *host, int level, const char *fmt, ...)
      KHOST_PRINTF(3, 4);
  /** va_list variant of log(). */
  void (*vlog)(khost_host_t *host, int level, const char *fmt, va_list ap);

  /**
   * Typed lookup of a setting in the plugin's own config group (the
   * pipeline's `config = { ... }`). key is a direct child of that group.
   *
   * Returns 1 and sets *value when the setting exists, 0 when it is absent
   * (*value untouched, so it may hold a default), -1 when it has the wrong
   * type (the host reports file, line and key; create() should fail).
   * Strings stay valid until destroy(). Every setting of the group must be
   * looked up during create(): a setting never looked up is an unknown key
   * and the host refuses to start, naming it.
   */
  int (*config_string)(khost_host_t *host, const char *key, const char **value);
  int (*config_int)(khost_host_t *host, const char *key, int64_t *value);
  int (*config_double)(khost_host_t *host, const char *key, double *value);
  int (*config_bool)(khost_host_t *host, const char *key, int *value);

  /**
   * Record headers. header_get() finds the last header named name and
   * returns 1 (0 when absent); header_count() and header_at() iterate all
   * headers in record order (header_at returns 0 past the end). value may be
   * NULL for a header with a null value. Valid only during handle().
   */
  int (*header_get)(const khost_record_t *rec, const char *name,
                    const void **value, size_t *len);
  size_t (*header_count)(const khost_record_t *rec);
  int (*header_at)(const khost_record_t *rec, size_t idx, const char **name,
                   const void **value, size_t *len);

  /** The pipeline's name and the member's index (0-based) of an instance. */
  const char *(*pipeline_name)(khost_host_t *host);
  int (*member_index)(khost_host_t *host);
} khost_api_t;

/**
 * The descriptor a plugin exports through khost_plugin_entry().
 * Fill it with KHOST_PLUGIN_INIT so the version fields are right.
 */
typedef struct khost_plugin {
  uint32_t abi_major;  /**< KHOST_ABI_MAJOR the plugin was built against */
  uint32_t abi_minor;  /**< KHOST_ABI_MINOR the plugin was built against */
  size_t struct_size;  /**< sizeof(khost_plugin_t) the plugin was built with */
  const char *name;    /**< short plugin name, e.g. "jsonl_sink" */
  const char *version; /**< the plugin's own version string */

  /**
   * Create one instance (one per member, on that member's thread). Read the
   * plugin's settings with api->config_*(host, ...). On success store the
   * instance in *instance and return 0. On failure write a NUL-terminated
   * message into err (errlen bytes, caller-owned) and return -1: the host
   * refuses to start and prints that message. api and host stay valid until
   * destroy() returns.
   */
  int (*create)(const khost_api_t *api, khost_host_t *host, void **instance,
                char *err, size_t errlen);

  /** Handle one record. Required. See khost_result_t. */
  khost_result_t (*handle)(void *instance, const khost_record_t *rec);

  /**
   * Optional (may be NULL). Called after a batch has been handled and before
   * its dedup marks and offsets are committed: make every effect of the
   * records handled so far durable (flush files, commit transactions).
   * Return 0, or -1 with a message in err: the host then commits nothing of
   * the batch and calls flush() again later.
   */
  int (*flush)(void *instance, char *err, size_t errlen);

  /** Release the instance. Optional (may be NULL). Called once, on the
   *  member's thread, after the member's last commit. */
  void (*destroy)(void *instance);
} khost_plugin_t;

/** Initialiser for the version fields of a khost_plugin_t. */
#define KHOST_PLUGIN_INIT                                                      \
  .abi_major = KHOST_ABI_MAJOR, .abi_minor = KHOST_ABI_MINOR,                  \
  .struct_size = sizeof(khost_plugin_t)

/** The one symbol a plugin exports. */
KHOST_EXPORT const khost_plugin_t *khost_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* KHOST_PLUGIN_H */
