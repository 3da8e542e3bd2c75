/*
 * screen.c - screened scoring: every item scored from a smaller copy of
 * the item matrix (the 8-bit one of screen8.c, or bfloat16 here), and
 * only the items that come within twice a proven error bound of the K-th
 * best scored again exactly, with topk.c's own kernel. The answers are
 * the plain scan's, bit for bit, for a quarter or half of the bytes.
 * Single requests (sgbd_topk_user_screened) and batches
 * (sgbd_topk_users_screened) take the same steps; a batch screens each
 * span of items for a group of users at once.
 */
#include "sgbd/topk.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "screen.h"
#include "sgbd/err.h"
#include "simd.h"
#include "topk_impl.h"

#define SCREEN_MIN_ITEMS 2048      /* below, the plain scan is as fast */
#define SCREEN_STACK_ITEMS 16384   /* score buffer on the stack up to this */
#define SCREEN_MAX_DIM 1024        /* widths the kernel keeps u for */
#define SCREEN_MAX_SCORE 0x1p120   /* |u| |v| below: no sum can overflow */
#define BF16_REL_ERR 0x1p-8        /* rounding to nearest: half an ulp */
#define BF16_CUT_ERR 0x1p-7        /* truncation, where rounding overflows */

/* gmax[g] = the largest of sc[16 g .. 16 g + 16), NaN skipped; -Inf when
 * all 16 are NaN. */
KERNEL_CLONES
static void group_max(const float *restrict sc, size_t groups,
                      float *restrict gmax)
{
    for (size_t g = 0; g < groups; g++) {
        float m = -INFINITY;
        for (size_t l = 0; l < LANES; l++)
            m = sc[g * LANES + l] > m ? sc[g * LANES + l] : m;
        gmax[g] = m;
    }
}

/* Up to cap indices i >= *from with sc[i] >= thr (sc padded to 16 lanes
 * past rows), into list; *from moves past the last one scanned (a
 * multiple of 16). The groups of 16 whose maximum gmax reaches thr are
 * found 16 at a time; the others are passed over whole. */
KERNEL_CLONES
static size_t collect_reaching(const float *restrict sc,
                               const float *restrict gmax, size_t rows,
                               float thr, size_t *from, size_t *list,
                               size_t cap)
{
    size_t n = 0, groups = (rows + LANES - 1) / LANES;

    for (size_t g = *from / LANES; g < groups; g += LANES) {
        float part[LANES];
        const float *gm = gmax + g;
        unsigned m;

        if (groups - g < LANES) { /* gmax ends here: NaN reaches nothing */
            for (size_t l = 0; l < LANES; l++)
                part[l] = l < groups - g ? gmax[g + l] : NAN;
            gm = part;
        }
        for (m = hits16(gm, thr); m; m &= m - 1) {
            size_t i0 = (g + (size_t)__builtin_ctz(m)) * LANES;
            if (n + LANES > cap) {
                *from = i0;
                return n;
            }
            for (unsigned h = hits16(sc + i0, thr); h; h &= h - 1)
                list[n++] = i0 + (size_t)__builtin_ctz(h);
        }
    }
    *from = rows;
    return n;
}

/*
 * The bfloat16 kernels, for CPUs without the 8-bit one (screen8.c):
 * bfloat16 pairs multiplied in hardware (AVX512-BF16 VDPBF16PS: products
 * exact in float, sums rounded, denormal inputs and outputs flushed to
 * zero), 32 values an instruction. Where the CPU has neither kernel, or
 * D fits neither (a multiple of 4 for 8 bits, of 32 here), the screened
 * calls are the plain scan.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

static int screen_hw(size_t d)
{
    return d % 32 == 0 && d <= SCREEN_MAX_DIM &&
           __builtin_cpu_supports("avx512bf16");
}

#define BF16_TARGET __attribute__((target("avx512f,avx512bf16")))

/* up (d / 2) = u rounded to bfloat16 pairs, as the screen holds v. */
BF16_TARGET static void screen_pack(const float *u, size_t d, uint32_t *up)
{
    for (size_t c = 0; c < d; c += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(u + c + 16),
                                         _mm512_loadu_ps(u + c));
        _mm512_storeu_si512((void *)(up + c / 2), (__m512i)h);
    }
}

/*
 * out[16 b + l] = screened <u, v_{16 b + l}> for the blocks b0 .. b0 + nb
 * of the screen (layout in screen_index()), u given as screen_pack made
 * it: lane l of one VDPBF16PS adds the next pair of item l's values times
 * the same pair of u, so a block's 16 scores build up in one register
 * with no horizontal sums; eight blocks go at once to keep the
 * multipliers busy.
 */
BF16_TARGET static void screen_blocks(const uint32_t *up, const uint16_t *v,
                                      size_t b0, size_t nb, size_t d,
                                      float *out)
{
    size_t pairs = d / 2, per = pairs * 32;

    for (size_t g = 0; g < nb; g += 8) {
        size_t m = nb - g < 8 ? nb - g : 8;
        const uint16_t *blk = v + (b0 + g) * per;
        __m512 acc[8];

        for (size_t b = 0; b < 8; b++)
            acc[b] = _mm512_setzero_ps();
        for (size_t j = 0; j < pairs; j++) {
            __m512bh uj = (__m512bh)_mm512_set1_epi32((int)up[j]);
            if (m == 8) {
#pragma GCC unroll 8
                for (size_t b = 0; b < 8; b++)
                    acc[b] = _mm512_dpbf16_ps(acc[b], uj, (__m512bh)
                        _mm512_loadu_si512((const void *)(blk + b * per +
                                                          j * 32)));
            } else {
                for (size_t b = 0; b < m; b++)
                    acc[b] = _mm512_dpbf16_ps(acc[b], uj, (__m512bh)
                        _mm512_loadu_si512((const void *)(blk + b * per +
                                                          j * 32)));
            }
        }
        for (size_t b = 0; b < m; b++)
            _mm512_storeu_ps(out + (g + b) * LANES, acc[b]);
    }
}

/*
 * The batch's kernel: out[r ldo + c] = the largest screened score of
 * user r0 + r (up + r ldu, as screen_pack made it) over the 16 items of
 * block b0 + c, for 4 users and nb <= 4 blocks, and the scores
 * themselves into sc (row stride lds) unless it is NULL. Each load of a
 * block's pair feeds 4 users, so the loads no longer bound the
 * multiply-adds, as they do for one user.
 */
BF16_TARGET static void screen_tile(const uint32_t *up, size_t ldu,
                                    const uint16_t *v, size_t b0, size_t nb,
                                    size_t d, float *out, size_t ldo,
                                    float *sc, size_t lds)
{
    size_t pairs = d / 2, per = pairs * 32;
    const uint16_t *blk = v + b0 * per;
    __m512 acc[4][4];

#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[r][c] = _mm512_setzero_ps();
    if (nb == 4) {
        for (size_t j = 0; j < pairs; j++) {
            __m512bh b[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                b[c] = (__m512bh)_mm512_loadu_si512(
                    (const void *)(blk + c * per + j * 32));
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512bh x = (__m512bh)_mm512_set1_epi32((int)up[r * ldu + j]);
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                    acc[r][c] = _mm512_dpbf16_ps(acc[r][c], x, b[c]);
            }
        }
    } else {
        for (size_t j = 0; j < pairs; j++)
            for (size_t c = 0; c < nb; c++) {
                __m512bh b = (__m512bh)_mm512_loadu_si512(
                    (const void *)(blk + c * per + j * 32));
                for (int r = 0; r < 4; r++)
                    acc[r][c] = _mm512_dpbf16_ps(
                        acc[r][c],
                        (__m512bh)_mm512_set1_epi32((int)up[r * ldu + j]), b);
            }
    }
    for (int r = 0; r < 4; r++)
        for (size_t c = 0; c < nb; c++)
            if (sc)
                _mm512_storeu_ps(sc + r * lds + c * LANES, acc[r][c]);
    if (nb == 4) {
        tile_maxima(acc, out, ldo);
        return;
    }
    for (int r = 0; r < 4; r++)
        for (size_t c = 0; c < nb; c++)
            out[r * ldo + c] = _mm512_reduce_max_ps(acc[r][c]);
}

/* Bit l set where sc[l] >= thr, for the 16 scores of a block. */
TILE_TARGET static uint32_t lanes_reaching(const float *sc, float thr)
{
    return _mm512_cmp_ps_mask(_mm512_loadu_ps(sc), _mm512_set1_ps(thr),
                              _CMP_GE_OQ);
}
#else
static int screen_hw(size_t d)
{
    return 0;
}

static void screen_pack(const float *u, size_t d, uint32_t *up)
{
}

static void screen_blocks(const uint32_t *up, const uint16_t *v, size_t b0,
                          size_t nb, size_t d, float *out)
{
}

static void screen_tile(const uint32_t *up, size_t ldu, const uint16_t *v,
                        size_t b0, size_t nb, size_t d, float *out,
                        size_t ldo, float *sc, size_t lds)
{
}

static uint32_t lanes_reaching(const float *sc, float thr)
{
    return 0;
}
#endif

int sgbd_topk_screen_supported(size_t dim)
{
    return screen_hw(dim) || screen8_supported(dim);
}

/* x rounded to bfloat16; *cut set when rounding would overflow to Inf and
 * the value was truncated instead. */
static uint16_t to_bf16(float x, int *cut)
{
    uint32_t b, r = bf16_nearest(x);

    memcpy(&b, &x, sizeof(b));
    if ((r & 0x7f80u) == 0x7f80u) {
        *cut = 1;
        return (uint16_t)(b >> 16);
    }
    return (uint16_t)r;
}

/*
 * Where value c of item i goes: blocks of 16 items, in each block the
 * pairs of values (c / 2) one after another, in each pair the 16 items,
 * each item's two values side by side. A short last block is zero.
 */
static size_t screen_index(size_t i, size_t c, size_t d)
{
    return ((i / LANES * (d / 2) + c / 2) * LANES + i % LANES) * 2 + c % 2;
}

int sgbd_topk_screen_init(struct sgbd_topk_screen *s, struct sgbd_mat items)
{
    return sgbd_topk_screen_init_copies(
        s, items, screen8_supported(items.cols) ? SGBD_SCREEN_8BIT
                                                : SGBD_SCREEN_BF16);
}

int sgbd_topk_screen_init_copies(struct sgbd_topk_screen *s,
                                 struct sgbd_mat items, int copies)
{
    size_t n = (items.rows + LANES - 1) / LANES * LANES * items.cols;
    int cut = 0, rc;

    memset(s, 0, sizeof(*s));
    if (items.cols % 2)
        return sgbd_errf(SGBD_E_SHAPE, "topk screen: odd width %zu",
                         items.cols);
    if ((copies & SGBD_SCREEN_BF16) && screen_hw(items.cols)) {
        s->v = screen_pages(n * sizeof(uint16_t), &s->bytes);
        if (!s->v)
            return -ENOMEM;
    }
    for (size_t i = 0; i < items.rows; i++) {
        const float *row = sgbd_mat_row(items, i);
        double sq = 0;

        for (size_t c = 0; c < items.cols; c++) {
            if (!isfinite(row[c])) {
                sgbd_topk_screen_deinit(s);
                return sgbd_errf(SGBD_E_SHAPE, "topk screen: item %zu has a "
                                 "NaN or Inf at %zu", i, c);
            }
            sq += (double)row[c] * row[c];
            if (s->v)
                s->v[screen_index(i, c, items.cols)] = to_bf16(row[c], &cut);
        }
        if (sqrt(sq) > s->max_norm)
            s->max_norm = sqrt(sq);
    }
    if ((copies & SGBD_SCREEN_8BIT) && screen8_supported(items.cols) &&
        (rc = screen8_init(&s->q8, items)) < 0) {
        sgbd_topk_screen_deinit(s);
        return rc;
    }
    s->rows = items.rows;
    s->cols = items.cols;
    s->max_norm *= 1.0 + 0x1p-40;  /* above its own rounding */
    s->rel_err = cut ? BF16_CUT_ERR : BF16_REL_ERR;
    return 0;
}

void sgbd_topk_screen_deinit(struct sgbd_topk_screen *s)
{
    if (!s)
        return;
    if (s->v)
        munmap(s->v, s->bytes);
    screen8_deinit(&s->q8);
    memset(s, 0, sizeof(*s));
}

size_t sgbd_topk_screen_bytes(const struct sgbd_topk_screen *s)
{
    return (s->v ? s->bytes : 0) +
           (s->q8.v ? s->q8.bytes + s->cols * sizeof(float) : 0);
}

/* gamma_n = n u / (1 - n u) for n = 2D roundings of a float sum of D
 * products (u = 2^-24): its error is at most gamma_n sum_d |u_d v_d|. */
static double sum_gamma(size_t d)
{
    double n = 2.0 * (double)d;

    return n * 0x1p-24 / (1.0 - n * 0x1p-24);
}

/*
 * E with |fl<u, v> - screened<u, v>| <= E for every item, from
 * sum_d |u_d v_d| <= ||u|| ||v|| (Cauchy-Schwarz):
 *   - rounding u and v to bfloat16: (rel_u + rel_v + rel_u rel_v) of it;
 *   - the float sums of each side: gamma_n of it, n = 2D roundings at
 *     most, for the exact side and the screened side;
 *   - values flushed to zero (below 2^-126) on the screened side, an
 *     absolute (sqrt(D) (||u|| + ||v||) + 2D) 2^-125 at most.
 * un is ||u||.
 */
static double screen_error(double un, const struct sgbd_topk_screen *s)
{
    double D = (double)s->cols, gamma = sum_gamma(s->cols);
    double rel = BF16_REL_ERR + s->rel_err + BF16_REL_ERR * s->rel_err;
    double e = (rel + 2.0 * gamma * (1.0 + rel)) * un * s->max_norm;

    e += (sqrt(D) * (un + s->max_norm) + 2.0 * D) * 0x1p-125;
    return e * (1.0 + 0x1p-20);
}

/*
 * The 8-bit screen's bound for u, in screened units (screen8_query()),
 * with qp and *corr the query as its kernel takes it. The exact side
 * is the float scan: gamma_n ||u|| ||v|| as above, and its products'
 * underflow, 2^-150 each at most. un is ||u||.
 */
static double screen8_error(const float *u, double un,
                            const struct sgbd_topk_screen *s, uint32_t *qp,
                            int32_t *corr)
{
    double exact = sum_gamma(s->cols) * un * s->max_norm +
                   (double)s->cols * 0x1p-149;

    return screen8_query(&s->q8, u, s->cols, exact * (1.0 + 0x1p-20), qp,
                         corr);
}

/* The largest float t with t <= x. */
static float float_at_most(double x)
{
    float t = (float)x;

    return (double)t > x ? nextafterf(t, -INFINITY) : t;
}

/* The k-th largest of a (n floats, none NaN; 1 <= k <= n), which it
 * reorders: quickselect with a three-way partition, so ties end it. */
static float kth_largest(float *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n, want = k - 1;

    while (hi - lo > 1) {
        float p = a[lo + (hi - lo) / 2];
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            float x = a[i];
            if (x > p) {
                a[i++] = a[lt], a[lt++] = x;
            } else if (x < p) {
                a[i] = a[--gt], a[gt] = x;
            } else {
                i++;
            }
        }
        if (want < lt)
            hi = lt;
        else if (want >= gt)
            lo = gt;
        else
            return p;
    }
    return a[lo];
}

/*
 * The k-th largest of a (n floats, none NaN; 1 <= k <= n) by histogram:
 * the finite values counted into 64 bins between their least and
 * greatest (the map from value to bin never decreases), the bin that
 * holds the k-th largest found from the top, and only its values,
 * copied to scratch (n), selected. Two passes whose branches the CPU
 * predicts, where a selection over all of a would mispredict on most
 * values. -Inf when fewer than k values are finite.
 */
#define KTH_BINS 64

static inline int bin_of(float x, float lo, float scale)
{
    float f = (x - lo) * scale;

    return f < (float)(KTH_BINS - 1) ? (int)f : KTH_BINS - 1;
}

/*
 * The same for k <= KTH_SMALL: the k largest so far kept in descending
 * order, the values compared with the least of them 16 at a time; in
 * item order few values enter (about k ln(n / k)), so the pass is
 * mostly vector compares. Each entry costs a mispredicted branch and a
 * shift, so it wins only where n is large against k: 63,000 items
 * (3,938 block maxima, k = 20) 1.1x faster batches, 7,050 (441) slower.
 */
#define KTH_SMALL 32
#define KTH_SMALL_RATIO 128 /* least n / k for kth_largest_small */

KERNEL_CLONES
static float kth_largest_small(const float *a, size_t n, size_t k)
{
    float top[KTH_SMALL], thr = -INFINITY;
    size_t i = 0;

    for (size_t j = 0; j < k; j++)
        top[j] = -INFINITY;
    while (i < n) {
        size_t m = n - i < LANES ? n - i : LANES;
        int any = 0;
        for (size_t l = 0; l < m; l++)
            any |= a[i + l] > thr;
        for (size_t l = 0; any && l < m; l++) {
            float x = a[i + l];
            size_t p = k - 1;
            if (!(x > thr))
                continue;
            for (; p > 0 && top[p - 1] < x; p--)
                top[p] = top[p - 1];
            top[p] = x;
            thr = top[k - 1];
        }
        i += m;
    }
    return thr;
}

/* Bins of 16 values (bin_of), KTH_BINS for -Inf, which no bin counts. */
INLINE void bins16(int32_t *out, vf16 x, float lo, float scale)
{
    vi16 live = x > -INFINITY;
    vf16 f = (select16(live, x, splat(lo)) - lo) * scale;
    vf16 top = splat((float)(KTH_BINS - 1));
    vi16 bin = __builtin_convertvector(select16(f < top, f, top), vi16);
    vi16 none = bin - bin + KTH_BINS;

    bin = (bin & live) | (none & ~live);
    memcpy(out, &bin, sizeof(bin));
}

/* The least finite value of a (n) and the greatest; +Inf and -Inf when
 * none is finite. */
INLINE void finite_range(const float *a, size_t n, float *lo_out,
                         float *hi_out)
{
    vf16 lo = splat(INFINITY), hi = splat(-INFINITY);
    float lv[LANES], hv[LANES], l = INFINITY, h = -INFINITY;
    size_t i = 0;

    for (; i + LANES <= n; i += LANES) {
        vf16 x = load16(a + i);
        vf16 y = select16(x > -INFINITY, x, splat(INFINITY));
        hi = max_lanes(hi, x);
        lo = select16(y < lo, y, lo);
    }
    STORE16(lv, lo);
    STORE16(hv, hi);
    for (size_t j = 0; j < LANES; j++) {
        l = lv[j] < l ? lv[j] : l;
        h = hv[j] > h ? hv[j] : h;
    }
    for (; i < n; i++)
        if (a[i] > -INFINITY) {
            l = a[i] < l ? a[i] : l;
            h = a[i] > h ? a[i] : h;
        }
    *lo_out = l, *hi_out = h;
}

KERNEL_CLONES
static float kth_largest_binned(const float *a, size_t n, size_t k,
                                float *scratch)
{
    size_t count[KTH_BINS + 1] = {0}, above = 0, m = 0, i;
    int32_t bin[LANES];
    float lo, hi, scale;
    int b;

    if (k <= KTH_SMALL && n >= KTH_SMALL_RATIO * k)
        return kth_largest_small(a, n, k);
    finite_range(a, n, &lo, &hi);
    if (!(hi >= lo))
        return -INFINITY;
    scale = hi > lo ? (float)KTH_BINS / (hi - lo) : 0.0f;
    if (!isfinite(scale))
        scale = 0.0f; /* hi - lo below float's range: one bin */
    for (i = 0; i + LANES <= n; i += LANES) {
        bins16(bin, load16(a + i), lo, scale);
        for (size_t l = 0; l < LANES; l++)
            count[bin[l]]++;
    }
    for (; i < n; i++)
        if (a[i] > -INFINITY)
            count[bin_of(a[i], lo, scale)]++;
    for (b = KTH_BINS - 1; b >= 0 && above + count[b] < k; b--)
        above += count[b];
    if (b < 0)
        return -INFINITY;
    for (i = 0; i + LANES <= n && m < count[b]; i += LANES) {
        bins16(bin, load16(a + i), lo, scale);
        for (size_t l = 0; l < LANES; l++)
            if (bin[l] == b)
                scratch[m++] = a[i + l];
    }
    for (; i < n && m < count[b]; i++)
        if (a[i] > -INFINITY && bin_of(a[i], lo, scale) == b)
            scratch[m++] = a[i];
    return kth_largest(scratch, m, k - above);
}

/*
 * Pass 1, from the screened scores in sc with the excluded ones NaN: the
 * padding to 16 lanes set NaN, and a score T that at least k items reach:
 * the k-th largest maximum of a 16-item group (k groups, each with an
 * item at or above its maximum), or -Inf when fewer than k groups have
 * an item left. Cheaper than selecting the k-th score itself, and close
 * to it: the best items rarely share a group. gmax holds 2 groups floats,
 * the second half scratch.
 */
static float screen_reach(size_t rows, size_t k, float *sc, float *gmax)
{
    size_t groups = (rows + LANES - 1) / LANES;

    for (size_t i = rows; i % LANES; i++)
        sc[i] = NAN;
    group_max(sc, groups, gmax);
    if (groups < k)
        return -INFINITY;
    return kth_largest_binned(gmax, groups, k, gmax + groups);
}

/* A user as the copy it is screened from takes it. */
struct packed {
    const uint32_t *words; /* bfloat16 pairs (D / 2) or 8-bit quads (D / 4) */
    int32_t corr;          /* 8 bits: 128 sum p */
    int eight;
};

/* Packed user p's screened scores of nb blocks from b0 into out. */
static void screen_packed(struct packed p, const struct sgbd_topk_screen *s,
                          size_t b0, size_t nb, float *out)
{
    if (p.eight)
        screen8_blocks(p.words, p.corr, s->q8.v, b0, nb, s->cols, out);
    else
        screen_blocks(p.words, s->v, b0, nb, s->cols, out);
}

/* Pack u into words (and *corr) for the copy eight names, and return its
 * error bound in screened units, or NaN when the plain scan must answer
 * for it (u not finite, a sum that could overflow, or for 8 bits u
 * zero). */
static double pack_query(const float *u, const struct sgbd_topk_screen *s,
                         int eight, uint32_t *words, int32_t *corr)
{
    double un = sqrt(sgbd_mat_dot(s->cols, u, u));

    /* false for a NaN or Inf in u too */
    if (!(un < 0x1p100 && un * s->max_norm < SCREEN_MAX_SCORE))
        return NAN;
    if (eight)
        return screen8_error(u, un, s, words, corr);
    screen_pack(u, s->cols, words);
    return screen_error(un, s);
}

/* Pass 1 for one user: its screened scores, a chunk at a time. */
static float screen_pass(struct packed p, const struct sgbd_topk_screen *s,
                         size_t k, const uint64_t *exclude_bits, float *sc,
                         float *gmax)
{
    for (size_t i0 = 0; i0 < s->rows; i0 += CHUNK) {
        size_t n = s->rows - i0 < CHUNK ? s->rows - i0 : CHUNK;

        screen_packed(p, s, i0 / LANES, (n + LANES - 1) / LANES, sc + i0);
        topk_mask_nan(sc + i0, n, i0, exclude_bits);
    }
    return screen_reach(s->rows, k, sc, gmax);
}

/* Pass 2: every item whose screened score reaches thr, scored exactly. */
static int refine_pass(const float *u, struct sgbd_mat items, const float *sc,
                       const float *gmax, float thr, size_t k,
                       uint32_t *out_idx, float *out_score)
{
    struct sgbd_topk t;
    size_t list[4 * LANES], from = 0;
    int rc = sgbd_topk_init(&t, k);

    if (rc < 0)
        return rc;
    while (from < items.rows) {
        size_t n = collect_reaching(sc, gmax, items.rows, thr, &from, list,
                                    4 * LANES);
        for (size_t j = 0; j < n; j += LANES)
            topk_push_rows(&t, u, items, list + j,
                           n - j < LANES ? n - j : LANES);
    }
    rc = (int)sgbd_topk_finish(&t, out_idx, out_score);
    sgbd_topk_deinit(&t);
    return rc;
}

/* Whether screening can beat the plain scan for k items: a catalogue of
 * SCREEN_MIN_ITEMS or more, k within I / 8, and a copy this CPU reads. */
static int screen_helps(const struct sgbd_topk_screen *s, size_t k)
{
    return s->rows >= SCREEN_MIN_ITEMS && k > 0 && k <= INT_MAX &&
           k <= s->rows / 8 && (s->v || s->q8.v);
}

/* SGBD_E_SHAPE unless screen was built for items' shape. */
static int check_screen(const struct sgbd_topk_screen *screen,
                        struct sgbd_mat items)
{
    if (screen && screen->rows == items.rows && screen->cols == items.cols)
        return 0;
    return sgbd_errf(SGBD_E_SHAPE, "topk: the screen does not match items "
                     "(%zu, %zu)", items.rows, items.cols);
}

int sgbd_topk_user_screened(const float *u, struct sgbd_mat items,
                            const struct sgbd_topk_screen *screen, size_t k,
                            const uint64_t *exclude_bits, uint32_t *out_idx,
                            float *out_score)
{
    float stack_sc[SCREEN_STACK_ITEMS + LANES] __attribute__((aligned(64)));
    float stack_gmax[2 * (SCREEN_STACK_ITEMS / LANES + 1)];
    float *sc = stack_sc, *gmax = stack_gmax, reach;
    uint32_t words[SCREEN_MAX_DIM / 2];
    struct packed p = {words, 0, 0};
    double err = NAN;
    int rc;

    if ((rc = check_screen(screen, items)) < 0)
        return rc;
    p.eight = screen->q8.v != NULL;
    if (screen_helps(screen, k))
        err = pack_query(u, screen, p.eight, words, &p.corr);
    if (isnan(err))
        return sgbd_topk_user(u, items, k, exclude_bits, out_idx, out_score);
    if (items.rows > SCREEN_STACK_ITEMS) {
        sc = malloc((items.rows + LANES + 2 * (items.rows / LANES + 2)) *
                    sizeof(float));
        if (!sc)
            return sgbd_topk_user(u, items, k, exclude_bits, out_idx,
                                  out_score);
        gmax = sc + items.rows + LANES;
    }

    reach = screen_pass(p, screen, k, exclude_bits, sc, gmax);
    rc = refine_pass(u, items, sc, gmax,
                     float_at_most((double)reach - 2.0 * err), k, out_idx,
                     out_score);
    if (sc != stack_sc)
        free(sc);
    return rc;
}

/*
 * The batch: users go through in groups whose group maxima fit in
 * SCREEN_BATCH_FLOATS, and within a group the items in spans of
 * SCREEN_SPAN_BLOCKS blocks (128 items, 8 or 16 KiB of screen at D = 64),
 * each span screened for every user of the group, 4 users and 4 blocks a
 * tile, before the next: the screen is read from memory once per group
 * instead of once per user. The copy is the 8-bit one where the screen
 * has it, as for single requests. Only each block's largest screened score is
 * kept (the blocks are the 16-item groups of one user's pass 1); a block
 * with an excluded item or padding is screened again for that user with
 * those masked. Then per user the k-th largest maximum T, and in each
 * block whose maximum reaches T - 2E, screened again, the items that do
 * scored exactly: the items one user's pass 2 scores, so the same
 * answer.
 */
#define SCREEN_BATCH_FLOATS ((size_t)1 << 20)  /* 4 MiB of maxima, scores */
#define SCREEN_SPAN_BLOCKS 8
#define SCREEN_KEEP_ITEMS 16384 /* up to this, each user's bfloat16 scores
                                 * are kept (64 KiB, in L2) for pass 2;
                                 * above, and always for the 8-bit copy,
                                 * pass 2 screens its blocks again, which
                                 * costs less than writing and reading them
                                 * back */

struct screen_batch {
    float *gm;        /* (group4, blocks) block maxima of each user */
    float *sc;        /* (group4, blocks 16) their scores, or NULL */
    float *scratch;   /* (blocks) */
    uint32_t *up;     /* (group4, words) users packed for the copy read,
                         the rows past the group's users zero */
    int32_t *corr;    /* (group4) their 8-bit offsets, or 0 */
    double *err;      /* (group) error bounds; NaN: not screenable */
    size_t blocks, group, words;
    int eight;        /* the 8-bit copy, else the bfloat16 one */
};


/* gm[g] again for block g of one user: the largest screened score of
 * its items below rows that ex does not exclude, -Inf when none; from
 * the kept scores of the user's blocks, or the block screened again. */
static float block_max_masked(struct packed up,
                              const struct sgbd_topk_screen *s, size_t g,
                              const uint64_t *ex, const float *kept)
{
    float again[LANES], m = -INFINITY;
    const float *sc = kept ? kept + g * LANES : again;

    if (!kept)
        screen_packed(up, s, g, 1, again);
    for (size_t l = 0; l < LANES; l++) {
        size_t i = g * LANES + l;
        if (i < s->rows && !(ex && sgbd_bitset_test(ex, i)) && sc[l] > m)
            m = sc[l];
    }
    return m;
}

/* Mask one user's block maxima: its excluded items and the padding. */
static void mask_blocks(float *gm, struct packed up,
                        const struct sgbd_topk_screen *s, size_t blocks,
                        const uint64_t *ex, const float *kept)
{
    size_t last = SIZE_MAX;

    if (s->rows % LANES)
        gm[blocks - 1] = block_max_masked(up, s, blocks - 1, ex, kept);
    for (size_t w = 0; ex && w < sgbd_bitset_words(s->rows); w++)
        for (uint64_t m = ex[w]; m; m &= m - 1) {
            size_t g = (w * 64 + (size_t)__builtin_ctzll(m)) / LANES;
            if (g != last && g < blocks)
                gm[g] = block_max_masked(up, s, g, ex, kept);
            last = g;
        }
}

/* Pass 2 of the batch: in each block whose maximum reaches thr, the
 * eligible items whose screened score (the block screened again) does,
 * scored exactly. */
static int refine_blocks(const float *u, struct packed up,
                         const struct sgbd_topk_screen *s,
                         struct sgbd_mat items, const float *gm,
                         const float *kept, size_t blocks, float thr,
                         const uint64_t *ex, size_t k, uint32_t *out_idx,
                         float *out_score)
{
    struct sgbd_topk t;
    size_t list[2 * LANES], n = 0;
    float again[LANES];
    int rc = sgbd_topk_init(&t, k);

    if (rc < 0)
        return rc;
    for (size_t g = 0; g < blocks; g++) {
        const float *sc = kept ? kept + g * LANES : again;
        if (!(gm[g] >= thr))
            continue;
        if (!kept)
            screen_packed(up, s, g, 1, again);
        for (uint32_t m = lanes_reaching(sc, thr); m; m &= m - 1) {
            size_t i = g * LANES + (size_t)__builtin_ctz(m);
            if (i < items.rows && !(ex && sgbd_bitset_test(ex, i)))
                list[n++] = i;
        }
        if (n >= LANES) { /* the kernel scores 16 listed items at once */
            topk_push_rows(&t, u, items, list, LANES);
            n -= LANES;
            memcpy(list, list + LANES, n * sizeof(size_t));
        }
    }
    if (n > 0)
        topk_push_rows(&t, u, items, list, n);
    rc = (int)sgbd_topk_finish(&t, out_idx, out_score);
    sgbd_topk_deinit(&t);
    return rc;
}

/* Users [b0, b0 + n) of the batch into its outputs. */
static int screen_group(struct screen_batch *w, struct sgbd_mat users,
                        size_t b0, size_t n, struct sgbd_mat items,
                        const struct sgbd_topk_screen *s, size_t k,
                        const uint64_t *const *exclude_bits,
                        uint32_t *out_idx, float *out_score, size_t *out_n)
{
    size_t d = s->cols, blocks = w->blocks, nw = w->words;
    int rc = 0;

    memset(w->up, 0, (n + 3) / 4 * 4 * nw * sizeof(uint32_t));
    memset(w->corr, 0, (n + 3) / 4 * 4 * sizeof(int32_t));
    for (size_t b = 0; b < n; b++)
        w->err[b] = pack_query(sgbd_mat_row(users, b0 + b), s, w->eight,
                               w->up + b * nw, w->corr + b);
    for (size_t g0 = 0; g0 < blocks; g0 += SCREEN_SPAN_BLOCKS) {
        size_t g1 = blocks - g0 < SCREEN_SPAN_BLOCKS ? blocks
                                                     : g0 + SCREEN_SPAN_BLOCKS;
        for (size_t r0 = 0; r0 < n; r0 += 4)
            for (size_t c0 = g0; c0 < g1; c0 += 4) {
                size_t nb = g1 - c0 < 4 ? g1 - c0 : 4;
                float *gm = w->gm + r0 * blocks + c0;
                float *sc = w->sc ? w->sc + (r0 * blocks + c0) * LANES : NULL;

                if (w->eight)
                    screen8_tile(w->up + r0 * nw, nw, w->corr + r0, s->q8.v,
                                 c0, nb, d, gm, blocks, sc, blocks * LANES);
                else
                    screen_tile(w->up + r0 * nw, nw, s->v, c0, nb, d, gm,
                                blocks, sc, blocks * LANES);
            }
    }
    for (size_t b = 0; b < n && rc >= 0; b++) {
        const float *u = sgbd_mat_row(users, b0 + b);
        const uint64_t *ex = exclude_bits ? exclude_bits[b0 + b] : NULL;
        uint32_t *oi = out_idx + (b0 + b) * k;
        float *os = out_score + (b0 + b) * k, *gm = w->gm + b * blocks;
        struct packed up = {w->up + b * nw, w->corr[b], w->eight};
        float reach;

        if (isnan(w->err[b])) {
            rc = sgbd_topk_user(u, items, k, ex, oi, os);
        } else {
            mask_blocks(gm, up, s, blocks, ex,
                        w->sc ? w->sc + b * blocks * LANES : NULL);
            reach = blocks < k ? -INFINITY
                               : kth_largest_binned(gm, blocks, k,
                                                    w->scratch);
            rc = refine_blocks(u, up, s, items, gm,
                               w->sc ? w->sc + b * blocks * LANES : NULL,
                               blocks,
                               float_at_most((double)reach - 2.0 * w->err[b]),
                               ex, k, oi, os);
        }
        if (rc >= 0)
            out_n[b0 + b] = (size_t)rc;
    }
    return rc < 0 ? rc : 0;
}

int sgbd_topk_users_screened(struct sgbd_mat users, struct sgbd_mat items,
                             const struct sgbd_topk_screen *screen, size_t k,
                             const uint64_t *const *exclude_bits,
                             uint32_t *out_idx, float *out_score,
                             size_t *out_n)
{
    struct screen_batch w = {0};
    size_t B = users.rows;
    int rc = topk_check_batch(users, items, k), keep;

    if (rc == 0)
        rc = check_screen(screen, items);
    if (rc < 0)
        return rc;
    if (B == 0)
        return 0;
    if (!screen_helps(screen, k)) {
        for (size_t b = 0; b < B && rc >= 0; b++) {
            rc = sgbd_topk_user(sgbd_mat_row(users, b), items, k,
                                exclude_bits ? exclude_bits[b] : NULL,
                                out_idx + b * k, out_score + b * k);
            if (rc >= 0)
                out_n[b] = (size_t)rc;
        }
        return rc < 0 ? rc : 0;
    }
    w.eight = screen->q8.v != NULL;
    w.words = w.eight ? items.cols / 4 : items.cols / 2;
    w.blocks = (items.rows + LANES - 1) / LANES;
    keep = !w.eight && w.blocks * LANES <= SCREEN_KEEP_ITEMS;
    w.group = SCREEN_BATCH_FLOATS / (w.blocks * (keep ? LANES + 1 : 1));
    w.group = w.group < 1 ? 1 : w.group > B ? B : w.group;
    w.gm = malloc((w.group + 3) / 4 * 4 * w.blocks * sizeof(float));
    if (keep)
        w.sc = malloc((w.group + 3) / 4 * 4 * w.blocks * LANES *
                      sizeof(float));
    w.scratch = malloc(w.blocks * sizeof(float));
    w.up = malloc((w.group + 3) / 4 * 4 * w.words * sizeof(uint32_t));
    w.corr = malloc((w.group + 3) / 4 * 4 * sizeof(int32_t));
    w.err = malloc(w.group * sizeof(double));
    rc = w.gm && w.scratch && w.up && w.corr && w.err && (w.sc || !keep)
             ? 0
             : -ENOMEM;
    for (size_t b0 = 0; b0 < B && rc == 0; b0 += w.group)
        rc = screen_group(&w, users, b0, B - b0 < w.group ? B - b0 : w.group,
                          items, screen, k, exclude_bits, out_idx, out_score,
                          out_n);
    free(w.err), free(w.corr), free(w.up), free(w.scratch), free(w.sc);
    free(w.gm);
    return rc;
}
