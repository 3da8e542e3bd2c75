/* json.c - the response writer and the jansson parse wrapper. */
#include "sgbd/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sgbd_json_init(struct sgbd_json *w)
{
    memset(w, 0, sizeof(*w));
    w->first[0] = 1;
}

void sgbd_json_deinit(struct sgbd_json *w)
{
    free(w->buf);
    sgbd_json_init(w);
}

char *sgbd_json_take(struct sgbd_json *w, size_t *len)
{
    char *out = w->buf;

    if (w->failed || w->depth != 0 || !out) {
        sgbd_json_deinit(w);
        return NULL;
    }
    *len = w->len;
    sgbd_json_init(w);
    return out;
}

static int reserve(struct sgbd_json *w, size_t more)
{
    size_t cap;
    char *p;

    if (w->failed)
        return -1;
    if (w->len + more + 1 <= w->cap)
        return 0;
    cap = w->cap ? w->cap : 512;
    while (cap < w->len + more + 1)
        cap *= 2;
    p = realloc(w->buf, cap);
    if (!p) {
        w->failed = 1;
        return -1;
    }
    w->buf = p;
    w->cap = cap;
    return 0;
}

static void put(struct sgbd_json *w, const char *s, size_t n)
{
    if (reserve(w, n) != 0)
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

/* The comma before a value, unless it is the first or follows a key. */
static void before_value(struct sgbd_json *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (!w->first[w->depth])
        put(w, ",", 1);
    w->first[w->depth] = 0;
}

static void begin(struct sgbd_json *w, char c)
{
    before_value(w);
    if (w->depth + 1 >= SGBD_JSON_DEPTH) {
        w->failed = 1;
        return;
    }
    put(w, &c, 1);
    w->depth++;
    w->first[w->depth] = 1;
    w->array[w->depth] = c == '[';
}

void sgbd_json_begin_object(struct sgbd_json *w)
{
    begin(w, '{');
}

void sgbd_json_begin_array(struct sgbd_json *w)
{
    begin(w, '[');
}

void sgbd_json_end(struct sgbd_json *w)
{
    if (w->depth == 0 || w->after_key) {
        w->failed = 1;
        return;
    }
    put(w, w->array[w->depth] ? "]" : "}", 1);
    w->depth--;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid
 * (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

static void put_escaped(struct sgbd_json *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;

    put(w, "\"", 1);
    while (i < n) {
        unsigned char c = s[i];
        char esc[8];
        size_t len;

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        put(w, str + run, i - run);
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(w, esc, 2);
            len = 1;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(w, esc, 6);
            len = 1;
        } else if ((len = utf8_len(s + i, n - i)) > 0) {
            put(w, str + i, len);
        } else {
            put(w, "\\ufffd", 6);
            len = 1;
        }
        i += len;
        run = i;
    }
    put(w, str + run, i - run);
    put(w, "\"", 1);
}

void sgbd_json_key(struct sgbd_json *w, const char *key)
{
    if (w->after_key || w->array[w->depth] || w->depth == 0) {
        w->failed = 1;
        return;
    }
    before_value(w);
    put_escaped(w, key, strlen(key));
    put(w, ":", 1);
    w->after_key = 1;
}

void sgbd_json_strn(struct sgbd_json *w, const char *s, size_t n)
{
    before_value(w);
    put_escaped(w, s, n);
}

void sgbd_json_str(struct sgbd_json *w, const char *s)
{
    sgbd_json_strn(w, s, strlen(s));
}

static void put_fmt(struct sgbd_json *w, const char *text, int n)
{
    before_value(w);
    if (n > 0)
        put(w, text, (size_t)n);
    else
        w->failed = 1;
}

void sgbd_json_u64(struct sgbd_json *w, uint64_t v)
{
    char b[32];
    put_fmt(w, b, snprintf(b, sizeof(b), "%" PRIu64, v));
}

void sgbd_json_i64(struct sgbd_json *w, int64_t v)
{
    char b[32];
    put_fmt(w, b, snprintf(b, sizeof(b), "%" PRId64, v));
}

void sgbd_json_num(struct sgbd_json *w, double v)
{
    char b[40];

    if (!isfinite(v)) {
        sgbd_json_null(w);
        return;
    }
    put_fmt(w, b, snprintf(b, sizeof(b), "%.9g", v));
}

void sgbd_json_float(struct sgbd_json *w, float v)
{
    char b[40];

    if (!isfinite(v)) {
        sgbd_json_null(w);
        return;
    }
    /* Nine significant digits: every float32 reads back as itself, so a
     * feature vector fetched with GET and sent back with PUT is unchanged. */
    put_fmt(w, b, snprintf(b, sizeof(b), "%.9g", (double)v));
}

void sgbd_json_bool(struct sgbd_json *w, int v)
{
    put_fmt(w, v ? "true" : "false", v ? 4 : 5);
}

void sgbd_json_null(struct sgbd_json *w)
{
    put_fmt(w, "null", 4);
}

void sgbd_json_raw(struct sgbd_json *w, const char *text, size_t n)
{
    put_fmt(w, text, (int)(n > 0x7fffffff ? 0 : n));
}

json_t *sgbd_json_parse(const char *text, size_t n, char *why, size_t wn)
{
    json_error_t err;
    size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY;
    json_t *v = json_loadb(text, n, flags, &err);

    if (!v)
        snprintf(why, wn, "line %d, column %d: %s", err.line, err.column,
                 err.text);
    return v;
}
