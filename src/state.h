/*
 * Host-managed plugin state of one member: what the state entries of the
 * plugin API (khost_api_t.state_get/put/delete/scan) read and write.
 *
 * Writes made while handling a record are buffered for that record. When
 * its outcome is final (OK or FAIL) they join the store batch its mark goes
 * to (state_record_join(), or for a FAIL, whose mark may wait for a
 * dead-letter write, state_record_hold() then state_held_join()) and become
 * durable in the batch's one transaction, with its dedup marks and offsets;
 * a RETRY drops them (state_record_drop()). Until a batch is durable its writes
 * are kept in an overlay, so that reads see the writes of the records already
 * handled, also those of the batches in the air on the durability thread
 * (read-your-writes). A batch that ends, durable or abandoned, drops its
 * overlay (state_batch_end()): durable, the store now answers the same;
 * abandoned, its records come again and write again.
 *
 * Two records writing the same key: the write joined last wins, in the
 * order the member finishes records (its completion order). Records of
 * one partition finish in offset order; records of different partitions
 * (or members) have no order between them, so a plugin keys its state by
 * what orders its records (the record key, which picks the partition).
 * With concurrency > 1 records of one lane (order_by) finish in offset
 * order and the next one starts only once the one before has joined:
 * read-your-writes holds within a lane, and records of other lanes see
 * each other's writes as they finish (key the state by the ordering
 * value).
 *
 * Threads: a state_t belongs to its member's thread; the store batches
 * it joins are committed on the durability thread without it. With
 * workers each has a view (state_view()) with a record buffer of its
 * own, used on its thread during handle() and joined on the member's
 * thread once the worker is idle; the overlays are shared under a lock.
 */
#ifndef KHOST_STATE_H
#define KHOST_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct state state_t;

state_t *state_new(store_t *store, uint32_t scope);
/* A view for a worker: its own record buffer over st's overlays and
 * store. Freed (state_free()) before st. */
state_t *state_view(state_t *st);
void state_free(state_t *st);

/* The record's writes are dropped (it asked for a retry, or a new record
 * starts). */
void state_record_drop(state_t *st);
/* The record's writes join sb (the batch its outcome went to). */
void state_record_join(state_t *st, store_batch_t *sb);
/* The record failed, and its mark may wait (for the dead-letter topic's
 * answer): its writes are held aside, shared by every view and unseen by
 * reads, until the mark is made (state_held_join(), into the batch of the
 * mark) or the record goes back (state_held_drop(): it is handled again;
 * state_held_drop_partition(): its partition is gone). No writes: an
 * earlier hold of that record is dropped. */
void state_record_hold(state_t *st, const char *topic, int32_t partition,
                       int64_t offset);
void state_held_join(state_t *st, const char *topic, int32_t partition,
                     int64_t offset, store_batch_t *sb);
void state_held_drop(state_t *st, const char *topic, int32_t partition,
                     int64_t offset);
void state_held_drop_partition(state_t *st, const char *topic,
                               int32_t partition);
/* sb was made durable or abandoned: its overlay goes. */
void state_batch_end(state_t *st, store_batch_t *sb);

/* 1 with *val and *vlen (owned by st, valid until the next call on st),
 * 0 when absent, -1 on a store error (err says which). */
int state_read(state_t *st, const void *key, size_t klen, const void **val,
               size_t *vlen, char *err, size_t errlen);
void state_put(state_t *st, const void *key, size_t klen, const void *val,
               size_t vlen);
void state_del(state_t *st, const void *key, size_t klen);
/* Keys starting with prefix in byte order, as read by state_read(); fn's
 * key and value are valid during the call, which may use st. Stops at
 * fn's first non-zero answer and returns it; -1 on a store error. */
int state_read_prefix(state_t *st, const void *prefix, size_t plen,
                      store_state_fn fn, void *arg, char *err, size_t errlen);

#endif
