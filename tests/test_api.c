/* test_api.c - every route of the API, called without HTTP. */
/* ctest: labels=unit timeout=120 */
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "sgbd/api.h"
#include "sgbd/err.h"
#include "sgbd/overlay.h"
#include "sgbd/rng.h"
#include "sgbd/snapshot.h"
#include "sgbd/store.h"

#define FU 30
#define FI 40
#define FD 8
#define FC 4 /* width of the "image" channel */

/* ---- a cold-start model: vec[d] = 3 * feat[d % FC] ---- */

static int lin_embed(struct sgbd_model *m, const float *theta,
                     const float *const *feats, float *out)
{
    for (size_t d = 0; d < m->dim; d++)
        out[d] = feats[0] ? theta[0] * feats[0][d % FC] : 0.0f;
    return 0;
}

static void lin_free(struct sgbd_model *m)
{
    free(m);
}

static const struct sgbd_model_ops lin_ops = {
    .name = "lin", .free = lin_free, .embed_new_item = lin_embed};

struct fx {
    char dir[64];
    struct sgbd_config cfg;
    struct sgbd_store *store;
    struct sgbd_snapshot_slot *slot;
    struct sgbd_api *api;
    float U[FU][FD], V[FI][FD];
    uint64_t ptr[FU + 1];
    uint32_t seen[FU * 3];
};

static struct fx F;

/* Publish the fixture's model; it absorbed writes numbered <= absorbed.
 * allow_older: a rollback to a lower version. */
static void publish_model(uint64_t version, uint64_t absorbed,
                          int allow_older)
{
    struct sgbd_snapshot *s;
    struct sgbd_snapshot_channel ch = {"image", FC};
    struct sgbd_model *m = calloc(1, sizeof(*m));
    float theta[1] = {3.0f};

    m->ops = &lin_ops;
    m->dim = FD;
    m->layout.n = 1;
    sgbd_snapshot_new(&s, version, FU, FI, FD);
    memcpy(s->users, F.U, sizeof(F.U));
    memcpy(s->items, F.V, sizeof(F.V));
    sgbd_snapshot_set_seen(s, F.ptr, F.seen);
    sgbd_snapshot_set_model(s, m, theta, &ch, 1);
    s->meta = (struct sgbd_snapshot_meta){"lin", "sgbd", 1700000000, 1,
                                          {{"recall@20", 0.25}}};
    s->absorbed_seq = absorbed;
    sgbd_snapshot_finish(s);
    sgbd_snapshot_publish(F.slot, s, allow_older);
}

static void build_snapshot(uint64_t version, uint64_t absorbed)
{
    publish_model(version, absorbed, 0);
}

/* A fresh store with items i0..i39 and a fresh API over an empty slot. */
static int fx_setup(int with_model, const char *write_tok,
                    const char *admin_tok)
{
    struct sgbd_rng rng;
    char path[128];

    snprintf(F.dir, sizeof(F.dir), "/tmp/sgbd_test_api.XXXXXX");
    if (!mkdtemp(F.dir))
        return -1;
    sgbd_config_defaults(&F.cfg);
    if (write_tok) {
        FILE *f;
        snprintf(path, sizeof(path), "%s/write.tok", F.dir);
        f = fopen(path, "w");
        fprintf(f, "# comment\n%s\n", write_tok);
        fclose(f);
        snprintf(F.cfg.write_token_file, sizeof(F.cfg.write_token_file),
                 "%s", path);
    }
    if (admin_tok) {
        FILE *f;
        snprintf(path, sizeof(path), "%s/admin.tok", F.dir);
        f = fopen(path, "w");
        fprintf(f, "%s\n", admin_tok);
        fclose(f);
        snprintf(F.cfg.admin_token_file, sizeof(F.cfg.admin_token_file),
                 "%s", path);
    }
    snprintf(path, sizeof(path), "%s/db", F.dir);
    if (sgbd_store_open(&F.store, path, NULL) != 0)
        return -1;
    for (int i = 0; i < FI; i++) {
        char id[16];
        struct sgbd_store_item it = {id, 0, NULL, NULL, 0};
        snprintf(id, sizeof(id), "i%d", i);
        if (sgbd_store_items_upsert(F.store, &it, 1, NULL) != 0)
            return -1;
    }
    sgbd_rng_init(&rng, 7, 1);
    for (int u = 0; u < FU; u++)
        for (int d = 0; d < FD; d++)
            F.U[u][d] = (float)(sgbd_rng_uniform(&rng) * 2 - 1);
    for (int i = 0; i < FI; i++)
        for (int d = 0; d < FD; d++)
            F.V[i][d] = (float)(sgbd_rng_uniform(&rng) * 2 - 1);
    /* user u saw items u % FI, (3u + 1) % FI; item 0 is seen by many. */
    for (int u = 0; u < FU; u++) {
        F.ptr[u + 1] = F.ptr[u] + 3;
        F.seen[3 * u] = (uint32_t)(u % FI);
        F.seen[3 * u + 1] = (uint32_t)((3 * u + 1) % FI);
        F.seen[3 * u + 2] = 0;
    }
    if (sgbd_snapshot_slot_new(&F.slot) != 0)
        return -1;
    struct sgbd_api_opts o = {&F.cfg, F.store, F.slot, NULL};
    if (sgbd_api_new(&F.api, &o) != 0)
        return -1;
    if (with_model)
        build_snapshot(1, 0);
    return 0;
}

static void fx_teardown(void)
{
    char cmd[128];

    sgbd_api_free(F.api);
    sgbd_snapshot_slot_free(F.slot);
    sgbd_store_close(F.store);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", F.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", F.dir);
    memset(&F, 0, sizeof(F));
}

/* ---- calling the API like the http module does ---- */

struct reply {
    int status;
    json_t *json;
    char *text;
    struct sgbd_api_response resp;
};

static void reply_free(struct reply *r)
{
    json_decref(r->json);
    free(r->text);
    sgbd_api_response_clear(&r->resp);
}

static struct reply call_on(struct sgbd_api *api, const char *method,
                            const char *target, const char *body,
                            const char *auth, const char *ctype)
{
    struct sgbd_api_request req = {0};
    struct reply r = {0};
    char path[2048], *q;

    snprintf(path, sizeof(path), "%s", target);
    q = strchr(path, '?');
    if (q) {
        *q++ = '\0';
        for (char *a = strtok(q, "&"); a && req.n_args < SGBD_API_MAX_ARGS;
             a = strtok(NULL, "&")) {
            char *eq = strchr(a, '=');
            if (eq)
                *eq = '\0';
            req.args[req.n_args].key = a;
            req.args[req.n_args++].value = eq ? eq + 1 : "";
        }
    }
    req.method = method;
    req.path = path;
    req.authorization = auth;
    req.content_type = body ? (ctype ? ctype : "application/json") : NULL;
    req.content_length = body ? (int64_t)strlen(body) : 0;
    if (sgbd_api_begin(api, &req, &r.resp) == 0) {
        req.body = body;
        req.body_len = body ? strlen(body) : 0;
        sgbd_api_handle(api, &req, &r.resp);
    }
    sgbd_api_finish(api, &req, &r.resp, 0.001);
    r.status = r.resp.status;
    r.text = calloc(1, r.resp.len + 1);
    memcpy(r.text, r.resp.body, r.resp.len);
    if (r.resp.content_type &&
        strcmp(r.resp.content_type, "application/json") == 0)
        r.json = json_loads(r.text, 0, NULL);
    return r;
}

static struct reply call(const char *method, const char *target,
                         const char *body, const char *auth,
                         const char *ctype)
{
    return call_on(F.api, method, target, body, auth, ctype);
}

/* A sample of /metrics (the line "name value"), or -1. */
static long metric(struct sgbd_api *api, const char *name)
{
    struct reply r = call_on(api, "GET", "/metrics", NULL, NULL, NULL);
    char line[128];
    const char *at;
    long v = -1;

    snprintf(line, sizeof(line), "\n%s ", name);     /* a sample line */
    at = r.text ? strstr(r.text, line) : NULL;
    if (at)
        v = strtol(at + strlen(line), NULL, 10);
    reply_free(&r);
    return v;
}

static const char *err_code(const struct reply *r)
{
    return json_string_value(
        json_object_get(json_object_get(r->json, "error"), "code"));
}

static json_t *items_of(const struct reply *r)
{
    return json_object_get(r->json, "items");
}

static int contains(json_t *items, const char *id)
{
    size_t k;
    json_t *v;

    json_array_foreach(items, k, v)
        if (strcmp(json_string_value(json_object_get(v, "item_id")), id) ==
            0)
            return 1;
    return 0;
}

static double ref_dot(const float *a, const float *b)
{
    double s = 0;
    for (int d = 0; d < FD; d++)
        s += (double)a[d] * b[d];
    return s;
}

/* ---- reads ---- */

static void test_api_recommend_matches_brute_force(void)
{
    struct reply r;
    double best[FI];
    int order[FI], n = 0;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    r = call("GET", "/v1/users/u3/recommendations?k=5", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "user_id")), "u3");
    CHECK_INT(json_integer_value(json_object_get(r.json, "model_version")),
              1);
    CHECK(json_object_get(r.json, "fallback") == NULL);
    CHECK_INT(json_array_size(items_of(&r)), 5);

    /* reference: every unseen item by descending inner product */
    for (int i = 0; i < FI; i++) {
        if (i == 3 || i == 10 || i == 0)
            continue; /* u3 saw items 3, 10 and 0 */
        best[n] = ref_dot(F.U[3], F.V[i]);
        order[n++] = i;
    }
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (best[b] > best[a]) {
                double t = best[a];
                int o = order[a];
                best[a] = best[b], order[a] = order[b];
                best[b] = t, order[b] = o;
            }
    for (int j = 0; j < 5; j++) {
        json_t *it = json_array_get(items_of(&r), (size_t)j);
        char want[16];
        snprintf(want, sizeof(want), "i%d", order[j]);
        CHECK_STR(json_string_value(json_object_get(it, "item_id")), want);
        CHECK_NEAR(json_number_value(json_object_get(it, "score")), best[j],
                   1e-4);
    }
    reply_free(&r);
    fx_teardown();
}

/* The answer with overlay items (new, rewritten, hidden, seen since) is
 * the brute-force ranking of the catalogue as the writes left it. */
static void test_api_overlay_items_rank_as_brute_force(void)
{
    enum { NEW = 30, ALL = FI + NEW };
    float vec[ALL][FD];
    int hidden[ALL] = {0}, seen[FU][ALL] = {{0}};
    struct sgbd_rng rng;
    char t[96], b[256];
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    sgbd_rng_init(&rng, 5, 1);
    memcpy(vec, F.V, sizeof(F.V));
    for (int u = 0; u < FU; u++)
        for (int j = 0; j < 3; j++)
            seen[u][F.seen[3 * u + j]] = 1;
    /* new items n0..n29 and new features for i0..i9: vec = 3 f[d % 4] */
    for (int e = 0; e < NEW + 10; e++) {
        int i = e < NEW ? FI + e : e - NEW;
        float f[FC];

        for (int c = 0; c < FC; c++)
            f[c] = (float)(sgbd_rng_uniform(&rng) * 2 - 1);
        for (int d = 0; d < FD; d++)
            vec[i][d] = 3.0f * f[d % FC];
        snprintf(t, sizeof(t), "/v1/items/%s%d", i >= FI ? "n" : "i",
                 i >= FI ? i - FI : i);
        snprintf(b, sizeof(b), "{\"features\": {\"image\": [%.9g, %.9g, "
                 "%.9g, %.9g]}}", f[0], f[1], f[2], f[3]);
        r = call("PUT", t, b, NULL, NULL);
        CHECK(r.status == 200 || r.status == 201);
        reply_free(&r);
    }
    /* hide some of each kind; u4..u7 see some new items */
    for (int i = 0; i < ALL; i += 7) {
        snprintf(t, sizeof(t), "/v1/items/%s%d", i >= FI ? "n" : "i",
                 i >= FI ? i - FI : i);
        r = call("DELETE", t, NULL, NULL, NULL);
        CHECK_INT(r.status, 200);
        reply_free(&r);
        hidden[i] = 1;
    }
    for (int u = 4; u < 8; u++) {
        int i = FI + 3 * u % NEW;
        snprintf(b, sizeof(b), "{\"interactions\": [{\"user_id\": \"u%d\", "
                 "\"item_id\": \"n%d\"}]}", u, i - FI);
        r = call("POST", "/v1/interactions", b, NULL, NULL);
        CHECK_INT(r.status, 200);
        reply_free(&r);
        seen[u][i] = 1;
    }
    for (int u = 0; u < 12; u++)
        for (int ki = 0; ki < 3; ki++) {
            static const int ks[3] = {1, 7, 60};
            double sc[ALL];
            int order[ALL], n = 0;
            json_t *items;

            for (int i = 0; i < ALL; i++)
                if (!hidden[i] && !seen[u][i]) {
                    sc[i] = ref_dot(F.U[u], vec[i]);
                    order[n++] = i;
                }
            for (int a = 1; a < n; a++)     /* insertion sort, best first */
                for (int c = a; c > 0 && sc[order[c]] > sc[order[c - 1]];
                     c--) {
                    int o = order[c];
                    order[c] = order[c - 1];
                    order[c - 1] = o;
                }
            snprintf(t, sizeof(t), "/v1/users/u%d/recommendations?k=%d", u,
                     ks[ki]);
            r = call("GET", t, NULL, NULL, NULL);
            CHECK_INT(r.status, 200);
            items = items_of(&r);
            CHECK_INT(json_array_size(items),
                      ks[ki] < n ? ks[ki] : n);
            for (size_t j = 0; j < json_array_size(items); j++) {
                json_t *it = json_array_get(items, j);
                int i = order[j];

                snprintf(b, sizeof(b), "%s%d", i >= FI ? "n" : "i",
                         i >= FI ? i - FI : i);
                CHECK_STR(json_string_value(json_object_get(it, "item_id")),
                          b);
                CHECK_NEAR(json_number_value(json_object_get(it, "score")),
                           sc[i], 1e-4 * (1 + fabs(sc[i])));
            }
            reply_free(&r);
        }
    fx_teardown();
}

static void test_api_unknown_user_gets_popular_fallback(void)
{
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    r = call("GET", "/v1/users/nobody/recommendations?k=3&exclude=i1", NULL,
             NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK_STR(json_string_value(json_object_get(r.json, "fallback")),
              "popular");
    /* item 0 is seen by everyone; then 1 (seen by u0 and u10, excluded),
     * and the rest tie on two views: lower index first. */
    CHECK_STR(json_string_value(json_object_get(
                  json_array_get(items_of(&r), 0), "item_id")), "i0");
    CHECK(!contains(items_of(&r), "i1"));
    CHECK_INT(json_array_size(items_of(&r)), 3);
    reply_free(&r);
    fx_teardown();
}

static void test_api_exclude_and_k_bounds(void)
{
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    r = call("GET", "/v1/users/u5/recommendations?k=40&exclude=i2,i4"
             "&exclude=i6", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(!contains(items_of(&r), "i2") && !contains(items_of(&r), "i4"));
    CHECK(!contains(items_of(&r), "i6") && !contains(items_of(&r), "i5"));
    CHECK_INT(json_array_size(items_of(&r)), FI - 3 - 3);
    reply_free(&r);

    const char *bad[] = {"k=0", "k=100000", "k=abc", "k=", "k=-3", "k=1e2"};
    for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
        char t[96];
        snprintf(t, sizeof(t), "/v1/users/u1/recommendations?%s", bad[j]);
        r = call("GET", t, NULL, NULL, NULL);
        CHECK_INT(r.status, 400);
        CHECK_STR(err_code(&r), "bad_k");
        reply_free(&r);
    }
    fx_teardown();
}

static void test_api_batch_equals_single_requests(void)
{
    struct reply b, s;
    const char *users[] = {"u1", "u2", "stranger", "u7"};

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    b = call("POST", "/v1/recommendations",
             "{\"user_ids\": [\"u1\", \"u2\", \"stranger\", \"u7\"], \"k\": 6,"
             " \"exclude\": [\"i9\"]}", NULL, NULL);
    CHECK_INT(b.status, 200);
    CHECK_INT(json_array_size(json_object_get(b.json, "results")), 4);
    for (int j = 0; j < 4; j++) {
        char t[96];
        json_t *res = json_array_get(json_object_get(b.json, "results"),
                                     (size_t)j);
        snprintf(t, sizeof(t), "/v1/users/%s/recommendations?k=6&exclude=i9",
                 users[j]);
        s = call("GET", t, NULL, NULL, NULL);
        CHECK_INT(s.status, 200);
        CHECK_STR(json_string_value(json_object_get(res, "user_id")),
                  users[j]);
        for (int i = 0; i < 6; i++) {
            json_t *x = json_array_get(json_object_get(res, "items"),
                                       (size_t)i);
            json_t *y = json_array_get(items_of(&s), (size_t)i);
            CHECK_STR(json_string_value(json_object_get(x, "item_id")),
                      json_string_value(json_object_get(y, "item_id")));
            CHECK_NEAR(json_number_value(json_object_get(x, "score")),
                       json_number_value(json_object_get(y, "score")), 1e-4);
        }
        CHECK((json_object_get(res, "fallback") != NULL) == (j == 2));
        reply_free(&s);
    }
    reply_free(&b);

    /* Bodies the cache holds are spliced in as they are, and users a
     * batch scores are kept for their single requests: either way the
     * batch's entries are the single answers, byte for byte. */
    s = call("GET", "/v1/users/u2/recommendations?k=6", NULL, NULL, NULL);
    {
        long hits = metric(F.api, "sgbd_reco_cache_hits_total");
        struct reply one;
        char want[4096];

        b = call("POST", "/v1/recommendations", "{\"user_ids\": [\"u1\", "
                 "\"u2\"], \"k\": 6}", NULL, NULL);
        CHECK_INT(metric(F.api, "sgbd_reco_cache_hits_total"), hits + 1);
        one = call("GET", "/v1/users/u1/recommendations?k=6", NULL, NULL,
                   NULL);
        CHECK_INT(metric(F.api, "sgbd_reco_cache_hits_total"), hits + 2);
        snprintf(want, sizeof(want), "\"results\":[%s,%s]}", one.text,
                 s.text);
        CHECK(strstr(b.text, want) != NULL);
        reply_free(&one);
    }
    reply_free(&s);
    reply_free(&b);

    b = call("POST", "/v1/recommendations", "{\"user_ids\": []}", NULL, NULL);
    CHECK_INT(b.status, 400);
    reply_free(&b);
    b = call("POST", "/v1/recommendations", "{\"user_ids\": [3]}", NULL,
             NULL);
    CHECK_INT(b.status, 400);
    reply_free(&b);
    fx_teardown();
}

static void test_api_similar_items_by_cosine(void)
{
    struct reply r;
    double na;
    int best = -1;
    double best_cos = -2;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    na = sqrt(ref_dot(F.V[5], F.V[5]));
    for (int i = 0; i < FI; i++) {
        double c;
        if (i == 5)
            continue;
        c = ref_dot(F.V[5], F.V[i]) / na / sqrt(ref_dot(F.V[i], F.V[i]));
        if (c > best_cos)
            best_cos = c, best = i;
    }
    r = call("GET", "/v1/items/i5/similar?k=3", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(!contains(items_of(&r), "i5"));
    {
        char want[16];
        json_t *top = json_array_get(items_of(&r), 0);
        snprintf(want, sizeof(want), "i%d", best);
        CHECK_STR(json_string_value(json_object_get(top, "item_id")), want);
        CHECK_NEAR(json_number_value(json_object_get(top, "score")),
                   best_cos, 1e-4);
    }
    reply_free(&r);
    r = call("GET", "/v1/items/nosuch/similar", NULL, NULL, NULL);
    CHECK_INT(r.status, 404);
    CHECK_STR(err_code(&r), "item_not_found");
    reply_free(&r);

    /* A new item is ranked by cosine too: with features along i5's own
     * direction (vec = 3 f[d % 4], so f = the mean of i5 over d mod 4
     * gives a vector close to it), it comes first, scored by its cosine. */
    {
        double f[FC] = {0}, vec[FD], c, nv = 0;
        char b[160];

        for (int d = 0; d < FD; d++)
            f[d % FC] += F.V[5][d] / (FD / FC);
        for (int d = 0; d < FD; d++) {
            vec[d] = 3.0 * (float)f[d % FC];
            nv += vec[d] * vec[d];
        }
        c = 0;
        for (int d = 0; d < FD; d++)
            c += F.V[5][d] * vec[d];
        c /= na * sqrt(nv);
        snprintf(b, sizeof(b), "{\"features\": {\"image\": [%.9g, %.9g, "
                 "%.9g, %.9g]}}", (float)f[0], (float)f[1], (float)f[2],
                 (float)f[3]);
        r = call("PUT", "/v1/items/twin", b, NULL, NULL);
        CHECK_INT(r.status, 201);
        reply_free(&r);
        r = call("GET", "/v1/items/i5/similar?k=3", NULL, NULL, NULL);
        CHECK_INT(r.status, 200);
        if (c > best_cos) {
            json_t *top = json_array_get(items_of(&r), 0);
            CHECK_STR(json_string_value(json_object_get(top, "item_id")),
                      "twin");
            CHECK_NEAR(json_number_value(json_object_get(top, "score")), c,
                       1e-4);
        } else {
            CHECK(contains(items_of(&r), "twin") ==
                  (c > json_number_value(json_object_get(
                           json_array_get(items_of(&r), 2), "score"))));
        }
        reply_free(&r);
    }
    fx_teardown();
}

/* ---- writes ---- */

static void test_api_new_item_recommendable_at_once(void)
{
    struct reply r;
    float vec[FD];
    double want;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    r = call("PUT", "/v1/items/fresh", "{\"features\": {\"image\": [1, -2, "
             "0.5, 4]}, \"attributes\": {\"title\": \"Tea\"}}", NULL, NULL);
    CHECK_INT(r.status, 201);
    CHECK(json_is_true(json_object_get(r.json, "created")));
    CHECK(json_is_true(json_object_get(r.json, "recommendable")));
    reply_free(&r);

    for (int d = 0; d < FD; d++)
        vec[d] = 3.0f * (float[]){1, -2, 0.5f, 4}[d % FC];
    want = ref_dot(F.U[2], vec);
    r = call("GET", "/v1/users/u2/recommendations?k=100", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(contains(items_of(&r), "fresh"));
    {
        size_t k;
        json_t *v;
        json_array_foreach(items_of(&r), k, v)
            if (strcmp(json_string_value(json_object_get(v, "item_id")),
                       "fresh") == 0)
                CHECK_NEAR(json_number_value(json_object_get(v, "score")),
                           want, 1e-3);
    }
    reply_free(&r);

    r = call("GET", "/v1/items/fresh", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK_STR(json_string_value(json_object_get(
                  json_object_get(r.json, "attributes"), "title")), "Tea");
    CHECK_INT(json_array_size(json_object_get(
                  json_object_get(r.json, "features"), "image")), FC);
    reply_free(&r);

    /* an update keeps the item, changes its attributes only */
    r = call("PUT", "/v1/items/fresh", "{\"attributes\": {\"title\": \"Tee\"}}",
             NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(json_is_false(json_object_get(r.json, "created")));
    reply_free(&r);
    fx_teardown();
}

static void test_api_delete_hides_at_once(void)
{
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    r = call("DELETE", "/v1/items/i7", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    for (int u = 0; u < 5; u++) {
        char t[64];
        snprintf(t, sizeof(t), "/v1/users/u%d/recommendations?k=40", u);
        r = call("GET", t, NULL, NULL, NULL);
        CHECK(!contains(items_of(&r), "i7"));
        reply_free(&r);
    }
    r = call("GET", "/v1/users/nobody/recommendations?k=40", NULL, NULL,
             NULL);
    CHECK(!contains(items_of(&r), "i7"));
    reply_free(&r);
    r = call("GET", "/v1/items/i7", NULL, NULL, NULL);
    CHECK(json_is_true(json_object_get(r.json, "hidden")));
    reply_free(&r);
    r = call("GET", "/v1/items/i7/similar", NULL, NULL, NULL);
    CHECK_INT(r.status, 404);
    reply_free(&r);
    r = call("DELETE", "/v1/items/never", NULL, NULL, NULL);
    CHECK_INT(r.status, 404);
    reply_free(&r);
    /* a PUT brings it back */
    r = call("PUT", "/v1/items/i7", "{}", NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    r = call("GET", "/v1/users/u20/recommendations?k=40", NULL, NULL, NULL);
    CHECK(contains(items_of(&r), "i7"));
    reply_free(&r);
    fx_teardown();
}

static void test_api_interactions_excluded_at_once(void)
{
    struct sgbd_store_counts before, after;
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    r = call("GET", "/v1/users/u4/recommendations?k=40", NULL, NULL, NULL);
    CHECK(contains(items_of(&r), "i9"));
    reply_free(&r);
    r = call("POST", "/v1/interactions", "{\"interactions\": [{\"user_id\": "
             "\"u4\", \"item_id\": \"i9\", \"timestamp\": 1700000000}, "
             "{\"user_id\": \"newbie\", \"item_id\": \"i0\"}]}", NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK_INT(json_integer_value(json_object_get(r.json, "accepted")), 2);
    reply_free(&r);
    r = call("GET", "/v1/users/u4/recommendations?k=40", NULL, NULL, NULL);
    CHECK(!contains(items_of(&r), "i9"));
    reply_free(&r);
    r = call("GET", "/v1/users/newbie/recommendations?k=5", NULL, NULL, NULL);
    CHECK(!contains(items_of(&r), "i0")); /* popular, minus what they saw */
    reply_free(&r);

    /* an unknown item: 422 and nothing stored */
    CHECK_INT(sgbd_store_counts(F.store, &before), 0);
    r = call("POST", "/v1/interactions", "{\"interactions\": [{\"user_id\": "
             "\"u1\", \"item_id\": \"i1\"}, {\"user_id\": \"u1\", "
             "\"item_id\": \"ghost\"}]}", NULL, NULL);
    CHECK_INT(r.status, 422);
    CHECK_STR(err_code(&r), "unknown_item");
    reply_free(&r);
    CHECK_INT(sgbd_store_counts(F.store, &after), 0);
    CHECK_INT(after.interactions, before.interactions);
    fx_teardown();
}

/* ---- bad input ---- */

struct bad_case {
    const char *method, *target, *body, *ctype;
    int status;
    const char *code;
};

static void test_api_bad_input_gets_clear_errors(void)
{
    static const struct bad_case cases[] = {
        {"PUT", "/v1/items/x", "{\"features\": ", NULL, 400, "bad_json"},
        {"PUT", "/v1/items/x", "[1, 2]", NULL, 400, "bad_request"},
        {"PUT", "/v1/items/x", "{\"features\": {\"image\": [1, 2]}}", NULL,
         422, "feature_width"},
        {"PUT", "/v1/items/x", "{\"features\": {\"image\": [1, 2, 3, 1e39]}}",
         NULL, 400, "bad_feature"},
        {"PUT", "/v1/items/x", "{\"features\": {\"image\": [1, \"2\", 3, 4]}}",
         NULL, 400, "bad_feature"},
        {"PUT", "/v1/items/x", "{\"features\": {\"image\": [1, 2, 3, NaN]}}",
         NULL, 400, "bad_json"},
        {"PUT", "/v1/items/x", "{\"feature\": {}}", NULL, 400, "bad_request"},
        {"PUT", "/v1/items/x", "{\"attributes\": [1]}", NULL, 400,
         "bad_request"},
        {"PUT", "/v1/items/x", "{\"a\": 1, \"a\": 2}", NULL, 400, "bad_json"},
        {"PUT", "/v1/items/x", "{}", "text/plain", 415,
         "unsupported_media_type"},
        {"PUT", "/v1/items/a%01b", "{}", NULL, 400, "bad_id"},
        {"PUT", "/v1/items/a%00b", "{}", NULL, 400, "bad_id"},
        {"PUT", "/v1/items/%ff%fe", "{}", NULL, 400, "bad_id"},
        {"PUT", "/v1/items/bad%zz", "{}", NULL, 400, "bad_id"},
        {"GET", "/v1/users/%0a/recommendations", NULL, NULL, 400, "bad_id"},
        {"POST", "/v1/interactions", "{\"interactions\": [{\"user_id\": 5, "
         "\"item_id\": \"i1\"}]}", NULL, 400, "bad_request"},
        {"POST", "/v1/interactions", "{\"interactions\": [{\"user_id\": "
         "\"a\\u0000b\", \"item_id\": \"i1\"}]}", NULL, 400, "bad_id"},
        {"POST", "/v1/interactions", "{\"interactions\": [{\"user_id\": "
         "\"a\", \"item_id\": \"i1\", \"timestamp\": -4}]}", NULL, 400,
         "bad_request"},
        {"POST", "/v1/interactions", "{\"interactions\": []}", NULL, 400,
         "bad_request"},
        {"POST", "/v1/recommendations", "{\"user_ids\": [\"u1\"], \"k\": 0}",
         NULL, 400, "bad_k"},
        {"POST", "/v1/recommendations", "{\"user_ids\": [\"u1\"], \"k\": "
         "\"3\"}", NULL, 400, "bad_k"},
        {"POST", "/v1/model/rollback", "{\"version\": \"x\"}", NULL, 400,
         "bad_request"},
        {"GET", "/v1/nothing", NULL, NULL, 404, "not_found"},
        {"GET", "/v1/items/", NULL, NULL, 404, "not_found"},
        {"PATCH", "/v1/items/x", NULL, NULL, 405, "method_not_allowed"},
        {"DELETE", "/v1/model", NULL, NULL, 405, "method_not_allowed"},
    };
    char longid[400], t[512];
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    for (size_t j = 0; j < sizeof(cases) / sizeof(cases[0]); j++) {
        const struct bad_case *bc = &cases[j];
        r = call(bc->method, bc->target, bc->body, NULL, bc->ctype);
        if (r.status != bc->status || !err_code(&r) ||
            strcmp(err_code(&r), bc->code) != 0)
            fprintf(stderr, "  case %zu %s %s: got %d %s\n", j, bc->method,
                    bc->target, r.status, r.text);
        CHECK_INT(r.status, bc->status);
        CHECK_STR(err_code(&r), bc->code);
        CHECK(json_is_integer(json_object_get(r.json, "model_version")));
        reply_free(&r);
    }
    memset(longid, 'x', 300);
    longid[300] = '\0';
    snprintf(t, sizeof(t), "/v1/items/%s", longid);
    r = call("GET", t, NULL, NULL, NULL);
    CHECK_INT(r.status, 400);
    reply_free(&r);
    /* nothing of the failed writes reached the store */
    r = call("GET", "/v1/items/x", NULL, NULL, NULL);
    CHECK_INT(r.status, 404);
    reply_free(&r);
    fx_teardown();
}

static void test_api_declared_body_too_large_refused_early(void)
{
    struct sgbd_api_request req = {0};
    struct sgbd_api_response resp;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    req.method = "PUT";
    req.path = "/v1/items/big";
    req.content_type = "application/json";
    req.content_length = 100 * 1000 * 1000;
    CHECK_INT(sgbd_api_begin(F.api, &req, &resp), 1);
    CHECK_INT(resp.status, 413);
    CHECK(resp.close);
    sgbd_api_finish(F.api, &req, &resp, 0);
    sgbd_api_response_clear(&resp);
    fx_teardown();
}

/* ---- tokens ---- */

static void test_api_tokens_guard_write_and_admin_routes(void)
{
    struct reply r;

    CHECK_INT(fx_setup(1, "w-secret-1", "a-secret-2"), 0);
    r = call("PUT", "/v1/items/t1", "{}", NULL, NULL);
    CHECK_INT(r.status, 401);
    CHECK(r.resp.challenge);
    reply_free(&r);
    r = call("PUT", "/v1/items/t1", "{}", "Bearer w-secret-2", NULL);
    CHECK_INT(r.status, 403);
    CHECK(strstr(r.text, "secret") == NULL); /* never echoed */
    reply_free(&r);
    r = call("PUT", "/v1/items/t1", "{}", "Basic w-secret-1", NULL);
    CHECK_INT(r.status, 401);
    reply_free(&r);
    r = call("PUT", "/v1/items/t1", "{}", "Bearer w-secret-1", NULL);
    CHECK_INT(r.status, 201);
    reply_free(&r);
    r = call("PUT", "/v1/items/t2", "{}", "bearer a-secret-2", NULL);
    CHECK_INT(r.status, 201); /* admin opens write routes */
    reply_free(&r);
    r = call("POST", "/v1/model/retrain", NULL, "Bearer w-secret-1", NULL);
    CHECK_INT(r.status, 403);
    reply_free(&r);
    r = call("POST", "/v1/model/retrain", NULL, "Bearer a-secret-2", NULL);
    CHECK_INT(r.status, 501); /* no retrainer attached */
    CHECK_STR(err_code(&r), "not_implemented");
    reply_free(&r);
    r = call("GET", "/v1/users/u1/recommendations", NULL, NULL, NULL);
    CHECK_INT(r.status, 200); /* reads stay open */
    reply_free(&r);

    /* SIGHUP with a new write token: the old one stops working */
    {
        char path[128];
        FILE *f;
        snprintf(path, sizeof(path), "%s/write.tok", F.dir);
        f = fopen(path, "w");
        fprintf(f, "w-rotated\n");
        fclose(f);
        CHECK_INT(sgbd_api_reload(F.api, &F.cfg), 0);
    }
    r = call("PUT", "/v1/items/t1", "{}", "Bearer w-secret-1", NULL);
    CHECK_INT(r.status, 403);
    reply_free(&r);
    r = call("PUT", "/v1/items/t1", "{}", "Bearer w-rotated", NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    fx_teardown();
}

/* ---- model status, readiness, hooks, metrics ---- */

static int hook_busy;
static uint64_t hook_rollback_to, hook_notified;

static int fake_trigger(void *ctx, const char *why)
{
    return hook_busy ? SGBD_E_BUSY : 0;
}

static int fake_rollback(void *ctx, uint64_t version)
{
    if (version > 9)
        return SGBD_E_NOTFOUND;
    hook_rollback_to = version;
    return 0;
}

static void fake_notify(void *ctx, uint64_t items, uint64_t inter,
                        uint64_t seq)
{
    hook_notified += items + inter;
}

static void test_api_no_model_then_ready(void)
{
    struct reply r;

    CHECK_INT(fx_setup(0, NULL, NULL), 0);
    r = call("GET", "/readyz", NULL, NULL, NULL);
    CHECK_INT(r.status, 503);
    CHECK_STR(err_code(&r), "no_model");
    reply_free(&r);
    r = call("GET", "/healthz", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    r = call("GET", "/v1/users/u1/recommendations", NULL, NULL, NULL);
    CHECK_INT(r.status, 503);
    CHECK_INT(json_integer_value(json_object_get(r.json, "model_version")),
              0);
    reply_free(&r);
    /* writes are accepted without a model and count as pending */
    r = call("PUT", "/v1/items/early", "{\"features\": {\"image\": [1, 1, 1, "
             "1]}}", NULL, NULL);
    CHECK_INT(r.status, 201);
    CHECK(json_is_false(json_object_get(r.json, "recommendable")));
    reply_free(&r);
    r = call("GET", "/v1/model", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(json_is_null(json_object_get(r.json, "model")));
    CHECK_INT(json_integer_value(json_object_get(r.json, "pending_updates")),
              1);
    reply_free(&r);

    build_snapshot(1, 0); /* trained without the early item */
    r = call("GET", "/readyz", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    /* the early item was re-embedded by the first model */
    r = call("GET", "/v1/items/early/similar?k=2", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    r = call("GET", "/v1/model", NULL, NULL, NULL);
    CHECK_STR(json_string_value(json_object_get(r.json, "model")), "lin");
    CHECK_STR(json_string_value(json_object_get(r.json, "state")), "idle");
    CHECK_NEAR(json_number_value(json_object_get(
                   json_object_get(r.json, "metrics"), "recall@20")), 0.25,
               1e-12);
    CHECK_INT(json_integer_value(json_object_get(r.json, "version")), 1);
    reply_free(&r);
    sgbd_api_set_draining(F.api, 1);
    r = call("GET", "/readyz", NULL, NULL, NULL);
    CHECK_INT(r.status, 503);
    CHECK_STR(err_code(&r), "draining");
    reply_free(&r);
    fx_teardown();
}

static void test_api_retrain_hooks_and_metrics(void)
{
    struct sgbd_retrain_hooks hooks = {0};
    struct sgbd_api_opts o;
    struct reply r;

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    hooks.trigger = fake_trigger;
    hooks.rollback = fake_rollback;
    hooks.notify = fake_notify;
    sgbd_api_free(F.api);
    o = (struct sgbd_api_opts){&F.cfg, F.store, F.slot, &hooks};
    CHECK_INT(sgbd_api_new(&F.api, &o), 0);

    r = call("POST", "/v1/model/retrain", NULL, NULL, NULL);
    CHECK_INT(r.status, 202);
    reply_free(&r);
    hook_busy = 1;
    r = call("POST", "/v1/model/retrain", "{}", NULL, NULL);
    CHECK_INT(r.status, 409);
    CHECK_STR(err_code(&r), "retrain_running");
    reply_free(&r);
    r = call("POST", "/v1/model/rollback", "{\"version\": 12}", NULL, NULL);
    CHECK_INT(r.status, 404);
    reply_free(&r);
    r = call("POST", "/v1/model/rollback", "{\"version\": 3}", NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK_INT(hook_rollback_to, 3);
    reply_free(&r);
    r = call("DELETE", "/v1/items/i3", NULL, NULL, NULL);
    reply_free(&r);
    CHECK_INT(hook_notified, 1);
    r = call("GET", "/v1/model/checkpoints", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(json_is_array(json_object_get(r.json, "checkpoints")));
    reply_free(&r);

    r = call("GET", "/metrics", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    CHECK(strstr(r.text, "sgbd_http_requests_total{route=\"/v1/model/"
                         "retrain\",code=\"409\"} 1\n") != NULL);
    CHECK(strstr(r.text, "sgbd_model_version 1\n") != NULL);
    CHECK(strstr(r.text, "sgbd_http_request_duration_seconds_bucket{route="
                         "\"/v1/model/rollback\",le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(r.text, "sgbd_pending_item_updates 1\n") != NULL);
    reply_free(&r);
    fx_teardown();
}

/* ---- the answer cache ---- */

#define CU 6    /* users the random walk asks for */

/*
 * A random walk of reads and writes, every read asked of two APIs over
 * one slot, one with the answer cache and one without: the bodies must
 * be the same bytes, whichever writes, publications and rollbacks came
 * between two reads of one user.
 */
static void test_api_cached_answers_equal_scored_ones(void)
{
    struct sgbd_config plain_cfg;
    struct sgbd_api *plain = NULL;
    struct sgbd_rng rng;
    uint64_t version = 1;
    int wrote_since[CU + 1][3] = {{0}}, hits = 0, hits_after_writes = 0;
    int edited_since[CU + 1][3] = {{0}}, hits_after_edits = 0;
    int similar_reads = 0, similar_hits = 0, batches = 0;
    int reads = 0;
    static const int ks[3] = {3, 10, 40};

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    plain_cfg = F.cfg;
    plain_cfg.result_cache_mb = 0;
    struct sgbd_api_opts o = {&plain_cfg, F.store, F.slot, NULL};
    CHECK_INT(sgbd_api_new(&plain, &o), 0);
    CHECK_INT(metric(plain, "sgbd_reco_cache_hits_total"), -1);
    sgbd_rng_init(&rng, 99, 1);
    for (int step = 0; step < 600; step++) {
        int op = (int)(sgbd_rng_uniform(&rng) * 100);
        int u = (int)(sgbd_rng_uniform(&rng) * (CU + 1));
        int i = (int)(sgbd_rng_uniform(&rng) * (FI + 4));
        int kk = (int)(sgbd_rng_uniform(&rng) * 3);
        char t[160], b[256];
        struct reply a, p;

        if (op < 70) {
            long before = metric(F.api, "sgbd_reco_cache_hits_total");
            int hit;

            snprintf(t, sizeof(t), "/v1/users/%s%d/recommendations?k=%d%s",
                     u < CU ? "u" : "stranger", u, ks[kk],
                     op < 5 ? "&exclude=i3,i17" : "");
            a = call_on(F.api, "GET", t, NULL, NULL, NULL);
            p = call_on(plain, "GET", t, NULL, NULL, NULL);
            hit = metric(F.api, "sgbd_reco_cache_hits_total") > before;
            CHECK_INT(a.status, 200);
            CHECK_INT(p.status, 200);
            CHECK_STR(a.text, p.text);
            CHECK_INT(a.resp.model_version, p.resp.model_version);
            reply_free(&a);
            reply_free(&p);
            CHECK(!hit || (u < CU && op >= 5));
            hits += hit;
            hits_after_writes += hit && wrote_since[u][kk];
            hits_after_edits += hit && edited_since[u][kk];
            wrote_since[u][kk] = 0;
            edited_since[u][kk] = 0;
            reads++;
            if (op % 3 == 1) {      /* a batch: cached bodies spliced in */
                snprintf(b, sizeof(b), "{\"user_ids\": [\"u%d\", \"u0\", "
                         "\"stranger\", \"u%d\", \"u%d\"], \"k\": %d%s}",
                         u % CU, (u + 1) % CU, u % CU, ks[kk],
                         op < 10 ? ", \"exclude\": [\"i3\"]" : "");
                a = call_on(F.api, "POST", "/v1/recommendations", b, NULL,
                            NULL);
                p = call_on(plain, "POST", "/v1/recommendations", b, NULL,
                            NULL);
                CHECK_INT(a.status, 200);
                CHECK_STR(a.text, p.text);
                reply_free(&a);
                reply_free(&p);
                batches++;
            }
            if (op % 2)
                continue;
            /* and an item's similar items (404 and 409 alike) */
            before = metric(F.api, "sgbd_reco_cache_hits_total");
            snprintf(t, sizeof(t), "/v1/items/%s%d/similar?k=%d",
                     i < FI ? "i" : "new", i < FI ? i % 10 : i, ks[kk]);
            a = call_on(F.api, "GET", t, NULL, NULL, NULL);
            p = call_on(plain, "GET", t, NULL, NULL, NULL);
            hit = metric(F.api, "sgbd_reco_cache_hits_total") > before;
            CHECK_INT(a.status, p.status);
            CHECK_STR(a.text, p.text);
            CHECK(!hit || a.status == 200);
            reply_free(&a);
            reply_free(&p);
            similar_hits += hit;
            similar_reads++;
            continue;
        }
        if (op < 85) {              /* one user's interaction */
            snprintf(b, sizeof(b), "{\"interactions\": [{\"user_id\": "
                     "\"u%d\", \"item_id\": \"i%d\"}]}", u % CU,
                     i % FI);
            a = call("POST", "/v1/interactions", b, NULL, NULL);
            CHECK_INT(a.status, 200);
        } else if (op < 90) {       /* new features: a new vector */
            snprintf(t, sizeof(t), "/v1/items/%s%d", i < FI ? "i" : "new",
                     i);
            snprintf(b, sizeof(b), "{\"features\": {\"image\": [%.3f, "
                     "%.3f, %.3f, %.3f]}}", sgbd_rng_uniform(&rng) - 0.5,
                     sgbd_rng_uniform(&rng) - 0.5, sgbd_rng_uniform(&rng),
                     sgbd_rng_uniform(&rng) - 0.5);
            a = call("PUT", t, b, NULL, NULL);
            CHECK(a.status == 200 || a.status == 201);
        } else if (op < 95) {       /* hide an item, or bring it back */
            snprintf(t, sizeof(t), "/v1/items/i%d", i % FI);
            a = call(op < 93 ? "DELETE" : "PUT", t, op < 93 ? NULL : "{}",
                     NULL, NULL);
            CHECK_INT(a.status, 200);
        } else if (op < 99) {       /* a retrain publishes a new model */
            F.U[u % CU][step % FD] += 0.5f;
            publish_model(++version, 0, 0);
            a = (struct reply){0};
        } else {                    /* a rollback: a lower version */
            F.U[u % CU][step % FD] -= 0.25f;
            publish_model(version > 1 ? version - 1 : 1, 0, 1);
            a = (struct reply){0};
        }
        reply_free(&a);
        for (int w = 0; w <= CU; w++)
            for (int x = 0; x < 3; x++) {
                wrote_since[w][x] = 1;
                edited_since[w][x] |= op >= 85 && op < 95;
            }
    }
    /* The walk used the cache, also across other users' writes. */
    printf("  %d reads, %d from the cache, %d of them after a write, %d "
           "after an item edit\n", reads, hits, hits_after_writes,
           hits_after_edits);
    CHECK(hits > reads / 10);
    CHECK(hits_after_writes > 5);
    CHECK(hits_after_edits > 5);
    printf("  %d similar-items reads, %d from the cache\n", similar_reads,
           similar_hits);
    CHECK(similar_hits > 10);
    CHECK(batches > 50);
    CHECK(metric(F.api, "sgbd_reco_cache_hits_total") > hits + similar_hits);
    /* (batches add hits of their own, one a cached user) */
    CHECK(metric(F.api, "sgbd_reco_cache_entries") > 0);
    sgbd_api_free(plain);
    fx_teardown();
}

/* Item edits retire only the cached answers they change. */
static void test_api_cache_follows_item_edits(void)
{
    struct reply r, first;
    json_t *items;
    const char *top, *fourth;
    char t[64], b[160], top_id[32], fourth_id[32];
    long hits;
    double s[FC] = {0};

    CHECK_INT(fx_setup(1, NULL, NULL), 0);
    /* k = 100 takes every item u2 may get: an answer short of k. */
    first = call("GET", "/v1/users/u2/recommendations?k=100", NULL, NULL,
                 NULL);
    CHECK_INT(first.status, 200);
    CHECK(json_array_size(items_of(&first)) < 100);
    hits = metric(F.api, "sgbd_reco_cache_hits_total");
    r = call("GET", "/v1/users/u2/recommendations?k=100", NULL, NULL, NULL);
    CHECK_STR(r.text, first.text);
    CHECK_INT(metric(F.api, "sgbd_reco_cache_hits_total"), hits + 1);
    reply_free(&r);
    /* a new item with the lowest score of all still joins a short answer */
    for (int d = 0; d < FD; d++)
        s[d % FC] += F.U[2][d];
    snprintf(b, sizeof(b), "{\"features\": {\"image\": [%.3f, %.3f, "
             "%.3f, %.3f]}}", s[0] > 0 ? -9.0 : 9.0, s[1] > 0 ? -9.0 : 9.0,
             s[2] > 0 ? -9.0 : 9.0, s[3] > 0 ? -9.0 : 9.0);
    r = call("PUT", "/v1/items/low", b, NULL, NULL);
    CHECK_INT(r.status, 201);
    reply_free(&r);
    r = call("GET", "/v1/users/u2/recommendations?k=100", NULL, NULL, NULL);
    CHECK(contains(items_of(&r), "low"));
    items = items_of(&r);
    CHECK_STR(json_string_value(json_object_get(
                  json_array_get(items, json_array_size(items) - 1),
                  "item_id")), "low");
    reply_free(&r);
    reply_free(&first);

    /* k = 3: hiding an item outside the answer leaves it in the cache */
    first = call("GET", "/v1/users/u2/recommendations?k=4", NULL, NULL,
                 NULL);
    items = items_of(&first);
    top = json_string_value(json_object_get(json_array_get(items, 0),
                                            "item_id"));
    fourth = json_string_value(json_object_get(json_array_get(items, 3),
                                               "item_id"));
    snprintf(top_id, sizeof(top_id), "%s", top);
    snprintf(fourth_id, sizeof(fourth_id), "%s", fourth);
    reply_free(&first);
    first = call("GET", "/v1/users/u2/recommendations?k=3", NULL, NULL,
                 NULL);
    r = call("DELETE", "/v1/items/low", NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    hits = metric(F.api, "sgbd_reco_cache_hits_total");
    r = call("GET", "/v1/users/u2/recommendations?k=3", NULL, NULL, NULL);
    CHECK_STR(r.text, first.text);
    CHECK_INT(metric(F.api, "sgbd_reco_cache_hits_total"), hits + 1);
    reply_free(&r);
    /* hiding its best item retires it */
    snprintf(t, sizeof(t), "/v1/items/%s", top_id);
    r = call("DELETE", t, NULL, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    r = call("GET", "/v1/users/u2/recommendations?k=3", NULL, NULL, NULL);
    CHECK(!contains(items_of(&r), top_id));
    CHECK(contains(items_of(&r), fourth_id));   /* moved up into the 3 */
    CHECK_INT(metric(F.api, "sgbd_reco_cache_hits_total"), hits + 1);
    reply_free(&r);
    /* an item given a vector that ranks first enters */
    snprintf(b, sizeof(b), "{\"features\": {\"image\": [%.3f, %.3f, "
             "%.3f, %.3f]}}", s[0] > 0 ? 9.0 : -9.0, s[1] > 0 ? 9.0 : -9.0,
             s[2] > 0 ? 9.0 : -9.0, s[3] > 0 ? 9.0 : -9.0);
    r = call("PUT", "/v1/items/low", b, NULL, NULL);
    CHECK_INT(r.status, 200);
    reply_free(&r);
    r = call("GET", "/v1/users/u2/recommendations?k=3", NULL, NULL, NULL);
    CHECK_STR(json_string_value(json_object_get(
                  json_array_get(items_of(&r), 0), "item_id")), "low");
    reply_free(&r);
    reply_free(&first);
    fx_teardown();
}

int main(void)
{
    RUN(test_api_recommend_matches_brute_force);
    RUN(test_api_overlay_items_rank_as_brute_force);
    RUN(test_api_unknown_user_gets_popular_fallback);
    RUN(test_api_exclude_and_k_bounds);
    RUN(test_api_batch_equals_single_requests);
    RUN(test_api_similar_items_by_cosine);
    RUN(test_api_new_item_recommendable_at_once);
    RUN(test_api_delete_hides_at_once);
    RUN(test_api_interactions_excluded_at_once);
    RUN(test_api_bad_input_gets_clear_errors);
    RUN(test_api_declared_body_too_large_refused_early);
    RUN(test_api_tokens_guard_write_and_admin_routes);
    RUN(test_api_no_model_then_ready);
    RUN(test_api_retrain_hooks_and_metrics);
    RUN(test_api_cached_answers_equal_scored_ones);
    RUN(test_api_cache_follows_item_edits);
    return harness_finish();
}
