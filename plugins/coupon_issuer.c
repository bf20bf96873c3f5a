/*
 * coupon_issuer: the coupon-issue-consumer-group of khost's source
 * document. Every `coupon-issue` record is a request for one coupon; a
 * coupon has a limited stock. A request is granted while stock is left,
 * else refused as sold out. State lives in the plugin's own SQLite
 * database.
 *
 *   config = {
 *     db = "/var/lib/khost/coupons.db";   # required
 *     stock = 100;                         # coupons of each id, default 100
 *   };
 *
 * A record's value is the request as JSON, {"couponId": <integer or
 * string>, "userId": <integer or string>, ...}; a value without couponId is
 * bad data: handle() answers KHOST_FAIL.
 *
 * Tables:
 *   coupons(coupon_id TEXT PRIMARY KEY, issued INTEGER, sold_out INTEGER)
 *   requests(event_id TEXT PRIMARY KEY, coupon_id, user_id,
 *            outcome TEXT ('issued' or 'sold_out'),
 *            kafka_topic, kafka_partition, kafka_offset)
 *
 * Never one event issued twice, never more than the stock: handle() only
 * buffers; flush(), which the host calls right before it commits the
 * batch's dedup marks and offsets, decides every request of the batch in
 * one BEGIN IMMEDIATE transaction, so the check of the stock and the
 * issue happen under the database's write lock, whichever instance (or
 * host) writes. An event ID already in `requests` is not decided again: a
 * batch delivered again because its dedup marks never reached the host's
 * store changes nothing. (A record without an event ID is known by
 * topic/partition/offset.) Sold-out requests are logged at info level.
 *
 * When the last instance using a database is destroyed, it logs every
 * coupon's issued count against the stock (the first 20 coupons) and the
 * totals at notice level.
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

#define SUMMARY_COUPONS 20
#define DEFAULT_STOCK 100

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS coupons(coupon_id TEXT PRIMARY KEY,"
    " issued INTEGER NOT NULL DEFAULT 0, sold_out INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS requests(event_id TEXT PRIMARY KEY,"
    " coupon_id TEXT NOT NULL, user_id TEXT,"
    " outcome TEXT NOT NULL CHECK(outcome IN ('issued', 'sold_out')),"
    " kafka_topic TEXT, kafka_partition INTEGER, kafka_offset INTEGER);";

enum { ST_SEEN, ST_ISSUED, ST_RECORD, ST_COUNT, N_STMTS };

static const char *const sql[N_STMTS] = {
    [ST_SEEN] = "SELECT 1 FROM requests WHERE event_id = ?",
    [ST_ISSUED] = "SELECT issued FROM coupons WHERE coupon_id = ?",
    [ST_RECORD] = "INSERT INTO requests(event_id, coupon_id, user_id, outcome,"
                  " kafka_topic, kafka_partition, kafka_offset)"
                  " VALUES(?, ?, ?, ?, ?, ?, ?)",
    [ST_COUNT] = "INSERT INTO coupons(coupon_id, issued, sold_out)"
                 " VALUES(?1, ?2, 1 - ?2) ON CONFLICT(coupon_id) DO UPDATE"
                 " SET issued = issued + ?2, sold_out = sold_out + 1 - ?2",
};

typedef struct request {
  char *event_id; /* or "topic/partition/offset" */
  char *where;    /* "topic [p] offset o eventId id", for log lines */
  char *coupon, *user;
  char *topic;
  int32_t partition;
  int64_t offset;
  int outcome; /* after flush: OUT_* */
} request_t;

enum { OUT_ISSUED, OUT_SOLD_OUT, OUT_ALREADY };

typedef struct issuer {
  const khost_api_t *api;
  khost_host_t *host;
  int64_t stock;
  pdb_t db;
  GArray *pending; /* request_t handled since the last flush */
} issuer_t;

/* ----------------------------------------------------------- database */

/* Run a prepared statement to its end; SQLITE_DONE or the error code. A
 * row, when row is not NULL, is stored there (its first column). */
static int step(sqlite3_stmt *st, int64_t *row) {
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && row)
    *row = sqlite3_column_int64(st, 0);
  if (rc == SQLITE_ROW)
    rc = row ? SQLITE_DONE : SQLITE_ROW;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc;
}

/* ------------------------------------------------------------ records */

static int parse_request(const khost_record_t *rec, request_t *r, char *why,
                         size_t whylen) {
  json_error_t jerr;
  json_t *v =
      rec->value ? json_loadb(rec->value, rec->value_len, 0, &jerr) : NULL;
  if (!v) {
    snprintf(why, whylen, "value is not JSON: %s",
             rec->value ? jerr.text : "no value");
    return -1;
  }
  r->coupon = pdb_id_text(json_object_get(v, "couponId"));
  r->user = pdb_id_text(json_object_get(v, "userId"));
  json_decref(v);
  if (!r->coupon) {
    snprintf(why, whylen,
             "not a coupon request: no couponId (an integer or "
             "a string)");
    return -1;
  }
  return 0;
}

static void free_request(request_t *r) {
  g_free(r->event_id);
  g_free(r->where);
  g_free(r->coupon);
  g_free(r->user);
  g_free(r->topic);
}

static khost_result_t ci_handle(void *instance, const khost_record_t *rec) {
  issuer_t *c = instance;
  request_t r = {.partition = rec->partition, .offset = rec->offset};
  char why[256];
  pdb_identify(rec, &r.event_id, &r.where);
  if (parse_request(rec, &r, why, sizeof(why)) != 0) {
    c->api->log(c->host, KHOST_LOG_WARNING, "%s: %s", r.where, why);
    free_request(&r);
    return KHOST_FAIL;
  }
  r.topic = g_strdup(rec->topic);
  g_array_append_val(c->pending, r);
  return KHOST_OK;
}

/* ---------------------------------------------------------- flushing */

/* Decide one request inside the write transaction; SQLITE_DONE when done.
 * The stock is read and spent under the same write lock. */
static int decide(void *instance, void *item) {
  issuer_t *c = instance;
  request_t *r = item;
  int64_t seen = 0, issued = 0;
  sqlite3_bind_text(c->db.st[ST_SEEN], 1, r->event_id, -1, SQLITE_STATIC);
  int rc = step(c->db.st[ST_SEEN], &seen);
  if (rc != SQLITE_DONE || seen) {
    r->outcome = OUT_ALREADY;
    return rc;
  }
  sqlite3_bind_text(c->db.st[ST_ISSUED], 1, r->coupon, -1, SQLITE_STATIC);
  if ((rc = step(c->db.st[ST_ISSUED], &issued)) != SQLITE_DONE)
    return rc;
  r->outcome = issued < c->stock ? OUT_ISSUED : OUT_SOLD_OUT;
  sqlite3_stmt *rec = c->db.st[ST_RECORD], *count = c->db.st[ST_COUNT];
  sqlite3_bind_text(rec, 1, r->event_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(rec, 2, r->coupon, -1, SQLITE_STATIC);
  sqlite3_bind_text(rec, 3, r->user, -1, SQLITE_STATIC);
  sqlite3_bind_text(rec, 4, r->outcome == OUT_ISSUED ? "issued" : "sold_out",
                    -1, SQLITE_STATIC);
  sqlite3_bind_text(rec, 5, r->topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(rec, 6, r->partition);
  sqlite3_bind_int64(rec, 7, r->offset);
  if ((rc = step(rec, NULL)) != SQLITE_DONE)
    return rc;
  sqlite3_bind_text(count, 1, r->coupon, -1, SQLITE_STATIC);
  sqlite3_bind_int(count, 2, r->outcome == OUT_ISSUED);
  return step(count, NULL);
}

static void clear_pending(issuer_t *c) {
  for (guint i = 0; i < c->pending->len; i++)
    free_request(&g_array_index(c->pending, request_t, i));
  g_array_set_size(c->pending, 0);
}

/* After the commit: what was refused, and what had been decided before. */
static void log_outcomes(issuer_t *c) {
  for (guint i = 0; i < c->pending->len; i++) {
    const request_t *r = &g_array_index(c->pending, request_t, i);
    if (r->outcome == OUT_SOLD_OUT)
      c->api->log(c->host, KHOST_LOG_INFO,
                  "%s: coupon %s sold out (stock %lld): request of user %s "
                  "refused",
                  r->where, r->coupon, (long long)c->stock,
                  r->user ? r->user : "-");
    else if (r->outcome == OUT_ALREADY)
      c->api->log(c->host, KHOST_LOG_INFO,
                  "%s: already decided (delivered again); not issued twice",
                  r->where);
  }
}

static int ci_flush(void *instance, char *err, size_t errlen) {
  issuer_t *c = instance;
  if (pdb_write(&c->db, c->pending, decide, c, err, errlen) != 0)
    return -1;
  log_outcomes(c);
  clear_pending(c);
  return 0;
}

/* ----------------------------------------------------------- summary */

static void log_summary(void *instance) {
  issuer_t *c = instance;
  sqlite3_stmt *st = NULL;
  int64_t coupons = 0, issued = 0, sold_out = 0, over = 0;
  sqlite3_prepare_v2(c->db.conn,
                     "SELECT coupon_id, issued, sold_out FROM coupons "
                     "ORDER BY length(coupon_id), coupon_id",
                     -1, &st, NULL);
  while (st && sqlite3_step(st) == SQLITE_ROW) {
    int64_t n = sqlite3_column_int64(st, 1),
            refused = sqlite3_column_int64(st, 2);
    if (coupons++ < SUMMARY_COUPONS)
      c->api->log(c->host, KHOST_LOG_NOTICE,
                  "coupon %s: issued %lld of stock %lld, %lld sold-out "
                  "request(s) refused",
                  sqlite3_column_text(st, 0), (long long)n, (long long)c->stock,
                  (long long)refused);
    issued += n;
    sold_out += refused;
    over += n > c->stock;
  }
  sqlite3_finalize(st);
  c->api->log(c->host, KHOST_LOG_NOTICE,
              "%s: %lld coupon(s), %lld issued, %lld sold-out request(s) "
              "refused, %lld coupon(s) over stock",
              c->db.path, (long long)coupons, (long long)issued,
              (long long)sold_out, (long long)over);
}

/* ---------------------------------------------------------- lifecycle */

static int read_settings(const khost_api_t *api, khost_host_t *host,
                         const char **path, int64_t *stock, char *err,
                         size_t errlen) {
  int has = api->config_string(host, "db", path);
  *stock = DEFAULT_STOCK;
  if (api->config_int(host, "stock", stock) < 0 || has < 0) {
    snprintf(err, errlen, "db must be a string, stock an integer");
    return -1;
  }
  if (has == 0 || !(*path)[0]) {
    snprintf(err, errlen,
             "the setting db (the SQLite database of issued coupons) is "
             "required");
    return -1;
  }
  if (*stock < 0) {
    snprintf(err, errlen, "stock must be 0 or more (got %lld)",
             (long long)*stock);
    return -1;
  }
  return pdb_check_path(*path, err, errlen);
}

static int ci_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  const char *path = NULL;
  int64_t stock;
  if (read_settings(api, host, &path, &stock, err, errlen) != 0)
    return -1;
  issuer_t *c = g_new0(issuer_t, 1);
  c->api = api;
  c->host = host;
  pdb_init(&c->db, path, schema, sql, N_STMTS);
  c->stock = stock;
  c->pending = g_array_new(FALSE, FALSE, sizeof(request_t));
  *instance = c;
  return 0;
}

static void ci_destroy(void *instance) {
  issuer_t *c = instance;
  /* Requests not flushed were not committed either: they are delivered
   * again, so dropping them loses nothing. */
  if (c->pending->len)
    c->api->log(c->host, KHOST_LOG_INFO,
                "%u request(s) of an uncommitted batch dropped",
                c->pending->len);
  clear_pending(c);
  pdb_finish(&c->db, c->api, c->host, log_summary, c);
  g_array_free(c->pending, TRUE);
  g_free(c);
}

static const khost_setting_t settings[] = {
    {"db", KHOST_SETTING_STRING, NULL,
     "the SQLite database of issued coupons (required)", 0},
    {"stock", KHOST_SETTING_INT, G_STRINGIFY(DEFAULT_STOCK),
     "coupons of each couponId to issue (0 or more)", 0},
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,     .name = "coupon_issuer", .version = "1.0",
    .create = ci_create,   .handle = ci_handle,     .flush = ci_flush,
    .destroy = ci_destroy, .init = pdb_module_init, .fini = pdb_module_fini,
    .settings = settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
