/* result.c — one results.jsonl line and, for Batch input, its batch_output.jsonl line. */
#include <stdio.h>
#include <string.h>

#include "job/job.h"
#include "replay/replay_int.h"

/* Appends "name":"value" (value may be NULL: then nothing). */
static int put_str(buf_t *b, const char *name, const char *v, size_t n)
{
    if (!v)
        return 0;
    return buf_printf(b, ",\"%s\":", name) || job_json_append_string(b, v, n, JOB_JSON_NUL_AS_FFFD);
}

static int put_usage(buf_t *b, const replay_result_t *r)
{
    if (!r->has_usage)
        return 0;
    return buf_printf(
        b, ",\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}",
        (long long)r->prompt_tokens, (long long)r->completion_tokens, (long long)r->total_tokens);
}

int replay_result_line(buf_t *b, const replay_result_t *r)
{
    int e =
        buf_append_str(b, "{\"turn_id\":") || job_json_append_string(b, r->turn_id, strlen(r->turn_id), 0);
    e = e || put_str(b, r->batch ? "custom_id" : "conversation_id", r->id, strlen(r->id));
    e = e ||
        buf_printf(b, ",\"line\":%ld,\"turn\":%zu,\"message_index\":%zu", r->line_no, r->turn, r->msg_index);
    e = e || put_str(b, "target", r->target, strlen(r->target));
    e = e || put_str(b, "provider", r->provider, r->provider ? strlen(r->provider) : 0);
    e = e || put_str(b, "model", r->model, r->model ? strlen(r->model) : 0);
    e = e || buf_printf(b, ",\"status\":\"%s\"", r->ok ? "ok" : "error");
    if (r->ok) {
        e = e || put_str(b, "answer", r->answer ? r->answer : "", r->answer ? r->answer_len : 0);
        e = e ||
            put_str(b, "finish_reason", r->finish_reason, r->finish_reason ? strlen(r->finish_reason) : 0);
    } else {
        e = e || buf_append_str(b, ",\"error\":{\"code\":") ||
            job_json_append_string(b, r->err_code, strlen(r->err_code), 0) ||
            buf_append_str(b, ",\"kind\":") ||
            job_json_append_string(b, r->err_kind, strlen(r->err_kind), 0) ||
            put_str(b, "message", r->err_msg ? r->err_msg : "", r->err_msg ? strlen(r->err_msg) : 0) ||
            buf_append_str(b, "}");
    }
    e = e || put_usage(b, r);
    if (r->has_cost)
        e = e || buf_printf(b, ",\"cost_usd\":%.10g", r->cost_usd);
    e = e || buf_printf(b, ",\"latency_ms\":%lld", (long long)r->latency_ms);
    if (r->ttft_ms >= 0)
        e = e || buf_printf(b, ",\"ttft_ms\":%lld", (long long)r->ttft_ms);
    e = e || buf_printf(b, ",\"attempts\":%s", r->attempts_json ? r->attempts_json : "[]");
    if (r->metadata_json)
        e = e || buf_printf(b, ",\"metadata\":%s", r->metadata_json);
    e = e || buf_printf(b, ",\"finished_at_ms\":%lld}\n", (long long)base_wall_ms());
    return e ? -1 : 0;
}

int replay_batch_line(buf_t *b, const replay_result_t *r)
{
    int e = buf_append_str(b, "{\"id\":") || job_json_append_string(b, r->turn_id, strlen(r->turn_id), 0);
    e = e || put_str(b, "custom_id", r->id, strlen(r->id));
    if (r->ok) {
        const char *model = r->model ? r->model : "";
        e = e || buf_append_str(b, ",\"response\":{\"status_code\":200,\"request_id\":") ||
            job_json_append_string(b, r->turn_id, strlen(r->turn_id), 0) ||
            buf_append_str(b, ",\"body\":{\"id\":") ||
            job_json_append_string(b, r->job_id ? r->job_id : r->turn_id,
                                   strlen(r->job_id ? r->job_id : r->turn_id), 0) ||
            buf_printf(b, ",\"object\":\"chat.completion\",\"created\":%lld",
                       (long long)(base_wall_ms() / 1000)) ||
            put_str(b, "model", model, strlen(model)) ||
            buf_append_str(b,
                           ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":") ||
            job_json_append_string(b, r->answer ? r->answer : "", r->answer ? r->answer_len : 0,
                                   JOB_JSON_NUL_AS_FFFD) ||
            buf_printf(b, "},\"finish_reason\":\"%s\"}]", r->finish_reason ? r->finish_reason : "stop");
        e = e || put_usage(b, r) || buf_append_str(b, "}},\"error\":null}\n");
    } else if (r->http_status > 0) {
        e = e || buf_printf(b, ",\"response\":{\"status_code\":%d,\"request_id\":", r->http_status) ||
            job_json_append_string(b, r->turn_id, strlen(r->turn_id), 0) ||
            buf_append_str(b, ",\"body\":{\"error\":{\"message\":") ||
            job_json_append_string(b, r->err_msg ? r->err_msg : "", r->err_msg ? strlen(r->err_msg) : 0, 0) ||
            buf_append_str(b, ",\"type\":") ||
            job_json_append_string(b, r->err_kind, strlen(r->err_kind), 0) ||
            buf_append_str(b, "}}},\"error\":null}\n");
    } else {
        e = e || buf_append_str(b, ",\"response\":null,\"error\":{\"code\":") ||
            job_json_append_string(b, r->err_kind, strlen(r->err_kind), 0) ||
            buf_append_str(b, ",\"message\":") ||
            job_json_append_string(b, r->err_msg ? r->err_msg : "", r->err_msg ? strlen(r->err_msg) : 0, 0) ||
            buf_append_str(b, "}}\n");
    }
    return e ? -1 : 0;
}

int replay_attempts_json(buf_t *b, const job_attempt_t *a, size_t n)
{
    int e = buf_append_str(b, "[");
    for (size_t i = 0; i < n && !e; i++) {
        e = buf_printf(b, "%s{\"provider\":", i ? "," : "") ||
            job_json_append_string(b, a[i].provider, strlen(a[i].provider), 0) ||
            buf_printf(b, ",\"outcome\":\"%s\",\"latency_ms\":%lld", job_outcome_name(a[i].outcome),
                       (long long)a[i].latency_ms);
        if (a[i].http_status)
            e = e || buf_printf(b, ",\"http_status\":%d", a[i].http_status);
        if (a[i].first_token_ms >= 0)
            e = e || buf_printf(b, ",\"first_token_ms\":%lld", (long long)a[i].first_token_ms);
        if (a[i].retries)
            e = e || buf_printf(b, ",\"retries\":%d", a[i].retries);
        if (a[i].reason)
            e = e || buf_append_str(b, ",\"reason\":") ||
                job_json_append_string(b, a[i].reason, strlen(a[i].reason), 0);
        e = e || buf_append_str(b, "}");
    }
    return e || buf_append_str(b, "]") ? -1 : 0;
}
