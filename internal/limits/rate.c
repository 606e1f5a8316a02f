/* rate.c — fleet-wide rpm/tpm: the GCRA Lua script run through store_eval, the local fallback bucket,
 * and the waits of limits_rate_acquire on one shared timer.
 *
 * A wait is in one of three places: asking (a store_eval is owed; its callback owns the wait), queued
 * (in l->due, to ask again or, when has_answer, to deliver an answer decided inside the acquire call),
 * or gone (its callback ran, or it was cancelled). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "limits/limits_int.h"
#include "log/log.h"

/* KEYS[1], KEYS[2]: the rpm and tpm theoretical arrival times, in Redis server microseconds.
 * ARGV[1] 'a': acquire one request and ARGV[4] tokens if both limits pass (then charge both);
 *         'c': add ARGV[4] tokens (negative: refund) to the tpm key.
 * ARGV[2], ARGV[3]: rpm and tpm (0 = no limit). Burst: one minute's worth; a cost over it counts as
 * the burst. Stored times stay within [now, now + 1 min] and expire when they pass now.
 * Returns {granted (0|1), retry_after_ms}. */
static const char rate_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local win = 60000000\n"
    "local rate = {tonumber(ARGV[2]) or 0, tonumber(ARGV[3]) or 0}\n"
    "local cost = {1, tonumber(ARGV[4]) or 0}\n"
    "local function tat_of(i) return math.max(tonumber(redis.call('GET', KEYS[i])) or 0, now) end\n"
    "local function put(i, tat)\n"
    "  if tat > now + win then tat = now + win end\n"
    "  if tat <= now then redis.call('DEL', KEYS[i]) return end\n"
    "  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))\n"
    "end\n"
    "if ARGV[1] == 'c' then\n"
    "  if rate[2] > 0 then put(2, tat_of(2) + math.min(cost[2], rate[2]) * win / rate[2]) end\n"
    "  return {1, 0}\n"
    "end\n"
    "local new, wait = {}, 0\n"
    "for i = 1, 2 do\n"
    "  if rate[i] > 0 then\n"
    "    new[i] = tat_of(i) + math.min(math.max(cost[i], 0), rate[i]) * win / rate[i]\n"
    "    wait = math.max(wait, new[i] - win - now)\n"
    "  end\n"
    "end\n"
    "if wait > 0 then return {0, math.ceil(wait / 1000)} end\n"
    "for i = 1, 2 do if new[i] then put(i, new[i]) end end\n"
    "return {1, 0}\n";

struct limits_wait {
    limits_t *l;
    size_t p;
    int64_t tokens;
    int64_t deadline_ms; /* limits clock: stop waiting for budget after this */
    limits_rate_cb cb;
    void *ctx;
    limits_wait_t *prev, *next; /* in l->due */
    int64_t due_ms;
    bool queued, asking, cancelled, waited;
    bool has_answer, granted; /* queued only to deliver this answer */
    int64_t retry_after_ms;
};

static void ask(limits_wait_t *w, bool in_acquire);

/* "P:ratelimit:{name}:what", or NULL when memory is short. */
static char *rate_key(const char *prefix, const char *name, const char *what)
{
    size_t n = strlen(prefix) + strlen(name) + strlen(what) + 16;
    char *k = base_malloc(n);
    if (k)
        snprintf(k, n, "%s:ratelimit:{%s}:%s", prefix, name, what);
    return k;
}

int limits_rate_init(limits_t *l, char *err, size_t errlen)
{
    if (!l->store)
        return 0;
    const char *prefix = store_key_prefix(l->store);
    if (!(l->script = store_script_add(l->store, rate_script)))
        goto nomem;
    for (size_t i = 0; i < l->n_prov; i++) {
        limits_prov_t *pv = &l->prov[i];
        if (strlen(pv->cfg->name) > STORE_MAX_ID_BYTES) {
            snprintf(err, errlen, "limits: provider name over %d bytes", STORE_MAX_ID_BYTES);
            return -1;
        }
        if (!(pv->key_rpm = rate_key(prefix, pv->cfg->name, "rpm")) ||
            !(pv->key_tpm = rate_key(prefix, pv->cfg->name, "tpm")))
            goto nomem;
    }
    return 0;
nomem:
    snprintf(err, errlen, "limits: out of memory");
    return -1;
}

/* ---- the due list and its timer ------------------------------------------------------------ */

static void timer_cb(uv_timer_t *t);

static void timer_arm(limits_t *l)
{
    if (!l->due) {
        uv_timer_stop(&l->timer);
        return;
    }
    int64_t d = l->due->due_ms - limits_now(l);
    uv_timer_start(&l->timer, timer_cb, d > 0 ? (uint64_t)d : 0, 0);
}

static void unqueue(limits_wait_t *w)
{
    limits_t *l = w->l;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->due = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
}

/* Puts w in the due list at due_ms (after the waits due no later). */
static void enqueue(limits_wait_t *w, int64_t due_ms)
{
    limits_t *l = w->l;
    limits_wait_t *after = NULL, *cur = l->due;
    while (cur && cur->due_ms <= due_ms) {
        after = cur;
        cur = cur->next;
    }
    w->due_ms = due_ms;
    w->prev = after;
    w->next = cur;
    if (cur)
        cur->prev = w;
    if (after)
        after->next = w;
    else
        l->due = w;
    w->queued = true;
    if (l->due == w)
        timer_arm(l);
}

/* Runs every wait that is due: delivers its answer or asks again. */
static void timer_cb(uv_timer_t *t)
{
    limits_t *l = t->data;
    int64_t now = limits_now(l);
    limits_wait_t *batch = NULL, **tail = &batch;
    while (l->due && l->due->due_ms <= now) { /* detach first: asking again may queue a wait anew */
        limits_wait_t *w = l->due;
        unqueue(w);
        *tail = w;
        tail = &w->next;
    }
    while (batch) {
        limits_wait_t *w = batch;
        batch = w->next;
        w->next = NULL;
        if (l->closing) { /* a callback of this batch called limits_free */
            free(w);
        } else if (w->has_answer) {
            limits_rate_cb cb = w->cb;
            void *ctx = w->ctx;
            bool granted = w->granted;
            int64_t ra = w->retry_after_ms;
            free(w);
            cb(ctx, granted, ra);
        } else {
            ask(w, false);
        }
    }
    if (!l->closing)
        timer_arm(l);
}

/* ---- deciding ------------------------------------------------------------------------------ */

/* Acts on a verdict: waits and asks again while the deadline allows, else answers (from the timer
 * when still inside limits_rate_acquire, so that the callback always runs later). */
static void verdict(limits_wait_t *w, bool granted, int64_t retry_after_ms, bool in_acquire)
{
    limits_t *l = w->l;
    limits_prov_t *pv = &l->prov[w->p];
    int64_t now = limits_now(l);
    if (!granted && now < w->deadline_ms) {
        if (!w->waited)
            pv->st.rate_waits++;
        w->waited = true;
        int64_t due = now + (retry_after_ms > 1 ? retry_after_ms : 1);
        enqueue(w, due < w->deadline_ms ? due : w->deadline_ms);
        return;
    }
    if (!granted)
        pv->st.rate_limited++;
    if (in_acquire) {
        w->has_answer = true;
        w->granted = granted;
        w->retry_after_ms = granted ? 0 : retry_after_ms;
        enqueue(w, now);
        return;
    }
    limits_rate_cb cb = w->cb;
    void *ctx = w->ctx;
    free(w);
    cb(ctx, granted, granted ? 0 : retry_after_ms);
}

/* Charges a granted request to the local buckets (also after a Redis grant: see limits.h). */
static void local_charge(limits_t *l, limits_prov_t *pv, int64_t tokens)
{
    int64_t now = limits_now(l);
    gcra_add(&pv->local_rpm, pv->cfg->rpm, 1, now);
    gcra_add(&pv->local_tpm, pv->cfg->tpm, tokens, now);
}

/* The local bucket decides (store NULL, down, slow or failing); why is logged once per outage. */
static void decide_locally(limits_wait_t *w, const char *why, bool in_acquire)
{
    limits_t *l = w->l;
    limits_prov_t *pv = &l->prov[w->p];
    int64_t now = limits_now(l);
    if (l->store) {
        pv->st.redis_fallbacks++;
        if (!l->in_outage)
            log_warn("rate limits: redis not answering, local buckets decide (whole rate per process)",
                     LOG_S("provider", pv->cfg->name), LOG_S("error", why));
        l->in_outage = true;
    }
    int64_t a = gcra_wait_ms(&pv->local_rpm, pv->cfg->rpm, 1, now);
    int64_t b = gcra_wait_ms(&pv->local_tpm, pv->cfg->tpm, w->tokens, now);
    int64_t wait = a > b ? a : b;
    if (wait == 0)
        local_charge(l, pv, w->tokens);
    verdict(w, wait == 0, wait, in_acquire);
}

static void eval_cb(void *ctx, const store_eval_result_t *res)
{
    limits_wait_t *w = ctx;
    limits_t *l = w->l;
    l->store_pending--;
    w->asking = false;
    if (w->cancelled || l->closing) {
        free(w);
        limits_maybe_release(l);
        return;
    }
    if (res->err != STORE_OK || res->n_ints != 2) {
        decide_locally(w, res->err != STORE_OK ? res->errmsg : "script reply is not {granted, retry_after}",
                       false);
        return;
    }
    if (l->in_outage)
        log_info("rate limits: redis answering again");
    l->in_outage = false;
    bool granted = res->ints[0] == 1;
    if (granted)
        local_charge(l, &l->prov[w->p], w->tokens);
    verdict(w, granted, res->ints[1] > 0 ? res->ints[1] : 0, false);
}

/* Sends one script call for provider pv; 0 when sent (cb owes an answer), or a negative store_err_t. */
static int script_call(limits_t *l, const limits_prov_t *pv, char mode, int64_t tokens, store_eval_cb cb,
                       void *ctx)
{
    char rpm[24], tpm[24], tok[24], m[2] = {mode, '\0'};
    if (!l->store || !l->script || !store_is_up(l->store))
        return STORE_ERR_UNAVAILABLE;
    snprintf(rpm, sizeof rpm, "%lld", (long long)pv->cfg->rpm);
    snprintf(tpm, sizeof tpm, "%lld", (long long)pv->cfg->tpm);
    snprintf(tok, sizeof tok, "%lld", (long long)tokens);
    const store_bytes_t keys[2] = {STORE_BYTES(pv->key_rpm, strlen(pv->key_rpm)),
                                   STORE_BYTES(pv->key_tpm, strlen(pv->key_tpm))};
    const store_bytes_t args[4] = {STORE_BYTES(m, 1), STORE_BYTES(rpm, strlen(rpm)),
                                   STORE_BYTES(tpm, strlen(tpm)), STORE_BYTES(tok, strlen(tok))};
    int rc = store_eval(l->store, l->script, keys, 2, args, 4, LIMITS_REDIS_TIMEOUT_MS, cb, ctx);
    if (rc == STORE_OK)
        l->store_pending++;
    return rc;
}

/* Asks Redis for w's budget, or the local bucket when Redis cannot be asked. */
static void ask(limits_wait_t *w, bool in_acquire)
{
    limits_t *l = w->l;
    int rc = script_call(l, &l->prov[w->p], 'a', w->tokens, eval_cb, w);
    if (rc == STORE_OK) {
        w->asking = true;
        return;
    }
    decide_locally(w, store_strerror(rc), in_acquire);
}

/* ---- public -------------------------------------------------------------------------------- */

limits_wait_t *limits_rate_acquire(limits_t *l, size_t p, int64_t est_tokens, int64_t wait_ms,
                                   limits_rate_cb cb, void *ctx, bool *granted_now)
{
    *granted_now = false;
    if (p >= l->n_prov || !cb || l->closing)
        return NULL;
    const config_provider_t *pc = l->prov[p].cfg;
    if (pc->rpm <= 0 && pc->tpm <= 0) {
        *granted_now = true;
        return NULL;
    }
    limits_wait_t *w = base_calloc(1, sizeof *w);
    if (!w)
        return NULL;
    *w = (limits_wait_t){.l = l, .p = p, .tokens = est_tokens > 0 ? est_tokens : 0, .cb = cb, .ctx = ctx};
    w->deadline_ms = limits_now(l) + (wait_ms > 0 ? wait_ms : 0);
    ask(w, true);
    return w;
}

void limits_rate_cancel(limits_wait_t *w)
{
    if (!w)
        return;
    if (w->asking) {
        w->cancelled = true; /* freed when the store answers */
        return;
    }
    if (w->queued) {
        limits_t *l = w->l;
        bool was_first = l->due == w;
        unqueue(w);
        if (was_first)
            timer_arm(l);
    }
    free(w);
}

void limits_rate_drop_waits(limits_t *l)
{
    while (l->due) {
        limits_wait_t *w = l->due;
        unqueue(w);
        free(w);
    }
}

static void correct_cb(void *ctx, const store_eval_result_t *res)
{
    limits_t *l = ctx;
    l->store_pending--;
    if (res->err != STORE_OK)
        log_debug("rate limits: tpm correction not applied", LOG_S("error", res->errmsg));
    limits_maybe_release(l);
}

void limits_tokens_correct(limits_t *l, size_t p, int64_t est_tokens, int64_t actual_tokens)
{
    if (p >= l->n_prov || l->closing)
        return;
    limits_prov_t *pv = &l->prov[p];
    int64_t delta = (actual_tokens > 0 ? actual_tokens : 0) - (est_tokens > 0 ? est_tokens : 0);
    if (pv->cfg->tpm <= 0 || delta == 0)
        return;
    gcra_add(&pv->local_tpm, pv->cfg->tpm, delta, limits_now(l));
    script_call(l, pv, 'c', delta, correct_cb, l); /* not sent (Redis down): the local bucket is corrected */
}
