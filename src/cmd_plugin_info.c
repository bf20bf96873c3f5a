/*
 * khost plugin-info NAME|PATH [-c FILE] [--json]: what a plugin is and the
 * settings it declares, read from its descriptor. The plugin is loaded and
 * validated as `khost run` would, but none of its code runs except its
 * entry function (no init(), no instance).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "commands.h"
#include "host.h"
#include "plugin_loader.h"

typedef struct info_opts {
  const char *plugin;
  const char *config;
  int json;
} info_opts_t;

static int info_parse(int argc, char **argv, info_opts_t *o) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0}};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":c:", longopts, NULL)) != -1) {
    if (c == 'c')
      o->config = optarg;
    else if (c == 'j')
      o->json = 1;
    else if (c == ':')
      return cli_usage_error("%s: %s needs a value", argv[0], argv[optind - 1]);
    else
      return cli_usage_error("%s: unknown option '%s'", argv[0],
                             argv[optind - 1]);
  }
  if (optind >= argc)
    return cli_usage_error("%s: a plugin NAME or PATH is required", argv[0]);
  if (optind + 1 < argc)
    return cli_usage_error("unexpected argument '%s'", argv[optind + 1]);
  o->plugin = argv[optind];
  return -1;
}

/* As the config does it: a value with a '/' is a path, else a name in
 * plugin_dir ("x" or "x.so"). */
static char *info_resolve(const char *plugin, const char *plugin_dir) {
  if (strchr(plugin, '/'))
    return g_strdup(plugin);
  return g_strdup_printf("%s/%s%s", plugin_dir, plugin,
                         g_str_has_suffix(plugin, ".so") ? "" : ".so");
}

/* The optional callbacks the plugin has, space-separated. */
static void info_callbacks(const khost_plugin_t *d, GString *out) {
  const struct {
    const char *name;
    int has;
  } cb[] = {{"create", d->create != NULL},     {"handle", d->handle != NULL},
            {"flush", d->flush != NULL},       {"destroy", d->destroy != NULL},
            {"init", d->init != NULL},         {"fini", d->fini != NULL},
            {"assigned", d->assigned != NULL}, {"revoked", d->revoked != NULL}};
  for (size_t i = 0; i < G_N_ELEMENTS(cb); i++)
    if (cb[i].has)
      g_string_append_printf(out, "%s%s", out->len ? " " : "", cb[i].name);
}

static const char *info_default(const khost_setting_t *s) {
  if (s->flags & KHOST_SETTING_REQUIRED)
    return "(required)";
  return s->default_value ? s->default_value : "-";
}

static void info_table(const khost_setting_t *settings, FILE *out) {
  int wn = (int)strlen("SETTING"), wt = (int)strlen("TYPE");
  int wd = (int)strlen("DEFAULT");
  for (const khost_setting_t *s = settings; s->name; s++) {
    wn = MAX(wn, (int)strlen(s->name));
    wt = MAX(wt, (int)strlen(plugin_schema_type_name(s->type)));
    wd = MAX(wd, (int)strlen(info_default(s)));
  }
  fprintf(out, "  %-*s  %-*s  %-*s  %s\n", wn, "SETTING", wt, "TYPE", wd,
          "DEFAULT", "DESCRIPTION");
  for (const khost_setting_t *s = settings; s->name; s++)
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", wn, s->name, wt,
            plugin_schema_type_name(s->type), wd, info_default(s),
            s->description ? s->description : "");
}

static void info_text(const plugin_t *p, FILE *out) {
  const khost_plugin_t *d = plugin_descriptor(p);
  GString *cb = g_string_new(NULL);
  info_callbacks(d, cb);
  fprintf(out,
          "name:       %s\n"
          "version:    %s\n"
          "path:       %s\n"
          "plugin ABI: %u.%u (this khost: %d.%d)\n"
          "callbacks:  %s\n",
          d->name, d->version ? d->version : "-", plugin_path(p),
          (unsigned)d->abi_major, (unsigned)d->abi_minor, KHOST_ABI_MAJOR,
          KHOST_ABI_MINOR, cb->str);
  if (d->settings && d->settings[0].name) {
    fprintf(out, "settings:\n");
    info_table(d->settings, out);
  } else {
    fprintf(out, "settings:   none declared (the plugin checks its config "
                 "group with its own lookups)\n");
  }
  g_string_free(cb, TRUE);
}

static json_t *info_json_settings(const khost_setting_t *settings) {
  json_t *arr = json_array();
  for (const khost_setting_t *s = settings; s && s->name; s++)
    json_array_append_new(
        arr, json_pack("{s:s, s:s, s:o, s:b, s:s}", "name", s->name, "type",
                       plugin_schema_type_name(s->type), "default",
                       s->default_value ? json_string(s->default_value)
                                        : json_null(),
                       "required", (s->flags & KHOST_SETTING_REQUIRED) != 0,
                       "description", s->description ? s->description : ""));
  return arr;
}

static json_t *info_json_words(const char *text) {
  json_t *arr = json_array();
  char **words = g_strsplit(text, " ", -1);
  for (char **w = words; *w; w++)
    if (**w)
      json_array_append_new(arr, json_string(*w));
  g_strfreev(words);
  return arr;
}

static void info_json(const plugin_t *p, FILE *out) {
  const khost_plugin_t *d = plugin_descriptor(p);
  GString *cb = g_string_new(NULL);
  char abi[32];
  info_callbacks(d, cb);
  snprintf(abi, sizeof(abi), "%u.%u", (unsigned)d->abi_major,
           (unsigned)d->abi_minor);
  json_t *obj = json_pack(
      "{s:s, s:o, s:s, s:s, s:o, s:o}", "name", d->name, "version",
      d->version ? json_string(d->version) : json_null(), "path",
      plugin_path(p), "abi", abi, "callbacks", info_json_words(cb->str),
      "settings", d->settings ? info_json_settings(d->settings) : json_null());
  json_dumpf(obj, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  fputc('\n', out);
  json_decref(obj);
  g_string_free(cb, TRUE);
}

/* plugin_dir: the config's, else where khost run would look by default. */
static int info_plugin_dir(const info_opts_t *o, cfg_t *cfg, int *loaded,
                           const char **dir) {
  const char *env = getenv("KHOST_PLUGIN_DIR");
  *dir = env && env[0] ? env : KHOST_PLUGIN_DIR;
  if (!o->config)
    return 0;
  int rc = cli_load_config(cfg, o->config);
  *loaded = 1; /* freed either way */
  if (rc == 0)
    *dir = cfg->plugin_dir;
  return rc;
}

int cmd_plugin_info(int argc, char **argv) {
  info_opts_t o = {0};
  cfg_t cfg;
  const char *dir = NULL;
  char err[1024];
  char *path = NULL;
  plugin_t *p = NULL;
  int loaded = 0, rc = info_parse(argc, argv, &o);
  if (rc >= 0)
    return rc;
  rc = info_plugin_dir(&o, &cfg, &loaded, &dir);
  if (rc != 0)
    goto out;
  path = info_resolve(o.plugin, dir);
  if (plugin_load(&p, path, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    rc = HOST_EXIT_CONFIG;
    goto out;
  }
  if (o.json)
    info_json(p, stdout);
  else
    info_text(p, stdout);
  rc = HOST_EXIT_OK;
out:
  plugin_unload(p);
  g_free(path);
  if (loaded)
    cfg_free(&cfg);
  return rc;
}
