/*
 * fuzz_util.h - what the libFuzzer targets share: invariant checks that
 * abort (so libFuzzer saves the input), a memfd that stands in for a file
 * path, and the checks every error detail must pass.
 */
#ifndef SGBD_FUZZ_UTIL_H
#define SGBD_FUZZ_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sgbd/err.h"
#include "sgbd/log.h"

/* An invariant of the parser under test: a failure is a finding. */
#define FUZZ_CHECK(cond)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,    \
                    __LINE__, #cond);                                     \
            abort();                                                      \
        }                                                                 \
    } while (0)

/*
 * Whether the check called id is switched off: FUZZ_SKIP="id,id,..." in
 * the environment lets a long run go past a finding already reported
 * (its reproducer is in regress/), without weakening the default runs.
 */
static inline int fuzz_skip(const char *id)
{
    const char *list = getenv("FUZZ_SKIP");
    size_t n = strlen(id);

    for (const char *p = list; p && *p; p += strcspn(p, ",")) {
        p += *p == ',';
        if (strncmp(p, id, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

/* sgbd_errf truncates to 512 bytes; allow its NUL and some slack. */
#define FUZZ_DETAIL_MAX 520

/*
 * The detail of a failed call: NUL-terminated, short, one line, and
 * naming prefix (the file or option) when prefix is not NULL.
 */
static inline void fuzz_check_detail(int rc, const char *prefix)
{
    const char *d = sgbd_err_detail(rc);
    size_t n;

    FUZZ_CHECK(rc < 0);
    FUZZ_CHECK(d != NULL);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "detail (rc %d): %s\n", rc, d);
    n = strnlen(d, FUZZ_DETAIL_MAX + 1);
    FUZZ_CHECK(n > 0 && n <= FUZZ_DETAIL_MAX);
    if (!fuzz_skip("detail_ctrl"))
        FUZZ_CHECK(memchr(d, '\n', n) == NULL && memchr(d, '\r', n) == NULL);
    if (prefix)
        FUZZ_CHECK(strncmp(d, prefix, strlen(prefix)) == 0);
}

/* A memory file whose /proc/self/fd path the readers open like any file. */
struct fuzz_file {
    int fd;
    char path[64];
};

static inline void fuzz_file_init(struct fuzz_file *f, const char *name)
{
    f->fd = memfd_create(name, MFD_CLOEXEC);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
}

/* Make the file hold exactly data[0..size). */
static inline void fuzz_file_set(struct fuzz_file *f, const void *data,
                                 size_t size)
{
    const char *p = data;
    off_t off = 0;

    if (ftruncate(f->fd, 0) != 0)
        abort();
    while ((size_t)off < size) {
        ssize_t w = pwrite(f->fd, p + off, size - (size_t)off, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            abort();
        off += w;
    }
}

/* Quiet logs: a fuzzer runs millions of inputs. Errors still show. */
static inline void fuzz_quiet_logs(void)
{
    sgbd_log_level = SGBD_LOG_ERR;
}

#endif
