/*
 * The fault-injection checker: after a scenario, compare what was produced
 * with what the plugin did, what the dedup database recorded, what went to
 * the dead-letter topic and what the group committed. The invariants and
 * why they are the right ones are in tests/README.md ("Fault injection").
 *
 * Collect the facts with the chk_add_* and chk_load_* calls, then run the
 * checks: each returns the number of violations it found and appends the
 * first few, one per line, to why (may be NULL). The checks are pure
 * functions of the collected facts, so they are tested on synthetic
 * histories too.
 *
 * Every produced record must carry an event ID no other produced record
 * has: the checker matches effects, marks and dead letters by event ID.
 *
 * Threads: a chk_t belongs to one thread.
 */
#ifndef KHOST_CHECKER_H
#define KHOST_CHECKER_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chk chk_t;

/* What the checks counted (chk_summary()). */
typedef struct chk_summary {
  size_t produced;     /* records produced */
  size_t calls;        /* plugin calls in the effects log */
  size_t effects;      /* of those, KHOST_OK results */
  size_t dead_letters; /* records found on the dead-letter topic */
  size_t marks;        /* marks read from the dedup databases */
  size_t redone;       /* events with effects in several runs of one
                          database, each allowed (no durable mark before) */
  size_t redone_hosts; /* events with effects on several databases */
} chk_summary_t;

chk_t *chk_new(void);
void chk_free(chk_t *c);

/* A record the test produced (topic, partition, offset, unique event ID). */
void chk_add_produced(chk_t *c, const char *topic, int32_t partition,
                      int64_t offset, const char *id);
/* A khost process: the pid its effects lines carry, the dedup database it
 * used (any small number naming the file; marks carry the same number)
 * and its lifetime in wall-clock ms since the epoch (from before it was
 * started to after it was reaped). Processes on one database must not
 * overlap in time. */
void chk_add_run(chk_t *c, long pid, int db, int64_t start_ms, int64_t end_ms);
/* One line of the effects fixture's log (see tests/fixtures/effects.c);
 * -1 with err set when it is malformed. */
int chk_add_effect_line(chk_t *c, const char *line, char *err, size_t errlen);
/* Every line of that log; a missing file holds no lines. */
int chk_load_effects(chk_t *c, const char *path, char *err, size_t errlen);
/* A dedup mark (outcome as in the marks table: 0 ok, 1 failed). */
void chk_add_mark(chk_t *c, int db, const char *id, const char *topic,
                  int32_t partition, int64_t offset, int64_t handled_at_ms,
                  int outcome);
/* Every mark of pipeline in the dedup database at path (read-only). */
int chk_load_marks(chk_t *c, int db, const char *path, const char *pipeline,
                   char *err, size_t errlen);
/* Forget the marks (to load a newer state of the databases). */
void chk_clear_marks(chk_t *c);
/* A record found on the dead-letter topic, with its source coordinates. */
void chk_add_dead_letter(chk_t *c, const char *id, const char *topic,
                         int32_t partition, int64_t offset);
/* The group's committed offset of a partition (replaces an earlier one). */
void chk_set_committed(chk_t *c, const char *topic, int32_t partition,
                       int64_t offset);

/* Every produced record was handled (an OK call) or dead-lettered, and
 * every call names the record produced at its coordinates. */
size_t chk_no_loss(const chk_t *c, GString *why);
/* An event has at most one OK call per process and one mark per database;
 * it was handled again by a later process on the same database only if
 * no earlier process that handled it left a mark (DESIGN.md rule 3). */
size_t chk_no_duplicate_effect(const chk_t *c, GString *why);
/* Per process, member and partition, calls come in offset order; the same
 * offset again only as a later attempt. */
size_t chk_in_order(const chk_t *c, GString *why);
/* Below every committed offset, every produced record has a mark: the
 * group never committed past an outcome that was not durable. */
size_t chk_committed_covered(const chk_t *c, GString *why);
/* Every partition written to is committed up to its end. */
size_t chk_committed_at_end(const chk_t *c, GString *why);
/* All five. */
size_t chk_all(const chk_t *c, GString *why);

void chk_summary(const chk_t *c, chk_summary_t *out);

#endif
