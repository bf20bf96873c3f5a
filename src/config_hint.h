/*
 * Hints for libconfig syntax errors. libconfig says only "syntax error" and
 * the line where its parser gave up, which is often the line after the
 * mistake (a missing ';' or ',') or the end of the file (a '{' never
 * closed). cfg_syntax_hint() looks at the text around that line for the
 * usual mistakes and says which line holds the mistake and what to write.
 */
#ifndef KHOST_CONFIG_HINT_H
#define KHOST_CONFIG_HINT_H

#include <glib.h>

/* For a syntax error libconfig reported at line of file: 0 and nothing
 * appended when no hint applies; else the line the mistake is on (may be
 * before line), with the hint (no newline) appended to out. */
int cfg_syntax_hint(const char *file, int line, GString *out);

#endif
