/*
 * khost concurrency benchmark: records/s of one member over 3 partitions
 * with a plugin whose handle() waits 1 ms (bench/io_wait.c, a stand-in for
 * I/O), for concurrency 1, 8, 64 and 256 in one run, each with its ratio to
 * concurrency 1 and the per-key order verified (order_by = "key").
 *
 * The records are produced first into librdkafka's in-process mock
 * cluster (1,000 keys, each on one partition, its sequence numbers in the
 * value), within the cluster's window; each concurrency then consumes the
 * whole topic with a group of its own, dedup off, timed from its first
 * handled record to the last.
 *
 * Usage: khost-bench-concurrency [-n RECORDS] [-k KEYS] [-w WAIT_US]
 *                                [-c N,N,...]
 */
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "host.h"
#include "mock.h"

#define PARTITIONS 3
#define TOPIC "bench-keys"

typedef struct cbench {
  mock_t *mock;
  const char *plugin;
  char dir[64];
  long n;
  int keys;
  long wait_us;
} cbench_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "khost-bench-concurrency: %s: %s\n", what, why);
  exit(1);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  (void)rk, (void)opaque;
  if (m->err)
    die("produce", rd_kafka_err2str(m->err));
}

/* n records of keys keys: key k on partition k % 3, value "kK SEQ". */
static void produce(const cbench_t *b) {
  char err[512], key[16], value[48];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", mock_bootstraps(b->mock), NULL,
                    0);
  rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk)
    die("producer", err);
  long *seq = calloc((size_t)b->keys, sizeof(*seq));
  for (long i = 0; i < b->n; i++) {
    int k = (int)((i * 7919) % b->keys);
    int klen = snprintf(key, sizeof(key), "k%04d", k);
    int vlen = snprintf(value, sizeof(value), "k%04d %ld", k, seq[k]++);
    while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC),
                             RD_KAFKA_V_PARTITION(k % PARTITIONS),
                             RD_KAFKA_V_KEY(key, (size_t)klen),
                             RD_KAFKA_V_VALUE(value, (size_t)vlen),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(rk, 10);
    rd_kafka_poll(rk, 0);
  }
  if (rd_kafka_flush(rk, 60000) != 0)
    die("produce", "not every record was acknowledged");
  free(seq);
  rd_kafka_destroy(rk);
}

static char *write_config(const cbench_t *b, int concurrency) {
  char *path = NULL;
  if (asprintf(&path, "%s/c%d.cfg", b->dir, concurrency) < 0)
    die("config", "out of memory");
  FILE *f = fopen(path, "w");
  if (!f)
    die(path, "cannot write");
  fprintf(f,
          "log_level = \"warning\";\n"
          "kafka = { bootstrap_servers = \"%s\"; };\n"
          "dedup = { path = \"%s/dedup.db\"; };\n"
          "pipelines = ({ name = \"bench\"; group_id = \"khost-c%d\";\n"
          "  topics = [\"" TOPIC "\"]; members = 1; plugin = \"%s\";\n"
          "  dedup = false; max_batch = 500; concurrency = %d;\n"
          "  order_by = \"key\";\n"
          "  config = { wait_us = %ld; report_path = \"%s/c%d.report\"; };"
          " });\n",
          mock_bootstraps(b->mock), b->dir, concurrency, b->plugin, concurrency,
          b->wait_us, b->dir, concurrency);
  fclose(f);
  return path;
}

/* The plugin's "calls N violations V" of the run. */
static void read_report(const cbench_t *b, int concurrency, long *calls,
                        long *violations) {
  char path[128];
  snprintf(path, sizeof(path), "%s/c%d.report", b->dir, concurrency);
  FILE *f = fopen(path, "r");
  if (!f || fscanf(f, "calls %ld violations %ld", calls, violations) != 2)
    die(path, "no report from the plugin");
  fclose(f);
}

/* One whole khost in this process; records/s from its first handled
 * record to the last. */
static double run(const cbench_t *b, int concurrency, long *violations) {
  cfg_t cfg;
  host_t *h = NULL;
  host_opts_t opts = {0};
  pipeline_stats_t s;
  char err[4096];
  long calls = 0;
  char *path = write_config(b, concurrency);
  if (cfg_load(&cfg, path, err, sizeof(err)) != 0)
    die(path, err);
  if (host_open(&h, &cfg, &opts, err, sizeof(err)) ||
      host_start(h, err, sizeof(err)))
    die("khost", err);
  double start = 0;
  long got = 0;
  while (got < b->n) {
    usleep(500);
    host_pipeline_stats(h, 0, &s);
    got = (long)s.handled;
    if (got > 0 && start == 0)
      start = now_s();
  }
  double secs = now_s() - start;
  host_request_stop(h);
  host_wait(h, -1);
  host_finish(h);
  host_close(h);
  cfg_free(&cfg);
  free(path);
  read_report(b, concurrency, &calls, violations);
  if (calls < b->n)
    die("report", "the plugin saw fewer calls than records");
  return (double)got / secs;
}

static int usage(void) {
  fprintf(stderr, "usage: khost-bench-concurrency [-n RECORDS] [-k KEYS] "
                  "[-w WAIT_US] [-c N,N,...]\n");
  return 2;
}

int main(int argc, char **argv) {
  cbench_t b = {.n = 30000, .keys = 1000, .wait_us = 1000};
  char list[256] = "1,8,64,256", errbuf[512];
  int opt;
  while ((opt = getopt(argc, argv, "n:k:w:c:")) != -1) {
    if (opt == 'n')
      b.n = strtol(optarg, NULL, 10);
    else if (opt == 'k')
      b.keys = (int)strtol(optarg, NULL, 10);
    else if (opt == 'w')
      b.wait_us = strtol(optarg, NULL, 10);
    else if (opt == 'c')
      snprintf(list, sizeof(list), "%s", optarg);
    else
      return usage();
  }
  b.plugin = getenv("KHOST_BENCH_IO_WAIT");
  if (!b.plugin || b.n <= 0 || b.keys <= 0)
    return usage();
  snprintf(b.dir, sizeof(b.dir), "/tmp/khost-bench-c-XXXXXX");
  if (!mkdtemp(b.dir))
    die("mkdtemp", "cannot create a directory");
  if (mock_start(&b.mock, 1, errbuf, sizeof(errbuf)) != 0 ||
      mock_create_topic(b.mock, TOPIC, PARTITIONS, errbuf, sizeof(errbuf)))
    die("mock cluster", errbuf);
  produce(&b);
  printf("%ld records, %d keys, %d partitions, one member, handle() waits "
         "%ld us\n",
         b.n, b.keys, PARTITIONS, b.wait_us);
  printf("| concurrency | records/s | ratio to 1 | order violations |\n"
         "|---:|---:|---:|---:|\n");
  double base = 0;
  for (char *save = NULL, *c = strtok_r(list, ",", &save); c;
       c = strtok_r(NULL, ",", &save)) {
    int concurrency = atoi(c);
    long violations = 0;
    double rate = run(&b, concurrency, &violations);
    if (base == 0)
      base = rate;
    printf("| %d | %.0f | %.1f | %ld |\n", concurrency, rate, rate / base,
           violations);
    fflush(stdout);
  }
  mock_stop(b.mock);
  return 0;
}
