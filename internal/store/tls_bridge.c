/* tls_bridge.c — the rediss:// relay: a loopback listener for hiredis, a uv_tcp connection to Redis,
 * and a tls/ client session between them.
 *
 * Data paths: plain text read from the local side is written to the session; the ciphertext it
 * leaves is drained and sent upstream. Ciphertext read upstream is fed to the session, and the plain
 * text read from it is sent to the local side. Until the handshake completes, local bytes wait in a
 * pending buffer of STORE_TLS_PENDING_MAX (freed after the handshake). Every uv_write owns a copy of its
 * bytes; queued[] counts them per side and reading_update() stops reading the side feeding a queue over
 * STORE_TLS_QUEUE_MAX.
 *
 * Teardown: store_tls_bridge_free closes every handle; pending writes complete with ECANCELED first;
 * the struct (and the TLS session) is freed in the last close callback. */
#include "store/tls_bridge.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tls/tls.h"

#define TLS_READ_CHUNK  (16 * 1024)
#define TLS_WRITE_CHUNK (64 * 1024)
#define TLS_WHY_MAX     256

enum { SIDE_LOCAL = 0, SIDE_UP = 1 };

struct store_tls_bridge {
    uv_loop_t *loop;
    uv_tcp_t listener, up;
    uv_tcp_t *local; /* the accepted hiredis socket (heap), NULL until then */
    uv_connect_t connect;
    int open;          /* handles not closed yet (strangers included) */
    int port;          /* the listener's */
    int expect_port;   /* the local port hiredis connects from; 0 = not named yet */
    bool up_connected; /* the TCP connection to Redis is established */
    bool tls_up;       /* the handshake completed */
    bool failed, closing;
    bool reading[2];
    size_t queued[2]; /* bytes written to a side and not yet completed */
    tls_session_t *tls;
    char *pending; /* STORE_TLS_PENDING_MAX bytes of plain text awaiting the handshake; then NULL */
    size_t pending_len;
    char rbuf[2][TLS_READ_CHUNK];
    store_tls_error_cb on_error;
    void *ctx;
    void (*on_freed)(void *ctx);
    void *freed_ctx;
};

/* One uv_write with its own copy of the bytes. */
typedef struct {
    uv_write_t req;
    store_tls_bridge_t *b;
    int side;
    size_t len;
    char data[];
} tls_write_t;

static void reading_update(store_tls_bridge_t *b);

/* ---- context ------------------------------------------------------------------------------ */

store_tls_ctx_t *store_tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
    char why[TLS_WHY_MAX];
    tls_ctx_options_t o = {.ca_file = ca_file, .ca_setting = "redis.ca_file"};
    store_tls_ctx_t *c = tls_ctx_new(&o, why, sizeof why);
    if (!c)
        snprintf(err, errlen, "redis tls: %s", why);
    return c;
}

void store_tls_ctx_free(store_tls_ctx_t *c) { tls_ctx_free(c); }

/* ---- failure and teardown ----------------------------------------------------------------- */

/* Reports the first failure to the owner (once) and stops reading both sides. */
static void bridge_fail(store_tls_bridge_t *b, const char *why)
{
    if (b->failed || b->closing)
        return;
    b->failed = true;
    reading_update(b);
    b->on_error(b->ctx, why);
}

static void bridge_maybe_freed(store_tls_bridge_t *b)
{
    if (!b->closing || b->open > 0)
        return;
    void (*cb)(void *) = b->on_freed;
    void *ctx = b->freed_ctx;
    tls_session_free(b->tls);
    free(b->pending);
    free(b);
    if (cb)
        cb(ctx);
}

static void handle_closed(uv_handle_t *h)
{
    store_tls_bridge_t *b = h->data;
    b->open--;
    bridge_maybe_freed(b);
}

/* A heap handle closed: hiredis' accepted socket, or a stranger's. */
static void heap_closed(uv_handle_t *h)
{
    store_tls_bridge_t *b = h->data;
    free(h);
    b->open--;
    bridge_maybe_freed(b);
}

static void close_handle(uv_tcp_t *t)
{
    if (!uv_is_closing((uv_handle_t *)t))
        uv_close((uv_handle_t *)t, handle_closed);
}

void store_tls_bridge_free(store_tls_bridge_t *b, void (*on_freed)(void *ctx), void *ctx)
{
    if (!b || b->closing)
        return;
    b->closing = true;
    b->on_freed = on_freed;
    b->freed_ctx = ctx;
    close_handle(&b->listener);
    close_handle(&b->up);
    if (b->local && !uv_is_closing((uv_handle_t *)b->local))
        uv_close((uv_handle_t *)b->local, heap_closed);
}

/* ---- writing and backpressure ------------------------------------------------------------- */

static uv_stream_t *side_stream(store_tls_bridge_t *b, int side)
{
    return side == SIDE_LOCAL ? (uv_stream_t *)b->local : (uv_stream_t *)&b->up;
}

static void write_done(uv_write_t *req, int status)
{
    tls_write_t *w = req->data;
    store_tls_bridge_t *b = w->b;
    b->queued[w->side] -= w->len;
    free(w);
    if (status < 0 && !b->closing) {
        char why[TLS_WHY_MAX];
        snprintf(why, sizeof why, "tls bridge write failed: %s", uv_strerror(status));
        bridge_fail(b, why);
        return;
    }
    reading_update(b);
}

/* Queues a copy of data[0..len) for side; -1 (bridge failed) when it cannot. */
static int queue_write(store_tls_bridge_t *b, int side, const char *data, size_t len)
{
    tls_write_t *w = base_malloc(sizeof *w + len);
    if (!w) {
        bridge_fail(b, "tls bridge: out of memory");
        return -1;
    }
    w->b = b;
    w->side = side;
    w->len = len;
    w->req.data = w;
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, side_stream(b, side), &buf, 1, write_done);
    if (rc < 0) {
        char why[TLS_WHY_MAX];
        free(w);
        snprintf(why, sizeof why, "tls bridge write failed: %s", uv_strerror(rc));
        bridge_fail(b, why);
        return -1;
    }
    b->queued[side] += len;
    return 0;
}

/* Sends whatever ciphertext the session produced to Redis. */
static int flush_wbio(store_tls_bridge_t *b)
{
    char chunk[TLS_WRITE_CHUNK];
    size_t n;
    while ((n = tls_session_drain(b->tls, chunk, sizeof chunk)) > 0)
        if (queue_write(b, SIDE_UP, chunk, n) < 0)
            return -1;
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    store_tls_bridge_t *b = h->data;
    bool local = h == (uv_handle_t *)b->local;
    if (local && !b->tls_up)
        *buf = uv_buf_init(b->pending + b->pending_len, (unsigned)(STORE_TLS_PENDING_MAX - b->pending_len));
    else
        *buf = uv_buf_init(b->rbuf[local ? SIDE_LOCAL : SIDE_UP], TLS_READ_CHUNK);
}

static void on_local_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_up_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Reads a side only while it is connected, nothing failed, and the queue it feeds is under the
 * bound (the local side, before the handshake, also while the pending buffer has room). */
static void reading_update(store_tls_bridge_t *b)
{
    for (int side = SIDE_LOCAL; side <= SIDE_UP; side++) {
        bool ok = !b->failed && !b->closing && b->queued[!side] <= STORE_TLS_QUEUE_MAX;
        if (side == SIDE_LOCAL)
            ok = ok && b->local && (b->tls_up || b->pending_len < STORE_TLS_PENDING_MAX);
        else
            ok = ok && b->up_connected;
        if (ok == b->reading[side])
            continue;
        b->reading[side] = ok;
        if (ok)
            uv_read_start(side_stream(b, side), alloc_cb, side == SIDE_LOCAL ? on_local_read : on_up_read);
        else
            uv_read_stop(side_stream(b, side));
    }
}

/* ---- TLS ---------------------------------------------------------------------------------- */

/* Encrypts data[0..len) for Redis. */
static int tls_send(store_tls_bridge_t *b, const char *data, size_t len)
{
    char why[TLS_WHY_MAX];
    if (tls_session_write(b->tls, data, len, why, sizeof why) < 0) {
        bridge_fail(b, why);
        return -1;
    }
    return flush_wbio(b);
}

/* Advances the handshake; once done, sends the plain text that waited for it. */
static void tls_handshake(store_tls_bridge_t *b)
{
    char why[TLS_WHY_MAX];
    int r = tls_session_handshake(b->tls, why, sizeof why);
    if (flush_wbio(b) < 0)
        return;
    if (r < 0)
        bridge_fail(b, why);
    if (r != 1)
        return;
    b->tls_up = true;
    if (tls_send(b, b->pending, b->pending_len) < 0)
        return;
    free(b->pending); /* only the handshake needs it */
    b->pending = NULL;
    b->pending_len = 0;
    reading_update(b);
}

/* Decrypts everything available and passes it to hiredis. */
static void tls_receive(store_tls_bridge_t *b)
{
    char chunk[TLS_READ_CHUNK], why[TLS_WHY_MAX];
    long n;
    while ((n = tls_session_read(b->tls, chunk, sizeof chunk, why, sizeof why)) > 0)
        if (queue_write(b, SIDE_LOCAL, chunk, (size_t)n) < 0)
            return;
    if (n < 0) {
        bridge_fail(b, n == TLS_CLOSED ? "tls connection closed by redis" : why);
        return;
    }
    if (flush_wbio(b) == 0)
        reading_update(b);
}

/* ---- sides -------------------------------------------------------------------------------- */

/* A read error or EOF on a side: the bridge is done. */
static void side_lost(store_tls_bridge_t *b, ssize_t nread, const char *who)
{
    char why[TLS_WHY_MAX];
    if (nread == UV_EOF)
        snprintf(why, sizeof why, "connection closed by %s", who);
    else
        snprintf(why, sizeof why, "connection to %s lost: %s", who, uv_strerror((int)nread));
    bridge_fail(b, why);
}

static void on_local_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    store_tls_bridge_t *b = st->data;
    if (nread < 0) {
        side_lost(b, nread, "the redis client");
        return;
    }
    if (nread == 0 || b->failed || b->closing)
        return;
    if (!b->tls_up) { /* the bytes landed in pending (alloc_cb) */
        b->pending_len += (size_t)nread;
        reading_update(b);
        return;
    }
    if (tls_send(b, buf->base, (size_t)nread) == 0)
        reading_update(b);
}

static void on_up_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    store_tls_bridge_t *b = st->data;
    if (nread < 0) {
        side_lost(b, nread, "redis");
        return;
    }
    if (nread == 0 || b->failed || b->closing)
        return;
    if (tls_session_feed(b->tls, buf->base, (size_t)nread) < 0) {
        bridge_fail(b, "tls bridge: out of memory");
        return;
    }
    if (!b->tls_up)
        tls_handshake(b);
    if (b->tls_up && !b->failed)
        tls_receive(b);
}

static void on_up_connect(uv_connect_t *req, int status)
{
    store_tls_bridge_t *b = req->data;
    char why[TLS_WHY_MAX];
    if (b->closing)
        return;
    if (status < 0) {
        snprintf(why, sizeof why, "connect failed: %s", uv_strerror(status));
        bridge_fail(b, why);
        return;
    }
    b->up_connected = true;
    tls_handshake(b); /* sends the ClientHello */
    reading_update(b);
}

static void on_connection(uv_stream_t *server, int status)
{
    store_tls_bridge_t *b = server->data;
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    if (status < 0 || b->closing || b->failed || b->local)
        return;
    uv_tcp_t *t = base_calloc(1, sizeof *t);
    if (!t) {
        bridge_fail(b, "tls bridge: out of memory");
        return;
    }
    uv_tcp_init(b->loop, t);
    t->data = b;
    b->open++;
    const struct sockaddr_in *in = (const struct sockaddr_in *)&peer;
    if (uv_accept(server, (uv_stream_t *)t) != 0 ||
        uv_tcp_getpeername(t, (struct sockaddr *)&peer, &plen) != 0 || peer.ss_family != AF_INET ||
        b->expect_port == 0 || ntohs(in->sin_port) != b->expect_port ||
        in->sin_addr.s_addr != htonl(INADDR_LOOPBACK)) {
        uv_close((uv_handle_t *)t, heap_closed); /* not hiredis' socket */
        return;
    }
    b->local = t;
    uv_close((uv_handle_t *)&b->listener, handle_closed);
    reading_update(b);
}

store_tls_bridge_t *store_tls_bridge_new(uv_loop_t *loop, store_tls_ctx_t *c, const char *addr, int port,
                                         const char *host, store_tls_error_cb on_error, void *ctx, char *err,
                                         size_t errlen)
{
    struct sockaddr_storage up_addr, self;
    struct sockaddr_in any;
    int slen = sizeof self, rc;
    char why[TLS_WHY_MAX];
    if (uv_ip4_addr(addr, port, (struct sockaddr_in *)&up_addr) != 0 &&
        uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&up_addr) != 0) {
        snprintf(err, errlen, "tls bridge: bad address");
        return NULL;
    }
    store_tls_bridge_t *b = base_calloc(1, sizeof *b);
    if (!b || !(b->pending = base_malloc(STORE_TLS_PENDING_MAX))) {
        free(b);
        snprintf(err, errlen, "tls bridge: out of memory");
        return NULL;
    }
    b->loop = loop;
    b->on_error = on_error;
    b->ctx = ctx;
    uv_tcp_init(loop, &b->listener);
    uv_tcp_init(loop, &b->up);
    b->listener.data = b->up.data = b->connect.data = b;
    b->open = 2;
    if (!(b->tls = tls_session_new(c, host, why, sizeof why))) {
        snprintf(err, errlen, "tls bridge: %s", why);
        goto fail;
    }
    uv_ip4_addr("127.0.0.1", 0, &any);
    if ((rc = uv_tcp_bind(&b->listener, (const struct sockaddr *)&any, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&b->listener, 1, on_connection)) < 0 ||
        (rc = uv_tcp_getsockname(&b->listener, (struct sockaddr *)&self, &slen)) < 0 ||
        (rc = uv_tcp_connect(&b->connect, &b->up, (const struct sockaddr *)&up_addr, on_up_connect)) < 0) {
        snprintf(err, errlen, "tls bridge: %s", uv_strerror(rc));
        goto fail;
    }
    b->port = ntohs(((struct sockaddr_in *)&self)->sin_port);
    return b;
fail:
    store_tls_bridge_free(b, NULL, NULL);
    return NULL;
}

int store_tls_bridge_port(const store_tls_bridge_t *b) { return b->port; }

void store_tls_bridge_expect(store_tls_bridge_t *b, int client_port) { b->expect_port = client_port; }
