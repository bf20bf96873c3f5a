/*
 * /metrics: the host's counters in the Prometheus text exposition format
 * (version 0.0.4). Names follow Prometheus conventions: khost_ prefix,
 * base units (_seconds, _bytes), counters end in _total; labels pipeline,
 * member, topic and partition where they apply.
 */
#include "prom.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics.h"

static void head(GString *o, const char *name, const char *type,
                 const char *help) {
  g_string_append_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                         type);
}

/* A label value with \, " and newline escaped. */
static void label_value(GString *o, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      g_string_append_c(o, '\\');
    if (*v == '\n')
      g_string_append(o, "\\n");
    else
      g_string_append_c(o, *v);
  }
}

static void pl_sample(GString *o, const char *name, const char *pipeline,
                      const char *extra, uint64_t v) {
  g_string_append_printf(o, "%s{pipeline=\"", name);
  label_value(o, pipeline);
  g_string_append_printf(o, "\"%s} %" PRIu64 "\n", extra ? extra : "", v);
}

typedef struct counter_def {
  const char *name, *help;
  size_t offset; /* in pipeline_stats_t */
} counter_def_t;

static const counter_def_t stat_counters[] = {
    {"khost_records_handled_total", "Records the plugin returned OK for.",
     offsetof(pipeline_stats_t, handled)},
    {"khost_records_duplicates_skipped_total",
     "Records skipped because their event ID was seen before.",
     offsetof(pipeline_stats_t, duplicates)},
    {"khost_records_failed_total",
     "Records that failed for good (FAIL, retries exhausted, no event ID "
     "with on_missing_id = fail).",
     offsetof(pipeline_stats_t, failed)},
    {"khost_handle_retries_total", "RETRY answers of the plugin.",
     offsetof(pipeline_stats_t, retries)},
    {"khost_records_without_event_id_total", "Records without an event ID.",
     offsetof(pipeline_stats_t, no_id)},
    {"khost_circuit_breaker_trips_total", "Times the circuit breaker opened.",
     offsetof(pipeline_stats_t, breaker_trips)},
};

static void render_stat_counters(GString *o, const host_view_t *h) {
  size_t n = view_pipeline_count(h);
  const cfg_t *cfg = view_config(h);
  for (size_t c = 0; c < G_N_ELEMENTS(stat_counters); c++) {
    head(o, stat_counters[c].name, "counter", stat_counters[c].help);
    for (size_t i = 0; i < n; i++) {
      pipeline_stats_t s;
      view_pipeline_stats(h, i, &s);
      uint64_t v =
          *(const uint64_t *)((const char *)&s + stat_counters[c].offset);
      pl_sample(o, stat_counters[c].name, cfg->pipelines[i].name, NULL, v);
    }
  }
  head(o, "khost_partitions_assigned", "gauge",
       "Partitions the pipeline's members own now.");
  for (size_t i = 0; i < n; i++) {
    pipeline_stats_t s;
    view_pipeline_stats(h, i, &s);
    pl_sample(o, "khost_partitions_assigned", cfg->pipelines[i].name, NULL,
              s.assigned);
  }
}

static void render_metric_counters(GString *o, const host_view_t *h) {
  size_t n = view_pipeline_count(h);
  head(o, "khost_records_dead_lettered_total", "counter",
       "Records written to the dead-letter topic.");
  for (size_t i = 0; i < n; i++) {
    metrics_t *mx = view_metrics(h, i);
    pl_sample(o, "khost_records_dead_lettered_total", mx->pipeline, NULL,
              atomic_load(&mx->dead_lettered));
  }
  head(o, "khost_offset_commits_total", "counter",
       "Offset commits acknowledged by Kafka (result=ok) or refused.");
  for (size_t i = 0; i < n; i++) {
    metrics_t *mx = view_metrics(h, i);
    pl_sample(o, "khost_offset_commits_total", mx->pipeline, ",result=\"ok\"",
              atomic_load(&mx->commits_ok));
    pl_sample(o, "khost_offset_commits_total", mx->pipeline,
              ",result=\"failed\"", atomic_load(&mx->commits_failed));
  }
  head(o, "khost_rebalance_events_total", "counter",
       "Partition assignments, revocations and losses seen by the members.");
  for (size_t i = 0; i < n; i++) {
    metrics_t *mx = view_metrics(h, i);
    pl_sample(o, "khost_rebalance_events_total", mx->pipeline,
              ",event=\"assigned\"", atomic_load(&mx->assigned_events));
    pl_sample(o, "khost_rebalance_events_total", mx->pipeline,
              ",event=\"revoked\"", atomic_load(&mx->revoked_events));
    pl_sample(o, "khost_rebalance_events_total", mx->pipeline,
              ",event=\"lost\"", atomic_load(&mx->lost_events));
  }
  head(o, "khost_circuit_breaker_open", "gauge",
       "1 while the pipeline's circuit breaker is open.");
  for (size_t i = 0; i < n; i++) {
    metrics_t *mx = view_metrics(h, i);
    pl_sample(o, "khost_circuit_breaker_open", mx->pipeline, NULL,
              (uint64_t)atomic_load(&mx->breaker_open));
  }
}

/* A gauge per member: which field of metrics_member_t is chosen by get. */
static void render_member_gauge(GString *o, const host_view_t *h,
                                const char *name, const char *help,
                                int queued) {
  head(o, name, "gauge", help);
  for (size_t i = 0; i < view_pipeline_count(h); i++) {
    metrics_t *mx = view_metrics(h, i);
    for (int m = 0; m < mx->n_members; m++) {
      char extra[32];
      snprintf(extra, sizeof(extra), ",member=\"%d\"", m);
      metrics_member_t *mm = &mx->members[m];
      pl_sample(o, name, mx->pipeline, extra,
                queued ? atomic_load(&mm->queued) : atomic_load(&mm->pending));
    }
  }
}

/* "name{pipeline=..,member=..,topic=..,partition=..} " */
static void part_series(GString *o, const char *name, const metrics_t *mx,
                        const metrics_part_t *pt) {
  g_string_append_printf(o, "%s{pipeline=\"", name);
  label_value(o, mx->pipeline);
  g_string_append(o, "\",member=\"");
  if (pt->member >= 0)
    g_string_append_printf(o, "%d", pt->member);
  else
    g_string_append(o, "none");
  g_string_append(o, "\",topic=\"");
  label_value(o, pt->topic);
  g_string_append_printf(o, "\",partition=\"%" PRId32 "\"} ", pt->partition);
}

static void part_sample(GString *o, const char *name, const metrics_t *mx,
                        const metrics_part_t *pt, int64_t v) {
  part_series(o, name, mx, pt);
  g_string_append_printf(o, "%" PRId64 "\n", v);
}

/* Lag: the log end minus the committed offset (or minus the log start
 * before anything was committed). */
static int64_t part_lag(const metrics_part_t *pt) {
  int64_t from = pt->committed >= 0 ? pt->committed : pt->low;
  if (pt->high < 0 || from < 0)
    return -1;
  return pt->high > from ? pt->high - from : 0;
}

static void render_partitions(GString *o, const host_view_t *h) {
  static const char *const names[] = {"khost_partition_committed_offset",
                                      "khost_partition_end_offset",
                                      "khost_consumer_lag_records"};
  static const char *const helps[] = {
      "Next offset committed to Kafka for the partition.",
      "Log end offset (high watermark) as the member last saw it.",
      "Records between the committed offset and the log end."};
  for (int k = 0; k < 3; k++) {
    head(o, names[k], "gauge", helps[k]);
    for (size_t i = 0; i < view_pipeline_count(h); i++) {
      metrics_t *mx = view_metrics(h, i);
      GPtrArray *parts = metrics_parts(mx);
      for (guint j = 0; j < parts->len; j++) {
        const metrics_part_t *pt = parts->pdata[j];
        int64_t v = k == 0 ? pt->committed : k == 1 ? pt->high : part_lag(pt);
        if (v >= 0)
          part_sample(o, names[k], mx, pt, v);
      }
      g_ptr_array_unref(parts);
    }
  }
}

/* The age of the oldest record not handled yet, per partition owned. */
static void render_lag_seconds(GString *o, const host_view_t *h) {
  static const char *const name = "khost_consumer_lag_seconds";
  int64_t now_ms = g_get_real_time() / 1000;
  head(o, name, "gauge",
       "Age of the partition's oldest record fetched and not handled yet "
       "(0 when none waits).");
  for (size_t i = 0; i < view_pipeline_count(h); i++) {
    metrics_t *mx = view_metrics(h, i);
    GPtrArray *parts = metrics_parts(mx);
    for (guint j = 0; j < parts->len; j++) {
      const metrics_part_t *pt = parts->pdata[j];
      if (pt->member < 0)
        continue;
      part_series(o, name, mx, pt);
      g_string_append_printf(o, "%.3f\n", metrics_lag_seconds(pt, now_ms));
    }
    g_ptr_array_unref(parts);
  }
}

static void render_hist(GString *o, const host_view_t *h, const char *name,
                        const char *help, int durable) {
  head(o, name, "histogram", help);
  for (size_t i = 0; i < view_pipeline_count(h); i++) {
    metrics_t *mx = view_metrics(h, i);
    metrics_hist_t *hi = durable ? &mx->durable : &mx->handle;
    uint64_t cum = 0;
    GString *lbl = g_string_new(NULL);
    label_value(lbl, mx->pipeline);
    for (int b = 0; b <= METRICS_BUCKETS; b++) {
      cum += atomic_load(&hi->bucket[b]);
      if (b < METRICS_BUCKETS)
        g_string_append_printf(
            o, "%s_bucket{pipeline=\"%s\",le=\"%g\"} %" PRIu64 "\n", name,
            lbl->str, metrics_bucket_bounds[b], cum);
      else
        g_string_append_printf(
            o, "%s_bucket{pipeline=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name,
            lbl->str, cum);
    }
    g_string_append_printf(o, "%s_sum{pipeline=\"%s\"} %.6f\n", name, lbl->str,
                           (double)atomic_load(&hi->sum_us) / 1e6);
    g_string_append_printf(o, "%s_count{pipeline=\"%s\"} %" PRIu64 "\n", name,
                           lbl->str, cum);
    g_string_free(lbl, TRUE);
  }
}

static void render_dedup(GString *o, const host_view_t *h) {
  int64_t ids = view_dedup_ids(h), bytes = view_dedup_bytes(h);
  if (ids < 0)
    return;
  head(o, "khost_dedup_event_ids", "gauge",
       "Event IDs the dedup store remembers.");
  g_string_append_printf(o, "khost_dedup_event_ids %" PRId64 "\n", ids);
  head(o, "khost_dedup_store_bytes", "gauge",
       "Size of the dedup store's files on disk.");
  g_string_append_printf(o, "khost_dedup_store_bytes %" PRId64 "\n", bytes);
}

/* --------------------------------------------------------- process_* */

/* Fields 14, 15 (utime, stime) and 22 (starttime) of /proc/self/stat, in
 * clock ticks; the command name (field 2) may hold spaces: parse after
 * its closing parenthesis. */
static int proc_stat(unsigned long long *cpu, unsigned long long *start) {
  char *text = NULL, *p;
  unsigned long long ut, st;
  int rc = -1;
  if (!g_file_get_contents("/proc/self/stat", &text, NULL, NULL))
    return -1;
  p = strrchr(text, ')');
  if (p && sscanf(p + 2,
                  "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                  "%*d %*d %*d %*d %*d %*d %llu",
                  &ut, &st, start) == 3) {
    *cpu = ut + st;
    rc = 0;
  }
  g_free(text);
  return rc;
}

static long long boot_time(void) {
  char *text = NULL;
  long long bt = 0;
  if (g_file_get_contents("/proc/stat", &text, NULL, NULL)) {
    const char *p = strstr(text, "\nbtime ");
    if (p)
      bt = atoll(p + 7);
  }
  g_free(text);
  return bt;
}

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  long n = 0;
  if (!d)
    return -1;
  while (readdir(d))
    n++;
  closedir(d);
  return n - 3; /* ".", ".." and the directory's own descriptor */
}

static void render_process(GString *o) {
  unsigned long long cpu, start;
  long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  unsigned long long size = 0, rss = 0;
  struct rlimit rl;
  char *statm = NULL;
  if (proc_stat(&cpu, &start) == 0) {
    head(o, "process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.");
    g_string_append_printf(o, "process_cpu_seconds_total %.2f\n",
                           (double)cpu / (double)tck);
    head(o, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
    g_string_append_printf(o, "process_start_time_seconds %.2f\n",
                           (double)boot_time() + (double)start / (double)tck);
  }
  if (g_file_get_contents("/proc/self/statm", &statm, NULL, NULL) &&
      sscanf(statm, "%llu %llu", &size, &rss) == 2) {
    head(o, "process_virtual_memory_bytes", "gauge",
         "Virtual memory size in bytes.");
    g_string_append_printf(o, "process_virtual_memory_bytes %llu\n",
                           size * (unsigned long long)page);
    head(o, "process_resident_memory_bytes", "gauge",
         "Resident memory size in bytes.");
    g_string_append_printf(o, "process_resident_memory_bytes %llu\n",
                           rss * (unsigned long long)page);
  }
  g_free(statm);
  head(o, "process_open_fds", "gauge", "Number of open file descriptors.");
  g_string_append_printf(o, "process_open_fds %ld\n", open_fds());
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    head(o, "process_max_fds", "gauge",
         "Maximum number of open file descriptors.");
    g_string_append_printf(o, "process_max_fds %llu\n",
                           (unsigned long long)rl.rlim_cur);
  }
}

char *prom_render(const host_view_t *h) {
  GString *o = g_string_new(NULL);
  render_stat_counters(o, h);
  render_metric_counters(o, h);
  render_member_gauge(o, h, "khost_records_queued",
                      "Records delivered to the member, not yet handled.", 1);
  render_member_gauge(o, h, "khost_records_in_flight",
                      "Records with an outcome whose batch is not durable "
                      "and committed yet.",
                      0);
  render_partitions(o, h);
  render_lag_seconds(o, h);
  render_hist(o, h, "khost_handle_duration_seconds",
              "Time the plugin's handle() took per call.", 0);
  render_hist(o, h, "khost_batch_durable_duration_seconds",
              "Time a batch took to become durable in the dedup store.", 1);
  render_dedup(o, h);
  render_process(o);
  return g_string_free(o, FALSE);
}
