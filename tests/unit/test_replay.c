/* test_replay.c — replay input lines, turn selection, the resume set (and its repair of a cut last
 * line), percentiles, result and Batch lines, and summary.json / report.html from a results file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "replay/replay.h"
#include "replay/replay_int.h"

static void parses_a_recorded_conversation(void **state)
{
    const char *s = "{\"conversation_id\":\"c-1\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                    "{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\",\"content\":\"a1\"},"
                    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q\"},{\"type\":\"text\","
                    "\"text\":\"2\"}]},"
                    "{\"role\":\"assistant\",\"content\":\"a2\"}],\"metadata\":{\"k\":1}}";
    replay_line_t l;
    char err[128];
    assert_int_equal(replay_line_parse(s, strlen(s), &l, err, sizeof err), 0);
    assert_int_equal(l.kind, REPLAY_LINE_CONVERSATION);
    assert_string_equal(l.id, "c-1");
    assert_int_equal(l.n_messages, 5);
    assert_string_equal(l.messages[3].content, "q2");
    assert_string_equal(l.metadata_json, "{\"k\":1}");
    size_t idx[8];
    assert_int_equal(replay_line_turns(&l, REPLAY_TURNS_LAST, idx, 8), 1);
    assert_int_equal(idx[0], 3);
    assert_int_equal(replay_line_turns(&l, REPLAY_TURNS_EACH, idx, 8), 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    replay_line_clear(&l);
    assert_null(l.id);
}

static void parses_a_batch_request(void **state)
{
    const char *s =
        "{\"custom_id\":\"r-1\",\"method\":\"POST\",\"url\":\"/v1/chat/"
        "completions\",\"body\":{\"model\":\"m\","
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":7,\"temperature\":0.5}}";
    replay_line_t l;
    char err[128];
    assert_int_equal(replay_line_parse(s, strlen(s), &l, err, sizeof err), 0);
    assert_int_equal(l.kind, REPLAY_LINE_BATCH);
    assert_string_equal(l.id, "r-1");
    assert_string_equal(l.model, "m");
    assert_true(l.has_max_tokens);
    assert_int_equal(l.max_tokens, 7);
    assert_true(l.has_temperature);
    assert_false(l.has_seed);
    replay_line_clear(&l);
}

static void refuses_bad_lines_with_a_reason(void **state)
{
    static const struct {
        const char *line, *err;
    } cases[] = {
        {"not json", "not a JSON object"},
        {"{\"messages\":[]}", "conversation_id: must be a string of 1..256 bytes"},
        {"{\"conversation_id\":\"c\",\"messages\":\"x\"}", "messages: must be an array"},
        {"{\"conversation_id\":\"c\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}",
         "messages[0].role: must be system, user or assistant"},
        {"{\"conversation_id\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":3}]}",
         "messages[0].content: must be a string"},
        {"{\"conversation_id\":\"c\",\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}",
         "messages: no user message to replay"},
        {"{\"custom_id\":\"r\",\"body\":3}", "body: must be an object"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        replay_line_t l;
        char err[128] = "";
        assert_int_equal(replay_line_parse(cases[i].line, strlen(cases[i].line), &l, err, sizeof err), -1);
        assert_string_equal(err, cases[i].err);
        assert_null(l.messages);
    }
}

static void done_set_holds_pairs_and_answers(void **state)
{
    replay_done_t *d = replay_done_new();
    assert_non_null(d);
    char turn[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(turn, sizeof turn, "c-%d:1", i);
        assert_int_equal(replay_done_add(d, turn, i % 2 ? "a" : "b", i == 77 ? "seventy-seven" : NULL), 0);
    }
    assert_int_equal(replay_done_add(d, "c-77:1", "a", "other"), 0); /* kept the first */
    assert_int_equal(replay_done_count(d), 5000);
    assert_true(replay_done_has(d, "c-4999:1", "a"));
    assert_false(replay_done_has(d, "c-4999:1", "b"));
    assert_false(replay_done_has(d, "c-5000:1", "a"));
    assert_string_equal(replay_done_answer(d, "c-77:1", "a"), "seventy-seven");
    assert_null(replay_done_answer(d, "c-76:1", "b"));
    replay_done_free(d);
}

static void done_load_cuts_a_partial_last_line(void **state)
{
    char path[] = "/tmp/test_replay_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"turn_id\":\"c:1\",\"target\":\"a\",\"status\":\"ok\",\"answer\":\"A1\"}\n"
                       "garbage line\n"
                       "{\"turn_id\":\"c:3\",\"target\":\"a\",\"status\":\"error\"}\n"
                       "{\"turn_id\":\"c:5\",\"target\":\"a\",\"sta";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    replay_done_t *d = replay_done_new();
    char err[128];
    assert_int_equal(replay_done_load(d, path, true, err, sizeof err), 0);
    assert_int_equal(replay_done_count(d), 2);
    assert_string_equal(replay_done_answer(d, "c:1", "a"), "A1");
    assert_true(replay_done_has(d, "c:3", "a"));
    assert_null(replay_done_answer(d, "c:3", "a"));
    assert_false(replay_done_has(d, "c:5", "a"));
    FILE *f = fopen(path, "r");
    fseek(f, 0, SEEK_END);
    assert_int_equal(ftell(f), (long)(strlen(text) - strlen("{\"turn_id\":\"c:5\",\"target\":\"a\",\"sta")));
    fclose(f);
    unlink(path);
    assert_int_equal(replay_done_load(d, "/nonexistent/x", false, err, sizeof err), 0);
    replay_done_free(d);
}

static void percentile_is_nearest_rank(void **state)
{
    double v[100];
    for (int i = 0; i < 100; i++)
        v[i] = i + 1;
    assert_true(replay_percentile(v, 100, 50) == 50);
    assert_true(replay_percentile(v, 100, 95) == 95);
    assert_true(replay_percentile(v, 100, 99) == 99);
    assert_true(replay_percentile(v, 100, 100) == 100);
    assert_true(replay_percentile(v, 1, 99) == 1);
    assert_true(replay_percentile(v, 0, 50) == 0);
    double w[3] = {10, 20, 30};
    assert_true(replay_percentile(w, 3, 50) == 20);
    assert_true(replay_percentile(w, 3, 0) == 10);
}

/* Writes n result lines for targets a (ok, latency 1..n) and b (every 4th an error). */
static void write_results(const char *dir, int n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < 2; t++) {
            char turn[32], att[] = "[]";
            snprintf(turn, sizeof turn, "c-%d:0", i);
            bool ok = t == 0 || i % 4 != 0;
            replay_result_t r = {.turn_id = turn,
                                 .id = turn,
                                 .target = t ? "b" : "a",
                                 .line_no = i + 1,
                                 .ok = ok,
                                 .answer = "x <y> & z",
                                 .answer_len = 9,
                                 .provider = t ? "b" : "a",
                                 .err_code = "all_providers_failed",
                                 .err_kind = "http_500",
                                 .err_msg = "boom",
                                 .has_usage = true,
                                 .prompt_tokens = 10,
                                 .completion_tokens = 5,
                                 .total_tokens = 15,
                                 .has_cost = ok,
                                 .cost_usd = 0.25,
                                 .latency_ms = i + 1 + t * 100,
                                 .ttft_ms = ok ? i : -1,
                                 .attempts_json = att};
            buf_t b;
            buf_init(&b, 0);
            assert_int_equal(replay_result_line(&b, &r), 0);
            fwrite(b.data, 1, b.len, f);
            buf_free(&b);
        }
    }
    fclose(f);
}

static void summary_and_report_from_results(void **state)
{
    char dir[] = "/tmp/test_replay_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_results(dir, 100);
    char err[256], path[512];
    assert_int_equal(replay_summary_write(dir, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *f = fopen(path, "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cJSON *s = cJSON_Parse(text);
    assert_non_null(s);
    assert_int_equal(cJSON_GetObjectItem(s, "results")->valueint, 200);
    cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(s, "targets"), "a");
    cJSON *b = cJSON_GetObjectItem(cJSON_GetObjectItem(s, "targets"), "b");
    assert_int_equal(cJSON_GetObjectItem(a, "ok")->valueint, 100);
    assert_int_equal(cJSON_GetObjectItem(b, "errors")->valueint, 25);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "error_breakdown"), "http_500")->valueint,
                     25);
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "latency_ms"), "p95")->valuedouble == 95);
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "latency_ms"), "p99")->valuedouble == 99);
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "ttft_ms"), "p50")->valuedouble == 49);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "tokens"), "total")->valueint, 1500);
    assert_true(cJSON_GetObjectItem(b, "cost_usd")->valuedouble == 0.25 * 75);
    cJSON_Delete(s);

    assert_int_equal(replay_report_write(dir, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/report.html", dir);
    f = fopen(path, "r");
    static char html[1 << 20];
    n = fread(html, 1, sizeof html - 1, f);
    html[n] = '\0';
    fclose(f);
    assert_non_null(strstr(html, "data-target=\"a\" data-points=\"100\""));
    assert_non_null(strstr(html, "data-target=\"b\" data-points=\"75\""));
    assert_non_null(strstr(html, "x &lt;y&gt; &amp; z")); /* answers are escaped */
    assert_null(strstr(html, "<script"));
    /* slowest first: b's latency of turn 99 is 200 */
    assert_true(strstr(html, "data-latency=\"200\"") < strstr(html, "data-latency=\"199\""));
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

static void batch_lines_have_the_batch_shape(void **state)
{
    replay_result_t r = {.turn_id = "r-1:0",
                         .id = "r-1",
                         .batch = true,
                         .target = "a",
                         .ok = true,
                         .answer = "hi \"there\"",
                         .answer_len = 10,
                         .model = "m",
                         .finish_reason = "stop",
                         .ttft_ms = -1};
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(replay_batch_line(&b, &r), 0);
    cJSON *o = cJSON_Parse(b.data);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "custom_id")->valuestring, "r-1");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "error")));
    cJSON *resp = cJSON_GetObjectItem(o, "response");
    assert_int_equal(cJSON_GetObjectItem(resp, "status_code")->valueint, 200);
    cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "body"), "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "message"), "content")->valuestring,
                        "hi \"there\"");
    cJSON_Delete(o);
    buf_reset(&b);
    r.ok = false;
    r.http_status = 429;
    r.err_kind = "http_429";
    r.err_msg = "slow down";
    assert_int_equal(replay_batch_line(&b, &r), 0);
    o = cJSON_Parse(b.data);
    resp = cJSON_GetObjectItem(o, "response");
    assert_int_equal(cJSON_GetObjectItem(resp, "status_code")->valueint, 429);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "body"), "error"), "message")
            ->valuestring,
        "slow down");
    cJSON_Delete(o);
    buf_reset(&b);
    r.http_status = 0;
    r.err_kind = "timeout";
    assert_int_equal(replay_batch_line(&b, &r), 0);
    o = cJSON_Parse(b.data);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "response")));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "error"), "code")->valuestring, "timeout");
    cJSON_Delete(o);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_recorded_conversation),
        cmocka_unit_test(parses_a_batch_request),
        cmocka_unit_test(refuses_bad_lines_with_a_reason),
        cmocka_unit_test(done_set_holds_pairs_and_answers),
        cmocka_unit_test(done_load_cuts_a_partial_last_line),
        cmocka_unit_test(percentile_is_nearest_rank),
        cmocka_unit_test(summary_and_report_from_results),
        cmocka_unit_test(batch_lines_have_the_batch_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
