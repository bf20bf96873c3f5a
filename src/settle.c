/*
 * Settling a member's outcomes: the plugin flushes its effects, the batch
 * of marks becomes durable (one store transaction, on the durability
 * thread when there is one), and only then are the positions committed.
 * A batch that cannot be made durable holds every partition (polling goes
 * on) until it can, or is abandoned with every batch after it, so that
 * offsets stay in order.
 *
 * Threads: the member's thread; the batches in the air are committed on the
 * durability thread (durable.h).
 */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"
#include "member_int.h"

/* Longest wait between two tries of a batch the store refused (a full
 * disk, a read-only file): the hold ends at most this long after the
 * fault. */
#define SETTLE_HOLD_MAX_MS 2000

/* The wait after the attempt-th failed try of a batch: doubling from
 * 200 ms, at most SETTLE_HOLD_MAX_MS. */
static int64_t hold_backoff_ms(int attempt) {
  int64_t ms = 100LL << (attempt < 8 ? attempt : 8);
  return ms < SETTLE_HOLD_MAX_MS ? ms : SETTLE_HOLD_MAX_MS;
}

/* Make the plugin's effects and the marks of b durable. Transient faults
 * (SQLite busy, full, read-only; a failing flush) are waited out with every
 * partition paused and polling going on; a permanent one stops the
 * pipeline. A stop while waiting gets one last try, so that a fault that
 * cleared since the previous one does not cost the batch. A fault the
 * durability thread met is passed in as *first (NULL: none yet; the first
 * try is made here). */
static int make_durable(member_t *m, flow_batch_t *b, int wait,
                        const char *first, int first_transient) {
  store_batch_t *sb = flow_batch_store(b);
  char err[512];
  for (int attempt = 1, last = 0;; attempt++) {
    int transient = 1;
    err[0] = '\0';
    if (attempt == 1 && first) {
      snprintf(err, sizeof(err), "%s", first);
      transient = first_transient;
    } else if (member_flush(m, err, sizeof(err)) == 0 &&
               (!sb || store_batch_pending(sb) == 0 ||
                store_batch_commit(sb, &transient, err, sizeof(err)) == 0)) {
      break;
    }
    if (!transient) {
      member_fail(m, "%s: dedup store: %s", m->who, err);
      return -1;
    }
    if (!wait || last) {
      log_msg(KHOST_LOG_WARNING, m->who,
              "cannot make the batch durable before %s: %s",
              last ? "stopping" : "the partitions go", err);
      return -1;
    }
    log_msg(KHOST_LOG_WARNING, m->who,
            "cannot make the batch durable (attempt %d), holding every "
            "partition and committing nothing: %s",
            attempt, err);
    if (!flow_held(m->flow)) {
      flow_set_hold(m->flow, 1);
      metrics_held(m->env->metrics, m->index, 1);
      poll_pauses(m);
    }
    last = poll_wait(m, hold_backoff_ms(attempt));
  }
  if (flow_held(m->flow)) {
    log_msg(KHOST_LOG_NOTICE, m->who, "the batch is durable again: resuming");
    flow_set_hold(m->flow, 0);
    metrics_held(m->env->metrics, m->index, 0);
  }
  return 0;
}

/* Make b durable here, then advance; or abandon it. */
static int settle_batch(member_t *m, flow_batch_t *b, int wait,
                        const char *first, int first_transient) {
  if (flow_batch_len(b) == 0)
    return 0;
  if (make_durable(m, b, wait, first, first_transient) != 0) {
    flow_batch_abandon(m->flow, b);
    return -1;
  }
  flow_batch_durable(m->flow, b);
  return 0;
}

/* Hand the current batch to the durability thread (the flow has room for
 * it in the air). */
static void take_off(member_t *m) {
  durable_send(m->durable, flow_batch_take_off(m->flow));
}

/* Take back every batch still in the air without looking at its result:
 * they are abandoned with an older one, and must be out of the durability
 * thread's hands first (it tries none after the failure, so this is
 * quick). */
static void land_all(member_t *m) {
  store_batch_t *sb;
  int rc, transient;
  char err[512];
  do
    durable_land(m->durable, 1, &sb, &rc, &transient, err, sizeof(err));
  while (sb);
}

/* The oldest batch in the air, sb, has landed: advance past it, or settle
 * it here when its transaction failed or was not tried (wait: as
 * make_durable()). -1 when it was abandoned, and every later batch with
 * it (their records come after). */
static int landed(member_t *m, store_batch_t *sb, int rc, int transient,
                  const char *err, int wait) {
  flow_batch_t *b = flow_air(m->flow);
  g_assert(b && flow_batch_store(b) == sb);
  if (rc == 0) {
    flow_batch_durable(m->flow, b);
    return 0;
  }
  if (make_durable(m, b, wait, rc == DURABLE_NOT_TRIED ? NULL : err,
                   transient) == 0) {
    flow_batch_durable(m->flow, b);
    return 0;
  }
  land_all(m);
  flow_batch_abandon(m->flow, b);
  return -1;
}

/* Take the batches in the air back as they land, oldest first, and
 * advance past them, or settle here those whose transaction failed (wait:
 * as make_durable()). min: how many to wait for at least (SIZE_MAX: all).
 * Returns 1 while some are still in the air, 0 when none is, -1 when one
 * was abandoned (and every later one, the current batch too). */
static int land(member_t *m, size_t min, int wait) {
  store_batch_t *sb;
  int rc = 0, transient = 0, r = 0, moved = 0;
  char err[512];
  for (size_t n = 0; r == 0 && flow_in_air(m->flow) > 0; n++) {
    if (durable_land(m->durable, n < min, &sb, &rc, &transient, err,
                     sizeof(err)))
      break;
    r = landed(m, sb, rc, transient, err, wait);
    moved = 1;
  }
  if (moved)
    commit_positions(m, 0);
  if (r < 0)
    return -1;
  return flow_in_air(m->flow) > 0;
}

int settle_land(member_t *m, int block, int wait) {
  if (!m->durable)
    return 0;
  return land(m, block ? SIZE_MAX : 0, wait);
}

/* Make the pending outcomes durable, then commit their offsets, here and
 * now: the batches in the air first, then the current one. wait:
 * transient faults are waited out (polling); else one try (inside a
 * rebalance callback, where polling is not allowed). A batch that cannot
 * be made durable is abandoned, and so is every later one (offsets stay
 * in order). */
void settle(member_t *m, int sync, int wait) {
  if (settle_land(m, 1, wait) == 0)
    settle_batch(m, flow_cur(m->flow), wait, NULL, 0);
  commit_positions(m, sync);
}

/* The batch is due: with a durability thread, make it durable there once
 * the plugin has flushed its effects, while the member goes on; it waits
 * only while no other batch may take off (every slot taken, or the
 * member's share of memory_limit for them used). */
void settle_due(member_t *m) {
  char err[512];
  if (!m->durable ||
      store_batch_pending(flow_batch_store(flow_cur(m->flow))) == 0) {
    settle(m, 0, 1);
    return;
  }
  int r = land(m, 0, 1);
  while (r >= 0 && !flow_air_room(m->flow))
    r = land(m, 1, 1);
  if (r < 0)
    return; /* abandoned, the current batch too */
  if (member_flush(m, err, sizeof(err)) != 0)
    settle(m, 0, 1); /* waits the flush out, then made durable here */
  else
    take_off(m);
}
