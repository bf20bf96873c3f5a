/* Test helpers for the HTTP listener (see httputil.h). */
#include "httputil.h"

#include <arpa/inet.h>
#include <check.h>
#include <glib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

/* GET path from 127.0.0.1:port; returns the body (malloc'd) and sets
 * *status, or NULL when nothing answers. */
char *hu_get(int port, const char *path, int *status) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  char req[256];
  GString *resp = g_string_new(NULL);
  char buf[4096], *body = NULL;
  ssize_t n;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_ge(fd, 0);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
    goto out;
  snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n",
           path);
  ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
  while ((n = read(fd, buf, sizeof(buf))) > 0)
    g_string_append_len(resp, buf, n);
  const char *sep = strstr(resp->str, "\r\n\r\n");
  if (!sep || sscanf(resp->str, "HTTP/1.%*d %d", status) != 1)
    goto out;
  body = strdup(sep + 4);
out:
  close(fd);
  g_string_free(resp, TRUE);
  return body;
}

/* The value of the sample line that starts with series (name{labels}). */
double hu_sample(const char *text, const char *series) {
  char *needle = g_strdup_printf("\n%s ", series);
  const char *p = strstr(text, needle);
  ck_assert_msg(p != NULL, "no sample %s in /metrics", series);
  double v = strtod(p + strlen(needle), NULL);
  g_free(needle);
  return v;
}

/* Sum of every sample of a metric name (any labels). */
double hu_sum(const char *text, const char *name) {
  double sum = 0;
  gchar **lines = g_strsplit(text, "\n", -1);
  size_t len = strlen(name);
  for (size_t i = 0; lines[i]; i++)
    if (strncmp(lines[i], name, len) == 0 && lines[i][len] == '{')
      sum += strtod(strrchr(lines[i], ' ') + 1, NULL);
  g_strfreev(lines);
  return sum;
}

/* A config with one pipeline "orders" of the scripted plugin; top goes
 * at the top level, extra into the pipeline, plugin_extra into its
 * config group (each may be NULL). */
char *hu_write_cfg(mu_cluster_t *c, const char *listen, const char *top,
                   const char *extra, const char *plugin_extra) {
  char *text = NULL, *plugin = tu_fixture("scripted");
  ck_assert_int_ge(
      asprintf(&text,
               "shutdown_timeout = \"20s\";\n"
               "%s\n"
               "http = { listen = \"%s\"; };\n"
               "kafka = { bootstrap_servers = \"%s\";\n"
               "          session_timeout_ms = " MU_SESSION_TIMEOUT ";\n"
               "          heartbeat_interval_ms = " MU_HEARTBEAT "; };\n"
               "dedup = { path = \"%s/dedup.db\"; };\n"
               "pipelines = ( {\n"
               "  name = \"orders\"; group_id = \"" HU_GROUP "\";\n"
               "  topics = [ \"" HU_TOPIC "\" ]; plugin = \"%s\";\n"
               "  %s\n"
               "  config = { log_path = \"%s/calls.log\"; %s };\n"
               "} );\n",
               top ? top : "", listen, c->bootstraps, c->dir, plugin,
               extra ? extra : "", c->dir, plugin_extra ? plugin_extra : ""),
      0);
  char *path = tu_write_file(c->dir, "khost.cfg", text);
  free(text);
  free(plugin);
  return path;
}
