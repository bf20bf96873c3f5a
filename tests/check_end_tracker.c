/*
 * end_tracker: the end offsets read at start, progress reported by this
 * process, and the watch of the group's committed offsets, against
 * librdkafka's mock cluster (no members: nothing joins the group but the
 * test's own committer).
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "end_tracker.h"
#include "mockutil.h"
#include "testutil.h"

#define TOPIC "orders"
#define GROUP "orders-group"

/* What the tracker called back, and the stop its watch sleeps on. */
typedef struct hooked {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int at_end_calls, partitions, stop;
} hooked_t;

static void at_end(void *ctx, int partitions) {
  hooked_t *h = ctx;
  pthread_mutex_lock(&h->mu);
  h->at_end_calls++;
  h->partitions = partitions;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
}

static int sleep_hook(void *ctx, int64_t ms) {
  hooked_t *h = ctx;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&h->mu);
  while (!h->stop && pthread_cond_timedwait(&h->cond, &h->mu, &until) == 0)
    ;
  int stop = h->stop;
  pthread_mutex_unlock(&h->mu);
  return stop;
}

/* Wait (deadline) until at_end was called; returns the calls. */
static int wait_at_end(hooked_t *h, int64_t timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  pthread_mutex_lock(&h->mu);
  while (h->at_end_calls == 0 && tu_mono_ms() < deadline) {
    pthread_mutex_unlock(&h->mu);
    sleep_hook(h, 50);
    pthread_mutex_lock(&h->mu);
  }
  int calls = h->at_end_calls;
  pthread_mutex_unlock(&h->mu);
  return calls;
}

static void stop_hooks(hooked_t *h) {
  pthread_mutex_lock(&h->mu);
  h->stop = 1;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
}

static mu_cluster_t g_c;
static hooked_t g_h;
static end_tracker_t *g_t; /* closed by teardown, also after a failure */
static char *g_topics[] = {TOPIC};
static cfg_pipeline_t g_pc = {
    .name = "orders",
    .group_id = GROUP,
    .topics = g_topics,
    .n_topics = 1,
};
static cfg_t g_cfg = {.path = "khost.cfg"};

static void setup(void) {
  mu_start(&g_c, 1);
  mu_topic(&g_c, TOPIC, 2);
  for (int i = 0; i < 3; i++)
    mu_produce(&g_c, TOPIC, 0, NULL, NULL, "a");
  mu_produce(&g_c, TOPIC, 1, NULL, NULL, "b");
  mu_flush(&g_c);
  memset(&g_h, 0, sizeof(g_h));
  pthread_mutex_init(&g_h.mu, NULL);
  pthread_cond_init(&g_h.cond, NULL);
}

static void teardown(void) {
  stop_hooks(&g_h);
  end_tracker_close(g_t);
  g_t = NULL;
  pthread_cond_destroy(&g_h.cond);
  pthread_mutex_destroy(&g_h.mu);
  mu_stop(&g_c);
}

static end_tracker_t *open_tracker(void) {
  char err[512];
  kafka_settings_t ks = {
      .cfg = &g_cfg, .pc = &g_pc, .bootstrap_servers = g_c.bootstraps};
  end_tracker_hooks_t hooks = {
      .at_end = at_end, .sleep = sleep_hook, .ctx = &g_h};
  ck_assert_msg(
      end_tracker_open(&g_t, &ks, "orders", &hooks, err, sizeof(err)) == 0,
      "%s", err);
  ck_assert_int_eq(end_tracker_total(g_t), 2);
  return g_t;
}

START_TEST(test_progress_to_the_end_offsets_stops_once) {
  end_tracker_t *t = open_tracker();
  end_tracker_progress(t, TOPIC, 0, 2);
  end_tracker_progress(t, TOPIC, 1, 1);
  ck_assert_int_eq(end_tracker_reached(t), 0);
  ck_assert_int_eq(g_h.at_end_calls, 0);
  end_tracker_progress(t, TOPIC, 0, 3);
  ck_assert_int_eq(end_tracker_reached(t), 1);
  end_tracker_progress(t, TOPIC, 0, 4); /* again: nothing new */
  ck_assert_int_eq(g_h.at_end_calls, 1);
  ck_assert_int_eq(g_h.partitions, 2);
}
END_TEST

/* Another host owns the partitions: its commits count. */
START_TEST(test_group_commits_count) {
  char err[512];
  end_tracker_t *t = open_tracker();
  ck_assert_msg(end_tracker_watch_group(t, err, sizeof(err)) == 0, "%s", err);
  end_tracker_progress(t, TOPIC, 1, 1);
  ck_assert_int_eq(end_tracker_reached(t), 0);
  mu_commit(&g_c, GROUP, TOPIC, 0, 3);
  ck_assert_int_eq(wait_at_end(&g_h, 15000), 1);
  ck_assert_int_eq(end_tracker_reached(t), 1);
}
END_TEST

/* An offset past the log's end is out of range, not the end. */
START_TEST(test_group_offset_past_the_end_does_not_count) {
  char err[512];
  end_tracker_t *t = open_tracker();
  ck_assert_msg(end_tracker_watch_group(t, err, sizeof(err)) == 0, "%s", err);
  end_tracker_progress(t, TOPIC, 1, 1);
  mu_commit(&g_c, GROUP, TOPIC, 0, 9);
  /* The watch reads once a second: three rounds see the commit. */
  ck_assert_int_eq(wait_at_end(&g_h, 3500), 0);
  ck_assert_int_eq(end_tracker_reached(t), 0);
  mu_commit(&g_c, GROUP, TOPIC, 0, 3);
  ck_assert_int_eq(wait_at_end(&g_h, 15000), 1);
}
END_TEST

START_TEST(test_missing_topic_is_an_error) {
  char err[512];
  end_tracker_t *t = NULL;
  char *topics[] = {"no-such-topic"};
  cfg_pipeline_t pc = g_pc;
  pc.topics = topics;
  kafka_settings_t ks = {
      .cfg = &g_cfg, .pc = &pc, .bootstrap_servers = g_c.bootstraps};
  end_tracker_hooks_t hooks = {
      .at_end = at_end, .sleep = sleep_hook, .ctx = &g_h};
  ck_assert_int_eq(
      end_tracker_open(&t, &ks, "orders", &hooks, err, sizeof(err)), -1);
  ck_assert_msg(strncmp(err, "orders: ", 8) == 0 &&
                    strstr(err, "no-such-topic") != NULL,
                "%s", err);
}
END_TEST

Suite *end_tracker_suite(void) {
  Suite *s = suite_create("end_tracker");
  /* Each test against a mock cluster of its own, a case of its own (tagged
   * "tracker"), run beside the others (tests/runner.c). */
  const TTest *tests[] = {test_progress_to_the_end_offsets_stops_once,
                          test_group_commits_count,
                          test_group_offset_past_the_end_does_not_count,
                          test_missing_topic_is_an_error};
  for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
    TCase *tc = tu_case(s, tests[i]->name + strlen("test_"), 60, "tracker");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, tests[i]);
  }
  return s;
}
