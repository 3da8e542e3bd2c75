/* test_faults_store.c - storage faults seen through the API and the CLI. */
/* ctest: labels=integration timeout=120 */
/*
 * Two faults of issue #8 that need the library rather than the binary:
 *
 *   a full LMDB map whose growth is capped (sgbd serve has no option for
 *   the cap, so the API is built here over a store opened with map_max):
 *   writes get 507 storage_full and change nothing, reads go on, and
 *   every acknowledged write is in the store when it is opened again;
 *
 *   io_uring unavailable for `sgbd import`, blocked by a seccomp filter
 *   (as a container profile would) or switched off by SGBD_FORCE_PREAD=1:
 *   the import falls back to pread and stores exactly what an import with
 *   the default backend stores.
 *
 * A full disk under the daemon (tmpfs) is tests/test_faults_disk.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/api.h"
#include "sgbd/cli.h"
#include "sgbd/err.h"
#include "sgbd/serve.h"
#include "sgbd/snapshot.h"
#include "sgbd/store.h"

#define MAP_CAP (1u << 20)          /* 1 MiB: full after a few hundred items */
#define MAX_PUTS 5000
#define FULL_RUN 20                 /* refusals in a row that mean full */
#define IMG 64                      /* widths of sgbd_serve_synthetic */
#define TXT 32

static char root[64];

static int rm_entry(const char *p, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct sgbd_store *open_store(const char *path, size_t map,
                                     size_t max, int read_only)
{
    struct sgbd_store_opts o;
    struct sgbd_store *s = NULL;

    sgbd_store_opts_defaults(&o);
    o.map_size = map;
    o.map_max = max;
    o.read_only = read_only;
    if (sgbd_store_open(&s, path, &o) != 0) {
        fprintf(stderr, "  open %s: %s\n", path, sgbd_err_detail(-1));
        return NULL;
    }
    return s;
}

/* ---- an API over a capped store, as sgbd serve --synthetic builds it ---- */

struct fx {
    struct sgbd_config cfg;
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_api *api;
};

/* The synthetic snapshot's channels and items in the store, as serve.c's
 * ensure_catalogue does. */
static int seed_catalogue(struct sgbd_store *st, const struct sgbd_snapshot *s)
{
    int rc = 0;

    for (int k = 0; rc == 0 && k < s->n_channels; k++)
        rc = sgbd_store_channel_define(st, s->channels[k].name,
                                       (uint32_t)s->channels[k].width);
    for (uint32_t i = 0; rc == 0 && i < s->n_items; i++) {
        struct sgbd_store_item it = {sgbd_snapshot_item_id(s, i), 0, NULL,
                                     NULL, 0};
        rc = sgbd_store_items_upsert(st, &it, 1, NULL);
    }
    return rc;
}

static int fx_open(struct fx *f, const char *path, size_t map, size_t max)
{
    struct sgbd_snapshot *s = NULL;
    struct sgbd_api_opts o;
    int rc;

    memset(f, 0, sizeof(*f));
    sgbd_config_defaults(&f->cfg);
    if (!(f->store = open_store(path, map, max, 0)))
        return -1;
    rc = sgbd_snapshot_slot_new(&f->slot);
    if (rc == 0)
        rc = sgbd_serve_synthetic(&s, "30,40,16,7");
    if (rc == 0)
        rc = seed_catalogue(f->store, s);
    if (rc == 0) {
        rc = sgbd_snapshot_publish(f->slot, s, 0);
        s = NULL;
    }
    sgbd_snapshot_free(s);
    o = (struct sgbd_api_opts){&f->cfg, f->store, f->slot, NULL};
    return rc ? rc : sgbd_api_new(&f->api, &o);
}

static void fx_close(struct fx *f)
{
    sgbd_api_free(f->api);
    sgbd_snapshot_slot_free(f->slot);
    sgbd_store_close(f->store);
    memset(f, 0, sizeof(*f));
}

struct reply {
    int status;
    json_t *json;
};

/* One request as the http module makes it; the caller decrefs json. */
static struct reply call(struct fx *f, const char *method, const char *path,
                         const char *body)
{
    struct sgbd_api_request req = {0};
    struct sgbd_api_response resp;
    struct reply r = {0};

    req.method = method;
    req.path = path;
    req.content_type = body ? "application/json" : NULL;
    req.content_length = body ? (int64_t)strlen(body) : 0;
    if (sgbd_api_begin(f->api, &req, &resp) == 0) {
        req.body = body;
        req.body_len = body ? strlen(body) : 0;
        sgbd_api_handle(f->api, &req, &resp);
    }
    sgbd_api_finish(f->api, &req, &resp, 0.001);
    r.status = resp.status;
    if (resp.body)
        r.json = json_loadb(resp.body, resp.len, 0, NULL);
    sgbd_api_response_clear(&resp);
    return r;
}

static const char *err_code(const struct reply *r)
{
    return json_string_value(
        json_object_get(json_object_get(r->json, "error"), "code"));
}

/* Feature value d of channel c of item k: exact in float32 and in JSON. */
static float feat(int k, int c, int d)
{
    return (float)((k * 7 + c * 131 + d * 3) % 2001 - 1000) / 64.0f;
}

/* The body of PUT /v1/items/f<k>: both channels and 1 KiB of attributes. */
static char *item_body(int k)
{
    json_t *o = json_object(), *fs = json_object(), *a = json_object();
    json_t *img = json_array(), *txt = json_array();
    char pad[1025];
    char *text;

    for (int d = 0; d < IMG; d++)
        json_array_append_new(img, json_real(feat(k, 0, d)));
    for (int d = 0; d < TXT; d++)
        json_array_append_new(txt, json_real(feat(k, 1, d)));
    json_object_set_new(fs, "image", img);
    json_object_set_new(fs, "text", txt);
    memset(pad, 'a' + k % 26, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    json_object_set_new(a, "pad", json_string(pad));
    json_object_set_new(a, "k", json_integer(k));
    json_object_set_new(o, "features", fs);
    json_object_set_new(o, "attributes", a);
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/*
 * PUT f0, f1, ... until FULL_RUN refusals in a row (a refused write can be
 * followed by an accepted one: LMDB reuses pages that older transactions
 * freed). acked[k] = 1 for each 201; *n gets how many were sent; returns
 * the number of refusals that were not 507 storage_full.
 */
static int fill_until_full(struct fx *f, unsigned char *acked, int *n)
{
    int run = 0, other = 0;
    char path[64];

    for (*n = 0; *n < MAX_PUTS && run < FULL_RUN; ++*n) {
        char *body = item_body(*n);
        struct reply r;

        snprintf(path, sizeof(path), "/v1/items/f%d", *n);
        r = call(f, "PUT", path, body);
        free(body);
        acked[*n] = r.status == 201;
        run = acked[*n] ? 0 : run + 1;
        if (!acked[*n] && (r.status != 507 || !err_code(&r) ||
                           strcmp(err_code(&r), "storage_full") != 0)) {
            fprintf(stderr, "  PUT f%d: %d %s\n", *n, r.status,
                    err_code(&r) ? err_code(&r) : "");
            other++;
        }
        json_decref(r.json);
    }
    return other;
}

/* Whether item f<k> is in s with exactly the features of item_body(k). */
static int item_is_stored(struct sgbd_store *s, int k)
{
    struct sgbd_store_item_rec rec;
    char id[32];
    int ok;

    snprintf(id, sizeof(id), "f%d", k);
    if (sgbd_store_item_get(s, id, &rec) != 0)
        return 0;
    /* 1 KiB of attributes, as item_body wrote them */
    ok = rec.attrs_len > 1024;
    ok = ok && rec.n_features == 2 && !rec.hidden;
    for (int c = 0; ok && c < 2; c++) {
        int w = strcmp(rec.f[c].channel, "image") == 0 ? IMG : TXT;
        int ch = w == IMG ? 0 : 1;
        ok = rec.f[c].dim == (uint32_t)w;
        for (int d = 0; ok && d < w; d++)
            ok = rec.f[c].v[d] == feat(k, ch, d);
    }
    sgbd_store_item_rec_free(&rec);
    return ok;
}

static char *events_body(int n)
{
    json_t *o = json_object(), *arr = json_array();
    char *text, uid[16], iid[16];

    for (int j = 0; j < n; j++) {
        json_t *e = json_object();
        snprintf(uid, sizeof(uid), "u%d", j % 30);
        snprintf(iid, sizeof(iid), "i%d", j % 40);
        json_object_set_new(e, "user_id", json_string(uid));
        json_object_set_new(e, "item_id", json_string(iid));
        json_object_set_new(e, "timestamp", json_integer(1700000000 + j));
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "interactions", arr);
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* Reads that must keep working on a full store. */
static int reads_work(struct fx *f)
{
    static const char *gets[] = {"/v1/users/u3/recommendations",
                                 "/v1/items/i5/similar", "/v1/items/f0",
                                 "/v1/model", "/healthz", "/readyz",
                                 "/metrics"};
    struct reply r;
    int ok = 1;

    for (size_t k = 0; k < sizeof(gets) / sizeof(gets[0]); k++) {
        r = call(f, "GET", gets[k], NULL);
        if (r.status != 200)
            fprintf(stderr, "  GET %s: %d\n", gets[k], r.status);
        ok &= r.status == 200;
        json_decref(r.json);
    }
    r = call(f, "POST", "/v1/recommendations",
             "{\"user_ids\":[\"u1\",\"u2\",\"nobody\"],\"k\":5}");
    ok &= r.status == 200;
    json_decref(r.json);
    return ok;
}

static void test_faults_store_full_map_answers_507_and_keeps_serving(void)
{
    static unsigned char acked[MAX_PUTS];
    struct sgbd_store_counts before, after;
    struct fx f;
    struct reply r;
    char path[128], *body;
    int sent = 0, n_acked = 0;

    snprintf(path, sizeof(path), "%s/capped", root);
    CHECK_INT(fx_open(&f, path, MAP_CAP, MAP_CAP), 0);

    CHECK_INT(fill_until_full(&f, acked, &sent), 0);
    CHECK(sent < MAX_PUTS);
    for (int k = 0; k < sent; k++)
        n_acked += acked[k];
    CHECK(n_acked > 0);
    CHECK_INT(sgbd_store_map_size(f.store), MAP_CAP);

    /* Full: a large batch of events is refused and changes nothing. */
    CHECK_INT(sgbd_store_counts(f.store, &before), 0);
    body = events_body(2000);
    r = call(&f, "POST", "/v1/interactions", body);
    free(body);
    CHECK_INT(r.status, 507);
    CHECK_STR(err_code(&r), "storage_full");
    json_decref(r.json);
    CHECK_INT(sgbd_store_counts(f.store, &after), 0);
    CHECK(memcmp(&before, &after, sizeof(before)) == 0);

    CHECK(reads_work(&f));
    fx_close(&f);

    /* After a reopen every acknowledged item is there and no refused one
     * is; with room to grow, writes are accepted again. */
    f.store = open_store(path, MAP_CAP, MAP_CAP, 1);
    CHECK(f.store);
    for (int k = 0; k < sent; k++)
        CHECK_INT(item_is_stored(f.store, k), acked[k]);
    sgbd_store_close(f.store);
    CHECK_INT(fx_open(&f, path, MAP_CAP, 64u << 20), 0);
    body = item_body(sent);
    r = call(&f, "PUT", "/v1/items/again", body);
    free(body);
    CHECK_INT(r.status, 201);
    json_decref(r.json);
    fx_close(&f);
}

/* ---- io_uring unavailable for sgbd import ---- */

#define SYN_USERS "150"
#define SYN_ITEMS "3000"            /* image channel 1.5 MiB: over one chunk */

/* In a child: optionally deny io_uring_setup with ENOSYS, optionally force
 * pread, import into db; stdout and stderr (the log) go to log. */
static int child_import(const char *data, const char *db, const char *log,
                        int block, int force)
{
    struct sock_filter flt[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof(flt) / sizeof(flt[0]), flt};
    char *argv[] = {"import", "--data", (char *)data, "--db", (char *)db,
                    NULL};
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
        return 3;
    if (force)
        setenv("SGBD_FORCE_PREAD", "1", 1);
    else
        unsetenv("SGBD_FORCE_PREAD");
    if (block && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
                  prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0))
        return 77;
    if (sgbd_cli_import(5, argv) != 0) {
        fprintf(stderr, "import: %s\n", sgbd_err_detail(-1));
        return 1;
    }
    return 0;
}

/*
 * Run child_import in a fork. Returns its exit status; log (size n) gets
 * its log, with "<6>" prefixes, for the caller to search.
 */
static int import_in_child(const char *data, const char *db, int block,
                           int force, char *log, size_t n)
{
    char path[160];
    int status = 0;
    size_t got;
    FILE *fp;
    pid_t pid;

    snprintf(path, sizeof(path), "%s.log", db);
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        _exit(child_import(data, db, path, block, force));
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    fp = fopen(path, "r");
    got = fp ? fread(log, 1, n - 1, fp) : 0;
    log[got] = '\0';
    if (fp)
        fclose(fp);
    if (WEXITSTATUS(status) != 0)
        fprintf(stderr, "  child import: %s\n", log);
    return WEXITSTATUS(status);
}

/* The backend the log says the image channel (1.5 MiB) was read with. */
static const char *image_backend(const char *log)
{
    const char *line = strstr(log, "channel=image");
    const char *b = line ? strstr(line, "backend=") : NULL;

    if (!b)
        return "?";
    return strncmp(b + 8, "pread", 5) == 0 ? "pread" : "io_uring";
}

struct events {
    struct sgbd_store_interaction *ev;
    size_t n, cap;
};

static int collect(void *ctx, const struct sgbd_store_interaction *e)
{
    struct events *l = ctx;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 1024;
        void *p = realloc(l->ev, cap * sizeof(*l->ev));
        if (!p)
            return -ENOMEM;
        l->ev = p;
        l->cap = cap;
    }
    l->ev[l->n++] = *e;
    return 0;
}

/* Counts, both channels and the interaction log of a and b are equal. */
static int same_store(const char *a, const char *b)
{
    static const struct { const char *name; uint32_t w; } ch[] = {
        {"image", 128}, {"text", 64}};
    struct sgbd_store *s[2] = {open_store(a, 1u << 30, 1u << 30, 1),
                               open_store(b, 1u << 30, 1u << 30, 1)};
    struct sgbd_store_read *r[2] = {NULL, NULL};
    struct sgbd_store_counts c[2];
    struct events ev[2] = {{0}, {0}};
    float *m[2] = {NULL, NULL};
    int same = s[0] && s[1];

    for (int k = 0; same && k < 2; k++)
        same = sgbd_store_read_begin(s[k], &r[k]) == 0 &&
               sgbd_store_read_counts(r[k], &c[k]) == 0 &&
               sgbd_store_read_interactions(r[k], 0, collect, &ev[k]) == 0;
    same = same && c[0].items == c[1].items && c[0].users == c[1].users &&
           c[0].interactions == c[1].interactions && ev[0].n == ev[1].n &&
           memcmp(ev[0].ev, ev[1].ev, ev[0].n * sizeof(*ev[0].ev)) == 0;
    for (size_t j = 0; same && j < 2; j++) {
        size_t bytes = (size_t)c[0].items * ch[j].w * sizeof(float);
        m[0] = malloc(bytes);
        m[1] = malloc(bytes);
        for (int k = 0; same && k < 2; k++)
            same = m[k] && sgbd_store_read_channel(r[k], ch[j].name, m[k],
                                                   c[0].items, ch[j].w,
                                                   NULL) == 0;
        same = same && memcmp(m[0], m[1], bytes) == 0;
        free(m[0]);
        free(m[1]);
    }
    for (int k = 0; k < 2; k++) {
        sgbd_store_read_end(r[k]);
        sgbd_store_close(s[k]);
        free(ev[k].ev);
    }
    return same;
}

static void test_faults_store_import_without_io_uring_stores_the_same(void)
{
    static char log[3][8192];
    char data[128], db[3][160];
    char *synth[] = {"synth", "--out", data, "--users", SYN_USERS, "--items",
                     SYN_ITEMS, "--seed", "3", NULL};
    int rc;

    snprintf(data, sizeof(data), "%s/catalogue", root);
    for (int k = 0; k < 3; k++)
        snprintf(db[k], sizeof(db[k]), "%s/import%d", root, k);
    fflush(stdout);
    CHECK_INT(sgbd_cli_synth(9, synth), 0);

    /* The default backend (io_uring where the kernel allows it), then
     * SGBD_FORCE_PREAD=1. */
    CHECK_INT(import_in_child(data, db[0], 0, 0, log[0], sizeof(log[0])), 0);
    fprintf(stderr, "  default backend here: %s\n", image_backend(log[0]));
    CHECK_INT(import_in_child(data, db[1], 0, 1, log[1], sizeof(log[1])), 0);
    CHECK_STR(image_backend(log[1]), "pread");
    CHECK(!strstr(log[1], "ev=bulkio_fallback"));
    CHECK(same_store(db[0], db[1]));

    /* io_uring_setup refused by seccomp: one logged fallback, same store. */
    rc = import_in_child(data, db[2], 1, 0, log[2], sizeof(log[2]));
    if (rc == 77)
        SKIP("seccomp filters unavailable (the SGBD_FORCE_PREAD half "
             "passed)");
    CHECK_INT(rc, 0);
    CHECK_STR(image_backend(log[2]), "pread");
    CHECK(strstr(log[2], "ev=bulkio_fallback backend=pread"));
    CHECK(strstr(log[2], "errno=38"));
    CHECK(same_store(db[0], db[2]));
}

int main(void)
{
    snprintf(root, sizeof(root), "/tmp/sgbd_test_faults_store.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_faults_store_full_map_answers_507_and_keeps_serving);
    RUN(test_faults_store_import_without_io_uring_stores_the_same);
    rm_rf(root);
    return harness_finish();
}
