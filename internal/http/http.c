/* http.c — libcurl multi socket API on libuv (the docs/examples/multi-uv.c pattern), with our own
 * first-byte and idle deadlines in one min-heap, a reuse pool of easy handles, and cancellation
 * that is safe from inside any callback.
 *
 * Reentrancy: curl refuses curl_multi_add_handle/remove_handle from inside its callbacks (our
 * on_data/on_response run inside them). Every entry point into this file (a libuv callback or a
 * public function) brackets itself with enter()/leave(); while curl is on the stack (in_curl > 0)
 * a cancelled transfer becomes a zombie and a started one waits in `pending`. The outermost leave()
 * removes the zombies, adds the pending ones, re-arms the deadline timer and, when the client is
 * closing, tears it down. */
#include "http/http.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log/log.h"

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "0.1.0"
#endif

#define HEAP_NONE   ((size_t)-1)
#define NO_DEADLINE INT64_MAX

/* T_NONE: being set up, in no list; T_FAILED: to be ended with t->fail once curl returns;
 * T_ZOMBIE: cancelled, to be removed once curl returns; T_DONE: its on_done is running. */
typedef enum { T_NONE, T_IDLE, T_PENDING, T_RUNNING, T_FAILED, T_ZOMBIE, T_DONE } tstate_t;

typedef struct {
    http_transfer_t *head;
    size_t n;
} tlist_t;

/* One curl multi handle with its timer. curl 7.88 walks every connection of a multi handle on each
 * curl_multi_remove_handle and every connection to the host when it looks for one to reuse, so CPU
 * per transfer grows with the connections in one multi; shards keep that walk short. */
typedef struct shard {
    http_client_t *client;
    CURLM *multi;
    uv_timer_t timer;
    size_t load; /* transfers assigned to it */
} shard_t;

/* One socket curl asked us to watch. */
typedef struct sock {
    uv_poll_t poll;
    shard_t *shard;
    curl_socket_t fd;
    struct sock *prev, *next;
} sock_t;

struct http_transfer {
    http_client_t *client;
    shard_t *shard; /* NULL while idle */
    CURL *easy;
    http_transfer_t *prev, *next; /* in the list of its state */
    tstate_t state;
    bool in_multi;
    bool head_seen;
    bool buffer_body;
    bool timed;                 /* has a first-byte or idle timeout (counted in client->n_timed) */
    http_code_t fail;           /* set when one of our callbacks stopped curl */
    struct curl_slist *headers; /* one allocation: nodes, then the strings */
    void (*on_response)(void *ctx, const http_response_t *r);
    int (*on_data)(void *ctx, const char *chunk, size_t n);
    void (*on_done)(void *ctx, http_result_t *res);
    void *ctx;
    buf_t body;
    uint64_t received;
    size_t max_bytes;
    int64_t total_timeout_ms, first_byte_timeout_ms, idle_timeout_ms;
    uint64_t start_ns;
    int64_t start_ms, last_data_ms;
    int64_t response_ms, first_byte_ms; /* since start; -1 = not yet */
    int64_t deadline_ms;                /* heap key; never later than the real deadline */
    size_t heap_idx;
    http_response_t response;
    char errbuf[CURL_ERROR_SIZE];
};

struct http_client {
    uv_loop_t *loop;
    shard_t *shards;
    size_t n_shards;
    CURLSH *share;             /* DNS cache and TLS sessions, shared by all shards */
    uv_timer_t deadline_timer; /* the earliest first-byte / idle deadline */
    int64_t armed_ms;          /* what deadline_timer is set for; NO_DEADLINE = stopped */
    tlist_t running, pending, failed, zombies, idle;
    sock_t *socks;
    http_transfer_t **heap;
    size_t heap_len, heap_cap;
    size_t n_timed;
    int depth, in_curl, open_handles;
    bool closing, torn_down;
    void (*on_closed)(void *ctx);
    void *closed_ctx;
    char *user_agent;
    long buffer_bytes, dns_cache_timeout_s;
    bool multiplex;
    size_t max_idle;
    uint64_t started, completed, cancelled;
    size_t n_socks;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc = -1;

static void global_init_once(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

int http_global_init(void)
{
    pthread_once(&global_once, global_init_once);
    return global_rc;
}

const char *http_code_name(http_code_t code)
{
    static const char *const names[] = {
        [HTTP_OK] = "ok",
        [HTTP_ERR_CONNECT] = "connect",
        [HTTP_ERR_TIMEOUT_CONNECT] = "timeout_connect",
        [HTTP_ERR_TIMEOUT_FIRST_BYTE] = "timeout_first_byte",
        [HTTP_ERR_TIMEOUT_IDLE] = "timeout_idle",
        [HTTP_ERR_TIMEOUT_TOTAL] = "timeout_total",
        [HTTP_ERR_TLS] = "tls",
        [HTTP_ERR_CLOSED] = "closed",
        [HTTP_ERR_TOO_LARGE] = "too_large",
        [HTTP_ERR_ABORTED] = "aborted",
        [HTTP_ERR_OTHER] = "other",
    };
    if ((size_t)code >= BASE_ARRAY_LEN(names) || !names[code])
        return "unknown";
    return names[code];
}

void http_client_options_init(http_client_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->receive_buffer_bytes = HTTP_DEFAULT_RECEIVE_BUFFER;
    o->multiplex = true;
    o->dns_cache_timeout_s = 60;
    o->max_idle_handles = HTTP_DEFAULT_MAX_IDLE_HANDLES;
    o->shards = HTTP_DEFAULT_SHARDS;
}

/* ---- transfer lists ---- */

static tlist_t *list_of(http_client_t *c, const http_transfer_t *t)
{
    switch (t->state) {
    case T_IDLE:
        return &c->idle;
    case T_PENDING:
        return &c->pending;
    case T_RUNNING:
        return &c->running;
    case T_FAILED:
        return &c->failed;
    case T_ZOMBIE:
        return &c->zombies;
    case T_NONE:
    case T_DONE:
        break;
    }
    return NULL;
}

static void list_push(tlist_t *l, http_transfer_t *t)
{
    t->prev = NULL;
    t->next = l->head;
    if (l->head)
        l->head->prev = t;
    l->head = t;
    l->n++;
}

static void list_unlink(http_client_t *c, http_transfer_t *t)
{
    tlist_t *l = list_of(c, t);
    if (!l)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    l->n--;
}

/* Moves t to the list of state s. */
static void set_state(http_client_t *c, http_transfer_t *t, tstate_t s)
{
    list_unlink(c, t);
    t->state = s;
    tlist_t *l = list_of(c, t);
    if (l)
        list_push(l, t);
}

/* ---- deadline heap (first-byte and idle timeouts) ---- */

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

/* Room for every timed transfer, so that heap_push never fails later inside a curl callback. */
static int heap_reserve(http_client_t *c, size_t n)
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

static void heap_remove(http_client_t *c, http_transfer_t *t)
{
    size_t i = t->heap_idx;
    if (i == HEAP_NONE)
        return;
    t->heap_idx = HEAP_NONE;
    http_transfer_t *last = c->heap[--c->heap_len];
    if (i == c->heap_len)
        return;
    heap_set(c, i, last);
    heap_sift_up(c, i);
    heap_sift_down(c, last->heap_idx);
}

/* Before the first body byte the first-byte timeout applies, after it the idle timeout. */
static int64_t next_deadline(const http_transfer_t *t)
{
    if (t->first_byte_ms < 0)
        return t->first_byte_timeout_ms > 0 ? t->start_ms + t->first_byte_timeout_ms : NO_DEADLINE;
    return t->idle_timeout_ms > 0 ? t->last_data_ms + t->idle_timeout_ms : NO_DEADLINE;
}

/* Puts t at its exact next deadline in the heap (or out of it). */
static void deadline_update(http_client_t *c, http_transfer_t *t)
{
    int64_t d = next_deadline(t);
    if (d == NO_DEADLINE) {
        heap_remove(c, t);
        return;
    }
    t->deadline_ms = d;
    if (t->heap_idx == HEAP_NONE) {
        heap_set(c, c->heap_len++, t);
        heap_sift_up(c, t->heap_idx);
    } else {
        heap_sift_up(c, t->heap_idx);
        heap_sift_down(c, t->heap_idx);
    }
}

static void on_deadline(uv_timer_t *h);

static void arm_deadline(http_client_t *c)
{
    int64_t d = c->heap_len ? c->heap[0]->deadline_ms : NO_DEADLINE;
    if (d == c->armed_ms)
        return;
    c->armed_ms = d;
    if (d == NO_DEADLINE) {
        uv_timer_stop(&c->deadline_timer);
        return;
    }
    int64_t now = base_mono_ms();
    uv_timer_start(&c->deadline_timer, on_deadline, d > now ? (uint64_t)(d - now) : 0, 0);
}

/* ---- transfer life ---- */

static http_transfer_t *transfer_acquire(http_client_t *c)
{
    http_transfer_t *t = c->idle.head;
    if (t) {
        set_state(c, t, T_NONE);
        return t;
    }
    t = base_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->easy = curl_easy_init();
    if (!t->easy) {
        free(t);
        return NULL;
    }
    t->client = c;
    t->heap_idx = HEAP_NONE;
    return t;
}

/* Frees what the transfer holds and parks its easy handle in the reuse pool (or frees it). */
static void transfer_release(http_client_t *c, http_transfer_t *t)
{
    list_unlink(c, t);
    heap_remove(c, t);
    if (t->timed)
        c->n_timed--;
    if (t->shard)
        t->shard->load--;
    free(t->headers);
    buf_free(&t->body);
    CURL *easy = t->easy;
    if (c->torn_down || c->idle.n >= c->max_idle) {
        curl_easy_cleanup(easy);
        free(t);
        return;
    }
    curl_easy_reset(easy);
    memset(t, 0, sizeof *t);
    t->client = c;
    t->easy = easy;
    t->heap_idx = HEAP_NONE;
    t->state = T_IDLE;
    list_push(&c->idle, t);
}

/* Takes t out of the multi handle (closing its connection if unfinished) and releases it. */
static void transfer_retire(http_client_t *c, http_transfer_t *t)
{
    if (t->in_multi) {
        c->in_curl++;
        curl_multi_remove_handle(t->shard->multi, t->easy);
        c->in_curl--;
        t->in_multi = false;
    }
    transfer_release(c, t);
}

static int64_t elapsed_ms(const http_transfer_t *t)
{
    return (int64_t)((base_mono_ns() - t->start_ns) / 1000000u);
}

static int64_t info_ms(CURL *e, CURLINFO what)
{
    curl_off_t us = 0;
    if (curl_easy_getinfo(e, what, &us) != CURLE_OK)
        return 0;
    return (int64_t)(us / 1000);
}

/* Maps curl's result to ours; a timeout before the connection was up is a connect timeout unless
 * the total budget is what ran out. */
static http_code_t classify(const http_transfer_t *t, CURLcode rc)
{
    if (t->fail != HTTP_OK)
        return t->fail;
    switch (rc) {
    case CURLE_OK:
        return HTTP_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return HTTP_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t pre = 0;
        curl_easy_getinfo(t->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
        bool total_spent = t->total_timeout_ms > 0 && elapsed_ms(t) >= t->total_timeout_ms;
        return pre == 0 && !total_spent ? HTTP_ERR_TIMEOUT_CONNECT : HTTP_ERR_TIMEOUT_TOTAL;
    }
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return HTTP_ERR_TLS;
    case CURLE_FILESIZE_EXCEEDED:
        return HTTP_ERR_TOO_LARGE;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return HTTP_ERR_CLOSED;
    default:
        return HTTP_ERR_OTHER;
    }
}

/* Our own error text for the codes that http, not curl, decided. */
static void describe_own(http_transfer_t *t, http_code_t code)
{
    switch (code) {
    case HTTP_ERR_TIMEOUT_FIRST_BYTE:
        snprintf(t->errbuf, sizeof t->errbuf, "no body byte within %lld ms",
                 (long long)t->first_byte_timeout_ms);
        break;
    case HTTP_ERR_TIMEOUT_IDLE:
        snprintf(t->errbuf, sizeof t->errbuf, "no body byte for %lld ms", (long long)t->idle_timeout_ms);
        break;
    case HTTP_ERR_TOO_LARGE:
        snprintf(t->errbuf, sizeof t->errbuf, "response body over %zu bytes", t->max_bytes);
        break;
    case HTTP_ERR_ABORTED:
        snprintf(t->errbuf, sizeof t->errbuf, "stopped by the data callback");
        break;
    default:
        snprintf(t->errbuf, sizeof t->errbuf, "out of memory");
        break;
    }
}

static void result_fill(http_transfer_t *t, http_result_t *res, http_code_t code, CURLcode rc)
{
    memset(res, 0, sizeof *res);
    res->code = code;
    res->curl_code = (int)rc;
    if (t->head_seen) {
        res->response = &t->response;
        res->status = t->response.status;
    }
    res->bytes_received = t->received;
    long connects = 0;
    curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
    res->reused_connection = t->head_seen && connects == 0;
    res->timing.connect_ms = info_ms(t->easy, CURLINFO_APPCONNECT_TIME_T);
    if (res->timing.connect_ms == 0)
        res->timing.connect_ms = info_ms(t->easy, CURLINFO_CONNECT_TIME_T);
    res->timing.response_ms = t->response_ms;
    res->timing.first_byte_ms = t->first_byte_ms;
    res->timing.total_ms = elapsed_ms(t);
    res->error = code == HTTP_OK ? "" : t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
    res->body = t->body;
    buf_init(&t->body, 0);
}

/* Ends a running transfer: out of the multi handle, on_done, then back to the pool. own = the code
 * was decided by http (timeouts, limits, callbacks), not by curl. */
static void finish(http_client_t *c, http_transfer_t *t, http_code_t code, CURLcode rc, bool own)
{
    heap_remove(c, t);
    if (t->in_multi) {
        c->in_curl++;
        curl_multi_remove_handle(t->shard->multi, t->easy);
        c->in_curl--;
        t->in_multi = false;
    }
    set_state(c, t, T_DONE);
    if (own)
        describe_own(t, code);
    http_result_t res;
    result_fill(t, &res, code, rc);
    c->completed++;
    t->on_done(t->ctx, &res);
    buf_free(&res.body);
    transfer_release(c, t);
}

/* Adds a transfer to the multi handle; 0 or -1. */
static int add_to_multi(http_client_t *c, http_transfer_t *t)
{
    c->in_curl++;
    CURLMcode mrc = curl_multi_add_handle(t->shard->multi, t->easy);
    c->in_curl--;
    if (mrc != CURLM_OK)
        return -1;
    t->in_multi = true;
    set_state(c, t, T_RUNNING);
    return 0;
}

/* ---- entry bracketing and deferred work ---- */

static void client_teardown(http_client_t *c);

static void enter(http_client_t *c) { c->depth++; }

static void flush_deferred(http_client_t *c)
{
    http_transfer_t *t;
    while (c->zombies.head || c->failed.head || c->pending.head) {
        while ((t = c->zombies.head))
            transfer_retire(c, t);
        while ((t = c->failed.head))
            finish(c, t, t->fail, CURLE_OUT_OF_MEMORY, true);
        while ((t = c->pending.head))
            if (add_to_multi(c, t) < 0)
                finish(c, t, HTTP_ERR_OTHER, CURLE_OUT_OF_MEMORY, true);
    }
}

static void leave(http_client_t *c)
{
    if (c->depth > 1) {
        c->depth--;
        return;
    }
    flush_deferred(c);
    c->depth--;
    if (c->closing)
        client_teardown(c);
    else
        arm_deadline(c);
}

static void check_multi_info(shard_t *sh)
{
    http_client_t *c = sh->client;
    CURLMsg *msg;
    int left;
    while (!c->closing && (msg = curl_multi_info_read(sh->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        http_transfer_t *t = (http_transfer_t *)priv;
        if (!t || t->state != T_RUNNING)
            continue; /* a zombie: flush_deferred removes it */
        http_code_t code = classify(t, rc);
        finish(c, t, code, rc, t->fail != HTTP_OK);
    }
}

static void drive(shard_t *sh, curl_socket_t s, int ev_bitmask)
{
    http_client_t *c = sh->client;
    int running;
    enter(c);
    c->in_curl++;
    CURLMcode mrc = curl_multi_socket_action(sh->multi, s, ev_bitmask, &running);
    c->in_curl--;
    if (mrc != CURLM_OK)
        log_warn("http: curl_multi_socket_action failed", LOG_S("error", curl_multi_strerror(mrc)));
    check_multi_info(sh);
    leave(c);
}

/* ---- libuv and curl callbacks ---- */

static void client_maybe_free(http_client_t *c)
{
    if (!c->torn_down || c->open_handles > 0)
        return;
    void (*cb)(void *) = c->on_closed;
    void *ctx = c->closed_ctx;
    free(c->heap);
    free(c->shards);
    free(c->user_agent);
    free(c);
    if (cb)
        cb(ctx);
}

static void on_deadline_timer_closed(uv_handle_t *h)
{
    http_client_t *c = h->data;
    c->open_handles--;
    client_maybe_free(c);
}

static void on_shard_timer_closed(uv_handle_t *h)
{
    shard_t *sh = h->data;
    sh->client->open_handles--;
    client_maybe_free(sh->client);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_t *k = h->data;
    http_client_t *c = k->shard->client;
    free(k);
    c->open_handles--;
    client_maybe_free(c);
}

static void sock_close(http_client_t *c, sock_t *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        c->socks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    c->n_socks--;
    uv_close((uv_handle_t *)&k->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_t *k = h->data;
    int ev = 0;
    if (status < 0)
        ev = CURL_CSELECT_ERR;
    else
        ev = ((events & UV_READABLE) ? CURL_CSELECT_IN : 0) | ((events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0);
    drive(k->shard, k->fd, ev); /* k may be gone after this */
}

/* No poll handle for one of its sockets: the transfer ends with an error as soon as curl returns
 * (telling curl -1 would leave it hanging until a timeout). */
static int fail_later(http_client_t *c, CURL *easy)
{
    char *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    http_transfer_t *t = (http_transfer_t *)priv;
    if (t && t->state == T_RUNNING) {
        t->fail = HTTP_ERR_OTHER;
        set_state(c, t, T_FAILED);
    }
    return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    shard_t *sh = userp;
    http_client_t *c = sh->client;
    sock_t *k = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            if (!c->torn_down)
                curl_multi_assign(sh->multi, s, NULL);
            sock_close(c, k);
        }
        return 0;
    }
    if (c->torn_down)
        return 0; /* curl_multi_cleanup is closing everything */
    if (!k) {
        k = base_calloc(1, sizeof *k);
        if (!k)
            return fail_later(c, easy);
        if (uv_poll_init_socket(c->loop, &k->poll, s) != 0) {
            free(k);
            return fail_later(c, easy);
        }
        k->poll.data = k;
        k->shard = sh;
        k->fd = s;
        k->next = c->socks;
        if (c->socks)
            c->socks->prev = k;
        c->socks = k;
        c->n_socks++;
        c->open_handles++;
        curl_multi_assign(sh->multi, s, k);
    }
    int ev = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    return uv_poll_start(&k->poll, ev, on_poll) == 0 ? 0 : fail_later(c, easy);
}

static void on_curl_timeout(uv_timer_t *h) { drive(h->data, CURL_SOCKET_TIMEOUT, 0); }

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    shard_t *sh = userp;
    if (sh->client->torn_down)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&sh->timer);
    else
        uv_timer_start(&sh->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_deadline(uv_timer_t *h)
{
    http_client_t *c = h->data;
    enter(c);
    c->armed_ms = NO_DEADLINE;
    int64_t now = base_mono_ms();
    while (!c->closing && c->heap_len && c->heap[0]->deadline_ms <= now) {
        http_transfer_t *t = c->heap[0];
        if (next_deadline(t) > now) {
            deadline_update(c, t); /* only more data arrived since: move it back */
            continue;
        }
        finish(c, t, t->first_byte_ms < 0 ? HTTP_ERR_TIMEOUT_FIRST_BYTE : HTTP_ERR_TIMEOUT_IDLE, CURLE_OK,
               true);
    }
    leave(c);
}

/* Header lines: only the blank line that ends a final (non-1xx) head matters. */
static size_t on_curl_header(char *p, size_t size, size_t n, void *userp)
{
    http_transfer_t *t = userp;
    size_t len = size * n;
    if (t->state != T_RUNNING)
        return 0;
    bool blank = (len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n');
    if (t->head_seen || !blank)
        return len;
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200)
        return len;
    t->head_seen = true;
    t->response_ms = elapsed_ms(t);
    t->response.status = status;
    t->response.transfer = t;
    char *ctype = NULL;
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
    t->response.content_type = ctype;
    t->response.retry_after_ms = -1;
    struct curl_header *h;
    if (curl_easy_header(t->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
        curl_off_t secs = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &secs);
        t->response.retry_after_ms = (int64_t)secs * 1000;
    }
    curl_off_t clen = -1;
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    if (t->max_bytes && clen > 0 && (uint64_t)clen > t->max_bytes) {
        t->fail = HTTP_ERR_TOO_LARGE;
        return 0;
    }
    if (t->on_response)
        t->on_response(t->ctx, &t->response);
    return t->state == T_RUNNING ? len : 0;
}

static size_t on_curl_write(char *p, size_t size, size_t n, void *userp)
{
    http_transfer_t *t = userp;
    size_t len = size * n;
    if (t->state != T_RUNNING)
        return 0;
    t->last_data_ms = base_mono_ms();
    if (t->first_byte_ms < 0) {
        t->first_byte_ms = elapsed_ms(t);
        if (t->timed)
            deadline_update(t->client, t);
    }
    if (t->max_bytes && t->received + len > t->max_bytes) {
        t->fail = HTTP_ERR_TOO_LARGE;
        return 0;
    }
    t->received += len;
    if (t->buffer_body && buf_append(&t->body, p, len) < 0) {
        t->fail = HTTP_ERR_OTHER;
        return 0;
    }
    if (t->on_data && t->on_data(t->ctx, p, len) != 0) {
        if (t->state == T_RUNNING)
            t->fail = HTTP_ERR_ABORTED;
        return 0;
    }
    return t->state == T_RUNNING ? len : 0;
}

/* ---- client ---- */

/* Each shard's share of a connection limit (at least 1); 0 stays unlimited. */
static long shard_limit(long limit, size_t n_shards)
{
    if (limit <= 0)
        return 0;
    long share = limit / (long)n_shards;
    return share > 0 ? share : 1;
}

static int shard_init(http_client_t *c, shard_t *sh, const http_client_options_t *o)
{
    sh->client = c;
    sh->multi = curl_multi_init();
    if (!sh->multi)
        return -1;
    CURLM *m = sh->multi;
    if (curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_SOCKETDATA, sh) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERDATA, sh) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                          shard_limit(o->max_total_connections, c->n_shards)) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS,
                          shard_limit(o->max_host_connections, c->n_shards)) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_PIPELINING, o->multiplex ? CURLPIPE_MULTIPLEX : CURLPIPE_NOTHING) !=
            CURLM_OK)
        return -1;
    return 0;
}

http_client_t *http_client_new(uv_loop_t *loop, const http_client_options_t *opts, char *err, size_t errlen)
{
    http_client_options_t defaults;
    if (!opts) {
        http_client_options_init(&defaults);
        opts = &defaults;
    }
    if (http_global_init() < 0) {
        snprintf(err, errlen, "curl_global_init failed");
        return NULL;
    }
    http_client_t *c = base_calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->armed_ms = NO_DEADLINE;
    c->buffer_bytes =
        opts->receive_buffer_bytes > 0 ? opts->receive_buffer_bytes : HTTP_DEFAULT_RECEIVE_BUFFER;
    c->dns_cache_timeout_s = opts->dns_cache_timeout_s ? opts->dns_cache_timeout_s : 60;
    c->multiplex = opts->multiplex;
    c->max_idle = opts->max_idle_handles ? opts->max_idle_handles : HTTP_DEFAULT_MAX_IDLE_HANDLES;
    c->n_shards = opts->shards ? opts->shards : HTTP_DEFAULT_SHARDS;
    if (c->n_shards > HTTP_MAX_SHARDS)
        c->n_shards = HTTP_MAX_SHARDS;
    c->user_agent = base_strdup(opts->user_agent ? opts->user_agent : "parley/" PARLEY_VERSION);
    c->shards = base_calloc(c->n_shards, sizeof *c->shards);
    if (!c->user_agent || !c->shards) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->share = curl_share_init();
    if (!c->share || curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        snprintf(err, errlen, "curl_share_init or curl_share_setopt failed");
        goto fail;
    }
    for (size_t i = 0; i < c->n_shards; i++)
        if (shard_init(c, &c->shards[i], opts) < 0) {
            snprintf(err, errlen, "curl_multi_init or curl_multi_setopt failed");
            goto fail;
        }
    /* Nothing can fail from here on: libuv handles exist only in clients that were made. */
    uv_timer_init(loop, &c->deadline_timer);
    c->deadline_timer.data = c;
    for (size_t i = 0; i < c->n_shards; i++) {
        uv_timer_init(loop, &c->shards[i].timer);
        c->shards[i].timer.data = &c->shards[i];
    }
    c->open_handles = 1 + (int)c->n_shards;
    return c;
fail:
    c->torn_down = true; /* curl callbacks during cleanup find no libuv handles to touch */
    for (size_t i = 0; c->shards && i < c->n_shards; i++)
        if (c->shards[i].multi)
            curl_multi_cleanup(c->shards[i].multi);
    if (c->share)
        curl_share_cleanup(c->share);
    free(c->shards);
    free(c->user_agent);
    free(c);
    return NULL;
}

static void client_teardown(http_client_t *c)
{
    if (c->torn_down)
        return;
    c->torn_down = true;
    http_transfer_t *t;
    while ((t = c->idle.head)) {
        list_unlink(c, t);
        curl_easy_cleanup(t->easy);
        free(t);
    }
    for (size_t i = 0; i < c->n_shards; i++) {
        shard_t *sh = &c->shards[i];
        curl_multi_cleanup(sh->multi); /* closes the pooled connections; REMOVE callbacks close their polls */
        sh->multi = NULL;
        uv_close((uv_handle_t *)&sh->timer, on_shard_timer_closed);
    }
    curl_share_cleanup(c->share); /* after every easy handle that used it */
    c->share = NULL;
    while (c->socks)
        sock_close(c, c->socks);
    uv_close((uv_handle_t *)&c->deadline_timer, on_deadline_timer_closed);
}

void http_client_close(http_client_t *c, void (*on_closed)(void *ctx), void *ctx)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    c->on_closed = on_closed;
    c->closed_ctx = ctx;
    enter(c);
    while (c->running.head)
        http_cancel(c->running.head);
    while (c->pending.head)
        http_cancel(c->pending.head);
    while (c->failed.head)
        http_cancel(c->failed.head);
    leave(c);
}

void http_client_stats(const http_client_t *c, http_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->in_flight = c->running.n + c->pending.n + c->failed.n;
    out->started = c->started;
    out->completed = c->completed;
    out->cancelled = c->cancelled;
    out->sockets = c->n_socks;
    out->idle_handles = c->idle.n;
}

/* ---- requests ---- */

/* The shard with the fewest transfers, the first one on ties: at low concurrency everything runs
 * on shard 0 and reuses its connections. */
static shard_t *least_loaded_shard(http_client_t *c)
{
    shard_t *best = &c->shards[0];
    for (size_t i = 1; i < c->n_shards && best->load > 0; i++)
        if (c->shards[i].load < best->load)
            best = &c->shards[i];
    return best;
}

/* The request headers plus "Expect:" (no 100-continue round trip) as one curl_slist allocation. */
static struct curl_slist *headers_build(const http_request_t *req, char *err, size_t errlen)
{
    static const char expect[] = "Expect:";
    size_t n = req->n_headers + 1;
    size_t bytes = n * sizeof(struct curl_slist) + sizeof expect;
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *h = req->headers[i];
        size_t len = h ? strnlen(h, HTTP_MAX_HEADER_LINE + 1) : 0;
        if (!h || len == 0 || len > HTTP_MAX_HEADER_LINE || memchr(h, '\r', len) || memchr(h, '\n', len)) {
            snprintf(err, errlen, "request header %zu is empty, too long or contains CR/LF", i);
            return NULL;
        }
        bytes += len + 1;
    }
    struct curl_slist *nodes = base_malloc(bytes);
    if (!nodes) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *s = (char *)(nodes + n);
    for (size_t i = 0; i < n; i++) {
        const char *h = i < req->n_headers ? req->headers[i] : expect;
        size_t len = strlen(h);
        memcpy(s, h, len + 1);
        nodes[i].data = s;
        nodes[i].next = i + 1 < n ? &nodes[i + 1] : NULL;
        s += len + 1;
    }
    return nodes;
}

#define SETOPT(opt, val)                                                                                     \
    do {                                                                                                     \
        if ((rc = curl_easy_setopt(e, (opt), (val))) != CURLE_OK)                                            \
            goto out;                                                                                        \
    } while (0)

/* Every option of one request on a freshly reset easy handle. */
static CURLcode easy_setup(http_client_t *c, http_transfer_t *t, const http_request_t *req)
{
    CURL *e = t->easy;
    CURLcode rc = CURLE_OK;
    SETOPT(CURLOPT_PRIVATE, (void *)t);
    SETOPT(CURLOPT_SHARE, c->share);
    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_BUFFERSIZE, c->buffer_bytes);
    SETOPT(CURLOPT_USERAGENT, c->user_agent);
    SETOPT(CURLOPT_DNS_CACHE_TIMEOUT, c->dns_cache_timeout_s);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_HTTPHEADER, t->headers);
    SETOPT(CURLOPT_WRITEFUNCTION, on_curl_write);
    SETOPT(CURLOPT_WRITEDATA, (void *)t);
    SETOPT(CURLOPT_HEADERFUNCTION, on_curl_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)t);
    SETOPT(CURLOPT_ERRORBUFFER, t->errbuf);
    SETOPT(CURLOPT_HTTP_VERSION, c->multiplex ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    if (c->multiplex && strncmp(req->url, "https:", 6) == 0)
        SETOPT(CURLOPT_PIPEWAIT, 1L);
    if (req->connect_timeout_ms > 0)
        SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    if (req->total_timeout_ms > 0)
        SETOPT(CURLOPT_TIMEOUT_MS, (long)req->total_timeout_ms);
    if (req->tls_insecure) {
        SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (req->ca_file)
        SETOPT(CURLOPT_CAINFO, req->ca_file);
    if (req->method == HTTP_GET) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else {
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (req->copy_body)
            SETOPT(CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
        else
            SETOPT(CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
out:
    return rc;
}

http_transfer_t *http_start(http_client_t *c, const http_request_t *req, char *err, size_t errlen)
{
    if (c->closing) {
        snprintf(err, errlen, "client is closing");
        return NULL;
    }
    if (!req->url || !*req->url || !req->on_done) {
        snprintf(err, errlen, "request needs a url and on_done");
        return NULL;
    }
    struct curl_slist *headers = headers_build(req, err, errlen);
    if (!headers)
        return NULL;
    http_transfer_t *t = transfer_acquire(c);
    if (!t) {
        free(headers);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->headers = headers;
    t->shard = least_loaded_shard(c);
    t->shard->load++;
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
    t->timed = req->first_byte_timeout_ms > 0 || req->idle_timeout_ms > 0;
    if (t->timed)
        c->n_timed++;
    CURLcode rc = easy_setup(c, t, req);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "curl_easy_setopt: %s", curl_easy_strerror(rc));
        goto fail;
    }
    if (heap_reserve(c, c->n_timed) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    t->start_ns = base_mono_ns();
    t->start_ms = (int64_t)(t->start_ns / 1000000u);
    enter(c);
    if (c->in_curl) {
        set_state(c, t, T_PENDING);
    } else if (add_to_multi(c, t) < 0) {
        leave(c);
        snprintf(err, errlen, "curl_multi_add_handle failed");
        goto fail;
    }
    c->started++;
    deadline_update(c, t);
    leave(c);
    return t;
fail:
    transfer_release(c, t);
    return NULL;
}

void http_cancel(http_transfer_t *t)
{
    if (!t || t->state == T_DONE || t->state == T_ZOMBIE)
        return;
    http_client_t *c = t->client;
    enter(c);
    heap_remove(c, t);
    c->cancelled++;
    if (c->in_curl && t->in_multi)
        set_state(c, t, T_ZOMBIE); /* curl is on the stack: removed by the outermost leave() */
    else
        transfer_retire(c, t);
    leave(c);
}

const char *http_response_header(const http_response_t *r, const char *name)
{
    struct curl_header *h;
    if (!r || !r->transfer || curl_easy_header(r->transfer->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return NULL;
    return h->value;
}
