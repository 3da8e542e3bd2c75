/* test_synth.c - synthetic catalogues: format, split rule, determinism,
 * what the noise level does, and the `sgbd synth` command line. */
/* ctest: labels=unit timeout=120 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/bulkio.h"
#include "sgbd/cli.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/npy.h"
#include "sgbd/synth.h"

static char root[64];

static const char *sub(const char *name)
{
    static char buf[16][128];
    static int k;

    k = (k + 1) % 16; /* callers keep a few at once */
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", root, name);
    return buf[k];
}

static void small_params(struct sgbd_synth_params *p)
{
    sgbd_synth_defaults(p);
    p->n_users = 120;
    p->n_items = 80;
    p->n_clusters = 4;
    p->dim_image = 24;
    p->dim_text = 8;
    p->interactions_per_user = 12;
    p->seed = 42;
}

static int same_file(const char *a, const char *b)
{
    void *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same;

    if (sgbd_bulkio_read_file(a, &x, &nx, NULL) != 0 ||
        sgbd_bulkio_read_file(b, &y, &ny, NULL) != 0) {
        free(x);
        return -1;
    }
    same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static void test_synth_same_seed_same_files(void)
{
    struct sgbd_synth_params p;
    char a[160], b[160];
    const char *files[] = {"/s.inter", "/image_feat.npy", "/text_feat.npy"};

    small_params(&p);
    snprintf(p.name, sizeof(p.name), "s");
    CHECK_INT(sgbd_synth_write(sub("seed_a"), &p), 0);
    CHECK_INT(sgbd_synth_write(sub("seed_b"), &p), 0);
    for (int k = 0; k < 3; k++) {
        snprintf(a, sizeof(a), "%s%s", sub("seed_a"), files[k]);
        snprintf(b, sizeof(b), "%s%s", sub("seed_b"), files[k]);
        CHECK_INT(same_file(a, b), 1);
    }
    p.seed = 43;
    CHECK_INT(sgbd_synth_write(sub("seed_b"), &p), 0);
    for (int k = 0; k < 3; k++) {
        snprintf(a, sizeof(a), "%s%s", sub("seed_a"), files[k]);
        snprintf(b, sizeof(b), "%s%s", sub("seed_b"), files[k]);
        CHECK_INT(same_file(a, b), 0);
    }
}

/* Per user: the MMRec split rule, >= 5 distinct items; all ids used. */
static void test_synth_split_rule_and_coverage(void)
{
    struct sgbd_synth_params p;
    struct sgbd_inter r = {0};
    uint32_t U = 0, I = 0;
    uint32_t *count, (*lab)[3];
    uint8_t *pair;

    small_params(&p);
    CHECK_INT(sgbd_synth_write(sub("rule"), &p), 0);
    CHECK_INT(sgbd_inter_read(&r, sub("rule/rule.inter"), NULL), 0);
    for (size_t k = 0; k < r.n; k++) {
        U = r.users[k] + 1 > U ? r.users[k] + 1 : U;
        I = r.items[k] + 1 > I ? r.items[k] + 1 : I;
    }
    CHECK_INT(U, p.n_users);
    CHECK_INT(I, p.n_items);
    count = calloc(I, sizeof(*count));
    lab = calloc(U, sizeof(*lab));
    pair = calloc((size_t)U * I, 1);
    CHECK(count && lab && pair);
    for (size_t k = 0; k < r.n; k++) {
        count[r.items[k]]++;
        lab[r.users[k]][r.labels[k]]++;
        CHECK(pair[(size_t)r.users[k] * I + r.items[k]]++ == 0);
    }
    for (uint32_t i = 0; i < I; i++)
        CHECK(count[i] > 0);
    for (uint32_t u = 0; u < U; u++) {
        uint32_t n = lab[u][0] + lab[u][1] + lab[u][2], k = n / 5;
        CHECK(n >= 5);
        CHECK_INT(lab[u][0], n < 10 ? n - 2 : n - k);
        CHECK_INT(lab[u][1], n < 10 ? 1 : k / 2);
        CHECK_INT(lab[u][2], n < 10 ? 1 : k - k / 2);
    }
    free(count);
    free(lab);
    free(pair);
    sgbd_inter_free(&r);
}

static void test_synth_output_loads_back(void)
{
    struct sgbd_synth_params p;
    struct sgbd_dataset ds;
    struct sgbd_features f;

    small_params(&p);
    CHECK_INT(sgbd_synth_write(sub("load"), &p), 0);
    CHECK_INT(sgbd_dataset_load_dir(&ds, sub("load"), NULL), 0);
    CHECK_INT(ds.n_users, p.n_users);
    CHECK_INT(ds.n_items, p.n_items);
    CHECK_INT(sgbd_itemsets_total(&ds.valid, ds.n_users), p.n_users);
    CHECK(sgbd_itemsets_total(&ds.test, ds.n_users) >= p.n_users);
    CHECK_INT(sgbd_features_load_dir(&f, sub("load"), ds.n_items, NULL), 0);
    CHECK_INT(f.n, 2);
    CHECK_STR(f.ch[0].name, "image");
    CHECK_INT(f.ch[0].m.cols, 24);
    CHECK_INT(f.ch[1].m.cols, 8);
    sgbd_features_free(&f);
    sgbd_dataset_free(&ds);
}

static double cosine(struct sgbd_mat m, const double *norm, size_t a,
                     size_t b)
{
    double s = 0;

    for (size_t d = 0; d < m.cols; d++)
        s += (double)m.data[a * m.cols + d] * m.data[b * m.cols + d];
    return s / (norm[a] * norm[b]);
}

/* Mean cosine of item pairs taken by one user minus that of all pairs:
 * how much the features say about who takes what. */
static double cooccurrence_signal(const struct sgbd_dataset *ds,
                                  struct sgbd_mat m)
{
    double same = 0, all = 0;
    size_t n_same = 0, n_all = 0;
    double *norm = calloc(m.rows, sizeof(double));
    const struct sgbd_itemsets *t = &ds->train;

    for (size_t i = 0; i < m.rows; i++) {
        for (size_t d = 0; d < m.cols; d++)
            norm[i] += (double)m.data[i * m.cols + d] * m.data[i * m.cols + d];
        norm[i] = sqrt(norm[i]) + 1e-12;
    }
    for (uint32_t u = 0; u < ds->n_users; u++)
        for (uint64_t x = t->ptr[u]; x < t->ptr[u + 1]; x++)
            for (uint64_t y = x + 1; y < t->ptr[u + 1]; y++, n_same++)
                same += cosine(m, norm, t->items[x], t->items[y]);
    for (size_t a = 0; a < m.rows; a++)
        for (size_t b = a + 1; b < m.rows; b++, n_all++)
            all += cosine(m, norm, a, b);
    free(norm);
    return same / (double)n_same - all / (double)n_all;
}

static void test_synth_noise_controls_feature_information(void)
{
    struct sgbd_synth_params p;
    struct sgbd_dataset ds;
    struct sgbd_mat clean = {0}, noisy = {0};
    double s2 = 0, sig_clean, sig_noisy;

    small_params(&p);
    p.noise = 0;
    CHECK_INT(sgbd_synth_write(sub("clean"), &p), 0);
    p.noise = 30;
    CHECK_INT(sgbd_synth_write(sub("noisy"), &p), 0);
    /* the noise level touches the features only */
    CHECK_INT(same_file(sub("clean/clean.inter"), sub("noisy/noisy.inter")),
              1);
    CHECK_INT(sgbd_dataset_load_dir(&ds, sub("clean"), NULL), 0);
    CHECK_INT(sgbd_npy_read(sub("clean/image_feat.npy"), &clean, NULL), 0);
    CHECK_INT(sgbd_npy_read(sub("noisy/image_feat.npy"), &noisy, NULL), 0);

    /* same signal, noise of the requested size on top */
    for (size_t k = 0; k < clean.rows * clean.cols; k++) {
        double d = noisy.data[k] - clean.data[k];
        s2 += d * d;
    }
    CHECK_NEAR(sqrt(s2 / (double)(clean.rows * clean.cols)), 30.0, 1.5);

    sig_clean = cooccurrence_signal(&ds, clean);
    sig_noisy = cooccurrence_signal(&ds, noisy);
    fprintf(stderr, "  co-taken minus all-pairs cosine: noise 0 %.3f, "
            "noise 30 %.3f\n", sig_clean, sig_noisy);
    CHECK(sig_clean > 0.1);
    CHECK(fabs(sig_noisy) < 0.05);
    free(clean.data);
    free(noisy.data);
    sgbd_dataset_free(&ds);
}

static void test_synth_features_only_matches_full_run(void)
{
    struct sgbd_synth_params p;
    char a[160];
    DIR *d;
    struct dirent *e;
    int inter = 0;

    small_params(&p);
    CHECK_INT(sgbd_synth_write(sub("full"), &p), 0);
    p.features_only = 1;
    p.n_users = 0; /* not used */
    CHECK_INT(sgbd_synth_write(sub("feat"), &p), 0);
    snprintf(a, sizeof(a), "%s", sub("full/image_feat.npy"));
    CHECK_INT(same_file(a, sub("feat/image_feat.npy")), 1);
    snprintf(a, sizeof(a), "%s", sub("full/text_feat.npy"));
    CHECK_INT(same_file(a, sub("feat/text_feat.npy")), 1);
    d = opendir(sub("feat"));
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        inter += strstr(e->d_name, ".inter") != NULL;
    closedir(d);
    CHECK_INT(inter, 0);
}

static void test_synth_rejects_bad_params_and_foreign_inter(void)
{
    struct sgbd_synth_params p;
    int rc;

    small_params(&p);
    p.interactions_per_user = 4;
    CHECK_INT(sgbd_synth_write(sub("bad"), &p), -EINVAL);
    CHECK(strstr(sgbd_err_detail(-EINVAL), "interactions-per-user"));
    small_params(&p);
    p.interactions_per_user = 50; /* needs 95 items */
    CHECK_INT(sgbd_synth_check(&p), -EINVAL);
    small_params(&p);
    p.n_clusters = 81;
    CHECK_INT(sgbd_synth_check(&p), -EINVAL);
    small_params(&p);
    p.noise = -1;
    CHECK_INT(sgbd_synth_check(&p), -EINVAL);
    small_params(&p);
    snprintf(p.name, sizeof(p.name), "../x");
    CHECK_INT(sgbd_synth_check(&p), -EINVAL);

    small_params(&p);
    CHECK_INT(sgbd_synth_write(sub("twice"), &p), 0);
    snprintf(p.name, sizeof(p.name), "other");
    rc = sgbd_synth_write(sub("twice"), &p);
    CHECK_INT(rc, SGBD_E_EXISTS);
    CHECK(strstr(sgbd_err_detail(rc), "twice.inter"));
}

static int cli(const char *const *args)
{
    char *argv[32];
    int argc = 0;

    while (args[argc] && argc < 31) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    sgbd_err_clear();
    return sgbd_cli_synth(argc, argv);
}

static void test_synth_cli_usage_errors(void)
{
    const char *help[] = {"synth", "--help", NULL};
    const char *no_out[] = {"synth", "--users", "10", NULL};
    const char *bad_num[] = {"synth", "--out", sub("c"), "--users", "1x",
                             NULL};
    const char *unknown[] = {"synth", "--out", sub("c"), "--colour", "red",
                             NULL};
    const char *no_value[] = {"synth", "--out", sub("c"), "--seed", NULL};
    const char *last_unknown[] = {"synth", "--out", sub("c"), "--bogus",
                                  NULL};
    const char *low[] = {"synth", "--out", sub("c"),
                         "--interactions-per-user", "3", NULL};
    const char *neg[] = {"synth", "--out", sub("c"), "--noise=-2", NULL};
    int rc;

    fflush(stdout);
    CHECK_INT(cli(help), SGBD_CLI_HELP);
    CHECK_INT(cli(no_out), SGBD_E_USAGE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_USAGE), "--out DIR is required"));
    CHECK_INT(cli(bad_num), SGBD_E_USAGE);
    CHECK_STR(sgbd_err_detail(SGBD_E_USAGE),
              "--users: '1x' is not a whole number in 0..2147483647");
    CHECK_INT(cli(unknown), SGBD_E_USAGE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_USAGE), "unknown option '--colour'"));
    CHECK_INT(cli(no_value), SGBD_E_USAGE);
    CHECK_STR(sgbd_err_detail(SGBD_E_USAGE), "--seed needs a value");
    CHECK_INT(cli(last_unknown), SGBD_E_USAGE);
    CHECK(strstr(sgbd_err_detail(SGBD_E_USAGE), "unknown option '--bogus'"));
    rc = cli(low);
    CHECK_INT(rc, SGBD_E_USAGE);
    CHECK_STR(sgbd_err_detail(rc), "--interactions-per-user: must be at "
                                   "least 5 (5-core)");
    CHECK_INT(cli(neg), SGBD_E_USAGE);
    CHECK(access(sub("c"), F_OK) != 0); /* nothing written */
}

static void test_synth_cli_writes_a_loadable_catalogue(void)
{
    const char *args[] = {"synth", "--out", sub("cli"), "--users", "60",
                          "--items=40", "--clusters", "3", "--dim-image",
                          "16", "--dim-text", "0", "--noise", "1.5",
                          "--interactions-per-user", "6", "--seed", "5",
                          NULL};
    const char *feat[] = {"synth", "--out", sub("clifeat"), "--features-only",
                          "--items-from", sub("cli"), "--dim-image", "16",
                          "--dim-text", "0", "--noise", "1.5", "--clusters",
                          "3", "--seed", "5", NULL};
    struct sgbd_dataset ds;
    struct sgbd_npy_header h;

    CHECK_INT(cli(args), 0);
    CHECK_INT(sgbd_dataset_load_dir(&ds, sub("cli"), NULL), 0);
    CHECK(ds.n_users == 60 && ds.n_items == 40);
    sgbd_dataset_free(&ds);
    CHECK_INT(sgbd_npy_read_header(sub("cli/image_feat.npy"), &h), 0);
    CHECK(h.rows == 40 && h.cols == 16);
    CHECK(access(sub("cli/text_feat.npy"), F_OK) != 0);
    CHECK_INT(cli(feat), 0);
    CHECK_INT(same_file(sub("cli/image_feat.npy"),
                        sub("clifeat/image_feat.npy")), 1);
}

static void remove_tree(const char *path)
{
    struct dirent *e;
    char child[512];
    DIR *d = opendir(path);

    if (!d) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    rmdir(path);
}

int main(void)
{
    snprintf(root, sizeof(root), "/tmp/sgbd_test_synth.XXXXXX");
    if (!mkdtemp(root))
        return 1;
    RUN(test_synth_same_seed_same_files);
    RUN(test_synth_split_rule_and_coverage);
    RUN(test_synth_output_loads_back);
    RUN(test_synth_noise_controls_feature_information);
    RUN(test_synth_features_only_matches_full_run);
    RUN(test_synth_rejects_bad_params_and_foreign_inter);
    RUN(test_synth_cli_usage_errors);
    RUN(test_synth_cli_writes_a_loadable_catalogue);
    remove_tree(root);
    return harness_finish();
}
