/*
 * The PostgreSQL store's statements (store_pg_int.h): connections,
 * parameters (arrays as text literals, so that a batch is one statement),
 * errors that name the server but never its password.
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_pg_int.h"

/* ------------------------------------------------------------ parameters */

static int pgp_next(pgp_t *p) {
  g_assert(p->n < PGP_MAX);
  p->len[p->n] = 0;
  p->bin[p->n] = 0;
  p->arr[p->n] = NULL;
  return p->n++;
}

void pgp_i64(pgp_t *p, int64_t v) {
  int i = pgp_next(p);
  snprintf(p->num[i], sizeof(p->num[i]), "%lld", (long long)v);
  p->v[i] = p->num[i];
}

void pgp_str(pgp_t *p, const char *s) {
  p->v[pgp_next(p)] = s;
}

void pgp_bytes(pgp_t *p, const void *data, size_t len) {
  int i = pgp_next(p);
  /* A non-NULL pointer even for an empty ID: NULL would be SQL null. */
  p->v[i] = data ? data : "";
  p->len[i] = (int)len;
  p->bin[i] = 1;
}

GString *pgp_array(pgp_t *p) {
  int i = pgp_next(p);
  p->arr[i] = g_string_new("{");
  return p->arr[i];
}

static void pga_sep(GString *a) {
  if (a->len > 1)
    g_string_append_c(a, ',');
}

void pga_bytes(GString *a, const void *data, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *d = data;
  pga_sep(a);
  if (!data) {
    g_string_append(a, "NULL");
    return;
  }
  /* An element "\\x..." reads as the bytea \x... (hex format). */
  g_string_append(a, "\"\\\\x");
  for (size_t i = 0; i < len; i++) {
    g_string_append_c(a, hex[d[i] >> 4]);
    g_string_append_c(a, hex[d[i] & 15]);
  }
  g_string_append_c(a, '"');
}

void pga_str(GString *a, const char *s) {
  pga_sep(a);
  g_string_append_c(a, '"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      g_string_append_c(a, '\\');
    g_string_append_c(a, *s);
  }
  g_string_append_c(a, '"');
}

void pga_i64(GString *a, int64_t v) {
  pga_sep(a);
  g_string_append_printf(a, "%lld", (long long)v);
}

void pgp_free(pgp_t *p) {
  for (int i = 0; p && i < p->n; i++)
    if (p->arr[i])
      g_string_free(p->arr[i], TRUE);
}

/* ------------------------------------------------------------ errors */

int pg_is_transient(PGconn *c, const PGresult *r) {
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (PQstatus(c) != CONNECTION_OK || !st)
    return 1;
  return strncmp(st, "08", 2) == 0 || strncmp(st, "40", 2) == 0 ||
         strncmp(st, "57P", 3) == 0;
}

void pg_set_err(pg_store_t *p, PGconn *c, const PGresult *r, const char *what,
                char *err, size_t errlen) {
  const char *m = r ? PQresultErrorMessage(r) : "";
  if (!m || !*m)
    m = c ? PQerrorMessage(c) : "out of memory";
  if (err && errlen)
    snprintf(err, errlen, "postgresql store (%s): %s: %.*s", p->display, what,
             (int)strcspn(m, "\n"), m);
}

char *store_pg_display(const char *conninfo) {
  char *perr = NULL;
  PQconninfoOption *o = PQconninfoParse(conninfo, &perr);
  GString *s = g_string_new(NULL);
  PQfreemem(perr);
  if (!o)
    return g_string_free(s, FALSE), g_strdup("(unparsable conninfo)");
  for (PQconninfoOption *i = o; i->keyword; i++) {
    if (!i->val || strcmp(i->keyword, "password") == 0)
      continue;
    g_string_append_printf(s, "%s%s=%s", s->len ? " " : "", i->keyword, i->val);
  }
  PQconninfoFree(o);
  return g_string_free(s, FALSE);
}

/* ------------------------------------------------------------ statements */

PGconn *pg_connect(pg_store_t *p, char *err, size_t errlen) {
  PGconn *c = PQconnectdb(p->conninfo);
  if (c && PQstatus(c) == CONNECTION_OK)
    return c;
  pg_set_err(p, c, NULL, "cannot connect", err, errlen);
  PQfinish(c);
  return NULL;
}

/* A lost connection is reset before use; 0 when it is usable. */
static int pg_ready(PGconn *c) {
  if (PQstatus(c) != CONNECTION_OK)
    PQreset(c);
  return PQstatus(c) == CONNECTION_OK ? 0 : -1;
}

/* The statement for messages, cut short: batches are long. */
static void what_of(const char *sql, char *out, size_t size) {
  size_t n = strlen(sql);
  if (n < size)
    memcpy(out, sql, n + 1);
  else
    snprintf(out, size, "%.*s...", (int)(size - 4), sql);
}

PGresult *pg_exec(pg_store_t *p, PGconn *c, const char *sql, pgp_t *params,
                  int binary, int *transient, char *err, size_t errlen) {
  PGresult *r = NULL;
  ExecStatusType st;
  char what[100];
  int n = params ? params->n : 0;
  for (int i = 0; i < n; i++)
    if (params->arr[i]) {
      if (params->arr[i]->str[params->arr[i]->len - 1] != '}')
        g_string_append_c(params->arr[i], '}');
      params->v[i] = params->arr[i]->str;
    }
  if (c && pg_ready(c) == 0) {
    __atomic_add_fetch(&p->round_trips, 1, __ATOMIC_RELAXED);
    r = PQexecParams(c, sql, n, NULL, n ? params->v : NULL,
                     n ? params->len : NULL, n ? params->bin : NULL, binary);
  }
  st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
    return r;
  if (transient)
    *transient = c ? pg_is_transient(c, r) : 1;
  what_of(sql, what, sizeof(what));
  pg_set_err(p, c, r, what, err, errlen);
  PQclear(r);
  return NULL;
}

int pg_exec0(pg_store_t *p, PGconn *c, const char *sql, pgp_t *params,
             int *transient, char *err, size_t errlen) {
  PGresult *r = pg_exec(p, c, sql, params, 0, transient, err, errlen);
  PQclear(r);
  return r ? 0 : -1;
}

int64_t pg_int(const PGresult *r, int row, int col) {
  const char *v = PQgetvalue(r, row, col);
  int len = PQgetlength(r, row, col);
  uint64_t u = 0;
  if (len == 8) {
    memcpy(&u, v, 8);
    return (int64_t)be64toh(u);
  }
  if (len == 4) {
    uint32_t x;
    memcpy(&x, v, 4);
    return (int32_t)be32toh(x);
  }
  if (len == 2) {
    uint16_t x;
    memcpy(&x, v, 2);
    return (int16_t)be16toh(x);
  }
  return 0;
}
