/* test_dev.c — the dev stack: mock providers driven over loopback HTTP by libcurl (JSON answers,
 * SSE streams reassembled, errors with Retry-After, cut streams, disconnects counted, knobs changed
 * at run time, repeatable randomness), and the mock broker's topics. The mocks run on a libuv loop
 * in a background thread, on ports chosen at run time, and are stopped by the group teardown. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "base/base.h"
#include "dev/dev.h"

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    dev_mock_t *openai, *anthropic;
    char oa_url[128], an_url[128]; /* http://127.0.0.1:PORT */
} fixture_t;

static fixture_t fx;

static void on_stop(uv_async_t *a)
{
    dev_mock_close(fx.openai);
    dev_mock_close(fx.anthropic);
    uv_close((uv_handle_t *)a, NULL);
}

static void *loop_main(void *arg)
{
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    return NULL;
}

static int group_setup(void **state)
{
    char err[256];
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (uv_loop_init(&fx.loop) < 0 || uv_async_init(&fx.loop, &fx.stop, on_stop) < 0)
        return -1;
    fx.openai = dev_mock_new(&fx.loop, "mock-oa", DEV_MOCK_OPENAI, NULL, err, sizeof err);
    fx.anthropic = dev_mock_new(&fx.loop, "mock-an", DEV_MOCK_ANTHROPIC, "ping=1", err, sizeof err);
    if (!fx.openai || !fx.anthropic || dev_mock_listen(fx.openai, "127.0.0.1", 0, err, sizeof err) < 0 ||
        dev_mock_listen(fx.anthropic, "127.0.0.1", 0, err, sizeof err) < 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    snprintf(fx.oa_url, sizeof fx.oa_url, "http://127.0.0.1:%d", dev_mock_port(fx.openai));
    snprintf(fx.an_url, sizeof fx.an_url, "http://127.0.0.1:%d", dev_mock_port(fx.anthropic));
    return pthread_create(&fx.thread, NULL, loop_main, NULL) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    uv_async_send(&fx.stop);
    pthread_join(fx.thread, NULL);
    int rc = uv_loop_close(&fx.loop); /* fails (UV_EBUSY) if a handle leaked */
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

/* ---- a small libcurl client ---- */

typedef struct {
    bool h2; /* in: HTTP/2 with prior knowledge */
    buf_t body;
    char retry_after[32];
    char status_line[32]; /* the first header line without CRLF ("HTTP/2 200") */
    long status, version; /* version: CURLINFO_HTTP_VERSION */
    CURLcode code;
    size_t abort_after; /* abort the transfer once this many body bytes arrived (0 = never) */
    double secs;
} resp_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    resp_t *r = ud;
    buf_append(&r->body, p, size * n);
    return r->abort_after && r->body.len >= r->abort_after ? 0 : size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    resp_t *r = ud;
    size_t len = size * n;
    if (!r->status_line[0]) /* without the CRLF and HTTP/2's trailing space */
        snprintf(r->status_line, sizeof r->status_line, "%.*s",
                 (int)(len > 3 && p[len - 3] == ' ' ? len - 3
                       : len > 2                    ? len - 2
                                                    : 0),
                 p);
    if (len > 13 && strncasecmp(p, "Retry-After: ", 13) == 0)
        snprintf(r->retry_after, sizeof r->retry_after, "%.*s", (int)(len - 15), p + 13);
    return len;
}

/* Sets h up for one request into r (body NULL = GET; timeout_ms 0 = none); returns the header list
 * to free after the transfer. */
static struct curl_slist *prepare(CURL *h, const char *base, const char *path, const char *body,
                                  long timeout_ms, resp_t *r)
{
    char url[256];
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    snprintf(url, sizeof url, "%s%s", base, path);
    buf_init(&r->body, 0);
    buf_append_str(&r->body, "");
    r->retry_after[0] = r->status_line[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
                     r->h2 ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : (long)CURL_HTTP_VERSION_1_1);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    else
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    return hdrs;
}

/* Reads the transfer's status and HTTP version into r. */
static void finish(CURL *h, resp_t *r)
{
    r->status = r->version = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &r->version);
}

/* One request; body NULL = GET. timeout_ms 0 = none. Uses the shared handle when keep is given. */
static void http(CURL *keep, const char *base, const char *path, const char *body, long timeout_ms, resp_t *r)
{
    CURL *h = keep ? keep : curl_easy_init();
    struct curl_slist *hdrs = prepare(h, base, path, body, timeout_ms, r);
    int64_t t0 = base_mono_ms();
    r->code = curl_easy_perform(h);
    r->secs = (double)(base_mono_ms() - t0) / 1000.0;
    finish(h, r);
    curl_slist_free_all(hdrs);
    if (!keep)
        curl_easy_cleanup(h);
}

static void resp_free(resp_t *r) { buf_free(&r->body); }

/* Sets knobs through POST /control (asserting it worked) and zeroes the counters. */
static void knobs(const char *base, const char *json)
{
    resp_t r = {0};
    http(NULL, base, "/control", json, 2000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    http(NULL, base, "/stats/reset", "", 2000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static const char *const defaults_json =
    "{\"latency_ms\":0,\"tail_ms\":0,\"tail_prob\":0,\"token_ms\":0,\"fail_rate\":0,\"fail_status\":500,"
    "\"fail_next\":0,\"retry_after_s\":1,\"cut_after\":-1,\"error_after\":-1,\"drip_ms\":0,\"not_json\":0,"
    "\"pad_bytes\":0,\"comments\":1,\"crlf\":0,\"ping\":1,\"thinking\":0,\"seed\":1}";

static int reset_knobs(void **state)
{
    knobs(fx.oa_url, defaults_json);
    knobs(fx.an_url, defaults_json);
    return 0;
}

/* GET /stats parsed; the caller deletes it. */
static cJSON *stats(const char *base)
{
    resp_t r = {0};
    http(NULL, base, "/stats", NULL, 2000, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    resp_free(&r);
    return j;
}

static double jnum(const cJSON *j, const char *path)
{
    char key[64];
    const char *p = path;
    while (j && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        j = cJSON_GetObjectItemCaseSensitive(j, key);
        p += n + (dot ? 1 : 0);
    }
    assert_true(cJSON_IsNumber(j));
    return j->valuedouble;
}

/* Polls a /stats number until it equals want (up to 3 s); returns the last value. */
static double stats_wait(const char *base, const char *path, double want)
{
    double v = -1;
    for (int i = 0; i < 60; i++) {
        cJSON *s = stats(base);
        v = jnum(s, path);
        cJSON_Delete(s);
        if (v == want)
            break;
        nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    }
    return v;
}

/* ---- SSE reassembly ---- */

typedef struct {
    char text[4096];
    char events[64][32]; /* Anthropic event names in order */
    int n_events, n_deltas, n_comments;
    bool done, usage_chunk, error_event, thinking, signature;
    long long completion_tokens;
    int text_index;
} sse_t;

/* Splits the stream into events (by blank lines; LF or CRLF) and folds them into out. */
static void sse_parse(const char *s, dev_mock_type_t type, sse_t *out)
{
    memset(out, 0, sizeof *out);
    out->text_index = -1;
    char event[32] = "";
    for (const char *line = s; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n && line[n - 1] == '\r')
            n--;
        if (n >= 7 && strncmp(line, "event: ", 7) == 0) {
            snprintf(event, sizeof event, "%.*s", (int)(n - 7), line + 7);
            if (out->n_events < 64)
                snprintf(out->events[out->n_events++], 32, "%s", event);
        } else if (n >= 1 && line[0] == ':') {
            out->n_comments++;
        } else if (n >= 6 && strncmp(line, "data: ", 6) == 0) {
            if (n == 12 && strncmp(line + 6, "[DONE]", 6) == 0) {
                out->done = true;
            } else {
                cJSON *j = cJSON_ParseWithLength(line + 6, n - 6);
                assert_non_null(j);
                if (cJSON_GetObjectItem(j, "error"))
                    out->error_event = true;
                const cJSON *delta =
                    type == DEV_MOCK_OPENAI
                        ? cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                              "delta")
                        : cJSON_GetObjectItem(j, "delta");
                const cJSON *content =
                    cJSON_GetObjectItem(delta, type == DEV_MOCK_OPENAI ? "content" : "text");
                if (cJSON_IsString(content) && *content->valuestring) {
                    strncat(out->text, content->valuestring, sizeof out->text - strlen(out->text) - 1);
                    out->n_deltas++;
                    if (type == DEV_MOCK_ANTHROPIC)
                        out->text_index = (int)jnum(j, "index");
                }
                if (cJSON_GetObjectItem(delta, "thinking"))
                    out->thinking = true;
                if (cJSON_GetObjectItem(delta, "signature"))
                    out->signature = true;
                const cJSON *usage = cJSON_GetObjectItem(j, "usage");
                if (type == DEV_MOCK_OPENAI && cJSON_IsObject(usage)) {
                    out->usage_chunk = cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")) == 0;
                    out->completion_tokens = (long long)jnum(usage, "completion_tokens");
                }
                if (type == DEV_MOCK_ANTHROPIC && strcmp(event, "message_delta") == 0)
                    out->completion_tokens = (long long)jnum(usage, "output_tokens");
                cJSON_Delete(j);
            }
        }
        line += n + (nl ? 1 : 0);
        if (*line == '\n')
            line++;
    }
}

static const char *const oa_req =
    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief and kind to every "
    "user\"},{\"role\":\"user\",\"content\":\"hi there\"},{\"role\":\"assistant\",\"content\":\"hello!\"},"
    "{\"role\":\"user\",\"content\":\"what is 2+2\"}]%s}";
static const char *const oa_text = "[mock-oa] n=4 sys=Be brief and kind to eve prev=hello! | what is 2+2";
static const char *const an_req = "{\"model\":\"claude-x\",\"max_tokens\":64,\"system\":\"Answer in "
                                  "French\",\"messages\":[{\"role\":\"user\","
                                  "\"content\":[{\"type\":\"text\",\"text\":\"bonjour\"}]}]%s}";
static const char *const an_text = "[mock-an] n=2 sys=Answer in French prev=Answer in French | bonjour";

/* Words of s (the mock's token count). */
static int words(const char *s)
{
    int n = 0;
    for (size_t i = 0; s[i]; i++)
        n += s[i] != ' ' && (i == 0 || s[i - 1] == ' ');
    return n;
}

static char *req(const char *fmt, const char *extra)
{
    static char b[1024];
    snprintf(b, sizeof b, fmt, extra);
    return b;
}

/* ---- tests ---- */

static void openai_json_answer(void **state)
{
    resp_t r = {0};
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    assert_memory_equal(cJSON_GetObjectItem(j, "id")->valuestring, "chatcmpl-", 9);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "gpt-4o-mini");
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItem(choice, "message");
    assert_string_equal(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant");
    assert_string_equal(cJSON_GetObjectItem(msg, "content")->valuestring, oa_text);
    assert_string_equal(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "stop");
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal((int)jnum(u, "completion_tokens"), words(oa_text));
    assert_true(jnum(u, "prompt_tokens") >= 1);
    assert_int_equal((int)jnum(u, "total_tokens"),
                     (int)(jnum(u, "prompt_tokens") + jnum(u, "completion_tokens")));
    cJSON_Delete(j);
    resp_free(&r);
}

static void openai_stream_reassembles(void **state)
{
    const char *knob_sets[] = {"{\"token_ms\":5}", "{\"crlf\":1,\"comments\":0}"};
    for (size_t k = 0; k < 2; k++) {
        knobs(fx.oa_url, knob_sets[k]);
        resp_t r = {0};
        http(NULL, fx.oa_url, "/v1/chat/completions",
             req(oa_req, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"), 5000, &r);
        assert_int_equal(r.code, CURLE_OK);
        assert_int_equal(r.status, 200);
        sse_t s;
        sse_parse(r.body.data, DEV_MOCK_OPENAI, &s);
        assert_string_equal(s.text, oa_text);
        assert_true(s.done);
        assert_true(s.usage_chunk);
        assert_int_equal(s.completion_tokens, s.n_deltas);
        assert_true(s.n_deltas > 5);
        assert_int_equal(s.n_comments > 0, k == 0);
        assert_int_equal(strstr(r.body.data, "\r\n\r\n") != NULL, k == 1);
        /* The answer ends with [DONE]. */
        const char *end = k ? "data: [DONE]\r\n\r\n" : "data: [DONE]\n\n";
        assert_string_equal(r.body.data + r.body.len - strlen(end), end);
        resp_free(&r);
        reset_knobs(state);
    }
}

static void anthropic_json_and_stream(void **state)
{
    resp_t r = {0};
    http(NULL, fx.an_url, "/v1/messages", req(an_req, ""), 5000, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "message");
    assert_memory_equal(cJSON_GetObjectItem(j, "id")->valuestring, "msg_", 4);
    assert_string_equal(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "end_turn");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "stop_sequence")));
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(c0, "type")->valuestring, "text");
    assert_string_equal(cJSON_GetObjectItem(c0, "text")->valuestring, an_text);
    assert_int_equal((int)jnum(j, "usage.output_tokens"), words(an_text));
    cJSON_Delete(j);
    resp_free(&r);

    for (int thinking = 0; thinking < 2; thinking++) {
        knobs(fx.an_url, thinking ? "{\"thinking\":true}" : "{\"token_ms\":2}");
        http(NULL, fx.an_url, "/v1/messages", req(an_req, ",\"stream\":true"), 5000, &r);
        assert_int_equal(r.code, CURLE_OK);
        sse_t s;
        sse_parse(r.body.data, DEV_MOCK_ANTHROPIC, &s);
        assert_string_equal(s.text, an_text);
        assert_int_equal(s.completion_tokens, s.n_deltas);
        assert_string_equal(s.events[0], "message_start");
        assert_string_equal(s.events[1], "ping");
        int i = 2;
        if (thinking) {
            assert_string_equal(s.events[i++], "content_block_start");
            assert_string_equal(s.events[i++], "content_block_delta");
            assert_string_equal(s.events[i++], "content_block_delta");
            assert_string_equal(s.events[i++], "content_block_stop");
        }
        assert_int_equal(s.thinking && s.signature, thinking);
        assert_int_equal(s.text_index, thinking);
        assert_string_equal(s.events[i], "content_block_start");
        assert_string_equal(s.events[s.n_events - 3], "content_block_stop");
        assert_string_equal(s.events[s.n_events - 2], "message_delta");
        assert_string_equal(s.events[s.n_events - 1], "message_stop");
        resp_free(&r);
        reset_knobs(state);
    }
}

static void anthropic_requires_max_tokens(void **state)
{
    resp_t r = {0};
    http(NULL, fx.an_url, "/v1/messages",
         "{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 5000, &r);
    assert_int_equal(r.status, 400);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "error");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                        "invalid_request_error");
    cJSON_Delete(j);
    resp_free(&r);
    http(NULL, fx.oa_url, "/v1/chat/completions", "not json", 5000, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body.data, "\"invalid_request_error\""));
    resp_free(&r);
    http(NULL, fx.oa_url, "/v1/messages", "{}", 5000, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

static void rate_limit_with_retry_after(void **state)
{
    knobs(fx.oa_url, "{\"fail_next\":1,\"fail_status\":429,\"retry_after_s\":7}");
    resp_t r = {0};
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.retry_after, "7");
    cJSON *j = cJSON_Parse(r.body.data);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, "rate_limit_exceeded");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "message")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(e, "param")));
    cJSON_Delete(j);
    resp_free(&r);
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.status, 200); /* fail_next counted down */
    resp_free(&r);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "responses.429"), 1);
    assert_int_equal((int)jnum(st, "responses.200"), 1);
    cJSON_Delete(st);

    knobs(fx.an_url, "{\"fail_rate\":1,\"fail_status\":529}");
    http(NULL, fx.an_url, "/v1/messages", req(an_req, ""), 5000, &r);
    assert_int_equal(r.status, 529);
    assert_string_equal(r.retry_after, "1");
    assert_non_null(strstr(r.body.data, "\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""));
    resp_free(&r);
}

/* An OpenAI stream the mock cuts after 3 deltas, over HTTP/2 or HTTP/1.1: it has the 3 deltas and no
 * [DONE], and the mock counts one cut stream; returns how the transfer ended. */
static CURLcode cut_openai_stream(bool h2)
{
    knobs(fx.oa_url, "{\"cut_after\":3,\"token_ms\":1}");
    resp_t r = {.h2 = h2};
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ",\"stream\":true"), 5000, &r);
    sse_t s;
    sse_parse(r.body.data, DEV_MOCK_OPENAI, &s);
    assert_false(s.done);
    assert_int_equal(s.n_deltas, 3);
    resp_free(&r);
    assert_int_equal((int)stats_wait(fx.oa_url, "cut_streams", 1), 1);
    return r.code;
}

static void cut_stream_has_no_done(void **state)
{
    assert_int_not_equal(cut_openai_stream(false), CURLE_OK); /* the chunked body never ended */
    resp_t r = {0};
    sse_t s;
    knobs(fx.an_url, "{\"error_after\":2}");
    http(NULL, fx.an_url, "/v1/messages", req(an_req, ",\"stream\":true"), 5000, &r);
    assert_int_equal(r.code, CURLE_OK);
    sse_parse(r.body.data, DEV_MOCK_ANTHROPIC, &s);
    assert_int_equal(s.n_deltas, 2);
    assert_true(s.error_event);
    assert_string_equal(s.events[s.n_events - 1], "error");
    resp_free(&r);
}

static void disconnect_is_counted(void **state)
{
    /* A client that gives up while waiting... */
    knobs(fx.oa_url, "{\"latency_ms\":2000}");
    resp_t r = {0};
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 200, &r);
    assert_int_equal(r.code, CURLE_OPERATION_TIMEDOUT);
    resp_free(&r);
    assert_int_equal((int)stats_wait(fx.oa_url, "client_disconnects", 1), 1);
    assert_int_equal((int)stats_wait(fx.oa_url, "in_flight.now", 0), 0);
    /* ... and one that leaves in the middle of a stream. */
    knobs(fx.oa_url, "{\"latency_ms\":0,\"token_ms\":50}");
    r.abort_after = 1;
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ",\"stream\":true"), 5000, &r);
    assert_int_equal(r.code, CURLE_WRITE_ERROR);
    resp_free(&r);
    assert_int_equal((int)stats_wait(fx.oa_url, "client_disconnects", 1), 1);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "requests.streamed"), 1);
    assert_int_equal((int)jnum(st, "in_flight.peak"), 1);
    cJSON_Delete(st);
}

static void control_changes_knobs(void **state)
{
    resp_t r = {0};
    http(NULL, fx.an_url, "/control", "{\"latency_ms\":300,\"tail_ms\":300,\"tail_prob\":0.25}", 2000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    http(NULL, fx.an_url, "/control", NULL, 2000, &r);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_int_equal((int)jnum(j, "latency_ms"), 300);
    assert_true(jnum(j, "tail_prob") == 0.25);
    cJSON_Delete(j);
    resp_free(&r);
    http(NULL, fx.an_url, "/v1/messages", req(an_req, ""), 5000, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.secs >= 0.29);
    resp_free(&r);
    http(NULL, fx.an_url, "/control", "{\"latency_msec\":1}", 2000, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body.data, "latency_msec"));
    resp_free(&r);
    http(NULL, fx.an_url, "/control", "{\"fail_rate\":2}", 2000, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
}

static void keep_alive_reuses_connection(void **state)
{
    CURL *h = curl_easy_init();
    resp_t r = {0};
    for (int i = 0; i < 5; i++) {
        http(h, fx.oa_url, "/v1/chat/completions", req(oa_req, i % 2 ? ",\"stream\":true" : ""), 5000, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    curl_easy_cleanup(h);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "requests.total"), 5);
    assert_int_equal((int)jnum(st, "requests.streamed"), 2);
    assert_int_equal((int)jnum(st, "connections.total"), 2); /* the 5 calls + this /stats */
    cJSON_Delete(st);
}

static void seed_makes_runs_repeatable(void **state)
{
    char first[41] = "", second[41] = "";
    char *runs[2] = {first, second};
    for (int run = 0; run < 2; run++) {
        knobs(fx.oa_url, "{\"fail_rate\":0.5,\"fail_status\":503,\"seed\":42}");
        CURL *h = curl_easy_init();
        for (int i = 0; i < 40; i++) {
            resp_t r = {0};
            http(h, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
            runs[run][i] = r.status == 200 ? '.' : 'x';
            resp_free(&r);
        }
        curl_easy_cleanup(h);
    }
    assert_string_equal(first, second);
    assert_non_null(strchr(first, '.'));
    assert_non_null(strchr(first, 'x'));
}

static void drip_and_not_json(void **state)
{
    knobs(fx.oa_url, "{\"drip_ms\":1}");
    resp_t r = {0};
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 10000, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j); /* dripped whole */
    cJSON_Delete(j);
    assert_true(r.secs >= 0.3); /* ~500 bytes at one per ms */
    resp_free(&r);
    knobs(fx.oa_url, "{\"drip_ms\":0,\"not_json\":1}");
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.status, 200);
    assert_null(cJSON_Parse(r.body.data));
    resp_free(&r);
}

/* ---- HTTP/2 (h2c, prior knowledge) ---- */

/* One HTTP/2 request. */
static void http2(const char *base, const char *path, const char *body, long timeout_ms, resp_t *r)
{
    r->h2 = true;
    http(NULL, base, path, body, timeout_ms, r);
}

static void h2_json_answers(void **state)
{
    resp_t r = {0};
    http2(fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.code, CURLE_OK);
    assert_int_equal(r.version, CURL_HTTP_VERSION_2_0);
    assert_string_equal(r.status_line, "HTTP/2 200");
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "message"), "content")->valuestring,
                        oa_text);
    cJSON_Delete(j);
    resp_free(&r);

    http2(fx.an_url, "/v1/messages", req(an_req, ""), 5000, &r);
    assert_int_equal(r.version, CURL_HTTP_VERSION_2_0);
    assert_int_equal(r.status, 200);
    j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "message");
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(c0, "text")->valuestring, an_text);
    cJSON_Delete(j);
    resp_free(&r);

    /* Admin endpoints and unknown paths answer on HTTP/2 too. */
    http2(fx.oa_url, "/stats", NULL, 2000, &r);
    assert_int_equal(r.status, 200);
    j = cJSON_Parse(r.body.data);
    assert_int_equal((int)jnum(j, "requests.total"), 1);
    assert_int_equal((int)jnum(j, "h2_connections_total"), 2); /* the call and this /stats */
    assert_int_equal((int)jnum(j, "h2_streams_total"), 2);
    assert_int_equal((int)jnum(j, "responses.200"), 1);
    cJSON_Delete(j);
    resp_free(&r);
    http2(fx.oa_url, "/v1/messages", "{}", 2000, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

static void h2_stream_equals_http1(void **state)
{
    knobs(fx.oa_url, "{\"token_ms\":2}");
    resp_t r1 = {0}, r2 = {0};
    const char *body = req(oa_req, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    http(NULL, fx.oa_url, "/v1/chat/completions", body, 5000, &r1);
    http2(fx.oa_url, "/v1/chat/completions", body, 5000, &r2);
    assert_int_equal(r2.code, CURLE_OK);
    assert_int_equal(r2.version, CURL_HTTP_VERSION_2_0);
    sse_t a, b;
    sse_parse(r1.body.data, DEV_MOCK_OPENAI, &a);
    sse_parse(r2.body.data, DEV_MOCK_OPENAI, &b);
    assert_string_equal(b.text, oa_text);
    assert_string_equal(a.text, b.text);
    assert_int_equal(a.n_deltas, b.n_deltas);
    assert_int_equal(a.n_comments, b.n_comments);
    assert_true(b.done && b.usage_chunk);
    assert_int_equal(b.completion_tokens, b.n_deltas);
    assert_int_equal(r1.body.len, r2.body.len); /* same events; only the ids differ */
    resp_free(&r1);
    resp_free(&r2);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "requests.streamed"), 2);
    cJSON_Delete(st);

    knobs(fx.an_url, "{\"thinking\":true}");
    http(NULL, fx.an_url, "/v1/messages", req(an_req, ",\"stream\":true"), 5000, &r1);
    http2(fx.an_url, "/v1/messages", req(an_req, ",\"stream\":true"), 5000, &r2);
    sse_parse(r1.body.data, DEV_MOCK_ANTHROPIC, &a);
    sse_parse(r2.body.data, DEV_MOCK_ANTHROPIC, &b);
    assert_string_equal(b.text, an_text);
    assert_int_equal(a.n_events, b.n_events);
    for (int i = 0; i < a.n_events; i++)
        assert_string_equal(a.events[i], b.events[i]);
    assert_true(b.thinking && b.signature);
    resp_free(&r1);
    resp_free(&r2);
}

static void h2_rate_limit_and_drip(void **state)
{
    knobs(fx.oa_url, "{\"fail_next\":1,\"fail_status\":429,\"retry_after_s\":7}");
    resp_t r = {0};
    http2(fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.version, CURL_HTTP_VERSION_2_0);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.retry_after, "7");
    cJSON *j = cJSON_Parse(r.body.data);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring,
                        "rate_limit_exceeded");
    cJSON_Delete(j);
    resp_free(&r);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "responses.429"), 1);
    cJSON_Delete(st);

    knobs(fx.oa_url, "{\"drip_ms\":1}");
    http2(fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 10000, &r);
    assert_int_equal(r.status, 200);
    j = cJSON_Parse(r.body.data);
    assert_non_null(j); /* dripped whole, a byte per DATA frame */
    cJSON_Delete(j);
    assert_true(r.secs >= 0.9 * (double)r.body.len / 1000.0);
    resp_free(&r);
}

/* Runs the multi until no transfer is running or until ms passed. */
static void multi_run(CURLM *mh, long ms)
{
    int64_t end = base_mono_ms() + ms;
    int running = 1;
    while (running && base_mono_ms() < end) {
        curl_multi_perform(mh, &running);
        if (running)
            curl_multi_poll(mh, NULL, 0, 10, NULL);
    }
}

/* A multi that multiplexes HTTP/2 transfers on one connection. */
static CURLM *multi_h2(void)
{
    CURLM *mh = curl_multi_init();
    curl_multi_setopt(mh, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    return mh;
}

/* Adds an HTTP/2 chat call to mh that waits to multiplex. libcurl 7.88 cannot reuse a connection for
 * a prior-knowledge transfer (curl issue #10634, fixed in 8.0), so only the first transfer (reuse
 * false) asks for prior knowledge; the others ask for HTTP/2 and reuse its connection. */
static CURL *multi_add(CURLM *mh, bool reuse, resp_t *r, struct curl_slist **hdrs)
{
    CURL *h = curl_easy_init();
    r->h2 = true;
    *hdrs = prepare(h, fx.oa_url, "/v1/chat/completions", NULL, 10000, r);
    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, req(oa_req, ""));
    curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
    if (reuse)
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
    curl_multi_add_handle(mh, h);
    return h;
}

/* Opens mh's HTTP/2 connection with one call. */
static void multi_open(CURLM *mh)
{
    resp_t r = {0};
    struct curl_slist *hdrs;
    CURL *h = multi_add(mh, false, &r, &hdrs);
    multi_run(mh, 5000);
    finish(h, &r);
    assert_int_equal(r.version, CURL_HTTP_VERSION_2_0);
    curl_multi_remove_handle(mh, h);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    resp_free(&r);
}

#define N_MUX 50

static void h2_multiplexes_calls(void **state)
{
    CURLM *mh = multi_h2();
    CURL *h[N_MUX];
    resp_t r[N_MUX];
    struct curl_slist *hdrs[N_MUX];
    memset(r, 0, sizeof r);
    knobs(fx.oa_url, "{\"latency_ms\":100}");
    multi_open(mh);
    for (int i = 0; i < N_MUX; i++)
        h[i] = multi_add(mh, true, &r[i], &hdrs[i]);
    int64_t t0 = base_mono_ms();
    multi_run(mh, 10000);
    double secs = (double)(base_mono_ms() - t0) / 1000.0;
    int ok = 0, done_ok = 0, left;
    for (CURLMsg *msg; (msg = curl_multi_info_read(mh, &left));)
        done_ok += msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK;
    for (int i = 0; i < N_MUX; i++) {
        finish(h[i], &r[i]);
        ok += r[i].status == 200 && r[i].version == CURL_HTTP_VERSION_2_0 && strstr(r[i].body.data, oa_text);
        curl_multi_remove_handle(mh, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(hdrs[i]);
        resp_free(&r[i]);
    }
    curl_multi_cleanup(mh);
    assert_int_equal(ok, N_MUX);
    assert_int_equal(done_ok, N_MUX);
    assert_true(secs < 2.0); /* concurrent: 50 calls one after another would take 5 s */
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "h2_connections_total"), 1);
    assert_true(jnum(st, "h2_streams_total") >= N_MUX + 1); /* the opening call and the 50 */
    assert_int_equal((int)jnum(st, "requests.total"), N_MUX + 1);
    assert_int_equal((int)jnum(st, "responses.200"), N_MUX + 1);
    assert_int_equal((int)jnum(st, "connections.total"), 2); /* the h2 connection and this /stats */
    assert_true(jnum(st, "in_flight.peak") > 1);
    assert_int_equal((int)jnum(st, "client_disconnects"), 0);
    cJSON_Delete(st);
}

/* A raw HTTP/2 connection to the OpenAI mock (preface and empty SETTINGS sent); receive timeout 2 s. */
static int h2_raw_open(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dev_mock_port(fx.openai))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    static const char start[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    assert_int_equal(send(fd, start, sizeof start - 1, 0), (ssize_t)(sizeof start - 1));
    return fd;
}

/* Sends one frame. */
static void h2_raw_frame(int fd, int type, int flags, uint32_t stream, const void *payload, size_t n)
{
    unsigned char f[9 + 1024];
    assert_true(n <= 1024);
    unsigned char hd[9] = {
        (unsigned char)(n >> 16),      (unsigned char)(n >> 8),      (unsigned char)n,
        (unsigned char)type,           (unsigned char)flags,         (unsigned char)(stream >> 24),
        (unsigned char)(stream >> 16), (unsigned char)(stream >> 8), (unsigned char)stream};
    memcpy(f, hd, 9);
    memcpy(f + 9, payload, n);
    assert_int_equal(send(fd, f, 9 + n, 0), (ssize_t)(9 + n));
}

/* Sends a POST /v1/chat/completions on stream (HPACK: static indexes and literals, no Huffman). */
static void h2_raw_call(int fd, uint32_t stream)
{
    static const char hdrs[] = "\x83\x86"                      /* :method POST, :scheme http */
                               "\x04\x14/v1/chat/completions"  /* :path, literal */
                               "\x01\x01x";                    /* :authority x */
    h2_raw_frame(fd, 0x1, 0x4, stream, hdrs, sizeof hdrs - 1); /* HEADERS, END_HEADERS */
    const char *body = req(oa_req, "");
    h2_raw_frame(fd, 0x0, 0x1, stream, body, strlen(body)); /* DATA, END_STREAM */
}

/* Reads frames until a HEADERS frame on stream arrives (true) or the connection ends (false). */
static bool h2_raw_wait_headers(int fd, uint32_t stream)
{
    unsigned char hd[9], skip[4096];
    for (;;) {
        if (recv(fd, hd, 9, MSG_WAITALL) != 9)
            return false;
        size_t n = (size_t)hd[0] << 16 | (size_t)hd[1] << 8 | hd[2];
        uint32_t id = ((uint32_t)hd[5] & 0x7f) << 24 | (uint32_t)hd[6] << 16 | (uint32_t)hd[7] << 8 | hd[8];
        for (size_t k = 0; k < n;) {
            ssize_t r = recv(fd, skip, n - k < sizeof skip ? n - k : sizeof skip, 0);
            if (r <= 0)
                return false;
            k += (size_t)r;
        }
        if (hd[3] == 0x1 && id == stream)
            return true;
    }
}

static void h2_reset_stream_is_a_disconnect(void **state)
{
    knobs(fx.oa_url, "{\"latency_ms\":300}");
    int fd = h2_raw_open();
    h2_raw_call(fd, 1);
    h2_raw_call(fd, 3);
    assert_int_equal((int)stats_wait(fx.oa_url, "in_flight.now", 2), 2);
    static const char cancel[4] = {0, 0, 0, 8};
    h2_raw_frame(fd, 0x3, 0, 1, cancel, 4); /* RST_STREAM(CANCEL) on the first call */
    assert_int_equal((int)stats_wait(fx.oa_url, "client_disconnects", 1), 1);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "in_flight.now"), 1);
    assert_int_equal((int)jnum(st, "connections.open"), 2); /* the h2 connection and this /stats */
    cJSON_Delete(st);
    assert_true(h2_raw_wait_headers(fd, 3)); /* the other call on the connection is answered */
    close(fd);
    st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "h2_connections_total"), 1);
    assert_int_equal((int)jnum(st, "h2_streams_total"), 2);
    assert_int_equal((int)jnum(st, "responses.200"), 1);
    assert_int_equal((int)jnum(st, "client_disconnects"), 1);
    cJSON_Delete(st);
    knobs(fx.oa_url, "{\"latency_ms\":1000}");
    /* Closing the connection with a stream open counts it too. */
    resp_t r = {0};
    http2(fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 150, &r);
    assert_int_equal(r.code, CURLE_OPERATION_TIMEDOUT);
    resp_free(&r);
    assert_int_equal((int)stats_wait(fx.oa_url, "client_disconnects", 1), 1);
    assert_int_equal((int)stats_wait(fx.oa_url, "in_flight.now", 0), 0);
}

static void h2_cut_resets_stream(void **state)
{
    assert_int_equal(cut_openai_stream(true), CURLE_HTTP2_STREAM);
    resp_t r = {0};
    http2(fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r); /* a JSON answer: 3 bytes */
    assert_int_not_equal(r.code, CURLE_OK);
    assert_true(r.body.len <= 3);
    resp_free(&r);
    assert_int_equal((int)stats_wait(fx.oa_url, "cut_streams", 2), 2);
    assert_int_equal((int)stats_wait(fx.oa_url, "client_disconnects", 0), 0);
}

static void h2_bounds_and_http1_alongside(void **state)
{
    /* A 2 MiB body passes the 1 MiB stream window; one over 8 MiB gets 413. */
    size_t big = 2u << 20, huge = (8u << 20) + 16;
    char *body = malloc(huge + 256);
    assert_non_null(body);
    int n = snprintf(body, 256, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    memset(body + n, 'a', huge);
    memcpy(body + n + big, "\"}]}", 5);
    resp_t r = {0};
    http2(fx.oa_url, "/v1/chat/completions", body, 10000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    memset(body + n + big, 'a', 5);
    memcpy(body + n + huge, "\"}]}", 5);
    http2(fx.oa_url, "/v1/chat/completions", body, 10000, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    free(body);
    /* HTTP/1.1 on the same port as before. */
    r.h2 = false;
    http(NULL, fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.version, CURL_HTTP_VERSION_1_1);
    assert_string_equal(r.status_line, "HTTP/1.1 200 OK");
    resp_free(&r);
    cJSON *st = stats(fx.oa_url);
    assert_int_equal((int)jnum(st, "h2_connections_total"), 2);
    assert_int_equal((int)jnum(st, "requests.total"), 2); /* the 413 never reached the call logic */
    cJSON_Delete(st);
}

/* A raw connection that sends the preface then a bad frame gets a GOAWAY and is closed. */
static void h2_bad_frame_goaway(void **state)
{
    int fd = h2_raw_open();
    h2_raw_frame(fd, 0x0, 0, 0, "x", 1); /* DATA on stream 0: a connection error */
    unsigned char in[4096];
    size_t got = 0;
    ssize_t k = 0;
    while (got < sizeof in && (k = recv(fd, in + got, sizeof in - got, 0)) > 0)
        got += (size_t)k;
    assert_int_equal(k, 0); /* the mock closed the connection */
    bool goaway = false;
    for (size_t off = 0; off + 9 <= got;
         off += 9 + ((size_t)in[off] << 16 | (size_t)in[off + 1] << 8 | in[off + 2]))
        goaway |= in[off + 3] == 0x07;
    assert_true(goaway);
    close(fd);
    resp_t r = {0};
    http2(fx.oa_url, "/v1/chat/completions", req(oa_req, ""), 5000, &r);
    assert_int_equal(r.status, 200); /* the mock still serves */
    resp_free(&r);
}

static void broker_creates_topics(void **state)
{
    char err[256];
    dev_broker_t *b = dev_broker_new(3, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(dev_broker_topic_create(b, "t.test", 5, err, sizeof err), 0);
    const char *boot = dev_broker_bootstraps(b);
    assert_memory_equal(boot, "127.0.0.1:", 10);
    assert_int_equal(strchr(strchr(boot, ',') + 1, ',') != NULL, 1); /* three brokers */
    assert_non_null(dev_broker_cluster(b));

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", boot, err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    assert_non_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, "t.test", NULL);
    const struct rd_kafka_metadata *md = NULL;
    assert_int_equal(rd_kafka_metadata(rk, 0, t, &md, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(md->topic_cnt, 1);
    assert_int_equal(md->topics[0].partition_cnt, 5);
    assert_int_equal(md->broker_cnt, 3);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    dev_broker_free(b);
    assert_null(dev_broker_new(0, err, sizeof err));
}

static void provider_spec_parses(void **state)
{
    char err[256];
    dev_provider_t p;
    assert_int_equal(dev_provider_parse("fast:openai:latency_ms=5,port=0,tail_prob=0.1", &p, err, sizeof err),
                     0);
    assert_string_equal(p.name, "fast");
    assert_int_equal(p.type, DEV_MOCK_OPENAI);
    assert_string_equal(p.knobs, "latency_ms=5,tail_prob=0.1");
    dev_provider_clear(&p);
    assert_int_equal(dev_provider_parse("slow:anthropic", &p, err, sizeof err), 0);
    assert_null(p.knobs);
    dev_provider_clear(&p);
    assert_int_equal(dev_provider_parse("x:gemini", &p, err, sizeof err), -1);
    assert_int_equal(dev_provider_parse("x:openai:latency=5", &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "latency"));
    assert_int_equal(dev_provider_parse("x:openai:port=70000", &p, err, sizeof err), -1);
    assert_int_equal(dev_provider_parse("bad name:openai", &p, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(openai_json_answer, reset_knobs),
        cmocka_unit_test_setup(openai_stream_reassembles, reset_knobs),
        cmocka_unit_test_setup(anthropic_json_and_stream, reset_knobs),
        cmocka_unit_test_setup(anthropic_requires_max_tokens, reset_knobs),
        cmocka_unit_test_setup(rate_limit_with_retry_after, reset_knobs),
        cmocka_unit_test_setup(cut_stream_has_no_done, reset_knobs),
        cmocka_unit_test_setup(disconnect_is_counted, reset_knobs),
        cmocka_unit_test_setup(control_changes_knobs, reset_knobs),
        cmocka_unit_test_setup(keep_alive_reuses_connection, reset_knobs),
        cmocka_unit_test_setup(seed_makes_runs_repeatable, reset_knobs),
        cmocka_unit_test_setup(drip_and_not_json, reset_knobs),
        cmocka_unit_test_setup(h2_json_answers, reset_knobs),
        cmocka_unit_test_setup(h2_stream_equals_http1, reset_knobs),
        cmocka_unit_test_setup(h2_rate_limit_and_drip, reset_knobs),
        cmocka_unit_test_setup(h2_multiplexes_calls, reset_knobs),
        cmocka_unit_test_setup(h2_reset_stream_is_a_disconnect, reset_knobs),
        cmocka_unit_test_setup(h2_cut_resets_stream, reset_knobs),
        cmocka_unit_test_setup(h2_bounds_and_http1_alongside, reset_knobs),
        cmocka_unit_test_setup(h2_bad_frame_goaway, reset_knobs),
        cmocka_unit_test(broker_creates_topics),
        cmocka_unit_test(provider_spec_parses),
    };
    return cmocka_run_group_tests_name("dev", tests, group_setup, group_teardown);
}
