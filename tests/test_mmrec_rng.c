/* test_mmrec_rng.c - MMRec's generators, against the libraries' output. */
/* ctest: labels=unit timeout=60 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/mmrec_rng.h"
#include "sgbd/params.h"

/* The reference MT19937 (init_genrand(5489)): outputs 1 and 10000. */
static void test_mmrec_rng_mt19937_reference(void)
{
    struct sgbd_mt19937 m;
    uint32_t x = 0;

    sgbd_mt_seed(&m, 5489);
    CHECK(sgbd_mt_u32(&m) == 3499211612u);
    for (int k = 1; k < 10000; k++)
        x = sgbd_mt_u32(&m);
    CHECK(x == 4123659995u);
}

/* random.seed(999); [random.getrandbits(32) for _ in range(4)], and
 * the same for 2**40 + 5 (a two-word key). */
static void test_mmrec_rng_python_seeding(void)
{
    static const uint32_t want[4] = {3355859300u, 2915466388u, 343879192u,
                                     3850240720u};
    struct sgbd_mt19937 m;

    sgbd_mt_seed_python(&m, 999);
    for (int k = 0; k < 4; k++)
        CHECK(sgbd_mt_u32(&m) == want[k]);
    sgbd_mt_seed_python(&m, ((uint64_t)1 << 40) + 5);
    CHECK(sgbd_mt_u32(&m) == 2166296868u);
    CHECK(sgbd_mt_u32(&m) == 2220160828u);
}

/* random.Random(999)._randbelow(7050) five times; random.seed(7) then
 * random.shuffle(list(range(10))). */
static void test_mmrec_rng_python_draws(void)
{
    static const uint32_t below[5] = {6400, 5560, 655, 4651, 4700};
    static const uint32_t shuffled[10] = {8, 3, 1, 4, 7, 0, 9, 6, 2, 5};
    struct sgbd_mt19937 m;
    uint32_t a[10];

    sgbd_mt_seed_python(&m, 999);
    for (int k = 0; k < 5; k++)
        CHECK_INT(sgbd_py_randbelow(&m, 7050), below[k]);
    for (uint32_t k = 0; k < 10; k++)
        a[k] = k;
    sgbd_mt_seed_python(&m, 7);
    sgbd_py_shuffle_u32(&m, a, 10);
    for (int k = 0; k < 10; k++)
        CHECK_INT(a[k], shuffled[k]);
}

/* np.random.RandomState(999).randint(0, 2**32, 4, dtype=np.uint32) (the
 * raw outputs); np.random.seed(7); np.random.permutation(10), which is
 * also pandas' DataFrame.sample(frac=1) order. */
static void test_mmrec_rng_numpy_draws(void)
{
    static const uint32_t raw[4] = {3450697152u, 648491356u, 2265690981u,
                                    4277223905u};
    static const uint32_t perm[10] = {8, 5, 0, 2, 1, 9, 7, 3, 6, 4};
    struct sgbd_mt19937 m;
    uint32_t a[10];

    sgbd_mt_seed(&m, 999);
    for (int k = 0; k < 4; k++)
        CHECK(sgbd_mt_u32(&m) == raw[k]);
    for (uint32_t k = 0; k < 10; k++)
        a[k] = k;
    sgbd_mt_seed(&m, 7);
    sgbd_np_shuffle_u32(&m, a, 10);
    for (int k = 0; k < 10; k++)
        CHECK_INT(a[k], perm[k]);
}

/*
 * torch 1.13: torch.manual_seed(999); xavier_uniform_ of a (6, 4) user
 * and then a (9, 4) item tensor, as LightGCN's ParameterDict. Values as
 * float.hex().
 */
static void test_mmrec_rng_torch_xavier_uniform(void)
{
    struct sgbd_params p;
    float *x;

    memset(&p, 0, sizeof(p));
    CHECK(sgbd_params_add(&p, "user_emb", 6, 4, SGBD_INIT_XAVIER_UNIFORM, 0,
                          0) >= 0);
    CHECK(sgbd_params_add(&p, "item_emb", 9, 4, SGBD_INIT_XAVIER_UNIFORM, 0,
                          0) >= 0);
    x = sgbd_params_alloc_arena(&p);
    CHECK(x);
    CHECK_INT(sgbd_params_init_mmrec(&p, x, 999), 0);
    const float *u = x + p.t[0].offset, *it = x + p.t[1].offset;
    CHECK(u[0] == 0x1.19b48p-2f && u[1] == 0x1.e5bceap-3f);
    CHECK(u[2] == -0x1.68570cp-1f && u[3] == 0x1.5eea4p-1f);
    CHECK(u[23] == 0x1.602052p-2f);
    CHECK(it[0] == 0x1.5ac598p-2f && it[1] == -0x1.4b4f64p-3f);
    CHECK(it[35] == -0x1.14c94ap-1f);
    sgbd_params_free_arena(x);
}

/* Other initialisers have no MMRec draw here: refused by name. */
static void test_mmrec_rng_refuses_other_initialisers(void)
{
    struct sgbd_params p;
    float *x;

    memset(&p, 0, sizeof(p));
    CHECK(sgbd_params_add(&p, "emb", 3, 4, SGBD_INIT_XAVIER_UNIFORM, 0, 0) >=
          0);
    CHECK(sgbd_params_add(&p, "proj.weight", 4, 5, SGBD_INIT_XAVIER_NORMAL, 0,
                          0) >= 0);
    x = sgbd_params_alloc_arena(&p);
    CHECK(x);
    x[0] = 7.0f;
    CHECK_INT(sgbd_params_init_mmrec(&p, x, 999), SGBD_E_UNSUPPORTED);
    CHECK(x[0] == 7.0f);
    CHECK(strstr(sgbd_err_detail(SGBD_E_UNSUPPORTED), "proj.weight") != NULL);
    sgbd_params_free_arena(x);
}

int main(void)
{
    RUN(test_mmrec_rng_mt19937_reference);
    RUN(test_mmrec_rng_python_seeding);
    RUN(test_mmrec_rng_python_draws);
    RUN(test_mmrec_rng_numpy_draws);
    RUN(test_mmrec_rng_torch_xavier_uniform);
    RUN(test_mmrec_rng_refuses_other_initialisers);
    return harness_finish();
}
