/*
 * mmgcn_ref.h - a dense double-precision reference of the DualGNN/DRAGON
 * GCN block (reference/algorithms.md 5.2, 6.2), written from the formulas
 * and independent of daemon/models/mmgcn.c, for small test graphs.
 */
#ifndef SGBD_TEST_MMGCN_REF_H
#define SGBD_TEST_MMGCN_REF_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/dataset.h"
#include "sgbd/model.h"
#include "sgbd/params.h"

static inline const float *ref_tensor(const struct sgbd_model *m,
                                      const float *theta, const char *ch,
                                      const char *suffix)
{
    char name[64];
    snprintf(name, sizeof(name), "%s%s%s", ch, ch[0] ? "." : "", suffix);
    int t = sgbd_params_find(&m->layout, name);
    return t < 0 ? NULL : theta + m->layout.t[t].offset;
}

/* A (N, N) of 5.2, duplicates counted. */
static inline void ref_gcn_adjacency(double *a, const struct sgbd_dataset *ds)
{
    size_t U = ds->n_users, N = U + ds->n_items;
    double *deg = calloc(N, sizeof(double));

    memset(a, 0, N * N * sizeof(double));
    for (size_t k = 0; k < ds->n_train; k++) {
        size_t u = ds->train_users[k], i = U + ds->train_items[k];
        a[u * N + i] += 1.0;
        a[i * N + u] += 1.0;
    }
    for (size_t r = 0; r < N; r++)
        for (size_t c = 0; c < N; c++)
            deg[r] += a[r * N + c];
    for (size_t r = 0; r < N; r++)
        for (size_t c = 0; c < N; c++)
            if (a[r * N + c] != 0.0)
                a[r * N + c] /= sqrt(deg[r] * deg[c]);
    free(deg);
}

/* x (D) = rownorm(W2 leaky(W1 f + b1) + b2), H = 4 D. */
static inline void ref_mlp_row(double *x, const struct sgbd_model *m,
                               const float *theta, const char *ch,
                               const float *f, size_t dim, size_t D)
{
    const float *w1 = ref_tensor(m, theta, ch, "mlp.w");
    const float *b1 = ref_tensor(m, theta, ch, "mlp.b");
    const float *w2 = ref_tensor(m, theta, ch, "mlp1.w");
    const float *b2 = ref_tensor(m, theta, ch, "mlp1.b");
    size_t H = 4 * D;
    double *h = malloc(H * sizeof(double)), n = 0;

    for (size_t j = 0; j < H; j++) {
        double s = b1[j];
        for (size_t k = 0; k < dim; k++)
            s += (double)w1[j * dim + k] * f[k];
        h[j] = s > 0 ? s : 0.01 * s;
    }
    for (size_t d = 0; d < D; d++) {
        double s = b2[d];
        for (size_t j = 0; j < H; j++)
            s += (double)w2[d * H + j] * h[j];
        x[d] = s;
        n += s * s;
    }
    n = sqrt(n) > 1e-12 ? sqrt(n) : 1e-12;
    for (size_t d = 0; d < D; d++)
        x[d] /= n;
    free(h);
}

/* R (N, D) = X + A X + A^2 X for channel c, X = rownorm([P ; MLP(F)]). */
static inline void ref_gcn_channel(double *R, const struct sgbd_model *m,
                                   const float *theta,
                                   const struct sgbd_dataset *ds,
                                   const struct sgbd_channel *ch, size_t D)
{
    size_t U = ds->n_users, N = U + ds->n_items;
    const float *pref = ref_tensor(m, theta, ch->name, "pref");
    double *a = malloc(N * N * sizeof(double));
    double *x = malloc(N * D * sizeof(double));
    double *y = malloc(N * D * sizeof(double));

    ref_gcn_adjacency(a, ds);
    for (size_t u = 0; u < U; u++) {
        double n = 0;
        for (size_t d = 0; d < D; d++)
            n += (double)pref[u * D + d] * pref[u * D + d];
        n = sqrt(n);
        for (size_t d = 0; d < D; d++)
            x[u * D + d] = pref[u * D + d] / n;
    }
    for (size_t i = 0; i < ds->n_items; i++)
        ref_mlp_row(x + (U + i) * D, m, theta, ch->name, sgbd_mat_row(ch->m, i),
                    ch->m.cols, D);
    memcpy(R, x, N * D * sizeof(double));
    for (int hop = 0; hop < 2; hop++) {
        for (size_t r = 0; r < N; r++)
            for (size_t d = 0; d < D; d++) {
                double s = 0;
                for (size_t c = 0; c < N; c++)
                    s += a[r * N + c] * x[c * D + d];
                y[r * D + d] = s;
            }
        memcpy(x, y, N * D * sizeof(double));
        for (size_t e = 0; e < N * D; e++)
            R[e] += x[e];
    }
    free(y), free(x), free(a);
}

#endif
