/*
 * metrics.c - full-ranking Recall / Precision / NDCG / MAP @K
 * (reference/algorithms.md section 4.2).
 *
 * Evaluated users go in blocks of BLOCK: their embeddings are gathered
 * into one (B, D) matrix, one sgemm_nt scores them against every item,
 * then the compute pool runs mask + top-Kmax + metrics per user, writing
 * each user's values into its own slot. The slots are summed serially in
 * user order, so the averages do not depend on the thread count.
 */
#include "sgbd/metrics.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sgbd/err.h"
#include "sgbd/parallel.h"
#include "sgbd/topk.h"

#define BLOCK 256          /* users scored per sgemm */
#define MAX_CUTOFF 65536   /* largest K accepted */
#define N_SPLITS 2         /* valid, test */
#define N_METRICS 4        /* recall, ndcg, precision, map */

enum { M_RECALL, M_NDCG, M_PRECISION, M_MAP };

struct eval_job {
    struct sgbd_mat scores;                    /* (B, I) */
    struct sgbd_mat ublock;                    /* (B, D) gathered users */
    uint32_t *list;                            /* (n_list) evaluated users */
    size_t n_list, block;                      /* how many, B */
    const uint32_t *users;                     /* (B) user ids of the block */
    const struct sgbd_itemsets *mask;          /* may be NULL */
    const struct sgbd_itemsets *truth[N_SPLITS]; /* NULL: split skipped */
    int n_k;
    int ks[SGBD_METRICS_MAX_K];
    int order[SGBD_METRICS_MAX_K];             /* ks positions, K ascending */
    size_t kmax_all, kmax;                     /* max K; at most I */
    double *inv_log;                           /* (kmax_all) 1/log2(r+2) */
    double *idcg;                              /* (kmax_all+1) prefix sums */
    double *vals;                  /* (B, N_SPLITS, N_METRICS, n_k) */
    atomic_int rc;
};

static size_t set_size(const struct sgbd_itemsets *s, uint32_t u)
{
    return (size_t)(s->ptr[u + 1] - s->ptr[u]);
}

static int set_has(const struct sgbd_itemsets *s, uint32_t u, uint32_t item)
{
    const uint32_t *a = s->items + s->ptr[u];
    size_t lo = 0, hi = set_size(s, u);

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < item)
            lo = mid + 1;
        else if (a[mid] > item)
            hi = mid;
        else
            return 1;
    }
    return 0;
}

/* Set the user's train items to -inf so they rank after every other. */
static void mask_row(float *row, const struct sgbd_itemsets *mask,
                     uint32_t u, size_t n_items)
{
    if (!mask)
        return;
    for (uint64_t j = mask->ptr[u]; j < mask->ptr[u + 1]; j++)
        if (mask->items[j] < n_items)
            row[mask->items[j]] = -INFINITY;
}

/*
 * The four metrics of one user at every cut-off, from the ranked list
 * top (n entries) and truth set T_u (m >= 1 items), section 4.2. The
 * cut-offs are visited in ascending order, so one walk down the list
 * serves all; cut-offs beyond the list length see no further hits.
 */
static void user_metrics(const struct eval_job *j, const uint32_t *top,
                         size_t n, const struct sgbd_itemsets *truth,
                         uint32_t u, double *v /* (N_METRICS, n_k) */)
{
    double m = (double)set_size(truth, u), hits = 0, dcg = 0, ap = 0;
    size_t r = 0;

    for (int o = 0; o < j->n_k; o++) {
        int c = j->order[o];
        size_t K = (size_t)j->ks[c], stop = K < n ? K : n;
        for (; r < stop; r++) {
            if (!set_has(truth, u, top[r]))
                continue;
            hits += 1;
            dcg += j->inv_log[r];
            ap += hits / (double)(r + 1);
        }
        double mk = m < (double)K ? m : (double)K;
        v[M_RECALL * j->n_k + c] = hits / m;
        v[M_NDCG * j->n_k + c] = dcg / j->idcg[(size_t)mk];
        v[M_PRECISION * j->n_k + c] = hits / (double)K;
        v[M_MAP * j->n_k + c] = ap / mk;
    }
}

static void eval_users(void *ctx, size_t b0, size_t b1)
{
    struct eval_job *j = ctx;
    uint32_t *top = malloc((j->kmax ? j->kmax : 1) * sizeof(*top));
    struct sgbd_topk t;
    size_t n_items = j->scores.cols;

    if (!top) {
        atomic_store(&j->rc, -ENOMEM);
        return;
    }
    for (size_t b = b0; b < b1; b++) {
        uint32_t u = j->users[b];
        float *row = sgbd_mat_row(j->scores, b);
        mask_row(row, j->mask, u, n_items);
        if (sgbd_topk_init(&t, j->kmax) < 0) {
            atomic_store(&j->rc, -ENOMEM);
            break;
        }
        sgbd_topk_push(&t, row, n_items, 0, NULL);
        size_t n = sgbd_topk_finish(&t, top, NULL);
        sgbd_topk_deinit(&t);
        for (int s = 0; s < N_SPLITS; s++) {
            const struct sgbd_itemsets *truth = j->truth[s];
            if (truth && set_size(truth, u) > 0)
                user_metrics(j, top, n, truth, u,
                             j->vals + (b * N_SPLITS + s) * N_METRICS *
                                           j->n_k);
        }
    }
    free(top);
}

static int check_args(struct sgbd_mat users, struct sgbd_mat items,
                      const int *ks, int n_k)
{
    if (users.cols != items.cols)
        return sgbd_errf(SGBD_E_SHAPE, "metrics: users (%zu, %zu) and "
                         "items (%zu, %zu) differ in width", users.rows,
                         users.cols, items.rows, items.cols);
    if (items.rows >= UINT32_MAX)
        return sgbd_errf(SGBD_E_LIMIT, "metrics: %zu items is above 2^32",
                         items.rows);
    if (n_k < 1 || n_k > SGBD_METRICS_MAX_K)
        return sgbd_errf(SGBD_E_LIMIT, "metrics: %d cut-offs, expected "
                         "1..%d", n_k, SGBD_METRICS_MAX_K);
    for (int c = 0; c < n_k; c++)
        if (ks[c] < 1 || ks[c] > MAX_CUTOFF)
            return sgbd_errf(SGBD_E_LIMIT, "metrics: cut-off %d is outside "
                             "1..%d", ks[c], MAX_CUTOFF);
    return 0;
}

/* Users with at least one truth item in any evaluated split, ascending. */
static uint32_t *evaluated_users(size_t n_users,
                                 const struct sgbd_itemsets *const *truth,
                                 size_t *n_out)
{
    uint32_t *list = malloc((n_users ? n_users : 1) * sizeof(*list));
    size_t n = 0;

    if (!list)
        return NULL;
    for (size_t u = 0; u < n_users; u++)
        for (int s = 0; s < N_SPLITS; s++)
            if (truth[s] && set_size(truth[s], (uint32_t)u) > 0) {
                list[n++] = (uint32_t)u;
                break;
            }
    *n_out = n;
    return list;
}

/* inv_log[r] = 1 / log2(r + 2) (rank r + 1), idcg[c] = its prefix sums. */
static int log_tables(size_t kmax, double **inv_log, double **idcg)
{
    *inv_log = malloc(kmax * sizeof(double));
    *idcg = malloc((kmax + 1) * sizeof(double));
    if (!*inv_log || !*idcg)
        return -ENOMEM;
    (*idcg)[0] = 0;
    for (size_t r = 0; r < kmax; r++) {
        (*inv_log)[r] = 1.0 / log2((double)r + 2.0);
        (*idcg)[r + 1] = (*idcg)[r] + (*inv_log)[r];
    }
    return 0;
}

static void init_out(struct sgbd_metrics *m, const int *ks, int n_k)
{
    memset(m, 0, sizeof(*m));
    m->n_k = n_k;
    memcpy(m->k, ks, (size_t)n_k * sizeof(int));
}

/* Add the block's per-user values, in user order, to the sums. */
static void add_block(const struct eval_job *j, size_t n_block,
                      struct sgbd_metrics *sum[N_SPLITS])
{
    for (size_t b = 0; b < n_block; b++)
        for (int s = 0; s < N_SPLITS; s++) {
            const double *v = j->vals + (b * N_SPLITS + s) * N_METRICS *
                                            j->n_k;
            if (!sum[s] || set_size(j->truth[s], j->users[b]) == 0)
                continue;
            sum[s]->n_users++;
            for (int c = 0; c < j->n_k; c++) {
                sum[s]->recall[c] += v[M_RECALL * j->n_k + c];
                sum[s]->ndcg[c] += v[M_NDCG * j->n_k + c];
                sum[s]->precision[c] += v[M_PRECISION * j->n_k + c];
                sum[s]->map[c] += v[M_MAP * j->n_k + c];
            }
        }
}

static void finish_means(struct sgbd_metrics *m)
{
    if (m->n_users == 0)
        return;
    for (int c = 0; c < m->n_k; c++) {
        m->recall[c] /= (double)m->n_users;
        m->ndcg[c] /= (double)m->n_users;
        m->precision[c] /= (double)m->n_users;
        m->map[c] /= (double)m->n_users;
    }
}

/* j->order = positions of j->ks by ascending K (insertion sort, <= 8). */
static void sort_cutoffs(struct eval_job *j)
{
    for (int c = 0; c < j->n_k; c++) {
        int o = c;
        for (; o > 0 && j->ks[j->order[o - 1]] > j->ks[c]; o--)
            j->order[o] = j->order[o - 1];
        j->order[o] = c;
    }
}

static size_t max_cutoff(const int *ks, int n_k)
{
    size_t kmax = 0;

    for (int c = 0; c < n_k; c++)
        kmax = (size_t)ks[c] > kmax ? (size_t)ks[c] : kmax;
    return kmax;
}

/* Score one block of users and fill j->vals; returns 0 or an error. */
static int eval_block(struct eval_job *j, struct sgbd_mat users,
                      struct sgbd_mat items, const uint32_t *list,
                      size_t n_block)
{
    struct sgbd_mat ub = sgbd_mat_rows(j->ublock, 0, n_block);
    int rc;

    for (size_t b = 0; b < n_block; b++)
        memcpy(sgbd_mat_row(ub, b), sgbd_mat_row(users, list[b]),
               users.cols * sizeof(float));
    j->scores.rows = n_block;
    j->users = list;
    rc = sgbd_mat_gemm_nt(j->scores, ub, items, 1.0f, 0.0f);
    if (rc < 0)
        return rc;
    sgbd_parallel_for(n_block, 16, eval_users, j);
    return atomic_load(&j->rc);
}

/* The job's fixed part: truth sets, cut-offs in ascending order, Kmax. */
static void job_init(struct eval_job *j, const struct sgbd_itemsets *mask,
                     const struct sgbd_itemsets *valid,
                     const struct sgbd_itemsets *test, const int *ks,
                     int n_k, size_t n_items)
{
    memset(j, 0, sizeof(*j));
    j->mask = mask;
    j->truth[0] = valid;
    j->truth[1] = test;
    j->n_k = n_k;
    memcpy(j->ks, ks, (size_t)n_k * sizeof(int));
    sort_cutoffs(j);
    j->kmax_all = max_cutoff(ks, n_k);
    j->kmax = j->kmax_all < n_items ? j->kmax_all : n_items;
    atomic_init(&j->rc, 0);
}

/* The user list, the log tables and the per-block buffers. */
static int job_alloc(struct eval_job *j, size_t n_users, size_t dim,
                     size_t n_items)
{
    int rc;

    j->list = evaluated_users(n_users, j->truth, &j->n_list);
    rc = j->list ? log_tables(j->kmax_all, &j->inv_log, &j->idcg) : -ENOMEM;
    j->block = j->n_list < BLOCK ? j->n_list : BLOCK;
    if (rc < 0 || j->block == 0)
        return rc;
    rc = sgbd_mat_alloc(&j->ublock, j->block, dim);
    if (rc == 0)
        rc = sgbd_mat_alloc(&j->scores, j->block, n_items);
    j->vals = calloc(j->block * N_SPLITS * N_METRICS * (size_t)j->n_k,
                     sizeof(double));
    return rc == 0 && !j->vals ? -ENOMEM : rc;
}

static void job_free(struct eval_job *j)
{
    free(j->vals);
    sgbd_mat_release(&j->scores);
    sgbd_mat_release(&j->ublock);
    free(j->idcg);
    free(j->inv_log);
    free(j->list);
}

int sgbd_metrics_eval2(struct sgbd_metrics *valid_out,
                       struct sgbd_metrics *test_out, struct sgbd_mat users,
                       struct sgbd_mat items,
                       const struct sgbd_itemsets *mask,
                       const struct sgbd_itemsets *valid,
                       const struct sgbd_itemsets *test, const int *ks,
                       int n_k)
{
    struct sgbd_metrics sums[N_SPLITS];
    struct sgbd_metrics *sum[N_SPLITS] = {NULL, NULL};
    struct sgbd_metrics *outs[N_SPLITS] = {valid_out, test_out};
    struct eval_job j;
    int rc = check_args(users, items, ks, n_k);

    if (rc < 0)
        return rc;
    job_init(&j, mask, valid_out ? valid : NULL, test_out ? test : NULL, ks,
             n_k, items.rows);
    for (int s = 0; s < N_SPLITS; s++)
        if (j.truth[s]) {
            init_out(&sums[s], ks, n_k);
            sum[s] = &sums[s];
        }

    rc = job_alloc(&j, users.rows, users.cols, items.rows);
    for (size_t b0 = 0; rc == 0 && b0 < j.n_list; b0 += j.block) {
        size_t nb = j.n_list - b0 < j.block ? j.n_list - b0 : j.block;
        rc = eval_block(&j, users, items, j.list + b0, nb);
        if (rc == 0)
            add_block(&j, nb, sum);
    }
    for (int s = 0; rc == 0 && s < N_SPLITS; s++)
        if (outs[s]) {
            finish_means(&sums[s]);
            *outs[s] = sums[s];
        }
    job_free(&j);
    return rc;
}

int sgbd_metrics_eval(struct sgbd_metrics *out, struct sgbd_mat users,
                      struct sgbd_mat items, const struct sgbd_itemsets *mask,
                      const struct sgbd_itemsets *truth, const int *ks,
                      int n_k)
{
    return sgbd_metrics_eval2(out, NULL, users, items, mask, truth, NULL,
                              ks, n_k);
}

int sgbd_metrics_get(const struct sgbd_metrics *m, const char *name,
                     double *out)
{
    static const char *const names[] = {"recall", "ndcg", "precision",
                                        "map"};
    const double *arrays[] = {m->recall, m->ndcg, m->precision, m->map};
    const char *at = strchr(name, '@');
    char *end;

    if (!at)
        return sgbd_errf(SGBD_E_NOTFOUND, "metric \"%s\": expected "
                         "NAME@K, e.g. recall@20", name);
    long k = strtol(at + 1, &end, 10);
    for (int i = 0; i < 4; i++) {
        if (strlen(names[i]) != (size_t)(at - name) ||
            strncasecmp(name, names[i], (size_t)(at - name)) != 0)
            continue;
        for (int c = 0; c < m->n_k && *end == '\0' && end != at + 1; c++)
            if (m->k[c] == k) {
                *out = arrays[i][c];
                return 0;
            }
        return sgbd_errf(SGBD_E_NOTFOUND, "metric \"%s\": K was not "
                         "evaluated", name);
    }
    return sgbd_errf(SGBD_E_NOTFOUND, "metric \"%s\": unknown, expected "
                     "recall, ndcg, precision or map", name);
}

double sgbd_metrics_round4(double x)
{
    char buf[64];

    if (!isfinite(x))
        return x;
    snprintf(buf, sizeof(buf), "%.4f", x);
    return strtod(buf, NULL);
}

int sgbd_metrics_parse_ks(const char *list, int *ks, int *n_k)
{
    const char *p = list;
    int n = 0;

    for (;;) {
        char *end;
        while (isspace((unsigned char)*p))
            p++;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > MAX_CUTOFF)
            return sgbd_errf(SGBD_E_FORMAT, "topk \"%s\": expected a comma "
                             "list of integers 1..%d", list, MAX_CUTOFF);
        if (n == SGBD_METRICS_MAX_K)
            return sgbd_errf(SGBD_E_FORMAT, "topk \"%s\": more than %d "
                             "cut-offs", list, SGBD_METRICS_MAX_K);
        ks[n++] = (int)k;
        p = end;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        if (*p++ != ',')
            return sgbd_errf(SGBD_E_FORMAT, "topk \"%s\": expected a comma "
                             "list of integers 1..%d", list, MAX_CUTOFF);
    }
    *n_k = n;
    return 0;
}
