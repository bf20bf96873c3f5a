/*
 * README's worked example "rebuild a plugin's state", run word for word:
 * every command of its ```sh blocks, in order, in one shell's variables,
 * from a directory standing for the top of the built tree. A mock cluster
 * in the test process stands in for the broker: tests/kafka/broker there
 * is a script that answers `bootstrap` with the mock's address and takes
 * `start`, `stop` and the topic creation (the test made the topic) as
 * done. /tmp/ of the example is the test's directory. Each step must
 * print what README says it prints, and README must say what the test
 * asserts.
 */
#include <check.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mockutil.h"
#include "readmeutil.h"
#include "testutil.h"

#define HEADING "### Worked example: rebuild a plugin's state\n"
#define TOPIC "coupon-issue"
#define WHAT "state rebuild example"

/* <dir>/tree: src and plugins of the build, and the stand-in broker
 * script, which logs its calls to <tree>/tests/kafka/calls. */
static char *make_tree(const mu_cluster_t *c) {
  char *tree = g_build_filename(c->dir, "tree", NULL);
  gchar *kafka = g_build_filename(tree, "tests", "kafka", NULL);
  gchar *src = g_build_filename(tree, "src", NULL);
  gchar *plugins = g_build_filename(tree, "plugins", NULL);
  ck_assert_int_eq(g_mkdir_with_parents(kafka, 0755), 0);
  ck_assert_int_eq(symlink(TOP_BUILDDIR "/src", src), 0);
  ck_assert_int_eq(symlink(TOP_BUILDDIR "/plugins", plugins), 0);
  char *script = tu_write_filef(kafka, "broker",
                                "#!/bin/sh\n"
                                "echo \"$*\" >>\"$(dirname \"$0\")/calls\"\n"
                                "case \"$1\" in\n"
                                "bootstrap) echo '%s' ;;\n"
                                "start|stop|run-class) ;;\n"
                                "*) exit 2 ;;\n"
                                "esac\n",
                                c->bootstraps);
  chmod(script, 0755);
  free(script);
  g_free(plugins);
  g_free(src);
  g_free(kafka);
  return tree;
}

static void die_with_parent(gpointer unused) {
  (void)unused;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Run cmd in tree after the assignments in vars, as one shell would;
 * fails unless it exits 0. Its stdout and stderr (g_free()). */
static void run(const char *tree, const char *vars, const char *cmd, char **out,
                char **err) {
  gchar *script = g_strdup_printf("cd \"$0\"\n%s%s\n", vars, cmd);
  char *argv[] = {"/bin/sh", "-ec", script, (char *)tree, NULL};
  int status = -1;
  GError *error = NULL;
  ck_assert_msg(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, die_with_parent,
                             NULL, out, err, &status, &error),
                "spawn: %s", error ? error->message : "?");
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "README.md's state rebuild example: `%s` exited %d:\n%s\n%s",
                cmd, status, *out, *err);
  g_free(script);
}

/* A shell variable assignment (name=...) on one line. */
static int is_assignment(const char *cmd) {
  size_t n = strspn(cmd, "abcdefghijklmnopqrstuvwxyz_");
  return n > 0 && cmd[n] == '=' && !strchr(cmd, '\n');
}

/* What README says the runs and scans print, in order. */
typedef struct seen {
  int runs, scans, resets;
} seen_t;

static void check_step(seen_t *s, const char *cmd, const char *out,
                       const char *err) {
  if (g_str_has_prefix(cmd, "./src/khost run ")) {
    s->runs++;
    ck_assert_msg(strstr(err, "handled 4, duplicates skipped 1, "),
                  "run %d:\n%s", s->runs, err);
  } else if (g_str_has_prefix(cmd, "./src/khost state scan ")) {
    ck_assert_str_eq(out,
                     s->scans++ == 0 ? "coupon:1\t2 2\n" : "coupon:1\t3 1\n");
  } else if (g_str_has_prefix(cmd, "./src/khost state reset ")) {
    int execute = strstr(cmd, "--execute") != NULL;
    s->resets++;
    ck_assert_msg(strstr(out, execute ? "removed 1 keys of pipeline "
                                        "coupon-issuer\n"
                                      : "would remove 1 keys of pipeline "
                                        "coupon-issuer\n"),
                  "%s:\n%s", cmd, out);
  }
}

START_TEST(test_readme_state_rebuild) {
  mu_cluster_t c;
  seen_t seen = {0};
  char *kcat = g_find_program_in_path("kcat");
  if (!kcat) {
    fprintf(stderr, "test_readme_state_rebuild: SKIPPED: no kcat on PATH\n");
    return;
  }
  g_free(kcat);
  char *section = ru_section(HEADING);
  ru_assert_says(section, WHAT, "handled 4, duplicates skipped 1, ...");
  ru_assert_says(section, WHAT, "prints `coupon:1` with `2 2`");
  ru_assert_says(section, WHAT, "prints `coupon:1` with `3 1`");
  ru_assert_says(section, WHAT,
                 "`would remove 1 keys of pipeline coupon-issuer`");
  ru_assert_says(section, WHAT, "`removed 1 keys of pipeline coupon-issuer`");
  mu_start(&c, 1);
  mu_topic(&c, TOPIC, 3);
  gchar *dir = g_strdup_printf("%s/", c.dir);
  gchar **parts = g_strsplit(section, "/tmp/", -1);
  gchar *text = g_strjoinv(dir, parts);
  GPtrArray *cmds = ru_sh_commands(text);
  char *tree = make_tree(&c);
  GString *vars = g_string_new(NULL);
  for (guint i = 0; i < cmds->len; i++) {
    const char *cmd = cmds->pdata[i];
    char *out = NULL, *err = NULL;
    run(tree, vars->str, cmd, &out, &err);
    check_step(&seen, cmd, out, err);
    if (is_assignment(cmd))
      g_string_append_printf(vars, "%s\n", cmd);
    g_free(out);
    g_free(err);
  }
  ck_assert_int_eq(seen.runs, 2);
  ck_assert_int_eq(seen.scans, 2);
  ck_assert_int_eq(seen.resets, 2);
  /* The broker's part, as README wrote it. */
  gchar *calls_path = g_build_filename(tree, "tests", "kafka", "calls", NULL);
  char *calls = tu_read_file(calls_path);
  gchar *create = g_strdup_printf(
      "run-class org.apache.kafka.tools.TopicCommand --bootstrap-server %s "
      "--create --topic " TOPIC " --partitions 3\n",
      c.bootstraps);
  ck_assert_msg(calls && strstr(calls, create), "broker calls:\n%s", calls);
  ck_assert_msg(g_str_has_prefix(calls, "start\nbootstrap\n") &&
                    g_str_has_suffix(calls, "stop\n"),
                "broker calls:\n%s", calls);
  g_free(create);
  free(calls);
  g_free(calls_path);
  g_string_free(vars, TRUE);
  free(tree);
  g_ptr_array_free(cmds, TRUE);
  g_free(text);
  g_strfreev(parts);
  g_free(dir);
  g_free(section);
  mu_stop(&c);
}
END_TEST

Suite *rebuild_suite(void) {
  Suite *s = suite_create("rebuild");
  TCase *tc = tu_case(s, "readme_state_rebuild", 180, "scenario");
  tcase_add_test(tc, test_readme_state_rebuild);
  return s;
}
