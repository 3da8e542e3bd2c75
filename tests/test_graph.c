/* test_graph.c - graph builders against brute-force references. */
/* ctest: labels=unit timeout=120 */
#include <stdint.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/graph.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"

struct rows {
    size_t U, I, n;
    uint32_t *u, *i;
};

/* n random training rows with every 5th one a repeat of an earlier one. */
static struct rows random_rows(size_t U, size_t I, size_t n,
                               struct sgbd_rng *rng)
{
    struct rows r = {U, I, n, malloc(n * 4), malloc(n * 4)};

    for (size_t k = 0; k < n; k++) {
        if (k > 0 && k % 5 == 0) {
            size_t from = sgbd_rng_below(rng, k);
            r.u[k] = r.u[from], r.i[k] = r.i[from];
        } else {
            r.u[k] = (uint32_t)sgbd_rng_below(rng, U);
            r.i[k] = (uint32_t)sgbd_rng_below(rng, I);
        }
    }
    return r;
}

static double *dense(const struct sgbd_csr *a)
{
    double *d = calloc(a->rows * a->cols + 1, sizeof(double));
    for (size_t r = 0; d && r < a->rows; r++)
        for (uint64_t j = a->ptr[r]; j < a->ptr[r + 1]; j++)
            d[r * a->cols + a->col[j]] += a->val[j];
    return d;
}

/* 5.1 from its definition: binary A, D = deg + eps, D^-1/2 A D^-1/2. */
static void test_graph_norm_adj_matches_definition(void)
{
    struct sgbd_rng rng;
    struct sgbd_csr a;

    sgbd_rng_init(&rng, 31, SGBD_RNG_GRAPH);
    struct rows r = random_rows(20, 13, 90, &rng);
    size_t N = 33;
    double *A = calloc(N * N, sizeof(double)), deg[33] = {0};
    for (size_t k = 0; k < r.n; k++)
        A[r.u[k] * N + 20 + r.i[k]] = A[(20 + r.i[k]) * N + r.u[k]] = 1;
    for (size_t x = 0; x < N; x++)
        for (size_t y = 0; y < N; y++)
            deg[x] += A[x * N + y];

    CHECK_INT(sgbd_graph_norm_adj(&a, 20, 13, r.n, r.u, r.i, 1e-7), 0);
    CHECK(a.rows == N && a.cols == N);
    double *got = dense(&a);
    for (size_t x = 0; x < N; x++)
        for (size_t y = 0; y < N; y++) {
            double want = A[x * N + y] / sqrt((deg[x] + 1e-7) *
                                              (deg[y] + 1e-7));
            CHECK_NEAR(got[x * N + y], want, 1e-7);
            CHECK(got[x * N + y] == got[y * N + x]);   /* symmetric */
        }
    /* Collapsed duplicates: one entry per distinct pair. */
    for (size_t x = 0; x < N; x++)
        CHECK(a.ptr[x + 1] - a.ptr[x] == (uint64_t)deg[x]);
    free(got), free(A);
    sgbd_csr_free(&a);
    free(r.u), free(r.i);
}

/* 5.2: duplicates stay, degrees count them, weight 1/sqrt(d_s d_t). */
static void test_graph_edge_adj_keeps_duplicates(void)
{
    uint32_t u[4] = {0, 0, 1, 0}, i[4] = {0, 0, 0, 1};
    struct sgbd_csr a;

    CHECK_INT(sgbd_graph_edge_adj(&a, 2, 2, 4, u, i), 0);
    /* Degrees: user 0: 3 entries, user 1: 1, item 0 (node 2): 3,
     * item 1 (node 3): 1. */
    CHECK_INT(sgbd_csr_nnz(&a), 8);
    CHECK_INT(a.ptr[1] - a.ptr[0], 3);
    CHECK(a.col[0] == 2 && a.col[1] == 2 && a.col[2] == 3);
    CHECK_NEAR(a.val[0], 1.0 / 3.0, 1e-7);
    CHECK_NEAR(a.val[2], 1.0 / sqrt(3.0), 1e-7);
    double *d = dense(&a);
    CHECK_NEAR(d[0 * 4 + 2], 2.0 / 3.0, 1e-7);   /* two messages */
    CHECK_NEAR(d[1 * 4 + 2], 1.0 / sqrt(3.0), 1e-7);
    free(d);
    sgbd_csr_free(&a);

    uint32_t bad[1] = {7};
    CHECK_INT(sgbd_graph_edge_adj(&a, 2, 2, 1, bad, i), SGBD_E_SHAPE);
}

static void test_graph_edge_adj_equals_norm_adj_without_repeats(void)
{
    uint32_t u[5] = {0, 1, 1, 2, 3}, i[5] = {0, 0, 2, 1, 2};
    struct sgbd_csr a, b;

    CHECK_INT(sgbd_graph_edge_adj(&a, 4, 3, 5, u, i), 0);
    CHECK_INT(sgbd_graph_norm_adj(&b, 4, 3, 5, u, i, 0.0), 0);
    CHECK(sgbd_csr_nnz(&a) == sgbd_csr_nnz(&b));
    for (uint64_t j = 0; j < sgbd_csr_nnz(&a); j++) {
        CHECK(a.col[j] == b.col[j]);
        CHECK_NEAR(a.val[j], b.val[j], 1e-7);
    }
    sgbd_csr_free(&a), sgbd_csr_free(&b);
}

/* ---- item kNN -------------------------------------------------------- */

struct cand {
    double s;
    uint32_t j;
};

static int by_sim(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    if (a->s != b->s)
        return a->s > b->s ? -1 : 1;
    return a->j < b->j ? -1 : a->j > b->j;
}

/* Brute-force top-k cosine neighbours of row i in double; *gap is the
 * distance between the k-th and (k+1)-th similarity. */
static void knn_reference(struct sgbd_mat f, size_t i, size_t k,
                          uint32_t *out, double *gap)
{
    size_t I = f.rows;
    struct cand *c = malloc(I * sizeof(*c));
    double ni = 0;

    for (size_t d = 0; d < f.cols; d++)
        ni += (double)sgbd_mat_row(f, i)[d] * sgbd_mat_row(f, i)[d];
    ni = fmax(sqrt(ni), 1e-12);
    for (size_t j = 0; j < I; j++) {
        double dot = 0, nj = 0;
        for (size_t d = 0; d < f.cols; d++) {
            dot += (double)sgbd_mat_row(f, i)[d] * sgbd_mat_row(f, j)[d];
            nj += (double)sgbd_mat_row(f, j)[d] * sgbd_mat_row(f, j)[d];
        }
        c[j].s = dot / (ni * fmax(sqrt(nj), 1e-12));
        c[j].j = (uint32_t)j;
    }
    qsort(c, I, sizeof(*c), by_sim);
    for (size_t s = 0; s < k; s++)
        out[s] = c[s].j;
    *gap = k < I ? c[k - 1].s - c[k].s : 1;
    free(c);
}

static int row_has(const struct sgbd_csr *g, size_t r, uint32_t c, float *v)
{
    for (uint64_t j = g->ptr[r]; j < g->ptr[r + 1]; j++)
        if (g->col[j] == c) {
            *v = g->val[j];
            return 1;
        }
    return 0;
}

static void test_graph_item_knn_matches_brute_force(void)
{
    struct sgbd_rng rng;
    struct sgbd_mat f[2];
    struct sgbd_csr g, gt;
    const double w[2] = {0.1, 0.9};
    size_t I = 300, k = 10, dims[2] = {24, 7};

    sgbd_rng_init(&rng, 32, SGBD_RNG_GRAPH);
    for (int c = 0; c < 2; c++) {
        CHECK_INT(sgbd_mat_alloc(&f[c], I, dims[c]), 0);
        for (size_t x = 0; x < I * dims[c]; x++)
            f[c].data[x] = (float)sgbd_rng_normal(&rng);
    }
    /* Identical rows (mean-filled images) and a zero row. */
    for (size_t d = 0; d < dims[0]; d++) {
        sgbd_mat_row(f[0], 50)[d] = sgbd_mat_row(f[0], 10)[d];
        sgbd_mat_row(f[0], 20)[d] = sgbd_mat_row(f[0], 10)[d];
        sgbd_mat_row(f[0], 7)[d] = 0;
    }
    CHECK_INT(sgbd_graph_item_knn(&g, &gt, f, w, 2, k), 0);
    CHECK(g.rows == I && gt.rows == I);

    uint32_t want[2][10];
    for (size_t i = 0; i < I; i++) {
        double gap[2];
        knn_reference(f[0], i, k, want[0], &gap[0]);
        knn_reference(f[1], i, k, want[1], &gap[1]);
        for (int c = 0; c < 2; c++) {
            if (gap[c] < 1e-5)
                continue;   /* a near-tie float and double may order apart */
            for (size_t s = 0; s < k; s++) {
                float v;
                CHECK(row_has(&g, i, want[c][s], &v));
                int both = 0;
                for (size_t t = 0; t < k; t++)
                    both |= want[1 - c][t] == want[c][s];
                float r = powf(10.0f + 1e-7f, -0.5f);
                float one = (float)w[c] * (r * r);
                if (both)
                    one = 0.1f * (r * r) + 0.9f * (r * r);
                CHECK_NEAR(v, one, 1e-7);
                CHECK(row_has(&gt, want[c][s], (uint32_t)i, &v));
            }
        }
        CHECK(g.ptr[i + 1] - g.ptr[i] <= 2 * k);
    }
    CHECK(g.ptr[8] - g.ptr[7] >= k);   /* the zero row still has k */
    sgbd_csr_free(&g), sgbd_csr_free(&gt);
    sgbd_mat_release(&f[0]), sgbd_mat_release(&f[1]);
}

/* Rows 3, 5 and 9 are identical: with k = 2, row 9's neighbours are the
 * two lower indices, not itself. */
static void test_graph_item_knn_ties_go_to_lower_index(void)
{
    struct sgbd_rng rng;
    struct sgbd_mat f;
    struct sgbd_csr g, gt;
    const double w[1] = {1.0};

    sgbd_rng_init(&rng, 35, SGBD_RNG_GRAPH);
    CHECK_INT(sgbd_mat_alloc(&f, 12, 5), 0);
    for (size_t x = 0; x < 60; x++)
        f.data[x] = (float)sgbd_rng_normal(&rng);
    memcpy(sgbd_mat_row(f, 5), sgbd_mat_row(f, 3), 5 * sizeof(float));
    memcpy(sgbd_mat_row(f, 9), sgbd_mat_row(f, 3), 5 * sizeof(float));
    CHECK_INT(sgbd_graph_item_knn(&g, &gt, &f, w, 1, 2), 0);
    CHECK_INT(g.ptr[10] - g.ptr[9], 2);
    CHECK(g.col[g.ptr[9]] == 3 && g.col[g.ptr[9] + 1] == 5);
    CHECK(g.col[g.ptr[5]] == 3 && g.col[g.ptr[5] + 1] == 5);
    CHECK_NEAR(g.val[g.ptr[9]], 0.5, 1e-7);   /* 1/k */
    sgbd_csr_free(&g), sgbd_csr_free(&gt);
    sgbd_mat_release(&f);
}

static void test_graph_item_knn_rejects_mismatched_channels(void)
{
    struct sgbd_mat f[2];
    struct sgbd_csr g = {0}, gt = {0};
    const double w[2] = {0.5, 0.5};

    CHECK_INT(sgbd_mat_alloc(&f[0], 10, 3), 0);
    CHECK_INT(sgbd_mat_alloc(&f[1], 11, 3), 0);
    CHECK_INT(sgbd_graph_item_knn(&g, &gt, f, w, 2, 3), SGBD_E_SHAPE);
    CHECK_INT(sgbd_graph_item_knn(&g, &gt, f, w, 1, 0), SGBD_E_SHAPE);
    CHECK(g.ptr == NULL);
    sgbd_mat_release(&f[0]), sgbd_mat_release(&f[1]);
}

/* ---- co-occurrence ------------------------------------------------------ */

static void random_sets(struct sgbd_itemsets *s, size_t U, size_t I,
                        struct sgbd_rng *rng)
{
    s->ptr = malloc((U + 1) * sizeof(uint64_t));
    s->items = malloc(U * I * sizeof(uint32_t) + 4);
    s->ptr[0] = 0;
    for (size_t u = 0; u < U; u++) {
        uint64_t n = s->ptr[u];
        for (uint32_t i = 0; i < I; i++)
            if (sgbd_rng_below(rng, 100) < 12)
                s->items[n++] = i;
        s->ptr[u + 1] = n;
    }
}

/* Fewer users than the builder's work parts: some parts are empty and
 * own no arrays (UBSan once caught a memcpy from their NULL pointers). */
static void test_graph_user_cooc_handles_empty_parts(void)
{
    uint64_t ptr[4] = {0, 2, 3, 3};
    uint32_t items[3] = {0, 1, 1};
    struct sgbd_itemsets tr = {ptr, items};
    struct sgbd_graph_cooc c;

    CHECK_INT(sgbd_graph_user_cooc(&c, &tr, 3, 2, 10), 0);
    CHECK_INT(c.ptr[1] - c.ptr[0], 1);   /* user 0 shares item 1 with 1 */
    CHECK_INT(c.nbr[c.ptr[0]], 1);
    CHECK_INT(c.ptr[2] - c.ptr[1], 1);
    CHECK_INT(c.nbr[c.ptr[1]], 0);
    CHECK_INT(c.ptr[3] - c.ptr[2], 0);   /* user 2 has no items */
    sgbd_graph_cooc_free(&c);
}

static void test_graph_user_cooc_matches_dense_counts(void)
{
    struct sgbd_rng rng;
    struct sgbd_itemsets tr;
    struct sgbd_graph_cooc c;
    size_t U = 150, I = 40, cap = 6;

    sgbd_rng_init(&rng, 33, SGBD_RNG_GRAPH);
    random_sets(&tr, U, I, &rng);
    CHECK_INT(sgbd_parallel_set_threads(2), 0);
    CHECK_INT(sgbd_graph_user_cooc(&c, &tr, U, I, cap), 0);
    for (size_t u = 0; u < U; u++) {
        /* Dense reference row: counts, then the same order by hand. */
        uint32_t cnt[150] = {0};
        for (uint64_t a = tr.ptr[u]; a < tr.ptr[u + 1]; a++)
            for (size_t w = 0; w < U; w++)
                for (uint64_t b = tr.ptr[w]; b < tr.ptr[w + 1]; b++)
                    cnt[w] += w != u && tr.items[b] == tr.items[a];
        size_t len = c.ptr[u + 1] - c.ptr[u], positive = 0;
        for (size_t w = 0; w < U; w++)
            positive += cnt[w] > 0;
        CHECK_INT(len, positive < cap ? positive : cap);
        for (size_t s = 0; s < len; s++) {
            uint32_t best = 0, best_w = 0;
            for (size_t w = 0; w < U; w++)
                if (cnt[w] > best)
                    best = cnt[w], best_w = (uint32_t)w;
            CHECK_INT(c.nbr[c.ptr[u] + s], best_w);
            CHECK(c.count[c.ptr[u] + s] == (float)best);
            cnt[best_w] = 0;
        }
    }
    sgbd_graph_cooc_free(&c);
    sgbd_graph_cooc_free(&c);
    free(tr.ptr), free(tr.items);
}

static void test_graph_cooc_sample_pads_and_softmaxes(void)
{
    /* User 0: 3 neighbours, user 1: none, user 2: 6 (>= k = 4). */
    uint64_t ptr[4] = {0, 3, 3, 9};
    uint32_t nbr[9] = {5, 6, 7, 1, 2, 3, 4, 5, 6};
    float count[9] = {3, 2, 1, 9, 8, 7, 6, 5, 4};
    struct sgbd_graph_cooc c = {3, ptr, nbr, count};
    uint32_t ids[12], ids2[12];
    float w[12], w2[12];
    struct sgbd_rng rng;
    size_t k = 4;

    sgbd_rng_init(&rng, 34, SGBD_RNG_GRAPH);
    sgbd_graph_cooc_sample(&c, k, &rng, ids, w);
    CHECK(ids[0] == 5 && ids[1] == 6 && ids[2] == 7);
    CHECK(ids[3] == 5 || ids[3] == 6 || ids[3] == 7);
    double den = 0, sum = 0;
    float cnt3 = ids[3] == 5 ? 3 : ids[3] == 6 ? 2 : 1;
    const float c0[4] = {3, 2, 1, cnt3};
    for (int s = 0; s < 4; s++)
        den += exp(c0[s]);
    for (int s = 0; s < 4; s++) {
        CHECK_NEAR(w[s], exp(c0[s]) / den, 1e-7);
        sum += w[s];
    }
    CHECK_NEAR(sum, 1, 1e-6);
    for (int s = 4; s < 8; s++)
        CHECK(ids[s] == 0 && w[s] == 0);
    CHECK(ids[8] == 1 && ids[11] == 4);   /* first k of a long list */
    CHECK_NEAR(w[8], exp(0.0) / (1 + exp(-1.0) + exp(-2.0) + exp(-3.0)),
               1e-7);

    sgbd_rng_init(&rng, 34, SGBD_RNG_GRAPH);   /* same seed, same draw */
    sgbd_graph_cooc_sample(&c, k, &rng, ids2, w2);
    CHECK(memcmp(ids, ids2, sizeof(ids)) == 0);
    CHECK(memcmp(w, w2, sizeof(w)) == 0);
}

int main(void)
{
    RUN(test_graph_norm_adj_matches_definition);
    RUN(test_graph_edge_adj_keeps_duplicates);
    RUN(test_graph_edge_adj_equals_norm_adj_without_repeats);
    RUN(test_graph_item_knn_matches_brute_force);
    RUN(test_graph_item_knn_ties_go_to_lower_index);
    RUN(test_graph_item_knn_rejects_mismatched_channels);
    RUN(test_graph_user_cooc_matches_dense_counts);
    RUN(test_graph_user_cooc_handles_empty_parts);
    RUN(test_graph_cooc_sample_pads_and_softmaxes);
    sgbd_parallel_shutdown();
    return harness_finish();
}
