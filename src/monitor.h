/*
 * The host's monitor thread: samples each pipeline's throughput for the
 * status page every few seconds, and tells systemd how the host is doing
 * when it runs as a Type=notify service (built with libsystemd and
 * NOTIFY_SOCKET set): READY=1 once every member has joined its group,
 * WATCHDOG=1 while every member's loop keeps turning, STOPPING=1 when the
 * host begins to stop.
 */
#ifndef KHOST_MONITOR_H
#define KHOST_MONITOR_H

#include "host_view.h"

typedef struct monitor monitor_t;

/* Start watching h (after host_start()); NULL when the thread cannot be
 * started (logged: the host runs on without it). */
monitor_t *monitor_start(const host_view_t *h);
/* Stop (before host_close()); NULL does nothing. */
void monitor_stop(monitor_t *mon);

#endif
