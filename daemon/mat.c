/*
 * mat.c - owned dense matrices, the BLAS wrappers and vector helpers.
 *
 * The only file that includes cblas.h: every product pattern is wrapped
 * once here, with its shape check, so a wrong size is an error message
 * rather than a silent out-of-bounds read inside OpenBLAS.
 */
#include "sgbd/mat.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/parallel.h"
#include "simd.h"

#define MAT_ALIGN 64

int sgbd_mat_alloc(struct sgbd_mat *m, size_t rows, size_t cols)
{
    size_t n = rows * cols;
    void *p;

    if (cols && n / cols != rows)
        return -ENOMEM;
    if (n > SIZE_MAX / sizeof(float) - MAT_ALIGN)
        return -ENOMEM;
    size_t bytes = (n * sizeof(float) + MAT_ALIGN - 1) / MAT_ALIGN
                   * MAT_ALIGN;
    p = aligned_alloc(MAT_ALIGN, bytes ? bytes : MAT_ALIGN);
    if (!p)
        return -ENOMEM;
    memset(p, 0, bytes);
    m->data = p;
    m->rows = rows;
    m->cols = cols;
    m->stride = cols;
    return 0;
}

void sgbd_mat_release(struct sgbd_mat *m)
{
    if (!m)
        return;
    free(m->data);
    memset(m, 0, sizeof(*m));
}

int sgbd_mat_set_threads(int n)
{
    int rc = sgbd_parallel_set_threads(n);

    if (rc < 0)
        return rc;
    openblas_set_num_threads(1);    /* gemm() cuts the work itself */
    return 0;
}

static int valid_view(struct sgbd_mat m)
{
    if (m.rows == 0 || m.cols == 0)
        return 1;
    return m.data != NULL && m.stride >= m.cols;
}

static int bad_views(const char *op, struct sgbd_mat c, struct sgbd_mat a,
                     struct sgbd_mat b)
{
    if (valid_view(c) && valid_view(a) && valid_view(b))
        return 0;
    return sgbd_errf(SGBD_E_SHAPE, "%s: a view has no data or a stride "
                     "below its width", op);
}

static int shape_error(const char *op, struct sgbd_mat c, struct sgbd_mat a,
                       struct sgbd_mat b)
{
    return sgbd_errf(SGBD_E_SHAPE, "%s: C (%zu, %zu), A (%zu, %zu), "
                     "B (%zu, %zu) do not fit", op, c.rows, c.cols, a.rows,
                     a.cols, b.rows, b.cols);
}

/* C = beta C, for products with an empty inner dimension. */
static void scale_mat(struct sgbd_mat c, float beta)
{
    for (size_t r = 0; r < c.rows; r++) {
        float *row = sgbd_mat_row(c, r);
        if (beta == 0.0f)
            memset(row, 0, c.cols * sizeof(float));
        else
            sgbd_mat_scale(c.cols, beta, row);
    }
}

static int ld(struct sgbd_mat m)
{
    return m.stride > 0 ? (int)m.stride : 1;
}

/*
 * Products of at least this many multiply-adds are cut across the compute
 * pool; smaller ones are not worth waking it for.
 */
#define GEMM_SPLIT_MIN ((size_t)1 << 22)

struct gemm_args {
    struct sgbd_mat c, a, b;
    int ta, tb, by_rows;
    size_t k;
    float alpha, beta;
};

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single_thread(void)
{
    openblas_set_num_threads(1);
}

/* The one place that calls cblas_sgemm (single-threaded OpenBLAS). */
static void sgemm(const struct gemm_args *g, struct sgbd_mat c,
                  struct sgbd_mat a, struct sgbd_mat b)
{
    pthread_once(&blas_once, blas_single_thread);
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                g->tb ? CblasTrans : CblasNoTrans, (int)c.rows, (int)c.cols,
                (int)g->k, g->alpha, a.data, ld(a), b.data, ld(b), g->beta,
                c.data, ld(c));
}

/* The view of columns [c0, c0 + n) of m. */
static struct sgbd_mat cols_of(struct sgbd_mat m, size_t c0, size_t n)
{
    return (struct sgbd_mat){m.data + c0, m.rows, n, m.stride};
}

/* Rows [begin, end) of C, or its columns when by_rows is 0: the matching
 * slice of A (its rows, or columns when transposed) or of B. */
static void gemm_range(void *ctx, size_t begin, size_t end)
{
    const struct gemm_args *g = ctx;
    size_t n = end - begin;

    if (g->by_rows)
        sgemm(g, sgbd_mat_rows(g->c, begin, n),
              g->ta ? cols_of(g->a, begin, n) : sgbd_mat_rows(g->a, begin, n),
              g->b);
    else
        sgemm(g, cols_of(g->c, begin, n), g->a,
              g->tb ? sgbd_mat_rows(g->b, begin, n) : cols_of(g->b, begin, n));
}

/*
 * C = alpha op(A) op(B) + beta C; m, n, k already checked. Large products
 * run on the compute pool (parallel.h), one slice of C's rows (or of its
 * columns, when it has few rows) per thread, each a single-threaded
 * sgemm: one pool for every kernel, so OpenBLAS's own workers never spin
 * on a core the next kernel needs. Every element of C is the same K-long
 * sum whatever the cut, so results do not depend on the thread count.
 */
static int gemm(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                float beta)
{
    struct gemm_args g = {c, a, b, ta, tb, m >= n, k, alpha, beta};
    size_t threads = (size_t)sgbd_parallel_threads(), len;

    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX ||
        a.stride > INT32_MAX || b.stride > INT32_MAX ||
        c.stride > INT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "gemm: dimension above 2^31");
    if (m == 0 || n == 0)
        return 0;
    if (k == 0) {
        scale_mat(c, beta);
        return 0;
    }
    len = g.by_rows ? m : n;
    if (threads < 2 || m * n * k < GEMM_SPLIT_MIN || len < 2 * 16)
        sgemm(&g, c, a, b);
    else
        sgbd_parallel_for(len, (len + threads - 1) / threads, gemm_range, &g);
    return 0;
}

int sgbd_mat_gemm_nn(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta)
{
    if (a.cols != b.rows || c.rows != a.rows || c.cols != b.cols)
        return shape_error("gemm_nn", c, a, b);
    if (bad_views("gemm_nn", c, a, b))
        return SGBD_E_SHAPE;
    return gemm(c, a, b, 0, 0, a.rows, b.cols, a.cols, alpha, beta);
}

int sgbd_mat_gemm_nt(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta)
{
    if (a.cols != b.cols || c.rows != a.rows || c.cols != b.rows)
        return shape_error("gemm_nt", c, a, b);
    if (bad_views("gemm_nt", c, a, b))
        return SGBD_E_SHAPE;
    return gemm(c, a, b, 0, 1, a.rows, b.rows, a.cols, alpha, beta);
}

int sgbd_mat_gemm_tn(struct sgbd_mat c, struct sgbd_mat a, struct sgbd_mat b,
                     float alpha, float beta)
{
    if (a.rows != b.rows || c.rows != a.cols || c.cols != b.cols)
        return shape_error("gemm_tn", c, a, b);
    if (bad_views("gemm_tn", c, a, b))
        return SGBD_E_SHAPE;
    return gemm(c, a, b, 1, 0, a.cols, b.cols, a.rows, alpha, beta);
}

/* y = beta y over n entries, for an empty product. */
static void scale_vec(float *y, size_t n, float beta)
{
    if (beta == 0.0f)
        memset(y, 0, n * sizeof(float));
    else
        sgbd_mat_scale(n, beta, y);
}

int sgbd_mat_gemv_n(float *y, struct sgbd_mat a, const float *x, float alpha,
                    float beta)
{
    if (!valid_view(a) || a.rows > INT32_MAX || a.cols > INT32_MAX ||
        a.stride > INT32_MAX)
        return sgbd_errf(SGBD_E_SHAPE, "gemv_n: A (%zu, %zu) stride %zu",
                         a.rows, a.cols, a.stride);
    if (a.rows == 0)
        return 0;
    if (a.cols == 0) {
        scale_vec(y, a.rows, beta);
        return 0;
    }
    pthread_once(&blas_once, blas_single_thread);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)a.rows, (int)a.cols,
                alpha, a.data, ld(a), x, 1, beta, y, 1);
    return 0;
}

int sgbd_mat_gemv_t(float *y, struct sgbd_mat a, const float *x, float alpha,
                    float beta)
{
    if (!valid_view(a) || a.rows > INT32_MAX || a.cols > INT32_MAX ||
        a.stride > INT32_MAX)
        return sgbd_errf(SGBD_E_SHAPE, "gemv_t: A (%zu, %zu) stride %zu",
                         a.rows, a.cols, a.stride);
    if (a.cols == 0)
        return 0;
    if (a.rows == 0) {
        scale_vec(y, a.cols, beta);
        return 0;
    }
    pthread_once(&blas_once, blas_single_thread);
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)a.rows, (int)a.cols, alpha,
                a.data, ld(a), x, 1, beta, y, 1);
    return 0;
}

/* Element-wise loops over whole arenas: compiled per ISA (simd.h). */
KERNEL_CLONES void sgbd_mat_axpy(size_t n, float a, const float *restrict x,
                                 float *restrict y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* Below this many floats the pool costs more than it saves. */
#define WIDE_MIN_FLOATS ((size_t)1 << 16)
#define WIDE_GRAIN ((size_t)1 << 14)

struct axpy_args {
    float a;
    const float *x;
    float *y;
};

static void axpy_range(void *ctx, size_t begin, size_t end)
{
    const struct axpy_args *p = ctx;

    sgbd_mat_axpy(end - begin, p->a, p->x + begin, p->y + begin);
}

void sgbd_mat_axpy_wide(size_t n, float a, const float *x, float *y)
{
    struct axpy_args args = {a, x, y};

    if (n < WIDE_MIN_FLOATS)
        sgbd_mat_axpy(n, a, x, y);
    else
        sgbd_parallel_for(n, WIDE_GRAIN, axpy_range, &args);
}

KERNEL_CLONES void sgbd_mat_scale(size_t n, float a, float *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= a;
}

/* Four partial sums (so the loop pipelines), combined in a fixed order. */
double sgbd_mat_dot(size_t n, const float *x, const float *y)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;

    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * y[i];
        s1 += (double)x[i + 1] * y[i + 1];
        s2 += (double)x[i + 2] * y[i + 2];
        s3 += (double)x[i + 3] * y[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)x[i] * y[i];
    return (s0 + s1) + (s2 + s3);
}

void sgbd_mat_row_norms(struct sgbd_mat a, float *out)
{
    for (size_t r = 0; r < a.rows; r++) {
        const float *row = sgbd_mat_row(a, r);
        out[r] = (float)sqrt(sgbd_mat_dot(a.cols, row, row));
    }
}

void sgbd_mat_normalize_rows(struct sgbd_mat a, double eps)
{
    for (size_t r = 0; r < a.rows; r++) {
        float *row = sgbd_mat_row(a, r);
        double norm = sqrt(sgbd_mat_dot(a.cols, row, row));
        float den = (float)(norm > eps ? norm : eps);
        for (size_t c = 0; c < a.cols; c++)
            row[c] /= den;
    }
}

/* ---- OpenBLAS's work buffers (issue #8) ---- */

/*
 * OpenBLAS 0.3.x built without USE_TLS (Debian's is) keeps one table of
 * work buffers for the whole process (driver/others/memory.c). A level-3
 * call, and a level-2 call past a small size, takes the first free slot
 * and maps that slot's buffer if it has none; each OpenBLAS worker holds
 * a slot from the moment it first runs until the process ends; a mapped
 * buffer is never unmapped. When the mapping fails (RLIMIT_AS, strict
 * overcommit) blas_memory_alloc retries it for ever, so the caller never
 * returns. The two entry points and the worker count are exported but not
 * declared in cblas.h; weak, so that another BLAS still links.
 */
extern void *blas_memory_alloc(int procpos) __attribute__((weak));
extern void blas_memory_free(void *buffer) __attribute__((weak));
extern int blas_num_threads __attribute__((weak));  /* workers + caller */

#define BLAS_BUFFER ((size_t)128 << 20)     /* BUFFER_SIZE, x86-64: 32 << 22 */
#define BLAS_PROBE (BLAS_BUFFER + ((size_t)1 << 20))
#define BLAS_MIN_SLOTS 50                   /* NUM_BUFFERS is never below */
#define SETTLE_CHUNK 32768                  /* floats per thread */
#define SETTLE_MIN 262144                   /* above axpy's threading floor */

/* Whether len bytes of private writable memory can be mapped now: what an
 * address-space or commit limit refuses. Nothing is touched. */
static int can_map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return 0;
    munmap(p, len);
    return 1;
}

static int no_room(const char *what, size_t need)
{
    return sgbd_errf(-ENOMEM, "OpenBLAS work buffers: cannot map %s "
                     "(%zu MiB): the address-space or commit limit is too "
                     "low; raise it (LimitAS=) or cap memory with "
                     "MemoryMax= instead", what, need >> 20);
}

/* Slots in OpenBLAS's table: NUM_BUFFERS = max(50, 2 MAX_THREADS). */
static int blas_slots(void)
{
    const char *cfg = openblas_get_config();
    const char *m = cfg ? strstr(cfg, "MAX_THREADS=") : NULL;
    long n = m ? strtol(m + strlen("MAX_THREADS="), NULL, 10) : 0;

    return n > BLAS_MIN_SLOTS / 2 && n < 4096 ? (int)(2 * n)
                                                : BLAS_MIN_SLOTS;
}

/* Address space of the process in bytes (/proc/self/statm), 0 unknown. */
static size_t mapped_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;

    if (!f)
        return 0;
    if (fscanf(f, "%lu", &pages) != 1)
        pages = 0;
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

static size_t default_stack(void)
{
    pthread_attr_t a;
    size_t s = (size_t)8 << 20;

    if (pthread_attr_init(&a) == 0) {
        pthread_attr_getstacksize(&a, &s);
        pthread_attr_destroy(&a);
    }
    return s;
}

/*
 * Create now the workers a later call with `threads` threads would start,
 * leaving OpenBLAS's thread setting as it was: OpenBLAS does not check
 * that a worker it starts got its stack and buffer, and waits for it.
 */
static int start_workers(int threads)
{
    int prev = openblas_get_num_threads();
    size_t each = BLAS_PROBE + default_stack();

    if (threads <= blas_num_threads)
        return 0;
    if (!can_map((size_t)(threads - blas_num_threads) * each))
        return no_room("new worker threads",
                       (size_t)(threads - blas_num_threads) * each);
    openblas_set_num_threads(threads);
    openblas_set_num_threads(prev);
    return 0;
}

/*
 * Return once every OpenBLAS worker holds its buffer: a worker maps it
 * when it first runs, which can be after its creation. A threaded saxpy
 * with one chunk per thread does it: exec_blas hands the chunks to idle
 * workers in turn, a worker stays busy until its chunk is done (far
 * longer than handing out the rest takes), and the call waits for all.
 * A worker that cannot map its buffer would never finish, so room for
 * all of them is checked first (counting again those mapped already).
 */
static int settle_workers(void)
{
    int n = blas_num_threads, prev = openblas_get_num_threads();
    size_t len = (size_t)n * SETTLE_CHUNK;
    size_t bytes;
    float *x;

    if (n <= 1)
        return 0;
    if (!can_map((size_t)(n - 1) * BLAS_PROBE))
        return no_room("a buffer for each worker thread",
                       (size_t)(n - 1) * BLAS_PROBE);
    len = len > SETTLE_MIN ? len : SETTLE_MIN;
    bytes = 2 * len * sizeof(float);
    x = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (x == MAP_FAILED)
        return no_room("the start-up check of the workers", bytes);
    openblas_set_num_threads(n);
    cblas_saxpy((int)len, 1.0f, x, 1, x + len, 1);
    openblas_set_num_threads(prev);
    munmap(x, bytes);
    return 0;
}

/* Take n buffers at once, then give them back: n mapped slots stay free. */
static int hold_buffers(int n)
{
    void **held = calloc((size_t)n, sizeof(*held));
    int rc = held ? 0 : -ENOMEM;
    int k = 0;

    while (rc == 0 && k < n) {
        if (!can_map(BLAS_PROBE))
            rc = no_room("a 128 MiB buffer", BLAS_PROBE);
        else if (!(held[k] = blas_memory_alloc(0)))
            rc = sgbd_errf(SGBD_E_LIMIT, "OpenBLAS work buffers: its "
                           "table is full after %d", k);
        else
            k++;
    }
    while (k-- > 0)
        blas_memory_free(held[k]);
    free(held);
    return rc;
}

int sgbd_mat_reserve_blas(int threads, int callers)
{
    size_t before = mapped_bytes();
    int rc = 0, workers;

    if (threads < 0 || callers < 1)
        return sgbd_errf(SGBD_E_USAGE, "reserve_blas: threads %d, callers "
                         "%d", threads, callers);
    if (!blas_memory_alloc || !blas_memory_free || !&blas_num_threads) {
        SGBD_LOG(SGBD_LOG_NOTICE, "blas_reserve_skipped",
                 "reason=no_openblas_buffer_table");
        return 0;
    }
    if (threads == 0)
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    rc = start_workers(threads);
    if (rc == 0)
        rc = settle_workers();
    workers = blas_num_threads - 1;
    if (rc == 0 && workers + callers > blas_slots())
        rc = sgbd_errf(SGBD_E_LIMIT, "OpenBLAS work buffers: %d workers and "
                       "%d callers need more than its %d slots; lower "
                       "[server] http_threads", workers, callers,
                       blas_slots());
    if (rc == 0)
        rc = hold_buffers(callers);
    if (rc == 0)
        SGBD_INFO("blas_reserved", "callers=%d workers=%d buffer_mib=%zu "
                  "address_space_mib=%+lld", callers, workers,
                  BLAS_BUFFER >> 20,
                  ((long long)mapped_bytes() - (long long)before) >> 20);
    return rc;
}
