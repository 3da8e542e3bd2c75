/*
 * holdout.h - the data of one online retrain: one consistent read of the
 * store, and the validation holdout for live data (issue #6).
 *
 * A retrain copies what it needs out of one store read snapshot
 * (store.h), so ids, hidden flags, features and the interaction log all
 * describe the same moment, and ends the snapshot at once (no long read
 * transactions, DESIGN.md section 8).
 *
 * The holdout. Imported data keeps its stored labels (MMRec's x_label:
 * train, valid, test). Interactions posted live are all stored as train,
 * so the retrainer holds out its own validation set from them:
 *
 *     a user with no stored valid interaction and at least min_train
 *     train interactions has the latest train interaction (largest
 *     timestamp, ties by the larger sequence number) held out as valid:
 *     every train row of that (user, item) pair moves to valid, and only
 *     when at least one train row of another item remains.
 *
 * The rule is a pure function of the events, so a restart rebuilds
 * exactly the training graph a checkpoint was trained on. The held-out
 * interaction is not trained on until a newer one of the same user
 * replaces it (leave-one-out's usual cost). Users without a train row
 * have their valid and test sets dropped (MMRec's cold-start filter).
 *
 * Ownership: every struct here owns its arrays; free with the matching
 * _free, which accepts a zeroed struct.
 */
#ifndef SGBD_HOLDOUT_H
#define SGBD_HOLDOUT_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/dataset.h"

struct sgbd_store;

/* One logged interaction as a retrain sees it (dense store indices). */
struct sgbd_holdout_event {
    uint64_t seq;                   /* store sequence number */
    uint32_t user, item;
    int64_t timestamp;
    uint8_t label;                  /* enum sgbd_label */
};

/* Everything one retrain reads from the store, at one moment. */
struct sgbd_holdout_data {
    uint32_t n_users, n_items;      /* U, I of the store at the read */
    uint64_t last_seq;              /* newest event of the read, 0: none */
    size_t n_events;
    struct sgbd_holdout_event *events;  /* (n_events), sequence order */
    const char **user_ids;          /* (U) NUL-terminated, into ids */
    const char **item_ids;          /* (I) */
    char *ids;                      /* every id, packed */
    uint8_t *hidden;                /* (I) 1: hidden in the store */
    int n_channels;                 /* defined channels, store order */
    char channel_names[SGBD_MAX_CHANNELS][SGBD_CHANNEL_NAME];
    uint32_t channel_widths[SGBD_MAX_CHANNELS];
    struct sgbd_features feat;      /* (I, D_c) each, zero rows where an
                                       item has no vector; n = 0 when read
                                       without features */
    uint8_t *present[SGBD_MAX_CHANNELS]; /* (I) 1: item has a vector */
};

/*
 * Read the store in one snapshot into *d (zeroed first): sizes, ids,
 * hidden flags, the channel list, the interaction log, and with
 * with_features the channel matrices. Channels are listed before the
 * snapshot begins, so each listed one exists in it.
 * Errors: store errors (SGBD_E_STORE, SGBD_E_CORRUPT), -ENOMEM. On error
 * *d is freed and zeroed.
 */
int sgbd_holdout_read(struct sgbd_store *s, int with_features,
                      struct sgbd_holdout_data *d);
void sgbd_holdout_data_free(struct sgbd_holdout_data *d);

/* Which part of the log a dataset is built from. */
struct sgbd_holdout_opts {
    uint32_t n_users, n_items;      /* prefix: indices below these */
    uint64_t max_seq;               /* events with seq <= max_seq */
    int min_train;                  /* the rule above; 0: stored labels */
};

/*
 * Build the training dataset of the prefix o (U = o->n_users, I =
 * o->n_items, every user and item present even without events) from n
 * events, applying the holdout rule. Train rows keep duplicates in
 * sequence order; sets are sorted and unique; neg_items are the distinct
 * train items. *n_held (may be NULL) gets the number of users whose
 * latest interaction was held out.
 * Errors: SGBD_E_NOTFOUND (no train row in the prefix), SGBD_E_SHAPE
 * (U or I is 0), -ENOMEM. On error *ds is unchanged.
 */
int sgbd_holdout_build(struct sgbd_dataset *ds,
                       const struct sgbd_holdout_event *ev, size_t n,
                       const struct sgbd_holdout_opts *o, size_t *n_held);

/*
 * The serving seen sets: for users u < n_users, every item < n_items
 * they interacted with in any of the n events (any label, any sequence
 * number), sorted and unique: items of u are (*items)[(*ptr)[u] ..
 * (*ptr)[u + 1]). Both arrays are malloc'd; free() them. -ENOMEM.
 */
int sgbd_holdout_seen(const struct sgbd_holdout_event *ev, size_t n,
                      uint32_t n_users, uint32_t n_items, uint64_t **ptr,
                      uint32_t **items);

#endif
