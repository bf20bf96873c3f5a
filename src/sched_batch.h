/*
 * Helper threads of a member (the durability thread, the dedup store's
 * segment, load and prune threads) run under SCHED_BATCH: the scheduler
 * does not let one of them preempt a running thread when it wakes up.
 * Each of them is woken by the member thread's own work (a batch handed
 * over, a set over its budget); on a machine with as many busy threads as
 * cores, a woken helper would otherwise take the member's CPU at once and
 * the member would wait for it. Under SCHED_BATCH it runs at the next
 * tick or on an idle CPU instead, with the same nice value and share of
 * the CPU as before.
 *
 * Best effort: a kernel or container that refuses it leaves the thread
 * as it was.
 */
#ifndef KHOST_SCHED_BATCH_H
#define KHOST_SCHED_BATCH_H

#include <pthread.h>
#include <sched.h>

static inline void sched_batch_self(void) {
#ifdef SCHED_BATCH
  struct sched_param sp = {0};
  (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
#endif
}

#endif
