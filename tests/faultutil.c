/*
 * The process-level test harness (see faultutil.h).
 */
#include "faultutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define MOCKD TOP_BUILDDIR "/tests/mockd"
#define FU_QUERY_MS 10000

static char *g_root; /* the test case's directory */

void fu_case_setup(void) {
  g_root = tu_tempdir();
  /* FU_UNPRIVILEGED children must reach the test directories. */
  if (g_root)
    chmod(g_root, 0711);
}

void fu_case_teardown(void) {
  if (getenv("KHOST_TEST_KEEP"))
    fprintf(stderr, "kept %s\n", g_root);
  else
    tu_rm_rf(g_root);
  free(g_root);
  g_root = NULL;
}

int64_t fu_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *fu_path(const fu_world_t *w, const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", w->dir, name), 0);
  return p;
}

char *fu_db_path(const fu_world_t *w, int db) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/dedup-%d.db", w->dir, db), 0);
  return p;
}

/* ------------------------------------------------------------ children */

/* Crashes on purpose leave no core files. */
static fu_proc_t *spawn(fu_world_t *w, const char *tag, char *const argv[],
                        int flags, int in_fd, int out_fd) {
  tu_spawn_opts_t o = {.flags =
                           TU_CHILD_NO_CORE |
                           ((flags & FU_IGNORE_XFSZ) ? TU_CHILD_XFSZ_IGNORE
                                                     : TU_CHILD_XFSZ_DEFAULT) |
                           ((flags & FU_UNPRIVILEGED) ? TU_CHILD_NOBODY : 0),
                       .in_fd = in_fd,
                       .out_fd = out_fd};
  tu_proc_t t;
  fu_proc_t *p = g_new0(fu_proc_t, 1);
  p->start_ms = fu_wall_ms();
  tu_spawn(&t, w->dir, tag, argv, &o);
  p->pid = t.pid;
  p->out = t.out;
  p->err = t.err;
  return p;
}

fu_proc_t *fu_spawn(fu_world_t *w, const char *tag, char *const argv[],
                    int flags) {
  fu_proc_t *p = spawn(w, tag, argv, flags, -1, -1);
  p->db = -1;
  g_ptr_array_add(w->runs, p);
  return p;
}

fu_proc_t *fu_khost(fu_world_t *w, const char *tag, const char *cfg, int db,
                    int flags) {
  char *argv[] = {KHOST,
                  "run",
                  "-c",
                  (char *)cfg,
                  (flags & FU_EXIT_AT_END) ? "--exit-at-end" : NULL,
                  NULL};
  fu_proc_t *p = spawn(w, tag, argv, flags, -1, -1);
  p->db = db;
  g_ptr_array_add(w->runs, p);
  return p;
}

void fu_add_run(fu_world_t *w, int db, int64_t start_ms, int64_t end_ms) {
  fu_proc_t *p = g_new0(fu_proc_t, 1);
  *p = (fu_proc_t){.pid = getpid(),
                   .exited = 1,
                   .db = db,
                   .start_ms = start_ms,
                   .end_ms = end_ms};
  g_ptr_array_add(w->runs, p);
}

int fu_reap(fu_proc_t *p, int64_t timeout_ms) {
  tu_proc_t t = {.pid = p->pid, .status = p->status, .exited = p->exited};
  if (!tu_reap(&t, timeout_ms))
    return 0;
  if (!p->exited) {
    p->exited = 1;
    p->status = t.status;
    p->end_ms = fu_wall_ms();
  }
  return 1;
}

/* The end of p's stderr, for failure messages (static buffer). */
static const char *err_tail(const fu_proc_t *p) {
  static char buf[2048];
  char *s = tu_read_file(p->err);
  size_t n = s ? strlen(s) : 0;
  snprintf(buf, sizeof(buf), "%s", s ? s + (n > 2000 ? n - 2000 : 0) : "");
  free(s);
  return buf;
}

int fu_wait_exit(fu_proc_t *p, int64_t timeout_ms) {
  if (!fu_reap(p, timeout_ms))
    ck_abort_msg("%s: still running after %" PRId64 " ms; stderr:\n%s", p->err,
                 timeout_ms, err_tail(p));
  return WIFEXITED(p->status) ? WEXITSTATUS(p->status)
                              : 128 + WTERMSIG(p->status);
}

void fu_kill9(fu_proc_t *p) {
  if (!p->exited)
    kill(p->pid, SIGKILL);
  fu_wait_exit(p, 10000);
}

char *fu_stderr(const fu_proc_t *p) {
  char *s = tu_read_file(p->err);
  return s ? s : strdup("");
}

char *fu_stderr_line(const fu_proc_t *p, const char *needle) {
  char *s = fu_stderr(p), *line = NULL;
  char *at = strstr(s, needle);
  if (at) {
    char *start = at, *end = strchr(at, '\n');
    while (start > s && start[-1] != '\n')
      start--;
    line = strndup(start, end ? (size_t)(end - start) : strlen(start));
  }
  free(s);
  return line;
}

int fu_stderr_count(const fu_proc_t *p, const char *needle) {
  char *s = fu_stderr(p);
  int n = 0;
  for (const char *at = s; (at = strstr(at, needle)) != NULL; at++)
    n++;
  free(s);
  return n;
}

int fu_await_stderr(fu_proc_t *p, const char *needle, int times,
                    int64_t timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  while (fu_stderr_count(p, needle) < times) {
    /* Exited: its stderr is whole now; it may have printed the needle
     * just before. */
    if (fu_reap(p, 0) && fu_stderr_count(p, needle) < times)
      ck_abort_msg("khost exited waiting for \"%s\" (%d times) in %s:\n%s",
                   needle, times, p->err, err_tail(p));
    if (tu_mono_ms() >= deadline)
      return 0;
    usleep(20 * 1000);
  }
  return 1;
}

void fu_wait_stderr(fu_proc_t *p, const char *needle, int times,
                    int64_t timeout_ms) {
  if (!fu_await_stderr(p, needle, times, timeout_ms))
    ck_abort_msg("timed out waiting for \"%s\" (%d times) in %s:\n%s", needle,
                 times, p->err, err_tail(p));
}

int fu_summary(const fu_proc_t *p, uint64_t *handled, uint64_t *duplicates) {
  char *s = fu_stderr(p);
  const char *at = strstr(s, "[" FU_PIPELINE "] handled ");
  int ok = at && sscanf(at,
                        "[" FU_PIPELINE "] handled %" SCNu64
                        ", duplicates skipped %" SCNu64,
                        handled, duplicates) == 2;
  free(s);
  return ok;
}

/* ------------------------------------------------------------ mockd */

static void start_mockd(fu_world_t *w, int brokers) {
  int in[2], out[2];
  char n[16], line[1024];
  snprintf(n, sizeof(n), "%d", brokers);
  char *argv[] = {MOCKD, n, NULL};
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  fu_proc_t *p = spawn(w, "mockd", argv, 0, in[0], out[1]);
  w->mockd = *p;
  g_free(p);
  close(in[0]);
  close(out[1]);
  w->to_mockd = fdopen(in[1], "w");
  w->from_mockd = fdopen(out[0], "r");
  ck_assert_msg(w->to_mockd && w->from_mockd, "fdopen: %s", strerror(errno));
  ck_assert_msg(fgets(line, sizeof(line), w->from_mockd) != NULL,
                "mockd did not start: %s", err_tail(&w->mockd));
  line[strcspn(line, "\n")] = '\0';
  w->bootstraps = strdup(line);
}

/* Send line to mockd; its answer (without the newline) in answer. */
static void mockd_call(fu_world_t *w, const char *line, char *answer,
                       size_t size) {
  fprintf(w->to_mockd, "%s\n", line);
  fflush(w->to_mockd);
  ck_assert_msg(fgets(answer, (int)size, w->from_mockd) != NULL,
                "mockd: no answer to \"%s\"", line);
  answer[strcspn(answer, "\n")] = '\0';
}

void fu_mockd(fu_world_t *w, const char *fmt, ...) {
  char line[1024], answer[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  mockd_call(w, line, answer, sizeof(answer));
  ck_assert_msg(strcmp(answer, "ok") == 0, "mockd: %s: %s", line, answer);
}

long fu_mockd_number(fu_world_t *w, const char *fmt, ...) {
  char line[1024], answer[1024];
  long n = -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  mockd_call(w, line, answer, sizeof(answer));
  ck_assert_msg(sscanf(answer, "ok %ld", &n) == 1, "mockd: %s: %s", line,
                answer);
  return n;
}

/* ------------------------------------------------------------ producing */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  fu_world_t *w = opaque;
  char *id = m->_private;
  pthread_mutex_lock(&w->mu);
  if (m->err) {
    w->produce_errors++;
    free(id);
  } else {
    fu_rec_t *r = g_new0(fu_rec_t, 1);
    *r = (fu_rec_t){strdup(rd_kafka_topic_name(m->rkt)), m->partition,
                    m->offset, id};
    g_ptr_array_add(w->produced, r);
  }
  pthread_mutex_unlock(&w->mu);
  (void)rk;
}

static void rec_free(gpointer p) {
  fu_rec_t *r = p;
  free(r->topic);
  free(r->id);
  g_free(r);
}

/* The test's own clients keep quiet: brokers go down on purpose. */
static void quiet(const rd_kafka_t *rk, int level, const char *fac,
                  const char *buf) {
  (void)rk, (void)level, (void)fac, (void)buf;
}

static rd_kafka_t *client(fu_world_t *w, rd_kafka_type_t type,
                          const char *group) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", w->bootstraps, NULL, 0);
  rd_kafka_conf_set_log_cb(conf, quiet);
  if (type == RD_KAFKA_PRODUCER) {
    rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
    rd_kafka_conf_set(conf, "message.max.bytes", "4000000", NULL, 0);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, w);
  } else {
    rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", NULL, 0);
  }
  rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
  ck_assert_msg(rk != NULL, "%s", errstr);
  return rk;
}

void fu_produce_raw(fu_world_t *w, const char *topic, int32_t partition,
                    const char *id, const char *key, const void *value,
                    size_t len, ...) {
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
  va_list ap;
  if (id)
    rd_kafka_header_add(hdrs, "eventId", -1, id, -1);
  va_start(ap, len);
  for (const char *name; (name = va_arg(ap, const char *)) != NULL;) {
    const void *hv = va_arg(ap, const void *);
    size_t hlen = va_arg(ap, size_t);
    rd_kafka_header_add(hdrs, name, -1, hv, (ssize_t)hlen);
  }
  va_end(ap);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      w->producer, RD_KAFKA_V_TOPIC(topic),
      RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
      RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
      RD_KAFKA_V_VALUE((void *)value, len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
      RD_KAFKA_V_OPAQUE(strdup(id ? id : "-")), RD_KAFKA_V_END);
  ck_assert_msg(e == 0, "produce: %s", rd_kafka_err2str(e));
  rd_kafka_poll(w->producer, 0);
}

char *fu_produce(fu_world_t *w, int32_t partition, const char *value) {
  pthread_mutex_lock(&w->mu);
  char *id = g_strdup_printf("ev-%05u", ++w->next_id);
  pthread_mutex_unlock(&w->mu);
  fu_produce_raw(w, FU_TOPIC, partition, id, NULL, value, strlen(value), NULL);
  return id;
}

void fu_flush(fu_world_t *w) {
  ck_assert_msg(rd_kafka_flush(w->producer, 60000) == 0,
                "records not acknowledged within 60 s");
  ck_assert_int_eq(w->produce_errors, 0);
}

size_t fu_produced(fu_world_t *w) {
  pthread_mutex_lock(&w->mu);
  size_t n = w->produced->len;
  pthread_mutex_unlock(&w->mu);
  return n;
}

static void *feed_main(void *arg) {
  fu_world_t *w = arg;
  for (unsigned n = 0; !w->stop_feeding; n++) {
    char *id = fu_produce(w, -1, w->feed_value ? w->feed_value(n) : "ok");
    g_free(id);
    /* The pace of a producer, not a wait for anything. */
    usleep((useconds_t)w->feed_every_ms * 1000);
  }
  return NULL;
}

void fu_feed_start(fu_world_t *w, int every_ms,
                   const char *(*value)(unsigned n)) {
  w->feed_every_ms = every_ms;
  w->feed_value = value;
  w->stop_feeding = 0;
  ck_assert_int_eq(pthread_create(&w->feeder, NULL, feed_main, w), 0);
  w->feeding = 1;
}

void fu_feed_stop(fu_world_t *w) {
  if (!w->feeding)
    return;
  w->stop_feeding = 1;
  pthread_join(w->feeder, NULL);
  w->feeding = 0;
  fu_flush(w);
}

/* ------------------------------------------------------------ the world */

static void watch_end(fu_world_t *w);

void fu_start(fu_world_t *w, int brokers, int partitions) {
  memset(w, 0, sizeof(*w));
  ck_assert_msg(g_root != NULL, "no test case directory");
  ck_assert_int_ge(asprintf(&w->dir, "%s/test-XXXXXX", g_root), 0);
  ck_assert_msg(mkdtemp(w->dir) != NULL, "mkdtemp: %s", strerror(errno));
  /* FU_UNPRIVILEGED children create files here too; sticky, as /tmp, so
   * that khost still trusts the configs in it (file_trust.h). */
  chmod(w->dir, 01777);
  pthread_mutex_init(&w->mu, NULL);
  w->produced = g_ptr_array_new_with_free_func(rec_free);
  w->runs = g_ptr_array_new();
  start_mockd(w, brokers);
  w->partitions = partitions;
  if (partitions > 0)
    fu_mockd(w, "topic %s %d", FU_TOPIC, partitions);
  w->producer = client(w, RD_KAFKA_PRODUCER, NULL);
  w->probe = client(w, RD_KAFKA_CONSUMER, FU_GROUP);
}

void fu_stop(fu_world_t *w) {
  fu_feed_stop(w);
  watch_end(w);
  g_free(w->went_back);
  for (guint i = 0; i < w->runs->len; i++) {
    fu_proc_t *p = w->runs->pdata[i];
    if (!p->exited && p->pid != getpid()) {
      kill(p->pid, SIGCONT);
      kill(p->pid, SIGKILL);
      waitpid(p->pid, NULL, 0);
    }
    free(p->out);
    free(p->err);
    g_free(p);
  }
  g_ptr_array_free(w->runs, TRUE);
  rd_kafka_destroy(w->probe);
  rd_kafka_destroy(w->producer);
  fprintf(w->to_mockd, "quit\n");
  fclose(w->to_mockd);
  fclose(w->from_mockd);
  fu_wait_exit(&w->mockd, 10000);
  free(w->mockd.out);
  free(w->mockd.err);
  g_ptr_array_free(w->produced, TRUE);
  pthread_mutex_destroy(&w->mu);
  free(w->bootstraps);
  if (!getenv("KHOST_TEST_KEEP"))
    tu_rm_rf(w->dir);
  free(w->dir);
}

char *fu_config(fu_world_t *w, const char *name, int db, int members,
                const char *top, const char *kafka, const char *pipeline,
                const char *plugin) {
  char *text = NULL, *so = tu_fixture("effects"), *dbp = fu_db_path(w, db);
  ck_assert_int_ge(
      asprintf(&text,
               "%s\n%s\n"
               "kafka = { bootstrap_servers = \"%s\";\n"
               "  session_timeout_ms = 3000; heartbeat_interval_ms = 300;\n"
               "  topic_metadata_refresh_interval_ms = 1000;\n"
               "  %s };\n"
               "dedup = { path = \"%s\"; };\n"
               "pipelines = ( {\n"
               "  name = \"" FU_PIPELINE "\"; group_id = \"" FU_GROUP "\";\n"
               "  topics = [ \"" FU_TOPIC "\" ]; members = %d;\n"
               "  plugin = \"%s\";\n"
               "  %s\n  %s\n"
               "  config = { log_path = \"%s/effects.log\"; %s };\n"
               "} );\n",
               top && strstr(top, "log_level") ? "" : "log_level = \"info\";",
               top ? top : "", w->bootstraps, kafka ? kafka : "", dbp, members,
               so,
               pipeline && strstr(pipeline, "retry")
                   ? ""
                   : "retry = { max = 3; backoff = \"20ms\"; backoff_max = "
                     "\"200ms\"; };",
               pipeline ? pipeline : "", w->dir, plugin ? plugin : ""),
      0);
  char *path = tu_write_file(w->dir, name, text);
  chmod(path, 0644);
  free(text);
  free(dbp);
  free(so);
  return path;
}

void fu_produce_n(fu_world_t *w, int per_partition, const char *value) {
  for (int i = 0; i < per_partition; i++)
    for (int p = 0; p < w->partitions; p++)
      g_free(fu_produce(w, p, value));
  fu_flush(w);
}

void fu_stop_host(fu_proc_t *p) {
  ck_assert_msg(!fu_reap(p, 0), "khost exited early (see %s)", p->err);
  kill(p->pid, SIGTERM);
  /* khost ends a shutdown that passes its deadline by itself, with status
   * 1 and a line saying what held it up: waiting no longer than the
   * deadline would report that as "still running", without the line. */
  int status = fu_wait_exit(p, FU_SHUTDOWN_MS + FU_AFTER_DEADLINE_MS);
  ck_assert_msg(status == 0, "khost exited with %d after SIGTERM; stderr:\n%s",
                status, err_tail(p));
}

/* 1 once p's stderr holds "assigned" or p has exited, 0 when timeout_ms
 * passes first. */
static int assigned_or_exited(fu_proc_t *p, int64_t timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  while (fu_stderr_count(p, "assigned") < 1 && !fu_reap(p, 0)) {
    if (tu_mono_ms() >= deadline)
      return 0;
    usleep(20 * 1000);
  }
  return 1;
}

/* librdkafka 2.0.2's mock coordinator now and then leaves a group's join
 * unanswered for good after a member was killed without leaving the
 * group (see check_state_crash.c). A run that is not assigned within
 * FU_JOIN_STALL_MS (many session timeouts) is killed -9, as the tests
 * here kill hosts anyway, and started again: it has handled nothing. */
fu_proc_t *fu_run_to_end(fu_world_t *w, const char *tag, const char *cfg,
                         int db) {
  fu_proc_t *p = NULL;
  for (int i = 0; i < FU_JOIN_TRIES; i++) {
    char t[96];
    if (i == 0)
      snprintf(t, sizeof(t), "%s", tag);
    else
      snprintf(t, sizeof(t), "%s-again%d", tag, i);
    p = fu_khost(w, t, cfg, db, FU_EXIT_AT_END);
    if (i + 1 == FU_JOIN_TRIES || assigned_or_exited(p, FU_JOIN_STALL_MS))
      break;
    fprintf(stderr,
            "%s: not assigned %d s after its start (the mock coordinator's "
            "join stalled): killed and started again\n",
            t, FU_JOIN_STALL_MS / 1000);
    fu_kill9(p);
  }
  int status = fu_wait_exit(p, FU_RUN_MS);
  ck_assert_msg(status == 0, "%s exited with %d (see %s)", tag, status, p->err);
  return p;
}

/* ------------------------------------------------------------ state */

int64_t fu_committed(fu_world_t *w, int32_t partition, int timeout_ms) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, FU_TOPIC, partition);
  rd_kafka_resp_err_t e = rd_kafka_committed(w->probe, l, timeout_ms);
  int64_t off = e ? -1 : l->elems[0].offset;
  rd_kafka_topic_partition_list_destroy(l);
  return off;
}

/* partition -> end offset (last produced + 1) of FU_TOPIC */
static int64_t produced_end(fu_world_t *w, int32_t partition) {
  int64_t end = 0;
  pthread_mutex_lock(&w->mu);
  for (guint i = 0; i < w->produced->len; i++) {
    const fu_rec_t *r = w->produced->pdata[i];
    if (r->partition == partition && strcmp(r->topic, FU_TOPIC) == 0 &&
        r->offset + 1 > end)
      end = r->offset + 1;
  }
  pthread_mutex_unlock(&w->mu);
  return end;
}

int fu_all_committed(fu_world_t *w) {
  for (int p = 0; p < w->partitions; p++) {
    int64_t end = produced_end(w, p);
    if (end > 0 && fu_committed(w, p, FU_QUERY_MS) != end)
      return 0;
  }
  return 1;
}

void fu_wait_all_committed(fu_world_t *w, int64_t timeout_ms) {
  TU_WAIT_UNTIL(fu_all_committed(w), timeout_ms,
                "every partition committed up to its last record");
}

size_t fu_effects(const fu_world_t *w) {
  char *path = fu_path(w, "effects.log"), *s = tu_read_file(path);
  size_t n = 0;
  for (const char *c = s; c && *c; c++)
    n += *c == '\n';
  free(s);
  free(path);
  return n;
}

/* ------------------------------------------------------------ watching */

#define FU_WATCH_QUERY_MS 2000

static void *watch_main(void *arg) {
  fu_world_t *w = arg;
  int64_t *last = g_new(int64_t, (gsize)w->partitions);
  for (int p = 0; p < w->partitions; p++)
    last[p] = RD_KAFKA_OFFSET_INVALID;
  while (!w->stop_watching) {
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(w->partitions);
    for (int p = 0; p < w->partitions; p++)
      rd_kafka_topic_partition_list_add(l, FU_TOPIC, p);
    if (rd_kafka_committed(w->watch_rk, l, FU_WATCH_QUERY_MS) == 0) {
      int all = 1;
      for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (tp->err) {
          all = 0;
          continue;
        }
        if (tp->offset < last[tp->partition] && !w->went_back)
          w->went_back = g_strdup_printf(
              "%s [%" PRId32 "] went back from %" PRId64 " to %" PRId64,
              tp->topic, tp->partition, last[tp->partition], tp->offset);
        if (tp->offset > last[tp->partition])
          last[tp->partition] = tp->offset;
      }
      w->watch_samples += all;
    }
    rd_kafka_topic_partition_list_destroy(l);
    /* The pace of the sampling, not a wait for anything. */
    usleep(20 * 1000);
  }
  g_free(last);
  return NULL;
}

void fu_watch_commits_start(fu_world_t *w) {
  ck_assert_msg(!w->watching, "already watching");
  w->watch_rk = client(w, RD_KAFKA_CONSUMER, FU_GROUP);
  w->stop_watching = 0;
  w->watch_samples = 0;
  ck_assert_int_eq(pthread_create(&w->watcher, NULL, watch_main, w), 0);
  w->watching = 1;
}

/* Join the watcher (also from fu_stop() after a failed test). */
static void watch_end(fu_world_t *w) {
  if (!w->watching)
    return;
  w->stop_watching = 1;
  pthread_join(w->watcher, NULL);
  rd_kafka_destroy(w->watch_rk);
  w->watch_rk = NULL;
  w->watching = 0;
}

size_t fu_watch_commits_stop(fu_world_t *w) {
  watch_end(w);
  ck_assert_msg(w->went_back == NULL, "a committed offset %s", w->went_back);
  fprintf(stderr, "committed offsets read %zu times, never going back\n",
          w->watch_samples);
  ck_assert_uint_gt(w->watch_samples, 0);
  return w->watch_samples;
}

/* ------------------------------------------------------------ checking */

/* The source coordinates of a dead-lettered record, from its headers. */
static void add_dead_letter(chk_t *c, rd_kafka_message_t *m) {
  rd_kafka_headers_t *h = NULL;
  const char *names[] = {"eventId", "khost-source-topic",
                         "khost-source-partition", "khost-source-offset"};
  char vals[4][256] = {"", "", "-1", "-1"};
  if (rd_kafka_message_headers(m, &h) == 0)
    for (int i = 0; i < 4; i++) {
      const void *v;
      size_t len;
      if (rd_kafka_header_get_last(h, names[i], &v, &len) == 0 && v)
        snprintf(vals[i], sizeof(vals[i]), "%.*s", (int)len, (const char *)v);
    }
  chk_add_dead_letter(c, vals[0], vals[1], atoi(vals[2]), atoll(vals[3]));
}

/* Read FU_DLT [0] from its start to its end. */
static void load_dead_letters(fu_world_t *w, chk_t *c) {
  rd_kafka_t *rk = client(w, RD_KAFKA_CONSUMER, "khost-test-dlt-reader");
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, FU_DLT, 0)->offset =
      RD_KAFKA_OFFSET_BEGINNING;
  ck_assert_int_eq(rd_kafka_assign(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  int64_t deadline = tu_mono_ms() + 20000;
  for (int eof = 0; !eof;) {
    ck_assert_msg(tu_mono_ms() < deadline, "cannot read %s", FU_DLT);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m)
      continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
      eof = 1;
    else if (!m->err)
      add_dead_letter(c, m);
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

chk_t *fu_checker(fu_world_t *w, int flags) {
  chk_t *c = chk_new();
  char err[1024];
  int dbs[64] = {0};
  pthread_mutex_lock(&w->mu);
  for (guint i = 0; i < w->produced->len; i++) {
    const fu_rec_t *r = w->produced->pdata[i];
    chk_add_produced(c, r->topic, r->partition, r->offset, r->id);
  }
  pthread_mutex_unlock(&w->mu);
  for (guint i = 0; i < w->runs->len; i++) {
    const fu_proc_t *p = w->runs->pdata[i];
    if (p->db < 0)
      continue;
    chk_add_run(c, (long)p->pid, p->db, p->start_ms,
                p->exited ? p->end_ms : INT64_MAX);
    char *path = fu_db_path(w, p->db);
    if (p->db < 64 && !dbs[p->db]++ && access(path, F_OK) == 0)
      ck_assert_msg(
          chk_load_marks(c, p->db, path, FU_PIPELINE, err, sizeof(err)) == 0,
          "%s", err);
    free(path);
  }
  char *log = fu_path(w, "effects.log");
  ck_assert_msg(chk_load_effects(c, log, err, sizeof(err)) == 0, "%s", err);
  free(log);
  for (int p = 0; p < w->partitions; p++) {
    int64_t off = fu_committed(w, p, FU_QUERY_MS);
    ck_assert_msg(off != -1, "cannot read the committed offsets");
    if (off >= 0)
      chk_set_committed(c, FU_TOPIC, p, off);
  }
  if (flags & FU_CHECK_DEAD_LETTERS)
    load_dead_letters(w, c);
  return c;
}

void fu_verify(fu_world_t *w, int flags, chk_summary_t *out) {
  chk_t *c = fu_checker(w, flags);
  GString *why = g_string_new(NULL);
  size_t bad = chk_no_duplicate_effect(c, why) + chk_committed_covered(c, why);
  if (!(flags & FU_CHECK_ANY_ORDER))
    bad += chk_in_order(c, why);
  if (flags & FU_CHECK_AT_END)
    bad += chk_no_loss(c, why) + chk_committed_at_end(c, why);
  chk_summary_t s;
  chk_summary(c, &s);
  fprintf(stderr,
          "checker: %zu produced, %zu calls, %zu effects, %zu dead letters, "
          "%zu marks, %zu handled again after an unrecorded outcome, %zu on "
          "two hosts, %zu violation(s)\n",
          s.produced, s.calls, s.effects, s.dead_letters, s.marks, s.redone,
          s.redone_hosts, bad);
  ck_assert_msg(bad == 0, "%zu violation(s):\n%s", bad, why->str);
  ck_assert_uint_gt(s.produced, 0);
  if (out)
    *out = s;
  g_string_free(why, TRUE);
  chk_free(c);
}

void fu_verify_snapshot(fu_world_t *w, int db) {
  chk_t *c = chk_new();
  char err[1024];
  GString *why = g_string_new(NULL);
  pthread_mutex_lock(&w->mu);
  for (guint i = 0; i < w->produced->len; i++) {
    const fu_rec_t *r = w->produced->pdata[i];
    chk_add_produced(c, r->topic, r->partition, r->offset, r->id);
  }
  pthread_mutex_unlock(&w->mu);
  char *path = fu_db_path(w, db);
  if (access(path, F_OK) == 0)
    ck_assert_msg(chk_load_marks(c, db, path, FU_PIPELINE, err, sizeof(err)) ==
                      0,
                  "%s", err);
  free(path);
  for (int p = 0; p < w->partitions; p++) {
    int64_t off = fu_committed(w, p, FU_QUERY_MS);
    ck_assert_msg(off != -1, "cannot read the committed offsets");
    if (off >= 0)
      chk_set_committed(c, FU_TOPIC, p, off);
  }
  size_t bad = chk_committed_covered(c, why);
  ck_assert_msg(bad == 0, "after a kill: %s", why->str);
  g_string_free(why, TRUE);
  chk_free(c);
}
