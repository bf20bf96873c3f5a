/*
 * The durability thread of a member: it commits one store batch (one
 * transaction) while the member handles the next records. At most one
 * batch is in the air; the member takes it back once it has landed and
 * only then commits the offsets of its records.
 *
 * Threads: durable_send() and durable_land() are called from the member's
 * thread only. The batch sent belongs to the durability thread until
 * durable_land() returns 0 for it.
 */
#ifndef KHOST_DURABLE_H
#define KHOST_DURABLE_H

#include <stddef.h>

#include "metrics.h"
#include "store.h"

typedef struct durable durable_t;

/* Start the thread, named after who (the member); the time each commit
 * takes goes to mx (may be NULL). Errors name who. */
int durable_start(durable_t **out, const char *who, metrics_t *mx, char *err,
                  size_t errlen);
/* Stop the thread (after the batch in the air, if any, has landed) and
 * free everything. NULL is ignored. */
void durable_stop(durable_t *d);

/* Commit b on the thread. Nothing may be in the air. */
void durable_send(durable_t *d, store_batch_t *b);
/* Is the batch sent last still in the air? block: wait until it lands.
 * Returns 1 while it is in the air; 0 once it has landed, with its
 * commit's result in *rc (0 or -1), *transient and err (on failure). */
int durable_land(durable_t *d, int block, int *rc, int *transient, char *err,
                 size_t errlen);

#endif
