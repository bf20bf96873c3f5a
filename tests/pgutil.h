/*
 * A throwaway PostgreSQL server for the tests of the postgresql store:
 * initdb and pg_ctl in a temporary directory, listening only on a Unix
 * socket there, run as nobody when the tests run as root.
 */
#ifndef KHOST_TEST_PGUTIL_H
#define KHOST_TEST_PGUTIL_H

typedef struct pgu {
  char *dir;      /* data, socket and log live here */
  char *bin;      /* the server's binaries */
  char *conninfo; /* libpq connection string to its database "postgres" */
} pgu_t;

/* The directory of PostgreSQL's server binaries ($KHOST_PG_BIN, else the
 * newest /usr/lib/postgresql/N/bin), or NULL; caller frees (g_free). */
char *pgu_bin(void);
/* 1 when the tests run: binaries found, or missing while
 * KHOST_REQUIRE_POSTGRES=1 is set (a message, and each test fails). 0
 * with a printed SKIP otherwise. */
int pgu_available(const char *suite);
/* A started server (initdb, pg_ctl start -w), or NULL with a message on
 * stderr. Its user khost connects without a password (trust), or, from
 * pgu_start_password(), only with that one (scram-sha-256). */
pgu_t *pgu_start(void);
pgu_t *pgu_start_password(const char *password);
/* pg_ctl stop / start on the same data directory: 0 when done. */
int pgu_stop(pgu_t *p);
int pgu_restart(pgu_t *p);
/* Stop it and remove everything. */
void pgu_free(pgu_t *p);

#endif
