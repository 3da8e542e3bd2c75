/* test_blas_reserve.c - OpenBLAS maps no buffer after the reservation. */
/* ctest: labels=unit timeout=120 */
/*
 * OpenBLAS 0.3.21 maps a 128 MiB work buffer the first time more callers
 * are inside it at once than ever before, and retries a refused mapping
 * for ever (issue #8). Each scenario runs in a fresh process (this binary
 * again, `--child NAME`), so that no earlier BLAS call has mapped buffers
 * already, and so that a hang is a child killed after CHILD_TIMEOUT_S
 * rather than a stuck test.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/mat.h"

#define CALLERS 4
#define ROUNDS 6
#define N 384                 /* square products: past the small-matrix path */
#define GEMV_ROWS 64
#define GEMV_COLS 4096        /* past OpenBLAS's on-stack gemv buffer */
#define MIB ((size_t)1 << 20)
#define CHILD_TIMEOUT_S 30

/* Exit codes of a child. */
enum { CHILD_OK = 0, CHILD_FAIL = 1, CHILD_MAPPED = 2, CHILD_ASAN = 3 };

static size_t vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;

    if (!f)
        return 0;
    if (fscanf(f, "%lu", &pages) != 1)
        pages = 0;
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* A sanitizer reserves terabytes: an address-space limit means nothing. */
static int sanitized(void)
{
    return vm_bytes() > ((size_t)1 << 40);
}

/* ---- children ---- */

struct caller {
    pthread_barrier_t *start;   /* CALLERS + 1: ready, then go */
    pthread_barrier_t *go;      /* CALLERS: one round */
    struct sgbd_mat a, b, c;    /* (N, N) each; c its own */
    struct sgbd_mat w;          /* (GEMV_ROWS, GEMV_COLS), shared */
    float *x, *y;               /* (GEMV_COLS), (GEMV_ROWS) its own */
    int rc;
};

/* ROUNDS rounds, all callers inside BLAS at once in each. */
static void *call_blas(void *arg)
{
    struct caller *c = arg;
    void *volatile arena = malloc(64);  /* this thread's malloc arena */

    free(arena);        /* (64 MiB of address space) is made before v0 */
    pthread_barrier_wait(c->start);     /* ready */
    pthread_barrier_wait(c->start);     /* measured, limited: go */
    for (int r = 0; r < ROUNDS && c->rc == 0; r++) {
        pthread_barrier_wait(c->go);
        c->rc = sgbd_mat_gemm_nn(c->c, c->a, c->b, 1.0f, 0.0f);
        if (c->rc == 0)
            c->rc = sgbd_mat_gemv_n(c->y, c->w, c->x, 1.0f, 0.0f);
    }
    return NULL;
}

static int alloc_callers(struct caller *c, struct sgbd_mat *a,
                         struct sgbd_mat *b, struct sgbd_mat *w)
{
    if (sgbd_mat_alloc(a, N, N) || sgbd_mat_alloc(b, N, N) ||
        sgbd_mat_alloc(w, GEMV_ROWS, GEMV_COLS))
        return -ENOMEM;
    for (size_t i = 0; i < (size_t)N * N; i++) {
        a->data[i] = (float)(i % 7) * 0.25f;
        b->data[i] = (float)(i % 5) * 0.5f;
    }
    for (int k = 0; k < CALLERS; k++) {
        c[k] = (struct caller){.a = *a, .b = *b, .w = *w};
        c[k].x = calloc(GEMV_COLS, sizeof(float));
        c[k].y = calloc(GEMV_ROWS, sizeof(float));
        if (sgbd_mat_alloc(&c[k].c, N, N) || !c[k].x || !c[k].y)
            return -ENOMEM;
    }
    return 0;
}

static void free_callers(struct caller *c, struct sgbd_mat *a,
                         struct sgbd_mat *b, struct sgbd_mat *w)
{
    for (int k = 0; k < CALLERS; k++) {
        sgbd_mat_release(&c[k].c);
        free(c[k].x);
        free(c[k].y);
    }
    sgbd_mat_release(a);
    sgbd_mat_release(b);
    sgbd_mat_release(w);
}

/*
 * CALLERS threads call BLAS together, after an optional reservation and
 * under an optional address-space limit of what is mapped + 64 MiB.
 * CHILD_OK when no caller failed and nothing was mapped, CHILD_MAPPED
 * when the calls mapped at least one buffer.
 */
static int child_calls(int reserve, int limit)
{
    struct caller c[CALLERS] = {{0}};
    struct sgbd_mat a = {0}, b = {0}, w = {0};
    pthread_t t[CALLERS];
    pthread_barrier_t start, go;
    size_t v0, v1;
    int rc = 0;

    if (limit && sanitized())
        return CHILD_ASAN;
    if (reserve && (rc = sgbd_mat_reserve_blas(0, CALLERS)) != 0) {
        fprintf(stderr, "  reserve: %s\n", sgbd_err_detail(rc));
        return CHILD_FAIL;
    }
    if (alloc_callers(c, &a, &b, &w) != 0) {
        free_callers(c, &a, &b, &w);
        return CHILD_FAIL;
    }
    pthread_barrier_init(&start, NULL, CALLERS + 1);
    pthread_barrier_init(&go, NULL, CALLERS);
    for (int k = 0; k < CALLERS; k++) {
        c[k].start = &start;
        c[k].go = &go;
        if (pthread_create(&t[k], NULL, call_blas, &c[k]) != 0)
            return CHILD_FAIL;
    }
    pthread_barrier_wait(&start);
    v0 = vm_bytes();
    if (limit) {
        struct rlimit rl;
        getrlimit(RLIMIT_AS, &rl);
        rl.rlim_cur = v0 + 64 * MIB;
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            return CHILD_FAIL;
    }
    pthread_barrier_wait(&start);
    for (int k = 0; k < CALLERS; k++)
        pthread_join(t[k], NULL);
    v1 = vm_bytes();
    for (int k = 0; k < CALLERS; k++)
        rc = rc ? rc : c[k].rc;
    free_callers(c, &a, &b, &w);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&go);
    fprintf(stderr, "  %d callers x %d rounds: rc %d, address space %+lld "
            "MiB\n", CALLERS, ROUNDS, rc,
            ((long long)v1 - (long long)v0) / (long long)MIB);
    if (rc != 0)
        return CHILD_FAIL;
    return v1 >= v0 + 128 * MIB ? CHILD_MAPPED : CHILD_OK;
}

/*
 * A limit that leaves no room for one more buffer: the reservation must
 * say so (-ENOMEM naming the limit), not retry for ever.
 */
static int child_tight(void)
{
    struct rlimit rl;
    int rc;

    if (sanitized())
        return CHILD_ASAN;
    rc = sgbd_mat_reserve_blas(0, 1);     /* the workers hold theirs */
    if (rc != 0)
        return CHILD_FAIL;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = vm_bytes() + 32 * MIB;
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return CHILD_FAIL;
    rc = sgbd_mat_reserve_blas(0, 2);
    fprintf(stderr, "  under +32 MiB: rc %d: %s\n", rc, sgbd_err_detail(rc));
    if (rc != -ENOMEM || !strstr(sgbd_err_detail(rc), "LimitAS"))
        return CHILD_FAIL;
    return CHILD_OK;
}

static int child_main(const char *name)
{
    if (strcmp(name, "plain") == 0)
        return child_calls(0, 0);
    if (strcmp(name, "reserved") == 0)
        return child_calls(1, 0);
    if (strcmp(name, "reserved-limited") == 0)
        return child_calls(1, 1);
    if (strcmp(name, "tight") == 0)
        return child_tight();
    return CHILD_FAIL;
}

/* ---- parent ---- */

/* Exit code of `self --child name`, or -1 when it was killed or hung. */
static int run_child(const char *name)
{
    struct timespec nap = {0, 20 * 1000 * 1000};
    pid_t pid = fork();
    int status = 0;

    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl("/proc/self/exe", "test_blas_reserve", "--child", name,
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < CHILD_TIMEOUT_S * 50; i++) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        nanosleep(&nap, NULL);
    }
    fprintf(stderr, "  child '%s' still running after %d s: killed\n", name,
            CHILD_TIMEOUT_S);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void test_blas_reserve_rejects_bad_arguments(void)
{
    CHECK_INT(sgbd_mat_reserve_blas(-1, 2), SGBD_E_USAGE);
    CHECK_INT(sgbd_mat_reserve_blas(0, 0), SGBD_E_USAGE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_USAGE), "callers 0") != NULL);
}

/* The control: without it, concurrent callers map buffers of their own. */
static void test_blas_reserve_without_it_concurrent_calls_map(void)
{
    int rc = run_child("plain");

    if (rc == CHILD_OK)
        SKIP("this BLAS maps no buffer per caller: nothing to reserve");
    CHECK_INT(rc, CHILD_MAPPED);
}

static void test_blas_reserve_then_concurrent_calls_map_nothing(void)
{
    CHECK_INT(run_child("reserved"), CHILD_OK);
}

static void test_blas_reserve_then_limited_address_space_does_not_hang(void)
{
    int rc = run_child("reserved-limited");

    if (rc == CHILD_ASAN)
        SKIP("sanitizer build: an address-space limit means nothing");
    CHECK_INT(rc, CHILD_OK);
}

static void test_blas_reserve_under_a_tight_limit_fails_clearly(void)
{
    int rc = run_child("tight");

    if (rc == CHILD_ASAN)
        SKIP("sanitizer build: an address-space limit means nothing");
    CHECK_INT(rc, CHILD_OK);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2]);
    RUN(test_blas_reserve_rejects_bad_arguments);
    RUN(test_blas_reserve_without_it_concurrent_calls_map);
    RUN(test_blas_reserve_then_concurrent_calls_map_nothing);
    RUN(test_blas_reserve_then_limited_address_space_does_not_hang);
    RUN(test_blas_reserve_under_a_tight_limit_fails_clearly);
    return harness_finish();
}
