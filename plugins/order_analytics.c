/*
 * order_analytics: the data-platform-consumer-group of khost's source
 * document. Counts the orders of `order-completed` and sums their revenue
 * per hour, in its own SQLite database.
 *
 *   config = {
 *     db = "/var/lib/khost/analytics.db";   # required
 *   };
 *
 * A record's value is the order as JSON, {"amount": <integer, cents>,
 * "occurredOn": "<ISO-8601 time>", ...}; the hour is occurredOn's, in UTC.
 * A value without those is bad data: handle() answers KHOST_FAIL.
 *
 * Tables:
 *   hourly(hour TEXT PRIMARY KEY,    -- 'YYYY-MM-DDTHH', UTC
 *          orders INTEGER, revenue INTEGER)
 *   applied(event_id TEXT PRIMARY KEY)   -- every order counted
 *
 * handle() only buffers; flush(), which the host calls right before it
 * commits the batch's dedup marks and offsets, writes the whole batch in
 * one transaction, so a crash never leaves half a batch counted. An event
 * ID already in `applied` is not counted again: a batch delivered again
 * because its dedup marks never reached the host's store counts once.
 * (A record without an event ID is known by topic/partition/offset.)
 *
 * When the last instance using a database is destroyed, it logs the hourly
 * table (the latest 24 hours) and the totals at notice level.
 *
 * Concurrency & locking: khost creates one instance per member and calls
 * create(), handle(), flush() and destroy() of an instance on that
 * member's thread only. Each instance has its own SQLite connection,
 * opened at its first flush(); instances (and other processes) share only
 * the database file, whose writers SQLite serialises (WAL, busy timeout,
 * BEGIN IMMEDIATE). The one piece of memory instances share is the count
 * of live instances per database, for the summary, under a mutex.
 */
#include <glib.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <khost/plugin.h>

#include "plugin_db.h"

#define SUMMARY_HOURS 24

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS hourly(hour TEXT PRIMARY KEY,"
    " orders INTEGER NOT NULL, revenue INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS applied(event_id TEXT PRIMARY KEY)"
    " WITHOUT ROWID;";

enum { ST_CLAIM, ST_ADD, N_STMTS };

static const char *const sql[N_STMTS] = {
    [ST_CLAIM] = "INSERT OR IGNORE INTO applied(event_id) VALUES(?)",
    [ST_ADD] = "INSERT INTO hourly(hour, orders, revenue) VALUES(?, 1, ?) "
               "ON CONFLICT(hour) DO UPDATE SET orders = orders + 1,"
               " revenue = revenue + excluded.revenue",
};

typedef struct order {
  char *event_id; /* or "topic/partition/offset" */
  char *where;    /* "topic [p] offset o eventId id", for log lines */
  char hour[16];
  int64_t amount;
  int already; /* after flush: counted before */
} order_t;

typedef struct analytics {
  const khost_api_t *api;
  khost_host_t *host;
  pdb_t db;
  GArray *pending; /* order_t of records handled since the last flush */
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
static int parse_order(const khost_record_t *rec, order_t *o, char *why,
                       size_t whylen) {
  json_error_t jerr;
  json_int_t amount = 0;
  const char *when = NULL;
  int rc = -1;
  json_t *v =
      rec->value ? json_loadb(rec->value, rec->value_len, 0, &jerr) : NULL;
  if (!v)
    snprintf(why, whylen, "value is not JSON: %s",
             rec->value ? jerr.text : "no value");
  else if (json_unpack_ex(v, &jerr, 0, "{s:I, s:s}", "amount", &amount,
                          "occurredOn", &when) != 0)
    snprintf(why, whylen, "not an order: %s", jerr.text);
  else if (utc_hour(when, o->hour) != 0)
    snprintf(why, whylen, "occurredOn is not an ISO-8601 time: \"%.40s\"",
             when);
  else
    rc = 0;
  o->amount = amount;
  json_decref(v);
  return rc;
}

static khost_result_t oa_handle(void *instance, const khost_record_t *rec) {
  analytics_t *a = instance;
  order_t o = {0};
  char why[256];
  pdb_identify(rec, &o.event_id, &o.where);
  if (parse_order(rec, &o, why, sizeof(why)) != 0) {
    a->api->log(a->host, KHOST_LOG_WARNING, "%s: %s", o.where, why);
    g_free(o.event_id);
    g_free(o.where);
    return KHOST_FAIL;
  }
  g_array_append_val(a->pending, o);
  return KHOST_OK;
}

/* ---------------------------------------------------------- flushing */

/* Apply one order inside the open transaction; SQLITE_DONE when done. */
static int apply(void *instance, void *item) {
  analytics_t *a = instance;
  order_t *o = item;
  sqlite3_stmt *claim = a->db.st[ST_CLAIM], *add = a->db.st[ST_ADD];
  sqlite3_bind_text(claim, 1, o->event_id, -1, SQLITE_STATIC);
  int rc = pdb_step(claim);
  o->already = rc == SQLITE_DONE && sqlite3_changes(a->db.conn) == 0;
  if (rc != SQLITE_DONE || o->already)
    return rc;
  sqlite3_bind_text(add, 1, o->hour, -1, SQLITE_STATIC);
  sqlite3_bind_int64(add, 2, o->amount);
  return pdb_step(add);
}

static void clear_pending(analytics_t *a) {
  for (guint i = 0; i < a->pending->len; i++) {
    order_t *o = &g_array_index(a->pending, order_t, i);
    g_free(o->event_id);
    g_free(o->where);
  }
  g_array_set_size(a->pending, 0);
}

static int oa_flush(void *instance, char *err, size_t errlen) {
  analytics_t *a = instance;
  if (pdb_write(&a->db, a->pending, apply, a, err, errlen) != 0)
    return -1;
  for (guint i = 0; i < a->pending->len; i++) {
    const order_t *o = &g_array_index(a->pending, order_t, i);
    if (o->already)
      a->api->log(a->host, KHOST_LOG_INFO,
                  "%s: already counted (delivered again); not counted twice",
                  o->where);
  }
  clear_pending(a);
  return 0;
}

/* ----------------------------------------------------------- summary */

static void log_summary(void *instance) {
  analytics_t *a = instance;
  sqlite3_stmt *st = NULL;
  int64_t hours = 0, orders = 0, revenue = 0;
  sqlite3_prepare_v2(a->db.conn,
                     "SELECT hour, orders, revenue FROM hourly "
                     "ORDER BY hour DESC",
                     -1, &st, NULL);
  GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
  while (st && sqlite3_step(st) == SQLITE_ROW) {
    int64_t n = sqlite3_column_int64(st, 1), sum = sqlite3_column_int64(st, 2);
    if (hours++ < SUMMARY_HOURS)
      g_ptr_array_add(lines,
                      g_strdup_printf("hour %s (UTC): %lld orders, revenue "
                                      "%lld.%02lld",
                                      sqlite3_column_text(st, 0), (long long)n,
                                      (long long)(sum / 100),
                                      (long long)llabs(sum % 100)));
    orders += n;
    revenue += sum;
  }
  sqlite3_finalize(st);
  for (guint i = lines->len; i > 0; i--)
    a->api->log(a->host, KHOST_LOG_NOTICE, "%s",
                (const char *)lines->pdata[i - 1]);
  a->api->log(a->host, KHOST_LOG_NOTICE,
              "%s: %lld orders over %lld hour(s), revenue %lld.%02lld",
              a->db.path, (long long)orders, (long long)hours,
              (long long)(revenue / 100), (long long)llabs(revenue % 100));
  g_ptr_array_free(lines, TRUE);
}

/* ---------------------------------------------------------- lifecycle */

static int oa_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  const char *path = NULL;
  if (pdb_config_path(api, host, "to keep the hourly figures in", &path, err,
                      errlen) != 0)
    return -1;
  analytics_t *a = g_new0(analytics_t, 1);
  a->api = api;
  a->host = host;
  pdb_init(&a->db, path, schema, sql, N_STMTS);
  a->pending = g_array_new(FALSE, FALSE, sizeof(order_t));
  *instance = a;
  return 0;
}

static void oa_destroy(void *instance) {
  analytics_t *a = instance;
  /* Orders not flushed were not committed either: they are delivered
   * again, so dropping them loses nothing. */
  if (a->pending->len)
    a->api->log(a->host, KHOST_LOG_INFO,
                "%u order(s) of an uncommitted batch dropped", a->pending->len);
  clear_pending(a);
  pdb_finish(&a->db, a->api, a->host, log_summary, a);
  g_array_free(a->pending, TRUE);
  g_free(a);
}

static const khost_setting_t settings[] = {
    {"db", KHOST_SETTING_STRING, NULL,
     "the SQLite database of the hourly figures (required)", 0},
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,     .name = "order_analytics", .version = "1.0",
    .create = oa_create,   .handle = oa_handle,       .flush = oa_flush,
    .destroy = oa_destroy, .init = pdb_module_init,   .fini = pdb_module_fini,
    .settings = settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
