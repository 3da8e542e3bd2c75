/*
 * knn_ref.h - a brute-force reference of the item kNN graph of
 * reference/algorithms.md 5.3 for tiny test catalogues (at most 32
 * candidates), written from the formulas.
 */
#ifndef SGBD_TEST_KNN_REF_H
#define SGBD_TEST_KNN_REF_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "sgbd/dataset.h"

static inline double knn_cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;

    for (size_t k = 0; k < n; k++) {
        ab += (double)a[k] * b[k];
        aa += (double)a[k] * a[k];
        bb += (double)b[k] * b[k];
    }
    return ab / (sqrt(aa) * sqrt(bb));
}

/* out[0..k): the k of cand[0..n) most similar to q, ties to the lower
 * index (n <= 32). */
static inline void knn_top(const float *const *cand, size_t n, const float *q,
                           size_t dim, size_t k, int *out)
{
    double s[32];
    int used[32] = {0};

    for (size_t j = 0; j < n; j++)
        s[j] = knn_cosine(cand[j], q, dim);
    for (size_t r = 0; r < k; r++) {
        int best = -1;
        for (size_t j = 0; j < n; j++)
            if (!used[j] && (best < 0 || s[j] > s[best] + 1e-12))
                best = (int)j;
        used[best] = 1;
        out[r] = best;
    }
}

/* Weight of channel c: 0.1 image / 0.9 text for two, 1 for one. */
static inline double knn_channel_weight(const struct sgbd_features *f, int c)
{
    if (f->n == 1)
        return 1.0;
    return strcmp(f->ch[c].name, "image") == 0 ? 0.1 : 0.9;
}

/* Dense G (I, I) of 5.3: sum_c w_c / k over each row's k neighbours. */
static inline void knn_dense(double *G, const struct sgbd_features *f, size_t I,
                             size_t k)
{
    const float *cand[32];
    int nb[32];

    memset(G, 0, I * I * sizeof(double));
    for (int c = 0; c < f->n; c++) {
        double w = knn_channel_weight(f, c);
        for (size_t j = 0; j < I; j++)
            cand[j] = sgbd_mat_row(f->ch[c].m, j);
        for (size_t i = 0; i < I; i++) {
            knn_top(cand, I, cand[i], f->ch[c].m.cols, k, nb);
            for (size_t r = 0; r < k; r++)
                G[i * I + nb[r]] += w / (double)k;
        }
    }
}

#endif
