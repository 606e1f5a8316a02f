/* tls_bridge — store's private TLS relay for rediss:// (hiredis 0.14 has no TLS): hiredis connects in
 * plain text to a loopback listener the bridge owns, and the bridge speaks TLS to the real Redis.
 * It owns the listener (127.0.0.1:0, one accepted connection, and only from the socket the store
 * names), the accepted socket, the upstream uv_tcp connection and the tls/ client session it drives on
 * the loop (which verifies the peer: CA file or the system store, host name or IP, TLS 1.2+). It
 * bounds its buffers and applies backpressure (a side stops being read while the other side's
 * write queue is over STORE_TLS_QUEUE_MAX). It never blocks the loop, never sees what it relays as
 * anything but bytes, and never logs. Not part of store's public API. */
#ifndef PARLEY_STORE_TLS_BRIDGE_H
#define PARLEY_STORE_TLS_BRIDGE_H

#include <stddef.h>

#include <uv.h>

#include "tls/tls.h"

#define STORE_TLS_QUEUE_MAX   (256 * 1024) /* bytes queued for one side before the other stops reading */
#define STORE_TLS_PENDING_MAX (64 * 1024)  /* plain text held while the handshake runs */

typedef tls_ctx_t store_tls_ctx_t;
typedef struct store_tls_bridge store_tls_bridge_t;

/* The TLS settings shared by every connection of one store: peer verification with ca_file, or the
 * system store when ca_file is NULL or "". Loads the file once (at start-up). NULL with err filled
 * ("redis.ca_file <path>: <reason>" when the file cannot be loaded). */
store_tls_ctx_t *store_tls_ctx_new(const char *ca_file, char *err, size_t errlen);
void store_tls_ctx_free(store_tls_ctx_t *c);

/* Called once, from the loop, when the bridge fails (upstream connect refused, handshake or
 * verification failure, either side closed); why never holds relayed data. The bridge stays
 * allocated until store_tls_bridge_free. */
typedef void (*store_tls_error_cb)(void *ctx, const char *why);

/* Starts listening on 127.0.0.1:0 and connecting to addr:port (a numeric address); host is the name
 * checked against the certificate (and sent as SNI unless it is an IP address). NULL with err filled. */
store_tls_bridge_t *store_tls_bridge_new(uv_loop_t *loop, store_tls_ctx_t *c, const char *addr, int port,
                                         const char *host, store_tls_error_cb on_error, void *ctx, char *err,
                                         size_t errlen);

/* The loopback port hiredis should connect to. */
int store_tls_bridge_port(const store_tls_bridge_t *b);

/* Names the client socket allowed in: the local port of the socket hiredis connects from (any other
 * connection to the listener is closed at once). */
void store_tls_bridge_expect(store_tls_bridge_t *b, int client_port);

/* Closes everything (safe from inside on_error); on_freed runs from the loop once the bridge is freed. */
void store_tls_bridge_free(store_tls_bridge_t *b, void (*on_freed)(void *ctx), void *ctx);

#endif
