/*
 * kafka_client: the librdkafka configuration of each kind of client, and
 * where a client's librdkafka log lines and callbacks go. No broker: the
 * clients point at a closed port.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kafka_client.h"
#include "log.h"
#include "testutil.h"

#define NOWHERE "127.0.0.1:1"

static cfg_prop_t g_global[] = {
    {.name = "bootstrap.servers", .value = NOWHERE, .line = 2},
    {.name = "auto.offset.reset", .value = "latest", .line = 3},
};
static cfg_prop_t g_override[] = {
    {.name = "fetch.wait.max.ms", .value = "7", .line = 9},
};
static cfg_pipeline_t g_pc = {
    .name = "orders",
    .group_id = "orders-group",
    .kafka = g_override,
    .n_kafka = 1,
};
static cfg_t g_cfg = {
    .path = "khost.cfg",
    .kafka = g_global,
    .n_kafka = 2,
};

static rd_kafka_conf_t *conf_for(kafka_role_t role) {
  char err[512];
  kafka_settings_t ks = {.cfg = &g_cfg, .pc = &g_pc};
  rd_kafka_conf_t *conf = kafka_conf_new(&ks, role, err, sizeof(err));
  ck_assert_msg(conf != NULL, "%s", err);
  return conf;
}

/* The value of name in conf, or NULL when conf has none (a topic
 * property before any topic property is set). */
static char *get_or_null(rd_kafka_conf_t *conf, const char *name) {
  static char value[256];
  size_t size = sizeof(value);
  rd_kafka_conf_res_t res = rd_kafka_conf_get(conf, name, value, &size);
  ck_assert_msg(res == RD_KAFKA_CONF_OK || res == RD_KAFKA_CONF_UNKNOWN,
                "%s: %d", name, res);
  return res == RD_KAFKA_CONF_OK ? value : NULL;
}

static char *get(rd_kafka_conf_t *conf, const char *name) {
  char *value = get_or_null(conf, name);
  ck_assert_msg(value != NULL, "%s is not set", name);
  return value;
}

/* librdkafka's own default of name, as rd_kafka_conf_get() spells it. */
static char *default_of(const char *name) {
  rd_kafka_conf_t *conf = kafka_conf_empty();
  char *value = strdup(get(conf, name));
  rd_kafka_conf_destroy(conf);
  return value;
}

/* Neither set by khost nor by the user. */
static void assert_untouched(rd_kafka_conf_t *conf, const char *name,
                             const char * not ) {
  const char *value = get_or_null(conf, name);
  ck_assert_msg(!value || strcmp(value, not ) != 0, "%s = %s", name, value);
}

START_TEST(test_member_gets_khost_offset_management) {
  rd_kafka_conf_t *conf = conf_for(KAFKA_MEMBER);
  ck_assert_str_eq(get(conf, "group.id"), "orders-group");
  ck_assert_str_eq(get(conf, "enable.auto.commit"), "false");
  ck_assert_str_eq(get(conf, "enable.auto.offset.store"), "false");
  ck_assert_str_eq(get(conf, "enable.partition.eof"), "false");
  ck_assert_str_eq(get(conf, "topic.metadata.refresh.interval.ms"), "30000");
  /* The user's values win over khost's defaults, overrides apply. */
  ck_assert_str_eq(get(conf, "auto.offset.reset"), "largest");
  ck_assert_str_eq(get(conf, "fetch.wait.max.ms"), "7");
  ck_assert_str_eq(get(conf, "bootstrap.servers"), NOWHERE);
  rd_kafka_conf_destroy(conf);
}
END_TEST

/* memory_limit shared by every member of every pipeline: 15/16 of each
 * member's share as its librdkafka prefetch byte limit, 1/16 for its
 * batches in the air. */
START_TEST(test_prefetch_limit_is_a_share_of_memory_limit) {
  cfg_pipeline_t pipes[2] = {{.members = 3}, {.members = 1}};
  g_cfg.pipelines = pipes;
  g_cfg.n_pipelines = 2;
  g_cfg.memory_limit = 2LL << 30;
  rd_kafka_conf_t *conf = conf_for(KAFKA_MEMBER);
  /* 2 GB over 4 members: 512 MB each, 480 MB of it to prefetch. */
  ck_assert_str_eq(get(conf, "queued.max.messages.kbytes"), "491520");
  ck_assert_uint_eq(kafka_air_bytes(&g_cfg), 32u << 20);
  rd_kafka_conf_destroy(conf);
  /* Within librdkafka's range: at most 2097151 KB, at least 1 KB. */
  pipes[0].members = pipes[1].members = 1;
  g_cfg.memory_limit = 8LL << 30;
  ck_assert_int_eq(kafka_prefetch_kbytes(&g_cfg), 2097151);
  g_cfg.memory_limit = 1;
  ck_assert_int_eq(kafka_prefetch_kbytes(&g_cfg), 1);
  /* Not a member: librdkafka's default stays. */
  g_cfg.memory_limit = 2LL << 30;
  char *dflt = default_of("queued.max.messages.kbytes");
  conf = conf_for(KAFKA_CONSUMER);
  ck_assert_str_eq(get(conf, "queued.max.messages.kbytes"), dflt);
  rd_kafka_conf_destroy(conf);
  free(dflt);
}
END_TEST

START_TEST(test_users_prefetch_limit_wins) {
  g_override[0].name = "queued.max.messages.kbytes";
  g_override[0].value = "4096";
  g_cfg.memory_limit = 2LL << 30;
  rd_kafka_conf_t *conf = conf_for(KAFKA_MEMBER);
  ck_assert_str_eq(get(conf, "queued.max.messages.kbytes"), "4096");
  rd_kafka_conf_destroy(conf);
}
END_TEST

START_TEST(test_consumer_defaults_to_earliest) {
  g_global[1].name = "session.timeout.ms";
  g_global[1].value = "6000";
  rd_kafka_conf_t *conf = conf_for(KAFKA_CONSUMER);
  ck_assert_str_eq(get(conf, "auto.offset.reset"), "smallest");
  char *commit = default_of("enable.auto.commit");
  /* Not a member: khost's offset settings are not its business. */
  ck_assert_str_eq(get(conf, "enable.auto.commit"), commit);
  free(commit);
  rd_kafka_conf_destroy(conf);
}
END_TEST

START_TEST(test_admin_gets_only_the_users_properties) {
  g_global[1].name = "session.timeout.ms";
  g_global[1].value = "6000";
  rd_kafka_conf_t *conf = conf_for(KAFKA_ADMIN);
  assert_untouched(conf, "auto.offset.reset", "smallest");
  ck_assert_str_eq(get(conf, "session.timeout.ms"), "6000");
  ck_assert_str_eq(get(conf, "fetch.wait.max.ms"), "7");
  rd_kafka_conf_destroy(conf);
}
END_TEST

START_TEST(test_producer_leaves_out_consumer_only_properties) {
  g_global[1].value = "earliest";
  rd_kafka_conf_t *conf = conf_for(KAFKA_PRODUCER);
  assert_untouched(conf, "auto.offset.reset", "smallest");
  assert_untouched(conf, "fetch.wait.max.ms", "7");
  ck_assert_str_eq(get(conf, "bootstrap.servers"), NOWHERE);
  rd_kafka_conf_destroy(conf);
}
END_TEST

START_TEST(test_refused_property_names_file_and_line) {
  char err[512];
  g_override[0].name = "fetch.wait.max.ms";
  g_override[0].value = "not a number";
  kafka_settings_t ks = {.cfg = &g_cfg, .pc = &g_pc};
  ck_assert_ptr_null(kafka_conf_new(&ks, KAFKA_MEMBER, err, sizeof(err)));
  ck_assert_msg(strncmp(err, "khost.cfg:9: kafka property fetch.wait.max.ms: ",
                        strlen("khost.cfg:9: kafka property "
                               "fetch.wait.max.ms: ")) == 0,
                "%s", err);
}
END_TEST

START_TEST(test_bad_pair_says_what_was_expected) {
  char err[512];
  rd_kafka_conf_t *conf = kafka_conf_empty();
  ck_assert_int_eq(kafka_conf_set_pair(conf, "acks", err, sizeof(err)), -1);
  ck_assert_str_eq(err, "expected name=value");
  ck_assert_int_eq(kafka_conf_set_pair(conf, "acks=all", err, sizeof(err)), 0);
  ck_assert_str_eq(get(conf, "acks"), "-1");
  rd_kafka_conf_destroy(conf);
}
END_TEST

/* ---------------------------------------------------- logs, callbacks */

static int g_log_fd = -1;
static char *g_log_path;

static void capture_log(void) {
  char *dir = tu_tempdir();
  ck_assert_int_ge(asprintf(&g_log_path, "%s/log", dir), 0);
  free(dir);
  g_log_fd = open(g_log_path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
  ck_assert_int_ge(g_log_fd, 0);
  log_set_fd(g_log_fd);
}

static char *captured(void) {
  return tu_read_file(g_log_path);
}

static void end_capture(void) {
  log_set_fd(2);
  close(g_log_fd);
  unlink(g_log_path);
  free(g_log_path);
  g_log_path = NULL;
}

START_TEST(test_log_lines_go_under_the_clients_name) {
  char err[512];
  capture_log();
  rd_kafka_conf_t *conf = kafka_conf_empty();
  ck_assert_int_eq(
      kafka_conf_set(conf, "bootstrap.servers", NOWHERE, err, sizeof(err)), 0);
  /* A consumer property on a producer: librdkafka warns (CONFWARN) while
   * the client is created. */
  ck_assert_int_eq(
      kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err)),
      0);
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_PRODUCER, conf, "orders/0", NULL, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  kafka_destroy(rk);
  char *log = captured();
  ck_assert_msg(strstr(log, "[orders/0] librdkafka CONFWARN: ") != NULL, "%s",
                log);
  free(log);
  end_capture();
}
END_TEST

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  int *seen = kafka_ctx(opaque);
  (void)rk, (void)err, (void)reason;
  (*seen)++;
}

START_TEST(test_callbacks_get_their_ctx) {
  char err[512];
  int seen = 0;
  rd_kafka_conf_t *conf = kafka_conf_empty();
  ck_assert_int_eq(
      kafka_conf_set(conf, "bootstrap.servers", NOWHERE, err, sizeof(err)), 0);
  rd_kafka_conf_set_error_cb(conf, on_error);
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_PRODUCER, conf, "gen", &seen, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  /* The closed port: "all brokers down" reaches the error callback. */
  for (int64_t end = tu_mono_ms() + 20000; !seen && tu_mono_ms() < end;)
    rd_kafka_poll(rk, 100);
  ck_assert_int_gt(seen, 0);
  kafka_destroy(rk);
}
END_TEST

START_TEST(test_refused_client_says_why) {
  char err[512];
  rd_kafka_conf_t *conf = kafka_conf_empty();
  /* Idempotence needs acks=all: librdkafka refuses the client. */
  ck_assert_int_eq(
      kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)), 0);
  ck_assert_int_eq(kafka_conf_set(conf, "acks", "1", err, sizeof(err)), 0);
  ck_assert_ptr_null(
      kafka_new(RD_KAFKA_PRODUCER, conf, "gen", NULL, err, sizeof(err)));
  ck_assert_msg(strstr(err, "acks") != NULL, "%s", err);
}
END_TEST

static void reset_props(void) {
  g_global[1].name = "auto.offset.reset";
  g_global[1].value = "latest";
  g_override[0].name = "fetch.wait.max.ms";
  g_override[0].value = "7";
  g_cfg.pipelines = NULL;
  g_cfg.n_pipelines = 0;
  g_cfg.memory_limit = 0;
}

Suite *kafka_client_suite(void) {
  Suite *s = suite_create("kafka_client");
  TCase *tc = tcase_create("conf");
  tcase_add_checked_fixture(tc, reset_props, NULL);
  tcase_add_test(tc, test_member_gets_khost_offset_management);
  tcase_add_test(tc, test_prefetch_limit_is_a_share_of_memory_limit);
  tcase_add_test(tc, test_users_prefetch_limit_wins);
  tcase_add_test(tc, test_consumer_defaults_to_earliest);
  tcase_add_test(tc, test_admin_gets_only_the_users_properties);
  tcase_add_test(tc, test_producer_leaves_out_consumer_only_properties);
  tcase_add_test(tc, test_refused_property_names_file_and_line);
  tcase_add_test(tc, test_bad_pair_says_what_was_expected);
  suite_add_tcase(s, tc);
  tc = tcase_create("client");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_log_lines_go_under_the_clients_name);
  tcase_add_test(tc, test_callbacks_get_their_ctx);
  tcase_add_test(tc, test_refused_client_says_why);
  suite_add_tcase(s, tc);
  return s;
}
