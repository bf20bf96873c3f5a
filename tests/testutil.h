/* Small helpers shared by the test programs (the larger ones are in
 * tests/testutil.c). */
#ifndef KHOST_TESTUTIL_H
#define KHOST_TESTUTIL_H

#include <check.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* The suite of this test program (tests/runner.c runs it). */
Suite *KH_SUITE(void);

/* The tag of the test cases tests/runner.c runs side by side. */
#define TU_LANE_TAG "lanes"

/* A test case of s named name, with a timeout and tags (space-separated,
 * may be NULL), that tests/runner.c runs in a process of its own beside
 * the other such cases. Add the tests and fixtures to what it returns. */
TCase *tu_case(Suite *s, const char *name, int timeout_s, const char *tags);
/* A test case holding test t alone, named after it without "test_" (so
 * that CK_RUN_CASE=<name> runs it), with an unchecked fixture around it
 * (setup and teardown may be NULL). */
void tu_case_test(Suite *s, const TTest *t, int timeout_s, const char *tags,
                  SFun setup, SFun teardown);
#define TU_CASE(s, fn, timeout_s, tags)                                        \
  tu_case_test((s), (fn), (timeout_s), (tags), NULL, NULL)
/* The names of the cases made by tu_case(), in the order they were. */
size_t tu_cases(const char ***names);

/* A child process whose stdout and stderr go to files. It dies with the
 * test process (PR_SET_PDEATHSIG). */
typedef struct tu_proc {
  pid_t pid;
  int status; /* waitpid() status, once exited */
  int exited;
  char *out, *err; /* <dir>/<tag>.out and .err */
} tu_proc_t;

/* How tu_spawn() starts a child. */
enum {
  TU_CHILD_NO_CORE = 1 << 0,      /* no core file when it crashes */
  TU_CHILD_XFSZ_DEFAULT = 1 << 1, /* SIGXFSZ as by default (else inherited) */
  TU_CHILD_XFSZ_IGNORE = 1 << 2,  /* SIGXFSZ ignored: writes past
                                     RLIMIT_FSIZE fail with EFBIG */
  TU_CHILD_NOBODY = 1 << 3        /* when root: run as nobody, so that file
                                     modes apply */
};
typedef struct tu_spawn_opts {
  int flags;  /* TU_CHILD_* */
  int in_fd;  /* its stdin; -1: /dev/null */
  int out_fd; /* its stdout; -1: <dir>/<tag>.out */
} tu_spawn_opts_t;

/* Start argv (argv[0] a path) with opts (NULL: none); its output goes to
 * <dir>/<tag>.out and .err. */
void tu_spawn(tu_proc_t *p, const char *dir, const char *tag,
              char *const argv[], const tu_spawn_opts_t *opts);
/* 1 once p has exited (within timeout_ms), 0 if it is still running. */
int tu_reap(tu_proc_t *p, int64_t timeout_ms);
void tu_proc_free(tu_proc_t *p);

static inline int64_t tu_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fresh directory under $TMPDIR (or /tmp); caller frees the string. */
static inline char *tu_tempdir(void) {
  const char *base = getenv("TMPDIR");
  char *path = NULL;
  if (asprintf(&path, "%s/khost-test-XXXXXX", base ? base : "/tmp") < 0)
    return NULL;
  if (!mkdtemp(path)) {
    free(path);
    return NULL;
  }
  return path;
}

/* dir/name; caller frees the string. */
static inline char *tu_path(const char *dir, const char *name) {
  char *path = NULL;
  ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
  return path;
}

/* Write content to dir/name; returns the malloc'd full path. */
static inline char *tu_write_file(const char *dir, const char *name,
                                  const char *content) {
  char *path = tu_path(dir, name);
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "cannot write %s", path);
  fputs(content, f);
  fclose(f);
  return path;
}

/* tu_write_file() of what a printf format makes. */
static inline char *tu_write_filef(const char *dir, const char *name,
                                   const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline char *tu_write_filef(const char *dir, const char *name,
                                   const char *fmt, ...) {
  char *text = NULL;
  va_list ap;
  va_start(ap, fmt);
  ck_assert_int_ge(vasprintf(&text, fmt, ap), 0);
  va_end(ap);
  char *path = tu_write_file(dir, name, text);
  free(text);
  return path;
}

/* Whole file as a NUL-terminated string, or NULL. */
static inline char *tu_read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2)
      buf = realloc(buf, cap *= 2);
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
}

/* How many times needle occurs in the file at path (0 when absent). */
static inline int tu_file_count(const char *path, const char *needle) {
  char *text = tu_read_file(path);
  int n = 0;
  for (const char *at = text; at && (at = strstr(at, needle)) != NULL; at++)
    n++;
  free(text);
  return n;
}

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag,
                            struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static inline void tu_rm_rf(const char *dir) {
  if (dir)
    nftw(dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Path of a built fixture plugin: tests/fixtures/.libs/<name>.so */
static inline char *tu_fixture(const char *name) {
  char *path = NULL;
  ck_assert_int_ge(
      asprintf(&path, "%s/tests/fixtures/.libs/%s.so", TOP_BUILDDIR, name), 0);
  return path;
}

/* Wait until cond holds, polling every 10 ms, failing the test after
 * timeout_ms with msg. */
#define TU_WAIT_UNTIL(cond, timeout_ms, msg)                                   \
  do {                                                                         \
    int64_t tu_deadline_ = tu_mono_ms() + (timeout_ms);                        \
    while (!(cond)) {                                                          \
      ck_assert_msg(tu_mono_ms() < tu_deadline_, "timed out waiting: %s",      \
                    (msg));                                                    \
      usleep(10 * 1000);                                                       \
    }                                                                          \
  } while (0)

#endif
