/*
 * A buffer of state writes not yet durable (the record's, or a store
 * batch's overlay): the writes' bytes appended to one arena, an array of
 * entries (offsets into it), and an open-addressing index from a key's
 * hash to its latest entry. A put or delete appends; a later write of a
 * key hides the earlier one. Emptied with one call, which keeps the
 * memory for the next record or batch.
 *
 * Threads: none of its own; the caller locks (state.c).
 */
#ifndef KHOST_STATE_BUF_H
#define KHOST_STATE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct sbuf sbuf_t;

/* One write as the buffer holds it: key and value point into the
 * buffer's arena and are valid until the buffer is next changed. */
typedef struct sbuf_write {
  const void *key;
  size_t klen;
  const void *val; /* NULL for a delete */
  size_t vlen;
} sbuf_write_t;

typedef int (*sbuf_fn)(void *arg, uint32_t hash, const sbuf_write_t *w);

sbuf_t *sbuf_new(void);
void sbuf_free(sbuf_t *b);

/* The hash every sbuf uses for key: computed once, passed to the rest. */
uint32_t sbuf_hash(const void *key, size_t klen);

/* A put (val may be NULL when vlen is 0) or, del non-zero, a delete. */
void sbuf_write(sbuf_t *b, uint32_t hash, const void *key, size_t klen,
                const void *val, size_t vlen, int del);
/* 1 with *w when the buffer has a write of key (w->val NULL: deleted),
 * 0 when not. */
int sbuf_get(const sbuf_t *b, uint32_t hash, const void *key, size_t klen,
             sbuf_write_t *w);
/* The latest write of every key, in the order they were written; stops
 * at fn's first non-zero answer and returns it. */
int sbuf_each(const sbuf_t *b, sbuf_fn fn, void *arg);
/* Keys with a write in it. */
size_t sbuf_keys(const sbuf_t *b);
/* Forget every write; the memory stays for the next writes unless it
 * grew large. */
void sbuf_clear(sbuf_t *b);

#endif
