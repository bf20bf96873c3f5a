/*
 * The demo (see demo.h).
 */
#include "demo.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "log.h"
#include "mock_window.h"

struct demo {
  const cfg_t *cfg;
  mock_t *mock;
  gen_report_t gen; /* what mock.generate produced */
  int generated;    /* mock.generate filled the topics */
};

/* More events than the mock cluster keeps: said before producing, not
 * found out from a summary that does not reconcile. */
static void warn_mock_window(const gen_opts_t *o, int partitions) {
  mock_window_fit_t f;
  if (!mock_window_check(o, partitions, &f))
    return;
  log_msg(KHOST_LOG_WARNING, "mock",
          "mock.generate: %" PRIu64 " events put about %" PRIu64
          " records (%.1f MB) on each partition of %s, but the embedded mock "
          "cluster keeps only the last %u MB or %u records of a partition: "
          "about %" PRIu64 " of them per partition will be gone before "
          "they are consumed, and the summary will not reconcile; about "
          "%" PRIu64 " events fit with mock.partitions = %d (more partitions "
          "hold more; a real broker holds all)",
          o->count, f.records, (double)f.bytes / 1e6, gen_topic_name(f.topic),
          MOCK_WINDOW_BYTES / (1024 * 1024), MOCK_WINDOW_RECORDS,
          f.records - f.kept, f.max_count, partitions);
}

/* mock.generate: the event generator fills the document's topics. */
static int generate(demo_t *d, char *err, size_t errlen) {
  const cfg_t *cfg = d->cfg;
  gen_opts_t o;
  gen_report_t r;
  gen_opts_default(&o);
  o.count = (uint64_t)cfg->mock_gen.count;
  o.duplicates = cfg->mock_gen.duplicates;
  o.users = cfg->mock_gen.users;
  o.coupons = cfg->mock_gen.coupons;
  if (cfg->mock_gen.seed_set)
    o.seed = cfg->mock_gen.seed;
  log_msg(KHOST_LOG_NOTICE, "mock",
          "generating %d events (seed %" PRIu32 ", %g%% duplicates, %d users, "
          "%d coupons)",
          cfg->mock_gen.count, o.seed, o.duplicates * 100, o.users, o.coupons);
  warn_mock_window(&o, cfg->mock_partitions);
  int rc = mock_generate(d->mock, &o, cfg->mock_partitions, &r, err, errlen);
  gen_report_log(&r, "mock");
  d->gen = r;
  d->generated = rc == 0;
  return rc;
}

/* Create the pipelines' topics; fill each with sample events once. */
static int fill_topics(demo_t *d, char *err, size_t errlen) {
  const cfg_t *cfg = d->cfg;
  for (size_t i = 0; i < cfg->n_pipelines; i++) {
    const cfg_pipeline_t *pc = &cfg->pipelines[i];
    for (size_t t = 0; t < pc->n_topics; t++) {
      /* A topic shared by two pipelines is created (and filled) once. */
      if (mock_create_topic(d->mock, pc->topics[t], cfg->mock_partitions, err,
                            errlen) != 0)
        continue;
      if (cfg->mock_sample_records <= 0)
        continue;
      if (mock_produce_samples(d->mock, pc->topics[t], cfg->mock_sample_records,
                               cfg->mock_sample_duplicates, err, errlen) != 0)
        return -1;
      log_msg(KHOST_LOG_NOTICE, "mock",
              "produced %d sample events to %s (%d re-published with an "
              "earlier eventId)",
              cfg->mock_sample_records, pc->topics[t],
              cfg->mock_sample_duplicates);
    }
  }
  return 0;
}

int demo_open(demo_t **out, const cfg_t *cfg, char *err, size_t errlen) {
  demo_t *d = calloc(1, sizeof(*d));
  d->cfg = cfg;
  if (mock_start(&d->mock, cfg->mock_brokers, err, errlen) != 0)
    goto fail;
  log_msg(KHOST_LOG_NOTICE, "mock", "embedded mock cluster: %d broker(s) at %s",
          cfg->mock_brokers, mock_bootstraps(d->mock));
  if (fill_topics(d, err, errlen) != 0)
    goto fail;
  if (cfg->mock_gen.enabled && generate(d, err, errlen) != 0)
    goto fail;
  err[0] = '\0';
  *out = d;
  return 0;
fail:
  demo_close(d);
  return -1;
}

void demo_close(demo_t *d) {
  if (!d)
    return;
  mock_stop(d->mock);
  free(d);
}

mock_t *demo_mock(demo_t *d) {
  return d->mock;
}

int demo_generated(const demo_t *d) {
  return d && d->generated;
}

/* ------------------------------------------------------------ report */

/* Records the generator produced to the pipeline's topics. */
static uint64_t produced_to(const demo_t *d, const cfg_pipeline_t *pc) {
  uint64_t n = 0;
  for (size_t t = 0; t < pc->n_topics; t++) {
    int g = gen_topic_index(pc->topics[t]);
    if (g >= 0)
      n += gen_report_produced(&d->gen, g);
  }
  return n;
}

/* "-" until the pipeline was consumed to the end of its topics: before
 * that, fewer handled than produced is no fault. */
static const char *reconciled(const demo_t *d, const demo_row_t *row) {
  const pipeline_stats_t *s = row->stats;
  if (!s->at_end)
    return "-";
  return produced_to(d, row->pc) == s->handled + s->duplicates ? "yes" : "NO";
}

static void report_table(const demo_t *d, const demo_row_t *rows, size_t n,
                         FILE *out) {
  int wp = (int)strlen("pipeline"), wt = (int)strlen("topic");
  char **topics = calloc(n, sizeof(*topics));
  for (size_t i = 0; i < n; i++) {
    const cfg_pipeline_t *pc = rows[i].pc;
    topics[i] = g_strjoinv(",", pc->topics);
    if ((int)strlen(pc->name) > wp)
      wp = (int)strlen(pc->name);
    if ((int)strlen(topics[i]) > wt)
      wt = (int)strlen(topics[i]);
  }
  /* One word per header, so that the table splits on blanks. */
  fprintf(out, "%-*s  %-*s  %8s  %8s  %10s  %6s  %s\n", wp, "pipeline", wt,
          "topic", "produced", "handled", "duplicates", "failed", "reconciled");
  for (size_t i = 0; i < n; i++) {
    const pipeline_stats_t *s = rows[i].stats;
    fprintf(out,
            "%-*s  %-*s  %8" PRIu64 "  %8" PRIu64 "  %10" PRIu64 "  %6" PRIu64
            "  %s\n",
            wp, rows[i].pc->name, wt, topics[i], produced_to(d, rows[i].pc),
            s->handled, s->duplicates, s->failed, reconciled(d, &rows[i]));
    g_free(topics[i]);
  }
  free(topics);
}

/* The notices a pipeline's plugin logged while it closed. */
static void report_notes(const demo_row_t *row, FILE *out) {
  if (!row->notes || row->notes->len == 0)
    return;
  fprintf(out, "\n%s, as its plugin %s reported when it closed:\n",
          row->pc->name, row->plugin);
  for (guint j = 0; j < row->notes->len; j++)
    fprintf(out, "  %s\n", (const char *)row->notes->pdata[j]);
}

int demo_report(const demo_t *d, const demo_row_t *rows, size_t n, FILE *out) {
  int bad = 0, unfinished = 0;
  if (!demo_generated(d))
    return -1;
  fprintf(out,
          "\nSummary: records the generator produced (seed %" PRIu32
          ") and what each pipeline did with them\n",
          d->gen.seed);
  report_table(d, rows, n, out);
  fprintf(out, "reconciled: produced = handled + duplicates skipped, once "
               "the pipeline has consumed its topics to the end\n");
  for (size_t i = 0; i < n; i++) {
    const char *r = reconciled(d, &rows[i]);
    bad += strcmp(r, "NO") == 0;
    unfinished += strcmp(r, "-") == 0;
    report_notes(&rows[i], out);
  }
  if (bad)
    fprintf(out,
            "\nNOT RECONCILED: %d pipeline(s) handled + skipped a "
            "different number of records than were produced\n",
            bad);
  else if (unfinished)
    fprintf(out,
            "\n%d pipeline(s) stopped before the end of their topics: "
            "not reconciled (run with --exit-at-end)\n",
            unfinished);
  else
    fprintf(out, "\nEvery pipeline reconciled.\n");
  fflush(out);
  return bad;
}
