/*
 * Times as the admin commands and the replay print them: ISO-8601 in UTC
 * with milliseconds ("2026-03-01T08:00:00.250Z").
 */
#ifndef KHOST_TIMEFMT_H
#define KHOST_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* ms since the epoch, written to buf (32 bytes hold any); "?" for the
 * date and time when GLib cannot represent them. */
void timefmt_utc_ms(int64_t ms, char *buf, size_t size);

#endif
