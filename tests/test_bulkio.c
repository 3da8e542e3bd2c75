/* test_bulkio.c - io_uring and pread paths read the same bytes. */
/* ctest: labels=unit timeout=60 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/bulkio.h"
#include "sgbd/err.h"

static char dir[64];

/* Byte k of the test pattern: not periodic at any chunk size we use. */
static unsigned char pattern(size_t k)
{
    uint64_t x = k * 0x9e3779b97f4a7c15ULL;
    return (unsigned char)((x >> 29) ^ (x >> 47));
}

static int make_file(const char *path, size_t len)
{
    FILE *f = fopen(path, "wb");
    size_t k;

    if (!f)
        return -1;
    for (k = 0; k < len; k++)
        fputc(pattern(k), f);
    return fclose(f);
}

static int matches_pattern(const unsigned char *buf, size_t len, size_t off)
{
    for (size_t k = 0; k < len; k++)
        if (buf[k] != pattern(off + k))
            return 0;
    return 1;
}

static void path_of(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

/* 5 MiB + 12345 bytes: not a multiple of any chunk size. */
#define BIG_LEN ((size_t)5 * 1024 * 1024 + 12345)

static void test_bulkio_pread_and_uring_read_identical_bytes(void)
{
    struct sgbd_bulkio_stats st;
    struct sgbd_bulkio_opts pr = {.force_pread = 1, .stats = &st};
    struct sgbd_bulkio_opts ur = {.chunk_bytes = 256 * 1024,
                                  .queue_depth = 8, .stats = &st};
    char path[128];
    void *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;

    path_of(path, sizeof(path), "big.bin");
    CHECK(make_file(path, BIG_LEN) == 0);
    CHECK_INT(sgbd_bulkio_read_file(path, &a, &la, &pr), 0);
    CHECK_INT(st.backend, SGBD_BULKIO_PREAD);
    CHECK_INT(la, BIG_LEN);
    CHECK_INT(st.bytes, BIG_LEN);
    CHECK(matches_pattern(a, la, 0));
    CHECK_INT(((unsigned char *)a)[la], 0);

    CHECK_INT(sgbd_bulkio_read_file(path, &b, &lb, &ur), 0);
    if (st.backend != SGBD_BULKIO_URING) {
        free(a), free(b);
        SKIP("io_uring unavailable here");
    }
    CHECK_INT(st.uring_error, 0);
    CHECK_INT(lb, BIG_LEN);
    CHECK_INT(st.bytes, BIG_LEN);
    CHECK(st.reads >= BIG_LEN / (256 * 1024) + 1);
    CHECK(memcmp(a, b, la) == 0);
    CHECK_INT(((unsigned char *)b)[lb], 0);
    free(a);
    free(b);
}

static void test_bulkio_uring_default_chunks_and_deep_queue(void)
{
    struct sgbd_bulkio_stats st;
    struct sgbd_bulkio_opts ur = {.queue_depth = 32, .stats = &st};
    char path[128];
    void *a = NULL;
    size_t la = 0;

    path_of(path, sizeof(path), "big.bin");
    CHECK_INT(sgbd_bulkio_read_file(path, &a, &la, &ur), 0);
    if (st.backend != SGBD_BULKIO_URING) {
        free(a);
        SKIP("io_uring unavailable here");
    }
    CHECK_INT(la, BIG_LEN);
    CHECK(st.reads >= 6); /* 1 MiB chunks */
    CHECK(matches_pattern(a, la, 0));
    free(a);
}

static void test_bulkio_read_at_offset_both_paths(void)
{
    struct sgbd_bulkio_stats st;
    struct sgbd_bulkio_opts opts[2] = {
        {.force_pread = 1, .chunk_bytes = 65536, .stats = &st},
        {.chunk_bytes = 65536, .queue_depth = 4, .stats = &st},
    };
    size_t off = 777777, len = 3 * 1024 * 1024 + 1;
    unsigned char *buf = malloc(len);
    char path[128];
    int fd;

    path_of(path, sizeof(path), "big.bin");
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && buf);
    for (int k = 0; k < 2; k++) {
        memset(buf, 0, len);
        CHECK_INT(sgbd_bulkio_read_at(fd, buf, len, off, path, &opts[k]), 0);
        CHECK(matches_pattern(buf, len, off));
        CHECK_INT(st.bytes, len);
    }
    close(fd);
    free(buf);
}

static void test_bulkio_read_past_end_is_eio_both_paths(void)
{
    struct sgbd_bulkio_opts opts[2] = {
        {.force_pread = 1, .chunk_bytes = 65536},
        {.chunk_bytes = 65536, .queue_depth = 4},
    };
    size_t len = 1024 * 1024;
    unsigned char *buf = malloc(len);
    char path[128];
    int fd;

    path_of(path, sizeof(path), "big.bin");
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && buf);
    for (int k = 0; k < 2; k++) {
        int rc = sgbd_bulkio_read_at(fd, buf, len, BIG_LEN - 1000, path,
                                     &opts[k]);
        CHECK_INT(rc, -EIO);
        CHECK(strstr(sgbd_err_detail(rc), "unexpected end of file"));
        CHECK(strstr(sgbd_err_detail(rc), "big.bin"));
    }
    close(fd);
    free(buf);
}

static void test_bulkio_empty_file_gives_empty_buffer(void)
{
    struct sgbd_bulkio_stats st = {.backend = SGBD_BULKIO_URING};
    struct sgbd_bulkio_opts o = {.stats = &st};
    char path[128];
    void *buf = NULL;
    size_t len = 99;

    path_of(path, sizeof(path), "empty.bin");
    CHECK(make_file(path, 0) == 0);
    CHECK_INT(sgbd_bulkio_read_file(path, &buf, &len, &o), 0);
    CHECK_INT(len, 0);
    CHECK(buf != NULL);
    CHECK_INT(((char *)buf)[0], 0);
    CHECK_INT(st.backend, SGBD_BULKIO_NONE);
    free(buf);
}

static void test_bulkio_missing_file_names_the_path(void)
{
    void *buf = (void *)1;
    size_t len = 7;
    int rc = sgbd_bulkio_read_file("/nonexistent/sgbd/x.npy", &buf, &len,
                                   NULL);

    CHECK_INT(rc, -ENOENT);
    CHECK(strstr(sgbd_err_detail(rc), "/nonexistent/sgbd/x.npy"));
    CHECK(buf == (void *)1 && len == 7); /* untouched */
    CHECK_INT(sgbd_bulkio_read_file(dir, &buf, &len, NULL), -EISDIR);
}

static void test_bulkio_env_forces_pread(void)
{
    struct sgbd_bulkio_stats st;
    struct sgbd_bulkio_opts o = {.chunk_bytes = 65536, .stats = &st};
    char path[128];
    void *buf = NULL;
    size_t len;

    path_of(path, sizeof(path), "big.bin");
    setenv("SGBD_FORCE_PREAD", "1", 1);
    CHECK_INT(sgbd_bulkio_read_file(path, &buf, &len, &o), 0);
    unsetenv("SGBD_FORCE_PREAD");
    CHECK_INT(st.backend, SGBD_BULKIO_PREAD);
    CHECK_INT(st.uring_error, 0);
    CHECK(matches_pattern(buf, len, 0));
    free(buf);
}

/* In a child: deny io_uring_setup with ENOSYS (as a seccomp profile or a
 * kernel without io_uring would) and check that the read falls back. */
static int child_with_io_uring_blocked(const char *path)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof(f) / sizeof(f[0]), f};
    struct sgbd_bulkio_stats st;
    struct sgbd_bulkio_opts o = {.chunk_bytes = 65536, .stats = &st};
    void *buf = NULL;
    size_t len = 0;

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 77;
    if (sgbd_bulkio_read_file(path, &buf, &len, &o) != 0)
        return 1;
    if (st.backend != SGBD_BULKIO_PREAD || st.uring_error != -ENOSYS)
        return 2;
    return len == BIG_LEN && matches_pattern(buf, len, 0) ? 0 : 3;
}

static void test_bulkio_falls_back_when_io_uring_is_blocked(void)
{
    char path[128];
    int status = 0;
    pid_t pid;

    path_of(path, sizeof(path), "big.bin");
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(child_with_io_uring_blocked(path));
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        SKIP("seccomp filters unavailable");
    CHECK_INT(WEXITSTATUS(status), 0);
}

static void test_bulkio_write_file_is_atomic_and_complete(void)
{
    char path[128], bad[160];
    struct iovec iov[3] = {{"abc", 3}, {"", 0}, {"defgh", 5}};
    void *buf = NULL;
    size_t len = 0;
    int rc;

    path_of(path, sizeof(path), "out.txt");
    CHECK_INT(sgbd_bulkio_write_file(path, iov, 3), 0);
    CHECK_INT(sgbd_bulkio_read_file(path, &buf, &len, NULL), 0);
    CHECK_INT(len, 8);
    CHECK_STR((char *)buf, "abcdefgh");
    free(buf);

    snprintf(bad, sizeof(bad), "%s/no/such/dir/out.txt", dir);
    rc = sgbd_bulkio_write_file(bad, iov, 3);
    CHECK_INT(rc, -ENOENT);
    CHECK(strstr(sgbd_err_detail(rc), "no/such/dir/out.txt"));
}

static void cleanup(void)
{
    const char *names[] = {"big.bin", "empty.bin", "out.txt"};
    char path[128];

    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        path_of(path, sizeof(path), names[k]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sgbd_test_bulkio.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    RUN(test_bulkio_pread_and_uring_read_identical_bytes);
    RUN(test_bulkio_uring_default_chunks_and_deep_queue);
    RUN(test_bulkio_read_at_offset_both_paths);
    RUN(test_bulkio_read_past_end_is_eio_both_paths);
    RUN(test_bulkio_empty_file_gives_empty_buffer);
    RUN(test_bulkio_missing_file_names_the_path);
    RUN(test_bulkio_env_forces_pread);
    RUN(test_bulkio_falls_back_when_io_uring_is_blocked);
    RUN(test_bulkio_write_file_is_atomic_and_complete);
    cleanup();
    return harness_finish();
}
