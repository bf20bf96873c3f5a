/*
 * The dedup database as a file (src/dedup_file.c, through dedup_open()):
 * the modes of the files khost creates, a database without history, a
 * database deleted or replaced under an open store, and files this
 * process may not write, named before SQLite touches them.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dedup.h"
#include "dedup_admin.h"
#include "testutil.h"

#define HOUR_MS (INT64_C(3600) * 1000)
/* The user a child drops to when the test runs as root, whom file modes
 * do not stop (nobody on Debian). */
#define NOBODY 65534

typedef struct fx {
  char *dir;
  char *path;
} fx_t;

static void fx_init(fx_t *f) {
  f->dir = tu_tempdir();
  ck_assert_ptr_nonnull(f->dir);
  ck_assert_int_ge(asprintf(&f->path, "%s/dedup.db", f->dir), 0);
}

static void fx_done(fx_t *f) {
  tu_rm_rf(f->dir);
  free(f->path);
  free(f->dir);
}

/* f's database with suffix ("", "-wal", "-shm"); free() it. */
static char *fx_file(const fx_t *f, const char *suffix) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s%s", f->path, suffix), 0);
  return p;
}

static dedup_store_t *store_open(const char *path) {
  dedup_opts_t o = {.path = path, .retention_ms = HOUR_MS};
  dedup_store_t *s = NULL;
  char err[512] = "";
  ck_assert_msg(dedup_open(&s, &o, err, sizeof err) == 0, "dedup_open: %s",
                err);
  return s;
}

static uint32_t scope_of(dedup_store_t *s, const char *name) {
  uint32_t id = 0;
  char err[512] = "";
  ck_assert_msg(dedup_scope(s, name, &id, err, sizeof err) == 0, "%s", err);
  return id;
}

static dedup_writer_t *writer_open(dedup_store_t *s) {
  dedup_writer_t *w = NULL;
  char err[512] = "";
  ck_assert_msg(dedup_writer_open(s, &w, err, sizeof err) == 0, "%s", err);
  return w;
}

static void add_mark(dedup_writer_t *w, uint32_t scope, const char *id) {
  dedup_mark_t m = {.scope = scope,
                    .event_id = id,
                    .event_id_len = strlen(id),
                    .topic = "order-completed",
                    .partition = 0,
                    .offset = 7,
                    .handled_at_ms = dedup_now_ms()};
  ck_assert_int_eq(dedup_writer_add(w, &m), 0);
}

/* Commit what w holds; returns dedup_writer_commit()'s result with
 * *transient and err filled. */
static int commit(dedup_writer_t *w, int *transient, char *err, size_t len) {
  err[0] = '\0';
  *transient = -1;
  return dedup_writer_commit(w, transient, err, len);
}

static unsigned mode_of(const char *path) {
  struct stat sb;
  ck_assert_msg(stat(path, &sb) == 0, "%s: %s", path, strerror(errno));
  return (unsigned)(sb.st_mode & 07777);
}

/* ------------------------------------------------------------------ modes */

/* With no umask at all, the database and the -wal and -shm files SQLite
 * makes next to it are 0600: SQLite alone creates them 0644. */
START_TEST(test_files_created_0600) {
  fx_t f;
  int transient;
  char err[512];
  fx_init(&f);
  mode_t old = umask(0);
  dedup_store_t *s = store_open(f.path);
  dedup_writer_t *w = writer_open(s);
  add_mark(w, scope_of(s, "orders"), "ev-1");
  ck_assert_msg(commit(w, &transient, err, sizeof err) == 0, "%s", err);
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    char *file = fx_file(&f, suffixes[i]);
    ck_assert_msg(mode_of(file) == 0600, "%s: mode %04o", file, mode_of(file));
    free(file);
  }
  dedup_writer_close(w);
  dedup_close(s);
  umask(old);
  fx_done(&f);
}
END_TEST

/* `khost replay` and `khost dedup` create the database the same way. */
START_TEST(test_admin_creates_0600) {
  fx_t f;
  dadm_t *a = NULL;
  char err[512] = "";
  fx_init(&f);
  mode_t old = umask(0);
  ck_assert_msg(dadm_open(&a, f.path, 1, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(mode_of(f.path), 0600);
  dadm_close(a);
  umask(old);
  fx_done(&f);
}
END_TEST

/* A database that exists keeps the mode its owner gave it. */
START_TEST(test_existing_file_keeps_its_mode) {
  fx_t f;
  fx_init(&f);
  dedup_close(store_open(f.path));
  ck_assert_int_eq(chmod(f.path, 0640), 0);
  dedup_close(store_open(f.path));
  ck_assert_uint_eq(mode_of(f.path), 0640);
  fx_done(&f);
}
END_TEST

/* ---------------------------------------------------------------- history */

/* A database created at open has no history: the check is due once per
 * scope. Reopened, it has one; an empty file has none. */
START_TEST(test_history_check_due_once_when_created) {
  fx_t f;
  fx_init(&f);
  dedup_store_t *s = store_open(f.path);
  ck_assert_int_eq(dedup_history_check_due(s, 1), 1);
  ck_assert_int_eq(dedup_history_check_due(s, 1), 0);
  ck_assert_int_eq(dedup_history_check_due(s, 2), 1);
  dedup_close(s);
  s = store_open(f.path);
  ck_assert_int_eq(dedup_history_check_due(s, 1), 0);
  dedup_close(s);
  ck_assert_int_eq(unlink(f.path), 0);
  int fd = open(f.path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  ck_assert_int_ge(fd, 0);
  close(fd);
  s = store_open(f.path);
  ck_assert_int_eq(dedup_history_check_due(s, 1), 1);
  dedup_close(s);
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------- deleted or replaced */

/* After the database file is deleted, or another file is put in its
 * place, under an open store, no commit succeeds: a permanent failure
 * naming the path; the marks stay buffered and their IDs unseen. */
static void assert_commits_refused(fx_t *f, void (*change)(fx_t *),
                                   const char *what) {
  int transient;
  char err[512];
  dedup_store_t *s = store_open(f->path);
  uint32_t scope = scope_of(s, "orders");
  dedup_writer_t *w = writer_open(s);
  add_mark(w, scope, "ev-1");
  ck_assert_msg(commit(w, &transient, err, sizeof err) == 0, "%s", err);
  change(f);
  ck_assert_int_eq(dedup_claim(s, scope, "ev-2", 4), DEDUP_NEW);
  add_mark(w, scope, "ev-2");
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(commit(w, &transient, err, sizeof err), -1);
    ck_assert_int_eq(transient, 0);
    ck_assert_msg(strncmp(err, f->path, strlen(f->path)) == 0 &&
                      strstr(err, what) && strstr(err, "committing nothing"),
                  "err: %s", err);
    ck_assert_uint_eq(dedup_writer_pending(w), 1);
  }
  dedup_release(s, scope, "ev-2", 4);
  ck_assert_int_eq(dedup_claim(s, scope, "ev-2", 4), DEDUP_NEW);
  dedup_release(s, scope, "ev-2", 4);
  ck_assert_int_eq(dedup_claim(s, scope, "ev-1", 4), DEDUP_SEEN);
  dedup_writer_close(w);
  dedup_close(s);
}

static void delete_all(fx_t *f) {
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    char *file = fx_file(f, suffixes[i]);
    unlink(file);
    free(file);
  }
}

static void replace(fx_t *f) {
  char *other = NULL;
  ck_assert_int_ge(asprintf(&other, "%s/other.db", f->dir), 0);
  dedup_close(store_open(other));
  ck_assert_int_eq(rename(other, f->path), 0);
  free(other);
}

START_TEST(test_deleted_database_refuses_commits) {
  fx_t f;
  fx_init(&f);
  assert_commits_refused(&f, delete_all, "deleted or moved away");
  fx_done(&f);
}
END_TEST

START_TEST(test_replaced_database_refuses_commits) {
  fx_t f;
  fx_init(&f);
  assert_commits_refused(&f, replace, "replaced by another file");
  fx_done(&f);
}
END_TEST

/* ------------------------------------------------------------ not writable */

/* dedup_open() in a child that cannot write what the test made read-only
 * (nobody when the test runs as root); its error in err. */
static int open_as_other(const fx_t *f, char *err, size_t len) {
  int fds[2], status;
  ck_assert_int_eq(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dedup_opts_t o = {.path = f->path, .retention_ms = HOUR_MS};
    dedup_store_t *s = NULL;
    char why[512] = "";
    close(fds[0]);
    if (geteuid() == 0 &&
        (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0))
      _exit(3);
    int rc = dedup_open(&s, &o, why, sizeof why);
    dedup_close(s);
    if (write(fds[1], why, strlen(why)) < 0)
      _exit(4);
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[1]);
  ssize_t n = read(fds[0], err, len - 1);
  err[n > 0 ? n : 0] = '\0';
  close(fds[0]);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) <= 1,
                "child status %d", status);
  return WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void assert_named(const char *err, const char *file, const char *mode) {
  ck_assert_msg(strncmp(err, file, strlen(file)) == 0 &&
                    err[strlen(file)] == ':' && strstr(err, "not writable") &&
                    strstr(err, mode),
                "want %s named with %s, got: %s", file, mode, err);
}

/* The file in the way is named, with its mode: the database, then a -shm
 * or -wal file left read-only. A refused start creates no -shm (SQLite
 * would, with the database's read-only mode, blocking the next start). */
START_TEST(test_unwritable_file_is_named) {
  fx_t f;
  char err[1024];
  fx_init(&f);
  char *wal = fx_file(&f, "-wal"), *shm = fx_file(&f, "-shm");
  ck_assert_int_eq(chmod(f.dir, 0777), 0);
  dedup_close(store_open(f.path));
  ck_assert_int_eq(chmod(f.path, 0444), 0);
  ck_assert_int_eq(open_as_other(&f, err, sizeof err), -1);
  assert_named(err, f.path, "mode 0444");
  ck_assert_msg(access(shm, F_OK) != 0 && access(wal, F_OK) != 0,
                "a refused start left a -shm or -wal file");
  ck_assert_int_eq(chmod(f.path, 0666), 0);
  const char *const left[] = {shm, wal};
  for (size_t i = 0; i < 2; i++) {
    int fd = open(left[i], O_WRONLY | O_CREAT | O_EXCL, 0444);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(open_as_other(&f, err, sizeof err), -1);
    assert_named(err, left[i], "mode 0444");
    ck_assert_int_eq(unlink(left[i]), 0);
  }
  ck_assert_msg(open_as_other(&f, err, sizeof err) == 0, "%s", err);
  free(wal);
  free(shm);
  fx_done(&f);
}
END_TEST

Suite *dedup_file_suite(void) {
  Suite *s = suite_create("dedup_file");
  TCase *tc = tcase_create("modes");
  tcase_add_test(tc, test_files_created_0600);
  tcase_add_test(tc, test_admin_creates_0600);
  tcase_add_test(tc, test_existing_file_keeps_its_mode);
  suite_add_tcase(s, tc);

  tc = tcase_create("history");
  tcase_add_test(tc, test_history_check_due_once_when_created);
  suite_add_tcase(s, tc);

  tc = tcase_create("moved");
  tcase_add_test(tc, test_deleted_database_refuses_commits);
  tcase_add_test(tc, test_replaced_database_refuses_commits);
  suite_add_tcase(s, tc);

  tc = tcase_create("writable");
  tcase_add_test(tc, test_unwritable_file_is_named);
  suite_add_tcase(s, tc);
  return s;
}
