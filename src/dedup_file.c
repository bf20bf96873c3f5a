/*
 * The dedup database as a file. See dedup_file.h.
 *
 * Existing files are only looked at (stat, faccessat), never opened:
 * closing a descriptor of a file drops every POSIX lock this process holds
 * on it, SQLite's included, and another store of this process may have
 * the same database open.
 */
#include "dedup_file.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What it means, and what a user can do, when the database went away
 * under a running host. */
#define DFILE_GONE_HINT                                                        \
  "committing nothing more (a start on a new database would handle "           \
  "records published again a second time); restore the file before the "       \
  "next start"

int dfile_create(const char *path, int *fresh, char *err, size_t errlen) {
  struct stat sb;
  int is_fresh = 1, rc = -1;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, DFILE_MODE);
  if (fd >= 0) {
    close(fd); /* just created: nobody holds a lock on it */
  } else if (errno != EEXIST) {
    snprintf(err, errlen, "%s: cannot create the dedup database: %s", path,
             strerror(errno));
    goto out;
  } else if (stat(path, &sb) != 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    goto out;
  } else {
    is_fresh = sb.st_size == 0;
  }
  rc = 0;
out:
  if (fresh)
    *fresh = rc == 0 && is_fresh;
  return rc;
}

/* A file khost needs to write, and what a user reads about it. */
typedef struct kind {
  const char *suffix; /* appended to the database path */
  const char *what;   /* what the file is */
  const char *hint;   /* what to do when it is in the way ("" or "; ...") */
} kind_t;

static const kind_t kinds[] = {
    {"", "the dedup database", ""},
    {"-wal", "the write-ahead log of the dedup database",
     "; make it writable, or remove it while nothing uses the database"},
    {"-shm", "SQLite's shared-memory file of the dedup database",
     "; make it writable, or remove it while nothing uses the database"},
};

static const kind_t dir_kind = {
    "", "the directory of the dedup database",
    "; SQLite creates the database's -wal and -shm files there"};

/* The error for file, which this process may not write (errno set by the
 * failed check). */
static int not_writable(const char *file, const kind_t *k, char *err,
                        size_t errlen) {
  int e = errno;
  struct stat sb;
  if (e == EACCES && stat(file, &sb) == 0)
    snprintf(err, errlen,
             "%s: %s is not writable: this process (uid %u) may not write it "
             "(mode %04o, owner uid %u)%s",
             file, k->what, (unsigned)geteuid(), (unsigned)(sb.st_mode & 07777),
             (unsigned)sb.st_uid, k->hint);
  else
    snprintf(err, errlen, "%s: %s is not writable: %s%s", file, k->what,
             strerror(e), k->hint);
  return -1;
}

/* 1 when the file of kind k exists and this process may write it, 0 when
 * it does not exist, -1 with err when it may not be written. */
static int file_writable(const char *path, const kind_t *k, char *err,
                         size_t errlen) {
  char *file = g_strconcat(path, k->suffix, NULL);
  int rc = 1;
  if (faccessat(AT_FDCWD, file, W_OK, AT_EACCESS) != 0)
    rc = errno == ENOENT ? 0 : not_writable(file, k, err, errlen);
  g_free(file);
  return rc;
}

/* The directory of path, which SQLite creates the -wal and -shm files in:
 * writable and searchable. */
static int dir_writable(const char *path, char *err, size_t errlen) {
  char *dir = g_path_get_dirname(path);
  int rc = 0;
  if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0)
    rc = not_writable(dir, &dir_kind, err, errlen);
  g_free(dir);
  return rc;
}

int dfile_check_writable(const char *path, char *err, size_t errlen) {
  int missing = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++) {
    int w = file_writable(path, &kinds[i], err, errlen);
    if (w < 0)
      return -1;
    missing |= w == 0;
  }
  /* SQLite creates what is missing in the directory. */
  return missing ? dir_writable(path, err, errlen) : 0;
}

int dfile_identify(const char *path, dfile_id_t *id, char *err, size_t errlen) {
  struct stat sb;
  if (stat(path, &sb) != 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  id->dev = sb.st_dev;
  id->ino = sb.st_ino;
  return 0;
}

int dfile_check_same(const char *path, const dfile_id_t *id, char *err,
                     size_t errlen) {
  struct stat sb;
  if (stat(path, &sb) != 0) {
    if (errno == ENOENT)
      snprintf(err, errlen,
               "%s: the dedup database was deleted or moved away while khost "
               "ran: " DFILE_GONE_HINT,
               path);
    else
      snprintf(err, errlen,
               "%s: cannot tell whether this is still the dedup database "
               "khost opened (%s): " DFILE_GONE_HINT,
               path, strerror(errno));
    return -1;
  }
  if (sb.st_dev != id->dev || sb.st_ino != id->ino) {
    snprintf(err, errlen,
             "%s: the dedup database was replaced by another file while "
             "khost ran: " DFILE_GONE_HINT,
             path);
    return -1;
  }
  return 0;
}
