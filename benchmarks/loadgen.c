/*
 * loadgen: an epoll load client for Server-Sent Events servers.
 *
 * It opens N HTTP/1.1 connections to GET <path>, decodes chunked or
 * identity bodies, parses every SSE event and records, per event, the
 * latency (receive time minus the publisher's CLOCK_MONOTONIC stamp carried
 * in the data) and the lateness (receive time minus the publish schedule).
 *
 * Event data format written by every benchmark server:
 *     "<seq> <scheduled_ns> <sent_ns> <padding...>"
 *
 * Modes
 *   stream (default): connect N, then POST <publish> on one extra connection,
 *       wait until every connection received --events events (or timeout /
 *       stall), print one JSON object.
 *   idle (--stages N1:S1,N2:S2): connect up to N1, hold S1 seconds, print a
 *       JSON line, then grow to N2, hold S2 seconds, and so on.
 *
 * Lines starting with '#' on stdout are progress markers for the driver:
 *   "#publish" right before the publish request is written,
 *   "#connected <k>" when the connections of idle stage k are open,
 *   "#stage <k>" at the end of an idle stage (the driver samples the server).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_FREE, ST_CONNECTING, ST_HEADERS, ST_BODY, ST_CLOSED };
enum { CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_DONE };

#define HDR_MAX 4096
#define LINE_MAX_ 2048

typedef struct {
    int fd;
    int state;
    int chunked;
    int ck_state;
    uint64_t ck_left;
    int hdr_len;
    char *hdr;
    int line_len;
    int line_overflow;
    int prev_cr;
    int has_data;
    long long ev_seq, ev_sched, ev_sent;
    char line[LINE_MAX_];
    long long events;
    long long comments;
    long long comments_mark;
    long long last_seq;
    long long gaps;
    int status;
} conn_t;

static conn_t *conns;
static int nconns_alloc;
static int epfd;
static struct sockaddr_in addr;
static const char *host = "127.0.0.1";
static int port = 8000;
static const char *path = "/sse";
static const char *publish = NULL;
static long long expect_events = 0;
static double timeout_s = 60.0;
static double stall_s = 10.0;
static int concurrency = 64;
static double connect_timeout_s = 120.0;
static char request[1024];
static int request_len;

static int64_t *lat;
static int64_t *late;
static size_t nsamples, cap_samples;
static long long total_events, total_comments, total_gaps;
static long long total_chunks; /* chunked bodies: data chunks, one per server write */
static int64_t first_sent = INT64_MAX, last_recv = 0, last_progress = 0;
static int64_t first_sched = INT64_MAX;
static int n_open, n_pending, n_ok, n_failed, n_closed_early;
static long long bytes_in;
static int n_complete;
static int publish_fd = -1;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void conn_close(conn_t *c, int early) {
    if (c->state == ST_FREE || c->state == ST_CLOSED) return;
    if (c->state == ST_CONNECTING || c->state == ST_HEADERS) {
        n_pending--;
        n_failed++;
    } else {
        n_open--;
        if (early) n_closed_early++;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = ST_CLOSED;
}

static int conn_open(conn_t *c) {
    memset(c, 0, offsetof(conn_t, line));
    c->last_seq = -1;
    c->hdr = malloc(HDR_MAX);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->state = ST_CLOSED;
        n_failed++;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) {
        close(fd);
        c->state = ST_CLOSED;
        n_failed++;
        return -1;
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    n_pending++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* One complete SSE line (without its terminator). */
static void sse_line(conn_t *c, int64_t t) {
    char *l = c->line;
    int n = c->line_len;
    if (c->line_overflow) n = LINE_MAX_ - 1;
    if (n == 0) {
        if (c->has_data) {
            c->events++;
            total_events++;
            if (c->events == expect_events) n_complete++;
            if (c->ev_seq != c->last_seq + 1) {
                c->gaps++;
                total_gaps++;
            }
            c->last_seq = c->ev_seq;
            if (c->ev_sent < first_sent) first_sent = c->ev_sent;
            if (c->ev_sched < first_sched) first_sched = c->ev_sched;
            last_recv = t;
            last_progress = t;
            if (nsamples < cap_samples) {
                lat[nsamples] = t - c->ev_sent;
                late[nsamples] = t - c->ev_sched;
                nsamples++;
            }
        }
        c->has_data = 0;
        return;
    }
    if (l[0] == ':') {
        c->comments++;
        total_comments++;
        return;
    }
    if (n >= 5 && memcmp(l, "data:", 5) == 0) {
        l[n] = 0;
        char *p = l + 5;
        if (*p == ' ') p++;
        if (!c->has_data) {
            char *e;
            c->ev_seq = strtoll(p, &e, 10);
            c->ev_sched = strtoll(e, &e, 10);
            c->ev_sent = strtoll(e, &e, 10);
        }
        c->has_data = 1;
    }
    /* id:, event:, retry: are accepted and ignored */
}

static void sse_feed(conn_t *c, const char *p, size_t n, int64_t t) {
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n' && c->prev_cr) {
            c->prev_cr = 0;
            continue;
        }
        c->prev_cr = 0;
        if (ch == '\r' || ch == '\n') {
            if (ch == '\r') c->prev_cr = 1;
            sse_line(c, t);
            c->line_len = 0;
            c->line_overflow = 0;
            continue;
        }
        /* fast path: copy until the next line terminator */
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        size_t take = j - i;
        if (c->line_len + take < LINE_MAX_ - 1) {
            memcpy(c->line + c->line_len, p + i, take);
            c->line_len += take;
        } else {
            size_t room = LINE_MAX_ - 1 - c->line_len;
            memcpy(c->line + c->line_len, p + i, room);
            c->line_len = LINE_MAX_ - 1;
            c->line_overflow = 1;
        }
        i = j - 1;
    }
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Body bytes: chunked decoding, then SSE. Returns -1 when the body ended. */
static int body_feed(conn_t *c, const char *p, size_t n, int64_t t) {
    if (!c->chunked) {
        sse_feed(c, p, n, t);
        return 0;
    }
    size_t i = 0;
    while (i < n) {
        switch (c->ck_state) {
        case CK_SIZE: {
            int h = hexval(p[i]);
            if (h >= 0) {
                c->ck_left = c->ck_left * 16 + h;
            } else if (p[i] == '\r') {
                c->ck_state = CK_SIZE_LF;
            } else if (p[i] == ';') {
                c->ck_state = CK_EXT;
            }
            i++;
            break;
        }
        case CK_EXT:
            if (p[i] == '\r') c->ck_state = CK_SIZE_LF;
            i++;
            break;
        case CK_SIZE_LF:
            i++;
            if (c->ck_left == 0) {
                c->ck_state = CK_DONE;
                return -1;
            }
            total_chunks++;
            c->ck_state = CK_DATA;
            break;
        case CK_DATA: {
            size_t take = n - i;
            if (take > c->ck_left) take = c->ck_left;
            sse_feed(c, p + i, take, t);
            c->ck_left -= take;
            i += take;
            if (c->ck_left == 0) c->ck_state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            i++;
            c->ck_state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            i++;
            c->ck_state = CK_SIZE;
            c->ck_left = 0;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

static int header_feed(conn_t *c, const char *p, size_t n, int64_t t) {
    size_t room = HDR_MAX - 1 - c->hdr_len;
    size_t take = n < room ? n : room;
    memcpy(c->hdr + c->hdr_len, p, take);
    int old = c->hdr_len;
    c->hdr_len += take;
    c->hdr[c->hdr_len] = 0;
    char *end = strstr(c->hdr, "\r\n\r\n");
    if (!end) {
        if (c->hdr_len >= HDR_MAX - 1) return -1;
        return 0;
    }
    size_t hlen = (end - c->hdr) + 4;
    c->status = atoi(c->hdr + 9);
    for (char *q = c->hdr; *q; q++)
        if (*q >= 'A' && *q <= 'Z') *q += 32;
    c->chunked = strstr(c->hdr, "transfer-encoding: chunked") != NULL;
    free(c->hdr);
    c->hdr = NULL;
    n_pending--;
    if (c->status != 200) {
        n_failed++;
        c->state = ST_CLOSED;
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        return 0;
    }
    n_ok++;
    n_open++;
    c->state = ST_BODY;
    size_t consumed = hlen - old;
    if (consumed < n) return body_feed(c, p + consumed, n - consumed, t);
    return 0;
}

static char rbuf[1 << 18];

static void on_event(conn_t *c, uint32_t evs) {
    if (c->state == ST_CONNECTING) {
        if (evs & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err || (evs & EPOLLERR)) {
                conn_close(c, 0);
                return;
            }
            if (write(c->fd, request, request_len) != request_len) {
                conn_close(c, 0);
                return;
            }
            c->state = ST_HEADERS;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
        return;
    }
    for (;;) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r > 0) {
            int64_t t = now_ns();
            bytes_in += r;
            int rc;
            if (c->state == ST_HEADERS)
                rc = header_feed(c, rbuf, r, t);
            else
                rc = body_feed(c, rbuf, r, t);
            if (rc < 0) {
                conn_close(c, 1);
                return;
            }
            if (c->state != ST_HEADERS && c->state != ST_BODY) return;
            if ((size_t)r < sizeof rbuf) return;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_close(c, 1);
        return;
    }
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_pcts(const char *name, int64_t *v, size_t n) {
    if (n == 0) {
        printf("\"%s\": null", name);
        return;
    }
    qsort(v, n, sizeof *v, cmp64);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
#define P(q) (v[(size_t)((q) * (n - 1))] / 1e6)
    printf("\"%s\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
           "\"max\": %.3f, \"mean\": %.3f}",
           name, P(0.5), P(0.9), P(0.99), P(0.999), v[n - 1] / 1e6, s / n / 1e6);
#undef P
}

static void pump(int64_t until, int (*done)(void)) {
    static struct epoll_event evs[1024];
    while (now_ns() < until) {
        if (done && done()) return;
        int64_t left_ms = (until - now_ns()) / 1000000;
        if (left_ms > 50) left_ms = 50;
        if (left_ms < 0) left_ms = 0;
        int k = epoll_wait(epfd, evs, 1024, (int)left_ms);
        for (int i = 0; i < k; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == NULL) {
                ssize_t r = read(publish_fd, rbuf, sizeof rbuf);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    epoll_ctl(epfd, EPOLL_CTL_DEL, publish_fd, NULL);
                    close(publish_fd);
                    publish_fd = -1;
                }
                continue;
            }
            on_event((conn_t *)ptr, evs[i].events);
        }
    }
}

/* Open connections until `target` exist, at most `concurrency` pending. */
static int next_conn;
static int target_conns;
static int connecting_done(void) {
    while (next_conn < target_conns && n_pending < concurrency) {
        conn_open(&conns[next_conn]);
        next_conn++;
    }
    return next_conn >= target_conns && n_pending == 0;
}

static int all_delivered(void) {
    if (n_open == 0) return 1;
    if (n_complete >= n_ok - n_closed_early) return 1;
    if (stall_s > 0 && total_events > 0 &&
        now_ns() - last_progress > (int64_t)(stall_s * 1e9))
        return 1;
    return 0;
}

static void open_conns(int target) {
    target_conns = target;
    pump(now_ns() + (int64_t)(connect_timeout_s * 1e9), connecting_done);
}

static void send_publish(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("publish connect");
        return;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     publish, host, port);
    if (write(fd, req, n) != n) perror("publish write");
    fcntl(fd, F_SETFL, O_NONBLOCK);
    publish_fd = fd;
    /* The response is not awaited; the socket is registered so it is drained. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv) {
    const char *stages = NULL;
    long long conns_n = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--host")) host = v, i++;
        else if (!strcmp(a, "--port")) port = atoi(v), i++;
        else if (!strcmp(a, "--path")) path = v, i++;
        else if (!strcmp(a, "--conns")) conns_n = atoll(v), i++;
        else if (!strcmp(a, "--events")) expect_events = atoll(v), i++;
        else if (!strcmp(a, "--publish")) publish = v, i++;
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v), i++;
        else if (!strcmp(a, "--stall")) stall_s = atof(v), i++;
        else if (!strcmp(a, "--concurrency")) concurrency = atoi(v), i++;
        else if (!strcmp(a, "--connect-timeout")) connect_timeout_s = atof(v), i++;
        else if (!strcmp(a, "--stages")) stages = v, i++;
        else {
            fprintf(stderr, "unknown argument %s\n", a);
            return 2;
        }
    }
    raise_nofile();
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, host, &addr.sin_addr);
    request_len = snprintf(request, sizeof request,
                           "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                           "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                           path, host, port);
    epfd = epoll_create1(EPOLL_CLOEXEC);

    if (stages) {
        /* idle mode */
        int maxn = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", stages);
        for (char *s = strtok(buf, ","); s; s = strtok(NULL, ",")) {
            int n = atoi(s);
            if (n > maxn) maxn = n;
        }
        nconns_alloc = maxn;
        conns = calloc(maxn, sizeof *conns);
        snprintf(buf, sizeof buf, "%s", stages);
        int k = 0;
        char *save = NULL;
        for (char *s = strtok_r(buf, ",", &save); s; s = strtok_r(NULL, ",", &save), k++) {
            int n = atoi(s);
            char *colon = strchr(s, ':');
            double hold = colon ? atof(colon + 1) : 20.0;
            int64_t t0 = now_ns();
            open_conns(n);
            double connect_s = (now_ns() - t0) / 1e9;
            printf("#connected %d\n", k);
            fflush(stdout);
            for (int i = 0; i < target_conns; i++) conns[i].comments_mark = conns[i].comments;
            pump(now_ns() + (int64_t)(hold * 1e9), NULL);
            int alive = 0, with_ka = 0;
            for (int i = 0; i < target_conns; i++)
                if (conns[i].state == ST_BODY) {
                    alive++;
                    if (conns[i].comments > conns[i].comments_mark) with_ka++;
                }
            printf("#stage %d\n", k);
            printf("{\"stage\": %d, \"target\": %d, \"connected\": %d, \"failed\": %d, "
                   "\"alive\": %d, \"closed_early\": %d, \"with_keepalive\": %d, "
                   "\"hold_s\": %.1f, \"connect_s\": %.3f, \"client_cpu_s\": %.3f}\n",
                   k, n, n_ok, n_failed, alive, n_closed_early, with_ka, hold, connect_s,
                   cpu_s());
            fflush(stdout);
            pump(now_ns() + (int64_t)500e6, NULL); /* let the driver sample */
        }
        return 0;
    }

    /* stream mode */
    nconns_alloc = conns_n;
    conns = calloc(conns_n, sizeof *conns);
    cap_samples = (size_t)conns_n * (size_t)(expect_events > 0 ? expect_events : 1);
    if (cap_samples > 32u * 1000 * 1000) cap_samples = 32u * 1000 * 1000;
    lat = malloc(cap_samples * sizeof *lat);
    late = malloc(cap_samples * sizeof *late);
    int64_t t0 = now_ns();
    open_conns(conns_n);
    double connect_s = (now_ns() - t0) / 1e9;
    int connected = n_ok;
    printf("#publish\n");
    fflush(stdout);
    double c0 = cpu_s();
    int64_t tp = now_ns();
    last_progress = tp;
    if (publish) send_publish();
    pump(tp + (int64_t)(timeout_s * 1e9), all_delivered);
    int64_t tend = now_ns();
    double c1 = cpu_s();
    long long expected = (long long)connected * expect_events;
    long long undelivered = 0;
    int complete = 1;
    int exact = 0; /* connections with every event exactly once, in order */
    for (int i = 0; i < conns_n; i++) {
        if (conns[i].status != 200) continue;
        if (conns[i].events < expect_events) {
            undelivered += expect_events - conns[i].events;
            complete = 0;
        }
        if (conns[i].events == expect_events && conns[i].gaps == 0) exact++;
    }
    double span = last_recv > first_sent ? (last_recv - first_sent) / 1e9 : 0;
    double wall = (tend - tp) / 1e9;
    printf("{\"connected\": %d, \"failed\": %d, \"closed_early\": %d, "
           "\"connect_s\": %.3f, \"expected\": %lld, \"delivered\": %lld, "
           "\"undelivered\": %lld, \"gaps\": %lld, \"complete\": %s, \"exact\": %d, "
           "\"comments\": %lld, \"chunks\": %lld, \"span_s\": %.4f, \"wall_s\": %.4f, "
           "\"events_per_s\": %.1f, \"bytes_in\": %lld, "
           "\"client_cpu_s\": %.3f, \"client_cpu_pct\": %.1f, ",
           connected, n_failed, n_closed_early, connect_s, expected, total_events,
           undelivered, total_gaps, complete ? "true" : "false", exact, total_comments, total_chunks, span,
           wall, span > 0 ? total_events / span : 0.0, bytes_in, c1 - c0,
           wall > 0 ? 100.0 * (c1 - c0) / wall : 0.0);
    print_pcts("latency_ms", lat, nsamples);
    printf(", ");
    print_pcts("lateness_ms", late, nsamples);
    printf("}\n");
    fflush(stdout);
    return 0;
}
