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
#include <errno.h>
#include <glib.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <khost/plugin.h>

#define BUSY_TIMEOUT_MS 10000
#define SUMMARY_HOURS 24

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS hourly(hour TEXT PRIMARY KEY,"
    " orders INTEGER NOT NULL, revenue INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS applied(event_id TEXT PRIMARY KEY)"
    " WITHOUT ROWID;";

typedef struct order {
  char *event_id; /* or "topic/partition/offset" */
  char *where;    /* "topic [p] offset o eventId id", for log lines */
  char hour[16];
  int64_t amount;
} order_t;

typedef struct analytics {
  const khost_api_t *api;
  khost_host_t *host;
  char *path;
  sqlite3 *db;
  sqlite3_stmt *claim, *add;
  GArray *pending; /* order_t of records handled since the last flush */
} analytics_t;

/* ----------------------------------------------- instances per database */

typedef struct db_users {
  int instances;
  int used; /* an instance wrote to it: worth a summary */
} db_users_t;

G_LOCK_DEFINE_STATIC(registry);
static GHashTable *registry; /* path -> db_users_t */

static void registry_join(const char *path) {
  G_LOCK(registry);
  if (!registry)
    registry = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  db_users_t *u = g_hash_table_lookup(registry, path);
  if (!u) {
    u = g_new0(db_users_t, 1);
    g_hash_table_insert(registry, g_strdup(path), u);
  }
  u->instances++;
  G_UNLOCK(registry);
}

static void registry_mark_used(const char *path) {
  G_LOCK(registry);
  db_users_t *u = registry ? g_hash_table_lookup(registry, path) : NULL;
  if (u)
    u->used = 1;
  G_UNLOCK(registry);
}

/* Returns 1 when this was the last instance of a database written to. */
static int registry_leave(const char *path) {
  int last = 0;
  G_LOCK(registry);
  db_users_t *u = g_hash_table_lookup(registry, path);
  if (--u->instances == 0) {
    last = u->used;
    g_hash_table_remove(registry, path);
  }
  if (g_hash_table_size(registry) == 0) {
    g_hash_table_destroy(registry);
    registry = NULL;
  }
  G_UNLOCK(registry);
  return last;
}

/* ----------------------------------------------------------- database */

/* Refuse at start what would fail at the first write, without creating
 * the database (so that `khost check` leaves nothing behind). */
static int check_db_path(const char *path, char *err, size_t errlen) {
  char *dir = g_path_get_dirname(path);
  int ok = access(path, F_OK) == 0 ? access(path, R_OK | W_OK) == 0
                                   : access(dir, W_OK | X_OK) == 0;
  if (!ok)
    snprintf(err, errlen, "db %s: %s", path, strerror(errno));
  g_free(dir);
  return ok ? 0 : -1;
}

/* A new database is switched to WAL under an exclusive lock that SQLite
 * does not wait for (no busy handler): several instances opening it at once
 * retry for as long as the busy timeout. */
static int set_wal(sqlite3 *db) {
  int rc = SQLITE_BUSY;
  for (int waited = 0; rc == SQLITE_BUSY && waited <= BUSY_TIMEOUT_MS;
       waited += 10) {
    rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc == SQLITE_BUSY)
      sqlite3_sleep(10);
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  return rc;
}

static int open_db(analytics_t *a, char *err, size_t errlen) {
  int rc = sqlite3_open_v2(a->path, &a->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_busy_timeout(a->db, BUSY_TIMEOUT_MS);
  if (rc == SQLITE_OK)
    rc = set_wal(a->db);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(a->db, schema, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(a->db,
                            "INSERT OR IGNORE INTO applied(event_id) "
                            "VALUES(?)",
                            -1, &a->claim, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(
        a->db,
        "INSERT INTO hourly(hour, orders, revenue) VALUES(?, 1, ?) "
        "ON CONFLICT(hour) DO UPDATE SET orders = orders + 1,"
        " revenue = revenue + excluded.revenue",
        -1, &a->add, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "db %s: %s", a->path,
             a->db ? sqlite3_errmsg(a->db) : sqlite3_errstr(rc));
    sqlite3_finalize(a->claim);
    sqlite3_close(a->db);
    a->claim = NULL;
    a->db = NULL;
    return -1;
  }
  registry_mark_used(a->path);
  return 0;
}

static void close_db(analytics_t *a) {
  sqlite3_finalize(a->claim);
  sqlite3_finalize(a->add);
  sqlite3_close(a->db);
  a->db = NULL;
}

/* Run a prepared statement once; SQLITE_DONE or the error code. */
static int step(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc;
}

/* ------------------------------------------------------------ records */

/* "topic [p] offset o eventId id", and the identity used for `applied`. */
static void identify(const khost_record_t *rec, char **event_id, char **where) {
  if (rec->event_id)
    *event_id = g_strndup(rec->event_id, rec->event_id_len);
  else
    *event_id = g_strdup_printf("%s/%d/%lld", rec->topic, (int)rec->partition,
                                (long long)rec->offset);
  *where = g_strdup_printf("%s [%d] offset %lld eventId %s", rec->topic,
                           (int)rec->partition, (long long)rec->offset,
                           rec->event_id ? *event_id : "-");
}

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
  identify(rec, &o.event_id, &o.where);
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
static int apply(analytics_t *a, const order_t *o, int *already) {
  sqlite3_bind_text(a->claim, 1, o->event_id, -1, SQLITE_STATIC);
  int rc = step(a->claim);
  *already = rc == SQLITE_DONE && sqlite3_changes(a->db) == 0;
  if (rc != SQLITE_DONE || *already)
    return rc;
  sqlite3_bind_text(a->add, 1, o->hour, -1, SQLITE_STATIC);
  sqlite3_bind_int64(a->add, 2, o->amount);
  return step(a->add);
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
  int rc = SQLITE_DONE, already;
  GPtrArray *seen = g_ptr_array_new();
  if (a->pending->len == 0)
    goto out;
  if (!a->db && open_db(a, err, errlen) != 0) {
    rc = SQLITE_ERROR;
    goto out;
  }
  rc = sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  for (guint i = 0; rc == SQLITE_OK && i < a->pending->len; i++) {
    order_t *o = &g_array_index(a->pending, order_t, i);
    if (apply(a, o, &already) != SQLITE_DONE)
      rc = SQLITE_ERROR;
    else if (already)
      g_ptr_array_add(seen, o->where);
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    /* Nothing of the batch stays: the host calls flush() again. */
    snprintf(err, errlen, "db %s: %s", a->path, sqlite3_errmsg(a->db));
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
    goto out;
  }
  for (guint i = 0; i < seen->len; i++)
    a->api->log(a->host, KHOST_LOG_INFO,
                "%s: already counted (delivered again); not counted twice",
                (const char *)seen->pdata[i]);
  clear_pending(a);
  rc = SQLITE_DONE;
out:
  g_ptr_array_free(seen, TRUE);
  return rc == SQLITE_DONE ? 0 : -1;
}

/* ----------------------------------------------------------- summary */

static void log_summary(analytics_t *a) {
  sqlite3_stmt *st = NULL;
  int64_t hours = 0, orders = 0, revenue = 0;
  sqlite3_prepare_v2(a->db,
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
              "%s: %lld orders over %lld hour(s), revenue %lld.%02lld", a->path,
              (long long)orders, (long long)hours, (long long)(revenue / 100),
              (long long)llabs(revenue % 100));
  g_ptr_array_free(lines, TRUE);
}

/* ---------------------------------------------------------- lifecycle */

static int oa_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  const char *path = NULL;
  int has = api->config_string(host, "db", &path);
  if (has < 0) {
    snprintf(err, errlen, "db must be a string (the SQLite database path)");
    return -1;
  }
  if (has == 0 || !path[0]) {
    snprintf(err, errlen,
             "the setting db (the SQLite database to keep the hourly "
             "figures in) is required");
    return -1;
  }
  if (check_db_path(path, err, errlen) != 0)
    return -1;
  analytics_t *a = g_new0(analytics_t, 1);
  a->api = api;
  a->host = host;
  a->path = g_strdup(path);
  a->pending = g_array_new(FALSE, FALSE, sizeof(order_t));
  registry_join(a->path);
  *instance = a;
  return 0;
}

static void oa_destroy(void *instance) {
  analytics_t *a = instance;
  char err[512];
  /* Orders not flushed were not committed either: they are delivered
   * again, so dropping them loses nothing. */
  if (a->pending->len)
    a->api->log(a->host, KHOST_LOG_INFO,
                "%u order(s) of an uncommitted batch dropped", a->pending->len);
  clear_pending(a);
  if (registry_leave(a->path)) {
    if (a->db || open_db(a, err, sizeof(err)) == 0)
      log_summary(a);
    else
      a->api->log(a->host, KHOST_LOG_WARNING, "no summary: %s", err);
  }
  if (a->db)
    close_db(a);
  g_array_free(a->pending, TRUE);
  g_free(a->path);
  g_free(a);
}

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,     .name = "order_analytics", .version = "1.0",
    .create = oa_create,   .handle = oa_handle,       .flush = oa_flush,
    .destroy = oa_destroy,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
