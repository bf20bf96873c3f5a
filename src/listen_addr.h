/*
 * A listen address, "HOST:PORT" or "[IPv6]:PORT": its shape alone, so
 * that the config can check http.listen without the HTTP server.
 */
#ifndef KHOST_LISTEN_ADDR_H
#define KHOST_LISTEN_ADDR_H

#include <stddef.h>

/* Split addr into host (hostlen bytes at most) and port. 0, or -1 with
 * the reason in err. Any thread. */
int listen_addr_parse(const char *addr, char *host, size_t hostlen, int *port,
                      char *err, size_t errlen);

#endif
