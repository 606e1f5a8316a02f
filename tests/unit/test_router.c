/* test_router.c — the router against in-process mock providers (dev/) on the test's own loop: race,
 * hedge (fixed and auto, with the 5%-tail figures), fallback, weights, retries and Retry-After, every
 * timeout, streaming in both wire formats, resets after a cut or failed stream, admission through
 * limits/ (breaker, rate), dropped parameters, and cancellation from inside a callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dev/dev.h"
#include "http/http.h"
#include "limits/limits.h"
#include "log/log.h"
#include "router/router.h"
#include "router/router_int.h"

#define NP       3 /* mocks a, b (openai) and c (anthropic) */
#define MAX_ATT  8
#define TEXT_MAX 8192

typedef struct {
    uv_loop_t loop;
    http_client_t *http;
    dev_mock_t *mock[NP];
    config_provider_t prov[NP];
    char url[NP][64];
    size_t route_idx[NP];
    double weights[NP];
    config_route_t route;
    config_t cfg;
    router_t *router;
    limits_t *limits;
    int64_t fake_now; /* limits' clock offset */
} fx_t;

static fx_t *F;
static const char *const names[NP] = {"a", "b", "c"};

/* What one call came to, copied out of the callbacks. */
typedef struct {
    bool done, ok;
    char text[TEXT_MAX];
    size_t text_len;
    char provider[32], error[600];
    llm_usage_t usage;
    bool has_cost;
    double cost;
    int64_t llm_ms, first_token_ms;
    size_t n_att;
    job_attempt_t att[MAX_ATT];
    char names[MAX_ATT][32], reasons[MAX_ATT][300];
    char deltas[TEXT_MAX];
    size_t deltas_len;
    int n_deltas, resets, deltas_before_reset;
    char reset_provider[32], reset_reason[300];
    bool cancel_on_delta;
    router_call_t *call;
    int after_cancel; /* callbacks seen after router_cancel */
    bool cancelled;
} res_t;

/* ---- loop helpers ---- */

static void tick(uv_timer_t *t) {}

/* Runs the loop until *flag or max_ms pass; true when the flag was set. */
static bool run_until(const bool *flag, int64_t max_ms)
{
    uv_timer_t t;
    uv_timer_init(&F->loop, &t);
    uv_timer_start(&t, tick, 5, 5);
    int64_t end = base_mono_ms() + max_ms;
    while (!*flag && base_mono_ms() < end)
        uv_run(&F->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&F->loop, UV_RUN_NOWAIT);
    return *flag;
}

static void run_for(int64_t ms)
{
    bool never = false;
    run_until(&never, ms);
}

/* ---- the mocks' /stats ---- */

typedef struct {
    bool done;
    char *body;
} get_t;

static void get_done(void *ctx, http_result_t *res)
{
    get_t *g = ctx;
    g->body = res->code == HTTP_OK ? buf_steal(&res->body, NULL) : NULL;
    g->done = true;
}

static double stat_of(int m, const char *path)
{
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stats", dev_mock_port(F->mock[m]));
    get_t g = {0};
    http_request_t hr = {.method = HTTP_GET, .url = url, .buffer_body = true, .on_done = get_done, .ctx = &g};
    assert_non_null(http_start(F->http, &hr, err, sizeof err));
    assert_true(run_until(&g.done, 5000));
    assert_non_null(g.body);
    cJSON *j = cJSON_Parse(g.body);
    free(g.body);
    assert_non_null(j);
    const cJSON *node = j;
    for (const char *k = path; node && *k;) {
        char key[64];
        size_t len = strcspn(k, ".");
        assert_true(len < sizeof key);
        memcpy(key, k, len);
        key[len] = '\0';
        node = cJSON_GetObjectItemCaseSensitive(node, key);
        k += len + (k[len] == '.');
    }
    assert_non_null(node);
    double v = cJSON_GetNumberValue(node);
    cJSON_Delete(j);
    return v;
}

/* Polls a counter until it reaches want (the mock sees a disconnect a moment after the client leaves). */
static double stat_wait(int m, const char *path, double want, int64_t max_ms)
{
    int64_t end = base_mono_ms() + max_ms;
    double v;
    while ((v = stat_of(m, path)) < want && base_mono_ms() < end)
        run_for(20);
    return v;
}

static void knobs(int m, const char *spec)
{
    char err[256];
    assert_int_equal(dev_mock_set_knobs(F->mock[m], spec, err, sizeof err), 0);
}

/* ---- fixture ---- */

static int64_t fake_clock(void *ctx) { return base_mono_ms() + F->fake_now; }

static void router_make(bool with_limits)
{
    char err[256];
    router_free(F->router);
    if (with_limits && !F->limits) {
        F->limits = limits_new(&F->loop, &F->cfg, NULL, err, sizeof err);
        assert_non_null(F->limits);
        limits_set_clock(F->limits, fake_clock, NULL);
    }
    F->router = router_new(&F->loop, &F->cfg, F->http, with_limits ? F->limits : NULL, err, sizeof err);
    assert_non_null(F->router);
}

static int setup(void **state)
{
    char err[256];
    F = calloc(1, sizeof *F);
    assert_int_equal(uv_loop_init(&F->loop), 0);
    F->http = http_client_new(&F->loop, NULL, err, sizeof err);
    assert_non_null(F->http);
    for (int i = 0; i < NP; i++) {
        F->mock[i] = dev_mock_new(&F->loop, names[i], i == 2 ? DEV_MOCK_ANTHROPIC : DEV_MOCK_OPENAI,
                                  "comments=1", err, sizeof err);
        assert_non_null(F->mock[i]);
        assert_int_equal(dev_mock_listen(F->mock[i], "127.0.0.1", 0, err, sizeof err), 0);
        snprintf(F->url[i], sizeof F->url[i], "http://127.0.0.1:%d/v1", dev_mock_port(F->mock[i]));
        config_provider_t *p = &F->prov[i];
        p->name = (char *)names[i];
        p->type = i == 2 ? PROVIDER_ANTHROPIC : PROVIDER_OPENAI;
        p->base_url = F->url[i];
        p->api_key.value = "sk-test";
        p->model = i == 2 ? "claude-x" : "gpt-x";
        p->timeout_ms = 10000;
        p->connect_timeout_ms = 2000;
        p->retry_base_ms = 20;
        p->retry_max_ms = 500;
        p->limit_wait_ms = 1000;
        p->breaker = (config_breaker_t){
            .failures = 2, .failure_ratio = 0.5, .window_s = 30, .min_requests = 20, .cooldown_s = 30};
        p->tls_verify = true;
        p->anthropic_version = "2023-06-01";
        p->max_tokens_default = 256;
        p->weight = 1;
        p->price_set = true;
        p->price_input_per_mtok = 1.0;
        p->price_output_per_mtok = 2.0;
    }
    F->cfg.llm.providers = F->prov;
    F->cfg.llm.n_providers = NP;
    F->cfg.llm.max_response_bytes = 1 << 20;
    F->route = (config_route_t){.name = "default",
                                .providers = F->route_idx,
                                .hedge_min_ms = 50,
                                .hedge_max_ms = 1000,
                                .timeout_ms = 15000};
    router_make(false);
    return 0;
}

static void http_closed(void *ctx) { *(bool *)ctx = true; }

static int teardown(void **state)
{
    router_free(F->router);
    if (F->limits)
        limits_free(F->limits);
    for (int i = 0; i < NP; i++)
        dev_mock_close(F->mock[i]);
    bool closed = false;
    http_client_close(F->http, http_closed, &closed);
    while (uv_run(&F->loop, UV_RUN_DEFAULT) != 0)
        ;
    assert_true(closed);
    assert_int_equal(uv_loop_close(&F->loop), 0);
    free(F);
    F = NULL;
    return 0;
}

/* The route: strategy and providers by letter ("ab", "ca"). */
static void route_set(strategy_t s, const char *letters)
{
    F->route.strategy = s;
    F->route.n_providers = strlen(letters);
    for (size_t i = 0; letters[i]; i++)
        F->route_idx[i] = (size_t)(letters[i] - 'a');
}

/* ---- calls ---- */

static void on_done(void *ctx, const router_result_t *r)
{
    res_t *o = ctx;
    if (o->cancelled)
        o->after_cancel++;
    o->done = true;
    o->ok = r->ok;
    o->llm_ms = r->llm_ms;
    o->first_token_ms = r->first_token_ms;
    if (r->ok) {
        assert_true(r->text_len < sizeof o->text);
        memcpy(o->text, r->text, r->text_len);
        o->text_len = r->text_len;
        snprintf(o->provider, sizeof o->provider, "%s", r->provider);
        o->usage = r->usage;
        o->has_cost = r->has_cost;
        o->cost = r->cost_usd;
    } else {
        snprintf(o->error, sizeof o->error, "%s", r->error);
    }
    o->n_att = r->n_attempts < MAX_ATT ? r->n_attempts : MAX_ATT;
    for (size_t i = 0; i < o->n_att; i++) {
        o->att[i] = r->attempts[i];
        snprintf(o->names[i], sizeof o->names[i], "%s", r->attempts[i].provider);
        snprintf(o->reasons[i], sizeof o->reasons[i], "%s",
                 r->attempts[i].reason ? r->attempts[i].reason : "");
    }
}

static void on_delta(void *ctx, const char *provider, const char *text, size_t len)
{
    res_t *o = ctx;
    if (o->cancelled)
        o->after_cancel++;
    assert_true(len > 0);
    assert_true(o->deltas_len + len < sizeof o->deltas);
    memcpy(o->deltas + o->deltas_len, text, len);
    o->deltas_len += len;
    o->n_deltas++;
    if (o->cancel_on_delta && !o->cancelled) {
        o->cancelled = true;
        router_cancel(o->call);
    }
}

static void on_reset(void *ctx, const char *provider, const char *reason)
{
    res_t *o = ctx;
    o->resets++;
    o->deltas_before_reset = o->n_deltas;
    o->deltas_len = 0;
    o->n_deltas = 0;
    snprintf(o->reset_provider, sizeof o->reset_provider, "%s", provider);
    snprintf(o->reset_reason, sizeof o->reset_reason, "%s", reason);
}

static const chat_message_t prompt[] = {{.role = "user", .content = "tell me a story", .content_len = 15}};

static router_call_t *start(res_t *o, bool stream, const llm_params_t *params, int64_t deadline)
{
    char err[256];
    router_request_t req = {.route = &F->route,
                            .messages = prompt,
                            .n_messages = 1,
                            .params = params,
                            .deadline_mono_ms = deadline,
                            .stream = stream};
    router_callbacks_t cbs = {.on_done = on_done, .on_delta = on_delta, .on_reset = on_reset, .ctx = o};
    o->call = router_start(F->router, &req, &cbs, err, sizeof err);
    assert_non_null(o->call);
    return o->call;
}

static void call(res_t *o, bool stream)
{
    memset(o, 0, sizeof *o);
    start(o, stream, NULL, 0);
    assert_true(run_until(&o->done, 15000));
}

/* The index of provider's record (after index from), or -1. */
static int att_of(const res_t *o, const char *provider, int from)
{
    for (int i = from; i < (int)o->n_att; i++)
        if (strcmp(o->names[i], provider) == 0)
            return i;
    return -1;
}

/* ---- race ---- */

static void race_fast_wins_slow_cancelled(void **state)
{
    route_set(STRATEGY_RACE, "ab");
    knobs(0, "latency_ms=30");
    knobs(1, "latency_ms=3000");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "a");
    assert_true(o.llm_ms < 1500);
    assert_memory_equal(o.text, "[a] n=1", 7);
    int b = att_of(&o, "b", 0);
    assert_int_equal(o.att[att_of(&o, "a", 0)].outcome, JOB_OUTCOME_WON);
    assert_int_equal(o.att[att_of(&o, "a", 0)].http_status, 200);
    assert_int_equal(o.att[b].outcome, JOB_OUTCOME_CANCELLED);
    assert_non_null(strstr(o.reasons[b], "cancelled before billing could be read"));
    /* The cancelled transfer was closed: the slow mock saw its client leave. */
    assert_int_equal((int)stat_wait(1, "client_disconnects", 1, 3000), 1);
    assert_true(o.has_cost);
    assert_true(o.cost > 0);
    router_stats_t st;
    router_get_stats(F->router, &st);
    assert_int_equal(st.calls_in_flight, 0);
    assert_int_equal(st.attempts_in_flight, 0);
}

/* ---- hedge ---- */

static void hedge_fixed_delay(void **state)
{
    route_set(STRATEGY_HEDGE, "ab");
    F->route.hedge_delay_ms = 150;
    knobs(0, "latency_ms=2000");
    knobs(1, "latency_ms=20");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    int a = att_of(&o, "a", 0), b = att_of(&o, "b", 0);
    assert_int_equal(o.att[b].outcome, JOB_OUTCOME_WON);
    assert_string_equal(o.reasons[b], "hedge_after_ms=150");
    assert_true(o.att[b].started_after_ms >= 150 && o.att[b].started_after_ms < 600);
    assert_int_equal(o.att[a].outcome, JOB_OUTCOME_CANCELLED);
    assert_true(o.llm_ms >= 150 && o.llm_ms < 1000);
    /* A fast primary: no second call at all. */
    knobs(0, "latency_ms=10");
    double before = stat_of(1, "requests.total");
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "a");
    b = att_of(&o, "b", 0);
    assert_int_equal(o.att[b].outcome, JOB_OUTCOME_SKIPPED);
    assert_string_equal(o.reasons[b], "not_needed");
    run_for(200);
    assert_true(stat_of(1, "requests.total") == before);
}

static void hedge_failure_starts_next_at_once(void **state)
{
    route_set(STRATEGY_HEDGE, "ab");
    F->route.hedge_delay_ms = 800;
    knobs(0, "latency_ms=10,fail_rate=1,fail_status=500");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    int b = att_of(&o, "b", 0);
    assert_true(o.att[b].started_after_ms < 400);
    assert_string_equal(o.reasons[b], "fallback_after=a");
    assert_non_null(strstr(o.reasons[att_of(&o, "a", 0)], "http 500"));
}

static void hedge_stream_waits_for_first_token_only(void **state)
{
    route_set(STRATEGY_HEDGE, "ab");
    F->route.hedge_delay_ms = 150;
    /* The first token comes at once; the whole answer takes far longer than the delay: no hedge. */
    knobs(0, "latency_ms=10,token_ms=40");
    res_t o;
    call(&o, true);
    assert_true(o.ok);
    assert_string_equal(o.provider, "a");
    assert_true(o.llm_ms > 300);
    assert_string_equal(o.reasons[att_of(&o, "b", 0)], "not_needed");
    /* No first token within the delay: the next one starts and streams first. */
    knobs(0, "latency_ms=1500");
    call(&o, true);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    assert_string_equal(o.reasons[att_of(&o, "b", 0)], "hedge_after_ms=150");
    assert_non_null(strstr(o.reasons[att_of(&o, "a", 0)], "streamed first"));
    assert_int_equal(o.resets, 0);
    assert_memory_equal(o.deltas, o.text, o.text_len);
}

typedef struct {
    int started, finished, total;
    int64_t *ms;
    int ok;
} bench_t;

static void bench_next(bench_t *bt);

static void bench_done(void *ctx, const router_result_t *r)
{
    bench_t *bt = ctx;
    bt->ms[bt->finished++] = r->llm_ms;
    bt->ok += r->ok;
    bench_next(bt);
}

static void bench_next(bench_t *bt)
{
    if (bt->started >= bt->total)
        return;
    bt->started++;
    char err[256];
    router_request_t req = {.route = &F->route, .messages = prompt, .n_messages = 1};
    router_callbacks_t cbs = {.on_done = bench_done, .ctx = bt};
    assert_non_null(router_start(F->router, &req, &cbs, err, sizeof err));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int64_t p50, p99;
    double calls_per_job;
} figures_t;

/* n calls, concurrency at a time, against the current route; latency percentiles and provider calls. */
static figures_t bench(int n, int concurrency)
{
    bench_t bt = {.total = n, .ms = calloc((size_t)n, sizeof(int64_t))};
    assert_non_null(bt.ms);
    double before = 0;
    for (size_t i = 0; i < F->route.n_providers; i++)
        before += stat_of((int)F->route_idx[i], "requests.total");
    for (int i = 0; i < concurrency; i++)
        bench_next(&bt);
    bool never = false;
    int64_t end = base_mono_ms() + 20000 + 20 * (int64_t)n;
    while (bt.finished < n && base_mono_ms() < end)
        run_until(&never, 50);
    assert_int_equal(bt.finished, n);
    assert_int_equal(bt.ok, n);
    double after = 0;
    for (size_t i = 0; i < F->route.n_providers; i++)
        after += stat_of((int)F->route_idx[i], "requests.total");
    qsort(bt.ms, (size_t)n, sizeof bt.ms[0], cmp_i64);
    figures_t f = {
        .p50 = bt.ms[n / 2], .p99 = bt.ms[(n * 99 + 99) / 100 - 1], .calls_per_job = (after - before) / n};
    free(bt.ms);
    return f;
}

static void hedge_auto_with_a_tail(void **state)
{
    /* Two equivalent providers: median 100 ms, 5% of calls take 3 s. */
    knobs(0, "latency_ms=100,tail_ms=3000,tail_prob=0.05,seed=7");
    knobs(1, "latency_ms=100,tail_ms=3000,tail_prob=0.05,seed=11");
    /* ROUTER_TAIL_JOBS=2000 for the full run (about a minute). */
    const char *env = getenv("ROUTER_TAIL_JOBS");
    int n = env ? (int)strtol(env, NULL, 10) : 200, conc = 25;
    if (n < 100)
        n = 200;
    route_set(STRATEGY_RACE, "a");
    figures_t single = bench(n, conc);
    route_set(STRATEGY_RACE, "ab");
    figures_t race = bench(n, conc);
    route_set(STRATEGY_HEDGE, "ab");
    F->route.hedge_auto = true;
    figures_t hedge = bench(n, conc);
    int64_t delay = router_hedge_delay_ms(F->router, &F->route, false);
    print_message(
        "5%%-tail scenario, %d calls each: single p50=%lld p99=%lld calls/job=%.3f | race p50=%lld "
        "p99=%lld calls/job=%.3f | hedge-auto p50=%lld p99=%lld calls/job=%.3f (delay now %lld ms)\n",
        n, (long long)single.p50, (long long)single.p99, single.calls_per_job, (long long)race.p50,
        (long long)race.p99, race.calls_per_job, (long long)hedge.p50, (long long)hedge.p99,
        hedge.calls_per_job, (long long)delay);
    assert_true(single.p99 >= 2900);
    assert_true(race.calls_per_job > 1.9);
    assert_true(hedge.calls_per_job <= 1.15);
    assert_true(hedge.p99 < 1000);
    assert_true(hedge.p50 < 200);
    assert_true(delay >= 100 && delay < 300);
}

static void hedge_order_latency_starts_with_the_steady_provider(void **state)
{
    /* A (first in the route) has a 5% tail of 3 s, B is steady: ordered by p99, B goes first. */
    knobs(0, "latency_ms=100,tail_ms=3000,tail_prob=0.05,seed=7");
    knobs(1, "latency_ms=100");
    int n = 400, conc = 25;
    route_set(STRATEGY_RACE, "ab");
    figures_t race = bench(n, conc);
    router_make(false); /* the hedge starts cold, as a new worker does */
    route_set(STRATEGY_HEDGE, "ab");
    F->route.hedge_auto = true;
    F->route.hedge_order = HEDGE_ORDER_LATENCY;
    double a_before = stat_of(0, "requests.total");
    figures_t hedge = bench(n, conc);
    double a_calls = stat_of(0, "requests.total") - a_before;
    print_message("hedge_order latency, %d calls: race p99=%lld | hedge p50=%lld p99=%lld calls/job=%.3f, "
                  "calls to a %.0f\n",
                  n, (long long)race.p99, (long long)hedge.p50, (long long)hedge.p99, hedge.calls_per_job,
                  a_calls);
    assert_true(hedge.calls_per_job <= 1.15);
    assert_true(hedge.p99 <= race.p99 * 12 / 10 + 5);
    assert_true(a_calls < n / 2); /* route order: every call; here: the cold start, exploring, hedges */
}

/* The window's quantiles against a naive nearest-rank over the samples it should still hold. */
static void window_quantile_matches_a_sort(void **state)
{
    static router_window_t w;
    memset(&w, 0, sizeof w);
    int64_t at[1000], val[1000], v[ROUTER_WINDOW];
    uint64_t x = 88172645463325252ull;
    int64_t now = 1000;
    for (int i = 0; i < 1000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        now += (int64_t)(x % 700); /* some samples expire (60 s), some are pushed out (200 kept) */
        at[i] = now;
        val[i] = (int64_t)(x >> 20) % 5000;
        window_add(&w, now, val[i]);
        size_t n = 0;
        for (int j = i; j >= 0 && n < ROUTER_WINDOW && now - at[j] <= ROUTER_WINDOW_MS; j--)
            v[n++] = val[j] + 1;
        qsort(v, n, sizeof v[0], cmp_i64);
        for (unsigned pct = 50; pct <= 99; pct += 49) {
            int64_t want = n < ROUTER_WINDOW_MIN ? -1 : v[(n * pct + 99) / 100 - 1];
            assert_int_equal(window_quantile(&w, now, pct), want);
        }
    }
    assert_int_equal(window_quantile(&w, now + ROUTER_WINDOW_MS + 1, 95), -1); /* all expired */
    assert_int_equal(w.n, 0);
}

static void connect_error_retried_then_next(void **state)
{
    route_set(STRATEGY_FALLBACK, "ab");
    F->prov[0].base_url = "http://127.0.0.1:1/v1"; /* nothing listens there */
    F->prov[0].max_retries = 2;
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_ERROR);
    assert_int_equal(o.att[0].retries, 2);
    assert_non_null(strstr(o.reasons[0], "connect"));
}

/* ---- fallback, weights ---- */

static void fallback_in_order_on_500(void **state)
{
    route_set(STRATEGY_FALLBACK, "abc");
    knobs(0, "fail_rate=1,fail_status=500");
    knobs(1, "fail_rate=1,fail_status=503,retry_after_s=0");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "c");
    assert_memory_equal(o.text, "[c] n=1", 7);
    assert_int_equal(o.n_att, 3);
    assert_string_equal(o.names[0], "a");
    assert_string_equal(o.names[1], "b");
    assert_string_equal(o.names[2], "c");
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_ERROR);
    assert_int_equal(o.att[0].http_status, 500);
    assert_non_null(strstr(o.reasons[0], "http 500"));
    assert_int_equal(o.att[1].http_status, 503);
    assert_string_equal(o.reasons[2], "fallback_after=b");
    assert_true(o.att[2].started_after_ms >= o.att[1].started_after_ms);
    assert_true(o.usage.has);
    /* Every provider failing: a failed call whose error names each. */
    knobs(2, "fail_rate=1,fail_status=500");
    call(&o, false);
    assert_false(o.ok);
    assert_non_null(strstr(o.error, "a: "));
    assert_non_null(strstr(o.error, "c: "));
}

static void weights_choose_the_first(void **state)
{
    route_set(STRATEGY_FALLBACK, "abc");
    F->route.weights = F->weights;
    F->weights[0] = 0;
    F->weights[1] = 1;
    F->weights[2] = 0;
    res_t o;
    for (int i = 0; i < 3; i++) {
        call(&o, false);
        assert_string_equal(o.provider, "b");
        assert_string_equal(o.names[0], "b");
    }
    /* The others keep their order behind it. */
    assert_string_equal(o.names[1], "a");
    assert_string_equal(o.names[2], "c");
}

/* ---- retries ---- */

static void retry_429_honours_retry_after(void **state)
{
    route_set(STRATEGY_FALLBACK, "a");
    F->prov[0].max_retries = 2;
    knobs(0, "fail_next=1,fail_status=429,retry_after_s=1");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_WON);
    assert_int_equal(o.att[0].retries, 1);
    assert_true(o.llm_ms >= 1000);
    assert_int_equal((int)stat_of(0, "requests.total"), 2);
    /* The mock saw the wait: wall-clock time between its two requests. */
    assert_true(stat_of(0, "last_request_ms") - stat_of(0, "first_request_ms") >= 990);
    router_stats_t st;
    router_get_stats(F->router, &st);
    assert_int_equal(st.retries, 1);
    /* 5xx without Retry-After: backoff only; both retries used, then the error. */
    knobs(0, "fail_next=3,fail_status=500");
    call(&o, false);
    assert_false(o.ok);
    assert_int_equal(o.att[0].retries, 2);
    assert_int_equal(o.att[0].http_status, 500);
    assert_true(o.llm_ms < 1500);
}

static void no_retry_on_request_errors(void **state)
{
    route_set(STRATEGY_FALLBACK, "ab");
    F->prov[0].max_retries = 3;
    static const int statuses[] = {400, 401, 403, 404, 422};
    for (size_t i = 0; i < BASE_ARRAY_LEN(statuses); i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "fail_next=1,fail_status=%d", statuses[i]);
        knobs(0, spec);
        double before = stat_of(0, "requests.total");
        res_t o;
        call(&o, false);
        assert_true(o.ok);
        assert_string_equal(o.provider, "b");
        assert_int_equal(o.att[0].retries, 0);
        assert_int_equal(o.att[0].http_status, statuses[i]);
        char want[32];
        snprintf(want, sizeof want, "http %d", statuses[i]);
        assert_non_null(strstr(o.reasons[0], want));
        assert_true(stat_of(0, "requests.total") == before + 1);
    }
    /* Retry-After past the deadline: no retry, and the reason says so. */
    F->route.timeout_ms = 1500;
    knobs(0, "fail_next=1,fail_status=429,retry_after_s=5");
    res_t o;
    call(&o, false);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.att[0].retries, 0);
    assert_non_null(strstr(o.reasons[0], "passes the deadline"));
    assert_true(o.llm_ms < 1000);
}

/* ---- timeouts ---- */

static void timeouts_name_themselves(void **state)
{
    route_set(STRATEGY_FALLBACK, "ab");
    res_t o;
    /* First byte (not streamed): the whole answer drips one byte per 50 ms. */
    F->prov[0].first_token_timeout_ms = 200;
    knobs(0, "drip_ms=50");
    call(&o, false);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_TIMEOUT);
    assert_string_equal(o.reasons[0], "first_token_timeout_ms=200");
    assert_true(o.att[0].latency_ms >= 190 && o.att[0].latency_ms < 1000);
    /* First token (streamed): the head comes, no token within 200 ms. */
    knobs(0, "drip_ms=0,latency_ms=1500");
    call(&o, true);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_TIMEOUT);
    assert_string_equal(o.reasons[0], "first_token_timeout_ms=200");
    assert_int_equal(o.resets, 0);
    /* Whole call. */
    F->prov[0].first_token_timeout_ms = 0;
    F->prov[0].timeout_ms = 250;
    call(&o, false);
    assert_string_equal(o.provider, "b");
    assert_string_equal(o.reasons[0], "timeout_ms=250");
    /* The job's deadline caps everything. */
    F->prov[0].timeout_ms = 10000;
    memset(&o, 0, sizeof o);
    start(&o, false, NULL, base_mono_ms() + 300);
    assert_true(run_until(&o.done, 5000));
    assert_false(o.ok);
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_TIMEOUT);
    assert_true(o.llm_ms >= 290 && o.llm_ms < 1000);
}

static void idle_stream_stall_resets(void **state)
{
    route_set(STRATEGY_FALLBACK, "ab");
    F->prov[0].idle_timeout_ms = 250;
    knobs(0, "token_ms=1000,comments=0");
    knobs(1, "token_ms=5");
    res_t o;
    call(&o, true);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.resets, 1);
    assert_string_equal(o.reset_provider, "a");
    assert_non_null(strstr(o.reset_reason, "idle_timeout_ms=250"));
    assert_true(o.deltas_before_reset >= 1);
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_TIMEOUT);
    assert_string_equal(o.reasons[1], "reset_after=a");
    assert_int_equal(o.deltas_len, o.text_len);
    assert_memory_equal(o.deltas, o.text, o.text_len);
}

/* ---- streaming ---- */

static int words(const char *s, size_t n)
{
    int w = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && (i == 0 || s[i - 1] == ' '))
            w++;
    return w;
}

static void stream_both_formats(void **state)
{
    for (int m = 0; m < 3; m += 2) {
        route_set(STRATEGY_RACE, m == 0 ? "a" : "c");
        knobs(m, "token_ms=5,latency_ms=20");
        res_t o;
        call(&o, true);
        assert_true(o.ok);
        assert_string_equal(o.provider, names[m]);
        assert_true(o.n_deltas >= 5);
        assert_int_equal(o.n_deltas, words(o.text, o.text_len));
        assert_int_equal(o.deltas_len, o.text_len);
        assert_memory_equal(o.deltas, o.text, o.text_len);
        assert_true(o.usage.has);
        assert_int_equal(o.usage.completion_tokens, o.n_deltas);
        assert_true(o.usage.prompt_tokens > 0);
        assert_true(o.has_cost);
        double want = ((double)o.usage.prompt_tokens * 1.0 + (double)o.usage.completion_tokens * 2.0) / 1e6;
        assert_true(o.cost > want * 0.999 && o.cost < want * 1.001);
        assert_true(o.first_token_ms >= 15 && o.first_token_ms <= o.llm_ms);
        assert_true(o.att[0].first_token_ms >= 0);
    }
}

static void stream_race_first_token_wins(void **state)
{
    route_set(STRATEGY_RACE, "ab");
    knobs(0, "latency_ms=20,token_ms=30");
    knobs(1, "latency_ms=400,token_ms=1");
    res_t o;
    call(&o, true);
    assert_true(o.ok);
    /* b would finish first (its tokens come fast) but a had the first token. */
    assert_string_equal(o.provider, "a");
    assert_int_equal(o.att[att_of(&o, "b", 0)].outcome, JOB_OUTCOME_CANCELLED);
    assert_non_null(strstr(o.reasons[att_of(&o, "b", 0)], "streamed first"));
    assert_memory_equal(o.deltas, o.text, o.text_len);
}

static void cut_stream_resets_and_falls_back(void **state)
{
    /* Race: a streams first, is cut after 2 tokens; b (cancelled at a's first token) streams again. */
    route_set(STRATEGY_RACE, "ab");
    knobs(0, "latency_ms=0,token_ms=10,cut_after=2");
    knobs(1, "latency_ms=300,token_ms=5");
    res_t o;
    call(&o, true);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.resets, 1);
    assert_string_equal(o.reset_provider, "a");
    assert_non_null(strstr(o.reset_reason, "stream cut"));
    assert_int_equal(o.deltas_before_reset, 2);
    assert_memory_equal(o.text, "[b] n=1", 7);
    assert_int_equal(o.deltas_len, o.text_len);
    assert_memory_equal(o.deltas, o.text, o.text_len);
    int a = att_of(&o, "a", 0), b1 = att_of(&o, "b", 0), b2 = att_of(&o, "b", b1 + 1);
    assert_int_equal(o.att[a].outcome, JOB_OUTCOME_ERROR);
    assert_int_equal(o.att[b1].outcome, JOB_OUTCOME_CANCELLED);
    assert_true(b2 > b1);
    assert_int_equal(o.att[b2].outcome, JOB_OUTCOME_WON);
    assert_string_equal(o.reasons[b2], "reset_after=a");
    router_stats_t st;
    router_get_stats(F->router, &st);
    assert_int_equal(st.resets, 1);
}

static void mid_stream_error_resets_and_falls_back(void **state)
{
    route_set(STRATEGY_FALLBACK, "ca");
    knobs(2, "token_ms=5,error_after=3");
    knobs(0, "token_ms=5");
    res_t o;
    call(&o, true);
    assert_true(o.ok);
    assert_string_equal(o.provider, "a");
    assert_int_equal(o.resets, 1);
    assert_string_equal(o.reset_provider, "c");
    assert_int_equal(o.deltas_before_reset, 3);
    assert_non_null(strstr(o.reset_reason, "stream failed"));
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_ERROR);
    assert_memory_equal(o.deltas, o.text, o.text_len);
    assert_int_equal(o.deltas_len, o.text_len);
}

static void stream_answered_with_bad_json(void **state)
{
    route_set(STRATEGY_FALLBACK, "ab");
    knobs(0, "not_json=1");
    res_t o;
    call(&o, true);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.resets, 0);
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_ERROR);
    assert_int_equal(o.att[0].http_status, 200);
    assert_non_null(strstr(o.reasons[0], "malformed"));
}

static void cancel_inside_a_delta(void **state)
{
    route_set(STRATEGY_RACE, "ab");
    knobs(0, "token_ms=5");
    knobs(1, "latency_ms=500");
    res_t o;
    memset(&o, 0, sizeof o);
    o.cancel_on_delta = true;
    start(&o, true, NULL, 0);
    run_for(800);
    assert_true(o.cancelled);
    assert_false(o.done);
    assert_int_equal(o.n_deltas, 1);
    assert_int_equal(o.after_cancel, 0);
    router_stats_t st;
    router_get_stats(F->router, &st);
    assert_int_equal(st.calls_in_flight, 0);
    assert_int_equal(st.attempts_in_flight, 0);
}

/* ---- admission ---- */

static void breaker_skips_then_probes(void **state)
{
    router_make(true);
    route_set(STRATEGY_RACE, "ab");
    knobs(0, "fail_rate=1,fail_status=500");
    knobs(1, "latency_ms=100");
    res_t o;
    for (int i = 0; i < 2; i++) {
        call(&o, false);
        assert_string_equal(o.provider, "b");
        assert_int_equal(o.att[0].outcome, JOB_OUTCOME_ERROR);
    }
    assert_int_equal(limits_breaker_state(F->limits, 0), BREAKER_OPEN);
    call(&o, false);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_SKIPPED);
    assert_string_equal(o.reasons[0], "breaker_open");
    assert_int_equal((int)stat_of(0, "requests.total"), 2);
    /* After the cooldown one probe goes; it succeeds and closes the breaker. */
    F->fake_now += 31000;
    knobs(0, "fail_rate=0,latency_ms=0");
    call(&o, false);
    assert_string_equal(o.provider, "a");
    assert_non_null(strstr(o.reasons[0], "breaker_probe"));
    assert_int_equal(limits_breaker_state(F->limits, 0), BREAKER_CLOSED);
    router_stats_t st;
    router_get_stats(F->router, &st);
    assert_int_equal(st.skipped, 1);
}

static void retry_stops_when_the_breaker_opens(void **state)
{
    router_make(true);
    route_set(STRATEGY_FALLBACK, "ab");
    F->prov[0].max_retries = 3;
    knobs(0, "fail_rate=1,fail_status=500");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    assert_string_equal(o.provider, "b");
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_ERROR);
    /* Two failures open the breaker (failures=2): the second retry is not admitted. */
    assert_int_equal(o.att[0].retries, 1);
    assert_non_null(strstr(o.reasons[0], "retry not admitted: breaker_open"));
    assert_non_null(strstr(o.reasons[0], "http 500"));
    assert_int_equal((int)stat_of(0, "requests.total"), 2);
    assert_string_equal(o.reasons[1], "fallback_after=a");
}

static void rate_limit_skips_or_waits(void **state)
{
    F->prov[1].rpm = 1;
    F->prov[1].limit_wait_ms = 150;
    router_make(true);
    route_set(STRATEGY_RACE, "ab");
    knobs(0, "latency_ms=100");
    res_t o;
    call(&o, false);
    assert_string_equal(o.provider, "b");
    call(&o, false);
    assert_string_equal(o.provider, "a");
    int b = att_of(&o, "b", 0);
    assert_int_equal(o.att[b].outcome, JOB_OUTCOME_SKIPPED);
    assert_string_equal(o.reasons[b], "rate_limited");
    /* Fallback waits up to limit_wait_ms for budget, then goes on. */
    route_set(STRATEGY_FALLBACK, "ba");
    call(&o, false);
    assert_string_equal(o.provider, "a");
    assert_string_equal(o.reasons[0], "rate_limited");
    assert_true(o.att[1].started_after_ms >= 140);
    assert_int_equal((int)stat_of(1, "requests.total"), 1);
}

/* ---- params ---- */

static void dropped_params_logged_once(void **state)
{
    char *logbuf = NULL;
    size_t loglen = 0;
    FILE *mem = open_memstream(&logbuf, &loglen);
    assert_non_null(mem);
    log_setup(LOG_INFO, LOG_FORMAT_TEXT, mem);
    route_set(STRATEGY_RACE, "c");
    llm_params_t params = {.has_seed = true, .seed = 42};
    res_t o;
    for (int i = 0; i < 3; i++) {
        memset(&o, 0, sizeof o);
        start(&o, false, &params, 0);
        assert_true(run_until(&o.done, 5000));
        assert_true(o.ok);
    }
    log_setup(LOG_INFO, LOG_FORMAT_TEXT, stderr);
    fclose(mem);
    int n = 0;
    for (const char *p = logbuf; (p = strstr(p, "cannot take")) != NULL; p++)
        n++;
    assert_int_equal(n, 1);
    assert_non_null(strstr(logbuf, "seed"));
    free(logbuf);
}

static void all_skipped_still_calls_back(void **state)
{
    router_make(true);
    F->prov[0].rpm = 1;
    route_set(STRATEGY_RACE, "a");
    res_t o;
    call(&o, false);
    assert_true(o.ok);
    call(&o, false);
    assert_false(o.ok);
    assert_int_equal(o.att[0].outcome, JOB_OUTCOME_SKIPPED);
    assert_non_null(strstr(o.error, "rate_limited"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_setup(LOG_WARN, LOG_FORMAT_TEXT, stderr);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(race_fast_wins_slow_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(hedge_fixed_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(hedge_failure_starts_next_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(hedge_stream_waits_for_first_token_only, setup, teardown),
        cmocka_unit_test_setup_teardown(hedge_auto_with_a_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(hedge_order_latency_starts_with_the_steady_provider, setup, teardown),
        cmocka_unit_test(window_quantile_matches_a_sort),
        cmocka_unit_test_setup_teardown(connect_error_retried_then_next, setup, teardown),
        cmocka_unit_test_setup_teardown(fallback_in_order_on_500, setup, teardown),
        cmocka_unit_test_setup_teardown(weights_choose_the_first, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_429_honours_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(no_retry_on_request_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(timeouts_name_themselves, setup, teardown),
        cmocka_unit_test_setup_teardown(idle_stream_stall_resets, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_both_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_race_first_token_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(cut_stream_resets_and_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(mid_stream_error_resets_and_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_answered_with_bad_json, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_inside_a_delta, setup, teardown),
        cmocka_unit_test_setup_teardown(breaker_skips_then_probes, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_stops_when_the_breaker_opens, setup, teardown),
        cmocka_unit_test_setup_teardown(rate_limit_skips_or_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(dropped_params_logged_once, setup, teardown),
        cmocka_unit_test_setup_teardown(all_skipped_still_calls_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
