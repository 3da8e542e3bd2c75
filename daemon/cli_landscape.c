/*
 * cli_landscape.c - `sgbd landscape`: the loss around trained models, as
 * a table and an SVG picture, to see whether a minimum is flat.
 *
 *     sgbd train --data D --optimizer adam --out adam.model
 *     sgbd train --data D --optimizer sgbd --out sgbd.model
 *     sgbd landscape --data D --in adam.model --in sgbd.model --out l.svg
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/cli.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/svg.h"
#include "sgbd/train_job.h"

#define MAX_MODELS 4

struct landscape_args {
    struct sgbd_train_job job;
    struct sgbd_landscape_opts o;
    const char *in[MAX_MODELS];
    int n_in;
    const char *svg;
    int json;
};

static void print_help(void)
{
    printf(
        "usage: sgbd landscape --data DIR --in MODEL [--in MODEL]... "
        "[OPTIONS]\n"
        "\n"
        "Loss of each saved model along a random and along the gradient\n"
        "direction through its parameters (each tensor's step scaled to "
        "that\ntensor's norm), averaged over a fixed set of training "
        "batches. A flat\nminimum rises little on both sides.\n"
        "\n"
        "  --in FILE         a model written by sgbd train --out "
        "(up to 4)\n"
        "  --features DIR    read <name>_feat.npy files from DIR\n"
        "  --out FILE.svg    draw the curves\n"
        "  --radius X        t runs over [-X, X] (0.5)\n"
        "  --steps N         points per direction (21)\n"
        "  --batches N       training batches the loss is averaged over "
        "(8)\n"
        "  --seed N          batches and random direction (999)\n"
        "  --json            print one JSON object on stdout\n");
}

static int parse_number(const char *flag, const char *s, double lo,
                        double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end || !(v >= lo && v <= hi))
        return sgbd_errf(SGBD_E_USAGE, "--%s: '%s' is not a number in "
                         "[%g, %g]", flag, s, lo, hi);
    *out = v;
    return 0;
}

static int parse(struct landscape_args *a, int argc, char **argv, int *help)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"features", required_argument, NULL, 'f'},
        {"in", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},
        {"radius", required_argument, NULL, 'r'},
        {"steps", required_argument, NULL, 's'},
        {"batches", required_argument, NULL, 'b'},
        {"seed", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    double v = 0;
    int c, rc = 0;

    memset(a, 0, sizeof(*a));
    sgbd_train_job_defaults(&a->job);
    sgbd_landscape_opts_defaults(&a->o);
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->job.data_dir = optarg; break;
        case 'f': a->job.features_dir = optarg; break;
        case 'o': a->svg = optarg; break;
        case 'j': a->json = 1; break;
        case 'h': *help = 1; return 0;
        case 'i':
            if (a->n_in == MAX_MODELS)
                return sgbd_errf(SGBD_E_USAGE, "at most %d --in models",
                                 MAX_MODELS);
            a->in[a->n_in++] = optarg;
            break;
        case 'r':
            rc = parse_number("radius", optarg, 1e-6, 100, &a->o.radius);
            break;
        case 's':
            rc = parse_number("steps", optarg, 3, SGBD_LANDSCAPE_MAX_STEPS,
                              &v);
            a->o.steps = (int)v;
            break;
        case 'b':
            rc = parse_number("batches", optarg, 1,
                              SGBD_LANDSCAPE_MAX_BATCHES, &v);
            a->o.n_batches = (int)v;
            break;
        case 'S':
            rc = parse_number("seed", optarg, 0, 9e18, &v);
            a->o.seed = (uint64_t)v;
            break;
        default:
            return sgbd_errf(SGBD_E_USAGE, "unknown or incomplete option "
                             "'%s' (see --help)", argv[optind - 1]);
        }
    }
    if (rc)
        return rc;
    if (optind < argc)
        return sgbd_errf(SGBD_E_USAGE, "unexpected argument '%s'",
                         argv[optind]);
    if (!a->job.data_dir || a->n_in == 0)
        return sgbd_errf(SGBD_E_USAGE, "--data DIR and at least one --in "
                         "MODEL are needed");
    return 0;
}

static int write_svg(const char *path, struct sgbd_landscape_curve *c,
                     int n)
{
    struct sgbd_svg_chart chart = {0};
    static char names[MAX_MODELS][80];

    chart.title = "loss around the trained parameters";
    chart.n_panels = 2;
    chart.panels[0].title = "random direction";
    chart.panels[1].title = "gradient direction";
    for (int p = 0; p < 2; p++) {
        chart.panels[p].xlabel = "step t (fraction of each tensor's norm)";
        chart.panels[p].ylabel = "training loss";
        chart.panels[p].n_series = n;
    }
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "%s %s", c[i].model,
                 c[i].optimizer);
        chart.panels[0].series[i] = (struct sgbd_svg_series){
            names[i], c[i].t, c[i].random, (size_t)c[i].n};
        chart.panels[1].series[i] = (struct sgbd_svg_series){
            names[i], c[i].t, c[i].gradient, (size_t)c[i].n};
    }
    return sgbd_svg_write(path, &chart);
}

static void report(const struct landscape_args *a,
                   const struct sgbd_landscape_curve *c)
{
    if (!a->json) {
        printf("%-28s %10s %12s %12s\n", "model", "loss", "rise_random",
               "rise_grad");
        for (int i = 0; i < a->n_in; i++)
            printf("%-28s %10.4f %12.4f %12.4f\n", a->in[i], c[i].center,
                   c[i].sharpness_random, c[i].sharpness_gradient);
        return;
    }
    json_t *arr = json_array();
    for (int i = 0; i < a->n_in; i++) {
        json_t *o = json_object(), *t = json_array(), *r = json_array();
        json_t *g = json_array();
        for (int s = 0; s < c[i].n; s++) {
            json_array_append_new(t, json_real(c[i].t[s]));
            json_array_append_new(r, isfinite(c[i].random[s])
                                         ? json_real(c[i].random[s])
                                         : json_null());
            json_array_append_new(g, isfinite(c[i].gradient[s])
                                         ? json_real(c[i].gradient[s])
                                         : json_null());
        }
        json_object_set_new(o, "file", json_string(a->in[i]));
        json_object_set_new(o, "model", json_string(c[i].model));
        json_object_set_new(o, "optimizer", json_string(c[i].optimizer));
        json_object_set_new(o, "loss", json_real(c[i].center));
        json_object_set_new(o, "rise_random", json_real(c[i].sharpness_random));
        json_object_set_new(o, "rise_gradient",
                            json_real(c[i].sharpness_gradient));
        json_object_set_new(o, "t", t);
        json_object_set_new(o, "random", r);
        json_object_set_new(o, "gradient", g);
        json_array_append_new(arr, o);
    }
    json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', stdout);
    json_decref(arr);
}

int sgbd_cli_landscape(int argc, char **argv)
{
    struct landscape_args a;
    struct sgbd_landscape_curve *curves;
    int help = 0, rc;

    rc = parse(&a, argc, argv, &help);
    if (rc)
        return rc;
    if (help)
        return print_help(), SGBD_CLI_HELP;
    sgbd_log_level = SGBD_LOG_WARNING;
    curves = calloc((size_t)a.n_in, sizeof(*curves));
    if (!curves)
        return -ENOMEM;
    for (int i = 0; i < a.n_in && rc == 0; i++) {
        a.job.in_path = a.in[i];
        rc = sgbd_train_job_landscape(&a.job, &a.o, &curves[i]);
    }
    if (rc == 0)
        report(&a, curves);
    if (rc == 0 && a.svg)
        rc = write_svg(a.svg, curves, a.n_in);
    free(curves);
    return rc;
}
