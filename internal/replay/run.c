/* run.c — the replay run: streams input lines into a fixed set of conversation slots, runs each
 * conversation's turns against each target (in-process through the router, or as Kafka jobs), and
 * appends every finished pair to the result files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "http/http.h"
#include "job/job.h"
#include "kafka/kafka.h"
#include "limits/limits.h"
#include "llm/llm.h"
#include "log/log.h"
#include "replay/replay.h"
#include "replay/replay_int.h"
#include "router/router.h"

#define MAX_TURNS      1000
#define MAX_ERR_KINDS  32
#define KAFKA_SWEEP_MS 500

typedef struct run run_t;
typedef struct conv conv_t;

/* One conversation against one target: its turns one after the other. */
typedef struct {
    run_t *run;
    conv_t *conv;
    size_t target;
    size_t k; /* the turn running (index into conv->turns) */
    bool busy;
    router_call_t *call;
    chat_message_t *msgs; /* --history generated: the prompt built for turn k */
    size_t n_msgs;
    char **answers; /* --history generated: one per turn, NULL when it failed */
    llm_params_t params;
    int64_t started_ms;
    uint64_t seq;        /* via Kafka: the job id's sequence number */
    int64_t deadline_ms; /* via Kafka */
} task_t;

struct conv {
    bool used;
    size_t slot;
    replay_line_t line;
    long line_no;
    size_t turns[MAX_TURNS];
    size_t n_turns;
    size_t tasks_left;
    task_t *tasks;
};

typedef struct {
    char kind[64];
    uint64_t n;
} err_count_t;

struct run {
    uv_loop_t loop;
    const config_t *cfg;
    const replay_options_t *o;
    FILE *in;
    long line_no;
    bool eof, stopping, finished;
    bool in_pump; /* pump runs: a nested call (from a result) returns at once */
    conv_t *convs;
    size_t n_convs, active;
    size_t n_targets;
    char **target_names;
    const config_route_t **routes;
    config_route_t *own_routes;
    size_t *own_idx;
    router_t *router;
    limits_t *limits;
    http_client_t *http;
    kafka_producer_t *prod;
    replay_kreply_t *kreply;
    const char *reply_topic;
    char run_id[16];
    uint64_t next_seq;
    replay_done_t *done;
    int results_fd, batch_fd;
    uint64_t pairs_done, pairs_ok, pairs_skipped, lines_done, lines_total, bad_lines;
    err_count_t errs[MAX_ERR_KINDS];
    size_t n_errs;
    uv_timer_t progress, sweep;
    uv_signal_t sigint, sigterm;
    int64_t t0;
    bool tty;
    int fail;
    char err[256];
};

void replay_options_init(replay_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->concurrency = 16;
    o->stream = true;
    o->kafka_timeout_ms = 120000;
    o->progress_ms = 2000;
}

static void pump(run_t *r);
static void task_advance(task_t *t);

/* ---- output ---- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void count_error(run_t *r, const char *kind)
{
    for (size_t i = 0; i < r->n_errs; i++)
        if (strcmp(r->errs[i].kind, kind) == 0) {
            r->errs[i].n++;
            return;
        }
    if (r->n_errs < MAX_ERR_KINDS) {
        snprintf(r->errs[r->n_errs].kind, sizeof r->errs[0].kind, "%s", kind);
        r->errs[r->n_errs++].n = 1;
    }
}

static void turn_id_of(const task_t *t, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s:%zu", t->conv->line.id, t->conv->turns[t->k]);
}

static int open_out(const char *dir, const char *name, int *fd, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (*fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Appends the pair's lines, remembers its answer (generated history), counts it. */
static void emit(task_t *t, replay_result_t *res)
{
    run_t *r = t->run;
    char turn_id[320];
    turn_id_of(t, turn_id, sizeof turn_id);
    res->turn_id = turn_id;
    res->id = t->conv->line.id;
    res->batch = t->conv->line.kind == REPLAY_LINE_BATCH;
    res->line_no = t->conv->line_no;
    res->turn = t->k;
    res->msg_index = t->conv->turns[t->k];
    res->target = r->target_names[t->target];
    res->metadata_json = t->conv->line.metadata_json;
    buf_t b;
    buf_init(&b, 0);
    if (res->batch && t->target == 0 && r->batch_fd < 0 &&
        open_out(r->o->out_dir, "batch_output.jsonl", &r->batch_fd, r->err, sizeof r->err) != 0)
        r->fail = 1;
    if (res->batch && t->target == 0 && r->batch_fd >= 0 &&
        (replay_batch_line(&b, res) != 0 || write_all(r->batch_fd, b.data, b.len) != 0) && !r->fail) {
        r->fail = 1;
        snprintf(r->err, sizeof r->err, "batch_output.jsonl: cannot write");
    }
    buf_reset(&b);
    if ((replay_result_line(&b, res) != 0 || write_all(r->results_fd, b.data, b.len) != 0) && !r->fail) {
        r->fail = 1;
        snprintf(r->err, sizeof r->err, "results.jsonl: cannot write: %s", strerror(errno));
    }
    buf_free(&b);
    r->pairs_done++;
    if (res->ok)
        r->pairs_ok++;
    else
        count_error(r, res->err_kind);
    if (t->answers && res->ok)
        t->answers[t->k] = base_strndup(res->answer ? res->answer : "", res->answer ? res->answer_len : 0);
}

/* ---- prompts ---- */

/* Builds the prompt of turn k: the recorded messages up to it, or (generated) the leading system
 * messages, then each earlier user turn with the target's own answer, then this turn. */
static int build_prompt(task_t *t)
{
    const replay_line_t *l = &t->conv->line;
    size_t u = t->conv->turns[t->k];
    if (!t->answers) {
        t->n_msgs = u + 1;
        return 0;
    }
    free(t->msgs);
    t->msgs = base_calloc(l->n_messages + t->conv->n_turns + 1, sizeof *t->msgs);
    if (!t->msgs)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < l->n_messages && strcmp(l->messages[i].role, "user") != 0; i++)
        t->msgs[n++] = l->messages[i];
    for (size_t j = 0; j < t->k; j++) {
        t->msgs[n++] = l->messages[t->conv->turns[j]];
        if (t->answers[j])
            t->msgs[n++] = (chat_message_t){
                .role = "assistant", .content = t->answers[j], .content_len = strlen(t->answers[j])};
    }
    t->msgs[n++] = l->messages[u];
    t->n_msgs = n;
    return 0;
}

static const chat_message_t *prompt(const task_t *t) { return t->answers ? t->msgs : t->conv->line.messages; }

/* ---- in-process calls ---- */

/* What the last failing attempt says: "timeout", "http_500", "skipped" or "error" (into kind). */
static const char *error_kind(const router_result_t *res, int *http_status, char *kind, size_t kindlen)
{
    *http_status = 0;
    for (size_t i = res->n_attempts; i-- > 0;) {
        const job_attempt_t *a = &res->attempts[i];
        if (a->outcome == JOB_OUTCOME_TIMEOUT)
            return "timeout";
        if (a->http_status > 0 && a->http_status != 200) {
            *http_status = a->http_status;
            snprintf(kind, kindlen, "http_%d", a->http_status);
            return kind;
        }
        if (a->outcome == JOB_OUTCOME_SKIPPED)
            return "skipped";
    }
    return "error";
}

static void on_router_done(void *ctx, const router_result_t *rr)
{
    task_t *t = ctx;
    t->call = NULL;
    buf_t att;
    buf_init(&att, 0);
    replay_attempts_json(&att, rr->attempts, rr->n_attempts);
    replay_result_t res = {
        .ok = rr->ok,
        .answer = rr->text,
        .answer_len = rr->text_len,
        .provider = rr->provider,
        .model = rr->model,
        .finish_reason = rr->finish_reason,
        .has_usage = rr->usage.has,
        .prompt_tokens = rr->usage.prompt_tokens,
        .completion_tokens = rr->usage.completion_tokens,
        .total_tokens = rr->usage.total_tokens,
        .has_cost = rr->has_cost,
        .cost_usd = rr->cost_usd,
        .latency_ms = rr->llm_ms,
        .ttft_ms = rr->first_token_ms,
        .attempts_json = att.data,
    };
    char kind[32];
    if (!rr->ok) {
        res.err_code = "all_providers_failed";
        res.err_kind = error_kind(rr, &res.http_status, kind, sizeof kind);
        res.err_msg = rr->error;
    }
    emit(t, &res);
    buf_free(&att);
    t->k++;
    task_advance(t);
}

static int start_router_call(task_t *t)
{
    run_t *r = t->run;
    router_request_t req = {
        .route = r->routes[t->target],
        .messages = prompt(t),
        .n_messages = t->n_msgs,
        .params = &t->params,
        .stream = r->o->stream,
    };
    router_callbacks_t cbs = {.on_done = on_router_done, .ctx = t};
    char err[256];
    t->call = router_start(r->router, &req, &cbs, err, sizeof err);
    if (!t->call) {
        replay_result_t res = {
            .ok = false, .err_code = "internal", .err_kind = "internal", .err_msg = err, .ttft_ms = -1};
        emit(t, &res);
        return -1;
    }
    return 0;
}

/* ---- via Kafka ---- */

static void on_delivery(void *ctx, const kafka_delivery_t *d)
{
    (void)ctx;
    if (d->err)
        log_warn("replay: job not delivered", LOG_S("error", d->error));
}

/* The job of turn k: inline history, this run's reply topic, route = the target. */
static int start_kafka_job(task_t *t)
{
    run_t *r = t->run;
    const chat_message_t *m = prompt(t);
    t->seq = ++r->next_seq;
    char job_id[96];
    snprintf(job_id, sizeof job_id, "rp-%s-%zu-%zu-%llu", r->run_id, t->conv->slot, t->target,
             (unsigned long long)t->seq);
    const char *id = t->conv->line.id;
    buf_t b;
    buf_init(&b, 0);
    int e = buf_printf(&b, "{\"job_id\":\"%s\",\"conversation_id\":", job_id) ||
            job_json_append_string(&b, id, strlen(id), 0) || buf_append_str(&b, ",\"route\":") ||
            job_json_append_string(&b, r->target_names[t->target] + 6, strlen(r->target_names[t->target] + 6),
                                   0) ||
            buf_append_str(&b, ",\"reply_topic\":") ||
            job_json_append_string(&b, r->reply_topic, strlen(r->reply_topic), 0) ||
            buf_printf(&b, ",\"stream\":false,\"message\":{\"role\":\"user\",\"content\":") ||
            job_json_append_string(&b, m[t->n_msgs - 1].content, m[t->n_msgs - 1].content_len,
                                   JOB_JSON_NUL_AS_FFFD) ||
            buf_append_str(&b, "},\"history\":[");
    for (size_t i = 0; i + 1 < t->n_msgs && !e; i++)
        e = buf_printf(&b, "%s{\"role\":\"%s\",\"content\":", i ? "," : "", m[i].role) ||
            job_json_append_string(&b, m[i].content, m[i].content_len, JOB_JSON_NUL_AS_FFFD) ||
            buf_append_str(&b, "}");
    e = e || buf_append_str(&b, "]");
    if (t->conv->line.metadata_json)
        e = e || buf_printf(&b, ",\"metadata\":%s", t->conv->line.metadata_json);
    e = e || buf_append_str(&b, "}");
    int rc = 0;
    if (e || kafka_produce(r->prod, r->cfg->kafka.jobs_topic, id, strlen(id), b.data, b.len, NULL, 0,
                           on_delivery, NULL) != 0) {
        replay_result_t res = {.ok = false,
                               .err_code = "internal",
                               .err_kind = "produce_failed",
                               .err_msg = "the job could not be queued",
                               .ttft_ms = -1};
        emit(t, &res);
        rc = -1;
    }
    buf_free(&b);
    t->deadline_ms = base_mono_ms() + r->o->kafka_timeout_ms;
    return rc;
}

static int64_t json_int(const cJSON *o, const char *name, int64_t dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : dflt;
}

/* The task a job id names, when it is this run's and still waiting. */
static task_t *task_of_job(run_t *r, const char *job_id)
{
    char prefix[32];
    int pl = snprintf(prefix, sizeof prefix, "rp-%s-", r->run_id);
    if (strncmp(job_id, prefix, (size_t)pl) != 0)
        return NULL;
    char *end;
    unsigned long long slot = strtoull(job_id + pl, &end, 10), target, seq;
    if (*end != '-' || slot >= r->n_convs)
        return NULL;
    target = strtoull(end + 1, &end, 10);
    if (*end != '-' || target >= r->n_targets)
        return NULL;
    seq = strtoull(end + 1, &end, 10);
    conv_t *c = &r->convs[slot];
    if (*end || !c->used)
        return NULL;
    task_t *t = &c->tasks[target];
    return t->busy && t->seq == seq && t->deadline_ms ? t : NULL;
}

static void on_reply(void *ctx, const char *value, size_t len)
{
    run_t *r = ctx;
    cJSON *o = cJSON_ParseWithLength(value, len);
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "type"));
    const char *job_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "job_id"));
    task_t *t = type && job_id && strcmp(type, "final") == 0 ? task_of_job(r, job_id) : NULL;
    if (!t) {
        cJSON_Delete(o);
        return;
    }
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "status"));
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(o, "usage");
    const cJSON *timing = cJSON_GetObjectItemCaseSensitive(o, "timing");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(o, "error");
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(o, "cost_usd");
    const char *answer = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "content"));
    char *attempts = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "attempts"));
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(error, "code"));
    replay_result_t res = {
        .ok = status && strcmp(status, "ok") == 0 && answer,
        .job_id = job_id,
        .answer = answer,
        .answer_len = answer ? strlen(answer) : 0,
        .provider = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "provider")),
        .model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "model")),
        .finish_reason = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "finish_reason")),
        .has_usage = cJSON_IsObject(usage),
        .prompt_tokens = json_int(usage, "prompt_tokens", 0),
        .completion_tokens = json_int(usage, "completion_tokens", 0),
        .total_tokens = json_int(usage, "total_tokens", 0),
        .has_cost = cJSON_IsNumber(cost),
        .cost_usd = cJSON_IsNumber(cost) ? cost->valuedouble : 0,
        .latency_ms = base_mono_ms() - t->started_ms,
        .ttft_ms = json_int(timing, "first_token_ms", -1),
        .attempts_json = attempts,
        .err_code = code ? code : "error",
        .err_kind = code ? code : "error",
        .err_msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(error, "message")),
    };
    emit(t, &res);
    free(attempts);
    cJSON_Delete(o);
    t->deadline_ms = 0;
    t->k++;
    task_advance(t);
}

/* Answers the jobs whose reply did not come in time. */
static void on_sweep(uv_timer_t *tm)
{
    run_t *r = tm->data;
    int64_t now = base_mono_ms();
    for (size_t i = 0; i < r->n_convs; i++) {
        if (!r->convs[i].used)
            continue;
        for (size_t j = 0; j < r->n_targets; j++) {
            task_t *t = &r->convs[i].tasks[j];
            if (!t->busy || !t->deadline_ms || now < t->deadline_ms)
                continue;
            replay_result_t res = {.ok = false,
                                   .err_code = "timeout",
                                   .err_kind = "reply_timeout",
                                   .err_msg = "no reply in time",
                                   .latency_ms = now - t->started_ms,
                                   .ttft_ms = -1};
            emit(t, &res);
            t->deadline_ms = 0;
            t->k++;
            task_advance(t);
        }
    }
}

/* ---- tasks and slots ---- */

static void task_clear(task_t *t)
{
    if (t->call)
        router_cancel(t->call);
    t->call = NULL;
    if (t->answers)
        for (size_t i = 0; i < t->conv->n_turns; i++)
            free(t->answers[i]);
    free(t->answers);
    free(t->msgs);
    t->answers = NULL;
    t->msgs = NULL;
    t->busy = false;
    t->deadline_ms = 0;
}

static void conv_release(conv_t *c)
{
    run_t *r = c->tasks[0].run;
    for (size_t j = 0; j < r->n_targets; j++)
        task_clear(&c->tasks[j]);
    replay_line_clear(&c->line);
    c->used = false;
    r->active--;
    r->lines_done++;
}

/* Starts the next turn of t that is not finished yet; at the end, the task is done. Returns true when
 * a call or job runs (its callback continues the task), false when the task is over. */
static bool task_step(task_t *t)
{
    run_t *r = t->run;
    for (; t->k < t->conv->n_turns && !r->stopping; t->k++) {
        char turn_id[320];
        turn_id_of(t, turn_id, sizeof turn_id);
        if (replay_done_has(r->done, turn_id, r->target_names[t->target])) {
            const char *a = replay_done_answer(r->done, turn_id, r->target_names[t->target]);
            if (t->answers && a)
                t->answers[t->k] = base_strdup(a);
            r->pairs_skipped++;
            continue;
        }
        if (build_prompt(t) != 0)
            continue;
        t->started_ms = base_mono_ms();
        int rc = r->o->via_kafka ? start_kafka_job(t) : start_router_call(t);
        if (rc == 0)
            return true;
    }
    return false;
}

/* Continues t after a result; frees the conversation's slot when its last task is over. */
static void task_advance(task_t *t)
{
    if (task_step(t))
        return;
    t->busy = false;
    conv_t *c = t->conv;
    if (--c->tasks_left == 0) {
        conv_release(c);
        pump(t->run);
    }
}

static void fill_params(task_t *t, const replay_line_t *l)
{
    memset(&t->params, 0, sizeof t->params);
    t->params.has_temperature = l->has_temperature;
    t->params.temperature = l->temperature;
    t->params.has_top_p = l->has_top_p;
    t->params.top_p = l->top_p;
    t->params.has_max_tokens = l->has_max_tokens;
    t->params.max_tokens = l->max_tokens;
    t->params.has_seed = l->has_seed;
    t->params.seed = l->seed;
}

/* Starts every target of a freshly read conversation; false when none had anything to do. */
static bool conv_start(run_t *r, conv_t *c)
{
    c->tasks_left = r->n_targets;
    for (size_t j = 0; j < r->n_targets; j++) {
        task_t *t = &c->tasks[j];
        memset(t, 0, sizeof *t);
        t->run = r;
        t->conv = c;
        t->target = j;
        t->busy = true;
        fill_params(t, &c->line);
        if (r->o->history == REPLAY_HISTORY_GENERATED &&
            !(t->answers = base_calloc(c->n_turns, sizeof(char *))))
            t->busy = false;
        if (t->busy && task_step(t))
            continue;
        t->busy = false;
        c->tasks_left--;
    }
    return c->tasks_left > 0;
}

/* Reads lines into free slots until the input ends, the run stops or every slot is busy. */
static void pump(run_t *r)
{
    if (r->in_pump)
        return;
    r->in_pump = true;
    char *line = NULL;
    size_t cap = 0;
    for (size_t s = 0; s < r->n_convs && !r->eof && !r->stopping; s++) {
        conv_t *c = &r->convs[s];
        while (!c->used && !r->eof && !r->stopping) {
            ssize_t n = getline(&line, &cap, r->in);
            if (n <= 0 || (r->o->limit > 0 && r->line_no >= r->o->limit)) {
                r->eof = true;
                break;
            }
            r->line_no++;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                n--;
            if (n == 0)
                continue;
            char err[256];
            if (replay_line_parse(line, (size_t)n, &c->line, err, sizeof err) != 0) {
                fprintf(stderr, "parley replay: %s:%ld: %s (line skipped)\n", r->o->input, r->line_no, err);
                r->bad_lines++;
                continue;
            }
            c->line_no = r->line_no;
            c->n_turns = replay_line_turns(&c->line, r->o->turns, c->turns, MAX_TURNS);
            c->used = true;
            r->active++;
            if (!conv_start(r, c))
                conv_release(c);
        }
    }
    free(line);
    r->in_pump = false;
    if (r->active == 0 && (r->eof || r->stopping) && !r->finished) {
        r->finished = true;
        uv_timer_stop(&r->progress);
        uv_timer_stop(&r->sweep);
        uv_close((uv_handle_t *)&r->progress, NULL);
        uv_close((uv_handle_t *)&r->sweep, NULL);
        uv_close((uv_handle_t *)&r->sigint, NULL);
        uv_close((uv_handle_t *)&r->sigterm, NULL);
        if (r->router)
            router_free(r->router);
        r->router = NULL;
        if (r->limits)
            limits_free(r->limits);
        r->limits = NULL;
        if (r->http)
            http_client_close(r->http, NULL, NULL);
        r->http = NULL;
        if (r->kreply)
            replay_kreply_free(r->kreply);
        r->kreply = NULL;
        if (r->prod)
            kafka_producer_close(r->prod, 5000, NULL, NULL);
        r->prod = NULL;
    }
}

/* ---- progress and signals ---- */

static void print_progress(run_t *r, bool last)
{
    double secs = (double)(base_mono_ms() - r->t0) / 1000.0;
    double rate = secs > 0 ? (double)r->pairs_done / secs : 0;
    char errs[256] = "";
    size_t off = 0;
    for (size_t i = 0; i < r->n_errs && off < sizeof errs; i++)
        off += (size_t)snprintf(errs + off, sizeof errs - off, "%s%s=%llu", i ? "," : "", r->errs[i].kind,
                                (unsigned long long)r->errs[i].n);
    uint64_t total = r->lines_total ? r->lines_total : 1;
    double frac = (double)r->lines_done / (double)total;
    double eta = r->lines_done > 0 ? secs / frac - secs : 0;
    if (r->tty) {
        char bar[31];
        int full = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < full ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %llu/%llu lines, %llu results (%llu ok) %.1f/s ETA %.0fs errors: %s\033[K%s",
                bar, (unsigned long long)r->lines_done, (unsigned long long)r->lines_total,
                (unsigned long long)r->pairs_done, (unsigned long long)r->pairs_ok, rate, eta,
                *errs ? errs : "none", last ? "\n" : "");
    } else {
        fprintf(stderr,
                "replay progress: lines %llu/%llu results %llu ok %llu skipped %llu rate %.1f/s eta_s %.0f "
                "errors %s\n",
                (unsigned long long)r->lines_done, (unsigned long long)r->lines_total,
                (unsigned long long)r->pairs_done, (unsigned long long)r->pairs_ok,
                (unsigned long long)r->pairs_skipped, rate, eta, *errs ? errs : "none");
    }
}

static void on_progress(uv_timer_t *t) { print_progress(t->data, false); }

static void on_signal(uv_signal_t *s, int signum)
{
    run_t *r = s->data;
    if (r->stopping)
        return;
    fprintf(stderr, "parley replay: signal %d: stopping; finished results are kept\n", signum);
    r->stopping = true;
    for (size_t i = 0; i < r->n_convs; i++)
        if (r->convs[i].used)
            conv_release(&r->convs[i]);
    pump(r);
}

/* ---- set-up ---- */

static uint64_t count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[65536];
    size_t n;
    uint64_t lines = 0;
    bool last_nl = true;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
        last_nl = buf[n - 1] == '\n';
    }
    fclose(f);
    return lines + !last_nl;
}

/* Targets: one single-provider fallback route per --compare name, else the route itself. */
static int targets_setup(run_t *r, char *err, size_t errlen)
{
    const config_t *cfg = r->cfg;
    const replay_options_t *o = r->o;
    const char *route_name = o->route ? o->route : "default";
    r->n_targets = o->n_compare ? o->n_compare : 1;
    r->target_names = base_calloc(r->n_targets, sizeof(char *));
    r->routes = base_calloc(r->n_targets, sizeof *r->routes);
    r->own_routes = base_calloc(r->n_targets, sizeof *r->own_routes);
    r->own_idx = base_calloc(r->n_targets, sizeof *r->own_idx);
    if (!r->target_names || !r->routes || !r->own_routes || !r->own_idx) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const config_route_t *base_route = config_route_find(cfg, route_name);
    for (size_t i = 0; i < r->n_targets; i++) {
        const char *name = o->n_compare ? o->compare[i] : route_name;
        char label[300];
        if (o->via_kafka) {
            if (!config_route_find(cfg, name)) {
                snprintf(err, errlen, "--via-kafka: no route named '%s' in llm.routes", name);
                return -2;
            }
            snprintf(label, sizeof label, "kafka:%s", name);
        } else if (o->n_compare) {
            size_t p = 0;
            while (p < cfg->llm.n_providers && strcmp(cfg->llm.providers[p].name, name) != 0)
                p++;
            if (p == cfg->llm.n_providers) {
                snprintf(err, errlen, "--compare: no provider named '%s' in llm.providers", name);
                return -2;
            }
            r->own_idx[i] = p;
            config_route_t *rt = &r->own_routes[i];
            *rt = base_route ? *base_route : cfg->llm.routes[0];
            rt->name = (char *)name;
            rt->strategy = STRATEGY_FALLBACK;
            rt->providers = &r->own_idx[i];
            rt->n_providers = 1;
            rt->weights = NULL;
            rt->system = NULL;
            r->routes[i] = rt;
            snprintf(label, sizeof label, "%s", name);
        } else {
            if (!base_route) {
                snprintf(err, errlen, "--route: no route named '%s'", name);
                return -2;
            }
            r->routes[i] = base_route;
            snprintf(label, sizeof label, "route:%s", name);
        }
        if (!(r->target_names[i] = base_strdup(label))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

static int clients_setup(run_t *r, char *err, size_t errlen)
{
    const config_t *cfg = r->cfg;
    if (r->o->via_kafka) {
        r->reply_topic = r->o->reply_topic ? r->o->reply_topic : "parley.replay";
        bool allowed = strcmp(r->reply_topic, cfg->kafka.reply_topic) == 0;
        for (size_t i = 0; i < cfg->kafka.n_reply_topics_allowed; i++)
            allowed = allowed || strcmp(cfg->kafka.reply_topics_allowed[i], r->reply_topic) == 0;
        if (!allowed) {
            snprintf(err, errlen, "--reply-topic %s is not in kafka.reply_topics_allowed", r->reply_topic);
            return -2;
        }
        replay_run_id(r->run_id, sizeof r->run_id);
        kafka_producer_options_t po = {.brokers = cfg->kafka.brokers,
                                       .properties = cfg->kafka.properties,
                                       .n_properties = cfg->kafka.n_properties,
                                       .client_id = "parley-replay"};
        if (!(r->prod = kafka_producer_new(&r->loop, &po, err, errlen)))
            return -1;
        if (!(r->kreply = replay_kreply_new(&r->loop, cfg, r->reply_topic, on_reply, r, err, errlen)))
            return -1;
        return 0;
    }
    http_client_options_t ho;
    http_client_options_init(&ho);
    if (!(r->http = http_client_new(&r->loop, &ho, err, errlen)))
        return -1;
    if (!(r->limits = limits_new(&r->loop, cfg, NULL, err, errlen)))
        return -1;
    if (!(r->router = router_new(&r->loop, cfg, r->http, r->limits, err, errlen)))
        return -1;
    return 0;
}

static void run_free(run_t *r)
{
    if (r->in)
        fclose(r->in);
    if (r->results_fd >= 0)
        close(r->results_fd);
    if (r->batch_fd >= 0)
        close(r->batch_fd);
    for (size_t i = 0; r->target_names && i < r->n_targets; i++)
        free(r->target_names[i]);
    free(r->target_names);
    free(r->routes);
    free(r->own_routes);
    free(r->own_idx);
    if (r->convs)
        for (size_t i = 0; i < r->n_convs; i++)
            free(r->convs[i].tasks);
    free(r->convs);
    replay_done_free(r->done);
}

/* Closes every handle left (clients closed by pump, or never started after a set-up failure). */
static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int replay_run(const config_t *cfg, const replay_options_t *o, char *err, size_t errlen)
{
    run_t *r = base_calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    r->cfg = cfg;
    r->o = o;
    r->results_fd = r->batch_fd = -1;
    bool loop_ok = uv_loop_init(&r->loop) == 0;
    if (!loop_ok) {
        snprintf(err, errlen, "cannot start the event loop");
        goto out;
    }
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", o->out_dir, strerror(errno));
        goto out;
    }
    if (!(r->in = fopen(o->input, "r"))) {
        snprintf(err, errlen, "%s: %s", o->input, strerror(errno));
        goto out;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/results.jsonl", o->out_dir);
    if (!(r->done = replay_done_new()) ||
        replay_done_load(r->done, path, o->history == REPLAY_HISTORY_GENERATED, err, errlen) != 0)
        goto out;
    if (open_out(o->out_dir, "results.jsonl", &r->results_fd, err, errlen) != 0)
        goto out;
    int crc = targets_setup(r, err, errlen);
    if (crc == 0)
        crc = clients_setup(r, err, errlen);
    if (crc != 0) {
        rc = crc == -2 ? -2 : -1;
        goto out;
    }
    r->n_convs = o->concurrency ? o->concurrency : 1;
    if (!(r->convs = base_calloc(r->n_convs, sizeof *r->convs))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < r->n_convs; i++) {
        r->convs[i].slot = i;
        if (!(r->convs[i].tasks = base_calloc(r->n_targets, sizeof(task_t)))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    r->lines_total = count_lines(o->input);
    r->tty = isatty(STDERR_FILENO);
    r->t0 = base_mono_ms();
    if (replay_done_count(r->done) > 0)
        fprintf(stderr, "parley replay: resuming: %zu results already in %s\n", replay_done_count(r->done),
                path);
    uv_timer_init(&r->loop, &r->progress);
    uv_timer_init(&r->loop, &r->sweep);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    r->progress.data = r->sweep.data = r->sigint.data = r->sigterm.data = r;
    uint64_t period = (uint64_t)(o->progress_ms > 0 ? o->progress_ms : 2000);
    uv_timer_start(&r->progress, on_progress, r->tty ? 200 : period, r->tty ? 200 : period);
    if (o->via_kafka)
        uv_timer_start(&r->sweep, on_sweep, KAFKA_SWEEP_MS, KAFKA_SWEEP_MS);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    pump(r);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    print_progress(r, true);
    rc = r->fail ? -1 : r->stopping ? 1 : 0;
    if (r->fail)
        snprintf(err, errlen, "%s", r->err);
    fprintf(stderr, "parley replay: %llu results (%llu ok, %llu skipped as done), %llu bad input lines\n",
            (unsigned long long)r->pairs_done, (unsigned long long)r->pairs_ok,
            (unsigned long long)r->pairs_skipped, (unsigned long long)r->bad_lines);
    char serr[256];
    if (replay_summary_write(o->out_dir, serr, sizeof serr) != 0) {
        snprintf(err, errlen, "%s", serr);
        rc = -1;
    }
out:
    if (loop_ok) {
        if (!r->finished) {
            if (r->router)
                router_free(r->router);
            if (r->limits)
                limits_free(r->limits);
            if (r->http)
                http_client_close(r->http, NULL, NULL);
            if (r->kreply)
                replay_kreply_free(r->kreply);
            if (r->prod)
                kafka_producer_close(r->prod, 1000, NULL, NULL);
        }
        uv_run(&r->loop, UV_RUN_DEFAULT);
        uv_walk(&r->loop, close_walk, NULL);
        uv_run(&r->loop, UV_RUN_DEFAULT);
        uv_loop_close(&r->loop);
    }
    run_free(r);
    free(r);
    return rc;
}
