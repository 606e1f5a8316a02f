/* h2_tls.c — TLS settings of the native HTTP/2 client: one tls/ context offering only "h2" by ALPN per
 * (ca_file, tls_insecure), made on first use and kept for the life of the client, and the hand-off of a
 * session's ciphertext to a connection's output buffer. */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct h2_tls_ctx {
    struct h2_tls_ctx *next;
    char *ca_file; /* NULL = system store */
    bool insecure;
    tls_ctx_t *tls;
};

static bool same_ca(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

tls_ctx_t *h2_tls_ctx_get(h2_tls_ctx_t **cache, const char *ca_file, bool insecure, char *err, size_t errlen)
{
    for (h2_tls_ctx_t *e = *cache; e; e = e->next)
        if (e->insecure == insecure && same_ca(e->ca_file, ca_file))
            return e->tls;
    h2_tls_ctx_t *e = base_calloc(1, sizeof *e);
    if (!e || (ca_file && !(e->ca_file = base_strdup(ca_file)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    e->insecure = insecure;
    tls_ctx_options_t o = {.ca_file = ca_file, .insecure = insecure, .alpn = "h2"};
    if (!(e->tls = tls_ctx_new(&o, err, errlen)))
        goto fail;
    e->next = *cache;
    *cache = e;
    return e->tls;
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
        tls_ctx_free(e->tls);
        free(e->ca_file);
        free(e);
    }
}

int h2_tls_drain(tls_session_t *s, buf_t *out)
{
    size_t pending;
    while ((pending = tls_session_pending(s)) > 0) {
        if (buf_reserve(out, pending) < 0)
            return -1;
        out->len += tls_session_drain(s, out->data + out->len, pending);
        out->data[out->len] = '\0';
    }
    return 0;
}
