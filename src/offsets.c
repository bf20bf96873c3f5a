/*
 * Consumer-group offsets and lag. See offsets.h.
 *
 * Committed offsets are read with a consumer handle whose group.id is the
 * group in question but which never subscribes: it asks the group
 * coordinator (OffsetFetch) without joining, so a running group is not
 * disturbed.
 */
#include "offsets.h"

#include <glib.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "kafka_client.h"
#include "log.h"
#include "topics.h"

/* How long one metadata, watermark or group query may take. */
#define OFFS_TIMEOUT_MS 15000
/* The group of the query handle: it never joins nor commits. */
#define OFFS_QUERY_GROUP "khost-admin-query"

struct offs_client {
  const cfg_t *cfg;
  const cfg_pipeline_t *pc;
  rd_kafka_t *rk;
  const struct rd_kafka_metadata *md; /* every topic; read once */
};

/* A consumer handle of group that never subscribes. */
static rd_kafka_t *query_handle(const offs_client_t *c, const char *group,
                                char *err, size_t errlen) {
  char why[512];
  kafka_settings_t ks = {.cfg = c->cfg, .pc = c->pc};
  rd_kafka_conf_t *conf = kafka_conf_new(&ks, KAFKA_ADMIN, err, errlen);
  if (!conf)
    return NULL;
  if (kafka_conf_group_reader(conf, group, why, sizeof(why)) ||
      kafka_conf_set(conf, "enable.partition.eof", "true", why, sizeof(why))) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "kafka client: %s", why);
    return NULL;
  }
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_CONSUMER, conf, "kafka", NULL, why, sizeof(why));
  if (!rk) {
    snprintf(err, errlen, "kafka client: %s", why);
    return NULL;
  }
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

int offs_client_open(offs_client_t **out, const cfg_t *cfg,
                     const cfg_pipeline_t *pc, char *err, size_t errlen) {
  offs_client_t *c = NULL;
  *out = NULL;
  if (cfg->mock_brokers > 0) {
    snprintf(err, errlen,
             "%s: the config runs the embedded mock cluster (mock = {...}), "
             "which exists only while `khost run` runs: there is nothing to "
             "inspect; set kafka.bootstrap_servers to a broker instead",
             cfg->path);
    return HOST_EXIT_CONFIG;
  }
  c = calloc(1, sizeof(*c));
  c->cfg = cfg;
  c->pc = pc;
  c->rk = query_handle(c, OFFS_QUERY_GROUP, err, errlen);
  if (!c->rk) {
    free(c);
    return HOST_EXIT_CONFIG;
  }
  *out = c;
  return HOST_EXIT_OK;
}

void offs_client_close(offs_client_t *c) {
  if (!c)
    return;
  if (c->md)
    rd_kafka_metadata_destroy(c->md);
  kafka_destroy(c->rk);
  free(c);
}

rd_kafka_t *offs_client_handle(offs_client_t *c) {
  return c->rk;
}

/* Metadata of every topic. A request for one topic by name could create
 * it on a broker that auto-creates topics (the mock cluster does). */
static int metadata(offs_client_t *c, char *err, size_t errlen) {
  if (c->md)
    return HOST_EXIT_OK;
  rd_kafka_resp_err_t e =
      rd_kafka_metadata(c->rk, 1, NULL, &c->md, OFFS_TIMEOUT_MS);
  if (e) {
    c->md = NULL;
    snprintf(err, errlen, "cannot read the cluster's metadata: %s",
             rd_kafka_err2str(e));
    return HOST_EXIT_RUNTIME;
  }
  return HOST_EXIT_OK;
}

int offs_topic_partitions(offs_client_t *c, const char *entry,
                          rd_kafka_topic_partition_list_t *list, char *err,
                          size_t errlen) {
  int rc = metadata(c, err, errlen);
  if (rc != HOST_EXIT_OK)
    return rc;
  rd_kafka_resp_err_t e = topics_expand(c->md, entry, list, err, errlen);
  if (!e)
    return HOST_EXIT_OK;
  return e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                 e == RD_KAFKA_RESP_ERR__INVALID_ARG
             ? HOST_EXIT_CONFIG
             : HOST_EXIT_RUNTIME;
}

int offs_watermarks(offs_client_t *c, const char *topic, int32_t partition,
                    int64_t *start, int64_t *end, char *err, size_t errlen) {
  rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
      c->rk, topic, partition, start, end, OFFS_TIMEOUT_MS);
  if (e) {
    snprintf(err, errlen, "%s [%" PRId32 "]: cannot read the log offsets: %s",
             topic, partition, rd_kafka_err2str(e));
    return HOST_EXIT_RUNTIME;
  }
  return HOST_EXIT_OK;
}

int offs_committed(offs_client_t *c, const char *group,
                   rd_kafka_topic_partition_list_t *list, char *err,
                   size_t errlen) {
  rd_kafka_t *rk = query_handle(c, group, err, errlen);
  if (!rk)
    return HOST_EXIT_CONFIG;
  int rc = HOST_EXIT_OK;
  rd_kafka_resp_err_t e = rd_kafka_committed(rk, list, OFFS_TIMEOUT_MS);
  for (int i = 0; !e && i < list->cnt; i++) {
    rd_kafka_topic_partition_t *tp = &list->elems[i];
    if (tp->err)
      e = tp->err;
    else if (tp->offset < 0)
      tp->offset = OFFS_NONE; /* RD_KAFKA_OFFSET_INVALID: none committed */
  }
  if (e) {
    snprintf(err, errlen, "group %s: cannot read the committed offsets: %s",
             group, rd_kafka_err2str(e));
    rc = HOST_EXIT_RUNTIME;
  }
  kafka_destroy(rk);
  return rc;
}

/* ------------------------------------------------------------- groups */

/* Big-endian reader over a member assignment. */
typedef struct rd {
  const uint8_t *p, *end;
  int bad;
} rd_t;

static int64_t rd_int(rd_t *r, int bytes) {
  int64_t v = 0;
  if (r->bad || r->end - r->p < bytes) {
    r->bad = 1;
    return 0;
  }
  for (int i = 0; i < bytes; i++)
    v = v << 8 | r->p[i];
  r->p += bytes;
  /* sign-extend: counts of -1 mean null arrays */
  return bytes == 2 ? (int16_t)v : bytes == 4 ? (int32_t)v : v;
}

/* ConsumerProtocolAssignment: version int16, [topic string, [partition
 * int32]], user_data bytes (ignored). */
int offs_parse_assignment(const void *buf, size_t len,
                          rd_kafka_topic_partition_list_t **out) {
  rd_t r = {buf, (const uint8_t *)buf + len, 0};
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
  char topic[256];
  if (rd_int(&r, 2) < 0)
    r.bad = 1;
  int64_t topics = rd_int(&r, 4);
  for (int64_t t = 0; !r.bad && t < topics; t++) {
    int64_t n = rd_int(&r, 2);
    if (r.bad || n < 0 || n >= (int64_t)sizeof(topic) || r.end - r.p < n) {
      r.bad = 1;
      break;
    }
    memcpy(topic, r.p, (size_t)n);
    topic[n] = '\0';
    r.p += n;
    int64_t parts = rd_int(&r, 4);
    for (int64_t i = 0; !r.bad && i < parts; i++) {
      int32_t part = (int32_t)rd_int(&r, 4);
      if (!r.bad)
        rd_kafka_topic_partition_list_add(l, topic, part);
    }
  }
  if (r.bad) {
    rd_kafka_topic_partition_list_destroy(l);
    l = NULL;
  }
  *out = l;
  return l ? 0 : -1;
}

static void member_from(offs_member_t *m,
                        const struct rd_kafka_group_member_info *mi) {
  const char *host = mi->client_host ? mi->client_host : "";
  if (*host == '/')
    host++; /* brokers print the address as "/127.0.0.1" */
  m->name = g_strdup_printf("%s@%s", mi->client_id ? mi->client_id : "", host);
  if (!mi->member_assignment ||
      offs_parse_assignment(mi->member_assignment,
                            (size_t)mi->member_assignment_size,
                            &m->assigned) != 0)
    m->assigned = rd_kafka_topic_partition_list_new(0);
}

int offs_describe_group(offs_client_t *c, const char *group, offs_group_t *g,
                        char *err, size_t errlen) {
  const struct rd_kafka_group_list *gl = NULL;
  memset(g, 0, sizeof(*g));
  rd_kafka_resp_err_t e =
      rd_kafka_list_groups(c->rk, group, &gl, OFFS_TIMEOUT_MS);
  if (e == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE)
    return HOST_EXIT_OK; /* not described: members unknown */
  if (!e && gl->group_cnt == 1 && gl->groups[0].err)
    e = gl->groups[0].err;
  if (e) {
    snprintf(err, errlen, "group %s: cannot describe it: %s", group,
             rd_kafka_err2str(e));
    if (gl)
      rd_kafka_group_list_destroy(gl);
    return HOST_EXIT_RUNTIME;
  }
  g->described = 1;
  g->state = g_strdup(gl->group_cnt == 1 ? gl->groups[0].state : "Dead");
  if (gl->group_cnt == 1 && gl->groups[0].member_cnt > 0) {
    const struct rd_kafka_group_info *gi = &gl->groups[0];
    g->members = calloc((size_t)gi->member_cnt, sizeof(*g->members));
    g->n_members = gi->member_cnt;
    for (int i = 0; i < gi->member_cnt; i++)
      member_from(&g->members[i], &gi->members[i]);
  }
  rd_kafka_group_list_destroy(gl);
  return HOST_EXIT_OK;
}

void offs_group_free(offs_group_t *g) {
  for (int i = 0; i < g->n_members; i++) {
    g_free(g->members[i].name);
    rd_kafka_topic_partition_list_destroy(g->members[i].assigned);
  }
  free(g->members);
  g_free(g->state);
  memset(g, 0, sizeof(*g));
}

const char *offs_group_owner(const offs_group_t *g, const char *topic,
                             int32_t partition) {
  for (int i = 0; i < g->n_members; i++)
    if (rd_kafka_topic_partition_list_find(g->members[i].assigned, topic,
                                           partition))
      return g->members[i].name;
  return NULL;
}

int offs_group_active(const offs_group_t *g) {
  return g->described && g->n_members > 0;
}

/* ------------------------------------------------------------- report */

/* Where a group without a committed offset starts: 1 at the log start,
 * 0 at the end, -1 when the pipeline makes that an error. */
static int reset_to_start(const cfg_t *cfg, const cfg_pipeline_t *pc) {
  const cfg_prop_t *p =
      cfg_prop_find(pc->kafka, pc->n_kafka, "auto.offset.reset");
  if (!p)
    p = cfg_prop_find(cfg->kafka, cfg->n_kafka, "auto.offset.reset");
  if (!p || strcmp(p->value, "earliest") == 0 ||
      strcmp(p->value, "smallest") == 0 || strcmp(p->value, "beginning") == 0)
    return 1;
  return strcmp(p->value, "error") == 0 ? -1 : 0;
}

static int64_t lag_of(int64_t committed, int64_t start, int64_t end,
                      int reset) {
  /* No offset, or one the log no longer holds: auto.offset.reset. */
  if (committed == OFFS_NONE || committed < start)
    return reset < 0 ? OFFS_NONE : reset ? end - start : 0;
  return committed < end ? end - committed : 0;
}

static void add_note(offs_report_t *r, const char *fmt, ...) KHOST_PRINTF(2, 3);

static void add_note(offs_report_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  r->notes = realloc(r->notes, (r->n_notes + 1) * sizeof(*r->notes));
  r->notes[r->n_notes++] = g_strdup_vprintf(fmt, ap);
  va_end(ap);
}

/* The pipeline's partitions (topics missing from the cluster, patterns
 * matching none, are noted and left out). */
static int list_partitions(offs_report_t *r, offs_client_t *c,
                           const cfg_pipeline_t *pc,
                           rd_kafka_topic_partition_list_t *list, char *err,
                           size_t errlen) {
  for (size_t t = 0; t < pc->n_topics; t++) {
    int rc = offs_topic_partitions(c, pc->topics[t], list, err, errlen);
    if (rc == HOST_EXIT_CONFIG)
      add_note(r, "pipeline %s: %s", pc->name, err);
    else if (rc != HOST_EXIT_OK)
      return rc;
  }
  return HOST_EXIT_OK;
}

static void add_row(offs_report_t *r, const cfg_pipeline_t *pc,
                    const rd_kafka_topic_partition_t *tp, int64_t start,
                    int64_t end, int reset, const offs_group_t *g) {
  const char *owner = offs_group_owner(g, tp->topic, tp->partition);
  r->rows = realloc(r->rows, (r->n + 1) * sizeof(*r->rows));
  r->rows[r->n++] = (offs_row_t){
      .group = g_strdup(pc->group_id),
      .topic = g_strdup(tp->topic),
      .partition = tp->partition,
      .committed = tp->offset,
      .start = start,
      .end = end,
      .lag = lag_of(tp->offset, start, end, reset),
      .member = owner ? g_strdup(owner) : NULL,
      .member_known = g->described,
  };
}

int offs_gather(offs_report_t *r, const cfg_t *cfg, const cfg_pipeline_t *pc,
                char *err, size_t errlen) {
  offs_client_t *c = NULL;
  offs_group_t g = {0};
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(8);
  int rc = offs_client_open(&c, cfg, pc, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = list_partitions(r, c, pc, list, err, errlen);
  if (rc == HOST_EXIT_OK && list->cnt > 0)
    rc = offs_committed(c, pc->group_id, list, err, errlen);
  /* Members are extra: a group the broker will not describe (ACLs, an
   * old broker) still gets its offsets. */
  if (rc == HOST_EXIT_OK &&
      offs_describe_group(c, pc->group_id, &g, err, errlen) != HOST_EXIT_OK)
    add_note(r, "%s: members unknown", err);
  else if (rc == HOST_EXIT_OK && !g.described)
    add_note(r,
             "group %s: the broker does not describe groups "
             "(DescribeGroups): members unknown",
             pc->group_id);
  int reset = reset_to_start(cfg, pc);
  for (int i = 0; rc == HOST_EXIT_OK && i < list->cnt; i++) {
    int64_t start, end;
    const rd_kafka_topic_partition_t *tp = &list->elems[i];
    rc =
        offs_watermarks(c, tp->topic, tp->partition, &start, &end, err, errlen);
    if (rc == HOST_EXIT_OK)
      add_row(r, pc, tp, start, end, reset, &g);
  }
  offs_group_free(&g);
  rd_kafka_topic_partition_list_destroy(list);
  offs_client_close(c);
  return rc;
}

void offs_report_free(offs_report_t *r) {
  for (size_t i = 0; i < r->n; i++) {
    g_free(r->rows[i].group);
    g_free(r->rows[i].topic);
    g_free(r->rows[i].member);
  }
  for (size_t i = 0; i < r->n_notes; i++)
    g_free(r->notes[i]);
  free(r->rows);
  free(r->notes);
  memset(r, 0, sizeof(*r));
}
