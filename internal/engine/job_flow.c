/* job_flow.c — one job's state machine: parse → (dead letter) | idempotency + history → providers →
 * MULTI/EXEC → publish → finished. Every path ends in a published reply or dead letter; Redis and
 * publish failures wait and retry (bounded by redis.unavailable_timeout_ms for Redis). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "engine/engine_int.h"
#include "log/log.h"

#define RETRY_REDIS_MS       250
#define RETRY_PUBLISH_MIN_MS 200
#define RETRY_PUBLISH_MAX_MS 5000
#define RETRY_PARSE_MS       100

static void job_begin(ejob_t *j);
static void job_publish(ejob_t *j);
static void job_store(ejob_t *j);

static const char *job_id_of(const ejob_t *j) { return j->job ? j->job->job_id : j->perr->job_id; }
static const char *conv_id_of(const ejob_t *j)
{
    return j->job ? j->job->conversation_id : j->perr->conversation_id;
}

static void job_log_fields_warn(const ejob_t *j, const char *msg, const char *detail)
{
    log_warn(msg, LOG_S("job_id", job_id_of(j) ? job_id_of(j) : ""),
             LOG_S("conversation_id", conv_id_of(j) ? conv_id_of(j) : ""),
             LOG_S("detail", detail ? detail : ""));
}

/* An abandoned job (drain timeout) is freed once no callback is owed to it any more. */
static void job_release_if_idle(ejob_t *j)
{
    if (j->awaiting == 0)
        engine_job_finished(j->e, j);
}

/* A store or producer callback of j arrived: false when j was abandoned (then it is freed once
 * nothing more is owed to it), so the callback must do nothing else. */
static bool job_callback_arrived(ejob_t *j)
{
    j->awaiting--;
    if (!j->abandoned)
        return true;
    job_release_if_idle(j);
    return false;
}

/* Schedules op again after delay_ms; the engine's tick runs it. */
static void job_wait(ejob_t *j, ejob_op_t op, int64_t delay_ms)
{
    j->stage = STAGE_WAIT;
    j->retry_op = op;
    j->retry_at_ms = base_mono_ms() + delay_ms;
    j->e->jobs_may_wait = true;
}

/* ---- final replies ---- */

static void reply_set(ejob_t *j, char *json, size_t len)
{
    free(j->reply);
    j->reply = json;
    j->reply_len = len;
}

/* Makes json (NULL when encoding ran out of memory: -1) the job's final and counts it. */
static int reply_adopt(ejob_t *j, char *json, size_t len, job_status_t status, job_error_code_t code)
{
    if (!json)
        return -1;
    reply_set(j, json, len);
    j->status = status;
    metric_inc(j->e->m.jobs[status][code]);
    return 0;
}

/* Encodes an error/expired final for j (with the provider attempts, if any). Also serves a dead
 * letter whose ids were readable. */
static int reply_error(ejob_t *j, job_status_t status, job_error_code_t code, const char *message,
                       const job_attempt_t *attempts, size_t n_attempts)
{
    job_reply_t r;
    job_reply_init(&r, job_id_of(j), conv_id_of(j));
    r.status = status;
    r.error_code = code;
    r.error_message = message;
    r.metadata_json = j->job ? j->job->metadata_json : j->perr->metadata_json;
    r.attempts = attempts;
    r.n_attempts = n_attempts;
    j->timing.total_ms = base_mono_ms() - j->received_ms;
    r.timing = j->timing;
    size_t len = 0;
    char *json = job_reply_encode(&r, &len); /* before the call: argument order is unspecified */
    return reply_adopt(j, json, len, status, code);
}

/* ---- dead letters ---- */

static void on_dead_letter_delivery(void *ctx, const kafka_delivery_t *d)
{
    ejob_t *j = ctx;
    if (!job_callback_arrived(j))
        return;
    if (d->err) {
        /* Publish again: the dead letter (or its error reply) must not be lost. */
        job_log_fields_warn(j, "dead letter publish failed; retrying", d->error);
        metric_inc(j->e->m.publish_retries);
        if (j->awaiting == 0)
            job_wait(j, OP_PUBLISH, RETRY_PUBLISH_MIN_MS);
        return;
    }
    if (j->awaiting == 0)
        engine_job_finished(j->e, j);
}

/* Produces the dead letter (original key, value and headers, plus parley's) and, when the ids are
 * readable, an error reply. */
static void dead_letter_publish(ejob_t *j)
{
    engine_t *e = j->e;
    kafka_message_t *m = j->msg;
    size_t n_orig = kafka_message_header_count(m);
    kafka_header_t *h = base_calloc(n_orig + 6, sizeof *h);
    if (!h) {
        job_wait(j, OP_PUBLISH, RETRY_PUBLISH_MIN_MS);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < n_orig; i++)
        if (kafka_message_header_at(m, i, &h[n]) == 0 && strncmp(h[n].name, "parley-", 7) != 0)
            n++;
    char partition[16], offset[24];
    snprintf(partition, sizeof partition, "%d", (int)m->partition);
    snprintf(offset, sizeof offset, "%lld", (long long)m->offset);
    const char *code = job_error_code_name(j->perr->code);
    h[n++] = (kafka_header_t){"parley-error-code", code, strlen(code)};
    h[n++] = (kafka_header_t){"parley-error", j->perr->message, strlen(j->perr->message)};
    h[n++] = (kafka_header_t){"parley-source-topic", m->topic, strlen(m->topic)};
    h[n++] = (kafka_header_t){"parley-source-partition", partition, strlen(partition)};
    h[n++] = (kafka_header_t){"parley-source-offset", offset, strlen(offset)};
    h[n++] = (kafka_header_t){"parley-source-group", e->cfg->kafka.group_id, strlen(e->cfg->kafka.group_id)};
    j->stage = STAGE_DEAD_LETTER;
    int rc = kafka_produce(e->producer, e->cfg->kafka.dlq_topic, m->key, m->key_len, m->value, m->value_len,
                           h, n, on_dead_letter_delivery, j);
    free(h);
    if (rc != 0) {
        job_wait(j, OP_PUBLISH, RETRY_PUBLISH_MIN_MS);
        return;
    }
    j->awaiting++;
    metric_inc(e->m.dead_letters);
    if (!j->reply)
        return;
    const char *id = j->perr->job_id;
    kafka_header_t rh = {"job_id", id, strlen(id)};
    const char *conv = j->perr->conversation_id;
    if (kafka_produce(e->producer, j->reply_topic, conv, strlen(conv), j->reply, j->reply_len, &rh, 1,
                      on_dead_letter_delivery, j) == 0) {
        j->awaiting++;
        metric_inc(e->m.replies);
    }
}

static void dead_letter(ejob_t *j)
{
    engine_t *e = j->e;
    log_warn("job dead-lettered", LOG_S("job_id", j->perr->job_id ? j->perr->job_id : ""),
             LOG_S("conversation_id", j->perr->conversation_id ? j->perr->conversation_id : ""),
             LOG_S("code", job_error_code_name(j->perr->code)), LOG_S("error", j->perr->message),
             LOG_S("topic", j->msg->topic), LOG_I("partition", j->msg->partition),
             LOG_I("offset", j->msg->offset));
    if (!j->reply_topic)
        j->reply_topic = e->cfg->kafka.reply_topic;
    if (job_error_ids_readable(j->perr) &&
        reply_error(j, JOB_STATUS_ERROR, j->perr->code, j->perr->message, NULL, 0) != 0)
        log_error("out of memory encoding an error reply", LOG_S("job_id", j->perr->job_id));
    else if (!job_error_ids_readable(j->perr))
        metric_inc(e->m.jobs[JOB_STATUS_ERROR][j->perr->code]);
    dead_letter_publish(j);
}

/* Turns a parsed job that the worker cannot serve (route, reply topic) into a dead letter. */
static void dead_letter_valid_job(ejob_t *j, job_error_code_t code, const char *fmt, const char *what)
{
    job_t *job = j->job;
    if (!j->perr && !(j->perr = base_calloc(1, sizeof *j->perr))) {
        j->job = NULL;
        job_free(job);
        job_wait(j, OP_PARSE, RETRY_PARSE_MS); /* out of memory: parsed again later */
        return;
    }
    j->perr->code = code;
    snprintf(j->perr->message, sizeof j->perr->message, fmt, what);
    j->perr->job_id = base_strdup(job->job_id);
    j->perr->conversation_id = base_strdup(job->conversation_id);
    if (job->metadata_json)
        j->perr->metadata_json = base_strdup(job->metadata_json);
    j->job = NULL;
    job_free(job);
    dead_letter(j);
}

static bool reply_topic_allowed(const config_t *cfg, const char *topic)
{
    if (strcmp(topic, cfg->kafka.reply_topic) == 0)
        return true;
    for (size_t i = 0; i < cfg->kafka.n_reply_topics_allowed; i++)
        if (strcmp(topic, cfg->kafka.reply_topics_allowed[i]) == 0)
            return true;
    return false;
}

/* ---- intake ---- */

static void job_parse_and_route(ejob_t *j)
{
    engine_t *e = j->e;
    kafka_message_t *m = j->msg;
    job_error_t perr;
    if (job_parse(m->value, m->value_len, &e->job_limits, &j->job, &perr) != 0) {
        /* out of memory is not the job's fault: parsed again later */
        if (perr.code == JOB_ERR_INTERNAL || (!j->perr && !(j->perr = base_calloc(1, sizeof *j->perr)))) {
            job_error_free(&perr);
            job_wait(j, OP_PARSE, RETRY_PARSE_MS);
            return;
        }
        job_error_free(j->perr); /* a previous try's */
        *j->perr = perr;
        dead_letter(j);
        return;
    }
    job_error_free(&perr);
    job_t *job = j->job;
    j->route = config_route_find(e->cfg, job->route ? job->route : "default");
    if (!j->route) {
        dead_letter_valid_job(j, JOB_ERR_UNKNOWN_ROUTE, "route: '%s' is not configured", job->route);
        return;
    }
    if (job->reply_topic && !reply_topic_allowed(e->cfg, job->reply_topic)) {
        dead_letter_valid_job(j, JOB_ERR_REPLY_TOPIC_NOT_ALLOWED,
                              "reply_topic: '%s' is not in kafka.reply_topics_allowed", job->reply_topic);
        return;
    }
    j->reply_topic = job->reply_topic ? job->reply_topic : e->cfg->kafka.reply_topic;
    int rc = conv_enqueue(&e->convs, j, job->conversation_id, strlen(job->conversation_id));
    if (rc < 0) {
        job_wait(j, OP_PARSE, RETRY_PARSE_MS);
        return;
    }
    if (rc == 1)
        job_begin(j);
    else
        j->stage = STAGE_QUEUED;
}

void engine_on_message(void *ctx, kafka_message_t *m)
{
    engine_t *e = ctx;
    ejob_t *j = base_calloc(1, sizeof *j);
    if (!j) {
        /* Cannot even hold it: hand it back unfinished, so its offset is not committed. */
        log_error("out of memory for a job; it will be redelivered", LOG_I("partition", m->partition),
                  LOG_I("offset", m->offset));
        kafka_message_done(m, false);
        return;
    }
    j->e = e;
    j->msg = m;
    j->received_ms = base_mono_ms();
    j->timing = (job_timing_t){-1, -1, -1, -1, -1};
    engine_trace_init(j);
    j->next = e->jobs;
    if (e->jobs)
        e->jobs->prev = j;
    e->jobs = j;
    e->in_flight++;
    if (e->in_flight > e->peak_in_flight)
        e->peak_in_flight = e->in_flight;
    metric_set(e->m.in_flight, (int64_t)e->in_flight);
    engine_update_backpressure(e);
    job_parse_and_route(j);
}

/* ---- Redis: idempotency check and history ---- */

/* Redis failed for op: retry later, or give up once redis.unavailable_timeout_ms has passed. */
static void job_redis_failed(ejob_t *j, ejob_op_t op, const char *why)
{
    engine_t *e = j->e;
    int64_t now = base_mono_ms();
    if (!j->waiting_since_ms)
        j->waiting_since_ms = now;
    metric_inc(e->m.redis_waits);
    if (now - j->waiting_since_ms < e->cfg->redis.unavailable_timeout_ms) {
        job_wait(j, op, RETRY_REDIS_MS);
        return;
    }
    j->waiting_since_ms = 0;
    if (op == OP_BEGIN) {
        job_log_fields_warn(j, "redis unavailable for too long; answering history_unavailable", why);
        if (reply_error(j, JOB_STATUS_ERROR, JOB_ERR_HISTORY_UNAVAILABLE,
                        "conversation history could not be loaded: Redis unavailable", NULL, 0) != 0) {
            job_wait(j, OP_BEGIN, RETRY_REDIS_MS);
            return;
        }
    } else {
        /* The answer exists: the user gets it even though the turn could not be stored. */
        job_log_fields_warn(j, "redis unavailable for too long; publishing the reply without storing it",
                            why);
    }
    job_publish(j);
}

static int history_copy(ejob_t *j, const store_begin_result_t *res)
{
    if (!res->n_entries)
        return 0;
    j->history = base_calloc(res->n_entries, sizeof *j->history);
    if (!j->history)
        return -1;
    for (size_t i = 0; i < res->n_entries; i++) {
        job_error_t err;
        memset(&err, 0, sizeof err);
        if (job_history_entry_parse(res->entries[i].data, res->entries[i].len,
                                    j->e->job_limits.max_history_entry_bytes, &j->history[j->n_history],
                                    &err) == 0)
            j->n_history++;
        else if (err.code == JOB_ERR_INTERNAL) {
            job_error_free(&err);
            return -1;
        } else
            job_log_fields_warn(j, "skipping a malformed history entry", err.message);
        job_error_free(&err);
    }
    return 0;
}

void job_prompt_release(ejob_t *j)
{
    for (size_t i = 0; i < j->n_history; i++)
        job_message_release(&j->history[i]);
    free(j->history);
    free(j->prompt);
    j->history = j->prompt = NULL;
    j->n_history = j->n_prompt = 0;
}

/* The prompt: system (the job's, else the route's), history, the new user message. */
static int prompt_build(ejob_t *j)
{
    const job_t *job = j->job;
    const chat_message_t *hist = job->has_history ? job->history : j->history;
    size_t n_hist = job->has_history ? job->n_history : j->n_history;
    size_t max = (size_t)j->e->cfg->history.max_messages;
    if (n_hist > max) {
        hist += n_hist - max;
        n_hist = max;
    }
    j->prompt = base_calloc(n_hist + 2, sizeof *j->prompt);
    if (!j->prompt)
        return -1;
    const char *system = job->system ? job->system : j->route->system;
    if (system && *system)
        j->prompt[j->n_prompt++] =
            (chat_message_t){.role = "system", .content = system, .content_len = strlen(system)};
    for (size_t i = 0; i < n_hist; i++)
        j->prompt[j->n_prompt++] = hist[i];
    j->prompt[j->n_prompt++] = job->message;
    return 0;
}

static void job_llm_start(ejob_t *j);

static void on_begin(void *ctx, const store_begin_result_t *res)
{
    ejob_t *j = ctx;
    if (!job_callback_arrived(j))
        return;
    if (res->err != STORE_OK) {
        job_redis_failed(j, OP_BEGIN, res->errmsg);
        return;
    }
    j->waiting_since_ms = 0;
    j->timing.history_ms = base_mono_ms() - j->started_ms;
    observe_stage(j->e, STAGE_METRIC_HISTORY, j->timing.history_ms);
    if (res->has_reply) { /* answered before (a redelivery): republish the stored final, call nothing */
        char *copy = base_strndup(res->reply.data, res->reply.len);
        if (!copy) {
            job_wait(j, OP_BEGIN, RETRY_PARSE_MS);
            return;
        }
        reply_set(j, copy, res->reply.len);
        metric_inc(j->e->m.republished);
        job_publish(j);
        return;
    }
    if (j->job->has_deadline && j->job->deadline_ms <= base_wall_ms()) {
        if (reply_error(j, JOB_STATUS_EXPIRED, JOB_ERR_DEADLINE_EXCEEDED,
                        "deadline_ms passed before a provider was called", NULL, 0) != 0) {
            job_wait(j, OP_BEGIN, RETRY_PARSE_MS);
            return;
        }
        j->store_reply = true;
        job_store(j);
        return;
    }
    if (history_copy(j, res) != 0 || prompt_build(j) != 0) {
        job_prompt_release(j);
        job_wait(j, OP_BEGIN, RETRY_PARSE_MS);
        return;
    }
    job_llm_start(j);
}

static void job_begin(ejob_t *j)
{
    j->stage = STAGE_BEGIN;
    if (!j->started_ms) {
        j->started_ms = base_mono_ms();
        j->timing.queued_ms = j->started_ms - j->received_ms;
        observe_stage(j->e, STAGE_METRIC_QUEUED, j->timing.queued_ms);
    }
    const job_t *job = j->job;
    int rc = store_job_begin(j->e->store, STORE_BYTES(job->conversation_id, strlen(job->conversation_id)),
                             STORE_BYTES(job->job_id, strlen(job->job_id)),
                             job->has_history ? STORE_BEGIN_NO_HISTORY : 0, on_begin, j);
    if (rc != STORE_OK) {
        job_redis_failed(j, OP_BEGIN, store_strerror(rc));
        return;
    }
    j->awaiting++;
}

void engine_job_start(ejob_t *j) { job_begin(j); }

/* ---- providers ---- */

static int reply_ok(ejob_t *j, const router_result_t *res)
{
    job_reply_t r;
    job_reply_init(&r, j->job->job_id, j->job->conversation_id);
    r.status = JOB_STATUS_OK;
    r.content = res->text;
    r.content_len = res->text_len;
    r.finish_reason = res->finish_reason;
    r.provider = res->provider;
    r.model = res->model;
    r.has_usage = res->usage.has;
    r.prompt_tokens = res->usage.prompt_tokens;
    r.completion_tokens = res->usage.completion_tokens;
    r.total_tokens = res->usage.total_tokens;
    r.has_cost = res->has_cost;
    r.cost_usd = res->cost_usd;
    r.timing = j->timing;
    r.attempts = res->attempts;
    r.n_attempts = res->n_attempts;
    r.metadata_json = j->job->metadata_json;
    size_t len = 0;
    char *json = job_reply_encode(&r, &len);
    chat_message_t assistant = {.role = "assistant", .content = res->text, .content_len = res->text_len};
    j->user_entry = job_history_entry_encode(&j->job->message, &j->user_entry_len);
    j->assistant_entry = job_history_entry_encode(&assistant, &j->assistant_entry_len);
    if (!j->user_entry || !j->assistant_entry) {
        free(json);
        return -1;
    }
    return reply_adopt(j, json, len, JOB_STATUS_OK, JOB_ERR_NONE);
}

static void on_router_done(void *ctx, const router_result_t *res)
{
    ejob_t *j = ctx;
    engine_t *e = j->e;
    j->call = NULL;
    j->timing.llm_ms = res->llm_ms;
    j->timing.first_token_ms = res->first_token_ms;
    j->timing.total_ms = base_mono_ms() - j->received_ms;
    observe_stage(e, STAGE_METRIC_LLM, res->llm_ms);
    observe_router_done(e, res);
    int rc = res->ok ? reply_ok(j, res)
                     : reply_error(j, JOB_STATUS_ERROR, JOB_ERR_ALL_PROVIDERS_FAILED, res->error,
                                   res->attempts, res->n_attempts);
    if (rc != 0) {
        /* Without memory for the reply the answer is lost; ask the providers again shortly. */
        log_error("out of memory encoding a reply; calling the providers again",
                  LOG_S("job_id", j->job->job_id));
        job_wait(j, OP_BEGIN, RETRY_PARSE_MS);
        return;
    }
    if (!res->ok)
        job_log_fields_warn(j, "all providers failed", res->error);
    j->store_reply = true;
    job_store(j);
}

/* ---- streaming: deltas and resets go to the reply topic ahead of the final ---- */

static void on_stream_delivery(void *ctx, const kafka_delivery_t *d)
{
    ejob_t *j = ctx;
    j->awaiting--;
    if (d->err) /* best effort: the final reply carries the whole text */
        metric_inc(j->e->m.stream_publish_failures);
    if ((j->abandoned || j->delivered) && j->awaiting == 0)
        engine_job_finished(j->e, j);
}

static void stream_publish(ejob_t *j, char *json, size_t len)
{
    if (!json) {
        metric_inc(j->e->m.stream_publish_failures);
        return;
    }
    const job_t *job = j->job;
    kafka_header_t h[2] = {{"job_id", job->job_id, strlen(job->job_id)},
                           {"traceparent", j->traceparent, strlen(j->traceparent)}};
    if (kafka_produce(j->e->producer, j->reply_topic, job->conversation_id, strlen(job->conversation_id),
                      json, len, h, 2, on_stream_delivery, j) == 0)
        j->awaiting++;
    else
        metric_inc(j->e->m.stream_publish_failures);
    free(json);
}

static void on_router_delta(void *ctx, const char *provider, const char *text, size_t len)
{
    ejob_t *j = ctx;
    size_t n;
    char *json =
        job_delta_encode(j->job->job_id, j->job->conversation_id, j->delta_seq++, text, len, provider, &n);
    stream_publish(j, json, n);
}

static void on_router_reset(void *ctx, const char *provider, const char *reason)
{
    ejob_t *j = ctx;
    size_t n;
    j->delta_seq = 0;
    job_log_fields_warn(j, "stream reset: the streaming provider failed, the next one streams", reason);
    char *json = job_reset_encode(j->job->job_id, j->job->conversation_id, reason, &n);
    stream_publish(j, json, n);
}

static void job_llm_start(ejob_t *j)
{
    const job_params_t *jp = &j->job->params;
    llm_params_t params = {
        .has_temperature = jp->has_temperature,
        .temperature = jp->temperature,
        .has_top_p = jp->has_top_p,
        .top_p = jp->top_p,
        .has_max_tokens = jp->has_max_tokens,
        .max_tokens = jp->max_tokens,
        .stop = (const char *const *)jp->stop,
        .n_stop = jp->n_stop,
        .has_seed = jp->has_seed,
        .seed = jp->seed,
    };
    char tracestate[ENGINE_TRACESTATE_MAX + 1] = "";
    if (j->tracestate) {
        memcpy(tracestate, j->tracestate, j->tracestate_len);
        tracestate[j->tracestate_len] = '\0';
    }
    int64_t deadline = 0;
    if (j->job->has_deadline)
        deadline = base_mono_ms() + (j->job->deadline_ms - base_wall_ms());
    router_request_t req = {
        .route = j->route,
        .messages = j->prompt,
        .n_messages = j->n_prompt,
        .params = &params,
        .deadline_mono_ms = deadline,
        .traceparent = j->traceparent,
        .tracestate = tracestate[0] ? tracestate : NULL,
        .stream = j->job->stream,
    };
    router_callbacks_t cbs = {
        .on_done = on_router_done, .on_delta = on_router_delta, .on_reset = on_router_reset, .ctx = j};
    char err[256];
    j->stage = STAGE_LLM;
    j->call = router_start(j->e->router, &req, &cbs, err, sizeof err);
    job_prompt_release(j); /* the router built every request body from it: not held during the call */
    if (j->call)
        return;
    router_result_t failed = {.ok = false, .error = err, .first_token_ms = -1};
    on_router_done(j, &failed);
}

/* ---- storing the final ---- */

static void on_stored(void *ctx, int err, const char *errmsg)
{
    ejob_t *j = ctx;
    if (!job_callback_arrived(j))
        return;
    if (err == STORE_ERR_REDIS) { /* Redis refused it (WRONGTYPE, OOM...): retrying will not help */
        job_log_fields_warn(j, "redis refused to store the turn; publishing without it", errmsg);
        job_publish(j);
        return;
    }
    if (err != STORE_OK) {
        /* It may have been applied: the retry checks the job key first (OP_COMMIT → begin). */
        job_redis_failed(j, j->status == JOB_STATUS_OK && j->e->cfg->history.append ? OP_COMMIT : OP_PUT,
                         errmsg);
        return;
    }
    j->waiting_since_ms = 0;
    observe_stage(j->e, STAGE_METRIC_STORE, base_mono_ms() - j->store_started_ms);
    job_publish(j);
}

static void on_commit_check(void *ctx, const store_begin_result_t *res)
{
    ejob_t *j = ctx;
    if (!job_callback_arrived(j))
        return;
    if (res->err != STORE_OK) {
        job_redis_failed(j, OP_COMMIT, res->errmsg);
        return;
    }
    if (res->has_reply) /* the earlier MULTI/EXEC went through */
        job_publish(j);
    else
        job_store(j);
}

static void job_store(ejob_t *j)
{
    const job_t *job = j->job;
    store_bytes_t conv = STORE_BYTES(job->conversation_id, strlen(job->conversation_id));
    store_bytes_t id = STORE_BYTES(job->job_id, strlen(job->job_id));
    store_bytes_t reply = STORE_BYTES(j->reply, j->reply_len);
    if (!j->store_started_ms)
        j->store_started_ms = base_mono_ms();
    j->stage = STAGE_STORE;
    int rc;
    if (j->status == JOB_STATUS_OK)
        rc = store_job_commit(j->e->store, conv, id, STORE_BYTES(j->user_entry, j->user_entry_len),
                              STORE_BYTES(j->assistant_entry, j->assistant_entry_len), reply, on_stored, j);
    else
        rc = store_job_put_reply(j->e->store, conv, id, reply, on_stored, j);
    if (rc != STORE_OK) {
        job_redis_failed(j, j->status == JOB_STATUS_OK ? OP_COMMIT : OP_PUT, store_strerror(rc));
        return;
    }
    j->awaiting++;
}

/* A commit retry first asks whether the earlier attempt was applied. */
static void job_commit_retry(ejob_t *j)
{
    const job_t *job = j->job;
    j->stage = STAGE_STORE;
    int rc = store_job_begin(j->e->store, STORE_BYTES(job->conversation_id, strlen(job->conversation_id)),
                             STORE_BYTES(job->job_id, strlen(job->job_id)), STORE_BEGIN_NO_HISTORY,
                             on_commit_check, j);
    if (rc != STORE_OK) {
        job_redis_failed(j, OP_COMMIT, store_strerror(rc));
        return;
    }
    j->awaiting++;
}

/* ---- publishing ---- */

static void on_reply_delivery(void *ctx, const kafka_delivery_t *d)
{
    ejob_t *j = ctx;
    if (!job_callback_arrived(j))
        return;
    if (d->err) {
        j->retries++;
        int64_t delay = RETRY_PUBLISH_MIN_MS << (j->retries < 5 ? j->retries : 5);
        job_log_fields_warn(j, "reply publish failed; retrying", d->error);
        metric_inc(j->e->m.publish_retries);
        job_wait(j, OP_PUBLISH, delay < RETRY_PUBLISH_MAX_MS ? delay : RETRY_PUBLISH_MAX_MS);
        return;
    }
    metric_inc(j->e->m.replies);
    if (j->job) {
        observe_stage(j->e, STAGE_METRIC_PUBLISH, base_mono_ms() - j->publish_started_ms);
        observe_stage(j->e, STAGE_METRIC_TOTAL, base_mono_ms() - j->received_ms);
        log_info("job finished", LOG_S("job_id", j->job->job_id),
                 LOG_S("conversation_id", j->job->conversation_id),
                 LOG_S("status", job_status_name(j->status)), LOG_I("queued_ms", j->timing.queued_ms),
                 LOG_I("history_ms", j->timing.history_ms), LOG_I("llm_ms", j->timing.llm_ms),
                 LOG_I("total_ms", base_mono_ms() - j->received_ms));
    }
    j->delivered = true;
    job_release_if_idle(j); /* deltas still owed a delivery report keep it a little longer */
}

static void job_publish(ejob_t *j)
{
    engine_t *e = j->e;
    const job_t *job = j->job;
    kafka_header_t h[3];
    size_t n = 0;
    h[n++] = (kafka_header_t){"job_id", job->job_id, strlen(job->job_id)};
    h[n++] = (kafka_header_t){"traceparent", j->traceparent, strlen(j->traceparent)};
    if (j->tracestate)
        h[n++] = (kafka_header_t){"tracestate", j->tracestate, j->tracestate_len};
    if (!j->publish_started_ms)
        j->publish_started_ms = base_mono_ms();
    j->stage = STAGE_PUBLISH;
    if (kafka_produce(e->producer, j->reply_topic, job->conversation_id, strlen(job->conversation_id),
                      j->reply, j->reply_len, h, n, on_reply_delivery, j) != 0) {
        job_wait(j, OP_PUBLISH, RETRY_PUBLISH_MIN_MS);
        return;
    }
    j->awaiting++;
}

/* ---- retries ---- */

static void job_retry(ejob_t *j)
{
    ejob_op_t op = j->retry_op;
    j->retry_op = OP_NONE;
    switch (op) {
    case OP_PARSE:
        job_free(j->job);
        j->job = NULL;
        job_parse_and_route(j);
        break;
    case OP_BEGIN:
        job_begin(j);
        break;
    case OP_COMMIT:
        job_commit_retry(j);
        break;
    case OP_PUT:
        job_store(j);
        break;
    case OP_PUBLISH:
        if (j->job)
            job_publish(j);
        else
            dead_letter_publish(j);
        break;
    case OP_NONE:
        break;
    }
}

void engine_retry_due(engine_t *e, bool redis_came_up)
{
    if (!e->jobs_may_wait) /* the walk below costs a cache miss per held job: only when one waits */
        return;
    e->jobs_may_wait = false; /* set again by any job_wait, also one a retry below makes */
    bool waiting = false;
    int64_t now = base_mono_ms();
    ejob_t *j = e->jobs;
    while (j) {
        ejob_t *next = j->next; /* a retry may finish (and free) j */
        bool redis_op = j->retry_op == OP_BEGIN || j->retry_op == OP_COMMIT || j->retry_op == OP_PUT;
        if (j->stage == STAGE_WAIT && (j->retry_at_ms <= now || (redis_came_up && redis_op)))
            job_retry(j);
        else if (j->stage == STAGE_WAIT)
            waiting = true;
        j = next;
    }
    e->jobs_may_wait = e->jobs_may_wait || waiting;
}

/* Drain timeout: hands every held job back unfinished (its offset is not committed, so the group
 * redelivers it) and frees those that wait on nothing. */
void engine_abandon_all(engine_t *e)
{
    ejob_t *j = e->jobs;
    while (j) {
        ejob_t *next = j->next;
        job_log_fields_warn(j, "drain timeout: job abandoned, it will be redelivered", NULL);
        j->abandoned = true;
        if (j->call) {
            router_cancel(j->call);
            j->call = NULL;
        }
        if (j->awaiting == 0)
            engine_job_finished(e, j);
        j = next;
    }
}
