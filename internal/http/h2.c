/* h2.c — the native HTTP/2 client (libnghttp2 over uv_tcp_t): a few connections per origin, many
 * streams each; a cancelled or timed-out transfer is an RST_STREAM and the connection stays.
 *
 * Connections: per origin (scheme, host, port, TLS settings) a list of connections; a request takes
 * the first one with a free stream slot (the peer's SETTINGS_MAX_CONCURRENT_STREAMS, capped), else a
 * new one is opened (up to h2_max_connections_per_origin) unless one is still waiting for the peer's
 * SETTINGS; otherwise it waits in the origin's FIFO queue. Reading goes through one buffer shared by
 * the client straight into nghttp2_session_mem_recv; DATA is handed to on_data / the body buffer from
 * nghttp2's callback. Writing is coalesced: a connection with output is marked dirty and every dirty
 * connection is flushed once per loop iteration from a uv_prepare handle (uv_try_write, then
 * uv_write for the rest; no new output is produced while a write is in flight).
 *
 * Reentrancy: user callbacks run inside nghttp2 callbacks. A stream cancelled from inside any
 * callback is detached from nghttp2 at once (RST_STREAM, stream user data NULL) and freed by the
 * outermost http_leave; a connection's nghttp2 session is deleted only from the close callback of its
 * libuv handles, never while nghttp2 is on the stack. */
#include "http/http_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#define H2_READ_BUF        (64 * 1024)
#define H2_PLAIN_BUF       (32 * 1024)
#define H2_FLUSH_MAX       (256 * 1024) /* output collected for one write */
#define H2_KEEP_OUT_CAP    (256 * 1024) /* a larger output buffer is freed after its write */
#define H2_DEFAULT_STREAMS 100          /* assumed until the peer's SETTINGS arrive */
#define H2_MAX_STREAMS     1000
#define H2_STREAM_WINDOW   (1 << 20)
#define H2_CONN_WINDOW     (1 << 30)
#define H2_CONNECT_MS      300000 /* connect_timeout_ms 0, as curl's default */
#define H2_MAX_HOST        255
#define H2_MAX_FIXED_NV    6 /* :method :scheme :authority user-agent content-length (+ :path in block) */

typedef enum { S_QUEUED = 1, S_ACTIVE, S_ZOMBIE, S_DONE } sstate_t;
typedef enum { C_RESOLVING = 1, C_CONNECTING, C_TLS, C_READY, C_DEAD } cstate_t;

typedef struct h2_stream h2_stream_t;
typedef struct h2_conn h2_conn_t;
typedef struct h2_origin h2_origin_t;

struct h2_stream {
    http_transfer_t x; /* first: an h2_stream_t is an http_transfer_t */
    h2_origin_t *origin;
    h2_conn_t *conn;          /* while S_ACTIVE */
    h2_stream_t *prev, *next; /* in its connection's streams, its origin's queue or the zombies */
    char *queued;             /* while S_QUEUED: the request block (see request_block) */
    size_t queued_len;
    const char *body; /* POST body (the caller's, or the copy after this struct) */
    size_t body_len, body_off;
    buf_t head; /* final response head: "name\0value\0"..., bounded */
    int32_t id;
    uint8_t state; /* sstate_t */
    bool post, reused, in_1xx;
};

struct h2_conn {
    h2_t *h2;
    h2_origin_t *origin;
    h2_conn_t *prev, *next; /* in origin->conns, or in h2->draining after GOAWAY */
    h2_conn_t *dirty_next;
    nghttp2_session *session;
    tls_session_t *tls; /* https only */
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect timeout, or a deferred connect failure */
    uv_connect_t creq;
    uv_getaddrinfo_t gai;
    uv_write_t wreq;
    buf_t out;
    h2_stream_t *streams;
    size_t n_streams;
    int refs; /* libuv handles and requests that still point here */
    uint8_t state;
    bool dirty, writing, goaway, settings_seen, in_origin, gai_pending;
    http_code_t fail_code; /* a failure found inside a caller (reported from the timer) */
    int64_t started_ms, connect_ms, idle_since_ms, connect_timeout_ms;
    char fail_text[96];
};

struct h2_origin {
    h2_t *h2;
    h2_origin_t *next;
    bool https, insecure;
    int port;
    char *host, *ca_file, *authority;
    tls_ctx_t *tls_ctx; /* https only; owned by h2->tls */
    h2_conn_t *conns;
    size_t n_conns; /* in conns (draining ones are not) */
    h2_stream_t *q_head, *q_tail;
    int64_t connect_timeout_ms; /* of the latest request, for connections opened from the queue */
    bool pumping;
};

struct h2 {
    http_client_t *client;
    h2_origin_t *origins;
    h2_conn_t *draining;
    h2_conn_t *dirty;
    h2_stream_t *zombies;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    h2_tls_ctx_t *tls;
    uv_prepare_t prepare;
    uv_timer_t idle_timer;
    bool prepare_on;
    size_t max_conns;
    int64_t idle_ms;
    size_t n_conns, n_streams;
    buf_t scratch; /* the request block being built by h2_start */
    buf_t stage;   /* TLS: plaintext collected from nghttp2 before SSL_write */
    nghttp2_nv *nva;
    size_t nva_cap;
    char rbuf[H2_READ_BUF];
    char pbuf[H2_PLAIN_BUF];
};

typedef struct {
    bool https;
    const char *host;
    size_t host_len;
    int port;
    const char *path; /* from the first '/' or '?' up to '#' */
    size_t path_len;
} url_t;

static void conn_dirty(h2_conn_t *k);
static void conn_unlink(h2_conn_t *k);
static void conn_fail(h2_conn_t *k, http_code_t code, const char *text);
static void conn_close(h2_conn_t *k);
static void origin_pump(h2_origin_t *o);
static void on_prepare(uv_prepare_t *p);
static void on_conn_timer(uv_timer_t *t);

/* ---- streams ---- */

static void stream_unlink(h2_stream_t **head, h2_stream_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void stream_push(h2_stream_t **head, h2_stream_t *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

static void queue_remove(h2_origin_t *o, h2_stream_t *s)
{
    if (o->q_tail == s)
        o->q_tail = s->prev;
    stream_unlink(&o->q_head, s);
}

static void stream_free(http_client_t *c, h2_stream_t *s)
{
    http_heap_remove(c, &s->x);
    if (s->x.timed)
        c->n_timed--;
    buf_free(&s->head);
    buf_free(&s->x.body);
    free(s->queued);
    free(s);
}

/* Takes an active stream off its connection; rst: also reset it (NGHTTP2_CANCEL; before its HEADERS
 * went out this only drops the queued request). */
static void stream_detach(h2_stream_t *s, bool rst)
{
    h2_conn_t *k = s->conn;
    stream_unlink(&k->streams, s);
    k->n_streams--;
    s->conn = NULL;
    if (k->state == C_DEAD)
        return;
    if (rst)
        nghttp2_submit_rst_stream(k->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    nghttp2_session_set_stream_user_data(k->session, s->id, NULL); /* fails before HEADERS went out */
    if (k->n_streams == 0)
        k->idle_since_ms = base_mono_ms();
    conn_dirty(k);
}

/* Takes s out of its connection or queue (not freed). */
static void stream_takeout(h2_stream_t *s, bool rst)
{
    if (s->state == S_QUEUED)
        queue_remove(s->origin, s);
    else if (s->state == S_ACTIVE && s->conn)
        stream_detach(s, rst);
}

/* Ends s with on_done: text NULL = http's own text for code. Frees s; a freed slot serves the queue. */
static void stream_finish(h2_stream_t *s, http_code_t code, const char *text, bool rst)
{
    http_client_t *c = s->x.client;
    h2_origin_t *o = s->origin;
    int64_t connect_ms = s->conn && !s->reused ? s->conn->connect_ms : 0;
    http_heap_remove(c, &s->x);
    stream_takeout(s, rst);
    s->state = S_DONE;
    char own[HTTP_ERR_TEXT];
    if (!text && code != HTTP_OK) {
        http_describe_own(&s->x, code, own, sizeof own);
        text = own;
    }
    http_result_t res;
    http_result_base(&s->x, &res, code, text ? text : "");
    res.reused_connection = s->x.head_seen && s->reused;
    res.timing.connect_ms = connect_ms;
    c->completed++;
    c->h2->n_streams--;
    s->x.on_done(s->x.ctx, &res);
    buf_free(&res.body);
    stream_free(c, s);
    origin_pump(o);
}

static const char *head_lookup(const h2_stream_t *s, const char *name)
{
    if (!s->head.data)
        return NULL;
    const char *found = NULL;
    const char *p = s->head.data, *end = p + s->head.len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcasecmp(p, name) == 0)
            found = v;
        p = v + strlen(v) + 1;
    }
    return found;
}

const char *h2_response_header(const http_transfer_t *t, const char *name)
{
    return head_lookup((const h2_stream_t *)t, name);
}

/* The final head is complete: response fields, the size check, on_response. */
static void head_done(h2_stream_t *s)
{
    s->x.head_seen = true;
    s->x.response_ms = http_elapsed_ms(&s->x);
    s->x.response.transfer = &s->x;
    s->x.response.content_type = head_lookup(s, "content-type");
    const char *ra = head_lookup(s, "retry-after");
    s->x.response.retry_after_ms = ra ? http_retry_after_ms(ra, base_wall_ms()) : -1;
    const char *cl = head_lookup(s, "content-length");
    if (cl && http_xfer_content_length(&s->x, strtoll(cl, NULL, 10))) {
        stream_finish(s, HTTP_ERR_TOO_LARGE, NULL, true);
        return;
    }
    if (s->x.on_response)
        s->x.on_response(s->x.ctx, &s->x.response);
}

/* ---- nghttp2 callbacks ---- */

static h2_stream_t *active_stream(nghttp2_session *session, int32_t id)
{
    h2_stream_t *s = nghttp2_session_get_stream_user_data(session, id);
    return s && s->state == S_ACTIVE ? s : NULL;
}

static int on_h2_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_stream_t *s = active_stream(session, frame->hd.stream_id);
    if (!s || s->x.head_seen)
        return 0; /* trailers are not kept */
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->x.response.status = strtol((const char *)value, NULL, 10);
        s->in_1xx = s->x.response.status < 200;
        return 0;
    }
    if (s->in_1xx || namelen == 0 || name[0] == ':')
        return 0;
    if (s->head.len + namelen + valuelen + 2 > HTTP_H2_MAX_HEAD_BYTES) {
        stream_finish(s, HTTP_ERR_OTHER, "response head over 16 KB", true);
        return 0;
    }
    if (buf_append(&s->head, name, namelen + 1) < 0 || buf_append(&s->head, value, valuelen + 1) < 0)
        stream_finish(s, HTTP_ERR_OTHER, "out of memory", true);
    return 0;
}

static void on_headers_frame(h2_stream_t *s, const nghttp2_frame *frame)
{
    if (!s->x.head_seen && (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS)) {
        if (s->in_1xx || s->x.response.status == 0) { /* an interim head: wait for the final one */
            s->in_1xx = false;
            s->x.response.status = 0;
            buf_reset(&s->head);
        } else {
            head_done(s);
        }
    }
}

static int on_h2_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2_conn_t *k = user_data;
    h2_stream_t *s = NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if ((s = active_stream(session, frame->hd.stream_id)))
            on_headers_frame(s, frame);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            k->settings_seen = true;
            origin_pump(k->origin);
        }
        return 0;
    case NGHTTP2_GOAWAY:
        k->goaway = true; /* nghttp2 closes the streams above last_stream_id (REFUSED_STREAM) */
        if (k->in_origin) {
            conn_unlink(k);
            k->next = k->h2->draining;
            if (k->next)
                k->next->prev = k;
            k->h2->draining = k;
            origin_pump(k->origin);
        }
        return 0;
    default:
        break;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (s = active_stream(session, frame->hd.stream_id))) {
        /* The peer is done; a reset is due only if our side still sends (an early answer to a POST). */
        bool sending = nghttp2_session_get_stream_local_close(session, s->id) != 1;
        if (s->x.head_seen)
            stream_finish(s, HTTP_OK, NULL, sending);
        else
            stream_finish(s, HTTP_ERR_CLOSED, "stream ended without a response head", sending);
    }
    return 0;
}

static int on_h2_data(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                      size_t len, void *user_data)
{
    h2_stream_t *s = active_stream(session, stream_id);
    if (!s || !s->x.head_seen)
        return 0;
    http_code_t code = http_xfer_data(&s->x, (const char *)data, len);
    if (code != HTTP_OK && s->state == S_ACTIVE)
        stream_finish(s, code, NULL, true);
    return 0;
}

static int on_h2_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data)
{
    h2_stream_t *s = active_stream(session, stream_id);
    if (!s)
        return 0;
    char text[96];
    if (error_code == NGHTTP2_REFUSED_STREAM)
        snprintf(text, sizeof text, "stream refused by the server (GOAWAY or REFUSED_STREAM)");
    else
        snprintf(text, sizeof text, "stream reset by the server (HTTP/2 error %u)", error_code);
    stream_finish(s, HTTP_ERR_CLOSED, text, false);
    return 0;
}

/* A request HEADERS frame that could not go out (GOAWAY received, session closing). */
static int on_h2_not_send(nghttp2_session *session, const nghttp2_frame *frame, int lib_error_code,
                          void *user_data)
{
    h2_conn_t *k = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    for (h2_stream_t *s = k->streams; s; s = s->next)
        if (s->id == frame->hd.stream_id) {
            char text[96];
            snprintf(text, sizeof text, "request not sent: %s", nghttp2_strerror(lib_error_code));
            stream_finish(s, HTTP_ERR_CLOSED, text, false);
            break;
        }
    return 0;
}

static ssize_t on_h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                               uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    h2_stream_t *s = active_stream(session, stream_id);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = s->body_len - s->body_off;
    if (n > length)
        n = length;
    if (n)
        memcpy(buf, s->body + s->body_off, n);
    s->body_off += n;
    if (s->body_off == s->body_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- output ---- */

static void conn_dirty(h2_conn_t *k)
{
    h2_t *h2 = k->h2;
    if (k->dirty || k->state == C_DEAD)
        return;
    k->dirty = true;
    k->dirty_next = h2->dirty;
    h2->dirty = k;
    if (!h2->prepare_on && !h2->client->torn_down) {
        uv_prepare_start(&h2->prepare, on_prepare);
        h2->prepare_on = true;
    }
}

static void on_write(uv_write_t *w, int status);

/* Writes what is in k->out: uv_try_write, then uv_write for the rest. */
static void conn_write(h2_conn_t *k)
{
    if (k->out.len == 0)
        return;
    uv_buf_t b = uv_buf_init(k->out.data, (unsigned)k->out.len);
    int n = uv_try_write((uv_stream_t *)&k->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        conn_fail(k, HTTP_ERR_CLOSED, uv_strerror(n));
        return;
    }
    if ((size_t)n == k->out.len) {
        buf_reset(&k->out);
        return;
    }
    b = uv_buf_init(k->out.data + n, (unsigned)(k->out.len - (size_t)n));
    int rc = uv_write(&k->wreq, (uv_stream_t *)&k->tcp, &b, 1, on_write);
    if (rc < 0) {
        conn_fail(k, HTTP_ERR_CLOSED, uv_strerror(rc));
        return;
    }
    k->writing = true;
}

/* Collects nghttp2's output (encrypted when TLS) into k->out and writes it. */
static void conn_flush(h2_conn_t *k)
{
    h2_t *h2 = k->h2;
    if ((k->state != C_READY && k->state != C_TLS) || k->writing)
        return;
    if (k->state == C_READY) {
        buf_t *stage = k->tls ? &h2->stage : &k->out;
        while (stage->len < H2_FLUSH_MAX) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(k->session, &data);
            if (n < 0) {
                conn_fail(k, HTTP_ERR_CLOSED, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0)
                break;
            if (buf_append(stage, data, (size_t)n) < 0) {
                conn_fail(k, HTTP_ERR_OTHER, "out of memory");
                return;
            }
        }
        if (k->state == C_DEAD || h2->client->torn_down)
            return;
        if (k->tls) {
            char err[HTTP_ERR_TEXT];
            int rc = tls_session_write(k->tls, stage->data, stage->len, err, sizeof err);
            buf_reset(stage);
            if (rc < 0) {
                conn_fail(k, HTTP_ERR_TLS, err);
                return;
            }
        }
    }
    if (k->tls && h2_tls_drain(k->tls, &k->out) < 0) {
        conn_fail(k, HTTP_ERR_OTHER, "out of memory");
        return;
    }
    conn_write(k);
    if (k->state != C_READY || k->writing || k->out.len > 0)
        return;
    if (!nghttp2_session_want_read(k->session) && !nghttp2_session_want_write(k->session))
        conn_fail(k, HTTP_ERR_CLOSED, "the HTTP/2 session ended"); /* fails streams still on it, if any */
    else if (k->goaway && k->n_streams == 0)
        conn_close(k);
}

static void on_write(uv_write_t *w, int status)
{
    h2_conn_t *k = w->data;
    k->writing = false;
    if (k->state == C_DEAD)
        return;
    http_client_t *c = k->h2->client;
    http_enter(c);
    if (status < 0) {
        conn_fail(k, HTTP_ERR_CLOSED, uv_strerror(status));
    } else {
        if (k->out.cap > H2_KEEP_OUT_CAP)
            buf_free(&k->out);
        else
            buf_reset(&k->out);
        conn_flush(k);
    }
    http_leave(c);
}

static void on_prepare(uv_prepare_t *p)
{
    h2_t *h2 = p->data;
    http_client_t *c = h2->client;
    http_enter(c);
    h2_conn_t *k;
    while (!c->torn_down && (k = h2->dirty)) {
        h2->dirty = k->dirty_next;
        k->dirty = false;
        conn_flush(k);
    }
    if (!h2->dirty && h2->prepare_on && !c->torn_down) {
        uv_prepare_stop(&h2->prepare);
        h2->prepare_on = false;
    }
    http_leave(c);
}

/* ---- connections ---- */

static void conn_maybe_free(h2_conn_t *k)
{
    if (k->refs > 0)
        return;
    http_client_t *c = k->h2->client;
    nghttp2_session_del(k->session);
    tls_session_free(k->tls);
    buf_free(&k->out);
    free(k);
    http_client_maybe_free(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    h2_conn_t *k = h->data;
    k->refs--;
    k->h2->client->open_handles--;
    conn_maybe_free(k);
}

static void conn_unlink(h2_conn_t *k)
{
    h2_conn_t **head = k->in_origin ? &k->origin->conns : &k->h2->draining;
    if (k->prev)
        k->prev->next = k->next;
    else
        *head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    if (k->in_origin)
        k->origin->n_conns--;
    k->in_origin = false;
    k->prev = k->next = NULL;
}

/* Closes the socket and timer (the session goes when they have closed); its streams must be gone. */
static void conn_close(h2_conn_t *k)
{
    h2_t *h2 = k->h2;
    if (k->state == C_DEAD)
        return;
    k->state = C_DEAD;
    conn_unlink(k);
    h2->n_conns--;
    for (h2_conn_t **p = &h2->dirty; *p; p = &(*p)->dirty_next)
        if (*p == k) {
            *p = k->dirty_next;
            break;
        }
    k->dirty = false;
    if (k->gai_pending)
        uv_cancel((uv_req_t *)&k->gai);
    uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&k->timer, on_conn_handle_closed);
}

/* The connection is lost: it closes, then each of its streams ends with code. */
static void conn_fail(h2_conn_t *k, http_code_t code, const char *text)
{
    if (k->state == C_DEAD)
        return;
    h2_origin_t *o = k->origin;
    char copy[HTTP_ERR_TEXT];
    snprintf(copy, sizeof copy, "%s", text);
    conn_close(k);
    h2_stream_t *s;
    while ((s = k->streams))
        stream_finish(s, code, copy, false);
    origin_pump(o);
}

/* Reports a failure found while a caller is on the stack from the connection's timer instead. */
static void conn_fail_later(h2_conn_t *k, http_code_t code, const char *text)
{
    k->fail_code = code;
    snprintf(k->fail_text, sizeof k->fail_text, "%s", text);
    uv_timer_start(&k->timer, on_conn_timer, 0, 0);
}

static void on_conn_timer(uv_timer_t *t)
{
    h2_conn_t *k = t->data;
    http_client_t *c = k->h2->client;
    http_enter(c);
    if (k->fail_code != HTTP_OK) {
        conn_fail(k, k->fail_code, k->fail_text);
    } else {
        char text[64];
        snprintf(text, sizeof text, "not connected within %lld ms", (long long)k->connect_timeout_ms);
        conn_fail(k, HTTP_ERR_TIMEOUT_CONNECT, text);
    }
    http_leave(c);
}

static void conn_ready(h2_conn_t *k)
{
    k->state = C_READY;
    uv_timer_stop(&k->timer);
    k->connect_ms = base_mono_ms() - k->started_ms;
    conn_dirty(k);
}

/* One TLS handshake step: its output goes out; when done, ALPN must have chosen h2. */
static void conn_tls_step(h2_conn_t *k)
{
    char err[HTTP_ERR_TEXT];
    int rc = tls_session_handshake(k->tls, err, sizeof err);
    if (rc < 0) {
        conn_fail(k, HTTP_ERR_TLS, err);
        return;
    }
    conn_flush(k);
    if (rc == 0 || k->state == C_DEAD)
        return;
    if (!tls_session_alpn_is(k->tls, "h2")) {
        conn_fail(k, HTTP_ERR_OTHER, "server did not agree to HTTP/2");
        return;
    }
    conn_ready(k);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    h2_conn_t *k = h->data;
    *b = uv_buf_init(k->h2->rbuf, sizeof k->h2->rbuf);
}

/* Plaintext from the peer into nghttp2; 0, or -1 when the connection failed. */
static int conn_recv(h2_conn_t *k, const char *p, size_t n)
{
    ssize_t rv = nghttp2_session_mem_recv(k->session, (const uint8_t *)p, n);
    if (k->state == C_DEAD || k->h2->client->closing)
        return -1;
    if (rv < 0) {
        conn_fail(k, HTTP_ERR_CLOSED, nghttp2_strerror((int)rv));
        return -1;
    }
    return 0;
}

static void conn_input(h2_conn_t *k, const char *p, size_t n)
{
    if (!k->tls) {
        conn_recv(k, p, n);
        return;
    }
    if (tls_session_feed(k->tls, p, n) < 0) {
        conn_fail(k, HTTP_ERR_OTHER, "out of memory");
        return;
    }
    if (k->state == C_TLS) {
        conn_tls_step(k);
        if (k->state != C_READY)
            return;
    }
    for (;;) {
        char err[HTTP_ERR_TEXT];
        long got = tls_session_read(k->tls, k->h2->pbuf, sizeof k->h2->pbuf, err, sizeof err);
        if (got == 0)
            return;
        if (got < 0) {
            conn_fail(k, HTTP_ERR_CLOSED, got == TLS_CLOSED ? "TLS connection closed by the server" : err);
            return;
        }
        if (conn_recv(k, k->h2->pbuf, (size_t)got) < 0)
            return;
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    h2_conn_t *k = st->data;
    http_client_t *c = k->h2->client;
    if (k->state == C_DEAD)
        return;
    http_enter(c);
    if (nread < 0)
        conn_fail(k, HTTP_ERR_CLOSED,
                  nread == UV_EOF ? "connection closed by the server" : uv_strerror((int)nread));
    else if (nread > 0)
        conn_input(k, b->base, (size_t)nread);
    if (k->state == C_READY)
        conn_dirty(k);
    http_leave(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    h2_conn_t *k = req->data;
    if (k->state == C_DEAD)
        return;
    http_client_t *c = k->h2->client;
    http_enter(c);
    if (status < 0) {
        char text[HTTP_ERR_TEXT];
        snprintf(text, sizeof text, "connect to %s:%d failed: %s", k->origin->host, k->origin->port,
                 uv_strerror(status));
        conn_fail(k, HTTP_ERR_CONNECT, text);
    } else {
        uv_tcp_nodelay(&k->tcp, 1);
        int rc = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
        if (rc < 0) {
            conn_fail(k, HTTP_ERR_CONNECT, uv_strerror(rc));
        } else if (k->tls) {
            k->state = C_TLS;
            conn_tls_step(k);
        } else {
            conn_ready(k);
        }
    }
    http_leave(c);
}

static int conn_connect(h2_conn_t *k, const struct sockaddr *addr)
{
    k->state = C_CONNECTING;
    return uv_tcp_connect(&k->creq, &k->tcp, addr, on_connect);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    h2_conn_t *k = req->data;
    http_client_t *c = k->h2->client;
    k->gai_pending = false;
    k->refs--;
    c->open_handles--;
    if (k->state == C_DEAD) {
        uv_freeaddrinfo(res);
        conn_maybe_free(k);
        return;
    }
    http_enter(c);
    const struct addrinfo *ai = res;
    for (const struct addrinfo *p = res; status == 0 && p; p = p->ai_next)
        if (p->ai_family == AF_INET) { /* IPv4 first; the other addresses are not tried */
            ai = p;
            break;
        }
    int rc = status < 0 ? status : conn_connect(k, ai->ai_addr);
    if (rc < 0) {
        char text[HTTP_ERR_TEXT];
        snprintf(text, sizeof text, "%s %s: %s", status < 0 ? "cannot resolve" : "cannot connect to",
                 k->origin->host, uv_strerror(rc));
        conn_fail(k, HTTP_ERR_CONNECT, text);
    }
    uv_freeaddrinfo(res);
    http_leave(c);
}

/* Starts resolving or connecting; a failure is reported from the timer (a caller is on the stack). */
static void conn_start_io(h2_conn_t *k)
{
    h2_origin_t *o = k->origin;
    http_client_t *c = k->h2->client;
    struct sockaddr_storage ss;
    int rc;
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss) == 0) {
        rc = conn_connect(k, (struct sockaddr *)&ss);
    } else {
        char port[8];
        snprintf(port, sizeof port, "%d", o->port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        k->state = C_RESOLVING;
        rc = uv_getaddrinfo(c->loop, &k->gai, on_resolved, o->host, port, &hints);
        if (rc == 0) {
            k->gai_pending = true;
            k->refs++;
            c->open_handles++;
        }
    }
    if (rc < 0) {
        char text[HTTP_ERR_TEXT];
        snprintf(text, sizeof text, "cannot connect to %s: %s", o->host, uv_strerror(rc));
        conn_fail_later(k, HTTP_ERR_CONNECT, text);
        return;
    }
    uv_timer_start(&k->timer, on_conn_timer, (uint64_t)k->connect_timeout_ms, 0);
}

/* A new connection to o, linked into it; NULL with err when memory or nghttp2 fail. */
static h2_conn_t *conn_open(h2_origin_t *o, char *err, size_t errlen)
{
    h2_t *h2 = o->h2;
    http_client_t *c = h2->client;
    h2_conn_t *k = base_calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->h2 = h2;
    k->origin = o;
    if (nghttp2_session_client_new2(&k->session, h2->cbs, k, h2->opt) != 0) {
        snprintf(err, errlen, "nghttp2_session_client_new2 failed");
        goto fail;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW}};
    if (nghttp2_submit_settings(k->session, NGHTTP2_FLAG_NONE, iv, BASE_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(k->session, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0) {
        snprintf(err, errlen, "nghttp2 settings failed");
        goto fail;
    }
    if (o->https && !(k->tls = tls_session_new(o->tls_ctx, o->host, err, errlen)))
        goto fail;
    /* Nothing fails from here on: the handles are closed through conn_close. */
    uv_tcp_init(c->loop, &k->tcp);
    uv_timer_init(c->loop, &k->timer);
    k->tcp.data = k->timer.data = k->creq.data = k->gai.data = k->wreq.data = k;
    k->refs = 2;
    c->open_handles += 2;
    k->started_ms = k->idle_since_ms = base_mono_ms();
    k->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : H2_CONNECT_MS;
    k->next = o->conns;
    if (k->next)
        k->next->prev = k;
    o->conns = k;
    o->n_conns++;
    k->in_origin = true;
    h2->n_conns++;
    conn_start_io(k);
    return k;
fail:
    if (k->session)
        nghttp2_session_del(k->session);
    free(k);
    return NULL;
}

static size_t conn_limit(h2_conn_t *k)
{
    uint32_t m = nghttp2_session_get_remote_settings(k->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return m > H2_MAX_STREAMS ? H2_MAX_STREAMS : m;
}

/* A connection of o with a free stream slot; a new one if none and the cap allows and no connection
 * still waits for the peer's SETTINGS; NULL = wait (or *failed with err). */
static h2_conn_t *origin_conn(h2_origin_t *o, bool *failed, char *err, size_t errlen)
{
    bool in_the_dark = false;
    for (h2_conn_t *k = o->conns; k; k = k->next) {
        if (k->n_streams < conn_limit(k))
            return k;
        in_the_dark |= !k->settings_seen;
    }
    if (in_the_dark || o->n_conns >= o->h2->max_conns)
        return NULL;
    h2_conn_t *k = conn_open(o, err, errlen);
    *failed = !k;
    return k;
}

/* ---- requests ---- */

static bool name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(name, lit, n) == 0;
}

/* Connection-specific headers HTTP/2 forbids, and the ones http sets itself. */
static bool header_dropped(const char *name, size_t n)
{
    static const char *const drop[] = {"connection", "keep-alive",     "transfer-encoding",
                                       "host",       "upgrade",        "proxy-connection",
                                       "te",         "content-length", "expect"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(drop); i++)
        if (name_is(name, n, drop[i]))
            return true;
    return false;
}

/* The request block in h2->scratch: ":path\0<path>\0" then "name\0value\0" per kept header (names
 * lowercased). 0, or -1 with err. */
static int request_block(h2_t *h2, const http_request_t *req, const url_t *u, char *err, size_t errlen)
{
    buf_t *b = &h2->scratch;
    buf_reset(b);
    bool slash = u->path_len == 0 || u->path[0] != '/';
    if (buf_append(b, ":path", 6) < 0 || (slash && buf_append(b, "/", 1) < 0) ||
        buf_append(b, u->path, u->path_len) < 0 || buf_append(b, "", 1) < 0)
        goto oom;
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *h = req->headers[i];
        long len = http_header_line_len(h);
        const char *colon = len > 0 ? memchr(h, ':', (size_t)len) : NULL;
        if (!colon || colon == h) {
            snprintf(err, errlen, "request header %zu is empty, too long, has no name or contains CR/LF", i);
            return -1;
        }
        size_t nlen = (size_t)(colon - h);
        while (nlen > 0 && (h[nlen - 1] == ' ' || h[nlen - 1] == '\t'))
            nlen--;
        const char *v = colon + 1, *end = h + len;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (nlen == 0 || end == v)
            continue; /* "Name:" removes a header, as with curl */
        size_t at = b->len;
        if (buf_append(b, h, nlen) < 0)
            goto oom;
        for (size_t j = at; j < at + nlen; j++)
            b->data[j] = (char)tolower((unsigned char)b->data[j]);
        if (header_dropped(b->data + at, nlen)) {
            b->len = at;
            continue;
        }
        if (buf_append(b, "", 1) < 0 || buf_append(b, v, (size_t)(end - v)) < 0 || buf_append(b, "", 1) < 0)
            goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static nghttp2_nv nv_make(const char *name, size_t nlen, const char *value, size_t vlen, uint8_t flags)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, nlen, vlen, flags};
    return nv;
}

#define NV_LIT(n, v, vlen)                                                                                   \
    nv_make((n), sizeof(n) - 1, (v), (vlen), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE)

/* Submits s on k from its request block; 0, or -1 with err. */
static int stream_submit(h2_conn_t *k, h2_stream_t *s, const char *block, size_t blen, char *err,
                         size_t errlen)
{
    h2_t *h2 = k->h2;
    h2_origin_t *o = s->origin;
    size_t pairs = 0;
    for (const char *p = block; p < block + blen; p += strlen(p) + 1)
        pairs++;
    pairs /= 2;
    size_t need = pairs + H2_MAX_FIXED_NV;
    if (need > h2->nva_cap) {
        nghttp2_nv *nva = base_realloc(h2->nva, need * sizeof *nva);
        if (!nva) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        h2->nva = nva;
        h2->nva_cap = need;
    }
    nghttp2_nv *nva = h2->nva;
    size_t n = 0;
    bool has_ua = false;
    nva[n++] = s->post ? NV_LIT(":method", "POST", 4) : NV_LIT(":method", "GET", 3);
    nva[n++] = o->https ? NV_LIT(":scheme", "https", 5) : NV_LIT(":scheme", "http", 4);
    nva[n++] = NV_LIT(":authority", o->authority, strlen(o->authority));
    for (const char *p = block; p < block + blen;) {
        const char *v = p + strlen(p) + 1;
        size_t nlen = strlen(p), vlen = strlen(v);
        has_ua |= name_is(p, nlen, "user-agent");
        /* A value new on every request (a trace's span id) would push the connection's reusable headers
         * out of the HPACK table: sent as never indexed instead. */
        bool unique = name_is(p, nlen, "traceparent") || name_is(p, nlen, "tracestate");
        nva[n++] = nv_make(p, nlen, v, vlen, unique ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE);
        p = v + vlen + 1;
    }
    if (!has_ua)
        nva[n++] = NV_LIT("user-agent", h2->client->user_agent, strlen(h2->client->user_agent));
    char clen[24];
    nghttp2_data_provider prd = {.read_callback = on_h2_read_body};
    if (s->post) {
        size_t len = base_u64_dec(clen, s->body_len);
        nva[n++] = nv_make("content-length", 14, clen, len, NGHTTP2_NV_FLAG_NO_COPY_NAME);
    }
    int32_t id = nghttp2_submit_request(k->session, NULL, nva, n, s->post ? &prd : NULL, s);
    if (id < 0) {
        snprintf(err, errlen, "nghttp2_submit_request: %s", nghttp2_strerror(id));
        return -1;
    }
    s->id = id;
    s->conn = k;
    s->state = S_ACTIVE;
    s->reused = k->state == C_READY;
    stream_push(&k->streams, s);
    k->n_streams++;
    conn_dirty(k);
    return 0;
}

/* Puts s on a connection of its origin, or at the end of the origin's queue; 0, or -1 with err. */
static int stream_place(h2_stream_t *s, const char *block, size_t blen, char *err, size_t errlen)
{
    h2_origin_t *o = s->origin;
    bool failed = false;
    h2_conn_t *k = o->q_head ? NULL : origin_conn(o, &failed, err, errlen);
    if (k)
        return stream_submit(k, s, block, blen, err, errlen);
    if (failed)
        return -1;
    if (!s->queued) {
        s->queued = base_malloc(blen);
        if (!s->queued) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(s->queued, block, blen);
        s->queued_len = blen;
    }
    s->state = S_QUEUED;
    s->prev = o->q_tail;
    s->next = NULL;
    if (o->q_tail)
        o->q_tail->next = s;
    else
        o->q_head = s;
    o->q_tail = s;
    return 0;
}

/* Moves queued requests of o onto connections while there are slots (or new connections). */
static void origin_pump(h2_origin_t *o)
{
    if (!o || o->pumping || o->h2->client->closing)
        return;
    o->pumping = true;
    h2_stream_t *s;
    while ((s = o->q_head) && !o->h2->client->closing) {
        char err[HTTP_ERR_TEXT];
        bool failed = false;
        h2_conn_t *k = origin_conn(o, &failed, err, sizeof err);
        if (!k && !failed)
            break;
        queue_remove(o, s);
        s->state = S_ACTIVE; /* in no list until submitted */
        if (!k || stream_submit(k, s, s->queued, s->queued_len, err, sizeof err) < 0) {
            s->conn = NULL;
            stream_finish(s, HTTP_ERR_OTHER, err, false);
            continue;
        }
        free(s->queued);
        s->queued = NULL;
    }
    o->pumping = false;
}

static int url_parse(const char *url, url_t *u)
{
    const char *p;
    if (strncmp(url, "http://", 7) == 0) {
        u->https = false;
        u->port = 80;
        p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        u->https = true;
        u->port = 443;
        p = url + 8;
    } else {
        return -1;
    }
    size_t auth_len = strcspn(p, "/?#");
    if (memchr(p, '@', auth_len))
        return -1;
    const char *q;
    if (*p == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (!close)
            return -1;
        u->host = p + 1;
        u->host_len = (size_t)(close - p - 1);
        q = close + 1;
    } else {
        u->host = p;
        u->host_len = strcspn(p, ":/?#");
        q = p + u->host_len;
    }
    if (u->host_len == 0 || u->host_len > H2_MAX_HOST)
        return -1;
    if (*q == ':') {
        char *end;
        long port = strtol(q + 1, &end, 10);
        if (end == q + 1 || port < 1 || port > 65535)
            return -1;
        u->port = (int)port;
        q = end;
    }
    if (*q && *q != '/' && *q != '?' && *q != '#')
        return -1;
    u->path = q;
    u->path_len = strcspn(q, "#");
    for (size_t i = 0; i < u->path_len; i++)
        if ((unsigned char)q[i] <= ' ' || q[i] == 0x7f)
            return -1;
    return 0;
}

/* The origin of u with these TLS settings, made on first use. NULL with err. */
static h2_origin_t *origin_get(h2_t *h2, const url_t *u, const http_request_t *req, char *err, size_t errlen)
{
    const char *ca = u->https ? req->ca_file : NULL;
    bool insecure = u->https && req->tls_insecure;
    for (h2_origin_t *o = h2->origins; o; o = o->next)
        if (o->https == u->https && o->port == u->port && o->insecure == insecure &&
            strlen(o->host) == u->host_len && strncasecmp(o->host, u->host, u->host_len) == 0 &&
            ((!ca && !o->ca_file) || (ca && o->ca_file && strcmp(ca, o->ca_file) == 0)))
            return o;
    h2_origin_t *o = base_calloc(1, sizeof *o);
    if (!o)
        goto oom;
    o->h2 = h2;
    o->https = u->https;
    o->insecure = insecure;
    o->port = u->port;
    o->host = base_strndup(u->host, u->host_len);
    o->ca_file = ca ? base_strdup(ca) : NULL;
    bool v6 = memchr(u->host, ':', u->host_len) != NULL;
    bool dflt = u->port == (u->https ? 443 : 80);
    char auth[H2_MAX_HOST + 16];
    snprintf(auth, sizeof auth, "%s%.*s%s", v6 ? "[" : "", (int)u->host_len, u->host, v6 ? "]" : "");
    if (!dflt)
        snprintf(auth + strlen(auth), sizeof auth - strlen(auth), ":%d", u->port);
    o->authority = base_strdup(auth);
    if (!o->host || (ca && !o->ca_file) || !o->authority)
        goto oom;
    if (u->https && !(o->tls_ctx = h2_tls_ctx_get(&h2->tls, ca, insecure, err, errlen)))
        goto fail;
    o->next = h2->origins;
    h2->origins = o;
    return o;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (o) {
        free(o->host);
        free(o->ca_file);
        free(o->authority);
    }
    free(o);
    return NULL;
}

http_transfer_t *h2_start(http_client_t *c, const http_request_t *req, char *err, size_t errlen)
{
    h2_t *h2 = c->h2;
    url_t u;
    if (url_parse(req->url, &u) < 0) {
        snprintf(err, errlen, "unsupported or malformed url for HTTP/2");
        return NULL;
    }
    if (request_block(h2, req, &u, err, errlen) < 0)
        return NULL;
    h2_origin_t *o = origin_get(h2, &u, req, err, errlen);
    if (!o)
        return NULL;
    bool post = req->method == HTTP_POST;
    size_t copy = post && req->copy_body ? req->body_len : 0;
    h2_stream_t *s = base_calloc(1, sizeof *s + copy);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    http_xfer_init(&s->x, c, req, HTTP_KIND_H2);
    s->origin = o;
    s->post = post;
    s->body = post ? (copy ? (const char *)(s + 1) : req->body) : NULL;
    s->body_len = post ? req->body_len : 0;
    if (copy)
        memcpy(s + 1, req->body, copy);
    if (!s->body)
        s->body = "";
    buf_init(&s->head, HTTP_H2_MAX_HEAD_BYTES);
    if (http_heap_reserve(c, c->n_timed) < 0) {
        snprintf(err, errlen, "out of memory");
        stream_free(c, s);
        return NULL;
    }
    http_enter(c);
    o->connect_timeout_ms = req->connect_timeout_ms;
    if (stream_place(s, h2->scratch.data, h2->scratch.len, err, errlen) < 0) {
        http_leave(c);
        stream_free(c, s);
        return NULL;
    }
    c->started++;
    h2->n_streams++;
    http_deadline_update(c, &s->x);
    http_leave(c);
    return &s->x;
}

void h2_cancel(http_transfer_t *t)
{
    h2_stream_t *s = (h2_stream_t *)t;
    if (s->state == S_DONE || s->state == S_ZOMBIE)
        return;
    http_client_t *c = t->client;
    h2_t *h2 = c->h2;
    http_enter(c);
    c->cancelled++;
    h2->n_streams--;
    http_heap_remove(c, t);
    bool slot = s->state == S_ACTIVE;
    h2_origin_t *o = s->origin;
    stream_takeout(s, true);
    if (c->depth > 1) { /* a callback is on the stack: freed by the outermost http_leave */
        s->state = S_ZOMBIE;
        stream_push(&h2->zombies, s);
    } else {
        stream_free(c, s);
    }
    if (slot)
        origin_pump(o);
    http_leave(c);
}

void h2_expire(http_transfer_t *t, http_code_t code) { stream_finish((h2_stream_t *)t, code, NULL, true); }

void h2_cancel_all(http_client_t *c)
{
    h2_t *h2 = c->h2;
    for (h2_origin_t *o = h2->origins; o; o = o->next) {
        while (o->q_head)
            h2_cancel(&o->q_head->x);
        for (h2_conn_t *k = o->conns; k; k = k->next)
            while (k->streams)
                h2_cancel(&k->streams->x);
    }
    for (h2_conn_t *k = h2->draining; k; k = k->next)
        while (k->streams)
            h2_cancel(&k->streams->x);
}

void h2_flush_deferred(http_client_t *c)
{
    h2_t *h2 = c->h2;
    h2_stream_t *s;
    while ((s = h2->zombies)) {
        stream_unlink(&h2->zombies, s);
        stream_free(c, s);
    }
}

/* Closes connections that have had no stream for idle_ms. */
static void on_idle_timer(uv_timer_t *t)
{
    h2_t *h2 = t->data;
    http_client_t *c = h2->client;
    int64_t now = base_mono_ms();
    http_enter(c);
    for (h2_origin_t *o = h2->origins; o; o = o->next)
        for (h2_conn_t *k = o->conns, *next; k; k = next) {
            next = k->next;
            if (k->state == C_READY && k->n_streams == 0 && !k->writing &&
                now - k->idle_since_ms >= h2->idle_ms)
                conn_close(k);
        }
    http_leave(c);
}

static void on_h2_handle_closed(uv_handle_t *h)
{
    h2_t *h2 = h->data;
    h2->client->open_handles--;
    http_client_maybe_free(h2->client);
}

void h2_teardown(http_client_t *c)
{
    h2_t *h2 = c->h2;
    h2_origin_t *o;
    while ((o = h2->origins)) {
        h2->origins = o->next;
        while (o->conns)
            conn_close(o->conns);
        free(o->host);
        free(o->ca_file);
        free(o->authority);
        free(o);
    }
    while (h2->draining)
        conn_close(h2->draining);
    h2_tls_ctx_free_all(&h2->tls); /* each session holds its own reference to its context */
    nghttp2_session_callbacks_del(h2->cbs);
    nghttp2_option_del(h2->opt);
    h2->cbs = NULL;
    h2->opt = NULL;
    buf_free(&h2->scratch);
    buf_free(&h2->stage);
    free(h2->nva);
    h2->nva = NULL;
    uv_close((uv_handle_t *)&h2->prepare, on_h2_handle_closed);
    uv_close((uv_handle_t *)&h2->idle_timer, on_h2_handle_closed);
}

void h2_stats(const http_client_t *c, http_stats_t *out)
{
    out->h2_connections = c->h2->n_conns;
    out->h2_streams = c->h2->n_streams;
    out->in_flight += c->h2->n_streams;
}

int h2_init(http_client_t *c, const http_client_options_t *o, char *err, size_t errlen)
{
    h2_t *h2 = base_calloc(1, sizeof *h2);
    if (!h2 || nghttp2_session_callbacks_new(&h2->cbs) != 0 || nghttp2_option_new(&h2->opt) != 0) {
        c->h2 = h2;
        h2_abort_init(c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->h2 = h2;
    h2->client = c;
    h2->max_conns =
        o->h2_max_connections_per_origin ? o->h2_max_connections_per_origin : HTTP_DEFAULT_H2_MAX_CONNECTIONS;
    h2->idle_ms = o->h2_idle_timeout_ms > 0 ? o->h2_idle_timeout_ms : HTTP_DEFAULT_H2_IDLE_MS;
    buf_init(&h2->scratch, 0);
    buf_init(&h2->stage, 0);
    nghttp2_session_callbacks_set_on_header_callback(h2->cbs, on_h2_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2->cbs, on_h2_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2->cbs, on_h2_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2->cbs, on_h2_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(h2->cbs, on_h2_not_send);
    nghttp2_option_set_peer_max_concurrent_streams(h2->opt, H2_DEFAULT_STREAMS);
    uv_prepare_init(c->loop, &h2->prepare);
    h2->prepare.data = h2;
    uv_timer_init(c->loop, &h2->idle_timer);
    h2->idle_timer.data = h2;
    uint64_t period = (uint64_t)(h2->idle_ms / 4 > 0 ? h2->idle_ms / 4 : 1);
    uv_timer_start(&h2->idle_timer, on_idle_timer, period, period);
    uv_unref((uv_handle_t *)&h2->idle_timer);
    c->open_handles += 2;
    return 0;
}

void h2_abort_init(http_client_t *c)
{
    h2_t *h2 = c->h2;
    if (!h2 || h2->client) /* made: freed by the normal close path */
        return;
    nghttp2_session_callbacks_del(h2->cbs);
    nghttp2_option_del(h2->opt);
    free(h2);
    c->h2 = NULL;
}
