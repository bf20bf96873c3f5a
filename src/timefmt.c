/* ISO-8601 UTC times with milliseconds, one format for every command. */
#include "timefmt.h"

#include <glib.h>
#include <stdio.h>

void timefmt_utc_ms(int64_t ms, char *buf, size_t size) {
  GDateTime *dt = g_date_time_new_from_unix_utc(ms / 1000);
  char *s = dt ? g_date_time_format(dt, "%Y-%m-%dT%H:%M:%S") : NULL;
  snprintf(buf, size, "%s.%03dZ", s ? s : "?", (int)(ms % 1000));
  g_free(s);
  if (dt)
    g_date_time_unref(dt);
}
