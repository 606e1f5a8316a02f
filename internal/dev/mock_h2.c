/* mock_h2.c — the mock providers' HTTP/2 transport (h2c with prior knowledge): one nghttp2 server
 * session per connection whose client sent the preface. Each request stream is a mock_stream_t with
 * its own timer, served by the call logic of mock_http.c through the HTTP/2 sink below: the head is
 * a HEADERS frame, the body DATA frames from a deferred data provider that the sink resumes as
 * bytes are released, a cut is RST_STREAM(INTERNAL_ERROR) after the released bytes. Output is
 * serialized with nghttp2_session_mem_send once per read batch, timer tick or completed write.
 * Bounds: SETTINGS_MAX_CONCURRENT_STREAMS = knob h2_max_streams, headers <= 64 in 16 KiB (else 431),
 * body <= 8 MiB (else 413). A session error sends GOAWAY and closes the connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "mock.h"

#define H2_STREAM_WINDOW (1 << 20)    /* SETTINGS_INITIAL_WINDOW_SIZE: request bodies never stall */
#define H2_CONN_WINDOW   (16 << 20)   /* the connection's receive window */
#define H2_WRITE_BATCH   (256 * 1024) /* serialize at most this much per write */

typedef struct h2_stream {
    mock_stream_t s; /* first: the sink gets back here from &s */
    mock_h2_t *h;
    struct h2_stream *prev, *next;
    int32_t id;
    char method[16]; /* "" when longer: answers 404/405 */
    buf_t path, body;
    buf_t out;         /* response body bytes queued */
    size_t ready;      /* bytes of out the data provider may send (drip releases them one by one) */
    size_t off;        /* bytes of out already handed to nghttp2 */
    size_t head_bytes; /* name + value + 32 of every request header (as SETTINGS_MAX_HEADER_LIST_SIZE) */
    int n_headers;     /* regular (not pseudo) request headers */
    int reject;        /* 413 or 431 when the request passed a bound; 0 */
    bool requested;    /* the request was handed to the call logic */
    bool final;        /* the body is ended or cut: nothing more is queued */
    bool done_sent;    /* the end (END_STREAM, or our RST_STREAM) went to nghttp2 */
    bool released;     /* finished and its timer closing */
} h2_stream_t;

struct mock_h2 {
    nghttp2_session *ng;
    dev_mock_t *m;
    mock_conn_t *c;
    h2_stream_t *streams; /* open streams */
    int writes;           /* writes of this session queued on the connection */
    bool in_recv;         /* inside nghttp2_session_mem_recv: sending waits until it returns */
    bool doomed;          /* a session error: close once the GOAWAY is written */
    bool dead;            /* the connection is closing: no more nghttp2 calls but the final free */
};

static void *h2_malloc(size_t n, void *ud) { return base_malloc(n); }
static void h2_free(void *p, void *ud) { free(p); }
static void *h2_calloc(size_t k, size_t n, void *ud) { return base_calloc(k, n); }
static void *h2_realloc(void *p, size_t n, void *ud) { return base_realloc(p, n); }

/* Serializes what the session has to send into one write; closes the connection once the session
 * is over and everything is written. */
static void h2_send(mock_h2_t *h)
{
    if (h->dead || h->in_recv)
        return;
    buf_t out;
    buf_init(&out, 0);
    while (out.len < H2_WRITE_BATCH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->ng, &data);
        if (n == 0)
            break;
        if (n < 0 || buf_append(&out, data, (size_t)n) < 0) {
            buf_free(&out);
            mock_conn_close(h->c);
            return;
        }
    }
    if (out.len > 0) {
        h->writes++;
        if (mock_conn_write(h->c, &out) < 0)
            return;
    }
    buf_free(&out);
    bool over = h->doomed || (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng));
    if (over && h->writes == 0)
        mock_conn_close(h->c);
}

static void h2s_closed(uv_handle_t *t)
{
    h2_stream_t *hs = (h2_stream_t *)t->data;
    dev_mock_t *m = hs->s.m;
    buf_free(&hs->path);
    buf_free(&hs->body);
    buf_free(&hs->out);
    mock_call_clear(&hs->s.call);
    free(hs);
    mock_handle_released(m);
}

/* Ends the stream's call (lost: the client left before the answer ended) and frees it later. */
static void h2s_release(h2_stream_t *hs, bool lost)
{
    if (hs->released)
        return;
    hs->released = true;
    mock_h2_t *h = hs->h;
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        h->streams = hs->next;
    if (hs->next)
        hs->next->prev = hs->prev;
    mock_stream_finish(&hs->s, lost);
    uv_close((uv_handle_t *)&hs->s.timer, h2s_closed);
}

/* ---- the HTTP/2 sink ---- */

static nghttp2_nv nv(const char *name, const char *value)
{
    nghttp2_nv v = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE};
    return v;
}

/* The data provider: the released bytes, then END_STREAM (or, cut, a failure that resets the
 * stream with INTERNAL_ERROR); deferred while nothing is released. */
static ssize_t h2_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    h2_stream_t *hs = src->ptr;
    size_t n = hs->ready - hs->off;
    if (n > length)
        n = length;
    memcpy(buf, hs->out.data + hs->off, n);
    hs->off += n;
    if (!hs->final || hs->off < hs->out.len)
        return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
    if (hs->s.cut && n)
        return (ssize_t)n;
    hs->done_sent = true;
    if (hs->s.cut)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int h2_head(mock_stream_t *s, const mock_head_t *hd)
{
    h2_stream_t *hs = (h2_stream_t *)(void *)s;
    char status[16], len[24], retry[24];
    nghttp2_nv nva[5];
    size_t n = 0;
    snprintf(status, sizeof status, "%d", hd->status);
    nva[n++] = nv(":status", status);
    nva[n++] = nv("content-type", hd->ctype);
    if (hd->id[0])
        nva[n++] = nv(hd->id_name, hd->id);
    if (hd->body_len >= 0) {
        snprintf(len, sizeof len, "%lld", hd->body_len);
        nva[n++] = nv("content-length", len);
    } else {
        nva[n++] = nv("cache-control", "no-cache");
    }
    if (hd->retry_after_s > 0) {
        snprintf(retry, sizeof retry, "%lld", hd->retry_after_s);
        nva[n++] = nv("retry-after", retry);
    }
    nghttp2_data_provider prd = {.source.ptr = hs, .read_callback = h2_read};
    return nghttp2_submit_response(hs->h->ng, hs->id, nva, n, &prd) == 0 ? 0 : -1;
}

static int h2_write(mock_stream_t *s, const char *data, size_t n)
{
    h2_stream_t *hs = (h2_stream_t *)(void *)s;
    if (hs->off == hs->out.len) {
        buf_reset(&hs->out);
        hs->off = hs->ready = 0;
    }
    return n ? buf_append(&hs->out, data, n) : 0;
}

static int h2_end(mock_stream_t *s)
{
    ((h2_stream_t *)(void *)s)->final = true;
    return 0;
}

static void h2_cut(mock_stream_t *s) { ((h2_stream_t *)(void *)s)->final = true; }

static int64_t h2_flush(mock_stream_t *s, size_t max)
{
    h2_stream_t *hs = (h2_stream_t *)(void *)s;
    size_t left = hs->out.len - hs->ready, n = left < max ? left : max;
    hs->ready += n;
    left -= n;
    nghttp2_session_resume_data(hs->h->ng, hs->id);
    h2_send(hs->h);
    return hs->released && left ? -1 : (int64_t)left;
}

static void h2_reset(mock_stream_t *s)
{
    h2_stream_t *hs = (h2_stream_t *)(void *)s;
    hs->done_sent = hs->final = true;
    nghttp2_submit_rst_stream(hs->h->ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
    h2_send(hs->h);
}

static const mock_sink_t h2_sink = {h2_head, h2_write, h2_end, h2_cut, h2_flush, h2_reset};

/* ---- session callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    mock_h2_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream_t *hs = base_calloc(1, sizeof *hs);
    if (!hs)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    hs->h = h;
    hs->id = f->hd.stream_id;
    hs->s.m = h->m;
    hs->s.sink = &h2_sink;
    buf_init(&hs->path, MOCK_MAX_HEAD_BYTES);
    buf_init(&hs->body, MOCK_MAX_BODY_BYTES);
    buf_init(&hs->out, 0);
    uv_timer_init(h->m->loop, &hs->s.timer);
    hs->s.timer.data = hs;
    h->m->open_handles++;
    hs->next = h->streams;
    if (h->streams)
        h->streams->prev = hs;
    h->streams = hs;
    h->m->stats.h2_streams_total++;
    nghttp2_session_set_stream_user_data(ng, hs->id, hs);
    return 0;
}

/* Keeps :method, :path and what the counters want; marks the request 413/431 past the bounds. */
static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    h2_stream_t *hs = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    const char *n = (const char *)name, *v = (const char *)value;
    if (!hs || hs->requested || hs->reject || f->hd.type != NGHTTP2_HEADERS ||
        f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    hs->head_bytes += nlen + vlen + 32;
    if (hs->head_bytes > MOCK_MAX_HEAD_BYTES || (n[0] != ':' && ++hs->n_headers > MOCK_MAX_HEADERS)) {
        hs->reject = 431;
    } else if (nlen == 7 && memcmp(n, ":method", 7) == 0) {
        if (vlen < sizeof hs->method)
            memcpy(hs->method, v, vlen);
    } else if (nlen == 5 && memcmp(n, ":path", 5) == 0) {
        if (buf_append(&hs->path, v, vlen) < 0)
            hs->reject = 431;
    } else if (nlen == 14 && memcmp(n, "content-length", 14) == 0) {
        char num[24], *e;
        memcpy(num, v, vlen < sizeof num ? vlen : sizeof num - 1);
        num[vlen < sizeof num ? vlen : sizeof num - 1] = '\0';
        long long cl = strtoll(num, &e, 10);
        if (vlen >= sizeof num || cl > MOCK_MAX_BODY_BYTES)
            hs->reject = 413;
    } else {
        mock_note_header(hs->h->m, n, nlen, v, vlen);
    }
    return 0;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    h2_stream_t *hs = nghttp2_session_get_stream_user_data(ng, id);
    if (!hs || hs->reject)
        return 0;
    if (buf_append(&hs->body, data, len) < 0) {
        hs->reject = 413;
        buf_free(&hs->body);
    }
    return 0;
}

/* A request is complete at END_STREAM: hand it to the call logic. */
static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream_t *hs = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!hs || hs->requested)
        return 0;
    hs->requested = true;
    if (hs->reject)
        mock_stream_error(&hs->s, hs->reject,
                          hs->reject == 413 ? "Request body too large" : "Request headers too large");
    else
        mock_stream_request(&hs->s, hs->method, strlen(hs->method), hs->path.data ? hs->path.data : "",
                            hs->path.len, hs->body.data ? hs->body.data : "", hs->body.len);
    buf_free(&hs->path);
    buf_free(&hs->body);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    mock_h2_t *h = ud;
    h2_stream_t *hs = nghttp2_session_get_stream_user_data(ng, id);
    if (hs && !h->dead)
        h2s_release(hs, !hs->done_sent);
    return 0;
}

/* ---- the connection ---- */

mock_h2_t *mock_h2_new(dev_mock_t *m, mock_conn_t *c)
{
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_mem mem = {NULL, h2_malloc, h2_free, h2_calloc, h2_realloc};
    mock_h2_t *h = base_calloc(1, sizeof *h);
    if (!h || nghttp2_session_callbacks_new(&cb) != 0)
        goto fail;
    h->m = m;
    h->c = c;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_server_new3(&h->ng, cb, h, NULL, &mem);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)m->knobs.h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MOCK_MAX_HEAD_BYTES},
    };
    if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, BASE_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0)
        goto fail;
    m->stats.h2_connections_total++;
    return h;
fail:
    if (h && h->ng)
        nghttp2_session_del(h->ng);
    free(h);
    return NULL;
}

void mock_h2_input(mock_h2_t *h, const char *data, size_t n)
{
    if (h->dead || h->doomed)
        return;
    h->in_recv = true;
    ssize_t rv = nghttp2_session_mem_recv(h->ng, (const uint8_t *)data, n);
    h->in_recv = false;
    if (rv < 0) {
        h->doomed = true;
        nghttp2_session_terminate_session(h->ng, NGHTTP2_PROTOCOL_ERROR);
    }
    h2_send(h);
}

void mock_h2_written(mock_h2_t *h)
{
    h->writes--;
    h2_send(h);
}

void mock_h2_end(mock_h2_t *h, bool lost)
{
    h->dead = true;
    while (h->streams)
        h2s_release(h->streams, lost);
}

void mock_h2_free(mock_h2_t *h)
{
    nghttp2_session_del(h->ng);
    free(h);
}
