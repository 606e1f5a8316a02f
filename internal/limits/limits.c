/* limits.c — the limits_t record: one entry per provider (breaker, in-flight count, local buckets),
 * the synchronous admission of an attempt, stats, and the deferred release of limits_free. */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "limits/limits_int.h"

static int64_t default_clock(void *ctx) { return base_mono_ms(); }

const char *limits_breaker_state_name(breaker_state_t s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    default:
        return "unknown";
    }
}

/* Frees the providers and l itself. */
static void limits_destroy(limits_t *l)
{
    for (size_t i = 0; l->prov && i < l->n_prov; i++) {
        breaker_free(&l->prov[i].br);
        free(l->prov[i].key_rpm);
        free(l->prov[i].key_tpm);
    }
    free(l->prov);
    free(l);
}

limits_t *limits_new(uv_loop_t *loop, const config_t *cfg, store_t *store, char *err, size_t errlen)
{
    limits_t *l = NULL;
    if (!loop || !cfg) {
        snprintf(err, errlen, "limits: no loop or config");
        return NULL;
    }
    if (!(l = base_calloc(1, sizeof *l)) ||
        !(l->prov = base_calloc(cfg->llm.n_providers ? cfg->llm.n_providers : 1, sizeof *l->prov))) {
        snprintf(err, errlen, "limits: out of memory");
        goto fail;
    }
    l->loop = loop;
    l->store = store;
    l->now_ms = default_clock;
    l->n_prov = cfg->llm.n_providers;
    for (size_t i = 0; i < l->n_prov; i++) {
        const config_provider_t *pc = &cfg->llm.providers[i];
        l->prov[i].cfg = pc;
        if (pc->max_concurrency < 0 || pc->rpm < 0 || pc->tpm < 0 || pc->limit_wait_ms < 0) {
            snprintf(err, errlen,
                     "limits: provider %s: max_concurrency, rpm, tpm and limit_wait_ms must be >= 0",
                     pc->name);
            goto fail;
        }
        if (breaker_init(&l->prov[i].br, pc->name, &pc->breaker, err, errlen) < 0)
            goto fail;
    }
    if (limits_rate_init(l, err, errlen) < 0)
        goto fail;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    return l;
fail:
    if (l)
        limits_destroy(l);
    return NULL;
}

void limits_maybe_release(limits_t *l)
{
    if (l->closing && l->timer_closed && l->store_pending == 0)
        limits_destroy(l);
}

static void timer_closed_cb(uv_handle_t *h)
{
    limits_t *l = h->data;
    l->timer_closed = true;
    limits_maybe_release(l);
}

void limits_free(limits_t *l)
{
    if (!l || l->closing)
        return;
    l->closing = true;
    limits_rate_drop_waits(l);
    uv_close((uv_handle_t *)&l->timer, timer_closed_cb);
}

limits_verdict_t limits_try_start(limits_t *l, size_t p, bool *probe)
{
    *probe = false;
    if (p >= l->n_prov)
        return LIMITS_BREAKER_OPEN;
    limits_prov_t *pv = &l->prov[p];
    if (!breaker_can_start(&pv->br, limits_now(l))) {
        pv->st.rejected_open++;
        return LIMITS_BREAKER_OPEN;
    }
    if (pv->cfg->max_concurrency > 0 && pv->in_flight >= (size_t)pv->cfg->max_concurrency) {
        pv->st.rejected_concurrency++;
        return LIMITS_CONCURRENCY;
    }
    breaker_started(&pv->br, probe);
    pv->in_flight++;
    return LIMITS_OK;
}

void limits_finish(limits_t *l, size_t p, limits_outcome_t outcome)
{
    if (p >= l->n_prov)
        return;
    limits_prov_t *pv = &l->prov[p];
    if (pv->in_flight > 0)
        pv->in_flight--;
    breaker_record(&pv->br, limits_now(l), outcome);
}

breaker_state_t limits_breaker_state(const limits_t *l, size_t p)
{
    return p < l->n_prov ? breaker_state_at(&l->prov[p].br, limits_now(l)) : BREAKER_OPEN;
}

void limits_provider_stats(const limits_t *l, size_t p, limits_stats_t *out)
{
    *out = (limits_stats_t){0};
    if (p >= l->n_prov)
        return;
    const limits_prov_t *pv = &l->prov[p];
    *out = pv->st;
    out->opened = pv->br.opened;
    out->half_opened = pv->br.half_opened;
    out->closed = pv->br.closed;
    out->in_flight = pv->in_flight;
}

void limits_set_clock(limits_t *l, int64_t (*now_ms)(void *ctx), void *ctx)
{
    l->now_ms = now_ms ? now_ms : default_clock;
    l->clock_ctx = now_ms ? ctx : NULL;
}
