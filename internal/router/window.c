/* window.c — latency windows per provider and the auto hedge delay, the weighted choice of the first
 * provider, and backoff with full jitter. */
#include <string.h>

#include "router/router_int.h"

/* Index of the first sorted value not below v (binary search over the n live values). */
static size_t sorted_lower_bound(const router_window_t *w, int64_t v)
{
    size_t lo = 0, hi = w->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->sorted[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Drops the oldest sample from the ring and its value from the sorted copy. */
static void drop_oldest(router_window_t *w)
{
    size_t k = sorted_lower_bound(w, w->value_ms[w->head]);
    memmove(w->sorted + k, w->sorted + k + 1, (w->n - k - 1) * sizeof w->sorted[0]);
    w->head = (w->head + 1) % ROUTER_WINDOW;
    w->n--;
}

static void expire(router_window_t *w, int64_t now_ms)
{
    while (w->n > 0 && now_ms - w->at_ms[w->head] > ROUTER_WINDOW_MS)
        drop_oldest(w);
}

void window_add(router_window_t *w, int64_t now_ms, int64_t value_ms)
{
    expire(w, now_ms);
    if (w->n == ROUTER_WINDOW)
        drop_oldest(w);
    /* Values are whole ms cut down from finer clocks (a 100.6 ms call is 100). Kept one ms up, so that the
     * p95 is a time by which 95% of calls had finished: else, when latency barely varies, the hedge timer
     * fires a fraction of a ms before most calls end and hedges far more than 5% of them. */
    int64_t v = value_ms + 1;
    size_t slot = (w->head + w->n) % ROUTER_WINDOW;
    w->at_ms[slot] = now_ms;
    w->value_ms[slot] = v;
    size_t k = sorted_lower_bound(w, v);
    memmove(w->sorted + k + 1, w->sorted + k, (w->n - k) * sizeof w->sorted[0]);
    w->sorted[k] = v;
    w->n++;
}

int64_t window_quantile(router_window_t *w, int64_t now_ms, unsigned pct)
{
    expire(w, now_ms);
    if (w->n < ROUTER_WINDOW_MIN)
        return -1;
    size_t k = (w->n * pct + 99) / 100; /* ceil(pct% of n): the nearest rank */
    return w->sorted[k ? k - 1 : 0];
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    if (hi > 0 && v > hi)
        v = hi;
    return v < lo ? lo : v;
}

static router_window_t *window_of(router_t *r, size_t pidx, bool stream)
{
    return stream ? &r->providers[pidx].ttft : &r->providers[pidx].latency;
}

void router_sample(router_t *r, size_t pidx, bool stream, int64_t now_ms, int64_t ms, bool answered)
{
    if (answered)
        window_add(window_of(r, pidx, stream), now_ms, ms);
    window_add(&r->providers[pidx].rank[stream], now_ms, ms);
}

int64_t router_hedge_delay_for(router_t *r, const config_route_t *route, size_t pidx, bool stream)
{
    if (!route->hedge_auto)
        return route->hedge_delay_ms;
    int64_t p95 = window_quantile(window_of(r, pidx, stream), base_mono_ms(), 95);
    if (p95 < 0)
        p95 = route->hedge_max_ms / 2;
    return clamp(p95, route->hedge_min_ms, route->hedge_max_ms);
}

int64_t router_hedge_delay_ms(router_t *r, const config_route_t *route, bool stream)
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

/* Moves the provider at order[first] to the front; the others keep their order behind it. */
static void move_first(size_t *order, size_t first)
{
    size_t chosen = order[first];
    memmove(order + 1, order, first * sizeof *order);
    order[0] = chosen;
}

/* Sorts order by p99 of the rank windows, lowest first, stable; a provider without enough samples
 * counts as 0. */
static void order_by_latency(router_t *r, size_t *order, size_t n, bool stream)
{
    int64_t key[ROUTER_MAX_ORDER];
    int64_t now = base_mono_ms();
    for (size_t i = 0; i < n; i++)
        key[i] = window_quantile(&r->providers[order[i]].rank[stream], now, 99);
    for (size_t i = 1; i < n; i++) /* insertion sort: a route has a handful of providers */
        for (size_t j = i; j > 0 && key[j] < key[j - 1]; j--) {
            int64_t k = key[j];
            key[j] = key[j - 1];
            key[j - 1] = k;
            size_t o = order[j];
            order[j] = order[j - 1];
            order[j - 1] = o;
        }
}

void router_order(router_t *r, const config_route_t *route, bool stream, size_t *order)
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
    if (n < 2)
        return;
    if (!weighted) {
        if (route->strategy == STRATEGY_HEDGE && route->hedge_order == HEDGE_ORDER_LATENCY &&
            n <= ROUTER_MAX_ORDER)
            order_by_latency(r, order, n, stream);
        return;
    }
    if (total <= 0)
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
    move_first(order, first);
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
