/* bucket.c — the per-process GCRA bucket: the same arithmetic as the Redis script of rate.c (emission
 * interval 60000/rate ms per unit, burst one minute's worth, a cost capped at the burst), on the limits
 * clock in milliseconds. */
#include "limits/limits_int.h"

/* A cost clamped to [0, rate]: above the burst it could never pass. */
static double clamp_cost(int64_t rate, int64_t cost)
{
    return (double)(cost < 0 ? 0 : cost > rate ? rate : cost);
}

int64_t gcra_wait_ms(const gcra_t *g, int64_t rate, int64_t cost, int64_t now_ms)
{
    if (rate <= 0)
        return 0;
    double now = (double)now_ms, tat = g->tat_ms > now ? g->tat_ms : now;
    double wait = tat + clamp_cost(rate, cost) * LIMITS_WINDOW_MS / (double)rate - LIMITS_WINDOW_MS - now;
    if (wait <= 0)
        return 0;
    int64_t w = (int64_t)wait;
    return (double)w < wait ? w + 1 : w;
}

void gcra_add(gcra_t *g, int64_t rate, int64_t units, int64_t now_ms)
{
    if (rate <= 0)
        return;
    double now = (double)now_ms, tat = g->tat_ms > now ? g->tat_ms : now;
    if (units > rate)
        units = rate;
    tat += (double)units * LIMITS_WINDOW_MS / (double)rate;
    if (tat < now)
        tat = now;
    if (tat > now + LIMITS_WINDOW_MS)
        tat = now + LIMITS_WINDOW_MS;
    g->tat_ms = tat;
}
