/*
 * The mock cluster's window against mock.generate (mock_window.h).
 *
 * The estimate runs the generator's model (cheap: no Kafka) over a sample
 * of the events with the same options, so sizes and the topic mix are the
 * ones that will be produced, and scales it to the whole count. Keyed
 * topics are taken as spread evenly over their partitions, as the
 * partitioner's hash of many keys does: the fullest partition may hold a
 * little more.
 */
#include "mock_window.h"

#include <string.h>

/* Events the estimate looks at, at most. */
enum { MW_SAMPLE = 20000 };

/* Bytes one record takes in a v2 record batch, about: its own framing
 * (length, attributes, timestamp and offset deltas, lengths), key, value
 * and each header's name and value with their lengths; plus its share of
 * the batch header. */
static uint64_t record_bytes(const gen_event_t *e) {
  static const char *const names[] = {"eventId", "eventType", "aggregateId",
                                      "occurredOn"};
  uint64_t n = 12 + strlen(e->key) + e->value_len;
  const char *values[] = {e->event_id, gen_event_type(e->topic),
                          e->aggregate_id, e->occurred_on};
  for (size_t i = 0; i < 4; i++)
    n += 2 + strlen(names[i]) + strlen(values[i]);
  return n + 2;
}

int mock_window_check(const gen_opts_t *o, int partitions,
                      mock_window_fit_t *fit) {
  uint64_t recs[GEN_N_TOPICS] = {0}, bytes[GEN_N_TOPICS] = {0};
  gen_opts_t so = *o;
  uint64_t sample = o->count < MW_SAMPLE ? o->count : MW_SAMPLE;
  double best = 1.0, scale;
  so.stop = NULL;
  gen_model_t *m = gen_model_new(&so, NULL);
  for (uint64_t i = 0; i < sample; i++) {
    const gen_event_t *e = gen_model_next(m);
    recs[e->topic]++;
    bytes[e->topic] += record_bytes(e);
  }
  gen_model_free(m);
  memset(fit, 0, sizeof(*fit));
  if (sample == 0 || partitions < 1)
    return 0;
  scale = (double)o->count / (double)sample / partitions;
  for (int t = 0; t < GEN_N_TOPICS; t++) {
    double r = (double)recs[t] * scale, b = (double)bytes[t] * scale;
    double keep = 1.0;
    if (b > MOCK_WINDOW_BYTES)
      keep = MOCK_WINDOW_BYTES / b;
    if (r > MOCK_WINDOW_RECORDS && MOCK_WINDOW_RECORDS / r < keep)
      keep = MOCK_WINDOW_RECORDS / r;
    if (keep >= best)
      continue;
    best = keep;
    *fit = (mock_window_fit_t){t, (uint64_t)r, (uint64_t)b,
                               (uint64_t)(r * keep), 0};
  }
  fit->max_count = (uint64_t)((double)o->count * best);
  return best < 1.0;
}
