/* test_limits.c — the circuit breaker on an injected clock, max_concurrency, the local buckets, and the
 * fleet-wide rpm/tpm budgets against a real redis-server started per test on a free loopback port: two
 * limits_t ("two processes") sharing one budget, token costs and refunds, waiting for budget, Redis
 * stopped or frozen (local fallback), a flushed script cache, and the store_eval primitive itself.
 * A synchronous hiredis client looks into Redis (sync is fine here, never in the modules). */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/base.h"
#include "config/config.h"
#include "limits/limits.h"
#include "log/log.h"
#include "store/store.h"

#define N_PROV 2

typedef struct {
    char dir[64];
    int port;
    pid_t pid;
    uv_loop_t loop;
    uv_timer_t tick;
    config_provider_t prov[N_PROV];
    config_t cfg;
    store_t *store[2];
    limits_t *lim[2];
    int ups;
    int closed;
    int64_t now; /* the fake clock */
} fx_t;

/* One acquire's answer, copied out of the callback. */
typedef struct {
    int calls;
    bool granted;
    int64_t retry_after_ms;
    int64_t at_ms; /* base_mono_ms when it came */
} ans_t;

#define RUN_UNTIL(f, cond, ms)                                                                               \
    do {                                                                                                     \
        int64_t dl_ = base_mono_ms() + (ms);                                                                 \
        while (!(cond) && base_mono_ms() < dl_)                                                              \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                                 \
    } while (0)

/* ---- redis-server ------------------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Runs one command on a fresh synchronous connection; NULL when Redis does not answer. */
static redisReply *sync_cmd(const fx_t *f, const char *fmt, ...)
{
    va_list ap;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->port, (struct timeval){.tv_usec = 200000});
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){.tv_sec = 3});
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

static void redis_start(fx_t *f)
{
    char port[16];
    snprintf(port, sizeof port, "%d", f->port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char log[128];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(log, sizeof log, "%s/redis.log", f->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", f->dir, (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 300; i++) {
        redisReply *r = sync_cmd(f, "PING");
        if (r) {
            freeReplyObject(r);
            return;
        }
        usleep(10000);
    }
    fail_msg("redis-server did not start on port %d", f->port);
}

static void redis_stop(fx_t *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGCONT); /* in case a test froze it */
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

/* ---- fixture ------------------------------------------------------------------------------ */

static void tick_cb(uv_timer_t *t) {}
static void on_state(void *ctx, bool up) { ((fx_t *)ctx)->ups += up; }
static void on_closed(void *ctx) { ((fx_t *)ctx)->closed++; }
static int64_t fake_clock(void *ctx) { return ((fx_t *)ctx)->now; }

static config_provider_t provider(const char *name)
{
    return (config_provider_t){
        .name = (char *)name,
        .limit_wait_ms = 1000,
        .breaker =
            {.failures = 5, .failure_ratio = 0.5, .window_s = 30, .min_requests = 20, .cooldown_s = 30},
    };
}

static int setup_common(void **state, bool with_redis)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->prov[0] = provider("alpha");
    f->prov[1] = provider("beta");
    f->cfg.llm.providers = f->prov;
    f->cfg.llm.n_providers = N_PROV;
    f->now = 1000000;
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, tick_cb, 5, 5);
    *state = f;
    if (with_redis) {
        snprintf(f->dir, sizeof f->dir, "/tmp/parley-limits-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->port = free_port();
        redis_start(f);
    }
    return 0;
}

static int setup(void **state) { return setup_common(state, false); }
static int setup_redis(void **state) { return setup_common(state, true); }

static int teardown(void **state)
{
    fx_t *f = *state;
    int stores = 0;
    for (int i = 0; i < 2; i++)
        limits_free(f->lim[i]);
    for (int i = 0; i < 2; i++) {
        if (f->store[i]) {
            store_close(f->store[i], on_closed, f);
            stores++;
        }
    }
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int loop_rc = uv_loop_close(&f->loop);
    int closed = f->closed;
    redis_stop(f);
    if (f->dir[0]) {
        char path[512];
        snprintf(path, sizeof path, "%s/redis.log", f->dir);
        unlink(path);
        rmdir(f->dir);
    }
    free(f);
    assert_int_equal(closed, stores);
    assert_int_equal(loop_rc, 0); /* every handle limits and the stores opened was closed */
    return 0;
}

static limits_t *new_limits(fx_t *f, store_t *store)
{
    char err[256] = "";
    limits_t *l = limits_new(&f->loop, &f->cfg, store, err, sizeof err);
    if (!l)
        fail_msg("limits_new: %s", err);
    return l;
}

/* limits lim[0] on the fake clock, without Redis. */
static limits_t *fake_limits(fx_t *f)
{
    f->lim[0] = new_limits(f, NULL);
    limits_set_clock(f->lim[0], fake_clock, f);
    return f->lim[0];
}

/* Store i on the fixture's Redis, up. */
static store_t *store_up(fx_t *f, int i)
{
    store_options_t o;
    char url[64], err[256];
    store_options_init(&o);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->port);
    o.url = url;
    o.key_prefix = "pt";
    o.command_timeout_ms = 1000;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 100;
    o.on_state = on_state;
    o.ctx = f;
    int before = f->ups;
    f->store[i] = store_new(&f->loop, &o, err, sizeof err);
    assert_non_null(f->store[i]);
    RUN_UNTIL(f, f->ups > before, 3000);
    assert_true(store_is_up(f->store[i]));
    return f->store[i];
}

static limits_stats_t stats(const limits_t *l, size_t p)
{
    limits_stats_t st;
    limits_provider_stats(l, p, &st);
    return st;
}

/* Starts an attempt that must be admitted, and finishes it with outcome. */
static void attempt(limits_t *l, limits_outcome_t outcome)
{
    bool probe;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    limits_finish(l, 0, outcome);
}

static void on_answer(void *ctx, bool granted, int64_t retry_after_ms)
{
    ans_t *a = ctx;
    a->calls++;
    a->granted = granted;
    a->retry_after_ms = retry_after_ms;
    a->at_ms = base_mono_ms();
}

/* One acquire on l, run until answered; returns the answer. */
static ans_t acquire(fx_t *f, limits_t *l, size_t p, int64_t tokens, int64_t wait_ms)
{
    ans_t a = {0};
    bool now;
    limits_wait_t *w = limits_rate_acquire(l, p, tokens, wait_ms, on_answer, &a, &now);
    assert_non_null(w);
    assert_false(now);
    assert_int_equal(a.calls, 0); /* never from inside the call */
    RUN_UNTIL(f, a.calls > 0, wait_ms + 3000);
    assert_int_equal(a.calls, 1);
    return a;
}

/* ---- breaker ------------------------------------------------------------------------------ */

static void consecutive_failures_open(void **state)
{
    fx_t *f = *state;
    f->prov[0].breaker = (config_breaker_t){
        .failures = 3, .failure_ratio = 0.9, .window_s = 10, .min_requests = 100, .cooldown_s = 30};
    limits_t *l = fake_limits(f);
    bool probe;
    attempt(l, LIMITS_FAILURE);
    attempt(l, LIMITS_FAILURE);
    attempt(l, LIMITS_SUCCESS); /* resets the run */
    attempt(l, LIMITS_FAILURE);
    attempt(l, LIMITS_FAILURE);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    attempt(l, LIMITS_FAILURE);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_BREAKER_OPEN);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_BREAKER_OPEN);
    assert_int_equal(limits_breaker_state(l, 1), BREAKER_CLOSED); /* per provider */
    limits_stats_t st = stats(l, 0);
    assert_int_equal(st.opened, 1);
    assert_int_equal(st.rejected_open, 2);
    assert_int_equal(st.in_flight, 0);
    assert_string_equal(limits_breaker_state_name(BREAKER_HALF_OPEN), "half_open");
}

static void failure_ratio_over_window(void **state)
{
    fx_t *f = *state;
    f->prov[0].breaker = (config_breaker_t){
        .failures = 0, .failure_ratio = 0.5, .window_s = 10, .min_requests = 10, .cooldown_s = 30};
    limits_t *l = fake_limits(f);
    for (int i = 0; i < 9; i++) /* 100% failures, but below min_requests */
        attempt(l, LIMITS_FAILURE);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    f->now += 11000; /* the window slides past them */
    for (int i = 0; i < 5; i++) {
        attempt(l, LIMITS_SUCCESS);
        f->now += 500;
    }
    for (int i = 0; i < 4; i++)
        attempt(l, LIMITS_FAILURE);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED); /* 4 / 9: below the ratio */
    attempt(l, LIMITS_FAILURE);                                   /* 5 / 10 */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN);
    assert_int_equal(stats(l, 0).opened, 1);
}

static void ratio_ignores_old_buckets(void **state)
{
    fx_t *f = *state;
    f->prov[0].breaker = (config_breaker_t){
        .failures = 0, .failure_ratio = 0.5, .window_s = 5, .min_requests = 4, .cooldown_s = 1};
    limits_t *l = fake_limits(f);
    attempt(l, LIMITS_FAILURE);
    attempt(l, LIMITS_FAILURE);
    attempt(l, LIMITS_FAILURE);
    f->now += 6000;
    attempt(l, LIMITS_SUCCESS);
    attempt(l, LIMITS_SUCCESS);
    attempt(l, LIMITS_SUCCESS);
    attempt(l, LIMITS_FAILURE); /* 1 / 4 in the window; 4 / 7 had the old ones counted */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    attempt(l, LIMITS_FAILURE); /* 2 / 5 */
    attempt(l, LIMITS_FAILURE); /* 3 / 6 */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN);
}

static void cooldown_probe_then_close_or_reopen(void **state)
{
    fx_t *f = *state;
    f->prov[0].breaker = (config_breaker_t){
        .failures = 2, .failure_ratio = 0, .window_s = 0, .min_requests = 0, .cooldown_s = 10};
    limits_t *l = fake_limits(f);
    bool probe = true;
    attempt(l, LIMITS_FAILURE);
    attempt(l, LIMITS_FAILURE);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN);
    f->now += 9999;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_BREAKER_OPEN);
    assert_false(probe);
    f->now += 1;
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_HALF_OPEN);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_true(probe);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_BREAKER_OPEN); /* exactly one probe */
    limits_finish(l, 0, LIMITS_FAILURE);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN); /* another cooldown */
    f->now += 5000;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_BREAKER_OPEN);
    f->now += 5000;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_true(probe);
    limits_finish(l, 0, LIMITS_NEUTRAL); /* cancelled probe: decides nothing, frees the slot */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_HALF_OPEN);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_true(probe);
    limits_finish(l, 0, LIMITS_SUCCESS);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_false(probe);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    limits_finish(l, 0, LIMITS_SUCCESS);
    limits_finish(l, 0, LIMITS_SUCCESS);
    attempt(l, LIMITS_FAILURE); /* counters were reset on closing: one failure is not two */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    limits_stats_t st = stats(l, 0);
    assert_int_equal(st.opened, 2);
    assert_int_equal(st.half_opened, 2);
    assert_int_equal(st.closed, 1);
    assert_int_equal(st.in_flight, 0);
}

static void neutral_outcomes_count_for_nothing(void **state)
{
    fx_t *f = *state;
    f->prov[0].breaker = (config_breaker_t){
        .failures = 3, .failure_ratio = 0.5, .window_s = 10, .min_requests = 4, .cooldown_s = 10};
    limits_t *l = fake_limits(f);
    for (int i = 0; i < 50; i++)
        attempt(l, LIMITS_NEUTRAL);
    attempt(l, LIMITS_FAILURE);
    for (int i = 0; i < 50; i++)
        attempt(l, LIMITS_NEUTRAL);
    attempt(l, LIMITS_FAILURE);
    /* 2 failures, 0 successes: had the neutrals counted as requests, 2/102 < 0.5; as successes, the run
     * of failures would have been reset. Neither: the window has 2 < min_requests, the run is 2. */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    attempt(l, LIMITS_NEUTRAL);
    attempt(l, LIMITS_FAILURE); /* the run reaches 3 */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN);
}

static void bad_breaker_config_is_refused(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    f->prov[1].breaker.failure_ratio = 1.5;
    assert_null(limits_new(&f->loop, &f->cfg, NULL, err, sizeof err));
    assert_non_null(strstr(err, "beta"));
    assert_non_null(strstr(err, "failure_ratio"));
    f->prov[1].breaker.failure_ratio = 0.5;
    f->prov[1].rpm = -1;
    assert_null(limits_new(&f->loop, &f->cfg, NULL, err, sizeof err));
    assert_non_null(strstr(err, "rpm"));
}

/* ---- concurrency -------------------------------------------------------------------------- */

static void max_concurrency(void **state)
{
    fx_t *f = *state;
    f->prov[0].max_concurrency = 2;
    f->prov[0].breaker = (config_breaker_t){.failures = 1, .cooldown_s = 5};
    limits_t *l = fake_limits(f);
    bool probe;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_CONCURRENCY);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_CONCURRENCY);
    assert_int_equal(limits_try_start(l, 1, &probe), LIMITS_OK); /* 0 = unlimited, per provider */
    assert_int_equal(stats(l, 0).in_flight, 2);
    limits_finish(l, 0, LIMITS_SUCCESS);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_CONCURRENCY);
    limits_stats_t st = stats(l, 0);
    assert_int_equal(st.rejected_concurrency, 3);
    assert_int_equal(st.in_flight, 2);

    limits_finish(l, 0, LIMITS_FAILURE); /* opens (failures = 1); one attempt still in flight */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_OPEN);
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_BREAKER_OPEN);
    f->now += 5000;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK); /* the probe, 2 in flight again */
    assert_true(probe);
    limits_finish(l, 0, LIMITS_SUCCESS); /* closes */
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
    limits_finish(l, 0, LIMITS_SUCCESS);
    limits_finish(l, 1, LIMITS_SUCCESS);
    assert_int_equal(stats(l, 0).in_flight, 0);
    assert_int_equal(stats(l, 1).in_flight, 0);
}

static void full_provider_keeps_the_probe(void **state)
{
    fx_t *f = *state;
    f->prov[0].max_concurrency = 1;
    f->prov[0].breaker = (config_breaker_t){.failures = 1, .cooldown_s = 5};
    limits_t *l = fake_limits(f);
    bool probe;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK); /* a slow attempt */
    f->prov[0].max_concurrency = 2;                              /* limits reads the config on every call */
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    limits_finish(l, 0, LIMITS_FAILURE); /* opens */
    f->prov[0].max_concurrency = 1;      /* the slow one holds the only slot */
    f->now += 5000;
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_CONCURRENCY);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_HALF_OPEN);
    limits_finish(l, 0, LIMITS_NEUTRAL); /* the slow one is cancelled */
    assert_int_equal(limits_try_start(l, 0, &probe), LIMITS_OK);
    assert_true(probe); /* the probe was not used up by the refused start */
    limits_finish(l, 0, LIMITS_SUCCESS);
    assert_int_equal(limits_breaker_state(l, 0), BREAKER_CLOSED);
}

/* ---- local buckets (no store) ------------------------------------------------------------- */

static void local_rpm_without_store(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 5;
    limits_t *l = f->lim[0] = new_limits(f, NULL);
    bool now = false;
    assert_null(limits_rate_acquire(l, 1, 10, 0, on_answer, NULL, &now)); /* beta: no limits */
    assert_true(now);
    int granted = 0;
    ans_t last = {0};
    for (int i = 0; i < 7; i++) {
        last = acquire(f, l, 0, 10, 0);
        granted += last.granted;
    }
    assert_int_equal(granted, 5); /* the burst: one minute's worth */
    assert_false(last.granted);
    assert_in_range(last.retry_after_ms, 11000, 12000); /* one request per 12 s */
    limits_stats_t st = stats(l, 0);
    assert_int_equal(st.rate_limited, 2);
    assert_int_equal(st.redis_fallbacks, 0); /* no store configured: nothing fell back */
}

static void cancel_before_answer(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 1;
    limits_t *l = f->lim[0] = new_limits(f, NULL);
    ans_t a = {0}, b = {0};
    bool now;
    limits_wait_t *w = limits_rate_acquire(l, 0, 0, 0, on_answer, &a, &now);
    limits_rate_cancel(w); /* its answer was queued: never delivered */
    limits_wait_t *w2 = limits_rate_acquire(l, 0, 0, 5000, on_answer, &b, &now); /* waits ~60 s */
    assert_non_null(w2);
    RUN_UNTIL(f, false, 50);
    assert_int_equal(b.calls, 0);
    limits_rate_cancel(w2);
    RUN_UNTIL(f, false, 30);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
}

/* ---- fleet budgets in Redis --------------------------------------------------------------- */

/* A client that keeps `depth` acquires in flight on one limits_t until the stop time. */
typedef struct {
    fx_t *f;
    limits_t *l;
    int64_t stop_ms;
    int granted, denied, in_flight;
} asker_t;

static void asker_cb(void *ctx, bool granted, int64_t retry_after_ms);

static void asker_ask(asker_t *a)
{
    bool now;
    limits_wait_t *w = limits_rate_acquire(a->l, 0, 0, 0, asker_cb, a, &now);
    assert_non_null(w);
    a->in_flight++;
}

static void asker_cb(void *ctx, bool granted, int64_t retry_after_ms)
{
    asker_t *a = ctx;
    a->in_flight--;
    if (granted)
        a->granted++;
    else
        a->denied++;
    if (base_mono_ms() < a->stop_ms)
        asker_ask(a);
}

static void fleet_rpm_is_shared(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 60;
    f->lim[0] = new_limits(f, store_up(f, 0));
    f->lim[1] = new_limits(f, store_up(f, 1));
    int64_t t0 = base_mono_ms();
    asker_t a[2] = {{.f = f, .l = f->lim[0], .stop_ms = t0 + 3000},
                    {.f = f, .l = f->lim[1], .stop_ms = t0 + 3000}};
    for (int i = 0; i < 4; i++) {
        asker_ask(&a[0]);
        asker_ask(&a[1]);
    }
    RUN_UNTIL(f, a[0].in_flight == 0 && a[1].in_flight == 0, 6000);
    assert_int_equal(a[0].in_flight + a[1].in_flight, 0);
    /* Burst 60 at once, then one per second: the 61st at +1 s, 62nd at +2 s, the 63rd at +3 s, right
     * when asking stops — 62 or 63, never the 126 of two unshared budgets. */
    int total = a[0].granted + a[1].granted;
    assert_in_range(total, 62, 63);
    assert_true(a[0].granted > 0 && a[1].granted > 0);
    assert_true(a[0].denied > 100 && a[1].denied > 100); /* they really asked as fast as they could */
    assert_int_equal(stats(f->lim[0], 0).redis_fallbacks + stats(f->lim[1], 0).redis_fallbacks, 0);
    redisReply *r = sync_cmd(f, "PTTL pt:ratelimit:{alpha}:rpm");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_in_range(r->integer, 50000, 60000); /* the debt: a whole minute, expiring with it */
    freeReplyObject(r);
    r = sync_cmd(f, "EXISTS pt:ratelimit:{alpha}:tpm");
    assert_int_equal(r->integer, 0); /* no tpm limit: no key */
    freeReplyObject(r);
}

static void tpm_costs_and_refund(void **state)
{
    fx_t *f = *state;
    f->prov[0].tpm = 1000;
    f->lim[0] = new_limits(f, store_up(f, 0));
    f->lim[1] = new_limits(f, store_up(f, 1));
    assert_true(acquire(f, f->lim[0], 0, 400, 0).granted);
    assert_true(acquire(f, f->lim[1], 0, 400, 0).granted);
    ans_t a = acquire(f, f->lim[0], 0, 400, 0); /* 1200 > 1000 */
    assert_false(a.granted);
    assert_in_range(a.retry_after_ms, 11000, 12100); /* 200 tokens at 60 ms each */
    limits_tokens_correct(f->lim[1], 0, 400, 100);   /* the second call used only 100: 300 back */
    RUN_UNTIL(f, false, 50);
    assert_true(acquire(f, f->lim[0], 0, 400, 0).granted);  /* 400 + 100 + 400 = 900 */
    assert_false(acquire(f, f->lim[0], 0, 200, 0).granted); /* 1100 */
    limits_tokens_correct(f->lim[0], 0, 0, 500);            /* under-estimated: charge 500 more */
    RUN_UNTIL(f, false, 50);
    a = acquire(f, f->lim[1], 0, 50, 0);
    assert_false(a.granted);
    /* 1400 owed, capped at one whole bucket (1000): 50 tokens fit after 50 x 60 ms */
    assert_in_range(a.retry_after_ms, 2800, 3000);
    limits_tokens_correct(f->lim[0], 0, 5000, 0); /* a huge refund: the bucket is full, not more */
    RUN_UNTIL(f, false, 50);
    redisReply *r = sync_cmd(f, "EXISTS pt:ratelimit:{alpha}:tpm");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    int granted = 0;
    for (int i = 0; i < 5; i++)
        granted += acquire(f, f->lim[1], 0, 250, 0).granted;
    assert_int_equal(granted, 4);
    assert_true(acquire(f, f->lim[0], 0, 5000, 0).granted == false); /* over the burst: waits the bucket */
    assert_int_equal(stats(f->lim[0], 0).redis_fallbacks + stats(f->lim[1], 0).redis_fallbacks, 0);
}

static void rpm_and_tpm_together(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 3;
    f->prov[0].tpm = 100;
    f->lim[0] = new_limits(f, store_up(f, 0));
    assert_true(acquire(f, f->lim[0], 0, 90, 0).granted);
    assert_false(acquire(f, f->lim[0], 0, 20, 0).granted); /* tpm says no: rpm must not be charged */
    assert_true(acquire(f, f->lim[0], 0, 5, 0).granted);
    assert_true(acquire(f, f->lim[0], 0, 5, 0).granted);
    ans_t a = acquire(f, f->lim[0], 0, 0, 0); /* rpm: 3 used */
    assert_false(a.granted);
    assert_in_range(a.retry_after_ms, 19000, 20000);
    redisReply *r = sync_cmd(f, "GET pt:ratelimit:{alpha}:rpm");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

static void waiting_for_budget(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 60;
    limits_t *l = f->lim[0] = new_limits(f, store_up(f, 0));
    int64_t t0 = base_mono_ms();
    for (int i = 0; i < 60; i++)
        assert_true(acquire(f, l, 0, 0, 0).granted);
    int64_t t1 = base_mono_ms();
    ans_t a = acquire(f, l, 0, 0, 1500); /* the next one comes 1 s after the burst began */
    assert_true(a.granted);
    assert_in_range(a.at_ms - t0, 950, 1300);
    assert_true(a.at_ms - t1 >= 300); /* it did wait */
    int64_t t2 = base_mono_ms();
    a = acquire(f, l, 0, 0, 300); /* the next at +2 s: not within 300 ms */
    assert_false(a.granted);
    assert_in_range(a.at_ms - t2, 295, 600); /* answered once wait_ms passed (asked again then) */
    assert_in_range(a.retry_after_ms, 300, 800);
    limits_stats_t st = stats(l, 0);
    assert_int_equal(st.rate_waits, 2);
    assert_int_equal(st.rate_limited, 1);
    assert_int_equal(st.redis_fallbacks, 0);
}

static void redis_stopped_local_fallback(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 3;
    limits_t *l = f->lim[0] = new_limits(f, store_up(f, 0));
    assert_true(acquire(f, l, 0, 0, 0).granted); /* by Redis, charged locally too */
    assert_int_equal(stats(l, 0).redis_fallbacks, 0);
    redis_stop(f);
    RUN_UNTIL(f, !store_is_up(f->store[0]), 2000);
    assert_true(acquire(f, l, 0, 0, 0).granted); /* the local bucket: 2 of 3 left */
    assert_true(acquire(f, l, 0, 0, 0).granted);
    ans_t a = acquire(f, l, 0, 0, 0);
    assert_false(a.granted);
    assert_in_range(a.retry_after_ms, 19000, 20000);
    assert_int_equal(stats(l, 0).redis_fallbacks, 3);
}

static void frozen_redis_times_out_to_local(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 100;
    limits_t *l = f->lim[0] = new_limits(f, store_up(f, 0));
    assert_true(acquire(f, l, 0, 0, 0).granted);
    kill(f->pid, SIGSTOP); /* connected, but answering nothing */
    int64_t t0 = base_mono_ms();
    ans_t a = acquire(f, l, 0, 0, 0);
    kill(f->pid, SIGCONT);
    assert_true(a.granted);
    assert_in_range(a.at_ms - t0, LIMITS_REDIS_TIMEOUT_MS - 5, LIMITS_REDIS_TIMEOUT_MS + 200);
    assert_int_equal(stats(l, 0).redis_fallbacks, 1);
    RUN_UNTIL(f, false, 100);
    assert_true(acquire(f, l, 0, 0, 0).granted); /* Redis again */
    assert_int_equal(stats(l, 0).redis_fallbacks, 1);
}

static void flushed_script_cache(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 2;
    limits_t *l = f->lim[0] = new_limits(f, store_up(f, 0));
    store_stats_t st;
    uint64_t commands0;
    store_stats(f->store[0], &st);
    commands0 = st.commands;
    assert_true(acquire(f, l, 0, 0, 0).granted); /* SCRIPT LOAD + EVAL */
    assert_true(acquire(f, l, 0, 0, 0).granted); /* EVALSHA */
    redisReply *r = sync_cmd(f, "SCRIPT FLUSH");
    assert_non_null(r);
    freeReplyObject(r);
    assert_false(acquire(f, l, 0, 0, 0).granted); /* EVALSHA → NOSCRIPT → EVAL: Redis still decides */
    assert_false(acquire(f, l, 0, 0, 0).granted); /* SCRIPT LOAD + EVAL */
    assert_false(acquire(f, l, 0, 0, 0).granted); /* EVALSHA */
    assert_int_equal(stats(l, 0).redis_fallbacks, 0);
    store_stats(f->store[0], &st);
    assert_int_equal(st.commands - commands0, 2 + 1 + 2 + 2 + 1);
    assert_int_equal(st.requests, 5);
    assert_int_equal(st.errors, 0);
}

/* ---- store_eval itself -------------------------------------------------------------------- */

typedef struct {
    int calls, err;
    char errmsg[200];
    long long ints[STORE_EVAL_MAX_INTS];
    size_t n_ints;
} eval_res_t;

static void eval_cb(void *ctx, const store_eval_result_t *res)
{
    eval_res_t *o = ctx;
    o->calls++;
    o->err = res->err;
    snprintf(o->errmsg, sizeof o->errmsg, "%s", res->errmsg);
    o->n_ints = res->n_ints;
    memcpy(o->ints, res->ints, res->n_ints * sizeof *res->ints);
}

static eval_res_t run_eval(fx_t *f, const char *body, const store_bytes_t *keys, size_t nk,
                           const store_bytes_t *args, size_t na)
{
    eval_res_t o = {0};
    store_script_t *sc = store_script_add(f->store[0], body);
    assert_non_null(sc);
    assert_int_equal(store_eval(f->store[0], sc, keys, nk, args, na, 0, eval_cb, &o), STORE_OK);
    assert_int_equal(o.calls, 0);
    RUN_UNTIL(f, o.calls > 0, 3000);
    assert_int_equal(o.calls, 1);
    return o;
}

static void store_eval_primitive(void **state)
{
    fx_t *f = *state;
    store_up(f, 0);
    const char bin[] = {'k', '\0', 'x'};
    const store_bytes_t keys[1] = {STORE_BYTES(bin, 3)};
    const store_bytes_t args[2] = {STORE_BYTES("7", 1), STORE_BYTES("a\0b", 3)};
    eval_res_t o =
        run_eval(f, "redis.call('SET', KEYS[1], ARGV[2]) return {tonumber(ARGV[1]), #ARGV[2], #KEYS}", keys,
                 1, args, 2);
    assert_int_equal(o.err, STORE_OK);
    assert_int_equal(o.n_ints, 3);
    assert_int_equal(o.ints[0], 7);
    assert_int_equal(o.ints[1], 3); /* binary safe */
    assert_int_equal(o.ints[2], 1);
    redisReply *r = sync_cmd(f, "GET %b", bin, (size_t)3);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_memory_equal(r->str, "a\0b", 3);
    freeReplyObject(r);

    o = run_eval(f, "return 42", NULL, 0, NULL, 0);
    assert_int_equal(o.n_ints, 1);
    assert_int_equal(o.ints[0], 42);
    o = run_eval(f, "return 'text'", NULL, 0, NULL, 0);
    assert_int_equal(o.err, STORE_ERR_PROTOCOL);
    o = run_eval(f, "return {1, 'x'}", NULL, 0, NULL, 0);
    assert_int_equal(o.err, STORE_ERR_PROTOCOL);
    o = run_eval(f, "return redis.error_reply('BOOM it failed')", NULL, 0, NULL, 0);
    assert_int_equal(o.err, STORE_ERR_REDIS);
    assert_non_null(strstr(o.errmsg, "BOOM"));
    o = run_eval(f, "this is not lua", NULL, 0, NULL, 0);
    assert_int_equal(o.err, STORE_ERR_REDIS);

    store_script_t *sc = store_script_add(f->store[0], "return 1");
    assert_ptr_equal(sc, store_script_add(f->store[0], "return 1")); /* one handle per body */
    assert_null(store_script_add(f->store[0], ""));
    store_bytes_t many[STORE_EVAL_MAX_ARGS + 1];
    for (size_t i = 0; i < BASE_ARRAY_LEN(many); i++)
        many[i] = STORE_BYTES("x", 1);
    assert_int_equal(store_eval(f->store[0], sc, NULL, 0, many, BASE_ARRAY_LEN(many), 0, eval_cb, NULL),
                     STORE_ERR_INVALID);
    static char big[STORE_EVAL_MAX_BYTES + 1];
    const store_bytes_t huge = STORE_BYTES(big, sizeof big);
    assert_int_equal(store_eval(f->store[0], sc, &huge, 1, NULL, 0, 0, eval_cb, NULL), STORE_ERR_INVALID);
    assert_string_equal(store_key_prefix(f->store[0]), "pt");

    redis_stop(f); /* down: fails fast */
    RUN_UNTIL(f, !store_is_up(f->store[0]), 2000);
    assert_int_equal(store_eval(f->store[0], sc, NULL, 0, NULL, 0, 0, eval_cb, NULL), STORE_ERR_UNAVAILABLE);
}

static void free_with_requests_owed(void **state)
{
    fx_t *f = *state;
    f->prov[0].rpm = 10;
    f->prov[0].tpm = 1000;
    limits_t *l = f->lim[0] = new_limits(f, store_up(f, 0));
    ans_t a = {0};
    bool now;
    assert_non_null(limits_rate_acquire(l, 0, 10, 0, on_answer, &a, &now)); /* asking Redis */
    limits_tokens_correct(l, 0, 10, 5);
    limits_free(l); /* the teardown closes the store, which answers both; limits then goes */
    f->lim[0] = NULL;
    RUN_UNTIL(f, false, 20);
    assert_int_equal(a.calls, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT, stderr);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(consecutive_failures_open, setup, teardown),
        cmocka_unit_test_setup_teardown(failure_ratio_over_window, setup, teardown),
        cmocka_unit_test_setup_teardown(ratio_ignores_old_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(cooldown_probe_then_close_or_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(neutral_outcomes_count_for_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_breaker_config_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(max_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(full_provider_keeps_the_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(local_rpm_without_store, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_before_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(fleet_rpm_is_shared, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(tpm_costs_and_refund, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(rpm_and_tpm_together, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(waiting_for_budget, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(redis_stopped_local_fallback, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(frozen_redis_times_out_to_local, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(flushed_script_cache, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(store_eval_primitive, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(free_with_requests_owed, setup_redis, teardown),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
