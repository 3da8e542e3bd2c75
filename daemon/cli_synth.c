/* cli_synth.c - `sgbd synth`: write a synthetic multimodal catalogue. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/cli.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/synth.h"

static const char usage_line[] =
    "usage: sgbd synth --out DIR [--users N] [--items N] [--clusters C] "
    "[--dim-image D] [--dim-text D] [--noise SIGMA] "
    "[--interactions-per-user N] [--seed S] [--features-only]";

static void print_help(const struct sgbd_synth_params *d)
{
    printf("usage: sgbd synth --out DIR [OPTIONS]\n\n"
           "Write a synthetic multimodal catalogue in MMRec format: "
           "DIR/NAME.inter,\nDIR/image_feat.npy and DIR/text_feat.npy. Items "
           "have latent clusters,\nusers prefer clusters, features are a "
           "fixed random linear map of the\nitem latents plus Gaussian noise. "
           "The same seed writes the same files.\n\n"
           "  --out DIR                 folder to write (created if missing)\n"
           "  --name NAME               file stem of NAME.inter (default: "
           "last part of DIR)\n"
           "  --users N                 users (%u)\n"
           "  --items N                 items (%u)\n"
           "  --clusters C              latent clusters (%u)\n"
           "  --latent L                latent dimensions (%u)\n"
           "  --dim-image D             image feature width, 0 for none (%u)\n"
           "  --dim-text D              text feature width, 0 for none (%u)\n"
           "  --noise SIGMA             feature noise; 0 = perfectly "
           "informative,\n"
           "                            10 and more = useless (%g)\n"
           "  --interactions-per-user N mean interactions per user, >= 5 "
           "(%u)\n"
           "  --seed S                  random seed (%llu)\n"
           "  --features-only           write only the .npy files, for "
           "--items N items\n"
           "  --items-from DIR          take the item count from the dataset "
           "in DIR\n\n"
           "Baby-sized features for an existing dataset:\n"
           "  sgbd synth --out /tmp/baby-feat --features-only --items 7050 "
           "\\\n      --dim-image 4096 --dim-text 384\n",
           d->n_users, d->n_items, d->n_clusters, d->dim_latent, d->dim_image,
           d->dim_text, d->noise, d->interactions_per_user,
           (unsigned long long)d->seed);
}

static int parse_u64(const char *opt, const char *v, uint64_t max,
                     uint64_t *out)
{
    char *end;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno == ERANGE ||
        x > max)
        return sgbd_errf(SGBD_E_USAGE, "%s: '%s' is not a whole number in "
                         "0..%llu", opt, v, (unsigned long long)max);
    *out = x;
    return 0;
}

static int parse_u32(const char *opt, const char *v, uint32_t *out)
{
    uint64_t x = 0;
    int rc = parse_u64(opt, v, 0x7fffffff, &x);

    if (rc == 0)
        *out = (uint32_t)x;
    return rc;
}

static int parse_sigma(const char *opt, const char *v, double *out)
{
    char *end;
    double x;

    errno = 0;
    x = strtod(v, &end);
    if (end == v || *end != '\0' || errno == ERANGE || !isfinite(x) || x < 0)
        return sgbd_errf(SGBD_E_USAGE, "%s: '%s' is not a number >= 0", opt,
                         v);
    *out = x;
    return 0;
}

static int items_from(const char *dir, uint32_t *n_items)
{
    struct sgbd_dataset ds;
    int rc = sgbd_dataset_load_dir(&ds, dir, NULL);

    if (rc != 0)
        return rc;
    *n_items = ds.n_items;
    sgbd_dataset_free(&ds);
    return 0;
}

static int is_option(const char *opt)
{
    static const char *const known[] = {
        "--out", "--items-from", "--name", "--users", "--items",
        "--clusters", "--latent", "--dim-image", "--dim-text",
        "--interactions-per-user", "--noise", "--seed",
    };

    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
        if (strcmp(opt, known[k]) == 0)
            return 1;
    return 0;
}

/* One "--opt VALUE" pair into p (or *out / *from). */
static int apply_option(struct sgbd_synth_params *p, const char *opt,
                        const char *v, const char **out, const char **from)
{
    if (strcmp(opt, "--out") == 0)
        return *out = v, 0;
    if (strcmp(opt, "--items-from") == 0)
        return *from = v, 0;
    if (strcmp(opt, "--name") == 0) {
        if (strlen(v) >= sizeof(p->name))
            return sgbd_errf(SGBD_E_USAGE, "--name: longer than %zu bytes",
                             sizeof(p->name) - 1);
        return snprintf(p->name, sizeof(p->name), "%s", v), 0;
    }
    if (strcmp(opt, "--users") == 0)
        return parse_u32(opt, v, &p->n_users);
    if (strcmp(opt, "--items") == 0)
        return parse_u32(opt, v, &p->n_items);
    if (strcmp(opt, "--clusters") == 0)
        return parse_u32(opt, v, &p->n_clusters);
    if (strcmp(opt, "--latent") == 0)
        return parse_u32(opt, v, &p->dim_latent);
    if (strcmp(opt, "--dim-image") == 0)
        return parse_u32(opt, v, &p->dim_image);
    if (strcmp(opt, "--dim-text") == 0)
        return parse_u32(opt, v, &p->dim_text);
    if (strcmp(opt, "--interactions-per-user") == 0)
        return parse_u32(opt, v, &p->interactions_per_user);
    if (strcmp(opt, "--noise") == 0)
        return parse_sigma(opt, v, &p->noise);
    if (strcmp(opt, "--seed") == 0)
        return parse_u64(opt, v, UINT64_MAX, &p->seed);
    return sgbd_errf(SGBD_E_USAGE, "unknown option '%s'; %s", opt,
                     usage_line);
}

static int parse_args(int argc, char **argv, struct sgbd_synth_params *p,
                      const char **out, const char **from)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *eq = strchr(opt, '=');
        char name[64];
        int rc;

        if (strcmp(opt, "--features-only") == 0) {
            p->features_only = 1;
            continue;
        }
        if (strncmp(opt, "--", 2) != 0)
            return sgbd_errf(SGBD_E_USAGE, "unexpected argument '%s'; %s",
                             opt, usage_line);
        if (eq && (size_t)(eq - opt) < sizeof(name)) {
            snprintf(name, sizeof(name), "%.*s", (int)(eq - opt), opt);
            rc = apply_option(p, name, eq + 1, out, from);
        } else if (i + 1 < argc || !is_option(opt)) {
            rc = apply_option(p, opt, i + 1 < argc ? argv[++i] : "", out,
                              from);
        } else {
            rc = sgbd_errf(SGBD_E_USAGE, "%s needs a value", opt);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* "synth FIELD: why" from sgbd_synth_check as "--FIELD: why". */
static int usage_from_check(int rc)
{
    char msg[512];
    const char *d = sgbd_err_detail(rc);

    snprintf(msg, sizeof(msg), "%s", strncmp(d, "synth ", 6) == 0 ? d + 6 : d);
    return sgbd_errf(SGBD_E_USAGE, "--%s", msg);
}

int sgbd_cli_synth(int argc, char **argv)
{
    struct sgbd_synth_params p;
    const char *out = NULL, *from = NULL;
    int rc;

    sgbd_synth_defaults(&p);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return print_help(&p), SGBD_CLI_HELP;
    rc = parse_args(argc, argv, &p, &out, &from);
    if (rc != 0)
        return rc;
    if (!out)
        return sgbd_errf(SGBD_E_USAGE, "--out DIR is required; %s",
                         usage_line);
    if (from && (rc = items_from(from, &p.n_items)) != 0)
        return rc;
    rc = sgbd_synth_check(&p);
    if (rc != 0)
        return usage_from_check(rc);
    rc = sgbd_synth_write(out, &p);
    if (rc != 0)
        return rc;
    if (p.features_only)
        printf("wrote %s: features of %u items (image %u, text %u, noise "
               "%g)\n", out, p.n_items, p.dim_image, p.dim_text, p.noise);
    else
        printf("wrote %s: %u users, %u items, %u clusters (image %u, text %u,"
               " noise %g, seed %llu)\n", out, p.n_users, p.n_items,
               p.n_clusters, p.dim_image, p.dim_text, p.noise,
               (unsigned long long)p.seed);
    return 0;
}
