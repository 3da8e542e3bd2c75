/* test_dataset.c - MMRec splits, folder loading and feature channels. */
/* ctest: labels=unit timeout=60 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/npy.h"

static char dir[64];

static void path_of(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

static int write_text(const char *name, const char *text)
{
    char path[128];
    FILE *f;

    path_of(path, sizeof(path), name);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int write_matrix(const char *name, size_t rows, size_t cols, float v)
{
    float *data = malloc(rows * cols * sizeof(float) + 1);
    char path[128];
    int rc;

    for (size_t k = 0; k < rows * cols; k++)
        data[k] = v + (float)k;
    path_of(path, sizeof(path), name);
    rc = sgbd_npy_write(path, sgbd_mat_view(data, rows, cols));
    free(data);
    return rc;
}

static void remove_file(const char *name)
{
    char path[128];

    path_of(path, sizeof(path), name);
    unlink(path);
}

/* Set of user u as a string "a,b,c" for compact comparisons. */
static const char *set_str(const struct sgbd_itemsets *s, uint32_t u)
{
    static char buf[256];
    size_t o = 0;

    buf[0] = '\0';
    for (uint64_t k = s->ptr[u]; k < s->ptr[u + 1]; k++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%u",
                              k == s->ptr[u] ? "" : ",", s->items[k]);
    return buf;
}

/* User 2 has only valid/test rows (cold start); item 5 occurs only in
 * test, item 2 only in valid; (0, 1) is a duplicate train row. */
static const char tiny[] =
    "userID\titemID\tx_label\n"
    "0\t0\t0\n0\t1\t0\n0\t1\t0\n0\t2\t1\n1\t3\t0\n1\t0\t2\n"
    "2\t4\t1\n2\t5\t2\n0\t2\t1\n";

static void test_dataset_build_follows_mmrec_rules(void)
{
    struct sgbd_inter r = {0};
    struct sgbd_dataset ds;

    CHECK_INT(sgbd_inter_parse(&r, tiny, strlen(tiny), "tiny"), 0);
    CHECK_INT(sgbd_dataset_build(&ds, &r), 0);
    sgbd_inter_free(&r);
    CHECK_INT(ds.n_users, 3);
    CHECK_INT(ds.n_items, 6);

    /* train rows: duplicates and file order kept */
    CHECK_INT(ds.n_train, 4);
    CHECK(ds.train_users[1] == 0 && ds.train_items[1] == 1);
    CHECK(ds.train_users[2] == 0 && ds.train_items[2] == 1);
    CHECK(ds.train_users[3] == 1 && ds.train_items[3] == 3);

    /* sets sorted and unique; user 2's valid/test rows dropped */
    CHECK_STR(set_str(&ds.train, 0), "0,1");
    CHECK_STR(set_str(&ds.train, 1), "3");
    CHECK_STR(set_str(&ds.train, 2), "");
    CHECK_STR(set_str(&ds.valid, 0), "2");
    CHECK_STR(set_str(&ds.valid, 2), "");
    CHECK_STR(set_str(&ds.test, 1), "0");
    CHECK_STR(set_str(&ds.test, 2), "");
    CHECK_INT(sgbd_itemsets_total(&ds.valid, ds.n_users), 1);
    CHECK_INT(sgbd_itemsets_total(&ds.test, ds.n_users), 1);

    /* negatives: train items only, ascending */
    CHECK_INT(ds.n_neg_items, 3);
    CHECK(ds.neg_items[0] == 0 && ds.neg_items[1] == 1 &&
          ds.neg_items[2] == 3);

    CHECK(sgbd_itemsets_has(&ds.train, 0, 1));
    CHECK(!sgbd_itemsets_has(&ds.train, 0, 2));
    CHECK(!sgbd_itemsets_has(&ds.train, 2, 0));
    CHECK(sgbd_itemsets_has(&ds.test, 1, 0));
    sgbd_dataset_free(&ds);
    CHECK(ds.train.ptr == NULL && ds.n_users == 0);
    sgbd_dataset_free(&ds);
    sgbd_dataset_free(NULL);
}

static void test_dataset_without_train_rows_is_rejected(void)
{
    const char *text = "userID\titemID\tx_label\n0\t0\t1\n";
    struct sgbd_inter r = {0};
    struct sgbd_dataset ds = {.n_users = 77};

    CHECK_INT(sgbd_inter_parse(&r, text, strlen(text), "x"), 0);
    CHECK_INT(sgbd_dataset_build(&ds, &r), SGBD_E_FORMAT);
    CHECK_INT(ds.n_users, 77); /* unchanged */
    sgbd_inter_free(&r);
}

static void test_dataset_rejects_sparse_ids(void)
{
    const char *text = "userID\titemID\tx_label\n0\t0\t0\n2000000000\t1\t0\n";
    struct sgbd_inter r = {0};
    struct sgbd_dataset ds;
    int rc;

    CHECK_INT(sgbd_inter_parse(&r, text, strlen(text), "x"), 0);
    rc = sgbd_dataset_build(&ds, &r);
    CHECK_INT(rc, SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(rc), "ids must be dense"));
    sgbd_inter_free(&r);
}

static void test_dataset_load_dir_needs_exactly_one_inter(void)
{
    struct sgbd_dataset ds;
    int rc;

    rc = sgbd_dataset_load_dir(&ds, dir, NULL);
    CHECK_INT(rc, SGBD_E_NOTFOUND);
    CHECK(strstr(sgbd_err_detail(rc), dir));

    CHECK(write_text("tiny.inter", tiny) == 0);
    CHECK_INT(sgbd_dataset_load_dir(&ds, dir, NULL), 0);
    CHECK_INT(ds.n_users, 3);
    CHECK_INT(ds.n_train, 4);
    sgbd_dataset_free(&ds);

    CHECK(write_text("other.inter", tiny) == 0);
    rc = sgbd_dataset_load_dir(&ds, dir, NULL);
    CHECK_INT(rc, SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(rc), "2 .inter files"));
    remove_file("other.inter");

    CHECK(write_text("tiny.inter", "userID\titemID\tx_label\n0\t0\t2\n") == 0);
    rc = sgbd_dataset_load_dir(&ds, dir, NULL);
    CHECK_INT(rc, SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(rc), "tiny.inter: no training rows"));
    remove_file("tiny.inter");
}

static void test_features_load_sorted_channels(void)
{
    struct sgbd_features f;
    const struct sgbd_channel *img;

    CHECK(write_matrix("text_feat.npy", 6, 3, 100) == 0);
    CHECK(write_matrix("image_feat.npy", 6, 4, 0) == 0);
    CHECK(write_text("notes_feat.txt", "ignored") == 0);
    CHECK_INT(sgbd_features_load_dir(&f, dir, 6, NULL), 0);
    CHECK_INT(f.n, 2);
    CHECK_STR(f.ch[0].name, "image");
    CHECK_STR(f.ch[1].name, "text");
    CHECK(f.ch[0].m.rows == 6 && f.ch[0].m.cols == 4);
    CHECK(f.ch[1].m.cols == 3 && f.ch[1].m.data[17] == 117.0f);
    img = sgbd_features_find(&f, "image");
    CHECK(img == &f.ch[0]);
    CHECK(sgbd_features_find(&f, "audio") == NULL);
    sgbd_features_free(&f);
    CHECK_INT(f.n, 0);
    sgbd_features_free(NULL);
    remove_file("notes_feat.txt");
}

static void test_features_row_mismatch_names_the_file(void)
{
    struct sgbd_features f = {.n = 5};
    int rc;

    CHECK(write_matrix("zz_feat.npy", 5, 2, 0) == 0);
    rc = sgbd_features_load_dir(&f, dir, 6, NULL);
    CHECK_INT(rc, SGBD_E_SHAPE);
    CHECK(strstr(sgbd_err_detail(rc), "zz_feat.npy: 5 rows, the dataset "
                                      "has 6 items"));
    CHECK_INT(f.n, 5); /* unchanged */
    remove_file("zz_feat.npy");
}

static void test_features_reject_non_finite_values(void)
{
    float v[4] = {1, 2, NAN, 4};
    struct sgbd_features f = {0};
    char path[128];
    int rc;

    path_of(path, sizeof(path), "bad_feat.npy");
    CHECK_INT(sgbd_npy_write(path, sgbd_mat_view(v, 2, 2)), 0);
    remove_file("image_feat.npy");
    remove_file("text_feat.npy");
    rc = sgbd_features_load_dir(&f, dir, 2, NULL);
    CHECK_INT(rc, SGBD_E_FORMAT);
    CHECK(strstr(sgbd_err_detail(rc), "bad_feat.npy: value at row 1 "
                                      "column 0 is not finite"));
    remove_file("bad_feat.npy");
    CHECK_INT(sgbd_features_load_dir(&f, dir, 2, NULL), 0);
    CHECK_INT(f.n, 0);
}

static void test_features_noise_is_seeded_and_per_channel(void)
{
    struct sgbd_features a, b, c;
    double s = 0, s2 = 0;
    size_t n = 0;

    CHECK(write_matrix("image_feat.npy", 50, 40, 0) == 0);
    CHECK(write_matrix("text_feat.npy", 50, 8, 0) == 0);
    CHECK_INT(sgbd_features_load_dir(&a, dir, 50, NULL), 0);
    CHECK_INT(sgbd_features_load_dir(&b, dir, 50, NULL), 0);
    CHECK_INT(sgbd_features_load_dir(&c, dir, 50, NULL), 0);
    CHECK_INT(sgbd_features_add_noise(&a, 0.0, 1), 0);
    CHECK(memcmp(a.ch[0].m.data, b.ch[0].m.data, 2000 * sizeof(float)) == 0);
    CHECK_INT(sgbd_features_add_noise(&a, -1.0, 1), -EINVAL);
    CHECK_INT(sgbd_features_add_noise(&a, NAN, 1), -EINVAL);

    CHECK_INT(sgbd_features_add_noise(&a, 0.5, 7), 0);
    c.n = 1; /* image only: its noise must not depend on text */
    CHECK_INT(sgbd_features_add_noise(&c, 0.5, 7), 0);
    c.n = 2;
    CHECK(memcmp(a.ch[0].m.data, c.ch[0].m.data, 2000 * sizeof(float)) == 0);
    for (size_t k = 0; k < 2000; k++) {
        double d = a.ch[0].m.data[k] - b.ch[0].m.data[k];
        s += d, s2 += d * d, n++;
    }
    CHECK_NEAR(s / (double)n, 0.0, 0.05);
    CHECK_NEAR(sqrt(s2 / (double)n), 0.5, 0.05);
    CHECK_INT(sgbd_features_add_noise(&b, 0.5, 8), 0);
    CHECK(memcmp(a.ch[0].m.data, b.ch[0].m.data, 2000 * sizeof(float)) != 0);
    sgbd_features_free(&a);
    sgbd_features_free(&b);
    sgbd_features_free(&c);
    remove_file("image_feat.npy");
    remove_file("text_feat.npy");
}

static void test_dataset_scientific_folder_with_features(void)
{
    struct sgbd_dataset ds;
    struct sgbd_features f;
    char buf[1024];

    if (!harness_data_dir("scientific", buf, sizeof(buf)))
        SKIP("no ../shared/data/scientific");
    CHECK_INT(sgbd_dataset_load_dir(&ds, buf, NULL), 0);
    CHECK_INT(ds.n_users, 2928);
    CHECK_INT(ds.n_items, 1585);
    CHECK_INT(ds.n_train, 13716);
    CHECK_INT(sgbd_itemsets_total(&ds.valid, ds.n_users), 2926);
    CHECK_INT(sgbd_itemsets_total(&ds.test, ds.n_users), 2926);
    CHECK(ds.n_neg_items > 0 && ds.n_neg_items <= ds.n_items);
    for (size_t k = 1; k < ds.n_neg_items; k++)
        CHECK(ds.neg_items[k - 1] < ds.neg_items[k]);
    CHECK_INT(sgbd_features_load_dir(&f, buf, ds.n_items, NULL), 0);
    CHECK_INT(f.n, 2);
    CHECK_STR(f.ch[0].name, "image");
    CHECK_STR(f.ch[1].name, "text");
    CHECK(f.ch[0].m.rows == 1585 && f.ch[0].m.cols == 512);
    CHECK(f.ch[1].m.rows == 1585 && f.ch[1].m.cols == 512);
    sgbd_features_free(&f);
    CHECK_INT(sgbd_features_load_dir(&f, buf, ds.n_items + 1, NULL),
              SGBD_E_SHAPE);
    sgbd_dataset_free(&ds);
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
    snprintf(dir, sizeof(dir), "/tmp/sgbd_test_dataset.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    RUN(test_dataset_build_follows_mmrec_rules);
    RUN(test_dataset_without_train_rows_is_rejected);
    RUN(test_dataset_rejects_sparse_ids);
    RUN(test_dataset_load_dir_needs_exactly_one_inter);
    RUN(test_features_load_sorted_channels);
    RUN(test_features_row_mismatch_names_the_file);
    RUN(test_features_reject_non_finite_values);
    RUN(test_features_noise_is_seeded_and_per_channel);
    RUN(test_dataset_scientific_folder_with_features);
    cleanup();
    return harness_finish();
}
