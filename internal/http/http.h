/* http — HTTP requests on one libuv loop: start, stream, cancel. Two engines behind one API:
 * libcurl's multi socket API (HTTP/1.1, or HTTP/2 via ALPN) and a native HTTP/2 client on libnghttp2
 * (request.version = HTTP_VERSION_2: h2c with prior knowledge on http://, ALPN "h2" on https://).
 * For curl it owns a few curl multi handles ("shards", each with its keep-alive connection pool and
 * uv_timer), one curl share (DNS cache and TLS sessions), one uv_poll per socket curl opens and a small
 * pool of reusable easy handles; for HTTP/2 its connections (a few per origin, many streams each), one
 * shared read buffer and one SSL_CTX per TLS setting; for both one uv_timer for the first-byte and idle
 * timeouts of all transfers.
 * It knows nothing of LLMs or JSON, never blocks the loop, never follows redirects, and never logs request
 * headers or bodies (they carry API keys). Every function here must be called on the loop's thread. */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/base.h"

/* Receive buffer per transfer (CURLOPT_BUFFERSIZE). curl holds it for the whole life of a transfer,
 * also while the transfer only waits for a slow provider, so it is a large share of per-call memory
 * (measured with 2,000 HTTP/1.1 calls in flight: 12.0 KB heap per call at 1 KiB, 15.1 KB at 4 KiB,
 * 27.4 KB at curl's 16 KiB default). A larger buffer only saves recv() calls on bodies longer than
 * it, and CPU per call measured the same at 1 and 4 KiB for 3 KB answers; 1 KiB is curl's minimum. */
#define HTTP_DEFAULT_RECEIVE_BUFFER   1024
#define HTTP_DEFAULT_MAX_IDLE_HANDLES 64
/* Transfers are spread over this many curl multi handles (each with its own connection pool).
 * curl 7.88 walks every pooled connection of a multi handle when a transfer ends, and every
 * connection to the host when one starts; with one multi handle CPU per transfer measured 49 us
 * at 100 concurrent and 125 us at 4,000, with 8 handles 60 us at 4,000. A new transfer goes to
 * the least loaded shard (the first on ties), so light traffic still reuses one pool. */
#define HTTP_DEFAULT_SHARDS    8
#define HTTP_MAX_SHARDS        64
#define HTTP_MAX_HEADER_LINE   8192        /* longest request header line http_start accepts */
#define HTTP_MAX_BUFFERED_BODY (16u << 20) /* buffer_body without max_response_bytes is capped here */
/* Native HTTP/2: connections per origin (beyond it requests wait, first in first out), how long a
 * connection without streams is kept, and the response head bytes kept per stream. */
#define HTTP_DEFAULT_H2_MAX_CONNECTIONS 256
#define HTTP_DEFAULT_H2_IDLE_MS         60000
#define HTTP_H2_MAX_HEAD_BYTES          (16 * 1024)

typedef struct http_client http_client_t;
typedef struct http_transfer http_transfer_t;

typedef struct {
    long max_total_connections; /* CURLMOPT_MAX_TOTAL_CONNECTIONS; 0 = unlimited; split over shards */
    long max_host_connections;  /* CURLMOPT_MAX_HOST_CONNECTIONS; 0 = unlimited; split over shards */
    size_t shards;              /* 0 = HTTP_DEFAULT_SHARDS; at most HTTP_MAX_SHARDS. A limit is divided
                                 * among shards (each gets limit/shards, at least 1) */
    long receive_buffer_bytes;  /* 0 = HTTP_DEFAULT_RECEIVE_BUFFER; curl clamps to [1024, 10 MiB] */
    bool multiplex;             /* HTTP/2 over https (ALPN), streams multiplexed; new transfers wait
                                 * (PIPEWAIT) for a connection they can share */
    long dns_cache_timeout_s;   /* 0 = 60; -1 = forever */
    size_t max_idle_handles;    /* easy handles kept for reuse; 0 = HTTP_DEFAULT_MAX_IDLE_HANDLES */
    const char *user_agent;     /* NULL = "parley/" PARLEY_VERSION; copied */
    size_t h2_max_connections_per_origin; /* native HTTP/2; 0 = HTTP_DEFAULT_H2_MAX_CONNECTIONS */
    int64_t h2_idle_timeout_ms;           /* native HTTP/2 idle connection close; 0 = default */
} http_client_options_t;

/* Fills o with the defaults (multiplexing on, everything else as documented above). */
void http_client_options_init(http_client_options_t *o);

typedef enum {
    HTTP_OK = 0,              /* a complete response arrived, whatever its status */
    HTTP_ERR_CONNECT,         /* DNS failure or connection refused */
    HTTP_ERR_TIMEOUT_CONNECT, /* connect_timeout_ms passed before connected (TLS included) */
    HTTP_ERR_TIMEOUT_FIRST_BYTE,
    HTTP_ERR_TIMEOUT_IDLE,
    HTTP_ERR_TIMEOUT_TOTAL,
    HTTP_ERR_TLS,       /* handshake or certificate verification failed */
    HTTP_ERR_CLOSED,    /* connection closed or reset before the response was complete */
    HTTP_ERR_TOO_LARGE, /* body longer than max_response_bytes */
    HTTP_ERR_ABORTED,   /* on_data returned non-zero */
    HTTP_ERR_OTHER,
} http_code_t;

/* Stable lower-case name of a code ("ok", "timeout_idle", ...), for logs and attempt records. */
const char *http_code_name(http_code_t code);

/* The response head, passed to on_response and kept in the result. Valid until on_done returns. */
typedef struct {
    long status;
    const char *content_type;  /* NULL when absent */
    int64_t retry_after_ms;    /* Retry-After (seconds or HTTP-date, made relative); -1 when absent */
    http_transfer_t *transfer; /* private: lets http_response_header find the headers */
} http_response_t;

/* The value of response header name (case-insensitive; the last one if repeated), or NULL. */
const char *http_response_header(const http_response_t *r, const char *name);

typedef struct {
    http_code_t code;
    const char *error;               /* human text, "" when ok; never contains headers or body */
    int curl_code;                   /* raw CURLcode, for logs; 0 on the native HTTP/2 path */
    long status;                     /* HTTP status, 0 when no response head arrived */
    const http_response_t *response; /* NULL when no response head arrived */
    uint64_t bytes_received;         /* body bytes */
    bool reused_connection;          /* a kept-alive connection carried it */
    struct {
        int64_t connect_ms;    /* curl's connect (+TLS) time; 0 on a reused connection */
        int64_t response_ms;   /* head complete, from http_start; -1 if never */
        int64_t first_byte_ms; /* first body byte, from http_start; -1 if never */
        int64_t total_ms;      /* from http_start to the end */
    } timing;
    buf_t body; /* with buffer_body: the whole body; on_done may take it with buf_steal */
} http_result_t;

typedef enum { HTTP_POST = 0, HTTP_GET } http_method_t;

/* AUTO: libcurl, HTTP/2 via ALPN on https when the client option multiplex is on, else HTTP/1.1;
 * 1_1: libcurl, HTTP/1.1 only; 2: the native HTTP/2 client (h2c prior knowledge on http://). */
typedef enum { HTTP_VERSION_AUTO = 0, HTTP_VERSION_1_1, HTTP_VERSION_2 } http_version_t;

typedef struct {
    http_method_t method;
    http_version_t version;
    const char *url;            /* http:// or https:// only; copied */
    const char *const *headers; /* "Name: value" lines, copied; CR/LF rejected */
    size_t n_headers;
    const char *body;              /* POST body; NOT copied: keep it alive until on_done ran or */
    size_t body_len;               /*   http_cancel returned, unless copy_body */
    bool copy_body;                /* http keeps its own copy of body */
    int64_t connect_timeout_ms;    /* 0 = curl's default (300 s) */
    int64_t total_timeout_ms;      /* whole transfer; 0 = off */
    int64_t first_byte_timeout_ms; /* from http_start to the first body byte; 0 = off */
    int64_t idle_timeout_ms;       /* max gap between body chunks, from the first one; 0 = off */
    size_t max_response_bytes;     /* 0 = unlimited (HTTP_MAX_BUFFERED_BODY with buffer_body) */
    bool buffer_body;              /* collect the body into result.body */
    bool tls_insecure;             /* skip peer and host verification (verification is the default) */
    const char *ca_file;           /* NULL = system store; copied */
    /* Callbacks; ctx is passed to each. on_done is required and runs exactly once unless the
     * transfer is cancelled; after http_cancel no callback runs. Inside any callback, http_start,
     * http_cancel (of this or any transfer) and http_client_close may be called. */
    void (*on_response)(void *ctx, const http_response_t *r); /* once, when the final head is in */
    int (*on_data)(void *ctx, const char *chunk, size_t n);   /* each body chunk; !=0 aborts */
    void (*on_done)(void *ctx, http_result_t *res);           /* t is freed when it returns */
    void *ctx;
} http_request_t;

typedef struct {
    size_t in_flight; /* started, neither done nor cancelled */
    uint64_t started;
    uint64_t completed; /* on_done ran (any code) */
    uint64_t cancelled;
    size_t sockets;        /* sockets curl has asked us to watch now */
    size_t idle_handles;   /* easy handles waiting in the reuse pool */
    size_t h2_connections; /* native HTTP/2 connections open (connecting included) */
    size_t h2_streams;     /* native HTTP/2 transfers in flight (waiting for a slot included) */
} http_stats_t;

/* Process-wide curl_global_init, done once however often it is called (thread-safe); 0 or -1.
 * http_client_new calls it; main may call it early. */
int http_global_init(void);

/* A client on loop; opts NULL = defaults. NULL on error with a message in err. Close it with
 * http_client_close before closing the loop. */
http_client_t *http_client_new(uv_loop_t *loop, const http_client_options_t *opts, char *err, size_t errlen);

/* Cancels every transfer without callbacks, closes all connections and libuv handles, and frees the
 * client once libuv has closed them (a later loop iteration); then calls on_closed(ctx) if given.
 * The client must not be used after this call. */
void http_client_close(http_client_t *c, void (*on_closed)(void *ctx), void *ctx);

/* Starts a transfer. NULL on error (bad request, out of memory, client closing) with a message in
 * err; then no callback runs. The transfer handle is valid until on_done returns or http_cancel. */
http_transfer_t *http_start(http_client_t *c, const http_request_t *req, char *err, size_t errlen);

/* Stops a transfer now: its easy handle leaves the multi handle, so an HTTP/1.1 connection is
 * closed and an HTTP/2 stream reset (native HTTP/2: RST_STREAM, the connection stays); no callback
 * of it runs afterwards and its memory is freed (when called from inside a callback, as soon as the
 * library on the stack returns to http). NULL is ignored;
 * calling it from the transfer's own on_done does nothing. */
void http_cancel(http_transfer_t *t);

void http_client_stats(const http_client_t *c, http_stats_t *out);

#endif
