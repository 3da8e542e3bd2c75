/*
 * notify.h - the systemd notification protocol (sd_notify), and only
 * here: libsystemd is used by no other module.
 *
 * Every call is a no-op when the daemon does not run under systemd with
 * Type=notify (no NOTIFY_SOCKET in the environment), so tests and plain
 * shells need nothing special. Messages [serving.md section 6.1]:
 * READY=1 once a model is published and the port listens (or, with an
 * empty store, once the port listens: /readyz says the rest); RELOADING=1
 * with MONOTONIC_USEC then READY=1 around a SIGHUP reload (what
 * Type=notify-reload expects); STOPPING=1 when draining starts; WATCHDOG=1
 * from the serving path; STATUS= lines for humans.
 */
#ifndef SGBD_NOTIFY_H
#define SGBD_NOTIFY_H

#include <stdint.h>

/* Whether a notification socket is configured. */
int sgbd_notify_enabled(void);

/* READY=1 with STATUS=status (may be NULL). */
void sgbd_notify_ready(const char *status);

/* RELOADING=1 and MONOTONIC_USEC=now. */
void sgbd_notify_reloading(void);

/* STOPPING=1 with STATUS=status (may be NULL). */
void sgbd_notify_stopping(const char *status);

/* WATCHDOG=1. */
void sgbd_notify_watchdog(void);

/* STATUS=<formatted>. */
void sgbd_notify_status(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * The watchdog interval the service manager asks for, in microseconds
 * (WATCHDOG_USEC for this process), or 0 when no watchdog is set.
 */
uint64_t sgbd_notify_watchdog_usec(void);

#endif
