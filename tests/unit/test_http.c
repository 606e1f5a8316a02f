/* test_http.c — the http module against a small HTTP/1.1 server that runs in a forked child (so that
 * its memory and CPU are not the client's): bodies, streaming, every timeout kind, limits, errors,
 * cancellation from everywhere, concurrency, keep-alive reuse, and heap per in-flight transfer; then the
 * native HTTP/2 client against an nghttp2 server in another child (h2c, TLS with and without ALPN h2):
 * multiplexing, RST_STREAM on cancel and timeouts with the connection kept, connection errors, limits,
 * TLS verification, the per-origin connection cap, heap per stream and CPU per request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <sys/resource.h>

#include "base/base.h"
#include "http/http.h"

/* ================= the test server (child process) ================= */

#define N_TAGS 64

/* Shared with the child through an anonymous shared mapping. */
typedef struct {
    atomic_long connections;
    atomic_long requests;
    atomic_long eof_mid_response;
    atomic_long eof_tag[N_TAGS]; /* peer closed while the response of a request with &tag=N was unfinished */
} srv_stats_t;

static srv_stats_t *g_stats;
static int g_port;
static pid_t g_server;

typedef enum { R_NONE, R_STREAM, R_SLOWBODY, R_SLOW } srv_kind_t;

typedef struct {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open;
    char *in;
    size_t in_len, in_cap;
    bool responding; /* a response has begun and is not finished */
    srv_kind_t kind;
    int chunk_no, chunks_left, gap_ms, tag;
} sconn_t;

typedef struct {
    uv_write_t req;
    char data[];
} swrite_t;

static void srv_written(uv_write_t *w, int status) { free(w); }

static void srv_write(sconn_t *k, const char *data, size_t n)
{
    swrite_t *w = malloc(sizeof *w + n);
    memcpy(w->data, data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&k->tcp, &b, 1, srv_written) != 0)
        free(w);
}

static void srv_printf(sconn_t *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_printf(sconn_t *k, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    srv_write(k, buf, (size_t)n);
}

static void srv_chunk(sconn_t *k, const char *s, size_t n)
{
    srv_printf(k, "%zx\r\n", n);
    srv_write(k, s, n);
    srv_write(k, "\r\n", 2);
}

static void srv_full(sconn_t *k, int status, const char *extra, const char *body, size_t n)
{
    srv_printf(k, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n", status,
               n, extra);
    srv_write(k, body, n);
    k->responding = false;
}

static void srv_conn_closed(uv_handle_t *h)
{
    sconn_t *k = h->data;
    if (--k->open == 0) {
        free(k->in);
        free(k);
    }
}

static void srv_close(sconn_t *k)
{
    if (uv_is_closing((uv_handle_t *)&k->tcp))
        return;
    uv_close((uv_handle_t *)&k->tcp, srv_conn_closed);
    uv_close((uv_handle_t *)&k->timer, srv_conn_closed);
}

static int qint(const char *path, const char *key, int dflt)
{
    const char *p = strstr(path, key);
    return p ? (int)strtol(p + strlen(key), NULL, 10) : dflt;
}

static void srv_process(sconn_t *k);

static void srv_tick(uv_timer_t *h)
{
    sconn_t *k = h->data;
    char line[64];
    switch (k->kind) {
    case R_STREAM: {
        int n = snprintf(line, sizeof line, "chunk-%d\n", k->chunk_no++);
        srv_chunk(k, line, (size_t)n);
        if (--k->chunks_left > 0) {
            uv_timer_start(&k->timer, srv_tick, (uint64_t)k->gap_ms, 0);
            return;
        }
        srv_write(k, "0\r\n\r\n", 5);
        break;
    }
    case R_SLOWBODY:
        srv_chunk(k, "late\n", 5);
        srv_write(k, "0\r\n\r\n", 5);
        break;
    case R_SLOW:
        srv_full(k, 200, "", "{\"ok\":true}", 11);
        break;
    case R_NONE:
        break;
    }
    k->kind = R_NONE;
    k->responding = false;
    srv_process(k);
}

static void srv_start_chunked(sconn_t *k, const char *ctype)
{
    srv_printf(k, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n", ctype);
}

/* One complete request: method line + headers in head, body of blen bytes. */
static void srv_handle(sconn_t *k, const char *head, const char *body, size_t blen)
{
    char path[512] = "";
    sscanf(head, "%*s %511s", path);
    atomic_fetch_add(&g_stats->requests, 1);
    k->tag = qint(path, "tag=", 0);
    k->responding = true;
    if (strncmp(path, "/json", 5) == 0) {
        srv_full(k, 200, "", "{\"ok\":true}", 11);
    } else if (strncmp(path, "/echo", 5) == 0) {
        char extra[600] = "";
        const char *x = strcasestr(head, "\r\nX-Test: ");
        if (x) {
            x += 10;
            int n = (int)strcspn(x, "\r");
            snprintf(extra, sizeof extra, "X-Echo-Header: %.*s\r\n", n > 500 ? 500 : n, x);
        }
        srv_full(k, 200, extra, body, blen);
    } else if (strncmp(path, "/stream", 7) == 0) {
        srv_start_chunked(k, "text/event-stream");
        k->kind = R_STREAM;
        k->chunk_no = 0;
        k->chunks_left = qint(path, "n=", 5);
        k->gap_ms = qint(path, "gap=", 10);
        srv_tick(&k->timer);
    } else if (strncmp(path, "/slowbody", 9) == 0) {
        srv_start_chunked(k, "text/plain");
        k->kind = R_SLOWBODY;
        uv_timer_start(&k->timer, srv_tick, (uint64_t)qint(path, "ms=", 1000), 0);
    } else if (strncmp(path, "/slow", 5) == 0) {
        k->kind = R_SLOW;
        uv_timer_start(&k->timer, srv_tick, (uint64_t)qint(path, "ms=", 1000), 0);
    } else if (strncmp(path, "/stall", 6) == 0) {
        srv_start_chunked(k, "text/event-stream");
        for (int i = 0, n = qint(path, "n=", 1); i < n; i++) {
            char line[32];
            srv_chunk(k, line, (size_t)snprintf(line, sizeof line, "chunk-%d\n", i));
        }
    } else if (strncmp(path, "/bigchunked", 11) == 0) {
        static char blob[16384];
        memset(blob, 'y', sizeof blob);
        srv_start_chunked(k, "text/plain");
        for (int left = qint(path, "bytes=", 0); left > 0; left -= (int)sizeof blob)
            srv_chunk(k, blob, left < (int)sizeof blob ? (size_t)left : sizeof blob);
        srv_write(k, "0\r\n\r\n", 5);
        k->responding = false;
    } else if (strncmp(path, "/big", 4) == 0) {
        size_t n = (size_t)qint(path, "bytes=", 0);
        char *blob = malloc(n + 1);
        memset(blob, 'x', n);
        srv_full(k, 200, "", blob, n);
        free(blob);
    } else if (strncmp(path, "/429", 4) == 0) {
        char extra[128] = "Retry-After: 7\r\n";
        if (qint(path, "date=", 0)) {
            time_t when = time(NULL) + 60;
            struct tm tm;
            gmtime_r(&when, &tm);
            strftime(extra, sizeof extra, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        }
        srv_full(k, 429, extra, "{\"error\":\"rate\"}", 16);
    } else if (strncmp(path, "/close", 6) == 0) {
        k->responding = false;
        srv_close(k);
    } else {
        srv_full(k, 404, "", "{}", 2);
    }
}

/* Handles every complete request in the input buffer, one at a time. */
static void srv_process(sconn_t *k)
{
    while (!k->responding && k->in_len > 0 && !uv_is_closing((uv_handle_t *)&k->tcp)) {
        if (k->in[0] < 'A' || k->in[0] > 'Z') { /* not HTTP (a TLS ClientHello) */
            srv_printf(k, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            srv_close(k);
            return;
        }
        char *end = memmem(k->in, k->in_len, "\r\n\r\n", 4);
        if (!end)
            return;
        size_t head_len = (size_t)(end - k->in) + 4;
        *end = '\0';
        const char *cl = strcasestr(k->in, "\r\nContent-Length: ");
        size_t blen = cl ? (size_t)strtoul(cl + 18, NULL, 10) : 0;
        if (k->in_len < head_len + blen) {
            *end = '\r';
            return;
        }
        srv_handle(k, k->in, k->in + head_len, blen);
        memmove(k->in, k->in + head_len + blen, k->in_len - head_len - blen);
        k->in_len -= head_len + blen;
    }
}

static void srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    b->base = malloc(65536);
    b->len = 65536;
}

static void srv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    sconn_t *k = s->data;
    if (nread < 0) {
        if (k->responding) {
            atomic_fetch_add(&g_stats->eof_mid_response, 1);
            if (k->tag > 0 && k->tag < N_TAGS)
                atomic_fetch_add(&g_stats->eof_tag[k->tag], 1);
        }
        srv_close(k);
    } else if (nread > 0) {
        if (k->in_len + (size_t)nread + 1 > k->in_cap) {
            k->in_cap = (k->in_len + (size_t)nread + 1) * 2;
            k->in = realloc(k->in, k->in_cap);
        }
        memcpy(k->in + k->in_len, b->base, (size_t)nread);
        k->in_len += (size_t)nread;
        srv_process(k);
    }
    free(b->base);
}

static void srv_accept(uv_stream_t *server, int status)
{
    sconn_t *k = calloc(1, sizeof *k);
    uv_tcp_init(server->loop, &k->tcp);
    uv_timer_init(server->loop, &k->timer);
    k->tcp.data = k->timer.data = k;
    k->open = 2;
    if (uv_accept(server, (uv_stream_t *)&k->tcp) != 0) {
        srv_close(k);
        return;
    }
    atomic_fetch_add(&g_stats->connections, 1);
    uv_read_start((uv_stream_t *)&k->tcp, srv_alloc, srv_read);
}

static void server_main(int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN); /* clients hang up mid-response on purpose */
    uv_loop_t loop;
    uv_tcp_t srv;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &srv);
    uv_tcp_open(&srv, fd);
    uv_listen((uv_stream_t *)&srv, 4096, srv_accept);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

/* A socket bound to 127.0.0.1 on a free port; returns the fd and sets *port. */
static int bind_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

static int group_setup(void **state)
{
    g_stats = mmap(NULL, sizeof *g_stats, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_stats == MAP_FAILED)
        return -1;
    int fd = bind_loopback(&g_port);
    if (fd < 0 || listen(fd, 4096) != 0)
        return -1;
    g_server = fork();
    if (g_server < 0)
        return -1;
    if (g_server == 0)
        server_main(fd);
    close(fd);
    return 0;
}

static pid_t g_tls_server; /* openssl s_server of tls_verification, if running */

static void stop_child(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
    }
    *pid = 0;
}

static int group_teardown(void **state)
{
    stop_child(&g_server);
    stop_child(&g_tls_server);
    return 0;
}

static long srv(atomic_long *v) { return atomic_load(v); }

/* ================= the client side ================= */

typedef struct {
    uv_loop_t loop;
    uv_timer_t ticker; /* keeps UV_RUN_ONCE returning so RUN_UNTIL can check its condition */
    http_client_t *client;
    bool closed;
} env_t;

static void tick(uv_timer_t *h) {}

static void env_init(env_t *e, const http_client_options_t *o)
{
    char err[256];
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->ticker);
    uv_timer_start(&e->ticker, tick, 5, 5);
    e->client = http_client_new(&e->loop, o, err, sizeof err);
    assert_non_null(e->client);
}

static void on_client_closed(void *ctx) { *(bool *)ctx = true; }

/* Closes the client (if the test has not) and the loop; fails on handles left open. */
static void env_close(env_t *e)
{
    if (e->client)
        http_client_close(e->client, on_client_closed, &e->closed);
    uv_close((uv_handle_t *)&e->ticker, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_true(e->closed);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

#define RUN_UNTIL(e, cond, ms)                                                                               \
    do {                                                                                                     \
        int64_t end_ = base_mono_ms() + (ms);                                                                \
        while (!(cond) && base_mono_ms() < end_)                                                             \
            uv_run(&(e)->loop, UV_RUN_ONCE);                                                                 \
    } while (0)

static void run_for(env_t *e, int64_t ms) { RUN_UNTIL(e, false, ms); }

/* What the callbacks of one transfer saw, and what they are told to do. */
typedef struct call {
    env_t *env;
    http_transfer_t *t;
    int responses, chunks, done, after_cancel;
    long status;
    int64_t retry_after_ms;
    char ctype[64], hdr[128], hdr_done[128];
    const char *want_header;
    http_code_t code;
    char error[256];
    uint64_t bytes;
    bool reused, cancelled, had_response;
    int64_t response_ms, first_byte_ms, total_ms;
    buf_t data, body;
    int cancel_at_chunk, abort_at_chunk;
    bool cancel_in_response, close_client_on_done, close_client_in_data;
    struct call *cancel_on_done;
    struct call *spawn; /* started from on_data at the first chunk, or from on_done */
    bool spawn_in_done;
    char spawn_url[128];
} call_t;

static void start(env_t *e, call_t *k, http_request_t *req);

static void rec_response(void *ctx, const http_response_t *r)
{
    call_t *k = ctx;
    k->after_cancel += k->cancelled;
    k->responses++;
    k->status = r->status;
    k->retry_after_ms = r->retry_after_ms;
    snprintf(k->ctype, sizeof k->ctype, "%s", r->content_type ? r->content_type : "");
    const char *h = k->want_header ? http_response_header(r, k->want_header) : NULL;
    snprintf(k->hdr, sizeof k->hdr, "%s", h ? h : "");
    if (k->cancel_in_response) {
        k->cancelled = true;
        http_cancel(k->t);
    }
}

static void spawn_now(call_t *k)
{
    http_request_t req = {.method = HTTP_GET, .url = k->spawn_url, .buffer_body = true};
    start(k->env, k->spawn, &req);
    k->spawn = NULL;
}

static int rec_data(void *ctx, const char *p, size_t n)
{
    call_t *k = ctx;
    k->after_cancel += k->cancelled;
    k->chunks++;
    buf_append(&k->data, p, n);
    if (k->spawn && !k->spawn_in_done && k->chunks == 1)
        spawn_now(k);
    if (k->abort_at_chunk && k->chunks == k->abort_at_chunk)
        return 1;
    if (k->close_client_in_data && k->env->client) {
        http_client_close(k->env->client, on_client_closed, &k->env->closed);
        k->env->client = NULL;
    }
    if (k->cancel_at_chunk && k->chunks == k->cancel_at_chunk) {
        k->cancelled = true;
        http_cancel(k->t);
    }
    return 0;
}

static void rec_done(void *ctx, http_result_t *res)
{
    call_t *k = ctx;
    k->after_cancel += k->cancelled;
    k->done++;
    k->code = res->code;
    snprintf(k->error, sizeof k->error, "%s", res->error);
    k->status = res->status;
    k->bytes = res->bytes_received;
    k->reused = res->reused_connection;
    k->had_response = res->response != NULL;
    k->response_ms = res->timing.response_ms;
    k->first_byte_ms = res->timing.first_byte_ms;
    k->total_ms = res->timing.total_ms;
    const char *h =
        k->want_header && res->response ? http_response_header(res->response, k->want_header) : NULL;
    snprintf(k->hdr_done, sizeof k->hdr_done, "%s", h ? h : "");
    if (res->body.data) {
        size_t n;
        char *d = buf_steal(&res->body, &n);
        buf_append(&k->body, d, n);
        free(d);
    }
    k->t = NULL;
    if (k->cancel_on_done && !k->cancel_on_done->done && !k->cancel_on_done->cancelled) {
        k->cancel_on_done->cancelled = true;
        http_cancel(k->cancel_on_done->t);
    }
    if (k->spawn)
        spawn_now(k);
    if (k->close_client_on_done) {
        http_client_close(k->env->client, on_client_closed, &k->env->closed);
        k->env->client = NULL;
    }
}

static void start(env_t *e, call_t *k, http_request_t *req)
{
    char err[256];
    k->env = e;
    req->on_response = rec_response;
    req->on_data = rec_data;
    req->on_done = rec_done;
    req->ctx = k;
    k->t = http_start(e->client, req, err, sizeof err);
    assert_non_null(k->t);
}

static void call_free(call_t *k)
{
    buf_free(&k->data);
    buf_free(&k->body);
}

static const char *url2(char *buf, size_t n, const char *scheme, int port, const char *path)
{
    snprintf(buf, n, "%s://127.0.0.1:%d%s", scheme, port, path);
    return buf;
}
#define URL(path) url2((char[256]){0}, 256, "http", g_port, (path))

/* Runs one transfer to its end and returns with its record filled. */
static void run_one(env_t *e, call_t *k, http_request_t *req, int64_t max_ms)
{
    start(e, k, req);
    RUN_UNTIL(e, k->done > 0, max_ms);
    assert_int_equal(k->done, 1);
}

/* ================= tests ================= */

static int count_done(const call_t *k, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++)
        done += k[i].done;
    return done;
}

static int count_streaming(const call_t *k, int n)
{
    int got = 0;
    for (int i = 0; i < n; i++)
        got += k[i].chunks > 0;
    return got;
}

/* Waits until the n calls are done; each must have succeeded, with bodies[i] as its body unless bodies is
 * NULL. Frees their buffers. */
static void finish_all_ok(env_t *e, call_t *k, int n, int64_t ms, char (*bodies)[32])
{
    RUN_UNTIL(e, count_done(k, n) == n, ms);
    assert_int_equal(count_done(k, n), n);
    for (int i = 0; i < n; i++) {
        if (k[i].code != HTTP_OK)
            printf("call %d: %s: %s\n", i, http_code_name(k[i].code), k[i].error);
        assert_int_equal(k[i].code, HTTP_OK);
        if (bodies)
            assert_string_equal(k[i].body.data, bodies[i]);
        call_free(&k[i]);
    }
}

/* Starts req n times, on k[0] to k[n - 1]. */
static void start_n(env_t *e, call_t *k, int n, http_request_t *req)
{
    for (int i = 0; i < n; i++)
        start(e, &k[i], req);
}

/* The client's counters, which must show `started` and `completed` transfers so far and `in_flight` now. */
static http_stats_t expect_counts(env_t *e, uint64_t started, uint64_t completed, size_t in_flight)
{
    http_stats_t st;
    http_client_stats(e->client, &st);
    assert_int_equal(st.started, started);
    assert_int_equal(st.completed, completed);
    assert_int_equal(st.in_flight, in_flight);
    return st;
}

/* Runs n buffered POSTs of "request-<i>" to u, an /echo, all at once: all n are in flight (h2_streams of
 * them as native HTTP/2 streams), then each gets its own body back. */
static void run_echoes(env_t *e, int n, http_version_t version, const char *u, int64_t timeout_ms,
                       size_t h2_streams)
{
    call_t *k = calloc((size_t)n, sizeof *k);
    char(*bodies)[32] = calloc((size_t)n, 32);
    for (int i = 0; i < n; i++) {
        int len = snprintf(bodies[i], 32, "request-%d", i);
        http_request_t req = {.version = version,
                              .url = u,
                              .body = bodies[i],
                              .body_len = (size_t)len,
                              .buffer_body = true,
                              .total_timeout_ms = timeout_ms};
        start(e, &k[i], &req);
    }
    http_stats_t st;
    http_client_stats(e->client, &st);
    assert_int_equal(st.in_flight, n);
    assert_int_equal(st.h2_streams, h2_streams);
    finish_all_ok(e, k, n, timeout_ms, bodies);
    free(k);
    free(bodies);
}

/* POSTs 20,000 binary bytes with the headers (X-Test: hello there among them) to u, an /echo, wiping and
 * freeing the source right after http_start: the same bytes and the header must come back. */
static void post_echo(env_t *e, call_t *k, http_version_t version, const char *u, const char *const *headers,
                      size_t n_headers)
{
    size_t n = 20000;
    char *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)(i * 7);
    char *copy = malloc(n);
    memcpy(copy, body, n);
    http_request_t req = {.version = version,
                          .url = u,
                          .headers = headers,
                          .n_headers = n_headers,
                          .body = copy,
                          .body_len = n,
                          .copy_body = true,
                          .buffer_body = true};
    k->want_header = "X-Echo-Header";
    start(e, k, &req);
    memset(copy, 0, n); /* http copied it */
    free(copy);
    RUN_UNTIL(e, k->done, 3000);
    assert_int_equal(k->code, HTTP_OK);
    assert_int_equal(k->status, 200);
    assert_int_equal(k->body.len, n);
    assert_memory_equal(k->body.data, body, n);
    assert_string_equal(k->hdr, "hello there");
    assert_string_equal(k->hdr_done, "hello there");
    free(body);
}

/* Runs req (a GET of /stream?n=20) to its end: it succeeds with "chunk-0\n".."chunk-19\n" in order. */
static void run_twenty_chunks(env_t *e, call_t *k, http_request_t *req)
{
    run_one(e, k, req, 5000);
    assert_int_equal(k->code, HTTP_OK);
    buf_t want;
    buf_init(&want, 0);
    for (int i = 0; i < 20; i++)
        buf_printf(&want, "chunk-%d\n", i);
    assert_int_equal(k->data.len, want.len);
    assert_memory_equal(k->data.data, want.data, want.len);
    assert_int_equal(k->bytes, want.len);
    buf_free(&want);
}

/* On a new client: starts req (a long stream) and cancels it once 3 chunks came. The stats count the
 * cancel at once, no callback runs after it, and the server sees it (server_saw, its counter for the
 * request's tag, reaches 1). */
static void cancel_after_three_chunks(env_t *e, http_request_t *req, atomic_long *server_saw)
{
    call_t k = {0};
    start(e, &k, req);
    RUN_UNTIL(e, k.chunks >= 3, 3000);
    assert_true(k.chunks >= 3);
    k.cancelled = true;
    http_cancel(k.t);
    int seen = k.chunks;
    http_stats_t st;
    http_client_stats(e->client, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.h2_streams, 0);
    RUN_UNTIL(e, srv(server_saw) == 1, 2000);
    assert_int_equal(srv(server_saw), 1);
    run_for(e, 100);
    assert_int_equal(k.chunks, seen);
    assert_int_equal(k.done, 0);
    assert_int_equal(k.after_cancel, 0);
    call_free(&k);
}

static void post_body_arrives_intact(void **state)
{
    env_t e;
    env_init(&e, NULL);
    const char *headers[] = {"Content-Type: application/octet-stream", "X-Test: hello there"};
    call_t k = {0};
    post_echo(&e, &k, HTTP_VERSION_AUTO, URL("/echo"), headers, 2);
    call_free(&k);
    env_close(&e);
}

static void buffered_json_response(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {
        .method = HTTP_GET, .url = URL("/json"), .buffer_body = true, .total_timeout_ms = 3000};
    call_t k = {0};
    run_one(&e, &k, &req, 3000);
    assert_int_equal(k.code, HTTP_OK);
    assert_string_equal(k.error, "");
    assert_int_equal(k.responses, 1);
    assert_int_equal(k.status, 200);
    assert_string_equal(k.ctype, "application/json");
    assert_int_equal(k.retry_after_ms, -1);
    assert_string_equal(k.body.data, "{\"ok\":true}");
    assert_int_equal(k.bytes, 11);
    assert_true(k.response_ms >= 0 && k.response_ms <= k.first_byte_ms && k.first_byte_ms <= k.total_ms);
    http_stats_t st = expect_counts(&e, 1, 1, 0);
    assert_int_equal(st.idle_handles, 1);
    call_free(&k);
    env_close(&e);
}

static void streamed_chunks_arrive_in_order(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {.method = HTTP_GET, .url = URL("/stream?n=20&gap=5"), .idle_timeout_ms = 2000};
    call_t k = {0};
    run_twenty_chunks(&e, &k, &req);
    assert_true(k.chunks > 1);
    assert_null(k.body.data); /* not buffered */
    call_free(&k);
    env_close(&e);
}

static void connect_timeout(void **state)
{
    /* A listener whose accept queue is full drops further SYNs: connecting to it hangs. */
    int port, fillers[8];
    int lfd = bind_loopback(&port);
    assert_true(lfd >= 0);
    assert_int_equal(listen(lfd, 0), 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (size_t i = 0; i < BASE_ARRAY_LEN(fillers); i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(50000);
    env_t e;
    env_init(&e, NULL);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", port);
    http_request_t req = {.url = u, .connect_timeout_ms = 200, .total_timeout_ms = 5000};
    call_t k = {0};
    run_one(&e, &k, &req, 3000);
    assert_int_equal(k.code, HTTP_ERR_TIMEOUT_CONNECT);
    assert_true(k.total_ms >= 150 && k.total_ms < 2000);
    assert_int_equal(k.responses, 0);
    call_free(&k);
    env_close(&e);
    for (size_t i = 0; i < BASE_ARRAY_LEN(fillers); i++)
        close(fillers[i]);
    close(lfd);
}

static void first_byte_timeout_counts_body_not_head(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {.method = HTTP_GET,
                          .url = URL("/slowbody?ms=3000&tag=10"),
                          .first_byte_timeout_ms = 200,
                          .idle_timeout_ms = 5000};
    call_t k = {0};
    run_one(&e, &k, &req, 3000);
    assert_int_equal(k.code, HTTP_ERR_TIMEOUT_FIRST_BYTE);
    assert_string_equal(http_code_name(k.code), "timeout_first_byte");
    assert_non_null(strstr(k.error, "200 ms"));
    assert_int_equal(k.responses, 1); /* the head came at once; the body did not */
    assert_int_equal(k.status, 200);
    assert_int_equal(k.chunks, 0);
    assert_true(k.total_ms >= 190 && k.total_ms < 1500);
    RUN_UNTIL(&e, srv(&g_stats->eof_tag[10]) == 1, 2000);
    assert_int_equal(srv(&g_stats->eof_tag[10]), 1);
    call_free(&k);
    env_close(&e);
}

static void idle_timeout_between_chunks(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {
        .method = HTTP_GET, .url = URL("/stall?n=2"), .first_byte_timeout_ms = 2000, .idle_timeout_ms = 200};
    call_t k = {0};
    run_one(&e, &k, &req, 3000);
    assert_int_equal(k.code, HTTP_ERR_TIMEOUT_IDLE);
    assert_string_equal(k.data.data, "chunk-0\nchunk-1\n");
    assert_true(k.first_byte_ms >= 0);
    assert_true(k.total_ms >= 190 && k.total_ms < 1500);
    call_free(&k);
    env_close(&e);
}

static void total_timeout(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {
        .method = HTTP_GET, .url = URL("/slow?ms=3000"), .total_timeout_ms = 300, .connect_timeout_ms = 1000};
    call_t k = {0};
    run_one(&e, &k, &req, 3000);
    assert_int_equal(k.code, HTTP_ERR_TIMEOUT_TOTAL);
    assert_true(k.total_ms >= 290 && k.total_ms < 1500);
    call_free(&k);
    env_close(&e);
}

static void response_size_limit(void **state)
{
    env_t e;
    env_init(&e, NULL);
    const char *paths[] = {"/big?bytes=200000", "/bigchunked?bytes=200000", "/big?bytes=10000"};
    http_code_t want[] = {HTTP_ERR_TOO_LARGE, HTTP_ERR_TOO_LARGE, HTTP_OK};
    for (size_t i = 0; i < BASE_ARRAY_LEN(paths); i++) {
        http_request_t req = {
            .method = HTTP_GET, .url = URL(paths[i]), .max_response_bytes = 10000, .buffer_body = true};
        call_t k = {0};
        run_one(&e, &k, &req, 3000);
        assert_int_equal(k.code, want[i]);
        assert_true(k.bytes <= 10000);
        if (want[i] == HTTP_OK)
            assert_int_equal(k.body.len, 10000);
        else
            assert_non_null(strstr(k.error, "over 10000 bytes"));
        call_free(&k);
    }
    env_close(&e);
}

static void status_429_with_retry_after(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {.url = URL("/429"), .body = "{}", .body_len = 2, .buffer_body = true};
    call_t k = {.want_header = "retry-after"};
    run_one(&e, &k, &req, 3000);
    assert_int_equal(k.code, HTTP_OK);
    assert_int_equal(k.status, 429);
    assert_int_equal(k.retry_after_ms, 7000);
    assert_string_equal(k.hdr, "7");
    assert_string_equal(k.hdr_done, "7");
    assert_string_equal(k.ctype, "application/json");
    assert_string_equal(k.body.data, "{\"error\":\"rate\"}");
    call_free(&k);

    http_request_t dated = {.url = URL("/429?date=1")};
    call_t d = {0};
    run_one(&e, &d, &dated, 3000);
    assert_true(d.retry_after_ms >= 55000 && d.retry_after_ms <= 61000);
    call_free(&d);
    env_close(&e);
}

static void connection_errors(void **state)
{
    int port;
    int fd = bind_loopback(&port);
    close(fd); /* nothing listens there now */
    char refused[128], tls[128];
    snprintf(refused, sizeof refused, "http://127.0.0.1:%d/x", port);
    snprintf(tls, sizeof tls, "https://127.0.0.1:%d/json", g_port); /* TLS to a plain HTTP server */
    const char *urls[] = {refused, URL("/close"), tls};
    http_code_t want[] = {HTTP_ERR_CONNECT, HTTP_ERR_CLOSED, HTTP_ERR_TLS};
    env_t e;
    env_init(&e, NULL);
    for (size_t i = 0; i < BASE_ARRAY_LEN(urls); i++) {
        http_request_t req = {.method = HTTP_GET, .url = urls[i], .total_timeout_ms = 3000};
        call_t k = {0};
        run_one(&e, &k, &req, 4000);
        assert_int_equal(k.code, want[i]);
        assert_true(strlen(k.error) > 0);
        assert_int_equal(k.status, 0);
        assert_false(k.had_response);
        call_free(&k);
    }
    env_close(&e);
}

static void bad_requests_are_refused(void **state)
{
    env_t e;
    env_init(&e, NULL);
    char err[256];
    const char *evil[] = {"X-Ok: 1", "X-Bad: a\r\nInjected: 1"};
    call_t k = {0};
    http_request_t req = {
        .url = URL("/json"), .headers = evil, .n_headers = 2, .on_done = rec_done, .ctx = &k};
    assert_null(http_start(e.client, &req, err, sizeof err));
    assert_non_null(strstr(err, "CR/LF"));
    http_request_t nourl = {.on_done = rec_done};
    assert_null(http_start(e.client, &nourl, err, sizeof err));
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.started, 0);
    assert_string_equal(http_code_name(HTTP_ERR_CLOSED), "closed");
    env_close(&e);
}

/* Runs argv to its end, its output discarded; its exit status. */
static int run_quiet(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Makes the directory dir (a mkdtemp template) holding a self-signed certificate for 127.0.0.1 (its own
 * CA) in cert and its key in key; 0, or -1. */
static int make_cert(char *dir, char *cert, size_t cert_size, char *key, size_t key_size)
{
    if (!mkdtemp(dir))
        return -1;
    snprintf(cert, cert_size, "%s/cert.pem", dir);
    snprintf(key, key_size, "%s/key.pem", dir);
    char *req[] = {"openssl",
                   "req",
                   "-x509",
                   "-newkey",
                   "ec",
                   "-pkeyopt",
                   "ec_paramgen_curve:prime256v1",
                   "-nodes",
                   "-keyout",
                   key,
                   "-out",
                   cert,
                   "-days",
                   "1",
                   "-subj",
                   "/CN=127.0.0.1",
                   "-addext",
                   "subjectAltName=IP:127.0.0.1",
                   NULL};
    return run_quiet(req) == 0 ? 0 : -1;
}

/* The three ways to call u on a TLS server whose certificate is ca_file: verified against the system's
 * CAs (it must fail), against ca_file, and not verified at all. */
static void tls_requests(http_request_t out[3], http_version_t version, const char *u, const char *ca_file)
{
    for (int i = 0; i < 3; i++)
        out[i] = (http_request_t){.method = HTTP_GET, .version = version, .url = u, .total_timeout_ms = 5000};
    out[1].ca_file = ca_file;
    out[2].tls_insecure = true;
}

static bool port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Every allocation of http's own, failed in turn: each ends in a clean error, never a crash or leak. */
static void allocation_failures_are_clean(void **state)
{
    int outcomes[4] = {0}; /* client refused, start refused, transfer ok, transfer failed cleanly */
    for (long n = 1; n <= 16; n++) {
        uv_loop_t loop;
        assert_int_equal(uv_loop_init(&loop), 0);
        char err[256] = "";
        base_alloc_fail_after(n);
        http_client_t *c = http_client_new(&loop, NULL, err, sizeof err);
        if (!c) {
            base_alloc_fail_after(0);
            assert_true(strlen(err) > 0);
            outcomes[0]++;
            assert_int_equal(uv_loop_close(&loop), 0);
            continue;
        }
        const char *headers[] = {"X-A: 1"};
        call_t k = {0};
        http_request_t req = {.url = URL("/json"),
                              .headers = headers,
                              .n_headers = 1,
                              .buffer_body = true,
                              .first_byte_timeout_ms = 2000,
                              .on_done = rec_done,
                              .ctx = &k};
        http_transfer_t *t = http_start(c, &req, err, sizeof err);
        if (!t) {
            assert_true(strlen(err) > 0);
            outcomes[1]++;
        } else {
            int64_t end = base_mono_ms() + 3000;
            while (!k.done && base_mono_ms() < end)
                uv_run(&loop, UV_RUN_ONCE);
            assert_int_equal(k.done, 1);
            assert_true(k.code == HTTP_OK || (k.code == HTTP_ERR_OTHER && strstr(k.error, "out of memory")));
            outcomes[k.code == HTTP_OK ? 2 : 3]++;
        }
        base_alloc_fail_after(0);
        bool closed = false;
        http_client_close(c, on_client_closed, &closed);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_true(closed);
        assert_int_equal(uv_loop_close(&loop), 0);
        call_free(&k);
    }
    assert_true(outcomes[0] > 0 && outcomes[1] > 0 && outcomes[2] > 0 && outcomes[3] > 0);
}

/* Against `openssl s_server` with a self-signed certificate for 127.0.0.1: verification is on by
 * default, ca_file makes it pass, tls_insecure skips it. */
static void tls_verification(void **state)
{
    char dir[] = "/tmp/test_http_tls_XXXXXX";
    char cert[64], key[64];
    assert_int_equal(make_cert(dir, cert, sizeof cert, key, sizeof key), 0);
    int port;
    close(bind_loopback(&port));
    char accept[32];
    snprintf(accept, sizeof accept, "127.0.0.1:%d", port);
    g_tls_server = fork();
    if (g_tls_server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("openssl", "openssl", "s_server", "-accept", accept, "-cert", cert, "-key", key, "-www",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300 && !port_accepts(port); i++)
        usleep(10000);
    assert_true(port_accepts(port));

    char u[128];
    snprintf(u, sizeof u, "https://127.0.0.1:%d/", port);
    env_t e;
    env_init(&e, NULL);
    http_request_t reqs[3];
    tls_requests(reqs, HTTP_VERSION_AUTO, u, cert);
    http_code_t want[] = {HTTP_ERR_TLS, HTTP_OK, HTTP_OK};
    for (size_t i = 0; i < BASE_ARRAY_LEN(reqs); i++) {
        call_t k = {0};
        run_one(&e, &k, &reqs[i], 6000);
        assert_int_equal(k.code, want[i]);
        if (want[i] == HTTP_OK)
            assert_int_equal(k.status, 200);
        call_free(&k);
    }
    env_close(&e);
    stop_child(&g_tls_server);
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

static void cancel_mid_stream_closes_the_connection(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {.method = HTTP_GET, .url = URL("/stream?n=1000&gap=10&tag=1")};
    cancel_after_three_chunks(&e, &req, &g_stats->eof_tag[1]); /* the server saw the connection close */
    env_close(&e);
}

static void cancel_from_inside_callbacks(void **state)
{
    env_t e;
    env_init(&e, NULL);
    call_t in_data = {.cancel_at_chunk = 3};
    call_t in_response = {.cancel_in_response = true};
    call_t aborting = {.abort_at_chunk = 2};
    http_request_t r1 = {.method = HTTP_GET, .url = URL("/stream?n=100&gap=5&tag=2")};
    http_request_t r2 = {.method = HTTP_GET, .url = URL("/stream?n=100&gap=5&tag=3")};
    http_request_t r3 = {.method = HTTP_GET, .url = URL("/stream?n=100&gap=5&tag=4")};
    start(&e, &in_data, &r1);
    start(&e, &in_response, &r2);
    start(&e, &aborting, &r3);
    RUN_UNTIL(&e, srv(&g_stats->eof_tag[2]) && srv(&g_stats->eof_tag[3]) && aborting.done, 3000);
    assert_int_equal(srv(&g_stats->eof_tag[2]), 1);
    assert_int_equal(srv(&g_stats->eof_tag[3]), 1);
    run_for(&e, 50);
    assert_int_equal(in_data.chunks, 3);
    assert_int_equal(in_data.done, 0);
    assert_int_equal(in_data.after_cancel, 0);
    assert_int_equal(in_response.responses, 1);
    assert_int_equal(in_response.chunks, 0);
    assert_int_equal(in_response.done, 0);
    assert_int_equal(in_response.after_cancel, 0);
    assert_int_equal(aborting.done, 1);
    assert_int_equal(aborting.code, HTTP_ERR_ABORTED);
    assert_int_equal(aborting.chunks, 2);
    RUN_UNTIL(&e, srv(&g_stats->eof_tag[4]) == 1, 2000);
    assert_int_equal(srv(&g_stats->eof_tag[4]), 1);
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.cancelled, 2);
    assert_int_equal(st.in_flight, 0);
    call_free(&in_data);
    call_free(&in_response);
    call_free(&aborting);
    env_close(&e);
}

static void cancel_from_another_on_done(void **state)
{
    enum { PAIRS = 30 };
    env_t e;
    env_init(&e, NULL);
    call_t stalled = {0}, winner = {.cancel_on_done = &stalled};
    http_request_t rs = {.method = HTTP_GET, .url = URL("/stall?n=1&tag=5")};
    http_request_t rw = {.method = HTTP_GET, .url = URL("/slow?ms=100")};
    start(&e, &stalled, &rs);
    start(&e, &winner, &rw);
    /* Pairs of fast calls that cancel each other: often both finish in one curl pass. */
    call_t a[PAIRS] = {0}, b[PAIRS] = {0};
    http_request_t rj = {.method = HTTP_GET, .url = URL("/json")};
    for (int i = 0; i < PAIRS; i++) {
        a[i].cancel_on_done = &b[i];
        b[i].cancel_on_done = &a[i];
        start(&e, &a[i], &rj);
        start(&e, &b[i], &rj);
    }
    RUN_UNTIL(&e, srv(&g_stats->eof_tag[5]) == 1, 3000);
    assert_int_equal(winner.done, 1);
    assert_int_equal(winner.code, HTTP_OK);
    assert_int_equal(stalled.done, 0);
    assert_int_equal(srv(&g_stats->eof_tag[5]), 1);
    for (int i = 0; i < PAIRS; i++) {
        assert_int_equal(a[i].done + b[i].done, 1);
        assert_int_equal(a[i].after_cancel + b[i].after_cancel, 0);
        call_free(&a[i]);
        call_free(&b[i]);
    }
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.completed, PAIRS + 1);
    assert_int_equal(st.cancelled, PAIRS + 1);
    assert_int_equal(st.in_flight, 0);
    call_free(&stalled);
    call_free(&winner);
    env_close(&e);
}

static void start_from_inside_callbacks(void **state)
{
    env_t e;
    env_init(&e, NULL);
    /* streaming starts `middle` from its on_data (curl is on the stack: the add is deferred);
     * middle starts `last` from its on_done. */
    call_t last = {0}, middle = {.spawn = &last, .spawn_in_done = true}, streaming = {.spawn = &middle};
    snprintf(streaming.spawn_url, sizeof streaming.spawn_url, "%s", URL("/json"));
    snprintf(middle.spawn_url, sizeof middle.spawn_url, "%s", URL("/json"));
    http_request_t rs = {.method = HTTP_GET, .url = URL("/stream?n=3&gap=20")};
    start(&e, &streaming, &rs);
    RUN_UNTIL(&e, streaming.done && middle.done && last.done, 3000);
    assert_int_equal(streaming.code, HTTP_OK);
    assert_int_equal(middle.code, HTTP_OK);
    assert_true(middle.done && streaming.chunks >= 1);
    assert_int_equal(last.code, HTTP_OK);
    assert_string_equal(last.body.data, "{\"ok\":true}");
    expect_counts(&e, 3, 3, 0);
    call_free(&streaming);
    call_free(&middle);
    call_free(&last);
    env_close(&e);
}

static void many_concurrent_transfers(void **state)
{
    enum { N = 500 };
    env_t e;
    env_init(&e, NULL);
    run_echoes(&e, N, HTTP_VERSION_AUTO, URL("/echo"), 20000, 0);
    http_stats_t st = expect_counts(&e, N, N, 0);
    assert_true(st.idle_handles <= HTTP_DEFAULT_MAX_IDLE_HANDLES);
    env_close(&e);
}

static void keep_alive_connections_are_reused(void **state)
{
    enum { N = 40 };
    http_client_options_t o;
    http_client_options_init(&o);
    o.max_host_connections = 2;
    o.shards = 1;
    env_t e;
    env_init(&e, &o);
    long conns0 = srv(&g_stats->connections), reqs0 = srv(&g_stats->requests);
    call_t k[N] = {0};
    http_request_t req = {.method = HTTP_GET, .url = URL("/json")};
    start_n(&e, k, N, &req);
    finish_all_ok(&e, k, N, 10000, NULL);
    int reused = 0;
    for (int i = 0; i < N; i++)
        reused += k[i].reused;
    assert_int_equal(srv(&g_stats->requests) - reqs0, N);
    assert_true(srv(&g_stats->connections) - conns0 <= 2);
    assert_true(reused >= N - 2);
    env_close(&e);
}

static void sequential_calls_share_one_connection(void **state)
{
    env_t e;
    env_init(&e, NULL); /* default shards: light traffic stays on the first one */
    long conns0 = srv(&g_stats->connections);
    http_request_t req = {.method = HTTP_GET, .url = URL("/json")};
    for (int i = 0; i < 10; i++) {
        call_t s = {0};
        run_one(&e, &s, &req, 3000);
        assert_int_equal(s.code, HTTP_OK);
        assert_true(s.reused == (i > 0));
        call_free(&s);
    }
    assert_int_equal(srv(&g_stats->connections) - conns0, 1);
    env_close(&e);
}

static void close_with_transfers_in_flight(void **state)
{
    enum { N = 10 };
    env_t e;
    env_init(&e, NULL);
    call_t k[N] = {0};
    http_request_t req = {.method = HTTP_GET, .url = URL("/stall?n=1&tag=6")};
    start_n(&e, k, N, &req);
    RUN_UNTIL(&e, count_streaming(k, N) == N, 3000);
    assert_int_equal(count_streaming(k, N), N);
    /* A call whose on_done closes the client while the stalled ones still run. */
    call_t closer = {.close_client_on_done = true};
    http_request_t rj = {.method = HTTP_GET, .url = URL("/json")};
    start(&e, &closer, &rj);
    RUN_UNTIL(&e, e.closed, 3000);
    assert_true(e.closed);
    assert_null(e.client);
    for (int i = 0; i < N; i++) {
        assert_int_equal(k[i].done, 0);
        call_free(&k[i]);
    }
    call_free(&closer);
    env_close(&e);
    for (int i = 0; i < 200 && srv(&g_stats->eof_tag[6]) < N; i++)
        usleep(10000);
    assert_int_equal(srv(&g_stats->eof_tag[6]), N);
}

static void close_from_inside_on_data(void **state)
{
    enum { N = 5 };
    env_t e;
    env_init(&e, NULL);
    call_t k[N] = {0};
    http_request_t req = {.method = HTTP_GET, .url = URL("/stall?n=1&tag=7")};
    start_n(&e, k, N, &req);
    call_t closer = {.close_client_in_data = true};
    http_request_t rs = {.method = HTTP_GET, .url = URL("/stream?n=50&gap=5&tag=8")};
    RUN_UNTIL(&e, count_streaming(k, N) == N, 3000);
    start(&e, &closer, &rs);
    RUN_UNTIL(&e, e.closed, 3000);
    assert_true(e.closed);
    assert_int_equal(closer.chunks, 1);
    assert_int_equal(closer.done, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(k[i].done, 0);
        assert_int_equal(k[i].chunks, 1);
        call_free(&k[i]);
    }
    call_free(&closer);
    env_close(&e);
    for (int i = 0; i < 200 && (srv(&g_stats->eof_tag[7]) < N || srv(&g_stats->eof_tag[8]) < 1); i++)
        usleep(10000);
    assert_int_equal(srv(&g_stats->eof_tag[7]), N);
    assert_int_equal(srv(&g_stats->eof_tag[8]), 1);
}

/* Heap per in-flight transfer with ~2,000 slow transfers in flight (see the report in the log). */
static void memory_per_transfer(void **state)
{
    enum { N = 2000 };
    const char *env_buf = getenv("HTTP_TEST_BUFSIZE");
    http_client_options_t o;
    http_client_options_init(&o);
    if (env_buf)
        o.receive_buffer_bytes = strtol(env_buf, NULL, 10);
    env_t e;
    env_init(&e, &o);
    call_t *k = calloc(N, sizeof *k);
    call_t warm = {0};
    http_request_t rj = {.method = HTTP_GET, .url = URL("/json")};
    run_one(&e, &warm, &rj, 3000);
    long reqs0 = srv(&g_stats->requests);
    size_t base = mallinfo2().uordblks;
    http_request_t req = {.method = HTTP_GET,
                          .url = URL("/slow?ms=2500"),
                          .total_timeout_ms = 20000,
                          .first_byte_timeout_ms = 10000,
                          .idle_timeout_ms = 10000};
    start_n(&e, k, N, &req);
    size_t started = mallinfo2().uordblks;
    RUN_UNTIL(&e, srv(&g_stats->requests) - reqs0 >= N, 10000);
    assert_int_equal(srv(&g_stats->requests) - reqs0, N);
    size_t peak = mallinfo2().uordblks;
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.in_flight, N);
    double per = ((double)peak - (double)base) / N;
    if (peak > 0) /* mallinfo2 reports nothing under ASan */
        printf("http memory: %d transfers in flight on %zu sockets, buffer %ld B: %.0f B heap per transfer "
               "(%.0f B right after http_start)\n",
               N, st.sockets, o.receive_buffer_bytes, per, ((double)started - (double)base) / N);
    finish_all_ok(&e, k, N, 15000, NULL);
    assert_true(peak == 0 || (per > 1000 && per < 16384));
    free(k);
    call_free(&warm);
    env_close(&e);
}

/* ================= the HTTP/2 test server (another child process) ================= */

/* h2c on g_h2_port, TLS with ALPN h2 on g_h2s_port, TLS without ALPN on g_h2s_noalpn_port. */
typedef struct {
    atomic_long connections;
    atomic_long requests;
    atomic_long rst_received;
    atomic_long never_indexed;   /* request headers sent as HPACK "never indexed" */
    atomic_long rst_tag[N_TAGS]; /* RST_STREAM received for a request with &tag=N */
} h2srv_stats_t;

static h2srv_stats_t *g_h2;
static int g_h2_port, g_h2s_port, g_h2s_noalpn_port;
static pid_t g_h2_server;
static char g_h2_dir[64], g_h2_cert[96], g_h2_key[96];

typedef enum { H_NONE, H_STREAM, H_SLOWBODY, H_SLOW, H_CLOSEMID } h2kind_t;

typedef struct h2s_conn h2s_conn_t;

typedef struct h2s_stream {
    h2s_conn_t *conn;
    struct h2s_stream *next;
    int32_t id;
    char path[256], xtest[128], ua[128];
    buf_t in, out;
    size_t out_off;
    bool out_done, deferred;
    h2kind_t kind;
    int chunk_no, chunks_left, gap_ms, tag;
    uv_timer_t timer;
} h2s_stream_t;

struct h2s_conn {
    uv_tcp_t tcp;
    nghttp2_session *session;
    SSL *ssl;
    h2s_stream_t *streams;
};

typedef struct {
    uv_tcp_t tcp;
    SSL_CTX *ctx; /* NULL = h2c */
} h2s_listener_t;

static void h2s_stream_freed(uv_handle_t *h)
{
    h2s_stream_t *s = h->data;
    buf_free(&s->in);
    buf_free(&s->out);
    free(s);
}

static void h2s_conn_freed(uv_handle_t *h)
{
    h2s_conn_t *k = h->data;
    nghttp2_session_del(k->session);
    if (k->ssl)
        SSL_free(k->ssl);
    free(k);
}

static void h2s_close(h2s_conn_t *k)
{
    if (uv_is_closing((uv_handle_t *)&k->tcp))
        return;
    for (h2s_stream_t *s = k->streams; s; s = s->next)
        uv_close((uv_handle_t *)&s->timer, h2s_stream_freed);
    k->streams = NULL;
    uv_close((uv_handle_t *)&k->tcp, h2s_conn_freed);
}

static void h2s_written(uv_write_t *w, int status) { free(w); }

static void h2s_send_raw(h2s_conn_t *k, const void *p, size_t n)
{
    if (n == 0 || uv_is_closing((uv_handle_t *)&k->tcp))
        return;
    swrite_t *w = malloc(sizeof *w + n);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&k->tcp, &b, 1, h2s_written) != 0)
        free(w);
}

static void h2s_drain_tls(h2s_conn_t *k)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(SSL_get_wbio(k->ssl), buf, sizeof buf)) > 0)
        h2s_send_raw(k, buf, (size_t)n);
}

static void h2s_flush(h2s_conn_t *k)
{
    const uint8_t *data;
    ssize_t n;
    while (!uv_is_closing((uv_handle_t *)&k->tcp) && (n = nghttp2_session_mem_send(k->session, &data)) > 0) {
        if (k->ssl)
            SSL_write(k->ssl, data, (int)n);
        else
            h2s_send_raw(k, data, (size_t)n);
    }
    if (k->ssl)
        h2s_drain_tls(k);
}

static ssize_t h2s_read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *user)
{
    h2s_stream_t *s = src->ptr;
    size_t n = s->out.len - s->out_off;
    if (n == 0 && !s->out_done) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > length)
        n = length;
    memcpy(buf, s->out.data + s->out_off, n);
    s->out_off += n;
    if (s->out_done && s->out_off == s->out.len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define H2NV(n, v)                                                                                           \
    {                                                                                                        \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                           \
    }

static void h2s_head(h2s_stream_t *s, int status, const char *ctype, long len, const char *xname,
                     const char *xval)
{
    char st[8], cl[24];
    snprintf(st, sizeof st, "%d", status);
    snprintf(cl, sizeof cl, "%ld", len);
    nghttp2_nv nva[5] = {H2NV(":status", st), H2NV("content-type", ctype)};
    size_t n = 2;
    if (len >= 0)
        nva[n++] = (nghttp2_nv)H2NV("content-length", cl);
    if (xname)
        nva[n++] = (nghttp2_nv)H2NV(xname, xval);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2s_read_body};
    nghttp2_submit_response(s->conn->session, s->id, nva, n, &prd);
}

static void h2s_more(h2s_stream_t *s, const char *p, size_t n, bool done)
{
    buf_append(&s->out, p, n);
    s->out_done = done;
    if (s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->conn->session, s->id);
    }
}

static void h2s_tick(uv_timer_t *h)
{
    h2s_stream_t *s = h->data;
    char line[64];
    switch (s->kind) {
    case H_STREAM: {
        int n = snprintf(line, sizeof line, "chunk-%d\n", s->chunk_no++);
        bool last = --s->chunks_left <= 0;
        h2s_more(s, line, (size_t)n, last);
        if (!last)
            uv_timer_start(&s->timer, h2s_tick, (uint64_t)s->gap_ms, 0);
        break;
    }
    case H_SLOWBODY:
        h2s_more(s, "late\n", 5, true);
        break;
    case H_SLOW:
        h2s_head(s, 200, "application/json", 11, NULL, NULL);
        h2s_more(s, "{\"ok\":true}", 11, true);
        break;
    case H_CLOSEMID:
        h2s_close(s->conn);
        return;
    case H_NONE:
        break;
    }
    h2s_flush(s->conn);
}

/* One complete request. */
static void h2s_handle(h2s_stream_t *s)
{
    const char *path = s->path;
    atomic_fetch_add(&g_h2->requests, 1);
    s->tag = qint(path, "tag=", 0);
    if (strncmp(path, "/json", 5) == 0) {
        h2s_head(s, 200, "application/json", 11, NULL, NULL);
        h2s_more(s, "{\"ok\":true}", 11, true);
    } else if (strncmp(path, "/echo", 5) == 0) {
        h2s_head(s, 200, "application/octet-stream", (long)s->in.len,
                 s->xtest[0] ? "x-echo-header" : "x-echo-ua", s->xtest[0] ? s->xtest : s->ua);
        h2s_more(s, s->in.data ? s->in.data : "", s->in.len, true);
    } else if (strncmp(path, "/stream", 7) == 0) {
        h2s_head(s, 200, "text/event-stream", -1, NULL, NULL);
        s->kind = H_STREAM;
        s->chunks_left = qint(path, "n=", 5);
        s->gap_ms = qint(path, "gap=", 10);
        h2s_tick(&s->timer);
        return;
    } else if (strncmp(path, "/slowbody", 9) == 0) {
        h2s_head(s, 200, "text/plain", -1, NULL, NULL);
        s->kind = H_SLOWBODY;
        uv_timer_start(&s->timer, h2s_tick, (uint64_t)qint(path, "ms=", 1000), 0);
    } else if (strncmp(path, "/slow", 5) == 0) {
        s->kind = H_SLOW;
        uv_timer_start(&s->timer, h2s_tick, (uint64_t)qint(path, "ms=", 1000), 0);
    } else if (strncmp(path, "/big", 4) == 0) {
        size_t n = (size_t)qint(path, "bytes=", 0);
        char *blob = malloc(n + 1);
        memset(blob, 'x', n);
        h2s_head(s, 200, "text/plain", strncmp(path, "/bigchunked", 11) == 0 ? -1 : (long)n, NULL, NULL);
        h2s_more(s, blob, n, true);
        free(blob);
    } else if (strncmp(path, "/429", 4) == 0) {
        h2s_head(s, 429, "application/json", 16, "retry-after", "7");
        h2s_more(s, "{\"error\":\"rate\"}", 16, true);
    } else if (strncmp(path, "/closemid", 9) == 0) {
        h2s_head(s, 200, "text/plain", 1000, NULL, NULL);
        h2s_more(s, "partial", 7, false);
        s->kind = H_CLOSEMID;
        uv_timer_start(&s->timer, h2s_tick, 50, 0);
    } else if (strncmp(path, "/goaway", 7) == 0) {
        nghttp2_submit_goaway(s->conn->session, NGHTTP2_FLAG_NONE, s->id - 2, NGHTTP2_NO_ERROR, NULL, 0);
    } else if (strncmp(path, "/rst", 4) == 0) {
        nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    } else {
        h2s_head(s, 404, "application/json", 2, NULL, NULL);
        h2s_more(s, "{}", 2, true);
    }
}

static int h2s_on_begin(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2s_conn_t *k = user;
    h2s_stream_t *s = calloc(1, sizeof *s);
    s->conn = k;
    s->id = frame->hd.stream_id;
    uv_timer_init(k->tcp.loop, &s->timer);
    s->timer.data = s;
    s->next = k->streams;
    k->streams = s;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    return 0;
}

static int h2s_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    h2s_stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s)
        return 0;
    if (flags & NGHTTP2_NV_FLAG_NO_INDEX)
        atomic_fetch_add(&g_h2->never_indexed, 1);
    if (strcmp((const char *)name, ":path") == 0)
        snprintf(s->path, sizeof s->path, "%s", value);
    else if (strcmp((const char *)name, "x-test") == 0)
        snprintf(s->xtest, sizeof s->xtest, "%s", value);
    else if (strcmp((const char *)name, "user-agent") == 0)
        snprintf(s->ua, sizeof s->ua, "%s", value);
    return 0;
}

static int h2s_on_data(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                       void *user)
{
    h2s_stream_t *s = nghttp2_session_get_stream_user_data(session, id);
    if (s)
        buf_append(&s->in, data, len);
    return 0;
}

static int h2s_on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    h2s_stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        atomic_fetch_add(&g_h2->rst_received, 1);
        if (s && s->tag > 0 && s->tag < N_TAGS)
            atomic_fetch_add(&g_h2->rst_tag[s->tag], 1);
    }
    if (s && (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        h2s_handle(s);
    return 0;
}

static int h2s_on_close(nghttp2_session *session, int32_t id, uint32_t code, void *user)
{
    h2s_conn_t *k = user;
    h2s_stream_t *s = nghttp2_session_get_stream_user_data(session, id);
    if (!s)
        return 0;
    for (h2s_stream_t **p = &k->streams; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    uv_close((uv_handle_t *)&s->timer, h2s_stream_freed);
    return 0;
}

static void h2s_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    h2s_conn_t *k = st->data;
    if (nread < 0) {
        h2s_close(k);
    } else if (nread > 0) {
        const char *p = b->base;
        size_t n = (size_t)nread;
        char plain[16384];
        if (k->ssl) {
            BIO_write(SSL_get_rbio(k->ssl), p, (int)n);
            if (!SSL_is_init_finished(k->ssl)) {
                int rc = SSL_do_handshake(k->ssl);
                h2s_drain_tls(k);
                if (rc <= 0 && SSL_get_error(k->ssl, rc) != SSL_ERROR_WANT_READ)
                    h2s_close(k);
                if (rc != 1)
                    goto out; /* nothing of HTTP/2 may go out before the handshake is done */
            }
            int got;
            while ((got = SSL_read(k->ssl, plain, sizeof plain)) > 0)
                if (nghttp2_session_mem_recv(k->session, (uint8_t *)plain, (size_t)got) < 0) {
                    h2s_close(k);
                    goto out;
                }
        } else if (nghttp2_session_mem_recv(k->session, (const uint8_t *)p, n) < 0) {
            h2s_close(k);
            goto out;
        }
        h2s_flush(k);
    }
out:
    free(b->base);
}

static int h2s_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                    unsigned int inlen, void *arg)
{
    return nghttp2_select_next_protocol((unsigned char **)out, outlen, in, inlen) == 1 ? SSL_TLSEXT_ERR_OK
                                                                                       : SSL_TLSEXT_ERR_NOACK;
}

static void h2s_accept(uv_stream_t *server, int status)
{
    h2s_listener_t *l = server->data;
    h2s_conn_t *k = calloc(1, sizeof *k);
    uv_tcp_init(server->loop, &k->tcp);
    k->tcp.data = k;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2s_on_begin);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2s_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2s_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2s_on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2s_on_close);
    nghttp2_session_server_new(&k->session, cbs, k);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 5000}};
    nghttp2_submit_settings(k->session, NGHTTP2_FLAG_NONE, iv, 1);
    if (uv_accept(server, (uv_stream_t *)&k->tcp) != 0) {
        h2s_close(k);
        return;
    }
    atomic_fetch_add(&g_h2->connections, 1);
    if (l->ctx) {
        k->ssl = SSL_new(l->ctx);
        SSL_set_bio(k->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_accept_state(k->ssl);
    } else {
        h2s_flush(k);
    }
    uv_read_start((uv_stream_t *)&k->tcp, srv_alloc, h2s_read);
}

static SSL_CTX *h2s_tls_ctx(bool alpn)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_file(ctx, g_h2_cert, SSL_FILETYPE_PEM);
    SSL_CTX_use_PrivateKey_file(ctx, g_h2_key, SSL_FILETYPE_PEM);
    if (alpn)
        SSL_CTX_set_alpn_select_cb(ctx, h2s_alpn, NULL);
    return ctx;
}

static void h2_server_main(int fds[3])
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    static h2s_listener_t ls[3];
    for (int i = 0; i < 3; i++) {
        ls[i].ctx = i == 0 ? NULL : h2s_tls_ctx(i == 1);
        uv_tcp_init(&loop, &ls[i].tcp);
        ls[i].tcp.data = &ls[i];
        uv_tcp_open(&ls[i].tcp, fds[i]);
        uv_listen((uv_stream_t *)&ls[i].tcp, 4096, h2s_accept);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

/* Makes the self-signed certificate (it is its own CA) and starts the HTTP/2 server child. */
static int h2_server_start(void)
{
    g_h2 = mmap(NULL, sizeof *g_h2, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_h2 == MAP_FAILED)
        return -1;
    snprintf(g_h2_dir, sizeof g_h2_dir, "/tmp/test_http2_XXXXXX");
    if (make_cert(g_h2_dir, g_h2_cert, sizeof g_h2_cert, g_h2_key, sizeof g_h2_key) != 0)
        return -1;
    int fds[3];
    int *ports[3] = {&g_h2_port, &g_h2s_port, &g_h2s_noalpn_port};
    for (int i = 0; i < 3; i++)
        if ((fds[i] = bind_loopback(ports[i])) < 0 || listen(fds[i], 4096) != 0)
            return -1;
    g_h2_server = fork();
    if (g_h2_server < 0)
        return -1;
    if (g_h2_server == 0)
        h2_server_main(fds);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    return 0;
}

static void h2_server_stop(void)
{
    stop_child(&g_h2_server);
    unlink(g_h2_cert);
    unlink(g_h2_key);
    if (g_h2_dir[0])
        rmdir(g_h2_dir);
}

/* ================= native HTTP/2 tests ================= */

#define URL2(path) url2((char[256]){0}, 256, "http", g_h2_port, (path))

static size_t h2_conns(env_t *e)
{
    http_stats_t st;
    http_client_stats(e->client, &st);
    return st.h2_connections;
}

/* One more GET /json over HTTP/2 goes on the connection the test began with, which is still the only one. */
static void h2_next_call_reuses(env_t *e, long conns0)
{
    http_request_t next = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/json")};
    call_t n = {0};
    run_one(e, &n, &next, 3000);
    assert_int_equal(n.code, HTTP_OK);
    assert_true(n.reused);
    assert_int_equal(h2_conns(e), 1);
    assert_int_equal(srv(&g_h2->connections) - conns0, 1);
    call_free(&n);
}

static void h2_get_and_post_round_trip(void **state)
{
    env_t e;
    env_init(&e, NULL);
    long conns0 = srv(&g_h2->connections), rst0 = srv(&g_h2->rst_received);
    http_request_t get = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/json"), .buffer_body = true};
    call_t g = {.want_header = "Content-Type"};
    run_one(&e, &g, &get, 3000);
    assert_int_equal(g.code, HTTP_OK);
    assert_string_equal(g.error, "");
    assert_int_equal(g.status, 200);
    assert_string_equal(g.ctype, "application/json");
    assert_string_equal(g.hdr_done, "application/json");
    assert_string_equal(g.body.data, "{\"ok\":true}");
    assert_int_equal(g.bytes, 11);
    assert_false(g.reused);
    assert_true(g.response_ms >= 0 && g.first_byte_ms >= g.response_ms && g.total_ms >= g.first_byte_ms);

    const char *headers[] = {
        "Content-Type: application/octet-stream", "X-Test: hello there", "Connection: close",
        "Expect:", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"};
    long never0 = srv(&g_h2->never_indexed);
    call_t p = {0};
    post_echo(&e, &p, HTTP_VERSION_2, URL2("/echo"), headers, 5);
    assert_true(p.reused);
    /* traceparent changes on every request: never indexed, so it cannot push the others out of HPACK */
    assert_int_equal(srv(&g_h2->never_indexed) - never0, 1);

    http_request_t ua = {.version = HTTP_VERSION_2, .url = URL2("/echo"), .body = "", .body_len = 0};
    call_t u = {.want_header = "x-echo-ua"};
    run_one(&e, &u, &ua, 3000);
    assert_int_equal(u.code, HTTP_OK);
    assert_memory_equal(u.hdr, "parley/", 7);

    assert_int_equal(srv(&g_h2->connections) - conns0, 1);
    assert_int_equal(srv(&g_h2->rst_received) - rst0, 0); /* a complete exchange needs no reset */
    assert_int_equal(h2_conns(&e), 1);
    http_stats_t st = expect_counts(&e, 3, 3, 0);
    assert_int_equal(st.h2_streams, 0);
    call_free(&g);
    call_free(&p);
    call_free(&u);
    env_close(&e);
}

static void h2_concurrent_streams_share_one_connection(void **state)
{
    enum { N = 200 };
    env_t e;
    env_init(&e, NULL);
    long conns0 = srv(&g_h2->connections);
    run_echoes(&e, N, HTTP_VERSION_2, URL2("/echo"), 10000, N);
    assert_int_equal(h2_conns(&e), 1);
    assert_int_equal(srv(&g_h2->connections) - conns0, 1);
    env_close(&e);
}

static void h2_cancel_resets_the_stream_and_keeps_the_connection(void **state)
{
    env_t e;
    env_init(&e, NULL);
    long conns0 = srv(&g_h2->connections);
    http_request_t req = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/stream?n=1000&gap=10&tag=5")};
    cancel_after_three_chunks(&e, &req, &g_h2->rst_tag[5]); /* the server got RST_STREAM */
    assert_int_equal(h2_conns(&e), 1);

    /* Cancelled while waiting for the head, and before the request went out at all. */
    http_request_t slow = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/slow?ms=500&tag=6")};
    call_t w = {0}, unsent = {0};
    start(&e, &w, &slow);
    run_for(&e, 50);
    http_cancel(w.t);
    start(&e, &unsent, &slow);
    http_cancel(unsent.t);
    RUN_UNTIL(&e, srv(&g_h2->rst_tag[6]) == 1, 2000);
    assert_int_equal(srv(&g_h2->rst_tag[6]), 1);

    h2_next_call_reuses(&e, conns0);
    assert_int_equal(w.done + unsent.done, 0);
    env_close(&e);
}

static void h2_timeouts_reset_the_stream_only(void **state)
{
    env_t e;
    env_init(&e, NULL);
    long conns0 = srv(&g_h2->connections);
    http_request_t fb = {.method = HTTP_GET,
                         .version = HTTP_VERSION_2,
                         .url = URL2("/slowbody?ms=1500"),
                         .first_byte_timeout_ms = 200};
    call_t a = {0};
    run_one(&e, &a, &fb, 3000);
    assert_int_equal(a.code, HTTP_ERR_TIMEOUT_FIRST_BYTE);
    assert_int_equal(a.status, 200); /* the head came, the body did not */
    assert_true(a.total_ms >= 190 && a.total_ms < 1000);
    assert_non_null(strstr(a.error, "200 ms"));

    http_request_t idle = {.method = HTTP_GET,
                           .version = HTTP_VERSION_2,
                           .url = URL2("/stream?n=3&gap=700"),
                           .idle_timeout_ms = 200};
    call_t b = {0};
    run_one(&e, &b, &idle, 3000);
    assert_int_equal(b.code, HTTP_ERR_TIMEOUT_IDLE);
    assert_int_equal(b.chunks, 1);

    http_request_t total = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/slow?ms=2000"), .total_timeout_ms = 300};
    call_t c = {0};
    run_one(&e, &c, &total, 3000);
    assert_int_equal(c.code, HTTP_ERR_TIMEOUT_TOTAL);
    assert_int_equal(c.status, 0);

    h2_next_call_reuses(&e, conns0);
    call_free(&a);
    call_free(&b);
    call_free(&c);
    env_close(&e);
}

static void h2_connection_errors(void **state)
{
    int port;
    close(bind_loopback(&port)); /* nobody listens there now */
    env_t e;
    env_init(&e, NULL);
    char u[128];
    http_request_t refused = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = url2(u, sizeof u, "http", port, "/")};
    call_t a = {0};
    run_one(&e, &a, &refused, 3000);
    assert_int_equal(a.code, HTTP_ERR_CONNECT);
    assert_non_null(strstr(a.error, "refused"));
    assert_false(a.had_response);

    /* A listener that never answers: the TLS handshake cannot finish within the connect timeout. */
    int fd = bind_loopback(&port);
    assert_true(fd >= 0 && listen(fd, 16) == 0);
    char s[128];
    http_request_t silent = {.method = HTTP_GET,
                             .version = HTTP_VERSION_2,
                             .url = url2(s, sizeof s, "https", port, "/"),
                             .connect_timeout_ms = 200,
                             .tls_insecure = true};
    call_t b = {0};
    run_one(&e, &b, &silent, 3000);
    assert_int_equal(b.code, HTTP_ERR_TIMEOUT_CONNECT);
    close(fd);

    http_request_t mid = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/closemid")};
    call_t c = {0};
    run_one(&e, &c, &mid, 3000);
    assert_int_equal(c.code, HTTP_ERR_CLOSED);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.bytes, 7);

    http_request_t rst = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/rst")};
    call_t d = {0};
    run_one(&e, &d, &rst, 3000);
    assert_int_equal(d.code, HTTP_ERR_CLOSED);
    assert_non_null(strstr(d.error, "reset"));

    char named[128];
    snprintf(named, sizeof named, "http://localhost:%d/json", g_h2_port);
    http_request_t by_name = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = named};
    call_t r = {0};
    run_one(&e, &r, &by_name, 3000); /* resolved with uv_getaddrinfo */
    assert_int_equal(r.code, HTTP_OK);
    assert_int_equal(r.status, 200);

    /* GOAWAY refusing the stream: it fails, the connection takes no new stream, the next one is new. */
    long conns0 = srv(&g_h2->connections);
    http_request_t gone = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/goaway")};
    call_t g = {0};
    run_one(&e, &g, &gone, 3000);
    assert_int_equal(g.code, HTTP_ERR_CLOSED);
    assert_non_null(strstr(g.error, "refused"));
    http_request_t after = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/json")};
    call_t n = {0};
    run_one(&e, &n, &after, 3000);
    assert_int_equal(n.code, HTTP_OK);
    assert_false(n.reused);
    assert_int_equal(srv(&g_h2->connections) - conns0, 1);
    RUN_UNTIL(&e, h2_conns(&e) == 2, 1000); /* the drained one closed; the other is localhost's */
    assert_int_equal(h2_conns(&e), 2);
    call_free(&g);
    call_free(&n);
    call_free(&r);

    http_request_t bad = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = "http://user@127.0.0.1:1/"};
    char err[128] = "";
    bad.on_done = rec_done;
    assert_null(http_start(e.client, &bad, err, sizeof err));
    assert_true(err[0] != '\0');
    const char *bad_header[] = {"no colon here"};
    http_request_t badh = {.method = HTTP_GET,
                           .version = HTTP_VERSION_2,
                           .url = URL2("/json"),
                           .headers = bad_header,
                           .n_headers = 1,
                           .on_done = rec_done};
    assert_null(http_start(e.client, &badh, err, sizeof err));
    call_free(&a);
    call_free(&b);
    call_free(&c);
    call_free(&d);
    env_close(&e);
}

static void h2_limits_and_abort(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t by_len = {.method = HTTP_GET,
                             .version = HTTP_VERSION_2,
                             .url = URL2("/big?bytes=5000"),
                             .max_response_bytes = 1000};
    call_t a = {0};
    run_one(&e, &a, &by_len, 3000);
    assert_int_equal(a.code, HTTP_ERR_TOO_LARGE);
    assert_int_equal(a.bytes, 0);
    http_request_t by_body = {.method = HTTP_GET,
                              .version = HTTP_VERSION_2,
                              .url = URL2("/bigchunked?bytes=50000"),
                              .max_response_bytes = 20000,
                              .buffer_body = true};
    call_t b = {0};
    run_one(&e, &b, &by_body, 3000);
    assert_int_equal(b.code, HTTP_ERR_TOO_LARGE);
    assert_true(b.bytes <= 20000);
    http_request_t fits = {.method = HTTP_GET,
                           .version = HTTP_VERSION_2,
                           .url = URL2("/bigchunked?bytes=50000"),
                           .buffer_body = true};
    call_t c = {0};
    run_one(&e, &c, &fits, 3000);
    assert_int_equal(c.code, HTTP_OK);
    assert_int_equal(c.body.len, 50000);

    http_request_t st = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/stream?n=100&gap=5&tag=9")};
    call_t d = {.abort_at_chunk = 2};
    run_one(&e, &d, &st, 3000);
    assert_int_equal(d.code, HTTP_ERR_ABORTED);
    assert_int_equal(d.chunks, 2);
    RUN_UNTIL(&e, srv(&g_h2->rst_tag[9]) == 1, 2000);
    assert_int_equal(srv(&g_h2->rst_tag[9]), 1);

    http_request_t r429 = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/429"), .buffer_body = true};
    call_t f = {.want_header = "Retry-After"};
    run_one(&e, &f, &r429, 3000);
    assert_int_equal(f.status, 429);
    assert_int_equal(f.retry_after_ms, 7000);
    assert_string_equal(f.hdr, "7");
    assert_int_equal(h2_conns(&e), 1);
    call_free(&a);
    call_free(&b);
    call_free(&c);
    call_free(&d);
    call_free(&f);
    env_close(&e);
}

static void h2_cancel_and_close_from_inside_callbacks(void **state)
{
    env_t e;
    env_init(&e, NULL);
    call_t in_data = {.cancel_at_chunk = 3};
    call_t in_response = {.cancel_in_response = true};
    http_request_t r1 = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/stream?n=100&gap=5&tag=10")};
    http_request_t r2 = {
        .method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/stream?n=100&gap=5&tag=11")};
    start(&e, &in_data, &r1);
    start(&e, &in_response, &r2);
    RUN_UNTIL(&e, srv(&g_h2->rst_tag[10]) && srv(&g_h2->rst_tag[11]), 3000);
    assert_int_equal(srv(&g_h2->rst_tag[10]), 1);
    assert_int_equal(srv(&g_h2->rst_tag[11]), 1);
    run_for(&e, 50);
    assert_int_equal(in_data.chunks, 3);
    assert_int_equal(in_response.chunks, 0);
    assert_int_equal(in_data.done + in_response.done, 0);
    assert_int_equal(in_data.after_cancel + in_response.after_cancel, 0);

    /* Closing the client from on_data: no further callback of any transfer. */
    call_t k[3] = {0};
    http_request_t slow = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/slow?ms=2000")};
    start_n(&e, k, 3, &slow);
    call_t closer = {.close_client_in_data = true};
    http_request_t rs = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/stream?n=50&gap=5")};
    start(&e, &closer, &rs);
    RUN_UNTIL(&e, e.closed, 3000);
    assert_true(e.closed);
    assert_int_equal(closer.chunks, 1);
    assert_int_equal(closer.done, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(k[i].done, 0);
    call_free(&in_data);
    call_free(&in_response);
    call_free(&closer);
    env_close(&e);
}

static void h2_streamed_chunks_arrive_in_order(void **state)
{
    env_t e;
    env_init(&e, NULL);
    http_request_t req = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/stream?n=20&gap=5")};
    call_t k = {0};
    run_twenty_chunks(&e, &k, &req);
    assert_true(k.chunks >= 10); /* delivered as they came, not gathered */
    assert_int_equal(k.responses, 1);
    assert_string_equal(k.ctype, "text/event-stream");
    call_free(&k);
    env_close(&e);
}

static void h2_tls_alpn(void **state)
{
    env_t e;
    env_init(&e, NULL);
    char u[128], v[128];
    url2(u, sizeof u, "https", g_h2s_port, "/json");
    url2(v, sizeof v, "https", g_h2s_noalpn_port, "/json");
    http_request_t reqs[4];
    tls_requests(reqs, HTTP_VERSION_2, u, g_h2_cert);
    reqs[3] = reqs[1]; /* verified against the certificate, on the port without ALPN */
    reqs[3].url = v;
    http_code_t want[] = {HTTP_ERR_TLS, HTTP_OK, HTTP_OK, HTTP_ERR_OTHER};
    for (size_t i = 0; i < BASE_ARRAY_LEN(reqs); i++) {
        call_t k = {0};
        reqs[i].buffer_body = true;
        run_one(&e, &k, &reqs[i], 6000);
        if (k.code != want[i])
            printf("request %zu: %s: %s\n", i, http_code_name(k.code), k.error);
        assert_int_equal(k.code, want[i]);
        if (want[i] == HTTP_OK) {
            assert_int_equal(k.status, 200);
            assert_string_equal(k.body.data, "{\"ok\":true}");
        }
        if (i == 0)
            assert_non_null(strstr(k.error, "verif"));
        if (i == 3)
            assert_string_equal(k.error, "server did not agree to HTTP/2");
        call_free(&k);
    }
    call_t again = {0};
    run_one(&e, &again, &reqs[1], 3000);
    assert_true(again.reused);
    call_free(&again);
    env_close(&e);
}

static void h2_queue_beyond_the_connection_cap_and_idle_close(void **state)
{
    enum { N = 1300 };
    http_client_options_t o;
    http_client_options_init(&o);
    o.h2_max_connections_per_origin = 1;
    o.h2_idle_timeout_ms = 200;
    env_t e;
    env_init(&e, &o);
    call_t *k = calloc(N, sizeof *k);
    http_request_t req = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/slow?ms=300")};
    start_n(&e, k, N, &req);
    finish_all_ok(&e, k, N, 10000, NULL);
    assert_int_equal(h2_conns(&e), 1);
    RUN_UNTIL(&e, h2_conns(&e) == 0, 2000);
    assert_int_equal(h2_conns(&e), 0);
    free(k);
    env_close(&e);
}

/* Heap per in-flight stream with 2,000 streams waiting on a slow server, and CPU per request. */
static void h2_memory_and_cpu_per_stream(void **state)
{
    enum { N = 2000, M = 20000, BATCH = 500 };
    env_t e;
    env_init(&e, NULL);
    call_t *k = calloc(N, sizeof *k);
    call_t warm = {0};
    http_request_t rj = {.method = HTTP_GET, .version = HTTP_VERSION_2, .url = URL2("/json")};
    run_one(&e, &warm, &rj, 3000);
    long reqs0 = srv(&g_h2->requests);
    size_t base = mallinfo2().uordblks;
    http_request_t req = {.method = HTTP_GET,
                          .version = HTTP_VERSION_2,
                          .url = URL2("/slow?ms=2000"),
                          .total_timeout_ms = 20000,
                          .first_byte_timeout_ms = 10000,
                          .idle_timeout_ms = 10000};
    start_n(&e, k, N, &req);
    RUN_UNTIL(&e, srv(&g_h2->requests) - reqs0 >= N, 10000);
    assert_int_equal(srv(&g_h2->requests) - reqs0, N);
    run_for(&e, 50);
    size_t peak = mallinfo2().uordblks;
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.in_flight, N);
    double per = ((double)peak - (double)base) / N;
    finish_all_ok(&e, k, N, 15000, NULL);
    free(k);

    call_t *b = calloc(BATCH, sizeof *b);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int64_t t0 = base_mono_ms();
    for (int done = 0; done < M; done += BATCH) {
        memset(b, 0, BATCH * sizeof *b);
        start_n(&e, b, BATCH, &rj);
        finish_all_ok(&e, b, BATCH, 10000, NULL);
    }
    getrusage(RUSAGE_SELF, &r1);
    double us =
        (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 +
        (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    http_client_stats(e.client, &st);
    if (peak > 0) /* mallinfo2 reports nothing under ASan */
        printf("http2 memory: %d streams in flight on %zu connections: %.0f B heap per stream; "
               "cpu: %.1f us (user+sys) per request, %d requests in %lld ms\n",
               N, st.h2_connections, per, us / M, M, (long long)(base_mono_ms() - t0));
    assert_true(peak == 0 || per < 1536);
    assert_true(st.h2_connections <= 2);
    free(b);
    call_free(&warm);
    env_close(&e);
}

static int all_setup(void **state) { return group_setup(state) < 0 ? -1 : h2_server_start(); }

static int all_teardown(void **state)
{
    h2_server_stop();
    return group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(post_body_arrives_intact),
        cmocka_unit_test(buffered_json_response),
        cmocka_unit_test(streamed_chunks_arrive_in_order),
        cmocka_unit_test(connect_timeout),
        cmocka_unit_test(first_byte_timeout_counts_body_not_head),
        cmocka_unit_test(idle_timeout_between_chunks),
        cmocka_unit_test(total_timeout),
        cmocka_unit_test(response_size_limit),
        cmocka_unit_test(status_429_with_retry_after),
        cmocka_unit_test(connection_errors),
        cmocka_unit_test(bad_requests_are_refused),
        cmocka_unit_test(allocation_failures_are_clean),
        cmocka_unit_test(tls_verification),
        cmocka_unit_test(cancel_mid_stream_closes_the_connection),
        cmocka_unit_test(cancel_from_inside_callbacks),
        cmocka_unit_test(cancel_from_another_on_done),
        cmocka_unit_test(start_from_inside_callbacks),
        cmocka_unit_test(many_concurrent_transfers),
        cmocka_unit_test(keep_alive_connections_are_reused),
        cmocka_unit_test(sequential_calls_share_one_connection),
        cmocka_unit_test(close_with_transfers_in_flight),
        cmocka_unit_test(close_from_inside_on_data),
        cmocka_unit_test(memory_per_transfer),
        cmocka_unit_test(h2_get_and_post_round_trip),
        cmocka_unit_test(h2_concurrent_streams_share_one_connection),
        cmocka_unit_test(h2_cancel_resets_the_stream_and_keeps_the_connection),
        cmocka_unit_test(h2_timeouts_reset_the_stream_only),
        cmocka_unit_test(h2_connection_errors),
        cmocka_unit_test(h2_limits_and_abort),
        cmocka_unit_test(h2_cancel_and_close_from_inside_callbacks),
        cmocka_unit_test(h2_streamed_chunks_arrive_in_order),
        cmocka_unit_test(h2_tls_alpn),
        cmocka_unit_test(h2_queue_beyond_the_connection_cap_and_idle_close),
        cmocka_unit_test(h2_memory_and_cpu_per_stream),
    };
    return cmocka_run_group_tests_name("http", tests, all_setup, all_teardown);
}
