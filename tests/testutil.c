/* Helpers shared by the test programs that are more than a few lines:
 * test cases run side by side by tests/runner.c, child processes. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* The user tu_spawn() runs a TU_CHILD_NOBODY child as. */
#define TU_NOBODY 65534

/* Names of the test cases registered with tu_case(), in order. */
static const char **g_cases;
static size_t g_ncases;

TCase *tu_case(Suite *s, const char *name, int timeout_s, const char *tags) {
  char *all = NULL;
  TCase *tc = tcase_create(name);
  const char **grown = realloc(g_cases, (g_ncases + 1) * sizeof(*g_cases));
  /* Called while the suite is built, before any test runs: no ck_assert. */
  if (!grown)
    abort();
  g_cases = grown;
  g_cases[g_ncases++] = name;
  if (asprintf(&all, "%s%s" TU_LANE_TAG, tags ? tags : "", tags ? " " : "") < 0)
    abort();
  tcase_set_tags(tc, all);
  free(all);
  tcase_set_timeout(tc, timeout_s);
  suite_add_tcase(s, tc);
  return tc;
}

void tu_case_test(Suite *s, const TTest *t, int timeout_s, const char *tags,
                  SFun setup, SFun teardown) {
  /* Test functions are named test_<what>: the case is <what>. */
  const char *name = strncmp(t->name, "test_", 5) == 0 ? t->name + 5 : t->name;
  TCase *tc = tu_case(s, name, timeout_s, tags);
  if (setup || teardown)
    tcase_add_unchecked_fixture(tc, setup, teardown);
  tcase_add_test(tc, t);
}

size_t tu_cases(const char ***names) {
  *names = g_cases;
  return g_ncases;
}

/* ------------------------------------------------------------ children */

/* In the child, between fork and exec: async-signal-safe calls only. */
static void child_setup(const char *out, const char *err,
                        const tu_spawn_opts_t *o, pid_t parent) {
  sigset_t none;
  struct rlimit no_core = {0, 0};
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (o->flags & (TU_CHILD_XFSZ_DEFAULT | TU_CHILD_XFSZ_IGNORE))
    signal(SIGXFSZ, (o->flags & TU_CHILD_XFSZ_IGNORE) ? SIG_IGN : SIG_DFL);
  /* Die with the test process, even when Check kills it on a timeout. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent ||
      ((o->flags & TU_CHILD_NO_CORE) && setrlimit(RLIMIT_CORE, &no_core) != 0))
    _exit(127);
  int in = o->in_fd >= 0 ? o->in_fd : open("/dev/null", O_RDONLY);
  int fo = o->out_fd >= 0 ? o->out_fd
                          : open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (in < 0 || fo < 0 || fe < 0 || dup2(in, 0) < 0 || dup2(fo, 1) < 0 ||
      dup2(fe, 2) < 0)
    _exit(127);
  if ((o->flags & TU_CHILD_NOBODY) && geteuid() == 0 &&
      (setgroups(0, NULL) != 0 || setgid(TU_NOBODY) != 0 ||
       setuid(TU_NOBODY) != 0))
    _exit(127);
}

void tu_spawn(tu_proc_t *p, const char *dir, const char *tag,
              char *const argv[], const tu_spawn_opts_t *opts) {
  const tu_spawn_opts_t plain = {.in_fd = -1, .out_fd = -1};
  const tu_spawn_opts_t *o = opts ? opts : &plain;
  memset(p, 0, sizeof(*p));
  ck_assert_int_ge(asprintf(&p->out, "%s/%s.out", dir, tag), 0);
  ck_assert_int_ge(asprintf(&p->err, "%s/%s.err", dir, tag), 0);
  fflush(NULL);
  pid_t parent = getpid();
  p->pid = fork();
  ck_assert_msg(p->pid >= 0, "fork: %s", strerror(errno));
  if (p->pid == 0) {
    child_setup(p->out, p->err, o, parent);
    execv(argv[0], argv);
    _exit(127);
  }
}

int tu_reap(tu_proc_t *p, int64_t timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  while (!p->exited) {
    pid_t r = waitpid(p->pid, &p->status, WNOHANG);
    ck_assert_msg(r >= 0, "waitpid: %s", strerror(errno));
    if (r == p->pid)
      p->exited = 1;
    else if (tu_mono_ms() >= deadline)
      return 0;
    else
      usleep(10 * 1000);
  }
  return 1;
}

void tu_proc_free(tu_proc_t *p) {
  free(p->out);
  free(p->err);
  p->out = p->err = NULL;
}
