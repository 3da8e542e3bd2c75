/*
 * harness.h - the test runner every tests/test_<module>.c includes.
 *
 * A test case is a function `static void test_<module>_<behaviour>(void)`
 * that states facts with the CHECK macros; a failed CHECK records the file,
 * line and expression and returns from the case. main() lists the cases:
 *
 *     int main(void) {
 *         RUN(test_npy_reads_v1_header);
 *         RUN(test_npy_rejects_fortran_order);
 *         return harness_finish();
 *     }
 *
 * harness_finish() prints "N passed, N failed" and returns the exit code.
 * A case that cannot run here (no data, no io_uring) calls SKIP("why").
 */
#ifndef SGBD_TEST_HARNESS_H
#define SGBD_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_passed, harness_failed, harness_skipped;
static int harness_case_failed, harness_case_skipped;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__,        \
                    __LINE__, #cond);                                       \
            harness_case_failed = 1;                                        \
            return;                                                         \
        }                                                                   \
    } while (0)

#define CHECK_INT(a, b)                                                     \
    do {                                                                    \
        long long va_ = (long long)(a), vb_ = (long long)(b);               \
        if (va_ != vb_) {                                                   \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n",     \
                    __FILE__, __LINE__, #a, #b, va_, vb_);                  \
            harness_case_failed = 1;                                        \
            return;                                                         \
        }                                                                   \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                               \
    do {                                                                    \
        double va_ = (double)(a), vb_ = (double)(b);                        \
        if (!(fabs(va_ - vb_) <= (tol))) {                                  \
            fprintf(stderr, "  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", \
                    __FILE__, __LINE__, #a, #b, (double)(tol), va_, vb_);   \
            harness_case_failed = 1;                                        \
            return;                                                         \
        }                                                                   \
    } while (0)

#define CHECK_STR(a, b)                                                     \
    do {                                                                    \
        const char *va_ = (a), *vb_ = (b);                                  \
        if (!va_ || !vb_ || strcmp(va_, vb_) != 0) {                        \
            fprintf(stderr, "  %s:%d: %s == \"%s\" failed: got \"%s\"\n",   \
                    __FILE__, __LINE__, #a, vb_ ? vb_ : "(null)",           \
                    va_ ? va_ : "(null)");                                  \
            harness_case_failed = 1;                                        \
            return;                                                         \
        }                                                                   \
    } while (0)

#define SKIP(why)                                                           \
    do {                                                                    \
        fprintf(stderr, "  skipped: %s\n", (why));                          \
        harness_case_skipped = 1;                                           \
        return;                                                             \
    } while (0)

#define RUN(fn)                                                             \
    do {                                                                    \
        harness_case_failed = harness_case_skipped = 0;                     \
        fn();                                                               \
        if (harness_case_failed) {                                          \
            harness_failed++;                                               \
            fprintf(stderr, "FAIL %s\n", #fn);                              \
        } else if (harness_case_skipped) {                                  \
            harness_skipped++;                                              \
            fprintf(stderr, "skip %s\n", #fn);                              \
        } else {                                                            \
            harness_passed++;                                               \
            fprintf(stderr, "ok   %s\n", #fn);                              \
        }                                                                   \
    } while (0)

/* Exit 77 (CTest "skipped") only when every case skipped. */
static inline int harness_finish(void)
{
    printf("%d passed, %d failed, %d skipped\n", harness_passed,
           harness_failed, harness_skipped);
    if (harness_failed)
        return 1;
    if (harness_passed == 0 && harness_skipped > 0)
        return 77;
    return 0;
}

/* Path of a shared dataset folder, or NULL when it is not there. */
static inline const char *harness_data_dir(const char *name, char *buf,
                                           size_t n)
{
    const char *root = getenv("SGBD_DATA");
    if (!root)
        root = "../shared/data";
    snprintf(buf, n, "%s/%s", root, name);
    FILE *probe;
    char inter[4096];
    int len = snprintf(inter, sizeof(inter), "%s/%s.inter", buf, name);
    if (len < 0 || (size_t)len >= sizeof(inter))
        return NULL;
    probe = fopen(inter, "r");
    if (!probe)
        return NULL;
    fclose(probe);
    return buf;
}

#endif
