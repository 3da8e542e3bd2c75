/*
 * dataset.h - an interaction dataset split into train / valid / test, and
 * the item feature channels that go with it.
 *
 * Ids are dense: users 0..U-1, items 0..I-1. U and I are max id + 1 over
 * all splits (MMRec), so an item seen only in valid or test exists and can
 * be recommended. Training rows keep duplicates and file order (BPR samples
 * rows); the per-user sets are sorted and unique (masking, negatives).
 */
#ifndef SGBD_DATASET_H
#define SGBD_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/mat.h"

/* Per-user sorted unique item lists: items of user u are
 * items[ptr[u] .. ptr[u+1]). */
struct sgbd_itemsets {
    uint64_t *ptr;    /* (U + 1) */
    uint32_t *items;  /* (ptr[U]) */
};

struct sgbd_dataset {
    uint32_t n_users, n_items;          /* U, I */
    size_t n_train;                     /* training rows, duplicates kept */
    uint32_t *train_users;              /* (n_train) */
    uint32_t *train_items;              /* (n_train) */
    struct sgbd_itemsets train, valid, test;
    uint32_t *neg_items;                /* distinct train items, ascending */
    size_t n_neg_items;                 /* BPR negatives come from these */
};

#define SGBD_MAX_CHANNELS 8
#define SGBD_CHANNEL_NAME 32

/* One feature channel: row i is the feature vector of item i. */
struct sgbd_channel {
    char name[SGBD_CHANNEL_NAME];  /* "image", "text", ... */
    struct sgbd_mat m;             /* (I, D_c), owned */
};

struct sgbd_features {
    int n;                         /* channels present, 0..SGBD_MAX_CHANNELS */
    struct sgbd_channel ch[SGBD_MAX_CHANNELS];
};

/* Whether user u has item i in the set (binary search). */
int sgbd_itemsets_has(const struct sgbd_itemsets *s, uint32_t u, uint32_t i);

/* Sort each of the n_users segments of s and drop repeats, compacting
 * items in place and rewriting ptr: how the builders turn grouped rows
 * into sets. */
void sgbd_itemsets_sort_unique(struct sgbd_itemsets *s, uint32_t n_users);

void sgbd_dataset_free(struct sgbd_dataset *ds);
void sgbd_features_free(struct sgbd_features *f);

struct sgbd_inter;
struct sgbd_bulkio_opts;

/* Number of (user, item) pairs in a set: ptr[U]. */
static inline uint64_t sgbd_itemsets_total(const struct sgbd_itemsets *s,
                                           uint32_t n_users)
{
    return s->ptr ? s->ptr[n_users] : 0;
}

/*
 * Build *ds from raw rows (inter.h) exactly as MMRec's loader does
 * (algorithms.md 2.1): U = max userID + 1 and I = max itemID + 1 over all
 * splits; train rows keep duplicates and file order; valid and test rows
 * of users without a train row are dropped (filter_out_cold_start_users);
 * per-user sets are sorted and unique; neg_items are the distinct train
 * items, ascending. SGBD_E_FORMAT when there are no train rows or when
 * the ids are far from dense (a max id of 4 n + 1024 or more for n rows,
 * which would only waste memory); -ENOMEM.
 * On error *ds is unchanged. Free with sgbd_dataset_free().
 */
int sgbd_dataset_build(struct sgbd_dataset *ds, const struct sgbd_inter *rows);

/*
 * Load the dataset of an MMRec folder: the single "*.inter" file in dir,
 * read through bulkio (io may be NULL). SGBD_E_NOTFOUND when dir holds no
 * .inter file, SGBD_E_FORMAT when it holds several (both name dir), the
 * errors of sgbd_inter_read and sgbd_dataset_build, -errno when dir cannot
 * be listed. Logs ev=dataset_loaded with the sizes.
 */
int sgbd_dataset_load_dir(struct sgbd_dataset *ds, const char *dir,
                          const struct sgbd_bulkio_opts *io);

/* The path of the single .inter file in dir, into path (size n). Errors
 * as sgbd_dataset_load_dir, and -ENAMETOOLONG when path is too small. */
int sgbd_dataset_find_inter(const char *dir, char *path, size_t n);

/*
 * Load every "<name>_feat.npy" of dir as channel <name> (image_feat.npy is
 * "image"), channels sorted by name. Each must have n_items rows
 * (SGBD_E_SHAPE naming the file otherwise) and only finite values
 * (SGBD_E_FORMAT naming file, row and column). SGBD_E_LIMIT past
 * SGBD_MAX_CHANNELS files or for a name of SGBD_CHANNEL_NAME bytes or
 * more; npy read errors. A folder without feature files gives n = 0. On
 * error *f is unchanged. Free with sgbd_features_free().
 */
int sgbd_features_load_dir(struct sgbd_features *f, const char *dir,
                           uint32_t n_items,
                           const struct sgbd_bulkio_opts *io);

/* Channel called name, or NULL. */
const struct sgbd_channel *sgbd_features_find(const struct sgbd_features *f,
                                              const char *name);

/*
 * Add i.i.d. Gaussian noise N(0, sigma^2) to every feature value (the
 * --feature-noise experiment). Stream SGBD_RNG_NOISE; each channel's noise
 * depends only on (seed, channel name), not on the other channels.
 * sigma is absolute, in the features' own units. -EINVAL when sigma is
 * negative or not finite; sigma 0 changes nothing.
 */
int sgbd_features_add_noise(struct sgbd_features *f, double sigma,
                            uint64_t seed);

#endif
