/*
 * `khost COMMAND --help`: the help of one command (commands.h). The
 * overview of every command is main.c's usage text; khost.1 has it all.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const struct {
  const char *command;
  const char *text;
} helps[] = {
    {"run",
     "Usage: khost run -c FILE [--exit-at-end] [--from-beginning]\n"
     "\n"
     "Consume with every pipeline of FILE until SIGINT or SIGTERM: finish\n"
     "the current batches, commit, leave the group, exit 0. A second signal\n"
     "exits at once (128+N); nothing is lost, offsets only trail durable\n"
     "outcomes.\n"
     "\n"
     "  -c, --config FILE  the libconfig file (see examples/khost.cfg)\n"
     "  --exit-at-end      stop cleanly once every partition is consumed and\n"
     "                     committed up to the end offset it had at start\n"
     "  --from-beginning   start every partition at its earliest offset,\n"
     "                     whatever the group committed (dedup still skips\n"
     "                     events already handled)\n"
     "\n"
     "Exit status: 0 clean stop; 1 runtime failure (KHOST_FATAL, the dedup\n"
     "store, Kafka, the shutdown deadline); 2 usage, config or plugin error;\n"
     "128+N when a second signal N forced the exit.\n"},
    {"check",
     "Usage: khost check -c FILE\n"
     "\n"
     "Validate FILE without consuming anything: its syntax, keys, types and\n"
     "ranges; each bootstrap.servers entry (host:port, and that the host\n"
     "resolves); the dedup database's directory. Loads every pipeline's\n"
     "plugin and calls its init(), create() (with the pipeline's settings),\n"
     "destroy() and fini() as a run does (a plugin that opens files there\n"
     "does so now too).\n"
     "Creates no dedup database and does not connect to Kafka.\n"
     "\n"
     "  -c, --config FILE  the libconfig file\n"
     "\n"
     "Exit status: 0 \"FILE: OK\"; 2 every problem found, each with file,\n"
     "line and key.\n"},
    {"plugin-info",
     "Usage: khost plugin-info NAME|PATH [-c FILE] [--json]\n"
     "\n"
     "What a plugin is, read from its descriptor: name, version, the ABI\n"
     "version it was built for, its callbacks and the settings it declares\n"
     "(type, default, description). Runs none of the plugin's code but its\n"
     "entry function.\n"
     "\n"
     "  NAME|PATH          a path (with a /), or a name looked up in FILE's\n"
     "                     plugin_dir (else KHOST_PLUGIN_DIR or the default)\n"
     "  -c, --config FILE  the libconfig file whose plugin_dir to use\n"
     "  --json             the same as JSON\n"
     "\n"
     "Exit status: 0 shown; 2 usage, config, or a plugin that does not "
     "load.\n"},
    {"replay",
     "Usage: khost replay -c FILE -p PIPELINE (--from POSITION | --shift-by "
     "N)\n"
     "                    [--topic T [--partition N]] [--group NEW]\n"
     "                    [--dedup skip|reprocess] [--execute] [--json]\n"
     "\n"
     "Move the pipeline's committed offsets so that the next run processes\n"
     "from POSITION. Prints the plan (per partition: committed, new and end\n"
     "offsets, backlog, records replayed) and changes nothing unless\n"
     "--execute is given. Refused while the group has active members.\n"
     "\n"
     "  -c, --config FILE     the libconfig file\n"
     "  -p, --pipeline NAME   the pipeline whose group moves\n"
     "  --from POSITION       earliest, latest, an offset, an ISO-8601 time\n"
     "                        with a timezone (2026-03-01T08:00:00Z), or a\n"
     "                        time back from now (-1h, -30m, -2d)\n"
     "  --shift-by N          move each committed offset by N (-100: back\n"
     "                        100 records), kept within the log\n"
     "  --topic T             only topic T (one of the pipeline's)\n"
     "  --partition N         only partition N of --topic T\n"
     "  --group NEW           move another group (a new one) instead\n"
     "  --dedup skip|reprocess  events handled before: skipped (default) or\n"
     "                        handled again\n"
     "  --execute             commit the new offsets (default: preview only)\n"
     "  --dry-run             preview only (the default; kept for scripts)\n"
     "  --json                the plan as JSON on stdout\n"
     "\n"
     "Exit status: 0 done or previewed; 1 Kafka or the dedup store failed;\n"
     "2 usage, config, or a plan that cannot be made (nothing changed).\n"},
    {"offsets",
     "Usage: khost offsets -c FILE [-p PIPELINE] [--json]\n"
     "\n"
     "Per partition of the pipelines' topics: the group, committed offset,\n"
     "log start and end, lag and the member that owns it (- none, ? not\n"
     "known). Reads only; works while khost runs.\n"
     "\n"
     "  -c, --config FILE     the libconfig file\n"
     "  -p, --pipeline NAME   only this pipeline\n"
     "  --json                a JSON array instead of the table\n"
     "\n"
     "Exit status: 0 done; 1 Kafka unreachable; 2 usage or config.\n"},
    {"dedup",
     "Usage: khost dedup stats  -c FILE [-p PIPELINE] [--json]\n"
     "       khost dedup lookup -c FILE -p PIPELINE --event-id ID [--json]\n"
     "       khost dedup forget -c FILE -p PIPELINE (--event-id ID | --all)\n"
     "                          [--execute]\n"
     "       khost dedup prune  -c FILE [--older-than DURATION]\n"
     "\n"
     "Inspect and edit the dedup database, also while khost runs (a running\n"
     "khost keeps remembering forgotten IDs in memory until it restarts).\n"
     "\n"
     "  stats    size of the database; per pipeline marks, oldest, newest,\n"
     "           replayed ranges\n"
     "  lookup   every mark of one event ID: topic, partition, offset, when\n"
     "           it was handled, outcome\n"
     "  forget   the marks of one event ID, or --all of the pipeline; says\n"
     "           what it would remove and changes nothing unless --execute\n"
     "           is given (--yes, its old name, still works)\n"
     "  prune    marks handled before now - DURATION (12h, 7d; default\n"
     "           dedup.retention)\n"
     "  --json   stats and lookup as JSON instead of a table\n"
     "\n"
     "Exit status: 0 done or previewed; 1 lookup found nothing, or the\n"
     "database is missing or failed; 2 usage, config, unknown pipeline.\n"},
    {"store",
     "Usage: khost store init    -c FILE\n"
     "       khost store migrate -c FILE\n"
     "\n"
     "Create (init) or upgrade (migrate) the schema of the PostgreSQL store\n"
     "that store.conninfo names; khost run only uses a schema it knows.\n"
     "With the SQLite store (dedup.path), which khost run creates and\n"
     "upgrades itself, init creates the file and migrate upgrades an\n"
     "existing one ahead of a run.\n"
     "\n"
     "Exit status: 0 done; 1 the server refused or is unreachable, or the\n"
     "SQLite file is missing (migrate) or failed; 2 usage or config.\n"},
    {"parked",
     "Usage: khost parked list   -c FILE -p PIPELINE [--topic T [--partition "
     "N]]\n"
     "                           [--json]\n"
     "       khost parked show   -c FILE -p PIPELINE --topic T --partition N\n"
     "                           --offset O [--json]\n"
     "       khost parked replay -c FILE -p PIPELINE [--topic T [--partition "
     "N\n"
     "                           [--offset O]]] [--execute]\n"
     "       khost parked skip   -c FILE -p PIPELINE (--topic T --partition "
     "N\n"
     "                           --offset O | --all) [--execute]\n"
     "\n"
     "The records a pipeline without dead_letter_topic parked in its store\n"
     "because they failed for good (FAIL, or retries used up).\n"
     "\n"
     "  list     topic, partition, offset, event ID, attempts, when, reason\n"
     "  show     one record with every field: timestamp, key, value and\n"
     "           headers as text when printable, else base64\n"
     "  replay   through the pipeline's plugin again, in this process, in\n"
     "           offset order per partition: OK leaves the lot, FAIL stays\n"
     "           with the new reason, a record whose event ID was handled\n"
     "           since is not called and leaves the lot. Refused while a\n"
     "           khost has the store open\n"
     "  skip     drop records on purpose\n"
     "  --execute  replay or skip (default: preview only)\n"
     "  --json     list and show as JSON\n"
     "\n"
     "Exit status: 0 done or previewed; 1 show found nothing, the database\n"
     "failed, or the plugin answered FATAL; 2 usage, config, unknown\n"
     "pipeline, or a store in use (replay).\n"},
    {"test-plugin",
     "Usage: khost test-plugin PLUGIN --records FILE.jsonl\n"
     "                         [--config KEY=VALUE ...] [--retries N]\n"
     "       khost test-plugin [PLUGIN] -c FILE -p PIPELINE --records "
     "FILE.jsonl\n"
     "\n"
     "Run a plugin over records written as JSON lines, without Kafka, and\n"
     "print each result (OK, RETRY, FAIL, FATAL), each flush and a summary.\n"
     "One JSON object per line; every field optional: topic, partition,\n"
     "offset, key, value, headers ({\"name\": \"value\"} or [[\"name\",\n"
     "\"value\"], ...]), timestamp. No dedup, no dead letters, no commits.\n"
     "\n"
     "  PLUGIN                a path (with a /) or a name in\n"
     "                        KHOST_PLUGIN_DIR\n"
     "  --records FILE        the records\n"
     "  --config KEY=VALUE    a setting of the plugin's config group (true,\n"
     "                        false, an integer, a number, else a string)\n"
     "  -c FILE -p PIPELINE   the plugin, settings, event_id, retry.max and\n"
     "                        max_batch of that pipeline\n"
     "  --retries N           RETRY answers before FAIL (default retry.max,\n"
     "                        5)\n"
     "\n"
     "Exit status: 0 no FATAL and every flush succeeded; 1 FATAL or a failed\n"
     "flush; 2 usage, records file mistakes, or a plugin that does not load\n"
     "or create.\n"},
};

int cli_help(const char *command) {
  for (size_t i = 0; i < sizeof(helps) / sizeof(*helps); i++)
    if (strcmp(command, helps[i].command) == 0) {
      fputs(helps[i].text, stdout);
      return 0;
    }
  return -1;
}
