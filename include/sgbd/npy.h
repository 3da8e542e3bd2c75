/*
 * npy.h - NumPy .npy files of float matrices (algorithms.md section 2.2).
 *
 * Layout: magic "\x93NUMPY", major and minor version bytes, the header
 * length (uint16 LE for version 1, uint32 LE for versions 2 and 3), an
 * ASCII Python dict {'descr': ..., 'fortran_order': ..., 'shape': (...)}
 * padded with spaces and a newline, then the raw row-major data.
 *
 * Supported: dtypes '<f4' and '<f8' (f8 is converted to float32 on read,
 * as MMRec casts features on load), C order, shapes (rows, cols) and (n,)
 * (read as (n, 1)). Everything else is rejected with SGBD_E_FORMAT and a
 * detail naming the file and the problem. The writer writes version 1,
 * '<f4', 64-byte aligned header.
 */
#ifndef SGBD_NPY_H
#define SGBD_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "sgbd/bulkio.h"
#include "sgbd/mat.h"

struct sgbd_npy_header {
    int major, minor;         /* format version, major 1..3 */
    char descr[8];            /* "<f4" or "<f8" */
    size_t itemsize;          /* 4 or 8 */
    int ndim;                 /* 1 or 2, as written in the file */
    size_t rows, cols;        /* (n,) is reported as rows n, cols 1 */
    size_t data_offset;       /* bytes from the file start to the data */
    uint64_t data_bytes;      /* rows * cols * itemsize */
};

/*
 * Parse the header at the start of buf (len bytes, at least up to the end
 * of the header). name is used in messages. SGBD_E_FORMAT for a bad magic,
 * unknown version, malformed dict (missing, duplicate or unknown keys),
 * unsupported dtype, fortran order, shapes of other rank, or a size that
 * overflows; "truncated header" when len ends inside it.
 */
int sgbd_npy_parse_header(const void *buf, size_t len, const char *name,
                          struct sgbd_npy_header *h);

/*
 * Read and check only the header of the file at path. Errors as
 * sgbd_npy_parse_header, plus -errno when the file cannot be read and
 * SGBD_E_FORMAT "truncated data" when the file is shorter than the header
 * says (or "trailing bytes" when it is longer).
 */
int sgbd_npy_read_header(const char *path, struct sgbd_npy_header *h);

/*
 * Read the matrix at path into *out: out->data is a new 64-byte aligned
 * float buffer (rows, cols) row-major, stride = cols, owned by the caller
 * and released with free(out->data). The data goes through bulkio with io
 * (may be NULL: defaults). Errors as sgbd_npy_read_header, -ENOMEM, and
 * the bulkio read errors; *out is unchanged on error.
 */
int sgbd_npy_read(const char *path, struct sgbd_mat *out,
                  const struct sgbd_bulkio_opts *io);

/*
 * Write m as a version-1 '<f4' file at path, atomically: the data goes to
 * a temporary file in the same directory, is fsync'ed, then renamed over
 * path, so a reader sees the old file or the whole new one. Honours
 * m.stride. Errors: -errno from the file system (the detail names the
 * path); on error path is unchanged.
 */
int sgbd_npy_write(const char *path, struct sgbd_mat m);

#endif
