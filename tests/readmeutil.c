/* README.md's worked examples: finding a section, what it says, and the
 * commands of its ```sh blocks. */
#include "readmeutil.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

char *ru_section(const char *heading) {
  char *readme = tu_read_file(TOP_SRCDIR "/README.md");
  ck_assert_msg(readme != NULL, "cannot read README.md");
  const char *start = strstr(readme, heading);
  ck_assert_msg(start != NULL, "README.md has no \"%s\"", heading);
  const char *body = start + strlen(heading);
  const char *h2 = strstr(body, "\n## "), *h3 = strstr(body, "\n### ");
  const char *end = h2 && (!h3 || h2 < h3) ? h2 : h3;
  char *section = g_strndup(start, end ? (size_t)(end - start) : strlen(start));
  free(readme);
  return section;
}

void ru_assert_says(const char *section, const char *what, const char *words) {
  gchar *flat = g_strdup(section);
  g_strdelimit(flat, "\n", ' ');
  ck_assert_msg(strstr(flat, words) != NULL,
                "README.md's %s does not say \"%s\"", what, words);
  g_free(flat);
}

/* The commands of one ```sh block's lines, added to cmds. */
static void add_block_commands(GPtrArray *cmds, const char *block) {
  gchar **lines = g_strsplit(block, "\n", -1);
  for (size_t i = 0; lines[i]; i++) {
    if (!lines[i][0])
      continue;
    GString *cmd = g_string_new(lines[i]);
    while (strstr(cmd->str, "<<EOF") && !g_str_has_suffix(cmd->str, "\nEOF")) {
      ck_assert_msg(lines[i + 1] != NULL, "README.md: no EOF after %s",
                    cmd->str);
      g_string_append_printf(cmd, "\n%s", lines[++i]);
    }
    g_ptr_array_add(cmds, g_string_free(cmd, FALSE));
  }
  g_strfreev(lines);
}

GPtrArray *ru_sh_commands(const char *section) {
  GPtrArray *cmds = g_ptr_array_new_with_free_func(g_free);
  const char *p = section;
  while ((p = strstr(p, "```sh\n")) != NULL) {
    p += strlen("```sh\n");
    const char *end = strstr(p, "```");
    ck_assert_msg(end != NULL, "README.md: a ```sh block does not end");
    gchar *block = g_strndup(p, (size_t)(end - p));
    add_block_commands(cmds, block);
    g_free(block);
    p = end + 3;
  }
  return cmds;
}
