/*
 * khost logger: one line per event on stderr,
 *   2026-11-25T10:00:00.123Z INFO  [who] message
 * where `who` names the pipeline/member (and plugin) the line is about,
 * or with log_format = "json" one JSON object per line (see log_set_json).
 * Thread-safe: every line is written with a single write(). A write that
 * fails (EPIPE, EBADF, ENOSPC, ...) loses its line and nothing else; the
 * next line that goes through says how many were lost.
 * A warning (not about a record) repeated word for word is written once
 * every 5 s; the line after that window says
 *   <message> (repeated N more times in the last S s)
 */
#ifndef KHOST_LOG_H
#define KHOST_LOG_H

#include <stdarg.h>
#include <stdint.h>

#include "khost/plugin.h" /* KHOST_LOG_* levels */

/* Only lines at or below this level (syslog numbering) are written. */
void log_set_level(int level);
int log_get_level(void);

/* "err", "warning", "notice", "info", "debug" -> level; -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* Redirect output to fd (default 2). For tests. */
void log_set_fd(int fd);
/* The monotonic clock (ms) repeated warnings are counted by; NULL: the
 * system's. Forgets the repeats followed so far. For tests. */
void log_set_clock(int64_t (*now_ms)(void));
/* Say now the counts of repeated warnings held back (at exit: the window
 * they wait for may never end). */
void log_repeats_flush(void);

/* The record a line is about. In text the line reads
 *   ... [who] TOPIC [PARTITION] offset OFFSET eventId ID: message
 * and in JSON these are fields of their own. */
typedef struct {
  const char *topic;
  int32_t partition;
  int64_t offset;
  const char *event_id; /* NULL: the record has none */
} log_record_t;

/* "text" -> 0, "json" -> 1; -1 when unknown. */
int log_format_parse(const char *name);

/* 1: one JSON object per line, {"time", "level", "who", "pipeline",
 * "member", "plugin", "topic", "partition", "offset", "event_id",
 * "message"}, the fields that do not apply left out; 0: text. */
void log_set_json(int on);

void log_msg(int level, const char *who, const char *fmt, ...)
    KHOST_PRINTF(3, 4);
void log_vmsg(int level, const char *who, const char *fmt, va_list ap);
/* On a terminal: show text as a line that the next call replaces (NULL
 * clears it); a log line written meanwhile clears it first. */
void log_status(const char *text);

/* A line about one record (rec may be NULL). */
void log_rec(int level, const char *who, const log_record_t *rec,
             const char *fmt, ...) KHOST_PRINTF(4, 5);

/* 1 when a librdkafka property name holds a secret that must never be
 * printed (sasl.password, ssl.key.password, ...). */
int log_is_secret_property(const char *name);

#endif
