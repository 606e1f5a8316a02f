/* encode.c — every JSON message the worker publishes or stores: the final reply (CONTRACT §2,
 * fields in its order), delta, reset and the Redis history entry. Hand-written on buf_t: one
 * pass, no tree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job/job.h"
#include "job/job_json.h"

/* A buf_t writer that remembers the first failure, so encoders check once at the end. */
typedef struct {
    buf_t b;
    bool failed;
} writer_t;

static void w_raw(writer_t *w, const char *s, size_t n)
{
    if (!w->failed && job_buf_put(&w->b, s, n) < 0)
        w->failed = true;
}

#define W_LIT(w, lit) w_raw((w), (lit), sizeof(lit) - 1)

static void w_str(writer_t *w, const char *s, size_t n, unsigned flags)
{
    if (!w->failed && job_json_append_string(&w->b, s ? s : "", s ? n : 0, flags) < 0)
        w->failed = true;
}

static void w_cstr(writer_t *w, const char *s) { w_str(w, s, s ? strlen(s) : 0, 0); }

static void w_int(writer_t *w, int64_t v)
{
    char tmp[21];
    w_raw(w, tmp, base_i64_dec(tmp, v));
}

static char *w_finish(writer_t *w, size_t *len)
{
    if (w->failed) {
        buf_free(&w->b);
        return NULL;
    }
    return buf_steal(&w->b, len);
}

/* A known-safe name (enum string): no escaping needed. */
static void w_name(writer_t *w, const char *s) { w_raw(w, s, strlen(s)); }

/* {"type":"TYPE","job_id":..,"conversation_id":.. — the head every published message shares. */
static void w_head(writer_t *w, size_t size_hint, const char *type, const char *job_id,
                   const char *conversation_id)
{
    buf_init(&w->b, 0);
    w->failed = !job_id || !conversation_id || buf_reserve(&w->b, size_hint) < 0;
    W_LIT(w, "{\"type\":\"");
    w_name(w, type);
    W_LIT(w, "\",\"job_id\":");
    w_cstr(w, job_id);
    W_LIT(w, ",\"conversation_id\":");
    w_cstr(w, conversation_id);
}

static const char *const status_names[] = {"ok", "error", "expired"};
static const char *const outcome_names[] = {"won", "lost", "cancelled", "error", "timeout", "skipped"};

const char *job_status_name(job_status_t status)
{
    return (size_t)status < BASE_ARRAY_LEN(status_names) ? status_names[status] : "error";
}

const char *job_outcome_name(job_outcome_t outcome)
{
    return (size_t)outcome < BASE_ARRAY_LEN(outcome_names) ? outcome_names[outcome] : "error";
}

void job_reply_init(job_reply_t *r, const char *job_id, const char *conversation_id)
{
    memset(r, 0, sizeof *r);
    r->job_id = job_id;
    r->conversation_id = conversation_id;
    r->timing = (job_timing_t){-1, -1, -1, -1, -1};
}

void job_attempt_init(job_attempt_t *a, const char *provider, job_outcome_t outcome)
{
    memset(a, 0, sizeof *a);
    a->provider = provider;
    a->outcome = outcome;
    a->first_token_ms = -1;
    a->started_after_ms = -1;
}

/* "key":v — key is a bare name; a comma first unless this is the object's first member. */
static void w_member(writer_t *w, bool *first, const char *key)
{
    if (!*first)
        W_LIT(w, ",");
    *first = false;
    W_LIT(w, "\"");
    w_name(w, key);
    W_LIT(w, "\":");
}

static void w_int_member(writer_t *w, bool *first, const char *key, int64_t v)
{
    w_member(w, first, key);
    w_int(w, v);
}

static void w_str_member(writer_t *w, bool *first, const char *key, const char *s)
{
    w_member(w, first, key);
    w_cstr(w, s);
}

static void w_attempt(writer_t *w, const job_attempt_t *a)
{
    bool first = true;
    W_LIT(w, "{");
    w_str_member(w, &first, "provider", a->provider);
    w_member(w, &first, "outcome");
    W_LIT(w, "\"");
    w_name(w, job_outcome_name(a->outcome));
    W_LIT(w, "\"");
    w_int_member(w, &first, "latency_ms", a->latency_ms);
    if (a->http_status > 0)
        w_int_member(w, &first, "http_status", a->http_status);
    if (a->first_token_ms >= 0)
        w_int_member(w, &first, "first_token_ms", a->first_token_ms);
    if (a->retries > 0)
        w_int_member(w, &first, "retries", a->retries);
    if (a->reason)
        w_str_member(w, &first, "reason", a->reason);
    if (a->started_after_ms >= 0)
        w_int_member(w, &first, "started_after_ms", a->started_after_ms);
    W_LIT(w, "}");
}

static void w_timing(writer_t *w, const job_timing_t *t)
{
    const int64_t v[] = {t->queued_ms, t->history_ms, t->first_token_ms, t->llm_ms, t->total_ms};
    static const char *const names[] = {"queued_ms", "history_ms", "first_token_ms", "llm_ms", "total_ms"};
    bool first = true;
    W_LIT(w, "{");
    for (size_t i = 0; i < BASE_ARRAY_LEN(v); i++)
        if (v[i] >= 0)
            w_int_member(w, &first, names[i], v[i]);
    W_LIT(w, "}");
}

char *job_reply_encode(const job_reply_t *r, size_t *len)
{
    writer_t w;
    bool first = false; /* the head already wrote members */
    size_t meta_len = r->metadata_json ? strlen(r->metadata_json) : 0;
    w_head(&w, 512 + r->content_len + r->content_len / 8 + meta_len + 192 * r->n_attempts, "final", r->job_id,
           r->conversation_id);
    w_member(&w, &first, "status");
    W_LIT(&w, "\"");
    w_name(&w, job_status_name(r->status));
    W_LIT(&w, "\"");
    if (r->status == JOB_STATUS_OK) {
        W_LIT(&w, ",\"message\":{\"role\":\"assistant\",\"content\":");
        w_str(&w, r->content, r->content_len, 0);
        W_LIT(&w, "}");
    } else {
        W_LIT(&w, ",\"error\":{\"code\":\"");
        w_name(&w, job_error_code_name(r->error_code));
        W_LIT(&w, "\",\"message\":");
        w_cstr(&w, r->error_message);
        W_LIT(&w, "}");
    }
    if (r->finish_reason)
        w_str_member(&w, &first, "finish_reason", r->finish_reason);
    if (r->provider)
        w_str_member(&w, &first, "provider", r->provider);
    if (r->model)
        w_str_member(&w, &first, "model", r->model);
    if (r->has_usage) {
        bool ufirst = true;
        w_member(&w, &first, "usage");
        W_LIT(&w, "{");
        w_int_member(&w, &ufirst, "prompt_tokens", r->prompt_tokens);
        w_int_member(&w, &ufirst, "completion_tokens", r->completion_tokens);
        w_int_member(&w, &ufirst, "total_tokens", r->total_tokens);
        W_LIT(&w, "}");
    }
    if (r->has_cost && isfinite(r->cost_usd)) {
        char num[32];
        int n = snprintf(num, sizeof num, "%.10g", r->cost_usd);
        w_member(&w, &first, "cost_usd");
        w_raw(&w, num, n > 0 ? (size_t)n : 0);
    }
    w_member(&w, &first, "timing");
    w_timing(&w, &r->timing);
    w_member(&w, &first, "attempts");
    W_LIT(&w, "[");
    for (size_t i = 0; i < r->n_attempts; i++) {
        if (i)
            W_LIT(&w, ",");
        w_attempt(&w, &r->attempts[i]);
    }
    W_LIT(&w, "]");
    w_member(&w, &first, "metadata");
    if (meta_len)
        w_raw(&w, r->metadata_json, meta_len);
    else
        W_LIT(&w, "{}");
    W_LIT(&w, "}");
    return w_finish(&w, len);
}

char *job_delta_encode(const char *job_id, const char *conversation_id, uint64_t seq, const char *delta,
                       size_t delta_len, const char *provider, size_t *len)
{
    writer_t w;
    w_head(&w, 192 + delta_len + delta_len / 8, "delta", job_id, conversation_id);
    W_LIT(&w, ",\"seq\":");
    w_int(&w, seq > INT64_MAX ? INT64_MAX : (int64_t)seq);
    W_LIT(&w, ",\"delta\":");
    w_str(&w, delta, delta_len, 0);
    W_LIT(&w, ",\"provider\":");
    w_cstr(&w, provider);
    W_LIT(&w, "}");
    return w_finish(&w, len);
}

char *job_reset_encode(const char *job_id, const char *conversation_id, const char *reason, size_t *len)
{
    writer_t w;
    w_head(&w, 256, "reset", job_id, conversation_id);
    W_LIT(&w, ",\"reason\":");
    w_cstr(&w, reason);
    W_LIT(&w, "}");
    return w_finish(&w, len);
}

char *job_history_entry_encode(const chat_message_t *m, size_t *len)
{
    writer_t w;
    buf_init(&w.b, 0);
    w.failed = !m->role || buf_reserve(&w.b, 40 + m->content_len + m->content_len / 8) < 0;
    W_LIT(&w, "{\"role\":");
    w_cstr(&w, m->role);
    W_LIT(&w, ",\"content\":");
    w_str(&w, m->content, m->content_len, JOB_JSON_NUL_AS_FFFD);
    W_LIT(&w, "}");
    return w_finish(&w, len);
}
