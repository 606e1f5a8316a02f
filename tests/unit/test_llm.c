/* test_llm.c — provider adapters: request bodies and headers of both providers, responses and error
 * bodies in the shapes of the public API docs, retry classes, the SSE parser, both stream
 * interpreters under every chunking and line ending, cut streams, limits, allocation failures, cost. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "base/base.h"
#include "config/config.h"
#include "llm/llm.h"

/* ---- Fixtures --------------------------------------------------------------------------------- */

static config_provider_t provider(provider_type_t t, const char *key)
{
    config_provider_t p = {0};
    p.name = t == PROVIDER_OPENAI ? "openai-main" : "anthropic-backup";
    p.type = t;
    p.base_url = t == PROVIDER_OPENAI ? "https://api.openai.com/v1/" : "https://api.anthropic.com/v1";
    p.api_key.value = (char *)key;
    p.model = t == PROVIDER_OPENAI ? "gpt-4o-mini" : "claude-sonnet-4-20250514";
    return p;
}

#define MSG(r, c)                                                                                            \
    {                                                                                                        \
        .role = (r), .content = (c), .content_len = sizeof(c) - 1                                            \
    }

static const chat_message_t conversation[] = {
    MSG("system", "You are terse."), MSG("user", "Hi"),        MSG("assistant", "Hello."),
    MSG("user", "What is 2+2?"),     MSG("user", "Be brief."),
};

static const char *header(const llm_request_t *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++)
        if (!strncasecmp(r->headers[i], name, n) && r->headers[i][n] == ':')
            return r->headers[i] + n + 2;
    return NULL;
}

static cJSON *body_json(const llm_request_t *r)
{
    cJSON *root = cJSON_ParseWithLength(r->body, r->body_len);
    assert_non_null(root);
    assert_int_equal(strlen(r->body), r->body_len);
    return root;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

/* ---- Requests --------------------------------------------------------------------------------- */

static void openai_request_has_every_param(void **state)
{
    config_kv_t extra[] = {{"OpenAI-Organization", "org-1"}};
    config_provider_t p = provider(PROVIDER_OPENAI, "sk-test-123");
    p.headers = extra;
    p.n_headers = 1;
    const char *stop[] = {"END", "\"q\""};
    llm_params_t params = {.has_temperature = true,
                           .temperature = 0.7,
                           .has_top_p = true,
                           .top_p = 0.9,
                           .has_max_tokens = true,
                           .max_tokens = 100,
                           .stop = stop,
                           .n_stop = 2,
                           .has_seed = true,
                           .seed = 42};
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, conversation, 5, &params, true, &r, err, sizeof err), 0);
    assert_string_equal(r.url, "https://api.openai.com/v1/chat/completions");
    assert_string_equal(header(&r, "Authorization"), "Bearer sk-test-123");
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_string_equal(header(&r, "Accept"), "text/event-stream");
    assert_string_equal(header(&r, "OpenAI-Organization"), "org-1");
    assert_int_equal(r.dropped_params, 0);
    cJSON *b = body_json(&r);
    assert_string_equal(jstr(b, "model"), "gpt-4o-mini");
    cJSON *msgs = cJSON_GetObjectItem(b, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 5);
    assert_string_equal(jstr(cJSON_GetArrayItem(msgs, 0), "role"), "system");
    assert_string_equal(jstr(cJSON_GetArrayItem(msgs, 4), "content"), "Be brief.");
    assert_true(jnum(b, "temperature") == 0.7);
    assert_true(jnum(b, "top_p") == 0.9);
    assert_int_equal((int)jnum(b, "max_tokens"), 100);
    assert_int_equal((int)jnum(b, "seed"), 42);
    cJSON *st = cJSON_GetObjectItem(b, "stop");
    assert_int_equal(cJSON_GetArraySize(st), 2);
    assert_string_equal(cJSON_GetArrayItem(st, 1)->valuestring, "\"q\"");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(b, "stream")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "stream_options"), "include_usage")));
    assert_non_null(strstr(r.body, "\"temperature\":0.7,"));
    cJSON_Delete(b);
    llm_request_free(&r);
}

static void openai_request_without_key_or_params(void **state)
{
    config_provider_t p = provider(PROVIDER_OPENAI, NULL);
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, conversation + 1, 1, NULL, false, &r, err, sizeof err), 0);
    assert_null(header(&r, "Authorization"));
    assert_string_equal(header(&r, "Accept"), "application/json");
    cJSON *b = body_json(&r);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(b, "stream")));
    assert_null(cJSON_GetObjectItem(b, "stream_options"));
    assert_null(cJSON_GetObjectItem(b, "temperature"));
    assert_null(cJSON_GetObjectItem(b, "seed"));
    assert_null(cJSON_GetObjectItem(b, "stop"));
    cJSON_Delete(b);
    llm_request_free(&r);
}

static void anthropic_request_maps_system_merges_and_drops_seed(void **state)
{
    config_provider_t p = provider(PROVIDER_ANTHROPIC, "sk-ant-xyz");
    p.max_tokens_default = 2048;
    chat_message_t msgs[] = {
        MSG("system", "You are terse."), MSG("user", "Hi"),           MSG("system", "Answer in French."),
        MSG("user", "What is 2+2?"),     MSG("assistant", "Quatre."), MSG("user", "Merci"),
    };
    const char *stop[] = {"\n\nHuman:"};
    llm_params_t params = {
        .has_temperature = true, .temperature = 0.25, .stop = stop, .n_stop = 1, .has_seed = true, .seed = 7};
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, msgs, BASE_ARRAY_LEN(msgs), &params, true, &r, err, sizeof err),
                     0);
    assert_string_equal(r.url, "https://api.anthropic.com/v1/messages");
    assert_string_equal(header(&r, "x-api-key"), "sk-ant-xyz");
    assert_string_equal(header(&r, "anthropic-version"), "2023-06-01");
    assert_string_equal(header(&r, "Accept"), "text/event-stream");
    assert_null(header(&r, "Authorization"));
    assert_int_equal(r.dropped_params, LLM_PARAM_SEED);
    cJSON *b = body_json(&r);
    assert_string_equal(jstr(b, "system"), "You are terse.\n\nAnswer in French.");
    assert_int_equal((int)jnum(b, "max_tokens"), 2048);
    assert_null(cJSON_GetObjectItem(b, "seed"));
    assert_null(cJSON_GetObjectItem(b, "stream_options"));
    assert_true(jnum(b, "temperature") == 0.25);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "stop_sequences"), 0)->valuestring,
                        "\n\nHuman:");
    cJSON *m = cJSON_GetObjectItem(b, "messages");
    assert_int_equal(cJSON_GetArraySize(m), 3);
    assert_string_equal(jstr(cJSON_GetArrayItem(m, 0), "role"), "user");
    assert_string_equal(jstr(cJSON_GetArrayItem(m, 0), "content"), "Hi\n\nWhat is 2+2?");
    assert_string_equal(jstr(cJSON_GetArrayItem(m, 1), "role"), "assistant");
    assert_string_equal(jstr(cJSON_GetArrayItem(m, 2), "content"), "Merci");
    cJSON_Delete(b);
    llm_request_free(&r);
}

static void anthropic_request_defaults(void **state)
{
    config_provider_t p = provider(PROVIDER_ANTHROPIC, NULL);
    p.anthropic_version = "2024-01-01";
    llm_params_t params = {.has_max_tokens = true, .max_tokens = 10};
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, conversation + 1, 1, NULL, false, &r, err, sizeof err), 0);
    assert_null(header(&r, "x-api-key"));
    assert_string_equal(header(&r, "anthropic-version"), "2024-01-01");
    cJSON *b = body_json(&r);
    assert_int_equal((int)jnum(b, "max_tokens"), 1024);
    assert_null(cJSON_GetObjectItem(b, "system"));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(b, "stream")));
    cJSON_Delete(b);
    llm_request_free(&r);
    assert_int_equal(llm_request_build(&p, conversation + 1, 1, &params, false, &r, err, sizeof err), 0);
    b = body_json(&r);
    assert_int_equal((int)jnum(b, "max_tokens"), 10);
    cJSON_Delete(b);
    llm_request_free(&r);
}

static void request_content_is_escaped_and_utf8_safe(void **state)
{
    static const char content[] = "a\"b\\c\n\t\x01 caf\xc3\xa9 \xff\xfe end\0tail";
    chat_message_t m = {.role = "user", .content = content, .content_len = sizeof content - 1};
    config_provider_t p = provider(PROVIDER_OPENAI, "k");
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, &m, 1, NULL, false, &r, err, sizeof err), 0);
    cJSON *b = body_json(&r);
    const char *got = jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "messages"), 0), "content");
    assert_string_equal(got, "a\"b\\c\n\t\x01 caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd end");
    assert_non_null(strstr(r.body, "end\\u0000tail"));
    cJSON_Delete(b);
    llm_request_free(&r);
    chat_message_t none[] = {{.role = "system", .content = NULL, .content_len = 5},
                             {.role = "user", .content = NULL, .content_len = 5}};
    for (int t = PROVIDER_OPENAI; t <= PROVIDER_ANTHROPIC; t++) {
        p = provider((provider_type_t)t, NULL);
        assert_int_equal(llm_request_build(&p, none, 2, NULL, false, &r, err, sizeof err), 0);
        b = body_json(&r);
        assert_non_null(strstr(r.body, "\"content\":\"\""));
        cJSON_Delete(b);
        llm_request_free(&r);
    }
}

/* A message carrying its content already escaped (a stored history entry) gives the same body as one
 * that is escaped here, for both providers, merges and system prompt included. */
static void content_json_gives_the_same_body(void **state)
{
    chat_message_t plain[] = {{.role = "system", .content = "be \"brief\"", .content_len = 10},
                              {.role = "user", .content = "line1\nline2 caf\xc3\xa9", .content_len = 17},
                              {.role = "user", .content = "tab\there", .content_len = 8},
                              {.role = "assistant", .content = "back\\slash", .content_len = 10},
                              {.role = "user", .content = "last", .content_len = 4}};
    chat_message_t stored[BASE_ARRAY_LEN(plain)];
    memcpy(stored, plain, sizeof plain);
    static const char *const escaped[] = {"be \\\"brief\\\"", "line1\\nline2 caf\xc3\xa9", "tab\\there",
                                          "back\\\\slash", "last"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(stored); i++) {
        stored[i].content_json = escaped[i];
        stored[i].content_json_len = strlen(escaped[i]);
    }
    char err[128];
    for (int t = PROVIDER_OPENAI; t <= PROVIDER_ANTHROPIC; t++) {
        config_provider_t p = provider((provider_type_t)t, "k");
        llm_request_t a, b;
        assert_int_equal(
            llm_request_build(&p, plain, BASE_ARRAY_LEN(plain), NULL, false, &a, err, sizeof err), 0);
        assert_int_equal(
            llm_request_build(&p, stored, BASE_ARRAY_LEN(stored), NULL, false, &b, err, sizeof err), 0);
        assert_string_equal(a.body, b.body);
        llm_request_free(&a);
        llm_request_free(&b);
    }
}

static void configured_headers_replace_defaults_and_are_checked(void **state)
{
    config_kv_t extra[] = {{"accept", "application/x-ndjson"}, {"api-key", "azure-secret"}};
    config_provider_t p = provider(PROVIDER_OPENAI, NULL);
    p.headers = extra;
    p.n_headers = 2;
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, conversation, 2, NULL, true, &r, err, sizeof err), 0);
    assert_string_equal(header(&r, "Accept"), "application/x-ndjson");
    assert_string_equal(header(&r, "api-key"), "azure-secret");
    assert_int_equal(r.n_headers, 3);
    llm_request_free(&r);

    config_kv_t bad[] = {{"X-Evil", "azure-secret\r\nHost: x"}};
    p.headers = bad;
    p.n_headers = 1;
    assert_int_equal(llm_request_build(&p, conversation, 2, NULL, true, &r, err, sizeof err), -1);
    assert_null(strstr(err, "azure-secret"));
    assert_non_null(strstr(err, "X-Evil"));
    assert_null(r.url);
    assert_int_equal(r.n_headers, 0);
}

static void request_errors_never_show_the_key(void **state)
{
    config_provider_t p = provider(PROVIDER_ANTHROPIC, "sk-ant-secret\nX: y");
    llm_request_t r;
    char err[128];
    assert_int_equal(llm_request_build(&p, conversation, 2, NULL, false, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "x-api-key"));
    assert_null(strstr(err, "sk-ant-secret"));
    p.api_key.value = "sk-ant-secret";
    p.anthropic_version = "2023-06-01\r\nX-Injected: 1";
    assert_int_equal(llm_request_build(&p, conversation, 2, NULL, false, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "anthropic-version"));
    p.anthropic_version = NULL;

    p = provider(PROVIDER_ANTHROPIC, "sk-ant-secret");
    chat_message_t only_system[] = {MSG("system", "x")};
    assert_int_equal(llm_request_build(&p, only_system, 1, NULL, false, &r, err, sizeof err), -1);
    chat_message_t tool[] = {MSG("tool", "x")};
    assert_int_equal(llm_request_build(&p, tool, 1, NULL, false, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "role"));
    assert_int_equal(llm_request_build(&p, conversation, 0, NULL, false, &r, err, sizeof err), -1);
    llm_params_t nan = {.has_temperature = true, .temperature = NAN};
    assert_int_equal(llm_request_build(&p, conversation, 2, &nan, false, &r, err, sizeof err), -1);
    llm_params_t zero = {.has_max_tokens = true, .max_tokens = 0};
    assert_int_equal(llm_request_build(&p, conversation, 2, &zero, false, &r, err, sizeof err), -1);
    assert_null(strstr(err, "sk-ant-secret"));
}

static void prompt_tokens_estimate(void **state)
{
    chat_message_t m[] = {MSG("user", "12345678"), MSG("assistant", "1")};
    assert_int_equal(llm_estimate_prompt_tokens(m, 2), 3 + (2 + 4) + (1 + 4));
    assert_int_equal(llm_estimate_prompt_tokens(NULL, 0), 3);
}

/* ---- Responses -------------------------------------------------------------------------------- */

static const char openai_completion[] =
    "{\n  \"id\": \"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\n  \"object\": \"chat.completion\",\n"
    "  \"created\": 1741569952,\n  \"model\": \"gpt-4o-mini-2024-07-18\",\n  \"choices\": [\n    {\n"
    "      \"index\": 0,\n      \"message\": {\n        \"role\": \"assistant\",\n"
    "        \"content\": \"Hello! How can I assist you today?\",\n        \"refusal\": null,\n"
    "        \"annotations\": []\n      },\n      \"logprobs\": null,\n      \"finish_reason\": \"stop\"\n"
    "    }\n  ],\n  \"usage\": {\n    \"prompt_tokens\": 19,\n    \"completion_tokens\": 10,\n"
    "    \"total_tokens\": 29,\n    \"prompt_tokens_details\": {\"cached_tokens\": 0, \"audio_tokens\": 0},\n"
    "    \"completion_tokens_details\": {\"reasoning_tokens\": 0, \"audio_tokens\": 0,\n"
    "      \"accepted_prediction_tokens\": 0, \"rejected_prediction_tokens\": 0}\n  },\n"
    "  \"service_tier\": \"default\",\n  \"system_fingerprint\": \"fp_06737a9306\"\n}\n";

static const char anthropic_message[] =
    "{\"id\":\"msg_01AbCdEf\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-"
    "20250514\","
    "\"content\":[{\"type\":\"thinking\",\"thinking\":\"To approach this, let me think...\","
    "\"signature\":\"WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL\"},"
    "{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgBEgy3va3pzix/"
    "LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr\"},"
    "{\"type\":\"text\",\"text\":\"Yes, there are infinitely many primes.\"},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"calc\",\"input\":{\"x\":1}},"
    "{\"type\":\"text\",\"text\":\" Euclid proved it.\"}],"
    "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":2095,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":5,"
    "\"output_tokens\":503}}";

static int parse(provider_type_t t, int status, const char *body, llm_result_t *r)
{
    return llm_response_parse(t, status, body, strlen(body), r);
}

static void openai_completion_parses(void **state)
{
    llm_result_t r;
    assert_int_equal(parse(PROVIDER_OPENAI, 200, openai_completion, &r), 0);
    assert_string_equal(r.text, "Hello! How can I assist you today?");
    assert_int_equal(r.text_len, strlen(r.text));
    assert_string_equal(r.finish_reason, "stop");
    assert_string_equal(r.model, "gpt-4o-mini-2024-07-18");
    assert_true(r.usage.has);
    assert_int_equal(r.usage.prompt_tokens, 19);
    assert_int_equal(r.usage.completion_tokens, 10);
    assert_int_equal(r.usage.total_tokens, 29);
    assert_int_equal(r.error.kind, LLM_ERR_NONE);
    llm_result_free(&r);
}

static void openai_tool_calls_have_empty_text(void **state)
{
    const char *body =
        "{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
        "\"finish_reason\":\"tool_calls\"}]}";
    llm_result_t r;
    assert_int_equal(parse(PROVIDER_OPENAI, 200, body, &r), 0);
    assert_string_equal(r.text, "");
    assert_string_equal(r.finish_reason, "tool_calls");
    assert_false(r.usage.has);
    llm_result_free(&r);
    body = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null}}]}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, body, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
    llm_result_free(&r);
}

static void anthropic_message_skips_thinking(void **state)
{
    llm_result_t r;
    assert_int_equal(parse(PROVIDER_ANTHROPIC, 200, anthropic_message, &r), 0);
    assert_string_equal(r.text, "Yes, there are infinitely many primes. Euclid proved it.");
    assert_string_equal(r.finish_reason, "stop");
    assert_string_equal(r.finish_reason_raw, "end_turn");
    assert_string_equal(r.model, "claude-sonnet-4-20250514");
    assert_int_equal(r.usage.prompt_tokens, 2095 + 100 + 5);
    assert_int_equal(r.usage.completion_tokens, 503);
    assert_int_equal(r.usage.total_tokens, 2200 + 503);
    llm_result_free(&r);
    const char *max = "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"cut\"}],"
                      "\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}";
    assert_int_equal(parse(PROVIDER_ANTHROPIC, 200, max, &r), 0);
    assert_string_equal(r.finish_reason, "length");
    llm_result_free(&r);
}

static void error_bodies_are_classified(void **state)
{
    llm_result_t r;
    const char *oa401 =
        "{\n    \"error\": {\n        \"message\": \"Incorrect API key provided: sk-abc. You can find "
        "your API key at https://platform.openai.com/account/api-keys.\",\n        \"type\": "
        "\"invalid_request_error\",\n        \"param\": null,\n        \"code\": \"invalid_api_key\"\n"
        "    }\n}\n";
    assert_int_equal(parse(PROVIDER_OPENAI, 401, oa401, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_PROVIDER);
    assert_int_equal(r.error.retry, LLM_RETRY_NO);
    assert_int_equal(r.error.http_status, 401);
    assert_string_equal(r.error.type, "invalid_request_error");
    assert_string_equal(r.error.code, "invalid_api_key");
    assert_non_null(strstr(r.error.message, "Incorrect API key"));
    assert_null(r.text);
    llm_result_free(&r);

    const char *oa429 =
        "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini in organization org-x on "
        "tokens per min (TPM): Limit 200000, Used 199000, Requested 2000.\",\"type\":\"tokens\","
        "\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
    assert_int_equal(parse(PROVIDER_OPENAI, 429, oa429, &r), -1);
    assert_int_equal(r.error.retry, LLM_RETRY_YES);
    assert_string_equal(r.error.code, "rate_limit_exceeded");
    llm_result_free(&r);

    const char *an529 =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},"
        "\"request_id\":\"req_011CSHoEeqs5C35K2UUqR7Fy\"}";
    assert_int_equal(parse(PROVIDER_ANTHROPIC, 529, an529, &r), -1);
    assert_int_equal(r.error.retry, LLM_RETRY_YES);
    assert_string_equal(r.error.type, "overloaded_error");
    assert_string_equal(r.error.message, "Overloaded");
    llm_result_free(&r);

    const char *an400 = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
                        "\"max_tokens: Field required\"}}";
    assert_int_equal(parse(PROVIDER_ANTHROPIC, 400, an400, &r), -1);
    assert_int_equal(r.error.retry, LLM_RETRY_NO);
    llm_result_free(&r);

    assert_int_equal(parse(PROVIDER_ANTHROPIC, 200, an529, &r), -1); /* error body with 2xx: by type */
    assert_int_equal(r.error.kind, LLM_ERR_PROVIDER);
    assert_int_equal(r.error.retry, LLM_RETRY_YES);
    llm_result_free(&r);

    assert_int_equal(parse(PROVIDER_OPENAI, 502, "<html><body>Bad gateway</body></html>", &r), -1);
    assert_string_equal(r.error.type, "http_502");
    assert_int_equal(r.error.retry, LLM_RETRY_YES);
    assert_non_null(strstr(r.error.message, "Bad gateway"));
    llm_result_free(&r);

    assert_int_equal(parse(PROVIDER_OPENAI, 404, "{\"detail\":\"Not Found\"}", &r), -1);
    assert_string_equal(r.error.type, "http_404");
    assert_int_equal(r.error.retry, LLM_RETRY_NO);
    llm_result_free(&r);
}

static void bad_2xx_bodies_are_malformed(void **state)
{
    static const char *const bodies[] = {
        "<html>ok</html>",
        "",
        "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assis",
        "{\"id\":\"x\"}",
        "[1,2]",
        "{\"choices\":[]}",
        "{\"choices\":{\"0\":{\"message\":{\"content\":\"x\"}}}}",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bodies); i++) {
        for (int t = PROVIDER_OPENAI; t <= PROVIDER_ANTHROPIC; t++) {
            llm_result_t r;
            assert_int_equal(parse((provider_type_t)t, 200, bodies[i], &r), -1);
            assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
            assert_string_equal(r.error.type, "malformed_response");
            assert_null(r.text);
            llm_result_free(&r);
        }
    }
    llm_result_t r;
    size_t half = sizeof anthropic_message / 2;
    assert_int_equal(llm_response_parse(PROVIDER_ANTHROPIC, 200, anthropic_message, half, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
    llm_result_free(&r);
}

/* What the in-place reader must read as cJSON did: the first of duplicate keys, unknown fields of any
 * shape (brackets and escaped quotes inside strings), huge or fractional numbers, Unicode escapes,
 * fields of the wrong type, a numeric error code, a leading BOM. */
static void answers_read_like_cjson(void **state)
{
    llm_result_t r;
    const char *dup =
        "{\"model\":\"first\",\"model\":\"second\",\"choices\":[{\"message\":{\"content\":\"a\","
        "\"content\":\"b\"},\"finish_reason\":\"stop\",\"finish_reason\":\"length\"}],"
        "\"choices\":[]}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, dup, &r), 0);
    assert_string_equal(r.text, "a");
    assert_string_equal(r.model, "first");
    assert_string_equal(r.finish_reason, "stop");
    llm_result_free(&r);

    const char *nested =
        "{\"x\":{\"y\":[[{\"z\":\"]}\\\"{[\"}],[]],\"w\":{}},\"choices\":[{\"logprobs\":{\"content\":[{\"t\":"
        "\"}\"}]},\"message\":{\"role\":\"assistant\",\"extra\":[1,{\"content\":\"no\"}],\"content\":\"yes\"}"
        "}],"
        "\"usage\":{\"prompt_tokens\":12.7,\"completion_tokens\":3e2,\"total_tokens\":1e300,"
        "\"details\":{\"n\":123456789012345678901234567890123456789012345678901234567890123456789}}}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, nested, &r), 0);
    assert_string_equal(r.text, "yes");
    assert_true(r.usage.has);
    assert_int_equal(r.usage.prompt_tokens, 12); /* truncated, as from cJSON's valuedouble */
    assert_int_equal(r.usage.completion_tokens, 300);
    assert_int_equal(r.usage.total_tokens, 312); /* 1e300 is not a sane count: prompt + completion */
    llm_result_free(&r);

    const char *huge = "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1e20,"
                       "\"completion_tokens\":1}}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, huge, &r), 0);
    assert_false(r.usage.has);
    llm_result_free(&r);

    const char *uni =
        "{\"choices\":[{\"message\":{\"content\":\"caf\\u00e9 \\ud83d\\ude00 \\ud800! \\\"q\\\"\\n\"},"
        "\"finish_reason\":\"st\\u006fp\"}],\"model\":\"m\\u00fcnchen\"}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, uni, &r), 0);
    assert_string_equal(r.text, "caf\xC3\xA9 \xF0\x9F\x98\x80 \xEF\xBF\xBD! \"q\"\n");
    assert_int_equal(r.text_len, strlen(r.text));
    assert_string_equal(r.finish_reason, "stop");
    assert_string_equal(r.model, "m\xC3\xBCnchen");
    llm_result_free(&r);

    const char *nul =
        "{\"choices\":[{\"message\":{\"content\":\"ab\\u0000cd\"}}]}"; /* cJSON: up to the NUL */
    assert_int_equal(parse(PROVIDER_OPENAI, 200, nul, &r), 0);
    assert_string_equal(r.text, "ab");
    assert_int_equal(r.text_len, 2);
    llm_result_free(&r);

    const char *types =
        "{\"model\":7,\"choices\":[{\"message\":{\"content\":\"t\"},\"finish_reason\":[\"stop\"]}],"
        "\"usage\":{\"prompt_tokens\":\"5\",\"completion_tokens\":1}}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, types, &r), 0);
    assert_string_equal(r.model, "");
    assert_string_equal(r.finish_reason, "");
    assert_false(r.usage.has);
    llm_result_free(&r);
    assert_int_equal(parse(PROVIDER_OPENAI, 200, "{\"choices\":[{\"message\":{\"content\":5}}]}", &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
    llm_result_free(&r);
    assert_int_equal(
        parse(PROVIDER_ANTHROPIC, 200, "{\"type\":\"message\",\"content\":{\"text\":\"x\"}}", &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
    llm_result_free(&r);
    const char *blocks =
        "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"a\\u00e9\"},\"junk\",7,"
        "{\"type\":\"t\\u0065xt\",\"text\":\"b\"},{\"type\":\"text\",\"text\":1},{\"type\":\"text\"}],"
        "\"usage\":{\"input_tokens\":1,\"cache_read_input_tokens\":2,\"output_tokens\":3}}";
    assert_int_equal(parse(PROVIDER_ANTHROPIC, 200, blocks, &r), 0);
    assert_string_equal(r.text, "a\xC3\xA9"
                                "b");
    assert_int_equal(r.usage.prompt_tokens, 3);
    llm_result_free(&r);

    const char *numcode = "{\"error\":{\"message\":\"slow down\",\"type\":\"requests\",\"code\":429}}";
    assert_int_equal(parse(PROVIDER_OPENAI, 429, numcode, &r), -1);
    assert_string_equal(r.error.code, "429");
    assert_string_equal(r.error.type, "requests");
    llm_result_free(&r);
    assert_int_equal(parse(PROVIDER_OPENAI, 500, "{\"error\":\"boom \\u00e9\"}", &r), -1);
    assert_string_equal(r.error.type, "error");
    assert_string_equal(r.error.message, "boom \xC3\xA9");
    llm_result_free(&r);
    assert_int_equal(parse(PROVIDER_OPENAI, 200, "{\"error\":false,\"choices\":[]}", &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_PROVIDER); /* any error member but null, as before */
    assert_string_equal(r.error.message, "provider error");
    llm_result_free(&r);
    assert_int_equal(parse(PROVIDER_OPENAI, 503, "{\"error\":null,\"detail\":\"x\"}", &r), -1);
    assert_string_equal(r.error.type, "http_503");
    llm_result_free(&r);

    const char *bom = "\xEF\xBB\xBF{\"choices\":[{\"message\":{\"content\":\"bom\"}}]}";
    assert_int_equal(parse(PROVIDER_OPENAI, 200, bom, &r), 0);
    assert_string_equal(r.text, "bom");
    llm_result_free(&r);

    /* a long message is cut on a UTF-8 boundary, as llm_copy_str cuts */
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append_str(&b, "{\"error\":{\"type\":\"x\",\"message\":\""), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_append_str(&b, "\\u00e9"), 0);
    assert_int_equal(buf_append_str(&b, "\"}}"), 0);
    assert_int_equal(parse(PROVIDER_OPENAI, 400, b.data, &r), -1);
    assert_int_equal(strlen(r.error.message), 510);
    buf_free(&b);
    llm_result_free(&r);
}

static void classification_table(void **state)
{
    static const int retry[] = {408, 409, 429, 500, 502, 503, 504, 529};
    static const int permanent[] = {400, 401, 403, 404, 413, 422, 301};
    for (size_t i = 0; i < BASE_ARRAY_LEN(retry); i++)
        assert_int_equal(llm_error_classify(retry[i], "invalid_request_error"), LLM_RETRY_YES);
    for (size_t i = 0; i < BASE_ARRAY_LEN(permanent); i++)
        assert_int_equal(llm_error_classify(permanent[i], "overloaded_error"), LLM_RETRY_NO);
    assert_int_equal(llm_error_classify(0, "overloaded_error"), LLM_RETRY_YES);
    assert_int_equal(llm_error_classify(0, "rate_limit_error"), LLM_RETRY_YES);
    assert_int_equal(llm_error_classify(0, "api_error"), LLM_RETRY_YES);
    assert_int_equal(llm_error_classify(200, "server_error"), LLM_RETRY_YES);
    assert_int_equal(llm_error_classify(0, "invalid_request_error"), LLM_RETRY_NO);
    assert_int_equal(llm_error_classify(0, "authentication_error"), LLM_RETRY_NO);
    assert_int_equal(llm_error_classify(0, "permission_error"), LLM_RETRY_NO);
    assert_int_equal(llm_error_classify(0, "not_found_error"), LLM_RETRY_NO);
    assert_string_equal(llm_err_kind_name(LLM_ERR_CUT), "stream_cut");
    assert_string_equal(llm_err_kind_name(LLM_ERR_MALFORMED), "malformed_response");
}

/* ---- SSE parser ------------------------------------------------------------------------------- */

/* Parses all of in (in one feed call sequence) and writes "type=data|" per event into out. */
static int sse_collect(llm_sse_t *p, const char *in, size_t n, buf_t *out)
{
    while (n > 0) {
        size_t used;
        llm_sse_event_t ev;
        int rc = llm_sse_feed(p, in, n, &used, &ev);
        in += used;
        n -= used;
        if (rc < 0)
            return rc;
        if (rc == LLM_SSE_EVENT) {
            buf_append(out, ev.type, ev.type_len);
            buf_append(out, "=", 1);
            buf_append(out, ev.data, ev.data_len);
            buf_append(out, "|", 1);
        }
    }
    return 0;
}

static void sse_follows_the_spec(void **state)
{
    static const char in[] = "\xEF\xBB\xBF: comment\n"
                             "data:no-space\n\n"
                             "data:  two\n\n"
                             "event: ev1\ndata: a\ndata:\ndata: b\nid: 7\nretry: 100\nunknown: x\n\n"
                             "event: lonely\n\n"
                             "data\n\n"
                             "data: after\r\n\r\n"
                             "event: crlf\r\ndata: y1\r\ndata: y2\r\n\r\n"
                             "data: cr\r\rdata: tail-without-blank\n";
    static const char want[] =
        "message=no-space|message= two|ev1=a\n\nb|message=|message=after|crlf=y1\ny2|message=cr|";
    for (size_t split = 0; split <= sizeof in - 1; split++) {
        llm_sse_t p;
        buf_t out;
        llm_sse_init(&p, 0, 0);
        buf_init(&out, 0);
        assert_int_equal(sse_collect(&p, in, split, &out), 0);
        assert_int_equal(sse_collect(&p, in + split, sizeof in - 1 - split, &out), 0);
        assert_string_equal(out.data, want);
        buf_free(&out);
        llm_sse_free(&p);
    }
}

static void sse_partial_bom_is_content(void **state)
{
    /* "\xEF\xBB" then "d" is no BOM: the line's field becomes "\xEF\xBBdata", ignored; a BOM after
     * the start is content too */
    static const char in[] = "\xEF\xBB"
                             "data: x\n\n\xEF\xBB\xBF"
                             "data: y\n\n"
                             "data: z\n\n";
    llm_sse_t p;
    buf_t out;
    llm_sse_init(&p, 0, 0);
    buf_init(&out, 0);
    assert_int_equal(sse_collect(&p, in, sizeof in - 1, &out), 0);
    assert_string_equal(out.data, "message=z|");
    buf_free(&out);
    llm_sse_free(&p);
}

static void sse_bounds_lines_and_events(void **state)
{
    llm_sse_t p;
    buf_t out;
    llm_sse_init(&p, 16, 32);
    buf_init(&out, 0);
    assert_int_equal(sse_collect(&p, "data: 0123456789\n\n", 18, &out), 0); /* 16-byte line: at the limit */
    assert_int_equal(sse_collect(&p, ": 01234567890123456", 19, &out), LLM_SSE_E_LINE);
    assert_int_equal(sse_collect(&p, "\n\n", 2, &out), LLM_SSE_E_LINE); /* sticky */
    llm_sse_free(&p);
    llm_sse_init(&p, 16, 32);
    assert_int_equal(sse_collect(&p, "data: 0123456789\ndata: 0123456789\ndata: 0123456789\n", 51, &out),
                     LLM_SSE_E_DATA);
    llm_sse_free(&p);
    buf_free(&out);
}

/* ---- Streams ---------------------------------------------------------------------------------- */

struct llm_stream_sink {
    buf_t text;
    int firsts;
    int pieces;
};

static void on_delta(llm_stream_sink_t *sink, const char *text, size_t len, bool first)
{
    assert_true(len > 0);
    buf_append(&sink->text, text, len);
    sink->firsts += first;
    assert_true(!first || sink->pieces == 0);
    sink->pieces++;
}

static const char openai_stream[] =
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":"
    "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":"
    "null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", caf\\u00e9 "
    "\xe2\x98\x95\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\\n\"},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":"
    "\"stop\"}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,"
    "\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n"
    "data: [DONE]\n\n";

static const char anthropic_stream[] =
    "event: message_start\n"
    "data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_01\", \"type\": \"message\", \"role\": "
    "\"assistant\", \"content\": [], \"model\": \"claude-sonnet-4-20250514\", \"stop_reason\": null, "
    "\"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"cache_creation_input_tokens\": 0, "
    "\"cache_read_input_tokens\": 10, \"output_tokens\": 1}}}\n\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: content_block_start\n"
    "data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"thinking\", "
    "\"thinking\": \"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"thinking_delta\", "
    "\"thinking\": \"Let me solve this step by step...\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"signature_delta\", "
    "\"signature\": \"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\": \"content_block_start\", \"index\": 1, \"content_block\": {\"type\": \"text\", "
    "\"text\": "
    "\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\": \"content_block_delta\", \"index\": 1, \"delta\": {\"type\": \"text_delta\", \"text\": "
    "\"27 * 453 = \"}}\n\n"
    "event: future_event_type\ndata: {\"type\": \"future_event_type\", \"text\": \"ignored\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\": \"content_block_delta\", \"index\": 1, \"delta\": {\"type\": \"text_delta\", \"text\": "
    "\"12,231 \\u2014 done.\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 1}\n\n"
    "event: message_delta\n"
    "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\": "
    "null}, "
    "\"usage\": {\"output_tokens\": 15}}\n\n"
    "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n";

typedef struct {
    provider_type_t type;
    const char *stream;
    size_t len;
    const char *text;
    const char *finish;
    const char *model;
    int64_t prompt, completion;
} stream_case_t;

/* Feeds data into a new stream in chunks: [0,split) then the rest in pieces of step (0 = one piece). */
static int run_stream(provider_type_t t, const char *data, size_t len, size_t split, size_t step,
                      llm_stream_sink_t *sink, llm_result_t *out)
{
    buf_init(&sink->text, 0);
    sink->firsts = sink->pieces = 0;
    llm_stream_t *s = llm_stream_new(t, 0, 0, on_delta, sink);
    assert_non_null(s);
    int rc = llm_stream_feed(s, data, split);
    for (size_t i = split; rc == 0 && i < len; i += step ? step : len - split) {
        size_t n = step && i + step < len ? step : len - i;
        rc = llm_stream_feed(s, data + i, n);
    }
    bool complete = llm_stream_complete(s);
    int frc = llm_stream_finish(s, out);
    assert_true(frc < 0 || complete);
    assert_true(out->error.kind != LLM_ERR_CUT || !complete);
    llm_stream_free(s);
    return rc < 0 ? rc : frc;
}

/* A copy of s with every "\n" replaced by eol. */
static char *with_eol(const char *s, const char *eol, size_t *len)
{
    buf_t b;
    buf_init(&b, 0);
    for (; *s; s++)
        assert_int_equal(*s == '\n' ? buf_append_str(&b, eol) : buf_append(&b, s, 1), 0);
    return buf_steal(&b, len);
}

static void check_stream(const stream_case_t *c, const char *data, size_t len, size_t split, size_t step)
{
    llm_stream_sink_t sink;
    llm_result_t r;
    assert_int_equal(run_stream(c->type, data, len, split, step, &sink, &r), 0);
    assert_string_equal(r.text, c->text);
    assert_string_equal(sink.text.data, c->text);
    assert_int_equal(sink.firsts, 1);
    assert_string_equal(r.finish_reason, c->finish);
    assert_string_equal(r.model, c->model);
    assert_true(r.usage.has);
    assert_int_equal(r.usage.prompt_tokens, c->prompt);
    assert_int_equal(r.usage.completion_tokens, c->completion);
    assert_int_equal(r.usage.total_tokens, c->prompt + c->completion);
    llm_result_free(&r);
    buf_free(&sink.text);
}

static void check_stream_every_way(const stream_case_t *c)
{
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    for (size_t e = 0; e < BASE_ARRAY_LEN(eols); e++) {
        size_t len;
        char *data = with_eol(c->stream, eols[e], &len);
        check_stream(c, data, len, len, 0); /* whole */
        check_stream(c, data, len, 0, 1);   /* one byte at a time */
        for (size_t split = 0; split <= len; split++)
            check_stream(c, data, len, split, 0);
        free(data);
    }
}

static const stream_case_t openai_case = {PROVIDER_OPENAI,
                                          openai_stream,
                                          sizeof openai_stream - 1,
                                          "Hello, caf\xc3\xa9 \xe2\x98\x95!\n",
                                          "stop",
                                          "gpt-4o-mini-2024-07-18",
                                          9,
                                          12};
static const stream_case_t anthropic_case = {PROVIDER_ANTHROPIC,
                                             anthropic_stream,
                                             sizeof anthropic_stream - 1,
                                             "27 * 453 = 12,231 \xe2\x80\x94 done.",
                                             "stop",
                                             "claude-sonnet-4-20250514",
                                             35,
                                             15};

static void openai_stream_any_chunking(void **state) { check_stream_every_way(&openai_case); }
static void anthropic_stream_any_chunking(void **state) { check_stream_every_way(&anthropic_case); }

static void cut_streams_are_errors(void **state)
{
    const stream_case_t *cases[] = {&openai_case, &anthropic_case};
    const char *marker[] = {"[DONE]", "message_stop"};
    for (size_t c = 0; c < 2; c++) {
        /* every cut before the final blank line (the end marker's dispatch) */
        const char *end = strstr(cases[c]->stream, marker[c]);
        size_t last = (size_t)(strchr(end, '\n') - cases[c]->stream) + 1;
        for (size_t cut = 0; cut <= last; cut += cut < last - 40 ? 17 : 1) {
            llm_stream_sink_t sink;
            llm_result_t r;
            assert_int_equal(run_stream(cases[c]->type, cases[c]->stream, cut, cut, 0, &sink, &r), -1);
            assert_int_equal(r.error.kind, LLM_ERR_CUT);
            assert_non_null(strstr(r.error.message, marker[c]));
            assert_int_equal(r.error.retry, LLM_RETRY_YES);
            assert_null(r.text);
            llm_result_free(&r);
            buf_free(&sink.text);
        }
    }
}

static void mid_stream_errors(void **state)
{
    static const char oa[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\","
        "\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n";
    static const char an[] =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\","
        "\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", "
        "\"message\": \"Overloaded\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    static const char bad[] = "data: {\"choices\":[]}\n\ndata: not json\n\ndata: [DONE]\n\n";
    llm_stream_sink_t sink;
    llm_result_t r;
    assert_int_equal(run_stream(PROVIDER_OPENAI, oa, sizeof oa - 1, 7, 3, &sink, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_PROVIDER);
    assert_string_equal(r.error.type, "server_error");
    assert_int_equal(r.error.retry, LLM_RETRY_YES);
    assert_string_equal(sink.text.data, "Hel");
    buf_free(&sink.text);
    llm_result_free(&r);
    assert_int_equal(run_stream(PROVIDER_ANTHROPIC, an, sizeof an - 1, 0, 5, &sink, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_PROVIDER);
    assert_string_equal(r.error.type, "overloaded_error");
    assert_string_equal(r.error.message, "Overloaded");
    assert_int_equal(r.error.retry, LLM_RETRY_YES);
    buf_free(&sink.text);
    llm_result_free(&r);
    assert_int_equal(run_stream(PROVIDER_OPENAI, bad, sizeof bad - 1, 0, 0, &sink, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
    buf_free(&sink.text);
    llm_result_free(&r);
}

static void stream_edge_cases(void **state)
{
    static const char tools[] =
        "data: "
        "{\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
        "data: "
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}"
        "\"}}]},"
        "\"finish_reason\":\"tool_calls\"}],\"x_unknown\":{\"a\":1}}\n\ndata: [DONE]\n\n";
    llm_stream_sink_t sink;
    llm_result_t r;
    assert_int_equal(run_stream(PROVIDER_OPENAI, tools, sizeof tools - 1, 0, 0, &sink, &r), 0);
    assert_string_equal(r.text, "");
    assert_string_equal(r.finish_reason, "tool_calls");
    assert_false(r.usage.has);
    assert_int_equal(sink.pieces, 0);
    buf_free(&sink.text);
    llm_result_free(&r);
    /* [DONE] with no chunk at all is not an answer */
    assert_int_equal(run_stream(PROVIDER_OPENAI, "data: [DONE]\n\n", 14, 0, 0, &sink, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
    buf_free(&sink.text);
    llm_result_free(&r);
    /* bytes after the end marker are ignored */
    static const char after[] = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
                                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\ngarbage\n\n";
    assert_int_equal(run_stream(PROVIDER_ANTHROPIC, after, sizeof after - 1, 0, 0, &sink, &r), 0);
    assert_false(r.usage.has);
    buf_free(&sink.text);
    llm_result_free(&r);
}

/* Stream events with escapes, wrong types and JSON that is not one object. */
static void stream_events_read_like_cjson(void **state)
{
    static const char oa[] =
        "data: {\"model\":\"m\",\"model\":\"n\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
        "\"\\u00e9\\ud83d\\ude00\"}}]}\n\n"
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n"
        "data: {\"choices\":[{\"index\":0.0,\"delta\":{\"content\":7}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"content\":\"\\\\ \\\"\"},\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    llm_stream_sink_t sink;
    llm_result_t r;
    assert_int_equal(run_stream(PROVIDER_OPENAI, oa, sizeof oa - 1, 0, 0, &sink, &r), 0);
    assert_string_equal(r.text, "\xC3\xA9\xF0\x9F\x98\x80\\ \"");
    assert_string_equal(r.model, "m");
    assert_string_equal(r.finish_reason, "stop");
    assert_int_equal(sink.pieces, 2);
    buf_free(&sink.text);
    llm_result_free(&r);

    static const char an[] =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\","
        "\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":1}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
        "{\"type\":\"text_delta\",\"text\":\"\\u4f60\\u597d\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":"
        "{\"type\":\"thinking_delta\",\"thinking\":\"hmm\",\"text\":\"no\"}}\n\n"
        "event: ping\ndata: {\"type\": \"ping\"}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_int_equal(run_stream(PROVIDER_ANTHROPIC, an, sizeof an - 1, 0, 0, &sink, &r), 0);
    assert_string_equal(r.text, "\xE4\xBD\xA0\xE5\xA5\xBD");
    assert_string_equal(r.finish_reason, "stop");
    assert_int_equal(r.usage.prompt_tokens, 6);
    assert_int_equal(r.usage.completion_tokens, 9);
    buf_free(&sink.text);
    llm_result_free(&r);

    static const char *const bad[] = {
        "data: {\"choices\":[]} trailing\n\n",
        "data: [1,2]\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"raw\ttab\"}}]}\n\n",
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        assert_int_equal(run_stream(PROVIDER_OPENAI, bad[i], strlen(bad[i]), 0, 0, &sink, &r), -1);
        assert_int_equal(r.error.kind, LLM_ERR_MALFORMED);
        buf_free(&sink.text);
        llm_result_free(&r);
    }
}

static void over_long_line_is_an_error(void **state)
{
    llm_stream_sink_t sink = {0};
    buf_init(&sink.text, 0);
    llm_stream_t *s = llm_stream_new(PROVIDER_OPENAI, 64, 128, on_delta, &sink);
    char line[100];
    memset(line, 'x', sizeof line);
    assert_int_equal(llm_stream_feed(s, "data: ", 6), 0);
    assert_int_equal(llm_stream_feed(s, line, sizeof line), -1);
    assert_int_equal(llm_stream_feed(s, "\n\ndata: [DONE]\n\n", 16), -1);
    llm_result_t r;
    assert_int_equal(llm_stream_finish(s, &r), -1);
    assert_int_equal(r.error.kind, LLM_ERR_LIMIT);
    assert_non_null(strstr(r.error.message, "64"));
    llm_result_free(&r);
    llm_stream_free(s);
    buf_free(&sink.text);
}

/* ---- Allocation failures ---------------------------------------------------------------------- */

static int torture_request(provider_type_t t)
{
    config_provider_t p = provider(t, "sk-x");
    llm_params_t params = {.has_seed = true, .seed = 1, .has_temperature = true, .temperature = 1};
    llm_request_t r;
    char err[128];
    int rc =
        llm_request_build(&p, conversation, BASE_ARRAY_LEN(conversation), &params, true, &r, err, sizeof err);
    if (rc == 0)
        llm_request_free(&r);
    else
        assert_null(r.body);
    return rc;
}

static int torture_parse(provider_type_t t)
{
    llm_result_t r;
    const char *body = t == PROVIDER_OPENAI ? openai_completion : anthropic_message;
    int rc = parse(t, 200, body, &r);
    if (rc < 0)
        assert_int_equal(r.error.kind, LLM_ERR_NOMEM);
    llm_result_free(&r);
    return rc;
}

static int torture_stream(provider_type_t t)
{
    const stream_case_t *c = t == PROVIDER_OPENAI ? &openai_case : &anthropic_case;
    llm_stream_sink_t sink = {0};
    llm_stream_t *s = llm_stream_new(t, 0, 0, NULL, &sink);
    if (!s)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < c->len; i += 50)
        rc = llm_stream_feed(s, c->stream + i, c->len - i < 50 ? c->len - i : 50);
    llm_result_t r;
    int frc = llm_stream_finish(s, &r);
    assert_int_equal(rc, frc);
    if (frc < 0)
        assert_int_equal(r.error.kind, LLM_ERR_NOMEM);
    else
        assert_string_equal(r.text, c->text);
    llm_result_free(&r);
    llm_stream_free(s);
    return frc;
}

static void allocation_failures_are_clean(void **state)
{
    int (*ops[])(provider_type_t) = {torture_request, torture_parse, torture_stream};
    for (size_t o = 0; o < BASE_ARRAY_LEN(ops); o++) {
        for (int t = PROVIDER_OPENAI; t <= PROVIDER_ANTHROPIC; t++) {
            long n = 1;
            for (;; n++) {
                assert_true(n < 10000);
                base_alloc_fail_after(n);
                int rc = ops[o]((provider_type_t)t);
                base_alloc_fail_after(0);
                if (rc == 0)
                    break;
            }
            assert_true(n > 1);
        }
    }
}

/* ---- Cost ------------------------------------------------------------------------------------- */

static void cost_from_prices(void **state)
{
    config_provider_t p = provider(PROVIDER_OPENAI, NULL);
    llm_usage_t u = {
        .prompt_tokens = 1000000, .completion_tokens = 500000, .total_tokens = 1500000, .has = true};
    double usd = 0;
    assert_int_equal(llm_cost_usd(&p, &u, &usd), -1);
    p.price_input_per_mtok = 0.15;
    p.price_output_per_mtok = 0.60;
    p.price_set = true;
    assert_int_equal(llm_cost_usd(&p, &u, &usd), 0);
    assert_true(usd > 0.4499999 && usd < 0.4500001);
    u.has = false;
    assert_int_equal(llm_cost_usd(&p, &u, &usd), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_request_has_every_param),
        cmocka_unit_test(openai_request_without_key_or_params),
        cmocka_unit_test(anthropic_request_maps_system_merges_and_drops_seed),
        cmocka_unit_test(anthropic_request_defaults),
        cmocka_unit_test(request_content_is_escaped_and_utf8_safe),
        cmocka_unit_test(content_json_gives_the_same_body),
        cmocka_unit_test(configured_headers_replace_defaults_and_are_checked),
        cmocka_unit_test(request_errors_never_show_the_key),
        cmocka_unit_test(prompt_tokens_estimate),
        cmocka_unit_test(openai_completion_parses),
        cmocka_unit_test(openai_tool_calls_have_empty_text),
        cmocka_unit_test(anthropic_message_skips_thinking),
        cmocka_unit_test(error_bodies_are_classified),
        cmocka_unit_test(bad_2xx_bodies_are_malformed),
        cmocka_unit_test(answers_read_like_cjson),
        cmocka_unit_test(stream_events_read_like_cjson),
        cmocka_unit_test(classification_table),
        cmocka_unit_test(sse_follows_the_spec),
        cmocka_unit_test(sse_partial_bom_is_content),
        cmocka_unit_test(sse_bounds_lines_and_events),
        cmocka_unit_test(openai_stream_any_chunking),
        cmocka_unit_test(anthropic_stream_any_chunking),
        cmocka_unit_test(cut_streams_are_errors),
        cmocka_unit_test(mid_stream_errors),
        cmocka_unit_test(stream_edge_cases),
        cmocka_unit_test(over_long_line_is_an_error),
        cmocka_unit_test(allocation_failures_are_clean),
        cmocka_unit_test(cost_from_prices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
