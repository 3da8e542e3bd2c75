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

/* Whether s (n bytes) goes into a JSON string as it is: printable ASCII
 * but the quote and the backslash, as ids and keys nearly always are. */
static int plain_ascii(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

static void put_escaped(struct sgbd_json *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;

    if (plain_ascii(s, n)) {        /* one copy, quotes and all */
        if (reserve(w, n + 2) != 0)
            return;
        w->buf[w->len] = '"';
        memcpy(w->buf + w->len + 1, str, n);
        w->buf[w->len + n + 1] = '"';
        w->len += n + 2;
        w->buf[w->len] = '\0';
        return;
    }
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
    put_fmt(w, b, snprintf(b, sizeof(b), "%.15g", v));
}

/* ---- floats: printf("%.9g") without printf ---- */

__extension__ typedef unsigned __int128 u128;

#define DIGITS 9                    /* significant digits of a float */
#define MAX_POW10 38                /* 10^38 < 2^127 */
#define FAST_MAX_SCALE 27           /* m 10^27 < 2^114 */

static u128 pow10_u128(int p)
{
    static const uint64_t t[20] = {
        1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000,
        1000000000, 10000000000, 100000000000, 1000000000000,
        10000000000000, 100000000000000, 1000000000000000,
        10000000000000000, 100000000000000000, 1000000000000000000u,
        10000000000000000000u};

    return p < 20 ? t[p] : (u128)t[19] * t[p - 19];
}

/*
 * |v| = m 2^e (v finite, not 0) as q = floor(|v| 10^p) and whether the
 * rest is below, at or above one half (-1, 0, 1), exactly in 128 bits.
 * Returns -1 where that could overflow (p > 27, p < -38, e > 100): the
 * caller falls back to snprintf.
 */
static int scale(uint32_t m, int e, int p, uint64_t *q, int *half)
{
    u128 num = m, den, rest;

    if (p > FAST_MAX_SCALE || p < -MAX_POW10 || e > 100 ||
        (e < 0 && p < 0))
        return -1;
    if (e < 0) {                    /* m 10^p / 2^-e: a shift */
        num *= pow10_u128(p);
        if (-e >= 120)
            return -1;
        *q = (uint64_t)(num >> -e);
        rest = num & (((u128)1 << -e) - 1);
        den = (u128)1 << -e;
    } else {                        /* m 2^e 10^p, or m 2^e / 10^-p */
        num <<= e;
        if (p >= 0) {
            *q = (uint64_t)(num * pow10_u128(p));
            *half = -1;
            return 0;
        }
        den = pow10_u128(-p);
        *q = (uint64_t)(num / den);
        rest = num % den;
    }
    *half = rest * 2 < den ? -1 : rest * 2 == den ? 0 : 1;
    return 0;
}

/*
 * The nine significant digits of |v| rounded to nearest, ties to even, as
 * glibc's printf rounds the exact binary value: *digits in [10^8, 10^9)
 * and *exp10 with |v| ~ digits 10^(exp10 - 8). -1 when the fast path
 * does not cover v (|v| < 1e-19): the caller uses snprintf.
 */
static int float_digits(float v, uint64_t *digits, int *exp10)
{
    uint32_t bits, m;
    int e, e2, x, half;
    uint64_t q;

    memcpy(&bits, &v, sizeof(bits));
    m = bits & 0x7fffffu;
    e = (int)(bits >> 23 & 0xff);
    if (e == 0) {
        e = -149;                   /* subnormal: m 2^-149 */
    } else {
        m |= 0x800000u;             /* m 2^(e - 150), m in [2^23, 2^24) */
        e -= 150;
    }
    e2 = e + 31 - __builtin_clz(m); /* 2^e2 <= |v| < 2^(e2 + 1) */
    /* floor(e2 log10 2) (exact for |e2| <= 150 with 78913 / 2^18) is
     * floor(log10 |v|) or one below it. */
    x = e2 >= 0 ? e2 * 78913 >> 18 : -((-e2 * 78913 + (1 << 18) - 1) >> 18);
    if (scale(m, e, DIGITS - 1 - x, &q, &half) != 0)
        return -1;
    if (q >= 1000000000u) {
        x++;
        if (scale(m, e, DIGITS - 1 - x, &q, &half) != 0)
            return -1;
    }
    q += half > 0 || (half == 0 && (q & 1));
    if (q == 1000000000u) {
        q = 100000000u;
        x++;
    }
    *digits = q;
    *exp10 = x;
    return 0;
}

/* Write "%.9g" of digits 10^(x - 8): fixed for -4 <= x < 9, else d.de±XX,
 * trailing zeros of the fraction dropped (and the point with them). */
static int format_g(char *b, int neg, uint64_t digits, int x)
{
    char d[DIGITS];
    int n = 0, last = DIGITS - 1, point;

    for (int i = DIGITS - 1; i >= 0; i--, digits /= 10)
        d[i] = (char)('0' + digits % 10);
    while (last > 0 && d[last] == '0')
        last--;                     /* d[0..last] are significant */
    if (neg)
        b[n++] = '-';
    if (x < -4 || x >= DIGITS) {
        b[n++] = d[0];
        if (last > 0)
            b[n++] = '.';
        for (int i = 1; i <= last; i++)
            b[n++] = d[i];
        return n + sprintf(b + n, "e%c%02d", x < 0 ? '-' : '+',
                           x < 0 ? -x : x);
    }
    if (x < 0) {
        b[n++] = '0';
        b[n++] = '.';
        for (int i = 0; i < -x - 1; i++)
            b[n++] = '0';
        point = -1;
    } else {
        point = x;                  /* d[0..x] before the point */
    }
    for (int i = 0; i <= (last > point ? last : point); i++) {
        b[n++] = d[i];
        if (i == point && last > point)
            b[n++] = '.';
    }
    return n;
}

void sgbd_json_float(struct sgbd_json *w, float v)
{
    uint64_t digits;
    char b[40];
    int x;

    if (!isfinite(v)) {
        sgbd_json_null(w);
        return;
    }
    /* Nine significant digits: every float32 reads back as itself, so a
     * feature vector fetched with GET and sent back with PUT is unchanged.
     * Scores are most of a recommendation's text, so the digits come from
     * integer arithmetic: the same text as snprintf "%.9g", which is still
     * used below 1e-19 and above 2^124. */
    if (v == 0)
        put_fmt(w, signbit(v) ? "-0" : "0", signbit(v) ? 2 : 1);
    else if (float_digits(v, &digits, &x) == 0)
        put_fmt(w, b, format_g(b, signbit(v) != 0, digits, x));
    else
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
