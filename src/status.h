/*
 * The status page at / and the data it shows, /status.json (status.c,
 * status_page.c).
 */
#ifndef KHOST_STATUS_H
#define KHOST_STATUS_H

#include "host_view.h"

/* The page: HTML with inline CSS and JS, no external assets. */
extern const char status_page_html[];

/* /status.json: per pipeline its members and partitions, lag, counters,
 * throughput samples, recent failures, breaker and store state; malloc'd
 * (free()). Safe from any thread between host_open() and host_close(). */
char *status_json(const host_view_t *h);

#endif
