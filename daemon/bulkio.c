/*
 * bulkio.c - whole-file reads through io_uring, or pread when it is not
 * available (serving.md section 7.2: the fallback is mandatory).
 */
#include "sgbd/bulkio.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/log.h"

#define DEFAULT_CHUNK ((size_t)1 << 20)
#define MAX_CHUNK ((size_t)1 << 30)   /* an SQE length is 32 bits */
#define DEFAULT_DEPTH 16u
#define MAX_DEPTH 256u
#define MAX_STALLS 10000              /* submits in a row that move nothing */

struct plan {
    size_t chunk;
    unsigned depth;
    int force_pread;
};

/* One chunk of the range, relative to the start of the caller's buffer. */
struct slot {
    size_t off, len, done;
};

struct uring_job {
    struct io_uring ring;
    int fd;
    char *buf;                  /* (len) bytes, the caller's */
    uint64_t base;              /* file offset of buf[0] */
    size_t len, chunk, next;    /* next: first byte not yet given a slot */
    unsigned depth;
    struct slot *slots;         /* (depth) */
    unsigned *free_slots;       /* (depth) stack of idle slot indices */
    unsigned n_free;
    unsigned prepared;          /* SQEs queued, not yet taken by the kernel */
    unsigned in_kernel;         /* submitted, completion not yet reaped */
    int stalls;
    int err;
    const char *name;
    struct sgbd_bulkio_stats *st;
};

static atomic_int fallback_logged;

const char *sgbd_bulkio_backend_name(enum sgbd_bulkio_backend b)
{
    switch (b) {
    case SGBD_BULKIO_URING: return "io_uring";
    case SGBD_BULKIO_PREAD: return "pread";
    case SGBD_BULKIO_NONE: break;
    }
    return "none";
}

static void resolve_plan(const struct sgbd_bulkio_opts *o, struct plan *p)
{
    const char *env = getenv("SGBD_FORCE_PREAD");

    p->chunk = o && o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK;
    if (p->chunk > MAX_CHUNK)
        p->chunk = MAX_CHUNK;
    p->depth = o && o->queue_depth ? o->queue_depth : DEFAULT_DEPTH;
    if (p->depth > MAX_DEPTH)
        p->depth = MAX_DEPTH;
    p->force_pread = (o && o->force_pread) || (env && strcmp(env, "1") == 0);
}

static int eof_error(const char *name, uint64_t at, uint64_t want)
{
    return sgbd_errf(-EIO, "%s: unexpected end of file at byte %llu of %llu "
                     "(file changed while reading?)", name,
                     (unsigned long long)at, (unsigned long long)want);
}

static int read_error(int rc, const char *name, uint64_t at)
{
    return sgbd_errf(rc, "%s: read at byte %llu: %s", name,
                     (unsigned long long)at, sgbd_strerror(rc));
}

static int read_pread(int fd, char *buf, size_t len, uint64_t off,
                      const struct plan *p, const char *name,
                      struct sgbd_bulkio_stats *st)
{
    size_t done = 0;

    st->backend = SGBD_BULKIO_PREAD;
    while (done < len) {
        size_t want = len - done < p->chunk ? len - done : p->chunk;
        ssize_t n = pread(fd, buf + done, want, (off_t)(off + done));

        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return read_error(-errno, name, off + done);
        if (n == 0)
            return eof_error(name, off + done, off + len);
        done += (size_t)n;
        st->bytes += (uint64_t)n;
        st->reads++;
    }
    return 0;
}

/* Queue the unread rest of slot s. The ring has depth SQ entries and at
 * most depth slots are busy, so an SQE is always free; check anyway. */
static void prep_slot(struct uring_job *j, unsigned s)
{
    struct slot *sl = &j->slots[s];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&j->ring);

    if (!sqe) {
        j->err = sgbd_errf(-EBUSY, "%s: io_uring submission queue full",
                           j->name);
        return;
    }
    io_uring_prep_read(sqe, j->fd, j->buf + sl->off + sl->done,
                       (unsigned)(sl->len - sl->done),
                       j->base + sl->off + sl->done);
    io_uring_sqe_set_data(sqe, (void *)(uintptr_t)s);
    j->prepared++;
}

/* Give every idle slot the next chunk of the range. */
static void fill_slots(struct uring_job *j)
{
    while (!j->err && j->n_free > 0 && j->next < j->len) {
        unsigned s = j->free_slots[--j->n_free];
        size_t n = j->len - j->next < j->chunk ? j->len - j->next : j->chunk;

        j->slots[s] = (struct slot){j->next, n, 0};
        j->next += n;
        prep_slot(j, s);
    }
}

static void submit_prepared(struct uring_job *j)
{
    int rc;

    if (j->prepared == 0)
        return;
    rc = io_uring_submit(&j->ring);
    if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
        rc = 0; /* transient: reap, then try again */
    if (rc < 0) {
        j->err = sgbd_errf(rc, "%s: io_uring submit: %s", j->name,
                           sgbd_strerror(rc));
        return;
    }
    j->prepared -= (unsigned)rc;
    j->in_kernel += (unsigned)rc;
    j->stalls = rc > 0 || j->in_kernel > 0 ? 0 : j->stalls + 1;
    if (j->stalls > MAX_STALLS)
        j->err = sgbd_errf(-EIO, "%s: io_uring accepts no reads", j->name);
}

/* Account one completion: retry on -EAGAIN/-EINTR or a short read. */
static void complete(struct uring_job *j, unsigned s, int res)
{
    struct slot *sl = &j->slots[s];
    uint64_t at = j->base + sl->off + sl->done;

    if ((res == -EAGAIN || res == -EINTR) && !j->err) {
        prep_slot(j, s);
        return;
    }
    if (res < 0) {
        if (!j->err)
            j->err = read_error(res, j->name, at);
        return;
    }
    if (res == 0) {
        if (!j->err)
            j->err = eof_error(j->name, at, j->base + j->len);
        return;
    }
    sl->done += (size_t)res;
    j->st->bytes += (uint64_t)res;
    j->st->reads++;
    if (sl->done < sl->len && !j->err)
        prep_slot(j, s);
    else
        j->free_slots[j->n_free++] = s;
}

/* Wait for one completion and handle it; returns 0 or a wait error. */
static int reap_one(struct uring_job *j)
{
    struct io_uring_cqe *cqe;
    unsigned s;
    int res, rc;

    rc = io_uring_wait_cqe(&j->ring, &cqe);
    if (rc == -EINTR || rc == -EAGAIN)
        return 0;
    if (rc < 0)
        return rc;
    s = (unsigned)(uintptr_t)io_uring_cqe_get_data(cqe);
    res = cqe->res;
    io_uring_cqe_seen(&j->ring, cqe);
    j->in_kernel--;
    if (s >= j->depth || j->slots[s].len == 0) {
        j->err = sgbd_errf(-EIO, "%s: io_uring completion for unknown read",
                           j->name);
        return 0;
    }
    complete(j, s, res);
    return 0;
}

static void run_ring(struct uring_job *j)
{
    int rc;

    while (!j->err && (j->next < j->len || j->prepared || j->in_kernel)) {
        fill_slots(j);
        submit_prepared(j);
        if (j->err || j->in_kernel == 0)
            continue;
        rc = reap_one(j);
        if (rc < 0)
            j->err = sgbd_errf(rc, "%s: io_uring wait: %s", j->name,
                               sgbd_strerror(rc));
    }

    /* After a failure, reap what is still in flight so no read lands in
     * the buffer after we return; queued but unsubmitted SQEs die with
     * the ring. */
    while (j->in_kernel > 0) {
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&j->ring, &cqe);
        if (rc == -EINTR || rc == -EAGAIN)
            continue;
        if (rc < 0)
            break;
        io_uring_cqe_seen(&j->ring, cqe);
        j->in_kernel--;
    }
}

static void log_fallback(int rc)
{
    if (atomic_exchange(&fallback_logged, 1) == 0)
        SGBD_INFO("bulkio_fallback", "backend=pread reason=\"%s\" errno=%d",
                  sgbd_strerror(rc), -rc);
}

/* Kernels 5.1 to 5.5 make rings without IORING_OP_READ; the probe itself
 * needs 5.6, so no probe means no plain reads either. */
static int supports_read(struct io_uring *ring)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    int ok = probe && io_uring_opcode_supported(probe, IORING_OP_READ);

    if (probe)
        io_uring_free_probe(probe);
    return ok;
}

/* Returns 0 when done, 1 when no ring could be made (use pread), or an
 * error of the read itself. */
static int read_uring(int fd, char *buf, size_t len, uint64_t off,
                      const struct plan *p, const char *name,
                      struct sgbd_bulkio_stats *st)
{
    struct uring_job j;
    int rc;

    memset(&j, 0, sizeof(j));
    j.slots = calloc(p->depth, sizeof(*j.slots));
    j.free_slots = calloc(p->depth, sizeof(*j.free_slots));
    if (!j.slots || !j.free_slots) {
        rc = sgbd_errf(-ENOMEM, "%s: out of memory", name);
        goto out;
    }
    rc = io_uring_queue_init(p->depth, &j.ring, 0);
    if (rc == 0 && !supports_read(&j.ring)) {
        io_uring_queue_exit(&j.ring);
        rc = -EOPNOTSUPP;
    }
    if (rc < 0) {
        st->uring_error = rc;
        log_fallback(rc);
        rc = 1;
        goto out;
    }
    j.fd = fd, j.buf = buf, j.base = off, j.len = len, j.chunk = p->chunk;
    j.depth = p->depth;
    j.name = name, j.st = st;
    for (unsigned s = 0; s < p->depth; s++)
        j.free_slots[j.n_free++] = p->depth - 1 - s;
    st->backend = SGBD_BULKIO_URING;
    run_ring(&j);
    io_uring_queue_exit(&j.ring);
    rc = j.err;
out:
    free(j.free_slots);
    free(j.slots);
    return rc;
}

int sgbd_bulkio_read_at(int fd, void *buf, size_t len, uint64_t off,
                        const char *name,
                        const struct sgbd_bulkio_opts *opts)
{
    struct sgbd_bulkio_stats local, *st;
    struct plan p;
    int rc;

    st = opts && opts->stats ? opts->stats : &local;
    memset(st, 0, sizeof(*st));
    if (len == 0)
        return 0;
    if (off > UINT64_MAX - len)
        return sgbd_errf(-EINVAL, "%s: read range overflows", name);
    resolve_plan(opts, &p);
    if (!p.force_pread && len > p.chunk) {
        rc = read_uring(fd, buf, len, off, &p, name, st);
        if (rc != 1)
            return rc;
    }
    return read_pread(fd, buf, len, off, &p, name, st);
}

int sgbd_bulkio_read_file(const char *path, void **out_buf, size_t *out_len,
                          const struct sgbd_bulkio_opts *opts)
{
    struct stat sb;
    char *buf = NULL;
    size_t len;
    int fd, rc;

    if (opts && opts->stats)
        memset(opts->stats, 0, sizeof(*opts->stats));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        return sgbd_errf(rc, "%s: %s", path, sgbd_strerror(rc));
    }
    if (fstat(fd, &sb) != 0) {
        rc = -errno;
        rc = sgbd_errf(rc, "%s: %s", path, sgbd_strerror(rc));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL;
        rc = sgbd_errf(rc, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size >= SIZE_MAX) {
        rc = sgbd_errf(-EFBIG, "%s: too large to read into memory", path);
        goto out;
    }
    len = (size_t)sb.st_size;
    buf = malloc(len + 1);
    if (!buf) {
        rc = sgbd_errf(-ENOMEM, "%s: out of memory for %zu bytes", path, len);
        goto out;
    }
    rc = sgbd_bulkio_read_at(fd, buf, len, 0, path, opts);
    if (rc != 0)
        goto out;
    buf[len] = '\0';
    *out_buf = buf;
    *out_len = len;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsync the directory holding path so the rename itself is durable. */
static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd, rc = 0;

    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if ((size_t)(slash - path) >= sizeof(dir))
        return -ENAMETOOLONG;
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash == path ? 1 :
                 slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = -errno;
    close(fd);
    return rc;
}

int sgbd_bulkio_write_file(const char *path, const struct iovec *iov,
                           size_t n)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    int fd = -1, rc = 0;

    if (!tmp)
        return sgbd_errf(-ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        free(tmp);
        return sgbd_errf(rc, "%s: cannot create a temporary file: %s", path,
                         sgbd_strerror(rc));
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = write_all(fd, iov[i].iov_base, iov[i].iov_len);
    if (rc == 0 && fchmod(fd, 0644) != 0)
        rc = -errno;
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        free(tmp);
        return sgbd_errf(rc, "%s: write failed: %s", path, sgbd_strerror(rc));
    }
    free(tmp);
    rc = sync_parent(path);
    if (rc != 0)
        return sgbd_errf(rc, "%s: fsync of its directory: %s", path,
                         sgbd_strerror(rc));
    return 0;
}
