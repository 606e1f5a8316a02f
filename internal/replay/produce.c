/* produce.c — `parley produce`: posts jobs keyed by conversation id and, with --wait, prints their
 * replies from the reply topic (read from its end, assigned before the first job is posted). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "job/job.h"
#include "kafka/kafka.h"
#include "replay/replay.h"
#include "replay/replay_int.h"

typedef struct {
    uv_loop_t loop;
    const config_t *cfg;
    const replay_produce_options_t *o;
    kafka_producer_t *prod;
    replay_kreply_t *kreply;
    replay_done_t *pending; /* job ids posted (target "") */
    replay_done_t *answered;
    size_t posted, delivered, failed, waiting;
    unsigned long generated_ids;
    bool closing;
    int rc;
    uv_timer_t timeout;
} produce_t;

static void close_all(produce_t *p)
{
    if (p->closing)
        return;
    p->closing = true;
    uv_timer_stop(&p->timeout);
    uv_close((uv_handle_t *)&p->timeout, NULL);
    if (p->kreply)
        replay_kreply_free(p->kreply);
    p->kreply = NULL;
    kafka_producer_close(p->prod, 10000, NULL, NULL);
}

static void maybe_done(produce_t *p)
{
    if (p->delivered + p->failed == p->posted && (!p->o->wait || p->waiting == 0 || p->failed))
        close_all(p);
}

static void on_delivery(void *ctx, const kafka_delivery_t *d)
{
    produce_t *p = ctx;
    if (d->err) {
        fprintf(stderr, "parley produce: a job was not delivered: %s\n", d->error);
        p->failed++;
        p->rc = 1;
    } else {
        p->delivered++;
    }
    maybe_done(p);
}

static void on_reply(void *ctx, const char *value, size_t len)
{
    produce_t *p = ctx;
    cJSON *o = cJSON_ParseWithLength(value, len);
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "type"));
    const char *job_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "job_id"));
    if (type && job_id && replay_done_has(p->pending, job_id, "") &&
        !replay_done_has(p->answered, job_id, "")) {
        bool final = strcmp(type, "final") == 0;
        if (final || p->o->stream) {
            fwrite(value, 1, len, stdout);
            fputc('\n', stdout);
            fflush(stdout);
        }
        if (final) {
            const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "status"));
            if (!status || strcmp(status, "ok") != 0)
                p->rc = 1;
            replay_done_add(p->answered, job_id, "", NULL);
            p->waiting--;
            maybe_done(p);
        }
    }
    cJSON_Delete(o);
}

static void on_timeout(uv_timer_t *t)
{
    produce_t *p = t->data;
    fprintf(stderr, "parley produce: timed out waiting for %zu replies\n", p->waiting);
    p->rc = 1;
    close_all(p);
}

/* Completes a job object (job_id, stream, route from the flags), validates it and posts it. 0, or -1
 * with err naming what is wrong. */
static int post_job(produce_t *p, cJSON *job, char *err, size_t errlen)
{
    char *text = NULL;
    job_t *parsed = NULL;
    job_error_t je;
    int rc = -1;
    if (!cJSON_IsObject(job)) {
        snprintf(err, errlen, "not a JSON object");
        goto out;
    }
    if (!cJSON_GetObjectItemCaseSensitive(job, "job_id")) {
        char id[64];
        char run[16];
        replay_run_id(run, sizeof run);
        snprintf(id, sizeof id, "produce-%s-%lu", run, ++p->generated_ids);
        cJSON_AddStringToObject(job, "job_id", id);
    }
    if (p->o->stream && !cJSON_GetObjectItemCaseSensitive(job, "stream"))
        cJSON_AddBoolToObject(job, "stream", true);
    if (p->o->route && !cJSON_GetObjectItemCaseSensitive(job, "route"))
        cJSON_AddStringToObject(job, "route", p->o->route);
    if (!(text = cJSON_PrintUnformatted(job))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (job_parse(text, strlen(text), NULL, &parsed, &je) != 0) {
        snprintf(err, errlen, "%s: %s", job_error_code_name(je.code), je.message);
        job_error_free(&je);
        goto out;
    }
    job_error_free(&je);
    const char *conv = parsed->conversation_id;
    if (replay_done_add(p->pending, parsed->job_id, "", NULL) != 0 ||
        kafka_produce(p->prod, p->cfg->kafka.jobs_topic, conv, strlen(conv), text, strlen(text), NULL, 0,
                      on_delivery, p) != 0) {
        snprintf(err, errlen, "the job could not be queued");
        goto out;
    }
    p->posted++;
    p->waiting++;
    fprintf(stderr, "parley produce: posted job %s (conversation %s)\n", parsed->job_id, conv);
    rc = 0;
out:
    job_free(parsed);
    free(text);
    return rc;
}

/* Posts every line of the input; bad lines are reported with their number. */
static void post_file(produce_t *p)
{
    FILE *f = strcmp(p->o->input, "-") == 0 ? stdin : fopen(p->o->input, "r");
    if (!f) {
        fprintf(stderr, "parley produce: %s: %s\n", p->o->input, strerror(errno));
        p->rc = 1;
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long no = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        no++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        char err[320];
        cJSON *job = cJSON_ParseWithLength(line, (size_t)n);
        if (!job)
            snprintf(err, sizeof err, "not valid JSON");
        if (!job || post_job(p, job, err, sizeof err) != 0) {
            fprintf(stderr, "parley produce: %s:%ld: %s (line skipped)\n", p->o->input, no, err);
            p->rc = 1;
        }
        cJSON_Delete(job);
    }
    free(line);
    if (f != stdin)
        fclose(f);
}

static void post_one(produce_t *p)
{
    cJSON *job = cJSON_CreateObject();
    cJSON *msg = cJSON_AddObjectToObject(job, "message");
    cJSON_AddStringToObject(job, "conversation_id", p->o->conversation);
    cJSON_AddStringToObject(msg, "role", "user");
    cJSON_AddStringToObject(msg, "content", p->o->message);
    char err[320];
    if (post_job(p, job, err, sizeof err) != 0) {
        fprintf(stderr, "parley produce: %s\n", err);
        p->rc = 1;
    }
    cJSON_Delete(job);
}

int replay_produce(const config_t *cfg, const replay_produce_options_t *o, char *err, size_t errlen)
{
    produce_t *p = base_calloc(1, sizeof *p);
    if (!p || uv_loop_init(&p->loop) != 0) {
        free(p);
        snprintf(err, errlen, "cannot start the event loop");
        return -1;
    }
    int rc = -1;
    p->cfg = cfg;
    p->o = o;
    p->pending = replay_done_new();
    p->answered = replay_done_new();
    kafka_producer_options_t po = {.brokers = cfg->kafka.brokers,
                                   .properties = cfg->kafka.properties,
                                   .n_properties = cfg->kafka.n_properties,
                                   .client_id = "parley-produce"};
    if (!p->pending || !p->answered) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (o->wait &&
        !(p->kreply = replay_kreply_new(&p->loop, cfg, cfg->kafka.reply_topic, on_reply, p, err, errlen)))
        goto out;
    if (!(p->prod = kafka_producer_new(&p->loop, &po, err, errlen)))
        goto out;
    uv_timer_init(&p->loop, &p->timeout);
    p->timeout.data = p;
    if (o->input)
        post_file(p);
    else
        post_one(p);
    if (o->wait)
        uv_timer_start(&p->timeout, on_timeout, (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : 60000), 0);
    maybe_done(p);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    rc = p->rc;
    if (p->posted == 0)
        rc = 1;
out:
    if (rc < 0) {
        if (p->kreply)
            replay_kreply_free(p->kreply);
        uv_run(&p->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&p->loop);
    replay_done_free(p->pending);
    replay_done_free(p->answered);
    free(p);
    return rc;
}
