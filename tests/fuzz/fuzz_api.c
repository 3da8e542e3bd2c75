/*
 * fuzz_api.c - the HTTP/JSON API (api.h) on hostile requests, without a
 * network: the input is parsed into a struct sgbd_api_request and goes
 * through sgbd_api_begin, sgbd_api_handle and sgbd_api_finish as the
 * http module would send it.
 *
 * Input, HTTP-like text:
 *     METHOD SP PATH[?QUERY] [SP anything] LF
 *     Name: value LF            (Authorization, Content-Type,
 *     ...                        Content-Length; others ignored)
 *     LF
 *     BODY                      (the rest, any bytes)
 * Query arguments split on '&' and at the first '=' (value "" without
 * one), still percent-encoded, at most SGBD_API_MAX_ARGS. Without a
 * Content-Length the length is -1 (chunked); with one the body is cut to
 * it, as the server would.
 *
 * The API serves a small published snapshot (8 users, 16 items, an
 * initialised VBPR model of D 4 over an "image" channel of width 4, so
 * new items get cold-start vectors) over a real store in a temporary folder
 * (on /dev/shm when there is one, so commits are cheap), with write and
 * admin token files and fake retrain hooks. Writes accumulate; every
 * RESET_EVERY inputs the whole setup is rebuilt so the store and overlay
 * stay small (a reproducer therefore runs against a fresh setup).
 *
 * Invariants: a status of 200..599 and never 500; 405 names Allow, 401
 * asks for a challenge; a JSON response is one object with model_version
 * equal to the X-Model-Version value, and an error response has
 * error.code and error.message strings; a write or admin route without
 * its token never succeeds; a response never contains a token that no
 * request since the setup was built carried outside Authorization; every
 * ranking has at most max_k distinct items with finite, non-increasing
 * scores; reads and refused writes leave the store's counts unchanged;
 * in-flight returns to 0.
 */
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "sgbd/api.h"
#include "sgbd/dataset.h"
#include "sgbd/inter.h"
#include "sgbd/model.h"
#include "sgbd/params.h"
#include "sgbd/rng.h"
#include "sgbd/snapshot.h"
#include "sgbd/store.h"

#define WRITE_TOKEN "fuzz-write-token-5f2c9a"
#define ADMIN_TOKEN "fuzz-admin-token-81d3e7"
#define N_USERS 8
#define N_ITEMS 16
#define DIM 4
#define RESET_EVERY 4000

struct setup {
    char dir[128];
    struct sgbd_config cfg;
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_api *api;
    struct sgbd_dataset ds;         /* what the model was built on */
    struct sgbd_features feat;
    struct sgbd_hparams hp;
    long runs;
    /* A token carried outside Authorization (say as an item id) since
     * the setup was built may rightly come back in a later response. */
    int write_token_stored, admin_token_stored;
};

static struct setup S;

/* ---- fake retrain hooks ---- */

static void hook_notify(void *ctx, uint64_t items, uint64_t inter,
                        uint64_t seq)
{
}

static int hook_trigger(void *ctx, const char *reason)
{
    FUZZ_CHECK(reason != NULL);
    return 0;
}

static int hook_rollback(void *ctx, uint64_t version)
{
    return version == 1 ? 0 : SGBD_E_NOTFOUND;
}

static void hook_status(void *ctx, struct sgbd_retrain_status *out)
{
    memset(out, 0, sizeof(*out));
    out->state = "idle";
    out->last_outcome = "none";
}

static const struct sgbd_retrain_hooks hooks = {
    .notify = hook_notify, .trigger = hook_trigger,
    .rollback = hook_rollback, .status = hook_status,
};

/* ---- setup ---- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fputs(text, f) >= 0);
    FUZZ_CHECK(fclose(f) == 0);
}

/* Rows of the training data: user u saw items 3u and 2u + 1 (mod I), so
 * item I - 1 appears and I is N_ITEMS. */
static uint32_t seen_item(int u, int j)
{
    return (uint32_t)(j == 0 ? (u * 3) % N_ITEMS : (u * 2 + 1) % N_ITEMS);
}

/* The store holds the snapshot's ids, the channel and a few events. */
static void fill_store(struct sgbd_store *st)
{
    static const char *const users[N_USERS] = {"u0", "u1", "u2", "u3",
                                               "u4", "u5", "u6", "u7"};
    struct sgbd_store_item items[N_ITEMS];
    struct sgbd_store_feature feat[N_ITEMS];
    struct sgbd_store_event ev[2 * N_USERS];
    static char ids[N_ITEMS][8];
    float v[N_ITEMS][DIM];

    FUZZ_CHECK(sgbd_store_channel_define(st, "image", DIM) == 0);
    for (int i = 0; i < N_ITEMS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "i%d", i);
        for (int d = 0; d < DIM; d++)
            v[i][d] = (float)((i * 7 + d * 3) % 11) / 11.0f - 0.5f;
        feat[i] = (struct sgbd_store_feature){"image", v[i], DIM};
        items[i] = (struct sgbd_store_item){ids[i], 1, &feat[i], NULL, 0};
    }
    FUZZ_CHECK(sgbd_store_items_upsert(st, items, N_ITEMS, NULL) == 0);
    FUZZ_CHECK(sgbd_store_users_ensure(st, users, N_USERS, NULL) == 0);
    for (int e = 0; e < 2 * N_USERS; e++)
        ev[e] = (struct sgbd_store_event){users[e / 2],
                                          ids[seen_item(e / 2, e % 2)],
                                          1000 + e, 1.0f, 0, 0};
    FUZZ_CHECK(sgbd_store_interactions_append(st, ev, 2 * N_USERS, NULL,
                                              NULL) == 0);
}

/* A VBPR model trained on nothing (initialised weights) over a tiny
 * dataset, so that item writes with features get cold-start vectors. */
static void build_model(struct setup *st, struct sgbd_model **model,
                        float **theta)
{
    const struct sgbd_model_ops *ops = sgbd_model_find("vbpr");
    uint32_t users[2 * N_USERS], items[2 * N_USERS];
    uint8_t labels[2 * N_USERS] = {0};
    struct sgbd_inter rows = {2 * N_USERS, users, items, labels};
    struct sgbd_model_input in;
    struct sgbd_rng rng;

    for (int u = 0; u < N_USERS; u++)
        for (int j = 0; j < 2; j++) {
            users[2 * u + j] = (uint32_t)u;
            items[2 * u + j] = seen_item(u, j);
        }
    FUZZ_CHECK(ops != NULL);
    FUZZ_CHECK(sgbd_dataset_build(&st->ds, &rows) == 0);
    FUZZ_CHECK(st->ds.n_items == N_ITEMS && st->ds.n_users == N_USERS);
    st->feat.n = 1;
    snprintf(st->feat.ch[0].name, SGBD_CHANNEL_NAME, "image");
    FUZZ_CHECK(sgbd_mat_alloc(&st->feat.ch[0].m, N_ITEMS, DIM) == 0);
    for (size_t j = 0; j < (size_t)N_ITEMS * DIM; j++)
        st->feat.ch[0].m.data[j] = (float)((j * 7) % 11) / 11.0f - 0.5f;
    sgbd_hparams_defaults(&st->hp);
    st->hp.embedding_size = DIM;
    in = (struct sgbd_model_input){&st->ds, &st->feat, &st->hp};
    FUZZ_CHECK(ops->create(model, &in) == 0);
    *theta = sgbd_params_alloc_arena(&(*model)->layout);
    FUZZ_CHECK(*theta != NULL);
    sgbd_rng_init(&rng, 42, 0);
    sgbd_params_init(&(*model)->layout, *theta, &rng);
}

/* Version 1 from the model's own embeddings; item I - 1 hidden. */
static void publish_snapshot(struct setup *st)
{
    static const struct sgbd_snapshot_channel ch = {"image", DIM};
    struct sgbd_model *model;
    struct sgbd_snapshot *s;
    float *theta;

    build_model(st, &model, &theta);
    FUZZ_CHECK(sgbd_snapshot_new(&s, 1, N_USERS, N_ITEMS, model->dim) == 0);
    FUZZ_CHECK(model->ops->embed(model, theta,
                                 sgbd_mat_view(s->users, N_USERS, s->dim),
                                 sgbd_mat_view(s->items, N_ITEMS, s->dim))
               == 0);
    snprintf(s->meta.model, sizeof(s->meta.model), "vbpr");
    snprintf(s->meta.optimizer, sizeof(s->meta.optimizer), "sgbd");
    FUZZ_CHECK(sgbd_snapshot_set_seen(s, st->ds.train.ptr,
                                      st->ds.train.items) == 0);
    FUZZ_CHECK(sgbd_snapshot_hide(s, N_ITEMS - 1) == 0);
    FUZZ_CHECK(sgbd_snapshot_set_model(s, model, theta, &ch, 1) == 0);
    sgbd_params_free_arena(theta);
    FUZZ_CHECK(sgbd_snapshot_finish(s) == 0);
    FUZZ_CHECK(sgbd_snapshot_publish(st->slot, s, 0) == 0);
}

static void setup_open(struct setup *st)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    struct sgbd_store_opts so;
    struct sgbd_api_opts ao;
    char path[256];

    snprintf(st->dir, sizeof(st->dir), "%s/sgbd-fuzz-api-XXXXXX", base);
    FUZZ_CHECK(mkdtemp(st->dir) != NULL);
    sgbd_config_defaults(&st->cfg);
    snprintf(st->cfg.write_token_file, sizeof(st->cfg.write_token_file),
             "%s/write.tokens", st->dir);
    snprintf(st->cfg.admin_token_file, sizeof(st->cfg.admin_token_file),
             "%s/admin.tokens", st->dir);
    write_text(st->cfg.write_token_file, "# fuzz\n" WRITE_TOKEN "\n");
    write_text(st->cfg.admin_token_file, ADMIN_TOKEN "\n");
    st->cfg.max_k = 50;
    st->cfg.max_batch_users = 20;
    st->cfg.max_body_bytes = 1 << 16;

    sgbd_store_opts_defaults(&so);
    so.map_size = (size_t)32 << 20;
    so.map_max = (size_t)128 << 20;
    snprintf(path, sizeof(path), "%s/db", st->dir);
    FUZZ_CHECK(sgbd_store_open(&st->store, path, &so) == 0);
    fill_store(st->store);

    FUZZ_CHECK(sgbd_snapshot_slot_new(&st->slot) == 0);
    publish_snapshot(st);
    ao = (struct sgbd_api_opts){&st->cfg, st->store, st->slot, &hooks};
    FUZZ_CHECK(sgbd_api_new(&st->api, &ao) == 0);
    st->runs = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    return remove(path);
}

static void setup_close(struct setup *st)
{
    sgbd_api_free(st->api);
    sgbd_snapshot_slot_free(st->slot);
    sgbd_store_close(st->store);
    sgbd_features_free(&st->feat);
    sgbd_dataset_free(&st->ds);
    if (st->dir[0])
        nftw(st->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    memset(st, 0, sizeof(*st));
}

static void at_exit(void)
{
    if (S.api)
        setup_close(&S);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    setup_open(&S);
    atexit(at_exit);
    return 0;
}

/* ---- the request ---- */

struct input {
    char *buf;                      /* the input, NUL-terminated pieces */
    struct sgbd_api_request req;
};

/* Next line of [*p, end), NUL-terminated in place without "\r\n". */
static char *take_line(char **p, char *end)
{
    char *line = *p, *nl;

    if (*p >= end)
        return NULL;
    nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl)
        nl = end;
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
    *p = nl < end ? nl + 1 : end;
    return line;
}

static void parse_query(struct input *in, char *q)
{
    struct sgbd_api_request *r = &in->req;

    while (q && *q && r->n_args < SGBD_API_MAX_ARGS) {
        char *amp = strchr(q, '&'), *eq;
        if (amp)
            *amp = '\0';
        eq = strchr(q, '=');
        if (eq)
            *eq = '\0';
        r->args[r->n_args].key = q;
        r->args[r->n_args].value = eq ? eq + 1 : "";
        r->n_args++;
        q = amp ? amp + 1 : NULL;
    }
}

static void parse_request_line(struct input *in, char *line)
{
    char *sp = strchr(line, ' '), *target, *q;

    in->req.method = line;
    in->req.path = "";
    if (!sp)
        return;
    *sp = '\0';
    target = sp + 1;
    if ((sp = strchr(target, ' ')) != NULL)
        *sp = '\0';
    in->req.path = target;
    if ((q = strchr(target, '?')) != NULL) {
        *q++ = '\0';
        parse_query(in, q);
    }
}

static void parse_header(struct input *in, char *line, int64_t *declared)
{
    char *colon = strchr(line, ':'), *v, *end;

    if (!colon)
        return;
    *colon = '\0';
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        ;
    if (strcasecmp(line, "authorization") == 0) {
        in->req.authorization = v;
    } else if (strcasecmp(line, "content-type") == 0) {
        in->req.content_type = v;
    } else if (strcasecmp(line, "content-length") == 0) {
        long long n = strtoll(v, &end, 10);
        *declared = end != v && *end == '\0' && n >= 0 ? n : -1;
    }
}

static int parse_input(struct input *in, const uint8_t *data, size_t size)
{
    char *p, *end, *line;
    int64_t declared = -1;

    memset(in, 0, sizeof(*in));
    in->buf = malloc(size + 1);
    FUZZ_CHECK(in->buf != NULL);
    memcpy(in->buf, data, size);
    in->buf[size] = '\0';
    p = in->buf;
    end = in->buf + size;
    if (!(line = take_line(&p, end)))
        return -1;
    parse_request_line(in, line);
    while ((line = take_line(&p, end)) != NULL && line[0] != '\0')
        parse_header(in, line, &declared);
    in->req.body = p;
    in->req.body_len = (size_t)(end - p);
    in->req.content_length = declared;
    if (declared >= 0 && (uint64_t)declared < in->req.body_len)
        in->req.body_len = (size_t)declared;
    in->req.route = -1;
    return 0;
}

/* ---- invariants ---- */

static int has(const char *s, const char *token)
{
    return s && strstr(s, token) != NULL;
}

/* Whether the request carried token anywhere but in Authorization. */
static int token_elsewhere(const struct input *in, const char *token)
{
    const struct sgbd_api_request *r = &in->req;

    if (has(r->path, token) || has(r->method, token) ||
        has(r->content_type, token))
        return 1;
    for (int a = 0; a < r->n_args; a++)
        if (has(r->args[a].key, token) || has(r->args[a].value, token))
            return 1;
    return memmem(r->body, r->body_len, token, strlen(token)) != NULL;
}

/* Every "items" list of a ranking: at most max_k entries, distinct ids,
 * finite scores in non-increasing order. */
static void check_rankings(json_t *v)
{
    const char *key;
    json_t *x;
    size_t i;

    if (json_is_array(v)) {
        json_array_foreach(v, i, x)
            check_rankings(x);
        return;
    }
    json_object_foreach(v, key, x) {
        if (strcmp(key, "items") != 0 || !json_is_array(x)) {
            check_rankings(x);
            continue;
        }
        FUZZ_CHECK(json_array_size(x) <= 50);
        for (i = 0; i < json_array_size(x); i++) {
            json_t *e = json_array_get(x, i);
            json_t *id = json_object_get(e, "item_id");
            json_t *sc = json_object_get(e, "score");
            FUZZ_CHECK(json_is_string(id) && json_is_number(sc));
            FUZZ_CHECK(isfinite(json_number_value(sc)));
            for (size_t j = 0; j < i; j++) {
                json_t *f = json_array_get(x, j);
                FUZZ_CHECK(strcmp(json_string_value(id), json_string_value(
                    json_object_get(f, "item_id"))) != 0);
            }
            if (i > 0)
                FUZZ_CHECK(json_number_value(sc) <= json_number_value(
                    json_object_get(json_array_get(x, i - 1), "score")));
        }
    }
}

static void check_json(const struct sgbd_api_response *resp)
{
    json_error_t err;
    json_t *o = json_loadb(resp->body, resp->len, 0, &err), *mv, *e;

    if (!o)
        fprintf(stderr, "response is not JSON (%s): %.*s\n", err.text,
                (int)(resp->len > 300 ? 300 : resp->len), resp->body);
    FUZZ_CHECK(json_is_object(o));
    mv = json_object_get(o, "model_version");
    FUZZ_CHECK(json_is_integer(mv));
    FUZZ_CHECK((uint64_t)json_integer_value(mv) == resp->model_version);
    if (resp->status >= 400) {
        e = json_object_get(o, "error");
        FUZZ_CHECK(json_is_object(e));
        FUZZ_CHECK(json_is_string(json_object_get(e, "code")));
        FUZZ_CHECK(json_is_string(json_object_get(e, "message")));
    } else {
        check_rankings(o);
    }
    json_decref(o);
}

static int is_write(const struct sgbd_api_request *r)
{
    return (strcmp(r->method, "POST") == 0 &&
            strcmp(r->path, "/v1/recommendations") != 0) ||
           strcmp(r->method, "PUT") == 0 || strcmp(r->method, "DELETE") == 0;
}

static int is_admin(const struct sgbd_api_request *r)
{
    return strcmp(r->method, "POST") == 0 &&
           (strcmp(r->path, "/v1/model/retrain") == 0 ||
            strcmp(r->path, "/v1/model/rollback") == 0);
}

static void check_response(const struct input *in,
                           const struct sgbd_api_response *resp)
{
    const struct sgbd_api_request *r = &in->req;
    int ok = resp->status >= 200 && resp->status < 300;

    FUZZ_CHECK(resp->status >= 200 && resp->status <= 599);
    if (resp->status == 500)
        fprintf(stderr, "500: %.*s\n", (int)resp->len, resp->body);
    FUZZ_CHECK(resp->status != 500);
    FUZZ_CHECK(resp->status != 405 || resp->allow != NULL);
    FUZZ_CHECK(resp->status != 401 || resp->challenge);
    FUZZ_CHECK(resp->len == 0 || (resp->body && resp->content_type));
    if (resp->content_type &&
        strncmp(resp->content_type, "application/json", 16) == 0)
        check_json(resp);
    if (is_write(r) && !has(r->authorization, WRITE_TOKEN) &&
        !has(r->authorization, ADMIN_TOKEN))
        FUZZ_CHECK(!ok);
    if (is_admin(r) && !has(r->authorization, ADMIN_TOKEN))
        FUZZ_CHECK(!ok);
    S.write_token_stored |= token_elsewhere(in, WRITE_TOKEN);
    S.admin_token_stored |= token_elsewhere(in, ADMIN_TOKEN);
    if (resp->body && !S.write_token_stored)
        FUZZ_CHECK(!memmem(resp->body, resp->len, WRITE_TOKEN,
                           strlen(WRITE_TOKEN)));
    if (resp->body && !S.admin_token_stored)
        FUZZ_CHECK(!memmem(resp->body, resp->len, ADMIN_TOKEN,
                           strlen(ADMIN_TOKEN)));
}

static int same_counts(const struct sgbd_store_counts *a,
                       const struct sgbd_store_counts *b)
{
    return a->items == b->items && a->users == b->users &&
           a->interactions == b->interactions &&
           a->channels == b->channels && a->last_seq == b->last_seq;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sgbd_store_counts before, after;
    struct sgbd_api_response resp;
    struct input in;

    if (S.runs++ >= RESET_EVERY) {
        setup_close(&S);
        setup_open(&S);
    }
    if (parse_input(&in, data, size) != 0) {
        free(in.buf);
        return 0;
    }
    FUZZ_CHECK(sgbd_store_counts(S.store, &before) == 0);

    if (!sgbd_api_begin(S.api, &in.req, &resp)) {
        FUZZ_CHECK(resp.status == 0 && resp.body == NULL);
        sgbd_api_handle(S.api, &in.req, &resp);
    }
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "%s %s -> %d %.*s\n", in.req.method, in.req.path,
                resp.status, (int)(resp.len > 400 ? 400 : resp.len),
                resp.body ? resp.body : "");
    check_response(&in, &resp);
    sgbd_api_finish(S.api, &in.req, &resp, 0.001);
    FUZZ_CHECK(sgbd_api_in_flight(S.api) == 0);

    FUZZ_CHECK(sgbd_store_counts(S.store, &after) == 0);
    if (!is_write(&in.req) || resp.status >= 300)
        FUZZ_CHECK(same_counts(&before, &after));
    sgbd_api_response_clear(&resp);
    free(in.buf);
    return 0;
}
