/*
 * The host's HTTP listener (libmicrohttpd, one thread of its own):
 *   /metrics      Prometheus text format (prom.c)
 *   /healthz      200 while the process serves
 *   /readyz       200 when every pipeline is ready, else 503; JSON body
 *                 with the reasons
 *   /             the status page, /status.json its data (status.c)
 */
#ifndef KHOST_HTTP_H
#define KHOST_HTTP_H

#include <stddef.h>

#include "host_view.h"

typedef struct http http_t;

/* Bind addr (listen_addr.h) and serve what h shows. Returns 0, or -1 with
 * err naming the address and the reason (e.g. already in use). */
int http_start(http_t **out, const char *addr, const host_view_t *h, char *err,
               size_t errlen);
/* The bound port (useful with port 0). */
int http_port(const http_t *s);
void http_stop(http_t *s);

#endif
