/* router.c — the race strategy: one attempt per provider of the route, first good answer wins. */
#include "router/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "log/log.h"

#define ROUTER_REASON_MAX 200
#define ROUTER_ERROR_MAX 512
#define ROUTER_MAX_EXTRA_HEADERS 1

struct router {
    uv_loop_t *loop;
    const config_t *cfg;
    http_client_t *http;
    router_stats_t stats;
};

typedef struct attempt {
    router_call_t *call;
    const config_provider_t *provider;
    llm_request_t request;
    http_transfer_t *transfer; /* NULL once finished or cancelled */
    int64_t started_ms;
    llm_result_t result; /* parsed answer, kept for the winner */
    bool has_result;
    job_attempt_t record;
    char reason[ROUTER_REASON_MAX];
} attempt_t;

struct router_call {
    router_t *router;
    router_callbacks_t cbs;
    int64_t started_ms;
    attempt_t *attempts;
    job_attempt_t *records; /* contiguous copy handed to on_done */
    size_t n_attempts;
    size_t running;
    attempt_t *winner;
    bool finished; /* on_done has been called or is being called */
};

router_t *router_new(uv_loop_t *loop, const config_t *cfg, http_client_t *http, char *err, size_t errlen)
{
    router_t *r = base_calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cfg = cfg;
    r->http = http;
    return r;
}

void router_free(router_t *r) { free(r); }

void router_get_stats(const router_t *r, router_stats_t *out) { *out = r->stats; }

static int64_t min_positive(int64_t a, int64_t b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

static void attempt_release(attempt_t *a)
{
    llm_request_free(&a->request);
    if (a->has_result)
        llm_result_free(&a->result);
    a->has_result = false;
}

static void call_free(router_call_t *call)
{
    for (size_t i = 0; i < call->n_attempts; i++)
        attempt_release(&call->attempts[i]);
    free(call->attempts);
    free(call->records);
    free(call);
}

/* Stops every running attempt but keep, recording it as cancelled. */
static void call_cancel_others(router_call_t *call, const attempt_t *keep)
{
    int64_t now = base_mono_ms();
    for (size_t i = 0; i < call->n_attempts; i++) {
        attempt_t *a = &call->attempts[i];
        if (a == keep || !a->transfer)
            continue;
        http_cancel(a->transfer);
        a->transfer = NULL;
        call->running--;
        call->router->stats.attempts_in_flight--;
        a->record.outcome = JOB_OUTCOME_CANCELLED;
        a->record.latency_ms = now - a->started_ms;
        snprintf(a->reason, sizeof a->reason, "another provider won; cancelled before billing could be read");
        a->record.reason = a->reason;
    }
}

/* Builds the summary of why no attempt won, from the attempt reasons. */
static void call_error_summary(const router_call_t *call, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < call->n_attempts && used + 1 < outlen; i++) {
        const attempt_t *a = &call->attempts[i];
        int n = snprintf(out + used, outlen - used, "%s%s: %s", i ? "; " : "", a->provider->name,
                         a->record.reason ? a->record.reason : job_outcome_name(a->record.outcome));
        if (n < 0)
            break;
        used += (size_t)n < outlen - used ? (size_t)n : outlen - used - 1;
    }
}

static void call_finish(router_call_t *call)
{
    router_t *r = call->router;
    call->finished = true;
    r->stats.calls_in_flight--;
    for (size_t i = 0; i < call->n_attempts; i++)
        call->records[i] = call->attempts[i].record;
    router_result_t res = {.attempts = call->records, .n_attempts = call->n_attempts, .first_token_ms = -1};
    res.llm_ms = base_mono_ms() - call->started_ms;
    char error[ROUTER_ERROR_MAX];
    attempt_t *w = call->winner;
    if (w) {
        r->stats.calls_ok++;
        res.ok = true;
        res.text = w->result.text;
        res.text_len = w->result.text_len;
        res.finish_reason = w->result.finish_reason[0] ? w->result.finish_reason : NULL;
        res.provider = w->provider->name;
        res.model = w->result.model[0] ? w->result.model : w->provider->model;
        res.usage = w->result.usage;
        res.has_cost = llm_cost_usd(w->provider, &w->result.usage, &res.cost_usd) == 0;
        res.first_token_ms = w->record.first_token_ms;
    } else {
        r->stats.calls_failed++;
        call_error_summary(call, error, sizeof error);
        res.error = error;
    }
    call->cbs.on_done(call->cbs.ctx, &res);
    call_free(call);
}

static job_outcome_t outcome_of_http(http_code_t code)
{
    switch (code) {
    case HTTP_ERR_TIMEOUT_CONNECT:
    case HTTP_ERR_TIMEOUT_FIRST_BYTE:
    case HTTP_ERR_TIMEOUT_IDLE:
    case HTTP_ERR_TIMEOUT_TOTAL:
        return JOB_OUTCOME_TIMEOUT;
    default:
        return JOB_OUTCOME_ERROR;
    }
}

/* Parses a finished transfer into a->result; 0 when it is a good answer. Fills the record. */
static int attempt_judge(attempt_t *a, http_result_t *res)
{
    a->record.http_status = (int)res->status;
    if (res->code != HTTP_OK) {
        a->record.outcome = outcome_of_http(res->code);
        snprintf(a->reason, sizeof a->reason, "%s: %s", http_code_name(res->code), res->error);
        return -1;
    }
    a->has_result = true;
    if (llm_response_parse(a->provider->type, (int)res->status, res->body.data, res->body.len, &a->result) != 0) {
        a->record.outcome = JOB_OUTCOME_ERROR;
        const llm_error_t *e = &a->result.error;
        if (res->status >= 200 && res->status < 300)
            snprintf(a->reason, sizeof a->reason, "%s: %s", e->type, e->message);
        else
            snprintf(a->reason, sizeof a->reason, "http %ld: %s: %s", res->status, e->type, e->message);
        return -1;
    }
    return 0;
}

static void attempt_on_done(void *ctx, http_result_t *res)
{
    attempt_t *a = ctx;
    router_call_t *call = a->call;
    a->transfer = NULL;
    call->running--;
    call->router->stats.attempts_in_flight--;
    a->record.latency_ms = base_mono_ms() - a->started_ms;
    if (res->timing.first_byte_ms >= 0)
        a->record.first_token_ms = a->started_ms - call->started_ms + res->timing.first_byte_ms;
    bool good = attempt_judge(a, res) == 0;
    a->record.reason = a->reason[0] ? a->reason : NULL;
    if (call->finished)
        return;
    if (good && !call->winner) {
        a->record.outcome = JOB_OUTCOME_WON;
        call->winner = a;
        call_cancel_others(call, a);
    } else if (good) {
        a->record.outcome = JOB_OUTCOME_LOST;
    }
    if (call->winner || call->running == 0)
        call_finish(call);
}

/* Builds and starts the attempt of provider p; -1 (with a->reason set) when it cannot start. */
static int attempt_start(router_call_t *call, attempt_t *a, const router_request_t *req)
{
    router_t *r = call->router;
    const config_provider_t *p = a->provider;
    char err[256];
    a->started_ms = base_mono_ms();
    if (llm_request_build(p, req->messages, req->n_messages, req->params, false, &a->request, err, sizeof err) !=
        0) {
        snprintf(a->reason, sizeof a->reason, "request not built: %s", err);
        return -1;
    }
    const char *headers[64 + ROUTER_MAX_EXTRA_HEADERS];
    size_t n_headers = 0;
    for (size_t i = 0; i < a->request.n_headers && n_headers < 64; i++)
        headers[n_headers++] = a->request.headers[i];
    char traceparent[128];
    if (req->traceparent && strlen(req->traceparent) < 100) {
        snprintf(traceparent, sizeof traceparent, "traceparent: %s", req->traceparent);
        headers[n_headers++] = traceparent;
    }
    int64_t remaining = req->deadline_mono_ms > 0 ? req->deadline_mono_ms - a->started_ms : 0;
    if (req->deadline_mono_ms > 0 && remaining <= 0)
        remaining = 1;
    http_request_t hr = {
        .method = HTTP_POST,
        .url = a->request.url,
        .headers = headers,
        .n_headers = n_headers,
        .body = a->request.body,
        .body_len = a->request.body_len,
        .connect_timeout_ms = p->connect_timeout_ms,
        .total_timeout_ms = min_positive(min_positive(p->timeout_ms, req->route->timeout_ms), remaining),
        .max_response_bytes = (size_t)r->cfg->llm.max_response_bytes,
        .buffer_body = true,
        .tls_insecure = !p->tls_verify,
        .ca_file = p->ca_file,
        .on_done = attempt_on_done,
        .ctx = a,
    };
    a->transfer = http_start(r->http, &hr, err, sizeof err);
    if (!a->transfer) {
        snprintf(a->reason, sizeof a->reason, "not started: %s", err);
        return -1;
    }
    call->running++;
    r->stats.attempts_started++;
    r->stats.attempts_in_flight++;
    return 0;
}

router_call_t *router_start(router_t *r, const router_request_t *req, const router_callbacks_t *cbs, char *err,
                            size_t errlen)
{
    const config_route_t *route = req->route;
    if (route->n_providers == 0) {
        snprintf(err, errlen, "route %s has no providers", route->name);
        return NULL;
    }
    router_call_t *call = base_calloc(1, sizeof *call);
    if (!call)
        goto nomem;
    call->attempts = base_calloc(route->n_providers, sizeof *call->attempts);
    call->records = base_calloc(route->n_providers, sizeof *call->records);
    if (!call->attempts || !call->records)
        goto nomem;
    call->router = r;
    call->cbs = *cbs;
    call->started_ms = base_mono_ms();
    call->n_attempts = route->n_providers;
    for (size_t i = 0; i < route->n_providers; i++) {
        attempt_t *a = &call->attempts[i];
        a->call = call;
        a->provider = &r->cfg->llm.providers[route->providers[i]];
        job_attempt_init(&a->record, a->provider->name, JOB_OUTCOME_ERROR);
        a->record.started_after_ms = 0;
        if (attempt_start(call, a, req) != 0)
            a->record.reason = a->reason;
    }
    if (call->running == 0) {
        snprintf(err, errlen, "no provider attempt could start: %s", call->attempts[0].reason);
        call_free(call);
        return NULL;
    }
    r->stats.calls++;
    r->stats.calls_in_flight++;
    return call;
nomem:
    if (call) {
        free(call->attempts);
        free(call->records);
        free(call);
    }
    snprintf(err, errlen, "out of memory");
    return NULL;
}

void router_cancel(router_call_t *call)
{
    if (!call || call->finished)
        return;
    call_cancel_others(call, NULL);
    call->router->stats.calls_in_flight--;
    call_free(call);
}
