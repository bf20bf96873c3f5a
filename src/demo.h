/*
 * The demo: what the config's `mock` group sets up before the pipelines
 * start (librdkafka's mock cluster, the pipelines' topics, sample events
 * and the event generator's events) and, after the run, the report that
 * holds what the generator produced against what each pipeline did.
 */
#ifndef KHOST_DEMO_H
#define KHOST_DEMO_H

#include <glib.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "mock.h"
#include "pipeline.h"

typedef struct demo demo_t;

/* Start the mock cluster of cfg's mock group, create every pipeline's
 * topics, produce the sample events (mock.sample_records) and the
 * generator's (mock.generate). 0, or -1 with err set. cfg must outlive
 * the demo. */
int demo_open(demo_t **out, const cfg_t *cfg, char *err, size_t errlen);
/* Stop the cluster (NULL: nothing). */
void demo_close(demo_t *d);
mock_t *demo_mock(demo_t *d);
/* 1 when mock.generate filled the topics. */
int demo_generated(const demo_t *d);

/* What one pipeline did, for the report. */
typedef struct demo_row {
  const cfg_pipeline_t *pc;
  const pipeline_stats_t *stats; /* after the pipeline stopped */
  const char *plugin;            /* its plugin's name */
  const GPtrArray *notes; /* its plugin's closing notes (strings), or NULL */
} demo_row_t;

/* Print for people, per pipeline, the records the generator produced to
 * its topics, what the pipeline handled, skipped as duplicates and
 * failed, and whether that reconciles (produced = handled + duplicates
 * skipped; checked only for a pipeline consumed to the end of its
 * topics); then each plugin's closing notes. Returns the number of
 * pipelines that do not reconcile, or -1 (nothing printed) when the
 * generator did not run. */
int demo_report(const demo_t *d, const demo_row_t *rows, size_t n, FILE *out);

#endif
