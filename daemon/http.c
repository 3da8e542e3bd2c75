/*
 * http.c - libmicrohttpd glue: request state, body limits, responses,
 * and the reaper that enforces the per-request deadline.
 */
#include "sgbd/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sgbd/api.h"
#include "sgbd/err.h"
#include "sgbd/log.h"

#define NO_DEADLINE INT64_MAX
#define DISCARD_FACTOR 16   /* chunked overflow: close past 16 x limit */

/* One connection, known to the reaper from start to close. */
struct conn {
    int fd;
    atomic_int_fast64_t deadline_ms; /* the request must be in by then */
    int shut;
    struct conn *prev, *next;
};

/* One request, from its headers to the completion callback. */
struct req_state {
    struct sgbd_api_request req;
    struct sgbd_api_response resp;
    struct conn *conn;
    char *body;
    size_t len, cap;
    uint64_t discarded;
    int refused;                    /* sgbd_api_begin answered already */
    int overflow, queued;
    int64_t t0_ns;
    double seconds;                 /* to the response being queued */
};

struct sgbd_http {
    struct MHD_Daemon *d;
    struct sgbd_api *api;
    int listen_fd;
    int quiesced;
    uint16_t port;
    struct sockaddr_storage addr;   /* where a probe connects */
    socklen_t addr_len;
    int64_t request_timeout_ms;
    int64_t max_body;

    pthread_mutex_t lock;           /* conns, reaper stop */
    pthread_cond_t wake;
    struct conn *conns;
    pthread_t reaper;
    int reaper_started, stopping;
    atomic_uint_fast64_t reaped;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ms(void)
{
    return now_ns() / 1000000;
}

/* ---- connections and the reaper ---- */

static void on_connection(void *cls, struct MHD_Connection *mc,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct sgbd_http *h = cls;
    struct conn *c = *socket_context;
    const union MHD_ConnectionInfo *info;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        info = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = calloc(1, sizeof(*c));
        if (!c || !info)
            return free(c);
        c->fd = info->connect_fd;
        atomic_init(&c->deadline_ms, now_ms() + h->request_timeout_ms);
        pthread_mutex_lock(&h->lock);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->lock);
        *socket_context = c;
        return;
    }
    if (!c)
        return;
    /* MHD closes the socket after this returns: unlink first, so the
     * reaper never touches a descriptor that may be reused. */
    pthread_mutex_lock(&h->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&h->lock);
    free(c);
    *socket_context = NULL;
}

static void *reaper_main(void *arg)
{
    struct sgbd_http *h = arg;
    struct timespec until;

    pthread_mutex_lock(&h->lock);
    while (!h->stopping) {
        int64_t now = now_ms();
        for (struct conn *c = h->conns; c; c = c->next) {
            if (c->shut || now <= atomic_load(&c->deadline_ms))
                continue;
            shutdown(c->fd, SHUT_RDWR);
            c->shut = 1;
            atomic_fetch_add(&h->reaped, 1);
            SGBD_DEBUG("http_request_timeout", "fd=%d", c->fd);
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000000L;
        if (until.tv_nsec >= 1000000000L)
            until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&h->wake, &h->lock, &until);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void set_deadline(struct conn *c, int64_t at)
{
    if (c)
        atomic_store(&c->deadline_ms, at);
}

/* ---- requests ---- */

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind,
                                   const char *key, const char *value)
{
    struct sgbd_api_request *req = cls;

    if (req->n_args == SGBD_API_MAX_ARGS)
        return MHD_NO;
    req->args[req->n_args].key = key;
    req->args[req->n_args++].value = value ? value : "";
    return MHD_YES;
}

/* The URL stays percent-encoded: the API decodes each part itself. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    return strlen(s);
}

static int64_t declared_length(struct MHD_Connection *mc)
{
    const char *cl = MHD_lookup_connection_value(
        mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(
        mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    char *end;
    long long v;

    if (te && strcasestr(te, "chunked"))
        return -1;
    if (!cl)
        return 0;
    errno = 0;
    v = strtoll(cl, &end, 10);
    return errno || end == cl || v < 0 ? INT64_MAX : v;
}

static struct req_state *state_new(struct sgbd_http *h,
                                   struct MHD_Connection *mc,
                                   const char *url, const char *method)
{
    struct req_state *st = calloc(1, sizeof(*st));
    const union MHD_ConnectionInfo *info;

    if (!st)
        return NULL;
    st->t0_ns = now_ns();
    st->req.method = method;
    st->req.path = url;
    MHD_get_connection_values(mc, MHD_GET_ARGUMENT_KIND, collect_arg,
                              &st->req);
    st->req.authorization = MHD_lookup_connection_value(
        mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    st->req.content_type = MHD_lookup_connection_value(
        mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    st->req.content_length = declared_length(mc);
    info = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    st->conn = info ? info->socket_context : NULL;
    return st;
}

static enum MHD_Result queue(struct MHD_Connection *mc, struct req_state *st)
{
    static char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":"
                             "\"no response\"},\"model_version\":0}";
    struct sgbd_api_response *r = &st->resp;
    struct MHD_Response *m;
    enum MHD_Result ok;
    char ver[24];

    if (r->status < 100 || !r->body) {
        free(r->body);
        r->body = NULL;
        r->status = 500;
        m = MHD_create_response_from_buffer(strlen(fallback), fallback,
                                            MHD_RESPMEM_PERSISTENT);
    } else {
        m = MHD_create_response_from_buffer(r->len, r->body,
                                            MHD_RESPMEM_MUST_FREE);
        if (m)
            r->body = NULL; /* MHD frees it with the response */
    }
    if (!m)
        return MHD_NO;
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)r->model_version);
    MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type
                                            : "application/json");
    MHD_add_response_header(m, "X-Model-Version", ver);
    MHD_add_response_header(m, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->allow)
        MHD_add_response_header(m, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->challenge)
        MHD_add_response_header(m, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"sgbd\"");
    if (r->close)
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONNECTION, "close");
    ok = MHD_queue_response(mc, (unsigned)r->status, m);
    MHD_destroy_response(m);
    st->queued = 1;
    st->seconds = (double)(now_ns() - st->t0_ns) * 1e-9;
    set_deadline(st->conn, NO_DEADLINE);
    return ok;
}

/* Append a body chunk, or discard it past the limit. 0, or -1: close. */
static int take_chunk(struct sgbd_http *h, struct req_state *st,
                      const char *data, size_t n)
{
    if (!st->overflow && st->len + n > (uint64_t)h->max_body) {
        st->overflow = 1;
        free(st->body);
        st->body = NULL;
    }
    if (st->overflow) {
        st->discarded += n;
        return st->discarded > (uint64_t)h->max_body * DISCARD_FACTOR ? -1
                                                                      : 0;
    }
    if (st->len + n > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        char *p;
        while (cap < st->len + n)
            cap *= 2;
        if (!(p = realloc(st->body, cap)))
            return -1;
        st->body = p;
        st->cap = cap;
    }
    memcpy(st->body + st->len, data, n);
    st->len += n;
    return 0;
}

static enum MHD_Result answer(struct sgbd_http *h, struct MHD_Connection *mc,
                              struct req_state *st)
{
    if (st->overflow) {
        sgbd_api_error(h->api, &st->resp, 413, "body_too_large",
                       "the body is larger than %lld bytes",
                       (long long)h->max_body);
        st->resp.close = 1;
    } else {
        st->req.body = st->body;
        st->req.body_len = st->len;
        sgbd_api_handle(h->api, &st->req, &st->resp);
    }
    return queue(mc, st);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *data_size, void **req_cls)
{
    struct sgbd_http *h = cls;
    struct req_state *st = *req_cls;

    /*
     * MHD 0.9.75 closes the connection after any response queued in this
     * first call ("early" response: the body is never read). So only a
     * refusal of a request that carries a body is sent now; everything
     * else is answered at the final call and keeps the connection alive.
     */
    if (!st) {
        if (!(st = state_new(h, mc, url, method)))
            return MHD_NO;
        *req_cls = st;
        st->refused = sgbd_api_begin(h->api, &st->req, &st->resp);
        if (st->refused && st->req.content_length != 0)
            return queue(mc, st);
        if (st->refused || st->req.content_length == 0)
            return MHD_YES;
        if (st->req.content_length > 0 &&
            (size_t)st->req.content_length <= (size_t)h->max_body &&
            !(st->body = malloc((size_t)st->req.content_length + 1)))
            return MHD_NO;
        st->cap = st->body ? (size_t)st->req.content_length + 1 : 0;
        return MHD_YES;
    }
    if (st->queued)
        return MHD_YES;
    if (*data_size) {
        if (take_chunk(h, st, data, *data_size) != 0)
            return MHD_NO;
        *data_size = 0;
        return MHD_YES;
    }
    set_deadline(st->conn, NO_DEADLINE);
    if (st->refused)
        return queue(mc, st);
    return answer(h, mc, st);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode code)
{
    struct sgbd_http *h = cls;
    struct req_state *st = *req_cls;

    if (!st)
        return;
    if (!st->queued)
        st->seconds = (double)(now_ns() - st->t0_ns) * 1e-9;
    sgbd_api_finish(h->api, &st->req, &st->resp, st->seconds);
    set_deadline(st->conn, now_ms() + h->request_timeout_ms);
    sgbd_api_response_clear(&st->resp);
    free(st->body);
    free(st);
    *req_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[256], q[300];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    SGBD_DEBUG("mhd", "msg=%s", sgbd_log_quote(msg, q, sizeof(q)));
}

/* ---- the listening socket ---- */

static int parse_listen(const char *addr, char *host, size_t hn,
                        char *port, size_t pn)
{
    const char *colon = strrchr(addr, ':');
    const char *h0 = addr, *h1;

    if (!colon || !colon[1] || strlen(colon + 1) >= pn)
        return -1;
    h1 = colon;
    if (*h0 == '[') {
        if (h1[-1] != ']')
            return -1;
        h0++, h1--;
    }
    if ((size_t)(h1 - h0) >= hn || h1 == h0)
        return -1;
    memcpy(host, h0, (size_t)(h1 - h0));
    host[h1 - h0] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

/* A wildcard address is probed through the loopback of its family. */
static void probe_address(struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (a->sin_addr.s_addr == htonl(INADDR_ANY))
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
            a->sin6_addr = in6addr_loopback;
    }
}

static int open_listener(const char *addr, int *fd_out, uint16_t *port,
                         int *v6, struct sockaddr_storage *bound,
                         socklen_t *bound_len)
{
    struct addrinfo hints = {0}, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], svc[16];
    int fd, one = 1, rc;

    if (parse_listen(addr, host, sizeof(host), svc, sizeof(svc)) != 0)
        return sgbd_errf(SGBD_E_CONFIG, "[server] listen: '%s' is not "
                         "ADDR:PORT", addr);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, svc, &hints, &ai)) != 0)
        return sgbd_errf(SGBD_E_CONFIG, "[server] listen: '%s': %s", addr,
                         gai_strerror(rc));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
                             sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return sgbd_errf(rc, "listen on %s: %s", addr, sgbd_strerror(rc));
    }
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    *bound = ss;
    *bound_len = sl;
    probe_address(bound);
    *port = ntohs(ss.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
                      : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

/* ---- the server ---- */

static struct MHD_Daemon *start_mhd(struct sgbd_http *h,
                                    const struct sgbd_http_opts *o, int v6)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_LISTEN_SOCKET, h->listen_fd, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, o->max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)o->connection_memory,
         NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)keep_escaped, NULL},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL},
        {o->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         o->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };

    if (v6)
        flags |= MHD_USE_IPv6;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
}

int sgbd_http_start(struct sgbd_http **out, const struct sgbd_http_opts *o,
                    struct sgbd_api *api)
{
    struct sgbd_http *h;
    int v6 = 0, rc;

    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES)
        return sgbd_errf(SGBD_E_UNSUPPORTED, "libmicrohttpd was built "
                         "without epoll");
    if (!(h = calloc(1, sizeof(*h))))
        return -ENOMEM;
    h->api = api;
    h->max_body = sgbd_api_max_body(api);
    h->request_timeout_ms = (int64_t)o->request_timeout_s * 1000;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->wake, NULL);
    rc = open_listener(o->listen, &h->listen_fd, &h->port, &v6, &h->addr,
                       &h->addr_len);
    if (rc != 0) {
        sgbd_http_stop(h);
        return rc;
    }
    if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
        close(h->listen_fd);
        sgbd_http_stop(h);
        return sgbd_errf(-EAGAIN, "http: cannot start the reaper thread");
    }
    h->reaper_started = 1;
    h->d = start_mhd(h, o, v6);
    if (!h->d) {
        close(h->listen_fd);
        sgbd_http_stop(h);
        return sgbd_errf(-EINVAL, "http: libmicrohttpd did not start on %s "
                         "(threads=%d)", o->listen, o->threads);
    }
    SGBD_INFO("http_listening", "addr=%s port=%u threads=%d "
              "max_connections=%d", o->listen, h->port, o->threads,
              o->max_connections);
    *out = h;
    return 0;
}

uint16_t sgbd_http_port(const struct sgbd_http *h)
{
    return h->port;
}

void sgbd_http_quiesce(struct sgbd_http *h)
{
    if (!h || !h->d || h->quiesced)
        return;
    MHD_quiesce_daemon(h->d);
    h->quiesced = 1;
}

void sgbd_http_stop(struct sgbd_http *h)
{
    if (!h)
        return;
    if (h->d) {
        MHD_stop_daemon(h->d);
        /* MHD closes the listening socket unless it was quiesced, in
         * which case it handed it back to us. */
        if (h->quiesced)
            close(h->listen_fd);
    }
    if (h->reaper_started) {
        pthread_mutex_lock(&h->lock);
        h->stopping = 1;
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->reaper, NULL);
    }
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->wake);
    free(h);
}

/* Wait for fd to be ready for events until deadline; 0 or -ETIMEDOUT. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    struct pollfd p = {fd, events, 0};
    int64_t left = deadline_ms - now_ms();

    if (left <= 0 || poll(&p, 1, (int)left) != 1)
        return -ETIMEDOUT;
    return 0;
}

int sgbd_http_probe(struct sgbd_http *h, int timeout_ms)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n";
    int64_t deadline = now_ms() + timeout_ms;
    char buf[64];
    size_t got = 0;
    int fd, rc = -EIO;

    fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&h->addr, h->addr_len) != 0 &&
        (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) != 0))
        goto out;
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) !=
        (ssize_t)sizeof(req) - 1)
        goto out;
    while (got < 12) {
        ssize_t n;
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            rc = -ETIMEDOUT;
            goto out;
        }
        n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (n <= 0)
            goto out;
        got += (size_t)n;
    }
    buf[got] = '\0';
    rc = strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -EIO;
out:
    close(fd);
    return rc;
}
