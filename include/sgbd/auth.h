/*
 * auth.h - bearer tokens for the write and admin routes.
 *
 * Tokens are read from files named in the configuration ([server]
 * write_token_file, admin_token_file): one token a line, surrounding
 * blanks ignored, empty lines and lines starting with '#' skipped.
 * Write routes need a token as soon as either file is configured, and an
 * admin token opens them too. Admin routes need a token from the admin
 * file when it is set, else one from the write file. With no file at all
 * every route is open (the daemon binds to 127.0.0.1 by default).
 *
 * A presented token is compared with every configured one in time that
 * depends only on the presented token's length, never on where it first
 * differs. Tokens are never logged, and no error message quotes one.
 * A struct sgbd_auth is immutable: SIGHUP builds a new one and swaps it.
 */
#ifndef SGBD_AUTH_H
#define SGBD_AUTH_H

#include <stddef.h>

#define SGBD_AUTH_MAX_TOKENS 64
#define SGBD_AUTH_TOKEN_MAX 256

enum sgbd_auth_level {
    SGBD_AUTH_READ,      /* recommendations, item reads, status */
    SGBD_AUTH_WRITE,     /* item upserts and deletes, interactions */
    SGBD_AUTH_ADMIN,     /* retrain, rollback */
};

enum sgbd_auth_result {
    SGBD_AUTH_OK = 0,
    SGBD_AUTH_MISSING,   /* no bearer token: 401 */
    SGBD_AUTH_DENIED,    /* a token that opens nothing here: 403 */
};

struct sgbd_auth;

/*
 * Load the token files; either path may be NULL or "" (none). Errors,
 * with the file named in the detail: -errno (unreadable), SGBD_E_CONFIG
 * (a file without tokens, a token longer than SGBD_AUTH_TOKEN_MAX or
 * with control characters, more than SGBD_AUTH_MAX_TOKENS).
 */
int sgbd_auth_load(struct sgbd_auth **out, const char *write_file,
                   const char *admin_file);

void sgbd_auth_free(struct sgbd_auth *a);

/* Whether level needs a token at all. */
int sgbd_auth_required(const struct sgbd_auth *a, enum sgbd_auth_level level);

/*
 * Check the Authorization header value (NULL when absent) for level.
 * "Bearer <token>" (scheme case-insensitive) is the only form accepted.
 */
enum sgbd_auth_result sgbd_auth_check(const struct sgbd_auth *a,
                                      enum sgbd_auth_level level,
                                      const char *authorization);

#endif
