/*
 * Replays and offsets in-process against librdkafka's mock cluster: a
 * pipeline runs to the end, `replay` moves its group back, and the next
 * run shows what dedup does with the records that come again; replays
 * refused while a member is active; --from a time; dry runs; the offsets
 * report after partial consumption. Plus the parsers (--from, member
 * assignments) without Kafka.
 */
#include <check.h>
#include <glib.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "dedup_admin.h"
#include "mockutil.h"
#include "offsets.h"
#include "replay.h"
#include "testutil.h"

#define TOPIC "order-completed"
#define GROUP "data-platform-consumer-group"
#define PARTS 3
#define PER_PART 100 /* 300 records over 3 partitions */

/* ------------------------------------------------------------- helpers */

/* <dir>/<name>: pipeline "orders" of group on the topics given (libconfig
 * list items), the scripted plugin logging its calls to <dir>/calls.log. */
static char *write_cfg_full(mu_cluster_t *c, const char *name,
                            const char *group, const char *topics,
                            const char *pipeline_extra) {
  mu_cfg_t o = {.file = name,
                .group = group,
                .topics = topics,
                .pipeline = pipeline_extra};
  return mu_write_cfg(c, &o);
}

static char *write_cfg_as(mu_cluster_t *c, const char *name, const char *group,
                          const char *pipeline_extra) {
  return write_cfg_full(c, name, group, "\"" TOPIC "\"", pipeline_extra);
}

static char *write_cfg_topics(mu_cluster_t *c, const char *topics,
                              const char *pipeline_extra) {
  return write_cfg_full(c, "khost.cfg", GROUP, topics, pipeline_extra);
}

static char *write_cfg(mu_cluster_t *c, const char *pipeline_extra) {
  return write_cfg_as(c, "khost.cfg", GROUP, pipeline_extra);
}

static char *dir_file(mu_cluster_t *c, const char *name) {
  return tu_path(c->dir, name);
}

/* n records per partition, event IDs evt-<partition>-<i>; with ts_base
 * > 0 record i of a partition is stamped ts_base + i seconds. */
static void produce(mu_cluster_t *c, int n, int64_t ts_base) {
  char id[32];
  for (int p = 0; p < PARTS; p++)
    for (int i = 0; i < n; i++) {
      snprintf(id, sizeof(id), "evt-%d-%03d", p, i);
      rd_kafka_resp_err_t e = rd_kafka_producev(
          c->producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(p),
          RD_KAFKA_V_VALUE("order", 5),
          RD_KAFKA_V_TIMESTAMP(ts_base > 0 ? ts_base + i * 1000 : 0),
          RD_KAFKA_V_HEADER("eventId", id, -1),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      ck_assert_msg(e == 0, "produce: %s", rd_kafka_err2str(e));
      rd_kafka_poll(c->producer, 0);
    }
  mu_flush(c);
}

static pipeline_stats_t run_to_end(const char *cfg) {
  return mu_run_to_end(cfg, 0, 60000);
}

static replay_opts_t opts_from(const char *from, int mode) {
  return (replay_opts_t){
      .pipeline = "orders", .from = from, .partition = -1, .dedup_mode = mode};
}

/* Plan (and apply unless dry) a replay; returns the status, err set. */
static int replay(const char *cfg_path, const replay_opts_t *o, int apply,
                  char *err, size_t errlen) {
  cfg_t cfg;
  replay_plan_t *plan = NULL;
  ck_assert_msg(cfg_load(&cfg, cfg_path, err, errlen) == 0, "%s", err);
  int rc = replay_plan(&plan, &cfg, o, err, errlen);
  if (rc == 0 && apply)
    rc = replay_apply(plan, NULL, err, errlen);
  replay_free(plan);
  cfg_free(&cfg);
  return rc;
}

static void replay_ok(const char *cfg_path, const replay_opts_t *o) {
  char err[4096] = "";
  int rc = replay(cfg_path, o, 1, err, sizeof(err));
  ck_assert_msg(rc == 0, "replay: %s", err);
}

static void assert_committed(mu_cluster_t *c, const char *group, int64_t want) {
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(c, group, TOPIC, p), want);
}

/* Replay ranges recorded in the database (SQL, beside anything open). */
static int64_t count_ranges(mu_cluster_t *c) {
  char *path = dir_file(c, "dedup.db");
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int64_t n = 0;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM replays", -1, &st, NULL) ==
          SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  free(path);
  return n;
}

/* The ranges of one partition, through the store's own interface. */
static dedup_range_t *ranges_of(mu_cluster_t *c, int32_t partition, size_t *n) {
  char err[512];
  char *path = dir_file(c, "dedup.db");
  dedup_opts_t o = {.path = path, .retention_ms = 3600 * 1000};
  dedup_store_t *s = NULL;
  uint32_t scope;
  dedup_range_t *v = NULL;
  ck_assert_msg(dedup_open(&s, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(dedup_scope(s, "orders", &scope, err, sizeof(err)), 0);
  ck_assert_msg(dedup_replay_ranges(s, scope, TOPIC, partition, &v, n, err,
                                    sizeof(err)) == 0,
                "%s", err);
  dedup_close(s);
  free(path);
  return v;
}

/* Produce 300 records, run them to the end: every one handled once. */
static char *handled_once(mu_cluster_t *c, char **log) {
  mu_start(c, 1);
  mu_topic(c, TOPIC, PARTS);
  produce(c, PER_PART, 0);
  char *cfg = write_cfg(c, NULL);
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, PARTS * PER_PART);
  assert_committed(c, GROUP, PER_PART);
  *log = dir_file(c, "calls.log");
  return cfg;
}

/* ------------------------------------------------------------ replays */

START_TEST(test_replay_earliest_skip_handles_nothing) {
  mu_cluster_t c;
  char *log;
  char *cfg = handled_once(&c, &log);
  replay_opts_t o = opts_from("earliest", DEDUP_REPLAY_SKIP);
  replay_ok(cfg, &o);
  assert_committed(&c, GROUP, 0);
  for (int p = 0; p < PARTS; p++) {
    size_t n;
    dedup_range_t *r = ranges_of(&c, p, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(r[0].from, 0);
    ck_assert_int_eq(r[0].to, PER_PART);
    ck_assert_int_eq(r[0].mode, DEDUP_REPLAY_SKIP);
    free(r);
  }
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 0);
  ck_assert_uint_eq(s.duplicates, PARTS * PER_PART);
  size_t n;
  free(mu_read_lines(log, &n));
  ck_assert_uint_eq(n, PARTS * PER_PART); /* no call since the first run */
  assert_committed(&c, GROUP, PER_PART);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A replay into a group the cluster has not seen moves its offsets with
 * the admin API, without joining it: with every JoinGroup refused for a
 * while, it still succeeds, at once. (The mock cluster takes admin
 * commits only for groups it has not seen: for the others a replay joins
 * the group, as the other tests show.) */
START_TEST(test_replay_new_group_does_not_join) {
  enum { REFUSED = 50 };
  mu_cluster_t c;
  char *log;
  char *cfg = handled_once(&c, &log);
  rd_kafka_resp_err_t codes[REFUSED];
  for (int i = 0; i < REFUSED; i++)
    codes[i] = RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED;
  rd_kafka_mock_push_request_errors_array(mock_cluster(c.mock),
                                          11 /* JoinGroup */, REFUSED, codes);
  replay_opts_t o = opts_from("earliest", DEDUP_REPLAY_REPROCESS);
  o.group = "orders-replay";
  int64_t t0 = tu_mono_ms();
  replay_ok(cfg, &o);
  int64_t took = tu_mono_ms() - t0;
  assert_committed(&c, "orders-replay", 0);
  assert_committed(&c, GROUP, PER_PART);
  ck_assert_msg(took < 10000, "the replay took %" PRId64 " ms", took);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_replay_earliest_reprocess_handles_all_flagged) {
  mu_cluster_t c;
  char *log, err[512];
  char *cfg = handled_once(&c, &log);
  replay_opts_t o = opts_from("earliest", DEDUP_REPLAY_REPROCESS);
  replay_ok(cfg, &o);
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, PARTS * PER_PART);
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 2 * PARTS * PER_PART);
  for (size_t i = 0; i < n; i++) {
    int second = i >= PARTS * PER_PART;
    ck_assert_msg(!(l[i].flags & KHOST_RECORD_REPLAY) == !second,
                  "line %zu (%s [%d] %lld): flags %u", i, l[i].topic,
                  (int)l[i].partition, (long long)l[i].offset, l[i].flags);
  }
  /* The marks are refreshed: each ID now has its first and its replayed
   * mark. */
  char *db = dir_file(&c, "dedup.db");
  dadm_t *a = NULL;
  uint32_t scope;
  int found;
  dadm_mark_t *m = NULL;
  ck_assert_msg(dadm_open(&a, db, 0, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(dadm_scope(a, "orders", 0, &scope, &found, err, 512), 0);
  ck_assert_int_eq(dadm_lookup(a, scope, "evt-1-042", 9, &m, &n, err, 512), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_int_eq(m[1].partition, 1);
  ck_assert_int_eq(m[1].offset, 42);
  ck_assert_int_ge(m[1].handled_at_ms, m[0].handled_at_ms);
  dadm_marks_free(m, n);
  dadm_close(a);
  assert_committed(&c, GROUP, PER_PART);
  free(db);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ms since the epoch as ISO-8601 in a timezone tz_s seconds east of UTC,
 * with milliseconds. */
static void iso_at(int64_t ms, int tz_s, char *buf, size_t size) {
  GTimeZone *tz = g_time_zone_new_offset(tz_s);
  GDateTime *utc = g_date_time_new_from_unix_utc(ms / 1000);
  GDateTime *local = g_date_time_to_timezone(utc, tz);
  char *s = g_date_time_format(local, "%Y-%m-%dT%H:%M:%S");
  snprintf(buf, size, "%s.%03d%c%02d:%02d", s, (int)(ms % 1000),
           tz_s < 0 ? '-' : '+', abs(tz_s) / 3600, abs(tz_s) / 60 % 60);
  g_free(s);
  g_date_time_unref(local);
  g_date_time_unref(utc);
  g_time_zone_unref(tz);
}

/* The new offset of every partition for --from `from` (a plan only). */
/* The plan of o must put every partition at want. */
static void assert_plan(const char *cfg_path, const replay_opts_t *o,
                        const char *what, int64_t want) {
  char err[4096];
  cfg_t cfg;
  replay_plan_t *plan = NULL;
  ck_assert_int_eq(cfg_load(&cfg, cfg_path, err, sizeof(err)), 0);
  ck_assert_msg(replay_plan(&plan, &cfg, o, err, sizeof(err)) == 0, "%s: %s",
                what, err);
  ck_assert_uint_eq(replay_part_count(plan), PARTS);
  for (size_t i = 0; i < PARTS; i++)
    ck_assert_msg(replay_part(plan, i)->target == want,
                  "%s: partition %zu at %lld, not %lld", what, i,
                  (long long)replay_part(plan, i)->target, (long long)want);
  replay_free(plan);
  cfg_free(&cfg);
}

static void assert_targets(const char *cfg_path, const char *from,
                           int64_t want) {
  replay_opts_t o = opts_from(from, DEDUP_REPLAY_SKIP);
  assert_plan(cfg_path, &o, from, want);
}

static void assert_shift(const char *cfg_path, const char *by, int64_t want) {
  replay_opts_t o = opts_from(NULL, DEDUP_REPLAY_SKIP);
  o.shift_by = by;
  assert_plan(cfg_path, &o, by, want);
}

/* Relative positions: 30 records per partition stamped two hours ago,
 * then 30 stamped ten minutes ago. --from -1h lands on the first of the
 * recent ones, -3h on the log start, -1m on the end; --shift-by moves the
 * committed offset (40) back or ahead, kept within the log, and is
 * refused for a group without a committed offset. */
START_TEST(test_replay_relative_positions) {
  mu_cluster_t c;
  char err[4096];
  int64_t now = dedup_now_ms();
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce(&c, 30, now - 2 * 3600 * 1000);
  produce(&c, 30, now - 600 * 1000);
  char *cfg = write_cfg(&c, NULL);
  assert_targets(cfg, "-1h", 30);
  assert_targets(cfg, "-60m", 30);
  assert_targets(cfg, "-3h", 0);
  assert_targets(cfg, "-1m", 60);
  for (int p = 0; p < PARTS; p++)
    mu_commit(&c, GROUP, TOPIC, p, 40);
  assert_shift(cfg, "-15", 25);
  assert_shift(cfg, "5", 45);
  assert_shift(cfg, "-100", 0); /* the log start */
  assert_shift(cfg, "100", 60); /* the end */
  /* Applied: the group's offsets move back by 10. */
  replay_opts_t o = opts_from(NULL, DEDUP_REPLAY_SKIP);
  o.shift_by = "-10";
  replay_ok(cfg, &o);
  assert_committed(&c, GROUP, 30);
  /* A group that has committed nothing has nothing to shift. */
  o.group = "a-new-group";
  ck_assert_int_eq(replay(cfg, &o, 0, err, sizeof(err)), 2);
  ck_assert_msg(strstr(err, "has no committed offset") != NULL, "%s", err);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Records stamped base + i s: --from a time lands on the first record at
 * or after it, in every partition; before the log: the log start; after
 * the last record: the end. */
START_TEST(test_replay_from_time_lands_on_offsets) {
  enum { N = 60 };
  mu_cluster_t c;
  char when[64];
  int64_t base = (dedup_now_ms() / 1000 - 3600) * 1000; /* an hour ago */
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce(&c, N, base);
  char *cfg = write_cfg(&c, NULL);
  iso_at(base + 40 * 1000, 0, when, sizeof(when));
  assert_targets(cfg, when, 40); /* exactly a record's time */
  iso_at(base + 40 * 1000 + 1, -5 * 3600, when, sizeof(when));
  assert_targets(cfg, when, 41); /* 1 ms later, written in -05:00 */
  assert_targets(cfg, "2001-01-01T00:00:00Z", 0);
  iso_at(base + N * 1000, 0, when, sizeof(when));
  assert_targets(cfg, when, N);

  /* Applied, written in +09:00 with fractional seconds. */
  iso_at(base + 40500, 9 * 3600, when, sizeof(when));
  replay_opts_t o = opts_from(when, DEDUP_REPLAY_SKIP);
  replay_ok(cfg, &o);
  assert_committed(&c, GROUP, 41);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* While a host is a member of the group the replay is refused and nothing
 * changes; into a new group it goes through. */
START_TEST(test_replay_refused_while_member_active) {
  mu_cluster_t c;
  mu_host_t h;
  pipeline_stats_t s;
  char err[4096] = "";
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce(&c, 20, 0);
  char *cfg = write_cfg(&c, NULL);
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL((mu_host_stats(&h, &s), s.handled == PARTS * 20), 30000,
                "the host handles every record");
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, TOPIC, 0) == 20 &&
                    mu_committed(&c, GROUP, TOPIC, 1) == 20 &&
                    mu_committed(&c, GROUP, TOPIC, 2) == 20,
                30000, "the host commits");

  replay_opts_t o = opts_from("earliest", DEDUP_REPLAY_REPROCESS);
  int rc = replay(cfg, &o, 1, err, sizeof(err));
  ck_assert_int_eq(rc, HOST_EXIT_RUNTIME);
  ck_assert_msg(strstr(err, "active members") != NULL, "%s", err);
  ck_assert_int_eq(count_ranges(&c), 0);
  assert_committed(&c, GROUP, 20);

  o.group = "orders-rebuild";
  err[0] = '\0';
  rc = replay(cfg, &o, 1, err, sizeof(err));
  ck_assert_msg(rc == 0, "replay --group: %s", err);
  assert_committed(&c, "orders-rebuild", 0);
  ck_assert_int_eq(count_ranges(&c), PARTS);

  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &s);
  ck_assert_uint_eq(s.handled, PARTS * 20); /* nothing handled twice */
  mu_host_close(&h);
  assert_committed(&c, GROUP, 20);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A plan (what --dry-run prints) changes nothing: per partition it puts
 * all 100 records back, each consumed before; the committed offsets read
 * back unchanged and no range is recorded. */
START_TEST(test_dry_run_changes_nothing) {
  mu_cluster_t c;
  char *log, err[4096];
  char *cfg = handled_once(&c, &log);
  cfg_t cf;
  replay_plan_t *plan = NULL;
  ck_assert_int_eq(cfg_load(&cf, cfg, err, sizeof(err)), 0);
  replay_opts_t o = opts_from("earliest", DEDUP_REPLAY_REPROCESS);
  ck_assert_msg(replay_plan(&plan, &cf, &o, err, sizeof(err)) == 0, "%s", err);
  ck_assert_str_eq(replay_group(plan), GROUP);
  ck_assert_uint_eq(replay_part_count(plan), PARTS);
  for (size_t i = 0; i < PARTS; i++) {
    const replay_part_t *rp = replay_part(plan, i);
    ck_assert_str_eq(rp->topic, TOPIC);
    ck_assert_int_eq(rp->partition, (int32_t)i);
    ck_assert_int_eq(rp->committed, PER_PART);
    ck_assert_int_eq(rp->handled_before, PER_PART);
    ck_assert_int_eq(rp->start, 0);
    ck_assert_int_eq(rp->end, PER_PART);
    ck_assert_int_eq(rp->target, 0);
    ck_assert_int_eq(replay_part_replayed(plan, rp), PER_PART);
  }
  replay_free(plan);
  cfg_free(&cf);
  assert_committed(&c, GROUP, PER_PART);
  ck_assert_int_eq(count_ranges(&c), 0);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* After partial consumption (30 of 50 per partition committed), the
 * report matches the committed and end offsets read independently. */
START_TEST(test_offsets_after_partial_consumption) {
  mu_cluster_t c;
  char err[4096];
  cfg_t cf;
  offs_report_t r = {0};
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  produce(&c, 30, 0);
  char *cfg = write_cfg(&c, NULL);
  run_to_end(cfg);
  produce(&c, 20, 0); /* evt IDs repeat: irrelevant, nothing consumes */
  ck_assert_int_eq(cfg_load(&cf, cfg, err, sizeof(err)), 0);
  ck_assert_msg(offs_gather(&r, &cf, &cf.pipelines[0], err, sizeof(err)) == 0,
                "%s", err);
  ck_assert_uint_eq(r.n, PARTS);
  for (size_t i = 0; i < r.n; i++) {
    const offs_row_t *row = &r.rows[i];
    ck_assert_str_eq(row->group, GROUP);
    ck_assert_str_eq(row->topic, TOPIC);
    ck_assert_int_eq(row->partition, (int32_t)i);
    ck_assert_int_eq(row->committed,
                     mu_committed(&c, GROUP, TOPIC, row->partition));
    ck_assert_int_eq(row->committed, 30);
    ck_assert_int_eq(row->start, 0);
    ck_assert_int_eq(row->end, mu_end_offset(&c, TOPIC, row->partition));
    ck_assert_int_eq(row->end, 50);
    ck_assert_int_eq(row->lag, 20);
    ck_assert_ptr_null(row->member); /* the mock describes no groups */
    ck_assert_int_eq(row->member_known, 0);
  }
  ck_assert_uint_eq(r.n_notes, 1);
  ck_assert_msg(strstr(r.notes[0], "members unknown") != NULL, "%s",
                r.notes[0]);
  offs_report_free(&r);
  cfg_free(&cf);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------- run --from-beginning */

/* `khost run --exit-at-end --from-beginning` in-process. */
static pipeline_stats_t run_from_beginning(const char *cfg) {
  mu_host_t h;
  pipeline_stats_t s;
  host_opts_t o = {.exit_at_end = 1, .from_beginning = 1};
  mu_host_start_opts(&h, cfg, &o);
  mu_host_wait(&h, 60000);
  ck_assert_int_eq(h.status, 0);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  return s;
}

/* After a run to the end, --from-beginning on the same group reads every
 * record again from offset 0, and dedup skips them all; a fresh group
 * whose auto.offset.reset would start it at the end starts at 0 too. */
START_TEST(test_run_from_beginning) {
  mu_cluster_t c;
  char *log;
  size_t n;
  char *cfg = handled_once(&c, &log);
  /* Without the option, the group's committed offsets hold: nothing. */
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled + s.duplicates, 0);

  s = run_from_beginning(cfg);
  ck_assert_uint_eq(s.handled, 0);
  ck_assert_uint_eq(s.duplicates, PARTS * PER_PART);
  ck_assert_uint_eq(s.failed, 0);
  assert_committed(&c, GROUP, PER_PART);
  free(mu_read_lines(log, &n));
  ck_assert_uint_eq(n, PARTS * PER_PART); /* no call since the first run */
  ck_assert_int_eq(count_ranges(&c), 0);  /* unlike a replay: no range */

  char *fresh = write_cfg_as(&c, "fresh.cfg", "fresh-group",
                             "kafka = { auto_offset_reset = \"latest\"; };");
  s = run_from_beginning(fresh);
  ck_assert_uint_eq(s.handled, 0);
  ck_assert_uint_eq(s.duplicates, PARTS * PER_PART);
  assert_committed(&c, "fresh-group", PER_PART);
  assert_committed(&c, GROUP, PER_PART);
  free(mu_read_lines(log, &n));
  ck_assert_uint_eq(n, PARTS * PER_PART);
  free(fresh);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------ regex topics */

/* Topics of which the pattern ^orders-.* matches the first two, with 2
 * partitions each. */
static const char *const RX_TOPICS[] = {"orders-eu", "orders-us", "payments"};
#define RX_PATTERN "\"^orders-.*\""

/* n records to each partition of topic, event IDs <topic>-<p>-<i> from
 * `first` on. */
static void produce_rx(mu_cluster_t *c, const char *topic, int first, int n) {
  char id[64];
  for (int p = 0; p < 2; p++)
    for (int i = first; i < first + n; i++) {
      snprintf(id, sizeof(id), "%s-%d-%03d", topic, p, i);
      mu_produce(c, topic, p, id, NULL, "order");
    }
  mu_flush(c);
}

/* The regex topics, 30 records per partition, run to the end by the
 * pipeline subscribed to ^orders-.*. */
static char *rx_consumed(mu_cluster_t *c) {
  mu_start(c, 1);
  for (int t = 0; t < 3; t++) {
    mu_topic(c, RX_TOPICS[t], 2);
    produce_rx(c, RX_TOPICS[t], 0, 30);
  }
  char *cfg = write_cfg_topics(c, RX_PATTERN, NULL);
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 2 * 2 * 30);
  return cfg;
}

/* `offsets` on a pipeline subscribed to a pattern: a row per partition of
 * each matching topic, in order; a pattern matching nothing is a note. */
START_TEST(test_offsets_regex_topic) {
  mu_cluster_t c;
  char err[4096];
  cfg_t cf;
  offs_report_t r = {0};
  char *cfg = rx_consumed(&c);
  produce_rx(&c, "orders-us", 30, 20);
  ck_assert_int_eq(cfg_load(&cf, cfg, err, sizeof(err)), 0);
  ck_assert_msg(offs_gather(&r, &cf, &cf.pipelines[0], err, sizeof(err)) == 0,
                "%s", err);
  ck_assert_uint_eq(r.n, 4);
  for (size_t i = 0; i < r.n; i++) {
    const offs_row_t *row = &r.rows[i];
    int us = i >= 2;
    ck_assert_str_eq(row->topic, RX_TOPICS[us]);
    ck_assert_int_eq(row->partition, (int32_t)(i % 2));
    ck_assert_int_eq(row->committed, 30);
    ck_assert_int_eq(row->end, us ? 50 : 30);
    ck_assert_int_eq(row->lag, us ? 20 : 0);
  }
  ck_assert_uint_eq(r.n_notes, 1); /* members unknown (the mock) */
  offs_report_free(&r);
  cfg_free(&cf);
  free(cfg);

  cfg = write_cfg_topics(&c, "\"^refunds-.*\", \"payments\"", NULL);
  ck_assert_int_eq(cfg_load(&cf, cfg, err, sizeof(err)), 0);
  ck_assert_msg(offs_gather(&r, &cf, &cf.pipelines[0], err, sizeof(err)) == 0,
                "%s", err);
  ck_assert_uint_eq(r.n, 2); /* payments */
  ck_assert_str_eq(r.notes[0], "pipeline orders: topic pattern ^refunds-.* "
                               "matches no topic in the cluster");
  offs_report_free(&r);
  cfg_free(&cf);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* `replay` on a pipeline subscribed to a pattern: every partition of each
 * matching topic moves (and only those); --topic takes a matching topic,
 * not another one; a pattern matching nothing is an error. */
START_TEST(test_replay_regex_topic) {
  mu_cluster_t c;
  char err[4096] = "";
  char *cfg = rx_consumed(&c);

  replay_opts_t o = opts_from("earliest", DEDUP_REPLAY_SKIP);
  o.topic = "payments";
  ck_assert_int_eq(replay(cfg, &o, 0, err, sizeof(err)), HOST_EXIT_CONFIG);
  ck_assert_msg(strstr(err, "is not a topic of pipeline orders") != NULL, "%s",
                err);
  o.topic = NULL;
  o.partition = 1;
  ck_assert_int_eq(replay(cfg, &o, 0, err, sizeof(err)), HOST_EXIT_CONFIG);
  ck_assert_msg(strstr(err, "--partition needs --topic") != NULL, "%s", err);

  /* --topic orders-us --partition 1: that one partition. */
  o.topic = "orders-us";
  replay_ok(cfg, &o);
  ck_assert_int_eq(mu_committed(&c, GROUP, "orders-us", 1), 0);
  ck_assert_int_eq(mu_committed(&c, GROUP, "orders-us", 0), 30);
  ck_assert_int_eq(mu_committed(&c, GROUP, "orders-eu", 1), 30);

  /* Every partition the pattern matches. */
  o = opts_from("earliest", DEDUP_REPLAY_SKIP);
  replay_ok(cfg, &o);
  for (int t = 0; t < 2; t++)
    for (int p = 0; p < 2; p++)
      ck_assert_int_eq(mu_committed(&c, GROUP, RX_TOPICS[t], p), 0);
  ck_assert_int_lt(mu_committed(&c, GROUP, "payments", 0), 0);
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 0);
  ck_assert_uint_eq(s.duplicates, 2 * 2 * 30);
  free(cfg);

  cfg = write_cfg_topics(&c, "\"^refunds-.*\"", NULL);
  ck_assert_int_eq(replay(cfg, &o, 0, err, sizeof(err)), HOST_EXIT_CONFIG);
  ck_assert_str_eq(err, "topic pattern ^refunds-.* matches no topic in the "
                        "cluster");
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* ------------------------------------------------------------- parsers */

START_TEST(test_parse_from) {
  replay_from_t f;
  char err[512];
  int64_t now = 1767225600000; /* 2026-01-01T00:00:00Z */
  ck_assert_int_eq(replay_parse_from("earliest", now, &f, err, 512), 0);
  ck_assert_int_eq(f.kind, REPLAY_FROM_EARLIEST);
  ck_assert_int_eq(replay_parse_from("latest", now, &f, err, 512), 0);
  ck_assert_int_eq(f.kind, REPLAY_FROM_LATEST);
  ck_assert_int_eq(replay_parse_from("1234", now, &f, err, 512), 0);
  ck_assert_int_eq(f.kind, REPLAY_FROM_OFFSET);
  ck_assert_int_eq(f.value, 1234);
  ck_assert_int_eq(replay_parse_from("2025-12-31T23:00:00Z", now, &f, err, 512),
                   0);
  ck_assert_int_eq(f.kind, REPLAY_FROM_TIME);
  ck_assert_int_eq(f.value, now - 3600 * 1000);
  ck_assert_int_eq(
      replay_parse_from("2026-01-01T08:59:59.250+09:00", now, &f, err, 512), 0);
  ck_assert_int_eq(f.value, now - 750);
  /* In the future, and by how much: refused, saying so. */
  ck_assert_int_eq(replay_parse_from("2026-01-01T00:00:01Z", now, &f, err, 512),
                   -1);
  ck_assert_msg(strstr(err, "in the future") != NULL, "%s", err);
  /* No timezone, not a date, a negative offset, junk. */
  const char *bad[] = {"2025-12-31T23:00:00",
                       "2025-13-01T00:00:00Z",
                       "-5",
                       "yesterday",
                       "",
                       "12ab"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    err[0] = '\0';
    ck_assert_msg(replay_parse_from(bad[i], now, &f, err, 512) == -1,
                  "accepted \"%s\"", bad[i]);
    ck_assert_msg(strstr(err, "ISO-8601") != NULL, "%s: %s", bad[i], err);
  }
}
END_TEST

/* --from -DURATION is a time back from now; --shift-by a signed count. */
START_TEST(test_parse_relative) {
  replay_from_t f;
  char err[512];
  int64_t now = 1767225600000; /* 2026-01-01T00:00:00Z */
  ck_assert_int_eq(replay_parse_from("-1h", now, &f, err, 512), 0);
  ck_assert_int_eq(f.kind, REPLAY_FROM_TIME);
  ck_assert_int_eq(f.value, now - 3600 * 1000);
  ck_assert_int_eq(replay_parse_from("-30m", now, &f, err, 512), 0);
  ck_assert_int_eq(f.value, now - 1800 * 1000);
  ck_assert_int_eq(replay_parse_from("-2d", now, &f, err, 512), 0);
  ck_assert_int_eq(f.value, now - 2 * 86400 * 1000);
  const char *bad[] = {"-0h", "-h", "-1x", "--1h", "-1"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    ck_assert_msg(replay_parse_from(bad[i], now, &f, err, 512) == -1,
                  "accepted \"%s\"", bad[i]);
  ck_assert_msg(strstr(err, "(-1h, -30m, -2d)") != NULL, "%s", err);
  ck_assert_int_eq(replay_parse_shift("-100", &f, err, 512), 0);
  ck_assert_int_eq(f.kind, REPLAY_FROM_SHIFT);
  ck_assert_int_eq(f.value, -100);
  ck_assert_int_eq(replay_parse_shift("+25", &f, err, 512), 0);
  ck_assert_int_eq(f.value, 25);
  const char *bad_shift[] = {"", "ten", "-5x", "1h"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad_shift); i++)
    ck_assert_msg(replay_parse_shift(bad_shift[i], &f, err, 512) == -1,
                  "accepted \"%s\"", bad_shift[i]);
}
END_TEST

/* Big-endian consumer-protocol assignment bytes. */
static size_t put16(uint8_t *p, int v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return 2;
}

static size_t put32(uint8_t *p, int32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)((uint32_t)v >> (24 - 8 * i));
  return 4;
}

START_TEST(test_parse_assignment) {
  uint8_t b[128];
  size_t n = 0;
  rd_kafka_topic_partition_list_t *l = NULL;
  n += put16(b + n, 1); /* version */
  n += put32(b + n, 2); /* topics */
  n += put16(b + n, 1); /* "a" */
  b[n++] = 'a';
  n += put32(b + n, 2); /* partitions 0, 5 */
  n += put32(b + n, 0);
  n += put32(b + n, 5);
  n += put16(b + n, 15); /* "order-completed" */
  memcpy(b + n, TOPIC, 15);
  n += 15;
  n += put32(b + n, 1);
  n += put32(b + n, 2);
  n += put32(b + n, -1); /* null user data */
  ck_assert_int_eq(offs_parse_assignment(b, n, &l), 0);
  ck_assert_int_eq(l->cnt, 3);
  ck_assert_ptr_nonnull(rd_kafka_topic_partition_list_find(l, "a", 5));
  ck_assert_ptr_nonnull(rd_kafka_topic_partition_list_find(l, TOPIC, 2));
  ck_assert_ptr_null(rd_kafka_topic_partition_list_find(l, TOPIC, 0));
  rd_kafka_topic_partition_list_destroy(l);
  /* Cut anywhere inside the partitions: malformed. */
  for (size_t cut = 1; cut < n - 4; cut++) {
    l = NULL;
    ck_assert_msg(offs_parse_assignment(b, cut, &l) == -1, "cut at %zu", cut);
    ck_assert_ptr_null(l);
  }
}
END_TEST

Suite *replay_suite(void) {
  Suite *s = suite_create("replay");
  TCase *unit = tcase_create("parsers");
  tcase_add_test(unit, test_parse_from);
  tcase_add_test(unit, test_parse_relative);
  tcase_add_test(unit, test_parse_assignment);
  suite_add_tcase(s, unit);
  /* Each test a case of its own, run beside the others; the longest
   * first. */
  TU_CASE(s, test_run_from_beginning, 120, "mock-cluster");
  TU_CASE(s, test_replay_from_time_lands_on_offsets, 120, "mock-cluster");
  TU_CASE(s, test_replay_relative_positions, 120, "mock-cluster");
  TU_CASE(s, test_replay_regex_topic, 120, "mock-cluster");
  TU_CASE(s, test_replay_refused_while_member_active, 120, "mock-cluster");
  TU_CASE(s, test_replay_earliest_reprocess_handles_all_flagged, 120,
          "mock-cluster");
  TU_CASE(s, test_replay_earliest_skip_handles_nothing, 120, "mock-cluster");
  TU_CASE(s, test_replay_new_group_does_not_join, 120, "mock-cluster");
  TU_CASE(s, test_offsets_regex_topic, 120, "mock-cluster");
  TU_CASE(s, test_dry_run_changes_nothing, 120, "mock-cluster");
  TU_CASE(s, test_offsets_after_partial_consumption, 120, "mock-cluster");
  return s;
}
