/* tls.h — TLS client sessions over memory BIOs, for the native HTTP/2 client (https) and the store's
 * rediss:// bridge. It owns the client context (TLS 1.2 or later, no renegotiation, the peer verified
 * against a CA file or the system store unless explicitly insecure, an optional ALPN list) and the
 * client session (SNI for host names, never for IP literals; the host name or IP address checked
 * against the certificate), and moves bytes through it: the caller feeds the ciphertext it read,
 * drains the ciphertext to send, writes and reads plain text. It never touches a socket or the loop,
 * never blocks and never logs; its error texts hold no relayed data. */
#ifndef PARLEY_TLS_TLS_H
#define PARLEY_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#define TLS_ALPN_MAX 255  /* bytes of the ALPN list in wire format */
#define TLS_CLOSED   (-2) /* tls_session_read: the peer closed the session (close_notify) */

typedef struct tls_ctx tls_ctx_t;
typedef struct tls_session tls_session_t;

typedef struct {
    const char *ca_file;    /* PEM file of the CAs the peer is verified with; NULL or "" = system store */
    const char *ca_setting; /* the setting a ca_file error names ("redis.ca_file"); NULL = "ca_file" */
    bool insecure;          /* no verification at all (tls_verify: false); ca_file is then not read */
    const char *alpn;       /* protocols offered by ALPN, comma-separated ("h2,http/1.1"); NULL = none */
} tls_ctx_options_t;

/* A client context (made once, shared by many sessions); NULL with err ("<ca_setting> <ca_file>:
 * <reason>" when the CA file cannot be loaded). */
tls_ctx_t *tls_ctx_new(const tls_ctx_options_t *o, char *err, size_t errlen);
/* Sessions hold their own reference: a context may be freed before its sessions. */
void tls_ctx_free(tls_ctx_t *c);

/* A client session to host (a name or an IP literal), in the connecting state; NULL with err. */
tls_session_t *tls_session_new(tls_ctx_t *c, const char *host, char *err, size_t errlen);
void tls_session_free(tls_session_t *s);

/* One handshake step: 1 done, 0 more input needed, -1 failed with err ("tls handshake failed:
 * certificate verify failed: <why>" when the peer was refused). Drain the output after every step. */
int tls_session_handshake(tls_session_t *s, char *err, size_t errlen);
/* Whether ALPN chose proto (after the handshake). */
bool tls_session_alpn_is(const tls_session_t *s, const char *proto);

/* Ciphertext read from the peer into the session; 0, or -1 (out of memory, or n too large). */
int tls_session_feed(tls_session_t *s, const void *p, size_t n);
/* Plain text out: bytes read (at most cap), 0 when more input is needed, TLS_CLOSED when the peer
 * closed the session, -1 on error with err ("tls read failed: ..."). Drain the output afterwards. */
long tls_session_read(tls_session_t *s, void *out, size_t cap, char *err, size_t errlen);
/* Plain text in, all of it encrypted into the output (a memory BIO never pushes back); 0, or -1 with
 * err ("tls write failed: ..."). */
int tls_session_write(tls_session_t *s, const void *p, size_t n, char *err, size_t errlen);
/* Bytes of ciphertext waiting to be sent. */
size_t tls_session_pending(const tls_session_t *s);
/* Moves up to cap bytes of the waiting ciphertext to out; how many. */
size_t tls_session_drain(tls_session_t *s, void *out, size_t cap);

#endif
