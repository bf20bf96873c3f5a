/* README.md's worked examples, read by the tests that run them word for
 * word (tests/check_rebuild.c, tests/check_kafka.c). */
#ifndef KHOST_READMEUTIL_H
#define KHOST_READMEUTIL_H

#include <glib.h>

/* README.md's section under heading (a whole line, with its "\n"), up to
 * the next "## " or "### " heading (g_free()). Fails the test when
 * README.md cannot be read or has no such heading. */
char *ru_section(const char *heading);

/* Fails the test unless section says words (a line break counts as a
 * space); what names the example in the message. */
void ru_assert_says(const char *section, const char *what, const char *words);

/* The commands of the ```sh blocks of section, in order: one per line, a
 * command with a here-document (<<EOF) with its lines up to EOF
 * (g_ptr_array_unref()). */
GPtrArray *ru_sh_commands(const char *section);

#endif
