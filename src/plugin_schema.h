/*
 * The config schema a plugin declares (khost_plugin_t.settings, ABI 1.1):
 * checked once when the plugin is loaded, then used to check a pipeline's
 * plugin config group before create() and to answer the config lookups of
 * absent settings with their defaults.
 *
 * Concurrency & locking: a schema is built on the main thread when the
 * plugin is loaded and only read afterwards, from any member thread.
 */
#ifndef KHOST_PLUGIN_SCHEMA_H
#define KHOST_PLUGIN_SCHEMA_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#include "khost/plugin.h"

typedef struct plugin_schema plugin_schema_t;

/* Check the declared settings (a name each, no name twice, a known type, a
 * default that fits the type) and parse their defaults. 0 with *out set;
 * -1 with "setting KEY: <reason>" in err. */
int plugin_schema_new(plugin_schema_t **out, const khost_setting_t *settings,
                      char *err, size_t errlen);
void plugin_schema_free(plugin_schema_t *s);

/* The declaration of key, or NULL. */
const khost_setting_t *plugin_schema_find(const plugin_schema_t *s,
                                          const char *key);

/* The default of a declared setting as the lookups return it: 1 with
 * *value set when key is declared with a default of that type (an integer
 * default also serves as a double), else 0. Strings belong to the schema. */
int plugin_schema_default_string(const plugin_schema_t *s, const char *key,
                                 const char **value);
int plugin_schema_default_int(const plugin_schema_t *s, const char *key,
                              int64_t *value);
int plugin_schema_default_double(const plugin_schema_t *s, const char *key,
                                 double *value);
int plugin_schema_default_bool(const plugin_schema_t *s, const char *key,
                               int *value);

/* What a value of type t must be, for messages: "a string", "an integer",
 * "a number", "a boolean (true or false)". */
const char *plugin_schema_expected(khost_setting_type_t t);
/* The type's name for tables: "string", "int", "double", "bool". */
const char *plugin_schema_type_name(khost_setting_type_t t);
/* 1 when the libconfig setting has a type the declaration accepts. */
int plugin_schema_type_ok(khost_setting_type_t t, const config_setting_t *v);

/* Problems of a config group (may be NULL: no settings) against the
 * schema, each reported once through problem(ctx, setting, message):
 * unknown keys and wrong types name their setting; a missing required
 * setting names the group (NULL when there is none). Returns how many. */
typedef void (*plugin_schema_problem_fn)(void *ctx, const config_setting_t *at,
                                         const char *message);
int plugin_schema_check(const plugin_schema_t *s, const char *plugin_name,
                        const config_setting_t *group,
                        plugin_schema_problem_fn problem, void *ctx);

#endif
