/*
 * balance_ledger: keeps each user's balance from `balance-activity`, in
 * khost's plugin state, and checks that each user's changes arrive in the
 * order they were made. That order is why the source document keys
 * BALANCE_CHARGED records "user:<id>": one user's records share a
 * partition, and Kafka keeps the order inside a partition. No settings.
 *
 * A record's value is the change as JSON, {"userId": <integer or string>,
 * "seq": <integer, the user's sequence number: 1, 2, 3, ...>, "amount":
 * <integer>, ...}, and its key "user:<userId>". A value without those, or
 * a record keyed otherwise (two members could then write one user's
 * balance at once), is bad data: handle() answers KHOST_FAIL.
 *
 * A change whose seq is not the user's last seq + 1 is an ordering
 * violation, a gap (seq further on: changes missing or not yet arrived)
 * or a reorder (seq at or below the last one: late). It is logged at
 * warning level with the user, the expected and the received seq and the
 * record's coordinates, counted, and applied all the same (the balance
 * stays complete); the user's last seq only moves forward.
 *
 * State (khost state scan --prefix user:):
 *   user:<userId>  ->  "<last seq> <balance> <entries> <gaps> <reorders>"
 *
 * No idempotency code: a change's write becomes durable with its dedup
 * mark, so a change delivered again after a crash is applied once.
 *
 * When the pipeline's last instance is destroyed, it logs the users,
 * entries, total balance and violations at notice level, and the users
 * with violations (the first 10).
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

#define SUMMARY_VIOLATIONS 10

/* The integers of a user's state. */
enum { U_SEQ, U_BALANCE, U_ENTRIES, U_GAPS, U_REORDERS, U_N };

typedef struct ledger {
  const khost_api_t *api;
  khost_host_t *host;
} ledger_t;

typedef struct change {
  char *user;
  int64_t seq, amount;
} change_t;

/* ------------------------------------------------------------ records */

static int parse_change(const khost_record_t *rec, change_t *c, char *why,
                        size_t whylen) {
  json_error_t jerr;
  json_int_t seq = 0, amount = 0;
  int rc = -1;
  json_t *v =
      rec->value ? json_loadb(rec->value, rec->value_len, 0, &jerr) : NULL;
  if (!v)
    snprintf(why, whylen, "value is not JSON: %s",
             rec->value ? jerr.text : "no value");
  else if (json_unpack_ex(v, &jerr, 0, "{s:I, s:I}", "seq", &seq, "amount",
                          &amount) != 0)
    snprintf(why, whylen, "not a balance change: %s", jerr.text);
  else if (!(c->user = dom_id_text(json_object_get(v, "userId"))))
    snprintf(why, whylen,
             "not a balance change: no userId (an integer or a string)");
  else if (seq < 1)
    snprintf(why, whylen, "seq must be 1 or more (got %lld)", (long long)seq);
  else
    rc = 0;
  c->seq = seq;
  c->amount = amount;
  json_decref(v);
  return rc;
}

/* "user:<userId>", the record's key as the state's. */
static int key_matches(const khost_record_t *rec, const char *key) {
  return rec->key && rec->key_len == strlen(key) &&
         memcmp(rec->key, key, rec->key_len) == 0;
}

/* Apply the change to the user's state u; a violation is logged. */
static void apply(ledger_t *l, const khost_record_t *rec, const change_t *c,
                  int64_t *u) {
  int64_t expected = u[U_SEQ] + 1;
  if (c->seq != expected) {
    int gap = c->seq > expected;
    char *where = dom_where(rec);
    l->api->log(l->host, KHOST_LOG_WARNING,
                "%s: user %s: expected seq %lld, got %lld (%s); applied", where,
                c->user, (long long)expected, (long long)c->seq,
                gap ? "gap" : "reorder");
    g_free(where);
    u[gap ? U_GAPS : U_REORDERS]++;
  }
  if (c->seq > u[U_SEQ])
    u[U_SEQ] = c->seq;
  u[U_BALANCE] += c->amount;
  u[U_ENTRIES]++;
}

static khost_result_t bl_handle(void *instance, const khost_record_t *rec) {
  ledger_t *l = instance;
  change_t c = {0};
  char why[256], *key = NULL;
  int64_t u[U_N];
  khost_result_t res = KHOST_FAIL;
  if (parse_change(rec, &c, why, sizeof(why)) == 0) {
    key = g_strconcat("user:", c.user, NULL);
    if (!key_matches(rec, key))
      snprintf(why, sizeof(why),
               "record key is not %s: one user's changes must share a "
               "partition",
               key);
    else if (dom_get_ints(l->api, l->host, key, u, U_N) != 0)
      res = KHOST_RETRY; /* the store could not answer: it comes again */
    else {
      apply(l, rec, &c, u);
      res = dom_put_ints(l->api, l->host, key, u, U_N) == 0 ? KHOST_OK
                                                            : KHOST_RETRY;
    }
  }
  if (res == KHOST_FAIL) {
    char *where = dom_where(rec);
    l->api->log(l->host, KHOST_LOG_WARNING, "%s: %s", where, why);
    l->api->fail_reason(l->host, "%s", why);
    g_free(where);
  }
  g_free(key);
  g_free(c.user);
  return res;
}

/* ----------------------------------------------------------- summary */

typedef struct totals {
  ledger_t *l;
  int64_t users, entries, balance, violations;
  int listed;
} totals_t;

static void add_user(void *arg, const char *user, const int64_t *u, int n) {
  totals_t *t = arg;
  (void)n;
  t->users++;
  t->entries += u[U_ENTRIES];
  t->balance += u[U_BALANCE];
  t->violations += u[U_GAPS] + u[U_REORDERS];
  if (u[U_GAPS] + u[U_REORDERS] > 0 && t->listed++ < SUMMARY_VIOLATIONS)
    t->l->api->log(t->l->host, KHOST_LOG_NOTICE,
                   "violations: user %s: %lld gap(s), %lld reorder(s)", user,
                   (long long)u[U_GAPS], (long long)u[U_REORDERS]);
}

static void log_summary(ledger_t *l) {
  totals_t t = {.l = l};
  char money[32];
  if (dom_scan_ints(l->api, l->host, "user:", U_N, add_user, &t) != 0)
    return;
  l->api->log(l->host, KHOST_LOG_NOTICE,
              "%s: %lld user(s), %lld ledger entries, balances total %s; "
              "per-user ordering violations: %lld",
              l->api->pipeline_name(l->host), (long long)t.users,
              (long long)t.entries, dom_money(t.balance, money),
              (long long)t.violations);
}

/* ---------------------------------------------------------- lifecycle */

static int bl_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  if (dom_join(api, host, err, errlen) != 0)
    return -1;
  ledger_t *l = g_new0(ledger_t, 1);
  l->api = api;
  l->host = host;
  *instance = l;
  return 0;
}

static void bl_destroy(void *instance) {
  ledger_t *l = instance;
  if (dom_leave(l->api, l->host))
    log_summary(l);
  g_free(l);
}

static const khost_setting_t settings[] = {
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,       .name = "balance_ledger", .version = "2.0",
    .create = bl_create,     .handle = bl_handle,      .destroy = bl_destroy,
    .init = dom_module_init, .fini = dom_module_fini,  .settings = settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
