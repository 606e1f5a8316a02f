/* anthropic.c — the Anthropic Messages adapter: x-api-key and anthropic-version headers, the body
 * (top-level system, required max_tokens, strict user/assistant alternation), the message answer
 * and the message_start … message_stop event stream. */
#include <string.h>

#include "llm/llm_int.h"

#define ANTHROPIC_VERSION_DEFAULT    "2023-06-01"
#define ANTHROPIC_MAX_TOKENS_DEFAULT 1024

enum { U_INPUT, U_CACHE_CREATION, U_CACHE_READ, U_OUTPUT };

static int anthropic_auth(llm_headers_t *h, const config_provider_t *p)
{
    if (secret_is_set(&p->api_key) && llm_headers_add(h, "x-api-key", secret_reveal(&p->api_key)) < 0)
        return -1;
    const char *v =
        p->anthropic_version && *p->anthropic_version ? p->anthropic_version : ANTHROPIC_VERSION_DEFAULT;
    return llm_headers_add(h, "anthropic-version", v);
}

static bool is_system(const chat_message_t *m) { return !strcmp(m->role, "system"); }

static int content_bytes(buf_t *b, const chat_message_t *m)
{
    if (m->content_json)
        return buf_append(b, m->content_json, m->content_json_len);
    return m->content ? llm_jw_str_bytes(b, m->content, m->content_len) : 0;
}

/* "system": every system message, joined by "\n\n"; nothing when there is none. */
static int write_system(buf_t *b, const chat_message_t *msgs, size_t n)
{
    bool open = false;
    for (size_t i = 0; i < n; i++) {
        if (!is_system(&msgs[i]))
            continue;
        if (!open && (llm_jw_key(b, "system") < 0 || llm_jw_str_open(b) < 0))
            return -1;
        if (open && llm_jw_str_bytes(b, "\n\n", 2) < 0)
            return -1;
        open = true;
        if (content_bytes(b, &msgs[i]) < 0)
            return -1;
    }
    return open ? llm_jw_str_close(b) : 0;
}

/* "messages": the user and assistant turns, consecutive turns of one role merged with "\n\n".
 * Sets *count to the number of messages written. */
static int write_messages(buf_t *b, const chat_message_t *msgs, size_t n, size_t *count)
{
    const char *prev = NULL;
    *count = 0;
    if (llm_jw_key(b, "messages") < 0 || buf_append(b, "[", 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const chat_message_t *m = &msgs[i];
        if (is_system(m))
            continue;
        if (prev && !strcmp(prev, m->role)) {
            if (llm_jw_str_bytes(b, "\n\n", 2) < 0 || content_bytes(b, m) < 0)
                return -1;
            continue;
        }
        if (prev && (llm_jw_str_close(b) < 0 || buf_append(b, "}", 1) < 0))
            return -1;
        if (llm_jw_key(b, NULL) < 0 || buf_append(b, "{", 1) < 0 ||
            llm_jw_string(b, "role", m->role, strlen(m->role)) < 0 || llm_jw_key(b, "content") < 0 ||
            llm_jw_str_open(b) < 0 || content_bytes(b, m) < 0)
            return -1;
        prev = m->role;
        (*count)++;
    }
    if (prev && (llm_jw_str_close(b) < 0 || buf_append(b, "}", 1) < 0))
        return -1;
    return buf_append(b, "]", 1);
}

static int anthropic_body(buf_t *b, const config_provider_t *p, const chat_message_t *msgs, size_t n,
                          const llm_params_t *params, bool stream, unsigned *dropped, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (llm_check_role(&msgs[i], err, errlen) < 0)
            return -1;
    int64_t max_tokens = params->has_max_tokens      ? params->max_tokens
                         : p->max_tokens_default > 0 ? p->max_tokens_default
                                                     : ANTHROPIC_MAX_TOKENS_DEFAULT;
    size_t count;
    if (buf_append(b, "{", 1) < 0 || llm_jw_string(b, "model", p->model, strlen(p->model)) < 0 ||
        llm_jw_int(b, "max_tokens", max_tokens) < 0 || write_system(b, msgs, n) < 0 ||
        write_messages(b, msgs, n, &count) < 0 || llm_jw_common_params(b, params, "stop_sequences") < 0 ||
        llm_jw_bool(b, "stream", stream) < 0 || buf_append(b, "}", 1) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (count == 0) {
        snprintf(err, errlen, "anthropic needs at least one user or assistant message");
        return -1;
    }
    *dropped = params->has_seed ? LLM_PARAM_SEED : 0;
    return 0;
}

/* Reads the counts present in a usage object into c[U_*]; true when it held any. */
static bool anthropic_counts(const cJSON *u, int64_t c[4])
{
    static const char *const keys[4] = {"input_tokens", "cache_creation_input_tokens",
                                        "cache_read_input_tokens", "output_tokens"};
    bool any = false;
    for (int i = 0; i < 4; i++) {
        int64_t v = llm_json_tokens(u, keys[i]);
        if (v >= 0) {
            c[i] = v;
            any = true;
        }
    }
    return any;
}

static void anthropic_usage(const cJSON *u, int64_t c[4], llm_usage_t *out)
{
    if (!anthropic_counts(u, c))
        return;
    out->has = true;
    out->prompt_tokens = c[U_INPUT] + c[U_CACHE_CREATION] + c[U_CACHE_READ];
    out->completion_tokens = c[U_OUTPUT];
    out->total_tokens = out->prompt_tokens + out->completion_tokens;
}

static void anthropic_model(const cJSON *msg, llm_result_t *out)
{
    const char *model = llm_json_str(msg, "model");
    if (model)
        llm_copy_str(out->model, sizeof out->model, model);
}

static int anthropic_parse(const cJSON *root, llm_result_t *out)
{
    const char *type = llm_json_str(root, "type");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    if ((type && strcmp(type, "message")) || !cJSON_IsArray(content))
        return llm_fail(out, LLM_ERR_MALFORMED, "malformed_response",
                        "response is not a message with content");
    buf_t text;
    buf_init(&text, 0);
    const cJSON *block;
    cJSON_ArrayForEach(block, content)
    {
        const char *btype = llm_json_str(block, "type");
        const char *t = llm_json_str(block, "text");
        if (btype && !strcmp(btype, "text") && t && buf_append_str(&text, t) < 0) {
            buf_free(&text);
            return llm_fail(out, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
        }
    }
    const char *stop = llm_json_str(root, "stop_reason");
    if (stop)
        llm_set_finish(out, stop);
    anthropic_model(root, out);
    int64_t c[4] = {0};
    anthropic_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), c, &out->usage);
    out->text = buf_steal(&text, &out->text_len);
    if (!out->text)
        return llm_fail(out, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    return 0;
}

static bool is(const char *a, const char *b) { return a && !strcmp(a, b); }

/* One event of the Messages stream; its data's "type" names it (the SSE event name when absent). */
static int anthropic_event(llm_stream_t *s, const llm_sse_event_t *ev, const cJSON *root)
{
    const char *type = llm_json_str(root, "type");
    if (!type)
        type = ev->type;
    if (is(type, "error") || is(ev->type, "error")) {
        if (llm_parse_error_body(root, 0, &s->res) == 0)
            llm_fail(&s->res, LLM_ERR_PROVIDER, "error", "error event without details");
        return -1;
    }
    if (is(type, "message_start")) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        s->started = true;
        anthropic_model(msg, &s->res);
        anthropic_usage(cJSON_GetObjectItemCaseSensitive(msg, "usage"), s->counts, &s->res.usage);
    } else if (is(type, "content_block_start") || is(type, "content_block_delta")) {
        bool start = is(type, "content_block_start");
        const cJSON *part = cJSON_GetObjectItemCaseSensitive(root, start ? "content_block" : "delta");
        const char *text = llm_json_str(part, "text");
        if (is(llm_json_str(part, "type"), start ? "text" : "text_delta") && text)
            return llm_stream_emit(s, text, strlen(text));
    } else if (is(type, "message_delta")) {
        const char *stop = llm_json_str(cJSON_GetObjectItemCaseSensitive(root, "delta"), "stop_reason");
        if (stop)
            llm_set_finish(&s->res, stop);
        anthropic_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), s->counts, &s->res.usage);
    } else if (is(type, "message_stop"))
        s->complete = true;
    return 0;
}

const llm_provider_t llm_anthropic = {
    .path = "/messages",
    .end_marker = "message_stop",
    .auth_headers = anthropic_auth,
    .body = anthropic_body,
    .parse = anthropic_parse,
    .event = anthropic_event,
};
