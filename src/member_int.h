/*
 * Inside a member (member.c): the librdkafka adapter around its flow core
 * (flow.h). Nothing else includes this.
 *
 * Threads: all of it belongs to the member's thread, except the busy_*
 * fields, which the pipeline's watchdog reads.
 */
#ifndef KHOST_MEMBER_INT_H
#define KHOST_MEMBER_INT_H

#include <glib.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "dead_letter.h"
#include "durable.h"
#include "flow.h"
#include "member.h"
#include "plugin_loader.h"
#include "workers.h"

struct member {
  const member_env_t *env;
  int index;
  char who[160];
  pthread_t thread;
  rd_kafka_t *rk;
  plugin_instance_t *inst; /* insts[0] */
  /* One instance per worker (concurrency > 1; else one, and no worker):
   * member_workers.c. */
  plugin_instance_t **insts;
  int n_insts;
  struct state **views; /* each worker's view of state, or NULL */
  workers_t *workers;   /* NULL with concurrency 1 */
  /* Per instance (concurrency > 1): its worker has a job out; it answered
   * a record since its last flush() (member_flush()). */
  unsigned char *inst_busy, *inst_dirty;
  flow_job_t *inst_job; /* per instance: its job out, while busy */
  /* Per instance: assigned() / revoked() calls kept for it while its
   * worker was busy (member_workers.c, a partition_call each), made
   * once it answers, before its next job. */
  GPtrArray **inst_later;
  /* A revoke's deadline (monotonic ms), while one is under way: flush()
   * waits no longer for a busy instance (0: no deadline). */
  int64_t flush_by;
  rd_kafka_queue_t *wake_q; /* the consumer queue, yielded on an answer */
  int64_t polled_at;        /* the last rd_kafka_consumer_poll() (poll.c) */
  dead_letter_t *dlq;       /* NULL without a dead-letter topic */
  /* The heads (flow_part_t, a partition's or a lane's) whose dead-letter
   * write is in flight: the write is their user pointer. */
  GPtrArray *dl_heads;

  flow_conf_t fc;             /* the flow core's settings */
  flow_t *flow;               /* partitions, records, batches, positions */
  struct state *state;        /* host-managed plugin state (NULL: no store) */
  int breaker_open;           /* as the flow core last said (for the metrics) */
  int64_t recommit_at;        /* a commit failed: when to send it again */
  rd_kafka_queue_t *commit_q; /* the result of the async commit */
  int commit_in_flight;       /* an async commit awaits its result */
  int commit_behind;          /* a commit waits for the one in flight, or
                               * for commit_interval to pass */
  int commit_at_once;         /* commit_final(): commit_interval is not
                               * waited for */
  int64_t commit_sent;        /* when the last async commit went, or 0 */
  int closing;                /* rd_kafka_consumer_close() is under way */
  int64_t unassigned_since;   /* subscribed, no rebalance answer yet (0:
                                 one came) */
  int64_t unassigned_said;    /* when that wait was last logged */

  /* With dedup on, batches are made durable (a store transaction each)
   * on the member's durability thread (durable.h) while the member
   * handles the next: the flow's batches in the air, whose offsets are
   * committed only once they have landed, in order. */
  durable_t *durable; /* NULL with dedup off */

  /* What handle() is busy with, for the watchdog (0: idle). */
  _Atomic int64_t busy_since;
  _Atomic int32_t busy_partition;
  _Atomic int64_t busy_offset;
  const char *_Atomic busy_topic;
};

/* Outcomes are made durable (one store transaction, one offset commit)
 * once max_batch of them are pending or the oldest has waited this long:
 * a member that drains librdkafka's queue faster than fetches fill it
 * would otherwise pay a transaction and a commit every few records. */
#define MEMBER_LINGER_MS 10
/* How often the broker's answer to a dead-letter write is looked for. */
#define MEMBER_DEAD_LETTER_POLL_MS 5
/* How often a member still waiting for its group's first answer says so. */
#define MEMBER_UNASSIGNED_SAY_MS 20000

/* Stop the pipeline, saying why. */
static inline void member_fail(member_t *m, const char *fmt, ...)
    KHOST_PRINTF(2, 3);
static inline void member_fail(member_t *m, const char *fmt, ...) {
  char why[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  m->env->fail(m->env->ctx, why);
}

static inline int member_stopping(const member_t *m) {
  return m->env->stopping(m->env->ctx);
}

/* Monotonic ms. */
static inline int64_t member_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* poll.c */
/* Poll until max_batch records are queued or none is waiting; wait no
 * longer than the flow core allows. */
void poll_records(member_t *m);
/* Poll for up to ms without handling anything (records are queued).
 * Returns 1 when the pipeline stops meanwhile. */
int poll_wait(member_t *m, int64_t ms);
/* A polled record to its partition's queue (or dropped, logged). */
void poll_enqueue(member_t *m, rd_kafka_message_t *msg);
/* Pause the partitions that want it (flow_part_wants_pause()); resume the
 * others. */
void poll_pauses(member_t *m);

/* settle.c */
/* Make the pending outcomes durable, then commit their offsets, here and
 * now: the batches in the air first, then the current one. wait: transient
 * faults are waited out (polling); else one try (inside a rebalance
 * callback, where polling is not allowed). */
void settle(member_t *m, int sync, int wait);
/* The current batch is due: made durable on the durability thread when
 * there is one, while the member goes on. */
void settle_due(member_t *m);
/* Take the batches in the air back as they land (block: wait for all)
 * and commit past them. 1 while some are in the air, 0 when none is, -1
 * when one was abandoned (every later one and the current batch with
 * it). */
int settle_land(member_t *m, int block, int wait);

/* commit.c */
/* Commit the durable positions (sync: wait for the result; returns its
 * error). */
rd_kafka_resp_err_t commit_positions(member_t *m, int sync);
/* ms until commit_interval allows the next async commit (0: now). */
int64_t commit_wait(const member_t *m);
/* Serve the async commit's result; send what waited for it, or what
 * failed once its time has come. */
void commit_due(member_t *m);
/* The last commit of the durable positions (shutdown): sent, as an async
 * commit, up to tries times while it is refused, COMMIT_FINAL_PAUSE_MS
 * apart, every wait for an answer ending by deadline (monotonic ms). A
 * sync commit would not do: librdkafka waits for its answer without a
 * timeout, and a broker slow to answer would hold the member past the
 * shutdown deadline. Returns 0 once every durable position is committed,
 * -1 when some are not (logged, with their offsets). */
int commit_final(member_t *m, int64_t deadline, int tries);
/* The result of a commit (librdkafka's offset commit callback). */
void commit_result(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                   rd_kafka_topic_partition_list_t *offsets, void *opaque);

/* member_workers.c */
/* Create the member's plugin instance(s): concurrency of them, each with
 * its worker index and state view (opts is filled in). */
int member_instances_create(member_t *m, plugin_instance_opts_t *opts,
                            char *err, size_t errlen);
void member_instances_destroy(member_t *m);
/* Start the workers (concurrency > 1), after the consumer exists. */
int member_workers_start(member_t *m, char *err, size_t errlen);
/* Wait for every answer, give them to the flow core, join the workers. */
void member_workers_stop(member_t *m);
/* Give the answers that came to the flow core (no waiting). */
void member_answers(member_t *m);
/* Wait for every job out and give its answer to the flow core. */
void member_drain(member_t *m);
/* A revoke of parts: wait up to ms for the jobs out of those
 * partitions only (taking every answer that comes); the calls still
 * running then are abandoned (logged, naming the partitions revoked or
 * lost: their outcomes will be dropped). */
void member_revoke_wait(member_t *m,
                        const rd_kafka_topic_partition_list_t *parts,
                        int64_t ms, int lost);
/* Wait up to ms for one answer and give it to the flow core. */
void member_answer_wait(member_t *m, int64_t ms);
/* Hand a FLOW_CALL job to an idle worker. */
void member_dispatch(member_t *m, const flow_job_t *job);
/* flush() every instance (each while its worker is idle); with
 * m->flush_by set, -1 once it passed with an instance still busy that
 * holds an outcome of the batch. */
int member_flush(member_t *m, char *err, size_t errlen);
/* assigned() / revoked() of every instance, its worker idle: at once,
 * or for a busy one when its worker answers, before its next job. */
void member_plugin_assigned(member_t *m,
                            const rd_kafka_topic_partition_list_t *parts);
void member_plugin_revoked(member_t *m,
                           const rd_kafka_topic_partition_list_t *parts,
                           int lost);

/* member_lag.c: the oldest waiting record of each partition, for the
 * consumer lag in seconds (a few times a second at most). */
void member_report_oldest(member_t *m);

/* state_assign.c */
/* Newly assigned parts start at the offset stored with the last durable
 * batch where it is ahead of the group's committed offset. */
void state_start_offsets(member_t *m, rd_kafka_topic_partition_list_t *parts);

#endif
