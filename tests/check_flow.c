/*
 * The flow core (src/flow.h) on its own: fake records, the in-memory
 * store (store_mem.c) and a clock the test moves. No Kafka, no SQLite, no
 * threads: each case runs in milliseconds. The adapter's part (calling
 * the plugin, writing dead letters, making batches durable) is played by
 * the helpers below.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "flow.h"
#include "store.h"
#include "testutil.h"

/* ------------------------------------------------------------ records */

typedef struct trec {
  char topic[32];
  int32_t partition;
  int64_t offset;
  int end;      /* a partition-end marker */
  char id[96];  /* the eventId header; "" for none */
  char key[32]; /* the record key; "" for a null key */
  char agg[32]; /* the aggregateId header; "" for none */
  /* The parsed eventId header that r_header() points into, as
   * librdkafka's parsed headers: r_settled() overwrites it (a pointer
   * kept across it reads garbage) and the next r_header() parses again. */
  char parsed[96];
  int parses, settles;
} trec_t;

static const char *r_topic(const void *r) {
  return ((const trec_t *)r)->topic;
}
static int32_t r_partition(const void *r) {
  return ((const trec_t *)r)->partition;
}
static int64_t r_offset(const void *r) {
  return ((const trec_t *)r)->offset;
}
static int r_is_end(const void *r) {
  return ((const trec_t *)r)->end;
}
static void r_key(const void *r, const void **key, size_t *len) {
  const trec_t *t = r;
  *key = t->key[0] ? t->key : NULL;
  *len = strlen(t->key);
}
static int r_header(const void *r, const char *name, const void **value,
                    size_t *len) {
  trec_t *t = (trec_t *)r; /* parsing on demand, as librdkafka does */
  if (strcmp(name, "eventId") == 0 && t->id[0] && !t->parsed[0]) {
    strcpy(t->parsed, t->id);
    t->parses++;
  }
  const char *v = strcmp(name, "eventId") == 0       ? t->parsed
                  : strcmp(name, "aggregateId") == 0 ? t->agg
                                                     : "";
  if (!v[0])
    return 0;
  *value = v;
  *len = strlen(v);
  return 1;
}
static void r_free(void *r) {
  free(r);
}
/* Every record counts as a value of 100 bytes. */
static size_t r_size(const void *r) {
  (void)r;
  return 100;
}

static void r_settled(void *r) {
  trec_t *t = r;
  if (t->parsed[0])
    memset(t->parsed, '#', strlen(t->parsed));
  t->parsed[0] = '\0';
  t->settles++;
}

static const flow_rec_ops_t ops = {r_topic, r_partition, r_offset, r_is_end,
                                   r_key,   r_header,    r_free,   NULL,
                                   r_size,  r_settled};

/* ------------------------------------------------------------ harness */

static int64_t wall_now = 1000000;
static int64_t wall(void) {
  return wall_now;
}

typedef struct tmember {
  flow_conf_t conf;
  flow_counts_t counts;
  flow_t *f;
} tmember_t;

static store_t *store;

static void setup(void) {
  store = store_mem_new();
}

static void teardown(void) {
  store_close(store);
}

/* A member with the settings of a typical pipeline; tweak before open. */
static void member_conf(tmember_t *m) {
  memset(m, 0, sizeof(*m));
  m->conf = (flow_conf_t){.who = "orders/0",
                          .pipeline = "orders",
                          .eid_header = "eventId",
                          .retry_max = 3,
                          .retry_backoff_ms = 100,
                          .retry_backoff_max_ms = 1000,
                          .max_batch = 100,
                          .linger_ms = 10,
                          .pause_min_ms = 100,
                          .store = store,
                          .counts = &m->counts,
                          .wall_ms = wall};
  ck_assert_int_eq(store_scope(store, "orders", &m->conf.scope, NULL, 0), 0);
}

static void member_open(tmember_t *m) {
  char err[256];
  ck_assert_msg(flow_open(&m->f, &m->conf, &ops, err, sizeof(err)) == 0, "%s",
                err);
  flow_assign(m->f, "t", 0);
  flow_assign(m->f, "t", 1);
}

static void member_start(tmember_t *m) {
  member_conf(m);
  member_open(m);
}

/* A record with a key (NULL: a null key). */
static trec_t *push_key(tmember_t *m, int32_t partition, int64_t offset,
                        const char *key, const char *id) {
  trec_t *r = calloc(1, sizeof(*r));
  strcpy(r->topic, "t");
  r->partition = partition;
  r->offset = offset;
  snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
  snprintf(r->key, sizeof(r->key), "%s", key ? key : "");
  ck_assert_int_eq(flow_push(m->f, r), 0);
  return r;
}

/* A record with an aggregateId header (NULL: none) and key "k". */
static void push_agg(tmember_t *m, int32_t partition, int64_t offset,
                     const char *agg, const char *id) {
  trec_t *r = calloc(1, sizeof(*r));
  strcpy(r->topic, "t");
  r->partition = partition;
  r->offset = offset;
  snprintf(r->id, sizeof(r->id), "%s", id);
  strcpy(r->key, "k");
  snprintf(r->agg, sizeof(r->agg), "%s", agg ? agg : "");
  ck_assert_int_eq(flow_push(m->f, r), 0);
}

static trec_t *push(tmember_t *m, int32_t partition, int64_t offset,
                    const char *id) {
  return push_key(m, partition, offset, NULL, id);
}

/* The next job must be a plugin call of (partition, offset). */
static flow_job_t expect_call(tmember_t *m, int64_t now, int32_t partition,
                              int64_t offset) {
  flow_job_t job;
  ck_assert_int_eq(flow_next(m->f, now, &job), FLOW_CALL);
  ck_assert_int_eq(r_partition(job.rec), partition);
  ck_assert_int_eq(r_offset(job.rec), offset);
  return job;
}

static void expect_none(tmember_t *m, int64_t now) {
  flow_job_t job;
  ck_assert_int_eq(flow_next(m->f, now, &job), FLOW_NONE);
}

/* Call and answer res. */
static void answer(tmember_t *m, int64_t now, int32_t partition, int64_t offset,
                   khost_result_t res) {
  flow_job_t job = expect_call(m, now, partition, offset);
  ck_assert_int_eq(flow_outcome(m->f, &job, res, now), 0);
}

/* Make the current batch durable, as the member does without a
 * durability thread. */
static void make_durable(tmember_t *m) {
  char err[256];
  flow_batch_t *b = flow_cur(m->f);
  ck_assert_int_eq(
      store_batch_commit(flow_batch_store(b), NULL, err, sizeof(err)), 0);
  flow_batch_durable(m->f, b);
}

static int64_t position(tmember_t *m, int32_t partition) {
  flow_part_t *pt = flow_find(m->f, "t", partition);
  return pt ? flow_part_position(pt, 1) : -2;
}

/* What a second member would get for id now. */
static int lookup(tmember_t *m, const char *id) {
  store_key_t k = store_key(m->conf.scope, id, strlen(id));
  return store_claim(store, m->conf.scope, &k, STORE_LOOKUP, 0);
}

/* ------------------------------------------------------------ order */

START_TEST(test_order_within_partition) {
  tmember_t m;
  int64_t seen[2] = {-1, -1};
  member_start(&m);
  for (int i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof(id), "a%d", i);
    push(&m, 0, i, id);
    snprintf(id, sizeof(id), "b%d", i);
    if (i < 3)
      push(&m, 1, 100 + i, id);
  }
  for (int n = 0; n < 8; n++) {
    flow_job_t job;
    ck_assert_int_eq(flow_next(m.f, 0, &job), FLOW_CALL);
    int32_t p = r_partition(job.rec);
    ck_assert_int_gt(r_offset(job.rec), seen[p]);
    seen[p] = r_offset(job.rec);
    ck_assert_int_eq(job.attempt, 1);
    ck_assert_int_eq(flow_outcome(m.f, &job, KHOST_OK, 0), 0);
  }
  expect_none(&m, 0);
  ck_assert_int_eq(seen[0], 4);
  ck_assert_int_eq(seen[1], 102);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 8);
  /* Nothing commits before the batch is durable. */
  ck_assert_int_eq(position(&m, 0), -1);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 5);
  ck_assert_int_eq(position(&m, 1), 103);
  flow_close(m.f);
}
END_TEST

START_TEST(test_batch_never_exceeds_max_batch) {
  tmember_t m;
  member_conf(&m);
  m.conf.max_batch = 3;
  member_open(&m);
  for (int i = 0; i < 5; i++) {
    char id[16];
    snprintf(id, sizeof(id), "x%d", i);
    push(&m, 0, i, id);
  }
  for (int i = 0; i < 3; i++)
    answer(&m, 0, 0, i, KHOST_OK);
  expect_none(&m, 0);
  ck_assert(flow_batch_due(m.f, 0));
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 3);
  answer(&m, 0, 0, 3, KHOST_OK);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ dedup */

START_TEST(test_duplicate_skipped) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 0, "dup");
  push(&m, 0, 1, "dup"); /* same batch: its claim is this member's own */
  answer(&m, 0, 0, 0, KHOST_OK);
  expect_none(&m, 0);
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 1);
  ck_assert_uint_eq(flow_batch_len(flow_cur(m.f)), 2);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 2);
  push(&m, 1, 0, "dup"); /* a later batch: seen */
  expect_none(&m, 0);
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 2);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 1);
  flow_close(m.f);
}
END_TEST

/* While a head is checked, the next record's ID is hashed and the store
 * asked to fetch its lines; that record's claim carries the same hash,
 * its ID's. An ID longer than FLOW_NEXT_ID_MAX is hashed at its claim
 * only. A duplicate whose hash was taken ahead is still a duplicate. */
START_TEST(test_next_id_hashed_ahead) {
  tmember_t m;
  char longid[81];
  size_t prefetched, ahead, wrong;
  member_start(&m);
  memset(longid, 'x', 80);
  longid[80] = '\0';
  push(&m, 0, 0, "a");
  push(&m, 0, 1, "b");
  push(&m, 0, 2, "c");
  push(&m, 0, 3, longid);
  push(&m, 0, 4, "e");
  for (int i = 0; i < 5; i++)
    answer(&m, 0, 0, i, KHOST_OK);
  expect_none(&m, 0);
  store_mem_lookahead(store, &prefetched, &ahead, &wrong);
  ck_assert_uint_eq(prefetched, 3); /* b, c, e */
  ck_assert_uint_eq(ahead, 3);
  ck_assert_uint_eq(wrong, 0);
  push(&m, 0, 5, "g");
  push(&m, 0, 6, "h");
  push(&m, 0, 7, "g");
  answer(&m, 0, 0, 5, KHOST_OK);
  answer(&m, 0, 0, 6, KHOST_OK);
  expect_none(&m, 0); /* g at 7: this batch's own claim */
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 1);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 7);
  store_mem_lookahead(store, &prefetched, &ahead, &wrong);
  ck_assert_uint_eq(prefetched, 5); /* and h, g */
  ck_assert_uint_eq(ahead, 5);      /* and h, g at 7 */
  ck_assert_uint_eq(wrong, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 8);
  flow_close(m.f);
}
END_TEST

/* A copy of an event ID that another member claimed and has not made
 * durable waits: it is neither skipped (that member's batch may still be
 * abandoned) nor handled (it may become durable). */
START_TEST(test_in_flight_elsewhere_waits_then_skips) {
  tmember_t a, b;
  member_start(&a);
  member_start(&b);
  push(&a, 0, 0, "shared");
  answer(&a, 0, 0, 0, KHOST_OK);
  push(&b, 1, 7, "shared");
  expect_none(&b, 0);
  ck_assert_int_eq(atomic_load(&b.counts.duplicates), 0);
  ck_assert_int_gt(flow_ready_in(b.f, 0, 1000), 0);
  expect_none(&b, 50); /* looked at again: still in flight */
  make_durable(&a);
  expect_none(&b, 100); /* now a duplicate */
  ck_assert_int_eq(atomic_load(&b.counts.duplicates), 1);
  ck_assert_int_eq(atomic_load(&b.counts.handled), 0);
  make_durable(&b);
  ck_assert_int_eq(position(&b, 1), 8);
  flow_close(a.f);
  flow_close(b.f);
}
END_TEST

START_TEST(test_in_flight_elsewhere_abandoned_is_handled) {
  tmember_t a, b;
  member_start(&a);
  member_start(&b);
  push(&a, 0, 0, "shared");
  answer(&a, 0, 0, 0, KHOST_OK);
  push(&b, 1, 7, "shared");
  expect_none(&b, 0);
  flow_batch_abandon(a.f, flow_cur(a.f)); /* its claim goes back */
  answer(&b, 100, 1, 7, KHOST_OK);
  ck_assert_int_eq(atomic_load(&b.counts.duplicates), 0);
  flow_close(a.f);
  flow_close(b.f);
}
END_TEST

START_TEST(test_missing_id_process) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 0, NULL);
  flow_job_t job = expect_call(&m, 0, 0, 0);
  ck_assert_ptr_null(job.event_id);
  ck_assert_int_eq(flow_outcome(m.f, &job, KHOST_OK, 0), 0);
  ck_assert_int_eq(atomic_load(&m.counts.no_id), 1);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 1);
  flow_close(m.f);
}
END_TEST

START_TEST(test_missing_id_fail) {
  tmember_t m;
  member_conf(&m);
  m.conf.missing_id_fail = 1;
  member_open(&m);
  push(&m, 0, 0, NULL);
  push(&m, 0, 1, "next");
  answer(&m, 0, 0, 1, KHOST_OK); /* the first failed without a call */
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  ck_assert_int_eq(atomic_load(&m.counts.no_id), 1);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 2);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ claims ahead */

/* The in-memory store as a store that takes claims ahead and answers them
 * later (the PostgreSQL store's claimer): the windows the flow core asked
 * for, and while `held`, the claims of IDs starting with 'h' on their
 * way. */
static store_ops_t ahead_ops;
static struct {
  int n;
  int32_t part[8];
  int64_t from[8], to[8];
  int held;
} win;

static void ah_claim_ahead(store_t *s, uint32_t scope, const char *topic,
                           int32_t partition, const void *const *ids,
                           const size_t *lens, const int64_t *offsets,
                           size_t n) {
  (void)s, (void)scope, (void)topic, (void)ids, (void)lens;
  ck_assert_int_lt(win.n, 8);
  win.part[win.n] = partition;
  win.from[win.n] = offsets[0];
  win.to[win.n] = offsets[n - 1];
  win.n++;
}

static int ah_claim_ready(store_t *s, uint32_t scope, const store_key_t *key) {
  (void)s, (void)scope;
  return !(win.held && key->len > 0 && ((const char *)key->id)[0] == 'h');
}

static void ahead_store(void) {
  ahead_ops = *store->ops;
  ahead_ops.claim_ahead = ah_claim_ahead;
  ahead_ops.claim_ready = ah_claim_ready;
  store->ops = &ahead_ops;
  memset(&win, 0, sizeof(win));
}

/* A head whose claim taken ahead is still on its way waits (a
 * millisecond at a time) and lets the other partition's head go first;
 * it goes once its claim is answered. */
START_TEST(test_claim_on_its_way_others_first) {
  tmember_t m;
  ahead_store();
  member_start(&m);
  win.held = 1;
  push(&m, 0, 0, "h0");
  push(&m, 1, 100, "b0");
  answer(&m, 0, 1, 100, KHOST_OK);
  expect_none(&m, 0);
  expect_none(&m, 1); /* tried again: still on its way */
  win.held = 0;
  answer(&m, 2, 0, 0, KHOST_OK);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 2);
  flow_close(m.f);
}
END_TEST

/* The claims of the records queued after the last ones asked for are
 * asked for once the head reaches the middle of those: while the head is
 * handled, the next records' claims are on their way. */
START_TEST(test_next_window_asked_at_middle) {
  tmember_t m;
  char id[16];
  ahead_store();
  member_start(&m);
  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof(id), "x%d", i);
    push(&m, 0, i, id);
  }
  answer(&m, 0, 0, 0, KHOST_OK);
  ck_assert_int_eq(win.n, 1);
  ck_assert_int_eq(win.from[0], 0);
  ck_assert_int_eq(win.to[0], 3);
  for (int i = 4; i < 8; i++) {
    snprintf(id, sizeof(id), "x%d", i);
    push(&m, 0, i, id);
  }
  answer(&m, 0, 0, 1, KHOST_OK);
  ck_assert_int_eq(win.n, 1); /* 1: before the middle of 0..3 */
  answer(&m, 0, 0, 2, KHOST_OK);
  ck_assert_int_eq(win.n, 2);
  ck_assert_int_eq(win.part[1], 0);
  ck_assert_int_eq(win.from[1], 4);
  ck_assert_int_eq(win.to[1], 7);
  for (int i = 3; i < 8; i++)
    answer(&m, 0, 0, i, KHOST_OK);
  ck_assert_int_eq(win.n, 2); /* nothing queued past 7 */
  expect_none(&m, 0);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ retries */

/* RETRY waits at the head with a backoff that doubles (jitter: [d/2, d])
 * and fails once retry_max retries are used up; without a dead-letter
 * topic the failure is logged and marked. */
START_TEST(test_retry_backoff_grows_then_fails) {
  tmember_t m;
  int64_t now = 0, d = 100;
  member_start(&m);
  push(&m, 0, 0, "r");
  for (uint32_t attempt = 1; attempt <= 3; attempt++, d *= 2) {
    flow_job_t job = expect_call(&m, now, 0, 0);
    ck_assert_uint_eq(job.attempt, attempt);
    ck_assert_int_eq(flow_outcome(m.f, &job, KHOST_RETRY, now), 0);
    int64_t wait = flow_ready_in(m.f, now, 100000);
    ck_assert_int_ge(wait, d / 2);
    ck_assert_int_le(wait, d);
    expect_none(&m, now + wait - 1);
    now += wait;
  }
  answer(&m, now, 0, 0, KHOST_RETRY); /* the 4th call: retries used up */
  ck_assert_int_eq(atomic_load(&m.counts.retries), 4);
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  ck_assert_uint_eq(flow_batch_len(flow_cur(m.f)), 1);
  make_durable(&m);
  ck_assert_int_eq(lookup(&m, "r"), STORE_SEEN);
  ck_assert_int_eq(position(&m, 0), 1);
  /* No dead-letter topic: the record is in the parking lot. */
  store_parked_t p;
  ck_assert_int_eq(store_mem_parked(store, "t", 0, 0, &p), 1);
  ck_assert_uint_eq(p.attempts, 4);
  ck_assert_msg(strstr(p.reason, "still failing after 4 attempts") != NULL,
                "%s", p.reason);
  flow_close(m.f);
}
END_TEST

/* The default retry budget (README, docs/operations.md): 16 retries, the
 * waits doubling from 200 ms and capped at 5 s, each jittered down to no
 * less than half: 31 to 61 s in all before the record counts as failed,
 * enough for a dependency's routine restart. */
START_TEST(test_retry_default_budget) {
  tmember_t m;
  int64_t now = 0, total = 0, d = CFG_DEFAULT_RETRY_BACKOFF_MS;
  member_conf(&m);
  m.conf.retry_max = CFG_DEFAULT_RETRY_MAX;
  m.conf.retry_backoff_ms = CFG_DEFAULT_RETRY_BACKOFF_MS;
  m.conf.retry_backoff_max_ms = CFG_DEFAULT_RETRY_BACKOFF_MAX_MS;
  member_open(&m);
  push(&m, 0, 0, "r");
  for (uint32_t attempt = 1; attempt <= 16; attempt++) {
    flow_job_t job = expect_call(&m, now, 0, 0);
    ck_assert_uint_eq(job.attempt, attempt);
    ck_assert_int_eq(flow_outcome(m.f, &job, KHOST_RETRY, now), 0);
    int64_t wait = flow_ready_in(m.f, now, 100000);
    ck_assert_msg(wait >= d / 2 && wait <= d,
                  "wait %lld after attempt %u, not within [%lld, %lld]",
                  (long long)wait, attempt, (long long)(d / 2), (long long)d);
    expect_none(&m, now + wait - 1);
    now += wait;
    total += wait;
    d = d * 2 > CFG_DEFAULT_RETRY_BACKOFF_MAX_MS
            ? CFG_DEFAULT_RETRY_BACKOFF_MAX_MS
            : d * 2; /* capped at backoff_max */
  }
  ck_assert_msg(total >= 30600 && total <= 61200, "waited %lld ms in all",
                (long long)total);
  answer(&m, now, 0, 0, KHOST_RETRY); /* the 17th call: retries used up */
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  make_durable(&m);
  store_parked_t p;
  ck_assert_int_eq(store_mem_parked(store, "t", 0, 0, &p), 1);
  ck_assert_uint_eq(p.attempts, 17);
  ck_assert_msg(strstr(p.reason, "still failing after 17 attempts") != NULL,
                "%s", p.reason);
  flow_close(m.f);
}
END_TEST

/* A FAIL without a dead-letter topic is parked with its mark: in the
 * batch's transaction, so not before the batch is durable. */
START_TEST(test_fail_parked_with_the_batch) {
  tmember_t m;
  char err[256];
  member_start(&m);
  push(&m, 0, 7, "p");
  flow_job_t job = expect_call(&m, 0, 0, 7);
  ck_assert_int_eq(flow_outcome_why(m.f, &job, KHOST_FAIL, "no such SKU", 0),
                   0);
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  store_mem_fail_commits(store, 1, 1);
  ck_assert_int_ne(store_batch_commit(flow_batch_store(flow_cur(m.f)), NULL,
                                      err, sizeof(err)),
                   0);
  ck_assert_uint_eq(store_mem_parked_count(store), 0);
  make_durable(&m);
  store_parked_t p;
  ck_assert_int_eq(store_mem_parked(store, "t", 0, 7, &p), 1);
  ck_assert_uint_eq(store_mem_parked_count(store), 1);
  ck_assert_uint_eq(p.scope, m.conf.scope);
  ck_assert_uint_eq(p.event_id_len, 1);
  ck_assert_int_eq(memcmp(p.event_id, "p", 1), 0);
  ck_assert_uint_eq(p.attempts, 1);
  ck_assert_int_eq(p.parked_at_ms, wall_now);
  ck_assert_int_eq(p.timestamp_ms, -1); /* the fake records have none */
  ck_assert_msg(strstr(p.reason, "no such SKU") != NULL, "%s", p.reason);
  ck_assert_int_eq(lookup(&m, "p"), STORE_SEEN);
  ck_assert_int_eq(position(&m, 0), 8);
  flow_close(m.f);
}
END_TEST

START_TEST(test_retries_used_up_to_dead_letter) {
  tmember_t m;
  member_conf(&m);
  m.conf.retry_max = 0;
  m.conf.dead_letter_topic = "dlt";
  member_open(&m);
  push(&m, 0, 0, "r");
  answer(&m, 0, 0, 0, KHOST_RETRY);
  flow_job_t job;
  ck_assert_int_eq(flow_next(m.f, 0, &job), FLOW_DEAD_LETTER);
  ck_assert_str_eq(job.reason, "still failing after 1 attempts");
  expect_none(&m, 0); /* the write is with the adapter */
  flow_dead_letter_done(m.f, job.part, 0, NULL, 0);
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 1);
  flow_close(m.f);
}
END_TEST

/* The plugin's reason joins the failure's: after "the plugin failed the
 * record" for a FAIL, after the attempts when retries are used up. */
START_TEST(test_fail_reason_in_dead_letter) {
  tmember_t m;
  member_conf(&m);
  m.conf.retry_max = 0;
  m.conf.dead_letter_topic = "dlt";
  member_open(&m);
  push(&m, 0, 0, "f");
  push(&m, 0, 1, "r");
  flow_job_t job = expect_call(&m, 0, 0, 0);
  ck_assert_int_eq(flow_outcome_why(m.f, &job, KHOST_FAIL, "no such SKU", 0),
                   0);
  ck_assert_int_eq(flow_next(m.f, 0, &job), FLOW_DEAD_LETTER);
  ck_assert_str_eq(job.reason, "the plugin failed the record: no such SKU");
  flow_dead_letter_done(m.f, job.part, 0, NULL, 0);
  job = expect_call(&m, 0, 0, 1);
  ck_assert_int_eq(
      flow_outcome_why(m.f, &job, KHOST_RETRY, "database locked", 0), 0);
  ck_assert_int_eq(flow_next(m.f, 0, &job), FLOW_DEAD_LETTER);
  ck_assert_str_eq(job.reason,
                   "still failing after 1 attempts: database locked");
  flow_dead_letter_done(m.f, job.part, 0, NULL, 0);
  ck_assert_int_eq(atomic_load(&m.counts.failed), 2);
  make_durable(&m);
  flow_close(m.f);
}
END_TEST

/* A dead-letter write the broker refuses holds its record's partition
 * only: the other partitions go on, nothing past it is committed, and the
 * write is tried again after a backoff. */
START_TEST(test_dead_letter_refused_holds_its_partition) {
  tmember_t m;
  flow_job_t job;
  member_conf(&m);
  m.conf.dead_letter_topic = "dlt";
  member_open(&m);
  push(&m, 0, 0, "bad");
  push(&m, 0, 1, "after");
  answer(&m, 0, 0, 0, KHOST_FAIL);
  ck_assert_int_eq(flow_next(m.f, 0, &job), FLOW_DEAD_LETTER);
  ck_assert_str_eq(job.reason, "the plugin failed the record");
  flow_dead_letter_done(m.f, job.part, -1, "broker down", 0);
  push(&m, 1, 0, "other");
  answer(&m, 0, 1, 0, KHOST_OK);
  expect_none(&m, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -1);
  ck_assert_int_eq(position(&m, 1), 1);
  int64_t wait = flow_ready_in(m.f, 0, 100000);
  ck_assert_int_gt(wait, 0);
  ck_assert_int_eq(flow_next(m.f, wait, &job), FLOW_DEAD_LETTER);
  flow_dead_letter_done(m.f, job.part, 0, NULL, wait);
  answer(&m, wait, 0, 1, KHOST_OK);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 2);
  flow_close(m.f);
}
END_TEST

/* A retry wait longer than max.poll.interval.ms: the core never asks to
 * wait past the cap it is given (the member keeps polling), pauses only
 * that partition, and the others go on. */
START_TEST(test_long_retry_wait_keeps_polling) {
  tmember_t m;
  member_conf(&m);
  m.conf.retry_backoff_ms = m.conf.retry_backoff_max_ms = 600000;
  member_open(&m);
  push(&m, 0, 0, "slow");
  push(&m, 1, 0, "fast");
  answer(&m, 0, 0, 0, KHOST_RETRY);
  answer(&m, 0, 1, 0, KHOST_OK);
  ck_assert_int_le(flow_ready_in(m.f, 0, 100), 100);
  ck_assert(flow_part_wants_pause(m.f, flow_find(m.f, "t", 0), 0));
  ck_assert(!flow_part_wants_pause(m.f, flow_find(m.f, "t", 1), 0));
  expect_none(&m, 299999);
  answer(&m, 600000, 0, 0, KHOST_OK);
  flow_close(m.f);
}
END_TEST

/* A record whose recorded calls (an earlier process crashed in them) are
 * used up fails without another call. */
START_TEST(test_recorded_attempts_fail_without_call) {
  tmember_t m;
  char err[128];
  store_batch_t *b;
  member_start(&m);
  store_attempt_t a = {.scope = m.conf.scope,
                       .event_id = "crash",
                       .event_id_len = 5,
                       .topic = "t",
                       .partition = 0,
                       .offset = 0,
                       .attempts = 4};
  ck_assert_int_eq(store_batch_open(store, &b, err, sizeof(err)), 0);
  ck_assert_int_eq(store_attempts_set(b, &a, err, sizeof(err)), 0);
  store_batch_close(b);
  push(&m, 0, 0, "crash");
  push(&m, 0, 1, "fine");
  answer(&m, 0, 0, 1, KHOST_OK);
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  flow_close(m.f);
}
END_TEST

/* After an unclean stop the first calls are recorded before they are
 * made, and a call that returns clears its record. */
START_TEST(test_unclean_start_records_first_calls) {
  tmember_t m;
  uint32_t n;
  store_mem_set_unclean(store, 1);
  member_start(&m);
  push(&m, 0, 0, "first");
  flow_job_t job = expect_call(&m, 0, 0, 0);
  store_attempt_t a = {.scope = m.conf.scope,
                       .event_id = "first",
                       .event_id_len = 5,
                       .topic = "t"};
  store_attempts(store, &a, 0, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_int_eq(flow_outcome(m.f, &job, KHOST_OK, 0), 0);
  store_attempts(store, &a, 0, &n);
  ck_assert_uint_eq(n, 0);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ rebalances */

/* Revoked during a retry: what was handled before is made durable and
 * committed, the retrying record's claim goes back, and nothing past it
 * is committed (the next owner handles it). */
START_TEST(test_revoke_during_retry) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 0, "done");
  push(&m, 0, 1, "retrying");
  answer(&m, 0, 0, 0, KHOST_OK);
  answer(&m, 0, 0, 1, KHOST_RETRY);
  ck_assert_int_eq(lookup(&m, "retrying"), STORE_IN_FLIGHT);
  make_durable(&m); /* the adapter settles before the partition goes */
  ck_assert_int_eq(position(&m, 0), 1);
  flow_drop(m.f, flow_find(m.f, "t", 0));
  ck_assert_int_eq(lookup(&m, "retrying"), STORE_NEW);
  ck_assert_int_eq(lookup(&m, "done"), STORE_SEEN);
  ck_assert_uint_eq(flow_queued(m.f), 0);
  flow_close(m.f);
}
END_TEST

/* Lost (someone else owns it already): nothing of it is committed, not
 * even outcomes that become durable later, and its head's claim goes
 * back at once. */
START_TEST(test_lost_commits_nothing) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 0, "handled");
  push(&m, 0, 1, "waiting");
  answer(&m, 0, 0, 0, KHOST_OK);
  answer(&m, 0, 0, 1, KHOST_RETRY);
  flow_drop(m.f, flow_find(m.f, "t", 0));
  ck_assert_int_eq(lookup(&m, "waiting"), STORE_NEW);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -2); /* not owned: nothing to commit */
  flow_assign(m.f, "t", 0);              /* assigned again later */
  ck_assert_int_eq(position(&m, 0), -1);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ breaker */

START_TEST(test_breaker_opens_and_closes_on_clock) {
  tmember_t m;
  breaker_t *br = breaker_new(20, 0.5, 1000);
  member_conf(&m);
  m.conf.breaker = br;
  m.conf.breaker_ratio = 0.5;
  m.conf.breaker_cooldown_ms = 1000;
  member_open(&m);
  for (int i = 0; i < 12; i++) {
    char id[16];
    snprintf(id, sizeof(id), "f%d", i);
    push(&m, 0, i, id);
  }
  int i = 0;
  while (!flow_check_breaker(m.f, 0)) {
    ck_assert_int_lt(i, 12);
    answer(&m, 0, 0, i++, KHOST_FAIL);
  }
  ck_assert_int_eq(atomic_load(&m.counts.breaker_trips), 1);
  expect_none(&m, 0);
  ck_assert(flow_part_wants_pause(m.f, flow_find(m.f, "t", 1), 0));
  ck_assert(flow_check_breaker(m.f, 999));
  ck_assert(!flow_check_breaker(m.f, 1000));
  /* The record that opened it was held, not failed: it is called again. */
  answer(&m, 1000, 0, i - 1, KHOST_OK);
  ck_assert_int_eq(atomic_load(&m.counts.failed), i - 1);
  flow_close(m.f);
  breaker_free(br);
}
END_TEST

/* ------------------------------------------------------------ positions */

START_TEST(test_positions_never_go_backwards) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 5, "five");
  answer(&m, 0, 0, 5, KHOST_OK);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 6);
  push(&m, 0, 3, "three"); /* delivered again after a seek back */
  answer(&m, 0, 0, 3, KHOST_OK);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 6);
  flow_committed(m.f, "t", 0, 6);
  ck_assert_int_eq(flow_part_position(flow_find(m.f, "t", 0), 0), -1);
  flow_committed(m.f, "t", 0, 2); /* an older acknowledgement, late */
  ck_assert_int_eq(flow_part_position(flow_find(m.f, "t", 0), 0), -1);
  flow_close(m.f);
}
END_TEST

/* A batch that cannot be made durable holds every partition and commits
 * nothing; once it is durable (tried again), positions move on. */
START_TEST(test_batch_not_durable_holds_commits) {
  tmember_t m;
  char err[256];
  int transient = 0;
  member_start(&m);
  push(&m, 0, 0, "a");
  push(&m, 0, 1, "b");
  answer(&m, 0, 0, 0, KHOST_OK);
  store_mem_fail_commits(store, 1, 1);
  store_batch_t *sb = flow_batch_take_off(m.f);
  ck_assert_int_ne(store_batch_commit(sb, &transient, err, sizeof(err)), 0);
  ck_assert_int_eq(transient, 1);
  flow_set_hold(m.f, 1);
  ck_assert_int_eq(position(&m, 0), -1);
  expect_none(&m, 0);
  ck_assert(flow_part_wants_pause(m.f, flow_find(m.f, "t", 1), 0));
  ck_assert_int_eq(store_batch_commit(sb, &transient, err, sizeof(err)), 0);
  flow_batch_durable(m.f, flow_air(m.f));
  flow_set_hold(m.f, 0);
  ck_assert_int_eq(position(&m, 0), 1);
  answer(&m, 0, 0, 1, KHOST_OK);
  flow_close(m.f);
}
END_TEST

START_TEST(test_abandoned_batch_releases_claims) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 0, "a");
  answer(&m, 0, 0, 0, KHOST_OK);
  ck_assert_int_eq(lookup(&m, "a"), STORE_IN_FLIGHT);
  flow_batch_abandon(m.f, flow_cur(m.f));
  ck_assert_int_eq(lookup(&m, "a"), STORE_NEW);
  ck_assert_int_eq(position(&m, 0), -1);
  flow_close(m.f);
}
END_TEST

/* A record with an outcome drops its parsed headers (flow_rec_ops_t
 * settled) once its mark is taken, while it waits in its batch: the mark
 * carries the ID read before, and a release of its claim, a later
 * duplicate and an abandoned batch read the ID again. */
START_TEST(test_settled_records_drop_headers) {
  tmember_t m;
  member_start(&m);
  trec_t *r0 = push(&m, 0, 0, "s0");
  push(&m, 0, 1, "s1");
  trec_t *r2 = push(&m, 0, 2, "s0"); /* a copy of s0 */
  answer(&m, 0, 0, 0, KHOST_OK);
  ck_assert_int_eq(r0->settles, 1);
  ck_assert_str_eq(r0->parsed, "");
  answer(&m, 0, 0, 1, KHOST_OK);
  /* The copy is skipped: s0 is claimed by this batch, which the claim's
   * record (settled) tells by its ID parsed again. */
  expect_none(&m, 0);
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 1);
  ck_assert_int_eq(r0->parses, 2);
  ck_assert_int_eq(r2->settles, 1);
  make_durable(&m);
  ck_assert_int_eq(lookup(&m, "s0"), STORE_SEEN);
  ck_assert_int_eq(lookup(&m, "s1"), STORE_SEEN);
  ck_assert_int_eq(lookup(&m, "#"), STORE_NEW);
  ck_assert_int_eq(lookup(&m, "##"), STORE_NEW);
  ck_assert_int_eq(position(&m, 0), 3);
  /* An abandoned batch gives back its claims by the ID parsed again. */
  trec_t *r3 = push(&m, 1, 0, "s2");
  answer(&m, 0, 1, 0, KHOST_OK);
  ck_assert_int_eq(r3->settles, 1);
  ck_assert_int_eq(lookup(&m, "s2"), STORE_IN_FLIGHT);
  flow_batch_abandon(m.f, flow_cur(m.f));
  ck_assert_int_eq(lookup(&m, "s2"), STORE_NEW);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ offsets */

static int batch_ends;
static void count_batch_end(void *ctx, store_batch_t *sb) {
  (void)ctx;
  ck_assert_ptr_nonnull(sb);
  batch_ends++;
}

static int64_t stored(tmember_t *m, int32_t partition) {
  int64_t next = -1;
  char err[256];
  int r = store_offset_get(store, m->conf.scope, "t", partition, &next, err,
                           sizeof(err));
  ck_assert_int_ge(r, 0);
  return r == 1 ? next : -1;
}

/* Every partition a batch covered has its next offset stored in the
 * batch's transaction; the end of a batch, durable or abandoned, is told
 * to batch_end (the state overlay's cue). */
START_TEST(test_offsets_stored_with_batch) {
  tmember_t m;
  member_conf(&m);
  m.conf.batch_end = count_batch_end;
  batch_ends = 0;
  member_open(&m);
  push(&m, 0, 0, "a");
  push(&m, 0, 1, "b");
  push(&m, 1, 5, "c");
  answer(&m, 0, 0, 0, KHOST_OK);
  answer(&m, 0, 1, 5, KHOST_FAIL);
  answer(&m, 0, 0, 1, KHOST_OK);
  ck_assert_int_eq(stored(&m, 0), -1); /* not before the commit */
  make_durable(&m);
  ck_assert_int_eq(batch_ends, 1);
  ck_assert_int_eq(stored(&m, 0), 2);
  ck_assert_int_eq(stored(&m, 1), 6);
  push(&m, 0, 2, "d");
  answer(&m, 0, 0, 2, KHOST_OK);
  flow_batch_abandon(m.f, flow_cur(m.f));
  ck_assert_int_eq(batch_ends, 2);
  ck_assert_int_eq(stored(&m, 0), 2); /* abandoned: not stored */
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ in the air */

/* Handle one record of partition and send the batch it is in up, as the
 * member does with a durability thread; returns its store batch. */
static store_batch_t *fly_one(tmember_t *m, int32_t partition, int64_t offset,
                              const char *id) {
  push(m, partition, offset, id);
  answer(m, 0, partition, offset, KHOST_OK);
  ck_assert(flow_air_room(m->f));
  return flow_batch_take_off(m->f);
}

/* The durability thread made the i-th oldest batch in the air durable. */
static void lands(tmember_t *m, size_t i, store_batch_t *sb) {
  char err[256];
  flow_batch_t *b = flow_air_at(m->f, i);
  ck_assert_ptr_eq(flow_batch_store(b), sb);
  ck_assert_int_eq(store_batch_commit(sb, NULL, err, sizeof(err)), 0);
  flow_batch_durable(m->f, b);
}

/* Several batches in the air, made durable newest first: positions move
 * only once the oldest is durable, then past all of them at once. */
START_TEST(test_air_out_of_order_durable_waits_for_older) {
  tmember_t m;
  member_start(&m);
  store_batch_t *b0 = fly_one(&m, 0, 0, "a");
  store_batch_t *b1 = fly_one(&m, 0, 1, "b");
  store_batch_t *b2 = fly_one(&m, 1, 7, "c");
  ck_assert_uint_eq(flow_in_air(m.f), 3);
  ck_assert(!flow_air_room(m.f));
  ck_assert_uint_eq(flow_air_len(m.f), 3);
  lands(&m, 2, b2);
  ck_assert_int_eq(position(&m, 1), -1); /* b0, b1 are older */
  lands(&m, 1, b1);
  ck_assert_int_eq(position(&m, 0), -1);
  ck_assert_uint_eq(flow_in_air(m.f), 3);
  lands(&m, 0, b0);
  ck_assert_uint_eq(flow_in_air(m.f), 0);
  ck_assert_int_eq(position(&m, 0), 2);
  ck_assert_int_eq(position(&m, 1), 8);
  /* The ring goes round: three more take off and land in order. */
  b0 = fly_one(&m, 0, 2, "d");
  b1 = fly_one(&m, 0, 3, "e");
  lands(&m, 0, b0);
  ck_assert_int_eq(position(&m, 0), 3);
  b2 = fly_one(&m, 0, 4, "f");
  lands(&m, 0, b1);
  lands(&m, 0, b2);
  ck_assert_int_eq(position(&m, 0), 5);
  flow_close(m.f);
}
END_TEST

/* A batch in the middle of the air is abandoned: the later ones (one of
 * them durable already) and the current one go with it, their claims go
 * back unless durable, and no position ever passes its records, not even
 * once the older batch is durable. */
START_TEST(test_air_abandoned_middle_takes_later_ones) {
  tmember_t m;
  member_start(&m);
  store_batch_t *b0 = fly_one(&m, 0, 0, "a");
  store_batch_t *b1 = fly_one(&m, 0, 1, "b");
  (void)b1;
  store_batch_t *b2 = fly_one(&m, 1, 5, "c");
  push(&m, 1, 6, "d");
  answer(&m, 0, 1, 6, KHOST_OK); /* in the current batch */
  lands(&m, 2, b2);
  flow_batch_abandon(m.f, flow_air_at(m.f, 1));
  ck_assert_uint_eq(flow_in_air(m.f), 1);
  ck_assert_uint_eq(flow_batch_len(flow_cur(m.f)), 0);
  ck_assert_int_eq(lookup(&m, "b"), STORE_NEW);
  ck_assert_int_eq(lookup(&m, "c"), STORE_SEEN); /* durable: stays seen */
  ck_assert_int_eq(lookup(&m, "d"), STORE_NEW);
  ck_assert_int_eq(lookup(&m, "a"), STORE_IN_FLIGHT);
  lands(&m, 0, b0);
  ck_assert_int_eq(position(&m, 0), 1); /* "a" only */
  ck_assert_int_eq(position(&m, 1), -1);
  ck_assert_uint_eq(flow_in_air(m.f), 0);
  flow_close(m.f);
}
END_TEST

/* A revoke with batches in the air: the member takes every batch back
 * before the partitions go (here: all durable, out of order), so the
 * revoked partition's positions are complete when they are committed;
 * a partition lost with batches in the air gets no position from them. */
START_TEST(test_air_revoke_with_batches_in_the_air) {
  tmember_t m;
  member_start(&m);
  store_batch_t *b0 = fly_one(&m, 0, 0, "a");
  store_batch_t *b1 = fly_one(&m, 1, 3, "b");
  store_batch_t *b2 = fly_one(&m, 0, 1, "c");
  push(&m, 0, 2, "queued");
  lands(&m, 1, b1);
  lands(&m, 2, b2);
  lands(&m, 0, b0);
  ck_assert_int_eq(position(&m, 0), 2); /* revoked: committed, then gone */
  flow_drop(m.f, flow_find(m.f, "t", 0));
  ck_assert_uint_eq(flow_queued(m.f), 0);
  /* Lost with two batches in the air: nothing of it is committed. */
  b0 = fly_one(&m, 1, 4, "d");
  b1 = fly_one(&m, 1, 5, "e");
  flow_drop(m.f, flow_find(m.f, "t", 1));
  lands(&m, 1, b1);
  lands(&m, 0, b0);
  ck_assert_int_eq(position(&m, 1), -2);
  flow_assign(m.f, "t", 1);
  ck_assert_int_eq(position(&m, 1), -1);
  flow_close(m.f);
}
END_TEST

/* A copy of an ID claimed by a batch in the air (not durable yet) is a
 * duplicate here: that batch becomes durable before the copy's position
 * is committed, or the copy is abandoned with it. */
START_TEST(test_air_copy_of_claim_in_the_air_is_duplicate) {
  tmember_t m;
  member_start(&m);
  store_batch_t *b0 = fly_one(&m, 0, 0, "a");
  fly_one(&m, 0, 1, "b");
  push(&m, 1, 0, "a");
  expect_none(&m, 0); /* skipped, not called */
  ck_assert_uint_eq(flow_batch_len(flow_cur(m.f)), 1);
  ck_assert_uint_eq(m.counts.duplicates, 1);
  lands(&m, 0, b0);
  ck_assert_int_eq(position(&m, 0), 1);
  flow_close(m.f); /* the batch still in the air is abandoned */
  ck_assert_int_eq(lookup(&m, "b"), STORE_NEW);
}
END_TEST

/* The batches in the air hold at most max_air_bytes of records (their
 * share of memory_limit): another takes off only below it, the first
 * always (a batch bigger than the bound still goes), and landing frees
 * room. */
START_TEST(test_air_bytes_bound_room) {
  tmember_t m;
  member_conf(&m);
  m.conf.max_air_bytes = 250; /* two records of 100 bytes and a half */
  member_open(&m);
  push(&m, 0, 0, "a");
  push(&m, 0, 1, "b");
  push(&m, 0, 2, "c");
  answer(&m, 0, 0, 0, KHOST_OK);
  answer(&m, 0, 0, 1, KHOST_OK);
  answer(&m, 0, 0, 2, KHOST_OK);
  ck_assert(flow_air_room(m.f));
  store_batch_t *b0 = flow_batch_take_off(m.f); /* 300 bytes: over */
  ck_assert_uint_eq(flow_air_bytes(m.f), 300);
  ck_assert(!flow_air_room(m.f));
  lands(&m, 0, b0);
  ck_assert_uint_eq(flow_air_bytes(m.f), 0);
  store_batch_t *b1 = fly_one(&m, 1, 0, "d");
  store_batch_t *b2 = fly_one(&m, 1, 1, "e");
  ck_assert_uint_eq(flow_air_bytes(m.f), 200);
  ck_assert(flow_air_room(m.f)); /* below the bound: one more may go */
  store_batch_t *b3 = fly_one(&m, 1, 2, "f");
  ck_assert(!flow_air_room(m.f)); /* 300 bytes, and every slot taken */
  flow_batch_abandon(m.f, flow_air_at(m.f, 1));
  ck_assert_uint_eq(flow_air_bytes(m.f), 100);
  ck_assert(flow_air_room(m.f));
  lands(&m, 0, b1);
  ck_assert_int_eq(position(&m, 1), 1);
  (void)b2;
  (void)b3;
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ replays */

START_TEST(test_replay_reprocess_handles_seen_again) {
  tmember_t m;
  member_start(&m);
  push(&m, 0, 0, "old");
  answer(&m, 0, 0, 0, KHOST_OK);
  make_durable(&m);
  flow_drop(m.f, flow_find(m.f, "t", 0));
  store_range_t r = {.from = 0,
                     .to = 10,
                     .mode = STORE_REPLAY_REPROCESS,
                     .recorded_ms = wall_now + 1};
  store_mem_add_range(store, m.conf.scope, "t", 0, &r);
  flow_assign(m.f, "t", 0);
  push(&m, 0, 0, "old");
  flow_job_t job = expect_call(&m, 0, 0, 0);
  ck_assert(job.replay);
  ck_assert_int_eq(flow_outcome(m.f, &job, KHOST_OK, 0), 0);
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 0);
  flow_close(m.f);
}
END_TEST

/* ------------------------------------------------------------ lanes */

/* A member with concurrency n, records ordered by key. */
static void member_lanes(tmember_t *m, int n) {
  member_conf(m);
  m->conf.concurrency = n;
  m->conf.order_by = FLOW_ORDER_KEY;
  member_open(m);
}

static flow_job_t next_call(tmember_t *m, int64_t now) {
  flow_job_t job;
  ck_assert_int_eq(flow_next(m->f, now, &job), FLOW_CALL);
  return job;
}

static void reply(tmember_t *m, const flow_job_t *job, khost_result_t res,
                  int64_t now) {
  ck_assert_int_eq(flow_outcome(m->f, job, res, now), 0);
}

/* Outcomes land out of order; the position is the lowest offset without a
 * durable outcome, and so is the offset stored with the batch. */
START_TEST(test_lanes_out_of_order_position) {
  tmember_t m;
  member_lanes(&m, 8);
  push_key(&m, 0, 0, "a", "e0");
  push_key(&m, 0, 1, "b", "e1");
  push_key(&m, 0, 2, "c", "e2");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0),
             j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0); /* one job per lane, all out */
  ck_assert_int_eq(r_offset(j1.rec), 1);
  ck_assert_int_eq(r_offset(j2.rec), 2);
  ck_assert_uint_eq(flow_in_flight(m.f), 3);
  reply(&m, &j2, KHOST_OK, 0);
  reply(&m, &j1, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -1); /* offset 0 has no outcome */
  ck_assert_int_eq(stored(&m, 0), 0);
  reply(&m, &j0, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 3);
  ck_assert_int_eq(stored(&m, 0), 3);
  ck_assert_uint_eq(flow_in_flight(m.f), 0);
  ck_assert_uint_eq(flow_queued(m.f), 0);
  flow_close(m.f);
}
END_TEST

/* At most one job per lane, in offset order, and at most concurrency jobs
 * in all. */
START_TEST(test_lanes_one_per_lane_and_concurrency) {
  tmember_t m;
  member_lanes(&m, 2);
  push_key(&m, 0, 0, "a", "e0");
  push_key(&m, 0, 1, "a", "e1");
  push_key(&m, 1, 0, "b", "e2");
  push_key(&m, 1, 1, "c", "e3");
  flow_job_t ja = next_call(&m, 0);
  ck_assert_int_eq(r_offset(ja.rec), 0);
  flow_job_t jb = next_call(&m, 0);
  ck_assert_int_eq(r_partition(jb.rec), 1);
  expect_none(&m, 0); /* two out: the concurrency */
  reply(&m, &ja, KHOST_OK, 0);
  flow_job_t jn = next_call(&m, 0);
  expect_none(&m, 0);
  reply(&m, &jb, KHOST_OK, 0);
  flow_job_t jm = next_call(&m, 0);
  /* Lane a's second record and lane c, in either order. */
  ck_assert_int_eq(r_offset(jn.rec) + r_offset(jm.rec), 2);
  ck_assert_int_ne(r_partition(jn.rec), r_partition(jm.rec));
  reply(&m, &jn, KHOST_OK, 0);
  reply(&m, &jm, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 2);
  ck_assert_int_eq(position(&m, 1), 2);
  flow_close(m.f);
}
END_TEST

/* A RETRY holds its lane only: the other lanes of the partition go on and
 * the partition is not paused; the lane's later record waits for it. */
START_TEST(test_lanes_retry_holds_only_its_lane) {
  tmember_t m;
  member_lanes(&m, 8);
  push_key(&m, 0, 0, "a", "a0");
  push_key(&m, 0, 1, "b", "b0");
  push_key(&m, 0, 2, "a", "a1");
  push_key(&m, 0, 3, "b", "b1");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0);
  reply(&m, &j0, KHOST_RETRY, 0);
  reply(&m, &j1, KHOST_OK, 0);
  flow_job_t j3 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j3.rec), 3);
  reply(&m, &j3, KHOST_OK, 0);
  expect_none(&m, 0); /* offset 2 waits behind offset 0 */
  ck_assert(!flow_part_wants_pause(m.f, flow_find(m.f, "t", 0), 0));
  ck_assert_int_gt(flow_ready_in(m.f, 0, 10000), 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -1);
  flow_job_t again = next_call(&m, 1000); /* after the backoff */
  ck_assert_int_eq(r_offset(again.rec), 0);
  ck_assert_int_eq(again.attempt, 2);
  reply(&m, &again, KHOST_OK, 1000);
  flow_job_t j2 = next_call(&m, 1000);
  ck_assert_int_eq(r_offset(j2.rec), 2);
  reply(&m, &j2, KHOST_OK, 1000);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 4);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 4);
  flow_close(m.f);
}
END_TEST

/* Records without a key are ordered among themselves (the null lane), not
 * with the keyed ones. */
START_TEST(test_lanes_null_key_lane) {
  tmember_t m;
  member_lanes(&m, 8);
  push_key(&m, 0, 0, NULL, "n0");
  push_key(&m, 0, 1, NULL, "n1");
  push_key(&m, 0, 2, "k", "k0");
  flow_job_t j0 = next_call(&m, 0), j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0);
  ck_assert_int_eq(r_offset(j2.rec), 2);
  expect_none(&m, 0);
  reply(&m, &j0, KHOST_OK, 0);
  flow_job_t j1 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j1.rec), 1);
  reply(&m, &j1, KHOST_OK, 0);
  reply(&m, &j2, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 3);
  flow_close(m.f);
}
END_TEST

/* Two copies of one event ID in two lanes: the second waits on the claim
 * of the first and is then a duplicate, never handled. */
START_TEST(test_lanes_same_id_two_lanes) {
  tmember_t m;
  member_lanes(&m, 8);
  push_key(&m, 0, 0, "a", "same");
  push_key(&m, 0, 1, "b", "same");
  flow_job_t j0 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0);
  expect_none(&m, 0); /* the copy waits for the claim */
  expect_none(&m, 50);
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 0);
  reply(&m, &j0, KHOST_OK, 50);
  expect_none(&m, 100); /* now a duplicate of the batch's own */
  ck_assert_int_eq(atomic_load(&m.counts.duplicates), 1);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 1);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 2);
  flow_close(m.f);
}
END_TEST

/* A partition revoked (or lost) with jobs out: their answers are dropped,
 * their claims go back, and nothing of the partition is committed. */
START_TEST(test_lanes_revoke_with_jobs_out) {
  tmember_t m;
  member_lanes(&m, 8);
  push_key(&m, 0, 0, "a", "out");
  push_key(&m, 0, 1, "a", "queued");
  push_key(&m, 0, 2, "b", "done");
  push_key(&m, 1, 0, "c", "other");
  flow_job_t j0 = next_call(&m, 0), j2 = next_call(&m, 0),
             j1 = next_call(&m, 0);
  ck_assert_int_eq(r_partition(j1.rec), 1);
  reply(&m, &j2, KHOST_OK, 0);
  flow_drop(m.f, flow_find(m.f, "t", 0));
  ck_assert_uint_eq(flow_queued(m.f), 1); /* p1's, out */
  ck_assert_uint_eq(flow_in_flight(m.f), 2);
  reply(&m, &j0, KHOST_OK, 0); /* answered after the partition went */
  ck_assert_uint_eq(flow_in_flight(m.f), 1);
  ck_assert_int_eq(lookup(&m, "out"), STORE_NEW);
  ck_assert_int_eq(lookup(&m, "queued"), STORE_NEW);
  reply(&m, &j1, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -2); /* not owned: nothing commits */
  ck_assert_int_eq(position(&m, 1), 1);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 2);
  flow_assign(m.f, "t", 0); /* assigned again: starts afresh */
  ck_assert_int_eq(position(&m, 0), -1);
  flow_close(m.f);
}
END_TEST

/* An abandoned batch's outcomes are not passed: the position and the
 * stored offset stay below them. */
START_TEST(test_lanes_abandoned_never_passed) {
  tmember_t m;
  member_lanes(&m, 8);
  push_key(&m, 0, 0, "a", "x0");
  push_key(&m, 0, 1, "b", "x1");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0);
  reply(&m, &j0, KHOST_OK, 0);
  flow_batch_abandon(m.f, flow_cur(m.f));
  reply(&m, &j1, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -1);
  ck_assert_int_eq(stored(&m, 0), 0);
  flow_close(m.f);
}
END_TEST

/* A member's queue is bounded (queue_max): full is normal while jobs run
 * (the member takes no more records meanwhile, flow_full()); a full queue
 * that cannot move (a retry holds the only lane) pauses the partitions
 * with records queued, until the queue is below half. */
START_TEST(test_lanes_queue_bound_pauses) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 4;
  m.conf.queue_max = 4;
  member_open(&m);
  flow_part_t *p0 = flow_find(m.f, "t", 0), *p1 = flow_find(m.f, "t", 1);
  for (int i = 0; i < 3; i++) {
    char id[16];
    snprintf(id, sizeof(id), "q%d", i);
    push_key(&m, 0, i, "a", id);
  }
  ck_assert(!flow_full(m.f));
  push_key(&m, 0, 3, "a", "q3");
  ck_assert(flow_full(m.f));
  ck_assert(!flow_part_wants_pause(m.f, p0, 0)); /* a lane is ready */
  flow_job_t j = next_call(&m, 0);
  ck_assert(!flow_part_wants_pause(m.f, p0, 0)); /* a job is out */
  reply(&m, &j, KHOST_RETRY, 0);                 /* the lane waits now */
  push_key(&m, 0, 4, "a", "q4");
  ck_assert(flow_full(m.f));
  ck_assert(flow_part_wants_pause(m.f, p0, 0));  /* stuck */
  ck_assert(!flow_part_wants_pause(m.f, p1, 0)); /* nothing of it queued */
  flow_part_set_paused(p0, 1);
  j = next_call(&m, 1000); /* the retry */
  reply(&m, &j, KHOST_OK, 1000);
  j = next_call(&m, 1000);
  reply(&m, &j, KHOST_OK, 1000);
  j = next_call(&m, 1000);
  reply(&m, &j, KHOST_OK, 1000);
  ck_assert(flow_part_wants_pause(m.f, p0, 1000)); /* 2 queued: half */
  j = next_call(&m, 1000);
  reply(&m, &j, KHOST_OK, 1000);
  ck_assert(!flow_part_wants_pause(m.f, p0, 1000)); /* 1: below half */
  flow_close(m.f);
}
END_TEST

/* A record that comes while the queue is full (the member polls every
 * POLL_MS while its workers stay busy) pauses the partitions with records
 * queued although jobs are out, until the queue is below half: the queue
 * does not grow while the calls take long. */
START_TEST(test_lanes_past_full_queue_pauses) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 2;
  m.conf.queue_max = 4;
  member_open(&m);
  flow_part_t *p0 = flow_find(m.f, "t", 0), *p1 = flow_find(m.f, "t", 1);
  push_key(&m, 0, 0, "a", "a0");
  push_key(&m, 0, 1, "b", "b0");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0);
  push_key(&m, 0, 2, "c", "c0");
  push_key(&m, 0, 3, "d", "d0");
  ck_assert(flow_full(m.f));                     /* two out, two queued */
  ck_assert(!flow_part_wants_pause(m.f, p0, 0)); /* full, jobs out: normal */
  push_key(&m, 1, 0, "g", "g0");                 /* one past the bound */
  ck_assert(flow_part_wants_pause(m.f, p0, 0));
  ck_assert(flow_part_wants_pause(m.f, p1, 0));
  flow_part_set_paused(p0, 1);
  flow_part_set_paused(p1, 1);
  reply(&m, &j0, KHOST_OK, 0);
  j0 = next_call(&m, 0); /* c out; 4 not finished */
  reply(&m, &j1, KHOST_OK, 0);
  j1 = next_call(&m, 0); /* d out; 3 */
  ck_assert(flow_part_wants_pause(m.f, p0, 0));
  reply(&m, &j0, KHOST_OK, 0);
  j0 = next_call(&m, 0); /* g out; 2: half */
  ck_assert_int_eq(r_partition(j0.rec), 1);
  ck_assert(flow_part_wants_pause(m.f, p0, 0));
  ck_assert(flow_part_wants_pause(m.f, p1, 0));
  reply(&m, &j1, KHOST_OK, 0); /* 1: below half */
  ck_assert(!flow_part_wants_pause(m.f, p0, 0));
  ck_assert(!flow_part_wants_pause(m.f, p1, 0));
  reply(&m, &j0, KHOST_OK, 0);
  flow_close(m.f);
}
END_TEST

/* The queue's bound in bytes (queue_bytes, a member's share of
 * memory_limit): records of 100 bytes, a bound of 250: full at the third,
 * and no longer once one of them has its outcome. */
START_TEST(test_lanes_queue_bytes_bound) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 4;
  m.conf.queue_bytes = 250;
  member_open(&m);
  push_key(&m, 0, 0, "a", "y0");
  push_key(&m, 0, 1, "b", "y1");
  ck_assert(!flow_full(m.f));
  push_key(&m, 0, 2, "c", "y2");
  ck_assert(flow_full(m.f));
  flow_job_t j = next_call(&m, 0);
  ck_assert(flow_full(m.f)); /* out, not finished */
  reply(&m, &j, KHOST_OK, 0);
  ck_assert(!flow_full(m.f));
  flow_close(m.f);
}
END_TEST

/* Retries used up with concurrency: the record goes to the dead-letter
 * topic while the other keys run on; its key's next record waits for the
 * write. */
START_TEST(test_lanes_retries_used_up_to_dead_letter) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 8;
  m.conf.order_by = FLOW_ORDER_KEY;
  m.conf.retry_max = 0;
  m.conf.dead_letter_topic = "dlt";
  member_open(&m);
  push_key(&m, 0, 0, "a", "a0");
  push_key(&m, 0, 1, "b", "b0");
  push_key(&m, 0, 2, "a", "a1");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0);
  ck_assert_int_eq(r_offset(j1.rec), 1);
  reply(&m, &j0, KHOST_RETRY, 0); /* no retry left */
  flow_job_t dl;
  ck_assert_int_eq(flow_next(m.f, 0, &dl), FLOW_DEAD_LETTER);
  ck_assert_int_eq(r_offset(dl.rec), 0);
  expect_none(&m, 0); /* a1 waits for the write, b0 is out */
  reply(&m, &j1, KHOST_OK, 0);
  expect_none(&m, 0);
  flow_dead_letter_done(m.f, dl.part, 0, NULL, 0);
  flow_job_t j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j2.rec), 2);
  reply(&m, &j2, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 3);
  ck_assert_int_eq(atomic_load(&m.counts.failed), 1);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 2);
  flow_close(m.f);
}
END_TEST

/* order_by = "partition" keeps today's order: one lane per partition. */
START_TEST(test_lanes_order_by_partition) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 8;
  m.conf.order_by = FLOW_ORDER_PARTITION;
  member_open(&m);
  push_key(&m, 0, 0, "a", "p0");
  push_key(&m, 0, 1, "b", "p1");
  push_key(&m, 1, 0, "c", "p2");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0);
  ck_assert_int_ne(r_partition(j0.rec), r_partition(j1.rec));
  expect_none(&m, 0);
  reply(&m, &j0, KHOST_OK, 0);
  reply(&m, &j1, KHOST_OK, 0);
  flow_job_t j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j2.rec), 1);
  reply(&m, &j2, KHOST_OK, 0);
  flow_close(m.f);
}
END_TEST

/* order_by = "header:aggregateId": records of one aggregate one at a time
 * in offset order, whatever their key (all "k" here); other aggregates
 * beside them; the records without the header form one lane. */
START_TEST(test_lanes_order_by_header) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 8;
  m.conf.order_by = FLOW_ORDER_HEADER;
  m.conf.order_header = "aggregateId";
  member_open(&m);
  push_agg(&m, 0, 0, "A", "x0");
  push_agg(&m, 0, 1, "B", "x1");
  push_agg(&m, 0, 2, "A", "x2");
  push_agg(&m, 0, 3, NULL, "x3");
  push_agg(&m, 0, 4, NULL, "x4");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0),
             j3 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0);
  ck_assert_int_eq(r_offset(j1.rec), 1);
  ck_assert_int_eq(r_offset(j3.rec), 3);
  expect_none(&m, 0); /* A's second and the second without waiting */
  reply(&m, &j3, KHOST_OK, 0);
  flow_job_t j4 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j4.rec), 4);
  expect_none(&m, 0);
  reply(&m, &j0, KHOST_OK, 0);
  flow_job_t j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j2.rec), 2);
  reply(&m, &j1, KHOST_OK, 0);
  reply(&m, &j2, KHOST_OK, 0);
  reply(&m, &j4, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 5);
  ck_assert_int_eq(atomic_load(&m.counts.handled), 5);
  flow_close(m.f);
}
END_TEST

/* order_by = "event_id": records of one key with different event IDs run
 * side by side. */
START_TEST(test_lanes_order_by_event_id) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 8;
  m.conf.order_by = FLOW_ORDER_EVENT_ID;
  member_open(&m);
  push_key(&m, 0, 0, "a", "e0");
  push_key(&m, 0, 1, "a", "e1");
  push_key(&m, 0, 2, "a", "e2");
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0),
             j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec) + r_offset(j1.rec) + r_offset(j2.rec), 3);
  ck_assert_uint_eq(flow_in_flight(m.f), 3);
  reply(&m, &j2, KHOST_OK, 0);
  reply(&m, &j1, KHOST_OK, 0);
  reply(&m, &j0, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 3);
  flow_close(m.f);
}
END_TEST

/* order_by = "none": every record on its own, even of one key, at most
 * concurrency out; answers in any order, the position waits for the
 * lowest offset without one. */
START_TEST(test_lanes_order_by_none) {
  tmember_t m;
  member_conf(&m);
  m.conf.concurrency = 3;
  m.conf.order_by = FLOW_ORDER_NONE;
  member_open(&m);
  for (int i = 0; i < 4; i++) {
    char id[16];
    snprintf(id, sizeof(id), "n%d", i);
    push_key(&m, 0, i, "a", id);
  }
  flow_job_t j0 = next_call(&m, 0), j1 = next_call(&m, 0),
             j2 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j0.rec), 0);
  ck_assert_int_eq(r_offset(j1.rec), 1);
  ck_assert_int_eq(r_offset(j2.rec), 2);
  expect_none(&m, 0); /* three out: the concurrency */
  reply(&m, &j2, KHOST_OK, 0);
  flow_job_t j3 = next_call(&m, 0);
  ck_assert_int_eq(r_offset(j3.rec), 3);
  reply(&m, &j3, KHOST_OK, 0);
  reply(&m, &j1, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), -1); /* offset 0 has no outcome */
  reply(&m, &j0, KHOST_OK, 0);
  make_durable(&m);
  ck_assert_int_eq(position(&m, 0), 4);
  flow_close(m.f);
}
END_TEST

static void add_lane_tests(TCase *tc) {
  tcase_add_test(tc, test_lanes_out_of_order_position);
  tcase_add_test(tc, test_lanes_one_per_lane_and_concurrency);
  tcase_add_test(tc, test_lanes_retry_holds_only_its_lane);
  tcase_add_test(tc, test_lanes_null_key_lane);
  tcase_add_test(tc, test_lanes_same_id_two_lanes);
  tcase_add_test(tc, test_lanes_revoke_with_jobs_out);
  tcase_add_test(tc, test_lanes_abandoned_never_passed);
  tcase_add_test(tc, test_lanes_queue_bound_pauses);
  tcase_add_test(tc, test_lanes_past_full_queue_pauses);
  tcase_add_test(tc, test_lanes_queue_bytes_bound);
  tcase_add_test(tc, test_lanes_retries_used_up_to_dead_letter);
  tcase_add_test(tc, test_lanes_order_by_partition);
  tcase_add_test(tc, test_lanes_order_by_header);
  tcase_add_test(tc, test_lanes_order_by_event_id);
  tcase_add_test(tc, test_lanes_order_by_none);
}

Suite *flow_suite(void) {
  Suite *s = suite_create("flow");
  TCase *tc = tcase_create("records");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_order_within_partition);
  tcase_add_test(tc, test_fail_reason_in_dead_letter);
  tcase_add_test(tc, test_batch_never_exceeds_max_batch);
  tcase_add_test(tc, test_duplicate_skipped);
  tcase_add_test(tc, test_next_id_hashed_ahead);
  tcase_add_test(tc, test_claim_on_its_way_others_first);
  tcase_add_test(tc, test_next_window_asked_at_middle);
  tcase_add_test(tc, test_settled_records_drop_headers);
  tcase_add_test(tc, test_in_flight_elsewhere_waits_then_skips);
  tcase_add_test(tc, test_in_flight_elsewhere_abandoned_is_handled);
  tcase_add_test(tc, test_missing_id_process);
  tcase_add_test(tc, test_missing_id_fail);
  suite_add_tcase(s, tc);

  tc = tcase_create("failures");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_retry_backoff_grows_then_fails);
  tcase_add_test(tc, test_retry_default_budget);
  tcase_add_test(tc, test_fail_parked_with_the_batch);
  tcase_add_test(tc, test_retries_used_up_to_dead_letter);
  tcase_add_test(tc, test_dead_letter_refused_holds_its_partition);
  tcase_add_test(tc, test_long_retry_wait_keeps_polling);
  tcase_add_test(tc, test_recorded_attempts_fail_without_call);
  tcase_add_test(tc, test_unclean_start_records_first_calls);
  tcase_add_test(tc, test_breaker_opens_and_closes_on_clock);
  suite_add_tcase(s, tc);

  tc = tcase_create("durability");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_revoke_during_retry);
  tcase_add_test(tc, test_lost_commits_nothing);
  tcase_add_test(tc, test_positions_never_go_backwards);
  tcase_add_test(tc, test_batch_not_durable_holds_commits);
  tcase_add_test(tc, test_abandoned_batch_releases_claims);
  tcase_add_test(tc, test_offsets_stored_with_batch);
  tcase_add_test(tc, test_replay_reprocess_handles_seen_again);
  suite_add_tcase(s, tc);

  tc = tcase_create("lanes");
  tcase_add_checked_fixture(tc, setup, teardown);
  add_lane_tests(tc);
  suite_add_tcase(s, tc);

  tc = tcase_create("in the air");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_air_out_of_order_durable_waits_for_older);
  tcase_add_test(tc, test_air_abandoned_middle_takes_later_ones);
  tcase_add_test(tc, test_air_revoke_with_batches_in_the_air);
  tcase_add_test(tc, test_air_copy_of_claim_in_the_air_is_duplicate);
  tcase_add_test(tc, test_air_bytes_bound_room);
  suite_add_tcase(s, tc);
  return s;
}
