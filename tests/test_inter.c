/* test_inter.c - the .inter reader on real files and on broken ones. */
/* ctest: labels=unit timeout=60 */
#include <errno.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"

static int parse(struct sgbd_inter *r, const char *text)
{
    sgbd_err_clear();
    return sgbd_inter_parse(r, text, strlen(text), "t.inter");
}

/* text must be rejected with exactly this detail. */
static void check_rejects(const char *text, const char *detail)
{
    struct sgbd_inter r = {0};
    int rc = parse(&r, text);

    if (rc != SGBD_E_FORMAT || strcmp(sgbd_err_detail(rc), detail) != 0) {
        fprintf(stderr, "  rc %d detail '%s', wanted '%s'\n", rc,
                sgbd_err_detail(rc), detail);
        harness_case_failed = 1;
    }
    if (r.n != 0 || r.users != NULL)
        harness_case_failed = 1;
}

static void count_labels(const struct sgbd_inter *r, size_t n[3])
{
    n[0] = n[1] = n[2] = 0;
    for (size_t k = 0; k < r->n; k++)
        n[r->labels[k]]++;
}

static void test_inter_columns_found_by_name_in_any_order(void)
{
    struct sgbd_inter r = {0};
    const char *text = "x_label\ttimestamp\titemID\tjunk\tuserID\r\n"
                       "0\t5\t7\tfoo bar\t3\r\n"
                       "2\t6\t1\t\t0\r\n"
                       "1\t7\t7\tz\t3\r\n";

    CHECK_INT(parse(&r, text), 0);
    CHECK_INT(r.n, 3);
    CHECK(r.users[0] == 3 && r.items[0] == 7 && r.labels[0] == 0);
    CHECK(r.users[1] == 0 && r.items[1] == 1 && r.labels[1] == 2);
    CHECK(r.users[2] == 3 && r.items[2] == 7 && r.labels[2] == 1);
    sgbd_inter_free(&r);
    sgbd_inter_free(NULL);
}

static void test_inter_trailing_empty_lines_and_no_final_newline(void)
{
    struct sgbd_inter r = {0};

    CHECK_INT(parse(&r, "userID\titemID\tx_label\n1\t2\t0\n\n\n"), 0);
    CHECK_INT(r.n, 1);
    sgbd_inter_free(&r);
    CHECK_INT(parse(&r, "userID\titemID\tx_label\n1\t2\t0\n4\t5\t1"), 0);
    CHECK_INT(r.n, 2);
    CHECK(r.users[1] == 4 && r.items[1] == 5 && r.labels[1] == 1);
    sgbd_inter_free(&r);
    CHECK_INT(parse(&r, "userID\titemID\tx_label\n"), 0);
    CHECK_INT(r.n, 0);
    sgbd_inter_free(&r);
}

static void test_inter_rejects_missing_header(void)
{
    check_rejects("0\t0\t1\t0\t0\n1\t1\t1\t0\t0\n",
                  "t.inter:1: no header line (expected column names userID, "
                  "itemID, x_label)");
    check_rejects("", "t.inter:1: no header line (expected column names "
                      "userID, itemID, x_label)");
}

static void test_inter_rejects_missing_or_repeated_column(void)
{
    check_rejects("userID\titemID\trating\ttimestamp\n0\t0\t1\t0\n",
                  "t.inter:1: missing column 'x_label' in the header");
    check_rejects("userid\titemID\tx_label\n0\t0\t0\n",
                  "t.inter:1: missing column 'userID' in the header");
    check_rejects("userID\titemID\tx_label\titemID\n0\t0\t0\t0\n",
                  "t.inter:1: column 'itemID' appears twice");
}

static void test_inter_rejects_bad_ids_with_file_line(void)
{
    const char *h = "userID\titemID\trating\ttimestamp\tx_label\n"
                    "0\t0\t1\t0\t0\n";
    char text[256];

    snprintf(text, sizeof(text), "%sabc\t1\t1\t0\t0\n", h);
    check_rejects(text, "t.inter:3: userID 'abc' is not a whole number");
    snprintf(text, sizeof(text), "%s0\t1.5\t1\t0\t0\n", h);
    check_rejects(text, "t.inter:3: itemID '1.5' is not a whole number");
    snprintf(text, sizeof(text), "%s0\t-4\t1\t0\t0\n", h);
    check_rejects(text, "t.inter:3: itemID '-4' is negative");
    snprintf(text, sizeof(text), "%s\t4\t1\t0\t0\n", h);
    check_rejects(text, "t.inter:3: userID '' is not a whole number");
    snprintf(text, sizeof(text), "%s2147483648\t4\t1\t0\t0\n", h);
    check_rejects(text, "t.inter:3: userID '2147483648' is too large "
                        "(max 2147483647)");
}

static void test_inter_rejects_bad_label_and_column_count(void)
{
    const char *h = "userID\titemID\trating\ttimestamp\tx_label\n";
    char text[256];

    snprintf(text, sizeof(text), "%s0\t1\t1\t0\t3\n", h);
    check_rejects(text, "t.inter:2: x_label '3' is not 0, 1 or 2");
    snprintf(text, sizeof(text), "%s0\t1\t1\t0\t00\n", h);
    check_rejects(text, "t.inter:2: x_label '00' is not 0, 1 or 2");
    snprintf(text, sizeof(text), "%s0\t1\t1\t0\t0\n0\t1\t1\t0\n", h);
    check_rejects(text, "t.inter:3: 4 columns, the header has 5");
    snprintf(text, sizeof(text), "%s0\t1\t1\t0\t0\t\n", h);
    check_rejects(text, "t.inter:2: 6 columns, the header has 5");
    snprintf(text, sizeof(text), "%s0 1 1 0 0\n", h);
    check_rejects(text, "t.inter:2: userID '0 1 1 0 0' is not a whole "
                        "number");
    snprintf(text, sizeof(text), "%s0\t1\t1\t0\t0\n\n1\t1\t1\t0\t0\n", h);
    check_rejects(text, "t.inter:3: empty line inside the data");
}

static void test_inter_read_names_the_file(void)
{
    char path[] = "/tmp/sgbd_test_inter.XXXXXX";
    struct sgbd_inter r = {0};
    int fd = mkstemp(path), rc;
    const char *text = "userID\titemID\tx_label\n0\t0\t0\n0\tx\t0\n";

    CHECK(fd >= 0);
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    rc = sgbd_inter_read(&r, path, NULL);
    CHECK_INT(rc, SGBD_E_FORMAT);
    CHECK(strncmp(sgbd_err_detail(rc), path, strlen(path)) == 0);
    CHECK(strstr(sgbd_err_detail(rc), ":3: itemID 'x'") != NULL);
    unlink(path);
    CHECK_INT(sgbd_inter_read(&r, path, NULL), -ENOENT);
}

static void test_inter_scientific_sizes(void)
{
    struct sgbd_inter r = {0};
    struct sgbd_dataset ds;
    char buf[1024], path[1100];
    size_t n[3];

    if (!harness_data_dir("scientific", buf, sizeof(buf)))
        SKIP("no ../shared/data/scientific");
    snprintf(path, sizeof(path), "%s/scientific.inter", buf);
    CHECK_INT(sgbd_inter_read(&r, path, NULL), 0);
    count_labels(&r, n);
    CHECK_INT(n[0], 13716);
    CHECK_INT(n[1], 2926);
    CHECK_INT(n[2], 2926);
    CHECK_INT(sgbd_dataset_build(&ds, &r), 0);
    CHECK_INT(ds.n_users, 2928);
    CHECK_INT(ds.n_items, 1585);
    CHECK_INT(ds.n_train, 13716);
    sgbd_dataset_free(&ds);
    sgbd_inter_free(&r);
}

static void test_inter_baby_sizes(void)
{
    struct sgbd_inter r = {0};
    struct sgbd_dataset ds;
    char buf[1024], path[1100];
    size_t n[3];

    if (!harness_data_dir("baby", buf, sizeof(buf)))
        SKIP("no ../shared/data/baby");
    snprintf(path, sizeof(path), "%s/baby.inter", buf);
    CHECK_INT(sgbd_inter_read(&r, path, NULL), 0);
    count_labels(&r, n);
    CHECK_INT(r.n, 160792);
    CHECK_INT(n[0], 119674);
    CHECK_INT(n[1], 20559);
    CHECK_INT(n[2], 20559);
    CHECK_INT(sgbd_dataset_build(&ds, &r), 0);
    CHECK_INT(ds.n_users, 19445);
    CHECK_INT(ds.n_items, 7050);
    CHECK_INT(ds.n_train, 119674);
    sgbd_dataset_free(&ds);
    sgbd_inter_free(&r);
}

int main(void)
{
    RUN(test_inter_columns_found_by_name_in_any_order);
    RUN(test_inter_trailing_empty_lines_and_no_final_newline);
    RUN(test_inter_rejects_missing_header);
    RUN(test_inter_rejects_missing_or_repeated_column);
    RUN(test_inter_rejects_bad_ids_with_file_line);
    RUN(test_inter_rejects_bad_label_and_column_count);
    RUN(test_inter_read_names_the_file);
    RUN(test_inter_scientific_sizes);
    RUN(test_inter_baby_sizes);
    return harness_finish();
}
