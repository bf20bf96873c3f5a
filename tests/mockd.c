/*
 * mockd: librdkafka's mock cluster in a process of its own, driven over
 * stdin, so that a test can kill the khost it runs against while the
 * cluster, and the offsets committed to it, live on.
 *
 *   mockd [BROKERS]        (default 3)
 *
 * Prints the bootstrap servers on the first line of stdout, then reads one
 * command per line on stdin and answers each with one line, "ok" (or
 * "ok <answer>" for a question) or "error <why>":
 *
 *   topic NAME PARTITIONS           create a topic
 *   push_errors APIKEY CODE...      the next requests of that type fail
 *                                   (CODE*N: N times)
 *   clear_errors APIKEY             forget the errors not used yet
 *   broker_errors ID APIKEY CODE... the same, for requests to broker ID
 *                                   only (they take precedence)
 *   errors_left ID APIKEY           answers how many of broker ID's
 *                                   errors are not used yet: unlike the
 *                                   cluster's, these can be counted, so a
 *                                   test can tell that the requests came
 *   broker_down ID | broker_up ID   cut a broker off / bring it back
 *                                   (its port held meanwhile: below)
 *   rtt ID MS                       delay every answer of a broker
 *   coordinator GROUP BROKER        make BROKER the group's coordinator
 *   leader TOPIC PART BROKER|-1     move a partition leader (-1: none)
 *   topic_error TOPIC CODE          metadata reports the topic with CODE
 *   quit                            stop (so does the end of stdin)
 *
 * A CODE is a number or a librdkafka error name without its prefix
 * (REQUEST_TIMED_OUT, NO_ERROR). API keys are Kafka's request numbers
 * (OffsetCommit 8, JoinGroup 11, Heartbeat 12, SyncGroup 14, ...).
 *
 * mockd dies with the process that started it (PR_SET_PDEATHSIG), so a
 * test that fails or times out leaves no cluster behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mock.h"

#define MAX_ARGS 64
#define MAX_ERRORS 1000

typedef struct cmd {
  const char *name;
  int min_args; /* words after the name */
  /* 0, with the answer to a question in err (empty for "ok" alone); -1
   * with why in err. */
  int (*run)(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv, int argc,
             char *err, size_t errlen);
} cmd_t;

/* A whole decimal number; -1 when word is not one. */
static int parse_num(const char *word, long *out) {
  char *end;
  errno = 0;
  long v = strtol(word, &end, 10);
  if (errno || end == word || *end)
    return -1;
  *out = v;
  return 0;
}

/* An error code given as a number or as its name. */
static int parse_code(const char *word, rd_kafka_resp_err_t *out) {
  const struct rd_kafka_err_desc *descs;
  size_t n;
  long v;
  if (parse_num(word, &v) == 0) {
    *out = (rd_kafka_resp_err_t)v;
    return 0;
  }
  rd_kafka_get_err_descs(&descs, &n);
  for (size_t i = 0; i < n; i++)
    if (descs[i].name && strcmp(descs[i].name, word) == 0) {
      *out = descs[i].code;
      return 0;
    }
  return -1;
}

static int bad_word(const char *what, const char *word, char *err,
                    size_t errlen) {
  snprintf(err, errlen, "%s: not a %s", word, what);
  return -1;
}

static int report(rd_kafka_resp_err_t e, char *err, size_t errlen) {
  if (!e)
    return 0;
  snprintf(err, errlen, "%s", rd_kafka_err2str(e));
  return -1;
}

static int do_topic(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                    int argc, char *err, size_t errlen) {
  long parts;
  (void)mc, (void)argc;
  if (parse_num(argv[1], &parts) < 0 || parts < 1)
    return bad_word("partition count", argv[1], err, errlen);
  return mock_create_topic(m, argv[0], (int)parts, err, errlen);
}

/* CODE or CODE*N: append the code (N times) to codes[*n]. */
static int add_codes(char *word, rd_kafka_resp_err_t *codes, size_t *n,
                     char *err, size_t errlen) {
  rd_kafka_resp_err_t code;
  long times = 1;
  char *star = strchr(word, '*');
  if (star) {
    *star = '\0';
    if (parse_num(star + 1, &times) < 0 || times < 1)
      return bad_word("repeat count", star + 1, err, errlen);
  }
  if (parse_code(word, &code) < 0)
    return bad_word("librdkafka error code", word, err, errlen);
  if (*n + (size_t)times > MAX_ERRORS) {
    snprintf(err, errlen, "more than %d errors", MAX_ERRORS);
    return -1;
  }
  while (times-- > 0)
    codes[(*n)++] = code;
  return 0;
}

static int do_push_errors(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                          int argc, char *err, size_t errlen) {
  rd_kafka_resp_err_t codes[MAX_ERRORS];
  size_t n = 0;
  long key;
  (void)m;
  if (parse_num(argv[0], &key) < 0)
    return bad_word("request number", argv[0], err, errlen);
  for (int i = 1; i < argc; i++)
    if (add_codes(argv[i], codes, &n, err, errlen) < 0)
      return -1;
  rd_kafka_mock_push_request_errors_array(mc, (int16_t)key, n, codes);
  return 0;
}

static int do_broker_errors(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                            int argc, char *err, size_t errlen) {
  rd_kafka_resp_err_t codes[MAX_ERRORS];
  size_t n = 0;
  long id, key;
  (void)m;
  if (parse_num(argv[0], &id) < 0)
    return bad_word("broker id", argv[0], err, errlen);
  if (parse_num(argv[1], &key) < 0)
    return bad_word("request number", argv[1], err, errlen);
  for (int i = 2; i < argc; i++)
    if (add_codes(argv[i], codes, &n, err, errlen) < 0)
      return -1;
  /* One at a time: the call takes (code, rtt) pairs as varargs. */
  for (size_t i = 0; i < n; i++) {
    rd_kafka_resp_err_t e = rd_kafka_mock_broker_push_request_error_rtts(
        mc, (int32_t)id, (int16_t)key, 1, codes[i], 0);
    if (e)
      return report(e, err, errlen);
  }
  return 0;
}

static int do_errors_left(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                          int argc, char *err, size_t errlen) {
  long id, key;
  size_t left = 0;
  (void)m, (void)argc;
  if (parse_num(argv[0], &id) < 0)
    return bad_word("broker id", argv[0], err, errlen);
  if (parse_num(argv[1], &key) < 0)
    return bad_word("request number", argv[1], err, errlen);
  if (report(rd_kafka_mock_broker_error_stack_cnt(mc, (int32_t)id, (int16_t)key,
                                                  &left),
             err, errlen) < 0)
    return -1;
  snprintf(err, errlen, "%zu", left);
  return 0;
}

static int do_clear_errors(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                           int argc, char *err, size_t errlen) {
  long key;
  (void)m, (void)argc;
  if (parse_num(argv[0], &key) < 0)
    return bad_word("request number", argv[0], err, errlen);
  rd_kafka_mock_clear_request_errors(mc, (int16_t)key);
  return 0;
}

/* librdkafka 2.0.2's mock broker closes its listening socket when it goes
 * down and binds the same port again when it comes back up. Meanwhile the
 * kernel may give that port to anyone binding port 0: another test's
 * cluster, which the clients of this one would then reach (same topics,
 * same group) and the port lost to this broker. While a broker is down,
 * mockd holds its port with a socket bound to it that does not listen:
 * connections are refused, as by a down broker. Indexed by broker id. */
#define MAX_BROKERS 16
static int g_held[MAX_BROKERS + 1];

/* Port of broker id: the bootstrap list names the brokers in id order. */
static int broker_port(mock_t *m, long id) {
  const char *at = mock_bootstraps(m);
  for (long i = 1; at && i < id; i++)
    if ((at = strchr(at, ',')) != NULL)
      at++;
  const char *colon = at ? strchr(at, ':') : NULL;
  return colon ? atoi(colon + 1) : -1;
}

static int hold_port(int port, char *err, size_t errlen) {
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
    snprintf(err, errlen, "holding port %d of the down broker: %s", port,
             strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static int do_broker(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                     int up, char *err, size_t errlen) {
  long id;
  if (parse_num(argv[0], &id) < 0 || id < 1 || id > MAX_BROKERS)
    return bad_word("broker id", argv[0], err, errlen);
  if (up) {
    if (g_held[id] > 0)
      close(g_held[id]);
    g_held[id] = 0;
    return report(rd_kafka_mock_broker_set_up(mc, (int32_t)id), err, errlen);
  }
  if (report(rd_kafka_mock_broker_set_down(mc, (int32_t)id), err, errlen) < 0)
    return -1;
  if (g_held[id] > 0)
    return 0; /* down already */
  int fd = hold_port(broker_port(m, id), err, errlen);
  if (fd < 0)
    return -1;
  g_held[id] = fd;
  return 0;
}

static int do_broker_down(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                          int argc, char *err, size_t errlen) {
  (void)argc;
  return do_broker(mc, m, argv, 0, err, errlen);
}

static int do_broker_up(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                        int argc, char *err, size_t errlen) {
  (void)argc;
  return do_broker(mc, m, argv, 1, err, errlen);
}

static int do_rtt(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv, int argc,
                  char *err, size_t errlen) {
  long id, ms;
  (void)m, (void)argc;
  if (parse_num(argv[0], &id) < 0 || parse_num(argv[1], &ms) < 0 || ms < 0)
    return bad_word("broker id and milliseconds", argv[0], err, errlen);
  return report(rd_kafka_mock_broker_set_rtt(mc, (int32_t)id, (int)ms), err,
                errlen);
}

static int do_coordinator(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                          int argc, char *err, size_t errlen) {
  long id;
  (void)m, (void)argc;
  if (parse_num(argv[1], &id) < 0)
    return bad_word("broker id", argv[1], err, errlen);
  return report(
      rd_kafka_mock_coordinator_set(mc, "group", argv[0], (int32_t)id), err,
      errlen);
}

static int do_leader(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                     int argc, char *err, size_t errlen) {
  long part, id;
  (void)m, (void)argc;
  if (parse_num(argv[1], &part) < 0)
    return bad_word("partition", argv[1], err, errlen);
  if (parse_num(argv[2], &id) < 0)
    return bad_word("broker id", argv[2], err, errlen);
  return report(rd_kafka_mock_partition_set_leader(mc, argv[0], (int32_t)part,
                                                   (int32_t)id),
                err, errlen);
}

static int do_topic_error(rd_kafka_mock_cluster_t *mc, mock_t *m, char **argv,
                          int argc, char *err, size_t errlen) {
  rd_kafka_resp_err_t code;
  (void)m, (void)argc;
  if (parse_code(argv[1], &code) < 0)
    return bad_word("librdkafka error code", argv[1], err, errlen);
  rd_kafka_mock_topic_set_error(mc, argv[0], code);
  return 0;
}

static const cmd_t commands[] = {
    {"topic", 2, do_topic},
    {"push_errors", 2, do_push_errors},
    {"clear_errors", 1, do_clear_errors},
    {"broker_errors", 3, do_broker_errors},
    {"errors_left", 2, do_errors_left},
    {"broker_down", 1, do_broker_down},
    {"broker_up", 1, do_broker_up},
    {"rtt", 2, do_rtt},
    {"coordinator", 2, do_coordinator},
    {"leader", 3, do_leader},
    {"topic_error", 2, do_topic_error},
};

/* Split line into at most MAX_ARGS words (in place); returns the count. */
static int split(char *line, char **words) {
  int n = 0;
  for (char *save = NULL, *w = strtok_r(line, " \t\r\n", &save);
       w && n < MAX_ARGS; w = strtok_r(NULL, " \t\r\n", &save))
    words[n++] = w;
  return n;
}

/* Run one command line; 1 when it was "quit". */
static int serve_line(mock_t *m, char *line) {
  char *words[MAX_ARGS], err[512] = "";
  int n = split(line, words), rc = -1;
  if (n == 0)
    return 0;
  if (strcmp(words[0], "quit") == 0) {
    printf("ok\n");
    return 1;
  }
  const cmd_t *c = NULL;
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (strcmp(commands[i].name, words[0]) == 0)
      c = &commands[i];
  if (!c)
    snprintf(err, sizeof(err), "%s: unknown command", words[0]);
  else if (n - 1 < c->min_args)
    snprintf(err, sizeof(err), "%s: needs %d argument(s)", c->name,
             c->min_args);
  else
    rc = c->run(mock_cluster(m), m, words + 1, n - 1, err, sizeof(err));
  if (rc == 0 && err[0])
    printf("ok %s\n", err);
  else if (rc == 0)
    printf("ok\n");
  else
    printf("error %s\n", err);
  return 0;
}

int main(int argc, char **argv) {
  char err[512], line[4096];
  long brokers = 3;
  mock_t *m = NULL;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
    return 1;
  if (argc > 2 || (argc == 2 && (parse_num(argv[1], &brokers) < 0 ||
                                 brokers < 1 || brokers > MAX_BROKERS))) {
    fprintf(stderr, "usage: mockd [BROKERS (1-16)]\n");
    return 2;
  }
  if (mock_start(&m, (int)brokers, err, sizeof(err)) != 0) {
    fprintf(stderr, "mockd: %s\n", err);
    return 1;
  }
  printf("%s\n", mock_bootstraps(m));
  fflush(stdout);
  while (fgets(line, sizeof(line), stdin)) {
    int quit = serve_line(m, line);
    fflush(stdout);
    if (quit)
      break;
  }
  mock_stop(m);
  return 0;
}
