/* prune.c - FREEDOM's degree-sensitive edge pruning (see prune.h). */
#include "prune.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"

/* (d_u + 1e-7)^-1/2 (d_i + 1e-7)^-1/2 over the given rows, in float as
 * torch computes it (freedom.py _normalize_adj_m). */
static int row_weights(const uint32_t *users, const uint32_t *items,
                       const uint32_t *rows, size_t n, size_t U, size_t I,
                       float *out)
{
    float *du = calloc(U + 1, sizeof(float)),
          *di = calloc(I + 1, sizeof(float));

    if (!du || !di) {
        free(di), free(du);
        return -ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        size_t e = rows ? rows[k] : k;
        du[users[e]] += 1.0f, di[items[e]] += 1.0f;
    }
    for (size_t u = 0; u < U; u++)
        du[u] = 1.0f / sqrtf(1e-7f + du[u]);
    for (size_t i = 0; i < I; i++)
        di[i] = 1.0f / sqrtf(1e-7f + di[i]);
    for (size_t k = 0; k < n; k++) {
        size_t e = rows ? rows[k] : k;
        out[k] = du[users[e]] * di[items[e]];
    }
    free(di), free(du);
    return 0;
}

int sgbd_prune_init(struct sgbd_prune *p, size_t U, size_t I, size_t n,
                    const uint32_t *users, const uint32_t *items)
{
    memset(p, 0, sizeof(*p));
    for (size_t k = 0; k < n; k++)
        if (users[k] >= U || items[k] >= I)
            return sgbd_errf(SGBD_E_SHAPE,
                             "prune: training row %zu (%u, "
                             "%u) outside %zu users x %zu items",
                             k, users[k], items[k], U, I);
    p->U = U, p->I = I, p->n = n;
    p->users = malloc(n * sizeof(uint32_t) + 1);
    p->items = malloc(n * sizeof(uint32_t) + 1);
    p->w = malloc(n * sizeof(float) + 1);
    p->key = malloc(n * sizeof(double) + 1);
    p->order = malloc(n * sizeof(uint32_t) + 1);
    if (!p->users || !p->items || !p->w || !p->key || !p->order)
        return -ENOMEM;
    memcpy(p->users, users, n * sizeof(uint32_t));
    memcpy(p->items, items, n * sizeof(uint32_t));
    return row_weights(users, items, NULL, n, U, I, p->w);
}

void sgbd_prune_deinit(struct sgbd_prune *p)
{
    if (!p)
        return;
    free(p->order), free(p->key), free(p->w), free(p->items), free(p->users);
    memset(p, 0, sizeof(*p));
}

static int by_key_desc(const void *a, const void *b, void *ctx)
{
    const double *key = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    if (key[x] != key[y])
        return key[x] > key[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* Sorting by log(u) / w puts the rows in the order of sequential
 * weighted draws without replacement; the first keep are the kept set. */
static void draw_order(struct sgbd_prune *p, struct sgbd_rng *rng)
{
    for (size_t k = 0; k < p->n; k++) {
        double u = 1.0 - sgbd_rng_uniform(rng); /* (0, 1] */
        p->key[k] = log(u) / (double)p->w[k];
        p->order[k] = (uint32_t)k;
    }
    qsort_r(p->order, p->n, sizeof(*p->order), by_key_desc, p->key);
}

int sgbd_prune_draw(struct sgbd_csr *out, struct sgbd_prune *p, size_t keep,
                    struct sgbd_rng *rng)
{
    size_t U = p->U;
    uint32_t *r = malloc(2 * keep * sizeof(uint32_t) + 1);
    uint32_t *c = malloc(2 * keep * sizeof(uint32_t) + 1);
    float *v = malloc(2 * keep * sizeof(float) + 1);
    float *w = malloc(keep * sizeof(float) + 1);
    int rc = -ENOMEM;

    if (keep > p->n) {
        rc = sgbd_errf(SGBD_E_SHAPE, "prune: keep %zu of %zu rows", keep, p->n);
        goto out;
    }
    if (!r || !c || !v || !w)
        goto out;
    draw_order(p, rng);
    rc = row_weights(p->users, p->items, p->order, keep, U, p->I, w);
    if (rc < 0)
        goto out;
    for (size_t k = 0; k < keep; k++) {
        uint32_t u = p->users[p->order[k]];
        uint32_t i = (uint32_t)U + p->items[p->order[k]];
        r[2 * k] = u, c[2 * k] = i, v[2 * k] = w[k];
        r[2 * k + 1] = i, c[2 * k + 1] = u, v[2 * k + 1] = w[k];
    }
    rc = sgbd_csr_from_coo(out, U + p->I, U + p->I, 2 * keep, r, c, v, 1);
out:
    free(w), free(v), free(c), free(r);
    return rc;
}
