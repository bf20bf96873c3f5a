/*
 * End-to-end tests of the host against librdkafka's mock cluster, reached
 * over TCP: dedup, commits, restarts, rebalances, missing event IDs,
 * retries and failures. The `scripted` fixture plugin logs every call.
 */
#include <check.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mockutil.h"
#include "testutil.h"

#define TOPIC "order-completed"
#define GROUP "data-platform-consumer-group"

/* A config for one pipeline using the scripted fixture plugin, with the
 * topics (libconfig list items) given; retries 40 ms apart unless
 * pipeline_extra says otherwise, and the metadata refreshed every 500 ms
 * (new topics matching a pattern). */
static char *write_cfg_topics(mu_cluster_t *c, const char *file,
                              const char *topics, const char *group,
                              int members, const char *log, const char *db,
                              const char *pipeline_extra,
                              const char *plugin_extra) {
  char *pipeline = NULL;
  ck_assert_int_ge(
      asprintf(&pipeline, "%s\n  %s",
               pipeline_extra && strstr(pipeline_extra, "retry")
                   ? ""
                   : "retry = { max = 5; backoff = \"40ms\"; backoff_max = "
                     "\"1s\"; };",
               pipeline_extra ? pipeline_extra : ""),
      0);
  mu_cfg_t o = {.file = file,
                .kafka = MU_KAFKA " topic_metadata_refresh_interval_ms = 500;",
                .db = db,
                .group = group,
                .topics = topics,
                .members = members,
                .pipeline = pipeline,
                .log = log,
                .plugin = plugin_extra};
  char *path = mu_write_cfg(c, &o);
  free(pipeline);
  return path;
}

/* The same with the one topic TOPIC. */
static char *write_cfg(mu_cluster_t *c, const char *file, const char *group,
                       int members, const char *log, const char *db,
                       const char *pipeline_extra, const char *plugin_extra) {
  return write_cfg_topics(c, file, "\"" TOPIC "\"", group, members, log, db,
                          pipeline_extra, plugin_extra);
}

static char *dir_file(mu_cluster_t *c, const char *name) {
  return tu_path(c->dir, name);
}

/* Run a host on cfg until it reaches the end offsets; returns its stats. */
static pipeline_stats_t run_to_end(const char *cfg) {
  return mu_run_to_end(cfg, 0, 60000);
}

/* Committed offsets of GROUP equal the end offsets of every partition. */
static void assert_committed_at_end(mu_cluster_t *c, const char *group,
                                    int partitions) {
  for (int p = 0; p < partitions; p++) {
    int64_t end = mu_end_offset(c, TOPIC, p);
    ck_assert_int_gt(end, 0);
    ck_assert_int_eq(mu_committed(c, group, TOPIC, p), end);
  }
}

/* N records over 3 partitions, of which M re-use an earlier event ID (some
 * on another partition). */
enum { N_RECORDS = 300, N_DUPS = 30 };

static void produce_with_duplicates(mu_cluster_t *c) {
  char id[32], value[64];
  for (int i = 0; i < N_RECORDS; i++) {
    int original = i < N_RECORDS - N_DUPS;
    int n = original ? i : (i * 7) % (N_RECORDS - N_DUPS);
    snprintf(id, sizeof(id), "evt-%04d", n);
    snprintf(value, sizeof(value), "order %d", i);
    mu_produce(c, TOPIC, i % 3, id, NULL, value);
  }
  mu_flush(c);
}

START_TEST(test_dedup_and_commit) {
  mu_cluster_t c;
  mu_start(&c, 3);
  mu_topic(&c, TOPIC, 3);
  produce_with_duplicates(&c);
  char *cfg =
      write_cfg(&c, "a.cfg", GROUP, 2, "calls.log", "dedup.db", NULL, NULL);
  pipeline_stats_t s = run_to_end(cfg);

  char *log = dir_file(&c, "calls.log");
  size_t n;
  mu_line_t *lines = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, N_RECORDS - N_DUPS);
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(lines, n), N_RECORDS - N_DUPS);
  ck_assert_uint_eq(s.handled, N_RECORDS - N_DUPS);
  /* At least the re-published ones; more when a rebalance redelivered
   * records whose commit the mock refused (it rejects commits during a
   * rebalance): those are absorbed by dedup, as the handled count shows. */
  ck_assert_uint_ge(s.duplicates, N_DUPS);
  assert_committed_at_end(&c, GROUP, 3);
  free(lines);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_restart_handles_nothing_again) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 3);
  produce_with_duplicates(&c);
  char *cfg =
      write_cfg(&c, "a.cfg", GROUP, 1, "calls.log", "dedup.db", NULL, NULL);
  char *log = dir_file(&c, "calls.log");
  size_t n;
  run_to_end(cfg);
  free(mu_read_lines(log, &n));
  ck_assert_uint_eq(n, N_RECORDS - N_DUPS);

  /* Same group: the committed offsets are at the end; nothing comes. */
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled + s.duplicates, 0);

  /* As after a crash between the SQLite commit and the Kafka commit: the
   * offsets go back to 0, every record is delivered again, and the dedup
   * marks make the plugin skip all of them. */
  for (int p = 0; p < 3; p++)
    mu_commit(&c, GROUP, TOPIC, p, 0);
  s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 0);
  ck_assert_uint_eq(s.duplicates, N_RECORDS);
  free(mu_read_lines(log, &n));
  ck_assert_uint_eq(n, N_RECORDS - N_DUPS);
  assert_committed_at_end(&c, GROUP, 3);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* Has every partition of the topic been committed up to end? */
static int committed_all(mu_cluster_t *c, int parts, int64_t end) {
  for (int p = 0; p < parts; p++)
    if (mu_committed(c, GROUP, TOPIC, p) != end)
      return 0;
  return 1;
}

/* Two hosts (one member each) in one group, each with its own dedup store;
 * one leaves mid-stream. Every record is handled exactly once overall. */
static void member_leaves(const char *assignor) {
  enum { PARTS = 4, RECORDS = 400 };
  mu_cluster_t c;
  char extra[256], id[32];
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  snprintf(
      extra, sizeof(extra),
      "max_batch = 10; kafka = { partition_assignment_strategy = \"%s\"; };",
      assignor);
  char *cfg_a =
      write_cfg(&c, "a.cfg", GROUP, 1, "a.log", "a.db", extra, "slow_ms = 5;");
  char *cfg_b =
      write_cfg(&c, "b.cfg", GROUP, 1, "b.log", "b.db", extra, "slow_ms = 5;");
  char *log_a = dir_file(&c, "a.log"), *log_b = dir_file(&c, "b.log");
  mu_host_t a, b;
  pipeline_stats_t sa, sb;
  size_t na = 0, nb = 0;
  mu_host_start(&a, cfg_a, 0);
  mu_host_start(&b, cfg_b, 0);
  /* Both members own partitions before the stream starts. */
  TU_WAIT_UNTIL((mu_host_stats(&a, &sa), mu_host_stats(&b, &sb),
                 sa.assigned > 0 && sb.assigned > 0 &&
                     sa.assigned + sb.assigned == PARTS),
                30000, "both members assigned");
  for (int i = 0; i < RECORDS; i++) {
    snprintf(id, sizeof(id), "evt-%04d", i);
    mu_produce(&c, TOPIC, i % PARTS, id, NULL, "order");
  }
  mu_flush(&c);
  /* Both are handling records: B leaves mid-stream. */
  TU_WAIT_UNTIL((free(mu_read_lines(log_a, &na)),
                 free(mu_read_lines(log_b, &nb)), na >= 20 && nb >= 20),
                30000, "both members handling records");
  mu_host_stop(&b);
  ck_assert_int_eq(b.status, 0);
  ck_assert_uint_lt(nb, RECORDS / 2); /* B left mid-stream */
  /* A takes over B's partitions from B's committed offsets. */
  TU_WAIT_UNTIL((free(mu_read_lines(log_a, &na)),
                 free(mu_read_lines(log_b, &nb)), na + nb >= RECORDS),
                60000, "every record handled");
  /* A commits its positions while it runs (a commit at shutdown may meet
   * a cooperative rebalance still settling: see README's caveat). */
  TU_WAIT_UNTIL(committed_all(&c, PARTS, RECORDS / PARTS), 30000,
                "every partition committed to its end");
  mu_host_stop(&a);
  ck_assert_int_eq(a.status, 0);

  mu_line_t *la = mu_read_lines(log_a, &na), *lb = mu_read_lines(log_b, &nb);
  mu_line_t *all = calloc(na + nb, sizeof(*all));
  memcpy(all, la, na * sizeof(*la));
  memcpy(all + na, lb, nb * sizeof(*lb));
  ck_assert_uint_eq(mu_assert_ok_ids_distinct(all, na + nb), RECORDS);
  for (int p = 0; p < PARTS; p++)
    ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, p), RECORDS / PARTS);
  mu_host_close(&a);
  mu_host_close(&b);
  free(all);
  free(la);
  free(lb);
  free(log_a);
  free(log_b);
  free(cfg_a);
  free(cfg_b);
  mu_stop(&c);
}

START_TEST(test_member_leaves_eager) {
  member_leaves("range");
}
END_TEST

START_TEST(test_member_leaves_cooperative) {
  member_leaves("cooperative-sticky");
}
END_TEST

/* 10 records with an eventId and 10 without, on one partition. */
static void produce_some_without_id(mu_cluster_t *c) {
  char id[32];
  for (int i = 0; i < 20; i++) {
    snprintf(id, sizeof(id), "evt-%d", i);
    mu_produce(c, TOPIC, 0, i % 2 ? NULL : id, NULL, "order");
  }
  mu_flush(c);
}

START_TEST(test_missing_id_process) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  produce_some_without_id(&c);
  char *cfg = write_cfg(&c, "a.cfg", GROUP, 1, "calls.log", "d.db",
                        "on_missing_id = \"process\";", NULL);
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 20);
  ck_assert_uint_eq(s.no_id, 10);
  ck_assert_uint_eq(s.failed, 0);
  /* Without an ID there is no dedup: a replay handles them again. */
  mu_commit(&c, GROUP, TOPIC, 0, 0);
  s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 10);
  ck_assert_uint_eq(s.duplicates, 10);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_missing_id_fail) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  produce_some_without_id(&c);
  char *cfg = write_cfg(&c, "a.cfg", GROUP, 1, "calls.log", "d.db",
                        "on_missing_id = \"fail\";", NULL);
  char *log = dir_file(&c, "calls.log");
  pipeline_stats_t s = run_to_end(cfg);
  size_t n;
  mu_line_t *lines = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 10);
  for (size_t i = 0; i < n; i++)
    ck_assert_str_ne(lines[i].event_id, "-");
  ck_assert_uint_eq(s.failed, 10);
  ck_assert_uint_eq(s.no_id, 10);
  assert_committed_at_end(&c, GROUP, 1);
  free(lines);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

static const mu_line_t *find_line(const mu_line_t *l, size_t n, int64_t off,
                                  unsigned attempt) {
  for (size_t i = 0; i < n; i++)
    if (l[i].offset == off && l[i].attempt == attempt)
      return &l[i];
  return NULL;
}

START_TEST(test_retry_then_ok_and_fail_does_not_block) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_produce(&c, TOPIC, 0, "evt-0", NULL, "order");
  mu_produce(&c, TOPIC, 0, "evt-1", NULL, "retry twice");
  mu_produce(&c, TOPIC, 0, "evt-2", NULL, "fail: bad amount");
  mu_produce(&c, TOPIC, 0, "evt-3", NULL, "order");
  mu_flush(&c);
  char *cfg = write_cfg(&c, "a.cfg", GROUP, 1, "calls.log", "d.db", NULL,
                        "retry_times = 2;");
  char *log = dir_file(&c, "calls.log");
  pipeline_stats_t s = run_to_end(cfg);
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 6); /* 1 + 3 attempts + 1 + 1 */
  const mu_line_t *a1 = find_line(l, n, 1, 1), *a2 = find_line(l, n, 1, 2),
                  *a3 = find_line(l, n, 1, 3);
  ck_assert_ptr_nonnull(a1);
  ck_assert_ptr_nonnull(a2);
  ck_assert_ptr_nonnull(a3);
  ck_assert_int_eq(a1->result, KHOST_RETRY);
  ck_assert_int_eq(a2->result, KHOST_RETRY);
  ck_assert_int_eq(a3->result, KHOST_OK);
  /* Backoff 40 ms then 80 ms, each with jitter down to half. */
  ck_assert_int_ge(a2->ms - a1->ms, 20);
  ck_assert_int_ge(a3->ms - a2->ms, 40);
  ck_assert_int_eq(find_line(l, n, 2, 1)->result, KHOST_FAIL);
  ck_assert_int_eq(find_line(l, n, 3, 1)->result, KHOST_OK);
  ck_assert_uint_eq(s.retries, 2);
  ck_assert_uint_eq(s.failed, 1);
  ck_assert_uint_eq(s.handled, 3);
  assert_committed_at_end(&c, GROUP, 1);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_retries_exhausted_become_fail) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_produce(&c, TOPIC, 0, "evt-0", NULL, "retry forever");
  mu_produce(&c, TOPIC, 0, "evt-1", NULL, "order");
  mu_flush(&c);
  char *cfg = write_cfg(&c, "a.cfg", GROUP, 1, "calls.log", "d.db",
                        "retry = { max = 2; backoff = \"10ms\"; };",
                        "retry_times = 100;");
  char *log = dir_file(&c, "calls.log");
  pipeline_stats_t s = run_to_end(cfg);
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 4); /* 3 attempts, then the next record */
  ck_assert_uint_eq(s.failed, 1);
  ck_assert_uint_eq(s.handled, 1);
  ck_assert_int_eq(find_line(l, n, 1, 1)->result, KHOST_OK);
  /* The failed record is marked: redelivered, it is skipped. */
  mu_commit(&c, GROUP, TOPIC, 0, 0);
  s = run_to_end(cfg);
  ck_assert_uint_eq(s.duplicates, 2);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

START_TEST(test_fatal_stops_without_committing_past_it) {
  mu_cluster_t c;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  mu_produce(&c, TOPIC, 0, "evt-0", NULL, "order");
  mu_produce(&c, TOPIC, 0, "evt-1", NULL, "order");
  mu_produce(&c, TOPIC, 0, "evt-2", NULL, "fatal: database gone");
  mu_produce(&c, TOPIC, 0, "evt-3", NULL, "order");
  mu_flush(&c);
  char *cfg = write_cfg(&c, "a.cfg", GROUP, 1, "calls.log", "d.db", NULL, NULL);
  mu_host_t h;
  pipeline_stats_t s;
  mu_host_start(&h, cfg, 1);
  mu_host_wait(&h, 30000);
  ck_assert_int_eq(h.status, 1);
  mu_host_stats(&h, &s);
  ck_assert_uint_eq(s.handled, 2);
  mu_host_close(&h);
  ck_assert_int_eq(mu_committed(&c, GROUP, TOPIC, 0), 2);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* The librdkafka configuration of a member: what khost owns, its
 * defaults, and the user's own values where the user set them. */
static rd_kafka_conf_t *member_conf_in(const char *kafka_extra,
                                       const char *pipeline_kafka, cfg_t *cfg) {
  char *dir = tu_tempdir(), *text = NULL, err[1024];
  ck_assert_int_ge(asprintf(&text,
                            "kafka = { bootstrap_servers = \"127.0.0.1:1\"; "
                            "%s };\n"
                            "pipelines = ( { name = \"orders\";\n"
                            "  group_id = \"" GROUP "\";\n"
                            "  topics = [ \"" TOPIC "\" ];\n"
                            "  kafka = { %s };\n"
                            "  plugin = \"log\"; dedup = false; } );\n",
                            kafka_extra, pipeline_kafka),
                   0);
  char *path = tu_write_file(dir, "khost.cfg", text);
  ck_assert_msg(cfg_load(cfg, path, err, sizeof(err)) == 0, "%s", err);
  pipeline_t p = {.env = {.cfg = cfg, .pc = &cfg->pipelines[0]}};
  rd_kafka_conf_t *conf =
      pipeline_kafka_conf(&p, KAFKA_MEMBER, err, sizeof(err));
  ck_assert_msg(conf != NULL, "%s", err);
  free(path);
  free(text);
  tu_rm_rf(dir);
  free(dir);
  return conf;
}

static rd_kafka_conf_t *member_conf(const char *kafka_extra, cfg_t *cfg) {
  return member_conf_in(kafka_extra, "", cfg);
}

static void assert_conf(rd_kafka_conf_t *conf, const char *name,
                        const char *want) {
  char value[256];
  size_t size = sizeof(value);
  ck_assert_int_eq(rd_kafka_conf_get(conf, name, value, &size),
                   RD_KAFKA_CONF_OK);
  ck_assert_msg(strcmp(value, want) == 0, "%s = %s, want %s", name, value,
                want);
}

/* librdkafka backs a partition's fetching off for a second once its
 * prefetch queue passes queued.min.messages: khost either shortens the
 * backoff (librdkafka >= 2.4) or lets the queue hold a second of records. */
static void assert_prefetch(rd_kafka_conf_t *conf) {
  char value[64];
  size_t size = sizeof(value);
  if (rd_kafka_conf_get(conf, "fetch.queue.backoff.ms", value, &size) ==
      RD_KAFKA_CONF_OK)
    assert_conf(conf, "fetch.queue.backoff.ms", "10");
  else
    assert_conf(conf, "queued.min.messages", "1000000");
}

START_TEST(test_member_kafka_conf) {
  cfg_t cfg;
  rd_kafka_conf_t *conf = member_conf("", &cfg);
  assert_conf(conf, "group.id", GROUP);
  assert_conf(conf, "enable.auto.commit", "false");
  assert_conf(conf, "enable.auto.offset.store", "false");
  /* librdkafka reads earliest and latest back as smallest and largest */
  assert_conf(conf, "auto.offset.reset", "smallest");
  assert_prefetch(conf);
  rd_kafka_conf_destroy(conf);
  cfg_free(&cfg);

  /* The user's values stand. */
  conf = member_conf("auto_offset_reset = \"latest\"; "
                     "queued_min_messages = 5000;",
                     &cfg);
  assert_conf(conf, "auto.offset.reset", "largest");
  assert_conf(conf, "queued.min.messages", "5000");
  rd_kafka_conf_destroy(conf);
  cfg_free(&cfg);
}
END_TEST

/* Who owns what, replayed from the lifecycle fixture's lines. */
typedef struct lc_replay {
  GHashTable *owner; /* "T[P]" -> "LABEL/MEMBER" owning it now */
  GHashTable *ever;  /* "T[P]" ever assigned */
  GHashTable *gone;  /* "LABEL/MEMBER" destroyed */
  size_t handled;
  int revokes; /* revoked() calls of the owner named when replaying */
} lc_replay_t;

/* assigned: nobody owns the partition (its previous owner revoked it
 * first); revoked: the caller owns it. */
static void lc_move(lc_replay_t *r, const char *who, gchar **parts,
                    int assigned, const char *line) {
  ck_assert_msg(parts[0], "no partitions: %s", line);
  for (gchar **p = parts; *p; p++) {
    const char *now = g_hash_table_lookup(r->owner, *p);
    if (assigned) {
      ck_assert_msg(!now, "%s while %s owns it", line, now);
      g_hash_table_insert(r->owner, g_strdup(*p), g_strdup(who));
      g_hash_table_add(r->ever, g_strdup(*p));
    } else {
      ck_assert_msg(now && strcmp(now, who) == 0, "%s, owned by %s", line,
                    now ? now : "nobody");
      g_hash_table_remove(r->owner, *p);
    }
  }
}

/* A member's destroy(): it owns nothing any more. */
static void lc_destroyed(lc_replay_t *r, const char *who) {
  GHashTableIter it;
  gpointer part, owner;
  g_hash_table_iter_init(&it, r->owner);
  while (g_hash_table_iter_next(&it, &part, &owner))
    ck_assert_msg(strcmp(owner, who) != 0, "%s destroyed still owning %s", who,
                  (char *)part);
  g_hash_table_add(r->gone, g_strdup(who));
}

static void lc_line(lc_replay_t *r, const char *line, const char *counted) {
  gchar **w = g_strsplit(line, " ", -1);
  const char *who = w[0] && w[1] ? w[1] : "";
  if (strcmp(w[0], "init") && strcmp(w[0], "fini") && strcmp(w[0], "create"))
    ck_assert_msg(!g_hash_table_contains(r->gone, who), "after destroy: %s",
                  line);
  if (strcmp(w[0], "assigned") == 0 || strcmp(w[0], "revoked") == 0) {
    int assigned = w[0][0] == 'a';
    lc_move(r, who, w + (assigned ? 2 : 3), assigned, line);
    r->revokes += !assigned && counted && strcmp(who, counted) == 0;
  } else if (strcmp(w[0], "handle") == 0) {
    gchar *part = g_strndup(w[2], (gsize)(strchr(w[2], '@') - w[2]));
    const char *now = g_hash_table_lookup(r->owner, part);
    ck_assert_msg(now && strcmp(now, who) == 0, "%s, owned by %s", line,
                  now ? now : "nobody");
    g_free(part);
    r->handled++;
  } else if (strcmp(w[0], "destroy") == 0) {
    lc_destroyed(r, who);
  }
  g_strfreev(w);
}

/* Replay the lifecycle log at path: init() first and fini() last, once
 * each; a partition is assigned() to one member at a time, before any of
 * its records reaches it, and revoked() before that member's destroy().
 * Returns the records handled, the partitions ever assigned and the
 * revoked() calls of `counted` (may be NULL). */
static void lc_replay(const char *path, const char *counted, size_t *handled,
                      guint *partitions, int *revokes) {
  char *text = tu_read_file(path);
  ck_assert_ptr_nonnull(text);
  gchar **lines = g_strsplit(g_strchomp(text), "\n", -1);
  guint n = g_strv_length(lines);
  lc_replay_t r = {
      .owner = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free),
      .ever = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
      .gone = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL)};
  ck_assert_uint_ge(n, 2);
  ck_assert_str_eq(lines[0], "init");
  ck_assert_str_eq(lines[n - 1], "fini");
  for (guint i = 1; i + 1 < n; i++) {
    ck_assert_msg(strcmp(lines[i], "init") && strcmp(lines[i], "fini"),
                  "line %u: %s", i, lines[i]);
    lc_line(&r, lines[i], counted);
  }
  ck_assert_uint_eq(g_hash_table_size(r.owner), 0);
  *handled = r.handled;
  *partitions = g_hash_table_size(r.ever);
  *revokes = r.revokes;
  g_hash_table_destroy(r.owner);
  g_hash_table_destroy(r.ever);
  g_hash_table_destroy(r.gone);
  g_strfreev(lines);
  free(text);
}

/* A config for the lifecycle fixture (its lines to LIFECYCLE_LOG). */
static char *lc_cfg(mu_cluster_t *c, const char *file, const char *label,
                    int members, const char *extra) {
  char *text = NULL, *plugin = tu_fixture("lifecycle");
  ck_assert_int_ge(
      asprintf(&text,
               "kafka = { bootstrap_servers = \"%s\";\n"
               "          session_timeout_ms = " MU_SESSION_TIMEOUT ";\n"
               "          heartbeat_interval_ms = " MU_HEARTBEAT "; };\n"
               "dedup = { path = \"%s/%s.db\"; };\n"
               "pipelines = ( { name = \"orders\"; group_id = \"%s\";\n"
               "  topics = [ \"" TOPIC "\" ]; members = %d; %s\n"
               "  plugin = \"%s\"; config = { label = \"%s\"; }; } );\n",
               c->bootstraps, c->dir, label, GROUP, members, extra, plugin,
               label),
      0);
  char *path = tu_write_file(c->dir, file, text);
  free(text);
  free(plugin);
  return path;
}

static void lc_produce(mu_cluster_t *c, int from, int n, int parts) {
  char id[32];
  for (int i = from; i < from + n; i++) {
    snprintf(id, sizeof(id), "evt-%04d", i);
    mu_produce(c, TOPIC, i % parts, id, NULL, "order");
  }
  mu_flush(c);
}

/* An ABI 1.1 plugin under two members: init() first and fini() last, once
 * each; every partition is assigned() to a member before its records reach
 * it and revoked() before the member's destroy(). */
START_TEST(test_plugin_partition_callbacks) {
  enum { PARTS = 4, RECORDS = 40 };
  mu_cluster_t c;
  size_t handled;
  guint parts;
  int revokes;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  lc_produce(&c, 0, RECORDS, PARTS);
  char *log = dir_file(&c, "lifecycle.log");
  ck_assert_int_eq(setenv("LIFECYCLE_LOG", log, 1), 0);
  char *cfg = lc_cfg(&c, "lc.cfg", "lc", 2, "");
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, RECORDS);
  lc_replay(log, NULL, &handled, &parts, &revokes);
  ck_assert_uint_eq(handled, RECORDS);
  ck_assert_uint_eq(parts, PARTS);
  free(cfg);
  free(log);
  mu_stop(&c);
}
END_TEST

/* A second host joins mid-stream under the cooperative assignor: the first
 * one's revoked() for the partitions that move comes before the second
 * one's assigned() for them, and every record is handled by the member
 * that owns its partition at the time. */
START_TEST(test_plugin_partitions_move) {
  enum { PARTS = 4, RECORDS = 40 };
  const char *coop =
      "kafka = { partition_assignment_strategy = \"cooperative-sticky\"; };";
  mu_cluster_t c;
  mu_host_t a, b;
  pipeline_stats_t sa, sb;
  size_t handled;
  guint parts;
  int revokes;
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  char *log = dir_file(&c, "lifecycle.log");
  ck_assert_int_eq(setenv("LIFECYCLE_LOG", log, 1), 0);
  char *cfg_a = lc_cfg(&c, "a.cfg", "a", 1, coop);
  char *cfg_b = lc_cfg(&c, "b.cfg", "b", 1, coop);
  mu_host_start(&a, cfg_a, 0);
  lc_produce(&c, 0, RECORDS, PARTS);
  TU_WAIT_UNTIL((mu_host_stats(&a, &sa), sa.handled == RECORDS), 30000,
                "the first host handles the first records");
  mu_host_start(&b, cfg_b, 0);
  TU_WAIT_UNTIL((mu_host_stats(&a, &sa), mu_host_stats(&b, &sb),
                 sa.assigned > 0 && sb.assigned > 0 &&
                     sa.assigned + sb.assigned == PARTS),
                30000, "both hosts own partitions");
  lc_produce(&c, RECORDS, RECORDS, PARTS);
  TU_WAIT_UNTIL((mu_host_stats(&a, &sa), mu_host_stats(&b, &sb),
                 sa.handled + sb.handled >= 2 * RECORDS),
                30000, "every record handled");
  mu_host_stop(&b);
  mu_host_stop(&a);
  ck_assert_int_eq(a.status, 0);
  ck_assert_int_eq(b.status, 0);
  mu_host_stats(&a, &sa);
  mu_host_stats(&b, &sb);
  mu_host_close(&a);
  mu_host_close(&b); /* the last one unloads the plugin: fini() */
  lc_replay(log, "a/0", &handled, &parts, &revokes);
  /* More when b was given records whose commit the mock refused during
   * the rebalance: its own dedup store has not seen them. */
  ck_assert_uint_eq(handled, sa.handled + sb.handled);
  ck_assert_uint_ge(handled, 2 * RECORDS);
  ck_assert_uint_eq(parts, PARTS);
  ck_assert_int_ge(revokes, 2); /* when b joined, and when a left */
  free(cfg_a);
  free(cfg_b);
  free(log);
  mu_stop(&c);
}
END_TEST

/* New partitions and topics are noticed at a metadata refresh: khost's
 * default interval (30 s, not librdkafka's 5 min) unless the user set one,
 * globally or for the pipeline. */
START_TEST(test_member_metadata_refresh) {
  cfg_t cfg;
  rd_kafka_conf_t *conf = member_conf("", &cfg);
  assert_conf(conf, "topic.metadata.refresh.interval.ms", "30000");
  rd_kafka_conf_destroy(conf);
  cfg_free(&cfg);
  conf = member_conf("topic_metadata_refresh_interval_ms = 120000;", &cfg);
  assert_conf(conf, "topic.metadata.refresh.interval.ms", "120000");
  rd_kafka_conf_destroy(conf);
  cfg_free(&cfg);
  conf = member_conf_in("topic_metadata_refresh_interval_ms = 120000;",
                        "topic_metadata_refresh_interval_ms = 5000;", &cfg);
  assert_conf(conf, "topic.metadata.refresh.interval.ms", "5000");
  rd_kafka_conf_destroy(conf);
  cfg_free(&cfg);
}
END_TEST

/* Distinct event IDs among the OK lines of a and b. */
static size_t distinct_ok(const mu_line_t *a, size_t na, const mu_line_t *b,
                          size_t nb) {
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
  for (size_t i = 0; i < na + nb; i++) {
    const mu_line_t *l = i < na ? &a[i] : &b[i - na];
    if (l->result == KHOST_OK)
      g_hash_table_add(seen, (gpointer)l->event_id);
  }
  size_t n = g_hash_table_size(seen);
  g_hash_table_destroy(seen);
  return n;
}

/* --exit-at-end with two hosts (one member each, each its own dedup store)
 * in one group: each commits only the partitions it owns, and each stops
 * once the group has committed every partition up to the end offset it
 * had at start, the other host's partitions included. */
START_TEST(test_exit_at_end_two_hosts) {
  enum { PARTS = 3, RECORDS = 300 };
  mu_cluster_t c;
  char id[32];
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, PARTS);
  for (int i = 0; i < RECORDS; i++) {
    snprintf(id, sizeof(id), "evt-%04d", i);
    mu_produce(&c, TOPIC, i % PARTS, id, NULL, "order");
  }
  mu_flush(&c);
  /* Slow enough that both join before either is done: the mock
   * coordinator waits 3 s for members on a group's first join. */
  char *cfg_a = write_cfg(&c, "a.cfg", GROUP, 1, "a.log", "a.db",
                          "max_batch = 10;", "slow_ms = 5;");
  char *cfg_b = write_cfg(&c, "b.cfg", GROUP, 1, "b.log", "b.db",
                          "max_batch = 10;", "slow_ms = 5;");
  char *log_a = dir_file(&c, "a.log"), *log_b = dir_file(&c, "b.log");
  mu_host_t a, b;
  mu_host_start(&a, cfg_a, 1);
  mu_host_start(&b, cfg_b, 1);
  mu_host_wait(&a, 60000);
  mu_host_wait(&b, 60000);
  ck_assert_int_eq(a.status, 0);
  ck_assert_int_eq(b.status, 0);

  size_t na, nb;
  mu_line_t *la = mu_read_lines(log_a, &na), *lb = mu_read_lines(log_b, &nb);
  /* Both owned partitions: neither committed every partition itself. */
  ck_assert_uint_gt(na, 0);
  ck_assert_uint_gt(nb, 0);
  ck_assert_uint_eq(distinct_ok(la, na, lb, nb), RECORDS);
  assert_committed_at_end(&c, GROUP, PARTS);
  mu_host_close(&a);
  mu_host_close(&b);
  free(la);
  free(lb);
  free(log_a);
  free(log_b);
  free(cfg_a);
  free(cfg_b);
  mu_stop(&c);
}
END_TEST

/* --exit-at-end on a "^regex" subscription: the end offsets are those of
 * every matching topic (not of a topic named "^orders-.*"), and only
 * those. */
START_TEST(test_exit_at_end_regex_topic) {
  static const char *topics[] = {"orders-eu", "orders-us", "payments"};
  mu_cluster_t c;
  char id[32];
  mu_start(&c, 1);
  for (int t = 0; t < 3; t++) {
    mu_topic(&c, topics[t], 2);
    for (int i = 0; i < 40; i++) {
      snprintf(id, sizeof(id), "%s-%03d", topics[t], i);
      mu_produce(&c, topics[t], i % 2, id, NULL, "order");
    }
  }
  mu_flush(&c);
  char *cfg = write_cfg_topics(&c, "a.cfg", "\"^orders-.*\"", GROUP, 2,
                               "calls.log", "dedup.db", NULL, NULL);
  pipeline_stats_t s = run_to_end(cfg);
  ck_assert_uint_eq(s.handled, 80);
  char *log = dir_file(&c, "calls.log");
  size_t n;
  mu_line_t *l = mu_read_lines(log, &n);
  ck_assert_uint_eq(n, 80);
  for (size_t i = 0; i < n; i++)
    ck_assert_str_ne(l[i].topic, "payments");
  for (int t = 0; t < 2; t++)
    for (int p = 0; p < 2; p++)
      ck_assert_int_eq(mu_committed(&c, GROUP, topics[t], p), 20);
  ck_assert_int_lt(mu_committed(&c, GROUP, "payments", 0), 0);
  free(l);
  free(log);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A topic created while khost runs that matches its ^pattern is
 * subscribed at the next metadata refresh and consumed. (librdkafka
 * 2.0.2's mock cluster cannot add partitions to a topic: CreatePartitions
 * gets no answer, and creating the topic again is refused; a new topic
 * takes the same path, a refresh, then a rebalance.) The configs here set
 * a 500 ms refresh; test_member_metadata_refresh checks khost's default. */
START_TEST(test_new_topic_matching_pattern) {
  enum { PER_PARTITION = 10 };
  mu_cluster_t c;
  mu_host_t h;
  char id[32];
  mu_start(&c, 1);
  mu_topic(&c, "orders-eu", 2);
  for (int i = 0; i < 2 * PER_PARTITION; i++) {
    snprintf(id, sizeof(id), "eu-%03d", i);
    mu_produce(&c, "orders-eu", i % 2, id, NULL, "order");
  }
  mu_flush(&c);
  char *cfg = write_cfg_topics(&c, "a.cfg", "\"^orders-.*\"", GROUP, 1,
                               "calls.log", "dedup.db", NULL, NULL);
  mu_host_start(&h, cfg, 0);
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, "orders-eu", 0) == PER_PARTITION &&
                    mu_committed(&c, GROUP, "orders-eu", 1) == PER_PARTITION,
                30000, "orders-eu committed at its end");
  mu_topic(&c, "orders-us", 2);
  for (int i = 0; i < 2 * PER_PARTITION; i++) {
    snprintf(id, sizeof(id), "us-%03d", i);
    mu_produce(&c, "orders-us", i % 2, id, NULL, "order");
  }
  mu_flush(&c);
  TU_WAIT_UNTIL(mu_committed(&c, GROUP, "orders-us", 0) == PER_PARTITION &&
                    mu_committed(&c, GROUP, "orders-us", 1) == PER_PARTITION,
                30000, "orders-us, created while khost runs, committed");
  mu_host_stop(&h);
  ck_assert_int_eq(h.status, 0);
  pipeline_stats_t st;
  mu_host_stats(&h, &st);
  ck_assert_uint_eq(st.handled, 4 * PER_PARTITION);
  mu_host_close(&h);
  free(cfg);
  mu_stop(&c);
}
END_TEST

/* A pattern that matches no topic: --exit-at-end cannot know where the
 * end is and refuses to start, naming the pattern, as for a missing
 * topic. */
START_TEST(test_exit_at_end_regex_matching_nothing) {
  mu_cluster_t c;
  cfg_t cfg;
  host_t *h = NULL;
  host_opts_t opts = {.exit_at_end = 1};
  char err[4096] = "";
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 1);
  char *path = write_cfg_topics(&c, "a.cfg", "\"^refunds-.*\"", GROUP, 1,
                                "calls.log", "dedup.db", NULL, NULL);
  ck_assert_msg(cfg_load(&cfg, path, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(host_open(&h, &cfg, &opts, err, sizeof(err)) == 0, "%s", err);
  ck_assert_int_eq(host_start(h, err, sizeof(err)), HOST_EXIT_CONFIG);
  ck_assert_str_eq(err, "orders: topic pattern ^refunds-.* matches no topic "
                        "in the cluster");
  host_close(h);
  cfg_free(&cfg);
  free(path);
  mu_stop(&c);
}
END_TEST

Suite *host_suite(void) {
  Suite *s = suite_create("host");
  /* Each test a case of its own, run beside the others; the longest
   * first. */
  TU_CASE(s, test_restart_handles_nothing_again, 120, "mock-cluster");
  TU_CASE(s, test_member_leaves_cooperative, 120, "mock-cluster");
  TU_CASE(s, test_exit_at_end_two_hosts, 120, "mock-cluster");
  TU_CASE(s, test_member_leaves_eager, 120, "mock-cluster");
  TU_CASE(s, test_dedup_and_commit, 120, "mock-cluster");
  TU_CASE(s, test_plugin_partitions_move, 120, "plugin-callbacks");
  TU_CASE(s, test_plugin_partition_callbacks, 120, "plugin-callbacks");
  TU_CASE(s, test_new_topic_matching_pattern, 120, "mock-cluster");
  TU_CASE(s, test_member_metadata_refresh, 120, "mock-cluster");
  TU_CASE(s, test_retries_exhausted_become_fail, 120, "mock-cluster");
  TU_CASE(s, test_exit_at_end_regex_topic, 120, "mock-cluster");
  TU_CASE(s, test_missing_id_process, 120, "mock-cluster");
  TU_CASE(s, test_retry_then_ok_and_fail_does_not_block, 120, "mock-cluster");
  TU_CASE(s, test_missing_id_fail, 120, "mock-cluster");
  TU_CASE(s, test_fatal_stops_without_committing_past_it, 120, "mock-cluster");
  TU_CASE(s, test_member_kafka_conf, 120, "mock-cluster");
  TU_CASE(s, test_exit_at_end_regex_matching_nothing, 120, "mock-cluster");
  return s;
}
