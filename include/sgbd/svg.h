/*
 * svg.h - line charts as standalone SVG files, no dependency.
 *
 * For the pictures people would rather look at than read: learning
 * curves (`sgbd train --plot`) and loss landscapes (`sgbd landscape`).
 * A chart has one or more panels side by side, each with its own axes
 * and any number of series; the series colours repeat across panels, so
 * "adam" is the same colour in every panel of one chart.
 */
#ifndef SGBD_SVG_H
#define SGBD_SVG_H

#include <stddef.h>

#define SGBD_SVG_MAX_SERIES 8
#define SGBD_SVG_MAX_PANELS 4

struct sgbd_svg_series {
    const char *name;          /* legend text */
    const double *x, *y;       /* (n) each; non-finite y values are gaps */
    size_t n;
};

struct sgbd_svg_panel {
    const char *title;
    const char *xlabel, *ylabel;
    int n_series;
    struct sgbd_svg_series series[SGBD_SVG_MAX_SERIES];
};

struct sgbd_svg_chart {
    const char *title;
    int n_panels;
    struct sgbd_svg_panel panels[SGBD_SVG_MAX_PANELS];
};

/*
 * Write chart to path (replaced atomically). Text is XML-escaped.
 * Errors: SGBD_E_USAGE for an empty chart or too many panels/series,
 * -errno (detail names the path) when the file cannot be written.
 */
int sgbd_svg_write(const char *path, const struct sgbd_svg_chart *chart);

#endif
