/*
 * Plugin config schemas (see plugin_schema.h).
 */
#include "plugin_schema.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>

typedef struct entry {
  const khost_setting_t *decl; /* the plugin's, borrowed */
  int has_default;
  int64_t i; /* the default, parsed as decl->type says */
  double d;
  int b;
} entry_t;

struct plugin_schema {
  GArray *entries; /* entry_t, in declaration order */
};

const char *plugin_schema_expected(khost_setting_type_t t) {
  switch (t) {
  case KHOST_SETTING_STRING:
    return "a string";
  case KHOST_SETTING_INT:
    return "an integer";
  case KHOST_SETTING_DOUBLE:
    return "a number";
  case KHOST_SETTING_BOOL:
    return "a boolean (true or false)";
  }
  return "a value of an unknown type";
}

const char *plugin_schema_type_name(khost_setting_type_t t) {
  switch (t) {
  case KHOST_SETTING_STRING:
    return "string";
  case KHOST_SETTING_INT:
    return "int";
  case KHOST_SETTING_DOUBLE:
    return "double";
  case KHOST_SETTING_BOOL:
    return "bool";
  }
  return "?";
}

int plugin_schema_type_ok(khost_setting_type_t t, const config_setting_t *v) {
  int type = config_setting_type(v);
  int integer = type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64;
  switch (t) {
  case KHOST_SETTING_STRING:
    return type == CONFIG_TYPE_STRING;
  case KHOST_SETTING_INT:
    return integer;
  case KHOST_SETTING_DOUBLE:
    return integer || type == CONFIG_TYPE_FLOAT;
  case KHOST_SETTING_BOOL:
    return type == CONFIG_TYPE_BOOL;
  }
  return 0;
}

/* Parse e->decl->default_value as its type; 0, or -1 when it does not
 * fit. The whole text must be the value. */
static int parse_default(entry_t *e) {
  const char *text = e->decl->default_value;
  char *end = NULL;
  errno = 0;
  switch (e->decl->type) {
  case KHOST_SETTING_STRING:
    return 0;
  case KHOST_SETTING_INT:
    e->i = g_ascii_strtoll(text, &end, 10);
    break;
  case KHOST_SETTING_DOUBLE:
    e->d = g_ascii_strtod(text, &end);
    break;
  case KHOST_SETTING_BOOL:
    if (g_ascii_strcasecmp(text, "true") == 0)
      e->b = 1;
    else if (g_ascii_strcasecmp(text, "false") != 0)
      return -1;
    return 0;
  }
  return end && end != text && !*end && errno == 0 ? 0 : -1;
}

/* Check one declaration and add it; -1 with the reason in err. */
static int add_entry(plugin_schema_t *s, const khost_setting_t *decl, char *err,
                     size_t errlen) {
  entry_t e = {.decl = decl, .has_default = decl->default_value != NULL};
  const char *name = decl->name;
  if (!name[0]) {
    snprintf(err, errlen, "setting #%u: empty name", s->entries->len + 1);
    return -1;
  }
  if (plugin_schema_find(s, name)) {
    snprintf(err, errlen, "setting %s: declared twice", name);
    return -1;
  }
  if (decl->type < KHOST_SETTING_STRING || decl->type > KHOST_SETTING_BOOL) {
    snprintf(err, errlen, "setting %s: unknown type %d", name, (int)decl->type);
    return -1;
  }
  if (e.has_default && parse_default(&e) != 0) {
    snprintf(err, errlen, "setting %s: default \"%s\" is not %s", name,
             decl->default_value, plugin_schema_expected(decl->type));
    return -1;
  }
  g_array_append_val(s->entries, e);
  return 0;
}

int plugin_schema_new(plugin_schema_t **out, const khost_setting_t *settings,
                      char *err, size_t errlen) {
  plugin_schema_t *s = g_new0(plugin_schema_t, 1);
  s->entries = g_array_new(FALSE, TRUE, sizeof(entry_t));
  *out = NULL;
  for (const khost_setting_t *d = settings; d->name; d++)
    if (add_entry(s, d, err, errlen) != 0) {
      plugin_schema_free(s);
      return -1;
    }
  *out = s;
  return 0;
}

void plugin_schema_free(plugin_schema_t *s) {
  if (!s)
    return;
  g_array_free(s->entries, TRUE);
  g_free(s);
}

static const entry_t *find_entry(const plugin_schema_t *s, const char *key) {
  for (guint i = 0; s && key && i < s->entries->len; i++) {
    const entry_t *e = &g_array_index(s->entries, entry_t, i);
    if (strcmp(e->decl->name, key) == 0)
      return e;
  }
  return NULL;
}

const khost_setting_t *plugin_schema_find(const plugin_schema_t *s,
                                          const char *key) {
  const entry_t *e = find_entry(s, key);
  return e ? e->decl : NULL;
}

/* The entry of key when it has a default of type t. */
static const entry_t *default_of(const plugin_schema_t *s, const char *key,
                                 khost_setting_type_t t) {
  const entry_t *e = find_entry(s, key);
  return e && e->has_default && e->decl->type == t ? e : NULL;
}

int plugin_schema_default_string(const plugin_schema_t *s, const char *key,
                                 const char **value) {
  const entry_t *e = default_of(s, key, KHOST_SETTING_STRING);
  if (e)
    *value = e->decl->default_value;
  return e != NULL;
}

int plugin_schema_default_int(const plugin_schema_t *s, const char *key,
                              int64_t *value) {
  const entry_t *e = default_of(s, key, KHOST_SETTING_INT);
  if (e)
    *value = e->i;
  return e != NULL;
}

int plugin_schema_default_double(const plugin_schema_t *s, const char *key,
                                 double *value) {
  const entry_t *e = default_of(s, key, KHOST_SETTING_DOUBLE);
  if (e) {
    *value = e->d;
    return 1;
  }
  e = default_of(s, key, KHOST_SETTING_INT);
  if (e)
    *value = (double)e->i;
  return e != NULL;
}

int plugin_schema_default_bool(const plugin_schema_t *s, const char *key,
                               int *value) {
  const entry_t *e = default_of(s, key, KHOST_SETTING_BOOL);
  if (e)
    *value = e->b;
  return e != NULL;
}

/* The settings of the group: unknown keys, wrong types. */
static int check_present(const plugin_schema_t *s, const char *plugin_name,
                         const config_setting_t *group,
                         plugin_schema_problem_fn problem, void *ctx) {
  int n = 0;
  char msg[256];
  for (int i = 0; group && i < config_setting_length(group); i++) {
    const config_setting_t *v = config_setting_get_elem(group, (unsigned)i);
    const khost_setting_t *decl = plugin_schema_find(s, config_setting_name(v));
    if (!decl)
      snprintf(msg, sizeof(msg), "unknown setting for plugin %s", plugin_name);
    else if (!plugin_schema_type_ok(decl->type, v))
      snprintf(msg, sizeof(msg), "expected %s",
               plugin_schema_expected(decl->type));
    else
      continue;
    problem(ctx, v, msg);
    n++;
  }
  return n;
}

int plugin_schema_check(const plugin_schema_t *s, const char *plugin_name,
                        const config_setting_t *group,
                        plugin_schema_problem_fn problem, void *ctx) {
  int n = check_present(s, plugin_name, group, problem, ctx);
  char msg[256];
  for (guint i = 0; i < s->entries->len; i++) {
    const khost_setting_t *decl = g_array_index(s->entries, entry_t, i).decl;
    if (!(decl->flags & KHOST_SETTING_REQUIRED) ||
        (group && config_setting_get_member(group, decl->name)))
      continue;
    snprintf(msg, sizeof(msg), "missing setting %s (%s), required by plugin %s",
             decl->name, plugin_schema_expected(decl->type), plugin_name);
    problem(ctx, group, msg);
    n++;
  }
  return n;
}
