/*
 * /status.json (see status.h).
 */
#include "status.h"

#include <jansson.h>

#include "metrics.h"

static json_t *partitions_json(metrics_t *mx, int64_t now_ms) {
  json_t *arr = json_array();
  GPtrArray *parts = metrics_parts(mx);
  for (guint j = 0; j < parts->len; j++) {
    const metrics_part_t *pt = parts->pdata[j];
    int64_t from = pt->committed >= 0 ? pt->committed : pt->low;
    json_t *o =
        json_pack("{s:s, s:i, s:i}", "topic", pt->topic, "partition",
                  (json_int_t)pt->partition, "member", (json_int_t)pt->member);
    json_object_set_new(o, "committed",
                        pt->committed >= 0 ? json_integer(pt->committed)
                                           : json_null());
    json_object_set_new(o, "end",
                        pt->high >= 0 ? json_integer(pt->high) : json_null());
    json_object_set_new(
        o, "lag",
        pt->high >= 0 && from >= 0
            ? json_integer(pt->high > from ? pt->high - from : 0)
            : json_null());
    json_object_set_new(o, "lag_seconds",
                        pt->member >= 0
                            ? json_real(metrics_lag_seconds(pt, now_ms))
                            : json_null());
    json_array_append_new(arr, o);
  }
  g_ptr_array_unref(parts);
  return arr;
}

static json_t *members_json(metrics_t *mx) {
  json_t *arr = json_array();
  for (int m = 0; m < mx->n_members; m++) {
    metrics_member_t *mm = &mx->members[m];
    json_array_append_new(
        arr,
        json_pack("{s:i, s:b, s:b, s:I, s:I}", "index", (json_int_t)m, "joined",
                  atomic_load(&mm->joined), "held", atomic_load(&mm->held),
                  "queued", (json_int_t)atomic_load(&mm->queued), "in_flight",
                  (json_int_t)atomic_load(&mm->pending)));
  }
  return arr;
}

/* Records with an outcome per second between consecutive samples. */
static json_t *throughput_json(metrics_t *mx) {
  metrics_sample_t s[METRICS_SAMPLES];
  size_t n = metrics_samples(mx, s, METRICS_SAMPLES);
  json_t *arr = json_array();
  for (size_t i = 1; i < n; i++) {
    double secs = (double)(s[i].at_ms - s[i - 1].at_ms) / 1000.0;
    double rate =
        secs > 0 ? (double)(s[i].outcomes - s[i - 1].outcomes) / secs : 0;
    json_array_append_new(arr, json_pack("{s:I, s:f}", "t",
                                         (json_int_t)s[i].at_ms, "rate", rate));
  }
  return arr;
}

static json_t *failures_json(metrics_t *mx) {
  metrics_failure_t f[METRICS_FAILURES];
  size_t n = metrics_failures(mx, f, METRICS_FAILURES);
  json_t *arr = json_array();
  for (size_t i = n; i-- > 0;) /* newest first */
    json_array_append_new(
        arr,
        json_pack("{s:I, s:s, s:i, s:I, s:b, s:s}", "t", (json_int_t)f[i].at_ms,
                  "topic", f[i].topic, "partition", (json_int_t)f[i].partition,
                  "offset", (json_int_t)f[i].offset, "dead_lettered",
                  f[i].dead_lettered, "reason", f[i].reason));
  return arr;
}

static json_t *pipeline_json(const host_view_t *h, size_t i) {
  const cfg_pipeline_t *pc = &view_config(h)->pipelines[i];
  metrics_t *mx = view_metrics(h, i);
  pipeline_stats_t s;
  GPtrArray *why = g_ptr_array_new_with_free_func(g_free);
  json_t *reasons = json_array(), *topics = json_array();
  view_pipeline_stats(h, i, &s);
  int ready = view_pipeline_ready(h, i, why);
  for (guint j = 0; j < why->len; j++)
    json_array_append_new(reasons, json_string(why->pdata[j]));
  g_ptr_array_unref(why);
  for (size_t t = 0; t < pc->n_topics; t++)
    json_array_append_new(topics, json_string(pc->topics[t]));
  json_t *counts = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I}", "handled", (json_int_t)s.handled,
      "duplicates", (json_int_t)s.duplicates, "failed", (json_int_t)s.failed,
      "retries", (json_int_t)s.retries, "without_event_id", (json_int_t)s.no_id,
      "dead_lettered", (json_int_t)atomic_load(&mx->dead_lettered));
  return json_pack("{s:s, s:s, s:o, s:b, s:o, s:b, s:o, s:o, s:o, s:o, s:o}",
                   "name", pc->name, "group_id", pc->group_id, "topics", topics,
                   "ready", ready, "reasons", reasons, "breaker_open",
                   atomic_load(&mx->breaker_open), "counts", counts, "members",
                   members_json(mx), "partitions",
                   partitions_json(mx, g_get_real_time() / 1000), "throughput",
                   throughput_json(mx), "failures", failures_json(mx));
}

char *status_json(const host_view_t *h) {
  json_t *pipelines = json_array(), *dedup = json_null();
  int64_t ids = view_dedup_ids(h);
  for (size_t i = 0; i < view_pipeline_count(h); i++)
    json_array_append_new(pipelines, pipeline_json(h, i));
  if (ids >= 0)
    dedup = json_pack("{s:s, s:I, s:I}", "path", view_config(h)->dedup_path,
                      "event_ids", (json_int_t)ids, "bytes",
                      (json_int_t)view_dedup_bytes(h));
  json_t *root = json_pack("{s:o, s:o, s:b}", "pipelines", pipelines, "dedup",
                           dedup, "stopping", view_stopping(h));
  char *out = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return out;
}
