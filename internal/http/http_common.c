/* http_common.c — what the libcurl path and the native HTTP/2 path share: entry bracketing with the
 * deferred work and teardown of both, the deadline min-heap and its one uv_timer, body-chunk
 * accounting, result building, error texts and Retry-After parsing. */
#include "http/http_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- deadline heap (first-byte and idle timeouts; total too on the HTTP/2 path) ---- */

static void heap_set(http_client_t *c, size_t i, http_transfer_t *t)
{
    c->heap[i] = t;
    t->heap_idx = i;
}

static void heap_sift_up(http_client_t *c, size_t i)
{
    http_transfer_t *t = c->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p]->deadline_ms <= t->deadline_ms)
            break;
        heap_set(c, i, c->heap[p]);
        i = p;
    }
    heap_set(c, i, t);
}

static void heap_sift_down(http_client_t *c, size_t i)
{
    http_transfer_t *t = c->heap[i];
    for (;;) {
        size_t m = 2 * i + 1;
        if (m >= c->heap_len)
            break;
        if (m + 1 < c->heap_len && c->heap[m + 1]->deadline_ms < c->heap[m]->deadline_ms)
            m++;
        if (c->heap[m]->deadline_ms >= t->deadline_ms)
            break;
        heap_set(c, i, c->heap[m]);
        i = m;
    }
    heap_set(c, i, t);
}

int http_heap_reserve(http_client_t *c, size_t n)
{
    if (n <= c->heap_cap)
        return 0;
    size_t cap = c->heap_cap ? c->heap_cap * 2 : 64;
    while (cap < n)
        cap *= 2;
    http_transfer_t **h = base_realloc(c->heap, cap * sizeof *h);
    if (!h)
        return -1;
    c->heap = h;
    c->heap_cap = cap;
    return 0;
}

void http_heap_remove(http_client_t *c, http_transfer_t *t)
{
    size_t i = t->heap_idx;
    if (i == HTTP_HEAP_NONE)
        return;
    t->heap_idx = HTTP_HEAP_NONE;
    http_transfer_t *last = c->heap[--c->heap_len];
    if (i == c->heap_len)
        return;
    heap_set(c, i, last);
    heap_sift_up(c, i);
    heap_sift_down(c, last->heap_idx);
}

/* Before the first body byte the first-byte timeout applies, after it the idle timeout; the total
 * deadline (HTTP/2 path only) caps both. */
int64_t http_next_deadline(const http_transfer_t *t)
{
    int64_t d;
    if (t->first_byte_ms < 0)
        d = t->first_byte_timeout_ms > 0 ? t->start_ms + t->first_byte_timeout_ms : HTTP_NO_DEADLINE;
    else
        d = t->idle_timeout_ms > 0 ? t->last_data_ms + t->idle_timeout_ms : HTTP_NO_DEADLINE;
    return t->total_deadline_ms < d ? t->total_deadline_ms : d;
}

http_code_t http_expired_code(const http_transfer_t *t, int64_t now)
{
    if (now >= t->total_deadline_ms)
        return HTTP_ERR_TIMEOUT_TOTAL;
    return t->first_byte_ms < 0 ? HTTP_ERR_TIMEOUT_FIRST_BYTE : HTTP_ERR_TIMEOUT_IDLE;
}

void http_deadline_update(http_client_t *c, http_transfer_t *t)
{
    int64_t d = http_next_deadline(t);
    if (d == HTTP_NO_DEADLINE) {
        http_heap_remove(c, t);
        return;
    }
    t->deadline_ms = d;
    if (t->heap_idx == HTTP_HEAP_NONE) {
        heap_set(c, c->heap_len++, t);
        heap_sift_up(c, t->heap_idx);
    } else {
        heap_sift_up(c, t->heap_idx);
        heap_sift_down(c, t->heap_idx);
    }
}

static void on_deadline(uv_timer_t *h)
{
    http_client_t *c = h->data;
    http_enter(c);
    c->armed_ms = HTTP_NO_DEADLINE;
    int64_t now = base_mono_ms();
    while (!c->closing && c->heap_len && c->heap[0]->deadline_ms <= now) {
        http_transfer_t *t = c->heap[0];
        if (http_next_deadline(t) > now) {
            http_deadline_update(c, t); /* only more data arrived since: move it back */
            continue;
        }
        if (t->kind == HTTP_KIND_H2)
            h2_expire(t, http_expired_code(t, now));
        else
            http_curl_expire(t, http_expired_code(t, now));
    }
    http_leave(c);
}

void http_arm_deadline(http_client_t *c)
{
    int64_t d = c->heap_len ? c->heap[0]->deadline_ms : HTTP_NO_DEADLINE;
    if (d == c->armed_ms)
        return;
    c->armed_ms = d;
    if (d == HTTP_NO_DEADLINE) {
        uv_timer_stop(&c->deadline_timer);
        return;
    }
    int64_t now = base_mono_ms();
    uv_timer_start(&c->deadline_timer, on_deadline, d > now ? (uint64_t)(d - now) : 0, 0);
}

/* ---- entry bracketing, teardown ---- */

void http_enter(http_client_t *c) { c->depth++; }

void http_client_maybe_free(http_client_t *c)
{
    if (!c->torn_down || c->open_handles > 0)
        return;
    void (*cb)(void *) = c->on_closed;
    void *ctx = c->closed_ctx;
    free(c->heap);
    free(c->shards);
    free(c->user_agent);
    free(c->h2);
    free(c);
    if (cb)
        cb(ctx);
}

static void on_deadline_timer_closed(uv_handle_t *h)
{
    http_client_t *c = h->data;
    c->open_handles--;
    http_client_maybe_free(c);
}

static void client_teardown(http_client_t *c)
{
    if (c->torn_down)
        return;
    c->torn_down = true;
    http_curl_teardown(c);
    h2_teardown(c);
    uv_close((uv_handle_t *)&c->deadline_timer, on_deadline_timer_closed);
}

void http_leave(http_client_t *c)
{
    if (c->depth > 1) {
        c->depth--;
        return;
    }
    http_curl_flush_deferred(c);
    h2_flush_deferred(c);
    c->depth--;
    if (c->closing)
        client_teardown(c);
    else
        http_arm_deadline(c);
}

/* ---- transfers ---- */

int64_t http_elapsed_ms(const http_transfer_t *t)
{
    return (int64_t)((base_mono_ns() - t->start_ns) / 1000000u);
}

void http_xfer_init(http_transfer_t *t, http_client_t *c, const http_request_t *req, http_kind_t kind)
{
    t->client = c;
    t->kind = (uint8_t)kind;
    t->on_response = req->on_response;
    t->on_data = req->on_data;
    t->on_done = req->on_done;
    t->ctx = req->ctx;
    t->buffer_body = req->buffer_body;
    t->max_bytes = req->max_response_bytes;
    if (t->buffer_body && t->max_bytes == 0)
        t->max_bytes = HTTP_MAX_BUFFERED_BODY;
    buf_init(&t->body, 0); /* max_bytes is enforced before appending */
    t->total_timeout_ms = req->total_timeout_ms;
    t->first_byte_timeout_ms = req->first_byte_timeout_ms;
    t->idle_timeout_ms = req->idle_timeout_ms;
    t->response_ms = t->first_byte_ms = -1;
    t->heap_idx = HTTP_HEAP_NONE;
    t->start_ns = base_mono_ns();
    t->start_ms = (int64_t)(t->start_ns / 1000000u);
    bool own_total = kind == HTTP_KIND_H2 && req->total_timeout_ms > 0;
    t->total_deadline_ms = own_total ? t->start_ms + req->total_timeout_ms : HTTP_NO_DEADLINE;
    t->timed = own_total || req->first_byte_timeout_ms > 0 || req->idle_timeout_ms > 0;
    if (t->timed)
        c->n_timed++;
}

http_code_t http_xfer_data(http_transfer_t *t, const char *p, size_t n)
{
    t->last_data_ms = base_mono_ms();
    if (t->first_byte_ms < 0) {
        t->first_byte_ms = http_elapsed_ms(t);
        if (t->timed)
            http_deadline_update(t->client, t);
    }
    if (t->max_bytes && t->received + n > t->max_bytes)
        return HTTP_ERR_TOO_LARGE;
    t->received += n;
    if (t->buffer_body && buf_append(&t->body, p, n) < 0)
        return HTTP_ERR_OTHER;
    if (t->on_data && t->on_data(t->ctx, p, n) != 0)
        return HTTP_ERR_ABORTED;
    return HTTP_OK;
}

bool http_xfer_content_length(http_transfer_t *t, int64_t content_length)
{
    if (t->max_bytes && content_length > 0 && (uint64_t)content_length > t->max_bytes)
        return true;
    if (t->buffer_body && content_length > 0 && t->body.len == 0) /* best effort: growing works too */
        (void)buf_reserve(&t->body, (size_t)(content_length < HTTP_BODY_PRESIZE_MAX ? content_length
                                                                                    : HTTP_BODY_PRESIZE_MAX));
    return false;
}

void http_describe_own(const http_transfer_t *t, http_code_t code, char *buf, size_t len)
{
    switch (code) {
    case HTTP_ERR_TIMEOUT_FIRST_BYTE:
        snprintf(buf, len, "no body byte within %lld ms", (long long)t->first_byte_timeout_ms);
        break;
    case HTTP_ERR_TIMEOUT_IDLE:
        snprintf(buf, len, "no body byte for %lld ms", (long long)t->idle_timeout_ms);
        break;
    case HTTP_ERR_TIMEOUT_TOTAL:
        snprintf(buf, len, "not complete within %lld ms", (long long)t->total_timeout_ms);
        break;
    case HTTP_ERR_TOO_LARGE:
        snprintf(buf, len, "response body over %zu bytes", t->max_bytes);
        break;
    case HTTP_ERR_ABORTED:
        snprintf(buf, len, "stopped by the data callback");
        break;
    default:
        snprintf(buf, len, "out of memory");
        break;
    }
}

void http_result_base(http_transfer_t *t, http_result_t *res, http_code_t code, const char *error)
{
    memset(res, 0, sizeof *res);
    res->code = code;
    if (t->head_seen) {
        res->response = &t->response;
        res->status = t->response.status;
    }
    res->bytes_received = t->received;
    res->timing.response_ms = t->response_ms;
    res->timing.first_byte_ms = t->first_byte_ms;
    res->timing.total_ms = http_elapsed_ms(t);
    res->error = code == HTTP_OK ? "" : error;
    res->body = t->body;
    buf_init(&t->body, 0);
}

/* ---- parsing ---- */

int64_t http_retry_after_ms(const char *value, int64_t now_wall_ms)
{
    const char *v = value;
    while (*v == ' ' || *v == '\t')
        v++;
    if (isdigit((unsigned char)*v)) {
        char *end;
        long long secs = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end || secs < 0)
            return -1;
        return secs > 1000000000LL ? 1000000000LL * 1000 : (int64_t)secs * 1000;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end)
        return -1;
    int64_t ms = (int64_t)timegm(&tm) * 1000 - now_wall_ms;
    return ms > 0 ? ms : 0;
}

long http_header_line_len(const char *h)
{
    size_t len = h ? strnlen(h, HTTP_MAX_HEADER_LINE + 1) : 0;
    if (!h || len == 0 || len > HTTP_MAX_HEADER_LINE || memchr(h, '\r', len) || memchr(h, '\n', len))
        return -1;
    return (long)len;
}
