/*
 * loadgen.c - a fixed-rate HTTP/1.1 keep-alive load generator with a
 * latency histogram (Debian's wrk has no -R).
 *
 *     loadgen [-c CONNS] [-r RATE] [-d SECONDS] [-w WARMUP_S] [-u USERS]
 *             [-k K] HOST:PORT
 *
 * Sends GET /v1/users/u<N>/recommendations?k=K for random N < USERS at
 * RATE requests per second in total (open loop: request j is due at
 * start + j / RATE whatever happened before), over CONNS keep-alive
 * connections with at most one request in flight each. A due request
 * waits for a free connection; its latency runs from the time it was due,
 * not from when it was sent, so a stalled server shows in the figures
 * (no coordinated omission). The first WARMUP_S seconds are not counted.
 *
 * Prints one JSON object: requests, errors (non-2xx or broken
 * connections), achieved rate, and latency percentiles in milliseconds,
 * then a log-scale histogram (4 buckets per doubling) on stderr.
 *
 * Build: cc -O2 loadgen.c -o loadgen (tests/bench/serve.sh does it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define RESP_MAX 65536
#define HIST_BUCKETS 128            /* 4 per doubling from 1 us */

struct conn {
    int fd;
    int busy;
    double due_ns;                  /* when its request was due */
    size_t have, need;              /* bytes read; full response size */
    char buf[RESP_MAX];
};

struct opts {
    int conns;
    double rate, seconds, warmup;
    unsigned long users;
    int k;
    char host[256], port[16];
};

struct stats {
    double *lat_us;                 /* (cap) latencies counted */
    size_t n, cap;
    unsigned long errors, sent;
    unsigned long hist[HIST_BUCKETS];
};

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    int c;
    char *colon;

    *o = (struct opts){.conns = 16, .rate = 1000, .seconds = 10,
                       .warmup = 1, .users = 19445, .k = 20};
    while ((c = getopt(argc, argv, "c:r:d:w:u:k:")) != -1) {
        switch (c) {
        case 'c': o->conns = atoi(optarg); break;
        case 'r': o->rate = atof(optarg); break;
        case 'd': o->seconds = atof(optarg); break;
        case 'w': o->warmup = atof(optarg); break;
        case 'u': o->users = strtoul(optarg, NULL, 10); break;
        case 'k': o->k = atoi(optarg); break;
        default: return -1;
        }
    }
    if (optind != argc - 1 || o->conns < 1 || o->conns > MAX_CONNS ||
        o->rate <= 0 || o->seconds <= 0 || o->users == 0 || o->k < 1)
        return -1;
    colon = strrchr(argv[optind], ':');
    if (!colon || (size_t)(colon - argv[optind]) >= sizeof(o->host) ||
        strlen(colon + 1) >= sizeof(o->port))
        return -1;
    memcpy(o->host, argv[optind], (size_t)(colon - argv[optind]));
    strcpy(o->port, colon + 1);
    return 0;
}

static int connect_to(const struct opts *o)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int fd, one = 1;

    if (getaddrinfo(o->host, o->port, &hints, &ai) != 0)
        return -1;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int send_request(struct conn *c, const struct opts *o,
                        unsigned long user)
{
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "GET /v1/users/u%lu/recommendations?k=%d HTTP/1.1\r\n"
                     "Host: %s:%s\r\n\r\n", user, o->k, o->host, o->port);

    c->have = 0;
    c->need = 0;
    return send(c->fd, req, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* Size of the whole response once its headers are in; 0 before. */
static size_t response_size(const struct conn *c)
{
    const char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
    const char *cl;

    if (!end)
        return 0;
    cl = memmem(c->buf, (size_t)(end - c->buf), "Content-Length:", 15);
    if (!cl)
        cl = memmem(c->buf, (size_t)(end - c->buf), "content-length:", 15);
    return (size_t)(end - c->buf) + 4 + (cl ? strtoul(cl + 15, NULL, 10) : 0);
}

static void record(struct stats *s, double us)
{
    int b = us < 1 ? 0 : (int)(4 * log2(us));

    if (s->n < s->cap)
        s->lat_us[s->n++] = us;
    s->hist[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]++;
}

/* Read what is there; 1 when the response is complete, -1 on error. */
static int on_readable(struct conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->have, RESP_MAX - c->have,
                     MSG_DONTWAIT);

    if (n <= 0)
        return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    c->have += (size_t)n;
    if (!c->need)
        c->need = response_size(c);
    if (c->need > RESP_MAX)
        return -1;
    return c->need && c->have >= c->need ? 1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const struct stats *s, double p)
{
    size_t i = (size_t)ceil(p / 100 * (double)s->n);

    return s->n ? s->lat_us[i ? i - 1 : 0] / 1000 : 0;
}

static void report(struct stats *s, const struct opts *o, double elapsed_s)
{
    qsort(s->lat_us, s->n, sizeof(double), cmp_double);
    printf("{\"rate\": %.0f, \"achieved\": %.1f, \"conns\": %d, "
           "\"requests\": %zu, \"errors\": %lu, \"p50_ms\": %.3f, "
           "\"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, "
           "\"max_ms\": %.3f}\n", o->rate, (double)s->n / elapsed_s,
           o->conns, s->n, s->errors, pct(s, 50), pct(s, 90), pct(s, 99),
           pct(s, 99.9), s->n ? s->lat_us[s->n - 1] / 1000 : 0);
    for (int b = 0; b < HIST_BUCKETS; b++)
        if (s->hist[b])
            fprintf(stderr, "  %10.3f ms  %lu\n",
                    pow(2, (b + 1) / 4.0) / 1000, s->hist[b]);
}

/* Complete c's response: count it when past warm-up, free the conn. */
static void complete(struct conn *c, struct stats *s, double t_count)
{
    int ok = c->have >= 12 && c->buf[9] == '2';

    if (c->due_ns >= t_count) {
        if (ok)
            record(s, (now_ns() - c->due_ns) / 1000);
        else
            s->errors++;
    }
    c->busy = 0;
}

struct run {
    struct opts o;
    struct conn *c;
    struct stats s;
    int ep;
    unsigned long long rng;
};

static unsigned long next_user(struct run *r)
{
    r->rng = r->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned long)((r->rng >> 33) % r->o.users);
}

/* Send every due request that finds a free connection. */
static void send_due(struct run *r, double t0, double *next_due,
                     double t_end)
{
    double gap = 1e9 / r->o.rate;

    for (int i = 0; i < r->o.conns && *next_due <= now_ns() &&
                    *next_due < t_end; i++) {
        struct conn *c = &r->c[i];
        if (c->busy || c->fd < 0)
            continue;
        c->busy = 1;
        c->due_ns = *next_due;
        *next_due += gap;
        r->s.sent++;
        if (send_request(c, &r->o, next_user(r)) != 0) {
            r->s.errors++;
            c->busy = 0;
        }
    }
    (void)t0;
}

static int open_conns(struct run *r)
{
    for (int i = 0; i < r->o.conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        r->c[i].fd = connect_to(&r->o);
        if (r->c[i].fd < 0 ||
            epoll_ctl(r->ep, EPOLL_CTL_ADD, r->c[i].fd, &ev) != 0) {
            fprintf(stderr, "loadgen: cannot connect to %s:%s\n", r->o.host,
                    r->o.port);
            return -1;
        }
    }
    return 0;
}

static void reopen(struct run *r, uint32_t i)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};

    epoll_ctl(r->ep, EPOLL_CTL_DEL, r->c[i].fd, NULL);
    close(r->c[i].fd);
    r->c[i].fd = connect_to(&r->o);
    if (r->c[i].fd >= 0 &&
        epoll_ctl(r->ep, EPOLL_CTL_ADD, r->c[i].fd, &ev) != 0) {
        close(r->c[i].fd);
        r->c[i].fd = -1;
    }
}

static void drive(struct run *r)
{
    double t0 = now_ns(), t_count = t0 + r->o.warmup * 1e9;
    double t_end = t_count + r->o.seconds * 1e9, next_due = t0;
    struct epoll_event evs[64];

    while (now_ns() < t_end + 1e9) {
        double wait_ns = next_due - now_ns();
        struct timespec ts = {0, 0};
        int n;

        send_due(r, t0, &next_due, t_end);
        wait_ns = next_due - now_ns();
        if (wait_ns > 0 && next_due < t_end) {
            ts.tv_sec = (time_t)(wait_ns / 1e9);
            ts.tv_nsec = (long)fmod(wait_ns, 1e9);
        } else if (next_due >= t_end) {
            ts.tv_nsec = 1000000;
        }
        n = epoll_pwait2(r->ep, evs, 64, &ts, NULL);
        for (int e = 0; e < n; e++) {
            struct conn *c = &r->c[evs[e].data.u32];
            int st;
            if (!c->busy) {
                /* an idle keep-alive connection the server closed after
                 * its idle timeout: not a failed request */
                reopen(r, evs[e].data.u32);
                continue;
            }
            st = on_readable(c);
            if (st == 1)
                complete(c, &r->s, t_count);
            if (st < 0) {
                r->s.errors++;
                epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->busy = 0;
            }
        }
        if (next_due >= t_end) {
            int busy = 0;
            for (int i = 0; i < r->o.conns; i++)
                busy |= r->c[i].busy;
            if (!busy)
                break;
        }
    }
}

int main(int argc, char **argv)
{
    struct run r = {0};

    if (parse_opts(argc, argv, &r.o) != 0) {
        fprintf(stderr, "usage: loadgen [-c CONNS] [-r RATE] [-d SECONDS] "
                "[-w WARMUP_S] [-u USERS] [-k K] HOST:PORT\n");
        return 2;
    }
    r.c = calloc((size_t)r.o.conns, sizeof(*r.c));
    r.s.cap = (size_t)(r.o.rate * r.o.seconds * 1.1) + 16;
    r.s.lat_us = malloc(r.s.cap * sizeof(double));
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    r.rng = 0x9e3779b97f4a7c15ULL;
    if (!r.c || !r.s.lat_us || r.ep < 0 || open_conns(&r) != 0)
        return 1;
    drive(&r);
    report(&r.s, &r.o, r.o.seconds);
    return 0;
}
