/*
 * What `khost check` can find out about a config beyond its syntax without
 * side effects: bootstrap servers that are not host:port or whose host does
 * not resolve, and a dedup database whose directory is missing or not
 * writable. Nothing is created, nothing is connected to: resolving a host
 * name is the only request that leaves the machine.
 */
#ifndef KHOST_PREFLIGHT_H
#define KHOST_PREFLIGHT_H

#include <stddef.h>

#include "config.h"

enum {
  PREFLIGHT_SYNTAX = 0,       /* host:port syntax only */
  PREFLIGHT_RESOLVE = 1 << 0, /* also resolve every bootstrap host */
  PREFLIGHT_DEDUP = 1 << 1    /* also the dedup database's directory */
};

/* Check cfg as what says. Returns the number of problems, each a line
 * "FILE:LINE: KEY: why" in err (appended after what err holds). Without a
 * broker to reach (the mock cluster), bootstrap servers are not checked. */
int preflight_check(const cfg_t *cfg, int what, char *err, size_t errlen);

#endif
