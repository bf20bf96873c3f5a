/*
 * Records written as JSON lines, for `khost test-plugin`: one object per
 * line,
 *
 *   {"topic": "order-completed", "partition": 0, "offset": 7,
 *    "key": "user-1", "value": {"orderId": 1},
 *    "headers": {"eventId": "e-1"}, "timestamp": 1700000000000}
 *
 * Every field is optional: topic defaults to the one given to
 * trec_read_file(), partition to 0, offset to one past the previous record
 * of that partition in the file (0 first), timestamp to -1 (unknown). key
 * and value are bytes: a JSON string as is, null or absent for none, any
 * other JSON value in its compact encoding. headers is an object of
 * name: string-or-null, or a list of [name, value] pairs (repeated names,
 * kept in order). Blank lines are skipped; anything else is an error that
 * names the file, the line and the field.
 */
#ifndef KHOST_TEST_RECORDS_H
#define KHOST_TEST_RECORDS_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

typedef struct trec {
  char *topic;
  int32_t partition;
  int64_t offset;
  int64_t timestamp;
  char *key; /* NULL when absent; not NUL-terminated data (len below) */
  size_t key_len;
  char *value;
  size_t value_len;
  rd_kafka_headers_t *headers; /* NULL when the record has none */
  int line;                    /* line in the file */
} trec_t;

typedef struct trec_list {
  trec_t *recs;
  size_t n;
} trec_list_t;

/* Read every record of path. Returns 0, or -1 with every problem found
 * ("FILE:LINE: FIELD: why", one per line, at most a screenful) in err. */
int trec_read_file(trec_list_t *out, const char *path,
                   const char *default_topic, char *err, size_t errlen);
void trec_list_free(trec_list_t *l);

#endif
