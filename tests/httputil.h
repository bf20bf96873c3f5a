/* Test helpers for the host's HTTP listener: a plain GET over TCP and
 * the sample values of a /metrics text. */
#ifndef KHOST_HTTPUTIL_H
#define KHOST_HTTPUTIL_H

/* GET path from 127.0.0.1:port; returns the body (malloc'd) and sets
 * *status, or NULL when nothing answers. */
char *hu_get(int port, const char *path, int *status);
/* The value of the sample line that starts with series (name{labels});
 * fails the test when there is none. */
double hu_sample(const char *text, const char *series);
/* Sum of every sample of a metric name (any labels). */
double hu_sum(const char *text, const char *name);

#include "mockutil.h"

/* A config file (in c's directory) with one pipeline "orders" of group
 * HU_GROUP on topic HU_TOPIC and the scripted plugin, the HTTP listener
 * on listen; top goes at the top level, extra into the pipeline,
 * plugin_extra into its config group (each may be NULL). */
#define HU_TOPIC "order-completed"
#define HU_GROUP "http-group"
char *hu_write_cfg(mu_cluster_t *c, const char *listen, const char *top,
                   const char *extra, const char *plugin_extra);

#endif
