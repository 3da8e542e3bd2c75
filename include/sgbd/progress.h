/*
 * progress.h - progress reporting for long command-line jobs.
 *
 * On a terminal a job redraws one status line in place ("\r...\033[K");
 * elsewhere (pipes, systemd, CI logs) each update becomes one logfmt line,
 * so scripts and journald see plain events. The caller formats the facts
 * once, as logfmt "key=value" pairs, and progress picks the rendering.
 */
#ifndef SGBD_PROGRESS_H
#define SGBD_PROGRESS_H

#include <stdio.h>

struct sgbd_progress {
    FILE *out;        /* stderr by default */
    int tty;          /* render in place */
    int dirty;        /* a line is drawn and not yet ended */
    const char *ev;   /* event name of the logfmt lines */
};

/* Start reporting event ev on stderr; quiet suppresses everything. */
void sgbd_progress_init(struct sgbd_progress *p, const char *ev, int quiet);

/* Show facts (logfmt pairs); on a terminal replaces the current line. */
void sgbd_progress_update(struct sgbd_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like update, but the line stays (a finished epoch, a summary). */
void sgbd_progress_line(struct sgbd_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* End any line drawn in place. */
void sgbd_progress_finish(struct sgbd_progress *p);

/* "1h02m", "3m05s", "12.3s": a duration for humans. */
const char *sgbd_progress_duration(double seconds, char *buf, size_t n);

#endif
