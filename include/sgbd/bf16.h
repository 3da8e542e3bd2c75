/*
 * bf16.h - products with a fixed matrix in bfloat16 (AVX512-BF16).
 *
 * The multimodal models project the item features X (I, F), which never
 * change during training, through a weight W (H, F) that changes every
 * step: forward Y = X W^T, backward dW += dY^T X. On a CPU with
 * AVX512-BF16 one VDPBF16PS does 32 multiply-adds where an FMA does 16,
 * so both products run at about twice the speed of float32 SGEMM.
 *
 * X is rounded to bfloat16 once, in the two layouts the products read;
 * W and dY are rounded at every call. Products of bfloat16 values are
 * exact in float32 and summed in float32, so the only loss is the
 * rounding of the inputs (relative 2^-9 each): a training-time
 * approximation, as mixed-precision training is on accelerators.
 * VDPBF16PS flushes denormal inputs and outputs to zero.
 *
 * The products run on the compute pool (parallel.h), one block of output
 * rows per chunk, each summed in a fixed order: the bits do not depend on
 * the number of threads. A struct sgbd_bf16_fixed holds scratch space for
 * the rounded right-hand factor, so one may be used by one thread at a
 * time.
 */
#ifndef SGBD_BF16_H
#define SGBD_BF16_H

#include <stddef.h>
#include <stdint.h>

struct sgbd_bf16_fixed {
    size_t rows, cols;
    size_t pairs_c;    /* ceil(cols / 2) */
    size_t pairs_r;    /* ceil(rows / 2) */
    uint32_t *by_row;  /* (rows8, pairs_c): X[r][2p], X[r][2p+1] */
    uint32_t *by_col;  /* (cols8, pairs_r): X[2q][c], X[2q+1][c] */
    uint32_t *pack;    /* scratch: the rounded right-hand factor */
    size_t pack_cap;   /* in pairs */
    float *tmp;        /* scratch: (cols, n) X^T dY before dW */
    size_t tmp_cap;    /* in floats */
    uint32_t *left;    /* scratch: dY^T in pairs, gathered products */
    size_t left_cap;   /* in pairs */
};

/* Whether this CPU runs the products (AVX512-BF16 and AVX512-BW). */
int sgbd_bf16_supported(void);

/*
 * x = X (rows, cols) rounded to bfloat16 (nearest, ties to even). 0,
 * SGBD_E_UNSUPPORTED when sgbd_bf16_supported() is false, -ENOMEM, or
 * SGBD_E_SHAPE for an empty matrix; x is zeroed on failure.
 */
int sgbd_bf16_fixed_init(struct sgbd_bf16_fixed *x, const float *data,
                         size_t rows, size_t cols);

/*
 * The same with the by_row layout only, half the memory: enough for the
 * products over gathered rows below and for sgbd_bf16_gemm_nt, not for
 * sgbd_bf16_gemm_tn (SGBD_E_UNSUPPORTED).
 */
int sgbd_bf16_fixed_init_rows(struct sgbd_bf16_fixed *x, const float *data,
                              size_t rows, size_t cols);

/* Free x and zero it; a zeroed struct is fine. */
void sgbd_bf16_fixed_deinit(struct sgbd_bf16_fixed *x);

/* Y (rows, n) += X W^T, W (n, cols). 0 or -ENOMEM (Y untouched). */
int sgbd_bf16_gemm_nt(float *y, const float *w, size_t n,
                      struct sgbd_bf16_fixed *x);

/* dW (n, cols) += dY^T X, dY (rows, n). 0 or -ENOMEM (dW untouched). */
int sgbd_bf16_gemm_tn(float *dw, const float *dy, size_t n,
                      struct sgbd_bf16_fixed *x);

/*
 * The same two products over the rows idx[0 .. m) of X, in that order
 * (a batch's distinct items; rows may repeat):
 *   Y (m, n) += X[idx] W^T,  dW (n, cols) += dY^T X[idx], dY (m, n).
 * 0, -ENOMEM or SGBD_E_SHAPE for an index past X (output untouched).
 */
int sgbd_bf16_gemm_nt_rows(float *y, const float *w, size_t n,
                           const uint32_t *idx, size_t m,
                           struct sgbd_bf16_fixed *x);
int sgbd_bf16_gemm_tn_rows(float *dw, const float *dy, size_t n,
                           const uint32_t *idx, size_t m,
                           struct sgbd_bf16_fixed *x);

#endif
