/* test_metrics.c - MMRec full-ranking metrics (algorithms.md section 4). */
/* ctest: labels=unit timeout=120 */
#include <stdint.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/mat.h"
#include "sgbd/metrics.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"

/* Item sets from per-user lists given as {count, items...} runs. */
struct sets {
    struct sgbd_itemsets s;
    uint64_t ptr[64];
    uint32_t items[256];
};

static void build_sets(struct sets *x, size_t n_users, const uint32_t *spec)
{
    size_t n = 0;

    x->s.ptr = x->ptr;
    x->s.items = x->items;
    x->ptr[0] = 0;
    for (size_t u = 0; u < n_users; u++) {
        uint32_t c = *spec++;
        for (uint32_t k = 0; k < c; k++)
            x->items[n++] = *spec++;
        x->ptr[u + 1] = n;
    }
}

/*
 * One-dimensional embeddings: item i scores 10 - i for a user of 1, so
 * every user ranks the items 0, 1, 2, ... (D = 4, other columns 0).
 */
static void ranked_embeddings(struct sgbd_mat *users, struct sgbd_mat *items,
                              size_t n_users, size_t n_items)
{
    sgbd_mat_alloc(users, n_users, 4);
    sgbd_mat_alloc(items, n_items, 4);
    for (size_t u = 0; u < n_users; u++)
        sgbd_mat_row(*users, u)[0] = 1;
    for (size_t i = 0; i < n_items; i++)
        sgbd_mat_row(*items, i)[0] = 10.0f - (float)i;
}

/* algorithms.md 4.2: A (m = 3) hits at ranks 2 and 4; B (m = 1) rank 1. */
static void test_metrics_hand_computed_vector(void)
{
    struct sgbd_mat users, items;
    struct sets truth;
    const uint32_t spec[] = {3, 1, 3, 8, 1, 0};
    const int ks[2] = {2, 5};
    struct sgbd_metrics m;

    ranked_embeddings(&users, &items, 2, 10);
    build_sets(&truth, 2, spec);
    CHECK_INT(sgbd_metrics_eval(&m, users, items, NULL, &truth.s, ks, 2), 0);
    CHECK_INT(m.n_users, 2);
    CHECK_NEAR(sgbd_metrics_round4(m.recall[0]), 0.6667, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.precision[0]), 0.5, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.ndcg[0]), 0.6934, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.map[0]), 0.625, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.recall[1]), 0.8333, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.precision[1]), 0.3, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.ndcg[1]), 0.7491, 1e-12);
    CHECK_NEAR(sgbd_metrics_round4(m.map[1]), 0.6667, 1e-12);
    /* Unrounded, from the per-user table: NDCG@5 = (0.49819 + 1) / 2. */
    CHECK_NEAR(m.ndcg[1], (0.49819 + 1) / 2, 1e-5);
    sgbd_mat_release(&users), sgbd_mat_release(&items);
}

static void test_metrics_more_truth_items_than_k(void)
{
    struct sgbd_mat users, items;
    struct sets truth;
    const uint32_t spec[] = {8, 0, 1, 2, 3, 4, 10, 11, 12};
    const int ks[1] = {5};
    struct sgbd_metrics m;

    ranked_embeddings(&users, &items, 1, 20);
    build_sets(&truth, 1, spec);
    CHECK_INT(sgbd_metrics_eval(&m, users, items, NULL, &truth.s, ks, 1), 0);
    CHECK_NEAR(m.recall[0], 5.0 / 8.0, 1e-12);   /* over m, not min(m, K) */
    CHECK_NEAR(m.precision[0], 1, 1e-12);
    CHECK_NEAR(m.ndcg[0], 1, 1e-12);             /* IDCG over min(m, K) */
    CHECK_NEAR(m.map[0], 1, 1e-12);
    sgbd_mat_release(&users), sgbd_mat_release(&items);
}

static void test_metrics_masks_train_items_only(void)
{
    struct sgbd_mat users, items;
    struct sets train, valid, test;
    /* Train holds the two best items; valid the next; test the one after. */
    const uint32_t tr[] = {2, 0, 1}, va[] = {1, 2}, te[] = {1, 3};
    const int ks[2] = {1, 2};
    struct sgbd_metrics mv, mt;

    ranked_embeddings(&users, &items, 1, 10);
    build_sets(&train, 1, tr);
    build_sets(&valid, 1, va);
    build_sets(&test, 1, te);
    CHECK_INT(sgbd_metrics_eval(&mv, users, items, &train.s, &valid.s, ks,
                                2), 0);
    CHECK_NEAR(mv.recall[0], 1, 0);      /* item 2 is first once 0, 1 go */
    CHECK_INT(sgbd_metrics_eval(&mt, users, items, &train.s, &test.s, ks,
                                2), 0);
    /* The valid item is not masked at test: item 3 is at rank 2. */
    CHECK_NEAR(mt.recall[0], 0, 0);
    CHECK_NEAR(mt.recall[1], 1, 0);
    CHECK_NEAR(mt.ndcg[1], 1 / log2(3.0), 1e-12);
    CHECK_NEAR(mt.map[1], 0.5, 1e-12);
    /* Without a mask the train items take ranks 1 and 2. */
    CHECK_INT(sgbd_metrics_eval(&mt, users, items, NULL, &test.s, ks, 2),
              0);
    CHECK_NEAR(mt.recall[1], 0, 0);
    sgbd_mat_release(&users), sgbd_mat_release(&items);
}

/* ---- against a naive double-precision reference with a full sort ---- */

struct ref_item {
    double score;
    uint32_t idx;
};

static int by_rank(const void *pa, const void *pb)
{
    const struct ref_item *a = pa, *b = pb;

    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int has(const struct sgbd_itemsets *s, size_t u, uint32_t i)
{
    for (uint64_t j = s->ptr[u]; j < s->ptr[u + 1]; j++)
        if (s->items[j] == i)
            return 1;
    return 0;
}

/* MMRec's formulas written out directly, per user, then the mean. */
static void reference_eval(struct sgbd_metrics *out, struct sgbd_mat users,
                           struct sgbd_mat items,
                           const struct sgbd_itemsets *mask,
                           const struct sgbd_itemsets *truth, const int *ks,
                           int n_k)
{
    size_t I = items.rows;
    struct ref_item *r = malloc(I * sizeof(*r));

    memset(out, 0, sizeof(*out));
    for (size_t u = 0; u < users.rows; u++) {
        size_t m = truth->ptr[u + 1] - truth->ptr[u];
        if (m == 0)
            continue;
        out->n_users++;
        for (size_t i = 0; i < I; i++) {
            double s = 0;
            for (size_t c = 0; c < users.cols; c++)
                s += (double)sgbd_mat_row(users, u)[c] *
                     sgbd_mat_row(items, i)[c];
            r[i].score = mask && has(mask, u, (uint32_t)i) ? -INFINITY : s;
            r[i].idx = (uint32_t)i;
        }
        qsort(r, I, sizeof(*r), by_rank);
        for (int c = 0; c < n_k; c++) {
            size_t K = (size_t)ks[c], mk = m < K ? m : K;
            double hits = 0, dcg = 0, idcg = 0, ap = 0;
            for (size_t k = 1; k <= K && k <= I; k++) {
                if (!has(truth, u, r[k - 1].idx))
                    continue;
                hits += 1;
                dcg += 1 / log2(k + 1.0);
                ap += hits / k;
            }
            for (size_t k = 1; k <= mk; k++)
                idcg += 1 / log2(k + 1.0);
            out->recall[c] += hits / m;
            out->precision[c] += hits / K;
            out->ndcg[c] += dcg / idcg;
            out->map[c] += ap / mk;
        }
    }
    for (int c = 0; c < n_k && out->n_users; c++) {
        out->recall[c] /= out->n_users;
        out->precision[c] /= out->n_users;
        out->ndcg[c] /= out->n_users;
        out->map[c] /= out->n_users;
    }
    free(r);
}

/* Random sorted unique sets of lo..hi items per user (some users 0). */
static void random_sets(struct sgbd_itemsets *s, size_t n_users,
                        size_t n_items, int lo, int hi, struct sgbd_rng *rng)
{
    s->ptr = malloc((n_users + 1) * sizeof(uint64_t));
    s->items = malloc(n_users * (size_t)hi * sizeof(uint32_t) + 4);
    s->ptr[0] = 0;
    for (size_t u = 0; u < n_users; u++) {
        uint64_t n = s->ptr[u];
        int want = lo + (int)sgbd_rng_below(rng, (uint64_t)(hi - lo + 1));
        for (uint32_t i = 0; i < n_items && (int)(n - s->ptr[u]) < want; i++)
            if (sgbd_rng_below(rng, n_items) < (uint64_t)want * 2)
                s->items[n++] = i;
        s->ptr[u + 1] = n;
    }
}

static void free_sets(struct sgbd_itemsets *s)
{
    free(s->ptr), free(s->items);
}

static int same_metrics(const struct sgbd_metrics *a,
                        const struct sgbd_metrics *b, int n_k)
{
    if (a->n_users != b->n_users)
        return 0;
    for (int c = 0; c < n_k; c++)
        if (fabs(a->recall[c] - b->recall[c]) > 1e-12 ||
            fabs(a->ndcg[c] - b->ndcg[c]) > 1e-12 ||
            fabs(a->precision[c] - b->precision[c]) > 1e-12 ||
            fabs(a->map[c] - b->map[c]) > 1e-12)
            return 0;
    return 1;
}

/* Integer embeddings: exact scores and many ties, so order is tested. */
static void integer_fill(struct sgbd_mat m, struct sgbd_rng *rng)
{
    for (size_t i = 0; i < m.rows * m.cols; i++)
        m.data[i] = (float)sgbd_rng_below(rng, 5) - 2;
}

static void test_metrics_equal_naive_reference(void)
{
    struct sgbd_rng rng;
    struct sgbd_mat users, items;
    struct sgbd_itemsets train, test;
    struct sgbd_metrics got, want;
    const int ks[4] = {20, 5, 300, 10};   /* unordered, one K > I */
    size_t U = 600, I = 257, D = 8;

    sgbd_rng_init(&rng, 21, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&users, U, D), 0);
    CHECK_INT(sgbd_mat_alloc(&items, I, D), 0);
    integer_fill(users, &rng), integer_fill(items, &rng);
    random_sets(&train, U, I, 1, 30, &rng);
    random_sets(&test, U, I, 0, 25, &rng);
    reference_eval(&want, users, items, &train, &test, ks, 4);
    CHECK(want.n_users > 100 && want.n_users < U);
    for (int threads = 1; threads <= 2; threads++) {
        CHECK_INT(sgbd_parallel_set_threads(threads), 0);
        CHECK_INT(sgbd_metrics_eval(&got, users, items, &train, &test, ks,
                                    4), 0);
        CHECK(same_metrics(&got, &want, 4));
        CHECK(got.k[0] == 20 && got.k[2] == 300 && got.n_k == 4);
    }
    sgbd_mat_release(&users), sgbd_mat_release(&items);
    free_sets(&train), free_sets(&test);
}

static void test_metrics_eval2_equals_two_evals(void)
{
    struct sgbd_rng rng;
    struct sgbd_mat users, items;
    struct sgbd_itemsets train, valid, test;
    struct sgbd_metrics v1, t1, v2, t2;
    const int ks[3] = {5, 10, 20};

    sgbd_rng_init(&rng, 22, SGBD_RNG_SYNTH);
    CHECK_INT(sgbd_mat_alloc(&users, 700, 16), 0);
    CHECK_INT(sgbd_mat_alloc(&items, 300, 16), 0);
    for (size_t i = 0; i < 700 * 16; i++)
        users.data[i] = (float)sgbd_rng_normal(&rng);
    for (size_t i = 0; i < 300 * 16; i++)
        items.data[i] = (float)sgbd_rng_normal(&rng);
    random_sets(&train, 700, 300, 1, 10, &rng);
    random_sets(&valid, 700, 300, 0, 2, &rng);
    random_sets(&test, 700, 300, 0, 3, &rng);
    CHECK_INT(sgbd_metrics_eval(&v1, users, items, &train, &valid, ks, 3),
              0);
    CHECK_INT(sgbd_metrics_eval(&t1, users, items, &train, &test, ks, 3), 0);
    CHECK_INT(sgbd_metrics_eval2(&v2, &t2, users, items, &train, &valid,
                                 &test, ks, 3), 0);
    CHECK(memcmp(&v1, &v2, sizeof(v1)) == 0);
    CHECK(memcmp(&t1, &t2, sizeof(t1)) == 0);
    sgbd_mat_release(&users), sgbd_mat_release(&items);
    free_sets(&train), free_sets(&valid), free_sets(&test);
}

static void test_metrics_rejects_bad_arguments(void)
{
    struct sgbd_mat users, items;
    struct sets truth;
    const uint32_t spec[] = {1, 0};
    const int ks[2] = {5, 0};
    struct sgbd_metrics m;

    ranked_embeddings(&users, &items, 1, 10);
    build_sets(&truth, 1, spec);
    m.n_users = 77;
    CHECK_INT(sgbd_metrics_eval(&m, users, items, NULL, &truth.s, ks, 2),
              SGBD_E_LIMIT);
    CHECK_INT(sgbd_metrics_eval(&m, users, items, NULL, &truth.s, ks, 0),
              SGBD_E_LIMIT);
    items.cols = 3;
    CHECK_INT(sgbd_metrics_eval(&m, users, items, NULL, &truth.s, ks, 1),
              SGBD_E_SHAPE);
    CHECK_INT(m.n_users, 77);   /* untouched on error */
    items.cols = 4;
    sgbd_mat_release(&users), sgbd_mat_release(&items);
}

static void test_metrics_get_by_name(void)
{
    struct sgbd_metrics m = {2, {10, 20}, {0.1, 0.2}, {0.3, 0.4},
                             {0.5, 0.6}, {0.7, 0.8}, 5};
    double v = -1;

    CHECK_INT(sgbd_metrics_get(&m, "recall@20", &v), 0);
    CHECK(v == 0.2);
    CHECK_INT(sgbd_metrics_get(&m, "NDCG@10", &v), 0);
    CHECK(v == 0.3);
    CHECK_INT(sgbd_metrics_get(&m, "map@20", &v), 0);
    CHECK(v == 0.8);
    CHECK_INT(sgbd_metrics_get(&m, "precision@10", &v), 0);
    CHECK(v == 0.5);
    CHECK_INT(sgbd_metrics_get(&m, "recall@50", &v), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_metrics_get(&m, "recall@2x", &v), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_metrics_get(&m, "hit@10", &v), SGBD_E_NOTFOUND);
    CHECK_INT(sgbd_metrics_get(&m, "recall", &v), SGBD_E_NOTFOUND);
    CHECK(strstr(sgbd_err_detail(SGBD_E_NOTFOUND), "recall") != NULL);
}

static void test_metrics_round4_like_python(void)
{
    /* Python: round(0.03125, 4) == 0.0312, round(0.09375, 4) == 0.0938
     * (exact binary ties go to even), round(0.00005, 4) == 0.0001. */
    CHECK(sgbd_metrics_round4(0.03125) == 0.0312);
    CHECK(sgbd_metrics_round4(0.09375) == 0.0938);
    CHECK(sgbd_metrics_round4(0.00005) == 0.0001);
    CHECK(sgbd_metrics_round4(2.0 / 3.0) == 0.6667);
    CHECK(sgbd_metrics_round4(-0.12344) == -0.1234);
}

static void test_metrics_parse_ks(void)
{
    int ks[SGBD_METRICS_MAX_K], n = 0;

    CHECK_INT(sgbd_metrics_parse_ks("5,10, 20 ,50", ks, &n), 0);
    CHECK(n == 4 && ks[0] == 5 && ks[3] == 50);
    CHECK_INT(sgbd_metrics_parse_ks("5,,10", ks, &n), SGBD_E_FORMAT);
    CHECK_INT(sgbd_metrics_parse_ks("0", ks, &n), SGBD_E_FORMAT);
    CHECK_INT(sgbd_metrics_parse_ks("", ks, &n), SGBD_E_FORMAT);
    CHECK_INT(sgbd_metrics_parse_ks("1,2,3,4,5,6,7,8,9", ks, &n),
              SGBD_E_FORMAT);
    CHECK(n == 4);   /* untouched on error */
}

int main(void)
{
    RUN(test_metrics_hand_computed_vector);
    RUN(test_metrics_more_truth_items_than_k);
    RUN(test_metrics_masks_train_items_only);
    RUN(test_metrics_equal_naive_reference);
    RUN(test_metrics_eval2_equals_two_evals);
    RUN(test_metrics_rejects_bad_arguments);
    RUN(test_metrics_get_by_name);
    RUN(test_metrics_round4_like_python);
    RUN(test_metrics_parse_ks);
    sgbd_parallel_shutdown();
    return harness_finish();
}
