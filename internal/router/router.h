/* router — runs one prompt against the providers of a route and hands back the first good answer.
 * Strategy race: every provider of the route at once; the first 2xx answer that parses wins and
 * every other attempt is cancelled at once (its transfer removed, so its connection closes or its
 * HTTP/2 stream resets). All failing, or the route's timeout passing, is a failed call with one
 * record per attempt saying why.
 * It owns the provider requests it builds and the transfers it starts (through http/), and the
 * attempt records of each call. It never touches Kafka or Redis, never logs request bodies or
 * headers (they carry API keys), and never blocks the loop. */
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

/* What a call came to; valid only while on_done runs. */
typedef struct {
    bool ok;
    const char *text; /* the winner's answer (ok) */
    size_t text_len;
    const char *finish_reason; /* NULL when the provider gave none */
    const char *provider;      /* the winner's name (ok) */
    const char *model;
    llm_usage_t usage;
    bool has_cost;
    double cost_usd;
    int64_t first_token_ms; /* from the call's start; -1 when unknown */
    int64_t llm_ms;         /* from the call's start to the end */
    const job_attempt_t *attempts;
    size_t n_attempts;
    const char *error; /* !ok: a one-line summary ("openai-main: http 500; anthropic-b: timeout") */
} router_result_t;

typedef struct {
    void (*on_done)(void *ctx, const router_result_t *res); /* exactly once, never from router_start */
    void *ctx;
} router_callbacks_t;

typedef struct {
    const config_route_t *route;
    const chat_message_t *messages; /* must stay valid until on_done (or router_cancel) */
    size_t n_messages;
    const llm_params_t *params; /* NULL = none; copied into the requests at start */
    int64_t deadline_mono_ms;   /* base_mono_ms() instant after which the call fails; 0 = none */
    const char *traceparent;    /* sent to providers when given (W3C trace context) */
} router_request_t;

/* A router for cfg's providers and routes, sending through http. NULL with err on failure. */
router_t *router_new(uv_loop_t *loop, const config_t *cfg, http_client_t *http, char *err, size_t errlen);
/* Cancels nothing: call it after every call ended or was cancelled. */
void router_free(router_t *r);

/* Starts a call. NULL with err when nothing could be started (no provider, out of memory); then no
 * callback runs. */
router_call_t *router_start(router_t *r, const router_request_t *req, const router_callbacks_t *cbs, char *err,
                            size_t errlen);
/* Stops a call and all its transfers; no callback runs afterwards. */
void router_cancel(router_call_t *call);

typedef struct {
    uint64_t calls, calls_ok, calls_failed;
    uint64_t attempts_started;
    size_t calls_in_flight;
    size_t attempts_in_flight;
} router_stats_t;

void router_get_stats(const router_t *r, router_stats_t *out);

#endif
