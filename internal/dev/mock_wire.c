/* mock_wire.c — the mock providers' wire formats: what a request asks (model, stream, the answer
 * text derived from the prompt), and the bodies and SSE events of real OpenAI Chat Completions and
 * Anthropic Messages answers and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mock.h"

int mock_json_escape(buf_t *b, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        if (buf_append(b, s + run, i - run) < 0)
            return -1;
        run = i + 1;
        int rc = ch == '"'    ? buf_append_str(b, "\\\"")
                 : ch == '\\' ? buf_append_str(b, "\\\\")
                 : ch == '\n' ? buf_append_str(b, "\\n")
                 : ch == '\r' ? buf_append_str(b, "\\r")
                 : ch == '\t' ? buf_append_str(b, "\\t")
                              : buf_printf(b, "\\u%04x", ch);
        if (rc < 0)
            return -1;
    }
    return buf_append(b, s + run, n - run);
}

/* A message content (a string, or an array of blocks whose "text" strings are joined) into out. */
static int content_text(const cJSON *content, buf_t *out)
{
    if (cJSON_IsString(content))
        return buf_append_str(out, content->valuestring);
    const cJSON *blk;
    cJSON_ArrayForEach(blk, content)
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(blk, "text");
        if (cJSON_IsString(t) && buf_append_str(out, t->valuestring) < 0)
            return -1;
    }
    return 0;
}

/* At most max bytes of s, cut back to a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* Appends the first MOCK_PREFIX_BYTES of content to out, newlines as spaces; "-" when NULL. */
static int append_prefix(buf_t *out, const cJSON *content)
{
    if (!content)
        return buf_append_str(out, "-");
    buf_t t;
    buf_init(&t, 0);
    int rc = content_text(content, &t);
    size_t n = utf8_cut(t.data ? t.data : "", t.len, MOCK_PREFIX_BYTES);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char ch = t.data[i] == '\n' || t.data[i] == '\r' ? ' ' : t.data[i];
        rc = buf_append(out, &ch, 1);
    }
    buf_free(&t);
    return rc;
}

static const char *role_of(const cJSON *msg)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(msg, "role");
    return cJSON_IsString(r) ? r->valuestring : "";
}

/* Builds the answer text of dev.h's comment from the conversation list L. */
static int build_answer(const dev_mock_t *m, const cJSON *sys, const cJSON *msgs, mock_call_t *call)
{
    int n_msgs = cJSON_GetArraySize(msgs), n = n_msgs + (sys ? 1 : 0);
    const cJSON *first_sys = sys, *prev = NULL, *last_user = NULL;
    size_t chars = 0;
    buf_t t, out;
    buf_init(&t, 0);
    buf_init(&out, 0);
    int rc = 0;
    if (sys && content_text(sys, &t) < 0)
        rc = -1;
    for (int i = 0; i < n_msgs && rc == 0; i++) {
        const cJSON *msg = cJSON_GetArrayItem(msgs, i);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        const char *role = role_of(msg);
        if (!first_sys && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0))
            first_sys = content;
        if (strcmp(role, "user") == 0)
            last_user = content;
        if (i + (sys ? 1 : 0) == n - 2)
            prev = content;
        rc = content_text(content, &t);
    }
    if (sys && n_msgs == 1)
        prev = sys;
    chars = t.len;
    buf_reset(&t);
    rc = rc ? rc : buf_printf(&out, "[%s] n=%d sys=", m->name, n);
    rc = rc ? rc : append_prefix(&out, first_sys);
    rc = rc ? rc : buf_append_str(&out, " prev=");
    rc = rc ? rc : append_prefix(&out, prev);
    rc = rc ? rc : buf_append_str(&out, " | ");
    if (rc == 0 && last_user && (rc = content_text(last_user, &t)) == 0 && t.len)
        rc = buf_append(&out, t.data, utf8_cut(t.data, t.len, MOCK_MAX_LAST_BYTES));
    else if (rc == 0)
        rc = buf_append_str(&out, "-");
    for (int64_t pad = m->knobs.pad_bytes; pad > 0 && rc == 0; pad -= 4)
        rc = buf_append(&out, " pad", pad < 4 ? (size_t)pad : 4);
    buf_free(&t);
    if (rc < 0) {
        buf_free(&out);
        return -1;
    }
    call->prompt_tokens = (int64_t)(chars + 3) / 4;
    if (call->prompt_tokens < 1)
        call->prompt_tokens = 1;
    call->text = buf_steal(&out, &call->text_len);
    return call->text ? 0 : -1;
}

int mock_call_parse(const dev_mock_t *m, const char *body, size_t len, mock_call_t *call, char *err,
                    size_t errlen)
{
    memset(call, 0, sizeof *call);
    call->max_tokens = -1;
    int status = 400;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "We could not parse the JSON body of your request.");
        goto out;
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        snprintf(err, errlen,
                 m->type == DEV_MOCK_OPENAI ? "'messages' is a required property"
                                            : "messages: Field required");
        goto out;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (cJSON_IsNumber(mt))
        call->max_tokens = (int64_t)mt->valuedouble;
    else if (m->type == DEV_MOCK_ANTHROPIC) {
        snprintf(err, errlen, "max_tokens: Field required");
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    call->model = base_strdup(cJSON_IsString(model) ? model->valuestring : "mock-model");
    call->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    call->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    const cJSON *sys =
        m->type == DEV_MOCK_ANTHROPIC ? cJSON_GetObjectItemCaseSensitive(root, "system") : NULL;
    if (!call->model || build_answer(m, sys, msgs, call) < 0) {
        snprintf(err, errlen, "out of memory");
        status = 500;
        goto out;
    }
    status = 0;
out:
    cJSON_Delete(root);
    if (status)
        mock_call_clear(call);
    return status;
}

void mock_call_clear(mock_call_t *call)
{
    free(call->model);
    free(call->text);
    call->model = call->text = NULL;
}

int64_t mock_count_tokens(const char *text, size_t len)
{
    int64_t n = 0;
    for (size_t i = 0; i < len; i++)
        if ((i == 0 || text[i - 1] == ' ') && text[i] != ' ')
            n++;
    return n;
}

/* The real error "type" of each provider for an HTTP status. */
static const char *error_type(dev_mock_type_t type, int status)
{
    if (type == DEV_MOCK_OPENAI)
        return status == 429 ? "requests" : status >= 500 ? "server_error" : "invalid_request_error";
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

int mock_error_body(dev_mock_type_t type, int status, const char *message, buf_t *out)
{
    int rc;
    if (type == DEV_MOCK_OPENAI) {
        const char *code = status == 429   ? "\"rate_limit_exceeded\""
                           : status == 401 ? "\"invalid_api_key\""
                           : status == 404 ? "\"unknown_url\""
                                           : "null";
        rc = buf_append_str(out, "{\"error\":{\"message\":\"");
        rc = rc ? rc : mock_json_escape(out, message, strlen(message));
        rc = rc ? rc
                : buf_printf(out, "\",\"type\":\"%s\",\"param\":null,\"code\":%s}}", error_type(type, status),
                             code);
    } else {
        rc = buf_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"",
                        error_type(type, status));
        rc = rc ? rc : mock_json_escape(out, message, strlen(message));
        rc = rc ? rc : buf_append_str(out, "\"}}");
    }
    return rc;
}

static const char *const thinking_text = "The user wants an echo. I will answer with the prompt summary.";
static const char *const signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";

/* Appends the answer text as JSON string content, then a JSON suffix. */
static int text_then(buf_t *out, const mock_call_t *call, const char *suffix)
{
    int rc = mock_json_escape(out, call->text, call->text_len);
    return rc ? rc : buf_append_str(out, suffix);
}

int mock_answer_json(const dev_mock_t *m, const mock_call_t *call, const char *id, buf_t *out)
{
    int64_t c = mock_count_tokens(call->text, call->text_len), p = call->prompt_tokens;
    int rc;
    if (m->type == DEV_MOCK_OPENAI) {
        rc = buf_printf(out, "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"",
                        id, (long long)time(NULL));
        rc = rc ? rc : mock_json_escape(out, call->model, strlen(call->model));
        rc = rc ? rc
                : buf_append_str(
                      out, "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
        rc =
            rc ? rc
               : text_then(out, call, "\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],");
        rc = rc ? rc
                : buf_printf(
                      out,
                      "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld},"
                      "\"system_fingerprint\":\"fp_parley_mock\"}",
                      (long long)p, (long long)c, (long long)(p + c));
        return rc;
    }
    rc = buf_printf(out, "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"", id);
    rc = rc ? rc : mock_json_escape(out, call->model, strlen(call->model));
    rc = rc ? rc : buf_append_str(out, "\",\"content\":[");
    if (rc == 0 && m->knobs.thinking)
        rc = buf_printf(out, "{\"type\":\"thinking\",\"thinking\":\"%s\",\"signature\":\"%s\"},",
                        thinking_text, signature);
    rc = rc ? rc : buf_append_str(out, "{\"type\":\"text\",\"text\":\"");
    rc = rc ? rc : text_then(out, call, "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,");
    rc = rc ? rc
            : buf_printf(out, "\"usage\":{\"input_tokens\":%lld,\"output_tokens\":%lld}}", (long long)p,
                         (long long)c);
    return rc;
}

/* ---- SSE ---- */

static const char *nl(const dev_mock_t *m) { return m->knobs.crlf ? "\r\n" : "\n"; }

/* Opens an event: "event: NAME" (Anthropic only) and "data: ". */
static int sse_open(const dev_mock_t *m, buf_t *out, const char *event)
{
    if (m->type == DEV_MOCK_ANTHROPIC && event && buf_printf(out, "event: %s%s", event, nl(m)) < 0)
        return -1;
    return buf_append_str(out, "data: ");
}

static int sse_close(const dev_mock_t *m, buf_t *out) { return buf_printf(out, "%s%s", nl(m), nl(m)); }

/* One whole event whose data is a fixed string. */
static int sse_event(const dev_mock_t *m, buf_t *out, const char *event, const char *data)
{
    int rc = sse_open(m, out, event);
    rc = rc ? rc : buf_append_str(out, data);
    return rc ? rc : sse_close(m, out);
}

/* The head of an OpenAI chunk up to the "delta" value. */
static int openai_chunk_open(const dev_mock_t *m, const mock_call_t *call, const char *id, buf_t *out)
{
    int rc = sse_open(m, out, NULL);
    rc = rc ? rc
            : buf_printf(out,
                         "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":\"",
                         id, (long long)time(NULL));
    rc = rc ? rc : mock_json_escape(out, call->model, strlen(call->model));
    return rc ? rc
              : buf_append_str(
                    out, "\",\"system_fingerprint\":\"fp_parley_mock\",\"choices\":[{\"index\":0,\"delta\":");
}

/* The tail of an OpenAI chunk after the delta. */
static int openai_chunk_close(const dev_mock_t *m, const mock_call_t *call, const char *finish, buf_t *out)
{
    int rc = buf_printf(out, ",\"logprobs\":null,\"finish_reason\":%s}]%s}", finish,
                        call->include_usage ? ",\"usage\":null" : "");
    return rc ? rc : sse_close(m, out);
}

static int text_block_index(const dev_mock_t *m) { return m->knobs.thinking ? 1 : 0; }

int mock_sse_start(const dev_mock_t *m, const mock_call_t *call, const char *id, buf_t *out)
{
    int rc;
    if (m->type == DEV_MOCK_OPENAI) {
        rc = openai_chunk_open(m, call, id, out);
        rc = rc ? rc : buf_append_str(out, "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}");
        return rc ? rc : openai_chunk_close(m, call, "null", out);
    }
    rc = sse_open(m, out, "message_start");
    rc = rc ? rc
            : buf_printf(out,
                         "{\"type\":\"message_start\",\"message\":{\"id\":\"%s\",\"type\":\"message\","
                         "\"role\":\"assistant\",\"model\":\"",
                         id);
    rc = rc ? rc : mock_json_escape(out, call->model, strlen(call->model));
    rc = rc ? rc
            : buf_printf(out,
                         "\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{"
                         "\"input_tokens\":%lld,\"output_tokens\":1}}}",
                         (long long)call->prompt_tokens);
    rc = rc ? rc : sse_close(m, out);
    rc = rc ? rc : mock_sse_ping(m, out);
    if (rc == 0 && m->knobs.thinking) {
        char data[256];
        rc = sse_event(
            m, out, "content_block_start",
            "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\","
            "\"thinking\":\"\"}}");
        snprintf(data, sizeof data,
                 "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
                 "\"thinking\":\"%s\"}}",
                 thinking_text);
        rc = rc ? rc : sse_event(m, out, "content_block_delta", data);
        snprintf(data, sizeof data,
                 "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\","
                 "\"signature\":\"%s\"}}",
                 signature);
        rc = rc ? rc : sse_event(m, out, "content_block_delta", data);
        rc = rc ? rc
                : sse_event(m, out, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
    }
    rc = rc ? rc : sse_open(m, out, "content_block_start");
    rc =
        rc ? rc
           : buf_printf(out,
                        "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":{\"type\":\"text\","
                        "\"text\":\"\"}}",
                        text_block_index(m));
    return rc ? rc : sse_close(m, out);
}

int mock_sse_token(const dev_mock_t *m, const mock_call_t *call, const char *id, const char *tok, size_t n,
                   buf_t *out)
{
    int rc;
    if (m->type == DEV_MOCK_OPENAI) {
        rc = openai_chunk_open(m, call, id, out);
        rc = rc ? rc : buf_append_str(out, "{\"content\":\"");
        rc = rc ? rc : mock_json_escape(out, tok, n);
        rc = rc ? rc : buf_append_str(out, "\"}");
        return rc ? rc : openai_chunk_close(m, call, "null", out);
    }
    rc = sse_open(m, out, "content_block_delta");
    rc = rc ? rc
            : buf_printf(out,
                         "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"text_delta\","
                         "\"text\":\"",
                         text_block_index(m));
    rc = rc ? rc : mock_json_escape(out, tok, n);
    rc = rc ? rc : buf_append_str(out, "\"}}");
    return rc ? rc : sse_close(m, out);
}

int mock_sse_end(const dev_mock_t *m, const mock_call_t *call, const char *id, int64_t tokens, buf_t *out)
{
    int rc;
    if (m->type == DEV_MOCK_OPENAI) {
        rc = openai_chunk_open(m, call, id, out);
        rc = rc ? rc : buf_append_str(out, "{}");
        rc = rc ? rc : openai_chunk_close(m, call, "\"stop\"", out);
        if (rc == 0 && call->include_usage) {
            long long p = call->prompt_tokens;
            rc = sse_open(m, out, NULL);
            rc = rc ? rc
                    : buf_printf(out,
                                 "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
                                 "\"model\":\"",
                                 id, (long long)time(NULL));
            rc = rc ? rc : mock_json_escape(out, call->model, strlen(call->model));
            rc = rc ? rc
                    : buf_printf(out,
                                 "\",\"system_fingerprint\":\"fp_parley_mock\",\"choices\":[],\"usage\":{"
                                 "\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}}",
                                 p, (long long)tokens, p + (long long)tokens);
            rc = rc ? rc : sse_close(m, out);
        }
        return rc ? rc : sse_event(m, out, NULL, "[DONE]");
    }
    rc = sse_open(m, out, "content_block_stop");
    rc = rc ? rc : buf_printf(out, "{\"type\":\"content_block_stop\",\"index\":%d}", text_block_index(m));
    rc = rc ? rc : sse_close(m, out);
    rc = rc ? rc : sse_open(m, out, "message_delta");
    rc = rc ? rc
            : buf_printf(out,
                         "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_"
                         "sequence\":null},"
                         "\"usage\":{\"output_tokens\":%lld}}",
                         (long long)tokens);
    rc = rc ? rc : sse_close(m, out);
    return rc ? rc : sse_event(m, out, "message_stop", "{\"type\":\"message_stop\"}");
}

int mock_sse_error(const dev_mock_t *m, buf_t *out)
{
    if (m->type == DEV_MOCK_OPENAI)
        return sse_event(
            m, out, NULL,
            "{\"error\":{\"message\":\"The server had an error while processing your request. Sorry "
            "about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    return sse_event(
        m, out, "error",
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
}

int mock_sse_comment(const dev_mock_t *m, buf_t *out)
{
    return m->knobs.comments ? buf_printf(out, ": keep-alive%s%s", nl(m), nl(m)) : 0;
}

int mock_sse_ping(const dev_mock_t *m, buf_t *out)
{
    if (m->type != DEV_MOCK_ANTHROPIC || !m->knobs.ping)
        return 0;
    return sse_event(m, out, "ping", "{\"type\": \"ping\"}");
}
