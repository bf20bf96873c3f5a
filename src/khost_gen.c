/*
 * khost-gen: produces the e-commerce events of khost's source document to
 * Kafka (or to an in-process mock cluster), for trying khost and for
 * load-testing plugins. The event model is gen.c; this file is the command
 * line.
 */
#include <getopt.h>
#include <glib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "log.h"
#include "mock.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "Usage: khost-gen (-b SERVERS | --mock N) [OPTIONS]\n"
    "Produce the e-commerce events of khost's source document: the topics\n"
    "order-completed, coupon-issue, user-activity, balance-activity and\n"
    "product-activity, with the headers eventId, eventType, aggregateId and\n"
    "occurredOn and a JSON value. Prints what was produced, per topic.\n"
    "\n"
    "  -b, --bootstrap SERVERS  the Kafka to produce to; the topics must "
    "exist\n"
    "      --mock N             start librdkafka's in-process mock cluster "
    "with N\n"
    "                           brokers and create the topics: for trying\n"
    "                           khost-gen out (the cluster ends with it)\n"
    "      --partitions P       partitions per topic with --mock (default "
    "3)\n"
    "  -n, --count N            records to produce, duplicates included\n"
    "                           (default 1000 unless -d is given)\n"
    "  -d, --duration SECS      produce for SECS seconds (with -n: whichever\n"
    "                           ends first)\n"
    "  -r, --rate PER_SEC       records per second (default 0: as fast as\n"
    "                           possible)\n"
    "  -s, --seed S             seed of the event model: a seed gives the "
    "same\n"
    "                           eventIds, keys and values (default: random,\n"
    "                           printed)\n"
    "      --users U            user ids 1..U (default 100)\n"
    "      --coupons C          coupon ids 1..C (default 10)\n"
    "      --duplicates P       share of records (0..1) that re-publish an\n"
    "                           earlier event with its eventId, as a "
    "retrying\n"
    "                           publisher does (default 0)\n"
    "      --topics LIST        comma-separated subset of the topics\n"
    "      --json               print the report as JSON instead of a table\n"
    "  -X NAME=VALUE            a librdkafka producer property (repeatable);\n"
    "                           enable.idempotence=true and acks=all are "
    "set\n"
    "  -h, --help               this text\n"
    "  -V, --version            print the version and exit\n"
    "\n"
    "Exit status: 0 every record acknowledged; 1 Kafka unreachable, a topic\n"
    "missing, or records that failed delivery; 2 usage error.\n";

typedef struct cli {
  gen_opts_t gen;
  const char *bootstrap;
  int mock_brokers;
  int partitions;
  int count_given, duration_given;
  int json;         /* --json: the report as JSON */
  GPtrArray *props; /* "name=value" strings, borrowed from argv */
} cli_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("khost-gen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\nTry 'khost-gen --help'.\n", stderr);
  va_end(ap);
  return EXIT_USAGE;
}

/* An unsigned integer in [min, max]; 0, or -1 after reporting. */
static int parse_uint(const char *opt, const char *arg, guint64 min,
                      guint64 max, guint64 *out) {
  if (g_ascii_string_to_unsigned(arg, 10, min, max, out, NULL))
    return 0;
  usage_error("%s: expected an integer from %" G_GUINT64_FORMAT
              " to %" G_GUINT64_FORMAT " (got '%s')",
              opt, min, max, arg);
  return -1;
}

static int parse_double(const char *opt, const char *arg, double min,
                        double max, double *out) {
  char *end = NULL;
  double v = g_ascii_strtod(arg, &end);
  if (arg[0] && end && *end == '\0' && v >= min && v <= max) {
    *out = v;
    return 0;
  }
  usage_error("%s: expected a number from %g to %g (got '%s')", opt, min, max,
              arg);
  return -1;
}

static int parse_topics(const char *arg, unsigned *out) {
  gchar **names = g_strsplit(arg, ",", -1);
  int rc = 0;
  *out = 0;
  for (size_t i = 0; names[i] && rc == 0; i++) {
    int t = gen_topic_index(names[i]);
    if (t < 0)
      rc = usage_error("--topics: unknown topic '%s' (known: order-completed, "
                       "coupon-issue, user-activity, balance-activity, "
                       "product-activity)",
                       names[i]);
    else
      *out |= 1u << t;
  }
  g_strfreev(names);
  if (rc == 0 && !*out)
    rc = usage_error("--topics: name at least one topic");
  return rc ? -1 : 0;
}

enum {
  OPT_MOCK = 256,
  OPT_PARTITIONS,
  OPT_USERS,
  OPT_COUPONS,
  OPT_DUPS,
  OPT_TOPICS,
  OPT_JSON
};

/* One option; -1 on a usage error (reported). */
static int apply(cli_t *c, int opt, const char *arg) {
  guint64 v = 0;
  int rc = 0;
  switch (opt) {
  case 'b':
    c->bootstrap = arg;
    break;
  case OPT_MOCK:
    rc = parse_uint("--mock", arg, 1, 9, &v);
    c->mock_brokers = (int)v;
    break;
  case OPT_PARTITIONS:
    rc = parse_uint("--partitions", arg, 1, 256, &v);
    c->partitions = (int)v;
    break;
  case 'n':
    rc = parse_uint("--count", arg, 1, G_MAXUINT64, &c->gen.count);
    c->count_given = 1;
    break;
  case 'd':
    rc = parse_uint("--duration", arg, 1, G_MAXINT64 / 1000, &v);
    c->gen.duration_ms = (int64_t)v * 1000;
    c->duration_given = 1;
    break;
  case 'r':
    rc = parse_double("--rate", arg, 0, 1e9, &c->gen.rate);
    break;
  case 's':
    rc = parse_uint("--seed", arg, 0, G_MAXUINT32, &v);
    c->gen.seed = (uint32_t)v;
    break;
  case OPT_USERS:
    rc = parse_uint("--users", arg, 1, 10000000, &v);
    c->gen.users = (int)v;
    break;
  case OPT_COUPONS:
    rc = parse_uint("--coupons", arg, 1, 10000000, &v);
    c->gen.coupons = (int)v;
    break;
  case OPT_DUPS:
    rc = parse_double("--duplicates", arg, 0, 1, &c->gen.duplicates);
    break;
  case OPT_TOPICS:
    rc = parse_topics(arg, &c->gen.topics);
    break;
  case 'X':
    g_ptr_array_add(c->props, (gpointer)arg);
    break;
  case OPT_JSON:
    c->json = 1;
    break;
  }
  return rc;
}

/* Returns -1 to go on, or an exit status. */
static int parse(cli_t *c, int argc, char **argv) {
  static const struct option longopts[] = {
      {"bootstrap", required_argument, NULL, 'b'},
      {"mock", required_argument, NULL, OPT_MOCK},
      {"partitions", required_argument, NULL, OPT_PARTITIONS},
      {"count", required_argument, NULL, 'n'},
      {"duration", required_argument, NULL, 'd'},
      {"rate", required_argument, NULL, 'r'},
      {"seed", required_argument, NULL, 's'},
      {"users", required_argument, NULL, OPT_USERS},
      {"coupons", required_argument, NULL, OPT_COUPONS},
      {"duplicates", required_argument, NULL, OPT_DUPS},
      {"topics", required_argument, NULL, OPT_TOPICS},
      {"json", no_argument, NULL, OPT_JSON},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  int opt;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":b:n:d:r:s:X:hV", longopts, NULL)) !=
         -1) {
    if (opt == 'h') {
      fputs(usage_text, stdout);
      return EXIT_OK;
    }
    if (opt == 'V') {
      printf("khost-gen %s (librdkafka %s)\n", PACKAGE_VERSION,
             rd_kafka_version_str());
      return EXIT_OK;
    }
    if (opt == ':')
      return usage_error("%s needs a value", argv[optind - 1]);
    if (opt == '?')
      return usage_error("unknown option '%s'", argv[optind - 1]);
    if (apply(c, opt, optarg) != 0)
      return EXIT_USAGE;
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (!c->bootstrap == !c->mock_brokers)
    return usage_error("give either -b SERVERS or --mock N");
  if (c->partitions && !c->mock_brokers)
    return usage_error("--partitions goes with --mock");
  if (c->duration_given && !c->count_given)
    c->gen.count = 0;
  return -1;
}

/* --mock: a cluster with the chosen topics; NULL after reporting. */
static mock_t *start_mock(const cli_t *c) {
  FILE *say = c->json ? stderr : stdout; /* stdout: the JSON alone */
  char err[512];
  mock_t *m = NULL;
  unsigned chosen = c->gen.topics ? c->gen.topics : (1u << GEN_N_TOPICS) - 1;
  int partitions = c->partitions ? c->partitions : 3;
  if (mock_start(&m, c->mock_brokers, err, sizeof(err)) != 0)
    goto fail;
  for (int t = 0; t < GEN_N_TOPICS; t++)
    if ((chosen & (1u << t)) &&
        mock_create_topic(m, gen_topic_name(t), partitions, err, sizeof(err)) !=
            0)
      goto fail;
  fprintf(say, "mock cluster: %d broker(s) at %s, %d partitions per topic\n",
          c->mock_brokers, mock_bootstraps(m), partitions);
  return m;
fail:
  fprintf(stderr, "khost-gen: %s\n", err);
  mock_stop(m);
  return NULL;
}

static int run(cli_t *c) {
  char err[1024];
  gen_report_t report;
  mock_t *mock = NULL;
  int rc = EXIT_FAILED;
  if (c->mock_brokers && !(mock = start_mock(c)))
    return EXIT_FAILED;
  rd_kafka_conf_t *conf =
      gen_conf(mock ? mock_bootstraps(mock) : c->bootstrap,
               (char *const *)c->props->pdata, c->props->len, err, sizeof(err));
  if (!conf) {
    fprintf(stderr, "khost-gen: -X %s\n", err);
    rc = EXIT_USAGE;
    goto out;
  }
  if (gen_run(conf, &c->gen, &report, err, sizeof(err)) == 0)
    rc = EXIT_OK;
  else
    fprintf(stderr, "khost-gen: %s\n", err);
  if (c->json)
    gen_report_print_json(&report, stdout);
  else
    gen_report_print(&report, stdout);
out:
  mock_stop(mock);
  return rc;
}

int main(int argc, char **argv) {
  cli_t c = {.props = g_ptr_array_new()};
  struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
  gen_opts_default(&c.gen);
  c.gen.stop = &g_stop;
  int rc = parse(&c, argc, argv);
  if (rc < 0) {
    log_set_level(KHOST_LOG_WARNING);
    /* A first signal stops producing and waits for the acknowledgements;
     * a second one ends the process. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = run(&c);
  }
  g_ptr_array_free(c.props, TRUE);
  return rc;
}
