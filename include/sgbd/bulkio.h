/*
 * bulkio.h - read whole large files fast: io_uring with a pread fallback.
 *
 * A read is cut into chunks (1 MiB by default) and up to queue_depth of
 * them are in flight on an io_uring at once, so one loader thread keeps a
 * fast disk busy. Where a ring cannot be created (kernel without io_uring,
 * a seccomp profile that blocks it, kernel.io_uring_disabled: setup fails
 * with -ENOSYS, -EPERM, ...; a kernel before 5.6 whose rings lack
 * IORING_OP_READ counts as -EOPNOTSUPP) the same read runs as a loop of
 * pread(2); the first such fallback of the process is logged once
 * (ev=bulkio_fallback).
 * The fallback is also forced by opts->force_pread or by the environment
 * variable SGBD_FORCE_PREAD=1. Reads no longer than one chunk always use
 * pread: a ring would cost more than it saves.
 *
 * Short reads, -EAGAIN and -EINTR are retried; every completion is
 * checked; on failure every read still in flight is reaped before the call
 * returns, so the kernel never writes into a buffer after it was freed.
 * liburing is included nowhere else in the project. Calls are independent
 * (one ring per call) and safe from several threads.
 */
#ifndef SGBD_BULKIO_H
#define SGBD_BULKIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum sgbd_bulkio_backend {
    SGBD_BULKIO_NONE = 0,   /* nothing was read (empty range) */
    SGBD_BULKIO_URING = 1,
    SGBD_BULKIO_PREAD = 2,
};

/* What one call did; filled when opts->stats is set. */
struct sgbd_bulkio_stats {
    enum sgbd_bulkio_backend backend;
    uint64_t bytes;          /* bytes read */
    uint64_t reads;          /* completed read operations (incl. retries) */
    int uring_error;         /* -errno of io_uring setup when it fell back
                              * on its own, else 0 */
};

struct sgbd_bulkio_opts {
    int force_pread;         /* 1: never try io_uring */
    size_t chunk_bytes;      /* bytes per read; 0: 1 MiB */
    unsigned queue_depth;    /* reads in flight, 1..256; 0: 16 */
    struct sgbd_bulkio_stats *stats; /* where to report; may be NULL */
};

/*
 * Read all of the regular file at path into a new buffer: *out_buf gets
 * *out_len bytes followed by one NUL byte (so text can be parsed in place);
 * free it with free(). opts may be NULL (defaults). An empty file gives a
 * 1-byte buffer holding NUL and *out_len 0.
 * Errors: -errno from open/fstat/read (-ENOENT, -EACCES, -EISDIR, -EIO when
 * the file shrank while being read), -ENOMEM; the detail names the path.
 * On error *out_buf and *out_len are left unchanged.
 */
int sgbd_bulkio_read_file(const char *path, void **out_buf, size_t *out_len,
                          const struct sgbd_bulkio_opts *opts);

/*
 * Read exactly len bytes at offset off of fd into buf (the caller's
 * memory). name is used in error details only. Same backends and errors
 * as sgbd_bulkio_read_file; -EIO with "unexpected end of file" when the
 * file ends before off + len.
 */
int sgbd_bulkio_read_at(int fd, void *buf, size_t len, uint64_t off,
                        const char *name,
                        const struct sgbd_bulkio_opts *opts);

/*
 * Replace the file at path atomically with the concatenation of iov[0..n):
 * the bytes go to a temporary file in the same directory (mode 0644),
 * which is fsync'ed and renamed over path; the directory is then fsync'ed.
 * A reader sees the old file or the whole new one, never a part. Plain
 * write(2): writes are rare and small next to the reads. Errors: -errno
 * of the failing call, with the path in the detail; on error path is
 * unchanged and the temporary file is removed.
 */
int sgbd_bulkio_write_file(const char *path, const struct iovec *iov,
                           size_t n);

/* "io_uring", "pread" or "none". */
const char *sgbd_bulkio_backend_name(enum sgbd_bulkio_backend b);

#endif
