/* router — runs one prompt against the providers of a route and hands back the first good answer.
 * Strategies (config_route_t.strategy):
 * - race: every provider at once; the first good answer wins, every other attempt is cancelled at once
 *   (its transfer removed, so its connection closes or its HTTP/2 stream resets).
 * - hedge: the first provider; each time the hedge delay passes without an answer (streaming: without a
 *   first token) the next one starts too, and a failure of an attempt starts the next one at once.
 *   The delay is route->hedge_delay_ms, or with hedge_auto the p95 latency (streaming: time to first
 *   token) of the call's first provider over its last 200 successful calls of the last 60 s, clamped
 *   to [hedge_min_ms, hedge_max_ms]; with fewer than 20 such samples it is hedge_max_ms / 2 (clamped),
 *   so a cold start spends little on hedges. (Counting a cancelled slow primary as a sample of the time
 *   it ran was tried: it lifts the p95 onto the hedged answers' latency and the p99 with it.)
 *   The first provider is the route's first (hedge_order route), or with hedge_order latency the one
 *   with the lowest p99 over a second window per provider that also counts an attempt cancelled because
 *   a later one answered, at the time it had run; one with fewer than 20 samples goes first.
 * - fallback: one at a time in route order; the next on failure, timeout or skip.
 * The first provider is the route's first, unless route->weights is set (or a provider of the route has
 * a weight other than 1): then the first is drawn at random in proportion to the weights and the others
 * keep their route order behind it.
 * Per provider: connect / first token (first body byte when not streaming) / idle / whole-call
 * timeouts, all capped by the call's deadline (route->timeout_ms from the start and the request's
 * deadline); retries with exponential backoff and full jitter for connect errors, 408, 409, 429, 5xx
 * and 529, waiting at least Retry-After, never past the deadline and never once deltas of the attempt
 * were handed out; admission through limits/ (breaker, concurrency, fleet-wide rpm/tpm): race and hedge
 * skip a provider over a limit, fallback waits up to its limit_wait_ms for rate budget.
 * Streaming: the first provider to produce a token wins the stream and the others are cancelled; its
 * deltas go to on_delta. If it then fails, stalls past idle_timeout_ms or is cut (no [DONE] /
 * message_stop), on_reset runs and the next provider that has not failed (route order, one at a time)
 * streams from the start. A stream answered with one JSON body is parsed as such and its text handed out
 * as one delta. Records: one per attempt (a retry is the same attempt), latency_ms and first_token_ms
 * from the attempt's start, started_after_ms from the call's; providers never started are `skipped`
 * with reason "not_needed".
 * It owns the provider requests it builds, the transfers it starts (through http/), one timer per call,
 * the latency windows per provider and the attempt records of each call. It never touches Kafka or
 * Redis itself, never logs request bodies or headers (they carry API keys), and never blocks the loop. */
#ifndef PARLEY_ROUTER_H
#define PARLEY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "http/http.h"
#include "job/job.h"
#include "llm/llm.h"

typedef struct router router_t;
typedef struct router_call router_call_t;
typedef struct limits limits_t; /* limits/limits.h */

/* What a call came to; valid only while on_done runs. */
typedef struct {
    bool ok;
    const char *text; /* the winner's answer (ok); streamed: the whole text of the provider that finished */
    size_t text_len;
    const char *finish_reason; /* NULL when the provider gave none */
    const char *provider;      /* the winner's name (ok) */
    const char *model;
    llm_usage_t usage; /* streamed: from the stream's usage chunk */
    bool has_cost;
    double cost_usd;
    int64_t first_token_ms; /* from the call's start (streamed: the first delta handed out); -1 unknown */
    int64_t llm_ms;         /* from the call's start to the end */
    const job_attempt_t *attempts;
    size_t n_attempts;
    const char *error; /* !ok: a one-line summary ("openai-main: http 500; anthropic-b: timeout") */
} router_result_t;

typedef struct {
    void (*on_done)(void *ctx, const router_result_t *res); /* exactly once, never from router_start */
    /* Streaming only (may be NULL): a piece of the streaming provider's text, in order (not
     * NUL-terminated, never empty). */
    void (*on_delta)(void *ctx, const char *provider, const char *text, size_t len);
    /* Streaming only (may be NULL): the provider whose deltas were handed out failed (reason says how);
     * discard them, the next provider's deltas follow. */
    void (*on_reset)(void *ctx, const char *provider, const char *reason);
    void *ctx;
} router_callbacks_t;

typedef struct {
    const config_route_t *route;
    const chat_message_t *messages; /* read only inside router_start, which builds every request body */
    size_t n_messages;
    const llm_params_t *params; /* NULL = none; copied into the requests at start */
    int64_t deadline_mono_ms;   /* base_mono_ms() instant after which the call fails; 0 = none */
    /* W3C trace context (the caller validated both): each HTTP request carries traceparent with the same
     * trace id and flags and a new random span id, and tracestate as is. NULL = not sent. */
    const char *traceparent;
    const char *tracestate;
    bool stream; /* ask for a stream and hand out deltas */
} router_request_t;

/* A router for cfg's providers and routes, sending through http, admitting through limits (NULL = no
 * admission control). NULL with err on failure. */
router_t *router_new(uv_loop_t *loop, const config_t *cfg, http_client_t *http, limits_t *limits, char *err,
                     size_t errlen);
/* Cancels nothing: call it after every call ended or was cancelled. */
void router_free(router_t *r);

/* Starts a call. NULL with err when nothing could be started (no provider, out of memory); then no
 * callback runs. When every provider is skipped or cannot be asked, on_done still runs (from the loop)
 * with the records saying why. */
router_call_t *router_start(router_t *r, const router_request_t *req, const router_callbacks_t *cbs,
                            char *err, size_t errlen);
/* Stops a call and all its transfers; no callback runs afterwards. It may be called from inside any
 * callback of the call. */
void router_cancel(router_call_t *call);

typedef struct {
    uint64_t calls, calls_ok, calls_failed;
    uint64_t attempts_started;
    size_t calls_in_flight;
    size_t attempts_in_flight; /* HTTP requests in flight */
    uint64_t hedges;           /* attempts started by the hedge delay */
    uint64_t retries;          /* requests sent again to the same provider */
    uint64_t resets;           /* streams abandoned after deltas were handed out */
    uint64_t skipped;          /* providers skipped by admission control */
    uint64_t requests;         /* HTTP requests started (first tries and retries) */
} router_stats_t;

void router_get_stats(const router_t *r, router_stats_t *out);

/* The hedge delay a call of route would use now (fixed, or auto from the window); for tests and logs. */
int64_t router_hedge_delay_ms(router_t *r, const config_route_t *route, bool stream);

#endif
