/*
 * log.h - one logfmt line per event on stderr.
 *
 * Every line starts with the syslog priority in angle brackets, which
 * journald reads as the level, then a stable event name, then facts:
 *
 *     <6>ev=checkpoint_saved version=12 ms=35 bytes=8388608
 *
 * SGBD_LOG skips the formatting entirely below the current level, so a
 * DEBUG line on a hot path costs one comparison. Values that may hold
 * spaces, quotes or bytes from clients go through sgbd_log_quote().
 */
#ifndef SGBD_LOG_H
#define SGBD_LOG_H

#include <stddef.h>

enum sgbd_log_level {
    SGBD_LOG_ERR = 3,
    SGBD_LOG_WARNING = 4,
    SGBD_LOG_NOTICE = 5,
    SGBD_LOG_INFO = 6,
    SGBD_LOG_DEBUG = 7,
};

extern int sgbd_log_level;

#define SGBD_LOG(level, ev, ...)                                            \
    do {                                                                    \
        if ((level) <= sgbd_log_level)                                      \
            sgbd_log_write((level), (ev), __VA_ARGS__);                     \
    } while (0)

#define SGBD_ERR(ev, ...) SGBD_LOG(SGBD_LOG_ERR, ev, __VA_ARGS__)
#define SGBD_WARN(ev, ...) SGBD_LOG(SGBD_LOG_WARNING, ev, __VA_ARGS__)
#define SGBD_INFO(ev, ...) SGBD_LOG(SGBD_LOG_INFO, ev, __VA_ARGS__)
#define SGBD_DEBUG(ev, ...) SGBD_LOG(SGBD_LOG_DEBUG, ev, __VA_ARGS__)

/*
 * Write "<level>ev=<ev> <formatted facts>\n" to stderr in one write(2), so
 * lines from several threads never interleave. fmt may be "" for no facts.
 */
void sgbd_log_write(int level, const char *ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Copy s into buf (size n) as a logfmt value: unchanged when it is plain,
 * else in double quotes with \" \\ and \xNN escapes. Always NUL-terminates;
 * truncates long values with "...". Returns buf.
 */
const char *sgbd_log_quote(const char *s, char *buf, size_t n);

/* Parse "err|warning|notice|info|debug"; -1 when unknown. */
int sgbd_log_level_parse(const char *name);

/* Where lines go (default 2, stderr); tests point it at a pipe. */
void sgbd_log_set_fd(int fd);

#endif
