/* auth.c - token files and constant-time bearer token checks. */
#include "sgbd/auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sgbd/err.h"

struct token_set {
    int n;
    size_t len[SGBD_AUTH_MAX_TOKENS];
    char tok[SGBD_AUTH_MAX_TOKENS][SGBD_AUTH_TOKEN_MAX];
};

struct sgbd_auth {
    struct token_set write, admin;
    int admin_own;       /* admin tokens come from their own file */
};

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
                     e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static int check_token(const char *t, const char *path, int line)
{
    size_t len = strlen(t);

    if (len >= SGBD_AUTH_TOKEN_MAX)
        return sgbd_errf(SGBD_E_CONFIG, "%s:%d: token longer than %d bytes",
                         path, line, SGBD_AUTH_TOKEN_MAX - 1);
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if (*p < 0x21 || *p == 0x7f)
            return sgbd_errf(SGBD_E_CONFIG, "%s:%d: token has a blank or "
                             "control character", path, line);
    return 0;
}

static int load_file(struct token_set *set, const char *path)
{
    char line[SGBD_AUTH_TOKEN_MAX + 64];
    int lineno = 0, rc = 0;
    FILE *f = fopen(path, "r");

    if (!f) {
        rc = -errno;
        return sgbd_errf(rc, "%s: %s", path, sgbd_strerror(rc));
    }
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        char *t = trim(line);
        lineno++;
        if (!*t || *t == '#')
            continue;
        if (set->n == SGBD_AUTH_MAX_TOKENS)
            rc = sgbd_errf(SGBD_E_CONFIG, "%s:%d: more than %d tokens", path,
                           lineno, SGBD_AUTH_MAX_TOKENS);
        else if ((rc = check_token(t, path, lineno)) == 0) {
            set->len[set->n] = strlen(t);
            memcpy(set->tok[set->n++], t, strlen(t) + 1);
        }
    }
    fclose(f);
    if (rc == 0 && set->n == 0)
        rc = sgbd_errf(SGBD_E_CONFIG, "%s: no tokens in the file", path);
    return rc;
}

int sgbd_auth_load(struct sgbd_auth **out, const char *write_file,
                   const char *admin_file)
{
    struct sgbd_auth *a = calloc(1, sizeof(*a));
    int rc = 0;

    if (!a)
        return -ENOMEM;
    if (write_file && *write_file)
        rc = load_file(&a->write, write_file);
    if (rc == 0 && admin_file && *admin_file) {
        rc = load_file(&a->admin, admin_file);
        a->admin_own = 1;
    }
    if (rc != 0) {
        sgbd_auth_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void sgbd_auth_free(struct sgbd_auth *a)
{
    if (!a)
        return;
    /* The tokens are secrets: do not leave them in freed memory. */
    explicit_bzero(a, sizeof(*a));
    free(a);
}

/* 1 when t (n bytes) equals one token of set; time depends on n only. */
static int matches(const struct token_set *set, const char *t, size_t n)
{
    unsigned found = 0;

    for (int k = 0; k < set->n; k++) {
        const char *ref = set->tok[k];
        unsigned diff = (unsigned)(set->len[k] ^ n);
        /* ref is NUL-padded to SGBD_AUTH_TOKEN_MAX; n is below it. */
        for (size_t i = 0; i < n; i++)
            diff |= (unsigned char)(ref[i] ^ t[i]);
        found |= diff == 0;
    }
    return (int)found;
}

int sgbd_auth_required(const struct sgbd_auth *a, enum sgbd_auth_level level)
{
    if (level == SGBD_AUTH_READ)
        return 0;
    if (level == SGBD_AUTH_ADMIN && a->admin_own)
        return 1;
    return a->write.n > 0 || a->admin.n > 0;
}

enum sgbd_auth_result sgbd_auth_check(const struct sgbd_auth *a,
                                      enum sgbd_auth_level level,
                                      const char *authorization)
{
    const char *t;
    size_t n;
    int ok;

    if (!sgbd_auth_required(a, level))
        return SGBD_AUTH_OK;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return SGBD_AUTH_MISSING;
    t = authorization + 7;
    while (*t == ' ')
        t++;
    n = strlen(t);
    while (n > 0 && t[n - 1] == ' ')
        n--;
    if (n == 0)
        return SGBD_AUTH_MISSING;
    if (n >= SGBD_AUTH_TOKEN_MAX)
        return SGBD_AUTH_DENIED;
    ok = matches(&a->admin, t, n);
    if (level == SGBD_AUTH_WRITE || !a->admin_own)
        ok |= matches(&a->write, t, n);
    return ok ? SGBD_AUTH_OK : SGBD_AUTH_DENIED;
}
