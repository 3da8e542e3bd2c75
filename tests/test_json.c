/* test_json.c - the response writer's number formatting. */
/* ctest: labels=unit timeout=30 */
#include <stdlib.h>

#include "harness.h"
#include "sgbd/json.h"

/* A float written as JSON must parse back to the same float: features
 * read with GET and PUT back must not drift (1.4140625 once came back as
 * 1.414062 with seven digits). */
static void test_json_float_round_trips(void)
{
    const float values[] = {1.4140625f, 0.1f, -3.3333333f, 1e-30f, 3.4e38f,
                            16777217.0f, 0.0f};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        struct sgbd_json w;
        size_t len;
        char *text;

        sgbd_json_init(&w);
        sgbd_json_float(&w, values[i]);
        text = sgbd_json_take(&w, &len);
        CHECK(text != NULL);
        float back = strtof(text, NULL);
        int same = back == values[i];
        if (!same)
            fprintf(stderr, "  %.9g written as %s\n", (double)values[i], text);
        free(text);
        sgbd_json_deinit(&w);
        CHECK(same);
    }
}

static void test_json_float_non_finite_is_null(void)
{
    struct sgbd_json w;
    size_t len;
    char *text;

    sgbd_json_init(&w);
    sgbd_json_float(&w, NAN);
    text = sgbd_json_take(&w, &len);
    CHECK(text != NULL);
    CHECK_STR(text, "null");
    free(text);
    sgbd_json_deinit(&w);
}

/* Doubles such as unix times in seconds keep their whole part: nine
 * digits once wrote 1796306108.5 as 1.79630611e+09. */
static void test_json_num_keeps_timestamps(void)
{
    struct sgbd_json w;
    size_t len;
    char *text;

    sgbd_json_init(&w);
    sgbd_json_num(&w, 1796306108.5);
    text = sgbd_json_take(&w, &len);
    CHECK(text != NULL);
    CHECK_STR(text, "1796306108.5");
    free(text);
    sgbd_json_deinit(&w);
}

int main(void)
{
    RUN(test_json_float_round_trips);
    RUN(test_json_float_non_finite_is_null);
    RUN(test_json_num_keeps_timestamps);
    return harness_finish();
}
