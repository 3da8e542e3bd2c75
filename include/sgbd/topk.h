/*
 * topk.h - the K best-scoring items, with exclusion bitsets, and the
 * scoring engine that serving calls.
 *
 * Order everywhere: higher score first, equal scores by lower item index.
 * NaN scores are never selected and -0 ties with +0; excluded items are
 * never selected, so a result may hold fewer than K items (the count is
 * returned).
 *
 * Ownership: the caller provides every output array; nothing here keeps
 * a pointer after returning. Everything but sgbd_topk_users() is serial
 * and touches only its arguments, so any number of threads (HTTP workers
 * included) may call it at once.
 */
#ifndef SGBD_TOPK_H
#define SGBD_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/mat.h"

/* ---- bitsets: bit i is bit (i % 64) of word i / 64 ------------------- */

static inline size_t sgbd_bitset_words(size_t n_bits)
{
    return (n_bits + 63) / 64;
}

static inline int sgbd_bitset_test(const uint64_t *b, size_t i)
{
    return (int)((b[i >> 6] >> (i & 63)) & 1);
}

static inline void sgbd_bitset_set(uint64_t *b, size_t i)
{
    b[i >> 6] |= (uint64_t)1 << (i & 63);
}

static inline void sgbd_bitset_clear(uint64_t *b, size_t i)
{
    b[i >> 6] &= ~((uint64_t)1 << (i & 63));
}

/* A zeroed bitset of n_bits bits; NULL on ENOMEM. Free with _free. */
uint64_t *sgbd_bitset_new(size_t n_bits);
void sgbd_bitset_free(uint64_t *b);

/* dst |= src over the first n_bits bits (whole words). */
void sgbd_bitset_or(uint64_t *dst, const uint64_t *src, size_t n_bits);

/* Number of set bits among the first n_bits. */
size_t sgbd_bitset_count(const uint64_t *b, size_t n_bits);

/* ---- streaming selection --------------------------------------------- */

/*
 * A running top-K over scores pushed in blocks. Candidates go into a key
 * buffer of 2K (score and index packed so one integer compare orders
 * them); when it fills, a quickselect keeps the K best and their worst
 * becomes the threshold later scores must beat. Each chunk of 4096
 * scores first raises the threshold to a safe lower bound of the final
 * K-th score (from maxima of 16-score groups), so the scan, one vector
 * compare per 16 scores, appends few more than K keys. For K <=
 * SGBD_TOPK_INLINE / 2 the buffer lives inside the struct (no allocation:
 * fine on a serving thread's stack; the struct is about 4 KiB); larger K
 * allocate it. Lifecycle: init, push..., finish (once), deinit.
 */
#define SGBD_TOPK_INLINE 512

struct sgbd_topk {
    size_t k;           /* K */
    size_t n, cap;      /* keys held, buffer capacity */
    uint64_t thr;       /* a key must exceed this; 0 before the first cut */
    float thr_score;    /* score part of thr (-inf before the first cut) */
    uint64_t *heap_keys;                     /* (cap) when allocated */
    uint64_t inline_keys[SGBD_TOPK_INLINE];  /* (cap) otherwise */
};

/* Start a selection of the k best. Returns 0 or -ENOMEM. */
int sgbd_topk_init(struct sgbd_topk *t, size_t k);

/*
 * Offer scores[j] (n entries) as item base + j; base + n <= 2^32.
 * exclude_bits, when not NULL, is indexed by item (base + j), not by j.
 * Blocks may come in any order; the tie rule still holds.
 */
void sgbd_topk_push(struct sgbd_topk *t, const float *scores, size_t n,
                    size_t base, const uint64_t *exclude_bits);

/*
 * Write the selection best first into out_idx, out_score (K entries
 * each, either may be NULL) and return its length, min(K, eligible
 * items pushed). Call once, after the last push.
 */
size_t sgbd_topk_finish(struct sgbd_topk *t, uint32_t *out_idx,
                        float *out_score);

/* Free what init allocated; NULL and repeated calls are fine. */
void sgbd_topk_deinit(struct sgbd_topk *t);

/*
 * The k best of scores (n items), out_idx/out_score (k) best first.
 * exclude_bits (n bits) or NULL. Returns the count, min(k, eligible),
 * or -ENOMEM (only for k > SGBD_TOPK_INLINE / 2), or SGBD_E_LIMIT for
 * k > INT_MAX.
 */
int sgbd_topk_select(const float *scores, size_t n, size_t k,
                     const uint64_t *exclude_bits, uint32_t *out_idx,
                     float *out_score);

/*
 * Move the min(k, n) largest of n distinct 64-bit keys to keys[0, k),
 * sorted descending (quickselect, then a sort of those k); the rest of
 * the array is left in no order. For callers that pack their own order
 * into a key (e.g. count << 32 | ~id for "count desc, id asc").
 */
void sgbd_topk_keys(uint64_t *keys, size_t n, size_t k);

/* ---- scoring --------------------------------------------------------- */

/*
 * Top-k for one user: score u (D = items.cols) against every row of
 * items (I, D) with a serial vectorised dot kernel over item blocks, skip
 * excluded items (bitset of I bits or NULL), select. No BLAS, no pool:
 * safe for concurrent HTTP threads. Scores are summed in a fixed order,
 * identical on every x86 ISA level, but not bitwise equal to the sgemm
 * scores of sgbd_topk_users(). Returns the count or an error, as
 * sgbd_topk_select().
 */
int sgbd_topk_user(const float *u, struct sgbd_mat items, size_t k,
                   const uint64_t *exclude_bits, uint32_t *out_idx,
                   float *out_score);

/*
 * Copies of an item matrix in fewer bits, to screen items before exact
 * scoring, and the largest row norm, which bounds how far a screened
 * score can be from the exact one. In 8 bits each column c is scaled by
 * its largest magnitude over 127 and rounded to a signed byte q_ic: a
 * quarter of the bytes, so that at Baby size a request reads the
 * catalogue from L2 rather than L3. In bfloat16, for CPUs without the
 * 8-bit kernel, every float is rounded to its top 16 bits (nearest, ties
 * to even): half the bytes.
 */
struct sgbd_topk_screen8 {
    uint8_t *v;             /* rows x cols, rows padded to 16: q + 128, in
                               blocks laid out for the kernel (screen8.c) */
    float *scale;           /* (cols): items[i][c] ~ scale[c] q_ic */
    double eps_max;         /* max_i ||items[i] / scale - q_i||_2, up */
    double q_max;           /* max_i ||q_i||_2, rounded up */
    size_t bytes;           /* mapped for v */
};

struct sgbd_topk_screen {
    uint16_t *v;            /* rows x cols, rows padded to 16, in blocks
                               laid out for the kernel (screen.c); NULL
                               without AVX512-BF16 */
    size_t rows, cols;
    double max_norm;        /* max_i ||items[i]||_2, rounded up */
    double rel_err;         /* per-value relative error of the copy */
    size_t bytes;           /* mapped for v */
    struct sgbd_topk_screen8 q8; /* q8.v NULL without AVX512-VNNI */
};

/* 1 when this CPU screens items of width dim in hardware: in bfloat16
 * (AVX512-BF16, dim a multiple of 32 up to 1024) or in 8 bits
 * (AVX512-VNNI, dim a multiple of 4 up to 1024). Elsewhere the screened
 * calls below are plain scans, and a screen is not worth building. */
int sgbd_topk_screen_supported(size_t dim);

/*
 * Build the screen of items (I, D), whose values must be finite and D
 * even. Returns 0, SGBD_E_SHAPE
 * for a NaN or Inf (detail names the element) or an odd D, or -ENOMEM;
 * on error *s is empty and _deinit is safe.
 */
int sgbd_topk_screen_init(struct sgbd_topk_screen *s, struct sgbd_mat items);

/* The copies of a screen, for sgbd_topk_screen_init_copies(). */
#define SGBD_SCREEN_BF16 1
#define SGBD_SCREEN_8BIT 2

/*
 * As sgbd_topk_screen_init(), with the copies named in copies (those this
 * CPU has a kernel for). sgbd_topk_screen_init() builds the one the
 * screened calls read: the 8-bit copy where there is a kernel for it,
 * else the bfloat16 one. Tests and benchmarks build both to compare them.
 */
int sgbd_topk_screen_init_copies(struct sgbd_topk_screen *s,
                                 struct sgbd_mat items, int copies);
void sgbd_topk_screen_deinit(struct sgbd_topk_screen *s);
size_t sgbd_topk_screen_bytes(const struct sgbd_topk_screen *s);

/*
 * The same result as sgbd_topk_user() (the same items, order and scores,
 * bit for bit), reading a quarter of the bytes (the 8-bit copy) or half
 * (the bfloat16 one, where the CPU has no 8-bit kernel): every item is
 * scored from the screen, and only the items whose screened score comes
 * within twice the error bound of the K-th best are scored again from
 * items, exactly. The bounds: |<u, v> - <bf16(u), bf16(v)>| <= (2^-7 +
 * slack) ||u|| ||v||, and for 8 bits the one derived in screen8.c from
 * the copy's measured rounding. screen must have been built from items. The plain scan answers instead
 * where the screen cannot help or the bound does not hold: fewer than
 * 2048 items, k above I / 8, no hardware support, u not finite or scores
 * near the float range. Serial; allocates a score buffer of I floats for
 * catalogues above 16 Ki items (a failed allocation falls back to the
 * plain scan too). Returns as sgbd_topk_user().
 */
int sgbd_topk_user_screened(const float *u, struct sgbd_mat items,
                            const struct sgbd_topk_screen *screen, size_t k,
                            const uint64_t *exclude_bits, uint32_t *out_idx,
                            float *out_score);

/*
 * Top-k for B users at once from the screen: for each user the same
 * result as sgbd_topk_user() (and so as sgbd_topk_user_screened()), bit
 * for bit. The screen is read once per group of users that fits 4 MiB
 * of scores (148 users at 7,050 items, 16 at 63,000) rather than once per
 * user. Serial, no BLAS, no pool: safe on HTTP threads. Where the screen
 * cannot help (as for one user) each user gets the plain scan. Outputs
 * and errors as sgbd_topk_users(), plus SGBD_E_SHAPE for a screen not
 * built from items.
 */
int sgbd_topk_users_screened(struct sgbd_mat users, struct sgbd_mat items,
                             const struct sgbd_topk_screen *screen, size_t k,
                             const uint64_t *const *exclude_bits,
                             uint32_t *out_idx, float *out_score,
                             size_t *out_n);

/*
 * Top-k for B users at once: users (B, D) against items (I, D) with one
 * sgemm_nt per block of items (so the score block stays in cache), then
 * a selection per user. exclude_bits is NULL or (B) pointers, each NULL
 * or a bitset of I bits. out_idx, out_score (B, k) row-major; out_n (B)
 * receives each user's count. The sgemm runs on the compute pool when it
 * is idle (sgbd_mat_set_threads()), else on the calling thread. Returns 0, SGBD_E_SHAPE when users.cols !=
 * items.cols, SGBD_E_LIMIT for k > INT_MAX, or -ENOMEM.
 */
int sgbd_topk_users(struct sgbd_mat users, struct sgbd_mat items, size_t k,
                    const uint64_t *const *exclude_bits, uint32_t *out_idx,
                    float *out_score, size_t *out_n);

#endif
