/*
 * khost replay: the command line of replay.h.
 *
 * Preview by default, as `dedup forget` and Kafka's own offset tools: the
 * plan is printed and nothing changes unless --execute is given.
 * (--dry-run, the explicit preview, is kept for the scripts that use it.)
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "dedup.h"
#include "host.h"
#include "offsets.h"
#include "replay.h"

typedef struct replay_cli {
  const char *config;
  replay_opts_t o;
  int dry_run;
  int execute;
  int json;
  char shift[48]; /* "shift-by N", what the plan prints for --shift-by */
} replay_cli_t;

static int parse_partition(const char *s, int32_t *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0 || v > INT32_MAX)
    return -1;
  *out = (int32_t)v;
  return 0;
}

static int parse_option(replay_cli_t *c, int opt, char **argv) {
  switch (opt) {
  case 'c':
    c->config = optarg;
    return -1;
  case 'p':
    c->o.pipeline = optarg;
    return -1;
  case 'f':
    c->o.from = optarg;
    return -1;
  case 's':
    c->o.shift_by = optarg;
    snprintf(c->shift, sizeof(c->shift), "shift-by %s", optarg);
    return -1;
  case 't':
    c->o.topic = optarg;
    return -1;
  case 'P':
    if (parse_partition(optarg, &c->o.partition) != 0)
      return cli_usage_error("replay: --partition %s: not a partition number",
                             optarg);
    return -1;
  case 'g':
    if (!*optarg)
      return cli_usage_error("replay: --group needs a group name");
    c->o.group = optarg;
    return -1;
  case 'd':
    if (strcmp(optarg, "skip") == 0)
      c->o.dedup_mode = DEDUP_REPLAY_SKIP;
    else if (strcmp(optarg, "reprocess") == 0)
      c->o.dedup_mode = DEDUP_REPLAY_REPROCESS;
    else
      return cli_usage_error("replay: --dedup %s: use skip or reprocess",
                             optarg);
    return -1;
  case 'n':
    c->dry_run = 1;
    return -1;
  case 'x':
    c->execute = 1;
    return -1;
  case 'j':
    c->json = 1;
    return -1;
  case ':':
    return cli_usage_error("replay: %s needs a value", argv[optind - 1]);
  default:
    return cli_usage_error("replay: unknown option '%s'", argv[optind - 1]);
  }
}

static const char *dedup_word(const replay_plan_t *p, const replay_cli_t *c) {
  if (!replay_pipeline(p)->dedup)
    return "off";
  return c->o.dedup_mode == DEDUP_REPLAY_REPROCESS ? "reprocess" : "skip";
}

/* The plan as a table: per partition the committed, new and end offsets,
 * the backlog (end - new) and the records consumed before that come
 * again. */
static void print_plan(const replay_plan_t *p, const replay_cli_t *c) {
  const cfg_pipeline_t *pc = replay_pipeline(p);
  int tw = (int)strlen("TOPIC");
  int64_t backlog = 0, replayed = 0;
  for (size_t i = 0; i < replay_part_count(p); i++)
    if ((int)strlen(replay_part(p, i)->topic) > tw)
      tw = (int)strlen(replay_part(p, i)->topic);
  printf("pipeline %s, group %s, from %s, dedup %s\n", pc->name,
         replay_group(p), c->o.shift_by ? c->shift : c->o.from,
         dedup_word(p, c));
  printf("%-*s  %-9s  %-10s  %-10s  %-10s  %-10s  %s\n", tw, "TOPIC",
         "PARTITION", "COMMITTED", "NEW", "END", "BACKLOG", "REPLAYED");
  for (size_t i = 0; i < replay_part_count(p); i++) {
    const replay_part_t *rp = replay_part(p, i);
    int64_t r = replay_part_replayed(p, rp);
    printf("%-*s  %-9" PRId32 "  ", tw, rp->topic, rp->partition);
    if (rp->committed == OFFS_NONE)
      printf("%-10s", "-");
    else
      printf("%-10" PRId64, rp->committed);
    printf("  %-10" PRId64 "  %-10" PRId64 "  %-10" PRId64 "  %" PRId64 "\n",
           rp->target, rp->end, rp->end - rp->target, r);
    backlog += rp->end - rp->target;
    replayed += r;
  }
  printf("%" PRId64 " record(s) in front of the pipeline, %" PRId64
         " of them consumed before (replayed)\n",
         backlog, replayed);
}

/* The plan as JSON: the table's rows and totals, and whether it was
 * carried out. */
static void print_plan_json(const replay_plan_t *p, const replay_cli_t *c) {
  json_t *rows = json_array();
  int64_t backlog = 0, replayed = 0;
  for (size_t i = 0; i < replay_part_count(p); i++) {
    const replay_part_t *rp = replay_part(p, i);
    int64_t r = replay_part_replayed(p, rp);
    json_array_append_new(
        rows,
        json_pack("{s:s, s:I, s:o, s:I, s:I, s:I, s:I}", "topic", rp->topic,
                  "partition", (json_int_t)rp->partition, "committed",
                  rp->committed == OFFS_NONE ? json_null()
                                             : json_integer(rp->committed),
                  "new", (json_int_t)rp->target, "end", (json_int_t)rp->end,
                  "backlog", (json_int_t)(rp->end - rp->target), "replayed",
                  (json_int_t)r));
    backlog += rp->end - rp->target;
    replayed += r;
  }
  json_t *o =
      json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:b}", "pipeline",
                replay_pipeline(p)->name, "group", replay_group(p), "from",
                c->o.shift_by ? c->shift : c->o.from, "dedup", dedup_word(p, c),
                "partitions", rows, "backlog", (json_int_t)backlog, "replayed",
                (json_int_t)replayed, "execute", c->execute);
  json_dumpf(o, stdout, JSON_INDENT(2));
  putchar('\n');
  json_decref(o);
}

/* Returns -1 to go on, or an exit status. */
static int parse(int argc, char **argv, replay_cli_t *c) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"pipeline", required_argument, NULL, 'p'},
      {"from", required_argument, NULL, 'f'},
      {"shift-by", required_argument, NULL, 's'},
      {"topic", required_argument, NULL, 't'},
      {"partition", required_argument, NULL, 'P'},
      {"group", required_argument, NULL, 'g'},
      {"dedup", required_argument, NULL, 'd'},
      {"dry-run", no_argument, NULL, 'n'},
      {"execute", no_argument, NULL, 'x'},
      {"json", no_argument, NULL, 'j'},
      {NULL, 0, NULL, 0}};
  int opt, rc;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "+:c:p:f:", longopts, NULL)) != -1)
    if ((rc = parse_option(c, opt, argv)) >= 0)
      return rc;
  if (optind < argc)
    return cli_usage_error("replay: unexpected argument '%s'", argv[optind]);
  if (!c->config || !c->o.pipeline || (!c->o.from && !c->o.shift_by))
    return cli_usage_error("replay: -c FILE, -p PIPELINE and --from POSITION "
                           "(or --shift-by N) are required");
  if (c->o.from && c->o.shift_by)
    return cli_usage_error("replay: --from or --shift-by, not both");
  if (c->dry_run && c->execute)
    return cli_usage_error("replay: --dry-run (a preview) or --execute, not "
                           "both");
  return -1;
}

int cmd_replay(int argc, char **argv) {
  replay_cli_t c = {.o = {.partition = -1, .dedup_mode = DEDUP_REPLAY_SKIP}};
  replay_plan_t *plan = NULL;
  char err[4096];
  cfg_t cfg;
  int rc = parse(argc, argv, &c);
  if (rc >= 0)
    return rc;
  rc = cli_load_config(&cfg, c.config);
  if (rc != 0)
    goto out;
  rc = replay_plan(&plan, &cfg, &c.o, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "khost: replay: %s (nothing changed)\n", err);
    goto out;
  }
  if (c.json)
    print_plan_json(plan, &c);
  else
    print_plan(plan, &c);
  fflush(stdout);
  /* With --json, stdout holds only the JSON: the rest goes to stderr. */
  if (!c.execute)
    fprintf(c.json ? stderr : stdout,
            "preview only, nothing changed: add --execute to move the "
            "offsets\n");
  else if ((rc = replay_apply(plan, c.json ? stderr : stdout, err,
                              sizeof(err))) != 0)
    fprintf(stderr, "khost: replay: %s\n", err);
out:
  replay_free(plan);
  cfg_free(&cfg);
  return rc;
}
