/* observe.c — what an operator sees of the engine. A timer on the loop (every OBSERVE_MS) copies the
 * stats that live in the other modules (kafka, store, http, router, limits) into metrics, keeps one
 * lag and committed-offset series per assigned partition (dropped when the partition goes), sets the
 * /readyz providers check from the breakers and publishes the /status document; the admin thread only
 * reads the results. Also here: the per-provider metrics of a finished router call, the W3C trace
 * context of a job, and the test-only hook that blocks the loop. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/base.h"
#include "engine/engine_int.h"
#include "log/log.h"

#define OBSERVE_MS 1000

/* HTTP statuses with a series of their own; any other is counted in its class (1xx..5xx). */
static const int http_codes[OBSERVE_N_HTTP - 5] = {200, 400, 401, 403, 404, 408, 409, 413,
                                                   422, 429, 500, 502, 503, 504, 529};

static const char *const redis_error_kinds[4] = {"error", "timeout", "connect_failure", "disconnect"};

/* ---- set-up ---- */

static uint64_t fnv64(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* FNV-1a 64 of the effective configuration as config_dump prints it (secrets masked). */
static uint64_t config_hash(const config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    uint64_t h = 14695981039346656037ull;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return 0;
    int rc = config_dump(cfg, f);
    fclose(f);
    if (rc == 0 && text)
        h = fnv64(h, text, len);
    free(text);
    return rc == 0 ? h : 0;
}

static metric_t *provider_counter(observe_provider_t *op, const char *name, const char *help)
{
    return metrics_counter(name, help, op->label);
}

static metric_t *provider_histogram(observe_provider_t *op, const char *name, const char *help)
{
    return metrics_histogram(name, help, op->label, metrics_latency_bounds, metrics_latency_n_bounds);
}

static int providers_register(engine_t *e)
{
    engine_observe_t *o = &e->obs;
    size_t n = e->cfg->llm.n_providers;
    o->providers = base_calloc(n ? n : 1, sizeof *o->providers);
    if (!o->providers)
        return -1;
    for (size_t i = 0; i < n; i++) {
        observe_provider_t *op = &o->providers[i];
        char name[140];
        metrics_label_value(name, sizeof name, e->cfg->llm.providers[i].name);
        snprintf(op->label, sizeof op->label, "provider=\"%s\"", name);
        op->latency =
            provider_histogram(op, "parley_provider_latency_seconds",
                               "Provider attempt duration, from its start to its end (any outcome)");
        op->ttft = provider_histogram(
            op, "parley_provider_time_to_first_token_seconds",
            "Provider attempt time to the first token (first body byte when not streamed)");
        op->retries =
            provider_counter(op, "parley_provider_retries_total", "Requests sent again to a provider");
        op->tokens_in =
            provider_counter(op, "parley_provider_prompt_tokens_total", "Prompt (input) tokens of answers");
        op->tokens_out = provider_counter(op, "parley_provider_completion_tokens_total",
                                          "Completion (output) tokens of answers");
        op->cost = metrics_counter_float("parley_provider_cost_usd_total",
                                         "Cost of answers in USD (configured prices)", op->label);
        op->breaker = metrics_gauge("parley_provider_breaker_state",
                                    "Circuit breaker: 0 closed, 1 open, 2 half-open", op->label);
        op->rate_waits = provider_counter(op, "parley_provider_rate_limit_waits_total",
                                          "Requests that waited for rate budget");
        op->rate_limited = provider_counter(op, "parley_provider_rate_limited_total",
                                            "Rate budget requests answered not granted");
        op->rejected = provider_counter(op, "parley_provider_breaker_rejections_total",
                                        "Attempts refused by an open breaker");
        op->in_flight =
            metrics_gauge("parley_provider_requests_in_flight", "Provider requests in flight", op->label);
        if (!op->latency || !op->ttft || !op->retries || !op->tokens_in || !op->tokens_out || !op->cost ||
            !op->breaker || !op->rate_waits || !op->rate_limited || !op->rejected || !op->in_flight)
            return -1;
    }
    return 0;
}

static int engine_gauges_register(engine_t *e)
{
    engine_observe_t *o = &e->obs;
    char labels[160], v[96];
    metrics_label_value(v, sizeof v, PARLEY_VERSION);
    snprintf(labels, sizeof labels, "version=\"%s\"", v);
    o->build_info = metrics_gauge("parley_build_info", "Build information (always 1)", labels);
    metric_set(o->build_info, 1);
    o->hedges = metrics_counter("parley_hedges_total", "Provider attempts started by a hedge delay", NULL);
    o->provider_requests =
        metrics_counter("parley_router_requests_total",
                        "Provider HTTP requests started (all providers, retries included)", NULL);
    o->calls_in_flight = metrics_gauge("parley_router_calls_in_flight", "Jobs waiting on providers", NULL);
    o->requests_in_flight = metrics_gauge("parley_router_requests_in_flight",
                                          "Provider HTTP requests in flight (all providers)", NULL);
    o->http_in_flight = metrics_gauge("parley_http_transfers_in_flight", "HTTP transfers in flight", NULL);
    o->assigned =
        metrics_gauge("parley_consumer_assigned_partitions", "Partitions assigned to this worker", NULL);
    o->paused_partitions = metrics_gauge("parley_consumer_paused_partitions",
                                         "Assigned partitions behind the closed gate", NULL);
    o->rebalances = metrics_counter("parley_consumer_rebalances_total", "Consumer group rebalances", NULL);
    o->consumed =
        metrics_counter("parley_consumer_messages_total", "Kafka messages handed to the engine", NULL);
    o->duplicates = metrics_counter("parley_consumer_duplicates_total",
                                    "Redelivered messages already taken, skipped", NULL);
    o->commits = metrics_counter("parley_kafka_commits_total", "Offset commits that succeeded", NULL);
    o->commit_failures =
        metrics_counter("parley_kafka_commit_failures_total", "Offset commits that failed", NULL);
    o->kafka_errors = metrics_counter("parley_kafka_errors_total", "Kafka client errors reported", NULL);
    o->redis_up = metrics_gauge("parley_redis_up", "1 while Redis is reachable", NULL);
    o->redis_requests = metrics_counter("parley_redis_requests_total", "Redis requests sent", NULL);
    for (size_t i = 0; i < 4; i++) {
        snprintf(labels, sizeof labels, "kind=\"%s\"", redis_error_kinds[i]);
        o->redis_errors[i] = metrics_counter("parley_redis_errors_total", "Redis failures, by kind", labels);
    }
    return o->build_info && o->hedges && o->provider_requests && o->calls_in_flight &&
                   o->requests_in_flight && o->http_in_flight && o->assigned && o->paused_partitions &&
                   o->rebalances && o->consumed && o->duplicates && o->commits && o->commit_failures &&
                   o->kafka_errors && o->redis_up && o->redis_requests && o->redis_errors[0] &&
                   o->redis_errors[1] && o->redis_errors[2] && o->redis_errors[3]
               ? 0
               : -1;
}

static uint64_t rng_next(engine_observe_t *o)
{
    o->rng ^= o->rng >> 12;
    o->rng ^= o->rng << 25;
    o->rng ^= o->rng >> 27;
    return o->rng * 2685821657736338717ull;
}

static void on_block_signal(uv_signal_t *s, int signum)
{
    engine_t *e = s->data;
    (void)signum;
    log_warn("test hook: blocking the loop", LOG_I("ms", e->obs.block_ms));
    uv_sleep((unsigned)e->obs.block_ms);
}

static void observe_tick(uv_timer_t *t);

int observe_start(engine_t *e)
{
    engine_observe_t *o = &e->obs;
    if (getrandom(&o->rng, sizeof o->rng, GRND_NONBLOCK) != (ssize_t)sizeof o->rng)
        o->rng = base_mono_ns() ^ ((uint64_t)base_wall_ms() << 20);
    o->rng |= 1;
    o->config_hash = config_hash(e->cfg);
    buf_init(&o->status, 0);
    if (engine_gauges_register(e) != 0 || providers_register(e) != 0)
        return -1;
    uv_timer_init(&e->loop, &o->timer);
    o->timer.data = e;
    uv_timer_start(&o->timer, observe_tick, 0, OBSERVE_MS);
    const char *block = getenv("PARLEY_TEST_BLOCK_LOOP_MS");
    if (block && *block) {
        char *end;
        long ms = strtol(block, &end, 10);
        if (*end || ms <= 0 || ms > 600000) {
            log_warn("PARLEY_TEST_BLOCK_LOOP_MS ignored: expected 1..600000", LOG_S("value", block));
        } else {
            o->block_ms = ms;
            uv_signal_init(&e->loop, &o->block_signal);
            o->block_signal.data = e;
            uv_signal_start(&o->block_signal, on_block_signal, SIGUSR2);
            o->block_started = true;
            log_warn("test hook armed: SIGUSR2 blocks the loop", LOG_I("ms", ms));
        }
    }
    return 0;
}

void observe_close(engine_t *e)
{
    uv_close((uv_handle_t *)&e->obs.timer, NULL);
    if (e->obs.block_started)
        uv_close((uv_handle_t *)&e->obs.block_signal, NULL);
}

void observe_free(engine_t *e)
{
    engine_observe_t *o = &e->obs;
    for (size_t i = 0; i < o->n_parts; i++)
        free(o->parts[i].topic);
    free(o->parts);
    free(o->infos);
    free(o->providers);
    buf_free(&o->status);
}

/* ---- per job ---- */

void observe_stage(engine_t *e, stage_metric_t stage, int64_t ms)
{
    if (ms >= 0)
        metric_observe(e->m.stage_seconds[stage], (double)ms / 1000.0);
}

void observe_kafka_error(engine_t *e) { metric_inc(e->obs.kafka_errors); }

static const char *const http_class_labels[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

/* The series of one HTTP status of provider p (registered on its first use); NULL when out of range. */
static metric_t *http_series(engine_t *e, size_t p, int status)
{
    if (status < 100 || status > 599)
        return NULL;
    size_t slot = OBSERVE_N_HTTP - 5 + (size_t)(status / 100 - 1);
    for (size_t i = 0; i < OBSERVE_N_HTTP - 5; i++)
        if (http_codes[i] == status)
            slot = i;
    observe_provider_t *op = &e->obs.providers[p];
    if (!op->http[slot]) {
        char labels[200], code[8];
        if (slot < OBSERVE_N_HTTP - 5)
            snprintf(code, sizeof code, "%d", status);
        else
            snprintf(code, sizeof code, "%s", http_class_labels[slot - (OBSERVE_N_HTTP - 5)]);
        snprintf(labels, sizeof labels, "%s,code=\"%s\"", op->label, code);
        op->http[slot] =
            metrics_counter("parley_provider_http_responses_total",
                            "Final HTTP status of provider attempts (listed codes, else the class)", labels);
    }
    return op->http[slot];
}

static const config_provider_t *provider_of(engine_t *e, const char *name, size_t *idx)
{
    const config_provider_t *p = name ? config_provider_find(e->cfg, name) : NULL;
    if (p)
        *idx = (size_t)(p - e->cfg->llm.providers);
    return p;
}

void observe_router_done(engine_t *e, const router_result_t *res)
{
    size_t n_outcomes = JOB_OUTCOME_SKIPPED + 1, p;
    for (size_t i = 0; i < res->n_attempts; i++) {
        const job_attempt_t *a = &res->attempts[i];
        if (a->outcome == JOB_OUTCOME_SKIPPED && a->reason && strcmp(a->reason, "not_needed") == 0)
            continue; /* never started: not an attempt */
        if (!provider_of(e, a->provider, &p))
            continue;
        metric_inc(e->m.attempts[p * n_outcomes + a->outcome]);
        if (a->outcome == JOB_OUTCOME_SKIPPED)
            continue;
        observe_provider_t *op = &e->obs.providers[p];
        if (a->latency_ms >= 0)
            metric_observe(op->latency, (double)a->latency_ms / 1000.0);
        if (a->first_token_ms >= 0)
            metric_observe(op->ttft, (double)a->first_token_ms / 1000.0);
        if (a->retries > 0)
            metric_add(op->retries, (uint64_t)a->retries);
        metric_inc(http_series(e, p, a->http_status));
    }
    if (res->ok && provider_of(e, res->provider, &p)) {
        observe_provider_t *op = &e->obs.providers[p];
        if (res->usage.has) {
            metric_add(op->tokens_in, res->usage.prompt_tokens > 0 ? (uint64_t)res->usage.prompt_tokens : 0);
            metric_add(op->tokens_out,
                       res->usage.completion_tokens > 0 ? (uint64_t)res->usage.completion_tokens : 0);
        }
        if (res->has_cost)
            metric_add_float(op->cost, res->cost_usd);
    }
}

/* ---- trace context ---- */

static bool lower_hex(const char *p, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
        any = any || p[i] != '0';
    }
    return any || !nonzero;
}

/* 0 when v (len bytes) is a valid W3C traceparent; its trace id, parent id and flags are copied out. */
static int traceparent_parse(const char *v, size_t len, char trace_id[33], char parent_id[17], char flags[3])
{
    /* version "-" trace-id "-" parent-id "-" flags; a later version may append "-" fields. */
    if (len < 55 || !lower_hex(v, 2, false) || memcmp(v, "ff", 2) == 0 || v[2] != '-' || v[35] != '-' ||
        v[52] != '-')
        return -1;
    if (memcmp(v, "00", 2) == 0 ? len != 55 : (len > 55 && v[55] != '-'))
        return -1;
    if (!lower_hex(v + 3, 32, true) || !lower_hex(v + 36, 16, true) || !lower_hex(v + 53, 2, false))
        return -1;
    memcpy(trace_id, v + 3, 32);
    trace_id[32] = '\0';
    memcpy(parent_id, v + 36, 16);
    parent_id[16] = '\0';
    memcpy(flags, v + 53, 2);
    flags[2] = '\0';
    return 0;
}

/* n random lowercase hex digits, not all zero. */
static void random_hex(engine_observe_t *o, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    do {
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++, v >>= 4) {
            if (i % 16 == 0)
                v = rng_next(o);
            out[i] = hex[v & 15];
        }
    } while (!lower_hex(out, n, true));
    out[n] = '\0';
}

/* tracestate: at most 512 visible ASCII characters (or spaces), nothing that could end a header. */
static bool tracestate_ok(const char *v, size_t len)
{
    if (len == 0 || len > ENGINE_TRACESTATE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (v[i] < 0x20 || v[i] > 0x7e)
            return false;
    return true;
}

/* j->traceparent = "00-<trace>-<parent>-<flags>". */
static void traceparent_write(ejob_t *j, const char *trace, const char *parent, const char *flags)
{
    const char *parts[] = {"00-", trace, "-", parent, "-", flags};
    base_join(j->traceparent, sizeof j->traceparent, parts, BASE_ARRAY_LEN(parts));
}

void engine_trace_init(ejob_t *j)
{
    char trace[33], parent[17], flags[3];
    const void *v = NULL;
    size_t len = 0;
    j->tracestate = NULL;
    j->tracestate_len = 0;
    if (kafka_message_header(j->msg, "traceparent", &v, &len) == 0 &&
        traceparent_parse(v, len, trace, parent, flags) == 0) {
        traceparent_write(j, trace, parent, flags);
        if (kafka_message_header(j->msg, "tracestate", &v, &len) == 0 && tracestate_ok(v, len)) {
            j->tracestate = v;
            j->tracestate_len = len;
        }
        return;
    }
    random_hex(&j->e->obs, trace, 32);
    random_hex(&j->e->obs, parent, 16);
    traceparent_write(j, trace, parent, "00");
}

/* ---- the tick ---- */

static observe_partition_t *partition_series(engine_t *e, const kafka_partition_info_t *pi)
{
    engine_observe_t *o = &e->obs;
    for (size_t i = 0; i < o->n_parts; i++)
        if (o->parts[i].partition == pi->partition && strcmp(o->parts[i].topic, pi->topic) == 0)
            return &o->parts[i];
    if (o->n_parts == o->cap_parts) {
        size_t cap = o->cap_parts ? 2 * o->cap_parts : 16;
        observe_partition_t *np = base_realloc(o->parts, cap * sizeof *np);
        if (!np)
            return NULL;
        o->parts = np;
        o->cap_parts = cap;
    }
    observe_partition_t *s = &o->parts[o->n_parts];
    char topic[300], labels[360];
    metrics_label_value(topic, sizeof topic, pi->topic);
    snprintf(labels, sizeof labels, "topic=\"%s\",partition=\"%d\"", topic, (int)pi->partition);
    s->topic = base_strdup(pi->topic);
    s->partition = pi->partition;
    s->lag = metrics_gauge("parley_consumer_lag_messages",
                           "High watermark minus the next offset to commit, per assigned partition", labels);
    s->committed = metrics_gauge(
        "parley_consumer_committed_offset",
        "Next offset to commit (the finished prefix; -1 before the first message), per assigned partition",
        labels);
    if (!s->topic || !s->lag || !s->committed) {
        free(s->topic);
        metrics_unregister(s->lag);
        metrics_unregister(s->committed);
        return NULL;
    }
    o->n_parts++;
    return s;
}

static int64_t partition_lag(const kafka_partition_info_t *pi)
{
    if (pi->high_watermark == 0)
        return 0; /* an empty partition */
    if (pi->high_watermark < 0 || pi->committable < 0)
        return -1;
    return pi->high_watermark > pi->committable ? pi->high_watermark - pi->committable : 0;
}

/* Refreshes the partitions' series and their /status entries; drops the series of partitions gone. */
static size_t observe_partitions(engine_t *e, buf_t *st)
{
    engine_observe_t *o = &e->obs;
    size_t n = e->consumer ? kafka_consumer_partitions(e->consumer, o->infos, o->cap_infos) : 0;
    if (n > o->cap_infos) {
        kafka_partition_info_t *ni = base_realloc(o->infos, n * sizeof *ni);
        if (ni) {
            o->infos = ni;
            o->cap_infos = n;
        }
        n = kafka_consumer_partitions(e->consumer, o->infos, o->cap_infos);
        if (n > o->cap_infos)
            n = o->cap_infos;
    }
    for (size_t i = 0; i < o->n_parts; i++)
        o->parts[i].seen = false;
    buf_append_str(st, "\"assignment\":[");
    for (size_t i = 0; i < n; i++) {
        const kafka_partition_info_t *pi = &o->infos[i];
        observe_partition_t *s = partition_series(e, pi);
        int64_t lag = partition_lag(pi);
        if (s) {
            s->seen = true;
            if (lag >= 0)
                metric_set(s->lag, lag);
            metric_set(s->committed, pi->committable);
        }
        buf_printf(
            st,
            "%s{\"topic\":\"%s\",\"partition\":%d,\"committed\":%lld,\"high_watermark\":%lld,\"lag\":%lld,"
            "\"held\":%zu,\"paused\":%s,\"revoking\":%s}",
            i ? "," : "", pi->topic, (int)pi->partition, (long long)pi->committable,
            (long long)pi->high_watermark, (long long)lag, pi->held, pi->paused ? "true" : "false",
            pi->revoking ? "true" : "false");
    }
    buf_append_str(st, "]");
    size_t kept = 0;
    for (size_t i = 0; i < o->n_parts; i++) {
        if (o->parts[i].seen) {
            o->parts[kept++] = o->parts[i];
            continue;
        }
        metrics_unregister(o->parts[i].lag);
        metrics_unregister(o->parts[i].committed);
        free(o->parts[i].topic);
    }
    o->n_parts = kept;
    return n;
}

static void observe_kafka(engine_t *e)
{
    engine_observe_t *o = &e->obs;
    if (!e->consumer)
        return;
    kafka_consumer_stats_t ks;
    kafka_consumer_get_stats(e->consumer, &ks);
    metric_set(o->assigned, (int64_t)ks.assigned);
    metric_set(o->paused_partitions, (int64_t)ks.paused);
    metric_counter_set(o->rebalances, ks.rebalances);
    metric_counter_set(o->consumed, ks.messages);
    metric_counter_set(o->duplicates, ks.duplicates);
    metric_counter_set(o->commits, ks.commits);
    metric_counter_set(o->commit_failures, ks.commit_failures);
}

static void observe_clients(engine_t *e)
{
    engine_observe_t *o = &e->obs;
    if (e->store) {
        store_stats_t ss;
        store_stats(e->store, &ss);
        metric_set(o->redis_up, ss.up);
        metric_counter_set(o->redis_requests, ss.requests);
        uint64_t errs[4] = {ss.errors, ss.timeouts, ss.connect_failures, ss.disconnects};
        for (size_t i = 0; i < 4; i++)
            metric_counter_set(o->redis_errors[i], errs[i]);
    }
    if (e->http) {
        http_stats_t hs;
        http_client_stats(e->http, &hs);
        metric_set(o->http_in_flight, (int64_t)hs.in_flight);
    }
    if (e->router) {
        router_stats_t rs;
        router_get_stats(e->router, &rs);
        metric_counter_set(o->hedges, rs.hedges);
        metric_counter_set(o->provider_requests, rs.requests);
        metric_set(o->calls_in_flight, (int64_t)rs.calls_in_flight);
        metric_set(o->requests_in_flight, (int64_t)rs.attempts_in_flight);
    }
}

/* Breakers and limits per provider; returns whether one provider at least is not open-circuited. */
static bool observe_providers(engine_t *e, buf_t *st)
{
    bool any_usable = false;
    buf_append_str(st, ",\"providers\":[");
    for (size_t p = 0; p < e->cfg->llm.n_providers; p++) {
        observe_provider_t *op = &e->obs.providers[p];
        breaker_state_t b = e->limits ? limits_breaker_state(e->limits, p) : BREAKER_CLOSED;
        limits_stats_t ls = {0};
        if (e->limits)
            limits_provider_stats(e->limits, p, &ls);
        any_usable = any_usable || b != BREAKER_OPEN;
        metric_set(op->breaker, (int64_t)b);
        metric_counter_set(op->rate_waits, ls.rate_waits);
        metric_counter_set(op->rate_limited, ls.rate_limited);
        metric_counter_set(op->rejected, ls.rejected_open);
        metric_set(op->in_flight, (int64_t)ls.in_flight);
        buf_printf(st, "%s{\"name\":\"%s\",\"breaker\":\"%s\",\"in_flight\":%zu}", p ? "," : "",
                   e->cfg->llm.providers[p].name, limits_breaker_state_name(b), ls.in_flight);
    }
    buf_append_str(st, "]");
    return any_usable;
}

static void observe_tick(uv_timer_t *t)
{
    engine_t *e = t->data;
    engine_observe_t *o = &e->obs;
    buf_t *st = &o->status;
    buf_reset(st);
    buf_printf(st, "{\"version\":\"%s\",\"config_hash\":\"fnv1a64:%016" PRIx64 "\",\"group_id\":\"%s\",",
               PARLEY_VERSION, o->config_hash, e->cfg->kafka.group_id);
    size_t n = observe_partitions(e, st);
    observe_kafka(e);
    observe_clients(e);
    bool usable = observe_providers(e, st);
    router_stats_t rs = {0};
    if (e->router)
        router_get_stats(e->router, &rs);
    buf_printf(st,
               ",\"assigned_partitions\":%zu,\"jobs_in_flight\":%zu,\"provider_requests_in_flight\":%zu,"
               "\"redis_up\":%s,\"paused\":%s,\"draining\":%s}\n",
               n, e->in_flight, rs.attempts_in_flight, e->redis_up ? "true" : "false",
               e->paused ? "true" : "false", e->draining ? "true" : "false");
    if (!e->admin)
        return;
    admin_set_check(e->admin, ADMIN_CHECK_PROVIDERS, usable);
    if (st->data && st->len)
        admin_publish_status(e->admin, st->data);
}
