/* tls.c — OpenSSL client contexts and memory-BIO sessions (see tls.h). Every call that may fail
 * clears the thread's OpenSSL error queue first and leaves it empty, so that SSL_get_error and the
 * error texts speak only of that call. */
#include "tls/tls.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/base.h"

#define TLS_WRITE_MAX (1 << 30) /* bytes handed to one SSL_write */

struct tls_ctx {
    SSL_CTX *ssl;
    bool verify;
};

struct tls_session {
    SSL *ssl; /* owns both memory BIOs: rbio (ciphertext in), wbio (ciphertext out) */
    bool verify;
};

/* "what: <the oldest OpenSSL error, or fallback>" into err; clears the error queue. */
static void ssl_error_text(const char *what, const char *fallback, char *err, size_t errlen)
{
    char text[160];
    unsigned long e = ERR_peek_error();
    if (e)
        ERR_error_string_n(e, text, sizeof text);
    else
        snprintf(text, sizeof text, "%s", fallback);
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s", what, text);
}

/* Why a session call failed: the certificate verdict when the peer was refused, else OpenSSL's error. */
static void session_error(const tls_session_t *s, const char *what, char *err, size_t errlen)
{
    long v = s->verify ? SSL_get_verify_result(s->ssl) : X509_V_OK;
    if (v == X509_V_OK) {
        ssl_error_text(what, "protocol error", err, errlen);
        return;
    }
    ERR_clear_error();
    snprintf(err, errlen, "%s: certificate verify failed: %s", what, X509_verify_cert_error_string(v));
}

/* The comma-separated list as ALPN wire format (length-prefixed names); its length, or -1. */
static int alpn_wire(const char *list, unsigned char *out, size_t cap)
{
    size_t len = 0;
    for (const char *p = list;;) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n > 255 || len + 1 + n > cap)
            return -1;
        out[len++] = (unsigned char)n;
        memcpy(out + len, p, n);
        len += n;
        if (p[n] == '\0')
            return (int)len;
        p += n + 1;
    }
}

tls_ctx_t *tls_ctx_new(const tls_ctx_options_t *o, char *err, size_t errlen)
{
    unsigned char alpn[TLS_ALPN_MAX];
    int alpn_len = o->alpn ? alpn_wire(o->alpn, alpn, sizeof alpn) : 0;
    tls_ctx_t *c = NULL;
    ERR_clear_error();
    if (alpn_len < 0) {
        snprintf(err, errlen, "bad ALPN protocol list");
        goto fail;
    }
    if (!(c = base_calloc(1, sizeof *c))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->verify = !o->insecure;
    if (!(c->ssl = SSL_CTX_new(TLS_client_method())) ||
        SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION) != 1) {
        ssl_error_text("cannot create a TLS context", "out of memory", err, errlen);
        goto fail;
    }
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    if (alpn_len > 0 && SSL_CTX_set_alpn_protos(c->ssl, alpn, (unsigned)alpn_len) != 0) {
        ssl_error_text("cannot set ALPN", "out of memory", err, errlen);
        goto fail;
    }
    if (!c->verify)
        return c;
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    if (o->ca_file && *o->ca_file) {
        if (SSL_CTX_load_verify_locations(c->ssl, o->ca_file, NULL) != 1) {
            char what[256];
            snprintf(what, sizeof what, "%s %.200s", o->ca_setting ? o->ca_setting : "ca_file", o->ca_file);
            ssl_error_text(what, "cannot load", err, errlen);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(c->ssl) != 1) {
        ssl_error_text("cannot load the system CA store", "unknown error", err, errlen);
        goto fail;
    }
    return c;
fail:
    tls_ctx_free(c);
    return NULL;
}

void tls_ctx_free(tls_ctx_t *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ssl);
    free(c);
}

tls_session_t *tls_session_new(tls_ctx_t *c, const char *host, char *err, size_t errlen)
{
    unsigned char ip[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    BIO *rbio = NULL, *wbio = NULL;
    tls_session_t *s = base_calloc(1, sizeof *s);
    ERR_clear_error();
    if (!s || !(s->ssl = SSL_new(c->ssl)) || !(rbio = BIO_new(BIO_s_mem())) ||
        !(wbio = BIO_new(BIO_s_mem()))) {
        BIO_free(rbio);
        ssl_error_text("cannot create a TLS session", "out of memory", err, errlen);
        goto fail;
    }
    BIO_set_mem_eof_return(rbio, -1); /* an empty read BIO means "wait", not EOF */
    SSL_set_bio(s->ssl, rbio, wbio);
    s->verify = c->verify;
    if (!is_ip && SSL_set_tlsext_host_name(s->ssl, host) != 1) {
        ssl_error_text("cannot send the TLS server name", "bad host name", err, errlen);
        goto fail;
    }
    if (s->verify) {
        X509_VERIFY_PARAM *p = SSL_get0_param(s->ssl);
        X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, host) : X509_VERIFY_PARAM_set1_host(p, host, 0)) != 1) {
            ssl_error_text("cannot check the TLS peer's name", "bad host name", err, errlen);
            goto fail;
        }
    }
    SSL_set_connect_state(s->ssl);
    return s;
fail:
    tls_session_free(s);
    return NULL;
}

void tls_session_free(tls_session_t *s)
{
    if (!s)
        return;
    SSL_free(s->ssl);
    free(s);
}

/* Whether the result rc of an SSL call only means "feed me more" (WANT_WRITE: a memory BIO never
 * blocks, so it is the same). */
static bool session_wants(const tls_session_t *s, int rc)
{
    int e = SSL_get_error(s->ssl, rc);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

int tls_session_handshake(tls_session_t *s, char *err, size_t errlen)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(s->ssl);
    if (rc == 1)
        return 1;
    if (session_wants(s, rc))
        return 0;
    session_error(s, "tls handshake failed", err, errlen);
    return -1;
}

bool tls_session_alpn_is(const tls_session_t *s, const char *proto)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(s->ssl, &p, &n);
    return n == strlen(proto) && memcmp(p, proto, n) == 0;
}

int tls_session_feed(tls_session_t *s, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (n > INT_MAX)
        return -1;
    ERR_clear_error();
    int rc = BIO_write(SSL_get_rbio(s->ssl), p, (int)n);
    ERR_clear_error();
    return rc == (int)n ? 0 : -1;
}

long tls_session_read(tls_session_t *s, void *out, size_t cap, char *err, size_t errlen)
{
    if (cap == 0)
        return 0;
    ERR_clear_error();
    int n = SSL_read(s->ssl, out, cap > INT_MAX ? INT_MAX : (int)cap);
    if (n > 0)
        return n;
    if (session_wants(s, n))
        return 0;
    if (SSL_get_error(s->ssl, n) == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return TLS_CLOSED;
    }
    session_error(s, "tls read failed", err, errlen);
    return -1;
}

int tls_session_write(tls_session_t *s, const void *p, size_t n, char *err, size_t errlen)
{
    const char *at = p;
    while (n > 0) {
        int chunk = n > TLS_WRITE_MAX ? TLS_WRITE_MAX : (int)n;
        ERR_clear_error();
        if (SSL_write(s->ssl, at, chunk) != chunk) {
            session_error(s, "tls write failed", err, errlen);
            return -1;
        }
        at += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

size_t tls_session_pending(const tls_session_t *s) { return BIO_ctrl_pending(SSL_get_wbio(s->ssl)); }

size_t tls_session_drain(tls_session_t *s, void *out, size_t cap)
{
    int n = BIO_read(SSL_get_wbio(s->ssl), out, cap > INT_MAX ? INT_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}
