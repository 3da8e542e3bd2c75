/* test_base.c - err, log, rng and config. */
/* ctest: labels=unit timeout=30 */
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/config.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/rng.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_err_detail_names_the_problem(void)
{
    sgbd_err_clear();
    CHECK_STR(sgbd_err_detail(SGBD_E_SHAPE), "wrong shape");
    int rc = sgbd_errf(SGBD_E_FORMAT, "%s: bad", "x.npy");
    CHECK_INT(rc, SGBD_E_FORMAT);
    CHECK_STR(sgbd_err_detail(rc), "x.npy: bad");
    CHECK_STR(sgbd_strerror(-2), "No such file or directory");
}

/* Details quote hostile bytes; they must stay one line (fuzzing found a
 * newline from a .npy header key starting a line of its own). */
static void test_err_detail_escapes_control_bytes(void)
{
    int rc = sgbd_errf(SGBD_E_FORMAT, "key '%s' bad", "a\nb\rc\x7f");
    CHECK_STR(sgbd_err_detail(rc), "key 'a\\x0ab\\x0dc\\x7f' bad");
}

static void test_log_line_has_prefix_and_one_write(void)
{
    int fds[2];
    char buf[256] = {0};
    CHECK(pipe(fds) == 0);
    sgbd_log_set_fd(fds[1]);
    SGBD_INFO("unit_test", "a=%d b=%s", 1, "x");
    SGBD_DEBUG("hidden", "never=%d", 1); /* below the default level */
    sgbd_log_set_fd(2);
    close(fds[1]);
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    CHECK(n > 0);
    CHECK_STR(buf, "<6>ev=unit_test a=1 b=x\n");
}

static void test_log_quote_escapes_client_bytes(void)
{
    char buf[64];
    CHECK_STR(sgbd_log_quote("plain", buf, sizeof(buf)), "plain");
    CHECK_STR(sgbd_log_quote("a b\"c\n", buf, sizeof(buf)),
              "\"a b\\\"c\\x0a\"");
    CHECK_STR(sgbd_log_quote("", buf, sizeof(buf)), "\"\"");
}

static void test_rng_streams_are_reproducible_and_distinct(void)
{
    struct sgbd_rng a, b, c;
    sgbd_rng_init(&a, 999, 1);
    sgbd_rng_init(&b, 999, 1);
    sgbd_rng_init(&c, 999, 2);
    uint64_t x = sgbd_rng_u64(&a);
    CHECK(x == sgbd_rng_u64(&b));
    CHECK(x != sgbd_rng_u64(&c));
}

static void test_rng_below_is_uniform_enough(void)
{
    struct sgbd_rng r;
    int counts[7] = {0};
    sgbd_rng_init(&r, 1, 1);
    for (int i = 0; i < 70000; i++)
        counts[sgbd_rng_below(&r, 7)]++;
    for (int i = 0; i < 7; i++)
        CHECK(counts[i] > 9500 && counts[i] < 10500);
}

static void test_rng_normal_has_unit_variance(void)
{
    struct sgbd_rng r;
    double s = 0, s2 = 0;
    sgbd_rng_init(&r, 5, 3);
    for (int i = 0; i < 100000; i++) {
        double x = sgbd_rng_normal(&r);
        s += x, s2 += x * x;
    }
    CHECK_NEAR(s / 1e5, 0.0, 0.02);
    CHECK_NEAR(s2 / 1e5, 1.0, 0.02);
}

static void test_config_defaults_match_table(void)
{
    struct sgbd_config cfg;
    sgbd_config_defaults(&cfg);
    CHECK_STR(cfg.listen, "127.0.0.1:8080");
    CHECK_INT(cfg.embedding_size, 64);
    CHECK_INT(cfg.beta, 3);
    CHECK_NEAR(cfg.alpha2, 0.2, 1e-12);
    CHECK_STR(cfg.optimizer, "sgbd");
}

static void test_config_file_overrides_defaults(void)
{
    struct sgbd_config cfg;
    const char *path = "test_base_ok.conf";
    write_file(path, "[model]\nembedding_size = 32\n[optimizer]\n"
                     "name = mg\nrho = 0.1\n[retrain]\nwarm_start = no\n");
    sgbd_config_defaults(&cfg);
    CHECK_INT(sgbd_config_load(&cfg, path), 0);
    CHECK_INT(cfg.embedding_size, 32);
    CHECK_STR(cfg.optimizer, "mg");
    CHECK_NEAR(cfg.rho, 0.1, 1e-12);
    CHECK_INT(cfg.retrain_warm_start, 0);
    unlink(path);
}

static void test_config_unknown_key_names_file_line_key(void)
{
    struct sgbd_config cfg;
    const char *path = "test_base_bad.conf";
    write_file(path, "[model]\nembedding_size = 32\nlearning_rat = 1\n");
    sgbd_config_defaults(&cfg);
    int rc = sgbd_config_load(&cfg, path);
    CHECK_INT(rc, SGBD_E_CONFIG);
    CHECK_STR(sgbd_err_detail(rc),
              "test_base_bad.conf:3: [model] learning_rat: unknown option");
    CHECK_INT(cfg.embedding_size, 64); /* nothing applied */
    unlink(path);
}

static void test_config_rejects_out_of_range_and_garbage(void)
{
    struct sgbd_config cfg;
    sgbd_config_defaults(&cfg);
    CHECK_INT(sgbd_config_set(&cfg, "model.embedding_size", "0"),
              SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "model.embedding_size", "12x"),
              SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "optimizer.name", "sgd"), SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "train.streams", "torch"), SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "train.streams", "mmrec"), 0);
    CHECK_INT(sgbd_config_set(&cfg, "retrain.enabled", "maybe"),
              SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "nosuch", "1"), SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "model.learning_rate", "nan"),
              SGBD_E_CONFIG);
    CHECK_INT(sgbd_config_set(&cfg, "model.learning_rate", "0.01"), 0);
    CHECK_NEAR(cfg.learning_rate, 0.01, 1e-12);
}

static void test_config_reference_file_reloads_to_defaults(void)
{
    struct sgbd_config a, b;
    const char *path = "test_base_ref.conf";
    FILE *f = fopen(path, "w");
    sgbd_config_write_reference(f);
    fclose(f);
    sgbd_config_defaults(&a);
    memset(&b, 0x5a, sizeof(b));
    sgbd_config_defaults(&b);
    CHECK_INT(sgbd_config_load(&b, path), 0);
    CHECK(memcmp(&a, &b, sizeof(a)) == 0);
    /* lines short enough to read, and to fit inih's line buffer */
    char line[512];
    f = fopen(path, "r");
    CHECK(f != NULL);
    while (fgets(line, sizeof(line), f))
        CHECK(strlen(line) <= 80);
    fclose(f);
    unlink(path);
}

static void test_config_fixed_options_detected_on_reload(void)
{
    struct sgbd_config a, b;
    const char *name = NULL;
    sgbd_config_defaults(&a);
    b = a;
    CHECK_INT(sgbd_config_set(&b, "log.level", "debug"), 0);
    CHECK_INT(sgbd_config_fixed_differs(&a, &b, &name), 0);
    CHECK_INT(sgbd_config_set(&b, "server.listen", "127.0.0.1:9"), 0);
    CHECK_INT(sgbd_config_fixed_differs(&a, &b, &name), 1);
    CHECK_STR(name, "server.listen");
}

/* configs/sgbd.conf is the shipped reference: it must list every option
 * with the code's default (regenerate with `make config`). */
static void test_config_shipped_file_matches_code(void)
{
    const char *src = getenv("SGBD_SOURCE");
    char path[2048], *want = NULL, *got = NULL;
    size_t want_len = 0, got_len = 0;
    if (!src)
        SKIP("SGBD_SOURCE not set");
    snprintf(path, sizeof(path), "%s/configs/sgbd.conf", src);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    want = malloc(1 << 16);
    want_len = fread(want, 1, 1 << 16, f);
    fclose(f);
    FILE *m = open_memstream(&got, &got_len);
    sgbd_config_write_reference(m);
    fclose(m);
    int same = want_len == got_len && memcmp(want, got, got_len) == 0;
    free(want);
    free(got);
    CHECK(same);
}

int main(void)
{
    RUN(test_err_detail_names_the_problem);
    RUN(test_err_detail_escapes_control_bytes);
    RUN(test_log_line_has_prefix_and_one_write);
    RUN(test_log_quote_escapes_client_bytes);
    RUN(test_rng_streams_are_reproducible_and_distinct);
    RUN(test_rng_below_is_uniform_enough);
    RUN(test_rng_normal_has_unit_variance);
    RUN(test_config_defaults_match_table);
    RUN(test_config_file_overrides_defaults);
    RUN(test_config_unknown_key_names_file_line_key);
    RUN(test_config_rejects_out_of_range_and_garbage);
    RUN(test_config_reference_file_reloads_to_defaults);
    RUN(test_config_fixed_options_detected_on_reload);
    RUN(test_config_shipped_file_matches_code);
    return harness_finish();
}
