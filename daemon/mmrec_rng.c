/*
 * mmrec_rng.c - MMRec's Mersenne Twisters and the draws it makes from
 * them (see mmrec_rng.h). MT19937 as Matsumoto and Nishimura define it;
 * the seeding and the draws as CPython 3.11, NumPy 1.24 and torch do.
 */
#include "sgbd/mmrec_rng.h"

#include <math.h>
#include <string.h>

#include "sgbd/err.h"

#define MT_M 397
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

void sgbd_mt_seed(struct sgbd_mt19937 *m, uint32_t seed)
{
    m->s[0] = seed;
    for (uint32_t k = 1; k < SGBD_MT_N; k++)
        m->s[k] = 1812433253u * (m->s[k - 1] ^ (m->s[k - 1] >> 30)) + k;
    m->i = SGBD_MT_N;
}

/* init_by_array of the reference implementation, which CPython uses. */
static void seed_by_array(struct sgbd_mt19937 *m, const uint32_t *key,
                          size_t len)
{
    size_t i = 1, j = 0;

    sgbd_mt_seed(m, 19650218u);
    for (size_t k = SGBD_MT_N > len ? SGBD_MT_N : len; k; k--) {
        m->s[i] = (m->s[i] ^ ((m->s[i - 1] ^ (m->s[i - 1] >> 30)) *
                              1664525u)) +
                  key[j] + (uint32_t)j;
        i++, j++;
        if (i >= SGBD_MT_N)
            m->s[0] = m->s[SGBD_MT_N - 1], i = 1;
        if (j >= len)
            j = 0;
    }
    for (size_t k = SGBD_MT_N - 1; k; k--) {
        m->s[i] = (m->s[i] ^ ((m->s[i - 1] ^ (m->s[i - 1] >> 30)) *
                              1566083941u)) -
                  (uint32_t)i;
        i++;
        if (i >= SGBD_MT_N)
            m->s[0] = m->s[SGBD_MT_N - 1], i = 1;
    }
    m->s[0] = 0x80000000u; /* a non-zero initial state */
    m->i = SGBD_MT_N;
}

void sgbd_mt_seed_python(struct sgbd_mt19937 *m, uint64_t seed)
{
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};

    seed_by_array(m, key, key[1] ? 2 : 1);
}

static void regenerate(struct sgbd_mt19937 *m)
{
    for (size_t k = 0; k < SGBD_MT_N; k++) {
        uint32_t y = (m->s[k] & MT_UPPER) |
                     (m->s[(k + 1) % SGBD_MT_N] & MT_LOWER);
        m->s[k] = m->s[(k + MT_M) % SGBD_MT_N] ^ (y >> 1) ^
                  (y & 1u ? 0x9908b0dfu : 0u);
    }
    m->i = 0;
}

uint32_t sgbd_mt_u32(struct sgbd_mt19937 *m)
{
    uint32_t y;

    if (m->i >= SGBD_MT_N)
        regenerate(m);
    y = m->s[m->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

uint32_t sgbd_py_randbelow(struct sgbd_mt19937 *m, uint32_t n)
{
    int bits = 32 - __builtin_clz(n); /* n.bit_length(), n >= 1 */
    uint32_t r;

    do
        r = sgbd_mt_u32(m) >> (32 - bits);
    while (r >= n);
    return r;
}

void sgbd_py_shuffle_u32(struct sgbd_mt19937 *m, uint32_t *a, size_t n)
{
    for (size_t i = n; i-- > 1;) {
        size_t j = sgbd_py_randbelow(m, (uint32_t)(i + 1));
        uint32_t t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

void sgbd_np_shuffle_u32(struct sgbd_mt19937 *m, uint32_t *a, size_t n)
{
    for (size_t i = n; i-- > 1;) {
        uint32_t mask = (uint32_t)i, j;
        mask |= mask >> 1, mask |= mask >> 2, mask |= mask >> 4;
        mask |= mask >> 8, mask |= mask >> 16;
        do
            j = sgbd_mt_u32(m) & mask;
        while (j > i);
        uint32_t t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

/* torch's x (to - from) + from is compiled into one fused multiply-add
 * where the CPU has one; in double it rounds once too, and gives the
 * same floats (checked on 5,000 values of torch 1.13). */
float sgbd_torch_uniform(struct sgbd_mt19937 *m, float from, float to)
{
    double x = (double)(sgbd_mt_u32(m) & 0xffffffu) * 0x1p-24;

    return (float)(x * ((double)to - (double)from) + (double)from);
}

static int first_undrawable(const struct sgbd_params *p)
{
    for (int k = 0; k < p->n_tensors; k++)
        if (p->t[k].init != SGBD_INIT_XAVIER_UNIFORM &&
            p->t[k].init != SGBD_INIT_ZERO)
            return k;
    return -1;
}

int sgbd_params_mmrec_drawable(const struct sgbd_params *p)
{
    return first_undrawable(p) < 0;
}

int sgbd_params_init_mmrec(const struct sgbd_params *p, float *arena,
                           uint32_t seed)
{
    struct sgbd_mt19937 torch;
    int bad = first_undrawable(p);

    if (bad >= 0)
        return sgbd_errf(SGBD_E_UNSUPPORTED, "mmrec streams: tensor %s "
                         "is not Xavier-uniform; only models whose "
                         "tensors all are (lightgcn) follow MMRec's draws",
                         p->t[bad].name);
    sgbd_mt_seed(&torch, seed);
    for (int k = 0; k < p->n_tensors; k++) {
        const struct sgbd_tensor *t = &p->t[k];
        float *x = arena + t->offset;
        size_t n = t->rows * t->cols;
        /* as torch computes it, in double: gain 1 */
        double a = sqrt(3.0) * sqrt(2.0 / (double)(t->fan_in + t->fan_out));

        if (t->init == SGBD_INIT_ZERO) {
            memset(x, 0, n * sizeof(float));
            continue;
        }
        for (size_t i = 0; i < n; i++)
            x[i] = sgbd_torch_uniform(&torch, (float)-a, (float)a);
    }
    return 0;
}
