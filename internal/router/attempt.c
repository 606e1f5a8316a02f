/* attempt.c — one provider attempt of a call: admission through limits/, the HTTP request with its
 * timeouts, the answer (JSON, or an SSE stream whose deltas go to the caller), and retries with backoff.
 * A retry is the same attempt: one record, its retries counted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "router/router_int.h"

#define ATTEMPT_MAX_HEADERS 64

static void attempt_send(attempt_t *a);

static int64_t min_positive(int64_t a, int64_t b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

static bool sequential(const router_call_t *call)
{
    return call->route->strategy == STRATEGY_FALLBACK || call->reset_phase;
}

static const char *verdict_name(limits_verdict_t v)
{
    switch (v) {
    case LIMITS_BREAKER_OPEN:
        return "breaker_open";
    case LIMITS_CONCURRENCY:
        return "concurrency_limit";
    case LIMITS_RATE_LIMITED:
        return "rate_limited";
    default:
        return "admitted";
    }
}

void attempt_set_text(attempt_t *a, const char *text)
{
    free(a->reason);
    a->reason = text && text[0] ? base_strdup(text) : NULL;
    a->record.reason = a->reason;
}

/* record.reason = "<why>; <text>" (either part may be empty). */
static void attempt_set_reason(attempt_t *a, const char *text)
{
    char reason[ROUTER_REASON_MAX];
    const char *parts[] = {a->why, a->why[0] && text && text[0] ? "; " : NULL, text};
    base_join(reason, sizeof reason, parts, BASE_ARRAY_LEN(parts));
    attempt_set_text(a, reason);
}

/* Gives back what limits/ lent the current request. */
static void attempt_limits_done(attempt_t *a, limits_outcome_t o)
{
    router_t *r = a->call->router;
    if (a->wait) {
        limits_rate_cancel(a->wait);
        a->wait = NULL;
    }
    if (a->limits_held)
        limits_finish(r->limits, a->pidx, o);
    a->limits_held = false;
}

/* Stops whatever of the attempt still runs and marks it done, recording outcome and text. */
static void attempt_close(attempt_t *a, job_outcome_t outcome, limits_outcome_t lo, const char *text)
{
    router_call_t *call = a->call;
    if (a->transfer) {
        http_cancel(a->transfer);
        a->transfer = NULL;
        call->router->stats.attempts_in_flight--;
    }
    attempt_limits_done(a, lo);
    if (!a->feeding) {
        llm_stream_free(a->stream);
        a->stream = NULL;
    }
    buf_free(&a->body);
    a->due_ms = 0;
    a->state = AT_DONE;
    call->active--;
    call->slots[a->slot].running = false;
    a->record.outcome = outcome;
    a->record.latency_ms = base_mono_ms() - a->started_ms;
    if (outcome == JOB_OUTCOME_ERROR || outcome == JOB_OUTCOME_TIMEOUT || outcome == JOB_OUTCOME_SKIPPED)
        call->slots[a->slot].exhausted = true;
    attempt_set_reason(a, text);
}

/* Ends the attempt and tells the call, unless the attempt is still being begun (the caller sees it). */
static void attempt_end(attempt_t *a, job_outcome_t outcome, limits_outcome_t lo, const char *text)
{
    attempt_close(a, outcome, lo, text);
    if (!a->beginning)
        call_attempt_ended(a->call, a);
}

void attempt_stop(attempt_t *a, job_outcome_t outcome, const char *reason)
{
    attempt_close(a, outcome, LIMITS_NEUTRAL, reason);
}

void attempt_release(attempt_t *a)
{
    if (a->result)
        llm_result_free(a->result);
    free(a->result);
    a->result = NULL;
    free(a->reason);
    a->reason = NULL;
    a->record.reason = NULL;
    llm_stream_free(a->stream);
    a->stream = NULL;
    buf_free(&a->body);
}

/* Admission said no: a first try is skipped, a retry ends the attempt as the error it retried. */
static void attempt_refused(attempt_t *a, const char *why)
{
    if (a->sent == 0) {
        a->call->router->stats.skipped++;
        attempt_end(a, JOB_OUTCOME_SKIPPED, LIMITS_NEUTRAL, why);
        return;
    }
    char text[ROUTER_REASON_MAX];
    snprintf(text, sizeof text, "%s; retry not admitted: %s", a->reason ? a->reason : "", why);
    attempt_end(a, JOB_OUTCOME_ERROR, LIMITS_NEUTRAL, text);
}

static void attempt_on_rate(void *ctx, bool granted, int64_t retry_after_ms)
{
    attempt_t *a = ctx;
    router_call_t *call = a->call;
    call->busy++;
    a->wait = NULL;
    if (granted) {
        a->tokens_taken = true;
        attempt_send(a);
    } else {
        attempt_refused(a, "rate_limited");
    }
    call_leave(call);
}

/* Breaker, concurrency and rate budget; then the request. */
static void attempt_admit(attempt_t *a)
{
    router_call_t *call = a->call;
    router_t *r = call->router;
    a->state = AT_ADMIT;
    if (!r->limits) {
        attempt_send(a);
        return;
    }
    bool probe = false;
    limits_verdict_t v = limits_try_start(r->limits, a->pidx, &probe);
    if (v != LIMITS_OK) {
        attempt_refused(a, verdict_name(v));
        return;
    }
    a->limits_held = true;
    if (probe) {
        size_t used = strlen(a->why);
        snprintf(a->why + used, sizeof a->why - used, "%sbreaker_probe", used ? ", " : "");
    }
    int64_t wait = sequential(call) ? a->provider->limit_wait_ms : 0;
    if (wait > 0 && call->deadline_ms > 0 && call->deadline_ms - base_mono_ms() < wait)
        wait = call->deadline_ms - base_mono_ms() > 0 ? call->deadline_ms - base_mono_ms() : 0;
    bool granted = false;
    a->wait = limits_rate_acquire(r->limits, a->pidx, call->est_tokens, wait, attempt_on_rate, a, &granted);
    if (a->wait)
        return; /* attempt_on_rate goes on */
    if (!granted) {
        attempt_refused(a, "rate_limited");
        return;
    }
    a->tokens_taken = true;
    attempt_send(a);
}

attempt_t *attempt_begin(router_call_t *call, size_t slot, const char *why)
{
    router_t *r = call->router;
    attempt_t *a = &call->attempts[call->n_attempts++];
    int64_t now = base_mono_ms();
    a->call = call;
    a->slot = slot;
    a->pidx = call->order[slot];
    a->provider = &r->cfg->llm.providers[a->pidx];
    a->sink.a = a;
    a->started_ms = now;
    buf_init(&a->body, (size_t)r->cfg->llm.max_response_bytes);
    job_attempt_init(&a->record, a->provider->name, JOB_OUTCOME_ERROR);
    a->record.started_after_ms = now - call->started_ms;
    base_join(a->why, sizeof a->why, &why, 1);
    call->slots[slot].started = true;
    call->slots[slot].running = true;
    call->active++;
    a->beginning = true;
    attempt_admit(a);
    a->beginning = false;
    return a;
}

void attempt_due(attempt_t *a)
{
    a->due_ms = 0;
    if (a->state == AT_BACKOFF) {
        attempt_admit(a);
        return;
    }
    char text[96];
    snprintf(text, sizeof text, "first_token_timeout_ms=%lld", (long long)a->first_token_timeout_ms);
    attempt_end(a, JOB_OUTCOME_TIMEOUT, LIMITS_FAILURE, text);
}

static void attempt_on_delta(llm_stream_sink_t *sink, const char *text, size_t len, bool first)
{
    attempt_t *a = sink->a;
    router_call_t *call = a->call;
    if (call->dead || call->finished || a->state != AT_RUNNING)
        return;
    if (first) {
        int64_t now = base_mono_ms();
        a->record.first_token_ms = now - a->started_ms;
        a->due_ms = 0;
        router_sample(call->router, a->pidx, true, now, now - a->req_started_ms, true);
        call_first_token(call, a);
    }
    if (call->streamer != a)
        return;
    a->published = true;
    if (call->cbs.on_delta)
        call->cbs.on_delta(call->cbs.ctx, a->provider->name, text, len);
}

static void attempt_on_response(void *ctx, const http_response_t *res)
{
    attempt_t *a = ctx;
    const char *ct = res->content_type;
    if (res->status < 200 || res->status >= 300 || (ct && strncasecmp(ct, "application/json", 16) == 0)) {
        a->json_body = true;
        a->due_ms = 0;
    }
}

static int attempt_on_data(void *ctx, const char *chunk, size_t n)
{
    attempt_t *a = ctx;
    if (a->json_body)
        return buf_append(&a->body, chunk, n) == 0 ? 0 : 1;
    router_call_t *call = a->call;
    call->busy++;
    a->feeding = true;
    int rc = llm_stream_feed(a->stream, chunk, n) == 0 ? 0 : 1;
    a->feeding = false;
    if (a->state == AT_DONE) { /* cancelled from inside a delta callback */
        llm_stream_free(a->stream);
        a->stream = NULL;
        rc = 1;
    }
    call_leave(call);
    return rc;
}

/* How an attempt that did not answer well failed. */
typedef struct {
    job_outcome_t outcome;
    limits_outcome_t limits;
    bool retryable;
    char text[ROUTER_REASON_MAX];
} verdict_t;

/* Names the timeout that ended the request. */
static void judge_timeout(const attempt_t *a, const http_result_t *res, verdict_t *v)
{
    const config_provider_t *p = a->provider;
    v->outcome = JOB_OUTCOME_TIMEOUT;
    v->limits = LIMITS_FAILURE;
    switch (res->code) {
    case HTTP_ERR_TIMEOUT_CONNECT:
        v->retryable = true;
        snprintf(v->text, sizeof v->text, "connect_timeout_ms=%lld", (long long)p->connect_timeout_ms);
        break;
    case HTTP_ERR_TIMEOUT_FIRST_BYTE:
        snprintf(v->text, sizeof v->text, "first_token_timeout_ms=%lld",
                 (long long)p->first_token_timeout_ms);
        break;
    case HTTP_ERR_TIMEOUT_IDLE:
        snprintf(v->text, sizeof v->text, "%sidle_timeout_ms=%lld", a->published ? "stream stalled: " : "",
                 (long long)p->idle_timeout_ms);
        break;
    default:
        if (a->total_is_deadline)
            snprintf(v->text, sizeof v->text, "deadline (%lld ms left at start)",
                     (long long)a->total_timeout_ms);
        else
            snprintf(v->text, sizeof v->text, "timeout_ms=%lld", (long long)a->total_timeout_ms);
        break;
    }
}

/* Parses the finished request into a->result; true for a good answer, else v says why not. */
static bool attempt_judge(attempt_t *a, http_result_t *res, verdict_t *v)
{
    v->outcome = JOB_OUTCOME_ERROR;
    v->limits = LIMITS_FAILURE;
    v->retryable = false;
    v->text[0] = '\0';
    switch (res->code) {
    case HTTP_ERR_TIMEOUT_CONNECT:
    case HTTP_ERR_TIMEOUT_FIRST_BYTE:
    case HTTP_ERR_TIMEOUT_IDLE:
    case HTTP_ERR_TIMEOUT_TOTAL:
        judge_timeout(a, res, v);
        return false;
    case HTTP_ERR_CONNECT:
        v->retryable = true;
        snprintf(v->text, sizeof v->text, "connect: %s", res->error);
        return false;
    default:
        break;
    }
    if (a->result)
        llm_result_free(a->result);
    else if (!(a->result = base_calloc(1, sizeof *a->result))) {
        snprintf(v->text, sizeof v->text, "out of memory");
        return false;
    }
    const llm_error_t *e = &a->result->error;
    if (a->stream && !a->json_body &&
        (res->code == HTTP_OK || res->code == HTTP_ERR_CLOSED || res->code == HTTP_ERR_ABORTED)) {
        if (llm_stream_finish(a->stream, a->result) == 0)
            return true;
        snprintf(v->text, sizeof v->text, "%s: %s: %s",
                 e->kind == LLM_ERR_CUT ? "stream cut" : "stream failed", e->type, e->message);
        return false;
    }
    if (res->code != HTTP_OK) {
        snprintf(v->text, sizeof v->text, "%s: %s", http_code_name(res->code), res->error);
        return false;
    }
    const buf_t *body = a->stream ? &a->body : &res->body;
    if (llm_response_parse(a->provider->type, (int)res->status, body->data, body->len, a->result) == 0)
        return true;
    if (res->status >= 200 && res->status < 300) {
        snprintf(v->text, sizeof v->text, "%s: %s", e->type, e->message);
        return false;
    }
    v->retryable = llm_error_classify((int)res->status, NULL) == LLM_RETRY_YES;
    if (!v->retryable && res->status >= 400 && res->status < 500)
        v->limits = LIMITS_NEUTRAL; /* the request's own fault, not the provider's */
    snprintf(v->text, sizeof v->text, "http %ld: %s: %s", res->status, e->type, e->message);
    return false;
}

/* Schedules the next try of a retryable failure; false when no retry is left or it would pass the deadline.
 */
static bool attempt_retry(attempt_t *a, const http_result_t *res, verdict_t *v)
{
    router_call_t *call = a->call;
    const config_provider_t *p = a->provider;
    if (!v->retryable || a->published || a->record.retries >= p->max_retries)
        return false;
    int64_t now = base_mono_ms();
    int64_t delay = router_backoff_ms(call->router, p, a->record.retries);
    if (res->response && res->response->retry_after_ms > delay)
        delay = res->response->retry_after_ms;
    if (call->deadline_ms > 0 && now + delay >= call->deadline_ms) {
        size_t used = strlen(v->text);
        snprintf(v->text + used, sizeof v->text - used, " (no retry: a %lld ms wait passes the deadline)",
                 (long long)delay);
        return false;
    }
    log_warn("provider attempt failed; retrying", LOG_S("provider", p->name),
             LOG_I("retry", a->record.retries + 1), LOG_I("max_retries", p->max_retries),
             LOG_I("delay_ms", delay), LOG_S("error", v->text));
    attempt_limits_done(a, v->limits);
    llm_stream_free(a->stream);
    a->stream = NULL;
    attempt_set_text(a, v->text);
    a->state = AT_BACKOFF;
    a->due_ms = now + (delay > 0 ? delay : 0);
    call_schedule(call);
    return true;
}

static void attempt_on_done(void *ctx, http_result_t *res)
{
    attempt_t *a = ctx;
    router_call_t *call = a->call;
    router_t *r = call->router;
    a->transfer = NULL;
    r->stats.attempts_in_flight--;
    call->busy++;
    a->record.http_status = (int)res->status;
    verdict_t v;
    if (attempt_judge(a, res, &v)) {
        const llm_usage_t *u = &a->result->usage;
        if (a->tokens_taken && u->has && r->limits)
            limits_tokens_correct(r->limits, a->pidx, call->est_tokens, u->total_tokens);
        if (!a->stream) {
            if (res->timing.first_byte_ms >= 0)
                a->record.first_token_ms = a->req_started_ms - a->started_ms + res->timing.first_byte_ms;
            router_sample(r, a->pidx, false, base_mono_ms(), res->timing.total_ms, true);
        }
        attempt_end(a, JOB_OUTCOME_WON, LIMITS_SUCCESS, NULL);
    } else if (!attempt_retry(a, res, &v)) {
        attempt_end(a, v.outcome, v.limits, v.text);
    }
    call_leave(call);
}

/* Builds the HTTP request of the attempt's provider and starts it. */
static void attempt_send(attempt_t *a)
{
    router_call_t *call = a->call;
    router_t *r = call->router;
    const config_provider_t *p = a->provider;
    const llm_request_t *lr = &call->requests[a->slot];
    char err[256];
    int64_t now = base_mono_ms();
    a->req_started_ms = now;
    const char *headers[ATTEMPT_MAX_HEADERS + 2];
    size_t n_headers = 0;
    for (size_t i = 0; i < lr->n_headers && n_headers < ATTEMPT_MAX_HEADERS; i++)
        headers[n_headers++] = lr->headers[i];
    static const char tp_name[] = "traceparent: ";
    char traceparent[sizeof tp_name - 1 + ROUTER_TRACEPARENT], tracestate[ROUTER_TRACESTATE + 16], span[17];
    if (call->traceparent[0]) {
        /* A child span per request: the call's trace id and flags, a new span id. */
        router_span_id(r, span);
        memcpy(traceparent, tp_name, sizeof tp_name - 1);
        memcpy(traceparent + sizeof tp_name - 1, call->traceparent, ROUTER_TRACEPARENT);
        /* "00-" trace id "-" is 36 characters, then the 16 of the span id */
        memcpy(traceparent + sizeof tp_name - 1 + 36, span, 16);
        headers[n_headers++] = traceparent;
        if (call->tracestate) {
            const char *ts[] = {"tracestate: ", call->tracestate};
            base_join(tracestate, sizeof tracestate, ts, 2);
            headers[n_headers++] = tracestate;
        }
    }
    int64_t remaining = call->deadline_ms > 0 ? call->deadline_ms - now : 0;
    if (call->deadline_ms > 0 && remaining <= 0)
        remaining = 1;
    a->total_timeout_ms = min_positive(p->timeout_ms, remaining);
    a->total_is_deadline = remaining > 0 && (p->timeout_ms <= 0 || remaining < p->timeout_ms);
    a->first_token_timeout_ms = p->first_token_timeout_ms;
    a->json_body = false;
    buf_reset(&a->body);
    if (call->stream) {
        a->stream = llm_stream_new(p->type, 0, 0, attempt_on_delta, &a->sink);
        if (!a->stream) {
            attempt_end(a, JOB_OUTCOME_ERROR, LIMITS_NEUTRAL, "out of memory");
            return;
        }
        if (p->first_token_timeout_ms > 0)
            a->due_ms = now + p->first_token_timeout_ms;
    }
    static const http_version_t versions[] = {[PROVIDER_HTTP_AUTO] = HTTP_VERSION_AUTO,
                                              [PROVIDER_HTTP_1_1] = HTTP_VERSION_1_1,
                                              [PROVIDER_HTTP_2] = HTTP_VERSION_2};
    http_request_t hr = {
        .method = HTTP_POST,
        .version = versions[p->http_version],
        .url = lr->url,
        .headers = headers,
        .n_headers = n_headers,
        .body = lr->body,
        .body_len = lr->body_len,
        .connect_timeout_ms = min_positive(p->connect_timeout_ms, remaining),
        .total_timeout_ms = a->total_timeout_ms,
        .first_byte_timeout_ms = call->stream ? 0 : p->first_token_timeout_ms,
        .idle_timeout_ms = p->idle_timeout_ms,
        .max_response_bytes = (size_t)r->cfg->llm.max_response_bytes,
        .buffer_body = !call->stream,
        .tls_insecure = !p->tls_verify,
        .ca_file = p->ca_file,
        .on_response = call->stream ? attempt_on_response : NULL,
        .on_data = call->stream ? attempt_on_data : NULL,
        .on_done = attempt_on_done,
        .ctx = a,
    };
    a->transfer = http_start(r->http, &hr, err, sizeof err);
    if (!a->transfer) {
        char text[300];
        snprintf(text, sizeof text, "not started: %s", err);
        attempt_end(a, JOB_OUTCOME_ERROR, LIMITS_NEUTRAL, text);
        return;
    }
    a->state = AT_RUNNING;
    r->stats.requests++;
    r->stats.attempts_in_flight++;
    if (a->sent++ == 0) {
        r->stats.attempts_started++;
    } else {
        a->record.retries++;
        r->stats.retries++;
    }
    if (a->due_ms)
        call_schedule(call);
}
