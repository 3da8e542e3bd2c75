/*
 * serve_synth.c - synthetic serving snapshots (benchmarks, tests): random
 * embeddings of a given size and a linear cold-start model.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/rng.h"
#include "sgbd/serve.h"

#define IMAGE_W 64
#define TEXT_W 32

/* Cold start: v = W_image f_image + W_text f_text, W (D, D_c) row-major,
 * stored one after the other in theta; a missing channel adds nothing. */
static int synth_embed_new_item(struct sgbd_model *m, const float *theta,
                                const float *const *feats, float *out)
{
    const size_t w[2] = {IMAGE_W, TEXT_W};
    const float *W = theta;

    memset(out, 0, m->dim * sizeof(float));
    for (int c = 0; c < 2; c++) {
        for (size_t d = 0; feats[c] && d < m->dim; d++) {
            double acc = 0;
            for (size_t j = 0; j < w[c]; j++)
                acc += (double)W[d * w[c] + j] * feats[c][j];
            out[d] += (float)acc;
        }
        W += m->dim * w[c];
    }
    return 0;
}

static void synth_free(struct sgbd_model *m)
{
    free(m);
}

static const struct sgbd_model_ops synth_ops = {
    .name = "synthetic",
    .free = synth_free,
    .embed_new_item = synth_embed_new_item,
};

static int parse_spec(const char *spec, unsigned long long v[4])
{
    char *end;
    const char *p = spec;
    int n = 0;

    v[3] = 1;
    while (n < 4) {
        errno = 0;
        v[n++] = strtoull(p, &end, 10);
        if (end == p || errno)
            return -1;
        if (*end == '\0')
            break;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
    if (n < 3 || *end || v[0] == 0 || v[1] == 0 || v[2] == 0 ||
        v[0] > 100000000ULL || v[1] > 100000000ULL || v[2] > 4096)
        return -1;
    return 0;
}

static void fill_gaussian(struct sgbd_rng *rng, float *x, size_t n,
                          double scale)
{
    for (size_t k = 0; k < n; k++)
        x[k] = (float)(sgbd_rng_normal(rng) * scale);
}

/* 5..15 items per user, item = floor(I * r^2): low indices popular. */
static int synth_seen(struct sgbd_snapshot *s, struct sgbd_rng *rng)
{
    uint64_t *ptr = calloc((size_t)s->n_users + 1, sizeof(uint64_t));
    uint32_t *items = malloc((size_t)s->n_users * 15 * sizeof(uint32_t));
    int rc = -ENOMEM;

    if (ptr && items) {
        for (uint32_t u = 0; u < s->n_users; u++) {
            uint64_t n = 5 + sgbd_rng_below(rng, 11);
            for (uint64_t e = 0; e < n; e++) {
                double r = sgbd_rng_uniform(rng);
                uint32_t i = (uint32_t)(r * r * s->n_items);
                items[ptr[u] + e] = i < s->n_items ? i : s->n_items - 1;
            }
            ptr[u + 1] = ptr[u] + n;
        }
        rc = sgbd_snapshot_set_seen(s, ptr, items);
    }
    free(ptr);
    free(items);
    return rc;
}

static int synth_model(struct sgbd_snapshot *s, struct sgbd_rng *rng)
{
    const struct sgbd_snapshot_channel ch[2] = {{"image", IMAGE_W},
                                                {"text", TEXT_W}};
    struct sgbd_model *m = calloc(1, sizeof(*m));
    size_t n = s->dim * (IMAGE_W + TEXT_W);
    float *theta = malloc(n * sizeof(float));
    int rc = -ENOMEM;

    if (m && theta) {
        m->ops = &synth_ops;
        m->dim = s->dim;
        m->layout.n = n;
        fill_gaussian(rng, theta, s->dim * IMAGE_W,
                      1.0 / sqrt((double)IMAGE_W * s->dim));
        fill_gaussian(rng, theta + s->dim * IMAGE_W, s->dim * TEXT_W,
                      1.0 / sqrt((double)TEXT_W * s->dim));
        rc = sgbd_snapshot_set_model(s, m, theta, ch, 2);
    }
    if (rc != 0)
        free(m);
    free(theta);
    return rc;
}

int sgbd_serve_synthetic(struct sgbd_snapshot **out, const char *spec)
{
    struct sgbd_snapshot *s = NULL;
    unsigned long long v[4];
    struct sgbd_rng rng;
    int rc;

    if (parse_spec(spec, v) != 0)
        return sgbd_errf(SGBD_E_USAGE, "--synthetic '%s': expected USERS,"
                         "ITEMS,DIM[,SEED] with DIM <= 4096", spec);
    rc = sgbd_snapshot_new(&s, 1, (uint32_t)v[0], (uint32_t)v[1],
                           (size_t)v[2]);
    if (rc != 0)
        return rc;
    sgbd_rng_init(&rng, v[3], SGBD_RNG_INIT);
    fill_gaussian(&rng, s->users, (size_t)v[0] * v[2], 1 / sqrt((double)v[2]));
    fill_gaussian(&rng, s->items, (size_t)v[1] * v[2], 1 / sqrt((double)v[2]));
    rc = synth_seen(s, &rng);
    if (rc == 0)
        rc = synth_model(s, &rng);
    if (rc == 0) {
        snprintf(s->meta.model, sizeof(s->meta.model), "synthetic");
        snprintf(s->meta.optimizer, sizeof(s->meta.optimizer), "none");
        rc = sgbd_snapshot_finish(s);
    }
    if (rc != 0) {
        sgbd_snapshot_free(s);
        return rc;
    }
    *out = s;
    return 0;
}
