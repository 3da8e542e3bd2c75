/* progress.c - one live line on a terminal, logfmt lines elsewhere. */
#include "sgbd/progress.h"

#include <stdarg.h>
#include <unistd.h>

#include "sgbd/log.h"

void sgbd_progress_init(struct sgbd_progress *p, const char *ev, int quiet)
{
    p->out = quiet ? NULL : stderr;
    p->tty = !quiet && isatty(fileno(stderr));
    p->dirty = 0;
    p->ev = ev;
}

static void render(struct sgbd_progress *p, int keep, const char *fmt,
                   va_list ap)
{
    char facts[1024];

    if (!p->out)
        return;
    vsnprintf(facts, sizeof(facts), fmt, ap);
    if (!p->tty) {
        sgbd_log_write(SGBD_LOG_INFO, p->ev, "%s", facts);
        return;
    }
    fprintf(p->out, "\r%s\033[K%s", facts, keep ? "\n" : "");
    fflush(p->out);
    p->dirty = !keep;
}

void sgbd_progress_update(struct sgbd_progress *p, const char *fmt, ...)
{
    va_list ap;

    /* Only terminals get the intermediate states; logs get whole events. */
    if (!p->tty)
        return;
    va_start(ap, fmt);
    render(p, 0, fmt, ap);
    va_end(ap);
}

void sgbd_progress_line(struct sgbd_progress *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    render(p, 1, fmt, ap);
    va_end(ap);
}

void sgbd_progress_finish(struct sgbd_progress *p)
{
    if (p->out && p->tty && p->dirty)
        fputc('\n', p->out);
    p->dirty = 0;
}

const char *sgbd_progress_duration(double s, char *buf, size_t n)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
    return buf;
}
