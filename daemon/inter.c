/*
 * inter.c - the MMRec .inter reader: header by name, rows checked one by
 * one, every problem reported as FILE:LINE.
 */
#include "sgbd/inter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"

#define MAX_ID 0x7fffffffu

/* Positions of the required columns and the header's width. */
struct columns {
    int user, item, label;
    int n;
};

/* One line without its terminator. */
struct line {
    const char *p;
    size_t len;
    size_t no;          /* 1-based line number */
};

static int is_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Next line of [*p, end): strips "\n" or "\r\n"; 0 at the end. */
static int next_line(const char **p, const char *end, struct line *ln)
{
    const char *nl;

    if (*p >= end)
        return 0;
    nl = memchr(*p, '\n', (size_t)(end - *p));
    ln->p = *p;
    ln->len = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
    *p = nl ? nl + 1 : end;
    if (ln->len > 0 && ln->p[ln->len - 1] == '\r')
        ln->len--;
    ln->no++;
    return 1;
}

/* Tab-separated fields of one line; a trailing tab opens an empty one. */
struct fields {
    const char *p, *end;
    int done;
};

static void fields_init(struct fields *it, const struct line *ln)
{
    it->p = ln->p;
    it->end = ln->p + ln->len;
    it->done = 0;
}

static int next_field(struct fields *it, const char **f, size_t *n)
{
    const char *tab;

    if (it->done)
        return 0;
    tab = memchr(it->p, '\t', (size_t)(it->end - it->p));
    *f = it->p;
    *n = tab ? (size_t)(tab - it->p) : (size_t)(it->end - it->p);
    if (tab)
        it->p = tab + 1;
    else
        it->done = 1;
    return 1;
}

static int set_column(int *slot, int i, const char *col,
                      const struct line *ln, const char *name)
{
    if (*slot >= 0)
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: column '%s' appears twice",
                         name, ln->no, col);
    *slot = i;
    return 0;
}

static int parse_header(const struct line *ln, const char *name,
                        struct columns *c)
{
    static const char *const req[] = {"userID", "itemID", "x_label"};
    int *slots[] = {&c->user, &c->item, &c->label};
    struct fields it;
    const char *f;
    size_t n;
    int rc, all_numeric = 1;

    c->user = c->item = c->label = -1;
    c->n = 0;
    fields_init(&it, ln);
    while (next_field(&it, &f, &n)) {
        all_numeric &= is_digits(f, n);
        for (int k = 0; k < 3; k++) {
            if (n != strlen(req[k]) || memcmp(f, req[k], n) != 0)
                continue;
            rc = set_column(slots[k], c->n, req[k], ln, name);
            if (rc != 0)
                return rc;
        }
        c->n++;
    }
    if (all_numeric)
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: no header line (expected "
                         "column names userID, itemID, x_label)", name,
                         ln->no);
    for (int k = 0; k < 3; k++)
        if (*slots[k] < 0)
            return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: missing column '%s' in "
                             "the header", name, ln->no, req[k]);
    return 0;
}

/* An id field: whole number in 0..MAX_ID. */
static int parse_id(const char *f, size_t n, const char *col,
                    const struct line *ln, const char *name, uint32_t *out)
{
    uint64_t v = 0;

    if (n > 0 && f[0] == '-' && is_digits(f + 1, n - 1))
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: %s '%.*s' is negative",
                         name, ln->no, col, (int)n, f);
    if (!is_digits(f, n))
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: %s '%.*s' is not a whole "
                         "number", name, ln->no, col, (int)(n > 40 ? 40 : n),
                         f);
    for (size_t i = 0; i < n && v <= MAX_ID; i++)
        v = v * 10 + (uint64_t)(f[i] - '0');
    if (v > MAX_ID)
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: %s '%.*s' is too large "
                         "(max %u)", name, ln->no, col, (int)(n > 40 ? 40 : n),
                         f, MAX_ID);
    *out = (uint32_t)v;
    return 0;
}

static int parse_label(const char *f, size_t n, const struct line *ln,
                       const char *name, uint8_t *out)
{
    if (n != 1 || f[0] < '0' || f[0] > '2')
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: x_label '%.*s' is not 0, 1 "
                         "or 2", name, ln->no, (int)(n > 40 ? 40 : n), f);
    *out = (uint8_t)(f[0] - '0');
    return 0;
}

/* One data line into row r of out. */
static int parse_row(const struct line *ln, const struct columns *c,
                     const char *name, struct sgbd_inter *out, size_t r)
{
    struct fields it;
    const char *f;
    size_t n;
    int i, rc = 0;

    fields_init(&it, ln);
    for (i = 0; rc == 0 && next_field(&it, &f, &n); i++) {
        if (i == c->user)
            rc = parse_id(f, n, "userID", ln, name, &out->users[r]);
        else if (i == c->item)
            rc = parse_id(f, n, "itemID", ln, name, &out->items[r]);
        else if (i == c->label)
            rc = parse_label(f, n, ln, name, &out->labels[r]);
    }
    if (rc != 0)
        return rc;
    if (i != c->n)
        return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: %d columns, the header has "
                         "%d", name, ln->no, i, c->n);
    return 0;
}

static int alloc_rows(struct sgbd_inter *r, size_t cap)
{
    size_t n = cap ? cap : 1;

    r->users = malloc(n * sizeof(*r->users));
    r->items = malloc(n * sizeof(*r->items));
    r->labels = malloc(n * sizeof(*r->labels));
    if (!r->users || !r->items || !r->labels) {
        sgbd_inter_free(r);
        return -ENOMEM;
    }
    return 0;
}

/* Rows after the header; empty lines only at the end. */
static int parse_rows(const char *p, const char *end, struct line *ln,
                      const struct columns *c, const char *name,
                      struct sgbd_inter *rows)
{
    size_t blank_at = 0;
    int rc;

    while (next_line(&p, end, ln)) {
        if (ln->len == 0) {
            if (!blank_at)
                blank_at = ln->no;
            continue;
        }
        if (blank_at)
            return sgbd_errf(SGBD_E_FORMAT, "%s:%zu: empty line inside the "
                             "data", name, blank_at);
        rc = parse_row(ln, c, name, rows, rows->n);
        if (rc != 0)
            return rc;
        rows->n++;
    }
    return 0;
}

int sgbd_inter_parse(struct sgbd_inter *out, const char *text, size_t len,
                     const char *name)
{
    const char *p = text, *end = text + len;
    struct sgbd_inter rows = {0};
    struct columns c;
    struct line ln = {0};
    size_t cap = 0;
    int rc;

    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* UTF-8 byte order mark */
    if (!next_line(&p, end, &ln) || ln.len == 0)
        return sgbd_errf(SGBD_E_FORMAT, "%s:1: no header line (expected "
                         "column names userID, itemID, x_label)", name);
    rc = parse_header(&ln, name, &c);
    if (rc != 0)
        return rc;
    for (const char *q = p; q < end && (q = memchr(q, '\n', end - q)); q++)
        cap++;
    if (alloc_rows(&rows, cap + 1) != 0)
        return sgbd_errf(-ENOMEM, "%s: out of memory for %zu rows", name,
                         cap + 1);
    rc = parse_rows(p, end, &ln, &c, name, &rows);
    if (rc != 0) {
        sgbd_inter_free(&rows);
        return rc;
    }
    *out = rows;
    return 0;
}

int sgbd_inter_read(struct sgbd_inter *out, const char *path,
                    const struct sgbd_bulkio_opts *io)
{
    void *text;
    size_t len;
    int rc;

    rc = sgbd_bulkio_read_file(path, &text, &len, io);
    if (rc != 0)
        return rc;
    rc = sgbd_inter_parse(out, text, len, path);
    free(text);
    return rc;
}

void sgbd_inter_free(struct sgbd_inter *r)
{
    if (!r)
        return;
    free(r->users);
    free(r->items);
    free(r->labels);
    memset(r, 0, sizeof(*r));
}
