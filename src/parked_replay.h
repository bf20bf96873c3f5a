/*
 * `khost parked replay --execute`: parked records sent through their
 * pipeline's plugin again, in this process, as a member would: in offset
 * order per partition, with the pipeline's retries, dedup respected (a
 * record whose event ID was marked since it was parked is not called),
 * the plugin's flush() before anything is made durable. The plugin has
 * the pipeline's host state: its reads see the stored state (and the
 * writes of the records replayed before it), the writes of a record that
 * ends OK become durable with its mark and its removal from the lot, in
 * one transaction; a record handled since leaves the lot likewise; one
 * that fails again writes nothing and is parked again with the new
 * reason, in the transaction of its mark.
 *
 * On the SQLite file the caller has made sure no running host has it open
 * (padm_check_unused()): it would not see the marks made here. On the
 * PostgreSQL store, claims keep a replayed record from a running host's
 * hands as they do between hosts.
 *
 * Threads: the caller's only.
 */
#ifndef KHOST_PARKED_REPLAY_H
#define KHOST_PARKED_REPLAY_H

#include <stddef.h>

#include "config.h"
#include "parked_admin.h"

/* recs: padm_list()'s, in its order. Prints one line per record and a
 * summary on stdout. Returns an HOST_EXIT_* status (1 for a FATAL answer,
 * a failed flush or a store that refused; err says why). */
int parked_replay(const cfg_t *cfg, const cfg_pipeline_t *pc, padm_t *adm,
                  store_parked_t **recs, size_t n, char *err, size_t errlen);

#endif
