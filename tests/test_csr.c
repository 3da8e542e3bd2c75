/* test_csr.c - CSR construction, transpose, SpMM against dense maths. */
/* ctest: labels=unit timeout=60 */
#include <stdint.h>

#include "harness.h"
#include "sgbd/csr.h"
#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "sgbd/rng.h"

struct coo {
    size_t rows, cols, nnz;
    uint32_t *r, *c;
    float *v;
};

/* nnz random entries, with deliberate duplicates, values in [-1, 1). */
static struct coo random_coo(size_t rows, size_t cols, size_t nnz,
                             struct sgbd_rng *rng)
{
    struct coo m = {rows, cols, nnz, malloc(nnz * 4), malloc(nnz * 4),
                    malloc(nnz * 4)};

    for (size_t k = 0; k < nnz; k++) {
        if (k > 0 && k % 7 == 0) {
            m.r[k] = m.r[k - 3], m.c[k] = m.c[k - 3];
        } else {
            m.r[k] = (uint32_t)sgbd_rng_below(rng, rows);
            m.c[k] = (uint32_t)sgbd_rng_below(rng, cols);
        }
        m.v[k] = (float)(sgbd_rng_uniform(rng) * 2 - 1);
    }
    return m;
}

static void free_coo(struct coo *m)
{
    free(m->r), free(m->c), free(m->v);
}

/* Dense (rows, cols) double matrix of the COO entries summed. */
static double *dense_of(const struct coo *m)
{
    double *d = calloc(m->rows * m->cols, sizeof(double));
    for (size_t k = 0; d && k < m->nnz; k++)
        d[m->r[k] * m->cols + m->c[k]] += m->v[k];
    return d;
}

static double *dense_csr(const struct sgbd_csr *a)
{
    double *d = calloc(a->rows * a->cols, sizeof(double));
    for (size_t r = 0; d && r < a->rows; r++)
        for (uint64_t j = a->ptr[r]; j < a->ptr[r + 1]; j++)
            d[r * a->cols + a->col[j]] += a->val[j];
    return d;
}

static int sorted_rows(const struct sgbd_csr *a, int strict)
{
    for (size_t r = 0; r < a->rows; r++)
        for (uint64_t j = a->ptr[r] + 1; j < a->ptr[r + 1]; j++)
            if (strict ? a->col[j - 1] >= a->col[j]
                       : a->col[j - 1] > a->col[j])
                return 0;
    return 1;
}

static void test_csr_from_coo_sums_or_keeps_duplicates(void)
{
    struct sgbd_rng rng;
    struct sgbd_csr sum, keep;

    sgbd_rng_init(&rng, 3, SGBD_RNG_GRAPH);
    struct coo m = random_coo(17, 11, 300, &rng);
    double *want = dense_of(&m);

    CHECK_INT(sgbd_csr_from_coo(&sum, 17, 11, m.nnz, m.r, m.c, m.v, 1), 0);
    CHECK_INT(sgbd_csr_from_coo(&keep, 17, 11, m.nnz, m.r, m.c, m.v, 0), 0);
    CHECK(sorted_rows(&sum, 1) && sorted_rows(&keep, 0));
    CHECK(sgbd_csr_nnz(&keep) == m.nnz);
    CHECK(sgbd_csr_nnz(&sum) < m.nnz);
    double *ds = dense_csr(&sum), *dk = dense_csr(&keep);
    for (size_t i = 0; i < 17 * 11; i++) {
        CHECK_NEAR(ds[i], want[i], 1e-5);
        CHECK_NEAR(dk[i], want[i], 1e-5);
    }
    free(ds), free(dk), free(want);
    sgbd_csr_free(&sum), sgbd_csr_free(&keep);
    free_coo(&m);
}

static void test_csr_kept_duplicates_stay_in_input_order(void)
{
    uint32_t r[4] = {1, 0, 1, 1}, c[4] = {2, 0, 2, 0};
    float v[4] = {10, 20, 30, 40};
    struct sgbd_csr a;

    CHECK_INT(sgbd_csr_from_coo(&a, 2, 3, 4, r, c, v, 0), 0);
    CHECK(a.ptr[0] == 0 && a.ptr[1] == 1 && a.ptr[2] == 4);
    CHECK(a.col[1] == 0 && a.val[1] == 40);
    CHECK(a.col[2] == 2 && a.val[2] == 10);
    CHECK(a.col[3] == 2 && a.val[3] == 30);
    sgbd_csr_free(&a);

    CHECK_INT(sgbd_csr_from_coo(&a, 2, 3, 4, r, c, NULL, 1), 0);
    CHECK(sgbd_csr_nnz(&a) == 3 && a.val[2] == 2.0f); /* NULL val: ones */
    sgbd_csr_free(&a);
}

static void test_csr_rejects_out_of_range_entries(void)
{
    uint32_t r[2] = {0, 5}, c[2] = {0, 1};
    struct sgbd_csr a = {0};

    CHECK_INT(sgbd_csr_from_coo(&a, 5, 3, 2, r, c, NULL, 1), SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_SHAPE), "entry 1") != NULL);
    CHECK(a.ptr == NULL);
    sgbd_csr_free(&a);
    sgbd_csr_free(NULL);
}

static void test_csr_transpose_matches_dense(void)
{
    struct sgbd_rng rng;
    struct sgbd_csr a, t;

    sgbd_rng_init(&rng, 4, SGBD_RNG_GRAPH);
    struct coo m = random_coo(23, 9, 150, &rng);
    CHECK_INT(sgbd_csr_from_coo(&a, 23, 9, m.nnz, m.r, m.c, m.v, 0), 0);
    CHECK_INT(sgbd_csr_transpose(&t, &a), 0);
    CHECK(t.rows == 9 && t.cols == 23 && sorted_rows(&t, 0));
    double *da = dense_csr(&a), *dt = dense_csr(&t);
    for (size_t r = 0; r < 23; r++)
        for (size_t c = 0; c < 9; c++)
            CHECK_NEAR(dt[c * 23 + r], da[r * 9 + c], 1e-6);
    free(da), free(dt);
    sgbd_csr_free(&a), sgbd_csr_free(&t);
    free_coo(&m);
}

/* Y = alpha A X + beta Y0 (or A^T when trans) in double, max error. */
static double spmm_error(const struct sgbd_csr *a, struct sgbd_mat x,
                         struct sgbd_mat y, const float *y0, float alpha,
                         float beta, int trans)
{
    double *d = dense_csr(a), worst = 0;
    size_t out_rows = trans ? a->cols : a->rows;
    size_t inner = trans ? a->rows : a->cols;

    for (size_t i = 0; i < out_rows; i++)
        for (size_t c = 0; c < y.cols; c++) {
            double s = 0;
            for (size_t k = 0; k < inner; k++)
                s += (trans ? d[k * a->cols + i] : d[i * a->cols + k]) *
                     sgbd_mat_row(x, k)[c];
            double want = alpha * s;
            if (beta != 0)
                want += beta * y0[i * y.stride + c];
            double e = fabs(sgbd_mat_row(y, i)[c] - want);
            worst = e > worst ? e : worst;
        }
    free(d);
    return worst;
}

static void fill(struct sgbd_mat m, struct sgbd_rng *rng)
{
    for (size_t i = 0; i < m.rows * m.stride; i++)
        m.data[i] = (float)(sgbd_rng_uniform(rng) * 2 - 1);
}

static void check_spmm(size_t d, int trans)
{
    struct sgbd_rng rng;
    struct sgbd_csr a;
    struct sgbd_mat x, y;
    size_t rows = 41, cols = 29;

    sgbd_rng_init(&rng, 5 + d, SGBD_RNG_GRAPH);
    struct coo m = random_coo(rows, cols, 400, &rng);
    CHECK_INT(sgbd_csr_from_coo(&a, rows, cols, m.nnz, m.r, m.c, m.v, 1),
              0);
    CHECK_INT(sgbd_mat_alloc(&x, trans ? rows : cols, d + 3), 0);
    CHECK_INT(sgbd_mat_alloc(&y, trans ? cols : rows, d + 1), 0);
    fill(x, &rng), fill(y, &rng);
    x.cols = d, y.cols = d;   /* padded views: stride > cols */
    float *y0 = malloc(y.rows * y.stride * sizeof(float));
    memcpy(y0, y.data, y.rows * y.stride * sizeof(float));

    int rc = trans ? sgbd_csr_spmm_t(y, &a, x, 0.7f, -0.5f)
                   : sgbd_csr_spmm(y, &a, x, 0.7f, -0.5f);
    CHECK_INT(rc, 0);
    CHECK(spmm_error(&a, x, y, y0, 0.7f, -0.5f, trans) < 1e-5);
    CHECK(y.data[d] == y0[d]);   /* padding untouched */

    for (size_t i = 0; i < y.rows * y.stride; i++)
        y.data[i] = NAN;         /* beta 0 never reads Y */
    rc = trans ? sgbd_csr_spmm_t(y, &a, x, 1.0f, 0.0f)
               : sgbd_csr_spmm(y, &a, x, 1.0f, 0.0f);
    CHECK_INT(rc, 0);
    CHECK(spmm_error(&a, x, y, y0, 1.0f, 0.0f, trans) < 1e-5);

    free(y0);
    sgbd_mat_release(&x), sgbd_mat_release(&y);
    sgbd_csr_free(&a);
    free_coo(&m);
}

static void test_csr_spmm_matches_dense(void)
{
    const size_t widths[] = {1, 16, 37, 64, 130};

    for (int i = 0; i < 5; i++) {
        check_spmm(widths[i], 0);
        if (harness_case_failed)
            return;
    }
}

static void test_csr_spmm_t_matches_dense(void)
{
    const size_t widths[] = {1, 16, 37, 64, 130};

    for (int i = 0; i < 5; i++) {
        check_spmm(widths[i], 1);
        if (harness_case_failed)
            return;
    }
}

/* Bitwise the same Y for 1, 2 and 3 threads, both products. */
static void test_csr_spmm_independent_of_thread_count(void)
{
    struct sgbd_rng rng;
    struct sgbd_csr a;
    struct sgbd_mat x, xt, y[3], yt[3];
    size_t rows = 3000, cols = 2000, d = 64;
    const int threads[3] = {1, 2, 3};

    sgbd_rng_init(&rng, 9, SGBD_RNG_GRAPH);
    struct coo m = random_coo(rows, cols, 40000, &rng);
    CHECK_INT(sgbd_csr_from_coo(&a, rows, cols, m.nnz, m.r, m.c, m.v, 1),
              0);
    CHECK_INT(sgbd_mat_alloc(&x, cols, d), 0);
    CHECK_INT(sgbd_mat_alloc(&xt, rows, d), 0);
    fill(x, &rng), fill(xt, &rng);
    for (int t = 0; t < 3; t++) {
        CHECK_INT(sgbd_mat_alloc(&y[t], rows, d), 0);
        CHECK_INT(sgbd_mat_alloc(&yt[t], cols, d), 0);
        CHECK_INT(sgbd_parallel_set_threads(threads[t]), 0);
        CHECK_INT(sgbd_csr_spmm(y[t], &a, x, 1.0f, 0.0f), 0);
        CHECK_INT(sgbd_csr_spmm_t(yt[t], &a, xt, 0.5f, 0.0f), 0);
    }
    for (int t = 1; t < 3; t++) {
        CHECK(memcmp(y[t].data, y[0].data, rows * d * 4) == 0);
        CHECK(memcmp(yt[t].data, yt[0].data, cols * d * 4) == 0);
    }
    for (int t = 0; t < 3; t++)
        sgbd_mat_release(&y[t]), sgbd_mat_release(&yt[t]);
    sgbd_mat_release(&x), sgbd_mat_release(&xt);
    sgbd_csr_free(&a);
    free_coo(&m);
}

static void test_csr_spmm_rejects_wrong_shapes(void)
{
    uint32_t r[1] = {0}, c[1] = {1};
    struct sgbd_csr a;
    struct sgbd_mat x, y;

    CHECK_INT(sgbd_csr_from_coo(&a, 2, 3, 1, r, c, NULL, 1), 0);
    CHECK_INT(sgbd_mat_alloc(&x, 2, 4), 0);   /* needs 3 rows */
    CHECK_INT(sgbd_mat_alloc(&y, 2, 4), 0);
    CHECK_INT(sgbd_csr_spmm(y, &a, x, 1, 0), SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_SHAPE), "spmm") != NULL);
    CHECK_INT(sgbd_csr_spmm_t(y, &a, x, 1, 0), SGBD_E_SHAPE); /* Y 3 rows */
    sgbd_mat_release(&x), sgbd_mat_release(&y);
    sgbd_csr_free(&a);
}

static void test_csr_empty_matrix(void)
{
    struct sgbd_csr a, t;
    float yd[8] = {1, 1, 1, 1, 1, 1, 1, 1}, xd[4] = {0};

    CHECK_INT(sgbd_csr_from_coo(&a, 2, 1, 0, NULL, NULL, NULL, 1), 0);
    CHECK(sgbd_csr_nnz(&a) == 0);
    CHECK_INT(sgbd_csr_transpose(&t, &a), 0);
    CHECK(t.rows == 1 && sgbd_csr_nnz(&t) == 0);
    CHECK_INT(sgbd_csr_spmm(sgbd_mat_view(yd, 2, 4), &a,
                            sgbd_mat_view(xd, 1, 4), 1, 3), 0);
    CHECK(yd[0] == 3 && yd[7] == 3);
    sgbd_csr_free(&a), sgbd_csr_free(&t);
}

int main(void)
{
    RUN(test_csr_from_coo_sums_or_keeps_duplicates);
    RUN(test_csr_kept_duplicates_stay_in_input_order);
    RUN(test_csr_rejects_out_of_range_entries);
    RUN(test_csr_transpose_matches_dense);
    RUN(test_csr_spmm_matches_dense);
    RUN(test_csr_spmm_t_matches_dense);
    RUN(test_csr_spmm_independent_of_thread_count);
    RUN(test_csr_spmm_rejects_wrong_shapes);
    RUN(test_csr_empty_matrix);
    sgbd_parallel_shutdown();
    return harness_finish();
}
