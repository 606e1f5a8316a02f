/* test_http2.c — the native HTTP/2 client of http against the mock providers of `parley dev` (h2c with
 * prior knowledge), on the same loop: a chat round trip, a cancelled call seen by the mock as a client
 * disconnect while the connection stays and is reused, many concurrent calls on one connection, and an
 * SSE stream. (test_http.c covers the client in depth against its own nghttp2 server.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/base.h"
#include "dev/dev.h"
#include "http/http.h"

typedef struct {
    uv_loop_t loop;
    uv_timer_t ticker; /* keeps UV_RUN_ONCE returning so RUN_UNTIL can check its condition */
    dev_mock_t *mock;
    http_client_t *client;
    char base[64];
    bool closed;
} env_t;

typedef struct {
    http_transfer_t *t;
    int done, chunks;
    http_code_t code;
    long status;
    bool reused;
    buf_t body;
} call_t;

static void tick(uv_timer_t *h) {}

static void env_init(env_t *e, const char *knobs)
{
    char err[256];
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->ticker);
    uv_timer_start(&e->ticker, tick, 5, 5);
    e->mock = dev_mock_new(&e->loop, "mock-oa", DEV_MOCK_OPENAI, knobs, err, sizeof err);
    assert_non_null(e->mock);
    assert_int_equal(dev_mock_listen(e->mock, "127.0.0.1", 0, err, sizeof err), 0);
    snprintf(e->base, sizeof e->base, "http://127.0.0.1:%d", dev_mock_port(e->mock));
    e->client = http_client_new(&e->loop, NULL, err, sizeof err);
    assert_non_null(e->client);
}

static void on_closed(void *ctx) { *(bool *)ctx = true; }

static void env_close(env_t *e)
{
    http_client_close(e->client, on_closed, &e->closed);
    dev_mock_close(e->mock);
    uv_close((uv_handle_t *)&e->ticker, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_true(e->closed);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

#define RUN_UNTIL(e, cond, ms)                                                                               \
    do {                                                                                                     \
        int64_t end_ = base_mono_ms() + (ms);                                                                \
        while (!(cond) && base_mono_ms() < end_)                                                             \
            uv_run(&(e)->loop, UV_RUN_ONCE);                                                                 \
    } while (0)

static int rec_data(void *ctx, const char *p, size_t n)
{
    call_t *k = ctx;
    k->chunks++;
    return 0;
}

static void rec_done(void *ctx, http_result_t *res)
{
    call_t *k = ctx;
    k->done++;
    k->code = res->code;
    k->status = res->status;
    k->reused = res->reused_connection;
    if (res->body.data)
        buf_append(&k->body, res->body.data, res->body.len);
}

static const char chat[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";
static const char chat_sse[] =
    "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";

static void start(env_t *e, call_t *k, http_method_t method, const char *path, const char *body)
{
    static const char *const headers[] = {"Content-Type: application/json", "Authorization: Bearer k"};
    char url[128], err[256];
    snprintf(url, sizeof url, "%s%s", e->base, path);
    http_request_t req = {.method = method,
                          .version = HTTP_VERSION_2,
                          .url = url,
                          .headers = headers,
                          .n_headers = 2,
                          .body = body,
                          .body_len = body ? strlen(body) : 0,
                          .buffer_body = true,
                          .total_timeout_ms = 10000,
                          .on_data = rec_data,
                          .on_done = rec_done,
                          .ctx = k};
    k->t = http_start(e->client, &req, err, sizeof err);
    assert_non_null(k->t);
}

/* Runs one call to its end; it must have succeeded. */
static void run_ok(env_t *e, call_t *k, http_method_t method, const char *path, const char *body, int64_t ms)
{
    start(e, k, method, path, body);
    RUN_UNTIL(e, k->done, ms);
    assert_int_equal(k->code, HTTP_OK);
}

/* One number of the mock's /stats (a dotted path into its JSON), fetched over HTTP/2. */
static double mock_stat(env_t *e, const char *a, const char *b)
{
    call_t k = {0};
    run_ok(e, &k, HTTP_GET, "/stats", NULL, 3000);
    assert_true(k.reused);
    cJSON *root = cJSON_Parse(k.body.data);
    assert_non_null(root);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    assert_true(cJSON_IsNumber(v));
    double d = v->valuedouble;
    cJSON_Delete(root);
    buf_free(&k.body);
    return d;
}

static void chat_round_trip_and_cancel(void **state)
{
    env_t e;
    env_init(&e, "latency_ms=200");
    call_t a = {0};
    run_ok(&e, &a, HTTP_POST, "/v1/chat/completions", chat, 3000);
    assert_int_equal(a.status, 200);
    assert_non_null(strstr(a.body.data, "chat.completion"));

    call_t b = {0};
    start(&e, &b, HTTP_POST, "/v1/chat/completions", chat);
    RUN_UNTIL(&e, false, 80);
    http_cancel(b.t);
    RUN_UNTIL(&e, false, 50);
    assert_int_equal(b.done, 0);
    assert_int_equal(mock_stat(&e, "client_disconnects", NULL), 1);
    assert_int_equal(mock_stat(&e, "connections", "total"), 1);
    assert_int_equal(mock_stat(&e, "h2_connections_total", NULL), 1);
    http_stats_t st;
    http_client_stats(e.client, &st);
    assert_int_equal(st.h2_connections, 1);
    assert_int_equal(st.cancelled, 1);
    buf_free(&a.body);
    env_close(&e);
}

static int count_done(const call_t *k, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++)
        done += k[i].done;
    return done;
}

static void concurrent_calls_share_one_connection(void **state)
{
    enum { N = 300 };
    env_t e;
    env_init(&e, "latency_ms=100,h2_max_streams=1000");
    call_t *k = calloc(N, sizeof *k);
    call_t warm = {0};
    run_ok(&e, &warm, HTTP_GET, "/stats", NULL, 3000);
    for (int i = 0; i < N; i++)
        start(&e, &k[i], HTTP_POST, "/v1/chat/completions", chat);
    RUN_UNTIL(&e, count_done(k, N) == N, 10000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(k[i].code, HTTP_OK);
        assert_int_equal(k[i].status, 200);
        buf_free(&k[i].body);
    }
    assert_int_equal(mock_stat(&e, "h2_connections_total", NULL), 1);
    assert_true(mock_stat(&e, "in_flight", "peak") >= N / 2);
    free(k);
    buf_free(&warm.body);
    env_close(&e);
}

static void sse_stream_arrives_in_chunks(void **state)
{
    env_t e;
    env_init(&e, "token_ms=5");
    call_t k = {0};
    run_ok(&e, &k, HTTP_POST, "/v1/chat/completions", chat_sse, 5000);
    assert_true(k.chunks > 1);
    assert_non_null(strstr(k.body.data, "data: "));
    assert_non_null(strstr(k.body.data, "[DONE]"));
    buf_free(&k.body);
    env_close(&e);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_round_trip_and_cancel),
        cmocka_unit_test(concurrent_calls_share_one_connection),
        cmocka_unit_test(sse_stream_arrives_in_chunks),
    };
    return cmocka_run_group_tests_name("http2", tests, NULL, NULL);
}
