/*
 * prune.h - FREEDOM's degree-sensitive edge pruning (reference/
 * algorithms.md 6.5, freedom.py pre_epoch_processing), private to
 * daemon/models/.
 *
 * Every epoch keep training rows drawn without replacement with
 * probability proportional to w_e = (d_u + 1e-7)^-1/2 (d_i + 1e-7)^-1/2
 * (degrees over all rows, duplicates counted), then weight the kept rows
 * by the same formula over the kept degrees and build the symmetric
 * (N, N) adjacency from them (users first, item i as node U + i;
 * duplicate rows add up, as torch's uncoalesced sparse tensor does).
 */
#ifndef SGBD_MODELS_PRUNE_H
#define SGBD_MODELS_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/csr.h"
#include "sgbd/rng.h"

struct sgbd_prune {
    size_t U, I, n;
    uint32_t *users, *items; /* (n) copies of the training rows */
    float *w;                /* (n) sampling weights w_e */
    double *key;             /* (n) draw keys */
    uint32_t *order;         /* (n) rows by key, the kept ones first */
};

/* Copy the n rows and compute their weights. 0, -ENOMEM (deinit is
 * safe), or SGBD_E_SHAPE for a row outside (U, I). */
int sgbd_prune_init(struct sgbd_prune *p, size_t U, size_t I, size_t n,
                    const uint32_t *users, const uint32_t *items);
void sgbd_prune_deinit(struct sgbd_prune *p);

/*
 * Draw keep rows (Efraimidis-Spirakis keys log(u) / w_e, the same law as
 * torch.multinomial's sequential draws without replacement) and build
 * their adjacency into *out. p->order[0..keep) lists the kept rows.
 * 0, -ENOMEM, or SGBD_E_SHAPE (keep > n); *out untouched on error.
 */
int sgbd_prune_draw(struct sgbd_csr *out, struct sgbd_prune *p, size_t keep,
                    struct sgbd_rng *rng);

#endif
