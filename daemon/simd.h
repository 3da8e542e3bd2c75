/*
 * simd.h - what the hot kernels share to run at the machine's vector width
 * (internal to daemon/).
 *
 * The default build targets baseline x86-64 so that one binary runs
 * everywhere. KERNEL_CLONES compiles a function once per ISA level and
 * picks the best at load time. The kernels only multiply and add lane by
 * lane in a fixed order (no reassociation, and no contraction into FMA
 * under -std=c11), so every clone computes bitwise the same result.
 */
#ifndef SGBD_SIMD_H
#define SGBD_SIMD_H

#include <stdint.h>
#include <string.h>

/* Not under TSan: its runtime is not up yet when ifunc resolvers run. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
#define KERNEL_CLONES __attribute__((target_clones("default", "avx2", \
                                                   "avx512f")))
#else
#define KERNEL_CLONES
#endif

#define INLINE static inline __attribute__((always_inline))

/* Vectors never cross a real call: every helper taking one is inlined. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64))); /* masks, integers */

INLINE vf16 load16(const float *p)
{
    vf16 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* x where m is set (all ones: a vector compare's result), else y. */
INLINE vf16 select16(vi16 m, vf16 x, vf16 y)
{
    return (vf16)(((vi16)x & m) | ((vi16)y & ~m));
}

/* Lane-wise maximum of a and b; a NaN in b never wins. */
INLINE vf16 max_lanes(vf16 a, vf16 b)
{
    return select16(b > a, b, a);
}

/* An lvalue vector to p (a macro: a vector argument trips a GCC note). */
#define STORE16(p, v) memcpy((p), &(v), sizeof(vf16))

INLINE vf16 splat(float x)
{
    vf16 v = {0};
    return v + x;
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

/* The 16 bits of x rounded to the nearest bfloat16, ties to even, for a
 * finite x (within half a bfloat16 ulp of the float range it gives Inf;
 * the callers decide what to do with that and with NaN). */
INLINE uint32_t bf16_nearest(float x)
{
    uint32_t b;

    memcpy(&b, &x, sizeof(b));
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

#endif
