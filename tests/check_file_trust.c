/*
 * Trust in plugin and config files (file_trust.h), through the loaders
 * that apply it: plugin_load() on real .so fixtures copied into
 * directories of chosen owners and modes, and cfg_load() on config files.
 * Every refusal must name the file or directory at fault and the reason;
 * the same file loads once the fault is gone.
 *
 * The owner cases need root (chown to nobody); as another user they are
 * skipped, the mode cases still run.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "host.h"
#include "log.h"
#include "plugin_loader.h"
#include "testutil.h"

#define NOBODY 65534

static char *tmpdir; /* mkdtemp: 0700, owned by the test's user */

static void setup(void) {
  tmpdir = tu_tempdir();
  ck_assert_ptr_nonnull(tmpdir);
  log_set_level(KHOST_LOG_ERR);
}

static void teardown(void) {
  tu_rm_rf(tmpdir);
  free(tmpdir);
}

/* ------------------------------------------------------------- helpers */

/* <parent>/<name> created with exactly mode (umask aside). */
static char *make_dir(const char *parent, const char *name, mode_t mode) {
  char *dir = g_build_filename(parent, name, NULL);
  ck_assert_msg(mkdir(dir, 0700) == 0, "mkdir %s: %s", dir, strerror(errno));
  ck_assert_int_eq(chmod(dir, mode), 0);
  return dir;
}

/* A copy of the "good" fixture as <dir>/<name>, mode 0755. */
static char *copy_plugin(const char *dir, const char *name) {
  char *good = tu_fixture("good"), *bytes;
  char *copy = g_build_filename(dir, name, NULL);
  gsize len;
  ck_assert(g_file_get_contents(good, &bytes, &len, NULL));
  ck_assert(g_file_set_contents(copy, bytes, (gssize)len, NULL));
  ck_assert_int_eq(chmod(copy, 0755), 0);
  g_free(bytes);
  free(good);
  return copy;
}

static char *make_link(const char *target, const char *dir, const char *name) {
  char *link = g_build_filename(dir, name, NULL);
  ck_assert_msg(symlink(target, link) == 0, "symlink %s: %s", link,
                strerror(errno));
  return link;
}

/* plugin_load(path) is refused, the message names path, then culprit and
 * reason: "PATH: refusing to load a plugin: CULPRIT: REASON". */
static void expect_refused(const char *path, const char *culprit,
                           const char *reason) {
  char err[2048] = "", *want;
  plugin_t *p = NULL;
  ck_assert_int_eq(plugin_load(&p, path, err, sizeof(err)), -1);
  ck_assert_ptr_null(p);
  want = g_strdup_printf("%s: refusing to load a plugin: %s: %s", path, culprit,
                         reason);
  ck_assert_msg(strstr(err, want) == err, "expected \"%s\"\ngot      \"%s\"",
                want, err);
  g_free(want);
}

static void expect_loads(const char *path) {
  char err[2048] = "";
  plugin_t *p = NULL;
  ck_assert_msg(plugin_load(&p, path, err, sizeof(err)) == 0, "%s", err);
  plugin_unload(p);
}

/* The reason given for a file or directory that nobody owns. */
static char *owned_by_nobody(const char *kind) {
  struct passwd *pw = getpwuid(NOBODY);
  char *who = pw ? g_strdup_printf("%s (uid %d)", pw->pw_name, NOBODY)
                 : g_strdup_printf("uid %d", NOBODY);
  char *why = g_strdup_printf(
      "%s is owned by %s, neither root nor the user khost runs as", kind, who);
  g_free(who);
  return why;
}

static int can_chown(void) {
  if (geteuid() == 0)
    return 1;
  fprintf(stderr, "not root: the owner cases are skipped\n");
  return 0;
}

/* ------------------------------------------------------------- plugins */

/* The build tree's own plugins, and a copy in a private temporary
 * directory under /tmp (root-owned, sticky), load. */
START_TEST(test_usual_places_load) {
  char *fixture = tu_fixture("good"), *copy = copy_plugin(tmpdir, "good.so");
  struct stat st;
  ck_assert_int_eq(stat("/tmp", &st), 0);
  ck_assert_uint_eq(st.st_mode & 01777, 01777);
  expect_loads(fixture);
  expect_loads(copy);
  free(copy);
  free(fixture);
}
END_TEST

/* The file itself: group or others may write it (existing behaviour),
 * and another user owns it. */
START_TEST(test_plugin_file) {
  char *so = copy_plugin(tmpdir, "p.so");
  ck_assert_int_eq(chmod(so, 0666), 0);
  expect_refused(so, so, "file is writable by group and others (mode 0666)");
  ck_assert_int_eq(chmod(so, 0775), 0);
  expect_refused(so, so, "file is writable by group (mode 0775)");
  ck_assert_int_eq(chmod(so, 0755), 0);
  expect_loads(so);
  if (can_chown()) {
    char *why = owned_by_nobody("file");
    ck_assert_int_eq(chown(so, NOBODY, NOBODY), 0);
    expect_refused(so, so, why);
    g_free(why);
    ck_assert_int_eq(chown(so, 0, 0), 0);
    expect_loads(so);
  }
  free(so);
}
END_TEST

/* A directory on the way that others (or the group) can write, without
 * being a root-owned sticky directory; also higher up than the file's
 * own. */
START_TEST(test_loose_directory) {
  char *dir = make_dir(tmpdir, "plugins", 0777);
  char *sub = make_dir(dir, "orders", 0755);
  char *so = copy_plugin(sub, "p.so");
  expect_refused(so, dir,
                 "directory is writable by group and others (mode 0777) and "
                 "is not a sticky directory owned by root, as /tmp is");
  ck_assert_int_eq(chmod(dir, 0757), 0);
  expect_refused(so, dir, "directory is writable by others (mode 0757)");
  ck_assert_int_eq(chmod(dir, 0775), 0);
  expect_refused(so, dir, "directory is writable by group (mode 0775)");
  ck_assert_int_eq(chmod(dir, 0755), 0);
  ck_assert_int_eq(chmod(sub, 0770), 0);
  expect_refused(so, sub, "directory is writable by group (mode 0770)");
  ck_assert_int_eq(chmod(sub, 0755), 0);
  expect_loads(so);
  free(so);
  free(sub);
  free(dir);
}
END_TEST

/* Sticky and world-writable, as /tmp: trusted when root owns it, not when
 * another user does (that user may replace what lies in it). */
START_TEST(test_sticky_directory) {
  char *dir = make_dir(tmpdir, "shared", 01777);
  char *so = copy_plugin(dir, "p.so");
  if (geteuid() == 0)
    expect_loads(so);
  else
    expect_refused(so, dir, "directory is writable by group and others");
  if (can_chown()) {
    char *why = owned_by_nobody("directory");
    ck_assert_int_eq(chown(dir, NOBODY, NOBODY), 0);
    ck_assert_int_eq(chmod(dir, 01777), 0);
    expect_refused(so, dir, why);
    /* Another user's directory is theirs to change, loose or not. */
    ck_assert_int_eq(chmod(dir, 0755), 0);
    expect_refused(so, dir, why);
    g_free(why);
    ck_assert_int_eq(chown(dir, 0, 0), 0);
    expect_loads(so);
  }
  free(so);
  free(dir);
}
END_TEST

/* A symlink is judged by where it leads and by where it lies: its target
 * in a loose directory, its target owned by another user, the symlink in
 * a loose directory, a symlinked directory leading to a loose one. */
START_TEST(test_symlinks) {
  char *good = make_dir(tmpdir, "good", 0755);
  char *loose = make_dir(tmpdir, "loose", 0777);
  char *target = copy_plugin(loose, "p.so");
  char *link = make_link(target, good, "to-loose-dir.so");
  expect_refused(link, loose, "directory is writable by group and others");

  char *tight = copy_plugin(good, "p.so");
  char *in_loose = make_link(tight, loose, "from-loose-dir.so");
  expect_refused(in_loose, loose, "directory is writable by group and others");

  char *dirlink = make_link(loose, good, "dir");
  char *via_dir = g_build_filename(dirlink, "p.so", NULL);
  expect_refused(via_dir, dirlink, "directory is writable by group and others");

  ck_assert_int_eq(chmod(loose, 0755), 0);
  expect_loads(link);
  expect_loads(in_loose);
  expect_loads(via_dir);
  if (can_chown()) {
    ck_assert_int_eq(chown(target, NOBODY, NOBODY), 0);
    char *why = owned_by_nobody("file");
    expect_refused(link, target, why);
    g_free(why);
    ck_assert_int_eq(chown(target, 0, 0), 0);
    expect_loads(link);
  }
  g_free(via_dir);
  free(dirlink);
  free(in_loose);
  free(tight);
  free(link);
  free(target);
  free(loose);
  free(good);
}
END_TEST

/* -------------------------------------------------------------- configs */

static char *write_config(const char *dir, const char *plugin_dir,
                          const char *plugin) {
  char *text =
      g_strdup_printf("plugin_dir = \"%s\";\n"
                      "mock = { brokers = 1; };\n"
                      "dedup = { path = \"%s/dedup.db\"; };\n"
                      "pipelines = ( { name = \"orders\"; group_id = \"g\";\n"
                      "  topics = [ \"t\" ]; plugin = \"%s\"; } );\n",
                      plugin_dir, tmpdir, plugin);
  char *path = tu_write_file(dir, "khost.cfg", text);
  ck_assert_int_eq(chmod(path, 0644), 0);
  g_free(text);
  return path;
}

/* cfg_load(path) is refused: "PATH: refusing to read the config: CULPRIT:
 * REASON". */
static void expect_config_refused(const char *path, const char *culprit,
                                  const char *reason) {
  char err[2048] = "", *want;
  cfg_t cfg;
  ck_assert_int_eq(cfg_load(&cfg, path, err, sizeof(err)), -1);
  cfg_free(&cfg);
  want = g_strdup_printf("%s: refusing to read the config: %s: %s", path,
                         culprit, reason);
  ck_assert_msg(strstr(err, want) == err, "expected \"%s\"\ngot      \"%s\"",
                want, err);
  g_free(want);
}

static void expect_config_loads(const char *path) {
  char err[2048] = "";
  cfg_t cfg;
  ck_assert_msg(cfg_load(&cfg, path, err, sizeof(err)) == 0, "%s", err);
  cfg_free(&cfg);
}

/* The config decides which code runs: refused as a plugin would be. */
START_TEST(test_config_file) {
  char *dir = make_dir(tmpdir, "etc", 0755);
  char *cfg = write_config(dir, tmpdir, "p");
  expect_config_loads(cfg);
  ck_assert_int_eq(chmod(cfg, 0664), 0);
  expect_config_refused(cfg, cfg,
                        "file is writable by group (mode 0664); "
                        "run chmod go-w on it");
  ck_assert_int_eq(chmod(cfg, 0644), 0);
  ck_assert_int_eq(chmod(dir, 0777), 0);
  expect_config_refused(cfg, dir, "directory is writable by group and others");
  ck_assert_int_eq(chmod(dir, 0755), 0);
  if (can_chown()) {
    ck_assert_int_eq(chown(cfg, NOBODY, NOBODY), 0);
    char *why = owned_by_nobody("file");
    expect_config_refused(cfg, cfg, why);
    g_free(why);
    ck_assert_int_eq(chown(cfg, 0, 0), 0);
  }
  expect_config_loads(cfg);
  free(cfg);
  free(dir);
}
END_TEST

/* A file pulled in with @include counts as the config itself. */
START_TEST(test_config_include) {
  char *dir = make_dir(tmpdir, "etc", 0755);
  char *inc = tu_write_file(dir, "kafka.cfg", "mock = { brokers = 1; };\n");
  char *text = g_strdup_printf("@include \"kafka.cfg\"\n"
                               "dedup = { path = \"%s/dedup.db\"; };\n"
                               "pipelines = ( { name = \"orders\";\n"
                               "  group_id = \"g\"; topics = [ \"t\" ];\n"
                               "  plugin = \"p\"; } );\n",
                               tmpdir);
  char *cfg = tu_write_file(dir, "khost.cfg", text), err[2048] = "", *want;
  cfg_t c;
  ck_assert_int_eq(chmod(inc, 0644), 0);
  ck_assert_int_eq(chmod(cfg, 0644), 0);
  expect_config_loads(cfg);
  ck_assert_int_eq(chmod(inc, 0666), 0);
  ck_assert_int_eq(cfg_load(&c, cfg, err, sizeof(err)), -1);
  cfg_free(&c);
  want = g_strdup_printf("%s: refusing to read the config (included by %s): "
                         "%s: file is writable by group and others (mode "
                         "0666); run chmod go-w on it",
                         inc, cfg, inc);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(chmod(inc, 0644), 0);
  expect_config_loads(cfg);
  g_free(want);
  free(cfg);
  g_free(text);
  free(inc);
  free(dir);
}
END_TEST

/* A plugin found by its name in a group-writable plugin_dir, as `khost
 * check` loads it: the config's file, line and key, then the reason. */
START_TEST(test_plugin_by_name_in_loose_plugin_dir) {
  char *plugins = make_dir(tmpdir, "plugins", 0775);
  char *so = copy_plugin(plugins, "orders.so");
  char *path = write_config(tmpdir, plugins, "orders");
  char err[4096] = "", *want;
  cfg_t cfg;
  ck_assert_msg(cfg_load(&cfg, path, err, sizeof(err)) == 0, "%s", err);
  ck_assert_str_eq(cfg.pipelines[0].plugin_path, so);
  ck_assert_int_eq(host_check(&cfg, err, sizeof(err)), HOST_EXIT_CONFIG);
  want = g_strdup_printf("%s:5: pipelines[0].plugin: %s: refusing to load a "
                         "plugin: %s: directory is writable by group (mode "
                         "0775)",
                         path, so, plugins);
  ck_assert_msg(strstr(err, want) == err, "expected \"%s\"\ngot      \"%s\"",
                want, err);
  ck_assert_int_eq(chmod(plugins, 0755), 0);
  ck_assert_msg(host_check(&cfg, err, sizeof(err)) == 0, "%s", err);
  cfg_free(&cfg);
  g_free(want);
  free(path);
  free(so);
  free(plugins);
}
END_TEST

Suite *file_trust_suite(void) {
  Suite *s = suite_create("file_trust");
  TCase *tc = tcase_create("plugins");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_usual_places_load);
  tcase_add_test(tc, test_plugin_file);
  tcase_add_test(tc, test_loose_directory);
  tcase_add_test(tc, test_sticky_directory);
  tcase_add_test(tc, test_symlinks);
  suite_add_tcase(s, tc);

  tc = tcase_create("configs");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_config_file);
  tcase_add_test(tc, test_config_include);
  tcase_add_test(tc, test_plugin_by_name_in_loose_plugin_dir);
  suite_add_tcase(s, tc);
  return s;
}
