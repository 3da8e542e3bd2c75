/*
 * model_fixture.h - tiny random datasets, feature channels and model
 * harnesses shared by the tests/test_<model>.c files.
 *
 * fixture_dataset() builds U users, I items and n training rows drawn
 * from a fixed seed (duplicates included on purpose), with the per-user
 * sorted train sets and the distinct-item list that dataset.h promises;
 * valid/test are left empty. fixture_model_loss() adapts a model's
 * loss_grad to gradcheck.h's callback shape.
 */
#ifndef SGBD_TEST_MODEL_FIXTURE_H
#define SGBD_TEST_MODEL_FIXTURE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "sgbd/dataset.h"
#include "sgbd/model.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"

static inline int fixture_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Sorted unique items per user from the training rows. */
static inline void fixture_itemsets(struct sgbd_dataset *ds)
{
    size_t U = ds->n_users, n = ds->n_train;
    uint64_t *ptr = calloc(U + 1, sizeof(*ptr));
    uint32_t *items = malloc((n + 1) * sizeof(*items));

    for (uint32_t u = 0; u < U; u++) {
        ptr[u + 1] = ptr[u];
        for (size_t k = 0; k < n; k++)
            if (ds->train_users[k] == u)
                items[ptr[u + 1]++] = ds->train_items[k];
        qsort(items + ptr[u], ptr[u + 1] - ptr[u], sizeof(*items),
              fixture_cmp_u32);
        size_t w = ptr[u];
        for (uint64_t j = ptr[u]; j < ptr[u + 1]; j++)
            if (j == ptr[u] || items[j] != items[w - 1])
                items[w++] = items[j];
        ptr[u + 1] = w;
    }
    ds->train.ptr = ptr;
    ds->train.items = items;
}

static inline void fixture_neg_items(struct sgbd_dataset *ds)
{
    uint8_t *seen = calloc(ds->n_items, 1);

    ds->neg_items = malloc((ds->n_items + 1) * sizeof(uint32_t));
    ds->n_neg_items = 0;
    for (size_t k = 0; k < ds->n_train; k++)
        seen[ds->train_items[k]] = 1;
    for (uint32_t i = 0; i < ds->n_items; i++)
        if (seen[i])
            ds->neg_items[ds->n_neg_items++] = i;
    free(seen);
}

/* Every user gets at least one row; the rest are random, duplicates and
 * untouched items (I > rows / U) included. */
static inline void fixture_dataset(struct sgbd_dataset *ds, uint32_t U,
                                   uint32_t I, size_t n, uint64_t seed)
{
    struct sgbd_rng r;

    memset(ds, 0, sizeof(*ds));
    sgbd_rng_init(&r, seed, 42);
    ds->n_users = U;
    ds->n_items = I;
    ds->n_train = n;
    ds->train_users = malloc(n * sizeof(uint32_t));
    ds->train_items = malloc(n * sizeof(uint32_t));
    for (size_t k = 0; k < n; k++) {
        ds->train_users[k] =
            k < U ? (uint32_t)k : (uint32_t)sgbd_rng_below(&r, U);
        /* the last item never appears in training */
        ds->train_items[k] = (uint32_t)sgbd_rng_below(&r, I - 1);
    }
    if (n > U + 1) { /* one exact duplicate row */
        ds->train_users[n - 1] = ds->train_users[n - 2];
        ds->train_items[n - 1] = ds->train_items[n - 2];
    }
    fixture_itemsets(ds);
    fixture_neg_items(ds);
}

/* Recompute the train sets and negatives after editing the rows. */
static inline void fixture_dataset_rebuild(struct sgbd_dataset *ds)
{
    free(ds->train.ptr);
    free(ds->train.items);
    free(ds->neg_items);
    fixture_itemsets(ds);
    fixture_neg_items(ds);
}

static inline void fixture_dataset_free(struct sgbd_dataset *ds)
{
    free(ds->train_users);
    free(ds->train_items);
    free(ds->train.ptr);
    free(ds->train.items);
    free(ds->neg_items);
    memset(ds, 0, sizeof(*ds));
}

/* Channel c of width dims[c], values uniform in [-1, 1). */
static inline void fixture_features(struct sgbd_features *f, uint32_t I, int n,
                                    const char *const *names,
                                    const size_t *dims, uint64_t seed)
{
    struct sgbd_rng r;

    memset(f, 0, sizeof(*f));
    sgbd_rng_init(&r, seed, 43);
    f->n = n;
    for (int c = 0; c < n; c++) {
        struct sgbd_channel *ch = &f->ch[c];
        snprintf(ch->name, sizeof(ch->name), "%s", names[c]);
        ch->m = sgbd_mat_view(malloc(I * dims[c] * sizeof(float)), I, dims[c]);
        for (size_t k = 0; k < I * dims[c]; k++)
            ch->m.data[k] = (float)(2.0 * sgbd_rng_uniform(&r) - 1.0);
    }
}

static inline void fixture_features_free(struct sgbd_features *f)
{
    for (int c = 0; c < f->n; c++)
        free(f->ch[c].m.data);
    memset(f, 0, sizeof(*f));
}

/* A batch of B triples with a repeated user and a repeated item. */
struct fixture_batch {
    uint32_t u[64], p[64], q[64];
    struct sgbd_batch b;
};

static inline void fixture_batch(struct fixture_batch *fb,
                                 const struct sgbd_dataset *ds, size_t B,
                                 uint64_t seed)
{
    struct sgbd_rng r;

    sgbd_rng_init(&r, seed, 44);
    for (size_t k = 0; k < B; k++) {
        size_t row = sgbd_rng_below(&r, ds->n_train);
        fb->u[k] = ds->train_users[row];
        fb->p[k] = ds->train_items[row];
        fb->q[k] = (uint32_t)sgbd_rng_below(&r, ds->n_items);
    }
    if (B >= 3) {
        fb->u[B - 1] = fb->u[0];
        fb->q[B - 2] = fb->p[1];
    }
    fb->b.n = B;
    fb->b.users = fb->u;
    fb->b.pos = fb->p;
    fb->b.neg = fb->q;
}

/* gradcheck adapter: loss_grad needs a gradient buffer even for f(x). */
struct fixture_loss_ctx {
    struct sgbd_model *m;
    const struct sgbd_batch *b;
    float *scratch; /* (layout.n) */
};

static inline double fixture_model_loss(void *vc, const float *theta,
                                        float *grad)
{
    struct fixture_loss_ctx *c = vc;
    size_t n = c->m->layout.n;

    if (grad)
        return c->m->ops->loss_grad(c->m, theta, grad, c->b);
    memset(c->scratch, 0, n * sizeof(float));
    return c->m->ops->loss_grad(c->m, theta, c->scratch, c->b);
}

/* An initialised arena for m, every value then multiplied by scale (the
 * torch initialisers give tiny gradients on tiny graphs). */
static inline float *fixture_theta(const struct sgbd_model *m, uint64_t seed,
                                   float scale)
{
    float *theta = sgbd_params_alloc_arena(&m->layout);
    struct sgbd_rng r;

    if (!theta)
        return NULL;
    sgbd_rng_init(&r, seed, SGBD_RNG_INIT);
    sgbd_params_init(&m->layout, theta, &r);
    for (size_t k = 0; k < m->layout.n; k++)
        theta[k] *= scale;
    return theta;
}

/*
 * Gradient check of m's whole loss on batch b at theta, step h (0: 5e-2;
 * models with a leaky ReLU want smaller steps, kinks being nearer).
 * Every tensor of the layout is probed: per_tensor random coordinates of
 * each (all of a smaller one), so a small tensor is never left out.
 * res->skipped counts the coordinates too close to a kink to compare;
 * *min_frac (may be NULL) receives the smallest fraction of a tensor's
 * probes that were compared.
 */
static inline int fixture_gradcheck_cover(struct sgbd_model *m, float *theta,
                                          const struct sgbd_batch *b,
                                          size_t per_tensor, double h,
                                          struct gradcheck_result *res,
                                          double *min_frac)
{
    const struct sgbd_params *p = &m->layout;
    struct fixture_loss_ctx c = {m, b, malloc(p->n * sizeof(float))};
    size_t cap = p->n_tensors * per_tensor + 1;
    size_t *coords = malloc(cap * sizeof(size_t));
    unsigned char *ok = malloc(cap);
    struct gradcheck_opts o = {.h = h > 0 ? h : 5e-2, .floor_rel = 1e-2};
    uint64_t s = 5;
    int rc = -1;

    if (!c.scratch || !coords || !ok)
        goto out;
    for (int t = 0; t < p->n_tensors; t++) {
        size_t n = p->t[t].rows * p->t[t].cols;
        for (size_t k = 0; k < per_tensor && k < n; k++)
            coords[o.n_probe++] =
                p->t[t].offset +
                (per_tensor >= n ? k : (size_t)(gradcheck_next(&s) % n));
    }
    o.coords = coords;
    o.checked = ok;
    rc = gradcheck_run(fixture_model_loss, &c, theta, p->n, &o, res);
    if (min_frac)
        *min_frac = 1.0;
    for (int t = 0, k0 = 0; rc == 0 && min_frac && t < p->n_tensors; t++) {
        size_t n = p->t[t].rows * p->t[t].cols, take = 0, good = 0;
        take = n < per_tensor ? n : per_tensor;
        for (size_t k = 0; k < take; k++)
            good += ok[k0 + k];
        k0 += (int)take;
        if ((double)good / (double)take < *min_frac)
            *min_frac = (double)good / (double)take;
    }
out:
    free(ok);
    free(coords);
    free(c.scratch);
    return rc;
}

static inline int fixture_gradcheck_h(struct sgbd_model *m, float *theta,
                                      const struct sgbd_batch *b,
                                      size_t per_tensor, double h,
                                      struct gradcheck_result *res)
{
    return fixture_gradcheck_cover(m, theta, b, per_tensor, h, res, NULL);
}

/*
 * CHECK for a model whose loss has leaky ReLU kinks: worst error within
 * tol over the compared coordinates, and at least a third of each
 * tensor's probes compared.
 */
#define CHECK_MODEL_GRAD(res, min_frac, tol)                                   \
    do {                                                                       \
        CHECK((res).checked > 0);                                              \
        CHECK((min_frac) >= 1.0 / 3.0);                                        \
        CHECK_NEAR((res).worst_rel, 0.0, (tol));                               \
    } while (0)

static inline int fixture_gradcheck(struct sgbd_model *m, float *theta,
                                    const struct sgbd_batch *b, size_t n_probe,
                                    struct gradcheck_result *res)
{
    return fixture_gradcheck_h(m, theta, b, n_probe, 0, res);
}

/*
 * Two models of one layout (the same model in float32 and with
 * bf16_features) at the same theta on batch b: their losses, the cosine
 * of their gradients, and whether the gradients differ at all (the
 * bfloat16 path taken). 0, or -1 when out of memory.
 */
struct fixture_pair {
    double loss_a, loss_b, cosine;
    int differ;
};

static inline int fixture_compare_grads(struct sgbd_model *a,
                                        struct sgbd_model *b,
                                        const float *theta,
                                        const struct sgbd_batch *batch,
                                        struct fixture_pair *out)
{
    size_t n = a->layout.n;
    float *ga = calloc(n, sizeof(float)), *gb = calloc(n, sizeof(float));
    double dot = 0, na = 0, nb = 0;

    if (!ga || !gb || b->layout.n != n) {
        free(ga), free(gb);
        return -1;
    }
    out->loss_a = a->ops->loss_grad(a, theta, ga, batch);
    out->loss_b = b->ops->loss_grad(b, theta, gb, batch);
    for (size_t k = 0; k < n; k++) {
        dot += (double)ga[k] * gb[k];
        na += (double)ga[k] * ga[k], nb += (double)gb[k] * gb[k];
    }
    out->cosine = dot / sqrt(na * nb);
    out->differ = memcmp(ga, gb, n * sizeof(float)) != 0;
    free(ga), free(gb);
    return 0;
}

/* What bfloat16 features must keep: finite losses within 1 % of each
 * other, gradients within cosine 0.999, and not the same bits. */
static inline int fixture_pair_close(const struct fixture_pair *r)
{
    return isfinite(r->loss_a) && isfinite(r->loss_b) &&
           fabs(r->loss_b - r->loss_a) <= 1e-2 * fabs(r->loss_a) &&
           r->cosine > 0.999 && r->differ;
}

/* Builds a model for the bfloat16 check: float32 (bf16 = 0) or with
 * bf16_features, the rest of its hyperparameters fixed by the test. */
typedef int (*fixture_make_fn)(struct sgbd_model **m,
                               const struct sgbd_dataset *ds,
                               const struct sgbd_features *f, int bf16);

/*
 * The bfloat16 check of a model: U users, I items, 30 interactions and
 * the n channels given, made from seed; the model built twice by make;
 * both gradients at one theta on a batch of B rows. fixture_pair_close's
 * verdict (1 or 0), or -1 when a model cannot be built.
 */
static inline int fixture_bf16_close(fixture_make_fn make, uint32_t U,
                                     uint32_t I, int n,
                                     const char *const *names,
                                     const size_t *dims, size_t B,
                                     uint64_t seed)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    struct sgbd_model *m32 = NULL, *m16 = NULL;
    struct fixture_batch fb;
    struct fixture_pair r;
    float *theta = NULL;
    int rc = -1;

    fixture_dataset(&ds, U, I, 30, seed);
    fixture_features(&f, I, n, names, dims, seed + 1);
    fixture_batch(&fb, &ds, B, seed + 2);
    if (make(&m32, &ds, &f, 0) == 0 && make(&m16, &ds, &f, 1) == 0) {
        theta = fixture_theta(m32, seed + 3, 1.0f);
        if (fixture_compare_grads(m32, m16, theta, &fb.b, &r) == 0)
            rc = fixture_pair_close(&r);
    }
    sgbd_params_free_arena(theta);
    if (m16)
        m16->ops->free(m16);
    if (m32)
        m32->ops->free(m32);
    fixture_features_free(&f);
    fixture_dataset_free(&ds);
    return rc;
}

#endif
