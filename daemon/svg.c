/*
 * svg.c - line charts written as SVG text.
 *
 * Layout: panels of PANEL_W x PANEL_H pixels in a row, a plot area inset
 * by margins for tick labels, "nice" ticks (1, 2, 5 x 10^k) on both axes.
 */
#include "sgbd/svg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sgbd/err.h"

#define PANEL_W 480
#define PANEL_H 340
#define TITLE_H 36
#define M_LEFT 64
#define M_RIGHT 16
#define M_TOP 28
#define M_BOTTOM 48

static const char *const colours[SGBD_SVG_MAX_SERIES] = {
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
    "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
};

struct range {
    double lo, hi;
};

static void put_escaped(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Finite extent of x or y over every series of a panel. */
static struct range extent(const struct sgbd_svg_panel *p, int use_y)
{
    struct range r = {INFINITY, -INFINITY};

    for (int s = 0; s < p->n_series; s++) {
        const double *v = use_y ? p->series[s].y : p->series[s].x;
        for (size_t i = 0; i < p->series[s].n; i++) {
            if (!isfinite(v[i]) || !isfinite(p->series[s].y[i]))
                continue;
            r.lo = fmin(r.lo, v[i]);
            r.hi = fmax(r.hi, v[i]);
        }
    }
    if (!isfinite(r.lo))
        r.lo = 0, r.hi = 1;
    if (r.hi - r.lo < 1e-12 * fmax(1.0, fabs(r.hi)))
        r.lo -= 0.5, r.hi += 0.5;
    return r;
}

/* Tick spacing: 1, 2 or 5 times a power of ten, about 5 ticks. */
static double tick_step(struct range r)
{
    double raw = (r.hi - r.lo) / 5, mag = pow(10, floor(log10(raw)));
    double f = raw / mag;

    return mag * (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10);
}

static void draw_axes(FILE *f, double x0, double y0, double w, double h,
                      struct range rx, struct range ry,
                      const struct sgbd_svg_panel *p)
{
    double sx = tick_step(rx), sy = tick_step(ry);

    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' "
               "fill='none' stroke='#888'/>\n", x0, y0, w, h);
    for (double t = ceil(rx.lo / sx) * sx; t <= rx.hi + 1e-9 * sx; t += sx) {
        double x = x0 + (t - rx.lo) / (rx.hi - rx.lo) * w;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
                   "stroke='#eee'/><text x='%.1f' y='%.1f' "
                   "text-anchor='middle'>%g</text>\n",
                x, y0, x, y0 + h, x, y0 + h + 16, t);
    }
    for (double t = ceil(ry.lo / sy) * sy; t <= ry.hi + 1e-9 * sy; t += sy) {
        double y = y0 + h - (t - ry.lo) / (ry.hi - ry.lo) * h;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
                   "stroke='#eee'/><text x='%.1f' y='%.1f' "
                   "text-anchor='end'>%.4g</text>\n",
                x0, y, x0 + w, y, x0 - 6, y + 4, t);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>", x0 + w / 2,
            y0 + h + 36);
    put_escaped(f, p->xlabel);
    fprintf(f, "</text>\n<text transform='translate(%.1f,%.1f) rotate(-90)' "
               "text-anchor='middle'>", x0 - 48, y0 + h / 2);
    put_escaped(f, p->ylabel);
    fprintf(f, "</text>\n<text x='%.1f' y='%.1f' text-anchor='middle' "
               "font-weight='bold'>", x0 + w / 2, y0 - 10);
    put_escaped(f, p->title);
    fputs("</text>\n", f);
}

static void draw_series(FILE *f, double x0, double y0, double w, double h,
                        struct range rx, struct range ry,
                        const struct sgbd_svg_series *s, const char *colour)
{
    int open = 0;

    for (size_t i = 0; i < s->n; i++) {
        if (!isfinite(s->x[i]) || !isfinite(s->y[i])) {
            if (open)
                fputs("'/>\n", f);
            open = 0;
            continue;
        }
        double x = x0 + (s->x[i] - rx.lo) / (rx.hi - rx.lo) * w;
        double y = y0 + h - (s->y[i] - ry.lo) / (ry.hi - ry.lo) * h;
        if (!open)
            fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' "
                       "points='", colour);
        fprintf(f, "%.1f,%.1f ", x, y);
        open = 1;
    }
    if (open)
        fputs("'/>\n", f);
}

static void draw_legend(FILE *f, double x0, double y0,
                        const struct sgbd_svg_panel *p)
{
    /* A backing box, so curves running under the legend stay readable. */
    fprintf(f, "<rect x='%.1f' y='%.1f' width='146' height='%d' "
               "fill='white' fill-opacity='0.85' stroke='#ccc'/>\n",
            x0 + 2, y0 + 2, 16 * p->n_series + 6);
    for (int s = 0; s < p->n_series; s++) {
        double y = y0 + 14 + 16 * s;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
                   "stroke='%s' stroke-width='3'/><text x='%.1f' y='%.1f'>",
                x0 + 8, y - 4, x0 + 26, y - 4, colours[s], x0 + 30, y);
        put_escaped(f, p->series[s].name);
        fputs("</text>\n", f);
    }
}

static void draw_panel(FILE *f, int k, const struct sgbd_svg_panel *p)
{
    double x0 = k * PANEL_W + M_LEFT, y0 = TITLE_H + M_TOP;
    double w = PANEL_W - M_LEFT - M_RIGHT, h = PANEL_H - M_TOP - M_BOTTOM;
    struct range rx = extent(p, 0), ry = extent(p, 1);

    draw_axes(f, x0, y0, w, h, rx, ry, p);
    for (int s = 0; s < p->n_series; s++)
        draw_series(f, x0, y0, w, h, rx, ry, &p->series[s], colours[s]);
    draw_legend(f, x0 + w - 150, y0, p);
}

int sgbd_svg_write(const char *path, const struct sgbd_svg_chart *c)
{
    char tmp[4096];
    FILE *f;
    int rc = 0, n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    if (c->n_panels < 1 || c->n_panels > SGBD_SVG_MAX_PANELS)
        return sgbd_errf(SGBD_E_USAGE, "%s: a chart needs 1 to %d panels",
                         path, SGBD_SVG_MAX_PANELS);
    for (int k = 0; k < c->n_panels; k++)
        if (c->panels[k].n_series < 1 ||
            c->panels[k].n_series > SGBD_SVG_MAX_SERIES)
            return sgbd_errf(SGBD_E_USAGE, "%s: a panel needs 1 to %d "
                             "series", path, SGBD_SVG_MAX_SERIES);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return sgbd_errf(-ENAMETOOLONG, "%s: path too long", path);
    f = fopen(tmp, "w");
    if (!f)
        return sgbd_errf(-errno, "%s: %s", tmp, strerror(errno));

    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' "
               "height='%d' font-family='sans-serif' font-size='12'>\n"
               "<rect width='100%%' height='100%%' fill='white'/>\n"
               "<text x='%d' y='24' text-anchor='middle' font-size='16'>",
            c->n_panels * PANEL_W, TITLE_H + PANEL_H,
            c->n_panels * PANEL_W / 2);
    put_escaped(f, c->title);
    fputs("</text>\n", f);
    for (int k = 0; k < c->n_panels; k++)
        draw_panel(f, k, &c->panels[k]);
    fputs("</svg>\n", f);

    if (fflush(f) != 0 || ferror(f))
        rc = sgbd_errf(-EIO, "%s: write failed", tmp);
    if (fclose(f) != 0 && rc == 0)
        rc = sgbd_errf(-EIO, "%s: write failed", tmp);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sgbd_errf(-errno, "%s: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}
