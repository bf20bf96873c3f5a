/*
 * The benchmark's PostgreSQL server (bench.c, --postgresql): started as
 * the tests start theirs (initdb and pg_ctl, a Unix socket only, fsync
 * off, as nobody when run as root; shared_buffers 2 GB), its data kept
 * under DIR/pg so that the store of many IDs is built once.
 */
#ifndef KHOST_BENCH_PG_H
#define KHOST_BENCH_PG_H

#include <stdint.h>

/* The server under dir/pg, started, with the khost schema and exactly
 * ids marks of pipeline "bench" (random UUIDs, handled a day ago); its
 * conninfo (free()). Exits with a message when it cannot. */
char *bench_pg_start(const char *dir, long ids);
/* Forget the marks and claims runs added (handled at or after since_ms),
 * so that the next run finds exactly the ids again. */
void bench_pg_reset(const char *conninfo, int64_t since_ms);
void bench_pg_stop(const char *dir);

#endif
