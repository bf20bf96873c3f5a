/*
 * The store-scale curve of the dedup segments (not a test): stores of
 * 0, 10M, 100M... IDs built in bulk as segments (dedup_segment.h), then,
 * in a fresh child process per store, the time to load every segment's
 * metadata, filter and block index (what a start needs), the rate of
 * lookups of new IDs (the hot path: nearly all answered by the filters)
 * and of IDs the store holds (one block read each), peak RSS, and bytes
 * per ID on disk. See bench/README.md.
 */
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <sqlite3.h>
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

#include "dedup_segment.h"

typedef struct opts {
  const char *dir;
  uint64_t seg_ids; /* IDs per segment */
  uint64_t queries;
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

static void die_db(sqlite3 *db, const char *what) {
  fprintf(stderr, "store-scale: %s: %s\n", what, sqlite3_errmsg(db));
  exit(1);
}

/* Segment seg of IDs [first, first + n) of stream 1. */
static void build_segment(sqlite3 *db, const char *path, int64_t seg,
                          uint64_t first, uint64_t n) {
  dseg_key_t *k = g_new(dseg_key_t, n);
  char(*ids)[37] = g_malloc(n * 37);
  char err[512];
  for (uint64_t i = 0; i < n; i++) {
    uuid_of(1, first + i, ids[i]);
    k[i] = (dseg_key_t){1, ids[i], 36, XXH3_64bits(ids[i], 36),
                        1000 + (int64_t)(first + i)};
  }
  if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
    die_db(db, "BEGIN");
  if (dseg_write(db, path, seg, 0, k, n, 0, err, sizeof err) != 0) {
    fprintf(stderr, "store-scale: %s\n", err);
    exit(1);
  }
  if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    die_db(db, "COMMIT");
  g_free(ids);
  g_free(k);
}

/* The store of `ids` IDs under o->dir, built once (a file left by an
 * earlier run is reused). */
static char *build_store(const opts_t *o, uint64_t ids) {
  char *path = g_strdup_printf("%s/store-%" PRIu64 ".db", o->dir, ids);
  char *tmp = g_strdup_printf("%s.tmp", path);
  sqlite3 *db;
  struct stat st;
  if (stat(path, &st) == 0)
    goto out;
  unlink(tmp);
  double t0 = now_s();
  if (sqlite3_open(tmp, &db) != SQLITE_OK ||
      sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) !=
          SQLITE_OK ||
      sqlite3_exec(db, dseg_schema_sql, NULL, NULL, NULL) != SQLITE_OK)
    die_db(db, tmp);
  for (uint64_t first = 0, seg = 1; first < ids; first += o->seg_ids, seg++)
    build_segment(db, tmp, (int64_t)seg, first, MIN(o->seg_ids, ids - first));
  sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
  sqlite3_close(db);
  if (rename(tmp, path) != 0) {
    perror(path);
    exit(1);
  }
  fprintf(stderr, "built %s in %.1f s\n", path, now_s() - t0);
out:
  g_free(tmp);
  return path;
}

/* Lookups of n IDs of stream seed (indices spread over [0, range)) in
 * every segment; returns how many were found. */
static uint64_t lookups(sqlite3 *db, const char *path, dseg_t **g, size_t ng,
                        uint64_t seed, uint64_t n, uint64_t range) {
  char id[37], err[512];
  uint64_t found = 0;
  for (uint64_t q = 0; q < n; q++) {
    uint64_t i = range ? XXH3_64bits(&q, sizeof q) % range : q;
    uuid_of(seed, i, id);
    uint64_t h = XXH3_64bits(id, 36);
    for (size_t s = 0; s < ng; s++) {
      int r = dseg_lookup(g[s], db, path, 1, id, 36, h, NULL, err, sizeof err);
      if (r < 0) {
        fprintf(stderr, "store-scale: %s\n", err);
        exit(1);
      }
      if (r) {
        found++;
        break;
      }
    }
  }
  return found;
}

/* One store, in a process of its own (so that its peak RSS is its own). */
static int measure(const char *path, uint64_t ids, uint64_t queries) {
  sqlite3 *db;
  int64_t *segs;
  size_t ng;
  char err[512];
  struct stat st;
  double t0 = now_s();
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
      dseg_list(db, path, &segs, &ng, err, sizeof err) != 0)
    die_db(db, path);
  dseg_t **g = g_new0(dseg_t *, ng + 1);
  for (size_t i = 0; i < ng; i++)
    if (dseg_load(db, path, segs[i], &g[i], err, sizeof err) != 0) {
      fprintf(stderr, "store-scale: %s\n", err);
      return 1;
    }
  double load = now_s() - t0;
  t0 = now_s();
  uint64_t fp = lookups(db, path, g, ng, 2, queries, 0);
  double new_rate = queries / (now_s() - t0);
  dseg_counters_t c;
  dseg_counters(&c);
  uint64_t blocks_new = c.blocks_read;
  t0 = now_s();
  uint64_t hit = ids ? lookups(db, path, g, ng, 1, queries / 10, ids) : 0;
  double seen_rate = ids ? (queries / 10) / (now_s() - t0) : 0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  stat(path, &st);
  printf("%12" PRIu64 " IDs  %3zu segments  load %.3f s  new %9.0f/s"
         " (%" PRIu64 " block reads, %" PRIu64 " found)  seen %8.0f/s"
         " (%" PRIu64 " found)  peak RSS %5.1f MB  %5.1f B/ID on disk\n",
         ids, ng, load, new_rate, blocks_new, fp, seen_rate, hit,
         ru.ru_maxrss / 1024.0, ids ? (double)st.st_size / ids : 0.0);
  for (size_t i = 0; i < ng; i++)
    dseg_free(g[i]);
  g_free(g);
  g_free(segs);
  sqlite3_close(db);
  return fp != 0 || (ids && hit != queries / 10);
}

static void usage(void) {
  fprintf(stderr,
          "usage: khost-store-scale [-d DIR] [-s IDS_PER_SEGMENT] [-q QUERIES]"
          " SIZE...\n");
  exit(2);
}

int main(int argc, char **argv) {
  opts_t o = {
      .dir = "/tmp/khost-store-scale", .seg_ids = 5000000, .queries = 1000000};
  int c, bad = 0;
  if (argc == 5 && strcmp(argv[1], "--measure") == 0)
    return measure(argv[2], strtoull(argv[3], NULL, 10),
                   strtoull(argv[4], NULL, 10));
  while ((c = getopt(argc, argv, "d:s:q:")) != -1) {
    if (c == 'd')
      o.dir = optarg;
    else if (c == 's')
      o.seg_ids = strtoull(optarg, NULL, 10);
    else if (c == 'q')
      o.queries = strtoull(optarg, NULL, 10);
    else
      usage();
  }
  if (optind >= argc || o.seg_ids == 0)
    usage();
  g_mkdir_with_parents(o.dir, 0700);
  for (int i = optind; i < argc; i++) {
    uint64_t ids = strtoull(argv[i], NULL, 10);
    char *path = build_store(&o, ids);
    char q[32], n[32];
    snprintf(n, sizeof n, "%" PRIu64, ids);
    snprintf(q, sizeof q, "%" PRIu64, o.queries);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      execl("/proc/self/exe", argv[0], "--measure", path, n, q, (char *)NULL);
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    bad |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    g_free(path);
  }
  return bad;
}
