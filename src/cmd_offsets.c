/*
 * khost offsets: the command line of offsets.h, as an aligned table or
 * as JSON.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "host.h"
#include "offsets.h"

typedef struct offsets_cli {
  const char *config;
  const char *pipeline;
  int json;
} offsets_cli_t;

static int parse(int argc, char **argv, offsets_cli_t *c) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"pipeline", required_argument, NULL, 'p'},
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0}};
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "+:c:p:", longopts, NULL)) != -1) {
    if (opt == 'c')
      c->config = optarg;
    else if (opt == 'p')
      c->pipeline = optarg;
    else if (opt == 'j')
      c->json = 1;
    else if (opt == ':')
      return cli_usage_error("offsets: %s needs a value", argv[optind - 1]);
    else
      return cli_usage_error("offsets: unknown option '%s'", argv[optind - 1]);
  }
  if (optind < argc)
    return cli_usage_error("offsets: unexpected argument '%s'", argv[optind]);
  if (!c->config)
    return cli_usage_error("offsets: -c FILE is required");
  return -1;
}

static json_t *offset_json(int64_t v) {
  return v == OFFS_NONE ? json_null() : json_integer(v);
}

static int print_json(const offs_report_t *r) {
  json_t *arr = json_array();
  for (size_t i = 0; i < r->n; i++) {
    const offs_row_t *row = &r->rows[i];
    json_array_append_new(
        arr, json_pack("{s:s, s:s, s:I, s:o, s:I, s:I, s:o, s:o}", "group",
                       row->group, "topic", row->topic, "partition",
                       (json_int_t)row->partition, "committed",
                       offset_json(row->committed), "start",
                       (json_int_t)row->start, "end", (json_int_t)row->end,
                       "lag", offset_json(row->lag), "member",
                       row->member ? json_string(row->member) : json_null()));
  }
  int rc = json_dumpf(arr, stdout, JSON_INDENT(2)) == 0 ? 0 : -1;
  putchar('\n');
  json_decref(arr);
  return rc;
}

static int width(const char *s, int w) {
  int n = (int)strlen(s);
  return n > w ? n : w;
}

static void cell(int w, int64_t v) {
  if (v == OFFS_NONE)
    printf("%-*s  ", w, "-");
  else
    printf("%-*" PRId64 "  ", w, v);
}

/* Members are "-" when no member owns the partition and "?" when the
 * broker would not say. */
static void print_table(const offs_report_t *r) {
  int gw = 5, tw = 5;
  for (size_t i = 0; i < r->n; i++) {
    gw = width(r->rows[i].group, gw);
    tw = width(r->rows[i].topic, tw);
  }
  printf("%-*s  %-*s  %-9s  %-10s  %-10s  %-10s  %-10s  %s\n", gw, "GROUP", tw,
         "TOPIC", "PARTITION", "COMMITTED", "START", "END", "LAG", "MEMBER");
  for (size_t i = 0; i < r->n; i++) {
    const offs_row_t *row = &r->rows[i];
    printf("%-*s  %-*s  %-9" PRId32 "  ", gw, row->group, tw, row->topic,
           row->partition);
    cell(10, row->committed);
    cell(10, row->start);
    cell(10, row->end);
    cell(10, row->lag);
    printf("%s\n", row->member ? row->member : row->member_known ? "-" : "?");
  }
}

static int gather(const cfg_t *cfg, const char *only, offs_report_t *r,
                  char *err, size_t errlen) {
  int rc = HOST_EXIT_OK, matched = 0;
  for (size_t i = 0; rc == HOST_EXIT_OK && i < cfg->n_pipelines; i++) {
    const cfg_pipeline_t *pc = &cfg->pipelines[i];
    if (only && strcmp(only, pc->name) != 0)
      continue;
    matched = 1;
    rc = offs_gather(r, cfg, pc, err, errlen);
  }
  if (rc == HOST_EXIT_OK && !matched) {
    snprintf(err, errlen, "%s: no pipeline named \"%s\"", cfg->path, only);
    rc = HOST_EXIT_CONFIG;
  }
  return rc;
}

int cmd_offsets(int argc, char **argv) {
  offsets_cli_t c = {0};
  offs_report_t r = {0};
  char err[4096];
  cfg_t cfg;
  int rc = parse(argc, argv, &c);
  if (rc >= 0)
    return rc;
  rc = cli_load_config(&cfg, c.config);
  if (rc != 0)
    goto out;
  rc = gather(&cfg, c.pipeline, &r, err, sizeof(err));
  for (size_t i = 0; i < r.n_notes; i++)
    fprintf(stderr, "khost: offsets: note: %s\n", r.notes[i]);
  if (rc != 0)
    fprintf(stderr, "khost: offsets: %s\n", err);
  else if (c.json)
    rc = print_json(&r) == 0 ? HOST_EXIT_OK : HOST_EXIT_RUNTIME;
  else
    print_table(&r);
out:
  offs_report_free(&r);
  cfg_free(&cfg);
  return rc;
}
