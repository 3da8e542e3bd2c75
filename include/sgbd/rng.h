/*
 * rng.h - seeded random streams (xoshiro256**, seeded by splitmix64).
 *
 * One seed gives many independent streams: sgbd_rng_init(&r, seed, stream)
 * with a distinct stream number per purpose (initialisation, shuffling,
 * negative sampling, noise), so adding a draw in one place never shifts the
 * numbers another place sees. A stream is a small value type; it is not
 * thread-safe, give each thread its own.
 */
#ifndef SGBD_RNG_H
#define SGBD_RNG_H

#include <stdint.h>

struct sgbd_rng {
    uint64_t s[4];
};

/* Stream numbers used across the project. */
enum sgbd_rng_stream {
    SGBD_RNG_INIT = 1,     /* parameter initialisation */
    SGBD_RNG_SHUFFLE = 2,  /* epoch permutation of training rows */
    SGBD_RNG_NEGATIVE = 3, /* BPR negative sampling */
    SGBD_RNG_GRAPH = 4,    /* per-epoch graph resampling and pruning */
    SGBD_RNG_NOISE = 5,    /* feature noise at evaluation */
    SGBD_RNG_SYNTH = 6,    /* synthetic catalogues */
    SGBD_RNG_SPLIT = 7,    /* holdout selection */
    SGBD_RNG_PROBE = 8,    /* loss-landscape directions */
};

void sgbd_rng_init(struct sgbd_rng *r, uint64_t seed, uint64_t stream);
uint64_t sgbd_rng_u64(struct sgbd_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t sgbd_rng_below(struct sgbd_rng *r, uint64_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double sgbd_rng_uniform(struct sgbd_rng *r);
/* Standard normal N(0, 1). */
double sgbd_rng_normal(struct sgbd_rng *r);
/* Fisher-Yates shuffle of a[0..n). */
void sgbd_rng_shuffle_u32(struct sgbd_rng *r, uint32_t *a, uint64_t n);

#endif
