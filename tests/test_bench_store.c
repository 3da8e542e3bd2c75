/* test_bench_store.c - import and checkpoint timings (issue #4). */
/* ctest: labels=bench timeout=900 */
/*
 * Not a correctness test: reports, as "bench ..." lines on stdout,
 *   - reading sports' 300 MB of synthetic 4096-d image features (18,357
 *     items, written by synth --features-only) through io_uring and
 *     through pread, cold (page cache dropped with POSIX_FADV_DONTNEED)
 *     and warm;
 *   - `sgbd import` of sports with those features into a fresh store,
 *     twice per backend in ABBA order (read, then LMDB writes with a sync
 *     per transaction);
 *   - checkpoint save and load of a DRAGON-sized arena on Baby (3.7M
 *     floats, 14.9 MB): median of 5, with MB/s.
 * Skips without ../shared/data/sports. Run it alone:
 *     ctest -L bench -R bench_store --output-on-failure -V
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/bulkio.h"
#include "sgbd/checkpoint.h"
#include "sgbd/cli.h"
#include "sgbd/dataset.h"
#include "sgbd/err.h"
#include "sgbd/inter.h"
#include "sgbd/log.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"
#include "sgbd/store.h"
#include "sgbd/synth.h"

#define RUNS 5

static char root[] = "/tmp/sgbd-bench-store-XXXXXX";

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

/* Drop the file's clean pages from the page cache. */
static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);

    if (fd < 0)
        return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* Features for sports: synth --features-only, image 4096-d only. */
static int make_dataset(const char *sports, const char *dir,
                        uint32_t *n_items)
{
    struct sgbd_synth_params p;
    struct sgbd_inter rows = {0};
    char inter[8192], link[8192];
    int rc;

    snprintf(inter, sizeof(inter), "%s/sports.inter", sports);
    rc = sgbd_inter_read(&rows, inter, NULL);
    if (rc < 0)
        return rc;
    *n_items = 0;
    for (size_t r = 0; r < rows.n; r++)
        if (rows.items[r] >= *n_items)
            *n_items = rows.items[r] + 1;
    sgbd_inter_free(&rows);

    sgbd_synth_defaults(&p);
    p.features_only = 1;
    p.n_items = *n_items;
    p.dim_image = 4096;
    p.dim_text = 0;
    rc = sgbd_synth_write(dir, &p);
    snprintf(link, sizeof(link), "%s/sports.inter", dir);
    if (rc == 0 && symlink(inter, link) < 0)
        rc = -1;
    return rc;
}

static void bench_read(const char *dir, const char *npy, uint32_t n_items)
{
    for (int cold = 1; cold >= 0; cold--) {
        for (int pread_only = 0; pread_only <= 1; pread_only++) {
            struct sgbd_bulkio_stats st = {0};
            struct sgbd_bulkio_opts io = {pread_only, 0, 0, &st};
            struct sgbd_features f;
            double t0, dt;

            if (cold)
                drop_cache(npy);
            t0 = now_s();
            if (sgbd_features_load_dir(&f, dir, n_items, &io) < 0) {
                fprintf(stderr, "  read: %s\n", sgbd_err_detail(-1));
                return;
            }
            dt = now_s() - t0;
            printf("bench store_read_features backend=%s cache=%s mb=%.1f "
                   "s=%.3f mb_per_s=%.0f\n",
                   sgbd_bulkio_backend_name(st.backend),
                   cold ? "cold" : "warm", st.bytes / 1e6, dt,
                   st.bytes / 1e6 / dt);
            sgbd_features_free(&f);
        }
    }
}

/* ABBA order, so that whatever the first import pays (a cold disk, the
 * page cache filling) does not land on one backend. */
static void bench_import(const char *dir, const char *npy)
{
    static const int order[4] = {0, 1, 1, 0};

    for (int run = 0; run < 4; run++) {
        int pread_only = order[run];
        char db[4200];
        char *argv[9] = {"import", "--data", (char *)dir, "--db", db,
                         "--quiet", "--json",
                         pread_only ? "--force-pread" : NULL, NULL};
        double t0, dt;
        int rc;

        snprintf(db, sizeof(db), "%s/db-%d", root, run);
        drop_cache(npy);
        printf("bench store_import_json ");
        fflush(stdout);
        t0 = now_s();
        rc = sgbd_cli_import(pread_only ? 8 : 7, argv);
        dt = now_s() - t0;
        fflush(stdout);
        if (rc < 0)
            fprintf(stderr, "  import: %s\n", sgbd_err_detail(rc));
        printf("bench store_import backend=%s cache=cold s=%.2f\n",
               pread_only ? "pread" : "io_uring", dt);
        rm_rf(db);
    }
}

/* DRAGON on Baby, approximately: id embeddings, the two modality
 * projections and user preference vectors; 3.7M floats. */
static void dragon_layout(struct sgbd_params *l)
{
    memset(l, 0, sizeof(*l));
    sgbd_params_add(l, "user_emb", 19445, 64, SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    sgbd_params_add(l, "item_emb", 7050, 64, SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    sgbd_params_add(l, "image_trs", 4096, 384, SGBD_INIT_XAVIER_UNIFORM, 0,
                    0);
    sgbd_params_add(l, "text_trs", 384, 384, SGBD_INIT_XAVIER_UNIFORM, 0, 0);
    sgbd_params_add(l, "user_pref", 19445, 16, SGBD_INIT_XAVIER_UNIFORM, 0,
                    0);
}

static void bench_checkpoint(void)
{
    struct sgbd_checkpoint_info in = {0};
    struct sgbd_params l;
    struct sgbd_store *s = NULL;
    struct sgbd_rng rng;
    double save[RUNS], load[RUNS], mb;
    char db[4200];
    float *a, *back;

    dragon_layout(&l);
    mb = l.n * 4 / 1e6;
    a = sgbd_params_alloc_arena(&l);
    sgbd_rng_init(&rng, 1, 1);
    sgbd_params_init(&l, a, &rng);
    snprintf(in.model, sizeof(in.model), "dragon");
    snprintf(db, sizeof(db), "%s/ckpt", root);
    if (sgbd_store_open(&s, db, NULL) < 0)
        return;
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_s();

        if (sgbd_checkpoint_save(s, &in, &l, a, NULL) < 0)
            break;
        save[r] = now_s() - t0;
        t0 = now_s();
        if (sgbd_checkpoint_load(s, 0, NULL, NULL, &back, NULL) < 0)
            break;
        load[r] = now_s() - t0;
        sgbd_params_free_arena(back);
    }
    sgbd_store_close(s);
    sgbd_params_free_arena(a);
    printf("bench store_checkpoint floats=%zu mb=%.1f save_ms=%.1f "
           "save_mb_per_s=%.0f load_ms=%.1f load_mb_per_s=%.0f\n", l.n, mb,
           median(save, RUNS) * 1e3, mb / median(save, RUNS),
           median(load, RUNS) * 1e3, mb / median(load, RUNS));
}

static void test_bench_store_import_and_checkpoints(void)
{
    char data[4096], dir[4200], npy[4300];
    const char *sports = harness_data_dir("sports", data, sizeof(data));
    uint32_t n_items = 0;

    bench_checkpoint();
    if (!sports)
        SKIP("no sports dataset: import part skipped");
    snprintf(dir, sizeof(dir), "%s/sports4096", root);
    CHECK_INT(make_dataset(sports, dir, &n_items), 0);
    snprintf(npy, sizeof(npy), "%s/image_feat.npy", dir);
    bench_read(dir, npy, n_items);
    bench_import(dir, npy);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    sgbd_log_level = SGBD_LOG_WARNING;
    RUN(test_bench_store_import_and_checkpoints);
    rm_rf(root);
    return harness_finish();
}
