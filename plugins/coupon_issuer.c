/*
 * coupon_issuer: the coupon-issue-consumer-group of khost's source
 * document. Every `coupon-issue` record is a request for one coupon; a
 * coupon has a limited stock. A request is granted while stock is left,
 * else refused as sold out. The counts live in khost's plugin state.
 *
 *   config = {
 *     stock = 100;      # coupons of each id, default 100
 *   };
 *
 * A record's value is the request as JSON, {"couponId": <integer or
 * string>, "userId": <integer or string>, ...}, and its key is the
 * couponId, as the source document's producers write it: a coupon's
 * requests then share a partition, which one member at a time handles in
 * offset order, so the check of the stock and the issue never race. A
 * value without couponId, or a record keyed otherwise (two members could
 * then spend one stock at once), is bad data: handle() answers KHOST_FAIL.
 *
 * State (khost state scan --prefix coupon:):
 *   coupon:<couponId>  ->  "<issued> <refused>"
 *
 * Never one request decided twice, never more than the stock, with no
 * idempotency code: a request's write becomes durable with its dedup
 * mark, so a request delivered again after a crash is decided once.
 * Sold-out requests are logged at info level.
 *
 * When the pipeline's last instance is destroyed, it logs every coupon's
 * issued count against the stock (the first 20 coupons) and the totals at
 * notice level.
 *
 * Concurrency & locking: khost creates one instance per member and calls
 * create(), handle() and destroy() of an instance on that member's thread
 * only; instances share only the count of live instances per pipeline
 * (domain.c, under a mutex).
 */
#include <glib.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <khost/plugin.h>

#include "domain.h"

#define SUMMARY_COUPONS 20
#define DEFAULT_STOCK 100

typedef struct issuer {
  const khost_api_t *api;
  khost_host_t *host;
  int64_t stock;
} issuer_t;

/* ------------------------------------------------------------ records */

/* The request's coupon and user (for g_free()); 0, or -1 with the reason
 * in why. */
static int parse_request(const khost_record_t *rec, char **coupon, char **user,
                         char *why, size_t whylen) {
  json_error_t jerr;
  json_t *v =
      rec->value ? json_loadb(rec->value, rec->value_len, 0, &jerr) : NULL;
  if (!v) {
    snprintf(why, whylen, "value is not JSON: %s",
             rec->value ? jerr.text : "no value");
    return -1;
  }
  *coupon = dom_id_text(json_object_get(v, "couponId"));
  *user = dom_id_text(json_object_get(v, "userId"));
  json_decref(v);
  if (!*coupon) {
    snprintf(why, whylen,
             "not a coupon request: no couponId (an integer or a string)");
    return -1;
  }
  if (!rec->key || rec->key_len != strlen(*coupon) ||
      memcmp(rec->key, *coupon, rec->key_len) != 0) {
    snprintf(why, whylen,
             "record key is not its couponId %s: requests of one coupon must "
             "share a partition",
             *coupon);
    return -1;
  }
  return 0;
}

/* Decide the request against the coupon's counts in state. */
static khost_result_t decide(issuer_t *c, const khost_record_t *rec,
                             const char *coupon, const char *user) {
  int64_t v[2]; /* issued, refused */
  char *key = g_strconcat("coupon:", coupon, NULL);
  int rc = dom_get_ints(c->api, c->host, key, v, 2);
  int issue = v[0] < c->stock;
  if (rc == 0) {
    v[issue ? 0 : 1]++;
    rc = dom_put_ints(c->api, c->host, key, v, 2);
  }
  g_free(key);
  if (rc != 0)
    return KHOST_RETRY; /* the store could not answer: it comes again */
  if (!issue) {
    char *where = dom_where(rec);
    c->api->log(c->host, KHOST_LOG_INFO,
                "%s: coupon %s sold out (stock %lld): request of user %s "
                "refused",
                where, coupon, (long long)c->stock, user ? user : "-");
    g_free(where);
  }
  return KHOST_OK;
}

static khost_result_t ci_handle(void *instance, const khost_record_t *rec) {
  issuer_t *c = instance;
  char *coupon = NULL, *user = NULL, why[256];
  khost_result_t res;
  if (parse_request(rec, &coupon, &user, why, sizeof(why)) == 0) {
    res = decide(c, rec, coupon, user);
  } else {
    char *where = dom_where(rec);
    c->api->log(c->host, KHOST_LOG_WARNING, "%s: %s", where, why);
    c->api->fail_reason(c->host, "%s", why);
    g_free(where);
    res = KHOST_FAIL;
  }
  g_free(coupon);
  g_free(user);
  return res;
}

/* ----------------------------------------------------------- summary */

typedef struct coupon_row {
  char *id;
  int64_t issued, refused;
} coupon_row_t;

static void add_coupon(void *arg, const char *rest, const int64_t *v, int n) {
  coupon_row_t r = {g_strdup(rest), v[0], v[1]};
  (void)n;
  g_array_append_val(arg, r);
}

/* Shorter ids first: numbers in their order. */
static gint by_id(gconstpointer a, gconstpointer b) {
  const coupon_row_t *x = a, *y = b;
  size_t lx = strlen(x->id), ly = strlen(y->id);
  return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x->id, y->id);
}

static void log_summary(issuer_t *c) {
  GArray *rows = g_array_new(FALSE, FALSE, sizeof(coupon_row_t));
  int64_t issued = 0, refused = 0, over = 0;
  if (dom_scan_ints(c->api, c->host, "coupon:", 2, add_coupon, rows) == 0) {
    g_array_sort(rows, by_id);
    for (guint i = 0; i < rows->len; i++) {
      const coupon_row_t *r = &g_array_index(rows, coupon_row_t, i);
      if (i < SUMMARY_COUPONS)
        c->api->log(c->host, KHOST_LOG_NOTICE,
                    "coupon %s: issued %lld of stock %lld, %lld sold-out "
                    "request(s) refused",
                    r->id, (long long)r->issued, (long long)c->stock,
                    (long long)r->refused);
      issued += r->issued;
      refused += r->refused;
      over += r->issued > c->stock;
    }
    c->api->log(c->host, KHOST_LOG_NOTICE,
                "%s: %u coupon(s), %lld issued, %lld sold-out request(s) "
                "refused, %lld coupon(s) over stock",
                c->api->pipeline_name(c->host), rows->len, (long long)issued,
                (long long)refused, (long long)over);
  }
  for (guint i = 0; i < rows->len; i++)
    g_free(g_array_index(rows, coupon_row_t, i).id);
  g_array_free(rows, TRUE);
}

/* ---------------------------------------------------------- lifecycle */

static int ci_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  int64_t stock = DEFAULT_STOCK;
  if (api->config_int(host, "stock", &stock) < 0) {
    snprintf(err, errlen, "stock must be an integer");
    return -1;
  }
  if (stock < 0) {
    snprintf(err, errlen, "stock must be 0 or more (got %lld)",
             (long long)stock);
    return -1;
  }
  if (dom_join(api, host, err, errlen) != 0)
    return -1;
  issuer_t *c = g_new0(issuer_t, 1);
  c->api = api;
  c->host = host;
  c->stock = stock;
  *instance = c;
  return 0;
}

static void ci_destroy(void *instance) {
  issuer_t *c = instance;
  if (dom_leave(c->api, c->host))
    log_summary(c);
  g_free(c);
}

static const khost_setting_t settings[] = {
    {"stock", KHOST_SETTING_INT, G_STRINGIFY(DEFAULT_STOCK),
     "coupons of each couponId to issue (0 or more)", 0},
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,       .name = "coupon_issuer", .version = "2.0",
    .create = ci_create,     .handle = ci_handle,     .destroy = ci_destroy,
    .init = dom_module_init, .fini = dom_module_fini, .settings = settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
