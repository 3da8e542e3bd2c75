/*
 * topk.c - threshold + buffer selection, bitsets, and the scoring kernels.
 *
 * Candidates are packed into 64-bit keys (score, then lower index first)
 * and appended to a buffer; a full buffer is cut back to the K best by
 * quickselect, which raises the threshold. Before a chunk is scanned, a
 * lower bound of the final K-th score taken from group maxima raises the
 * threshold close to its final value, so the scan (one vector compare
 * per 16 scores, whole spans of 256 skipped when their group maxima miss
 * the threshold) appends few more than K keys.
 *
 * The kernels use GCC vector extensions on 16-float vectors, compiled for
 * several x86 levels (target_clones; the default build targets baseline
 * x86-64). They multiply and add lane by lane and reduce in a fixed tree,
 * with no contraction under -std=c11, so every clone gives bitwise the
 * same scores.
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

/* n < 16 floats of p, the other lanes 0. */
INLINE vf16 load_part(const float *p, size_t n)
{
    vf16 v = {0};
    memcpy(&v, p, n * sizeof(float));
    return v;
}

/* Bit l set when s[l] >= thr (never for NaN). */
INLINE unsigned hits16(const float *s, float thr)
{
    const vi16 bit = {1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5,
                      1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10, 1 << 11,
                      1 << 12, 1 << 13, 1 << 14, 1 << 15};
    const vi16 h8 = {8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7};
    const vi16 h4 = {4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15};
    const vi16 h2 = {2, 3, 0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const vi16 h1 = {1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    vi16 m = (load16(s) >= splat(thr)) & bit;

    m |= __builtin_shuffle(m, h8);
    m |= __builtin_shuffle(m, h4);
    m |= __builtin_shuffle(m, h2);
    m |= __builtin_shuffle(m, h1);
    return (unsigned)m[0];
}

#define LANES 16           /* floats per vector; scores per scan test */
#define SPAN 256           /* scores per span of lane maxima */
#define CHUNK 4096         /* scores per threshold estimate */

#define BATCH_FLOATS 65536 /* score block of sgbd_topk_users, 256 KiB */

/* ---- bitsets ---------------------------------------------------------- */

uint64_t *sgbd_bitset_new(size_t n_bits)
{
    size_t words = sgbd_bitset_words(n_bits);

    return calloc(words ? words : 1, sizeof(uint64_t));
}

void sgbd_bitset_free(uint64_t *b)
{
    free(b);
}

void sgbd_bitset_or(uint64_t *dst, const uint64_t *src, size_t n_bits)
{
    for (size_t w = 0; w < sgbd_bitset_words(n_bits); w++)
        dst[w] |= src[w];
}

size_t sgbd_bitset_count(const uint64_t *b, size_t n_bits)
{
    size_t full = n_bits / 64, n = 0;

    for (size_t w = 0; w < full; w++)
        n += (size_t)__builtin_popcountll(b[w]);
    if (n_bits % 64)
        n += (size_t)__builtin_popcountll(b[full] &
                                          (((uint64_t)1 << (n_bits % 64)) -
                                           1));
    return n;
}

/* ---- keys --------------------------------------------------------------- */

/*
 * key = ord(score) << 32 | (2^32 - 1 - index): ord maps float order onto
 * unsigned order (flip all bits of negatives, set the sign bit of
 * positives), so a larger key is a higher score, or the same score with
 * a lower index. -0 is made +0 first so it ties with +0.
 */
static inline uint64_t make_key(float s, size_t i)
{
    uint32_t b;

    s = s + 0.0f;   /* -0 + +0 is +0 */
    memcpy(&b, &s, sizeof(b));
    b ^= (uint32_t)((int32_t)b >> 31) | 0x80000000u;
    return (uint64_t)b << 32 | (UINT32_MAX - (uint32_t)i);
}

static inline float key_score(uint64_t key)
{
    uint32_t b = (uint32_t)(key >> 32);
    float s;

    b = (b & 0x80000000u) ? (b & 0x7fffffffu) : ~b;
    memcpy(&s, &b, sizeof(s));
    return s;
}

static inline uint32_t key_index(uint64_t key)
{
    return UINT32_MAX - (uint32_t)key;
}

static inline void swap_keys(uint64_t *a, size_t i, size_t j)
{
    uint64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/*
 * Partition a[lo, hi) (hi - lo >= 3, distinct keys) around the median of
 * a[lo], a[mid], a[hi - 1]: returns p with a[lo, p) above a[p], the
 * pivot, and a[p + 1, hi) below it. Branch-free Lomuto: every element is
 * swapped into place and the boundary advances by the comparison, since
 * comparisons of random keys are coin flips a branch predictor loses.
 */
static size_t partition_desc(uint64_t *a, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2, last = hi - 1, store = lo;
    uint64_t x = a[lo], y = a[mid], z = a[last];
    size_t m = (x > y) == (y > z) ? mid : (y > x) == (x > z) ? lo : last;

    swap_keys(a, m, last);
    uint64_t pivot = a[last];
    for (size_t i = lo; i < last; i++) {
        uint64_t v = a[i];
        a[i] = a[store];
        a[store] = v;
        store += v > pivot;
    }
    swap_keys(a, store, last);
    return store;
}

static void insertion_desc(uint64_t *a, size_t lo, size_t hi)
{
    for (size_t i = lo + 1; i < hi; i++) {
        uint64_t v = a[i];
        size_t j = i;
        for (; j > lo && a[j - 1] < v; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

/* Move the k largest keys of a[0, n) to a[0, k), in no order. */
static void select_desc(uint64_t *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n;

    while (hi - lo > 8) {
        size_t p = partition_desc(a, lo, hi);
        if (p + 1 == k)
            return;
        if (k <= p)
            hi = p;
        else
            lo = p + 1;
    }
    insertion_desc(a, lo, hi);
}

static void sort_desc(uint64_t *a, size_t lo, size_t hi)
{
    while (hi - lo > 8) {
        size_t p = partition_desc(a, lo, hi);
        if (p - lo < hi - p) {
            sort_desc(a, lo, p);
            lo = p + 1;
        } else {
            sort_desc(a, p + 1, hi);
            hi = p;
        }
    }
    insertion_desc(a, lo, hi);
}

/* ---- streaming selection ------------------------------------------------ */

static inline uint64_t *key_buf(struct sgbd_topk *t)
{
    return t->heap_keys ? t->heap_keys : t->inline_keys;
}

int sgbd_topk_init(struct sgbd_topk *t, size_t k)
{
    size_t cap = 2 * k > 32 ? 2 * k : 32;

    t->k = k;
    t->n = 0;
    t->thr = 0;             /* below every key */
    t->thr_score = -INFINITY;
    t->heap_keys = NULL;
    t->cap = cap;
    if (cap <= SGBD_TOPK_INLINE)
        return 0;
    if (k > SIZE_MAX / 32)
        return -ENOMEM;
    t->heap_keys = malloc(cap * sizeof(uint64_t));
    if (!t->heap_keys)
        return -ENOMEM;
    t->cap = cap;
    return 0;
}

void sgbd_topk_deinit(struct sgbd_topk *t)
{
    if (!t)
        return;
    free(t->heap_keys);
    t->heap_keys = NULL;
    t->n = 0;
}

/* Raise the threshold; keys above thr all score at least thr_score. */
static inline void raise_thr(struct sgbd_topk *t, uint64_t thr,
                             float thr_score)
{
    if (thr > t->thr) {
        t->thr = thr;
        t->thr_score = thr_score;
    }
}

/* Keep the K best keys; the worst of them bounds the final K-th. */
static void cut(struct sgbd_topk *t, uint64_t *keys)
{
    uint64_t worst = UINT64_MAX;

    select_desc(keys, t->n, t->k);
    t->n = t->k;
    for (size_t j = 0; j < t->n; j++)
        worst = keys[j] < worst ? keys[j] : worst;
    raise_thr(t, worst, key_score(worst));
}

/* Whether any of bits [from, from + len) is set. */
static int range_has_bits(const uint64_t *bits, size_t from, size_t len)
{
    size_t end = from + len;

    for (size_t w = from >> 6; w <= (end - 1) >> 6; w++) {
        uint64_t m = bits[w];
        if (w == from >> 6)
            m &= ~(uint64_t)0 << (from & 63);
        if (w == (end - 1) >> 6 && (end & 63))
            m &= ~(~(uint64_t)0 << (end & 63));
        if (m)
            return 1;
    }
    return 0;
}

/* m (16) = lane-wise maxima of a span (16 rows of 16); NaN never wins. */
INLINE void span_lane_max(const float *restrict s, float *restrict m)
{
    vf16 acc = splat(-INFINITY);

    for (size_t r = 0; r < SPAN / LANES; r++) {
        acc = max_lanes(acc, load16(s + r * LANES));
    }
    memcpy(m, &acc, sizeof(acc));
}

/*
 * Lane maxima of a chunk's full spans: mx[s] for span s (n / SPAN of
 * them); eligible[s] when the span holds no excluded item.
 */
INLINE size_t chunk_maxima(const float *restrict scores, size_t n,
                           size_t base, const uint64_t *bits,
                           float (*mx)[LANES], unsigned char *eligible)
{
    size_t n_spans = n / SPAN;

    for (size_t sp = 0; sp < n_spans; sp++) {
        span_lane_max(scores + sp * SPAN, mx[sp]);
        eligible[sp] = !(bits && range_has_bits(bits, base + sp * SPAN,
                                                SPAN));
    }
    return n_spans;
}

/*
 * Threshold estimate for a chunk before scanning it. Lane l of a span is
 * a group of 16 scores; if K groups have a maximum of at least x, at
 * least K scores reach x, so the K-th largest group maximum is a lower
 * bound of the final K-th score: a safe threshold, and close to the true
 * one, so the scan appends few more than K keys. Spans holding excluded
 * items are left out (their maximum may be ineligible). The maxima that
 * reach the threshold are counted first: once it is high, few do, and
 * no key needs building.
 */
INLINE void estimate(struct sgbd_topk *t, float (*mx)[LANES],
                     const unsigned char *eligible, size_t n_spans)
{
    uint64_t keys[CHUNK / LANES];
    size_t n_keys = 0, i = 0;

    for (size_t sp = 0; sp < n_spans; sp++)
        if (eligible[sp])
            n_keys += (size_t)__builtin_popcount(hits16(mx[sp],
                                                        t->thr_score));
    if (n_keys <= t->k)
        return;
    n_keys = 0;
    for (size_t sp = 0; sp < n_spans; sp++) {
        if (!eligible[sp])
            continue;
        for (size_t l = 0; l < LANES; l++, i++) {
            keys[n_keys] = make_key(mx[sp][l], i);
            n_keys += mx[sp][l] >= t->thr_score;
        }
    }
    select_desc(keys, n_keys, t->k);
    uint64_t worst = UINT64_MAX;
    for (size_t j = 0; j < t->k; j++)
        worst = keys[j] < worst ? keys[j] : worst;
    raise_thr(t, (worst >> 32 << 32) - 1, key_score(worst));
}

/* Append score j if it beats the threshold and is not excluded. */
INLINE size_t append(struct sgbd_topk *t, uint64_t *keys, size_t held,
                     float s, size_t i, const uint64_t *bits)
{
    uint64_t key = make_key(s, i);

    if (s >= t->thr_score && key > t->thr &&
        !(bits && sgbd_bitset_test(bits, i)))
        keys[held++] = key;
    if (held >= t->cap) {
        t->n = held;
        cut(t, keys);
        held = t->n;
    }
    return held;
}

/* Whether any of the 64 scores at s reaches thr (never for NaN). */
INLINE int any64(const float *s, float thr)
{
    vf16 m = max_lanes(splat(-INFINITY), load16(s));
    float lanes[LANES];

    m = max_lanes(m, load16(s + 16));
    m = max_lanes(m, load16(s + 32));
    m = max_lanes(m, load16(s + 48));
    memcpy(lanes, &m, sizeof(m));
    return hits16(lanes, thr) != 0;
}

/* Append the scores of the 16 at j0 that reach the threshold. */
INLINE size_t scan16(struct sgbd_topk *t, uint64_t *keys, size_t held,
                     const float *scores, size_t j0, size_t base,
                     const uint64_t *bits)
{
    unsigned m = hits16(scores + j0, t->thr_score);

    while (m) {
        size_t j = j0 + (size_t)__builtin_ctz(m);
        m &= m - 1;
        held = append(t, keys, held, scores[j], base + j, bits);
    }
    return held;
}

/*
 * One vector compare per 16 scores gives a bit mask of those reaching
 * the threshold; only they are looked at. Once the threshold is near its
 * final value most masks are 0, so a span whose lane maxima miss it is
 * skipped whole, and the others are tested 64 scores at a time first
 * (the threshold only rises, so a skipped score could not have been
 * appended).
 */
INLINE void scan(struct sgbd_topk *t, const float *restrict scores,
                 size_t n, size_t base, const uint64_t *bits,
                 float (*mx)[LANES], size_t n_spans)
{
    uint64_t *keys = key_buf(t);
    size_t held = t->n, j0 = 0;

    for (size_t sp = 0; sp < n_spans; sp++) {
        if (!hits16(mx[sp], t->thr_score))
            continue;
        for (j0 = sp * SPAN; j0 < (sp + 1) * SPAN; j0 += 4 * LANES) {
            if (!any64(scores + j0, t->thr_score))
                continue;
            for (size_t q = j0; q < j0 + 4 * LANES; q += LANES)
                held = scan16(t, keys, held, scores, q, base, bits);
        }
    }
    for (j0 = n_spans * SPAN; j0 + LANES <= n; j0 += LANES)
        held = scan16(t, keys, held, scores, j0, base, bits);
    for (size_t j = j0; j < n; j++)
        held = append(t, keys, held, scores[j], base + j, bits);
    t->n = held;
}

KERNEL_CLONES
static void push_chunks(struct sgbd_topk *t, const float *restrict scores,
                        size_t n, size_t base, const uint64_t *bits)
{
    float mx[CHUNK / SPAN][LANES];
    unsigned char eligible[CHUNK / SPAN];

    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t len = n - c0 < CHUNK ? n - c0 : CHUNK;
        size_t n_spans = chunk_maxima(scores + c0, len, base + c0, bits, mx,
                                      eligible);
        estimate(t, mx, eligible, n_spans);
        scan(t, scores + c0, len, base + c0, bits, mx, n_spans);
    }
}

void sgbd_topk_push(struct sgbd_topk *t, const float *scores, size_t n,
                    size_t base, const uint64_t *exclude_bits)
{
    if (t->k > 0 && n > 0)
        push_chunks(t, scores, n, base, exclude_bits);
}

size_t sgbd_topk_finish(struct sgbd_topk *t, uint32_t *out_idx,
                        float *out_score)
{
    uint64_t *keys = key_buf(t);

    if (t->n > t->k)
        cut(t, keys);
    sort_desc(keys, 0, t->n);
    for (size_t j = 0; j < t->n; j++) {
        if (out_idx)
            out_idx[j] = key_index(keys[j]);
        if (out_score)
            out_score[j] = key_score(keys[j]);
    }
    return t->n;
}

void sgbd_topk_keys(uint64_t *keys, size_t n, size_t k)
{
    if (k > n)
        k = n;
    if (k == 0)
        return;
    if (k < n)
        select_desc(keys, n, k);
    sort_desc(keys, 0, k);
}

int sgbd_topk_select(const float *scores, size_t n, size_t k,
                     const uint64_t *exclude_bits, uint32_t *out_idx,
                     float *out_score)
{
    struct sgbd_topk t;
    int rc;

    if (k > INT_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "topk: k %zu is above %d", k,
                         INT_MAX);
    rc = sgbd_topk_init(&t, k);
    if (rc < 0)
        return rc;
    sgbd_topk_push(&t, scores, n, 0, exclude_bits);
    rc = (int)sgbd_topk_finish(&t, out_idx, out_score);
    sgbd_topk_deinit(&t);
    return rc;
}

/* ---- scoring ------------------------------------------------------------ */

/* acc (16) with lane l = sum of u[d] v[d] over d % 16 == l, ascending. */
INLINE vf16 dot_lanes(const float *u, const float *v, size_t d)
{
    size_t full = d / LANES * LANES;
    vf16 acc = {0};

    if (full > 0)
        acc = load16(u) * load16(v);
    for (size_t c = LANES; c < full; c += LANES)
        acc += load16(u + c) * load16(v + c);
    if (full < d)
        acc += load_part(u + full, d - full) * load_part(v + full, d - full);
    return acc;
}

/* Lanes [0, 8) of a, b folded (+ 8) then lanes of b after those of a. */
#define FOLD(x, y, lo, hi) (__builtin_shuffle(x, y, lo) + \
                            __builtin_shuffle(x, y, hi))

/*
 * Lane l of the result = sum of the 16 lanes of acc[l], for 16 vectors at
 * once: four rounds of pairwise folds (lane l + lane l + 8, then + 4, + 2,
 * + 1), so each item's sum follows the same tree wherever it sits in the
 * block.
 */
INLINE vf16 reduce16(const vf16 *acc)
{
    const vi16 l1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const vi16 h1 = {8, 9, 10, 11, 12, 13, 14, 15,
                     24, 25, 26, 27, 28, 29, 30, 31};
    const vi16 l2 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const vi16 h2 = {4, 5, 6, 7, 12, 13, 14, 15,
                     20, 21, 22, 23, 28, 29, 30, 31};
    const vi16 l3 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    const vi16 h3 = {2, 3, 6, 7, 10, 11, 14, 15,
                     18, 19, 22, 23, 26, 27, 30, 31};
    const vi16 l4 = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const vi16 h4 = {1, 3, 5, 7, 9, 11, 13, 15,
                     17, 19, 21, 23, 25, 27, 29, 31};
    vf16 r1[8], r2[4], r3[2];

    for (int p = 0; p < 8; p++)
        r1[p] = FOLD(acc[2 * p], acc[2 * p + 1], l1, h1);
    for (int p = 0; p < 4; p++)
        r2[p] = FOLD(r1[2 * p], r1[2 * p + 1], l2, h2);
    for (int p = 0; p < 2; p++)
        r3[p] = FOLD(r2[2 * p], r2[2 * p + 1], l3, h3);
    return FOLD(r3[0], r3[1], l4, h4);
}

/* dot_lanes() for D = 64 with u in four registers (the same sums). */
INLINE vf16 lanes64(vf16 u0, vf16 u1, vf16 u2, vf16 u3, const float *v)
{
    vf16 a = u0 * load16(v);

    a += u1 * load16(v + 16);
    a += u2 * load16(v + 32);
    a += u3 * load16(v + 48);
    return a;
}

/*
 * Scores of the 16 rows v + row[l] * vs. D = 64, every model's default,
 * keeps u in registers; full groups (row[l] = l, the hot loop) unroll so
 * that the rows are constant offsets and the sums go out in one store.
 */
INLINE vf16 group16(const float *u, const float *v, size_t vs, size_t d,
                    const size_t *row)
{
    vf16 acc[LANES];

    if (d == 64) {
        vf16 u0 = load16(u), u1 = load16(u + 16), u2 = load16(u + 32),
             u3 = load16(u + 48);
#pragma GCC unroll 16
        for (size_t l = 0; l < LANES; l++)
            acc[l] = lanes64(u0, u1, u2, u3, v + (row ? row[l] : l) * vs);
    } else {
        for (size_t l = 0; l < LANES; l++)
            acc[l] = dot_lanes(u, v + (row ? row[l] : l) * vs, d);
    }
    return reduce16(acc);
}

/*
 * out[i] = <u, v_i> for n rows of v (row stride vs), D = d. Items go in
 * groups of 16; a short last group repeats its last row and drops the
 * extra sums, so an item's score never depends on its position.
 */
KERNEL_CLONES
static void dot_rows(const float *restrict u, const float *restrict v,
                     size_t vs, size_t n, size_t d, float *restrict out)
{
    size_t i0 = 0, row[LANES];
    vf16 sums;

    for (; i0 + LANES <= n; i0 += LANES) {
        sums = group16(u, v + i0 * vs, vs, d, NULL);
        memcpy(out + i0, &sums, sizeof(sums));
    }
    if (i0 == n)
        return;
    for (size_t l = 0; l < LANES; l++)
        row[l] = l < n - i0 ? l : n - i0 - 1;
    sums = group16(u, v + i0 * vs, vs, d, row);
    memcpy(out + i0, &sums, (n - i0) * sizeof(float));
}

/* out[j] = <u, v_rows[j]> for n <= 16 listed rows, the same sums as
 * dot_rows() gives each of them. */
KERNEL_CLONES
static void dot_listed(const float *restrict u, const float *restrict v,
                       size_t vs, const size_t *rows, size_t n, size_t d,
                       float *restrict out)
{
    size_t row[LANES];
    vf16 sums;

    for (size_t l = 0; l < LANES; l++)
        row[l] = rows[l < n ? l : n - 1];
    sums = group16(u, v, vs, d, row);
    memcpy(out, &sums, n * sizeof(float));
}

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

/* s[i - base] = NaN for every set bit i of bits in [base, base + n). */
static void mask_nan(float *s, size_t n, size_t base, const uint64_t *bits)
{
    if (!bits || n == 0)
        return;
    for (size_t w = base >> 6; w <= (base + n - 1) >> 6; w++) {
        uint64_t m = bits[w];
        while (m) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(m);
            m &= m - 1;
            if (i >= base && i < base + n)
                s[i - base] = NAN;
        }
    }
}

int sgbd_topk_user(const float *u, struct sgbd_mat items, size_t k,
                   const uint64_t *exclude_bits, uint32_t *out_idx,
                   float *out_score)
{
    float block[CHUNK] __attribute__((aligned(64)));
    struct sgbd_topk t;
    int rc;

    if (k > INT_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "topk: k %zu is above %d", k,
                         INT_MAX);
    rc = sgbd_topk_init(&t, k);
    if (rc < 0)
        return rc;
    for (size_t i0 = 0; i0 < items.rows && k > 0; i0 += CHUNK) {
        size_t n = items.rows - i0 < CHUNK ? items.rows - i0 : CHUNK;
        dot_rows(u, sgbd_mat_row(items, i0), items.stride, n, items.cols,
                 block);
        mask_nan(block, n, i0, exclude_bits);
        sgbd_topk_push(&t, block, n, i0, NULL);
    }
    rc = (int)sgbd_topk_finish(&t, out_idx, out_score);
    sgbd_topk_deinit(&t);
    return rc;
}

/* ---- screened scoring ------------------------------------------------- */

#define SCREEN_MIN_ITEMS 2048      /* below, the plain scan is as fast */
#define SCREEN_STACK_ITEMS 16384   /* score buffer on the stack up to this */
#define SCREEN_MAX_DIM 1024        /* widths the kernel keeps u for */
#define SCREEN_MAX_SCORE 0x1p120   /* |u| |v| below: no sum can overflow */
#define BF16_REL_ERR 0x1p-8        /* rounding to nearest: half an ulp */
#define BF16_CUT_ERR 0x1p-7        /* truncation, where rounding overflows */

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

/*
 * E with |fl<u, v> - screened<u, v>| <= E for every item, from
 * sum_d |u_d v_d| <= ||u|| ||v|| (Cauchy-Schwarz):
 *   - rounding u and v to bfloat16: (rel_u + rel_v + rel_u rel_v) of it;
 *   - the float sums of each side: gamma_n of it, n = 2D roundings at
 *     most, for the exact side and the screened side;
 *   - values flushed to zero (below 2^-126) on the screened side, an
 *     absolute (sqrt(D) (||u|| + ||v||) + 2D) 2^-125 at most.
 * Inf or NaN when u is not finite; *big set when a sum could overflow.
 */
static double screen_error(const float *u, const struct sgbd_topk_screen *s,
                           int *big)
{
    double un = sqrt(sgbd_mat_dot(s->cols, u, u)), D = (double)s->cols;
    double gamma = 2.0 * D * 0x1p-24 / (1.0 - 2.0 * D * 0x1p-24);
    double rel = BF16_REL_ERR + s->rel_err + BF16_REL_ERR * s->rel_err;
    double e = (rel + 2.0 * gamma * (1.0 + rel)) * un * s->max_norm;

    e += (sqrt(D) * (un + s->max_norm) + 2.0 * D) * 0x1p-125;
    *big = !(un * s->max_norm < SCREEN_MAX_SCORE) || !(un < 0x1p100);
    return e * (1.0 + 0x1p-20);
}

/*
 * The 8-bit screen's bound for u, in screened units (screen8_query()),
 * with qp and *corr the query as its kernel takes it. The exact side
 * is the float scan: gamma_n ||u|| ||v|| as above, and its products'
 * underflow, 2^-150 each at most.
 */
static double screen8_error(const float *u, const struct sgbd_topk_screen *s,
                            uint32_t *qp, int32_t *corr)
{
    double un = sqrt(sgbd_mat_dot(s->cols, u, u)), D = (double)s->cols;
    double gamma = 2.0 * D * 0x1p-24 / (1.0 - 2.0 * D * 0x1p-24);
    double exact = gamma * un * s->max_norm + D * 0x1p-149;

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
 * for it (u not finite or zero, or a sum that could overflow). */
static double pack_query(const float *u, const struct sgbd_topk_screen *s,
                         int eight, uint32_t *words, int32_t *corr)
{
    int big;
    double err = screen_error(u, s, &big);

    if (!isfinite(err) || big)
        return NAN;
    if (eight)
        return screen8_error(u, s, words, corr);
    screen_pack(u, s->cols, words);
    return err;
}

/* Pass 1 for one user: its screened scores, a chunk at a time. */
static float screen_pass(struct packed p, const struct sgbd_topk_screen *s,
                         size_t k, const uint64_t *exclude_bits, float *sc,
                         float *gmax)
{
    for (size_t i0 = 0; i0 < s->rows; i0 += CHUNK) {
        size_t n = s->rows - i0 < CHUNK ? s->rows - i0 : CHUNK;

        screen_packed(p, s, i0 / LANES, (n + LANES - 1) / LANES, sc + i0);
        mask_nan(sc + i0, n, i0, exclude_bits);
    }
    return screen_reach(s->rows, k, sc, gmax);
}

/* Exact scores of the listed items into the selection, straight into
 * its buffer (the test a scan makes of each score). */
static void push_listed(struct sgbd_topk *t, const float *u,
                        struct sgbd_mat items, const size_t *list, size_t n)
{
    float exact[LANES];
    uint64_t *keys = key_buf(t);
    size_t held = t->n;

    dot_listed(u, items.data, items.stride, list, n, items.cols, exact);
    for (size_t j = 0; j < n; j++)
        held = append(t, keys, held, exact[j], list[j], NULL);
    t->n = held;
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
            push_listed(&t, u, items, list + j, n - j < LANES ? n - j : LANES);
    }
    rc = (int)sgbd_topk_finish(&t, out_idx, out_score);
    sgbd_topk_deinit(&t);
    return rc;
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

/* The checks both batch calls make of their arguments. */
static int check_batch(struct sgbd_mat users, struct sgbd_mat items,
                       size_t k)
{
    if (users.cols != items.cols)
        return sgbd_errf(SGBD_E_SHAPE, "topk_users: users (%zu, %zu) and "
                         "items (%zu, %zu) differ in width", users.rows,
                         users.cols, items.rows, items.cols);
    if (k > INT_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "topk: k %zu is above %d", k,
                         INT_MAX);
    return 0;
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
    if (items.rows >= SCREEN_MIN_ITEMS && k > 0 && k <= INT_MAX &&
        k <= items.rows / 8 && (p.eight || screen->v))
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
            push_listed(&t, u, items, list, LANES);
            n -= LANES;
            memcpy(list, list + LANES, n * sizeof(size_t));
        }
    }
    if (n > 0)
        push_listed(&t, u, items, list, n);
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
    int rc = check_batch(users, items, k), keep;

    if (rc == 0)
        rc = check_screen(screen, items);
    if (rc < 0)
        return rc;
    if (B == 0)
        return 0;
    if (items.rows < SCREEN_MIN_ITEMS || k == 0 || k > items.rows / 8 ||
        !(screen->v || screen->q8.v)) {
        for (size_t b = 0; b < B && rc >= 0; b++) {
            rc = sgbd_topk_user_screened(sgbd_mat_row(users, b), items,
                                         screen, k,
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

int sgbd_topk_users(struct sgbd_mat users, struct sgbd_mat items, size_t k,
                    const uint64_t *const *exclude_bits, uint32_t *out_idx,
                    float *out_score, size_t *out_n)
{
    struct sgbd_topk *t = NULL;
    struct sgbd_mat block = {0};
    size_t b_users = users.rows, per;
    int rc = check_batch(users, items, k);

    if (rc < 0)
        return rc;
    if (b_users == 0)
        return 0;
    per = BATCH_FLOATS / b_users / 64 * 64;
    per = per < 256 ? 256 : per;
    t = calloc(b_users, sizeof(*t));
    rc = t ? sgbd_mat_alloc(&block, b_users, per) : -ENOMEM;
    for (size_t b = 0; b < b_users && rc == 0; b++)
        rc = sgbd_topk_init(&t[b], k);
    if (rc < 0)
        goto out;

    for (size_t i0 = 0; i0 < items.rows && k > 0; i0 += per) {
        size_t n = items.rows - i0 < per ? items.rows - i0 : per;
        struct sgbd_mat s = {block.data, b_users, n, per};
        rc = sgbd_mat_gemm_nt(s, users, sgbd_mat_rows(items, i0, n), 1.0f,
                              0.0f);
        if (rc < 0)
            goto out;
        for (size_t b = 0; b < b_users; b++) {
            float *row = sgbd_mat_row(s, b);
            mask_nan(row, n, i0, exclude_bits ? exclude_bits[b] : NULL);
            sgbd_topk_push(&t[b], row, n, i0, NULL);
        }
    }
    for (size_t b = 0; b < b_users; b++)
        out_n[b] = sgbd_topk_finish(&t[b], out_idx + b * k,
                                    out_score + b * k);

out:
    for (size_t b = 0; t && b < b_users; b++)
        sgbd_topk_deinit(&t[b]);
    sgbd_mat_release(&block);
    free(t);
    return rc;
}
