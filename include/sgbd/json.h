/*
 * json.h - an allocation-light JSON writer for responses, and the few
 * jansson helpers the API uses to read request bodies.
 *
 * The writer appends to one growing buffer and tracks commas itself:
 *
 *     struct sgbd_json w;
 *     sgbd_json_init(&w);
 *     sgbd_json_begin_object(&w);
 *     sgbd_json_key(&w, "model_version");
 *     sgbd_json_u64(&w, 3);
 *     sgbd_json_key(&w, "items");
 *     sgbd_json_begin_array(&w);
 *     ...
 *     sgbd_json_end(&w);          (closes the array)
 *     sgbd_json_end(&w);          (closes the object)
 *     body = sgbd_json_take(&w, &len);   (malloc'd; the caller frees)
 *
 * A failed allocation makes the writer sticky-failed: later calls do
 * nothing and sgbd_json_take returns NULL. Strings are escaped as RFC 8259
 * requires; bytes that are not valid UTF-8 are written as U+FFFD, so the
 * output is always valid JSON. Non-finite numbers are written as null.
 */
#ifndef SGBD_JSON_H
#define SGBD_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SGBD_JSON_DEPTH 32

struct sgbd_json {
    char *buf;
    size_t len, cap;
    int failed;
    int depth;
    unsigned char first[SGBD_JSON_DEPTH];  /* no member written yet */
    unsigned char array[SGBD_JSON_DEPTH];  /* level is an array */
    unsigned char after_key;               /* a key waits for its value */
};

void sgbd_json_init(struct sgbd_json *w);

/* Free the buffer (not needed after sgbd_json_take). */
void sgbd_json_deinit(struct sgbd_json *w);

/* The text written (NUL-terminated, malloc'd, owned by the caller) and its
 * length; NULL when an allocation failed or nesting is unbalanced. The
 * writer is empty afterwards. */
char *sgbd_json_take(struct sgbd_json *w, size_t *len);

void sgbd_json_begin_object(struct sgbd_json *w);
void sgbd_json_begin_array(struct sgbd_json *w);
void sgbd_json_end(struct sgbd_json *w);

/* An object member's key; the next value call writes its value. */
void sgbd_json_key(struct sgbd_json *w, const char *key);

void sgbd_json_str(struct sgbd_json *w, const char *s);
void sgbd_json_strn(struct sgbd_json *w, const char *s, size_t n);
void sgbd_json_u64(struct sgbd_json *w, uint64_t v);
void sgbd_json_i64(struct sgbd_json *w, int64_t v);
void sgbd_json_num(struct sgbd_json *w, double v);   /* %.15g */
void sgbd_json_float(struct sgbd_json *w, float v);  /* %.9g: round-trips */
void sgbd_json_bool(struct sgbd_json *w, int v);
void sgbd_json_null(struct sgbd_json *w);

/* A value that is already JSON text (n bytes), written as it is. */
void sgbd_json_raw(struct sgbd_json *w, const char *text, size_t n);

/*
 * Parse a request body (n bytes) as one JSON value. Returns a new
 * reference, or NULL with a message in why (size wn) that names the line
 * and column. Duplicate object keys are rejected (JSON_REJECT_DUPLICATES).
 */
json_t *sgbd_json_parse(const char *text, size_t n, char *why, size_t wn);

#endif
