/*
 * The store-scale curve of the SQLite dedup store (not a test): stores of
 * 0, 10M, 100M... IDs built through the store's own write path (batches of
 * marks into the packed log, segments written and merged as a host's
 * segment thread does), then, in a fresh child process per store, the
 * time dedup_open() takes (what a start needs), the rate of new records
 * through the store (claim, mark, one commit per batch), lookups of IDs
 * the store holds, peak RSS, and the database's bytes per ID. See
 * bench/README.md.
 */
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dedup.h"
#include "id_hash.h"

#define BATCH 500
#define SEEN_QUERIES 100000

typedef struct opts {
  const char *dir;
  uint64_t memory_ids; /* the set's budget, as dedup.memory gives it */
  uint64_t merge_max;  /* the biggest merge (0: the store's default) */
  uint64_t records;    /* new records measured */
  int no_ahead;        /* -P: no look-ahead (as khost did before it) */
} opts_t;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* ID number i of a stream (seed): a random-looking lower-case UUID. */
static void uuid_of(uint64_t seed, uint64_t i, char out[37]) {
  uint64_t a = XXH3_64bits_withSeed(&i, sizeof i, seed);
  uint64_t b = XXH3_64bits_withSeed(&i, sizeof i, seed + 1);
  snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012" PRIx64, (unsigned)(a >> 32),
           (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
           (unsigned)(b >> 48) & 0xfff, b & UINT64_C(0xffffffffffff));
}

static void die(const char *what, const char *err) {
  fprintf(stderr, "store-scale: %s: %s\n", what, err);
  exit(1);
}

static dedup_store_t *open_store(const char *path, uint64_t memory_ids,
                                 uint64_t merge_max, uint32_t *scope) {
  dedup_opts_t o = {
      .path = path, .memory_ids = memory_ids, .merge_max_ids = merge_max};
  dedup_store_t *s = NULL;
  char err[512];
  if (dedup_open(&s, &o, err, sizeof err) != 0 ||
      dedup_scope(s, "bench", scope, err, sizeof err) != 0)
    die(path, err);
  return s;
}

/* Mark IDs [first, first + n) of stream seed in one batch; claim them
 * first when claim is set (each must be new), as a member does: the next
 * ID hashed and its lines fetched (dedup_prefetch()) before this one's
 * claim, unless ahead is 0. */
static void put_batch(dedup_store_t *s, dedup_writer_t *w, uint32_t scope,
                      uint64_t seed, uint64_t first, uint64_t n, int claim,
                      int ahead) {
  char id[37], next[37], err[512];
  uint64_t hash = ID_HASH_NONE, next_hash = ID_HASH_NONE;
  for (uint64_t i = first; i < first + n; i++) {
    uuid_of(seed, i, id);
    if (claim && ahead) {
      hash = i == first ? id_hash(scope, id, 36) : next_hash;
      uuid_of(seed, i + 1, next);
      next_hash = id_hash(scope, next, 36);
      dedup_prefetch(s, next_hash);
    }
    if (claim && dedup_claim_h(s, scope, id, 36, hash, 0, 0) != DEDUP_NEW)
      die("claim", "a new ID was not new");
    dedup_mark_t m = {.scope = scope,
                      .event_id = id,
                      .event_id_len = 36,
                      .topic = "orders",
                      .partition = (int32_t)(i % 3),
                      .offset = (int64_t)(i / 3),
                      .handled_at_ms = dedup_now_ms()};
    dedup_writer_add(w, &m);
  }
  if (dedup_writer_commit(w, NULL, err, sizeof err) != 0)
    die("commit", err);
}

/* The IDs in the store's in-memory set (dedup_size() counts those in
 * segments too). */
static size_t recent_ids(dedup_store_t *s) {
  dedup_stats_t st;
  dedup_stats(s, &st);
  return st.recent_ids;
}

/* The store of `ids` IDs under o->dir, built once (a file left by an
 * earlier run is reused): batches through the writer, and a segment (then
 * merges) each time the set holds memory_ids, as the segment thread does
 * (here in line, so that building cannot outrun it). */
static char *build_store(const opts_t *o, uint64_t ids) {
  char *path = g_strdup_printf("%s/store-%" PRIu64 ".db", o->dir, ids);
  char *tmp = g_strdup_printf("%s.tmp", path), err[512];
  struct stat st;
  uint32_t scope;
  if (stat(path, &st) == 0)
    goto out;
  unlink(tmp);
  double t0 = now_s();
  dedup_store_t *s = open_store(tmp, 0, o->merge_max, &scope);
  dedup_writer_t *w = NULL;
  if (dedup_writer_open(s, &w, err, sizeof err) != 0)
    die(tmp, err);
  for (uint64_t i = 0; i < ids; i += BATCH) {
    put_batch(s, w, scope, 1, i, MIN(BATCH, ids - i), 0, 0);
    if (o->memory_ids && recent_ids(s) > o->memory_ids &&
        (dedup_segment_now(s, NULL, err, sizeof err) != 0 ||
         dedup_merge_now(s, NULL, err, sizeof err) != 0))
      die(tmp, err);
  }
  dedup_writer_close(w);
  dedup_close(s);
  if (rename(tmp, path) != 0) {
    perror(path);
    exit(1);
  }
  fprintf(stderr, "built %s in %.1f s\n", path, now_s() - t0);
out:
  g_free(tmp);
  return path;
}

/* IDs the store holds, looked up at random: how many are seen. */
static uint64_t seen_lookups(dedup_store_t *s, uint32_t scope, uint64_t ids,
                             uint64_t n) {
  char id[37];
  uint64_t seen = 0;
  for (uint64_t q = 0; q < n; q++) {
    uuid_of(1, XXH3_64bits(&q, sizeof q) % ids, id);
    seen += dedup_claim(s, scope, id, 36) == DEDUP_SEEN;
  }
  return seen;
}

/* Bytes of the database and its write-ahead log. */
static uint64_t disk_bytes(const char *path) {
  char *wal = g_strdup_printf("%s-wal", path);
  struct stat st;
  uint64_t n = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
  n += stat(wal, &st) == 0 ? (uint64_t)st.st_size : 0;
  g_free(wal);
  return n;
}

/* One store, in a process of its own (so that its peak RSS is its own):
 * the new records go to a copy's end of the log, so a store is measured
 * as built each time. */
static int measure(const char *path, uint64_t ids, const opts_t *o) {
  uint32_t scope;
  char err[512];
  double t0 = now_s();
  uint64_t bytes = disk_bytes(path);
  dedup_store_t *s = open_store(path, o->memory_ids, o->merge_max, &scope);
  double start = now_s() - t0;
  dedup_writer_t *w = NULL;
  if (dedup_writer_open(s, &w, err, sizeof err) != 0)
    die(path, err);
  t0 = now_s();
  for (uint64_t i = 0; i < o->records; i += BATCH)
    put_batch(s, w, scope, 2, i, MIN(BATCH, o->records - i), 1, !o->no_ahead);
  double rate = o->records / (now_s() - t0);
  t0 = now_s();
  uint64_t hit = ids ? seen_lookups(s, scope, ids, SEEN_QUERIES) : 0;
  double seen_rate = ids ? SEEN_QUERIES / (now_s() - t0) : 0;
  dedup_stats_t st;
  dedup_stats(s, &st);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%12" PRIu64 " IDs  start %.3f s  %8.0f records/s  seen %7.0f/s"
         " (%" PRIu64 "/%d)  %3zu segments  peak RSS %6.1f MB"
         "  %5.1f B/ID on disk\n",
         ids, start, rate, seen_rate, hit, ids ? SEEN_QUERIES : 0, st.segments,
         ru.ru_maxrss / 1024.0, ids ? (double)bytes / ids : 0.0);
  fflush(stdout);
  dedup_writer_close(w);
  dedup_close(s);
  return ids && hit != SEEN_QUERIES;
}

/* A throwaway copy of the store (the measurement writes to it). */
static char *copy_store(const char *path) {
  char *copy = g_strdup_printf("%s.run", path);
  char *cmd = g_strdup_printf("cp --sparse=never '%s' '%s'", path, copy);
  char *wal = g_strdup_printf("%s-wal", copy),
       *shm = g_strdup_printf("%s-shm", copy);
  unlink(wal);
  unlink(shm);
  if (system(cmd) != 0) {
    fprintf(stderr, "store-scale: %s failed\n", cmd);
    exit(1);
  }
  g_free(cmd);
  g_free(wal);
  g_free(shm);
  return copy;
}

static void usage(void) {
  fprintf(stderr, "usage: khost-store-scale [-d DIR] [-m MEMORY_IDS]"
                  " [-M MERGE_MAX_IDS] [-r RECORDS] [-P] SIZE...\n");
  exit(2);
}

int main(int argc, char **argv) {
  opts_t o = {.dir = "/tmp/khost-store-scale",
              .memory_ids = dedup_memory_ids((uint64_t)256 << 20),
              .records = 2000000};
  int c, bad = 0;
  while ((c = getopt(argc, argv, "d:m:M:r:P")) != -1) {
    if (c == 'd')
      o.dir = optarg;
    else if (c == 'm')
      o.memory_ids = strtoull(optarg, NULL, 10);
    else if (c == 'M')
      o.merge_max = strtoull(optarg, NULL, 10);
    else if (c == 'r')
      o.records = strtoull(optarg, NULL, 10);
    else if (c == 'P')
      o.no_ahead = 1;
    else
      usage();
  }
  if (optind >= argc || o.records == 0)
    usage();
  g_mkdir_with_parents(o.dir, 0700);
  for (int i = optind; i < argc; i++) {
    uint64_t ids = strtoull(argv[i], NULL, 10);
    char *path = build_store(&o, ids);
    char *copy = copy_store(path);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0)
      _exit(measure(copy, ids, &o));
    int status = 0;
    waitpid(pid, &status, 0);
    bad |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    unlink(copy);
    g_free(copy);
    g_free(path);
  }
  return bad;
}
