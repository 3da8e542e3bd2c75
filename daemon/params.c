/*
 * params.c - the layout of named tensors inside one float arena, and the
 * torch initialisers (reference/algorithms.md 5.6).
 */
#include "sgbd/params.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"

/* 64 bytes = 16 floats: every tensor and the arena end on this boundary. */
#define ALIGN_FLOATS 16
#define ALIGN_BYTES (ALIGN_FLOATS * sizeof(float))

static size_t round_up(size_t n)
{
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

static int check_new_tensor(const struct sgbd_params *p, const char *name,
                            size_t rows, size_t cols)
{
    size_t len = name ? strlen(name) : 0;

    if (len == 0 || len >= SGBD_TENSOR_NAME)
        return sgbd_errf(SGBD_E_LIMIT, "params: tensor name \"%s\": "
                         "length %zu not in 1..%d", name ? name : "", len,
                         SGBD_TENSOR_NAME - 1);
    if (sgbd_params_find(p, name) >= 0)
        return sgbd_errf(SGBD_E_EXISTS, "params: tensor \"%s\" declared "
                         "twice", name);
    if (p->n_tensors >= SGBD_MAX_TENSORS)
        return sgbd_errf(SGBD_E_LIMIT, "params: tensor \"%s\": layout full "
                         "(%d tensors)", name, SGBD_MAX_TENSORS);
    if (rows == 0 || cols == 0)
        return sgbd_errf(SGBD_E_SHAPE, "params: tensor \"%s\": empty shape "
                         "(%zu, %zu)", name, rows, cols);
    if (rows > (SIZE_MAX / 8 - p->n) / cols)
        return sgbd_errf(SGBD_E_LIMIT, "params: tensor \"%s\": shape "
                         "(%zu, %zu) overflows the arena", name, rows, cols);
    return 0;
}

int sgbd_params_add(struct sgbd_params *p, const char *name, size_t rows,
                    size_t cols, enum sgbd_init init, size_t fan_in,
                    size_t fan_out)
{
    int rc = check_new_tensor(p, name, rows, cols);
    struct sgbd_tensor *t;

    if (rc < 0)
        return rc;

    t = &p->t[p->n_tensors];
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, strlen(name) + 1);
    t->offset = p->n; /* p->n is kept a multiple of ALIGN_FLOATS */
    t->rows = rows;
    t->cols = cols;
    t->init = init;
    t->fan_in = fan_in ? fan_in : cols;
    t->fan_out = fan_out ? fan_out : rows;
    p->n = round_up(t->offset + rows * cols);
    return p->n_tensors++;
}

int sgbd_params_find(const struct sgbd_params *p, const char *name)
{
    for (int i = 0; i < p->n_tensors; i++)
        if (strcmp(p->t[i].name, name) == 0)
            return i;
    return SGBD_E_NOTFOUND;
}

float *sgbd_params_alloc_arena(const struct sgbd_params *p)
{
    /* aligned_alloc needs a size that is a multiple of the alignment;
     * p->n is, and an empty layout still gets one aligned block. */
    size_t n = p->n ? p->n : ALIGN_FLOATS;
    float *a = aligned_alloc(ALIGN_BYTES, n * sizeof(float));

    if (a)
        memset(a, 0, n * sizeof(float));
    return a;
}

void sgbd_params_free_arena(float *arena)
{
    free(arena);
}

static void fill_uniform(float *x, size_t n, double bound,
                         struct sgbd_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(bound * (2.0 * sgbd_rng_uniform(rng) - 1.0));
}

static void fill_normal(float *x, size_t n, double std, struct sgbd_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(std * sgbd_rng_normal(rng));
}

/* Tensors are filled in declaration order, elements in row-major order,
 * so a layout and a seed fix every value. */
void sgbd_params_init(const struct sgbd_params *p, float *arena,
                      struct sgbd_rng *rng)
{
    for (int i = 0; i < p->n_tensors; i++) {
        const struct sgbd_tensor *t = &p->t[i];
        float *x = arena + t->offset;
        size_t n = t->rows * t->cols;
        double fans = (double)t->fan_in + (double)t->fan_out;

        switch (t->init) {
        case SGBD_INIT_ZERO:
            memset(x, 0, n * sizeof(float));
            break;
        case SGBD_INIT_XAVIER_UNIFORM:
            fill_uniform(x, n, sqrt(6.0 / fans), rng);
            break;
        case SGBD_INIT_XAVIER_NORMAL:
            fill_normal(x, n, sqrt(2.0 / fans), rng);
            break;
        case SGBD_INIT_LINEAR:
            fill_uniform(x, n, 1.0 / sqrt((double)t->fan_in), rng);
            break;
        }
    }
}

struct sgbd_mat sgbd_params_view(const struct sgbd_params *p, float *arena,
                                 int idx)
{
    const struct sgbd_tensor *t = &p->t[idx];

    return sgbd_mat_view(arena + t->offset, t->rows, t->cols);
}
