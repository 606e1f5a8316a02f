/* router.c — a call across the providers of a route: which attempt starts when (race, hedge, fallback,
 * after a reset), who wins, the call's timer (deadline, hedge delay, backoffs, first-token timeouts),
 * and the result handed to on_done. */
#include "router/router.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "log/log.h"
#include "router/router_int.h"

static const struct {
    unsigned bit;
    const char *name;
} param_names[] = {
    {LLM_PARAM_TEMPERATURE, "temperature"},
    {LLM_PARAM_TOP_P, "top_p"},
    {LLM_PARAM_MAX_TOKENS, "max_tokens"},
    {LLM_PARAM_STOP, "stop"},
    {LLM_PARAM_SEED, "seed"},
};

router_t *router_new(uv_loop_t *loop, const config_t *cfg, http_client_t *http, limits_t *limits, char *err,
                     size_t errlen)
{
    router_t *r = base_calloc(1, sizeof *r);
    if (r)
        r->providers = base_calloc(cfg->llm.n_providers ? cfg->llm.n_providers : 1, sizeof *r->providers);
    if (!r || !r->providers) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cfg = cfg;
    r->http = http;
    r->limits = limits;
    r->rng = base_mono_ns() | 1u;
    return r;
}

void router_free(router_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->providers && i < r->cfg->llm.n_providers; i++)
        for (int k = 0; k < 2; k++)
            if (r->providers[i].has_endpoint[k])
                llm_endpoint_free(&r->providers[i].endpoint[k]);
    free(r->providers);
    free(r);
}

void router_get_stats(const router_t *r, router_stats_t *out) { *out = r->stats; }

static void timer_free(uv_handle_t *h) { free(h); }

static void call_free(router_call_t *call)
{
    for (size_t i = 0; i < call->n_attempts; i++)
        attempt_release(&call->attempts[i]);
    for (size_t i = 0; i < call->n && call->requests; i++)
        llm_request_free(&call->requests[i]);
    if (call->timer) {
        uv_timer_stop(call->timer);
        uv_close((uv_handle_t *)call->timer, timer_free);
    }
    free(call->tracestate);
    free(call); /* with its arrays: call_alloc */
}

void call_leave(router_call_t *call)
{
    if (--call->busy == 0 && (call->finished || call->dead))
        call_free(call);
}

/* Stops every attempt that is not done, but keep. */
static void call_stop_others(router_call_t *call, const attempt_t *keep, job_outcome_t outcome,
                             const char *reason)
{
    int64_t now = base_mono_ms();
    for (size_t i = 0; i < call->n_attempts; i++) {
        attempt_t *a = &call->attempts[i];
        if (a == keep || a->state == AT_DONE)
            continue;
        /* Started no later than keep, which answered first: it takes at least this long. (One started
         * after keep tells nothing.) */
        if (keep && a->state == AT_RUNNING && a->req_started_ms <= keep->req_started_ms)
            router_sample(call->router, a->pidx, call->stream, now, now - a->req_started_ms, false);
        attempt_stop(a, outcome, reason);
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

/* Fills records (room for n_attempts + n) with the attempt records, then one "not_needed" record per
 * provider never started; returns how many. */
static size_t call_records(const router_call_t *call, job_attempt_t *records)
{
    size_t n = 0;
    for (size_t i = 0; i < call->n_attempts; i++)
        records[n++] = call->attempts[i].record;
    for (size_t s = 0; s < call->n; s++) {
        if (call->slots[s].started)
            continue;
        job_attempt_t *rec = &records[n++];
        job_attempt_init(rec, call->router->cfg->llm.providers[call->order[s]].name, JOB_OUTCOME_SKIPPED);
        rec->reason = "not_needed";
    }
    return n;
}

static void call_finish(router_call_t *call)
{
    router_t *r = call->router;
    call->finished = true;
    uv_timer_stop(call->timer);
    r->stats.calls_in_flight--;
    /* the records exist only while on_done runs: on the stack unless the route is long */
    job_attempt_t local[ROUTER_LOCAL_RECORDS];
    size_t room = call->n_attempts + call->n;
    job_attempt_t *records = room <= ROUTER_LOCAL_RECORDS ? local : base_malloc(room * sizeof *records);
    router_result_t res = {
        .attempts = records, .n_attempts = records ? call_records(call, records) : 0, .first_token_ms = -1};
    res.llm_ms = base_mono_ms() - call->started_ms;
    char error[ROUTER_ERROR_MAX];
    attempt_t *w = call->winner;
    if (w) {
        r->stats.calls_ok++;
        res.ok = true;
        res.text = w->result->text;
        res.text_len = w->result->text_len;
        res.finish_reason = w->result->finish_reason[0] ? w->result->finish_reason : NULL;
        res.provider = w->provider->name;
        res.model = w->result->model[0] ? w->result->model : w->provider->model;
        res.usage = w->result->usage;
        res.has_cost = llm_cost_usd(w->provider, &w->result->usage, &res.cost_usd) == 0;
        if (call->first_token_ms >= 0)
            res.first_token_ms = call->first_token_ms;
        else if (w->record.first_token_ms >= 0)
            res.first_token_ms = w->record.started_after_ms + w->record.first_token_ms;
    } else {
        r->stats.calls_failed++;
        call_error_summary(call, error, sizeof error);
        res.error = error;
    }
    call->cbs.on_done(call->cbs.ctx, &res);
    if (records != local)
        free(records);
}

/* The next route position that may start: not failed, not running, and (before a reset) not started. */
static size_t call_next_slot(const router_call_t *call)
{
    if (call->n_attempts >= 2 * call->n)
        return SIZE_MAX;
    for (size_t s = 0; s < call->n; s++) {
        const call_slot_t *sl = &call->slots[s];
        if (!sl->exhausted && !sl->running && (call->reset_phase || !sl->started))
            return s;
    }
    return SIZE_MAX;
}

/* Starts the next provider that can run, skipping those admission refuses; true when one runs. */
static bool call_start_next(router_call_t *call, trigger_t trig, const attempt_t *prev)
{
    char why[ROUTER_WHY_MAX];
    for (;;) {
        size_t s = call_next_slot(call);
        if (s == SIZE_MAX)
            return false;
        why[0] = '\0';
        if (trig == TRIG_HEDGE)
            snprintf(why, sizeof why, "hedge_after_ms=%lld", (long long)call->hedge_delay_ms);
        else if (trig == TRIG_FAILURE && prev)
            snprintf(why, sizeof why, "fallback_after=%s", prev->provider->name);
        else if (trig == TRIG_RESET && prev)
            snprintf(why, sizeof why, "reset_after=%s", prev->provider->name);
        attempt_t *a = attempt_begin(call, s, why);
        if (a->state != AT_DONE)
            return true;
        prev = a;
        if (trig != TRIG_HEDGE)
            trig = TRIG_FAILURE;
    }
}

static void call_on_timer(uv_timer_t *t);

void call_schedule(router_call_t *call)
{
    if (call->finished || call->dead)
        return;
    int64_t due = call->finish_due ? 1 : call->deadline_ms;
    if (call->hedge_due_ms > 0 && (due <= 0 || call->hedge_due_ms < due))
        due = call->hedge_due_ms;
    for (size_t i = 0; i < call->n_attempts; i++) {
        const attempt_t *a = &call->attempts[i];
        if (a->state != AT_DONE && a->due_ms > 0 && (due <= 0 || a->due_ms < due))
            due = a->due_ms;
    }
    bool armed = uv_is_active((uv_handle_t *)call->timer);
    if (due <= 0) {
        if (armed)
            uv_timer_stop(call->timer);
        return;
    }
    if (armed && due == call->armed_due_ms)
        return; /* already set for that time: re-arming would only churn the loop's timer heap */
    call->armed_due_ms = due;
    int64_t wait = due - base_mono_ms();
    uv_timer_start(call->timer, call_on_timer, wait > 0 ? (uint64_t)wait : 0, 0);
}

void call_first_token(router_call_t *call, attempt_t *a)
{
    if (call->streamer)
        return;
    call->streamer = a;
    call->hedge_due_ms = 0;
    if (call->first_token_ms < 0)
        call->first_token_ms = base_mono_ms() - call->started_ms;
    call_stop_others(call, a, JOB_OUTCOME_CANCELLED,
                     "another provider streamed first; cancelled before billing could be read");
    call_schedule(call);
}

void call_attempt_ended(router_call_t *call, attempt_t *a)
{
    if (call->finished || call->dead)
        return;
    if (a->record.outcome == JOB_OUTCOME_WON) {
        /* A stream asked for but answered as one JSON body: hand the text out as one delta. */
        if (call->stream && !a->published && a->result->text_len > 0 && call->cbs.on_delta) {
            if (call->first_token_ms < 0)
                call->first_token_ms = base_mono_ms() - call->started_ms;
            call->cbs.on_delta(call->cbs.ctx, a->provider->name, a->result->text, a->result->text_len);
            if (call->dead)
                return;
        }
        call->winner = a;
        call_stop_others(call, a, JOB_OUTCOME_CANCELLED,
                         "another provider won; cancelled before billing could be read");
        call_finish(call);
        return;
    }
    if (a == call->streamer) {
        call->streamer = NULL;
        call->reset_phase = true;
        call->router->stats.resets++;
        if (call->cbs.on_reset)
            call->cbs.on_reset(call->cbs.ctx, a->provider->name,
                               a->record.reason ? a->record.reason : "failed");
        if (call->dead)
            return;
        call_start_next(call, TRIG_RESET, a);
    } else if ((call->route->strategy != STRATEGY_RACE || call->reset_phase) && !call->streamer) {
        call_start_next(call, TRIG_FAILURE, a);
    }
    if (call->active == 0)
        call_finish(call);
    else
        call_schedule(call);
}

/* The hedge delay passed without an answer: the next provider joins. */
static void call_hedge(router_call_t *call)
{
    call->hedge_due_ms = 0;
    if (call->winner || call->streamer || call->reset_phase)
        return;
    if (call_start_next(call, TRIG_HEDGE, NULL)) {
        call->router->stats.hedges++;
        call->hedge_due_ms = base_mono_ms() + call->hedge_delay_ms;
    }
}

/* The call's deadline passed: every attempt still going times out. */
static void call_expire(router_call_t *call)
{
    char reason[96];
    if (call->deadline_is_job)
        snprintf(reason, sizeof reason, "the job's deadline passed");
    else
        snprintf(reason, sizeof reason, "route timeout_ms=%lld passed", (long long)call->route->timeout_ms);
    call_stop_others(call, NULL, JOB_OUTCOME_TIMEOUT, reason);
    call_finish(call);
}

static void call_on_timer(uv_timer_t *t)
{
    router_call_t *call = t->data;
    int64_t now = base_mono_ms();
    call->busy++;
    if (call->finish_due) {
        call_finish(call);
    } else if (call->deadline_ms > 0 && now >= call->deadline_ms) {
        call_expire(call);
    } else {
        if (call->hedge_due_ms > 0 && now >= call->hedge_due_ms)
            call_hedge(call);
        for (size_t i = 0; i < call->n_attempts && !call->finished && !call->dead; i++) {
            attempt_t *a = &call->attempts[i];
            if (a->state != AT_DONE && a->due_ms > 0 && now >= a->due_ms)
                attempt_due(a);
        }
        call_schedule(call);
    }
    call_leave(call);
}

/* Logs once per provider and parameter what the provider's API cannot take. */
static void warn_dropped(router_t *r, size_t pidx, unsigned dropped)
{
    router_provider_t *rp = &r->providers[pidx];
    for (size_t i = 0; i < BASE_ARRAY_LEN(param_names); i++) {
        if (!(dropped & param_names[i].bit) || (rp->warned_params & param_names[i].bit))
            continue;
        rp->warned_params |= param_names[i].bit;
        log_warn("provider cannot take a job parameter; it is not sent",
                 LOG_S("provider", r->cfg->llm.providers[pidx].name), LOG_S("param", param_names[i].name));
    }
}

/* Builds every provider's request now (params and messages are the caller's only during the call). */
static void call_build_requests(router_call_t *call, const router_request_t *req)
{
    router_t *r = call->router;
    for (size_t s = 0; s < call->n; s++) {
        const config_provider_t *p = &r->cfg->llm.providers[call->order[s]];
        char err[256], text[300];
        router_provider_t *rp = &r->providers[call->order[s]];
        bool st = req->stream;
        if (!rp->has_endpoint[st])
            rp->has_endpoint[st] = llm_endpoint_build(p, st, &rp->endpoint[st], err, sizeof err) == 0;
        if (rp->has_endpoint[st] &&
            llm_request_build_on(&rp->endpoint[st], p, req->messages, req->n_messages, req->params, st,
                                 &call->requests[s], err, sizeof err) == 0) {
            warn_dropped(r, call->order[s], call->requests[s].dropped_params);
            continue;
        }
        attempt_t *a = &call->attempts[call->n_attempts++];
        a->call = call;
        a->slot = s;
        a->pidx = call->order[s];
        a->provider = p;
        a->state = AT_DONE;
        job_attempt_init(&a->record, p->name, JOB_OUTCOME_ERROR);
        snprintf(text, sizeof text, "request not built: %s", err);
        attempt_set_text(a, text);
        call->slots[s].started = call->slots[s].exhausted = true;
    }
}

/* Deadline of the call: the route's timeout from now and the request's deadline, the nearer. */
static void call_set_deadline(router_call_t *call, const router_request_t *req)
{
    if (call->route->timeout_ms > 0)
        call->deadline_ms = call->started_ms + call->route->timeout_ms;
    if (req->deadline_mono_ms > 0 && (call->deadline_ms <= 0 || req->deadline_mono_ms < call->deadline_ms)) {
        call->deadline_ms = req->deadline_mono_ms;
        call->deadline_is_job = true;
    }
}

static size_t align_up(size_t v) { return (v + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1); }

/* A zeroed call and its per-provider arrays (order, requests, slots, 2n attempts) in one allocation. */
static router_call_t *call_alloc(size_t n)
{
    size_t o_order = align_up(sizeof(router_call_t));
    size_t o_requests = o_order + align_up(n * sizeof(size_t));
    size_t o_slots = o_requests + align_up(n * sizeof(llm_request_t));
    size_t o_attempts = o_slots + align_up(n * sizeof(call_slot_t));
    char *block = base_calloc(1, o_attempts + 2 * n * sizeof(attempt_t));
    if (!block)
        return NULL;
    router_call_t *call = (router_call_t *)block;
    call->order = (size_t *)(block + o_order);
    call->requests = (llm_request_t *)(block + o_requests);
    call->slots = (call_slot_t *)(block + o_slots);
    call->attempts = (attempt_t *)(block + o_attempts);
    return call;
}

router_call_t *router_start(router_t *r, const router_request_t *req, const router_callbacks_t *cbs,
                            char *err, size_t errlen)
{
    const config_route_t *route = req->route;
    size_t n = route->n_providers;
    if (n == 0) {
        snprintf(err, errlen, "route %s has no providers", route->name);
        return NULL;
    }
    router_call_t *call = call_alloc(n);
    if (!call || !(call->timer = base_malloc(sizeof *call->timer)))
        goto nomem;
    uv_timer_init(r->loop, call->timer);
    call->timer->data = call;
    call->router = r;
    call->cbs = *cbs;
    call->route = route;
    call->stream = req->stream;
    call->n = n;
    call->started_ms = base_mono_ms();
    call->first_token_ms = -1;
    call_set_deadline(call, req);
    if (req->traceparent && strlen(req->traceparent) == ROUTER_TRACEPARENT - 1)
        memcpy(call->traceparent, req->traceparent, ROUTER_TRACEPARENT);
    if (call->traceparent[0] && req->tracestate && req->tracestate[0] &&
        strlen(req->tracestate) < ROUTER_TRACESTATE)
        call->tracestate = base_strdup(req->tracestate); /* NULL on OOM: sent without tracestate */
    call->est_tokens = llm_estimate_prompt_tokens(req->messages, req->n_messages);
    router_order(r, route, call->stream, call->order);
    call_build_requests(call, req);
    if (route->strategy == STRATEGY_HEDGE)
        call->hedge_delay_ms = router_hedge_delay_for(r, route, call->order[0], call->stream);
    r->stats.calls++;
    r->stats.calls_in_flight++;
    call->busy++;
    if (route->strategy == STRATEGY_RACE) {
        for (size_t s = 0; s < n; s++)
            if (!call->slots[s].started)
                attempt_begin(call, s, NULL);
    } else if (call_start_next(call, TRIG_START, NULL) && route->strategy == STRATEGY_HEDGE) {
        call->hedge_due_ms = call->started_ms + call->hedge_delay_ms;
    }
    call->finish_due = call->active == 0;
    call_schedule(call);
    call->busy--;
    return call;
nomem:
    free(call);
    snprintf(err, errlen, "out of memory");
    return NULL;
}

void router_cancel(router_call_t *call)
{
    if (!call || call->finished || call->dead)
        return;
    call_stop_others(call, NULL, JOB_OUTCOME_CANCELLED, "cancelled");
    call->dead = true;
    call->router->stats.calls_in_flight--;
    if (call->busy == 0)
        call_free(call);
}
