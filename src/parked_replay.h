/*
 * `khost parked replay --execute`: parked records sent through their
 * pipeline's plugin again, in this process, as a member would: in offset
 * order per partition, with the pipeline's retries, dedup respected (a
 * record whose event ID was marked since it was parked is not called),
 * the plugin's flush() before anything is made durable. A record that
 * ends OK (or was handled since) leaves the lot; one that fails again is
 * parked again with the new reason, in the transaction of its mark.
 *
 * The caller has made sure no running host has the store open
 * (padm_check_unused()): it would not see the marks made here.
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
