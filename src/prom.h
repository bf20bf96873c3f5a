/*
 * The Prometheus text exposition of a host's metrics (see prom.c).
 */
#ifndef KHOST_PROM_H
#define KHOST_PROM_H

#include "host_view.h"

/* The whole /metrics body; the caller g_free()s it. Safe from any thread
 * between host_open() and host_close(). */
char *prom_render(const host_view_t *h);

#endif
