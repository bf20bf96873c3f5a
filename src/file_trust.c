/*
 * Trust in the files that decide which code khost runs (file_trust.h).
 */
#include "file_trust.h"

#include <glib.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FT_LOOSE_BITS (S_IWGRP | S_IWOTH)

/* "name (uid N)", or "uid N" for a uid without a name. */
static void owner_text(uid_t uid, char *buf, size_t len) {
  struct passwd pw, *found = NULL;
  char scratch[1024];

  if (getpwuid_r(uid, &pw, scratch, sizeof(scratch), &found) == 0 && found)
    snprintf(buf, len, "%s (uid %u)", pw.pw_name, (unsigned)uid);
  else
    snprintf(buf, len, "uid %u", (unsigned)uid);
}

static const char *writers(mode_t mode) {
  if ((mode & FT_LOOSE_BITS) == FT_LOOSE_BITS)
    return "group and others";
  return (mode & S_IWGRP) ? "group" : "others";
}

/* Another user (not root) may replace or change what they own. */
static int check_owner(const char *path, const char *kind,
                       const struct stat *st, char *why, size_t whylen) {
  char owner[320], self[320];
  uid_t me = geteuid();

  if (st->st_uid == 0 || st->st_uid == me)
    return 0;
  owner_text(st->st_uid, owner, sizeof(owner));
  owner_text(me, self, sizeof(self));
  snprintf(why, whylen,
           "%s: %s is owned by %s, neither root nor the user khost runs as, "
           "%s",
           path, kind, owner, self);
  return -1;
}

static int check_file(const char *path, const struct stat *st, char *why,
                      size_t whylen) {
  if (check_owner(path, "file", st, why, whylen) != 0)
    return -1;
  if (!(st->st_mode & FT_LOOSE_BITS))
    return 0;
  snprintf(why, whylen,
           "%s: file is writable by %s (mode %04o); run chmod go-w on it", path,
           writers(st->st_mode), (unsigned)(st->st_mode & 07777));
  return -1;
}

/* In a directory others can write, they can put another file in place of
 * the one checked; the sticky bit of a root-owned directory forbids
 * renaming or deleting what another user owns. */
static int check_dir(const char *dir, char *why, size_t whylen) {
  struct stat st;

  if (stat(dir, &st) != 0)
    return 0; /* the caller's open fails on the way and says why */
  if (check_owner(dir, "directory", &st, why, whylen) != 0)
    return -1;
  if (!(st.st_mode & FT_LOOSE_BITS) ||
      (st.st_uid == 0 && (st.st_mode & S_ISVTX)))
    return 0;
  snprintf(why, whylen,
           "%s: directory is writable by %s (mode %04o) and is not a sticky "
           "directory owned by root, as /tmp is; run chmod go-w on it",
           dir, writers(st.st_mode), (unsigned)(st.st_mode & 07777));
  return -1;
}

/* Every directory of an absolute path, from the file's own up to "/". */
static int check_dirs(const char *abs, char *why, size_t whylen) {
  char *dir = g_path_get_dirname(abs);
  int rc = 0;

  for (;;) {
    char *up;

    if (check_dir(dir, why, whylen) != 0) {
      rc = -1;
      goto out;
    }
    up = g_path_get_dirname(dir);
    if (strcmp(up, dir) == 0) {
      g_free(up);
      goto out;
    }
    g_free(dir);
    dir = up;
  }
out:
  g_free(dir);
  return rc;
}

int file_trust_check(const char *path, char *why, size_t whylen) {
  struct stat st;
  char *given = NULL, *real = NULL;
  int rc = 0;

  if (stat(path, &st) != 0 || !(real = realpath(path, NULL)))
    goto out;
  /* The path as given, made absolute without resolving symlinks: the
   * directory a symlink lies in decides where it points. */
  given = g_canonicalize_filename(path, NULL);
  if (check_file(real, &st, why, whylen) != 0 ||
      check_dirs(given, why, whylen) != 0 ||
      (strcmp(given, real) != 0 && check_dirs(real, why, whylen) != 0))
    rc = -1;
out:
  g_free(given);
  free(real);
  return rc;
}
