/*
 * common.h - small plumbing the model files share (private to
 * daemon/models/): batch validation, feature channel order and copies,
 * the unique items of a batch.
 */
#ifndef SGBD_MODELS_COMMON_H
#define SGBD_MODELS_COMMON_H

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/model.h"
#include "sgbd/params.h"

/* Every triple of b inside (U, I); SGBD_E_SHAPE naming the row if not. */
/* A failed step of loss_grad: keep why (rc < 0) for the caller, see
 * model.h; the NaN tells the optimiser to stop the step. */
static inline double mdl_fail(struct sgbd_model *m, int rc)
{
    m->error = rc < 0 ? rc : -EINVAL;
    return NAN;
}

static inline int mdl_check_batch(const char *model, const struct sgbd_model *m,
                                  const struct sgbd_batch *b)
{
    for (size_t k = 0; k < b->n; k++)
        if (b->users[k] >= m->n_users || b->pos[k] >= m->n_items ||
            b->neg[k] >= m->n_items)
            return sgbd_errf(SGBD_E_SHAPE,
                             "%s: batch row %zu (%u, %u, %u) "
                             "out of range (%u users, %u items)",
                             model, k, b->users[k], b->pos[k], b->neg[k],
                             m->n_users, m->n_items);
    return 0;
}

/*
 * Declare tensor "<ch><sep><suffix>" (a feature channel's tensor);
 * SGBD_E_LIMIT naming the channel when the name does not fit, else as
 * sgbd_params_add. fan_out is torch's default.
 */
static inline int mdl_add_tensor(struct sgbd_params *p, const char *ch,
                                 const char *sep, const char *suffix,
                                 size_t rows, size_t cols, enum sgbd_init init,
                                 size_t fan_in)
{
    char name[SGBD_TENSOR_NAME + 16];
    int n = snprintf(name, sizeof(name), "%s%s%s", ch, sep, suffix);

    if (n < 0 || (size_t)n >= SGBD_TENSOR_NAME)
        return sgbd_errf(SGBD_E_LIMIT,
                         "feature channel name \"%s\" too long for tensor "
                         "\"%s%s%s\" (%d bytes at most)",
                         ch, ch, sep, suffix, SGBD_TENSOR_NAME - 1);
    return sgbd_params_add(p, name, rows, cols, init, fan_in, 0);
}

/* Dataset, hyper-parameters and embedding size are present and sane. */
static inline int mdl_check_input(const char *model,
                                  const struct sgbd_model_input *in)
{
    const struct sgbd_dataset *ds = in->ds;

    if (!ds || !in->hp)
        return sgbd_errf(SGBD_E_CONFIG, "%s: no dataset or hyper-parameters",
                         model);
    if (ds->n_users == 0 || ds->n_items == 0 || ds->n_train == 0)
        return sgbd_errf(SGBD_E_FORMAT,
                         "%s: empty dataset (%u users, %u "
                         "items, %zu training rows)",
                         model, ds->n_users, ds->n_items, ds->n_train);
    if (in->hp->embedding_size <= 0)
        return sgbd_errf(SGBD_E_CONFIG, "%s: embedding_size %d must be > 0",
                         model, in->hp->embedding_size);
    return 0;
}

/* At least one channel, each (I, D_c) with D_c > 0. */
static inline int mdl_check_features(const char *model,
                                     const struct sgbd_model_input *in)
{
    const struct sgbd_features *f = in->feat;

    if (!f || f->n <= 0)
        return sgbd_errf(SGBD_E_CONFIG,
                         "%s: needs at least one feature "
                         "channel, got none",
                         model);
    if (f->n > SGBD_MAX_CHANNELS)
        return sgbd_errf(SGBD_E_LIMIT, "%s: %d feature channels, at most %d",
                         model, f->n, SGBD_MAX_CHANNELS);
    for (int c = 0; c < f->n; c++)
        if (f->ch[c].m.rows != in->ds->n_items || f->ch[c].m.cols == 0 ||
            !f->ch[c].m.data)
            return sgbd_errf(SGBD_E_SHAPE,
                             "%s: feature channel \"%s\" is "
                             "(%zu, %zu), expected (%u, D > 0)",
                             model, f->ch[c].name, f->ch[c].m.rows,
                             f->ch[c].m.cols, in->ds->n_items);
    return 0;
}

/*
 * MMRec's order of channels for concatenation: channels named "text"
 * first, then the others in the dataset's order. order[k] is the dataset
 * index of the k-th channel.
 */
static inline void mdl_text_first(const struct sgbd_features *f, int *order)
{
    int k = 0;

    for (int c = 0; c < f->n; c++)
        if (strcmp(f->ch[c].name, "text") == 0)
            order[k++] = c;
    for (int c = 0; c < f->n; c++)
        if (strcmp(f->ch[c].name, "text") != 0)
            order[k++] = c;
}

/* Copy of a channel's (rows, cols) into a contiguous owned buffer. */
static inline float *mdl_copy_mat(struct sgbd_mat m)
{
    float *out = malloc(m.rows * m.cols * sizeof(float) + 1);

    if (!out)
        return NULL;
    for (size_t r = 0; r < m.rows; r++)
        memcpy(out + r * m.cols, sgbd_mat_row(m, r), m.cols * sizeof(float));
    return out;
}

/* Column means (cols) of m, accumulated in double. */
static inline void mdl_col_means(struct sgbd_mat m, float *out)
{
    double *acc = calloc(m.cols, sizeof(double));

    for (size_t r = 0; acc && r < m.rows; r++) {
        const float *row = sgbd_mat_row(m, r);
        for (size_t c = 0; c < m.cols; c++)
            acc[c] += row[c];
    }
    for (size_t c = 0; c < m.cols; c++)
        out[c] = acc && m.rows ? (float)(acc[c] / (double)m.rows) : 0.0f;
    free(acc);
}

/*
 * The distinct items of a batch's positives and negatives, in order of
 * first appearance (p_0, n_0, p_1, n_1, ...): uniq[0..*n_uniq); slot_p[k]
 * and slot_n[k] index uniq. slot_of (I) must hold -1 everywhere on entry
 * and is left so.
 */
static inline void mdl_unique_items(const struct sgbd_batch *b,
                                    int32_t *slot_of, uint32_t *uniq,
                                    size_t *n_uniq, uint32_t *slot_p,
                                    uint32_t *slot_n)
{
    size_t n = 0;

    for (size_t k = 0; k < b->n; k++) {
        uint32_t it[2] = {b->pos[k], b->neg[k]};
        uint32_t *dst[2] = {slot_p + k, slot_n + k};
        for (int j = 0; j < 2; j++) {
            if (slot_of[it[j]] < 0) {
                slot_of[it[j]] = (int32_t)n;
                uniq[n++] = it[j];
            }
            *dst[j] = (uint32_t)slot_of[it[j]];
        }
    }
    for (size_t k = 0; k < n; k++)
        slot_of[uniq[k]] = -1;
    *n_uniq = n;
}

/* Mean over the items seen in training of rows of x (*, D). */
static inline void mdl_mean_rows(const float *x, size_t D, const uint32_t *rows,
                                 size_t n, float *out)
{
    for (size_t c = 0; c < D; c++) {
        double s = 0.0;
        for (size_t k = 0; k < n; k++)
            s += x[(size_t)rows[k] * D + c];
        out[c] = n ? (float)(s / (double)n) : 0.0f;
    }
}

/*
 * Channel weights of the combined item kNN graph (5.3): one channel gets
 * 1; otherwise a channel named "image" gets mm_image_weight and the
 * others share 1 - mm_image_weight equally (0.1 image + 0.9 text); with
 * no "image" channel every channel gets 1/C.
 */
static inline void mdl_knn_weights(const struct sgbd_features *f,
                                   double image_weight, double *w)
{
    int n_img = 0;

    for (int c = 0; c < f->n; c++)
        n_img += strcmp(f->ch[c].name, "image") == 0;
    for (int c = 0; c < f->n; c++) {
        int img = strcmp(f->ch[c].name, "image") == 0;
        if (f->n == 1 || n_img == 0 || n_img == f->n)
            w[c] = 1.0 / f->n;
        else
            w[c] = img ? image_weight / n_img
                       : (1.0 - image_weight) / (f->n - n_img);
    }
}

/* Row norms (rows) of m, clamped below at 1e-12 as 5.3 guards them. */
static inline void mdl_row_norms(const float *m, size_t rows, size_t D,
                                 float *out)
{
    for (size_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (size_t c = 0; c < D; c++)
            s += (double)m[r * D + c] * m[r * D + c];
        s = sqrt(s);
        out[r] = (float)(s > 1e-12 ? s : 1e-12);
    }
}

/*
 * The kNN row of a new item (5.3): the k rows of feat (I, D) most
 * cosine-similar to q, where q itself is a candidate of index I with
 * similarity 1 (an existing item is always in its own list); ties go to
 * the lower index. norms from mdl_row_norms. out (k); returns how many
 * were found (min(k, I + 1)).
 */
static inline size_t mdl_knn_query(const float *feat, const float *norms,
                                   size_t I, size_t D, const float *q, size_t k,
                                   uint32_t *out, float *sim)
{
    double qn = 0.0;
    size_t n = 0;

    for (size_t c = 0; c < D; c++)
        qn += (double)q[c] * q[c];
    qn = sqrt(qn) > 1e-12 ? sqrt(qn) : 1e-12;
    for (size_t r = 0; r <= I; r++) {
        float v = 1.0f;
        if (r < I) {
            double dot = 0.0;
            for (size_t c = 0; c < D; c++)
                dot += (double)feat[r * D + c] * q[c];
            v = (float)(dot / ((double)norms[r] * qn));
        }
        if (n == k && !(v > sim[k - 1]))
            continue; /* strictly better only: lower index wins ties */
        size_t j = n < k ? n++ : k - 1;
        while (j > 0 && v > sim[j - 1]) {
            sim[j] = sim[j - 1], out[j] = out[j - 1];
            j--;
        }
        sim[j] = v, out[j] = (uint32_t)r;
    }
    return n;
}

#endif
