/*
 * err.h - error codes shared by every module.
 *
 * Functions that can fail return int: 0 on success, a negative errno
 * (-ENOMEM, -EIO, ...) for system failures, or a negative enum sgbd_err
 * for failures of SGBD's own. The two ranges cannot collide: errno values
 * stay far below 1000.
 *
 * The code says what kind of failure it was; the detail (which file, which
 * line, which key) goes into a per-thread message with sgbd_errf(), which
 * the caller at the top (main, an HTTP handler) prints or returns:
 *
 *     if (rows != expect)
 *         return sgbd_errf(SGBD_E_SHAPE, "%s: %zu rows, expected %zu",
 *                          path, rows, expect);
 */
#ifndef SGBD_ERR_H
#define SGBD_ERR_H

enum sgbd_err {
    SGBD_E_FORMAT = -1001,      /* malformed input: file or request body */
    SGBD_E_SHAPE = -1002,       /* a tensor or feature of the wrong size */
    SGBD_E_CONFIG = -1003,      /* bad configuration file or option */
    SGBD_E_USAGE = -1004,       /* bad command line */
    SGBD_E_NOTFOUND = -1005,    /* unknown id, model, version, key */
    SGBD_E_EXISTS = -1006,      /* already present where it must be new */
    SGBD_E_CORRUPT = -1007,     /* checksum or structure mismatch */
    SGBD_E_STORE = -1008,       /* storage engine failure */
    SGBD_E_MAPFULL = -1009,     /* storage map full and cannot grow */
    SGBD_E_LIMIT = -1010,       /* over a configured limit */
    SGBD_E_NOMODEL = -1011,     /* no model published yet */
    SGBD_E_DIVERGED = -1012,    /* training produced NaN or Inf */
    SGBD_E_UNSUPPORTED = -1013, /* feature not available here */
    SGBD_E_VERSION = -1014,     /* incompatible file or schema version */
    SGBD_E_BUSY = -1015,        /* operation already in progress */
    SGBD_E_REJECTED = -1016,    /* candidate model failed the gate */
    SGBD_E_CANCELLED = -1017,   /* stopped on request */
};

/* Short constant description of rc (negative errno or enum sgbd_err). */
const char *sgbd_strerror(int rc);

/*
 * Record a detail message for the calling thread and return rc, so it can
 * be written as `return sgbd_errf(...)`. The message replaces the previous
 * one; it is truncated to 512 bytes.
 */
int sgbd_errf(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * The calling thread's last detail message, or sgbd_strerror(rc) when none
 * was recorded since sgbd_err_clear(). Valid until the next sgbd_errf().
 */
const char *sgbd_err_detail(int rc);

/* Forget the calling thread's detail message. */
void sgbd_err_clear(void);

#endif
