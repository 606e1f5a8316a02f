/* anthropic.c — the Anthropic Messages adapter: x-api-key and anthropic-version headers, the body
 * (top-level system, required max_tokens, strict user/assistant alternation), the message answer
 * and the message_start … message_stop event stream. */
#include <string.h>

#include "llm/llm_int.h"

#define ANTHROPIC_VERSION_DEFAULT    "2023-06-01"
#define ANTHROPIC_MAX_TOKENS_DEFAULT 1024

enum { U_INPUT, U_CACHE_CREATION, U_CACHE_READ, U_OUTPUT, U_N };

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

/* The members of a message answer and of a usage object that anthropic.c reads. */
static const char *const answer_keys[] = {"error", "type", "content", "stop_reason", "model", "usage"};
enum { K_ERROR, K_TYPE, K_CONTENT, K_STOP, K_MODEL, K_USAGE, K_N };
static const char *const usage_keys[U_N] = {"input_tokens", "cache_creation_input_tokens",
                                            "cache_read_input_tokens", "output_tokens"};

/* Reads the counts present in a usage object into c[U_*]; true when it held any. */
static bool anthropic_counts(json_value_t u, int64_t c[U_N])
{
    json_value_t m[U_N];
    bool any = false;
    json_get_many(u, usage_keys, U_N, m);
    for (int i = 0; i < U_N; i++) {
        int64_t v = llm_json_count(m[i]);
        if (v >= 0) {
            c[i] = v;
            any = true;
        }
    }
    return any;
}

static void anthropic_usage(json_value_t u, int64_t c[U_N], llm_usage_t *out)
{
    if (!anthropic_counts(u, c))
        return;
    out->has = true;
    out->prompt_tokens = c[U_INPUT] + c[U_CACHE_CREATION] + c[U_CACHE_READ];
    out->completion_tokens = c[U_OUTPUT];
    out->total_tokens = out->prompt_tokens + out->completion_tokens;
}

/* stop_reason (a member's value) into out's finish reason, when it is a string. */
static void anthropic_stop(json_value_t stop_reason, llm_result_t *out)
{
    char stop[sizeof out->finish_reason_raw + 1];
    if (llm_json_copy(stop_reason, stop, sizeof stop))
        llm_set_finish(out, stop);
}

static int anthropic_parse(const json_value_t *member, llm_result_t *out)
{
    char type[32];
    json_value_t content = member[K_CONTENT];
    if ((llm_json_copy(member[K_TYPE], type, sizeof type) && strcmp(type, "message")) ||
        content.type != JSON_ARRAY)
        return llm_fail(out, LLM_ERR_MALFORMED, "malformed_response",
                        "response is not a message with content");
    buf_t text;
    buf_init(&text, 0);
    json_value_t block;
    for (json_iter_t it = json_iter(content); json_next(&it, NULL, &block);) {
        if (llm_json_is(block, "type", "text") && llm_json_append(&text, json_get(block, "text")) < 0) {
            buf_free(&text);
            return llm_fail(out, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
        }
    }
    anthropic_stop(member[K_STOP], out);
    llm_json_copy(member[K_MODEL], out->model, sizeof out->model);
    int64_t c[U_N] = {0};
    anthropic_usage(member[K_USAGE], c, &out->usage);
    out->text = buf_steal(&text, &out->text_len);
    if (!out->text)
        return llm_fail(out, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    return 0;
}

/* The members of a stream event that anthropic_event reads. */
static const char *const event_keys[] = {"type", "error", "message", "content_block", "delta", "usage"};
enum { E_TYPE, E_ERROR, E_MESSAGE, E_BLOCK, E_DELTA, E_USAGE, E_N };

/* One event of the Messages stream (the members m of its object); its "type" names it (the SSE event
 * name when absent). */
static int anthropic_event(llm_stream_t *s, const llm_sse_event_t *ev, const json_value_t *m)
{
    char type[32];
    if (!llm_json_copy(m[E_TYPE], type, sizeof type))
        llm_copy_str(type, sizeof type, ev->type);
    if (!strcmp(type, "error") || !strcmp(ev->type, "error")) {
        if (llm_parse_error(m[E_ERROR], 0, &s->res) == 0)
            llm_fail(&s->res, LLM_ERR_PROVIDER, "error", "error event without details");
        return -1;
    }
    if (!strcmp(type, "message_start")) {
        json_value_t msg = m[E_MESSAGE];
        s->started = true;
        llm_json_str(msg, "model", s->res.model, sizeof s->res.model);
        anthropic_usage(json_get(msg, "usage"), s->counts, &s->res.usage);
    } else if (!strcmp(type, "content_block_start") || !strcmp(type, "content_block_delta")) {
        bool start = !strcmp(type, "content_block_start");
        json_value_t part = m[start ? E_BLOCK : E_DELTA];
        if (llm_json_is(part, "type", start ? "text" : "text_delta"))
            return llm_stream_emit(s, json_get(part, "text"));
    } else if (!strcmp(type, "message_delta")) {
        anthropic_stop(json_get(m[E_DELTA], "stop_reason"), &s->res);
        anthropic_usage(m[E_USAGE], s->counts, &s->res.usage);
    } else if (!strcmp(type, "message_stop"))
        s->complete = true;
    return 0;
}

const llm_provider_t llm_anthropic = {
    .path = "/messages",
    .end_marker = "message_stop",
    .auth_headers = anthropic_auth,
    .body = anthropic_body,
    .answer_keys = answer_keys,
    .n_answer_keys = K_N,
    .parse = anthropic_parse,
    .event_keys = event_keys,
    .n_event_keys = E_N,
    .event = anthropic_event,
};
