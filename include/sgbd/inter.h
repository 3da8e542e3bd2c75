/*
 * inter.h - MMRec interaction files, <name>.inter (algorithms.md 2.1).
 *
 * Tab-separated text with a header line of column names. The columns
 * userID, itemID and x_label are located by name, in any order; other
 * columns (rating, timestamp, ...) are ignored. Ids are whole numbers
 * 0 .. 2^31-1; x_label is 0 (train), 1 (valid) or 2 (test). Lines may end
 * in "\r\n"; empty lines are allowed only at the end of the file.
 *
 * The reader returns the raw rows in file order; dataset.h builds the
 * splits from them. Every rejection is one line "FILE:LINE: problem".
 */
#ifndef SGBD_INTER_H
#define SGBD_INTER_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/bulkio.h"

enum sgbd_split {
    SGBD_SPLIT_TRAIN = 0,
    SGBD_SPLIT_VALID = 1,
    SGBD_SPLIT_TEST = 2,
};

/* The rows of one file; owns its arrays. */
struct sgbd_inter {
    size_t n;           /* rows */
    uint32_t *users;    /* (n) userID */
    uint32_t *items;    /* (n) itemID */
    uint8_t *labels;    /* (n) x_label, enum sgbd_split */
};

/*
 * Parse len bytes of text (need not be NUL-terminated); name is used as
 * FILE in messages. SGBD_E_FORMAT, with "name:line: why" as the detail,
 * for: no header line, a missing or repeated required column, a row with
 * the wrong number of columns, an id that is empty, negative, not a whole
 * number or too large, an x_label other than 0/1/2. -ENOMEM. On error
 * *out is unchanged.
 */
int sgbd_inter_parse(struct sgbd_inter *out, const char *text, size_t len,
                     const char *name);

/* Read the file at path through bulkio (io may be NULL) and parse it.
 * Errors of sgbd_bulkio_read_file and sgbd_inter_parse. */
int sgbd_inter_read(struct sgbd_inter *out, const char *path,
                    const struct sgbd_bulkio_opts *io);

/* Free the arrays and zero *r; accepts NULL. */
void sgbd_inter_free(struct sgbd_inter *r);

#endif
