/* http.c — the public entry points, and the libcurl path: the multi socket API on libuv (the
 * docs/examples/multi-uv.c pattern), a reuse pool of easy handles, and cancellation that is safe from
 * inside any callback. Requests with version HTTP_VERSION_2 go to the native client (h2.c).
 *
 * Reentrancy: curl refuses curl_multi_add_handle/remove_handle from inside its callbacks (our
 * on_data/on_response run inside them). Every entry point (a libuv callback or a public function)
 * brackets itself with http_enter()/http_leave(); while curl is on the stack (in_curl > 0) a
 * cancelled transfer becomes a zombie and a started one waits in `pending`. The outermost leave
 * removes the zombies, adds the pending ones, re-arms the deadline timer and, when the client is
 * closing, tears it down (http_common.c). */
#include "http/http_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "log/log.h"

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "0.1.0"
#endif

/* T_NONE: being set up, in no list; T_FAILED: to be ended with t->x.fail once curl returns;
 * T_ZOMBIE: cancelled, to be removed once curl returns; T_DONE: its on_done is running. */
typedef enum { T_NONE, T_IDLE, T_PENDING, T_RUNNING, T_FAILED, T_ZOMBIE, T_DONE } tstate_t;

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

struct curl_xfer {
    http_transfer_t x; /* first: a curl_xfer_t is an http_transfer_t */
    shard_t *shard;    /* NULL while idle */
    CURL *easy;
    curl_xfer_t *prev, *next; /* in the list of its state */
    tstate_t state;
    bool in_multi;
    struct curl_slist *headers; /* one allocation: nodes, then the strings */
    char errbuf[CURL_ERROR_SIZE];
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

static tlist_t *list_of(http_client_t *c, const curl_xfer_t *t)
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

static void list_push(tlist_t *l, curl_xfer_t *t)
{
    t->prev = NULL;
    t->next = l->head;
    if (l->head)
        l->head->prev = t;
    l->head = t;
    l->n++;
}

static void list_unlink(http_client_t *c, curl_xfer_t *t)
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
static void set_state(http_client_t *c, curl_xfer_t *t, tstate_t s)
{
    list_unlink(c, t);
    t->state = s;
    tlist_t *l = list_of(c, t);
    if (l)
        list_push(l, t);
}

/* ---- transfer life ---- */

static curl_xfer_t *transfer_acquire(http_client_t *c)
{
    curl_xfer_t *t = c->idle.head;
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
    t->x.client = c;
    t->x.heap_idx = HTTP_HEAP_NONE;
    return t;
}

/* Frees what the transfer holds and parks its easy handle in the reuse pool (or frees it). */
static void transfer_release(http_client_t *c, curl_xfer_t *t)
{
    list_unlink(c, t);
    http_heap_remove(c, &t->x);
    if (t->x.timed)
        c->n_timed--;
    if (t->shard)
        t->shard->load--;
    free(t->headers);
    buf_free(&t->x.body);
    CURL *easy = t->easy;
    if (c->torn_down || c->idle.n >= c->max_idle) {
        curl_easy_cleanup(easy);
        free(t);
        return;
    }
    curl_easy_reset(easy);
    memset(t, 0, sizeof *t);
    t->x.client = c;
    t->easy = easy;
    t->x.heap_idx = HTTP_HEAP_NONE;
    t->state = T_IDLE;
    list_push(&c->idle, t);
}

/* Takes t out of the multi handle (closing its connection if unfinished) and releases it. */
static void transfer_retire(http_client_t *c, curl_xfer_t *t)
{
    if (t->in_multi) {
        c->in_curl++;
        curl_multi_remove_handle(t->shard->multi, t->easy);
        c->in_curl--;
        t->in_multi = false;
    }
    transfer_release(c, t);
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
static http_code_t classify(const curl_xfer_t *t, CURLcode rc)
{
    if (t->x.fail != HTTP_OK)
        return t->x.fail;
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
        bool total_spent = t->x.total_timeout_ms > 0 && http_elapsed_ms(&t->x) >= t->x.total_timeout_ms;
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

static void result_fill(curl_xfer_t *t, http_result_t *res, http_code_t code, CURLcode rc)
{
    http_result_base(&t->x, res, code, t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    res->curl_code = (int)rc;
    long connects = 0;
    curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
    res->reused_connection = t->x.head_seen && connects == 0;
    res->timing.connect_ms = info_ms(t->easy, CURLINFO_APPCONNECT_TIME_T);
    if (res->timing.connect_ms == 0)
        res->timing.connect_ms = info_ms(t->easy, CURLINFO_CONNECT_TIME_T);
}

/* Ends a running transfer: out of the multi handle, on_done, then back to the pool. own = the code
 * was decided by http (timeouts, limits, callbacks), not by curl. */
static void finish(http_client_t *c, curl_xfer_t *t, http_code_t code, CURLcode rc, bool own)
{
    http_heap_remove(c, &t->x);
    if (t->in_multi) {
        c->in_curl++;
        curl_multi_remove_handle(t->shard->multi, t->easy);
        c->in_curl--;
        t->in_multi = false;
    }
    set_state(c, t, T_DONE);
    if (own)
        http_describe_own(&t->x, code, t->errbuf, sizeof t->errbuf);
    http_result_t res;
    result_fill(t, &res, code, rc);
    c->completed++;
    t->x.on_done(t->x.ctx, &res);
    buf_free(&res.body);
    transfer_release(c, t);
}

/* Adds a transfer to the multi handle; 0 or -1. */
static int add_to_multi(http_client_t *c, curl_xfer_t *t)
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

/* ---- deferred work ---- */

void http_curl_flush_deferred(http_client_t *c)
{
    curl_xfer_t *t;
    while (c->zombies.head || c->failed.head || c->pending.head) {
        while ((t = c->zombies.head))
            transfer_retire(c, t);
        while ((t = c->failed.head))
            finish(c, t, t->x.fail, CURLE_OUT_OF_MEMORY, true);
        while ((t = c->pending.head))
            if (add_to_multi(c, t) < 0)
                finish(c, t, HTTP_ERR_OTHER, CURLE_OUT_OF_MEMORY, true);
    }
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
        curl_xfer_t *t = (curl_xfer_t *)priv;
        if (!t || t->state != T_RUNNING)
            continue; /* a zombie: flush_deferred removes it */
        http_code_t code = classify(t, rc);
        finish(c, t, code, rc, t->x.fail != HTTP_OK);
    }
}

static void drive(shard_t *sh, curl_socket_t s, int ev_bitmask)
{
    http_client_t *c = sh->client;
    int running;
    http_enter(c);
    c->in_curl++;
    CURLMcode mrc = curl_multi_socket_action(sh->multi, s, ev_bitmask, &running);
    c->in_curl--;
    if (mrc != CURLM_OK)
        log_warn("http: curl_multi_socket_action failed", LOG_S("error", curl_multi_strerror(mrc)));
    check_multi_info(sh);
    http_leave(c);
}

/* ---- libuv and curl callbacks ---- */

static void on_shard_timer_closed(uv_handle_t *h)
{
    shard_t *sh = h->data;
    sh->client->open_handles--;
    http_client_maybe_free(sh->client);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_t *k = h->data;
    http_client_t *c = k->shard->client;
    free(k);
    c->open_handles--;
    http_client_maybe_free(c);
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
    curl_xfer_t *t = (curl_xfer_t *)priv;
    if (t && t->state == T_RUNNING) {
        t->x.fail = HTTP_ERR_OTHER;
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

void http_curl_expire(http_transfer_t *x, http_code_t code)
{
    finish(x->client, (curl_xfer_t *)x, code, CURLE_OK, true);
}

/* Header lines: only the blank line that ends a final (non-1xx) head matters. */
static size_t on_curl_header(char *p, size_t size, size_t n, void *userp)
{
    curl_xfer_t *t = userp;
    size_t len = size * n;
    if (t->state != T_RUNNING)
        return 0;
    bool blank = (len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n');
    if (t->x.head_seen || !blank)
        return len;
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200)
        return len;
    t->x.head_seen = true;
    t->x.response_ms = http_elapsed_ms(&t->x);
    t->x.response.status = status;
    t->x.response.transfer = &t->x;
    char *ctype = NULL;
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
    t->x.response.content_type = ctype;
    t->x.response.retry_after_ms = -1;
    struct curl_header *h;
    if (curl_easy_header(t->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
        t->x.response.retry_after_ms = http_retry_after_ms(h->value, base_wall_ms());
    curl_off_t clen = -1;
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    if (http_xfer_content_length(&t->x, (int64_t)clen)) {
        t->x.fail = HTTP_ERR_TOO_LARGE;
        return 0;
    }
    if (t->x.on_response)
        t->x.on_response(t->x.ctx, &t->x.response);
    return t->state == T_RUNNING ? len : 0;
}

static size_t on_curl_write(char *p, size_t size, size_t n, void *userp)
{
    curl_xfer_t *t = userp;
    size_t len = size * n;
    if (t->state != T_RUNNING)
        return 0;
    http_code_t code = http_xfer_data(&t->x, p, len);
    if (code != HTTP_OK) {
        if (t->state == T_RUNNING)
            t->x.fail = code;
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
    c->armed_ms = HTTP_NO_DEADLINE;
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
    if (h2_init(c, opts, err, errlen) < 0)
        goto fail;
    /* Nothing can fail from here on: libuv handles exist only in clients that were made. */
    uv_timer_init(loop, &c->deadline_timer);
    c->deadline_timer.data = c;
    for (size_t i = 0; i < c->n_shards; i++) {
        uv_timer_init(loop, &c->shards[i].timer);
        c->shards[i].timer.data = &c->shards[i];
    }
    c->open_handles += 1 + (int)c->n_shards;
    return c;
fail:
    c->torn_down = true; /* curl callbacks during cleanup find no libuv handles to touch */
    for (size_t i = 0; c->shards && i < c->n_shards; i++)
        if (c->shards[i].multi)
            curl_multi_cleanup(c->shards[i].multi);
    if (c->share)
        curl_share_cleanup(c->share);
    h2_abort_init(c);
    free(c->shards);
    free(c->user_agent);
    free(c);
    return NULL;
}

void http_curl_teardown(http_client_t *c)
{
    curl_xfer_t *t;
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
}

void http_client_close(http_client_t *c, void (*on_closed)(void *ctx), void *ctx)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    c->on_closed = on_closed;
    c->closed_ctx = ctx;
    http_enter(c);
    while (c->running.head)
        http_cancel(&c->running.head->x);
    while (c->pending.head)
        http_cancel(&c->pending.head->x);
    while (c->failed.head)
        http_cancel(&c->failed.head->x);
    h2_cancel_all(c);
    http_leave(c);
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
    h2_stats(c, out);
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
        long len = http_header_line_len(req->headers[i]);
        if (len < 0) {
            snprintf(err, errlen, "request header %zu is empty, too long or contains CR/LF", i);
            return NULL;
        }
        bytes += (size_t)len + 1;
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
static CURLcode easy_setup(http_client_t *c, curl_xfer_t *t, const http_request_t *req)
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
    bool h2 = c->multiplex && req->version != HTTP_VERSION_1_1;
    SETOPT(CURLOPT_HTTP_VERSION, h2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    if (h2 && strncmp(req->url, "https:", 6) == 0)
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

/* A transfer on the libcurl path. */
static http_transfer_t *curl_start(http_client_t *c, const http_request_t *req, char *err, size_t errlen)
{
    struct curl_slist *headers = headers_build(req, err, errlen);
    if (!headers)
        return NULL;
    curl_xfer_t *t = transfer_acquire(c);
    if (!t) {
        free(headers);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->headers = headers;
    t->shard = least_loaded_shard(c);
    t->shard->load++;
    http_xfer_init(&t->x, c, req, HTTP_KIND_CURL);
    CURLcode rc = easy_setup(c, t, req);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "curl_easy_setopt: %s", curl_easy_strerror(rc));
        goto fail;
    }
    if (http_heap_reserve(c, c->n_timed) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    http_enter(c);
    if (c->in_curl) {
        set_state(c, t, T_PENDING);
    } else if (add_to_multi(c, t) < 0) {
        http_leave(c);
        snprintf(err, errlen, "curl_multi_add_handle failed");
        goto fail;
    }
    c->started++;
    http_deadline_update(c, &t->x);
    http_leave(c);
    return &t->x;
fail:
    transfer_release(c, t);
    return NULL;
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
    if (req->version == HTTP_VERSION_2)
        return h2_start(c, req, err, errlen);
    return curl_start(c, req, err, errlen);
}

void http_cancel(http_transfer_t *x)
{
    if (!x)
        return;
    if (x->kind == HTTP_KIND_H2) {
        h2_cancel(x);
        return;
    }
    curl_xfer_t *t = (curl_xfer_t *)x;
    if (t->state == T_DONE || t->state == T_ZOMBIE)
        return;
    http_client_t *c = t->x.client;
    http_enter(c);
    http_heap_remove(c, &t->x);
    c->cancelled++;
    if (c->in_curl && t->in_multi)
        set_state(c, t, T_ZOMBIE); /* curl is on the stack: removed by the outermost leave() */
    else
        transfer_retire(c, t);
    http_leave(c);
}

const char *http_response_header(const http_response_t *r, const char *name)
{
    if (!r || !r->transfer)
        return NULL;
    if (r->transfer->kind == HTTP_KIND_H2)
        return h2_response_header(r->transfer, name);
    const curl_xfer_t *t = (const curl_xfer_t *)r->transfer;
    struct curl_header *h;
    if (curl_easy_header(t->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return NULL;
    return h->value;
}
