/* llm.c — what both providers share: the request's URL and headers, param checks, response
 * dispatch, error bodies and their retry class, finish reasons, token estimate and cost. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm/llm_int.h"

const llm_provider_t *llm_provider_of(provider_type_t t)
{
    return t == PROVIDER_ANTHROPIC ? &llm_anthropic : &llm_openai;
}

/* ---- Request ---------------------------------------------------------------------------------- */

int llm_headers_add(llm_headers_t *h, const char *name, const char *value)
{
    buf_t b;
    buf_init(&b, 0);
    if (buf_printf(&b, "%s: %s", name, value) < 0) {
        buf_free(&b);
        return -1;
    }
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->n; i++) {
        if (strncasecmp(h->v[i], name, nl) == 0 && h->v[i][nl] == ':') {
            free(h->v[i]);
            h->v[i] = buf_steal(&b, NULL);
            return 0;
        }
    }
    char **v = base_realloc(h->v, (h->n + 1) * sizeof *v);
    if (!v) {
        buf_free(&b);
        return -1;
    }
    h->v = v;
    h->v[h->n++] = buf_steal(&b, NULL);
    return 0;
}

int llm_check_role(const chat_message_t *m, char *err, size_t errlen)
{
    if (m->role && (!strcmp(m->role, "system") || !strcmp(m->role, "user") || !strcmp(m->role, "assistant")))
        return 0;
    snprintf(err, errlen, "message role must be system, user or assistant");
    return -1;
}

/* A header name is an HTTP token. */
static bool header_name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *c = name; *c; c++)
        if (*c <= ' ' || *c == ':' || *c == 0x7f)
            return false;
    return true;
}

static int build_headers(llm_headers_t *h, const config_provider_t *p, bool stream, char *err, size_t errlen)
{
    const char *name = p->name ? p->name : "?";
    if (llm_provider_of(p->type)->auth_headers(h, p) < 0 ||
        llm_headers_add(h, "Content-Type", "application/json") < 0 ||
        llm_headers_add(h, "Accept", stream ? "text/event-stream" : "application/json") < 0)
        goto nomem;
    for (size_t i = 0; i < p->n_headers; i++) {
        if (!header_name_ok(p->headers[i].key) || !p->headers[i].value) {
            snprintf(err, errlen, "provider %s: header %zu has an invalid name or no value", name, i + 1);
            return -1;
        }
        if (llm_headers_add(h, p->headers[i].key, p->headers[i].value) < 0)
            goto nomem;
    }
    for (size_t i = 0; i < h->n; i++) { /* no header injection; name the header, never show its value */
        if (strpbrk(h->v[i], "\r\n")) {
            snprintf(err, errlen, "provider %s: the value of header %.*s has a line break", name,
                     (int)strcspn(h->v[i], ":"), h->v[i]);
            return -1;
        }
    }
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int check_params(const llm_params_t *params, char *err, size_t errlen)
{
    if (params->has_temperature && !isfinite(params->temperature)) {
        snprintf(err, errlen, "temperature is not a finite number");
        return -1;
    }
    if (params->has_top_p && !isfinite(params->top_p)) {
        snprintf(err, errlen, "top_p is not a finite number");
        return -1;
    }
    if (params->has_max_tokens && params->max_tokens < 1) {
        snprintf(err, errlen, "max_tokens must be at least 1");
        return -1;
    }
    for (size_t i = 0; i < params->n_stop; i++) {
        if (!params->stop || !params->stop[i]) {
            snprintf(err, errlen, "stop sequence %zu is missing", i + 1);
            return -1;
        }
    }
    return 0;
}

int llm_endpoint_build(const config_provider_t *p, bool stream, llm_endpoint_t *out, char *err, size_t errlen)
{
    const llm_provider_t *prov = llm_provider_of(p->type);
    llm_headers_t h = {0};
    buf_t url;
    buf_init(&url, 0);
    memset(out, 0, sizeof *out);
    if (!p->base_url || !*p->base_url || !p->model || !*p->model) {
        snprintf(err, errlen, "provider %s: base_url and model are required", p->name ? p->name : "?");
        goto fail;
    }
    if (build_headers(&h, p, stream, err, errlen) < 0)
        goto fail;
    size_t base_len = strlen(p->base_url);
    while (base_len > 0 && p->base_url[base_len - 1] == '/')
        base_len--;
    if (buf_append(&url, p->base_url, base_len) < 0 || buf_append_str(&url, prov->path) < 0 ||
        !(out->url = buf_steal(&url, NULL))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    out->headers = h.v;
    out->n_headers = h.n;
    return 0;
fail:
    for (size_t i = 0; i < h.n; i++)
        free(h.v[i]);
    free(h.v);
    buf_free(&url);
    return -1;
}

void llm_endpoint_free(llm_endpoint_t *e)
{
    for (size_t i = 0; i < e->n_headers; i++)
        free(e->headers[i]);
    free(e->headers);
    free(e->url);
    memset(e, 0, sizeof *e);
}

int llm_request_build_on(const llm_endpoint_t *ep, const config_provider_t *p, const chat_message_t *msgs,
                         size_t n, const llm_params_t *params, bool stream, llm_request_t *out, char *err,
                         size_t errlen)
{
    static const llm_params_t no_params;
    buf_t body;
    buf_init(&body, 0);
    memset(out, 0, sizeof *out);
    if (!params)
        params = &no_params;
    if (n == 0) {
        snprintf(err, errlen, "no messages");
        return -1;
    }
    size_t estimate = 256; /* the body's size when nothing needs escaping: one allocation, no regrowth */
    for (size_t i = 0; i < n; i++)
        estimate += msgs[i].content_len + 48;
    if (buf_reserve(&body, estimate) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (check_params(params, err, errlen) < 0 ||
        llm_provider_of(p->type)->body(&body, p, msgs, n, params, stream, &out->dropped_params, err, errlen) <
            0) {
        buf_free(&body);
        return -1;
    }
    if (!(out->body = buf_steal(&body, &out->body_len))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    out->url = ep->url;
    out->headers = ep->headers;
    out->n_headers = ep->n_headers;
    out->borrowed = true;
    return 0;
}

int llm_request_build(const config_provider_t *p, const chat_message_t *msgs, size_t n,
                      const llm_params_t *params, bool stream, llm_request_t *out, char *err, size_t errlen)
{
    llm_endpoint_t ep;
    memset(out, 0, sizeof *out);
    if (llm_endpoint_build(p, stream, &ep, err, errlen) < 0)
        return -1;
    if (llm_request_build_on(&ep, p, msgs, n, params, stream, out, err, errlen) < 0) {
        llm_endpoint_free(&ep);
        return -1;
    }
    out->borrowed = false; /* the request owns ep's URL and headers from now on */
    return 0;
}

void llm_request_free(llm_request_t *r)
{
    if (!r->borrowed) {
        for (size_t i = 0; i < r->n_headers; i++)
            free(r->headers[i]);
        free(r->headers);
        free(r->url);
    }
    free(r->body);
    memset(r, 0, sizeof *r);
}

int64_t llm_estimate_prompt_tokens(const chat_message_t *msgs, size_t n)
{
    int64_t t = 3;
    for (size_t i = 0; i < n; i++)
        t += (int64_t)((msgs[i].content_len + 3) / 4) + 4;
    return t;
}

/* ---- Result ----------------------------------------------------------------------------------- */

void llm_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--; /* src[n] is the first byte cut off: do not split its sequence */
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int llm_fail(llm_result_t *out, llm_err_kind_t kind, const char *type, const char *msg)
{
    out->error.kind = kind;
    llm_copy_str(out->error.type, sizeof out->error.type, type);
    llm_copy_str(out->error.message, sizeof out->error.message, msg);
    if (kind == LLM_ERR_PROVIDER)
        out->error.retry = llm_error_classify(out->error.http_status, type);
    else
        out->error.retry = kind == LLM_ERR_CUT || kind == LLM_ERR_NOMEM ? LLM_RETRY_YES : LLM_RETRY_NO;
    free(out->text);
    out->text = NULL;
    out->text_len = 0;
    return -1;
}

void llm_set_finish(llm_result_t *out, const char *raw)
{
    static const struct {
        const char *raw, *norm;
    } map[] = {
        {"end_turn", "stop"},
        {"stop_sequence", "stop"},
        {"max_tokens", "length"},
        {"tool_use", "tool_calls"},
        {"refusal", "content_filter"},
        {"function_call", "tool_calls"},
        {"model_context_window_exceeded", "length"},
    };
    const char *norm = raw;
    for (size_t i = 0; i < BASE_ARRAY_LEN(map); i++)
        if (!strcmp(raw, map[i].raw))
            norm = map[i].norm;
    llm_copy_str(out->finish_reason_raw, sizeof out->finish_reason_raw, raw);
    llm_copy_str(out->finish_reason, sizeof out->finish_reason, norm);
}

bool llm_json_copy(json_value_t v, char *dst, size_t cap)
{
    if (v.type != JSON_STRING)
        return false;
    size_t n = json_str_prefix(v, dst, cap);
    if (n == cap) { /* as llm_copy_str: do not split the sequence of the first byte cut off */
        n = cap - 1;
        while (n > 0 && ((unsigned char)dst[n] & 0xC0) == 0x80)
            n--;
    }
    dst[n] = '\0';
    return true;
}

bool llm_json_str(json_value_t obj, const char *key, char *dst, size_t cap)
{
    return llm_json_copy(json_get(obj, key), dst, cap);
}

bool llm_json_is(json_value_t obj, const char *key, const char *lit)
{
    char s[32];
    return llm_json_str(obj, key, s, sizeof s) && !strcmp(s, lit);
}

int llm_json_append(buf_t *b, json_value_t s)
{
    if (s.type != JSON_STRING)
        return 0;
    if (buf_reserve(b, s.len) < 0)
        return -1;
    char *at = b->data + b->len;
    size_t n = json_str_decode(s, at);
    const char *nul = memchr(at, '\0', n);
    b->len += nul ? (size_t)(nul - at) : n;
    b->data[b->len] = '\0';
    return 0;
}

bool llm_json_object(const char *data, size_t len, json_doc_t *doc, json_value_t *root,
                     const char *const *keys, size_t n, json_value_t *member)
{
    if (data && len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) {
        data += 3;
        len -= 3;
    }
    return json_parse_get(data, len, doc, root, keys, n, member, NULL) == 0 && root->type == JSON_OBJECT;
}

int64_t llm_json_count(json_value_t v)
{
    double d;
    if (json_double(v, &d) < 0 || !(d >= 0 && d <= 1e15))
        return -1;
    return (int64_t)d;
}

int llm_parse_error(json_value_t e, int http_status, llm_result_t *out)
{
    char type[sizeof out->error.type], msg[sizeof out->error.message];
    if (e.type == JSON_NONE || e.type == JSON_NULL)
        return 0;
    out->error.http_status = http_status;
    if (llm_json_copy(e, msg, sizeof msg))
        return llm_fail(out, LLM_ERR_PROVIDER, "error", msg);
    bool has_type = llm_json_str(e, "type", type, sizeof type);
    bool has_msg = llm_json_str(e, "message", msg, sizeof msg);
    json_value_t code = json_get(e, "code");
    double num;
    if (!llm_json_copy(code, out->error.code, sizeof out->error.code) && json_double(code, &num) == 0)
        snprintf(out->error.code, sizeof out->error.code, "%.0f", num);
    return llm_fail(out, LLM_ERR_PROVIDER, has_type ? type : "error", has_msg ? msg : "provider error");
}

/* A non-2xx answer without a readable error body: name the status, show the body's printable start. */
static int fail_http(int http_status, const char *body, size_t len, llm_result_t *out)
{
    char type[24], msg[160];
    size_t m = 0;
    for (size_t i = 0; i < len && m + 1 < sizeof msg; i++)
        msg[m++] = body[i] >= ' ' && body[i] < 0x7f ? body[i] : ' ';
    msg[m] = '\0';
    snprintf(type, sizeof type, "http_%d", http_status);
    out->error.http_status = http_status;
    return llm_fail(out, LLM_ERR_PROVIDER, type, m ? msg : "empty body");
}

int llm_response_parse(provider_type_t t, int http_status, const char *body, size_t len, llm_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->error.http_status = http_status;
    bool ok_status = http_status >= 200 && http_status < 300;
    const llm_provider_t *prov = llm_provider_of(t);
    json_doc_t doc;
    json_value_t root, member[LLM_ROOT_KEYS];
    if (!llm_json_object(body, len, &doc, &root, prov->answer_keys, prov->n_answer_keys, member))
        return ok_status ? llm_fail(out, LLM_ERR_MALFORMED, "malformed_response",
                                    "response body is not a JSON object")
                         : fail_http(http_status, body ? body : "", body ? len : 0, out);
    if (llm_parse_error(member[0], http_status, out) < 0)
        return -1;
    if (!ok_status)
        return fail_http(http_status, body, len, out);
    return prov->parse(member, out);
}

void llm_result_free(llm_result_t *r)
{
    free(r->text);
    r->text = NULL;
    r->text_len = 0;
}

llm_retry_t llm_error_classify(int http_status, const char *type)
{
    static const char *const permanent[] = {
        "invalid_request_error", "authentication_error", "permission_error",   "not_found_error",
        "request_too_large",     "billing_error",        "insufficient_quota", "invalid_api_key",
    };
    if (http_status == 408 || http_status == 409 || http_status == 429 || http_status >= 500)
        return LLM_RETRY_YES;
    if (http_status >= 300 || (http_status > 0 && http_status < 200))
        return LLM_RETRY_NO;
    for (size_t i = 0; type && i < BASE_ARRAY_LEN(permanent); i++)
        if (!strcmp(type, permanent[i]))
            return LLM_RETRY_NO;
    return LLM_RETRY_YES;
}

const char *llm_err_kind_name(llm_err_kind_t k)
{
    switch (k) {
    case LLM_ERR_NONE:
        return "none";
    case LLM_ERR_PROVIDER:
        return "provider_error";
    case LLM_ERR_MALFORMED:
        return "malformed_response";
    case LLM_ERR_CUT:
        return "stream_cut";
    case LLM_ERR_LIMIT:
        return "sse_limit";
    case LLM_ERR_NOMEM:
        return "out_of_memory";
    }
    return "unknown";
}

/* ---- Cost ------------------------------------------------------------------------------------- */

int llm_cost_usd(const config_provider_t *p, const llm_usage_t *u, double *out)
{
    if (!p->price_set || !u->has)
        return -1;
    *out = ((double)u->prompt_tokens * p->price_input_per_mtok +
            (double)u->completion_tokens * p->price_output_per_mtok) /
           1e6;
    return 0;
}
