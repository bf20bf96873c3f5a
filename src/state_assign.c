/*
 * Where a member starts an assigned partition when the pipeline keeps its
 * offsets in the store: every durable batch stores the next offset of
 * each partition it covered, in the transaction of its marks and state
 * writes, while the Kafka commit follows after. A crash between the two
 * leaves the committed offset behind the store; starting from the stored
 * one hands no record of a durable batch to the plugin again (its state
 * writes are in already), with or without event IDs.
 *
 * Only pipelines that keep state start from the stored offset (the rest
 * rely on dedup and the Kafka commit, as before: a group reset there
 * delivers the records again, to be skipped as duplicates).
 *
 * The committed offset wins when it is ahead (another host without this
 * store moved the group on) and inside a range `khost replay` put back
 * (the replay commits an earlier offset on purpose).
 */
#include <inttypes.h>

#include "log.h"
#include "member_int.h"
#include "store.h"

#define COMMITTED_QUERY_MS 5000

/* Is committed inside, or before, a replayed range of the partition? */
static int replaying(store_t *s, uint32_t scope, const char *topic,
                     int32_t partition, int64_t committed) {
  store_range_t *r = NULL;
  size_t n = 0;
  char err[512];
  int hit = 0;
  if (store_replay_ranges(s, scope, topic, partition, &r, &n, err,
                          sizeof(err)) != 0)
    return 1; /* unknown: keep the group's offset */
  for (size_t i = 0; i < n && !hit; i++)
    hit = committed < r[i].to;
  free(r);
  return hit;
}

static int any_key(void *arg, const void *k, size_t kl, const void *v,
                   size_t vl) {
  (void)arg, (void)k, (void)kl, (void)v, (void)vl;
  return 1;
}

/* Does the pipeline keep state (one key at least)? */
static int keeps_state(store_t *s, uint32_t scope) {
  char err[512];
  return store_state_scan(s, scope, "", 0, any_key, NULL, err, sizeof(err)) ==
         1;
}

/* Start parts->elems[i] at stored when the group is behind it. */
static void maybe_start(member_t *m, rd_kafka_topic_partition_t *p,
                        int64_t committed, int64_t stored) {
  store_t *s = m->env->store;
  if (stored <= committed ||
      replaying(s, m->env->scope, p->topic, p->partition, committed))
    return;
  log_msg(KHOST_LOG_INFO, m->who,
          "%s [%" PRId32 "]: starting at offset %" PRId64
          " stored with the last durable batch (the group's committed offset "
          "is %" PRId64 ")",
          p->topic, p->partition, stored, committed);
  p->offset = stored;
}

void state_start_offsets(member_t *m, rd_kafka_topic_partition_list_t *parts) {
  store_t *s = m->env->store;
  rd_kafka_topic_partition_list_t *c = NULL;
  char err[512];
  int64_t *stored = NULL;
  int any = 0;
  if (!s || parts->cnt == 0 || !keeps_state(s, m->env->scope))
    return;
  stored = g_new(int64_t, parts->cnt);
  for (int i = 0; i < parts->cnt; i++) {
    const rd_kafka_topic_partition_t *p = &parts->elems[i];
    stored[i] = -1;
    /* An offset set already (a replay's start) is kept. */
    if (p->offset == RD_KAFKA_OFFSET_INVALID &&
        store_offset_get(s, m->env->scope, p->topic, p->partition, &stored[i],
                         err, sizeof(err)) == 1)
      any = 1;
  }
  if (!any)
    goto out;
  c = rd_kafka_topic_partition_list_copy(parts);
  rd_kafka_resp_err_t e = rd_kafka_committed(m->rk, c, COMMITTED_QUERY_MS);
  if (e) {
    log_msg(KHOST_LOG_WARNING, m->who,
            "the group's committed offsets cannot be read to compare with "
            "the stored ones (starting at the committed ones): %s",
            rd_kafka_err2str(e));
    goto out;
  }
  for (int i = 0; i < parts->cnt; i++)
    if (stored[i] >= 0)
      maybe_start(m, &parts->elems[i], c->elems[i].offset, stored[i]);
out:
  if (c)
    rd_kafka_topic_partition_list_destroy(c);
  g_free(stored);
}
