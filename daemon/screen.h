/*
 * screen.h - what the screened scoring of screen.c shares with the 8-bit
 * item copy of screen8.c (internal to daemon/).
 *
 * A single request screens every item of the catalogue and rescores
 * exactly only the few that come near its K-th best. The bfloat16 copy
 * takes 2 D bytes an item (900 KB at 7,050 x 64), more than the L2 cache
 * holds next to the serving path's own data, so each request streams it
 * from L3; the 8-bit copy takes D bytes and stays in L2. Batches read the
 * same copy, once per group of users. The bfloat16 copy is for CPUs
 * without the 8-bit kernel.
 */
#ifndef SGBD_SCREEN_H
#define SGBD_SCREEN_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/mat.h"
#include "sgbd/topk.h"

#define SCREEN8_MAX_DIM 1024 /* |p . q| <= 127^2 D stays exact in a float */

/*
 * Zeroed private pages for a screen, in 2 MiB pages where the kernel
 * gives them: every query streams the whole screen, and the hardware
 * prefetcher stops at each 4 KiB page boundary. *bytes gets the mapped
 * size, for munmap. NULL when the mapping fails.
 */
void *screen_pages(size_t want, size_t *bytes);

/* 1 when this CPU screens items of width d in 8 bits (AVX512-VNNI, d a
 * multiple of 4 up to SCREEN8_MAX_DIM). */
int screen8_supported(size_t d);

/* Build the 8-bit copy of items (I, D), finite values, D as above.
 * Returns 0 or -ENOMEM, with *s empty on error. */
int screen8_init(struct sgbd_topk_screen8 *s, struct sgbd_mat items);
void screen8_deinit(struct sgbd_topk_screen8 *s);

/*
 * Quantise the query u (D floats, finite) for the screen: qp (D / 4) its
 * packed signed bytes p, *corr what the kernel's unsigned item bytes add
 * (128 sum p). Returns E, in screened units, with
 *     |fl<u, x_i> - t p . q_i| <= t E   for every item i,
 * given exact_err, a bound on |fl<u, x_i> - <u, x_i>| (the float scan's
 * own rounding); NaN where u is zero and the screen cannot rank.
 */
double screen8_query(const struct sgbd_topk_screen8 *s, const float *u,
                     size_t d, double exact_err, uint32_t *qp,
                     int32_t *corr);

/* out[16 b + l] = p . q_{16 b + l} for the blocks b0 .. b0 + nb of the
 * screen, as floats (exact: integers below 2^24). */
void screen8_blocks(const uint32_t *qp, int32_t corr, const uint8_t *v,
                    size_t b0, size_t nb, size_t d, float *out);

/*
 * The batch's kernel: out[r ldo + c] = the largest of the 16 screened
 * scores of user r (qp + r ldq, corr[r], as screen8_query() made them)
 * in block b0 + c, for 4 users and nb <= 4 blocks, and the scores
 * themselves into sc (row stride lds) unless it is NULL.
 */
void screen8_tile(const uint32_t *qp, size_t ldq, const int32_t *corr,
                  const uint8_t *v, size_t b0, size_t nb, size_t d,
                  float *out, size_t ldo, float *sc, size_t lds);

/* The fold of 16 block maxima the batch kernels share. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define TILE_TARGET __attribute__((target("avx512f")))

/*
 * out[r ldo + c] = the largest lane of acc[r][c], all 16 at once: four
 * rounds halve the vectors, each folding two into one by taking the
 * larger of their matching halves (512 -> 256 -> 128 bits across lanes,
 * then 4 -> 2 -> 1 within them), 15 maxima in all where 16 separate
 * reductions take 64. Lane group r of the result then holds user r's 4
 * block maxima, stored as one 128-bit row.
 */
TILE_TARGET static inline void tile_maxima(const __m512 acc[4][4],
                                           float *out, size_t ldo)
{
    __m512 z[8], w[4], v[2], m;

    /* a[i] = acc[i % 4][i / 4]: then result lane group r is user r */
    for (int i = 0; i < 8; i++) {
        __m512 x = acc[(2 * i) % 4][(2 * i) / 4];
        __m512 y = acc[(2 * i + 1) % 4][(2 * i + 1) / 4];
        z[i] = _mm512_max_ps(_mm512_shuffle_f32x4(x, y, 0x44),
                             _mm512_shuffle_f32x4(x, y, 0xee));
    }
    for (int j = 0; j < 4; j++)
        w[j] = _mm512_max_ps(
            _mm512_shuffle_f32x4(z[2 * j], z[2 * j + 1], 0x88),
            _mm512_shuffle_f32x4(z[2 * j], z[2 * j + 1], 0xdd));
    for (int k = 0; k < 2; k++)
        v[k] = _mm512_max_ps(_mm512_shuffle_ps(w[2 * k], w[2 * k + 1], 0x44),
                             _mm512_shuffle_ps(w[2 * k], w[2 * k + 1], 0xee));
    m = _mm512_max_ps(_mm512_shuffle_ps(v[0], v[1], 0x88),
                      _mm512_shuffle_ps(v[0], v[1], 0xdd));
    _mm_storeu_ps(out, _mm512_extractf32x4_ps(m, 0));
    _mm_storeu_ps(out + ldo, _mm512_extractf32x4_ps(m, 1));
    _mm_storeu_ps(out + 2 * ldo, _mm512_extractf32x4_ps(m, 2));
    _mm_storeu_ps(out + 3 * ldo, _mm512_extractf32x4_ps(m, 3));
}

#endif
#endif
