/*
 * order_analytics: the data-platform-consumer-group of khost's source
 * document. Counts the orders of `order-completed` and sums their revenue
 * per hour, in khost's plugin state. No settings.
 *
 * A record's value is the order as JSON, {"amount": <integer, cents>,
 * "occurredOn": "<ISO-8601 time>", ...}; the hour is occurredOn's, in UTC.
 * A value without those is bad data: handle() answers KHOST_FAIL.
 *
 * State (khost state scan --prefix hour:):
 *   hour:<YYYY-MM-DDTHH>:<topic>/<partition>  ->  "<orders> <revenue>"
 * Orders are not keyed, so one hour's orders come on every partition; the
 * partition in the key gives each key one writer (the member owning it),
 * as host state wants. The summary adds the partitions up.
 *
 * No idempotency code: an order's write becomes durable with its dedup
 * mark, so an order delivered again after a crash counts once.
 *
 * When the pipeline's last instance is destroyed, it logs the hourly
 * figures (the latest 24 hours) and the totals at notice level.
 *
 * Concurrency & locking: khost creates one instance per member and calls
 * create(), handle() and destroy() of an instance on that member's thread
 * only; instances share only the count of live instances per pipeline
 * (domain.c, under a mutex).
 */
#include <glib.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include <khost/plugin.h>

#include "domain.h"

#define SUMMARY_HOURS 24

typedef struct analytics {
  const khost_api_t *api;
  khost_host_t *host;
} analytics_t;

/* ------------------------------------------------------------ records */

/* The UTC hour of an ISO-8601 time, as 'YYYY-MM-DDTHH'. */
static int utc_hour(const char *iso, char out[16]) {
  GDateTime *t = g_date_time_new_from_iso8601(iso, NULL);
  GDateTime *utc = t ? g_date_time_to_utc(t) : NULL;
  gchar *hour = utc ? g_date_time_format(utc, "%Y-%m-%dT%H") : NULL;
  int ok = hour && strlen(hour) < 16;
  if (ok)
    strcpy(out, hour);
  g_free(hour);
  if (utc)
    g_date_time_unref(utc);
  if (t)
    g_date_time_unref(t);
  return ok ? 0 : -1;
}

/* Parse the order; 0, or -1 with the reason in why. */
static int parse_order(const khost_record_t *rec, char hour[16],
                       int64_t *amount, char *why, size_t whylen) {
  json_error_t jerr;
  json_int_t cents = 0;
  const char *when = NULL;
  int rc = -1;
  json_t *v =
      rec->value ? json_loadb(rec->value, rec->value_len, 0, &jerr) : NULL;
  if (!v)
    snprintf(why, whylen, "value is not JSON: %s",
             rec->value ? jerr.text : "no value");
  else if (json_unpack_ex(v, &jerr, 0, "{s:I, s:s}", "amount", &cents,
                          "occurredOn", &when) != 0)
    snprintf(why, whylen, "not an order: %s", jerr.text);
  else if (utc_hour(when, hour) != 0)
    snprintf(why, whylen, "occurredOn is not an ISO-8601 time: \"%.40s\"",
             when);
  else
    rc = 0;
  *amount = cents;
  json_decref(v);
  return rc;
}

static khost_result_t oa_handle(void *instance, const khost_record_t *rec) {
  analytics_t *a = instance;
  char hour[16], why[256];
  int64_t amount, v[2];
  if (parse_order(rec, hour, &amount, why, sizeof(why)) != 0) {
    char *where = dom_where(rec);
    a->api->log(a->host, KHOST_LOG_WARNING, "%s: %s", where, why);
    a->api->fail_reason(a->host, "%s", why);
    g_free(where);
    return KHOST_FAIL;
  }
  char *key =
      g_strdup_printf("hour:%s:%s/%d", hour, rec->topic, (int)rec->partition);
  int rc = dom_get_ints(a->api, a->host, key, v, 2);
  if (rc == 0) {
    v[0] += 1;
    v[1] += amount;
    rc = dom_put_ints(a->api, a->host, key, v, 2);
  }
  g_free(key);
  /* The store could not answer: the record comes again. */
  return rc == 0 ? KHOST_OK : KHOST_RETRY;
}

/* ----------------------------------------------------------- summary */

typedef struct hours {
  GPtrArray *lines;        /* "hour ...", oldest first */
  char hour[16];           /* being added up */
  int64_t orders, revenue; /* of that hour */
  int64_t total_orders, total_revenue;
} hours_t;

static void end_hour(hours_t *h) {
  char money[32];
  if (!h->hour[0])
    return;
  g_ptr_array_add(h->lines,
                  g_strdup_printf("hour %s (UTC): %lld orders, revenue %s",
                                  h->hour, (long long)h->orders,
                                  dom_money(h->revenue, money)));
  h->total_orders += h->orders;
  h->total_revenue += h->revenue;
  h->orders = h->revenue = 0;
}

/* Keys come in byte order: one hour's partitions one after another. */
static void add_row(void *arg, const char *rest, const int64_t *v, int n) {
  hours_t *h = arg;
  (void)n;
  size_t len = strcspn(rest, ":");
  if (len >= sizeof(h->hour))
    return;
  if (strncmp(h->hour, rest, len) != 0 || h->hour[len]) {
    end_hour(h);
    memcpy(h->hour, rest, len);
    h->hour[len] = '\0';
  }
  h->orders += v[0];
  h->revenue += v[1];
}

static void log_summary(analytics_t *a) {
  hours_t h = {.lines = g_ptr_array_new_with_free_func(g_free)};
  char money[32];
  if (dom_scan_ints(a->api, a->host, "hour:", 2, add_row, &h) != 0) {
    g_ptr_array_free(h.lines, TRUE);
    return;
  }
  end_hour(&h);
  guint first = h.lines->len > SUMMARY_HOURS ? h.lines->len - SUMMARY_HOURS : 0;
  for (guint i = first; i < h.lines->len; i++)
    a->api->log(a->host, KHOST_LOG_NOTICE, "%s",
                (const char *)h.lines->pdata[i]);
  a->api->log(a->host, KHOST_LOG_NOTICE,
              "%s: %lld orders over %u hour(s), revenue %s",
              a->api->pipeline_name(a->host), (long long)h.total_orders,
              h.lines->len, dom_money(h.total_revenue, money));
  g_ptr_array_free(h.lines, TRUE);
}

/* ---------------------------------------------------------- lifecycle */

static int oa_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  if (dom_join(api, host, err, errlen) != 0)
    return -1;
  analytics_t *a = g_new0(analytics_t, 1);
  a->api = api;
  a->host = host;
  *instance = a;
  return 0;
}

static void oa_destroy(void *instance) {
  analytics_t *a = instance;
  if (dom_leave(a->api, a->host))
    log_summary(a);
  g_free(a);
}

static const khost_setting_t settings[] = {
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,       .name = "order_analytics", .version = "2.0",
    .create = oa_create,     .handle = oa_handle,       .destroy = oa_destroy,
    .init = dom_module_init, .fini = dom_module_fini,   .settings = settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
