/* http_int.h — private to http/: the parts that the libcurl path (http.c) and the native HTTP/2 path
 * (h2.c, h2_tls.c) share: the common head of every transfer, the client, the first-byte / idle / total
 * deadline heap, body-chunk accounting, result building, error texts and Retry-After parsing. */
#ifndef PARLEY_HTTP_INT_H
#define PARLEY_HTTP_INT_H

#include "http/http.h"
#include "tls/tls.h"

#define HTTP_HEAP_NONE   ((size_t)-1)
#define HTTP_NO_DEADLINE INT64_MAX
#define HTTP_ERR_TEXT    256

typedef enum { HTTP_KIND_CURL = 0, HTTP_KIND_H2 } http_kind_t;

/* The head of every transfer (curl_xfer_t in http.c, h2_stream_t in h2.c start with it). */
struct http_transfer {
    http_client_t *client;
    uint8_t kind; /* http_kind_t */
    bool head_seen;
    bool buffer_body;
    bool timed; /* has a first-byte, idle or (h2) total timeout (counted in client->n_timed) */
    http_code_t fail;
    void (*on_response)(void *ctx, const http_response_t *r);
    int (*on_data)(void *ctx, const char *chunk, size_t n);
    void (*on_done)(void *ctx, http_result_t *res);
    void *ctx;
    buf_t body;
    uint64_t received;
    size_t max_bytes;
    int64_t total_timeout_ms, first_byte_timeout_ms, idle_timeout_ms;
    int64_t total_deadline_ms; /* h2 only (curl enforces its own); HTTP_NO_DEADLINE = none */
    uint64_t start_ns;
    int64_t start_ms, last_data_ms;
    int64_t response_ms, first_byte_ms; /* since start; -1 = not yet */
    int64_t deadline_ms;                /* heap key; never later than the real deadline */
    size_t heap_idx;
    http_response_t response;
};

typedef struct h2 h2_t;
typedef struct shard shard_t;
typedef struct sock sock_t;
typedef struct curl_xfer curl_xfer_t;

typedef struct {
    curl_xfer_t *head;
    size_t n;
} tlist_t;

struct http_client {
    uv_loop_t *loop;
    shard_t *shards;
    size_t n_shards;
    void *share;               /* CURLSH: DNS cache and TLS sessions, shared by all shards */
    uv_timer_t deadline_timer; /* the earliest first-byte / idle / h2 total deadline */
    int64_t armed_ms;          /* what deadline_timer is set for; HTTP_NO_DEADLINE = stopped */
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
    h2_t *h2; /* the native HTTP/2 client */
};

/* ---- shared helpers (http_common.c) ---- */

/* Entry bracketing: every public function and libuv callback calls enter first and leave last; the
 * outermost leave runs the deferred work of both paths and, when closing, tears the client down. */
void http_enter(http_client_t *c);
void http_leave(http_client_t *c);

/* Milliseconds since http_start. */
int64_t http_elapsed_ms(const http_transfer_t *t);
/* Fills the common head from req at http_start time (times, limits, callbacks). */
void http_xfer_init(http_transfer_t *t, http_client_t *c, const http_request_t *req, http_kind_t kind);
/* Room in the deadline heap for every timed transfer, so that later updates never allocate. */
int http_heap_reserve(http_client_t *c, size_t n);
void http_heap_remove(http_client_t *c, http_transfer_t *t);
/* Puts t at its exact next deadline in the heap (or out of it). */
void http_deadline_update(http_client_t *c, http_transfer_t *t);
int64_t http_next_deadline(const http_transfer_t *t);
/* Re-arms the client's deadline timer for the earliest deadline in the heap. */
void http_arm_deadline(http_client_t *c);
/* The code for an expired deadline of t at now. */
http_code_t http_expired_code(const http_transfer_t *t, int64_t now);

/* Accounts one body chunk: first-byte time, deadline, size limit, buffering and on_data. HTTP_OK, or
 * the code the transfer must end with (the caller checks its own state: on_data may have cancelled). */
http_code_t http_xfer_data(http_transfer_t *t, const char *p, size_t n);
/* A Content-Length announced in the head: true when it is over the size limit; else a buffered body's
 * buffer is sized for it (up to HTTP_BODY_PRESIZE_MAX), so the body fills it without regrowing. */
#define HTTP_BODY_PRESIZE_MAX (64 * 1024)
bool http_xfer_content_length(http_transfer_t *t, int64_t content_length);

/* Text for the codes that http itself decides (timeouts, limits, callbacks, memory). */
void http_describe_own(const http_transfer_t *t, http_code_t code, char *buf, size_t len);
/* The common part of a result: code, head, sizes, times, body (moved out of t). */
void http_result_base(http_transfer_t *t, http_result_t *res, http_code_t code, const char *error);

/* Retry-After value (delta seconds or HTTP-date) as milliseconds from now; -1 when unparsable. */
int64_t http_retry_after_ms(const char *value, int64_t now_wall_ms);
/* Checks one "Name: value" request line (non-empty, bounded, no CR/LF); its length or -1. */
long http_header_line_len(const char *h);

/* Frees the client once it is torn down and every libuv handle it owned has closed. */
void http_client_maybe_free(http_client_t *c);

/* ---- the curl path (http.c), called by the shared code ---- */
void http_curl_expire(http_transfer_t *t, http_code_t code);
void http_curl_flush_deferred(http_client_t *c);
void http_curl_teardown(http_client_t *c);

/* ---- the native HTTP/2 path (h2.c) ---- */
int h2_init(http_client_t *c, const http_client_options_t *o, char *err, size_t errlen);
/* Frees what h2_init allocated when the client could not be made (no libuv handle exists yet). */
void h2_abort_init(http_client_t *c);
http_transfer_t *h2_start(http_client_t *c, const http_request_t *req, char *err, size_t errlen);
void h2_cancel(http_transfer_t *t);
/* A deadline of t passed: its stream is reset and it ends with code; the connection stays. */
void h2_expire(http_transfer_t *t, http_code_t code);
const char *h2_response_header(const http_transfer_t *t, const char *name);
/* Cancels every stream without callbacks (http_client_close). */
void h2_cancel_all(http_client_t *c);
/* Frees cancelled streams that waited for the stack to unwind. */
void h2_flush_deferred(http_client_t *c);
/* Closes every connection and libuv handle (the client is closing). */
void h2_teardown(http_client_t *c);
void h2_stats(const http_client_t *c, http_stats_t *out);

/* ---- TLS settings of the native HTTP/2 path (h2_tls.c) ---- */
typedef struct h2_tls_ctx h2_tls_ctx_t;
/* The context for (ca_file, insecure), offering "h2" by ALPN, made on first use and kept in *cache;
 * NULL with err. */
tls_ctx_t *h2_tls_ctx_get(h2_tls_ctx_t **cache, const char *ca_file, bool insecure, char *err, size_t errlen);
void h2_tls_ctx_free_all(h2_tls_ctx_t **cache);
/* Appends the ciphertext waiting in s to out; 0, or -1 when out is full. */
int h2_tls_drain(tls_session_t *s, buf_t *out);

#endif
