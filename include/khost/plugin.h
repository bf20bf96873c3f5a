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
 * against (KHOST_ABI_MAJOR/MINOR below, captured by KHOST_PLUGIN_INIT) and its
 * own size. khost loads a plugin only when its major version equals the
 * host's (the message names both versions otherwise). Any minor version
 * loads:
 *   - an older plugin: khost reads only the descriptor fields the plugin's
 *     struct_size covers, and treats the missing ones as NULL;
 *   - a newer plugin: khost reads only the descriptor fields it knows, and
 *     the plugin must not use a host service this khost lacks: it probes
 *     each entry newer than the minor it needs with KHOST_API_HAS().
 * Within one major version structures only grow at the end and every
 * growing structure carries its size.
 *
 * Change history (minor versions of ABI 1):
 *   1.0  descriptor: name, version, create, handle, flush, destroy;
 *        khost_api_t: log, vlog, config_string/int/double/bool, header_get,
 *        header_count, header_at, pipeline_name, member_index.
 *   1.1  descriptor: init and fini (once per loaded plugin), assigned and
 *        revoked (the member's partitions), settings (a declared config
 *        schema, checked by the host and shown by `khost plugin-info`);
 *        KHOST_API_HAS(); khost_api_t: fail_reason (why handle() failed the
 *        record); state_get, state_put, state_delete, state_scan
 *        (host-managed state, durable with the records' dedup marks);
 *        worker_index (a member with concurrency > 1 runs an instance
 *        per worker).
 *        Plugins built for 1.0 load and behave as before.
 *
 * Threads: khost creates one plugin instance per consumer-group member and
 * calls every callback of one instance from that member's thread only, never
 * concurrently. With a pipeline's concurrency = N > 1 a member creates N
 * instances (api->worker_index() tells them apart), each handle()d on a
 * worker thread of its own; their other callbacks (create, flush,
 * assigned, revoked, destroy) run on the member's thread while that
 * worker is idle: still never two calls of one instance at once. Different
 * instances run on different threads at the same time; state shared between
 * instances (globals) needs its own locking, or can be set up in init() and
 * torn down in fini(), which run while no instance exists. A plugin's own
 * threads may call api->log, api->vlog, api->pipeline_name and
 * api->member_index with an instance's host until that instance's destroy()
 * returns (join them in destroy()); the config lookups only inside create() on
 * the member's thread, the header functions only inside handle() with the
 * record handed to it.
 *
 * Rules the host enforces, in one place:
 *   - create() failed: destroy() is not called for it (nothing was made);
 *     create() succeeded but the host then refuses the config (a wrong
 *     type, an unknown key): destroy() is called before the host stops.
 *   - attempt may start above 1: calls that may have crashed the host are
 *     recorded, and after a restart the count goes on (khost_record_t).
 *   - handle() past max.poll.interval.ms: khost cannot interrupt a call.
 *     While it runs the member does not poll, librdkafka leaves the group
 *     for it, and the partitions go to other members (which may handle the
 *     same records meanwhile, unless they share this host's dedup store and
 *     the event ID is claimed by this call). When the call returns, this
 *     member commits no offset of those partitions any more: its next poll
 *     reports them lost (revoked() with KHOST_REVOKED_LOST) and it rejoins
 *     the group. The pipeline's handler_timeout logs the stuck call, naming
 *     the record, every handler_timeout (60 s by default).
 *   - destroy(): notices (KHOST_LOG_NOTICE) an instance logs from destroy()
 *     on the member's thread are the plugin's closing summary: with
 *     `mock.generate` khost prints them under its own summary instead of
 *     logging them; every other level, and notices from other threads, go
 *     to the log as usual.
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
#define KHOST_ABI_MINOR 1

#if defined(__GNUC__)
/** Lets the compiler check the format of log() calls. */
#define KHOST_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
/** Exports khost_plugin_entry() from a plugin built -fvisibility=hidden. */
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
  KHOST_LOG_ERR = 3,     /**< an error: something did not happen */
  KHOST_LOG_WARNING = 4, /**< something went wrong and was handled */
  KHOST_LOG_NOTICE = 5,  /**< worth seeing; from destroy(), see the top */
  KHOST_LOG_INFO = 6,    /**< the default level of the host's log */
  KHOST_LOG_DEBUG = 7    /**< written only with log_level = "debug" */
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
  size_t struct_size;   /**< sizeof(khost_record_t) of the host */
  const char *topic;    /**< NUL-terminated topic name */
  int32_t partition;    /**< partition number */
  int64_t offset;       /**< offset within the partition */
  int64_t timestamp;    /**< ms since the epoch, -1 when unknown */
  const void *key;      /**< record key, NULL when the record has none */
  size_t key_len;       /**< key length in bytes */
  const void *value;    /**< record value, NULL for a null value */
  size_t value_len;     /**< value length in bytes */
  const char *event_id; /**< event ID used for deduplication, or NULL */
  size_t event_id_len;  /**< event ID length in bytes */
  /** 1 on the first call, 2 on the first retry, ... It may start above 1:
   *  calls that may crash the host (retries, and the first calls of each
   *  partition after an unclean stop) are recorded before they are made,
   *  and after a restart the count goes on from the recorded ones. */
  uint32_t attempt;
  uint32_t flags;        /**< KHOST_RECORD_* bits */
  const void *host_priv; /**< reserved for the host: do not touch */
} khost_record_t;

/** Handle the host gives to a plugin (opaque, owned by the host): one per
 *  instance, valid from create() until destroy() returns; and one per
 *  loaded plugin for init() and fini(), valid during those calls. */
typedef struct khost_host khost_host_t;

/**
 * Services the host offers to plugins.
 *
 * A table of function pointers that only grows: new entries are appended in
 * later minor versions. Before using an entry newer than the minor version
 * the plugin needs, test it with KHOST_API_HAS(api, entry). The table is
 * owned by the host, constant, and valid while the plugin is loaded.
 *
 * Threads: which entries a plugin's own threads may call is in the comment
 * at the top of this file; everything else runs on the thread khost called
 * the plugin on.
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
   * Strings are owned by the host and stay valid until destroy().
   *
   * Plugins without a declared schema (khost_plugin_t.settings NULL, and
   * every ABI 1.0 plugin): every setting of the group must be looked up
   * during create(); a setting never looked up is an unknown key and the
   * host refuses to start, naming it. Plugins with a schema: the host has
   * checked the group against it before create() (unknown keys, types,
   * required settings), and an absent setting with a default returns 1 and
   * that default.
   *
   * Call these only from create(), on the member's thread. With the host of
   * init() (no config group) they return 0.
   */
  int (*config_string)(khost_host_t *host, const char *key, const char **value);
  /** As config_string(), for an integer (42 or 42L in the file). */
  int (*config_int)(khost_host_t *host, const char *key, int64_t *value);
  /** As config_string(), for a number (a float, or an integer). */
  int (*config_double)(khost_host_t *host, const char *key, double *value);
  /** As config_string(), for true or false (*value 1 or 0). */
  int (*config_bool)(khost_host_t *host, const char *key, int *value);

  /**
   * Record headers. header_get() finds the last header named name and
   * returns 1 (0 when absent); header_count() and header_at() iterate all
   * headers in record order (header_at returns 0 past the end). value may be
   * NULL for a header with a null value. Valid only during handle().
   */
  int (*header_get)(const khost_record_t *rec, const char *name,
                    const void **value, size_t *len);
  /** The number of headers of rec (0 when it has none). */
  size_t (*header_count)(const khost_record_t *rec);
  /** Header idx (0-based) of rec: 1 with *name, *value and *len set (each
   *  may be NULL when not wanted), 0 past the end. Owned by the host. */
  int (*header_at)(const khost_record_t *rec, size_t idx, const char **name,
                   const void **value, size_t *len);

  /** The pipeline's name and the member's index (0-based) of an instance;
   *  NULL and -1 for the host handed to init() and fini(). The string is
   *  owned by the host and valid until destroy() (fini()) returns. */
  const char *(*pipeline_name)(khost_host_t *host);
  /** See pipeline_name(). */
  int (*member_index)(khost_host_t *host);

  /* ---- ABI 1.1: test with KHOST_API_HAS() before use */

  /**
   * Say why the record being handled fails (printf-style; one line, at
   * most 255 bytes are kept). Call it during handle(), on the member's
   * thread, before returning KHOST_FAIL or KHOST_RETRY; a later call for
   * the same record replaces the reason, and each handle() call starts
   * without one. The host puts it in the log line, in the khost-error
   * header of the dead letter (after "the plugin failed the record: ")
   * and with the record wherever else a failed record is kept. For the
   * host of init() and fini() it does nothing.
   */
  void (*fail_reason)(khost_host_t *host, const char *fmt, ...)
      KHOST_PRINTF(2, 3);

  /* ---- ABI 1.1: host-managed state (check with KHOST_API_HAS) ----
   *
   * A key-value map per pipeline, byte keys and values, kept by khost in
   * its dedup store. Writes made in handle() belong to the record being
   * handled: when its outcome is KHOST_OK or KHOST_FAIL they become
   * durable in the same transaction as the record's dedup mark and its
   * partition's offset, so that after a crash at any instant a record's
   * writes are applied exactly once; after KHOST_RETRY (or when the batch
   * is not made durable) they are dropped and the record is handled
   * again. Reads see the writes of the records handled before, durable
   * or not (read-your-writes), and the current record's own.
   *
   * Two records writing one key: the one finished later wins. A member
   * finishes the records of a partition in offset order; records of
   * different partitions have no order between them, so key the state by
   * what picks the partition (the record key), as the demo plugins do.
   *
   * Calls are made on the instance's thread: reads in handle(), flush(),
   * assigned(), revoked() and destroy() (a summary of what is durable);
   * writes in handle() only (elsewhere they return -1). Every call
   * returns -1 when the pipeline has no dedup store (dedup = false),
   * which state needs.
   */
  /** 1 with *value and *len (owned by the host, valid until the next
   *  state call of this instance or the end of the callback) when key has
   *  a value, 0 when not, -1 on error (logged). */
  int (*state_get)(khost_host_t *host, const void *key, size_t klen,
                   const void **value, size_t *len);
  /** Set key to value (both copied); 0, or -1 outside handle(). */
  int (*state_put)(khost_host_t *host, const void *key, size_t klen,
                   const void *value, size_t len);
  /** Remove key; 0, or -1 outside handle(). */
  int (*state_delete)(khost_host_t *host, const void *key, size_t klen);
  /** fn for every key starting with prefix (plen 0: all), in byte order,
   *  with key and value valid during the call; fn may call the state
   *  entries. Stops at fn's first non-zero answer and returns it; 0 when
   *  fn never stopped it, -1 on error (logged). */
  int (*state_scan)(khost_host_t *host, const void *prefix, size_t plen,
                    int (*fn)(void *arg, const void *key, size_t klen,
                              const void *value, size_t len),
                    void *arg);

  /** The instance's worker, 0 .. concurrency - 1 (ABI 1.1): with a
   *  pipeline's concurrency = N each member runs N instances, one per
   *  worker thread, and records of one ordering value (order_by) may go
   *  to different workers in turn. 0 with concurrency = 1; -1 for the
   *  host of init() and fini(). */
  int (*worker_index)(khost_host_t *host);
} khost_api_t;

/**
 * True when the host's service table has entry (a member of khost_api_t)
 * and it is set: the way a plugin built against a newer minor version
 * finds out whether an older khost offers a service.
 *
 *     if (KHOST_API_HAS(api, some_newer_entry)) api->some_newer_entry(...);
 */
#define KHOST_API_HAS(api, entry)                                              \
  ((api)->struct_size >=                                                       \
       offsetof(khost_api_t, entry) + sizeof(((khost_api_t *)0)->entry) &&     \
   (api)->entry != NULL)

/** One partition of the member's assignment (ABI 1.1). Owned by the host,
 *  valid only during the assigned() or revoked() call. */
typedef struct khost_partition {
  const char *topic; /**< NUL-terminated topic name */
  int32_t partition; /**< partition number */
} khost_partition_t;

/** khost_plugin_t.revoked() flags (ABI 1.1). */
enum {
  /** The assignment was lost (session timeout, handle() past
   *  max.poll.interval.ms): another member may own the partitions already.
   *  This member commits nothing of them any more: the records it handled
   *  since their last commit are delivered to the next owner again (which
   *  skips those whose dedup marks it shares). Drop the per-partition
   *  state rather than flush it. */
  KHOST_REVOKED_LOST = 1u << 0
};

/** Types of a declared setting (khost_setting_t.type, ABI 1.1). */
typedef enum khost_setting_type {
  KHOST_SETTING_STRING = 1, /**< "text"; read with config_string() */
  KHOST_SETTING_INT = 2,    /**< 42 or 42L; read with config_int() */
  KHOST_SETTING_DOUBLE = 3, /**< 0.5 or an integer; read with config_double() */
  KHOST_SETTING_BOOL = 4    /**< true or false; read with config_bool() */
} khost_setting_type_t;

/** khost_setting_t.flags. */
enum {
  /** The setting must be present in the config group. */
  KHOST_SETTING_REQUIRED = 1u << 0
};

/**
 * One setting of a plugin's config group, as the plugin declares it
 * (ABI 1.1). The descriptor's settings array ends with an entry whose name
 * is NULL. The array and its strings are the plugin's and must live as long
 * as the object is loaded. This structure does not change within ABI 1
 * (a later addition would come as a new descriptor field).
 */
typedef struct khost_setting {
  const char *name;          /**< key in the group, e.g. "path" */
  khost_setting_type_t type; /**< KHOST_SETTING_* */
  /** The default as the config file would spell it, without quotes for
   *  strings ("100", "0.5", "true", "/tmp/out"); NULL when the setting has
   *  none. The host checks it against type when it loads the plugin. */
  const char *default_value;
  const char *description; /**< one line for `khost plugin-info` */
  uint32_t flags;          /**< KHOST_SETTING_* bits */
} khost_setting_t;

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
   * refuses to start and prints that message, and destroy() is not called
   * for this instance. api and host stay valid until destroy() returns.
   */
  int (*create)(const khost_api_t *api, khost_host_t *host, void **instance,
                char *err, size_t errlen);

  /** Handle one record. Required. See khost_result_t; rec is the host's
   *  and valid only during the call. A call running past the consumer's
   *  max.poll.interval.ms costs the member its partitions (top of this
   *  file). */
  khost_result_t (*handle)(void *instance, const khost_record_t *rec);

  /**
   * Optional (may be NULL). Called after a batch has been handled and before
   * its dedup marks and offsets are committed: make every effect of the
   * records handled so far durable (flush files, commit transactions).
   * Return 0, or -1 with a message in err: the host then commits nothing of
   * the batch and calls flush() again later.
   */
  int (*flush)(void *instance, char *err, size_t errlen);

  /**
   * Release the instance. Optional (may be NULL). Called once, on the
   * member's thread, after the member's last commit (and after revoked()
   * for its last partitions when it left the group cleanly). Not called
   * after a failed create(); called when create() succeeded but the host
   * then refused the config. See the top of this file for what is logged
   * from here.
   */
  void (*destroy)(void *instance);

  /* ---- ABI 1.1: the host reads these only when struct_size covers them */

  /**
   * Optional. Called once per loaded plugin, on the main thread, before the
   * first create(), even when several pipelines use the plugin. host is a
   * module-level handle for api->log() (prefixed with the plugin's name);
   * it has no config group, pipeline or member. Return 0, or -1 with a
   * NUL-terminated message in err (errlen bytes, caller-owned): the host
   * then stops before consuming anything and prints that message, naming
   * the plugin; fini() is not called then. `khost check` calls init(),
   * create(), destroy() and fini() as a run does; `khost plugin-info`
   * calls nothing (it only reads the descriptor).
   */
  int (*init)(const khost_api_t *api, khost_host_t *host, char *err,
              size_t errlen);

  /**
   * Optional. Called once, on the main thread, after the last destroy() of
   * every instance, when init() succeeded (or there is none), at the end of
   * the process. Not called when the process is ended at once (a second
   * signal, the shutdown deadline, a crash).
   */
  void (*fini)(const khost_api_t *api, khost_host_t *host);

  /**
   * Optional. The member was given these partitions; records of them
   * follow. Called on the member's thread from its rebalance handling,
   * before any record of them reaches handle(). With the cooperative
   * assignor, only the partitions added; with the eager ones, the whole
   * new assignment. Never called with no partitions. parts (count
   * entries) is owned by the host and valid only during the call.
   */
  void (*assigned)(void *instance, const khost_partition_t *parts,
                   size_t count);

  /**
   * Optional. The member is giving these partitions up (a rebalance, or
   * leaving the group at shutdown); no record of them reaches handle()
   * any more. Called on the member's thread after the batch in flight has
   * been finished or abandoned, before the partitions are released: when
   * flags has no KHOST_REVOKED_LOST, what was handled of them has been
   * flushed and made durable, and its offsets committed as far as the
   * broker allowed. With KHOST_REVOKED_LOST, see that flag. Never called
   * with no partitions. parts (count entries) is owned by the host and
   * valid only during the call.
   */
  void (*revoked)(void *instance, const khost_partition_t *parts, size_t count,
                  uint32_t flags);

  /**
   * Optional: the declared config schema, ended by an entry with a NULL
   * name. When set, the host checks the plugin's config group against it
   * before create() (unknown keys, wrong types, missing required settings
   * are errors naming file, line and key) and the config lookups return
   * the defaults of absent settings. When NULL, the lookup-based check of
   * ABI 1.0 applies (see khost_api_t.config_string).
   */
  const khost_setting_t *settings;
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
