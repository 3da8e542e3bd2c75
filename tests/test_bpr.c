/* test_bpr.c - the MMRec BPR sampler and the shared loss kernels. */
/* ctest: labels=unit,grad timeout=120 */
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "sgbd/bpr.h"
#include "sgbd/err.h"
#include "sgbd/rng.h"

/* ---- an in-memory dataset ------------------------------------------ */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/*
 * Build the train itemsets (sorted, unique) and neg_items (distinct train
 * items, ascending) from the training rows, as the dataset loader does.
 * Returns 0, or -1 when out of memory.
 */
static int finish_dataset(struct sgbd_dataset *ds)
{
    uint32_t U = ds->n_users;
    uint64_t *ptr = calloc(U + 1, sizeof(uint64_t));
    uint32_t *items = malloc(ds->n_train * sizeof(uint32_t) + 4);
    uint32_t *seen = calloc(ds->n_items, sizeof(uint32_t));
    uint64_t *fill = calloc(U + 1, sizeof(uint64_t));

    if (!ptr || !items || !seen || !fill)
        return -1;
    for (size_t r = 0; r < ds->n_train; r++)
        ptr[ds->train_users[r] + 1]++;
    for (uint32_t u = 0; u < U; u++)
        ptr[u + 1] += ptr[u];
    for (size_t r = 0; r < ds->n_train; r++) {
        uint32_t u = ds->train_users[r];
        items[ptr[u] + fill[u]++] = ds->train_items[r];
        seen[ds->train_items[r]] = 1;
    }
    /* sort and deduplicate each user's list in place, compacting */
    uint64_t out = 0, start = 0;
    for (uint32_t u = 0; u < U; u++) {
        uint64_t end = ptr[u + 1];
        qsort(items + start, end - start, sizeof(uint32_t), cmp_u32);
        ptr[u] = out;
        for (uint64_t k = start; k < end; k++)
            if (k == start || items[k] != items[k - 1])
                items[out++] = items[k];
        start = end;
    }
    ptr[U] = out;
    ds->train.ptr = ptr;
    ds->train.items = items;
    ds->neg_items = malloc(ds->n_items * sizeof(uint32_t));
    if (!ds->neg_items)
        return -1;
    ds->n_neg_items = 0;
    for (uint32_t i = 0; i < ds->n_items; i++)
        if (seen[i])
            ds->neg_items[ds->n_neg_items++] = i;
    free(seen);
    free(fill);
    return 0;
}

static void free_dataset(struct sgbd_dataset *ds)
{
    free(ds->train_users);
    free(ds->train_items);
    free(ds->train.ptr);
    free(ds->train.items);
    free(ds->neg_items);
    memset(ds, 0, sizeof(*ds));
}

/* n rows of random (user, item) pairs over U users and the first
 * n_train_items of I items (the others exist only in valid/test). */
static int random_dataset(struct sgbd_dataset *ds, uint32_t U, uint32_t I,
                          uint32_t n_train_items, size_t n, uint64_t seed)
{
    struct sgbd_rng rng;

    memset(ds, 0, sizeof(*ds));
    ds->n_users = U;
    ds->n_items = I;
    ds->n_train = n;
    ds->train_users = malloc(n * sizeof(uint32_t));
    ds->train_items = malloc(n * sizeof(uint32_t));
    if (!ds->train_users || !ds->train_items)
        return -1;
    sgbd_rng_init(&rng, seed, 77);
    for (size_t r = 0; r < n; r++) {
        ds->train_users[r] = (uint32_t)(r < U ? r : sgbd_rng_below(&rng, U));
        ds->train_items[r] = (uint32_t)sgbd_rng_below(&rng, n_train_items);
    }
    return finish_dataset(ds);
}

static int has_item(const struct sgbd_dataset *ds, uint32_t u, uint32_t i)
{
    for (uint64_t k = ds->train.ptr[u]; k < ds->train.ptr[u + 1]; k++)
        if (ds->train.items[k] == i)
            return 1;
    return 0;
}

/* ---- sampler --------------------------------------------------------- */

static void test_bpr_epoch_covers_every_row_once(void)
{
    struct sgbd_dataset ds;
    struct sgbd_bpr_sampler *s;
    struct sgbd_batch b;
    const size_t n = 1003, B = 100;

    CHECK_INT(random_dataset(&ds, 40, 60, 50, n, 1), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, B, 999), 0);
    CHECK_INT(sgbd_bpr_n_batches(s), 11);
    uint32_t *prev = malloc(n * sizeof(uint32_t));
    int *count = calloc(n, sizeof(int));
    CHECK(prev && count);
    for (int epoch = 0; epoch < 3; epoch++) {
        sgbd_bpr_epoch_begin(s);
        const uint32_t *order = sgbd_bpr_order(s);
        memset(count, 0, n * sizeof(int));
        size_t seen = 0, batches = 0;
        while (sgbd_bpr_next(s, &b)) {
            CHECK_INT(b.n, batches < 10 ? B : 3);
            for (size_t k = 0; k < b.n; k++) {
                uint32_t r = order[seen + k];
                count[r]++;
                CHECK_INT(b.users[k], ds.train_users[r]);
                CHECK_INT(b.pos[k], ds.train_items[r]);
            }
            seen += b.n;
            batches++;
        }
        CHECK_INT(batches, 11);
        CHECK_INT(seen, n);
        for (size_t r = 0; r < n; r++)
            CHECK_INT(count[r], 1);
        if (epoch > 0) /* a new permutation each epoch */
            CHECK(memcmp(prev, order, n * sizeof(uint32_t)) != 0);
        memcpy(prev, order, n * sizeof(uint32_t));
        CHECK_INT(sgbd_bpr_next(s, &b), 0); /* stays at the end */
    }
    free(prev);
    free(count);
    sgbd_bpr_sampler_free(s);
    free_dataset(&ds);
}

static void test_bpr_is_deterministic_for_a_seed(void)
{
    struct sgbd_dataset ds;
    struct sgbd_bpr_sampler *a, *b, *c;
    struct sgbd_batch x, y, z;
    int differs = 0;

    CHECK_INT(random_dataset(&ds, 30, 40, 40, 500, 2), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&a, &ds, 64, 5), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&b, &ds, 64, 5), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&c, &ds, 64, 6), 0);
    for (int epoch = 0; epoch < 2; epoch++) {
        sgbd_bpr_epoch_begin(a);
        sgbd_bpr_epoch_begin(b);
        sgbd_bpr_epoch_begin(c);
        while (sgbd_bpr_next(a, &x)) {
            CHECK(sgbd_bpr_next(b, &y) && sgbd_bpr_next(c, &z));
            CHECK(memcmp(x.users, y.users, x.n * 4) == 0);
            CHECK(memcmp(x.neg, y.neg, x.n * 4) == 0);
            differs |= memcmp(x.neg, z.neg, x.n * 4) != 0;
        }
    }
    CHECK(differs);
    sgbd_bpr_sampler_free(a);
    sgbd_bpr_sampler_free(b);
    sgbd_bpr_sampler_free(c);
    free_dataset(&ds);
}

static void test_bpr_negatives_avoid_train_items(void)
{
    struct sgbd_dataset ds;
    struct sgbd_bpr_sampler *s;
    struct sgbd_batch b;

    /* dense users (about 7 items of 12 each) make rejections frequent;
     * items 12..15 exist only outside training and are never negatives */
    CHECK_INT(random_dataset(&ds, 20, 16, 12, 200, 3), 0);
    CHECK_INT(ds.n_neg_items, 12);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 50, 11), 0);
    for (int epoch = 0; epoch < 20; epoch++) {
        sgbd_bpr_epoch_begin(s);
        while (sgbd_bpr_next(s, &b))
            for (size_t k = 0; k < b.n; k++) {
                CHECK(!has_item(&ds, b.users[k], b.neg[k]));
                CHECK(b.neg[k] < 12);
            }
    }
    sgbd_bpr_sampler_free(s);
    free_dataset(&ds);

    /* long sets (about 42 of 80 items) take the binary-search path */
    CHECK_INT(random_dataset(&ds, 20, 90, 80, 1200, 4), 0);
    CHECK(ds.train.ptr[1] - ds.train.ptr[0] > 16);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 256, 12), 0);
    for (int epoch = 0; epoch < 10; epoch++) {
        sgbd_bpr_epoch_begin(s);
        while (sgbd_bpr_next(s, &b))
            for (size_t k = 0; k < b.n; k++)
                CHECK(!has_item(&ds, b.users[k], b.neg[k]) && b.neg[k] < 80);
    }
    sgbd_bpr_sampler_free(s);
    free_dataset(&ds);
}

/* User 0 trained on items 0..4; negatives come from items 5..14 and must
 * be uniform: chi-square over 10 cells, 9 degrees of freedom. */
static void test_bpr_negatives_are_uniform(void)
{
    struct sgbd_dataset ds = {0};
    struct sgbd_bpr_sampler *s;
    struct sgbd_batch b;
    const size_t n = 500;
    long hist[20] = {0}, total = 0;

    ds.n_users = 2;
    ds.n_items = 20;
    ds.n_train = n;
    ds.train_users = malloc(n * sizeof(uint32_t));
    ds.train_items = malloc(n * sizeof(uint32_t));
    CHECK(ds.train_users && ds.train_items);
    for (size_t r = 0; r < n; r++) {
        ds.train_users[r] = r < n - 10 ? 0 : 1;
        ds.train_items[r] = r < n - 10 ? (uint32_t)(r % 5)
                                       : (uint32_t)(5 + r % 10);
    }
    CHECK_INT(finish_dataset(&ds), 0);
    CHECK_INT(ds.n_neg_items, 15);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 128, 2024), 0);
    for (int epoch = 0; epoch < 40; epoch++) {
        sgbd_bpr_epoch_begin(s);
        while (sgbd_bpr_next(s, &b))
            for (size_t k = 0; k < b.n; k++)
                if (b.users[k] == 0) {
                    hist[b.neg[k]]++;
                    total++;
                }
    }
    double expect = (double)total / 10, chi2 = 0;
    for (int i = 0; i < 20; i++) {
        if (i < 5 || i >= 15) {
            CHECK_INT(hist[i], 0);
            continue;
        }
        chi2 += (hist[i] - expect) * (hist[i] - expect) / expect;
    }
    CHECK(chi2 < 27.88); /* p = 0.001 at 9 degrees of freedom */
    sgbd_bpr_sampler_free(s);
    free_dataset(&ds);
}

/*
 * With MMRec's streams the sampler draws what MMRec's TrainDataLoader
 * draws. Reference: Python 3.11, NumPy 1.24, pandas 1.5 after
 * random.seed(999), np.random.seed(999): all_items = sorted distinct
 * train items, random.shuffle(all_items); per epoch df = df.sample(
 * frac=1).reset_index(drop=True), then per row random.sample(all_items,
 * 1)[0] until the user has not trained on it. Item 8 has no training
 * row, so it is never a negative.
 */
static void test_bpr_mmrec_streams_follow_mmrec(void)
{
    static const uint32_t rows[12][2] = {
        {0, 1}, {0, 3}, {1, 2}, {2, 0}, {2, 5}, {3, 1},
        {3, 4}, {4, 6}, {5, 2}, {5, 7}, {1, 6}, {4, 0}};
    static const uint32_t want[2][12][3] = {
        {{2, 5, 4}, {1, 2, 0}, {1, 6, 3}, {4, 0, 7}, {3, 4, 5}, {4, 6, 2},
         {2, 0, 6}, {5, 7, 3}, {5, 2, 6}, {0, 3, 0}, {3, 1, 5}, {0, 1, 2}},
        {{1, 2, 3}, {0, 3, 7}, {3, 1, 7}, {5, 7, 0}, {3, 4, 7}, {2, 0, 1},
         {4, 0, 1}, {1, 6, 3}, {4, 6, 3}, {2, 5, 6}, {0, 1, 5}, {5, 2, 4}}};
    struct sgbd_dataset ds = {0};
    struct sgbd_bpr_sampler *s = NULL;
    struct sgbd_batch b;

    ds.n_users = 6, ds.n_items = 9, ds.n_train = 12;
    ds.train_users = malloc(12 * sizeof(uint32_t));
    ds.train_items = malloc(12 * sizeof(uint32_t));
    CHECK(ds.train_users && ds.train_items);
    for (int r = 0; r < 12; r++)
        ds.train_users[r] = rows[r][0], ds.train_items[r] = rows[r][1];
    CHECK_INT(finish_dataset(&ds), 0);
    /* batches of 5, 5 and 2 rows: the draws do not depend on the cut */
    CHECK_INT(sgbd_bpr_sampler_new_mmrec(&s, &ds, 5, 999), 0);
    for (int e = 0; e < 2; e++) {
        int r = 0;
        sgbd_bpr_epoch_begin(s);
        while (sgbd_bpr_next(s, &b))
            for (size_t k = 0; k < b.n; k++, r++) {
                CHECK_INT(b.users[k], want[e][r][0]);
                CHECK_INT(b.pos[k], want[e][r][1]);
                CHECK_INT(b.neg[k], want[e][r][2]);
            }
        CHECK_INT(r, 12);
    }
    sgbd_bpr_sampler_free(s);
    free_dataset(&ds);
}

static void test_bpr_rejects_bad_input(void)
{
    struct sgbd_dataset ds;
    struct sgbd_bpr_sampler *s = (struct sgbd_bpr_sampler *)&ds;

    CHECK_INT(random_dataset(&ds, 10, 20, 20, 200, 4), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 0, 1), SGBD_E_CONFIG);
    CHECK(s == NULL);

    ds.train_items[7] = 20; /* out of range */
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 16, 1), SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "row 7") != NULL);
    ds.train_items[7] = 0;

    size_t nn = ds.n_neg_items;
    ds.n_neg_items = 0;
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 16, 1), SGBD_E_FORMAT);
    ds.n_neg_items = nn;
    free_dataset(&ds);

    /* one user has trained on every negative item: nothing to draw */
    CHECK_INT(random_dataset(&ds, 3, 4, 4, 3, 4), 0);
    for (size_t r = 0; r < 3; r++)
        ds.train_users[r] = 0;
    free(ds.train.ptr);
    free(ds.train.items);
    free(ds.neg_items);
    ds.train_items[0] = 0, ds.train_items[1] = 1, ds.train_items[2] = 2;
    CHECK_INT(finish_dataset(&ds), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 16, 1), SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "user 0") != NULL);
    free_dataset(&ds);
    sgbd_bpr_sampler_free(NULL);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Baby's size: 19,445 users, 7,050 items, ~120k training rows: every
 * row in ceil(n / B) batches. Prints ms per epoch for information only
 * (speed is measured by benchmarks, not asserted by tests). */
static void test_bpr_samples_a_baby_epoch(void)
{
    struct sgbd_dataset ds;
    struct sgbd_bpr_sampler *s;
    struct sgbd_batch b;
    size_t rows, batches;

    CHECK_INT(random_dataset(&ds, 19445, 7050, 7050, 120000, 5), 0);
    CHECK_INT(sgbd_bpr_sampler_new(&s, &ds, 2048, 999), 0);
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        rows = batches = 0;
        sgbd_bpr_epoch_begin(s);
        while (sgbd_bpr_next(s, &b))
            rows += b.n, batches++;
        double ms = (now() - t0) * 1e3;
        best = ms < best ? ms : best;
    }
    printf("bpr_epoch rows=%zu batches=%zu ms=%.3f\n", rows, batches, best);
    CHECK_INT(rows, ds.n_train);
    CHECK_INT(batches, (ds.n_train + 2047) / 2048);
    sgbd_bpr_sampler_free(s);
    free_dataset(&ds);
}

/* ---- losses ---------------------------------------------------------- */

typedef double (*vec_loss)(size_t n, const float *x, float *dx, double w);

/* Central differences in double around float inputs; the step actually
 * taken is the float difference, so rounding of x + h does not bias. */
static int check_vec_grad(vec_loss f, const float *x0, size_t n, double w)
{
    float x[16], dx[16] = {0};
    double h = 1e-2;
    int ok = 1;

    memcpy(x, x0, n * sizeof(float));
    f(n, x, dx, w);
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = (float)(keep + h);
        double hp = (double)x[i] - keep, lp = f(n, x, NULL, w);
        x[i] = (float)(keep - h);
        double hm = keep - (double)x[i], lm = f(n, x, NULL, w);
        x[i] = keep;
        double fd = (lp - lm) / (hp + hm);
        if (fabs(fd - dx[i]) > 1e-3 * fabs(fd) + 1e-6) {
            fprintf(stderr, "  d[%zu]: analytic %.8g, numeric %.8g\n", i,
                    (double)dx[i], fd);
            ok = 0;
        }
    }
    return ok;
}

static const float scores[10] = {0.3f, -1.2f,  2.5f, 0.0f, -4.0f,
                                 7.5f, -0.01f, 1.1f, -2.2f, 12.0f};

static void test_bpr_loss_ln_value_and_gradient(void)
{
    float x0 = 0.0f, big = -40.0f, dx = 1.0f;
    CHECK_NEAR(sgbd_bpr_loss_ln(1, &x0, NULL, 1.0), log(2.0), 1e-9);
    /* the 1e-10 floor bounds the loss of a hopeless pair */
    CHECK_NEAR(sgbd_bpr_loss_ln(1, &big, NULL, 1.0), -log(1e-10), 1e-6);
    CHECK_NEAR(sgbd_bpr_loss_ln(1, &x0, &dx, 2.0), 2 * log(2.0), 1e-9);
    CHECK_NEAR(dx, 1.0 - 2.0 * 0.5 * 0.5 / (0.5 + 1e-10), 1e-7); /* adds */
    CHECK(check_vec_grad(sgbd_bpr_loss_ln, scores, 10, 1.0));
    CHECK(check_vec_grad(sgbd_bpr_loss_ln, scores, 10, 0.3));
}

static void test_bpr_loss_log2_value_and_gradient(void)
{
    float x0 = 0.0f, big = -1000.0f, pos = 1000.0f;
    CHECK_NEAR(sgbd_bpr_loss_log2(1, &x0, NULL, 1.0), 1.0, 1e-12);
    CHECK_NEAR(sgbd_bpr_loss_log2(1, &big, NULL, 1.0), 1000 / log(2.0),
               1e-6); /* softplus form: no overflow, no floor */
    CHECK_NEAR(sgbd_bpr_loss_log2(1, &pos, NULL, 1.0), 0.0, 1e-12);
    CHECK(check_vec_grad(sgbd_bpr_loss_log2, scores, 10, 1.0));
}

static void test_bpr_loss_logsig_value_and_gradient(void)
{
    float x[2] = {0.0f, 2.0f};
    double want = (log(2.0) + log1p(exp(-2.0))) / 2;
    CHECK_NEAR(sgbd_bpr_loss_logsig(2, x, NULL, 1.0), want, 1e-12);
    CHECK(check_vec_grad(sgbd_bpr_loss_logsig, scores, 10, 1.0));
}

/* A random (rows, cols) view with a stride wider than cols. */
static struct sgbd_mat rand_mat(float *buf, size_t rows, size_t cols,
                                struct sgbd_rng *rng)
{
    struct sgbd_mat m = {buf, rows, cols, cols + 2};
    for (size_t i = 0; i < rows * m.stride; i++)
        buf[i] = (float)sgbd_rng_normal(rng);
    return m;
}

static void test_bpr_emb_loss_value_and_gradient(void)
{
    struct sgbd_rng rng;
    float b0[64], b1[64], b2[64], g0[64] = {0}, g1[64] = {0}, g2[64] = {0};
    struct sgbd_mat e[3], de[3];
    double w = 0.7;

    sgbd_rng_init(&rng, 3, 1);
    e[0] = rand_mat(b0, 4, 3, &rng);
    e[1] = rand_mat(b1, 2, 5, &rng);
    e[2] = rand_mat(b2, 5, 2, &rng); /* rows of the last: 5 */
    for (int j = 0; j < 3; j++)
        de[j] = (struct sgbd_mat){j == 0 ? g0 : j == 1 ? g1 : g2,
                                  e[j].rows, e[j].cols, e[j].stride};

    double want = 0;
    for (int j = 0; j < 3; j++) {
        double ss = 0;
        for (size_t r = 0; r < e[j].rows; r++)
            for (size_t c = 0; c < e[j].cols; c++)
                ss += pow(sgbd_mat_row(e[j], r)[c], 2);
        want += sqrt(ss); /* Frobenius, not squared */
    }
    want *= w / 5;
    CHECK_NEAR(sgbd_emb_loss(3, e, de, w), want, 1e-6);

    for (int j = 0; j < 3; j++)
        for (size_t r = 0; r < e[j].rows; r++)
            for (size_t c = 0; c < e[j].cols; c++) {
                float *p = sgbd_mat_row(e[j], r) + c, keep = *p;
                *p = keep + 1e-2f;
                double hp = (double)*p - keep;
                double lp = sgbd_emb_loss(3, e, NULL, w);
                *p = keep - 1e-2f;
                double hm = keep - (double)*p;
                double lm = sgbd_emb_loss(3, e, NULL, w);
                *p = keep;
                double fd = (lp - lm) / (hp + hm);
                CHECK_NEAR(sgbd_mat_row(de[j], r)[c], fd,
                           1e-3 * fabs(fd) + 1e-6);
            }
    CHECK(g0[3] == 0.0f); /* stride padding untouched */
}

static void test_bpr_emb_loss_zero_matrix_has_zero_gradient(void)
{
    float z[4] = {0}, dz[4] = {0};
    struct sgbd_mat e = {z, 2, 2, 2}, de = {dz, 2, 2, 2};
    CHECK_NEAR(sgbd_emb_loss(1, &e, &de, 1.0), 0.0, 0);
    for (int i = 0; i < 4; i++)
        CHECK(dz[i] == 0.0f);
}

static void test_bpr_mean_sq_value_and_gradient(void)
{
    struct sgbd_rng rng;
    float buf[64], gbuf[64] = {0};
    double w = 1e-3 * 1000;

    sgbd_rng_init(&rng, 4, 1);
    struct sgbd_mat x = rand_mat(buf, 3, 4, &rng);
    struct sgbd_mat dx = {gbuf, 3, 4, x.stride};
    double want = 0;
    for (size_t r = 0; r < 3; r++)
        for (size_t c = 0; c < 4; c++)
            want += pow(sgbd_mat_row(x, r)[c], 2);
    want = w * want / 12;
    CHECK_NEAR(sgbd_mean_sq_loss(x, &dx, w), want, 1e-6);
    for (size_t r = 0; r < 3; r++)
        for (size_t c = 0; c < 4; c++) {
            float *p = sgbd_mat_row(x, r) + c, keep = *p;
            *p = keep + 1e-2f;
            double hp = (double)*p - keep, lp = sgbd_mean_sq_loss(x, NULL, w);
            *p = keep - 1e-2f;
            double hm = keep - (double)*p, lm = sgbd_mean_sq_loss(x, NULL, w);
            *p = keep;
            double fd = (lp - lm) / (hp + hm);
            CHECK_NEAR(sgbd_mat_row(dx, r)[c], fd, 1e-3 * fabs(fd) + 1e-6);
        }
}

int main(void)
{
    RUN(test_bpr_epoch_covers_every_row_once);
    RUN(test_bpr_is_deterministic_for_a_seed);
    RUN(test_bpr_negatives_avoid_train_items);
    RUN(test_bpr_negatives_are_uniform);
    RUN(test_bpr_mmrec_streams_follow_mmrec);
    RUN(test_bpr_rejects_bad_input);
    RUN(test_bpr_samples_a_baby_epoch);
    RUN(test_bpr_loss_ln_value_and_gradient);
    RUN(test_bpr_loss_log2_value_and_gradient);
    RUN(test_bpr_loss_logsig_value_and_gradient);
    RUN(test_bpr_emb_loss_value_and_gradient);
    RUN(test_bpr_emb_loss_zero_matrix_has_zero_gradient);
    RUN(test_bpr_mean_sq_value_and_gradient);
    return harness_finish();
}
