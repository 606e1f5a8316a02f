/* test_tls.c — tls/ client sessions against an in-process OpenSSL server over memory BIOs, with a CA
 * and a leaf certificate (localhost, 127.0.0.1) made in the test: verification with the CA file,
 * refusals (wrong CA, system store, host name and IP mismatch, a peer that is not TLS), insecure mode,
 * SNI, ALPN, data both ways, the peer's close, bad settings and failed allocations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/base.h"
#include "tls/tls.h"

#define ERR_LEN 256

/* The certificates of every test, made once. */
typedef struct {
    char dir[64];
    char ca_file[128], other_ca_file[128], garbage_file[128];
    EVP_PKEY *ca_key, *other_key, *leaf_key;
    X509 *ca, *other, *leaf;
} certs_t;

static certs_t g;

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* A certificate for key named cn, signed by issuer (self-signed when NULL); a CA, or a server
 * certificate with the subjectAltName san. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    if (san) {
        add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
        add_ext(x, &v3, NID_subject_alt_name, san);
    } else {
        add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
        add_ext(x, &v3, NID_subject_key_identifier, "hash");
    }
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    assert_int_equal(fclose(f), 0);
}

static int setup_certs(void **state)
{
    snprintf(g.dir, sizeof g.dir, "/tmp/test_tls_XXXXXX");
    if (!mkdtemp(g.dir))
        return -1;
    snprintf(g.ca_file, sizeof g.ca_file, "%s/ca.pem", g.dir);
    snprintf(g.other_ca_file, sizeof g.other_ca_file, "%s/other-ca.pem", g.dir);
    snprintf(g.garbage_file, sizeof g.garbage_file, "%s/garbage.pem", g.dir);
    g.ca_key = EVP_EC_gen("P-256");
    g.other_key = EVP_EC_gen("P-256");
    g.leaf_key = EVP_EC_gen("P-256");
    assert_true(g.ca_key && g.other_key && g.leaf_key);
    g.ca = make_cert(g.ca_key, "parley test CA", NULL, g.ca_key, NULL);
    g.other = make_cert(g.other_key, "unrelated test CA", NULL, g.other_key, NULL);
    g.leaf = make_cert(g.leaf_key, "localhost", g.ca, g.ca_key, "DNS:localhost,IP:127.0.0.1");
    write_pem(g.ca_file, g.ca);
    write_pem(g.other_ca_file, g.other);
    FILE *f = fopen(g.garbage_file, "w");
    assert_non_null(f);
    fputs("not a certificate\n", f);
    fclose(f);
    return 0;
}

static int teardown_certs(void **state)
{
    unlink(g.ca_file);
    unlink(g.other_ca_file);
    unlink(g.garbage_file);
    rmdir(g.dir);
    X509_free(g.ca);
    X509_free(g.other);
    X509_free(g.leaf);
    EVP_PKEY_free(g.ca_key);
    EVP_PKEY_free(g.other_key);
    EVP_PKEY_free(g.leaf_key);
    return 0;
}

/* ---- the server side: plain OpenSSL over memory BIOs ---------------------------------------- */

static int select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                     unsigned int inlen, void *arg)
{
    for (unsigned int i = 0; i + 1 <= inlen && i + 1 + in[i] <= inlen; i += 1u + in[i])
        if (in[i] == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
    return SSL_TLSEXT_ERR_NOACK;
}

/* A server session presenting the leaf certificate; with ALPN h2 when alpn. */
static SSL *server_new(bool alpn)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, g.leaf), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, g.leaf_key), 1);
    if (alpn)
        SSL_CTX_set_alpn_select_cb(ctx, select_h2, NULL);
    SSL *s = SSL_new(ctx);
    SSL_CTX_free(ctx); /* s holds its reference */
    assert_non_null(s);
    SSL_set_bio(s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_accept_state(s);
    return s;
}

/* Moves the client's waiting ciphertext to the server. */
static void to_server(tls_session_t *c, SSL *srv)
{
    char chunk[4096];
    size_t n;
    while ((n = tls_session_drain(c, chunk, sizeof chunk)) > 0)
        assert_int_equal(BIO_write(SSL_get_rbio(srv), chunk, (int)n), (int)n);
    assert_int_equal(tls_session_pending(c), 0);
}

/* Moves the server's waiting ciphertext to the client. */
static void to_client(SSL *srv, tls_session_t *c)
{
    char chunk[4096];
    int n;
    while ((n = BIO_read(SSL_get_wbio(srv), chunk, sizeof chunk)) > 0)
        assert_int_equal(tls_session_feed(c, chunk, (size_t)n), 0);
}

/* Runs the handshake to its end: 1 both sides done, -1 the client refused (err filled). */
static int handshake(tls_session_t *c, SSL *srv, char *err, size_t errlen)
{
    for (int round = 0; round < 10; round++) {
        int rc = tls_session_handshake(c, err, errlen);
        to_server(c, srv);
        if (rc < 0)
            return -1;
        SSL_do_handshake(srv);
        ERR_clear_error();
        to_client(srv, c);
        if (rc == 1 && SSL_is_init_finished(srv))
            return 1;
    }
    return 0;
}

/* A context with these settings (asserted to be made). */
static tls_ctx_t *ctx_new(const char *ca_file, bool insecure, const char *alpn)
{
    char err[ERR_LEN] = "";
    tls_ctx_options_t o = {.ca_file = ca_file, .insecure = insecure, .alpn = alpn};
    tls_ctx_t *c = tls_ctx_new(&o, err, sizeof err);
    if (!c)
        printf("tls_ctx_new: %s\n", err);
    assert_non_null(c);
    return c;
}

/* A client (its context and session) connected to a server of the test. */
typedef struct {
    tls_ctx_t *ctx;
    tls_session_t *s;
    SSL *srv;
    char err[ERR_LEN];
} pair_t;

/* The client (ca_file, insecure, alpn) connects to host on a server with ALPN h2 or not; the
 * handshake's result (p->err says why it failed). */
static int pair_connect(pair_t *p, const char *ca_file, bool insecure, const char *alpn, bool server_h2,
                        const char *host)
{
    memset(p, 0, sizeof *p);
    p->ctx = ctx_new(ca_file, insecure, alpn);
    p->srv = server_new(server_h2);
    p->s = tls_session_new(p->ctx, host, p->err, sizeof p->err);
    assert_non_null(p->s);
    return handshake(p->s, p->srv, p->err, sizeof p->err);
}

static void pair_free(pair_t *p)
{
    tls_session_free(p->s);
    SSL_free(p->srv);
    tls_ctx_free(p->ctx);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void verified_by_name_with_sni_and_data_both_ways(void **state)
{
    pair_t p;
    assert_int_equal(pair_connect(&p, g.ca_file, false, NULL, false, "localhost"), 1);
    assert_string_equal(SSL_get_servername(p.srv, TLSEXT_NAMETYPE_host_name), "localhost");
    assert_true(SSL_version(p.srv) >= TLS1_2_VERSION);

    assert_int_equal(tls_session_write(p.s, "PING\r\n", 6, p.err, sizeof p.err), 0);
    assert_true(tls_session_pending(p.s) > 6); /* encrypted, with a record header */
    to_server(p.s, p.srv);
    char got[16] = "";
    assert_int_equal(SSL_read(p.srv, got, sizeof got), 6);
    assert_memory_equal(got, "PING\r\n", 6);

    size_t n = 100 * 1000; /* several records */
    char *big = malloc(n), *back = calloc(1, n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    assert_int_equal(SSL_write(p.srv, big, (int)n), (int)n);
    to_client(p.srv, p.s);
    size_t have = 0;
    long r;
    while ((r = tls_session_read(p.s, back + have, n + 1 - have, p.err, sizeof p.err)) > 0)
        have += (size_t)r;
    assert_int_equal(r, 0); /* all read: more input is needed */
    assert_int_equal(have, n);
    assert_memory_equal(back, big, n);
    free(big);
    free(back);
    pair_free(&p);
}

static void ip_san_accepted_without_sni(void **state)
{
    pair_t p;
    assert_int_equal(pair_connect(&p, g.ca_file, false, NULL, false, "127.0.0.1"), 1);
    assert_null(SSL_get_servername(p.srv, TLSEXT_NAMETYPE_host_name)); /* no SNI for an IP literal */
    pair_free(&p);
}

/* The client with ca_file refuses the server as host: "tls handshake failed: certificate verify
 * failed: <want>". */
static void assert_refused(const char *ca_file, const char *host, const char *want)
{
    pair_t p;
    assert_int_equal(pair_connect(&p, ca_file, false, NULL, false, host), -1);
    if (!strstr(p.err, want))
        printf("%s: %s\n", host, p.err);
    assert_non_null(strstr(p.err, "tls handshake failed: certificate verify failed: "));
    assert_non_null(strstr(p.err, want));
    assert_int_equal(ERR_peek_error(), 0); /* the queue is left empty */
    pair_free(&p);
}

static void wrong_ca_refused(void **state)
{
    assert_refused(g.other_ca_file, "localhost", "unable to get local issuer certificate");
}

static void system_store_refuses_our_ca(void **state)
{
    assert_refused(NULL, "localhost", "unable to get local issuer certificate");
    assert_refused("", "localhost", "unable to get local issuer certificate"); /* "" is the system store */
}

static void host_name_and_ip_mismatch_refused(void **state)
{
    assert_refused(g.ca_file, "other.example", "hostname mismatch");
    assert_refused(g.ca_file, "127.0.0.2", "IP address mismatch");
    assert_refused(g.ca_file, "::1", "IP address mismatch");
}

static void insecure_accepts_any_certificate(void **state)
{
    pair_t p; /* the CA file is not read when insecure */
    assert_int_equal(pair_connect(&p, "/nonexistent/ca.pem", true, NULL, false, "other.example"), 1);
    assert_string_equal(SSL_get_servername(p.srv, TLSEXT_NAMETYPE_host_name), "other.example");
    pair_free(&p);
}

/* Whether ALPN agreed on h2 with the client offering alpn and the server supporting h2 or not. */
static bool alpn_h2(const char *alpn, bool server_h2)
{
    pair_t p;
    assert_int_equal(pair_connect(&p, g.ca_file, false, alpn, server_h2, "localhost"), 1);
    bool h2 = tls_session_alpn_is(p.s, "h2");
    assert_false(tls_session_alpn_is(p.s, "h"));
    pair_free(&p);
    return h2;
}

static void alpn_h2_negotiated_or_not(void **state)
{
    assert_true(alpn_h2("h2", true));
    assert_true(alpn_h2("http/1.1,h2", true));
    assert_false(alpn_h2("h2", false));      /* the server knows no ALPN */
    assert_false(alpn_h2(NULL, true));       /* the client offers none */
    assert_false(alpn_h2("http/1.1", true)); /* nothing in common */
}

static void bad_settings_refused(void **state)
{
    char err[ERR_LEN], long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    const char *bad_alpn[] = {"", "h2,", ",h2", "h2,,http/1.1", long_name};
    for (size_t i = 0; i < sizeof bad_alpn / sizeof bad_alpn[0]; i++) {
        tls_ctx_options_t o = {.ca_file = g.ca_file, .alpn = bad_alpn[i]};
        err[0] = '\0';
        assert_null(tls_ctx_new(&o, err, sizeof err));
        assert_string_equal(err, "bad ALPN protocol list");
    }

    tls_ctx_options_t o = {.ca_file = "/nonexistent/ca.pem"};
    assert_null(tls_ctx_new(&o, err, sizeof err));
    assert_true(strncmp(err, "ca_file /nonexistent/ca.pem: ", 29) == 0);
    o.ca_setting = "redis.ca_file";
    assert_null(tls_ctx_new(&o, err, sizeof err));
    assert_true(strncmp(err, "redis.ca_file /nonexistent/ca.pem: ", 35) == 0);
    o.ca_file = g.garbage_file;
    assert_null(tls_ctx_new(&o, err, sizeof err));
    assert_non_null(strstr(err, "redis.ca_file "));
    assert_non_null(strstr(err, "garbage.pem: "));
    assert_int_equal(ERR_peek_error(), 0);

    tls_ctx_t *ctx = ctx_new(g.ca_file, false, NULL);
    assert_null(tls_session_new(ctx, long_name, err, sizeof err)); /* longer than any host name */
    assert_non_null(strstr(err, "TLS server name"));
    tls_ctx_free(ctx);
}

static void peer_close_and_garbage(void **state)
{
    pair_t p;
    char buf[64];
    assert_int_equal(pair_connect(&p, g.ca_file, false, NULL, false, "localhost"), 1);
    tls_ctx_free(p.ctx); /* the session keeps what it needs */
    p.ctx = NULL;
    SSL_shutdown(p.srv);
    to_client(p.srv, p.s);
    assert_int_equal(tls_session_read(p.s, buf, sizeof buf, p.err, sizeof p.err), TLS_CLOSED);
    pair_free(&p);

    assert_int_equal(pair_connect(&p, g.ca_file, false, NULL, false, "localhost"), 1);
    static const char junk[] = "\x17\x03\x03\x00\x10garbage-garbage!";
    assert_int_equal(tls_session_feed(p.s, junk, sizeof junk - 1), 0);
    assert_int_equal(tls_session_read(p.s, buf, sizeof buf, p.err, sizeof p.err), -1);
    assert_true(strncmp(p.err, "tls read failed: ", 17) == 0);
    assert_null(strstr(p.err, "certificate"));
    assert_null(strstr(p.err, "garbage")); /* never the bytes themselves */
    assert_int_equal(ERR_peek_error(), 0);
    pair_free(&p);
}

static void not_a_tls_peer(void **state)
{
    tls_ctx_t *ctx = ctx_new(g.ca_file, false, NULL);
    char err[ERR_LEN] = "";
    tls_session_t *s = tls_session_new(ctx, "localhost", err, sizeof err);
    assert_non_null(s);
    assert_int_equal(tls_session_handshake(s, err, sizeof err), 0); /* the ClientHello is out */
    assert_true(tls_session_pending(s) > 0);
    static const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(tls_session_feed(s, reply, sizeof reply - 1), 0);
    assert_int_equal(tls_session_handshake(s, err, sizeof err), -1);
    assert_true(strncmp(err, "tls handshake failed: ", 22) == 0);
    assert_null(strstr(err, "certificate verify failed"));
    assert_true(strlen(err) > 22);
    tls_session_free(s);
    tls_ctx_free(ctx);
}

static void failed_allocations_are_reported(void **state)
{
    char err[ERR_LEN] = "";
    tls_ctx_options_t o = {.ca_file = g.ca_file};
    base_alloc_fail_after(1);
    assert_null(tls_ctx_new(&o, err, sizeof err));
    base_alloc_fail_after(0);
    assert_string_equal(err, "out of memory");
    tls_ctx_t *ctx = ctx_new(g.ca_file, false, NULL);
    base_alloc_fail_after(1);
    assert_null(tls_session_new(ctx, "localhost", err, sizeof err));
    base_alloc_fail_after(0);
    assert_non_null(strstr(err, "cannot create a TLS session"));
    tls_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verified_by_name_with_sni_and_data_both_ways),
        cmocka_unit_test(ip_san_accepted_without_sni),
        cmocka_unit_test(wrong_ca_refused),
        cmocka_unit_test(system_store_refuses_our_ca),
        cmocka_unit_test(host_name_and_ip_mismatch_refused),
        cmocka_unit_test(insecure_accepts_any_certificate),
        cmocka_unit_test(alpn_h2_negotiated_or_not),
        cmocka_unit_test(bad_settings_refused),
        cmocka_unit_test(peer_close_and_garbage),
        cmocka_unit_test(not_a_tls_peer),
        cmocka_unit_test(failed_allocations_are_reported),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
