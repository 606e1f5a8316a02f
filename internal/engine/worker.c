/* worker.c — the worker's life: build every client on one loop, feed Kafka messages to job_flow,
 * pause and resume consumption, tick retries and the heartbeat, and drain on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "engine/engine.h"
#include "engine/engine_int.h"
#include "log/log.h"

#define TICK_MS        50
#define RESUME_PERCENT 90

/* ---- metrics ---- */

static int metrics_register(engine_t *e)
{
    engine_metrics_t *m = &e->m;
    char labels[256];
    for (int s = JOB_STATUS_OK; s <= JOB_STATUS_EXPIRED; s++)
        for (int c = JOB_ERR_NONE; c <= JOB_ERR_INTERNAL; c++) {
            if ((s == JOB_STATUS_OK) != (c == JOB_ERR_NONE) ||
                (s == JOB_STATUS_EXPIRED) != (c == JOB_ERR_DEADLINE_EXCEEDED))
                continue;
            if (c == JOB_ERR_NONE)
                snprintf(labels, sizeof labels, "status=\"%s\"", job_status_name((job_status_t)s));
            else
                snprintf(labels, sizeof labels, "status=\"%s\",code=\"%s\"", job_status_name((job_status_t)s),
                         job_error_code_name((job_error_code_t)c));
            m->jobs[s][c] =
                metrics_counter("parley_jobs_total", "Jobs finished, by final status and error code", labels);
        }
    m->dead_letters = metrics_counter("parley_dead_letters_total", "Dead letters published", NULL);
    m->replies =
        metrics_counter("parley_replies_total", "Final replies published (delivery confirmed)", NULL);
    m->republished = metrics_counter("parley_replies_republished_total",
                                     "Redelivered jobs answered from the stored reply", NULL);
    m->in_flight =
        metrics_gauge("parley_jobs_in_flight", "Jobs held by the worker (running or queued)", NULL);
    m->paused = metrics_gauge("parley_consumer_paused", "1 while consumption is paused", NULL);
    m->redis_waits =
        metrics_counter("parley_redis_waits_total", "Redis operations retried after a failure", NULL);
    m->publish_retries =
        metrics_counter("parley_publish_retries_total", "Reply or dead letter publishes retried", NULL);
    m->stream_publish_failures = metrics_counter("parley_stream_publish_failures_total",
                                                 "Delta or reset messages that could not be published", NULL);
    static const char *const stages[STAGE_METRIC_COUNT] = {"queued", "history", "llm",
                                                           "store",  "publish", "total"};
    for (size_t i = 0; i < STAGE_METRIC_COUNT; i++) {
        snprintf(labels, sizeof labels, "stage=\"%s\"", stages[i]);
        m->stage_seconds[i] = metrics_histogram("parley_stage_duration_seconds", "Time spent per job stage",
                                                labels, metrics_latency_bounds, metrics_latency_n_bounds);
    }
    size_t n_outcomes = JOB_OUTCOME_SKIPPED + 1;
    m->attempts = base_calloc(e->cfg->llm.n_providers * n_outcomes + 1, sizeof *m->attempts);
    if (!m->attempts)
        return -1;
    for (size_t p = 0; p < e->cfg->llm.n_providers; p++)
        for (size_t o = 0; o < n_outcomes; o++) {
            snprintf(labels, sizeof labels, "provider=\"%s\",outcome=\"%s\"", e->cfg->llm.providers[p].name,
                     job_outcome_name((job_outcome_t)o));
            m->attempts[p * n_outcomes + o] =
                metrics_counter("parley_provider_attempts_total", "Provider attempts, by outcome", labels);
        }
    return 0;
}

/* ---- backpressure ---- */

void engine_update_backpressure(engine_t *e)
{
    if (!e->consumer || e->draining)
        return;
    size_t max = (size_t)e->cfg->worker.max_in_flight;
    bool want_pause;
    if (!e->redis_up)
        want_pause = true;
    else if (e->paused)
        want_pause = e->in_flight * 100 >= max * RESUME_PERCENT;
    else
        want_pause = e->in_flight >= max;
    if (want_pause == e->paused)
        return;
    e->paused = want_pause;
    metric_set(e->m.paused, want_pause);
    if (want_pause)
        kafka_consumer_pause_all(e->consumer);
    else
        kafka_consumer_resume_all(e->consumer);
}

/* ---- a job's end ---- */

static void engine_maybe_close(engine_t *e);

void engine_job_finished(engine_t *e, ejob_t *j)
{
    ejob_t *next = j->job ? conv_dequeue(&e->convs, j) : NULL;
    if (j->msg)
        kafka_message_done(j->msg, !j->abandoned);
    if (j->prev)
        j->prev->next = j->next;
    else
        e->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    job_prompt_release(j);
    free(j->reply);
    free(j->user_entry);
    free(j->assistant_entry);
    job_free(j->job);
    if (j->perr)
        job_error_free(j->perr);
    free(j->perr);
    free(j);
    e->in_flight--;
    metric_set(e->m.in_flight, (int64_t)e->in_flight);
    if (next && !e->closing) {
        /* The next turn of the conversation starts now that this one is in Redis. */
        engine_job_start(next);
    }
    engine_update_backpressure(e);
    if (e->draining)
        engine_maybe_close(e);
}

/* ---- client callbacks ---- */

static void on_assign(void *ctx, const kafka_tp_t *parts, size_t n)
{
    engine_t *e = ctx;
    e->assigned += n;
    if (e->admin)
        admin_set_check(e->admin, ADMIN_CHECK_ASSIGNED, e->assigned > 0);
    log_info("partitions assigned", LOG_I("count", n), LOG_I("total", e->assigned),
             LOG_S("topic", n ? parts[0].topic : ""));
}

static void on_revoke(void *ctx, const kafka_tp_t *parts, size_t n, bool lost)
{
    engine_t *e = ctx;
    e->assigned = e->assigned >= n ? e->assigned - n : 0;
    if (e->admin)
        admin_set_check(e->admin, ADMIN_CHECK_ASSIGNED, e->assigned > 0);
    log_warn(lost ? "partitions lost" : "partitions revoked", LOG_I("count", n), LOG_I("total", e->assigned),
             LOG_I("jobs_in_flight", e->in_flight));
}

static void on_kafka_error(void *ctx, bool fatal, int code, const char *text)
{
    engine_t *e = ctx;
    observe_kafka_error(e);
    if (fatal) {
        log_error("kafka consumer fatal error; stopping", LOG_I("code", code), LOG_S("error", text));
        e->exit_code = 1;
        raise(SIGTERM);
    }
    /* The kafka module logs every error itself. */
}

static void on_redis_state(void *ctx, bool up)
{
    engine_t *e = ctx;
    e->redis_up = up;
    if (e->admin)
        admin_set_check(e->admin, ADMIN_CHECK_REDIS, up);
    if (!up)
        log_warn("redis unreachable; pausing consumption until it is back");
    engine_update_backpressure(e);
    if (up)
        engine_retry_due(e, true);
}

static void on_log_flush(uv_check_t *c) { log_flush(); }

static void on_tick(uv_timer_t *t)
{
    engine_t *e = t->data;
    if (e->admin)
        admin_heartbeat(e->admin);
    engine_retry_due(e, false);
}

/* ---- shutdown ---- */

static void on_client_closed(void *ctx)
{
    engine_t *e = ctx;
    e->open_clients--;
    if (e->open_clients > 0)
        return;
    /* Everything on the loop is closed but our own handles. */
    uv_close((uv_handle_t *)&e->tick, NULL);
    uv_close((uv_handle_t *)&e->log_flusher, NULL);
    uv_close((uv_handle_t *)&e->drain_timer, NULL);
    uv_close((uv_handle_t *)&e->sigterm, NULL);
    uv_close((uv_handle_t *)&e->sigint, NULL);
    observe_close(e);
}

static void on_consumer_closed(void *ctx)
{
    engine_t *e = ctx;
    e->consumer = NULL;
    /* Replies are all delivered by now (every job finished or was abandoned); flush what remains. */
    kafka_producer_close(e->producer, 5000, on_client_closed, e);
    e->producer = NULL;
    limits_free(e->limits); /* every router call has ended: no rate request is pending from a job */
    e->limits = NULL;
    store_close(e->store, on_client_closed, e);
    e->store = NULL;
    http_client_close(e->http, on_client_closed, e);
    e->http = NULL;
}

static void engine_close_clients(engine_t *e)
{
    if (e->closing)
        return;
    e->closing = true;
    uv_timer_stop(&e->drain_timer);
    log_info("drained; closing", LOG_I("peak_in_flight", e->peak_in_flight));
    e->open_clients = 3;
    kafka_consumer_close(e->consumer, on_consumer_closed, e);
}

static void engine_maybe_close(engine_t *e)
{
    if (e->in_flight == 0)
        engine_close_clients(e);
}

static void on_drain_timeout(uv_timer_t *t)
{
    engine_t *e = t->data;
    log_warn("drain timeout passed; abandoning the jobs still held", LOG_I("jobs", e->in_flight));
    engine_abandon_all(e);
    engine_close_clients(e);
}

static void on_signal(uv_signal_t *s, int signum)
{
    engine_t *e = s->data;
    if (++e->signals > 1) {
        log_error("second signal: exiting at once", LOG_I("signal", signum),
                  LOG_I("jobs_in_flight", e->in_flight));
        e->exit_code = 1;
        uv_stop(&e->loop);
        return;
    }
    log_info("signal: draining in-flight jobs", LOG_I("signal", signum),
             LOG_I("jobs_in_flight", e->in_flight),
             LOG_I("drain_timeout_ms", e->cfg->worker.drain_timeout_ms));
    e->draining = true;
    kafka_consumer_stop_consuming(e->consumer);
    uv_timer_start(&e->drain_timer, on_drain_timeout, (uint64_t)e->cfg->worker.drain_timeout_ms, 0);
    engine_maybe_close(e);
}

/* ---- set-up ---- */

static int clients_open(engine_t *e, char *err, size_t errlen)
{
    const config_t *cfg = e->cfg;
    http_client_options_t ho;
    http_client_options_init(&ho);
    e->http = http_client_new(&e->loop, &ho, err, errlen);
    if (!e->http)
        return -1;

    store_options_t so;
    store_options_init(&so);
    so.url = secret_reveal(&cfg->redis.url);
    so.key_prefix = cfg->redis.key_prefix;
    so.ca_file = cfg->redis.ca_file;
    so.idempotency_ttl_s = cfg->redis.idempotency_ttl_s;
    so.history_max_messages = cfg->history.max_messages;
    so.history_max_len = cfg->history.max_len;
    so.history_ttl_s = cfg->history.ttl_s;
    so.history_append = cfg->history.append;
    so.max_entry_bytes = cfg->history.max_entry_bytes;
    so.connect_timeout_ms = cfg->redis.connect_timeout_ms;
    so.command_timeout_ms = cfg->redis.command_timeout_ms;
    so.on_state = on_redis_state;
    so.ctx = e;
    e->store = store_new(&e->loop, &so, err, errlen);
    if (!e->store)
        return -1;
    e->limits = limits_new(&e->loop, cfg, e->store, err, errlen);
    if (!e->limits)
        return -1;
    e->router = router_new(&e->loop, cfg, e->http, e->limits, err, errlen);
    if (!e->router)
        return -1;
    for (size_t i = 0; i < cfg->llm.n_providers; i++)
        if (!cfg->llm.providers[i].tls_verify)
            log_warn(
                "INSECURE: TLS peer verification is OFF for this provider (tls_verify: false); anyone on "
                "the path can read its API key and answers",
                LOG_S("provider", cfg->llm.providers[i].name));

    kafka_producer_options_t po = {
        .brokers = cfg->kafka.brokers,
        .properties = cfg->kafka.properties,
        .n_properties = cfg->kafka.n_properties,
    };
    e->producer = kafka_producer_new(&e->loop, &po, err, errlen);
    if (!e->producer)
        return -1;

    const char *topics[] = {cfg->kafka.jobs_topic};
    kafka_consumer_options_t co = {
        .brokers = cfg->kafka.brokers,
        .group_id = cfg->kafka.group_id,
        .topics = topics,
        .n_topics = 1,
        .properties = cfg->kafka.properties,
        .n_properties = cfg->kafka.n_properties,
        .max_message_bytes = cfg->kafka.max_message_bytes,
        .drain_timeout_ms = cfg->worker.drain_timeout_ms,
    };
    kafka_consumer_callbacks_t cc = {
        .ctx = e,
        .on_message = engine_on_message,
        .on_assign = on_assign,
        .on_revoke = on_revoke,
        .on_error = on_kafka_error,
    };
    /* Consumption waits for Redis: start paused, on_redis_state resumes. */
    e->consumer = kafka_consumer_new(&e->loop, &co, &cc, err, errlen);
    if (!e->consumer)
        return -1;
    e->paused = true;
    kafka_consumer_pause_all(e->consumer);
    metric_set(e->m.paused, 1);
    return 0;
}

static int admin_open(engine_t *e, char *err, size_t errlen)
{
    if (!e->cfg->admin.enabled)
        return 0;
    admin_options_t ao = {.listen = e->cfg->admin.listen};
    e->admin = admin_start(&ao, err, errlen);
    if (!e->admin)
        return -1;
    admin_set_check(e->admin, ADMIN_CHECK_PROVIDERS, e->cfg->llm.n_providers > 0);
    return 0;
}

int engine_worker_run(const config_t *cfg)
{
    engine_t *e = base_calloc(1, sizeof *e);
    if (!e) {
        log_error("out of memory");
        return 1;
    }
    char err[512] = "";
    int rc = 1;
    signal(SIGPIPE, SIG_IGN); /* a peer resetting a socket is an error to handle, not a reason to die */
    e->cfg = cfg;
    e->job_limits = job_limits_default();
    e->job_limits.max_message_bytes = (size_t)cfg->kafka.max_message_bytes;
    e->job_limits.max_history_entry_bytes = (size_t)cfg->history.max_entry_bytes;
    if (uv_loop_init(&e->loop) != 0) {
        free(e);
        return 1;
    }
    if (conv_map_init(&e->convs) != 0 || metrics_register(e) != 0) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_init(&e->loop, &e->drain_timer);
    uv_signal_init(&e->loop, &e->sigterm);
    uv_signal_init(&e->loop, &e->sigint);
    e->tick.data = e->drain_timer.data = e->sigterm.data = e->sigint.data = e;
    if (admin_open(e, err, sizeof err) != 0 || clients_open(e, err, sizeof err) != 0)
        goto out;
    if (observe_start(e) != 0) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    uv_timer_start(&e->tick, on_tick, TICK_MS, TICK_MS);
    uv_check_init(&e->loop, &e->log_flusher);
    uv_check_start(&e->log_flusher, on_log_flush);
    uv_unref((uv_handle_t *)&e->log_flusher);
    log_batch(true);
    uv_signal_start(&e->sigterm, on_signal, SIGTERM);
    uv_signal_start(&e->sigint, on_signal, SIGINT);
    log_info("worker started", LOG_S("version", PARLEY_VERSION), LOG_S("group_id", cfg->kafka.group_id),
             LOG_S("jobs_topic", cfg->kafka.jobs_topic), LOG_I("providers", cfg->llm.n_providers),
             LOG_I("max_in_flight", cfg->worker.max_in_flight),
             LOG_I("admin_port", e->admin ? admin_port(e->admin) : 0));
    uv_run(&e->loop, UV_RUN_DEFAULT);
    log_batch(false);
    rc = e->exit_code;
    if (rc != 0) /* a second signal or a fatal error: exit now, the OS reclaims the rest */
        return rc;
    log_info("worker stopped", LOG_I("peak_in_flight", e->peak_in_flight));
    admin_stop(e->admin);
    router_free(e->router);
    conv_map_free(&e->convs);
    free(e->m.attempts);
    observe_free(e);
    if (uv_loop_close(&e->loop) != 0)
        log_warn("loop closed with handles still open");
    free(e);
    return rc;
out:
    log_error("worker failed to start", LOG_S("error", err));
    /* A start-up failure exits the process; the OS reclaims what was opened. */
    return 1;
}
