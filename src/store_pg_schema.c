/*
 * The PostgreSQL store's schema, versioned: `khost store init` creates
 * it, `khost store migrate` upgrades an older one, step by step, in one
 * transaction; `run` refuses any version but its own, naming both.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"

static const char *const schema_v1[] = {
    "CREATE TABLE khost_schema (version integer NOT NULL)",
    "CREATE TABLE khost_scopes (scope serial PRIMARY KEY,"
    " pipeline text NOT NULL UNIQUE)",
    /* One row per ID: the newest handling of it. */
    "CREATE TABLE khost_marks (scope integer NOT NULL, id bytea NOT NULL,"
    " handled_at bigint NOT NULL, topic text NOT NULL, part integer NOT NULL,"
    " off bigint NOT NULL, outcome smallint NOT NULL,"
    " PRIMARY KEY (scope, id))",
    "CREATE INDEX khost_marks_handled ON khost_marks (handled_at)",
    /* Primary key (scope, id): a batch of claims is one
     * INSERT ... ON CONFLICT ... RETURNING. */
    "CREATE TABLE khost_claims (scope integer NOT NULL, id bytea NOT NULL,"
    " owner text NOT NULL, lease_until bigint NOT NULL,"
    " PRIMARY KEY (scope, id))",
    "CREATE INDEX khost_claims_owner ON khost_claims (owner)",
    "CREATE TABLE khost_replay (seq bigserial PRIMARY KEY,"
    " scope integer NOT NULL, topic text NOT NULL, part integer NOT NULL,"
    " from_off bigint NOT NULL, to_off bigint NOT NULL,"
    " mode smallint NOT NULL, recorded_at bigint NOT NULL)",
    "CREATE TABLE khost_attempts (scope integer NOT NULL, id bytea NOT NULL,"
    " topic text NOT NULL, part integer NOT NULL, off bigint NOT NULL,"
    " attempts integer NOT NULL, PRIMARY KEY (scope, id))",
    "INSERT INTO khost_schema VALUES (1)", NULL};

/* Version 2: plugin state and stored offsets, shared by the hosts. */
static const char *const schema_v2[] = {
    "CREATE TABLE khost_state (scope integer NOT NULL, key bytea NOT NULL,"
    " val bytea NOT NULL, PRIMARY KEY (scope, key))",
    "CREATE TABLE khost_offsets (scope integer NOT NULL, topic text NOT NULL,"
    " part integer NOT NULL, next bigint NOT NULL,"
    " PRIMARY KEY (scope, topic, part))",
    "UPDATE khost_schema SET version = 2", NULL};

/* Version 3: the parking lot (store_pg_parked.c), one for every host. */
static const char *const schema_v3[] = {
    "CREATE TABLE khost_parked (scope integer NOT NULL, topic text NOT NULL,"
    " part integer NOT NULL, off bigint NOT NULL, ts bigint NOT NULL,"
    " key bytea, val bytea, headers bytea NOT NULL, event_id bytea,"
    " reason text NOT NULL, attempts integer NOT NULL,"
    " parked_at bigint NOT NULL, PRIMARY KEY (scope, topic, part, off))",
    "UPDATE khost_schema SET version = 3", NULL};

/* Version 4: a claim is a row of khost_marks in the claimed state
 * (outcome PG_CLAIMED) with its owner, a host of khost_hosts whose lease
 * the host's renewer extends; its mark is the same row, updated in the
 * batch's transaction. So an ID is written once and updated once, and a
 * claim that meets a committed mark sees it (the one row conflicts).
 * Event IDs are keys of pg_key() (a UUID in 16 bytes). Retention counts
 * from `since`, set when the row is created or marked again but left
 * alone when a claim becomes its mark: the index on it is the only one
 * besides the key, so that update changes no indexed column and stays
 * on its page (a heap-only update, no index entry written) when the
 * page has room, which the fill factor leaves. Hosts are stopped while
 * it runs: their claims of version 3 are dropped. */
static const char *const schema_v4[] = {
    "CREATE TABLE khost_hosts (host serial PRIMARY KEY, name text NOT NULL,"
    " lease_until bigint NOT NULL)",
    "DROP TABLE khost_claims",
    "ALTER TABLE khost_marks DROP CONSTRAINT khost_marks_pkey",
    "DROP INDEX khost_marks_handled",
    "ALTER TABLE khost_marks ADD COLUMN owner integer,"
    " ADD COLUMN since bigint",
    "UPDATE khost_marks SET id = " PG_KEY_SQL("id") ", since = handled_at",
    "ALTER TABLE khost_marks ALTER COLUMN since SET NOT NULL",
    "ALTER TABLE khost_marks ADD PRIMARY KEY (scope, id)",
    "CREATE INDEX khost_marks_since ON khost_marks (since)",
    "ALTER TABLE khost_marks SET (fillfactor = 45)",
    "ALTER TABLE khost_attempts DROP CONSTRAINT khost_attempts_pkey",
    "UPDATE khost_attempts SET id = " PG_KEY_SQL("id"),
    "ALTER TABLE khost_attempts ADD PRIMARY KEY (scope, id)",
    "UPDATE khost_schema SET version = 4",
    NULL};

/* Version 5: marks by commit position. A claim taken ahead records its
 * record's topic, partition and offset and an epoch: a row of
 * khost_epochs, one per host and partition it claims in, whose `through`
 * a batch moves to the partition's new committed position in its
 * transaction. A claimed row is a mark when its epoch's `through` is past
 * its offset (PG_MARK), so a batch handled in order writes one row per
 * partition, not one per ID; an outcome past that position, or not the
 * plain one, is written to its row as before. Epoch rows are pruned with
 * the marks (store_pg_read.c). Every row of version 4 keeps its meaning
 * (no epoch). */
static const char *const schema_v5[] = {
    "CREATE TABLE khost_epochs (epoch bigserial PRIMARY KEY,"
    " host integer NOT NULL, scope integer NOT NULL, topic text NOT NULL,"
    " part integer NOT NULL, through bigint NOT NULL,"
    " last_at bigint NOT NULL)",
    "ALTER TABLE khost_marks ADD COLUMN epoch bigint",
    "UPDATE khost_schema SET version = 5", NULL};

/* Each version's steps from the one before; [0] is unused. */
static const char *const *const schema_steps[] = {
    NULL, schema_v1, schema_v2, schema_v3, schema_v4, schema_v5};

/* The version found (0: no schema), or -1 with err. */
static int schema_version(pg_store_t *p, char *err, size_t errlen) {
  PGresult *r =
      pg_exec(p, p->conn, "SELECT to_regclass('khost_schema') IS NOT NULL",
              NULL, 0, NULL, err, errlen);
  int v = -1;
  if (!r)
    return -1;
  if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
    PQclear(r);
    return 0;
  }
  PQclear(r);
  r = pg_exec(p, p->conn, "SELECT max(version) FROM khost_schema", NULL, 0,
              NULL, err, errlen);
  if (r)
    v = atoi(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

/* From version `from` to this khost's, in one transaction. */
static int schema_upgrade(pg_store_t *p, int from, char *err, size_t errlen) {
  int rc = pg_exec0(p, p->conn, "BEGIN", NULL, NULL, err, errlen);
  for (int v = from + 1; rc == 0 && v <= STORE_PG_SCHEMA; v++)
    for (int i = 0; rc == 0 && schema_steps[v][i]; i++)
      rc = pg_exec0(p, p->conn, schema_steps[v][i], NULL, NULL, err, errlen);
  if (rc == 0)
    return pg_exec0(p, p->conn, "COMMIT", NULL, NULL, err, errlen);
  PQclear(PQexec(p->conn, "ROLLBACK"));
  return -1;
}

int pg_schema_check(pg_store_t *p, int create, char *err, size_t errlen) {
  int v = schema_version(p, err, errlen);
  if (v < 0)
    return -1;
  if (v < STORE_PG_SCHEMA && create)
    return schema_upgrade(p, v, err, errlen);
  if (v == STORE_PG_SCHEMA)
    return 0;
  if (v == 0)
    snprintf(err, errlen,
             "postgresql store (%s): no khost schema: create it with "
             "`khost store init -c FILE`",
             p->display);
  else if (v < STORE_PG_SCHEMA)
    snprintf(err, errlen,
             "postgresql store (%s): schema version %d, this khost knows "
             "version %d: upgrade it with `khost store migrate -c FILE`",
             p->display, v, STORE_PG_SCHEMA);
  else
    snprintf(err, errlen,
             "postgresql store (%s): schema version %d, this khost knows "
             "version %d",
             p->display, v, STORE_PG_SCHEMA);
  return -1;
}
