/* router_int.h — private to router/: the router, call and attempt structures shared by the call logic
 * (router.c), the attempts (attempt.c) and the latency windows, ordering and backoff (window.c). */
#ifndef PARLEY_ROUTER_INT_H
#define PARLEY_ROUTER_INT_H

#include "router/router.h"

#include "limits/limits.h"

#define ROUTER_REASON_MAX    256
#define ROUTER_WHY_MAX       96
#define ROUTER_ERROR_MAX     512
#define ROUTER_WINDOW        200   /* latency samples kept per provider and kind */
#define ROUTER_WINDOW_MS     60000 /* samples older than this are ignored */
#define ROUTER_WINDOW_MIN    20    /* fewer samples: the auto hedge delay is hedge_max_ms / 2 */
#define ROUTER_MAX_ORDER     64    /* providers a hedge route orders by latency (config allows 64) */
#define ROUTER_TRACEPARENT   56    /* "00-" 32 hex "-" 16 hex "-" 2 hex, NUL */
#define ROUTER_TRACESTATE    513   /* W3C: at most 512 characters */
#define ROUTER_LOCAL_RECORDS 24    /* attempt records of a finished call kept on the stack (longer: heap) */

/* A provider's recent successful latencies (or times to first token): a ring in arrival order (oldest
 * at head, so expiry drops from the head) and the same values kept sorted, so a quantile is a lookup. */
typedef struct {
    int64_t at_ms[ROUTER_WINDOW];
    int64_t value_ms[ROUTER_WINDOW];
    int64_t sorted[ROUTER_WINDOW];
    size_t head, n;
} router_window_t;

typedef struct {
    router_window_t latency;    /* whole answer, not streamed: the auto hedge delay */
    router_window_t ttft;       /* first token, streamed */
    router_window_t rank[2];    /* [stream] the same plus attempts cancelled because another answered, at
                                 * the time they had run (so a tail that is always hedged still shows):
                                 * hedge_order latency */
    unsigned warned_params;     /* LLM_PARAM_* already logged as dropped */
    llm_endpoint_t endpoint[2]; /* URL and headers for [stream], built at the first call that needs them */
    bool has_endpoint[2];
} router_provider_t;

struct router {
    uv_loop_t *loop;
    const config_t *cfg;
    http_client_t *http;
    limits_t *limits;
    router_provider_t *providers; /* one per cfg->llm.providers */
    uint64_t rng;
    router_stats_t stats;
};

typedef enum {
    AT_ADMIT = 0, /* waiting for rate budget */
    AT_BACKOFF,   /* waiting to send again */
    AT_RUNNING,   /* an HTTP request in flight */
    AT_DONE,
} attempt_state_t;

struct llm_stream_sink {
    struct attempt *a;
};

typedef struct attempt {
    router_call_t *call;
    size_t slot; /* position in the call's order */
    size_t pidx; /* index into cfg->llm.providers */
    const config_provider_t *provider;
    attempt_state_t state;
    http_transfer_t *transfer;
    limits_wait_t *wait;
    bool limits_held;       /* limits_try_start said yes: limits_finish is owed */
    bool tokens_taken;      /* rate budget was charged with the estimate */
    bool beginning;         /* inside attempt_begin: an end is seen by the caller, not reported */
    int sent;               /* HTTP requests started: the first try, then retries */
    bool feeding;           /* inside llm_stream_feed: the stream is freed afterwards, not by a close */
    int64_t started_ms;     /* the attempt (its first request or admission) */
    int64_t req_started_ms; /* the current HTTP request */
    int64_t due_ms;         /* backoff end, or streamed first-token deadline; 0 = none */
    int64_t first_token_timeout_ms;
    int64_t total_timeout_ms; /* of the current request, after the deadline cap */
    bool total_is_deadline;   /* the call's deadline, not timeout_ms, set it */
    bool json_body;           /* streamed request answered with JSON or an error: buffered into body */
    buf_t body;
    llm_stream_t *stream;
    struct llm_stream_sink sink;
    bool published;       /* deltas of it were handed out */
    llm_result_t *result; /* allocated when a response is judged (most waiting attempts never need one) */
    job_attempt_t record;
    char why[ROUTER_WHY_MAX];
    char *reason; /* record.reason's text; allocated when set, NULL = none */
} attempt_t;

/* Per route position: what happened to that provider in this call. */
typedef struct {
    bool started;   /* an attempt of it began */
    bool exhausted; /* it failed, timed out or was skipped: not asked again in this call */
    bool running;   /* an attempt of it is not done */
} call_slot_t;

typedef enum { TRIG_START = 0, TRIG_HEDGE, TRIG_FAILURE, TRIG_RESET } trigger_t;

struct router_call {
    router_t *router;
    router_callbacks_t cbs;
    const config_route_t *route;
    bool stream;
    char traceparent[ROUTER_TRACEPARENT];
    char *tracestate; /* NULL = none */
    int64_t est_tokens;
    int64_t started_ms;
    int64_t deadline_ms;     /* absolute; 0 = none */
    bool deadline_is_job;    /* the request's deadline, not the route's timeout, is the nearer */
    size_t n;                /* providers of the route */
    size_t *order;           /* order[slot] = cfg provider index */
    llm_request_t *requests; /* per slot, built at start */
    call_slot_t *slots;
    attempt_t *attempts; /* capacity 2n: each provider at most once, plus once more after a reset */
    size_t n_attempts;
    size_t active;       /* attempts not done */
    attempt_t *streamer; /* the attempt whose deltas are handed out */
    attempt_t *winner;
    bool reset_phase; /* a stream was reset: one provider at a time from now on */
    int64_t hedge_delay_ms;
    int64_t hedge_due_ms; /* 0 = no hedge pending */
    int64_t armed_due_ms; /* the due time the call's timer is set for, while it is active */
    int64_t first_token_ms;
    uv_timer_t *timer; /* freed by its close callback */
    bool finish_due;   /* nothing runs: finish from the timer */
    int busy;          /* nesting of router entry points on the stack: free only at 0 */
    bool dead;         /* cancelled by the caller */
    bool finished;     /* on_done ran or runs */
};

/* ---- router.c ---- */
/* An attempt of call ended (done, failed, skipped): decide what runs next or finish. */
void call_attempt_ended(router_call_t *call, attempt_t *a);
/* The attempt produced its first token while streaming. */
void call_first_token(router_call_t *call, attempt_t *a);
/* Re-arms the call's timer for its nearest due time. */
void call_schedule(router_call_t *call);
/* Leaves a router entry point: frees the call when it ended while busy. */
void call_leave(router_call_t *call);

/* ---- attempt.c ---- */
/* Begins an attempt of slot: admission, then the request. Returns it (state AT_DONE when it was
 * skipped or could not start; then call_attempt_ended is NOT called for it). */
attempt_t *attempt_begin(router_call_t *call, size_t slot, const char *why);
/* The attempt's due time passed (backoff over, or the streamed first token did not come). */
void attempt_due(attempt_t *a);
/* Stops a running attempt as cancelled (or timed out, with reason), without callbacks. */
void attempt_stop(attempt_t *a, job_outcome_t outcome, const char *reason);
void attempt_release(attempt_t *a);
/* Sets the attempt's reason text (record.reason); NULL or "" clears it. */
void attempt_set_text(attempt_t *a, const char *text);

/* ---- window.c ---- */
void window_add(router_window_t *w, int64_t now_ms, int64_t value_ms);
/* A latency sample of provider pidx: an answer (or first token when stream) after ms, or, when !answered,
 * an attempt cancelled after ms because another answered. */
void router_sample(router_t *r, size_t pidx, bool stream, int64_t now_ms, int64_t ms, bool answered);
/* The nearest-rank percentile pct (1..100) of the samples of the last ROUTER_WINDOW_MS; -1 with fewer
 * than ROUTER_WINDOW_MIN. Drops the expired samples first. */
int64_t window_quantile(router_window_t *w, int64_t now_ms, unsigned pct);
/* The hedge delay for a call whose first provider is pidx. */
int64_t router_hedge_delay_for(router_t *r, const config_route_t *route, size_t pidx, bool stream);
/* Fills order with the route's provider indexes: the first drawn by weight when weights apply; else, for
 * a hedge route with hedge_order latency, by p99 latency (time to first token when stream), lowest
 * first, a provider without enough recent samples ahead of the measured ones (so it gets measured). */
void router_order(router_t *r, const config_route_t *route, bool stream, size_t *order);
/* Backoff before retry number k (0-based): full jitter over min(max, base * 2^k). */
int64_t router_backoff_ms(router_t *r, const config_provider_t *p, int k);
/* A W3C span id: 16 random lowercase hex digits, not all zero, NUL-terminated. */
void router_span_id(router_t *r, char out[17]);

#endif
