/*
 * The `khost` program as a user runs it: the real binary, started as a
 * child process with its stdout and stderr going to files of a temporary
 * directory; the tests assert exit statuses, messages and what a run
 * leaves behind (the JSONL file of the jsonl_sink plugin, the dedup
 * database). Runs use the embedded mock cluster: no broker needed.
 *
 * Nothing outlives a test. A failed assertion ends a forked test process
 * without its checked teardown, and a timeout kills it: so children die
 * with the test process (PR_SET_PDEATHSIG), and each test's directory lies
 * in one per test case that the unchecked teardown, run by the runner
 * process, removes. The checked teardown cleans up after the tests that
 * end normally, and after failures with CK_FORK=no.
 */
#include <check.h>
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <khost/plugin.h>

#include "testutil.h"

#define KHOST TOP_BUILDDIR "/src/khost"
#define PLUGIN_DIR TOP_BUILDDIR "/plugins/.libs"
#define TOPIC "order-completed"

/* A mock run: its first group join alone takes the coordinator's 3 s. */
enum { RUN_TIMEOUT_MS = 60000, QUICK_TIMEOUT_MS = 20000 };

/* ------------------------------------------------------------ children */

typedef tu_proc_t proc_t;

static char *g_root;    /* the test case's directory */
static char *g_dir;     /* the test's directory, inside g_root */
static pid_t g_live[8]; /* children not reaped yet */

static void forget_child(pid_t pid) {
  for (size_t i = 0; i < G_N_ELEMENTS(g_live); i++)
    if (g_live[i] == pid)
      g_live[i] = 0;
}

/* Unchecked fixture: runs in the runner process, around a test case. */
static void case_setup(void) {
  g_root = tu_tempdir();
}

static void case_teardown(void) {
  tu_rm_rf(g_root);
  free(g_root);
  g_root = NULL;
}

static void setup(void) {
  ck_assert_msg(g_root != NULL, "cannot create a temporary directory");
  ck_assert_int_ge(asprintf(&g_dir, "%s/test-XXXXXX", g_root), 0);
  ck_assert_msg(mkdtemp(g_dir) != NULL, "mkdtemp %s: %s", g_dir,
                strerror(errno));
}

static void teardown(void) {
  for (size_t i = 0; i < G_N_ELEMENTS(g_live); i++) {
    if (g_live[i] > 0) {
      kill(g_live[i], SIGKILL);
      waitpid(g_live[i], NULL, 0);
    }
    g_live[i] = 0;
  }
  tu_rm_rf(g_dir);
  free(g_dir);
  g_dir = NULL;
}

static char *dir_path(const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", g_dir, name), 0);
  return p;
}

/* Start argv (argv[0] a path); its output goes to <dir>/<tag>.out/.err. */
static void spawn_argv(proc_t *p, const char *tag, char *const argv[]) {
  size_t slot = 0;
  while (slot < G_N_ELEMENTS(g_live) && g_live[slot] > 0)
    slot++;
  ck_assert_msg(slot < G_N_ELEMENTS(g_live), "too many children");
  tu_spawn(p, g_dir, tag, argv, NULL);
  g_live[slot] = p->pid;
}

/* khost with the NULL-terminated arguments that follow tag. */
static void spawn_khost(proc_t *p, const char *tag, ...) {
  char *argv[16] = {(char *)KHOST};
  size_t n = 1;
  va_list ap;
  va_start(ap, tag);
  for (char *a; (a = va_arg(ap, char *)) != NULL;) {
    ck_assert_uint_lt(n, G_N_ELEMENTS(argv) - 1);
    argv[n++] = a;
  }
  va_end(ap);
  argv[n] = NULL;
  spawn_argv(p, tag, argv);
}

/* 1 once p has exited (within timeout_ms), 0 if it is still running. */
static int reap(proc_t *p, int64_t timeout_ms) {
  int was = p->exited;
  if (!tu_reap(p, timeout_ms))
    return 0;
  if (!was)
    forget_child(p->pid);
  return 1;
}

static void proc_free(proc_t *p) {
  tu_proc_free(p);
}

static char *slurp(const char *path) {
  char *s = tu_read_file(path);
  ck_assert_msg(s != NULL, "cannot read %s", path);
  return s;
}

/* The end of a text, to show in a failure message. */
static const char *tail(const char *s) {
  size_t n = strlen(s);
  return n > 1500 ? s + n - 1500 : s;
}

/* The exit status of a child that has exited; fails if it was killed. */
static int exit_status(proc_t *p) {
  ck_assert(p->exited);
  if (!WIFEXITED(p->status)) {
    char *err = slurp(p->err);
    ck_abort_msg("khost was killed by signal %d; stderr:\n%s",
                 WTERMSIG(p->status), tail(err));
  }
  return WEXITSTATUS(p->status);
}

/* Wait for p to exit within timeout_ms (killing it otherwise); returns
 * its exit status. */
static int finish(proc_t *p, int64_t timeout_ms) {
  if (!reap(p, timeout_ms)) {
    char *err = slurp(p->err);
    ck_abort_msg("khost still running after %" PRId64 " ms; stderr:\n%s",
                 timeout_ms, tail(err));
  }
  return exit_status(p);
}

/* A sanitized build (ASan, UBSan) reports in the child's stderr; UBSan
 * does not change the exit status, so look for its reports too. */
static void assert_no_sanitizer_report(const char *err) {
  ck_assert_msg(strstr(err, "runtime error:") == NULL &&
                    strstr(err, "Sanitizer") == NULL,
                "sanitizer report on stderr:\n%s", tail(err));
}

/* Run khost to its end: the exit status; its stdout and stderr in out and err.
 */
static int run_khost(const char *tag, int64_t timeout_ms, char **out,
                     char **err, char *a1, char *a2, char *a3, char *a4) {
  proc_t p;
  spawn_khost(&p, tag, a1, a2, a3, a4, (char *)NULL);
  int status = finish(&p, timeout_ms);
  *out = slurp(p.out);
  *err = slurp(p.err);
  assert_no_sanitizer_report(*err);
  proc_free(&p);
  return status;
}

static int file_has(const char *path, const char *needle) {
  char *s = tu_read_file(path);
  int found = s && strstr(s, needle) != NULL;
  free(s);
  return found;
}

static off_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Wait until p's stderr holds needle; fails if p exits first. */
static void wait_for_stderr(proc_t *p, const char *needle, int64_t timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  while (!file_has(p->err, needle)) {
    if (reap(p, 0) || tu_mono_ms() >= deadline) {
      char *err = slurp(p->err);
      ck_abort_msg("%s waiting for \"%s\" on stderr:\n%s",
                   p->exited ? "khost exited" : "timed out", needle, tail(err));
    }
    usleep(10 * 1000);
  }
}

/* p has not exited (yet); else fail showing its stderr. */
static void assert_running(proc_t *p, const char *when) {
  if (reap(p, 0)) {
    char *err = slurp(p->err);
    ck_abort_msg("khost exited (status 0x%x) %s; stderr:\n%s", p->status, when,
                 tail(err));
  }
}

static void assert_has(const char *text, const char *needle, const char *what) {
  ck_assert_msg(strstr(text, needle) != NULL, "%s does not contain \"%s\":\n%s",
                what, needle, tail(text));
}

/* ------------------------------------------------------------ configs */

/* Write <dir>/<name> from a printf format; returns its path. */
#define write_cfg(name, ...) tu_write_filef(g_dir, (name), __VA_ARGS__)

/* A config on the mock cluster (one broker, 3 partitions) with one
 * pipeline of one member; everything it writes goes to the temp dir. */
static char *mock_cfg(const char *name, const char *top_extra, int records,
                      int duplicates, const char *pipeline_extra,
                      const char *plugin, const char *plugin_config) {
  return write_cfg(
      name,
      "plugin_dir = \"" PLUGIN_DIR "\";\n"
      "log_level = \"info\";\n"
      "%s\n"
      "mock = { brokers = 1; partitions = 3; sample_records = %d;\n"
      "         sample_duplicates = %d; };\n"
      "kafka = { session_timeout_ms = 3000; heartbeat_interval_ms = 300; };\n"
      "dedup = { path = \"%s/dedup.db\"; };\n"
      "pipelines = ( {\n"
      "  name = \"orders\"; group_id = \"data-platform-consumer-group\";\n"
      "  topics = [ \"" TOPIC "\" ]; members = 1;\n"
      "  %s\n"
      "  plugin = \"%s\";\n"
      "  config = { %s };\n"
      "} );\n",
      top_extra, records, duplicates, g_dir, pipeline_extra, plugin,
      plugin_config);
}

/* jsonl_sink writing <dir>/orders.jsonl */
static char *sink_config(void) {
  char *s = NULL;
  ck_assert_int_ge(asprintf(&s, "path = \"%s/orders.jsonl\";", g_dir), 0);
  return s;
}

/* 1-based number of the first line of text holding needle. */
static int line_of(const char *text, const char *needle) {
  const char *at = strstr(text, needle);
  ck_assert_msg(at != NULL, "\"%s\" not in the config", needle);
  int line = 1;
  for (const char *c = text; c < at; c++)
    line += *c == '\n';
  return line;
}

/* "PATH:LINE: KEY" as khost prints a config problem. */
static char *where(const char *path, const char *text, const char *needle,
                   const char *key) {
  char *s = NULL;
  ck_assert_int_ge(asprintf(&s, "%s:%d: %s", path, line_of(text, needle), key),
                   0);
  return s;
}

/* ------------------------------------------------------------ outputs */

/* The one summary line of pipeline "orders" in stderr. */
static void parse_summary(const char *err, uint64_t *handled,
                          uint64_t *duplicates) {
  static const char key[] = "[orders] handled ";
  const char *at = strstr(err, key);
  ck_assert_msg(at != NULL, "no summary line in stderr:\n%s", tail(err));
  ck_assert_msg(strstr(at + 1, key) == NULL, "two summary lines:\n%s",
                tail(err));
  ck_assert_msg(sscanf(at + strlen(key),
                       "%" SCNu64 ", duplicates skipped %" SCNu64, handled,
                       duplicates) == 2,
                "unreadable summary line:\n%s", tail(err));
}

/* Every line of the JSONL file is a JSON object of a record of TOPIC whose
 * event_id (its eventId header) no other line has; returns the count. */
static size_t check_jsonl(const char *path) {
  char *text = slurp(path);
  GHashTable *ids =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  size_t n = 0;
  ck_assert_msg(text[0] == '\0' || text[strlen(text) - 1] == '\n',
                "%s ends with a partial line", path);
  for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL;
       line = nl + 1) {
    json_error_t jerr;
    *nl = '\0';
    json_t *obj = json_loads(line, 0, &jerr);
    ck_assert_msg(obj != NULL, "line %zu is not JSON (%s): %s", n + 1,
                  jerr.text, line);
    const char *topic = json_string_value(json_object_get(obj, "topic"));
    const char *id = json_string_value(json_object_get(obj, "event_id"));
    const char *hdr = json_string_value(
        json_object_get(json_object_get(obj, "headers"), "eventId"));
    ck_assert_msg(topic && strcmp(topic, TOPIC) == 0, "line %zu: topic", n + 1);
    ck_assert_msg(id && hdr && strcmp(id, hdr) == 0,
                  "line %zu: event_id is not the eventId header", n + 1);
    ck_assert_msg(g_hash_table_add(ids, g_strdup(id)), "event %s written twice",
                  id);
    json_decref(obj);
    n++;
  }
  g_hash_table_destroy(ids);
  free(text);
  return n;
}

/* ------------------------------------------------------------ usage */

START_TEST(test_version) {
  char *out, *err, *want = NULL;
  int status = run_khost("version", QUICK_TIMEOUT_MS, &out, &err, "--version",
                         NULL, NULL, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  ck_assert_int_ge(asprintf(&want, "khost %s (plugin ABI %d.%d;",
                            PACKAGE_VERSION, KHOST_ABI_MAJOR, KHOST_ABI_MINOR),
                   0);
  ck_assert_msg(strncmp(out, want, strlen(want)) == 0,
                "stdout does not start with \"%s\": %s", want, out);
  assert_has(out, "librdkafka ", "stdout");
  ck_assert_str_eq(err, "");
  free(want);
  free(out);
  free(err);
}
END_TEST

START_TEST(test_help) {
  static const char *const words[] = {"Usage:",
                                      "run",
                                      "check",
                                      "-c",
                                      "--exit-at-end",
                                      "--help",
                                      "--version",
                                      "Exit status",
                                      "0 clean stop",
                                      "1 runtime failure",
                                      "2 usage",
                                      "128+N",
                                      NULL};
  char *out, *err;
  int status = run_khost("help", QUICK_TIMEOUT_MS, &out, &err, "--help", NULL,
                         NULL, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  for (size_t i = 0; words[i]; i++)
    assert_has(out, words[i], "--help");
  ck_assert_str_eq(err, "");
  free(out);
  free(err);
}
END_TEST

/* `khost COMMAND --help` (or -h anywhere after it): that command's help,
 * naming its own options, not the overview. */
START_TEST(test_command_help) {
  static const struct {
    const char *command, *option;
  } cases[] = {
      {"run", "--from-beginning"}, {"check", "create()"},
      {"replay", "--shift-by"},    {"offsets", "--json"},
      {"dedup", "forget"},         {"test-plugin", "--records"},
      {"plugin-info", "--json"},   {"parked", "--execute"},
      {"state", "--prefix"},       {"store", "migrate"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *out, *err, want[64], tag[32];
    snprintf(tag, sizeof(tag), "help%zu", i);
    snprintf(want, sizeof(want), "Usage: khost %s ", cases[i].command);
    int status =
        run_khost(tag, QUICK_TIMEOUT_MS, &out, &err, (char *)cases[i].command,
                  i % 2 ? "-h" : "--help", NULL, NULL);
    ck_assert_msg(status == 0, "%s: exit %d; stderr:\n%s", cases[i].command,
                  status, err);
    ck_assert_msg(strncmp(out, want, strlen(want)) == 0,
                  "%s --help does not start with \"%s\":\n%s", cases[i].command,
                  want, out);
    assert_has(out, cases[i].option, "the command's help");
    assert_has(out, "Exit status", "the command's help");
    ck_assert_msg(strstr(out, "Commands:") == NULL, "%s --help: the overview",
                  cases[i].command);
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
  }
}
END_TEST

/* Every option a command's --help names (--word) is in the manual page
 * too (written \-\-word there): the two say the same. */
START_TEST(test_help_options_in_man_page) {
  static const char *const commands[] = {
      "run",   "check", "plugin-info", "replay", "offsets",
      "dedup", "store", "state",       "parked", "test-plugin"};
  char *man = slurp(TOP_SRCDIR "/docs/khost.1");
  size_t options = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
    char *out, *err, tag[32];
    snprintf(tag, sizeof(tag), "manhelp%zu", i);
    int status = run_khost(tag, QUICK_TIMEOUT_MS, &out, &err,
                           (char *)commands[i], "--help", NULL, NULL);
    ck_assert_msg(status == 0, "%s --help: exit %d", commands[i], status);
    for (const char *at = out; (at = strstr(at, "--")) != NULL;) {
      size_t n = 2;
      while (g_ascii_isalpha(at[n]) ||
             (at[n] == '-' && g_ascii_isalpha(at[n + 1])))
        n++;
      if (n > 2) {
        GString *roff = g_string_new("\\-\\-");
        for (size_t k = 2; k < n; k++)
          at[k] == '-' ? g_string_append(roff, "\\-")
                       : g_string_append_c(roff, at[k]);
        ck_assert_msg(strstr(man, roff->str) != NULL,
                      "khost %s --help names %.*s, docs/khost.1 does not",
                      commands[i], (int)n, at);
        g_string_free(roff, TRUE);
        options++;
      }
      at += n;
    }
    free(out);
    free(err);
  }
  ck_assert_uint_gt(options, 40);
  free(man);
}
END_TEST

/* The manual page covers every command, signal handling and exit status,
 * as README and --help do. */
START_TEST(test_man_page) {
  static const char *const words[] = {
      ".B khost run",     ".B khost check", ".B khost replay",
      ".B khost offsets", ".B khost dedup", ".B khost test\\-plugin",
      ".B khost state",   ".B state reset", ".B khost plugin\\-info",
      ".B khost parked",  ".B khost store", ".SH SIGNALS",
      ".SH EXIT STATUS",  "128+N",          ".SH CONFIGURATION",
      "KHOST_PLUGIN_DIR", "\\-\\-execute",  NULL};
  char *man = slurp(TOP_SRCDIR "/docs/khost.1");
  ck_assert_msg(strncmp(man, ".\\\"", 3) == 0 || strncmp(man, ".TH", 3) == 0,
                "not a roff page");
  assert_has(man, ".TH KHOST 1 ", "khost.1");
  for (size_t i = 0; words[i]; i++)
    assert_has(man, words[i], "khost.1");
  free(man);
}
END_TEST

/* Every misuse exits 2, says why on stderr and prints nothing on stdout. */
START_TEST(test_usage_errors) {
  static const struct {
    const char *args[4];
    const char *says;
  } cases[] = {
      {{NULL}, "a command is required"},
      {{"frob", "-c", "x.cfg", NULL}, "unknown command 'frob'"},
      {{"run", NULL}, "-c FILE is required"},
      {{"check", NULL}, "-c FILE is required"},
      {{"check", "-c", "x.cfg", "--exit-at-end"},
       "--exit-at-end goes with run"},
      {{"run", "-c", "x.cfg", "extra"}, "unexpected argument 'extra'"},
      {{"--no-such-option", NULL}, "no-such-option"},
      {{"dedup", "stats", "--bogus", NULL},
       "dedup stats: unknown option '--bogus'"},
      {{"parked", "list", "-c", NULL}, "parked list: -c needs a value"},
      {{"state", "get", "--bogus", NULL},
       "state get: unknown option '--bogus'"},
      {{"store", "init", "-c", NULL}, "store init: -c needs a value"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *out, *err, tag[32];
    snprintf(tag, sizeof(tag), "usage%zu", i);
    int status = run_khost(tag, QUICK_TIMEOUT_MS, &out, &err,
                           (char *)cases[i].args[0], (char *)cases[i].args[1],
                           (char *)cases[i].args[2], (char *)cases[i].args[3]);
    ck_assert_msg(status == 2, "case %zu: exit %d, not 2; stderr:\n%s", i,
                  status, err);
    assert_has(err, cases[i].says, "stderr");
    assert_has(err, "Try 'khost --help'.", "stderr");
    ck_assert_msg(out[0] == '\0', "case %zu: stdout: %s", i, out);
    free(out);
    free(err);
  }
}
END_TEST

/* ------------------------------------------------------------ check */

START_TEST(test_check_good) {
  char *sink = sink_config();
  char *cfg = mock_cfg("good.cfg", "", 300, 30, "", "jsonl_sink", sink);
  char *db = dir_path("dedup.db"), *jsonl = dir_path("orders.jsonl");
  char *out, *err, *want = NULL;
  int status = run_khost("check", QUICK_TIMEOUT_MS, &out, &err, "check", "-c",
                         cfg, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  ck_assert_int_ge(asprintf(&want, "%s: OK", cfg), 0);
  assert_has(out, want, "stdout");
  /* Consumed nothing: no dedup store, no mock cluster, and no file of the
   * plugin (jsonl_sink opens its file at the first record, not in
   * create()). */
  ck_assert_msg(access(db, F_OK) != 0, "check created %s", db);
  ck_assert_msg(access(jsonl, F_OK) != 0, "check created %s", jsonl);
  ck_assert_msg(strstr(err, "mock cluster") == NULL, "check started the mock");
  free(want);
  free(out);
  free(err);
  free(db);
  free(jsonl);
  free(cfg);
  free(sink);
}
END_TEST

/* Two mistakes in one file: both reported, each with file, line and key. */
START_TEST(test_check_reports_every_mistake) {
  char *cfg = write_cfg("bad.cfg",
                        "plugin_dir = \"" PLUGIN_DIR "\";\n"
                        "mock = { brokers = 1; };\n"
                        "dedup = { path = \"%s/dedup.db\"; };\n"
                        "pipelines = ( {\n"
                        "  name = \"orders\"; group_id = \"g\";\n"
                        "  topics = [ \"" TOPIC "\" ];\n"
                        "  members = 0;\n"
                        "  colour = \"blue\";\n"
                        "  plugin = \"jsonl_sink\";\n"
                        "  config = { path = \"%s/orders.jsonl\"; };\n"
                        "} );\n",
                        g_dir, g_dir);
  char *text = slurp(cfg), *db = dir_path("dedup.db");
  char *members = where(cfg, text, "members = 0", "pipelines[0].members");
  char *colour = where(cfg, text, "colour", "pipelines[0].colour");
  char *out, *err;
  int status =
      run_khost("bad", QUICK_TIMEOUT_MS, &out, &err, "check", "-c", cfg, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, members, "stderr");
  assert_has(err, "between 1 and 256 (got 0)", "stderr");
  assert_has(err, colour, "stderr");
  assert_has(err, "unknown setting", "stderr");
  ck_assert_msg(strstr(out, "OK") == NULL, "stdout: %s", out);
  ck_assert_msg(access(db, F_OK) != 0, "check created %s", db);
  free(out);
  free(err);
  free(members);
  free(colour);
  free(db);
  free(text);
  free(cfg);
}
END_TEST

/* A plugin path that does not exist, and a key the plugin does not know. */
START_TEST(test_check_plugin_problems) {
  char *missing = dir_path("no/such/plugin.so");
  char *cfg = write_cfg("plugins.cfg",
                        "plugin_dir = \"" PLUGIN_DIR "\";\n"
                        "mock = { brokers = 1; };\n"
                        "dedup = { path = \"%s/dedup.db\"; };\n"
                        "pipelines = (\n"
                        "  { name = \"orders\"; group_id = \"g1\";\n"
                        "    topics = [ \"" TOPIC "\" ];\n"
                        "    plugin = \"jsonl_sink\";\n"
                        "    config = { path = \"%s/orders.jsonl\";\n"
                        "               flavour = \"vanilla\"; };\n"
                        "  },\n"
                        "  { name = \"audit\"; group_id = \"g2\";\n"
                        "    topics = [ \"" TOPIC "\" ];\n"
                        "    plugin = \"%s\";\n"
                        "    config = { };\n"
                        "  }\n"
                        ");\n",
                        g_dir, g_dir, missing);
  char *text = slurp(cfg);
  char *flavour = where(cfg, text, "flavour", "pipelines[0].config.flavour");
  /* The line of the plugin key, not of the pipeline's opening brace. */
  char *plugin = where(cfg, text, missing, "pipelines[1].plugin: ");
  char *out, *err;
  int status = run_khost("plugins", QUICK_TIMEOUT_MS, &out, &err, "check", "-c",
                         cfg, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, flavour, "stderr");
  assert_has(err, plugin, "stderr");
  assert_has(err, missing, "stderr");
  ck_assert_msg(strstr(out, "OK") == NULL, "stdout: %s", out);
  free(out);
  free(err);
  free(plugin);
  free(flavour);
  free(text);
  free(cfg);
  free(missing);
}
END_TEST

/* ------------------------------------------------------- plugin-info */

#define FIXTURES TOP_BUILDDIR "/tests/fixtures/.libs"

/* The declared settings as a table; the version fields; --json alike. */
START_TEST(test_plugin_info_schema) {
  char *out, *err, abi[64];
  int status = run_khost("info", QUICK_TIMEOUT_MS, &out, &err, "plugin-info",
                         FIXTURES "/lifecycle.so", NULL, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  snprintf(abi, sizeof(abi), "plugin ABI: %d.%d (this khost: %d.%d)\n",
           KHOST_ABI_MAJOR, KHOST_ABI_MINOR, KHOST_ABI_MAJOR, KHOST_ABI_MINOR);
  assert_has(out, "name:       lifecycle\nversion:    2.3\n", "stdout");
  assert_has(out, abi, "stdout");
  assert_has(out,
             "callbacks:  create handle destroy init fini assigned "
             "revoked\n",
             "stdout");
  assert_has(out,
             "settings:\n"
             "  SETTING  TYPE    DEFAULT     DESCRIPTION\n"
             "  label    string  (required)  word at the start of create "
             "lines\n"
             "  limit    int     7           an integer with a default\n"
             "  ratio    double  0.5         a number with a default\n"
             "  verbose  bool    false       a boolean with a default\n"
             "  note     string  -           optional, without a default\n",
             "stdout");
  ck_assert_str_eq(err, "");
  free(out);
  free(err);

  status = run_khost("json", QUICK_TIMEOUT_MS, &out, &err, "plugin-info",
                     "--json", FIXTURES "/lifecycle.so", NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  json_error_t jerr;
  json_t *obj = json_loads(out, 0, &jerr);
  ck_assert_msg(obj != NULL, "not JSON (%s): %s", jerr.text, out);
  ck_assert_str_eq(json_string_value(json_object_get(obj, "name")),
                   "lifecycle");
  json_t *settings = json_object_get(obj, "settings");
  ck_assert_uint_eq(json_array_size(settings), 5);
  json_t *limit = json_array_get(settings, 1);
  ck_assert_str_eq(json_string_value(json_object_get(limit, "name")), "limit");
  ck_assert_str_eq(json_string_value(json_object_get(limit, "type")), "int");
  ck_assert_str_eq(json_string_value(json_object_get(limit, "default")), "7");
  ck_assert(
      json_is_true(json_object_get(json_array_get(settings, 0), "required")));
  ck_assert(
      json_is_null(json_object_get(json_array_get(settings, 4), "default")));
  ck_assert_uint_eq(json_array_size(json_object_get(obj, "callbacks")), 7);
  json_decref(obj);
  free(out);
  free(err);
}
END_TEST

/* An init() that fails stops khost before anything runs, with the
 * plugin's message, naming the config line, the file and the plugin. */
START_TEST(test_plugin_init_failure) {
  char *cfg =
      write_cfg("init.cfg", "mock = { brokers = 1; };\n"
                            "pipelines = ({ name = \"p\"; group_id = "
                            "\"g\"; topics = [ \"t\" ];\n"
                            "  plugin = \"" FIXTURES "/lifecycle.so\";\n"
                            "  config = { label = \"x\"; }; });\n");
  char *out, *err, *want = NULL;
  ck_assert_int_eq(setenv("LIFECYCLE_INIT_ERROR", "no licence server", 1), 0);
  int status =
      run_khost("init", QUICK_TIMEOUT_MS, &out, &err, "check", "-c", cfg, NULL);
  unsetenv("LIFECYCLE_INIT_ERROR");
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  ck_assert_int_ge(asprintf(&want,
                            "%s:3: pipelines[0].plugin: " FIXTURES
                            "/lifecycle.so: plugin lifecycle: init() failed: "
                            "no licence server\n",
                            cfg),
                   0);
  assert_has(err, want, "stderr");
  ck_assert_msg(strstr(out, "OK") == NULL, "stdout: %s", out);
  free(want);
  free(out);
  free(err);
  free(cfg);
}
END_TEST

/* A NAME is looked up in the config's plugin_dir; a plugin without a
 * schema says so; one khost refuses exits 2 with the loader's message. */
START_TEST(test_plugin_info_name_and_errors) {
  char *cfg = write_cfg("dir.cfg", "plugin_dir = \"" FIXTURES "\";\n"
                                   "mock = { brokers = 1; };\n"
                                   "pipelines = ({ name = \"p\"; group_id = "
                                   "\"g\"; topics = [ \"t\" ];\n"
                                   "  plugin = \"v1_0\"; });\n");
  char *out, *err;
  int status = run_khost("name", QUICK_TIMEOUT_MS, &out, &err, "plugin-info",
                         "v1_0", "-c", cfg);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, "name:       v1_0\nversion:    1.0.7\n", "stdout");
  assert_has(out, "path:       " FIXTURES "/v1_0.so\n", "stdout");
  assert_has(out, "plugin ABI: 1.0 ", "stdout");
  assert_has(out, "callbacks:  create handle flush destroy\n", "stdout");
  assert_has(out, "settings:   none declared", "stdout");
  free(out);
  free(err);

  status = run_khost("major", QUICK_TIMEOUT_MS, &out, &err, "plugin-info",
                     FIXTURES "/wrong_major.so", NULL, NULL);
  ck_assert_int_eq(status, 2);
  assert_has(err, FIXTURES "/wrong_major.so: built for khost plugin ABI 2.0",
             "stderr");
  ck_assert_str_eq(out, "");
  free(out);
  free(err);

  status = run_khost("noarg", QUICK_TIMEOUT_MS, &out, &err, "plugin-info", NULL,
                     NULL, NULL);
  ck_assert_int_eq(status, 2);
  assert_has(err, "a plugin NAME or PATH is required", "stderr");
  free(out);
  free(err);
  free(cfg);
}
END_TEST

/* What check finds beyond the file: a malformed host:port, a host that
 * does not resolve, a dedup directory that does not exist; exit 2, each
 * with file, line and key, nothing created. run refuses the malformed
 * port too (librdkafka would read it as port 90). */
START_TEST(test_check_machine_problems) {
  char *dbdir = dir_path("no-such-dir");
  char *cfg = write_cfg("machine.cfg",
                        "plugin_dir = \"" PLUGIN_DIR "\";\n"
                        "kafka = { bootstrap_servers = "
                        "\"127.0.0.1:90x2,broker.invalid:9092\"; };\n"
                        "dedup = { path = \"%s/dedup.db\"; };\n"
                        "pipelines = ( {\n"
                        "  name = \"orders\"; group_id = \"g\";\n"
                        "  topics = [ \"" TOPIC "\" ];\n"
                        "  plugin = \"jsonl_sink\";\n"
                        "  config = { path = \"%s/orders.jsonl\"; };\n"
                        "} );\n",
                        dbdir, g_dir);
  char *text = slurp(cfg);
  char *port = where(cfg, text, "90x2", "kafka.bootstrap_servers: ");
  char *dedup = where(cfg, text, "no-such-dir", "dedup.path: ");
  char *out, *err;
  int status = run_khost("machine", QUICK_TIMEOUT_MS, &out, &err, "check", "-c",
                         cfg, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, port, "stderr");
  assert_has(err, "\"127.0.0.1:90x2\": the port \"90x2\" is not a number",
             "stderr");
  assert_has(err, "cannot resolve host broker.invalid", "stderr");
  assert_has(err, dedup, "stderr");
  ck_assert_msg(strstr(out, "OK") == NULL, "stdout: %s", out);
  ck_assert_msg(access(dbdir, F_OK) != 0, "check created %s", dbdir);
  free(out);
  free(err);

  status =
      run_khost("run", QUICK_TIMEOUT_MS, &out, &err, "run", "-c", cfg, NULL);
  ck_assert_msg(status == 2, "run: exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, port, "stderr");
  ck_assert_msg(access(dbdir, F_OK) != 0, "run created %s", dbdir);
  free(out);
  free(err);
  free(dedup);
  free(port);
  free(text);
  free(cfg);
  free(dbdir);
}
END_TEST

/* ------------------------------------------------------------ run */

START_TEST(test_run_exit_at_end) {
  char *sink = sink_config();
  char *cfg = mock_cfg("run.cfg", "", 300, 30, "", "jsonl_sink", sink);
  char *jsonl = dir_path("orders.jsonl"), *db = dir_path("dedup.db");
  char *out, *err;
  uint64_t handled, dups;
  int status = run_khost("run", RUN_TIMEOUT_MS, &out, &err, "run", "-c", cfg,
                         "--exit-at-end");
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  parse_summary(err, &handled, &dups);
  assert_has(err, "handled 270, duplicates skipped 30, failed 0", "stderr");
  ck_assert_uint_eq(handled, 270);
  ck_assert_uint_eq(dups, 30);
  ck_assert_uint_eq(check_jsonl(jsonl), 270);
  ck_assert_msg(access(db, F_OK) == 0, "no dedup database at %s", db);
  free(out);
  free(err);
  free(db);
  free(jsonl);
  free(cfg);
  free(sink);
}
END_TEST

/* log_format = "json": every line khost writes parses as one JSON
 * object, and the lines about a failed record name its pipeline, member,
 * topic, partition, offset and event ID as fields. */
START_TEST(test_run_json_log) {
  enum { RECORDS = 20 };
  char *plugin = tu_fixture("scripted"), *calls = dir_path("calls.log");
  char *down = tu_write_file(g_dir, "down", ""), *plugin_cfg = NULL;
  ck_assert_int_ge(asprintf(&plugin_cfg,
                            "log_path = \"%s\"; down_path = \"%s\";", calls,
                            down),
                   0);
  char *cfg = mock_cfg("json.cfg", "log_format = \"json\";", RECORDS, 0, "",
                       plugin, plugin_cfg);
  char *out, *err;
  int status = run_khost("json", RUN_TIMEOUT_MS, &out, &err, "run", "-c", cfg,
                         "--exit-at-end");
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  char **lines = g_strsplit(err, "\n", -1);
  int records = 0, n = (int)g_strv_length(lines);
  ck_assert_int_gt(n, 1);
  ck_assert_str_eq(lines[n - 1], "");
  for (int i = 0; i < n - 1; i++) {
    json_error_t e;
    json_t *o = json_loads(lines[i], 0, &e);
    ck_assert_msg(o && json_is_string(json_object_get(o, "time")) &&
                      json_is_string(json_object_get(o, "level")) &&
                      json_is_string(json_object_get(o, "message")),
                  "line %d is no log object (%s): %s", i + 1, e.text, lines[i]);
    if (json_object_get(o, "offset")) {
      ck_assert_str_eq(json_string_value(json_object_get(o, "pipeline")),
                       "orders");
      ck_assert(json_is_integer(json_object_get(o, "member")));
      ck_assert_str_eq(json_string_value(json_object_get(o, "topic")), TOPIC);
      ck_assert(json_is_integer(json_object_get(o, "partition")));
      ck_assert(json_is_string(json_object_get(o, "event_id")));
      records++;
    }
    json_decref(o);
  }
  /* Each failed record is logged at least once with its coordinates. */
  ck_assert_msg(records >= RECORDS, "%d lines about a record:\n%s", records,
                tail(err));
  g_strfreev(lines);
  free(out);
  free(err);
  free(cfg);
  free(plugin_cfg);
  free(down);
  free(calls);
  free(plugin);
}
END_TEST

/* --exit-at-end with stderr no terminal: a progress line in the log every
 * interval (KHOST_PROGRESS_INTERVAL_MS, a minute by default), the
 * records left going down to the end, with a rate and an ETA. */
START_TEST(test_run_progress_lines) {
  enum { RECORDS = 30 };
  char *plugin = tu_fixture("scripted"), *calls = dir_path("calls.log");
  char *plugin_cfg = NULL;
  ck_assert_int_ge(
      asprintf(&plugin_cfg, "log_path = \"%s\"; slow_ms = 100;", calls), 0);
  char *cfg = mock_cfg("progress.cfg", "", RECORDS, 0, "max_batch = 5;", plugin,
                       plugin_cfg);
  setenv("KHOST_PROGRESS_INTERVAL_MS", "300", 1);
  char *out, *err;
  int status = run_khost("progress", RUN_TIMEOUT_MS, &out, &err, "run", "-c",
                         cfg, "--exit-at-end");
  unsetenv("KHOST_PROGRESS_INTERVAL_MS");
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  int lines = 0, eta = 0;
  long first = -1, last = -1;
  for (const char *at = err; (at = strstr(at, "] progress: ")) != NULL; at++) {
    long left;
    char tail_text[64] = "";
    ck_assert_int_ge(sscanf(at,
                            "] progress: %ld records left, %*d records/s, "
                            "%63[^\n]",
                            &left, tail_text),
                     1);
    if (first < 0)
      first = left;
    last = left;
    eta += strncmp(tail_text, "ETA ", 4) == 0 &&
           strcmp(tail_text, "ETA unknown") != 0;
    lines++;
  }
  ck_assert_msg(lines >= 2, "%d progress lines:\n%s", lines, tail(err));
  ck_assert_int_eq(first, RECORDS);
  ck_assert_int_lt(last, first);
  ck_assert_msg(eta > 0, "no ETA in the progress lines:\n%s", tail(err));
  free(out);
  free(err);
  free(cfg);
  free(plugin_cfg);
  free(calls);
  free(plugin);
}
END_TEST

/* khost state ACTION -c cfg -p orders [extra]: the exit status, stdout
 * and stderr. */
static int state_cmd(const char *action, const char *cfg, const char *extra,
                     char **out, char **err) {
  proc_t p;
  spawn_khost(&p, action, "state", (char *)action, "-c", (char *)cfg, "-p",
              "orders", (char *)extra, (char *)NULL);
  int status = finish(&p, QUICK_TIMEOUT_MS);
  *out = slurp(p.out);
  *err = slurp(p.err);
  assert_no_sanitizer_report(*err);
  proc_free(&p);
  return status;
}

/* The counters of `state scan` added up; *lines gets the keys. */
static int64_t scan_sum(const char *cfg, size_t *lines) {
  char *out, *err;
  int64_t sum = 0;
  int status = state_cmd("scan", cfg, NULL, &out, &err);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  *lines = 0;
  for (char *l = out; l && *l;) {
    char *tab = strchr(l, '\t'), *nl = strchr(l, '\n');
    ck_assert_msg(tab && strncmp(l, "count:", 6) == 0, "scan line: %s", l);
    sum += strtoll(tab + 1, NULL, 10);
    (*lines)++;
    l = nl ? nl + 1 : NULL;
  }
  free(out);
  free(err);
  return sum;
}

/* `state scan --json` against the text scan: the same keys with the same
 * values, each marked as text; *first gets the first key. */
static void assert_scan_json(const char *cfg, size_t keys, char **first) {
  char *out, *err, *text_out, *text_err;
  json_error_t je;
  ck_assert_int_eq(state_cmd("scan", cfg, NULL, &text_out, &text_err), 0);
  int status = state_cmd("scan", cfg, "--json", &out, &err);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  json_t *rows = json_loads(out, 0, &je);
  ck_assert_msg(json_is_array(rows), "scan --json: %s\n%s", je.text, out);
  ck_assert_uint_eq(json_array_size(rows), keys);
  size_t i;
  json_t *row;
  json_array_foreach(rows, i, row) {
    const char *k = json_string_value(json_object_get(row, "key"));
    const char *v = json_string_value(json_object_get(row, "value"));
    ck_assert_ptr_nonnull(k);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(json_string_value(json_object_get(row, "key_encoding")),
                     "text");
    ck_assert_str_eq(json_string_value(json_object_get(row, "value_encoding")),
                     "text");
    char *line = g_strdup_printf("%s\t%s\n", k, v);
    assert_has(text_out, line, "state scan");
    g_free(line);
    if (i == 0)
      *first = strdup(k);
  }
  json_decref(rows);
  free(out);
  free(err);
  free(text_out);
  free(text_err);
}

/* khost state over what a run of the counter fixture (a counter per value
 * and partition in host state) left: the counters add up to the records
 * handled; reset previews, then removes. */
START_TEST(test_state_commands) {
  char *so = tu_fixture("counter");
  char *cfg = mock_cfg("state.cfg", "", 300, 30, "", so, "");
  char *out, *err, *want = NULL;
  size_t keys = 0, left = 1;
  int status = run_khost("run", RUN_TIMEOUT_MS, &out, &err, "run", "-c", cfg,
                         "--exit-at-end");
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  assert_has(err, "handled 270, duplicates skipped 30", "stderr");
  free(out);
  free(err);
  ck_assert_int_eq(scan_sum(cfg, &keys), 270);
  ck_assert_uint_gt(keys, 0);
  ck_assert_int_eq(state_cmd("stats", cfg, NULL, &out, &err), 0);
  ck_assert_int_ge(asprintf(&want, "pipeline orders: %zu keys", keys), 0);
  assert_has(out, want, "stdout");
  free(want);
  free(out);
  free(err);
  char *first = NULL;
  assert_scan_json(cfg, keys, &first);
  ck_assert_int_eq(state_cmd("stats", cfg, "--json", &out, &err), 0);
  json_error_t je;
  json_t *o = json_loads(out, 0, &je);
  ck_assert_msg(o != NULL, "stats --json: %s\n%s", je.text, out);
  ck_assert_str_eq(json_string_value(json_object_get(o, "pipeline")), "orders");
  ck_assert_int_eq(json_integer_value(json_object_get(o, "keys")),
                   (json_int_t)keys);
  ck_assert_int_gt(json_integer_value(json_object_get(o, "bytes")), 0);
  json_decref(o);
  free(out);
  free(err);
  proc_t g;
  spawn_khost(&g, "get", "state", "get", "-c", cfg, "-p", "orders", "--key",
              first, "--json", (char *)NULL);
  status = finish(&g, QUICK_TIMEOUT_MS);
  out = slurp(g.out);
  err = slurp(g.err);
  proc_free(&g);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  o = json_loads(out, 0, &je);
  ck_assert_msg(o != NULL, "get --json: %s\n%s", je.text, out);
  ck_assert_str_eq(json_string_value(json_object_get(o, "key")), first);
  ck_assert_int_gt(
      strtoll(json_string_value(json_object_get(o, "value")), NULL, 10), 0);
  json_decref(o);
  free(out);
  free(err);
  free(first);
  ck_assert_int_eq(state_cmd("reset", cfg, "--json", &out, &err), 2);
  assert_has(err, "--json goes with get, scan or stats", "stderr");
  free(out);
  free(err);
  ck_assert_int_eq(state_cmd("reset", cfg, NULL, &out, &err), 0);
  assert_has(out, "preview only, nothing changed", "stdout");
  free(out);
  free(err);
  ck_assert_int_eq(scan_sum(cfg, &left), 270);
  ck_assert_int_eq(state_cmd("reset", cfg, "--execute", &out, &err), 0);
  ck_assert_int_ge(asprintf(&want, "removed %zu keys", keys), 0);
  assert_has(out, want, "stdout");
  free(want);
  free(out);
  free(err);
  ck_assert_int_eq(scan_sum(cfg, &left), 0);
  ck_assert_uint_eq(left, 0);
  free(cfg);
  free(so);
}
END_TEST

/* SIGTERM while consuming: exit 0, and what the summary counts as handled
 * is exactly what reached the JSONL file. */
START_TEST(test_sigterm_is_graceful) {
  enum { RECORDS = 20000, DUPS = 500, SHUTDOWN_MS = 10000 };
  char *sink = sink_config();
  char *cfg = mock_cfg("term.cfg", "shutdown_timeout = \"10s\";", RECORDS, DUPS,
                       "", "jsonl_sink", sink);
  char *jsonl = dir_path("orders.jsonl");
  proc_t p;
  uint64_t handled, dups;
  spawn_khost(&p, "term", "run", "-c", cfg, (char *)NULL);
  wait_for_stderr(&p, "subscribed; consuming", QUICK_TIMEOUT_MS);
  /* Something handled and flushed: the signal lands in mid-stream. */
  TU_WAIT_UNTIL(file_size(jsonl) > 0 || reap(&p, 0), RUN_TIMEOUT_MS,
                "the first records in the JSONL file");
  assert_running(&p, "before the signal");
  ck_assert_int_eq(kill(p.pid, SIGTERM), 0);
  int status = finish(&p, SHUTDOWN_MS + 10000);
  char *err = slurp(p.err);
  assert_no_sanitizer_report(err);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  assert_has(err, "finishing the current batches", "stderr");
  parse_summary(err, &handled, &dups);
  ck_assert_uint_gt(handled, 0);
  ck_assert_uint_le(handled + dups, RECORDS);
  ck_assert_uint_eq(check_jsonl(jsonl), handled);
  free(err);
  proc_free(&p);
  free(jsonl);
  free(cfg);
  free(sink);
}
END_TEST

/* A file size limit (ulimit -f, RLIMIT_FSIZE) below what the dedup
 * database needs: khost does not die of SIGXFSZ, SQLite's write fails and
 * khost reports it and exits 1. */
START_TEST(test_file_size_limit_is_an_io_error) {
  char *cfg =
      mock_cfg("fsize.cfg", "", 100, 0, "", "log", "level = \"debug\";");
  proc_t p;
  char *const argv[] = {"/bin/sh",
                        "-c",
                        "ulimit -f 2 && exec \"$0\" \"$@\"",
                        KHOST,
                        "run",
                        "-c",
                        cfg,
                        "--exit-at-end",
                        NULL};
  spawn_argv(&p, "fsize", argv);
  ck_assert_msg(reap(&p, RUN_TIMEOUT_MS), "khost still running");
  char *err = slurp(p.err);
  ck_assert_msg(WIFEXITED(p.status), "killed by signal %d; stderr:\n%s",
                WIFSIGNALED(p.status) ? WTERMSIG(p.status) : 0, tail(err));
  ck_assert_msg(WEXITSTATUS(p.status) == 1, "exit %d; stderr:\n%s",
                WEXITSTATUS(p.status), tail(err));
  assert_has(err, "disk I/O error", "stderr");
  free(err);
  proc_free(&p);
  free(cfg);
}
END_TEST

static size_t count_lines(const char *path) {
  char *s = tu_read_file(path);
  size_t n = 0;
  for (const char *c = s; c && *c; c++)
    n += *c == '\n';
  free(s);
  return n;
}

/* While the first SIGINT waits for a slow batch, a second one ends khost
 * at once with 128 + SIGINT. */
START_TEST(test_second_signal_exits_at_once) {
  enum { SLOW_MS = 3000, BATCH = 5 };
  char *plugin = tu_fixture("scripted"), *calls = dir_path("calls.log");
  char *plugin_cfg = NULL, *batch = NULL;
  ck_assert_msg(access(plugin, R_OK) == 0,
                "%s is not built: `make check` builds the test fixtures",
                plugin);
  ck_assert_int_ge(
      asprintf(&plugin_cfg, "log_path = \"%s\"; slow_ms = %d;", calls, SLOW_MS),
      0);
  ck_assert_int_ge(asprintf(&batch, "max_batch = %d;", BATCH), 0);
  char *cfg = mock_cfg("slow.cfg", "shutdown_timeout = \"60s\";", 300, 0, batch,
                       plugin, plugin_cfg);
  proc_t p;
  spawn_khost(&p, "slow", "run", "-c", cfg, (char *)NULL);
  /* One call done: the member is now sleeping in the next one, with the
   * rest of its batch to go. */
  TU_WAIT_UNTIL(count_lines(calls) > 0 || reap(&p, 0), RUN_TIMEOUT_MS,
                "the first plugin call");
  assert_running(&p, "before the first signal");
  ck_assert_int_eq(kill(p.pid, SIGINT), 0);
  wait_for_stderr(&p, "finishing the current batches", QUICK_TIMEOUT_MS);
  assert_running(&p, "after the first signal");
  int64_t sent = tu_mono_ms();
  ck_assert_int_eq(kill(p.pid, SIGINT), 0);
  ck_assert_msg(reap(&p, SLOW_MS / 2),
                "still running %d ms after the second SIGINT", SLOW_MS / 2);
  int64_t took = tu_mono_ms() - sent;
  char *err = slurp(p.err);
  assert_no_sanitizer_report(err);
  int status = exit_status(&p);
  ck_assert_msg(status == 128 + SIGINT, "exit %d, not %d; stderr:\n%s", status,
                128 + SIGINT, tail(err));
  assert_has(err, "again: exiting now", "stderr");
  ck_assert_msg(strstr(err, "[orders] handled ") == NULL,
                "a summary after the forced exit:\n%s", tail(err));
  ck_assert_int_lt(took, SLOW_MS / 2);
  ck_assert_uint_lt(count_lines(calls), BATCH);
  free(err);
  proc_free(&p);
  free(cfg);
  free(batch);
  free(plugin_cfg);
  free(calls);
  free(plugin);
}
END_TEST

/* ------------------------------------------------------------ reload */

enum { RELOAD_RECORDS = 600 };

/* A pipeline of the reload tests: group NAME-group on the mock topic,
 * the scripted fixture logging its calls to <dir>/NAME.calls, slow_ms a
 * call, batches of 20 (a stop finishes its batch quickly); extra goes
 * into the group. Free with free(). */
static char *reload_pipeline(const char *name, int slow_ms, const char *extra) {
  char *plugin = tu_fixture("scripted"), *s = NULL;
  ck_assert_int_ge(
      asprintf(&s,
               "{ name = \"%s\"; group_id = \"%s-group\";\n"
               "  topics = [ \"" TOPIC "\" ]; max_batch = 20; %s\n"
               "  plugin = \"%s\";\n"
               "  config = { log_path = \"%s/%s.calls\"; slow_ms = %d; }; }",
               name, name, extra, plugin, g_dir, name, slow_ms),
      0);
  free(plugin);
  return s;
}

/* (Re)write <dir>/reload.cfg: the mock cluster with RELOAD_RECORDS
 * records, dedup at <dir>/<db>, the pipelines given (a list's inside). */
static char *reload_cfg(const char *db, const char *pipelines) {
  return write_cfg("reload.cfg",
                   "log_level = \"info\";\n"
                   "mock = { brokers = 1; partitions = 3; sample_records = %d; "
                   "};\n"
                   "kafka = { session_timeout_ms = 3000; "
                   "heartbeat_interval_ms = 300; };\n"
                   "dedup = { path = \"%s/%s\"; };\n"
                   "pipelines = ( %s );\n",
                   RELOAD_RECORDS, g_dir, db, pipelines);
}

static size_t calls_of(const char *name) {
  char *path = g_strdup_printf("%s/%s.calls", g_dir, name);
  size_t n = count_lines(path);
  g_free(path);
  return n;
}

/* How often needle occurs in p's stderr so far. */
static int stderr_count(proc_t *p, const char *needle) {
  char *err = slurp(p->err);
  int n = 0;
  for (const char *at = err; (at = strstr(at, needle)) != NULL; at++)
    n++;
  free(err);
  return n;
}

/* Send p a SIGHUP and wait for one more line holding needle (the
 * outcome). */
static void send_hup(proc_t *p, const char *needle) {
  int before = stderr_count(p, needle);
  ck_assert_int_eq(kill(p->pid, SIGHUP), 0);
  TU_WAIT_UNTIL(stderr_count(p, needle) > before || reap(p, 0), RUN_TIMEOUT_MS,
                needle);
  assert_running(p, "after SIGHUP");
}

static void stop_and_check(proc_t *p) {
  ck_assert_int_eq(kill(p->pid, SIGTERM), 0);
  int status = finish(p, RUN_TIMEOUT_MS);
  char *err = slurp(p->err);
  assert_no_sanitizer_report(err);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  free(err);
}

/* SIGHUP with pipelines unchanged, removed, changed and added: the
 * unchanged one keeps its member (no second assignment) and goes on
 * handling records; the removed one stops, commits and says so; the
 * changed one is restarted; the added one starts and consumes. */
START_TEST(test_reload_pipelines) {
  char *orders = reload_pipeline("orders", 10, "");
  char *audit = reload_pipeline("audit", 10, "");
  char *refunds = reload_pipeline("refunds", 10, "");
  char *refunds2 = reload_pipeline("refunds", 10, "retry = { max = 3; };");
  char *billing = reload_pipeline("billing", 0, "");
  char *before = g_strjoin(",\n", orders, audit, refunds, NULL);
  char *after = g_strjoin(",\n", orders, refunds2, billing, NULL);
  char *cfg = reload_cfg("dedup.db", before);
  proc_t p;
  spawn_khost(&p, "reload", "run", "-c", cfg, (char *)NULL);
  wait_for_stderr(&p, "[orders/0] assigned", RUN_TIMEOUT_MS);
  wait_for_stderr(&p, "[audit/0] assigned", RUN_TIMEOUT_MS);
  wait_for_stderr(&p, "[refunds/0] assigned", RUN_TIMEOUT_MS);
  TU_WAIT_UNTIL(calls_of("orders") > 20 && calls_of("audit") > 20,
                RUN_TIMEOUT_MS, "records handled before the reload");
  free(reload_cfg("dedup.db", after));
  send_hup(&p, "] reloaded ");

  size_t orders_at = calls_of("orders"), audit_at = calls_of("audit");
  ck_assert_msg(orders_at < RELOAD_RECORDS, "orders is done before the test");
  wait_for_stderr(&p, "[billing/0] assigned", RUN_TIMEOUT_MS);
  TU_WAIT_UNTIL(calls_of("billing") >= RELOAD_RECORDS, RUN_TIMEOUT_MS,
                "billing handling every record");
  TU_WAIT_UNTIL(calls_of("orders") > orders_at + 20, RUN_TIMEOUT_MS,
                "orders handling records after the reload");
  ck_assert_uint_eq(calls_of("audit"), audit_at);
  ck_assert_int_eq(stderr_count(&p, "[orders/0] assigned"), 1);
  ck_assert_int_eq(stderr_count(&p, "[orders/0] revoked"), 0);
  ck_assert_int_eq(stderr_count(&p, "[orders] stopped by the reload"), 0);
  ck_assert_int_eq(stderr_count(&p, "[audit] stopped by the reload"), 1);
  ck_assert_int_eq(stderr_count(&p, "[refunds] stopped by the reload"), 1);
  ck_assert_int_eq(stderr_count(&p, "[refunds] started by the reload"), 1);
  ck_assert_int_eq(stderr_count(&p, "[refunds/0] assigned"), 2);
  char *err = slurp(p.err);
  uint64_t handled, commits;
  const char *line = strstr(err, "[audit] handled ");
  ck_assert_msg(line, "no summary of audit:\n%s", tail(err));
  ck_assert_int_eq(sscanf(line,
                          "[audit] handled %" SCNu64
                          ", duplicates skipped %*u, "
                          "failed %*u, retries %*u, without event ID %*u, "
                          "offset commits %" SCNu64,
                          &handled, &commits),
                   2);
  ck_assert_uint_eq(handled, audit_at);
  ck_assert_uint_gt(commits, 0);
  free(err);
  stop_and_check(&p);
  proc_free(&p);
  free(cfg);
  g_free(before);
  g_free(after);
  free(orders);
  free(audit);
  free(refunds);
  free(refunds2);
  free(billing);
}
END_TEST

/* A new config with a mistake, or one changing what a running host
 * cannot (the dedup store), is refused with its reasons; the pipeline
 * keeps running with the old one, and its membership. */
START_TEST(test_reload_refused) {
  char *orders = reload_pipeline("orders", 10, "");
  char *typo = reload_pipeline("orders", 10, "membrs = 2;");
  char *cfg = reload_cfg("dedup.db", orders);
  proc_t p;
  spawn_khost(&p, "refused", "run", "-c", cfg, (char *)NULL);
  wait_for_stderr(&p, "[orders/0] assigned", RUN_TIMEOUT_MS);
  TU_WAIT_UNTIL(calls_of("orders") > 10, RUN_TIMEOUT_MS, "records handled");

  free(reload_cfg("dedup.db", typo));
  send_hup(&p, "reload refused");
  char *err = slurp(p.err), *want = g_strdup_printf("%s:", cfg);
  const char *refusal = strstr(err, "reload refused");
  ck_assert_msg(strstr(refusal, want) && strstr(refusal, "membrs"),
                "the refusal does not name the file, line and key:\n%s",
                tail(err));
  free(err);

  free(reload_cfg("other.db", orders));
  send_hup(&p, "reload refused");
  wait_for_stderr(&p, "dedup changed", QUICK_TIMEOUT_MS);

  size_t at = calls_of("orders");
  TU_WAIT_UNTIL(calls_of("orders") > at + 20, RUN_TIMEOUT_MS,
                "orders handling records after the refusals");
  ck_assert_int_eq(stderr_count(&p, "[orders/0] assigned"), 1);
  ck_assert_int_eq(stderr_count(&p, "stopped by the reload"), 0);
  stop_and_check(&p);
  proc_free(&p);
  g_free(want);
  free(cfg);
  free(typo);
  free(orders);
}
END_TEST

/* ------------------------------------------------------------ README */

/* text with the one occurrence of from replaced by to (g_free()); fails
 * unless from occurs exactly once. */
static char *replace_once(const char *text, const char *from, const char *to) {
  gchar **parts = g_strsplit(text, from, -1);
  ck_assert_msg(g_strv_length(parts) == 2,
                "examples/quickstart.cfg: \"%s\" found %u times, not once",
                from, g_strv_length(parts) - 1);
  char *out = g_strjoinv(to, parts);
  g_strfreev(parts);
  return out;
}

/* README's quick start, `./src/khost run -c examples/quickstart.cfg
 * --exit-at-end` from the top of the built tree, on a copy of the example
 * whose database and JSONL file lie in the test's directory (the example's
 * /tmp paths would collide with other runs); the rest of it, the relative
 * plugin_dir included, as written. */
START_TEST(test_readme_quickstart) {
  char *example = slurp(TOP_SRCDIR "/examples/quickstart.cfg");
  char *db = dir_path("khost-quickstart.db");
  char *jsonl = dir_path("khost-quickstart.jsonl");
  char *qdb = g_strdup_printf("\"%s\"", db);
  char *qjsonl = g_strdup_printf("\"%s\"", jsonl);
  char *a = replace_once(example, "\"/tmp/khost-quickstart.db\"", qdb);
  char *b = replace_once(a, "\"/tmp/khost-quickstart.jsonl\"", qjsonl);
  /* Nothing else it writes is shared with other runs. */
  ck_assert_msg(strstr(b, "\"/tmp/khost-quickstart") == NULL, "%s", b);
  char *cfg = write_cfg("quickstart.cfg", "%s", b);
  proc_t p;
  char *const argv[] = {"/bin/sh",    "-c",  "cd \"$0\" && exec \"$@\"",
                        TOP_BUILDDIR, KHOST, "run",
                        "-c",         cfg,   "--exit-at-end",
                        NULL};
  spawn_argv(&p, "quickstart", argv);
  int status = finish(&p, RUN_TIMEOUT_MS);
  char *err = slurp(p.err);
  assert_no_sanitizer_report(err);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  /* "its last log line reads handled 950, duplicates skipped 50, ..." */
  const char *last = err + strlen(err);
  ck_assert_msg(last > err && last[-1] == '\n', "stderr:\n%s", tail(err));
  for (last--; last > err && last[-1] != '\n'; last--)
    ;
  assert_has(last,
             "notice  [order-analytics] handled 950, duplicates skipped 50, "
             "failed 0, ",
             "the last line of stderr");
  ck_assert_uint_eq(check_jsonl(jsonl), 950);
  free(err);
  proc_free(&p);
  free(cfg);
  g_free(b);
  g_free(a);
  g_free(qjsonl);
  g_free(qdb);
  free(jsonl);
  free(db);
  free(example);
}
END_TEST

/* Path of cc on $PATH, or NULL. */
static char *find_cc(void) {
  const char *path = getenv("PATH");
  gchar **dirs = g_strsplit(path ? path : "/usr/bin:/bin", ":", -1);
  char *found = NULL;
  for (size_t i = 0; dirs[i] && !found; i++) {
    char *cc = g_build_filename(dirs[i][0] ? dirs[i] : ".", "cc", NULL);
    if (access(cc, X_OK) == 0)
      found = strdup(cc);
    g_free(cc);
  }
  g_strfreev(dirs);
  return found;
}

/* The first ```c block of README.md, written to <dir>/count_orders.c. */
static char *readme_plugin_source(void) {
  char *readme = slurp(TOP_SRCDIR "/README.md");
  char *start = strstr(readme, "\n```c\n");
  ck_assert_msg(start != NULL, "README.md has no ```c block");
  start += strlen("\n```c\n");
  char *end = strstr(start, "\n```");
  ck_assert_msg(end != NULL, "README.md: the ```c block does not end");
  end[1] = '\0';
  ck_assert_msg(strstr(start, "khost_plugin_entry") != NULL,
                "README.md's first C block is not a plugin");
  char *path = tu_write_file(g_dir, "count_orders.c", start);
  free(readme);
  return path;
}

static char *count_orders_cfg(const char *name, const char *every) {
  char *so = dir_path("count_orders.so"), *conf = NULL;
  ck_assert_int_ge(asprintf(&conf, "every = %s;", every), 0);
  char *cfg = mock_cfg(name, "", 300, 30, "", so, conf);
  free(conf);
  free(so);
  return cfg;
}

/* README's line that starts with start (a shell command), as written. */
static char *readme_line(const char *readme, const char *start) {
  char *want = g_strdup_printf("\n%s", start);
  const char *at = strstr(readme, want);
  ck_assert_msg(at != NULL, "README.md has no line starting \"%s\"", start);
  const char *end = strchr(at + 1, '\n');
  char *line = g_strndup(at + 1, (size_t)(end - at - 1));
  g_free(want);
  return line;
}

/* One of README's cc lines, run as written by /bin/sh in the test's
 * directory (which holds count_orders.c) with env (NAME=VALUE pairs, or
 * ""); the plugin it built is removed first, so it must make one. */
static void readme_cc(const char *line, const char *env) {
  char *so = dir_path("count_orders.so");
  unlink(so);
  char *cmd = g_strdup_printf("cd '%s' && %s %s", g_dir, env, line);
  char *const sh[] = {"/bin/sh", "-c", cmd, NULL};
  proc_t p;
  spawn_argv(&p, "cc", sh);
  int status = finish(&p, RUN_TIMEOUT_MS);
  char *err = slurp(p.err);
  ck_assert_msg(status == 0, "%s: exit %d:\n%s", line, status, tail(err));
  ck_assert_msg(access(so, F_OK) == 0, "%s built no count_orders.so", line);
  free(err);
  proc_free(&p);
  g_free(cmd);
  free(so);
}

/* README's plugin, built with README's two cc lines as written: from the
 * source tree (-I include), and with pkg-config and the khost-plugin.pc of
 * this build (its include directory under a PKG_CONFIG_SYSROOT_DIR that
 * holds this tree's header there, as make install would); then
 * `khost plugin-info ./count_orders.so`, check and run. */
START_TEST(test_readme_plugin) {
  char *cc = find_cc();
  if (!cc) {
    fprintf(stderr, "test_readme_plugin: SKIPPED: no cc on PATH\n");
    return;
  }
  char *src = readme_plugin_source(), *so = dir_path("count_orders.so");
  char *readme = slurp(TOP_SRCDIR "/README.md");
  char *out, *err;
  proc_t p;

  char *pc_line = readme_line(readme, "cc -shared -fPIC -fvisibility=hidden "
                                      "$(pkg-config --cflags khost-plugin)");
  char *tree_line =
      readme_line(readme, "cc -shared -fPIC -fvisibility=hidden -I include ");
  char *inc = dir_path("include");
  ck_assert_int_eq(symlink(TOP_SRCDIR "/include", inc), 0);
  readme_cc(tree_line, "");

  char *root = dir_path("root");
  char *env = g_strdup_printf(
      "PKG_CONFIG_PATH='%s' PKG_CONFIG_SYSROOT_DIR='%s'", TOP_BUILDDIR, root);
  char *stage = g_strdup_printf(
      "inc=$(PKG_CONFIG_PATH='%s' pkg-config --variable=includedir "
      "khost-plugin) && mkdir -p \"%s$inc\" && ln -s '%s/include/khost' "
      "\"%s$inc/khost\"",
      TOP_BUILDDIR, root, TOP_SRCDIR, root);
  char *const sh[] = {"/bin/sh", "-c", stage, NULL};
  spawn_argv(&p, "stage", sh);
  ck_assert_msg(finish(&p, QUICK_TIMEOUT_MS) == 0, "%s failed", stage);
  proc_free(&p);
  char *exported = g_strdup_printf("export %s &&", env);
  readme_cc(pc_line, exported);

  /* README: "khost plugin-info ./count_orders.so prints the name, version,
   * ABI and declared settings". */
  ck_assert_msg(strstr(readme, "`khost plugin-info ./count_orders.so`"),
                "README.md no longer shows plugin-info");
  char *rel = g_strdup_printf(
      "cd '%s' && exec '%s' plugin-info ./count_orders.so", g_dir, KHOST);
  char *const info[] = {"/bin/sh", "-c", rel, NULL};
  spawn_argv(&p, "info", info);
  ck_assert_msg(finish(&p, QUICK_TIMEOUT_MS) == 0, "plugin-info failed");
  out = slurp(p.out);
  assert_has(out, "name:       count_orders", "plugin-info");
  assert_has(out, "version:    1.0", "plugin-info");
  assert_has(out, "plugin ABI: 1.", "plugin-info");
  assert_has(out, "every    int", "plugin-info");
  assert_has(out, "log every N-th order", "plugin-info");
  free(out);
  proc_free(&p);
  g_free(rel);
  g_free(exported);
  g_free(stage);
  g_free(env);
  free(root);
  free(inc);
  g_free(tree_line);
  g_free(pc_line);
  free(readme);

  char *good = count_orders_cfg("every100.cfg", "100");
  int status = run_khost("good", QUICK_TIMEOUT_MS, &out, &err, "check", "-c",
                         good, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, ": OK", "stdout");
  free(out);
  free(err);

  char *bad = count_orders_cfg("everyx.cfg", "\"x\"");
  char *text = slurp(bad);
  char *key = where(bad, text, "every = \"x\"", "pipelines[0].config.every");
  status =
      run_khost("bad", QUICK_TIMEOUT_MS, &out, &err, "check", "-c", bad, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, key, "stderr");
  free(out);
  free(err);

  status = run_khost("run", RUN_TIMEOUT_MS, &out, &err, "run", "-c", good,
                     "--exit-at-end");
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, tail(err));
  assert_has(err, "handled 270, duplicates skipped 30, failed 0", "stderr");
  /* The plugin itself ran: it logs every 100th order. */
  assert_has(err, "[orders/0/count_orders] 200 orders, last ", "stderr");
  free(out);
  free(err);
  free(key);
  free(text);
  free(bad);
  free(good);
  free(so);
  free(src);
  free(cc);
}
END_TEST

/* ------------------------------------------------------------ test-plugin */

/* khost with the NULL-terminated arguments after err, run to its end. */
static int run_khost_v(const char *tag, char **out, char **err, ...) {
  char *argv[16] = {(char *)KHOST};
  size_t n = 1;
  proc_t p;
  va_list ap;
  va_start(ap, err);
  for (char *a; (a = va_arg(ap, char *)) != NULL;) {
    ck_assert_uint_lt(n, G_N_ELEMENTS(argv) - 1);
    argv[n++] = a;
  }
  va_end(ap);
  argv[n] = NULL;
  spawn_argv(&p, tag, argv);
  int status = finish(&p, QUICK_TIMEOUT_MS);
  *out = slurp(p.out);
  *err = slurp(p.err);
  assert_no_sanitizer_report(*err);
  proc_free(&p);
  return status;
}

/* "log_path=<dir>/scripted.log": where the scripted fixture logs calls. */
static char *scripted_log_setting(char **log) {
  char *s = NULL;
  *log = dir_path("scripted.log");
  ck_assert_int_ge(asprintf(&s, "log_path=%s", *log), 0);
  return s;
}

static size_t lines_in(const char *path) {
  return access(path, F_OK) == 0 ? count_lines(path) : 0;
}

/* Each result as the plugin gave it, the retries the host would make,
 * the flush, and a summary; exit 0 when nothing was FATAL. */
START_TEST(test_test_plugin_results) {
  char *log, *setting = scripted_log_setting(&log);
  char *plugin = tu_fixture("scripted"), *out, *err;
  char *records = write_cfg(
      "records.jsonl",
      "{\"topic\": \"orders\", \"key\": \"u1\", \"value\": \"ok\", "
      "\"headers\": {\"eventId\": \"e-1\"}}\n"
      "{\"topic\": \"orders\", \"value\": \"retry\", \"headers\": "
      "[[\"eventId\", \"e-2\"]]}\n"
      "\n"
      "{\"topic\": \"orders\", \"partition\": 1, "
      "\"value\": \"fail: out of stock\", \"headers\": {\"eventId\": "
      "\"e-3\"}}\n"
      "{\"topic\": \"orders\", \"partition\": 1, \"value\": {\"n\": 1}}\n");
  int status = run_khost_v("results", &out, &err, "test-plugin", plugin,
                           "--records", records, "--config", setting, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, "orders [0] @0 event e-1: OK\n", "stdout");
  assert_has(out, "orders [0] @1 event e-2: RETRY (attempt 1)\n", "stdout");
  assert_has(out, "orders [0] @1 event e-2: RETRY (attempt 2)\n", "stdout");
  assert_has(out, "orders [0] @1 event e-2: OK (attempt 3)\n", "stdout");
  /* With the reason the plugin gave through fail_reason(). */
  assert_has(out, "orders [1] @0 event e-3: FAIL: out of stock\n", "stdout");
  assert_has(out, "orders [1] @1 event -: OK\n", "stdout");
  assert_has(out, "flush after 4 records: OK\n", "stdout");
  assert_has(out,
             "4 of 4 records handled: 3 OK, 1 FAIL (0 after retries), "
             "0 FATAL; 2 RETRY answers; 1 flush\n",
             "stdout");
  /* The plugin saw every call the output reports: 1 + 3 + 1 + 1. */
  ck_assert_uint_eq(lines_in(log), 6);
  free(out);
  free(err);
  free(records);
  free(plugin);
  free(setting);
  free(log);
}
END_TEST

/* FATAL: nothing after it reaches the plugin, no flush, exit 1. */
START_TEST(test_test_plugin_fatal) {
  char *records =
      write_cfg("records.jsonl", "{\"topic\": \"t\", \"value\": \"ok\"}\n"
                                 "{\"topic\": \"t\", \"value\": \"fatal\"}\n"
                                 "{\"topic\": \"t\", \"value\": \"ok\"}\n");
  char *log, *setting = scripted_log_setting(&log);
  char *plugin = tu_fixture("scripted"), *out, *err;
  int status = run_khost_v("fatal", &out, &err, "test-plugin", plugin,
                           "--records", records, "--config", setting, NULL);
  ck_assert_msg(status == 1, "exit %d, not 1; stderr:\n%s", status, err);
  assert_has(out, "t [0] @1 event -: FATAL", "stdout");
  assert_has(out, "2 of 3 records handled", "stdout");
  ck_assert_msg(strstr(out, "flush") == NULL || strstr(out, "0 flushes"),
                "flushed after FATAL:\n%s", out);
  ck_assert_uint_eq(lines_in(log), 2);
  free(out);
  free(err);
  free(records);
  free(plugin);
  free(setting);
  free(log);
}
END_TEST

/* Every field of the JSON line reaches the plugin: jsonl_sink writes the
 * record back out as it saw it. */
START_TEST(test_test_plugin_record_fields) {
  char *records = write_cfg(
      "records.jsonl",
      "{\"topic\": \"payments\", \"partition\": 2, \"offset\": 40,\n"
      "  \"key\": \"user-7\", \"value\": {\"amount\": 5},\n"
      "  \"timestamp\": 1700000000123,\n"
      "  \"headers\": [[\"eventId\", \"e-9\"], [\"trace\", null]]}\n");
  /* One record per line: join the pretty-printed one. */
  char *text = slurp(records);
  for (char *c = text; *c; c++)
    if (*c == '\n' && c[1])
      *c = ' ';
  free(records);
  records = write_cfg("records.jsonl", "%s", text);
  char *jsonl = dir_path("out.jsonl"), *setting = NULL, *out, *err;
  ck_assert_int_ge(asprintf(&setting, "path=%s", jsonl), 0);
  int status = run_khost_v("fields", &out, &err, "test-plugin",
                           PLUGIN_DIR "/jsonl_sink.so", "--records", records,
                           "--config", setting, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, "payments [2] @40 event e-9: OK", "stdout");
  json_error_t jerr;
  json_t *obj = json_load_file(jsonl, 0, &jerr);
  ck_assert_msg(obj != NULL, "%s: %s", jsonl, jerr.text);
  ck_assert_str_eq(json_string_value(json_object_get(obj, "topic")),
                   "payments");
  ck_assert_int_eq(json_integer_value(json_object_get(obj, "partition")), 2);
  ck_assert_int_eq(json_integer_value(json_object_get(obj, "offset")), 40);
  ck_assert_str_eq(json_string_value(json_object_get(obj, "key")), "user-7");
  ck_assert_str_eq(json_string_value(json_object_get(obj, "value")),
                   "{\"amount\":5}");
  ck_assert_str_eq(json_string_value(json_object_get(obj, "event_id")), "e-9");
  json_t *hdrs = json_object_get(obj, "headers");
  ck_assert_str_eq(json_string_value(json_object_get(hdrs, "eventId")), "e-9");
  ck_assert_msg(json_is_null(json_object_get(hdrs, "trace")),
                "header trace is not null");
  json_decref(obj);
  free(out);
  free(err);
  free(setting);
  free(jsonl);
  free(text);
  free(records);
}
END_TEST

/* A plugin that does not load, a setting it does not know, a records file
 * with mistakes: exit 2 with the message, and no record handled. */
START_TEST(test_test_plugin_errors) {
  char *records =
      write_cfg("records.jsonl", "{\"topic\": \"t\", \"value\": \"ok\"}\n"
                                 "{\"topic\": \"t\", \"partition\": \"one\"}\n"
                                 "{\"topic\": \"t\", \"colour\": \"blue\"}\n"
                                 "{\"topic\": \"t\",\n");
  char *good = write_cfg("good.jsonl", "{\"topic\": \"t\"}\n");
  char *missing = dir_path("no/such.so");
  char *log, *setting = scripted_log_setting(&log);
  char *plugin = tu_fixture("scripted"), *out, *err;
  int status = run_khost_v("records", &out, &err, "test-plugin", plugin,
                           "--records", records, "--config", setting, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, "records.jsonl:2: partition: must be an integer", "stderr");
  assert_has(err, "records.jsonl:3: colour: unknown field", "stderr");
  assert_has(err, "records.jsonl:4: not JSON", "stderr");
  ck_assert_msg(lines_in(log) == 0, "a record reached the plugin");
  free(out);
  free(err);

  status = run_khost_v("missing", &out, &err, "test-plugin", missing,
                       "--records", good, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, missing, "stderr");
  assert_has(err, "cannot load plugin", "stderr");
  free(out);
  free(err);

  status = run_khost_v("setting", &out, &err, "test-plugin", plugin,
                       "--records", good, "--config", setting, "--config",
                       "flavour=vanilla", NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, "config.flavour: unknown setting for plugin scripted",
             "stderr");
  ck_assert_msg(lines_in(log) == 0, "a record reached the plugin");
  free(out);
  free(err);

  status = run_khost_v("usage", &out, &err, "test-plugin", plugin, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, "--records FILE is required", "stderr");
  free(out);
  free(err);
  free(records);
  free(good);
  free(missing);
  free(plugin);
  free(setting);
  free(log);
}
END_TEST

/* -c FILE -p PIPELINE: the pipeline's plugin, settings, event ID source,
 * retry limit and first topic. */
START_TEST(test_test_plugin_pipeline) {
  char *plugin = tu_fixture("scripted"), *log = dir_path("scripted.log");
  char *cfg = write_cfg("pipe.cfg",
                        "mock = { brokers = 1; };\n"
                        "dedup = { path = \"%s/dedup.db\"; };\n"
                        "pipelines = ( {\n"
                        "  name = \"orders\"; group_id = \"g\";\n"
                        "  topics = [ \"" TOPIC "\" ];\n"
                        "  plugin = \"%s\"; event_id = \"key\";\n"
                        "  retry = { max = 1; };\n"
                        "  config = { log_path = \"%s\"; retry_times = 5; };\n"
                        "} );\n",
                        g_dir, plugin, log);
  char *records =
      write_cfg("records.jsonl", "{\"key\": \"k1\", \"value\": \"ok\"}\n"
                                 "{\"key\": \"k2\", \"value\": \"retry\"}\n");
  char *out, *err;
  int status = run_khost_v("pipeline", &out, &err, "test-plugin", "-c", cfg,
                           "-p", "orders", "--records", records, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, TOPIC " [0] @0 event k1: OK\n", "stdout");
  assert_has(out, TOPIC " [0] @1 event k2: FAIL (attempt 2): retries exhausted",
             "stdout");
  ck_assert_uint_eq(lines_in(log), 3);
  free(out);
  free(err);

  status = run_khost_v("nopipe", &out, &err, "test-plugin", "-c", cfg, "-p",
                       "billing", "--records", records, NULL);
  ck_assert_msg(status == 2, "exit %d, not 2; stderr:\n%s", status, err);
  assert_has(err, "no pipeline named \"billing\"", "stderr");
  free(out);
  free(err);
  free(records);
  free(cfg);
  free(log);
  free(plugin);
}
END_TEST

/* examples/records.jsonl is what README shows: it runs as is. */
START_TEST(test_test_plugin_example_records) {
  char *log, *setting = scripted_log_setting(&log);
  char *plugin = tu_fixture("scripted"), *out, *err;
  int status = run_khost_v("example", &out, &err, "test-plugin", plugin,
                           "--records", TOP_SRCDIR "/examples/records.jsonl",
                           "--config", setting, NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, " records handled: ", "stdout");
  ck_assert_uint_gt(lines_in(log), 0);
  free(out);
  free(err);
  free(plugin);
  free(setting);
  free(log);
}
END_TEST

/* A stateful plugin reads back what it wrote: host state in memory for the
 * run, the writes of each record joining the batch of its outcome. The
 * demo's coupon_issuer with a stock of 2 refuses the third request for a
 * coupon, and its closing summary reads the counts from the state. */
START_TEST(test_test_plugin_state) {
  char *out, *err;
  char *records =
      write_cfg("coupons.jsonl", "{\"topic\": \"c\", \"key\": \"1\", "
                                 "\"value\": {\"couponId\": 1, \"userId\": 1}, "
                                 "\"headers\": {\"eventId\": \"r1\"}}\n"
                                 "{\"topic\": \"c\", \"key\": \"1\", "
                                 "\"value\": {\"couponId\": 1, \"userId\": 2}, "
                                 "\"headers\": {\"eventId\": \"r2\"}}\n"
                                 "{\"topic\": \"c\", \"key\": \"1\", "
                                 "\"value\": {\"couponId\": 1, \"userId\": 3}, "
                                 "\"headers\": {\"eventId\": \"r3\"}}\n");
  int status = run_khost_v("state", &out, &err, "test-plugin",
                           TOP_BUILDDIR "/plugins/.libs/coupon_issuer.so",
                           "--records", records, "--config", "stock=2", NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  assert_has(out, "3 of 3 records handled: 3 OK, 0 FAIL", "stdout");
  assert_has(err,
             "offset 2 eventId r3: coupon 1 sold out (stock 2): request of "
             "user 3 refused",
             "stderr");
  assert_has(err,
             "coupon 1: issued 2 of stock 2, 1 sold-out request(s) "
             "refused",
             "stderr");
  free(out);
  free(err);
  free(records);
}
END_TEST

/* The calls a member makes, in its order: init, create, assigned with every
 * partition of the file, handle per record, revoked, destroy, fini. */
START_TEST(test_test_plugin_lifecycle) {
  char *records =
      write_cfg("records.jsonl", "{\"topic\": \"t\"}\n"
                                 "{\"topic\": \"t\", \"partition\": "
                                 "1}\n"
                                 "{\"topic\": \"t\"}\n");
  char *log = dir_path("lifecycle.log"), *out, *err;
  ck_assert_int_eq(setenv("LIFECYCLE_LOG", log, 1), 0);
  int status = run_khost_v("lifecycle", &out, &err, "test-plugin",
                           TOP_BUILDDIR "/tests/fixtures/.libs/lifecycle.so",
                           "--records", records, "--config", "label=x", NULL);
  unsetenv("LIFECYCLE_LOG");
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  char *calls = slurp(log);
  ck_assert_str_eq(calls, "init\n"
                          "create x test-plugin/0 limit=7 ratio=0.5 verbose=0\n"
                          "assigned x/0 t[0] t[1]\n"
                          "handle x/0 t[0]@0\n"
                          "handle x/0 t[1]@0\n"
                          "handle x/0 t[0]@1\n"
                          "revoked x/0 lost=0 t[0] t[1]\n"
                          "destroy x/0\n"
                          "fini\n");
  free(calls);
  free(out);
  free(err);
  free(log);
  free(records);
}
END_TEST

/* README's test-plugin example: the plugin it shows over
 * examples/records.jsonl prints exactly what README says. */
START_TEST(test_test_plugin_readme) {
  static const char cmd[] = "$ khost test-plugin ./count_orders.so --config "
                            "every=1 \\\n      --records "
                            "examples/records.jsonl\n";
  char *cc = find_cc();
  if (!cc) {
    fprintf(stderr, "test_test_plugin_readme: SKIPPED: no cc on PATH\n");
    return;
  }
  char *readme = slurp(TOP_SRCDIR "/README.md");
  char *want = strstr(readme, cmd);
  ck_assert_msg(want != NULL, "README.md does not show: %s", cmd);
  want += strlen(cmd);
  char *end = strstr(want, "```");
  ck_assert_msg(end != NULL, "README.md: the example block does not end");
  *end = '\0';
  char *src = readme_plugin_source(), *so = dir_path("count_orders.so");
  char *const cc_argv[] = {
      cc, "-shared", "-fPIC", "-I", TOP_SRCDIR "/include", "-o", so, src, NULL};
  proc_t p;
  spawn_argv(&p, "cc", cc_argv);
  ck_assert_int_eq(finish(&p, RUN_TIMEOUT_MS), 0);
  proc_free(&p);
  char *out, *err;
  int status = run_khost_v("readme", &out, &err, "test-plugin", so, "--config",
                           "every=1", "--records",
                           TOP_SRCDIR "/examples/records.jsonl", NULL);
  ck_assert_msg(status == 0, "exit %d; stderr:\n%s", status, err);
  ck_assert_str_eq(out, want);
  free(out);
  free(err);
  free(src);
  free(so);
  free(readme);
  free(cc);
}
END_TEST

/* README: while khost runs on the embedded mock cluster, other processes
 * can produce to the address it logs; its kcat line, run as written but
 * for that address, feeds the pipeline a record. */
START_TEST(test_readme_kcat_to_mock) {
  char *kcat = g_find_program_in_path("kcat");
  if (!kcat) {
    fprintf(stderr, "test_readme_kcat_to_mock: SKIPPED: no kcat on PATH\n");
    return;
  }
  char *readme = slurp(TOP_SRCDIR "/README.md");
  char *line = strstr(readme, "| kcat -P -b 127.0.0.1:PORT ");
  ck_assert_msg(line != NULL, "README.md has no kcat line for the mock");
  while (line > readme && line[-1] != '\n')
    line--;
  *strchr(line, '\n') = '\0';
  char *sink = sink_config();
  /* No HTTP listener: its default port may be another khost's. */
  char *cfg = mock_cfg("kcat.cfg", "http = { listen = \"\"; };", 0, 0, "",
                       "jsonl_sink", sink);
  char *jsonl = dir_path("orders.jsonl"), addr[256];
  proc_t p, k;
  spawn_khost(&p, "run", "run", "-c", cfg, (char *)NULL);
  wait_for_stderr(&p, "subscribed; consuming", RUN_TIMEOUT_MS);
  char *err = slurp(p.err);
  const char *at = strstr(err, "broker(s) at ");
  ck_assert_msg(at && sscanf(at, "broker(s) at %255s", addr) == 1,
                "no mock cluster address in:\n%s", tail(err));
  char *cmd = replace_once(line, "127.0.0.1:PORT", addr);
  char *const sh[] = {"/bin/sh", "-c", cmd, NULL};
  spawn_argv(&k, "kcat", sh);
  ck_assert_msg(finish(&k, QUICK_TIMEOUT_MS) == 0, "%s failed", cmd);
  TU_WAIT_UNTIL(file_has(jsonl, "\"event_id\":\"order-1\""), RUN_TIMEOUT_MS,
                "the record kcat produced, in the JSONL file");
  ck_assert_int_eq(kill(p.pid, SIGTERM), 0);
  ck_assert_int_eq(finish(&p, RUN_TIMEOUT_MS), 0);
  proc_free(&k);
  proc_free(&p);
  g_free(cmd);
  free(err);
  free(jsonl);
  free(cfg);
  free(sink);
  free(readme);
  g_free(kcat);
}
END_TEST

Suite *cli_suite(void) {
  Suite *s = suite_create("cli");
  TCase *usage = tcase_create("usage");
  tcase_add_unchecked_fixture(usage, case_setup, case_teardown);
  tcase_add_checked_fixture(usage, setup, teardown);
  tcase_set_timeout(usage, 30);
  tcase_add_test(usage, test_version);
  tcase_add_test(usage, test_help);
  tcase_add_test(usage, test_command_help);
  tcase_add_test(usage, test_man_page);
  tcase_add_test(usage, test_help_options_in_man_page);
  tcase_add_test(usage, test_usage_errors);
  suite_add_tcase(s, usage);

  TCase *check = tcase_create("check");
  tcase_add_unchecked_fixture(check, case_setup, case_teardown);
  tcase_add_checked_fixture(check, setup, teardown);
  tcase_set_timeout(check, 30);
  tcase_add_test(check, test_check_good);
  tcase_add_test(check, test_check_reports_every_mistake);
  tcase_add_test(check, test_check_plugin_problems);
  tcase_add_test(check, test_plugin_info_schema);
  tcase_add_test(check, test_plugin_info_name_and_errors);
  tcase_add_test(check, test_plugin_init_failure);
  tcase_add_test(check, test_check_machine_problems);
  suite_add_tcase(s, check);

  /* The tests that run khost against the mock cluster, each a case of its
   * own (tagged with the case they used to share), run side by side
   * (tests/runner.c), the longest first. */
  const struct {
    const TTest *test;
    const char *tag;
    int timeout_s;
  } slow[] = {{test_second_signal_exits_at_once, "run", 90},
              {test_run_exit_at_end, "run", 90},
              {test_run_json_log, "run", 90},
              {test_run_progress_lines, "run", 90},
              {test_reload_pipelines, "reload", 120},
              {test_reload_refused, "reload", 120},
              {test_readme_plugin, "readme", 120},
              {test_readme_quickstart, "readme", 120},
              {test_readme_kcat_to_mock, "readme", 120},
              {test_sigterm_is_graceful, "run", 90},
              {test_file_size_limit_is_an_io_error, "run", 90},
              {test_state_commands, "run", 90}};
  for (size_t i = 0; i < G_N_ELEMENTS(slow); i++) {
    TCase *tc = tu_case(s, slow[i].test->name + strlen("test_"),
                        slow[i].timeout_s, slow[i].tag);
    tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, slow[i].test);
  }

  TCase *tp = tcase_create("test_plugin");
  tcase_add_unchecked_fixture(tp, case_setup, case_teardown);
  tcase_add_checked_fixture(tp, setup, teardown);
  tcase_set_timeout(tp, 60);
  tcase_add_test(tp, test_test_plugin_results);
  tcase_add_test(tp, test_test_plugin_fatal);
  tcase_add_test(tp, test_test_plugin_record_fields);
  tcase_add_test(tp, test_test_plugin_errors);
  tcase_add_test(tp, test_test_plugin_pipeline);
  tcase_add_test(tp, test_test_plugin_example_records);
  tcase_add_test(tp, test_test_plugin_state);
  tcase_add_test(tp, test_test_plugin_lifecycle);
  tcase_add_test(tp, test_test_plugin_readme);
  suite_add_tcase(s, tp);
  return s;
}
