/* notify.c - sd_notify messages; nothing happens without NOTIFY_SOCKET. */
#include "sgbd/notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "sgbd/log.h"

int sgbd_notify_enabled(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    return s && *s;
}

/* Send one message; a failure is logged once per kind, never fatal. */
static void send_msg(const char *msg)
{
    int rc;

    if (!sgbd_notify_enabled())
        return;
    rc = sd_notify(0, msg);
    if (rc < 0)
        SGBD_WARN("sd_notify_failed", "rc=%d", rc);
}

void sgbd_notify_ready(const char *status)
{
    char msg[320];

    snprintf(msg, sizeof(msg), "READY=1%s%.256s", status ? "\nSTATUS=" : "",
             status ? status : "");
    send_msg(msg);
}

void sgbd_notify_reloading(void)
{
    struct timespec ts;
    char msg[96];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL +
                 (unsigned long long)ts.tv_nsec / 1000ULL);
    send_msg(msg);
}

void sgbd_notify_stopping(const char *status)
{
    char msg[320];

    snprintf(msg, sizeof(msg), "STOPPING=1%s%.256s",
             status ? "\nSTATUS=" : "", status ? status : "");
    send_msg(msg);
}

void sgbd_notify_watchdog(void)
{
    send_msg("WATCHDOG=1");
}

void sgbd_notify_status(const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    int n = snprintf(msg, sizeof(msg), "STATUS=");

    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    send_msg(msg);
}

uint64_t sgbd_notify_watchdog_usec(void)
{
    uint64_t usec = 0;

    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
