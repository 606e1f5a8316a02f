/* limits — admission of provider attempts: per-provider circuit breaker, per-process max_concurrency,
 * and fleet-wide rpm/tpm budgets kept in Redis (shared by every worker), with a local fallback.
 * It owns the breaker state and the in-flight counts of each provider of cfg->llm.providers, one
 * GCRA Lua script registered with the store (keys P:ratelimit:{provider}:rpm and :tpm, P = the store's
 * key_prefix, holding each limit's theoretical arrival time in Redis server microseconds), the local
 * per-process buckets, and the timers of requests waiting for budget.
 * It never blocks the loop, never starts or cancels provider calls (the router does), and never fails
 * a request because Redis is down: then (or when Redis is slower than LIMITS_REDIS_TIMEOUT_MS) the local
 * bucket decides, logged once per outage and counted in redis_fallbacks.
 *
 * Budget choices (GCRA): the emission interval of a limit is 60000/rate ms per unit (1 per request for
 * rpm, 1 per token for tpm) and the burst is one minute's worth (rate): an idle provider can take its
 * whole per-minute budget at once, then one unit per interval. A cost above the burst is charged as
 * the burst (one huge prompt takes the whole bucket rather than never passing). rpm and tpm are
 * checked together: a request is granted only if both pass, and only then are both charged.
 * The local fallback enforces the whole rate in each process (not rate / number of pods, which limits
 * cannot know): during an outage of Redis the fleet may exceed the budget by up to the number of pods,
 * but a lone worker is never throttled below its budget. The local buckets are charged on every grant,
 * Redis' included, so a fallback starts from this process' recent use. */
#ifndef PARLEY_LIMITS_H
#define PARLEY_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "store/store.h"

/* A Redis answer later than this is not waited for: the local bucket decides. */
#define LIMITS_REDIS_TIMEOUT_MS 50

typedef struct limits limits_t;
typedef struct limits_wait limits_wait_t;
typedef enum { LIMITS_OK = 0, LIMITS_BREAKER_OPEN, LIMITS_CONCURRENCY, LIMITS_RATE_LIMITED } limits_verdict_t;
typedef enum { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN } breaker_state_t;
typedef enum { LIMITS_SUCCESS = 0, LIMITS_FAILURE, LIMITS_NEUTRAL } limits_outcome_t;

/* cfg must outlive limits. store may be NULL (tests, or no Redis): rpm/tpm are then enforced per process
 * only. NULL (err filled) on a bad breaker or limit setting or out of memory. */
limits_t *limits_new(uv_loop_t *loop, const config_t *cfg, store_t *store, char *err, size_t errlen);
/* Cancels every wait (their callbacks never run) and frees limits once its timer is closed and the
 * store has answered every request limits sent (run the loop; store_close answers them at once, so
 * calling limits_free before store_close is the natural order). */
void limits_free(limits_t *l);

/* Synchronous: breaker + max_concurrency. LIMITS_OK = the caller holds a concurrency slot for provider
 * index p (index into cfg->llm.providers) and must call limits_finish exactly once. *probe is set when
 * the breaker is half-open and this attempt is its one probe. A half-open breaker whose probe is out
 * answers LIMITS_BREAKER_OPEN; a full provider answers LIMITS_CONCURRENCY without using the probe. */
limits_verdict_t limits_try_start(limits_t *l, size_t p, bool *probe);
/* Ends an attempt started with LIMITS_OK. outcome: LIMITS_SUCCESS, LIMITS_FAILURE (counts for the
 * breaker: connect error, timeout, 5xx, 429, 529, malformed/cut answer), LIMITS_NEUTRAL (cancelled
 * because another provider won, or a permanent 4xx that is the request's fault: does not count).
 * Finishes are not matched to starts: while open, outcomes are ignored (attempts started before it
 * opened); while half-open, the first success closes it and the first failure re-opens it. */
void limits_finish(limits_t *l, size_t p, limits_outcome_t outcome);

/* Fleet-wide budget for one request of provider p with est_tokens prompt tokens: asks Redis (one
 * EVALSHA of the GCRA script, keyed P:ratelimit:{provider}:rpm and :tpm).
 * cb(ctx, granted, retry_after_ms) runs exactly once, later, from the loop — unless cancelled. When
 * not granted and wait_ms > 0, limits waits (timer) for the budget's retry-after, at most until wait_ms
 * from now, and asks again; the answer comes at the latest one ask after wait_ms. When the provider has
 * neither rpm nor tpm, returns NULL and *granted_now = true (no callback). NULL with *granted_now false:
 * out of memory, bad p, or limits_free was called (treat as rate limited; no callback). */
typedef void (*limits_rate_cb)(void *ctx, bool granted, int64_t retry_after_ms);
limits_wait_t *limits_rate_acquire(limits_t *l, size_t p, int64_t est_tokens, int64_t wait_ms,
                                   limits_rate_cb cb, void *ctx, bool *granted_now);
/* Drops a wait whose callback has not run yet (never call it after, or from inside, the callback). */
void limits_rate_cancel(limits_wait_t *w);
/* After the call: correct the tpm budget by (actual - estimated) tokens (may be negative: refund; a
 * refund never moves the budget past "full now", a charge never past one whole burst of debt). */
void limits_tokens_correct(limits_t *l, size_t p, int64_t est_tokens, int64_t actual_tokens);

/* The state as of now (an open breaker past its cooldown reads half-open). */
breaker_state_t limits_breaker_state(const limits_t *l, size_t p);
const char *limits_breaker_state_name(breaker_state_t s);
typedef struct {
    uint64_t opened, half_opened, closed; /* breaker transitions */
    uint64_t rejected_open, rejected_concurrency;
    uint64_t rate_limited;    /* acquires answered not granted */
    uint64_t rate_waits;      /* acquires that waited at least once */
    uint64_t redis_fallbacks; /* decisions taken by the local bucket while a store was configured */
    size_t in_flight;
} limits_stats_t;
void limits_provider_stats(const limits_t *l, size_t p, limits_stats_t *out);
/* For tests: the clock limits uses (base_mono_ms by default) for the breaker, the local buckets and the
 * deadlines of waits (whose timers run on the loop's real time: fake only the clock of tests that do
 * not wait for budget). */
void limits_set_clock(limits_t *l, int64_t (*now_ms)(void *ctx), void *ctx);

#endif
