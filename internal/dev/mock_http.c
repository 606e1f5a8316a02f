/* mock_http.c — the mock providers' call logic and their HTTP/1.1 server on libuv. The call logic
 * serves one request on a mock_stream_t (routing, admin endpoints, the timed answer: wait the
 * latency, then send it whole, token by token with gaps, or one byte at a time) and speaks only to
 * the stream's sink, so HTTP/1.1 and HTTP/2 (mock_h2.c) share it. The HTTP/1.1 side: accept, a
 * bounded request parser (request line, <= 64 headers in <= 16 KiB, Content-Length body <= 8 MiB,
 * keep-alive, Expect: 100-continue) and a sink that renders heads and chunked bodies. A connection
 * whose first bytes are the HTTP/2 client preface is handed to mock_h2.c. Reads go through one
 * shared buffer, so an idle waiting call holds only its answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "mock.h"

struct mock_conn {
    uv_tcp_t tcp;
    dev_mock_t *m;
    struct mock_conn *prev, *next;
    mock_stream_t s; /* the call being served: one at a time on HTTP/1.1; its timer is the conn's */
    mock_h2_t *h2;   /* set once the client preface was seen */
    buf_t in;        /* request bytes not yet consumed */
    size_t need;     /* head + body bytes of the parsed head; 0 = head not parsed yet */
    size_t head_len; /* bytes of the head including the blank line */
    buf_t out;       /* response bytes queued by the sink, not yet written */
    size_t out_off;  /* bytes at the front of out already written (drip) */
    int handles;     /* open uv handles; freed at 0 */
    int pending_writes;
    bool keep_alive, closing, busy, final, chunked, sent_continue, sniffed;
};

typedef struct {
    uv_write_t req;
    mock_conn_t *c;
    char *data;
} mock_wreq_t;

static void mock_maybe_free(dev_mock_t *m)
{
    if (m->closing && m->open_handles == 0) {
        free(m->name);
        free(m);
    }
}

void mock_handle_released(dev_mock_t *m)
{
    m->open_handles--;
    mock_maybe_free(m);
}

/* ---- the call logic: one request on a stream, answered through the stream's sink ---- */

static void on_timer(uv_timer_t *t);

/* Queues the response head for status; body_len < 0 when the body is streamed. */
static int stream_head(mock_stream_t *s, int status, const char *ctype, long long body_len)
{
    dev_mock_t *m = s->m;
    bool retry = status == 429 || status == 503 || status == 529;
    mock_head_t h = {
        .status = status,
        .ctype = ctype,
        .body_len = body_len,
        .retry_after_s = retry ? (long long)m->knobs.retry_after_s : 0,
        .id_name = m->type == DEV_MOCK_OPENAI ? "x-request-id" : "request-id",
        .id = s->id,
    };
    return s->sink->head(s, &h);
}

/* Queues a whole response and sends it now. */
static void stream_respond(mock_stream_t *s, int status, const char *ctype, const char *body, size_t len)
{
    if (s->api)
        mock_stats_status(s->m, status);
    if (stream_head(s, status, ctype, (long long)len) < 0 || s->sink->write(s, body, len) < 0 ||
        s->sink->end(s) < 0) {
        s->sink->reset(s);
        return;
    }
    s->sink->flush(s, SIZE_MAX);
}

void mock_stream_error(mock_stream_t *s, int status, const char *message)
{
    buf_t body;
    buf_init(&body, 0);
    if (mock_error_body(s->m->type, status, message, &body) < 0)
        s->sink->reset(s);
    else
        stream_respond(s, status, "application/json", body.data, body.len);
    buf_free(&body);
}

void mock_stream_finish(mock_stream_t *s, bool lost)
{
    mock_stats_t *st = &s->m->stats;
    if (s->in_flight) {
        st->in_flight--;
        if (lost)
            st->disconnects++;
    }
    if (s->cut && !lost)
        st->cut++;
    uv_timer_stop(&s->timer);
    mock_call_clear(&s->call);
    s->id[0] = '\0';
    s->tok_off = 0;
    s->toks_sent = 0;
    s->status = 0;
    s->api = s->in_flight = s->started = s->cut = s->dripping = false;
}

/* Queues the next piece of the answer. Sets *last on the final piece (then the body is ended or cut)
 * and *token when the piece carried a content token. 1 when an error answer went out whole, 0, or
 * -1 out of memory. */
static int next_piece(mock_stream_t *s, bool *last, bool *token)
{
    dev_mock_t *m = s->m;
    const mock_knobs_t *k = &m->knobs;
    buf_t ev;
    int rc = 0;
    buf_init(&ev, 0);
    *last = *token = false;
    if (!s->started && s->status != 200) {
        s->started = *last = true;
        mock_stream_error(s, s->status,
                          s->status == 429 ? "Rate limit reached for requests" : "Mock failure");
        return 1;
    }
    if (!s->started && (!s->call.stream || k->not_json)) {
        s->started = *last = true;
        mock_stats_status(m, 200);
        if (k->not_json)
            rc = buf_append_str(&ev, "<html><body><h1>502 Bad Gateway</h1></body></html>\n");
        else
            rc = mock_answer_json(m, &s->call, s->id, &ev);
        rc = rc ? rc : stream_head(s, 200, "application/json", (long long)ev.len);
        if (k->cut_after >= 0 && (size_t)k->cut_after < ev.len) {
            ev.len = (size_t)k->cut_after;
            s->cut = true;
        }
        goto out;
    }
    if (!s->started) {
        s->started = true;
        mock_stats_status(m, 200);
        rc = stream_head(s, 200, "text/event-stream; charset=utf-8", -1);
        rc = rc ? rc : mock_sse_comment(m, &ev);
        rc = rc ? rc : mock_sse_start(m, &s->call, s->id, &ev);
        goto out;
    }
    if (k->cut_after >= 0 && s->toks_sent >= k->cut_after) {
        *last = s->cut = true;
        goto out;
    }
    if (k->error_after >= 0 && s->toks_sent >= k->error_after) {
        *last = true;
        rc = mock_sse_error(m, &ev);
        goto out;
    }
    const char *text = s->call.text;
    size_t len = s->call.text_len, start = s->tok_off;
    if (start >= len) {
        *last = true;
        rc = mock_sse_end(m, &s->call, s->id, s->toks_sent, &ev);
        goto out;
    }
    size_t end = start;
    while (end < len && text[end] == ' ')
        end++;
    while (end < len && text[end] != ' ')
        end++;
    while (end < len && text[end] == ' ')
        end++;
    s->tok_off = end;
    s->toks_sent++;
    *token = true;
    if (s->toks_sent % 4 == 0) {
        rc = mock_sse_comment(m, &ev);
        rc = rc ? rc : mock_sse_ping(m, &ev);
    }
    rc = rc ? rc : mock_sse_token(m, &s->call, s->id, text + start, end - start, &ev);
out:
    rc = rc ? rc : s->sink->write(s, ev.data, ev.len);
    if (rc == 0 && *last && s->cut)
        s->sink->cut(s);
    else if (rc == 0 && *last)
        rc = s->sink->end(s);
    buf_free(&ev);
    return rc;
}

/* Drip mode: releases one more byte of the queued response; the next one after drip_ms. */
static void stream_drip(mock_stream_t *s)
{
    uint64_t gap = (uint64_t)s->m->knobs.drip_ms;
    if (s->sink->flush(s, 1) > 0)
        uv_timer_start(&s->timer, on_timer, gap, 0);
}

/* Queues pieces until a token gap is due or the answer is complete, then sends them (or starts the
 * drip of the whole answer). */
static void stream_pump(mock_stream_t *s)
{
    const mock_knobs_t *k = &s->m->knobs;
    bool last = false, token = false, drip = k->drip_ms > 0;
    while (!last && !(token && !drip && k->token_ms > 0)) {
        int rc = next_piece(s, &last, &token);
        if (rc < 0) {
            s->sink->reset(s);
            return;
        }
        if (rc == 1)
            return;
    }
    if (drip) {
        s->dripping = true;
        stream_drip(s);
        return;
    }
    if (!last)
        uv_timer_start(&s->timer, on_timer, (uint64_t)k->token_ms, 0);
    s->sink->flush(s, SIZE_MAX);
}

static void on_timer(uv_timer_t *t)
{
    mock_stream_t *s = t->data;
    if (s->dripping)
        stream_drip(s);
    else
        stream_pump(s);
}

/* Starts an API call: parse, draw tail and failure, wait. */
static void start_call(mock_stream_t *s, const char *body, size_t len)
{
    dev_mock_t *m = s->m;
    mock_stats_t *st = &m->stats;
    int64_t now = base_wall_ms();
    st->requests++;
    if (!st->first_request_ms)
        st->first_request_ms = now;
    st->last_request_ms = now;
    if (now / 1000 != st->rps_second) {
        st->rps_second = now / 1000;
        st->rps_count = 0;
    }
    if (++st->rps_count > st->rps_peak)
        st->rps_peak = st->rps_count;
    s->api = true;
    snprintf(s->id, sizeof s->id, "%s%016llx", m->type == DEV_MOCK_OPENAI ? "chatcmpl-mock" : "msg_mock",
             (unsigned long long)++m->next_id);
    char err[256];
    int status = mock_call_parse(m, body, len, &s->call, err, sizeof err);
    if (status) {
        mock_stream_error(s, status, err);
        return;
    }
    double r_tail = mock_rand(m), r_fail = mock_rand(m);
    bool failing = r_fail < m->knobs.fail_rate;
    if (m->knobs.fail_next > 0) {
        m->knobs.fail_next--;
        failing = true;
    }
    s->status = failing ? (int)m->knobs.fail_status : 200;
    if (s->call.stream && !failing)
        st->streamed++;
    s->in_flight = true;
    if (++st->in_flight > st->in_flight_peak)
        st->in_flight_peak = st->in_flight;
    int64_t delay = r_tail < m->knobs.tail_prob ? m->knobs.tail_ms : m->knobs.latency_ms;
    uv_timer_start(&s->timer, on_timer, (uint64_t)delay, 0);
}

/* Serves the admin endpoints at once. */
static void admin(mock_stream_t *s, mock_endpoint_t ep, const char *body, size_t len)
{
    dev_mock_t *m = s->m;
    buf_t out;
    buf_init(&out, 0);
    char err[256];
    int rc = 0;
    if (ep == EP_STATS_RESET) {
        mock_stats_reset(m);
        rc = buf_append_str(&out, "{\"ok\":true}");
    } else if (ep == EP_CONTROL && len > 0 && mock_knobs_set_json(m, body, len, err, sizeof err) < 0) {
        buf_free(&out);
        mock_stream_error(s, 400, err);
        return;
    } else {
        rc = ep == EP_STATS ? mock_stats_json(m, &out) : mock_knobs_json(m, &out);
    }
    if (rc < 0)
        s->sink->reset(s);
    else
        stream_respond(s, 200, "application/json", out.data, out.len);
    buf_free(&out);
}

void mock_stream_request(mock_stream_t *s, const char *method, size_t mlen, const char *path, size_t plen,
                         const char *body, size_t blen)
{
    static const struct {
        const char *path, *method;
        mock_endpoint_t ep;
    } routes[] = {
        {"/v1/chat/completions", "POST", EP_CHAT},
        {"/v1/messages", "POST", EP_MESSAGES},
        {"/stats", "GET", EP_STATS},
        {"/stats/reset", "POST", EP_STATS_RESET},
        {"/control", "GET", EP_CONTROL},
        {"/control", "POST", EP_CONTROL},
    };
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    dev_mock_t *m = s->m;
    bool path_known = false;
    for (size_t i = 0; i < BASE_ARRAY_LEN(routes); i++) {
        mock_endpoint_t ep = routes[i].ep;
        if (strlen(routes[i].path) != plen || memcmp(routes[i].path, path, plen) != 0)
            continue;
        if ((ep == EP_CHAT && m->type != DEV_MOCK_OPENAI) ||
            (ep == EP_MESSAGES && m->type != DEV_MOCK_ANTHROPIC))
            continue;
        path_known = true;
        if (strlen(routes[i].method) != mlen || memcmp(routes[i].method, method, mlen) != 0)
            continue;
        m->stats.by_endpoint[ep]++;
        if (ep == EP_CHAT || ep == EP_MESSAGES)
            start_call(s, body, blen);
        else
            admin(s, ep, body, blen);
        return;
    }
    m->stats.by_endpoint[EP_OTHER]++;
    mock_stream_error(s, path_known ? 405 : 404, path_known ? "Method not allowed" : "Unknown request URL");
}

/* Case-insensitive header name test. */
static bool hname(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n == k && strncasecmp(line, name, k) == 0;
}

/* Keeps a trace header's value for /stats when it is plain visible ASCII without quotes or backslashes
 * (so it can be written into JSON as is) and fits; else keeps "". */
static void keep_trace_header(char *out, const char *val, size_t vlen)
{
    out[0] = '\0';
    if (vlen >= MOCK_MAX_TRACE_BYTES)
        return;
    for (size_t i = 0; i < vlen; i++)
        if (val[i] < 0x20 || val[i] > 0x7e || val[i] == '"' || val[i] == '\\')
            return;
    memcpy(out, val, vlen);
    out[vlen] = '\0';
}

void mock_note_header(dev_mock_t *m, const char *name, size_t nlen, const char *val, size_t vlen)
{
    if (hname(name, nlen, "traceparent")) {
        keep_trace_header(m->stats.last_traceparent, val, vlen);
        m->stats.traceparents++;
    } else if (hname(name, nlen, "tracestate")) {
        keep_trace_header(m->stats.last_tracestate, val, vlen);
    }
}

/* ---- HTTP/1.1 connections ---- */

static void conn_process(mock_conn_t *c);

static mock_conn_t *conn_of(mock_stream_t *s)
{
    return (mock_conn_t *)(void *)((char *)s - offsetof(mock_conn_t, s));
}

/* One of the connection's two handles closed; frees it after the second. */
static void conn_release(mock_conn_t *c)
{
    if (--c->handles > 0)
        return;
    dev_mock_t *m = c->m;
    if (c->h2)
        mock_h2_free(c->h2);
    buf_free(&c->in);
    buf_free(&c->out);
    mock_call_clear(&c->s.call);
    free(c);
    mock_handle_released(m);
}

static void tcp_closed(uv_handle_t *h) { conn_release(h->data); }
static void timer_closed(uv_handle_t *h) { conn_release(conn_of(h->data)); }

void mock_conn_close(mock_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->h2)
        mock_h2_end(c->h2, false);
    mock_stream_finish(&c->s, false);
    dev_mock_t *m = c->m;
    m->stats.connections_open--;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->s.timer, timer_closed);
    uv_close((uv_handle_t *)&c->tcp, tcp_closed);
}

/* The connection's peer went away: the calls it carried count as disconnects. */
static void conn_lost(mock_conn_t *c)
{
    if (c->closing)
        return;
    if (c->h2)
        mock_h2_end(c->h2, true);
    mock_stream_finish(&c->s, true);
    mock_conn_close(c);
}

/* Called when every byte of the HTTP/1.1 response has been written. */
static void conn_response_done(mock_conn_t *c)
{
    bool cut = c->s.cut;
    mock_stream_finish(&c->s, false);
    c->busy = c->final = c->chunked = c->sent_continue = false;
    if (cut || !c->keep_alive) {
        mock_conn_close(c);
        return;
    }
    conn_process(c);
}

/* Ends the response when it was ended or cut and nothing of it is left to write. */
static void conn_maybe_done(mock_conn_t *c)
{
    if (c->final && c->pending_writes == 0 && c->out_off == c->out.len)
        conn_response_done(c);
}

static void on_write(uv_write_t *req, int status)
{
    mock_wreq_t *w = (mock_wreq_t *)req;
    mock_conn_t *c = w->c;
    free(w->data);
    free(w);
    c->pending_writes--;
    if (c->closing)
        return;
    if (status < 0)
        conn_lost(c);
    else if (c->h2)
        mock_h2_written(c->h2);
    else
        conn_maybe_done(c);
}

int mock_conn_write(mock_conn_t *c, buf_t *b)
{
    if (b->len == 0) {
        buf_free(b);
        return 0;
    }
    mock_wreq_t *w = base_malloc(sizeof *w);
    if (!w) {
        buf_free(b);
        conn_lost(c);
        return -1;
    }
    size_t n;
    w->c = c;
    w->data = buf_steal(b, &n);
    uv_buf_t ub = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write) < 0) {
        free(w->data);
        free(w);
        conn_lost(c);
        return -1;
    }
    c->pending_writes++;
    c->m->stats.bytes_out += n;
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 529:
        return "Site Overloaded";
    default:
        return status >= 500 ? "Server Error" : "Error";
    }
}

/* ---- the HTTP/1.1 sink: heads as text, streamed bodies chunked, cut = close the connection ---- */

static int h1_head(mock_stream_t *s, const mock_head_t *h)
{
    mock_conn_t *c = conn_of(s);
    buf_t *out = &c->out;
    c->chunked = h->body_len < 0;
    int rc =
        buf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", h->status, reason(h->status), h->ctype);
    if (rc == 0 && h->id[0])
        rc = buf_printf(out, "%s: %s\r\n", h->id_name, h->id);
    if (rc == 0 && !c->chunked)
        rc = buf_printf(out, "Content-Length: %lld\r\n", h->body_len);
    else if (rc == 0)
        rc = buf_append_str(out, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    if (rc == 0 && h->retry_after_s > 0)
        rc = buf_printf(out, "Retry-After: %lld\r\n", h->retry_after_s);
    if (rc == 0 && !c->keep_alive)
        rc = buf_append_str(out, "Connection: close\r\n");
    return rc ? rc : buf_append_str(out, "\r\n");
}

static int h1_write(mock_stream_t *s, const char *data, size_t n)
{
    mock_conn_t *c = conn_of(s);
    if (n == 0)
        return 0;
    if (!c->chunked)
        return buf_append(&c->out, data, n);
    int rc = buf_printf(&c->out, "%zx\r\n", n);
    rc = rc ? rc : buf_append(&c->out, data, n);
    return rc ? rc : buf_append_str(&c->out, "\r\n");
}

static int h1_end(mock_stream_t *s)
{
    mock_conn_t *c = conn_of(s);
    c->final = true;
    return c->chunked ? buf_append_str(&c->out, "0\r\n\r\n") : 0;
}

static void h1_cut(mock_stream_t *s) { conn_of(s)->final = true; }

static int64_t h1_flush(mock_stream_t *s, size_t max)
{
    mock_conn_t *c = conn_of(s);
    size_t n = c->out.len - c->out_off;
    buf_t w;
    if (n > max)
        n = max;
    if (c->out_off == 0 && n == c->out.len) {
        w = c->out;
        buf_init(&c->out, 0);
    } else {
        buf_init(&w, 0);
        if (buf_append(&w, c->out.data + c->out_off, n) < 0) {
            mock_conn_close(c);
            return -1;
        }
        c->out_off += n;
        if (c->out_off == c->out.len) {
            buf_reset(&c->out);
            c->out_off = 0;
        }
    }
    int64_t left = (int64_t)(c->out.len - c->out_off);
    if (mock_conn_write(c, &w) < 0)
        return -1;
    if (left == 0)
        conn_maybe_done(c);
    return left;
}

static void h1_reset(mock_stream_t *s) { mock_conn_close(conn_of(s)); }

static const mock_sink_t h1_sink = {h1_head, h1_write, h1_end, h1_cut, h1_flush, h1_reset};

/* Parses the head in c->in; sets c->need. 0 ok, 1 incomplete, or an HTTP status to fail with. */
static int parse_head(mock_conn_t *c)
{
    const char *d = c->in.data;
    const char *end = memmem(d, c->in.len, "\r\n\r\n", 4);
    if (!end)
        return c->in.len > MOCK_MAX_HEAD_BYTES ? 431 : 1;
    c->head_len = (size_t)(end - d) + 4;
    if (c->head_len > MOCK_MAX_HEAD_BYTES)
        return 431;
    const char *line = memmem(d, c->head_len, "\r\n", 2);
    const char *v = memmem(d, (size_t)(line - d), " HTTP/1.", 8);
    if (!v || (size_t)(line - v) != 9)
        return 400;
    c->keep_alive = v[8] == '1';
    long long cl = 0;
    int n_headers = 0;
    bool expect = false;
    for (const char *p = line + 2; p < end; p = line + 2) {
        line = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        const char *colon = memchr(p, ':', (size_t)(line - p));
        if (!colon || ++n_headers > MOCK_MAX_HEADERS)
            return colon ? 431 : 400;
        size_t nlen = (size_t)(colon - p);
        const char *val = colon + 1;
        while (val < line && (*val == ' ' || *val == '\t'))
            val++;
        size_t vlen = (size_t)(line - val);
        if (hname(p, nlen, "content-length")) {
            char num[24], *e;
            if (vlen == 0 || vlen >= sizeof num)
                return 400;
            memcpy(num, val, vlen);
            num[vlen] = '\0';
            cl = strtoll(num, &e, 10);
            if (*e || cl < 0)
                return 400;
            if (cl > MOCK_MAX_BODY_BYTES)
                return 413;
        } else if (hname(p, nlen, "transfer-encoding")) {
            return 501;
        } else if (hname(p, nlen, "connection")) {
            if (vlen == 5 && strncasecmp(val, "close", 5) == 0)
                c->keep_alive = false;
        } else if (hname(p, nlen, "expect")) {
            expect = vlen == 12 && strncasecmp(val, "100-continue", 12) == 0;
        } else {
            mock_note_header(c->m, p, nlen, val, vlen);
        }
    }
    c->need = c->head_len + (size_t)cl;
    if (expect && c->in.len < c->need && !c->sent_continue) {
        buf_t out;
        buf_init(&out, 0);
        c->sent_continue = true;
        if (buf_append_str(&out, "HTTP/1.1 100 Continue\r\n\r\n") < 0 || mock_conn_write(c, &out) < 0) {
            buf_free(&out);
            return -1;
        }
    }
    return 0;
}

/* Refuses a malformed request with status; the connection closes after the answer. */
static void conn_refuse(mock_conn_t *c, int status, const char *message)
{
    c->busy = true;
    c->keep_alive = false;
    mock_stream_error(&c->s, status, message);
}

/* Parses and serves the requests buffered in c->in while the connection is idle. */
static void conn_process(mock_conn_t *c)
{
    while (!c->closing && !c->busy && c->in.len > 0) {
        if (!c->need) {
            int st = parse_head(c);
            if (st < 0 || st == 1) {
                if (st < 0)
                    mock_conn_close(c);
                return;
            }
            if (st) {
                conn_refuse(c, st,
                            st == 501 ? "Transfer-Encoding is not supported; send Content-Length"
                                      : "Malformed request");
                return;
            }
        }
        if (c->in.len < c->need)
            return;
        const char *d = c->in.data;
        const char *sp1 = memchr(d, ' ', c->head_len), *sp2 = sp1 ? memchr(sp1 + 1, ' ', c->head_len) : NULL;
        size_t need = c->need;
        c->need = 0;
        if (!sp1 || !sp2) {
            conn_refuse(c, 400, "Malformed request line");
            return;
        }
        c->busy = true;
        mock_stream_request(&c->s, d, (size_t)(sp1 - d), sp1 + 1, (size_t)(sp2 - sp1 - 1), d + c->head_len,
                            need - c->head_len);
        if (c->closing)
            return;
        memmove(c->in.data, c->in.data + need, c->in.len - need);
        c->in.len -= need;
        c->in.data[c->in.len] = '\0';
        if (c->in.len == 0)
            buf_free(&c->in);
    }
}

/* Decides the protocol from the first bytes: the HTTP/2 client preface hands the connection (and
 * the bytes read so far) to mock_h2.c. true when the bytes are for HTTP/1.1 parsing. */
static bool conn_sniff(mock_conn_t *c)
{
    size_t n = c->in.len < MOCK_H2_PREFACE_LEN ? c->in.len : MOCK_H2_PREFACE_LEN;
    if (memcmp(c->in.data, MOCK_H2_PREFACE, n) != 0) {
        c->sniffed = true;
        return true;
    }
    if (n < MOCK_H2_PREFACE_LEN)
        return false;
    c->sniffed = true;
    if (!(c->h2 = mock_h2_new(c->m, c))) {
        mock_conn_close(c);
        return false;
    }
    buf_t in = c->in;
    buf_init(&c->in, 0);
    mock_h2_input(c->h2, in.data, in.len);
    buf_free(&in);
    return false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mock_conn_t *c = h->data;
    *buf = uv_buf_init(c->m->rbuf, sizeof c->m->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mock_conn_t *c = s->data;
    if (nread < 0) {
        conn_lost(c);
        return;
    }
    if (nread == 0 || c->closing)
        return;
    if (c->h2) {
        mock_h2_input(c->h2, buf->base, (size_t)nread);
        return;
    }
    if (buf_append(&c->in, buf->base, (size_t)nread) < 0) {
        conn_lost(c);
        return;
    }
    if (!c->sniffed && !conn_sniff(c))
        return;
    if (!c->busy)
        conn_process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    dev_mock_t *m = server->data;
    if (status < 0 || m->closing)
        return;
    mock_conn_t *c = base_calloc(1, sizeof *c);
    if (!c)
        return;
    c->m = m;
    c->s.m = m;
    c->s.sink = &h1_sink;
    buf_init(&c->in, MOCK_MAX_HEAD_BYTES + MOCK_MAX_BODY_BYTES);
    buf_init(&c->out, 0);
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->s.timer);
    c->tcp.data = c;
    c->s.timer.data = &c->s;
    c->handles = 2;
    m->open_handles++;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->stats.connections_open++;
    m->stats.connections_total++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        mock_conn_close(c);
    else
        uv_tcp_nodelay(&c->tcp, 1);
}

dev_mock_t *dev_mock_new(uv_loop_t *loop, const char *name, dev_mock_type_t type, const char *knobs,
                         char *err, size_t errlen)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != n) {
        snprintf(err, errlen, "provider name must be 1-64 letters, digits, '-', '_' or '.'");
        return NULL;
    }
    dev_mock_t *m = base_calloc(1, sizeof *m);
    if (!m || !(m->name = base_strdup(name))) {
        free(m);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->type = type;
    mock_knobs_defaults(&m->knobs);
    m->rng = (uint64_t)m->knobs.seed;
    if (dev_mock_set_knobs(m, knobs, err, errlen) < 0) {
        free(m->name);
        free(m);
        return NULL;
    }
    return m;
}

int dev_mock_listen(dev_mock_t *m, const char *host, int port, char *err, size_t errlen)
{
    struct sockaddr_in addr;
    int rc = uv_ip4_addr(host, port, &addr);
    if (rc == 0 && !m->listening) {
        uv_tcp_init(m->loop, &m->listener);
        m->listener.data = m;
        m->listening = true;
        m->open_handles++;
        rc = uv_tcp_bind(&m->listener, (const struct sockaddr *)&addr, 0);
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&m->listener, 4096, on_connection);
    if (rc == 0) {
        struct sockaddr_in got;
        int len = sizeof got;
        rc = uv_tcp_getsockname(&m->listener, (struct sockaddr *)&got, &len);
        m->port = ntohs(got.sin_port);
    }
    if (rc < 0)
        snprintf(err, errlen, "mock provider %s: listen on %s:%d: %s", m->name, host, port, uv_strerror(rc));
    return rc;
}

int dev_mock_port(const dev_mock_t *m) { return m->port; }
const char *dev_mock_name(const dev_mock_t *m) { return m->name; }
dev_mock_type_t dev_mock_type(const dev_mock_t *m) { return m->type; }

static void listener_closed(uv_handle_t *h) { mock_handle_released(h->data); }

void dev_mock_close(dev_mock_t *m)
{
    if (m->closing)
        return;
    m->closing = true;
    while (m->conns)
        mock_conn_close(m->conns);
    if (m->listening)
        uv_close((uv_handle_t *)&m->listener, listener_closed);
    else
        mock_maybe_free(m);
}

int dev_mock_type_parse(const char *s)
{
    if (strcmp(s, "openai") == 0)
        return DEV_MOCK_OPENAI;
    if (strcmp(s, "anthropic") == 0)
        return DEV_MOCK_ANTHROPIC;
    return -1;
}

const char *dev_mock_type_name(dev_mock_type_t t) { return t == DEV_MOCK_OPENAI ? "openai" : "anthropic"; }
