/*
 * bpr.c - the MMRec BPR sampler and the shared loss kernels (bpr.h;
 * reference/algorithms.md 3.1, 5.5).
 */
#include "sgbd/bpr.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/err.h"
#include "sgbd/mmrec_rng.h"

struct sgbd_bpr_sampler {
    const struct sgbd_dataset *ds;
    size_t batch_size;           /* B */
    size_t next;                 /* first row of the next batch in order */
    uint32_t *order;             /* (n_train) permutation of this epoch */
    uint32_t *users, *pos, *neg; /* (B) the current batch */
    struct sgbd_rng shuffle, negative;
    struct mmrec_streams *mmrec; /* NULL, or MMRec's own draws */
};

/* MMRec's NumPy and Python generators, and the order of the negative
 * items that Python's shuffle gave (mmrec_rng.h). */
struct mmrec_streams {
    struct sgbd_mt19937 numpy, python;
    uint32_t *items; /* (n_neg_items) */
};

static int check_dataset(const struct sgbd_dataset *ds)
{
    if (ds->n_train == 0 || ds->n_train > UINT32_MAX)
        return sgbd_errf(SGBD_E_FORMAT, "bpr: %zu training rows; need 1 to "
                         "%u", ds->n_train, UINT32_MAX);
    if (ds->n_neg_items == 0)
        return sgbd_errf(SGBD_E_FORMAT, "bpr: no negative items");
    for (size_t r = 0; r < ds->n_train; r++)
        if (ds->train_users[r] >= ds->n_users ||
            ds->train_items[r] >= ds->n_items)
            return sgbd_errf(SGBD_E_FORMAT, "bpr: training row %zu (user "
                             "%u, item %u) out of range (%u users, %u items)",
                             r, ds->train_users[r], ds->train_items[r],
                             ds->n_users, ds->n_items);
    /* A user's train set is a subset of neg_items (the distinct train
     * items), so a set as large as neg_items leaves nothing to draw. */
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t d = ds->train.ptr[u + 1] - ds->train.ptr[u];
        if (d > 0 && d >= ds->n_neg_items)
            return sgbd_errf(SGBD_E_FORMAT, "bpr: user %u has all %zu "
                             "negative items in training; no negative can "
                             "be drawn", u, ds->n_neg_items);
    }
    return 0;
}

int sgbd_bpr_sampler_new(struct sgbd_bpr_sampler **out,
                         const struct sgbd_dataset *ds, size_t batch_size,
                         uint64_t seed)
{
    struct sgbd_bpr_sampler *s;
    size_t b;
    int rc;

    *out = NULL;
    if (batch_size == 0)
        return sgbd_errf(SGBD_E_CONFIG, "bpr: batch_size must be >= 1");
    rc = check_dataset(ds);
    if (rc < 0)
        return rc;

    s = calloc(1, sizeof(*s));
    if (!s)
        return sgbd_errf(-ENOMEM, "bpr: cannot allocate a sampler");
    b = batch_size < ds->n_train ? batch_size : ds->n_train;
    s->ds = ds;
    s->batch_size = batch_size;
    s->order = malloc(ds->n_train * sizeof(uint32_t));
    s->users = malloc(b * sizeof(uint32_t));
    s->pos = malloc(b * sizeof(uint32_t));
    s->neg = malloc(b * sizeof(uint32_t));
    if (!s->order || !s->users || !s->pos || !s->neg) {
        sgbd_bpr_sampler_free(s);
        return sgbd_errf(-ENOMEM, "bpr: cannot allocate a sampler for %zu "
                         "rows", ds->n_train);
    }
    sgbd_rng_init(&s->shuffle, seed, SGBD_RNG_SHUFFLE);
    sgbd_rng_init(&s->negative, seed, SGBD_RNG_NEGATIVE);
    for (size_t r = 0; r < ds->n_train; r++)
        s->order[r] = (uint32_t)r;
    s->next = ds->n_train; /* no epoch begun yet */
    *out = s;
    return 0;
}

int sgbd_bpr_sampler_new_mmrec(struct sgbd_bpr_sampler **out,
                               const struct sgbd_dataset *ds,
                               size_t batch_size, uint32_t seed)
{
    struct mmrec_streams *m;
    int rc = sgbd_bpr_sampler_new(out, ds, batch_size, seed);

    if (rc < 0)
        return rc;
    if (ds->n_neg_items > UINT32_MAX)
        rc = sgbd_errf(SGBD_E_FORMAT, "bpr: %zu negative items; MMRec's "
                       "streams draw at most %u", ds->n_neg_items,
                       UINT32_MAX);
    m = rc == 0 ? calloc(1, sizeof(*m)) : NULL;
    if (m)
        m->items = malloc(ds->n_neg_items * sizeof(uint32_t));
    if (rc == 0 && (!m || !m->items))
        rc = sgbd_errf(-ENOMEM, "bpr: cannot allocate MMRec's streams");
    if (rc < 0) {
        if (m)
            free(m->items);
        free(m);
        sgbd_bpr_sampler_free(*out);
        *out = NULL;
        return rc;
    }
    sgbd_mt_seed(&m->numpy, seed);
    sgbd_mt_seed_python(&m->python, seed);
    /* pretrain_setup: all_items sorted, then random.shuffle */
    memcpy(m->items, ds->neg_items, ds->n_neg_items * sizeof(uint32_t));
    sgbd_py_shuffle_u32(&m->python, m->items, ds->n_neg_items);
    (*out)->mmrec = m;
    return 0;
}

void sgbd_bpr_sampler_free(struct sgbd_bpr_sampler *s)
{
    if (!s)
        return;
    if (s->mmrec)
        free(s->mmrec->items);
    free(s->mmrec);
    free(s->neg);
    free(s->pos);
    free(s->users);
    free(s->order);
    free(s);
}

size_t sgbd_bpr_n_batches(const struct sgbd_bpr_sampler *s)
{
    return (s->ds->n_train + s->batch_size - 1) / s->batch_size;
}

/* Shuffle the previous epoch's order: a uniform permutation either way,
 * and it saves rewriting the identity every epoch. */
void sgbd_bpr_epoch_begin(struct sgbd_bpr_sampler *s)
{
    if (s->mmrec) /* DataFrame.sample(frac=1) of the last epoch's order */
        sgbd_np_shuffle_u32(&s->mmrec->numpy, s->order, s->ds->n_train);
    else
        sgbd_rng_shuffle_u32(&s->shuffle, s->order, s->ds->n_train);
    s->next = 0;
}

/*
 * Whether user u trained on item i. This runs once per draw, so it is
 * written without data-dependent branches: most users have a handful of
 * items and a mispredicted binary-search branch costs more than scanning
 * them all; longer sets use a branchless binary search (the last element
 * <= i, compared with i).
 */
static inline int in_train(const struct sgbd_itemsets *t, uint32_t u,
                           uint32_t i)
{
    const uint32_t *a = t->items + t->ptr[u];
    size_t n = t->ptr[u + 1] - t->ptr[u];
    int found = 0;

    if (n <= 16) {
        for (size_t k = 0; k < n; k++)
            found |= a[k] == i;
        return found;
    }
    while (n > 1) {
        size_t half = n / 2;
        a = a[half] <= i ? a + half : a;
        n -= half;
    }
    return *a == i;
}

static uint32_t draw_negative(struct sgbd_bpr_sampler *s, uint32_t u)
{
    const struct sgbd_dataset *ds = s->ds;
    struct mmrec_streams *m = s->mmrec;
    uint32_t i;

    do
        i = m ? m->items[sgbd_py_randbelow(&m->python,
                                           (uint32_t)ds->n_neg_items)]
              : ds->neg_items[sgbd_rng_below(&s->negative, ds->n_neg_items)];
    while (in_train(&ds->train, u, i));
    return i;
}

int sgbd_bpr_next(struct sgbd_bpr_sampler *s, struct sgbd_batch *b)
{
    const struct sgbd_dataset *ds = s->ds;
    size_t n = ds->n_train - s->next;

    if (n == 0)
        return 0;
    if (n > s->batch_size)
        n = s->batch_size;
    for (size_t k = 0; k < n; k++) {
        uint32_t r = s->order[s->next + k];
        s->users[k] = ds->train_users[r];
        s->pos[k] = ds->train_items[r];
        s->neg[k] = draw_negative(s, s->users[k]);
    }
    s->next += n;
    b->n = n;
    b->users = s->users;
    b->pos = s->pos;
    b->neg = s->neg;
    return 1;
}

const uint32_t *sgbd_bpr_order(const struct sgbd_bpr_sampler *s)
{
    return s->order;
}

/* softplus(z) = ln(1 + e^z) without overflow. */
static double softplus(double z)
{
    return (z > 0 ? z : 0.0) + log1p(exp(-fabs(z)));
}

static double sigmoid(double z)
{
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

double sgbd_bpr_loss_ln(size_t n, const float *x, float *dx, double w)
{
    double sum = 0.0, c = w / (double)n;

    for (size_t b = 0; b < n; b++) {
        double s = sigmoid(x[b]), q = 1e-10 + s;
        sum -= log(q);
        if (dx) /* d/dx -ln(eps + s) = -s (1 - s) / (eps + s) */
            dx[b] += (float)(-c * s * (1.0 - s) / q);
    }
    return c * sum;
}

double sgbd_bpr_loss_log2(size_t n, const float *x, float *dx, double w)
{
    const double ln2 = 0.69314718055994530942;
    double sum = 0.0, c = w / ((double)n * ln2);

    for (size_t b = 0; b < n; b++) {
        sum += softplus(-(double)x[b]);
        if (dx) /* d/dx softplus(-x) = -sigmoid(-x) */
            dx[b] += (float)(-c * sigmoid(-(double)x[b]));
    }
    return c * sum;
}

double sgbd_bpr_loss_logsig(size_t n, const float *x, float *dx, double w)
{
    double sum = 0.0, c = w / (double)n;

    for (size_t b = 0; b < n; b++) {
        sum += softplus(-(double)x[b]);
        if (dx)
            dx[b] += (float)(-c * sigmoid(-(double)x[b]));
    }
    return c * sum;
}

static double sum_sq(struct sgbd_mat m)
{
    double acc = 0.0;

    for (size_t r = 0; r < m.rows; r++) {
        const float *row = sgbd_mat_row(m, r);
        for (size_t c = 0; c < m.cols; c++)
            acc += (double)row[c] * row[c];
    }
    return acc;
}

/* dL/dE = E / ||E||_F per matrix (zero where ||E|| = 0, as torch gives). */
static void add_scaled(struct sgbd_mat dst, struct sgbd_mat src, double c)
{
    for (size_t r = 0; r < src.rows; r++) {
        const float *s = sgbd_mat_row(src, r);
        float *d = sgbd_mat_row(dst, r);
        for (size_t k = 0; k < src.cols; k++)
            d[k] += (float)(c * s[k]);
    }
}

double sgbd_emb_loss(int k, const struct sgbd_mat *e, struct sgbd_mat *de,
                     double w)
{
    double sum = 0.0, c;

    if (k <= 0 || e[k - 1].rows == 0)
        return 0.0;
    c = w / (double)e[k - 1].rows;
    for (int j = 0; j < k; j++) {
        double norm = sqrt(sum_sq(e[j]));
        sum += norm;
        if (de && norm > 0)
            add_scaled(de[j], e[j], c / norm);
    }
    return c * sum;
}

double sgbd_mean_sq_loss(struct sgbd_mat x, struct sgbd_mat *dx, double w)
{
    double numel = (double)x.rows * (double)x.cols, c;

    if (numel == 0)
        return 0.0;
    c = w / numel;
    if (dx)
        add_scaled(*dx, x, 2.0 * c);
    return c * sum_sq(x);
}
