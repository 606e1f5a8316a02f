/* test_http.c — the http module against a small HTTP/1.1 server that runs in a forked child (so that
 * its memory and CPU are not the client's): bodies, streaming, every timeout kind, limits, errors,
 * cancellation from everywhere, concurrency, keep-alive reuse, and heap per in-flight transfer. */
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

static const char *url(char *buf, size_t n, const char *path)
{
    snprintf(buf, n, "http://127.0.0.1:%d%s", g_port, path);
    return buf;
}
#define URL(path) url((char[256]){0}, 256, (path))

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

static void post_body_arrives_intact(void **state)
{
    env_t e;
    env_init(&e, NULL);
    size_t n = 20000;
    char *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)(i * 7);
    char *copy = malloc(n);
    memcpy(copy, body, n);
    const char *headers[] = {"Content-Type: application/octet-stream", "X-Test: hello there"};
    http_request_t req = {.url = URL("/echo"),
                          .headers = headers,
                          .n_headers = 2,
                          .body = copy,
                          .body_len = n,
                          .copy_body = true,
                          .buffer_body = true};
    call_t k = {.want_header = "X-Echo-Header"};
    start(&e, &k, &req);
    memset(copy, 0, n); /* http copied it */
    free(copy);
    RUN_UNTIL(&e, k.done, 3000);
    assert_int_equal(k.code, HTTP_OK);
    assert_int_equal(k.status, 200);
    assert_int_equal(k.body.len, n);
    assert_memory_equal(k.body.data, body, n);
    assert_string_equal(k.hdr, "hello there");
    assert_string_equal(k.hdr_done, "hello there");
    free(body);
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
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.started, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.in_flight, 0);
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
    run_one(&e, &k, &req, 5000);
    assert_int_equal(k.code, HTTP_OK);
    buf_t want;
    buf_init(&want, 0);
    for (int i = 0; i < 20; i++)
        buf_printf(&want, "chunk-%d\n", i);
    assert_int_equal(k.data.len, want.len);
    assert_memory_equal(k.data.data, want.data, want.len);
    assert_int_equal(k.bytes, want.len);
    assert_true(k.chunks > 1);
    assert_null(k.body.data); /* not buffered */
    buf_free(&want);
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
    assert_non_null(mkdtemp(dir));
    char cert[64], key[64];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
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
    assert_int_equal(run_quiet(req), 0);
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
    http_request_t plain = {.method = HTTP_GET, .url = u, .total_timeout_ms = 5000};
    http_request_t with_ca = {.method = HTTP_GET, .url = u, .total_timeout_ms = 5000, .ca_file = cert};
    http_request_t insecure = {.method = HTTP_GET, .url = u, .total_timeout_ms = 5000, .tls_insecure = true};
    http_request_t *reqs[] = {&plain, &with_ca, &insecure};
    http_code_t want[] = {HTTP_ERR_TLS, HTTP_OK, HTTP_OK};
    for (size_t i = 0; i < BASE_ARRAY_LEN(reqs); i++) {
        call_t k = {0};
        run_one(&e, &k, reqs[i], 6000);
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
    call_t k = {0};
    start(&e, &k, &req);
    RUN_UNTIL(&e, k.chunks >= 3, 3000);
    assert_true(k.chunks >= 3);
    k.cancelled = true;
    http_cancel(k.t);
    int seen = k.chunks;
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.cancelled, 1);
    RUN_UNTIL(&e, srv(&g_stats->eof_tag[1]) == 1, 2000);
    assert_int_equal(srv(&g_stats->eof_tag[1]), 1);
    run_for(&e, 100);
    assert_int_equal(k.chunks, seen);
    assert_int_equal(k.done, 0);
    assert_int_equal(k.after_cancel, 0);
    call_free(&k);
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
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.started, 3);
    assert_int_equal(st.completed, 3);
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
    call_t *k = calloc(N, sizeof *k);
    char(*bodies)[32] = calloc(N, 32);
    for (int i = 0; i < N; i++) {
        int n = snprintf(bodies[i], 32, "request-%d", i);
        http_request_t req = {.url = URL("/echo"),
                              .body = bodies[i],
                              .body_len = (size_t)n,
                              .buffer_body = true,
                              .total_timeout_ms = 20000};
        start(&e, &k[i], &req);
    }
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.in_flight, N);
    RUN_UNTIL(&e, count_done(k, N) == N, 20000);
    assert_int_equal(count_done(k, N), N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(k[i].code, HTTP_OK);
        assert_string_equal(k[i].body.data, bodies[i]);
        call_free(&k[i]);
    }
    http_client_stats(e.client, &st);
    assert_int_equal(st.completed, N);
    assert_int_equal(st.in_flight, 0);
    assert_true(st.idle_handles <= HTTP_DEFAULT_MAX_IDLE_HANDLES);
    free(k);
    free(bodies);
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
    for (int i = 0; i < N; i++)
        start(&e, &k[i], &req);
    RUN_UNTIL(&e, count_done(k, N) == N, 10000);
    assert_int_equal(count_done(k, N), N);
    int reused = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(k[i].code, HTTP_OK);
        reused += k[i].reused;
        call_free(&k[i]);
    }
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
    for (int i = 0; i < N; i++)
        start(&e, &k[i], &req);
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
    for (int i = 0; i < N; i++)
        start(&e, &k[i], &req);
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
    for (int i = 0; i < N; i++)
        start(&e, &k[i], &req);
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
    RUN_UNTIL(&e, count_done(k, N) == N, 15000);
    assert_int_equal(count_done(k, N), N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(k[i].code, HTTP_OK);
        call_free(&k[i]);
    }
    assert_true(peak == 0 || (per > 1000 && per < 16384));
    free(k);
    call_free(&warm);
    env_close(&e);
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
    };
    return cmocka_run_group_tests_name("http", tests, group_setup, group_teardown);
}
