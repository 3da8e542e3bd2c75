/*
 * fuzz_config.c - the configuration reader (config.h) on hostile input:
 * the INI file of sgbd_config_load and the "section.key=value" overrides
 * of sgbd_config_set.
 *
 * Input: SET '\0' FILE. SET (up to the first NUL) is split at its first
 * '=' into name and value for sgbd_config_set; FILE (the rest) is the INI
 * file, reached through a memfd path. Without a NUL the whole input is
 * the file.
 *
 * Invariants: a failed load or set changes nothing and names the file or
 * option in a short one-line detail; a loaded or set configuration has
 * every string NUL-terminated and passes the cross-option checks; loading
 * the same file again changes nothing more; and the file and the command
 * line agree: when a set succeeds or fails, "[section]\nkey=value\n" does
 * the same (for values inih passes through unchanged).
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "sgbd/config.h"

static struct fuzz_file file, line_file;
static struct sgbd_config defaults;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    fuzz_file_init(&file, "fuzz_config");
    fuzz_file_init(&line_file, "fuzz_config_line");
    sgbd_config_defaults(&defaults);
    return 0;
}

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

/* What every accepted configuration satisfies. */
static void check_config(const struct sgbd_config *c)
{
    const char *fixed;

    FUZZ_CHECK(TERMINATED(c->listen) && TERMINATED(c->write_token_file) &&
               TERMINATED(c->admin_token_file) && TERMINATED(c->db_path) &&
               TERMINATED(c->model) && TERMINATED(c->optimizer) &&
               TERMINATED(c->valid_metric) && TERMINATED(c->topk) &&
               TERMINATED(c->log_level));
    FUZZ_CHECK(strchr(c->listen, ':') != NULL);
    FUZZ_CHECK(strcmp(c->optimizer, "adam") == 0 ||
               strcmp(c->optimizer, "mg") == 0 ||
               strcmp(c->optimizer, "sam") == 0 ||
               strcmp(c->optimizer, "sgbd") == 0);
    FUZZ_CHECK(c->http_threads >= 1 && c->max_k >= 1 &&
               c->max_batch_users >= 1 && c->max_body_bytes >= 1);
    fixed = NULL;
    if (sgbd_config_fixed_differs(&defaults, c, &fixed))
        FUZZ_CHECK(fixed != NULL && strchr(fixed, '.') != NULL);
}

static void load(const uint8_t *data, size_t size)
{
    struct sgbd_config cfg = defaults, again;
    int rc;

    fuzz_file_set(&file, data, size);
    rc = sgbd_config_load(&cfg, file.path);
    if (rc != 0) {
        FUZZ_CHECK(rc == SGBD_E_CONFIG);
        fuzz_check_detail(rc, file.path);
        FUZZ_CHECK(memcmp(&cfg, &defaults, sizeof(cfg)) == 0);
        return;
    }
    check_config(&cfg);
    again = cfg;
    FUZZ_CHECK(sgbd_config_load(&again, file.path) == 0);
    FUZZ_CHECK(memcmp(&again, &cfg, sizeof(cfg)) == 0);
}

/* Whether "[section]\nkey=value" reaches inih's callback as exactly
 * (section, key, value): plain names, a short value of printable ASCII
 * without comment characters or surrounding blanks. */
static int ini_safe(const char *name, const char *value)
{
    const char *dot = strchr(name, '.');
    size_t n = strlen(value);

    if (!dot || dot == name || dot[1] == '\0' || strlen(name) > 60 || n > 60)
        return 0;
    for (const char *p = name; *p; p++)
        if (p != dot && !(islower((unsigned char)*p) ||
                          isdigit((unsigned char)*p) || *p == '_'))
            return 0;
    if (n > 0 && (isspace((unsigned char)value[0]) ||
                  isspace((unsigned char)value[n - 1])))
        return 0;
    for (const char *p = value; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == ';' || *p == '#')
            return 0;
    return 1;
}

/* The same option as a one-line file: same outcome, same result. */
static void check_as_file(const char *name, const char *value, int set_rc,
                          const struct sgbd_config *set_cfg)
{
    struct sgbd_config cfg = defaults;
    const char *dot = strchr(name, '.');
    char text[160];
    int n, rc;

    n = snprintf(text, sizeof(text), "[%.*s]\n%s=%s\n", (int)(dot - name),
                 name, dot + 1, value);
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof(text));
    fuzz_file_set(&line_file, text, (size_t)n);
    rc = sgbd_config_load(&cfg, line_file.path);
    FUZZ_CHECK((rc == 0) == (set_rc == 0));
    if (rc == 0)
        FUZZ_CHECK(memcmp(&cfg, set_cfg, sizeof(cfg)) == 0);
}

static void set(const char *arg, size_t len)
{
    struct sgbd_config cfg = defaults;
    char *name = strndup(arg, len), *value;
    int rc;

    FUZZ_CHECK(name != NULL);
    value = strchr(name, '=');
    if (value)
        *value++ = '\0';
    else
        value = name + strlen(name);
    rc = sgbd_config_set(&cfg, name, value);
    if (rc != 0) {
        FUZZ_CHECK(rc == SGBD_E_CONFIG);
        fuzz_check_detail(rc, NULL);
        FUZZ_CHECK(memcmp(&cfg, &defaults, sizeof(cfg)) == 0);
    } else {
        check_config(&cfg);
    }
    if (ini_safe(name, value))
        check_as_file(name, value, rc, &cfg);
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);

    if (nul) {
        set((const char *)data, (size_t)(nul - data));
        load(nul + 1, size - (size_t)(nul - data) - 1);
    } else {
        load(data, size);
    }
    return 0;
}
