/* test_npy.c - .npy headers v1/v2, f4/f8, and every rejection. */
/* ctest: labels=unit timeout=60 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/err.h"
#include "sgbd/npy.h"

static char dir[64];

static void path_of(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

/* A file with magic, version major, dict padded to 64 bytes, then data;
 * cut drops that many bytes from the end. */
static int write_raw(const char *path, int major, const char *dict,
                     const void *data, size_t len, size_t cut)
{
    unsigned char hdr[512];
    size_t prefix = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (prefix + dl + 1 + 63) / 64 * 64, hlen = total - prefix;
    FILE *f = fopen(path, "wb");

    if (!f)
        return -1;
    memcpy(hdr, "\x93NUMPY", 6);
    hdr[6] = (unsigned char)major;
    hdr[7] = 0;
    for (size_t k = 0; k < prefix - 8; k++)
        hdr[8 + k] = (unsigned char)(hlen >> (8 * k));
    memcpy(hdr + prefix, dict, dl);
    memset(hdr + prefix + dl, ' ', total - prefix - dl - 1);
    hdr[total - 1] = '\n';
    fwrite(hdr, 1, total, f);
    fwrite(data, 1, len - cut, f);
    return fclose(f);
}

static int write_bytes(const char *path, const char *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");

    if (!f)
        return -1;
    fwrite(bytes, 1, n, f);
    return fclose(f);
}

static void check_format_error(const char *path, const char *word)
{
    struct sgbd_mat m = {0};
    int rc;

    sgbd_err_clear();
    rc = sgbd_npy_read(path, &m, NULL);
    if (rc != SGBD_E_FORMAT || !strstr(sgbd_err_detail(rc), path) ||
        !strstr(sgbd_err_detail(rc), word)) {
        fprintf(stderr, "  %s: rc %d, detail '%s', wanted '%s'\n", path, rc,
                sgbd_err_detail(rc), word);
        harness_case_failed = 1;
    }
    if (m.data != NULL)
        harness_case_failed = 1;
}

static void test_npy_round_trip_f4_honours_stride(void)
{
    float src[3 * 7];
    struct sgbd_mat in = {src, 3, 5, 7}, out = {0};
    struct sgbd_npy_header h;
    char path[128];

    for (int k = 0; k < 21; k++)
        src[k] = (float)k * 0.25f - 2.0f;
    path_of(path, sizeof(path), "rt.npy");
    CHECK_INT(sgbd_npy_write(path, in), 0);
    CHECK_INT(sgbd_npy_read_header(path, &h), 0);
    CHECK_INT(h.major, 1);
    CHECK_STR(h.descr, "<f4");
    CHECK_INT(h.data_offset % 64, 0);
    CHECK_INT(h.rows, 3);
    CHECK_INT(h.cols, 5);
    CHECK_INT(sgbd_npy_read(path, &out, NULL), 0);
    CHECK_INT(out.rows, 3);
    CHECK_INT(out.cols, 5);
    CHECK_INT(out.stride, 5);
    CHECK_INT((uintptr_t)out.data % 64, 0);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 5; c++)
            CHECK(out.data[r * 5 + c] == src[r * 7 + c]);
    free(out.data);
}

static void test_npy_write_leaves_no_temporary_files(void)
{
    float a[2] = {1, 2}, b[4] = {3, 4, 5, 6};
    struct sgbd_mat m = {0};
    struct dirent *e;
    char path[128];
    int others = 0;
    DIR *d;

    path_of(path, sizeof(path), "replace.npy");
    CHECK_INT(sgbd_npy_write(path, sgbd_mat_view(a, 1, 2)), 0);
    CHECK_INT(sgbd_npy_write(path, sgbd_mat_view(b, 2, 2)), 0);
    CHECK_INT(sgbd_npy_read(path, &m, NULL), 0);
    CHECK(m.rows == 2 && m.data[3] == 6.0f);
    free(m.data);
    d = opendir(dir);
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        others += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    CHECK_INT(others, 0);
}

static void test_npy_reads_f8_as_float(void)
{
    double v[6] = {1.5, -2.25, 3e-3, 1e10, 0.0, -7.0};
    struct sgbd_mat m = {0};
    char path[128];

    path_of(path, sizeof(path), "f8.npy");
    CHECK(write_raw(path, 1, "{'descr': '<f8', 'fortran_order': False, "
                    "'shape': (2, 3), }", v, sizeof(v), 0) == 0);
    CHECK_INT(sgbd_npy_read(path, &m, NULL), 0);
    CHECK(m.rows == 2 && m.cols == 3);
    for (int k = 0; k < 6; k++)
        CHECK(m.data[k] == (float)v[k]);
    free(m.data);
}

static void test_npy_reads_v2_header_and_1d_shape(void)
{
    float v[4] = {4, 3, 2, 1};
    struct sgbd_npy_header h;
    struct sgbd_mat m = {0};
    char path[128];

    path_of(path, sizeof(path), "v2.npy");
    /* keys in another order, double quotes, no trailing comma */
    CHECK(write_raw(path, 2, "{\"shape\": (4,), \"fortran_order\": False, "
                    "\"descr\": \"<f4\"}", v, sizeof(v), 0) == 0);
    CHECK_INT(sgbd_npy_read_header(path, &h), 0);
    CHECK_INT(h.major, 2);
    CHECK_INT(h.ndim, 1);
    CHECK_INT(sgbd_npy_read(path, &m, NULL), 0);
    CHECK(m.rows == 4 && m.cols == 1);
    CHECK(m.data[0] == 4 && m.data[3] == 1);
    free(m.data);
}

static void test_npy_rejects_truncated_data(void)
{
    float v[6] = {0};
    char path[128];

    path_of(path, sizeof(path), "short.npy");
    CHECK(write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (2, 3), }", v, sizeof(v), 5) == 0);
    check_format_error(path, "truncated data");
    path_of(path, sizeof(path), "long.npy");
    CHECK(write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (1, 3), }", v, sizeof(v), 0) == 0);
    check_format_error(path, "trailing bytes");
}

static void test_npy_rejects_fortran_order(void)
{
    float v[6] = {0};
    char path[128];

    path_of(path, sizeof(path), "fortran.npy");
    CHECK(write_raw(path, 1, "{'descr': '<f4', 'fortran_order': True, "
                    "'shape': (2, 3), }", v, sizeof(v), 0) == 0);
    check_format_error(path, "fortran_order");
}

static void test_npy_rejects_other_dtypes(void)
{
    static const char *const dicts[] = {
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
    };
    double v[6] = {0};
    char path[128];

    path_of(path, sizeof(path), "dtype.npy");
    for (size_t k = 0; k < sizeof(dicts) / sizeof(dicts[0]); k++) {
        CHECK(write_raw(path, 1, dicts[k], v, sizeof(v), 0) == 0);
        check_format_error(path, "dtype");
    }
}

static void test_npy_rejects_bad_magic_and_version(void)
{
    static const char zmagic[] = "\x93NUMPZ\x01\x00\x10\x00{}            \n";
    static const char zip[] = "PK\x03\x04"; /* an .npz is a zip */
    static const char v7[] = "\x93NUMPY\x07\x00\x10\x00";
    char path[128];

    path_of(path, sizeof(path), "magic.npy");
    CHECK(write_bytes(path, zmagic, sizeof(zmagic) - 1) == 0);
    check_format_error(path, "bad magic");
    CHECK(write_bytes(path, zip, sizeof(zip) - 1) == 0);
    check_format_error(path, "bad magic");
    CHECK(write_bytes(path, v7, sizeof(v7) - 1) == 0);
    check_format_error(path, "version 7.0");
}

static void test_npy_rejects_malformed_dicts(void)
{
    static const char *const dicts[][2] = {
        {"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), "
         "'extra': 1}", "unknown key 'extra'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
         "'shape': (1, 1)}", "twice"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (1, 1)}",
         "expected ',' or '}'"},
        {"['descr', '<f4']", "expected '{'"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 1)}",
         "not True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [1, 1]}",
         "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, -1)}",
         "expected a dimension"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)} x",
         "text after"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1)}",
         "3 dimensions"},
    };
    float v[1] = {0};
    char path[128];

    path_of(path, sizeof(path), "dict.npy");
    for (size_t k = 0; k < sizeof(dicts) / sizeof(dicts[0]); k++) {
        CHECK(write_raw(path, 1, dicts[k][0], v, sizeof(v), 0) == 0);
        check_format_error(path, dicts[k][1]);
        CHECK(!harness_case_failed);
    }
}

static void test_npy_rejects_absurd_shapes(void)
{
    float v[4] = {0};
    char path[128];

    path_of(path, sizeof(path), "huge.npy");
    CHECK(write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (4294967296, 4294967296), }", v, sizeof(v),
                    0) == 0);
    check_format_error(path, "too large");
    CHECK(write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (99999999999999999999999, 1), }", v, sizeof(v),
                    0) == 0);
    check_format_error(path, "overflows");
    CHECK(write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (1000000, 1000), }", v, sizeof(v), 0) == 0);
    check_format_error(path, "truncated data");
}

static void test_npy_rejects_truncated_header(void)
{
    static const char cut[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4'";
    struct sgbd_npy_header h;
    char path[128];

    path_of(path, sizeof(path), "cut.npy");
    CHECK(write_bytes(path, cut, sizeof(cut) - 1) == 0);
    check_format_error(path, "truncated .npy header");
    CHECK_INT(sgbd_npy_parse_header(cut, 5, "mem", &h), SGBD_E_FORMAT);
    CHECK_INT(sgbd_npy_parse_header(cut, sizeof(cut) - 1, "mem", &h),
              SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(SGBD_E_FORMAT), "mem: truncated"));
}

static void test_npy_missing_file_is_enoent(void)
{
    struct sgbd_mat m = {0};
    int rc = sgbd_npy_read("/nonexistent/x.npy", &m, NULL);

    CHECK_INT(rc, -ENOENT);
    CHECK(strstr(sgbd_err_detail(rc), "/nonexistent/x.npy"));
}

static void test_npy_reads_numpy_file_through_both_backends(void)
{
    struct sgbd_bulkio_stats st;
    struct sgbd_bulkio_opts pr = {.force_pread = 1, .stats = &st};
    struct sgbd_bulkio_opts ur = {.chunk_bytes = 65536, .stats = &st};
    struct sgbd_mat a = {0}, b = {0};
    char buf[1024], path[1100];

    if (!harness_data_dir("scientific", buf, sizeof(buf)))
        SKIP("no ../shared/data/scientific");
    snprintf(path, sizeof(path), "%s/image_feat.npy", buf);
    CHECK_INT(sgbd_npy_read(path, &a, &pr), 0);
    CHECK_INT(st.backend, SGBD_BULKIO_PREAD);
    CHECK_INT(sgbd_npy_read(path, &b, &ur), 0);
    CHECK(a.rows == 1585 && a.cols == 512);
    CHECK(b.rows == 1585 && b.cols == 512);
    CHECK(memcmp(a.data, b.data, a.rows * a.cols * sizeof(float)) == 0);
    free(a.data);
    free(b.data);
    if (st.backend != SGBD_BULKIO_URING)
        SKIP("io_uring unavailable here");
}

static void cleanup(void)
{
    struct dirent *e;
    char path[512];
    DIR *d = opendir(dir);

    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sgbd_test_npy.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    RUN(test_npy_round_trip_f4_honours_stride);
    RUN(test_npy_write_leaves_no_temporary_files);
    RUN(test_npy_reads_f8_as_float);
    RUN(test_npy_reads_v2_header_and_1d_shape);
    RUN(test_npy_rejects_truncated_data);
    RUN(test_npy_rejects_fortran_order);
    RUN(test_npy_rejects_other_dtypes);
    RUN(test_npy_rejects_bad_magic_and_version);
    RUN(test_npy_rejects_malformed_dicts);
    RUN(test_npy_rejects_absurd_shapes);
    RUN(test_npy_rejects_truncated_header);
    RUN(test_npy_missing_file_is_enoent);
    RUN(test_npy_reads_numpy_file_through_both_backends);
    cleanup();
    return harness_finish();
}
