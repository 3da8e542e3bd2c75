/*
 * params.h - one float arena of named tensors.
 *
 * A model declares its tensors once (name, shape, initialiser) in a
 * struct sgbd_params layout; parameters, gradients and optimiser moments
 * are then separate arenas of layout.n floats with the same layout, so the
 * optimisers work on flat buffers and never know the model. Each tensor
 * starts on a 64-byte boundary. A checkpoint is one arena plus the layout.
 */
#ifndef SGBD_PARAMS_H
#define SGBD_PARAMS_H

#include <stddef.h>

#include "sgbd/mat.h"
#include "sgbd/rng.h"

#define SGBD_MAX_TENSORS 64
#define SGBD_TENSOR_NAME 32

enum sgbd_init {
    SGBD_INIT_ZERO,
    SGBD_INIT_XAVIER_UNIFORM, /* U(-s, s), s = sqrt(6 / (fan_in + fan_out)) */
    SGBD_INIT_XAVIER_NORMAL,  /* N(0, 2 / (fan_in + fan_out)) */
    SGBD_INIT_LINEAR,         /* torch nn.Linear: U(-1/sqrt(fan_in), ..) */
};

struct sgbd_tensor {
    char name[SGBD_TENSOR_NAME];
    size_t offset;            /* in floats from the arena start */
    size_t rows, cols;        /* row-major (rows, cols) */
    enum sgbd_init init;
    size_t fan_in, fan_out;   /* for the initialiser; torch conventions */
};

struct sgbd_params {
    int n_tensors;
    struct sgbd_tensor t[SGBD_MAX_TENSORS];
    size_t n;                 /* arena length in floats, padding included */
};

/*
 * Append a tensor of shape (rows, cols) at the next 64-byte boundary.
 * fan_in/fan_out of 0 take torch's defaults for a 2-D weight of that
 * shape (fan_in = cols, fan_out = rows); a bias of nn.Linear passes the
 * weight's fan_in. Start from a zeroed struct sgbd_params.
 * Returns the tensor index, or SGBD_E_LIMIT when the layout is full, the
 * name is empty or longer than SGBD_TENSOR_NAME - 1, or the arena would
 * overflow; SGBD_E_EXISTS for a duplicate name; SGBD_E_SHAPE when rows or
 * cols is 0. On error the layout is unchanged.
 */
int sgbd_params_add(struct sgbd_params *p, const char *name, size_t rows,
                    size_t cols, enum sgbd_init init, size_t fan_in,
                    size_t fan_out);

/* Index of the tensor called name, or SGBD_E_NOTFOUND. */
int sgbd_params_find(const struct sgbd_params *p, const char *name);

/* A zeroed, 64-byte aligned arena of p->n floats; NULL on ENOMEM.
 * Free with sgbd_params_free_arena(). */
float *sgbd_params_alloc_arena(const struct sgbd_params *p);
void sgbd_params_free_arena(float *arena);

/*
 * Fill every tensor of arena with its initialiser, drawing from rng:
 * tensors in declaration order, elements row-major, so (layout, seed)
 * fixes every value. Padding between tensors is left as it is.
 */
void sgbd_params_init(const struct sgbd_params *p, float *arena,
                      struct sgbd_rng *rng);

/* The (rows, cols) view of tensor idx inside arena. */
struct sgbd_mat sgbd_params_view(const struct sgbd_params *p, float *arena,
                                 int idx);

#endif
