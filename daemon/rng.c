/*
 * rng.c - xoshiro256** (Blackman and Vigna, 2018) seeded with splitmix64.
 */
#include "sgbd/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void sgbd_rng_init(struct sgbd_rng *r, uint64_t seed, uint64_t stream)
{
    /* Mix the stream into the seed first so (seed, stream) pairs that
     * differ in either give unrelated states. */
    uint64_t x = seed ^ (0xd1b54a32d192ed03ULL * (stream + 1));
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t sgbd_rng_u64(struct sgbd_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Lemire's multiply-and-reject: unbiased without a division per draw. */
uint64_t sgbd_rng_below(struct sgbd_rng *r, uint64_t n)
{
    unsigned __int128 m = (unsigned __int128)sgbd_rng_u64(r) * n;
    uint64_t low = (uint64_t)m;

    if (low < n) {
        uint64_t floor = -n % n;
        while (low < floor) {
            m = (unsigned __int128)sgbd_rng_u64(r) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double sgbd_rng_uniform(struct sgbd_rng *r)
{
    return (double)(sgbd_rng_u64(r) >> 11) * 0x1.0p-53;
}

/* Box-Muller; the second value of each pair is dropped to keep the stream
 * state the only state. */
double sgbd_rng_normal(struct sgbd_rng *r)
{
    double u1, u2;

    do
        u1 = sgbd_rng_uniform(r);
    while (u1 <= 0.0);
    u2 = sgbd_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void sgbd_rng_shuffle_u32(struct sgbd_rng *r, uint32_t *a, uint64_t n)
{
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = sgbd_rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
