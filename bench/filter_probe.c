/*
 * The cost of a dedup segment filter probe (not a test): K filters of N
 * IDs each (dedup_filter.h, DSEG_BITS_PER_ID bits an ID), then P probes of
 * absent IDs asked of every filter as dsegs_find() asks them (prefetch
 * every filter's line, then probe each), in ns per ID. Options:
 *   -k K        filters (default 1)
 *   -n N        IDs per filter (default 10M: a 15 MB filter)
 *   -p P        probes (default 10M)
 *   -b BITS     bits per ID (default DSEG_BITS_PER_ID)
 *   -a D        prefetch D IDs ahead of their probe instead of just before
 *               (default 0: just before, as dsegs_find() does)
 *   -4          the filters in 4 KB pages (MADV_NOHUGEPAGE before their
 *               first touch), to compare with huge pages in one binary
 * It also prints the false-positive rate seen. See bench/README.md.
 */
#include <getopt.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dedup_filter.h"
#include "dedup_segment.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t hash_of(uint64_t i) {
  return XXH3_64bits(&i, sizeof i);
}

int main(int argc, char **argv) {
  size_t k = 1, n = 10000000, p = 10000000, ahead = 0;
  unsigned bits = DSEG_BITS_PER_ID;
  int small = 0, c;
  while ((c = getopt(argc, argv, "k:n:p:b:a:4")) != -1) {
    switch (c) {
    case 'k':
      k = strtoull(optarg, NULL, 10);
      break;
    case 'n':
      n = strtoull(optarg, NULL, 10);
      break;
    case 'p':
      p = strtoull(optarg, NULL, 10);
      break;
    case 'b':
      bits = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'a':
      ahead = strtoull(optarg, NULL, 10);
      break;
    case '4':
      small = 1;
      break;
    default:
      fprintf(stderr, "usage: %s [-k K] [-n N] [-p P] [-b BITS] [-a D] [-4]\n",
              argv[0]);
      return 2;
    }
  }
  if (k == 0 || p == 0) {
    fprintf(stderr, "filter-probe: -k and -p must be above 0\n");
    return 2;
  }
  dfilter_t **f = g_new(dfilter_t *, k);
  for (size_t j = 0; j < k; j++) {
    f[j] = dfilter_new(n, bits);
    if (small) {
      uintptr_t a = (uintptr_t)dfilter_words(f[j]) & ~(uintptr_t)4095;
      size_t len = dfilter_size(f[j]) + ((uintptr_t)dfilter_words(f[j]) - a);
      (void)madvise((void *)a, len, MADV_NOHUGEPAGE);
    }
    for (uint64_t i = 0; i < n; i++)
      dfilter_add(f[j], hash_of(j * n + i));
  }
  /* Absent IDs: numbers after every added one. */
  uint64_t base = (uint64_t)k * n, passes = 0;
  double t0 = now_s();
  for (uint64_t i = 0; i < p; i++) {
    uint64_t h = hash_of(base + i);
    if (ahead) {
      uint64_t ha = hash_of(base + i + ahead);
      for (size_t j = 0; j < k; j++)
        dfilter_prefetch(f[j], ha);
    } else {
      for (size_t j = 0; j < k; j++)
        dfilter_prefetch(f[j], h);
    }
    for (size_t j = 0; j < k; j++)
      passes += (uint64_t)dfilter_maybe(f[j], h);
  }
  double dt = now_s() - t0;
  printf("filters %zu x %zu IDs (%zu bytes each, %u bits/ID, %s pages), "
         "prefetch %zu ahead: %.1f ns per ID, %.3f %% false positives\n",
         k, n, dfilter_size(f[0]), bits, small ? "4 KB" : "huge from 2 MB",
         ahead, dt * 1e9 / (double)p, 100.0 * (double)passes / ((double)p * k));
  for (size_t j = 0; j < k; j++)
    dfilter_free(f[j]);
  g_free(f);
  return 0;
}
