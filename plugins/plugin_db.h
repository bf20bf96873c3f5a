/*
 * plugin_db: what the domain plugins (order_analytics, coupon_issuer,
 * balance_ledger) share about their SQLite database: the setting db and
 * the check of its path at create(), the connection (opened at the first
 * flush(): busy timeout, WAL, the plugin's schema and statements), the
 * write of a batch in one transaction, and the count of live instances per
 * database that has the last one log the plugin's summary (a registry the
 * module's init() and fini() create and free); also the key a record is
 * stored under and the text of an id column.
 *
 * Internal, not installed: plugins/plugin_db.c is compiled into each of
 * those modules (Makefile.am), so each module has its own registry. The
 * functions are hidden, and the modules export khost_plugin_entry only, so
 * the copies never meet, not even in a plugin loaded global.
 *
 * Concurrency & locking: a pdb_t belongs to one instance and is used on
 * that instance's thread only (create(), flush(), destroy()); the registry
 * is shared by the module's instances, under a mutex in plugin_db.c, and
 * lives from init() to fini() (main thread, no instance alive).
 */
#ifndef KHOST_PLUGIN_DB_H
#define KHOST_PLUGIN_DB_H

#include <glib.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stddef.h>

#include <khost/plugin.h>

#pragma GCC visibility push(hidden)

/* The module's init() and fini() (khost_plugin_t, ABI 1.1): the registry
 * of instances per database. */
int pdb_module_init(const khost_api_t *api, khost_host_t *host, char *err,
                    size_t errlen);
void pdb_module_fini(const khost_api_t *api, khost_host_t *host);

/* How long a writer waits for another's lock, also when switching to WAL. */
#define PDB_BUSY_TIMEOUT_MS 10000

typedef struct pdb {
  char *path;             /* the database file; owned */
  const char *schema;     /* CREATE TABLE IF NOT EXISTS ...; borrowed */
  const char *const *sql; /* the n_stmts statements to prepare; borrowed */
  int n_stmts;
  sqlite3 *conn;     /* NULL until pdb_open() */
  sqlite3_stmt **st; /* st[i] is sql[i] prepared, while conn is open */
} pdb_t;

/* Applies one item of a batch inside the write transaction; SQLITE_DONE
 * when done, else the error code. */
typedef int (*pdb_apply_fn)(void *instance, void *item);

/* 0 when path can be written (or created), else -1 with "db <path>:
 * <reason>" in err. Creates nothing (`khost check` leaves nothing). */
int pdb_check_path(const char *path, char *err, size_t errlen);

/* The required setting db, checked with pdb_check_path(): 0 with *path
 * set (owned by the host's config), or -1 with the reason in err. what
 * completes "the SQLite database ..." in the error for a missing db. */
int pdb_config_path(const khost_api_t *api, khost_host_t *host,
                    const char *what, const char **path, char *err,
                    size_t errlen);

/* Fill d for the database at path (copied) and count it as one more
 * instance of that database. schema and sql must outlive d. */
void pdb_init(pdb_t *d, const char *path, const char *schema,
              const char *const *sql, int n_stmts);

/* Open the connection, create the schema and prepare the statements; the
 * database counts as written to (worth a summary). 0, or -1 with "db
 * <path>: <reason>" in err and d closed again. */
int pdb_open(pdb_t *d, char *err, size_t errlen);

/* Write the batch (a GArray) in one BEGIN IMMEDIATE transaction, opening
 * d first when needed: apply(instance, item) for each item, in order. 0
 * when committed (or the batch is empty); else -1 with "db <path>:
 * <reason>" in err and nothing of the batch written. */
int pdb_write(pdb_t *d, GArray *batch, pdb_apply_fn apply, void *instance,
              char *err, size_t errlen);

/* For destroy(): count one instance less; when it was the last instance of
 * a database written to, call summary(instance) with d open (or log at
 * warning level why there is no summary). Then close d and free what it
 * owns. */
void pdb_finish(pdb_t *d, const khost_api_t *api, khost_host_t *host,
                void (*summary)(void *instance), void *instance);

/* The key a record is stored under, its event ID or else
 * "topic/partition/offset", in *event_id, and "topic [p] offset o eventId
 * id", for log lines, in *where; both for g_free(). */
void pdb_identify(const khost_record_t *rec, char **event_id, char **where);

/* An id column's text: a JSON integer or non-empty string, for g_free();
 * NULL otherwise. */
char *pdb_id_text(json_t *v);

/* Run a prepared statement once, then reset it and clear its bindings;
 * SQLITE_DONE, SQLITE_ROW or the error code. */
int pdb_step(sqlite3_stmt *st);

#pragma GCC visibility pop

#endif
