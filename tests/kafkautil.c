#include "kafkautil.h"

#include <check.h>
#include <errno.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define KU_TIMEOUT_MS 30000
/* A Kafka tool is a JVM start plus a few requests. */
#define KU_TOOL_TIMEOUT_MS 90000
#define KU_GROUP_COMMAND                                                       \
  "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"

const char *ku_broker_script(void) {
  const char *s = getenv("KHOST_KAFKA_BROKER");
  return s && *s ? s : TOP_SRCDIR "/tests/kafka/broker";
}

int ku_nodes(void) {
  const char *s = getenv("KHOST_KAFKA_NODES");
  return s && atoi(s) > 0 ? atoi(s) : 1;
}

/* Deliveries that failed since the last ku_flush(), and the last reason.
 * Delivery reports are served on the thread that polls the producer. */
static int g_failed_deliveries;
static char g_delivery_error[256];

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  if (!m->err)
    return;
  g_failed_deliveries++;
  snprintf(g_delivery_error, sizeof(g_delivery_error), "%s [%d]: %s",
           rd_kafka_topic_name(m->rkt), (int)m->partition,
           rd_kafka_err2str(m->err));
}

void ku_flush(mu_cluster_t *c) {
  /* Longer than mu_flush(): a partition may be changing leader. */
  ck_assert_int_eq(rd_kafka_flush(c->producer, 60000), 0);
  ck_assert_msg(g_failed_deliveries == 0, "%d record(s) not produced: %s",
                g_failed_deliveries, g_delivery_error);
}

void ku_connect(mu_cluster_t *c) {
  char errstr[512];
  const char *bootstrap = getenv("KHOST_KAFKA_BOOTSTRAP");
  memset(c, 0, sizeof(*c));
  ck_assert_msg(bootstrap && *bootstrap,
                "KHOST_KAFKA_BOOTSTRAP is not set: run `make check-kafka`, "
                "or start a cluster with tests/kafka/broker start and set "
                "KHOST_KAFKA_BOOTSTRAP=$(tests/kafka/broker bootstrap)");
  c->bootstraps = bootstrap;
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
  rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
  /* No record may be lost or doubled by the producer itself, even while a
   * broker dies: only khost's behaviour is under test. */
  rd_kafka_conf_set(conf, "acks", "all", NULL, 0);
  rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  g_failed_deliveries = 0;
  c->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  ck_assert_msg(c->producer != NULL, "%s", errstr);
  c->dir = tu_tempdir();
  ck_assert_ptr_nonnull(c->dir);
}

/* ------------------------------------------------------------ topics */

static void create_topic(mu_cluster_t *c, const char *topic, int partitions) {
  char errstr[512], isr[8];
  int rf = ku_nodes() >= 3 ? 3 : 1;
  snprintf(isr, sizeof(isr), "%d", rf > 1 ? 2 : 1);
  rd_kafka_NewTopic_t *nt =
      rd_kafka_NewTopic_new(topic, partitions, rf, errstr, sizeof(errstr));
  ck_assert_msg(nt != NULL, "%s: %s", topic, errstr);
  rd_kafka_NewTopic_set_config(nt, "min.insync.replicas", isr);
  rd_kafka_AdminOptions_t *opts =
      rd_kafka_AdminOptions_new(c->producer, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(opts, KU_TIMEOUT_MS, errstr,
                                              sizeof(errstr));
  rd_kafka_queue_t *q = rd_kafka_queue_new(c->producer);
  rd_kafka_CreateTopics(c->producer, &nt, 1, opts, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, KU_TIMEOUT_MS * 2);
  ck_assert_msg(ev != NULL, "%s: no answer to CreateTopics", topic);
  ck_assert_msg(!rd_kafka_event_error(ev), "%s: CreateTopics: %s", topic,
                rd_kafka_event_error_string(ev));
  size_t n;
  const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
      rd_kafka_event_CreateTopics_result(ev), &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_msg(rd_kafka_topic_result_error(res[0]) == 0,
                "%s: CreateTopics: %s", topic,
                rd_kafka_topic_result_error_string(res[0]));
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_NewTopic_destroy(nt);
}

/* Metadata of one topic from rk; NULL while it is not known. Free with
 * rd_kafka_metadata_destroy(). */
static const rd_kafka_metadata_t *topic_metadata(rd_kafka_t *rk,
                                                 const char *topic) {
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
  rd_kafka_topic_destroy(rkt);
  if (e)
    return NULL;
  if (md->topic_cnt != 1 || md->topics[0].err) {
    rd_kafka_metadata_destroy(md);
    return NULL;
  }
  return md;
}

/* The broker at address (host:port) knows topic and a leader for each of
 * its partitions. A fresh client's first metadata request goes to its
 * only bootstrap broker. */
static int broker_knows(const char *address, const char *topic,
                        int partitions) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", address, NULL, 0);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  ck_assert_msg(rk != NULL, "%s", errstr);
  const rd_kafka_metadata_t *md = topic_metadata(rk, topic);
  int ok = md && md->topics[0].partition_cnt == partitions;
  for (int i = 0; ok && i < partitions; i++)
    ok = md->topics[0].partitions[i].err == 0 &&
         md->topics[0].partitions[i].leader >= 0;
  if (md)
    rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  return ok;
}

/* Every broker of the bootstrap list knows the topic: a client asking any
 * of them (khost's end-offset query, a producer) sees every partition. */
static int topic_ready(mu_cluster_t *c, const char *topic, int partitions) {
  gchar **brokers = g_strsplit(c->bootstraps, ",", -1);
  int ok = 1;
  for (size_t i = 0; ok && brokers[i]; i++)
    ok = broker_knows(brokers[i], topic, partitions);
  g_strfreev(brokers);
  return ok;
}

void ku_wait_topic(mu_cluster_t *c, const char *topic, int partitions) {
  TU_WAIT_UNTIL(topic_ready(c, topic, partitions), KU_TIMEOUT_MS,
                "every broker knows the new topic and its leaders");
}

void ku_topic(mu_cluster_t *c, const char *topic, int partitions) {
  create_topic(c, topic, partitions);
  ku_wait_topic(c, topic, partitions);
}

int32_t ku_leader(mu_cluster_t *c, const char *topic, int32_t partition) {
  int32_t leader = -1;
  int64_t deadline = tu_mono_ms() + KU_TIMEOUT_MS;
  while (leader < 0) {
    const rd_kafka_metadata_t *md = topic_metadata(c->producer, topic);
    if (md && partition < md->topics[0].partition_cnt)
      leader = md->topics[0].partitions[partition].leader;
    if (md)
      rd_kafka_metadata_destroy(md);
    ck_assert_msg(leader >= 0 || tu_mono_ms() < deadline,
                  "%s [%d]: no leader in the metadata", topic, (int)partition);
    if (leader < 0)
      usleep(100 * 1000);
  }
  return leader;
}

/* ------------------------------------------------------------ processes */

void ku_spawn(ku_proc_t *p, const char *dir, const char *tag,
              char *const argv[]) {
  tu_spawn(p, dir, tag, argv, NULL);
}

int ku_reap(ku_proc_t *p, int64_t timeout_ms) {
  return tu_reap(p, timeout_ms);
}

const char *ku_tail(const char *s) {
  size_t n = s ? strlen(s) : 0;
  return !s ? "(nothing)" : n > 2000 ? s + n - 2000 : s;
}

int ku_exit_status(ku_proc_t *p, int64_t timeout_ms) {
  if (!ku_reap(p, timeout_ms)) {
    kill(p->pid, SIGKILL);
    ku_reap(p, 10000);
    char *err = tu_read_file(p->err);
    ck_abort_msg("%s: still running after %lld ms; stderr:\n%s", p->err,
                 (long long)timeout_ms, ku_tail(err));
  }
  if (!WIFEXITED(p->status)) {
    char *err = tu_read_file(p->err);
    ck_abort_msg("%s: killed by signal %d; stderr:\n%s", p->err,
                 WTERMSIG(p->status), ku_tail(err));
  }
  return WEXITSTATUS(p->status);
}

void ku_proc_free(ku_proc_t *p) {
  tu_proc_free(p);
}

/* Run tests/kafka/broker with args (NULL-terminated, at most 12); fails
 * unless it exits 0. Returns its stdout (malloc'd). */
static char *run_broker_script(const char *dir, const char *tag,
                               char *const args[]) {
  char *argv[16] = {(char *)ku_broker_script()};
  size_t n = 1;
  for (; args[n - 1]; n++) {
    ck_assert_uint_lt(n, 15);
    argv[n] = args[n - 1];
  }
  argv[n] = NULL;
  ku_proc_t p;
  ku_spawn(&p, dir, tag, argv);
  int status = ku_exit_status(&p, KU_TOOL_TIMEOUT_MS);
  char *out = tu_read_file(p.out), *err = tu_read_file(p.err);
  ck_assert_msg(status == 0, "%s %s ... exited %d; stderr:\n%s", argv[0],
                args[0], status, ku_tail(err));
  free(err);
  ku_proc_free(&p);
  return out ? out : strdup("");
}

static void node_command(const char *cmd, int32_t node) {
  char id[16], *dir = tu_tempdir();
  snprintf(id, sizeof(id), "%d", (int)node);
  char *const args[] = {(char *)cmd, id, NULL};
  free(run_broker_script(dir, cmd, args));
  tu_rm_rf(dir);
  free(dir);
}

void ku_kill_node(int32_t node) {
  node_command("kill-node", node);
}

void ku_start_node(int32_t node) {
  node_command("start-node", node);
}

/* ------------------------------------------------------------ Kafka's tools
 */

static int64_t tool_number(const char *field) {
  return strcmp(field, "-") == 0 ? -1 : strtoll(field, NULL, 10);
}

/* The member columns CONSUMER-ID HOST CLIENT-ID of a --describe row
 * (t[0..2]) as CLIENT-ID@HOST in out, or "" for "- - -". */
static void member_of(const char *const *t, char *out, size_t size) {
  const char *host = t[1][0] == '/' ? t[1] + 1 : t[1];
  if (strcmp(t[0], "-") == 0)
    out[0] = '\0';
  else
    snprintf(out, size, "%s@%s", t[2], host);
}

/* The tool prints a table GROUP TOPIC PARTITION A [B C ...] per partition;
 * its --reset-offsets output has no line breaks between rows, so the text
 * is read as a stream of words. For rows of group and topic:
 * out[partition] = {A, B, C} (only A when vals is 1), and with vals 3 the
 * member of the three columns that follow. Returns the number of rows
 * found. */
static int parse_rows(const char *text, const char *group, const char *topic,
                      int vals, ku_group_offsets_t *out, int n) {
  gchar **w = g_strsplit_set(text, " \t\r\n", -1);
  GPtrArray *words = g_ptr_array_new();
  for (size_t i = 0; w[i]; i++)
    if (w[i][0])
      g_ptr_array_add(words, w[i]);
  int found = 0;
  for (guint i = 0; i + 3 + (guint)vals <= words->len; i++) {
    const char *const *t = (const char *const *)&words->pdata[i];
    char *end;
    long part = strtol(t[2], &end, 10);
    if (strcmp(t[0], group) != 0 || strcmp(t[1], topic) != 0 || *end ||
        part < 0 || part >= n)
      continue;
    out[part].current = tool_number(t[3]);
    out[part].log_end = vals > 1 ? tool_number(t[4]) : -1;
    out[part].lag = vals > 2 ? tool_number(t[5]) : -1;
    out[part].member[0] = '\0';
    if (vals > 2 && i + 9 <= words->len) {
      member_of(t + 6, out[part].member, sizeof(out[part].member));
      i += 3;
    }
    found++;
    i += 2 + (guint)vals;
  }
  g_ptr_array_free(words, TRUE);
  g_strfreev(w);
  return found;
}

void ku_describe_group(mu_cluster_t *c, const char *group, const char *topic,
                       ku_group_offsets_t *out, int n) {
  char *const args[] = {"run-class",          KU_GROUP_COMMAND,
                        "--bootstrap-server", (char *)c->bootstraps,
                        "--describe",         "--group",
                        (char *)group,        NULL};
  char *text = run_broker_script(c->dir, "describe", args);
  int found = parse_rows(text, group, topic, 3, out, n);
  ck_assert_msg(found == n,
                "kafka-consumer-groups --describe --group %s: %d of %d "
                "partitions of %s:\n%s",
                group, found, n, topic, ku_tail(text));
  free(text);
}

void ku_reset_to_earliest(mu_cluster_t *c, const char *group, const char *topic,
                          int partitions) {
  char *const args[] = {"run-class",          KU_GROUP_COMMAND,
                        "--bootstrap-server", (char *)c->bootstraps,
                        "--reset-offsets",    "--to-earliest",
                        "--execute",          "--group",
                        (char *)group,        "--topic",
                        (char *)topic,        NULL};
  char *text = run_broker_script(c->dir, "reset", args);
  ku_group_offsets_t *rows = calloc((size_t)partitions, sizeof(*rows));
  /* GROUP TOPIC PARTITION NEW-OFFSET per partition. */
  int found = parse_rows(text, group, topic, 1, rows, partitions);
  for (int p = 0; p < partitions && found == partitions; p++)
    found -= rows[p].current != 0;
  ck_assert_msg(found == partitions,
                "kafka-consumer-groups --reset-offsets did not reset every "
                "partition of %s to 0:\n%s",
                topic, ku_tail(text));
  free(rows);
  free(text);
}
