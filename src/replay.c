/*
 * `khost replay`: plan (resolve the new offsets) and apply (commit them
 * with the admin API, or as the group's only member where the broker
 * wants that; record the replayed ranges). See replay.h.
 */
#include "replay.h"

#include <ctype.h>
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "host.h"
#include "kafka_client.h"
#include "log.h"
#include "offsets.h"
#include "replay_store.h"
#include "timefmt.h"
#include "topics.h"

/* Default wait for this replay's membership of the group: the broker
 * delays a first join (3 s by default) and any rebalance. */
#define REPLAY_JOIN_TIMEOUT_MS 60000
/* How long reading a partition for timestamps may take. */
#define REPLAY_SCAN_TIMEOUT_MS 60000
#define REPLAY_QUERY_TIMEOUT_MS 15000
/* alter_offsets(): the broker wants the commit from a member. */
#define REPLAY_JOIN 100

struct replay_plan {
  const cfg_t *cfg;
  const cfg_pipeline_t *pc;
  char *group; /* the group whose offsets move */
  char *from;  /* as given */
  replay_from_t pos;
  int dedup_mode;
  int64_t join_timeout_ms;
  offs_client_t *client;
  replay_part_t *parts;
  size_t n;
};

/* ------------------------------------------------------------- --from */

static int all_digits(const char *s) {
  if (!*s)
    return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s))
      return 0;
  return 1;
}

/* An ISO-8601 time that names its timezone, in ms since the epoch. */
static int parse_time(const char *s, int64_t *ms) {
  GDateTime *dt = g_date_time_new_from_iso8601(s, NULL);
  if (!dt)
    return -1;
  *ms = g_date_time_to_unix(dt) * 1000 + g_date_time_get_microsecond(dt) / 1000;
  g_date_time_unref(dt);
  return 0;
}

/* "-1h", "-30m", "-2d": a duration with its unit, back from now. */
static int parse_ago(const char *s, int64_t now_ms, int64_t *ms) {
  int64_t d;
  size_t n = strlen(s);
  if (n < 3 || s[0] != '-' || !isalpha((unsigned char)s[n - 1]) ||
      cfg_parse_duration(s + 1, &d) != 0 || d <= 0)
    return -1;
  *ms = now_ms - d;
  return 0;
}

int replay_parse_shift(const char *s, replay_from_t *out, char *err,
                       size_t errlen) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || errno) {
    snprintf(err, errlen,
             "--shift-by %s: not a number of offsets (e.g. -100 to go back, "
             "50 to skip ahead)",
             s);
    return -1;
  }
  *out = (replay_from_t){REPLAY_FROM_SHIFT, v};
  return 0;
}

int replay_parse_from(const char *s, int64_t now_ms, replay_from_t *out,
                      char *err, size_t errlen) {
  char now[64];
  if (parse_ago(s, now_ms, &out->value) == 0) {
    out->kind = REPLAY_FROM_TIME;
  } else if (strcmp(s, "earliest") == 0) {
    *out = (replay_from_t){REPLAY_FROM_EARLIEST, 0};
  } else if (strcmp(s, "latest") == 0) {
    *out = (replay_from_t){REPLAY_FROM_LATEST, 0};
  } else if (all_digits(s)) {
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno) {
      snprintf(err, errlen, "--from %s: offset out of range", s);
      return -1;
    }
    *out = (replay_from_t){REPLAY_FROM_OFFSET, v};
  } else if (parse_time(s, &out->value) == 0) {
    out->kind = REPLAY_FROM_TIME;
    if (out->value > now_ms) {
      timefmt_utc_ms(now_ms, now, sizeof(now));
      snprintf(err, errlen, "--from %s: that time is in the future (now is %s)",
               s, now);
      return -1;
    }
  } else {
    snprintf(err, errlen,
             "--from %s: not earliest, latest, an offset, an ISO-8601 time "
             "with a timezone (e.g. 2026-03-01T08:00:00Z, "
             "2026-03-01T17:00:00.250+09:00) or a time back from now "
             "(-1h, -30m, -2d)",
             s);
    return -1;
  }
  return 0;
}

/* --------------------------------------------------------- selection */

static const cfg_pipeline_t *find_pipeline(const cfg_t *cfg, const char *name,
                                           char *err, size_t errlen) {
  GString *names = g_string_new(NULL);
  for (size_t i = 0; i < cfg->n_pipelines; i++) {
    if (strcmp(cfg->pipelines[i].name, name) == 0) {
      g_string_free(names, TRUE);
      return &cfg->pipelines[i];
    }
    g_string_append_printf(names, "%s%s", i ? ", " : "",
                           cfg->pipelines[i].name);
  }
  snprintf(err, errlen, "%s: no pipeline named \"%s\" (pipelines: %s)",
           cfg->path, name, names->str);
  g_string_free(names, TRUE);
  return NULL;
}

/* --topic T: one of the pipeline's topics or patterns, or a topic one of
 * its patterns matches. */
static int pipeline_has_topic(const cfg_pipeline_t *pc, const char *topic) {
  for (size_t i = 0; i < pc->n_topics; i++)
    if (strcmp(pc->topics[i], topic) == 0 || topics_names(pc->topics[i], topic))
      return 1;
  return 0;
}

static int has_part(const replay_plan_t *p, const char *topic,
                    int32_t partition) {
  for (size_t i = 0; i < p->n; i++)
    if (p->parts[i].partition == partition &&
        strcmp(p->parts[i].topic, topic) == 0)
      return 1;
  return 0;
}

static void add_part(replay_plan_t *p, const char *topic, int32_t partition) {
  p->parts = realloc(p->parts, (p->n + 1) * sizeof(*p->parts));
  p->parts[p->n++] = (replay_part_t){.topic = g_strdup(topic),
                                     .partition = partition,
                                     .committed = OFFS_NONE,
                                     .handled_before = OFFS_NONE};
}

/* The partitions of entry (a topic or a pattern) that the options
 * select. */
static int select_topic(replay_plan_t *p, const char *entry,
                        const replay_opts_t *o, char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
  int found = 0;
  int rc = offs_topic_partitions(p->client, entry, l, err, errlen);
  for (int i = 0; rc == HOST_EXIT_OK && i < l->cnt; i++)
    if (o->partition < 0 || l->elems[i].partition == o->partition) {
      if (!has_part(p, l->elems[i].topic, l->elems[i].partition))
        add_part(p, l->elems[i].topic, l->elems[i].partition);
      found = 1;
    }
  if (rc == HOST_EXIT_OK && !found && o->partition >= 0) {
    snprintf(err, errlen, "topic %s has no partition %" PRId32 " (it has %d)",
             entry, o->partition, l->cnt);
    rc = HOST_EXIT_CONFIG;
  }
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

static int select_parts(replay_plan_t *p, const replay_opts_t *o, char *err,
                        size_t errlen) {
  const cfg_pipeline_t *pc = p->pc;
  if (o->topic && !pipeline_has_topic(pc, o->topic)) {
    snprintf(err, errlen,
             "topic %s is not a topic of pipeline %s, nor matched by one of "
             "its patterns",
             o->topic, pc->name);
    return HOST_EXIT_CONFIG;
  }
  if (!o->topic && o->partition >= 0 && pc->n_topics != 1) {
    snprintf(err, errlen,
             "--partition needs --topic: pipeline %s has %zu topics", pc->name,
             pc->n_topics);
    return HOST_EXIT_CONFIG;
  }
  if (!o->topic && o->partition >= 0 && topics_is_pattern(pc->topics[0])) {
    snprintf(err, errlen,
             "--partition needs --topic: pipeline %s subscribes to the "
             "pattern %s",
             pc->name, pc->topics[0]);
    return HOST_EXIT_CONFIG;
  }
  if (o->topic)
    return select_topic(p, o->topic, o, err, errlen);
  for (size_t t = 0; t < pc->n_topics; t++) {
    int rc = select_topic(p, pc->topics[t], o, err, errlen);
    if (rc != HOST_EXIT_OK)
      return rc;
  }
  return HOST_EXIT_OK;
}

/* --------------------------------------------------------- positions */

/* The committed offsets of group for every selected partition, into
 * handled_before when group is the pipeline's own, else into committed. */
static int read_committed(replay_plan_t *p, const char *group, int own,
                          char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)p->n);
  for (size_t i = 0; i < p->n; i++)
    rd_kafka_topic_partition_list_add(l, p->parts[i].topic,
                                      p->parts[i].partition);
  int rc = offs_committed(p->client, group, l, err, errlen);
  for (size_t i = 0; rc == HOST_EXIT_OK && i < p->n; i++)
    *(own ? &p->parts[i].handled_before : &p->parts[i].committed) =
        l->elems[i].offset;
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

static int read_logs(replay_plan_t *p, char *err, size_t errlen) {
  int rc = HOST_EXIT_OK;
  for (size_t i = 0; rc == HOST_EXIT_OK && i < p->n; i++)
    rc = offs_watermarks(p->client, p->parts[i].topic, p->parts[i].partition,
                         &p->parts[i].start, &p->parts[i].end, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = read_committed(p, p->group, 0, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = read_committed(p, p->pc->group_id, 1, err, errlen);
  return rc;
}

/* The first offset in [from, to) of a record stamped at or after t_ms, or
 * `to`, by reading the partition. */
static int scan_for_time(replay_plan_t *p, const replay_part_t *rp,
                         int64_t from, int64_t t_ms, int64_t *found, char *err,
                         size_t errlen) {
  rd_kafka_t *rk = offs_client_handle(p->client);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, rp->topic, rp->partition)->offset = from;
  int64_t deadline = g_get_monotonic_time() / 1000 + REPLAY_SCAN_TIMEOUT_MS;
  int rc = HOST_EXIT_RUNTIME;
  *found = rp->end;
  rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
  while (!e && g_get_monotonic_time() / 1000 < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m)
      continue;
    rd_kafka_timestamp_type_t tt;
    int64_t off = m->offset, ts = rd_kafka_message_timestamp(m, &tt);
    int eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
    e = eof ? RD_KAFKA_RESP_ERR_NO_ERROR : m->err;
    rd_kafka_message_destroy(m);
    if (e || eof || ts >= t_ms || off + 1 >= rp->end) {
      if (!e && !eof && ts >= t_ms)
        *found = off;
      rc = e ? HOST_EXIT_RUNTIME : HOST_EXIT_OK;
      break;
    }
  }
  if (rc != HOST_EXIT_OK)
    snprintf(err, errlen,
             "%s [%" PRId32 "]: cannot read records for their timestamps: %s",
             rp->topic, rp->partition, e ? rd_kafka_err2str(e) : "timed out");
  rd_kafka_assign(rk, NULL);
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

/* The broker answered "no record at or after t" (-1). A broker that
 * cannot look up by time (the mock cluster) answers that too: when the
 * last record says otherwise, find the offset by reading. */
static int time_at_end(replay_plan_t *p, replay_part_t *rp, int64_t t_ms,
                       char *err, size_t errlen) {
  int64_t last;
  rp->target = rp->end;
  if (rp->end <= rp->start)
    return HOST_EXIT_OK;
  int rc = scan_for_time(p, rp, rp->end - 1, t_ms, &last, err, errlen);
  if (rc != HOST_EXIT_OK || last == rp->end)
    return rc; /* the last record is older than t: the broker was right */
  return scan_for_time(p, rp, rp->start, t_ms, &rp->target, err, errlen);
}

static int resolve_times(replay_plan_t *p, int64_t t_ms, char *err,
                         size_t errlen) {
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)p->n);
  for (size_t i = 0; i < p->n; i++)
    rd_kafka_topic_partition_list_add(l, p->parts[i].topic,
                                      p->parts[i].partition)
        ->offset = t_ms;
  rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(
      offs_client_handle(p->client), l, REPLAY_QUERY_TIMEOUT_MS);
  int rc = e ? HOST_EXIT_RUNTIME : HOST_EXIT_OK;
  if (e)
    snprintf(err, errlen, "cannot look up offsets by time: %s",
             rd_kafka_err2str(e));
  for (size_t i = 0; rc == HOST_EXIT_OK && i < p->n; i++) {
    replay_part_t *rp = &p->parts[i];
    int64_t off = l->elems[i].offset;
    if (l->elems[i].err) {
      snprintf(err, errlen, "%s [%" PRId32 "]: cannot look up by time: %s",
               rp->topic, rp->partition, rd_kafka_err2str(l->elems[i].err));
      rc = HOST_EXIT_RUNTIME;
    } else if (off < 0) {
      rc = time_at_end(p, rp, t_ms, err, errlen);
    } else {
      rp->target = off < rp->start ? rp->start : off > rp->end ? rp->end : off;
    }
  }
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

/* Each committed offset moved by the shift, within the log. */
static int resolve_shift(replay_plan_t *p, int64_t by, char *err,
                         size_t errlen) {
  for (size_t i = 0; i < p->n; i++) {
    replay_part_t *rp = &p->parts[i];
    if (rp->committed < 0) {
      snprintf(err, errlen,
               "--shift-by %" PRId64 ": group %s has no committed offset on "
               "%s [%" PRId32 "] to move: give --from instead",
               by, p->group, rp->topic, rp->partition);
      return HOST_EXIT_CONFIG;
    }
    int64_t t = rp->committed + by;
    rp->target = t < rp->start ? rp->start : t > rp->end ? rp->end : t;
  }
  return HOST_EXIT_OK;
}

static int resolve_targets(replay_plan_t *p, char *err, size_t errlen) {
  if (p->pos.kind == REPLAY_FROM_TIME)
    return resolve_times(p, p->pos.value, err, errlen);
  if (p->pos.kind == REPLAY_FROM_SHIFT)
    return resolve_shift(p, p->pos.value, err, errlen);
  for (size_t i = 0; i < p->n; i++) {
    replay_part_t *rp = &p->parts[i];
    if (p->pos.kind == REPLAY_FROM_EARLIEST)
      rp->target = rp->start;
    else if (p->pos.kind == REPLAY_FROM_LATEST)
      rp->target = rp->end;
    else if (p->pos.value < rp->start || p->pos.value > rp->end) {
      snprintf(err, errlen,
               "--from %" PRId64 ": %s [%" PRId32 "] holds offsets %" PRId64
               " to %" PRId64 " (the end): that offset is outside the log",
               p->pos.value, rp->topic, rp->partition, rp->start, rp->end);
      return HOST_EXIT_CONFIG;
    } else
      rp->target = p->pos.value;
  }
  return HOST_EXIT_OK;
}

int replay_plan(replay_plan_t **out, const cfg_t *cfg, const replay_opts_t *o,
                char *err, size_t errlen) {
  replay_plan_t *p = calloc(1, sizeof(*p));
  int rc = HOST_EXIT_CONFIG;
  p->cfg = cfg;
  p->dedup_mode = o->dedup_mode;
  p->from = g_strdup(o->from);
  p->join_timeout_ms =
      o->join_timeout_ms > 0 ? o->join_timeout_ms : REPLAY_JOIN_TIMEOUT_MS;
  p->pc = find_pipeline(cfg, o->pipeline, err, errlen);
  if (!p->pc ||
      (o->shift_by ? replay_parse_shift(o->shift_by, &p->pos, err, errlen)
                   : replay_parse_from(o->from, dedup_now_ms(), &p->pos, err,
                                       errlen)) != 0)
    goto out;
  p->group = g_strdup(o->group ? o->group : p->pc->group_id);
  rc = offs_client_open(&p->client, cfg, p->pc, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = select_parts(p, o, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = read_logs(p, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = resolve_targets(p, err, errlen);
out:
  if (rc != HOST_EXIT_OK) {
    replay_free(p);
    p = NULL;
  }
  *out = p;
  return rc;
}

void replay_free(replay_plan_t *p) {
  if (!p)
    return;
  for (size_t i = 0; i < p->n; i++)
    g_free(p->parts[i].topic);
  free(p->parts);
  offs_client_close(p->client);
  g_free(p->group);
  g_free(p->from);
  free(p);
}

const cfg_pipeline_t *replay_pipeline(const replay_plan_t *p) {
  return p->pc;
}

const char *replay_group(const replay_plan_t *p) {
  return p->group;
}

size_t replay_part_count(const replay_plan_t *p) {
  return p->n;
}

const replay_part_t *replay_part(const replay_plan_t *p, size_t i) {
  return &p->parts[i];
}

int64_t replay_part_replayed(const replay_plan_t *p, const replay_part_t *rp) {
  int64_t upto = rp->handled_before;
  return upto != OFFS_NONE && rp->target < upto ? upto - rp->target : 0;
}

/* ------------------------------------------------------------- apply */

/* This replay as a member of the group. */
typedef struct probe {
  rd_kafka_topic_partition_list_t *owned;
  int assigned;             /* a first assignment arrived */
  rd_kafka_resp_err_t fail; /* the group would not have us */
} probe_t;

/* Take (assign) or give back parts, as the group's protocol wants. */
static void probe_apply(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                        int assign) {
  rd_kafka_error_t *e = NULL;
  if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
    e = assign ? rd_kafka_incremental_assign(rk, parts)
               : rd_kafka_incremental_unassign(rk, parts);
  else
    rd_kafka_assign(rk, assign ? parts : NULL);
  if (e)
    rd_kafka_error_destroy(e);
}

static void probe_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts,
                            void *opaque) {
  probe_t *pr = kafka_ctx(opaque);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    probe_apply(rk, parts, 1);
    rd_kafka_pause_partitions(rk, parts); /* the replay reads nothing */
    for (int i = 0; i < parts->cnt; i++)
      rd_kafka_topic_partition_list_add(pr->owned, parts->elems[i].topic,
                                        parts->elems[i].partition);
    pr->assigned = 1;
  } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    probe_apply(rk, parts, 0);
    for (int i = 0; i < parts->cnt; i++)
      rd_kafka_topic_partition_list_del(pr->owned, parts->elems[i].topic,
                                        parts->elems[i].partition);
  } else {
    rd_kafka_assign(rk, NULL);
    pr->fail = err;
  }
}

static void member_list(GString *s, const offs_group_t *g) {
  for (int i = 0; i < g->n_members; i++)
    g_string_append_printf(s, "%s%s", i ? ", " : "", g->members[i].name);
}

/* A broker that describes groups tells who is a member: refuse without
 * joining (which would make them rebalance). */
static int refuse_if_described_active(replay_plan_t *p, char *err,
                                      size_t errlen) {
  offs_group_t g;
  int rc = offs_describe_group(p->client, p->group, &g, err, errlen);
  if (rc == HOST_EXIT_OK && offs_group_active(&g)) {
    GString *who = g_string_new(NULL);
    member_list(who, &g);
    snprintf(err, errlen,
             "group %s has %d active member(s) (%s, state %s): stop them "
             "first (a replay must not race a running khost), or replay "
             "into a new group with --group NEW",
             p->group, g.n_members, who->str, g.state);
    g_string_free(who, TRUE);
    rc = HOST_EXIT_RUNTIME;
  }
  offs_group_free(&g);
  return rc;
}

/* The distinct topics of the plan, for the subscription. */
static rd_kafka_topic_partition_list_t *plan_topics(const replay_plan_t *p) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  for (size_t i = 0; i < p->n; i++)
    if (!rd_kafka_topic_partition_list_find(l, p->parts[i].topic,
                                            RD_KAFKA_PARTITION_UA))
      rd_kafka_topic_partition_list_add(l, p->parts[i].topic,
                                        RD_KAFKA_PARTITION_UA);
  return l;
}

static rd_kafka_t *probe_new(replay_plan_t *p, probe_t *pr, char *err,
                             size_t errlen) {
  char why[512];
  kafka_settings_t ks = {.cfg = p->cfg, .pc = p->pc};
  rd_kafka_conf_t *conf = kafka_conf_new(&ks, KAFKA_ADMIN, err, errlen);
  if (!conf)
    return NULL;
  /* It joins the group; only commit_both() commits, by hand. */
  if (kafka_conf_set(conf, "group.id", p->group, why, sizeof(why)) ||
      kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why)) ||
      kafka_conf_set(conf, "enable.auto.offset.store", "false", why,
                     sizeof(why))) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "kafka client: %s", why);
    return NULL;
  }
  rd_kafka_conf_set_rebalance_cb(conf, probe_rebalance);
  rd_kafka_t *rk =
      kafka_new(RD_KAFKA_CONSUMER, conf, "kafka", pr, why, sizeof(why));
  if (!rk) {
    snprintf(err, errlen, "kafka client: %s", why);
    return NULL;
  }
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

/* Poll until the group has given this replay its first assignment. */
static int await_assignment(replay_plan_t *p, rd_kafka_t *rk, probe_t *pr,
                            char *err, size_t errlen) {
  int64_t deadline = g_get_monotonic_time() / 1000 + p->join_timeout_ms;
  while (!pr->assigned && !pr->fail &&
         g_get_monotonic_time() / 1000 < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m)
      continue;
    if (m->err == RD_KAFKA_RESP_ERR_INCONSISTENT_GROUP_PROTOCOL ||
        m->err == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED ||
        m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
      pr->fail = m->err;
    rd_kafka_message_destroy(m);
  }
  if (pr->fail == RD_KAFKA_RESP_ERR_INCONSISTENT_GROUP_PROTOCOL) {
    snprintf(err, errlen,
             "group %s has active members using another assignor: stop them "
             "first, or replay into a new group with --group NEW",
             p->group);
    return HOST_EXIT_RUNTIME;
  }
  if (pr->fail || !pr->assigned) {
    snprintf(err, errlen, "cannot join group %s%s%s", p->group,
             pr->fail ? ": " : " within ",
             pr->fail ? rd_kafka_err2str(pr->fail) : "the join timeout");
    return HOST_EXIT_RUNTIME;
  }
  return HOST_EXIT_OK;
}

/* The only member of the group owns every partition of its topics. */
static int refuse_if_shared(replay_plan_t *p, const probe_t *pr,
                            const rd_kafka_topic_partition_list_t *topics,
                            char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_new(8);
  int missing = 0, rc = HOST_EXIT_OK;
  for (int t = 0; rc == HOST_EXIT_OK && t < topics->cnt; t++)
    rc = offs_topic_partitions(p->client, topics->elems[t].topic, all, err,
                               errlen);
  int total = all->cnt;
  for (int i = 0; rc == HOST_EXIT_OK && i < all->cnt; i++)
    missing += !rd_kafka_topic_partition_list_find(
        pr->owned, all->elems[i].topic, all->elems[i].partition);
  rd_kafka_topic_partition_list_destroy(all);
  if (rc != HOST_EXIT_OK)
    return rc;
  if (missing == 0)
    return HOST_EXIT_OK;
  snprintf(err, errlen,
           "group %s has other active members (joining it gave this replay "
           "%d of %d partitions): stop them first (a replay must not race a "
           "running khost), or replay into a new group with --group NEW",
           p->group, total - missing, total);
  return HOST_EXIT_RUNTIME;
}

static int join_alone(replay_plan_t *p, rd_kafka_t **out, probe_t *pr,
                      char *err, size_t errlen) {
  rd_kafka_topic_partition_list_t *topics = plan_topics(p);
  int rc = HOST_EXIT_RUNTIME;
  rd_kafka_t *rk = probe_new(p, pr, err, errlen);
  *out = rk;
  if (!rk)
    goto out;
  rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
  if (e) {
    snprintf(err, errlen, "group %s: cannot subscribe: %s", p->group,
             rd_kafka_err2str(e));
    goto out;
  }
  rc = await_assignment(p, rk, pr, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = refuse_if_shared(p, pr, topics, err, errlen);
out:
  rd_kafka_topic_partition_list_destroy(topics);
  return rc;
}

static int commit_offsets(replay_plan_t *p, rd_kafka_t *rk, char *err,
                          size_t errlen) {
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)p->n);
  for (size_t i = 0; i < p->n; i++)
    rd_kafka_topic_partition_list_add(l, p->parts[i].topic,
                                      p->parts[i].partition)
        ->offset = p->parts[i].target;
  rd_kafka_resp_err_t e = rd_kafka_commit(rk, l, 0);
  for (int i = 0; !e && i < l->cnt; i++)
    e = l->elems[i].err;
  if (e)
    snprintf(err, errlen, "group %s: committing the new offsets failed: %s",
             p->group, rd_kafka_err2str(e));
  rd_kafka_topic_partition_list_destroy(l);
  return e ? HOST_EXIT_RUNTIME : HOST_EXIT_OK;
}

/* The admin API's answer for the group: its first error, if any. */
static rd_kafka_resp_err_t alter_result(rd_kafka_event_t *ev) {
  rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
  size_t n = 0;
  const rd_kafka_AlterConsumerGroupOffsets_result_t *res =
      rd_kafka_event_AlterConsumerGroupOffsets_result(ev);
  const rd_kafka_group_result_t **groups =
      res ? rd_kafka_AlterConsumerGroupOffsets_result_groups(res, &n) : NULL;
  if (e || n == 0)
    return e ? e : RD_KAFKA_RESP_ERR__BAD_MSG;
  const rd_kafka_error_t *ge = rd_kafka_group_result_error(groups[0]);
  if (ge)
    return rd_kafka_error_code(ge);
  const rd_kafka_topic_partition_list_t *l =
      rd_kafka_group_result_partitions(groups[0]);
  for (int i = 0; l && !e && i < l->cnt; i++)
    e = l->elems[i].err;
  return e;
}

/* Commit the new offsets with Kafka's admin API, without joining the
 * group, as kafka-consumer-groups --reset-offsets does. A broker that
 * takes commits from members only (librdkafka's mock cluster, for a group
 * it has seen) answers UNKNOWN_MEMBER_ID: REPLAY_JOIN, then. */
static int alter_offsets(replay_plan_t *p, char *err, size_t errlen) {
  char why[512];
  kafka_settings_t ks = {.cfg = p->cfg, .pc = p->pc};
  rd_kafka_conf_t *conf = kafka_conf_new(&ks, KAFKA_ADMIN, err, errlen);
  rd_kafka_t *rk =
      conf ? kafka_new(RD_KAFKA_PRODUCER, conf, "kafka", NULL, why, sizeof(why))
           : NULL;
  if (!rk) {
    if (conf)
      snprintf(err, errlen, "kafka client: %s", why);
    return HOST_EXIT_RUNTIME;
  }
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)p->n);
  for (size_t i = 0; i < p->n; i++)
    rd_kafka_topic_partition_list_add(l, p->parts[i].topic,
                                      p->parts[i].partition)
        ->offset = p->parts[i].target;
  rd_kafka_AlterConsumerGroupOffsets_t *a =
      rd_kafka_AlterConsumerGroupOffsets_new(p->group, l);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(
      rk, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
  rd_kafka_AdminOptions_set_request_timeout(o, REPLAY_QUERY_TIMEOUT_MS, why,
                                            sizeof(why));
  rd_kafka_AlterConsumerGroupOffsets(rk, &a, 1, o, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, REPLAY_QUERY_TIMEOUT_MS * 2);
  rd_kafka_resp_err_t e = ev ? alter_result(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
  int rc = HOST_EXIT_OK;
  if (e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
      e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION)
    rc = REPLAY_JOIN;
  else if (e) {
    snprintf(err, errlen, "group %s: committing the new offsets failed: %s",
             p->group, rd_kafka_err2str(e));
    rc = HOST_EXIT_RUNTIME;
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(o);
  rd_kafka_AlterConsumerGroupOffsets_destroy(a);
  rd_kafka_queue_destroy(q);
  rd_kafka_topic_partition_list_destroy(l);
  kafka_destroy(rk);
  return rc;
}

/* The Kafka commit inside the store's transaction. */
typedef struct apply_arg {
  replay_plan_t *p;
  rd_kafka_t *rk; /* NULL: with the admin API */
} apply_arg_t;

static int apply_offsets(void *arg, char *err, size_t errlen) {
  apply_arg_t *a = arg;
  return a->rk ? commit_offsets(a->p, a->rk, err, errlen)
               : alter_offsets(a->p, err, errlen);
}

/* Ranges (and stored offsets) and the group's offsets: both or
 * neither. */
static int commit_both(replay_plan_t *p, rd_kafka_t *rk, char *err,
                       size_t errlen) {
  apply_arg_t a = {p, rk};
  replay_write_t w = {.cfg = p->cfg,
                      .pc = p->pc,
                      .parts = p->parts,
                      .n = p->n,
                      .mode = p->dedup_mode,
                      .own_group = strcmp(p->group, p->pc->group_id) == 0,
                      .apply = apply_offsets,
                      .arg = &a};
  return replay_store_write(&w, err, errlen);
}

static void print_notes(const replay_plan_t *p, FILE *f) {
  int64_t replayed = 0;
  for (size_t i = 0; i < p->n; i++)
    replayed += replay_part_replayed(p, &p->parts[i]);
  fprintf(f, "committed the new offsets of group %s\n", p->group);
  if (!p->pc->dedup)
    fprintf(f, "pipeline %s has dedup off: --dedup does not apply\n",
            p->pc->name);
  else if (replayed > 0) {
    char *where = replay_store_where(p->cfg);
    fprintf(f,
            "recorded the replayed ranges in %s: event IDs already handled "
            "are %s\n",
            where,
            p->dedup_mode == DEDUP_REPLAY_REPROCESS ? "handled again"
                                                    : "skipped");
    g_free(where);
  }
  if (p->pc->dedup && p->cfg->store_backend == CFG_STORE_POSTGRESQL &&
      strcmp(p->group, p->pc->group_id) == 0)
    fprintf(f, "moved the pipeline's stored offsets to the new ones\n");
  if (strcmp(p->group, p->pc->group_id) != 0)
    fprintf(f,
            "to consume from there, set group_id = \"%s\"; in pipeline %s "
            "(%s:%d), then khost run\n",
            p->group, p->pc->name, p->cfg->path, p->pc->line);
}

int replay_apply(replay_plan_t *p, FILE *notes, char *err, size_t errlen) {
  probe_t pr = {.owned = rd_kafka_topic_partition_list_new(8)};
  rd_kafka_t *rk = NULL;
  int rc = refuse_if_described_active(p, err, errlen);
  if (rc == HOST_EXIT_OK)
    rc = commit_both(p, NULL, err, errlen);
  if (rc == REPLAY_JOIN) {
    log_msg(KHOST_LOG_INFO, "replay",
            "group %s: the broker takes offsets only from a member: joining "
            "the group",
            p->group);
    rc = join_alone(p, &rk, &pr, err, errlen);
    if (rc == HOST_EXIT_OK)
      rc = commit_both(p, rk, err, errlen);
  }
  if (rk) {
    rd_kafka_consumer_close(rk);
    kafka_destroy(rk);
  }
  rd_kafka_topic_partition_list_destroy(pr.owned);
  if (rc == HOST_EXIT_OK && notes)
    print_notes(p, notes);
  return rc;
}
