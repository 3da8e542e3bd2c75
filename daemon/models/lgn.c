/* lgn.c - LightGCN propagation on batch rows (see lgn.h). */
#include "lgn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sgbd/layers.h"
#include "sgbd/mat.h"

int sgbd_lgn_init(struct sgbd_lgn *p, size_t N, size_t D, int L)
{
    memset(p, 0, sizeof(*p));
    p->N = N;
    p->D = D;
    p->L = L;
    p->xa = malloc(N * D * sizeof(float) + 1);
    p->xb = malloc(N * D * sizeof(float) + 1);
    p->g = calloc(N * D + 1, sizeof(float));
    return p->xa && p->xb && p->g ? 0 : -ENOMEM;
}

void sgbd_lgn_deinit(struct sgbd_lgn *p)
{
    if (!p)
        return;
    free(p->g), free(p->xb), free(p->xa);
    memset(p, 0, sizeof(*p));
}

static int spmm(const struct sgbd_lgn *p, const struct sgbd_csr *adj, float *y,
                const float *x, float beta)
{
    return sgbd_csr_spmm(sgbd_mat_view(y, p->N, p->D), adj,
                         sgbd_mat_view((float *)x, p->N, p->D), 1.0f, beta);
}

int sgbd_lgn_forward_rows(struct sgbd_lgn *p, const struct sgbd_csr *adj,
                          const float *x0, const uint32_t *idx, size_t n,
                          float *out)
{
    const float *cur = x0;
    size_t D = p->D;

    sgbd_layer_gather_rows(out, x0, idx, n, D);
    for (int l = 1; l <= p->L; l++) {
        float *nxt = (l & 1) ? p->xa : p->xb;
        int rc = spmm(p, adj, nxt, cur, 0.0f);
        if (rc < 0)
            return rc;
        for (size_t r = 0; r < n; r++)
            sgbd_mat_axpy(D, 1.0f, nxt + (size_t)idx[r] * D, out + r * D);
        cur = nxt;
    }
    sgbd_mat_scale(n * D, 1.0f / (float)(p->L + 1), out);
    return 0;
}

/* dst rows idx += c * dout. */
static void scatter_scaled(float *dst, const float *dout, const uint32_t *idx,
                           size_t n, size_t D, float c)
{
    for (size_t r = 0; r < n; r++)
        sgbd_mat_axpy(D, c, dout + r * D, dst + (size_t)idx[r] * D);
}

int sgbd_lgn_backward_rows(struct sgbd_lgn *p, const struct sgbd_csr *adj,
                           const float *dout, const uint32_t *idx, size_t n,
                           float *gx0)
{
    float c = 1.0f / (float)(p->L + 1);
    const float *cur = p->g;
    size_t D = p->D;
    int rc = 0;

    if (p->L > 0)
        scatter_scaled(p->g, dout, idx, n, D, c);
    for (int k = 1; k < p->L && rc == 0; k++) {
        float *nxt = (k & 1) ? p->xa : p->xb;
        rc = spmm(p, adj, nxt, cur, 0.0f);
        scatter_scaled(nxt, dout, idx, n, D, c);
        cur = nxt;
    }
    if (p->L > 0 && rc == 0)
        rc = spmm(p, adj, gx0, cur, 1.0f);
    for (size_t r = 0; r < n; r++) /* g back to all zeros */
        memset(p->g + (size_t)idx[r] * D, 0, D * sizeof(float));
    if (rc == 0)
        scatter_scaled(gx0, dout, idx, n, D, c);
    return rc;
}

int sgbd_lgn_forward_all(struct sgbd_lgn *p, const struct sgbd_csr *adj,
                         const float *x0, float *out)
{
    const float *cur = x0;
    size_t nd = p->N * p->D;

    memcpy(out, x0, nd * sizeof(float));
    for (int l = 1; l <= p->L; l++) {
        float *nxt = (l & 1) ? p->xa : p->xb;
        int rc = spmm(p, adj, nxt, cur, 0.0f);
        if (rc < 0)
            return rc;
        sgbd_mat_axpy_wide(nd, 1.0f, nxt, out);
        cur = nxt;
    }
    sgbd_mat_scale(nd, 1.0f / (float)(p->L + 1), out);
    return 0;
}
