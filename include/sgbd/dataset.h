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

void sgbd_dataset_free(struct sgbd_dataset *ds);
void sgbd_features_free(struct sgbd_features *f);

#endif
