/*
 * http.h - the HTTP server: libmicrohttpd (0.9.75), and only here.
 *
 * MHD runs its own polling threads (MHD_USE_INTERNAL_POLLING_THREAD with
 * epoll; a pool of `threads` loops when threads > 1) and calls the API
 * (api.h) for each request: sgbd_api_begin as soon as the headers are in,
 * so a request that will be refused (401, 403, 404, 405, 413 from
 * Content-Length, 415) is answered before its body is read; then the body
 * is collected up to the API's limit and sgbd_api_handle answers. A
 * chunked body that overflows the limit is discarded as it arrives (never
 * buffered) and answered 413 at its end; past 16 times the limit the
 * connection is closed.
 *
 * Limits [serving.md section 4.3]: a connection limit (MHD_USE_ITC, so
 * excess connections wait in the listen backlog), memory per connection
 * for headers and the read buffer, an idle timeout, and a request
 * deadline: the whole of each request (headers and body) must arrive
 * within request_timeout_s of the connection's start or of the previous
 * response, else a reaper thread shuts the socket down. MHD's own timeout
 * only counts idleness, so without the deadline a client that sends one
 * byte a second would hold its connection forever.
 *
 * The URL is passed on still percent-encoded (an unescape callback that
 * does nothing), so an id may contain an encoded '/'; the API decodes.
 */
#ifndef SGBD_HTTP_H
#define SGBD_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct sgbd_api;
struct sgbd_http;

struct sgbd_http_opts {
    const char *listen;             /* "ADDR:PORT", "[ADDR6]:PORT"; port 0
                                       picks a free one */
    int threads;                    /* polling threads, >= 1 */
    int max_connections;
    int idle_timeout_s;             /* MHD_OPTION_CONNECTION_TIMEOUT */
    int request_timeout_s;          /* deadline for one whole request */
    size_t connection_memory;       /* bytes per connection */
};

/*
 * Listen and serve api. Errors: SGBD_E_CONFIG (bad listen address, detail
 * names it), -errno from bind (e.g. -EADDRINUSE), SGBD_E_UNSUPPORTED (MHD
 * lacks epoll), -ENOMEM. Logs ev=http_listening addr= port= threads=.
 */
int sgbd_http_start(struct sgbd_http **out, const struct sgbd_http_opts *o,
                    struct sgbd_api *api);

/* The port actually bound. */
uint16_t sgbd_http_port(const struct sgbd_http *h);

/*
 * GET /healthz through the listening socket itself (the loopback when it
 * listens on a wildcard address), as a client would: 0 when a 200 comes
 * back within timeout_ms, -ETIMEDOUT or -EIO otherwise. The watchdog pings
 * only after a successful probe, so a wedged server stops the pings.
 */
int sgbd_http_probe(struct sgbd_http *h, int timeout_ms);

/* Stop accepting connections; open ones keep being served. */
void sgbd_http_quiesce(struct sgbd_http *h);

/* Stop the server (closing every connection) and free it; NULL is fine. */
void sgbd_http_stop(struct sgbd_http *h);

#endif
