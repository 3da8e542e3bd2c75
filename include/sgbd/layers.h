/*
 * layers.h - the layer kernels the models share, as forward/backward
 * pairs over plain row-major float buffers.
 *
 * Conventions, the same for every kernel here:
 *   - argument order: outputs, inputs, weights, then shapes;
 *   - every tensor is dense row-major with its shape in the comment;
 *   - a forward writes (overwrites) its output;
 *   - a backward ADDS into each of its gradient outputs (dx, dw, db), so a
 *     tensor used in two places accumulates both contributions and a
 *     gradient pointer may point straight into the gradient arena; a NULL
 *     gradient output is skipped (e.g. dx of a frozen feature matrix);
 *   - a fused loss kernel returns the loss and adds scale * dL/dinput;
 *   - nothing allocates; shapes are the caller's contract (only the
 *     sgemm-based linear layer returns an int: SGBD_E_SHAPE from mat.h);
 *   - BPR and EmbLoss kernels live in bpr.h, dense vector helpers in mat.h.
 * Kernels are deterministic: the result never depends on the thread count.
 * The leaky ReLU and row-normalisation kernels run large inputs (64 Ki
 * floats and more) on the compute pool (parallel.h), small ones inline.
 * Formulas and section numbers refer to reference/algorithms.md.
 */
#ifndef SGBD_LAYERS_H
#define SGBD_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#define SGBD_LEAKY_SLOPE 0.01f  /* torch leaky_relu default (5.6) */
#define SGBD_NORM_EPS    1e-12f /* torch F.normalize eps (5.6) */

/*
 * Linear layer, torch layout (5.6): y (B, O) = x (B, In) W^T + b, with
 * W (O, In) row-major and b (O) or NULL for no bias. Uses sgemm, so
 * not from serving threads nor inside a parallel chunk (mat.h); y must
 * not overlap x or W. Returns 0 or SGBD_E_SHAPE.
 */
int sgbd_layer_linear_forward(float *y, const float *x, const float *w,
                              const float *b, size_t B, size_t in, size_t out);

/*
 * Backward of the linear layer: dx (B, In) += dy W, dw (O, In) += dy^T x,
 * db (O) += column sums of dy. dx, dw or db may be NULL. Returns 0 or
 * SGBD_E_SHAPE.
 */
int sgbd_layer_linear_backward(float *dx, float *dw, float *db, const float *dy,
                               const float *x, const float *w, size_t B,
                               size_t in, size_t out);

struct sgbd_bf16_fixed;

/*
 * The linear layer over a fixed input x (B, In), the item features: as
 * sgbd_layer_linear_forward, multiplied in bfloat16 when xb (x rounded
 * once, bf16.h) is not NULL. The bfloat16 product grows xb's scratch on
 * first use: returns 0, SGBD_E_SHAPE or -ENOMEM.
 */
int sgbd_layer_fixed_linear_forward(float *y, const float *x,
                                    struct sgbd_bf16_fixed *xb,
                                    const float *w, const float *b, size_t B,
                                    size_t in, size_t out);

/* Its backward, with no dx: dw (O, In) += dy^T x, db (O) += column sums
 * of dy; in bfloat16 when xb is not NULL. */
int sgbd_layer_fixed_linear_backward(float *dw, float *db, const float *dy,
                                     const float *x,
                                     struct sgbd_bf16_fixed *xb, size_t B,
                                     size_t in, size_t out);

/* Leaky ReLU, slope SGBD_LEAKY_SLOPE, over n values; y may equal x. */
void sgbd_layer_leaky_forward(float *y, const float *x, size_t n);

/*
 * dx += dy * (y > 0 ? 1 : slope), from the forward's OUTPUT y (its sign
 * is the input's sign), so the input buffer may be overwritten in place.
 */
void sgbd_layer_leaky_backward(float *dx, const float *dy, const float *y,
                               size_t n);

/* In-place form for a chain: d *= (y > 0 ? 1 : slope), d (n) turning from
 * dL/dy into dL/dx. */
void sgbd_layer_leaky_backward_inplace(float *d, const float *y, size_t n);

/*
 * Row L2 normalisation (torch F.normalize): y[r] = x[r] / max(||x[r]||,
 * SGBD_NORM_EPS). x, y (rows, D); y may equal x. norm (rows) receives the
 * raw norms ||x[r]|| for the backward.
 */
void sgbd_layer_rownorm_forward(float *y, float *norm, const float *x,
                                size_t rows, size_t D);

/*
 * Backward of rownorm (5.7): dx[r] += (dy[r] - y[r] <y[r], dy[r]>) /
 * ||x[r]||; for a row whose norm was clamped to eps the map is linear and
 * dx[r] += dy[r] / eps. y and norm are the forward's outputs.
 */
void sgbd_layer_rownorm_backward(float *dx, const float *dy, const float *y,
                                 const float *norm, size_t rows, size_t D);

/* out (n, D) = rows idx[0..n) of x (*, D). */
void sgbd_layer_gather_rows(float *out, const float *x, const uint32_t *idx,
                            size_t n, size_t D);

/* Backward of gather (5.7): dx[idx[b]] += dout[b]; duplicates accumulate,
 * in index order. dout (n, D), dx (*, D). */
void sgbd_layer_scatter_add_rows(float *dx, const float *dout,
                                 const uint32_t *idx, size_t n, size_t D);

/*
 * BPR score differences: x[b] = <u[b], p[b]> - <u[b], q[b]>, where u, p, q
 * (B, D) are the gathered user, positive and negative rows.
 */
void sgbd_layer_bpr_diff_forward(float *x, const float *u, const float *p,
                                 const float *q, size_t B, size_t D);

/*
 * Backward: du[b] += dx[b] (p[b] - q[b]), dp[b] += dx[b] u[b],
 * dq[b] -= dx[b] u[b]. Any gradient output may be NULL.
 */
void sgbd_layer_bpr_diff_backward(float *du, float *dp, float *dq,
                                  const float *dx, const float *u,
                                  const float *p, const float *q, size_t B,
                                  size_t D);

/*
 * Softmax cross-entropy with diagonal labels (InfoNCE), mean over rows:
 * L = (1/B) sum_b [logsumexp_c logits[b, c] - logits[b, b]], logits
 * (B, B). Adds scale * dL/dlogits = scale * (softmax(logits) - I) / B
 * (5.7) into dlogits (may be NULL), returns L (not scaled). Stable for
 * large logits (max subtracted); sums in double. Rows run on the compute
 * pool, in fixed blocks summed in order: the same bits on any thread
 * count. Not from inside a parallel chunk.
 */
double sgbd_layer_infonce(float *dlogits, const float *logits, size_t B,
                          double scale);

/*
 * InfoNCE between two row sets (SLMRec's main and FAC losses, 6.4):
 * logits = a b^T / tau (n, n), L = sgbd_layer_infonce(logits); adds
 * scale dL/da into da and scale dL/db into db (either may be NULL).
 * a, b, da, db (n, w); ws (2 n^2) floats of workspace. Two sgemms
 * forward, two backward. Returns L (not scaled), or NaN when a product
 * fails (mat.h shape errors).
 */
double sgbd_layer_infonce_pair(float *da, float *db, const float *a,
                               const float *b, float *ws, size_t n, size_t w,
                               double tau, double scale);

/*
 * Row-wise softmax of k values per row (5.4 neighbour weights): a[r, s] =
 * exp(c[r, s] - max) / sum. a, c (rows, k); a may equal c. A row of all
 * zeros stays uniform; callers that want a zero row zero it afterwards.
 */
void sgbd_layer_softmax_rows(float *a, const float *c, size_t rows, size_t k);

#endif
