/*
 * `khost replay`'s writes to the store: see replay_store.h.
 */
#include "replay_store.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "dedup_admin.h"
#include "host.h"
#include "offsets.h"
#include "store_pg.h"
#include "store_pg_admin.h"

/* Records of rp consumed before that come again: [target, to). */
static int range_of(const replay_part_t *rp, int64_t *to) {
  *to = rp->handled_before;
  return rp->handled_before != OFFS_NONE && rp->target < rp->handled_before;
}

/* The SQLite file: the ranges in a write transaction held across the
 * apply. */
static int write_sqlite(const replay_write_t *w, int *applied, char *err,
                        size_t errlen) {
  dadm_t *adm = NULL;
  uint32_t scope = 0;
  int found = 0, rc = -1;
  int64_t to;
  *applied = -1;
  if (dadm_open(&adm, w->cfg->dedup_path, 1, err, errlen) < 0 ||
      dadm_scope(adm, w->pc->name, 1, &scope, &found, err, errlen) < 0 ||
      dadm_begin(adm, err, errlen) < 0)
    goto out;
  for (size_t i = 0; i < w->n; i++)
    if (range_of(&w->parts[i], &to) &&
        dadm_replay_add(adm, scope, w->parts[i].topic, w->parts[i].partition,
                        w->parts[i].target, to, w->mode, err, errlen) < 0)
      goto out;
  if ((*applied = w->apply(w->arg, err, errlen)) != 0)
    goto out;
  rc = dadm_commit(adm, err, errlen);
out:
  if (rc != 0 && adm)
    dadm_rollback(adm);
  dadm_close(adm);
  return rc;
}

/* A host handling the pipeline on the shared store holds claims. */
static int refuse_if_claimed(const replay_write_t *w, store_t *s,
                             uint32_t scope, char *err, size_t errlen) {
  int64_t claims = 0;
  char *owners = NULL;
  if (store_pg_live_claims(s, scope, &claims, &owners, err, errlen) < 0)
    return -1;
  if (claims > 0)
    snprintf(err, errlen,
             "pipeline %s has %" PRId64 " record(s) in flight on the "
             "postgresql store, claimed by %s: stop its hosts first (a "
             "replay must not race a running khost; the claims of a host "
             "that died expire after store.lease)",
             w->pc->name, claims, owners);
  g_free(owners);
  return claims > 0 ? -1 : 0;
}

/* The PostgreSQL store: ranges and stored offsets in one transaction
 * around the apply. */
static int write_pg(const replay_write_t *w, int *applied, char *err,
                    size_t errlen) {
  store_pg_opts_t o = {.conninfo = w->cfg->store_conninfo,
                       .lease_ms = w->cfg->store_lease_ms};
  store_pg_replay_t *v = g_new0(store_pg_replay_t, w->n ? w->n : 1);
  store_pg_replay_rec_t r = {.parts = v,
                             .n = w->n,
                             .mode = w->mode == DEDUP_REPLAY_REPROCESS
                                         ? STORE_REPLAY_REPROCESS
                                         : STORE_REPLAY_SKIP,
                             .move_offsets = w->own_group,
                             .apply = w->apply,
                             .arg = w->arg};
  store_t *s = NULL;
  int rc = -1;
  *applied = -1;
  for (size_t i = 0; i < w->n; i++) {
    int64_t to;
    v[i] = (store_pg_replay_t){w->parts[i].topic, w->parts[i].partition,
                               w->parts[i].target, w->parts[i].target};
    if (range_of(&w->parts[i], &to))
      v[i].to = to;
  }
  if (store_pg_open(&s, &o, err, errlen) < 0 ||
      store_scope(s, w->pc->name, &r.scope, err, errlen) < 0 ||
      (w->own_group && refuse_if_claimed(w, s, r.scope, err, errlen) < 0))
    goto out;
  rc = store_pg_replay_record(s, &r, applied, err, errlen);
out:
  store_close(s);
  g_free(v);
  return rc;
}

int replay_store_write(const replay_write_t *w, char *err, size_t errlen) {
  int applied = -1;
  if (!w->pc->dedup) /* no store holds anything of the pipeline */
    return w->apply(w->arg, err, errlen);
  int rc = w->cfg->store_backend == CFG_STORE_POSTGRESQL
               ? write_pg(w, &applied, err, errlen)
               : write_sqlite(w, &applied, err, errlen);
  if (rc == 0)
    return HOST_EXIT_OK;
  if (applied > 0)
    return applied; /* the apply's own failure, err set */
  if (applied == 0) {
    char why[1024];
    snprintf(why, sizeof(why), "%s", err);
    snprintf(err, errlen,
             "the new offsets are committed, but the replayed ranges could "
             "not be recorded (%s): already handled event IDs are skipped",
             why);
  }
  return HOST_EXIT_RUNTIME;
}

char *replay_store_where(const cfg_t *cfg) {
  if (cfg->store_backend != CFG_STORE_POSTGRESQL)
    return g_strdup(cfg->dedup_path);
  char *shown = store_pg_display(cfg->store_conninfo);
  char *s = g_strdup_printf("the postgresql store (%s)", shown);
  g_free(shown);
  return s;
}
