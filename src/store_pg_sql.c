/*
 * The PostgreSQL store's statements (store_pg_int.h): connections,
 * parameters (arrays in the binary format, so that a batch is one
 * statement the server need not parse element by element), event-ID keys,
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
  p->arr[p->n].buf = NULL;
  p->key[p->n] = NULL;
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

static int uuid_text(const unsigned char *s, size_t len) {
  if (len != 36)
    return 0;
  for (size_t i = 0; i < 36; i++) {
    int dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !g_ascii_isxdigit(s[i]) || g_ascii_isupper(s[i]))
      return 0;
  }
  return 1;
}

void pg_key(GByteArray *out, const void *id, size_t len) {
  const unsigned char *s = id;
  guint8 b = PG_KEY_TEXT;
  if (!uuid_text(s, len)) {
    g_byte_array_append(out, &b, 1);
    if (len)
      g_byte_array_append(out, s, (guint)len);
    return;
  }
  b = PG_KEY_UUID;
  g_byte_array_append(out, &b, 1);
  for (size_t i = 0; i < 36; i++) {
    if (s[i] == '-')
      continue;
    b = (guint8)(g_ascii_xdigit_value(s[i]) << 4 |
                 g_ascii_xdigit_value(s[i + 1]));
    g_byte_array_append(out, &b, 1);
    i++;
  }
}

void pgp_key(pgp_t *p, const void *id, size_t len) {
  int i = pgp_next(p);
  p->key[i] = g_byte_array_sized_new((guint)len + 1);
  pg_key(p->key[i], id, len);
  p->v[i] = (const char *)p->key[i]->data;
  p->len[i] = (int)p->key[i]->len;
  p->bin[i] = 1;
}

/* The header (ndim, flags, element type, size, lower bound) is written
 * by pga_finish() once the size is known. */
#define PGA_HEADER 20

pga_t *pgp_array(pgp_t *p, uint32_t oid) {
  int i = pgp_next(p);
  pga_t *a = &p->arr[i];
  a->buf = g_byte_array_sized_new(4096);
  g_byte_array_set_size(a->buf, PGA_HEADER);
  a->n = a->nulls = a->done = 0;
  a->oid = oid;
  return a;
}

static void put32(guint8 *d, uint32_t v) {
  v = htobe32(v);
  memcpy(d, &v, 4);
}

static void pga_elem(pga_t *a, const void *data, int32_t len) {
  guint8 l[4];
  put32(l, (uint32_t)len);
  g_byte_array_append(a->buf, l, 4);
  if (len > 0)
    g_byte_array_append(a->buf, data, (guint)len);
  a->n++;
  a->nulls += len < 0;
}

void pga_bytes(pga_t *a, const void *data, size_t len) {
  pga_elem(a, data, data ? (int32_t)len : -1);
}

void pga_key(pga_t *a, const void *id, size_t len) {
  guint at = a->buf->len;
  guint8 l[4] = {0};
  g_byte_array_append(a->buf, l, 4);
  pg_key(a->buf, id, len);
  put32(a->buf->data + at, a->buf->len - at - 4);
  a->n++;
}

void pga_str(pga_t *a, const char *s) {
  pga_elem(a, s, (int32_t)strlen(s));
}

void pga_i64(pga_t *a, int64_t v) {
  uint64_t be = htobe64((uint64_t)v);
  pga_elem(a, &be, 8);
}

/* The header written: one dimension of n elements, or none when empty. */
static void pga_finish(pga_t *a) {
  guint8 *d = a->buf->data;
  if (a->done)
    return; /* a statement run again with the same parameters */
  a->done = 1;
  put32(d, a->n ? 1 : 0);
  put32(d + 4, a->nulls ? 1 : 0);
  put32(d + 8, a->oid);
  put32(d + 12, (uint32_t)a->n);
  put32(d + 16, 1);
  if (!a->n)
    g_byte_array_set_size(a->buf, 12);
}

void pgp_free(pgp_t *p) {
  for (int i = 0; p && i < p->n; i++) {
    if (p->arr[i].buf)
      g_byte_array_free(p->arr[i].buf, TRUE);
    if (p->key[i])
      g_byte_array_free(p->key[i], TRUE);
    p->arr[i].buf = NULL;
    p->key[i] = NULL;
  }
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

/* A lost connection is reset before use; 0 when it is usable. A reset
 * connection has none of the statements prepared on it before. */
static int pg_ready(PGconn *c, unsigned *prepared) {
  if (PQstatus(c) != CONNECTION_OK) {
    PQreset(c);
    if (prepared)
      *prepared = 0;
  }
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

/* sql run as the statement st prepared on c once (mask: what is), or
 * with its own parse and plan when st is NULL. */
static PGresult *pg_send(PGconn *c, const pg_stmt_t *st, unsigned *mask,
                         const char *sql, int n, pgp_t *params, int binary) {
  const char *const *v = n ? params->v : NULL;
  const int *len = n ? params->len : NULL, *bin = n ? params->bin : NULL;
  if (!st)
    return PQexecParams(c, sql, n, NULL, v, len, bin, binary);
  if (!(*mask & st->bit)) {
    PGresult *r = PQprepare(c, st->name, sql, n, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
      return r;
    PQclear(r);
    *mask |= st->bit;
  }
  return PQexecPrepared(c, st->name, n, v, len, bin, binary);
}

static PGresult *pg_run(pg_store_t *p, PGconn *c, const pg_stmt_t *st,
                        unsigned *mask, const char *sql, pgp_t *params,
                        int binary, int *transient, char *err, size_t errlen) {
  PGresult *r = NULL;
  ExecStatusType rs;
  char what[100];
  int n = params ? params->n : 0;
  for (int i = 0; i < n; i++)
    if (params->arr[i].buf) {
      pga_finish(&params->arr[i]);
      params->v[i] = (const char *)params->arr[i].buf->data;
      params->len[i] = (int)params->arr[i].buf->len;
      params->bin[i] = 1;
    }
  if (c && pg_ready(c, mask) == 0) {
    __atomic_add_fetch(&p->round_trips, 1, __ATOMIC_RELAXED);
    r = pg_send(c, st, mask, sql, n, params, binary);
  }
  rs = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK)
    return r;
  if (transient)
    *transient = c ? pg_is_transient(c, r) : 1;
  what_of(sql, what, sizeof(what));
  pg_set_err(p, c, r, what, err, errlen);
  PQclear(r);
  return NULL;
}

PGresult *pg_exec(pg_store_t *p, PGconn *c, const char *sql, pgp_t *params,
                  int binary, int *transient, char *err, size_t errlen) {
  return pg_run(p, c, NULL, NULL, sql, params, binary, transient, err, errlen);
}

PGresult *pg_exec_prepared(pg_store_t *p, PGconn *c, const pg_stmt_t *st,
                           unsigned *mask, const char *sql, pgp_t *params,
                           int binary, int *transient, char *err,
                           size_t errlen) {
  return pg_run(p, c, st, mask, sql, params, binary, transient, err, errlen);
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
