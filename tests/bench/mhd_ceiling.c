/*
 * mhd_ceiling.c - the serving ceiling: a minimal libmicrohttpd server that
 * answers every GET with one fixed 600-byte JSON body.
 *
 *     mhd_ceiling PORT [THREADS]
 *
 * It listens on 127.0.0.1 and starts MHD with the flags daemon/http.c uses (internal polling thread,
 * epoll, ITC, thread pool of THREADS when above 1, default 2 like
 * [server] http_threads) and adds the same response headers as the daemon
 * (Content-Type, X-Model-Version, Cache-Control), so the difference to
 * `sgbd serve` under the same load is the daemon's own work: routing,
 * scoring, JSON and metrics. Runs until SIGINT or SIGTERM.
 *
 * Build: cc -O2 mhd_ceiling.c $(pkg-config --cflags --libs libmicrohttpd)
 * (tests/bench/serve.sh does it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_LEN 600

static char body[BODY_LEN + 1];
static volatile sig_atomic_t stop;

/* A JSON object of exactly BODY_LEN bytes shaped like a recommendation. */
static void fill_body(void)
{
    size_t n = (size_t)snprintf(body, sizeof(body),
                                "{\"user_id\":\"u1\",\"model_version\":1,"
                                "\"items\":[");
    int item = 0;

    while (n + 40 < BODY_LEN) {
        n += (size_t)snprintf(body + n, sizeof(body) - n,
                              "%s{\"item_id\":\"i%d\",\"score\":0.%09d}",
                              item ? "," : "", item, 123456789 - item);
        item++;
    }
    n += (size_t)snprintf(body + n, sizeof(body) - n, "],\"pad\":\"");
    while (n < BODY_LEN - 2)
        body[n++] = 'x';
    body[n++] = '"';
    body[n++] = '}';
    body[n] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *data_size, void **req_cls)
{
    static int first;
    struct MHD_Response *r;
    enum MHD_Result ok;

    /* Answer at the second call, as the daemon does (keeps keep-alive). */
    if (*req_cls != &first) {
        *req_cls = &first;
        return MHD_YES;
    }
    *data_size = 0;
    r = MHD_create_response_from_buffer(BODY_LEN, body,
                                        MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    MHD_add_response_header(r, "X-Model-Version", "1");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ok = MHD_queue_response(mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

static void on_signal(int sig)
{
    stop = 1;
}

int main(int argc, char **argv)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct MHD_Daemon *d;

    if (port <= 0 || port > 65535 || threads < 1) {
        fprintf(stderr, "usage: mhd_ceiling PORT [THREADS]\n");
        return 2;
    }
    fill_body();
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request,
                         NULL, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_CONNECTION_LIMIT, 1024,
                         MHD_OPTION_CONNECTION_TIMEOUT, 30,
                         threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE
                                     : MHD_OPTION_END,
                         threads, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mhd_ceiling: cannot listen on port %d\n", port);
        return 1;
    }
    fprintf(stderr, "mhd_ceiling: port %d, %d threads, %zu-byte body\n",
            port, threads, strlen(body));
    while (!stop)
        pause();
    MHD_stop_daemon(d);
    return 0;
}
