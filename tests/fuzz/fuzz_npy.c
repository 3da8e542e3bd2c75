/*
 * fuzz_npy.c - the .npy reader (npy.h) on hostile bytes.
 *
 * The input is a whole file. It goes through sgbd_npy_parse_header as a
 * buffer, then through sgbd_npy_read_header and sgbd_npy_read as a file
 * (a memfd reached through /proc/self/fd), which adds the data checks.
 *
 * Invariants: an error leaves every out-parameter untouched and has a
 * short one-line detail naming the file; a parsed header is consistent
 * with the bytes it came from (version, length field, dtype, shape, data
 * size without overflow) and is found again from its own prefix alone; a
 * read matrix has the header's shape and exactly the file's values.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "sgbd/npy.h"

#define NAME "fuzz.npy"

static struct fuzz_file file;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    fuzz_file_init(&file, "fuzz_npy");
    return 0;
}

/* Header length field and prefix size of a file that parsed. */
static size_t declared_offset(const uint8_t *b, int major)
{
    if (major == 1)
        return 10 + ((size_t)b[8] | (size_t)b[9] << 8);
    return 12 + ((size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 |
                 (size_t)b[11] << 24);
}

static void check_header(const struct sgbd_npy_header *h, const uint8_t *b,
                         size_t size)
{
    uint64_t bytes;

    FUZZ_CHECK(size >= 10 && memcmp(b, "\x93NUMPY", 6) == 0);
    FUZZ_CHECK(h->major >= 1 && h->major <= 3 && h->major == b[6]);
    FUZZ_CHECK(h->minor == b[7]);
    FUZZ_CHECK(h->data_offset == declared_offset(b, h->major));
    FUZZ_CHECK(h->data_offset <= size);
    FUZZ_CHECK((strcmp(h->descr, "<f4") == 0 && h->itemsize == 4) ||
               (strcmp(h->descr, "<f8") == 0 && h->itemsize == 8));
    FUZZ_CHECK(h->ndim == 1 || h->ndim == 2);
    FUZZ_CHECK(h->ndim == 2 || h->cols == 1);
    FUZZ_CHECK(!__builtin_mul_overflow((uint64_t)h->rows, (uint64_t)h->cols,
                                       &bytes));
    FUZZ_CHECK(!__builtin_mul_overflow(bytes, (uint64_t)h->itemsize,
                                       &bytes));
    FUZZ_CHECK(bytes == h->data_bytes);
}

/* Field by field: struct copies need not copy the padding. */
static int same_header(const struct sgbd_npy_header *a,
                       const struct sgbd_npy_header *b)
{
    return a->major == b->major && a->minor == b->minor &&
           strcmp(a->descr, b->descr) == 0 && a->itemsize == b->itemsize &&
           a->ndim == b->ndim && a->rows == b->rows && a->cols == b->cols &&
           a->data_offset == b->data_offset && a->data_bytes == b->data_bytes;
}

/* The buffer parser: consistent on success, untouched on failure. */
static int parse_buffer(const uint8_t *data, size_t size,
                        struct sgbd_npy_header *h)
{
    struct sgbd_npy_header again, sentinel;
    int rc;

    memset(h, 0xa5, sizeof(*h));
    sentinel = *h;
    rc = sgbd_npy_parse_header(data, size, NAME, h);
    if (rc != 0) {
        FUZZ_CHECK(rc == SGBD_E_FORMAT);
        fuzz_check_detail(rc, NAME ":");
        FUZZ_CHECK(memcmp(h, &sentinel, sizeof(*h)) == 0);
        return rc;
    }
    check_header(h, data, size);

    /* The header alone is enough, and one byte less is not. */
    memset(&again, 0, sizeof(again));
    FUZZ_CHECK(sgbd_npy_parse_header(data, h->data_offset, NAME, &again) == 0);
    FUZZ_CHECK(same_header(&again, h));
    rc = sgbd_npy_parse_header(data, h->data_offset - 1, NAME, &again);
    FUZZ_CHECK(rc == SGBD_E_FORMAT);
    return 0;
}

/* Every value of m equals the file's, narrowed to float for '<f8'. */
static void check_values(const struct sgbd_mat *m,
                         const struct sgbd_npy_header *h, const uint8_t *b)
{
    const uint8_t *p = b + h->data_offset;
    size_t n = h->rows * h->cols;

    for (size_t i = 0; i < n; i++) {
        float want;
        if (h->itemsize == 4) {
            memcpy(&want, p + 4 * i, 4);
        } else {
            double d;
            memcpy(&d, p + 8 * i, 8);
            want = (float)d;
        }
        if (isnan(want))
            FUZZ_CHECK(isnan(m->data[i]));
        else
            FUZZ_CHECK(memcmp(&want, &m->data[i], 4) == 0);
    }
}

/* The file readers: same header as the buffer parser when the data size
 * fits the file exactly; the matrix holds the file's values. */
static void read_file(const uint8_t *data, size_t size, int parsed,
                      const struct sgbd_npy_header *h)
{
    struct sgbd_npy_header fh, sentinel;
    struct sgbd_mat m, msent;
    int exact, rc;

    fuzz_file_set(&file, data, size);
    exact = parsed == 0 && size - h->data_offset == h->data_bytes;

    memset(&fh, 0x5a, sizeof(fh));
    sentinel = fh;
    rc = sgbd_npy_read_header(file.path, &fh);
    FUZZ_CHECK((rc == 0) == exact);
    if (rc != 0) {
        /* A data-size error still fills *h (read_header promises no
         * more); a header error must leave it alone. */
        fuzz_check_detail(rc, file.path);
        FUZZ_CHECK(memcmp(&fh, &sentinel, sizeof(fh)) == 0 ||
                   (parsed == 0 && same_header(&fh, h)));
    } else {
        FUZZ_CHECK(same_header(&fh, h));
    }

    memset(&m, 0x5a, sizeof(m));
    msent = m;
    rc = sgbd_npy_read(file.path, &m, NULL);
    if (rc != 0) {
        FUZZ_CHECK(!exact || rc == -ENOMEM);
        fuzz_check_detail(rc, file.path);
        FUZZ_CHECK(memcmp(&m, &msent, sizeof(m)) == 0);
        return;
    }
    FUZZ_CHECK(exact);
    FUZZ_CHECK(m.rows == h->rows && m.cols == h->cols && m.stride == m.cols);
    FUZZ_CHECK(((uintptr_t)m.data & 63) == 0);
    check_values(&m, h, data);
    free(m.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sgbd_npy_header h;
    int rc;

    rc = parse_buffer(data, size, &h);
    read_file(data, size, rc, &h);
    return 0;
}
