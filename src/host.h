/*
 * The host: everything one `khost run` owns — the embedded mock cluster
 * (when configured), the loaded plugins, the dedup store and the pipelines.
 */
#ifndef KHOST_HOST_H
#define KHOST_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "mock.h"
#include "pipeline.h"

typedef struct host host_t;

typedef struct host_opts {
  int exit_at_end;    /* stop once the end offsets seen at start are reached */
  int from_beginning; /* start every partition at its earliest offset */
} host_opts_t;

/* Exit statuses of khost (README "Exit codes"). */
enum {
  HOST_EXIT_OK = 0,      /* stopped cleanly */
  HOST_EXIT_RUNTIME = 1, /* a pipeline failed, or Kafka/SQLite refused */
  HOST_EXIT_CONFIG = 2   /* usage, config or plugin problem */
};

/* Start the mock cluster (if configured), load the plugins, open the dedup
 * store. Returns 0, or an HOST_EXIT_* status with err set. cfg must outlive
 * the host. */
int host_open(host_t **out, const cfg_t *cfg, const host_opts_t *opts,
              char *err, size_t errlen);
/* Start every pipeline; 0 or an HOST_EXIT_* status with err set. */
int host_start(host_t *h, char *err, size_t errlen);
void host_request_stop(host_t *h);
/* 1 once every pipeline has stopped (by request, end reached or failure). */
int host_done(host_t *h);
/* 1 once every pipeline has been asked to stop, or has stopped. */
int host_stopping(host_t *h);
/* Wait up to timeout_ms (-1: forever) for host_done(). */
int host_wait(host_t *h, int64_t timeout_ms);
/* Join the pipelines (after host_done()), log a summary, and return the
 * exit status. Stats stay readable until host_close(). */
int host_finish(host_t *h);
void host_close(host_t *h);

/* After host_finish(), when mock.generate filled the topics: the report
 * of demo_report() (demo.h) for every pipeline. Returns the number of
 * pipelines that do not reconcile, or -1 (nothing printed) without
 * mock.generate. */
int host_report(host_t *h, FILE *out);

/* Describe in buf the plugin calls that have not returned, with the
 * records they are on (pipeline_describe_busy()); returns how many. */
size_t host_describe_busy(host_t *h, char *buf, size_t len);

size_t host_pipeline_count(const host_t *h);
const cfg_t *host_config(const host_t *h);
/* The port the HTTP listener is bound to; 0 when it is off. */
int host_http_port(const host_t *h);
void host_pipeline_stats(host_t *h, size_t i, pipeline_stats_t *out);
mock_t *host_mock(host_t *h);

/* SIGHUP: load and check the config at path; when it is valid, stop the
 * pipelines it removes or changes (finish, commit, leave the group),
 * start those it adds or changes, and leave the unchanged ones running.
 * A config that is invalid, or changes what a running host cannot (dedup,
 * http.listen, mock), is refused with the reasons and changes nothing.
 * Logs what it does; 0 applied, -1 refused. Main thread only. */
int host_reload(host_t *h, const char *path);

/* `khost check`: load every plugin and create (then destroy) one instance
 * of each pipeline's plugin with its config, touching no Kafka and no
 * dedup store. 0 or HOST_EXIT_CONFIG with every problem in err. */
int host_check(const cfg_t *cfg, char *err, size_t errlen);

#endif
