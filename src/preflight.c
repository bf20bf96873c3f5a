/*
 * Checks of a config against the machine, for `khost check` (preflight.h).
 *
 * bootstrap.servers is librdkafka's list "[proto://]host[:port],...";
 * librdkafka reads the port with strtol and silently stops at the first
 * character that is not a digit ("127.0.0.1:90x2" is port 90), so the
 * syntax is checked here, whole.
 */
#include "preflight.h"
#include "store_pg.h"

#include <errno.h>
#include <glib.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct pf {
  const cfg_t *cfg;
  int what;
  GString *err;
  int problems;
} pf_t;

static void problem(pf_t *pf, int line, const char *key, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

static void problem(pf_t *pf, int line, const char *key, const char *fmt, ...) {
  va_list ap;
  if (pf->err->len)
    g_string_append_c(pf->err, '\n');
  if (line > 0)
    g_string_append_printf(pf->err, "%s:%d: %s: ", pf->cfg->path, line, key);
  else
    g_string_append_printf(pf->err, "%s: %s: ", pf->cfg->path, key);
  va_start(ap, fmt);
  g_string_append_vprintf(pf->err, fmt, ap);
  va_end(ap);
  pf->problems++;
}

/* Split "[proto://]host[:port]" into host and port (NULL when absent);
 * both point into entry, which is modified. 0, or -1 with *why set. */
static int split_host_port(char *entry, char **host, char **port,
                           const char **why) {
  char *s = strstr(entry, "://");
  s = s ? s + 3 : entry;
  *port = NULL;
  if (*s == '[') { /* [IPv6]:port */
    char *close = strchr(s, ']');
    if (!close || (close[1] && close[1] != ':')) {
      *why = "an IPv6 address is written [address]:port";
      return -1;
    }
    *close = '\0';
    *host = s + 1;
    *port = close[1] ? close + 2 : NULL;
  } else {
    char *colon = strrchr(s, ':');
    *host = s;
    /* Two colons or more without brackets: a bare IPv6 address. */
    if (colon && strchr(s, ':') == colon) {
      *colon = '\0';
      *port = colon + 1;
    }
  }
  if (!**host) {
    *why = "no host name";
    return -1;
  }
  return 0;
}

static int valid_port(const char *port) {
  char *end;
  if (!port[0] || strspn(port, "0123456789") != strlen(port))
    return 0;
  long v = strtol(port, &end, 10);
  return v >= 1 && v <= 65535;
}

static void check_server(pf_t *pf, const cfg_prop_t *p, const char *key,
                         const char *written) {
  char *entry = g_strstrip(g_strdup(written)), *host, *port;
  const char *why = NULL;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int rc;
  if (split_host_port(entry, &host, &port, &why) != 0)
    problem(pf, p->line, key, "\"%s\": %s", written, why);
  else if (port && !valid_port(port))
    problem(pf, p->line, key,
            "\"%s\": the port \"%s\" is not a number from 1 to 65535", written,
            port);
  else if ((pf->what & PREFLIGHT_RESOLVE) &&
           (rc = getaddrinfo(host, NULL, &hints, &res)) != 0)
    problem(pf, p->line, key, "\"%s\": cannot resolve host %s: %s", written,
            host, rc == EAI_SYSTEM ? g_strerror(errno) : gai_strerror(rc));
  if (res)
    freeaddrinfo(res);
  g_free(entry);
}

/* Every server of one bootstrap.servers property. */
static void check_servers(pf_t *pf, const cfg_prop_t *p, const char *key) {
  char **servers = g_strsplit(p->value, ",", -1);
  int n = 0;
  for (char **s = servers; *s; s++) {
    if (!*g_strstrip(*s))
      continue;
    check_server(pf, p, key, *s);
    n++;
  }
  if (n == 0)
    problem(pf, p->line, key, "no server given");
  g_strfreev(servers);
}

static void check_bootstrap(pf_t *pf) {
  const cfg_t *cfg = pf->cfg;
  const char *name = "bootstrap.servers";
  const cfg_prop_t *p;
  if (cfg->mock_brokers > 0)
    return;
  if ((p = cfg_prop_find(cfg->kafka, cfg->n_kafka, name)))
    check_servers(pf, p, "kafka.bootstrap_servers");
  for (size_t i = 0; i < cfg->n_pipelines; i++) {
    const cfg_pipeline_t *pc = &cfg->pipelines[i];
    if (!(p = cfg_prop_find(pc->kafka, pc->n_kafka, name)))
      continue;
    char *key = g_strdup_printf("pipelines[%zu].kafka.bootstrap_servers", i);
    check_servers(pf, p, key);
    g_free(key);
  }
}

/* The directory must exist and take new files (the database, its -wal and
 * -shm); an existing database must be writable. */
static void check_dedup(pf_t *pf) {
  const cfg_t *cfg = pf->cfg;
  int wanted = 0;
  for (size_t i = 0; i < cfg->n_pipelines; i++)
    wanted |= cfg->pipelines[i].dedup;
  if (!wanted)
    return;
  config_setting_t *s = config_lookup(&cfg->lc, "dedup.path");
  int line = s ? (int)config_setting_source_line(s) : 0;
  const char *key = s ? "dedup.path" : "dedup.path (default)";
  char *dir = g_path_get_dirname(cfg->dedup_path);
  struct stat st;
  if (stat(dir, &st) != 0)
    problem(pf, line, key, "the directory %s of %s: %s", dir, cfg->dedup_path,
            g_strerror(errno));
  else if (!S_ISDIR(st.st_mode))
    problem(pf, line, key, "%s is not a directory", dir);
  else if (access(dir, W_OK | X_OK) != 0)
    problem(pf, line, key,
            "this user cannot create files in %s (the database and its -wal "
            "and -shm files): %s",
            dir, g_strerror(errno));
  else if (access(cfg->dedup_path, F_OK) == 0 &&
           access(cfg->dedup_path, R_OK | W_OK) != 0)
    problem(pf, line, key, "%s: %s", cfg->dedup_path, g_strerror(errno));
  g_free(dir);
}

/* The shared store: reachable, credentials accepted, a schema this khost
 * knows. */
static void check_pg(pf_t *pf) {
  const cfg_t *cfg = pf->cfg;
  config_setting_t *s = config_lookup(&cfg->lc, "store.conninfo");
  store_pg_opts_t o = {.conninfo = cfg->store_conninfo};
  store_t *st = NULL;
  char err[1024];
  if (store_pg_open(&st, &o, err, sizeof(err)) != 0)
    problem(pf, s ? (int)config_setting_source_line(s) : 0, "store.conninfo",
            "%s", err);
  store_close(st);
}

int preflight_check(const cfg_t *cfg, int what, char *err, size_t errlen) {
  pf_t pf = {cfg, what, g_string_new(err), 0};
  check_bootstrap(&pf);
  if ((what & PREFLIGHT_DEDUP) && cfg->store_backend == CFG_STORE_POSTGRESQL)
    check_pg(&pf);
  else if (what & PREFLIGHT_DEDUP)
    check_dedup(&pf);
  if (errlen > 0)
    g_strlcpy(err, pf.err->str, errlen);
  g_string_free(pf.err, TRUE);
  return pf.problems;
}
