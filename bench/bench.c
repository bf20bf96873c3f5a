/*
 * khost benchmark. Two modes.
 *
 * Mock mode (default): records/s of consuming from librdkafka's in-process
 * mock cluster while a producer thread keeps writing to it, for
 *   (a) a minimal raw librdkafka consumer loop,
 *   (b) khost with a no-op plugin, dedup off,
 *   (c) the same with dedup on (random-UUID event IDs), empty store,
 *   (d) the same with a store already holding 10 million IDs,
 *   (e) (c) with one host-state put per record (the noop plugin's
 *       state_put), which the target puts at >= 0.8 of (c),
 * and the ratios to (a), all measured in one run (this machine is noisy:
 * only ratios within a run mean something). --modes runs only the modes
 * it names (`--modes ce` for e/c alone); --state-keys sets how many keys
 * per partition mode (e) writes (1024, see noop.c); --dedup-memory sets
 * the store's dedup.memory (a small one makes a short run reach the
 * steady state, where the segment thread moves IDs out of the set).
 *
 * The mock cluster keeps only a bounded window of each partition (~29k
 * records of this size), so the producer runs concurrently, at most
 * `window` records ahead of the consumer, with a head start of a full
 * window: the consumer, not the producer, should be the bottleneck. Each
 * mode reports the share of its run the producer spent waiting for the
 * consumer: near 0 % means that mode was producer-bound and its rate is a
 * lower bound.
 *
 * Real-broker mode (--bootstrap): a topic of a real Kafka cluster is
 * filled first (--produce), then consumed whole by (a), (b) and (c), and
 * with -s by (d), each with a group of its own, printing one "MODE
 * RECORDS/S" line per mode for bench/real-broker, which adds Kafka's own
 * consumer and kcat: the rate from the first record to the last, and as
 * "MODE-wall" the rate over the wall time from creating the client (or
 * opening the host, with its store) to the last record. --modes runs only
 * the modes it names here too (`--modes d` for (d) alone, e.g. under a
 * profiler).
 *
 * Usage: khost-bench [-n RECORDS] [-r ROUNDS] [-s STORE_IDS] [-d DIR]
 *                    [--modes LETTERS] [--state-keys N] [--dedup-memory SIZE]
 *        khost-bench --bootstrap SERVERS --topic TOPIC --produce
 *                    [--partitions N] [--value-size BYTES] [-n RECORDS]
 *        khost-bench --bootstrap SERVERS --topic TOPIC [-n RECORDS] [-d DIR]
 *                    [-s STORE_IDS] [--modes LETTERS]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_pg.h"
#include "config.h"
#include "dedup.h"
#include "host.h"
#include "log.h"
#include "mock.h"

#define PARTITIONS 6
#define WINDOW_PER_PARTITION 20000
#define VALUE_SIZE 100

typedef struct bench {
  mock_t *mock; /* NULL in real-broker mode */
  const char *bootstraps;
  const char *dir;
  const char *noop;
  long n;
  long window;
  long store_ids;
  int topics; /* topics created so far: each run gets a fresh one */
  /* real-broker mode: the pre-filled topic every run consumes */
  const char *topic;
  int partitions;
  int value_size;
  int runs;                 /* runs so far: each gets a group of its own */
  int store_set;            /* -s given: real-broker mode adds mode (d) */
  int pg;                   /* --postgresql: mock mode adds mode (f) */
  const char *conninfo;     /* the run's store is PostgreSQL, not db */
  const char *modes;        /* --modes: the mock-mode letters to run */
  long state_keys;          /* --state-keys: mode (e)'s keys per partition */
  const char *dedup_memory; /* --dedup-memory: dedup.memory, or NULL */
  double wall;              /* records/s of the last run over its wall time */
} bench_t;

typedef struct run {
  bench_t *b;
  char topic[64];
  char group[96]; /* suffix of the consumer group: unique per run */
  long last_got;  /* consumed at the last progress check */
  double last_progress;
  _Atomic long consumed;
  _Atomic int stop;
  _Atomic int measuring; /* the consumer has seen its first record */
  double began;          /* run_begin(): before the client or host exists */
  double waited;         /* seconds the producer waited for the consumer */
  pthread_t producer;
} run_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "khost-bench: %s: %s\n", what, why);
  exit(1);
}

/* A random version-4 UUID in text, from a fast PRNG (xorshift128+). */
static void random_uuid(uint64_t s[2], char out[37]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char b[16];
  for (int k = 0; k < 2; k++) {
    uint64_t x = s[0], y = s[1];
    s[0] = y;
    x ^= x << 23;
    s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    uint64_t r = s[1] + y;
    memcpy(b + 8 * k, &r, 8);
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  for (int i = 0, o = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 15];
  }
  out[36] = '\0';
}

/* A record the broker refused is a benchmark that measures nothing. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  (void)rk, (void)opaque;
  if (m->err)
    die("produce", rd_kafka_err2str(m->err));
}

static rd_kafka_t *new_producer(const bench_t *b) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", b->bootstraps, NULL, 0);
  rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
  rd_kafka_conf_set(conf, "batch.num.messages", "10000", NULL, 0);
  rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", NULL, 0);
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (!rk)
    die("producer", errstr);
  return rk;
}

/* Seeds for random_uuid(): every producer gets IDs no earlier run (nor the
 * prepared store) has, so that dedup runs always see new IDs. */
static void new_seed(uint64_t seed[2], uint64_t salt) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  seed[0] = 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_nsec;
  seed[1] = 0xbf58476d1ce4e5b9ull ^ (uint64_t)ts.tv_sec ^ (salt << 32);
}

/* One record with a new random-UUID eventId header. */
static void produce_one(rd_kafka_t *rk, const char *topic, int32_t partition,
                        const char *value, size_t len, uint64_t seed[2]) {
  char id[37];
  random_uuid(seed, id);
  while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                           RD_KAFKA_V_PARTITION(partition),
                           RD_KAFKA_V_VALUE((void *)value, len),
                           RD_KAFKA_V_HEADER("eventId", id, 36),
                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                           RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
    rd_kafka_poll(rk, 1);
  rd_kafka_poll(rk, 0);
}

static void *produce_main(void *arg) {
  run_t *r = arg;
  rd_kafka_t *rk = new_producer(r->b);
  char value[VALUE_SIZE];
  uint64_t seed[2];
  new_seed(seed, (uint64_t)r->b->topics);
  memset(value, 'v', sizeof(value));
  for (long i = 0; i < r->b->n && !atomic_load(&r->stop); i++) {
    while (i - atomic_load(&r->consumed) >= r->b->window &&
           !atomic_load(&r->stop)) {
      double t = now_s();
      rd_kafka_poll(rk, 0);
      usleep(200);
      if (atomic_load(&r->measuring))
        r->waited += now_s() - t;
    }
    produce_one(rk, r->topic, (int32_t)(i % PARTITIONS), value, sizeof(value),
                seed);
  }
  rd_kafka_flush(rk, 60000);
  rd_kafka_destroy(rk);
  return NULL;
}

/* A fresh topic with a full window already in it, and the producer
 * running. */
static void run_begin(run_t *r, bench_t *b) {
  char err[512];
  memset(r, 0, sizeof(*r));
  r->b = b;
  r->last_progress = now_s();
  r->began = r->last_progress;
  b->runs++;
  if (!b->mock) { /* real broker: the topic is full already */
    snprintf(r->topic, sizeof(r->topic), "%s", b->topic);
    /* Groups of earlier benchmark processes have committed the topic. */
    snprintf(r->group, sizeof(r->group), "%s-%d-%d", r->topic, (int)getpid(),
             b->runs);
    return;
  }
  snprintf(r->topic, sizeof(r->topic), "order-completed-%d", b->topics++);
  snprintf(r->group, sizeof(r->group), "%s", r->topic);
  if (mock_create_topic(b->mock, r->topic, PARTITIONS, err, sizeof(err)))
    die("topic", err);
  pthread_create(&r->producer, NULL, produce_main, r);
  /* Head start: wait until a window's worth is in the cluster. */
  rd_kafka_t *rk = new_producer(b);
  int64_t total;
  do {
    usleep(10000);
    total = 0;
    for (int p = 0; p < PARTITIONS; p++) {
      int64_t lo, hi;
      if (!rd_kafka_query_watermark_offsets(rk, r->topic, p, &lo, &hi, 5000))
        total += hi;
    }
  } while (total < (b->n < b->window ? b->n : b->window) - PARTITIONS);
  rd_kafka_destroy(rk);
}

static void run_end(run_t *r) {
  if (!r->b->mock)
    return;
  atomic_store(&r->stop, 1);
  pthread_join(r->producer, NULL);
}

/* A consumer that makes no progress for a minute measures nothing: stop
 * the benchmark instead of hanging. */
static void check_progress(run_t *r, long got) {
  double t = now_s();
  if (got != r->last_got) {
    r->last_got = got;
    r->last_progress = t;
  } else if (t - r->last_progress > 60) {
    die(r->topic, "no record consumed for 60 s");
  }
}

/* timed: the records of secs; all: every record, over the wall time. */
static double report(const run_t *r, long timed, long all, double secs,
                     double end) {
  double rate = (double)timed / secs;
  r->b->wall = (double)all / (end - r->began);
  if (r->b->mock)
    printf("  %-22s %10.0f records/s   producer waited %3.0f %% of the run\n",
           r->topic, rate, 100.0 * r->waited / secs);
  fflush(stdout);
  return rate;
}

/* Mode (a): subscribe, poll, count. */
static double run_raw(bench_t *b) {
  run_t r;
  char errstr[512], group[128];
  run_begin(&r, b);
  snprintf(group, sizeof(group), "raw-%s", r.group);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", b->bootstraps, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", NULL, 0);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (!rk)
    die("consumer", errstr);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(t, r.topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, t);
  rd_kafka_topic_partition_list_destroy(t);
  double start = 0;
  long got = 0;
  while (got < b->n) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    check_progress(&r, got);
    if (!m)
      continue;
    if (!m->err && got++ == 0) {
      start = now_s();
      atomic_store(&r.measuring, 1);
    }
    atomic_store_explicit(&r.consumed, got, memory_order_relaxed);
    rd_kafka_message_destroy(m);
  }
  double end = now_s(), secs = end - start;
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  run_end(&r);
  return report(&r, got, got, secs, end);
}

/* dedup: 0 off, 1 on, 2 on with one state put per record. */
static char *write_config(bench_t *b, const run_t *r, int dedup,
                          const char *db) {
  char *path = NULL;
  if (asprintf(&path, "%s/bench.cfg", b->dir) < 0)
    die("config", "out of memory");
  FILE *f = fopen(path, "w");
  if (!f)
    die(path, "cannot write");
  fprintf(f, "log_level = \"warning\";\n");
  if (b->conninfo)
    fprintf(f,
            "store = { backend = \"postgresql\"; conninfo = \"%s\";\n"
            "  retention = \"30d\"; };\n",
            b->conninfo);
  else if (b->dedup_memory)
    fprintf(f,
            "dedup = { path = \"%s\"; retention = \"30d\"; memory = \"%s\"; "
            "};\n",
            db, b->dedup_memory);
  else
    fprintf(f, "dedup = { path = \"%s\"; retention = \"30d\"; };\n", db);
  fprintf(f,
          "kafka = { bootstrap_servers = \"%s\"; };\n"
          "pipelines = ({ name = \"bench\"; group_id = \"khost-%s\";\n"
          "  topics = [\"%s\"]; members = 1; plugin = \"%s\";\n"
          "  dedup = %s; max_batch = 500;\n"
          "  config = { state_put = %s; state_keys = %ld; }; });\n",
          b->bootstraps, r->group, r->topic, b->noop, dedup ? "true" : "false",
          dedup == 2 ? "true" : "false", b->state_keys);
  fclose(f);
  return path;
}

/* How often modes (b)-(d) look at the pipeline's counts. Each look wakes
 * this thread, which takes a CPU from the host's threads on a machine with
 * as many busy threads as cores: every 500 us, it preempted the member
 * thread about 750 times per million records. */
#define WATCH_US 5000

/* Modes (b)-(d): a whole khost in this process, timed from its first
 * handled record seen to the last (the records counted at the first look
 * are not in the rate). */
static double run_khost(bench_t *b, int dedup, const char *db) {
  run_t r;
  cfg_t cfg;
  host_t *h = NULL;
  host_opts_t opts = {0};
  pipeline_stats_t s;
  char err[4096];
  run_begin(&r, b);
  char *path = write_config(b, &r, dedup, db);
  if (cfg_load(&cfg, path, err, sizeof(err)) != 0)
    die(path, err);
  if (host_open(&h, &cfg, &opts, err, sizeof(err)) ||
      host_start(h, err, sizeof(err)))
    die("khost", err);
  double start = 0;
  long got = 0, got0 = 0;
  while (got < b->n) {
    usleep(WATCH_US);
    host_pipeline_stats(h, 0, &s);
    got = (long)(s.handled + s.duplicates);
    check_progress(&r, got);
    if (got > 0 && start == 0) {
      start = now_s();
      got0 = got;
      atomic_store(&r.measuring, 1);
    }
    atomic_store(&r.consumed, got);
  }
  double end = now_s(), secs = end - start;
  host_request_stop(h);
  host_wait(h, -1);
  host_finish(h);
  host_close(h);
  cfg_free(&cfg);
  free(path);
  run_end(&r);
  return report(&r, got - got0, got, secs, end);
}

/* Remove an SQLite database with its -wal and -shm files. */
static void remove_db(const char *path) {
  char side[600];
  unlink(path);
  snprintf(side, sizeof(side), "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof(side), "%s-shm", path);
  unlink(side);
}

/* Copy the closed database from to a fresh file to. */
static void copy_db(const char *from, const char *to) {
  int in = open(from, O_RDONLY), out;
  struct stat st;
  char wal[600];
  snprintf(wal, sizeof(wal), "%s-wal", from);
  if (stat(wal, &st) == 0 && st.st_size > 0) /* closing checkpoints it */
    die(from, "its write-ahead log is not empty: is it still open?");
  remove_db(to);
  out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (in < 0 || out < 0 || fstat(in, &st) != 0)
    die(to, strerror(errno));
  for (off_t left = st.st_size; left > 0;) {
    ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
    if (n <= 0)
      die(to, n < 0 ? strerror(errno) : "short copy");
    left -= n;
  }
  close(in);
  close(out);
}

/* The template as a host running with its memory bound leaves it: the
 * marks beyond the default dedup memory moved to segments on disk. A
 * template holding them all in its log would make every run load them
 * into memory at start and then write them to a segment while it is
 * being timed, which a host that ran before never does. */
static void segment_store(dedup_store_t *s, const char *path) {
  char err[1024];
  dedup_stats_t st;
  dedup_stats(s, &st);
  if (st.recent_ids <= dedup_memory_ids(CFG_DEDUP_MEMORY_DEFAULT))
    return;
  double t = now_s();
  if (dedup_segment_now(s, NULL, err, sizeof(err)) != 0 ||
      dedup_merge_now(s, NULL, err, sizeof(err)) != 0)
    die(path, err);
  printf("store %s: %zu IDs moved to segments in %.1f s\n", path, st.recent_ids,
         now_s() - t);
}

/* A store holding `ids` random-UUID marks of pipeline "bench", built once
 * and reused by later runs (building 10M takes a while). */
static long prepare_store(const bench_t *b, const char *path, long ids) {
  char err[1024];
  dedup_store_t *s;
  dedup_writer_t *w;
  uint32_t scope;
  dedup_opts_t o = {.path = path, .retention_ms = 30LL * 86400 * 1000};
  if (dedup_open(&s, &o, err, sizeof(err)) != 0)
    die(path, err);
  long have = (long)dedup_size(s);
  if (have == ids) {
    printf("store %s: %ld IDs (reused)\n", path, have);
    segment_store(s, path);
    dedup_close(s);
    return have;
  }
  if (have > ids) { /* grown by runs of an older benchmark: start over */
    dedup_close(s);
    remove_db(path);
    return prepare_store(b, path, ids);
  }
  if (dedup_scope(s, "bench", &scope, err, sizeof(err)) ||
      dedup_writer_open(s, &w, err, sizeof(err)))
    die(path, err);
  printf("store %s: adding %ld IDs ...\n", path, ids - have);
  fflush(stdout);
  double t = now_s();
  uint64_t seed[2] = {0x243f6a8885a308d3ull, (uint64_t)have + 1};
  char id[37];
  for (long i = have; i < ids; i++) {
    random_uuid(seed, id);
    dedup_mark_t m = {.scope = scope,
                      .event_id = id,
                      .event_id_len = 36,
                      .topic = "order-completed",
                      .partition = (int32_t)(i % 6),
                      .offset = i,
                      .handled_at_ms = dedup_now_ms()};
    dedup_claim(s, scope, id, 36);
    dedup_writer_add(w, &m);
    if ((i + 1) % 10000 == 0 || i + 1 == ids) {
      if (dedup_writer_commit(w, NULL, err, sizeof(err)) != 0)
        die(path, err);
    }
  }
  printf("store %s: %ld IDs in %.1f s\n", path, ids, now_s() - t);
  dedup_writer_close(w);
  segment_store(s, path);
  dedup_close(s);
  (void)b;
  return ids;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ------------------------------------------------------------ mock mode */

/* Mode m (a letter of "abcde") is to run: every mode without --modes. */
static int want(const bench_t *b, char m) {
  return !b->modes || strchr(b->modes, m) != NULL;
}

/* One line of the table; the ratio to (a) only when (a) ran. */
static void print_mode(const bench_t *b, char m, const char *label, double rate,
                       double ma) {
  if (!want(b, m))
    return;
  if (want(b, 'a'))
    printf("%-52s %12.0f %8.2f\n", label, rate, rate / ma);
  else
    printf("%-52s %12.0f %8s\n", label, rate, "-");
}

static void main_mock(bench_t *b, int rounds) {
  char err[512], template[512], full[512], empty[512];
  /* Runs add the IDs they consume: each (c, full) run gets a copy of the
   * store, which keeps exactly store_ids. */
  snprintf(template, sizeof(template), "%s/store-%ld.db", b->dir, b->store_ids);
  snprintf(full, sizeof(full), "%s/store-run.db", b->dir);
  long stored = prepare_store(b, template, b->store_ids);
  char *conninfo = b->pg ? bench_pg_start(b->dir, b->store_ids) : NULL;
  if (mock_start(&b->mock, 1, err, sizeof(err)) != 0)
    die("mock cluster", err);
  b->bootstraps = mock_bootstraps(b->mock);
  b->window = (long)PARTITIONS * WINDOW_PER_PARTITION;
  printf("\n%ld records per run, %d partitions, %d-byte values, random-UUID "
         "eventId headers;\nproducer at most %ld records ahead; %d round(s), "
         "medians reported\n\n",
         b->n, PARTITIONS, VALUE_SIZE, b->window, rounds);
  double a[16], bb[16], ce[16], cf[16], cs[16], cp[16];
  for (int i = 0; i < rounds; i++) {
    printf("round %d\n", i + 1);
    snprintf(empty, sizeof(empty), "%s/empty.db", b->dir);
    remove_db(empty);
    a[i] = want(b, 'a') ? run_raw(b) : 0;
    bb[i] = want(b, 'b') ? run_khost(b, 0, empty) : 0;
    ce[i] = want(b, 'c') ? run_khost(b, 1, empty) : 0;
    remove_db(empty);
    cs[i] = want(b, 'e') ? run_khost(b, 2, empty) : 0;
    copy_db(template, full);
    cf[i] = want(b, 'd') ? run_khost(b, 1, full) : 0;
    remove_db(empty);
    remove_db(full);
    if (conninfo) {
      int64_t since = dedup_now_ms();
      b->conninfo = conninfo;
      cp[i] = run_khost(b, 1, NULL);
      b->conninfo = NULL;
      bench_pg_reset(conninfo, since);
    }
  }
  double ma = median(a, rounds), mb = median(bb, rounds),
         mce = median(ce, rounds), mcf = median(cf, rounds),
         mcs = median(cs, rounds);
  printf("\n%-52s %12s %8s\n", "mode", "records/s", "ratio");
  print_mode(b, 'a', "(a) raw librdkafka consumer loop", ma, ma);
  print_mode(b, 'b', "(b) khost, no-op plugin, dedup off", mb, ma);
  print_mode(b, 'c', "(c) khost, no-op plugin, dedup on, empty store", mce, ma);
  char label[96];
  snprintf(label, sizeof(label),
           "(c) khost, no-op plugin, dedup on, %ld IDs stored", stored);
  print_mode(b, 'd', label, mcf, ma);
  print_mode(b, 'e', "(e) khost, no-op plugin, dedup on, a state put each", mcs,
             ma);
  if (want(b, 'a') && want(b, 'b') && want(b, 'd'))
    printf("\nb/a = %.2f (target >= 0.9), c/a with %ld stored IDs = %.2f "
           "(target >= 0.4)\n",
           mb / ma, stored, mcf / ma);
  if (want(b, 'c') && want(b, 'e'))
    printf("e/c (a state put per record against dedup alone) = %.2f "
           "(target >= 0.8)\n",
           mcs / mce);
  if (conninfo) {
    double mcp = median(cp, rounds);
    printf("(f) khost, no-op plugin, dedup on, postgresql, %ld IDs: %.0f "
           "records/s (target >= 100000)",
           stored, mcp);
    /* The ratios of the modes that ran (`--modes f` runs (f) alone). */
    if (want(b, 'a'))
      printf(", %.2f of (a)", mcp / ma);
    if (want(b, 'd'))
      printf(", %.2f of (c) with the SQLite file of %ld IDs", mcp / mcf,
             stored);
    printf("\n");
    bench_pg_stop(b->dir);
    free(conninfo);
  }
  mock_stop(b->mock);
}

/* ------------------------------------------------------ real-broker mode */

/* The topic with the cluster's default replication. */
static void create_topic(const bench_t *b, rd_kafka_t *rk) {
  char errstr[512];
  rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(b->topic, b->partitions, -1,
                                                  errstr, sizeof(errstr));
  if (!nt)
    die(b->topic, errstr);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
  size_t n = 0;
  const rd_kafka_topic_result_t **res =
      ev ? rd_kafka_CreateTopics_result_topics(
               rd_kafka_event_CreateTopics_result(ev), &n)
         : NULL;
  if (!ev || rd_kafka_event_error(ev))
    die(b->topic, ev ? rd_kafka_event_error_string(ev) : "no answer");
  if (n != 1 || rd_kafka_topic_result_error(res[0]))
    die(b->topic,
        n == 1 ? rd_kafka_topic_result_error_string(res[0]) : "no result");
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
}

/* --produce: create the topic and fill it with b->n records of
 * b->value_size bytes, round robin over its partitions. */
static void produce_real(bench_t *b) {
  rd_kafka_t *rk = new_producer(b);
  char *value = malloc((size_t)b->value_size);
  uint64_t seed[2];
  create_topic(b, rk);
  new_seed(seed, (uint64_t)getpid());
  memset(value, 'v', (size_t)b->value_size);
  double t = now_s();
  for (long i = 0; i < b->n; i++)
    produce_one(rk, b->topic, (int32_t)(i % b->partitions), value,
                (size_t)b->value_size, seed);
  if (rd_kafka_flush(rk, 300000) != 0)
    die(b->topic, "records still unacknowledged after 300 s");
  printf("produced %ld records of %d bytes to %s (%d partitions) in %.1f s\n",
         b->n, b->value_size, b->topic, b->partitions, now_s() - t);
  rd_kafka_destroy(rk);
  free(value);
}

/* Records in the topic: the sum of its partitions' end offsets. */
static long topic_records(const bench_t *b) {
  rd_kafka_t *rk = new_producer(b);
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, b->topic, NULL);
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
  if (e || md->topic_cnt != 1 || md->topics[0].err)
    die(b->topic, rd_kafka_err2str(e ? e : md->topics[0].err));
  long total = 0;
  for (int p = 0; p < md->topics[0].partition_cnt; p++) {
    int64_t lo, hi;
    e = rd_kafka_query_watermark_offsets(rk, b->topic, p, &lo, &hi, 10000);
    if (e)
      die(b->topic, rd_kafka_err2str(e));
    total += (long)(hi - lo);
  }
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
  return total;
}

/* The modes of real-broker mode, in the order they run. */
enum { REAL_RAW, REAL_OFF, REAL_ON, REAL_STORED, REAL_MODES };
static const char *const real_names[REAL_MODES] = {
    "raw", "khost-dedup-off", "khost-dedup-on", "khost-dedup-stored"};

/* One run of mode m on the topic: its rate into rate[m], its wall-time
 * rate into wall[m]. */
static void real_run(bench_t *b, int m, const char *db, double *rate,
                     double *wall) {
  if (m == REAL_RAW)
    rate[m] = run_raw(b);
  else
    rate[m] = run_khost(b, m != REAL_OFF, db);
  wall[m] = b->wall;
}

/* Consume the whole topic with (a), (b), (c) and, with -s, (d): each with
 * a group of its own; "MODE RECORDS/S" and "MODE-wall RECORDS/S" lines
 * (medians of the rounds). */
static void main_real(bench_t *b, int rounds) {
  char db[512], stored[512];
  double rate[REAL_MODES][16], wall[REAL_MODES][16], r[REAL_MODES],
      w[REAL_MODES];
  int modes = b->store_set ? REAL_MODES : REAL_STORED;
  b->n = topic_records(b);
  if (b->n < 1)
    die(b->topic, "the topic is empty (fill it with --produce)");
  snprintf(db, sizeof(db), "%s/real-%s.db", b->dir, b->topic);
  snprintf(stored, sizeof(stored), "%s/store-%ld.db", b->dir, b->store_ids);
  if (b->store_set)
    prepare_store(b, stored, b->store_ids);
  for (int i = 0; i < rounds; i++) {
    for (int m = 0; m < modes; m++) {
      if (!want(b, "abcd"[m]))
        continue;
      remove_db(db);
      if (m == REAL_STORED)
        copy_db(stored, db);
      real_run(b, m, db, r, w);
      rate[m][i] = r[m];
      wall[m][i] = w[m];
    }
    remove_db(db);
  }
  printf("records %ld\n", b->n);
  for (int m = 0; m < modes; m++) {
    if (!want(b, "abcd"[m]))
      continue;
    printf("%s %.0f\n", real_names[m], median(rate[m], rounds));
    printf("%s-wall %.0f\n", real_names[m], median(wall[m], rounds));
  }
}

static int usage(void) {
  fprintf(stderr,
          "usage: khost-bench [-n RECORDS] [-r ROUNDS] [-s STORE_IDS] [-d "
          "DIR]\n"
          "                   [--postgresql] [--modes LETTERS] [--state-keys "
          "N]\n"
          "                   [--dedup-memory SIZE]\n"
          "       khost-bench --bootstrap SERVERS --topic TOPIC --produce\n"
          "                   [--partitions N] [--value-size BYTES] [-n "
          "RECORDS]\n"
          "       khost-bench --bootstrap SERVERS --topic TOPIC [-r ROUNDS] "
          "[-d DIR]\n"
          "                   [-s STORE_IDS] [--modes LETTERS]\n");
  return 2;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"bootstrap", required_argument, NULL, 'B'},
      {"topic", required_argument, NULL, 'T'},
      {"produce", no_argument, NULL, 'P'},
      {"partitions", required_argument, NULL, 'p'},
      {"value-size", required_argument, NULL, 'v'},
      {"postgresql", no_argument, NULL, 'G'},
      {"modes", required_argument, NULL, 'M'},
      {"state-keys", required_argument, NULL, 'K'},
      {"dedup-memory", required_argument, NULL, 'D'},
      {NULL, 0, NULL, 0}};
  bench_t b = {.n = 1000000,
               .store_ids = 10000000,
               .dir = "/tmp/khost-bench",
               .partitions = 3,
               .value_size = 200,
               .state_keys = 1024};
  int rounds = 0, produce = 0, c;
  while ((c = getopt_long(argc, argv, "n:r:s:d:", longopts, NULL)) != -1) {
    switch (c) {
    case 'n':
      b.n = atol(optarg);
      break;
    case 'r':
      rounds = atoi(optarg);
      break;
    case 's':
      b.store_ids = atol(optarg);
      b.store_set = 1;
      break;
    case 'd':
      b.dir = optarg;
      break;
    case 'B':
      b.bootstraps = optarg;
      break;
    case 'T':
      b.topic = optarg;
      break;
    case 'P':
      produce = 1;
      break;
    case 'p':
      b.partitions = atoi(optarg);
      break;
    case 'v':
      b.value_size = atoi(optarg);
      break;
    case 'G':
      b.pg = 1;
      break;
    case 'M':
      b.modes = optarg;
      break;
    case 'K':
      b.state_keys = atol(optarg);
      break;
    case 'D':
      b.dedup_memory = optarg;
      break;
    default:
      return usage();
    }
  }
  if (optind < argc || !b.bootstraps != !b.topic || (produce && !b.topic))
    return usage();
  if (rounds == 0)
    rounds = b.bootstraps ? 1 : 3; /* the real topic is big already */
  if (rounds < 1 || rounds > 16 || b.n < 1000 || b.partitions < 1 ||
      b.value_size < 1 || b.state_keys < 1)
    die("usage", "-r takes 1..16, -n at least 1000, --partitions, "
                 "--value-size and --state-keys at least 1");
  mkdir(b.dir, 0755);
  b.noop = getenv("KHOST_BENCH_PLUGIN") ? getenv("KHOST_BENCH_PLUGIN")
                                        : "bench/.libs/noop.so";
  log_set_level(KHOST_LOG_WARNING);
  if (produce)
    produce_real(&b);
  else if (b.bootstraps)
    main_real(&b, rounds);
  else
    main_mock(&b, rounds);
  return 0;
}
