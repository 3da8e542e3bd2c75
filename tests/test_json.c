/* test_json.c - the response writer: numbers and strings. */
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

/* Strings: every byte sequence gives valid JSON that reads back as the
 * input, each byte of invalid UTF-8 as U+FFFD; plain ASCII comes out as
 * it is, quotes around it. */
static void test_json_strings_escape_every_byte(void)
{
    static const char *const pieces[] = {
        "a", "Z", "0", " ", "~", "\"", "\\", "/", "\x01", "\x1f", "\x7f",
        "\n", "\t", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\xc3", "\xff", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"};
    static const int valid[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
    unsigned seed = 12345;

    for (int round = 0; round < 3000; round++) {
        char in[256] = "", want[512] = "";
        size_t n = 0, wn = 0, len;
        int all_plain = 1, np = (int)(rand_r(&seed) % 12);
        struct sgbd_json w;
        json_t *back;
        char *text;

        for (int p = 0; p < np; p++) {
            int k = (int)(rand_r(&seed) % (sizeof(pieces) / sizeof(*pieces)));
            size_t pl = strlen(pieces[k]);

            memcpy(in + n, pieces[k], pl);
            n += pl;
            if (valid[k]) {
                memcpy(want + wn, pieces[k], pl);
                wn += pl;
            } else {            /* no piece here starts a valid sequence
                                   inside it: each byte is replaced */
                for (size_t b = 0; b < pl; b++, wn += 3)
                    memcpy(want + wn, "\xef\xbf\xbd", 3);
            }
            all_plain &= k < 8 && k != 5 && k != 6;
        }
        sgbd_json_init(&w);
        sgbd_json_begin_array(&w);
        sgbd_json_strn(&w, in, n);
        sgbd_json_end(&w);
        text = sgbd_json_take(&w, &len);
        CHECK(text != NULL);
        for (size_t i = 0; i < len; i++)
            CHECK((unsigned char)text[i] >= 0x20);
        if (all_plain) {
            CHECK_INT(len, n + 4);
            CHECK(memcmp(text + 2, in, n) == 0);
        }
        back = json_loadb(text, len, 0, NULL);
        CHECK(back != NULL);
        CHECK_INT(json_string_length(json_array_get(back, 0)), wn);
        CHECK(memcmp(json_string_value(json_array_get(back, 0)), want, wn) ==
              0);
        json_decref(back);
        free(text);
    }
}

int main(void)
{
    RUN(test_json_float_round_trips);
    RUN(test_json_float_non_finite_is_null);
    RUN(test_json_num_keeps_timestamps);
    RUN(test_json_strings_escape_every_byte);
    return harness_finish();
}
