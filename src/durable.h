/*
 * The durability thread of a member: it commits the store batches (one
 * transaction each) the member hands it, in the order sent, while the
 * member handles the next records. Up to DURABLE_MAX batches may be in
 * the air; the member takes them back in the same order once they have
 * landed, and only then commits the offsets of their records.
 *
 * After a commit fails, the batches sent after it are handed back
 * without being tried (DURABLE_NOT_TRIED), until the member has taken
 * every batch back: the member makes them durable in order itself, or
 * abandons them with the failed one.
 *
 * Threads: durable_send() and durable_land() are called
 * from the member's thread only. A batch sent belongs to the durability
 * thread until durable_land() hands it back.
 */
#ifndef KHOST_DURABLE_H
#define KHOST_DURABLE_H

#include <stddef.h>

#include "flow.h"
#include "metrics.h"
#include "store.h"

/* Batches in the air at most: as many as the flow core lets take off. */
#define DURABLE_MAX FLOW_AIR_MAX
/* durable_land()'s *rc for a batch passed over after an earlier failure. */
#define DURABLE_NOT_TRIED 1

typedef struct durable durable_t;

/* Start the thread, named after who (the member); the time each commit
 * takes goes to mx (may be NULL). Errors name who. */
int durable_start(durable_t **out, const char *who, metrics_t *mx, char *err,
                  size_t errlen);
/* Stop the thread (after the batches in the air, if any, have landed) and
 * free everything. NULL is ignored. */
void durable_stop(durable_t *d);

/* Commit b on the thread, after those sent before it. Fewer than
 * DURABLE_MAX batches may be in the air. */
void durable_send(durable_t *d, store_batch_t *b);
/* Take back the oldest batch sent once it has landed (block: wait until
 * it has). Returns 1 while it is still in the air; 0 otherwise, with *b
 * the batch (NULL when none was in the air) and its commit's result in
 * *rc (0, -1, or DURABLE_NOT_TRIED), *transient and err (unless 0). */
int durable_land(durable_t *d, int block, store_batch_t **b, int *rc,
                 int *transient, char *err, size_t errlen);

#endif
