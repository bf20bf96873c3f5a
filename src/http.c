/*
 * The HTTP listener (see http.h). The socket is bound here rather than by
 * libmicrohttpd so that a port in use is reported with the address and
 * errno's words, at start-up, before any pipeline runs.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include "listen_addr.h"
#include "log.h"
#include "metrics.h"
#include "prom.h"
#include "status.h"

struct http {
  struct MHD_Daemon *d;
  host_view_t view; /* a copy of what the host handed down */
  int fd;
  int port;
};

/* A listening socket on listen; -1 with err set. */
static int bind_listen(const char *addr, char *err, size_t errlen) {
  char host[256], port_s[8];
  int port, fd = -1, one = 1, rc;
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                  *ai = NULL;
  if (listen_addr_parse(addr, host, sizeof(host), &port, err, errlen) != 0)
    return -1;
  snprintf(port_s, sizeof(port_s), "%d", port);
  if ((rc = getaddrinfo(host, port_s, &hints, &ai)) != 0) {
    snprintf(err, errlen, "http.listen \"%s\": %s", addr, gai_strerror(rc));
    return -1;
  }
  fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    snprintf(err, errlen, "http.listen: cannot listen on %s: %s", addr,
             strerror(errno));
    if (fd >= 0)
      close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  return fd;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             const char *type, char *body) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      strlen(body), body, MHD_RESPMEM_MUST_FREE);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  enum MHD_Result rc = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return rc;
}

/* A json_t body (stolen) as a malloc'd string, for MHD_RESPMEM_MUST_FREE. */
static char *json_body(json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

/* Ready when the host is not stopping and every pipeline is ready. */
static enum MHD_Result readyz(http_t *s, struct MHD_Connection *c) {
  GPtrArray *why = g_ptr_array_new_with_free_func(g_free);
  json_t *reasons = json_array();
  if (view_stopping(&s->view))
    g_ptr_array_add(why, g_strdup("the host is stopping"));
  for (size_t i = 0; i < view_pipeline_count(&s->view); i++)
    view_pipeline_ready(&s->view, i, why);
  for (guint i = 0; i < why->len; i++)
    json_array_append_new(reasons, json_string(why->pdata[i]));
  int ready = why->len == 0;
  g_ptr_array_unref(why);
  return reply(
      c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
      json_body(json_pack("{s:b, s:o}", "ready", ready, "reasons", reasons)));
}

static enum MHD_Result route(http_t *s, struct MHD_Connection *c,
                             const char *url, const char *method) {
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                 strdup("only GET and HEAD\n"));
  if (strcmp(url, "/metrics") == 0)
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                 prom_render(&s->view));
  if (strcmp(url, "/healthz") == 0)
    return reply(c, MHD_HTTP_OK, "application/json",
                 strdup("{\"healthy\":true}"));
  if (strcmp(url, "/readyz") == 0)
    return readyz(s, c);
  if (strcmp(url, "/status.json") == 0)
    return reply(c, MHD_HTTP_OK, "application/json", status_json(&s->view));
  if (strcmp(url, "/") == 0)
    return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8",
                 strdup(status_page_html));
  return reply(c, MHD_HTTP_NOT_FOUND, "text/plain",
               strdup("not found: try /metrics, /healthz, /readyz or /\n"));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
  http_t *s = cls;
  (void)version, (void)data, (void)data_size, (void)con_cls;
  /* A reload swaps the pipelines: not while a page is made of them. */
  view_begin(&s->view);
  enum MHD_Result r = route(s, c, url, method);
  view_end(&s->view);
  return r;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  log_vmsg(KHOST_LOG_WARNING, "http", fmt, ap);
}

int http_start(http_t **out, const char *addr, const host_view_t *h, char *err,
               size_t errlen) {
  http_t *s = calloc(1, sizeof(*s));
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  s->view = *h;
  s->fd = bind_listen(addr, err, errlen);
  if (s->fd < 0)
    goto fail;
  if (getsockname(s->fd, (struct sockaddr *)&ss, &len) == 0)
    s->port =
        ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
  s->d = MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC, 0, NULL,
      NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
      MHD_OPTION_LISTEN_SOCKET, s->fd, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)30, MHD_OPTION_END);
  if (!s->d) {
    snprintf(err, errlen, "http.listen: cannot serve on %s", addr);
    goto fail;
  }
  log_msg(KHOST_LOG_NOTICE, "http",
          "serving /metrics, /healthz, /readyz and the status page on %s "
          "(port %d)",
          addr, s->port);
  *out = s;
  return 0;
fail:
  if (s->fd >= 0)
    close(s->fd);
  free(s);
  return -1;
}

int http_port(const http_t *s) {
  return s ? s->port : 0;
}

void http_stop(http_t *s) {
  if (!s)
    return;
  /* Quiesced first, MHD hands the socket back instead of closing it:
   * it was bound here and is closed here, once. */
  MHD_socket fd = MHD_quiesce_daemon(s->d);
  MHD_stop_daemon(s->d);
  if (fd != MHD_INVALID_SOCKET)
    close(fd);
  free(s);
}
