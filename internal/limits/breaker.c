/* breaker.c — one provider's circuit breaker: consecutive failures or a failure ratio over a sliding
 * window (at most BREAKER_MAX_BUCKETS buckets of ceil(window / buckets) each, 1 s for windows up to a
 * minute) open it; after the cooldown it lets one probe through; the probe's outcome closes it or opens
 * it again. Time comes from the caller, so tests drive it with any clock. */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "limits/limits_int.h"
#include "log/log.h"

int breaker_init(breaker_t *b, const char *name, const config_breaker_t *cfg, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (cfg->failures < 0)
        bad = "breaker.failures must be >= 0";
    else if (!(cfg->failure_ratio >= 0 && cfg->failure_ratio <= 1))
        bad = "breaker.failure_ratio must be within [0, 1]";
    else if (cfg->window_s < 0 || cfg->window_s > BREAKER_MAX_WINDOW_S)
        bad = "breaker.window_s must be within [0, 86400]";
    else if (cfg->min_requests < 0)
        bad = "breaker.min_requests must be >= 0";
    else if (cfg->cooldown_s < 0 || cfg->cooldown_s > BREAKER_MAX_COOLDOWN_S)
        bad = "breaker.cooldown_s must be within [0, 86400]";
    if (bad) {
        snprintf(err, errlen, "limits: provider %s: %s", name, bad);
        return -1;
    }
    *b = (breaker_t){.name = name, .cfg = *cfg, .state = BREAKER_CLOSED};
    if (cfg->window_s > 0) {
        b->n_buckets = cfg->window_s < BREAKER_MAX_BUCKETS ? (size_t)cfg->window_s : BREAKER_MAX_BUCKETS;
        b->width_ms = ((int64_t)cfg->window_s * 1000 + (int64_t)b->n_buckets - 1) / (int64_t)b->n_buckets;
        if (!(b->buckets = base_calloc(b->n_buckets, sizeof *b->buckets))) {
            snprintf(err, errlen, "limits: out of memory");
            return -1;
        }
        for (size_t i = 0; i < b->n_buckets; i++)
            b->buckets[i].slot = -1;
    }
    return 0;
}

void breaker_free(breaker_t *b)
{
    free(b->buckets);
    b->buckets = NULL;
}

/* Moves to state s and logs it. */
static void breaker_set(breaker_t *b, breaker_state_t s, int64_t now_ms)
{
    b->state = s;
    b->probe_out = false;
    if (s == BREAKER_OPEN) {
        b->opened++;
        b->open_until_ms = now_ms + (int64_t)b->cfg.cooldown_s * 1000;
        log_warn("circuit breaker opened", LOG_S("provider", b->name),
                 LOG_I("cooldown_s", b->cfg.cooldown_s));
    } else if (s == BREAKER_HALF_OPEN) {
        b->half_opened++;
        log_warn("circuit breaker half-open", LOG_S("provider", b->name));
    } else {
        b->closed++;
        b->consecutive = 0;
        for (size_t i = 0; i < b->n_buckets; i++)
            b->buckets[i] = (breaker_bucket_t){.slot = -1};
        log_warn("circuit breaker closed", LOG_S("provider", b->name));
    }
}

breaker_state_t breaker_state_at(const breaker_t *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && now_ms >= b->open_until_ms)
        return BREAKER_HALF_OPEN;
    return b->state;
}

bool breaker_can_start(breaker_t *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && now_ms >= b->open_until_ms)
        breaker_set(b, BREAKER_HALF_OPEN, now_ms);
    return b->state == BREAKER_CLOSED || (b->state == BREAKER_HALF_OPEN && !b->probe_out);
}

void breaker_started(breaker_t *b, bool *probe)
{
    *probe = b->state == BREAKER_HALF_OPEN;
    if (*probe)
        b->probe_out = true;
}

/* Counts an outcome in the window; true when the window's failure ratio now says open. */
static bool window_says_open(breaker_t *b, int64_t now_ms, bool failed)
{
    if (!b->n_buckets)
        return false;
    int64_t slot = now_ms / b->width_ms;
    breaker_bucket_t *cur = &b->buckets[(size_t)(slot % (int64_t)b->n_buckets)];
    if (cur->slot != slot)
        *cur = (breaker_bucket_t){.slot = slot};
    if (failed)
        cur->fail++;
    else
        cur->ok++;
    if (!failed || b->cfg.failure_ratio <= 0)
        return false;
    uint64_t ok = 0, fail = 0;
    for (size_t i = 0; i < b->n_buckets; i++) {
        if (b->buckets[i].slot > slot - (int64_t)b->n_buckets) {
            ok += b->buckets[i].ok;
            fail += b->buckets[i].fail;
        }
    }
    uint64_t total = ok + fail, min = b->cfg.min_requests > 0 ? (uint64_t)b->cfg.min_requests : 1;
    return total >= min && (double)fail >= b->cfg.failure_ratio * (double)total;
}

void breaker_record(breaker_t *b, int64_t now_ms, limits_outcome_t outcome)
{
    if (outcome == LIMITS_NEUTRAL) {
        if (b->state == BREAKER_HALF_OPEN)
            b->probe_out = false; /* the probe was cancelled: the next attempt probes */
        return;
    }
    bool failed = outcome == LIMITS_FAILURE;
    if (b->state == BREAKER_HALF_OPEN) {
        breaker_set(b, failed ? BREAKER_OPEN : BREAKER_CLOSED, now_ms);
        return;
    }
    if (b->state == BREAKER_OPEN)
        return; /* an attempt started before it opened */
    b->consecutive = failed ? b->consecutive + 1 : 0;
    bool by_ratio = window_says_open(b, now_ms, failed);
    if ((b->cfg.failures > 0 && b->consecutive >= b->cfg.failures) || by_ratio)
        breaker_set(b, BREAKER_OPEN, now_ms);
}
