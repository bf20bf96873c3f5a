/*
 * Syntax error hints (config_hint.h): a small scan of the file that knows
 * libconfig's strings and comments, enough to tell where lines end, which
 * brackets are open and which strings are not closed.
 */
#include "config_hint.h"

#include <string.h>

typedef struct line_info {
  char first;   /* first character outside comments, '\0' when none */
  char last;    /* last character outside comments and strings */
  int open_str; /* the line ends inside a string */
  int in_list;  /* the innermost bracket open at its start is ( or [ */
} line_info_t;

typedef struct scan {
  GArray *lines; /* line_info_t, index 0 is line 1 */
  char open[64]; /* brackets open at the end of the file */
  int open_line[64];
  int depth;
} scan_t;

static void push(scan_t *s, char c, int line) {
  if (s->depth < (int)sizeof(s->open)) {
    s->open[s->depth] = c;
    s->open_line[s->depth] = line;
  }
  s->depth++;
}

static void note(line_info_t *li, char c) {
  if (!li->first)
    li->first = c;
  li->last = c;
}

/* One pass over text: per line, its first and last significant character,
 * and whether it ends inside a string; the brackets left open. */
static void scan_text(const char *t, scan_t *s) {
  line_info_t li = {0};
  int line = 1, in_str = 0;
  for (const char *c = t; *c; c++) {
    if (*c == '\n') {
      li.open_str = in_str;
      g_array_append_val(s->lines, li);
      li = (line_info_t){.in_list = s->depth > 0 && s->depth <= 64 &&
                                    s->open[s->depth - 1] != '{'};
      line++; /* a libconfig string may go on over the newline */
    } else if (in_str) {
      if (*c == '\\' && c[1] && c[1] != '\n')
        c++;
      else if (*c == '"')
        in_str = 0, li.last = '"';
    } else if (*c == '#' || (*c == '/' && c[1] == '/')) {
      while (c[1] && c[1] != '\n')
        c++;
    } else if (*c == '/' && c[1] == '*') {
      for (c += 2; *c && !(*c == '*' && c[1] == '/'); c++)
        if (*c == '\n')
          line++, g_array_append_val(s->lines, li), li = (line_info_t){0};
      if (!*c)
        break;
      c++;
    } else if (*c == '"') {
      in_str = 1;
      note(&li, '"');
    } else if (!g_ascii_isspace(*c)) {
      note(&li, *c);
      if (strchr("{([", *c))
        push(s, *c, line);
      else if (strchr("})]", *c) && s->depth > 0)
        s->depth--;
    }
  }
  li.open_str = in_str;
  g_array_append_val(s->lines, li);
}

static const line_info_t *info(const scan_t *s, int line) {
  if (line < 1 || line > (int)s->lines->len)
    return NULL;
  return &g_array_index(s->lines, line_info_t, line - 1);
}

/* The nearest line before line with something outside comments. */
static int prev_line(const scan_t *s, int line) {
  for (int l = line - 1; l >= 1; l--)
    if (info(s, l)->first)
      return l;
  return 0;
}

static int ends_value(char c) {
  return c && (c == '"' || c == ']' || c == ')' || c == '}' ||
               g_ascii_isalnum(c) || c == '.' || c == '_' || c == '-');
}

/* A value libconfig reads without quotes: a boolean, an integer (decimal
 * or hex, L or LL) or a floating-point number. */
static int plain_scalar(const char *word) {
  return g_regex_match_simple(
      "^(?:true|false|[-+]?(?:0[xX][0-9A-Fa-f]+|[0-9]+)(?:L|LL)?|[-+]?(?:[0-9]+"
      "\\.?[0-9]*|\\.[0-9]+)(?:[eE][-+]?[0-9]+)?)$",
      word, G_REGEX_CASELESS, 0);
}

/* "name.with.dots = " or "name = text without quotes" (a word, a
 * host:port, a path) on the line itself. */
static int hint_on_line(const char *text, GString *out) {
  GMatchInfo *m = NULL;
  int found = 0;
  GRegex *dotted = g_regex_new(
      "(?:^|[{;,(])\\s*([A-Za-z][-\\w]*(?:\\.[-\\w]+)+)\\s*[=:]", 0, 0, NULL);
  GRegex *bare = g_regex_new("(?:^|[{;,(])\\s*([A-Za-z][-\\w]*)\\s*[=:]\\s*"
                             "((?:[^\\s\"\\[\\](){};,#/]|/(?![/*]))\\S*?)"
                             "\\s*(?=[;,})]|$)",
                             0, 0, NULL);
  if (g_regex_match(dotted, text, 0, &m)) {
    char *name = g_match_info_fetch(m, 1);
    char *fixed = g_strdelimit(g_strdup(name), ".", '_');
    g_string_append_printf(out,
                           "libconfig names cannot contain dots: write %s "
                           "(khost turns each '_' of a librdkafka property "
                           "back into '.')",
                           fixed);
    g_free(name);
    g_free(fixed);
    found = 1;
  }
  g_match_info_free(m);
  m = NULL;
  for (g_regex_match(bare, text, 0, &m); !found && g_match_info_matches(m);
       g_match_info_next(m, NULL)) {
    char *name = g_match_info_fetch(m, 1), *word = g_match_info_fetch(m, 2);
    if (!plain_scalar(word)) {
      g_string_append_printf(out, "text needs double quotes: %s = \"%s\";",
                             name, word);
      found = 1;
    }
    g_free(name);
    g_free(word);
  }
  g_match_info_free(m);
  g_regex_unref(dotted);
  g_regex_unref(bare);
  return found;
}

/* Mistakes libconfig notices only on a later line. */
static int hint_before(const scan_t *s, int line, GString *out) {
  for (int l = 1; l <= line && info(s, l); l++)
    if (info(s, l)->open_str) {
      g_string_append(out, "the string opened on this line goes on past its "
                           "end: a closing '\"' is probably missing");
      return l;
    }
  int p = prev_line(s, line);
  const line_info_t *cur = info(s, line), *prev = info(s, p);
  if (!cur || !prev || !cur->first || !ends_value(prev->last))
    return 0;
  if (cur->in_list &&
      (prev->last == '}' || prev->last == ')' || prev->last == ']' ||
       prev->last == '"' || g_ascii_isalnum(prev->last))) {
    g_string_append_printf(out,
                           "missing ',' at the end of this line: the "
                           "elements of a list are separated by commas "
                           "(libconfig noticed on line %d)",
                           line);
    return p;
  }
  /* A setting needs no ';' in libconfig: nothing to say. */
  return 0;
}

/* A bracket still open where the file ends. */
static int hint_unclosed(const scan_t *s, int line, GString *out) {
  if (s->depth <= 0 || s->depth > (int)sizeof(s->open) ||
      line < (int)s->lines->len - 1)
    return 0;
  char c = s->open[s->depth - 1];
  g_string_append_printf(out,
                         "the '%c' opened on this line is never closed "
                         "with '%c'",
                         c,
                         c == '{'   ? '}'
                         : c == '(' ? ')'
                                    : ']');
  return s->open_line[s->depth - 1];
}

int cfg_syntax_hint(const char *file, int line, GString *out) {
  char *text = NULL;
  scan_t s = {.lines = g_array_new(FALSE, TRUE, sizeof(line_info_t))};
  int at = 0;
  if (!g_file_get_contents(file, &text, NULL, NULL))
    goto out;
  scan_text(text, &s);
  char **lines = g_strsplit(text, "\n", -1);
  if (line >= 1 && line <= (int)g_strv_length(lines) &&
      hint_on_line(lines[line - 1], out))
    at = line;
  g_strfreev(lines);
  if (!at)
    at = hint_before(&s, line, out);
  if (!at)
    at = hint_unclosed(&s, line, out);
out:
  g_array_free(s.lines, TRUE);
  g_free(text);
  return at;
}
