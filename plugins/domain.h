/*
 * domain: what the demo's domain plugins (order_analytics, coupon_issuer,
 * balance_ledger) share: their state kept in khost (the host API's
 * state_get/state_put/state_scan) as readable text, a few integers under a
 * key, so that `khost state scan` shows it as it is; the count of live
 * instances per pipeline that has the last one log the plugin's summary
 * (a registry the module's init() and fini() create and free); the
 * coordinates of a record for log lines and the text of an id field.
 *
 * None of them keeps a database or a table of event IDs of its own: a
 * record's state writes become durable in the same store transaction as
 * its dedup mark, so after a crash at any instant each record counts
 * exactly once.
 *
 * Internal, not installed: plugins/domain.c is compiled into each of those
 * modules (Makefile.am), so each module has its own registry. The
 * functions are hidden, and the modules export khost_plugin_entry only, so
 * the copies never meet, not even in a plugin loaded global.
 *
 * Concurrency & locking: the state calls are made on the calling
 * instance's thread (handle(), destroy()); the registry is shared by the
 * module's instances, under a mutex in domain.c, and lives from init() to
 * fini() (main thread, no instance alive).
 */
#ifndef KHOST_PLUGIN_DOMAIN_H
#define KHOST_PLUGIN_DOMAIN_H

#include <glib.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <khost/plugin.h>

#pragma GCC visibility push(hidden)

/* The most integers a state value holds. */
#define DOM_MAX_INTS 8

/* The module's init() and fini() (khost_plugin_t, ABI 1.1): the registry
 * of instances per pipeline. */
int dom_module_init(const khost_api_t *api, khost_host_t *host, char *err,
                    size_t errlen);
void dom_module_fini(const khost_api_t *api, khost_host_t *host);

/* For create(): refuse a host without state (older than ABI 1.1 with
 * state_*), else count one more instance of the pipeline. 0, or -1 with
 * the reason in err. */
int dom_join(const khost_api_t *api, khost_host_t *host, char *err,
             size_t errlen);
/* For destroy(): count one instance less; 1 when it was the pipeline's
 * last (the one to log the summary). */
int dom_leave(const khost_api_t *api, khost_host_t *host);

/* The n integers stored under key ("a b c"), zeros when the key has no
 * value. 0, or -1 when the state could not be read (logged by the host)
 * or holds something else. */
int dom_get_ints(const khost_api_t *api, khost_host_t *host, const char *key,
                 int64_t *v, int n);
/* Store n integers under key; 0, or -1 (outside handle()). */
int dom_put_ints(const khost_api_t *api, khost_host_t *host, const char *key,
                 const int64_t *v, int n);

/* fn(arg, key without the prefix, its integers) for every key starting
 * with prefix, in byte order; a value that is not n integers is passed as
 * zeros. 0, or -1 when the state could not be read. */
typedef void (*dom_row_fn)(void *arg, const char *rest, const int64_t *v,
                           int n);
int dom_scan_ints(const khost_api_t *api, khost_host_t *host,
                  const char *prefix, int n, dom_row_fn fn, void *arg);

/* "topic [p] offset o eventId id" of a record, for log lines (g_free()). */
char *dom_where(const khost_record_t *rec);

/* An id field's text: a JSON integer or non-empty string, for g_free();
 * NULL otherwise. */
char *dom_id_text(json_t *v);

/* "12.34" of an amount in cents (also negative), in buf. */
const char *dom_money(int64_t cents, char buf[32]);

#pragma GCC visibility pop

#endif
