/* test_store_crash.c - SIGKILL a writer at random moments; every write it
 * acknowledged must survive, and the store must open and verify. */
/* ctest: labels=integration timeout=120 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/checkpoint.h"
#include "sgbd/err.h"
#include "sgbd/log.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"
#include "sgbd/store.h"

#define ROUNDS 30
#define N_ITEMS 50
#define BATCH 8
#define MAX_ACKS 100000

static char root[] = "/tmp/sgbd-test-crash-XXXXXX";
static char db[300];

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    return remove(path);
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Event of sequence number seq: a pure function of seq, so the parent can
 * check what the child wrote. */
static void event_of(uint64_t seq, char *user, char *item,
                     struct sgbd_store_event *e)
{
    snprintf(user, 16, "u%llu", (unsigned long long)(seq % 97));
    snprintf(item, 16, "i%llu", (unsigned long long)(seq % N_ITEMS));
    e->user_id = user;
    e->item_id = item;
    e->timestamp = (int64_t)seq;
    e->weight = 1.0f;
    e->kind = 0;
    e->label = (uint8_t)(seq % 3);
}

/* Three chunks (the last partial); values a function of the version. */
static void ckpt_layout(struct sgbd_params *l)
{
    memset(l, 0, sizeof(*l));
    sgbd_params_add(l, "emb", 4000, 160, SGBD_INIT_ZERO, 0, 0);
}

static void ckpt_fill(float *a, size_t n, uint64_t step)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)((step * 2654435761u + i) % 100003);
}

static struct sgbd_store *open_db(void)
{
    struct sgbd_store *s = NULL;
    struct sgbd_store_opts o;

    sgbd_store_opts_defaults(&o);
    o.map_size = 64 << 20;
    return sgbd_store_open(&s, db, &o) == 0 ? s : NULL;
}

static void ack(int fd, char kind, uint64_t a, uint64_t b)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "%c %llu %llu\n", kind,
                     (unsigned long long)a, (unsigned long long)b);

    if (write(fd, line, (size_t)n) != n)
        _exit(5);
}

static int child_append(struct sgbd_store *s, uint64_t next, int fd)
{
    struct sgbd_store_event ev[BATCH];
    char users[BATCH][16], items[BATCH][16];
    uint64_t seqs[BATCH];
    size_t fresh;

    for (int k = 0; k < BATCH; k++)
        event_of(next + (uint64_t)k, users[k], items[k], &ev[k]);
    if (sgbd_store_interactions_append(s, ev, BATCH, seqs, &fresh) < 0)
        return -1;
    if (fresh != BATCH || seqs[0] != next || seqs[BATCH - 1] != next + 7)
        return -2;
    ack(fd, 'I', next, BATCH);
    return 0;
}

/* The arena of a checkpoint is a function of its step, which the parent
 * reads back from the header. */
static int child_save(struct sgbd_store *s, const struct sgbd_params *l,
                      float *a, uint64_t step, int fd)
{
    struct sgbd_checkpoint_info in = {0};
    uint64_t v;

    ckpt_fill(a, l->n, step);
    snprintf(in.model, sizeof(in.model), "crash");
    in.step = step;
    if (sgbd_checkpoint_save(s, &in, l, a, &v) < 0)
        return -1;
    ack(fd, 'C', v, step);
    return 0;
}

/* The writer: append batches and save checkpoints until killed. */
static void child_run(int fd)
{
    struct sgbd_store_counts c;
    struct sgbd_params l;
    struct sgbd_store *s = open_db();
    uint64_t cur = 0;
    float *a;
    int rc = 0;

    sgbd_log_level = SGBD_LOG_ERR;
    ckpt_layout(&l);
    a = sgbd_params_alloc_arena(&l);
    if (!s || !a || sgbd_store_counts(s, &c) < 0 ||
        sgbd_store_ckpt_pointers(s, &cur, NULL) < 0)
        _exit(3);
    ack(fd, 'R', 0, 0);
    for (uint64_t i = 0; rc == 0; i++) {
        if (i % 4 == 3)
            rc = child_save(s, &l, a, (cur + 1) * 100000 + i, fd);
        else
            rc = child_append(s, c.last_seq + 1, fd);
        if (rc == 0 && i % 4 != 3)
            c.last_seq += BATCH;
    }
    _exit(rc == -2 ? 6 : 4);
}

struct acks {
    uint64_t last_seq;       /* highest acknowledged event */
    uint64_t ckpt[MAX_ACKS]; /* acknowledged checkpoint versions */
    size_t n_ckpt;
    int ready;
    char buf[256];
    size_t len;
};

static void parse_acks(struct acks *k, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned long long a, b;
        char kind;

        if (data[i] != '\n') {
            if (k->len < sizeof(k->buf) - 1)
                k->buf[k->len++] = data[i];
            continue;
        }
        k->buf[k->len] = '\0';
        k->len = 0;
        if (sscanf(k->buf, "%c %llu %llu", &kind, &a, &b) != 3)
            continue;
        if (kind == 'R')
            k->ready = 1;
        else if (kind == 'I' && a + b - 1 > k->last_seq)
            k->last_seq = a + b - 1;
        else if (kind == 'C' && k->n_ckpt < MAX_ACKS)
            k->ckpt[k->n_ckpt++] = a;
    }
}

/* Read acks until the deadline (ms after the child is ready), or EOF. */
static void collect(int fd, struct acks *k, double kill_after, pid_t pid)
{
    double t_ready = 0;
    char data[4096];

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;

        if (k->ready && !t_ready)
            t_ready = now_ms();
        if (t_ready && now_ms() - t_ready >= kill_after)
            break;
        if (poll(&p, 1, 1) <= 0)
            continue;
        n = read(fd, data, sizeof(data));
        if (n <= 0)
            break;
        parse_acks(k, data, (size_t)n);
    }
    kill(pid, SIGKILL);
}

/* Acks written before the kill are acknowledgements too. */
static void drain(int fd, struct acks *k)
{
    char data[4096];
    ssize_t n;

    while ((n = read(fd, data, sizeof(data))) > 0)
        parse_acks(k, data, (size_t)n);
}

struct walk {
    char users[128][16], items[N_ITEMS][16];
    uint64_t expect;          /* next sequence number */
    int bad;
};

static int keep_user(void *ctx, uint32_t index, const char *id, size_t n)
{
    struct walk *w = ctx;

    if (index < 128)
        snprintf(w->users[index], 16, "%s", id);
    return 0;
}

static int keep_item(void *ctx, uint32_t index, const char *id, size_t n)
{
    struct walk *w = ctx;

    if (index < N_ITEMS)
        snprintf(w->items[index], 16, "%s", id);
    return 0;
}

static int check_one(void *ctx, const struct sgbd_store_interaction *e)
{
    struct walk *w = ctx;
    char user[32], item[32];
    struct sgbd_store_event want;

    event_of(e->seq, user, item, &want);
    if (e->seq != w->expect++ || e->user >= 128 || e->item >= N_ITEMS ||
        strcmp(w->users[e->user], user) || strcmp(w->items[e->item], item) ||
        e->timestamp != (int64_t)e->seq || e->label != want.label)
        w->bad = 1;
    return 0;
}

/* Events 1..upto (at least) are in the log, each as written. */
static int verify_events(struct sgbd_store *s, uint64_t upto)
{
    static struct walk w;
    struct sgbd_store_read *r;
    int rc;

    memset(&w, 0, sizeof(w));
    w.expect = 1;
    if (sgbd_store_read_begin(s, &r) < 0)
        return -1;
    rc = sgbd_store_read_user_ids(r, keep_user, &w);
    if (rc == 0)
        rc = sgbd_store_read_item_ids(r, keep_item, &w);
    if (rc == 0)
        rc = sgbd_store_read_interactions(r, 0, check_one, &w);
    sgbd_store_read_end(r);
    if (rc < 0)
        return -1;
    if (w.bad)
        return -2;
    return w.expect - 1 >= upto ? 0 : -3;
}

static int verify_ckpts(struct sgbd_store *s, const struct acks *k)
{
    struct sgbd_checkpoint_info in;
    struct sgbd_params l;
    uint64_t cur = 0, loaded = 0;
    float *a = NULL, *want;
    int rc;

    for (size_t i = 0; i < k->n_ckpt; i++)
        if (sgbd_checkpoint_verify(s, k->ckpt[i], NULL) < 0)
            return -1;
    if (sgbd_store_ckpt_pointers(s, &cur, NULL) < 0)
        return -2;
    if (cur == 0)
        return k->n_ckpt ? -3 : 0;
    if (k->n_ckpt && cur < k->ckpt[k->n_ckpt - 1])
        return -4;
    rc = sgbd_checkpoint_load(s, 0, &in, &l, &a, &loaded);
    if (rc < 0 || loaded != cur)
        return -5;
    want = malloc(l.n * sizeof(float));
    ckpt_fill(want, l.n, in.step);
    rc = memcmp(a, want, l.n * sizeof(float)) ? -6 : 0;
    free(want);
    sgbd_params_free_arena(a);
    return rc;
}

static int seed_items(void)
{
    struct sgbd_store_item it[N_ITEMS];
    char ids[N_ITEMS][16];
    struct sgbd_store *s = open_db();
    int rc;

    if (!s)
        return -1;
    for (int i = 0; i < N_ITEMS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "i%d", i);
        it[i] = (struct sgbd_store_item){ids[i], 0, NULL, NULL, 0};
    }
    rc = sgbd_store_items_upsert(s, it, N_ITEMS, NULL);
    sgbd_store_close(s);
    return rc;
}

/* One round: start, kill, reopen and verify. Returns 0 or which check
 * failed. */
static int count_chunk(void *ctx, uint32_t chunk, uint32_t crc,
                       const void *data, size_t len)
{
    (*(int *)ctx)++;
    return 0;
}

/* Whether the kill left chunks of an unpublished save behind. */
static int half_written(struct sgbd_store *s)
{
    uint64_t cur = 0;
    int n = 0;

    sgbd_store_ckpt_pointers(s, &cur, NULL);
    sgbd_store_ckpt_read_chunks(s, cur + 1, count_chunk, &n);
    return n > 0;
}

static int round_once(struct sgbd_rng *rng, struct acks *k, int *n_saves,
                      int *n_half)
{
    struct sgbd_store *s;
    int fds[2], status, rc;
    size_t probs = 1, cprobs = 1, pruned;
    pid_t pid;

    if (pipe(fds) < 0)
        return -10;
    pid = fork();
    if (pid == 0) {
        close(fds[0]);
        child_run(fds[1]);
    }
    close(fds[1]);
    k->ready = 0;
    k->n_ckpt = 0;
    collect(fds[0], k, 5 + (double)(sgbd_rng_u64(rng) % 120), pid);
    waitpid(pid, &status, 0);
    drain(fds[0], k);
    close(fds[0]);
    if (!WIFSIGNALED(status)) {
        fprintf(stderr, "  child exited with %d\n", WEXITSTATUS(status));
        return -11;
    }
    *n_saves += (int)k->n_ckpt;

    s = open_db();
    if (!s)
        return -12;
    *n_half += half_written(s);
    rc = verify_events(s, k->last_seq);
    if (rc == 0 && (rc = verify_ckpts(s, k)) != 0)
        rc -= 20;
    if (rc == 0 && (sgbd_store_check(s, NULL, NULL, &probs) < 0 || probs))
        rc = -30;
    if (rc == 0 &&
        (sgbd_checkpoint_check(s, NULL, NULL, &cprobs) < 0 || cprobs))
        rc = -31;
    if (rc == 0 && sgbd_checkpoint_prune(s, 2, &pruned) < 0)
        rc = -32;
    sgbd_store_close(s);
    return rc;
}

static void test_store_crash_acknowledged_writes_survive_sigkill(void)
{
    static struct acks k;
    struct sgbd_rng rng;
    double t0 = now_ms();
    int saves = 0, half = 0;

    snprintf(db, sizeof(db), "%s/db", root);
    CHECK_INT(seed_items(), 0);
    sgbd_rng_init(&rng, 2024, 1);
    for (int r = 0; r < ROUNDS && now_ms() - t0 < 50000; r++) {
        int rc = round_once(&rng, &k, &saves, &half);

        if (rc)
            fprintf(stderr, "  round %d: check %d (%s)\n", r, rc,
                    sgbd_err_detail(rc));
        CHECK_INT(rc, 0);
    }
    fprintf(stderr, "  %d kills (%d inside a save, after its chunks), "
            "%llu events and %d checkpoints acknowledged in %.1f s\n",
            ROUNDS, half, (unsigned long long)k.last_seq, saves,
            (now_ms() - t0) / 1e3);
    CHECK(k.last_seq > 0);
    CHECK(saves > 0);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    sgbd_log_level = SGBD_LOG_WARNING;
    RUN(test_store_crash_acknowledged_writes_survive_sigkill);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return harness_finish();
}
