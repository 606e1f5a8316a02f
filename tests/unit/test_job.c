/* test_job.c — job parsing and validation (every field, every limit, salvaged ids), reply / delta /
 * reset / history encoding checked by parsing it back, escaping, allocation-failure torture, and
 * a small timing loop that prints ns per parse and per encode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cJSON.h>

#include "base/base.h"
#include "job/job.h"

static const char full_job[] =
    "{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\","
    "\"message\":{\"role\":\"user\",\"content\":\"Hello \\\"w\\u00f6rld\\\"\\n\"},"
    "\"route\":\"fast\",\"system\":\"Be brief.\","
    "\"params\":{\"temperature\":0.7,\"top_p\":0.9,\"max_tokens\":256,\"stop\":[\"\\n\\n\",\"END\"],\"seed\":"
    "-42,"
    "\"logit_bias\":{},\"frequency_penalty\":0.1},"
    "\"history\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"},"
    "{\"role\":\"assistant\",\"content\":\"\"}],"
    "\"stream\":true,\"reply_topic\":\"chat.replies.team-a_1\",\"deadline_ms\":1893456000000,"
    "\"metadata\":{\"user\":\"u1\",\"tags\":[\"a\",\"b\"],\"n\":3},"
    "\"future_field\":{\"x\":[1,2,{\"y\":null}]}}";

/* The common prefix of the small test jobs: valid ids, valid message; EXTRA adds members. */
#define JOB(extra)                                                                                           \
    "{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":"            \
    "\"hi\"}" extra "}"

static job_limits_t small_limits(void)
{
    job_limits_t l = job_limits_default();
    l.max_message_bytes = 4096;
    l.max_job_id = 8;
    l.max_conversation_id = 8;
    l.max_content_bytes = 32;
    l.max_system_bytes = 16;
    l.max_history_messages = 3;
    l.max_history_entry_bytes = 16;
    l.max_metadata_bytes = 32;
    l.max_stop = 2;
    l.max_stop_bytes = 4;
    l.max_route = 8;
    return l;
}

static void full_job_parses(void **state)
{
    job_t *job = NULL;
    job_error_t err;
    assert_int_equal(job_parse(full_job, strlen(full_job), NULL, &job, &err), 0);
    assert_int_equal(err.code, JOB_ERR_NONE);
    assert_string_equal(job->job_id, "j-1");
    assert_string_equal(job->conversation_id, "c-1");
    assert_string_equal(job->message.role, "user");
    assert_string_equal(job->message.content, "Hello \"w\xc3\xb6rld\"\n");
    assert_int_equal(job->message.content_len, strlen("Hello \"w\xc3\xb6rld\"\n"));
    assert_string_equal(job->route, "fast");
    assert_string_equal(job->system, "Be brief.");
    assert_int_equal(job->system_len, 9);
    assert_true(job->params.has_temperature);
    assert_true(job->params.temperature > 0.69 && job->params.temperature < 0.71);
    assert_true(job->params.has_top_p);
    assert_true(job->params.has_max_tokens);
    assert_int_equal(job->params.max_tokens, 256);
    assert_true(job->params.has_seed);
    assert_int_equal(job->params.seed, -42);
    assert_int_equal(job->params.n_stop, 2);
    assert_string_equal(job->params.stop[0], "\n\n");
    assert_string_equal(job->params.stop[1], "END");
    assert_string_equal(job->unknown_params, "logit_bias,frequency_penalty");
    assert_true(job->has_history);
    assert_int_equal(job->n_history, 3);
    assert_string_equal(job->history[0].role, "system");
    assert_string_equal(job->history[1].content, "hi");
    assert_string_equal(job->history[2].role, "assistant");
    assert_int_equal(job->history[2].content_len, 0);
    assert_true(job->stream);
    assert_string_equal(job->reply_topic, "chat.replies.team-a_1");
    assert_true(job->has_deadline);
    assert_true(job->deadline_ms == 1893456000000LL);
    assert_string_equal(job->metadata_json, "{\"user\":\"u1\",\"tags\":[\"a\",\"b\"],\"n\":3}");
    job_error_free(&err);
    job_free(job);
}

static void minimal_job_has_defaults(void **state)
{
    static const char v[] =
        JOB(",\"route\":null,\"system\":null,\"params\":null,\"stream\":null,\"metadata\":null");
    job_t *job = NULL;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), NULL, &job, &err), 0);
    assert_null(job->route);
    assert_null(job->system);
    assert_false(job->has_history);
    assert_null(job->history);
    assert_false(job->params.has_temperature || job->params.has_top_p || job->params.has_max_tokens ||
                 job->params.has_seed);
    assert_null(job->params.stop);
    assert_false(job->stream);
    assert_null(job->reply_topic);
    assert_false(job->has_deadline);
    assert_null(job->metadata_json);
    assert_string_equal(job->unknown_params, "");
    job_free(job);
    job_error_free(&err);
}

static void inline_history_empty_is_present(void **state)
{
    static const char v[] = JOB(",\"history\":[],\"params\":{\"stop\":\"##\"}");
    job_t *job = NULL;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), NULL, &job, &err), 0);
    assert_true(job->has_history);
    assert_int_equal(job->n_history, 0);
    assert_int_equal(job->params.n_stop, 1);
    assert_string_equal(job->params.stop[0], "##");
    job_free(job);
    job_error_free(&err);
}

typedef struct {
    const char *value;
    job_error_code_t code;
    const char *message; /* a prefix of err.message */
    bool job_id_readable;
    bool conversation_id_readable;
} bad_case_t;

#define INVALID   JOB_ERR_INVALID_JOB
#define TOO_LARGE JOB_ERR_TOO_LARGE
#define MSG       "\"message\":{\"role\":\"user\",\"content\":\"hi\"}"

static const bad_case_t bad_cases[] = {
    {"{\"conversation_id\":\"c-1\"," MSG "}", INVALID, "job_id: required", false, true},
    {"{\"job_id\":null,\"conversation_id\":\"c-1\"," MSG "}", INVALID, "job_id: required", false, true},
    {"{\"job_id\":7,\"conversation_id\":\"c-1\"," MSG "}", INVALID, "job_id: must be a string", false, true},
    {"{\"job_id\":\"\",\"conversation_id\":\"c-1\"," MSG "}", INVALID, "job_id: must not be empty", false,
     true},
    {"{\"job_id\":\"123456789\",\"conversation_id\":\"c-1\"," MSG "}", INVALID, "job_id: longer than 8 bytes",
     false, true},
    {"{\"job_id\":\"j-1\"," MSG "}", INVALID, "conversation_id: required", true, false},
    {"{\"job_id\":\"j-1\",\"conversation_id\":[]," MSG "}", INVALID, "conversation_id: must be a string",
     true, false},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"123456789\"," MSG "}", INVALID,
     "conversation_id: longer than 8 bytes", true, false},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\"}", INVALID, "message: required", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":\"hi\"}", INVALID,
     "message: must be an object", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"content\":\"hi\"}}", INVALID,
     "message.role: required", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"assistant\",\"content\":\"hi\"}"
     "}",
     INVALID, "message.role: must be \"user\"", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\"}}", INVALID,
     "message.content: required", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":5}}",
     INVALID, "message.content: must be a string", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":\"\"}}",
     INVALID, "message.content: must not be empty", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":"
     "\"012345678901234567890123456789012\"}}",
     TOO_LARGE, "message.content: longer than 32 bytes", true, true},
    {JOB(",\"route\":5"), INVALID, "route: must be a string", true, true},
    {JOB(",\"route\":\"\""), INVALID, "route: must not be empty", true, true},
    {JOB(",\"route\":\"123456789\""), INVALID, "route: longer than 8 bytes", true, true},
    {JOB(",\"system\":true"), INVALID, "system: must be a string", true, true},
    {JOB(",\"system\":\"0123456789abcdefg\""), TOO_LARGE, "system: longer than 16 bytes", true, true},
    {JOB(",\"history\":{}"), INVALID, "history: must be an array", true, true},
    {JOB(",\"history\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"},"
         "{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"}]"),
     TOO_LARGE, "history: more than 3 messages", true, true},
    {JOB(",\"history\":[1]"), INVALID, "history[0]: must be an object", true, true},
    {JOB(",\"history\":[{\"role\":\"tool\",\"content\":\"x\"}]"), INVALID,
     "history[0].role: must be system, user or assistant", true, true},
    {JOB(",\"history\":[{\"content\":\"x\"}]"), INVALID, "history[0].role: must be system, user or assistant",
     true, true},
    {JOB(",\"history\":[{\"role\":\"user\"}]"), INVALID, "history[0].content: must be a string", true, true},
    {JOB(",\"history\":[{\"role\":\"user\",\"content\":\"\"},{\"role\":\"user\",\"content\":"
         "\"0123456789abcdefg\"}]"),
     TOO_LARGE, "history[1].content: longer than 16 bytes", true, true},
    {JOB(",\"params\":[]"), INVALID, "params: must be an object", true, true},
    {JOB(",\"params\":{\"temperature\":2.5}"), INVALID, "params.temperature: must be a number from 0 to 2",
     true, true},
    {JOB(",\"params\":{\"temperature\":\"hot\"}"), INVALID, "params.temperature: must be a number", true,
     true},
    {JOB(",\"params\":{\"top_p\":1.5}"), INVALID, "params.top_p: must be a number from 0 to 1", true, true},
    {JOB(",\"params\":{\"top_p\":-0.1}"), INVALID, "params.top_p: must be a number from 0 to 1", true, true},
    {JOB(",\"params\":{\"max_tokens\":0}"), INVALID, "params.max_tokens: must be an integer from 1", true,
     true},
    {JOB(",\"params\":{\"max_tokens\":1.5}"), INVALID, "params.max_tokens: must be an integer", true, true},
    {JOB(",\"params\":{\"max_tokens\":1000001}"), INVALID, "params.max_tokens: must be an integer", true,
     true},
    {JOB(",\"params\":{\"max_tokens\":\"5\"}"), INVALID, "params.max_tokens: must be an integer", true, true},
    {JOB(",\"params\":{\"stop\":5}"), INVALID, "params.stop: must be a string or an array of strings", true,
     true},
    {JOB(",\"params\":{\"stop\":[\"a\",\"b\",\"c\"]}"), INVALID, "params.stop: more than 2 sequences", true,
     true},
    {JOB(",\"params\":{\"stop\":[\"a\",\"abcde\"]}"), INVALID, "params.stop[1]: longer than 4 bytes", true,
     true},
    {JOB(",\"params\":{\"stop\":[\"\"]}"), INVALID, "params.stop[0]: must not be empty", true, true},
    {JOB(",\"params\":{\"stop\":[1]}"), INVALID, "params.stop[0]: must be a string", true, true},
    {JOB(",\"params\":{\"stop\":\"abcdef\"}"), INVALID, "params.stop: longer than 4 bytes", true, true},
    {JOB(",\"params\":{\"seed\":1.5}"), INVALID, "params.seed: must be an integer", true, true},
    {JOB(",\"params\":{\"seed\":1e300}"), INVALID, "params.seed: must be an integer", true, true},
    {JOB(",\"stream\":\"yes\""), INVALID, "stream: must be true or false", true, true},
    {JOB(",\"stream\":1"), INVALID, "stream: must be true or false", true, true},
    {JOB(",\"reply_topic\":\"bad topic\""), INVALID, "reply_topic: must be 1 to 249 characters", true, true},
    {JOB(",\"reply_topic\":\"\""), INVALID, "reply_topic: must be 1 to 249 characters", true, true},
    {JOB(",\"reply_topic\":\"..\""), INVALID, "reply_topic: must be 1 to 249 characters", true, true},
    {JOB(",\"reply_topic\":7"), INVALID, "reply_topic: must be 1 to 249 characters", true, true},
    {JOB(",\"deadline_ms\":-1"), INVALID, "deadline_ms: must be a non-negative integer", true, true},
    {JOB(",\"deadline_ms\":1.5"), INVALID, "deadline_ms: must be a non-negative integer", true, true},
    {JOB(",\"deadline_ms\":\"soon\""), INVALID, "deadline_ms: must be a non-negative integer", true, true},
    {JOB(",\"metadata\":[]"), INVALID, "metadata: must be an object", true, true},
    {JOB(",\"metadata\":{\"k\":\"0123456789012345678901234567\"}"), TOO_LARGE,
     "metadata: more than 32 bytes serialized", true, true},
    /* value-level failures */
    {"", INVALID, "value: not JSON", false, false},
    {"hello", INVALID, "value: not JSON", false, false},
    {"[1,2]", INVALID, "value: must be a JSON object", false, false},
    {"\"j-1\"", INVALID, "value: must be a JSON object", false, false},
    {"null", INVALID, "value: must be a JSON object", false, false},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{", INVALID, "value: not JSON", true, true},
    {JOB("") " x", INVALID, "value: not JSON (error at byte 82)", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":\"\xff\"}}",
     INVALID, "value: invalid UTF-8 at byte 76", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":"
     "\"\xed\xa0\x80\"}}",
     INVALID, "value: invalid UTF-8", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":"
     "\"\xc0\xaf\"}}",
     INVALID, "value: invalid UTF-8", true, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":"
     "\"a\\u0000\"}}",
     INVALID, "value: strings must not contain \\u0000", true, true},
    {"{\"job_id\":\"j\\u0000\",\"conversation_id\":\"c-1\"," MSG "}", INVALID,
     "value: strings must not contain", false, true},
    {"{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"message\":{\"role\":\"user\",\"content\":\"a\tb\"}}",
     INVALID, "value: not JSON (control character at byte 77)", true, true},
    {"{\"job_id\":\"j-\\\"1\",\"conversation_id\":\"c\\\\\\\"\",\"x\":[\"}\",{\"a\":\"]\"}],\"message\":tru}",
     INVALID, "value: not JSON", true, true},
};

static void bad_jobs_are_rejected(void **state)
{
    job_limits_t lim = small_limits();
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad_cases); i++) {
        const bad_case_t *c = &bad_cases[i];
        job_t *job = (job_t *)&job; /* must be reset to NULL */
        job_error_t err;
        int rc = job_parse(c->value, strlen(c->value), &lim, &job, &err);
        if (rc != -1 || err.code != c->code || strncmp(err.message, c->message, strlen(c->message)) != 0 ||
            (err.job_id != NULL) != c->job_id_readable ||
            (err.conversation_id != NULL) != c->conversation_id_readable)
            fail_msg("case %zu %s: rc %d code %s message '%s' job_id %s conversation_id %s", i, c->value, rc,
                     job_error_code_name(err.code), err.message, err.job_id ? err.job_id : "-",
                     err.conversation_id ? err.conversation_id : "-");
        assert_null(job);
        if (err.job_id)
            assert_true(strcmp(err.job_id, "j-1") == 0 || strcmp(err.job_id, "j-\"1") == 0);
        assert_int_equal(job_error_ids_readable(&err), c->job_id_readable && c->conversation_id_readable);
        job_error_free(&err);
        job_error_free(&err); /* idempotent */
    }
}

static void default_limits_name_the_field(void **state)
{
    char id[130];
    memset(id, 'a', 129);
    id[129] = '\0';
    char v[512];
    snprintf(v, sizeof v, "{\"job_id\":\"%s\",\"conversation_id\":\"c\"," MSG "}", id);
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), NULL, &job, &err), -1);
    assert_string_equal(err.message, "job_id: longer than 128 bytes");
    assert_int_equal(err.code, JOB_ERR_INVALID_JOB);
    assert_null(err.job_id);
    assert_string_equal(err.conversation_id, "c");
    job_error_free(&err);
    /* exactly at the limit is fine */
    id[128] = '\0';
    snprintf(v, sizeof v, "{\"job_id\":\"%s\",\"conversation_id\":\"c\"," MSG "}", id);
    assert_int_equal(job_parse(v, strlen(v), NULL, &job, &err), 0);
    assert_int_equal(strlen(job->job_id), 128);
    job_free(job);
    job_error_free(&err);
}

static void too_large_still_reads_ids(void **state)
{
    job_limits_t lim = small_limits();
    size_t pad = 5000;
    char *v = malloc(pad + 200);
    int n = snprintf(
        v, 200, "{\"metadata\":{\"k\":1},\"job_id\":\"j\\u002d1\",\"conversation_id\":\"c-1\",\"pad\":\"");
    memset(v + n, 'x', pad);
    memcpy(v + n + pad, "\"}", 3);
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), &lim, &job, &err), -1);
    assert_int_equal(err.code, JOB_ERR_TOO_LARGE);
    assert_string_equal(err.message, "value: 5073 bytes, more than 4096");
    assert_string_equal(err.job_id, "j-1");
    assert_string_equal(err.conversation_id, "c-1");
    assert_string_equal(err.metadata_json, "{\"k\":1}");
    job_error_free(&err);
    /* ids behind the first max_message_bytes are not looked for */
    n = snprintf(v, 200, "{\"pad\":\"");
    memset(v + n, 'x', pad);
    snprintf(v + n + pad, 200, "\",\"job_id\":\"j-1\",\"conversation_id\":\"c-1\"}");
    assert_int_equal(job_parse(v, strlen(v), &lim, &job, &err), -1);
    assert_int_equal(err.code, JOB_ERR_TOO_LARGE);
    assert_false(job_error_ids_readable(&err));
    assert_null(err.job_id);
    job_error_free(&err);
    free(v);
}

static void invalid_job_keeps_metadata(void **state)
{
    static const char v[] =
        "{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"metadata\":{ \"trace\" : [1, 2.5, \"x\"] },"
        "\"message\":{\"role\":\"user\"}}";
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), NULL, &job, &err), -1);
    assert_string_equal(err.message, "message.content: required");
    assert_string_equal(err.metadata_json, "{\"trace\":[1,2.5,\"x\"]}");
    job_error_free(&err);
}

static void unknown_params_list_is_bounded(void **state)
{
    char v[2048];
    int n = snprintf(v, sizeof v, "{\"job_id\":\"j\",\"conversation_id\":\"c\"," MSG ",\"params\":{");
    for (int i = 0; i < 40; i++)
        n += snprintf(v + n, sizeof v - (size_t)n, "%s\"param_%02d\":1", i ? "," : "", i);
    snprintf(v + n, sizeof v - (size_t)n, "}}");
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), NULL, &job, &err), 0);
    size_t len = strlen(job->unknown_params);
    assert_true(len < sizeof job->unknown_params);
    assert_memory_equal(job->unknown_params, "param_00,param_01,", 18);
    assert_string_equal(job->unknown_params + len - 3, "...");
    job_free(job);
    job_error_free(&err);
}

/* Parses v with small limits; returns the job (NULL on failure, with *err kept for the caller). */
static job_t *parse_small(const char *v, job_error_t *err)
{
    job_limits_t lim = small_limits();
    job_t *job = NULL;
    if (job_parse(v, strlen(v), &lim, &job, err) != 0)
        assert_null(job);
    return job;
}

/* v must fail with code and a message starting with msg. */
static void expect_error(const char *v, job_error_code_t code, const char *msg)
{
    job_error_t err;
    job_t *job = parse_small(v, &err);
    if (job || err.code != code || strncmp(err.message, msg, strlen(msg)) != 0)
        fail_msg("%s: code %s message '%s', want '%s'", v, job_error_code_name(err.code), err.message, msg);
    job_error_free(&err);
}

static void duplicate_keys_first_wins(void **state)
{
    job_error_t err;
    job_t *job =
        parse_small("{\"job_id\":\"j-1\",\"job_id\":\"j-2\",\"conversation_id\":\"c-1\","
                    "\"message\":{\"role\":\"user\",\"content\":\"a\",\"content\":\"b\",\"role\":\"x\"},"
                    "\"params\":{\"seed\":1,\"seed\":\"x\",\"n\":1,\"n\":2},"
                    "\"metadata\":{\"k\":1,\"k\":2},\"metadata\":[]}",
                    &err);
    assert_non_null(job);
    assert_string_equal(job->job_id, "j-1");
    assert_string_equal(job->message.content, "a");
    assert_int_equal(job->params.seed, 1);
    assert_string_equal(job->unknown_params, "n,n");              /* each unknown member, as listed before */
    assert_string_equal(job->metadata_json, "{\"k\":1,\"k\":2}"); /* kept whole, duplicates too */
    job_free(job);
    job_error_free(&err);
    /* a null first member counts as absent: the second is not looked at */
    expect_error("{\"job_id\":null,\"job_id\":\"j\",\"conversation_id\":\"c\"," MSG "}", INVALID,
                 "job_id: required");
}

/* A job whose metadata nests depth arrays. */
static char *nested_metadata_job(size_t depth)
{
    char *v = malloc(2 * depth + 128);
    int n = snprintf(v, 128, "{\"job_id\":\"j-1\",\"conversation_id\":\"c-1\"," MSG ",\"metadata\":{\"d\":");
    memset(v + n, '[', depth);
    memset(v + n + depth, ']', depth);
    memcpy(v + n + 2 * depth, "}}", 3);
    return v;
}

static void nesting_is_bounded(void **state)
{
    job_limits_t lim = job_limits_default();
    job_t *job;
    job_error_t err;
    /* root, metadata and 62 arrays: 64 levels, the most the reader takes */
    char *v = nested_metadata_job(62);
    assert_int_equal(job_parse(v, strlen(v), &lim, &job, &err), 0);
    assert_int_equal(strlen(job->metadata_json), 5 + 2 * 62 + 1);
    job_free(job);
    job_error_free(&err);
    free(v);
    /* one more is not JSON (cJSON took 1000); ids and the metadata (64 levels alone) are salvaged */
    v = nested_metadata_job(63);
    assert_int_equal(job_parse(v, strlen(v), &lim, &job, &err), -1);
    assert_int_equal(err.code, JOB_ERR_INVALID_JOB);
    assert_memory_equal(err.message, "value: not JSON (error at byte ", 31);
    assert_true(job_error_ids_readable(&err));
    assert_non_null(err.metadata_json);
    job_error_free(&err);
    free(v);
}

static void escapes_decode_and_count(void **state)
{
    job_error_t err;
    /* escaped keys match; limits count decoded bytes: 4 x U+00E9 is 8 bytes, 24 raw */
    job_t *job =
        parse_small("{\"\\u006aob_id\":\"\\u00e9\\u00e9\\u00e9\\u00e9\",\"conversation_id\":\"c\\/1\","
                    "\"message\":{\"role\":\"\\u0075ser\",\"content\":\"\\ud83d\\ude00\\t\\\"\"},"
                    "\"params\":{\"stop\":[\"\\n\"],\"\\u00e9t\\u00e9\":1},"
                    "\"reply_topic\":\"t\\u002e1\",\"system\":\"\"}",
                    &err);
    assert_non_null(job);
    assert_string_equal(job->job_id, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    assert_string_equal(job->conversation_id, "c/1");
    assert_string_equal(job->message.content, "\xf0\x9f\x98\x80\t\"");
    assert_int_equal(job->message.content_len, 6);
    assert_string_equal(job->params.stop[0], "\n");
    assert_string_equal(job->unknown_params, "\xc3\xa9t\xc3\xa9"); /* the name decoded */
    assert_string_equal(job->reply_topic, "t.1");
    assert_string_equal(job->system, "");
    assert_int_equal(job->system_len, 0);
    job_free(job);
    job_error_free(&err);
    expect_error("{\"job_id\":\"\\u00e9\\u00e9\\u00e9\\u00e9x\",\"conversation_id\":\"c\"," MSG "}", INVALID,
                 "job_id: longer than 8 bytes");
    expect_error(JOB(",\"reply_topic\":\"a\\u0020b\""), INVALID, "reply_topic: must be 1 to 249");
    /* lone surrogates are rejected as cJSON did, at the escape; so are bad \u escapes (cJSON: NUL) */
    expect_error("{\"job_id\":\"j\\ud800\",\"conversation_id\":\"c\"," MSG "}", INVALID,
                 "value: not JSON (error at byte 12)");
    expect_error(JOB(",\"metadata\":{\"k\":\"\\udc00\\ud800\"}"), INVALID,
                 "value: not JSON (error at byte 98)");
    expect_error(JOB(",\"system\":\"\\ud800\\u0041\""), INVALID, "value: not JSON (error at byte 91)");
    expect_error(JOB(",\"system\":\"\\u12g4\""), INVALID, "value: not JSON (error at byte 91)");
    /* ... but an invalid UTF-8 byte after them is reported first, as the prescan did */
    expect_error(JOB(",\"system\":\"\\ud800\",\"x\":\"\xff\""), INVALID, "value: invalid UTF-8 at byte 104");
}

static void numbers_at_the_edges(void **state)
{
    job_error_t err;
    job_t *job = NULL;
    job_parse(JOB(",\"params\":{\"max_tokens\":1E2,\"seed\":-9007199254740991,\"temperature\":"
                  "0.00000000000000000000000000000000000000000000000000000000000000000000001,"
                  "\"top_p\":-0},\"deadline_ms\":1893456000000.0,"
                  "\"metadata\":{\"big\":123456789012345678901234567890,\"f\":1.0E+2,\"z\":-0.0}"),
              strlen(JOB(",\"params\":{\"max_tokens\":1E2,\"seed\":-9007199254740991,\"temperature\":"
                         "0.00000000000000000000000000000000000000000000000000000000000000000000001,"
                         "\"top_p\":-0},\"deadline_ms\":1893456000000.0,"
                         "\"metadata\":{\"big\":123456789012345678901234567890,\"f\":1.0E+2,\"z\":-0.0}")),
              NULL, &job, &err);
    assert_non_null(job);
    assert_int_equal(job->params.max_tokens, 100);
    assert_true(job->params.seed == -9007199254740991LL);
    assert_true(job->params.temperature > 0 && job->params.temperature < 1e-60);
    assert_true(job->params.has_top_p && job->params.top_p == 0);
    assert_true(job->deadline_ms == 1893456000000LL);
    /* echoed as written (cJSON printed 1.2345678901234568e+29, 100 and -0) */
    assert_string_equal(job->metadata_json,
                        "{\"big\":123456789012345678901234567890,\"f\":1.0E+2,\"z\":-0.0}");
    job_free(job);
    job_error_free(&err);
    expect_error(JOB(",\"params\":{\"seed\":9007199254740992}"), INVALID, "params.seed: must be an integer");
    expect_error(JOB(",\"params\":{\"seed\":-1e400}"), INVALID, "params.seed: must be an integer");
    expect_error(JOB(",\"params\":{\"temperature\":1e400}"), INVALID, "params.temperature: must be a number");
    expect_error(
        JOB(",\"params\":{\"max_tokens\":100000000000000000000000000000000000000000000000000000000000000000"
            "0000000001}"),
        INVALID, "params.max_tokens: must be an integer");
    expect_error(JOB(",\"deadline_ms\":1e400"), INVALID, "deadline_ms: must be a non-negative integer");
    expect_error(JOB(",\"deadline_ms\":9007199254740992"), INVALID,
                 "deadline_ms: must be a non-negative integer");
    /* RFC 8259 numbers only (cJSON took these) */
    expect_error(JOB(",\"params\":{\"max_tokens\":01}"), INVALID, "value: not JSON (error at byte 105)");
    expect_error(JOB(",\"deadline_ms\":1.}"), INVALID, "value: not JSON");
    expect_error(JOB(",\"deadline_ms\":-.5}"), INVALID, "value: not JSON");
}

static void every_field_rejects_wrong_types(void **state)
{
    static const char *const values[] = {"7", "\"s\"", "true", "false", "[]", "{}", "[\"s\"]", "{\"a\":1}"};
    enum { NUM = 1, STR = 2, BOOL = 4 | 8, ARR = 16 | 64, OBJ = 32 | 128 };
    static const struct {
        const char *extra, *msg;
        unsigned skip; /* values[i] with bit i set: the right type, or another message */
    } cases[] = {
        {",\"route\":%s", "route: must be a string", STR},
        {",\"system\":%s", "system: must be a string", STR},
        {",\"history\":%s", "history: must be an array", ARR},
        {",\"history\":[%s]", "history[0]: must be an object", OBJ},
        {",\"history\":[{\"role\":%s,\"content\":\"x\"}]",
         "history[0].role: must be system, user or assistant", 0},
        {",\"history\":[{\"role\":\"user\",\"content\":%s}]", "history[0].content: must be a string", STR},
        {",\"params\":%s", "params: must be an object", OBJ},
        {",\"params\":{\"temperature\":%s}", "params.temperature: must be a number from 0 to 2", 0},
        {",\"params\":{\"top_p\":%s}", "params.top_p: must be a number from 0 to 1", 0},
        {",\"params\":{\"max_tokens\":%s}", "params.max_tokens: must be an integer from 1 to 1000000", NUM},
        {",\"params\":{\"seed\":%s}", "params.seed: must be an integer within +-2^53", NUM},
        {",\"params\":{\"stop\":%s}", "params.stop: must be a string or an array of strings", STR | ARR},
        {",\"params\":{\"stop\":[%s]}", "params.stop[0]: must be a string", STR},
        {",\"stream\":%s", "stream: must be true or false", BOOL},
        {",\"reply_topic\":%s", "reply_topic: must be 1 to 249 characters of [A-Za-z0-9._-]", STR},
        {",\"deadline_ms\":%s", "deadline_ms: must be a non-negative integer (Unix epoch ms)", NUM},
        {",\"metadata\":%s", "metadata: must be an object", OBJ},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(cases); i++) {
        for (size_t j = 0; j < BASE_ARRAY_LEN(values); j++) {
            char member[96], v[256];
            if (cases[i].skip >> j & 1)
                continue;
            snprintf(member, sizeof member, cases[i].extra, values[j]);
            snprintf(v, sizeof v, JOB("%s"), member);
            expect_error(v, INVALID, cases[i].msg);
        }
    }
    /* the ids and the message */
    for (size_t j = 0; j < BASE_ARRAY_LEN(values); j++) {
        char v[256];
        if (j != 1) {
            snprintf(v, sizeof v, "{\"job_id\":%s,\"conversation_id\":\"c\"," MSG "}", values[j]);
            expect_error(v, INVALID, "job_id: must be a string");
            snprintf(v, sizeof v, "{\"job_id\":\"j\",\"conversation_id\":%s," MSG "}", values[j]);
            expect_error(v, INVALID, "conversation_id: must be a string");
            snprintf(v, sizeof v,
                     "{\"job_id\":\"j\",\"conversation_id\":\"c\",\"message\":{\"role\":\"user\","
                     "\"content\":%s}}",
                     values[j]);
            expect_error(v, INVALID, "message.content: must be a string");
            snprintf(v, sizeof v,
                     "{\"job_id\":\"j\",\"conversation_id\":\"c\",\"message\":{\"role\":%s,"
                     "\"content\":\"x\"}}",
                     values[j]);
            expect_error(v, INVALID, "message.role: must be \"user\"");
        }
        if (j != 5 && j != 7) {
            snprintf(v, sizeof v, "{\"job_id\":\"j\",\"conversation_id\":\"c\",\"message\":%s}", values[j]);
            expect_error(v, INVALID, "message: must be an object");
        }
    }
}

static void metadata_is_echoed_as_written(void **state)
{
    job_limits_t lim = job_limits_default();
    lim.max_metadata_bytes = 44;
    static const char v[] =
        "{\"job_id\":\"j\",\"conversation_id\":\"c\"," MSG ",\"metadata\" : { \"a\" : [ 1 ,\t"
        "\"x y\" ,\n{\"b\":\"\\u00e9 \\\\\\\" \"} ] , \"e\":{ } }}";
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(v, strlen(v), &lim, &job, &err), 0);
    /* whitespace between tokens dropped, strings and escapes kept (cJSON decoded and escaped again) */
    static const char want[] = "{\"a\":[1,\"x y\",{\"b\":\"\\u00e9 \\\\\\\" \"}],\"e\":{}}";
    assert_string_equal(job->metadata_json, want);
    job_free(job);
    job_error_free(&err);
    /* the limit counts that form */
    lim.max_metadata_bytes = sizeof want - 2;
    assert_int_equal(job_parse(v, strlen(v), &lim, &job, &err), -1);
    assert_string_equal(err.message, "metadata: more than 42 bytes serialized");
    assert_int_equal(err.code, JOB_ERR_TOO_LARGE);
    assert_null(err.metadata_json);
    assert_true(job_error_ids_readable(&err));
    job_error_free(&err);
}

static void reader_edges_against_cjson(void **state)
{
    job_error_t err;
    /* a leading byte order mark is skipped, as cJSON did; error offsets still count it */
    job_t *job = parse_small("\xef\xbb\xbf" JOB(""), &err);
    assert_non_null(job);
    job_free(job);
    job_error_free(&err);
    expect_error("\xef\xbb\xbf" JOB("") "x", INVALID, "value: not JSON (error at byte 84)");
    /* whitespace is RFC 8259's: cJSON took any byte below 0x20 between tokens */
    expect_error("{\f\"job_id\":\"j\",\"conversation_id\":\"c\"," MSG "}", INVALID,
                 "value: not JSON (error at byte 1)");
    expect_error(JOB("") "\v", INVALID, "value: not JSON (error at byte 81)");
    /* the end of the text: the byte after the last */
    expect_error("{\"job_id\":\"j\"", INVALID, "value: not JSON (error at byte 13)");
}

/* Parses s with cJSON and checks its top-level member names, in order. */
static cJSON *parse_with_members(const char *s, const char *const *names, size_t n)
{
    cJSON *t = cJSON_Parse(s);
    assert_non_null(t);
    size_t i = 0;
    for (const cJSON *c = t->child; c; c = c->next, i++) {
        if (i >= n)
            fail_msg("unexpected member %s in %s", c->string, s);
        assert_string_equal(c->string, names[i]);
    }
    assert_int_equal(i, n);
    return t;
}

static void reply_matches_contract_example(void **state)
{
    job_attempt_t at[2];
    job_attempt_init(&at[0], "openai-main", JOB_OUTCOME_WON);
    at[0].latency_ms = 420;
    at[0].http_status = 200;
    job_attempt_init(&at[1], "anthropic-backup", JOB_OUTCOME_CANCELLED);
    at[1].latency_ms = 420;
    job_reply_t r;
    job_reply_init(&r, "j-1", "c-1");
    r.content = "...";
    r.content_len = 3;
    r.finish_reason = "stop";
    r.provider = "openai-main";
    r.model = "gpt-4o-mini";
    r.has_usage = true;
    r.prompt_tokens = 12;
    r.completion_tokens = 30;
    r.total_tokens = 42;
    r.timing = (job_timing_t){3, 1, 180, 420, 430};
    r.attempts = at;
    r.n_attempts = 2;
    size_t len;
    char *s = job_reply_encode(&r, &len);
    assert_non_null(s);
    assert_string_equal(
        s,
        "{\"type\":\"final\",\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"status\":\"ok\","
        "\"message\":{\"role\":\"assistant\",\"content\":\"...\"},\"finish_reason\":\"stop\","
        "\"provider\":\"openai-main\",\"model\":\"gpt-4o-mini\","
        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42},"
        "\"timing\":{\"queued_ms\":3,\"history_ms\":1,\"first_token_ms\":180,\"llm_ms\":420,\"total_ms\":430}"
        ","
        "\"attempts\":[{\"provider\":\"openai-main\",\"outcome\":\"won\",\"latency_ms\":420,\"http_status\":"
        "200},"
        "{\"provider\":\"anthropic-backup\",\"outcome\":\"cancelled\",\"latency_ms\":420}],\"metadata\":{}}");
    assert_int_equal(len, strlen(s));
    free(s);
}

static void reply_ok_with_everything(void **state)
{
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(full_job, strlen(full_job), NULL, &job, &err), 0);
    job_attempt_t at[3];
    job_attempt_init(&at[0], "a", JOB_OUTCOME_LOST);
    at[0].latency_ms = 500;
    at[0].first_token_ms = 90;
    at[0].retries = 2;
    at[0].http_status = 200;
    job_attempt_init(&at[1], "b", JOB_OUTCOME_WON);
    at[1].latency_ms = 300;
    at[1].reason = "hedge_after_ms=120";
    at[1].started_after_ms = 120;
    job_attempt_init(&at[2], "c", JOB_OUTCOME_SKIPPED);
    at[2].reason = "breaker_open";
    job_reply_t r;
    job_reply_init(&r, job->job_id, job->conversation_id);
    r.content = "hi";
    r.content_len = 2;
    r.finish_reason = "length";
    r.provider = "b";
    r.model = "m";
    r.has_usage = true;
    r.has_cost = true;
    r.cost_usd = 0.000125;
    r.timing.total_ms = 7;
    r.attempts = at;
    r.n_attempts = 3;
    r.metadata_json = job->metadata_json;
    char *s = job_reply_encode(&r, NULL);
    static const char *const names[] = {"type",          "job_id",   "conversation_id", "status", "message",
                                        "finish_reason", "provider", "model",           "usage",  "cost_usd",
                                        "timing",        "attempts", "metadata"};
    cJSON *t = parse_with_members(s, names, BASE_ARRAY_LEN(names));
    assert_true(cJSON_GetObjectItem(t, "cost_usd")->valuedouble == 0.000125);
    char *timing = cJSON_PrintUnformatted(cJSON_GetObjectItem(t, "timing"));
    assert_string_equal(timing, "{\"total_ms\":7}");
    free(timing);
    const cJSON *a = cJSON_GetObjectItem(t, "attempts");
    assert_int_equal(cJSON_GetArraySize(a), 3);
    char *a0 = cJSON_PrintUnformatted(cJSON_GetArrayItem(a, 0));
    assert_string_equal(a0, "{\"provider\":\"a\",\"outcome\":\"lost\",\"latency_ms\":500,\"http_status\":200,"
                            "\"first_token_ms\":90,\"retries\":2}");
    char *a1 = cJSON_PrintUnformatted(cJSON_GetArrayItem(a, 1));
    assert_string_equal(a1, "{\"provider\":\"b\",\"outcome\":\"won\",\"latency_ms\":300,"
                            "\"reason\":\"hedge_after_ms=120\",\"started_after_ms\":120}");
    char *a2 = cJSON_PrintUnformatted(cJSON_GetArrayItem(a, 2));
    assert_string_equal(
        a2, "{\"provider\":\"c\",\"outcome\":\"skipped\",\"latency_ms\":0,\"reason\":\"breaker_open\"}");
    /* metadata echoed equal to what the job carried */
    cJSON *orig = cJSON_Parse(full_job);
    assert_true(cJSON_Compare(cJSON_GetObjectItem(orig, "metadata"), cJSON_GetObjectItem(t, "metadata"), 1));
    free(a0);
    free(a1);
    free(a2);
    cJSON_Delete(orig);
    cJSON_Delete(t);
    free(s);
    job_free(job);
    job_error_free(&err);
}

static void reply_error_and_expired(void **state)
{
    static const char *const names[] = {"type",  "job_id", "conversation_id", "status",
                                        "error", "timing", "attempts",        "metadata"};
    job_reply_t r;
    job_reply_init(&r, "j\"1", "c\n1");
    r.status = JOB_STATUS_ERROR;
    r.error_code = JOB_ERR_INVALID_JOB;
    r.error_message = "message.content: must be a string";
    r.metadata_json = "{\"k\":[1]}";
    char *s = job_reply_encode(&r, NULL);
    cJSON *t = parse_with_members(s, names, BASE_ARRAY_LEN(names));
    assert_string_equal(cJSON_GetObjectItem(t, "job_id")->valuestring, "j\"1");
    assert_string_equal(cJSON_GetObjectItem(t, "conversation_id")->valuestring, "c\n1");
    assert_string_equal(cJSON_GetObjectItem(t, "status")->valuestring, "error");
    const cJSON *e = cJSON_GetObjectItem(t, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, "invalid_job");
    assert_string_equal(cJSON_GetObjectItem(e, "message")->valuestring, "message.content: must be a string");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t, "attempts")), 0);
    assert_non_null(strstr(s, ",\"metadata\":{\"k\":[1]}}"));
    cJSON_Delete(t);
    free(s);

    job_reply_init(&r, "j", "c");
    r.status = JOB_STATUS_EXPIRED;
    r.error_code = JOB_ERR_DEADLINE_EXCEEDED;
    r.error_message = "deadline_ms passed before the job started";
    s = job_reply_encode(&r, NULL);
    t = parse_with_members(s, names, BASE_ARRAY_LEN(names));
    assert_string_equal(cJSON_GetObjectItem(t, "status")->valuestring, "expired");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(t, "error"), "code")->valuestring,
                        "deadline_exceeded");
    assert_null(cJSON_GetObjectItem(t, "message"));
    cJSON_Delete(t);
    free(s);

    job_reply_init(&r, NULL, "c");
    assert_null(job_reply_encode(&r, NULL));
}

static void error_code_names(void **state)
{
    static const char *const want[] = {"none",
                                       "invalid_job",
                                       "deadline_exceeded",
                                       "all_providers_failed",
                                       "history_unavailable",
                                       "unknown_route",
                                       "reply_topic_not_allowed",
                                       "too_large",
                                       "internal_error"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(want); i++)
        assert_string_equal(job_error_code_name((job_error_code_t)i), want[i]);
    assert_string_equal(job_status_name(JOB_STATUS_EXPIRED), "expired");
    assert_string_equal(job_outcome_name(JOB_OUTCOME_TIMEOUT), "timeout");
}

static void delta_and_reset(void **state)
{
    size_t len;
    char *s = job_delta_encode("j-1", "c-1", 3, "Hel\"lo", 6, "openai-main", &len);
    assert_string_equal(s, "{\"type\":\"delta\",\"job_id\":\"j-1\",\"conversation_id\":\"c-1\",\"seq\":3,"
                           "\"delta\":\"Hel\\\"lo\",\"provider\":\"openai-main\"}");
    assert_int_equal(len, strlen(s));
    free(s);
    s = job_reset_encode("j-1", "c-1", "provider openai-main failed: timeout", NULL);
    assert_string_equal(s, "{\"type\":\"reset\",\"job_id\":\"j-1\",\"conversation_id\":\"c-1\","
                           "\"reason\":\"provider openai-main failed: timeout\"}");
    free(s);
}

static void escaping_of_odd_content(void **state)
{
    static const char in[] = "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f"       /* ASCII specials */
                             "\0"                                   /* NUL byte (content_len counts it) */
                             "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" /* é € 😀 kept */
                             "\xff"
                             "\xed\xa0\x80"
                             "\xc0\xaf" /* invalid: one U+FFFD per byte */
                             "\xe2\x80\xa8"
                             "\xe2\x82"; /* U+2028, truncated sequence */
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(job_json_append_string(&b, in, sizeof in - 1, 0), 0);
    static const char want[] = "\"q\\\"b\\\\s/\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\\u0000"
                               "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                               "\xef\xbf\xbd"
                               "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                               "\xef\xbf\xbd\xef\xbf\xbd"
                               "\xe2\x80\xa8"
                               "\xef\xbf\xbd\xef\xbf\xbd\"";
    assert_string_equal(b.data, want);
    buf_reset(&b);
    assert_int_equal(job_json_append_string(&b,
                                            "a\xe2\x80\xa8"
                                            "b\xe2\x80\xa9",
                                            8, JOB_JSON_ESCAPE_LINESEP),
                     0);
    assert_string_equal(b.data, "\"a\\u2028b\\u2029\"");
    buf_free(&b);

    /* a reply with that content parses back as JSON */
    job_reply_t r;
    job_reply_init(&r, "j", "c");
    r.content = in;
    r.content_len = sizeof in - 1;
    char *s = job_reply_encode(&r, NULL);
    cJSON *t = cJSON_Parse(s);
    assert_non_null(t);
    assert_memory_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(t, "message"), "content")->valuestring,
                        "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f", 13);
    cJSON_Delete(t);
    free(s);

    /* a bounded buffer that is too small fails instead of truncating silently */
    buf_init(&b, 4);
    assert_int_equal(job_json_append_string(&b, "abcdef", 6, 0), -1);
    buf_free(&b);
}

static void history_entry_round_trip(void **state)
{
    chat_message_t m = {.role = "assistant", .content = "line1\nline2 \"q\" \xc3\xa9", .content_len = 18};
    size_t len;
    char *s = job_history_entry_encode(&m, &len);
    assert_string_equal(s, "{\"role\":\"assistant\",\"content\":\"line1\\nline2 \\\"q\\\" \xc3\xa9\"}");
    chat_message_t back;
    job_error_t err;
    assert_int_equal(job_history_entry_parse(s, len, 1024, &back, &err), 0);
    assert_string_equal(back.role, "assistant");
    assert_int_equal(back.content_len, 18);
    assert_memory_equal(back.content, m.content, 18);
    job_message_release(&back);
    assert_null(back.content);
    free(s);

    /* a NUL is stored as U+FFFD, so the entry still reads back */
    chat_message_t nul = {.role = "user", .content = "a\0b", .content_len = 3};
    s = job_history_entry_encode(&nul, &len);
    assert_string_equal(s, "{\"role\":\"user\",\"content\":\"a\xef\xbf\xbd"
                           "b\"}");
    assert_int_equal(job_history_entry_parse(s, len, 1024, &back, &err), 0);
    assert_string_equal(back.content, "a\xef\xbf\xbd"
                                      "b");
    job_message_release(&back);
    free(s);

    /* the exact encoder form is read without a tree; every other form through cJSON: same answers */
    static const struct {
        const char *v, *content;
    } forms[] = {
        {"{\"role\":\"user\",\"content\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "\"\\/\b\f\n\r\t"},
        {"{\"role\":\"user\",\"content\":\"caf\\u00e9 \\ud83d\\ude00\"}", "caf\xc3\xa9 \xf0\x9f\x98\x80"},
        {"{ \"role\": \"system\", \"content\": \"spaced\" }", "spaced"},
        {"{\"content\":\"swapped\",\"role\":\"assistant\"}", "swapped"},
        {"{\"role\":\"user\",\"content\":\"\"}", ""},
        {"{\"role\":\"user\",\"content\":\"a\",\"content\":\"b\"}", "a"}, /* the first, as cJSON read it */
        {"\xef\xbb\xbf{\"role\":\"user\",\"content\":\"bom\"}", "bom"},   /* skipped, as cJSON did */
        {"{\"r\\u006fle\":\"\\u0075ser\",\"content\":\"\\u00e9\"}", "\xc3\xa9"}, /* escaped key and role */
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(forms); i++) {
        if (job_history_entry_parse(forms[i].v, strlen(forms[i].v), 1024, &back, &err) != 0)
            fail_msg("form %zu: %s", i, err.message);
        assert_string_equal(back.content, forms[i].content);
        assert_int_equal(back.content_len, strlen(forms[i].content));
        job_message_release(&back);
    }

    static const struct {
        const char *v;
        job_error_code_t code;
        const char *msg;
    } bad[] = {
        {"nope", JOB_ERR_INVALID_JOB, "history entry: not JSON"},
        {"{\"role\":\"user\",\"content\":\"x\"}}", JOB_ERR_INVALID_JOB, "history entry: not JSON"},
        {"{\"role\":\"user\",\"content\":\"x\\\"}", JOB_ERR_INVALID_JOB, "history entry: not JSON"},
        {"{\"role\":\"user\",\"content\":\"x\\q\"}", JOB_ERR_INVALID_JOB, "history entry: not JSON"},
        {"[]", JOB_ERR_INVALID_JOB, "history entry: must be a JSON object"},
        {"{\"content\":\"x\"}", JOB_ERR_INVALID_JOB, "history entry.role: must be system, user or assistant"},
        {"{\"role\":\"tool\",\"content\":\"x\"}", JOB_ERR_INVALID_JOB, "history entry.role: must be"},
        {"{\"role\":\"user\",\"content\":1}", JOB_ERR_INVALID_JOB, "history entry.content: must be a string"},
        {"{\"role\":\"user\",\"content\":\"\xfe\"}", JOB_ERR_INVALID_JOB,
         "history entry: invalid UTF-8 at byte 26"},
        {"{\"role\":\"user\",\"content\":\"\\u0000\"}", JOB_ERR_INVALID_JOB,
         "history entry: strings must not"},
        {"{\"role\":\"user\",\"content\":\"0123456789012345678901234567890123456789\"}", JOB_ERR_TOO_LARGE,
         "history entry: 68 bytes, more than 64"},
        /* the fast form, checked for UTF-8 after it was read */
        {"{\"role\":\"user\",\"content\":\"ok\xff\"}", JOB_ERR_INVALID_JOB,
         "history entry: invalid UTF-8 at byte 28"},
        {"{\"role\":\"user\",\"content\":\"\\ud800\"}", JOB_ERR_INVALID_JOB,
         "history entry: not JSON (error at byte 26)"}, /* a lone surrogate, as cJSON had it */
        {"{\"role\":\"user\",\"content\":\"\\uzzzz\"}", JOB_ERR_INVALID_JOB,
         "history entry: not JSON (error at byte 26)"},
    };
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        chat_message_t out = {.content = "junk"};
        int rc = job_history_entry_parse(bad[i].v, strlen(bad[i].v), 64, &out, &err);
        if (rc != -1 || err.code != bad[i].code || strncmp(err.message, bad[i].msg, strlen(bad[i].msg)) != 0)
            fail_msg("entry %zu: rc %d %s '%s'", i, rc, job_error_code_name(err.code), err.message);
        assert_null(out.content);
    }
}

/* Fails the n-th allocation for n = 1.. until fn succeeds with no failure left; fn must never
 * crash or leak (the ASan build checks leaks), and may only fail with out-of-memory. */
static void torture(int (*fn)(void), const char *what)
{
    long n;
    for (n = 1; n < 10000; n++) {
        base_alloc_fail_after(n);
        int rc = fn();
        base_alloc_fail_after(0);
        if (rc == 0)
            break;
        assert_int_equal(rc, -2);
    }
    assert_true(n > 1);
    printf("torture %s: %ld allocations failed in turn\n", what, n - 1);
}

/* 0 success, -2 failed cleanly with internal_error, -1 anything else. */
static int torture_parse_full(void)
{
    job_t *job;
    job_error_t err;
    int rc = job_parse(full_job, strlen(full_job), NULL, &job, &err);
    int code = err.code;
    job_error_free(&err);
    if (rc == 0) {
        job_free(job);
        return 0;
    }
    return code == JOB_ERR_INTERNAL ? -2 : -1;
}

static int torture_parse_salvage(void)
{
    static const char v[] =
        "{\"job_id\":\"j\",\"conversation_id\":\"c\",\"metadata\":{\"a\":[1]},\"message\":{";
    job_t *job;
    job_error_t err;
    int rc = job_parse(v, strlen(v), NULL, &job, &err);
    bool complete = err.code == JOB_ERR_INVALID_JOB && job_error_ids_readable(&err) && err.metadata_json;
    bool oom = err.code == JOB_ERR_INTERNAL || (err.code == JOB_ERR_INVALID_JOB && !complete);
    job_error_free(&err);
    if (rc != -1)
        return -1;
    return complete ? 0 : oom ? -2 : -1;
}

static int torture_encode(void)
{
    job_attempt_t at[2];
    job_attempt_init(&at[0], "a", JOB_OUTCOME_WON);
    job_attempt_init(&at[1], "b", JOB_OUTCOME_ERROR);
    at[1].reason = "HTTP 500: \"oops\"";
    job_reply_t r;
    job_reply_init(&r, "j", "c");
    static char content[3000];
    memset(content, 'z', sizeof content);
    r.content = content;
    r.content_len = sizeof content;
    r.attempts = at;
    r.n_attempts = 2;
    r.metadata_json = "{\"m\":1}";
    char *s = job_reply_encode(&r, NULL);
    char *d = job_delta_encode("j", "c", 1, "x", 1, "a", NULL);
    char *e = job_reset_encode("j", "c", "r", NULL);
    chat_message_t m = {.role = "user", .content = "hi", .content_len = 2};
    char *h = job_history_entry_encode(&m, NULL);
    int rc = s && d && e && h ? 0 : -2;
    if (s && !strstr(s, "\"reason\":\"HTTP 500: \\\"oops\\\"\"}],\"metadata\":{\"m\":1}}"))
        rc = -1;
    free(s);
    free(d);
    free(e);
    free(h);
    return rc;
}

static int torture_history_entry(void)
{
    static const char v[] = "{\"role\":\"assistant\",\"content\":\"hello there\",\"extra\":[1,2,3]}";
    chat_message_t m;
    job_error_t err;
    if (job_history_entry_parse(v, strlen(v), 1024, &m, &err) == 0) {
        int rc = strcmp(m.content, "hello there") == 0 ? 0 : -1;
        job_message_release(&m);
        return rc;
    }
    return err.code == JOB_ERR_INTERNAL ? -2 : -1;
}

static void allocation_failure_torture(void **state)
{
    torture(torture_parse_full, "job_parse");
    torture(torture_parse_salvage, "job_parse salvage");
    torture(torture_encode, "encoders");
    torture(torture_history_entry, "job_history_entry_parse");
}

static void timing_loop(void **state)
{
    static const char typical[] =
        "{\"job_id\":\"4f6c2a9e-1b7d-4c1e-9a3b-2d8f0e6a7c51\",\"conversation_id\":\"conv-8d1e4b2f-77aa\","
        "\"message\":{\"role\":\"user\",\"content\":\"Can you summarise the main points of our discussion so "
        "far, "
        "in three short bullet points, and suggest one next step?\"},\"route\":\"default\","
        "\"params\":{\"temperature\":0.3,\"max_tokens\":400},\"stream\":false,"
        "\"metadata\":{\"user_id\":\"u-1234\",\"channel\":\"web\"}}";
    enum { N = 20000 };
    uint64_t t0 = base_mono_ns();
    for (int i = 0; i < N; i++) {
        job_t *job;
        job_error_t err;
        assert_int_equal(job_parse(typical, sizeof typical - 1, NULL, &job, &err), 0);
        job_free(job);
    }
    uint64_t t1 = base_mono_ns();
    job_t *job;
    job_error_t err;
    assert_int_equal(job_parse(typical, sizeof typical - 1, NULL, &job, &err), 0);
    job_attempt_t at[2];
    job_attempt_init(&at[0], "openai-main", JOB_OUTCOME_WON);
    at[0].latency_ms = 420;
    at[0].http_status = 200;
    job_attempt_init(&at[1], "anthropic-backup", JOB_OUTCOME_CANCELLED);
    at[1].latency_ms = 420;
    static const char answer[] =
        "- We agreed the worker must never lose a job.\n- Offsets commit only after replies are written.\n"
        "- Providers race; the loser is cancelled at once.\n\nNext step: run the crash test with 500 jobs "
        "in flight and compare the replies.";
    job_reply_t r;
    job_reply_init(&r, job->job_id, job->conversation_id);
    r.content = answer;
    r.content_len = sizeof answer - 1;
    r.finish_reason = "stop";
    r.provider = "openai-main";
    r.model = "gpt-4o-mini";
    r.has_usage = true;
    r.prompt_tokens = 120;
    r.completion_tokens = 60;
    r.total_tokens = 180;
    r.timing = (job_timing_t){3, 1, 180, 420, 430};
    r.attempts = at;
    r.n_attempts = 2;
    r.metadata_json = job->metadata_json;
    uint64_t t2 = base_mono_ns();
    size_t len = 0;
    for (int i = 0; i < N; i++) {
        char *s = job_reply_encode(&r, &len);
        assert_non_null(s);
        free(s);
    }
    uint64_t t3 = base_mono_ns();
    for (int i = 0; i < N; i++) {
        chat_message_t m = {.role = "assistant", .content = answer, .content_len = sizeof answer - 1};
        char *s = job_history_entry_encode(&m, &len);
        chat_message_t back;
        job_error_t herr;
        assert_int_equal(job_history_entry_parse(s, len, 65536, &back, &herr), 0);
        job_message_release(&back);
        free(s);
    }
    uint64_t t4 = base_mono_ns();
    printf(
        "timing: job_parse %.0f ns (%zu B), job_reply_encode %.0f ns, history entry encode+parse %.0f ns\n",
        (double)(t1 - t0) / N, sizeof typical - 1, (double)(t3 - t2) / N, (double)(t4 - t3) / N);
    job_free(job);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_job_parses),
        cmocka_unit_test(minimal_job_has_defaults),
        cmocka_unit_test(inline_history_empty_is_present),
        cmocka_unit_test(bad_jobs_are_rejected),
        cmocka_unit_test(default_limits_name_the_field),
        cmocka_unit_test(too_large_still_reads_ids),
        cmocka_unit_test(invalid_job_keeps_metadata),
        cmocka_unit_test(unknown_params_list_is_bounded),
        cmocka_unit_test(duplicate_keys_first_wins),
        cmocka_unit_test(nesting_is_bounded),
        cmocka_unit_test(escapes_decode_and_count),
        cmocka_unit_test(numbers_at_the_edges),
        cmocka_unit_test(every_field_rejects_wrong_types),
        cmocka_unit_test(metadata_is_echoed_as_written),
        cmocka_unit_test(reader_edges_against_cjson),
        cmocka_unit_test(reply_matches_contract_example),
        cmocka_unit_test(reply_ok_with_everything),
        cmocka_unit_test(reply_error_and_expired),
        cmocka_unit_test(error_code_names),
        cmocka_unit_test(delta_and_reset),
        cmocka_unit_test(escaping_of_odd_content),
        cmocka_unit_test(history_entry_round_trip),
        cmocka_unit_test(allocation_failure_torture),
        cmocka_unit_test(timing_loop),
    };
    return cmocka_run_group_tests_name("job", tests, NULL, NULL);
}
