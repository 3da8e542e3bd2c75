/* log.c - logfmt lines with a syslog prefix, one write(2) each. */
#include "sgbd/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int sgbd_log_level = SGBD_LOG_INFO;
static int log_fd = 2;

void sgbd_log_set_fd(int fd)
{
    log_fd = fd;
}

void sgbd_log_write(int level, const char *ev, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int len, more;

    len = snprintf(line, sizeof(line), "<%d>ev=%s%s", level, ev,
                   fmt[0] ? " " : "");
    if (len < 0)
        return;
    va_start(ap, fmt);
    more = vsnprintf(line + len, sizeof(line) - (size_t)len - 1, fmt, ap);
    va_end(ap);
    if (more < 0)
        more = 0;
    len += more;
    if (len > (int)sizeof(line) - 2)
        len = (int)sizeof(line) - 2; /* truncated: still one whole line */
    line[len++] = '\n';

    /* Best effort: a log line that cannot be written has nowhere to go. */
    ssize_t off = 0;
    while (off < len) {
        ssize_t w = write(log_fd, line + off, (size_t)(len - off));
        if (w <= 0)
            break;
        off += w;
    }
}

static int is_plain(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
            return 0;
    }
    return 1;
}

const char *sgbd_log_quote(const char *s, char *buf, size_t n)
{
    size_t o = 0;

    if (n < 8) {
        if (n)
            buf[0] = '\0';
        return buf;
    }
    if (!s)
        s = "";
    if (is_plain(s)) {
        snprintf(buf, n, "%s", s);
        if (strlen(s) >= n)
            memcpy(buf + n - 4, "...", 4);
        return buf;
    }
    buf[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[5];
        size_t el;

        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, esc[2] = 0;
        } else if (c < ' ' || c >= 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
        } else {
            esc[0] = (char)c, esc[1] = 0;
        }
        el = strlen(esc);
        if (o + el + 5 > n) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, esc, el);
        o += el;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

int sgbd_log_level_parse(const char *name)
{
    static const struct { const char *name; int level; } levels[] = {
        {"err", SGBD_LOG_ERR},       {"error", SGBD_LOG_ERR},
        {"warning", SGBD_LOG_WARNING}, {"warn", SGBD_LOG_WARNING},
        {"notice", SGBD_LOG_NOTICE}, {"info", SGBD_LOG_INFO},
        {"debug", SGBD_LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcasecmp(name, levels[i].name) == 0)
            return levels[i].level;
    return -1;
}
