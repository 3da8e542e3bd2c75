/*
 * mmrec_rng.h - MMRec's own random draws, for runs that must follow a
 * reference run of MMRec seed for seed.
 *
 * MMRec's init_seed(s) seeds three Mersenne Twisters (MT19937): Python's
 * random module (init_by_array over the 32-bit words of s), NumPy's
 * global RandomState and torch's CPU generator (both init_genrand(s)).
 * A LightGCN run then draws, in this order:
 *
 *   Python  once, a shuffle of the sorted distinct training items
 *           (random.shuffle in TrainDataLoader.pretrain_setup);
 *   torch   the user, then the item embedding, Xavier-uniform, one
 *           32-bit output per value (torch's uniform_real);
 *   NumPy   every epoch, a permutation of the training rows
 *           (DataFrame.sample(frac=1): RandomState.permutation);
 *   Python  per batch row, in order, one negative: items[randbelow(n)],
 *           drawn again while the user trained on it (random.sample).
 *
 * Each function below is the named library's algorithm, bit for bit
 * (tests/test_mmrec_rng.c holds values printed by Python 3.11 and NumPy
 * 1.24). The rest of a run (float sums in another order) still differs,
 * so results agree with MMRec's closely, not to the bit.
 */
#ifndef SGBD_MMREC_RNG_H
#define SGBD_MMREC_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/params.h"

#define SGBD_MT_N 624

struct sgbd_mt19937 {
    uint32_t s[SGBD_MT_N];
    size_t i; /* next state word to temper; SGBD_MT_N: regenerate */
};

/* init_genrand(seed): NumPy's RandomState(seed) and torch's generator. */
void sgbd_mt_seed(struct sgbd_mt19937 *m, uint32_t seed);

/* Python's random.seed(seed) for a non-negative int: init_by_array over
 * its 32-bit words, least significant first. */
void sgbd_mt_seed_python(struct sgbd_mt19937 *m, uint64_t seed);

/* The next tempered 32-bit output (genrand_uint32). */
uint32_t sgbd_mt_u32(struct sgbd_mt19937 *m);

/* Python's random._randbelow(n), 1 <= n <= 2^32 - 1: getrandbits of
 * n's bit length, drawn again while >= n. */
uint32_t sgbd_py_randbelow(struct sgbd_mt19937 *m, uint32_t n);

/* Python's random.shuffle of a list (from the top: j = randbelow(i + 1)). */
void sgbd_py_shuffle_u32(struct sgbd_mt19937 *m, uint32_t *a, size_t n);

/* NumPy's legacy RandomState.shuffle of a 1-D array (from the top:
 * j = random_interval(i), the 32-bit output masked to i's bit length,
 * drawn again while > i); n < 2^32. */
void sgbd_np_shuffle_u32(struct sgbd_mt19937 *m, uint32_t *a, size_t n);

/* torch's uniform_(from, to) on a float tensor, one value:
 * (r & (2^24 - 1)) 2^-24 (to - from) + from, rounded once to float. */
float sgbd_torch_uniform(struct sgbd_mt19937 *m, float from, float to);

/* Whether every tensor of p is Xavier-uniform or zero, so that
 * sgbd_params_init_mmrec can draw it. */
int sgbd_params_mmrec_drawable(const struct sgbd_params *p);

/*
 * torch.manual_seed(seed), then every tensor of p in declaration order
 * as MMRec's LightGCN initialises its ParameterDict: Xavier-uniform
 * (nn.init.xavier_uniform_, bound sqrt(3) sqrt(2 / (fan_in + fan_out)))
 * or zero. Returns 0, or SGBD_E_UNSUPPORTED naming the first tensor with
 * another initialiser (arena untouched).
 */
int sgbd_params_init_mmrec(const struct sgbd_params *p, float *arena,
                           uint32_t seed);

#endif
