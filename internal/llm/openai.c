/* openai.c — the OpenAI Chat Completions adapter (also for OpenAI-compatible APIs): Bearer auth,
 * the request body, the chat.completion answer and the chat.completion.chunk stream. */
#include <string.h>

#include "llm/llm_int.h"

static int openai_auth(llm_headers_t *h, const config_provider_t *p)
{
    if (!secret_is_set(&p->api_key))
        return 0;
    buf_t b;
    buf_init(&b, 0);
    int rc = buf_printf(&b, "Bearer %s", secret_reveal(&p->api_key));
    if (rc == 0)
        rc = llm_headers_add(h, "Authorization", b.data);
    buf_free(&b);
    return rc;
}

static int openai_body(buf_t *b, const config_provider_t *p, const chat_message_t *msgs, size_t n,
                       const llm_params_t *params, bool stream, unsigned *dropped, char *err, size_t errlen)
{
    if (buf_append(b, "{", 1) < 0 || llm_jw_string(b, "model", p->model, strlen(p->model)) < 0 ||
        llm_jw_key(b, "messages") < 0 || buf_append(b, "[", 1) < 0)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (llm_check_role(&msgs[i], err, errlen) < 0)
            return -1;
        if (llm_jw_key(b, NULL) < 0 || buf_append(b, "{", 1) < 0 ||
            llm_jw_string(b, "role", msgs[i].role, strlen(msgs[i].role)) < 0 ||
            llm_jw_content(b, &msgs[i]) < 0 || buf_append(b, "}", 1) < 0)
            goto nomem;
    }
    if (buf_append(b, "]", 1) < 0 || llm_jw_common_params(b, params, "stop") < 0)
        goto nomem;
    if (params->has_max_tokens && llm_jw_int(b, "max_tokens", params->max_tokens) < 0)
        goto nomem;
    if (params->has_seed && llm_jw_int(b, "seed", params->seed) < 0)
        goto nomem;
    if (llm_jw_bool(b, "stream", stream) < 0)
        goto nomem;
    if (stream && (llm_jw_key(b, "stream_options") < 0 || buf_append_str(b, "{\"include_usage\":true}") < 0))
        goto nomem;
    if (buf_append(b, "}", 1) < 0)
        goto nomem;
    *dropped = 0;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* The members of an answer (or chunk), of its choice and of its usage that openai.c reads. */
static const char *const root_keys[] = {"error", "choices", "model", "usage"};
enum { K_ERROR, K_CHOICES, K_MODEL, K_USAGE, K_N };
static const char *const choice_keys[] = {"message", "finish_reason", "index", "delta"};
enum { C_MESSAGE, C_FINISH, C_INDEX, C_DELTA, C_N };
static const char *const usage_keys[] = {"prompt_tokens", "completion_tokens", "total_tokens"};
enum { U_PROMPT, U_COMPLETION, U_TOTAL, U_N };

/* {"prompt_tokens","completion_tokens","total_tokens"}; left alone unless both counts are sane. */
static void openai_usage(json_value_t u, llm_usage_t *out)
{
    json_value_t m[U_N];
    json_get_many(u, usage_keys, U_N, m);
    int64_t p = llm_json_count(m[U_PROMPT]), c = llm_json_count(m[U_COMPLETION]);
    if (u.type != JSON_OBJECT || p < 0 || c < 0)
        return;
    int64_t t = llm_json_count(m[U_TOTAL]);
    out->prompt_tokens = p;
    out->completion_tokens = c;
    out->total_tokens = t >= 0 ? t : p + c;
    out->has = true;
}

static void openai_model(json_value_t model, llm_result_t *out)
{
    if (!out->model[0])
        llm_json_copy(model, out->model, sizeof out->model);
}

static int openai_parse(const json_value_t *member, llm_result_t *out)
{
    json_value_t c[C_N];
    json_get_many(json_at(member[K_CHOICES], 0), choice_keys, C_N, c);
    json_value_t msg = c[C_MESSAGE];
    if (msg.type != JSON_OBJECT)
        return llm_fail(out, LLM_ERR_MALFORMED, "malformed_response", "response has no choices[0].message");
    char finish_buf[sizeof out->finish_reason_raw + 1];
    const char *finish = llm_json_copy(c[C_FINISH], finish_buf, sizeof finish_buf) ? finish_buf : NULL;
    json_value_t content = json_get(msg, "content");
    if (content.type == JSON_NULL && json_at(json_get(msg, "tool_calls"), 0).type != JSON_NONE)
        finish = finish ? finish : "tool_calls";
    else if (content.type == JSON_NULL && json_get(msg, "refusal").type == JSON_STRING)
        finish = "refusal";
    else if (content.type != JSON_STRING)
        return llm_fail(out, LLM_ERR_MALFORMED, "malformed_response", "response has no message content");
    if (finish)
        llm_set_finish(out, finish);
    openai_model(member[K_MODEL], out);
    openai_usage(member[K_USAGE], &out->usage);
    buf_t text;
    buf_init(&text, 0);
    if (llm_json_append(&text, content) < 0 || !(out->text = buf_steal(&text, &out->text_len))) {
        buf_free(&text);
        return llm_fail(out, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    }
    return 0;
}

/* One chat.completion.chunk (the members m of its root), an error object, or [DONE] (m NULL). */
static int openai_event(llm_stream_t *s, const llm_sse_event_t *ev, const json_value_t *m)
{
    if (!m) {
        s->complete = true;
        return 0;
    }
    json_value_t c[C_N];
    if (llm_parse_error(m[K_ERROR], 0, &s->res) < 0)
        return -1;
    openai_model(m[K_MODEL], &s->res);
    if (m[K_CHOICES].type == JSON_ARRAY || m[K_USAGE].type == JSON_OBJECT)
        s->started = true;
    openai_usage(m[K_USAGE], &s->res.usage);
    json_get_many(json_at(m[K_CHOICES], 0), choice_keys, C_N, c);
    double index;
    if (json_double(c[C_INDEX], &index) == 0 && index != 0)
        return 0; /* another choice than the one asked for (n is never sent, so never expected) */
    char finish[sizeof s->res.finish_reason_raw + 1];
    if (llm_json_copy(c[C_FINISH], finish, sizeof finish))
        llm_set_finish(&s->res, finish);
    return llm_stream_emit(s, json_get(c[C_DELTA], "content"));
}

const llm_provider_t llm_openai = {
    .path = "/chat/completions",
    .end_marker = "[DONE]",
    .done_data = "[DONE]",
    .auth_headers = openai_auth,
    .body = openai_body,
    .answer_keys = root_keys,
    .n_answer_keys = K_N,
    .parse = openai_parse,
    .event_keys = root_keys,
    .n_event_keys = K_N,
    .event = openai_event,
};
