/* window.c — latency windows per provider and the auto hedge delay, the weighted choice of the first
 * provider, and backoff with full jitter. */
#include <stdlib.h>
#include <string.h>

#include "router/router_int.h"

void window_add(router_window_t *w, int64_t now_ms, int64_t value_ms)
{
    w->at_ms[w->next] = now_ms;
    /* Values are whole ms cut down from finer clocks (a 100.6 ms call is 100). Kept one ms up, so that the
     * p95 is a time by which 95% of calls had finished: else, when latency barely varies, the hedge timer
     * fires a fraction of a ms before most calls end and hedges far more than 5% of them. */
    w->value_ms[w->next] = value_ms + 1;
    w->next = (w->next + 1) % ROUTER_WINDOW;
    if (w->n < ROUTER_WINDOW)
        w->n++;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t window_p95(const router_window_t *w, int64_t now_ms)
{
    int64_t v[ROUTER_WINDOW];
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        if (now_ms - w->at_ms[i] <= ROUTER_WINDOW_MS)
            v[n++] = w->value_ms[i];
    if (n < ROUTER_WINDOW_MIN)
        return -1;
    qsort(v, n, sizeof v[0], cmp_i64);
    size_t k = (n * 95 + 99) / 100; /* ceil(0.95 n): the nearest-rank p95 */
    return v[k - 1];
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    if (hi > 0 && v > hi)
        v = hi;
    return v < lo ? lo : v;
}

int64_t router_hedge_delay_for(const router_t *r, const config_route_t *route, size_t pidx, bool stream)
{
    if (!route->hedge_auto)
        return route->hedge_delay_ms;
    const router_provider_t *p = &r->providers[pidx];
    int64_t p95 = window_p95(stream ? &p->ttft : &p->latency, base_mono_ms());
    if (p95 < 0)
        p95 = route->hedge_max_ms / 2;
    return clamp(p95, route->hedge_min_ms, route->hedge_max_ms);
}

int64_t router_hedge_delay_ms(const router_t *r, const config_route_t *route, bool stream)
{
    if (route->n_providers == 0)
        return route->hedge_delay_ms;
    return router_hedge_delay_for(r, route, route->providers[0], stream);
}

/* xorshift64*: a uniform 64-bit draw. */
static uint64_t rng_next(router_t *r)
{
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ull;
}

/* A uniform draw in [0, 1). */
static double rng_unit(router_t *r) { return (double)(rng_next(r) >> 11) / 9007199254740992.0; }

static double weight_of(const router_t *r, const config_route_t *route, size_t i)
{
    double w = route->weights ? route->weights[i] : r->cfg->llm.providers[route->providers[i]].weight;
    return w > 0 ? w : 0;
}

void router_order(router_t *r, const config_route_t *route, size_t *order)
{
    size_t n = route->n_providers;
    memcpy(order, route->providers, n * sizeof *order);
    bool weighted = route->weights != NULL;
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        total += weight_of(r, route, i);
        if (weight_of(r, route, i) != 1.0)
            weighted = true;
    }
    if (!weighted || n < 2 || total <= 0)
        return;
    double x = rng_unit(r) * total;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        double w = weight_of(r, route, i);
        if (w > 0)
            first = i;
        if (x < w)
            break;
        x -= w;
    }
    size_t chosen = order[first];
    memmove(order + 1, order, first * sizeof *order);
    order[0] = chosen;
}

int64_t router_backoff_ms(router_t *r, const config_provider_t *p, int k)
{
    int64_t cap = p->retry_base_ms > 0 ? p->retry_base_ms : 1;
    for (int i = 0; i < k && cap < p->retry_max_ms; i++)
        cap *= 2;
    if (p->retry_max_ms > 0 && cap > p->retry_max_ms)
        cap = p->retry_max_ms;
    return (int64_t)(rng_unit(r) * (double)(cap + 1));
}

void router_span_id(router_t *r, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v;
    do
        v = rng_next(r);
    while (v == 0);
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 15];
    out[16] = '\0';
}
