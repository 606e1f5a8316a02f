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

/* {"prompt_tokens","completion_tokens","total_tokens"}; left alone unless both counts are sane. */
static void openai_usage(const cJSON *u, llm_usage_t *out)
{
    int64_t p = llm_json_tokens(u, "prompt_tokens"), c = llm_json_tokens(u, "completion_tokens");
    if (!cJSON_IsObject(u) || p < 0 || c < 0)
        return;
    int64_t t = llm_json_tokens(u, "total_tokens");
    out->prompt_tokens = p;
    out->completion_tokens = c;
    out->total_tokens = t >= 0 ? t : p + c;
    out->has = true;
}

static void openai_model(const cJSON *root, llm_result_t *out)
{
    const char *model = llm_json_str(root, "model");
    if (model && !out->model[0])
        llm_copy_str(out->model, sizeof out->model, model);
}

static int openai_parse(const cJSON *root, llm_result_t *out)
{
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(choices, 0), "message");
    if (!cJSON_IsArray(choices) || !cJSON_IsObject(msg))
        return llm_fail(out, LLM_ERR_MALFORMED, "malformed_response", "response has no choices[0].message");
    const char *finish = llm_json_str(cJSON_GetArrayItem(choices, 0), "finish_reason");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    const cJSON *tool_calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    const char *text = cJSON_IsString(content) ? content->valuestring : NULL;
    if (!text && cJSON_IsNull(content) && cJSON_IsArray(tool_calls) && cJSON_GetArraySize(tool_calls) > 0) {
        text = "";
        finish = finish ? finish : "tool_calls";
    } else if (!text && cJSON_IsNull(content) && llm_json_str(msg, "refusal")) {
        text = "";
        finish = "refusal";
    }
    if (!text)
        return llm_fail(out, LLM_ERR_MALFORMED, "malformed_response", "response has no message content");
    if (finish)
        llm_set_finish(out, finish);
    openai_model(root, out);
    openai_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), &out->usage);
    out->text_len = strlen(text);
    out->text = base_strndup(text, out->text_len);
    if (!out->text)
        return llm_fail(out, LLM_ERR_NOMEM, "out_of_memory", "out of memory");
    return 0;
}

/* One chat.completion.chunk (root), an error object, or [DONE] (root NULL). */
static int openai_event(llm_stream_t *s, const llm_sse_event_t *ev, const cJSON *root)
{
    if (!root) {
        s->complete = true;
        return 0;
    }
    if (llm_parse_error_body(root, 0, &s->res) < 0)
        return -1;
    openai_model(root, &s->res);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (cJSON_IsArray(choices) || cJSON_IsObject(usage))
        s->started = true;
    openai_usage(usage, &s->res.usage);
    const cJSON *choice = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(choice, "index");
    if (cJSON_IsNumber(index) && index->valuedouble != 0)
        return 0; /* another choice than the one asked for (n is never sent, so never expected) */
    const char *finish = llm_json_str(choice, "finish_reason");
    if (finish)
        llm_set_finish(&s->res, finish);
    const char *text = llm_json_str(cJSON_GetObjectItemCaseSensitive(choice, "delta"), "content");
    return text ? llm_stream_emit(s, text, strlen(text)) : 0;
}

const llm_provider_t llm_openai = {
    .path = "/chat/completions",
    .end_marker = "[DONE]",
    .done_data = "[DONE]",
    .auth_headers = openai_auth,
    .body = openai_body,
    .parse = openai_parse,
    .event = openai_event,
};
