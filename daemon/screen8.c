/*
 * screen8.c - the 8-bit item screen of the serving scorer (screen.h).
 *
 * Column c of the items has the scale s_c = max_i |x_ic| / 127 and item i
 * the bytes q_ic = round(x_ic / s_c), so x_i = s (q_i + e_i) elementwise,
 * with |e_ic| about 1/2 at most. A query u folds the scales in: w_c =
 * u_c s_c (exact in double, a product of two floats), t = max_c |w_c| /
 * 127 and p_c = round(w_c / t), so w = t p + f. Then
 *
 *     <u, x_i> = <w, q_i + e_i> = t p . q_i + <f, q_i> + <w, e_i>,
 *
 * and by Cauchy-Schwarz the screened score t p . q_i is within
 * ||f|| ||q_i|| + ||w|| ||e_i|| of the exact one. The norms of e_i and q_i
 * are measured when the copy is built, so the bound is what the data
 * needs, not the worst case of half a step per value. A scale per column
 * keeps a column of small values from losing its bits to another
 * column's outlier. The products p_c q_ic are small integers the hardware
 * sums exactly, so the screened score has no rounding of its own.
 *
 * The kernel (AVX512-VNNI VPDPBUSD) multiplies unsigned bytes by signed
 * ones, four pairs to a 32-bit lane: items are stored as q + 128, and the
 * query's 128 sum p is taken off before the first product.
 */
#include "screen.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LANES 16            /* items a block: one 32-bit lane each */
#define QMAX 127            /* |q|, |p| <= QMAX: no byte saturates */

void *screen_pages(size_t want, size_t *bytes)
{
    size_t huge = (size_t)2 << 20;
    void *p;

    *bytes = want < huge ? (want ? want : 1) : (want + huge - 1) / huge * huge;
    p = mmap(NULL, *bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (*bytes >= huge)
        (void)madvise(p, *bytes, MADV_HUGEPAGE); /* a hint: may be off */
#endif
    return p;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define VNNI_TARGET __attribute__((target("avx512f,avx512vnni")))

int screen8_supported(size_t d)
{
    return d > 0 && d % 4 == 0 && d <= SCREEN8_MAX_DIM &&
           __builtin_cpu_supports("avx512vnni");
}

/*
 * Lane l of one VPDPBUSD adds the next four bytes of item l times the
 * same four bytes of p, so a block's 16 scores build up in registers
 * with no horizontal sums. A block is read front to back, one stream
 * (no slower from L2 than eight blocks side by side, and simpler), into
 * four sums that hide the latency of each VPDPBUSD; integer sums in any
 * order are the same.
 */
VNNI_TARGET void screen8_blocks(const uint32_t *qp, int32_t corr,
                                const uint8_t *v, size_t b0, size_t nb,
                                size_t d, float *out)
{
    size_t quads = d / 4, per = quads * 64;

    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = v + (b0 + b) * per;
        __m512i acc[4] = {_mm512_set1_epi32(-corr), _mm512_setzero_si512(),
                          _mm512_setzero_si512(), _mm512_setzero_si512()};
        size_t j = 0;

        for (; j + 4 <= quads; j += 4)
#pragma GCC unroll 4
            for (size_t a = 0; a < 4; a++)
                acc[a] = _mm512_dpbusd_epi32(
                    acc[a],
                    _mm512_loadu_si512((const void *)(blk + (j + a) * 64)),
                    _mm512_set1_epi32((int)qp[j + a]));
        for (; j < quads; j++)
            acc[0] = _mm512_dpbusd_epi32(
                acc[0], _mm512_loadu_si512((const void *)(blk + j * 64)),
                _mm512_set1_epi32((int)qp[j]));
        acc[0] = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]),
                                  _mm512_add_epi32(acc[2], acc[3]));
        _mm512_storeu_ps(out + b * LANES, _mm512_cvtepi32_ps(acc[0]));
    }
}

/*
 * Each load of a block's quad feeds 4 users, as in the bfloat16 tile of
 * screen.c: 16 accumulators, 4 loads and 16 VPDPBUSD a quad.
 */
VNNI_TARGET void screen8_tile(const uint32_t *qp, size_t ldq,
                              const int32_t *corr, const uint8_t *v,
                              size_t b0, size_t nb, size_t d, float *out,
                              size_t ldo, float *sc, size_t lds)
{
    size_t quads = d / 4, per = quads * 64;
    const uint8_t *blk = v + b0 * per;
    __m512i acc[4][4];
    __m512 f[4][4];

#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[r][c] = _mm512_set1_epi32(-corr[r]);
    if (nb == 4) {
        for (size_t j = 0; j < quads; j++) {
            __m512i b[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                b[c] = _mm512_loadu_si512(
                    (const void *)(blk + c * per + j * 64));
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512i x = _mm512_set1_epi32((int)qp[r * ldq + j]);
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                    acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], b[c], x);
            }
        }
    } else {
        for (size_t j = 0; j < quads; j++)
            for (size_t c = 0; c < nb; c++) {
                __m512i b = _mm512_loadu_si512(
                    (const void *)(blk + c * per + j * 64));
                for (int r = 0; r < 4; r++)
                    acc[r][c] = _mm512_dpbusd_epi32(
                        acc[r][c], b, _mm512_set1_epi32((int)qp[r * ldq + j]));
            }
    }
    for (int r = 0; r < 4; r++)
        for (size_t c = 0; c < nb; c++) {
            f[r][c] = _mm512_cvtepi32_ps(acc[r][c]);
            if (sc)
                _mm512_storeu_ps(sc + r * lds + c * LANES, f[r][c]);
        }
    if (nb == 4) {
        tile_maxima((const __m512(*)[4])f, out, ldo);
        return;
    }
    for (int r = 0; r < 4; r++)
        for (size_t c = 0; c < nb; c++)
            out[r * ldo + c] = _mm512_reduce_max_ps(f[r][c]);
}
#else
int screen8_supported(size_t d)
{
    return 0;
}

void screen8_blocks(const uint32_t *qp, int32_t corr, const uint8_t *v,
                    size_t b0, size_t nb, size_t d, float *out)
{
}

void screen8_tile(const uint32_t *qp, size_t ldq, const int32_t *corr,
                  const uint8_t *v, size_t b0, size_t nb, size_t d,
                  float *out, size_t ldo, float *sc, size_t lds)
{
}
#endif

/* Byte c of item i: blocks of 16 items, in each block the quads of
 * values (c / 4) one after another, in each quad the 16 items, each
 * item's four bytes side by side. */
static size_t index8(size_t i, size_t c, size_t d)
{
    return ((i / LANES * (d / 4) + c / 4) * LANES + i % LANES) * 4 + c % 4;
}

/* round(y) as an integer in [-QMAX, QMAX]. */
static int quantise(double y)
{
    double r = nearbyint(y);

    return r > QMAX ? QMAX : r < -QMAX ? -QMAX : (int)r;
}

int screen8_init(struct sgbd_topk_screen8 *s, struct sgbd_mat items)
{
    size_t d = items.cols, padded = (items.rows + LANES - 1) / LANES * LANES;

    memset(s, 0, sizeof(*s));
    s->scale = calloc(d ? d : 1, sizeof(float));
    s->v = screen_pages(padded * d, &s->bytes);
    if (!s->scale || !s->v) {
        screen8_deinit(s);
        return -ENOMEM;
    }
    for (size_t i = 0; i < items.rows; i++)
        for (size_t c = 0; c < d; c++) {
            float a = fabsf(sgbd_mat_row(items, i)[c]);
            s->scale[c] = a > s->scale[c] ? a : s->scale[c];
        }
    for (size_t c = 0; c < d; c++) {
        s->scale[c] /= (float)QMAX;
        if (!(s->scale[c] >= FLT_MIN)) /* a zero or tiny column */
            s->scale[c] = FLT_MIN;
    }
    for (size_t i = 0; i < padded; i++) {
        const float *row = i < items.rows ? sgbd_mat_row(items, i) : NULL;
        double ee = 0, qq = 0;

        for (size_t c = 0; c < d; c++) {
            double y = row ? (double)row[c] / s->scale[c] : 0;
            int q = quantise(y);

            ee += (y - q) * (y - q);
            qq += (double)q * q;
            s->v[index8(i, c, d)] = (uint8_t)(q + 128);
        }
        s->eps_max = sqrt(ee) > s->eps_max ? sqrt(ee) : s->eps_max;
        s->q_max = sqrt(qq) > s->q_max ? sqrt(qq) : s->q_max;
    }
    /* above the roundings of y (2^-53 of 127 a value) and of the norms */
    s->eps_max = s->eps_max * (1.0 + 0x1p-40) + sqrt((double)d) * 0x1p-44;
    s->q_max *= 1.0 + 0x1p-40;
    return 0;
}

void screen8_deinit(struct sgbd_topk_screen8 *s)
{
    if (!s)
        return;
    if (s->v)
        munmap(s->v, s->bytes);
    free(s->scale);
    memset(s, 0, sizeof(*s));
}

double screen8_query(const struct sgbd_topk_screen8 *s, const float *u,
                     size_t d, double exact_err, uint32_t *qp,
                     int32_t *corr)
{
    double w[SCREEN8_MAX_DIM], wmax = 0, ww = 0, ff = 0, t, e;
    int8_t p[SCREEN8_MAX_DIM];
    int32_t sum = 0;

    for (size_t c = 0; c < d; c++) {
        w[c] = (double)u[c] * s->scale[c];
        wmax = fabs(w[c]) > wmax ? fabs(w[c]) : wmax;
        ww += w[c] * w[c];
    }
    if (!(wmax > 0))
        return NAN;
    t = wmax / QMAX;
    for (size_t c = 0; c < d; c++) {
        int pc = quantise(w[c] / t);
        double f = w[c] - t * pc;

        ff += f * f;
        sum += pc;
        p[c] = (int8_t)pc;
    }
    memcpy(qp, p, d);
    *corr = 128 * sum;
    /* ||f|| as computed is within sqrt(D) 2^-51 wmax of the true one */
    e = sqrt(ww) * s->eps_max +
        (sqrt(ff) + sqrt((double)d) * wmax * 0x1p-50) * s->q_max + exact_err;
    return e / t * (1.0 + 0x1p-20);
}
