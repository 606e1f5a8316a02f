/* h2_tls.c — TLS for the native HTTP/2 client: OpenSSL over memory BIOs (the connection moves the
 * bytes between the socket and the BIOs), ALPN offering only "h2", SNI, certificate and host (or IP)
 * verification, and one SSL_CTX per (ca_file, tls_insecure) kept for the life of the client. */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct h2_tls_ctx {
    struct h2_tls_ctx *next;
    char *ca_file; /* NULL = system store */
    bool insecure;
    SSL_CTX *ctx;
};

static bool same_ca(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

/* The last OpenSSL error as text (the queue is cleared). */
static void ssl_error_text(const char *what, char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    char text[160] = "unknown error";
    if (e)
        ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s", what, text);
}

static SSL_CTX *ctx_make(const char *ca_file, bool insecure, char *err, size_t errlen)
{
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ssl_error_text("SSL_CTX_new", err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn) != 0) {
        ssl_error_text("ALPN", err, errlen);
        goto fail;
    }
    if (!insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            ssl_error_text(ca_file ? "cannot load ca_file" : "cannot load the system CA store", err, errlen);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct ssl_ctx_st *h2_tls_ctx_get(h2_tls_ctx_t **cache, const char *ca_file, bool insecure, char *err,
                                  size_t errlen)
{
    for (h2_tls_ctx_t *e = *cache; e; e = e->next)
        if (e->insecure == insecure && same_ca(e->ca_file, ca_file))
            return e->ctx;
    h2_tls_ctx_t *e = base_calloc(1, sizeof *e);
    if (!e || (ca_file && !(e->ca_file = base_strdup(ca_file)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    e->insecure = insecure;
    e->ctx = ctx_make(ca_file, insecure, err, errlen);
    if (!e->ctx)
        goto fail;
    e->next = *cache;
    *cache = e;
    return e->ctx;
fail:
    if (e)
        free(e->ca_file);
    free(e);
    return NULL;
}

void h2_tls_ctx_free_all(h2_tls_ctx_t **cache)
{
    h2_tls_ctx_t *e;
    while ((e = *cache)) {
        *cache = e->next;
        SSL_CTX_free(e->ctx);
        free(e->ca_file);
        free(e);
    }
}

struct ssl_st *h2_tls_new(struct ssl_ctx_st *ctx, const char *host, bool insecure, char *err, size_t errlen)
{
    SSL *ssl = SSL_new(ctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    if (!ssl || !rbio || !wbio) {
        ssl_error_text("SSL_new", err, errlen);
        goto fail;
    }
    SSL_set_bio(ssl, rbio, wbio); /* ssl owns them now */
    rbio = wbio = NULL;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1) {
        ssl_error_text("SNI", err, errlen);
        goto fail;
    }
    if (!insecure) {
        X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, host) : X509_VERIFY_PARAM_set1_host(p, host, 0);
        if (ok != 1) {
            ssl_error_text("host check", err, errlen);
            goto fail;
        }
    }
    SSL_set_connect_state(ssl);
    return ssl;
fail:
    BIO_free(rbio);
    BIO_free(wbio);
    SSL_free(ssl);
    return NULL;
}

void h2_tls_free(struct ssl_st *ssl) { SSL_free(ssl); }

int h2_tls_handshake(struct ssl_st *ssl, char *err, size_t errlen)
{
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return 1;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        ERR_clear_error();
        snprintf(err, errlen, "TLS certificate verification failed: %s", X509_verify_cert_error_string(v));
    } else {
        ssl_error_text("TLS handshake failed", err, errlen);
    }
    return -1;
}

bool h2_tls_alpn_is_h2(struct ssl_st *ssl)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

int h2_tls_feed(struct ssl_st *ssl, const char *p, size_t n)
{
    return BIO_write(SSL_get_rbio(ssl), p, (int)n) == (int)n ? 0 : -1;
}

long h2_tls_read(struct ssl_st *ssl, char *out, size_t cap)
{
    int n = SSL_read(ssl, out, (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_clear_error();
    return -1;
}

int h2_tls_write(struct ssl_st *ssl, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    return SSL_write(ssl, p, (int)n) == (int)n ? 0 : -1; /* a memory BIO never pushes back */
}

int h2_tls_drain(struct ssl_st *ssl, buf_t *out)
{
    BIO *w = SSL_get_wbio(ssl);
    size_t pending;
    while ((pending = BIO_ctrl_pending(w)) > 0) {
        if (buf_reserve(out, pending) < 0)
            return -1;
        int n = BIO_read(w, out->data + out->len, (int)pending);
        if (n <= 0)
            return -1;
        out->len += (size_t)n;
        out->data[out->len] = '\0';
    }
    return 0;
}
