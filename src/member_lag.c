/*
 * The consumer lag in seconds a member reports: for each partition it
 * owns, the timestamp of the oldest record it has fetched and not handled
 * yet (the head of the partition's queue), for metrics_lag_seconds().
 * Called right after a poll: the records librdkafka holds beyond the
 * queue are newer, so the head is the oldest record without an outcome.
 */
#include <librdkafka/rdkafka.h>

#include "member_int.h"
#include "metrics.h"

/* How often the heads are reported: the lag in seconds needs no finer
 * grain, and the metrics lock is taken once per partition. */
#define MEMBER_OLDEST_EVERY_MS 250

void member_report_oldest(member_t *m) {
  /* Each member runs on a thread of its own. */
  static _Thread_local int64_t last;
  metrics_t *mx = m->env->metrics;
  int64_t now = member_now_ms();
  if (!mx || now - last < MEMBER_OLDEST_EVERY_MS)
    return;
  last = now;
  for (size_t i = 0; i < flow_parts(m->flow); i++) {
    flow_part_t *pt = flow_part_at(m->flow, i);
    rd_kafka_message_t *head = flow_part_head(pt);
    metrics_oldest(mx, flow_part_topic(pt), flow_part_partition(pt),
                   head ? rd_kafka_message_timestamp(head, NULL) : -1);
  }
}
