#include "mockutil.h"

#include <check.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "testutil.h"

#define MU_TIMEOUT_MS 10000

void mu_start(mu_cluster_t *c, int brokers) {
  char err[512], errstr[512];
  memset(c, 0, sizeof(*c));
  ck_assert_msg(mock_start(&c->mock, brokers, err, sizeof(err)) == 0, "%s",
                err);
  c->bootstraps = mock_bootstraps(c->mock);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstraps, NULL, 0);
  rd_kafka_conf_set(conf, "linger.ms", "1", NULL, 0);
  c->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  ck_assert_msg(c->producer != NULL, "%s", errstr);
  c->dir = tu_tempdir();
  ck_assert_ptr_nonnull(c->dir);
}

void mu_stop(mu_cluster_t *c) {
  rd_kafka_destroy(c->producer);
  mock_stop(c->mock);
  tu_rm_rf(c->dir);
  free(c->dir);
}

void mu_topic(mu_cluster_t *c, const char *topic, int partitions) {
  char err[512];
  ck_assert_msg(
      mock_create_topic(c->mock, topic, partitions, err, sizeof(err)) == 0,
      "%s", err);
}

void mu_produce(mu_cluster_t *c, const char *topic, int32_t partition,
                const char *event_id, const char *key, const char *value) {
  mu_produce_at(c, topic, partition, event_id, key, value, 0);
}

void mu_produce_at(mu_cluster_t *c, const char *topic, int32_t partition,
                   const char *event_id, const char *key, const char *value,
                   int64_t timestamp_ms) {
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
  if (event_id)
    rd_kafka_header_add(hdrs, "eventId", -1, event_id, -1);
  rd_kafka_header_add(hdrs, "eventType", -1, "ORDER_COMPLETED", -1);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      c->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
      RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
      RD_KAFKA_V_VALUE((void *)value, strlen(value)),
      RD_KAFKA_V_TIMESTAMP(timestamp_ms),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
      RD_KAFKA_V_END);
  ck_assert_msg(e == 0, "produce: %s", rd_kafka_err2str(e));
  rd_kafka_poll(c->producer, 0);
}

void mu_flush(mu_cluster_t *c) {
  ck_assert_int_eq(rd_kafka_flush(c->producer, MU_TIMEOUT_MS), 0);
}

static rd_kafka_t *consumer(mu_cluster_t *c, const char *group) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstraps, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", group ? group : "khost-test-probe", NULL,
                    0);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
  rd_kafka_conf_set(conf, "session.timeout.ms", MU_SESSION_TIMEOUT, NULL, 0);
  rd_kafka_conf_set(conf, "heartbeat.interval.ms", MU_HEARTBEAT, NULL, 0);
  if (getenv("KHOST_TEST_KDEBUG"))
    rd_kafka_conf_set(conf, "debug", getenv("KHOST_TEST_KDEBUG"), NULL, 0);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  ck_assert_msg(rk != NULL, "%s", errstr);
  return rk;
}

int64_t mu_end_offset(mu_cluster_t *c, const char *topic, int32_t partition) {
  int64_t lo, hi;
  rd_kafka_t *rk = consumer(c, NULL);
  rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
      rk, topic, partition, &lo, &hi, MU_TIMEOUT_MS);
  ck_assert_msg(e == 0, "watermarks: %s", rd_kafka_err2str(e));
  rd_kafka_destroy(rk);
  return hi;
}

int64_t mu_committed(mu_cluster_t *c, const char *group, const char *topic,
                     int32_t partition) {
  rd_kafka_t *rk = consumer(c, group);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, partition);
  rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, MU_TIMEOUT_MS);
  ck_assert_msg(e == 0, "committed: %s", rd_kafka_err2str(e));
  int64_t off = l->elems[0].offset;
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return off;
}

/* The mock cluster refuses commits from outside the group, so this joins
 * the group (the host must be stopped), waits for the partition, commits
 * synchronously and leaves. */
void mu_commit(mu_cluster_t *c, const char *group, const char *topic,
               int32_t partition, int64_t offset) {
  rd_kafka_t *rk = consumer(c, group);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_poll_set_consumer(rk);
  ck_assert_int_eq(rd_kafka_subscribe(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_topic_partition_list_t *owned = NULL;
  int64_t deadline = tu_mono_ms() + 30000;
  for (;;) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (m)
      rd_kafka_message_destroy(m);
    ck_assert_int_eq(rd_kafka_assignment(rk, &owned), 0);
    int have =
        rd_kafka_topic_partition_list_find(owned, topic, partition) != NULL;
    rd_kafka_topic_partition_list_destroy(owned);
    if (have)
      break;
    ck_assert_msg(tu_mono_ms() < deadline, "no assignment of %s [%d]", topic,
                  (int)partition);
  }
  l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
  rd_kafka_resp_err_t e = rd_kafka_commit(rk, l, 0);
  ck_assert_msg(e == 0, "commit: %s", rd_kafka_err2str(e));
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

size_t mu_consume(mu_cluster_t *c, const char *topic, size_t want,
                  int64_t timeout_ms,
                  void (*check)(rd_kafka_message_t *m, void *arg), void *arg) {
  rd_kafka_t *rk = consumer(c, "khost-test-reader");
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, 0)->offset =
      RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  size_t n = 0;
  int64_t deadline = tu_mono_ms() + timeout_ms;
  while (n < want && tu_mono_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (m && !m->err) {
      n++;
      if (check)
        check(m, arg);
    }
    if (m)
      rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return n;
}

const char *mu_header(rd_kafka_message_t *m, const char *name, char *buf,
                      size_t size) {
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t len;
  if (rd_kafka_message_headers(m, &h) ||
      rd_kafka_header_get_last(h, name, &v, &len))
    return NULL;
  snprintf(buf, size, "%.*s", (int)len, (const char *)v);
  return buf;
}

char *mu_write_cfg(mu_cluster_t *c, const mu_cfg_t *o) {
  char *text = NULL, *plugin = tu_fixture("scripted");
  ck_assert_int_ge(
      asprintf(&text,
               "%s\n"
               "kafka = { bootstrap_servers = \"%s\";\n  %s };\n"
               "dedup = { path = \"%s/%s\"; %s };\n"
               "pipelines = ( {\n"
               "  name = \"orders\"; group_id = \"%s\";\n"
               "  topics = [ %s ]; members = %d;\n"
               "  plugin = \"%s\";\n"
               "  %s\n"
               "  config = { log_path = \"%s/%s\"; %s };\n"
               "}%s );\n",
               o->top ? o->top : "shutdown_timeout = \"20s\";", c->bootstraps,
               o->kafka ? o->kafka : MU_KAFKA, c->dir,
               o->db ? o->db : "dedup.db", o->dedup ? o->dedup : "",
               o->group ? o->group : "data-platform-consumer-group",
               o->topics ? o->topics : "\"order-completed\"",
               o->members ? o->members : 1, plugin,
               o->pipeline ? o->pipeline : "", c->dir,
               o->log ? o->log : "calls.log", o->plugin ? o->plugin : "",
               o->more ? o->more : ""),
      0);
  char *path = tu_write_file(c->dir, o->file ? o->file : "khost.cfg", text);
  free(text);
  free(plugin);
  return path;
}

pipeline_stats_t mu_run_to_end(const char *cfg, int want_status,
                               int64_t timeout_ms) {
  mu_host_t h;
  pipeline_stats_t s;
  mu_host_start(&h, cfg, 1);
  mu_host_wait(&h, timeout_ms);
  ck_assert_int_eq(h.status, want_status);
  mu_host_stats(&h, &s);
  mu_host_close(&h);
  return s;
}

/* The level of the host's log lines: KHOST_LOG_WARNING, or what
 * mu_log_to() asked for. */
static int g_log_level = -1;

int mu_log_to(mu_cluster_t *c, const char *name, int level) {
  char *path = tu_path(c->dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  ck_assert_msg(fd >= 0, "cannot open %s", path);
  free(path);
  log_set_fd(fd);
  g_log_level = level;
  log_set_level(level);
  return fd;
}

void mu_log_restore(int fd) {
  log_set_fd(2);
  g_log_level = -1;
  close(fd);
}

void mu_host_start(mu_host_t *h, const char *cfg_path, int exit_at_end) {
  host_opts_t opts = {.exit_at_end = exit_at_end};
  mu_host_start_opts(h, cfg_path, &opts);
}

void mu_host_start_opts(mu_host_t *h, const char *cfg_path,
                        const host_opts_t *opts) {
  char err[4096];
  memset(h, 0, sizeof(*h));
  ck_assert_msg(cfg_load(&h->cfg, cfg_path, err, sizeof(err)) == 0, "%s", err);
  log_set_level(getenv("KHOST_TEST_DEBUG") ? KHOST_LOG_DEBUG
                : g_log_level >= 0         ? g_log_level
                                           : KHOST_LOG_WARNING);
  ck_assert_msg(host_open(&h->host, &h->cfg, opts, err, sizeof(err)) == 0, "%s",
                err);
  int rc = host_start(h->host, err, sizeof(err));
  ck_assert_msg(rc == 0, "host_start: %s", err);
}

void mu_host_wait(mu_host_t *h, int64_t timeout_ms) {
  ck_assert_msg(host_wait(h->host, timeout_ms),
                "host did not stop by itself within %lld ms",
                (long long)timeout_ms);
  h->status = host_finish(h->host);
}

void mu_host_stop(mu_host_t *h) {
  host_request_stop(h->host);
  mu_host_wait(h, 30000);
}

void mu_host_stats(mu_host_t *h, pipeline_stats_t *s) {
  host_pipeline_stats(h->host, 0, s);
}

void mu_host_close(mu_host_t *h) {
  host_close(h->host);
  cfg_free(&h->cfg);
}

mu_line_t *mu_read_lines(const char *path, size_t *n) {
  char *text = tu_read_file(path);
  size_t cap = 64;
  /* A line not ended by its newline yet is a write still in progress (a
   * reader may see part of a write(2) of a line crossing a page): read
   * once it is whole. */
  char *end = text ? strrchr(text, '\n') : NULL;
  if (text)
    *(end ? end + 1 : text) = '\0';
  mu_line_t *lines = calloc(cap, sizeof(*lines));
  *n = 0;
  for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL;
       line; line = strtok_r(NULL, "\n", &save)) {
    if (*n == cap)
      lines = realloc(lines, (cap *= 2) * sizeof(*lines));
    mu_line_t *l = &lines[(*n)++];
    long long off, ms;
    int got = sscanf(line, "%63s %d %lld %u %63s %d %lld %u %d %d", l->topic,
                     &l->partition, &off, &l->attempt, l->event_id, &l->result,
                     &ms, &l->flags, &l->worker, &l->overlap);
    ck_assert_msg(got == 10, "bad plugin log line: %s", line);
    l->offset = off;
    l->ms = ms;
  }
  free(text);
  return lines;
}

size_t mu_assert_ok_ids_distinct(const mu_line_t *l, size_t n) {
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
  size_t ok = 0;
  for (size_t i = 0; i < n; i++) {
    if (l[i].result != KHOST_OK)
      continue;
    ck_assert_msg(!g_hash_table_contains(seen, l[i].event_id),
                  "event %s handled twice", l[i].event_id);
    g_hash_table_add(seen, (gpointer)l[i].event_id);
    ok++;
  }
  g_hash_table_destroy(seen);
  return ok;
}

size_t mu_key_order_violations(const mu_line_t *l, size_t n, GString *why) {
  GHashTable *last =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    char key[16];
    int seq;
    if (l[i].result != KHOST_OK ||
        sscanf(l[i].event_id, "%15[^-]-%d", key, &seq) != 2)
      continue;
    gpointer prev;
    if (g_hash_table_lookup_extended(last, key, NULL, &prev) &&
        GPOINTER_TO_INT(prev) >= seq + 1 && bad++ < 5)
      g_string_append_printf(why, "key %s: sequence %d after %d\n", key, seq,
                             GPOINTER_TO_INT(prev) - 1);
    g_hash_table_insert(last, g_strdup(key), GINT_TO_POINTER(seq + 1));
  }
  g_hash_table_destroy(last);
  return bad;
}

size_t mu_count_result(const mu_line_t *l, size_t n, int result) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    c += l[i].result == result;
  return c;
}
