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
 * The screened calls, which score most items from a smaller copy first,
 * are in screen.c and screen8.c; they come back here for exact scores.
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

#include "sgbd/err.h"
#include "simd.h"
#include "topk_impl.h"

/* n < 16 floats of p, the other lanes 0. */
INLINE vf16 load_part(const float *p, size_t n)
{
    vf16 v = {0};
    memcpy(&v, p, n * sizeof(float));
    return v;
}

#define SPAN 256           /* scores per span of lane maxima */

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

/* Exact scores of the listed items into the selection, straight into
 * its buffer (the test a scan makes of each score). */
void topk_push_rows(struct sgbd_topk *t, const float *u,
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

/* s[i - base] = NaN for every set bit i of bits in [base, base + n). */
void topk_mask_nan(float *s, size_t n, size_t base, const uint64_t *bits)
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
        topk_mask_nan(block, n, i0, exclude_bits);
        sgbd_topk_push(&t, block, n, i0, NULL);
    }
    rc = (int)sgbd_topk_finish(&t, out_idx, out_score);
    sgbd_topk_deinit(&t);
    return rc;
}

/* The checks both batch calls make of their arguments. */
int topk_check_batch(struct sgbd_mat users, struct sgbd_mat items, size_t k)
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

int sgbd_topk_users(struct sgbd_mat users, struct sgbd_mat items, size_t k,
                    const uint64_t *const *exclude_bits, uint32_t *out_idx,
                    float *out_score, size_t *out_n)
{
    struct sgbd_topk *t = NULL;
    struct sgbd_mat block = {0};
    size_t b_users = users.rows, per;
    int rc = topk_check_batch(users, items, k);

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
            topk_mask_nan(row, n, i0, exclude_bits ? exclude_bits[b] : NULL);
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
