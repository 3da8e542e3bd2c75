/* layers.c - shared forward/backward layer kernels (see layers.h). */
#include "sgbd/layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sgbd/bf16.h"
#include "sgbd/err.h"
#include "sgbd/mat.h"
#include "sgbd/parallel.h"
#include "simd.h"

int sgbd_layer_linear_forward(float *y, const float *x, const float *w,
                              const float *b, size_t B, size_t in, size_t out)
{
    struct sgbd_mat ym = sgbd_mat_view(y, B, out);
    struct sgbd_mat xm = sgbd_mat_view((float *)x, B, in);
    struct sgbd_mat wm = sgbd_mat_view((float *)w, out, in);

    if (b) {
        for (size_t r = 0; r < B; r++)
            memcpy(y + r * out, b, out * sizeof(float));
    }
    return sgbd_mat_gemm_nt(ym, xm, wm, 1.0f, b ? 1.0f : 0.0f);
}

int sgbd_layer_linear_backward(float *dx, float *dw, float *db, const float *dy,
                               const float *x, const float *w, size_t B,
                               size_t in, size_t out)
{
    struct sgbd_mat dym = sgbd_mat_view((float *)dy, B, out);
    int rc = 0;

    if (dx)
        rc = sgbd_mat_gemm_nn(sgbd_mat_view(dx, B, in), dym,
                              sgbd_mat_view((float *)w, out, in), 1.0f, 1.0f);
    if (dw && rc == 0)
        rc = sgbd_mat_gemm_tn(sgbd_mat_view(dw, out, in), dym,
                              sgbd_mat_view((float *)x, B, in), 1.0f, 1.0f);
    if (db && rc == 0) {
        for (size_t r = 0; r < B; r++)
            sgbd_mat_axpy(out, 1.0f, dy + r * out, db);
    }
    return rc;
}

static int fixed_shape(const struct sgbd_bf16_fixed *xb, size_t B, size_t in)
{
    if (xb->rows == B && xb->cols == in)
        return 0;
    return sgbd_errf(SGBD_E_SHAPE, "linear: bfloat16 input (%zu, %zu), "
                     "expected (%zu, %zu)", xb->rows, xb->cols, B, in);
}

int sgbd_layer_fixed_linear_forward(float *y, const float *x,
                                    struct sgbd_bf16_fixed *xb,
                                    const float *w, const float *b, size_t B,
                                    size_t in, size_t out)
{
    if (!xb)
        return sgbd_layer_linear_forward(y, x, w, b, B, in, out);
    if (fixed_shape(xb, B, in) < 0)
        return SGBD_E_SHAPE;
    for (size_t r = 0; r < B; r++) {
        if (b)
            memcpy(y + r * out, b, out * sizeof(float));
        else
            memset(y + r * out, 0, out * sizeof(float));
    }
    return sgbd_bf16_gemm_nt(y, w, out, xb);
}

int sgbd_layer_fixed_linear_backward(float *dw, float *db, const float *dy,
                                     const float *x,
                                     struct sgbd_bf16_fixed *xb, size_t B,
                                     size_t in, size_t out)
{
    int rc;

    if (!xb)
        return sgbd_layer_linear_backward(NULL, dw, db, dy, x, NULL, B, in,
                                          out);
    if (fixed_shape(xb, B, in) < 0)
        return SGBD_E_SHAPE;
    rc = dw ? sgbd_bf16_gemm_tn(dw, dy, out, xb) : 0;
    if (db && rc == 0) {
        for (size_t r = 0; r < B; r++)
            sgbd_mat_axpy(out, 1.0f, dy + r * out, db);
    }
    return rc;
}

/*
 * Layers over whole item or node matrices (the MLP of every item, the
 * normalisation of every node) run on the compute pool in pieces of rows;
 * each output element is written by one piece, so the result does not
 * depend on the cut. Small inputs stay on the calling thread.
 */
#define WIDE_MIN_FLOATS ((size_t)1 << 16)
#define WIDE_GRAIN_FLOATS ((size_t)1 << 14)

struct wide_args {
    float *out;
    float *aux;
    const float *a;
    const float *b;
    const float *c;
    size_t D;
};

static void run_wide(size_t rows, size_t D, sgbd_parallel_fn fn,
                     struct wide_args *args)
{
    size_t grain = WIDE_GRAIN_FLOATS / (D ? D : 1);

    args->D = D;
    if (rows * D < WIDE_MIN_FLOATS)
        fn(args, 0, rows);
    else
        sgbd_parallel_for(rows, grain ? grain : 1, fn, args);
}

/*
 * The leaky ReLU kernels compute both branches and select, so that the
 * compiler makes the loop a vector blend: a branch on the sign of a
 * trained activation mispredicts about every other element.
 */
/* out[i] = v[i], or slope * v[i] where sign[i] <= 0 (out may be v or
 * sign): the forward (v = sign = x) and the in-place backward (v = d,
 * sign = y) in one kernel. */
KERNEL_CLONES static void leak_by_sign(float *out, const float *v,
                                       const float *sign, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float leak = SGBD_LEAKY_SLOPE * v[i];
        out[i] = sign[i] > 0.0f ? v[i] : leak;
    }
}

static void leak_range(void *ctx, size_t begin, size_t end)
{
    const struct wide_args *p = ctx;

    leak_by_sign(p->out + begin, p->a + begin, p->b + begin, end - begin);
}

void sgbd_layer_leaky_forward(float *y, const float *x, size_t n)
{
    struct wide_args args = {.out = y, .a = x, .b = x};

    run_wide(n, 1, leak_range, &args);
}

KERNEL_CLONES void sgbd_layer_leaky_backward(float *dx, const float *dy,
                                             const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float leak = SGBD_LEAKY_SLOPE * dy[i];
        dx[i] += y[i] > 0.0f ? dy[i] : leak;
    }
}

void sgbd_layer_leaky_backward_inplace(float *d, const float *y, size_t n)
{
    struct wide_args args = {.out = d, .a = d, .b = y};

    run_wide(n, 1, leak_range, &args);
}

static void rownorm_forward_rows(float *y, float *norm, const float *x,
                                 size_t r0, size_t r1, size_t D)
{
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double n = sqrt(sgbd_mat_dot(D, xr, xr));
        float inv = (float)(1.0 / (n > SGBD_NORM_EPS ? n : SGBD_NORM_EPS));

        norm[r] = (float)n;
        for (size_t c = 0; c < D; c++)
            yr[c] = xr[c] * inv;
    }
}

static void rownorm_forward_range(void *ctx, size_t begin, size_t end)
{
    const struct wide_args *p = ctx;

    rownorm_forward_rows(p->out, p->aux, p->a, begin, end, p->D);
}

void sgbd_layer_rownorm_forward(float *y, float *norm, const float *x,
                                size_t rows, size_t D)
{
    struct wide_args args = {.out = y, .aux = norm, .a = x};

    run_wide(rows, D, rownorm_forward_range, &args);
}

static void rownorm_backward_rows(float *dx, const float *dy, const float *y,
                                  const float *norm, size_t r0, size_t r1,
                                  size_t D)
{
    for (size_t r = r0; r < r1; r++) {
        const float *yr = y + r * D, *dyr = dy + r * D;
        float *dxr = dx + r * D;

        if (!(norm[r] > SGBD_NORM_EPS)) {
            sgbd_mat_axpy(D, 1.0f / SGBD_NORM_EPS, dyr, dxr);
            continue;
        }
        float proj = (float)sgbd_mat_dot(D, yr, dyr);
        float inv = 1.0f / norm[r];
        for (size_t c = 0; c < D; c++)
            dxr[c] += (dyr[c] - yr[c] * proj) * inv;
    }
}

static void rownorm_backward_range(void *ctx, size_t begin, size_t end)
{
    const struct wide_args *p = ctx;

    rownorm_backward_rows(p->out, p->b, p->a, p->c, begin, end, p->D);
}

void sgbd_layer_rownorm_backward(float *dx, const float *dy, const float *y,
                                 const float *norm, size_t rows, size_t D)
{
    struct wide_args args = {.out = dx, .a = y, .b = dy, .c = norm};

    run_wide(rows, D, rownorm_backward_range, &args);
}

void sgbd_layer_gather_rows(float *out, const float *x, const uint32_t *idx,
                            size_t n, size_t D)
{
    for (size_t b = 0; b < n; b++)
        memcpy(out + b * D, x + (size_t)idx[b] * D, D * sizeof(float));
}

void sgbd_layer_scatter_add_rows(float *dx, const float *dout,
                                 const uint32_t *idx, size_t n, size_t D)
{
    for (size_t b = 0; b < n; b++)
        sgbd_mat_axpy(D, 1.0f, dout + b * D, dx + (size_t)idx[b] * D);
}

void sgbd_layer_bpr_diff_forward(float *x, const float *u, const float *p,
                                 const float *q, size_t B, size_t D)
{
    for (size_t b = 0; b < B; b++) {
        const float *ub = u + b * D, *pb = p + b * D, *qb = q + b * D;
        float s = 0.0f;

        for (size_t c = 0; c < D; c++)
            s += ub[c] * (pb[c] - qb[c]);
        x[b] = s;
    }
}

void sgbd_layer_bpr_diff_backward(float *du, float *dp, float *dq,
                                  const float *dx, const float *u,
                                  const float *p, const float *q, size_t B,
                                  size_t D)
{
    for (size_t b = 0; b < B; b++) {
        const float *ub = u + b * D, *pb = p + b * D, *qb = q + b * D;
        float g = dx[b];

        if (du) {
            float *d = du + b * D;
            for (size_t c = 0; c < D; c++)
                d[c] += g * (pb[c] - qb[c]);
        }
        if (dp)
            sgbd_mat_axpy(D, g, ub, dp + b * D);
        if (dq)
            sgbd_mat_axpy(D, -g, ub, dq + b * D);
    }
}

/*
 * exp(x) for x <= 0 in float, branch-free: x log2(e) = n + f with
 * |f| <= 1/2, 2^f = e^g (g = f ln 2) by its degree-6 Taylor polynomial
 * (relative error about 1e-7), 2^n put into the exponent bits; arguments
 * below -87 flush to 0 (libm's exp was a third of SLMRec's time). Written
 * on 16 lanes with GCC's vector extensions so that every KERNEL_CLONES
 * level runs it at its width; the scalar form does the same operations
 * for the tails, so a value does not depend on where it falls.
 */
#define EXP_POLY(g)                                                            \
    (1.0f +                                                                    \
     (g) * (1.0f +                                                             \
            (g) * (0.5f +                                                      \
                   (g) * (1.0f / 6 +                                           \
                          (g) * (1.0f / 24 +                                   \
                                 (g) * (1.0f / 120 + (g) * (1.0f / 720)))))))

INLINE vf16 exp_nonpos16(vf16 x)
{
    vi16 live = x > -87.0f; /* all ones where x > -87 */
    vf16 g, p, scale;
    vf16 t = select16(live, x, splat(-87.0f)) * 1.44269504f; /* x log2(e) */
    vi16 ni = __builtin_convertvector(t - 0.5f, vi16); /* round, t <= 0 */
    g = (t - __builtin_convertvector(ni, vf16)) * 0.69314718f;
    p = EXP_POLY(g);
    vi16 bits = (ni + 127) * (1 << 23);
    memcpy(&scale, &bits, sizeof(scale));
    return (vf16)((vi16)(p * scale) & live);
}

INLINE float exp_nonpos(float x)
{
    float xc = x > -87.0f ? x : -87.0f;
    float t = xc * 1.44269504f;
    int32_t ni = (int32_t)(t - 0.5f);
    float g = (t - (float)ni) * 0.69314718f;
    float p = EXP_POLY(g);
    int32_t bits = (ni + 127) * (1 << 23);
    float scale;

    memcpy(&scale, &bits, sizeof(scale));
    return x > -87.0f ? p * scale : 0.0f;
}

/* The largest of row[0 .. B), B >= 1: 16 running maxima, then the
 * largest of them (max is exact, so the order does not matter). */
INLINE float row_max(const float *row, size_t B)
{
    float lane[16], mx = row[0];
    size_t c = 0;

    if (B >= 16) {
        vf16 m = load16(row);
        for (c = 16; c + 16 <= B; c += 16)
            m = max_lanes(m, load16(row + c));
        STORE16(lane, m);
        for (size_t l = 0; l < 16; l++)
            mx = lane[l] > mx ? lane[l] : mx;
    }
    for (; c < B; c++)
        mx = row[c] > mx ? row[c] : mx;
    return mx;
}

#define LSE_LANES 8

/* Row max and sum of exp(row - max), the sum in double into 8 lanes
 * (8 independent chains instead of one; element k into lane k mod 8)
 * that are added in a fixed order at the end. */
KERNEL_CLONES
static double row_logsumexp(const float *row, size_t B, float *mx_out)
{
    float mx = row_max(row, B), e[16];
    double lane[LSE_LANES] = {0};
    size_t c = 0;

    for (; c + 16 <= B; c += 16) {
        vf16 v = exp_nonpos16(load16(row + c) - mx);
        STORE16(e, v);
        for (size_t l = 0; l < LSE_LANES; l++)
            lane[l] += e[l];
        for (size_t l = 0; l < LSE_LANES; l++)
            lane[l] += e[LSE_LANES + l];
    }
    for (; c < B; c++)
        lane[c % LSE_LANES] += exp_nonpos(row[c] - mx);
    *mx_out = mx;
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* d (n) += k exp(row - mx). */
KERNEL_CLONES
static void add_softmax_row(float *restrict d, const float *restrict row,
                            size_t n, float mx, float k)
{
    size_t c = 0;

    for (; c + 16 <= n; c += 16) {
        vf16 v = load16(d + c) + k * exp_nonpos16(load16(row + c) - mx);
        STORE16(d + c, v);
    }
    for (; c < n; c++)
        d[c] += k * exp_nonpos(row[c] - mx);
}

/* The rows are cut into INFONCE_BLOCKS fixed blocks whose losses are
 * added in block order, so the sum does not depend on the threads. */
#define INFONCE_BLOCKS 64

struct infonce_job {
    float *dlogits;
    const float *logits;
    size_t B, per_block;
    double scale;
    double part[INFONCE_BLOCKS];
};

static void infonce_blocks(void *ctx, size_t k0, size_t k1)
{
    struct infonce_job *j = ctx;
    size_t B = j->B;

    for (size_t k = k0; k < k1; k++) {
        size_t b1 = (k + 1) * j->per_block < B ? (k + 1) * j->per_block : B;
        double loss = 0.0;

        for (size_t b = k * j->per_block; b < b1; b++) {
            const float *row = j->logits + b * B;
            float mx;
            double z = row_logsumexp(row, B, &mx);

            loss += log(z) + mx - row[b];
            if (!j->dlogits)
                continue;
            float *d = j->dlogits + b * B;
            add_softmax_row(d, row, B, mx, (float)(j->scale / (double)B / z));
            d[b] -= (float)(j->scale / (double)B);
        }
        j->part[k] = loss;
    }
}

double sgbd_layer_infonce(float *dlogits, const float *logits, size_t B,
                          double scale)
{
    struct infonce_job j = {dlogits, logits, B,
                            (B + INFONCE_BLOCKS - 1) / INFONCE_BLOCKS, scale,
                            {0}};
    size_t blocks = B ? (B + j.per_block - 1) / j.per_block : 0;
    size_t per_block_work = j.per_block * B;
    double loss = 0.0;

    sgbd_parallel_for(blocks, WIDE_MIN_FLOATS / (per_block_work + 1) + 1,
                      infonce_blocks, &j);
    for (size_t k = 0; k < blocks; k++)
        loss += j.part[k];
    return B ? loss / (double)B : 0.0;
}

double sgbd_layer_infonce_pair(float *da, float *db, const float *a,
                               const float *b, float *ws, size_t n, size_t w,
                               double tau, double scale)
{
    struct sgbd_mat am = sgbd_mat_view((float *)a, n, w);
    struct sgbd_mat bm = sgbd_mat_view((float *)b, n, w);
    struct sgbd_mat lg = sgbd_mat_view(ws, n, n);
    struct sgbd_mat dl = sgbd_mat_view(ws + n * n, n, n);
    float k = (float)(1.0 / tau);
    double loss;

    if (sgbd_mat_gemm_nt(lg, am, bm, k, 0.0f) < 0)
        return NAN;
    memset(dl.data, 0, n * n * sizeof(float));
    loss = sgbd_layer_infonce(dl.data, lg.data, n, scale);
    /* d logits / d a = b / tau, d logits / d b = a / tau */
    if (da && sgbd_mat_gemm_nn(sgbd_mat_view(da, n, w), dl, bm, k, 1.0f) < 0)
        return NAN;
    if (db && sgbd_mat_gemm_tn(sgbd_mat_view(db, n, w), dl, am, k, 1.0f) < 0)
        return NAN;
    return loss;
}

void sgbd_layer_softmax_rows(float *a, const float *c, size_t rows, size_t k)
{
    for (size_t r = 0; r < rows; r++) {
        const float *cr = c + r * k;
        float *ar = a + r * k;
        float mx = cr[0];
        double z = 0.0;

        for (size_t s = 1; s < k; s++)
            mx = cr[s] > mx ? cr[s] : mx;
        for (size_t s = 0; s < k; s++)
            z += exp((double)cr[s] - mx);
        for (size_t s = 0; s < k; s++)
            ar[s] = (float)(exp((double)cr[s] - mx) / z);
    }
}
