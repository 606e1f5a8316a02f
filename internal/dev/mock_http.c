/* mock_http.c — the mock providers' HTTP/1.1 server on libuv: accept, a bounded request parser
 * (request line, <= 64 headers in <= 16 KiB, Content-Length body <= 8 MiB, keep-alive,
 * Expect: 100-continue), routing, and the timed response: wait the latency, then send the answer
 * whole, token by token with gaps, or one byte at a time. Each connection is a small struct with
 * one timer; reads go through one shared buffer, so an idle waiting call holds only its answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "mock.h"

typedef enum { ST_READ = 0, ST_WAIT, ST_SEND, ST_DRIP, ST_FLUSH } conn_state_t;

typedef struct mock_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    dev_mock_t *m;
    struct mock_conn *prev, *next;
    buf_t in;        /* request bytes not yet consumed */
    size_t need;     /* head + body bytes of the parsed head; 0 = head not parsed yet */
    size_t head_len; /* bytes of the head including the blank line */
    buf_t drip;      /* drip mode: the whole response, sent a byte per tick */
    size_t drip_off;
    mock_call_t call;
    char id[48];
    size_t tok_off;    /* offset in call.text of the next token */
    int64_t toks_sent; /* content tokens sent */
    int status;
    int handles; /* open uv handles; freed at 0 */
    int pending_writes;
    conn_state_t state;
    mock_endpoint_t ep;
    bool keep_alive, closing, in_flight, final_queued, cut, started, sent_continue, api;
} mock_conn_t;

typedef struct {
    uv_write_t req;
    mock_conn_t *c;
    char *data;
} mock_wreq_t;

static void conn_process(mock_conn_t *c);
static void conn_close(mock_conn_t *c);

static void mock_maybe_free(dev_mock_t *m)
{
    if (m->closing && m->open_handles == 0) {
        free(m->name);
        free(m);
    }
}

static void conn_handle_closed(uv_handle_t *h)
{
    mock_conn_t *c = h->data;
    if (--c->handles > 0)
        return;
    dev_mock_t *m = c->m;
    buf_free(&c->in);
    buf_free(&c->drip);
    mock_call_clear(&c->call);
    free(c);
    m->open_handles--;
    mock_maybe_free(m);
}

/* Ends the API call the connection was serving (counters), if any. */
static void conn_end_call(mock_conn_t *c)
{
    if (c->in_flight) {
        c->in_flight = false;
        c->m->stats.in_flight--;
    }
    mock_call_clear(&c->call);
    buf_free(&c->drip);
}

static void conn_close(mock_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    conn_end_call(c);
    dev_mock_t *m = c->m;
    m->stats.connections_open--;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

/* The connection's peer went away while it was being served. */
static void conn_lost(mock_conn_t *c)
{
    if (c->in_flight)
        c->m->stats.disconnects++;
    conn_close(c);
}

/* Called when every byte of the response has been written. */
static void conn_response_done(mock_conn_t *c)
{
    if (c->cut) {
        c->m->stats.cut++;
        conn_close(c);
        return;
    }
    conn_end_call(c);
    if (!c->keep_alive) {
        conn_close(c);
        return;
    }
    c->state = ST_READ;
    c->final_queued = c->started = c->sent_continue = c->api = c->cut = false;
    c->tok_off = 0;
    c->toks_sent = 0;
    c->id[0] = '\0';
    c->drip_off = 0;
    conn_process(c);
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
    if (status < 0) {
        conn_lost(c);
        return;
    }
    if (c->final_queued && c->pending_writes == 0)
        conn_response_done(c);
}

/* Queues b's bytes (taking them; b is left empty). 0, or -1 after closing the connection. */
static int conn_write(mock_conn_t *c, buf_t *b)
{
    if (b->len == 0)
        return 0;
    mock_wreq_t *w = base_malloc(sizeof *w);
    if (!w) {
        buf_free(b);
        conn_close(c);
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

/* Appends a response head; body_len < 0 means chunked. */
static int head(mock_conn_t *c, buf_t *out, int status, const char *ctype, long long body_len)
{
    dev_mock_t *m = c->m;
    int rc = buf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason(status), ctype);
    if (rc == 0 && c->id[0])
        rc = buf_printf(out, "%s: %s\r\n", m->type == DEV_MOCK_OPENAI ? "x-request-id" : "request-id", c->id);
    if (rc == 0 && body_len >= 0)
        rc = buf_printf(out, "Content-Length: %lld\r\n", body_len);
    else if (rc == 0)
        rc = buf_append_str(out, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    if (rc == 0 && (status == 429 || status == 503 || status == 529) && m->knobs.retry_after_s > 0)
        rc = buf_printf(out, "Retry-After: %lld\r\n", (long long)m->knobs.retry_after_s);
    if (rc == 0 && !c->keep_alive)
        rc = buf_append_str(out, "Connection: close\r\n");
    return rc ? rc : buf_append_str(out, "\r\n");
}

/* Sends a whole response now and marks it final. */
static void respond(mock_conn_t *c, int status, const char *ctype, const char *body, size_t len)
{
    buf_t out;
    buf_init(&out, 0);
    if (c->api)
        mock_stats_status(c->m, status);
    if (head(c, &out, status, ctype, (long long)len) < 0 || buf_append(&out, body, len) < 0) {
        buf_free(&out);
        conn_close(c);
        return;
    }
    c->state = ST_FLUSH;
    c->final_queued = true;
    if (conn_write(c, &out) == 0 && c->pending_writes == 0)
        conn_response_done(c);
}

/* Responds with the provider's error body for status; the connection closes after when fatal. */
static void respond_error(mock_conn_t *c, int status, const char *message, bool fatal)
{
    buf_t body;
    buf_init(&body, 0);
    if (fatal)
        c->keep_alive = false;
    if (mock_error_body(c->m->type, status, message, &body) < 0) {
        buf_free(&body);
        conn_close(c);
        return;
    }
    respond(c, status, "application/json", body.data, body.len);
    buf_free(&body);
}

/* Wraps data as one HTTP chunk appended to out. */
static int chunk(buf_t *out, const buf_t *data)
{
    if (data->len == 0)
        return 0;
    int rc = buf_printf(out, "%zx\r\n", data->len);
    rc = rc ? rc : buf_append(out, data->data, data->len);
    return rc ? rc : buf_append_str(out, "\r\n");
}

/* Appends the next piece of the answer to out. Sets *last on the final piece, *cut when the
 * connection must close after it, *token when the piece carried a content token. */
static int next_piece(mock_conn_t *c, buf_t *out, bool *last, bool *cut, bool *token)
{
    dev_mock_t *m = c->m;
    const mock_knobs_t *k = &m->knobs;
    buf_t ev;
    int rc = 0;
    buf_init(&ev, 0);
    *last = *cut = *token = false;
    if (!c->started && c->status != 200) {
        c->started = *last = true;
        respond_error(c, c->status, c->status == 429 ? "Rate limit reached for requests" : "Mock failure",
                      false);
        return 1;
    }
    if (!c->started && (!c->call.stream || k->not_json)) {
        c->started = *last = true;
        mock_stats_status(m, 200);
        if (k->not_json)
            rc = buf_append_str(&ev, "<html><body><h1>502 Bad Gateway</h1></body></html>\n");
        else
            rc = mock_answer_json(m, &c->call, c->id, &ev);
        rc = rc ? rc : head(c, out, 200, "application/json", (long long)ev.len);
        size_t n = ev.len;
        if (k->cut_after >= 0 && (size_t)k->cut_after < n)
            n = (size_t)k->cut_after, *cut = true;
        rc = rc ? rc : buf_append(out, ev.data, n);
        goto out;
    }
    if (!c->started) {
        c->started = true;
        mock_stats_status(m, 200);
        rc = head(c, out, 200, "text/event-stream; charset=utf-8", -1);
        rc = rc ? rc : mock_sse_comment(m, &ev);
        rc = rc ? rc : mock_sse_start(m, &c->call, c->id, &ev);
        rc = rc ? rc : chunk(out, &ev);
        goto out;
    }
    if (k->cut_after >= 0 && c->toks_sent >= k->cut_after) {
        *last = *cut = true;
        goto out;
    }
    if (k->error_after >= 0 && c->toks_sent >= k->error_after) {
        *last = true;
        rc = mock_sse_error(m, &ev);
        rc = rc ? rc : chunk(out, &ev);
        rc = rc ? rc : buf_append_str(out, "0\r\n\r\n");
        goto out;
    }
    const char *text = c->call.text;
    size_t len = c->call.text_len, start = c->tok_off;
    if (start >= len) {
        *last = true;
        rc = mock_sse_end(m, &c->call, c->id, c->toks_sent, &ev);
        rc = rc ? rc : chunk(out, &ev);
        rc = rc ? rc : buf_append_str(out, "0\r\n\r\n");
        goto out;
    }
    size_t end = start;
    while (end < len && text[end] == ' ')
        end++;
    while (end < len && text[end] != ' ')
        end++;
    while (end < len && text[end] == ' ')
        end++;
    c->tok_off = end;
    c->toks_sent++;
    *token = true;
    if (c->toks_sent % 4 == 0) {
        rc = mock_sse_comment(m, &ev);
        rc = rc ? rc : mock_sse_ping(m, &ev);
    }
    rc = rc ? rc : mock_sse_token(m, &c->call, c->id, text + start, end - start, &ev);
    rc = rc ? rc : chunk(out, &ev);
out:
    buf_free(&ev);
    return rc;
}

static void on_timer(uv_timer_t *t);

/* Sends pieces until a token gap is due or the answer is complete. */
static void conn_pump(mock_conn_t *c)
{
    buf_t out;
    buf_init(&out, 0);
    bool last = false, cut = false, token = false, drip = c->m->knobs.drip_ms > 0;
    for (;;) {
        int rc = next_piece(c, &out, &last, &cut, &token);
        if (rc < 0) {
            buf_free(&out);
            conn_close(c);
            return;
        }
        if (rc == 1) { /* an error response went out whole */
            buf_free(&out);
            return;
        }
        if (last || (token && !drip && c->m->knobs.token_ms > 0))
            break;
    }
    c->cut = cut;
    if (drip) {
        c->drip = out;
        c->drip_off = 0;
        c->state = ST_DRIP;
        uv_timer_start(&c->timer, on_timer, 0, (uint64_t)c->m->knobs.drip_ms);
        return;
    }
    if (conn_write(c, &out) < 0)
        return;
    if (!last) {
        c->state = ST_SEND;
        uv_timer_start(&c->timer, on_timer, (uint64_t)c->m->knobs.token_ms, 0);
        return;
    }
    c->state = ST_FLUSH;
    c->final_queued = true;
    if (c->pending_writes == 0)
        conn_response_done(c);
}

/* Drip mode: one byte per tick. */
static void conn_drip(mock_conn_t *c)
{
    if (c->drip_off >= c->drip.len) {
        uv_timer_stop(&c->timer);
        buf_free(&c->drip);
        c->state = ST_FLUSH;
        c->final_queued = true;
        if (c->pending_writes == 0)
            conn_response_done(c);
        return;
    }
    buf_t one;
    buf_init(&one, 0);
    if (buf_append(&one, c->drip.data + c->drip_off++, 1) < 0) {
        conn_close(c);
        return;
    }
    conn_write(c, &one);
}

static void on_timer(uv_timer_t *t)
{
    mock_conn_t *c = t->data;
    if (c->state == ST_DRIP)
        conn_drip(c);
    else
        conn_pump(c);
}

/* Starts an API call: parse, draw tail and failure, wait. */
static void start_call(mock_conn_t *c, const char *body, size_t len)
{
    dev_mock_t *m = c->m;
    mock_stats_t *s = &m->stats;
    int64_t now = base_wall_ms();
    s->requests++;
    if (!s->first_request_ms)
        s->first_request_ms = now;
    s->last_request_ms = now;
    if (now / 1000 != s->rps_second) {
        s->rps_second = now / 1000;
        s->rps_count = 0;
    }
    if (++s->rps_count > s->rps_peak)
        s->rps_peak = s->rps_count;
    c->api = true;
    snprintf(c->id, sizeof c->id, "%s%016llx", m->type == DEV_MOCK_OPENAI ? "chatcmpl-mock" : "msg_mock",
             (unsigned long long)++m->next_id);
    char err[256];
    int st = mock_call_parse(m, body, len, &c->call, err, sizeof err);
    if (st) {
        respond_error(c, st, err, false);
        return;
    }
    double r_tail = mock_rand(m), r_fail = mock_rand(m);
    bool failing = r_fail < m->knobs.fail_rate;
    if (m->knobs.fail_next > 0) {
        m->knobs.fail_next--;
        failing = true;
    }
    c->status = failing ? (int)m->knobs.fail_status : 200;
    if (c->call.stream && !failing)
        s->streamed++;
    c->in_flight = true;
    if (++s->in_flight > s->in_flight_peak)
        s->in_flight_peak = s->in_flight;
    int64_t delay = r_tail < m->knobs.tail_prob ? m->knobs.tail_ms : m->knobs.latency_ms;
    c->state = ST_WAIT;
    uv_timer_start(&c->timer, on_timer, (uint64_t)delay, 0);
}

/* Serves the admin endpoints at once. */
static void admin(mock_conn_t *c, mock_endpoint_t ep, const char *body, size_t len)
{
    dev_mock_t *m = c->m;
    buf_t out;
    buf_init(&out, 0);
    char err[256];
    int rc = 0;
    if (ep == EP_STATS_RESET) {
        mock_stats_reset(m);
        rc = buf_append_str(&out, "{\"ok\":true}");
    } else if (ep == EP_CONTROL && len > 0 && mock_knobs_set_json(m, body, len, err, sizeof err) < 0) {
        buf_free(&out);
        respond_error(c, 400, err, false);
        return;
    } else {
        rc = ep == EP_STATS ? mock_stats_json(m, &out) : mock_knobs_json(m, &out);
    }
    if (rc < 0) {
        buf_free(&out);
        conn_close(c);
        return;
    }
    respond(c, 200, "application/json", out.data, out.len);
    buf_free(&out);
}

/* Routes one complete request. */
static void dispatch(mock_conn_t *c, const char *method, size_t mlen, const char *path, size_t plen,
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
    dev_mock_t *m = c->m;
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
            start_call(c, body, blen);
        else
            admin(c, ep, body, blen);
        return;
    }
    m->stats.by_endpoint[EP_OTHER]++;
    respond_error(c, path_known ? 405 : 404, path_known ? "Method not allowed" : "Unknown request URL",
                  false);
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
        } else if (hname(p, nlen, "traceparent")) {
            keep_trace_header(c->m->stats.last_traceparent, val, vlen);
            c->m->stats.traceparents++;
        } else if (hname(p, nlen, "tracestate")) {
            keep_trace_header(c->m->stats.last_tracestate, val, vlen);
        } else if (hname(p, nlen, "expect")) {
            expect = vlen == 12 && strncasecmp(val, "100-continue", 12) == 0;
        }
    }
    c->need = c->head_len + (size_t)cl;
    if (expect && c->in.len < c->need && !c->sent_continue) {
        buf_t out;
        buf_init(&out, 0);
        c->sent_continue = true;
        if (buf_append_str(&out, "HTTP/1.1 100 Continue\r\n\r\n") < 0 || conn_write(c, &out) < 0) {
            buf_free(&out);
            return -1;
        }
    }
    return 0;
}

/* Parses and serves the requests buffered in c->in while the connection is idle. */
static void conn_process(mock_conn_t *c)
{
    while (!c->closing && c->state == ST_READ && c->in.len > 0) {
        if (!c->need) {
            int st = parse_head(c);
            if (st < 0 || st == 1) {
                if (st < 0)
                    conn_close(c);
                return;
            }
            if (st) {
                respond_error(c, st,
                              st == 501 ? "Transfer-Encoding is not supported; send Content-Length"
                                        : "Malformed request",
                              true);
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
            respond_error(c, 400, "Malformed request line", true);
            return;
        }
        dispatch(c, d, (size_t)(sp1 - d), sp1 + 1, (size_t)(sp2 - sp1 - 1), d + c->head_len,
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
    if (buf_append(&c->in, buf->base, (size_t)nread) < 0) {
        conn_lost(c);
        return;
    }
    if (c->state == ST_READ)
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
    buf_init(&c->in, MOCK_MAX_HEAD_BYTES + MOCK_MAX_BODY_BYTES);
    buf_init(&c->drip, 0);
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
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
        conn_close(c);
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

static void listener_closed(uv_handle_t *h)
{
    dev_mock_t *m = h->data;
    m->open_handles--;
    mock_maybe_free(m);
}

void dev_mock_close(dev_mock_t *m)
{
    if (m->closing)
        return;
    m->closing = true;
    while (m->conns)
        conn_close(m->conns);
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
