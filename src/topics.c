/*
 * A pipeline's topic names and "^regex" patterns against the cluster's
 * metadata. See topics.h.
 */
#include "topics.h"

#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef const rd_kafka_metadata_topic_t *mtopic_t;

int topics_is_pattern(const char *entry) {
  return entry[0] == '^';
}

/* Compile a pattern as librdkafka does; 0, or -1 with err set. */
static int compile(regex_t *re, const char *pattern, char *err, size_t errlen) {
  char why[256];
  int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
  if (rc == 0)
    return 0;
  regerror(rc, re, why, sizeof(why));
  snprintf(err, errlen, "topic pattern %s: not a valid regular expression: %s",
           pattern, why);
  return -1;
}

int topics_check_pattern(const char *pattern, char *err, size_t errlen) {
  regex_t re;
  if (compile(&re, pattern, err, errlen) != 0)
    return -1;
  regfree(&re);
  return 0;
}

int topics_names(const char *entry, const char *topic) {
  regex_t re;
  if (!topics_is_pattern(entry))
    return strcmp(entry, topic) == 0;
  if (compile(&re, entry, NULL, 0) != 0)
    return 0;
  int match = regexec(&re, topic, 0, NULL, 0) == 0;
  regfree(&re);
  return match;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(const mtopic_t *)a)->topic, (*(const mtopic_t *)b)->topic);
}

/* Append the partitions of t in order, except those list holds. */
static void add_topic(rd_kafka_topic_partition_list_t *list, mtopic_t t) {
  int32_t *ids = malloc(((size_t)t->partition_cnt + 1) * sizeof(*ids));
  for (int i = 0; i < t->partition_cnt; i++)
    ids[i] = t->partitions[i].id;
  qsort(ids, (size_t)t->partition_cnt, sizeof(*ids), cmp_i32);
  for (int i = 0; i < t->partition_cnt; i++)
    if (!rd_kafka_topic_partition_list_find(list, t->topic, ids[i]))
      rd_kafka_topic_partition_list_add(list, t->topic, ids[i]);
  free(ids);
}

static rd_kafka_resp_err_t expand_name(const struct rd_kafka_metadata *md,
                                       const char *name,
                                       rd_kafka_topic_partition_list_t *list,
                                       char *err, size_t errlen) {
  for (int i = 0; i < md->topic_cnt; i++) {
    mtopic_t t = &md->topics[i];
    if (strcmp(t->topic, name) != 0)
      continue;
    if (t->err) {
      snprintf(err, errlen, "topic %s: cannot read metadata: %s", name,
               rd_kafka_err2str(t->err));
      return t->err;
    }
    add_topic(list, t);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  snprintf(err, errlen, "topic %s does not exist in the cluster", name);
  return RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

static rd_kafka_resp_err_t expand_pattern(const struct rd_kafka_metadata *md,
                                          const char *pattern,
                                          rd_kafka_topic_partition_list_t *list,
                                          char *err, size_t errlen) {
  regex_t re;
  mtopic_t errored = NULL;
  size_t n = 0;
  if (compile(&re, pattern, err, errlen) != 0)
    return RD_KAFKA_RESP_ERR__INVALID_ARG;
  mtopic_t *hits = malloc(((size_t)md->topic_cnt + 1) * sizeof(*hits));
  for (int i = 0; i < md->topic_cnt; i++) {
    mtopic_t t = &md->topics[i];
    if (regexec(&re, t->topic, 0, NULL, 0) != 0)
      continue;
    if (t->err)
      errored = errored ? errored : t;
    else
      hits[n++] = t;
  }
  regfree(&re);
  qsort(hits, n, sizeof(*hits), cmp_name);
  for (size_t i = 0; i < n; i++)
    add_topic(list, hits[i]);
  free(hits);
  if (n > 0)
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  if (errored)
    snprintf(err, errlen,
             "topic pattern %s matches no topic in the cluster without an "
             "error (topic %s: %s)",
             pattern, errored->topic, rd_kafka_err2str(errored->err));
  else
    snprintf(err, errlen, "topic pattern %s matches no topic in the cluster",
             pattern);
  return RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

rd_kafka_resp_err_t topics_expand(const struct rd_kafka_metadata *md,
                                  const char *entry,
                                  rd_kafka_topic_partition_list_t *list,
                                  char *err, size_t errlen) {
  return topics_is_pattern(entry) ? expand_pattern(md, entry, list, err, errlen)
                                  : expand_name(md, entry, list, err, errlen);
}
