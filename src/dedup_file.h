/*
 * The dedup database as a file, apart from what SQLite does with it:
 *
 * - created by khost with mode 0600 before SQLite opens it (SQLite would
 *   create it 0644, and the -wal and -shm files take the database file's
 *   mode), as the event IDs and topics in it are the users' data;
 * - checked for writability before SQLite opens it: the database, its
 *   -wal and -shm files and their directory, so that an error names the
 *   file that is in the way, and so that a start that cannot write leaves
 *   no -shm file behind (SQLite would create one with the read-only mode of
 *   the database, which then blocks the next start too);
 * - identified by device and inode, so that a database deleted or replaced
 *   under a running host is noticed: the host's open file descriptors
 *   would go on writing into a file no later start reads.
 *
 * Threads: the functions only look at the file system; any thread.
 */
#ifndef KHOST_DEDUP_FILE_H
#define KHOST_DEDUP_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* Mode of a database file khost creates (the umask may take bits off). */
#define DFILE_MODE 0600

typedef struct dfile_id {
  dev_t dev;
  ino_t ino;
} dfile_id_t;

/* Create path with DFILE_MODE when it does not exist. *fresh (may be
 * NULL) is set to 1 when it did not exist or was empty: a database with no
 * history. Errors name the path. */
int dfile_create(const char *path, int *fresh, char *err, size_t errlen);

/* 0 when this process may write path, the -wal and -shm files that exist
 * next to it, and their directory when one of them is still to be
 * created; -1 with an error naming the first file in the way, its mode
 * and owner. */
int dfile_check_writable(const char *path, char *err, size_t errlen);

/* The device and inode path names now. */
int dfile_identify(const char *path, dfile_id_t *id, char *err, size_t errlen);

/* 0 while path still names the file id identified; -1 with an error
 * naming the path when it was deleted, moved or replaced. */
int dfile_check_same(const char *path, const dfile_id_t *id, char *err,
                     size_t errlen);

#endif
