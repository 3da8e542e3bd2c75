/*
 * topk.c - the top-k call of the SGBD API with nothing but libc sockets.
 *
 * GET /v1/users/{id}/recommendations?k=K over one HTTP/1.1 connection,
 * then a small JSON reader walks the answer and prints one item a line:
 *
 *     rank  item_id  score
 *
 * Build and run (no library beyond libc):
 *
 *     cc -std=c11 -O2 -Wall -o topk clients/examples/topk.c
 *     SGBD_URL=http://127.0.0.1:8080 ./topk -k 5 u42
 *
 * Exit status: 0 printed, 1 the daemon answered an error or could not be
 * reached (one line on stderr: status, error code, message), 2 usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_ANSWER (16u << 20) /* bytes of one answer we accept */
#define MAX_STR 1024           /* bytes of one JSON string we keep */
#define TIMEOUT_S 10

struct url {
    char host[256];
    char port[8];
    char prefix[512];
};

/* ---- the URL and the request ---- */

/* "http://HOST[:PORT][/PREFIX]" or "http://[V6]:PORT/..." into u. */
static int parse_url(const char *s, struct url *u)
{
    const char *h, *end, *colon;
    size_t n;

    if (strncmp(s, "http://", 7) != 0)
        return -1;
    h = s + 7;
    end = h + strcspn(h, "/");
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return -1;
        n = (size_t)(rb - h - 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        h++;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        n = (size_t)((colon ? colon : end) - h);
    }
    if (n == 0 || n >= sizeof(u->host))
        return -1;
    memcpy(u->host, h, n);
    u->host[n] = '\0';
    n = colon ? (size_t)(end - colon - 1) : 0;
    if (n >= sizeof(u->port) || (colon && n == 0))
        return -1;
    if (colon)
        memcpy(u->port, colon + 1, n);
    u->port[n] = '\0';
    if (!colon)
        strcpy(u->port, "80");
    n = strlen(end);
    while (n > 0 && end[n - 1] == '/')
        n--;
    if (n >= sizeof(u->prefix))
        return -1;
    memcpy(u->prefix, end, n);
    u->prefix[n] = '\0';
    return 0;
}

/* Percent-encode id (every byte but RFC 3986 unreserved ones). */
static int encode_segment(const char *id, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || strchr("-._~", *p);
        if (o + 4 > cap)
            return -1;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

static int connect_to(const struct url *u)
{
    struct addrinfo hints = {0}, *res, *a;
    struct timeval tv = {TIMEOUT_S, 0};
    int fd = -1, rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "topk: %s: %s\n", u->host, gai_strerror(rc));
        return -1;
    }
    for (a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        fprintf(stderr, "topk: cannot connect to %s:%s: %s\n", u->host,
                u->port, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read until the daemon closes (we asked for Connection: close). */
static char *recv_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);

    while (buf) {
        ssize_t r;
        if (n == cap) {
            char *p = cap < MAX_ANSWER ? realloc(buf, cap * 2 + 1) : NULL;
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        r = recv(fd, buf + n, cap - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* ---- the HTTP answer ---- */

/* Header value of name in head (NUL-terminated headers), or NULL. */
static const char *header(const char *head, const char *name)
{
    size_t n = strlen(name);

    for (const char *l = strstr(head, "\r\n"); l; l = strstr(l, "\r\n")) {
        l += 2;
        if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
            l += n + 1;
            return l + strspn(l, " \t");
        }
    }
    return NULL;
}

/* Decode a chunked body in place; returns its length or -1. */
static long dechunk(char *body, size_t len)
{
    char *r = body, *w = body, *end = body + len;

    for (;;) {
        char *e;
        unsigned long size = strtoul(r, &e, 16);
        char *crlf = strstr(e, "\r\n");
        if (e == r || !crlf || (size_t)(end - crlf - 2) < size)
            return -1;
        if (size == 0)
            return (long)(w - body);
        memmove(w, crlf + 2, size);
        w += size;
        r = crlf + 2 + size + 2;
        if (r > end)
            return -1;
    }
}

/* Split buf into status and body; -1 on a malformed answer. */
static int split_answer(char *buf, size_t len, int *status, char **body,
                        size_t *body_len)
{
    char *sep = strstr(buf, "\r\n\r\n");
    const char *te;

    if (!sep || sscanf(buf, "HTTP/%*d.%*d %d", status) != 1)
        return -1;
    *sep = '\0';
    *body = sep + 4;
    *body_len = len - (size_t)(*body - buf);
    te = header(buf, "Transfer-Encoding");
    if (te && strncasecmp(te, "chunked", 7) == 0) {
        long n = dechunk(*body, *body_len);
        if (n < 0)
            return -1;
        *body_len = (size_t)n;
        (*body)[n] = '\0';
    }
    return 0;
}

/* ---- a small JSON reader: just enough to walk any valid document ---- */

struct json {
    const char *p, *end;
};

static void ws(struct json *j)
{
    while (j->p < j->end && strchr(" \t\r\n", *j->p) && *j->p)
        j->p++;
}

static int eat(struct json *j, char c)
{
    ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

/* Append code point cp as UTF-8 to out (o bytes of cap used). */
static size_t put_utf8(char *out, size_t o, size_t cap, unsigned cp)
{
    unsigned char b[4];
    size_t n = 0;

    if (cp < 0x80) {
        b[n++] = (unsigned char)cp;
    } else if (cp < 0x800) {
        b[n++] = (unsigned char)(0xC0 | cp >> 6);
        b[n++] = (unsigned char)(0x80 | (cp & 63));
    } else {
        b[n++] = (unsigned char)(0xE0 | cp >> 12);
        b[n++] = (unsigned char)(0x80 | ((cp >> 6) & 63));
        b[n++] = (unsigned char)(0x80 | (cp & 63));
    }
    for (size_t k = 0; k < n && o + 1 < cap; k++)
        out[o++] = (char)b[k];
    return o;
}

/* A string into out (truncated to cap - 1 bytes); -1 if malformed. */
static int string(struct json *j, char *out, size_t cap)
{
    size_t o = 0;

    if (!eat(j, '"'))
        return -1;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c == '\\') {
            /* pairs: escape letter, the byte it stands for */
            const char *map = "\"\"\\\\//b\bf\fn\nr\rt\t", *m;
            if (j->p >= j->end)
                return -1;
            c = *j->p++;
            if (c == 'u') {
                unsigned cp;
                if (j->end - j->p < 4 || sscanf(j->p, "%4x", &cp) != 1)
                    return -1;
                j->p += 4;
                o = put_utf8(out, o, cap, cp);
                continue;
            }
            m = strchr(map, c);
            if (!m || (m - map) % 2)
                return -1;
            c = m[1];
        }
        if (o + 1 < cap)
            out[o++] = c;
    }
    if (cap)
        out[o] = '\0';
    return eat(j, '"') ? 0 : -1;
}

static int value(struct json *j);

/* Skip an object or array whose opening bracket was eaten. */
static int members(struct json *j, char close, int keyed)
{
    char key[8];

    if (eat(j, close))
        return 0;
    do {
        if (keyed && (string(j, key, sizeof(key)) != 0 || !eat(j, ':')))
            return -1;
        if (value(j) != 0)
            return -1;
    } while (eat(j, ','));
    return eat(j, close) ? 0 : -1;
}

/* Skip any value. */
static int value(struct json *j)
{
    ws(j);
    if (j->p >= j->end)
        return -1;
    if (*j->p == '"')
        return string(j, NULL, 0);
    if (eat(j, '{'))
        return members(j, '}', 1);
    if (eat(j, '['))
        return members(j, ']', 0);
    if (strchr("-0123456789tfn", *j->p)) {
        j->p += strspn(j->p, "-+.eE0123456789truefalsn");
        return 0;
    }
    return -1;
}

/* ---- the recommendation answer ---- */

struct answer {
    unsigned long long model_version;
    char fallback[32];
    char code[64];
    char message[512];
    int n_items;
};

/* One {"item_id", "score"} object: print it as rank n. */
static int item(struct json *j, int rank)
{
    char key[16], id[MAX_STR] = "";
    double score = 0;

    if (!eat(j, '{'))
        return -1;
    if (eat(j, '}'))
        return -1;
    do {
        if (string(j, key, sizeof(key)) != 0 || !eat(j, ':'))
            return -1;
        if (strcmp(key, "item_id") == 0) {
            if (string(j, id, sizeof(id)) != 0)
                return -1;
        } else if (strcmp(key, "score") == 0) {
            char *e;
            ws(j);
            score = strtod(j->p, &e);
            if (e == j->p)
                return -1;
            j->p = e;
        } else if (value(j) != 0) {
            return -1;
        }
    } while (eat(j, ','));
    if (!eat(j, '}'))
        return -1;
    printf("%d\t%s\t%.6g\n", rank, id, score);
    return 0;
}

static int items(struct json *j, struct answer *a)
{
    if (!eat(j, '['))
        return -1;
    if (eat(j, ']'))
        return 0;
    do {
        if (item(j, a->n_items + 1) != 0)
            return -1;
        a->n_items++;
    } while (eat(j, ','));
    return eat(j, ']') ? 0 : -1;
}

/* {"error": {"code", "message"}} */
static int error_obj(struct json *j, struct answer *a)
{
    char key[16];

    if (!eat(j, '{'))
        return -1;
    if (eat(j, '}'))
        return 0;
    do {
        if (string(j, key, sizeof(key)) != 0 || !eat(j, ':'))
            return -1;
        if (strcmp(key, "code") == 0) {
            if (string(j, a->code, sizeof(a->code)) != 0)
                return -1;
        } else if (strcmp(key, "message") == 0) {
            if (string(j, a->message, sizeof(a->message)) != 0)
                return -1;
        } else if (value(j) != 0) {
            return -1;
        }
    } while (eat(j, ','));
    return eat(j, '}') ? 0 : -1;
}

static int member(struct json *j, const char *key, struct answer *a)
{
    if (strcmp(key, "items") == 0)
        return items(j, a);
    if (strcmp(key, "error") == 0)
        return error_obj(j, a);
    if (strcmp(key, "fallback") == 0)
        return string(j, a->fallback, sizeof(a->fallback));
    if (strcmp(key, "model_version") == 0) {
        char *e;
        ws(j);
        a->model_version = strtoull(j->p, &e, 10);
        if (e == j->p)
            return -1;
        j->p = e;
        return 0;
    }
    return value(j);
}

static int read_answer(const char *body, size_t len, struct answer *a)
{
    struct json j = {body, body + len};
    char key[32];

    if (!eat(&j, '{'))
        return -1;
    if (eat(&j, '}'))
        return 0;
    do {
        if (string(&j, key, sizeof(key)) != 0 || !eat(&j, ':'))
            return -1;
        if (member(&j, key, a) != 0)
            return -1;
    } while (eat(&j, ','));
    return eat(&j, '}') ? 0 : -1;
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: topk [-u URL] [-k K] USER_ID\n"
            "  URL defaults to $SGBD_URL, else http://127.0.0.1:8080\n");
    return 2;
}

/* Send the request, return the whole answer (malloc'd) or NULL. */
static char *fetch(const struct url *u, const char *user, int k, size_t *len)
{
    char seg[3 * MAX_STR + 1], req[4 * MAX_STR];
    char *buf;
    int fd, n;

    if (encode_segment(user, seg, sizeof(seg)) != 0) {
        fprintf(stderr, "topk: the user id is too long\n");
        return NULL;
    }
    n = snprintf(req, sizeof(req),
                 "GET %s/v1/users/%s/recommendations?k=%d HTTP/1.1\r\n"
                 "Host: %s:%s\r\nAccept: application/json\r\n"
                 "User-Agent: sgbd-topk-example\r\n"
                 "Connection: close\r\n\r\n",
                 u->prefix, seg, k, u->host, u->port);
    if (n < 0 || (size_t)n >= sizeof(req))
        return NULL;
    if ((fd = connect_to(u)) < 0)
        return NULL;
    buf = send_all(fd, req, (size_t)n) == 0 ? recv_all(fd, len) : NULL;
    if (!buf)
        fprintf(stderr, "topk: %s:%s: %s\n", u->host, u->port,
                errno ? strerror(errno) : "no answer");
    close(fd);
    return buf;
}

static int report(int status, const char *body, size_t len)
{
    struct answer a;

    memset(&a, 0, sizeof(a));
    if (read_answer(body, len, &a) != 0) {
        fprintf(stderr, "topk: HTTP %d with a malformed JSON body\n",
                status);
        return 1;
    }
    if (status != 200) {
        fprintf(stderr, "topk: HTTP %d %s: %s\n", status,
                a.code[0] ? a.code : "error", a.message);
        return 1;
    }
    fprintf(stderr, "model_version=%llu items=%d%s%s\n", a.model_version,
            a.n_items, a.fallback[0] ? " fallback=" : "", a.fallback);
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = getenv("SGBD_URL");
    struct url u;
    size_t len = 0, body_len;
    char *buf, *body, *end;
    int k = 10, opt, status, rc;

    while ((opt = getopt(argc, argv, "u:k:h")) != -1) {
        if (opt == 'u') {
            url = optarg;
        } else if (opt == 'k') {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 100000)
                return usage();
            k = (int)v;
        } else {
            return usage();
        }
    }
    if (optind != argc - 1 || !argv[optind][0])
        return usage();
    if (parse_url(url ? url : "http://127.0.0.1:8080", &u) != 0) {
        fprintf(stderr, "topk: the URL must be http://HOST[:PORT][/PATH]\n");
        return 2;
    }
    if (!(buf = fetch(&u, argv[optind], k, &len)))
        return 1;
    if (split_answer(buf, len, &status, &body, &body_len) != 0) {
        fprintf(stderr, "topk: the answer is not HTTP\n");
        free(buf);
        return 1;
    }
    rc = report(status, body, body_len);
    free(buf);
    return rc;
}
