/*
 * npy.c - .npy float matrices: a strict header parser, a reader through
 * bulkio and an atomic version-1 writer (algorithms.md section 2.2).
 */
#include "sgbd/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sgbd/err.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads '<f4'/'<f8' data in place and needs a little-endian host"
#endif

#define MAGIC "\x93NUMPY"
#define MAGIC_LEN 6
#define MAX_HEADER ((size_t)1 << 20) /* numpy itself refuses far less */
#define MAX_DIMS 8

/* A cursor over the header dict; name is the file, for messages. */
struct cursor {
    const char *start, *p, *end;
    const char *name;
};

struct dict {
    char descr[64];
    int fortran;
    int ndim;
    size_t dims[MAX_DIMS];
};

static int malformed(const struct cursor *c, const char *what)
{
    return sgbd_errf(SGBD_E_FORMAT, "%s: malformed .npy header dict: %s at "
                     "offset %zu", c->name, what, (size_t)(c->p - c->start));
}

static void skip_ws(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' ||
                             *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int accept(struct cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A Python string literal in ' or " without escapes, into out (size n). */
static int parse_string(struct cursor *c, char *out, size_t n)
{
    const char *q;
    char quote;

    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    quote = *c->p;
    q = memchr(c->p + 1, quote, (size_t)(c->end - c->p - 1));
    if (!q || (size_t)(q - c->p - 1) >= n || memchr(c->p + 1, '\\',
                                                    (size_t)(q - c->p - 1)))
        return -1;
    memcpy(out, c->p + 1, (size_t)(q - c->p - 1));
    out[q - c->p - 1] = '\0';
    c->p = q + 1;
    return 0;
}

static int parse_word(struct cursor *c, const char *word)
{
    size_t n = strlen(word);

    skip_ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

/* A non-negative integer; Python 2 numpy wrote a trailing 'L'. */
static int parse_size(struct cursor *c, size_t *out)
{
    size_t v = 0;
    int digits = 0;

    skip_ws(c);
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        size_t d = (size_t)(*c->p++ - '0');
        if (v > (SIZE_MAX - d) / 10)
            return sgbd_errf(SGBD_E_FORMAT, "%s: .npy shape dimension "
                             "overflows", c->name);
        v = v * 10 + d;
        digits++;
    }
    if (digits == 0)
        return malformed(c, "expected a dimension in 'shape'");
    if (c->p < c->end && *c->p == 'L')
        c->p++;
    *out = v;
    return 0;
}

/* A tuple of sizes: (), (n,), (r, c), ... */
static int parse_shape(struct cursor *c, struct dict *d)
{
    int rc;

    if (!accept(c, '('))
        return malformed(c, "'shape' is not a tuple");
    d->ndim = 0;
    while (!accept(c, ')')) {
        if (d->ndim == MAX_DIMS)
            return sgbd_errf(SGBD_E_FORMAT, "%s: .npy shape has more than "
                             "%d dimensions", c->name, MAX_DIMS);
        rc = parse_size(c, &d->dims[d->ndim++]);
        if (rc != 0)
            return rc;
        if (!accept(c, ',')) {
            if (!accept(c, ')'))
                return malformed(c, "expected ',' or ')' in 'shape'");
            break;
        }
    }
    return 0;
}

static int parse_value(struct cursor *c, const char *key, struct dict *d)
{
    if (strcmp(key, "descr") == 0) {
        if (parse_string(c, d->descr, sizeof(d->descr)) != 0)
            return sgbd_errf(SGBD_E_FORMAT, "%s: unsupported .npy dtype "
                             "(not a simple type; need '<f4' or '<f8')",
                             c->name);
        return 0;
    }
    if (strcmp(key, "fortran_order") == 0) {
        if (parse_word(c, "True"))
            d->fortran = 1;
        else if (parse_word(c, "False"))
            d->fortran = 0;
        else
            return malformed(c, "'fortran_order' is not True or False");
        return 0;
    }
    if (strcmp(key, "shape") == 0)
        return parse_shape(c, d);
    return sgbd_errf(SGBD_E_FORMAT, "%s: malformed .npy header dict: "
                     "unknown key '%s'", c->name, key);
}

static int key_bit(const char *key)
{
    if (strcmp(key, "descr") == 0)
        return 1;
    if (strcmp(key, "fortran_order") == 0)
        return 2;
    return strcmp(key, "shape") == 0 ? 4 : 8;
}

/* {'descr': S, 'fortran_order': B, 'shape': T} in any order, each once,
 * optional trailing comma, then only padding. */
static int parse_dict(struct cursor *c, struct dict *d)
{
    static const char *const names[] = {"descr", "fortran_order", "shape"};
    char key[32];
    int seen = 0, rc;

    if (!accept(c, '{'))
        return malformed(c, "expected '{'");
    while (!accept(c, '}')) {
        if (parse_string(c, key, sizeof(key)) != 0)
            return malformed(c, "expected a quoted key");
        if (seen & key_bit(key))
            return sgbd_errf(SGBD_E_FORMAT, "%s: malformed .npy header dict:"
                             " key '%s' twice", c->name, key);
        seen |= key_bit(key);
        if (!accept(c, ':'))
            return malformed(c, "expected ':' after a key");
        rc = parse_value(c, key, d);
        if (rc != 0)
            return rc;
        if (!accept(c, ',')) {
            if (!accept(c, '}'))
                return malformed(c, "expected ',' or '}'");
            break;
        }
    }
    for (int i = 0; i < 3; i++)
        if (!(seen & (1 << i)))
            return sgbd_errf(SGBD_E_FORMAT, "%s: malformed .npy header dict:"
                             " no '%s'", c->name, names[i]);
    skip_ws(c);
    while (c->p < c->end && *c->p == '\0')
        c->p++;
    if (c->p != c->end)
        return malformed(c, "text after '}'");
    return 0;
}

/* Version, header length and where the data starts; *need is the number
 * of bytes the whole header takes, or 0 when not known yet. */
static int parse_prefix(const unsigned char *b, size_t len, const char *name,
                        struct sgbd_npy_header *h, size_t *need)
{
    size_t hlen;

    *need = 0;
    if (memcmp(b, MAGIC, len < MAGIC_LEN ? len : MAGIC_LEN) != 0)
        return sgbd_errf(SGBD_E_FORMAT, "%s: not a .npy file (bad magic)",
                         name);
    if (len < 10)
        return sgbd_errf(SGBD_E_FORMAT, "%s: truncated .npy header", name);
    h->major = b[6];
    h->minor = b[7];
    if (h->major == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        h->data_offset = 10 + hlen;
    } else if (h->major == 2 || h->major == 3) {
        if (len < 12)
            return sgbd_errf(SGBD_E_FORMAT, "%s: truncated .npy header", name);
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 |
               (size_t)b[11] << 24;
        h->data_offset = 12 + hlen;
    } else {
        return sgbd_errf(SGBD_E_FORMAT, "%s: unsupported .npy version %d.%d",
                         name, h->major, h->minor);
    }
    if (hlen > MAX_HEADER)
        return sgbd_errf(SGBD_E_FORMAT, "%s: .npy header of %zu bytes is too "
                         "long", name, hlen);
    *need = h->data_offset;
    if (len < h->data_offset)
        return sgbd_errf(SGBD_E_FORMAT, "%s: truncated .npy header", name);
    return 0;
}

/* From the parsed dict to dtype and (rows, cols), with every check. */
static int check_dict(const struct dict *d, const char *name,
                      struct sgbd_npy_header *h)
{
    if (strcmp(d->descr, "<f4") == 0)
        h->itemsize = 4;
    else if (strcmp(d->descr, "<f8") == 0)
        h->itemsize = 8;
    else
        return sgbd_errf(SGBD_E_FORMAT, "%s: .npy dtype '%s' not supported "
                         "(need '<f4' or '<f8')", name, d->descr);
    if (d->fortran)
        return sgbd_errf(SGBD_E_FORMAT, "%s: .npy fortran_order True not "
                         "supported (need C order)", name);
    if (d->ndim != 1 && d->ndim != 2)
        return sgbd_errf(SGBD_E_FORMAT, "%s: .npy shape has %d dimensions "
                         "(need 2)", name, d->ndim);
    memcpy(h->descr, d->descr, 4); /* "<f4" or "<f8" with its NUL */
    h->ndim = d->ndim;
    h->rows = d->dims[0];
    h->cols = d->ndim == 2 ? d->dims[1] : 1;
    if (__builtin_mul_overflow((uint64_t)h->rows, (uint64_t)h->cols,
                               &h->data_bytes) ||
        __builtin_mul_overflow(h->data_bytes, (uint64_t)h->itemsize,
                               &h->data_bytes) ||
        h->data_bytes > SIZE_MAX / 2)
        return sgbd_errf(SGBD_E_FORMAT, "%s: .npy shape (%zu, %zu) is too "
                         "large", name, h->rows, h->cols);
    return 0;
}

static int parse_header(const void *buf, size_t len, const char *name,
                        struct sgbd_npy_header *h, size_t *need)
{
    struct sgbd_npy_header tmp;
    struct dict d;
    struct cursor c;
    size_t prefix;
    int rc;

    memset(&tmp, 0, sizeof(tmp));
    memset(&d, 0, sizeof(d));
    rc = parse_prefix(buf, len, name, &tmp, need);
    if (rc != 0)
        return rc;
    prefix = tmp.major == 1 ? 10 : 12;
    c.start = c.p = (const char *)buf + prefix;
    c.end = (const char *)buf + tmp.data_offset;
    c.name = name;
    rc = parse_dict(&c, &d);
    if (rc != 0)
        return rc;
    rc = check_dict(&d, name, &tmp);
    if (rc != 0)
        return rc;
    *h = tmp;
    return 0;
}

int sgbd_npy_parse_header(const void *buf, size_t len, const char *name,
                          struct sgbd_npy_header *h)
{
    size_t need;

    return parse_header(buf, len, name, h, &need);
}

/* Read the header of an open file of fsize bytes and check that the data
 * is exactly as long as the shape says. */
static int load_header(int fd, uint64_t fsize, const char *path,
                       struct sgbd_npy_header *h)
{
    unsigned char small[4096], *big = NULL;
    size_t n = fsize < sizeof(small) ? (size_t)fsize : sizeof(small);
    size_t need;
    uint64_t have;
    int rc;

    rc = sgbd_bulkio_read_at(fd, small, n, 0, path, NULL);
    if (rc != 0)
        return rc;
    rc = parse_header(small, n, path, h, &need);
    if (rc == SGBD_E_FORMAT && need > n && need <= fsize) {
        big = malloc(need);
        if (!big)
            return sgbd_errf(-ENOMEM, "%s: out of memory", path);
        rc = sgbd_bulkio_read_at(fd, big, need, 0, path, NULL);
        if (rc == 0)
            rc = parse_header(big, need, path, h, &need);
        free(big);
    }
    if (rc != 0)
        return rc;
    have = fsize - h->data_offset;
    if (have < h->data_bytes)
        return sgbd_errf(SGBD_E_FORMAT, "%s: truncated data: %llu of %llu "
                         "bytes for shape (%zu, %zu) '%s'", path,
                         (unsigned long long)have,
                         (unsigned long long)h->data_bytes, h->rows, h->cols,
                         h->descr);
    if (have > h->data_bytes)
        return sgbd_errf(SGBD_E_FORMAT, "%s: %llu trailing bytes after the "
                         "data of shape (%zu, %zu)", path,
                         (unsigned long long)(have - h->data_bytes), h->rows,
                         h->cols);
    return 0;
}

static int open_regular(const char *path, uint64_t *size)
{
    struct stat sb;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        return sgbd_errf(rc, "%s: %s", path, sgbd_strerror(rc));
    }
    if (fstat(fd, &sb) != 0) {
        rc = -errno;
        close(fd);
        return sgbd_errf(rc, "%s: %s", path, sgbd_strerror(rc));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sgbd_errf(S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL,
                         "%s: not a regular file", path);
    }
    *size = (uint64_t)sb.st_size;
    return fd;
}

int sgbd_npy_read_header(const char *path, struct sgbd_npy_header *h)
{
    uint64_t size = 0;
    int fd, rc;

    fd = open_regular(path, &size);
    if (fd < 0)
        return fd;
    rc = load_header(fd, size, path, h);
    close(fd);
    return rc;
}

/* '<f8' data: read as doubles, narrow to float (MMRec casts on load). */
static int read_f8(int fd, const struct sgbd_npy_header *h, float *out,
                   const char *path, const struct sgbd_bulkio_opts *io)
{
    size_t n = h->rows * h->cols;
    double *tmp = malloc(h->data_bytes ? (size_t)h->data_bytes : 1);
    int rc;

    if (!tmp)
        return sgbd_errf(-ENOMEM, "%s: out of memory for %llu bytes", path,
                         (unsigned long long)h->data_bytes);
    rc = sgbd_bulkio_read_at(fd, tmp, (size_t)h->data_bytes, h->data_offset,
                             path, io);
    for (size_t i = 0; rc == 0 && i < n; i++)
        out[i] = (float)tmp[i];
    free(tmp);
    return rc;
}

int sgbd_npy_read(const char *path, struct sgbd_mat *out,
                  const struct sgbd_bulkio_opts *io)
{
    struct sgbd_npy_header h;
    void *data = NULL;
    size_t bytes;
    uint64_t size = 0;
    int fd, rc;

    fd = open_regular(path, &size);
    if (fd < 0)
        return fd;
    rc = load_header(fd, size, path, &h);
    if (rc != 0)
        goto out;
    bytes = h.rows * h.cols * sizeof(float);
    if (posix_memalign(&data, 64, bytes ? bytes : 64) != 0) {
        data = NULL;
        rc = sgbd_errf(-ENOMEM, "%s: out of memory for %zu bytes", path,
                       bytes);
        goto out;
    }
    if (h.itemsize == 4)
        rc = sgbd_bulkio_read_at(fd, data, bytes, h.data_offset, path, io);
    else
        rc = read_f8(fd, &h, data, path, io);
    if (rc != 0)
        goto out;
    *out = sgbd_mat_view(data, h.rows, h.cols);
    data = NULL;
out:
    free(data);
    close(fd);
    return rc;
}

/* The version-1 '<f4' header, padded so the data starts on 64 bytes. */
static size_t format_header(char *hdr, size_t n, size_t rows, size_t cols)
{
    int len = snprintf(hdr + 10, n - 10, "{'descr': '<f4', 'fortran_order': "
                       "False, 'shape': (%zu, %zu), }", rows, cols);
    size_t total = ((size_t)len + 10 + 1 + 63) / 64 * 64;

    memcpy(hdr, MAGIC "\x01\x00", 8);
    memset(hdr + 10 + len, ' ', total - 10 - (size_t)len - 1);
    hdr[total - 1] = '\n';
    hdr[8] = (char)((total - 10) & 0xff);
    hdr[9] = (char)((total - 10) >> 8);
    return total;
}

int sgbd_npy_write(const char *path, struct sgbd_mat m)
{
    char hdr[192];
    size_t n_iov = m.stride == m.cols || m.rows == 0 ? 2 : m.rows + 1;
    struct iovec *iov = calloc(n_iov, sizeof(*iov));
    int rc;

    if (!iov)
        return sgbd_errf(-ENOMEM, "%s: out of memory", path);
    iov[0].iov_base = hdr;
    iov[0].iov_len = format_header(hdr, sizeof(hdr), m.rows, m.cols);
    if (n_iov == 2) {
        iov[1].iov_base = m.data;
        iov[1].iov_len = m.rows * m.cols * sizeof(float);
    } else {
        for (size_t r = 0; r < m.rows; r++) {
            iov[r + 1].iov_base = m.data + r * m.stride;
            iov[r + 1].iov_len = m.cols * sizeof(float);
        }
    }
    rc = sgbd_bulkio_write_file(path, iov, n_iov);
    free(iov);
    return rc;
}
