/*
 * What fits in the embedded mock cluster. librdkafka's mock broker keeps
 * only the end of each partition: once a partition holds more than 5 MiB
 * of record batches or more than 100,000 records, the oldest batches are
 * dropped as new ones arrive (rdkafka_mock.c, the same from 2.0 on).
 * mock.generate produces every event before any pipeline consumes, so
 * what falls out of that window is never consumed, and the run's summary
 * cannot reconcile.
 */
#ifndef KHOST_MOCK_WINDOW_H
#define KHOST_MOCK_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "gen.h"

#define MOCK_WINDOW_BYTES (5u * 1024 * 1024)
#define MOCK_WINDOW_RECORDS 100000u

typedef struct mock_window_fit {
  int topic;          /* GEN_* of the fullest partitions */
  uint64_t records;   /* records on each of its partitions, about */
  uint64_t bytes;     /* their bytes in the log, about */
  uint64_t kept;      /* of those, what the window keeps */
  uint64_t max_count; /* the largest count that fits, about */
} mock_window_fit_t;

/* Estimate, from o's own event model, how full the fullest partition gets
 * when o's events go to topics of `partitions` partitions. Returns 1 when
 * it exceeds the window (fit says by how much), 0 when everything fits. */
int mock_window_check(const gen_opts_t *o, int partitions,
                      mock_window_fit_t *fit);

#endif
