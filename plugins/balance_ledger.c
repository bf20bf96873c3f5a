/*
 * balance_ledger: keeps a ledger of `balance-activity` per user, in its
 * own SQLite database, and checks that each user's changes arrive in the
 * order they were made. That order is why the source document keys
 * BALANCE_CHARGED records "user:<id>": one user's records share a
 * partition, and Kafka keeps the order inside a partition.
 *
 *   config = {
 *     db = "/var/lib/khost/ledger.db";   # required
 *   };
 *
 * A record's value is the change as JSON, {"userId": <integer or string>,
 * "seq": <integer, the user's sequence number: 1, 2, 3, ...>, "amount":
 * <integer>, ...}; a value without those is bad data: handle() answers
 * KHOST_FAIL.
 *
 * A change whose seq is not the user's last seq + 1 is an ordering
 * violation, a gap (seq further on: changes missing or not yet arrived)
 * or a reorder (seq at or below the last one: late). It is logged at
 * warning level with the user, the expected and the received seq and the
 * record's coordinates, recorded in `violations`, and applied all the
 * same (the ledger stays complete); the user's last seq only moves
 * forward.
 *
 * Tables:
 *   accounts(user_id TEXT PRIMARY KEY, last_seq, balance, entries)
 *   ledger(event_id TEXT PRIMARY KEY, user_id, seq, amount, balance_after,
 *          kafka_topic, kafka_partition, kafka_offset)
 *   violations(id INTEGER PRIMARY KEY, user_id, expected, got, kind,
 *              event_id, kafka_topic, kafka_partition, kafka_offset)
 *
 * handle() only buffers; flush(), which the host calls right before it
 * commits the batch's dedup marks and offsets, writes the whole batch in
 * one BEGIN IMMEDIATE transaction, so a crash never leaves half a batch.
 * An event ID already in `ledger` is not applied again: a batch delivered
 * again because its dedup marks never reached the host's store changes
 * nothing. (A record without an event ID is known by
 * topic/partition/offset.)
 *
 * When the last instance using a database is destroyed, it logs the
 * users, entries, total balance and violations at notice level.
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

#define SUMMARY_VIOLATIONS 10

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS accounts(user_id TEXT PRIMARY KEY,"
    " last_seq INTEGER NOT NULL, balance INTEGER NOT NULL,"
    " entries INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ledger(event_id TEXT PRIMARY KEY,"
    " user_id TEXT NOT NULL, seq INTEGER NOT NULL, amount INTEGER NOT NULL,"
    " balance_after INTEGER NOT NULL, kafka_topic TEXT,"
    " kafka_partition INTEGER, kafka_offset INTEGER);"
    "CREATE TABLE IF NOT EXISTS violations(id INTEGER PRIMARY KEY,"
    " user_id TEXT NOT NULL, expected INTEGER NOT NULL, got INTEGER NOT NULL,"
    " kind TEXT NOT NULL, event_id TEXT, kafka_topic TEXT,"
    " kafka_partition INTEGER, kafka_offset INTEGER);";

enum { ST_ACCOUNT, ST_ENTRY, ST_VIOLATION, ST_UPDATE, N_STMTS };

static const char *const sql[N_STMTS] = {
    [ST_ACCOUNT] = "SELECT last_seq, balance FROM accounts WHERE user_id = ?",
    [ST_ENTRY] = "INSERT OR IGNORE INTO ledger(event_id, user_id, seq, amount,"
                 " balance_after, kafka_topic, kafka_partition, kafka_offset)"
                 " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
    [ST_VIOLATION] = "INSERT INTO violations(user_id, expected, got, kind,"
                     " event_id, kafka_topic, kafka_partition, kafka_offset)"
                     " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
    [ST_UPDATE] = "INSERT INTO accounts(user_id, last_seq, balance, entries)"
                  " VALUES(?1, ?2, ?3, 1) ON CONFLICT(user_id) DO UPDATE"
                  " SET last_seq = max(last_seq, ?2), balance = balance + ?3,"
                  " entries = entries + 1",
};

typedef struct change {
  char *event_id; /* or "topic/partition/offset" */
  char *where;    /* "topic [p] offset o eventId id", for log lines */
  char *user;
  char *topic;
  int32_t partition;
  int64_t offset;
  int64_t seq, amount;
  /* after flush */
  int already;      /* applied before */
  int64_t expected; /* last seq + 1 */
  const char *kind; /* "gap", "reorder" or NULL */
} change_t;

typedef struct ledger {
  const khost_api_t *api;
  khost_host_t *host;
  pdb_t db;
  GArray *pending; /* change_t handled since the last flush */
} ledger_t;

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
  else if (!(c->user = pdb_id_text(json_object_get(v, "userId"))))
    snprintf(why, whylen,
             "not a balance change: no userId (an integer or a "
             "string)");
  else if (seq < 1)
    snprintf(why, whylen, "seq must be 1 or more (got %lld)", (long long)seq);
  else
    rc = 0;
  c->seq = seq;
  c->amount = amount;
  json_decref(v);
  return rc;
}

static void free_change(change_t *c) {
  g_free(c->event_id);
  g_free(c->where);
  g_free(c->user);
  g_free(c->topic);
}

static khost_result_t bl_handle(void *instance, const khost_record_t *rec) {
  ledger_t *l = instance;
  change_t c = {.partition = rec->partition, .offset = rec->offset};
  char why[256];
  pdb_identify(rec, &c.event_id, &c.where);
  if (parse_change(rec, &c, why, sizeof(why)) != 0) {
    l->api->log(l->host, KHOST_LOG_WARNING, "%s: %s", c.where, why);
    free_change(&c);
    return KHOST_FAIL;
  }
  c.topic = g_strdup(rec->topic);
  g_array_append_val(l->pending, c);
  return KHOST_OK;
}

/* ---------------------------------------------------------- flushing */

static void bind_coordinates(sqlite3_stmt *st, int first, const change_t *c) {
  sqlite3_bind_text(st, first, c->topic, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, first + 1, c->partition);
  sqlite3_bind_int64(st, first + 2, c->offset);
}

/* Append the ledger entry; SQLITE_DONE (c->already when it was there). */
static int add_entry(ledger_t *l, change_t *c, int64_t balance) {
  sqlite3_stmt *st = l->db.st[ST_ENTRY];
  sqlite3_bind_text(st, 1, c->event_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, c->user, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, c->seq);
  sqlite3_bind_int64(st, 4, c->amount);
  sqlite3_bind_int64(st, 5, balance + c->amount);
  bind_coordinates(st, 6, c);
  int rc = pdb_step(st);
  c->already = rc == SQLITE_DONE && sqlite3_changes(l->db.conn) == 0;
  return rc;
}

static int add_violation(ledger_t *l, const change_t *c) {
  sqlite3_stmt *st = l->db.st[ST_VIOLATION];
  sqlite3_bind_text(st, 1, c->user, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, c->expected);
  sqlite3_bind_int64(st, 3, c->seq);
  sqlite3_bind_text(st, 4, c->kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, c->event_id, -1, SQLITE_STATIC);
  bind_coordinates(st, 6, c);
  return pdb_step(st);
}

/* Apply one change inside the write transaction; SQLITE_DONE when done. */
static int apply(void *instance, void *item) {
  ledger_t *l = instance;
  change_t *c = item;
  sqlite3_stmt *acct = l->db.st[ST_ACCOUNT], *upd = l->db.st[ST_UPDATE];
  int64_t last = 0, balance = 0;
  sqlite3_bind_text(acct, 1, c->user, -1, SQLITE_STATIC);
  int rc = sqlite3_step(acct);
  if (rc == SQLITE_ROW) {
    last = sqlite3_column_int64(acct, 0);
    balance = sqlite3_column_int64(acct, 1);
    rc = SQLITE_DONE;
  }
  sqlite3_reset(acct);
  sqlite3_clear_bindings(acct);
  if (rc != SQLITE_DONE || (rc = add_entry(l, c, balance)) != SQLITE_DONE ||
      c->already)
    return rc;
  c->expected = last + 1;
  c->kind = c->seq == last + 1 ? NULL : c->seq > last ? "gap" : "reorder";
  if (c->kind && (rc = add_violation(l, c)) != SQLITE_DONE)
    return rc;
  sqlite3_bind_text(upd, 1, c->user, -1, SQLITE_STATIC);
  sqlite3_bind_int64(upd, 2, c->seq);
  sqlite3_bind_int64(upd, 3, c->amount);
  return pdb_step(upd);
}

static void clear_pending(ledger_t *l) {
  for (guint i = 0; i < l->pending->len; i++)
    free_change(&g_array_index(l->pending, change_t, i));
  g_array_set_size(l->pending, 0);
}

/* After the commit: the violations, and what had been applied before. */
static void log_outcomes(ledger_t *l) {
  for (guint i = 0; i < l->pending->len; i++) {
    const change_t *c = &g_array_index(l->pending, change_t, i);
    if (c->already)
      l->api->log(l->host, KHOST_LOG_INFO,
                  "%s: already in the ledger (delivered again); not applied "
                  "twice",
                  c->where);
    else if (c->kind)
      l->api->log(l->host, KHOST_LOG_WARNING,
                  "%s: user %s: expected seq %lld, got %lld (%s); applied",
                  c->where, c->user, (long long)c->expected, (long long)c->seq,
                  c->kind);
  }
}

static int bl_flush(void *instance, char *err, size_t errlen) {
  ledger_t *l = instance;
  if (pdb_write(&l->db, l->pending, apply, l, err, errlen) != 0)
    return -1;
  log_outcomes(l);
  clear_pending(l);
  return 0;
}

/* ----------------------------------------------------------- summary */

static int64_t query_int(ledger_t *l, const char *q) {
  sqlite3_stmt *st = NULL;
  int64_t v = 0;
  if (sqlite3_prepare_v2(l->db.conn, q, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static void log_summary(void *instance) {
  ledger_t *l = instance;
  sqlite3_stmt *st = NULL;
  int64_t users = query_int(l, "SELECT count(*) FROM accounts");
  int64_t entries = query_int(l, "SELECT count(*) FROM ledger");
  int64_t total =
      query_int(l, "SELECT coalesce(sum(balance), 0) FROM accounts");
  int64_t violations = query_int(l, "SELECT count(*) FROM violations");
  l->api->log(l->host, KHOST_LOG_NOTICE,
              "%s: %lld user(s), %lld ledger entries, balances total "
              "%lld.%02lld; per-user ordering violations: %lld",
              l->db.path, (long long)users, (long long)entries,
              (long long)(total / 100), (long long)llabs(total % 100),
              (long long)violations);
  sqlite3_prepare_v2(l->db.conn,
                     "SELECT user_id, expected, got, kind, kafka_topic,"
                     " kafka_partition, kafka_offset FROM violations"
                     " ORDER BY id LIMIT " G_STRINGIFY(SUMMARY_VIOLATIONS),
                     -1, &st, NULL);
  while (st && sqlite3_step(st) == SQLITE_ROW)
    l->api->log(
        l->host, KHOST_LOG_NOTICE,
        "violation: user %s expected seq %lld, got %lld (%s) at %s "
        "[%d] offset %lld",
        sqlite3_column_text(st, 0), (long long)sqlite3_column_int64(st, 1),
        (long long)sqlite3_column_int64(st, 2), sqlite3_column_text(st, 3),
        sqlite3_column_text(st, 4), sqlite3_column_int(st, 5),
        (long long)sqlite3_column_int64(st, 6));
  sqlite3_finalize(st);
}

/* ---------------------------------------------------------- lifecycle */

static int bl_create(const khost_api_t *api, khost_host_t *host,
                     void **instance, char *err, size_t errlen) {
  const char *path = NULL;
  if (pdb_config_path(api, host, "of the ledger", &path, err, errlen) != 0)
    return -1;
  ledger_t *l = g_new0(ledger_t, 1);
  l->api = api;
  l->host = host;
  pdb_init(&l->db, path, schema, sql, N_STMTS);
  l->pending = g_array_new(FALSE, FALSE, sizeof(change_t));
  *instance = l;
  return 0;
}

static void bl_destroy(void *instance) {
  ledger_t *l = instance;
  /* Changes not flushed were not committed either: they are delivered
   * again, so dropping them loses nothing. */
  if (l->pending->len)
    l->api->log(l->host, KHOST_LOG_INFO,
                "%u change(s) of an uncommitted batch dropped",
                l->pending->len);
  clear_pending(l);
  pdb_finish(&l->db, l->api, l->host, log_summary, l);
  g_array_free(l->pending, TRUE);
  g_free(l);
}

static const khost_setting_t settings[] = {
    {"db", KHOST_SETTING_STRING, NULL,
     "the SQLite database of the ledger (required)", 0},
    {NULL, 0, NULL, NULL, 0},
};

static const khost_plugin_t plugin = {
    KHOST_PLUGIN_INIT,     .name = "balance_ledger", .version = "1.0",
    .create = bl_create,   .handle = bl_handle,      .flush = bl_flush,
    .destroy = bl_destroy, .init = pdb_module_init,  .fini = pdb_module_fini,
    .settings = settings,
};

const khost_plugin_t *khost_plugin_entry(void) {
  return &plugin;
}
