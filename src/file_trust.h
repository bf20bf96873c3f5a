/*
 * Whether a file that decides which code khost runs (a plugin, the config
 * file) may be trusted, by the rule OpenSSH and sudo apply to their own
 * files: whoever can replace it can run code as khost.
 *
 * The file must be owned by root or by the user khost runs as (its
 * effective uid) and not be writable by group or others. Every directory
 * on the way to it must be owned by root or that user too, and must not be
 * writable by group or others unless it is owned by root and has the
 * sticky bit (as /tmp): there nobody may rename or delete what another
 * user owns. Both ways to the file count: each directory of the path as
 * given, as the kernel resolves it (so a symlinked directory is judged by
 * its target, and a symlink by the directory it lies in), and each
 * directory of its real path.
 *
 * Thread-safe (no shared state).
 */
#ifndef KHOST_FILE_TRUST_H
#define KHOST_FILE_TRUST_H

#include <stddef.h>

/* 0 when path passes; -1 with why (caller's buffer) naming the file or
 * directory at fault and the reason, e.g. "/x/y: directory is writable by
 * others (mode 0777) ...". A path that does not exist passes: the caller's
 * open reports it in its own words. */
int file_trust_check(const char *path, char *why, size_t whylen);

#endif
