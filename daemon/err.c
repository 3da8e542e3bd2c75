/* err.c - error codes and the per-thread detail message. */
#include "sgbd/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char detail[512];

const char *sgbd_strerror(int rc)
{
    switch (rc) {
    case 0: return "success";
    case SGBD_E_FORMAT: return "malformed input";
    case SGBD_E_SHAPE: return "wrong shape";
    case SGBD_E_CONFIG: return "bad configuration";
    case SGBD_E_USAGE: return "bad usage";
    case SGBD_E_NOTFOUND: return "not found";
    case SGBD_E_EXISTS: return "already exists";
    case SGBD_E_CORRUPT: return "data corrupt";
    case SGBD_E_STORE: return "storage failure";
    case SGBD_E_MAPFULL: return "storage full";
    case SGBD_E_LIMIT: return "over limit";
    case SGBD_E_NOMODEL: return "no model";
    case SGBD_E_DIVERGED: return "training diverged";
    case SGBD_E_UNSUPPORTED: return "not supported";
    case SGBD_E_VERSION: return "incompatible version";
    case SGBD_E_BUSY: return "busy";
    case SGBD_E_REJECTED: return "rejected";
    case SGBD_E_CANCELLED: return "cancelled";
    }
    if (rc < 0 && rc > -1000)
        return strerror(-rc);
    return "unknown error";
}

/*
 * A detail is printed as one line and logged as one logfmt value, and it
 * often quotes bytes from a file or a request: control bytes become \xNN,
 * so hostile input can never start a line of its own.
 */
static void escape_controls(void)
{
    char out[sizeof(detail)];
    size_t o = 0;

    for (const char *s = detail; *s && o + 5 < sizeof(out); s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
    memcpy(detail, out, o + 1);
}

int sgbd_errf(int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    escape_controls();
    return rc;
}

const char *sgbd_err_detail(int rc)
{
    return detail[0] ? detail : sgbd_strerror(rc);
}

void sgbd_err_clear(void)
{
    detail[0] = '\0';
}
