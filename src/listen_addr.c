/*
 * The shape of a listen address (see listen_addr.h).
 */
#include "listen_addr.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int listen_addr_parse(const char *addr, char *host, size_t hostlen, int *port,
                      char *err, size_t errlen) {
  const char *colon, *start = addr, *end;
  char *num_end = NULL;
  if (addr[0] == '[') {
    end = strchr(addr, ']');
    if (!end || end[1] != ':') {
      snprintf(err, errlen, "\"%s\": expected [IPv6]:PORT", addr);
      return -1;
    }
    start = addr + 1;
    colon = end + 1;
  } else {
    colon = strrchr(addr, ':');
    end = colon;
  }
  if (!colon || end == start || (size_t)(end - start) >= hostlen) {
    snprintf(err, errlen, "\"%s\": expected HOST:PORT (e.g. 127.0.0.1:9464)",
             addr);
    return -1;
  }
  long v = strtol(colon + 1, &num_end, 10);
  if (!g_ascii_isdigit(colon[1]) || *num_end || v < 0 || v > 65535) {
    snprintf(err, errlen, "\"%s\": the port must be a number 0..65535", addr);
    return -1;
  }
  memcpy(host, start, (size_t)(end - start));
  host[end - start] = '\0';
  *port = (int)v;
  return 0;
}
